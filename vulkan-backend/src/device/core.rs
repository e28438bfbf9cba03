//! One generation of a device: a `DeviceCore` owns a `VkDevice` with its queues (every queue
//! of each family [`plan_queues`] picks), memory allocators, kernels, the busy kernel's
//! scratch buffer and its fault state (`fault::DeviceFaults`: injected-hang semaphores,
//! busy-kernel calibration; zero-sized without the `fault-injection` feature); its
//! set-up ([`DeviceCore::create`]) and its teardown (`Drop`, after every ring, buffer and
//! kernel use of it is gone). A lost core is replaced by a new one (see
//! [`recovery`](crate::recovery)); the rings and everything else that survives a loss live in
//! `DeviceShared`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use ash::vk;
use gpusched::fence::FenceError;

use super::guard::Guard;
use super::queues::{plan_queues, QueueFamilyInfo};
use super::recovery::Notify;
use super::select::queue_families;
use super::MAX_RINGS;
use crate::alloc::GpuMemory;
use crate::error::{map_init, DeviceError, InitError};
use crate::fault::DeviceFaults;
use crate::instance::InstanceShared;
use crate::kernel::{create_kernel, Builtin, KernelRaw};
use crate::memory::Allocator;
use crate::ring::RingHw;
use crate::sync::{self, lock};

use super::adopt::{LockedQueue, Ownership, QueueLock};

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);
static LIVE_DEVICES: AtomicUsize = AtomicUsize::new(0);

/// Logical devices alive in this process (created and not yet destroyed): a leak check.
pub fn live_devices() -> usize {
    LIVE_DEVICES.load(Ordering::SeqCst)
}

/// One `VkQueue`, shared by the rings on it: `vkQueueSubmit` is serialised by its
/// [`QueueLock`] (shared with the engine that lent the queue, for an adopted device).
pub(crate) struct QueueSlot {
    pub(crate) queue: vk::Queue,
    /// Held for every `vkQueueSubmit` on `queue` ([`QueueSlot::lock`]).
    pub(crate) queue_lock: Arc<QueueLock>,
    /// Its queue family (a command pool for it must be of this family).
    pub(crate) family: u32,
    /// Successful `vkQueueSubmit` calls on it, counted under `queue`: each submission's
    /// sequence number (the rings' timeout handlers compare them, see `ring`, "Timeouts").
    pub(crate) seq: AtomicU64,
}

pub(crate) struct DeviceCore {
    /// Keeps the instance alive while the device lives (surfaces are made from it).
    pub(crate) instance: Arc<InstanceShared>,
    pub(crate) device: ash::Device,
    pub(crate) push: ash::khr::push_descriptor::Device,
    pub(crate) name: String,
    pub(crate) generation: u64,
    /// The shared device (handle) this core is a generation of: kernel handles name it.
    pub(crate) device_id: u64,
    /// The main queue family (`families[0].index`).
    pub(crate) queue_family: u32,
    /// The families queues were created on, main family first (see
    /// [`plan_queues`]); the same on every generation.
    pub(crate) families: Vec<QueueFamilyInfo>,
    /// Every queue of every family of `families`, family after family in that order (so the
    /// main family's queue `i` is slot `i`). Rings name their queue by its slot here.
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
    /// Fault injection: the injected-hang semaphores (submissions that wait on
    /// host-signalled timeline values) and the busy kernel's calibration. Zero-sized without
    /// the `fault-injection` feature.
    pub(crate) faults: DeviceFaults,
    /// The `gpu-allocator` of located buffers and images (`alloc.rs`).
    pub(crate) gpu: GpuMemory,
    /// The property flags of each memory type.
    pub(crate) memory_types: Vec<vk::MemoryPropertyFlags>,
    /// Graphics work: whether the device supports it, and its pipelines (`graphics.rs`).
    pub(crate) graphics: crate::graphics::Graphics,
    /// The physical device it was created on (for surface queries, `swapchain.rs`).
    pub(crate) physical: vk::PhysicalDevice,
    /// Whether `VK_KHR_swapchain` is enabled (created here when the device offers it).
    pub(crate) swapchain: bool,
    /// Whether this core created its `VkDevice` (its drop destroys it) or adopted an
    /// engine's (its drop destroys only its own objects, then tells the engine).
    pub(crate) ownership: Ownership,
}

/// The core's rings and its loss flag (what device loss and `wait_idle` go through).
pub(crate) struct Completion {
    /// The rings, weakly (capacity [`MAX_RINGS`]).
    pub(crate) rings: Mutex<Vec<Weak<RingHw>>>,
    /// Set when the core is lost (a wait or submit reported `VK_ERROR_DEVICE_LOST`, an
    /// injected loss, or a hang nothing can release). The rings' completion threads exit.
    pub(crate) lost: AtomicBool,
    /// How many rings have their `gated` flag set (their drain waits for another ring's
    /// drain: `RingHw::drain`); while none has, a drain looks at no other ring.
    pub(crate) gated: AtomicUsize,
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

/// What [`DeviceCore::assemble`] needs beside the `VkDevice`: the instance and physical
/// device, the name, the queue families (main first) and the queues on them (family, index,
/// lock; grouped family after family in `families` order), graphics support, the shared
/// device's id and its recovery notifier.
pub(crate) struct Setup {
    pub(crate) inst: Arc<InstanceShared>,
    pub(crate) physical: vk::PhysicalDevice,
    pub(crate) name: String,
    pub(crate) families: Vec<QueueFamilyInfo>,
    pub(crate) lent: Vec<(u32, u32, Arc<QueueLock>)>,
    pub(crate) graphics: crate::graphics::Support,
    /// Whether `VK_KHR_swapchain` is enabled on the device.
    pub(crate) swapchain: bool,
    pub(crate) device_id: u64,
    pub(crate) notify: Arc<Notify>,
}

impl QueueSlot {
    /// Locks the queue for a `vkQueueSubmit` (its [`QueueLock`]); the guard derefs to it.
    pub(crate) fn lock(&self) -> LockedQueue<'_> {
        LockedQueue { _guard: self.queue_lock.lock(), queue: self.queue }
    }
}

impl DeviceCore {
    /// The slot (in `queues`) of queue `index` of family `family`.
    ///
    /// # Errors
    /// [`DeviceError::NoSuchFamily`] for a family without queues on this device,
    /// [`DeviceError::NoSuchQueue`] for an index past the family's queues.
    pub(crate) fn queue_slot(&self, family: u32, index: u32) -> Result<u32, DeviceError> {
        let mut base = 0;
        for f in &self.families {
            if f.index == family {
                if index >= f.queue_count {
                    return Err(DeviceError::NoSuchQueue { index, count: f.queue_count });
                }
                return Ok(base + index);
            }
            base += f.queue_count;
        }
        Err(DeviceError::NoSuchFamily { family })
    }

    /// The family info of `family` (one of `families`).
    pub(crate) fn family_info(&self, family: u32) -> Option<QueueFamilyInfo> {
        self.families.iter().copied().find(|f| f.index == family)
    }

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

    /// Declares the core lost without signalling anything on this thread: sets the flag,
    /// wakes every ring's completion thread (each fails its ring's unfinished fences
    /// `DeviceLost` on its own thread, at once if parked, within [`COMPLETION_TIMEOUT`]
    /// otherwise) and the recovery thread. For callers that hold locks a fence callback may
    /// take (arm time: `prepare_job` runs under the entity's lock), where
    /// [`mark_lost`](DeviceCore::mark_lost) would run callbacks inline. Allocation-free.
    ///
    /// [`COMPLETION_TIMEOUT`]: crate::device::COMPLETION_TIMEOUT
    pub(crate) fn declare_lost(&self) {
        self.comp.lost.store(true, Ordering::SeqCst);
        let rings = self.comp.snapshot();
        for r in rings.iter().flatten() {
            r.wake();
        }
        drop(rings);
        self.notify.loss();
    }

    /// Releases injected hangs up to wait value `value` (see `fault::DeviceFaults`; a no-op
    /// without the `fault-injection` feature). Allocation-free.
    pub(crate) fn release_hang(&self, value: u64) {
        self.faults.release_hang(&self.device, value);
    }

    /// Releases every injected hang handed out so far, and with `wedges` the un-releasable
    /// ones too (teardown: a simulated wedge must not leak the device). A no-op without the
    /// `fault-injection` feature.
    pub(crate) fn release_injected(&self, wedges: bool) {
        self.faults.release_injected(&self.device, wedges);
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
        // is destroyed (the fault state's hang semaphores: every hang was released above, so
        // nothing waits on them).
        unsafe {
            if let Err(e) = self.wait_idle_at_teardown() {
                if e != vk::Result::ERROR_DEVICE_LOST {
                    tracing::warn!(target: "gpusched_vulkan", ?e, "waiting for the device failed at teardown");
                }
            }
            for k in sync::get_mut(&mut self.kernels).iter() {
                k.destroy(d);
            }
            d.destroy_buffer(self.scratch, None);
            d.free_memory(self.scratch_memory, None);
            sync::get_mut(&mut self.memory).destroy(d);
            self.graphics.destroy(d);
            self.gpu.destroy();
            self.faults.destroy(d);
            if self.ownership.owned() {
                d.destroy_device(None);
            }
        }
        // An adopted device: everything of ours on it is destroyed; the engine may destroy it.
        self.ownership.released();
        LIVE_DEVICES.fetch_sub(1, Ordering::SeqCst);
        tracing::debug!(target: "gpusched_vulkan", generation = self.generation, "device destroyed");
    }
}

impl DeviceCore {
    /// Waits until the device has no pending work, before teardown destroys anything: our
    /// own device with `vkDeviceWaitIdle`; an adopted one with `vkQueueWaitIdle` on each lent
    /// queue under its [`QueueLock`] (`vkDeviceWaitIdle` would need every queue of the
    /// engine's device externally synchronised, and the engine may be using the others).
    ///
    /// # Safety
    /// Teardown only: no ring of this core submits any more.
    unsafe fn wait_idle_at_teardown(&self) -> ash::prelude::VkResult<()> {
        if self.ownership.owned() {
            // SAFETY: nothing of ours submits (caller); the device is ours.
            return unsafe { self.device.device_wait_idle() };
        }
        // Every lent queue, even after one reports an error (a lost device may still run
        // work on the others): the first error is returned.
        let mut result = Ok(());
        for q in &self.queues {
            let queue = q.lock();
            // SAFETY: the queue is locked (externally synchronised with the engine).
            let r = unsafe { self.device.queue_wait_idle(*queue) };
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// Creates a logical device (one generation) on `physical`, with its kernels (the
    /// built-in ones; the caller adds user kernels), queues and memory.
    ///
    /// Each object is guarded as soon as it exists ([`Guard`]): when a later step fails,
    /// everything created so far is destroyed, newest first, the device last.
    pub(crate) fn create(
        inst: Arc<InstanceShared>,
        physical: vk::PhysicalDevice,
        name: String,
        family: u32,
        device_id: u64,
        notify: Arc<Notify>,
    ) -> Result<Arc<DeviceCore>, InitError> {
        let instance = &inst.instance;
        // Timeline semaphores.
        let mut f12 = vk::PhysicalDeviceVulkan12Features::default();
        let mut f2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut f12);
        // SAFETY: valid physical device; the chain lives across the call.
        unsafe { instance.get_physical_device_features2(physical, &mut f2) };
        if f12.timeline_semaphore == vk::FALSE {
            return Err(InitError::NoTimelineSemaphores(name));
        }
        // Every queue of every family the plan uses, all at the same priority.
        let Some(families) = plan_queues(&queue_families(&inst, physical)) else {
            return Err(InitError::NoDevice(format!("{name}: no compute queue")));
        };
        debug_assert_eq!(families[0].index, family, "selection and creation plan alike");
        let priorities: Vec<Vec<f32>> =
            families.iter().map(|f| vec![1.0f32; f.queue_count as usize]).collect();
        let qinfo: Vec<vk::DeviceQueueCreateInfo<'_>> = families
            .iter()
            .zip(&priorities)
            .map(|(f, p)| {
                vk::DeviceQueueCreateInfo::default().queue_family_index(f.index).queue_priorities(p)
            })
            .collect();
        // VK_KHR_swapchain when offered (presenting to a window, `swapchain.rs`).
        // SAFETY: valid physical device.
        let swapchain = unsafe { instance.enumerate_device_extension_properties(physical) }
            .unwrap_or_default()
            .iter()
            .any(|e| e.extension_name_as_c_str().is_ok_and(|n| n == ash::khr::swapchain::NAME));
        let mut exts = vec![ash::khr::push_descriptor::NAME.as_ptr()];
        if swapchain {
            exts.push(ash::khr::swapchain::NAME.as_ptr());
        }
        let mut enable12 = vk::PhysicalDeviceVulkan12Features::default().timeline_semaphore(true);
        // Dynamic rendering and synchronization2 (Vulkan 1.3), for graphics work, when present.
        let graphics = crate::graphics::supported(instance, physical, families[0].caps.graphics);
        let mut enable13 = vk::PhysicalDeviceVulkan13Features::default()
            .dynamic_rendering(true)
            .synchronization2(true);
        let mut dinfo = vk::DeviceCreateInfo::default()
            .queue_create_infos(&qinfo)
            .enabled_extension_names(&exts)
            .push_next(&mut enable12);
        if graphics.features {
            dinfo = dinfo.push_next(&mut enable13);
        }
        // SAFETY: valid physical device; the create info and its chain live across the call.
        let device = unsafe { instance.create_device(physical, &dinfo, None) }
            .map_err(|c| map_init("vkCreateDevice", c))?;
        let lent = families
            .iter()
            .flat_map(|f| (0..f.queue_count).map(move |i| (f.index, i)))
            .map(|(family, index)| (family, index, Arc::new(QueueLock::new())))
            .collect();
        let setup =
            Setup { inst, physical, name, families, lent, graphics, swapchain, device_id, notify };
        Self::assemble(setup, device, Ownership::Owned)
    }

    /// The rest of a generation's set-up, on a `VkDevice` created above or adopted
    /// (`adopt.rs`): queues, kernels, memory, the scratch buffer, the fault state. On failure
    /// everything made here is destroyed, and the device too when it is `Owned`; an adopted
    /// device is handed back to its engine instead (its release callback runs).
    pub(crate) fn assemble(
        setup: Setup,
        device: ash::Device,
        ownership: Ownership,
    ) -> Result<Arc<DeviceCore>, InitError> {
        let Setup { inst, physical, name, families, lent, graphics, swapchain, device_id, notify } =
            setup;
        let family = families[0].index;
        let instance = &inst.instance;
        let device = Guard::new((device, ownership), |(d, own): (ash::Device, Ownership)| {
            if own.owned() {
                // SAFETY: set-up failed: nothing was submitted, and every object created on
                // it was destroyed by its own guard first (they drop before this one).
                unsafe { d.destroy_device(None) }
            } else {
                own.released();
            }
        });
        // The guards below borrow the device; they are defused before it is.
        let d: &ash::Device = &device.0;

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
            return Err(InitError::NoDevice(format!("{name}: no host-visible coherent memory")));
        };
        let heap = mem.memory_heaps[types[type_index].heap_index as usize].size;
        let type_index = type_index as u32;
        let max_buffer_size = u64::from(props.limits.max_storage_buffer_range).min(heap / 2);
        let push = ash::khr::push_descriptor::Device::new(instance, d);
        let queues = lent
            .into_iter()
            .map(|(family, i, queue_lock)| QueueSlot {
                // SAFETY: the family and index were created with the device (checked for an
                // adopted one, whose engine promised it created them).
                queue: unsafe { d.get_device_queue(family, i) },
                queue_lock,
                family,
                seq: AtomicU64::new(0),
            })
            .collect();

        // The built-in kernels, in `Builtin` order.
        let mut kernels = Guard::new(Vec::new(), |ks: Vec<KernelRaw>| {
            for k in &ks {
                k.destroy(d);
            }
        });
        for b in Builtin::ALL {
            let (bindings, push_size) = b.layout();
            let k = create_kernel(d, b.spirv(), bindings, push_size)
                .map_err(|e| InitError::NoDevice(format!("{name}: built-in kernel {b:?}: {e}")))?;
            kernels.push(k);
        }
        let allocator = Guard::new(Allocator::new(type_index), |mut a: Allocator| a.destroy(d));

        // The busy kernel's scratch buffer.
        let scratch_info =
            vk::BufferCreateInfo::default().size(256).usage(vk::BufferUsageFlags::STORAGE_BUFFER);
        // SAFETY: valid device and create info.
        let scratch = unsafe { d.create_buffer(&scratch_info, None) }
            .map_err(|c| map_init("scratch buffer", c))?;
        let scratch = Guard::new(scratch, |b| {
            // SAFETY: an unused buffer of this device.
            unsafe { d.destroy_buffer(b, None) }
        });
        // SAFETY: `scratch` is valid.
        let req = unsafe { d.get_buffer_memory_requirements(*scratch) };
        let ai = vk::MemoryAllocateInfo::default()
            .allocation_size(req.size)
            .memory_type_index(type_index);
        // SAFETY: valid allocate info.
        let scratch_memory =
            unsafe { d.allocate_memory(&ai, None) }.map_err(|c| map_init("scratch buffer", c))?;
        let scratch_memory = Guard::new(scratch_memory, |m| {
            // SAFETY: unused memory of this device (its buffer is destroyed after it, or was
            // never bound to it).
            unsafe { d.free_memory(m, None) }
        });
        // SAFETY: fresh buffer and memory of a compatible type.
        unsafe { d.bind_buffer_memory(*scratch, *scratch_memory, 0) }
            .map_err(|c| map_init("scratch buffer", c))?;

        // The fault state (the injected-hang semaphores), last: nothing fails after it, so it
        // needs no guard (on its own failure it leaves nothing behind).
        let faults = DeviceFaults::create(d)?;

        let gpu = GpuMemory::new(instance, d, physical)?;

        // Set-up succeeded: the core owns everything from here (its `Drop` destroys it).
        let (scratch_memory, scratch) = (scratch_memory.defuse(), scratch.defuse());
        let (allocator, kernels) = (allocator.defuse(), kernels.defuse());
        let (device, ownership) = device.defuse();
        let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        let comp = Completion {
            rings: Mutex::new(Vec::with_capacity(MAX_RINGS)),
            lost: AtomicBool::new(false),
            gated: AtomicUsize::new(0),
        };
        let core = Arc::new(DeviceCore {
            instance: inst,
            device,
            push,
            name,
            generation,
            device_id,
            queue_family: family,
            families,
            queues,
            memory: Mutex::new(allocator),
            max_buffer_size,
            max_workgroups: props.limits.max_compute_work_group_count,
            kernels: Mutex::new(kernels),
            scratch,
            scratch_memory,
            comp,
            notify,
            faults,
            gpu,
            memory_types: types.iter().map(|t| t.property_flags).collect(),
            graphics: crate::graphics::Graphics::new(graphics.queue),
            physical,
            swapchain,
            ownership,
        });
        LIVE_DEVICES.fetch_add(1, Ordering::SeqCst);
        tracing::info!(target: "gpusched_vulkan", device = %core.name, generation, "device created");
        Ok(core)
    }
}
