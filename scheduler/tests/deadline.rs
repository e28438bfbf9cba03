//! Deadline hints through the scheduler: a deadline set on a job's finished fence reaches its
//! hardware fence (`drm_sched_fence_set_deadline_finished`), before or while it runs,
//! allocation-free.

mod common;

// Allocation inside a signalling section is a checker violation (the contract forbids it).
#[global_allocator]
static ALLOC: gpusched::fence::lockdep::CheckingAllocator =
    gpusched::fence::lockdep::CheckingAllocator::new(std::alloc::System);

use std::time::{Duration, Instant};

use common::{assert_no_checker_violations, job, sched, wait, wait_until};
use gpusched::fence::{lockdep, Fence, FenceArray, FenceError};
use gpusched::testing::{MockBehavior, MockJob, MockRing};
use gpusched::{Entity, Policy, Priority, Scheduler, SchedulerConfig};

fn entity(s: &Scheduler<MockRing>) -> Entity<MockRing> {
    Entity::new(&[s], Priority::Normal).unwrap()
}

/// The hardware fences on the ring, once `n` jobs are there.
fn hw_fences(s: &Scheduler<MockRing>, n: usize) -> Vec<Fence> {
    wait_until("jobs on the ring", || s.pending_hw_fences().len() == n);
    s.pending_hw_fences()
}

/// Sets `d` on `f` inside a signalling section: the checker (and the checking allocator)
/// report any allocation, wait or `Resv` lock on the way.
fn set_in_section(f: &Fence, d: Instant) {
    let _section = lockdep::signalling_section();
    f.set_deadline(d);
}

#[test]
fn deadline_set_before_push_reaches_the_hw_fence_when_the_job_runs() {
    let s = sched(MockRing::manual(), "ring", 4, Policy::Fifo);
    let e = entity(&s);
    let armed = e.job(job(1)).arm().unwrap();
    let d = Instant::now() + Duration::from_millis(5);
    set_in_section(armed.finished(), d);
    let finished = armed.push();
    let hw = hw_fences(&s, 1);
    assert_eq!(hw[0].deadline(), Some(d), "forwarded by the run path");
    assert_eq!(finished.deadline(), Some(d));
    s.backend().complete_all();
    wait(&finished).unwrap();
    assert_no_checker_violations();
}

#[test]
fn deadline_set_while_running_reaches_the_hw_fence_at_once_and_the_earliest_wins() {
    let s = sched(MockRing::manual(), "ring", 4, Policy::Fifo);
    let e = entity(&s);
    let finished = e.job(job(1)).arm().unwrap().push();
    let hw = hw_fences(&s, 1);
    assert_eq!(hw[0].deadline(), None);
    let now = Instant::now();
    let late = now + Duration::from_millis(20);
    let early = now + Duration::from_millis(3);
    set_in_section(&finished, late);
    assert_eq!(hw[0].deadline(), Some(late), "forwarded by the finished context's hook");
    set_in_section(&finished, early);
    assert_eq!(hw[0].deadline(), Some(early));
    set_in_section(&finished, now + Duration::from_millis(10));
    assert_eq!(hw[0].deadline(), Some(early), "a later deadline does not replace an earlier");
    assert_eq!(finished.deadline(), Some(early));
    s.backend().complete_all();
    wait(&finished).unwrap();
    assert_no_checker_violations();
}

#[test]
fn deadline_on_a_finished_job_is_a_no_op() {
    let s = sched(MockRing::immediate(), "ring", 4, Policy::Fifo);
    let e = entity(&s);
    let finished = e.job(job(1)).arm().unwrap().push();
    wait(&finished).unwrap();
    set_in_section(&finished, Instant::now() + Duration::from_millis(1));
    assert_eq!(finished.deadline(), None);
    assert!(s.pending_hw_fences().is_empty());
    assert_no_checker_violations();
}

#[test]
fn deadline_on_an_array_of_finished_fences_reaches_every_job() {
    // Credits for two jobs: the third waits in its queue and gets the deadline when it runs.
    let s = sched(MockRing::manual(), "ring", 2, Policy::Fifo);
    let (a, b) = (entity(&s), entity(&s));
    let fa = a.job(job(1)).arm().unwrap().push();
    let fb = b.job(job(2)).arm().unwrap().push();
    let fc = a.job(job(3)).arm().unwrap().push();
    let running = hw_fences(&s, 2);
    let array = FenceArray::all([fa.clone(), fb.clone(), fc.clone()]);
    let d = Instant::now() + Duration::from_millis(7);
    set_in_section(&array, d);
    for hw in &running {
        assert_eq!(hw.deadline(), Some(d), "a running member's hardware fence");
    }
    assert_eq!(fc.deadline(), Some(d));
    assert!(s.backend().complete_next());
    let third = hw_fences(&s, 2);
    assert!(third[0].ptr_eq(&running[1]), "the first job left the ring, the second stays");
    assert_eq!(third[1].deadline(), Some(d), "the queued member got it when it ran");
    s.backend().complete_all();
    for f in [&fa, &fb, &fc, &array] {
        wait(f).unwrap();
    }
    assert_no_checker_violations();
}

#[test]
fn deadline_set_concurrently_with_run_job_is_not_lost() {
    let s = sched(MockRing::manual(), "ring", 1024, Policy::Fifo);
    let e = entity(&s);
    let d = Instant::now() + Duration::from_secs(1);
    for i in 0..200 {
        let armed = e.job(job(i)).arm().unwrap();
        let finished = armed.finished().clone();
        std::thread::scope(|scope| {
            scope.spawn(|| set_in_section(&finished, d));
            armed.push();
        });
        let hw = hw_fences(&s, 1);
        assert_eq!(hw[0].deadline(), Some(d), "job {i}");
        s.backend().complete_all();
        wait(&finished).unwrap();
    }
    assert_no_checker_violations();
}

#[test]
fn a_resubmitted_job_s_new_hw_fence_gets_the_deadline() {
    let config = SchedulerConfig::new("ring").timeout(Duration::from_millis(300));
    let s = Scheduler::new(MockRing::manual(), config).unwrap();
    let (bad, good) = (entity(&s), entity(&s));
    let hung = bad.job(MockJob::new(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let innocent = good.job(job(2)).arm().unwrap().push();
    let before = hw_fences(&s, 2);
    let d = Instant::now() + Duration::from_millis(2);
    innocent.set_deadline(d);
    assert_eq!(before[1].deadline(), Some(d));
    // The hang times out; the reset resubmits the innocent job with a new hardware fence.
    assert_eq!(wait(&hung), Err(FenceError::TimedOut));
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let now = s.pending_hw_fences();
        if now.len() == 1 && !now[0].ptr_eq(&before[1]) && now[0].deadline() == Some(d) {
            break;
        }
        assert!(Instant::now() < end, "the resubmitted job's hardware fence has no deadline");
        std::thread::sleep(Duration::from_millis(1));
    }
    s.backend().complete_all();
    wait(&innocent).unwrap();
    assert_no_checker_violations();
}
