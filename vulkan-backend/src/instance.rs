//! The Vulkan instance: the loader (`Entry::load`, at run time), the optional Khronos
//! validation layer, and a debug-utils messenger that counts validation errors.

use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ash::vk;

use crate::error::{map_init, InitError};
use crate::sync::lock;

static VALIDATION_ERRORS: AtomicU64 = AtomicU64::new(0);
static VALIDATION_WARNINGS: AtomicU64 = AtomicU64::new(0);

/// Validation messages of error severity reported so far in this process, by every device
/// created with validation on. Tests assert it stays 0.
pub fn validation_errors() -> u64 {
    VALIDATION_ERRORS.load(Ordering::Relaxed)
}

/// Validation messages of warning severity reported so far in this process.
pub fn validation_warnings() -> u64 {
    VALIDATION_WARNINGS.load(Ordering::Relaxed)
}

const VALIDATION_LAYER: &CStr = c"VK_LAYER_KHRONOS_validation";

/// The window-system instance extensions enabled when the loader offers them: presenting
/// needs `VK_KHR_surface` and the platform's (X11: xlib or xcb). Optional: an instance
/// without them works, and only surface creation fails.
const SURFACE_EXTENSIONS: [&CStr; 3] =
    [ash::khr::surface::NAME, ash::khr::xlib_surface::NAME, ash::khr::xcb_surface::NAME];

/// Counts and prints the messenger's messages. Only validation-type messages count as
/// validation errors or warnings: general-type ones are the loader's own reports (such as
/// "Failed to create device chain" when a driver or layer refuses `vkCreateDevice`, an error
/// the backend handles and returns), printed only.
unsafe extern "system" fn debug_callback(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    _user: *mut c_void,
) -> vk::Bool32 {
    // SAFETY: the loader passes a valid callback-data pointer (or null) for the duration of
    // the call; `p_message` is a NUL-terminated string when non-null.
    let msg = unsafe {
        match data.as_ref() {
            Some(d) if !d.p_message.is_null() => CStr::from_ptr(d.p_message).to_string_lossy(),
            _ => "(no message)".into(),
        }
    };
    if !types.intersects(
        vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
            | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
    ) {
        eprintln!("[vulkan loader {severity:?}] {msg}");
    } else if severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::ERROR) {
        VALIDATION_ERRORS.fetch_add(1, Ordering::Relaxed);
        eprintln!("[vulkan validation error] {msg}");
    } else if severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::WARNING) {
        VALIDATION_WARNINGS.fetch_add(1, Ordering::Relaxed);
        eprintln!("[vulkan validation warning] {msg}");
    }
    vk::FALSE
}

/// An instance with its loader and messenger; destroyed last (devices hold it).
pub(crate) struct InstanceShared {
    /// The loader (kept loaded while the instance lives; surfaces are made through it).
    pub(crate) entry: ash::Entry,
    pub(crate) instance: ash::Instance,
    debug: Option<(ash::ext::debug_utils::Instance, vk::DebugUtilsMessengerEXT)>,
    pub(crate) validation: bool,
    /// The window-system extensions enabled (`VK_KHR_surface` and the platform ones the
    /// loader offers, [`SURFACE_EXTENSIONS`]); empty on a loader without them (headless).
    pub(crate) surface_exts: Vec<&'static CStr>,
    /// Created here (destroyed with the last reference), or an engine's (never destroyed
    /// here: see [`InstanceShared::borrowed`]).
    owned: bool,
}

/// The process's instances, one without and one with validation, created on first use and
/// kept for the life of the process: every device shares one, and none is destroyed while a
/// thread of another device may still run inside the loader or the layer (a validation
/// layer may crash when instances come and go next to live devices).
static INSTANCES: Mutex<[Option<Arc<InstanceShared>>; 2]> = Mutex::new([None, None]);

impl InstanceShared {
    /// The shared instance with or without validation.
    pub(crate) fn get(validation: bool) -> Result<Arc<Self>, InitError> {
        let mut all = lock(&INSTANCES);
        let slot = &mut all[usize::from(validation)];
        if let Some(i) = slot {
            return Ok(i.clone());
        }
        let i = Arc::new(Self::new(validation)?);
        *slot = Some(i.clone());
        Ok(i)
    }

    fn new(validation: bool) -> Result<Self, InitError> {
        // SAFETY: loading the system loader runs its initialisers; we trust the installed
        // libvulkan as every Vulkan program does.
        let entry =
            unsafe { ash::Entry::load() }.map_err(|e| InitError::LoaderMissing(e.to_string()))?;
        if validation {
            // SAFETY: a plain enumeration call on a loaded entry.
            let layers = unsafe { entry.enumerate_instance_layer_properties() }
                .map_err(|c| map_init("vkEnumerateInstanceLayerProperties", c))?;
            let found =
                layers.iter().any(|l| l.layer_name_as_c_str().is_ok_and(|n| n == VALIDATION_LAYER));
            if !found {
                return Err(InitError::ValidationUnavailable);
            }
        }
        let app = vk::ApplicationInfo::default()
            .application_name(c"gpusched")
            .engine_name(c"gpusched")
            .api_version(vk::API_VERSION_1_3);
        let layers = [VALIDATION_LAYER.as_ptr()];
        // SAFETY: a plain enumeration call on a loaded entry.
        let offered = unsafe { entry.enumerate_instance_extension_properties(None) }
            .map_err(|c| map_init("vkEnumerateInstanceExtensionProperties", c))?;
        let has = |name: &CStr| {
            offered.iter().any(|e| e.extension_name_as_c_str().is_ok_and(|n| n == name))
        };
        let surface_exts: Vec<&'static CStr> = if has(SURFACE_EXTENSIONS[0]) {
            SURFACE_EXTENSIONS.into_iter().filter(|n| has(n)).collect()
        } else {
            Vec::new()
        };
        let mut exts: Vec<*const std::ffi::c_char> =
            surface_exts.iter().map(|n| n.as_ptr()).collect();
        let mut info = vk::InstanceCreateInfo::default().application_info(&app);
        if validation {
            exts.push(ash::ext::debug_utils::NAME.as_ptr());
            info = info.enabled_layer_names(&layers);
        }
        info = info.enabled_extension_names(&exts);
        // SAFETY: `info` and everything it points to live across the call.
        let instance = unsafe { entry.create_instance(&info, None) }
            .map_err(|c| map_init("vkCreateInstance", c))?;
        let debug = if validation {
            let du = ash::ext::debug_utils::Instance::new(&entry, &instance);
            let ci = vk::DebugUtilsMessengerCreateInfoEXT::default()
                .message_severity(
                    vk::DebugUtilsMessageSeverityFlagsEXT::ERROR
                        | vk::DebugUtilsMessageSeverityFlagsEXT::WARNING,
                )
                .message_type(
                    vk::DebugUtilsMessageTypeFlagsEXT::GENERAL
                        | vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                        | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
                )
                .pfn_user_callback(Some(debug_callback));
            // SAFETY: the instance was created with VK_EXT_debug_utils; `ci` lives across the
            // call and the callback is a `'static` function.
            match unsafe { du.create_debug_utils_messenger(&ci, None) } {
                Ok(m) => Some((du, m)),
                Err(c) => {
                    // SAFETY: nothing was created from the instance yet.
                    unsafe { instance.destroy_instance(None) };
                    return Err(map_init("vkCreateDebugUtilsMessengerEXT", c));
                }
            }
        } else {
            None
        };
        Ok(InstanceShared { entry, instance, debug, validation, surface_exts, owned: true })
    }

    /// An engine's instance and loader (an adopted device's, `device/adopt.rs`): used, never
    /// destroyed here. `validation` is whatever the engine says it enabled.
    pub(crate) fn borrowed(entry: ash::Entry, instance: ash::Instance, validation: bool) -> Self {
        // An engine's instance: its surfaces are the engine's business.
        let surface_exts = Vec::new();
        InstanceShared { entry, instance, debug: None, validation, surface_exts, owned: false }
    }
}

impl Drop for InstanceShared {
    fn drop(&mut self) {
        // SAFETY: every device of this instance holds an `Arc` to it, so all are destroyed;
        // the messenger belongs to this instance and is destroyed before it. A borrowed
        // instance has no messenger and is left to its engine.
        unsafe {
            if let Some((du, m)) = self.debug.take() {
                du.destroy_debug_utils_messenger(m, None);
            }
            if self.owned {
                self.instance.destroy_instance(None);
            }
        }
    }
}
