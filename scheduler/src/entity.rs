//! Entities: a client's queue of jobs (`struct drm_sched_entity`, `sched_entity.c`).
//!
//! An entity has a FIFO of jobs, a priority and a list of schedulers it may run on. While it
//! is idle (no job armed and unfinished) the next arm load-balances it to the least loaded of
//! its schedulers (`drm_sched_entity_select_rq`); while it has work it stays put, so its jobs
//! run in order on one ring. Its scheduled and finished fences live on two timelines of its
//! own, seqno = job number.
//!
//! Both the priority ([`Entity::set_priority`]) and the scheduler list
//! ([`Entity::modify_sched`]) may change while jobs are queued: the queue keeps its order, and
//! the entity never leaves a ring before its last job there has finished.

use std::fmt;
use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::time::Duration;

use gpusched_fence::{Callback, Fence, FenceContext, FenceError, WaitError};

use crate::backend::{Backend, JobInfo};
use crate::config::Priority;
use crate::cross_ring::CrossRingDep;
use crate::error::{ArmError, ArmFailure, SchedError};
use crate::job::{
    state, ArmedJob, ErrorSlot, HwState, JobBuilder, JobInner, RingDeps, SameSchedDep,
};
use crate::sched::{SchedShared, Scheduler};
use crate::sync::{lock, Arc, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Mutex, Ordering};

static NEXT_ENTITY_ID: StdAtomicU64 = StdAtomicU64::new(1);
static NEXT_JOB_ID: StdAtomicU64 = StdAtomicU64::new(1);

/// The schedulers the entity may run on and the one it is on. Protected by
/// `EntityShared::binding`.
pub(crate) struct Binding<B: Backend> {
    /// The schedulers an idle entity is load-balanced over (`sched_list`); never empty.
    pub(crate) schedulers: Box<[Arc<SchedShared<B>>]>,
    /// The scheduler the entity is on (not necessarily still in `schedulers`, after
    /// [`Entity::modify_sched`], until it is idle), and its slot key there.
    pub(crate) current: Option<(Arc<SchedShared<B>>, usize)>,
}

/// Counters of one entity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntityStats {
    /// Jobs armed.
    pub armed: u64,
    /// Jobs whose finished fence signalled successfully.
    pub finished_ok: u64,
    /// Jobs whose finished fence signalled with an error.
    pub finished_err: u64,
}

pub(crate) struct EntityShared<B: Backend> {
    pub(crate) id: u64,
    /// `Priority::index` of the priority its next selection and arm use.
    pub(crate) priority: AtomicU32,
    pub(crate) scheduled_ctx: FenceContext,
    pub(crate) finished_ctx: FenceContext,
    pub(crate) binding: Mutex<Binding<B>>,
    /// Jobs armed and not yet finished (or cancelled).
    pub(crate) outstanding: AtomicUsize,
    /// The highest seqno handed to the hardware.
    pub(crate) scheduled_seqno: AtomicU64,
    /// `Some(error)` once killed or banned.
    pub(crate) stopped: Mutex<Option<FenceError>>,
    /// Fast flag for `stopped.is_some()`, read by the scheduler's selection.
    pub(crate) is_stopped: AtomicBool,
    /// Hangs blamed on this entity.
    pub(crate) karma: AtomicU32,
    /// Its jobs with a deferred error not yet cleared (`JobInner::deferred_error`): counted
    /// before the error is set and uncounted after the job's finished fence signalled.
    pub(crate) deferred_jobs: AtomicUsize,
    /// The highest seqno pushed or dropped so far: pushes must follow arm order.
    pub(crate) pushed_seqno: AtomicU64,
    /// The last finished fence armed, for `wait_idle`.
    pub(crate) last_finished: Mutex<Option<Fence>>,
    /// The scheduled fence of the pushed (or dropped) job with the highest seqno, for
    /// `flush`: it signals once every job pushed so far has left the queue.
    pub(crate) last_pushed_scheduled: Mutex<Option<(u64, Fence)>>,
    /// Set when the user's handle is dropped: the slot is removed once idle.
    pub(crate) detached: std::sync::atomic::AtomicBool,
    pub(crate) armed: AtomicU64,
    pub(crate) finished_ok: AtomicU64,
    pub(crate) finished_err: AtomicU64,
}

impl<B: Backend> EntityShared<B> {
    /// The priority the entity's next selection and arm use.
    pub(crate) fn priority(&self) -> Priority {
        Priority::from_index(self.priority.load(Ordering::Acquire))
    }

    /// A job was pushed (or dropped into its queue): remember its scheduled fence if it is
    /// the latest. Allocation-free (a fence clone).
    pub(crate) fn note_pushed(&self, seqno: u64, scheduled: &Fence) {
        let mut last = lock(&self.last_pushed_scheduled);
        if last.as_ref().is_none_or(|(s, _)| *s < seqno) {
            let old = last.replace((seqno, scheduled.clone()));
            drop(last);
            drop(old);
        }
    }

    pub(crate) fn stopped_error(&self) -> Option<FenceError> {
        // `is_stopped` is set after `stopped`: while it is clear, nothing is stored.
        if !self.is_stopped.load(Ordering::Acquire) {
            return None;
        }
        *lock(&self.stopped)
    }

    /// Kills or bans the entity: its queued jobs end with `error` as the scheduler reaches
    /// them (one at a time, without allocating), later arms fail and later pushes end with
    /// `error`. Allocation-free: the TDR worker bans through it.
    pub(crate) fn stop(&self, error: FenceError) {
        lock(&self.stopped).get_or_insert(error);
        self.is_stopped.store(true, Ordering::Release);
        let current = lock(&self.binding).current.as_ref().map(|(s, key)| (s.clone(), *key));
        if let Some((s, key)) = current {
            // Its head job may be blocked: it now ends with the error instead.
            s.wake_slot(key);
            s.pump();
        }
    }

    /// Counts a job's outcome. Called *before* its finished fence signals, so that a waiter
    /// woken by the fence reads up-to-date stats.
    pub(crate) fn count_outcome(&self, error: Option<FenceError>) {
        match error {
            None => self.finished_ok.fetch_add(1, Ordering::Relaxed),
            Some(_) => self.finished_err.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// One of the entity's jobs ended and its finished fence has signalled. (Only then may the
    /// entity count as idle and move to another scheduler: its timeline must stay in order.)
    pub(crate) fn job_done(&self) {
        let left = self.outstanding.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == 0 && self.detached.load(std::sync::atomic::Ordering::Acquire) {
            // The user's handle is gone and the last job ended: leave the scheduler, so the
            // slot (which holds this entity) does not keep both alive forever.
            let mut b = lock(&self.binding);
            if self.outstanding.load(Ordering::Acquire) == 0 {
                if let Some((s, key)) = b.current.take() {
                    s.remove_slot(key);
                }
            }
        }
    }
}

/// A client's job queue (`struct drm_sched_entity`). Jobs of one entity run in push order.
///
/// Dropping the entity lets its pushed jobs run to completion; use
/// [`destroy`](Entity::destroy) to flush with a timeout and kill what remains, as
/// `drm_sched_entity_destroy` does.
///
/// The entity's fence contexts take the interrupt domain of the reset domain of its first
/// scheduler at creation; [`modify_sched`](Entity::modify_sched) does not change it.
pub struct Entity<B: Backend> {
    pub(crate) shared: Arc<EntityShared<B>>,
}

impl<B: Backend> fmt::Debug for Entity<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entity")
            .field("id", &self.shared.id)
            .field("priority", &self.shared.priority)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Entity<B> {
    /// An entity that may run on any of `schedulers`, at `priority`.
    ///
    /// # Errors
    /// [`SchedError::NoSchedulers`] for an empty list.
    pub fn new(schedulers: &[&Scheduler<B>], priority: Priority) -> Result<Self, SchedError> {
        if schedulers.is_empty() {
            return Err(SchedError::NoSchedulers);
        }
        let id = NEXT_ENTITY_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let domain = schedulers[0].shared.domain.interrupt_domain().clone();
        let ctx = |what: &str| {
            FenceContext::builder(format!("entity{id}.{what}")).interrupt_domain(&domain)
        };
        Ok(Entity {
            shared: Arc::new_cyclic(|me| EntityShared {
                id,
                priority: AtomicU32::new(priority.index() as u32),
                scheduled_ctx: ctx("scheduled").build(),
                // A deadline on a finished fence reaches the job's hardware fence.
                finished_ctx: ctx("finished")
                    .on_deadline(crate::deadline::finished_deadline_hook(me.clone()))
                    .build(),
                binding: Mutex::new(Binding {
                    schedulers: schedulers.iter().map(|s| s.shared.clone()).collect(),
                    current: None,
                }),
                outstanding: AtomicUsize::new(0),
                scheduled_seqno: AtomicU64::new(0),
                stopped: Mutex::new(None),
                is_stopped: AtomicBool::new(false),
                karma: AtomicU32::new(0),
                deferred_jobs: AtomicUsize::new(0),
                pushed_seqno: AtomicU64::new(0),
                last_finished: Mutex::new(None),
                last_pushed_scheduled: Mutex::new(None),
                detached: std::sync::atomic::AtomicBool::new(false),
                armed: AtomicU64::new(0),
                finished_ok: AtomicU64::new(0),
                finished_err: AtomicU64::new(0),
            }),
        })
    }

    /// A process-unique id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The entity's priority.
    pub fn priority(&self) -> Priority {
        self.shared.priority()
    }

    /// Changes the entity's priority (`drm_sched_entity_set_priority`). It takes effect at
    /// the scheduler's next selection: the entity's queued jobs compete at the new priority,
    /// in their order (a queue never reorders). Jobs armed from now on carry it in their
    /// [`JobInfo`]; jobs armed before keep the priority they were armed with there.
    ///
    /// The kernel stores the priority and moves the entity to the new run queue only at its
    /// next arm while idle (`drm_sched_entity_select_rq`), because moving a busy entity
    /// between run queues races with its submission work there; here the run queues are
    /// under the scheduler's one lock, so a busy entity moves at once and the change is not
    /// lost behind a queue that never empties.
    pub fn set_priority(&self, priority: Priority) {
        let sched = {
            let b = lock(&self.shared.binding);
            self.shared.priority.store(priority.index() as u32, Ordering::Release);
            b.current.as_ref().map(|(s, key)| {
                s.set_slot_priority(*key, priority);
                s.clone()
            })
        };
        // A ready job may now be the scheduler's best choice.
        if let Some(s) = sched {
            s.pump();
        }
    }

    /// Replaces the schedulers the entity may be load-balanced over
    /// (`drm_sched_entity_modify_sched`). The entity stays on its current scheduler while it
    /// has work there (jobs armed and not finished, including jobs armed after this call):
    /// the first job armed while it is idle picks the least loaded scheduler of the new list.
    /// So its jobs are never reordered and never run concurrently on two rings, and its
    /// timeline signals in order.
    ///
    /// # Errors
    /// [`SchedError::NoSchedulers`] for an empty list (the entity keeps its schedulers).
    pub fn modify_sched(&self, schedulers: &[&Scheduler<B>]) -> Result<(), SchedError> {
        if schedulers.is_empty() {
            return Err(SchedError::NoSchedulers);
        }
        let list: Box<[Arc<SchedShared<B>>]> =
            schedulers.iter().map(|s| s.shared.clone()).collect();
        let old = std::mem::replace(&mut lock(&self.shared.binding).schedulers, list);
        drop(old);
        Ok(())
    }

    /// The context id of the entity's finished fences.
    pub fn finished_context(&self) -> u64 {
        self.shared.finished_ctx.id()
    }

    /// Starts building a job with `payload`.
    pub fn job(&self, payload: B::Job) -> JobBuilder<'_, B> {
        JobBuilder { entity: self, payload, credits: 1, deps: Vec::new() }
    }

    /// The name of the scheduler the entity is bound to now, if any.
    pub fn current_scheduler(&self) -> Option<String> {
        let b = lock(&self.shared.binding);
        b.current.as_ref().map(|(s, _)| s.name().to_owned())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EntityStats {
        EntityStats {
            armed: self.shared.armed.load(Ordering::Relaxed),
            finished_ok: self.shared.finished_ok.load(Ordering::Relaxed),
            finished_err: self.shared.finished_err.load(Ordering::Relaxed),
        }
    }

    /// Whether the entity was killed or banned, and with which error its jobs end.
    pub fn stopped(&self) -> Option<FenceError> {
        self.shared.stopped_error()
    }

    /// Waits until the entity's queue is empty (`drm_sched_entity_flush`): every job pushed
    /// (or dropped) so far has been handed to the hardware or has ended without running
    /// (killed, cancelled, failed dependency). Jobs on the hardware may still be running;
    /// [`wait_idle`](Entity::wait_idle) waits for them too. An armed job not yet pushed is
    /// not in the queue and is not waited for.
    ///
    /// # Errors
    /// [`WaitError::Timeout`] if the queue is not empty by `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), WaitError> {
        let last = lock(&self.shared.last_pushed_scheduled).as_ref().map(|(_, f)| f.clone());
        Self::wait_ended(last, timeout)
    }

    /// Waits until every job armed so far has finished (successfully or not).
    ///
    /// # Errors
    /// [`WaitError::Timeout`] if they have not by `timeout`.
    pub fn wait_idle(&self, timeout: Duration) -> Result<(), WaitError> {
        let last = lock(&self.shared.last_finished).clone();
        Self::wait_ended(last, timeout)
    }

    /// Waits for `fence` to signal, successfully or not.
    fn wait_ended(fence: Option<Fence>, timeout: Duration) -> Result<(), WaitError> {
        match fence {
            None => Ok(()),
            Some(f) => match f.wait_timeout(timeout) {
                Ok(()) | Err(WaitError::Failed(_)) => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    /// Kills the entity (`drm_sched_entity_kill`): its queued jobs and every later push end
    /// with [`FenceError::Killed`]; jobs already on the hardware finish normally.
    pub fn kill(&self) {
        self.stop_with(FenceError::Killed);
    }

    pub(crate) fn stop_with(&self, error: FenceError) {
        self.shared.stop(error);
    }

    /// Flushes for up to `timeout` ([`flush`](Entity::flush): until every pushed job has been
    /// handed to the hardware, not until it finished), then kills what remains in the queue
    /// (`drm_sched_entity_destroy`): queued jobs end [`FenceError::Killed`], jobs on the
    /// hardware finish normally. Returns whether the queue emptied within the timeout.
    pub fn destroy(self, timeout: Duration) -> bool {
        let flushed = self.flush(timeout).is_ok();
        self.kill();
        flushed
    }
}

impl<B: Backend> Drop for Entity<B> {
    fn drop(&mut self) {
        self.shared.detached.store(true, std::sync::atomic::Ordering::Release);
        let mut b = lock(&self.shared.binding);
        if self.shared.outstanding.load(Ordering::Acquire) == 0 {
            if let Some((s, key)) = b.current.take() {
                s.remove_slot(key);
            }
        }
        // Otherwise the slot stays until the scheduler drops; its queue drains normally.
    }
}

/// Arms a job; see [`JobBuilder::arm`].
pub(crate) fn arm<B: Backend>(
    b: JobBuilder<'_, B>,
) -> Result<ArmedJob<B>, ArmError<B::Job, B::Error>> {
    let JobBuilder { entity, mut payload, credits, deps } = b;
    let ent = &entity.shared;
    let fail =
        |error: SchedError, payload| Err(ArmError { error: ArmFailure::Sched(error), payload });
    if let Some(e) = ent.stopped_error() {
        return fail(SchedError::EntityStopped(e), payload);
    }
    if credits == 0 {
        return fail(SchedError::ZeroCredits, payload);
    }
    let mut binding = lock(&ent.binding);
    // Load-balance while idle (`drm_sched_entity_select_rq`: only once the entity's last job
    // has finished, so its jobs never run out of order on two rings), over the current list
    // (`modify_sched` may have replaced it).
    if ent.outstanding.load(Ordering::Acquire) == 0 {
        let best = binding
            .schedulers
            .iter()
            .filter(|s| s.gone_error().is_none())
            .min_by_key(|s| s.load.load(Ordering::Relaxed))
            .cloned();
        let stay = match (&binding.current, &best) {
            (Some((c, _)), Some(b)) => Arc::ptr_eq(c, b),
            (None, None) => true,
            _ => false,
        };
        if !stay {
            if let Some((s, key)) = binding.current.take() {
                s.remove_slot(key);
            }
            if let Some(best) = best {
                let key = best.add_slot(ent.clone());
                binding.current = Some((best, key));
            }
        }
    }
    let (sched, key) = match &binding.current {
        Some((s, key)) => (s.clone(), *key),
        None => {
            // Every scheduler of the list is gone.
            let s = &binding.schedulers[0];
            let e = s.gone_error().unwrap_or(FenceError::Cancelled);
            return fail(s.gone_sched_error(e), payload);
        }
    };
    if let Some(e) = sched.gone_error() {
        return fail(sched.gone_sched_error(e), payload);
    }
    let limit = sched.config.credit_limit;
    if credits > limit {
        let error =
            SchedError::TooManyCredits { credits, limit, scheduler: sched.name().to_owned() };
        return fail(error, payload);
    }
    let seqno = ent.finished_ctx.next_seqno();
    let info = JobInfo {
        id: NEXT_JOB_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        seqno,
        credits,
        priority: ent.priority(),
        entity: ent.id,
    };
    if let Err(e) = sched.backend.prepare_job(&mut payload, &info) {
        return Err(ArmError { error: ArmFailure::Backend(e), payload });
    }
    let (scheduled, s_sig) = ent.scheduled_ctx.with_seqno(seqno, None);
    let (finished, f_sig) = ent.finished_ctx.with_seqno(seqno, None);
    ent.outstanding.fetch_add(1, Ordering::AcqRel);
    ent.armed.fetch_add(1, Ordering::Relaxed);
    sched.reserve_armed(key);
    let prev_finished = lock(&ent.last_finished).replace(finished.clone());
    drop(binding);

    // Dependencies: skip the signalled-ok ones and our own entity's (FIFO covers them), keep
    // the later fence per context, and split out jobs of the same scheduler.
    let mut external: Vec<Fence> = Vec::with_capacity(deps.len());
    let mut same: Vec<SameSchedDep<B>> = Vec::new();
    let mut cross: Vec<CrossRingDep<B>> = Vec::new();
    for d in dedup_dependencies(&deps) {
        if d.context() == ent.finished_ctx.id() {
            continue;
        }
        if let Some((owner, seqno)) = same_sched_owner(&sched, &d) {
            same.push(SameSchedDep { entity: owner, seqno, finished: d });
        } else if let Some(other) = crate::cross_ring::find(&sched, &d) {
            // Another ring of the device: wait here for it to be scheduled, on the device
            // for it to finish.
            external.push(other.scheduled.clone());
            cross.push(CrossRingDep { job: Arc::downgrade(&other), finished: d });
        } else {
            external.push(d);
        }
    }
    if !cross.is_empty() {
        sched.backend.reserve_native_waits(&mut payload, cross.len());
    }
    let job = Arc::new(JobInner {
        info,
        entity: ent.clone(),
        sched,
        slot: key,
        scheduled,
        finished,
        payload: Mutex::new(Some(payload)),
        deps_pending: AtomicUsize::new(external.len()),
        dep_error: ErrorSlot::new(),
        ring_deps: RingDeps::new(same, cross),
        prev_finished,
        hw: Mutex::new(HwState {
            callback: true,
            fence: None,
            callback_id: None,
            submitting: false,
            scheduled: Some(s_sig),
            finished: Some(f_sig),
        }),
        submit_order: AtomicU64::new(0),
        state: AtomicU32::new(state::ARMED),
        recovery_epoch: AtomicU64::new(0),
        deferred_error: ErrorSlot::new(),
        free_on_hw_done: AtomicBool::new(false),
    });
    for d in external {
        // The job is its own dependency callback (`JobInner`'s `SharedCallback`).
        if let Err(already) = d.add_prepared_callback(Callback::shared(job.clone())) {
            job.dep_signalled(&d);
            drop(already);
        }
    }
    Ok(ArmedJob { job: Some(job) })
}

/// If `fence` is the finished fence of an entity bound to `sched`, that entity and the seqno.
fn same_sched_owner<B: Backend>(
    sched: &Arc<SchedShared<B>>,
    fence: &Fence,
) -> Option<(Arc<EntityShared<B>>, u64)> {
    let st = lock(&sched.state);
    let key = *st.by_context.get(&fence.context())?;
    st.slots.get(key).map(|s| (s.entity.clone(), fence.seqno()))
}

/// Flattens composites, keeps the later fence per context (`drm_sched_job_add_dependency`),
/// then drops those that signalled successfully. Deduplicating first keeps the outcome
/// independent of timing: an earlier failed fence of a context is superseded by a later one
/// whether or not that one has signalled yet.
fn dedup_dependencies(deps: &[Fence]) -> Vec<Fence> {
    if deps.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Fence> = Vec::with_capacity(deps.len());
    for d in deps.iter().flat_map(gpusched_fence::unwrap) {
        match out.iter_mut().find(|k| k.context() == d.context()) {
            Some(k) => {
                if d.is_later(k) {
                    *k = d;
                }
            }
            None => out.push(d),
        }
    }
    out.retain(|d| d.status() != gpusched_fence::FenceStatus::Signaled);
    out
}
