//! Memory where a GPU wants it: [`MemoryLocation`]s for buffers, and the `gpu-allocator`
//! sub-allocator (one per device generation, [`GpuMemory`]) behind them and behind images.
//!
//! `VulkanDevice::buffer(size)` keeps its own size-class allocator over host-visible
//! coherent memory (`memory.rs`); every other location, and every image, is allocated by
//! `gpu-allocator` (the allocator wgpu uses): it picks the memory type by property flags
//! (device-local for [`MemoryLocation::GpuOnly`], host-visible coherent for
//! [`MemoryLocation::Upload`], host-visible coherent and cached when there is such a type
//! for [`MemoryLocation::Readback`]), sub-allocates blocks of it and maps host-visible
//! blocks persistently.
//!
//! # Contract
//! As for the size-class allocator: an allocation is freed only when its buffer or image
//! drops, and a job keeps what it declared alive until the hardware has passed it, so
//! memory is never reused under a running job. The allocator is dropped (freeing its
//! blocks) with its device generation, after every buffer and image of it.

use std::fmt;
use std::sync::{Arc, Mutex};

use ash::vk;
use gpu_allocator::vulkan::{
    Allocation, AllocationCreateDesc, AllocationScheme, Allocator, AllocatorCreateDesc,
};
use gpu_allocator::{AllocationError, AllocationSizes, AllocatorDebugSettings};
use gpusched::resv::Resv;

use crate::device::DeviceCore;
use crate::error::{map_memory, BufferError, DeviceError, InitError};
use crate::memory::{Block, Buffer, BufferInner};
use crate::sync::{self, lock};

/// Where a buffer's memory lives, for [`VulkanDevice::buffer_in`](crate::VulkanDevice::buffer_in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemoryLocation {
    /// Device-local memory, for data only the GPU touches (the fastest for the GPU). It is
    /// never mapped, even where the device's memory is host-visible (integrated GPUs,
    /// lavapipe): the host reads and writes it only through copy jobs
    /// ([`VulkanDevice::upload`](crate::VulkanDevice::upload),
    /// [`VulkanDevice::download`](crate::VulkanDevice::download)).
    GpuOnly,
    /// Host-visible coherent memory (device-local too when there is such a type), mapped:
    /// written by the host, read by the GPU (staging for uploads, per-frame constants).
    /// [`VulkanDevice::buffer`](crate::VulkanDevice::buffer)'s buffers are of this kind.
    Upload,
    /// Host-visible coherent memory, cached when the device has such a type, mapped:
    /// written by the GPU, read by the host (read-backs).
    Readback,
}

impl MemoryLocation {
    fn gpu_allocator(self) -> gpu_allocator::MemoryLocation {
        match self {
            MemoryLocation::GpuOnly => gpu_allocator::MemoryLocation::GpuOnly,
            MemoryLocation::Upload => gpu_allocator::MemoryLocation::CpuToGpu,
            MemoryLocation::Readback => gpu_allocator::MemoryLocation::GpuToCpu,
        }
    }

    /// Whether the host may map it.
    pub fn is_host_visible(self) -> bool {
        !matches!(self, MemoryLocation::GpuOnly)
    }
}

/// One device generation's `gpu-allocator`. `None` once destroyed (device teardown).
pub(crate) struct GpuMemory(Mutex<Option<Allocator>>);

impl fmt::Debug for GpuMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuMemory").finish_non_exhaustive()
    }
}

impl GpuMemory {
    /// The allocator of a new device generation.
    pub(crate) fn new(
        instance: &ash::Instance,
        device: &ash::Device,
        physical: vk::PhysicalDevice,
    ) -> Result<GpuMemory, InitError> {
        // Leaks are this crate's tests' business (the allocator is dropped with the device,
        // after every buffer and image); its report would only add noise.
        let mut debug_settings = AllocatorDebugSettings::default();
        debug_settings.log_leaks_on_shutdown = false;
        let desc = AllocatorCreateDesc {
            instance: instance.clone(),
            device: device.clone(),
            physical_device: physical,
            debug_settings,
            buffer_device_address: false,
            allocation_sizes: AllocationSizes::default(),
        };
        let a = Allocator::new(&desc).map_err(|e| {
            InitError::NoDevice(format!("memory allocator (gpu-allocator) refused the device: {e}"))
        })?;
        Ok(GpuMemory(Mutex::new(Some(a))))
    }

    /// Allocates memory for `requirements` at `location`.
    pub(crate) fn allocate(
        &self,
        name: &str,
        requirements: vk::MemoryRequirements,
        location: gpu_allocator::MemoryLocation,
        linear: bool,
    ) -> Result<Allocation, BufferError> {
        let mut a = lock(&self.0);
        let Some(a) = a.as_mut() else {
            return Err(BufferError::Device(DeviceError::DeviceLost { op: "vkAllocateMemory" }));
        };
        a.allocate(&AllocationCreateDesc {
            name,
            requirements,
            location,
            linear,
            allocation_scheme: AllocationScheme::GpuAllocatorManaged,
        })
        .map_err(map_allocation)
    }

    /// Frees `allocation` (its buffer or image is destroyed already).
    pub(crate) fn free(&self, allocation: Allocation) {
        if let Some(a) = lock(&self.0).as_mut() {
            if let Err(e) = a.free(allocation) {
                tracing::warn!(target: "gpusched_vulkan", %e, "freeing device memory failed");
            }
        }
    }

    /// Frees every block (device teardown, before `vkDestroyDevice`).
    pub(crate) fn destroy(&mut self) {
        drop(sync::get_mut(&mut self.0).take());
    }
}

/// Maps `gpu-allocator`'s errors: out of memory (and a failed map, as `map_memory` does) to
/// [`DeviceError::OutOfMemory`], the rest to [`BufferError::Allocator`] with its message.
fn map_allocation(e: AllocationError) -> BufferError {
    match e {
        AllocationError::OutOfMemory => BufferError::Device(DeviceError::OutOfMemory {
            op: "vkAllocateMemory",
            code: vk::Result::ERROR_OUT_OF_DEVICE_MEMORY,
        }),
        AllocationError::FailedToMap(_) => {
            map_memory("vkMapMemory", vk::Result::ERROR_MEMORY_MAP_FAILED)
        }
        e => BufferError::Allocator(e.to_string()),
    }
}

/// What a buffer's bytes live in.
pub(crate) enum Backing {
    /// A block of the size-class allocator (`VulkanDevice::buffer`).
    Pool(Block),
    /// A `gpu-allocator` allocation (`None` once freed, in the buffer's drop).
    Gpu { allocation: Option<Allocation>, location: MemoryLocation },
}

impl Backing {
    /// The host mapping of the buffer's first byte, for host-visible locations.
    pub(crate) fn ptr(&self) -> Option<*mut u8> {
        match self {
            Backing::Pool(b) => Some(b.ptr()),
            Backing::Gpu { location: MemoryLocation::GpuOnly, .. } => None,
            Backing::Gpu { allocation, .. } => {
                allocation.as_ref().and_then(|a| a.mapped_ptr()).map(|p| p.as_ptr().cast())
            }
        }
    }

    /// Where it lives.
    pub(crate) fn location(&self) -> MemoryLocation {
        match self {
            Backing::Pool(_) => MemoryLocation::Upload,
            Backing::Gpu { location, .. } => *location,
        }
    }

    /// The property flags of the memory type it was allocated from.
    pub(crate) fn memory_properties(&self, core: &DeviceCore) -> vk::MemoryPropertyFlags {
        match self {
            Backing::Pool(_) => core.memory_type_flags(lock(&core.memory).type_index),
            Backing::Gpu { allocation, .. } => {
                allocation.as_ref().map(|a| a.memory_properties()).unwrap_or_default()
            }
        }
    }

    /// Gives the memory back (the buffer is destroyed already).
    pub(crate) fn release(&mut self, core: &DeviceCore) {
        match self {
            Backing::Pool(b) => lock(&core.memory).free(&core.device, *b),
            Backing::Gpu { allocation, .. } => {
                if let Some(a) = allocation.take() {
                    core.gpu.free(a);
                }
            }
        }
    }
}

impl DeviceCore {
    /// The property flags of memory type `index`.
    pub(crate) fn memory_type_flags(&self, index: u32) -> vk::MemoryPropertyFlags {
        self.memory_types.get(index as usize).copied().unwrap_or_default()
    }
}

/// A buffer of `size` bytes at `location`, allocated by `gpu-allocator`.
pub(crate) fn buffer_in(
    core: &Arc<DeviceCore>,
    size: u64,
    location: MemoryLocation,
) -> Result<Buffer, BufferError> {
    if size == 0 {
        return Err(BufferError::ZeroSize);
    }
    let max = core.max_buffer_size;
    if size > max {
        return Err(BufferError::TooLarge { size, max });
    }
    let usage = vk::BufferUsageFlags::STORAGE_BUFFER
        | vk::BufferUsageFlags::TRANSFER_SRC
        | vk::BufferUsageFlags::TRANSFER_DST;
    let info = vk::BufferCreateInfo::default()
        .size(size)
        .usage(usage)
        .sharing_mode(vk::SharingMode::EXCLUSIVE);
    let dev = &core.device;
    // SAFETY: valid device and create info.
    let buffer =
        unsafe { dev.create_buffer(&info, None) }.map_err(|c| map_memory("vkCreateBuffer", c))?;
    // SAFETY: `buffer` was just created on `dev`.
    let req = unsafe { dev.get_buffer_memory_requirements(buffer) };
    let allocation = match core.gpu.allocate("gpusched buffer", req, location.gpu_allocator(), true)
    {
        Ok(a) => a,
        Err(e) => {
            // SAFETY: unbound, unused.
            unsafe { dev.destroy_buffer(buffer, None) };
            return Err(e);
        }
    };
    // SAFETY: the allocation satisfies `req` (size, alignment, memory type bits).
    let bound = unsafe { dev.bind_buffer_memory(buffer, allocation.memory(), allocation.offset()) };
    if let Err(c) = bound {
        // SAFETY: unused buffer; the allocation goes back.
        unsafe { dev.destroy_buffer(buffer, None) };
        core.gpu.free(allocation);
        return Err(map_memory("vkBindBufferMemory", c));
    }
    let mem = Backing::Gpu { allocation: Some(allocation), location };
    if location.is_host_visible() && mem.ptr().is_none() {
        let mut mem = mem;
        // SAFETY: unused buffer; its memory goes back.
        unsafe { dev.destroy_buffer(buffer, None) };
        mem.release(core);
        return Err(map_memory("vkMapMemory", vk::Result::ERROR_MEMORY_MAP_FAILED));
    }
    Ok(Buffer { inner: Arc::new(BufferInner::new(core.clone(), buffer, mem, size, Resv::new())) })
}

impl crate::VulkanDevice {
    /// A buffer of `size` bytes at `location` on the current generation, allocated by
    /// `gpu-allocator`. [`buffer`](crate::VulkanDevice::buffer) stays what it was: a
    /// host-visible coherent buffer of the size-class allocator (its
    /// [`location`](Buffer::location) is [`MemoryLocation::Upload`]). A
    /// [`MemoryLocation::GpuOnly`] buffer is read and written by jobs only; the host reaches
    /// it through [`upload`](crate::VulkanDevice::upload) and
    /// [`download`](crate::VulkanDevice::download).
    ///
    /// # Errors
    /// Zero size, over [`max_buffer_size`](crate::VulkanDevice::max_buffer_size), allocation
    /// failure (no memory type for the location: [`BufferError::Allocator`]), or the current
    /// generation is lost ([`DeviceError::DeviceLost`] inside).
    pub fn buffer_in(&self, size: u64, location: MemoryLocation) -> Result<Buffer, BufferError> {
        let core = self.core();
        if core.is_lost() {
            return Err(BufferError::Device(DeviceError::DeviceLost { op: "vkAllocateMemory" }));
        }
        buffer_in(&core, size, location)
    }
}
