//! The [`Backend`] trait: what a hardware ring must provide (`struct drm_sched_backend_ops`).

use gpusched_fence::{Fence, FenceError};

use crate::config::Priority;
use crate::tdr::Recovery;

/// What the scheduler tells a backend about a job.
#[derive(Clone, Copy, Debug)]
pub struct JobInfo {
    /// A process-unique job id.
    pub id: u64,
    /// The seqno of the job's scheduled and finished fences on its entity's timelines.
    pub seqno: u64,
    /// The job's credits.
    pub credits: u32,
    /// The submitting entity's priority.
    pub priority: Priority,
    /// The submitting entity's id.
    pub entity: u64,
}

/// The backend's answer after a timeout (`enum drm_gpu_sched_stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutStatus {
    /// The job was slow, not stuck: re-arm the timer and keep it at the head.
    NoHang,
    /// The hardware was reset: the guilty job was dealt with; re-arm for the next job.
    Reset,
    /// The device is gone: every fence of the domain signals `DeviceLost`.
    NoDevice,
}

/// A hardware ring as the scheduler sees it.
///
/// # Contract
/// - [`run_job`](Backend::run_job) is called inside a signalling section: it must not take a
///   `Resv` lock, allocate through a path that can reclaim, or wait on a fence. Do allocation
///   in [`prepare_job`](Backend::prepare_job), which runs at arm time, outside any section.
/// - The fence `run_job` returns (the *hardware fence*) must signal once the hardware has
///   finished the job (with an error if it failed). It should have room for one callback
///   ([`Fence::reserve_callbacks`]) so that the scheduler's completion callback is added
///   without allocating.
/// - Jobs are run in the order the scheduler calls `run_job`; the ring executes them in that
///   order (the same-scheduler dependency shortcut relies on it).
/// - [`free_job`](Backend::free_job) and [`cancel_job`](Backend::cancel_job) are called once
///   per job ([`cancel_running`](Backend::cancel_running) at most once, at teardown), after its finished fence signalled, by whichever thread pumps the scheduler:
///   that may be a completion callback, inside a signalling section. They follow the same
///   rules as `run_job` (releasing memory is fine; allocating, taking a `Resv` lock or
///   waiting is not). Resources the hardware may still use (a force-completed job) must be
///   kept until the hardware has passed them.
pub trait Backend: Send + Sync + Sized + 'static {
    /// The job payload (command buffers, a recording closure ...).
    type Job: Send + 'static;

    /// Why [`prepare_job`](Backend::prepare_job) refused a job (a recording error, an
    /// allocation failure ...). Arming hands it back unchanged, in
    /// [`ArmFailure::Backend`](crate::ArmFailure::Backend), so the caller sees the backend's own
    /// error type. A backend that never refuses a job uses [`std::convert::Infallible`].
    type Error: std::error::Error + Send + Sync + 'static;

    /// Prepares a job at arm time, outside any signalling section: allocate and record here.
    ///
    /// # Errors
    /// An error refuses the job; arming fails with
    /// [`ArmFailure::Backend`](crate::ArmFailure::Backend) and hands the payload back. No fence
    /// exists yet, so none is lost.
    fn prepare_job(&self, job: &mut Self::Job, info: &JobInfo) -> Result<(), Self::Error> {
        let _ = (job, info);
        Ok(())
    }

    /// Submits a job to the hardware and returns its hardware fence. Runs inside a signalling
    /// section.
    ///
    /// # Errors
    /// An error means the job never reached the hardware; its fences signal that error.
    fn run_job(&self, job: &mut Self::Job, info: &JobInfo) -> Result<Fence, FenceError>;

    /// The job at the head of the ring ran past its timeout (`timedout_job`). Runs on the
    /// reset domain's worker inside a signalling section: use the steps of `recovery`
    /// (usually [`Recovery::standard_reset`] with the backend's hardware reset) and say what
    /// happened. Must not allocate, take a `Resv` lock or wait on a fence.
    fn timedout_job(&self, recovery: &mut Recovery<'_, Self>) -> TimeoutStatus;

    /// Called by the scheduler when it has handed over every job it can for now (its
    /// selection went idle), inside a signalling section: a backend that batches the jobs of
    /// consecutive [`run_job`](Backend::run_job) calls submits the batch here (one
    /// `vkQueueSubmit` for several jobs). The hardware fences `run_job` returned must signal
    /// once the batch completes. Same rules as `run_job`.
    fn flush(&self) {}

    /// Whether this ring can wait, inside its own submissions, for the hardware fences that
    /// `other` (another ring, of another scheduler) returns from `run_job`: two rings of one
    /// device. When it can, a job depending on a job of `other`'s scheduler waits on the
    /// host only until that job is *scheduled* (on its ring), and the backend gets the
    /// job's hardware fence through [`wait_natively`](Backend::wait_natively) to wait for it
    /// on the device. At arm time. The default: never (every such dependency waits on the
    /// host).
    fn can_wait_natively(&self, other: &Self) -> bool {
        let _ = other;
        false
    }

    /// At arm time, after [`prepare_job`](Backend::prepare_job): the job has `count`
    /// dependencies it will wait for natively (indices `0..count` of
    /// [`wait_natively`](Backend::wait_natively)). Reserve what recording them needs here:
    /// `wait_natively` runs inside a signalling section.
    fn reserve_native_waits(&self, job: &mut Self::Job, count: usize) {
        let _ = (job, count);
    }

    /// Right before [`run_job`](Backend::run_job) (each time, resubmissions included), inside
    /// the same signalling section: the job's native dependency `index` must be waited for
    /// on the device until `hw` (a hardware fence returned by the `run_job` of a ring this
    /// one [can wait for](Backend::can_wait_natively), already submitted) signals; `None`:
    /// it has finished, no wait. Same rules as `run_job`.
    ///
    /// # Errors
    /// The wait cannot be expressed (the other ring's device was lost or re-created): the job
    /// does not run and its fences signal that error. The default (never called unless
    /// [`can_wait_natively`](Backend::can_wait_natively) says yes) refuses with
    /// [`FenceError::Cancelled`].
    fn wait_natively(
        &self,
        job: &mut Self::Job,
        index: usize,
        hw: Option<&Fence>,
    ) -> Result<(), FenceError> {
        let _ = (job, index, hw);
        Err(FenceError::Cancelled)
    }

    /// Releases a job's resources once its finished fence has signalled.
    fn free_job(&self, job: Self::Job, info: &JobInfo) {
        let _ = info;
        drop(job);
    }

    /// A job is being cancelled (killed, banned, dependency failed, scheduler shut down)
    /// before it reached the hardware; `free_job` follows.
    fn cancel_job(&self, job: &mut Self::Job, info: &JobInfo, error: FenceError) {
        let _ = (job, info, error);
    }

    /// The scheduler is being torn down (its last handle dropped, or
    /// [`Scheduler::shutdown`](crate::Scheduler::shutdown)) while this job is on the ring (the
    /// kernel's `cancel_job` op, called by `drm_sched_fini`): signal the job's hardware fence
    /// with `error` now (`-ECANCELED`: [`FenceError::Cancelled`] unless the shutdown named
    /// another error), and stop the job if the hardware can. The scheduler then retires the
    /// job with its hardware fence's result (a job the hardware finished first keeps its real
    /// outcome) and calls `free_job`.
    ///
    /// Called once per job still on the ring, in ring order, inside a signalling section:
    /// same rules as `run_job`. The default does nothing: the scheduler then signals the
    /// job's finished fence with `error` itself and keeps the payload until the hardware
    /// fence signals, so what the hardware may still use is freed only after it passed it.
    fn cancel_running(&self, job: &mut Self::Job, info: &JobInfo, error: FenceError) {
        let _ = (job, info, error);
    }
}
