//! Timeout-and-reset (TDR) recovery on a timed `MockRing`, timed from inside the backend: a
//! wrapper around the ring stamps when a job reaches the hardware (`run_job`), when the timeout
//! handler starts (`timedout_job`) and when its hardware reset returns, without allocating (the
//! handler runs in a signalling section).
//!
//! Each round pushes a job that hangs, then an innocent job from another entity that queues
//! behind it on the ring (credit limit 64: it reaches the hardware at once and stalls there).
//! With the scheduler's timeout at `T`:
//! - `timeout overshoot`: handler start − (hang's `run_job` + `T`), the TDR worker's lateness
//!   (baseline: 0, the configured deadline itself);
//! - `reset → innocent running`: handler start → the innocent job's resubmitted `run_job`
//!   (stop, blame, force-complete the guilty job, interrupt waits, ring reset, resubmit); its
//!   baseline is a job's push → `run_job` on an idle ring, the normal path to the hardware;
//! - `reset → innocent done`: handler start → the innocent job's hardware fence signalled.
//!
//! Printed as p50/p99 over the rounds. The Vulkan device-loss recovery time is measured by
//! the `vulkan` bench (it needs a Vulkan device and the backend's `fault-injection`).
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gpusched::fence::FenceError;
use gpusched::testing::{MockBehavior, MockJob, MockRing};
use gpusched::{
    Backend, Entity, JobInfo, Priority, Recovery, Scheduler, SchedulerConfig, TimeoutStatus,
};
use gpusched_benches::{metric, ns, percentile, test_mode};

/// The innocent job's tag.
const INNOCENT: u64 = 1;
/// The hung job's tag.
const HANG: u64 = 2;
/// A job pushed on an idle ring (the baseline).
const IDLE: u64 = 3;

/// A `MockRing` that stamps recovery milestones, as nanoseconds since `origin` (0 = not yet).
struct Stamped {
    ring: MockRing,
    origin: Instant,
    hang_ran: AtomicU64,
    innocent_ran: AtomicU64,
    idle_ran: AtomicU64,
    handler_start: AtomicU64,
}

impl Stamped {
    fn stamp(&self, at: &AtomicU64) {
        at.store(self.origin.elapsed().as_nanos() as u64 + 1, Ordering::Release);
    }

    fn read(&self, at: &AtomicU64) -> Instant {
        let v = at.load(Ordering::Acquire);
        assert_ne!(v, 0, "a recovery milestone was never reached");
        self.origin + Duration::from_nanos(v - 1)
    }

    fn clear(&self) {
        for a in [&self.hang_ran, &self.innocent_ran, &self.idle_ran, &self.handler_start] {
            a.store(0, Ordering::Release);
        }
    }
}

impl Backend for Stamped {
    type Job = MockJob;
    type Error = std::convert::Infallible;

    fn prepare_job(&self, job: &mut MockJob, info: &JobInfo) -> Result<(), Self::Error> {
        self.ring.prepare_job(job, info)
    }

    fn run_job(
        &self,
        job: &mut MockJob,
        info: &JobInfo,
    ) -> Result<gpusched::fence::Fence, FenceError> {
        match job.tag {
            HANG => self.stamp(&self.hang_ran),
            INNOCENT => self.stamp(&self.innocent_ran),
            IDLE => self.stamp(&self.idle_ran),
            _ => {}
        }
        self.ring.run_job(job, info)
    }

    fn timedout_job(&self, recovery: &mut Recovery<'_, Self>) -> TimeoutStatus {
        self.stamp(&self.handler_start);
        recovery.standard_reset(|| {
            self.ring.reset_hw();
            true
        })
    }

    fn free_job(&self, job: MockJob, info: &JobInfo) {
        self.ring.free_job(job, info)
    }
}

struct Round {
    overshoot: Duration,
    to_running: Duration,
    to_done: Duration,
    idle_push_to_run: Duration,
}

fn round(s: &Scheduler<Stamped>, client: &Entity<Stamped>, rogue: &Entity<Stamped>) -> Round {
    let b = s.backend();
    b.clear();
    let watchdog = Duration::from_secs(30);
    let hang = rogue.job(MockJob::new(HANG).behavior(MockBehavior::Hang)).arm().expect("arm");
    let innocent = client.job(MockJob::new(INNOCENT)).arm().expect("arm");
    let hang = hang.push();
    let innocent = innocent.push();
    let outcome = hang.wait_timeout(watchdog);
    assert!(
        matches!(outcome, Err(gpusched::fence::WaitError::Failed(FenceError::TimedOut))),
        "the hung job times out: {outcome:?}"
    );
    innocent.wait_timeout(watchdog).expect("the innocent job completes after the reset");
    let handler = b.read(&b.handler_start);
    let deadline = b.read(&b.hang_ran) + s.config().timeout.duration().expect("a finite timeout");
    let done = b
        .ring
        .completion_log()
        .iter()
        .rev()
        .find(|(tag, _)| *tag == INNOCENT)
        .map(|(_, at)| *at)
        .expect("the innocent job completed on the ring");
    // The baseline: a job pushed on the idle ring.
    let t = Instant::now();
    let idle = client.job(MockJob::new(IDLE)).arm().expect("arm").push();
    idle.wait_timeout(watchdog).expect("the idle-ring job completes");
    Round {
        overshoot: handler.saturating_duration_since(deadline),
        to_running: b.read(&b.innocent_ran).saturating_duration_since(handler),
        to_done: done.saturating_duration_since(handler),
        idle_push_to_run: b.read(&b.idle_ran).saturating_duration_since(t),
    }
}

fn bench_recovery(_: &mut Criterion) {
    let (rounds, timeouts): (usize, &[u64]) = if test_mode() { (2, &[2]) } else { (100, &[2, 20]) };
    for &ms in timeouts {
        let timeout = Duration::from_millis(ms);
        let config =
            SchedulerConfig::new("recovery").credit_limit(64).timeout(timeout).hang_limit(u32::MAX);
        let ring = Stamped {
            ring: MockRing::timed(),
            origin: Instant::now(),
            hang_ran: AtomicU64::new(0),
            innocent_ran: AtomicU64::new(0),
            idle_ran: AtomicU64::new(0),
            handler_start: AtomicU64::new(0),
        };
        let s = Scheduler::new(ring, config).expect("valid config");
        let client = Entity::new(&[&s], Priority::Normal).expect("entity");
        let rogue = Entity::new(&[&s], Priority::Normal).expect("entity");
        let rs: Vec<Round> = (0..rounds).map(|_| round(&s, &client, &rogue)).collect();
        assert_eq!(s.backend().ring.resets(), rounds as u64, "one ring reset per hang");
        let col = |f: fn(&Round) -> Duration| {
            let mut v: Vec<Duration> = rs.iter().map(f).collect();
            (percentile(&mut v, 0.5), percentile(&mut v, 0.99))
        };
        let over = col(|r| r.overshoot);
        let running = col(|r| r.to_running);
        let done = col(|r| r.to_done);
        let idle = col(|r| r.idle_push_to_run);
        println!(
            "recovery (timeout {ms} ms, {rounds} hangs): timeout overshoot p50 {:?} p99 {:?}; \
             reset start -> innocent running p50 {:?} p99 {:?}, -> innocent done p50 {:?} p99 \
             {:?}; idle-ring push -> run p50 {:?} p99 {:?}",
            over.0, over.1, running.0, running.1, done.0, done.1, idle.0, idle.1
        );
        for (name, (p50, p99)) in [
            ("overshoot", over),
            ("reset_to_running", running),
            ("reset_to_done", done),
            ("idle_push_to_run", idle),
        ] {
            metric(&format!("recovery.t{ms}ms.{name}.p50_ns"), ns(p50));
            metric(&format!("recovery.t{ms}ms.{name}.p99_ns"), ns(p99));
        }
    }
}

criterion_group!(benches, bench_recovery);
criterion_main!(benches);
