//! Mutex and condition-variable helpers for the whole crate: one rule for poisoning.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Locks `m`, taking the guard even if another thread panicked while holding it (poisoning
/// is not an error here): every critical section of this crate leaves its data consistent
/// at each point that can panic, and the paths that lock (signalling sections, drops,
/// teardown) must go on (a fence still has to signal exactly once, rule 1 of CONTRACT.md)
/// rather than propagate another thread's panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The contents of a mutex the caller owns exclusively (`Mutex::get_mut`), poisoned or not
/// (same reasoning as [`lock`]).
pub(crate) fn get_mut<T>(m: &mut Mutex<T>) -> &mut T {
    m.get_mut().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `cv` (`Condvar::wait`), taking the guard back even if poisoned (see [`lock`]).
pub(crate) fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `cv` for at most `timeout` (`Condvar::wait_timeout`), taking the guard back even
/// if poisoned (see [`lock`]); whether it timed out is not reported (callers recheck state).
pub(crate) fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    cv.wait_timeout(guard, timeout).unwrap_or_else(PoisonError::into_inner).0
}
