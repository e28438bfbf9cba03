//! `gpusched-vulkan`: the Vulkan backend of `gpusched`. Real compute jobs on real queues
//! (Mesa lavapipe by default, a GPU when present) through the scheduler.
//!
//! - A [`VulkanDevice`] is a logical device (loaded at run time with `ash`'s `Entry::load`;
//!   chosen by [`DeviceSelector`], `GPUSCHED_DEVICE` = an index or a name substring;
//!   validation with `GPUSCHED_VALIDATION=1`), with one completion thread per ring.
//! - Each ring ([`VulkanDevice::ring`]) is a `gpusched::Scheduler<VulkanRing>` over a
//!   `VkQueue` (rings may share one: lavapipe has a single queue). The hardware fence of job N
//!   is "the ring's timeline semaphore reached N" (the design wgpu-hal's Vulkan backend uses
//!   for its own fences), exposed through [`FenceOps`](gpusched::fence::FenceOps): polled with
//!   `vkGetSemaphoreCounterValue`, waited with `vkWaitSemaphores`, signalled in order by the
//!   ring's completion thread.
//! - A [`VulkanJob`] is a recording closure (re-recordable on another device) plus the
//!   resources it reads and writes: anything implementing [`GpuResource`] (a `Resv`, the
//!   device generation it belongs to, a keep-alive handle): gpusched's [`Buffer`]s and
//!   [`Image`]s, and an engine's own buffers and images (see [`GpuResource`] for how to wrap
//!   them). [`VulkanDevice::submit`] does the implicit synchronisation through their `Resv`s
//!   (`drm_sched_job_add_implicit_dependencies`), refuses resources of another device, and the
//!   job keeps them alive until the hardware has passed it.
//! - Memory: [`VulkanDevice::buffer`] (host-visible coherent, a size-class allocator) and
//!   [`VulkanDevice::buffer_in`] with a [`MemoryLocation`] (`GpuOnly`, `Upload`, `Readback`,
//!   on `gpu-allocator`); the host reaches `GpuOnly` buffers through copy jobs
//!   ([`VulkanDevice::upload`], [`VulkanDevice::download`]).
//! - Images ([`VulkanDevice::image`]): 2D, device-local, with a `Resv`; between jobs an image
//!   rests in the `GENERAL` layout (the rule: [`Image`](Image#layouts)).
//! - Embedding in an engine: [`VulkanDevice::adopt`] runs on the engine's own `ash` instance
//!   and device and the queues it lends ([`AdoptedDevice`], [`LentQueue`]), sharing each
//!   queue through a [`QueueLock`] both sides take, after checking the engine's
//!   [`EnabledFeatures`]; gpusched destroys only what it created, and a lost adopted device
//!   gets its next generation from the engine's [`Recreate`] callback. Jobs wait on and
//!   signal the engine's semaphores ([`VulkanJob::wait_semaphore`],
//!   [`VulkanJob::signal_semaphore`]; what a wait the scheduler cannot see means for
//!   timeouts: [`ExternalWait`]). `examples/engine.rs` puts it together.
//! - Compute kernels: the [`Builtin`]s (fill, SAXPY, reduction, busy) and user SPIR-V;
//!   graphics work: [`RecordCtx::render`] (dynamic rendering) with the [`GraphicsBuiltin`]
//!   pipelines, read back with [`VulkanDevice::read_image_rgba8`].
//! - Windows: a [`Surface`] and its [`Swapchain`], driven by a [`Presenter`] that presents
//!   each [`Frame`] once its render job is on the queue (after its scheduled fence) and feeds
//!   frames whose job never got there, so binary semaphores stay balanced on every path
//!   (the rules: [`present`](Presenter)). `examples/window.rs` is a windowed frame loop.
//!
//! # Layers
//! Each row holds the next ones it names (by `Arc`); "touched by" lists the threads that use
//! it: *client* threads (the application: creating, arming, pushing, reading buffers), the
//! scheduler's *pump* (whichever thread makes a job runnable: a client pushing, or a fence
//! callback on a completion thread), a ring's *completion* thread, the device's *recovery*
//! thread, the reset domain's *TDR* worker.
//!
//! | Layer | Owns | Touched by |
//! |---|---|---|
//! | [`VulkanDevice`] (`device/mod.rs`) | a `DeviceShared`; the public API | clients |
//! | `DeviceShared` (`device/shared.rs`) | what survives a device loss: the current `DeviceCore`, the rings' `RingSlot`s (weakly), user kernels' SPIR-V, the reset domain, the fault plan, the graveyard of lost generations, the recovery thread | clients; recovery (recreation, reaping, teardown); TDR (`lost_busy`); a completion thread whose fence callback drops the last handle hands the teardown to recovery |
//! | `DeviceCore` (`device/core.rs`) | one generation: the `VkDevice` (created here, or an engine's adopted one, `device/adopt.rs`, which it never destroys), its queues (each with its `QueueLock`), memory allocator, kernels, the busy kernel's scratch buffer, its fault state (`fault::DeviceFaults`: injected-hang semaphores, busy-kernel calibration; zero-sized without the feature), the loss flag; destroyed with its last reference, never inside a signalling section | clients (recording, buffers), the pump (`run_job` submits on its queues), completion (declares loss), TDR (declares loss, releases hangs), recovery (creates it, buries it) |
//! | [`VulkanRing`] (`ring`) | a `RingSlot`: the [`Backend`](gpusched::Backend) a `Scheduler` owns | clients (`prepare_job` at arm time), the pump (`run_job`, `flush`, `free_job`), TDR (`timedout_job`) |
//! | `RingSlot` (`ring`) | one ring across generations: its current `RingHw`, name, queue, credit limit, batching flags; holds the `DeviceShared` | as `VulkanRing`; recovery swaps its `RingHw` |
//! | `RingHw` (`ring`) | one ring on one generation: the timeline semaphore, command pool, in-flight list of hardware fences, the completion thread; holds the `DeviceCore` | the pump (submits), completion (drains the semaphore, signals the fences in order), TDR (judges progress, fails fences), recovery (its graveyard drops a lost one once its hardware passed its work) |
//! | [`Buffer`] (`memory.rs`, `alloc.rs`) | a `VkBuffer` and its memory (a size-class block, or a `gpu-allocator` allocation of the core's) on one generation, and its `Resv`; holds the `DeviceCore` | clients (declaring, host reads and writes); kept by a job until its hardware passed it |
//! | [`Image`] (`image.rs`) | a `VkImage`, its view and its `gpu-allocator` memory on one generation, and its `Resv`; holds the `DeviceCore` | clients (declaring, rendering, reading back); kept by a job until its hardware passed it |
//! | an engine's [`GpuResource`] (`resource.rs`) | whatever the engine made, with a `Resv`; holds no `DeviceCore` (a ring drops its retired jobs' resources before its core) | as a buffer |
//! | [`VulkanJob`] (`job.rs`) | the user's description (recording closure, declared buffers, explicit dependencies, injected fault) and the backend's `Submission` (command buffer, `RingHw`, prepared hardware fence, timeline value, recording error) | clients (built, then recorded at arm time); the pump (`run_job`, `free_job`: its command buffer and buffers go to the `RingHw`'s retired list) |
//!
//! # The contract
//! The scheduler's: `prepare_job` records and allocates at arm time; `run_job` submits inside
//! a signalling section without allocating, taking a `Resv` lock or waiting; the completion
//! thread signals without allocating; so does the timeout handler. Hardware progress (each
//! ring's timeline semaphore) is tracked apart from fence state: a job whose fence was
//! force-completed (timeout, device loss) keeps its command buffer and buffers until the
//! hardware has really passed it. A device is destroyed only after its work finished, never
//! with work pending. Every fence handed out signals.
//!
//! # Recovery (see [`recovery`])
//! - A timeout blames the guilty job and ends it `TimedOut`; an injected hang is released;
//!   innocent jobs queued behind it on the `VkQueue` complete by themselves (no resubmission
//!   is needed: their command buffers are still valid and still queued). A ring whose
//!   hardware makes no progress across three timeouts is stuck on a hang nothing can release
//!   (a real shader hang on a driver without a watchdog cannot be reset in-process): the
//!   device is declared lost.
//! - Device loss fails every unfinished fence of the device `DeviceLost` and a new
//!   *generation* is created in the background ([`VulkanDevice::generation`],
//!   [`VulkanDevice::wait_generation`]); the rings, their schedulers, entities, karma, bans
//!   and kernel handles carry over; buffers of the lost generation report
//!   `DeviceLost`/[`RecordError::LostGeneration`]; clients re-create buffers and resubmit.
//! - Fault injection (feature `fault-injection`, off by default): `fault::JobFault`,
//!   `VulkanJob::inject`, a seeded `fault::FaultPlan`, `VulkanDevice::lose_device`. Without
//!   the feature no fault state exists (its types are zero-sized no-ops, see `fault/mod.rs`).
//!
//! # Example
//! Runs in CI on lavapipe (`make doctest`); it needs a Vulkan driver.
//! ```
//! use std::time::Duration;
//! use gpusched::{Entity, Priority, SchedulerConfig};
//! use gpusched_vulkan::{Builtin, VulkanDevice, VulkanJob};
//!
//! let dev = VulkanDevice::new()?;
//! let ring = dev.ring(0, SchedulerConfig::new("compute0"))?;
//! let client = Entity::new(&[&ring], Priority::Normal)?;
//! let buf = dev.buffer(1024 * 4)?;
//! let b = buf.clone();
//! let job = VulkanJob::new(move |ctx, cb| {
//!     let fill = ctx.builtin(Builtin::Fill);
//!     let push = [2.5f32.to_ne_bytes(), 1024u32.to_ne_bytes()].concat();
//!     ctx.dispatch(cb, &fill, &[&b], &push, [1024 / 64, 1, 1])
//! })
//! .writes(&buf);
//! let done = VulkanDevice::submit(&client, job)?;
//! done.wait_timeout(Duration::from_secs(10))?;
//! assert!(buf.read_f32(Duration::from_secs(1))?.iter().all(|v| *v == 2.5));
//! // Destroy the device before the process exits (after its rings, entities and buffers).
//! drop((client, ring, buf));
//! dev.close(Duration::from_secs(10)).map_err(|_| "device still referenced")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Graphics: a render job into an image, read back on the host by a copy job on another
//! entity (ordered after the render by the image's `Resv`).
//! ```
//! use std::time::Duration;
//! use gpusched::{Entity, Priority, SchedulerConfig};
//! use gpusched_vulkan::ash::vk;
//! use gpusched_vulkan::{GraphicsBuiltin, ImageDesc, Load, VulkanDevice, VulkanJob};
//!
//! let dev = VulkanDevice::new()?;
//! if dev.supports_graphics() {
//!     let ring = dev.ring(0, SchedulerConfig::new("gfx0"))?;
//!     let client = Entity::new(&[&ring], Priority::Normal)?;
//!     let image = dev.image(ImageDesc::new(vk::Format::R8G8B8A8_UNORM, 16, 16))?;
//!     let target = image.clone();
//!     let job = VulkanJob::new(move |ctx, cb| {
//!         ctx.render(cb, &target, Load::Clear([0.0, 0.0, 0.0, 1.0]), |pass| {
//!             pass.draw_builtin(GraphicsBuiltin::Triangle, [1.0, 0.0, 0.0, 1.0])
//!         })
//!     })
//!     .writes(&image);
//!     VulkanDevice::submit(&client, job)?;
//!     let pixels = dev.read_image_rgba8(&client, &image, Duration::from_secs(10))?;
//!     let centre = (8 * 16 + 8) * 4;
//!     assert_eq!(&pixels[centre..centre + 4], &[255, 0, 0, 255]);
//!     drop((client, ring, image));
//! }
//! dev.close(Duration::from_secs(10)).map_err(|_| "device still referenced")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

/// A `tracing` event exempt from the checker's allocation rule, for paths a signalling
/// section can reach (a timeout handler, `run_job`, a fence callback, a ring's drop): a
/// subscriber may allocate to format it, and a diagnostic must not count as reclaim (the
/// `GFP_NOWAIT` analogue, `lockdep::no_reclaim`; the scheduler's own `diag!` does the same).
macro_rules! diag {
    ($level:ident, $($arg:tt)*) => {{
        let _exempt = gpusched::fence::lockdep::no_reclaim();
        tracing::$level!($($arg)*);
    }};
}

mod alloc;
mod device;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
mod fault;
mod frame;
mod graphics;
mod image;
mod instance;
mod job;
mod kernel;
mod memory;
mod present;
mod resource;
mod ring;
mod semaphore;
mod swapchain;
mod sync;
mod transfer;

pub use ash;

pub use crate::device::recovery;

pub use crate::alloc::MemoryLocation;
pub use crate::device::{
    live_devices, plan_queues, AdoptError, AdoptedDevice, DeviceConfig, DeviceSelector,
    EnabledFeatures, LentQueue, QueueCaps, QueueFamilyInfo, QueueGuard, QueueLock, Recreate,
    ReleaseFn, VulkanDevice, MAX_RINGS,
};
pub use crate::error::{
    BufferError, DeviceError, HostAccessError, InitError, RecordError, ShaderError, SubmitError,
};
#[cfg(feature = "fault-injection")]
pub use crate::fault::{FaultPlan, FaultStats, JobFault, SubmitFault};
pub use crate::frame::Frame;
pub use crate::graphics::{GraphicsBuiltin, Load, RenderPass};
pub use crate::image::{Image, ImageDesc, ImageError};
pub use crate::instance::{validation_errors, validation_warnings};
pub use crate::job::{RecordFn, VulkanJob};
pub use crate::kernel::{Builtin, Kernel, RecordCtx};
pub use crate::memory::Buffer;
pub use crate::present::{
    PresentError, PresentOutcome, PresentStats, Presenter, PresenterConfig, FALLBACK_COLOUR,
};
pub use crate::resource::{GenerationId, GpuResource};
pub use crate::ring::VulkanRing;
pub use crate::semaphore::{ExternalSignal, ExternalWait};
pub use crate::swapchain::{Surface, Swapchain};
pub use crate::transfer::{Download, TransferError};
