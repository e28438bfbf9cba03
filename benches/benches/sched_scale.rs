//! How the scheduler's per-job cost scales with the number of entities and of queued jobs,
//! and what a queued job costs in memory, on an immediate `MockRing` (hardware fences signal
//! inside `run_job`). No criterion groups: every number comes from this file's own timed
//! loops, the variants of a round run one after the other and rounds repeat (median of the
//! rounds' ratios), so that load from other processes hits all variants alike.
//!
//! - `spread`: `raw_mockring` (the ring alone through the `Backend` trait, no scheduler), then
//!   arm + push of the same jobs round-robin over 1, 64 and 4,096 entities of one scheduler.
//!   Each job runs as it is pushed, so selection sees one ready entity among all registered
//!   ones: the ratio of many entities to one is the cost of selection in the number of
//!   entities.
//! - `queued`: every job depends on one unsignalled *gate* fence; 1,000,000 jobs are armed and
//!   pushed over 10,000 entities (queued, their heads blocked), then the gate signals and the
//!   scheduler runs them all. The per-job cost (queueing + release) against the same jobs on
//!   one entity is the cost of selection among many ready entities.
//! - `bytes per queued job`: the bytes allocated and still live once the queued jobs are
//!   pushed (a counting `#[global_allocator]` around the checker's `CheckingAllocator`),
//!   divided by the number of jobs, less the payload's size (`MockJob`, stored in the job)
//!   and less what the backend's `prepare_job` keeps per job (the mock ring's prepared
//!   hardware fence, owned by the payload, and the room it reserves in its logs), measured
//!   alone on a fresh ring with the same number of jobs: the scheduler's own bytes. It
//!   includes each job's callback on the gate fence. The total and the backend's share are
//!   printed beside it.
//! - `allocations in signalling sections`: every loop above runs inside `lockdep::capture`
//!   with the `CheckingAllocator` installed, so each allocation inside a signalling section
//!   (`run_job`, completion callbacks, selection) is a report; their count is printed (the
//!   contract's value is 0). Needs the checker compiled in.
#![allow(missing_docs)] // criterion_main! generates undocumented items

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gpusched::fence::lockdep::{self, CheckingAllocator, Rule};
use gpusched::fence::FenceContext;
use gpusched::testing::{MockJob, MockRing};
use gpusched::{Backend, Entity, JobInfo, Priority};
use gpusched_benches::{metric, mock_raw, mock_scheduler, mock_spread, test_mode};

/// Counts live heap bytes while `COUNTING` is set, then forwards to the checker's allocator.
struct Counting(CheckingAllocator);

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);

#[global_allocator]
static ALLOC: Counting = Counting(CheckingAllocator::new(System));

fn count(delta: i64) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the inner allocator with the caller's arguments unchanged;
// the counting beside it is two relaxed atomics and never allocates or touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: forwarded with the caller's contract.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: forwarded with the caller's contract.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        // SAFETY: forwarded with the caller's contract.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as i64 - layout.size() as i64);
        // SAFETY: forwarded with the caller's contract.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// The median of `v` (which it sorts).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `queued` measure's size: 1,000,000 jobs over 10,000 entities, or
/// `GPUSCHED_BENCH_QUEUED=JOBS:ENTITIES` (to compare with a build whose selection is too slow
/// for the full size).
fn queued_size() -> (u64, usize) {
    let parse = |v: String| {
        let (j, e) = v.split_once(':')?;
        Some((j.parse().ok()?, e.parse().ok()?))
    };
    std::env::var("GPUSCHED_BENCH_QUEUED").ok().and_then(parse).unwrap_or((1_000_000, 10_000))
}

/// The bytes `MockRing::prepare_job` allocates and keeps per job, counted as [`queued`]
/// counts them: on a fresh ring, `first` jobs prepared uncounted (the entities' first jobs),
/// then `rest` counted, all held (as queued jobs hold their payloads). The same sequence of
/// prepares makes the ring's logs grow at the same points.
fn backend_bytes(first: u64, rest: u64) -> f64 {
    let ring = MockRing::immediate();
    let mut held = Vec::with_capacity((first + rest) as usize);
    let prepare = |i: u64| {
        let info =
            JobInfo { id: i, seqno: i + 1, credits: 1, priority: Priority::Normal, entity: 1 };
        let mut job = MockJob::new(i);
        ring.prepare_job(&mut job, &info).expect("prepare");
        job
    };
    held.extend((0..first).map(prepare));
    LIVE.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    for i in first..first + rest {
        let job = prepare(i);
        held.push(job);
    }
    COUNTING.store(false, Ordering::Relaxed);
    let bytes = LIVE.load(Ordering::Relaxed) as f64 / rest.max(1) as f64;
    drop(held);
    bytes
}

/// Queues `jobs` jobs round-robin over `entities` entities behind one gate fence, then
/// signals the gate; returns the time from the first arm until the last job signalled and
/// the live bytes allocated per queued job (measured just before the gate signals).
fn queued(entities: usize, jobs: u64) -> (Duration, f64) {
    let s = mock_scheduler("queued");
    let es: Vec<_> = (0..entities)
        .map(|_| Entity::new(&[&s], Priority::Normal).expect("one scheduler"))
        .collect();
    let gate_ctx = FenceContext::new("gate");
    let (gate, signaller) = gate_ctx.with_seqno(1, None);
    // Entities register on their scheduler at their first arm: do it for all before counting,
    // so the bytes are per job, not per entity.
    let mut first = Vec::with_capacity(entities);
    for e in &es {
        first.push(e.job(MockJob::new(0)).dependency(gate.clone()).arm().expect("arm").push());
    }
    let mut last = first.pop();
    drop(first);
    let start = Instant::now();
    LIVE.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let rest = jobs.saturating_sub(entities as u64);
    for i in 0..rest {
        let e = &es[i as usize % entities];
        last = Some(e.job(MockJob::new(i)).dependency(gate.clone()).arm().expect("arm").push());
    }
    COUNTING.store(false, Ordering::Relaxed);
    let bytes = LIVE.load(Ordering::Relaxed) as f64 / rest.max(1) as f64
        - std::mem::size_of::<MockJob>() as f64;
    signaller.signal();
    if let Some(f) = &last {
        f.wait_timeout(Duration::from_secs(600)).expect("the last job completes");
    }
    let elapsed = start.elapsed();
    drop(es);
    (elapsed, bytes)
}

fn bench(_: &mut Criterion) {
    let test = test_mode();
    let rounds = if test { 1 } else { 7 };
    let spread_jobs: u64 = if test { 64 } else { 100_000 };
    let (queued_jobs, queued_entities) = if test { (2_000u64, 100usize) } else { queued_size() };

    let ((), reports) = lockdep::capture(|| {
        let ns = |d: Duration, jobs: u64| d.as_nanos() as f64 / jobs as f64;
        let mut raw = Vec::new();
        let mut by_n: Vec<(usize, Vec<f64>, Vec<f64>)> =
            [1usize, 64, 4096].iter().map(|&n| (n, Vec::new(), Vec::new())).collect();
        for _ in 0..rounds {
            let base = ns(mock_raw(spread_jobs), spread_jobs);
            raw.push(base);
            for (n, v, _) in &mut by_n {
                v.push(ns(mock_spread(*n, spread_jobs), spread_jobs));
            }
            // One entity against the raw ring; more entities against one entity.
            let one = by_n[0].1.last().copied().unwrap_or(f64::NAN);
            for (n, v, r) in &mut by_n {
                let last = v.last().copied().unwrap_or(f64::NAN);
                r.push(if *n == 1 { last / base } else { last / one });
            }
        }
        let base = median(&mut raw);
        println!("sched_scale: raw_mockring {base:.0} ns/job (median of {rounds} rounds)");
        metric("scale.raw_mockring.ns_per_job", base);
        for (n, v, r) in &mut by_n {
            let t = median(v);
            let ratio = median(r);
            metric(&format!("scale.entities_{n}.ns_per_job"), t);
            if *n == 1 {
                println!(
                    "sched_scale: 1 entity {t:.0} ns/job, {ratio:.2}x the raw ring (median ratio)"
                );
                metric("scale.entities_1.vs_raw", ratio);
            } else {
                println!(
                    "sched_scale: {n} entities {t:.0} ns/job, {ratio:.2}x one entity (median ratio)"
                );
                metric(&format!("scale.entities_{n}.vs_1"), ratio);
            }
        }

        let (mut many, mut one, mut ratio, mut bytes) = (vec![], vec![], vec![], vec![]);
        let first = (queued_entities as u64).min(queued_jobs);
        let backend = backend_bytes(first, queued_jobs - first);
        let qrounds = if test { 1 } else { 5 };
        for _ in 0..qrounds {
            let (t_many, b) = queued(queued_entities, queued_jobs);
            let (t_one, _) = queued(1, queued_jobs);
            let (m, o) = (ns(t_many, queued_jobs), ns(t_one, queued_jobs));
            many.push(m);
            one.push(o);
            ratio.push(m / o);
            bytes.push(b);
        }
        let (m, o, r, b) =
            (median(&mut many), median(&mut one), median(&mut ratio), median(&mut bytes));
        println!(
            "sched_scale: {queued_jobs} jobs queued over {queued_entities} entities, then \
             released: {m:.0} ns/job; over 1 entity {o:.0} ns/job; {r:.2}x (median of {qrounds})"
        );
        println!(
            "sched_scale: {:.0} bytes per queued job besides its {}-byte payload: the \
             scheduler's {:.0}, the mock backend's prepare_job {backend:.0}",
            b,
            std::mem::size_of::<MockJob>(),
            b - backend
        );
        metric("scale.queued.entities_many.ns_per_job", m);
        metric("scale.queued.entities_1.ns_per_job", o);
        metric("scale.queued.vs_1", r);
        metric("scale.queued.bytes_per_job", b - backend);
        metric("scale.queued.bytes_per_job_with_backend", b);
        metric("scale.queued.backend_bytes_per_job", backend);
    });
    if lockdep::ENABLED {
        let allocs = reports.iter().filter(|r| r.rule == Rule::ReclaimInSignalling).count();
        println!(
            "sched_scale: {allocs} allocations inside signalling sections ({} reports in all)",
            reports.len()
        );
        metric("scale.signalling_allocations", allocs as f64);
        assert_eq!(allocs, 0, "the scheduler allocated inside a signalling section");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
