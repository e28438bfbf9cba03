//! `DeviceShared`: what every [`VulkanDevice`] handle of one device shares, and what survives
//! a device loss: the current core (generation), the rings' slots, user kernels (created again
//! on each generation), the reset domain, the fault plan, and the recovery thread (see
//! [`recovery`](crate::recovery), which holds the loss, recreation and teardown logic).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::Instant;

use ash::vk;
use gpusched::ResetDomain;

use super::adopt::Adoption;
use super::recovery::{recovery_thread, Graveyard, Notify};
use super::{DeviceCore, VulkanDevice};
use crate::error::{DeviceError, InitError, ShaderError};
use crate::fault::{self, FaultState};
use crate::instance::InstanceShared;
use crate::kernel::{create_kernel, Kernel};
use crate::ring::RingSlot;
use crate::sync::{self, lock};

static NEXT_DEVICE_ID: AtomicU64 = AtomicU64::new(1);

/// What a [`VulkanDevice`] handle shares: the current core and what survives recreation.
pub(crate) struct DeviceShared {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) instance: Arc<InstanceShared>,
    pub(crate) physical: vk::PhysicalDevice,
    pub(crate) family: u32,
    pub(crate) queue_count: u32,
    pub(super) current: Mutex<Arc<DeviceCore>>,
    pub(crate) generation: AtomicU64,
    pub(crate) generations: AtomicU64,
    /// Recreation failed: the device is gone for good.
    pub(crate) dead: AtomicBool,
    /// Why it is gone: the attempts made and the last error (set before `dead`).
    pub(crate) gone: OnceLock<(u32, String)>,
    /// A ring of a lost generation (in the graveyard) has work its hardware has not passed:
    /// that work may still hold the physical device (a loss injected on lavapipe leaves it
    /// running, on the thread pool that runs every `VkDevice`'s dispatches), so a job of
    /// the new generation may be queued behind it without having started. Set by the
    /// recovery thread (`recreate`, then every reap), read by the timeout handler
    /// (`VulkanRing::timedout_job`), which does not blame such a job.
    pub(crate) lost_busy: AtomicBool,
    /// `wait_generation` sleeps here.
    pub(super) gen_lock: Mutex<()>,
    pub(super) gen_cv: Condvar,
    /// The rings (weakly), moved to each new core. Lock order: `user_kernels`, `slots`,
    /// `current`.
    pub(crate) slots: Mutex<Vec<Weak<RingSlot>>>,
    /// User kernels, to create again on each new core: (SPIR-V, bindings, push size).
    pub(super) user_kernels: Mutex<Vec<(Vec<u8>, u32, u32)>>,
    pub(crate) domain: ResetDomain,
    pub(crate) notify: Arc<Notify>,
    pub(super) graveyard: Mutex<Graveyard>,
    pub(crate) faults: FaultState,
    pub(super) thread: Mutex<Option<JoinHandle<()>>>,
    pub(super) thread_id: OnceLock<ThreadId>,
    /// A device lent by an engine (`adopt.rs`): its generations come from the engine's
    /// re-creation callback, never from `vkCreateDevice`.
    pub(crate) adoption: Option<Adoption>,
}

impl fmt::Debug for DeviceShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceShared")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl DeviceShared {
    /// A new device handle with its first generation and its recovery thread.
    pub(crate) fn create(
        inst: Arc<InstanceShared>,
        physical: vk::PhysicalDevice,
        name: String,
        family: u32,
    ) -> Result<VulkanDevice, InitError> {
        let id = NEXT_DEVICE_ID.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::default());
        let core =
            DeviceCore::create(inst.clone(), physical, name.clone(), family, id, notify.clone())?;
        Ok(Self::start(inst, physical, core, notify, None))
    }

    /// A fresh shared device id (a core's `device_id`).
    pub(crate) fn next_id() -> u64 {
        NEXT_DEVICE_ID.fetch_add(1, Ordering::Relaxed)
    }

    /// The shared device over its first core `core` (whose `device_id` it takes), with its
    /// recovery thread; `adoption` for a device lent by an engine (`adopt.rs`).
    pub(crate) fn start(
        inst: Arc<InstanceShared>,
        physical: vk::PhysicalDevice,
        core: Arc<DeviceCore>,
        notify: Arc<Notify>,
        adoption: Option<Adoption>,
    ) -> VulkanDevice {
        let id = core.device_id;
        let name = core.name.clone();
        let family = core.queue_family;
        fault::calibrate_busy(&core);
        let shared = Arc::new(DeviceShared {
            id,
            name,
            instance: inst,
            physical,
            family,
            queue_count: core.families[0].queue_count,
            generation: AtomicU64::new(core.generation),
            generations: AtomicU64::new(1),
            current: Mutex::new(core),
            dead: AtomicBool::new(false),
            gone: OnceLock::new(),
            lost_busy: AtomicBool::new(false),
            gen_lock: Mutex::new(()),
            gen_cv: Condvar::new(),
            slots: Mutex::new(Vec::with_capacity(crate::MAX_RINGS)),
            user_kernels: Mutex::new(Vec::new()),
            domain: ResetDomain::new(format!("vk{id}")),
            notify: notify.clone(),
            graveyard: Mutex::new(Graveyard::default()),
            faults: FaultState::new(),
            thread: Mutex::new(None),
            thread_id: OnceLock::new(),
            adoption,
        });
        let weak = Arc::downgrade(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("gpusched-vk-dev{id}-recovery"))
            .spawn(move || recovery_thread(weak, notify));
        match spawned {
            Ok(h) => {
                let _ = shared.thread_id.set(h.thread().id());
                *lock(&shared.thread) = Some(h);
            }
            Err(e) => panic!("cannot start the vulkan recovery thread: {e}"),
        }
        VulkanDevice { shared }
    }

    /// The current core.
    pub(crate) fn core(&self) -> Arc<DeviceCore> {
        lock(&self.current).clone()
    }

    /// Creates a user kernel on the current core and remembers it for the next ones.
    pub(crate) fn create_kernel(
        &self,
        spirv: &[u8],
        bindings: u32,
        push_size: u32,
    ) -> Result<Kernel, ShaderError> {
        // Held across creation: recreation swaps the core under this lock, so every kernel
        // lands on every generation at the same index.
        let mut user = lock(&self.user_kernels);
        let core = self.core();
        let raw = create_kernel(&core.device, spirv, bindings, push_size)?;
        let mut k = lock(&core.kernels);
        k.push(raw);
        user.push((spirv.to_vec(), bindings, push_size));
        Ok(Kernel { index: k.len() - 1, device: self.id, bindings, push_size })
    }

    /// [`DeviceError::Gone`] once re-creation failed for good, else `None`.
    pub(crate) fn gone_error(&self) -> Option<DeviceError> {
        if !self.dead.load(Ordering::SeqCst) {
            return None;
        }
        let (attempts, last) = self.gone.get().cloned().unwrap_or_default();
        Some(DeviceError::Gone { attempts, last })
    }

    pub(crate) fn wait_generation(
        &self,
        after: u64,
        deadline: Instant,
    ) -> Result<u64, DeviceError> {
        let mut g = lock(&self.gen_lock);
        loop {
            let gen = self.generation.load(Ordering::SeqCst);
            if gen > after {
                return Ok(gen);
            }
            if let Some(e) = self.gone_error() {
                return Err(e);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(DeviceError::Vk { op: "wait_generation", code: vk::Result::TIMEOUT });
            }
            g = sync::wait_timeout(&self.gen_cv, g, deadline - now);
        }
    }
}
