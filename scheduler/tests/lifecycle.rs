//! Entity flush and kill, dropped armed jobs, scheduler shutdown and drop: every fence
//! handed out signals, with the documented error.

mod common;

// Allocation inside a signalling section is a checker violation (the contract forbids it).
#[global_allocator]
static ALLOC: gpusched::fence::lockdep::CheckingAllocator =
    gpusched::fence::lockdep::CheckingAllocator::new(std::alloc::System);

use std::time::Duration;

use common::{assert_no_checker_violations, job, sched, wait, wait_until};
use gpusched::fence::{FenceError, WaitError};
use gpusched::testing::{MockBehavior, MockJob, MockRing};
use gpusched::{Entity, Policy, Priority, SchedError, Scheduler};

fn entity(s: &Scheduler<MockRing>) -> Entity<MockRing> {
    Entity::new(&[s], Priority::Normal).unwrap()
}

#[test]
fn wait_idle_waits_for_every_armed_job_and_times_out_on_a_hang() {
    let s = sched(MockRing::timed(), "ring", 2, Policy::Fifo);
    let e = entity(&s);
    assert_eq!(e.wait_idle(Duration::from_millis(1)), Ok(()), "nothing armed: it is immediate");
    let fences: Vec<_> = (0..5)
        .map(|t| e.job(MockJob::new(t).duration(Duration::from_millis(2))).arm().unwrap().push())
        .collect();
    e.wait_idle(common::WATCHDOG).unwrap();
    assert!(fences.iter().all(|f| f.is_signaled() && f.error().is_none()));

    let hang = e.job(job(9).behavior(MockBehavior::Hang)).arm().unwrap().push();
    assert_eq!(e.wait_idle(Duration::from_millis(20)), Err(WaitError::Timeout));
    s.backend().release_hangs();
    e.wait_idle(common::WATCHDOG).unwrap();
    assert_eq!(hang.error(), None);
    assert_no_checker_violations();
}

#[test]
fn kill_ends_queued_jobs_with_killed_and_refuses_later_arms() {
    let s = sched(MockRing::manual(), "ring", 1, Policy::Fifo);
    let e = entity(&s);
    let other = entity(&s);
    let running = e.job(job(1)).arm().unwrap().push();
    let queued: Vec<_> = (2..5).map(|t| e.job(job(t)).arm().unwrap()).collect();
    let scheduled: Vec<_> = queued.iter().map(|j| j.scheduled().clone()).collect();
    let queued: Vec<_> = queued.into_iter().map(|j| j.push()).collect();
    let bystander = other.job(job(50)).arm().unwrap().push();
    let armed = e.job(job(5)).arm().unwrap();
    e.kill();
    assert_eq!(e.stopped(), Some(FenceError::Killed));
    // The job on the hardware finishes normally.
    assert!(s.backend().complete_next());
    assert_eq!(wait(&running), Ok(()));
    for (f, sf) in queued.iter().zip(&scheduled) {
        assert_eq!(wait(f), Err(FenceError::Killed));
        assert_eq!(wait(sf), Err(FenceError::Killed));
    }
    // A job armed before the kill and pushed after it ends Killed too, without running.
    assert_eq!(wait(&armed.push()), Err(FenceError::Killed));
    let err = e.job(job(6)).arm().unwrap_err();
    assert_eq!(err.error, SchedError::EntityStopped(FenceError::Killed));
    assert!(err.error.is_entity_stopped());
    assert_eq!(err.payload.tag, 6);
    // Other entities are unaffected.
    assert!(s.backend().complete_next());
    wait(&bystander).unwrap();
    assert_eq!(s.backend().run_tags(), vec![1, 50]);
    wait_until("counters", || s.stats().cancelled == 4);
    assert_no_checker_violations();
}

#[test]
fn destroy_flushes_then_kills() {
    let s = sched(MockRing::manual(), "ring", 1, Policy::Fifo);
    let e = entity(&s);
    let a = e.job(job(1)).arm().unwrap().push();
    let b = e.job(job(2)).arm().unwrap().push();
    assert!(!e.destroy(Duration::from_millis(10)), "the manual ring never completed job 1");
    assert!(s.backend().complete_next());
    assert_eq!(wait(&a), Ok(()));
    assert_eq!(wait(&b), Err(FenceError::Killed));
    assert_eq!(s.backend().run_tags(), vec![1]);
    assert_no_checker_violations();
}

#[test]
fn dropping_an_armed_job_cancels_it_and_the_scheduler_goes_on() {
    let s = sched(MockRing::immediate(), "ring", 4, Policy::Fifo);
    let e = entity(&s);
    let dropped = e.job(job(1)).arm().unwrap();
    let (finished, scheduled) = (dropped.finished().clone(), dropped.scheduled().clone());
    drop(dropped);
    assert_eq!(finished.error(), Some(FenceError::Cancelled));
    assert_eq!(scheduled.error(), Some(FenceError::Cancelled));
    // The entity and its queue reservation are intact: many more jobs run fine.
    for t in 2..40 {
        let j = e.job(job(t)).arm().unwrap();
        if t % 3 == 0 {
            drop(j);
        } else {
            wait(&j.push()).unwrap();
        }
    }
    let ran = s.backend().run_tags();
    assert!(!ran.contains(&1) && ran.iter().all(|t| t % 3 != 0));
    assert_eq!(ran.len(), 25);
    e.wait_idle(common::WATCHDOG).unwrap();
    wait_until("counters", || s.stats().cancelled == 14 && e.stats().finished_err == 14);
    assert_no_checker_violations();
}

#[test]
fn dropping_the_scheduler_cancels_queued_work_and_refuses_new_work() {
    let s = sched(MockRing::manual(), "ring", 1, Policy::Fifo);
    let e = entity(&s);
    let blocked_dep = gpusched::fence::FenceContext::new("never").next();
    // Another entity's job occupies the ring (credit limit 1); `e`'s jobs are all queued.
    let e0 = entity(&s);
    let on_ring = e0.job(job(1)).arm().unwrap().push();
    let queued: Vec<_> = (2..6).map(|t| e.job(job(t)).arm().unwrap().push()).collect();
    let other = entity(&s);
    let waiting = other.job(job(9)).dependency(blocked_dep.0.clone()).arm().unwrap().push();
    let armed = e.job(job(7)).arm().unwrap();
    drop(s);
    for f in queued.iter().chain([&waiting]) {
        assert_eq!(wait(f), Err(FenceError::Cancelled));
    }
    assert_eq!(wait(&armed.push()), Err(FenceError::Cancelled));
    let err = e.job(job(8)).arm().unwrap_err();
    assert!(err.error.is_scheduler_gone(), "{:?}", err.error);
    assert_eq!(err.payload.tag, 8);
    // The job on the hardware is the hardware's: it finishes when the ring does (never, for
    // this manual ring nobody drives any more).
    assert!(!on_ring.is_signaled());
    drop(blocked_dep.1);
    assert_no_checker_violations();
}

#[test]
fn shutdown_cancels_queued_jobs_and_lets_the_ring_finish() {
    let s = sched(MockRing::manual(), "ring", 1, Policy::Fifo);
    let e = entity(&s);
    let on_ring = e.job(job(1)).arm().unwrap().push();
    let queued: Vec<_> = (2..4).map(|t| e.job(job(t)).arm().unwrap().push()).collect();
    s.shutdown(FenceError::DeviceLost);
    // The entity's timeline signals in order: its queued jobs end only after job 1, which
    // is on the hardware and finishes when the ring does.
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(queued.iter().all(|f| !f.is_signaled()));
    assert!(s.backend().complete_next());
    assert_eq!(wait(&on_ring), Ok(()));
    for f in &queued {
        assert_eq!(wait(f), Err(FenceError::DeviceLost));
    }
    assert!(on_ring.timestamp() <= queued[0].timestamp());
    assert_eq!(s.backend().run_tags(), vec![1]);
    let err = e.job(job(4)).arm().unwrap_err();
    assert_eq!(
        err.error,
        SchedError::SchedulerGone { scheduler: "ring".into(), error: FenceError::DeviceLost }
    );
    assert_no_checker_violations();
}

#[test]
fn entity_dropped_with_work_lets_it_finish() {
    let s = sched(MockRing::manual(), "ring", 2, Policy::Fifo);
    let e = entity(&s);
    let fences: Vec<_> = (0..4).map(|t| e.job(job(t)).arm().unwrap().push()).collect();
    drop(e);
    while s.backend().complete_next() {}
    for f in &fences {
        wait(f).unwrap();
    }
    assert_eq!(s.backend().completed_tags(), vec![0, 1, 2, 3]);
    assert_no_checker_violations();
}

/// Fences of one context signal in seqno order: a job that ends without running (killed,
/// dropped, failed dependency) waits for the entity's job still on the hardware.
#[test]
fn jobs_ending_without_running_signal_after_the_entitys_earlier_jobs() {
    let s = sched(MockRing::manual(), "ring", 1, Policy::Fifo);
    let in_order = |a: &gpusched::fence::Fence, b: &gpusched::fence::Fence| {
        assert!(a.timestamp().unwrap() <= b.timestamp().unwrap(), "signalled out of order");
    };

    let e = entity(&s);
    let running = e.job(job(1)).arm().unwrap().push();
    let killed = e.job(job(2)).arm().unwrap().push();
    e.kill();
    assert!(!killed.is_signaled(), "killed job signalled before the job ahead of it");
    assert!(s.backend().complete_next());
    assert_eq!(wait(&running), Ok(()));
    assert_eq!(wait(&killed), Err(FenceError::Killed));
    in_order(&running, &killed);

    let e = entity(&s);
    let running = e.job(job(3)).arm().unwrap().push();
    let dropped = e.job(job(4)).arm().unwrap();
    let dropped_fence = dropped.finished().clone();
    drop(dropped);
    assert!(!dropped_fence.is_signaled(), "dropped job signalled before the job ahead of it");
    let after = e.job(job(5)).arm().unwrap().push();
    assert!(s.backend().complete_next());
    assert_eq!(wait(&running), Ok(()));
    assert_eq!(wait(&dropped_fence), Err(FenceError::Cancelled));
    in_order(&running, &dropped_fence);
    assert!(s.backend().complete_next());
    assert_eq!(wait(&after), Ok(()));
    in_order(&dropped_fence, &after);

    let e = entity(&s);
    let running = e.job(job(6)).arm().unwrap().push();
    let (dep, sig) = gpusched::fence::FenceContext::new("dep").next();
    let failed = e.job(job(7)).dependency(dep).arm().unwrap().push();
    sig.signal_error(FenceError::Driver(-1));
    assert!(!failed.is_signaled(), "dependency failure signalled before the job ahead of it");
    assert!(s.backend().complete_next());
    assert_eq!(wait(&running), Ok(()));
    assert_eq!(wait(&failed), Err(FenceError::Driver(-1)));
    in_order(&running, &failed);
    assert_eq!(s.backend().run_tags(), vec![1, 3, 5, 6]);
    assert_no_checker_violations();
}

#[test]
fn a_dropped_entity_leaves_the_scheduler_when_its_last_job_ends() {
    let s = sched(MockRing::manual(), "ring", 4, Policy::Fifo);
    let e = entity(&s);
    let fences: Vec<_> = (0..3).map(|t| e.job(job(t)).arm().unwrap().push()).collect();
    assert_eq!(s.stats().entities, 1);
    drop(e);
    assert_eq!(s.stats().entities, 1, "its jobs are still on the ring");
    assert_eq!(s.backend().complete_all(), 3);
    for f in &fences {
        assert_eq!(wait(f), Ok(()));
    }
    wait_until("the entity left", || s.stats().entities == 0);
    let idle = entity(&s);
    let done = idle.job(job(9)).arm().unwrap().push();
    s.backend().complete_all();
    assert_eq!(wait(&done), Ok(()));
    drop(idle);
    assert_eq!(s.stats().entities, 0, "an idle entity leaves at once");
    assert_no_checker_violations();
}

#[test]
#[should_panic(expected = "must be pushed (or dropped) in the order they were armed")]
fn pushing_out_of_arm_order_is_a_clear_panic() {
    let s = sched(MockRing::immediate(), "ring", 4, Policy::Fifo);
    let e = entity(&s);
    let first = e.job(job(1)).arm().unwrap();
    let second = e.job(job(2)).arm().unwrap();
    second.push();
    first.push();
}
