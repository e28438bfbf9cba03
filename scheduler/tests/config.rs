//! Configuration limits: every `SchedulerConfig` value either works or is refused with a
//! typed error; none aborts the process.

mod common;

// Allocation inside a signalling section is a checker violation (the contract forbids it).
#[global_allocator]
static ALLOC: gpusched::fence::lockdep::CheckingAllocator =
    gpusched::fence::lockdep::CheckingAllocator::new(std::alloc::System);

use std::time::Duration;

use common::{assert_no_checker_violations, job, wait};
use gpusched::fence::FenceError;
use gpusched::testing::{MockBehavior, MockRing};
use gpusched::{
    Entity, Policy, Priority, ResetDomain, SchedError, Scheduler, SchedulerConfig, Timeout,
};

/// The kernel's mock scheduler uses `U32_MAX` credits; storage must follow the jobs that
/// exist, not the limit (sizing lists by it asked for tens of GiB and aborted).
#[test]
fn the_largest_credit_limit_creates_a_scheduler_that_runs_jobs() {
    let s =
        Scheduler::new(MockRing::immediate(), SchedulerConfig::new("max").credit_limit(u32::MAX))
            .expect("u32::MAX credits is a valid limit");
    let e = Entity::new(&[&s], Priority::Normal).unwrap();
    let fences: Vec<_> = (0..100).map(|t| e.job(job(t)).arm().unwrap().push()).collect();
    for f in &fences {
        assert_eq!(wait(f), Ok(()));
    }
    // Jobs near the limit: credits add up without overflowing.
    let big = e.job(job(100)).credits(u32::MAX).arm().unwrap().push();
    let small = e.job(job(101)).credits(u32::MAX - 1).arm().unwrap().push();
    assert_eq!(wait(&big), Ok(()));
    assert_eq!(wait(&small), Ok(()));
    assert_eq!(s.backend().completed_tags().len(), 102);
    assert_eq!(s.stats().credits_in_flight, 0);
    assert_no_checker_violations();
}

fn refused(config: SchedulerConfig) -> SchedError {
    match Scheduler::new(MockRing::immediate(), config) {
        Ok(_) => panic!("an invalid configuration was accepted"),
        Err(e) => e,
    }
}

/// Every field's extremes: served, or refused with `InvalidConfig`.
#[test]
fn every_config_value_is_served_or_refused_with_a_typed_error() {
    let base = || SchedulerConfig::new("cfg");
    assert!(matches!(refused(base().credit_limit(0)), SchedError::InvalidConfig(_)));
    assert!(matches!(refused(base().timeout(Duration::ZERO)), SchedError::InvalidConfig(_)));
    assert!(matches!(refused(base().timeout(Duration::MAX)), SchedError::InvalidConfig(_)));
    let too_long = Timeout::MAX_DURATION + Duration::from_nanos(1);
    assert!(matches!(refused(base().timeout(too_long)), SchedError::InvalidConfig(_)));
    let served = [
        base().timeout(Timeout::MAX_DURATION),
        base().timeout(Duration::from_nanos(1)),
        base().no_timeout(),
        base().timeout(None),
        base().hang_limit(0),
        base().hang_limit(u32::MAX),
        base().credit_limit(1),
        base().policy(Policy::Fair).credit_limit(u32::MAX),
        SchedulerConfig::new("nul\0in the name"),
        SchedulerConfig::new(""),
    ];
    for config in served {
        let desc = format!("{config:?}");
        let s = Scheduler::new(MockRing::immediate(), config)
            .unwrap_or_else(|e| panic!("{desc} refused: {e}"));
        let e = Entity::new(&[&s], Priority::Normal).unwrap();
        assert_eq!(wait(&e.job(job(1)).arm().unwrap().push()), Ok(()), "{desc}");
    }
    assert_eq!(Timeout::from(None), Timeout::Never);
    assert_eq!(Timeout::from(Duration::from_secs(1)).duration(), Some(Duration::from_secs(1)));
    assert_no_checker_violations();
}

/// `Timeout::Never` (`MAX_SCHEDULE_TIMEOUT`): a hung job is never handed to the timeout
/// handler, while a scheduler of the same reset domain with a finite timeout still is.
#[test]
fn a_scheduler_without_timeout_never_runs_the_timeout_handler() {
    let domain = ResetDomain::new("never");
    let config = |name: &str| SchedulerConfig::new(name).reset_domain(&domain);
    let never = Scheduler::new(MockRing::manual(), config("never").no_timeout()).unwrap();
    let timed =
        Scheduler::new(MockRing::manual(), config("timed").timeout(Duration::from_millis(20)))
            .unwrap();
    assert_eq!(never.config().timeout, Timeout::Never);
    let hang = |s: &Scheduler<MockRing>| {
        let e = Entity::new(&[s], Priority::Normal).unwrap();
        e.job(job(1).behavior(MockBehavior::Hang)).arm().unwrap().push()
    };
    let (never_hang, timed_hang) = (hang(&never), hang(&timed));
    assert_eq!(wait(&timed_hang), Err(FenceError::TimedOut), "the domain's worker runs");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(never.backend().timeouts(), 0);
    assert!(!never_hang.is_signaled(), "no deadline was armed for it");
    never.backend().release_hangs();
    assert_eq!(wait(&never_hang), Ok(()));
    assert_eq!(timed.backend().timeouts(), 1);
    assert_no_checker_violations();
}
