//! Entities: a client's queue of jobs (`struct drm_sched_entity`, `sched_entity.c`).
//!
//! An entity has a FIFO of jobs, a priority and a list of schedulers it may run on. While it
//! is idle (no job armed and unfinished) the next arm load-balances it to the least loaded of
//! its schedulers (`drm_sched_entity_select_rq`); while it has work it stays put, so its jobs
//! run in order on one ring. Its scheduled and finished fences live on two timelines of its
//! own, seqno = job number.

use std::fmt;
use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::time::Duration;

use gpusched_fence::{Callback, Fence, FenceContext, FenceError, WaitError};

use crate::backend::{Backend, JobInfo};
use crate::config::Priority;
use crate::error::{ArmError, ArmFailure, SchedError};
use crate::job::{state, ArmedJob, HwState, JobBuilder, JobInner, JobSignallers, SameSchedDep};
use crate::sched::{SchedShared, Scheduler};
use crate::sync::{lock, Arc, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Mutex, Ordering};

static NEXT_ENTITY_ID: StdAtomicU64 = StdAtomicU64::new(1);
static NEXT_JOB_ID: StdAtomicU64 = StdAtomicU64::new(1);

/// Which scheduler the entity is on. Protected by `EntityShared::binding`.
pub(crate) struct Binding {
    /// Index into `EntityShared::schedulers`, and the slot key there.
    pub(crate) current: Option<(usize, usize)>,
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
    pub(crate) priority: Priority,
    pub(crate) schedulers: Box<[Arc<SchedShared<B>>]>,
    pub(crate) scheduled_ctx: FenceContext,
    pub(crate) finished_ctx: FenceContext,
    pub(crate) binding: Mutex<Binding>,
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
    /// The last finished fence armed, for flush.
    pub(crate) last_finished: Mutex<Option<Fence>>,
    /// Set when the user's handle is dropped: the slot is removed once idle.
    pub(crate) detached: std::sync::atomic::AtomicBool,
    pub(crate) armed: AtomicU64,
    pub(crate) finished_ok: AtomicU64,
    pub(crate) finished_err: AtomicU64,
}

impl<B: Backend> EntityShared<B> {
    pub(crate) fn stopped_error(&self) -> Option<FenceError> {
        *lock(&self.stopped)
    }

    /// Kills or bans the entity: its queued jobs end with `error` as the scheduler reaches
    /// them (one at a time, without allocating), later arms fail and later pushes end with
    /// `error`. Allocation-free: the TDR worker bans through it.
    pub(crate) fn stop(&self, error: FenceError) {
        lock(&self.stopped).get_or_insert(error);
        self.is_stopped.store(true, Ordering::Release);
        let current = lock(&self.binding).current;
        if let Some((i, _)) = current {
            let s = self.schedulers[i].clone();
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
                if let Some((i, key)) = b.current.take() {
                    self.schedulers[i].remove_slot(key);
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
            FenceContext::builder(format!("entity{id}.{what}")).interrupt_domain(&domain).build()
        };
        Ok(Entity {
            shared: Arc::new(EntityShared {
                id,
                priority,
                schedulers: schedulers.iter().map(|s| s.shared.clone()).collect(),
                scheduled_ctx: ctx("scheduled"),
                finished_ctx: ctx("finished"),
                binding: Mutex::new(Binding { current: None }),
                outstanding: AtomicUsize::new(0),
                scheduled_seqno: AtomicU64::new(0),
                stopped: Mutex::new(None),
                is_stopped: AtomicBool::new(false),
                karma: AtomicU32::new(0),
                deferred_jobs: AtomicUsize::new(0),
                pushed_seqno: AtomicU64::new(0),
                last_finished: Mutex::new(None),
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
        self.shared.priority
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
        b.current.map(|(i, _)| self.shared.schedulers[i].name().to_owned())
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

    /// Waits until every job armed so far has finished (`drm_sched_entity_flush`).
    ///
    /// # Errors
    /// [`WaitError::Timeout`] if they have not by `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), WaitError> {
        let last = lock(&self.shared.last_finished).clone();
        match last {
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

    /// Flushes for up to `timeout`, then kills what remains (`drm_sched_entity_destroy`).
    /// Returns whether everything finished within the timeout.
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
            if let Some((i, key)) = b.current.take() {
                self.shared.schedulers[i].remove_slot(key);
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
    // Load-balance while idle.
    if ent.outstanding.load(Ordering::Acquire) == 0 {
        let best = ent
            .schedulers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.gone_error().is_none())
            .min_by_key(|(_, s)| s.load.load(Ordering::Relaxed))
            .map(|(i, _)| i);
        if let Some(best) = best {
            if binding.current.map(|(i, _)| i) != Some(best) {
                if let Some((i, key)) = binding.current.take() {
                    ent.schedulers[i].remove_slot(key);
                }
                let key = ent.schedulers[best].add_slot(ent.clone());
                binding.current = Some((best, key));
            }
        }
    }
    let (si, key) = match binding.current {
        Some(c) => c,
        None => {
            let s = &ent.schedulers[0];
            let e = s.gone_error().unwrap_or(FenceError::Cancelled);
            return fail(s.gone_sched_error(e), payload);
        }
    };
    let sched = ent.schedulers[si].clone();
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
        priority: ent.priority,
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
    for d in dedup_dependencies(&deps) {
        if d.context() == ent.finished_ctx.id() {
            continue;
        }
        match same_sched_owner(&sched, &d) {
            Some((owner, seqno)) => same.push(SameSchedDep { entity: owner, seqno, finished: d }),
            None => external.push(d),
        }
    }
    let job = Arc::new(JobInner {
        info,
        entity: ent.clone(),
        scheduled,
        finished,
        signallers: Mutex::new(JobSignallers { scheduled: Some(s_sig), finished: Some(f_sig) }),
        payload: Mutex::new(Some(payload)),
        deps_pending: AtomicUsize::new(external.len()),
        dep_error: Mutex::new(None),
        same_sched: same.into_boxed_slice(),
        prev_finished,
        hw: Mutex::new(HwState { callback: None, fence: None, callback_id: None }),
        submit_order: AtomicU64::new(0),
        state: AtomicU64::new(state::ARMED),
        recovery_epoch: AtomicU64::new(0),
        deferred_error: Mutex::new(None),
    });
    {
        let (j, s) = (job.clone(), sched.clone());
        lock(&job.hw).callback = Some(Callback::new(move |hw: &Fence| {
            s.hw_done(&j, hw.error());
        }));
    }
    for d in external {
        let (j, s) = (job.clone(), sched.clone());
        let cb = move |f: &Fence| {
            j.dep_signalled(f);
            // Pump once the signal's callbacks have all run: jobs released by one signal are
            // then selected together, by priority, and handed to the ring as one batch.
            #[cfg(not(gpusched_loom))]
            gpusched_fence::defer_after_callbacks(s);
            #[cfg(gpusched_loom)]
            s.pump();
        };
        if let Err(already) = d.add_callback(cb) {
            job.dep_signalled(&d);
            drop(already);
        }
    }
    Ok(ArmedJob { job: Some(job), sched, slot: key })
}

/// If `fence` is the finished fence of an entity bound to `sched`, that entity and the seqno.
fn same_sched_owner<B: Backend>(
    sched: &Arc<SchedShared<B>>,
    fence: &Fence,
) -> Option<(Arc<EntityShared<B>>, u64)> {
    let st = lock(&sched.state);
    st.slots
        .iter()
        .find(|(_, s)| s.entity.finished_ctx.id() == fence.context())
        .map(|(_, s)| (s.entity.clone(), fence.seqno()))
}

/// Flattens composites, keeps the later fence per context (`drm_sched_job_add_dependency`),
/// then drops those that signalled successfully. Deduplicating first keeps the outcome
/// independent of timing: an earlier failed fence of a context is superseded by a later one
/// whether or not that one has signalled yet.
fn dedup_dependencies(deps: &[Fence]) -> Vec<Fence> {
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
