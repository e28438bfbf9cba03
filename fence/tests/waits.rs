//! Blocking waits: plain, timed, deadline, interruptible (with an `InterruptDomain`), and
//! waits on many fences. Sleeps only give the other thread time to block; no assertion depends
//! on a timing, except that a timeout does not return before its deadline.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use gpusched_fence::{
    wait_all, wait_any, Fence, FenceContext, FenceError, InterruptDomain, WaitError,
};

/// Deadlock watchdog for joins: generous, never a speed assertion.
const WATCHDOG: Duration = Duration::from_secs(30);

/// Runs `f` on a thread and returns a receiver for its result.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

fn settle() {
    thread::sleep(Duration::from_millis(30));
}

#[test]
fn wait_blocks_until_signal() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let f = fence.clone();
    let rx = spawn(move || f.wait());
    settle();
    assert!(rx.try_recv().is_err(), "the waiter returned before the signal");
    signaller.signal();
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), Ok(()));
}

/// The pre-sleep spin is a process-wide knob; both sides of it (a waiter that sees the signal
/// while spinning, one that sleeps first) wake with the outcome, and many sleepers (more than
/// the 8 a `parking_lot` wake list holds inline) all wake from one signal.
#[test]
fn waits_wake_with_and_without_the_spin() {
    let default = gpusched_fence::wait_spin();
    assert!(!default.is_zero(), "blocking waits spin by default");
    for spin in [Duration::ZERO, Duration::from_millis(200)] {
        gpusched_fence::set_wait_spin(spin);
        assert_eq!(gpusched_fence::wait_spin(), spin);
        let (fence, signaller) = FenceContext::new("ring").next();
        let rxs: Vec<_> = (0..12)
            .map(|_| {
                let f = fence.clone();
                spawn(move || f.wait_timeout(WATCHDOG))
            })
            .collect();
        thread::sleep(Duration::from_millis(5));
        signaller.signal_error(FenceError::TimedOut);
        for rx in rxs {
            assert_eq!(
                rx.recv_timeout(WATCHDOG).unwrap(),
                Err(WaitError::Failed(FenceError::TimedOut)),
                "spin {spin:?}"
            );
        }
    }
    gpusched_fence::set_wait_spin(default);
}

#[test]
fn many_waiters_all_wake() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let rxs: Vec<_> = (0..8)
        .map(|_| {
            let f = fence.clone();
            spawn(move || f.wait())
        })
        .collect();
    settle();
    signaller.signal_error(FenceError::Cancelled);
    for rx in rxs {
        assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), Err(FenceError::Cancelled));
    }
}

#[test]
fn wait_timeout_times_out_then_succeeds() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let start = Instant::now();
    assert_eq!(fence.wait_timeout(Duration::from_millis(20)), Err(WaitError::Timeout));
    assert!(start.elapsed() >= Duration::from_millis(20), "returned before the timeout");
    assert_eq!(fence.wait_timeout(Duration::ZERO), Err(WaitError::Timeout));
    let f = fence.clone();
    let rx = spawn(move || f.wait_timeout(WATCHDOG));
    settle();
    signaller.signal();
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), Ok(()));
    assert_eq!(fence.wait_timeout(Duration::ZERO), Ok(()));
}

#[test]
fn wait_timeout_reports_the_fence_error() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let f = fence.clone();
    let rx = spawn(move || f.wait_timeout(WATCHDOG));
    settle();
    signaller.signal_error(FenceError::DeviceLost);
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), Err(WaitError::Failed(FenceError::DeviceLost)));
}

#[test]
fn wait_deadline_in_the_past_and_future() {
    let (fence, signaller) = FenceContext::new("ring").next();
    assert_eq!(fence.wait_deadline(Instant::now()), Err(WaitError::Timeout));
    let deadline = Instant::now() + Duration::from_millis(15);
    assert_eq!(fence.wait_deadline(deadline), Err(WaitError::Timeout));
    assert!(Instant::now() >= deadline);
    let f = fence.clone();
    let rx = spawn(move || f.wait_deadline(Instant::now() + WATCHDOG));
    settle();
    signaller.signal_error(FenceError::Killed);
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), Err(WaitError::Failed(FenceError::Killed)));
}

#[test]
fn huge_timeout_means_forever() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let f = fence.clone();
    let rx = spawn(move || f.wait_timeout(Duration::MAX));
    settle();
    signaller.signal();
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), Ok(()));
}

#[test]
fn abandoned_wakes_blocked_waiters() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let f = fence.clone();
    let rx = spawn(move || f.wait_timeout(WATCHDOG));
    settle();
    drop(signaller);
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), Err(WaitError::Failed(FenceError::Abandoned)));
}

fn domain_ctx(name: &str) -> (InterruptDomain, FenceContext) {
    let d = InterruptDomain::new(name);
    let ctx = FenceContext::builder("ring").interrupt_domain(&d).build();
    (d, ctx)
}

#[test]
fn interrupt_breaks_interruptible_waits_but_not_plain_ones() {
    let (domain, ctx) = domain_ctx("reset");
    assert_eq!(domain.name(), "reset");
    assert_eq!(ctx.interrupt_domain().unwrap().name(), "reset");
    let (fence, signaller) = ctx.next();
    assert_eq!(fence.interrupt_domain().unwrap().name(), "reset");
    let f = fence.clone();
    let interruptible = spawn(move || f.wait_interruptible(None));
    let f = fence.clone();
    let interruptible_timed = spawn(move || f.wait_interruptible(Some(WATCHDOG)));
    let f = fence.clone();
    let plain = spawn(move || f.wait());
    settle();
    assert!(interruptible.try_recv().is_err());
    let epoch = domain.epoch();
    let section = domain.begin_interrupt();
    assert_eq!(domain.epoch(), epoch + 1);
    assert!(domain.is_interrupting());
    assert!(section.domain().is_interrupting());
    assert_eq!(interruptible.recv_timeout(WATCHDOG).unwrap(), Err(WaitError::Interrupted));
    assert_eq!(interruptible_timed.recv_timeout(WATCHDOG).unwrap(), Err(WaitError::Interrupted));
    // New interruptible waits fail at once while the section is open.
    assert_eq!(fence.wait_interruptible(None), Err(WaitError::Interrupted));
    assert_eq!(fence.wait_interruptible(Some(WATCHDOG)), Err(WaitError::Interrupted));
    // The plain wait is untouched.
    settle();
    assert!(plain.try_recv().is_err(), "a plain wait must not be interrupted");
    drop(section);
    assert!(!domain.is_interrupting());
    // After the section, interruptible waits work again.
    assert_eq!(fence.wait_interruptible(Some(Duration::from_millis(10))), Err(WaitError::Timeout));
    let f = fence.clone();
    let again = spawn(move || f.wait_interruptible(None));
    settle();
    signaller.signal();
    assert_eq!(again.recv_timeout(WATCHDOG).unwrap(), Ok(()));
    assert_eq!(plain.recv_timeout(WATCHDOG).unwrap(), Ok(()));
}

#[test]
fn signalled_fence_returns_its_outcome_even_during_a_section() {
    let (domain, ctx) = domain_ctx("reset");
    let (ok, s) = ctx.next();
    s.signal();
    let (bad, s) = ctx.next();
    s.signal_error(FenceError::TimedOut);
    let (pending, _s) = ctx.next();
    let _section = domain.begin_interrupt();
    assert_eq!(ok.wait_interruptible(None), Ok(()));
    assert_eq!(bad.wait_interruptible(None), Err(WaitError::Failed(FenceError::TimedOut)));
    assert_eq!(pending.wait_interruptible(None), Err(WaitError::Interrupted));
}

#[test]
fn nested_sections_keep_interrupting_until_the_last_ends() {
    let (domain, ctx) = domain_ctx("reset");
    let (fence, _s) = ctx.next();
    let a = domain.begin_interrupt();
    let b = domain.clone().begin_interrupt();
    drop(a);
    assert!(domain.is_interrupting());
    assert_eq!(fence.wait_interruptible(Some(WATCHDOG)), Err(WaitError::Interrupted));
    drop(b);
    assert!(!domain.is_interrupting());
    assert_eq!(fence.wait_interruptible(Some(Duration::ZERO)), Err(WaitError::Timeout));
}

#[test]
fn interruptible_wait_without_a_domain_is_a_plain_wait() {
    let (fence, signaller) = FenceContext::new("ring").next();
    assert!(fence.interrupt_domain().is_none());
    assert_eq!(fence.wait_interruptible(Some(Duration::from_millis(5))), Err(WaitError::Timeout));
    let f = fence.clone();
    let rx = spawn(move || f.wait_interruptible(None));
    settle();
    signaller.signal_error(FenceError::Cancelled);
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), Err(WaitError::Failed(FenceError::Cancelled)));
}

#[test]
fn other_domains_do_not_interrupt() {
    let (_domain, ctx) = domain_ctx("mine");
    let other = InterruptDomain::new("other");
    let (fence, signaller) = ctx.next();
    let f = fence.clone();
    let rx = spawn(move || f.wait_interruptible(None));
    settle();
    let _s = other.begin_interrupt();
    settle();
    assert!(rx.try_recv().is_err(), "another domain's reset interrupted the wait");
    signaller.signal();
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), Ok(()));
}

#[test]
fn wait_any_returns_the_signalled_index() {
    let ctx = FenceContext::new("ring");
    let pairs: Vec<_> = (0..4).map(|_| ctx.next()).collect();
    let fences: Vec<Fence> = pairs.iter().map(|(f, _)| f.clone()).collect();
    let mut signallers: Vec<_> = pairs.into_iter().map(|(_, s)| Some(s)).collect();
    assert_eq!(wait_any(&fences, Some(Duration::from_millis(10))), Err(WaitError::Timeout));
    let fs = fences.clone();
    let rx = spawn(move || wait_any(&fs, None));
    settle();
    signallers[2].take().unwrap().signal_error(FenceError::Killed);
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), Ok(2));
    // Already signalled: returns at once, even with a zero timeout.
    assert_eq!(wait_any(&fences, Some(Duration::ZERO)), Ok(2));
    assert_eq!(fences[2].error(), Some(FenceError::Killed));
}

#[test]
fn wait_any_of_nothing_is_an_error() {
    assert_eq!(wait_any(&[], None), Err(WaitError::NoFences));
    assert_eq!(WaitError::NoFences.to_string(), "wait on an empty set of fences");
}

#[test]
fn wait_all_waits_for_every_fence_and_reports_the_first_error() {
    let ctx = FenceContext::new("ring");
    let pairs: Vec<_> = (0..3).map(|_| ctx.next()).collect();
    let fences: Vec<Fence> = pairs.iter().map(|(f, _)| f.clone()).collect();
    let mut signallers: Vec<_> = pairs.into_iter().map(|(_, s)| Some(s)).collect();
    signallers[0].take().unwrap().signal();
    assert_eq!(wait_all(&fences, Some(Duration::from_millis(10))), Err(WaitError::Timeout));
    let fs = fences.clone();
    let rx = spawn(move || wait_all(&fs, Some(WATCHDOG)));
    signallers[2].take().unwrap().signal_error(FenceError::DeviceLost);
    settle();
    assert!(rx.try_recv().is_err(), "wait_all returned with a member pending");
    signallers[1].take().unwrap().signal_error(FenceError::Cancelled);
    // Slice order, not signal order.
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), Err(WaitError::Failed(FenceError::Cancelled)));
    assert_eq!(wait_all(&[], None), Ok(()));
    let ok = [Fence::signaled(), Fence::signaled()];
    assert_eq!(wait_all(&ok, Some(Duration::ZERO)), Ok(()));
}
