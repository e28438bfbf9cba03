//! Host access to device-local data through copy jobs: [`VulkanDevice::upload`] (host →
//! staging buffer → buffer), [`VulkanDevice::download`] and
//! [`VulkanDevice::download_image`] (buffer or image → read-back buffer → host), and the
//! copy commands they record ([`RecordCtx::copy_buffer`],
//! [`RecordCtx::copy_image_to_buffer`]).
//!
//! Each is an ordinary job submitted on the caller's entity through
//! [`VulkanDevice::submit`]: implicit synchronisation orders it after the jobs that wrote
//! (for a download) or used (for an upload) the buffer or image, through its `Resv`, and
//! later jobs after it. The staging buffers are [`MemoryLocation::Upload`] and
//! [`MemoryLocation::Readback`] buffers made per transfer.

use std::time::Duration;

use ash::vk;
use gpusched::fence::{Fence, WaitError};
use gpusched::Entity;

use crate::alloc::MemoryLocation;
use crate::device::VulkanDevice;
use crate::error::{BufferError, HostAccessError, RecordError, SubmitError};
use crate::image::Image;
use crate::kernel::RecordCtx;
use crate::memory::Buffer;
use crate::ring::VulkanRing;
use crate::VulkanJob;

/// Why a transfer ([`VulkanDevice::upload`], [`VulkanDevice::download`],
/// [`VulkanDevice::download_image`], [`VulkanDevice::read_image_rgba8`]) failed. Unless it
/// is [`TransferError::Wait`], no fence was handed out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The byte range is outside the buffer (or empty).
    #[error("transfer of {len} bytes at offset {offset} does not fit a buffer of {size} bytes")]
    OutOfRange {
        /// Offset asked for.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// The buffer's size.
        size: u64,
    },
    /// The image cannot be read back this way (its format or usage).
    #[error("image {image} cannot be read back: {reason}")]
    Image {
        /// The image's id.
        image: u64,
        /// Why.
        reason: &'static str,
    },
    /// The staging buffer could not be created.
    #[error("staging buffer: {0}")]
    Staging(#[from] BufferError),
    /// The copy job was refused (a buffer or image of another device or of a lost
    /// generation, the scheduler refused it ...).
    #[error("copy job: {0}")]
    Submit(#[from] SubmitError),
    /// The copy job failed or did not finish in time.
    #[error("waiting for the copy: {0}")]
    Wait(#[from] WaitError),
    /// The host could not read or write the staging buffer.
    #[error("staging buffer: {0}")]
    Host(#[from] HostAccessError),
}

/// A download in flight: the copy job's fence and the read-back buffer it fills.
#[derive(Debug)]
#[must_use = "the bytes arrive through Download::wait"]
pub struct Download {
    fence: Fence,
    staging: Buffer,
    len: usize,
    /// Swap the red and blue bytes of each texel on the way out (BGRA images).
    swizzle: bool,
}

impl Download {
    /// The copy job's finished fence.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Waits (at most `timeout`) for the copy and returns the bytes (for an image: rows of
    /// mip level 0, tightly packed, 4 bytes a texel in RGBA order).
    ///
    /// # Errors
    /// [`TransferError::Wait`]: the copy failed (its fence's error) or timed out;
    /// [`TransferError::Host`]: reading the staging buffer failed (its device was lost).
    pub fn wait(self, timeout: Duration) -> Result<Vec<u8>, TransferError> {
        self.fence.wait_timeout(timeout)?;
        let mut bytes = self.staging.read_bytes(0, self.len, timeout)?;
        if self.swizzle {
            for texel in bytes.chunks_exact_mut(4) {
                texel.swap(0, 2);
            }
        }
        Ok(bytes)
    }
}

impl VulkanDevice {
    /// Writes `data` into `buffer` at byte `offset` with a copy job on `entity`: the bytes go
    /// to a new [`MemoryLocation::Upload`] staging buffer now, and the job copies them after
    /// every earlier job that uses `buffer` (implicit sync through its `Resv`; later jobs
    /// order after it). Works for any buffer; it is how the host writes a
    /// [`MemoryLocation::GpuOnly`] one. Returns the job's finished fence.
    ///
    /// # Errors
    /// An empty or out-of-range write, the staging buffer could not be made, or the job was
    /// refused ([`TransferError::Submit`]: e.g. a buffer of another device).
    pub fn upload(
        &self,
        entity: &Entity<VulkanRing>,
        buffer: &Buffer,
        offset: u64,
        data: &[u8],
    ) -> Result<Fence, TransferError> {
        let len = data.len() as u64;
        if len == 0 || offset.checked_add(len).is_none_or(|end| end > buffer.size()) {
            return Err(TransferError::OutOfRange { offset, len, size: buffer.size() });
        }
        let staging = self.buffer_in(len, MemoryLocation::Upload)?;
        // A fresh buffer no job uses: the write does not wait.
        staging.write_bytes(0, data, Duration::ZERO)?;
        let (src, dst) = (staging.clone(), buffer.clone());
        let job = VulkanJob::new(move |ctx, cb| ctx.copy_buffer(cb, &src, 0, &dst, offset, len))
            .reads(&staging)
            .writes(buffer);
        Ok(VulkanDevice::submit(entity, job)?)
    }

    /// Reads `buffer` back with a copy job on `entity` into a new
    /// [`MemoryLocation::Readback`] buffer, after every earlier job that writes it; wait
    /// for the bytes with [`Download::wait`]. It is how the host reads a
    /// [`MemoryLocation::GpuOnly`] buffer.
    ///
    /// # Errors
    /// The read-back buffer could not be made, or the job was refused.
    pub fn download(
        &self,
        entity: &Entity<VulkanRing>,
        buffer: &Buffer,
    ) -> Result<Download, TransferError> {
        let size = buffer.size();
        let staging = self.buffer_in(size, MemoryLocation::Readback)?;
        let (src, dst) = (buffer.clone(), staging.clone());
        let job = VulkanJob::new(move |ctx, cb| ctx.copy_buffer(cb, &src, 0, &dst, 0, size))
            .reads(buffer)
            .writes(&staging);
        let fence = VulkanDevice::submit(entity, job)?;
        Ok(Download { fence, staging, len: size as usize, swizzle: false })
    }

    /// Reads mip level 0 of `image` back with a copy job on `entity`, after every earlier
    /// job that writes it: rows tightly packed, RGBA bytes ([`Download::wait`]). The image
    /// is read in its rest layout, `GENERAL` (see [`Image`](crate::Image#layouts)).
    ///
    /// # Errors
    /// [`TransferError::Image`] for a format other than 8-bit RGBA or BGRA
    /// (`R8G8B8A8_*`, `B8G8R8A8_UNORM`/`_SRGB`) or an image without `TRANSFER_SRC` usage;
    /// the read-back buffer could not be made; the job was refused.
    pub fn download_image(
        &self,
        entity: &Entity<VulkanRing>,
        image: &Image,
    ) -> Result<Download, TransferError> {
        let desc = image.desc();
        let swizzle = match desc.format {
            vk::Format::R8G8B8A8_UNORM
            | vk::Format::R8G8B8A8_SRGB
            | vk::Format::R8G8B8A8_UINT
            | vk::Format::R8G8B8A8_SINT
            | vk::Format::R8G8B8A8_SNORM => false,
            vk::Format::B8G8R8A8_UNORM | vk::Format::B8G8R8A8_SRGB => true,
            _ => {
                return Err(TransferError::Image {
                    image: image.id(),
                    reason: "not an 8-bit RGBA or BGRA format",
                })
            }
        };
        if !desc.usage.contains(vk::ImageUsageFlags::TRANSFER_SRC) {
            return Err(TransferError::Image {
                image: image.id(),
                reason: "not created with TRANSFER_SRC usage",
            });
        }
        let len = u64::from(desc.width) * u64::from(desc.height) * 4;
        let staging = self.buffer_in(len, MemoryLocation::Readback)?;
        let (src, dst) = (image.clone(), staging.clone());
        let job = VulkanJob::new(move |ctx, cb| ctx.copy_image_to_buffer(cb, &src, &dst))
            .reads(image)
            .writes(&staging);
        let fence = VulkanDevice::submit(entity, job)?;
        Ok(Download { fence, staging, len: len as usize, swizzle })
    }

    /// [`download_image`](Self::download_image), then [`Download::wait`] (at most
    /// `timeout`): mip level 0 of `image` as RGBA bytes, row after row.
    ///
    /// # Errors
    /// As [`download_image`](Self::download_image); [`TransferError::Wait`] when the copy
    /// failed or timed out.
    pub fn read_image_rgba8(
        &self,
        entity: &Entity<VulkanRing>,
        image: &Image,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransferError> {
        self.download_image(entity, image)?.wait(timeout)
    }
}

impl RecordCtx<'_> {
    /// Records a copy of `size` bytes from `src` at `src_offset` to `dst` at `dst_offset`
    /// (`vkCmdCopyBuffer`). Both must be declared by the job (`src` read, `dst` written).
    ///
    /// # Errors
    /// A buffer of another device or generation, an undeclared one, or a range outside a
    /// buffer ([`RecordError::Failed`]).
    pub fn copy_buffer(
        &self,
        cb: vk::CommandBuffer,
        src: &Buffer,
        src_offset: u64,
        dst: &Buffer,
        dst_offset: u64,
        size: u64,
    ) -> Result<(), RecordError> {
        self.check_declared(src, src.id())?;
        self.check_declared(dst, dst.id())?;
        let fits = |off: u64, b: &Buffer| off.checked_add(size).is_some_and(|e| e <= b.size());
        if size == 0 || !fits(src_offset, src) || !fits(dst_offset, dst) {
            return Err(RecordError::failed(format!(
                "copy of {size} bytes from offset {src_offset} (of {}) to offset {dst_offset} (of {}) is out of range",
                src.size(),
                dst.size()
            )));
        }
        let region = [vk::BufferCopy { src_offset, dst_offset, size }];
        // SAFETY: `cb` is recording; both buffers belong to this device (checked) and were
        // created with TRANSFER_SRC and TRANSFER_DST; the regions lie inside them (checked).
        unsafe { self.device().cmd_copy_buffer(cb, src.raw(), dst.raw(), &region) };
        Ok(())
    }

    /// Records a copy of mip level 0 of `image`, in its rest layout `GENERAL`, into `dst`
    /// from offset 0, rows tightly packed (`vkCmdCopyImageToBuffer`).
    ///
    /// # Errors
    /// An image or buffer of another device or generation, or undeclared; a buffer too
    /// small ([`RecordError::Failed`]); an image without `TRANSFER_SRC` usage
    /// ([`RecordError::Image`]).
    pub fn copy_image_to_buffer(
        &self,
        cb: vk::CommandBuffer,
        image: &Image,
        dst: &Buffer,
    ) -> Result<(), RecordError> {
        self.check_declared(image, image.id())?;
        self.check_declared(dst, dst.id())?;
        let desc = image.desc();
        if !desc.usage.contains(vk::ImageUsageFlags::TRANSFER_SRC) {
            return Err(RecordError::Image {
                image: image.id(),
                reason: "not created with TRANSFER_SRC usage",
            });
        }
        let texel = texel_size(desc.format).ok_or(RecordError::Image {
            image: image.id(),
            reason: "copies support uncompressed 1, 2, 4, 8 and 16-byte formats only",
        })?;
        let need = u64::from(desc.width) * u64::from(desc.height) * texel;
        if dst.size() < need {
            return Err(RecordError::failed(format!(
                "image {} needs {need} bytes, buffer {} has {}",
                image.id(),
                dst.id(),
                dst.size()
            )));
        }
        let region = [vk::BufferImageCopy::default()
            .image_subresource(vk::ImageSubresourceLayers {
                aspect_mask: vk::ImageAspectFlags::COLOR,
                mip_level: 0,
                base_array_layer: 0,
                layer_count: 1,
            })
            .image_extent(vk::Extent3D { width: desc.width, height: desc.height, depth: 1 })];
        // SAFETY: `cb` is recording; the image (TRANSFER_SRC, in GENERAL by the layout rule)
        // and the buffer (TRANSFER_DST, large enough: checked) belong to this device.
        unsafe {
            self.device().cmd_copy_image_to_buffer(
                cb,
                image.raw(),
                vk::ImageLayout::GENERAL,
                dst.raw(),
                &region,
            )
        };
        Ok(())
    }
}

/// Bytes per texel of the common uncompressed colour formats (`None`: not handled).
fn texel_size(format: vk::Format) -> Option<u64> {
    use vk::Format as F;
    Some(match format {
        F::R8_UNORM | F::R8_SNORM | F::R8_UINT | F::R8_SINT | F::R8_SRGB => 1,
        F::R8G8_UNORM | F::R8G8_UINT | F::R16_UNORM | F::R16_SFLOAT | F::R16_UINT => 2,
        F::R8G8B8A8_UNORM
        | F::R8G8B8A8_SRGB
        | F::R8G8B8A8_UINT
        | F::R8G8B8A8_SINT
        | F::R8G8B8A8_SNORM
        | F::B8G8R8A8_UNORM
        | F::B8G8R8A8_SRGB
        | F::A2B10G10R10_UNORM_PACK32
        | F::R32_SFLOAT
        | F::R32_UINT
        | F::R32_SINT
        | F::R16G16_SFLOAT => 4,
        F::R16G16B16A16_SFLOAT | F::R16G16B16A16_UNORM | F::R32G32_SFLOAT => 8,
        F::R32G32B32A32_SFLOAT | F::R32G32B32A32_UINT => 16,
        _ => return None,
    })
}
