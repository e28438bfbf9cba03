//! The C control interface, exported by the layer library (`libvk_fault_layer.so`).
//!
//! Rust users call it through [`FaultLayer`](crate::FaultLayer), which opens the library the
//! Vulkan loader loaded. These functions act on the state of the copy of the code they are
//! called in: calling them directly from a program that links this crate's rlib changes the
//! rlib's own (unused) state, not the loaded layer's. Other languages `dlopen` the library
//! by the same path as the manifest's `library_path` (which yields the loader's copy) and
//! `dlsym` these names.
//!
//! Numbers: `call` is a [`FaultCall`] discriminant; `action` is 0 (return `code`) or 1
//! (lose the device, `code` ignored); `code` is a `VkResult`. Arming functions return 0, or
//! a negative [`ArmError::status`] and change nothing.

use crate::call::{fault_from_raw, validate, ArmError, FaultCall, Trigger};
use crate::layer;

/// The version of this interface; [`FaultLayer`](crate::FaultLayer) refuses a library with
/// another.
pub const ABI_VERSION: u32 = 1;

/// Validates and arms one command.
fn arm(call: u32, trigger: Trigger, action: u32, code: i32) -> i32 {
    let armed = FaultCall::from_raw(call).ok_or(ArmError::UnknownCall(call)).and_then(|call| {
        let fault = fault_from_raw(action, code)?;
        validate(call, trigger, fault)?;
        layer::rules().arm(call, trigger, fault);
        Ok(())
    });
    match armed {
        Ok(()) => 0,
        Err(error) => error.status(),
    }
}

/// The interface version, [`ABI_VERSION`].
#[no_mangle]
pub extern "C" fn gpusched_fault_layer_abi_version() -> u32 {
    ABI_VERSION
}

/// Arms `call` to fail exactly its `n`th call from now (1: the next), once.
#[no_mangle]
pub extern "C" fn gpusched_fault_layer_arm_nth(call: u32, n: u64, action: u32, code: i32) -> i32 {
    arm(call, Trigger::Nth(n), action, code)
}

/// Arms `call` to fail each call with `probability`, drawn from its own generator seeded
/// with `seed`.
#[no_mangle]
pub extern "C" fn gpusched_fault_layer_arm_random(
    call: u32,
    probability: f64,
    seed: u64,
    action: u32,
    code: i32,
) -> i32 {
    arm(call, Trigger::Random { probability, seed }, action, code)
}

/// Disarms `call` (its counters stay). Returns 0, or the unknown-call status.
#[no_mangle]
pub extern "C" fn gpusched_fault_layer_disarm(call: u32) -> i32 {
    match FaultCall::from_raw(call) {
        Some(call) => {
            layer::rules().disarm(call);
            0
        }
        None => ArmError::UnknownCall(call).status(),
    }
}

/// Disarms every command, zeroes every counter and makes every live device healthy: the
/// layer passes everything through again.
#[no_mangle]
pub extern "C" fn gpusched_fault_layer_reset() {
    layer::reset();
}

/// Loses every live device: from now on each of its commands that can return
/// `VK_ERROR_DEVICE_LOST` does, at once, until the reset. Devices created later are healthy.
/// Returns the number of devices lost.
#[no_mangle]
pub extern "C" fn gpusched_fault_layer_lose_device() -> u64 {
    layer::lose_devices()
}

/// Calls of `call` since the last reset (passed through or failed); `u64::MAX` for an
/// unknown call.
#[no_mangle]
pub extern "C" fn gpusched_fault_layer_calls(call: u32) -> u64 {
    FaultCall::from_raw(call).map_or(u64::MAX, |call| layer::rules().calls(call))
}

/// Calls of `call` the layer failed since the last reset; `u64::MAX` for an unknown call.
#[no_mangle]
pub extern "C" fn gpusched_fault_layer_injected(call: u32) -> u64 {
    FaultCall::from_raw(call).map_or(u64::MAX, |call| layer::rules().injected(call))
}

/// Instances created through the layer and not yet destroyed.
#[no_mangle]
pub extern "C" fn gpusched_fault_layer_live_instances() -> u64 {
    layer::live_instances()
}

/// Devices created through the layer and not yet destroyed.
#[no_mangle]
pub extern "C" fn gpusched_fault_layer_live_devices() -> u64 {
    layer::live_devices()
}

/// Live devices that are lost.
#[no_mangle]
pub extern "C" fn gpusched_fault_layer_lost_devices() -> u64 {
    layer::lost_devices()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ash::vk;

    // One test: it drives this copy's process-global state.
    #[test]
    fn statuses_and_counters() {
        let lost = vk::Result::ERROR_DEVICE_LOST.as_raw();
        let oom = vk::Result::ERROR_OUT_OF_DEVICE_MEMORY.as_raw();
        let submit = FaultCall::QueueSubmit.as_raw();
        let allocate = FaultCall::AllocateMemory.as_raw();
        gpusched_fault_layer_reset();
        assert_eq!(gpusched_fault_layer_abi_version(), ABI_VERSION);
        assert_eq!(gpusched_fault_layer_arm_nth(submit, 1, 0, lost), 0);
        assert_eq!(gpusched_fault_layer_arm_nth(submit, 1, 1, 0), 0);
        assert_eq!(gpusched_fault_layer_arm_nth(99, 1, 0, lost), -1);
        assert_eq!(gpusched_fault_layer_arm_nth(submit, 1, 7, lost), -2);
        assert_eq!(gpusched_fault_layer_arm_nth(allocate, 1, 0, lost), -3);
        assert_eq!(gpusched_fault_layer_arm_nth(allocate, 1, 1, 0), -4);
        assert_eq!(gpusched_fault_layer_arm_nth(allocate, 0, 0, oom), -5);
        assert_eq!(gpusched_fault_layer_arm_random(allocate, f64::NAN, 1, 0, oom), -6);
        assert_eq!(gpusched_fault_layer_arm_random(allocate, 0.5, 1, 0, oom), 0);
        assert_eq!(gpusched_fault_layer_disarm(allocate), 0);
        assert_eq!(gpusched_fault_layer_disarm(99), -1);
        assert_eq!(gpusched_fault_layer_calls(allocate), 0);
        assert_eq!(gpusched_fault_layer_calls(99), u64::MAX);
        assert_eq!(gpusched_fault_layer_injected(99), u64::MAX);
        // No device was created through this copy.
        assert_eq!(gpusched_fault_layer_lose_device(), 0);
        assert_eq!(gpusched_fault_layer_live_devices(), 0);
        gpusched_fault_layer_reset();
    }
}
