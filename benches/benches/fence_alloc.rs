//! Bytes per pending fence, measured by a counting `#[global_allocator]` (the requested sizes
//! of every allocation, net of frees, over many fences kept alive at once):
//! - `pending`: a fence from `FenceContext::next`, with its `Arc` (the fence and its signaller
//!   share one allocation);
//! - `prepared_1cb`: `FenceContext::prepare(1, None)`, the way backends make hardware fences,
//!   with room for one callback reserved;
//! - `with_callback`: a pending fence with one callback added through `add_callback` (the
//!   closure's box and the callback list's growth included).
//!
//! Prints `metric: fence.alloc.<case>_bytes` and `..._allocs` per fence. Not a criterion
//! bench: the numbers are counts, not times, and do not vary between runs.
#![allow(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use gpusched_benches::{metric, test_mode};
use gpusched_fence::{Fence, FenceContext, Signaller};

/// Counts the bytes and allocations requested from the system allocator.
struct Counting;

static BYTES: AtomicUsize = AtomicUsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        ALLOCS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.fetch_add(new_size, Ordering::Relaxed);
        BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as `dealloc`, and `new_size` is the caller's, checked by its contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Net bytes and allocations per item of `make`, over `n` items kept alive together (the
/// vector holding them is allocated before counting starts).
fn per_item<T>(n: usize, mut make: impl FnMut() -> T) -> (f64, f64) {
    let mut keep: Vec<T> = Vec::with_capacity(n);
    let (b0, a0) = (BYTES.load(Ordering::Relaxed), ALLOCS.load(Ordering::Relaxed));
    for _ in 0..n {
        keep.push(make());
    }
    let (b1, a1) = (BYTES.load(Ordering::Relaxed), ALLOCS.load(Ordering::Relaxed));
    drop(keep);
    let per = |after: usize, before: usize| (after as f64 - before as f64) / n as f64;
    (per(b1, b0), per(a1, a0))
}

fn main() {
    let n = if test_mode() { 16 } else { 10_000 };
    let ctx = FenceContext::new("alloc");
    // Warm up the context and the checker (first-use registrations allocate once).
    drop(ctx.next());

    let (pending, pending_allocs) = per_item(n, || ctx.next());
    let (prepared, prepared_allocs) = per_item(n, || ctx.prepare(1, None).init(0));
    let (with_cb, with_cb_allocs) = per_item(n, || {
        let (fence, signaller): (Fence, Signaller) = ctx.next();
        let id = fence.add_callback(|_| {}).ok();
        (fence, signaller, id)
    });
    println!("bytes per pending fence (allocations): next {pending:.1} ({pending_allocs:.2}), prepare(1) {prepared:.1} ({prepared_allocs:.2}), one add_callback {with_cb:.1} ({with_cb_allocs:.2})");
    metric("fence.alloc.pending_bytes", pending);
    metric("fence.alloc.pending_allocs", pending_allocs);
    metric("fence.alloc.prepared_1cb_bytes", prepared);
    metric("fence.alloc.prepared_1cb_allocs", prepared_allocs);
    metric("fence.alloc.with_callback_bytes", with_cb);
    metric("fence.alloc.with_callback_allocs", with_cb_allocs);
}
