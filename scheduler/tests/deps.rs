//! Dependencies: explicit chains across entities and schedulers, the same-scheduler
//! shortcut, implicit dependencies through `Resv`, failed dependencies, load balancing.

mod common;

// Allocation inside a signalling section is a checker violation (the contract forbids it).
#[global_allocator]
static ALLOC: gpusched::fence::lockdep::CheckingAllocator =
    gpusched::fence::lockdep::CheckingAllocator::new(std::alloc::System);

use common::{assert_no_checker_violations, job, sched, wait, wait_until};
use gpusched::fence::{FenceContext, FenceError};
use gpusched::resv::{Resv, Usage};
use gpusched::testing::{MockBehavior, MockJob, MockRing};
use gpusched::{Access, Entity, Policy, Priority, Scheduler};

fn entity(s: &[&Scheduler<MockRing>]) -> Entity<MockRing> {
    Entity::new(s, Priority::Normal).unwrap()
}

#[test]
fn chain_across_entities_on_one_timed_ring() {
    let s = sched(MockRing::timed(), "ring", 8, Policy::Fifo);
    let es: Vec<_> = (0..4).map(|_| entity(&[&s])).collect();
    let mut prev = None;
    let mut fences = Vec::new();
    for i in 0..40u64 {
        let e = &es[(i % 4) as usize];
        let mut b = e.job(MockJob::new(i).duration(std::time::Duration::from_micros(100)));
        if let Some(p) = prev.take() {
            b = b.dependency(p);
        }
        let f = b.arm().unwrap().push();
        prev = Some(f.clone());
        fences.push(f);
    }
    for f in &fences {
        wait(f).unwrap();
    }
    assert_eq!(s.backend().completed_tags(), (0..40).collect::<Vec<_>>());
    assert_no_checker_violations();
}

#[test]
fn chain_across_schedulers_waits_for_completion() {
    let s1 = sched(MockRing::manual(), "s1", 8, Policy::Fifo);
    let s2 = sched(MockRing::manual(), "s2", 8, Policy::Fifo);
    let (e1, e2) = (entity(&[&s1]), entity(&[&s2]));
    let a = e1.job(job(1)).arm().unwrap().push();
    let b = e2.job(job(2)).dependency(a.clone()).arm().unwrap().push();
    let c = e1.job(job(3)).dependency(b.clone()).arm().unwrap().push();
    assert_eq!(s1.backend().run_tags(), vec![1]);
    assert!(s2.backend().run_tags().is_empty(), "B ran before A completed");
    assert!(s1.backend().complete_next());
    wait(&a).unwrap();
    assert_eq!(s2.backend().run_tags(), vec![2], "A's completion pumps the other scheduler");
    assert_eq!(s1.backend().run_tags(), vec![1], "C waits for B on the other ring");
    assert!(s2.backend().complete_next());
    wait(&b).unwrap();
    assert_eq!(s1.backend().run_tags(), vec![1, 3]);
    assert!(s1.backend().complete_next());
    wait(&c).unwrap();
    assert_no_checker_violations();
}

#[test]
fn same_scheduler_dependency_only_waits_until_scheduled() {
    let s = sched(MockRing::manual(), "ring", 8, Policy::Fifo);
    let (e1, e2) = (entity(&[&s]), entity(&[&s]));
    let a = e1.job(job(1)).arm().unwrap();
    let a_done = a.finished().clone();
    let b = e2.job(job(2)).dependency(a_done.clone()).arm().unwrap().push();
    assert!(s.backend().run_tags().is_empty(), "B must wait until A is scheduled");
    a.push();
    assert_eq!(s.backend().run_tags(), vec![1, 2], "B is handed to the ring behind A");
    assert!(!a_done.is_signaled());
    assert_eq!(s.backend().complete_all(), 2);
    wait(&b).unwrap();
    assert_eq!(s.backend().completed_tags(), vec![1, 2]);
    assert_no_checker_violations();
}

/// A dropped (cancelled) armed job that a same-scheduler job depends on: the dependent job
/// must end with the error, not stay queued until some unrelated pump.
#[test]
fn same_scheduler_dependency_on_a_dropped_job_fails_the_dependent() {
    let s = sched(MockRing::manual(), "ring", 8, Policy::Fifo);
    let (e1, e2) = (entity(&[&s]), entity(&[&s]));
    let a = e1.job(job(1)).arm().unwrap();
    let b = e2.job(job(2)).dependency(a.finished().clone()).arm().unwrap().push();
    drop(a);
    assert_eq!(wait(&b), Err(FenceError::Cancelled));
    assert!(s.backend().run_tags().is_empty());
    assert_no_checker_violations();
}

#[test]
fn resv_readers_wait_for_writers_and_writers_for_everyone() {
    let s1 = sched(MockRing::manual(), "s1", 8, Policy::Fifo);
    let s2 = sched(MockRing::manual(), "s2", 8, Policy::Fifo);
    let (w_ent, r_ent, r2_ent) = (entity(&[&s1]), entity(&[&s2]), entity(&[&s1]));
    let bo = Resv::new();

    // Writer W on s1.
    let w = {
        let mut g = bo.lock_no_ctx();
        let w = w_ent.job(job(1)).resv_dependencies(&g, Access::Write).arm().unwrap();
        g.reserve_fences(1).unwrap();
        g.add_fence(w.finished().clone(), Usage::Write);
        w.push()
    };
    // Reader R on s2 waits for W.
    let r = {
        let mut g = bo.lock_no_ctx();
        let r = r_ent.job(job(2)).resv_dependencies(&g, Access::Read).arm().unwrap();
        g.reserve_fences(1).unwrap();
        g.add_fence(r.finished().clone(), Usage::Read);
        r.push()
    };
    assert!(s2.backend().run_tags().is_empty(), "reader ran before the writer completed");
    assert!(s1.backend().complete_next());
    wait(&w).unwrap();
    assert_eq!(s2.backend().run_tags(), vec![2]);

    // A second reader on s1 does not wait for the first reader.
    let r2 = {
        let mut g = bo.lock_no_ctx();
        let r2 = r2_ent.job(job(3)).resv_dependencies(&g, Access::Read).arm().unwrap();
        g.reserve_fences(1).unwrap();
        g.add_fence(r2.finished().clone(), Usage::Read);
        r2.push()
    };
    assert_eq!(s1.backend().run_tags(), vec![1, 3], "readers do not wait for readers");
    // A writer on s1 waits for both readers (R on s2 still pending).
    let w2 = {
        let mut g = bo.lock_no_ctx();
        let w2 = w_ent.job(job(4)).resv_dependencies(&g, Access::Write).arm().unwrap();
        g.reserve_fences(1).unwrap();
        g.add_fence(w2.finished().clone(), Usage::Write);
        w2.push()
    };
    // R2 is on s1 (same-scheduler shortcut: scheduled is enough), R on s2 is not.
    assert_eq!(s1.backend().run_tags(), vec![1, 3], "writer ran before a reader completed");
    assert!(s2.backend().complete_next());
    wait(&r).unwrap();
    assert_eq!(s1.backend().run_tags(), vec![1, 3, 4]);
    assert_eq!(s1.backend().complete_all(), 2);
    wait(&r2).unwrap();
    wait(&w2).unwrap();
    assert_no_checker_violations();
}

#[test]
fn failed_dependency_fails_the_job_without_running_it() {
    let s = sched(MockRing::manual(), "ring", 8, Policy::Fifo);
    let e = entity(&[&s]);
    let ctx = FenceContext::new("external");
    let (dep, sig) = ctx.next();
    let j = e.job(job(1)).dependency(dep).arm().unwrap();
    let scheduled = j.scheduled().clone();
    let f = j.push();
    let after = e.job(job(2)).arm().unwrap().push();
    assert!(s.backend().run_tags().is_empty(), "FIFO: job 2 waits behind the blocked job 1");
    sig.signal_error(FenceError::Driver(-22));
    assert_eq!(wait(&f), Err(FenceError::Driver(-22)));
    assert_eq!(wait(&scheduled), Err(FenceError::Driver(-22)));
    assert_eq!(s.backend().run_tags(), vec![2], "the failed job never ran; the next one did");
    assert!(s.backend().complete_next());
    wait(&after).unwrap();
    wait_until("counters", || s.stats().cancelled == 1);
    // An already failed dependency (of another entity: an entity ignores its own fences,
    // as the kernel does) fails the job at once too.
    let e2 = entity(&[&s]);
    let g = e2.job(job(3)).dependency(f.clone()).arm().unwrap().push();
    assert_eq!(wait(&g), Err(FenceError::Driver(-22)));
    assert_eq!(s.backend().run_tags(), vec![2]);
    assert_no_checker_violations();
}

#[test]
fn hardware_failure_propagates_to_dependents_on_another_scheduler() {
    let s1 = sched(MockRing::immediate(), "s1", 8, Policy::Fifo);
    let s2 = sched(MockRing::manual(), "s2", 8, Policy::Fifo);
    let (e1, e2) = (entity(&[&s1]), entity(&[&s2]));
    let (dep, sig) = FenceContext::new("gate").next();
    let a = e1
        .job(job(1).behavior(MockBehavior::Fail(FenceError::DeviceLost)))
        .dependency(dep)
        .arm()
        .unwrap()
        .push();
    let b = e2.job(job(2)).dependency(a.clone()).arm().unwrap().push();
    sig.signal();
    assert_eq!(wait(&a), Err(FenceError::DeviceLost));
    assert_eq!(wait(&b), Err(FenceError::DeviceLost));
    assert_eq!(s1.backend().run_tags(), vec![1]);
    assert!(s2.backend().run_tags().is_empty());
    assert_no_checker_violations();
}

#[test]
fn idle_entity_moves_to_the_least_loaded_scheduler() {
    let s1 = sched(MockRing::manual(), "s1", 1, Policy::Fifo);
    let s2 = sched(MockRing::manual(), "s2", 1, Policy::Fifo);
    let e = entity(&[&s1, &s2]);
    assert_eq!(e.current_scheduler(), None);
    let first = e.job(job(1)).arm().unwrap().push();
    let on = e.current_scheduler().unwrap();
    let (here, there) = if on == "s1" { (&s1, &s2) } else { (&s2, &s1) };
    // While busy the entity stays put, even though `there` is idle.
    let second = e.job(job(2)).arm().unwrap().push();
    assert_eq!(e.current_scheduler().as_deref(), Some(here.name()));
    // Load `here` with a pinned filler queued behind job 2.
    let filler = entity(&[here]);
    let fills: Vec<_> = (10..13).map(|t| filler.job(job(t)).arm().unwrap().push()).collect();
    assert!(here.backend().complete_next());
    wait(&first).unwrap();
    assert!(here.backend().complete_next());
    wait(&second).unwrap();
    assert_eq!(here.backend().run_tags(), vec![1, 2, 10]);
    wait_until("entity idle", || e.stats().finished_ok == 2);
    assert_eq!(here.stats().queued, 2, "the filler keeps `here` loaded");
    // Idle now: the next arm moves to the idle scheduler.
    let third = e.job(job(3)).arm().unwrap().push();
    assert_eq!(e.current_scheduler().as_deref(), Some(there.name()));
    assert_eq!(there.backend().run_tags(), vec![3]);
    assert!(there.backend().complete_next());
    wait(&third).unwrap();
    while here.backend().complete_next() {}
    for f in &fills {
        wait(f).unwrap();
    }
    assert_no_checker_violations();
}

/// Multi-credit jobs must not leave a scheduler looking loaded (or wrap its load counter).
#[test]
fn load_balancing_after_multi_credit_jobs() {
    let s1 = sched(MockRing::immediate(), "s1", 8, Policy::Fifo);
    let s2 = sched(MockRing::manual(), "s2", 8, Policy::Fifo);
    let pinned1 = entity(&[&s1]);
    wait(&pinned1.job(job(1)).credits(4).arm().unwrap().push()).unwrap();
    let pinned2 = entity(&[&s2]);
    let busy = pinned2.job(job(2)).credits(2).arm().unwrap().push();
    // s1 is idle, s2 has 2 credits in flight: a new entity listing s2 first goes to s1.
    let e = entity(&[&s2, &s1]);
    wait(&e.job(job(3)).arm().unwrap().push()).unwrap();
    assert_eq!(e.current_scheduler().as_deref(), Some("s1"));
    assert!(s2.backend().complete_next());
    wait(&busy).unwrap();
    assert_no_checker_violations();
}

/// Dependencies are deduplicated per context before signalled ones are dropped: a later
/// fence of a context supersedes an earlier failed one whether or not it signalled yet.
#[test]
fn later_fence_of_a_context_supersedes_an_earlier_failed_one() {
    let s = sched(MockRing::immediate(), "ring", 8, Policy::Fifo);
    let ctx = FenceContext::new("ext");
    let (early, early_sig) = ctx.next();
    let (late, late_sig) = ctx.next();
    early_sig.signal_error(FenceError::Driver(-3));
    late_sig.signal();
    let e = entity(&[&s]);
    let f = e.job(job(1)).dependency(early).dependency(late).arm().unwrap().push();
    assert_eq!(wait(&f), Ok(()));
    assert_eq!(s.backend().run_tags(), vec![1]);
    assert_no_checker_violations();
}

/// Jobs released by one signal are selected together once its callbacks have run (the pump
/// is deferred with `defer_after_callbacks`): by priority, not in the order they were armed,
/// and all in one pump (one batch for a batching backend).
#[test]
fn jobs_released_by_one_signal_run_by_priority() {
    let s = sched(MockRing::manual(), "ring", 1, Policy::Fifo);
    let (gate, gate_s) = FenceContext::new("gate").next();
    let prios = [Priority::Low, Priority::Normal, Priority::High, Priority::Kernel];
    let es: Vec<_> = prios.iter().map(|p| Entity::new(&[&s], *p).unwrap()).collect();
    // Armed lowest priority first: the gate's callbacks run in that order.
    let fences: Vec<_> = es
        .iter()
        .enumerate()
        .map(|(i, e)| e.job(job(i as u64)).dependency(gate.clone()).arm().unwrap().push())
        .collect();
    assert!(s.backend().run_tags().is_empty(), "nothing runs before the gate");
    gate_s.signal();
    // One credit: the first pick is the only one on the ring until it completes.
    wait_until("the first pick", || s.backend().run_tags().len() == 1);
    for _ in 0..4 {
        wait_until("a job on the ring", || s.backend().in_flight() == 1);
        assert!(s.backend().complete_next());
    }
    for f in &fences {
        wait(f).unwrap();
    }
    assert_eq!(s.backend().run_tags(), vec![3, 2, 1, 0], "highest priority first");
    assert_no_checker_violations();
}

/// A manual mock ring whose `run_job` fails for one tag (a submission failure, not a hardware
/// fault).
struct FailingSubmit {
    ring: MockRing,
    fail_tag: u64,
}

impl gpusched::Backend for FailingSubmit {
    type Job = MockJob;
    type Error = std::convert::Infallible;

    fn prepare_job(&self, job: &mut MockJob, info: &gpusched::JobInfo) -> Result<(), Self::Error> {
        self.ring.prepare_job(job, info)
    }

    fn run_job(
        &self,
        job: &mut MockJob,
        info: &gpusched::JobInfo,
    ) -> Result<gpusched::fence::Fence, FenceError> {
        if job.tag == self.fail_tag {
            return Err(FenceError::Driver(-5));
        }
        self.ring.run_job(job, info)
    }

    fn timedout_job(&self, r: &mut gpusched::Recovery<'_, Self>) -> gpusched::TimeoutStatus {
        r.standard_reset(|| {
            self.ring.reset_hw();
            true
        })
    }

    fn free_job(&self, job: MockJob, info: &gpusched::JobInfo) {
        self.ring.free_job(job, info)
    }
}

/// Regression (found by the fault suite): a job whose submission failed while its
/// entity's previous job was still on the ring signalled its finished fence at once, before
/// that job's (the entity's timeline out of seqno order), and a job of another entity that
/// depended on it on the same ring ran anyway (its `scheduled` state met the same-scheduler
/// shortcut). Now it fails after the previous job, and its dependants fail with its error.
#[test]
fn failed_submission_signals_in_timeline_order_and_fails_dependants() {
    let backend = FailingSubmit { ring: MockRing::manual(), fail_tag: 2 };
    let s = Scheduler::new(backend, gpusched::SchedulerConfig::new("ring")).unwrap();
    let e = Entity::new(&[&s], Priority::Normal).unwrap();
    let other = Entity::new(&[&s], Priority::Normal).unwrap();
    let first = e.job(job(1)).arm().unwrap().push();
    // The dependant is armed before the job it depends on is pushed (its fence may be
    // published from arm on): the scheduler cannot find that job at arm time.
    let failing = e.job(job(2)).arm().unwrap();
    let dependant = other.job(job(3)).dependency(failing.finished().clone()).arm().unwrap();
    let failing = failing.push();
    let dependant = dependant.push();
    wait_until("the first job on the ring", || s.backend().ring.in_flight() == 1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(!failing.is_signaled(), "signalled before the entity's previous job");
    // The dependant may fail now: the failure is known, it need not wait for the signal.
    assert!(s.backend().ring.complete_next());
    assert_eq!(wait(&first), Ok(()));
    assert_eq!(wait(&failing), Err(FenceError::Driver(-5)));
    assert!(first.timestamp().unwrap() <= failing.timestamp().unwrap());
    assert_eq!(wait(&dependant), Err(FenceError::Driver(-5)));
    assert_eq!(s.backend().ring.run_tags(), vec![1], "the dependant must not run");
    assert_eq!(s.stats().credits_in_flight, 0);
    assert_no_checker_violations();
}
