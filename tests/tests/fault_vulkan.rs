//! The fault-injection suite on the Vulkan world ([`VulkanWorld`]: `gpusched-vulkan` rings of
//! one device, lavapipe by default, validation layer on unless `GPUSCHED_TEST_NOVAL` is set):
//! the same seeded scenarios as `fault_mock` (hangs, slow jobs, failed submissions, device
//! loss and recreation, kills, dropped jobs, a rogue client), with every job's value computed
//! on the device from its inputs' buffers, checked by the oracle.
//!
//! - `fixed_seeds`: what CI runs (seconds): seeds `0..12` and four that lose the device, or
//!   `0..FAULT_VULKAN_SEEDS` (its own variable: `FAULT_SEEDS` sizes the mock suite, whose
//!   scenarios are far faster; a Vulkan scenario takes about a second, so keep a count that
//!   fits nextest's 5-minute slow-timeout, or run the test binary without nextest).
//! - `FAULT_SEED=<n>` replays one seed (printed with every failure).
//! - `FAULT_STRICT=1` also fails on the known backend bugs the oracle tolerates and counts on
//!   Vulkan (listed in `VulkanWorld`'s docs); `FAULT_DUMP=1` prints every failing seed's dump.
//! - `soak` (ignored): consecutive seeds for `FAULT_SOAK_SECS` seconds (default 120):
//!   `cargo test -p gpusched-tests --test fault_vulkan -- --ignored soak --nocapture`.
//!
//! The seed loop, replay and soak are `gpusched_tests::run_seeds` and `soak` (the `harness`
//! module), shared with `fault_mock`.
//!
//! Besides the oracle's rules, each scenario must report no validation error, and the device
//! count (`live_devices`) is back to its start value at the end. Runs under the checker's
//! allocator: an allocation inside a signalling section is a violation. Skipped, with the
//! reason printed, when no Vulkan device can be created, except under CI or
//! `GPUSCHED_REQUIRE_VULKAN=1`, where that fails.

use gpusched::fence::lockdep::CheckingAllocator;
use gpusched_tests::{
    run_scenario, run_seeds, validated_device_available, Corrupting, Failure, Harness, Scenario,
    Summary, VulkanWorld, World, VULKAN_PLAN,
};
use gpusched_vulkan::{live_devices, validation_errors};

/// Seeds of `VULKAN_PLAN` that lose the device (one with a rogue client, one with a kill),
/// added to the CI set `0..12`, which has none.
const LOSS_SEEDS: [u64; 4] = [16, 36, 80, 107];

#[global_allocator]
static ALLOC: CheckingAllocator = CheckingAllocator::new(std::alloc::System);

const HARNESS: Harness = Harness {
    test: "fault_vulkan",
    world: VulkanWorld::NAME,
    seeds_var: "FAULT_VULKAN_SEEDS",
    soak_secs: 120,
};

/// Whether a validated Vulkan device can be created; the probe device is closed. Without one
/// the test is skipped with a printed reason on a developer machine, and fails under CI or
/// `GPUSCHED_REQUIRE_VULKAN=1` (`gpusched_tests::validated_device`).
fn vulkan_available() -> bool {
    validated_device_available("fault_vulkan", std::env::var("GPUSCHED_TEST_NOVAL").is_err())
}

/// Runs one seed, adding a problem for validation errors it caused, and (with
/// `FAULT_STRICT=1`) for the known backend bugs the oracle tolerates on Vulkan (see
/// `gpusched_tests::VulkanWorld`'s docs).
fn run(seed: u64) -> Result<Summary, Failure> {
    let before = validation_errors();
    let summary = run_scenario::<VulkanWorld>(seed, &VULKAN_PLAN)?;
    let mut problems = Vec::new();
    let errors = validation_errors() - before;
    if errors != 0 {
        problems.push(format!("{errors} validation errors (see the log above)"));
    }
    let known = summary.ran_past_failed_dependency + summary.timeline_inversions;
    if known != 0 {
        eprintln!(
            "seed {seed}: known backend bugs: {} jobs succeeded past a blamed same-ring \
             dependency, {} timeline inversions",
            summary.ran_past_failed_dependency, summary.timeline_inversions
        );
        if std::env::var("FAULT_STRICT").is_ok_and(|v| v == "1") {
            problems.push(format!("FAULT_STRICT: {known} known-bug occurrences"));
        }
    }
    if problems.is_empty() {
        return Ok(summary);
    }
    Err(Failure {
        seed,
        world: VulkanWorld::NAME,
        problems,
        dump: format!("{:?}", Scenario::generate(seed, &VULKAN_PLAN)),
    })
}

#[test]
fn fixed_seeds() {
    let _serial = gpusched_tests::serial();
    if !vulkan_available() {
        return;
    }
    let devices = live_devices();
    let set = HARNESS.seeds(|| (0..12).chain(LOSS_SEEDS).collect());
    let totals = run_seeds(&HARNESS, &set.seeds, run);
    assert_eq!(live_devices(), devices, "devices left alive after the scenarios");
    // Over a set (one scenario may well be mostly faults, with no success at all).
    if set.seeds.len() >= 10 {
        assert!(totals.ok * 3 > totals.jobs, "too few successes to check results: {totals}");
    }
    if set.default_set {
        // The CI set must exercise what it claims to.
        assert!(totals.device_lost == LOSS_SEEDS.len(), "{totals}");
        assert!(totals.banned > 0 && totals.killed > 0 && totals.arm_refused > 0, "{totals}");
    }
}

#[test]
#[ignore = "soak: runs random seeds on Vulkan for FAULT_SOAK_SECS seconds (default 120)"]
fn soak() {
    let _serial = gpusched_tests::serial();
    if !vulkan_available() {
        return;
    }
    let devices = live_devices();
    gpusched_tests::soak(&HARNESS, run);
    assert_eq!(live_devices(), devices, "devices left alive after the soak");
}

#[test]
fn the_oracle_catches_wrong_results() {
    let _serial = gpusched_tests::serial();
    if !vulkan_available() {
        return;
    }
    let failure = (0..5)
        .find_map(|seed| run_scenario::<Corrupting<VulkanWorld>>(seed, &VULKAN_PLAN).err())
        .unwrap_or_else(|| panic!("5 scenarios with corrupted results passed the oracle"));
    assert!(
        failure.problems.iter().any(|p| p.contains("computed")),
        "unexpected problems: {:?}",
        failure.problems
    );
}
