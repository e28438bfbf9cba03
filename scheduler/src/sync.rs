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
