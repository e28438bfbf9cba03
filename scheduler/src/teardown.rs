//! Scheduler teardown (`drm_sched_fini`): cancelling the jobs on the ring through the
//! backend's `cancel_running`, then the queued ones, so that every finished fence has
//! signalled when teardown returns; the payload of a job the backend could not cancel is
//! kept until its hardware fence signals.

use gpusched_fence::{lockdep, FenceError};

use crate::backend::Backend;
use crate::job::JobInner;
use crate::sched::SchedShared;
use crate::sync::{lock, Arc, Ordering};

#[cfg(not(gpusched_loom))]
std::thread_local! {
    /// How deep this thread is in a scheduler's own signalling path (a drain, a retirement):
    /// a teardown there (a fence callback dropping the last handle) must not wait for the
    /// run lock, the pump or the retirements, which this thread may be holding up.
    static IN_PATH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}
// Loom runs a model's threads on one OS thread: its own thread-locals tell them apart.
#[cfg(gpusched_loom)]
loom::thread_local! {
    static IN_PATH: std::cell::Cell<u32> = std::cell::Cell::new(0);
}

/// Marks the current thread as inside a scheduler's signalling path (a drain or a
/// retirement) while alive. Allocation-free.
pub(crate) struct InPathGuard;

impl InPathGuard {
    pub(crate) fn enter() -> Self {
        IN_PATH.with(|d| d.set(d.get() + 1));
        InPathGuard
    }

    pub(crate) fn active() -> bool {
        IN_PATH.with(|d| d.get() > 0)
    }
}

impl Drop for InPathGuard {
    fn drop(&mut self) {
        IN_PATH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Whether the hardware is done with `job`: no `run_job` of it is in progress, and its
/// hardware fence signalled or it never got one (its `run_job` failed, or it was never rerun
/// after a reset).
pub(crate) fn hw_passed<B: Backend>(job: &JobInner<B>) -> bool {
    let fence = {
        let h = lock(&job.hw);
        if h.submitting {
            return false;
        }
        h.fence.clone()
    };
    fence.is_none_or(|f| f.is_signaled())
}

impl<B: Backend> SchedShared<B> {
    /// Tears the scheduler down (`drm_sched_fini`): as [`shutdown`](Self::shutdown), then the
    /// jobs on the ring are cancelled through [`Backend::cancel_running`], in ring order, and
    /// retired with their hardware fences' results; a job whose hardware fence is still
    /// pending after that (a backend without the op) has its finished fence signalled with
    /// `error` and its payload freed when the hardware fence signals. Returns once every
    /// job on the ring and every queued job has signalled its finished fence (jobs armed and
    /// not yet pushed end when pushed or dropped), unless called from inside a pump of this
    /// thread (a fence callback of the scheduler's own signalling path): then the pump in
    /// progress finishes the work. Allocation-free.
    pub(crate) fn fini(self: &Arc<Self>, error: FenceError) {
        self.shutdown(error);
        let error = self.gone_error().unwrap_or(error);
        let nested = InPathGuard::active();
        if !nested {
            // Wait out a step in progress (a `run_job` and the attaching of its completion
            // callback; the kernel stops its submission work first): selection runs nothing
            // more once shut, so afterwards every job on the ring has its hardware fence.
            drop(lock(&self.run_lock));
        }
        let _in_path = InPathGuard::enter();
        // Requested as a pump: the completion callbacks that the cancellations run on this
        // thread (holding a job's payload lock) then leave the freeing to us, afterwards.
        let drainer = self.pump_requests.fetch_add(1, Ordering::AcqRel) == 0;
        let epoch = self.begin_pass();
        while let Some(job) = self.next_in_pass(epoch) {
            if job.deferred_error.is_some() {
                // Never on the hardware: it ends when its entity's previous job (earlier on
                // the ring) signals.
                continue;
            }
            self.cancel_on_ring(&job, error);
        }
        // Cancel what is queued (each entity's previous job has signalled now) and free. If
        // another thread was draining, it may have settled before the pass queued its frees:
        // request again (it drains once more, or we do).
        if drainer {
            self.drain_until_settled();
        } else {
            self.pump();
        }
        if !nested {
            // Wait for work other threads are doing, none of which blocks: a drain (our
            // request makes it drain once more: queued jobs), a retirement of a job we found
            // already leaving the ring (it signals next), a deferred job on the ring (retired
            // by its predecessor's signal).
            while self.pump_requests.load(Ordering::Acquire) != 0
                || !lock(&self.state).pending.is_empty()
                || self.retiring.load(Ordering::Acquire) != 0
            {
                crate::sync::spin_yield();
            }
        }
    }

    /// Teardown of one job on the ring; see [`fini`](Self::fini).
    fn cancel_on_ring(self: &Arc<Self>, job: &Arc<JobInner<B>>, error: FenceError) {
        let _section = lockdep::signalling_section();
        let hw = lock(&job.hw).fence.clone();
        if hw.as_ref().is_some_and(|f| !f.is_signaled()) {
            if let Some(p) = lock(&job.payload).as_mut() {
                self.backend.cancel_running(p, &job.info, error);
            }
        }
        if let Some(f) = hw.as_ref().filter(|f| f.is_signaled()) {
            // Retired with the hardware's result (its completion callback may be doing the
            // same: the first retires it; a callback detached by a TDR stop never runs).
            self.hw_done(job, f.error());
            return;
        }
        // The hardware fence is still pending: the finished fence signals now, the payload
        // waits for the hardware.
        {
            let mut st = lock(&self.state);
            let Some(pos) = st.pending.iter().position(|j| Arc::ptr_eq(j, job)) else { return };
            st.pending.remove(pos);
            // Under the lock: a completion callback that finds the job gone sees it.
            job.free_on_hw_done.store(true, Ordering::Release);
            self.retiring.fetch_add(1, Ordering::AcqRel);
            st.credits_used -= job.info.credits;
            if st.pending.is_empty() {
                st.deadline = None;
            }
        }
        self.load.fetch_sub(job.info.credits as usize, Ordering::Relaxed);
        self.counters.finished_err.fetch_add(1, Ordering::Relaxed);
        diag!(debug, target: "gpusched", sched = self.name(), job = job.info.id, ?error, "cancelled on the ring");
        job.entity.count_outcome(Some(error));
        job.signal_finished(Some(error));
        self.note_progress();
        self.retiring.fetch_sub(1, Ordering::AcqRel);
        job.entity.job_done();
        self.release_deferred(job);
        // Watch the hardware fence for the free: reattach a completion callback a TDR stop
        // detached (it then finds the job retired and frees it).
        let reattach = {
            let mut h = lock(&job.hw);
            match (h.fence.clone(), h.callback_id.is_none(), h.submitting) {
                // A run in progress (up this thread's stack) attaches it itself.
                (Some(f), true, false) if std::mem::replace(&mut h.callback, false) => Some(f),
                _ => None,
            }
        };
        let freeable = match reattach {
            Some(f) => match f.add_prepared_callback(job.completion()) {
                Ok(id) => {
                    lock(&job.hw).callback_id = Some(id);
                    false
                }
                Err(already) => {
                    lock(&job.hw).callback = true;
                    drop(already);
                    true
                }
            },
            // A job whose `run_job` is in progress up this thread's stack attaches its
            // callback when it returns: `hw_done` frees it then.
            None => hw_passed(job),
        };
        if freeable && job.free_on_hw_done.swap(false, Ordering::AcqRel) {
            self.retire_for_free(job);
        }
    }
}
