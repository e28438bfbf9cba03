//! A Vulkan layer, `VK_LAYER_GPUSCHED_fault`, that makes chosen Vulkan calls fail the way real
//! drivers fail, so that error handling can be tested on a driver that never fails (Mesa
//! lavapipe): `VK_ERROR_DEVICE_LOST` from submits and waits, `VK_ERROR_OUT_OF_DEVICE_MEMORY`
//! from allocations, `VK_ERROR_INITIALIZATION_FAILED` from `vkCreateDevice`, and so on.
//!
//! # Two halves
//!
//! The crate builds twice from the same source:
//! - the **cdylib** `libvk_fault_layer.so` is the layer: the Vulkan loader loads it through a
//!   manifest (loader–layer interface version 2). It intercepts the commands of
//!   [`FaultCall`] (plus instance and device creation and destruction, to keep its dispatch
//!   data); every other command resolves to the next layer's pointer.
//! - the **rlib** is the control API for Rust tests: [`LayerSetup`] finds the built library,
//!   writes its manifest and points the loader at it; [`FaultLayer`] arms faults in the loaded
//!   layer through its exported C functions ([`ffi`]), opened with `libloading` by the same
//!   path, which yields the loader's copy of the library and so the one state.
//!
//! The layer's state is process-global: every instance and device of the process sees the
//! same armed faults. Tests that arm faults must not run concurrently in one process
//! (serialise them with a lock, and [`FaultLayer::reset`] first).
//!
//! # Faults
//!
//! Per command ([`FaultCall`]), one rule: a [`Trigger`] (the Nth call, once; or each call with
//! a probability from a seeded generator of that command's own) and a [`Fault`] (return an
//! error code, or lose the device). Besides, [`FaultLayer::lose_device`] loses every live
//! device: from then on each command of a lost device that can return `VK_ERROR_DEVICE_LOST`
//! does, at once. The layer only returns codes the specification lists for the command
//! ([`FaultCall::error_codes`]); a failing call does not call down the chain, so a failed
//! `vkQueueSubmit` submits nothing and a failed wait returns at once. The one exception:
//! `vkDeviceWaitIdle` / `vkQueueWaitIdle` reporting `VK_ERROR_DEVICE_LOST` first wait for the
//! work already submitted, which the driver below still runs, so that destroying everything
//! after the reported loss (as the specification allows) is safe.
//!
//! Programs that cannot call the control interface can arm faults at load time with the
//! [`FAULTS_ENV`] environment variable (`GPUSCHED_FAULT_LAYER_FAULTS`), for example
//! `vkAllocateMemory:nth=3:VK_ERROR_OUT_OF_DEVICE_MEMORY;vkQueueSubmit:random=0.01@7:lose`
//! (grammar: [`parse_spec`]), and enable the layer with `VK_INSTANCE_LAYERS`.
//!
//! # Layer order
//!
//! Enable the layer first, before `VK_LAYER_KHRONOS_validation` in `ppEnabledLayerNames`
//! (the first is nearest the application): validation then sees only the calls that really
//! reach the driver, and never a call the fault layer failed. For code that creates its own
//! instance, [`LayerSetup::install_env_enabled`] enables the layer through
//! `VK_INSTANCE_LAYERS`, which the loader places above the layers the application names.
//!
//! # Building
//!
//! `cargo test -p vk-fault-layer` builds the library itself. Tests of other packages need it
//! built first: `cargo build -p vk-fault-layer` (`make nextest` does that), or name the
//! library with the `GPUSCHED_FAULT_LAYER_LIB` environment variable ([`LIBRARY_ENV`]).
//!
//! # Example
//!
//! ```no_run
//! use ash::vk;
//! use vk_fault_layer::{FaultCall, LayerSetup, LAYER_NAME};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let setup = LayerSetup::locate()?; // finds target/<profile>/libvk_fault_layer.so
//! setup.install_env(); // before the loader scans for layers
//! let layer = setup.open()?;
//! layer.reset();
//! // SAFETY (example): the loader library is the system's Vulkan loader.
//! let entry = unsafe { ash::Entry::load()? };
//! let layers = [LAYER_NAME.as_ptr()];
//! let info = vk::InstanceCreateInfo::default().enabled_layer_names(&layers);
//! // SAFETY (example): a valid create info.
//! let instance = unsafe { entry.create_instance(&info, None)? };
//! // ... create a device, then make its 3rd allocation fail:
//! layer.fail_nth(FaultCall::AllocateMemory, 3, vk::Result::ERROR_OUT_OF_DEVICE_MEMORY)?;
//! # // SAFETY (example): nothing uses the instance any more.
//! # unsafe { instance.destroy_instance(None) };
//! # Ok(())
//! # }
//! ```
//!
//! Arming is checked against the specification's error codes:
//!
//! ```
//! use ash::vk;
//! use vk_fault_layer::{validate, ArmError, Fault, FaultCall, Trigger};
//!
//! let lost = Fault::Fail(vk::Result::ERROR_DEVICE_LOST);
//! assert!(validate(FaultCall::QueueSubmit, Trigger::Nth(1), lost).is_ok());
//! assert!(matches!(
//!     validate(FaultCall::AllocateMemory, Trigger::Nth(1), lost),
//!     Err(ArmError::CodeNotAllowed { .. })
//! ));
//! ```

mod call;
mod control;
pub mod ffi;
mod layer;
mod rules;
mod spec;
pub mod testing;

pub use call::{validate, ArmError, Fault, FaultCall, Trigger};
pub use control::{
    FaultLayer, LayerSetup, SetupError, ENABLE_ENV, LAYER_NAME, LAYER_PATH_ENV, LIBRARY_ENV,
    MANIFEST_FILE,
};
pub use spec::{parse_spec, SpecEntry, SpecError, FAULTS_ENV};
