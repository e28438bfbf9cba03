//! Fault injection for the demo, on `gpusched-vulkan`'s `fault-injection` API (this package
//! enables that feature).
//!
//! The schedule, seeded (`--seed`) so a run can be replayed:
//! - at 1/3 of the rounds, one job of one client's chain hangs (`JobFault::Hang`): the TDR
//!   times it out (`TimedOut`), that round is skipped, and the client's later rounds verify;
//! - a dedicated *rogue* client submits jobs that all hang, one at a time, until the scheduler
//!   bans it (past the ring's `hang_limit`): its later jobs end `Cancelled`, or are refused
//!   at arm time;
//! - at 2/3 of the rounds, the first client loses the device (`VulkanDevice::lose_device`):
//!   every in-flight fence ends `DeviceLost`; each client waits for the next device
//!   generation (`VulkanDevice::wait_generation`), re-creates its buffers on it (contents are
//!   lost with the device) and carries on.

use std::time::Duration;

use gpusched_vulkan::{JobFault, VulkanDevice, VulkanJob};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Where and when the faults strike.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    /// The seed it was drawn from.
    pub(crate) seed: u64,
    /// The client whose job hangs at `hang_round`.
    pub(crate) hang_client: u32,
    /// The round of the single hang.
    pub(crate) hang_round: u32,
    /// Which job of that round's chain hangs (0..4).
    pub(crate) hang_job: usize,
    /// The round before which client 0 loses the device.
    pub(crate) loss_round: u32,
}

impl Schedule {
    /// Draws the schedule for `clients` × `rounds` (rounds ≥ 3) from `seed`.
    pub(crate) fn new(seed: u64, clients: u32, rounds: u32) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed);
        let hang_round = (rounds / 3).max(1) - 1;
        Schedule {
            seed,
            hang_client: rng.gen_range(0..clients),
            hang_round,
            hang_job: rng.gen_range(0..4),
            loss_round: ((2 * rounds) / 3).max(hang_round + 1),
        }
    }
}

/// How long a client waits for the device to come back after a loss.
pub(crate) const RECREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// The job, made to hang (a wait on a host-controlled semaphore that only the TDR's recovery
/// releases).
pub(crate) fn hang(job: VulkanJob) -> VulkanJob {
    job.inject(JobFault::Hang)
}

/// Declares the device lost (as `VK_ERROR_DEVICE_LOST` would).
pub(crate) fn lose_device(dev: &VulkanDevice) {
    dev.lose_device();
}

/// Device generations so far (1 before any loss).
pub(crate) fn generations(dev: &VulkanDevice) -> u64 {
    dev.generations()
}

/// Waits until the device's generation is past `seen`; returns the new one.
pub(crate) fn wait_generation(
    dev: &VulkanDevice,
    seen: u64,
    timeout: Duration,
) -> Result<u64, String> {
    dev.wait_generation(seen, timeout).map_err(|e| e.to_string())
}
