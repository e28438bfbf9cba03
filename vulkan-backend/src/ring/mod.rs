//! A ring: one scheduler's view of a `VkQueue`. Its hardware fence is a timeline semaphore
//! whose value N means "job N of this ring is done"; a command pool records its jobs; an
//! in-flight list holds the fences its completion thread signals.
//!
//! The ring stack, outermost first:
//! - [`VulkanRing`]: the scheduler's [`Backend`](gpusched::Backend), what
//!   [`VulkanDevice::ring`](crate::VulkanDevice::ring) wraps in a `Scheduler`;
//! - [`RingSlot`]: the ring across device generations (its current [`RingHw`], swapped to
//!   the new core by the recovery thread);
//! - [`RingHw`]: the ring's hardware on one generation.
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | `VulkanRing`, `RingSlot`, `RingFlags` (what survives a new generation) |
//! | `hw.rs` | `RingHw`: semaphore, in-flight and submission lists, command pool, drain, drop |
//! | `backend.rs` | the `Backend` impl: prepare, run, flush, timeout, free |
//! | `submit.rs` | recording, submission (single and batched), publishing a submission |
//! | `completion.rs` | the completion thread: pace, polls, naps, waits, adopting a dropped ring |
//! | `hw_fence.rs` | the hardware fence's `FenceOps` (`HwOps`) |
//! | `native.rs` | cross-ring waits on the device (another ring's semaphore value) |
//! | `timeout.rs` | the timeout decision (`timedout_job`): `decide`, a pure function of a `TimeoutView` and the ring's `Stall`, unit-tested; `StallState`, `STUCK_AFTER` |
//!
//! # Invariants (each stated in full where it is enforced)
//! - A ring executes in order, and host reads after a fence see the job's results (barriers
//!   recorded around each job: `submit.rs`).
//! - A ring's hardware fences signal exactly once (rule 1 of CONTRACT.md), in value order,
//!   one at a time, by its drainer only (`hw.rs`), whichever thread drains: the completion
//!   thread, a thread that pumps the scheduler (`RingHw::retire`), a device loss; a poll
//!   never runs ahead of the drain (`hw_fence.rs`).
//! - `run_job`, `free_job` and the timeout handler neither allocate, take a `Resv` lock nor
//!   wait; the drain signals without allocating (rule 4 of CONTRACT.md; `backend.rs`,
//!   `hw.rs`).
//! - Hardware progress (the semaphore counter) is tracked apart from fence state: a
//!   force-completed job keeps its command buffer and buffers until the hardware has passed
//!   it (`hw.rs`, `backend.rs`), and the timeout decision reads the counter (`timeout.rs`).

mod backend;
mod completion;
mod deadline;
mod hw;
mod hw_fence;
mod native;
mod submit;
mod timeout;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ash::vk;

use crate::device::{QueueFamilyInfo, MAX_RINGS};
use crate::error::DeviceError;
use crate::recovery::DeviceShared;
use crate::sync::{self, lock};

pub(crate) use completion::on_completion_thread;
pub(crate) use hw::RingHw;
pub(crate) use submit::check_generation;

/// What survives a ring's move to a new generation.
#[derive(Debug, Default)]
pub(crate) struct RingFlags {
    /// Whether `run_job` defers submission to `flush` (one `vkQueueSubmit` per batch).
    batching: AtomicBool,
    /// `vkQueueSubmit` calls that succeeded, over every generation.
    submits: AtomicU64,
    /// Jobs a thread pumping the scheduler found completed first (`RingHw::retire`), over
    /// every generation.
    pump_retired: AtomicU64,
    /// Whether the ring's jobs wait for other rings of the device on the device (`native.rs`);
    /// when off, such dependencies wait on the host.
    native_waits: AtomicBool,
}

/// A ring across device generations: its current `RingHw`, swapped to one on the new core
/// by the recovery thread. What the scheduler's backend holds.
pub(crate) struct RingSlot {
    pub(crate) shared: Arc<DeviceShared>,
    pub(crate) name: Box<str>,
    /// The ring's queue: its slot in the core's queues (the same on every generation).
    pub(crate) queue: u32,
    /// The queue's family, and the queue's index in it.
    pub(crate) family: QueueFamilyInfo,
    pub(crate) queue_index: u32,
    pub(crate) credit_limit: u32,
    current: Mutex<Arc<RingHw>>,
    pub(crate) flags: Arc<RingFlags>,
}

impl RingSlot {
    /// A ring on queue `queue_index` of queue family `family`.
    ///
    /// # Errors
    /// No such family or queue, [`MAX_RINGS`] reached, or creating the ring's semaphore or
    /// pool failed.
    pub(crate) fn new(
        shared: &Arc<DeviceShared>,
        family: u32,
        queue_index: u32,
        name: &str,
        credit_limit: u32,
    ) -> Result<Arc<RingSlot>, DeviceError> {
        let flags = Arc::new(RingFlags::default());
        flags.batching.store(true, Ordering::Relaxed);
        flags.native_waits.store(true, Ordering::Relaxed);
        // Under `slots`: recreation moves every registered slot, and a slot made during a
        // recreation lands on the new core.
        let mut slots = lock(&shared.slots);
        slots.retain(|w| w.strong_count() > 0);
        if slots.len() >= MAX_RINGS {
            return Err(DeviceError::TooManyRings(MAX_RINGS));
        }
        let core = shared.core();
        let queue = core.queue_slot(family, queue_index)?;
        let family = core.family_info(family).ok_or(DeviceError::NoSuchFamily { family })?;
        let hw = RingHw::new(&core, queue, name, credit_limit, flags.clone())?;
        {
            let mut rings = lock(&core.comp.rings);
            rings.retain(|w| w.strong_count() > 0);
            rings.push(Arc::downgrade(&hw));
        }
        let slot = Arc::new(RingSlot {
            shared: shared.clone(),
            name: name.into(),
            queue,
            family,
            queue_index,
            credit_limit,
            current: Mutex::new(hw),
            flags,
        });
        slots.push(Arc::downgrade(&slot));
        Ok(slot)
    }

    /// The current hardware ring.
    pub(crate) fn hw(&self) -> Arc<RingHw> {
        lock(&self.current).clone()
    }

    /// Moves the ring to `hw` (a new generation); returns the old one.
    ///
    /// (See also `Drop`: the current `RingHw` goes to its completion thread.)
    pub(crate) fn swap(&self, hw: Arc<RingHw>) -> Arc<RingHw> {
        std::mem::replace(&mut *lock(&self.current), hw)
    }
}

impl Drop for RingSlot {
    fn drop(&mut self) {
        let hw = sync::get_mut(&mut self.current);
        hw.adopt();
    }
}

/// The [`Backend`](gpusched::Backend) of a Vulkan ring; made by
/// [`VulkanDevice::ring`](crate::VulkanDevice::ring). It follows its device across generations.
pub struct VulkanRing {
    pub(crate) slot: Arc<RingSlot>,
}

impl fmt::Debug for VulkanRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hw = self.slot.hw();
        f.debug_struct("VulkanRing")
            .field("name", &hw.name)
            .field("device", &hw.core.name)
            .field("generation", &hw.core.generation)
            .field("family", &self.slot.family.index)
            .field("queue", &self.slot.queue_index)
            .field("submitted", &hw.submitted.load(Ordering::SeqCst))
            .field("completed", &hw.completed.load(Ordering::SeqCst))
            .finish()
    }
}

impl VulkanRing {
    /// Turns batching on (the default) or off: with it, the jobs the scheduler hands over in
    /// one go are submitted with one `vkQueueSubmit` (up to 32 jobs a call; one `VkSubmitInfo`
    /// per job, in order, each signalling its own job's value), which saves the per-submit
    /// CPU cost of real drivers; without it every job is its own submit.
    pub fn set_batching(&self, on: bool) {
        self.slot.flags.batching.store(on, Ordering::Relaxed);
    }

    /// Turns cross-ring waits on the device on (the default) or off for jobs armed from now
    /// on this ring: with them, a job depending on a job of another ring of the same device
    /// is submitted once that job is, and waits for it on the other ring's timeline
    /// semaphore; without them, it is submitted once that job's fence has signalled (a host
    /// round trip per dependency).
    pub fn set_native_waits(&self, on: bool) {
        self.slot.flags.native_waits.store(on, Ordering::Relaxed);
    }

    /// How many `vkQueueSubmit` calls this ring made, over every generation (one per job
    /// without batching, one per batch of up to 32 jobs with it).
    pub fn submits(&self) -> u64 {
        self.slot.flags.submits.load(Ordering::Relaxed)
    }

    /// How many jobs a thread that pumped this ring's scheduler (a client pushing jobs) found
    /// completed first, over every generation: its counter read advanced the ring's completed
    /// value, and the ring's drain signalled them (on that thread, or on the completion
    /// thread if it was draining then). A diagnostic: how much completion work the submission
    /// path took from the completion thread.
    pub fn retired_by_pump(&self) -> u64 {
        self.slot.flags.pump_retired.load(Ordering::Relaxed)
    }

    /// Whether batching is on.
    pub fn batching(&self) -> bool {
        self.slot.flags.batching.load(Ordering::Relaxed)
    }

    /// The last timeline value submitted on the current generation.
    pub fn submitted(&self) -> u64 {
        self.slot.hw().submitted.load(Ordering::SeqCst)
    }

    /// The last timeline value the completion thread saw reached on the current generation.
    pub fn completed(&self) -> u64 {
        self.slot.hw().completed.load(Ordering::SeqCst)
    }

    /// The current value of the current generation's semaphore: how far the hardware got
    /// (`vkGetSemaphoreCounterValue`; 0 if the read fails).
    pub fn hw_progress(&self) -> u64 {
        self.slot.hw().counter().unwrap_or(0)
    }

    /// The generation of the ring's device that new jobs record for.
    pub fn generation(&self) -> u64 {
        self.slot.hw().core.generation
    }

    /// The queue family the ring runs on, with what it can run: an entity's jobs may land on
    /// any of its rings, so its rings must all be able to run them (see
    /// [`VulkanDevice::entity`](crate::VulkanDevice::entity)).
    pub fn family(&self) -> QueueFamilyInfo {
        self.slot.family
    }

    /// The index of the ring's queue in its family (rings may share a queue).
    pub fn queue_index(&self) -> u32 {
        self.slot.queue_index
    }

    /// The ring's name (its scheduler's).
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// The name of the ring's device.
    pub fn device_name(&self) -> &str {
        &self.slot.shared.name
    }

    /// The raw timeline semaphore of the current generation (diagnostics, benches).
    pub fn semaphore(&self) -> vk::Semaphore {
        self.slot.hw().sem
    }

    /// The earliest deadline hinted for a job still on the ring (current generation):
    /// [`Fence::set_deadline`](gpusched::fence::Fence::set_deadline) on a job's finished
    /// fence reaches its hardware fence through the scheduler, and the ring records it here.
    /// A hint only: it has no effect on scheduling or completion yet (clock boosting or
    /// busier completion polling may act on it later). `None` once the job it came from has
    /// completed (hints for other jobs heard before it are not kept).
    pub fn earliest_deadline(&self) -> Option<std::time::Instant> {
        let hw = self.slot.hw();
        hw.deadline.earliest(hw.signalled.load(Ordering::SeqCst))
    }
}
