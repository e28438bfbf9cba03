//! Graphics work: a job renders into an [`Image`] with dynamic rendering (Vulkan 1.3
//! `vkCmdBeginRendering`, no render-pass objects) and the built-in graphics pipelines
//! ([`GraphicsBuiltin`]), through [`RecordCtx::render`].
//!
//! The device enables the `dynamicRendering` and `synchronization2` features when it has
//! them (Vulkan 1.3); graphics work also needs the rings' queue family to support graphics
//! (lavapipe's single family does). [`VulkanDevice::supports_graphics`](crate::VulkanDevice::supports_graphics)
//! says whether both hold; otherwise [`RecordCtx::render`] fails with
//! [`RecordError::GraphicsUnsupported`].
//!
//! The shaders are GLSL in `vulkan-backend/shaders/` (`triangle.vert`, `triangle.frag`),
//! compiled by `shaders/build.sh` into committed `.spv` files like the compute kernels. A
//! pipeline is made per colour-attachment format, at first use (recording runs at arm time,
//! outside any signalling section), and lives as long as the device generation.
//!
//! # Image layouts
//! See [`Image`](crate::Image#layouts): images rest in `GENERAL`; rendering uses the
//! attachment in `GENERAL` too, so a render pass changes no layout, except that
//! [`Load::Clear`] first discards mip level 0 (`UNDEFINED` → `GENERAL`), which is what makes a
//! new image usable.

use std::fmt;
use std::sync::Mutex;

use ash::vk;

use crate::device::DeviceCore;
use crate::error::RecordError;
use crate::image::Image;
use crate::kernel::{spirv_words, RecordCtx};
use crate::sync::{self, lock};

/// The built-in graphics pipelines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GraphicsBuiltin {
    /// A solid triangle, no vertex buffer: apex at normalised device coordinates
    /// (0, -0.5), base corners (-0.5, 0.5) and (0.5, 0.5) (Vulkan's y points down), so it
    /// covers the centre of the render area and none of its corners. Push constant: the
    /// colour, RGBA `f32`s.
    Triangle,
}

impl GraphicsBuiltin {
    /// Every built-in graphics pipeline.
    pub const ALL: [GraphicsBuiltin; 1] = [GraphicsBuiltin::Triangle];

    /// The committed SPIR-V of its vertex and fragment shaders.
    pub fn spirv(self) -> (&'static [u8], &'static [u8]) {
        match self {
            GraphicsBuiltin::Triangle => (
                include_bytes!("../shaders/triangle.vert.spv"),
                include_bytes!("../shaders/triangle.frag.spv"),
            ),
        }
    }

    /// The GLSL source files (vertex, fragment) in `vulkan-backend/shaders/`.
    pub fn source_names(self) -> (&'static str, &'static str) {
        match self {
            GraphicsBuiltin::Triangle => ("triangle.vert", "triangle.frag"),
        }
    }
}

/// What a render pass does with the image's previous contents.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// Discards them and clears to this colour (RGBA, in the image's format).
    Clear([f32; 4]),
    /// Keeps them (the image must have been written before).
    Keep,
}

/// Whether the device can do graphics work: the features, and the queue family.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Support {
    /// `dynamicRendering` and `synchronization2` (Vulkan 1.3) are present: enabled.
    pub(crate) features: bool,
    /// Graphics work is possible: the features, and a graphics-capable queue family.
    pub(crate) queue: bool,
}

/// What `physical` supports, given whether its main queue family (the one graphics rings use)
/// can run graphics.
pub(crate) fn supported(
    instance: &ash::Instance,
    physical: vk::PhysicalDevice,
    family_has_graphics: bool,
) -> Support {
    // SAFETY: valid physical device.
    let props = unsafe { instance.get_physical_device_properties(physical) };
    if props.api_version < vk::API_VERSION_1_3 {
        return Support { features: false, queue: false };
    }
    let mut f13 = vk::PhysicalDeviceVulkan13Features::default();
    let mut f2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut f13);
    // SAFETY: valid physical device; the chain lives across the call.
    unsafe { instance.get_physical_device_features2(physical, &mut f2) };
    let features = f13.dynamic_rendering == vk::TRUE && f13.synchronization2 == vk::TRUE;
    let queue = features && family_has_graphics;
    Support { features, queue }
}

/// One device generation's graphics state: whether graphics work is possible and the
/// pipelines made so far.
pub(crate) struct Graphics {
    pub(crate) available: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Shared by every built-in pipeline: 16 bytes of fragment push constants, no sets.
    layout: Option<vk::PipelineLayout>,
    /// (pipeline, colour format) → pipeline.
    pipelines: Vec<(GraphicsBuiltin, vk::Format, vk::Pipeline)>,
}

impl fmt::Debug for Graphics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Graphics").field("available", &self.available).finish_non_exhaustive()
    }
}

impl Graphics {
    pub(crate) fn new(available: bool) -> Graphics {
        Graphics { available, state: Mutex::new(State::default()) }
    }

    /// Destroys the pipelines (device teardown, after `vkDeviceWaitIdle`).
    pub(crate) fn destroy(&mut self, device: &ash::Device) {
        let st = sync::get_mut(&mut self.state);
        // SAFETY: the device is idle; nothing uses the pipelines any more.
        unsafe {
            for (_, _, p) in st.pipelines.drain(..) {
                device.destroy_pipeline(p, None);
            }
            if let Some(l) = st.layout.take() {
                device.destroy_pipeline_layout(l, None);
            }
        }
    }

    /// The pipeline of `which` for colour attachments of `format` (made at first use).
    fn pipeline(
        &self,
        device: &ash::Device,
        which: GraphicsBuiltin,
        format: vk::Format,
    ) -> Result<(vk::Pipeline, vk::PipelineLayout), RecordError> {
        let mut st = lock(&self.state);
        let layout = match st.layout {
            Some(l) => l,
            None => {
                let ranges = [vk::PushConstantRange::default()
                    .stage_flags(vk::ShaderStageFlags::FRAGMENT)
                    .offset(0)
                    .size(16)];
                let info = vk::PipelineLayoutCreateInfo::default().push_constant_ranges(&ranges);
                // SAFETY: valid device and create info.
                let l = unsafe { device.create_pipeline_layout(&info, None) }
                    .map_err(|code| RecordError::Vk { op: "vkCreatePipelineLayout", code })?;
                st.layout = Some(l);
                l
            }
        };
        if let Some((_, _, p)) = st.pipelines.iter().find(|(w, f, _)| *w == which && *f == format) {
            return Ok((*p, layout));
        }
        let p = create_pipeline(device, which, format, layout)?;
        st.pipelines.push((which, format, p));
        Ok((p, layout))
    }
}

fn create_pipeline(
    device: &ash::Device,
    which: GraphicsBuiltin,
    format: vk::Format,
    layout: vk::PipelineLayout,
) -> Result<vk::Pipeline, RecordError> {
    let (vs, fs) = which.spirv();
    let bad = |_| RecordError::failed("built-in graphics shader is not spir-v");
    let (vs, fs) = (spirv_words(vs).map_err(bad)?, spirv_words(fs).map_err(bad)?);
    let module = |words: &[u32]| {
        let info = vk::ShaderModuleCreateInfo::default().code(words);
        // SAFETY: valid SPIR-V (checked header, committed and tested).
        unsafe { device.create_shader_module(&info, None) }
            .map_err(|code| RecordError::Vk { op: "vkCreateShaderModule", code })
    };
    let vm = module(&vs)?;
    let fm = match module(&fs) {
        Ok(m) => m,
        Err(e) => {
            // SAFETY: unused module.
            unsafe { device.destroy_shader_module(vm, None) };
            return Err(e);
        }
    };
    let stages = [
        vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::VERTEX)
            .module(vm)
            .name(c"main"),
        vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::FRAGMENT)
            .module(fm)
            .name(c"main"),
    ];
    let vertex = vk::PipelineVertexInputStateCreateInfo::default();
    let assembly = vk::PipelineInputAssemblyStateCreateInfo::default()
        .topology(vk::PrimitiveTopology::TRIANGLE_LIST);
    let viewport =
        vk::PipelineViewportStateCreateInfo::default().viewport_count(1).scissor_count(1);
    let raster = vk::PipelineRasterizationStateCreateInfo::default()
        .polygon_mode(vk::PolygonMode::FILL)
        .cull_mode(vk::CullModeFlags::NONE)
        .front_face(vk::FrontFace::COUNTER_CLOCKWISE)
        .line_width(1.0);
    let multisample = vk::PipelineMultisampleStateCreateInfo::default()
        .rasterization_samples(vk::SampleCountFlags::TYPE_1);
    let attachments = [vk::PipelineColorBlendAttachmentState::default()
        .color_write_mask(vk::ColorComponentFlags::RGBA)];
    let blend = vk::PipelineColorBlendStateCreateInfo::default().attachments(&attachments);
    let dynamic_states = [vk::DynamicState::VIEWPORT, vk::DynamicState::SCISSOR];
    let dynamic = vk::PipelineDynamicStateCreateInfo::default().dynamic_states(&dynamic_states);
    let formats = [format];
    let mut rendering =
        vk::PipelineRenderingCreateInfo::default().color_attachment_formats(&formats);
    let info = [vk::GraphicsPipelineCreateInfo::default()
        .stages(&stages)
        .vertex_input_state(&vertex)
        .input_assembly_state(&assembly)
        .viewport_state(&viewport)
        .rasterization_state(&raster)
        .multisample_state(&multisample)
        .color_blend_state(&blend)
        .dynamic_state(&dynamic)
        .layout(layout)
        .push_next(&mut rendering)];
    // SAFETY: valid modules and layout; dynamic rendering is enabled (checked by the caller).
    let r = unsafe { device.create_graphics_pipelines(vk::PipelineCache::null(), &info, None) };
    // SAFETY: the modules are no longer needed once the pipeline exists (or failed).
    unsafe {
        device.destroy_shader_module(vm, None);
        device.destroy_shader_module(fm, None);
    }
    match r {
        Ok(p) => Ok(p[0]),
        Err((_, code)) => Err(RecordError::Vk { op: "vkCreateGraphicsPipelines", code }),
    }
}

/// A render pass being recorded ([`RecordCtx::render`]): draw into it.
pub struct RenderPass<'a> {
    core: &'a DeviceCore,
    cb: vk::CommandBuffer,
    format: vk::Format,
    extent: vk::Extent2D,
}

impl fmt::Debug for RenderPass<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderPass")
            .field("format", &self.format)
            .field("extent", &self.extent)
            .finish_non_exhaustive()
    }
}

impl RenderPass<'_> {
    /// Draws a built-in pipeline with `colour` (RGBA) as its push constant, over the whole
    /// render area (viewport and scissor).
    ///
    /// # Errors
    /// Creating the pipeline failed (at first use for this format).
    pub fn draw_builtin(
        &mut self,
        which: GraphicsBuiltin,
        colour: [f32; 4],
    ) -> Result<(), RecordError> {
        let d = &self.core.device;
        let (pipeline, layout) = self.core.graphics.pipeline(d, which, self.format)?;
        let push: Vec<u8> = colour.iter().flat_map(|c| c.to_ne_bytes()).collect();
        let viewport = [vk::Viewport::default()
            .width(self.extent.width as f32)
            .height(self.extent.height as f32)
            .max_depth(1.0)];
        let scissor = [vk::Rect2D::default().extent(self.extent)];
        // SAFETY: `cb` is recording inside a dynamic render pass whose one colour attachment
        // has `format`, the pipeline's; the push constants match its layout.
        unsafe {
            d.cmd_bind_pipeline(self.cb, vk::PipelineBindPoint::GRAPHICS, pipeline);
            d.cmd_set_viewport(self.cb, 0, &viewport);
            d.cmd_set_scissor(self.cb, 0, &scissor);
            d.cmd_push_constants(self.cb, layout, vk::ShaderStageFlags::FRAGMENT, 0, &push);
            d.cmd_draw(self.cb, 3, 1, 0, 0);
        }
        Ok(())
    }

    /// The command buffer, for drawing with pipelines of the caller's (made for dynamic
    /// rendering with [`format`](Self::format) as the one colour attachment).
    pub fn command_buffer(&self) -> vk::CommandBuffer {
        self.cb
    }

    /// The colour attachment's format.
    pub fn format(&self) -> vk::Format {
        self.format
    }

    /// The render area (mip level 0 of the image).
    pub fn extent(&self) -> vk::Extent2D {
        self.extent
    }
}

impl RecordCtx<'_> {
    /// Records a render pass (dynamic rendering) into mip level 0 of `image`, its one
    /// colour attachment, used in the `GENERAL` layout: `load` says what happens to its
    /// contents first, `f` draws. The image must be declared by the job with
    /// [`writes`](crate::VulkanJob::writes) and created with `COLOR_ATTACHMENT` usage.
    /// Attachment writes are made visible to every later command of the job (and, through
    /// the ring's barriers, to later jobs).
    ///
    /// # Errors
    /// [`RecordError::GraphicsUnsupported`]; an image of another device or generation, or
    /// undeclared; [`RecordError::Image`] for an image without `COLOR_ATTACHMENT` usage;
    /// what `f` returns.
    pub fn render(
        &self,
        cb: vk::CommandBuffer,
        image: &Image,
        load: Load,
        f: impl FnOnce(&mut RenderPass<'_>) -> Result<(), RecordError>,
    ) -> Result<(), RecordError> {
        if !self.core.graphics.available {
            return Err(RecordError::GraphicsUnsupported);
        }
        self.check_declared(image, image.id())?;
        let Some(view) = image.view() else {
            return Err(RecordError::Image {
                image: image.id(),
                reason: "not created with COLOR_ATTACHMENT usage",
            });
        };
        let desc = image.desc();
        let extent = vk::Extent2D { width: desc.width, height: desc.height };
        let d = &self.core.device;
        let (old, load_op, clear) = match load {
            Load::Clear(c) => (vk::ImageLayout::UNDEFINED, vk::AttachmentLoadOp::CLEAR, c),
            Load::Keep => (vk::ImageLayout::GENERAL, vk::AttachmentLoadOp::LOAD, [0.0; 4]),
        };
        let colour_access =
            vk::AccessFlags::COLOR_ATTACHMENT_READ | vk::AccessFlags::COLOR_ATTACHMENT_WRITE;
        image_barrier(
            d,
            cb,
            image,
            0..1,
            (old, vk::ImageLayout::GENERAL),
            (vk::PipelineStageFlags::ALL_COMMANDS, vk::AccessFlags::MEMORY_WRITE),
            (vk::PipelineStageFlags::COLOR_ATTACHMENT_OUTPUT, colour_access),
        );
        let attachments = [vk::RenderingAttachmentInfo::default()
            .image_view(view)
            .image_layout(vk::ImageLayout::GENERAL)
            .load_op(load_op)
            .store_op(vk::AttachmentStoreOp::STORE)
            .clear_value(vk::ClearValue { color: vk::ClearColorValue { float32: clear } })];
        let info = vk::RenderingInfo::default()
            .render_area(vk::Rect2D::default().extent(extent))
            .layer_count(1)
            .color_attachments(&attachments);
        // SAFETY: `cb` is recording (outside any render pass); dynamic rendering is enabled
        // (checked); the view is of mip 0 of an image of this device with COLOR_ATTACHMENT
        // usage, in the GENERAL layout (barrier above).
        unsafe { d.cmd_begin_rendering(cb, &info) };
        let mut pass = RenderPass { core: self.core, cb, format: desc.format, extent };
        let drawn = f(&mut pass);
        // SAFETY: the render pass begun above (a failed `f` still ends it, leaving the
        // command buffer in a state its end and reset accept).
        unsafe { d.cmd_end_rendering(cb) };
        drawn?;
        image_barrier(
            d,
            cb,
            image,
            0..1,
            (vk::ImageLayout::GENERAL, vk::ImageLayout::GENERAL),
            (
                vk::PipelineStageFlags::COLOR_ATTACHMENT_OUTPUT,
                vk::AccessFlags::COLOR_ATTACHMENT_WRITE,
            ),
            (
                vk::PipelineStageFlags::ALL_COMMANDS,
                vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE,
            ),
        );
        Ok(())
    }

    /// Records a layout transition of every mip level of `image` from `old` to `new`, with
    /// every earlier command's writes made visible to every later command (a full barrier
    /// on the image). For jobs that record their own image work; see
    /// [`Image`](crate::Image#layouts) for the layout rule (a job leaves its images in
    /// `GENERAL`).
    ///
    /// # Errors
    /// An image of another device or generation, or undeclared.
    pub fn image_barrier(
        &self,
        cb: vk::CommandBuffer,
        image: &Image,
        old: vk::ImageLayout,
        new: vk::ImageLayout,
    ) -> Result<(), RecordError> {
        self.check_declared(image, image.id())?;
        image_barrier(
            &self.core.device,
            cb,
            image,
            0..image.desc().mip_levels,
            (old, new),
            (vk::PipelineStageFlags::ALL_COMMANDS, vk::AccessFlags::MEMORY_WRITE),
            (
                vk::PipelineStageFlags::ALL_COMMANDS,
                vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE,
            ),
        );
        Ok(())
    }
}

/// Records one image memory barrier over `mips` (colour aspect, layer 0).
pub(crate) fn image_barrier(
    device: &ash::Device,
    cb: vk::CommandBuffer,
    image: &Image,
    mips: std::ops::Range<u32>,
    (old, new): (vk::ImageLayout, vk::ImageLayout),
    (src_stage, src_access): (vk::PipelineStageFlags, vk::AccessFlags),
    (dst_stage, dst_access): (vk::PipelineStageFlags, vk::AccessFlags),
) {
    let barrier = [vk::ImageMemoryBarrier::default()
        .src_access_mask(src_access)
        .dst_access_mask(dst_access)
        .old_layout(old)
        .new_layout(new)
        .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
        .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
        .image(image.raw())
        .subresource_range(vk::ImageSubresourceRange {
            aspect_mask: vk::ImageAspectFlags::COLOR,
            base_mip_level: mips.start,
            level_count: mips.end - mips.start,
            base_array_layer: 0,
            layer_count: 1,
        })];
    // SAFETY: `cb` is recording (callers hold its pool's lock); the image belongs to its
    // device (callers checked).
    unsafe {
        device.cmd_pipeline_barrier(
            cb,
            src_stage,
            dst_stage,
            vk::DependencyFlags::empty(),
            &[],
            &[],
            &barrier,
        )
    };
}

impl crate::VulkanDevice {
    /// Whether the current generation can record graphics work ([`RecordCtx::render`]):
    /// Vulkan 1.3 with `dynamicRendering` and `synchronization2` (enabled at device
    /// creation), and a graphics-capable queue family for the rings.
    pub fn supports_graphics(&self) -> bool {
        self.core().graphics.available
    }
}
