//! Contexts (timelines), seqnos and the kernel's wrap-around aware ordering.

use std::collections::HashSet;

use gpusched_fence::{seqno_is_later, Fence, FenceContext, SeqnoWidth};

#[test]
fn context_ids_are_unique_across_threads() {
    let ids: Vec<u64> = (0..4)
        .map(|_| std::thread::spawn(|| (0..100).map(|_| FenceContext::new("c").id()).collect()))
        .flat_map(|t| t.join().unwrap_or_else(|_| Vec::new()))
        .collect();
    assert_eq!(ids.len(), 400);
    let set: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(set.len(), 400, "duplicate context ids handed out");
    assert!(!set.contains(&0), "context id 0 is reserved for stubs");
}

#[test]
fn seqnos_start_at_one_and_increase() {
    let ctx = FenceContext::new("ring0");
    assert_eq!(ctx.name(), "ring0");
    assert_eq!(ctx.last_seqno(), 0);
    assert_eq!(ctx.seqno_width(), SeqnoWidth::U64);
    let fences: Vec<Fence> = (0..5)
        .map(|_| {
            let (f, s) = ctx.next();
            s.signal();
            f
        })
        .collect();
    for (i, f) in fences.iter().enumerate() {
        assert_eq!(f.seqno(), i as u64 + 1);
        assert_eq!(f.context(), ctx.id());
        assert_eq!(f.timeline_name(), "ring0");
        assert_eq!(f.driver_name(), "gpusched");
    }
    assert_eq!(ctx.last_seqno(), 5);
    assert_eq!(ctx.next_seqno(), 6);
    let (f, _s) = ctx.next();
    assert_eq!(f.seqno(), 7);
    // An explicit seqno does not move the counter.
    let (g, _t) = ctx.with_seqno(100, None);
    assert_eq!(g.seqno(), 100);
    assert_eq!(ctx.last_seqno(), 7);
}

#[test]
fn seqnos_are_unique_under_concurrency() {
    let ctx = std::sync::Arc::new(FenceContext::new("shared"));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                (0..500)
                    .map(|_| {
                        let (f, s) = ctx.next();
                        s.signal();
                        f.seqno()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    all.sort_unstable();
    assert_eq!(all, (1..=2000).collect::<Vec<u64>>());
}

#[test]
fn builder_sets_driver_width_and_start() {
    let ctx = FenceContext::builder("hw")
        .driver_name("mock-driver")
        .seqno_width(SeqnoWidth::U32)
        .start_after(41)
        .build();
    assert_eq!(ctx.seqno_width(), SeqnoWidth::U32);
    assert!(ctx.interrupt_domain().is_none());
    let (f, _s) = ctx.next();
    assert_eq!(f.seqno(), 42);
    assert_eq!(f.driver_name(), "mock-driver");
    assert_eq!(f.seqno_width(), SeqnoWidth::U32);
}

#[test]
fn u64_ordering_is_plain_comparison() {
    assert!(seqno_is_later(2, 1, SeqnoWidth::U64));
    assert!(!seqno_is_later(1, 2, SeqnoWidth::U64));
    assert!(!seqno_is_later(5, 5, SeqnoWidth::U64));
    // No wrap-around for 64-bit seqnos: a huge value is simply later.
    assert!(seqno_is_later(u64::MAX, 1, SeqnoWidth::U64));
    assert!(!seqno_is_later(1, u64::MAX, SeqnoWidth::U64));
    // Values that differ only above bit 31 are ordered in 64-bit mode.
    assert!(seqno_is_later(1 << 32, 0, SeqnoWidth::U64));
}

#[test]
fn u32_ordering_wraps_like_the_kernel() {
    let w = SeqnoWidth::U32;
    assert!(seqno_is_later(2, 1, w));
    assert!(!seqno_is_later(1, 2, w));
    assert!(!seqno_is_later(7, 7, w));
    // 0 comes after u32::MAX on a wrapped 32-bit timeline.
    assert!(seqno_is_later(0, u32::MAX as u64, w));
    assert!(!seqno_is_later(u32::MAX as u64, 0, w));
    assert!(seqno_is_later(5, u32::MAX as u64 - 5, w));
    // Only the low 32 bits count.
    assert!(!seqno_is_later(1 << 32, 0, w));
    assert!(seqno_is_later((1 << 32) + 1, 0, w));
    // Distances of 2^31 or more flip, as `(s32)(a - b) > 0` does.
    assert!(seqno_is_later((1 << 31) - 1, 0, w));
    assert!(!seqno_is_later(1 << 31, 0, w));
}

#[test]
fn fences_on_a_wrapping_u32_context_stay_ordered() {
    let ctx = FenceContext::builder("wrap")
        .seqno_width(SeqnoWidth::U32)
        .start_after(u32::MAX as u64 - 2)
        .build();
    let fences: Vec<Fence> = (0..6)
        .map(|_| {
            let (f, s) = ctx.next();
            s.signal();
            f
        })
        .collect();
    // Seqnos cross the 32-bit boundary.
    assert_eq!(fences[0].seqno() as u32, u32::MAX - 1);
    assert_eq!(fences[1].seqno() as u32, u32::MAX);
    assert_eq!(fences[2].seqno() as u32, 0);
    assert_eq!(fences[3].seqno() as u32, 1);
    for i in 0..fences.len() {
        for j in 0..fences.len() {
            assert_eq!(fences[i].is_later(&fences[j]), i > j, "is_later({i}, {j})");
        }
    }
    assert!(fences[2].later(&fences[1]).unwrap().ptr_eq(&fences[2]));
    assert!(fences[1].later(&fences[2]).unwrap().ptr_eq(&fences[2]));
}

#[test]
fn fences_of_different_contexts_are_unordered() {
    let (a, sa) = FenceContext::new("a").next();
    let (b, sb) = FenceContext::new("b").next();
    assert!(!a.is_later(&b));
    assert!(!b.is_later(&a));
    assert!(a.later(&b).is_none());
    assert!(a.later(&a).unwrap().ptr_eq(&a));
    sa.signal();
    sb.signal();
}
