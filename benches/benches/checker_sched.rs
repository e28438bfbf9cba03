//! The signalling-contract checker's cost on scheduler throughput: arm + push of `N` jobs
//! through an immediate `MockRing` (hardware fences signal inside `run_job`, so every job
//! goes through the scheduler's signalling sections, its callbacks and its completion path),
//! spread over 1 and over 8 entities of one scheduler, waiting for the last job.
//!
//! Each group measures the checker compiled in and enabled (`Policy::Panic`, what debug
//! builds run) against compiled in but `Policy::Off` (every annotation returns after one
//! relaxed load), in the same run; the raw ring alone (no scheduler) is the floor. After
//! criterion's numbers a summary prints ns/job, jobs/s and the on/off ratio from its own
//! interleaved timed loops (best of 5).
//!
//! "Compiled out" is this same bench built with `--no-default-features` (the benches crate's
//! `checker` feature forwards to `gpusched`, `gpusched-fence` and `gpusched-resv`; see
//! `benches/Cargo.toml`): cargo cannot build one binary both ways. That build names its
//! criterion group `checker_sched_compiled_out/...` and measures the scheduler once (there is
//! no policy to switch). `make bench` runs both builds, then reruns both summaries interleaved
//! (`GPUSCHED_BENCH_SUMMARY_ONLY=1`, three rounds) and `scripts/bench-report.py` divides the
//! best compiled-in-and-enabled ns/job by the best compiled-out one.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpusched::fence::lockdep::{self, Policy};
use gpusched_benches::{metric, mock_raw, mock_spread, summary_only, test_mode};

/// Jobs per measured iteration.
const BATCH: u64 = 256;

fn with_policy<R>(p: Policy, f: impl FnOnce() -> R) -> R {
    lockdep::set_policy(p);
    let r = f();
    lockdep::set_policy(Policy::Panic);
    r
}

fn bench(c: &mut Criterion) {
    if summary_only() {
        return;
    }
    for entities in [1usize, 8] {
        let group = if lockdep::ENABLED { "checker_sched" } else { "checker_sched_compiled_out" };
        let mut g = c.benchmark_group(format!("{group}/entities_{entities}"));
        g.throughput(Throughput::Elements(BATCH));
        g.bench_function("raw_mockring", |b| b.iter_custom(|iters| mock_raw(iters * BATCH)));
        if lockdep::ENABLED {
            g.bench_function("checker_on", |b| {
                with_policy(Policy::Panic, || {
                    b.iter_custom(|iters| mock_spread(entities, iters * BATCH))
                })
            });
            g.bench_function("checker_off", |b| {
                with_policy(Policy::Off, || {
                    b.iter_custom(|iters| mock_spread(entities, iters * BATCH))
                })
            });
        } else {
            g.bench_function("compiled_out", |b| {
                b.iter_custom(|iters| mock_spread(entities, iters * BATCH))
            });
        }
        g.finish();
    }
}

/// Interleaved on/off loops (best of 5) so drift hits both alike; prints the ratios.
fn summary(jobs: u64) {
    let per_job = |d: Duration| d.as_nanos() as f64 / jobs as f64;
    let best =
        |f: &dyn Fn() -> Duration| (0..5).map(|_| per_job(f())).fold(f64::INFINITY, f64::min);
    println!(
        "\nchecker cost on scheduler throughput ({jobs} jobs per loop, best of 5; checker \
         compiled {}):",
        if lockdep::ENABLED { "in" } else { "out" }
    );
    let build = if lockdep::ENABLED { "in" } else { "out" };
    let raw = best(&|| mock_raw(jobs));
    println!("  raw_mockring           {raw:>8.0} ns/job  {:>6.2} M jobs/s (floor)", 1e3 / raw);
    metric(&format!("checker_sched.{build}.raw_ns_per_job"), raw);
    if !lockdep::ENABLED {
        for entities in [1usize, 8] {
            let out = best(&|| mock_spread(entities, jobs));
            println!(
                "  entities_{entities:<2} compiled out {out:>8.0} ns/job  {:>6.2} M jobs/s",
                1e3 / out
            );
            metric(&format!("checker_sched.out.entities_{entities}.ns_per_job"), out);
        }
        return;
    }
    for entities in [1usize, 8] {
        let mut on = f64::INFINITY;
        let mut off = f64::INFINITY;
        for _ in 0..5 {
            on = on.min(with_policy(Policy::Panic, || per_job(mock_spread(entities, jobs))));
            off = off.min(with_policy(Policy::Off, || per_job(mock_spread(entities, jobs))));
        }
        println!(
            "  entities_{entities:<2} checker on  {on:>8.0} ns/job  {:>6.2} M jobs/s",
            1e3 / on
        );
        println!(
            "  entities_{entities:<2} checker off {off:>8.0} ns/job  {:>6.2} M jobs/s  \
             on/off = {:.2}x ({:+.0} ns/job)",
            1e3 / off,
            on / off,
            on - off
        );
        metric(&format!("checker_sched.in.entities_{entities}.on_ns_per_job"), on);
        metric(&format!("checker_sched.in.entities_{entities}.off_ns_per_job"), off);
    }
    assert_eq!(lockdep::violations(), 0, "the checker reported violations");
}

fn summary_group(_: &mut Criterion) {
    summary(if test_mode() { 64 } else { 100_000 });
}

criterion_group!(benches, bench, summary_group);
criterion_main!(benches);
