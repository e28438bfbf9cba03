//! Compute kernels (SPIR-V → compute pipelines with push descriptors) and the recording
//! context handed to job closures.
//!
//! The built-in kernels are GLSL in `vulkan-backend/shaders/*.comp`, compiled for Vulkan 1.2
//! by `shaders/build.sh` (glslc) into the committed `.spv` files included here; a test checks
//! they are up to date. Buffers are bound with `VK_KHR_push_descriptor`, so recording needs no
//! descriptor pool.

use std::fmt;
use std::sync::Arc;

use ash::vk;

use crate::device::DeviceCore;
use crate::error::{map_shader, RecordError, ShaderError};
use crate::memory::Buffer;
use crate::resource::{same, GpuResource};
use crate::sync::lock;

/// The built-in kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `data[i] = value` for `i < count`. One buffer; push constants `(value: f32, count:
    /// u32)`; 64 invocations per workgroup.
    Fill,
    /// `y[i] = a * x[i] + y[i]` for `i < n`. Buffers `x` (read), `y` (read-write); push
    /// constants `(a: f32, n: u32)`; 64 invocations per workgroup.
    Saxpy,
    /// Partial sums: `out[g] = sum(in[256 g .. 256 (g + 1)])` below `n`. Buffers `in`, `out`;
    /// push constant `n: u32`; 256 invocations per workgroup. Apply again to the partials.
    Reduce,
    /// Burns `rounds * 256` integer steps per invocation (64 per workgroup); the job's length
    /// scales with the workgroup count. One scratch buffer; push constant `rounds: u32`.
    Busy,
}

impl Builtin {
    /// Every built-in kernel.
    pub const ALL: [Builtin; 4] = [Builtin::Fill, Builtin::Saxpy, Builtin::Reduce, Builtin::Busy];

    /// The committed SPIR-V.
    pub fn spirv(self) -> &'static [u8] {
        match self {
            Builtin::Fill => include_bytes!("../shaders/fill.spv"),
            Builtin::Saxpy => include_bytes!("../shaders/saxpy.spv"),
            Builtin::Reduce => include_bytes!("../shaders/reduce.spv"),
            Builtin::Busy => include_bytes!("../shaders/busy.spv"),
        }
    }

    /// The GLSL source file name in `vulkan-backend/shaders/`.
    pub fn source_name(self) -> &'static str {
        match self {
            Builtin::Fill => "fill",
            Builtin::Saxpy => "saxpy",
            Builtin::Reduce => "reduce",
            Builtin::Busy => "busy",
        }
    }

    /// Buffers bound, push-constant bytes.
    pub(crate) fn layout(self) -> (u32, u32) {
        match self {
            Builtin::Fill => (1, 8),
            Builtin::Saxpy => (2, 8),
            Builtin::Reduce => (2, 4),
            Builtin::Busy => (1, 4),
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A compute kernel of one device: a pipeline taking `bindings` storage buffers (bindings
/// `0..bindings` of set 0) and `push_size` bytes of push constants. A small copyable handle,
/// valid on every generation of its device (each new generation creates the kernels again,
/// in the same order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub(crate) index: usize,
    /// The device handle (all its generations) it belongs to.
    pub(crate) device: u64,
    /// Storage buffers bound.
    pub bindings: u32,
    /// Push-constant bytes.
    pub push_size: u32,
}

/// The Vulkan objects of a kernel. Destroyed with the device.
pub(crate) struct KernelRaw {
    pub(crate) pipeline: vk::Pipeline,
    pub(crate) layout: vk::PipelineLayout,
    pub(crate) set_layout: vk::DescriptorSetLayout,
}

impl KernelRaw {
    pub(crate) fn destroy(&self, device: &ash::Device) {
        // SAFETY: called at device destruction, after `vkDeviceWaitIdle`.
        unsafe {
            device.destroy_pipeline(self.pipeline, None);
            device.destroy_pipeline_layout(self.layout, None);
            device.destroy_descriptor_set_layout(self.set_layout, None);
        }
    }
}

/// Checks that `bytes` look like SPIR-V (the driver and validation layer must never see
/// garbage) and returns the words.
pub(crate) fn spirv_words(bytes: &[u8]) -> Result<Vec<u32>, ShaderError> {
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return Err(ShaderError::InvalidSpirv("length is not a non-zero multiple of 4 bytes"));
    }
    if bytes.len() < 20 {
        return Err(ShaderError::InvalidSpirv("shorter than the spir-v header"));
    }
    let words: Vec<u32> =
        bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if words[0] != 0x0723_0203 {
        return Err(ShaderError::InvalidSpirv("no spir-v magic number"));
    }
    Ok(words)
}

pub(crate) fn create_kernel(
    device: &ash::Device,
    spirv: &[u8],
    bindings: u32,
    push_size: u32,
) -> Result<KernelRaw, ShaderError> {
    if bindings > 8 {
        return Err(ShaderError::InvalidLayout("at most 8 storage buffers"));
    }
    if push_size > 128 || push_size % 4 != 0 {
        return Err(ShaderError::InvalidLayout("push constants: a multiple of 4, at most 128"));
    }
    let words = spirv_words(spirv)?;
    let binds: Vec<vk::DescriptorSetLayoutBinding<'_>> = (0..bindings)
        .map(|b| {
            vk::DescriptorSetLayoutBinding::default()
                .binding(b)
                .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                .descriptor_count(1)
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
        })
        .collect();
    let set_info = vk::DescriptorSetLayoutCreateInfo::default()
        .flags(vk::DescriptorSetLayoutCreateFlags::PUSH_DESCRIPTOR_KHR)
        .bindings(&binds);
    // SAFETY: valid device; the device enables VK_KHR_push_descriptor.
    let set_layout = unsafe { device.create_descriptor_set_layout(&set_info, None) }
        .map_err(|c| map_shader("vkCreateDescriptorSetLayout", c))?;
    let ranges = [vk::PushConstantRange::default()
        .stage_flags(vk::ShaderStageFlags::COMPUTE)
        .offset(0)
        .size(push_size)];
    let sets = [set_layout];
    let mut pl_info = vk::PipelineLayoutCreateInfo::default().set_layouts(&sets);
    if push_size > 0 {
        pl_info = pl_info.push_constant_ranges(&ranges);
    }
    let destroy_set = || {
        // SAFETY: unused layout, created above.
        unsafe { device.destroy_descriptor_set_layout(set_layout, None) }
    };
    // SAFETY: valid device and create info.
    let layout = match unsafe { device.create_pipeline_layout(&pl_info, None) } {
        Ok(l) => l,
        Err(c) => {
            destroy_set();
            return Err(map_shader("vkCreatePipelineLayout", c));
        }
    };
    let destroy_layouts = || {
        // SAFETY: unused layouts, created above.
        unsafe { device.destroy_pipeline_layout(layout, None) };
        destroy_set();
    };
    let sm_info = vk::ShaderModuleCreateInfo::default().code(&words);
    // SAFETY: `words` is SPIR-V with a valid header (checked); the module lives only during
    // pipeline creation.
    let module = match unsafe { device.create_shader_module(&sm_info, None) } {
        Ok(m) => m,
        Err(c) => {
            destroy_layouts();
            return Err(map_shader("vkCreateShaderModule", c));
        }
    };
    let stage = vk::PipelineShaderStageCreateInfo::default()
        .stage(vk::ShaderStageFlags::COMPUTE)
        .module(module)
        .name(c"main");
    let info = [vk::ComputePipelineCreateInfo::default().stage(stage).layout(layout)];
    // SAFETY: valid module and layout; one create info.
    let result = unsafe { device.create_compute_pipelines(vk::PipelineCache::null(), &info, None) };
    // SAFETY: the module is no longer needed once the pipeline is created (or failed).
    unsafe { device.destroy_shader_module(module, None) };
    match result {
        Ok(p) => Ok(KernelRaw { pipeline: p[0], layout, set_layout }),
        Err((_, c)) => {
            destroy_layouts();
            Err(map_shader("vkCreateComputePipelines", c))
        }
    }
}

/// What a recording closure gets besides its command buffer: the device's kernels and
/// helpers that check what they record (buffers of this device, declared by the job, the
/// right number of bindings and push-constant bytes).
pub struct RecordCtx<'a> {
    pub(crate) core: &'a DeviceCore,
    pub(crate) declared: &'a [Arc<dyn GpuResource>],
}

impl fmt::Debug for RecordCtx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordCtx")
            .field("device", &self.core.name)
            .field("generation", &self.core.generation)
            .finish_non_exhaustive()
    }
}

impl RecordCtx<'_> {
    /// The built-in kernel on this device.
    pub fn builtin(&self, which: Builtin) -> Kernel {
        let (bindings, push_size) = which.layout();
        Kernel { index: which.index(), device: self.core.device_id, bindings, push_size }
    }

    /// The generation of the device being recorded for.
    pub fn generation(&self) -> u64 {
        self.core.generation
    }

    /// The raw device (for closures that record commands themselves).
    pub fn device(&self) -> &ash::Device {
        &self.core.device
    }

    fn check_buffer(&self, b: &Buffer) -> Result<(), RecordError> {
        self.check_declared(b, b.id())
    }

    /// `r` belongs to the generation being recorded for and was declared by the job
    /// (`id` names it in the error).
    pub(crate) fn check_declared(
        &self,
        r: &(impl GpuResource + ?Sized),
        id: u64,
    ) -> Result<(), RecordError> {
        crate::ring::check_generation(r, self.core)?;
        if !self.declared.iter().any(|d| same(&**d, r)) {
            return Err(RecordError::Undeclared(id));
        }
        Ok(())
    }

    /// Records a dispatch of `kernel` with `buffers` bound to bindings `0..` and `push` as
    /// push constants, over `groups` workgroups.
    ///
    /// # Errors
    /// A kernel or buffer of another device, an undeclared buffer, a wrong binding count or
    /// push-constant size, too many workgroups.
    pub fn dispatch(
        &self,
        cb: vk::CommandBuffer,
        kernel: &Kernel,
        buffers: &[&Buffer],
        push: &[u8],
        groups: [u32; 3],
    ) -> Result<(), RecordError> {
        if kernel.device != self.core.device_id {
            return Err(RecordError::ForeignKernel);
        }
        if buffers.len() != kernel.bindings as usize {
            return Err(RecordError::Bindings { expected: kernel.bindings, got: buffers.len() });
        }
        if push.len() != kernel.push_size as usize {
            return Err(RecordError::PushConstants { expected: kernel.push_size, got: push.len() });
        }
        for b in buffers {
            self.check_buffer(b)?;
        }
        self.dispatch_unchecked(cb, kernel, buffers.iter().map(|b| b.raw()), push, groups)
    }

    /// Records the busy kernel over `workgroups` workgroups of `rounds * 256` steps per
    /// invocation, writing only to the device's scratch buffer (no buffer to declare).
    ///
    /// # Errors
    /// Too many workgroups.
    pub fn busy(
        &self,
        cb: vk::CommandBuffer,
        rounds: u32,
        workgroups: u32,
    ) -> Result<(), RecordError> {
        let k = self.builtin(Builtin::Busy);
        self.dispatch_unchecked(
            cb,
            &k,
            std::iter::once(self.core.scratch),
            &rounds.to_ne_bytes(),
            [workgroups, 1, 1],
        )
    }

    fn dispatch_unchecked(
        &self,
        cb: vk::CommandBuffer,
        kernel: &Kernel,
        buffers: impl Iterator<Item = vk::Buffer>,
        push: &[u8],
        groups: [u32; 3],
    ) -> Result<(), RecordError> {
        let max = self.core.max_workgroups;
        for (g, m) in groups.iter().zip(max) {
            if *g > m {
                return Err(RecordError::Workgroups { got: *g, max: m });
            }
        }
        let kernels = lock(&self.core.kernels);
        let Some(raw) = kernels.get(kernel.index) else { return Err(RecordError::ForeignKernel) };
        let infos: Vec<[vk::DescriptorBufferInfo; 1]> = buffers
            .map(|b| {
                [vk::DescriptorBufferInfo::default().buffer(b).offset(0).range(vk::WHOLE_SIZE)]
            })
            .collect();
        let writes: Vec<vk::WriteDescriptorSet<'_>> = infos
            .iter()
            .enumerate()
            .map(|(i, info)| {
                vk::WriteDescriptorSet::default()
                    .dst_binding(i as u32)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .buffer_info(info)
            })
            .collect();
        let d = &self.core.device;
        // SAFETY: `cb` is in the recording state (the ring began it and holds its pool's
        // lock); the pipeline, layout and buffers belong to this device (checked); the push
        // constants match the layout's range (checked).
        unsafe {
            d.cmd_bind_pipeline(cb, vk::PipelineBindPoint::COMPUTE, raw.pipeline);
            if !writes.is_empty() {
                self.core.push.cmd_push_descriptor_set(
                    cb,
                    vk::PipelineBindPoint::COMPUTE,
                    raw.layout,
                    0,
                    &writes,
                );
            }
            if !push.is_empty() {
                d.cmd_push_constants(cb, raw.layout, vk::ShaderStageFlags::COMPUTE, 0, push);
            }
            d.cmd_dispatch(cb, groups[0], groups[1], groups[2]);
        }
        Ok(())
    }

    /// Records a global memory barrier between commands of this job (compute and transfer
    /// writes made visible to later compute and transfer accesses).
    pub fn barrier(&self, cb: vk::CommandBuffer) {
        full_barrier(&self.core.device, cb);
    }

    /// Records `vkCmdFillBuffer` of the whole buffer with the 32-bit `value`.
    ///
    /// # Errors
    /// A buffer of another device or an undeclared one.
    pub fn fill_u32(
        &self,
        cb: vk::CommandBuffer,
        buffer: &Buffer,
        value: u32,
    ) -> Result<(), RecordError> {
        self.check_buffer(buffer)?;
        // SAFETY: `cb` is recording; the buffer belongs to this device and was created with
        // TRANSFER_DST.
        unsafe { self.core.device.cmd_fill_buffer(cb, buffer.raw(), 0, vk::WHOLE_SIZE, value) };
        Ok(())
    }
}

/// Records a global memory barrier: every earlier command's writes, visible to every later
/// command.
pub(crate) fn full_barrier(device: &ash::Device, cb: vk::CommandBuffer) {
    let mb = [vk::MemoryBarrier::default()
        .src_access_mask(vk::AccessFlags::MEMORY_WRITE)
        .dst_access_mask(vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE)];
    // SAFETY: `cb` is recording (callers hold its pool's lock).
    unsafe {
        device.cmd_pipeline_barrier(
            cb,
            vk::PipelineStageFlags::ALL_COMMANDS,
            vk::PipelineStageFlags::ALL_COMMANDS,
            vk::DependencyFlags::empty(),
            &mb,
            &[],
            &[],
        )
    };
}

/// Records a memory barrier to the host: every earlier command's writes, visible to host
/// reads after the semaphore signal.
pub(crate) fn host_barrier(device: &ash::Device, cb: vk::CommandBuffer) {
    let mb = [vk::MemoryBarrier::default()
        .src_access_mask(vk::AccessFlags::MEMORY_WRITE)
        .dst_access_mask(vk::AccessFlags::HOST_READ)];
    // SAFETY: `cb` is recording (callers hold its pool's lock).
    unsafe {
        device.cmd_pipeline_barrier(
            cb,
            vk::PipelineStageFlags::ALL_COMMANDS,
            vk::PipelineStageFlags::HOST,
            vk::DependencyFlags::empty(),
            &mb,
            &[],
            &[],
        )
    };
}
