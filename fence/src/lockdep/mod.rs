//! The signalling-contract checker: lockdep for fences.
//!
//! **Stub.** This file fixes the API surface that the rest of the workspace calls; the
//! checker itself lands with the checker issue. Every function here is a no-op for now.

use core::marker::PhantomData;

/// A named, static lock class. Every lock of one class shares one node of the dependency graph.
#[derive(Debug)]
pub struct LockClass {
    name: &'static str,
    reset_needed: bool,
}

impl LockClass {
    /// A new lock class. Declare it in a `static`.
    pub const fn new(name: &'static str) -> Self {
        LockClass { name, reset_needed: false }
    }

    /// A lock class that the timeout-and-reset worker needs: holding it across a
    /// non-interruptible fence wait is a violation.
    pub const fn reset_needed(name: &'static str) -> Self {
        LockClass { name, reset_needed: true }
    }

    /// The class name, as reports show it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the reset worker needs this class.
    pub fn is_reset_needed(&self) -> bool {
        self.reset_needed
    }
}

/// The class of every reservation (`Resv`) lock.
pub static RESV: LockClass = LockClass::new("resv");

/// How a lock is being acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// A blocking exclusive acquisition.
    Exclusive,
    /// A blocking shared (read) acquisition.
    Shared,
    /// A trylock: it cannot block, so it records no ordering edge.
    Try,
}

/// Identifies an acquire context: locks of one class taken under one key count as a single
/// held entry (lockdep's `nest_lock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NestKey(pub u64);

/// Records that the current thread takes a lock of `class`.
#[track_caller]
#[inline]
pub fn lock_acquire(class: &'static LockClass, how: Acquire, nest: Option<NestKey>) {
    let _ = (class, how, nest);
}

/// Records that the current thread released a lock of `class`.
#[inline]
pub fn lock_release(class: &'static LockClass, nest: Option<NestKey>) {
    let _ = (class, nest);
}

/// Guard of a signalling section; see [`signalling_section`].
#[must_use = "the section ends when the guard is dropped"]
#[derive(Debug)]
pub struct SignallingSection {
    _not_send: PhantomData<*const ()>,
}

/// Enters a signalling section: the code until the guard drops is on the path to signalling a
/// published fence.
#[track_caller]
#[inline]
pub fn signalling_section() -> SignallingSection {
    SignallingSection { _not_send: PhantomData }
}

/// Annotates a blocking, non-interruptible fence wait that is about to happen.
#[track_caller]
#[inline]
pub fn might_wait() {}

/// Annotates a blocking, interruptible fence wait that is about to happen.
#[track_caller]
#[inline]
pub fn might_wait_interruptible() {}
