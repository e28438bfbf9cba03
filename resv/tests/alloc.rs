//! Allocation discipline, measured with a counting global allocator: `add_fence` never
//! allocates, and once reserved, a lock / add / unlock (publishing the snapshot) does not either.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use gpusched_fence::FenceContext;
use gpusched_resv::{Resv, Usage};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the counter is a const-initialised
// thread-local `Cell`, which neither allocates nor re-enters the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed through.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCS.with(Cell::get);
    let r = f();
    (ALLOCS.with(Cell::get) - before, r)
}

#[test]
fn add_fence_and_publish_do_not_allocate_once_reserved() {
    let ring = FenceContext::new("ring");
    let fences: Vec<_> = (0..64).map(|_| ring.next()).collect();
    let other = FenceContext::new("other");
    let (o, _os) = other.next();
    let resv = Resv::new();
    // Warm up: the first reservations size the list and the two snapshot buffers (the first
    // publish recycles the initial, empty snapshot).
    for _ in 0..2 {
        let mut g = resv.lock_no_ctx();
        g.reserve_fences(2).unwrap();
        g.add_fence(o.clone(), Usage::Read);
    }
    for (f, _) in &fences {
        let mut g = resv.lock_no_ctx();
        let (n, ()) = allocations(|| g.reserve_fences(1).unwrap());
        assert_eq!(n, 0, "the reservation fits the buffers of the steady state");
        let (n, ()) = allocations(|| g.add_fence(f.clone(), Usage::Write));
        assert_eq!(n, 0, "add_fence allocated");
        let (n, ()) = allocations(|| drop(g));
        assert_eq!(n, 0, "publishing on unlock allocated");
    }
    let snap = resv.fences_unlocked(Usage::Bookkeep);
    assert_eq!(snap.len(), 2);
    assert!(snap.iter().any(|f| f.ptr_eq(&fences[63].0)));
    // A reader holding the old snapshot keeps it alive; the next publish then allocates a new
    // buffer instead of recycling, and the reader's view is untouched.
    let held = resv.fences_unlocked(Usage::Bookkeep);
    let (f, _s) = ring.next();
    let mut g = resv.lock_no_ctx();
    g.reserve_fences(1).unwrap();
    g.add_fence(f.clone(), Usage::Write);
    drop(g);
    assert_eq!(held.len(), 2);
    assert!(resv.fences_unlocked(Usage::Write)[0].ptr_eq(&f));
}

#[test]
fn iterating_unlocked_does_not_allocate() {
    let resv = Resv::new();
    let ring = FenceContext::new("ring");
    let (f, _s) = ring.next();
    {
        let mut g = resv.lock_no_ctx();
        g.reserve_fences(1).unwrap();
        g.add_fence(f.clone(), Usage::Read);
    }
    let (n, seen) = allocations(|| {
        let mut it = resv.iter_unlocked(Usage::Read);
        let first = it.next();
        (first.is_some_and(|(g, u)| g.ptr_eq(&f) && u == Usage::Read), it.next().is_none())
    });
    assert_eq!(n, 0, "iter_unlocked allocated");
    assert_eq!(seen, (true, true));
}
