//! Faults armed at load time through `GPUSCHED_FAULT_LAYER_FAULTS`, with the layer enabled
//! through `VK_INSTANCE_LAYERS`: the route for programs that cannot call the control
//! interface. Its own test binary: it changes the process environment before the loader
//! first loads the layer.

use ash::vk;
use vk_fault_layer::testing::skip_or_fail;
use vk_fault_layer::{FaultCall, LayerSetup, FAULTS_ENV};

#[test]
fn faults_from_the_environment_are_armed_at_load() {
    let test = "faults_from_the_environment_are_armed_at_load";
    let setup = match LayerSetup::locate() {
        Ok(setup) => setup,
        Err(error) => return skip_or_fail(test, error),
    };
    // The only test of this process: nothing else reads the environment meanwhile.
    setup.install_env_enabled();
    std::env::set_var(FAULTS_ENV, "vkAllocateMemory:nth=2:VK_ERROR_OUT_OF_DEVICE_MEMORY");
    // SAFETY: loading the system Vulkan loader runs its initialisers, which are sound.
    let entry = match unsafe { ash::Entry::load() } {
        Ok(entry) => entry,
        Err(error) => return skip_or_fail(test, format!("no Vulkan loader: {error}")),
    };
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_3);
    let info = vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: a valid create info; the loader loads the layer (and it reads the variable).
    let instance = match unsafe { entry.create_instance(&info, None) } {
        Ok(instance) => instance,
        Err(vk::Result::ERROR_INCOMPATIBLE_DRIVER) => {
            return skip_or_fail(test, "no Vulkan driver (vkCreateInstance: INCOMPATIBLE_DRIVER)")
        }
        Err(error) => panic!("vkCreateInstance: {error:?}"),
    };
    let layer = setup.open().expect("the built layer library opens");
    assert_eq!(layer.live_instances(), 1, "the layer was not enabled through the environment");
    // SAFETY: a valid instance.
    let physical = unsafe { instance.enumerate_physical_devices() }.expect("devices")[0];
    let priorities = [1.0];
    let queues =
        [vk::DeviceQueueCreateInfo::default().queue_family_index(0).queue_priorities(&priorities)];
    let device_info = vk::DeviceCreateInfo::default().queue_create_infos(&queues);
    // SAFETY: a valid physical device and create info.
    let device = unsafe { instance.create_device(physical, &device_info, None) }.expect("device");
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
    unsafe {
        device.destroy_device(None);
        instance.destroy_instance(None);
    }
}
