//! The loader–layer interface (interface version 2 of the Vulkan loader's
//! `LoaderLayerInterface.md`): negotiation, `vkGetInstanceProcAddr` / `vkGetDeviceProcAddr`,
//! instance and device creation through the chain info, and the per-instance and per-device
//! dispatch data.
//!
//! Rules:
//! - the one exported layer symbol is `vkNegotiateLoaderLayerInterfaceVersion`; the loader
//!   gets every other entry point from it or from our proc-address functions (so a Rust
//!   program that links the rlib never exports a second `vkGetInstanceProcAddr`);
//! - dispatch data is keyed by the loader's dispatch pointer, the first word of every
//!   dispatchable handle: a physical device shares its instance's key, a queue (and a command
//!   buffer) its device's;
//! - `vkCreateInstance` / `vkCreateDevice` take the next layer's proc-address functions from
//!   the `VK_LAYER_LINK_INFO` chain element and advance its `pLayerInfo` before calling down;
//! - every command we do not intercept resolves to the next layer's pointer: the layer adds
//!   no cost to it;
//! - an intercepted command is returned only where the next layer returns one too (a device
//!   without `vkQueueSubmit2` still reports it missing);
//! - no lock is held while calling down the chain (waits may block for long).

mod commands;

use core::ffi::{c_char, CStr};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};

use ash::vk::{self, Handle};
use ash_layer::{
    LayerDeviceCreateInfo, LayerFunction, LayerInstanceCreateInfo, NegotiateLayerInterface,
    NegotiateLayerStructType,
};

use crate::call::FaultCall;
use crate::rules::{Decision, Rules};
use crate::spec::{parse_spec, FAULTS_ENV};

/// The loader–layer interface version this layer implements.
const INTERFACE_VERSION: u32 = 2;

/// The armed faults and counters of the whole process.
static RULES: Mutex<Rules> = Mutex::new(Rules::new());

/// Live instances by dispatch key.
static INSTANCES: Mutex<BTreeMap<usize, Arc<InstanceData>>> = Mutex::new(BTreeMap::new());

/// Live devices by dispatch key.
static DEVICES: Mutex<BTreeMap<usize, Arc<DeviceData>>> = Mutex::new(BTreeMap::new());

/// Locks `mutex`; a panic elsewhere never leaves these maps half-updated (each update is one
/// insert or remove), so a poisoned lock is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The process-wide rules, locked.
pub(crate) fn rules() -> MutexGuard<'static, Rules> {
    lock(&RULES)
}

/// What the layer keeps of one instance.
#[derive(Debug)]
struct InstanceData {
    /// The instance handle, to query the next layer with.
    handle: vk::Instance,
    /// The next layer's `vkGetInstanceProcAddr`.
    next_gipa: vk::PFN_vkGetInstanceProcAddr,
    /// The next layer's `vkDestroyInstance`.
    destroy: vk::PFN_vkDestroyInstance,
}

/// What the layer keeps of one device.
#[derive(Debug)]
pub(crate) struct DeviceData {
    /// Whether the device is lost (see [`crate::Fault::LoseDevice`]).
    lost: AtomicBool,
    /// The next layer's `vkGetDeviceProcAddr`.
    next_gdpa: vk::PFN_vkGetDeviceProcAddr,
    /// The next layer's intercepted commands.
    next: commands::NextFns,
}

impl DeviceData {
    /// Counts one call of `call` on this device and decides it; a [`Decision::Lose`] loses the
    /// device. `Some(code)`: return `code` without calling down.
    pub(crate) fn fault(&self, call: FaultCall) -> Option<vk::Result> {
        let decision = rules().decide(call, self.lost.load(Ordering::Acquire));
        match decision {
            Decision::PassThrough => None,
            Decision::Fail(code) => Some(code),
            Decision::Lose => {
                self.lost.store(true, Ordering::Release);
                Some(vk::Result::ERROR_DEVICE_LOST)
            }
        }
    }
}

/// The loader's dispatch pointer of a dispatchable handle.
///
/// # Safety
///
/// `handle` is a valid dispatchable handle created through the loader (its first word is the
/// loader's dispatch table pointer).
unsafe fn dispatch_key(handle: u64) -> usize {
    // SAFETY: the caller guarantees a valid dispatchable handle, which points to an object
    // whose first word is the loader's dispatch pointer.
    unsafe { *(handle as usize as *const usize) }
}

/// The data of the instance `handle` (or one of its physical devices) belongs to.
///
/// # Safety
///
/// `handle` is a valid dispatchable instance-level handle.
unsafe fn instance_data(handle: u64) -> Option<Arc<InstanceData>> {
    // SAFETY: forwarded from the caller.
    let key = unsafe { dispatch_key(handle) };
    lock(&INSTANCES).get(&key).cloned()
}

/// The data of the device `handle` (the device or one of its queues) belongs to.
///
/// # Safety
///
/// `handle` is a valid dispatchable device-level handle.
pub(crate) unsafe fn device_data(handle: u64) -> Option<Arc<DeviceData>> {
    // SAFETY: forwarded from the caller.
    let key = unsafe { dispatch_key(handle) };
    lock(&DEVICES).get(&key).cloned()
}

/// Live instances created through the layer.
pub(crate) fn live_instances() -> u64 {
    lock(&INSTANCES).len() as u64
}

/// Live devices created through the layer.
pub(crate) fn live_devices() -> u64 {
    lock(&DEVICES).len() as u64
}

/// Live devices that are lost.
pub(crate) fn lost_devices() -> u64 {
    lock(&DEVICES).values().filter(|d| d.lost.load(Ordering::Acquire)).count() as u64
}

/// Loses every live device; returns how many.
pub(crate) fn lose_devices() -> u64 {
    let devices = lock(&DEVICES);
    for device in devices.values() {
        device.lost.store(true, Ordering::Release);
    }
    devices.len() as u64
}

/// Disarms every command, zeroes the counters and makes every live device healthy again.
pub(crate) fn reset() {
    rules().reset();
    for device in lock(&DEVICES).values() {
        device.lost.store(false, Ordering::Release);
    }
}

/// Reinterprets a `PFN_vkVoidFunction` as the command's own pointer type.
///
/// # Safety
///
/// `F` is the `unsafe extern "system" fn` type of the command `pfn` was resolved for.
unsafe fn cast_pfn<F: Copy>(pfn: vk::PFN_vkVoidFunction) -> Option<F> {
    const { assert!(size_of::<F>() == size_of::<unsafe extern "system" fn()>()) };
    // SAFETY: `F` is a function pointer type of the same size (checked above), and the caller
    // guarantees it is the signature of the command resolved.
    pfn.map(|f| unsafe { core::mem::transmute_copy::<unsafe extern "system" fn(), F>(&f) })
}

/// Type-erases one of our entry points for a proc-address answer.
macro_rules! void_fn {
    ($f:expr, $ty:ty) => {{
        let f: $ty = $f;
        // SAFETY: a function pointer to function pointer transmute of equal size; the loader
        // casts it back to `$ty` (the command's type) before calling it.
        Some(unsafe { core::mem::transmute::<$ty, unsafe extern "system" fn()>(f) })
    }};
}
pub(crate) use void_fn;

/// Negotiates the loader–layer interface: version 2, our proc-address functions, no physical
/// device proc-address function.
///
/// # Safety
///
/// Called by the loader with a valid `VkNegotiateLayerInterface`.
#[no_mangle]
unsafe extern "system" fn vkNegotiateLoaderLayerInterfaceVersion(
    p_version_struct: *mut NegotiateLayerInterface,
) -> vk::Result {
    arm_from_env();
    // SAFETY: the loader passes a valid, writable struct or null (checked).
    let Some(interface) = (unsafe { p_version_struct.as_mut() }) else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    if interface.s_type != NegotiateLayerStructType::INTERFACE_STRUCT
        || interface.loader_layer_interface_version < INTERFACE_VERSION
    {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    }
    interface.loader_layer_interface_version = INTERFACE_VERSION;
    interface.pfn_get_instance_proc_addr = Some(get_instance_proc_addr);
    interface.pfn_get_device_proc_addr = Some(get_device_proc_addr);
    interface.pfn_get_physical_device_proc_addr = None;
    vk::Result::SUCCESS
}

/// Arms the faults of [`FAULTS_ENV`], once per load of the library (a bad specification is
/// reported on standard error and arms nothing).
fn arm_from_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Some(spec) = std::env::var_os(FAULTS_ENV) else {
            return;
        };
        let parsed = match spec.to_str() {
            Some(spec) => parse_spec(spec).map_err(|e| e.to_string()),
            None => Err("not UTF-8".to_owned()),
        };
        match parsed {
            Ok(entries) => {
                let mut rules = rules();
                for (call, trigger, fault) in entries {
                    rules.arm(call, trigger, fault);
                }
            }
            Err(error) => eprintln!("VK_LAYER_GPUSCHED_fault: {FAULTS_ENV} ignored: {error}"),
        }
    });
}

/// The instance-level commands the layer implements itself.
fn instance_intercept(name: &[u8]) -> vk::PFN_vkVoidFunction {
    match name {
        b"vkGetInstanceProcAddr" => void_fn!(get_instance_proc_addr, vk::PFN_vkGetInstanceProcAddr),
        b"vkGetDeviceProcAddr" => void_fn!(get_device_proc_addr, vk::PFN_vkGetDeviceProcAddr),
        b"vkCreateInstance" => void_fn!(create_instance, vk::PFN_vkCreateInstance),
        b"vkDestroyInstance" => void_fn!(destroy_instance, vk::PFN_vkDestroyInstance),
        b"vkCreateDevice" => void_fn!(create_device, vk::PFN_vkCreateDevice),
        _ => None,
    }
}

/// The layer's `vkGetInstanceProcAddr`.
unsafe extern "system" fn get_instance_proc_addr(
    instance: vk::Instance,
    p_name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    if p_name.is_null() {
        return None;
    }
    // SAFETY: the Vulkan API requires `p_name` to be a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(p_name) }.to_bytes();
    if let Some(ours) = instance_intercept(name) {
        return Some(ours);
    }
    if instance == vk::Instance::null() {
        return None;
    }
    // SAFETY: a non-null instance handed to vkGetInstanceProcAddr is valid.
    let data = unsafe { instance_data(instance.as_raw()) }?;
    // SAFETY: the next layer's vkGetInstanceProcAddr with the caller's valid arguments.
    let next = unsafe { (data.next_gipa)(instance, p_name) };
    match commands::device_intercept(name) {
        Some(ours) => next.and(Some(ours)),
        None => next,
    }
}

/// The layer's `vkGetDeviceProcAddr`.
unsafe extern "system" fn get_device_proc_addr(
    device: vk::Device,
    p_name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    if p_name.is_null() || device == vk::Device::null() {
        return None;
    }
    // SAFETY: the Vulkan API requires `p_name` to be a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(p_name) }.to_bytes();
    match name {
        b"vkGetDeviceProcAddr" => {
            return void_fn!(get_device_proc_addr, vk::PFN_vkGetDeviceProcAddr)
        }
        b"vkDestroyDevice" => return void_fn!(destroy_device, vk::PFN_vkDestroyDevice),
        _ => {}
    }
    // SAFETY: a non-null device handed to vkGetDeviceProcAddr is valid.
    let data = unsafe { device_data(device.as_raw()) }?;
    // SAFETY: the next layer's vkGetDeviceProcAddr with the caller's valid arguments.
    let next = unsafe { (data.next_gdpa)(device, p_name) };
    match commands::device_intercept(name) {
        Some(ours) => next.and(Some(ours)),
        None => next,
    }
}

/// The `VK_LAYER_LINK_INFO` element of a create-info chain of structure type `s_type`.
///
/// # Safety
///
/// `p_next` is a valid Vulkan structure chain (each element starts with `sType`, `pNext`).
unsafe fn find_link_info<T>(
    mut p_next: *const core::ffi::c_void,
    s_type: vk::StructureType,
) -> *mut T {
    while !p_next.is_null() {
        let base = p_next.cast::<vk::BaseInStructure<'_>>();
        // SAFETY: every chain element starts with a `VkBaseInStructure` header.
        let header = unsafe { &*base };
        if header.s_type == s_type {
            // The loader's create-info structures both start with sType, pNext, function.
            let candidate = p_next.cast::<LayerInstanceCreateInfo>();
            // SAFETY: an element of this sType is a loader create-info structure, whose
            // `function` field follows the header.
            let function = unsafe { (*candidate).function };
            if function == LayerFunction::LAYER_LINK_INFO {
                return p_next.cast_mut().cast();
            }
        }
        p_next = header.p_next.cast();
    }
    core::ptr::null_mut()
}

/// The layer's `vkCreateInstance`.
unsafe extern "system" fn create_instance(
    p_create_info: *const vk::InstanceCreateInfo,
    p_allocator: *const vk::AllocationCallbacks<'_>,
    p_instance: *mut vk::Instance,
) -> vk::Result {
    if let Decision::Fail(code) = rules().decide(FaultCall::CreateInstance, false) {
        return code;
    }
    // SAFETY: the loader passes a valid create info whose chain holds its link info.
    let link: *mut LayerInstanceCreateInfo = unsafe {
        find_link_info((*p_create_info).p_next, vk::StructureType::LOADER_INSTANCE_CREATE_INFO)
    };
    if link.is_null() {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    }
    // SAFETY: `link` is the loader's VK_LAYER_LINK_INFO element, whose union holds
    // `pLayerInfo`, our element of the layer list (valid while the call lasts).
    let Some(layer_info) = (unsafe { (*link).u.p_layer_info.as_ref() }) else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    let Some(next_gipa) = layer_info.pfn_next_get_instance_proc_addr else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // SAFETY: the next vkGetInstanceProcAddr answers vkCreateInstance for a null instance;
    // the pointer has vkCreateInstance's type.
    let next_create: Option<vk::PFN_vkCreateInstance> =
        unsafe { cast_pfn(next_gipa(vk::Instance::null(), c"vkCreateInstance".as_ptr())) };
    let Some(next_create) = next_create else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // SAFETY: advancing the link for the next layer, as the interface requires; the loader
    // owns the (mutable) element.
    unsafe { (*link).u.p_layer_info = layer_info.p_next };
    // SAFETY: the caller's valid arguments, passed down.
    let result = unsafe { next_create(p_create_info, p_allocator, p_instance) };
    if result != vk::Result::SUCCESS {
        return result;
    }
    // SAFETY: on success the next layer wrote a valid instance.
    let instance = unsafe { *p_instance };
    // SAFETY: vkDestroyInstance's type, resolved for the new instance.
    let destroy: Option<vk::PFN_vkDestroyInstance> =
        unsafe { cast_pfn(next_gipa(instance, c"vkDestroyInstance".as_ptr())) };
    let Some(destroy) = destroy else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    let data = Arc::new(InstanceData { handle: instance, next_gipa, destroy });
    // SAFETY: a valid instance created through the loader.
    let key = unsafe { dispatch_key(instance.as_raw()) };
    lock(&INSTANCES).insert(key, data);
    vk::Result::SUCCESS
}

/// The layer's `vkDestroyInstance`.
unsafe extern "system" fn destroy_instance(
    instance: vk::Instance,
    p_allocator: *const vk::AllocationCallbacks<'_>,
) {
    if instance == vk::Instance::null() {
        return;
    }
    // SAFETY: a non-null instance handed to vkDestroyInstance is valid.
    let key = unsafe { dispatch_key(instance.as_raw()) };
    let data = lock(&INSTANCES).remove(&key);
    if let Some(data) = data {
        // SAFETY: the next layer's vkDestroyInstance with the caller's valid arguments.
        unsafe { (data.destroy)(instance, p_allocator) };
    }
}

/// The layer's `vkCreateDevice`.
unsafe extern "system" fn create_device(
    physical_device: vk::PhysicalDevice,
    p_create_info: *const vk::DeviceCreateInfo<'_>,
    p_allocator: *const vk::AllocationCallbacks<'_>,
    p_device: *mut vk::Device,
) -> vk::Result {
    if let Decision::Fail(code) = rules().decide(FaultCall::CreateDevice, false) {
        return code;
    }
    // SAFETY: a valid physical device shares its instance's dispatch key.
    let Some(instance) = (unsafe { instance_data(physical_device.as_raw()) }) else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // SAFETY: the loader passes a valid create info whose chain holds its link info.
    let link: *mut LayerDeviceCreateInfo = unsafe {
        find_link_info((*p_create_info).p_next, vk::StructureType::LOADER_DEVICE_CREATE_INFO)
    };
    if link.is_null() {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    }
    // SAFETY: `link` is the loader's VK_LAYER_LINK_INFO element, whose union holds
    // `pLayerInfo`, our element of the layer list (valid while the call lasts).
    let Some(layer_info) = (unsafe { (*link).u.p_layer_info.as_ref() }) else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    let (Some(next_gipa), Some(next_gdpa)) =
        (layer_info.pfn_next_get_instance_proc_addr, layer_info.pfn_next_get_device_proc_addr)
    else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // SAFETY: vkCreateDevice's type, resolved for the device's instance.
    let next_create: Option<vk::PFN_vkCreateDevice> =
        unsafe { cast_pfn(next_gipa(instance.handle, c"vkCreateDevice".as_ptr())) };
    let Some(next_create) = next_create else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // SAFETY: advancing the link for the next layer, as the interface requires.
    unsafe { (*link).u.p_layer_info = layer_info.p_next };
    // SAFETY: the caller's valid arguments, passed down.
    let result = unsafe { next_create(physical_device, p_create_info, p_allocator, p_device) };
    if result != vk::Result::SUCCESS {
        return result;
    }
    // SAFETY: on success the next layer wrote a valid device.
    let device = unsafe { *p_device };
    // SAFETY: `next_gdpa` is the next layer's vkGetDeviceProcAddr and `device` is valid.
    let Some(next) = (unsafe { commands::NextFns::load(next_gdpa, device) }) else {
        // Without vkDestroyDevice the device cannot be kept (nor destroyed): the next layer
        // is broken.
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    let data = Arc::new(DeviceData { lost: AtomicBool::new(false), next_gdpa, next });
    // SAFETY: a valid device created through the loader (the loader set its dispatch pointer
    // before returning it up the chain).
    let key = unsafe { dispatch_key(device.as_raw()) };
    lock(&DEVICES).insert(key, data);
    vk::Result::SUCCESS
}

/// The layer's `vkDestroyDevice`.
unsafe extern "system" fn destroy_device(
    device: vk::Device,
    p_allocator: *const vk::AllocationCallbacks<'_>,
) {
    if device == vk::Device::null() {
        return;
    }
    // SAFETY: a non-null device handed to vkDestroyDevice is valid.
    let key = unsafe { dispatch_key(device.as_raw()) };
    let data = lock(&DEVICES).remove(&key);
    if let Some(data) = data {
        // SAFETY: the next layer's vkDestroyDevice with the caller's valid arguments.
        unsafe { (data.next.destroy_device)(device, p_allocator) };
    }
}
