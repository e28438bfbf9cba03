//! The scheduler of one hardware ring (`struct drm_gpu_scheduler`, `sched_main.c`): its
//! state under its lock (`SchedState`, `SchedShared`) and the public [`Scheduler`] handle.
//!
//! The paths that change the state are spread over this module's files, one concern each:
//! `run.rs` (the pump, the drain and `run_job`), `select.rs` (which job runs or is cancelled
//! next), `complete.rs` (retiring a job: completion, deferred failures, cancellation, the
//! free list), `queue.rs` (entity slots: arming reservations, push, dropped unpushed jobs,
//! priority changes, wakes) and `recovery.rs` (the timeout's arming and the passes the TDR
//! worker runs over the pending list). Teardown is in `teardown.rs`, the TDR worker in
//! `tdr.rs`.
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

use gpusched_fence::{Fence, FenceError};
use slab::Slab;

use crate::backend::Backend;
use crate::config::{Priority, SchedulerConfig};
use crate::entity::EntityShared;
use crate::error::SchedError;
use crate::job::JobInner;
use crate::ready::{Link, ReadyLists};
use crate::sync::{lock, Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::tdr::{ResetDomain, TimeoutTarget};

mod complete;
mod queue;
mod recovery;
mod run;
mod select;

static NEXT_SCHED_ID: StdAtomicU64 = StdAtomicU64::new(1);

/// An entity's queue on one scheduler. Protected by `SchedShared::state`.
pub(crate) struct EntitySlot<B: Backend> {
    pub(crate) entity: Arc<EntityShared<B>>,
    /// Pushed jobs, oldest first. Capacity always covers `queue.len() + armed`.
    pub(crate) queue: VecDeque<Arc<JobInner<B>>>,
    /// Jobs armed on this slot and not yet pushed or dropped.
    pub(crate) armed: usize,
    /// Virtual runtime under [`Policy::Fair`](crate::Policy::Fair).
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
    /// Pump requests; non-zero while a thread drains (see `run.rs`).
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
