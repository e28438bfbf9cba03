//! Scheduler throughput through an immediate `MockRing` (hardware fences signal inside
//! `run_job`), as jobs per second and nanoseconds per job:
//! - `raw_mockring`: the baseline, the ring alone driven through the `Backend` trait
//!   (`prepare_job` + `run_job` + the signalled hardware fence + `free_job`), no scheduler;
//! - `entities_1`, `entities_8`, `entities_64`: arm + push through the scheduler, jobs spread
//!   round-robin over that many entities of one scheduler;
//! - `chain_same_sched`: each job depends on the previous one's finished fence (two entities
//!   of one scheduler, so the same-scheduler shortcut applies), armed before that one is pushed;
//! - `chain_cross_sched`: the same over two schedulers (a real callback per dependency).
//!
//! After criterion's numbers, the group prints each variant's ns/job and its ratio to the raw
//! ring from its own timed loop: the ratio is the scheduler's overhead per job.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpusched::fence::Fence;
use gpusched::testing::{MockJob, MockRing};
use gpusched::{ArmedJob, Backend, Entity, JobInfo, Priority, Scheduler, SchedulerConfig};

/// Jobs per measured iteration.
const BATCH: u64 = 256;

fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

fn sched(name: &str) -> Scheduler<MockRing> {
    let config = SchedulerConfig::new(name).credit_limit(64);
    Scheduler::new(MockRing::immediate(), config).expect("valid config")
}

/// One variant: runs `jobs` jobs on fresh state and returns the time they took.
type Variant = fn(u64) -> Duration;

fn raw_mockring(jobs: u64) -> Duration {
    let ring = MockRing::immediate();
    let start = Instant::now();
    for i in 0..jobs {
        let info =
            JobInfo { id: i, seqno: i + 1, credits: 1, priority: Priority::Normal, entity: 1 };
        let mut job = MockJob::new(i);
        ring.prepare_job(&mut job, &info).expect("prepare");
        let hw = ring.run_job(&mut job, &info).expect("run");
        assert!(hw.is_signaled());
        ring.free_job(job, &info);
    }
    start.elapsed()
}

fn spread(entities: usize, jobs: u64) -> Duration {
    let s = sched("bench");
    let es: Vec<_> = (0..entities).map(|_| Entity::new(&[&s], Priority::Normal).unwrap()).collect();
    let start = Instant::now();
    let mut last = None;
    for i in 0..jobs {
        let e = &es[i as usize % entities];
        last = Some(e.job(MockJob::new(i)).arm().expect("arm").push());
    }
    let elapsed = start.elapsed();
    assert!(last.is_none_or(|f| f.is_signaled()));
    black_box(&es);
    elapsed
}

fn entities_1(jobs: u64) -> Duration {
    spread(1, jobs)
}

fn entities_8(jobs: u64) -> Duration {
    spread(8, jobs)
}

fn entities_64(jobs: u64) -> Duration {
    spread(64, jobs)
}

/// Job `i` depends on job `i - 1`, which is armed but not yet pushed when `i` is armed.
fn chain(scheds: &[Scheduler<MockRing>], jobs: u64) -> Duration {
    let es: Vec<_> = (0..2)
        .map(|i| Entity::new(&[&scheds[i % scheds.len()]], Priority::Normal).unwrap())
        .collect();
    let start = Instant::now();
    let mut prev: Option<ArmedJob<MockRing>> = None;
    let mut last: Option<Fence> = None;
    for i in 0..jobs {
        let mut b = es[i as usize % 2].job(MockJob::new(i));
        if let Some(p) = &prev {
            b = b.dependency(p.finished().clone());
        }
        let armed = b.arm().expect("arm");
        if let Some(p) = prev.replace(armed) {
            p.push();
        }
    }
    if let Some(p) = prev {
        last = Some(p.push());
    }
    let elapsed = start.elapsed();
    assert!(last.is_none_or(|f| f.is_signaled()));
    elapsed
}

fn chain_same_sched(jobs: u64) -> Duration {
    chain(&[sched("a")], jobs)
}

fn chain_cross_sched(jobs: u64) -> Duration {
    chain(&[sched("a"), sched("b")], jobs)
}

const VARIANTS: [(&str, Variant); 6] = [
    ("raw_mockring", raw_mockring),
    ("entities_1", entities_1),
    ("entities_8", entities_8),
    ("entities_64", entities_64),
    ("chain_same_sched", chain_same_sched),
    ("chain_cross_sched", chain_cross_sched),
];

fn bench_scheduler(c: &mut Criterion) {
    let mut g = c.benchmark_group("scheduler_jobs");
    g.throughput(Throughput::Elements(BATCH));
    for (name, f) in VARIANTS {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| f(iters * BATCH));
        });
    }
    g.finish();

    // Ratios from our own timed loops (best of 3), fresh state per loop.
    let jobs = if test_mode() { 64 } else { 100_000 };
    let ns = |f: Variant| {
        (0..3).map(|_| f(jobs).as_nanos() as f64 / jobs as f64).fold(f64::INFINITY, f64::min)
    };
    let base = ns(raw_mockring);
    println!("scheduler_jobs: raw_mockring {base:.0} ns/job (baseline)");
    for (name, f) in &VARIANTS[1..] {
        let v = ns(*f);
        println!(
            "scheduler_jobs: {name} {v:.0} ns/job, {:.2}x the raw ring, {:.0} ns scheduler overhead, \
             {:.2} M jobs/s",
            v / base,
            v - base,
            1e3 / v
        );
    }
}

criterion_group!(benches, bench_scheduler);
criterion_main!(benches);
