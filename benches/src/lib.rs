//! Criterion benchmarks for `gpusched` (in `benches/benches/`), each measured side by side with
//! its baseline in the same run, and the helpers they share.
//!
//! Besides criterion's own output, every bench prints its headline numbers as machine-readable
//! lines, `metric: KEY = VALUE` (see [`metric`]); `scripts/bench-report.py` collects them,
//! together with criterion's `target/criterion/**/new/estimates.json`, into
//! `benches/RESULTS.md` (`make bench`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use gpusched::testing::{MockJob, MockRing};
use gpusched::{Backend, Entity, JobInfo, Priority, Scheduler, SchedulerConfig};

/// Whether the bench runs in criterion's test mode (`-- --test`: every bench once, as CI does);
/// the benches' own timed loops then shrink to a few iterations.
pub fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// Whether only the bench's own summary loops should run, not criterion's measurements
/// (`GPUSCHED_BENCH_SUMMARY_ONLY=1`): `make bench` uses it to rerun the checker summaries of the
/// compiled-in and compiled-out builds interleaved.
pub fn summary_only() -> bool {
    std::env::var_os("GPUSCHED_BENCH_SUMMARY_ONLY").is_some_and(|v| v == "1")
}

/// Prints one headline number as `metric: KEY = VALUE`, the line `scripts/bench-report.py`
/// reads. Keys are dotted paths (`scheduler.entities_1.ns_per_job`); values are plain numbers
/// (nanoseconds for times unless the key says otherwise). Nothing is printed in test mode, so
/// that a `--test` run leaves no numbers a report could mistake for measurements.
pub fn metric(key: &str, value: f64) {
    if !test_mode() {
        println!("metric: {key} = {value}");
    }
}

/// The `p`-quantile (0.0 to 1.0, nearest rank) of `samples`, which it sorts.
///
/// # Panics
/// If `samples` is empty or `p` is outside `0.0..=1.0`.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    assert!(!samples.is_empty(), "percentile of no samples");
    assert!((0.0..=1.0).contains(&p), "percentile {p} outside 0..=1");
    samples.sort_unstable();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

/// A duration in nanoseconds, as `f64` (for [`metric`]).
pub fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// CPU time of this process's threads, summed by thread name, from Linux's
/// `/proc/self/task/*/schedstat` (nanoseconds on a CPU) and `comm`: the cheap profile the
/// Vulkan bench prints to show which thread burns CPU during a run. `None` where `/proc` does
/// not have them (not Linux, or a kernel without schedstats). The main thread is named `main`
/// (threads a driver starts without naming them inherit the program's name). Threads that
/// exited between two snapshots drop out of the difference.
pub fn thread_cpu() -> Option<std::collections::BTreeMap<String, Duration>> {
    let mut by_name = std::collections::BTreeMap::new();
    let pid = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let entry = entry.ok()?;
        let main = entry.file_name().to_str() == Some(pid.as_str());
        let dir = entry.path();
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(dir.join("schedstat")),
            std::fs::read_to_string(dir.join("comm")),
        ) else {
            continue; // the thread exited meanwhile
        };
        let on_cpu: u64 = stat.split_whitespace().next()?.parse().ok()?;
        let name = if main { "main".to_owned() } else { comm.trim().to_owned() };
        *by_name.entry(name).or_insert(Duration::ZERO) += Duration::from_nanos(on_cpu);
    }
    Some(by_name)
}

/// CPU time per thread name spent since `before` (a [`thread_cpu`] snapshot).
pub fn thread_cpu_since(
    before: &std::collections::BTreeMap<String, Duration>,
) -> std::collections::BTreeMap<String, Duration> {
    let now = thread_cpu().unwrap_or_default();
    now.into_iter()
        .map(|(name, t)| {
            let d = t.saturating_sub(before.get(&name).copied().unwrap_or(Duration::ZERO));
            (name, d)
        })
        .filter(|(_, d)| !d.is_zero())
        .collect()
}

/// A scheduler named `name` over a `MockRing::immediate()` (every job completes in its
/// `run_job`), credit limit 64: the benches' mock setup.
pub fn mock_scheduler(name: &str) -> Scheduler<MockRing> {
    let config = SchedulerConfig::new(name).credit_limit(64);
    Scheduler::new(MockRing::immediate(), config).expect("valid config")
}

/// The scheduler on the mock ring ([`mock_scheduler`]): arms and pushes
/// `jobs` jobs round-robin over `entities` entities of one fresh scheduler and returns the
/// time until the last one signalled (the scheduler and checker benches' loop).
///
/// # Panics
/// If a job cannot be armed or the last one does not complete within a minute.
pub fn mock_spread(entities: usize, jobs: u64) -> Duration {
    let s = mock_scheduler("bench");
    let es: Vec<_> = (0..entities)
        .map(|_| Entity::new(&[&s], Priority::Normal).expect("one scheduler"))
        .collect();
    let start = Instant::now();
    let mut last = None;
    for i in 0..jobs {
        let e = &es[i as usize % entities];
        last = Some(e.job(MockJob::new(i)).arm().expect("arm").push());
    }
    if let Some(f) = &last {
        f.wait_timeout(Duration::from_secs(60)).expect("the last job completes");
    }
    let elapsed = start.elapsed();
    black_box(&es);
    elapsed
}

/// The floor under [`mock_spread`]: `jobs` jobs through the mock ring's `Backend` methods
/// alone (prepare, run, free), no scheduler.
///
/// # Panics
/// If the mock ring refuses a job or does not complete it at once.
pub fn mock_raw(jobs: u64) -> Duration {
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
