//! Entity operations of `sched_entity.c`: priority changes, scheduler-list changes, flush
//! and destroy.

mod common;

// Allocation inside a signalling section is a checker violation (the contract forbids it).
#[global_allocator]
static ALLOC: gpusched::fence::lockdep::CheckingAllocator =
    gpusched::fence::lockdep::CheckingAllocator::new(std::alloc::System);

use std::time::{Duration, Instant};

use common::{assert_no_checker_violations, job, sched, wait};
use gpusched::fence::{FenceError, WaitError};
use gpusched::testing::{MockBehavior, MockJob, MockRing};
use gpusched::{Entity, Policy, Priority, SchedError, Scheduler};

fn entity(s: &Scheduler<MockRing>, p: Priority) -> Entity<MockRing> {
    Entity::new(&[s], p).unwrap()
}

/// `drm_sched_entity_flush` waits until the queue is empty (the jobs were handed to the
/// ring), not until they finished: destroying an entity whose job runs long returns once it
/// is scheduled, and the job still completes normally.
#[test]
fn destroy_returns_once_the_queue_is_empty_and_the_running_job_completes() {
    let s = sched(MockRing::manual(), "ring", 4, Policy::Fifo);
    let e = entity(&s, Priority::Normal);
    let jobs: Vec<_> = (1..=3).map(|t| e.job(job(t)).arm().unwrap().push()).collect();
    let started = Instant::now();
    assert!(e.destroy(Duration::from_secs(5)), "every job was handed to the ring");
    assert!(started.elapsed() < Duration::from_secs(2), "destroy waited for completion");
    assert!(jobs.iter().all(|f| !f.is_signaled()), "the jobs are still on the ring");
    assert_eq!(s.backend().complete_all(), 3);
    for f in &jobs {
        assert_eq!(wait(f), Ok(()), "a job on the hardware finishes normally");
    }
    assert_eq!(s.backend().run_tags(), vec![1, 2, 3]);
    assert_no_checker_violations();
}

/// `flush` waits for the queue, `wait_idle` for the jobs; a queue blocked behind a hung job
/// times out, and destroy then kills what is left.
#[test]
fn flush_waits_for_the_queue_and_wait_idle_for_the_jobs() {
    let s = sched(MockRing::manual(), "ring", 1, Policy::Fifo);
    let e = entity(&s, Priority::Normal);
    assert_eq!(e.flush(Duration::from_millis(1)), Ok(()), "nothing pushed: flush is immediate");
    let running = e.job(job(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    assert_eq!(e.flush(Duration::from_millis(1)), Ok(()), "job 1 is on the ring");
    assert_eq!(e.wait_idle(Duration::from_millis(10)), Err(WaitError::Timeout));
    // Credit limit 1: job 2 stays queued behind the hang.
    let queued = e.job(job(2)).arm().unwrap().push();
    assert_eq!(e.flush(Duration::from_millis(10)), Err(WaitError::Timeout));
    assert!(!e.destroy(Duration::from_millis(10)), "the queue never emptied");
    s.backend().release_hangs();
    assert_eq!(wait(&running), Ok(()));
    assert_eq!(wait(&queued), Err(FenceError::Killed));
    assert_eq!(s.backend().run_tags(), vec![1]);
    assert_no_checker_violations();
}

/// `drm_sched_entity_set_priority`: the next selection uses the new priority; the entity's
/// queued jobs keep their order; later jobs carry it in their `JobInfo`.
#[test]
fn set_priority_takes_effect_at_the_next_selection_and_keeps_the_queue_order() {
    // Under `Fair` only `Kernel` is strictly first; the others share by virtual runtime.
    let cases = [
        (Policy::Fifo, Priority::High),
        (Policy::RoundRobin, Priority::High),
        (Policy::Fair, Priority::Kernel),
    ];
    for (policy, raised) in cases {
        let s = sched(MockRing::manual(), "ring", 1, policy);
        let normal = entity(&s, Priority::Normal);
        let low = entity(&s, Priority::Low);
        // The ring holds one job: everything else waits for selection.
        let first = normal.job(job(1)).arm().unwrap().push();
        let n2 = normal.job(job(2)).arm().unwrap().push();
        let lows: Vec<_> = (10..13).map(|t| low.job(job(t)).arm().unwrap().push()).collect();
        let armed_low = low.job(job(13)).arm().unwrap();
        assert_eq!(armed_low.info().priority, Priority::Low);
        low.set_priority(raised);
        assert_eq!(low.priority(), raised);
        let l4 = armed_low.push();
        let later = low.job(job(14)).arm().unwrap();
        assert_eq!(later.info().priority, raised);
        let l5 = later.push();
        while s.backend().complete_next() {}
        for f in [&first, &n2, &l4, &l5].into_iter().chain(&lows) {
            assert_eq!(wait(f), Ok(()));
        }
        assert_eq!(
            s.backend().run_tags(),
            vec![1, 10, 11, 12, 13, 14, 2],
            "{policy:?}: the raised entity runs first, its jobs in order"
        );
        // Lowered again: the other entity's work goes first (strict priorities only).
        if policy == Policy::Fair {
            continue;
        }
        low.set_priority(Priority::Low);
        let blocker = normal.job(job(20)).arm().unwrap().push();
        let l = low.job(job(21)).arm().unwrap().push();
        let n = normal.job(job(22)).arm().unwrap().push();
        while s.backend().complete_next() {}
        for f in [&blocker, &l, &n] {
            assert_eq!(wait(f), Ok(()));
        }
        assert_eq!(s.backend().run_tags()[7..], [20, 22, 21], "{policy:?}");
    }
    assert_no_checker_violations();
}

/// `drm_sched_entity_modify_sched`: the new list applies from the entity's next idle arm;
/// a busy entity stays on its ring, so its jobs never run out of order on two rings.
#[test]
fn modify_sched_moves_the_entity_only_once_its_last_job_finished() {
    let a = sched(MockRing::manual(), "a", 4, Policy::Fifo);
    let b = sched(MockRing::manual(), "b", 4, Policy::Fifo);
    let e = entity(&a, Priority::Normal);
    assert_eq!(e.modify_sched(&[]), Err(SchedError::NoSchedulers));
    let j1 = e.job(job(1)).arm().unwrap().push();
    assert_eq!(e.current_scheduler().as_deref(), Some("a"));
    e.modify_sched(&[&b]).unwrap();
    // Busy on `a`: the next job queues there, behind job 1.
    let j2 = e.job(job(2)).arm().unwrap().push();
    assert_eq!(e.current_scheduler().as_deref(), Some("a"));
    assert!(b.backend().run_tags().is_empty());
    assert_eq!(a.backend().complete_all(), 2);
    assert_eq!((wait(&j1), wait(&j2)), (Ok(()), Ok(())));
    // Idle: the next arm moves it to `b`.
    let j3 = e.job(job(3)).arm().unwrap().push();
    assert_eq!(e.current_scheduler().as_deref(), Some("b"));
    assert_eq!(a.stats().entities, 0, "the entity left `a`");
    assert_eq!(b.backend().complete_all(), 1);
    assert_eq!(wait(&j3), Ok(()));
    assert_eq!(a.backend().run_tags(), vec![1, 2]);
    assert_eq!(b.backend().run_tags(), vec![3]);
    // Several schedulers: an idle entity goes to the least loaded one.
    let busy = entity(&a, Priority::Normal);
    let hog = busy.job(MockJob::new(9)).arm().unwrap().push();
    e.modify_sched(&[&a, &b]).unwrap();
    let j4 = e.job(job(4)).arm().unwrap().push();
    assert_eq!(e.current_scheduler().as_deref(), Some("b"));
    assert_eq!(b.backend().complete_all(), 1);
    assert_eq!(a.backend().complete_all(), 1);
    assert_eq!((wait(&j4), wait(&hog)), (Ok(()), Ok(())));
    assert_eq!(e.finished_context(), e.finished_context());
    assert_eq!(e.stats().finished_ok, 4);
    assert_no_checker_violations();
}

/// A list whose schedulers are all gone refuses arms with `SchedulerGone` once the entity is
/// idle (it never runs on a scheduler outside its list).
#[test]
fn modify_sched_to_gone_schedulers_refuses_arms() {
    let a = sched(MockRing::immediate(), "a", 4, Policy::Fifo);
    let b = sched(MockRing::immediate(), "b", 4, Policy::Fifo);
    let e = entity(&a, Priority::Normal);
    assert_eq!(wait(&e.job(job(1)).arm().unwrap().push()), Ok(()));
    b.shutdown(FenceError::DeviceLost);
    e.modify_sched(&[&b]).unwrap();
    let err = e.job(job(2)).arm().unwrap_err();
    assert!(err.error.is_scheduler_gone(), "{:?}", err.error);
    assert_eq!(err.payload.tag, 2);
    assert_eq!(a.stats().entities, 0);
    e.modify_sched(&[&a]).unwrap();
    assert_eq!(wait(&e.job(job(3)).arm().unwrap().push()), Ok(()));
    assert_eq!(a.backend().run_tags(), vec![1, 3]);
    assert_no_checker_violations();
}
