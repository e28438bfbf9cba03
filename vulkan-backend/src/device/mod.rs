//! The device layer: a [`VulkanDevice`] handle over a device's successive generations.
//!
//! The stack, outermost first (each holds the next):
//! - [`VulkanDevice`] (this file): the public handle and its API; cheap to clone.
//! - `DeviceShared` ([`shared`]): what the handles share and what survives a device loss
//!   (the current core, the rings' slots, user kernels, the reset domain, the fault plan) and
//!   the recovery thread ([`recovery`]: loss, recreation, graveyard).
//! - `DeviceCore` ([`core`]): one generation: the `VkDevice`, its queues, memory, kernels,
//!   set-up and teardown.
//!
//! Beside them: physical-device selection ([`select`](mod@select)), the queue families used
//! as rings ([`queues`]: which families, what each can run), implicit synchronisation of a
//! submission ([`submit`]) and the set-up's drop guard ([`guard`]). The per-device fault
//! state (injected-hang semaphores, the busy kernel's timing) is `fault::DeviceFaults`.
//!
//! # Generations
//! A [`VulkanDevice`] is a handle to a *shared device* whose current logical device (a
//! `DeviceCore`: `VkDevice`, queues, kernels, memory) is replaced when it
//! is lost, as amdgpu's GPU reset replaces the hardware state behind the same DRM file. Each
//! core is one *generation* (a process-unique number). The rings' schedulers, entities,
//! karma and bans, the reset domain, kernel handles and the fault plan survive recreation;
//! buffers, command buffers and in-flight work belong to their generation and die with it.
//!
//! # The completion threads
//! Each ring (one per ring and generation, see [`ring`](crate::ring)) has its own completion
//! thread:
//! - While the ring is busy it blocks in `vkWaitSemaphores` on the ring's timeline semaphore
//!   *alone*, for the next value the ring owes (`completed + 1`: every submitted job, batched
//!   or not, signals its own value), with a [`COMPLETION_TIMEOUT`] only to look at the loss
//!   flag again.
//! - When the ring's recent jobs completed less than `SPIN_MAX` apart, it first polls the
//!   counter (`vkGetSemaphoreCounterValue`, every µs, spinning in between; at most half the
//!   CPUs at once) for up to twice that time, as a fence wait spins briefly before it
//!   sleeps: a sleeping waiter turns every signal of the driver's queue thread into a
//!   wake-up that competes with that thread for a CPU. Longer jobs never poll (it would only
//!   take a CPU from the work).
//! - When such fast jobs are several in flight (8 or more), it does not wait for the next
//!   one: it sleeps (a timed park, 1 µs timer slack) through up to a quarter of them, at most
//!   `COALESCE_MAX` (100 µs), then retires what completed, so a busy ring costs one wake per
//!   several jobs and the hardware still has the rest queued when the thread gets back.
//!   A timed sleep, not a wait for a later value: mesa's emulated timeline semaphores wake
//!   such a wait at every value on the way. Never past a job a deadline was hinted for
//!   (`Fence::set_deadline`); after a sleep that found no progress it waits for the next
//!   value again.
//! - On waking it reads the counter and signals the ring's hardware fences up to it, in
//!   order, running fence callbacks inline (the scheduler's completion path: finished fences,
//!   dependants, the next `run_job`): no thread hop on the completion path.
//! - It is not the only thread that retires: a thread that pumps the ring's scheduler (a
//!   client pushing jobs) reads the counter after handing jobs over, when several are owed,
//!   and signals what completed the same way (`RingHw::retire`, from `Backend::flush`), as a
//!   kernel driver does completion work in whichever context sees it first. The ring's drain
//!   signals each fence once, in order, whichever thread gets there first (see
//!   [`ring`](crate::ring)).
//! - While the ring is idle the thread parks (`std::thread::park`, no Vulkan call); a
//!   submission that takes the ring from idle to busy unparks it after publishing `submitted`
//!   (a futex wake: allocation-free, and an unpark that comes before the park is not lost).
//! - The loop never allocates. When a wait or a counter read reports `VK_ERROR_DEVICE_LOST`
//!   it declares the core lost (see [`recovery`]) and exits; so does a
//!   thread whose core was declared lost elsewhere.
//! - One thread per ring, not one per device waiting on all its rings: a wait on several
//!   timeline semaphores at once *spins* in mesa's common runtime (lavapipe, and every mesa
//!   driver that emulates timeline semaphores), while a single-semaphore wait blocks in every
//!   driver. Completions of different rings run concurrently, each ring's in order on its own
//!   thread. A thread costs a stack (at most [`MAX_RINGS`] per device); a parked one no CPU.
//!
//! # Teardown
//! A completion thread holds neither its ring nor the core while it sleeps (the ring weakly,
//! and only the semaphore handle and a copy of the function table). A ring's drop waits for
//! its hardware to pass everything submitted, sets the thread's `stop`, wakes it and joins
//! it before destroying the semaphore (the thread, no longer able to upgrade the ring, holds
//! no lock and leaves its wait at once), so the thread never waits on a destroyed semaphore;
//! when the drop runs on the ring's own thread (its last reference went with a completion)
//! the thread is between two waits and checks `stop` before the next. Once a ring's
//! scheduler (its `RingSlot`) is gone, its completion thread holds the ring until every other
//! reference (jobs still in flight or being freed) is gone and drops it between two waits,
//! so a ring is never destroyed inside a signalling section (a lost generation's rings are
//! held by the recovery thread's graveyard instead). So dropping the last
//! reference to a core destroys it on the dropping thread, after every ring (and so every
//! completion thread) of it is gone: it releases injected hangs, waits for the device to go
//! idle (`vkDeviceWaitIdle`: pending work always finishes first; destroying a device with
//! pending work never returns on lavapipe) and destroys everything. A job whose hardware
//! fence still has the scheduler's completion callback (its work is running) keeps its ring,
//! and so the device, alive until it is done; the device is then destroyed on that ring's
//! completion thread. Call [`VulkanDevice::close`] for a synchronous teardown.

mod adopt;
mod core;
mod guard;
mod queues;
pub mod recovery;
mod select;
mod shared;
mod submit;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ash::vk;
use gpusched::{ArmedJob, Entity, Priority, ResetDomain, Scheduler, SchedulerConfig};

pub use self::adopt::{
    AdoptError, AdoptedDevice, EnabledFeatures, LentQueue, QueueGuard, QueueLock, Recreate,
    ReleaseFn,
};
pub use self::core::live_devices;
pub(crate) use self::core::DeviceCore;
use self::queues::{check_ring_caps, families_for};
pub use self::queues::{plan_queues, QueueCaps, QueueFamilyInfo};
use self::select::{env_validation, select, Chosen};
pub use self::select::{DeviceConfig, DeviceSelector};
pub(crate) use self::shared::DeviceShared;
use crate::error::{map_device, BufferError, DeviceError, InitError, ShaderError, SubmitError};
use crate::instance::InstanceShared;
use crate::kernel::{Builtin, Kernel};
use crate::memory::Buffer;
use crate::ring::{RingHw, RingSlot, VulkanRing};
use crate::sync::lock;
use crate::VulkanJob;

/// The most rings one device can have (each has its own completion thread).
pub const MAX_RINGS: usize = 32;

/// How long a ring's completion thread blocks in one wait before looking again (at the
/// ring's counter, the loss flag and `stop`). Completions never wait for it: the wait returns
/// as soon as the semaphore reaches the value.
pub(crate) const COMPLETION_TIMEOUT: Duration = Duration::from_millis(100);

/// A Vulkan device: its queues as rings ([`ring`](VulkanDevice::ring)), buffers, kernels,
/// and a completion thread per ring, over successive generations (a lost device is recreated in
/// the background: see [`generation`](VulkanDevice::generation),
/// [`wait_generation`](VulkanDevice::wait_generation)). Cheap to clone (shared). Each
/// generation is destroyed when the last handle, ring, buffer and pending job of it are gone.
#[derive(Clone)]
pub struct VulkanDevice {
    pub(crate) shared: Arc<DeviceShared>,
}

impl fmt::Debug for VulkanDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VulkanDevice")
            .field("name", &self.shared.name)
            .field("generation", &self.generation())
            .field("generations", &self.generations())
            .field("queues", &self.shared.queue_count)
            .finish_non_exhaustive()
    }
}

impl VulkanDevice {
    /// Creates a device with the default configuration ([`DeviceSelector::FromEnv`],
    /// validation when `GPUSCHED_VALIDATION=1`).
    ///
    /// # Errors
    /// See [`VulkanDevice::with_config`].
    pub fn new() -> Result<Self, InitError> {
        Self::with_config(DeviceConfig::default())
    }

    /// Creates a device.
    ///
    /// # Errors
    /// [`InitError::LoaderMissing`] without Vulkan, [`InitError::NoDevice`] /
    /// [`InitError::SelectorMismatch`] when no device qualifies (Vulkan 1.2, a compute queue,
    /// `VK_KHR_push_descriptor`, host-visible coherent memory),
    /// [`InitError::NoTimelineSemaphores`], [`InitError::ValidationUnavailable`].
    pub fn with_config(config: DeviceConfig) -> Result<Self, InitError> {
        let validation = config.validation.unwrap_or_else(env_validation);
        let inst = InstanceShared::get(validation)?;
        let Chosen { physical, name, family } = select(&inst, config.selector)?;
        DeviceShared::create(inst, physical, name, family)
    }

    /// Another logical device on the same physical device and instance (its own handle,
    /// generations, buffers and rings). Two logical devices on one physical device is how the
    /// tests exercise several devices at once. On an adopted device
    /// ([`adopt`](VulkanDevice::adopt)) the sibling is a device of gpusched's own on the
    /// engine's instance: the engine keeps the instance alive until the sibling is closed.
    ///
    /// # Errors
    /// As [`VulkanDevice::with_config`].
    pub fn sibling(&self) -> Result<VulkanDevice, InitError> {
        let s = &self.shared;
        DeviceShared::create(s.instance.clone(), s.physical, s.name.clone(), s.family)
    }

    /// The current generation's core.
    pub(crate) fn core(&self) -> Arc<DeviceCore> {
        self.shared.core()
    }

    /// Destroys the device now, on this thread: waits for its work (as
    /// [`wait_idle`](VulkanDevice::wait_idle)), then for the references that the scheduler
    /// and the completion threads drop asynchronously (finished jobs are freed just after their
    /// fences signal), and drops the last one, with every earlier generation still alive
    /// (each once its hardware has passed everything submitted to it; injected hangs are
    /// released first). Call it after dropping your rings, entities and buffers, before the
    /// process exits: a device still alive at exit races the driver's own teardown (lavapipe
    /// crashes in its LLVM destructors).
    ///
    /// # Errors
    /// The device, handed back, when references remain after `timeout` (a ring, entity,
    /// buffer or pending job still alive, of any generation), or a lost generation's
    /// hardware never finished (a real hang: it cannot be destroyed; dropping the handle
    /// leaks it).
    pub fn close(self, timeout: Duration) -> Result<(), VulkanDevice> {
        let deadline = Instant::now() + timeout;
        let _ = self.wait_idle(timeout);
        loop {
            if Arc::strong_count(&self.shared) == 1 && self.shared.quiescent() {
                // Nothing else can reach the device now (rings hold the shared object, so
                // none exists): stop the recovery thread, so that the last drop is this one.
                self.shared.stop_recovery();
                drop(self);
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until every ring of the current generation has finished everything submitted
    /// to it (also jobs whose fences were force-completed by a timeout but still run on the
    /// hardware).
    ///
    /// # Errors
    /// [`DeviceError::DeviceLost`], or a timeout as [`DeviceError::Vk`] with `TIMEOUT`.
    pub fn wait_idle(&self, timeout: Duration) -> Result<(), DeviceError> {
        let core = self.core();
        let rings: Vec<Arc<RingHw>> = {
            let r = lock(&core.comp.rings);
            r.iter().filter_map(Weak::upgrade).collect()
        };
        let sems: Vec<vk::Semaphore> = rings.iter().map(|r| r.sem).collect();
        let values: Vec<u64> = rings.iter().map(|r| r.submitted.load(Ordering::SeqCst)).collect();
        if sems.is_empty() {
            return Ok(());
        }
        let info = vk::SemaphoreWaitInfo::default().semaphores(&sems).values(&values);
        // SAFETY: the semaphores are alive (`rings` holds them).
        let waited = unsafe { core.device.wait_semaphores(&info, timeout.as_nanos() as u64) };
        drop(rings);
        waited.map_err(|c| {
            let e = map_device("vkWaitSemaphores", c);
            if e.is_device_lost() {
                // The driver reported the loss here first (the rings may be idle, their
                // completion threads parked): the same recovery as any other report.
                core.mark_lost();
            }
            e
        })
    }

    /// The raw `ash` device of the current generation, for code that drives Vulkan itself
    /// (benches comparing against native submission). Objects it creates must be destroyed
    /// before the device (and are lost with its generation).
    pub fn ash_device(&self) -> ash::Device {
        self.core().device.clone()
    }

    /// Runs `f` with queue `queue_index` of the main queue family (current generation) locked
    /// (`vkQueueSubmit` must be externally synchronised; the rings on that queue take the
    /// same lock).
    ///
    /// `f` must only use the queue and return: the rings on that queue cannot submit while it
    /// runs, so submitting a job (or anything that makes a ring submit) inside it deadlocks,
    /// and so does waiting for a fence of a ring on that queue whose job is not submitted
    /// yet (it never will be until `f` returns).
    ///
    /// # Panics
    /// If the queue does not exist (misuse; see [`queue_count`](VulkanDevice::queue_count)).
    pub fn with_queue<R>(&self, queue_index: u32, f: impl FnOnce(vk::Queue) -> R) -> R {
        let core = self.core();
        let Ok(slot) = core.queue_slot(core.queue_family, queue_index) else {
            no_such_queue(queue_index, self.queue_count())
        };
        let q = core.queues[slot as usize].lock();
        f(*q)
    }

    /// Records with `f` into a command buffer of the caller's (in the recording state), with
    /// the same checks and kernels as a job's closure; `declared` are the buffers `f` may use.
    ///
    /// # Errors
    /// What `f` returns.
    pub fn record_into(
        &self,
        cb: vk::CommandBuffer,
        declared: &[Buffer],
        f: impl FnOnce(&crate::RecordCtx<'_>, vk::CommandBuffer) -> Result<(), crate::RecordError>,
    ) -> Result<(), crate::RecordError> {
        let core = self.core();
        let declared: Vec<Arc<dyn crate::GpuResource>> =
            declared.iter().map(crate::GpuResource::keep_alive).collect();
        let ctx = crate::RecordCtx { core: &core, declared: &declared };
        f(&ctx, cb)
    }

    /// The device name (`VkPhysicalDeviceProperties::deviceName`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current generation: a process-unique number per logical device. A recreated
    /// device (after a loss) gets a new one; buffers of older generations are refused.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::SeqCst)
    }

    /// How many logical devices (generations) this handle has had: 1, plus one per
    /// recreation after a loss.
    pub fn generations(&self) -> u64 {
        self.shared.generations.load(Ordering::SeqCst)
    }

    /// Waits until the current generation is newer than `after` (pass the generation you
    /// saw lost) and returns it.
    ///
    /// # Errors
    /// [`DeviceError::Gone`] when recreation failed (the device is gone for good), a
    /// timeout as [`DeviceError::Vk`] with `TIMEOUT`.
    pub fn wait_generation(&self, after: u64, timeout: Duration) -> Result<u64, DeviceError> {
        self.shared.wait_generation(after, Instant::now() + timeout)
    }

    /// Queues in the main queue family (rings beyond that share queues; other families'
    /// queues are in [`queue_families`](VulkanDevice::queue_families)).
    pub fn queue_count(&self) -> u32 {
        self.shared.queue_count
    }

    /// The queue families the device created queues on, each with what it can run and its
    /// queue count (every queue it offers): the main family (graphics and compute, else the
    /// first compute family) first, then an async compute family (compute without graphics)
    /// and a transfer-only family where the device has them (see [`plan_queues`]). Lavapipe
    /// has one family of one queue; an NVIDIA H100 a main family of 16 queues, an async
    /// compute family of 8 and a copy family of 2. The same on every generation.
    pub fn queue_families(&self) -> Vec<QueueFamilyInfo> {
        self.core().families.clone()
    }

    /// The queue families of [`queue_families`](VulkanDevice::queue_families) that can run
    /// `needs`, the most dedicated first (fewest other capabilities): transfer work finds a
    /// copy engine before a compute family, compute work an async compute family before the
    /// main one. Empty when none can.
    pub fn families_for(&self, needs: QueueCaps) -> Vec<QueueFamilyInfo> {
        families_for(&self.core().families, needs)
    }

    /// The main queue family index (the family of [`ring`](VulkanDevice::ring)).
    pub fn queue_family(&self) -> u32 {
        self.shared.family
    }

    /// Whether the validation layer is on for this device.
    pub fn validation(&self) -> bool {
        self.shared.instance.validation
    }

    /// Whether the current generation is lost (its replacement is not ready yet), or the
    /// device is gone for good (recreation failed).
    pub fn is_lost(&self) -> bool {
        self.shared.dead.load(Ordering::SeqCst) || self.core().is_lost()
    }

    /// The reset domain every ring of this device shares (they share the hardware); it
    /// survives recreation.
    pub fn reset_domain(&self) -> &ResetDomain {
        &self.shared.domain
    }

    /// The largest buffer this device allows.
    pub fn max_buffer_size(&self) -> u64 {
        self.core().max_buffer_size
    }

    /// A new ring: a scheduler over queue `queue_index` of the main queue family (rings may
    /// share a queue). [`ring_on`](VulkanDevice::ring_on) with
    /// [`queue_family`](VulkanDevice::queue_family).
    ///
    /// # Errors
    /// As [`ring_on`](VulkanDevice::ring_on).
    pub fn ring(
        &self,
        queue_index: u32,
        config: SchedulerConfig,
    ) -> Result<Scheduler<VulkanRing>, DeviceError> {
        self.ring_on(self.queue_family(), queue_index, config)
    }

    /// A new ring: a scheduler over queue `queue_index` of queue family `family` (one of
    /// [`queue_families`](VulkanDevice::queue_families); rings may share a queue). The ring
    /// reports its family and what it can run ([`VulkanRing::family`]). The scheduler joins
    /// the device's reset domain unless `config` names another (every queue of a device
    /// shares its hardware, and a device loss takes them all). The ring moves to each new
    /// generation of the device by itself.
    ///
    /// # Errors
    /// [`DeviceError::NoSuchFamily`], [`DeviceError::NoSuchQueue`], [`MAX_RINGS`] reached,
    /// semaphore or pool creation failed, or an invalid scheduler configuration.
    pub fn ring_on(
        &self,
        family: u32,
        queue_index: u32,
        mut config: SchedulerConfig,
    ) -> Result<Scheduler<VulkanRing>, DeviceError> {
        if let Some(e) = self.shared.gone_error() {
            return Err(e);
        }
        if config.reset_domain.is_none() {
            config.reset_domain = Some(self.shared.domain.clone());
        }
        let slot =
            RingSlot::new(&self.shared, family, queue_index, &config.name, config.credit_limit)?;
        Ok(Scheduler::new(VulkanRing { slot }, config)?)
    }

    /// An entity over `rings` at `priority`, checked to run work that needs `needs`: an
    /// entity's jobs land on whichever of its rings the load balancer picks, so every ring
    /// must be able to run them (a compute job given a transfer-only ring would be invalid
    /// Vulkan). Jobs that dispatch kernels need [`QueueCaps::COMPUTE`]; jobs that only fill
    /// or copy buffers [`QueueCaps::TRANSFER`]; empty jobs [`QueueCaps::NONE`].
    /// [`Entity::new`] does not check.
    ///
    /// # Errors
    /// [`DeviceError::RingLacksCaps`] naming the first ring whose family cannot run
    /// `needs`; [`DeviceError::Config`] with the scheduler's error for an empty list.
    pub fn entity(
        rings: &[&Scheduler<VulkanRing>],
        priority: Priority,
        needs: QueueCaps,
    ) -> Result<Entity<VulkanRing>, DeviceError> {
        check_ring_caps(rings.iter().map(|r| (r.backend().name(), r.backend().family())), needs)?;
        Ok(Entity::new(rings, priority)?)
    }

    /// A buffer of `size` bytes on host-visible coherent memory, on the current generation.
    ///
    /// # Errors
    /// Zero size, over [`max_buffer_size`](VulkanDevice::max_buffer_size), allocation
    /// failure ([`BufferError::is_out_of_memory`]: the driver refused `vkCreateBuffer`,
    /// `vkAllocateMemory` or `vkMapMemory`; nothing is left allocated), the current
    /// generation is lost ([`DeviceError::DeviceLost`] inside), or the device is gone for
    /// good ([`DeviceError::Gone`] inside).
    pub fn buffer(&self, size: u64) -> Result<Buffer, BufferError> {
        if let Some(e) = self.shared.gone_error() {
            return Err(BufferError::Device(e));
        }
        let core = self.core();
        if core.is_lost() {
            return Err(BufferError::Device(DeviceError::DeviceLost { op: "vkAllocateMemory" }));
        }
        if self.shared.faults.fail_buffer_alloc() {
            return Err(BufferError::Device(DeviceError::OutOfMemory {
                op: "vkAllocateMemory (injected)",
                code: vk::Result::ERROR_OUT_OF_DEVICE_MEMORY,
            }));
        }
        Buffer::new(&core, size)
    }

    /// The built-in kernel on this device (valid across generations).
    pub fn builtin(&self, which: Builtin) -> Kernel {
        let (bindings, push_size) = which.layout();
        Kernel { index: which.index(), device: self.shared.id, bindings, push_size }
    }

    /// A compute kernel from SPIR-V (entry point `main`, `bindings` storage buffers at
    /// set 0, bindings `0..bindings`; `push_size` bytes of push constants). The device keeps
    /// the SPIR-V and creates the kernel again on each new generation, so the handle stays
    /// valid across recreation.
    ///
    /// # Errors
    /// Bytes that are not SPIR-V (checked before the driver sees them), a bad layout, or
    /// the driver refused the module.
    pub fn create_kernel(
        &self,
        spirv: &[u8],
        bindings: u32,
        push_size: u32,
    ) -> Result<Kernel, ShaderError> {
        self.shared.create_kernel(spirv, bindings, push_size)
    }

    /// Submits `job` on `entity` with implicit synchronisation: locks every buffer the job
    /// declared (one [`Exec`](gpusched::resv::Exec) transaction), adds their fences as dependencies (a reader waits
    /// for writers, a writer for everyone) beside the job's explicit ones
    /// ([`VulkanJob::after`]), reserves a fence slot in each, arms (records the command
    /// buffer), adds the finished fence to each buffer (`Write` or `Read`), unlocks and pushes.
    /// Returns the finished fence, which always signals. [`VulkanDevice::arm`] followed by
    /// [`ArmedJob::push`].
    ///
    /// The entity may span rings of several devices; the job then records for whichever it
    /// lands on (buffers of another device are refused).
    ///
    /// # Errors
    /// Recording failed (a buffer of another device or of a lost generation, the current
    /// generation lost: [`SubmitError::is_device_lost`]), the scheduler refused the job, a
    /// lock or reservation failed: no fence was handed out.
    pub fn submit(
        entity: &Entity<VulkanRing>,
        job: VulkanJob,
    ) -> Result<gpusched::fence::Fence, SubmitError> {
        Ok(submit::arm(entity, job)?.push())
    }

    /// Everything [`submit`](VulkanDevice::submit) does but the push
    /// (`drm_sched_job_arm` without `drm_sched_entity_push_job`): the job is recorded, its
    /// dependencies are set and its finished fence is already in its buffers' reservation
    /// objects, so later submissions order after it. The caller gets the scheduled and
    /// finished fences ([`ArmedJob::scheduled`], [`ArmedJob::finished`]) to add callbacks or
    /// hand them out before the job can run, then pushes it. An armed job dropped instead of
    /// pushed is cancelled, in its entity's timeline order: both fences signal `Cancelled`,
    /// and so do the jobs that depend on it through its buffers. An entity's jobs must be
    /// pushed (or dropped) in the order they were armed: pushing one after a later-armed job
    /// was pushed or dropped panics (the kernel asks the same of `drm_sched_job_arm` and
    /// `drm_sched_entity_push_job`, under one lock when threads share an entity). Until the
    /// push, jobs that touch its buffers wait for it: waiting on its finished fence before
    /// pushing it deadlocks.
    ///
    /// # Errors
    /// As [`submit`](VulkanDevice::submit).
    pub fn arm(
        entity: &Entity<VulkanRing>,
        job: VulkanJob,
    ) -> Result<ArmedJob<VulkanRing>, SubmitError> {
        submit::arm(entity, job)
    }
}

/// Fault injection (feature `fault-injection`; see [`fault`](crate::fault)).
#[cfg(feature = "fault-injection")]
impl VulkanDevice {
    /// Sets (or with `None` clears) the seeded fault plan of this device handle. Its draws
    /// restart from the seed; `lose_device_after` counts from now.
    pub fn set_fault_plan(&self, plan: Option<crate::fault::FaultPlan>) {
        self.shared.faults.set_plan(plan);
    }

    /// Injects a device loss now: the current generation is declared lost (every unfinished
    /// fence signals `DeviceLost`) and the next one is created in the background.
    pub fn lose_device(&self) {
        self.shared.faults.count(crate::fault::Kind::DeviceLoss);
        self.core().mark_lost();
    }

    /// The faults injected so far on this device handle, by kind.
    pub fn fault_stats(&self) -> crate::fault::FaultStats {
        self.shared.faults.stats()
    }
}

#[cold]
#[track_caller]
fn no_such_queue(index: u32, count: u32) -> ! {
    panic!("queue index {index} out of range: the main queue family has {count} queues")
}
