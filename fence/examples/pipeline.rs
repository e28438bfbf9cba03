//! A small end-to-end demonstration of `gpusched-fence`, run by `make demo` until the Vulkan
//! backend exists.
//!
//! A producer thread signals a chain of fences published on one [`FenceContext`] (a ring): most
//! succeed, some fail with an error, and one signaller is dropped unsignalled, which signals
//! [`FenceError::Abandoned`] (no published fence is ever lost). Three consumers wait on the
//! chain (blocking, timed, and `async` through `futures_lite::future::block_on`), callbacks
//! count completions on the signalling thread, a [`FenceArray::all`] joins the chain, a
//! [`Timeline`] point is requested before it is attached (wait-before-signal), and an
//! [`InterruptDomain`] interrupts an interruptible wait the way a GPU reset would, while a plain
//! wait on the same fence keeps waiting.
//!
//! It prints a summary table and exits non-zero if any invariant fails (for example: fences
//! signalled ok + with error != fences published).

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use gpusched_fence::{
    Fence, FenceArray, FenceContext, FenceError, InterruptDomain, Signaller, Timeline, WaitError,
};

/// Fences in the chain.
const CHAIN: usize = 48;
/// The chain index whose signaller the producer drops without signalling.
const DROPPED: usize = 40;
/// Deadlock watchdog for waits that must end: generous, never a speed assertion.
const WATCHDOG: Duration = Duration::from_secs(30);

/// What the producer does with the signaller of chain fence `i`.
fn planned(i: usize) -> Result<(), FenceError> {
    if i == DROPPED {
        return Err(FenceError::Abandoned);
    }
    match i % 9 {
        5 => Err(FenceError::TimedOut),
        7 if i % 2 == 0 => Err(FenceError::DeviceLost),
        7 => Err(FenceError::Driver(-5)),
        _ => Ok(()),
    }
}

/// Completion counts kept by callbacks, which run on the signalling thread.
#[derive(Debug, Default)]
struct Counts {
    ok: AtomicUsize,
    failed: AtomicUsize,
}

impl Counts {
    fn record(&self, fence: &Fence) {
        match fence.error() {
            None => self.ok.fetch_add(1, Ordering::Relaxed),
            Some(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Collects failed invariants; the demo exits non-zero when there is any.
#[derive(Debug, Default)]
struct Checks(Vec<String>);

impl Checks {
    fn expect(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }
}

/// Registers the counting callback on `fence` (it runs at once if the fence has signalled).
fn count_completion(fence: &Fence, counts: &Arc<Counts>) {
    let c = counts.clone();
    if let Err(already) = fence.add_callback(move |f| c.record(f)) {
        (already.into_inner())(fence);
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let mut checks = Checks::default();
    let counts = Arc::new(Counts::default());
    let domain = InterruptDomain::new("reset-domain0");
    let ring = FenceContext::builder("ring0").interrupt_domain(&domain).build();

    // Publish the chain; every fence gets a counting callback before anyone can signal it.
    let (chain, signallers): (Vec<Fence>, Vec<Signaller>) = (0..CHAIN).map(|_| ring.next()).unzip();
    for f in &chain {
        count_completion(f, &counts);
    }
    let joined = FenceArray::all(chain.iter().cloned());
    let first_error = (0..CHAIN).find_map(|i| planned(i).err());

    // Timeline: ask for point 3 before any point exists (wait-before-signal), then attach the
    // first three chain fences as points 1..=3.
    let frames = Timeline::new("frames");
    let point3 = frames.point(3);
    checks.expect(!point3.is_signaled(), "timeline point 3 signalled before it was attached");
    for (point, fence) in (1..=3).zip(&chain) {
        if let Err(e) = frames.attach(point, fence.clone()) {
            checks.expect(false, format!("timeline attach refused: {e}"));
        }
    }
    checks.expect(frames.attach(2, chain[3].clone()).is_err(), "timeline accepted point 2 twice");

    // Consumers, all started before the producer.
    let blocking = {
        let chain = chain.clone();
        thread::spawn(move || (0..CHAIN).filter(|&i| chain[i].wait() == planned(i)).count())
    };
    let timed = {
        let chain = chain.clone();
        thread::spawn(move || {
            (0..CHAIN)
                .filter(|&i| chain[i].wait_timeout(WATCHDOG) == planned(i).map_err(WaitError::from))
                .count()
        })
    };
    let asynchronous = {
        let chain = chain.clone();
        thread::spawn(move || {
            futures_lite::future::block_on(async {
                let mut matched = 0;
                for (i, f) in chain.iter().enumerate() {
                    if f.await == planned(i) {
                        matched += 1;
                    }
                }
                matched
            })
        })
    };
    let timeline_waiter = {
        let point3 = point3.clone();
        thread::spawn(move || point3.wait_timeout(WATCHDOG))
    };

    // The producer: signals the chain in order, as a ring's completion thread would.
    let producer = thread::spawn(move || {
        for (i, s) in signallers.into_iter().enumerate() {
            thread::sleep(Duration::from_micros(200));
            match planned(i) {
                Err(FenceError::Abandoned) => drop(s),
                outcome => {
                    s.signal_result(outcome);
                }
            }
        }
    });

    // A timed wait that must time out: this fence is signalled only afterwards.
    let (held, held_signaller) = ring.next();
    count_completion(&held, &counts);
    let held_outcome = held.wait_timeout(Duration::from_millis(5));
    checks.expect(
        held_outcome == Err(WaitError::Timeout),
        format!("a 5 ms wait on an unsignalled fence ended with {held_outcome:?}"),
    );
    held_signaller.signal();

    // An interruptible wait broken by a reset; a plain wait on the same fence is not.
    let (stuck, stuck_signaller) = ring.next();
    count_completion(&stuck, &counts);
    let interruptible = {
        let stuck = stuck.clone();
        thread::spawn(move || stuck.wait_interruptible(Some(WATCHDOG)))
    };
    let plain = {
        let stuck = stuck.clone();
        thread::spawn(move || stuck.wait_timeout(WATCHDOG))
    };
    thread::sleep(Duration::from_millis(20)); // let both block (either order ends the same)
    let section = domain.begin_interrupt();
    let interrupted = interruptible.join().expect("interruptible waiter panicked");
    let refused = stuck.wait_interruptible(Some(WATCHDOG));
    drop(section);
    stuck_signaller.signal_error(FenceError::Cancelled);
    let plain_outcome = plain.join().expect("plain waiter panicked");
    checks.expect(
        interrupted == Err(WaitError::Interrupted),
        format!("interruptible wait ended with {interrupted:?}, not Interrupted"),
    );
    checks.expect(
        refused == Err(WaitError::Interrupted),
        format!("interruptible wait during the section ended with {refused:?}"),
    );
    checks.expect(
        plain_outcome == Err(WaitError::Failed(FenceError::Cancelled)),
        format!("plain wait across the reset ended with {plain_outcome:?}"),
    );

    producer.join().expect("producer panicked");
    let blocking_matched = blocking.join().expect("blocking consumer panicked");
    let timed_matched = timed.join().expect("timed consumer panicked");
    let async_matched = asynchronous.join().expect("async consumer panicked");
    let point3_outcome = timeline_waiter.join().expect("timeline waiter panicked");
    let joined_outcome = joined.wait_timeout(WATCHDOG);

    let published = usize::try_from(ring.last_seqno()).expect("seqno fits in usize");
    let ok = counts.ok.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    let planned_failures = (0..CHAIN).filter(|&i| planned(i).is_err()).count() + 1; // + `stuck`

    checks.expect(published == CHAIN + 2, format!("published {published}, expected {}", CHAIN + 2));
    checks.expect(ok + failed == published, "signalled ok + with error != published");
    checks
        .expect(failed == planned_failures, format!("{failed} failed, {planned_failures} planned"));
    checks.expect(chain.iter().all(Fence::is_signaled), "a chain fence is still pending");
    let abandoned = chain.iter().filter(|f| f.error() == Some(FenceError::Abandoned)).count();
    checks.expect(abandoned == 1, format!("{abandoned} fences abandoned, 1 planned"));
    checks.expect(blocking_matched == CHAIN, "a blocking wait saw an unplanned outcome");
    checks.expect(timed_matched == CHAIN, "a timed wait saw an unplanned outcome");
    checks.expect(async_matched == CHAIN, "an async wait saw an unplanned outcome");
    checks.expect(
        joined_outcome == first_error.map_or(Ok(()), |e| Err(WaitError::Failed(e))),
        format!("FenceArray::all ended with {joined_outcome:?}, expected {first_error:?}"),
    );
    checks.expect(point3_outcome == Ok(()), format!("timeline point 3 ended {point3_outcome:?}"));
    checks.expect(frames.completed() == 3, "timeline did not complete point 3");

    let show = |r: &Result<(), WaitError>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    println!("gpusched-fence pipeline demo: {CHAIN} chained fences on {}", ring.name());
    println!("  {:<34} {:>6}", "fences published", published);
    println!("  {:<34} {:>6}", "signalled ok", ok);
    println!("  {:<34} {:>6}", "signalled with error", failed);
    println!("  {:<34} {:>6}", "  of which abandoned (dropped)", abandoned);
    println!("  {:<34} {:>3}/{CHAIN}", "blocking waits as planned", blocking_matched);
    println!("  {:<34} {:>3}/{CHAIN}", "timed waits as planned", timed_matched);
    println!("  {:<34} {:>3}/{CHAIN}", "async waits as planned", async_matched);
    println!("  {:<34} {}", "FenceArray::all (first error)", show(&joined_outcome));
    println!("  {:<34} {}", "timeline point 3 (wait-before-sig.)", show(&point3_outcome));
    println!("  {:<34} {}", "5 ms wait on a held fence", show(&held_outcome));
    println!("  {:<34} {}", "interruptible wait across reset", show(&interrupted));
    println!("  {:<34} {}", "plain wait across reset", show(&plain_outcome));
    println!("  {:<34} {:>6.1} ms", "wall time", started.elapsed().as_secs_f64() * 1e3);

    if checks.0.is_empty() {
        println!("all invariants hold");
        ExitCode::SUCCESS
    } else {
        for c in &checks.0 {
            eprintln!("invariant failed: {c}");
        }
        ExitCode::FAILURE
    }
}
