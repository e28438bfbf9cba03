//! Ordering, priorities, fairness, credits, arm errors and configuration errors of the
//! scheduler, against the mock ring.

mod common;

// Allocation inside a signalling section is a checker violation (the contract forbids it).
#[global_allocator]
static ALLOC: gpusched::fence::lockdep::CheckingAllocator =
    gpusched::fence::lockdep::CheckingAllocator::new(std::alloc::System);

use std::time::Duration;

use common::{assert_no_checker_violations, job, sched, wait};
use gpusched::fence::{Fence, FenceError};
use gpusched::testing::{MockJob, MockRing};
use gpusched::{ArmedJob, Entity, Policy, Priority, SchedError, Scheduler, SchedulerConfig};
use rand::{Rng, SeedableRng};

fn entity(s: &Scheduler<MockRing>, prio: Priority) -> Entity<MockRing> {
    Entity::new(&[s], prio).unwrap()
}

fn push(e: &Entity<MockRing>, tag: u64) -> Fence {
    e.job(job(tag)).arm().unwrap().push()
}

#[test]
fn send_sync_assertions() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Scheduler<MockRing>>();
    send_sync::<Entity<MockRing>>();
    send::<ArmedJob<MockRing>>();
    send_sync::<gpusched::SchedError>();
}

#[test]
fn jobs_of_one_entity_run_and_finish_in_push_order() {
    let s = sched(MockRing::timed(), "ring", 4, Policy::Fifo);
    let e = entity(&s, Priority::Normal);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut fences = Vec::new();
    for tag in 0..64 {
        let d = Duration::from_micros(rng.gen_range(0..300));
        let credits = rng.gen_range(1..=4);
        let f = e.job(MockJob::new(tag).duration(d)).credits(credits).arm().unwrap().push();
        fences.push(f);
    }
    for f in &fences {
        wait(f).unwrap();
    }
    let expected: Vec<u64> = (0..64).collect();
    assert_eq!(s.backend().run_tags(), expected);
    assert_eq!(s.backend().completed_tags(), expected);
    // Finished fences carry increasing seqnos on the entity's timeline and signalled in order.
    for w in fences.windows(2) {
        assert!(w[1].is_later(&w[0]));
        assert!(w[0].timestamp().unwrap() <= w[1].timestamp().unwrap());
    }
    // Counters are updated just after the fences signal.
    common::wait_until("entity counters", || e.stats().finished_ok == 64);
    common::wait_until("scheduler counters", || s.stats().finished_ok == 64);
    assert_no_checker_violations();
}

/// Pushes two jobs at each priority (lowest priority first) behind a running blocker and
/// returns the ring's run order.
fn priority_run_order(policy: Policy) -> Vec<u64> {
    let s = sched(MockRing::manual(), "ring", 1, policy);
    let blocker = entity(&s, Priority::Low);
    let low = entity(&s, Priority::Low);
    let normal = entity(&s, Priority::Normal);
    let high = entity(&s, Priority::High);
    let kernel = entity(&s, Priority::Kernel);
    let mut fences = vec![push(&blocker, 100)];
    for (e, base) in [(&low, 40), (&normal, 30), (&high, 20), (&kernel, 10)] {
        fences.push(push(e, base));
        fences.push(push(e, base + 1));
    }
    assert_eq!(s.backend().run_tags(), vec![100], "credit limit 1: only the blocker runs");
    while s.backend().complete_next() {}
    for f in &fences {
        wait(f).unwrap();
    }
    s.backend().run_tags()
}

#[test]
fn priorities_select_kernel_high_normal_low() {
    let expected = vec![100, 10, 11, 20, 21, 30, 31, 40, 41];
    assert_eq!(priority_run_order(Policy::Fifo), expected);
    assert_eq!(priority_run_order(Policy::RoundRobin), expected);
    // Fair keeps Kernel strictly first; the rest share by weight, so only check Kernel.
    assert_eq!(priority_run_order(Policy::Fair)[1..3], [10, 11]);
    assert_no_checker_violations();
}

/// Two entities of one priority, three jobs each pushed A A A B B B behind a blocker.
fn same_priority_order(policy: Policy) -> Vec<u64> {
    let s = sched(MockRing::manual(), "ring", 1, policy);
    let blocker = entity(&s, Priority::Normal);
    let a = entity(&s, Priority::Normal);
    let b = entity(&s, Priority::Normal);
    let mut fences = vec![push(&blocker, 0)];
    for t in 1..=3 {
        fences.push(push(&a, 10 + t));
    }
    for t in 1..=3 {
        fences.push(push(&b, 20 + t));
    }
    while s.backend().complete_next() {}
    for f in &fences {
        wait(f).unwrap();
    }
    s.backend().run_tags()[1..].to_vec()
}

#[test]
fn fifo_runs_oldest_head_first_round_robin_alternates() {
    assert_eq!(same_priority_order(Policy::Fifo), vec![11, 12, 13, 21, 22, 23]);
    let rr = same_priority_order(Policy::RoundRobin);
    // Entities take turns: no entity runs twice in a row while the other has work.
    assert_eq!(rr.len(), 6);
    for w in rr.windows(2) {
        assert_ne!(w[0] / 10, w[1] / 10, "round robin ran one entity twice in a row: {rr:?}");
    }
    assert_no_checker_violations();
}

/// A high and a low priority entity each queue `n` jobs on a ring of one credit; returns how
/// many of the first `n` runs were the low entity's.
fn low_share(policy: Policy, n: u64) -> u64 {
    let s = sched(MockRing::manual(), "ring", 1, policy);
    let high = entity(&s, Priority::High);
    let low = entity(&s, Priority::Low);
    let mut fences = Vec::new();
    // High saturates: its first job occupies the ring before low's are queued.
    for t in 0..n {
        fences.push(push(&high, t));
    }
    for t in 0..n {
        fences.push(push(&low, 1_000_000 + t));
    }
    while s.backend().complete_next() {}
    for f in &fences {
        wait(f).unwrap();
    }
    let runs = s.backend().run_tags();
    assert_eq!(runs.len() as u64, 2 * n);
    runs[..n as usize].iter().filter(|t| **t >= 1_000_000).count() as u64
}

#[test]
fn fair_policy_lets_low_priority_progress_fifo_starves_it() {
    let n = 400;
    let fair = low_share(Policy::Fair, n);
    let fifo = low_share(Policy::Fifo, n);
    let rr = low_share(Policy::RoundRobin, n);
    eprintln!("low-priority share of the first {n} runs: fair {fair}, fifo {fifo}, rr {rr}");
    // Weights 2 (High) vs 8 (Low): about a fifth; assert generously.
    assert!(fair * 100 >= 5 * n, "fair gave the low entity only {fair}/{n}");
    assert!(fair * 100 <= 50 * n, "fair gave the low entity more than the high one: {fair}/{n}");
    assert_eq!(fifo, 0, "strict priority must starve the low entity while high has work");
    assert_eq!(rr, 0, "round robin is strict across priorities too");
    assert_no_checker_violations();
}

#[test]
fn credit_limit_is_never_exceeded_under_concurrency() {
    const LIMIT: u32 = 8;
    let s = sched(MockRing::timed(), "ring", LIMIT, Policy::Fair);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let prio = Priority::ALL[t % 4];
                let e = Entity::new(&[&s], prio).unwrap();
                let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
                let mut fences = Vec::new();
                for i in 0..150 {
                    let d = Duration::from_micros(rng.gen_range(0..200));
                    let credits = rng.gen_range(1..=LIMIT);
                    let j = MockJob::new(t as u64 * 1000 + i).duration(d);
                    fences.push(e.job(j).credits(credits).arm().unwrap().push());
                }
                for f in &fences {
                    wait(f).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let max = s.backend().max_credits_in_flight();
    assert!(max <= LIMIT, "ring held {max} credits, limit {LIMIT}");
    assert!(max >= 2, "jobs never overlapped on the ring (max {max}): the test proved nothing");
    let stats = s.stats();
    assert_eq!(stats.finished_ok, 600);
    assert_eq!(stats.jobs_run, 600);
    assert_eq!(stats.credits_in_flight, 0);
    assert_eq!(stats.queued, 0);
    assert_no_checker_violations();
}

#[test]
fn too_many_and_zero_credits_are_refused_with_the_payload() {
    let s = sched(MockRing::immediate(), "ring7", 4, Policy::Fifo);
    let e = entity(&s, Priority::Normal);
    let err = e.job(job(41)).credits(5).arm().unwrap_err();
    assert_eq!(
        err.error,
        SchedError::TooManyCredits { credits: 5, limit: 4, scheduler: "ring7".into() }
    );
    assert_eq!(err.payload.tag, 41);
    assert!(err.to_string().contains("5 credits"));
    let err = e.job(job(42)).credits(0).arm().unwrap_err();
    assert_eq!(err.error, SchedError::ZeroCredits);
    assert_eq!(err.payload.tag, 42);
    // Refused jobs left no trace; the entity still works, a job of exactly the limit fits.
    assert_eq!(e.stats().armed, 0);
    wait(&e.job(job(43)).credits(4).arm().unwrap().push()).unwrap();
    assert_eq!(s.backend().run_tags(), vec![43]);
    e.wait_idle(common::WATCHDOG).unwrap();
    assert_no_checker_violations();
}

#[test]
fn invalid_configurations_are_refused() {
    let r = Scheduler::new(MockRing::immediate(), SchedulerConfig::new("x").credit_limit(0));
    assert!(matches!(r, Err(SchedError::InvalidConfig(_))));
    let r =
        Scheduler::new(MockRing::immediate(), SchedulerConfig::new("x").timeout(Duration::ZERO));
    assert!(matches!(r, Err(SchedError::InvalidConfig(_))));
    let r = Entity::<MockRing>::new(&[], Priority::Normal);
    assert_eq!(r.unwrap_err(), SchedError::NoSchedulers);
    let s = Scheduler::new(MockRing::immediate(), SchedulerConfig::new("ok").credit_limit(1));
    assert_eq!(s.unwrap().config().credit_limit, 1);
    assert_no_checker_violations();
}

#[test]
fn failing_hardware_job_signals_its_error_and_the_ring_goes_on() {
    let s = sched(MockRing::immediate(), "ring", 4, Policy::Fifo);
    let e = entity(&s, Priority::Normal);
    let bad = e
        .job(
            MockJob::new(1).behavior(gpusched::testing::MockBehavior::Fail(FenceError::Driver(-5))),
        )
        .arm()
        .unwrap()
        .push();
    let good = push(&e, 2);
    assert_eq!(wait(&bad), Err(FenceError::Driver(-5)));
    wait(&good).unwrap();
    common::wait_until("counters", || e.stats().finished_err == 1);
    let st = s.stats();
    assert_eq!((st.finished_ok, st.finished_err, st.cancelled), (1, 1, 0));
    assert_no_checker_violations();
}
