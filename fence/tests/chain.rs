//! Fence chains (`dma_fence_chain`): finding points, garbage collection, signalling order,
//! errors, unwrapping, long chains.

use std::time::Duration;

use gpusched_fence::{
    merge, unwrap, ChainSeqnoError, Fence, FenceChain, FenceContext, FenceError, FenceStatus,
    Signaller,
};

const WATCHDOG: Duration = Duration::from_secs(60);

/// A chain of `n` nodes at seqnos 1..=n over fresh fences; returns the nodes (oldest first)
/// and the contained fences' signallers.
fn chain(n: u64) -> (Vec<Fence>, Vec<Signaller>) {
    let ctx = FenceContext::new("ring");
    let mut nodes: Vec<Fence> = Vec::new();
    let mut signallers = Vec::new();
    for seqno in 1..=n {
        let (f, s) = ctx.next();
        nodes.push(FenceChain::link(nodes.last().cloned(), f, seqno));
        signallers.push(s);
    }
    (nodes, signallers)
}

#[test]
fn nodes_share_the_context_and_seqnos() {
    let (nodes, _s) = chain(3);
    assert!(nodes.iter().all(FenceChain::is_chain));
    assert!(nodes.iter().all(|n| n.context() == nodes[0].context()));
    assert_eq!(nodes.iter().map(Fence::seqno).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(FenceChain::prev_seqno(&nodes[2]), Some(2));
    assert_eq!(FenceChain::prev_seqno(&nodes[0]), Some(0));
    assert!(nodes[2].is_later(&nodes[1]));
    assert_eq!(FenceChain::prev_seqno(&Fence::signaled()), None);
}

/// A node whose seqno is not after its chain predecessor's gets a context of its own and the
/// predecessor's seqno (`dma_fence_chain_init`).
#[test]
fn a_node_that_goes_backwards_starts_a_new_context() {
    let (nodes, _s) = chain(5);
    let (f, _sf) = FenceContext::new("other").next();
    let back = FenceChain::link(Some(nodes[4].clone()), f, 3);
    assert_ne!(back.context(), nodes[4].context());
    assert_eq!(back.seqno(), 5);
    assert_eq!(FenceChain::prev_seqno(&back), Some(0));
    // A plain previous fence: a new context, the seqno as given.
    let (p, _sp) = FenceContext::new("plain").next();
    let (f, _sf) = FenceContext::new("other").next();
    let node = FenceChain::link(Some(p.clone()), f, 7);
    assert_ne!(node.context(), p.context());
    assert_eq!(node.seqno(), 7);
}

#[test]
fn find_seqno_returns_the_existing_node() {
    let (nodes, _s) = chain(4);
    let head = &nodes[3];
    for (n, want) in [(1, 0), (2, 1), (3, 2), (4, 3)] {
        let found = FenceChain::find_seqno(head, n).unwrap().unwrap();
        assert!(found.ptr_eq(&nodes[want]), "point {n} is node {want}, not a new fence");
    }
    assert!(FenceChain::find_seqno(head, 0).unwrap().unwrap().ptr_eq(head));
    assert_eq!(
        FenceChain::find_seqno(head, 5),
        Err(ChainSeqnoError::PastHead { seqno: 5, head: 4 })
    );
    let plain = Fence::signaled();
    assert_eq!(FenceChain::find_seqno(&plain, 1), Err(ChainSeqnoError::NotAChain));
    assert!(FenceChain::find_seqno(&plain, 0).unwrap().unwrap().ptr_eq(&plain));
}

/// A point between two nodes' seqnos is the first node after it.
#[test]
fn find_seqno_between_nodes_gives_the_next_node() {
    let ctx = FenceContext::new("ring");
    let (a, _sa) = ctx.next();
    let (b, _sb) = ctx.next();
    let n2 = FenceChain::link(None, a, 2);
    let n10 = FenceChain::link(Some(n2.clone()), b, 10);
    assert!(FenceChain::find_seqno(&n10, 1).unwrap().unwrap().ptr_eq(&n2));
    assert!(FenceChain::find_seqno(&n10, 3).unwrap().unwrap().ptr_eq(&n10));
    assert!(FenceChain::find_seqno(&n10, 10).unwrap().unwrap().ptr_eq(&n10));
}

#[test]
fn find_seqno_is_none_once_everything_up_to_it_signalled() {
    let (nodes, mut s) = chain(3);
    let head = nodes[2].clone();
    s.remove(0).signal();
    s.remove(0).signal();
    assert_eq!(FenceChain::find_seqno(&head, 1), Ok(None));
    assert_eq!(FenceChain::find_seqno(&head, 2), Ok(None));
    // The head's own point is the head, signalled or not.
    assert!(FenceChain::find_seqno(&head, 3).unwrap().unwrap().ptr_eq(&head));
    assert_eq!(head.status(), FenceStatus::Pending);
    s.remove(0).signal();
    assert_eq!(head.status(), FenceStatus::Signaled);
}

/// The walk unlinks a node whose fence signalled out of order: the node below it answers for
/// its point (it signals exactly when that point is reached).
#[test]
fn a_node_signalled_out_of_order_is_collected() {
    let (nodes, mut s) = chain(3);
    let head = nodes[2].clone();
    let _s3 = s.pop().unwrap();
    let s2 = s.pop().unwrap();
    let s1 = s.pop().unwrap();
    s2.signal();
    assert_eq!(nodes[1].status(), FenceStatus::Pending, "node 2 needs node 1");
    let walked = FenceChain::walk(&head).unwrap();
    assert!(walked.ptr_eq(&nodes[0]), "node 2 is skipped");
    let found = FenceChain::find_seqno(&head, 2).unwrap().unwrap();
    assert!(found.ptr_eq(&nodes[0]));
    let seen: Vec<u64> = FenceChain::iter(&head).map(|f| f.seqno()).collect();
    assert_eq!(seen, [3, 1]);
    s1.signal();
    assert_eq!(nodes[1].status(), FenceStatus::Signaled);
    assert_eq!(FenceChain::walk(&head), None);
}

#[test]
fn a_node_signals_after_its_fence_and_every_previous_node() {
    let (nodes, mut s) = chain(3);
    let s3 = s.pop().unwrap();
    let s2 = s.pop().unwrap();
    let s1 = s.pop().unwrap();
    s3.signal();
    s2.signal();
    assert!(nodes.iter().all(|n| n.status() == FenceStatus::Pending));
    s1.signal();
    assert!(nodes.iter().all(|n| n.status() == FenceStatus::Signaled));
}

/// The lowest failure of the chain reaches every node above it; nodes below it succeed.
#[test]
fn errors_propagate_up_the_chain() {
    let (nodes, mut s) = chain(4);
    let s4 = s.pop().unwrap();
    let s3 = s.pop().unwrap();
    let s2 = s.pop().unwrap();
    let s1 = s.pop().unwrap();
    s4.signal_error(FenceError::TimedOut);
    s3.signal();
    s2.signal_error(FenceError::Killed);
    s1.signal();
    assert_eq!(nodes[0].status(), FenceStatus::Signaled);
    assert_eq!(nodes[1].status(), FenceStatus::Failed(FenceError::Killed));
    assert_eq!(nodes[2].status(), FenceStatus::Failed(FenceError::Killed));
    assert_eq!(nodes[3].status(), FenceStatus::Failed(FenceError::Killed), "the lowest wins");
    drop(nodes);
}

#[test]
fn an_abandoned_fence_fails_its_node() {
    let (nodes, s) = chain(2);
    drop(s);
    assert_eq!(nodes[1].wait_timeout(WATCHDOG), Err(FenceError::Abandoned.into()));
}

#[test]
fn a_chain_over_signalled_fences_is_signalled() {
    let node = FenceChain::link(Some(Fence::signaled()), Fence::signaled(), 1);
    assert_eq!(node.status(), FenceStatus::Signaled);
    let node = FenceChain::link(Some(node), Fence::failed(FenceError::Killed), 2);
    assert_eq!(node.status(), FenceStatus::Failed(FenceError::Killed));
}

#[test]
fn unwrap_yields_the_leaves_still_linked() {
    let (nodes, mut s) = chain(3);
    let leaves = unwrap(&nodes[2]);
    assert_eq!(leaves.len(), 3);
    for (leaf, node) in leaves.iter().zip(nodes.iter().rev()) {
        assert!(leaf.ptr_eq(FenceChain::contained(node)));
        assert!(!FenceChain::is_chain(leaf));
    }
    // A node whose fence signalled is collected from the walk, and so from the unwrap.
    s.remove(1).signal();
    let leaves = unwrap(&nodes[2]);
    assert_eq!(leaves.len(), 2);
    assert!(leaves[1].ptr_eq(FenceChain::contained(&nodes[0])));
    // Merging a chain keeps its pending leaves, one per context: here both are on one ring,
    // so the later one.
    let merged = merge([&nodes[2]]);
    assert!(merged.ptr_eq(FenceChain::contained(&nodes[2])));
    drop(s);
}

/// 4,096 nodes: built, signalled in the order that makes the longest cascade (every fence
/// but the lowest first), waited on and dropped on a thread with a small stack, so neither the
/// cascade nor the drop may recurse per node.
#[test]
fn a_long_chain_signals_and_drops_without_recursion() {
    const N: u64 = 4096;
    let t = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let start = std::time::Instant::now();
            let (nodes, mut s) = chain(N);
            let head = nodes.last().unwrap().clone();
            let first = s.remove(0);
            for sig in s.into_iter().rev() {
                sig.signal();
            }
            assert_eq!(head.status(), FenceStatus::Pending);
            let found = FenceChain::find_seqno(&head, N / 2).unwrap().unwrap();
            assert!(found.ptr_eq(&nodes[0]), "every node above the first was collected");
            first.signal();
            assert_eq!(head.wait_timeout(WATCHDOG), Ok(()));
            assert!(nodes.iter().all(Fence::is_signaled));
            drop(nodes);
            drop(found);
            drop(head);
            // A chain dropped whole, never walked (nothing collected).
            let (nodes, s) = chain(N);
            for sig in s {
                sig.signal();
            }
            let head = nodes.last().unwrap().clone();
            drop(nodes);
            drop(head);
            // Linear work: a few milliseconds; a quadratic walk would take far longer.
            assert!(start.elapsed() < Duration::from_secs(20), "{:?}", start.elapsed());
        })
        .unwrap();
    t.join().unwrap();
}

/// Nodes signalled concurrently from many threads each signal exactly once, in a valid order.
#[test]
fn concurrent_signals_complete_the_chain() {
    let (nodes, s) = chain(256);
    let head = nodes.last().unwrap().clone();
    let mut chunks: Vec<Vec<Signaller>> = (0..4).map(|_| Vec::new()).collect();
    for (i, sig) in s.into_iter().enumerate() {
        chunks[i % 4].push(sig);
    }
    let threads: Vec<_> = chunks
        .into_iter()
        .map(|c| {
            std::thread::spawn(move || {
                for sig in c.into_iter().rev() {
                    sig.signal();
                }
            })
        })
        .collect();
    assert_eq!(head.wait_timeout(WATCHDOG), Ok(()));
    for t in threads {
        t.join().unwrap();
    }
    assert!(nodes.iter().all(|n| n.status() == FenceStatus::Signaled));
}

/// Point 0 of a chain is its head; `find_seqno` from an inner node finds that node's own point.
#[test]
fn find_seqno_from_an_inner_node() {
    let (nodes, _s) = chain(4);
    for (i, node) in nodes.iter().enumerate() {
        let own = FenceChain::find_seqno(node, node.seqno()).unwrap().unwrap();
        assert!(own.ptr_eq(node), "node {i} finds itself");
        assert!(FenceChain::find_seqno(node, 1).unwrap().unwrap().ptr_eq(&nodes[0]));
    }
}

/// `find_seqno` racing with signals in random order (the kernel's `find_race`): an answer is
/// the point's own node, or a node below it whose successors up to the point were collected
/// (their fences signalled), or `None` once every fence up to the point signalled.
#[test]
fn find_seqno_races_with_signals() {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    const N: u64 = 128;
    let (nodes, s) = chain(N);
    let head = nodes.last().unwrap().clone();
    let contained: Vec<Fence> = nodes.iter().map(|n| FenceChain::contained(n).clone()).collect();
    let mut order: Vec<(usize, Signaller)> = s.into_iter().enumerate().collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    let finders: Vec<_> = (0..3)
        .map(|t| {
            let head = head.clone();
            let nodes = nodes.clone();
            let contained = contained.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                while !head.is_signaled() {
                    let n = rng.gen_range(1..=N);
                    match FenceChain::find_seqno(&head, n).unwrap() {
                        Some(node) => {
                            assert!(nodes.iter().any(|x| x.ptr_eq(&node)), "not a node");
                            let x = node.seqno();
                            if x >= n {
                                assert_eq!(x, n, "seqnos are consecutive: point n is node n");
                            } else {
                                // Nodes x+1..=n were collected: their fences have signalled.
                                let (lo, hi) = (usize::try_from(x).unwrap(), n as usize);
                                assert!(contained[lo..hi].iter().all(Fence::is_signaled));
                            }
                        }
                        None => {
                            let up_to = usize::try_from(n).unwrap();
                            assert!(contained[..up_to].iter().all(Fence::is_signaled));
                        }
                    }
                }
            })
        })
        .collect();
    for (_, sig) in order {
        sig.signal();
        std::thread::yield_now();
    }
    for t in finders {
        t.join().unwrap();
    }
    assert_eq!(head.wait_timeout(WATCHDOG), Ok(()));
    assert!(nodes.iter().all(|n| n.status() == FenceStatus::Signaled));
}

/// A backend fence that is complete but not signalled yet is found by polling the chain, as
/// `dma_fence_chain_signaled` polls; the node then signals through its callbacks.
#[test]
fn polling_a_node_polls_backend_fences_below_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    struct Hw(Arc<AtomicBool>);
    impl gpusched_fence::FenceOps for Hw {
        fn signaled(&self) -> bool {
            self.0.load(Ordering::Acquire)
        }
    }
    let done_a = Arc::new(AtomicBool::new(false));
    let done_b = Arc::new(AtomicBool::new(false));
    let ctx = FenceContext::new("hw");
    let (a, _sa) = ctx.next_with_ops(Box::new(Hw(done_a.clone())));
    let (b, _sb) = ctx.next_with_ops(Box::new(Hw(done_b.clone())));
    let n1 = FenceChain::link(None, a, 1);
    let n2 = FenceChain::link(Some(n1.clone()), b, 2);
    done_b.store(true, Ordering::Release);
    assert!(!n2.is_signaled(), "node 1 is still running");
    done_a.store(true, Ordering::Release);
    assert!(n2.is_signaled(), "the poll found both fences complete");
    assert_eq!(n1.status(), FenceStatus::Signaled);
    assert_eq!(n2.status(), FenceStatus::Signaled);
}
