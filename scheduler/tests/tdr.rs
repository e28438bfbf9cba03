//! Timeout and reset (TDR) on the mock ring.

#![cfg(not(gpusched_loom))]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gpusched::fence::{FenceError, FenceStatus, WaitError};
use gpusched::testing::{MockBehavior, MockJob, MockRing};
use gpusched::{Entity, Priority, ResetDomain, Scheduler, SchedulerConfig, TimeoutStatus};

const WATCHDOG: Duration = Duration::from_secs(20);

fn sched(ring: MockRing, timeout_ms: u64) -> Scheduler<MockRing> {
    Scheduler::new(ring, SchedulerConfig::new("ring").timeout(Duration::from_millis(timeout_ms)))
        .unwrap()
}

#[test]
fn hung_job_times_out_and_innocent_jobs_complete() {
    let s = sched(MockRing::immediate(), 100);
    let bad = Entity::new(&[&s], Priority::Normal).unwrap();
    let good = Entity::new(&[&s], Priority::Normal).unwrap();
    let hung = bad.job(MockJob::new(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let after: Vec<_> = (10..15).map(|t| good.job(MockJob::new(t)).arm().unwrap().push()).collect();
    // Not finished before the timeout.
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(hung.status(), FenceStatus::Pending);
    assert!(after.iter().all(|f| !f.is_signaled()), "the ring is stalled behind the hang");
    let start = Instant::now();
    assert_eq!(hung.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::TimedOut)));
    assert!(start.elapsed() < WATCHDOG);
    for f in &after {
        assert_eq!(f.wait_timeout(WATCHDOG), Ok(()));
    }
    assert_eq!(s.backend().timeouts(), 1);
    assert_eq!(s.backend().resets(), 1);
    // Innocent jobs were resubmitted after the reset and completed in order.
    let done = s.backend().completed_tags();
    assert_eq!(done, vec![10, 11, 12, 13, 14]);
}

#[test]
fn no_hang_answer_rearms_and_job_finishes_unblamed() {
    let s = sched(MockRing::timed(), 50);
    s.backend().set_timeout_answer(TimeoutStatus::NoHang);
    let e = Entity::new(&[&s], Priority::Normal).unwrap();
    let slow = e.job(MockJob::new(1).duration(Duration::from_millis(200))).arm().unwrap().push();
    assert_eq!(slow.wait_timeout(WATCHDOG), Ok(()));
    assert!(s.backend().timeouts() >= 1, "the timeout fired while the job was slow");
    assert_eq!(s.backend().resets(), 0);
    assert!(e.stopped().is_none());
}

#[test]
fn hang_limit_bans_the_guilty_entity() {
    let s = Scheduler::new(
        MockRing::immediate(),
        SchedulerConfig::new("ring").timeout(Duration::from_millis(40)).hang_limit(1),
    )
    .unwrap();
    let bad = Entity::new(&[&s], Priority::Normal).unwrap();
    let good = Entity::new(&[&s], Priority::Normal).unwrap();
    let h1 = bad.job(MockJob::new(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let g1 = good.job(MockJob::new(100)).arm().unwrap().push();
    let h2 = bad.job(MockJob::new(2).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let queued = bad.job(MockJob::new(3)).arm().unwrap().push();
    let g2 = good.job(MockJob::new(101)).arm().unwrap().push();
    assert_eq!(h1.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::TimedOut)));
    assert_eq!(h2.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::TimedOut)));
    assert_eq!(queued.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::Cancelled)));
    assert_eq!(g1.wait_timeout(WATCHDOG), Ok(()));
    assert_eq!(g2.wait_timeout(WATCHDOG), Ok(()));
    assert_eq!(bad.stopped(), Some(FenceError::Cancelled));
    assert!(bad.job(MockJob::new(4)).arm().is_err());
    assert_eq!(s.backend().completed_tags(), vec![100, 101]);
}

#[test]
fn no_device_loses_every_fence_and_later_pushes_fail() {
    let s = sched(MockRing::immediate(), 40);
    s.backend().set_timeout_answer(TimeoutStatus::NoDevice);
    let e = Entity::new(&[&s], Priority::Normal).unwrap();
    let hung = e.job(MockJob::new(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let behind = e.job(MockJob::new(2)).arm().unwrap().push();
    assert_eq!(hung.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::DeviceLost)));
    assert_eq!(behind.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::DeviceLost)));
    let err = e.job(MockJob::new(3)).arm().unwrap_err();
    assert!(err.error.is_scheduler_gone(), "{}", err.error);
}

/// Regression (found by the fault suite): a backend that stops the ring before declaring the
/// device gone (`stop` then `device_gone`, as `MockRing` does) left the scheduler stopped, so
/// the jobs still queued (here: no credits left for them) were never cancelled and their
/// fences never signalled.
#[test]
fn no_device_after_stop_cancels_queued_jobs() {
    let s = Scheduler::new(
        MockRing::immediate(),
        SchedulerConfig::new("ring").timeout(Duration::from_millis(40)).credit_limit(1),
    )
    .unwrap();
    s.backend().set_timeout_answer(TimeoutStatus::NoDevice);
    let a = Entity::new(&[&s], Priority::Normal).unwrap();
    let b = Entity::new(&[&s], Priority::Normal).unwrap();
    let hung = a.job(MockJob::new(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let queued = b.job(MockJob::new(2)).arm().unwrap().push();
    assert_eq!(hung.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::DeviceLost)));
    assert_eq!(queued.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::DeviceLost)));
    assert_eq!(s.backend().run_tags(), vec![1], "the queued job never reached the ring");
    assert_eq!(s.stats().queued, 0);
}

#[test]
fn reset_interrupts_interruptible_waits_only() {
    let domain = ResetDomain::new("gpu0");
    let s = Scheduler::new(
        MockRing::immediate(),
        SchedulerConfig::new("ring").timeout(Duration::from_millis(150)).reset_domain(&domain),
    )
    .unwrap();
    let e = Entity::new(&[&s], Priority::Normal).unwrap();
    let hung = e.job(MockJob::new(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let behind = e.job(MockJob::new(2)).arm().unwrap().push();
    let b1 = behind.clone();
    let interruptible = std::thread::spawn(move || b1.wait_interruptible(Some(WATCHDOG)));
    let b2 = behind.clone();
    let plain = std::thread::spawn(move || b2.wait_timeout(WATCHDOG));
    assert_eq!(interruptible.join().unwrap(), Err(WaitError::Interrupted));
    assert_eq!(plain.join().unwrap(), Ok(()));
    assert_eq!(hung.status(), FenceStatus::Failed(FenceError::TimedOut));
    let deadline = Instant::now() + WATCHDOG;
    while domain.interrupt_domain().is_interrupting() {
        assert!(Instant::now() < deadline, "the interrupt section never ended");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(domain.recoveries(), 1);
    let _ = Arc::new(());
}

/// A backend wrapping the mock ring whose timeout handler is scripted by the test.
struct Scripted {
    ring: MockRing,
    mode: Mode,
    /// Recoveries running now, shared between rings of one domain.
    active: Arc<std::sync::atomic::AtomicUsize>,
    max_active: Arc<std::sync::atomic::AtomicUsize>,
    /// (guilty tag, when the handler started)
    entered: std::sync::Mutex<Vec<(u64, Instant)>>,
    /// Blocks the handler until the test releases it (Hold mode).
    gate: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    in_section: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Standard,
    ForceAll(FenceError),
    Hold,
    /// A backend that cannot take work off its queue and never resubmits (Vulkan): the
    /// guilty job ends `TimedOut`, its same-ring dependants fail, the hang is released and
    /// the queued hardware work simply continues.
    NoResubmit,
    /// The same, with the hang released (and the jobs behind it finished by the hardware)
    /// before `fail_dependants`: as when the Vulkan ring released a freed guilty job's hang
    /// inside the recovery, or a blamed slow job finishes meanwhile.
    NoResubmitReleasedEarly,
}

impl Scripted {
    fn new(ring: MockRing, mode: Mode) -> Self {
        Scripted {
            ring,
            mode,
            active: Default::default(),
            max_active: Default::default(),
            entered: Default::default(),
            gate: Default::default(),
            in_section: Default::default(),
        }
    }
}

impl gpusched::Backend for Scripted {
    common::mock_ring_delegate!(free_job);

    fn timedout_job(&self, r: &mut gpusched::Recovery<'_, Self>) -> TimeoutStatus {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.active.fetch_add(1, SeqCst) + 1;
        self.max_active.fetch_max(now, SeqCst);
        let tag = r.with_guilty_payload(|j| j.tag).unwrap_or(u64::MAX);
        self.entered.lock().unwrap().push((tag, Instant::now()));
        let status = match self.mode {
            Mode::Standard => r.standard_reset(|| {
                std::thread::sleep(Duration::from_millis(5));
                self.ring.reset_hw();
                true
            }),
            Mode::NoResubmit => {
                r.stop();
                r.blame();
                r.force_complete_guilty(FenceError::TimedOut);
                r.fail_dependants();
                self.ring.release_hangs();
                r.start();
                TimeoutStatus::Reset
            }
            Mode::NoResubmitReleasedEarly => {
                r.stop();
                r.blame();
                r.force_complete_guilty(FenceError::TimedOut);
                self.ring.release_hangs();
                r.fail_dependants();
                r.start();
                TimeoutStatus::Reset
            }
            Mode::ForceAll(e) => {
                r.stop();
                r.force_complete_all(e);
                self.ring.reset_hw();
                r.start();
                TimeoutStatus::Reset
            }
            Mode::Hold => {
                r.stop();
                r.blame();
                r.force_complete_guilty(FenceError::TimedOut);
                r.interrupt_waits();
                if let Some(tx) = self.in_section.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                if let Some(rx) = self.gate.lock().unwrap().take() {
                    let _ = rx.recv_timeout(WATCHDOG);
                }
                self.ring.reset_hw();
                r.resubmit();
                r.start();
                TimeoutStatus::Reset
            }
        };
        self.active.fetch_sub(1, SeqCst);
        status
    }
}

fn scripted(mode: Mode, timeout_ms: u64, domain: Option<&ResetDomain>) -> Scheduler<Scripted> {
    let mut cfg = SchedulerConfig::new("scripted").timeout(Duration::from_millis(timeout_ms));
    if let Some(d) = domain {
        cfg = cfg.reset_domain(d);
    }
    Scheduler::new(Scripted::new(MockRing::immediate(), mode), cfg).unwrap()
}

#[test]
fn force_complete_all_signals_every_unfinished_fence_with_the_error() {
    let s = scripted(Mode::ForceAll(FenceError::Driver(-5)), 50, None);
    let e = Entity::new(&[&s], Priority::Normal).unwrap();
    let hung = e.job(MockJob::new(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let on_ring: Vec<_> = (2..6).map(|t| e.job(MockJob::new(t)).arm().unwrap().push()).collect();
    assert_eq!(hung.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::Driver(-5))));
    for f in &on_ring {
        assert_eq!(f.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::Driver(-5))));
    }
    // The scheduler works again afterwards.
    let after = e.job(MockJob::new(9)).arm().unwrap().push();
    assert_eq!(after.wait_timeout(WATCHDOG), Ok(()));
}

#[test]
fn schedulers_of_one_domain_never_recover_concurrently() {
    let domain = ResetDomain::new("shared-gpu");
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let max_active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mk = |name: &str| {
        let mut b = Scripted::new(MockRing::immediate(), Mode::Standard);
        b.active = active.clone();
        b.max_active = max_active.clone();
        let cfg = SchedulerConfig::new(name)
            .timeout(Duration::from_millis(20))
            .hang_limit(100)
            .reset_domain(&domain);
        Scheduler::new(b, cfg).unwrap()
    };
    let (s1, s2) = (mk("gfx"), mk("compute"));
    let e1 = Entity::new(&[&s1], Priority::Normal).unwrap();
    let e2 = Entity::new(&[&s2], Priority::Normal).unwrap();
    let mut fences = Vec::new();
    for t in 0..4 {
        fences.push(e1.job(MockJob::new(t).behavior(MockBehavior::Hang)).arm().unwrap().push());
        fences
            .push(e2.job(MockJob::new(100 + t).behavior(MockBehavior::Hang)).arm().unwrap().push());
    }
    for f in &fences {
        assert_eq!(f.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::TimedOut)));
    }
    assert_eq!(max_active.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(domain.recoveries(), 8);
}

#[test]
fn new_interruptible_waits_fail_during_the_section_and_work_after() {
    let domain = ResetDomain::new("gpu1");
    let s = scripted(Mode::Hold, 40, Some(&domain));
    let (gate_tx, gate_rx) = std::sync::mpsc::channel();
    let (in_tx, in_rx) = std::sync::mpsc::channel();
    *s.backend().gate.lock().unwrap() = Some(gate_rx);
    *s.backend().in_section.lock().unwrap() = Some(in_tx);
    let e = Entity::new(&[&s], Priority::Normal).unwrap();
    let hung = e.job(MockJob::new(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let behind = e.job(MockJob::new(2)).arm().unwrap().push();
    in_rx.recv_timeout(WATCHDOG).unwrap();
    // The reset is in progress and holds an interrupt section open.
    assert!(domain.interrupt_domain().is_interrupting());
    let start = Instant::now();
    assert_eq!(behind.wait_interruptible(Some(WATCHDOG)), Err(WaitError::Interrupted));
    let r = futures_lite::future::block_on(behind.wait_async_interruptible());
    assert_eq!(r, Err(WaitError::Interrupted));
    assert!(start.elapsed() < Duration::from_secs(5), "failed at once, not after a timeout");
    gate_tx.send(()).unwrap();
    assert_eq!(hung.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::TimedOut)));
    assert_eq!(behind.wait_timeout(WATCHDOG), Ok(()));
    // After the section: interruptible waits work again.
    let deadline = Instant::now() + WATCHDOG;
    while domain.interrupt_domain().is_interrupting() {
        assert!(Instant::now() < deadline, "the interrupt section never ended");
        std::thread::sleep(Duration::from_millis(1));
    }
    let later = e.job(MockJob::new(3)).arm().unwrap().push();
    assert_eq!(later.wait_interruptible(Some(WATCHDOG)), Ok(()));
}

#[test]
fn async_interruptible_wait_is_interrupted_by_a_reset() {
    let domain = ResetDomain::new("gpu2");
    let s = scripted(Mode::Hold, 60, Some(&domain));
    let (gate_tx, gate_rx) = std::sync::mpsc::channel();
    *s.backend().gate.lock().unwrap() = Some(gate_rx);
    let e = Entity::new(&[&s], Priority::Normal).unwrap();
    let _hung = e.job(MockJob::new(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let behind = e.job(MockJob::new(2)).arm().unwrap().push();
    let b = behind.clone();
    let waiter =
        std::thread::spawn(move || futures_lite::future::block_on(b.wait_async_interruptible()));
    let plain = {
        let b = behind.clone();
        std::thread::spawn(move || futures_lite::future::block_on(b.into_future()))
    };
    assert_eq!(waiter.join().unwrap(), Err(WaitError::Interrupted));
    gate_tx.send(()).unwrap();
    assert_eq!(plain.join().unwrap(), Ok(()));
}

use std::future::IntoFuture;

#[test]
fn completion_racing_the_timeout_is_never_blamed() {
    // Jobs whose duration is about the timeout: the hardware and the worker race. A job the
    // ring completed before the handler started must never be reported TimedOut.
    let s = Scheduler::new(
        Scripted::new(MockRing::timed(), Mode::Standard),
        SchedulerConfig::new("race")
            .timeout(Duration::from_millis(2))
            .hang_limit(u32::MAX)
            .credit_limit(1),
    )
    .unwrap();
    let e = Entity::new(&[&s], Priority::Normal).unwrap();
    let mut jobs = Vec::new();
    for t in 0..2000u64 {
        let d = Duration::from_micros(1500 + (t * 37) % 1000);
        jobs.push((t, e.job(MockJob::new(t).duration(d)).arm().unwrap().push()));
        if t % 50 == 49 {
            jobs.last().unwrap().1.wait_timeout(WATCHDOG).ok();
        }
    }
    let mut timed_out = 0;
    for (_, f) in &jobs {
        match f.wait_timeout(WATCHDOG) {
            Ok(()) => {}
            Err(WaitError::Failed(FenceError::TimedOut)) => timed_out += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    let completed = s.backend().ring.completion_log();
    let entered = s.backend().entered.lock().unwrap().clone();
    for (tag, at) in &entered {
        // The guilty job may have completed and been freed before the handler read its tag.
        let Some((_, f)) = jobs.get(*tag as usize) else { continue };
        if f.error() == Some(FenceError::TimedOut) {
            if let Some((_, done)) = completed.iter().find(|(t, _)| t == tag) {
                assert!(done > at, "job {tag} completed before its timeout handler yet was blamed");
            }
        }
    }
    eprintln!("race: {} handlers ran, {timed_out} jobs blamed, of {}", entered.len(), jobs.len());
    assert!(!entered.is_empty(), "the timeout should have fired at least once");
}

/// A reset restarts the timeouts of the domain's other schedulers (`drm_sched_start` re-arms
/// every ring the reset stopped): a job on another ring that was stuck behind the hang on the
/// shared hardware gets its time again instead of being blamed next.
#[test]
fn a_reset_restarts_the_other_rings_timeouts() {
    let domain = ResetDomain::new("shared-queue");
    let timeout = Duration::from_millis(1000);
    let mk = |ring: MockRing, name: &str| {
        let cfg = SchedulerConfig::new(name).timeout(timeout).reset_domain(&domain);
        Scheduler::new(ring, cfg).unwrap()
    };
    let (a, b) = (mk(MockRing::immediate(), "a"), mk(MockRing::manual(), "b"));
    let ea = Entity::new(&[&a], Priority::Normal).unwrap();
    let eb = Entity::new(&[&b], Priority::Normal).unwrap();
    let hung = ea.job(MockJob::new(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    std::thread::sleep(Duration::from_millis(100));
    // Stands for a job queued behind the hang on the same hardware queue.
    let behind = eb.job(MockJob::new(2)).arm().unwrap().push();
    assert_eq!(hung.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::TimedOut)));
    // Past b's original deadline (about 1.1 s), well before the restarted one (about 2 s).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(behind.status(), FenceStatus::Pending, "the innocent job was not blamed");
    assert!(b.backend().complete_next());
    assert_eq!(behind.wait_timeout(WATCHDOG), Ok(()));
    assert_eq!((a.backend().timeouts(), b.backend().timeouts()), (1, 0));
    assert_eq!(domain.recoveries(), 1);
}

/// Regression (found by the fault suite): a job that depended on a job of its own ring
/// (met once that job was scheduled) was on the ring behind it when that job hung; after the
/// reset it was resubmitted and ran on the guilty job's missing results, ending `Ok`. Now it
/// ends with the guilty job's error, and is not rerun.
#[test]
fn dependant_on_the_ring_behind_a_guilty_job_fails_instead_of_rerunning() {
    let s = sched(MockRing::immediate(), 40);
    let bad = Entity::new(&[&s], Priority::Normal).unwrap();
    let good = Entity::new(&[&s], Priority::Normal).unwrap();
    let hung = bad.job(MockJob::new(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let dependant = good.job(MockJob::new(2)).dependency(hung.clone()).arm().unwrap().push();
    let innocent = good.job(MockJob::new(3)).arm().unwrap().push();
    assert_eq!(hung.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::TimedOut)));
    assert_eq!(dependant.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::TimedOut)));
    assert_eq!(innocent.wait_timeout(WATCHDOG), Ok(()));
    assert!(dependant.timestamp().unwrap() <= innocent.timestamp().unwrap());
    // 2 ran once (behind the hang), never again; 3 ran before and after the reset.
    assert_eq!(s.backend().run_tags(), vec![1, 2, 3, 3]);
    assert_eq!(s.backend().completed_tags(), vec![3]);
}

/// A ring driven by hand: job `1` hangs; the timeout handler stops the scheduler, then the
/// hardware completes every other job on the ring (their completions land after the stop
/// detached the scheduler's callbacks), then the standard reset steps run.
struct CompletesDuringReset {
    ctx: gpusched::fence::FenceContext,
    hw: std::sync::Mutex<Vec<(u64, gpusched::fence::Signaller)>>,
    runs: std::sync::Mutex<Vec<u64>>,
}

impl gpusched::Backend for CompletesDuringReset {
    type Job = u64;
    type Error = std::convert::Infallible;

    fn run_job(
        &self,
        tag: &mut u64,
        _info: &gpusched::JobInfo,
    ) -> Result<gpusched::fence::Fence, FenceError> {
        let (fence, signaller) = self.ctx.next();
        self.runs.lock().unwrap().push(*tag);
        self.hw.lock().unwrap().push((*tag, signaller));
        Ok(fence)
    }

    fn timedout_job(&self, r: &mut gpusched::Recovery<'_, Self>) -> TimeoutStatus {
        r.stop();
        let done: Vec<_> = {
            let mut hw = self.hw.lock().unwrap();
            let (hang, done): (Vec<_>, Vec<_>) = hw.drain(..).partition(|(t, _)| *t == 1);
            *hw = hang;
            done
        };
        for (_, s) in done {
            s.signal();
        }
        r.blame();
        r.force_complete_guilty(FenceError::TimedOut);
        self.hw.lock().unwrap().clear(); // the reset
        r.resubmit();
        r.start();
        TimeoutStatus::Reset
    }
}

/// Regression (found by the fault suite): jobs that completed on the hardware while the
/// timeout handler had the scheduler stopped were treated as unfinished by the resubmission:
/// a killed entity's job was force-completed `Killed` although it had finished (`kill` leaves
/// jobs on the hardware alone), its dependant then failed with that error, and innocent jobs
/// ran twice. Now they keep their hardware result and are not rerun.
#[test]
fn jobs_completed_during_a_reset_keep_their_hardware_result() {
    let ring = CompletesDuringReset {
        ctx: gpusched::fence::FenceContext::new("hand"),
        hw: std::sync::Mutex::new(Vec::new()),
        runs: std::sync::Mutex::new(Vec::new()),
    };
    let s = Scheduler::new(
        ring,
        SchedulerConfig::new("ring").timeout(Duration::from_millis(40)).hang_limit(10),
    )
    .unwrap();
    let guilty = Entity::new(&[&s], Priority::Normal).unwrap();
    let killed = Entity::new(&[&s], Priority::Normal).unwrap();
    let other = Entity::new(&[&s], Priority::Normal).unwrap();
    let hung = guilty.job(1).arm().unwrap().push();
    let on_hw = killed.job(2).arm().unwrap().push();
    let dependant = other.job(3).dependency(on_hw.clone()).arm().unwrap().push();
    let innocent = other.job(4).arm().unwrap().push();
    killed.kill();
    assert_eq!(hung.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::TimedOut)));
    assert_eq!(on_hw.wait_timeout(WATCHDOG), Ok(()), "it had finished on the hardware");
    assert_eq!(dependant.wait_timeout(WATCHDOG), Ok(()));
    assert_eq!(innocent.wait_timeout(WATCHDOG), Ok(()));
    assert_eq!(*s.backend().runs.lock().unwrap(), vec![1, 2, 3, 4], "nothing rerun");
}

/// Regression (found by the fault suite): the resubmission fails a job whose
/// same-ring dependency was the guilty one, after its entity's previous job (deferred); a
/// dependant of that job armed before it was pushed must see the failure too, not rerun.
#[test]
fn deferred_failure_in_a_reset_fails_dependants_armed_before_the_push() {
    let s = sched(MockRing::immediate(), 40);
    let g = Entity::new(&[&s], Priority::Normal).unwrap();
    let e = Entity::new(&[&s], Priority::Normal).unwrap();
    let f = Entity::new(&[&s], Priority::Normal).unwrap();
    let hung = g.job(MockJob::new(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let prev = e.job(MockJob::new(2)).arm().unwrap().push();
    let failing = e.job(MockJob::new(3)).dependency(hung.clone()).arm().unwrap();
    let dependant = f.job(MockJob::new(4)).dependency(failing.finished().clone()).arm().unwrap();
    let failing = failing.push();
    let dependant = dependant.push();
    assert_eq!(hung.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::TimedOut)));
    assert_eq!(prev.wait_timeout(WATCHDOG), Ok(()));
    assert_eq!(failing.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::TimedOut)));
    assert_eq!(dependant.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::TimedOut)));
    assert!(prev.timestamp().unwrap() <= failing.timestamp().unwrap());
    assert_eq!(s.backend().completed_tags(), vec![2], "only the innocent job completes");
}

/// A guilty hung job, a same-ring dependant queued behind it and an independent job, on a
/// backend that never resubmits (`mode`): the dependant must end with the guilty job's error
/// (`Recovery::fail_dependants`), not run on its missing results and end `Ok`; the
/// independent job completes normally.
fn same_ring_dependant_of_the_guilty_fails(mode: Mode) {
    let s = scripted(mode, 100, None);
    let bad = Entity::new(&[&s], Priority::Normal).unwrap();
    let dep = Entity::new(&[&s], Priority::Normal).unwrap();
    let other = Entity::new(&[&s], Priority::Normal).unwrap();
    let hung = bad.job(MockJob::new(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    // Same scheduler: met once the hung job is scheduled, so it is on the ring behind it.
    let dependant = dep.job(MockJob::new(2)).dependency(hung.clone()).arm().unwrap().push();
    let innocent = other.job(MockJob::new(3)).arm().unwrap().push();
    assert_eq!(hung.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::TimedOut)));
    assert_eq!(dependant.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::TimedOut)));
    assert_eq!(innocent.wait_timeout(WATCHDOG), Ok(()));
    // The hardware did run all three (nothing was taken off it), in ring order.
    assert_eq!(s.backend().ring.completed_tags(), vec![1, 2, 3]);
    assert_eq!(s.stats().credits_in_flight, 0);
}

/// The dependant is still queued on the hardware when `fail_dependants` runs.
#[test]
fn without_resubmission_same_ring_dependants_of_the_guilty_fail() {
    same_ring_dependant_of_the_guilty_fails(Mode::NoResubmit);
}

/// Regression (found by the Vulkan fault suite): the hardware finished the dependant between the
/// stop and `fail_dependants` (the guilty job's hang was released first): it ran on the
/// guilty job's late results and must still end with its error, not `Ok` because its
/// hardware fence signalled.
#[test]
fn without_resubmission_a_dependant_the_hardware_finished_during_recovery_fails() {
    same_ring_dependant_of_the_guilty_fails(Mode::NoResubmitReleasedEarly);
}
