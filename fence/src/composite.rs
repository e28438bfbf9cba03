//! Composite fences: arrays (`dma-fence-array.c`), timelines of points (`drm_syncobj`
//! timelines, with wait-before-signal; chains of their own are in `chain.rs`), and
//! unwrap/merge (`dma-fence-unwrap.c`).

use std::fmt;
use std::sync::OnceLock;
use std::time::Instant;

use crate::chain::{as_chain, FenceChain};
use crate::context::{ContextShared, SeqnoWidth};
use crate::error::FenceError;
use crate::fence::{Fence, Signaller};
use crate::ops::FenceOps;
use crate::sync::{lock, Arc, AtomicU64, AtomicUsize, Mutex, Ordering};

/// The ops of an array or point fence: it reports its members and passes deadlines on.
struct MembersOps {
    members: Box<[Fence]>,
}

impl FenceOps for MembersOps {
    fn set_deadline(&self, deadline: Instant) {
        for m in self.members.iter() {
            m.set_deadline(deadline);
        }
    }

    fn children(&self) -> &[Fence] {
        &self.members
    }
}

/// Shared by the member callbacks of one array.
struct ArrayState {
    /// Members not signalled yet.
    remaining: AtomicUsize,
    /// `FenceError::encode` of the first member error, 0 while none.
    first_error: AtomicU64,
    signal_on_any: bool,
    /// Taken by whichever member callback completes the array.
    signaller: Mutex<Option<Signaller>>,
}

impl ArrayState {
    fn member_done(&self, member: &Fence) {
        if let Some(e) = member.current_outcome().and_then(Result::err) {
            let _ = self.first_error.compare_exchange(
                0,
                FenceError::encode(Some(e)),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        let last = self.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
        if last || self.signal_on_any {
            let signaller = lock(&self.signaller).take();
            if let Some(s) = signaller {
                let error = FenceError::decode(self.first_error.load(Ordering::Acquire));
                s.signal_result(error.map_or(Ok(()), Err));
            }
        }
    }
}

/// Fence arrays: one fence that signals when all (or any) of its members have signalled.
#[derive(Debug)]
pub struct FenceArray(());

impl FenceArray {
    /// A fence that signals when every member has signalled; its error is the first member
    /// error seen. An empty array is already signalled.
    pub fn all(members: impl IntoIterator<Item = Fence>) -> Fence {
        let ctx = ContextShared::new("array".into(), "gpusched", SeqnoWidth::U64, None);
        build_array(ctx, 1, members.into_iter().collect(), false)
    }

    /// A fence that signals when the first member signals, with that member's error. An empty
    /// array is already signalled.
    pub fn any(members: impl IntoIterator<Item = Fence>) -> Fence {
        let ctx = ContextShared::new("array-any".into(), "gpusched", SeqnoWidth::U64, None);
        build_array(ctx, 1, members.into_iter().collect(), true)
    }
}

fn build_array(ctx: Arc<ContextShared>, seqno: u64, members: Vec<Fence>, any: bool) -> Fence {
    if members.is_empty() {
        return Fence::signaled();
    }
    let members: Box<[Fence]> = members.into_boxed_slice();
    let list: Vec<Fence> = members.to_vec();
    let (fence, signaller) = Fence::new_pending(ctx, seqno, Some(Box::new(MembersOps { members })));
    let state = Arc::new(ArrayState {
        remaining: AtomicUsize::new(list.len()),
        first_error: AtomicU64::new(0),
        signal_on_any: any,
        signaller: Mutex::new(Some(signaller)),
    });
    for m in list {
        let st = state.clone();
        if let Err(already) = m.add_callback(move |f| st.member_done(f)) {
            (already.into_inner())(&m);
        }
    }
    fence
}

/// Every leaf fence inside `fence` (`dma_fence_unwrap`): arrays and timeline points are
/// flattened recursively; a chain yields the contained fence of each node still linked (its
/// walk collects nodes whose fence has signalled, see [`FenceChain::walk`]), flattened in
/// turn. A plain fence unwraps to itself.
pub fn unwrap(fence: &Fence) -> Vec<Fence> {
    let mut out = Vec::new();
    unwrap_into(fence, &mut out);
    out
}

fn unwrap_into(fence: &Fence, out: &mut Vec<Fence>) {
    if as_chain(fence).is_some() {
        // Iterative over the chain's length: only nesting recurses.
        for node in FenceChain::iter(fence) {
            let inner = FenceChain::contained(&node);
            if as_chain(inner).is_some() || !inner.children().is_empty() {
                unwrap_into(inner, out);
            } else {
                out.push(inner.clone());
            }
        }
        return;
    }
    let children = fence.children();
    if children.is_empty() {
        out.push(fence.clone());
    } else {
        for c in children {
            unwrap_into(c, out);
        }
    }
}

/// Merges fences into one (`dma_fence_unwrap_merge`).
///
/// Composites are flattened ([`unwrap`]), fences that signalled successfully are dropped, and
/// of several fences on one context only the latest ([`Fence::is_later`], wrap-around aware)
/// is kept. The result does not depend on the order of the input: the fences left are ordered
/// by context id. Returns a signalled stub when nothing is left, the remaining fence itself
/// when one is left, and a [`FenceArray::all`] of them otherwise.
///
/// Unlike the kernel, which drops every signalled fence, a fence that *failed* is kept (when it
/// is the latest of its context), so the merged fence signals with its error instead of
/// reporting success for failed work.
pub fn merge<'a>(fences: impl IntoIterator<Item = &'a Fence>) -> Fence {
    let mut leaves: Vec<Fence> = Vec::new();
    for f in fences {
        unwrap_into(f, &mut leaves);
    }
    leaves.retain(|f| f.status() != crate::FenceStatus::Signaled);
    // Stable: fences of one context keep their input order, for the tie-break below.
    leaves.sort_by_key(Fence::context);
    let mut kept: Vec<Fence> = Vec::with_capacity(leaves.len());
    for f in leaves {
        match kept.last_mut() {
            Some(k) if k.context() == f.context() => {
                if f.is_later(k) {
                    *k = f;
                }
            }
            _ => kept.push(f),
        }
    }
    match kept.len() {
        0 => Fence::signaled(),
        1 => kept.pop().unwrap_or_else(Fence::signaled),
        _ => FenceArray::all(kept),
    }
}

/// Why a point could not be attached to a [`Timeline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timeline point {point} is not after the last attached point {last}")]
pub struct PointOrderError {
    /// The point that was refused.
    pub point: u64,
    /// The last point attached before.
    pub last: u64,
}

struct TimelineState {
    /// Attached points, strictly increasing, oldest first; leading points that signalled
    /// successfully are pruned.
    points: Vec<(u64, Fence)>,
    /// The last point attached (0 before any).
    last: u64,
    /// The last point pruned (0 before any): it and all before it signalled successfully.
    pruned: u64,
    /// Fences handed out for points not attached yet (wait-before-signal), unordered.
    waiters: Vec<Waiter>,
}

/// A fence handed out for a point not attached yet.
struct Waiter {
    point: u64,
    signaller: Signaller,
    /// Set to the fence of the points that cover it once they are attached.
    target: std::sync::Arc<OnceLock<Fence>>,
}

/// The ops of a wait-before-signal point fence: deadlines set on it reach the attached points
/// that resolve it (a deadline set before they are attached is passed on when they are).
struct WaiterOps {
    target: std::sync::Arc<OnceLock<Fence>>,
}

impl FenceOps for WaiterOps {
    fn set_deadline(&self, deadline: Instant) {
        // Pairs with the fence in `Timeline::attach`: the deadline was stored (by
        // `Fence::set_deadline`) before the target is read here, and `attach` stores the
        // target before it reads the deadline; with a SeqCst fence on each side at least one
        // of the two sees the other's store, so the deadline reaches the target either way.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.target.get() {
            t.set_deadline(deadline);
        }
    }
}

/// A timeline of points (a `drm_syncobj` timeline / a Vulkan timeline semaphore): fences are
/// attached at increasing points, and [`Timeline::point`]`(n)` is a fence that signals once
/// point `n` is reached, that is once the first attached point at or after `n` and all points
/// before it have signalled. Asking for a point that is not attached yet works
/// (wait-before-signal): the fence resolves when a later attach covers it, and signals
/// `Abandoned` if the timeline is dropped first. A point already reached is a signalled fence
/// (with the error of a failed point).
///
/// Unlike [`FenceChain`](crate::FenceChain), whose points are existing node fences, a
/// timeline hands out a fresh fence per query and owns its points behind a lock.
pub struct Timeline {
    ctx: Arc<ContextShared>,
    state: Mutex<TimelineState>,
}

impl fmt::Debug for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeline")
            .field("name", &self.ctx.name)
            .field("last_point", &self.last_point())
            .finish()
    }
}

impl Timeline {
    /// A new, empty timeline.
    pub fn new(name: impl Into<String>) -> Self {
        Timeline {
            ctx: ContextShared::new(
                name.into().into_boxed_str(),
                "gpusched",
                SeqnoWidth::U64,
                None,
            ),
            state: Mutex::new(TimelineState {
                points: Vec::new(),
                last: 0,
                pruned: 0,
                waiters: Vec::new(),
            }),
        }
    }

    /// The timeline's context id (point fences carry it, with the point as seqno).
    pub fn context(&self) -> u64 {
        self.ctx.id
    }

    /// The last point attached (0 before any).
    pub fn last_point(&self) -> u64 {
        lock(&self.state).last
    }

    /// Attaches `fence` as point `point`, which must be after every point attached before.
    ///
    /// # Errors
    /// [`PointOrderError`] when `point` is not after the last attached point; nothing changes.
    pub fn attach(&self, point: u64, fence: Fence) -> Result<(), PointOrderError> {
        let mut resolved = Vec::new();
        {
            let mut st = lock(&self.state);
            if point <= st.last {
                return Err(PointOrderError { point, last: st.last });
            }
            st.last = point;
            st.points.push((point, fence));
            Self::prune(&mut st);
            let mut i = 0;
            while i < st.waiters.len() {
                if st.waiters[i].point <= point {
                    let w = st.waiters.swap_remove(i);
                    let members = Self::members_up_to(&st, point);
                    resolved.push((w, members));
                } else {
                    i += 1;
                }
            }
        }
        for (Waiter { point: n, signaller, target }, members) in resolved {
            let reached = build_array(self.ctx.clone(), n, members, false);
            // Deadlines set on the waiter from now on reach `reached` through its ops; one set
            // while the point was not attached yet is passed on here.
            let _ = target.set(reached.clone());
            // See `WaiterOps::set_deadline`: target stored, then deadline read.
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            if let Some(d) = signaller.deadline() {
                reached.set_deadline(d);
            }
            let mut slot = Some(signaller);
            let forward = move |f: &Fence| {
                if let Some(s) = slot.take() {
                    s.signal_result(f.current_outcome().unwrap_or(Err(FenceError::Abandoned)));
                }
            };
            if let Err(already) = reached.add_callback(forward) {
                (already.into_inner())(&reached);
            }
        }
        Ok(())
    }

    /// A fence that signals when point `n` is reached (see the type's docs). Its context is
    /// the timeline's and its seqno is `n`.
    pub fn point(&self, n: u64) -> Fence {
        let mut st = lock(&self.state);
        Self::prune(&mut st);
        if n <= st.pruned {
            // Every point up to `n` has signalled successfully and was pruned; the first
            // attached point left is after `n` and need not be waited for.
            return Fence::signaled();
        }
        if let Some(&(p, _)) = st.points.iter().find(|(p, _)| *p >= n) {
            let members = Self::members_up_to(&st, p);
            drop(st);
            return build_array(self.ctx.clone(), n, members, false);
        }
        // No attached point covers `n` (had the last one been pruned, `pruned == last >= n`
        // was answered above): wait for a later attach.
        let target = std::sync::Arc::new(OnceLock::new());
        let ops = WaiterOps { target: target.clone() };
        let (fence, signaller) = Fence::new_pending(self.ctx.clone(), n, Some(Box::new(ops)));
        st.waiters.push(Waiter { point: n, signaller, target });
        fence
    }

    /// The highest attached point known reached: it and every point before it have
    /// signalled (successfully or not). 0 when none has.
    pub fn completed(&self) -> u64 {
        let mut st = lock(&self.state);
        Self::prune(&mut st);
        let mut reached = st.pruned;
        for (p, f) in &st.points {
            if f.current_outcome().is_none() {
                break;
            }
            reached = *p;
        }
        reached
    }

    fn prune(st: &mut TimelineState) {
        let done = st
            .points
            .iter()
            // Flag only: polling a backend here could signal a fence, and run its callbacks,
            // under the timeline's lock.
            .take_while(|(_, f)| f.current_outcome() == Some(Ok(())))
            .count();
        if done > 0 {
            st.pruned = st.points[done - 1].0;
            st.points.drain(..done);
        }
    }

    fn members_up_to(st: &TimelineState, point: u64) -> Vec<Fence> {
        st.points.iter().take_while(|(p, _)| *p <= point).map(|(_, f)| f.clone()).collect()
    }
}
