//! Reservation-object benches, each beside its baseline:
//! - `resv_lock_add_unlock`: lock / reserve / add_fence / unlock of a `Resv`, against a
//!   `std::sync::Mutex<Vec<Fence>>` doing the same replacement;
//! - `resv_readers_under_writer`: a reader that takes the lock against one that reads the
//!   lock-free snapshot, while a writer thread keeps adding fences;
//! - `resv_exec_16`: the multi-object locker over 16 objects, alone and against a second
//!   thread locking the same 16 in reverse order; the contended baseline is 16
//!   `std::sync::Mutex`es taken in one global order by both threads (the deadlock-free
//!   scheme a caller can use when it controls every lock order, which wound/wait exists to
//!   avoid needing).
//!
//! After criterion's numbers, each group prints a ratio from its own timed loop: the routines
//! interleaved round by round, medians of the rounds (and of each round's ratio). The
//! lock/add/unlock loop re-adds one fence, which leaves the list unchanged (nothing to
//! publish); a second loop adds a new fence each time, so every unlock publishes. The `Exec`
//! rounds profile the measuring thread from `/proc/thread-self/{schedstat,status}`: CPU time,
//! run-queue wait and voluntary sleeps per `lock_all`.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gpusched_benches::{metric, test_mode};
use gpusched_fence::{Fence, FenceContext, Signaller};
use gpusched_resv::{AcquireCtx, Exec, Resv, Usage, RESV_WW_CLASS};

/// Nanoseconds per call of `f`, over `iters` calls (for the printed ratios).
fn ns_per_iter(iters: u64, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

fn iters(full: u64) -> u64 {
    if test_mode() {
        10
    } else {
        full
    }
}

/// Background threads that run until dropped.
struct Background {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Background {
    fn spawn(n: usize, work: impl Fn(&AtomicBool) + Send + Sync + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let work = Arc::new(work);
        let handles = (0..n)
            .map(|_| {
                let (stop, work) = (stop.clone(), work.clone());
                thread::spawn(move || work(&stop))
            })
            .collect();
        Background { stop, handles }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            h.join().unwrap();
        }
    }
}

fn std_add(list: &Mutex<Vec<Fence>>, fence: &Fence) {
    let mut l = list.lock().unwrap();
    match l.iter().position(|f| f.context() == fence.context()) {
        Some(i) => l[i] = fence.clone(),
        None => l.push(fence.clone()),
    }
}

fn resv_add(resv: &Resv, fence: &Fence) {
    let mut g = resv.lock_no_ctx();
    g.reserve_fences(1).unwrap();
    g.add_fence(fence.clone(), Usage::Write);
}

fn resv_add_ctx(resv: &Resv, fence: &Fence) {
    let ctx = AcquireCtx::new(&RESV_WW_CLASS);
    let mut g = resv.lock(&ctx).unwrap();
    g.reserve_fences(1).unwrap();
    g.add_fence(fence.clone(), Usage::Write);
}

fn lock_add_unlock(c: &mut Criterion) {
    let ring = FenceContext::new("bench");
    let (fence, _signaller) = ring.next();
    let list = Mutex::new(Vec::new());
    let resv = Resv::new();
    let mut g = c.benchmark_group("resv_lock_add_unlock");
    g.bench_function("std_mutex_vec_baseline", |b| b.iter(|| std_add(&list, black_box(&fence))));
    g.bench_function("resv_no_ctx", |b| b.iter(|| resv_add(&resv, black_box(&fence))));
    g.bench_function("resv_acquire_ctx", |b| b.iter(|| resv_add_ctx(&resv, black_box(&fence))));
    g.finish();

    // Interleaved rounds (std, no ctx, ctx); medians of the times and of each round's ratios.
    let (n, rounds) = if test_mode() { (10, 1) } else { (40_000, 9) };
    let (mut bv, mut pv, mut cv, mut prv, mut crv) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let base = ns_per_iter(n, || std_add(&list, &fence));
        let plain = ns_per_iter(n, || resv_add(&resv, &fence));
        let ctx = ns_per_iter(n, || resv_add_ctx(&resv, &fence));
        bv.push(base);
        pv.push(plain);
        cv.push(ctx);
        prv.push(plain / base);
        crv.push(ctx / base);
    }
    let (base, plain, ctx) = (median(&mut bv), median(&mut pv), median(&mut cv));
    let (plain_ratio, ctx_ratio) = (median(&mut prv), median(&mut crv));
    println!(
        "ratio resv_lock_add_unlock: resv_no_ctx/std = {plain_ratio:.2}x, resv_acquire_ctx/std = \
         {ctx_ratio:.2}x ({base:.0} / {plain:.0} / {ctx:.0} ns; medians of {rounds} interleaved \
         rounds)"
    );
    metric("resv.lock_add_unlock.no_ctx_ratio", plain_ratio);
    metric("resv.lock_add_unlock.ctx_ratio", ctx_ratio);

    // The same with a new fence of the ring each time (each replaces the previous one), so
    // every unlock publishes a changed list: the loops above re-add one fence, which leaves
    // the list unchanged and publishes nothing.
    let (mut fb, mut fp, mut fr) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        let (fences, signallers): (Vec<Fence>, Vec<Signaller>) =
            (0..n).map(|_| ring.next()).unzip();
        let mut it = fences.iter().cycle();
        let base = ns_per_iter(n, || std_add(&list, it.next().unwrap()));
        let mut it = fences.iter().cycle();
        let plain = ns_per_iter(n, || resv_add(&resv, it.next().unwrap()));
        drop(signallers);
        fb.push(base);
        fp.push(plain);
        fr.push(plain / base);
    }
    let (fresh_base, fresh_plain, fresh_ratio) =
        (median(&mut fb), median(&mut fp), median(&mut fr));
    println!(
        "ratio resv_lock_add_unlock, a new fence each time: resv_no_ctx/std = {fresh_ratio:.2}x \
         ({fresh_base:.0} / {fresh_plain:.0} ns)"
    );
    metric("resv.lock_add_unlock.fresh_std_ns", fresh_base);
    metric("resv.lock_add_unlock.fresh_no_ctx_ns", fresh_plain);
    metric("resv.lock_add_unlock.fresh_no_ctx_ratio", fresh_ratio);
    metric("resv.lock_add_unlock.std_ns", base);
    metric("resv.lock_add_unlock.no_ctx_ns", plain);
    metric("resv.lock_add_unlock.ctx_ns", ctx);
}

fn readers_under_writer(c: &mut Criterion) {
    let resv = Arc::new(Resv::new());
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (resv, writes) = (resv.clone(), writes.clone());
        Background::spawn(1, move |stop| {
            let (ra, rb) = (FenceContext::new("writer-a"), FenceContext::new("writer-b"));
            let mut pending: Vec<(Signaller, Signaller)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let ((fa, sa), (fb, sb)) = (ra.next(), rb.next());
                {
                    let mut g = resv.lock_no_ctx();
                    g.reserve_fences(2).unwrap();
                    g.add_fence(fa, Usage::Write);
                    g.add_fence(fb, Usage::Read);
                }
                for (s1, s2) in pending.drain(..) {
                    s1.signal();
                    s2.signal();
                }
                pending.push((sa, sb));
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let locked = |r: &Resv| black_box(r.lock_no_ctx().test_signaled(Usage::Read));
    let unlocked = |r: &Resv| black_box(r.test_signaled_unlocked(Usage::Read));
    let mut g = c.benchmark_group("resv_readers_under_writer");
    g.bench_function("locked_reader_baseline", |b| b.iter(|| locked(&resv)));
    g.bench_function("unlocked_snapshot_reader", |b| b.iter(|| unlocked(&resv)));
    g.finish();

    // Fixed-time phases: how fast each reader reads, and how much the writer gets done
    // meanwhile (an unlocked reader should not slow the writer down).
    let phase = |read: &dyn Fn(&Resv) -> bool| {
        let dur = if test_mode() { Duration::from_millis(5) } else { Duration::from_millis(500) };
        let (w0, t0) = (writes.load(Ordering::Relaxed), Instant::now());
        let mut reads = 0u64;
        while t0.elapsed() < dur {
            for _ in 0..64 {
                read(&resv);
            }
            reads += 64;
        }
        let secs = t0.elapsed().as_secs_f64();
        (reads as f64 / secs, (writes.load(Ordering::Relaxed) - w0) as f64 / secs)
    };
    let (locked_reads, locked_writes) = phase(&locked);
    let (unlocked_reads, unlocked_writes) = phase(&unlocked);
    drop(writer);
    println!(
        "ratio resv_readers_under_writer: reads/s unlocked/locked = {:.1}x ({unlocked_reads:.3e} \
         vs {locked_reads:.3e}); writer commits/s with unlocked/locked reader = {:.2}x \
         ({unlocked_writes:.3e} vs {locked_writes:.3e})",
        unlocked_reads / locked_reads,
        unlocked_writes / locked_writes.max(1.0),
    );
    metric("resv.readers.locked_reads_per_s", locked_reads);
    metric("resv.readers.unlocked_reads_per_s", unlocked_reads);
    metric("resv.readers.writes_per_s_with_locked", locked_writes);
    metric("resv.readers.writes_per_s_with_unlocked", unlocked_writes);
}

/// A thread locking all of `objs` in reverse order until dropped, and its round count.
fn reverse_locker(objs: &Arc<Vec<Resv>>) -> (Background, Arc<AtomicU64>) {
    let rounds = Arc::new(AtomicU64::new(0));
    let (objs, r) = (objs.clone(), rounds.clone());
    let bg = Background::spawn(1, move |stop| {
        let set: Vec<&Resv> = objs.iter().rev().collect();
        let mut exec = Exec::new();
        while !stop.load(Ordering::Relaxed) {
            exec.lock_all(&set, |guards| black_box(guards.len())).unwrap();
            r.fetch_add(1, Ordering::Relaxed);
        }
    });
    (bg, rounds)
}

/// One contended phase of `resv_exec_16`, per `lock_all` of the measuring thread.
#[derive(Clone, Copy, Debug)]
struct Phase {
    ns: f64,
    backoffs: f64,
    /// On a CPU (`/proc/thread-self/schedstat`, first field).
    cpu_ns: f64,
    /// Runnable but waiting for a CPU (second field).
    runqueue_ns: f64,
    /// Voluntary context switches (`/proc/thread-self/status`): sleeps on a lock.
    sleeps: f64,
}

/// (CPU ns, run-queue ns, voluntary switches) of the calling thread; zeros where /proc is
/// missing.
fn thread_sched() -> (f64, f64, f64) {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut it = stat.split_whitespace().map(|v| v.parse::<f64>().unwrap_or(0.0));
    let (cpu, rq) = (it.next().unwrap_or(0.0), it.next().unwrap_or(0.0));
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let sleeps = status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    (cpu, rq, sleeps)
}

/// `n` calls of `forward`, profiled; with `other`, while another thread locks those objects
/// in reverse order.
fn profiled(
    n: u64,
    other: Option<&Arc<Vec<Resv>>>,
    exec: &mut Exec,
    objs: &Vec<Resv>,
    forward: impl Fn(&Vec<Resv>, &mut Exec) -> usize,
) -> Phase {
    let other = other.map(|o| {
        let (bg, rounds) = reverse_locker(o);
        while rounds.load(Ordering::Relaxed) == 0 {
            thread::yield_now(); // contend only once the other thread is running
        }
        bg
    });
    let before = exec.contentions();
    let (c0, r0, s0) = thread_sched();
    let ns = ns_per_iter(n, || {
        forward(objs, exec);
    });
    let (c1, r1, s1) = thread_sched();
    drop(other);
    let per = |v: f64| v / n as f64;
    Phase {
        ns,
        backoffs: per((exec.contentions() - before) as f64),
        cpu_ns: per(c1 - c0),
        runqueue_ns: per(r1 - r0),
        sleeps: per(s1 - s0),
    }
}

/// The median of `v` (which it sorts).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn exec_16(c: &mut Criterion) {
    const N: usize = 16;
    let objs: Arc<Vec<Resv>> = Arc::new((0..N).map(|_| Resv::new()).collect::<Vec<_>>());
    let forward = |objs: &Vec<Resv>, exec: &mut Exec| {
        let set: Vec<&Resv> = objs.iter().collect();
        exec.lock_all(&set, |guards| black_box(guards.len())).unwrap()
    };
    let mut exec = Exec::new();
    let mut g = c.benchmark_group("resv_exec_16");
    g.bench_function("one_thread_baseline", |b| b.iter(|| forward(&objs, &mut exec)));
    let n = iters(20_000);
    let other = reverse_locker(&objs).0;
    g.bench_function("two_threads_contending", |b| b.iter(|| forward(&objs, &mut exec)));
    g.finish();
    drop(other);

    // Interleaved rounds, alone then contended; medians over the rounds. Each phase profiles
    // the measuring thread (CPU time, run-queue wait, sleeps) to show where the wall time goes.
    let rounds = if test_mode() { 1 } else { 7 };
    let (mut alone_v, mut cont_v) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        alone_v.push(profiled(n, None, &mut exec, &objs, forward));
        cont_v.push(profiled(n, Some(&objs), &mut exec, &objs, forward));
    }
    let pick = |v: &[Phase], f: fn(&Phase) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
    let alone = pick(&alone_v, |p| p.ns);
    let contended = pick(&cont_v, |p| p.ns);
    let backoffs = pick(&cont_v, |p| p.backoffs);
    let ratio =
        median(&mut cont_v.iter().zip(&alone_v).map(|(c, a)| c.ns / a.ns).collect::<Vec<_>>());
    for (name, v) in [("alone", &alone_v), ("contended", &cont_v)] {
        println!(
            "profile resv_exec_16 {name} (medians per lock_all): wall {:.0} ns = CPU {:.0} ns + \
             run-queue wait {:.0} ns + asleep (rest); {:.3} sleeps, {:.3} back-offs",
            pick(v, |p| p.ns),
            pick(v, |p| p.cpu_ns),
            pick(v, |p| p.runqueue_ns),
            pick(v, |p| p.sleeps),
            pick(v, |p| p.backoffs),
        );
    }
    metric("resv.exec16.contended_ratio", ratio);
    metric("resv.exec16.contended_cpu_ns", pick(&cont_v, |p| p.cpu_ns));
    metric("resv.exec16.contended_runqueue_ns", pick(&cont_v, |p| p.runqueue_ns));
    metric("resv.exec16.contended_sleeps_per_lock_all", pick(&cont_v, |p| p.sleeps));

    // The same with the other thread in the same order: blocking without back-offs.
    let same_rounds = Arc::new(AtomicU64::new(0));
    let other_same = {
        let (objs, rounds) = (objs.clone(), same_rounds.clone());
        Background::spawn(1, move |stop| {
            let set: Vec<&Resv> = objs.iter().collect();
            let mut exec = Exec::new();
            while !stop.load(Ordering::Relaxed) {
                exec.lock_all(&set, |guards| black_box(guards.len())).unwrap();
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while same_rounds.load(Ordering::Relaxed) == 0 {
        thread::yield_now(); // contend only once the other thread is running
    }
    let same_order = ns_per_iter(n, || {
        forward(&objs, &mut exec);
    });
    drop(other_same);
    metric("resv.exec16.same_order_contended_ns", same_order);

    // The baseline under contention: 16 std mutexes, both threads in the same order.
    let mutexes: Arc<Vec<Mutex<u64>>> = Arc::new((0..N).map(|_| Mutex::new(0)).collect::<Vec<_>>());
    let lock_sorted = |ms: &Vec<Mutex<u64>>| {
        let mut guards: Vec<_> = ms.iter().map(|m| m.lock().unwrap()).collect();
        for g in &mut guards {
            **g += 1;
        }
        black_box(guards.len())
    };
    let std_alone = ns_per_iter(n, || {
        lock_sorted(&mutexes);
    });
    let std_rounds = Arc::new(AtomicU64::new(0));
    let other_std = {
        let (ms, rounds) = (mutexes.clone(), std_rounds.clone());
        Background::spawn(1, move |stop| {
            while !stop.load(Ordering::Relaxed) {
                lock_sorted(&ms);
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while std_rounds.load(Ordering::Relaxed) == 0 {
        thread::yield_now(); // contend only once the other thread is running
    }
    let std_contended = ns_per_iter(n, || {
        lock_sorted(&mutexes);
    });
    drop(other_std);
    println!(
        "ratio resv_exec_16 vs 16 std mutexes in one order: alone {:.2}x ({alone:.0} / \
         {std_alone:.0} ns), two threads {:.2}x ({contended:.0} / {std_contended:.0} ns; the \
         other std thread did {} rounds meanwhile)",
        alone / std_alone,
        contended / std_contended,
        std_rounds.load(Ordering::Relaxed)
    );
    metric("resv.exec16.std_sorted_alone_ns", std_alone);
    metric("resv.exec16.std_sorted_contended_ns", std_contended);
    println!(
        "ratio resv_exec_16: both threads in the same order: {same_order:.0} ns per lock_all \
         ({:.2}x alone)",
        same_order / alone
    );
    println!(
        "ratio resv_exec_16: two_threads/one_thread = {ratio:.2}x ({contended:.0} / {alone:.0} ns \
         per lock_all, medians of {rounds} interleaved rounds); back-offs per lock_all under \
         contention: {backoffs:.3}"
    );
    metric("resv.exec16.alone_ns", alone);
    metric("resv.exec16.contended_ns", contended);
    metric("resv.exec16.backoffs_per_lock_all", backoffs);
}

criterion_group!(benches, lock_add_unlock, readers_under_writer, exec_16);
criterion_main!(benches);
