//! Jobs: the builder, armed jobs, and the shared job record (`struct drm_sched_job` with its
//! `drm_sched_fence` pair).
//!
//! # Life of a job
//! `entity.job(payload)` → [`JobBuilder`] (credits, dependencies) → [`JobBuilder::arm`]
//! (picks the scheduler, allocates everything the signalling path will need, creates the
//! *scheduled* and *finished* fences: the finished fence may be published from here on) →
//! [`ArmedJob::push`] (queued on the entity) → dependencies signalled → picked by the
//! scheduler (scheduled fence signals, `run_job` inside a signalling section) → hardware fence
//! signals → finished fence signals → `free_job`. Exits: a dropped armed job, a killed or
//! banned entity, a failed dependency and a shut-down scheduler signal the finished fence with
//! an error without running the job.

use std::collections::VecDeque;
use std::fmt;

use gpusched_fence::{
    Callback, CallbackId, Fence, FenceError, FenceStatus, SharedCallback, Signaller,
};

use crate::backend::{Backend, JobInfo};
use crate::entity::EntityShared;
use crate::sync::{lock, Arc, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Mutex, Ordering};

/// A dependency on a job of the same scheduler: it is met once that job has been *scheduled*
/// (handed to the ring, which executes in order), or has finished.
pub(crate) struct SameSchedDep<B: Backend> {
    pub(crate) entity: Arc<EntityShared<B>>,
    pub(crate) seqno: u64,
    pub(crate) finished: Fence,
}

impl<B: Backend> SameSchedDep<B> {
    /// The dependency's error: its finished fence's, or, if it is a job of `pending` (the
    /// scheduler's pending list, given while any job there has a deferred error) that failed
    /// but signals later in timeline order (`JobInner::deferred_error`), that error: it is
    /// already failed for its dependants.
    pub(crate) fn error(&self, pending: Option<&VecDeque<Arc<JobInner<B>>>>) -> Option<FenceError> {
        self.finished.error().or_else(|| self.deferred_error(pending))
    }

    /// The deferred error of the dependency, if it is a job of `pending` with one.
    pub(crate) fn deferred_error(
        &self,
        pending: Option<&VecDeque<Arc<JobInner<B>>>>,
    ) -> Option<FenceError> {
        let job = pending?.iter().find(|j| j.finished.ptr_eq(&self.finished))?;
        job.deferred_error.get()
    }
}

/// A job's dependencies on jobs of rings: boxed apart from the job record (one pointer
/// there), since most jobs have none.
pub(crate) struct RingDeps<B: Backend> {
    /// Dependencies on jobs of the same scheduler (met once those are scheduled).
    pub(crate) same_sched: Box<[SameSchedDep<B>]>,
    /// Dependencies on jobs of other rings the hardware waits for (`cross_ring.rs`); their
    /// scheduled fences are counted in `JobInner::deps_pending`.
    pub(crate) cross_ring: Option<crate::cross_ring::CrossRing<B>>,
}

impl<B: Backend> RingDeps<B> {
    /// `None` without any dependency.
    pub(crate) fn new(
        same: Vec<SameSchedDep<B>>,
        cross: Vec<crate::cross_ring::CrossRingDep<B>>,
    ) -> Option<Box<Self>> {
        if same.is_empty() && cross.is_empty() {
            return None;
        }
        Some(Box::new(RingDeps {
            same_sched: same.into_boxed_slice(),
            cross_ring: crate::cross_ring::CrossRing::new(cross),
        }))
    }
}

/// The hardware side of a job and its fences' signallers. Protected by `JobInner::hw`.
pub(crate) struct HwState {
    /// The completion callback is not on the hardware fence: before the run attaches it,
    /// after a TDR stop detached it, or when the fence had signalled before it could be
    /// added. The callback is the job itself ([`JobInner::completion`]): attaching it makes
    /// one from the job's `Arc` without allocating; detaching it drops that handle.
    pub(crate) callback: bool,
    /// The hardware fence, once `run_job` returned it.
    pub(crate) fence: Option<Fence>,
    /// The completion callback's id on `fence`, to detach it (TDR stop).
    pub(crate) callback_id: Option<CallbackId>,
    /// A run of this job is in progress (set before `run_job`, cleared once the completion
    /// callback is attached to the hardware fence or the run failed): the hardware may be
    /// running it although its completion is not watched yet, so a teardown nested in that
    /// window (a scheduled-fence callback dropping the last handle) must neither free the
    /// payload nor take the completion callback (the run path attaches it).
    pub(crate) submitting: bool,
    /// The signaller of the job's scheduled fence, taken when it signals. (The signallers
    /// share this lock: each is only taken out under it, never with other locks or calls.)
    pub(crate) scheduled: Option<Signaller>,
    /// The signaller of the job's finished fence, taken when it signals.
    pub(crate) finished: Option<Signaller>,
}

/// Where a job is. Stored in `JobInner::state`; advanced by the scheduler only.
pub(crate) mod state {
    /// Armed, not pushed.
    pub(crate) const ARMED: u32 = 0;
    /// Pushed on its entity's queue.
    pub(crate) const QUEUED: u32 = 1;
    /// Handed to the ring (`run_job` called); in the pending list.
    pub(crate) const RUNNING: u32 = 2;
    /// Finished fence signalled (successfully or not).
    pub(crate) const DONE: u32 = 3;
    /// Dropped unpushed: queued only to be cancelled in timeline order.
    pub(crate) const DROPPED: u32 = 4;
}

/// An optional [`FenceError`] in one atomic word ([`FenceError::encode`]): half the size of a
/// `Mutex<Option<FenceError>>`, and no lock round trip.
///
/// Every access is an AcqRel read-modify-write, so the slot orders its users as the lock it
/// replaces did: of a thread that stores an error and then reads another location (a fence's
/// state) and a thread that writes that location and then reads the slot, one sees the
/// other's write. (Two RMWs on the slot are totally ordered, and the later one reads, and
/// synchronizes with, the earlier.)
pub(crate) struct ErrorSlot(AtomicU64);

impl ErrorSlot {
    pub(crate) fn new() -> Self {
        ErrorSlot(AtomicU64::new(0))
    }

    /// The error stored, if any.
    pub(crate) fn get(&self) -> Option<FenceError> {
        FenceError::decode(self.0.fetch_add(0, Ordering::AcqRel))
    }

    /// Whether an error is stored.
    pub(crate) fn is_some(&self) -> bool {
        self.get().is_some()
    }

    /// Stores `error`, replacing any.
    pub(crate) fn set(&self, error: FenceError) {
        self.0.swap(FenceError::encode(Some(error)), Ordering::AcqRel);
    }

    /// Stores `error` unless one is stored already (the first error wins).
    pub(crate) fn set_if_none(&self, error: FenceError) {
        let word = FenceError::encode(Some(error));
        let _ = self.0.compare_exchange(0, word, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Takes the error out; exactly one of several concurrent takers gets it.
    pub(crate) fn take(&self) -> Option<FenceError> {
        FenceError::decode(self.0.swap(0, Ordering::AcqRel))
    }
}

pub(crate) struct JobInner<B: Backend> {
    pub(crate) info: JobInfo,
    pub(crate) entity: Arc<EntityShared<B>>,
    /// The scheduler the job was armed on (its callbacks report there).
    pub(crate) sched: Arc<crate::sched::SchedShared<B>>,
    /// Its entity's slot key on its scheduler (`ArmedJob::slot`).
    pub(crate) slot: usize,
    pub(crate) scheduled: Fence,
    pub(crate) finished: Fence,
    /// The payload; `None` once freed.
    pub(crate) payload: Mutex<Option<B::Job>>,
    /// External dependencies not yet signalled.
    pub(crate) deps_pending: AtomicUsize,
    /// The first failed dependency's error.
    pub(crate) dep_error: ErrorSlot,
    /// Dependencies on jobs of this scheduler and of other rings; `None` for most jobs.
    pub(crate) ring_deps: Option<Box<RingDeps<B>>>,
    /// The finished fence of the entity's previous job: a job that ends without running
    /// signals only after it, so the entity's timeline signals in seqno order.
    pub(crate) prev_finished: Option<Fence>,
    pub(crate) hw: Mutex<HwState>,
    /// Global push order (for FIFO selection); set at push.
    pub(crate) submit_order: AtomicU64,
    /// See [`state`].
    pub(crate) state: AtomicU32,
    /// The last recovery pass (`SchedState::recovery_epoch`) that handled this job.
    pub(crate) recovery_epoch: AtomicU64,
    /// Set when the job must end with this error without (again) reaching the hardware (its
    /// `run_job` failed, or a same-scheduler dependency failed before its resubmission) while
    /// its entity's previous job had not signalled: it stays in the pending list, holding its
    /// credits, until that job signals and retires it (`SchedShared::release_deferred`), so
    /// the entity's timeline signals in seqno order. Whoever `take`s the error retires it.
    pub(crate) deferred_error: ErrorSlot,
    /// Retired by a teardown while its hardware fence had not signalled (a backend without
    /// [`Backend::cancel_running`]): its finished fence has signalled, but its payload is
    /// freed only once the hardware fence signals (`SchedShared::hw_done`).
    pub(crate) free_on_hw_done: AtomicBool,
}

/// The head job's readiness.
pub(crate) enum Readiness {
    Ready,
    Blocked(Blocker),
    Failed(FenceError),
}

/// What a blocked head job waits for; it decides how its entity is woken (see the
/// scheduler's ready lists).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Blocker {
    /// An external dependency: the callback that counts the last one down wakes the entity.
    External,
    /// A job of this scheduler (a same-ring dependency, or the entity's previous job before a
    /// failed job may signal): the scheduler's progress counter wakes it.
    Ring,
}

impl<B: Backend> JobInner<B> {
    /// `pending`: see [`SameSchedDep::error`].
    pub(crate) fn readiness(&self, pending: Option<&VecDeque<Arc<JobInner<B>>>>) -> Readiness {
        if self.state.load(Ordering::Acquire) == state::DROPPED {
            return Readiness::Failed(FenceError::Cancelled);
        }
        if self.entity.is_stopped.load(Ordering::Acquire) {
            if let Some(e) = self.entity.stopped_error() {
                return Readiness::Failed(e);
            }
        }
        if self.deps_pending.load(Ordering::Acquire) != 0 {
            return Readiness::Blocked(Blocker::External);
        }
        if let Some(e) = self.dep_error.get() {
            return Readiness::Failed(e);
        }
        for d in self.same_sched() {
            // One read of the fence: it may signal (with an error) while we look, and a
            // second read could then see it signalled but not the error.
            match d.finished.status() {
                FenceStatus::Failed(e) => return Readiness::Failed(e),
                FenceStatus::Signaled => continue,
                FenceStatus::Pending => {}
            }
            if let Some(e) = d.deferred_error(pending) {
                return Readiness::Failed(e);
            }
            let scheduled = d.entity.scheduled_seqno.load(Ordering::Acquire) >= d.seqno;
            // While any job of its entity is failing in timeline order (a deferred error), a
            // scheduled job may be that one: wait for its finished fence instead.
            let failing = d.entity.deferred_jobs.load(Ordering::Acquire) != 0;
            if !scheduled || failing {
                return Readiness::Blocked(Blocker::Ring);
            }
        }
        Readiness::Ready
    }

    /// Whether the entity's previous job has signalled its finished fence, so that this one
    /// may signal without running.
    pub(crate) fn prev_signalled(&self) -> bool {
        self.prev_finished.as_ref().is_none_or(Fence::is_signaled)
    }

    /// The error of a dependency that failed after this job was handed to the hardware: a
    /// cross-ring dependency the device waited for, or a same-ring one that itself ended so
    /// (`dep_error`, set by its completion; see `SchedShared::hw_done`). The job then runs on
    /// missing results. `None` for a job that has not run (its failed dependencies keep it
    /// from running).
    pub(crate) fn inherited_error(&self) -> Option<FenceError> {
        self.dep_error.get().or_else(|| self.cross_ring().and_then(|c| c.error()))
    }

    /// A dependency signalled: record its error, count it down. Returns whether it was the
    /// last one.
    pub(crate) fn dep_signalled(&self, dep: &Fence) -> bool {
        if let Some(e) = dep.error() {
            self.dep_error.set_if_none(e);
        }
        let last = self.deps_pending.fetch_sub(1, Ordering::AcqRel) == 1;
        if last {
            diag!(trace, target: "gpusched", job = self.info.id, entity = self.info.entity, "dependencies ready");
        }
        last
    }

    pub(crate) fn signal_scheduled(&self, error: Option<FenceError>) {
        let s = lock(&self.hw).scheduled.take();
        if let Some(s) = s {
            s.signal_result(error.map_or(Ok(()), Err));
        }
    }

    pub(crate) fn signal_finished(&self, error: Option<FenceError>) {
        let s = lock(&self.hw).finished.take();
        if let Some(s) = s {
            self.state.store(state::DONE, Ordering::Release);
            s.signal_result(error.map_or(Ok(()), Err));
        }
    }

    /// The job's dependencies on jobs of its own scheduler.
    pub(crate) fn same_sched(&self) -> &[SameSchedDep<B>] {
        self.ring_deps.as_ref().map_or(&[], |d| &d.same_sched)
    }

    /// The job's dependencies on jobs of other rings, if any.
    pub(crate) fn cross_ring(&self) -> Option<&crate::cross_ring::CrossRing<B>> {
        self.ring_deps.as_ref()?.cross_ring.as_ref()
    }

    /// Takes the payload out (for `free_job`).
    pub(crate) fn take_payload(&self) -> Option<B::Job> {
        lock(&self.payload).take()
    }

    /// The job's completion callback for its hardware fence: the job itself (see its
    /// [`SharedCallback`] impl). Allocation-free.
    pub(crate) fn completion(self: &Arc<Self>) -> Callback {
        Callback::shared(self.clone())
    }

    /// A dependency signalled (its callback): counts it down, and once the last one is in,
    /// wakes the entity if it waits for it. The pump runs once the signal's callbacks have
    /// all run: jobs released by one signal are then selected together, by priority, and
    /// handed to the ring as one batch.
    fn dependency_callback(self: Arc<Self>, dep: &Fence) {
        if self.dep_signalled(dep) {
            self.sched.wake_external(&self);
        }
        #[cfg(not(gpusched_loom))]
        gpusched_fence::defer_after_callbacks(self.sched.clone());
        #[cfg(gpusched_loom)]
        self.sched.pump();
    }
}

/// A job is its own callback, on its external dependencies' fences and on its hardware fence
/// (the kernel embeds both `dma_fence_cb`s in the job): adding either allocates nothing.
///
/// Which one runs is told by `deps_pending`, read before anything changes it: a dependency's
/// callback runs while that dependency is still counted (it counts it down itself), so it
/// reads a non-zero count; the completion callback is attached only to a job that was
/// selected to run, which needs every dependency counted down, and the count never rises
/// again, so it reads zero.
impl<B: Backend> SharedCallback for JobInner<B> {
    fn on_signal(self: Arc<Self>, fence: &Fence) {
        if self.deps_pending.load(Ordering::Acquire) != 0 {
            self.dependency_callback(fence);
        } else {
            let sched = self.sched.clone();
            sched.hw_done(&self, fence.error());
        }
    }
}

/// A job being built: `entity.job(payload)`, then credits and dependencies, then
/// [`arm`](JobBuilder::arm).
pub struct JobBuilder<'e, B: Backend> {
    pub(crate) entity: &'e crate::Entity<B>,
    pub(crate) payload: B::Job,
    pub(crate) credits: u32,
    pub(crate) deps: Vec<Fence>,
}

impl<B: Backend> fmt::Debug for JobBuilder<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobBuilder")
            .field("credits", &self.credits)
            .field("dependencies", &self.deps.len())
            .finish_non_exhaustive()
    }
}

impl<'e, B: Backend> JobBuilder<'e, B> {
    /// The job's credits (default 1): how much of the ring it occupies.
    pub fn credits(mut self, credits: u32) -> Self {
        self.credits = credits;
        self
    }

    /// Adds an explicit dependency: the job runs after `fence` signals, and fails with its
    /// error (without running) if it fails. Dependencies on one context are deduplicated,
    /// keeping the later fence (`drm_sched_job_add_dependency`).
    pub fn dependency(mut self, fence: Fence) -> Self {
        self.deps.push(fence);
        self
    }

    /// Adds several explicit dependencies.
    pub fn dependencies(mut self, fences: impl IntoIterator<Item = Fence>) -> Self {
        self.deps.extend(fences);
        self
    }

    /// Adds the implicit dependencies of a buffer from its reservation object: a reader waits
    /// for the writers (and kernel fences), a writer waits for readers and writers
    /// (`drm_sched_job_add_implicit_dependencies`). Bookkeeping fences are never waited on.
    #[cfg(not(gpusched_loom))]
    pub fn resv_dependencies(
        mut self,
        resv: &gpusched_resv::ResvGuard<'_>,
        access: Access,
    ) -> Self {
        let usage = match access {
            Access::Read => gpusched_resv::Usage::Write,
            Access::Write => gpusched_resv::Usage::Read,
        };
        self.deps.extend(resv.get_fences(usage));
        self
    }

    /// Arms the job: selects the scheduler, reserves everything the signalling path needs and
    /// creates the job's fences. From here the finished fence may be published (added to a
    /// `Resv`, handed to another client); the job must then be pushed, and dropping it
    /// unpushed signals its fences with `Cancelled`.
    ///
    /// # Errors
    /// Zero credits, more credits than the scheduler's limit, a killed or banned entity, a
    /// scheduler that is gone, or a backend that refused the job: the payload is handed back.
    pub fn arm(self) -> Result<ArmedJob<B>, crate::ArmError<B::Job, B::Error>> {
        crate::entity::arm(self)
    }
}

/// How a job uses a buffer, for implicit synchronisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The job reads the buffer: it waits for writers.
    Read,
    /// The job writes the buffer: it waits for readers and writers.
    Write,
}

/// An armed job: its fences exist and may be published; [`push`](ArmedJob::push) queues it.
/// Dropping it unpushed signals both fences with [`FenceError::Cancelled`].
#[must_use = "an armed job that is dropped unpushed is cancelled"]
pub struct ArmedJob<B: Backend> {
    pub(crate) job: Option<Arc<JobInner<B>>>,
}

impl<B: Backend> fmt::Debug for ArmedJob<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ArmedJob");
        if let Some(j) = &self.job {
            d.field("id", &j.info.id).field("seqno", &j.info.seqno);
        }
        d.finish_non_exhaustive()
    }
}

impl<B: Backend> ArmedJob<B> {
    fn inner(&self) -> &JobInner<B> {
        match &self.job {
            Some(j) => j,
            None => unreachable!("an ArmedJob holds its job until push or drop"),
        }
    }

    /// The fence that signals when the job is handed to the hardware (or cancelled).
    pub fn scheduled(&self) -> &Fence {
        &self.inner().scheduled
    }

    /// The fence that signals when the job's work is complete, or failed.
    pub fn finished(&self) -> &Fence {
        &self.inner().finished
    }

    /// What the scheduler tells the backend about this job.
    pub fn info(&self) -> JobInfo {
        self.inner().info
    }

    /// Queues the job on its entity (`drm_sched_entity_push_job`). Never allocates: the queue
    /// slot was reserved at arm time. If the entity was killed or the scheduler shut down
    /// since arming, the job's fences signal with that error instead. Returns the finished
    /// fence.
    pub fn push(mut self) -> Fence {
        let job = match self.job.take() {
            Some(j) => j,
            None => unreachable!("an ArmedJob holds its job until push or drop"),
        };
        let finished = job.finished.clone();
        let sched = job.sched.clone();
        sched.push(job);
        finished
    }
}

impl<B: Backend> Drop for ArmedJob<B> {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            let sched = job.sched.clone();
            sched.drop_armed(job);
        }
    }
}

#[cfg(all(test, not(gpusched_loom)))]
mod tests {
    use super::*;
    use crate::testing::MockRing;

    /// The job record's size (printed) stays within its budget: with its `Arc` counts it is
    /// the largest part of what a queued job costs besides its payload.
    #[test]
    fn job_record_size() {
        let payload = std::mem::size_of::<Option<crate::testing::MockJob>>();
        let record = std::mem::size_of::<JobInner<MockRing>>();
        println!(
            "JobInner<MockRing> = {record} bytes (payload slot {payload}, HwState {}, \
             JobInfo {})",
            std::mem::size_of::<Mutex<HwState>>(),
            std::mem::size_of::<JobInfo>()
        );
        assert!(
            record - payload <= 200,
            "JobInner is {record} bytes besides a {payload}-byte payload"
        );
    }
}
