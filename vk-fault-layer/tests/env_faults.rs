//! Faults armed at load time through `GPUSCHED_FAULT_LAYER_FAULTS`, with the layer enabled
//! through `VK_INSTANCE_LAYERS`: the route for programs that cannot call the control
//! interface. Its own test binary: it changes the process environment before the loader
//! first loads the layer.

mod common;

use ash::vk;
use common::{create_instance, destroy, env_enabled_setup, first_device, load_entry};
use vk_fault_layer::{FaultCall, FAULTS_ENV};

#[test]
fn faults_from_the_environment_are_armed_at_load() {
    let test = "faults_from_the_environment_are_armed_at_load";
    // The only test of this process: nothing else reads the environment meanwhile.
    let Some(setup) = env_enabled_setup(test) else { return };
    std::env::set_var(FAULTS_ENV, "vkAllocateMemory:nth=2:VK_ERROR_OUT_OF_DEVICE_MEMORY");
    let Some(entry) = load_entry(test) else { return };
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_3);
    let info = vk::InstanceCreateInfo::default().application_info(&app);
    // The loader loads the layer (and it reads the variable).
    let Some(instance) = create_instance(test, &entry, &info) else { return };
    let layer = setup.open().expect("the built layer library opens");
    assert_eq!(layer.live_instances(), 1, "the layer was not enabled through the environment");
    let device = first_device(&instance);
    let allocate = vk::MemoryAllocateInfo::default().allocation_size(256).memory_type_index(0);
    let results: Vec<_> = (0..3)
        .map(|_| {
            // SAFETY: a valid device and allocate info.
            unsafe { device.allocate_memory(&allocate, None) }
        })
        .collect();
    assert_eq!(results[1], Err(vk::Result::ERROR_OUT_OF_DEVICE_MEMORY), "{results:?}");
    for memory in results.iter().flatten() {
        // SAFETY: memory of this device, unused.
        unsafe { device.free_memory(*memory, None) };
    }
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert_eq!(layer.injected(FaultCall::AllocateMemory), 1);
    // SAFETY: nothing created from them is alive.
    unsafe { destroy(device, instance) };
}
