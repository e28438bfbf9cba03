//! The scheduler and its TDR worker under the signalling-contract checker, with the checking
//! allocator installed: the whole signalling path (pump, run_job, completion, timeout,
//! reset, resubmission) allocates nothing and takes no `Resv` lock, and a backend that does
//! either in `timedout_job` is reported.

#![cfg(not(gpusched_loom))]

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::WATCHDOG;
use gpusched::fence::lockdep::{self, CheckingAllocator, Report, Rule};
use gpusched::fence::{Fence, FenceError, WaitError};
use gpusched::resv::Resv;
use gpusched::testing::{MockBehavior, MockJob, MockRing};
use gpusched::{Backend, Entity, Priority, Recovery, Scheduler, SchedulerConfig, TimeoutStatus};

#[global_allocator]
static ALLOC: CheckingAllocator = CheckingAllocator::new(std::alloc::System);

/// Wraps the mock ring; its timeout handler optionally misbehaves, capturing the reports.
struct Misbehaving {
    ring: MockRing,
    allocate: bool,
    lock_resv: Option<Resv>,
    reports: Mutex<Vec<Report>>,
}

impl Backend for Misbehaving {
    common::mock_ring_delegate!(free_job);

    fn timedout_job(&self, r: &mut Recovery<'_, Self>) -> TimeoutStatus {
        let ((), reports) = lockdep::capture(|| {
            if self.allocate {
                let v: Vec<u64> = Vec::with_capacity(128);
                drop(std::hint::black_box(v));
            }
            if let Some(resv) = &self.lock_resv {
                drop(resv.lock_no_ctx());
            }
        });
        // Keep the reports for the test; reporting itself is exempt from the checker.
        {
            let _nr = lockdep::no_reclaim();
            self.reports.lock().unwrap().extend(reports);
        }
        r.standard_reset(|| {
            self.ring.reset_hw();
            true
        })
    }
}

fn sched(allocate: bool, lock_resv: bool) -> Scheduler<Misbehaving> {
    let backend = Misbehaving {
        ring: MockRing::immediate(),
        allocate,
        lock_resv: lock_resv.then(Resv::new),
        reports: Mutex::new(Vec::new()),
    };
    Scheduler::new(
        backend,
        SchedulerConfig::new("checked").timeout(Duration::from_millis(30)).hang_limit(100),
    )
    .unwrap()
}

fn run_hangs(s: &Scheduler<Misbehaving>) {
    let e = Entity::new(&[s], Priority::Normal).unwrap();
    let other = Entity::new(&[s], Priority::High).unwrap();
    let mut fences = Vec::new();
    for t in 0..3 {
        fences.push((
            true,
            e.job(MockJob::new(t).behavior(MockBehavior::Hang)).arm().unwrap().push(),
        ));
        for u in 0..5 {
            let dep = fences.last().map(|(_, f): &(bool, Fence)| f.clone()).unwrap();
            let job = other.job(MockJob::new(100 + 10 * t + u)).dependency(dep).arm().unwrap();
            fences.push((false, job.push()));
        }
    }
    for (i, (hang, f)) in fences.iter().enumerate() {
        let r = f.wait_timeout(WATCHDOG);
        // The hung jobs time out. The first dependant waits on a hung job of its own ring,
        // so only until it is *scheduled*: it sits behind it on the ring, and after the reset
        // it is not rerun on the hung job's missing results but fails with its error. The
        // others depend on their own entity's previous job, which their FIFO orders (as in
        // the kernel, no error propagates along an entity's own timeline): resubmitted, they
        // complete.
        if *hang || fences[i - 1].0 {
            assert_eq!(r, Err(WaitError::Failed(FenceError::TimedOut)), "job {i}");
        } else {
            assert_eq!(r, Ok(()), "job {i}");
        }
    }
    let ok = other.job(MockJob::new(999)).arm().unwrap().push();
    assert_eq!(ok.wait_timeout(WATCHDOG), Ok(()));
}

#[test]
fn a_well_behaved_backend_recovers_without_any_violation() {
    let before = lockdep::violations();
    let s = sched(false, false);
    run_hangs(&s);
    assert!(s.backend().reports.lock().unwrap().is_empty());
    assert_eq!(lockdep::violations(), before, "{:#?}", lockdep::reports());
}

#[test]
fn allocation_in_timedout_job_is_reported() {
    let s = sched(true, false);
    run_hangs(&s);
    let reports = s.backend().reports.lock().unwrap();
    if lockdep::ENABLED {
        assert!(!reports.is_empty());
        assert!(reports.iter().all(|r| r.rule == Rule::ReclaimInSignalling), "{reports:#?}");
    }
}

#[test]
fn resv_lock_in_timedout_job_is_reported() {
    let s = sched(false, true);
    run_hangs(&s);
    let reports = s.backend().reports.lock().unwrap();
    if lockdep::ENABLED {
        assert!(!reports.is_empty());
        assert!(reports.iter().any(|r| r.to_string().contains("resv")), "{reports:#?}");
    }
}
