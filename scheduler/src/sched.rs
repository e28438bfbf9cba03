//! The scheduler of one hardware ring (`struct drm_gpu_scheduler`, `sched_main.c`).
//!
//! This file is long because it holds the scheduler's state and every path that changes it
//! under its lock (selection, completion, deferred failures, the recovery passes): their
//! invariants are read together. Teardown is in `teardown.rs`, the TDR worker in `tdr.rs`.
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
//! # Contract
//! Everything between publishing a job's finished fence and signalling it runs inside a
//! signalling section: selection, `run_job`, the hardware-fence callback, completion. None of
//! it allocates: storage follows the jobs that exist, never the credit limit (which may be
//! `u32::MAX`). Arming a job reserves, outside any section, a slot in its entity's queue, room
//! for it on the pending list (at most one entry per credit, so never more than the limit)
//! and on the free list (one entry per job not yet freed: the free list never fills). The
//! completion callback is the job record itself (attaching it clones the record's `Arc`).
//! None of it takes a `Resv` lock or waits.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::sync::Weak;
use std::time::Instant;

use gpusched_fence::{lockdep, Fence, FenceError};
use slab::Slab;

use crate::backend::Backend;
use crate::config::{Policy, Priority, SchedulerConfig};
use crate::entity::EntityShared;
use crate::error::SchedError;
use crate::job::{state, Blocker, JobInner, Readiness};
use crate::ready::{Link, ReadyLists};
use crate::sync::{lock, Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::tdr::{ResetDomain, TimeoutTarget};
use crate::teardown::InPathGuard;

static NEXT_SCHED_ID: StdAtomicU64 = StdAtomicU64::new(1);

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
struct DrainStep(u64);

impl DrainStep {
    fn enter(id: u64) -> Self {
        DrainStep(DRAINING.with(|d| d.replace(id)))
    }

    fn active(id: u64) -> bool {
        DRAINING.with(|d| d.get() == id)
    }
}

impl Drop for DrainStep {
    fn drop(&mut self) {
        DRAINING.with(|d| d.set(self.0));
    }
}

/// An entity's queue on one scheduler. Protected by `SchedShared::state`.
pub(crate) struct EntitySlot<B: Backend> {
    pub(crate) entity: Arc<EntityShared<B>>,
    /// Pushed jobs, oldest first. Capacity always covers `queue.len() + armed`.
    pub(crate) queue: VecDeque<Arc<JobInner<B>>>,
    /// Jobs armed on this slot and not yet pushed or dropped.
    pub(crate) armed: usize,
    /// Virtual runtime under [`Policy::Fair`].
    pub(crate) vruntime: u64,
    /// The run queue the slot is on: its entity's priority, updated under the state lock by
    /// `set_slot_priority`.
    pub(crate) priority: Priority,
    /// Where the slot is among the ready lists (`ready.rs`).
    pub(crate) link: Link,
}

/// The scheduler's mutable state. Protected by `SchedShared::state`.
pub(crate) struct SchedState<B: Backend> {
    pub(crate) slots: Slab<EntitySlot<B>>,
    /// Slot keys by their entity's finished-fence context (same-ring dependencies at arm).
    pub(crate) by_context: HashMap<u64, usize>,
    /// The run queues: which slots may have a job to select (`ready.rs`).
    pub(crate) ready: ReadyLists,
    /// Jobs on the hardware, in ring order. Capacity: at least `min(jobs, credit_limit)`.
    pub(crate) pending: VecDeque<Arc<JobInner<B>>>,
    /// Finished jobs waiting for `free_job`. Capacity: at least `jobs`, so it never fills
    /// (if it did, a job would be freed where it finished: `retire_for_free`).
    pub(crate) to_free: VecDeque<Arc<JobInner<B>>>,
    /// Jobs armed on this scheduler and not yet freed or cancelled: the bound of both lists
    /// above, reserved at arm time (`reserve_armed`).
    pub(crate) jobs: usize,
    /// Credits of the jobs in `pending`.
    pub(crate) credits_used: u32,
    /// Global push counter, for FIFO selection.
    pub(crate) submit_seq: u64,
    /// No new `run_job`, completion callbacks detached, no timeout (a TDR stop).
    pub(crate) stopped: bool,
    /// Shut down or device gone: no new `run_job`; jobs on the hardware still finish.
    pub(crate) shut: bool,
    /// When the head job on the hardware times out; `None` while the ring is idle.
    pub(crate) deadline: Option<Instant>,
    /// Bumped by each pass of a recovery step over the pending list.
    pub(crate) recovery_epoch: u64,
}

/// Counters of one scheduler.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) run: AtomicU64,
    pub(crate) finished_ok: AtomicU64,
    pub(crate) finished_err: AtomicU64,
    pub(crate) cancelled: AtomicU64,
}

/// A snapshot of a scheduler's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Jobs handed to the hardware (`run_job` calls).
    pub jobs_run: u64,
    /// Jobs whose finished fence signalled successfully.
    pub finished_ok: u64,
    /// Jobs whose finished fence signalled with an error after reaching the hardware.
    pub finished_err: u64,
    /// Jobs that ended without reaching the hardware (cancelled, killed, failed dependency).
    pub cancelled: u64,
    /// Credits on the hardware now.
    pub credits_in_flight: u32,
    /// Jobs queued on entities now.
    pub queued: usize,
    /// Entities registered on this scheduler now (an entity leaves when it moves to another
    /// scheduler, or when its handle was dropped and its last job ended).
    pub entities: usize,
}

pub(crate) struct SchedShared<B: Backend> {
    /// This scheduler, weakly (for the reset domain's worker).
    pub(crate) me: Weak<SchedShared<B>>,
    pub(crate) domain: ResetDomain,
    pub(crate) id: u64,
    pub(crate) config: SchedulerConfig,
    pub(crate) backend: B,
    pub(crate) state: Mutex<SchedState<B>>,
    /// Pump requests; non-zero while a thread drains (see the module docs).
    pub(crate) pump_requests: AtomicUsize,
    /// Held by the pumper from selecting a job until `run_job` returned and the completion
    /// callback is attached; a TDR stop takes it to wait out a run in progress (the kernel's
    /// `cancel_work_sync` of the submit work). Only the pumper and the TDR contend for it.
    pub(crate) run_lock: Mutex<()>,
    /// `Some(error)` once shut down or gone: later arms fail, pushes cancel with it.
    pub(crate) gone: Mutex<Option<FenceError>>,
    /// Set (after `gone`) once `gone` is `Some`: the hot paths read it instead of the lock.
    is_gone: AtomicBool,
    /// Queued jobs plus credits in flight, for load balancing (approximate).
    pub(crate) load: AtomicUsize,
    pub(crate) counters: Counters,
    /// Pending jobs with a deferred error (`JobInner::deferred_error`): while zero, retiring
    /// a job skips the search for a deferred successor.
    deferred: AtomicUsize,
    /// Jobs taken off the pending list whose finished fence has not signalled yet: counted
    /// under the state lock as they leave the list, uncounted after the signal, so that a
    /// teardown can wait for retirements in progress on other threads.
    pub(crate) retiring: AtomicUsize,
}

/// The top of one run queue, once blocked entities are parked.
enum Top<B: Backend> {
    Empty,
    Ready(usize),
    Cancel(Arc<JobInner<B>>, FenceError),
}

/// What the pump does next.
enum Step<B: Backend> {
    /// Run the job; with the deadline it armed (the ring was idle), which the run announces
    /// to the reset domain's worker unless the job completed within `run_job`.
    Run(Arc<JobInner<B>>, Option<Instant>),
    Cancel(Arc<JobInner<B>>, FenceError),
    Free(Arc<JobInner<B>>),
    Idle,
}

/// A dependency callback defers the pump to the end of its signal's callback run.
#[cfg(not(gpusched_loom))]
impl<B: Backend> gpusched_fence::AfterCallbacks for SchedShared<B> {
    fn after_callbacks(self: Arc<Self>) {
        self.pump();
    }
}

impl<B: Backend> SchedShared<B> {
    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    pub(crate) fn gone_error(&self) -> Option<FenceError> {
        if !self.is_gone.load(Ordering::Acquire) {
            return None;
        }
        *lock(&self.gone)
    }

    pub(crate) fn gone_sched_error(&self, error: FenceError) -> SchedError {
        SchedError::SchedulerGone { scheduler: self.config.name.clone(), error }
    }

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

    /// Picks the next job to run or cancel (`drm_sched_select_entity`). Allocation-free.
    fn select(&self, st: &mut SchedState<B>) -> Step<B> {
        if st.stopped {
            return Step::Idle;
        }
        // Same-ring dependencies may have failed without signalling yet (a deferred error):
        // readiness then looks them up on the pending list.
        let deferred_in = (self.deferred.load(Ordering::Acquire) > 0).then_some(&st.pending);
        if st.shut {
            // Shut down or device gone: nothing runs any more; queued jobs end with the
            // scheduler's error, each after its entity's previous job (timeline order).
            let error = self.gone_error().unwrap_or(FenceError::Cancelled);
            for (_, slot) in st.slots.iter_mut() {
                let ready = slot.queue.front().is_some_and(|head| head.prev_signalled());
                if ready {
                    if let Some(job) = slot.queue.pop_front() {
                        self.load.fetch_sub(1, Ordering::Relaxed);
                        let e = match job.readiness(deferred_in) {
                            Readiness::Failed(FenceError::Cancelled) => FenceError::Cancelled,
                            _ => error,
                        };
                        return Step::Cancel(job, e);
                    }
                }
            }
            return Step::Idle;
        }
        let deferred = deferred_in.is_some();
        #[cfg(debug_assertions)]
        st.check_lists();
        st.wake_ring();
        let policy = self.config.policy;
        let mut chosen: Option<(usize, usize)> = None;
        for prio in Priority::ALL {
            let p = prio.index();
            let key = match self.top(st, p, deferred) {
                Top::Empty => continue,
                Top::Cancel(job, e) => return Step::Cancel(job, e),
                Top::Ready(key) => key,
            };
            if policy == Policy::Fair && prio != Priority::Kernel {
                // Fair: Kernel is strict; the others compete on virtual runtime.
                let better =
                    chosen.is_none_or(|(_, c)| st.slots[key].vruntime < st.slots[c].vruntime);
                if better {
                    chosen = Some((p, key));
                }
                continue;
            }
            chosen = Some((p, key));
            break;
        }
        let Some((p, key)) = chosen else { return Step::Idle };
        let Some(credits) = st.slots[key].queue.front().map(|j| j.info.credits) else {
            return Step::Idle;
        };
        if u64::from(st.credits_used) + u64::from(credits) > u64::from(self.config.credit_limit) {
            // Head-of-line: wait for completions rather than let a smaller job overtake.
            return self.cancel_behind(st, p, deferred);
        }
        st.pop_top(p);
        let slot = &mut st.slots[key];
        let Some(job) = slot.queue.pop_front() else {
            slot.link = Link::Idle;
            return Step::Idle;
        };
        let vruntime = slot.vruntime;
        slot.vruntime += u64::from(credits) * slot.priority.fair_weight();
        st.ready.fair_floor = st.ready.fair_floor.max(vruntime);
        // Round-robin: a job ran, so the entity goes to the back of its run queue.
        st.relink_after_pop(key, false);
        // Its entity's dependants on this ring may be ready once it is scheduled (by the next
        // selection, which follows this job's `run` on the pumping thread).
        st.ready.progress += 1;
        st.credits_used += credits;
        // Load counts a queued job as 1 and a job on the ring as its credits (`hw_done`
        // subtracts them): without this a multi-credit job wrapped the counter.
        if credits > 1 {
            self.load.fetch_add(credits as usize - 1, Ordering::Relaxed);
        }
        // The ring was idle: the job's timeout starts now. The worker is told by the run (a
        // job that completes within `run_job` then costs no announcement).
        let deadline = if st.pending.is_empty() {
            st.deadline = self.config.timeout.deadline_from(Instant::now());
            st.deadline
        } else {
            None
        };
        st.pending.push_back(job.clone());
        job.state.store(state::RUNNING, Ordering::Release);
        Step::Run(job, deadline)
    }

    /// The ring is full: FIFO and Fair still end, without waiting for credits, a failed head
    /// job (killed entity, failed dependency) anywhere in the run queues they would have
    /// chosen from (up to priority index `p`; Fair: all but a strict `Kernel` choice), as
    /// their scan of every entity did. O(ready entities), only while the ring is full and
    /// only for those policies (round-robin takes failed heads in rotation order, at the top).
    fn cancel_behind(&self, st: &mut SchedState<B>, p: usize, deferred: bool) -> Step<B> {
        let last = match self.config.policy {
            Policy::RoundRobin => return Step::Idle,
            Policy::Fifo => p,
            Policy::Fair if p == Priority::Kernel.index() => p,
            Policy::Fair => Priority::ALL.len() - 1,
        };
        for q in 0..=last {
            let pending = deferred.then_some(&st.pending);
            let failed = st.ready.queues[q].keys().find_map(|key| {
                let head = st.slots.get(key)?.queue.front()?;
                match head.readiness(pending) {
                    Readiness::Failed(e) if head.prev_signalled() => Some((key, e)),
                    _ => None,
                }
            });
            if let Some((key, e)) = failed {
                let job = st.slots[key].queue.pop_front();
                st.relink_ready(key);
                if let Some(job) = job {
                    self.load.fetch_sub(1, Ordering::Relaxed);
                    return Step::Cancel(job, e);
                }
            }
        }
        Step::Idle
    }

    /// The entity at the top of run queue `p` whose head job may run, parking the blocked
    /// ones it meets on their blocked lists; or a head job to cancel (failed dependency,
    /// killed entity, dropped unpushed), taken off its queue.
    fn top(&self, st: &mut SchedState<B>, p: usize, deferred: bool) -> Top<B> {
        loop {
            let Some(key) = st.ready.queues[p].top() else { return Top::Empty };
            let readiness = match st.slots.get(key).and_then(|s| s.queue.front()) {
                Some(head) => {
                    let pending = deferred.then_some(&st.pending);
                    match head.readiness(pending) {
                        // Ends without running, but not before the entity's previous job
                        // (on the ring now): its completion wakes the entity.
                        Readiness::Failed(_) if !head.prev_signalled() => {
                            Readiness::Blocked(Blocker::Ring)
                        }
                        r => r,
                    }
                }
                None => {
                    // Not expected (an empty queue idles its slot); heal it.
                    st.pop_top(p);
                    if let Some(s) = st.slots.get_mut(key) {
                        s.link = Link::Idle;
                    }
                    continue;
                }
            };
            match readiness {
                Readiness::Ready => return Top::Ready(key),
                Readiness::Blocked(on) => {
                    st.pop_top(p);
                    st.block(key, on);
                }
                Readiness::Failed(e) => {
                    st.pop_top(p);
                    let job = st.slots[key].queue.pop_front();
                    // A cancelled job does not use up the entity's round-robin turn.
                    st.relink_after_pop(key, true);
                    if let Some(job) = job {
                        self.load.fetch_sub(1, Ordering::Relaxed);
                        return Top::Cancel(job, e);
                    }
                }
            }
        }
    }

    /// Hands the job's payload to the backend (`run_job`); the payload lock is released
    /// before the caller attaches the completion callback, which may run at once.
    fn run_payload(&self, job: &JobInner<B>) -> Result<Fence, FenceError> {
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

    /// Ends a job on the pending list that will not (again) reach the hardware with `error`,
    /// in its entity's timeline order: now if the entity's previous job has signalled, else
    /// when it does (`release_deferred`). Allocation-free.
    fn fail_in_order(self: &Arc<Self>, job: &Arc<JobInner<B>>, error: FenceError) {
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
    fn clear_deferred(&self, job: &JobInner<B>) {
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

    fn free(&self, job: &Arc<JobInner<B>>) {
        if let Some(p) = job.take_payload() {
            self.backend.free_job(p, &job.info);
        }
    }

    /// Queues a pushed job on its slot (capacity reserved at arm) and pumps.
    pub(crate) fn push(self: &Arc<Self>, job: Arc<JobInner<B>>) {
        let slot = job.slot;
        let before = job.entity.pushed_seqno.fetch_max(job.info.seqno, Ordering::AcqRel);
        if before > job.info.seqno {
            pushed_out_of_order(job.info.seqno, before);
        }
        // Before it is queued (a flush waits for the fence either way): the job's handle
        // then moves into the queue.
        job.entity.note_pushed(job.info.seqno, &job.scheduled);
        let id = job.info.id;
        let stopped = {
            let mut st = lock(&self.state);
            // Read under the state lock: `shutdown` sets it before taking the lock to drain
            // the queues, so a job is either drained or sees the error. A killed entity's
            // job is queued and cancelled by selection, in timeline order.
            let stopped = self.gone_error();
            let fair = self.config.policy == Policy::Fair;
            let min_v = fair.then_some(st.ready.fair_floor);
            let seq = st.submit_seq;
            st.submit_seq += 1;
            let s = &mut st.slots[slot];
            s.armed -= 1;
            if s.queue.is_empty() && stopped.is_none() {
                if let Some(v) = min_v {
                    // A waking entity does not get credit for the time it slept.
                    s.vruntime = s.vruntime.max(v);
                }
            }
            // Queued even when the scheduler is gone: selection then cancels it after the
            // entity's earlier jobs, in timeline order.
            job.submit_order.store(seq, Ordering::Relaxed);
            job.state.store(state::QUEUED, Ordering::Release);
            s.queue.push_back(job);
            st.on_queued(slot);
            self.load.fetch_add(1, Ordering::Relaxed);
            stopped
        };
        diag!(trace, target: "gpusched", sched = self.name(), job = id, ?stopped, "queued");
        self.pump();
    }

    /// An armed job was dropped unpushed: it is queued marked `DROPPED` (into the room
    /// reserved at arm) so that selection cancels it after the entity's earlier jobs, in
    /// timeline order.
    pub(crate) fn drop_armed(self: &Arc<Self>, job: Arc<JobInner<B>>) {
        let slot = job.slot;
        job.entity.pushed_seqno.fetch_max(job.info.seqno, Ordering::AcqRel);
        let queued = {
            let mut st = lock(&self.state);
            match st.slots.get_mut(slot) {
                Some(s) => {
                    s.armed -= 1;
                    job.state.store(state::DROPPED, Ordering::Release);
                    s.queue.push_back(job.clone());
                    st.on_queued(slot);
                    self.load.fetch_add(1, Ordering::Relaxed);
                    true
                }
                None => false,
            }
        };
        job.entity.note_pushed(job.info.seqno, &job.scheduled);
        if !queued {
            self.cancel(&job, FenceError::Cancelled);
        }
        // A queued job of this scheduler may depend on it (same-scheduler dependencies are
        // checked at selection, not by callback): let selection see the failure.
        self.pump();
    }

    /// Shuts the scheduler down: later arms fail; queued (and later pushed) jobs are cancelled
    /// with `error`, one at a time and each after its entity's previous job, by selection
    /// (allocation-free: the TDR worker calls it when the device is gone); jobs on the hardware
    /// finish when their hardware fences signal.
    pub(crate) fn shutdown(self: &Arc<Self>, error: FenceError) {
        lock(&self.gone).get_or_insert(error);
        self.is_gone.store(true, Ordering::Release);
        lock(&self.state).shut = true;
        // Selection now cancels the queued jobs, in each entity's timeline order.
        self.pump();
    }

    pub(crate) fn self_arc(&self) -> Option<Arc<Self>> {
        self.me.upgrade()
    }

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
    fn arm_deadline(&self, now: Instant) -> Option<Instant> {
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

    pub(crate) fn stats(&self) -> SchedulerStats {
        let st = lock(&self.state);
        SchedulerStats {
            jobs_run: self.counters.run.load(Ordering::Relaxed),
            finished_ok: self.counters.finished_ok.load(Ordering::Relaxed),
            finished_err: self.counters.finished_err.load(Ordering::Relaxed),
            cancelled: self.counters.cancelled.load(Ordering::Relaxed),
            credits_in_flight: st.credits_used,
            queued: st.slots.iter().map(|(_, s)| s.queue.len()).sum(),
            entities: st.slots.len(),
        }
    }

    /// Registers an entity's slot (allocates; at arm time).
    pub(crate) fn add_slot(&self, entity: Arc<EntityShared<B>>) -> usize {
        let mut st = lock(&self.state);
        let priority = entity.priority();
        let vruntime = st.ready.fair_floor;
        let context = entity.finished_ctx.id();
        let key = st.slots.insert(EntitySlot {
            entity,
            queue: VecDeque::new(),
            armed: 0,
            vruntime,
            priority,
            link: Link::Idle,
        });
        st.by_context.insert(context, key);
        st.reserve_lists(priority.index());
        key
    }

    /// Moves a slot to the run queue of `priority` (`Entity::set_priority`); its queue keeps
    /// its order. May allocate (room in the new run queue).
    pub(crate) fn set_slot_priority(&self, key: usize, priority: Priority) {
        let mut st = lock(&self.state);
        let Some(slot) = st.slots.get(key) else { return };
        let (old, link) = (slot.priority, slot.link);
        if old == priority {
            return;
        }
        if link == Link::Ready {
            st.unlink(key);
        }
        st.slots[key].priority = priority;
        st.reserve_lists(priority.index());
        if link == Link::Ready {
            st.link_ready(key, false);
        }
    }

    /// Removes an idle entity's slot.
    pub(crate) fn remove_slot(&self, key: usize) {
        let mut st = lock(&self.state);
        st.unlink(key);
        let removed = st.slots.try_remove(key);
        if let Some(slot) = &removed {
            let context = slot.entity.finished_ctx.id();
            if st.by_context.get(&context) == Some(&key) {
                st.by_context.remove(&context);
            }
        }
        drop(st);
        // The slot (and perhaps the last reference to its entity) drops outside the lock.
        drop(removed);
    }

    /// The last external dependency of `job` signalled: if its entity waits for it, it is
    /// ready again. Allocation-free (a dependency callback).
    pub(crate) fn wake_external(&self, job: &JobInner<B>) {
        let mut st = lock(&self.state);
        let waiting = st.slots.get(job.slot).is_some_and(|s| {
            matches!(s.link, Link::External(_))
                && s.queue.front().is_some_and(|h| std::ptr::eq(Arc::as_ptr(h), job))
        });
        if waiting {
            st.wake(job.slot);
        }
    }

    /// Makes slot `key` ready if it is blocked (its entity was stopped: its head ends now).
    pub(crate) fn wake_slot(&self, key: usize) {
        lock(&self.state).wake(key);
    }

    /// Records an event that may end a ring wait (see `ready.rs`), after it happened.
    pub(crate) fn note_progress(&self) {
        lock(&self.state).ready.progress += 1;
    }

    /// Reserves room for one more armed job (allocates; at arm time, outside any section): a
    /// slot in its entity's queue, an entry on the pending list (which holds at most one job
    /// per credit) and one on the free list.
    pub(crate) fn reserve_armed(&self, key: usize) {
        let mut st = lock(&self.state);
        let s = &mut st.slots[key];
        s.armed += 1;
        let need = s.armed;
        s.queue.reserve(need);
        st.jobs += 1;
        let limit = usize::try_from(self.config.credit_limit).unwrap_or(usize::MAX);
        let pending = st.jobs.min(limit);
        let extra = pending.saturating_sub(st.pending.len());
        st.pending.reserve(extra);
        let extra = st.jobs.saturating_sub(st.to_free.len());
        st.to_free.reserve(extra);
    }
}

/// The scheduler of one hardware ring (`struct drm_gpu_scheduler`). Cheap to clone; when
/// the last clone drops, the scheduler is torn down as by [`Scheduler::shutdown`] with
/// [`FenceError::Cancelled`]: queued jobs are cancelled, jobs on the ring are cancelled
/// through the backend, and later arms fail.
pub struct Scheduler<B: Backend> {
    pub(crate) shared: Arc<SchedShared<B>>,
    _handle: Arc<ShutdownOnDrop<B>>,
}

impl<B: Backend> Clone for Scheduler<B> {
    fn clone(&self) -> Self {
        Scheduler { shared: self.shared.clone(), _handle: self._handle.clone() }
    }
}

struct ShutdownOnDrop<B: Backend>(Arc<SchedShared<B>>);

impl<B: Backend> Drop for ShutdownOnDrop<B> {
    fn drop(&mut self) {
        self.0.fini(FenceError::Cancelled);
    }
}

impl<B: Backend> fmt::Debug for Scheduler<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("name", &self.shared.config.name)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Scheduler<B> {
    /// A scheduler for one ring of `backend`.
    ///
    /// Every value of a [`SchedulerConfig`] either works or is refused here; none aborts the
    /// process. Nothing is sized by the configuration: any credit limit costs the same.
    ///
    /// # Errors
    /// [`SchedError::InvalidConfig`] for a zero credit limit, a zero timeout or one above
    /// [`Timeout::MAX_DURATION`](crate::Timeout::MAX_DURATION).
    pub fn new(backend: B, config: SchedulerConfig) -> Result<Self, SchedError> {
        if config.credit_limit == 0 {
            return Err(SchedError::InvalidConfig("credit_limit must be at least 1"));
        }
        config.timeout.validate().map_err(SchedError::InvalidConfig)?;
        let domain =
            config.reset_domain.clone().unwrap_or_else(|| ResetDomain::new(config.name.clone()));
        let shared = Arc::new_cyclic(|me| SchedShared {
            me: me.clone(),
            domain: domain.clone(),
            id: NEXT_SCHED_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            state: Mutex::new(SchedState {
                slots: Slab::new(),
                by_context: HashMap::new(),
                ready: ReadyLists::new(config.policy),
                pending: VecDeque::new(),
                to_free: VecDeque::new(),
                jobs: 0,
                credits_used: 0,
                submit_seq: 0,
                stopped: false,
                shut: false,
                deadline: None,
                recovery_epoch: 0,
            }),
            config,
            backend,
            pump_requests: AtomicUsize::new(0),
            run_lock: Mutex::new(()),
            gone: Mutex::new(None),
            is_gone: AtomicBool::new(false),
            load: AtomicUsize::new(0),
            counters: Counters::default(),
            deferred: AtomicUsize::new(0),
            retiring: AtomicUsize::new(0),
        });
        crate::cross_ring::register(&shared);
        let target: Arc<dyn TimeoutTarget> = shared.clone();
        domain.register(Arc::downgrade(&target));
        Ok(Scheduler { _handle: Arc::new(ShutdownOnDrop(shared.clone())), shared })
    }

    /// The scheduler's name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// A process-unique id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.shared.config
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.shared.backend
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SchedulerStats {
        self.shared.stats()
    }

    /// Tears the scheduler down now with `error` (as the last drop does with `Cancelled`;
    /// `drm_sched_fini`): later arms fail with [`SchedError::SchedulerGone`], queued jobs
    /// and later pushes end with `error`, and the jobs on the ring are cancelled through
    /// [`Backend::cancel_running`] (a job the hardware finished first keeps its result). On
    /// return every job pushed so far has signalled its finished fence; a backend without
    /// `cancel_running` gets its jobs' payloads back through `free_job` only once their
    /// hardware fences signal. Idempotent; the first error wins.
    pub fn shutdown(&self, error: FenceError) {
        self.shared.fini(error);
    }

    /// The scheduler's reset domain.
    pub fn reset_domain(&self) -> &ResetDomain {
        &self.shared.domain
    }

    /// The hardware fences of the jobs on the ring now, oldest first (diagnostics).
    pub fn pending_hw_fences(&self) -> Vec<Fence> {
        let st = lock(&self.shared.state);
        st.pending.iter().filter_map(|j| lock(&j.hw).fence.clone()).collect()
    }
}

#[cold]
#[track_caller]
fn pushed_out_of_order(seqno: u64, later: u64) -> ! {
    panic!(
        "gpusched: job {seqno} of an entity was pushed after its job {later}: an entity's jobs \
         must be pushed (or dropped) in the order they were armed (arm and push under one lock \
         when threads share an entity)"
    )
}
