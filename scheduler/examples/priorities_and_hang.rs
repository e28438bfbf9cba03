//! Several clients at different priorities share one ring; one of them submits a job that
//! hangs. The timeout-and-reset worker (TDR) recovers the ring, blames the guilty client, and
//! bans it after repeated hangs; everyone else's work completes.
//!
//! Run: `cargo run -p gpusched --example priorities_and_hang` (a second or so). It prints what
//! happened and exits non-zero if any outcome differs from the expected one.
//!
//! The ring is a `MockRing::timed()` with a credit limit of 1 (one job on the hardware at a
//! time, so the order of selection is visible), a 250 ms timeout, and a hang limit of 1 (the
//! second hang bans the entity: `karma > hang_limit`). `MockBehavior::Hang` makes a job that
//! never completes until the ring is reset; the mock answers a timeout with
//! `Recovery::standard_reset`: stop, blame, force-complete the guilty job with `TimedOut`,
//! interrupt interruptible waits, reset the ring, resubmit the innocent jobs, start.

use std::time::{Duration, Instant};

use gpusched::fence::{Fence, FenceError, WaitError};
use gpusched::testing::{MockBehavior, MockJob, MockRing};
use gpusched::{Entity, Priority, Scheduler, SchedulerConfig};

/// A watchdog on every wait, so that a bug cannot hang CI.
const WATCHDOG: Duration = Duration::from_secs(20);

fn outcome(fence: &Fence) -> Result<(), FenceError> {
    match fence.wait_timeout(WATCHDOG) {
        Ok(()) => Ok(()),
        Err(WaitError::Failed(e)) => Err(e),
        Err(e) => panic!("a job did not finish within {WATCHDOG:?}: {e}"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let config = SchedulerConfig::new("gfx")
        .credit_limit(1)
        .timeout(Duration::from_millis(250))
        .hang_limit(1);
    let sched = Scheduler::new(MockRing::timed(), config).unwrap();
    let ui = Entity::new(&[&sched], Priority::High).unwrap();
    let game = Entity::new(&[&sched], Priority::Normal).unwrap();
    let batch = Entity::new(&[&sched], Priority::Low).unwrap();
    let rogue = Entity::new(&[&sched], Priority::Normal).unwrap();
    let job = |tag: u64| MockJob::new(tag).duration(Duration::from_millis(2));
    let t0 = Instant::now();

    // 1. Priorities. A batch job occupies the ring; meanwhile batch, game and ui queue work
    // (lowest priority first). Strict priority picks ui, then game, then batch.
    println!("1. priorities (credit limit 1: one job on the ring at a time)");
    let blocker = batch.job(MockJob::new(300).duration(Duration::from_millis(60))).arm().unwrap();
    let blocker = blocker.push();
    let mut fences = vec![blocker];
    for (entity, base) in [(&batch, 300), (&game, 200), (&ui, 100)] {
        for i in 1..=2 {
            fences.push(entity.job(job(base + i)).arm().unwrap().push());
        }
    }
    for f in &fences {
        outcome(f).expect("no failure in round 1");
    }
    let order = sched.backend().run_tags();
    println!("   run order (tags: ui 1xx, game 2xx, batch 3xx): {order:?}");
    assert_eq!(order, vec![300, 101, 102, 201, 202, 301, 302], "strict priority order");

    // 2. A hang. The rogue client's job never completes; a game job waits behind it. After
    // 250 ms the TDR fires, the rogue job ends `TimedOut`, and the game job runs.
    println!("2. a hung job");
    let hang = rogue.job(MockJob::new(900).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let behind = game.job(job(203)).arm().unwrap().push();
    let started = Instant::now();
    assert_eq!(outcome(&hang), Err(FenceError::TimedOut), "the hung job times out");
    println!("   rogue job 900: {:?} after {:.0} ms", outcome(&hang), ms(started.elapsed()));
    assert_eq!(outcome(&behind), Ok(()), "the innocent job behind it completes");
    println!("   game job 203 (queued behind it): {:?}", outcome(&behind));
    assert_eq!(rogue.stopped(), None, "one hang is within the hang limit");
    println!("   rogue is still allowed to submit (karma 1, hang limit 1)");

    // 3. A second hang bans the client: karma 2 > hang limit 1. Its queued job is cancelled,
    // and it cannot arm new ones; the other clients carry on.
    println!("3. a second hang: the client is banned");
    let hang2 = rogue.job(MockJob::new(901).behavior(MockBehavior::Hang)).arm().unwrap().push();
    let queued = rogue.job(job(902)).arm().unwrap().push();
    let ui_after = ui.job(job(103)).arm().unwrap().push();
    assert_eq!(outcome(&hang2), Err(FenceError::TimedOut));
    assert_eq!(outcome(&queued), Err(FenceError::Cancelled), "a banned client's queued job");
    assert_eq!(outcome(&ui_after), Ok(()));
    println!("   rogue job 901: {:?}; its queued job 902: {:?}", outcome(&hang2), outcome(&queued));
    println!("   ui job 103 submitted meanwhile: {:?}", outcome(&ui_after));
    assert_eq!(rogue.stopped(), Some(FenceError::Cancelled), "the rogue client is banned");
    let refused = rogue.job(job(903)).arm().expect_err("a banned entity cannot arm");
    assert!(refused.error.is_entity_stopped());
    println!("   rogue.stopped() = {:?}; arming again: {}", rogue.stopped(), refused.error);
    let last = game.job(job(204)).arm().unwrap().push();
    assert_eq!(outcome(&last), Ok(()));

    let ring = sched.backend();
    let recoveries = sched.reset_domain().recoveries();
    println!(
        "summary: {} timeouts, {} ring resets, {recoveries} recoveries in {:.0} ms; completed: {:?}",
        ring.timeouts(),
        ring.resets(),
        ms(t0.elapsed()),
        ring.completed_tags()
    );
    assert_eq!((ring.timeouts(), ring.resets(), recoveries), (2, 2, 2));
    // No work of the other clients was lost, and the ring completed it in this order (the
    // hung jobs never completed on the ring: they were force-completed with `TimedOut`).
    assert_eq!(ring.completed_tags(), vec![300, 101, 102, 201, 202, 301, 302, 203, 103, 204]);
    println!("priorities_and_hang: ok");
}
