//! Buffers and their memory: a size-class sub-allocator over host-visible, host-coherent
//! memory, persistently mapped.
//!
//! # Algorithm
//! Sizes round up to a power-of-two class from 256 bytes to [`CHUNK`] (4 MiB). Each class
//! has a free list; an empty free list bumps a block off the current 4 MiB chunk (a new
//! chunk when it is full). Larger buffers get a dedicated allocation, freed with them. Chunks
//! are kept until the device is destroyed. Every block is `vkBindBufferMemory`'d to one
//! `VkBuffer` at a suitably aligned offset.
//!
//! It serves [`VulkanDevice::buffer`](crate::VulkanDevice::buffer) only; located buffers and
//! images use `gpu-allocator` (`alloc.rs`). It stays for the plain buffers because creating
//! and dropping a small buffer costs about half as much with it (measured on lavapipe) and
//! because freeing a block never allocates (its free lists keep room for every block),
//! which `gpu-allocator` does not promise.
//!
//! # Contract
//! A block returns to its free list only when its [`Buffer`] drops, and a pending job keeps
//! its buffers alive until the scheduler frees it (after the hardware passed it), so memory
//! is never reused under a running job.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ash::vk;
use gpusched::fence::{FenceError, WaitError};
use gpusched::resv::{Resv, Usage};

use crate::alloc::{Backing, MemoryLocation};
use crate::device::DeviceCore;
use crate::error::{map_memory, BufferError, HostAccessError};
use crate::resource::{GenerationId, GpuResource};
use crate::sync::lock;

/// Size of a sub-allocation chunk; larger buffers get their own allocation.
pub(crate) const CHUNK: u64 = 4 << 20;
const MIN_CLASS: u64 = 256;
const CLASSES: usize = 15; // 256 B << 14 = 4 MiB

static NEXT_BUFFER_ID: AtomicU64 = AtomicU64::new(1);

struct Chunk {
    memory: vk::DeviceMemory,
    ptr: *mut u8,
}

/// Where a buffer's bytes live.
#[derive(Clone, Copy)]
pub(crate) struct Block {
    memory: vk::DeviceMemory,
    offset: u64,
    ptr: *mut u8,
    /// The size class, or `None` for a dedicated allocation.
    class: Option<usize>,
}

/// The allocator's state. Protected by `DeviceCore::memory`.
pub(crate) struct Allocator {
    pub(crate) type_index: u32,
    chunks: Vec<Chunk>,
    /// Bump offset in the last chunk.
    bump: u64,
    /// Free blocks per class. Capacity always covers every block of the class ever carved,
    /// so freeing never allocates (a buffer may drop inside a signalling section, with the
    /// last job that used it).
    free: [Vec<(vk::DeviceMemory, u64, usize)>; CLASSES],
    carved: [usize; CLASSES],
}

// SAFETY: the raw pointers are mappings of device memory owned by the allocator; they are
// only dereferenced through `Buffer`s, which synchronise host access with fences.
unsafe impl Send for Allocator {}
// SAFETY: see `Send`; a `Block` is plain data describing a mapping.
unsafe impl Send for Block {}
// SAFETY: see `Send`.
unsafe impl Sync for Block {}

impl Block {
    /// The host mapping of the block's first byte.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Allocator {
    pub(crate) fn new(type_index: u32) -> Self {
        Allocator {
            type_index,
            chunks: Vec::new(),
            bump: CHUNK,
            free: Default::default(),
            carved: [0; CLASSES],
        }
    }

    fn class_of(size: u64) -> Option<usize> {
        if size > CHUNK {
            return None;
        }
        let s = size.max(MIN_CLASS).next_power_of_two();
        Some((s.trailing_zeros() - MIN_CLASS.trailing_zeros()) as usize)
    }

    fn map_new(
        device: &ash::Device,
        type_index: u32,
        size: u64,
    ) -> Result<(vk::DeviceMemory, *mut u8), BufferError> {
        let info =
            vk::MemoryAllocateInfo::default().allocation_size(size).memory_type_index(type_index);
        // SAFETY: valid device and allocate info.
        let memory = unsafe { device.allocate_memory(&info, None) }
            .map_err(|c| map_memory("vkAllocateMemory", c))?;
        // SAFETY: the memory is host-visible (type chosen so) and not mapped yet.
        match unsafe { device.map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()) } {
            Ok(p) => Ok((memory, p.cast())),
            Err(c) => {
                // SAFETY: just allocated, unused.
                unsafe { device.free_memory(memory, None) };
                Err(map_memory("vkMapMemory", c))
            }
        }
    }

    /// A block of at least `size` bytes aligned to `align` (a power of two ≤ 256 ... any).
    pub(crate) fn alloc(
        &mut self,
        device: &ash::Device,
        size: u64,
        align: u64,
    ) -> Result<Block, BufferError> {
        let Some(class) = Self::class_of(size.max(align)) else {
            let (memory, ptr) = Self::map_new(device, self.type_index, size)?;
            return Ok(Block { memory, offset: 0, ptr, class: None });
        };
        if let Some((memory, offset, chunk)) = self.free[class].pop() {
            // SAFETY: `offset` lies inside chunk `chunk`'s mapping.
            let ptr = unsafe { self.chunks[chunk].ptr.add(offset as usize) };
            return Ok(Block { memory, offset, ptr, class: Some(class) });
        }
        let block_size = MIN_CLASS << class;
        // Class sizes are powers of two, so aligning to the block size covers `align` too.
        let mut offset = self.bump.next_multiple_of(block_size.max(align));
        if self.chunks.is_empty() || offset + block_size > CHUNK {
            let (memory, ptr) = Self::map_new(device, self.type_index, CHUNK)?;
            self.chunks.push(Chunk { memory, ptr });
            offset = 0;
        }
        self.bump = offset + block_size;
        self.carved[class] += 1;
        let room = self.carved[class] - self.free[class].len();
        if self.free[class].try_reserve(room).is_err() {
            return Err(BufferError::Device(crate::error::DeviceError::OutOfMemory {
                op: "free-list reservation",
                code: vk::Result::ERROR_OUT_OF_HOST_MEMORY,
            }));
        }
        let chunk = self.chunks.len() - 1;
        let c = &self.chunks[chunk];
        // SAFETY: `offset + block_size <= CHUNK`, inside the mapping.
        let ptr = unsafe { c.ptr.add(offset as usize) };
        Ok(Block { memory: c.memory, offset, ptr, class: Some(class) })
    }

    pub(crate) fn free(&mut self, device: &ash::Device, block: Block) {
        match block.class {
            Some(class) => {
                let chunk = self.chunks.iter().position(|c| c.memory == block.memory);
                if let Some(chunk) = chunk {
                    self.free[class].push((block.memory, block.offset, chunk));
                }
            }
            // SAFETY: a dedicated allocation belongs to the one buffer being destroyed.
            None => unsafe { device.free_memory(block.memory, None) },
        }
    }

    /// Frees every chunk (device destruction).
    pub(crate) fn destroy(&mut self, device: &ash::Device) {
        for c in self.chunks.drain(..) {
            // SAFETY: called once the device is idle and every buffer is gone.
            unsafe { device.free_memory(c.memory, None) };
        }
    }
}

pub(crate) struct BufferInner {
    pub(crate) core: Arc<DeviceCore>,
    pub(crate) buffer: vk::Buffer,
    mem: Backing,
    size: u64,
    id: u64,
    resv: Resv,
    /// Serialises host reads and writes of the mapping.
    host: Mutex<()>,
}

impl Drop for BufferInner {
    fn drop(&mut self) {
        // SAFETY: no job uses the buffer any more (pending jobs hold a `Buffer` clone until
        // freed after the hardware passed them); the block goes back to the allocator.
        unsafe { self.core.device.destroy_buffer(self.buffer, None) };
        self.mem.release(&self.core);
    }
}

impl BufferInner {
    pub(crate) fn new(
        core: Arc<DeviceCore>,
        buffer: vk::Buffer,
        mem: Backing,
        size: u64,
        resv: Resv,
    ) -> BufferInner {
        BufferInner {
            core,
            buffer,
            mem,
            size,
            id: NEXT_BUFFER_ID.fetch_add(1, Ordering::Relaxed),
            resv,
            host: Mutex::new(()),
        }
    }
}

/// A device buffer, with its reservation object ([`Resv`]) for implicit synchronisation and
/// the generation of the device it belongs to. Cheap to clone (shared). Its memory is at a
/// [`MemoryLocation`]: host-visible coherent ([`VulkanDevice::buffer`](crate::VulkanDevice::buffer),
/// [`MemoryLocation::Upload`], [`MemoryLocation::Readback`]), which the host reads and writes
/// directly ([`read_bytes`](Buffer::read_bytes), [`write_bytes`](Buffer::write_bytes)), or
/// device-local ([`MemoryLocation::GpuOnly`]), which it reaches through copy jobs
/// ([`VulkanDevice::upload`](crate::VulkanDevice::upload),
/// [`VulkanDevice::download`](crate::VulkanDevice::download)).
#[derive(Clone)]
pub struct Buffer {
    pub(crate) inner: Arc<BufferInner>,
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buffer")
            .field("id", &self.inner.id)
            .field("size", &self.inner.size)
            .field("generation", &self.generation())
            .finish()
    }
}

// SAFETY: the mapping pointer is only dereferenced under `host` and after waiting for the
// reservation's fences; Vulkan handles are plain values.
unsafe impl Send for BufferInner {}
// SAFETY: see `Send`.
unsafe impl Sync for BufferInner {}

impl Buffer {
    pub(crate) fn new(core: &Arc<DeviceCore>, size: u64) -> Result<Buffer, BufferError> {
        if size == 0 {
            return Err(BufferError::ZeroSize);
        }
        let max = core.max_buffer_size;
        if size > max {
            return Err(BufferError::TooLarge { size, max });
        }
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(
                vk::BufferUsageFlags::STORAGE_BUFFER
                    | vk::BufferUsageFlags::TRANSFER_SRC
                    | vk::BufferUsageFlags::TRANSFER_DST,
            )
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        let dev = &core.device;
        // SAFETY: valid device and create info.
        let buffer = unsafe { dev.create_buffer(&info, None) }
            .map_err(|c| map_memory("vkCreateBuffer", c))?;
        // SAFETY: `buffer` was just created on `dev`.
        let req = unsafe { dev.get_buffer_memory_requirements(buffer) };
        let block = {
            let mut a = lock(&core.memory);
            a.alloc(dev, req.size, req.alignment)
        };
        let block = match block {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: unbound, unused.
                unsafe { dev.destroy_buffer(buffer, None) };
                return Err(e);
            }
        };
        // SAFETY: the block is at least `req.size` bytes at an offset aligned to
        // `req.alignment`, in memory of a type the buffer accepts (checked at device
        // creation for storage buffers).
        if let Err(c) = unsafe { dev.bind_buffer_memory(buffer, block.memory, block.offset) } {
            // SAFETY: unused buffer; the block goes back.
            unsafe { dev.destroy_buffer(buffer, None) };
            lock(&core.memory).free(dev, block);
            return Err(map_memory("vkBindBufferMemory", c));
        }
        Ok(Buffer {
            inner: Arc::new(BufferInner::new(
                core.clone(),
                buffer,
                Backing::Pool(block),
                size,
                Resv::new(),
            )),
        })
    }

    /// Where its memory lives ([`VulkanDevice::buffer`](crate::VulkanDevice::buffer)'s
    /// buffers: [`MemoryLocation::Upload`]).
    pub fn location(&self) -> MemoryLocation {
        self.inner.mem.location()
    }

    /// The property flags of the memory type its memory was allocated from.
    pub fn memory_properties(&self) -> vk::MemoryPropertyFlags {
        self.inner.mem.memory_properties(&self.inner.core)
    }

    /// The host mapping, or the misuse panic for a buffer the host cannot map.
    #[track_caller]
    fn mapping(&self) -> Result<*mut u8, HostAccessError> {
        self.inner.mem.ptr().ok_or(HostAccessError::NotMapped)
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// A process-unique id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The generation of the device it belongs to.
    pub fn generation(&self) -> u64 {
        self.inner.core.generation
    }

    /// Whether its device generation was lost: its contents are gone ("VRAM lost"); host
    /// access fails with `DeviceLost` and jobs using it are refused
    /// ([`RecordError::LostGeneration`](crate::RecordError::LostGeneration)).
    pub fn is_lost(&self) -> bool {
        self.inner.core.is_lost()
    }

    fn check_lost(&self) -> Result<(), WaitError> {
        if self.is_lost() {
            return Err(WaitError::Failed(FenceError::DeviceLost));
        }
        Ok(())
    }

    /// The reservation object: the fences of the jobs that read and write the buffer.
    pub fn resv(&self) -> &Resv {
        &self.inner.resv
    }

    /// The raw handle (for recording closures that bind it themselves).
    pub fn raw(&self) -> vk::Buffer {
        self.inner.buffer
    }

    /// Whether two handles are the same buffer.
    pub fn ptr_eq(&self, other: &Buffer) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Writes `data` at byte `offset` from the host, after every job that reads or writes
    /// the buffer has finished (waits at most `timeout`).
    ///
    /// # Errors
    /// [`HostAccessError::Wait`]: a wait error (timeout, a job failed: the contents are then
    /// undefined), `Failed(DeviceLost)` for a buffer of a lost generation;
    /// [`HostAccessError::OutOfRange`]; [`HostAccessError::NotMapped`] for a
    /// [`MemoryLocation::GpuOnly`] buffer (the host reaches it with
    /// [`VulkanDevice::upload`](crate::VulkanDevice::upload)).
    pub fn write_bytes(
        &self,
        offset: u64,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), HostAccessError> {
        self.check_range(offset, data.len())?;
        let ptr = self.mapping()?;
        self.check_lost()?;
        self.inner.resv.wait_unlocked(Usage::Read, false, Some(timeout))?;
        let _g = lock(&self.inner.host);
        // SAFETY: the range is inside the buffer's block (checked), the memory is mapped and
        // coherent, and no job is using it (waited above).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), ptr.add(offset as usize), data.len())
        };
        Ok(())
    }

    /// Reads `len` bytes at `offset` from the host, after every job that writes the buffer
    /// has finished (waits at most `timeout`).
    ///
    /// # Errors
    /// [`HostAccessError::Wait`]: a wait error (timeout, a writer failed), `Failed(DeviceLost)`
    /// for a buffer of a lost generation; [`HostAccessError::OutOfRange`];
    /// [`HostAccessError::NotMapped`] for a [`MemoryLocation::GpuOnly`] buffer (the host
    /// reaches it with [`VulkanDevice::download`](crate::VulkanDevice::download)).
    pub fn read_bytes(
        &self,
        offset: u64,
        len: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, HostAccessError> {
        self.check_range(offset, len)?;
        let ptr = self.mapping()?;
        self.check_lost()?;
        self.inner.resv.wait_unlocked(Usage::Write, false, Some(timeout))?;
        let _g = lock(&self.inner.host);
        let mut out = vec![0u8; len];
        // SAFETY: as in `write_bytes`; writers have finished and their command buffers end
        // with a barrier making their writes visible to the host.
        unsafe { std::ptr::copy_nonoverlapping(ptr.add(offset as usize), out.as_mut_ptr(), len) };
        Ok(out)
    }

    /// Writes `f32`s from offset 0; see [`write_bytes`](Buffer::write_bytes).
    ///
    /// # Errors
    /// As [`write_bytes`](Buffer::write_bytes).
    pub fn write_f32(&self, data: &[f32], timeout: Duration) -> Result<(), HostAccessError> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
        self.write_bytes(0, &bytes, timeout)
    }

    /// Reads the whole buffer as `f32`s; see [`read_bytes`](Buffer::read_bytes).
    ///
    /// # Errors
    /// As [`read_bytes`](Buffer::read_bytes).
    pub fn read_f32(&self, timeout: Duration) -> Result<Vec<f32>, HostAccessError> {
        let bytes = self.read_bytes(0, (self.size() / 4 * 4) as usize, timeout)?;
        Ok(bytes.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// Reads the whole buffer as `u32`s; see [`read_bytes`](Buffer::read_bytes).
    ///
    /// # Errors
    /// As [`read_bytes`](Buffer::read_bytes).
    pub fn read_u32(&self, timeout: Duration) -> Result<Vec<u32>, HostAccessError> {
        let bytes = self.read_bytes(0, (self.size() / 4 * 4) as usize, timeout)?;
        Ok(bytes.chunks_exact(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    fn check_range(&self, offset: u64, len: usize) -> Result<(), HostAccessError> {
        let (len, size) = (len as u64, self.inner.size);
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(HostAccessError::OutOfRange { offset, len, size });
        }
        Ok(())
    }
}

impl GpuResource for Buffer {
    fn resv(&self) -> &Resv {
        &self.inner.resv
    }

    fn owner(&self) -> GenerationId {
        self.inner.core.generation_id()
    }

    fn keep_alive(&self) -> Arc<dyn GpuResource> {
        Arc::new(self.clone())
    }
}
