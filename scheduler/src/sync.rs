//! One place that picks std or loom primitives.

//! `Arc` is always std's: the scheduler needs `Weak<dyn Trait>` and `Arc::new_cyclic`.
pub(crate) use std::sync::Arc;

#[cfg(gpusched_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Mutex, MutexGuard,
};
#[cfg(not(gpusched_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Mutex, MutexGuard,
};

/// Locks `m`, ignoring poisoning: no critical section of this crate calls out to user code.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Lets another thread run while spinning on a condition (loom's yield under loom, so that a
/// model can make progress).
pub(crate) fn spin_yield() {
    #[cfg(gpusched_loom)]
    loom::thread::yield_now();
    #[cfg(not(gpusched_loom))]
    std::thread::yield_now();
}
