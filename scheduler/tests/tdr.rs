//! Timeout and reset (TDR) on the mock ring.

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
    assert!(!domain.interrupt_domain().is_interrupting());
    assert_eq!(domain.recoveries(), 1);
    let _ = Arc::new(());
}
