//! `defer_after_callbacks`: work a callback defers runs once, after the signal's last
//! callback, on the signalling thread; at once outside a callback run; nested signals drain
//! their own; a full queue runs the work at once; nothing allocates.

use std::sync::{Arc, Mutex};

use gpusched_fence::{defer_after_callbacks, AfterCallbacks, FenceContext};

/// Records a line into a shared log when run.
struct Note {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl AfterCallbacks for Note {
    fn after_callbacks(self: Arc<Self>) {
        self.log.lock().unwrap().push(format!("deferred {}", self.name));
    }
}

fn log() -> Arc<Mutex<Vec<String>>> {
    Arc::new(Mutex::new(Vec::new()))
}

#[test]
fn deferred_work_runs_once_after_the_last_callback() {
    let log = log();
    let note = Arc::new(Note { name: "pump", log: log.clone() });
    let (fence, signaller) = FenceContext::new("gate").next();
    for i in 0..3 {
        let (l, n) = (log.clone(), note.clone());
        fence
            .add_callback(move |_| {
                l.lock().unwrap().push(format!("callback {i}"));
                defer_after_callbacks(n);
            })
            .unwrap();
    }
    signaller.signal();
    assert_eq!(
        *log.lock().unwrap(),
        ["callback 0", "callback 1", "callback 2", "deferred pump"],
        "deferred once, after every callback"
    );
    assert_eq!(Arc::strong_count(&note), 1, "the deferred Arc clones were released");
}

#[test]
fn outside_a_callback_run_the_work_runs_at_once() {
    let log = log();
    defer_after_callbacks(Arc::new(Note { name: "now", log: log.clone() }));
    assert_eq!(*log.lock().unwrap(), ["deferred now"]);
}

#[test]
fn a_nested_signal_drains_its_own_work_first() {
    let log = log();
    let ctx = FenceContext::new("nest");
    let (outer, outer_s) = ctx.next();
    let (inner, inner_s) = ctx.next();
    {
        let l = log.clone();
        inner
            .add_callback(move |_| {
                l.lock().unwrap().push("inner callback".into());
                defer_after_callbacks(Arc::new(Note { name: "inner", log: l.clone() }));
            })
            .unwrap();
    }
    {
        let l = log.clone();
        let mut inner_s = Some(inner_s);
        outer
            .add_callback(move |_| {
                defer_after_callbacks(Arc::new(Note { name: "outer", log: l.clone() }));
                if let Some(s) = inner_s.take() {
                    s.signal();
                }
                l.lock().unwrap().push("outer callback".into());
            })
            .unwrap();
    }
    outer_s.signal();
    assert_eq!(
        *log.lock().unwrap(),
        ["inner callback", "deferred inner", "outer callback", "deferred outer"]
    );
}

#[test]
fn a_full_queue_runs_the_work_at_once() {
    let log = log();
    let (fence, signaller) = FenceContext::new("many").next();
    let notes: Vec<_> = (0..40).map(|_| Arc::new(Note { name: "n", log: log.clone() })).collect();
    let l = log.clone();
    let ns = notes.clone();
    fence
        .add_callback(move |_| {
            for n in ns {
                defer_after_callbacks(n);
            }
            l.lock().unwrap().push("callback done".into());
        })
        .unwrap();
    signaller.signal();
    let log = log.lock().unwrap();
    let at = log.iter().position(|l| l == "callback done").unwrap();
    assert_eq!(log.len(), 41, "every deferred note ran once");
    assert!(at > 0 && at < 40, "the overflow ran at once, the rest after: {at}");
    assert!(notes.iter().all(|n| Arc::strong_count(n) == 1));
}

#[test]
fn a_panicking_deferred_work_does_not_lose_the_others() {
    struct Boom;
    impl AfterCallbacks for Boom {
        fn after_callbacks(self: Arc<Self>) {
            panic!("deferred work panicked");
        }
    }
    let log = log();
    let (fence, signaller) = FenceContext::new("boom").next();
    let l = log.clone();
    fence
        .add_callback(move |_| {
            defer_after_callbacks(Arc::new(Note { name: "first", log: l.clone() }));
            defer_after_callbacks(Arc::new(Boom));
        })
        .unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| signaller.signal()));
    assert!(r.is_err(), "the panic is resumed");
    assert!(fence.is_signaled());
    assert_eq!(*log.lock().unwrap(), ["deferred first"]);
    // The thread's queue is usable again.
    let (f2, s2) = FenceContext::new("after").next();
    let l = log.clone();
    f2.add_callback(move |_| defer_after_callbacks(Arc::new(Note { name: "again", log: l })))
        .unwrap();
    s2.signal();
    assert_eq!(log.lock().unwrap().last().unwrap(), "deferred again");
}
