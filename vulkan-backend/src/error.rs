//! Errors, one type per operation family, and one mapping function per class of `vk::Result`
//! (the wgpu-hal habit): each function lists the codes it maps and sends the rest to a
//! catch-all variant that keeps the code.

use ash::vk;
use gpusched::fence::{errno, FenceError, WaitError};
use gpusched::resv::WwError;
use gpusched::SchedError;

use crate::device::QueueCaps;

/// Why a [`VulkanDevice`](crate::VulkanDevice) could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// The Vulkan loader (`libvulkan.so.1`) could not be loaded.
    #[error("vulkan is not available: cannot load the loader ({0}); install libvulkan1 and a driver (mesa-vulkan-drivers)")]
    LoaderMissing(String),
    /// The loader works but no physical device is usable.
    #[error("no vulkan device qualifies: {0}")]
    NoDevice(String),
    /// The selected device lacks timeline semaphores (Vulkan 1.2).
    #[error(
        "device {0} does not support timeline semaphores (vulkan 1.2 feature timelineSemaphore)"
    )]
    NoTimelineSemaphores(String),
    /// `GPUSCHED_DEVICE` (or the selector) names no device.
    #[error("device selector {selector:?} matches no device (available: {available})")]
    SelectorMismatch {
        /// The selector as given.
        selector: String,
        /// The devices found, `index: name` separated by commas.
        available: String,
    },
    /// Validation was requested but the Khronos validation layer is not installed.
    #[error("the khronos validation layer is not installed (package vulkan-validationlayers)")]
    ValidationUnavailable,
    /// The instance or device could not be created (out of memory, driver failure ...).
    #[error("{op} failed: {code}")]
    Vk {
        /// The Vulkan call.
        op: &'static str,
        /// Its result.
        code: vk::Result,
    },
}

impl InitError {
    /// Whether Vulkan itself is missing (no loader).
    pub fn is_loader_missing(&self) -> bool {
        matches!(self, InitError::LoaderMissing(_))
    }

    /// Whether no usable device was found (including a selector that matched nothing).
    pub fn is_no_device(&self) -> bool {
        matches!(self, InitError::NoDevice(_) | InitError::SelectorMismatch { .. })
    }

    /// Whether the device lacks timeline semaphores.
    pub fn is_no_timeline_semaphores(&self) -> bool {
        matches!(self, InitError::NoTimelineSemaphores(_))
    }
}

/// Maps the results of instance and device creation (`vkCreateInstance`, `vkCreateDevice`,
/// `vkEnumeratePhysicalDevices`): `ERROR_INCOMPATIBLE_DRIVER` means no usable driver
/// ([`InitError::NoDevice`]); `ERROR_LAYER_NOT_PRESENT` is [`InitError::ValidationUnavailable`];
/// everything else (out of memory, initialization failed, missing extension or feature) is
/// [`InitError::Vk`] with the code.
pub(crate) fn map_init(op: &'static str, code: vk::Result) -> InitError {
    match code {
        vk::Result::ERROR_INCOMPATIBLE_DRIVER => InitError::NoDevice(format!(
            "{op}: no compatible vulkan driver (ERROR_INCOMPATIBLE_DRIVER)"
        )),
        vk::Result::ERROR_LAYER_NOT_PRESENT => InitError::ValidationUnavailable,
        code => InitError::Vk { op, code },
    }
}

/// Runtime failures of a device: object creation, submission, waits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// Host or device memory ran out.
    #[error("{op}: out of memory ({code})")]
    OutOfMemory {
        /// The Vulkan call.
        op: &'static str,
        /// `ERROR_OUT_OF_HOST_MEMORY` or `ERROR_OUT_OF_DEVICE_MEMORY`.
        code: vk::Result,
    },
    /// The device was lost.
    #[error("{op}: device lost")]
    DeviceLost {
        /// The Vulkan call.
        op: &'static str,
    },
    /// The device was lost and re-creating it failed every time it was tried (or could not
    /// be tried: an adopted device without a re-creation callback): it is gone for good.
    /// Every fence it handed out has signalled (`DeviceLost`); make a new device.
    #[error("the device is gone for good after a loss: {attempts} re-creation attempts failed (last: {last})")]
    Gone {
        /// How many re-creations were tried (0: none could be).
        attempts: u32,
        /// The last re-creation's error.
        last: String,
    },
    /// A device has room for a fixed number of rings ([`MAX_RINGS`](crate::MAX_RINGS), each
    /// with its own completion thread).
    #[error("a device holds at most {0} rings")]
    TooManyRings(usize),
    /// The queue index does not exist in the queue family asked for.
    #[error("queue index {index} out of range: the family has {count} queues")]
    NoSuchQueue {
        /// The index asked for.
        index: u32,
        /// The queues of the family.
        count: u32,
    },
    /// The queue family is not one the device created queues on (see
    /// [`VulkanDevice::queue_families`](crate::VulkanDevice::queue_families)).
    #[error("queue family {family} has no queues on this device")]
    NoSuchFamily {
        /// The family index asked for.
        family: u32,
    },
    /// A ring's queue family cannot run the work asked of it
    /// ([`VulkanDevice::entity`](crate::VulkanDevice::entity)).
    #[error("ring {ring:?} is on queue family {family} ({has}), which cannot run {needs} work")]
    RingLacksCaps {
        /// The ring's (scheduler's) name.
        ring: String,
        /// Its queue family.
        family: u32,
        /// What the family can run.
        has: QueueCaps,
        /// What the work needs.
        needs: QueueCaps,
    },
    /// The scheduler refused the ring's configuration.
    #[error("invalid ring configuration: {0}")]
    Config(#[from] SchedError),
    /// Another failure.
    #[error("{op} failed: {code}")]
    Vk {
        /// The Vulkan call.
        op: &'static str,
        /// Its result.
        code: vk::Result,
    },
}

impl DeviceError {
    /// Whether the device was lost (including for good: [`DeviceError::is_gone`]).
    pub fn is_device_lost(&self) -> bool {
        matches!(self, DeviceError::DeviceLost { .. } | DeviceError::Gone { .. })
    }

    /// Whether the device is gone for good (re-creation failed).
    pub fn is_gone(&self) -> bool {
        matches!(self, DeviceError::Gone { .. })
    }

    /// Whether memory ran out.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, DeviceError::OutOfMemory { .. })
    }

    /// The fence error a job failing this way signals.
    pub fn fence_error(&self) -> FenceError {
        match self {
            DeviceError::DeviceLost { .. } | DeviceError::Gone { .. } => FenceError::DeviceLost,
            DeviceError::OutOfMemory { .. } => FenceError::Driver(errno::ENOMEM),
            _ => FenceError::Driver(errno::EIO),
        }
    }
}

/// Maps the results of runtime device calls (object creation, `vkQueueSubmit`,
/// `vkWaitSemaphores`, `vkGetSemaphoreCounterValue`, `vkSignalSemaphore`,
/// `vkQueueWaitIdle`): `ERROR_OUT_OF_HOST_MEMORY` / `ERROR_OUT_OF_DEVICE_MEMORY` →
/// [`DeviceError::OutOfMemory`], `ERROR_DEVICE_LOST` → [`DeviceError::DeviceLost`], the rest
/// → [`DeviceError::Vk`]. (Waits match `TIMEOUT` themselves before calling this.)
///
/// Outcome rule: wherever a call of this class reports `ERROR_DEVICE_LOST`, the caller
/// declares the generation lost (`DeviceCore::mark_lost`: every unfinished fence of the
/// generation signals `DeviceLost`, the recovery thread creates the next one), exactly as an
/// injected loss does; out-of-memory fails only the operation (a submission's jobs end
/// `-ENOMEM`, see [`DeviceError::fence_error`]).
pub(crate) fn map_device(op: &'static str, code: vk::Result) -> DeviceError {
    match code {
        vk::Result::ERROR_OUT_OF_HOST_MEMORY | vk::Result::ERROR_OUT_OF_DEVICE_MEMORY => {
            DeviceError::OutOfMemory { op, code }
        }
        vk::Result::ERROR_DEVICE_LOST => DeviceError::DeviceLost { op },
        code => DeviceError::Vk { op, code },
    }
}

/// Why a [`Buffer`](crate::Buffer) could not be created.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BufferError {
    /// A buffer needs at least one byte.
    #[error("a buffer needs at least one byte")]
    ZeroSize,
    /// Larger than a storage buffer binding may be, or than the memory heap.
    #[error("buffer of {size} bytes is too large: at most {max} bytes on this device")]
    TooLarge {
        /// The size asked for.
        size: u64,
        /// The largest size allowed.
        max: u64,
    },
    /// The allocation failed.
    #[error("buffer allocation failed: {0}")]
    Device(DeviceError),
    /// The memory allocator (`gpu-allocator`) refused the allocation for a reason other
    /// than running out of memory (no memory type fits, an internal error): its message.
    #[error("memory allocator: {0}")]
    Allocator(String),
}

impl BufferError {
    /// Whether the size is over the device's limit.
    pub fn is_too_large(&self) -> bool {
        matches!(self, BufferError::TooLarge { .. })
    }

    /// Whether host or device memory ran out (the driver refused the allocation).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, BufferError::Device(e) if e.is_out_of_memory())
    }

    /// Whether the device was lost (or is gone for good).
    pub fn is_device_lost(&self) -> bool {
        matches!(self, BufferError::Device(e) if e.is_device_lost())
    }
}

/// Maps the results of memory and buffer calls (`vkAllocateMemory`, `vkCreateBuffer`,
/// `vkBindBufferMemory`, `vkMapMemory`): out-of-memory codes and
/// `ERROR_MEMORY_MAP_FAILED` → [`DeviceError::OutOfMemory`] inside [`BufferError::Device`],
/// the rest through [`map_device`].
pub(crate) fn map_memory(op: &'static str, code: vk::Result) -> BufferError {
    match code {
        vk::Result::ERROR_MEMORY_MAP_FAILED | vk::Result::ERROR_TOO_MANY_OBJECTS => {
            BufferError::Device(DeviceError::OutOfMemory { op, code })
        }
        code => BufferError::Device(map_device(op, code)),
    }
}

/// Why a compute kernel could not be created.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShaderError {
    /// The bytes are not SPIR-V (length not a multiple of 4, or no SPIR-V magic number).
    #[error("invalid spir-v: {0}")]
    InvalidSpirv(&'static str),
    /// Too many bindings or push-constant bytes.
    #[error("invalid kernel layout: {0}")]
    InvalidLayout(&'static str),
    /// The driver refused the module or the pipeline.
    #[error("{op} failed: {code}")]
    Vk {
        /// The Vulkan call.
        op: &'static str,
        /// Its result.
        code: vk::Result,
    },
}

impl ShaderError {
    /// Whether the bytes were rejected as SPIR-V.
    pub fn is_invalid_spirv(&self) -> bool {
        matches!(self, ShaderError::InvalidSpirv(_))
    }
}

/// Maps the results of shader and pipeline creation (`vkCreateShaderModule`,
/// `vkCreateComputePipelines`, layouts): `ERROR_INVALID_SHADER_NV` → [`ShaderError::InvalidSpirv`];
/// the rest → [`ShaderError::Vk`].
pub(crate) fn map_shader(op: &'static str, code: vk::Result) -> ShaderError {
    match code {
        vk::Result::ERROR_INVALID_SHADER_NV => ShaderError::InvalidSpirv("rejected by the driver"),
        code => ShaderError::Vk { op, code },
    }
}

/// Why recording a job's command buffer failed (returned by recording closures and by the
/// [`RecordCtx`](crate::RecordCtx) helpers).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A buffer of another device (or of an earlier incarnation of this one).
    #[error(
        "buffer belongs to device generation {buffer}, the job records for generation {device}"
    )]
    WrongDevice {
        /// The buffer's device generation.
        buffer: u64,
        /// The recording device's generation.
        device: u64,
    },
    /// A buffer of a lost generation of this device: its memory went with the device ("VRAM
    /// lost", as amdgpu reports it). Create the buffer again on the current generation.
    #[error("buffer belongs to lost device generation {buffer} (its contents are gone); the device is now generation {device}: create the buffer again")]
    LostGeneration {
        /// The buffer's (lost) device generation.
        buffer: u64,
        /// The generation the job records for.
        device: u64,
    },
    /// The device generation the job would record for is lost and its replacement is not ready yet:
    /// wait for it ([`VulkanDevice::wait_generation`](crate::VulkanDevice::wait_generation)) and
    /// submit again.
    #[error(
        "device generation {generation} is lost; wait for the next generation and submit again"
    )]
    DeviceLost {
        /// The lost generation.
        generation: u64,
    },
    /// The device is gone for good: it was lost and re-creating it failed (see
    /// [`DeviceError::Gone`]). Make a new device.
    #[error("the device is gone for good: re-creating it after a loss failed")]
    DeviceGone,
    /// Host or device memory ran out while recording (`vkAllocateCommandBuffers`,
    /// `vkBeginCommandBuffer`, `vkEndCommandBuffer`): the job is refused, no fence exists
    /// yet; submit it again later.
    #[error("{op}: out of memory ({code})")]
    OutOfMemory {
        /// The Vulkan call.
        op: &'static str,
        /// `ERROR_OUT_OF_HOST_MEMORY` or `ERROR_OUT_OF_DEVICE_MEMORY`.
        code: vk::Result,
    },
    /// A kernel created on another device.
    #[error("kernel belongs to another device")]
    ForeignKernel,
    /// The recording was dropped by fault injection (`JobFault::DropRecording`).
    #[error("the recording was dropped (injected fault)")]
    RecordingDropped,
    /// A buffer the job did not declare with `reads`/`writes` (implicit sync would miss it).
    #[error("buffer {0} is used by the recording but not declared with reads() or writes()")]
    Undeclared(u64),
    /// The kernel takes a different number of buffers.
    #[error("kernel takes {expected} buffers, {got} given")]
    Bindings {
        /// The kernel's binding count.
        expected: u32,
        /// Buffers given.
        got: usize,
    },
    /// The push constants have the wrong size.
    #[error("kernel takes {expected} bytes of push constants, {got} given")]
    PushConstants {
        /// The kernel's push-constant size.
        expected: u32,
        /// Bytes given.
        got: usize,
    },
    /// More workgroups than the device allows in one dimension.
    #[error("{got} workgroups exceed the device limit {max}")]
    Workgroups {
        /// Workgroups asked for.
        got: u32,
        /// The device's limit.
        max: u32,
    },
    /// The recording closure failed for a reason of its own.
    #[error("recording failed: {0}")]
    Failed(String),
    /// Graphics work ([`RecordCtx::render`](crate::RecordCtx::render)) on a device without
    /// dynamic rendering (Vulkan 1.3) or whose rings' queue family cannot do graphics.
    #[error("this device cannot record graphics work (needs vulkan 1.3 dynamic rendering and a graphics queue)")]
    GraphicsUnsupported,
    /// An image cannot be used this way (e.g. rendering into an image without
    /// `COLOR_ATTACHMENT` usage).
    #[error("image {image}: {reason}")]
    Image {
        /// The image's id.
        image: u64,
        /// Why.
        reason: &'static str,
    },
    /// A Vulkan call failed while recording (`vkBeginCommandBuffer`, allocation, ...).
    #[error("{op} failed: {code}")]
    Vk {
        /// The Vulkan call.
        op: &'static str,
        /// Its result.
        code: vk::Result,
    },
}

impl RecordError {
    /// A closure's own failure with a message.
    pub fn failed(msg: impl Into<String>) -> Self {
        RecordError::Failed(msg.into())
    }

    /// Whether a buffer of another device was used.
    pub fn is_wrong_device(&self) -> bool {
        matches!(self, RecordError::WrongDevice { .. })
    }

    /// Whether the device (or the buffer's generation of it) was lost, or is gone for good.
    pub fn is_device_lost(&self) -> bool {
        matches!(
            self,
            RecordError::DeviceLost { .. }
                | RecordError::LostGeneration { .. }
                | RecordError::DeviceGone
        )
    }

    /// Whether the device is gone for good (re-creation failed).
    pub fn is_gone(&self) -> bool {
        matches!(self, RecordError::DeviceGone)
    }

    /// Whether memory ran out while recording.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, RecordError::OutOfMemory { .. })
    }
}

/// Maps the results of the recording calls (`vkAllocateCommandBuffers`,
/// `vkBeginCommandBuffer`, `vkEndCommandBuffer`) of a job recorded for device generation
/// `generation`: `ERROR_OUT_OF_HOST_MEMORY` / `ERROR_OUT_OF_DEVICE_MEMORY` →
/// [`RecordError::OutOfMemory`], `ERROR_DEVICE_LOST` (a layer or driver may report it from
/// any call of a lost device) → [`RecordError::DeviceLost`], the rest → [`RecordError::Vk`].
/// The caller declares the generation lost on `ERROR_DEVICE_LOST`, as [`map_device`]'s do.
pub(crate) fn map_record(op: &'static str, code: vk::Result, generation: u64) -> RecordError {
    match code {
        vk::Result::ERROR_OUT_OF_HOST_MEMORY | vk::Result::ERROR_OUT_OF_DEVICE_MEMORY => {
            RecordError::OutOfMemory { op, code }
        }
        vk::Result::ERROR_DEVICE_LOST => RecordError::DeviceLost { generation },
        code => RecordError::Vk { op, code },
    }
}

/// Why [`VulkanDevice::submit`](crate::VulkanDevice::submit) refused a job. No fence was
/// handed out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// Recording the job's command buffer failed (including a buffer of another device).
    #[error("recording the job failed: {0}")]
    Record(RecordError),
    /// The scheduler refused the job (entity killed, device gone, credits ...).
    #[error("the scheduler refused the job: {0}")]
    Sched(SchedError),
    /// Locking the buffers' reservations failed.
    #[error("locking the job's buffers failed: {0}")]
    Lock(WwError),
    /// Reserving a fence slot in a buffer's reservation failed (out of memory).
    #[error("reserving a fence slot failed: out of memory")]
    Reserve,
}

impl SubmitError {
    /// Whether recording failed.
    pub fn is_record(&self) -> bool {
        matches!(self, SubmitError::Record(_))
    }

    /// Whether a buffer of another device was used.
    pub fn is_wrong_device(&self) -> bool {
        matches!(self, SubmitError::Record(e) if e.is_wrong_device())
    }

    /// Whether memory ran out while recording the job (no fence was handed out).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, SubmitError::Record(e) if e.is_out_of_memory())
    }

    /// Whether the device is gone for good (re-creation failed).
    pub fn is_gone(&self) -> bool {
        matches!(self, SubmitError::Record(e) if e.is_gone())
    }

    /// Whether the job was refused because the device, or the generation of one of its
    /// buffers, was lost (see [`RecordError::is_device_lost`]).
    pub fn is_device_lost(&self) -> bool {
        match self {
            SubmitError::Record(e) => e.is_device_lost(),
            _ => false,
        }
    }

    /// Whether the scheduler refused the job.
    pub fn is_sched(&self) -> bool {
        matches!(self, SubmitError::Sched(_))
    }
}

/// Why the host could not read or write a buffer directly ([`Buffer::read_bytes`],
/// [`Buffer::write_bytes`] and the typed variants).
///
/// [`Buffer::read_bytes`]: crate::Buffer::read_bytes
/// [`Buffer::write_bytes`]: crate::Buffer::write_bytes
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostAccessError {
    /// Waiting for the jobs that use the buffer failed: it timed out, or a job that writes
    /// the buffer failed (its contents are then undefined); `Failed(DeviceLost)` for a buffer
    /// of a lost device generation.
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// The byte range is not inside the buffer.
    #[error("host access of {len} bytes at offset {offset} is outside a buffer of {size} bytes")]
    OutOfRange {
        /// The first byte asked for.
        offset: u64,
        /// How many bytes.
        len: u64,
        /// The buffer's size.
        size: u64,
    },
    /// The buffer is not mapped ([`MemoryLocation::GpuOnly`](crate::MemoryLocation::GpuOnly)):
    /// the host reaches it through a copy job, [`VulkanDevice::upload`] or
    /// [`VulkanDevice::download`].
    ///
    /// [`VulkanDevice::upload`]: crate::VulkanDevice::upload
    /// [`VulkanDevice::download`]: crate::VulkanDevice::download
    #[error("the buffer is not host-visible (GpuOnly): use VulkanDevice::upload or download")]
    NotMapped,
}

impl HostAccessError {
    /// Whether the buffer's device generation was lost (its contents are gone).
    pub fn is_device_lost(&self) -> bool {
        matches!(self, HostAccessError::Wait(WaitError::Failed(FenceError::DeviceLost)))
    }
}
