//! Loom models of the fence's races: signal vs wait vs callback add/remove vs drop.
//!
//! Run with
//! `RUSTFLAGS="--cfg gpusched_loom" cargo test --release -p gpusched-fence --test loom --target-dir target/loom`.
//! The crate's `sync` shim swaps std primitives (and `event_listener::Event`) for loom ones, so
//! loom explores every interleaving of the fence's own synchronisation.

#![cfg(gpusched_loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use gpusched_fence::{
    Fence, FenceArray, FenceContext, FenceError, FenceOps, FenceStatus, Timeline, WaitError,
};

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// A callback that counts its runs in `ran`.
fn count_run(ran: &Arc<AtomicUsize>) -> impl FnOnce(&Fence) + Send + 'static {
    let r = ran.clone();
    move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    }
}

/// A backend's completion word: the fence's ops report it signalled once it is non-zero.
struct Word(Arc<AtomicUsize>);

impl FenceOps for Word {
    fn signaled(&self) -> bool {
        self.0.load(Ordering::SeqCst) != 0
    }
}

/// Signal on one thread while another adds a callback: the callback runs exactly once, or the
/// add reports `AlreadySignaled` and it never runs.
#[test]
fn signal_vs_add_callback() {
    loom::model(|| {
        let (fence, signaller) = FenceContext::new("ring").next();
        let ran = counter();
        let t = thread::spawn(move || assert!(signaller.signal()));
        let r = ran.clone();
        let added = fence.add_callback(move |f| {
            assert!(f.is_signaled());
            r.fetch_add(1, Ordering::SeqCst);
        });
        t.join().unwrap();
        match added {
            Ok(_) => assert_eq!(ran.load(Ordering::SeqCst), 1),
            Err(back) => {
                assert_eq!(ran.load(Ordering::SeqCst), 0);
                drop(back.into_inner());
            }
        }
    });
}

/// Removing a callback races the signal: exactly one of "removed" and "ran".
#[test]
fn remove_callback_vs_signal() {
    loom::model(|| {
        let (fence, signaller) = FenceContext::new("ring").next();
        let ran = counter();
        let id = fence.add_callback(count_run(&ran)).unwrap();
        let t = thread::spawn(move || signaller.signal_error(FenceError::Cancelled));
        let removed = fence.remove_callback(id);
        t.join().unwrap();
        let runs = ran.load(Ordering::SeqCst);
        assert!(removed ^ (runs == 1), "removed={removed} runs={runs}");
        assert!(runs <= 1);
        assert_eq!(fence.status(), FenceStatus::Failed(FenceError::Cancelled));
    });
}

/// A blocking wait never misses the wakeup of a concurrent signal.
#[test]
fn wait_vs_signal() {
    loom::model(|| {
        let (fence, signaller) = FenceContext::new("ring").next();
        let f = fence.clone();
        let waiter = thread::spawn(move || f.wait());
        signaller.signal();
        assert_eq!(waiter.join().unwrap(), Ok(()));
    });
}

/// The timed wait (modelled without a clock) takes the same path and never misses it either.
#[test]
fn wait_timeout_vs_signal_error() {
    loom::model(|| {
        let (fence, signaller) = FenceContext::new("ring").next();
        let f = fence.clone();
        let waiter = thread::spawn(move || f.wait_timeout(std::time::Duration::from_secs(60)));
        signaller.signal_error(FenceError::DeviceLost);
        assert_eq!(waiter.join().unwrap(), Err(WaitError::Failed(FenceError::DeviceLost)));
    });
}

/// The signaller is dropped unsignalled while a thread waits: the waiter sees `Abandoned`.
#[test]
fn drop_signaller_vs_wait() {
    loom::model(|| {
        let (fence, signaller) = FenceContext::new("ring").next();
        let f = fence.clone();
        let waiter = thread::spawn(move || f.wait());
        let dropper = thread::spawn(move || drop(signaller));
        assert_eq!(waiter.join().unwrap(), Err(FenceError::Abandoned));
        dropper.join().unwrap();
    });
}

/// A waiter and a callback added concurrently with the signal: all complete, the callback
/// runs exactly once when it was added, never otherwise. Three threads: bounded preemptions
/// (as tokio's loom tests do) keep the model under a few seconds.
#[test]
fn waiter_and_callback_vs_signal() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let (fence, signaller) = FenceContext::new("ring").next();
        let ran = counter();
        let f = fence.clone();
        let w1 = thread::spawn(move || f.wait());
        let f = fence.clone();
        let cb = count_run(&ran);
        let adder = thread::spawn(move || f.add_callback(cb).is_ok());
        signaller.signal_error(FenceError::Killed);
        assert_eq!(fence.wait(), Err(FenceError::Killed));
        assert_eq!(w1.join().unwrap(), Err(FenceError::Killed));
        let added = adder.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), usize::from(added));
    });
}

/// A backend word that one thread polls (`is_signaled` signals on it) while the producer
/// signals: the fence signals once, callbacks run once, and exactly one side "won".
#[test]
fn backend_poll_vs_producer_signal() {
    loom::model(|| {
        let word = counter();
        let (fence, signaller) =
            FenceContext::new("hw").next_with_ops(Box::new(Word(word.clone())));
        let ran = counter();
        fence.add_callback(count_run(&ran)).unwrap();
        // The hardware completes before the producer signals.
        word.store(1, Ordering::SeqCst);
        let f = fence.clone();
        let poller = thread::spawn(move || f.is_signaled());
        let producer_won = signaller.signal();
        assert!(poller.join().unwrap());
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert_eq!(fence.status(), FenceStatus::Signaled);
        let _ = producer_won;
    });
}

/// Two callbacks are added on two threads while a third signals without the callback lock
/// (the fence signals with one RMW unless an add announced itself first): each callback runs
/// exactly once or its add reports `AlreadySignaled`.
#[test]
fn signal_vs_two_add_callbacks() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let (fence, signaller) = FenceContext::new("ring").next();
        let ran = counter();
        let add =
            |fence: &Fence, ran: &Arc<AtomicUsize>| fence.add_callback(count_run(ran)).is_ok();
        let (f, r) = (fence.clone(), ran.clone());
        let adder = thread::spawn(move || add(&f, &r));
        let t = thread::spawn(move || assert!(signaller.signal()));
        let mine = add(&fence, &ran);
        let theirs = adder.join().unwrap();
        t.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), usize::from(mine) + usize::from(theirs));
    });
}

/// A backend poll and the producer race to signal a fence with ops, the producer with an
/// error: one claim wins, and the loser returns only once the outcome is published, so a poller
/// that saw the backend done reads the fence as signalled, with the winner's outcome.
#[test]
fn claim_loser_sees_the_outcome() {
    loom::model(|| {
        let word = counter();
        let (fence, signaller) =
            FenceContext::new("hw").next_with_ops(Box::new(Word(word.clone())));
        word.store(1, Ordering::SeqCst);
        let f = fence.clone();
        let poller = thread::spawn(move || {
            assert!(f.is_signaled());
            f.status()
        });
        let producer_won = signaller.signal_error(FenceError::Cancelled);
        let seen = poller.join().unwrap();
        assert!(seen.is_signaled(), "the poller saw the backend done but the fence {seen:?}");
        assert_eq!(seen, fence.status());
        let expected = if producer_won {
            FenceStatus::Failed(FenceError::Cancelled)
        } else {
            FenceStatus::Signaled
        };
        assert_eq!(fence.status(), expected);
    });
}

/// An array's members signal on two threads: the array signals exactly once, after both.
#[test]
fn array_members_signal_concurrently() {
    loom::model(|| {
        let ctx = FenceContext::new("ring");
        let (a, sa) = ctx.next();
        let (b, sb) = ctx.next();
        let array = FenceArray::all([a, b]);
        let ran = counter();
        let r = ran.clone();
        array
            .add_callback(move |f| {
                assert!(f.children().iter().all(|m| m.is_signaled()));
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        let t = thread::spawn(move || sa.signal_error(FenceError::TimedOut));
        sb.signal();
        t.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert_eq!(array.status(), FenceStatus::Failed(FenceError::TimedOut));
    });
}

/// Asking for a point races its attach: the point fence resolves with the attached fence
/// either way (wait-before-signal, or an array over the attached point).
#[test]
fn timeline_point_vs_attach() {
    loom::model(|| {
        let tl = Arc::new(Timeline::new("syncobj"));
        let (f, s) = FenceContext::new("ring").next();
        let t2 = tl.clone();
        let attacher = thread::spawn(move || t2.attach(1, f).unwrap());
        let p = tl.point(1);
        attacher.join().unwrap();
        assert_eq!(p.status(), FenceStatus::Pending);
        s.signal_error(FenceError::Killed);
        assert_eq!(p.wait(), Err(FenceError::Killed));
    });
}

/// The timeline is dropped while another thread waits on a point never attached: the waiter
/// sees `Abandoned`.
#[test]
fn timeline_drop_vs_point_wait() {
    loom::model(|| {
        let tl = Timeline::new("syncobj");
        let p = tl.point(3);
        let waiter = thread::spawn(move || p.wait());
        drop(tl);
        assert_eq!(waiter.join().unwrap(), Err(FenceError::Abandoned));
    });
}

/// Two deadlines set concurrently: the earlier one is kept whatever the order, and the context
/// hook hears it exactly once; it hears the later one too when that lowered the deadline
/// first, possibly after the earlier one (concurrent setters are not ordered: a consumer
/// keeps the earliest it heard).
#[test]
fn set_deadline_vs_set_deadline() {
    loom::model(|| {
        let heard = Arc::new(loom::sync::Mutex::new(Vec::new()));
        let h = heard.clone();
        let ctx = FenceContext::builder("ring")
            .on_deadline(move |_, d| h.lock().unwrap().push(d))
            .build();
        let (fence, signaller) = ctx.next();
        let early = std::time::Instant::now() + std::time::Duration::from_millis(10);
        let late = early + std::time::Duration::from_millis(10);
        let f = fence.clone();
        let t = thread::spawn(move || f.set_deadline(late));
        fence.set_deadline(early);
        t.join().unwrap();
        assert_eq!(fence.deadline(), Some(early));
        let heard = heard.lock().unwrap().clone();
        assert_eq!(heard.iter().filter(|&&d| d == early).count(), 1, "{heard:?}");
        assert!(heard.iter().all(|&d| d == early || d == late), "{heard:?}");
        assert!(heard.len() <= 2, "{heard:?}");
        signaller.signal();
    });
}

/// A deadline set while the fence signals: either it is recorded (and heard) or it is dropped
/// as news for a signalled fence; the signal is unaffected.
#[test]
fn set_deadline_vs_signal() {
    loom::model(|| {
        let calls = counter();
        let c = calls.clone();
        let ctx = FenceContext::builder("ring")
            .on_deadline(move |_, _| {
                c.fetch_add(1, Ordering::SeqCst);
            })
            .build();
        let (fence, signaller) = ctx.next();
        let t = thread::spawn(move || assert!(signaller.signal()));
        let d = std::time::Instant::now();
        fence.set_deadline(d);
        t.join().unwrap();
        assert_eq!(fence.status(), FenceStatus::Signaled);
        let heard = calls.load(Ordering::SeqCst);
        assert_eq!(heard == 1, fence.deadline() == Some(d));
    });
}
