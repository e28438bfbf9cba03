//! The skip-or-fail policy of every test that needs a Vulkan driver, the Khronos validation
//! layer or this layer's library (the whole workspace uses this one rule).
//!
//! Rule: when what a test needs is missing, the test **fails** if [`required`] (the `CI`
//! environment variable is set, as CI services and `.ci/run` do, or
//! `GPUSCHED_REQUIRE_VULKAN=1` on a developer machine), and is otherwise **skipped** with a
//! printed `SKIPPED: …` line: a developer machine without Vulkan may skip, CI never passes a
//! suite that did not run.

use std::fmt::Display;

/// The environment variable that makes a missing Vulkan driver, validation layer or fault
/// layer fail the tests outside CI too (`GPUSCHED_REQUIRE_VULKAN=1`).
pub const REQUIRE_ENV: &str = "GPUSCHED_REQUIRE_VULKAN";

/// Whether this is a CI run: `CI` is set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Whether a missing Vulkan piece fails the test rather than skipping it: [`in_ci`], or
/// [`REQUIRE_ENV`] set to `1`.
pub fn required() -> bool {
    in_ci() || std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// Reports that `test` cannot run for `reason`: prints `SKIPPED: test: reason` unless
/// [`required`].
///
/// # Panics
///
/// When [`required`], with `reason`: what a test needs must be there.
#[track_caller]
pub fn skip_or_fail(test: &str, reason: impl Display) {
    if required() {
        panic!(
            "{test}: {reason} (CI or {REQUIRE_ENV}=1 is set: a missing Vulkan driver, \
             validation layer or fault layer fails the run)"
        );
    }
    eprintln!("SKIPPED: {test}: {reason}");
}
