//! Fence chains (`drivers/dma-buf/dma-fence-chain.c`): a node is a fence made of a previous
//! fence (usually the previous node), a contained fence and a seqno, and signals once its
//! contained fence and everything before it have signalled. A chain is a timeline whose points
//! are the nodes' seqnos; [`FenceChain::find_seqno`] finds the node of a point.
//!
//! # Rules
//! - Walking ([`FenceChain::walk`], [`FenceChain::iter`], [`FenceChain::find_seqno`],
//!   unwrapping, deadlines) garbage-collects as `dma_fence_chain_walk` does: a previous node
//!   whose contained fence has signalled is unlinked (the walk continues below it), so a node
//!   signalled out of order is skipped and the nodes below it stay reachable.
//! - Signalling is eager and iterative: each node has one callback on its previous fence and
//!   one on its contained fence (added when the node is made, the only step that allocates).
//!   A node completing inside another node's signal does not signal in place: it is queued on
//!   a per-thread intrusive list that the outermost chain completion drains, so a cascade
//!   through thousands of nodes uses constant stack and allocates nothing.
//! - A node's error is the error of its previous fence if that failed, else the error of its
//!   contained fence: the lowest failure of the chain reaches every node above it. (The kernel
//!   signals chain nodes without an error; every fence here carries its work's failure.)
//! - Dropping the last handle of a long chain frees it iteratively (no recursion per node).
//!
//! # Contract
//! The callbacks run inside the signalling section of the fence that completes them: they
//! take one short lock (the node's signaller slot), never allocate and never wait.

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::context::{ContextShared, SeqnoWidth};
use crate::error::FenceError;
use crate::fence::{Fence, Signaller};
use crate::ops::{sealed, FenceOps};

/// Why [`FenceChain::find_seqno`] refused a seqno.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainSeqnoError {
    /// The fence asked is not a chain node (and the seqno was not 0).
    #[error("the fence is not a chain node")]
    NotAChain,
    /// The seqno is after the head's: that point is not attached yet.
    #[error("seqno {seqno} is after the chain head's seqno {head}")]
    PastHead {
        /// The seqno asked.
        seqno: u64,
        /// The head's seqno.
        head: u64,
    },
}

/// Fence chains (`struct dma_fence_chain`): a namespace for making and walking chain nodes,
/// which are ordinary [`Fence`]s. See the module rules.
///
/// ```
/// use gpusched_fence::{FenceChain, FenceContext};
///
/// let ring = FenceContext::new("ring");
/// let (a, sa) = ring.next();
/// let (b, sb) = ring.next();
/// let one = FenceChain::link(None, a, 1);
/// let two = FenceChain::link(Some(one.clone()), b, 2);
/// let found = FenceChain::find_seqno(&two, 1).unwrap().unwrap();
/// assert!(found.ptr_eq(&one));
/// sb.signal();
/// assert!(!two.is_signaled(), "point 1 is still pending");
/// sa.signal();
/// assert!(two.is_signaled());
/// assert_eq!(FenceChain::find_seqno(&two, 1), Ok(None), "point 1 has signalled");
/// ```
#[derive(Debug)]
pub struct FenceChain(());

impl FenceChain {
    /// A new chain node (`dma_fence_chain_init`) holding `fence` at `seqno` after `prev`
    /// (`None` for the first node; any fence may be a previous one, a chain node or not).
    ///
    /// As in the kernel, a node whose `prev` is a chain node with an earlier seqno shares its
    /// context, so nodes of one chain compare with [`Fence::is_later`]; otherwise the node gets
    /// a context of its own and its seqno is raised to `prev`'s when that is a chain node with
    /// a later one (so a chain's seqnos never go backwards).
    pub fn link(prev: Option<Fence>, fence: Fence, seqno: u64) -> Fence {
        let prev_chain = prev.as_ref().filter(|p| as_chain(p).is_some());
        let (ctx, seqno, prev_seqno) = match prev_chain {
            // Chains use plain 64-bit seqnos (the kernel's `use_64bit_seqno`).
            Some(p) if seqno > p.seqno() => (p.ctx_shared().clone(), seqno, p.seqno()),
            Some(p) => (new_context(), seqno.max(p.seqno()), 0),
            None => (new_context(), seqno, 0),
        };
        let state = Arc::new(ChainShared {
            remaining: AtomicUsize::new(if prev.is_some() { 2 } else { 1 }),
            prev_error: AtomicU64::new(0),
            own_error: AtomicU64::new(0),
            signaller: Mutex::new(None),
            next: AtomicPtr::new(ptr::null_mut()),
        });
        let ops = ChainOps { fence: fence.clone(), prev: Mutex::new(prev.clone()), prev_seqno };
        let (node, signaller) = Fence::new_pending(ctx, seqno, Some(Box::new(ops)));
        *lock(&state.signaller) = Some(signaller);
        if let Some(p) = prev {
            let st = state.clone();
            if let Err(already) = p.add_callback(move |f| ChainShared::done(st, Part::Prev, f)) {
                (already.into_inner())(&p);
            }
        }
        let st = state;
        if let Err(already) = fence.add_callback(move |f| ChainShared::done(st, Part::Own, f)) {
            (already.into_inner())(&fence);
        }
        node
    }

    /// Whether `fence` is a chain node (`to_dma_fence_chain` is not `NULL`).
    pub fn is_chain(fence: &Fence) -> bool {
        as_chain(fence).is_some()
    }

    /// The fence a chain node holds; any other fence is its own (`dma_fence_chain_contained`).
    pub fn contained(fence: &Fence) -> &Fence {
        as_chain(fence).map_or(fence, |c| &c.fence)
    }

    /// The seqno of the node that was `fence`'s previous one when it was made, if it was a
    /// chain node of the same context (`prev_seqno`); `None` for other fences.
    pub fn prev_seqno(fence: &Fence) -> Option<u64> {
        as_chain(fence).map(|c| c.prev_seqno)
    }

    /// The previous fence of a chain node whose contained fence has not signalled, unlinking
    /// (garbage-collecting) the signalled ones on the way (`dma_fence_chain_walk`). `None`
    /// when `fence` is not a chain node or nothing unsignalled is left below it.
    pub fn walk(fence: &Fence) -> Option<Fence> {
        as_chain(fence).and_then(walk_prev)
    }

    /// The node itself, then each [`walk`](FenceChain::walk) step below it
    /// (`dma_fence_chain_for_each`). A plain fence iterates as itself.
    pub fn iter(head: &Fence) -> ChainIter {
        ChainIter { next: Some(head.clone()) }
    }

    /// The existing node of point `seqno` (`dma_fence_chain_find_seqno`): the node with the
    /// smallest seqno at or after `seqno` that is still linked; the head itself for 0;
    /// `Ok(None)` once everything up to `seqno` has signalled. Walks (and collects) the
    /// chain from `head`; the answer is a node of the chain (or the fence below it), never a
    /// fresh fence.
    ///
    /// # Errors
    /// [`ChainSeqnoError::NotAChain`] when `head` is not a chain node,
    /// [`ChainSeqnoError::PastHead`] when `seqno` is after the head's.
    pub fn find_seqno(head: &Fence, seqno: u64) -> Result<Option<Fence>, ChainSeqnoError> {
        if seqno == 0 {
            return Ok(Some(head.clone()));
        }
        if as_chain(head).is_none() {
            return Err(ChainSeqnoError::NotAChain);
        }
        if head.seqno() < seqno {
            return Err(ChainSeqnoError::PastHead { seqno, head: head.seqno() });
        }
        for node in FenceChain::iter(head) {
            match as_chain(&node) {
                Some(c) if node.context() == head.context() && c.prev_seqno >= seqno => {}
                _ => return Ok(Some(node)),
            }
        }
        Ok(None)
    }
}

/// Iterator over a chain; see [`FenceChain::iter`].
#[derive(Debug)]
pub struct ChainIter {
    next: Option<Fence>,
}

impl Iterator for ChainIter {
    type Item = Fence;

    fn next(&mut self) -> Option<Fence> {
        let cur = self.next.take()?;
        self.next = FenceChain::walk(&cur);
        Some(cur)
    }
}

fn new_context() -> crate::sync::Arc<ContextShared> {
    ContextShared::new("chain".into(), "gpusched", SeqnoWidth::U64, None)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The chain node behind `fence`, if it is one.
pub(crate) fn as_chain(fence: &Fence) -> Option<&ChainOps> {
    fence.ops()?.__as_any(sealed::Token(()))?.downcast_ref::<ChainOps>()
}

/// The ops of a chain node: what the kernel's `struct dma_fence_chain` adds to its fence.
pub(crate) struct ChainOps {
    /// The contained fence.
    fence: Fence,
    /// The previous fence; replaced by the one below it when the walk collects it.
    prev: Mutex<Option<Fence>>,
    /// The previous node's seqno when it shares the context, else 0.
    prev_seqno: u64,
}

impl fmt::Debug for ChainOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainOps").field("prev_seqno", &self.prev_seqno).finish_non_exhaustive()
    }
}

impl FenceOps for ChainOps {
    fn timeline_name(&self) -> Option<&str> {
        Some("chain")
    }

    /// Polls as `dma_fence_chain_signaled` does: the contained fences of this node and of the
    /// nodes below it, down to the first pending one. A backend fence found complete signals
    /// on the spot, and its callbacks complete (and signal, with the right error) the nodes
    /// above it; the node is never signalled from here (`false`), so a failure is never
    /// reported as success.
    fn signaled(&self) -> bool {
        if self.fence.is_signaled() {
            let _ = walk_prev(self);
        }
        false
    }

    /// Passes the deadline to the contained fence of every node still linked
    /// (`dma_fence_chain_set_deadline`).
    fn set_deadline(&self, deadline: Instant) {
        self.fence.set_deadline(deadline);
        let mut cur = walk_prev(self);
        while let Some(f) = cur {
            FenceChain::contained(&f).set_deadline(deadline);
            cur = FenceChain::walk(&f);
        }
    }

    fn children(&self) -> &[Fence] {
        std::slice::from_ref(&self.fence)
    }

    fn __as_any(&self, _sealed: sealed::Token) -> Option<&dyn Any> {
        Some(self)
    }
}

impl Drop for ChainOps {
    /// Unlinks the previous nodes this node alone holds one by one, so that dropping a long
    /// chain does not recurse once per node.
    fn drop(&mut self) {
        let mut next = lock(&self.prev).take();
        while let Some(f) = next.take() {
            if f.is_unique() {
                if let Some(c) = as_chain(&f) {
                    next = lock(&c.prev).take();
                }
            }
            drop(f);
        }
    }
}

/// One step of `dma_fence_chain_walk` from `node`: unlinks previous nodes whose contained
/// fence has signalled (and a signalled plain previous fence) and returns the first previous
/// fence that is still pending.
fn walk_prev(node: &ChainOps) -> Option<Fence> {
    loop {
        let prev = lock(&node.prev).clone()?;
        // Polled without a lock held: a backend poll may signal the fence and run callbacks.
        let replacement = match as_chain(&prev) {
            Some(pc) if !pc.fence.is_signaled() => return Some(prev),
            Some(pc) => lock(&pc.prev).clone(),
            None if !prev.is_signaled() => return Some(prev),
            None => None,
        };
        let mut slot = lock(&node.prev);
        // Another walker may have collected it first: replace only what we examined.
        if slot.as_ref().is_some_and(|f| f.ptr_eq(&prev)) {
            *slot = replacement;
        }
    }
}

/// Which callback of a node fired.
#[derive(Clone, Copy)]
enum Part {
    Prev,
    Own,
}

/// The signalling state of one node, shared by its two callbacks.
struct ChainShared {
    /// Callbacks not run yet: 2 with a previous fence, else 1.
    remaining: AtomicUsize,
    /// `FenceError::encode` of the previous fence's error (0: none), stored before the
    /// decrement of `remaining`.
    prev_error: AtomicU64,
    /// The same for the contained fence.
    own_error: AtomicU64,
    /// Taken by whichever callback completes the node.
    signaller: Mutex<Option<Signaller>>,
    /// The next node on this thread's completion list (see `complete`); null off it.
    next: AtomicPtr<ChainShared>,
}

impl ChainShared {
    fn done(this: Arc<ChainShared>, part: Part, fence: &Fence) {
        if let Some(e) = fence.current_outcome().and_then(Result::err) {
            let slot = match part {
                Part::Prev => &this.prev_error,
                Part::Own => &this.own_error,
            };
            slot.store(FenceError::encode(Some(e)), Ordering::Release);
        }
        if this.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            complete(this);
        }
    }

    fn signal_now(&self) {
        let prev = FenceError::decode(self.prev_error.load(Ordering::Acquire));
        let own = FenceError::decode(self.own_error.load(Ordering::Acquire));
        let signaller = lock(&self.signaller).take();
        if let Some(s) = signaller {
            s.signal_result(prev.or(own).map_or(Ok(()), Err));
        }
    }
}

thread_local! {
    /// Whether a chain completion is draining this thread's list.
    static DRAINING: Cell<bool> = const { Cell::new(false) };
    /// The list of completed nodes to signal: leaked `Arc`s (`Arc::into_raw`) linked through
    /// `ChainShared::next`. Raw pointers: no destructor, so the thread-local needs no
    /// registration (which could allocate) on first use.
    static PENDING: Cell<*const ChainShared> = const { Cell::new(ptr::null()) };
}

/// Signals a completed node: at once when no chain completion runs on this thread, else
/// after it (the drain loop below), so cascades iterate instead of recursing.
fn complete(node: Arc<ChainShared>) {
    if DRAINING.with(Cell::get) {
        node.next.store(PENDING.with(Cell::get).cast_mut(), Ordering::Relaxed);
        PENDING.with(|p| p.set(Arc::into_raw(node)));
        return;
    }
    DRAINING.with(|d| d.set(true));
    // A panicking callback must not leave queued nodes unsignalled: each is signalled, and
    // the first panic resumes after the list is empty.
    let mut panicked = None;
    let mut cur = Some(node);
    while let Some(n) = cur {
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| n.signal_now())) {
            panicked.get_or_insert(p);
        }
        drop(n);
        cur = pop_pending();
    }
    DRAINING.with(|d| d.set(false));
    if let Some(p) = panicked {
        std::panic::resume_unwind(p);
    }
}

fn pop_pending() -> Option<Arc<ChainShared>> {
    let head = PENDING.with(Cell::get);
    if head.is_null() {
        return None;
    }
    // SAFETY: `head` came from `Arc::into_raw` in `complete` and is on this thread's list
    // only; it is unlinked below before anything else can reach the list, so it is taken
    // back exactly once.
    let node = unsafe { Arc::from_raw(head) };
    PENDING.with(|p| p.set(node.next.swap(ptr::null_mut(), Ordering::Relaxed)));
    Some(node)
}
