//! The fault-injection suite through the Vulkan fault layer ([`LayerWorld`]): the seeded
//! scenarios of `fault_vulkan`, with device losses, failed submissions and allocation failures
//! made by `vk-fault-layer` below the backend (real `VK_ERROR_DEVICE_LOST`,
//! `VK_ERROR_OUT_OF_DEVICE_MEMORY` and `VK_ERROR_INITIALIZATION_FAILED` returns), hangs and slow
//! jobs still injected in the backend. Checked by the same oracle, plus: no validation error,
//! no checker violation, every device destroyed (the backend's count and the layer's).
//!
//! - `fixed_seeds`: what CI runs: seeds `0..LAYER_SEEDS` (120) of [`LAYER_PLAN`], or
//!   `0..FAULT_LAYER_SEEDS`; the default set must make the layer fail every call it claims to.
//! - `FAULT_SEED=<n>` replays one seed; `FAULT_DUMP=1` prints every failing seed's dump.
//! - `soak` (ignored): consecutive seeds for `FAULT_SOAK_SECS` seconds (default 120):
//!   `cargo test -p gpusched-tests --test fault_layer -- --ignored soak --nocapture`.
//!
//! Needs the layer library (`cargo build -p vk-fault-layer`; `make nextest` builds it), a Vulkan
//! driver and the validation layer: without them the tests are skipped with a printed reason,
//! except under CI or `GPUSCHED_REQUIRE_VULKAN=1`, where they fail.

use std::time::Duration;

use gpusched::fence::lockdep::CheckingAllocator;
use gpusched_tests::{
    fault_layer, layer_injected, run_scenario, run_seeds, validated_device_available, Failure,
    Harness, LayerWorld, PlanConfig, Scenario, Summary, World,
};
use gpusched_vulkan::{live_devices, validation_errors};
use vk_fault_layer::testing::skip_or_fail;
use vk_fault_layer::FaultCall;

#[global_allocator]
static ALLOC: CheckingAllocator = CheckingAllocator::new(std::alloc::System);

/// The CI set's size.
const LAYER_SEEDS: u64 = 120;

/// Smaller scenarios than `fault_vulkan`'s (the point here is the driver's errors, which cost
/// no timeout), so that CI runs many seeds: fewer jobs, and no hung or slow job of a
/// well-behaved entity (rogue clients still hang until banned). Slow jobs and their
/// judgement are `fault_vulkan`'s: under the layer, a slow job of 1.25 timeouts was now and
/// then seen making no progress for three timeouts on a loaded machine, and declared stuck.
pub const LAYER_PLAN: PlanConfig = PlanConfig {
    max_entities: 4,
    max_jobs: 12,
    max_rings: 2,
    max_buffers: 3,
    max_threads: 2,
    max_stuck: 0,
    timeout: Duration::from_millis(400),
    slow_timeouts: 1.25,
};

const HARNESS: Harness = Harness {
    test: "fault_layer",
    world: LayerWorld::NAME,
    seeds_var: "FAULT_LAYER_SEEDS",
    soak_secs: 120,
};

/// Sets the layer up (before any Vulkan instance of the process) and checks that a device can
/// be created through it; the probe device is closed. `false` (skipped) when something is
/// missing outside CI.
fn layer_available(test: &str) -> bool {
    if let Err(e) = fault_layer() {
        skip_or_fail(test, e);
        return false;
    }
    validated_device_available(test, true)
}

/// Runs one seed, adding a problem for the validation errors it caused.
fn run(seed: u64) -> Result<Summary, Failure> {
    let before = validation_errors();
    let summary = run_scenario::<LayerWorld>(seed, &LAYER_PLAN)?;
    let errors = validation_errors() - before;
    if errors == 0 {
        return Ok(summary);
    }
    Err(Failure {
        seed,
        world: LayerWorld::NAME,
        problems: vec![format!("{errors} validation errors (see the log above)")],
        dump: format!("{:?}", Scenario::generate(seed, &LAYER_PLAN)),
    })
}

#[test]
fn fixed_seeds() {
    let _serial = gpusched_tests::serial();
    if !layer_available("fault_layer::fixed_seeds") {
        return;
    }
    let devices = live_devices();
    let set = HARNESS.seeds(|| (0..LAYER_SEEDS).collect());
    let injected_before = FaultCall::ALL.map(layer_injected);
    let totals = run_seeds(&HARNESS, &set.seeds, run);
    assert_eq!(live_devices(), devices, "devices left alive after the scenarios");
    let injected = |call: FaultCall| layer_injected(call) - injected_before[call as usize];
    eprintln!(
        "fault layer injected: {}",
        FaultCall::ALL
            .iter()
            .filter(|&&c| injected(c) > 0)
            .map(|&c| format!("{} {}", c.name(), injected(c)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if set.default_set {
        // The CI set must drive every error path it claims to.
        assert!(totals.device_lost > 0 && totals.driver_submit_failures > 0, "{totals}");
        assert!(totals.ok * 3 > totals.jobs, "too few successes to check results: {totals}");
        for call in [
            FaultCall::QueueSubmit,
            FaultCall::AllocateMemory,
            FaultCall::CreateBuffer,
            FaultCall::CreateDevice,
        ] {
            assert!(injected(call) > 0, "the layer never failed {}", call.name());
        }
        // Device losses reported by the layer to the backend's waits and counter reads.
        assert!(
            injected(FaultCall::WaitSemaphores) + injected(FaultCall::GetSemaphoreCounterValue) > 0,
            "no loss was reported to a wait or a counter read"
        );
    }
}

#[test]
#[ignore = "soak: runs random seeds through the fault layer for FAULT_SOAK_SECS seconds"]
fn soak() {
    let _serial = gpusched_tests::serial();
    if !layer_available("fault_layer::soak") {
        return;
    }
    let devices = live_devices();
    gpusched_tests::soak(&HARNESS, run);
    assert_eq!(live_devices(), devices, "devices left alive after the soak");
}
