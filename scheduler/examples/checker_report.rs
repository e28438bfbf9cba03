//! The signalling-contract checker on your own locks: a deliberate mistake, its report, and
//! how to read it.
//!
//! Run: `cargo run -p gpusched --example checker_report`. It exits non-zero unless the
//! checker reports the mistake (it needs the default `checker` feature).
//!
//! The mistake (the classic one; rule 4 of CONTRACT.md): the render thread holds the
//! engine's `frame_state` lock while it waits for a fence, and a completion callback (which
//! runs on the signalling thread, inside a signalling section) takes the same lock. If the
//! fence being waited on can only signal after that callback got the lock, the two threads
//! deadlock. The checker does not need the deadlock to happen: it records the order
//! `frame_state -> signalling` at the wait and reports the reverse order the first time the
//! callback takes the lock, even on one thread and on an already-signalled fence.
//!
//! # Reading the report
//! - The first line is the rule broken in one sentence, and its short name.
//! - `this thread:` is the acquisition that was checked: the class (`frame_state`), the
//!   `file:line` of the `lock()` call, and the thread.
//! - `while holding` is the held lock or open section it conflicts with: here the
//!   `signalling` section opened by `done.signal()`, the callback's caller.
//! - The chain lists the recorded edges that close the cycle, each with the place and thread
//!   that first recorded it: here `frame_state -> signalling`, recorded by the wait at the
//!   line of `fence.wait()` below.
//! - Then every lock the thread holds, outermost first.
//!
//! Fix it by removing one edge: do not hold `frame_state` across the wait (copy what you need
//! and drop the guard), or do not take it in the callback (send a message, set an atomic, or
//! use a `try_lock` and retry later). Set `RUST_BACKTRACE=1` to get a backtrace in reports
//! whose offending code runs inside a callback.

use std::sync::Arc;

use gpusched::fence::lockdep::{self, LockClass, Mutex, Rule};
use gpusched::fence::FenceContext;

/// The engine's own lock class: every `Mutex` of this class shares one node of the graph.
static FRAME_STATE: LockClass = LockClass::new("frame_state");

#[derive(Debug, Default)]
struct FrameState {
    frames_completed: u64,
}

fn main() {
    if !lockdep::ENABLED {
        eprintln!("checker_report: the checker is compiled out (build with the `checker` feature)");
        std::process::exit(1);
    }
    let state = Arc::new(Mutex::new(&FRAME_STATE, FrameState::default()));
    let ring = FenceContext::new("gfx");

    // `capture` collects this thread's reports instead of panicking (the default policy in
    // debug builds) or logging them (release builds).
    let ((), reports) = lockdep::capture(|| {
        // The render thread: waits for the previous frame with the frame lock held. The fence
        // has signalled already, so nothing blocks; the checker still records the order.
        let (previous, done) = ring.next();
        done.signal();
        {
            let _guard = state.lock();
            previous.wait().expect("signalled"); // records frame_state -> signalling
        }

        // A completion callback takes the same lock: it runs inside the signalling section of
        // whoever signals the fence.
        let (frame, done) = ring.next();
        let in_callback = state.clone();
        frame
            .add_callback(move |_| {
                in_callback.lock().frames_completed += 1; // signalling -> frame_state: a cycle
            })
            .expect("not signalled yet");
        done.signal();
    });

    let Some(report) = reports.first() else {
        eprintln!("checker_report: expected a report, got none");
        std::process::exit(1);
    };
    println!("The checker reported {} violation(s). The report:\n", reports.len());
    // The backtrace (present when RUST_BACKTRACE is set) is long; the rest is what to read.
    let report = lockdep::Report { backtrace: None, ..report.clone() };
    println!("{report}");
    println!("rule: {:?}; classes involved: {:?}", report.rule, report.classes());
    assert_eq!(report.rule, Rule::LockHeldAcrossWait, "the expected rule");
    assert!(report.classes().contains(&"frame_state"));
    assert_eq!(state.lock().frames_completed, 1, "the callback still ran");
    println!("checker_report: ok");
}
