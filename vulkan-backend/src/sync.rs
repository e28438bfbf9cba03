//! Mutex locking for the whole crate.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking the guard even if another thread panicked while holding it (poisoning
/// is not an error here): every critical section of this crate leaves its data consistent
/// at each point that can panic, and the paths that lock (signalling sections, drops,
/// teardown) must go on (a fence still has to signal exactly once, rule 1 of CONTRACT.md)
/// rather than propagate another thread's panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
