//! The timeout's arming and the recovery passes the TDR worker (`tdr.rs`) runs over the
//! pending list: stop (`drm_sched_stop`), resubmit (`drm_sched_resubmit_jobs`), fail the
//! dependants of a failed job, start (`drm_sched_start`) and force-completion.
//!
//! Relies on: a pass visiting each pending job once in ring order however jobs leave the list
//! meanwhile (`begin_pass`/`next_in_pass`, by epoch); a stop waiting out a run in progress (the
//! run lock, `run.rs`), after which every pending job has its hardware fence; all of it
//! allocation-free (it runs in the TDR worker's signalling section).

use std::time::Instant;

use gpusched_fence::FenceError;

use super::SchedShared;
use crate::backend::Backend;
use crate::job::JobInner;
use crate::sync::{lock, Arc, Ordering};
use crate::teardown::InPathGuard;

impl<B: Backend> SchedShared<B> {
    /// Re-arms the timeout from `now` if a job is on the hardware (a `NoHang` answer).
    pub(crate) fn rearm(&self, now: Instant) {
        let mut st = lock(&self.state);
        if !st.pending.is_empty() && !st.stopped {
            st.deadline = self.arm_deadline(now);
        }
    }

    /// Restarts a running timeout from `now` (never shortens it): another scheduler of the
    /// reset domain recovered the hardware this one shares, so its head job's time on the
    /// hardware starts again (`drm_sched_start` re-arms every ring the reset stopped).
    pub(crate) fn extend_deadline(&self, now: Instant) {
        let mut st = lock(&self.state);
        let Some(deadline) = self.config.timeout.deadline_from(now) else { return };
        if st.deadline.is_some_and(|d| d < deadline) && !st.stopped {
            st.deadline = Some(deadline);
        }
    }

    /// The deadline of a job that reached the head of the ring at `now`, announced to the
    /// reset domain's worker; `None` (nothing armed) for [`Timeout::Never`](crate::Timeout).
    /// Allocation-free.
    pub(super) fn arm_deadline(&self, now: Instant) -> Option<Instant> {
        let deadline = self.config.timeout.deadline_from(now)?;
        self.domain.deadline_armed(deadline);
        Some(deadline)
    }

    /// Starts a pass over the pending list; see [`SchedShared::next_in_pass`].
    pub(crate) fn begin_pass(&self) -> u64 {
        let mut st = lock(&self.state);
        st.recovery_epoch += 1;
        st.recovery_epoch
    }

    /// The next pending job not yet visited by pass `epoch`, in ring order. Robust to jobs
    /// leaving the list meanwhile; allocation-free.
    pub(crate) fn next_in_pass(&self, epoch: u64) -> Option<Arc<JobInner<B>>> {
        let st = lock(&self.state);
        let job = st.pending.iter().find(|j| j.recovery_epoch.load(Ordering::Acquire) < epoch)?;
        job.recovery_epoch.store(epoch, Ordering::Release);
        Some(job.clone())
    }

    /// `drm_sched_stop`: no new `run_job`, no timeout, completion callbacks detached (kept in
    /// the job for `start_ring`).
    pub(crate) fn stop_ring(&self) {
        {
            let mut st = lock(&self.state);
            st.stopped = true;
            st.deadline = None;
        }
        // Wait out a `run_job` in progress: afterwards every pending job has its hardware
        // fence and its callback attached (or was retired).
        drop(lock(&self.run_lock));
        let epoch = self.begin_pass();
        while let Some(job) = self.next_in_pass(epoch) {
            let mut h = lock(&job.hw);
            if let (Some(f), Some(id)) = (h.fence.clone(), h.callback_id) {
                if let Some(cb) = f.take_callback(id) {
                    h.callback = true;
                    h.callback_id = None;
                    // Not the job's last handle (`job` is another): a count decrement.
                    drop(cb);
                }
                // Otherwise the callback has run or is running: it retires the job.
            }
        }
    }

    /// Whether a pending job is still unfinished on the stopped hardware: detached by
    /// `stop_ring` (the others completed), not already ending with an error in timeline
    /// order, and its hardware fence has not signalled successfully since (then the hardware
    /// finished it, as `drm_sched_stop` finds a signalled parent fence, and `start_ring`
    /// retires it with that result: neither rerun nor fail it; a reset's dead fences signal
    /// an error, so they do not count).
    fn unfinished_on_hw(job: &JobInner<B>) -> bool {
        let detached = lock(&job.hw).callback;
        if !detached || job.deferred_error.is_some() {
            return false;
        }
        !lock(&job.hw).fence.as_ref().is_some_and(|f| f.is_signaled() && f.error().is_none())
    }

    /// Whether a pending job was unfinished on the hardware when `stop_ring` stopped it
    /// (detached) and is not already ending with an error in timeline order, whatever its
    /// hardware fence did since (see [`fail_dependants`](Self::fail_dependants)).
    fn detached_at_stop(job: &JobInner<B>) -> bool {
        lock(&job.hw).callback && !job.deferred_error.is_some()
    }

    /// The error of a same-ring dependency that failed after it was met (when it was
    /// scheduled): the guilty job, a banned entity's job. The dependant must not run on its
    /// missing results: it ends with that error, as it would had it not run yet.
    fn failed_same_ring_dep(&self, job: &JobInner<B>) -> Option<FenceError> {
        let st = lock(&self.state);
        job.same_sched().iter().find_map(|d| d.error(Some(&st.pending)))
    }

    /// `drm_sched_resubmit_jobs`: runs the unfinished pending jobs again, in ring order (after
    /// a hardware reset, their old hardware fences are dead: only one that signalled
    /// successfully says the job finished).
    pub(crate) fn resubmit(self: &Arc<Self>) {
        let epoch = self.begin_pass();
        while let Some(job) = self.next_in_pass(epoch) {
            if !Self::unfinished_on_hw(&job) {
                continue;
            }
            if let Some(e) = job.entity.stopped_error() {
                // A banned or killed entity's jobs are not rerun (`-ECANCELED` in the kernel).
                self.force_complete(&job, e);
                continue;
            }
            if let Some(e) = self.failed_same_ring_dep(&job) {
                self.fail_in_order(&job, e);
                continue;
            }
            match self.run_payload(&job) {
                Ok(hw) => {
                    let mut h = lock(&job.hw);
                    h.fence = Some(hw);
                    h.callback_id = None;
                    drop(h);
                    // The new hardware fence gets the deadline the old one had.
                    crate::deadline::forward_to_hw(&job);
                }
                Err(e) => self.force_complete(&job, e),
            }
        }
    }

    /// Ends, with the failed dependency's error and in timeline order, every job still on the
    /// hardware whose same-ring dependency has failed since it was scheduled (the guilty job,
    /// a banned entity's job), without rerunning anything: for backends that cannot take
    /// work off the hardware and do not resubmit. The hardware may still run such a job;
    /// its resources are freed through `free_job`, which must keep them until the hardware
    /// has passed it. Allocation-free.
    ///
    /// Unlike [`resubmit`](Self::resubmit), a job the hardware finished *after* the stop
    /// fails too (only `stop_ring` decides what was unfinished: a job still detached then):
    /// it ran behind its failed dependency on the same ring, so on that job's late results
    /// (a blamed slow job that finished meanwhile, or a hang the backend released before
    /// this pass: the Vulkan ring releases a freed guilty job's hang as soon as the scheduler
    /// frees it), and it ends with the dependency's error
    /// however fast the hardware was.
    pub(crate) fn fail_dependants(self: &Arc<Self>) {
        let epoch = self.begin_pass();
        while let Some(job) = self.next_in_pass(epoch) {
            if !Self::detached_at_stop(&job) {
                continue;
            }
            if let Some(e) = self.failed_same_ring_dep(&job) {
                self.fail_in_order(&job, e);
            }
        }
    }

    /// `drm_sched_start`: retires jobs that completed while stopped, reattaches completion
    /// callbacks, re-arms the timeout and runs queued work.
    pub(crate) fn start_ring(self: &Arc<Self>) {
        let epoch = self.begin_pass();
        while let Some(job) = self.next_in_pass(epoch) {
            if job.deferred_error.is_some() {
                // Ends when its entity's previous job signals, not on the hardware.
                continue;
            }
            let retire = {
                let mut h = lock(&job.hw);
                match (h.fence.clone(), h.callback) {
                    (Some(f), true) => match f.add_prepared_callback(job.completion()) {
                        Ok(id) => {
                            h.callback = false;
                            h.callback_id = Some(id);
                            None
                        }
                        // Not the job's last handle: a count decrement.
                        Err(_already) => Some(f.error()),
                    },
                    (Some(_), false) => None, // still attached
                    (None, _) => Some(Some(FenceError::Cancelled)),
                }
            };
            if let Some(error) = retire {
                self.hw_done(&job, error);
            }
        }
        {
            let mut st = lock(&self.state);
            st.stopped = false;
            st.deadline =
                if st.pending.is_empty() { None } else { self.arm_deadline(Instant::now()) };
        }
        self.pump();
    }

    /// Retires `job` with `error` if it is still on the ring (a force-completion).
    pub(crate) fn force_complete(self: &Arc<Self>, job: &Arc<JobInner<B>>, error: FenceError) {
        let _in_path = InPathGuard::enter();
        {
            let mut st = lock(&self.state);
            let Some(pos) = st.pending.iter().position(|j| Arc::ptr_eq(j, job)) else { return };
            st.pending.remove(pos);
            self.retiring.fetch_add(1, Ordering::AcqRel);
            st.credits_used -= job.info.credits;
            if st.pending.is_empty() {
                st.deadline = None;
            }
        }
        {
            let mut h = lock(&job.hw);
            if let (Some(f), Some(id)) = (h.fence.clone(), h.callback_id.take()) {
                // Taken back, it is not the job's last handle: a count decrement.
                h.callback = f.take_callback(id).is_some();
            }
        }
        self.load.fetch_sub(job.info.credits as usize, Ordering::Relaxed);
        self.counters.finished_err.fetch_add(1, Ordering::Relaxed);
        diag!(debug, target: "gpusched", sched = self.name(), job = job.info.id, ?error, "force-completed");
        job.entity.count_outcome(Some(error));
        job.signal_finished(Some(error));
        self.retiring.fetch_sub(1, Ordering::AcqRel);
        self.clear_deferred(job);
        job.entity.job_done();
        self.retire_for_free(job);
        self.release_deferred(job);
    }

    /// Force-completes every job on the ring with `error`.
    pub(crate) fn force_complete_all(self: &Arc<Self>, error: FenceError) {
        loop {
            let job = lock(&self.state).pending.front().cloned();
            let Some(job) = job else { break };
            self.force_complete(&job, error);
        }
    }
}
