//! External semaphores per job: an engine's `VkSemaphore`s a job waits on before it runs
//! ([`VulkanJob::wait_semaphore`]) or signals when its work is done
//! ([`VulkanJob::signal_semaphore`]), added to the job's own `VkSubmitInfo` (timeline values
//! through its `VkTimelineSemaphoreSubmitInfo`). Such a job is always submitted alone (never
//! batched). The arrays the submission reads are built when the job is built, so `run_job`
//! (a signalling section) only writes two slots of them: no allocation.
//!
//! The same arrays carry a job's waits for other rings of its device (cross-ring
//! dependencies the scheduler lets the device wait for: `ring/native.rs`), in slots reserved
//! at arm time after the external waits.
//!
//! What a wait the scheduler cannot see means for timeouts and device loss is on
//! [`ExternalWait`].

use std::sync::{Arc, Weak};

use ash::vk;

use crate::job::VulkanJob;
use crate::ring::RingHw;

/// A semaphore a job waits on before it runs ([`VulkanJob::wait_semaphore`]).
///
/// # What the scheduler cannot see
/// An external wait is a dependency outside the scheduler: its fences, `Resv`s and timeout
/// handler know nothing of it, and its correctness is the engine's responsibility (the
/// semaphore is signalled eventually, belongs to the job's device generation, and outlives
/// the submission; a binary semaphore's signal is submitted before the job is). The job's
/// `run_job` happens when its scheduler dependencies are met; the wait then holds the job on
/// the `VkQueue`, and everything submitted to that queue after it (by any ring on the queue)
/// waits behind it. A job whose semaphore is never signalled looks exactly like a hang:
/// - its timeout (the ring's `SchedulerConfig::timeout`, counted from when it reached the
///   head of the ring) blames it and ends it `TimedOut` (its dependants on the ring end with
///   that error); Vulkan cannot take a submission back, so it stays on the queue, still
///   waiting, and so does everything queued behind it;
/// - jobs of the *same ring* queued behind it then time out without the hardware moving:
///   the first such timeout answers `NoHang`, and after `STUCK_AFTER` (2) in a row the
///   generation is declared lost (every unfinished fence of the device ends `DeviceLost`)
///   and a new one is made (for an adopted device, by the engine's callback, if any);
/// - jobs of *other rings on the same `VkQueue`* are seen queued behind another ring's
///   unfinished submission: their timeouts answer `NoHang` without blame for as long as it
///   blocks (they wait for the engine's signal, or for the blocked ring's own later jobs to
///   get the device declared lost); rings on other queues are not affected;
/// - if nothing is queued behind it, no further timeout runs: the queue stays blocked until
///   the engine signals;
/// - when the engine signals (late), the blocked submission runs and the jobs behind it run
///   too (those not yet ended complete normally).
///
/// So every fence still signals exactly once (rule 1 of CONTRACT.md). But a fence that ended
/// `TimedOut` or `DeviceLost` does not mean the submission left the queue: the engine must
/// keep an external semaphore alive, and eventually signal what the job waits for, until the
/// device has passed the submission (a lost generation, and the device's teardown, wait for
/// its queue to drain: `vkDeviceWaitIdle` never returns while it waits on a semaphore nobody
/// signals). On a real `VK_ERROR_DEVICE_LOST` the driver drops the waits itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExternalWait {
    /// The engine's semaphore, of the job's device (generation).
    pub semaphore: vk::Semaphore,
    /// The timeline value to wait for; `None` for a binary semaphore (whose signal must
    /// already be submitted when the job is: binary semaphores have no wait-before-signal).
    pub value: Option<u64>,
    /// The pipeline stages that wait (`VkSubmitInfo::pWaitDstStageMask`);
    /// `ALL_COMMANDS` when in doubt.
    pub stage: vk::PipelineStageFlags,
}

/// A semaphore a job signals once all its work is done ([`VulkanJob::signal_semaphore`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExternalSignal {
    /// The engine's semaphore, of the job's device (generation).
    pub semaphore: vk::Semaphore,
    /// The timeline value to signal (above every value signalled or pending on it); `None`
    /// for a binary semaphore.
    pub value: Option<u64>,
}

/// The arrays of one job's `VkSubmitInfo` with its external semaphores, built with the job.
/// Slot 0 of the wait arrays is kept for an injected hang's wait (fault injection), slot 0
/// of the signal arrays for the ring's own timeline semaphore and the job's value; `run_job`
/// writes them (no allocation).
pub(crate) struct External {
    /// Set once the job's submission reached the queue (`vkQueueSubmit` returned success):
    /// how a presenter learns that the binary semaphores it waits and signals are consumed
    /// and pending (`present.rs`). Made when the job is built; `run_job` only stores into it.
    pub(crate) submitted: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    wait_sems: Vec<vk::Semaphore>,
    wait_values: Vec<u64>,
    wait_stages: Vec<vk::PipelineStageFlags>,
    signal_sems: Vec<vk::Semaphore>,
    signal_values: Vec<u64>,
    /// Where the waits for other rings of the device start in the wait arrays (reserved at
    /// arm: `reserve_native`, after the external waits); the wait arrays' length when none.
    native_at: usize,
    /// How many of the reserved native slots the next submission carries (`set_native`).
    native_used: usize,
    /// The rings and values of those waits (room reserved at arm): the submission's
    /// in-flight entry takes them (`take_native_peers`), and the ring's drain signals the
    /// job's fence only once each of those rings has signalled the awaited value's fence
    /// (see `RingHw::drain`).
    native_peers: Vec<NativePeer>,
}

/// A ring a submission waits for on the device, and the value it waits for.
pub(crate) type NativePeer = (Weak<RingHw>, u64);

impl std::fmt::Debug for External {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("External")
            .field("wait_sems", &self.wait_sems)
            .field("wait_values", &self.wait_values)
            .field("signal_sems", &self.signal_sems)
            .field("signal_values", &self.signal_values)
            .field("native_used", &self.native_used)
            .finish_non_exhaustive()
    }
}

impl External {
    /// Reserves `count` wait slots for waits on other rings' semaphores (at arm time).
    pub(crate) fn reserve_native(&mut self, count: usize) {
        self.native_at = self.wait_sems.len();
        self.native_used = 0;
        self.native_peers = Vec::with_capacity(count);
        for _ in 0..count {
            self.wait_sems.push(vk::Semaphore::null());
            self.wait_values.push(0);
            self.wait_stages.push(vk::PipelineStageFlags::ALL_COMMANDS);
        }
    }

    /// Sets native wait `index` (called for `0..count` in order before each submission):
    /// `Some((ring, value))` waits for that ring's timeline semaphore to reach `value`, `None`
    /// carries no wait. Allocation-free (room reserved by `reserve_native`).
    pub(crate) fn set_native(&mut self, index: usize, wait: Option<(&Arc<RingHw>, u64)>) {
        if index == 0 {
            self.native_used = 0;
            self.native_peers.clear();
        }
        let Some((ring, value)) = wait else { return };
        let at = self.native_at + self.native_used;
        if at < self.wait_sems.len() {
            self.wait_sems[at] = ring.sem;
            self.wait_values[at] = value;
            self.native_used += 1;
            if self.native_peers.len() < self.native_peers.capacity() {
                self.native_peers.push((Arc::downgrade(ring), value));
            }
        }
    }

    /// The rings and values the next submission waits for (`set_native`), taken for its
    /// in-flight entry. Allocation-free (the vector moves; an empty one is left).
    pub(crate) fn take_native_peers(&mut self) -> Vec<NativePeer> {
        std::mem::take(&mut self.native_peers)
    }

    /// The end of the wait slots the submission carries.
    fn waits_end(&self) -> usize {
        if self.native_at == 0 {
            self.wait_sems.len()
        } else {
            self.native_at + self.native_used
        }
    }
}

impl Default for External {
    fn default() -> Self {
        External {
            submitted: None,
            wait_sems: vec![vk::Semaphore::null()],
            wait_values: vec![0],
            wait_stages: vec![vk::PipelineStageFlags::ALL_COMMANDS],
            signal_sems: vec![vk::Semaphore::null()],
            signal_values: vec![0],
            native_at: 0,
            native_used: 0,
            native_peers: Vec::new(),
        }
    }
}

impl VulkanJob {
    /// The job waits for `wait` before any of its commands run (at `wait.stage`). The job is
    /// submitted alone (never batched with others); see the module's docs for what a wait
    /// the scheduler cannot see means for timeouts and device loss: a wait that is never
    /// satisfied times the job out and blocks its queue until the engine signals.
    ///
    /// # Safety
    /// `wait.semaphore` is a semaphore of the device the job runs on (a timeline one when
    /// `wait.value` is `Some`, a binary one otherwise), alive until the job's submission has
    /// completed on the hardware (not merely until its fence signalled: a timed-out or lost
    /// job's submission may still be queued); a binary semaphore has a signal submitted before
    /// the job is, and no other wait on it (Vulkan's rules for binary semaphores).
    pub unsafe fn wait_semaphore(mut self, wait: ExternalWait) -> Self {
        let e = self.external.get_or_insert_with(Box::default);
        e.wait_sems.push(wait.semaphore);
        e.wait_values.push(wait.value.unwrap_or(0));
        e.wait_stages.push(wait.stage);
        self
    }

    /// The job signals `signal` when all its work is done (with its own ring's semaphore, in
    /// the same submission). The job is submitted alone (never batched with others). A job
    /// that ends without its submission reaching the queue (its recording or submission
    /// failed, its dependency failed, the device was lost before `run_job`) never signals
    /// it: an engine waiting on it must bound its wait, or watch the job's fence too.
    ///
    /// # Safety
    /// `signal.semaphore` is a semaphore of the device the job runs on (a timeline one when
    /// `signal.value` is `Some`, with a value above every value signalled or pending on it; a
    /// binary one otherwise, unsignalled with no signal pending), alive until the job's
    /// submission has completed on the hardware.
    pub unsafe fn signal_semaphore(mut self, signal: ExternalSignal) -> Self {
        let e = self.external.get_or_insert_with(Box::default);
        e.signal_sems.push(signal.semaphore);
        e.signal_values.push(signal.value.unwrap_or(0));
        self
    }
}

/// Submits one job's command buffer on `queue` (locked by the caller): it signals the ring's
/// semaphore `ring` with its value, waits on the injected hang `hang` if any, and on/for its
/// external semaphores if any. Allocation-free (the external arrays were built with the job).
///
/// # Safety
/// The queue is externally synchronised by the caller; `cb` is executable and not pending;
/// the ring's value is above every value signalled or pending on its semaphore; every
/// semaphore is of `device` (the engine's promise for external ones).
pub(crate) unsafe fn submit_one(
    device: &ash::Device,
    queue: vk::Queue,
    cb: vk::CommandBuffer,
    ring: (vk::Semaphore, u64),
    hang: Option<(vk::Semaphore, u64)>,
    external: Option<&mut External>,
) -> ash::prelude::VkResult<()> {
    let cbs = [cb];
    let Some(e) = external else {
        let wait_sems = [hang.map_or(vk::Semaphore::null(), |w| w.0)];
        let wait_values = [hang.map_or(0, |w| w.1)];
        let stages = [vk::PipelineStageFlags::ALL_COMMANDS];
        let n = usize::from(hang.is_some());
        let (sems, values) = ([ring.0], [ring.1]);
        let mut timeline = vk::TimelineSemaphoreSubmitInfo::default()
            .wait_semaphore_values(&wait_values[..n])
            .signal_semaphore_values(&values);
        let submit = [vk::SubmitInfo::default()
            .wait_semaphores(&wait_sems[..n])
            .wait_dst_stage_mask(&stages[..n])
            .command_buffers(&cbs)
            .signal_semaphores(&sems)
            .push_next(&mut timeline)];
        // SAFETY: the caller's contract.
        return unsafe { device.queue_submit(queue, &submit, vk::Fence::null()) };
    };
    e.signal_sems[0] = ring.0;
    e.signal_values[0] = ring.1;
    let from = match hang {
        Some((sem, value)) => {
            e.wait_sems[0] = sem;
            e.wait_values[0] = value;
            0
        }
        None => 1,
    };
    let end = e.waits_end();
    let mut timeline = vk::TimelineSemaphoreSubmitInfo::default()
        .wait_semaphore_values(&e.wait_values[from..end])
        .signal_semaphore_values(&e.signal_values);
    let submit = [vk::SubmitInfo::default()
        .wait_semaphores(&e.wait_sems[from..end])
        .wait_dst_stage_mask(&e.wait_stages[from..end])
        .command_buffers(&cbs)
        .signal_semaphores(&e.signal_sems)
        .push_next(&mut timeline)];
    // SAFETY: the caller's contract.
    unsafe { device.queue_submit(queue, &submit, vk::Fence::null()) }?;
    if let Some(flag) = &e.submitted {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    Ok(())
}
