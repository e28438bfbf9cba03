//! Cross-ring dependencies: a dependency on a job of *another* scheduler whose backend can
//! wait for that scheduler's hardware fences inside its own submissions
//! ([`Backend::can_wait_natively`]: two rings of one device).
//!
//! # Rules
//! - At arm time such a dependency (the finished fence of a job queued or running on a peer
//!   scheduler) is recorded as a [`CrossRingDep`]; the job waits on the host only for the
//!   other job's *scheduled* fence (counted with the external dependencies). Its finished
//!   fence is waited for by the hardware: right before `run_job` the backend gets the other
//!   job's hardware fence ([`Backend::wait_natively`]) and waits for it inside its own
//!   submission.
//! - No deadlock: the awaited work is already on a ring when the dependant is submitted
//!   (its scheduled fence signalled after its hardware fence was published), and a ring never
//!   waits for work submitted after it, so the chain of GPU-side waits has no cycle.
//! - Errors keep the host-wait outcome: a dependency that failed before reaching the
//!   hardware signals its scheduled fence with that error, and the dependant ends with it
//!   without running; one whose finished fence failed by the time the dependant runs or
//!   completes makes the dependant end with that error (it ran on missing results), and so
//!   do its dependants on its own ring already handed to the hardware (`hw_done`: they would
//!   not have run either with host waits). A dependency's own hardware error does not pass to
//!   a same-ring dependant, which waits for its scheduling only, as with `drm_sched`.
//! - Timeouts: a job waiting on the device for another ring's job is not blamed for that
//!   job's hang; its timeout counts from when the awaited job finished ([`own_start`]).
//! - A dependency found nowhere (armed but not pushed, or already retired) stays a host wait.

use std::any::Any;
use std::sync::{Mutex as StdMutex, Weak};
use std::time::Instant;

use gpusched_fence::{Fence, FenceError, FenceStatus};

use crate::backend::Backend;
use crate::job::JobInner;
use crate::sched::SchedShared;
use crate::sync::{lock, Arc};

/// A job's cross-ring dependencies.
pub(crate) struct CrossRing<B: Backend> {
    pub(crate) deps: Box<[CrossRingDep<B>]>,
}

impl<B: Backend> CrossRing<B> {
    /// `None` without dependencies.
    pub(crate) fn new(deps: Vec<CrossRingDep<B>>) -> Option<Self> {
        (!deps.is_empty()).then(|| CrossRing { deps: deps.into_boxed_slice() })
    }

    /// The error of the first dependency that failed: its finished fence's, or its current
    /// hardware fence's (the device waited for that fence, which signalled before the
    /// dependant's could; its finished fence may not have signalled yet). Allocation-free.
    pub(crate) fn error(&self) -> Option<FenceError> {
        self.deps.iter().find_map(|d| {
            d.finished.error().or_else(|| {
                let job = d.job.upgrade()?;
                let hw = lock(&job.hw).fence.clone();
                hw.and_then(|f| f.error())
            })
        })
    }
}

/// A dependency on a job of another scheduler that the hardware waits for.
pub(crate) struct CrossRingDep<B: Backend> {
    /// The other job (weakly: a chain of jobs must not keep its predecessors alive).
    pub(crate) job: Weak<JobInner<B>>,
    /// Its finished fence.
    pub(crate) finished: Fence,
}

impl<B: Backend> CrossRingDep<B> {
    /// What the backend must wait for now: `Ok(None)` when the dependency has finished
    /// successfully, `Ok(Some(hw))` for its hardware fence, or the error the dependant must
    /// end with (the dependency failed, or never reached the hardware).
    pub(crate) fn hw_wait(&self) -> Result<Option<Fence>, FenceError> {
        match self.finished.status() {
            FenceStatus::Signaled => return Ok(None),
            FenceStatus::Failed(e) => return Err(e),
            FenceStatus::Pending => {}
        }
        let Some(job) = self.job.upgrade() else {
            // Freed: its finished fence has signalled (a job is freed after it signals).
            return self.finished.error().map_or(Ok(None), Err);
        };
        if let Some(e) = job.deferred_error.get() {
            return Err(e);
        }
        let hw = lock(&job.hw).fence.clone();
        match hw {
            Some(hw) => Ok(Some(hw)),
            // Its scheduled fence signalled successfully only after its hardware fence was
            // published; none now means it ended without one.
            None => Err(self.finished.error().unwrap_or(FenceError::Cancelled)),
        }
    }
}

/// When a job with cross-ring dependencies could start on its ring: when the last of them
/// finished (`now` while one has not); `None` without any. For the timeout: a job waiting on
/// the device for another ring's job is not running, and is never blamed for that job's
/// hang. Allocation-free.
pub(crate) fn own_start<B: Backend>(job: &JobInner<B>, now: Instant) -> Option<Instant> {
    job.cross_ring()?
        .deps
        .iter()
        .map(|d| if d.finished.is_signaled() { d.finished.timestamp().unwrap_or(now) } else { now })
        .max()
}

/// Every scheduler of the process, weakly, for the arm-time lookup of peers.
static SCHEDULERS: StdMutex<Vec<Weak<dyn Any + Send + Sync>>> = StdMutex::new(Vec::new());

/// Registers a new scheduler (allocates; at creation).
pub(crate) fn register<B: Backend>(sched: &Arc<SchedShared<B>>) {
    let any: Arc<dyn Any + Send + Sync> = sched.clone();
    let mut all = SCHEDULERS.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|w| w.strong_count() > 0);
    all.push(Arc::downgrade(&any));
}

/// If `dep` is the finished fence of a job queued or running on a scheduler other than
/// `sched` whose hardware fences `sched`'s backend can wait for, that job. At arm time.
pub(crate) fn find<B: Backend>(
    sched: &Arc<SchedShared<B>>,
    dep: &Fence,
) -> Option<Arc<JobInner<B>>> {
    let all = SCHEDULERS.lock().unwrap_or_else(|p| p.into_inner());
    for w in all.iter() {
        let Some(peer) = w.upgrade() else { continue };
        let Some(peer) = peer.downcast_ref::<SchedShared<B>>() else { continue };
        if peer.id == sched.id || !sched.backend.can_wait_natively(&peer.backend) {
            continue;
        }
        let st = lock(&peer.state);
        let Some(&key) = st.by_context.get(&dep.context()) else { continue };
        let is_it = |j: &&Arc<JobInner<B>>| j.finished.ptr_eq(dep);
        let queued = st.slots.get(key).and_then(|s| s.queue.iter().find(is_it));
        return queued.or_else(|| st.pending.iter().find(is_it)).cloned();
    }
    None
}
