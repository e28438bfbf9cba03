//! Deadline hints (`dma_fence_set_deadline`): the earliest deadline wins, backends and context
//! hooks learn of it, and composites pass it to their component fences.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpusched_fence::{
    merge, Fence, FenceArray, FenceChain, FenceContext, FenceOps, Signaller, Timeline,
};

/// Records every deadline its backend is given.
#[derive(Default)]
struct Rec {
    deadlines: Mutex<Vec<Instant>>,
}

struct RecOps(Arc<Rec>);

impl FenceOps for RecOps {
    fn set_deadline(&self, deadline: Instant) {
        self.0.deadlines.lock().unwrap().push(deadline);
    }
}

fn backend_fence(ctx: &FenceContext) -> (Fence, Signaller, Arc<Rec>) {
    let rec = Arc::new(Rec::default());
    let (f, s) = ctx.next_with_ops(Box::new(RecOps(rec.clone())));
    (f, s, rec)
}

fn seen(rec: &Rec) -> Vec<Instant> {
    rec.deadlines.lock().unwrap().clone()
}

fn at(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

#[test]
fn the_earliest_deadline_wins() {
    let ctx = FenceContext::new("ring");
    let (f, s, rec) = backend_fence(&ctx);
    assert_eq!(f.deadline(), None);
    let late = at(100);
    let early = late - Duration::from_millis(50);
    f.set_deadline(late);
    f.set_deadline(early);
    f.set_deadline(late); // later than the one set: ignored
    f.set_deadline(early); // the same: ignored
    assert_eq!(seen(&rec), [late, early]);
    assert_eq!(f.deadline(), Some(early));
    assert_eq!(s.deadline(), Some(early), "the producer sees it through its signaller");
    s.signal();
    f.set_deadline(early - Duration::from_millis(10));
    assert_eq!(seen(&rec).len(), 2, "no hint to a signalled fence");
    assert_eq!(f.deadline(), Some(early), "the deadline is kept after the signal");
}

#[test]
fn plain_fences_remember_deadlines() {
    let (f, s) = FenceContext::new("ring").next();
    let d = at(5);
    f.set_deadline(d);
    assert_eq!(s.deadline(), Some(d));
    let signalled = Fence::signaled();
    signalled.set_deadline(d);
    assert_eq!(signalled.deadline(), None, "no effect on a signalled fence");
    s.signal();
}

#[test]
fn the_context_hook_is_told_of_each_lowering() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let ctx = FenceContext::builder("sched")
        .on_deadline(move |f, d| c.lock().unwrap().push((f.seqno(), d)))
        .build();
    let (f1, s1) = ctx.next();
    let (f2, s2) = ctx.next();
    let d = at(20);
    f2.set_deadline(d);
    f2.set_deadline(d + Duration::from_millis(1));
    f2.set_deadline(d - Duration::from_millis(1));
    s1.signal();
    f1.set_deadline(d);
    assert_eq!(*calls.lock().unwrap(), [(2, d), (2, d - Duration::from_millis(1))]);
    s2.signal();
}

#[test]
fn arrays_pass_deadlines_to_their_members() {
    let ctx = FenceContext::new("ring");
    let (a, sa, ra) = backend_fence(&ctx);
    let (b, sb, rb) = backend_fence(&ctx);
    let array = FenceArray::all([a, b]);
    let d = at(10);
    array.set_deadline(d);
    array.set_deadline(d + Duration::from_millis(1));
    assert_eq!(seen(&ra), [d]);
    assert_eq!(seen(&rb), [d]);
    sa.signal();
    sb.signal();
}

#[test]
fn chains_pass_deadlines_to_every_pending_node() {
    let ctx = FenceContext::new("ring");
    let (a, sa, ra) = backend_fence(&ctx);
    let (b, sb, rb) = backend_fence(&ctx);
    let (c, _sc, rc) = backend_fence(&ctx);
    let n1 = FenceChain::link(None, a, 1);
    let n2 = FenceChain::link(Some(n1), b, 2);
    let n3 = FenceChain::link(Some(n2), c, 3);
    let d = at(10);
    n3.set_deadline(d);
    assert_eq!((seen(&ra), seen(&rb), seen(&rc)), (vec![d], vec![d], vec![d]));
    // A node whose fence signalled is collected; the others still get later hints.
    sb.signal();
    let earlier = d - Duration::from_millis(5);
    n3.set_deadline(earlier);
    assert_eq!(seen(&ra), [d, earlier]);
    assert_eq!(seen(&rb), [d]);
    assert_eq!(seen(&rc), [d, earlier]);
    sa.signal();
}

#[test]
fn timeline_points_pass_deadlines_on() {
    let ctx = FenceContext::new("ring");
    let tl = Timeline::new("syncobj");
    let (a, sa, ra) = backend_fence(&ctx);
    tl.attach(1, a).unwrap();
    let d = at(10);
    tl.point(1).set_deadline(d);
    assert_eq!(seen(&ra), [d]);
    // Wait-before-signal: a deadline set before the point is attached reaches it on attach,
    // and one set after reaches it at once.
    let p3 = tl.point(3);
    p3.set_deadline(d);
    let (b, sb, rb) = backend_fence(&ctx);
    tl.attach(3, b).unwrap();
    assert_eq!(seen(&rb), [d]);
    let earlier = d - Duration::from_millis(5);
    p3.set_deadline(earlier);
    assert_eq!(seen(&rb), [d, earlier]);
    assert_eq!(seen(&ra), [d, earlier], "point 3 needs point 1 too");
    sa.signal();
    sb.signal();
}

#[test]
fn merge_results_pass_deadlines_on() {
    let (a, sa, ra) = backend_fence(&FenceContext::new("a"));
    let (b, sb, rb) = backend_fence(&FenceContext::new("b"));
    let merged = merge([&a, &b]);
    let d = at(10);
    merged.set_deadline(d);
    assert_eq!((seen(&ra), seen(&rb)), (vec![d], vec![d]));
    sa.signal();
    sb.signal();
}

/// The hook runs on the setting thread, concurrently with signalling, exactly once per
/// lowering, however many threads race to set the same deadline.
#[test]
fn racing_setters_lower_once_per_deadline() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let ctx = FenceContext::builder("sched")
        .on_deadline(move |_, _| {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let (f, s) = ctx.next();
    let d = at(50);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let f = f.clone();
            std::thread::spawn(move || f.set_deadline(d))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(f.deadline(), Some(d));
    s.signal();
}
