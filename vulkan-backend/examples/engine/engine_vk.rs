//! The engine's own Vulkan code, written with `ash` as any engine has it: an instance whose
//! messenger counts validation errors, and buffers of its own that take part in gpusched's
//! implicit synchronisation ([`EngineBuffer`], a [`GpuResource`]).
//!
//! The adoption and engine tests of `gpusched-vulkan` include this file too
//! (`#[path = ...] mod engine_vk;`), so that the example and the tests exercise one engine.

use std::error::Error;
use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gpusched::resv::Resv;
use gpusched_vulkan::ash::{self, vk};
use gpusched_vulkan::{GenerationId, GpuResource};

/// The error of the engine's own calls.
pub(crate) type Res<T> = Result<T, Box<dyn Error>>;

/// The engine's debug messenger.
pub(crate) type Messenger = (ash::ext::debug_utils::Instance, vk::DebugUtilsMessengerEXT);

static VALIDATION_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Validation errors the engine's messenger saw (its instance: every call on its devices,
/// gpusched's included).
pub(crate) fn validation_errors() -> u64 {
    VALIDATION_ERRORS.load(Ordering::SeqCst)
}

unsafe extern "system" fn on_message(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    _types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    _user: *mut c_void,
) -> vk::Bool32 {
    if severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::ERROR) {
        VALIDATION_ERRORS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the loader passes valid callback data for the duration of the call.
        let msg = unsafe {
            data.as_ref()
                .filter(|d| !d.p_message.is_null())
                .map(|d| CStr::from_ptr(d.p_message).to_string_lossy().into_owned())
        };
        eprintln!("[engine validation error] {}", msg.unwrap_or_default());
    }
    vk::FALSE
}

/// A Vulkan 1.3 instance named `app`; with `validation`, the Khronos validation layer on and
/// a messenger counting its errors ([`validation_errors`]).
pub(crate) fn create_instance(
    entry: &ash::Entry,
    app: &CStr,
    validation: bool,
) -> Res<(ash::Instance, Option<Messenger>)> {
    let app = vk::ApplicationInfo::default().application_name(app).api_version(vk::API_VERSION_1_3);
    let layers = [c"VK_LAYER_KHRONOS_validation".as_ptr()];
    let exts = [ash::ext::debug_utils::NAME.as_ptr()];
    let mut info = vk::InstanceCreateInfo::default().application_info(&app);
    if validation {
        info = info.enabled_layer_names(&layers).enabled_extension_names(&exts);
    }
    // SAFETY: `info` lives across the call.
    let instance = unsafe { entry.create_instance(&info, None) }?;
    if !validation {
        return Ok((instance, None));
    }
    let du = ash::ext::debug_utils::Instance::new(entry, &instance);
    let ci = vk::DebugUtilsMessengerCreateInfoEXT::default()
        .message_severity(vk::DebugUtilsMessageSeverityFlagsEXT::ERROR)
        .message_type(
            vk::DebugUtilsMessageTypeFlagsEXT::GENERAL
                | vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION,
        )
        .pfn_user_callback(Some(on_message));
    // SAFETY: debug utils is enabled; the callback is a 'static function.
    match unsafe { du.create_debug_utils_messenger(&ci, None) } {
        Ok(m) => Ok((instance, Some((du, m)))),
        Err(e) => {
            // SAFETY: nothing was created on the instance.
            unsafe { instance.destroy_instance(None) };
            Err(e.into())
        }
    }
}

/// Destroys the messenger, then the instance.
///
/// # Safety
/// Every device and object of `instance` is gone, and the instance is not used again.
pub(crate) unsafe fn destroy_instance(instance: &ash::Instance, messenger: Option<Messenger>) {
    // SAFETY: the caller's contract.
    unsafe {
        if let Some((du, m)) = messenger {
            du.destroy_debug_utils_messenger(m, None);
        }
        instance.destroy_instance(None);
    }
}

/// A `VkBuffer` of the engine's own with its memory bound, destroyed (memory freed) on drop.
pub(crate) struct RawBuffer {
    device: ash::Device,
    /// The Vulkan buffer.
    pub(crate) buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// The address of the whole memory's persistent mapping, if mapped at creation.
    mapped: Option<usize>,
    /// Runs once the buffer and its memory are destroyed.
    on_destroy: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl RawBuffer {
    /// A buffer of `size` bytes with `usage`, bound to memory of the type `pick` chooses
    /// among the types the buffer accepts (a bit mask), and mapped if `map`.
    pub(crate) fn new(
        device: &ash::Device,
        size: u64,
        usage: vk::BufferUsageFlags,
        pick: impl FnOnce(u32) -> Option<u32>,
        map: bool,
    ) -> Res<RawBuffer> {
        let d = device;
        let info = vk::BufferCreateInfo::default().size(size).usage(usage);
        // SAFETY: the engine's device and a valid create info.
        let buffer = unsafe { d.create_buffer(&info, None) }?;
        let mut raw = RawBuffer {
            device: d.clone(),
            buffer,
            memory: vk::DeviceMemory::null(),
            size,
            mapped: None,
            on_destroy: None,
        };
        // SAFETY: just created.
        let req = unsafe { d.get_buffer_memory_requirements(buffer) };
        let type_index = pick(req.memory_type_bits).ok_or("no suitable memory type")?;
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(req.size)
            .memory_type_index(type_index);
        // SAFETY: a memory type the buffer accepts; freed by `raw`'s drop.
        raw.memory = unsafe { d.allocate_memory(&alloc, None) }?;
        // SAFETY: fresh buffer and memory.
        unsafe { d.bind_buffer_memory(buffer, raw.memory, 0) }?;
        if map {
            // SAFETY: host-visible memory (the caller's `pick`), not mapped yet.
            let ptr = unsafe { d.map_memory(raw.memory, 0, size, vk::MemoryMapFlags::empty()) }?;
            raw.mapped = Some(ptr as usize);
        }
        Ok(raw)
    }

    /// Runs `f` once the buffer and its memory are destroyed.
    // The tests that include this file watch their buffers' destruction; the example does not.
    #[allow(dead_code)]
    pub(crate) fn on_destroy(mut self, f: impl FnOnce() + Send + Sync + 'static) -> RawBuffer {
        self.on_destroy = Some(Box::new(f));
        self
    }

    /// The first float of a mapped buffer, or `None` if it is not mapped. The caller waited
    /// for the jobs that write it.
    pub(crate) fn first_f32(&self) -> Option<f32> {
        // SAFETY: a mapping of the whole buffer (at least 4 bytes: checked), alive while
        // `self` is, coherent (the caller's `pick`); no job writes it now (the caller waited).
        self.mapped
            .filter(|_| self.size >= 4)
            .map(|p| unsafe { std::ptr::read_volatile(p as *const f32) })
    }
}

impl Drop for RawBuffer {
    fn drop(&mut self) {
        // SAFETY: the last handle: gpusched keeps an `EngineBuffer` alive until the hardware
        // passed every job declaring it; freeing mapped memory unmaps it.
        unsafe {
            self.device.destroy_buffer(self.buffer, None);
            self.device.free_memory(self.memory, None);
        }
        if let Some(f) = self.on_destroy.take() {
            f();
        }
    }
}

/// The engine's own buffer, taking part in gpusched's implicit synchronisation: a cheap
/// handle (jobs keep a clone until the hardware has passed them) with a [`Resv`] and the
/// device generation it was made on.
#[derive(Clone)]
pub(crate) struct EngineBuffer(Arc<EngineBufferInner>);

struct EngineBufferInner {
    raw: RawBuffer,
    resv: Resv,
    owner: GenerationId,
}

impl EngineBuffer {
    /// `raw`, made on generation `owner` of the device gpusched uses.
    pub(crate) fn new(raw: RawBuffer, owner: GenerationId) -> EngineBuffer {
        EngineBuffer(Arc::new(EngineBufferInner { raw, resv: Resv::new(), owner }))
    }

    /// The Vulkan buffer.
    pub(crate) fn raw(&self) -> &RawBuffer {
        &self.0.raw
    }
}

impl GpuResource for EngineBuffer {
    fn resv(&self) -> &Resv {
        &self.0.resv
    }
    fn owner(&self) -> GenerationId {
        self.0.owner
    }
    fn keep_alive(&self) -> Arc<dyn GpuResource> {
        Arc::new(self.clone())
    }
}
