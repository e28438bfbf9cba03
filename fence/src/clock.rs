//! The clock of fence signal timestamps: read cheaply when a fence signals, turned into an
//! [`Instant`] only when [`Fence::timestamp`](crate::Fence::timestamp) is read.
//!
//! A timestamp is stored as a `u64` count of nanoseconds ([`now_ns`]). On Linux it is
//! `CLOCK_MONOTONIC` itself, read with one `clock_gettime` call: the clock `std::time::Instant`
//! reads there, so no conversion is done at signal time (`Instant::now()` followed by a
//! subtraction from an epoch cost about as much again as the clock read). [`to_instant`] maps
//! the count onto an `Instant` with one anchor (an `Instant` and its count) calibrated once:
//! the mapping is a translation, so timestamps keep the clock's order and spacing exactly
//! (monotonic, same rate as `Instant`), and the anchor's offset is bracketed between two
//! clock reads taken around `Instant::now()` (a few tens of nanoseconds at worst, the
//! tightest of several tries). Elsewhere (and under loom) the count is nanoseconds since a
//! process-wide `Instant` epoch, exactly as before.
//!
//! [`from_instant`] is the inverse, for timestamps a caller supplies.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The count's origin: `instant` stands for `ns`.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    instant: Instant,
    ns: u64,
}

/// Nanoseconds of the timestamp clock, now.
#[cfg(all(target_os = "linux", not(gpusched_loom)))]
#[inline]
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable `timespec`; `CLOCK_MONOTONIC` is always supported on
    // Linux, so the call cannot fail (std's `Instant::now` relies on the same).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // Both fields are non-negative for CLOCK_MONOTONIC; u64 nanoseconds last 584 years.
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// Nanoseconds of the timestamp clock, now.
#[cfg(not(all(target_os = "linux", not(gpusched_loom))))]
#[inline]
pub(crate) fn now_ns() -> u64 {
    let a = anchor();
    duration_ns(Instant::now().saturating_duration_since(a.instant))
}

/// `d` in nanoseconds, saturating.
fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The anchor, calibrated at first use.
fn anchor() -> Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    *ANCHOR.get_or_init(calibrate)
}

/// Brackets `Instant::now()` between two reads of the count, several times: every try bounds
/// the first try's count from below and above (the `Instant`s' distances are exact), and the
/// anchor takes the middle of the tightest bounds.
#[cfg(all(target_os = "linux", not(gpusched_loom)))]
fn calibrate() -> Anchor {
    const TRIES: usize = 32;
    let (mut lo, mut hi) = (0u64, u64::MAX);
    let mut first: Option<Instant> = None;
    for _ in 0..TRIES {
        let before = now_ns();
        let at = Instant::now();
        let after = now_ns();
        let origin = *first.get_or_insert(at);
        let since = duration_ns(at.saturating_duration_since(origin));
        lo = lo.max(before.saturating_sub(since));
        hi = hi.min(after.saturating_sub(since));
    }
    let instant = first.unwrap_or_else(Instant::now);
    // The bounds cross only if `Instant` read another clock; the middle is then still the
    // best guess the reads give.
    let ns = if lo <= hi { lo + (hi - lo) / 2 } else { hi + (lo - hi) / 2 };
    Anchor { instant, ns }
}

/// The epoch the counts are measured from.
#[cfg(not(all(target_os = "linux", not(gpusched_loom))))]
fn calibrate() -> Anchor {
    Anchor { instant: Instant::now(), ns: 0 }
}

/// The `Instant` a count from [`now_ns`] (or [`from_instant`]) stands for.
pub(crate) fn to_instant(ns: u64) -> Instant {
    let a = anchor();
    if ns >= a.ns {
        a.instant + Duration::from_nanos(ns - a.ns)
    } else {
        a.instant.checked_sub(Duration::from_nanos(a.ns - ns)).unwrap_or(a.instant)
    }
}

/// The count that stands for `at` (saturating at the ends of the `u64` range).
#[allow(dead_code)] // the inverse of `to_instant`, for caller-supplied timestamps
pub(crate) fn from_instant(at: Instant) -> u64 {
    let a = anchor();
    match at.checked_duration_since(a.instant) {
        Some(d) => a.ns.saturating_add(duration_ns(d)),
        None => a.ns.saturating_sub(duration_ns(a.instant.duration_since(at))),
    }
}

#[cfg(all(test, not(gpusched_loom)))]
mod tests {
    use super::*;

    /// Counts map onto `Instant`s in order, at the same rate, and between the `Instant`s read
    /// around them.
    #[test]
    fn counts_map_onto_instants_in_order() {
        let mut prev = to_instant(now_ns());
        for _ in 0..1000 {
            let before = Instant::now();
            let ts = to_instant(now_ns());
            let after = Instant::now();
            assert!(ts >= prev, "{ts:?} before {prev:?}");
            // The anchor's offset is bracketed by clock reads: allow it on either side.
            let slack = Duration::from_micros(1);
            assert!(
                ts + slack >= before && ts <= after + slack,
                "{ts:?} not near [{before:?}, {after:?}]"
            );
            prev = ts;
        }
        let a = now_ns();
        assert_eq!(to_instant(a + 1_000_000) - to_instant(a), Duration::from_millis(1));
    }

    #[test]
    fn from_instant_inverts_to_instant() {
        let now = Instant::now();
        assert_eq!(to_instant(from_instant(now)), now);
        let past = now - Duration::from_millis(5);
        assert_eq!(to_instant(from_instant(past)), past);
    }
}
