//! Timeout and reset (TDR): the worker that guarantees completion when a job hangs
//! (`drm_sched_job_timedout`, `drm_sched_stop`/`start`, `drm_sched_increase_karma`,
//! `drm_sched_resubmit_jobs` in `sched_main.c`).
//!
//! The timeout is armed when a job reaches the hardware with the ring idle, and re-armed for
//! the next job each time one finishes. One thread per [`ResetDomain`] (schedulers that share
//! hardware) sleeps until the earliest deadline of its schedulers; on expiry it runs the
//! backend's [`timedout_job`](crate::Backend::timedout_job) with a [`Recovery`] handle, one
//! scheduler at a time, so two schedulers of a domain never recover concurrently.
//!
//! # Contract
//! The whole recovery runs inside a signalling section (the kernel proposed this annotation
//! and never merged it; we ship it): the worker and every step below neither allocate, nor
//! take a `Resv` lock, nor wait on a fence. What recovery needs is reserved beforehand: the
//! pending list holds the jobs, each job is its own completion callback, and
//! [`Recovery::interrupt_waits`] only bumps an epoch and notifies. A backend that allocates or
//! takes a `Resv` lock in `timedout_job` is reported by the checker.
//!
//! The steps, in the usual order: [`stop`](Recovery::stop) (no new `run_job`, completion callbacks
//! detached), [`guilty_completed`](Recovery::guilty_completed) (the job finished just as the
//! timeout fired: not guilty), [`blame`](Recovery::blame) (karma; past the hang limit the entity is
//! banned and its queued and future jobs end `Cancelled`),
//! [`force_complete_guilty`](Recovery::force_complete_guilty) /
//! [`force_complete_all`](Recovery::force_complete_all),
//! [`interrupt_waits`](Recovery::interrupt_waits), the hardware reset (the backend's own),
//! [`resubmit`](Recovery::resubmit), [`start`](Recovery::start); or
//! [`device_gone`](Recovery::device_gone). [`Recovery::standard_reset`] runs that sequence.

use std::fmt;
use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
use std::sync::{Mutex as StdMutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_utils::sync::{Parker, Unparker};
use gpusched_fence::{lockdep, FenceError, InterruptDomain, InterruptSection};

use crate::backend::{Backend, JobInfo, TimeoutStatus};
use crate::job::JobInner;
use crate::sched::SchedShared;
use crate::sync::{lock, Arc, Mutex, Ordering};

/// What the domain's worker needs of a scheduler, whatever its backend type.
pub(crate) trait TimeoutTarget: Send + Sync {
    /// The head job's deadline, if a job is on the hardware and the scheduler is running.
    fn deadline(&self) -> Option<Instant>;
    /// Runs the timeout handler if the deadline has passed.
    fn handle_timeout(&self, now: Instant);
    /// Declares the device gone: every fence ends `DeviceLost`.
    fn device_gone(&self);
    /// Another scheduler of the domain reset the shared hardware: restart a running timeout
    /// from `now`.
    fn hardware_reset(&self, now: Instant);
}

pub(crate) struct DomainInner {
    name: Box<str>,
    interrupt: InterruptDomain,
    /// Serialises recoveries of the domain's schedulers.
    recovery: Mutex<()>,
    /// The domain's schedulers (registered at creation; allocation there).
    targets: StdMutex<Vec<Weak<dyn TimeoutTarget>>>,
    unparker: Unparker,
    /// When the worker will next wake by itself, in ns since `origin`; `u64::MAX` = never.
    next_wake: StdAtomicU64,
    origin: Instant,
    /// Recoveries run so far.
    recoveries: StdAtomicU64,
}

impl Drop for DomainInner {
    fn drop(&mut self) {
        self.unparker.unpark();
    }
}

/// Schedulers that share hardware and so recover together (`struct drm_sched_reset_domain`
/// / amdgpu's reset domain). Owns the timeout worker thread and the [`InterruptDomain`] whose
/// sections interrupt interruptible waits on the fences of its schedulers' entities. Cheap to
/// clone.
#[derive(Clone)]
pub struct ResetDomain {
    pub(crate) inner: Arc<DomainInner>,
}

impl fmt::Debug for ResetDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResetDomain")
            .field("name", &self.inner.name)
            .field("recoveries", &self.recoveries())
            .finish_non_exhaustive()
    }
}

impl ResetDomain {
    /// A new domain with its own timeout worker thread.
    pub fn new(name: impl Into<String>) -> Self {
        let name: String = name.into();
        let parker = Parker::new();
        let inner = Arc::new(DomainInner {
            interrupt: InterruptDomain::new(name.clone()),
            name: name.clone().into_boxed_str(),
            recovery: Mutex::new(()),
            targets: StdMutex::new(Vec::new()),
            unparker: parker.unparker().clone(),
            next_wake: StdAtomicU64::new(u64::MAX),
            origin: Instant::now(),
            recoveries: StdAtomicU64::new(0),
        });
        // Under loom the models drive timeouts themselves: no worker thread.
        #[cfg(not(gpusched_loom))]
        {
            let weak = Arc::downgrade(&inner);
            let spawned = std::thread::Builder::new()
                // A thread name cannot hold a NUL byte (spawning would panic): any name works.
                .name(format!("gpusched-tdr-{}", name.replace('\0', "?")))
                .spawn(move || worker(weak, parker));
            if let Err(e) = spawned {
                panic!("cannot start the timeout worker of reset domain {name}: {e}");
            }
        }
        #[cfg(gpusched_loom)]
        drop(parker);
        ResetDomain { inner }
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The interrupt domain of the fences of this domain's schedulers.
    pub fn interrupt_domain(&self) -> &InterruptDomain {
        &self.inner.interrupt
    }

    /// How many timeout handlers have run: each time a job's timeout found it unfinished and
    /// its backend's `timedout_job` ran, whatever that returned (a [`TimeoutStatus::NoHang`]
    /// extension of a slow but progressing job counts too). Timeouts that found the job
    /// complete do not.
    pub fn recoveries(&self) -> u64 {
        self.inner.recoveries.load(StdOrdering::Relaxed)
    }

    pub(crate) fn register(&self, target: Weak<dyn TimeoutTarget>) {
        let mut t = self.inner.targets.lock().unwrap_or_else(|p| p.into_inner());
        t.retain(|w| w.strong_count() > 0);
        t.push(target);
    }

    /// A deadline was armed: wake the worker if it would sleep past it. Allocation-free.
    pub(crate) fn deadline_armed(&self, deadline: Instant) {
        let at = deadline.saturating_duration_since(self.inner.origin).as_nanos() as u64;
        if at < self.inner.next_wake.load(StdOrdering::SeqCst) {
            self.inner.unparker.unpark();
        }
    }

    /// Every scheduler of the domain but `except` restarts its running timeout from `now`
    /// (the hardware they share was just reset). Allocation-free.
    pub(crate) fn hardware_reset(&self, except: *const (), now: Instant) {
        let t = self.inner.targets.lock().unwrap_or_else(|p| p.into_inner());
        for w in t.iter() {
            if let Some(s) = w.upgrade() {
                if Arc::as_ptr(&s) as *const () != except {
                    s.hardware_reset(now);
                }
            }
        }
    }

    /// Every scheduler of the domain declares its device gone.
    pub(crate) fn all_gone(&self) {
        let t = self.inner.targets.lock().unwrap_or_else(|p| p.into_inner());
        for w in t.iter() {
            if let Some(s) = w.upgrade() {
                s.device_gone();
            }
        }
    }
}

#[cfg_attr(gpusched_loom, allow(dead_code))]
fn worker(domain: Weak<DomainInner>, parker: Parker) {
    loop {
        let Some(d) = domain.upgrade() else { return };
        // While scanning, every newly armed deadline wakes us (it is below MAX): a deadline
        // armed after the scan read its scheduler would otherwise compare against a stale,
        // earlier wake time and be missed, and the worker could sleep forever.
        d.next_wake.store(u64::MAX, StdOrdering::SeqCst);
        let now = Instant::now();
        let mut earliest: Option<Instant> = None;
        {
            let targets: Vec<Arc<dyn TimeoutTarget>> = {
                let t = d.targets.lock().unwrap_or_else(|p| p.into_inner());
                t.iter().filter_map(Weak::upgrade).collect()
            };
            for t in &targets {
                if let Some(dl) = t.deadline() {
                    if dl <= now {
                        t.handle_timeout(now);
                    }
                }
            }
            for t in &targets {
                if let Some(dl) = t.deadline() {
                    earliest = Some(earliest.map_or(dl, |e| e.min(dl)));
                }
            }
        }
        let wake =
            earliest.map_or(u64::MAX, |e| e.saturating_duration_since(d.origin).as_nanos() as u64);
        // A deadline armed during the scan saw MAX and unparked us: the park below returns at
        // once and we rescan. One armed after this store compares against `wake`, which only
        // counts deadlines that existed: if it is earlier it unparks, else we wake in time.
        d.next_wake.store(wake, StdOrdering::SeqCst);
        drop(d);
        match earliest {
            Some(e) => parker.park_deadline(e.max(Instant::now() + Duration::from_micros(50))),
            None => parker.park(),
        }
    }
}

/// The recovery handle given to [`Backend::timedout_job`]: the standard steps of a reset, on
/// the timed-out scheduler (and, for [`device_gone`](Recovery::device_gone) and
/// [`interrupt_waits`](Recovery::interrupt_waits), its whole reset domain). Every step is
/// allocation-free and lock-order safe inside the signalling section the worker runs in.
pub struct Recovery<'a, B: Backend> {
    pub(crate) sched: &'a Arc<SchedShared<B>>,
    pub(crate) guilty: Arc<JobInner<B>>,
    pub(crate) stopped: bool,
    pub(crate) interrupt: Option<InterruptSection>,
}

impl<B: Backend> fmt::Debug for Recovery<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recovery")
            .field("scheduler", &self.sched.name())
            .field("guilty", &self.guilty.info)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Recovery<'_, B> {
    /// The job that timed out.
    pub fn guilty(&self) -> &JobInfo {
        &self.guilty.info
    }

    /// Runs `f` on the guilty job's payload (e.g. to release an injected hang).
    pub fn with_guilty_payload<R>(&self, f: impl FnOnce(&mut B::Job) -> R) -> Option<R> {
        lock(&self.guilty.payload).as_mut().map(f)
    }

    /// Stops the scheduler (`drm_sched_stop`): no new `run_job`, and the completion callbacks
    /// of the jobs on the hardware are detached (kept for [`start`](Recovery::start)).
    pub fn stop(&mut self) {
        self.sched.stop_ring();
        self.stopped = true;
    }

    /// Whether the guilty job's hardware fence has signalled after all (it completed just as
    /// its timeout fired): then it must not be blamed.
    pub fn guilty_completed(&self) -> bool {
        // Cloned out first: polling a backend fence may run the completion callback.
        let hw = lock(&self.guilty.hw).fence.clone();
        hw.is_some_and(|f| f.is_signaled())
    }

    /// Blames the guilty job (`drm_sched_increase_karma`): raises its entity's karma; past the
    /// scheduler's hang limit the entity is banned, and its queued and future jobs end with
    /// [`FenceError::Cancelled`]. Returns whether the entity is now banned.
    ///
    /// A guilty job whose dependency failed after it was handed to the hardware (a cross-ring
    /// dependency the device waited for, or a same-ring one that failed so itself) ran on
    /// missing results: it is not blamed (no karma), as with host waits it would have ended
    /// with that dependency's error without running; [`force_complete_guilty`] ends it with
    /// that error.
    ///
    /// [`force_complete_guilty`]: Recovery::force_complete_guilty
    pub fn blame(&mut self) -> bool {
        if self.guilty.inherited_error().is_some() {
            diag!(debug, target: "gpusched", sched = self.sched.name(), job = self.guilty.info.id, "not blamed: ran on a failed dependency's missing results");
            return false;
        }
        let entity = &self.guilty.entity;
        let karma = entity.karma.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        diag!(debug, target: "gpusched", sched = self.sched.name(), job = self.guilty.info.id, karma, "blamed");
        if karma > self.sched.config.hang_limit {
            entity.stop(FenceError::Cancelled);
            diag!(warn, target: "gpusched", entity = entity.id, karma, "entity banned");
            true
        } else {
            false
        }
    }

    /// Signals the guilty job's finished fence with `error` (or the error of a dependency
    /// that failed after it was handed to the hardware: see [`blame`](Recovery::blame)) and
    /// retires it, unless it has already finished. Its resources are freed later, through
    /// `free_job`; a backend whose hardware may still be running it must keep them until the
    /// hardware has passed it.
    pub fn force_complete_guilty(&mut self, error: FenceError) {
        let error = self.guilty.inherited_error().unwrap_or(error);
        self.sched.force_complete(&self.guilty, error);
    }

    /// Signals every unfinished job on the ring with `error` and retires them (the big
    /// whack).
    pub fn force_complete_all(&mut self, error: FenceError) {
        self.sched.force_complete_all(error);
    }

    /// Ends every job still on the ring whose same-ring dependency has failed (typically the
    /// guilty job just force-completed) with that dependency's error, in timeline order,
    /// without rerunning anything. For a backend that does not [`resubmit`](Recovery::resubmit)
    /// (its queued hardware work simply continues, as a Vulkan queue's does after a hang is
    /// released): a job scheduled behind a failed dependency on the same ring would otherwise
    /// run on its missing results and end `Ok`. A job the hardware finishes between `stop` and
    /// this call (behind a released hang, or a blamed slow job that finished meanwhile) fails
    /// too: it ran on the failed job's late results. The hardware may still run such a job;
    /// keep its resources until the hardware has passed it (as after `force_complete_guilty`).
    /// Call between [`stop`](Recovery::stop) and [`start`](Recovery::start).
    pub fn fail_dependants(&mut self) {
        self.sched.fail_dependants();
    }

    /// Opens an interrupt section on the reset domain until recovery ends: every interruptible
    /// wait on the domain's fences returns `Interrupted`, new ones fail at once; plain waits
    /// keep waiting.
    pub fn interrupt_waits(&mut self) {
        if self.interrupt.is_none() {
            self.interrupt = Some(self.sched.domain.interrupt_domain().begin_interrupt());
        }
    }

    /// Runs the unfinished jobs on the ring again, in ring order (`drm_sched_resubmit_jobs`),
    /// after the hardware was reset. Jobs whose hardware fence signalled meanwhile are not
    /// rerun. Call between [`stop`](Recovery::stop) and [`start`](Recovery::start).
    pub fn resubmit(&mut self) {
        self.sched.resubmit();
    }

    /// Restarts the scheduler (`drm_sched_start`): retires jobs that completed while stopped,
    /// reattaches completion callbacks, re-arms the timeout and runs queued work.
    pub fn start(&mut self) {
        self.sched.start_ring();
        self.stopped = false;
    }

    /// Declares the device gone for the whole reset domain: every unfinished fence signals
    /// [`FenceError::DeviceLost`], later arms fail and later pushes end `DeviceLost`.
    pub fn device_gone(&mut self) {
        self.sched.domain.all_gone();
        if self.stopped {
            // A stopped ring never selects again: restart it (its pending list is empty now,
            // and the scheduler is shut, so nothing runs) so that selection cancels the jobs
            // still queued, in timeline order.
            self.start();
        }
    }

    /// The standard reset: stop; if the guilty job completed after all, start again and
    /// answer [`TimeoutStatus::NoHang`]; else blame it, force-complete it with
    /// [`FenceError::TimedOut`], interrupt waits, run `reset_hw` (the backend's hardware
    /// reset; `false` means it failed and the device is gone), resubmit the innocent jobs and
    /// start, answering [`TimeoutStatus::Reset`].
    pub fn standard_reset(&mut self, reset_hw: impl FnOnce() -> bool) -> TimeoutStatus {
        self.stop();
        if self.guilty_completed() {
            self.start();
            return TimeoutStatus::NoHang;
        }
        self.blame();
        self.force_complete_guilty(FenceError::TimedOut);
        self.interrupt_waits();
        if !reset_hw() {
            self.device_gone();
            return TimeoutStatus::NoDevice;
        }
        self.resubmit();
        self.start();
        TimeoutStatus::Reset
    }
}

impl<B: Backend> TimeoutTarget for SchedShared<B> {
    fn deadline(&self) -> Option<Instant> {
        let st = lock(&self.state);
        if st.stopped {
            None
        } else {
            st.deadline
        }
    }

    fn handle_timeout(&self, now: Instant) {
        let Some(me) = self.self_arc() else { return };
        let _section = lockdep::signalling_section();
        let _serial = lock(&me.domain.inner.recovery);
        // Recheck under the lock: still expired, and the head job still unfinished.
        let head = {
            let st = lock(&me.state);
            match (st.deadline, st.pending.front()) {
                (Some(dl), Some(head)) if dl <= now && !st.stopped => Some(head.clone()),
                _ => None,
            }
        };
        let Some(head) = head else { return };
        if head.deferred_error.is_some() {
            // Never on the hardware: it ends when its entity's previous job signals.
            me.rearm(now);
            return;
        }
        if let Some(start) = crate::cross_ring::own_start(&head, now) {
            // It waited on the device for another ring's job: its own time starts when that
            // job finished (a hang there is that job's, not this one's).
            if me.config.timeout.deadline_from(start).is_some_and(|d| d > now) {
                me.rearm(start);
                return;
            }
        }
        // Poll the hardware fence with no lock held: a backend fence (`FenceOps::signaled`)
        // may signal on the spot and run the completion callback, which takes the state lock.
        let hw = lock(&head.hw).fence.clone();
        if hw.is_some_and(|f| f.is_signaled()) {
            // Completed just as the timeout fired: its callback retires it.
            let mut st = lock(&me.state);
            if st.pending.front().is_some_and(|j| Arc::ptr_eq(j, &head)) {
                st.deadline = None;
            }
            return;
        }
        let guilty = head;
        me.domain.inner.recoveries.fetch_add(1, StdOrdering::Relaxed);
        diag!(warn, target: "gpusched", sched = me.name(), job = guilty.info.id, "timeout");
        let mut recovery = Recovery { sched: &me, guilty, stopped: false, interrupt: None };
        let status = me.backend.timedout_job(&mut recovery);
        if recovery.stopped {
            // A backend that stopped and forgot to start: start, so nothing is left pending.
            recovery.start();
        }
        match status {
            TimeoutStatus::NoHang => me.rearm(Instant::now()),
            // The other rings of the domain share the hardware that was stalled or reset:
            // their head jobs get their time again (or an innocent job queued behind the hang
            // on the same hardware queue would time out next).
            TimeoutStatus::Reset => {
                me.domain.hardware_reset(Arc::as_ptr(&me) as *const (), Instant::now())
            }
            TimeoutStatus::NoDevice => {
                if me.gone_error().is_none() {
                    me.domain.all_gone();
                }
            }
        }
        drop(recovery);
        me.pump();
    }

    fn hardware_reset(&self, now: Instant) {
        self.extend_deadline(now);
    }

    fn device_gone(&self) {
        if let Some(me) = self.self_arc() {
            // Refuse new work first (a waiter woken by the force-completion may arm at once),
            // then retire the jobs on the ring; queued jobs end after them, in timeline order
            // (selection waits for each entity's previous job).
            me.shutdown(FenceError::DeviceLost);
            me.force_complete_all(FenceError::DeviceLost);
            // Free what was retired (the pump only frees: the scheduler is shut).
            me.pump();
        }
    }
}
