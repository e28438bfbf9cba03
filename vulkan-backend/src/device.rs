//! Logical devices: selection, creation, the rings' completion threads, teardown; the
//! [`VulkanDevice`] handle over a device's successive generations (see
//! [`recovery`](crate::recovery) for device loss and recreation).
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
//! thread. While the ring is busy it blocks in `vkWaitSemaphores` on the ring's timeline semaphore
//! *alone*, for the next value the ring owes (`completed + 1`: every submitted job, batched or not,
//! signals its own value), with a [`COMPLETION_TIMEOUT`] only to look at the loss flag again. When
//! the ring's recent jobs completed faster than `SPIN_MAX` (20 µs) apart, it first polls the
//! counter (`vkGetSemaphoreCounterValue`, every µs, spinning in between; at most half the CPUs at
//! once) for up to twice that time, as a fence wait spins a few µs before it sleeps and i915
//! busy-waits on a request about to complete before it sleeps on the interrupt: a sleeping waiter
//! makes every signal of the driver's queue thread a wake-up, and on lavapipe (2 cores) that woken
//! thread preempted the queue thread about once per job. Longer jobs (SAXPY: ~800
//! µs) never poll: the poll would only take a CPU from the work. On waking it reads the counter and
//! signals the ring's hardware fences up to it, in order, running fence callbacks inline (the
//! scheduler's completion path: finished fences, dependants, the next `run_job`): no thread hop on
//! the completion path (a hop costs ~20 µs on our machines). While the ring is idle the thread
//! parks (`std::thread::park`, no Vulkan call); a submission that takes the ring from idle to busy
//! unparks it after publishing `submitted` (a futex wake: allocation-free, and an unpark that comes
//! before the park is not lost). The loop never allocates. When a wait or a counter read reports
//! `VK_ERROR_DEVICE_LOST` it declares the core lost (see [`recovery`](crate::recovery)) and exits;
//! so does a thread whose core was declared lost elsewhere.
//!
//! Why one thread per ring rather than one per device waiting on every busy ring at once
//! (`VK_SEMAPHORE_WAIT_ANY` over the rings' semaphores plus a host-signalled wake semaphore):
//! mesa's common runtime (lavapipe, and every mesa driver that emulates timeline
//! semaphores) cannot block on several emulated timelines at once, and *spins*
//! (`__vk_sync_wait_many` in `src/vulkan/runtime/vk_sync.c`: "there's nothing better we can
//! do than spin"), which keeps the waiting thread on a CPU and takes a core from lavapipe's
//! workers (benches/RESULTS.md). A single-semaphore wait blocks on a condition
//! variable there and in every driver. One thread watching one busy ring and falling back to
//! short timeouts when several are busy would delay the other rings' completions by the
//! timeout and need a wake for a ring that becomes busy during a wait, which a
//! single-semaphore wait cannot take. Threads cost a stack each (at most [`MAX_RINGS`] per
//! device) and parked ones no CPU. Completions of different rings run on different threads,
//! concurrently; each ring's stay in order on its own thread.
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

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ash::vk;
use gpusched::fence::FenceError;
use gpusched::resv::{Exec, Usage};
use gpusched::{Access, ArmError, ArmedJob, Entity, ResetDomain, Scheduler, SchedulerConfig};

use crate::error::{
    map_device, map_init, BufferError, DeviceError, InitError, ShaderError, SubmitError,
};
use crate::instance::InstanceShared;
use crate::kernel::{create_kernel, Builtin, Kernel, KernelRaw};
use crate::memory::{Allocator, Buffer};
use crate::recovery::{DeviceShared, Notify};
use crate::ring::{RingHw, RingSlot, VulkanRing};
use crate::VulkanJob;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The most rings one device can have (each has its own completion thread).
pub const MAX_RINGS: usize = 32;

/// How long a ring's completion thread blocks in one wait before looking again (at the
/// ring's counter, the loss flag and `stop`). Completions never wait for it: the wait returns
/// as soon as the semaphore reaches the value.
pub(crate) const COMPLETION_TIMEOUT: Duration = Duration::from_millis(100);

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);
static LIVE_DEVICES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Logical devices alive in this process (created and not yet destroyed): a leak check.
pub fn live_devices() -> usize {
    LIVE_DEVICES.load(Ordering::SeqCst)
}

/// Which physical device to use.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum DeviceSelector {
    /// `GPUSCHED_DEVICE` if set (an index, or a substring of the device name), else
    /// [`Best`](DeviceSelector::Best).
    #[default]
    FromEnv,
    /// A discrete GPU, else an integrated one, else a virtual one, else the CPU (lavapipe).
    Best,
    /// The device at this index of `vkEnumeratePhysicalDevices`.
    Index(usize),
    /// The first device whose name contains this (case-insensitive).
    Name(String),
}

/// How to create a [`VulkanDevice`].
#[derive(Clone, Debug, Default)]
pub struct DeviceConfig {
    /// Which device.
    pub selector: DeviceSelector,
    /// Enable the Khronos validation layer. `None`: only when `GPUSCHED_VALIDATION=1`.
    pub validation: Option<bool>,
}

impl DeviceConfig {
    /// Selects the device.
    pub fn selector(mut self, selector: DeviceSelector) -> Self {
        self.selector = selector;
        self
    }

    /// Forces validation on or off.
    pub fn validation(mut self, on: bool) -> Self {
        self.validation = Some(on);
        self
    }
}

/// One `VkQueue`, shared by the rings on it: `vkQueueSubmit` is serialised by the mutex.
pub(crate) struct QueueSlot {
    pub(crate) queue: Mutex<vk::Queue>,
    /// Successful `vkQueueSubmit` calls on it, counted under `queue`: each submission's
    /// sequence number (the rings' timeout handlers compare them, see `ring`, "Timeouts").
    pub(crate) seq: AtomicU64,
}

pub(crate) struct DeviceCore {
    /// Keeps the instance alive while the device lives.
    #[allow(dead_code)]
    instance: Arc<InstanceShared>,
    pub(crate) device: ash::Device,
    pub(crate) push: ash::khr::push_descriptor::Device,
    pub(crate) name: String,
    pub(crate) generation: u64,
    /// The shared device (handle) this core is a generation of: kernel handles name it.
    pub(crate) device_id: u64,
    pub(crate) queue_family: u32,
    pub(crate) queues: Vec<QueueSlot>,
    pub(crate) memory: Mutex<Allocator>,
    pub(crate) max_buffer_size: u64,
    pub(crate) max_workgroups: [u32; 3],
    /// Built-in kernels first (in [`Builtin`] order), then user kernels.
    pub(crate) kernels: Mutex<Vec<KernelRaw>>,
    /// Scratch buffer of the busy kernel.
    pub(crate) scratch: vk::Buffer,
    scratch_memory: vk::DeviceMemory,
    /// The rings and the loss flag.
    pub(crate) comp: Completion,
    /// Wakes the shared device's recovery thread when this core is lost.
    pub(crate) notify: Arc<Notify>,
    /// Injected hangs: submissions that wait on host-signalled timeline values.
    pub(crate) injected: Injected,
    /// Nanoseconds one workgroup of the busy kernel (16 rounds) takes (0: not calibrated).
    pub(crate) busy_ns_per_group: AtomicU64,
}

/// The semaphores of injected hangs (`JobFault::Hang` and `HangForever`): a hung job's
/// submission waits on the next value of one of them; only the host signals them.
pub(crate) struct Injected {
    /// Released by the timeout handler.
    pub(crate) hang: vk::Semaphore,
    /// Released only at teardown (stands in for a hang nothing can release).
    pub(crate) wedge: vk::Semaphore,
    /// The last wait values handed out.
    pub(crate) hang_next: AtomicU64,
    pub(crate) wedge_next: AtomicU64,
    /// The last values signalled (values must increase), `(hang, wedge)`.
    released: Mutex<(u64, u64)>,
}

/// The core's rings and its loss flag (what device loss and `wait_idle` go through).
pub(crate) struct Completion {
    /// The rings, weakly (capacity [`MAX_RINGS`]).
    pub(crate) rings: Mutex<Vec<Weak<RingHw>>>,
    /// Set when the core is lost (a wait or submit reported `VK_ERROR_DEVICE_LOST`, an
    /// injected loss, or a hang nothing can release). The rings' completion threads exit.
    pub(crate) lost: AtomicBool,
}

impl Completion {
    /// The live rings, upgraded into a stack array (allocation-free) under `rings`, which is
    /// released on return: callers use and drop them with no lock held (dropping one may be
    /// the last reference, and `RingHw::drop` waits). At most [`MAX_RINGS`]: a core can have
    /// more live rings only briefly (rings whose scheduler is gone, held by their completion
    /// threads until their last jobs are freed), and each ring's completion thread fails its
    /// ring's fences itself when it sees the core lost.
    pub(crate) fn snapshot(&self) -> [Option<Arc<RingHw>>; MAX_RINGS] {
        let mut out = [const { None }; MAX_RINGS];
        let rings = lock(&self.rings);
        for (o, r) in out.iter_mut().zip(rings.iter().filter_map(Weak::upgrade)) {
            *o = Some(r);
        }
        out
    }
}

impl DeviceCore {
    /// Whether this core was declared lost.
    pub(crate) fn is_lost(&self) -> bool {
        self.comp.lost.load(Ordering::SeqCst)
    }

    /// Declares the core lost: every ring's in-flight hardware fences signal `DeviceLost`
    /// (jobs prepared on it and not yet submitted fail `DeviceLost` in `run_job`), and the
    /// recovery thread is woken to create the next generation. Allocation-free (it may run in
    /// the timeout handler or a `run_job`, inside a signalling section). Idempotent.
    ///
    /// `comp.rings` is held only to take the rings (into a stack array): the fences are
    /// failed, their callbacks run, and the references are dropped after it is released, so
    /// no callback runs under it (a callback that reaches `comp.rings`, e.g. a timeout
    /// handler asking `behind_another_ring`, or a ring's drop, cannot deadlock on it).
    pub(crate) fn mark_lost(&self) {
        self.comp.lost.store(true, Ordering::SeqCst);
        let rings = self.comp.snapshot();
        for r in rings.iter().flatten() {
            r.fail_all(FenceError::DeviceLost);
        }
        drop(rings);
        self.notify.loss();
    }

    /// The next wait value of an injected hang (`forever`: on the wedge semaphore).
    pub(crate) fn next_hang_value(&self, forever: bool) -> (vk::Semaphore, u64) {
        if forever {
            (self.injected.wedge, self.injected.wedge_next.fetch_add(1, Ordering::SeqCst) + 1)
        } else {
            (self.injected.hang, self.injected.hang_next.fetch_add(1, Ordering::SeqCst) + 1)
        }
    }

    /// Releases injected hangs up to wait value `value` (host signals, one value at a time:
    /// the validation layer wants no signal past a pending wait). Allocation-free.
    pub(crate) fn release_hang(&self, value: u64) {
        let mut r = lock(&self.injected.released);
        while r.0 < value {
            r.0 += 1;
            self.signal(self.injected.hang, r.0);
        }
    }

    /// Releases every injected hang handed out so far, and with `wedges` the un-releasable
    /// ones too (teardown: a simulated wedge must not leak the device).
    pub(crate) fn release_injected(&self, wedges: bool) {
        self.release_hang(self.injected.hang_next.load(Ordering::SeqCst));
        if wedges {
            let mut r = lock(&self.injected.released);
            let v = self.injected.wedge_next.load(Ordering::SeqCst);
            if v > r.1 {
                self.signal(self.injected.wedge, v);
                r.1 = v;
            }
        }
    }

    fn signal(&self, sem: vk::Semaphore, value: u64) {
        let info = vk::SemaphoreSignalInfo::default().semaphore(sem).value(value);
        // SAFETY: a timeline semaphore of this device; `value` is above the last value
        // signalled (callers hold `released`). A lost device may refuse: nothing waits then.
        if let Err(e) = unsafe { self.device.signal_semaphore(&info) } {
            if e != vk::Result::ERROR_DEVICE_LOST {
                diag!(warn, target: "gpusched_vulkan", ?e, "releasing an injected hang failed");
            }
        }
    }

    /// Busy-kernel workgroups (16 rounds each) that run about `d` on this device.
    pub(crate) fn busy_groups_for(&self, d: Duration) -> u32 {
        let per = self.busy_ns_per_group.load(Ordering::Relaxed).max(1);
        let groups = (d.as_nanos() / u128::from(per)).max(1);
        groups.min(u128::from(self.max_workgroups[0])) as u32
    }

    /// Measures the busy kernel on the idle queue: one warm-up dispatch, then the median of
    /// three timed ones (host time from submit to fence, so it includes the submission
    /// latency: negligible at milliseconds). Keeps a default (lavapipe on our 2-core VMs) on
    /// failure. Shared machines make it noisy (±50% seen), so a `Slow` job meant to run
    /// just under the timeout may overrun it: the timeout handler blames a job still running
    /// at its first timeout (`TimedOut`); only a ring that then makes no progress across
    /// more timeouts (`STUCK_AFTER`) is declared lost.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn calibrate_busy(&self) {
        const DEFAULT_NS: u64 = 50_000;
        const GROUPS: u32 = 128;
        let measured = self.time_busy(4).and_then(|_| {
            let mut runs = [0u64; 3];
            for r in &mut runs {
                *r = self.time_busy(GROUPS)?.as_nanos() as u64 / u64::from(GROUPS);
            }
            runs.sort_unstable();
            Ok(runs[1].max(1))
        });
        let ns = match measured {
            Ok(ns) => ns,
            Err(e) => {
                tracing::warn!(target: "gpusched_vulkan", ?e, "busy kernel calibration failed");
                DEFAULT_NS
            }
        };
        self.busy_ns_per_group.store(ns, Ordering::Relaxed);
    }

    #[cfg(feature = "fault-injection")]
    fn time_busy(&self, groups: u32) -> Result<Duration, vk::Result> {
        let d = &self.device;
        let pinfo = vk::CommandPoolCreateInfo::default().queue_family_index(self.queue_family);
        // SAFETY: valid device and family.
        let pool = unsafe { d.create_command_pool(&pinfo, None) }?;
        let run = || -> Result<Duration, vk::Result> {
            let info = vk::CommandBufferAllocateInfo::default()
                .command_pool(pool)
                .level(vk::CommandBufferLevel::PRIMARY)
                .command_buffer_count(1);
            // SAFETY: the pool is ours.
            let cb = unsafe { d.allocate_command_buffers(&info) }?[0];
            let begin = vk::CommandBufferBeginInfo::default()
                .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
            // SAFETY: fresh command buffer.
            unsafe { d.begin_command_buffer(cb, &begin) }?;
            let ctx = crate::RecordCtx { core: self, declared: &[] };
            if ctx.busy(cb, 16, groups).is_err() {
                return Err(vk::Result::ERROR_UNKNOWN);
            }
            // SAFETY: recording.
            unsafe { d.end_command_buffer(cb) }?;
            // SAFETY: valid device.
            let fence = unsafe { d.create_fence(&vk::FenceCreateInfo::default(), None) }?;
            let cbs = [cb];
            let submit = [vk::SubmitInfo::default().command_buffers(&cbs)];
            let t0 = Instant::now();
            let r = {
                let q = lock(&self.queues[0].queue);
                // SAFETY: the queue is locked; the command buffer is executable.
                unsafe { d.queue_submit(*q, &submit, fence) }
            }
            // SAFETY: the fence belongs to this device.
            .and_then(|()| unsafe { d.wait_for_fences(&[fence], true, 10_000_000_000) });
            let elapsed = t0.elapsed();
            if r.is_err() {
                // SAFETY: the device idles first; nothing else is pending on the fence.
                let _ = unsafe { d.device_wait_idle() };
            }
            // SAFETY: signalled (or the device idled above).
            unsafe { d.destroy_fence(fence, None) };
            r.map(|()| elapsed)
        };
        let r = run();
        // SAFETY: the command buffer completed (or the device idled); freed with the pool.
        unsafe { d.destroy_command_pool(pool, None) };
        r
    }
}

impl Drop for DeviceCore {
    fn drop(&mut self) {
        // `vkDeviceWaitIdle` waits for the device's work, so this must not run in a signalling
        // section: the last reference normally goes in `VulkanDevice::close`, the recovery
        // thread's teardown or graveyard, or with the application's last buffer or kernel
        // handle; the checker reports any other path.
        gpusched::fence::lockdep::might_wait();
        // Injected hangs would keep `vkDeviceWaitIdle` from returning.
        self.release_injected(true);
        let d = &self.device;
        // SAFETY: every ring (each joined its completion thread, or dropped on it, and it
        // exits without touching the device), buffer and kernel handle is gone. `vkDeviceWaitIdle` lets pending work finish before anything
        // is destroyed.
        unsafe {
            if let Err(e) = d.device_wait_idle() {
                if e != vk::Result::ERROR_DEVICE_LOST {
                    tracing::warn!(target: "gpusched_vulkan", ?e, "vkDeviceWaitIdle failed at teardown");
                }
            }
            for k in self.kernels.get_mut().unwrap_or_else(|p| p.into_inner()).iter() {
                k.destroy(d);
            }
            d.destroy_buffer(self.scratch, None);
            d.free_memory(self.scratch_memory, None);
            self.memory.get_mut().unwrap_or_else(|p| p.into_inner()).destroy(d);
            d.destroy_semaphore(self.injected.hang, None);
            d.destroy_semaphore(self.injected.wedge, None);
            d.destroy_device(None);
        }
        LIVE_DEVICES.fetch_sub(1, Ordering::SeqCst);
        tracing::debug!(target: "gpusched_vulkan", generation = self.generation, "device destroyed");
    }
}

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

fn env_validation() -> bool {
    std::env::var("GPUSCHED_VALIDATION").is_ok_and(|v| v == "1")
}

fn type_rank(t: vk::PhysicalDeviceType) -> u32 {
    match t {
        vk::PhysicalDeviceType::DISCRETE_GPU => 0,
        vk::PhysicalDeviceType::INTEGRATED_GPU => 1,
        vk::PhysicalDeviceType::VIRTUAL_GPU => 2,
        vk::PhysicalDeviceType::CPU => 3,
        _ => 4,
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
        let instance = &inst.instance;
        // SAFETY: a plain enumeration on a live instance.
        let physicals = unsafe { instance.enumerate_physical_devices() }
            .map_err(|c| map_init("vkEnumeratePhysicalDevices", c))?;
        if physicals.is_empty() {
            return Err(InitError::NoDevice("the loader reports no physical device".into()));
        }
        let props: Vec<vk::PhysicalDeviceProperties> = physicals
            .iter()
            // SAFETY: handles from the enumeration above.
            .map(|p| unsafe { instance.get_physical_device_properties(*p) })
            .collect();
        let name_of = |i: usize| {
            props[i]
                .device_name_as_c_str()
                .map_or_else(|_| "?".into(), |n| n.to_string_lossy().into_owned())
        };
        let available =
            (0..props.len()).map(|i| format!("{i}: {}", name_of(i))).collect::<Vec<_>>().join(", ");
        let selector = match config.selector {
            DeviceSelector::FromEnv => match std::env::var("GPUSCHED_DEVICE") {
                Ok(s) if !s.is_empty() => match s.parse::<usize>() {
                    Ok(i) => DeviceSelector::Index(i),
                    Err(_) => DeviceSelector::Name(s),
                },
                _ => DeviceSelector::Best,
            },
            s => s,
        };
        // Qualification: API 1.2, push descriptors, a compute queue.
        let mut reasons = Vec::new();
        let qualifies = |i: usize, reasons: &mut Vec<String>| -> Option<u32> {
            let p = physicals[i];
            if props[i].api_version < vk::API_VERSION_1_2 {
                reasons.push(format!(
                    "{}: vulkan {} < 1.2",
                    name_of(i),
                    vk::api_version_minor(props[i].api_version)
                ));
                return None;
            }
            // SAFETY: a valid physical device.
            let exts =
                unsafe { instance.enumerate_device_extension_properties(p) }.unwrap_or_default();
            let has_push = exts.iter().any(|e| {
                e.extension_name_as_c_str().is_ok_and(|n| n == ash::khr::push_descriptor::NAME)
            });
            if !has_push {
                reasons.push(format!("{}: no VK_KHR_push_descriptor", name_of(i)));
                return None;
            }
            // SAFETY: a valid physical device.
            let families = unsafe { instance.get_physical_device_queue_family_properties(p) };
            let family = families
                .iter()
                .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE) && f.queue_count > 0);
            if family.is_none() {
                reasons.push(format!("{}: no compute queue", name_of(i)));
            }
            family.map(|f| f as u32)
        };
        let chosen = match &selector {
            DeviceSelector::Index(i) => {
                if *i >= physicals.len() {
                    return Err(InitError::SelectorMismatch { selector: i.to_string(), available });
                }
                qualifies(*i, &mut reasons).map(|f| (*i, f))
            }
            DeviceSelector::Name(n) => {
                let lower = n.to_lowercase();
                let Some(i) =
                    (0..physicals.len()).find(|i| name_of(*i).to_lowercase().contains(&lower))
                else {
                    return Err(InitError::SelectorMismatch { selector: n.clone(), available });
                };
                qualifies(i, &mut reasons).map(|f| (i, f))
            }
            _ => {
                let mut order: Vec<usize> = (0..physicals.len()).collect();
                order.sort_by_key(|i| type_rank(props[*i].device_type));
                order.into_iter().find_map(|i| qualifies(i, &mut reasons).map(|f| (i, f)))
            }
        };
        let Some((index, family)) = chosen else {
            return Err(InitError::NoDevice(reasons.join("; ")));
        };
        let physical = physicals[index];
        let name = name_of(index);
        DeviceShared::create(inst, physical, name, family)
    }

    /// Another logical device on the same physical device and instance (its own handle,
    /// generations, buffers and rings). Two logical devices on one physical device is how the
    /// tests exercise several devices at once.
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
        unsafe { core.device.wait_semaphores(&info, timeout.as_nanos() as u64) }
            .map_err(|c| map_device("vkWaitSemaphores", c))
    }

    /// The raw `ash` device of the current generation, for code that drives Vulkan itself
    /// (benches comparing against native submission). Objects it creates must be destroyed
    /// before the device (and are lost with its generation).
    pub fn ash_device(&self) -> ash::Device {
        self.core().device.clone()
    }

    /// Runs `f` with queue `queue_index` of the compute family (current generation) locked
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
        let Some(slot) = core.queues.get(queue_index as usize) else {
            no_such_queue(queue_index, self.queue_count())
        };
        let q = lock(&slot.queue);
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
        let ctx = crate::RecordCtx { core: &core, declared };
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
    /// [`DeviceError::DeviceLost`] when recreation failed (the device is gone for good), a
    /// timeout as [`DeviceError::Vk`] with `TIMEOUT`.
    pub fn wait_generation(&self, after: u64, timeout: Duration) -> Result<u64, DeviceError> {
        self.shared.wait_generation(after, Instant::now() + timeout)
    }

    /// Queues in the compute queue family (rings beyond that share queues).
    pub fn queue_count(&self) -> u32 {
        self.shared.queue_count
    }

    /// The compute queue family index.
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

    /// A new ring: a scheduler over queue `queue_index` of the compute family (rings may
    /// share a queue). The scheduler joins the device's reset domain unless `config` names
    /// another. The ring moves to each new generation of the device by itself.
    ///
    /// # Errors
    /// No such queue, [`MAX_RINGS`] reached, semaphore or pool creation failed, or an invalid
    /// scheduler configuration.
    pub fn ring(
        &self,
        queue_index: u32,
        mut config: SchedulerConfig,
    ) -> Result<Scheduler<VulkanRing>, DeviceError> {
        let count = self.queue_count();
        if queue_index >= count {
            return Err(DeviceError::NoSuchQueue { index: queue_index, count });
        }
        if config.reset_domain.is_none() {
            config.reset_domain = Some(self.shared.domain.clone());
        }
        let slot = RingSlot::new(&self.shared, queue_index, &config.name, config.credit_limit)?;
        Ok(Scheduler::new(VulkanRing { slot }, config)?)
    }

    /// A buffer of `size` bytes on host-visible coherent memory, on the current generation.
    ///
    /// # Errors
    /// Zero size, over [`max_buffer_size`](VulkanDevice::max_buffer_size), allocation
    /// failure, or the current generation is lost ([`DeviceError::DeviceLost`] inside).
    pub fn buffer(&self, size: u64) -> Result<Buffer, BufferError> {
        let core = self.core();
        if core.is_lost() {
            return Err(BufferError::Device(DeviceError::DeviceLost { op: "vkAllocateMemory" }));
        }
        if self.shared.faults.draw_buffer_alloc() {
            self.shared.faults.count(crate::fault::Kind::FailedBufferAlloc);
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
    /// declared (one [`Exec`] transaction), adds their fences as dependencies (a reader waits
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
        Ok(arm(entity, job)?.push())
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
        arm(entity, job)
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

impl DeviceCore {
    /// Creates a logical device (one generation) on `physical`, with its kernels (the
    /// built-in ones; the caller adds user kernels), queues and memory.
    pub(crate) fn create(
        inst: Arc<InstanceShared>,
        physical: vk::PhysicalDevice,
        name: String,
        family: u32,
        device_id: u64,
        notify: Arc<Notify>,
    ) -> Result<Arc<DeviceCore>, InitError> {
        let validation = inst.validation;
        let instance = &inst.instance;
        // Timeline semaphores.
        let mut f12 = vk::PhysicalDeviceVulkan12Features::default();
        let mut f2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut f12);
        // SAFETY: valid physical device; the chain lives across the call.
        unsafe { instance.get_physical_device_features2(physical, &mut f2) };
        if f12.timeline_semaphore == vk::FALSE {
            return Err(InitError::NoTimelineSemaphores(name));
        }
        // SAFETY: valid physical device.
        let families = unsafe { instance.get_physical_device_queue_family_properties(physical) };
        let queue_count = families[family as usize].queue_count;
        let priorities = vec![1.0f32; queue_count as usize];
        let qinfo = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(family)
            .queue_priorities(&priorities)];
        let exts = [ash::khr::push_descriptor::NAME.as_ptr()];
        let mut enable12 = vk::PhysicalDeviceVulkan12Features::default().timeline_semaphore(true);
        let dinfo = vk::DeviceCreateInfo::default()
            .queue_create_infos(&qinfo)
            .enabled_extension_names(&exts)
            .push_next(&mut enable12);
        // SAFETY: valid physical device; the create info and its chain live across the call.
        let device = unsafe { instance.create_device(physical, &dinfo, None) }
            .map_err(|c| map_init("vkCreateDevice", c))?;
        let _ = validation;
        Self::finish(inst.clone(), physical, device, name, family, queue_count, (device_id, notify))
    }

    fn finish(
        inst: Arc<InstanceShared>,
        physical: vk::PhysicalDevice,
        device: ash::Device,
        name: String,
        family: u32,
        queue_count: u32,
        (device_id, notify): (u64, Arc<Notify>),
    ) -> Result<Arc<DeviceCore>, InitError> {
        let instance = &inst.instance;
        let destroy = |d: &ash::Device| {
            // SAFETY: nothing was submitted yet; objects created before the failure are
            // destroyed by the caller path below.
            unsafe { d.destroy_device(None) }
        };
        // SAFETY: valid physical device.
        let mem = unsafe { instance.get_physical_device_memory_properties(physical) };
        // SAFETY: valid physical device.
        let props = unsafe { instance.get_physical_device_properties(physical) };
        let want = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let types = &mem.memory_types[..mem.memory_type_count as usize];
        let pick = |extra: vk::MemoryPropertyFlags| {
            types.iter().position(|t| t.property_flags.contains(want | extra))
        };
        let Some(type_index) = pick(vk::MemoryPropertyFlags::DEVICE_LOCAL)
            .or_else(|| pick(vk::MemoryPropertyFlags::empty()))
        else {
            destroy(&device);
            return Err(InitError::NoDevice(format!("{name}: no host-visible coherent memory")));
        };
        let heap = mem.memory_heaps[types[type_index].heap_index as usize].size;
        let type_index = type_index as u32;
        let max_buffer_size = u64::from(props.limits.max_storage_buffer_range).min(heap / 2);
        let push = ash::khr::push_descriptor::Device::new(instance, &device);
        let queues = (0..queue_count)
            .map(|i| QueueSlot {
                // SAFETY: the family and index were created with the device.
                queue: Mutex::new(unsafe { device.get_device_queue(family, i) }),
                seq: AtomicU64::new(0),
            })
            .collect();
        // Kernels and the scratch buffer.
        let mut kernels = Vec::new();
        for b in Builtin::ALL {
            let (bindings, push_size) = b.layout();
            match create_kernel(&device, b.spirv(), bindings, push_size) {
                Ok(k) => kernels.push(k),
                Err(e) => {
                    for k in &kernels {
                        KernelRaw::destroy(k, &device);
                    }
                    destroy(&device);
                    return Err(InitError::NoDevice(format!("{name}: built-in kernel {b:?}: {e}")));
                }
            }
        }
        let mut allocator = Allocator::new(type_index);
        let scratch = (|| -> Result<(vk::Buffer, vk::DeviceMemory), vk::Result> {
            let info = vk::BufferCreateInfo::default()
                .size(256)
                .usage(vk::BufferUsageFlags::STORAGE_BUFFER);
            // SAFETY: valid device and create info.
            let buf = unsafe { device.create_buffer(&info, None) }?;
            // SAFETY: `buf` is valid.
            let req = unsafe { device.get_buffer_memory_requirements(buf) };
            let ai = vk::MemoryAllocateInfo::default()
                .allocation_size(req.size)
                .memory_type_index(type_index);
            // SAFETY: valid allocate info.
            let m = unsafe { device.allocate_memory(&ai, None) }?;
            // SAFETY: fresh buffer and memory of a compatible type.
            unsafe { device.bind_buffer_memory(buf, m, 0) }?;
            Ok((buf, m))
        })();
        let (scratch, scratch_memory) = match scratch {
            Ok(s) => s,
            Err(c) => {
                for k in &kernels {
                    k.destroy(&device);
                }
                allocator.destroy(&device);
                destroy(&device);
                return Err(map_init("scratch buffer", c));
            }
        };
        let semaphore = || {
            let mut type_info =
                vk::SemaphoreTypeCreateInfo::default().semaphore_type(vk::SemaphoreType::TIMELINE);
            let sinfo = vk::SemaphoreCreateInfo::default().push_next(&mut type_info);
            // SAFETY: valid device; timeline semaphores are enabled.
            unsafe { device.create_semaphore(&sinfo, None) }
        };
        let injected = semaphore().and_then(|h| match semaphore() {
            Ok(w) => Ok((h, w)),
            Err(c) => {
                // SAFETY: unused.
                unsafe { device.destroy_semaphore(h, None) };
                Err(c)
            }
        });
        let (hang, wedge) = match injected {
            Ok(s) => s,
            Err(c) => {
                for k in &kernels {
                    k.destroy(&device);
                }
                allocator.destroy(&device);
                // SAFETY: unused objects of a device with no work.
                unsafe {
                    device.destroy_buffer(scratch, None);
                    device.free_memory(scratch_memory, None);
                }
                destroy(&device);
                return Err(map_init("vkCreateSemaphore", c));
            }
        };
        let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        let comp = Completion {
            rings: Mutex::new(Vec::with_capacity(MAX_RINGS)),
            lost: AtomicBool::new(false),
        };
        let core = Arc::new(DeviceCore {
            instance: inst,
            device,
            push,
            name,
            generation,
            device_id,
            queue_family: family,
            queues,
            memory: Mutex::new(allocator),
            max_buffer_size,
            max_workgroups: props.limits.max_compute_work_group_count,
            kernels: Mutex::new(kernels),
            scratch,
            scratch_memory,
            comp,
            notify,
            injected: Injected {
                hang,
                wedge,
                hang_next: AtomicU64::new(0),
                wedge_next: AtomicU64::new(0),
                released: Mutex::new((0, 0)),
            },
            busy_ns_per_group: AtomicU64::new(0),
        });
        LIVE_DEVICES.fetch_add(1, Ordering::SeqCst);
        tracing::info!(target: "gpusched_vulkan", device = %core.name, generation, "device created");
        Ok(core)
    }
}

#[cold]
#[track_caller]
fn no_such_queue(index: u32, count: u32) -> ! {
    panic!("queue index {index} out of range: the compute family has {count} queues")
}

fn arm(
    entity: &Entity<VulkanRing>,
    mut job: VulkanJob,
) -> Result<ArmedJob<VulkanRing>, SubmitError> {
    // Distinct buffers, each with its strongest access.
    let mut objects: Vec<(Buffer, Access)> = Vec::with_capacity(job.writes.len() + job.reads.len());
    for (b, a) in job
        .writes
        .iter()
        .map(|b| (b, Access::Write))
        .chain(job.reads.iter().map(|b| (b, Access::Read)))
    {
        if !objects.iter().any(|(o, _)| o.ptr_eq(b)) {
            objects.push((b.clone(), a));
        }
    }
    let resvs: Vec<&gpusched::resv::Resv> = objects.iter().map(|(b, _)| b.resv()).collect();
    let mut exec = Exec::new();
    let armed = exec
        .lock_all(&resvs, |guards| {
            let deps = std::mem::take(&mut job.deps);
            let mut builder = entity.job(job).dependencies(deps);
            for (g, (_, access)) in guards.iter_mut().zip(&objects) {
                builder = builder.resv_dependencies(g, *access);
                if g.reserve_fences(1).is_err() {
                    return Err(SubmitError::Reserve);
                }
            }
            let armed = builder.arm().map_err(|ArmError { error, mut payload }| {
                match payload.take_error() {
                    Some(e) => SubmitError::Record(e),
                    None => SubmitError::Sched(error),
                }
            })?;
            let finished = armed.finished().clone();
            for (g, (_, access)) in guards.iter_mut().zip(&objects) {
                let usage = match access {
                    Access::Write => Usage::Write,
                    Access::Read => Usage::Read,
                };
                g.add_fence(finished.clone(), usage);
            }
            Ok(armed)
        })
        .map_err(SubmitError::Lock)??;
    Ok(armed)
}
