//! A validated Vulkan device for a test, or a clear skip when none can be created.
//!
//! Shared with the fault suites of `gpusched-tests` (not published), which include this file
//! (`tests/src/lib.rs`, `#[path]`), so that the published `gpusched-vulkan` package's tests
//! need nothing outside it: it depends on `gpusched-vulkan` and `vk-fault-layer` only.

use std::time::Duration;

use gpusched_vulkan::{DeviceConfig, InitError, VulkanDevice};

/// A device with the validation layer on (with `validation`), or `None` when Vulkan, every
/// device or the validation layer is missing: `test` is then skipped with a printed reason on a
/// developer machine, and fails under CI or `GPUSCHED_REQUIRE_VULKAN=1`
/// (`vk_fault_layer::testing::skip_or_fail`). Any other creation error panics.
#[track_caller]
pub fn validated_device(test: &str, validation: bool) -> Option<VulkanDevice> {
    match VulkanDevice::with_config(DeviceConfig::default().validation(validation)) {
        Ok(d) => Some(d),
        Err(
            e @ (InitError::LoaderMissing(_)
            | InitError::NoDevice(_)
            | InitError::ValidationUnavailable),
        ) => {
            vk_fault_layer::testing::skip_or_fail(
                test,
                format!("no validated Vulkan device can be created: {e}"),
            );
            None
        }
        Err(e) => panic!("cannot create a validated Vulkan device: {e}"),
    }
}

/// Whether [`validated_device`] can make a device; the probe device is closed (a panic if it
/// cannot be).
#[track_caller]
pub fn validated_device_available(test: &str, validation: bool) -> bool {
    let Some(d) = validated_device(test, validation) else { return false };
    if d.close(Duration::from_secs(30)).is_err() {
        panic!("the probe device could not be closed");
    }
    true
}
