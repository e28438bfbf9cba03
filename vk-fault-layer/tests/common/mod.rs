//! The harness of the layer tests: the layer and the Khronos validation layer enabled on a
//! lavapipe instance (`. scripts/env.sh` pins it), validation messages collected, one test at
//! a time (the layer's state is process-global).

#![allow(dead_code, unreachable_pub)]

use std::ffi::CStr;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use ash::{ext, vk};
use vk_fault_layer::testing::skip_or_fail;
use vk_fault_layer::{FaultLayer, LayerSetup, LAYER_NAME};

/// The Khronos validation layer.
pub const VALIDATION: &CStr = c"VK_LAYER_KHRONOS_validation";

/// Serialises the tests of this process: they share the layer's state.
static LOCK: Mutex<()> = Mutex::new(());

/// Validation-type messages of severity warning or error, collected by the messenger.
static MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// General-type messages (the loader's own reports, such as a failed device chain).
static GENERAL: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The layer setup, made once per process (it sets the loader's environment).
static SETUP: OnceLock<Result<LayerSetup, String>> = OnceLock::new();

/// One test's hold on the layer and the loader.
pub struct Harness {
    pub layer: FaultLayer,
    pub setup: LayerSetup,
    pub entry: ash::Entry,
    _guard: MutexGuard<'static, ()>,
}

/// The system Vulkan loader, or `None` (skipped, or failed under CI) where it is missing.
pub fn load_entry(test: &str) -> Option<ash::Entry> {
    // SAFETY: loading the system Vulkan loader runs its initialisers, which are sound.
    match unsafe { ash::Entry::load() } {
        Ok(entry) => Some(entry),
        Err(error) => {
            skip_or_fail(test, format!("no Vulkan loader: {error}"));
            None
        }
    }
}

/// For the tests of the environment route (each alone in its process: it changes the process
/// environment): the layer located and enabled for every instance through
/// `VK_INSTANCE_LAYERS`, or `None` (skipped) where the layer library is missing.
pub fn env_enabled_setup(test: &str) -> Option<LayerSetup> {
    match LayerSetup::locate() {
        Ok(setup) => {
            setup.install_env_enabled();
            Some(setup)
        }
        Err(error) => {
            skip_or_fail(test, error);
            None
        }
    }
}

/// The instance `info` describes, or `None` (skipped) where the loader finds no driver.
pub fn create_instance(
    test: &str,
    entry: &ash::Entry,
    info: &vk::InstanceCreateInfo<'_>,
) -> Option<ash::Instance> {
    // SAFETY: a valid create info whose pointers outlive the call.
    match unsafe { entry.create_instance(info, None) } {
        Ok(instance) => Some(instance),
        Err(vk::Result::ERROR_INCOMPATIBLE_DRIVER) => {
            skip_or_fail(test, "no Vulkan driver (vkCreateInstance: INCOMPATIBLE_DRIVER)");
            None
        }
        Err(error) => panic!("vkCreateInstance: {error:?}"),
    }
}

/// A device with one queue of family 0 on the first physical device of `instance`.
pub fn first_device(instance: &ash::Instance) -> ash::Device {
    // SAFETY: a valid instance.
    let physical = unsafe { instance.enumerate_physical_devices() }.expect("devices")[0];
    let priorities = [1.0];
    let queues =
        [vk::DeviceQueueCreateInfo::default().queue_family_index(0).queue_priorities(&priorities)];
    let device_info = vk::DeviceCreateInfo::default().queue_create_infos(&queues);
    // SAFETY: a valid physical device and create info.
    unsafe { instance.create_device(physical, &device_info, None) }.expect("device")
}

/// Destroys `device`, then `instance`.
///
/// # Safety
/// Nothing created from them is alive, and neither is used again.
pub unsafe fn destroy(device: ash::Device, instance: ash::Instance) {
    // SAFETY: the caller's contract.
    unsafe {
        device.destroy_device(None);
        instance.destroy_instance(None);
    }
}

/// Takes the test lock, sets the layer up and resets it; `None` (after printing `SKIPPED`)
/// where the layer library, the Vulkan loader or the validation layer is missing outside CI.
pub fn harness(test: &str) -> Option<Harness> {
    let guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let setup = SETUP.get_or_init(|| {
        let setup = LayerSetup::locate().map_err(|e| e.to_string())?;
        // Under the lock, before any loader use in this process.
        setup.install_env();
        Ok(setup)
    });
    let setup = match setup {
        Ok(setup) => setup.clone(),
        Err(error) => {
            skip_or_fail(test, error);
            return None;
        }
    };
    let layer = setup.open().expect("the built layer library opens");
    layer.reset();
    MESSAGES.lock().unwrap_or_else(PoisonError::into_inner).clear();
    GENERAL.lock().unwrap_or_else(PoisonError::into_inner).clear();
    let entry = load_entry(test)?;
    // SAFETY: a loaded entry; the call has no preconditions.
    let layers = unsafe { entry.enumerate_instance_layer_properties() }.expect("layer list");
    let has = |name: &CStr| layers.iter().any(|l| l.layer_name_as_c_str() == Ok(name));
    assert!(has(LAYER_NAME), "the loader does not list the layer written by LayerSetup");
    if !has(VALIDATION) {
        skip_or_fail(test, "the Khronos validation layer is not installed");
        return None;
    }
    if let Err(reason) = probe_driver(&entry) {
        skip_or_fail(test, reason);
        return None;
    }
    Some(Harness { layer, setup, entry, _guard: guard })
}

/// Checks that a Vulkan driver answers: an instance without layers lists a physical device.
fn probe_driver(entry: &ash::Entry) -> Result<(), String> {
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_3);
    let info = vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: a valid create info.
    let instance = unsafe { entry.create_instance(&info, None) }
        .map_err(|e| format!("no Vulkan driver (vkCreateInstance: {e:?})"))?;
    // SAFETY: a valid instance.
    let devices = unsafe { instance.enumerate_physical_devices() };
    // SAFETY: nothing created from it is alive.
    unsafe { instance.destroy_instance(None) };
    match devices {
        Ok(devices) if !devices.is_empty() => Ok(()),
        other => Err(format!("no Vulkan device ({other:?})")),
    }
}

/// Collects validation warnings and errors, and the loader's general messages apart.
unsafe extern "system" fn on_message(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    _user: *mut core::ffi::c_void,
) -> vk::Bool32 {
    // SAFETY: the validation layer passes valid callback data for the call's duration.
    let message = unsafe { (*data).message_as_c_str() }
        .map_or_else(|| "(no message)".to_owned(), |m| m.to_string_lossy().into_owned());
    let list = if types.contains(vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION) {
        &MESSAGES
    } else {
        &GENERAL
    };
    list.lock().unwrap_or_else(PoisonError::into_inner).push(format!("{severity:?}: {message}"));
    vk::FALSE
}

/// The general (non-validation) messages since the harness was made.
pub fn general_messages() -> Vec<String> {
    GENERAL.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// The validation messages since the harness was made.
pub fn validation_messages() -> Vec<String> {
    MESSAGES.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// An instance with the fault layer above validation, a debug messenger and the first
/// physical device.
pub struct Gpu {
    pub instance: ash::Instance,
    pub debug_utils: ext::debug_utils::Instance,
    pub messenger: vk::DebugUtilsMessengerEXT,
    pub physical: vk::PhysicalDevice,
    pub family: u32,
}

fn messenger_info() -> vk::DebugUtilsMessengerCreateInfoEXT<'static> {
    vk::DebugUtilsMessengerCreateInfoEXT::default()
        .message_severity(
            vk::DebugUtilsMessageSeverityFlagsEXT::ERROR
                | vk::DebugUtilsMessageSeverityFlagsEXT::WARNING,
        )
        .message_type(
            vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                | vk::DebugUtilsMessageTypeFlagsEXT::GENERAL
                | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
        )
        .pfn_user_callback(Some(on_message))
}

/// Creates the instance (`Err`: the code `vkCreateInstance` returned).
pub fn create_gpu(h: &Harness) -> Result<Gpu, vk::Result> {
    // The fault layer first: nearest the application, above validation.
    let layers = [LAYER_NAME.as_ptr(), VALIDATION.as_ptr()];
    let extensions = [ext::debug_utils::NAME.as_ptr()];
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_3);
    let mut messenger = messenger_info();
    let info = vk::InstanceCreateInfo::default()
        .application_info(&app)
        .enabled_layer_names(&layers)
        .enabled_extension_names(&extensions)
        .push_next(&mut messenger);
    // SAFETY: a valid create info whose pointers outlive the call.
    let instance = unsafe { h.entry.create_instance(&info, None) }?;
    let debug_utils = ext::debug_utils::Instance::new(&h.entry, &instance);
    // SAFETY: a valid instance with debug utils enabled.
    let messenger = unsafe { debug_utils.create_debug_utils_messenger(&messenger_info(), None) }
        .expect("debug messenger");
    // SAFETY: a valid instance.
    let physical = unsafe { instance.enumerate_physical_devices() }.expect("physical devices")[0];
    // SAFETY: a valid physical device.
    let families = unsafe { instance.get_physical_device_queue_family_properties(physical) };
    let family = families
        .iter()
        .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE))
        .expect("a compute queue family") as u32;
    Ok(Gpu { instance, debug_utils, messenger, physical, family })
}

impl Gpu {
    /// Creates a device with timeline semaphores and synchronization2 (`Err`: the code
    /// `vkCreateDevice` returned).
    pub fn create_device(&self) -> Result<Dev, vk::Result> {
        let priorities = [1.0];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(self.family)
            .queue_priorities(&priorities)];
        let mut v12 = vk::PhysicalDeviceVulkan12Features::default().timeline_semaphore(true);
        let mut v13 = vk::PhysicalDeviceVulkan13Features::default().synchronization2(true);
        let info = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .push_next(&mut v12)
            .push_next(&mut v13);
        // SAFETY: a valid physical device and create info.
        let device = unsafe { self.instance.create_device(self.physical, &info, None) }?;
        // SAFETY: the queue family and index were requested above.
        let queue = unsafe { device.get_device_queue(self.family, 0) };
        // SAFETY: a valid physical device.
        let memory = unsafe { self.instance.get_physical_device_memory_properties(self.physical) };
        let host_visible = (0..memory.memory_type_count)
            .find(|&i| {
                memory.memory_types[i as usize]
                    .property_flags
                    .contains(vk::MemoryPropertyFlags::HOST_VISIBLE)
            })
            .expect("a host-visible memory type");
        Ok(Dev { device, queue, host_visible })
    }

    /// Destroys the messenger and the instance.
    pub fn destroy(self) {
        // SAFETY: nothing created from them is alive any more.
        unsafe {
            self.debug_utils.destroy_debug_utils_messenger(self.messenger, None);
            self.instance.destroy_instance(None);
        }
    }
}

/// A device, its queue and a host-visible memory type.
pub struct Dev {
    pub device: ash::Device,
    pub queue: vk::Queue,
    pub host_visible: u32,
}

impl Dev {
    /// A timeline semaphore starting at 0.
    pub fn timeline(&self) -> vk::Semaphore {
        let mut kind = vk::SemaphoreTypeCreateInfo::default()
            .semaphore_type(vk::SemaphoreType::TIMELINE)
            .initial_value(0);
        let info = vk::SemaphoreCreateInfo::default().push_next(&mut kind);
        // SAFETY: a valid device and create info.
        unsafe { self.device.create_semaphore(&info, None) }.expect("timeline semaphore")
    }

    /// Submits batches without command buffers, batch `i` signalling `values[i]` on
    /// `semaphore`, in one `vkQueueSubmit`.
    pub fn signal(&self, semaphore: vk::Semaphore, values: &[u64]) -> Result<(), vk::Result> {
        let semaphores = [semaphore];
        let values: Vec<[u64; 1]> = values.iter().map(|&v| [v]).collect();
        let mut timeline: Vec<vk::TimelineSemaphoreSubmitInfo<'_>> = values
            .iter()
            .map(|v| vk::TimelineSemaphoreSubmitInfo::default().signal_semaphore_values(v))
            .collect();
        let submits: Vec<vk::SubmitInfo<'_>> = timeline
            .iter_mut()
            .map(|t| vk::SubmitInfo::default().signal_semaphores(&semaphores).push_next(t))
            .collect();
        // SAFETY: valid submits whose pointers outlive the call.
        unsafe { self.device.queue_submit(self.queue, &submits, vk::Fence::null()) }
    }

    /// Waits for `semaphore` to reach `value`, with a deadlock watchdog of 10 s.
    pub fn wait(&self, semaphore: vk::Semaphore, value: u64) -> Result<(), vk::Result> {
        let semaphores = [semaphore];
        let values = [value];
        let info = vk::SemaphoreWaitInfo::default().semaphores(&semaphores).values(&values);
        // SAFETY: a valid wait info.
        unsafe { self.device.wait_semaphores(&info, 10_000_000_000) }
    }

    /// The semaphore's counter value.
    pub fn counter(&self, semaphore: vk::Semaphore) -> Result<u64, vk::Result> {
        // SAFETY: a valid timeline semaphore.
        unsafe { self.device.get_semaphore_counter_value(semaphore) }
    }

    /// Allocates `size` bytes of host-visible memory.
    pub fn allocate(&self, size: u64) -> Result<vk::DeviceMemory, vk::Result> {
        let info = vk::MemoryAllocateInfo::default()
            .allocation_size(size)
            .memory_type_index(self.host_visible);
        // SAFETY: a valid allocate info.
        unsafe { self.device.allocate_memory(&info, None) }
    }

    /// Frees memory from [`Dev::allocate`].
    pub fn free(&self, memory: vk::DeviceMemory) {
        // SAFETY: memory of this device, no longer in use.
        unsafe { self.device.free_memory(memory, None) };
    }

    /// Destroys semaphores, then the device (after waiting for it to be idle through the
    /// layer, which must pass the wait through by then).
    pub fn destroy(self, semaphores: &[vk::Semaphore]) {
        // SAFETY: a valid device; the tests reset the layer before destroying.
        unsafe { self.device.device_wait_idle() }.expect("device idle at teardown");
        // SAFETY: idle device; the semaphores are its own and unused.
        unsafe {
            for &semaphore in semaphores {
                self.device.destroy_semaphore(semaphore, None);
            }
            self.device.destroy_device(None);
        }
    }
}

/// Asserts that validation reported nothing.
#[track_caller]
pub fn assert_no_validation_messages() {
    let messages = validation_messages();
    assert!(messages.is_empty(), "validation reported:\n{}", messages.join("\n"));
}
