//! Retiring jobs: a hardware fence's completion (`drm_sched_job_done`), failures deferred
//! until the entity's previous job signalled (timeline order), cancellation of jobs that never
//! reached the hardware, and the free list `free_job` is called from.
//!
//! Relies on: a job retired once (it leaves the pending list under the state lock; later
//! callers see it gone); an entity's jobs signalling in seqno order (a failure waits for the
//! previous job, `release_deferred` ends it); the free list having room for every job not yet
//! freed (reserved at arm), so completion never allocates.

use std::time::Instant;

use gpusched_fence::{lockdep, FenceError};

use super::run::DrainStep;
use super::SchedShared;
use crate::backend::Backend;
use crate::job::JobInner;
use crate::sync::{lock, Arc, Ordering};
use crate::teardown::InPathGuard;

impl<B: Backend> SchedShared<B> {
    /// Ends a job on the pending list that will not (again) reach the hardware with `error`,
    /// in its entity's timeline order: now if the entity's previous job has signalled, else
    /// when it does (`release_deferred`). Allocation-free.
    pub(super) fn fail_in_order(self: &Arc<Self>, job: &Arc<JobInner<B>>, error: FenceError) {
        if job.prev_signalled() {
            self.hw_done(job, Some(error));
            return;
        }
        // Counted before the error is visible, so that a same-ring dependant never sees the
        // job as merely scheduled while it is failing (`JobInner::readiness`).
        job.entity.deferred_jobs.fetch_add(1, Ordering::AcqRel);
        self.deferred.fetch_add(1, Ordering::AcqRel);
        job.deferred_error.set(error);
        self.note_progress();
        // The previous job may have signalled (and looked for us) just before the error was
        // stored: recheck.
        if job.prev_signalled() {
            self.retire_deferred(job, error);
        }
    }

    /// Retires a deferred job; the caller that really retired it (`hw_done` retires once)
    /// clears its deferred state, after its finished fence signalled: until then its
    /// dependants must keep seeing it as failing.
    fn retire_deferred(self: &Arc<Self>, job: &Arc<JobInner<B>>, error: FenceError) {
        if self.hw_done(job, Some(error)) {
            self.clear_deferred(job);
        }
    }

    /// Clears a job's deferred error once its finished fence has signalled; the one that
    /// clears it uncounts it.
    pub(super) fn clear_deferred(&self, job: &JobInner<B>) {
        if job.deferred_error.take().is_some() {
            self.deferred.fetch_sub(1, Ordering::AcqRel);
            job.entity.deferred_jobs.fetch_sub(1, Ordering::AcqRel);
            self.note_progress();
        }
    }

    /// `job` has signalled its finished fence: retires the deferred job that waited for it
    /// (its entity's next job), if any, which in turn releases its own successor.
    pub(crate) fn release_deferred(self: &Arc<Self>, job: &JobInner<B>) {
        if self.deferred.load(Ordering::Acquire) == 0 {
            return;
        }
        let next = {
            let st = lock(&self.state);
            st.pending
                .iter()
                .find(|j| j.prev_finished.as_ref().is_some_and(|p| p.ptr_eq(&job.finished)))
                .cloned()
        };
        let Some(next) = next else { return };
        let error = next.deferred_error.get();
        if let Some(error) = error {
            self.retire_deferred(&next, error);
        }
    }

    /// The hardware fence of `job` signalled (or `run_job` failed): retire it
    /// (`drm_sched_job_done`). Inside a signalling section; allocation-free. Returns whether
    /// this call retired it (`false`: it was already retired).
    pub(crate) fn hw_done(
        self: &Arc<Self>,
        job: &Arc<JobInner<B>>,
        error: Option<FenceError>,
    ) -> bool {
        let _in_path = InPathGuard::enter();
        // A job that ran ends with the error of a dependency that failed after it was handed
        // to the hardware, as it would have ended without running had the failure come
        // first: a cross-ring dependency the device waited for that failed after all (the
        // job's hardware finished after the dependency's did, so its failure is visible here),
        // or a same-ring dependency that ended so itself (`dep_error`, set below by that
        // dependency's completion: it ran before this job, in ring order). A dependency's own
        // hardware error does not pass on: a same-ring dependant waits for its scheduling
        // only, as with `drm_sched`.
        let inherited = if error.is_none() { job.inherited_error() } else { None };
        {
            let mut st = lock(&self.state);
            let Some(pos) = st.pending.iter().position(|j| Arc::ptr_eq(j, job)) else {
                // Already retired (force-completed by a reset, or by a teardown: then its
                // payload is freed now that the hardware is done with it). The flag is set
                // under the state lock as the job leaves the list, so it is seen here.
                let flagged = job.free_on_hw_done.load(Ordering::Acquire);
                drop(st);
                if flagged
                    && crate::teardown::hw_passed(job)
                    && job.free_on_hw_done.swap(false, Ordering::AcqRel)
                {
                    self.retire_for_free(job);
                    self.pump();
                }
                return false;
            };
            st.pending.remove(pos);
            if let Some(e) = inherited {
                // Its dependants on this ring already handed to the hardware inherit it in
                // turn; one selected later sees this job's finished fence failed. Under the
                // state lock, which selection holds from readiness to the pending list.
                for j in st.pending.iter() {
                    if j.same_sched().iter().any(|d| d.finished.ptr_eq(&job.finished)) {
                        j.dep_error.set_if_none(e);
                    }
                }
            }
            self.retiring.fetch_add(1, Ordering::AcqRel);
            st.credits_used -= job.info.credits;
            if pos == 0 {
                // Re-arm the timeout for the next job, or disarm.
                st.deadline = if st.pending.is_empty() || st.stopped {
                    None
                } else {
                    self.arm_deadline(Instant::now())
                };
            }
        }
        self.load.fetch_sub(job.info.credits as usize, Ordering::Relaxed);
        let error = error.or(inherited);
        match error {
            None => self.counters.finished_ok.fetch_add(1, Ordering::Relaxed),
            Some(_) => self.counters.finished_err.fetch_add(1, Ordering::Relaxed),
        };
        diag!(trace, target: "gpusched", sched = self.name(), job = job.info.id, ?error, "finished");
        job.entity.count_outcome(error);
        job.signal_finished(error);
        self.retiring.fetch_sub(1, Ordering::AcqRel);
        job.entity.job_done();
        self.retire_for_free(job);
        self.release_deferred(job);
        // Inside this scheduler's drain step the drain selects again afterwards.
        if !DrainStep::active(self.id) {
            self.pump();
        }
        true
    }

    /// Queues a finished job for `free_job`, which the pump calls. Allocation-free: the free
    /// list has room for every job not yet freed (reserved at arm); were it ever full, the job
    /// would be freed here.
    pub(crate) fn retire_for_free(&self, job: &Arc<JobInner<B>>) {
        let queued = {
            let mut st = lock(&self.state);
            // The job's finished fence has signalled: ring waits may end.
            st.ready.progress += 1;
            if st.to_free.len() < st.to_free.capacity() {
                st.to_free.push_back(job.clone());
                true
            } else {
                st.jobs = st.jobs.saturating_sub(1);
                false
            }
        };
        if !queued {
            self.free(job);
        }
    }

    /// Ends a job that never reached the hardware: both fences signal `error`.
    pub(crate) fn cancel(self: &Arc<Self>, job: &Arc<JobInner<B>>, error: FenceError) {
        {
            let mut st = lock(&self.state);
            st.jobs = st.jobs.saturating_sub(1);
        }
        self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        job.entity.count_outcome(Some(error));
        {
            let _section = lockdep::signalling_section();
            diag!(trace, target: "gpusched", sched = self.name(), job = job.info.id, ?error, "cancelled");
            job.signal_scheduled(Some(error));
            job.signal_finished(Some(error));
        }
        self.note_progress();
        job.entity.job_done();
        if let Some(mut p) = job.take_payload() {
            self.backend.cancel_job(&mut p, &job.info, error);
            self.backend.free_job(p, &job.info);
        }
    }

    pub(super) fn free(&self, job: &Arc<JobInner<B>>) {
        if let Some(p) = job.take_payload() {
            self.backend.free_job(p, &job.info);
        }
    }
}
