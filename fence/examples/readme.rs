//! The usage example of the README, kept here so that it compiles and runs in CI
//! (`scripts/check-readme.sh` checks that the README shows exactly this file's `main`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gpusched_fence::{FenceArray, FenceContext, FenceError};

fn main() {
    // A context is a timeline (one per ring); `next()` publishes a fence and its signaller.
    let ring = FenceContext::new("ring0");
    let (upload, upload_done) = ring.next();
    let (render, render_done) = ring.next();

    // Callbacks run exactly once, on the signalling thread.
    let completed = Arc::new(AtomicUsize::new(0));
    for fence in [&upload, &render] {
        let completed = completed.clone();
        fence
            .add_callback(move |_| {
                completed.fetch_add(1, Ordering::Relaxed);
            })
            .expect("not signalled yet");
    }

    // One fence for the whole frame, waited on from another thread.
    let frame = FenceArray::all([upload.clone(), render.clone()]);
    let waiter = std::thread::spawn(move || frame.wait());

    upload_done.signal();
    render_done.signal_error(FenceError::DeviceLost); // the job failed: signal, with an error

    assert_eq!(waiter.join().unwrap(), Err(FenceError::DeviceLost));
    assert_eq!(upload.wait(), Ok(()));
    assert_eq!(completed.load(Ordering::Relaxed), 2);
    println!("readme example: ok");
}
