//! The intercepted device-level commands.
//!
//! Rules:
//! - each command first asks [`DeviceData::fault`]; a fault returns its code without calling
//!   down the chain: a failed `vkQueueSubmit` / `vkQueueSubmit2` submits none of its batches,
//!   a failed wait returns at once, a failed creation creates nothing;
//! - except `vkDeviceWaitIdle` / `vkQueueWaitIdle` returning `VK_ERROR_DEVICE_LOST`: they
//!   first wait (down the chain) for the work already submitted, then report the loss. A
//!   really lost device runs nothing more, and the specification lets the application destroy
//!   every object once a wait-idle has reported the loss; the driver under the layer still
//!   runs the submitted work, so destroying its objects before it ends would be a
//!   use-after-free there. The wait lasts as long as that work (a GPU-side wait nobody
//!   signals keeps it waiting);
//! - a failed `vkAllocateCommandBuffers` sets every output handle to null (the specification
//!   requires it of a failed call);
//! - an alias (`vkWaitSemaphoresKHR`, `vkGetSemaphoreCounterValueKHR`, `vkQueueSubmit2KHR`)
//!   is the same command, counted and armed as its core name.

use ash::vk::{self, Handle};

use super::{cast_pfn, device_data, void_fn, DeviceData};
use crate::call::FaultCall;

/// The next layer's pointers for the commands we intercept (`None`: the device does not have
/// the command).
#[derive(Debug)]
pub(super) struct NextFns {
    /// `vkDestroyDevice` (every device has it).
    pub(super) destroy_device: vk::PFN_vkDestroyDevice,
    queue_submit: Option<vk::PFN_vkQueueSubmit>,
    queue_submit2: Option<vk::PFN_vkQueueSubmit2>,
    wait_semaphores: Option<vk::PFN_vkWaitSemaphores>,
    get_semaphore_counter_value: Option<vk::PFN_vkGetSemaphoreCounterValue>,
    allocate_memory: Option<vk::PFN_vkAllocateMemory>,
    create_buffer: Option<vk::PFN_vkCreateBuffer>,
    map_memory: Option<vk::PFN_vkMapMemory>,
    device_wait_idle: Option<vk::PFN_vkDeviceWaitIdle>,
    queue_wait_idle: Option<vk::PFN_vkQueueWaitIdle>,
    allocate_command_buffers: Option<vk::PFN_vkAllocateCommandBuffers>,
    create_semaphore: Option<vk::PFN_vkCreateSemaphore>,
    get_fence_status: Option<vk::PFN_vkGetFenceStatus>,
    wait_for_fences: Option<vk::PFN_vkWaitForFences>,
}

impl NextFns {
    /// Resolves every intercepted command through the next layer (core name first, then the
    /// extension alias). `None` when the next layer has no `vkDestroyDevice`.
    ///
    /// # Safety
    ///
    /// `next_gdpa` is the next layer's `vkGetDeviceProcAddr` and `device` a valid device.
    pub(super) unsafe fn load(
        next_gdpa: vk::PFN_vkGetDeviceProcAddr,
        device: vk::Device,
    ) -> Option<Self> {
        macro_rules! load {
            ($($name:literal),+) => {{
                let mut pfn = None;
                $(
                    if pfn.is_none() {
                        // SAFETY: the caller guarantees a valid next vkGetDeviceProcAddr and
                        // device; the field's type is the command's (its names are aliases).
                        pfn = unsafe { cast_pfn(next_gdpa(device, $name.as_ptr())) };
                    }
                )+
                pfn
            }};
        }
        Some(Self {
            destroy_device: load!(c"vkDestroyDevice")?,
            queue_submit: load!(c"vkQueueSubmit"),
            queue_submit2: load!(c"vkQueueSubmit2", c"vkQueueSubmit2KHR"),
            wait_semaphores: load!(c"vkWaitSemaphores", c"vkWaitSemaphoresKHR"),
            get_semaphore_counter_value: load!(
                c"vkGetSemaphoreCounterValue",
                c"vkGetSemaphoreCounterValueKHR"
            ),
            allocate_memory: load!(c"vkAllocateMemory"),
            create_buffer: load!(c"vkCreateBuffer"),
            map_memory: load!(c"vkMapMemory"),
            device_wait_idle: load!(c"vkDeviceWaitIdle"),
            queue_wait_idle: load!(c"vkQueueWaitIdle"),
            allocate_command_buffers: load!(c"vkAllocateCommandBuffers"),
            create_semaphore: load!(c"vkCreateSemaphore"),
            get_fence_status: load!(c"vkGetFenceStatus"),
            wait_for_fences: load!(c"vkWaitForFences"),
        })
    }
}

/// Our entry point for an intercepted device-level command name.
pub(super) fn device_intercept(name: &[u8]) -> vk::PFN_vkVoidFunction {
    match name {
        b"vkQueueSubmit" => void_fn!(queue_submit, vk::PFN_vkQueueSubmit),
        b"vkQueueSubmit2" | b"vkQueueSubmit2KHR" => {
            void_fn!(queue_submit2, vk::PFN_vkQueueSubmit2)
        }
        b"vkWaitSemaphores" | b"vkWaitSemaphoresKHR" => {
            void_fn!(wait_semaphores, vk::PFN_vkWaitSemaphores)
        }
        b"vkGetSemaphoreCounterValue" | b"vkGetSemaphoreCounterValueKHR" => {
            void_fn!(get_semaphore_counter_value, vk::PFN_vkGetSemaphoreCounterValue)
        }
        b"vkAllocateMemory" => void_fn!(allocate_memory, vk::PFN_vkAllocateMemory),
        b"vkCreateBuffer" => void_fn!(create_buffer, vk::PFN_vkCreateBuffer),
        b"vkMapMemory" => void_fn!(map_memory, vk::PFN_vkMapMemory),
        b"vkDeviceWaitIdle" => void_fn!(device_wait_idle, vk::PFN_vkDeviceWaitIdle),
        b"vkQueueWaitIdle" => void_fn!(queue_wait_idle, vk::PFN_vkQueueWaitIdle),
        b"vkAllocateCommandBuffers" => {
            void_fn!(allocate_command_buffers, vk::PFN_vkAllocateCommandBuffers)
        }
        b"vkCreateSemaphore" => void_fn!(create_semaphore, vk::PFN_vkCreateSemaphore),
        b"vkGetFenceStatus" => void_fn!(get_fence_status, vk::PFN_vkGetFenceStatus),
        b"vkWaitForFences" => void_fn!(wait_for_fences, vk::PFN_vkWaitForFences),
        _ => None,
    }
}

/// The device data and next pointer of a call, or the code to return at once (the fault, or
/// the command's first error code where the device is unknown to the layer, which the loader
/// rules out: it resolves our pointer only for devices created through us).
///
/// # Safety
///
/// `handle` is a valid device or queue handle.
unsafe fn enter<F: Copy>(
    handle: u64,
    call: FaultCall,
    next: impl FnOnce(&NextFns) -> Option<F>,
) -> Result<(std::sync::Arc<DeviceData>, F), vk::Result> {
    // SAFETY: forwarded from the caller.
    let device = unsafe { device_data(handle) };
    let Some((device, next)) = device.and_then(|d| next(&d.next).map(|f| (d, f))) else {
        return Err(call.error_codes()[0]);
    };
    match device.fault(call) {
        Some(code) => Err(code),
        None => Ok((device, next)),
    }
}

/// Defines an intercepted command that returns a `VkResult`: the fault check, then the next
/// layer's command with the same arguments.
macro_rules! intercept {
    ($(#[$doc:meta])* $name:ident, $call:ident, $field:ident,
     $handle:ident: $handle_ty:ty $(, $arg:ident: $arg_ty:ty)*) => {
        $(#[$doc])*
        unsafe extern "system" fn $name($handle: $handle_ty $(, $arg: $arg_ty)*) -> vk::Result {
            // SAFETY: the loader calls us with the command's valid arguments, so the handle is
            // a valid dispatchable handle.
            let entered = unsafe { enter($handle.as_raw(), FaultCall::$call, |n| n.$field) };
            match entered {
                // SAFETY: the next layer's command with the caller's valid arguments.
                Ok((_device, next)) => unsafe { next($handle $(, $arg)*) },
                Err(code) => code,
            }
        }
    };
}

intercept!(
    /// `vkQueueSubmit`.
    queue_submit, QueueSubmit, queue_submit,
    queue: vk::Queue, submit_count: u32, p_submits: *const vk::SubmitInfo<'_>, fence: vk::Fence
);
intercept!(
    /// `vkQueueSubmit2` / `vkQueueSubmit2KHR`.
    queue_submit2, QueueSubmit2, queue_submit2,
    queue: vk::Queue, submit_count: u32, p_submits: *const vk::SubmitInfo2<'_>, fence: vk::Fence
);
intercept!(
    /// `vkWaitSemaphores` / `vkWaitSemaphoresKHR`.
    wait_semaphores, WaitSemaphores, wait_semaphores,
    device: vk::Device, p_wait_info: *const vk::SemaphoreWaitInfo<'_>, timeout: u64
);
intercept!(
    /// `vkGetSemaphoreCounterValue` / `vkGetSemaphoreCounterValueKHR`.
    get_semaphore_counter_value, GetSemaphoreCounterValue, get_semaphore_counter_value,
    device: vk::Device, semaphore: vk::Semaphore, p_value: *mut u64
);
intercept!(
    /// `vkAllocateMemory`.
    allocate_memory, AllocateMemory, allocate_memory,
    device: vk::Device, p_allocate_info: *const vk::MemoryAllocateInfo<'_>,
    p_allocator: *const vk::AllocationCallbacks<'_>, p_memory: *mut vk::DeviceMemory
);
intercept!(
    /// `vkCreateBuffer`.
    create_buffer, CreateBuffer, create_buffer,
    device: vk::Device, p_create_info: *const vk::BufferCreateInfo<'_>,
    p_allocator: *const vk::AllocationCallbacks<'_>, p_buffer: *mut vk::Buffer
);
intercept!(
    /// `vkMapMemory`.
    map_memory, MapMemory, map_memory,
    device: vk::Device, memory: vk::DeviceMemory, offset: vk::DeviceSize, size: vk::DeviceSize,
    flags: vk::MemoryMapFlags, pp_data: *mut *mut core::ffi::c_void
);
/// Defines a wait-idle command: the fault check, then the next layer's command; when it
/// reports `VK_ERROR_DEVICE_LOST` it first waits for the work already submitted (see the
/// module rules).
macro_rules! intercept_wait_idle {
    ($(#[$doc:meta])* $name:ident, $call:ident, $field:ident, $handle:ident: $handle_ty:ty) => {
        $(#[$doc])*
        unsafe extern "system" fn $name($handle: $handle_ty) -> vk::Result {
            // SAFETY: the loader calls us with a valid dispatchable handle.
            let device = unsafe { device_data($handle.as_raw()) };
            let Some((device, next)) = device.and_then(|d| d.next.$field.map(|f| (d, f))) else {
                return FaultCall::$call.error_codes()[0];
            };
            match device.fault(FaultCall::$call) {
                None => {
                    // SAFETY: the next layer's command with the caller's valid handle.
                    unsafe { next($handle) }
                }
                Some(vk::Result::ERROR_DEVICE_LOST) => {
                    // SAFETY: as above; its result is replaced by the loss.
                    let _ = unsafe { next($handle) };
                    vk::Result::ERROR_DEVICE_LOST
                }
                Some(code) => code,
            }
        }
    };
}

intercept_wait_idle!(
    /// `vkDeviceWaitIdle`.
    device_wait_idle, DeviceWaitIdle, device_wait_idle, device: vk::Device
);
intercept_wait_idle!(
    /// `vkQueueWaitIdle`.
    queue_wait_idle, QueueWaitIdle, queue_wait_idle, queue: vk::Queue
);
intercept!(
    /// `vkCreateSemaphore`.
    create_semaphore, CreateSemaphore, create_semaphore,
    device: vk::Device, p_create_info: *const vk::SemaphoreCreateInfo<'_>,
    p_allocator: *const vk::AllocationCallbacks<'_>, p_semaphore: *mut vk::Semaphore
);
intercept!(
    /// `vkGetFenceStatus`.
    get_fence_status, GetFenceStatus, get_fence_status, device: vk::Device, fence: vk::Fence
);
intercept!(
    /// `vkWaitForFences`.
    wait_for_fences, WaitForFences, wait_for_fences,
    device: vk::Device, fence_count: u32, p_fences: *const vk::Fence, wait_all: vk::Bool32,
    timeout: u64
);

/// `vkAllocateCommandBuffers`: a failed call nulls every output handle.
unsafe extern "system" fn allocate_command_buffers(
    device: vk::Device,
    p_allocate_info: *const vk::CommandBufferAllocateInfo<'_>,
    p_command_buffers: *mut vk::CommandBuffer,
) -> vk::Result {
    // SAFETY: the loader calls us with a valid device.
    let entered = unsafe {
        enter(device.as_raw(), FaultCall::AllocateCommandBuffers, |n| n.allocate_command_buffers)
    };
    match entered {
        // SAFETY: the next layer's command with the caller's valid arguments.
        Ok((_device, next)) => unsafe { next(device, p_allocate_info, p_command_buffers) },
        Err(code) => {
            // SAFETY: the caller passes a valid allocate info and an output array of
            // `commandBufferCount` handles.
            unsafe {
                let count = (*p_allocate_info).command_buffer_count as usize;
                for i in 0..count {
                    p_command_buffers.add(i).write(vk::CommandBuffer::null());
                }
            }
            code
        }
    }
}
