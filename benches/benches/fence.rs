//! Fence benches, each beside its baselines in the same group: a `std::sync::Condvar` with a
//! `Mutex<bool>` flag, and a bare `event_listener::Event`.
//!
//! - `create_signal`: make a one-shot completion and complete it (nobody waiting).
//! - `add_callback_signal`: register one completion callback, then complete (the Condvar
//!   baseline keeps boxed callbacks in its mutex; the Event baseline registers a listener).
//! - `wake_latency`: a ping-pong between two threads, each blocked in a wait until the other
//!   signals; reported per one-way wake (round trip / 2). Fence waits spin briefly before
//!   they sleep (`gpusched_fence::set_wait_spin`, 3 µs), so in a tight ping-pong they rarely
//!   sleep; `wake_latency_nospin` turns the spin off, so every wait sleeps in the futex as the
//!   Condvar's does: the like-for-like wake.
//!
//! After criterion, a short manual run, the three interleaved round by round, takes the median
//! of each and of each round's ratios ours / Condvar and ours / Event.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use event_listener::{Event, Listener as _};
use gpusched_benches::metric;
use gpusched_fence::{Fence, FenceContext, Signaller};

type Routine = fn(u64) -> Duration;

// --- create + signal -------------------------------------------------------------------------

fn create_signal_fence(iters: u64) -> Duration {
    let ctx = FenceContext::new("bench");
    let start = Instant::now();
    for _ in 0..iters {
        let (fence, signaller) = ctx.next();
        black_box(signaller.signal());
        black_box(fence);
    }
    start.elapsed()
}

fn create_signal_condvar(iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let waiter_side = pair.clone();
        *pair.0.lock().unwrap() = true;
        pair.1.notify_all();
        black_box(waiter_side);
    }
    start.elapsed()
}

fn create_signal_event(iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let ev = Arc::new(Event::new());
        let waiter_side = ev.clone();
        black_box(ev.notify(usize::MAX));
        black_box(waiter_side);
    }
    start.elapsed()
}

// --- add_callback + signal -------------------------------------------------------------------

fn callback_signal_fence(iters: u64) -> Duration {
    let ctx = FenceContext::new("bench");
    let hits = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    for _ in 0..iters {
        let (fence, signaller) = ctx.next();
        let h = hits.clone();
        let _ = fence.add_callback(move |_| {
            h.fetch_add(1, Ordering::Relaxed);
        });
        black_box(signaller.signal());
    }
    let d = start.elapsed();
    assert_eq!(hits.load(Ordering::Relaxed), iters);
    d
}

type Callbacks = Vec<Box<dyn FnOnce() + Send>>;

fn callback_signal_condvar(iters: u64) -> Duration {
    let hits = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    for _ in 0..iters {
        let pair = Arc::new((Mutex::new((false, Callbacks::new())), Condvar::new()));
        let h = hits.clone();
        pair.0.lock().unwrap().1.push(Box::new(move || {
            h.fetch_add(1, Ordering::Relaxed);
        }));
        let cbs = {
            let mut g = pair.0.lock().unwrap();
            g.0 = true;
            std::mem::take(&mut g.1)
        };
        pair.1.notify_all();
        for cb in cbs {
            cb();
        }
    }
    let d = start.elapsed();
    assert_eq!(hits.load(Ordering::Relaxed), iters);
    d
}

fn callback_signal_event(iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let ev = Event::new();
        let listener = ev.listen();
        ev.notify(usize::MAX);
        assert!(listener.discard());
    }
    start.elapsed()
}

// --- cross-thread wake latency (ping-pong) ---------------------------------------------------

/// Runs `iters` round trips; returns the time per one-way wake times `iters`.
fn ping_pong_fence(iters: u64) -> Duration {
    let ctx = FenceContext::new("ping");
    let (pings, ping_s): (Vec<Fence>, Vec<Signaller>) = (0..iters).map(|_| ctx.next()).unzip();
    let (pongs, pong_s): (Vec<Fence>, Vec<Signaller>) = (0..iters).map(|_| ctx.next()).unzip();
    let barrier = Arc::new(Barrier::new(2));
    let b = barrier.clone();
    let t = thread::spawn(move || {
        b.wait();
        for (ping, pong) in pings.iter().zip(pong_s) {
            ping.wait().unwrap();
            pong.signal();
        }
    });
    barrier.wait();
    let start = Instant::now();
    for (ping, pong) in ping_s.into_iter().zip(&pongs) {
        ping.signal();
        pong.wait().unwrap();
    }
    let d = start.elapsed();
    t.join().unwrap();
    d / 2
}

/// The ping-pong with the fence's pre-sleep spin off (`set_wait_spin(0)`): every wait sleeps
/// in the futex, as the Condvar does.
fn ping_pong_fence_nospin(iters: u64) -> Duration {
    let spin = gpusched_fence::wait_spin();
    gpusched_fence::set_wait_spin(Duration::ZERO);
    let d = ping_pong_fence(iters);
    gpusched_fence::set_wait_spin(spin);
    d
}

/// A counter one thread raises and another waits for: the baselines' wake primitive.
trait Flag: Default + Send + Sync + 'static {
    fn set(&self, v: u64);
    fn wait_for(&self, v: u64);
}

/// The counter behind a `std::sync::Condvar`.
#[derive(Default)]
struct CvFlag {
    n: Mutex<u64>,
    cv: Condvar,
}

impl Flag for CvFlag {
    fn set(&self, v: u64) {
        *self.n.lock().unwrap() = v;
        self.cv.notify_all();
    }
    fn wait_for(&self, v: u64) {
        let mut g = self.n.lock().unwrap();
        while *g < v {
            g = self.cv.wait(g).unwrap();
        }
    }
}

/// An atomic counter with a bare `event_listener::Event`.
#[derive(Default)]
struct EvFlag {
    n: AtomicU64,
    ev: Event,
}

impl Flag for EvFlag {
    fn set(&self, v: u64) {
        self.n.store(v, Ordering::Release);
        self.ev.notify(usize::MAX);
    }
    fn wait_for(&self, v: u64) {
        loop {
            if self.n.load(Ordering::Acquire) >= v {
                return;
            }
            let l = self.ev.listen();
            if self.n.load(Ordering::Acquire) >= v {
                return;
            }
            l.wait();
        }
    }
}

/// The ping-pong of [`ping_pong_fence`] over two `F` flags: the time of one hand-over.
fn ping_pong_flag<F: Flag>(iters: u64) -> Duration {
    let (ping, pong) = (Arc::new(F::default()), Arc::new(F::default()));
    let (pi, po) = (ping.clone(), pong.clone());
    let barrier = Arc::new(Barrier::new(2));
    let b = barrier.clone();
    let t = thread::spawn(move || {
        b.wait();
        for i in 1..=iters {
            pi.wait_for(i);
            po.set(i);
        }
    });
    barrier.wait();
    let start = Instant::now();
    for i in 1..=iters {
        ping.set(i);
        pong.wait_for(i);
    }
    let d = start.elapsed();
    t.join().unwrap();
    d / 2
}

fn ping_pong_condvar(iters: u64) -> Duration {
    ping_pong_flag::<CvFlag>(iters)
}

fn ping_pong_event(iters: u64) -> Duration {
    ping_pong_flag::<EvFlag>(iters)
}

// --- criterion -------------------------------------------------------------------------------

const GROUPS: [(&str, [(&str, Routine); 3]); 4] = [
    (
        "create_signal",
        [
            ("fence", create_signal_fence),
            ("condvar", create_signal_condvar),
            ("event", create_signal_event),
        ],
    ),
    (
        "add_callback_signal",
        [
            ("fence", callback_signal_fence),
            ("condvar", callback_signal_condvar),
            ("event", callback_signal_event),
        ],
    ),
    (
        "wake_latency",
        [("fence", ping_pong_fence), ("condvar", ping_pong_condvar), ("event", ping_pong_event)],
    ),
    (
        "wake_latency_nospin",
        [
            ("fence", ping_pong_fence_nospin),
            ("condvar", ping_pong_condvar),
            ("event", ping_pong_event),
        ],
    ),
];

fn bench(c: &mut Criterion) {
    for (group, routines) in GROUPS {
        let mut g = c.benchmark_group(group);
        for (name, routine) in routines {
            g.bench_function(name, |b| b.iter_custom(routine));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);

/// The median of `v` (which it sorts).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the three routines interleaved, `samples` rounds of `iters` iterations each: the median
/// ns per iteration of each, and the medians of each round's ours/Condvar and ours/Event.
fn interleaved(routines: [Routine; 3], samples: usize, iters: u64) -> ([f64; 3], [f64; 2]) {
    let mut times: [Vec<f64>; 3] = Default::default();
    let mut ratios: [Vec<f64>; 2] = Default::default();
    for _ in 0..samples {
        let t = routines.map(|r| r(iters).as_nanos() as f64 / iters as f64);
        for (v, x) in times.iter_mut().zip(t) {
            v.push(x);
        }
        ratios[0].push(t[0] / t[1]);
        ratios[1].push(t[0] / t[2]);
    }
    (times.map(|mut v| median(&mut v)), ratios.map(|mut v| median(&mut v)))
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // In `--test` mode only prove that the ratio pass runs.
    let test_mode = std::env::args().any(|a| a == "--test");
    let (samples, iters) = if test_mode { (3, 10) } else { (21, 2_000) };
    println!(
        "\nmedians over {samples} interleaved rounds of {iters} iterations (ns per op; wake = one \
         way; ratios are medians of each round's ratio):"
    );
    for (group, routines) in GROUPS {
        let ([ours, condvar, event], [vs_condvar, vs_event]) =
            interleaved(routines.map(|(_, r)| r), samples, iters);
        println!(
            "{group:>20}: fence {ours:9.1}  condvar {condvar:9.1}  event {event:9.1}  \
             fence/condvar {vs_condvar:5.2}  fence/event {vs_event:5.2}"
        );
        metric(&format!("fence.{group}.fence_ns"), ours);
        metric(&format!("fence.{group}.condvar_ns"), condvar);
        metric(&format!("fence.{group}.event_ns"), event);
        metric(&format!("fence.{group}.fence_condvar_ratio"), vs_condvar);
        metric(&format!("fence.{group}.fence_event_ratio"), vs_event);
    }
}
