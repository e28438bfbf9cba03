//! Loom models of the wound and die paths: 2 threads, 2 mutexes (plus one context-less lock
//! for the waiting-wounded case). Run with
//! `RUSTFLAGS="--cfg gpusched_loom" cargo test --release -p gpusched-resv --target-dir target/loom --test loom`.
#![cfg(gpusched_loom)]

use gpusched_resv::{AcquireCtx, WwClass, WwError, WwMutex};
use loom::sync::Arc;
use loom::thread;

static WAIT_DIE: WwClass = WwClass::wait_die("loom-wait-die");
static WOUND_WAIT: WwClass = WwClass::wound_wait("loom-wound-wait");

fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b
}

/// Locks `first` then `second` under a fresh context, backing off on Deadlock; increments
/// both. Returns how many times it backed off.
fn transaction(class: &'static WwClass, first: &WwMutex<u32>, second: &WwMutex<u32>) -> u32 {
    let ctx = AcquireCtx::new(class);
    let mut backoffs = 0;
    let mut g1 = first.lock(&ctx).expect("holding nothing, the first lock waits");
    loop {
        match second.lock(&ctx) {
            Ok(mut g2) => {
                *g1 += 1;
                *g2 += 1;
                return backoffs;
            }
            Err(WwError::Deadlock) => {
                backoffs += 1;
                drop(g1);
                let g2 = second.lock_slow(&ctx);
                // Take `first` again while holding `second`: it may die again.
                match first.lock(&ctx) {
                    Ok(mut g) => {
                        let mut g2 = g2;
                        *g += 1;
                        *g2 += 1;
                        return backoffs;
                    }
                    Err(WwError::Deadlock) => {
                        drop(g2);
                        g1 = first.lock_slow(&ctx);
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

fn abba(class: &'static WwClass) {
    builder().check(move || {
        let a = Arc::new(WwMutex::new(class, 0u32));
        let b = Arc::new(WwMutex::new(class, 0u32));
        let (a2, b2) = (a.clone(), b.clone());
        let t = thread::spawn(move || transaction(class, &b2, &a2));
        transaction(class, &a, &b);
        t.join().unwrap();
        assert_eq!(*a.lock_no_ctx(), 2);
        assert_eq!(*b.lock_no_ctx(), 2);
    });
}

#[test]
fn loom_abba_wait_die() {
    abba(&WAIT_DIE);
}

#[test]
fn loom_abba_wound_wait() {
    abba(&WOUND_WAIT);
}

/// A younger context holding `a` blocks on `c` (held without a context until the end); the
/// older one, holding `b`, wants `a`. Only the wound's wake-up can end the younger's wait, so
/// a lost wake-up is a deadlock loom reports.
#[test]
fn loom_wound_wakes_a_waiting_context() {
    builder().check(|| {
        let a = Arc::new(WwMutex::new(&WOUND_WAIT, 0u32));
        let b = WwMutex::new(&WOUND_WAIT, 0u32);
        let c = Arc::new(WwMutex::new(&WOUND_WAIT, 0u32));
        let gc = c.lock_no_ctx();
        let older = AcquireCtx::new(&WOUND_WAIT);
        let gb = b.lock(&older).unwrap();
        let (a2, c2) = (a.clone(), c.clone());
        let t = thread::spawn(move || {
            let younger = AcquireCtx::new(&WOUND_WAIT);
            let ga = a2.lock(&younger).expect("holding nothing, it waits");
            let r = c2.lock(&younger).map(drop);
            drop(ga);
            r
        });
        let ga = a.lock(&older).expect("the older context never backs off");
        drop((ga, gb, gc));
        // The younger either got Deadlock (wounded while holding `a`) or took `a` only after
        // the older released it, and then `c` too.
        let r = t.join().unwrap();
        assert!(matches!(r, Ok(()) | Err(WwError::Deadlock)), "{r:?}");
    });
}

/// Oldest-first hand-over: `l` starts held without a context; one context locks `l` then `m`,
/// the other `m` then `l`. A context waiting on `l` behind an older waiter while holding `m`
/// would deadlock once the older one takes `l` and wants `m` (no unlock wakes it): under
/// wait-die it must die instead. Every interleaving must finish, under both algorithms.
fn handover(class: &'static WwClass) {
    let mut b = builder();
    b.preemption_bound = Some(2);
    b.check(move || {
        let l = Arc::new(WwMutex::new(class, 0u32));
        let m = Arc::new(WwMutex::new(class, 0u32));
        let g = l.lock_no_ctx();
        let l1 = l.clone();
        let m1 = m.clone();
        let first = thread::spawn(move || transaction(class, &l1, &m1));
        let (l2, m2) = (l.clone(), m.clone());
        let second = thread::spawn(move || transaction(class, &m2, &l2));
        drop(g);
        first.join().unwrap();
        second.join().unwrap();
        assert_eq!(*l.lock_no_ctx(), 2);
        assert_eq!(*m.lock_no_ctx(), 2);
    });
}

#[test]
fn loom_handover_wait_die() {
    handover(&WAIT_DIE);
}

#[test]
fn loom_handover_wound_wait() {
    handover(&WOUND_WAIT);
}
