//! Configuration limits: every `SchedulerConfig` value either works or is refused with a
//! typed error; none aborts the process.

mod common;

// Allocation inside a signalling section is a checker violation (the contract forbids it).
#[global_allocator]
static ALLOC: gpusched::fence::lockdep::CheckingAllocator =
    gpusched::fence::lockdep::CheckingAllocator::new(std::alloc::System);

use common::{assert_no_checker_violations, job, wait};
use gpusched::testing::MockRing;
use gpusched::{Entity, Priority, Scheduler, SchedulerConfig};

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
