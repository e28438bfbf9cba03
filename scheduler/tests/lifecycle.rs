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
    // Teardown (`drm_sched_fini`) returns once every pushed job has signalled: the job on
    // the ring is cancelled through the backend, the queued ones after it.
    assert_eq!(on_ring.error(), Some(FenceError::Cancelled));
    for f in queued.iter().chain([&waiting]) {
        assert_eq!(f.error(), Some(FenceError::Cancelled));
    }
    assert_eq!(wait(&armed.push()), Err(FenceError::Cancelled));
    let err = e.job(job(8)).arm().unwrap_err();
    assert!(err.error.is_scheduler_gone(), "{:?}", err.error);
    assert_eq!(err.payload.tag, 8);
    drop(blocked_dep.1);
    assert_no_checker_violations();
}

#[test]
fn shutdown_cancels_the_ring_then_the_queue_in_timeline_order() {
    let s = sched(MockRing::manual(), "ring", 1, Policy::Fifo);
    let e = entity(&s);
    let on_ring = e.job(job(1)).arm().unwrap().push();
    let queued: Vec<_> = (2..4).map(|t| e.job(job(t)).arm().unwrap().push()).collect();
    s.shutdown(FenceError::DeviceLost);
    // Job 1 is cancelled on the ring with the shutdown's error, its queued successors after
    // it: the entity's timeline signals in order, all before `shutdown` returned.
    assert_eq!(on_ring.error(), Some(FenceError::DeviceLost));
    for f in &queued {
        assert_eq!(f.error(), Some(FenceError::DeviceLost));
    }
    assert!(on_ring.timestamp() <= queued[0].timestamp());
    assert_eq!(s.backend().run_tags(), vec![1]);
    assert_eq!(s.backend().cancelled_tags(), vec![1]);
    assert_eq!(s.backend().in_flight(), 0);
    assert!(!s.backend().complete_next(), "nothing is left on the ring");
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

/// `drm_sched_fini` with `cancel_job`: jobs on the ring (hung or not) are cancelled through
/// the backend, queued ones after them; jobs that finished first keep their real outcome.
#[test]
fn teardown_cancels_running_jobs_and_keeps_finished_outcomes() {
    let hw_error = FenceError::Driver(-5);
    let s = sched(MockRing::manual(), "ring", 8, Policy::Fifo);
    let (a, b) = (entity(&s), entity(&s));
    let done_ok = a.job(job(1)).arm().unwrap().push();
    let done_err = a.job(job(2).behavior(MockBehavior::Fail(hw_error))).arm().unwrap().push();
    assert_eq!(s.backend().complete_all(), 2);
    let hung = a.job(job(3).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let behind = a.job(job(4)).arm().unwrap().push();
    let never = gpusched::fence::FenceContext::new("never").next();
    let blocked = a.job(job(5)).dependency(never.0.clone()).arm().unwrap();
    let blocked_scheduled = blocked.scheduled().clone();
    let blocked = blocked.push();
    let other = b.job(job(6)).arm().unwrap().push();
    let too_big = b.job(job(7)).credits(8).arm().unwrap().push();
    s.shutdown(FenceError::Cancelled);
    assert_eq!(done_ok.error(), None);
    assert!(done_ok.is_signaled());
    assert_eq!(done_err.error(), Some(hw_error));
    for f in [&hung, &behind, &other, &blocked, &too_big, &blocked_scheduled] {
        assert_eq!(f.error(), Some(FenceError::Cancelled), "{}", f.seqno());
    }
    assert_eq!(s.backend().cancelled_tags(), vec![3, 4, 6], "ring order");
    assert_eq!(s.backend().run_tags(), vec![1, 2, 3, 4, 6]);
    assert_eq!(s.backend().in_flight(), 0);
    let st = s.stats();
    assert_eq!((st.finished_ok, st.finished_err, st.cancelled), (1, 4, 2));
    assert_eq!((st.credits_in_flight, st.queued), (0, 0));
    // Idempotent; the first error stays.
    s.shutdown(FenceError::DeviceLost);
    assert_eq!(hung.error(), Some(FenceError::Cancelled));
    drop(never.1);
    assert_no_checker_violations();
}

/// A backend without `cancel_running`: the scheduler signals the finished fences of the
/// jobs on the ring itself, and frees their payloads only once the hardware is done.
#[test]
fn teardown_without_cancel_running_keeps_payloads_until_the_hardware_is_done() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use gpusched::{Backend, JobInfo, Recovery, TimeoutStatus};

    struct NoCancel {
        ring: Arc<MockRing>,
        freed: Arc<AtomicUsize>,
    }
    impl Backend for NoCancel {
        crate::common::mock_ring_delegate!();
        fn timedout_job(&self, recovery: &mut Recovery<'_, Self>) -> TimeoutStatus {
            recovery.standard_reset(|| {
                self.ring.reset_hw();
                true
            })
        }
        fn free_job(&self, job: MockJob, info: &JobInfo) {
            self.freed.fetch_add(1, Ordering::AcqRel);
            self.ring.free_job(job, info);
        }
    }

    let ring = Arc::new(MockRing::manual());
    let freed = Arc::new(AtomicUsize::new(0));
    let backend = NoCancel { ring: ring.clone(), freed: freed.clone() };
    let s = Scheduler::new(backend, gpusched::SchedulerConfig::new("nocancel")).unwrap();
    let e = Entity::new(&[&s], Priority::Normal).unwrap();
    let hung = e.job(job(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let never = gpusched::fence::FenceContext::new("never").next();
    let queued = e.job(job(2)).dependency(never.0.clone()).arm().unwrap().push();
    drop(s);
    assert_eq!(hung.error(), Some(FenceError::Cancelled));
    assert_eq!(queued.error(), Some(FenceError::Cancelled));
    assert_eq!(freed.load(Ordering::Acquire), 1, "only the job that never ran is freed");
    assert_eq!(ring.in_flight(), 1, "the hardware still has job 1");
    ring.release_hangs();
    wait_until("the payload freed after the hardware", || freed.load(Ordering::Acquire) == 2);
    assert_eq!(hung.error(), Some(FenceError::Cancelled), "signalled once");
    drop(never.1);
    assert_no_checker_violations();
}

/// The last handle dropped inside a finished-fence callback, on the ring's completion thread
/// while it retires that job: teardown must not wait for the retirement this thread is in
/// the middle of; the job behind it on the ring is cancelled all the same.
#[test]
fn the_last_handle_dropped_in_a_completion_callback_tears_down_without_deadlock() {
    use std::sync::{Arc, Mutex};

    let s = sched(MockRing::timed(), "ring", 4, Policy::Fifo);
    let e = entity(&s);
    let other = entity(&s);
    let first = e.job(job(1).duration(Duration::from_millis(30))).arm().unwrap();
    let first_done = first.finished().clone();
    let handle = Arc::new(Mutex::new(None));
    let h = handle.clone();
    first_done
        .add_callback(move |_| drop(h.lock().unwrap_or_else(|p| p.into_inner()).take()))
        .unwrap();
    let second = e.job(job(2).behavior(MockBehavior::Hang)).arm().unwrap();
    let third = other.job(job(3)).arm().unwrap();
    // From here the only handle is in the callback's reach.
    *handle.lock().unwrap() = Some(s);
    first.push();
    let (second, third) = (second.push(), third.push());
    assert_eq!(wait(&first_done), Ok(()));
    assert_eq!(wait(&second), Err(FenceError::Cancelled), "teardown deadlocked or left it");
    assert_eq!(wait(&third), Err(FenceError::Cancelled));
    assert!(handle.lock().unwrap().is_none());
    assert_no_checker_violations();
}
