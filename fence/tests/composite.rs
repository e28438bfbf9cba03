//! Composite fences: arrays, timelines (chains with wait-before-signal), unwrap and merge.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use gpusched_fence::{
    merge, unwrap, Fence, FenceArray, FenceContext, FenceError, FenceStatus, PointOrderError,
    Signaller, Timeline, WaitError,
};

const WATCHDOG: Duration = Duration::from_secs(30);

fn pending(ctx: &FenceContext, n: usize) -> (Vec<Fence>, Vec<Signaller>) {
    (0..n).map(|_| ctx.next()).unzip()
}

#[test]
fn array_all_signals_when_every_member_has() {
    let ctx = FenceContext::new("ring");
    let (fences, mut signallers) = pending(&ctx, 3);
    let array = FenceArray::all(fences.clone());
    assert_ne!(array.context(), ctx.id(), "an array has its own context");
    assert_eq!(array.children().len(), 3);
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    array
        .add_callback(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    signallers.remove(1).signal();
    signallers.remove(0).signal();
    assert_eq!(array.status(), FenceStatus::Pending);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    signallers.remove(0).signal();
    assert_eq!(array.status(), FenceStatus::Signaled);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn array_all_carries_the_first_member_error() {
    let ctx = FenceContext::new("ring");
    let (fences, mut s) = pending(&ctx, 3);
    let array = FenceArray::all(fences);
    s.remove(2).signal_error(FenceError::TimedOut);
    s.remove(0).signal_error(FenceError::DeviceLost);
    assert_eq!(array.status(), FenceStatus::Pending, "still waiting for member 1");
    s.remove(0).signal();
    assert_eq!(array.status(), FenceStatus::Failed(FenceError::TimedOut));
    assert_eq!(array.wait(), Err(FenceError::TimedOut));
}

#[test]
fn array_with_already_signalled_members() {
    let ctx = FenceContext::new("ring");
    let (a, sa) = ctx.next();
    sa.signal_error(FenceError::Killed);
    let all = FenceArray::all([a.clone(), Fence::signaled()]);
    assert_eq!(all.status(), FenceStatus::Failed(FenceError::Killed));
    let ok = FenceArray::all([Fence::signaled(), Fence::signaled()]);
    assert_eq!(ok.status(), FenceStatus::Signaled);
}

#[test]
fn empty_arrays_are_signalled() {
    assert_eq!(FenceArray::all([]).status(), FenceStatus::Signaled);
    assert_eq!(FenceArray::any(Vec::new()).status(), FenceStatus::Signaled);
}

#[test]
fn array_any_signals_with_the_first_member() {
    let ctx = FenceContext::new("ring");
    let (fences, mut s) = pending(&ctx, 3);
    let any = FenceArray::any(fences.clone());
    assert_eq!(any.status(), FenceStatus::Pending);
    s.remove(1).signal_error(FenceError::Cancelled);
    assert_eq!(any.status(), FenceStatus::Failed(FenceError::Cancelled));
    // Later members change nothing.
    s.remove(0).signal();
    assert_eq!(any.status(), FenceStatus::Failed(FenceError::Cancelled));
    drop(s);
    let (fences, mut s) = pending(&ctx, 2);
    let any = FenceArray::any(fences);
    s.remove(1).signal();
    assert_eq!(any.status(), FenceStatus::Signaled);
}

#[test]
fn array_member_abandoned_fails_the_array() {
    let ctx = FenceContext::new("ring");
    let (fences, s) = pending(&ctx, 2);
    let array = FenceArray::all(fences);
    let waiter = {
        let a = array.clone();
        thread::spawn(move || a.wait_timeout(WATCHDOG))
    };
    drop(s);
    assert_eq!(waiter.join().unwrap(), Err(WaitError::Failed(FenceError::Abandoned)));
}

#[test]
fn array_signalled_from_many_threads() {
    let ctx = FenceContext::new("ring");
    for _ in 0..50 {
        let (fences, s) = pending(&ctx, 8);
        let array = FenceArray::all(fences);
        let ts: Vec<_> = s.into_iter().map(|s| thread::spawn(move || s.signal())).collect();
        assert_eq!(array.wait_timeout(WATCHDOG), Ok(()));
        for t in ts {
            t.join().unwrap();
        }
    }
}

#[test]
fn timeline_points_resolve_in_order() {
    let tl = Timeline::new("syncobj");
    assert_eq!(tl.last_point(), 0);
    assert_eq!(tl.completed(), 0);
    let ctx = FenceContext::new("ring");
    let (f1, s1) = ctx.next();
    let (f3, s3) = ctx.next();
    tl.attach(1, f1).unwrap();
    tl.attach(3, f3).unwrap();
    assert_eq!(tl.last_point(), 3);
    let p1 = tl.point(1);
    let p2 = tl.point(2);
    let p3 = tl.point(3);
    assert_eq!(p2.context(), tl.context());
    assert_eq!(p2.seqno(), 2);
    assert!(p3.is_later(&p2));
    assert_eq!(p1.status(), FenceStatus::Pending);
    s1.signal();
    assert_eq!(p1.status(), FenceStatus::Signaled);
    assert_eq!(tl.completed(), 1);
    // Point 2 is covered by point 3: it needs point 3.
    assert_eq!(p2.status(), FenceStatus::Pending);
    s3.signal();
    assert_eq!(p2.status(), FenceStatus::Signaled);
    assert_eq!(p3.status(), FenceStatus::Signaled);
    assert_eq!(tl.completed(), 3);
    // Points that were reached (and pruned) stay reached.
    assert_eq!(tl.point(1).status(), FenceStatus::Signaled);
    assert_eq!(tl.point(3).status(), FenceStatus::Signaled);
}

#[test]
fn timeline_point_needs_all_earlier_points() {
    let tl = Timeline::new("syncobj");
    let ctx_a = FenceContext::new("a");
    let ctx_b = FenceContext::new("b");
    let (f1, s1) = ctx_a.next();
    let (f2, s2) = ctx_b.next();
    tl.attach(1, f1).unwrap();
    tl.attach(2, f2).unwrap();
    let p2 = tl.point(2);
    s2.signal();
    assert_eq!(p2.status(), FenceStatus::Pending, "point 1 is still pending");
    assert_eq!(tl.completed(), 0);
    s1.signal();
    assert_eq!(p2.wait_timeout(WATCHDOG), Ok(()));
    assert_eq!(tl.completed(), 2);
}

#[test]
fn timeline_wait_before_signal() {
    let tl = Arc::new(Timeline::new("syncobj"));
    let p5 = tl.point(5);
    let p7 = tl.point(7);
    assert_eq!(p5.seqno(), 5);
    assert_eq!(p5.status(), FenceStatus::Pending);
    let waiter = {
        let p = p5.clone();
        thread::spawn(move || p.wait_timeout(WATCHDOG))
    };
    let ctx = FenceContext::new("ring");
    let (f4, s4) = ctx.next();
    tl.attach(4, f4).unwrap();
    s4.signal();
    assert_eq!(p5.status(), FenceStatus::Pending, "point 4 does not reach point 5");
    let (f6, s6) = ctx.next();
    tl.attach(6, f6).unwrap();
    assert_eq!(p5.status(), FenceStatus::Pending, "attached, not yet signalled");
    s6.signal();
    assert_eq!(waiter.join().unwrap(), Ok(()));
    assert_eq!(p5.status(), FenceStatus::Signaled);
    assert_eq!(p7.status(), FenceStatus::Pending);
    assert_eq!(tl.completed(), 6);
    // Attaching an already signalled fence resolves a waiting point at once.
    tl.attach(9, Fence::signaled()).unwrap();
    assert_eq!(p7.status(), FenceStatus::Signaled);
}

#[test]
fn timeline_errors_propagate_to_later_points() {
    let tl = Timeline::new("syncobj");
    let ctx = FenceContext::new("ring");
    let (f1, s1) = ctx.next();
    let (f2, s2) = ctx.next();
    let early = tl.point(2);
    tl.attach(1, f1).unwrap();
    tl.attach(2, f2).unwrap();
    s1.signal_error(FenceError::DeviceLost);
    s2.signal();
    assert_eq!(tl.point(2).status(), FenceStatus::Failed(FenceError::DeviceLost));
    assert_eq!(early.status(), FenceStatus::Failed(FenceError::DeviceLost));
    assert_eq!(tl.completed(), 2, "reached, even with an error");
}

#[test]
fn timeline_refuses_non_increasing_points() {
    let tl = Timeline::new("syncobj");
    tl.attach(3, Fence::signaled()).unwrap();
    let err = tl.attach(3, Fence::signaled()).unwrap_err();
    assert_eq!(err, PointOrderError { point: 3, last: 3 });
    assert_eq!(tl.attach(2, Fence::signaled()), Err(PointOrderError { point: 2, last: 3 }));
    assert_eq!(err.to_string(), "timeline point 3 is not after the last attached point 3");
    assert_eq!(tl.last_point(), 3, "a refused attach changes nothing");
    tl.attach(4, Fence::signaled()).unwrap();
}

#[test]
fn dropping_the_timeline_abandons_pending_points() {
    let tl = Timeline::new("syncobj");
    let ctx = FenceContext::new("ring");
    let (f1, s1) = ctx.next();
    tl.attach(1, f1).unwrap();
    let attached = tl.point(1);
    let unattached = tl.point(10);
    let waiter = {
        let p = unattached.clone();
        thread::spawn(move || p.wait())
    };
    drop(tl);
    assert_eq!(waiter.join().unwrap(), Err(FenceError::Abandoned));
    assert_eq!(unattached.status(), FenceStatus::Failed(FenceError::Abandoned));
    // Attached points still follow their fences.
    assert_eq!(attached.status(), FenceStatus::Pending);
    s1.signal();
    assert_eq!(attached.status(), FenceStatus::Signaled);
}

#[test]
fn timeline_point_zero_on_an_empty_timeline_is_reached() {
    let tl = Timeline::new("syncobj");
    assert_eq!(tl.point(0).status(), FenceStatus::Signaled);
}

#[test]
fn unwrap_flattens_nested_composites() {
    let ctx = FenceContext::new("ring");
    let (f, s) = pending(&ctx, 4);
    let inner = FenceArray::all([f[0].clone(), f[1].clone()]);
    let outer = FenceArray::any([inner, f[2].clone()]);
    let tl = Timeline::new("tl");
    tl.attach(1, outer.clone()).unwrap();
    tl.attach(2, f[3].clone()).unwrap();
    let point = tl.point(2);
    let leaves = unwrap(&point);
    assert_eq!(leaves.len(), 4);
    for (leaf, want) in leaves.iter().zip(&f) {
        assert!(leaf.ptr_eq(want));
    }
    // A plain fence unwraps to itself.
    let single = unwrap(&f[0]);
    assert_eq!(single.len(), 1);
    assert!(single[0].ptr_eq(&f[0]));
    drop(s);
}

#[test]
fn merge_dedupes_per_context_keeping_the_later() {
    let a = FenceContext::new("a");
    let b = FenceContext::new("b");
    let (a1, sa1) = a.next();
    let (a2, sa2) = a.next();
    let (b1, sb1) = b.next();
    let merged = merge([&a2, &b1, &a1]);
    let leaves = unwrap(&merged);
    assert_eq!(leaves.len(), 2);
    assert!(leaves.iter().any(|l| l.ptr_eq(&a2)));
    assert!(leaves.iter().any(|l| l.ptr_eq(&b1)));
    assert!(!leaves.iter().any(|l| l.ptr_eq(&a1)));
    sa1.signal();
    sa2.signal();
    assert_eq!(merged.status(), FenceStatus::Pending);
    sb1.signal();
    assert_eq!(merged.status(), FenceStatus::Signaled);
}

#[test]
fn merge_flattens_and_drops_signalled() {
    let a = FenceContext::new("a");
    let (a1, sa1) = a.next();
    let (a2, sa2) = a.next();
    sa1.signal();
    let arr = FenceArray::all([a1.clone(), a2.clone()]);
    // One pending leaf left: the fence itself, no wrapper.
    let merged = merge([&arr, &Fence::signaled()]);
    assert!(merged.ptr_eq(&a2));
    sa2.signal();
    // Nothing left: a signalled stub.
    let merged = merge([&arr, &a1, &a2]);
    assert!(merged.ptr_eq(&Fence::signaled()));
    let empty: [&Fence; 0] = [];
    assert_eq!(merge(empty).status(), FenceStatus::Signaled);
}

#[test]
fn merge_keeps_failed_fences() {
    let a = FenceContext::new("a");
    let b = FenceContext::new("b");
    let (a1, sa1) = a.next();
    let (b1, sb1) = b.next();
    sa1.signal_error(FenceError::Killed);
    let merged = merge([&a1, &b1]);
    assert_eq!(merged.status(), FenceStatus::Pending);
    sb1.signal();
    assert_eq!(merged.status(), FenceStatus::Failed(FenceError::Killed));
}

#[test]
fn merge_with_wrapped_u32_seqnos_keeps_the_later() {
    let ctx = FenceContext::builder("wrap")
        .seqno_width(gpusched_fence::SeqnoWidth::U32)
        .start_after(u32::MAX as u64 - 1)
        .build();
    let (before, _s1) = ctx.next(); // u32::MAX
    let (after, _s2) = ctx.next(); // wraps to 0 in the low 32 bits
    assert_eq!(after.seqno() as u32, 0);
    let merged = merge([&after, &before]);
    assert!(merged.ptr_eq(&after));
    let merged = merge([&before, &after]);
    assert!(merged.ptr_eq(&after));
}

/// Regression: a completed point whose fence was pruned must not resolve to the next attached
/// (pending) point. Failed before the fix: `point(2)` returned an array of point 5.
#[test]
fn timeline_point_of_a_pruned_point_is_signalled() {
    let tl = Timeline::new("syncobj");
    let ctx = FenceContext::new("ring");
    let (f2, s2) = ctx.next();
    let (f5, s5) = ctx.next();
    tl.attach(2, f2).unwrap();
    tl.attach(5, f5).unwrap();
    s2.signal();
    assert_eq!(tl.completed(), 2, "point 2 is pruned");
    for n in [1, 2] {
        let p = tl.point(n);
        assert_eq!(p.status(), FenceStatus::Signaled, "point {n} has completed");
    }
    // Points after the pruned one still need point 5.
    assert_eq!(tl.point(3).status(), FenceStatus::Pending);
    assert_eq!(tl.point(5).status(), FenceStatus::Pending);
    s5.signal();
    assert_eq!(tl.point(3).status(), FenceStatus::Signaled);
}

/// A completed point that failed reports its error, also after earlier points were pruned.
#[test]
fn timeline_point_of_a_failed_point_carries_its_error() {
    let tl = Timeline::new("syncobj");
    let ctx = FenceContext::new("ring");
    let (f1, s1) = ctx.next();
    let (f2, s2) = ctx.next();
    let (f4, _s4) = ctx.next();
    tl.attach(1, f1).unwrap();
    tl.attach(2, f2).unwrap();
    tl.attach(4, f4).unwrap();
    s1.signal();
    s2.signal_error(FenceError::Killed);
    assert_eq!(tl.point(1).status(), FenceStatus::Signaled);
    assert_eq!(tl.point(2).status(), FenceStatus::Failed(FenceError::Killed));
    assert_eq!(tl.completed(), 2);
    assert_eq!(tl.point(3).status(), FenceStatus::Pending, "point 3 needs point 4");
}

/// The merged fence does not depend on the input order: its members are ordered by context.
/// Failed before: members were kept in first-seen order.
#[test]
fn merge_is_ordered_by_context() {
    let ctxs: Vec<FenceContext> = (0..4).map(|i| FenceContext::new(format!("c{i}"))).collect();
    let fences: Vec<(Fence, Signaller)> = ctxs.iter().map(FenceContext::next).collect();
    let forward: Vec<&Fence> = fences.iter().map(|(f, _)| f).collect();
    let backward: Vec<&Fence> = fences.iter().rev().map(|(f, _)| f).collect();
    for input in [forward, backward] {
        let merged = merge(input);
        let ids: Vec<u64> = merged.children().iter().map(Fence::context).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted);
        assert_eq!(ids.len(), 4);
    }
}

/// One fence per context, the later one, whatever the order; a failed earlier fence of the
/// same context is superseded by the later one (its context signals in order).
#[test]
fn merge_keeps_one_fence_per_context() {
    let a = FenceContext::new("a");
    let b = FenceContext::new("b");
    let (a1, sa1) = a.next();
    let (a2, _sa2) = a.next();
    let (a3, _sa3) = a.next();
    let (b1, _sb1) = b.next();
    sa1.signal_error(FenceError::Killed);
    let merged = merge([&a2, &b1, &a3, &a1]);
    let members = merged.children();
    assert_eq!(members.len(), 2);
    assert!(members[0].ptr_eq(&a3), "the later fence of context a");
    assert!(members[1].ptr_eq(&b1));
    // A failed fence alone on its context is kept, and the merge carries its error.
    let merged = merge([&a1]);
    assert!(merged.ptr_eq(&a1), "a single remaining fence is returned itself");
    assert_eq!(merged.status(), FenceStatus::Failed(FenceError::Killed));
}

/// Point 0 is always reached (a Vulkan timeline wait for 0 is satisfied), even with pending
/// points attached. Failed before: it resolved to the first attached point.
#[test]
fn timeline_point_zero_is_reached_with_points_pending() {
    let tl = Timeline::new("syncobj");
    let (f, _s) = FenceContext::new("ring").next();
    tl.attach(3, f).unwrap();
    assert_eq!(tl.point(0).status(), FenceStatus::Signaled);
}
