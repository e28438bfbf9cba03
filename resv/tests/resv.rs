//! Public behaviour of `Resv` and `Exec`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::watchdog;
use gpusched_fence::{Fence, FenceContext, FenceError, InterruptDomain, Signaller, WaitError};
use gpusched_resv::{AcquireCtx, Exec, Resv, Usage, WwError, RESV_WW_CLASS};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

fn add(resv: &Resv, fence: &Fence, usage: Usage) {
    let mut g = resv.lock_no_ctx();
    g.reserve_fences(1).unwrap();
    g.add_fence(fence.clone(), usage);
}

#[test]
fn usage_filtering() {
    let resv = Resv::new();
    let mut keep: Vec<Signaller> = Vec::new();
    for usage in Usage::ALL {
        let (f, s) = FenceContext::new(format!("{usage:?}")).next();
        add(&resv, &f, usage);
        keep.push(s);
    }
    let g = resv.lock_no_ctx();
    for (n, usage) in Usage::ALL.into_iter().enumerate() {
        assert_eq!(g.get_fences(usage).len(), n + 1, "{usage:?}");
        assert!(g.fences(usage).all(|(_, u)| u <= usage));
        assert_eq!(resv.fences_unlocked(usage).len(), n + 1, "{usage:?} (unlocked)");
    }
    let seen: Vec<Usage> = g.fences(Usage::Bookkeep).map(|(_, u)| u).collect();
    assert_eq!(seen, Usage::ALL);
    assert_eq!(Usage::for_access(true), Usage::Read);
    assert_eq!(Usage::for_access(false), Usage::Write);
}

#[test]
fn replacement_by_context() {
    let resv = Resv::new();
    let ring = FenceContext::new("ring");
    let (f1, _s1) = ring.next();
    let (f2, _s2) = ring.next();
    add(&resv, &f1, Usage::Read);
    // Later fence, same context, stronger usage: replaces in place.
    add(&resv, &f2, Usage::Write);
    let got = resv.fences_unlocked(Usage::Bookkeep);
    assert_eq!(got.len(), 1);
    assert!(got[0].ptr_eq(&f2));
    // Weaker usage than the existing one: a new slot.
    let (f3, _s3) = ring.next();
    add(&resv, &f3, Usage::Bookkeep);
    assert_eq!(resv.fences_unlocked(Usage::Bookkeep).len(), 2);
    assert_eq!(resv.fences_unlocked(Usage::Write).len(), 1);
    // An older fence of the same context does not replace a later one.
    let ring2 = FenceContext::new("ring2");
    let (g1, _t1) = ring2.next();
    let (g2, _t2) = ring2.next();
    add(&resv, &g2, Usage::Write);
    add(&resv, &g1, Usage::Write);
    let ring2_fences: Vec<Fence> = resv
        .fences_unlocked(Usage::Bookkeep)
        .into_iter()
        .filter(|f| f.context() == ring2.id())
        .collect();
    assert_eq!(ring2_fences.len(), 2);
    // The same fence again changes nothing.
    add(&resv, &g2, Usage::Write);
    assert_eq!(resv.fences_unlocked(Usage::Bookkeep).len(), 4);
}

#[test]
fn replace_fences_swaps_a_context() {
    let resv = Resv::new();
    let (pt, _s) = FenceContext::new("preempt").next();
    let (other, _o) = FenceContext::new("other").next();
    let (update, _u) = FenceContext::new("pt-update").next();
    add(&resv, &pt, Usage::Bookkeep);
    add(&resv, &other, Usage::Read);
    {
        let mut g = resv.lock_no_ctx();
        g.replace_fences(pt.context(), &update, Usage::Kernel);
        assert_eq!(g.get_fences(Usage::Kernel).len(), 1);
        assert!(g.get_fences(Usage::Kernel)[0].ptr_eq(&update));
        assert_eq!(g.get_fences(Usage::Bookkeep).len(), 2);
        assert!(!g.get_fences(Usage::Bookkeep).iter().any(|f| f.ptr_eq(&pt)));
    }
    assert!(resv.fences_unlocked(Usage::Kernel)[0].ptr_eq(&update));
}

#[test]
fn signalled_fences_are_pruned() {
    let resv = Resv::new();
    let (a, sa) = FenceContext::new("a").next();
    let (b, _sb) = FenceContext::new("b").next();
    add(&resv, &a, Usage::Write);
    sa.signal();
    // The signalled slot is reused by a fence of another context.
    add(&resv, &b, Usage::Write);
    let got = resv.fences_unlocked(Usage::Bookkeep);
    assert_eq!(got.len(), 1);
    assert!(got[0].ptr_eq(&b));
    // And pruned on unlock after a change.
    let (c, sc) = FenceContext::new("c").next();
    add(&resv, &c, Usage::Read);
    sc.signal_error(FenceError::Cancelled);
    let (d, _sd) = FenceContext::new("d").next();
    {
        let mut g = resv.lock_no_ctx();
        g.reserve_fences(1).unwrap();
        assert_eq!(g.get_fences(Usage::Bookkeep).len(), 1, "reserve prunes");
        g.add_fence(d.clone(), Usage::Bookkeep);
    }
    assert_eq!(resv.fences_unlocked(Usage::Bookkeep).len(), 2);
}

#[test]
fn reserve_then_add_discipline() {
    let resv = Resv::new();
    let ring = FenceContext::new("ring");
    let mut g = resv.lock_no_ctx();
    g.reserve_fences(2).unwrap();
    g.reserve_fences(1).unwrap();
    assert_eq!(g.reserved(), 3);
    let (f, _s) = ring.next();
    g.add_fence(f, Usage::Write);
    assert_eq!(g.reserved(), 2);
    drop(g);
    let g = resv.lock_no_ctx();
    assert_eq!(g.reserved(), 0, "reservations end with the guard");
}

#[test]
#[should_panic(expected = "add_fence without a reserved slot")]
fn add_without_reserve_panics() {
    let resv = Resv::new();
    let (f, _s) = FenceContext::new("ring").next();
    let mut g = resv.lock_no_ctx();
    g.add_fence(f, Usage::Write);
}

#[test]
#[should_panic(expected = "add_fence without a reserved slot")]
fn reservation_does_not_survive_unlock() {
    let resv = Resv::new();
    let (f, _s) = FenceContext::new("ring").next();
    resv.lock_no_ctx().reserve_fences(4).unwrap();
    let mut g = resv.lock_no_ctx();
    g.add_fence(f, Usage::Write);
}

#[test]
fn singleton_and_test_signaled() {
    let resv = Resv::new();
    assert!(resv.get_singleton_unlocked(Usage::Bookkeep).is_none());
    assert!(resv.test_signaled_unlocked(Usage::Bookkeep));
    let (a, sa) = FenceContext::new("a").next();
    let (b, sb) = FenceContext::new("b").next();
    add(&resv, &a, Usage::Write);
    add(&resv, &b, Usage::Read);
    let g = resv.lock_no_ctx();
    assert!(g.get_singleton(Usage::Write).unwrap().ptr_eq(&a));
    let both = g.get_singleton(Usage::Read).unwrap();
    assert!(!both.ptr_eq(&a) && !both.ptr_eq(&b));
    drop(g);
    let both_unlocked = resv.get_singleton_unlocked(Usage::Read).unwrap();
    sa.signal();
    assert!(resv.test_signaled_unlocked(Usage::Write));
    assert!(!resv.test_signaled_unlocked(Usage::Read));
    assert!(!both.is_signaled() && !both_unlocked.is_signaled());
    sb.signal();
    assert!(both.is_signaled() && both_unlocked.is_signaled());
    assert!(resv.lock_no_ctx().test_signaled(Usage::Bookkeep));
}

#[test]
fn waits_with_timeouts() {
    watchdog(|| {
        let resv = Resv::new();
        let (a, sa) = FenceContext::new("a").next();
        let (b, sb) = FenceContext::new("b").next();
        add(&resv, &a, Usage::Write);
        add(&resv, &b, Usage::Bookkeep);
        let t0 = Instant::now();
        assert_eq!(
            resv.wait_unlocked(Usage::Write, false, Some(Duration::from_millis(20))),
            Err(WaitError::Timeout)
        );
        assert!(t0.elapsed() >= Duration::from_millis(20));
        assert_eq!(
            resv.lock_no_ctx().wait(Usage::Read, true, Some(Duration::from_millis(5))),
            Err(WaitError::Timeout)
        );
        // Signalled from another thread while we wait, under the lock (allowed).
        thread::scope(|s| {
            let g = resv.lock_no_ctx();
            s.spawn(|| {
                thread::sleep(Duration::from_millis(10));
                sa.signal();
            });
            assert_eq!(g.wait(Usage::Read, false, None), Ok(()));
        });
        // Bookkeep is not part of a Read wait; a failed fence reports its error.
        sb.signal_error(FenceError::DeviceLost);
        assert_eq!(
            resv.wait_unlocked(Usage::Bookkeep, false, Some(Duration::from_secs(5))),
            Err(WaitError::Failed(FenceError::DeviceLost))
        );
    });
}

#[test]
fn interruptible_wait_is_interrupted_by_the_domain() {
    watchdog(|| {
        let domain = InterruptDomain::new("reset");
        let ring = FenceContext::builder("ring").interrupt_domain(&domain).build();
        let (f, _s) = ring.next();
        let resv = Resv::new();
        add(&resv, &f, Usage::Write);
        thread::scope(|s| {
            let t = s.spawn(|| resv.wait_unlocked(Usage::Write, true, None));
            thread::sleep(Duration::from_millis(20));
            let _section = domain.begin_interrupt();
            assert_eq!(t.join().unwrap(), Err(WaitError::Interrupted));
            // A plain wait is not interrupted.
            assert_eq!(
                resv.wait_unlocked(Usage::Write, false, Some(Duration::from_millis(5))),
                Err(WaitError::Timeout)
            );
        });
    });
}

#[test]
fn unlocked_readers_see_the_state_of_the_last_unlock() {
    let resv = Resv::new();
    let (f, _s) = FenceContext::new("ring").next();
    let mut g = resv.lock_no_ctx();
    g.reserve_fences(1).unwrap();
    g.add_fence(f.clone(), Usage::Write);
    assert!(resv.fences_unlocked(Usage::Write).is_empty(), "not published before unlock");
    assert!(resv.test_signaled_unlocked(Usage::Write));
    drop(g);
    assert!(resv.fences_unlocked(Usage::Write)[0].ptr_eq(&f));
}

#[test]
fn unlocked_snapshots_are_consistent_under_concurrent_writers() {
    // Writers keep the invariant "one fence of ring A and one of ring B, with equal seqnos",
    // changing both under the lock; unlocked readers must never see it broken.
    watchdog(|| {
        let resv = Resv::new();
        let (ra, rb) = (FenceContext::new("A"), FenceContext::new("B"));
        let signallers = std::sync::Mutex::new(Vec::new());
        let write_pair = |g: &mut gpusched_resv::ResvGuard<'_>| {
            g.reserve_fences(2).unwrap();
            let ((fa, sa), (fb, sb)) = (ra.next(), rb.next());
            g.add_fence(fa, Usage::Write);
            g.add_fence(fb, Usage::Read);
            signallers.lock().unwrap().push((sa, sb));
        };
        write_pair(&mut resv.lock_no_ctx());
        let writing = AtomicBool::new(true);
        let reads = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let mut last = 0;
                    while writing.load(Ordering::Acquire) {
                        let fs = resv.fences_unlocked(Usage::Read);
                        assert_eq!(fs.len(), 2, "a torn snapshot");
                        let (a, b) = if fs[0].context() == ra.id() {
                            (&fs[0], &fs[1])
                        } else {
                            (&fs[1], &fs[0])
                        };
                        assert_eq!((a.context(), b.context()), (ra.id(), rb.id()));
                        assert_eq!(a.seqno(), b.seqno(), "a torn snapshot");
                        assert!(a.seqno() >= last, "snapshots went back in time");
                        last = a.seqno();
                        assert!(!resv.test_signaled_unlocked(Usage::Read));
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            let writers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        for _ in 0..2000 {
                            let ctx = AcquireCtx::new(&RESV_WW_CLASS);
                            let mut g = resv.lock(&ctx).unwrap();
                            write_pair(&mut g);
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            writing.store(false, Ordering::Release);
        });
        assert!(reads.load(Ordering::Relaxed) > 0);
        let last = resv.fences_unlocked(Usage::Bookkeep);
        assert_eq!(last.len(), 2);
        assert!(last.iter().all(|f| f.seqno() == 4001));
        drop(signallers);
    });
}

#[test]
fn exec_locks_duplicates_once_in_order_of_first_appearance() {
    let objs: Vec<Resv> = (0..3).map(|_| Resv::new()).collect();
    let mut exec = Exec::new();
    let order = [&objs[2], &objs[0], &objs[2], &objs[1], &objs[0]];
    let seen = exec
        .lock_all(&order, |guards| {
            assert!(objs.iter().all(Resv::is_locked));
            guards
                .iter()
                .map(|g| objs.iter().position(|o| std::ptr::eq(o, g.resv())).unwrap())
                .collect::<Vec<_>>()
        })
        .unwrap();
    assert_eq!(seen, [2, 0, 1]);
    assert!(objs.iter().all(|o| !o.is_locked()));
    assert_eq!(exec.contentions(), 0);
}

#[test]
fn exec_interruptible_returns_interrupted_without_running() {
    watchdog(|| {
        let domain = InterruptDomain::new("reset");
        let (a, b) = (Resv::new(), Resv::new());
        let held = b.lock_no_ctx();
        thread::scope(|s| {
            let t = s.spawn(|| {
                let mut exec = Exec::interruptible(domain.clone());
                exec.lock_all(&[&a, &b], |_| panic!("must not run"))
            });
            thread::sleep(Duration::from_millis(20));
            let _section = domain.begin_interrupt();
            assert_eq!(t.join().unwrap().unwrap_err(), WwError::Interrupted);
        });
        drop(held);
        assert!(!a.is_locked());
    });
}

#[test]
fn exec_contention_over_overlapping_random_sets() {
    let seed: u64 = match std::env::var("RESV_STRESS_SEED") {
        Ok(s) => s.parse().expect("RESV_STRESS_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    println!("exec contention seed: {seed} (replay with RESV_STRESS_SEED={seed})");
    const THREADS: usize = 3;
    const OBJECTS: usize = 24;
    const ROUNDS: usize = 150;
    watchdog(move || {
        let objs: Vec<Resv> = (0..OBJECTS).map(|_| Resv::new()).collect();
        let in_use: Vec<AtomicUsize> = (0..OBJECTS).map(|_| AtomicUsize::new(0)).collect();
        let results: Vec<(usize, u64)> = thread::scope(|s| {
            let hs: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (objs, in_use) = (&objs, &in_use);
                    s.spawn(move || {
                        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(t as u64));
                        let ring = FenceContext::new(format!("thread{t}"));
                        let mut exec = Exec::new();
                        let mut done = 0;
                        for _ in 0..ROUNDS {
                            // 16 distinct objects of 24, in random order (sets overlap), plus
                            // a few duplicates.
                            let mut idx: Vec<usize> = (0..OBJECTS).collect();
                            idx.shuffle(&mut rng);
                            idx.truncate(16);
                            for _ in 0..rng.gen_range(0..4) {
                                idx.push(idx[rng.gen_range(0..16)]);
                            }
                            let set: Vec<&Resv> = idx.iter().map(|&i| &objs[i]).collect();
                            let (fence, signaller) = ring.next();
                            exec.lock_all(&set, |guards| {
                                assert_eq!(guards.len(), 16);
                                for g in guards.iter_mut() {
                                    let i = objs
                                        .iter()
                                        .position(|o| std::ptr::eq(o, g.resv()))
                                        .unwrap();
                                    let prev = in_use[i].swap(t + 1, Ordering::SeqCst);
                                    assert_eq!(prev, 0, "object {i} locked twice at once");
                                    g.reserve_fences(1).unwrap();
                                    g.add_fence(fence.clone(), Usage::Write);
                                }
                                if rng.gen_bool(0.2) {
                                    thread::yield_now();
                                }
                                for g in guards.iter() {
                                    let i = objs
                                        .iter()
                                        .position(|o| std::ptr::eq(o, g.resv()))
                                        .unwrap();
                                    in_use[i].store(0, Ordering::SeqCst);
                                }
                            })
                            .unwrap();
                            signaller.signal();
                            done += 1;
                        }
                        (done, exec.contentions())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (t, (done, contentions)) in results.iter().enumerate() {
            println!("thread {t}: {done} rounds, {contentions} back-offs");
            assert_eq!(*done, ROUNDS, "thread {t} starved");
        }
        // Each object keeps at most one fence per thread context (replacement by context).
        for o in &objs {
            assert!(o.lock_no_ctx().get_fences(Usage::Bookkeep).len() <= THREADS);
        }
    });
}

/// The unlocked iterator reports each fence with its usage, cumulatively by usage, skips
/// fences that signalled successfully and keeps failed ones.
#[test]
fn iter_unlocked_reports_usages_and_skips_signalled_fences() {
    let resv = Resv::new();
    let mut signallers = Vec::new();
    let mut fences = Vec::new();
    for usage in Usage::ALL {
        let (f, s) = FenceContext::new(format!("{usage:?}")).next();
        add(&resv, &f, usage);
        fences.push(f);
        signallers.push(s);
    }
    for (n, usage) in Usage::ALL.into_iter().enumerate() {
        let seen: Vec<(Fence, Usage)> = resv.iter_unlocked(usage).collect();
        assert_eq!(seen.len(), n + 1, "{usage:?}");
        for (i, (f, u)) in seen.iter().enumerate() {
            assert!(f.ptr_eq(&fences[i]));
            assert_eq!(*u, Usage::ALL[i]);
        }
    }
    // Signalled after the last publish: the snapshot still lists them, the iterator skips
    // the successful one and reports the failed one.
    let write = signallers.remove(1);
    let kernel = signallers.remove(0);
    write.signal();
    kernel.signal_error(FenceError::DeviceLost);
    let seen: Vec<(Fence, Usage)> = resv.iter_unlocked(Usage::Read).collect();
    let usages: Vec<Usage> = seen.iter().map(|(_, u)| *u).collect();
    assert_eq!(usages, [Usage::Kernel, Usage::Read]);
    assert_eq!(seen[0].0.error(), Some(FenceError::DeviceLost));
    assert_eq!(resv.fences_unlocked(Usage::Read).len(), 3, "the snapshot is unchanged");
    // The iterator is a snapshot: fences added after it was taken are not seen.
    let mut it = resv.iter_unlocked(Usage::Bookkeep);
    let (late, _late_s) = FenceContext::new("late").next();
    add(&resv, &late, Usage::Kernel);
    assert!(it.all(|(f, _)| !f.ptr_eq(&late)));
    assert!(resv.iter_unlocked(Usage::Kernel).any(|(f, _)| f.ptr_eq(&late)));
    // An empty object iterates nothing.
    assert_eq!(Resv::new().iter_unlocked(Usage::Bookkeep).count(), 0);
}
