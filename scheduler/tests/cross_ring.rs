//! Cross-ring dependencies waited for on the device: two mock rings of one mock device
//! (`MockRing::on_device`).

#![cfg(not(gpusched_loom))]

mod common;

// Allocation inside a signalling section is a checker violation (the contract forbids it).
#[global_allocator]
static ALLOC: gpusched::fence::lockdep::CheckingAllocator =
    gpusched::fence::lockdep::CheckingAllocator::new(std::alloc::System);

use std::time::Duration;

use common::{assert_no_checker_violations, wait, wait_until};
use gpusched::fence::{FenceContext, FenceError, FenceStatus};
use gpusched::testing::{Completion, MockBehavior, MockJob, MockRing};
use gpusched::{Entity, Priority, Scheduler, SchedulerConfig};

fn sched(ring: MockRing, name: &str) -> Scheduler<MockRing> {
    Scheduler::new(ring, SchedulerConfig::new(name)).unwrap()
}

fn entity(s: &Scheduler<MockRing>) -> Entity<MockRing> {
    Entity::new(&[s], Priority::Normal).unwrap()
}

/// Two manual rings; `device` 0 puts them on no common device.
fn pair(device: u64) -> (Scheduler<MockRing>, Scheduler<MockRing>) {
    (
        sched(MockRing::on_device(Completion::Manual, device), "a"),
        sched(MockRing::on_device(Completion::Manual, device), "b"),
    )
}

#[test]
fn dependant_is_submitted_before_its_dependency_finishes() {
    let (a, b) = pair(7);
    let (ea, eb) = (entity(&a), entity(&b));
    let first = ea.job(MockJob::new(1)).arm().unwrap().push();
    let dep = eb.job(MockJob::new(2)).dependency(first.clone()).arm().unwrap();
    let scheduled = dep.scheduled().clone();
    let second = dep.push();
    // No host round trip: on ring B while ring A's job is still running.
    wait(&scheduled).unwrap();
    assert_eq!(first.status(), FenceStatus::Pending);
    assert_eq!(b.backend().native_waits(), 1);
    // The device waits: ring B cannot complete it before ring A's job.
    assert!(b.backend().head_waits_natively());
    assert!(!b.backend().complete_next());
    assert_eq!(second.status(), FenceStatus::Pending);
    assert!(a.backend().complete_next());
    assert_eq!(wait(&first), Ok(()));
    assert!(b.backend().complete_next());
    assert_eq!(wait(&second), Ok(()));
    assert_no_checker_violations();
}

#[test]
fn other_devices_wait_on_the_host() {
    let (a, b) = pair(0);
    let (ea, eb) = (entity(&a), entity(&b));
    let first = ea.job(MockJob::new(1)).arm().unwrap().push();
    let dep = eb.job(MockJob::new(2)).dependency(first.clone()).arm().unwrap();
    let scheduled = dep.scheduled().clone();
    let second = dep.push();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(scheduled.status(), FenceStatus::Pending, "a host wait: not scheduled yet");
    assert!(a.backend().complete_next());
    wait(&scheduled).unwrap();
    assert_eq!(b.backend().native_waits(), 0);
    assert!(b.backend().complete_next());
    assert_eq!(wait(&second), Ok(()));
    assert_no_checker_violations();
}

#[test]
fn chain_alternating_between_rings_completes_in_order_on_the_device() {
    let (a, b) = pair(8);
    let (ea, eb) = (entity(&a), entity(&b));
    let n = 8u64;
    let mut prev: Option<gpusched::fence::Fence> = None;
    let mut fences = Vec::new();
    for i in 0..n {
        let e = if i % 2 == 0 { &ea } else { &eb };
        let mut j = e.job(MockJob::new(i));
        if let Some(p) = prev.take() {
            j = j.dependency(p);
        }
        let f = j.arm().unwrap().push();
        prev = Some(f.clone());
        fences.push(f);
    }
    // Every job is on its ring before any finished: all but the first wait on the device.
    wait_until("all submitted", || a.backend().in_flight() + b.backend().in_flight() == 8);
    assert_eq!(a.backend().native_waits() + b.backend().native_waits(), n - 1);
    // Each ring completes its head only once the job it waits for has: driving both rings
    // as fast as they go completes the chain in order.
    let mut order = Vec::new();
    while order.len() < n as usize {
        let before = order.len();
        for r in [a.backend(), b.backend()] {
            if r.complete_next() {
                order.push(*r.completed_tags().last().unwrap());
            }
        }
        assert!(order.len() > before, "the rings deadlocked: {order:?}");
    }
    assert_eq!(order, (0..n).collect::<Vec<_>>());
    for f in &fences {
        assert_eq!(wait(f), Ok(()));
    }
    assert_no_checker_violations();
}

#[test]
fn chain_on_timed_rings_matches_host_waits() {
    let run = |device: u64| {
        let a = sched(MockRing::on_device(Completion::Timed, device), "a");
        let b = sched(MockRing::on_device(Completion::Timed, device), "b");
        let (ea, eb) = (entity(&a), entity(&b));
        let mut prev: Option<gpusched::fence::Fence> = None;
        let mut results = Vec::new();
        for i in 0..20u64 {
            let e = if i % 2 == 0 { &ea } else { &eb };
            let mut mock = MockJob::new(i).duration(Duration::from_micros(200));
            if i == 13 {
                mock = mock.behavior(MockBehavior::Fail(FenceError::Driver(-5)));
            }
            let mut j = e.job(mock);
            if let Some(p) = prev.take() {
                j = j.dependency(p);
            }
            let f = j.arm().unwrap().push();
            prev = Some(f.clone());
            results.push(f);
        }
        results.iter().map(wait).collect::<Vec<_>>()
    };
    // The fault propagates down the chain the same way with both kinds of wait.
    let host = run(0);
    assert_eq!(host[12], Ok(()));
    assert!(host[13..].iter().all(|r| *r == Err(FenceError::Driver(-5))));
    assert_eq!(run(12), host);
    assert_no_checker_violations();
}

#[test]
fn dependency_failing_on_the_hardware_fails_the_dependant() {
    let (a, b) = pair(9);
    let (ea, eb) = (entity(&a), entity(&b));
    let fault = FenceError::Driver(-5);
    let first = ea.job(MockJob::new(1).behavior(MockBehavior::Fail(fault))).arm().unwrap().push();
    let dep = eb.job(MockJob::new(2)).dependency(first.clone()).arm().unwrap();
    let scheduled = dep.scheduled().clone();
    let second = dep.push();
    wait(&scheduled).unwrap();
    assert!(a.backend().complete_next());
    assert_eq!(wait(&first), Err(fault));
    assert!(b.backend().complete_next());
    // It ran on the device, but on its dependency's missing results: as with a host wait,
    // it ends with that error.
    assert_eq!(wait(&second), Err(fault));
    assert_no_checker_violations();
}

/// A same-ring dependant of a job whose cross-ring dependency fails: it was handed to the
/// hardware once that job was (same-ring dependencies wait for scheduling only), and ends
/// with the inherited error, as it would have without running had host waits been used.
#[test]
fn a_same_ring_dependant_inherits_a_late_cross_ring_failure() {
    let (a, b) = pair(11);
    let (ea, eb, eb2) = (entity(&a), entity(&b), entity(&b));
    let fault = FenceError::Driver(-5);
    let first = ea.job(MockJob::new(1).behavior(MockBehavior::Fail(fault))).arm().unwrap().push();
    let second = eb.job(MockJob::new(2)).dependency(first.clone()).arm().unwrap().push();
    let dep = eb2.job(MockJob::new(3)).dependency(second.clone()).arm().unwrap();
    let scheduled = dep.scheduled().clone();
    let third = dep.push();
    // Both on ring B before ring A's job has finished.
    wait(&scheduled).unwrap();
    assert_eq!(first.status(), FenceStatus::Pending);
    assert!(a.backend().complete_next());
    assert_eq!(wait(&first), Err(fault));
    assert!(b.backend().complete_next());
    assert_eq!(wait(&second), Err(fault));
    assert!(b.backend().complete_next());
    assert_eq!(wait(&third), Err(fault), "ran on its dependency's missing results");
    // A same-ring dependency's own hardware error does not pass on (`drm_sched`).
    let own = eb.job(MockJob::new(4).behavior(MockBehavior::Fail(fault))).arm().unwrap().push();
    let after = eb2.job(MockJob::new(5)).dependency(own.clone()).arm().unwrap();
    let scheduled = after.scheduled().clone();
    let after = after.push();
    wait(&scheduled).unwrap();
    assert!(b.backend().complete_next());
    assert!(b.backend().complete_next());
    assert_eq!(wait(&own), Err(fault));
    assert_eq!(wait(&after), Ok(()));
    assert_no_checker_violations();
}

#[test]
fn dependency_cancelled_before_the_hardware_fails_the_dependant_unrun() {
    let (a, b) = pair(10);
    let (ea, eb) = (entity(&a), entity(&b));
    let ctx = FenceContext::new("gate");
    let (gate, gate_sig) = ctx.next();
    let first = ea.job(MockJob::new(1)).dependency(gate).arm().unwrap().push();
    let dep = eb.job(MockJob::new(2)).dependency(first.clone()).arm().unwrap();
    let scheduled = dep.scheduled().clone();
    let second = dep.push();
    ea.kill();
    assert_eq!(wait(&first), Err(FenceError::Killed));
    assert_eq!(wait(&second), Err(FenceError::Killed));
    assert_eq!(scheduled.error(), Some(FenceError::Killed));
    assert!(b.backend().run_tags().is_empty(), "the dependant never reached ring B");
    gate_sig.signal();
    assert_no_checker_violations();
}

#[test]
fn awaited_ring_hang_does_not_blame_the_waiting_job() {
    let cfg = |name: &str, ms| {
        SchedulerConfig::new(name).timeout(Duration::from_millis(ms)).hang_limit(0)
    };
    let a = Scheduler::new(MockRing::on_device(Completion::Timed, 11), cfg("a", 100)).unwrap();
    // Ring B's timeout runs out several times while its job waits for ring A's hang.
    let b = Scheduler::new(MockRing::on_device(Completion::Timed, 11), cfg("b", 20)).unwrap();
    let (ea, eb) = (entity(&a), entity(&b));
    let hung = ea.job(MockJob::new(1).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let dep = eb.job(MockJob::new(2)).dependency(hung.clone()).arm().unwrap();
    let scheduled = dep.scheduled().clone();
    let second = dep.push();
    wait(&scheduled).unwrap();
    // Ring A's job times out and is blamed; ring B's job waited on the device all along and
    // ends with its dependency's error, as it would after a host wait.
    assert_eq!(wait(&hung), Err(FenceError::TimedOut));
    assert_eq!(wait(&second), Err(FenceError::TimedOut));
    assert_eq!(b.backend().timeouts(), 0, "ring B's timeout never reached its backend");
    // Not blamed: with hang limit 0 a blamed entity would be banned.
    let after = eb.job(MockJob::new(3)).arm().expect("the waiting job's entity is not banned");
    assert_eq!(wait(&after.push()), Ok(()));
    assert!(ea.job(MockJob::new(4)).arm().is_err(), "the hung job's entity is banned");
    assert_no_checker_violations();
}

/// A dependant that hangs after its cross-ring dependency failed on the hardware ran on
/// missing results: it ends with the dependency's error and its entity is not blamed (with
/// host waits it would have ended so without running).
#[test]
fn a_hang_on_a_failed_dependencys_missing_results_is_not_blamed() {
    let cfg =
        |name: &str| SchedulerConfig::new(name).timeout(Duration::from_millis(20)).hang_limit(0);
    let a = Scheduler::new(MockRing::on_device(Completion::Manual, 12), cfg("a")).unwrap();
    let b = Scheduler::new(MockRing::on_device(Completion::Timed, 12), cfg("b")).unwrap();
    let (ea, eb) = (entity(&a), entity(&b));
    let fault = FenceError::Driver(-5);
    let first = ea.job(MockJob::new(1).behavior(MockBehavior::Fail(fault))).arm().unwrap().push();
    let dep = eb.job(MockJob::new(2).behavior(MockBehavior::Hang)).dependency(first.clone());
    let dep = dep.arm().unwrap();
    let scheduled = dep.scheduled().clone();
    let second = dep.push();
    wait(&scheduled).unwrap();
    assert!(a.backend().complete_next());
    assert_eq!(wait(&first), Err(fault));
    // Ring B's timeout fires for the hang, which ran on the failed job's missing results.
    assert_eq!(wait(&second), Err(fault));
    assert!(b.backend().timeouts() >= 1, "ring B's timeout judged the hang");
    let after = eb.job(MockJob::new(3)).arm().expect("not banned: not blamed");
    assert_eq!(wait(&after.push()), Ok(()));
    assert_no_checker_violations();
}
