//! The fault-injection suite on the mock world ([`MockWorld`]: software rings in one reset
//! domain): seeded scenarios of entities submitting random job DAGs with explicit and implicit
//! dependencies, with hangs, slow jobs, failed submissions, device loss, kills, dropped jobs
//! and a rogue client, each checked by the oracle (see `gpusched_tests`'s docs).
//!
//! - `fixed_seeds`: seeds `0..FAULT_SEEDS` (default 500), what CI runs.
//! - `FAULT_SEED=<n>` replays one seed (printed with every failure); `FAULT_DUMP=1` prints
//!   every failing seed's dump.
//! - `soak` (ignored): consecutive seeds for `FAULT_SOAK_SECS` seconds (default
//!   60), printing scenarios/s and the seed range: `cargo test -p gpusched-tests --test
//!   fault_mock --release -- --ignored soak --nocapture`.
//!
//! The seed loop, replay and soak are `gpusched_tests::run_seeds` and `soak` (the `harness`
//! module), shared with `fault_vulkan`.
//!
//! Runs under the checker's allocator: an allocation inside a signalling section (the
//! scheduler's or the world's) is a violation, and every scenario asserts none occurred.

use gpusched::fence::lockdep::CheckingAllocator;
use gpusched_tests::{run_scenario, run_seeds, Corrupting, Harness, MockWorld, PlanConfig, World};

#[global_allocator]
static ALLOC: CheckingAllocator = CheckingAllocator::new(std::alloc::System);

const HARNESS: Harness =
    Harness { test: "fault_mock", world: MockWorld::NAME, seeds_var: "FAULT_SEEDS", soak_secs: 60 };

#[test]
fn fixed_seeds() {
    let _serial = gpusched_tests::serial();
    let cfg = PlanConfig::default();
    let seeds = HARNESS.seeds(|| (0..500).collect()).seeds;
    let totals = run_seeds(&HARNESS, &seeds, |seed| run_scenario::<MockWorld>(seed, &cfg));
    // The suite must exercise what it claims to: over the fixed set, every kind of outcome.
    if seeds.len() >= 100 {
        assert!(totals.resets > 0 && totals.device_lost > 0 && totals.arm_refused > 0, "{totals}");
        assert!(totals.banned > 0 && totals.killed > 0, "{totals}");
        assert!(totals.ok * 3 > totals.jobs, "too few successes to check results: {totals}");
    }
}

#[test]
#[ignore = "soak: runs random seeds for FAULT_SOAK_SECS seconds (default 60)"]
fn soak() {
    let _serial = gpusched_tests::serial();
    let cfg = PlanConfig::default();
    gpusched_tests::soak(&HARNESS, |seed| run_scenario::<MockWorld>(seed, &cfg));
}

#[test]
fn the_oracle_catches_wrong_results() {
    let _serial = gpusched_tests::serial();
    let cfg = PlanConfig::default();
    let failure = (0..20)
        .find_map(|seed| run_scenario::<Corrupting<MockWorld>>(seed, &cfg).err())
        .unwrap_or_else(|| panic!("20 scenarios with corrupted results passed the oracle"));
    assert!(
        failure.problems.iter().any(|p| p.contains("computed")),
        "unexpected problems: {:?}",
        failure.problems
    );
}
