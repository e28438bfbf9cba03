//! Stateful property test of `Resv`: random sequences of add / signal / replace / unlock,
//! checked after every step against properties that do not depend on how the list is kept:
//! - coverage: for every fence added with usage U and not signalled yet, a query for U still
//!   sees a fence of the same context that is as late or later (so waiting for U waits for it);
//! - no growth: at most one entry per (context, usage) for the adding contexts;
//! - usage filtering and `test_signaled` agree with the entries;
//! - the unlocked snapshot holds the locked list's unsignalled fences at the unlock, in order,
//!   and nothing else but (not yet pruned) signalled ones.

use std::collections::VecDeque;

use gpusched_fence::{Fence, FenceContext, Signaller};
use gpusched_resv::{Resv, ResvGuard, Usage};
use proptest::prelude::*;

const CONTEXTS: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    /// Add the next fence of context `ctx` with `usage`.
    Add { ctx: usize, usage: Usage },
    /// Signal the oldest pending fence of context `ctx` (fences of a context signal in order).
    Signal { ctx: usize },
    /// Replace every fence of context `ctx` by a fresh fence of the replacement context.
    Replace { ctx: usize, usage: Usage },
    /// Unlock (publishing the snapshot) and lock again.
    Unlock,
}

fn usage() -> impl Strategy<Value = Usage> {
    prop::sample::select(Usage::ALL.to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..CONTEXTS, usage()).prop_map(|(ctx, usage)| Op::Add { ctx, usage }),
        3 => (0..CONTEXTS).prop_map(|ctx| Op::Signal { ctx }),
        1 => (0..CONTEXTS, usage()).prop_map(|(ctx, usage)| Op::Replace { ctx, usage }),
        2 => Just(Op::Unlock),
    ]
}

fn entries(g: &ResvGuard<'_>) -> Vec<(Fence, Usage)> {
    g.fences(Usage::Bookkeep).map(|(f, u)| (f.clone(), u)).collect()
}

fn check(g: &ResvGuard<'_>, obligations: &[(Fence, Usage)], rings: &[FenceContext]) {
    let list = entries(g);
    for (f, u) in obligations.iter().filter(|(f, _)| !f.is_signaled()) {
        let covered =
            g.fences(*u).any(|(e, _)| e.context() == f.context() && (e.ptr_eq(f) || e.is_later(f)));
        assert!(covered, "fence {}#{} ({u:?}) is not covered by {list:?}", f.context(), f.seqno());
    }
    for ring in rings {
        for u in Usage::ALL {
            let n = list.iter().filter(|(f, eu)| f.context() == ring.id() && *eu == u).count();
            assert!(n <= 1, "{n} entries of {} with {u:?}", ring.name());
        }
    }
    for u in Usage::ALL {
        let expected: Vec<&Fence> =
            list.iter().filter(|(_, eu)| *eu <= u).map(|(f, _)| f).collect();
        let got = g.get_fences(u);
        assert_eq!(got.len(), expected.len());
        assert!(got.iter().zip(&expected).all(|(a, b)| a.ptr_eq(b)));
        assert_eq!(g.test_signaled(u), expected.iter().all(|f| f.is_signaled()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn resv_model(ops in prop::collection::vec(op(), 1..48)) {
        let rings: Vec<FenceContext> =
            (0..CONTEXTS).map(|i| FenceContext::new(format!("ring{i}"))).collect();
        let replacement = FenceContext::new("replacement");
        let mut pending: Vec<VecDeque<Signaller>> = (0..CONTEXTS).map(|_| VecDeque::new()).collect();
        let mut replacement_signallers = Vec::new();
        let mut obligations: Vec<(Fence, Usage)> = Vec::new();
        let resv = Resv::new();
        let mut g = resv.lock_no_ctx();
        for op in ops {
            match op {
                Op::Add { ctx, usage } => {
                    let (f, s) = rings[ctx].next();
                    g.reserve_fences(1).unwrap();
                    g.add_fence(f.clone(), usage);
                    pending[ctx].push_back(s);
                    obligations.push((f, usage));
                }
                Op::Signal { ctx } => {
                    if let Some(s) = pending[ctx].pop_front() {
                        s.signal();
                    }
                }
                Op::Replace { ctx, usage } => {
                    let (r, s) = replacement.next();
                    g.replace_fences(rings[ctx].id(), &r, usage);
                    replacement_signallers.push(s);
                    // What waited for the replaced fences now waits for the replacement.
                    let mut replaced = false;
                    obligations.retain(|(f, _)| {
                        let hit = f.context() == rings[ctx].id() && !f.is_signaled();
                        replaced |= hit;
                        !hit
                    });
                    if replaced {
                        obligations.push((r, usage));
                    }
                }
                Op::Unlock => {
                    let at_unlock: Vec<Fence> = entries(&g).into_iter().map(|(f, _)| f).collect();
                    drop(g);
                    let snap = resv.fences_unlocked(Usage::Bookkeep);
                    // The snapshot is the list at the unlock; signalled fences may be pruned
                    // from it (they are when the list changed) and nothing signalled since.
                    let live = |v: &[Fence]| -> Vec<Fence> {
                        v.iter().filter(|f| !f.is_signaled()).cloned().collect()
                    };
                    let (snap_live, list_live) = (live(&snap), live(&at_unlock));
                    prop_assert_eq!(snap_live.len(), list_live.len());
                    prop_assert!(snap_live.iter().zip(&list_live).all(|(a, b)| a.ptr_eq(b)));
                    prop_assert!(snap.iter().all(|f| at_unlock.iter().any(|e| e.ptr_eq(f))));
                    g = resv.lock_no_ctx();
                }
            }
            check(&g, &obligations, &rings);
        }
        drop(g);
    }
}
