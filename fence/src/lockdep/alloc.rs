//! Allocation checking: [`CheckingAllocator`], an opt-in `#[global_allocator]` wrapper that
//! annotates every allocation as one that may enter reclaim (`might_alloc(GFP_KERNEL)` in
//! `mm/page_alloc.c`), and [`no_reclaim`], the `GFP_NOWAIT`/`GFP_ATOMIC` analogue.
//!
//! With no lock held and no section open the hook is one thread-local `Cell` read. The
//! checker's own allocations (building a report) are exempt through a thread-local
//! re-entrancy flag; allocations inside a reclaim section are exempt (`PF_MEMALLOC`); and the
//! hook never unwinds (a violation under `Policy::Panic` panics at the thread's next
//! annotation instead).

use core::alloc::{GlobalAlloc, Layout};
use core::marker::PhantomData;
use std::alloc::System;

/// A `GlobalAlloc` wrapper that reports allocations inside signalling sections.
///
/// ```
/// use gpusched_fence::lockdep::{self, CheckingAllocator, Rule};
///
/// #[global_allocator]
/// static ALLOC: CheckingAllocator = CheckingAllocator::new(std::alloc::System);
///
/// fn main() {
///     let (v, reports) = lockdep::capture(|| {
///         let _section = lockdep::signalling_section();
///         vec![1u32, 2, 3] // allocates inside the section
///     });
///     assert_eq!(v.len(), 3);
///     if lockdep::ENABLED {
///         assert_eq!(reports[0].rule, Rule::ReclaimInSignalling);
///     }
/// }
/// ```
#[derive(Debug, Default)]
pub struct CheckingAllocator<A = System> {
    inner: A,
}

impl<A> CheckingAllocator<A> {
    /// Wraps `inner`.
    pub const fn new(inner: A) -> Self {
        CheckingAllocator { inner }
    }

    /// The wrapped allocator.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

#[inline]
fn hook() {
    super::imp::might_alloc(core::panic::Location::caller(), true);
}

// SAFETY: every method forwards to `inner` with the caller's arguments unchanged, so `inner`'s
// guarantees are ours; the hook before it never allocates through us (re-entrancy flag), never
// unwinds, and does not touch the memory.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CheckingAllocator<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        hook();
        // SAFETY: forwarded with the caller's contract (non-zero-size `layout`).
        unsafe { self.inner.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        hook();
        // SAFETY: forwarded with the caller's contract.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's contract (`ptr` came from `inner` via us).
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        hook();
        // SAFETY: forwarded with the caller's contract.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

/// Guard of a `no_reclaim` scope; see [`no_reclaim`].
#[must_use = "the scope ends when the guard is dropped"]
#[derive(Debug)]
pub struct NoReclaim {
    _not_send: PhantomData<*const ()>,
}

/// Opens a scope whose allocations cannot enter reclaim (`GFP_NOWAIT`): until the guard
/// drops, [`might_alloc`](super::might_alloc) and the [`CheckingAllocator`] report nothing on
/// this thread. For non-blocking pools and diagnostics inside signalling sections.
#[inline]
pub fn no_reclaim() -> NoReclaim {
    super::imp::no_reclaim(true);
    NoReclaim { _not_send: PhantomData }
}

impl Drop for NoReclaim {
    #[inline]
    fn drop(&mut self) {
        super::imp::no_reclaim(false);
    }
}
