//! Backend-backed fences through a mock `FenceOps`: polling, lazy enabling, deadlines, names,
//! and the backend wait hook.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use gpusched_fence::{
    FenceArray, FenceContext, FenceError, FenceOps, FenceStatus, OpsWait, WaitError,
};

/// A mock hardware ring: a seqno word the "GPU" writes, and counters for every hook.
#[derive(Default)]
struct Hw {
    /// The last completed hardware seqno.
    completed: AtomicU64,
    enable_calls: AtomicUsize,
    /// What `enable_signaling` answers (`true`: armed; `false`: already complete).
    enable_answer: AtomicBool,
    deadlines: Mutex<Vec<Instant>>,
    waits: AtomicUsize,
    /// Whether `wait` is implemented (else `Unsupported`).
    has_wait: AtomicBool,
}

struct MockOps {
    hw: Arc<Hw>,
    seqno: u64,
}

impl FenceOps for MockOps {
    fn driver_name(&self) -> &str {
        "mock"
    }
    fn timeline_name(&self) -> Option<&str> {
        Some("mock-ring")
    }
    fn signaled(&self) -> bool {
        self.hw.completed.load(Ordering::Acquire) >= self.seqno
    }
    fn enable_signaling(&self) -> bool {
        self.hw.enable_calls.fetch_add(1, Ordering::SeqCst);
        self.hw.enable_answer.load(Ordering::SeqCst)
    }
    fn set_deadline(&self, deadline: Instant) {
        self.hw.deadlines.lock().unwrap().push(deadline);
    }
    fn wait(&self, deadline: Option<Instant>) -> OpsWait {
        if !self.hw.has_wait.load(Ordering::SeqCst) {
            return OpsWait::Unsupported;
        }
        self.hw.waits.fetch_add(1, Ordering::SeqCst);
        // Polls the hardware word, as vkWaitSemaphores would block on it.
        loop {
            if self.signaled() {
                return OpsWait::Signaled;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return OpsWait::TimedOut;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

fn hw() -> Arc<Hw> {
    let hw = Arc::new(Hw::default());
    hw.enable_answer.store(true, Ordering::SeqCst);
    hw
}

fn ops(hw: &Arc<Hw>, seqno: u64) -> Box<dyn FenceOps> {
    Box::new(MockOps { hw: hw.clone(), seqno })
}

#[test]
fn names_come_from_the_backend() {
    let hw = hw();
    let ctx = FenceContext::new("ctx-name");
    let (fence, _s) = ctx.next_with_ops(ops(&hw, 1));
    assert_eq!(fence.driver_name(), "mock");
    assert_eq!(fence.timeline_name(), "mock-ring");
    assert!(fence.children().is_empty());
}

#[test]
fn is_signaled_polls_the_backend_and_signals() {
    let hw = hw();
    let ctx = FenceContext::new("ring");
    let (fence, signaller) = ctx.next_with_ops(ops(&hw, 1));
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    fence
        .add_callback(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    assert!(!fence.is_signaled());
    assert_eq!(fence.status(), FenceStatus::Pending);
    hw.completed.store(1, Ordering::Release);
    // Polling signals the fence on the hardware word, and runs its callbacks here.
    assert!(fence.is_signaled());
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(fence.status(), FenceStatus::Signaled);
    assert!(fence.timestamp().is_some());
    // The producer's late signal finds it signalled and changes nothing.
    assert!(!signaller.signal_error(FenceError::TimedOut));
    assert_eq!(fence.status(), FenceStatus::Signaled);
    assert_eq!(ran.load(Ordering::SeqCst), 1, "callbacks ran exactly once");
}

#[test]
fn status_polls_too() {
    let hw = hw();
    let (fence, _s) = FenceContext::new("ring").next_with_ops(ops(&hw, 5));
    hw.completed.store(4, Ordering::Release);
    assert_eq!(fence.status(), FenceStatus::Pending);
    hw.completed.store(5, Ordering::Release);
    assert_eq!(fence.status(), FenceStatus::Signaled);
}

#[test]
fn enable_signaling_is_lazy_and_called_once() {
    let hw = hw();
    let ctx = FenceContext::new("ring");
    let (fence, signaller) = ctx.next_with_ops(ops(&hw, 1));
    // Queries do not enable signalling.
    let _ = fence.is_signaled();
    let _ = fence.status();
    fence.set_deadline(Instant::now());
    assert_eq!(hw.enable_calls.load(Ordering::SeqCst), 0);
    // The first callback enables it...
    fence.add_callback(|_| {}).unwrap();
    assert_eq!(hw.enable_calls.load(Ordering::SeqCst), 1);
    // ... and later waiters and callbacks do not call it again.
    fence.add_callback(|_| {}).unwrap();
    assert_eq!(fence.wait_timeout(Duration::from_millis(1)), Err(WaitError::Timeout));
    fence.enable_signaling();
    let _ = futures_lite::future::block_on(futures_lite::future::poll_once(
        fence.clone().into_future(),
    ));
    assert_eq!(hw.enable_calls.load(Ordering::SeqCst), 1);
    signaller.signal();
}

#[test]
fn first_waiter_enables_signaling() {
    let hw = hw();
    let (fence, signaller) = FenceContext::new("ring").next_with_ops(ops(&hw, 1));
    assert_eq!(fence.wait_timeout(Duration::ZERO), Err(WaitError::Timeout));
    assert_eq!(hw.enable_calls.load(Ordering::SeqCst), 1);
    signaller.signal();
}

#[test]
fn enable_signaling_on_a_signalled_fence_is_not_called() {
    let hw = hw();
    let (fence, signaller) = FenceContext::new("ring").next_with_ops(ops(&hw, 1));
    signaller.signal();
    fence.enable_signaling();
    assert!(fence.add_callback(|_| {}).is_err());
    assert_eq!(fence.wait(), Ok(()));
    assert_eq!(hw.enable_calls.load(Ordering::SeqCst), 0);
}

#[test]
fn enable_signaling_returning_false_signals_the_fence() {
    let hw = hw();
    hw.enable_answer.store(false, Ordering::SeqCst);
    let (fence, signaller) = FenceContext::new("ring").next_with_ops(ops(&hw, 1));
    let back = fence.add_callback(|_| panic!("must not run: the fence was already complete"));
    assert!(back.is_err(), "enabling found the work complete: the callback is refused");
    assert_eq!(fence.status(), FenceStatus::Signaled);
    assert!(!signaller.signal());
    assert_eq!(hw.enable_calls.load(Ordering::SeqCst), 1);
}

#[test]
fn set_deadline_is_forwarded_until_signalled() {
    let hw = hw();
    let (fence, signaller) = FenceContext::new("ring").next_with_ops(ops(&hw, 1));
    let d = Instant::now() + Duration::from_millis(16);
    fence.set_deadline(d);
    assert_eq!(*hw.deadlines.lock().unwrap(), vec![d]);
    signaller.signal();
    fence.set_deadline(d + Duration::from_secs(1));
    assert_eq!(hw.deadlines.lock().unwrap().len(), 1, "no hint to a signalled fence");
}

#[test]
fn set_deadline_reaches_array_members() {
    let hw_a = hw();
    let hw_b = hw();
    let ctx = FenceContext::new("ring");
    let (a, sa) = ctx.next_with_ops(ops(&hw_a, 1));
    let (b, sb) = ctx.next_with_ops(ops(&hw_b, 1));
    let array = FenceArray::all([a, b]);
    let d = Instant::now() + Duration::from_millis(5);
    array.set_deadline(d);
    assert_eq!(*hw_a.deadlines.lock().unwrap(), vec![d]);
    assert_eq!(*hw_b.deadlines.lock().unwrap(), vec![d]);
    // Nested: an array of arrays passes an earlier deadline down too; the same deadline again
    // is not news (the earliest wins) and stops at the inner array.
    let outer = FenceArray::any([array.clone()]);
    outer.set_deadline(d);
    assert_eq!(hw_a.deadlines.lock().unwrap().len(), 1);
    let earlier = d - Duration::from_millis(1);
    outer.set_deadline(earlier);
    assert_eq!(*hw_a.deadlines.lock().unwrap(), vec![d, earlier]);
    sa.signal();
    sb.signal();
    assert_eq!(array.wait(), Ok(()));
}

#[test]
fn plain_wait_uses_the_backend_wait() {
    let hw = hw();
    hw.has_wait.store(true, Ordering::SeqCst);
    let (fence, signaller) = FenceContext::new("ring").next_with_ops(ops(&hw, 3));
    // Timed out in the backend.
    assert_eq!(fence.wait_timeout(Duration::from_millis(5)), Err(WaitError::Timeout));
    assert_eq!(hw.waits.load(Ordering::SeqCst), 1);
    // The hardware completes; the producer never signals, yet the backend wait ends the wait
    // and the fence is marked signalled on the hardware word.
    let h = hw.clone();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        h.completed.store(3, Ordering::Release);
    });
    assert_eq!(fence.wait(), Ok(()));
    assert_eq!(hw.waits.load(Ordering::SeqCst), 2);
    assert_eq!(fence.status(), FenceStatus::Signaled);
    t.join().unwrap();
    assert!(!signaller.signal());
}

#[test]
fn unsupported_backend_wait_falls_back_to_the_generic_wait() {
    let hw = hw();
    let (fence, signaller) = FenceContext::new("ring").next_with_ops(ops(&hw, 1));
    let f = fence.clone();
    let t = thread::spawn(move || f.wait());
    thread::sleep(Duration::from_millis(20));
    signaller.signal_error(FenceError::DeviceLost);
    assert_eq!(t.join().unwrap(), Err(FenceError::DeviceLost));
    assert_eq!(hw.waits.load(Ordering::SeqCst), 0);
}

#[test]
fn default_ops_do_nothing_surprising() {
    struct Nothing;
    impl FenceOps for Nothing {}
    let ctx = FenceContext::builder("plain").driver_name("drv").build();
    let (fence, signaller) = ctx.next_with_ops(Box::new(Nothing));
    assert_eq!(fence.driver_name(), "gpusched", "the ops' default driver name");
    assert_eq!(fence.timeline_name(), "plain");
    assert!(!fence.is_signaled());
    fence.set_deadline(Instant::now());
    assert_eq!(fence.wait_timeout(Duration::from_millis(1)), Err(WaitError::Timeout));
    signaller.signal();
    assert_eq!(fence.wait(), Ok(()));
}

#[test]
fn untimed_wait_survives_a_backend_that_reports_a_timeout() {
    /// A broken backend wait that always says "timed out".
    struct Liar;
    impl FenceOps for Liar {
        fn wait(&self, _deadline: Option<Instant>) -> OpsWait {
            OpsWait::TimedOut
        }
    }
    let (fence, signaller) = FenceContext::new("ring").next_with_ops(Box::new(Liar));
    assert_eq!(fence.wait_timeout(Duration::from_millis(1)), Err(WaitError::Timeout));
    let f = fence.clone();
    let t = thread::spawn(move || f.wait());
    thread::sleep(Duration::from_millis(20));
    signaller.signal_error(FenceError::Killed);
    assert_eq!(t.join().unwrap(), Err(FenceError::Killed));
}
