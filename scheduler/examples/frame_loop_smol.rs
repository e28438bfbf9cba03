//! A headless frame loop on smol: two mock rings (compute and graphics), frame `N`'s render
//! job depends on its simulation job (another ring) and on frame `N-2`'s render (the
//! swapchain image it reuses, two images), and the loop `.await`s frame `N-2`'s finished fence
//! before it "presents" it. Fences implement `IntoFuture`, so any executor can await them.
//!
//! Run: `cargo run -p gpusched --example frame_loop_smol`. It exits non-zero if a frame
//! finished out of order or failed. The Vulkan version of this loop comes with the
//! `gpusched-vulkan` backend; here the rings are `MockRing::timed()` (each job completes its
//! `duration` after it started, on a completion thread).

#[path = "shared/frame_loop.rs"]
mod frame_loop;

use frame_loop::{frame_loop, FRAMES};
use gpusched::fence::Fence;

fn main() {
    // The loop runs as a task on a smol executor; a second task awaits the same fences (any
    // number of futures may wait on one fence).
    let ex = smol::Executor::new();
    let report = smol::block_on(ex.run(async {
        let (tx, rx) = smol::channel::unbounded::<Fence>();
        let watcher = ex.spawn(async move {
            let mut ok = 0u64;
            while let Ok(frame) = rx.recv().await {
                if frame.await.is_ok() {
                    ok += 1;
                }
            }
            ok
        });
        let report = frame_loop("frame_loop_smol", |frame| {
            let tx = tx.clone();
            async move { tx.send(frame).await.expect("watcher alive") }
        })
        .await;
        drop(tx);
        assert_eq!(watcher.await, FRAMES, "the watcher task saw every frame succeed");
        report
    }));
    println!("{report}");
}
