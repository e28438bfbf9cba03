//! The pump and the drain: the thread that makes a job runnable selects and runs it
//! (`drm_sched_run_job_work`), one thread at a time per scheduler.
//!
//! # Submission without a worker
//! The kernel hands every ready job to a work item. Here the thread that makes a job
//! runnable submits it: the pushing thread, the thread that signalled the job's last
//! dependency, or the thread that signalled a hardware fence and so freed credits. A
//! lock-free *pump* (a request counter: the first requester drains, later ones bump the count
//! and leave) keeps one thread at a time selecting and running jobs per scheduler, with no
//! recursion when `run_job` completes synchronously. Each avoided thread hop saves ~20 µs on
//! our reference machines, which is why the submission path does not use `async-task`
//! workers: there is no queue to hand work to. Timeouts (the TDR worker) run on a timer
//! thread per reset domain.
//!
//! Relies on: the run lock held from a job's selection until its flush (a TDR stop waits it
//! out, `recovery.rs`); `run_job` and the completion callback attached inside a signalling
//! section, allocation-free (the module contract in `mod.rs`).

use std::time::Instant;

use gpusched_fence::{lockdep, Fence, FenceError};

use super::SchedShared;
use crate::backend::Backend;
use crate::job::JobInner;
use crate::sync::{lock, Arc, Ordering};
use crate::teardown::InPathGuard;

#[cfg(not(gpusched_loom))]
std::thread_local! {
    /// The id of the scheduler whose drain step (a run, a free, a cancel) this thread is
    /// executing, 0 for none: a retirement there need not request a pump, because the drain
    /// selects again after the step.
    static DRAINING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}
// Loom runs a model's threads on one OS thread: its own thread-locals tell them apart.
#[cfg(gpusched_loom)]
loom::thread_local! {
    static DRAINING: std::cell::Cell<u64> = std::cell::Cell::new(0);
}

/// Marks the current thread as executing a drain step of scheduler `id` while alive.
pub(super) struct DrainStep(u64);

impl DrainStep {
    pub(super) fn enter(id: u64) -> Self {
        DrainStep(DRAINING.with(|d| d.replace(id)))
    }

    pub(super) fn active(id: u64) -> bool {
        DRAINING.with(|d| d.get() == id)
    }
}

impl Drop for DrainStep {
    fn drop(&mut self) {
        DRAINING.with(|d| d.set(self.0));
    }
}

/// What the pump does next.
pub(super) enum Step<B: Backend> {
    /// Run the job; with the deadline it armed (the ring was idle), which the run announces
    /// to the reset domain's worker unless the job completed within `run_job`.
    Run(Arc<JobInner<B>>, Option<Instant>),
    Cancel(Arc<JobInner<B>>, FenceError),
    Free(Arc<JobInner<B>>),
    Idle,
}

impl<B: Backend> SchedShared<B> {
    /// Requests a pump; drains now unless another thread already is.
    pub(crate) fn pump(self: &Arc<Self>) {
        if self.pump_requests.fetch_add(1, Ordering::AcqRel) != 0 {
            return;
        }
        self.drain_until_settled();
    }

    /// Drains until no request came in meanwhile; the caller's request made it the drainer.
    pub(crate) fn drain_until_settled(self: &Arc<Self>) {
        loop {
            let seen = self.pump_requests.load(Ordering::Acquire);
            self.drain();
            if self
                .pump_requests
                .compare_exchange(seen, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
    }

    fn drain(self: &Arc<Self>) {
        let _in_path = InPathGuard::enter();
        // The run lock is held for each step, and from a job's `run_job` on until the flush
        // that hands it to the hardware, so a TDR stop (which takes it) never sees a job that
        // a batching backend has taken but not yet submitted. Between steps of a drain that
        // ran nothing it is released, so a long run of frees or cancels cannot starve the TDR.
        let mut batch_open = None;
        loop {
            let (running, ran) = match batch_open.take() {
                Some(guard) => (guard, true),
                None => (lock(&self.run_lock), false),
            };
            let step = {
                let mut st = lock(&self.state);
                match st.to_free.pop_front() {
                    Some(j) => {
                        st.jobs = st.jobs.saturating_sub(1);
                        Step::Free(j)
                    }
                    None => self.select(&mut st),
                }
            };
            match step {
                Step::Idle => {
                    // Hand a batched backend its batch (still holding the run lock).
                    let _section = lockdep::signalling_section();
                    self.backend.flush();
                    drop(running);
                    return;
                }
                Step::Free(job) => {
                    let _step = DrainStep::enter(self.id);
                    self.free(&job);
                }
                Step::Cancel(job, e) => {
                    let _step = DrainStep::enter(self.id);
                    self.cancel(&job, e);
                }
                Step::Run(job, deadline) => {
                    let _step = DrainStep::enter(self.id);
                    self.run(job, deadline);
                    batch_open = Some(running);
                    continue;
                }
            }
            // A job ran earlier in this drain: keep the lock until its flush.
            if ran {
                batch_open = Some(running);
            }
        }
    }

    /// Hands the job's payload to the backend (`run_job`); the payload lock is released
    /// before the caller attaches the completion callback, which may run at once.
    pub(super) fn run_payload(&self, job: &JobInner<B>) -> Result<Fence, FenceError> {
        let mut payload = lock(&job.payload);
        let Some(p) = payload.as_mut() else { return Err(FenceError::Cancelled) };
        for (i, d) in job.cross_ring().iter().flat_map(|c| c.deps.iter()).enumerate() {
            let hw = d.hw_wait()?;
            self.backend.wait_natively(p, i, hw.as_ref())?;
        }
        self.backend.run_job(p, &job.info)
    }

    /// Runs a selected job (`drm_sched_run_job_work`), inside a signalling section.
    /// `deadline`: the timeout selection armed for it, announced to the reset domain's worker
    /// once the job is on the hardware (or failed there). Announcing after `run_job` loses
    /// nothing: a timeout's handling stops the ring first, which waits for the run lock this
    /// run holds. A job whose hardware fence has signalled by then is retired at once (the
    /// ring idles again, its deadline cleared) and needs no announcement.
    fn run(self: &Arc<Self>, job: Arc<JobInner<B>>, deadline: Option<Instant>) {
        let _section = lockdep::signalling_section();
        // Before anything of this run can call out (the scheduled fence's callbacks may tear
        // the scheduler down): the run path, not a teardown, attaches the completion callback,
        // and a teardown leaves the payload to whoever sees the hardware done.
        lock(&job.hw).submitting = true;
        self.counters.run.fetch_add(1, Ordering::Relaxed);
        diag!(trace, target: "gpusched", sched = self.name(), job = job.info.id, "run");
        match self.run_payload(&job) {
            Ok(hw) => {
                // Only now is it on the ring, ahead of anything that depends on it being
                // scheduled (a failed submission must not satisfy such a dependency).
                job.entity.scheduled_seqno.fetch_max(job.info.seqno, Ordering::AcqRel);
                // The hardware fence is published before the scheduled fence signals: a
                // cross-ring dependant released by that signal waits for it on the device.
                // One lock round trip: the completion callback is taken here too (nothing
                // else takes it while `submitting` is set).
                let scheduled = {
                    let mut h = lock(&job.hw);
                    h.fence = Some(hw.clone());
                    if !std::mem::replace(&mut h.callback, false) {
                        unreachable!("a job's completion callback is attached once per run")
                    }
                    h.scheduled.take()
                };
                if let Some(s) = scheduled {
                    s.signal();
                }
                match hw.add_prepared_callback(job.completion()) {
                    Ok(id) => {
                        let mut h = lock(&job.hw);
                        h.fence = Some(hw);
                        h.callback_id = Some(id);
                        h.submitting = false;
                        drop(h);
                        if let Some(d) = deadline {
                            self.domain.deadline_armed(d);
                        }
                        // A teardown nested in the run retired the job and left its payload
                        // to the hardware's completion, which may have come before the flag
                        // above cleared: free it here then (the swap frees it once).
                        if job.free_on_hw_done.load(Ordering::Acquire)
                            && crate::teardown::hw_passed(&job)
                            && job.free_on_hw_done.swap(false, Ordering::AcqRel)
                        {
                            self.retire_for_free(&job);
                        }
                        // After publishing: a deadline set meanwhile is forwarded by one side.
                        crate::deadline::forward_to_hw(&job);
                    }
                    Err(already) => {
                        // The hardware was done before we could watch it.
                        drop(already);
                        let error = hw.error();
                        let mut h = lock(&job.hw);
                        h.fence = Some(hw);
                        h.submitting = false;
                        drop(h);
                        self.hw_done(&job, error);
                    }
                }
            }
            Err(e) => {
                if let Some(d) = deadline {
                    self.domain.deadline_armed(d);
                }
                lock(&job.hw).submitting = false;
                // Never reached the hardware: a cross-ring dependant must not wait for it.
                job.signal_scheduled(Some(e));
                self.fail_in_order(&job, e);
            }
        }
    }
}
