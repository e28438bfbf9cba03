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
//!   [`Buffer`]s it reads and writes; [`VulkanDevice::submit`] does the implicit
//!   synchronisation through the buffers' `Resv`s (`drm_sched_job_add_implicit_dependencies`).
//! - Compute kernels: the [`Builtin`]s (fill, SAXPY, reduction, busy) and user SPIR-V.
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
//! | `DeviceCore` (`device/core.rs`) | one generation: the `VkDevice`, its queues, memory allocator, kernels, scratch buffer, injected-hang semaphores, the loss flag; destroyed with its last reference, never inside a signalling section | clients (recording, buffers), the pump (`run_job` submits on its queues), completion (declares loss), TDR (declares loss, releases hangs), recovery (creates it, buries it) |
//! | [`VulkanRing`] (`ring`) | a `RingSlot`: the [`Backend`](gpusched::Backend) a `Scheduler` owns | clients (`prepare_job` at arm time), the pump (`run_job`, `flush`, `free_job`), TDR (`timedout_job`) |
//! | `RingSlot` (`ring`) | one ring across generations: its current `RingHw`, name, queue, credit limit, batching flags; holds the `DeviceShared` | as `VulkanRing`; recovery swaps its `RingHw` |
//! | `RingHw` (`ring`) | one ring on one generation: the timeline semaphore, command pool, in-flight list of hardware fences, the completion thread; holds the `DeviceCore` | the pump (submits), completion (drains the semaphore, signals the fences in order), TDR (judges progress, fails fences), recovery (its graveyard drops a lost one once its hardware passed its work) |
//! | [`Buffer`] (`memory.rs`) | a `VkBuffer` and its memory block on one generation, and its `Resv`; holds the `DeviceCore` | clients (declaring, host reads and writes); kept by a job until its hardware passed it |
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
//!   `VulkanJob::inject`, a seeded `fault::FaultPlan`, `VulkanDevice::lose_device`.
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

mod device;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
mod fault;
mod instance;
mod job;
mod kernel;
mod memory;
mod ring;
mod sync;

pub use ash;

pub use crate::device::recovery;

pub use crate::device::{
    live_devices, plan_queues, DeviceConfig, DeviceSelector, QueueCaps, QueueFamilyInfo,
    VulkanDevice, MAX_RINGS,
};
pub use crate::error::{
    BufferError, DeviceError, InitError, RecordError, ShaderError, SubmitError,
};
#[cfg(feature = "fault-injection")]
pub use crate::fault::{FaultPlan, FaultStats, JobFault, SubmitFault};
pub use crate::instance::{validation_errors, validation_warnings};
pub use crate::job::{RecordFn, VulkanJob};
pub use crate::kernel::{Builtin, Kernel, RecordCtx};
pub use crate::memory::Buffer;
pub use crate::ring::VulkanRing;
