//! One place that picks std or loom primitives, so loom models see every synchronisation the
//! wound/wait paths do. Build with `RUSTFLAGS="--cfg gpusched_loom"` for
//! the loom flavour.

#[cfg(gpusched_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};
#[cfg(not(gpusched_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

/// Locks `m`, ignoring poisoning: no critical section of this crate runs user code, so the
/// protected state is consistent even if a panic unwound through a holder.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Blocks on `cv` (spurious wake-ups allowed: callers re-check in a loop).
pub(crate) fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    match cv.wait(g) {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Blocks on `cv` for at most `dur` (used to poll an interrupt domain). Loom has no clock: it
/// models this as an untimed wait, so loom models do not use the interruptible paths.
pub(crate) fn wait_timeout<'a, T>(
    cv: &Condvar,
    g: MutexGuard<'a, T>,
    dur: std::time::Duration,
) -> MutexGuard<'a, T> {
    #[cfg(gpusched_loom)]
    {
        let _ = dur;
        wait(cv, g)
    }
    #[cfg(not(gpusched_loom))]
    match cv.wait_timeout(g, dur) {
        Ok((g, _)) => g,
        Err(poisoned) => poisoned.into_inner().0,
    }
}
