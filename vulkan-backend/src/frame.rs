//! A frame of a [`Presenter`](crate::Presenter): the acquired swapchain image and its
//! semaphores, the render job made from it (`Frame::render_job`), and the commands on
//! swapchain images: the copy of the offscreen target into the acquired image, and the
//! fallback that clears an image whose render job never reached the queue (the rules:
//! `present.rs`).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ash::vk;

use crate::present::{PresentError, FALLBACK_COLOUR};
use crate::{
    ExternalSignal, ExternalWait, Image, ImageDesc, RecordCtx, RecordError, VulkanDevice, VulkanJob,
};

/// One acquired swapchain image, to render and present ([`Presenter::present`](crate::Presenter::present)).
#[must_use = "a frame must be presented (Presenter::present), or its image stays acquired"]
#[derive(Debug)]
pub struct Frame {
    pub(crate) number: u64,
    pub(crate) index: u32,
    pub(crate) image: vk::Image,
    pub(crate) acquire: vk::Semaphore,
    pub(crate) present: vk::Semaphore,
    pub(crate) target: Image,
    pub(crate) generation: u64,
    pub(crate) submitted: Arc<AtomicBool>,
}

impl Frame {
    /// The frame's number (from 0, per presenter).
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The swapchain image index.
    pub fn image_index(&self) -> u32 {
        self.index
    }

    /// The acquired swapchain image.
    pub fn image(&self) -> vk::Image {
        self.image
    }

    /// The acquire semaphore (binary) the render job waits on.
    pub fn acquire_semaphore(&self) -> vk::Semaphore {
        self.acquire
    }

    /// The offscreen image the render job draws into (`R8G8B8A8_UNORM`, the swapchain's
    /// size, `GENERAL` between jobs); copied into the swapchain image by the job.
    pub fn target(&self) -> &Image {
        &self.target
    }

    /// The render job: `record` draws into [`target`](Frame::target) (declared written),
    /// then the job copies it into the swapchain image. It waits on the acquire semaphore and
    /// signals the present semaphore. Recording refuses another device generation than the
    /// frame's (its target is of that generation).
    pub fn render_job(
        &self,
        record: impl Fn(&RecordCtx<'_>, vk::CommandBuffer, &Image) -> Result<(), RecordError>
            + Send
            + 'static,
    ) -> VulkanJob {
        let target = self.target.clone();
        let swap_image = self.image;
        let job = VulkanJob::new(move |ctx, cb| {
            record(ctx, cb, &target)?;
            ctx.check_declared(&target, target.id())?;
            copy_to_swapchain(&ctx.core.device, cb, &target, swap_image);
            Ok(())
        })
        .writes(&self.target);
        // SAFETY: the frame's acquire and present semaphores are binary semaphores of the
        // swapchain's device, owned by the presenter and kept until the queue is idle before
        // any swapchain re-creation or teardown; the acquire semaphore's signal was submitted
        // by `vkAcquireNextImageKHR` and only this job (or the presenter's fallback
        // submission, when this job never reaches the queue) waits on it; the present
        // semaphore is unsignalled with no signal pending (the previous present of this image
        // consumed it).
        let mut job = unsafe {
            job.wait_semaphore(ExternalWait {
                semaphore: self.acquire,
                value: None,
                stage: vk::PipelineStageFlags::COLOR_ATTACHMENT_OUTPUT,
            })
            .signal_semaphore(ExternalSignal { semaphore: self.present, value: None })
        };
        if let Some(e) = job.external.as_deref_mut() {
            e.submitted = Some(self.submitted.clone());
        }
        job
    }
}

/// Records: swapchain image `UNDEFINED -> TRANSFER_DST` (after the acquire wait at
/// `COLOR_ATTACHMENT_OUTPUT`), blit `target` into it (`GENERAL -> TRANSFER_SRC ->
/// GENERAL`), then `-> PRESENT_SRC_KHR`.
fn copy_to_swapchain(d: &ash::Device, cb: vk::CommandBuffer, target: &Image, swap: vk::Image) {
    let desc = target.desc();
    let range = colour_range();
    let to_dst = [vk::ImageMemoryBarrier::default()
        .dst_access_mask(vk::AccessFlags::TRANSFER_WRITE)
        .old_layout(vk::ImageLayout::UNDEFINED)
        .new_layout(vk::ImageLayout::TRANSFER_DST_OPTIMAL)
        .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
        .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
        .image(swap)
        .subresource_range(range)];
    let src_ready = [vk::ImageMemoryBarrier::default()
        .src_access_mask(vk::AccessFlags::MEMORY_WRITE)
        .dst_access_mask(vk::AccessFlags::TRANSFER_READ)
        .old_layout(vk::ImageLayout::GENERAL)
        .new_layout(vk::ImageLayout::TRANSFER_SRC_OPTIMAL)
        .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
        .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
        .image(target.raw())
        .subresource_range(range)];
    let layers = vk::ImageSubresourceLayers {
        aspect_mask: vk::ImageAspectFlags::COLOR,
        mip_level: 0,
        base_array_layer: 0,
        layer_count: 1,
    };
    let corner = vk::Offset3D {
        x: i32::try_from(desc.width).unwrap_or(i32::MAX),
        y: i32::try_from(desc.height).unwrap_or(i32::MAX),
        z: 1,
    };
    let blit = [vk::ImageBlit::default()
        .src_subresource(layers)
        .src_offsets([vk::Offset3D::default(), corner])
        .dst_subresource(layers)
        .dst_offsets([vk::Offset3D::default(), corner])];
    let to_present = [
        vk::ImageMemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
            .old_layout(vk::ImageLayout::TRANSFER_DST_OPTIMAL)
            .new_layout(vk::ImageLayout::PRESENT_SRC_KHR)
            .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
            .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
            .image(swap)
            .subresource_range(range),
        // Back to GENERAL, the layout an image rests in between jobs.
        vk::ImageMemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::TRANSFER_READ)
            .dst_access_mask(vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE)
            .old_layout(vk::ImageLayout::TRANSFER_SRC_OPTIMAL)
            .new_layout(vk::ImageLayout::GENERAL)
            .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
            .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
            .image(target.raw())
            .subresource_range(range),
    ];
    // SAFETY: `cb` is recording outside a render pass; both images are of its device and
    // the same size (the target is made at the swapchain's extent); the swapchain image is
    // acquired and the job waits on its acquire semaphore at COLOR_ATTACHMENT_OUTPUT, the
    // first barrier's source stage.
    unsafe {
        let none = vk::DependencyFlags::empty();
        d.cmd_pipeline_barrier(
            cb,
            vk::PipelineStageFlags::COLOR_ATTACHMENT_OUTPUT,
            vk::PipelineStageFlags::TRANSFER,
            none,
            &[],
            &[],
            &to_dst,
        );
        d.cmd_pipeline_barrier(
            cb,
            vk::PipelineStageFlags::ALL_COMMANDS,
            vk::PipelineStageFlags::TRANSFER,
            none,
            &[],
            &[],
            &src_ready,
        );
        d.cmd_blit_image(
            cb,
            target.raw(),
            vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
            swap,
            vk::ImageLayout::TRANSFER_DST_OPTIMAL,
            &blit,
            vk::Filter::NEAREST,
        );
        d.cmd_pipeline_barrier(
            cb,
            vk::PipelineStageFlags::TRANSFER,
            vk::PipelineStageFlags::ALL_COMMANDS,
            none,
            &[],
            &[],
            &to_present,
        );
    }
}

fn colour_range() -> vk::ImageSubresourceRange {
    vk::ImageSubresourceRange {
        aspect_mask: vk::ImageAspectFlags::COLOR,
        base_mip_level: 0,
        level_count: 1,
        base_array_layer: 0,
        layer_count: 1,
    }
}

/// An offscreen image to render a frame into, of the swapchain's size.
pub(crate) fn new_target(dev: &VulkanDevice, extent: vk::Extent2D) -> Result<Image, PresentError> {
    let desc = ImageDesc::new(vk::Format::R8G8B8A8_UNORM, extent.width, extent.height).usage(
        vk::ImageUsageFlags::COLOR_ATTACHMENT
            | vk::ImageUsageFlags::TRANSFER_SRC
            | vk::ImageUsageFlags::TRANSFER_DST,
    );
    Ok(dev.image(desc)?)
}

/// Records a fallback: the image `UNDEFINED -> TRANSFER_DST`, cleared to
/// [`FALLBACK_COLOUR`], `-> PRESENT_SRC_KHR`.
pub(crate) fn record_fallback(
    d: &ash::Device,
    cb: vk::CommandBuffer,
    image: vk::Image,
) -> Result<(), PresentError> {
    let range = colour_range();
    let barrier = |old, new, src, dst| {
        [vk::ImageMemoryBarrier::default()
            .src_access_mask(src)
            .dst_access_mask(dst)
            .old_layout(old)
            .new_layout(new)
            .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
            .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
            .image(image)
            .subresource_range(range)]
    };
    let to_dst = barrier(
        vk::ImageLayout::UNDEFINED,
        vk::ImageLayout::TRANSFER_DST_OPTIMAL,
        vk::AccessFlags::empty(),
        vk::AccessFlags::TRANSFER_WRITE,
    );
    let to_present = barrier(
        vk::ImageLayout::TRANSFER_DST_OPTIMAL,
        vk::ImageLayout::PRESENT_SRC_KHR,
        vk::AccessFlags::TRANSFER_WRITE,
        vk::AccessFlags::empty(),
    );
    let clear = vk::ClearColorValue { float32: FALLBACK_COLOUR };
    let none = vk::DependencyFlags::empty();
    // SAFETY: `cb` is a fresh primary command buffer of a pool only this thread uses; the
    // image is the swapchain's, of the same device; the submission waits the acquire
    // semaphore at TRANSFER, the first barrier's source stage.
    unsafe {
        d.begin_command_buffer(cb, &vk::CommandBufferBeginInfo::default())
            .map_err(|c| PresentError::vulkan("vkBeginCommandBuffer", c))?;
        d.cmd_pipeline_barrier(
            cb,
            vk::PipelineStageFlags::TRANSFER,
            vk::PipelineStageFlags::TRANSFER,
            none,
            &[],
            &[],
            &to_dst,
        );
        d.cmd_clear_color_image(cb, image, vk::ImageLayout::TRANSFER_DST_OPTIMAL, &clear, &[range]);
        d.cmd_pipeline_barrier(
            cb,
            vk::PipelineStageFlags::TRANSFER,
            vk::PipelineStageFlags::BOTTOM_OF_PIPE,
            none,
            &[],
            &[],
            &to_present,
        );
        d.end_command_buffer(cb).map_err(|c| PresentError::vulkan("vkEndCommandBuffer", c))
    }
}
