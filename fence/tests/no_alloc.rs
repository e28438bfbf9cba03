//! Signalling never allocates: with callbacks reserved and prepared beforehand, `signal()`
//! performs zero allocations on the signalling thread (the memory rules of
//! CONTRACT.md). A counting global allocator counts per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gpusched_fence::{Callback, FenceContext, FenceError, InterruptDomain};

struct Counting;

thread_local! {
    /// Allocations made by this thread while counting is on.
    static COUNT: Cell<usize> = const { Cell::new(0) };
    static ON: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every method forwards to `System` unchanged; the bookkeeping only touches
// const-initialised thread-locals (no allocation, no re-entrancy into the allocator).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's layout, under the caller's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: as above; `ptr` was allocated by `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn note() {
    // `try_with`: the thread-locals may already be gone while a thread exits.
    let _ = ON.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns how many allocations this thread made during it.
fn count_allocs(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    ON.with(|on| on.set(true));
    f();
    ON.with(|on| on.set(false));
    COUNT.with(|c| c.get())
}

/// The counter itself works (a test that cannot fail is a defect).
#[test]
fn counter_sees_allocations() {
    let n = count_allocs(|| {
        let v: Vec<u64> = Vec::with_capacity(10);
        std::hint::black_box(v);
    });
    assert_eq!(n, 1);
}

fn signal_with_prepared(n: usize, error: Option<FenceError>, waiters: usize) {
    let ctx = FenceContext::new("no-alloc");
    let (fence, signaller) = ctx.next();
    let ran = Arc::new(AtomicUsize::new(0));
    fence.reserve_callbacks(n);
    for _ in 0..n {
        let r = ran.clone();
        let cb = Callback::new(move |_| {
            r.fetch_add(1, Ordering::Relaxed);
        });
        fence.add_prepared_callback(cb).unwrap();
    }
    // Blocked waiters: the wake-up path must not allocate either.
    let threads: Vec<_> = (0..waiters)
        .map(|_| {
            let f = fence.clone();
            std::thread::spawn(move || f.wait())
        })
        .collect();
    if waiters > 0 {
        // Give the waiters time to block (only a best effort; correctness does not depend on it).
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let allocs = count_allocs(|| {
        match error {
            None => signaller.signal(),
            Some(e) => signaller.signal_error(e),
        };
    });
    assert_eq!(ran.load(Ordering::Relaxed), n, "every callback ran");
    assert_eq!(allocs, 0, "signal() with {n} prepared callbacks allocated {allocs} times");
    for t in threads {
        assert_eq!(t.join().unwrap(), error.map_or(Ok(()), Err));
    }
}

#[test]
fn signal_with_no_callbacks_does_not_allocate() {
    signal_with_prepared(0, None, 0);
}

#[test]
fn signal_with_many_prepared_callbacks_does_not_allocate() {
    signal_with_prepared(64, None, 0);
}

#[test]
fn signal_error_with_prepared_callbacks_does_not_allocate() {
    signal_with_prepared(16, Some(FenceError::DeviceLost), 0);
}

#[test]
fn signal_waking_blocked_waiters_does_not_allocate() {
    signal_with_prepared(8, None, 3);
}

#[test]
fn dropping_a_signaller_does_not_allocate() {
    let (fence, signaller) = FenceContext::new("no-alloc").next();
    fence.reserve_callbacks(1);
    fence.add_prepared_callback(Callback::new(|_| {})).unwrap();
    let allocs = count_allocs(|| drop(signaller));
    assert_eq!(allocs, 0);
    assert_eq!(fence.error(), Some(FenceError::Abandoned));
}

#[test]
fn plain_add_callback_allocates_but_signal_does_not() {
    let (fence, signaller) = FenceContext::new("no-alloc").next();
    let added = count_allocs(|| {
        fence.add_callback(|_| {}).unwrap();
    });
    assert!(added >= 1, "the closure is boxed when added");
    assert_eq!(count_allocs(|| assert!(signaller.signal())), 0);
}

#[test]
fn opening_an_interrupt_section_does_not_allocate() {
    // `begin_interrupt` is called by the TDR worker inside a signalling section.
    let domain = InterruptDomain::new("reset");
    let mut section = None;
    let allocs = count_allocs(|| section = Some(domain.begin_interrupt()));
    assert_eq!(allocs, 0);
    assert!(domain.is_interrupting());
    let allocs = count_allocs(|| drop(section.take()));
    assert_eq!(allocs, 0);
    assert!(!domain.is_interrupting());
}

#[test]
fn setting_a_deadline_does_not_allocate() {
    let hooked = Arc::new(AtomicUsize::new(0));
    let h = hooked.clone();
    let ctx = FenceContext::builder("no-alloc")
        .on_deadline(move |_, _| {
            h.fetch_add(1, Ordering::Relaxed);
        })
        .build();
    let (fence, signaller) = ctx.next();
    let d = std::time::Instant::now() + std::time::Duration::from_millis(10);
    let allocs = count_allocs(|| {
        fence.set_deadline(d);
        fence.set_deadline(d - std::time::Duration::from_millis(1));
    });
    assert_eq!(allocs, 0);
    assert_eq!(hooked.load(Ordering::Relaxed), 2);
    assert_eq!(signaller.deadline(), Some(d - std::time::Duration::from_millis(1)));
    signaller.signal();
}

/// A chain's completion cascade (every node queued behind the first) signals without
/// allocating: node callbacks were added when the nodes were made.
#[test]
fn a_chain_cascade_does_not_allocate() {
    let ctx = FenceContext::new("no-alloc");
    let mut nodes: Vec<gpusched_fence::Fence> = Vec::new();
    let mut signallers = Vec::new();
    for seqno in 1..=64 {
        let (f, s) = ctx.next();
        nodes.push(gpusched_fence::FenceChain::link(nodes.last().cloned(), f, seqno));
        signallers.push(s);
    }
    let first = signallers.remove(0);
    for s in signallers.into_iter().rev() {
        s.signal();
    }
    let head = nodes.last().unwrap().clone();
    assert!(!head.is_signaled());
    assert_eq!(count_allocs(|| assert!(first.signal())), 0);
    assert!(head.is_signaled());
}
