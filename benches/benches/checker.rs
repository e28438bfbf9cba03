//! The signalling-contract checker's cost: fence create+signal (which enters a signalling
//! section) and annotated `lockdep::Mutex` lock/unlock (alone, and nested under another lock,
//! the known-edge fast path), with the checker on (`Policy::Panic`) vs `Policy::Off`, against
//! a plain `std::sync::Mutex` in the same group. A summary with the ratios prints at the end.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use gpusched_benches::metric;
use gpusched_fence::lockdep::{self, LockClass, Policy};
use gpusched_fence::FenceContext;

static OUTER: LockClass = LockClass::new("bench-outer");
static INNER: LockClass = LockClass::new("bench-inner");
static LOCK_OUTER: lockdep::Mutex<u64> = lockdep::Mutex::new(&OUTER, 0);
static LOCK_INNER: lockdep::Mutex<u64> = lockdep::Mutex::new(&INNER, 0);
static STD_OUTER: std::sync::Mutex<u64> = std::sync::Mutex::new(0);
static STD_INNER: std::sync::Mutex<u64> = std::sync::Mutex::new(0);

fn fence_create_signal(ctx: &FenceContext) {
    let (fence, signaller) = ctx.next();
    signaller.signal();
    black_box(fence);
}

fn lockdep_lock() {
    *LOCK_OUTER.lock() += 1;
}

fn std_lock() {
    *STD_OUTER.lock().unwrap() += 1;
}

fn lockdep_nested() {
    let _a = LOCK_OUTER.lock();
    *LOCK_INNER.lock() += 1;
}

fn std_nested() {
    let _a = STD_OUTER.lock().unwrap();
    *STD_INNER.lock().unwrap() += 1;
}

fn with_policy<R>(p: Policy, f: impl FnOnce() -> R) -> R {
    lockdep::set_policy(p);
    let r = f();
    lockdep::set_policy(Policy::Panic);
    r
}

fn bench(c: &mut Criterion) {
    const { assert!(lockdep::ENABLED, "build the benches with the checker feature") };
    let ctx = FenceContext::new("bench");

    let mut g = c.benchmark_group("checker/fence_create_signal");
    g.bench_function("checker_on", |b| {
        with_policy(Policy::Panic, || b.iter(|| fence_create_signal(&ctx)))
    });
    g.bench_function("checker_off", |b| {
        with_policy(Policy::Off, || b.iter(|| fence_create_signal(&ctx)))
    });
    g.finish();

    let mut g = c.benchmark_group("checker/mutex_lock_unlock");
    g.bench_function("std_mutex", |b| b.iter(std_lock));
    g.bench_function("lockdep_mutex_on", |b| with_policy(Policy::Panic, || b.iter(lockdep_lock)));
    g.bench_function("lockdep_mutex_off", |b| with_policy(Policy::Off, || b.iter(lockdep_lock)));
    g.finish();

    let mut g = c.benchmark_group("checker/mutex_nested_pair");
    g.bench_function("std_mutex", |b| b.iter(std_nested));
    g.bench_function("lockdep_mutex_on", |b| with_policy(Policy::Panic, || b.iter(lockdep_nested)));
    g.bench_function("lockdep_mutex_off", |b| with_policy(Policy::Off, || b.iter(lockdep_nested)));
    g.finish();
}

/// Mean time per call of `f` over `iters` calls, best of three rounds.
fn time(iters: u32, mut f: impl FnMut()) -> Duration {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed() / iters
        })
        .min()
        .unwrap_or_default()
}

/// A quick side-by-side measurement so the ratios are printed in one place.
fn summary(iters: u32) {
    let ctx = FenceContext::new("bench-summary");
    let rows = [
        (
            "fence create+signal",
            time(iters, || fence_create_signal(&ctx)),
            with_policy(Policy::Off, || time(iters, || fence_create_signal(&ctx))),
            None,
        ),
        (
            "mutex lock/unlock",
            time(iters, lockdep_lock),
            with_policy(Policy::Off, || time(iters, lockdep_lock)),
            Some(time(iters, std_lock)),
        ),
        (
            "nested mutex pair",
            time(iters, lockdep_nested),
            with_policy(Policy::Off, || time(iters, lockdep_nested)),
            Some(time(iters, std_nested)),
        ),
    ];
    println!("\nchecker cost summary ({iters} iterations, best of 3, ns per op):");
    for (name, on, off, std) in rows {
        let (on, off) = (on.as_secs_f64() * 1e9, off.as_secs_f64() * 1e9);
        let key = name.replace([' ', '/', '+'], "_");
        metric(&format!("checker.{key}.on_ns"), on);
        metric(&format!("checker.{key}.off_ns"), off);
        print!("  {name:<20} on {on:7.1}  off {off:7.1}  on/off {:5.2}x", on / off.max(1e-3));
        if let Some(std) = std {
            let std = std.as_secs_f64() * 1e9;
            print!("  std {std:7.1}  on/std {:5.2}x", on / std.max(1e-3));
        }
        println!();
        if let Some(std) = std {
            metric(&format!("checker.{key}.std_ns"), std.as_secs_f64() * 1e9);
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    lockdep::set_policy(Policy::Panic);
    benches();
    Criterion::default().configure_from_args().final_summary();
    let test_mode = std::env::args().any(|a| a == "--test");
    summary(if test_mode { 1_000 } else { 2_000_000 });
}
