//! Criterion benchmarks for `gpusched` (in `benches/benches/`), each measured side by side with
//! its baseline in the same run, and the helpers they share.
//!
//! Besides criterion's own output, every bench prints its headline numbers as machine-readable
//! lines, `metric: KEY = VALUE` (see [`metric`]); `scripts/bench-report.py` collects them,
//! together with criterion's `target/criterion/**/new/estimates.json`, into
//! `benches/RESULTS.md` (`make bench`).

use std::time::Duration;

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
