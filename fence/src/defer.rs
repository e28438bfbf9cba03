//! Work deferred to the end of the callback run of the signal in progress on this thread.
//!
//! A fence's callbacks run one after another on the signalling thread. A consumer that reacts
//! to several of them with the same follow-up (a scheduler whose jobs were released by one
//! signal, and which should then *select* among them, by priority, and hand them to its ring
//! together) defers that follow-up with [`defer_after_callbacks`]: it runs once, after the
//! signal's last callback, still on the signalling thread and inside its signalling section.
//! The kernel gets the same effect for free, because `drm_sched` wakes its submission work
//! item from the callbacks and the work runs later; we keep the thread hop out and batch on
//! the spot.
//!
//! # Contract
//! Allocation-free: the queue is a fixed per-thread array (no destructor to register);
//! deferring needs an `Arc` clone only. When the queue is full, or no signal is running its
//! callbacks on this thread, the work runs at once. Each signal drains the work deferred
//! during its own callbacks (nested signals drain theirs first), so nothing deferred is ever
//! left behind, and nothing deferred by a callback runs before that signal's later callbacks.
//! The same object deferred twice in one callback run runs once.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

/// A follow-up that a fence callback defers to the end of its signal's callback run (see
/// [`defer_after_callbacks`]).
pub trait AfterCallbacks: Send + Sync + 'static {
    /// Runs the deferred work, once per callback run however often it was deferred.
    fn after_callbacks(self: Arc<Self>);
}

/// Deferred work per thread: enough for the schedulers one signal's callbacks can release.
const CAPACITY: usize = 32;

thread_local! {
    /// Nesting depth of signals running their callbacks on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Deferred work, a stack: each signal drains down to where it started.
    static QUEUE: RefCell<Queue> = const { RefCell::new(Queue { len: 0, items: [None; CAPACITY] }) };
}

struct Queue {
    len: usize,
    /// Leaked `Arc`s (`Arc::into_raw`), taken back when run. Raw pointers: no destructor, so
    /// the thread-local needs no registration (which could allocate) on first use.
    items: [Option<*const dyn AfterCallbacks>; CAPACITY],
}

/// Runs `work.after_callbacks()` once the fence signal whose callbacks are running on this
/// thread has run all of them (deduplicated by object); at once when no callback run is in
/// progress here or the per-thread queue is full. Allocation-free.
pub fn defer_after_callbacks(work: Arc<dyn AfterCallbacks>) {
    if DEPTH.with(Cell::get) == 0 {
        work.after_callbacks();
        return;
    }
    let work = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        let ptr = Arc::as_ptr(&work) as *const ();
        let len = q.len;
        if q.items[..len].iter().flatten().any(|p| *p as *const () == ptr) {
            return None; // already deferred (possibly by an enclosing run: it runs later still)
        }
        if len == CAPACITY {
            return Some(work);
        }
        q.items[len] = Some(Arc::into_raw(work));
        q.len = len + 1;
        None
    });
    if let Some(work) = work {
        work.after_callbacks();
    }
}

/// Marks the start of a callback run; returns the mark to pass to [`leave`].
pub(crate) fn enter() -> usize {
    DEPTH.with(|d| d.set(d.get() + 1));
    QUEUE.with(|q| q.borrow().len)
}

/// Ends a callback run: runs the work deferred since `mark` (and any that work defers), then
/// leaves. A panic in deferred work is resumed after the rest has run.
pub(crate) fn leave(mark: usize) {
    let mut panicked = None;
    loop {
        let next = QUEUE.with(|q| {
            let mut q = q.borrow_mut();
            if q.len <= mark {
                return None;
            }
            q.len -= 1;
            let len = q.len;
            q.items[len].take()
        });
        let Some(ptr) = next else { break };
        // SAFETY: `ptr` came from `Arc::into_raw` in `defer_after_callbacks` and was removed
        // from the queue above, so it is taken back exactly once.
        let work = unsafe { Arc::from_raw(ptr) };
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            work.after_callbacks();
        })) {
            panicked.get_or_insert(p);
        }
    }
    DEPTH.with(|d| d.set(d.get() - 1));
    if let Some(p) = panicked {
        std::panic::resume_unwind(p);
    }
}
