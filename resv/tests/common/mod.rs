//! Helpers shared by the `gpusched-resv` integration tests.

#![allow(dead_code, unreachable_pub)]

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Deadlock watchdog: generous, never a speed assertion.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// Runs `f` on a thread; panics if it does not finish within the watchdog (a deadlock).
pub fn watchdog<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => t.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("deadlock: no progress in {WATCHDOG:?}"),
    }
}
