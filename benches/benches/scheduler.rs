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
//!
//! `scheduler_fairness`: a `High` and a `Low` client, each on its own thread, keep 8 jobs
//! queued on a timed `MockRing` of one credit (50 µs jobs) for a fixed time; the share of the
//! ring's completions in that window that were `Low`'s, under `Policy::Fair` (expected about
//! 2 / (2 + 8) = 0.20 from the virtual-runtime weights), `RoundRobin` and `Fifo` (strict
//! priority: 0, `Low` starves while `High` has work), and `Low`'s jobs/s against its rate
//! alone on the ring.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpusched::fence::Fence;
use gpusched::testing::{MockJob, MockRing};
use gpusched::{ArmedJob, Entity, Policy, Priority, Scheduler, SchedulerConfig};
use gpusched_benches::{metric, mock_raw, mock_scheduler, mock_spread, test_mode};

/// Jobs per measured iteration.
const BATCH: u64 = 256;

/// One variant: runs `jobs` jobs on fresh state and returns the time they took.
type Variant = fn(u64) -> Duration;

fn entities_1(jobs: u64) -> Duration {
    mock_spread(1, jobs)
}

fn entities_8(jobs: u64) -> Duration {
    mock_spread(8, jobs)
}

fn entities_64(jobs: u64) -> Duration {
    mock_spread(64, jobs)
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
    chain(&[mock_scheduler("a")], jobs)
}

fn chain_cross_sched(jobs: u64) -> Duration {
    chain(&[mock_scheduler("a"), mock_scheduler("b")], jobs)
}

const VARIANTS: [(&str, Variant); 6] = [
    ("raw_mockring", mock_raw),
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
    let base = ns(mock_raw);
    println!("scheduler_jobs: raw_mockring {base:.0} ns/job (baseline)");
    metric("scheduler.raw_mockring.ns_per_job", base);
    for (name, f) in &VARIANTS[1..] {
        let v = ns(*f);
        metric(&format!("scheduler.{name}.ns_per_job"), v);
        println!(
            "scheduler_jobs: {name} {v:.0} ns/job, {:.2}x the raw ring, {:.0} ns scheduler overhead, \
             {:.2} M jobs/s",
            v / base,
            v - base,
            1e3 / v
        );
    }
}

/// Tags of the low-priority client's jobs start here.
const LOW_TAG: u64 = 1 << 40;

/// Runs the clients in `clients` (priority, tag base) on a timed ring of one credit for `dur`,
/// each keeping 8 jobs of 50 µs queued; returns each client's completions per second in the
/// window (after a 10% warm-up).
fn contend(policy: Policy, clients: &[(Priority, u64)], dur: Duration) -> Vec<f64> {
    let config = SchedulerConfig::new("fairness").credit_limit(1).policy(policy);
    let s = Scheduler::new(MockRing::timed(), config).expect("valid config");
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    thread::scope(|scope| {
        for &(prio, base) in clients {
            let (s, stop) = (&s, &stop);
            scope.spawn(move || {
                let e = Entity::new(&[s], prio).expect("one scheduler");
                let mut queued = VecDeque::new();
                let mut tag = base;
                while !stop.load(Ordering::Relaxed) {
                    while queued.len() < 8 {
                        let job = MockJob::new(tag).duration(Duration::from_micros(50));
                        queued.push_back(e.job(job).arm().expect("arm").push());
                        tag += 1;
                    }
                    let f: Fence = queued.pop_front().expect("8 queued");
                    // Watchdog only: a starved client waits until the other one stops.
                    f.wait_timeout(Duration::from_secs(60)).expect("job completes");
                }
                for f in queued {
                    f.wait_timeout(Duration::from_secs(60)).expect("job completes");
                }
            });
        }
        thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
    });
    let (from, to) = (t0 + dur / 10, t0 + dur);
    let secs = (to - from).as_secs_f64();
    let log = s.backend().completion_log();
    clients
        .iter()
        .map(|&(_, base)| {
            let n = log
                .iter()
                .filter(|(tag, at)| {
                    *at >= from && *at < to && (*tag >= LOW_TAG) == (base >= LOW_TAG)
                })
                .count();
            n as f64 / secs
        })
        .collect()
}

fn bench_fairness(_: &mut Criterion) {
    let dur = if test_mode() { Duration::from_millis(20) } else { Duration::from_millis(1000) };
    let alone = contend(Policy::Fair, &[(Priority::Low, LOW_TAG)], dur)[0];
    println!("scheduler_fairness: Low alone on the ring: {alone:.0} jobs/s");
    metric("fairness.low_alone_jobs_per_s", alone);
    for (name, policy) in
        [("fair", Policy::Fair), ("round_robin", Policy::RoundRobin), ("fifo", Policy::Fifo)]
    {
        let r = contend(policy, &[(Priority::High, 0), (Priority::Low, LOW_TAG)], dur);
        let (high, low) = (r[0], r[1]);
        let share = low / (high + low).max(1.0);
        println!(
            "scheduler_fairness: {name}: High {high:.0} jobs/s, Low {low:.0} jobs/s, Low's share \
             {share:.3}, Low's rate {:.2}x its rate alone",
            low / alone
        );
        metric(&format!("fairness.{name}.low_share"), share);
        metric(&format!("fairness.{name}.low_vs_alone"), low / alone);
    }
}

criterion_group!(benches, bench_scheduler, bench_fairness);
criterion_main!(benches);
