//! A minimal "engine" for the adoption tests: its own instance (validation layer on, with its
//! own messenger counting errors), physical device and logical devices, made with `ash`
//! directly, as an engine would, and lent to gpusched with `VulkanDevice::adopt`.

use std::sync::Arc;

use gpusched_vulkan::ash::{self, vk};
use gpusched_vulkan::{AdoptedDevice, EnabledFeatures, LentQueue, QueueLock};

/// The engine example's own Vulkan code (instance and messenger, engine buffers): the tests
/// adopt and synchronise with the same engine the example shows.
#[path = "../../examples/engine/engine_vk.rs"]
pub mod engine_vk;

use engine_vk::{create_instance, destroy_instance, Messenger};

/// Validation errors the engine's own messenger saw (its instance: every call on its
/// devices, gpusched's included).
pub fn engine_validation_errors() -> u64 {
    engine_vk::validation_errors()
}

/// The engine's instance and chosen physical device (shared with a re-creation callback).
pub struct EngineInstance {
    pub entry: ash::Entry,
    pub instance: ash::Instance,
    messenger: Option<Messenger>,
    pub physical: vk::PhysicalDevice,
    /// The first family with compute.
    pub family: u32,
    /// What the engine enables on its devices.
    pub enabled: EnabledFeatures,
    pub validation: bool,
}

impl EngineInstance {
    /// The engine's instance, or `None` (printed) without Vulkan.
    pub fn new() -> Option<Arc<EngineInstance>> {
        let validation = std::env::var("GPUSCHED_TEST_NOVAL").is_err();
        // SAFETY: loading the system Vulkan loader.
        let entry = match unsafe { ash::Entry::load() } {
            Ok(e) => e,
            Err(e) => {
                eprintln!("SKIPPED: no Vulkan loader: {e}");
                return None;
            }
        };
        let (instance, messenger) = create_instance(&entry, c"engine-test", validation)
            .expect("the engine's instance (validation layer installed?)");
        // SAFETY: live instance.
        let physicals = unsafe { instance.enumerate_physical_devices() }.expect("enumerate");
        let Some(&physical) = physicals.first() else {
            eprintln!("SKIPPED: no Vulkan device");
            return None;
        };
        // SAFETY: valid physical device.
        let families = unsafe { instance.get_physical_device_queue_family_properties(physical) };
        let family = families
            .iter()
            .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE))
            .expect("a compute family") as u32;
        let mut f13 = vk::PhysicalDeviceVulkan13Features::default();
        let mut f2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut f13);
        // SAFETY: valid physical device; the chain lives across the call.
        unsafe { instance.get_physical_device_features2(physical, &mut f2) };
        let v13 = f13.synchronization2 == vk::TRUE && f13.dynamic_rendering == vk::TRUE;
        let enabled = EnabledFeatures {
            timeline_semaphore: true,
            push_descriptor: true,
            synchronization2: v13,
            dynamic_rendering: v13,
        };
        Some(Arc::new(EngineInstance {
            entry,
            instance,
            messenger,
            physical,
            family,
            enabled,
            validation,
        }))
    }

    /// A new logical device with every queue of the compute family and the features
    /// gpusched needs enabled.
    pub fn create_device(&self) -> ash::Device {
        // SAFETY: valid physical device.
        let families =
            unsafe { self.instance.get_physical_device_queue_family_properties(self.physical) };
        let count = families[self.family as usize].queue_count as usize;
        let priorities = vec![1.0f32; count];
        let qinfo = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(self.family)
            .queue_priorities(&priorities)];
        let exts = [ash::khr::push_descriptor::NAME.as_ptr()];
        let mut f12 = vk::PhysicalDeviceVulkan12Features::default().timeline_semaphore(true);
        let mut f13 = vk::PhysicalDeviceVulkan13Features::default()
            .synchronization2(self.enabled.synchronization2)
            .dynamic_rendering(self.enabled.dynamic_rendering);
        let info = vk::DeviceCreateInfo::default()
            .queue_create_infos(&qinfo)
            .enabled_extension_names(&exts)
            .push_next(&mut f12)
            .push_next(&mut f13);
        // SAFETY: the create info and its chain live across the call.
        unsafe { self.instance.create_device(self.physical, &info, None) }.expect("vkCreateDevice")
    }

    /// How many queues the compute family has.
    pub fn queue_count(&self) -> u32 {
        // SAFETY: valid physical device.
        let families =
            unsafe { self.instance.get_physical_device_queue_family_properties(self.physical) };
        families[self.family as usize].queue_count
    }

    /// `device` lent to gpusched with queue 0 of the compute family under `lock`.
    pub fn lend(&self, device: &ash::Device, lock: &Arc<QueueLock>) -> AdoptedDevice {
        AdoptedDevice {
            entry: self.entry.clone(),
            instance: self.instance.clone(),
            physical: self.physical,
            device: device.clone(),
            queues: vec![LentQueue { family: self.family, index: 0, lock: lock.clone() }],
            enabled: self.enabled,
            validation: self.validation,
            on_release: None,
        }
    }
}

impl Drop for EngineInstance {
    fn drop(&mut self) {
        // SAFETY: every device of the instance was destroyed by the test.
        unsafe { destroy_instance(&self.instance, self.messenger.take()) };
    }
}
