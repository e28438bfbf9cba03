//! Images: 2D, device-local, with a format, extent, usage and mip levels, and a `Resv`
//! ([`VulkanDevice::image`], [`Image`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ash::vk;
use gpu_allocator::vulkan::Allocation;
use gpusched::resv::Resv;

use crate::device::{DeviceCore, VulkanDevice};
use crate::error::{map_memory, BufferError, DeviceError};
use crate::resource::{GenerationId, GpuResource};
use crate::sync::lock;

static NEXT_IMAGE_ID: AtomicU64 = AtomicU64::new(1);

/// What [`VulkanDevice::image`] creates: a 2D image of `width` × `height` texels of
/// `format`, with `mip_levels` levels (1: none below the base), created for `usage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageDesc {
    /// The texel format.
    pub format: vk::Format,
    /// Width in texels of mip level 0.
    pub width: u32,
    /// Height in texels of mip level 0.
    pub height: u32,
    /// Mip levels, at least 1, at most `floor(log2(max(width, height))) + 1`.
    pub mip_levels: u32,
    /// How jobs use it; the format must support every usage (with optimal tiling).
    pub usage: vk::ImageUsageFlags,
}

impl ImageDesc {
    /// A render target: one mip level, usage `COLOR_ATTACHMENT | TRANSFER_SRC |
    /// TRANSFER_DST` (rendered into, read back, cleared or uploaded to).
    pub fn new(format: vk::Format, width: u32, height: u32) -> ImageDesc {
        ImageDesc {
            format,
            width,
            height,
            mip_levels: 1,
            usage: vk::ImageUsageFlags::COLOR_ATTACHMENT
                | vk::ImageUsageFlags::TRANSFER_SRC
                | vk::ImageUsageFlags::TRANSFER_DST,
        }
    }

    /// With `levels` mip levels.
    pub fn mip_levels(mut self, levels: u32) -> ImageDesc {
        self.mip_levels = levels;
        self
    }

    /// With `usage` instead.
    pub fn usage(mut self, usage: vk::ImageUsageFlags) -> ImageDesc {
        self.usage = usage;
        self
    }

    /// The most mip levels an image of this extent can have.
    pub fn max_mip_levels(&self) -> u32 {
        32 - self.width.max(self.height).max(1).leading_zeros()
    }
}

/// Why [`VulkanDevice::image`] refused to create an image.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A zero width, height or mip-level count.
    #[error("image extent {width}x{height} with {mip_levels} mip levels: none may be zero")]
    ZeroExtent {
        /// Width asked for.
        width: u32,
        /// Height asked for.
        height: u32,
        /// Mip levels asked for.
        mip_levels: u32,
    },
    /// More mip levels than the extent has.
    #[error("{requested} mip levels requested, an image of this extent has at most {max}")]
    TooManyMips {
        /// Levels asked for.
        requested: u32,
        /// The most the extent allows.
        max: u32,
    },
    /// Larger than the device allows for this format and usage.
    #[error("image extent {width}x{height} is over the device's limit {max_width}x{max_height} for this format and usage")]
    TooLarge {
        /// Width asked for.
        width: u32,
        /// Height asked for.
        height: u32,
        /// The device's limit.
        max_width: u32,
        /// The device's limit.
        max_height: u32,
    },
    /// The device cannot use the format for the usage (e.g. render into a compressed
    /// format).
    #[error("the device cannot use format {format:?} for usage {usage:?}")]
    UnsupportedFormat {
        /// The format.
        format: vk::Format,
        /// The usage asked for (the whole set).
        usage: vk::ImageUsageFlags,
    },
    /// Creating the image or its memory failed (out of memory, a lost device ...).
    #[error("image creation failed: {0}")]
    Memory(#[from] BufferError),
}

impl ImageError {
    /// Whether the format cannot be used for the usage.
    pub fn is_unsupported_format(&self) -> bool {
        matches!(self, ImageError::UnsupportedFormat { .. })
    }
}

pub(crate) struct ImageInner {
    core: Arc<DeviceCore>,
    image: vk::Image,
    /// A colour view of mip level 0, for images with `COLOR_ATTACHMENT` usage.
    view: Option<vk::ImageView>,
    allocation: Mutex<Option<Allocation>>,
    desc: ImageDesc,
    id: u64,
    resv: Resv,
}

impl Drop for ImageInner {
    fn drop(&mut self) {
        // SAFETY: no job uses the image any more (a job holds it until the hardware passed
        // it); the view, then the image, then its memory go.
        unsafe {
            if let Some(v) = self.view {
                self.core.device.destroy_image_view(v, None);
            }
            self.core.device.destroy_image(self.image, None);
        }
        if let Some(a) = lock(&self.allocation).take() {
            self.core.gpu.free(a);
        }
    }
}

/// A 2D device-local image with its reservation object ([`Resv`]), made by
/// [`VulkanDevice::image`]. Cheap to clone (shared). Jobs declare it like a buffer
/// ([`VulkanJob::reads`](crate::VulkanJob::reads), [`writes`](crate::VulkanJob::writes)),
/// render into it ([`RecordCtx::render`](crate::RecordCtx::render)), and the host reads it
/// back with [`VulkanDevice::read_image_rgba8`](crate::VulkanDevice::read_image_rgba8).
///
/// # Layouts
/// gpusched does not track image layouts; one rule keeps them right: **between jobs an image
/// is in `vk::ImageLayout::GENERAL`** (its *rest layout*). A job finds every image it
/// declared in `GENERAL` and leaves it there; inside, it may move it through other layouts
/// (with [`RecordCtx::image_barrier`](crate::RecordCtx::image_barrier)), and then declares
/// it with `writes` even if it only reads the texels (a layout transition writes the image,
/// so two such jobs must not overlap). gpusched's helpers keep to the rule: a render pass
/// and a read-back use the image in `GENERAL` and change no layout.
///
/// A new image is `UNDEFINED` and its contents too: its first job must write it whole,
/// discarding the old contents with a transition from `UNDEFINED` to `GENERAL`
/// ([`Load::Clear`](crate::Load::Clear) does, on mip level 0; a job of its own records
/// `ctx.image_barrier(cb, &image, UNDEFINED, GENERAL)` first). Reading an image no job has
/// written is an error of the caller (the validation layer reports the layout).
#[derive(Clone)]
pub struct Image {
    inner: Arc<ImageInner>,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("id", &self.inner.id)
            .field("desc", &self.inner.desc)
            .field("generation", &self.inner.core.generation)
            .finish()
    }
}

impl Image {
    /// What it was created with.
    pub fn desc(&self) -> ImageDesc {
        self.inner.desc
    }

    /// A process-unique id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The raw handle (for recording closures that use it themselves).
    pub fn raw(&self) -> vk::Image {
        self.inner.image
    }

    /// A colour view of mip level 0 (images with `COLOR_ATTACHMENT` usage; `None`
    /// otherwise), destroyed with the image.
    pub fn view(&self) -> Option<vk::ImageView> {
        self.inner.view
    }

    /// The generation of the device it belongs to.
    pub fn generation(&self) -> u64 {
        self.inner.core.generation
    }

    /// Whether its device generation was lost: its contents are gone, and jobs using it are
    /// refused ([`RecordError::LostGeneration`](crate::RecordError::LostGeneration)).
    pub fn is_lost(&self) -> bool {
        self.inner.core.is_lost()
    }

    /// The reservation object: the fences of the jobs that read and write the image.
    pub fn resv(&self) -> &Resv {
        &self.inner.resv
    }

    /// The property flags of the memory type its memory was allocated from.
    pub fn memory_properties(&self) -> vk::MemoryPropertyFlags {
        lock(&self.inner.allocation).as_ref().map(|a| a.memory_properties()).unwrap_or_default()
    }

    /// Whether two handles are the same image.
    pub fn ptr_eq(&self, other: &Image) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl GpuResource for Image {
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

/// The format features each usage needs (optimal tiling).
fn needed_features(usage: vk::ImageUsageFlags) -> vk::FormatFeatureFlags {
    let pairs = [
        (vk::ImageUsageFlags::COLOR_ATTACHMENT, vk::FormatFeatureFlags::COLOR_ATTACHMENT),
        (
            vk::ImageUsageFlags::DEPTH_STENCIL_ATTACHMENT,
            vk::FormatFeatureFlags::DEPTH_STENCIL_ATTACHMENT,
        ),
        (vk::ImageUsageFlags::SAMPLED, vk::FormatFeatureFlags::SAMPLED_IMAGE),
        (vk::ImageUsageFlags::STORAGE, vk::FormatFeatureFlags::STORAGE_IMAGE),
        (vk::ImageUsageFlags::TRANSFER_SRC, vk::FormatFeatureFlags::TRANSFER_SRC),
        (vk::ImageUsageFlags::TRANSFER_DST, vk::FormatFeatureFlags::TRANSFER_DST),
    ];
    pairs
        .iter()
        .filter(|(u, _)| usage.contains(*u))
        .fold(vk::FormatFeatureFlags::empty(), |acc, (_, f)| acc | *f)
}

impl VulkanDevice {
    /// A 2D device-local image on the current generation, with its own `Resv`. See
    /// [`Image`] for the layout rule (a new image's first job discards it from `UNDEFINED`).
    ///
    /// # Errors
    /// [`ImageError::ZeroExtent`], [`ImageError::TooManyMips`], [`ImageError::TooLarge`],
    /// [`ImageError::UnsupportedFormat`] (the format cannot serve the usage on this device,
    /// or an empty usage), [`ImageError::Memory`] (allocation failed, or the current
    /// generation is lost).
    pub fn image(&self, desc: ImageDesc) -> Result<Image, ImageError> {
        let ImageDesc { format, width, height, mip_levels, usage } = desc;
        if width == 0 || height == 0 || mip_levels == 0 {
            return Err(ImageError::ZeroExtent { width, height, mip_levels });
        }
        if mip_levels > desc.max_mip_levels() {
            return Err(ImageError::TooManyMips {
                requested: mip_levels,
                max: desc.max_mip_levels(),
            });
        }
        let unsupported = ImageError::UnsupportedFormat { format, usage };
        if usage.is_empty() {
            return Err(unsupported);
        }
        let instance = &self.shared.instance.instance;
        let physical = self.shared.physical;
        // SAFETY: valid physical device; any format value may be queried.
        let props = unsafe { instance.get_physical_device_format_properties(physical, format) };
        if !props.optimal_tiling_features.contains(needed_features(usage)) {
            return Err(unsupported);
        }
        // SAFETY: as above.
        let limits = unsafe {
            instance.get_physical_device_image_format_properties(
                physical,
                format,
                vk::ImageType::TYPE_2D,
                vk::ImageTiling::OPTIMAL,
                usage,
                vk::ImageCreateFlags::empty(),
            )
        };
        let limits = match limits {
            Ok(l) => l,
            Err(vk::Result::ERROR_FORMAT_NOT_SUPPORTED) => return Err(unsupported),
            Err(code) => {
                return Err(map_memory("vkGetPhysicalDeviceImageFormatProperties", code).into())
            }
        };
        let (max_width, max_height) = (limits.max_extent.width, limits.max_extent.height);
        if width > max_width || height > max_height {
            return Err(ImageError::TooLarge { width, height, max_width, max_height });
        }
        if mip_levels > limits.max_mip_levels {
            return Err(ImageError::TooManyMips {
                requested: mip_levels,
                max: limits.max_mip_levels,
            });
        }
        let core = self.core();
        if core.is_lost() {
            return Err(BufferError::Device(DeviceError::DeviceLost { op: "vkCreateImage" }).into());
        }
        create(&core, desc)
    }
}

fn create(core: &Arc<DeviceCore>, desc: ImageDesc) -> Result<Image, ImageError> {
    let d = &core.device;
    let info = vk::ImageCreateInfo::default()
        .image_type(vk::ImageType::TYPE_2D)
        .format(desc.format)
        .extent(vk::Extent3D { width: desc.width, height: desc.height, depth: 1 })
        .mip_levels(desc.mip_levels)
        .array_layers(1)
        .samples(vk::SampleCountFlags::TYPE_1)
        .tiling(vk::ImageTiling::OPTIMAL)
        .usage(desc.usage)
        .sharing_mode(vk::SharingMode::EXCLUSIVE)
        .initial_layout(vk::ImageLayout::UNDEFINED);
    // SAFETY: valid device; the format, usage, extent and mips were checked against the
    // device's limits.
    let image =
        unsafe { d.create_image(&info, None) }.map_err(|c| map_memory("vkCreateImage", c))?;
    let destroy_image = || {
        // SAFETY: an unused image of this device.
        unsafe { d.destroy_image(image, None) }
    };
    // SAFETY: `image` was just created on `d`.
    let req = unsafe { d.get_image_memory_requirements(image) };
    let allocation = match core.gpu.allocate(
        "gpusched image",
        req,
        gpu_allocator::MemoryLocation::GpuOnly,
        false,
    ) {
        Ok(a) => a,
        Err(e) => {
            destroy_image();
            return Err(e.into());
        }
    };
    // SAFETY: the allocation satisfies `req`.
    if let Err(c) = unsafe { d.bind_image_memory(image, allocation.memory(), allocation.offset()) }
    {
        destroy_image();
        core.gpu.free(allocation);
        return Err(map_memory("vkBindImageMemory", c).into());
    }
    let view = if desc.usage.contains(vk::ImageUsageFlags::COLOR_ATTACHMENT) {
        let vinfo = vk::ImageViewCreateInfo::default()
            .image(image)
            .view_type(vk::ImageViewType::TYPE_2D)
            .format(desc.format)
            .subresource_range(vk::ImageSubresourceRange {
                aspect_mask: vk::ImageAspectFlags::COLOR,
                base_mip_level: 0,
                level_count: 1,
                base_array_layer: 0,
                layer_count: 1,
            });
        // SAFETY: a bound image of this device, a view of its level 0.
        match unsafe { d.create_image_view(&vinfo, None) } {
            Ok(v) => Some(v),
            Err(c) => {
                destroy_image();
                core.gpu.free(allocation);
                return Err(map_memory("vkCreateImageView", c).into());
            }
        }
    } else {
        None
    };
    Ok(Image {
        inner: Arc::new(ImageInner {
            core: core.clone(),
            image,
            view,
            allocation: Mutex::new(Some(allocation)),
            desc,
            id: NEXT_IMAGE_ID.fetch_add(1, Ordering::Relaxed),
            resv: Resv::new(),
        }),
    })
}
