//! Fault injection (cargo feature `fault-injection`): hangs, slow jobs, failed submissions, dropped
//! recordings, failed buffer allocations and device losses, on demand
//! ([`VulkanJob::inject`](crate::VulkanJob::inject),
//! [`VulkanDevice::lose_device`](crate::VulkanDevice::lose_device)) or drawn from a seeded
//! [`FaultPlan`] ([`VulkanDevice::set_fault_plan`](crate::VulkanDevice::set_fault_plan)).
//!
//! # How each fault is made (lavapipe has no watchdog and never loses a device by itself)
//! - [`JobFault::Hang`]: the job's submission waits on a value of the device's *hang* timeline
//!   semaphore that only the host signals. The whole queue stalls behind it (as a hung ring
//!   does). The timeout handler releases it (host-signals the value): the guilty job then
//!   runs late, after its fence already reported `TimedOut`, and the innocent jobs queued
//!   behind it on the `VkQueue` complete normally.
//! - [`JobFault::HangForever`]: the same, on a *wedge* semaphore the timeout handler never
//!   signals: it stands in for a shader hang on a driver without a watchdog. The handler sees
//!   that the hardware made no progress across two timeouts, declares the device lost and a
//!   new generation is created. The wedged device is destroyed only at teardown, where the
//!   simulated wedge is released (a real one would be leaked: see the crate docs).
//! - [`JobFault::Slow`]: the busy kernel is recorded before the job's own commands, sized
//!   from a per-device calibration (measured when the device is created) to run about that
//!   long.
//! - [`JobFault::FailSubmit`]: `vkQueueSubmit` is not called; the job fails as if it had
//!   returned the code. [`SubmitFault::DeviceLost`] takes the real device-loss path.
//! - [`JobFault::DropRecording`]: the job is recorded, then the command buffer is thrown away
//!   and arming fails with [`RecordError::RecordingDropped`](crate::RecordError::RecordingDropped)
//!   (no fence is handed out).
//! - Buffer allocation failures: [`VulkanDevice::buffer`](crate::VulkanDevice::buffer) fails
//!   with `ERROR_OUT_OF_DEVICE_MEMORY` before touching the driver.
//!
//! Hung and failing jobs are never batched: `run_job` first submits the jobs batched before
//! them, then submits them alone (a hung job's wait must not hold back jobs batched ahead of
//! it, and a failed submission fails that one job only).
//!
//! # Reproducibility
//! A plan draws from its own generator (splitmix64), seeded; the draws happen in the order
//! jobs are armed on the device handle (each armed job draws the same number of values,
//! whatever it gets), so the same seed and the same sequence of arms inject the same faults.

// The switch: this module has two implementations of one crate-internal API, chosen here and nowhere
// else: `enabled.rs` (the feature on) and `disabled.rs` (off). The rest of the crate calls
// the API unconditionally. Off, every state type is zero-sized and every call an
// `#[inline(always)]` constant (`None`, `false`, nothing), so no fault state exists
// (per-handle plan and counters, per-device hang semaphores and busy-kernel calibration,
// per-job fault) and the hot paths (`prepare_job`, `run_job`, the completion thread) keep
// no fault branch once inlined. Only the public API (this module, `VulkanJob::inject`,
// `VulkanDevice::set_fault_plan`, `lose_device`, `fault_stats` and the re-exports) is
// behind `#[cfg]` outside it.
#[cfg(feature = "fault-injection")]
mod enabled;
#[cfg(feature = "fault-injection")]
pub use self::enabled::*;

#[cfg(not(feature = "fault-injection"))]
mod disabled;
#[cfg(not(feature = "fault-injection"))]
pub(crate) use self::disabled::*;

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::{DeviceFaults, FaultState, JobFaults, PendingHang};

    /// The switch: without the feature every piece of fault state is zero-sized (so a
    /// `VulkanJob`, a ring's submission record, a `DeviceCore` and a `DeviceShared` carry
    /// none); with it, each holds its state.
    #[test]
    fn fault_state_exists_only_with_the_feature() {
        let sizes = [
            size_of::<FaultState>(),
            size_of::<JobFaults>(),
            size_of::<PendingHang>(),
            size_of::<DeviceFaults>(),
        ];
        if cfg!(feature = "fault-injection") {
            assert!(sizes.iter().all(|&s| s > 0), "fault state with the feature: {sizes:?}");
        } else {
            assert_eq!(sizes, [0; 4], "no fault state without the feature");
        }
    }
}
