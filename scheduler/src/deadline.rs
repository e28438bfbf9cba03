//! Deadline hints through the scheduler (`drm_sched_fence_set_deadline_finished`).
//!
//! A deadline set on a job's finished fence ([`Fence::set_deadline`]) reaches the job's
//! hardware fence (what `Backend::run_job` returned), so that the backend can act on it:
//! - set before the job runs: the finished fence remembers it ([`Fence::deadline`]), and the
//!   run path forwards it right after it published the hardware fence
//!   ([`forward_to_hw`]);
//! - set while the job runs: the finished context's deadline hook
//!   ([`finished_deadline_hook`]) finds the job on its scheduler's pending list and forwards
//!   it at once;
//! - a job resubmitted after a reset: its new hardware fence gets it the same way as in the
//!   run path (the old one is dead).
//!
//! A deadline set concurrently with `run_job` is not lost: the run path publishes the
//! hardware fence under the job's `hw` lock, then reads the finished fence's deadline; the
//! hook stores the deadline (inside `Fence::set_deadline`), then reads the hardware fence
//! under the same lock. Whichever takes the lock second sees what the other stored, so at
//! least one of them forwards (both may: the earliest deadline wins, so twice is harmless).
//!
//! Both paths are allocation-free, never wait on a fence and take no `Resv` lock (rule 4 of
//! CONTRACT.md): the hook takes the entity's binding lock, then the scheduler's state lock,
//! then the job's `hw` lock, one at a time, and forwards with none held.

use std::sync::Weak;
use std::time::Instant;

use gpusched_fence::Fence;

use crate::backend::Backend;
use crate::entity::EntityShared;
use crate::job::JobInner;
use crate::sched::SchedShared;
use crate::sync::{lock, Arc};

/// The deadline hook of an entity's finished-fence context: forwards a deadline set on a
/// running job's finished fence to its hardware fence. A job not running yet gets it from
/// the run path ([`forward_to_hw`]); a finished job never calls the hook (a signalled fence
/// ignores deadlines).
pub(crate) fn finished_deadline_hook<B: Backend>(
    entity: Weak<EntityShared<B>>,
) -> impl Fn(&Fence, Instant) + Send + Sync + 'static {
    move |finished, deadline| {
        let Some(entity) = entity.upgrade() else { return };
        // An entity with work stays on its scheduler: a running job is on the current one.
        let sched = lock(&entity.binding).current.as_ref().map(|(s, _)| s.clone());
        if let Some(sched) = sched {
            sched.forward_deadline(finished, deadline);
        }
    }
}

/// The run path's half, called after it published the hardware fence in `job.hw` (and
/// released that lock): forwards the deadline set on the job's finished fence so far, if
/// any. Without a deadline it costs one atomic load. Allocation-free.
pub(crate) fn forward_to_hw<B: Backend>(job: &JobInner<B>) {
    if let Some(d) = job.finished.deadline() {
        forward_to_published(job, d);
    }
}

/// Forwards `deadline` to the job's published hardware fence, if any, with no lock held
/// while forwarding.
fn forward_to_published<B: Backend>(job: &JobInner<B>, deadline: Instant) {
    let hw = lock(&job.hw).fence.clone();
    if let Some(hw) = hw {
        hw.set_deadline(deadline);
    }
}

impl<B: Backend> SchedShared<B> {
    /// Forwards `deadline` to the hardware fence of the pending job whose finished fence is
    /// `finished`, if it has one yet. A bounded scan of the pending list (the jobs on the
    /// ring) under the state lock; the forward runs with no lock held. Allocation-free.
    pub(crate) fn forward_deadline(&self, finished: &Fence, deadline: Instant) {
        let job: Option<Arc<JobInner<B>>> = {
            let st = lock(&self.state);
            st.pending.iter().find(|j| j.finished.ptr_eq(finished)).cloned()
        };
        if let Some(job) = job {
            forward_to_published(&job, deadline);
        }
    }
}
