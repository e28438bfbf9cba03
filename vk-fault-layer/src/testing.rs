//! The skip-or-fail policy of tests that need the layer library and a Vulkan driver.
//!
//! Rule: in CI (the `CI` environment variable set, as CI services do) a missing layer
//! library or Vulkan driver fails the test; a developer without them gets the test skipped
//! with a printed `SKIPPED: …` line.

use std::fmt::Display;

/// Whether this is a CI run: `CI` is set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Reports that `test` cannot run for `reason`: prints `SKIPPED: test: reason` outside CI.
///
/// # Panics
///
/// In CI ([`in_ci`]), with `reason`: what a test needs must be there.
#[track_caller]
pub fn skip_or_fail(test: &str, reason: impl Display) {
    if in_ci() {
        panic!("{test}: {reason} (CI is set: a missing layer or Vulkan driver fails the run)");
    }
    eprintln!("SKIPPED: {test}: {reason}");
}
