//! Callbacks: add, remove, run exactly once on the signalling thread in add order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use gpusched_fence::{Callback, FenceContext, FenceError};

#[test]
fn callbacks_run_once_in_add_order_on_the_signalling_thread() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let log: Arc<Mutex<Vec<(usize, ThreadId)>>> = Arc::default();
    for i in 0..10 {
        let log = log.clone();
        fence
            .add_callback(move |f| {
                assert!(f.is_signaled(), "callbacks run after the fence is marked signalled");
                log.lock().unwrap().push((i, std::thread::current().id()));
            })
            .unwrap();
    }
    assert!(log.lock().unwrap().is_empty(), "nothing runs before the signal");
    let signalling_thread = std::thread::spawn(move || {
        signaller.signal();
        std::thread::current().id()
    })
    .join()
    .unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log.iter().map(|e| e.0).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    assert!(log.iter().all(|e| e.1 == signalling_thread));
}

#[test]
fn callback_sees_the_error() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    fence.add_callback(move |f| *s.lock().unwrap() = Some(f.status())).unwrap();
    signaller.signal_error(FenceError::Driver(-22));
    assert_eq!(
        *seen.lock().unwrap(),
        Some(gpusched_fence::FenceStatus::Failed(FenceError::Driver(-22)))
    );
}

#[test]
fn add_after_signal_hands_the_closure_back() {
    let (fence, signaller) = FenceContext::new("ring").next();
    signaller.signal();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let err = fence.add_callback(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let closure = err.expect_err("the fence has signalled").into_inner();
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a refused callback is not run");
    closure(&fence);
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the handed-back closure is the one we gave");

    let cb = Callback::new(|_| {});
    let back = fence.add_prepared_callback(cb).expect_err("signalled");
    assert_eq!(format!("{back:?}"), "AlreadySignaled(..)");
    assert_eq!(back.to_string(), "the fence has already signalled");
}

#[test]
fn remove_before_signal_prevents_the_run() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let ids: Vec<_> = (0..5)
        .map(|i| {
            let r = ran.clone();
            fence.add_callback(move |_| r.lock().unwrap().push(i)).unwrap()
        })
        .collect();
    assert!(fence.remove_callback(ids[1]));
    assert!(fence.remove_callback(ids[3]));
    assert!(!fence.remove_callback(ids[3]), "a second removal finds nothing");
    signaller.signal();
    assert_eq!(*ran.lock().unwrap(), vec![0, 2, 4], "order of the rest is kept");
    assert!(!fence.remove_callback(ids[0]), "after the signal the callback already ran");
}

#[test]
fn removed_callback_is_dropped_not_run() {
    struct DropCount(Arc<AtomicUsize>);
    impl Drop for DropCount {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let (fence, signaller) = FenceContext::new("ring").next();
    let guard = DropCount(drops.clone());
    let id = fence
        .add_callback(move |_| {
            let _g = &guard;
            panic!("removed callback ran");
        })
        .unwrap();
    assert!(fence.remove_callback(id));
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the closure is dropped on removal");
    signaller.signal();
}

#[test]
fn callbacks_run_when_the_signaller_is_dropped() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    fence
        .add_callback(move |f| {
            assert_eq!(f.error(), Some(FenceError::Abandoned));
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    drop(signaller);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn a_callback_may_add_callbacks_to_other_fences_and_signal_them() {
    // The completion chain: the hardware fence's callback signals the finished fence.
    let ctx = FenceContext::new("ring");
    let (hw, hw_s) = ctx.next();
    let (finished, finished_s) = ctx.next();
    let mut slot = Some(finished_s);
    hw.add_callback(move |f| {
        let s = slot.take().unwrap();
        s.signal_result(f.status().error().map_or(Ok(()), Err));
    })
    .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    finished
        .add_callback(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    hw_s.signal_error(FenceError::TimedOut);
    assert_eq!(finished.error(), Some(FenceError::TimedOut));
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn a_callback_may_inspect_its_own_fence_and_remove_others() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let f2 = fence.clone();
    let second_id = Arc::new(Mutex::new(None));
    let sid = second_id.clone();
    fence
        .add_callback(move |f| {
            // Callbacks run after the lock is released: calling back into the fence is fine.
            assert!(f.is_signaled());
            let id = sid.lock().unwrap().unwrap();
            assert!(!f2.remove_callback(id), "the list was taken before callbacks ran");
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let r = ran.clone();
    let id = fence
        .add_callback(move |_| {
            r.fetch_add(10, Ordering::SeqCst);
        })
        .unwrap();
    *second_id.lock().unwrap() = Some(id);
    signaller.signal();
    assert_eq!(ran.load(Ordering::SeqCst), 11);
}

#[test]
fn prepared_callbacks_run_like_plain_ones() {
    let (fence, signaller) = FenceContext::new("ring").next();
    fence.reserve_callbacks(4);
    let ran = Arc::new(Mutex::new(Vec::new()));
    let mut ids = Vec::new();
    for i in 0..4 {
        let r = ran.clone();
        ids.push(
            fence.add_prepared_callback(Callback::new(move |_| r.lock().unwrap().push(i))).unwrap(),
        );
    }
    assert!(fence.remove_callback(ids[2]));
    assert_eq!(format!("{:?}", Callback::new(|_| {})), "Callback(..)");
    signaller.signal();
    assert_eq!(*ran.lock().unwrap(), vec![0, 1, 3]);
}

#[test]
fn ids_are_distinct_per_fence() {
    let (fence, _s) = FenceContext::new("ring").next();
    let a = fence.add_callback(|_| {}).unwrap();
    let b = fence.add_callback(|_| {}).unwrap();
    assert_ne!(a, b);
}

#[test]
#[should_panic(expected = "was returned by another fence")]
fn removing_through_another_fence_is_a_misuse() {
    let ctx = FenceContext::new("ring");
    let (a, _sa) = ctx.next();
    let (b, _sb) = ctx.next();
    let _ = b.add_callback(|_| {}).unwrap();
    let id = a.add_callback(|_| {}).unwrap();
    // Same per-fence number as b's first callback: without the check it would remove that one.
    b.remove_callback(id);
}

#[test]
fn a_panicking_callback_does_not_stop_the_others() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let ctx = gpusched_fence::FenceContext::new("panicky");
    let (fence, signaller) = ctx.next();
    let ran = Arc::new(AtomicUsize::new(0));
    for i in 0..3 {
        let ran = ran.clone();
        fence
            .add_callback(move |_| {
                ran.fetch_add(1, Ordering::SeqCst);
                if i == 1 {
                    panic!("callback {i} fails");
                }
            })
            .unwrap();
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| signaller.signal()));
    assert!(r.is_err(), "the callback's panic resumes on the signalling thread");
    assert_eq!(ran.load(Ordering::SeqCst), 3);
    assert!(fence.is_signaled());
}
