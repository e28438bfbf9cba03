//! The Vulkan layer world: [`LayerWorld`], the Vulkan world ([`VulkanWorld`](crate::VulkanWorld))
//! with its device losses, failed submissions and allocation failures made by the Vulkan fault
//! layer (`vk-fault-layer`, loaded above the validation layer), so that the backend handles the
//! errors a driver returns rather than its own injected ones. Hangs and slow jobs stay injected
//! in the backend (a layer cannot make a shader hang).
//!
//! # Faults
//! - [`Fault::FailSubmit`](crate::Fault::FailSubmit): arms the layer to fail the *next*
//!   `vkQueueSubmit` with `VK_ERROR_OUT_OF_DEVICE_MEMORY`. Which job (or batch of jobs) that call
//!   carries depends on thread timing, so the world declares its submission faults
//!   unattributed ([`World::SUBMIT_FAULTS_ATTRIBUTED`] false): any job may end `-ENOMEM`
//!   ([`World::SUBMIT_ERROR`]) and the `FailSubmit` job itself may succeed.
//! - Device loss ([`World::lose_device`]): the layer loses the device (every call of it that can
//!   report `VK_ERROR_DEVICE_LOST` does, at once, while lavapipe below still runs the work
//!   submitted). The backend learns of it from whichever call comes first: its completion
//!   threads' waits and counter reads, a submission, a timeout's counter read, or the world's
//!   `wait_idle` (rings may be idle). On one seed in three, the first re-creation's
//!   `vkCreateDevice` fails `VK_ERROR_INITIALIZATION_FAILED` (retried by the backend).
//! - Allocation failures: on one seed in two, the first `vkAllocateMemory` after the device is
//!   made fails (the first buffer's memory chunk, or a re-creation's scratch memory); before one
//!   job's result buffer in eight (chosen from the seed), the next `vkCreateBuffer` fails. Both
//!   out of memory: the buffer is refused with a typed error and made again.
//!
//! # Checks
//! The oracle's, with unattributed submission faults; besides, every `VkDevice` created through
//! the layer is destroyed by the end of the scenario. What the layer injected is added up
//! process-wide ([`layer_injected`]), for the suite to check that it drove every path.
//!
//! The layer's state is process-global and the loader reads its environment once: call
//! [`fault_layer`] before any Vulkan instance of the process exists, and run scenarios one at
//! a time ([`serial`](crate::serial)).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ash::vk;
use gpusched::fence::FenceError;
use gpusched::Scheduler;
use gpusched_vulkan::{VulkanDevice, VulkanJob, VulkanRing};
use vk_fault_layer::{FaultCall, FaultLayer, LayerSetup};

use crate::ledger::Ledger;
use crate::plan::{Fault, Scenario};
use crate::vulkan::VulkanWorld;
use crate::world::World;

/// How long the world waits for the backend to see a loss.
const WAIT: Duration = Duration::from_secs(30);

/// The layer set up once per process.
static SETUP: OnceLock<Result<LayerSetup, String>> = OnceLock::new();

/// What the layer injected over every scenario of the process, per command.
static INJECTED: [AtomicU64; FaultCall::COUNT] = [const { AtomicU64::new(0) }; FaultCall::COUNT];

/// Sets the fault layer up for this process (once: finds the built library, points the loader
/// at it and enables it in every instance, above the validation layer) and opens its control.
/// Call it before the process creates any Vulkan instance.
///
/// # Errors
/// The library is not built (`cargo build -p vk-fault-layer`) or cannot be opened.
pub fn fault_layer() -> Result<FaultLayer, String> {
    let setup = SETUP.get_or_init(|| {
        let setup = LayerSetup::locate().map_err(|e| e.to_string())?;
        setup.install_env_enabled();
        Ok(setup)
    });
    setup.as_ref().map_err(Clone::clone)?.open().map_err(|e| e.to_string())
}

/// The failures the layer injected into `call` over every [`LayerWorld`] scenario of the
/// process so far.
pub fn layer_injected(call: FaultCall) -> u64 {
    INJECTED[call as usize].load(Ordering::Relaxed)
}

/// A seeded draw for job `idx` of scenario `seed` (SplitMix64's finaliser).
fn mix(seed: u64, idx: u64) -> u64 {
    let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ idx.wrapping_add(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The layer's side of a [`LayerWorld`]: its control, the scenario's seed, and the layer's
/// live device count before the world's device was made.
pub(crate) struct LayerFaults {
    layer: FaultLayer,
    seed: u64,
    live_before: u64,
}

impl fmt::Debug for LayerFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerFaults").field("seed", &self.seed).finish_non_exhaustive()
    }
}

impl LayerFaults {
    fn new(seed: u64) -> Result<Self, String> {
        let layer = fault_layer()?;
        layer.reset();
        let live_before = layer.live_devices();
        Ok(LayerFaults { layer, seed, live_before })
    }

    /// Arms `call` to fail its next call with `code` (valid by construction).
    fn fail_next(&self, call: FaultCall, code: vk::Result) {
        if let Err(e) = self.layer.fail_nth(call, 1, code) {
            panic!("the layer refused {call:?} {code:?}: {e}");
        }
    }

    /// The world's device exists: it must have been made through the layer. Arms the first
    /// allocation failure (see the module docs).
    pub(crate) fn device_created(&self) {
        assert_eq!(
            self.layer.live_devices(),
            self.live_before + 1,
            "the device was not created through the fault layer (an instance made before \
             `fault_layer()`?)"
        );
        if self.seed % 2 == 0 {
            self.fail_next(FaultCall::AllocateMemory, vk::Result::ERROR_OUT_OF_DEVICE_MEMORY);
        }
    }

    /// Before job `idx`'s result buffer is made: one job in eight arms a `vkCreateBuffer`
    /// failure.
    pub(crate) fn before_buffer(&self, idx: usize) {
        if mix(self.seed, idx as u64) % 8 == 0 {
            self.fail_next(FaultCall::CreateBuffer, vk::Result::ERROR_OUT_OF_DEVICE_MEMORY);
        }
    }

    /// A [`Fault::FailSubmit`] job: the next `vkQueueSubmit` fails.
    pub(crate) fn fail_next_submit(&self) {
        self.fail_next(FaultCall::QueueSubmit, vk::Result::ERROR_OUT_OF_DEVICE_MEMORY);
    }

    /// Loses the device in the layer and lets the backend see it (the caller waits for the
    /// next generation).
    pub(crate) fn lose_device(&self, dev: &VulkanDevice) {
        if self.seed % 3 == 0 {
            self.fail_next(FaultCall::CreateDevice, vk::Result::ERROR_INITIALIZATION_FAILED);
        }
        let lost = self.layer.lose_device();
        assert_eq!(lost, 1, "the layer lost {lost} devices, not the world's one");
        // A driver reports a loss to the next call on the device; the rings may be idle.
        // Whoever sees it first starts the recovery; this call only makes sure someone does.
        let _ = dev.wait_idle(WAIT);
    }

    /// After the device was closed: every `VkDevice` made through the layer is destroyed.
    /// Adds what the layer injected to the process totals and resets it.
    pub(crate) fn teardown(self) -> Result<(), String> {
        for call in FaultCall::ALL {
            INJECTED[call as usize].fetch_add(self.layer.injected(call), Ordering::Relaxed);
        }
        let live = self.layer.live_devices();
        self.layer.reset();
        if live != self.live_before {
            return Err(format!(
                "{} VkDevices made through the fault layer were never destroyed",
                live - self.live_before
            ));
        }
        Ok(())
    }
}

/// The Vulkan world with its faults made by the Vulkan fault layer; see the module docs.
#[derive(Debug)]
pub struct LayerWorld(VulkanWorld);

impl World for LayerWorld {
    type Backend = VulkanRing;
    const NAME: &'static str = "vulkan-layer";
    /// `VK_ERROR_OUT_OF_DEVICE_MEMORY` from `vkQueueSubmit` (`-ENOMEM`).
    const SUBMIT_ERROR: FenceError = FenceError::Driver(-12);
    const COUNTS_BACKEND_CALLS: bool = false;
    const RECOVERS_FROM_LOSS: bool = true;
    const SUBMIT_FAULTS_ATTRIBUTED: bool = false;

    fn new(scenario: &Scenario, ledger: Arc<Ledger>) -> Result<Self, String> {
        let faults = LayerFaults::new(scenario.seed)?;
        Ok(LayerWorld(VulkanWorld::make(scenario, ledger, Some(faults))?))
    }

    fn schedulers(&self) -> &[Scheduler<VulkanRing>] {
        self.0.schedulers()
    }

    fn payload(&self, idx: usize, fault: Fault) -> VulkanJob {
        self.0.payload(idx, fault)
    }

    fn lose_device(&self) {
        self.0.lose_device();
    }

    fn collect(&self) -> Result<(), String> {
        self.0.collect()
    }

    fn teardown(self) -> Result<(), String> {
        self.0.teardown()
    }
}
