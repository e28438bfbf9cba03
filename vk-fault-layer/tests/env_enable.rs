//! The layer enabled for every instance through the environment (`VK_INSTANCE_LAYERS`), for
//! code that creates its own instance: an instance that names only the validation layer gets
//! the fault layer too, above validation. Its own test binary: it changes the process
//! environment.

mod common;

use ash::vk;
use common::{create_instance, destroy, env_enabled_setup, first_device, load_entry};
use vk_fault_layer::testing::skip_or_fail;
use vk_fault_layer::FaultCall;

#[test]
fn layer_enabled_through_the_environment_sits_above_validation() {
    let test = "layer_enabled_through_the_environment_sits_above_validation";
    // The only test of this process: nothing else reads the environment meanwhile.
    let Some(setup) = env_enabled_setup(test) else { return };
    let layer = setup.open().expect("the built layer library opens");
    layer.reset();
    let Some(entry) = load_entry(test) else { return };
    let validation = c"VK_LAYER_KHRONOS_validation";
    // SAFETY: a loaded entry; the call has no preconditions.
    let layers = unsafe { entry.enumerate_instance_layer_properties() }.expect("layer list");
    if !layers.iter().any(|l| l.layer_name_as_c_str() == Ok(validation)) {
        return skip_or_fail(test, "the Khronos validation layer is not installed");
    }
    let names = [validation.as_ptr()];
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_3);
    let info = vk::InstanceCreateInfo::default().application_info(&app).enabled_layer_names(&names);
    let instances = layer.live_instances();
    let Some(instance) = create_instance(test, &entry, &info) else { return };
    assert_eq!(layer.live_instances(), instances + 1, "the fault layer was not enabled");
    let device = first_device(&instance);
    // A zero-sized buffer is invalid; validation (below) would reject it with
    // VK_ERROR_VALIDATION_FAILED_EXT, so OUT_OF_DEVICE_MEMORY shows the fault layer answered
    // first.
    let invalid =
        vk::BufferCreateInfo::default().size(0).usage(vk::BufferUsageFlags::STORAGE_BUFFER);
    let ood = vk::Result::ERROR_OUT_OF_DEVICE_MEMORY;
    layer.fail_nth(FaultCall::CreateBuffer, 1, ood).expect("arm");
    // SAFETY: a valid device; the invalid create info stops at the fault layer.
    assert_eq!(unsafe { device.create_buffer(&invalid, None) }, Err(ood));
    assert_eq!(layer.injected(FaultCall::CreateBuffer), 1);
    // SAFETY: nothing created from them is alive.
    unsafe { destroy(device, instance) };
    assert_eq!(layer.live_instances(), instances);
}
