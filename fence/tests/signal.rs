//! Signalling: exactly once, with or without an error, timestamps, abandonment, stubs.

use std::time::Instant;

use gpusched_fence::{Fence, FenceContext, FenceError, FenceStatus, WaitError};

const ALL_ERRORS: [FenceError; 8] = [
    FenceError::Cancelled,
    FenceError::TimedOut,
    FenceError::DeviceLost,
    FenceError::Killed,
    FenceError::Interrupted,
    FenceError::Abandoned,
    FenceError::Driver(-5),
    FenceError::Driver(i32::MIN),
];

#[test]
fn signal_success() {
    let ctx = FenceContext::new("ring");
    let (fence, signaller) = ctx.next();
    assert!(!fence.is_signaled());
    assert_eq!(fence.status(), FenceStatus::Pending);
    assert!(!fence.status().is_signaled());
    assert_eq!(fence.timestamp(), None);
    assert_eq!(fence.error(), None);
    assert!(signaller.fence().ptr_eq(&fence));
    assert!(signaller.signal());
    assert!(fence.is_signaled());
    assert_eq!(fence.status(), FenceStatus::Signaled);
    assert_eq!(fence.error(), None);
    assert_eq!(fence.wait(), Ok(()));
}

#[test]
fn signal_with_every_error() {
    let ctx = FenceContext::new("ring");
    for e in ALL_ERRORS {
        let (fence, signaller) = ctx.next();
        assert!(signaller.signal_error(e));
        assert_eq!(fence.status(), FenceStatus::Failed(e));
        assert_eq!(fence.status().error(), Some(e));
        assert_eq!(fence.error(), Some(e));
        assert_eq!(fence.wait(), Err(e));
        assert_eq!(fence.wait_timeout(std::time::Duration::ZERO), Err(WaitError::Failed(e)));
    }
}

#[test]
fn signal_result_maps_both_arms() {
    let ctx = FenceContext::new("ring");
    let (ok, s) = ctx.next();
    assert!(s.signal_result(Ok(())));
    assert_eq!(ok.status(), FenceStatus::Signaled);
    let (bad, s) = ctx.next();
    assert!(s.signal_result(Err(FenceError::Driver(17))));
    assert_eq!(bad.status(), FenceStatus::Failed(FenceError::Driver(17)));
}

#[test]
fn error_predicates_and_errnos() {
    assert!(FenceError::Cancelled.is_cancelled());
    assert!(FenceError::TimedOut.is_timed_out());
    assert!(FenceError::DeviceLost.is_device_lost());
    assert!(!FenceError::Killed.is_cancelled());
    assert_eq!(FenceError::Cancelled.errno(), -125);
    assert_eq!(FenceError::TimedOut.errno(), -62);
    assert_eq!(FenceError::DeviceLost.errno(), -19);
    assert_eq!(FenceError::Interrupted.errno(), -512);
    assert_eq!(FenceError::Driver(-77).errno(), -77);
    assert_eq!(FenceError::DeviceLost.to_string(), "device lost");
    let w = WaitError::Failed(FenceError::Killed);
    assert_eq!(w.fence_error(), Some(FenceError::Killed));
    assert!(!w.is_timeout());
    assert!(WaitError::Timeout.is_timeout());
    assert!(WaitError::Interrupted.is_interrupted());
    assert_eq!(WaitError::Timeout.fence_error(), None);
    assert_eq!(WaitError::from(FenceError::Cancelled), WaitError::Failed(FenceError::Cancelled));
    // Display is lower-case, per the style guide.
    for e in ALL_ERRORS {
        let s = e.to_string();
        assert_eq!(s, s.to_lowercase(), "{e:?}");
    }
}

#[test]
fn timestamp_is_taken_at_signal_time() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let before = Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let start_signal = Instant::now();
    signaller.signal();
    let after = Instant::now();
    let ts = fence.timestamp().expect("signalled fences have a timestamp");
    assert!(ts >= start_signal && ts <= after, "{ts:?} not in [{start_signal:?}, {after:?}]");
    assert!(ts > before);
    // Stable once set.
    assert_eq!(fence.timestamp(), Some(ts));
}

#[test]
fn error_fences_also_get_a_timestamp() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let before = Instant::now();
    signaller.signal_error(FenceError::TimedOut);
    let ts = fence.timestamp().unwrap();
    assert!(ts >= before && ts <= Instant::now());
}

#[test]
fn dropping_an_unsignalled_signaller_abandons_the_fence() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let waiter = {
        let f = fence.clone();
        std::thread::spawn(move || f.wait())
    };
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = ran.clone();
    fence
        .add_callback(move |f| {
            assert_eq!(f.error(), Some(FenceError::Abandoned));
            r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .unwrap();
    drop(signaller);
    assert_eq!(fence.status(), FenceStatus::Failed(FenceError::Abandoned));
    assert!(fence.timestamp().is_some());
    assert_eq!(waiter.join().unwrap(), Err(FenceError::Abandoned));
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn signalling_then_dropping_does_not_overwrite() {
    let (fence, signaller) = FenceContext::new("ring").next();
    assert!(signaller.signal_error(FenceError::DeviceLost));
    // `signal` consumed and dropped the signaller: the Drop impl must not re-signal.
    assert_eq!(fence.error(), Some(FenceError::DeviceLost));
    let (fence, signaller) = FenceContext::new("ring").next();
    assert!(signaller.signal());
    assert_eq!(fence.status(), FenceStatus::Signaled);
}

#[test]
fn signalling_from_another_thread() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let t = std::thread::spawn(move || signaller.signal_error(FenceError::Killed));
    assert_eq!(fence.wait(), Err(FenceError::Killed));
    assert!(t.join().unwrap());
}

#[test]
fn stub_fences() {
    let a = Fence::signaled();
    let b = Fence::signaled();
    assert!(a.is_signaled());
    assert_eq!(a.status(), FenceStatus::Signaled);
    assert_eq!(a.wait(), Ok(()));
    assert_eq!(a.context(), 0);
    assert!(a.timestamp().is_some());
    assert!(a.ptr_eq(&b), "stubs share one allocation");
    assert_eq!(a, b);
    let f = Fence::failed(FenceError::Cancelled);
    assert_eq!(f.status(), FenceStatus::Failed(FenceError::Cancelled));
    assert_eq!(f.wait(), Err(FenceError::Cancelled));
    assert!(a.add_callback(|_| panic!("a stub never runs callbacks")).is_err());
}

#[test]
fn equality_is_identity() {
    let ctx = FenceContext::new("ring");
    let (a, _sa) = ctx.next();
    let (b, _sb) = ctx.next();
    assert_eq!(a, a.clone());
    assert_ne!(a, b);
    let dbg = format!("{a:?}");
    assert!(dbg.contains("ring"), "{dbg}");
}
