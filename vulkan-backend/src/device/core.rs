//! One generation of a device: a `DeviceCore` owns a `VkDevice` with its queues, memory
//! allocator, kernels, the busy kernel's scratch buffer and the injected-hang semaphores; its
//! set-up ([`DeviceCore::create`]) and its teardown (`Drop`, after every ring, buffer and
//! kernel use of it is gone). A lost core is replaced by a new one (see
//! [`recovery`](crate::recovery)); the rings and everything else that survives a loss live in
//! `DeviceShared`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use ash::vk;
use gpusched::fence::FenceError;

use super::guard::Guard;
use super::recovery::Notify;
use super::MAX_RINGS;
use crate::error::{map_init, InitError};
use crate::instance::InstanceShared;
use crate::kernel::{create_kernel, Builtin, KernelRaw};
use crate::memory::Allocator;
use crate::ring::RingHw;
use crate::sync::{self, lock};

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);
static LIVE_DEVICES: AtomicUsize = AtomicUsize::new(0);

/// Logical devices alive in this process (created and not yet destroyed): a leak check.
pub fn live_devices() -> usize {
    LIVE_DEVICES.load(Ordering::SeqCst)
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
            for k in sync::get_mut(&mut self.kernels).iter() {
                k.destroy(d);
            }
            d.destroy_buffer(self.scratch, None);
            d.free_memory(self.scratch_memory, None);
            sync::get_mut(&mut self.memory).destroy(d);
            d.destroy_semaphore(self.injected.hang, None);
            d.destroy_semaphore(self.injected.wedge, None);
            d.destroy_device(None);
        }
        LIVE_DEVICES.fetch_sub(1, Ordering::SeqCst);
        tracing::debug!(target: "gpusched_vulkan", generation = self.generation, "device destroyed");
    }
}

impl DeviceCore {
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
        let device = Guard::new(device, |d: ash::Device| {
            // SAFETY: set-up failed: nothing was submitted, and every object created on it
            // was destroyed by its own guard first (they drop before this one).
            unsafe { d.destroy_device(None) }
        });
        // The guards below borrow the device; they are defused before it is.
        let d: &ash::Device = &device;

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
        let queues = (0..queue_count)
            .map(|i| QueueSlot {
                // SAFETY: the family and index were created with the device.
                queue: Mutex::new(unsafe { d.get_device_queue(family, i) }),
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

        // The injected-hang semaphores.
        let semaphore = || {
            let mut type_info =
                vk::SemaphoreTypeCreateInfo::default().semaphore_type(vk::SemaphoreType::TIMELINE);
            let sinfo = vk::SemaphoreCreateInfo::default().push_next(&mut type_info);
            // SAFETY: valid device; timeline semaphores are enabled.
            let sem = unsafe { d.create_semaphore(&sinfo, None) }
                .map_err(|c| map_init("vkCreateSemaphore", c))?;
            Ok::<_, InitError>(Guard::new(sem, |s| {
                // SAFETY: an unused semaphore of this device.
                unsafe { d.destroy_semaphore(s, None) }
            }))
        };
        let hang = semaphore()?;
        let wedge = semaphore()?;

        // Set-up succeeded: the core owns everything from here (its `Drop` destroys it).
        let (hang, wedge) = (hang.defuse(), wedge.defuse());
        let (scratch_memory, scratch) = (scratch_memory.defuse(), scratch.defuse());
        let (allocator, kernels) = (allocator.defuse(), kernels.defuse());
        let device = device.defuse();
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
