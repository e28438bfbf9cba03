//! A ring: one scheduler's view of a `VkQueue`, with a timeline semaphore whose value N means
//! "job N of this ring is done" (the hardware fence), a command pool, and the in-flight list
//! the completion thread drains.
//!
//! # Ordering
//! Each command buffer starts with a global memory barrier (all commands → all commands), so
//! it runs after, and sees the writes of, everything submitted to its queue before it: the
//! ring executes in order, as the scheduler's same-ring dependency shortcut requires (Vulkan
//! does not order separate submissions by itself). It ends with a barrier to the host, so
//! host reads after the fence see the results. A [`VulkanJob::empty`](crate::VulkanJob::empty)
//! job records neither (no command: nothing to order or make visible; its semaphore signal
//! still waits for every command submitted before it, which is all its fence promises).
//! Signal operations of one queue complete in submission order, so "the semaphore reached N"
//! implies jobs `..=N` are done. The hardware fences of a ring (one fence context, seqno = value)
//! signal in value order, one at a time, outside the ring lock, by whichever thread is draining the
//! ring (`RingHw::drain`): completion, device loss and a failed batch only mark entries done or
//! failed and leave the signalling to it. A failed batch's values are not reused. A hardware
//! fence's [`FenceOps::signaled`] poll reports what the drain has signalled (`RingHw::signalled`),
//! never the semaphore counter, which runs ahead of the drain: a poll must not signal a later
//! fence before the drain has signalled the earlier ones. Hardware progress (stuck
//! detection, recycling, `hw_progress`) reads the counter.
//!
//! # Contract (see [`gpusched::Backend`])
//! `prepare_job` (arm time) records the command buffer on the ring's *current* hardware ring
//! (`RingHw`, one per device generation), allocates the hardware fence with its
//! [`FenceOps`] and reserves room in the in-flight list; the job keeps its `RingHw`.
//! `run_job` (signalling section) takes the ring lock, then the queue lock, submits one
//! `VkSubmitInfo` signalling the next value (or batches it for `flush`: one `vkQueueSubmit`
//! per batch, of up to [`SUBMIT_CHUNK`] jobs, with one `VkSubmitInfo` per job signalling that
//! job's own value, so a job of a batch completes, and is judged by the timeout handler, on
//! its own, not when the whole batch does), and publishes the prepared fence: no
//! allocation, no `Resv` lock, no wait. A job prepared on a generation that was lost ends
//! `DeviceLost` there (its command buffer belongs to the dead pool). Command buffers, recording
//! closures and buffers of finished jobs go, in `free_job`, to the retired list of the job's own
//! `RingHw` and are reused or dropped only once its semaphore has passed their value: hardware
//! progress is tracked apart from fence state, so a force-completed job (timeout, device loss) that
//! is still running or queued on the hardware keeps its resources.
//!
//! # Timeouts (`timedout_job`)
//! Vulkan has no queue reset and no way to take a submission off a queue. Inside the TDR's
//! signalling section, allocation- and `Resv`-lock-free: stop the scheduler; a guilty job that
//! completed after all (its fence signalled, or the semaphore passed its value and the drain has
//! yet to signal it) is [`TimeoutStatus::NoHang`]. Then the ring's hardware progress decides, not
//! fence state: if the semaphore still stands where it stood at this ring's previous timeout, with
//! work pending, the hardware is still on the submission that timed out then (already
//! force-completed) and the job at the head has not even started: it is not blamed, and the answer
//! is `NoHang` (wait another timeout); so is a job queued behind an unfinished earlier submission
//! of its ring (one force-completed while it runs on) when the semaphore did move. After
//! [`STUCK_AFTER`] such timeouts in a row the ring is stuck on a submission nothing can release:
//! every job of the ring is force-completed `DeviceLost`, the device generation is declared lost
//! (see [`recovery`](crate::recovery)) and recreated, and the scheduler restarts. Otherwise the
//! guilty job is blamed (karma; a banned entity's jobs end `Cancelled`) and force-completed
//! `TimedOut`; an injected releasable hang is released; the scheduler restarts
//! ([`TimeoutStatus::Reset`]). No job is resubmitted: the innocent jobs behind the guilty one are
//! still queued on the `VkQueue` with valid command buffers and complete by themselves once it is
//! released (or finishes, for a slow job), and their hardware fences, reattached by the restart,
//! retire them. Those among them that depend on a failed job of the ring (the guilty one,
//! transitively) would run on its missing results: they end with its error
//! ([`Recovery::fail_dependants`], the scheduler's resubmission rule without the rerun), and keep
//! their resources until the semaphore passes them. A job slower than `STUCK_AFTER + 1` timeouts is
//! indistinguishable from a hang and costs a device generation.
//!
//! Rings sharing a `VkQueue` (lavapipe has one) stall together. After a reset, the other
//! rings' timeouts restart at about the moment the hung ring's next job starts its own, so
//! the ring whose head merely waits behind that job often timed out first and blamed its
//! innocent head (`gpusched demo --rings 2`: 6–7 timeouts where one ring gives 4). So before
//! anything else the handler asks whether the guilty job's submission is queued behind an
//! unfinished earlier submission of another ring on the same `VkQueue` (each `vkQueueSubmit`
//! gets a per-queue sequence number; each ring keeps those of its unfinished submissions):
//! then it has not started, and the answer is `NoHang`; the other ring's timeout deals with
//! the job that holds the queue. The timeout after such an answer is `NoHang` too (the head
//! started at most one timeout ago, when the submission ahead finished); the one after that
//! judges it as usual.
//!
//! Lost generations stall a new one the same way. An injected loss (and a device a real hang
//! left running) keeps executing the lost generation's submitted work, on the same physical
//! device: lavapipe runs the dispatches of every `VkDevice` of a physical device on one
//! thread pool, so the new generation's first compute job waited behind a lost slow job
//! and was blamed by its first timeout (fault suite seed 442: an innocent job `TimedOut`,
//! its entity banned at hang limit 0). So while a ring of a lost generation has work its
//! hardware has not passed (`DeviceShared::lost_busy`, kept by the recovery thread), the
//! answer is `NoHang` as above, at most [`STUCK_AFTER`] times per ring and generation, then
//! once more as for a head that was behind (a lost generation wedged for good delays a real
//! hang's blame by a few timeouts, never prevents it). lavapipe interleaves the devices'
//! dispatches, so a new job waits for the lost dispatch running when it arrives, not for all
//! the lost work (tried: 16 lost slow jobs of 0.4 timeouts delay it by one of them); a lost
//! job running past about three timeouts still gets it blamed.
//!
//! # Batching and injected faults
//! A job with an injected hang or submit failure is never batched: `run_job` submits the
//! jobs batched before it, then submits it alone (with its wait on the hang semaphore).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use ash::vk;
use gpusched::fence::{Fence, FenceContext, FenceError, FenceOps, OpsWait, Signaller};
use gpusched::{Backend, JobInfo, Recovery, TimeoutStatus};

use crate::device::{DeviceCore, COMPLETION_TIMEOUT, MAX_RINGS};
use crate::error::{map_device, DeviceError, RecordError};
use crate::fault::{JobFault, Kind, SubmitFault};
use crate::job::{Prepared, RecordFn, VulkanJob};
use crate::kernel::RecordCtx;
use crate::memory::Buffer;
use crate::recovery::DeviceShared;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

fn host_barrier(device: &ash::Device, cb: vk::CommandBuffer) {
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

/// A freed job: its command buffer, recording closure and buffers, kept until the semaphore
/// has passed it and they can be recycled and dropped outside any signalling section.
struct Retired {
    value: u64,
    cb: vk::CommandBuffer,
    _keep: Option<(RecordFn, Vec<Buffer>)>,
}

/// The ring's command pool. Protected by `RingHw::pool` (a pool and its command buffers
/// need external synchronisation while recording).
///
/// Invariant: `free` and `retired` each have capacity for every command buffer allocated
/// (`total`), so `free_job`, which the scheduler may call inside a signalling section, never
/// allocates.
struct CmdPool {
    pool: vk::CommandPool,
    total: usize,
    free: Vec<vk::CommandBuffer>,
    /// In submission order: reusable once the semaphore reaches `value`.
    retired: VecDeque<Retired>,
}

/// What survives a ring's move to a new generation.
#[derive(Debug, Default)]
pub(crate) struct RingFlags {
    /// Whether `run_job` defers submission to `flush` (one `vkQueueSubmit` per batch).
    batching: AtomicBool,
    /// `vkQueueSubmit` calls that succeeded, over every generation.
    submits: AtomicU64,
}

/// The ring's submission state. Protected by `RingHw::state`.
struct RingState {
    /// The last timeline value submitted.
    next_value: u64,
    /// Published hardware fences not yet signalled, in value (seqno) order. Capacity: credit
    /// limit + prepared. Only the ring's drainer pops it (see [`RingHw::drain`]).
    in_flight: VecDeque<InFlight>,
    /// A thread is signalling this ring's fences ([`RingHw::drain`]): fences of one ring
    /// signal one at a time, in value order, whoever completes or fails them.
    draining: bool,
    /// Jobs prepared and not yet run or freed (room reserved for them).
    prepared: usize,
    /// Command buffers run but not yet submitted (batching); their values are the last
    /// `batch.len()` values up to `next_value`, and theirs are the last `batch.len()` entries
    /// of `in_flight`. Capacity: reserved with `in_flight`.
    batch: Vec<vk::CommandBuffer>,
    /// The values the submissions not yet seen complete signal, in order, with each submission's
    /// sequence number on its `VkQueue` (`QueueSlot::seq`) and the value of the injected releasable
    /// hang it waits for (0: none), and whether its job was freed with that hang pending (an
    /// orphan: released once the hardware reaches it, see `RingHw::release_orphan`): one per
    /// submitted job (the jobs of a batch share the sequence number of their `vkQueueSubmit`).
    /// Waits go for one of these (see `RingHw::signal_value`). Capacity: reserved with `in_flight`,
    /// which always holds the job whose value each entry is (so it is never longer); popped with it
    /// by `complete`.
    signals: VecDeque<(u64, u64, u64, bool)>,
}

/// A published hardware fence: its value (and seqno), its signaller, and the error it ends
/// with if its submission failed or the device was lost (`None`: it signals once the
/// semaphore reaches `value`).
struct InFlight {
    value: u64,
    signaller: Signaller,
    error: Option<FenceError>,
    /// The value the fence's [`HwOps`] polls, shared with it: set to 0 (never signalled by
    /// the hardware) when the fence is marked failed, so that the semaphore reaching `value`
    /// later (a failed batch's values are passed by the next submission) cannot make it
    /// report success.
    ops_value: Arc<AtomicU64>,
}

impl InFlight {
    /// Marks the fence failed with `error` (unless it is already).
    fn fail(&mut self, error: FenceError) {
        if self.error.is_none() {
            self.error = Some(error);
            self.ops_value.store(0, Ordering::Release);
        }
    }
}

/// A ring's hardware on one device generation: timeline semaphore, command pool, in-flight
/// list.
pub(crate) struct RingHw {
    pub(crate) core: Arc<DeviceCore>,
    name: Box<str>,
    pub(crate) queue: u32,
    pub(crate) sem: vk::Semaphore,
    ctx: FenceContext,
    state: Mutex<RingState>,
    pool: Mutex<CmdPool>,
    /// The last value submitted (mirror of `next_value` for the completion thread).
    pub(crate) submitted: AtomicU64,
    /// The last value the completion thread saw the semaphore reach.
    pub(crate) completed: AtomicU64,
    /// The value of the last in-flight entry the ring's drainer has signalled (successfully
    /// or not): every fence of the ring up to it has signalled, in order. What a hardware
    /// fence's [`HwOps::signaled`] reports, never the semaphore counter, which runs ahead of
    /// the drain (a poll of a later fence would otherwise signal it before earlier ones).
    signalled: AtomicU64,
    /// What the ring's completion thread shares with it.
    watch: Arc<Watch>,
    /// The completion thread, joined by the ring's drop (unless the drop runs on it).
    thread: Mutex<Option<JoinHandle<()>>>,
    flags: Arc<RingFlags>,
    /// The semaphore value at this ring's last timeout (`u64::MAX`: none yet): a timeout that
    /// finds it unchanged, with work pending, means the hardware made no progress since.
    tdr_counter: AtomicU64,
    /// Consecutive timeouts that found no progress.
    tdr_stalls: AtomicU32,
    /// The last timeout found the head queued behind another ring's submission (or behind a
    /// lost generation's work): the next one, if that submission has finished, gives the
    /// head a whole timeout (it may have just started).
    tdr_behind: AtomicBool,
    /// Timeouts of this ring answered `NoHang` because a lost generation of its device still
    /// ran work on the hardware (`DeviceShared::lost_busy`): at most [`STUCK_AFTER`] over the
    /// ring's life (one generation), so that a lost generation wedged for good delays the
    /// blame of a real hang here a few timeouts, never forever.
    tdr_lost_waits: AtomicU32,
}

/// The most jobs of a batch one `vkQueueSubmit` carries (one `VkSubmitInfo` each, in stack
/// arrays: `flush` does not allocate); a larger batch takes several calls.
pub(crate) const SUBMIT_CHUNK: usize = 32;

/// Consecutive timeouts without hardware progress after which the ring is stuck for good
/// (a hang nothing can release): the device generation is declared lost. A job slower than
/// `STUCK_AFTER + 1` timeouts is indistinguishable from such a hang.
pub(crate) const STUCK_AFTER: u32 = 2;

impl RingHw {
    pub(crate) fn new(
        core: &Arc<DeviceCore>,
        queue: u32,
        name: &str,
        credit_limit: u32,
        flags: Arc<RingFlags>,
    ) -> Result<Arc<Self>, DeviceError> {
        let d = &core.device;
        let mut type_info = vk::SemaphoreTypeCreateInfo::default()
            .semaphore_type(vk::SemaphoreType::TIMELINE)
            .initial_value(0);
        let sinfo = vk::SemaphoreCreateInfo::default().push_next(&mut type_info);
        // SAFETY: valid device; timeline semaphores enabled.
        let sem = unsafe { d.create_semaphore(&sinfo, None) }
            .map_err(|c| map_device("vkCreateSemaphore", c))?;
        let pinfo = vk::CommandPoolCreateInfo::default()
            .queue_family_index(core.queue_family)
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER);
        // SAFETY: valid device and family.
        let pool = match unsafe { d.create_command_pool(&pinfo, None) } {
            Ok(p) => p,
            Err(c) => {
                // SAFETY: unused.
                unsafe { d.destroy_semaphore(sem, None) };
                return Err(map_device("vkCreateCommandPool", c));
            }
        };
        let cap = credit_limit as usize + 16;
        let watch = Arc::new(Watch {
            device: d.clone(),
            sem,
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
            adopted: Mutex::new(Adopted { ring: None, exited: false }),
        });
        let hw = Arc::new(RingHw {
            core: core.clone(),
            name: name.into(),
            queue,
            sem,
            ctx: FenceContext::builder(format!("{name}.hw")).driver_name("gpusched-vulkan").build(),
            state: Mutex::new(RingState {
                next_value: 0,
                in_flight: VecDeque::with_capacity(cap),
                draining: false,
                prepared: 0,
                batch: Vec::with_capacity(cap),
                signals: VecDeque::with_capacity(cap),
            }),
            pool: Mutex::new(CmdPool {
                pool,
                total: 0,
                free: Vec::new(),
                retired: VecDeque::new(),
            }),
            submitted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            signalled: AtomicU64::new(0),
            flags,
            tdr_counter: AtomicU64::new(u64::MAX),
            tdr_stalls: AtomicU32::new(0),
            tdr_behind: AtomicBool::new(false),
            tdr_lost_waits: AtomicU32::new(0),
            watch: watch.clone(),
            thread: Mutex::new(None),
        });
        if SPIN_CPUS.load(Ordering::Relaxed) == 0 {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            SPIN_CPUS.store(cpus, Ordering::Relaxed);
        }
        let weak = Arc::downgrade(&hw);
        let spawned = std::thread::Builder::new()
            .name(format!("gpusched-vk{}-{name}", core.generation))
            .spawn(move || completion_thread(weak, watch));
        match spawned {
            Ok(h) => {
                let _ = hw.watch.thread.set(h.thread().clone());
                *lock(&hw.thread) = Some(h);
                Ok(hw)
            }
            // Dropping `hw` destroys its pool and semaphore (nothing was submitted).
            Err(_) => Err(DeviceError::OutOfMemory {
                op: "spawning the ring's completion thread",
                code: vk::Result::ERROR_OUT_OF_HOST_MEMORY,
            }),
        }
    }

    /// Wakes the ring's completion thread: a submission to an idle ring (it parks while the
    /// ring is idle), or teardown. Allocation-free (a futex wake), no Vulkan call.
    pub(crate) fn wake(&self) {
        if let Some(t) = self.watch.thread.get() {
            t.unpark();
        }
    }

    /// The semaphore's current value (`vkGetSemaphoreCounterValue`).
    pub(crate) fn counter(&self) -> Result<u64, vk::Result> {
        // SAFETY: the semaphore lives as long as the ring.
        unsafe { self.core.device.get_semaphore_counter_value(self.sem) }
    }

    /// Signals the in-flight fences the semaphore has passed, in order (completion thread).
    /// Allocation-free. `Err` means the device is lost.
    pub(crate) fn complete(&self) -> Result<(), ()> {
        let value = match self.counter() {
            Ok(v) => v,
            Err(vk::Result::ERROR_DEVICE_LOST) => return Err(()),
            Err(e) => {
                diag!(warn, target: "gpusched_vulkan", ring = %self.name, ?e, "counter read failed");
                return Ok(());
            }
        };
        // Before taking the lock: a drainer that reads `completed` under it afterwards sees
        // the new value (see `drain`).
        self.completed.fetch_max(value, Ordering::SeqCst);
        let mut st = lock(&self.state);
        while st.signals.front().is_some_and(|s| s.0 <= value) {
            st.signals.pop_front();
        }
        self.drain(st);
        self.release_orphan();
        Ok(())
    }

    /// Signals the fences at the front of `in_flight` that are done (the semaphore passed
    /// them, by `completed`) or failed, one at a time, in value order, outside the lock
    /// (callbacks run here: the scheduler's completion, dependants, the next `run_job`). One
    /// drainer per ring: a caller that finds another thread (or an outer frame of its own:
    /// a callback that fails a batch) draining leaves its update (`completed`, an entry's
    /// error) to it, which sees it when it next takes the lock; the drainer clears
    /// `draining` under the lock in the same critical section where it finds nothing left,
    /// so no update is missed. Allocation-free, no wait.
    fn drain<'a>(&'a self, mut st: MutexGuard<'a, RingState>) {
        if st.draining {
            return;
        }
        st.draining = true;
        loop {
            let done = self.completed.load(Ordering::SeqCst);
            let next = match st.in_flight.front() {
                Some(f) if f.error.is_some() || f.value <= done => st.in_flight.pop_front(),
                _ => None,
            };
            let Some(f) = next else {
                st.draining = false;
                return;
            };
            drop(st);
            match f.error {
                Some(e) => f.signaller.signal_error(e),
                None => f.signaller.signal(),
            };
            // After the signal: a poll of this fence or a later one (`HwOps::signaled`) never
            // runs ahead of the drain.
            self.signalled.fetch_max(f.value, Ordering::SeqCst);
            st = lock(&self.state);
        }
    }

    /// Whether the hardware has passed everything submitted to this ring (or the device
    /// reports itself lost: nothing runs on it any more).
    pub(crate) fn passed(&self) -> bool {
        match self.counter() {
            Ok(v) => v >= self.submitted.load(Ordering::SeqCst),
            Err(vk::Result::ERROR_DEVICE_LOST) => true,
            Err(_) => false,
        }
    }

    /// The value the submission that carries job value `value` signals (the next one submitted at
    /// or above it: itself, unless its submission failed; `value` if it is not submitted yet).
    /// Waits use it rather than `value`: the Khronos validation layer of Debian 12 (1.3.239)
    /// expects a single-semaphore wait to end on a value some submission signals exactly, and
    /// otherwise blocks 10 s in the wait and reports `UNASSIGNED-VkSemaphore-state-timeout`.
    pub(crate) fn signal_value(&self, value: u64) -> u64 {
        let st = lock(&self.state);
        st.signals.iter().find(|s| s.0 >= value).map_or(value, |s| s.0)
    }

    /// The value the submission that carries job value `value` signals, if one does (`None`:
    /// not submitted yet, its submission failed, or already seen complete).
    fn submitted_signal_value(&self, value: u64) -> Option<u64> {
        let st = lock(&self.state);
        st.signals.iter().find(|s| s.0 >= value).map(|s| s.0)
    }

    /// The queue sequence number of the submission that carries job value `value` (`None`:
    /// not submitted, or already seen complete).
    fn queue_seq_of(&self, value: u64) -> Option<u64> {
        let st = lock(&self.state);
        st.signals.iter().find(|s| s.0 >= value).map(|s| s.1)
    }

    /// Releases the injected hang of the submission the hardware is on, if its job was freed
    /// with it pending (force-completed while queued: nothing will time it out, and the ring
    /// behind it would stay stuck). Only at the head of the hardware, so that a hang ahead of
    /// it, still to be judged by a timeout, is not released with it (releasing a value
    /// releases every lower one). Allocation-free.
    fn release_orphan(&self) {
        let Ok(done) = self.counter() else { return };
        let hang = {
            let st = lock(&self.state);
            st.signals.iter().find(|s| s.0 > done).and_then(|s| s.3.then_some(s.2))
        };
        if let Some(h) = hang.filter(|&h| h != 0) {
            self.core.release_hang(h);
        }
    }

    /// Whether an earlier submission of this ring than the one carrying job value `value` is
    /// unfinished (the job has not started: the ring runs in order). Allocation-free.
    fn behind_own_submission(&self, value: u64) -> bool {
        let Ok(done) = self.counter() else { return false };
        let st = lock(&self.state);
        st.signals.iter().find(|s| s.0 > done).is_some_and(|s| s.0 < value)
    }

    /// Releases the injected (releasable) hangs of this ring's unfinished submissions before
    /// the one carrying job value `value`: jobs force-completed while still queued (the
    /// dependants of a blamed job, `Recovery::fail_dependants`), whose hang no timeout of
    /// their own will release, and which the jobs behind them wait for. Allocation-free.
    fn release_hangs_before(&self, value: u64) {
        let Ok(done) = self.counter() else { return };
        // One at a time, in submission order, the ring lock not held (a host signal): the
        // validation layer wants each signal at most one past a pending wait.
        let mut from = done;
        loop {
            let next = {
                let st = lock(&self.state);
                st.signals.iter().find(|s| s.0 > from && s.0 < value).map(|s| (s.0, s.2))
            };
            let Some((v, hang)) = next else { return };
            if hang != 0 {
                self.core.release_hang(hang);
            }
            from = v;
        }
    }

    /// The queue sequence number of this ring's oldest submission the hardware has not
    /// finished (`None`: none).
    fn oldest_unfinished_seq(&self) -> Option<u64> {
        let done = self.counter().ok()?;
        let st = lock(&self.state);
        st.signals.iter().find(|s| s.0 > done).map(|s| s.1)
    }

    /// Whether the submission carrying job value `value` waits behind an unfinished earlier
    /// submission of another ring on the same `VkQueue` (it has not started: queues run in
    /// order and every non-empty command buffer starts with a full barrier; an empty job has
    /// nothing of its own to run). Allocation-free.
    fn behind_another_ring(&self, value: u64) -> bool {
        let Some(mine) = self.queue_seq_of(value) else { return false };
        // Taken under `comp.rings`, looked at and dropped after it is released (see
        // `DeviceCore::mark_lost`).
        let rings = self.core.comp.snapshot();
        rings.iter().flatten().any(|r| {
            !std::ptr::eq(Arc::as_ptr(r), self)
                && r.queue == self.queue
                && r.oldest_unfinished_seq().is_some_and(|s| s < mine)
        })
    }

    /// Signals every in-flight fence the semaphore has not passed with `error` (device
    /// lost), in value order, through the ring's drainer (see `drain`). Allocation-free.
    pub(crate) fn fail_all(&self, error: FenceError) {
        let mut st = lock(&self.state);
        st.signals.clear();
        let done = self.completed.load(Ordering::SeqCst);
        for f in st.in_flight.iter_mut().filter(|f| f.value > done) {
            f.fail(error);
        }
        self.drain(st);
    }

    /// A command buffer ready for recording: a recycled one whose value the semaphore has
    /// passed, a free one, or a new one.
    fn acquire_cb(&self, pool: &mut CmdPool) -> Result<vk::CommandBuffer, vk::Result> {
        if let Some(r) = pool.retired.front() {
            // Hardware progress, not fence state: a lost device (even one whose loss was injected) may still
            // run these command buffers.
            let done = match self.counter() {
                Ok(c) => c.max(self.completed.load(Ordering::SeqCst)),
                Err(vk::Result::ERROR_DEVICE_LOST) => u64::MAX,
                Err(_) => self.completed.load(Ordering::SeqCst),
            };
            if r.value <= done {
                while pool.retired.front().is_some_and(|r| r.value <= done) {
                    if let Some(r) = pool.retired.pop_front() {
                        pool.free.push(r.cb);
                    }
                }
            }
        }
        if let Some(cb) = pool.free.pop() {
            return Ok(cb);
        }
        let info = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool.pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: the pool is locked by the caller.
        let cb = unsafe { self.core.device.allocate_command_buffers(&info) }?[0];
        pool.total += 1;
        let (free, retired) = (pool.free.len(), pool.retired.len());
        pool.free.reserve(pool.total - free);
        pool.retired.reserve(pool.total - retired);
        Ok(cb)
    }
}

impl Drop for RingHw {
    fn drop(&mut self) {
        // Waits for the semaphore: never in a signalling section (the last reference is taken
        // by the adopting completion thread outside its sections, the graveyard, or a
        // teardown; see `Arc::try_unwrap` at those places).
        gpusched::fence::lockdep::might_wait();
        let d = &self.core.device;
        if !self.passed() {
            // Nothing will time this ring's jobs out any more: release injected hangs (a
            // real hang stays, and the wait below gives up and leaks).
            self.core.release_injected(true);
        }
        let target = self.submitted.load(Ordering::SeqCst);
        let sems = [self.sem];
        let values = [target];
        let info = vk::SemaphoreWaitInfo::default().semaphores(&sems).values(&values);
        // SAFETY: the semaphore is live; waiting before destroying keeps the pool and the
        // semaphore alive while the hardware may still use them (also on a lost core: a
        // device whose loss was injected still runs its work; a really lost one answers DEVICE_LOST). A
        // device that never finishes (a real hang) leaks them instead of destroying objects
        // in use.
        let idle = matches!(
            unsafe { d.wait_semaphores(&info, 10_000_000_000) },
            Ok(()) | Err(vk::Result::ERROR_DEVICE_LOST)
        );
        if !idle {
            diag!(error, target: "gpusched_vulkan", ring = %self.name, "ring dropped with work still running: leaking its pool, semaphore, retired buffers and device");
            // The thread must still be gone before the device can be destroyed.
            self.stop_thread();
            // Leak everything the hardware may still use: the retired jobs' buffers (their
            // memory would go back to the allocator and be reused under the running work)
            // and the core (its drop waits for the device to idle, which never happens on a
            // hang, and destroys kernels and memory in use). The in-flight fences are not
            // leaked: they hold no hardware resource, and dropping them ends them
            // `Abandoned` (their jobs were force-completed already), so nothing waits forever.
            let retired = std::mem::take(&mut lock(&self.pool).retired);
            std::mem::forget(retired);
            std::mem::forget(self.core.clone());
            return;
        }
        self.stop_thread();
        let pool = lock(&self.pool).pool;
        // SAFETY: all submitted work of this ring is done; freeing the pool frees its buffers;
        // the completion thread is gone, or this drop runs on it, between two waits, and it
        // checks `stop` before waiting again (`stop_thread`).
        unsafe {
            d.destroy_command_pool(pool, None);
            d.destroy_semaphore(self.sem, None);
        }
    }
}

impl RingHw {
    /// Hands the ring to its own completion thread, which keeps it until it holds the last
    /// reference and then drops it between two waits (the ring's `RingSlot` is gone). So the
    /// last reference to a ring is never dropped inside a signalling section (a job freed by
    /// a callback, a fence polled there): `RingHw::drop` waits, joins, and drops the retired
    /// jobs' buffers, whose `Resv`s may allocate (arc-swap's per-thread debt list on a fresh
    /// thread does). Allocation-free. A thread that has exited (a lost core) adopts nothing:
    /// the recovery thread's graveyard holds a lost generation's rings instead.
    fn adopt(self: &Arc<Self>) {
        {
            let mut a = lock(&self.watch.adopted);
            if a.exited {
                return;
            }
            a.ring = Some(self.clone());
        }
        self.wake();
    }

    /// Stops the completion thread and joins it (unless this runs on it). Deadlock-free: the
    /// ring is being dropped, so the thread's weak reference no longer upgrades and it holds
    /// no lock, runs no callback and takes no lock from here on: it is parked (the wake
    /// ends that), or in a wait with a timeout ([`COMPLETION_TIMEOUT`]; after `drop`'s wait
    /// for the hardware to pass everything submitted, it returns at once), and then exits.
    fn stop_thread(&self) {
        self.watch.stop.store(true, Ordering::SeqCst);
        self.wake();
        let handle = lock(&self.thread).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

/// What a ring's completion thread shares with the ring, without holding it: the thread must
/// not keep the ring (and so the device) alive while it sleeps.
struct Watch {
    /// A copy of the device's function table (valid while the ring lives: the ring holds the
    /// core, and joins the thread before it is destroyed).
    device: ash::Device,
    /// The ring's timeline semaphore (destroyed by the ring's drop after `stop`).
    sem: vk::Semaphore,
    /// Set by the ring's drop: the thread exits before waiting again.
    stop: AtomicBool,
    /// The thread, for `unpark`.
    thread: OnceLock<Thread>,
    /// The ring, once its `RingSlot` (the scheduler's backend) is gone: see
    /// [`RingHw::adopt`].
    adopted: Mutex<Adopted>,
}

/// A ring held by its own completion thread until every other reference is gone.
struct Adopted {
    ring: Option<Arc<RingHw>>,
    /// The thread has exited (or is exiting): nothing can be adopted any more.
    exited: bool,
}

/// How often a completion thread that holds its ring looks whether it holds the last
/// reference (while the ring is idle).
const ADOPTED_POLL: Duration = Duration::from_millis(5);

/// The longest a completion thread polls the semaphore before it blocks (see [`Pace`]).
pub(crate) const SPIN_MAX: Duration = Duration::from_micros(20);

/// A completion thread's estimate of how fast its ring completes jobs, for the bounded
/// spin before a blocking wait (see [`device`](crate::device), "The completion threads").
///
/// `per_job` is a moving average (weight 1/4 per sample) of the time per job between two
/// wakes that found progress, with the ring busy in between (the wait after a park starts a
/// new measure: an idle gap is no job's duration); 0 while unknown.
#[derive(Debug, Default)]
struct Pace {
    /// When the last wake that found progress saw it (`None`: the ring was idle since).
    last: Option<Instant>,
    /// Average time per completed job, in nanoseconds (0: unknown).
    per_job: u64,
}

impl Pace {
    /// How long to poll before blocking: twice the expected time to the next completion,
    /// at most [`SPIN_MAX`]; nothing when jobs take longer than that (or nothing is known):
    /// polling then only takes a CPU from the work.
    fn spin_budget(&self) -> Duration {
        let max = SPIN_MAX.as_nanos() as u64;
        if self.per_job == 0 || self.per_job > max {
            return Duration::ZERO;
        }
        Duration::from_nanos((2 * self.per_job).min(max))
    }

    /// `jobs` values completed, seen at `now`.
    fn progress(&mut self, now: Instant, jobs: u64) {
        if let Some(last) = self.last {
            let sample = (now.saturating_duration_since(last).as_nanos() as u64) / jobs.max(1);
            self.per_job = if self.per_job == 0 { sample } else { (3 * self.per_job + sample) / 4 };
        }
        self.last = Some(now);
    }
}

/// The CPUs this process may run on, for [`spin_until`]; set when a ring is created (finding
/// it out may allocate: the completion loop does not). 0 until then: no spinning.
static SPIN_CPUS: AtomicUsize = AtomicUsize::new(0);

/// How often [`spin_until`] reads the counter: each read takes the driver's semaphore lock,
/// which its queue thread needs to signal.
const POLL_EVERY: Duration = Duration::from_micros(1);

/// Polls the semaphore until it reaches `value`, for at most `budget`, reading the counter
/// every [`POLL_EVERY`] and spinning (`spin_loop`) in between, as a fence wait spins before
/// it sleeps; never on a single CPU. Returns whether it got there; errors are left to the
/// blocking wait, which reports them.
///
/// It does not yield: a thread that yields is queued behind whatever else runs on its CPU
/// for a whole scheduler slice, and one that pushes jobs in a loop then kept completions
/// (and so credits) waiting until the hardware ran dry (lavapipe, 2 cores: 10–18 % of
/// submissions found it idle, against 1–2 % without the yield). So that spinning threads
/// never take every CPU from the work (rings of one device share a `VkQueue`, and on
/// lavapipe its queue thread), at most half the CPUs spin at once, process-wide: others
/// block at once.
fn spin_until(watch: &Watch, value: u64, budget: Duration) -> bool {
    static SPINNING: AtomicUsize = AtomicUsize::new(0);
    if budget.is_zero() {
        return false;
    }
    if SPINNING.fetch_add(1, Ordering::AcqRel) >= SPIN_CPUS.load(Ordering::Relaxed) / 2 {
        SPINNING.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    let reached = poll_until(watch, value, budget);
    SPINNING.fetch_sub(1, Ordering::AcqRel);
    reached
}

/// The polling loop of [`spin_until`].
fn poll_until(watch: &Watch, value: u64, budget: Duration) -> bool {
    let start = Instant::now();
    loop {
        // SAFETY: as the blocking wait in `completion_loop`: the ring destroys the semaphore
        // only after setting `stop` and joining this thread (or on this thread, after it).
        match unsafe { watch.device.get_semaphore_counter_value(watch.sem) } {
            Ok(c) if c >= value => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        let polled = Instant::now();
        if polled.saturating_duration_since(start) >= budget {
            return false;
        }
        while polled.elapsed() < POLL_EVERY {
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        }
    }
}

thread_local! {
    /// This thread is a ring's completion thread: it signals hardware fences, and the
    /// callbacks they run (the scheduler's completion, the application's) may drop the last
    /// handle of a device, inside a signalling section.
    static ON_COMPLETION_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is a ring's completion thread (allocation-free).
pub(crate) fn on_completion_thread() -> bool {
    ON_COMPLETION_THREAD.with(std::cell::Cell::get)
}

/// A ring's completion thread (see [`device`](crate::device), "The completion threads"):
/// while the ring is busy, a bounded poll of the semaphore when its jobs complete faster
/// than [`SPIN_MAX`] ([`Pace`], [`spin_until`]), then a single-semaphore `vkWaitSemaphores`
/// for the next value it owes, then [`RingHw::complete`] (callbacks inline); while it is
/// idle, parked until a submission wakes it. Exits when the ring is dropped or its core is
/// lost. Allocation-free.
fn completion_thread(ring: Weak<RingHw>, watch: Arc<Watch>) {
    ON_COMPLETION_THREAD.with(|c| c.set(true));
    completion_loop(&ring, &watch);
    // Exiting (its core is lost): nothing can be adopted any more. An adopted ring is still
    // held until every other reference is gone (jobs being freed after the loss failed them,
    // a temporary upgrade by a fence's `signaled` or `mark_lost`), then dropped here, outside
    // any signalling section.
    let mut adopted = {
        let mut a = lock(&watch.adopted);
        a.exited = true;
        a.ring.take()
    };
    while let Some(r) = adopted.take() {
        match Arc::try_unwrap(r) {
            Ok(hw) => drop(hw),
            Err(r) => {
                adopted = Some(r);
                std::thread::sleep(ADOPTED_POLL);
            }
        }
    }
}

fn completion_loop(ring: &Weak<RingHw>, watch: &Watch) {
    let timeout = COMPLETION_TIMEOUT.as_nanos() as u64;
    let mut pace = Pace::default();
    loop {
        // Holding the last reference to an adopted ring: drop it here (see `RingHw::adopt`);
        // the next upgrade fails and the thread exits. `Arc::try_unwrap` takes it
        // atomically: a weak reference upgraded at the same moment (a fence's `signaled`,
        // `mark_lost`) either keeps it adopted or fails, and never becomes the last one.
        let last = {
            let mut a = lock(&watch.adopted);
            match a.ring.take().map(Arc::try_unwrap) {
                Some(Ok(hw)) => Some(hw),
                Some(Err(r)) => {
                    a.ring = Some(r);
                    None
                }
                None => None,
            }
        };
        let adopted = last.is_none() && lock(&watch.adopted).ring.is_some();
        drop(last);
        // The next value the ring owes, if it is busy. Dropping `r` may drop the last
        // reference to the ring (and the core): their drops then run here, between waits.
        let next = {
            let Some(r) = ring.upgrade() else { return };
            if r.core.is_lost() {
                // `mark_lost` failed this ring's fences, unless the core had more live rings
                // than it takes at once (`Completion::snapshot`): this covers those.
                r.fail_all(FenceError::DeviceLost);
                return;
            }
            let completed = r.completed.load(Ordering::SeqCst);
            (r.submitted.load(Ordering::SeqCst) > completed).then(|| r.signal_value(completed + 1))
        };
        if watch.stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(value) = next else {
            // Idle: a submission that makes the ring busy wakes us (`RingHw::wake` after it
            // published `submitted`; an unpark before the park is not lost). Holding the
            // ring, look again soon whether the other references are gone.
            if adopted {
                std::thread::park_timeout(ADOPTED_POLL);
            } else {
                std::thread::park();
            }
            pace.last = None;
            continue;
        };
        let sems = [watch.sem];
        let values = [value];
        let info = vk::SemaphoreWaitInfo::default().semaphores(&sems).values(&values);
        let r = if spin_until(watch, value, pace.spin_budget()) {
            Ok(())
        } else {
            // SAFETY: the ring destroys the semaphore only after setting `stop` and joining
            // this thread, or, when its drop runs on this thread, before this thread checks
            // `stop` above; the device outlives the ring. `value` was submitted (the ring is
            // busy).
            unsafe { watch.device.wait_semaphores(&info, timeout) }
        };
        let mut lost = false;
        match r {
            Ok(()) | Err(vk::Result::TIMEOUT) => {}
            Err(vk::Result::ERROR_DEVICE_LOST) => lost = true,
            Err(e) => diag!(warn, target: "gpusched_vulkan", ?e, "vkWaitSemaphores failed"),
        }
        let Some(r) = ring.upgrade() else { return };
        let before = r.completed.load(Ordering::SeqCst);
        if lost || r.complete().is_err() {
            diag!(error, target: "gpusched_vulkan", ring = %r.name, "device lost");
            r.core.mark_lost();
            return;
        }
        let done = r.completed.load(Ordering::SeqCst).saturating_sub(before);
        if done > 0 {
            pace.progress(Instant::now(), done);
        }
    }
}

/// The hardware fence's backend hooks: "the ring's semaphore reached `value`".
struct HwOps {
    ring: Weak<RingHw>,
    value: Arc<AtomicU64>,
}

impl FenceOps for HwOps {
    fn driver_name(&self) -> &str {
        "gpusched-vulkan"
    }

    /// Whether the ring's in-order drain has passed the fence (`RingHw::signalled`), not
    /// whether the semaphore reached its value: the fences of a ring signal in value order,
    /// one at a time, by the drainer only, so a poll (`Fence::is_signaled`, the TDR's
    /// `guilty_completed`, a waiter) never signals a later fence before an earlier one. A
    /// fence marked failed (its value reset to 0 under the ring lock) is never reported
    /// signalled: the value is read again after the ring's.
    fn signaled(&self) -> bool {
        let v = self.value.load(Ordering::Acquire);
        match self.ring.upgrade() {
            Some(r) if v != 0 => {
                r.signalled.load(Ordering::SeqCst) >= v && self.value.load(Ordering::Acquire) == v
            }
            _ => false,
        }
    }

    fn enable_signaling(&self) -> bool {
        // Each ring's completion thread watches it while it has work: nothing to start.
        !self.signaled()
    }

    /// Waits in slices of at most [`HW_WAIT_SLICE`], looking at the loss flag between them:
    /// a device loss fails the fence (`fail_all`) without the semaphore ever reaching its
    /// value, and an untimed wait must then end (the generic wait sees the failed fence)
    /// rather than stay blocked in the driver until teardown. A value no submission carries
    /// (batched and not flushed yet, or its submission failed) goes to the generic wait too.
    /// [`OpsWait::Signaled`] means the semaphore reached the value; the fence itself signals
    /// when the ring's drain gets to it (in order, see [`HwOps::signaled`]): until then the
    /// generic wait, which `Fence::wait` falls back to, waits for that signal.
    fn wait(&self, deadline: Option<Instant>) -> OpsWait {
        let v = self.value.load(Ordering::Acquire);
        let Some(r) = self.ring.upgrade() else { return OpsWait::Unsupported };
        if v == 0 {
            return OpsWait::Unsupported;
        }
        let Some(target) = r.submitted_signal_value(v) else { return OpsWait::Unsupported };
        let sems = [r.sem];
        let values = [target];
        let info = vk::SemaphoreWaitInfo::default().semaphores(&sems).values(&values);
        loop {
            if r.core.is_lost() {
                return OpsWait::Unsupported;
            }
            let slice = match deadline {
                None => HW_WAIT_SLICE,
                Some(d) => d.saturating_duration_since(Instant::now()).min(HW_WAIT_SLICE),
            };
            // SAFETY: the semaphore is live while `r` is held.
            match unsafe { r.core.device.wait_semaphores(&info, slice.as_nanos() as u64) } {
                Ok(()) => return OpsWait::Signaled,
                Err(vk::Result::TIMEOUT) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return OpsWait::TimedOut;
                    }
                }
                // Device lost or another failure: the completion thread signals the error.
                Err(_) => return OpsWait::Unsupported,
            }
        }
    }
}

/// The longest single `vkWaitSemaphores` of a hardware fence's wait ([`HwOps`]), between two
/// looks at the loss flag.
const HW_WAIT_SLICE: Duration = Duration::from_millis(10);

/// A ring across device generations: its current `RingHw`, swapped to one on the new core
/// by the recovery thread. What the scheduler's backend holds.
pub(crate) struct RingSlot {
    pub(crate) shared: Arc<DeviceShared>,
    pub(crate) name: Box<str>,
    pub(crate) queue: u32,
    pub(crate) credit_limit: u32,
    current: Mutex<Arc<RingHw>>,
    pub(crate) flags: Arc<RingFlags>,
}

impl RingSlot {
    pub(crate) fn new(
        shared: &Arc<DeviceShared>,
        queue: u32,
        name: &str,
        credit_limit: u32,
    ) -> Result<Arc<RingSlot>, DeviceError> {
        let flags = Arc::new(RingFlags::default());
        flags.batching.store(true, Ordering::Relaxed);
        // Under `slots`: recreation moves every registered slot, and a slot made during a
        // recreation lands on the new core.
        let mut slots = lock(&shared.slots);
        slots.retain(|w| w.strong_count() > 0);
        if slots.len() >= MAX_RINGS {
            return Err(DeviceError::TooManyRings(MAX_RINGS));
        }
        let core = shared.core();
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
        let hw = self.current.get_mut().unwrap_or_else(|p| p.into_inner());
        hw.adopt();
    }
}

/// The [`Backend`] of a Vulkan ring; made by [`VulkanDevice::ring`](crate::VulkanDevice::ring).
/// It follows its device across generations.
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
            .field("queue", &hw.queue)
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

    /// How many `vkQueueSubmit` calls this ring made, over every generation (one per job
    /// without batching, one per batch of up to 32 jobs with it).
    pub fn submits(&self) -> u64 {
        self.slot.flags.submits.load(Ordering::Relaxed)
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

    /// The name of the ring's device.
    pub fn device_name(&self) -> &str {
        &self.slot.shared.name
    }

    /// The raw timeline semaphore of the current generation (diagnostics, benches).
    pub fn semaphore(&self) -> vk::Semaphore {
        self.slot.hw().sem
    }
}

impl RingHw {
    /// Submits the batched jobs (see [`Backend::flush`]): one `vkQueueSubmit` per
    /// [`SUBMIT_CHUNK`] jobs (one for a usual batch), with one `VkSubmitInfo` per job that
    /// signals the job's own value, so each job completes (and is judged by the timeout
    /// handler) on its own. Allocation-free: the arrays are on the stack, the batch's room was
    /// reserved at prepare time.
    fn submit_batch(&self) {
        let hw = self;
        let mut guard = lock(&hw.state);
        let st = &mut *guard;
        if st.batch.is_empty() {
            return;
        }
        let last = st.next_value;
        let batched = st.batch.len();
        let first = last + 1 - batched as u64;
        // The values of the jobs submitted so far; the first error stops the batch.
        let mut done = first - 1;
        let mut result = Ok(());
        let sems = [hw.sem];
        for (i, chunk) in st.batch.chunks(SUBMIT_CHUNK).enumerate() {
            if hw.core.is_lost() {
                result = Err(DeviceError::DeviceLost { op: "vkQueueSubmit" });
                break;
            }
            let base = first + (i * SUBMIT_CHUNK) as u64;
            let mut values = [0u64; SUBMIT_CHUNK];
            for (k, v) in values.iter_mut().enumerate() {
                *v = base + k as u64;
            }
            let mut timelines = [vk::TimelineSemaphoreSubmitInfo::default(); SUBMIT_CHUNK];
            for (t, v) in timelines.iter_mut().zip(&values) {
                *t = t.signal_semaphore_values(std::slice::from_ref(v));
            }
            let mut submits = [vk::SubmitInfo::default(); SUBMIT_CHUNK];
            for ((s, cb), t) in submits.iter_mut().zip(chunk).zip(timelines.iter_mut()) {
                *s = vk::SubmitInfo::default()
                    .command_buffers(std::slice::from_ref(cb))
                    .signal_semaphores(&sems)
                    .push_next(t);
            }
            let slot = &hw.core.queues[hw.queue as usize];
            let q = lock(&slot.queue);
            // SAFETY: the queue is externally synchronised by its mutex; the command buffers
            // are executable and not pending; each submit signals its job's value, above
            // every value signalled or pending on the semaphore (values increase under the
            // ring lock, and in submission order within the call).
            let r = unsafe {
                hw.core.device.queue_submit(*q, &submits[..chunk.len()], vk::Fence::null())
            }
            .map(|()| slot.seq.fetch_add(1, Ordering::SeqCst) + 1);
            drop(q);
            match r {
                Ok(seq) => {
                    hw.flags.submits.fetch_add(1, Ordering::Relaxed);
                    for &v in &values[..chunk.len()] {
                        // Capacity: one entry per in-flight job, reserved at prepare time.
                        st.signals.push_back((v, seq, 0, false));
                    }
                    done = base + chunk.len() as u64 - 1;
                }
                Err(code) => {
                    result = Err(map_device("vkQueueSubmit", code));
                    break;
                }
            }
        }
        st.batch.clear();
        if done >= first {
            let prev = hw.submitted.swap(done, Ordering::SeqCst);
            if prev <= hw.completed.load(Ordering::SeqCst) {
                // The ring was idle: its completion thread may be parked.
                hw.wake();
            }
        }
        match result {
            Ok(()) => {}
            Err(e) => {
                // The rest of the batch never reached the hardware: its fences (the entries
                // above `done`) end with the error, in value order, after the fences before
                // them (the ring's drainer signals them outside the lock: their callbacks
                // re-enter the scheduler). Their values are not reused (a later submission
                // signals a higher value, which timeline waits cover), so seqnos stay unique.
                let error = e.fence_error();
                for f in st.in_flight.iter_mut().rev().take(batched).filter(|f| f.value > done) {
                    f.fail(error);
                }
                if e.is_device_lost() {
                    drop(guard);
                    hw.core.mark_lost();
                    guard = lock(&hw.state);
                }
                hw.drain(guard);
            }
        }
    }

    fn record(&self, job: &mut VulkanJob) -> Result<vk::CommandBuffer, RecordError> {
        let core = &self.core;
        for b in job.declared.iter() {
            check_generation(b, core)?;
        }
        let d = &core.device;
        let mut pool = lock(&self.pool);
        let cb = self
            .acquire_cb(&mut pool)
            .map_err(|code| RecordError::Vk { op: "vkAllocateCommandBuffers", code })?;
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: `cb` is from this ring's pool, locked; it is not pending (fresh, or the
        // semaphore passed its last submission); the pool allows per-buffer reset.
        if let Err(code) = unsafe { d.begin_command_buffer(cb, &begin) } {
            pool.free.push(cb);
            return Err(RecordError::Vk { op: "vkBeginCommandBuffer", code });
        }
        // An empty job (no injected busy kernel either) records no command at all.
        let bare = job.bare && !matches!(job.fault, Some(JobFault::Slow(_)));
        if !bare {
            full_barrier(d, cb);
        }
        let ctx = RecordCtx { core, declared: &job.declared };
        let mut recorded = Ok(());
        if let Some(JobFault::Slow(t)) = job.fault {
            // The busy kernel first, sized to run about `t`.
            recorded = ctx.busy(cb, 16, core.busy_groups_for(t));
            full_barrier(d, cb);
        }
        if recorded.is_ok() {
            recorded = (job.record)(&ctx, cb);
        }
        if recorded.is_ok() && !bare {
            host_barrier(d, cb);
        }
        // SAFETY: `cb` is recording; ending it even after a failed recording puts it in a
        // state `vkBeginCommandBuffer` can reset.
        let ended = unsafe { d.end_command_buffer(cb) };
        match (recorded, ended) {
            (Ok(()), Ok(())) if job.fault == Some(JobFault::DropRecording) => {
                pool.free.push(cb);
                Err(RecordError::RecordingDropped)
            }
            (Ok(()), Ok(())) => Ok(cb),
            (Err(e), _) => {
                pool.free.push(cb);
                Err(e)
            }
            (Ok(()), Err(code)) => {
                pool.free.push(cb);
                Err(RecordError::Vk { op: "vkEndCommandBuffer", code })
            }
        }
    }
}

/// A buffer recorded for `core` must belong to it: a buffer of a lost generation of the
/// same device is [`RecordError::LostGeneration`], one of another device
/// [`RecordError::WrongDevice`].
pub(crate) fn check_generation(b: &Buffer, core: &DeviceCore) -> Result<(), RecordError> {
    if b.generation() == core.generation {
        return Ok(());
    }
    if b.inner.core.device_id == core.device_id {
        Err(RecordError::LostGeneration { buffer: b.generation(), device: core.generation })
    } else {
        Err(RecordError::WrongDevice { buffer: b.generation(), device: core.generation })
    }
}

impl Backend for VulkanRing {
    type Job = VulkanJob;

    fn prepare_job(&self, job: &mut VulkanJob, _info: &JobInfo) -> Result<(), FenceError> {
        job.sub.error = None;
        let faults = &self.slot.shared.faults;
        // Every armed job draws (reproducible plans); a job's own fault wins.
        let drawn = faults.draw_job();
        if job.fault.is_none() {
            job.fault = drawn;
        }
        if self.slot.shared.dead.load(Ordering::SeqCst) {
            job.sub.error = Some(RecordError::DeviceLost { generation: self.generation() });
            return Err(FenceError::DeviceLost);
        }
        let hw = self.slot.hw();
        if hw.core.is_lost() {
            job.sub.error = Some(RecordError::DeviceLost { generation: hw.core.generation });
            return Err(FenceError::DeviceLost);
        }
        let cb = match hw.record(job) {
            Ok(cb) => cb,
            Err(e) => {
                if e == RecordError::RecordingDropped {
                    faults.count(Kind::DroppedRecording);
                }
                job.sub.error = Some(e);
                return Err(FenceError::Driver(-22)); // EINVAL
            }
        };
        if let Some(JobFault::Slow(_)) = job.fault {
            faults.count(Kind::Slow);
        }
        let value = Arc::new(AtomicU64::new(0));
        let ops = HwOps { ring: Arc::downgrade(&hw), value: value.clone() };
        let fence = hw.ctx.prepare(1, Some(Box::new(ops)));
        // Arming cannot fail after `prepare_job` succeeded, so a payload handed back by a
        // failed arm never holds a command buffer.
        debug_assert!(job.sub.cb.is_none(), "a job is prepared once");
        job.sub.cb = Some(cb);
        job.sub.prepared = Some(Prepared { hw: fence, value });
        {
            let mut st = lock(&hw.state);
            st.prepared += 1;
            let need = st.prepared;
            st.in_flight.reserve(need);
            st.signals.reserve(need);
            st.batch.reserve(need);
        }
        job.sub.hw = Some(hw);
        Ok(())
    }

    fn run_job(&self, job: &mut VulkanJob, _info: &JobInfo) -> Result<Fence, FenceError> {
        let Some(prepared) = job.sub.prepared.take() else {
            // A resubmission: Vulkan has no queue reset, so there is none (see timedout_job).
            return Err(FenceError::Cancelled);
        };
        let (Some(cb), Some(hw)) = (job.sub.cb, job.sub.hw.as_ref()) else {
            return Err(FenceError::Cancelled);
        };
        let faults = &self.slot.shared.faults;
        let mut st = lock(&hw.state);
        st.prepared = st.prepared.saturating_sub(1);
        if hw.core.is_lost() {
            // Prepared on a generation that is gone: its command buffer died with it.
            return Err(FenceError::DeviceLost);
        }
        // Injected faults on submission.
        let fail = match job.fault {
            Some(JobFault::FailSubmit(SubmitFault::OutOfDeviceMemory)) => {
                Some(vk::Result::ERROR_OUT_OF_DEVICE_MEMORY)
            }
            Some(JobFault::FailSubmit(SubmitFault::DeviceLost)) => {
                Some(vk::Result::ERROR_DEVICE_LOST)
            }
            _ if faults.lose_now() => Some(vk::Result::ERROR_DEVICE_LOST),
            _ => None,
        };
        let hang = matches!(job.fault, Some(JobFault::Hang | JobFault::HangForever));
        if self.slot.flags.batching.load(Ordering::Relaxed) && fail.is_none() && !hang {
            // Submitted by `flush`, with the other jobs the scheduler hands over now.
            let value = st.next_value + 1;
            st.batch.push(cb);
            st.next_value = value;
            job.sub.value = value;
            prepared.value.store(value, Ordering::Release);
            let (fence, signaller) = prepared.hw.init(value);
            st.in_flight.push_back(InFlight {
                value,
                signaller,
                error: None,
                ops_value: prepared.value.clone(),
            });
            return Ok(fence);
        }
        if !st.batch.is_empty() {
            // What was batched before this job goes first, in its own submission.
            drop(st);
            hw.submit_batch();
            st = lock(&hw.state);
            if hw.core.is_lost() {
                return Err(FenceError::DeviceLost);
            }
        }
        let value = st.next_value + 1;
        let cbs = [cb];
        let sems = [hw.sem];
        let values = [value];
        let result = match fail {
            Some(code) => {
                faults.count(if code == vk::Result::ERROR_DEVICE_LOST {
                    Kind::DeviceLoss
                } else {
                    Kind::FailedSubmit
                });
                Err(code)
            }
            None => {
                let slot = &hw.core.queues[hw.queue as usize];
                let q = lock(&slot.queue);
                // An injected hang's wait value is taken under the queue lock, so the values
                // follow the queue's submission order: releasing one (which releases every
                // lower value) never releases a hang queued behind it, whose own timeout
                // has yet to come (two rings submitting at once took them in the other order:
                // a later hang's release let the earlier-valued one run, fault suite seed
                // 180). Queues of one device share the hang timeline: with several queues an
                // injected hang may still be released by another queue's (fault injection
                // only).
                let mut wait = None;
                if hang {
                    let forever = job.fault == Some(JobFault::HangForever);
                    let (sem, v) = hw.core.next_hang_value(forever);
                    if !forever {
                        job.sub.hang = Some(v);
                    }
                    faults.count(if forever { Kind::HangForever } else { Kind::Hang });
                    wait = Some((sem, v));
                }
                let wait_sems = [wait.map_or(vk::Semaphore::null(), |w| w.0)];
                let wait_values = [wait.map_or(0, |w| w.1)];
                let stages = [vk::PipelineStageFlags::ALL_COMMANDS];
                let n = usize::from(wait.is_some());
                let mut timeline = vk::TimelineSemaphoreSubmitInfo::default()
                    .wait_semaphore_values(&wait_values[..n])
                    .signal_semaphore_values(&values);
                let submit = [vk::SubmitInfo::default()
                    .wait_semaphores(&wait_sems[..n])
                    .wait_dst_stage_mask(&stages[..n])
                    .command_buffers(&cbs)
                    .signal_semaphores(&sems)
                    .push_next(&mut timeline)];
                // SAFETY: the queue is externally synchronised by its mutex; the command
                // buffer is executable and not pending; `value` is above every value signalled
                // or pending on the semaphore (values increase under the ring lock); the wait
                // semaphore is a timeline semaphore of this device.
                unsafe { hw.core.device.queue_submit(*q, &submit, vk::Fence::null()) }
                    .map(|()| slot.seq.fetch_add(1, Ordering::SeqCst) + 1)
            }
        };
        let seq = match result {
            Ok(seq) => seq,
            Err(code) => {
                let e = map_device("vkQueueSubmit", code);
                drop(st);
                if e.is_device_lost() {
                    hw.core.mark_lost();
                }
                return Err(e.fence_error());
            }
        };
        hw.flags.submits.fetch_add(1, Ordering::Relaxed);
        st.signals.push_back((value, seq, job.sub.hang.unwrap_or(0), false));
        st.next_value = value;
        job.sub.value = value;
        prepared.value.store(value, Ordering::Release);
        let (fence, signaller) = prepared.hw.init(value);
        st.in_flight.push_back(InFlight {
            value,
            signaller,
            error: None,
            ops_value: prepared.value.clone(),
        });
        drop(st);
        let prev = hw.submitted.swap(value, Ordering::SeqCst);
        if prev <= hw.completed.load(Ordering::SeqCst) {
            // The ring was idle: its completion thread may be parked.
            hw.wake();
        }
        Ok(fence)
    }

    /// Submits the jobs `run_job` batched on the current generation (one `vkQueueSubmit`).
    /// A batch left on a generation lost meanwhile was failed by the loss.
    fn flush(&self) {
        // Never the last reference (the slot or, once swapped, the graveyard holds it).
        let hw = self.slot.hw();
        hw.submit_batch();
    }

    /// See the module docs ("Timeouts"). Allocation-free and `Resv`-lock-free.
    fn timedout_job(&self, recovery: &mut Recovery<'_, Self>) -> TimeoutStatus {
        recovery.stop();
        let (hw, hang, value) = recovery
            .with_guilty_payload(|j| (j.sub.hw.clone(), j.sub.hang, j.sub.value))
            .unwrap_or((None, None, 0));
        // The ring the guilty job runs on (reference counts only: no allocation, and never
        // the last reference: the job, the slot or the graveyard holds it).
        let hw = hw.unwrap_or_else(|| lock(&self.slot.current).clone());
        // Completed: its fence signalled, or the hardware passed it and the ring's drain
        // (which alone signals its fences, in order) has not got to it yet.
        if recovery.guilty_completed() || (value != 0 && hw.counter().is_ok_and(|c| c >= value)) {
            recovery.start();
            return TimeoutStatus::NoHang;
        }
        if value != 0 && hw.behind_another_ring(value) {
            // Queued behind another ring's unfinished submission on the shared `VkQueue`:
            // it has not started. That ring's own timeout deals with its job; wait another
            // timeout.
            hw.tdr_behind.store(true, Ordering::SeqCst);
            recovery.start();
            return TimeoutStatus::NoHang;
        }
        if value != 0
            && self.slot.shared.lost_busy.load(Ordering::SeqCst)
            && hw.tdr_lost_waits.fetch_add(1, Ordering::SeqCst) < STUCK_AFTER
        {
            // A lost generation of this device still runs work (an injected loss leaves it
            // running; lavapipe runs the dispatches of every `VkDevice` of a physical device
            // on one thread pool): the guilty job may be queued behind it on the hardware
            // and not have started. Not its fault: wait another timeout (bounded: see
            // `tdr_lost_waits`), then give it a whole one (it may have just started).
            hw.tdr_behind.store(true, Ordering::SeqCst);
            recovery.start();
            return TimeoutStatus::NoHang;
        }
        if hw.tdr_behind.swap(false, Ordering::SeqCst) {
            // It was behind at the last timeout: it started at most one timeout ago.
            recovery.start();
            return TimeoutStatus::NoHang;
        }
        let stalls = match hw.counter() {
            Err(vk::Result::ERROR_DEVICE_LOST) => STUCK_AFTER,
            Ok(c) => {
                let before = hw.tdr_counter.swap(c, Ordering::SeqCst);
                if before == c && hw.submitted.load(Ordering::SeqCst) > c {
                    hw.tdr_stalls.fetch_add(1, Ordering::SeqCst) + 1
                } else {
                    hw.tdr_stalls.store(0, Ordering::SeqCst);
                    0
                }
            }
            Err(_) => 0,
        };
        if stalls >= STUCK_AFTER {
            // No hardware progress across several timeouts: stuck on a submission nothing in
            // the process can release. The job at the head is not the culprit (the one that
            // timed out first was, and was blamed then). Every job on the ring ends
            // `DeviceLost`, the generation is lost and recreated.
            hw.tdr_stalls.store(0, Ordering::SeqCst);
            recovery.force_complete_all(FenceError::DeviceLost);
            hw.core.mark_lost();
            recovery.start();
            return TimeoutStatus::Reset;
        }
        if stalls > 0 {
            // The hardware is still on the submission that timed out last time (force-
            // completed then): the job at the head has not started. Not its fault: wait
            // another timeout. A force-completed submission ahead of it that waits on an
            // injected hang is released (a real hang stays, and the ring ends up stuck).
            if value != 0 {
                hw.release_hangs_before(value);
            }
            recovery.start();
            return TimeoutStatus::NoHang;
        }
        if value != 0 && hw.behind_own_submission(value) {
            // The hardware made progress, but is still on an earlier submission of this ring
            // (a job force-completed while it still runs: a dependant of an earlier guilty
            // job, `fail_dependants`): the guilty job has not started. Wait another timeout,
            // releasing the injected hangs ahead of it (see above).
            hw.release_hangs_before(value);
            recovery.start();
            return TimeoutStatus::NoHang;
        }
        recovery.blame();
        recovery.force_complete_guilty(FenceError::TimedOut);
        // Nothing is resubmitted, so the scheduler's resubmission never fails the jobs queued
        // behind the guilty one that depend on it (on this ring): they would run on its
        // missing results and end `Ok`. They end with its error now; their command buffers
        // still run, and are retired once the semaphore passes them (`free_job`).
        recovery.fail_dependants();
        if let Some(v) = hang {
            // An injected hang: release it; the guilty job then runs (late), and so do the
            // jobs queued behind it.
            hw.core.release_hang(v);
        }
        recovery.start();
        TimeoutStatus::Reset
    }

    /// Allocation-free (the scheduler may free inside a signalling section, where even
    /// dropping a buffer's `Resv` may allocate): the job's command buffer, recording closure
    /// and buffers go to the retired list of the `RingHw` it was recorded on, and are
    /// recycled and dropped by a later `prepare_job` on it once its semaphore has passed the
    /// job (a forced completion may still be running), or when that `RingHw` is destroyed
    /// (after its hardware passed everything). Never waits.
    ///
    /// A job freed with an injected releasable hang still pending (force-completed while on
    /// the hardware: a dependant of a blamed job, a banned entity's job) has its hang
    /// released once the hardware reaches it (`RingHw::release_orphan`): nothing will time it
    /// out any more, and the ring behind it would stay stuck.
    fn free_job(&self, mut job: VulkanJob, _info: &JobInfo) {
        let Some(hw) = job.sub.hw.take() else { return };
        if job.sub.hang.take().is_some() {
            // Marked an orphan, released once the hardware reaches it (a completed job's
            // entry is gone).
            {
                let mut st = lock(&hw.state);
                if let Some(s) = st.signals.iter_mut().find(|s| s.0 == job.sub.value) {
                    s.3 = true;
                }
            }
            hw.release_orphan();
        }
        if job.sub.prepared.take().is_some() {
            let mut st = lock(&hw.state);
            st.prepared = st.prepared.saturating_sub(1);
        }
        let Some(cb) = job.sub.cb.take() else { return };
        let keep = (job.record, std::mem::take(&mut job.declared));
        // Capacity: one entry per command buffer allocated (`CmdPool` invariant).
        lock(&hw.pool).retired.push_back(Retired { value: job.sub.value, cb, _keep: Some(keep) });
    }
}
