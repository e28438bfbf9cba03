//! Public behaviour of `WwMutex`: errors, wound and die, ABBA, cycles, randomized stress.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::{watchdog, WATCHDOG};
use gpusched_fence::InterruptDomain;
use gpusched_resv::{AcquireCtx, WwAlgorithm, WwClass, WwError, WwGuard, WwMutex};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

static WAIT_DIE: WwClass = WwClass::wait_die("test-wait-die");
static WOUND_WAIT: WwClass = WwClass::wound_wait("test-wound-wait");

/// Locks all of `ms` under `ctx` with the back-off loop; returns the guards and how many
/// times it backed off. `pause` runs once, after the first lock of the first attempt.
fn lock_all<'a, T>(
    ctx: &'a AcquireCtx,
    ms: &[&'a WwMutex<T>],
    mut pause: impl FnMut(),
) -> (Vec<WwGuard<'a, T>>, u32) {
    let mut contended: Option<usize> = None;
    let mut backoffs = 0;
    let mut first = true;
    'retry: loop {
        let mut held = Vec::with_capacity(ms.len());
        if let Some(i) = contended.take() {
            held.push(ms[i].lock_slow(ctx));
        }
        for (i, m) in ms.iter().enumerate() {
            match m.lock(ctx) {
                Ok(g) => held.push(g),
                Err(WwError::AlreadyLocked) => {}
                Err(WwError::Deadlock) => {
                    drop(held);
                    assert_eq!(ctx.acquired(), 0);
                    backoffs += 1;
                    contended = Some(i);
                    continue 'retry;
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
            if first {
                first = false;
                pause();
            }
        }
        return (held, backoffs);
    }
}

fn class(alg: WwAlgorithm) -> &'static WwClass {
    match alg {
        WwAlgorithm::WaitDie => &WAIT_DIE,
        WwAlgorithm::WoundWait => &WOUND_WAIT,
    }
}

#[test]
fn same_mutex_twice_is_already_locked() {
    for alg in [WwAlgorithm::WaitDie, WwAlgorithm::WoundWait] {
        let m = WwMutex::new(class(alg), 0u32);
        let ctx = AcquireCtx::new(class(alg));
        let g = m.lock(&ctx).unwrap();
        assert_eq!(m.lock(&ctx).unwrap_err(), WwError::AlreadyLocked);
        assert!(m.try_lock(Some(&ctx)).is_none());
        assert_eq!(ctx.acquired(), 1);
        drop(g);
        assert_eq!(ctx.acquired(), 0);
        assert!(!m.is_locked());
    }
}

#[test]
fn try_lock_and_no_ctx() {
    let m = WwMutex::new(&WAIT_DIE, 5u32);
    let g = m.lock_no_ctx();
    assert!(m.is_locked());
    let ctx = AcquireCtx::new(&WAIT_DIE);
    assert!(m.try_lock(Some(&ctx)).is_none());
    assert!(m.try_lock(None).is_none());
    drop(g);
    let mut g = m.try_lock(Some(&ctx)).expect("free mutex");
    *g += 1;
    assert_eq!(ctx.acquired(), 1);
    drop(g);
    assert_eq!(*m.try_lock(None).unwrap(), 6);
}

#[test]
fn context_less_holder_makes_ctx_wait() {
    let m = Arc::new(WwMutex::new(&WAIT_DIE, 0u32));
    let other = WwMutex::new(&WAIT_DIE, 0u32);
    let ctx = AcquireCtx::new(&WAIT_DIE);
    let _held = other.lock(&ctx).unwrap(); // holding something: could die, but no ctx holder
    let (locked_tx, locked_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let m2 = m.clone();
    let t = thread::spawn(move || {
        let mut g = m2.lock_no_ctx();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        *g = 7;
    });
    locked_rx.recv().unwrap();
    release_tx.send(()).unwrap();
    let g = m.lock(&ctx).expect("a context-less holder is waited for, never a deadlock");
    assert_eq!(*g, 7);
    t.join().unwrap();
}

#[test]
fn wait_die_younger_dies_at_once_older_waits() {
    let a = Arc::new(WwMutex::new(&WAIT_DIE, 0u32));
    let b = WwMutex::new(&WAIT_DIE, 0u32);
    let older = AcquireCtx::new(&WAIT_DIE);
    let ga = a.lock(&older).unwrap();
    // A younger context holding a lock dies when it meets the older holder.
    let older_stamp = older.stamp();
    thread::scope(|s| {
        s.spawn(|| {
            let younger = AcquireCtx::new(&WAIT_DIE);
            assert!(younger.stamp() > older_stamp);
            let _gb = b.lock(&younger).unwrap();
            assert_eq!(a.lock(&younger).unwrap_err(), WwError::Deadlock);
        });
    });
    // A younger context holding nothing waits instead of dying.
    let (got_tx, got_rx) = mpsc::channel();
    let a3 = a.clone();
    let t = thread::spawn(move || {
        let younger = AcquireCtx::new(&WAIT_DIE);
        let g = a3.lock(&younger).expect("holding nothing, it waits");
        got_tx.send(*g).unwrap();
    });
    assert!(got_rx.recv_timeout(Duration::from_millis(50)).is_err(), "it must wait");
    let mut ga = ga;
    *ga = 3;
    drop(ga);
    assert_eq!(got_rx.recv_timeout(WATCHDOG).unwrap(), 3);
    t.join().unwrap();
}

/// A younger context holding a lock may spin a little for an older holder that is done (it
/// takes no more locks and only releases), but one that keeps the lock still makes it die:
/// wait-die never blocks a context holding locks behind an older one.
#[test]
fn wait_die_younger_dies_against_a_done_older_holder_that_keeps_the_lock() {
    let a = WwMutex::new(&WAIT_DIE, 0u32);
    let b = WwMutex::new(&WAIT_DIE, 0u32);
    let older = AcquireCtx::new(&WAIT_DIE);
    let _ga = a.lock(&older).unwrap();
    older.done();
    thread::scope(|s| {
        s.spawn(|| {
            let younger = AcquireCtx::new(&WAIT_DIE);
            let _gb = b.lock(&younger).unwrap();
            assert_eq!(a.lock(&younger).unwrap_err(), WwError::Deadlock);
            // The lock is still the older context's.
            assert!(a.try_lock(Some(&younger)).is_none());
        });
    });
}

#[test]
fn wound_wait_older_wounds_younger_holder() {
    let a = WwMutex::new(&WOUND_WAIT, 0u32);
    let b = WwMutex::new(&WOUND_WAIT, 0u32);
    let older = AcquireCtx::new(&WOUND_WAIT);
    let (held_tx, held_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (a, b) = (&a, &b);
    thread::scope(|s| {
        let younger_thread = s.spawn(move || {
            let younger = AcquireCtx::new(&WOUND_WAIT);
            let ga = a.lock(&younger).unwrap();
            held_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            // Wait until the older context has wounded us (it is blocked on `a`).
            while !younger.is_wounded() {
                thread::yield_now();
            }
            // Wounded: the next contended lock backs off.
            let r = b.lock(&younger).map(drop);
            drop(ga);
            r
        });
        held_rx.recv().unwrap();
        let gb = b.lock(&older).unwrap();
        go_tx.send(()).unwrap();
        let ga = a.lock(&older).expect("the older context waits, then wins");
        drop((ga, gb));
        assert_eq!(younger_thread.join().unwrap(), Err(WwError::Deadlock));
    });
}

#[test]
fn wound_wait_wakes_a_waiting_wounded_context() {
    // The younger context holds `a` and blocks on `c` (held without context); the older one
    // then wants `a`: the younger must be woken with Deadlock although `c` is still held.
    watchdog(|| {
        let a = WwMutex::new(&WOUND_WAIT, 0u32);
        let b = WwMutex::new(&WOUND_WAIT, 0u32);
        let c = WwMutex::new(&WOUND_WAIT, 0u32);
        let older = AcquireCtx::new(&WOUND_WAIT);
        let (tx, rx) = mpsc::channel();
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        thread::scope(|s| {
            // `c` is held by a third thread (holding it here while `older` locks would be
            // same-class recursion, which the checker rightly reports).
            let c_ref = &c;
            let holder = s.spawn(move || {
                let _gc = c_ref.lock_no_ctx();
                held_tx.send(()).unwrap();
                let _ = release_rx.recv();
            });
            held_rx.recv().unwrap();
            let y = s.spawn(|| {
                let younger = AcquireCtx::new(&WOUND_WAIT);
                let ga = a.lock(&younger).unwrap();
                tx.send(()).unwrap();
                let r = c.lock(&younger).map(drop);
                drop(ga);
                r
            });
            rx.recv().unwrap();
            let _gb = b.lock(&older).unwrap();
            let _ga = a.lock(&older).expect("older wins");
            assert_eq!(y.join().unwrap(), Err(WwError::Deadlock));
            assert!(c.is_locked());
            release_tx.send(()).unwrap();
            holder.join().unwrap();
        });
    });
}

#[test]
fn abba_wait_die() {
    cycle(WwAlgorithm::WaitDie, 2);
}

#[test]
fn abba_wound_wait() {
    cycle(WwAlgorithm::WoundWait, 2);
}

/// `n` threads lock mutexes `i` and `i + 1` (mod `n`) in that order, all at once: a cycle
/// (ABBA for `n = 2`). Everyone gets both; the oldest context never backs off, someone does.
fn cycle(alg: WwAlgorithm, n: usize) {
    watchdog(move || {
        let cls = class(alg);
        let ms: Vec<WwMutex<u64>> = (0..n).map(|_| WwMutex::new(cls, 0)).collect();
        let barrier = Barrier::new(n);
        let results: Vec<(u64, u32)> = thread::scope(|s| {
            let hs: Vec<_> = (0..n)
                .map(|i| {
                    let order = [&ms[i], &ms[(i + 1) % n]];
                    let barrier = &barrier;
                    s.spawn(move || {
                        let ctx = AcquireCtx::new(cls);
                        let (mut gs, backoffs) = lock_all(&ctx, &order, || {
                            barrier.wait();
                        });
                        for g in gs.iter_mut() {
                            **g += 1;
                        }
                        (ctx.stamp(), backoffs)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for m in ms {
            assert_eq!(m.into_inner(), 2);
        }
        let oldest = results.iter().min_by_key(|r| r.0).unwrap();
        assert_eq!(oldest.1, 0, "{alg:?}: the oldest context never backs off");
        assert!(results.iter().map(|r| r.1).sum::<u32>() >= 1, "{alg:?}: a cycle needs a back-off");
    });
}

#[test]
fn cycle_of_five_wait_die() {
    cycle(WwAlgorithm::WaitDie, 5);
}

#[test]
fn cycle_of_five_wound_wait() {
    cycle(WwAlgorithm::WoundWait, 5);
}

fn stress(alg: WwAlgorithm) {
    let seed: u64 = match std::env::var("RESV_STRESS_SEED") {
        Ok(s) => s.parse().expect("RESV_STRESS_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    println!("{alg:?} stress seed: {seed} (replay with RESV_STRESS_SEED={seed})");
    const THREADS: usize = 8;
    const MUTEXES: usize = 16;
    const ROUNDS: usize = 200;
    watchdog(move || {
        let cls = class(alg);
        let ms: Vec<WwMutex<u64>> = (0..MUTEXES).map(|_| WwMutex::new(cls, 0)).collect();
        let per_thread: Vec<(usize, u64)> = thread::scope(|s| {
            let hs: Vec<_> = (0..THREADS)
                .map(|t| {
                    let ms = &ms;
                    s.spawn(move || {
                        let mut rng = StdRng::seed_from_u64(seed ^ (t as u64).wrapping_mul(0x9e37));
                        let mut done = 0;
                        let mut increments = 0u64;
                        for _ in 0..ROUNDS {
                            let k = rng.gen_range(1..=6);
                            let mut idx: Vec<usize> = (0..MUTEXES).collect();
                            idx.shuffle(&mut rng);
                            // Duplicates on purpose: AlreadyLocked must be handled.
                            let mut set: Vec<&WwMutex<u64>> =
                                idx[..k].iter().map(|&i| &ms[i]).collect();
                            set.push(set[0]);
                            let ctx = AcquireCtx::new(cls);
                            let (mut gs, _) = lock_all(&ctx, &set, || {});
                            ctx.done();
                            assert_eq!(gs.len(), k);
                            for g in gs.iter_mut() {
                                let v = **g;
                                if rng.gen_bool(0.1) {
                                    thread::yield_now();
                                }
                                **g = v + 1; // lost updates would show in the sum
                            }
                            increments += k as u64;
                            done += 1;
                        }
                        (done, increments)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (t, (done, _)) in per_thread.iter().enumerate() {
            assert_eq!(*done, ROUNDS, "thread {t} starved");
        }
        let expected: u64 = per_thread.iter().map(|p| p.1).sum();
        let total: u64 = ms.into_iter().map(WwMutex::into_inner).sum();
        assert_eq!(total, expected, "mutual exclusion violated (seed {seed})");
    });
}

#[test]
fn stress_wait_die() {
    stress(WwAlgorithm::WaitDie);
}

#[test]
fn stress_wound_wait() {
    stress(WwAlgorithm::WoundWait);
}

#[test]
fn interruptible_lock_returns_interrupted() {
    watchdog(|| {
        let domain = InterruptDomain::new("reset");
        let m = WwMutex::new(&WAIT_DIE, 0u32);
        // Another thread holds the lock: holding it here too would be same-class recursion,
        // which the checker rightly reports.
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let ctx = AcquireCtx::new(&WAIT_DIE);
        thread::scope(|s| {
            let m_ref = &m;
            let holder = s.spawn(move || {
                let _g = m_ref.lock_no_ctx();
                held_tx.send(()).unwrap();
                let _ = release_rx.recv();
            });
            held_rx.recv().unwrap();
            // A section open at the start fails a contended interruptible lock at once.
            let section = domain.begin_interrupt();
            assert_eq!(m.lock_interruptible(&ctx, &domain).unwrap_err(), WwError::Interrupted);
            assert_eq!(m.lock_slow_interruptible(&ctx, &domain).unwrap_err(), WwError::Interrupted);
            drop(section);
            // A section opened during the wait interrupts it.
            thread::scope(|s| {
                let t = s.spawn(|| {
                    let ctx = AcquireCtx::new(&WAIT_DIE);
                    m.lock_interruptible(&ctx, &domain).map(drop)
                });
                thread::sleep(Duration::from_millis(20));
                let _section = domain.begin_interrupt();
                assert_eq!(t.join().unwrap(), Err(WwError::Interrupted));
            });
            release_tx.send(()).unwrap();
            holder.join().unwrap();
        });
        // Uncontended, with no section open, it simply locks.
        assert_eq!(*m.lock_interruptible(&ctx, &domain).unwrap(), 0);
        assert_eq!(ctx.acquired(), 0);
    });
}

#[test]
#[should_panic(expected = "lock_slow with a context that still holds 1 lock")]
fn lock_slow_while_holding_panics() {
    let (a, b) = (WwMutex::new(&WAIT_DIE, ()), WwMutex::new(&WAIT_DIE, ()));
    let ctx = AcquireCtx::new(&WAIT_DIE);
    let _ga = a.lock(&ctx).unwrap();
    let _gb = b.lock_slow(&ctx);
}

#[test]
#[should_panic(expected = "after AcquireCtx::done()")]
fn lock_after_done_panics() {
    let a = WwMutex::new(&WAIT_DIE, ());
    let ctx = AcquireCtx::new(&WAIT_DIE);
    ctx.done();
    let _ga = a.lock(&ctx);
}

#[test]
#[should_panic(expected = "locked a mutex of class `test-wound-wait`")]
fn mixing_classes_panics() {
    let a = WwMutex::new(&WOUND_WAIT, ());
    let ctx = AcquireCtx::new(&WAIT_DIE);
    let _ga = a.lock(&ctx);
}

#[test]
fn stamps_increase_and_contexts_report_state() {
    let c1 = AcquireCtx::new(&WAIT_DIE);
    let c2 = AcquireCtx::new(&WAIT_DIE);
    assert!(c1.stamp() < c2.stamp());
    assert!(!c1.is_wounded());
    assert_eq!(c1.class().algorithm(), WwAlgorithm::WaitDie);
    assert_eq!(WOUND_WAIT.algorithm(), WwAlgorithm::WoundWait);
    assert_eq!(WAIT_DIE.lock_class().name(), "resv");
    static MODESET: gpusched_fence::lockdep::LockClass =
        gpusched_fence::lockdep::LockClass::reset_needed("modeset");
    static MODESET_WW: WwClass = WwClass::wound_wait("modeset").with_lock_class(&MODESET);
    assert_eq!(MODESET_WW.lock_class().name(), "modeset");
    assert_eq!(MODESET_WW.algorithm(), WwAlgorithm::WoundWait);
    let m = WwMutex::new(&MODESET_WW, 1u8);
    let ctx = AcquireCtx::new(&MODESET_WW);
    assert_eq!(*m.lock(&ctx).unwrap(), 1);
}
