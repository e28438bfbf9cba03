//! The checker compiled out (without the `checker` feature, or under `cfg(gpusched_loom)`):
//! the same crate-internal API as the checker's engine (`enabled.rs`), every entry point a
//! no-op that the compiler removes. `mod.rs` picks one of the two, once.

use core::panic::Location;

use super::{Acquire, LockClass, NestKey, Report};

/// Whether the checker is compiled in.
pub(crate) const ENABLED: bool = false;

/// Nothing is checked, so nothing is found.
#[inline]
pub(crate) fn violations() -> u64 {
    0
}

/// No reports are kept.
#[inline]
pub(crate) fn reports(_take: bool) -> Vec<Report> {
    Vec::new()
}

/// Runs `f`; nothing is captured.
#[inline]
pub(crate) fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<Report>) {
    (f(), Vec::new())
}

#[inline]
pub(crate) fn acquire(
    _class: &'static LockClass,
    _how: Acquire,
    _nest: Option<NestKey>,
    _at: &'static Location<'static>,
) {
}

#[inline]
pub(crate) fn release(_class: &'static LockClass, _nest: Option<NestKey>) {}

/// Untracked: the section's guard has nothing to end.
#[inline]
pub(crate) fn section_enter(
    _class: &'static LockClass,
    _how: Acquire,
    _at: &'static Location<'static>,
) -> bool {
    false
}

#[inline]
pub(crate) fn section_exit(_class: &'static LockClass) {}

#[inline]
pub(crate) fn wrong_thread_end(
    _begun_at: &'static Location<'static>,
    _began_on: String,
    _at: &'static Location<'static>,
) {
}

#[inline]
pub(crate) fn might_wait(_interruptible: bool, _at: &'static Location<'static>) {}

#[inline]
pub(crate) fn might_alloc(_at: &'static Location<'static>, _from_alloc: bool) {}

#[inline]
pub(crate) fn no_reclaim(_enter: bool) {}
