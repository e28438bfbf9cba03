//! `RingHw`: a ring's hardware on one device generation: its timeline semaphore, in-flight
//! list, submission list, command pool with its retired list, and the drain that signals its
//! hardware fences.
//!
//! # Signalling order
//! Signal operations of one queue complete in submission order, so "the semaphore reached N"
//! means jobs `..=N` are done. The hardware fences of a ring (one fence context, seqno =
//! value) signal in value order, one at a time, outside the ring lock, by whichever thread
//! is draining the ring ([`RingHw::drain`]): completion, device loss and a failed batch only
//! mark entries done or failed and leave the signalling to it. A failed batch's values are
//! never reused. [`RingHw::signalled`] records how far the drain got; hardware progress
//! (stuck detection, recycling, `hw_progress`) reads the semaphore counter, which runs ahead
//! of it.
//!
//! # Resources outlive fences
//! A freed job's command buffer, recording closure and buffers wait in the retired list of
//! the `RingHw` they were recorded on until its semaphore has passed the job's value (a
//! force-completed job may still be queued or running), and are recycled or dropped then, or
//! when the `RingHw` is destroyed after its hardware passed everything.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

use ash::vk;
use gpusched::fence::{FenceContext, FenceError, Signaller};

use super::completion::Watch;
use super::deadline::DeadlineHint;
use super::timeout::StallState;
use super::RingFlags;
use crate::device::DeviceCore;
use crate::error::{map_device, DeviceError};
use crate::fault::{self, PendingHang};
use crate::job::RecordFn;
use crate::resource::GpuResource;
use crate::semaphore::NativePeer;

use crate::sync::lock;

/// A freed job: its command buffer, recording closure and buffers, kept until the semaphore
/// has passed it and they can be recycled and dropped outside any signalling section.
pub(super) struct Retired {
    pub(super) value: u64,
    pub(super) cb: vk::CommandBuffer,
    pub(super) _keep: KeptAlive,
}

/// What a retired job keeps alive until the hardware has passed it: the resources its
/// command buffer may still use.
pub(super) struct KeptAlive {
    /// The recording closure (and whatever it captured).
    pub(super) _record: RecordFn,
    /// The resources the job declared.
    pub(super) _buffers: Vec<Arc<dyn GpuResource>>,
}

/// The ring's command pool. Protected by `RingHw::pool` (a pool and its command buffers
/// need external synchronisation while recording).
///
/// Invariant: `free` and `retired` each have capacity for every command buffer allocated
/// (`total`), so `free_job`, which the scheduler may call inside a signalling section, never
/// allocates.
pub(super) struct CmdPool {
    pub(super) pool: vk::CommandPool,
    pub(super) total: usize,
    pub(super) free: Vec<vk::CommandBuffer>,
    /// In submission order: reusable once the semaphore reaches `value`.
    pub(super) retired: VecDeque<Retired>,
}

/// The ring's submission state. Protected by `RingHw::state`.
pub(super) struct RingState {
    /// The last timeline value submitted.
    pub(super) next_value: u64,
    /// Published hardware fences not yet signalled, in value (seqno) order. Capacity: credit
    /// limit + prepared. Only the ring's drainer pops it (see [`RingHw::drain`]).
    pub(super) in_flight: VecDeque<InFlight>,
    /// A thread is signalling this ring's fences ([`RingHw::drain`]): fences of one ring
    /// signal one at a time, in value order, whoever completes or fails them.
    pub(super) draining: bool,
    /// Fences marked failed (a refused batch, a loss) whose signal has not returned yet:
    /// still in `in_flight`, or popped by the drainer and being signalled (their callbacks,
    /// which end the scheduler's job, still running). Until it is back to 0, the scheduler may
    /// take one of those jobs as on the ring (see `VulkanRing::run`). With the last such
    /// error.
    pub(super) failing: (usize, Option<FenceError>),
    /// Jobs prepared and not yet run or freed (room reserved for them).
    pub(super) prepared: usize,
    /// Command buffers run but not yet submitted (batching); their values are the last
    /// `batch.len()` values up to `next_value`, and theirs are the last `batch.len()` entries
    /// of `in_flight`. Capacity: reserved with `in_flight`.
    pub(super) batch: Vec<vk::CommandBuffer>,
    /// The submitted jobs not yet seen complete, in value order: one entry per submitted job.
    /// Waits go for one of their values (see `RingHw::signal_value`). Capacity: reserved with
    /// `in_flight`, which always holds the job of each entry (so it is never longer); popped
    /// by `complete`.
    pub(super) submissions: VecDeque<Submission>,
}

/// A submitted job whose value the ring has not yet seen reached.
#[derive(Clone, Copy, Debug)]
pub(super) struct Submission {
    /// The timeline value its `VkSubmitInfo` signals (the job's value).
    pub(super) value: u64,
    /// The sequence number of its `vkQueueSubmit` on its `VkQueue` (`QueueSlot::seq`); the
    /// jobs of a batch share that of their call.
    pub(super) queue_seq: u64,
    /// The injected releasable hang it waits for, and whether its job was freed with it
    /// pending (an orphan, released once the hardware reaches it: see
    /// `RingHw::release_orphan`). Zero-sized without the `fault-injection` feature.
    pub(super) hang: PendingHang,
}

/// A published hardware fence: its value (and seqno), its signaller, and the error it ends
/// with if its submission failed or the device was lost (`None`: it signals once the
/// semaphore reaches `value`).
pub(super) struct InFlight {
    pub(super) value: u64,
    pub(super) signaller: Signaller,
    pub(super) error: Option<FenceError>,
    /// The value the fence's [`HwOps`](super::hw_fence::HwOps) polls, shared with it: set to 0
    /// (never signalled by the hardware) when the fence is marked failed, so that the semaphore
    /// reaching `value` later (a failed batch's values are passed by the next submission) cannot
    /// make it report success.
    pub(super) ops_value: Arc<AtomicU64>,
    /// The other rings' values the job waited for on the device (`native.rs`; empty for most
    /// jobs): the fence signals only after those rings' fences for them have signalled.
    pub(super) awaits: Vec<NativePeer>,
}

impl InFlight {
    /// Marks the fence failed with `error` (unless it is already), counting it in `failing`
    /// (the ring's `RingState::failing`) until the drainer has signalled it.
    pub(super) fn fail(&mut self, error: FenceError, failing: &mut (usize, Option<FenceError>)) {
        if self.error.is_none() {
            self.error = Some(error);
            self.ops_value.store(0, Ordering::Release);
            failing.0 += 1;
            failing.1 = Some(error);
        }
    }
}

/// A ring's hardware on one device generation: timeline semaphore, command pool, in-flight
/// list.
pub(crate) struct RingHw {
    pub(crate) core: Arc<DeviceCore>,
    pub(super) name: Box<str>,
    pub(crate) queue: u32,
    pub(crate) sem: vk::Semaphore,
    /// A command buffer of the pool holding no command, recorded once (by the first empty
    /// job) for simultaneous use: what every empty job submits (see `RingHw::record`). Freed
    /// with the pool.
    pub(super) empty_cb: OnceLock<vk::CommandBuffer>,
    pub(super) ctx: FenceContext,
    pub(super) state: Mutex<RingState>,
    pub(super) pool: Mutex<CmdPool>,
    /// The last value submitted (mirror of `next_value` for the completion thread).
    pub(crate) submitted: AtomicU64,
    /// The last value the completion thread saw the semaphore reach.
    pub(crate) completed: AtomicU64,
    /// The value of the last in-flight entry the ring's drainer has signalled (successfully
    /// or not): every fence of the ring up to it has signalled, in order. What a hardware
    /// fence's poll (`HwOps::signaled`) reports, never the semaphore counter, which runs ahead
    /// of the drain (a poll of a later fence would otherwise signal it before earlier ones).
    pub(super) signalled: AtomicU64,
    /// What the ring's completion thread shares with it.
    pub(super) watch: Arc<Watch>,
    /// The completion thread, joined by the ring's drop (unless the drop runs on it).
    pub(super) thread: Mutex<Option<JoinHandle<()>>>,
    pub(super) flags: Arc<RingFlags>,
    /// What the timeout handler remembers between this ring's timeouts.
    pub(super) stall: StallState,
    /// The earliest deadline hinted for a job on the ring (`HwOps::set_deadline`).
    pub(super) deadline: DeadlineHint,
    /// Set once a job of another ring waited for this ring's semaphore on the device
    /// (`native.rs`): the drop then waits for the other rings' submissions before destroying
    /// the semaphore.
    pub(super) waited_on: AtomicBool,
    /// The drain stopped at a fence whose job waited on the device for another ring's fence
    /// that ring has not signalled yet (counted in `Completion::gated` while set): that
    /// ring's drain drains this one once it has (see `drain`).
    pub(super) gated: AtomicBool,
}

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
            .queue_family_index(core.queues[queue as usize].family)
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
        let hw = Arc::new(RingHw {
            core: core.clone(),
            name: name.into(),
            queue,
            sem,
            empty_cb: OnceLock::new(),
            ctx: FenceContext::builder(format!("{name}.hw")).driver_name("gpusched-vulkan").build(),
            state: Mutex::new(RingState {
                next_value: 0,
                in_flight: VecDeque::with_capacity(cap),
                draining: false,
                failing: (0, None),
                prepared: 0,
                batch: Vec::with_capacity(cap),
                submissions: VecDeque::with_capacity(cap),
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
            stall: StallState::default(),
            deadline: DeadlineHint::default(),
            waited_on: AtomicBool::new(false),
            gated: AtomicBool::new(false),
            watch: Watch::new(d, sem),
            thread: Mutex::new(None),
        });
        match hw.start_completion_thread() {
            Ok(()) => Ok(hw),
            // Dropping `hw` destroys its pool and semaphore (nothing was submitted).
            Err(_) => Err(DeviceError::OutOfMemory {
                op: "spawning the ring's completion thread",
                code: vk::Result::ERROR_OUT_OF_HOST_MEMORY,
            }),
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
        while st.submissions.front().is_some_and(|s| s.value <= value) {
            st.submissions.pop_front();
        }
        // Without an orphaned hang on the ring there is nothing to release (and no second
        // counter read).
        let orphans = fault::ENABLED && st.submissions.iter().any(|s| s.hang.orphan().is_some());
        self.drain(st);
        if orphans {
            self.release_orphan();
        }
        Ok(())
    }

    /// Retires what the hardware finished, from a thread that is not the ring's completion
    /// thread (the scheduler's pump, after handing jobs over: `VulkanRing::flush`): as
    /// [`complete`](Self::complete), when the ring owes several values, so that while a client
    /// keeps submitting, the completion thread finds its work done and waits longer (see
    /// `completion.rs`). The ring's drain signals each fence once, whichever thread gets
    /// there first. Inside a signalling section: allocation-free, no wait (one counter read).
    /// A counter read that reports the device lost declares it (the completion threads fail
    /// the fences).
    pub(crate) fn retire(&self) {
        // Only when more than one job is owed: a lone job was most likely just handed over
        // (a client that submits one job and waits for it), and reading the counter then
        // only delays its submission path.
        if self.submitted.load(Ordering::SeqCst) < self.completed.load(Ordering::SeqCst) + 2
            || self.core.is_lost()
        {
            // (A lost core's fences are the completion threads' to fail.)
            return;
        }
        let before = self.completed.load(Ordering::SeqCst);
        if self.complete().is_err() {
            self.core.declare_lost();
            return;
        }
        let after = self.completed.load(Ordering::SeqCst);
        self.flags.pump_retired.fetch_add(after.saturating_sub(before), Ordering::Relaxed);
    }

    /// Signals the fences at the front of `in_flight` that are done (the semaphore passed
    /// them, by `completed`) or failed, one at a time, in value order, outside the lock
    /// (callbacks run here: the scheduler's completion, dependants, the next `run_job`). One
    /// drainer per ring: a caller that finds another thread (or an outer frame of its own:
    /// a callback that fails a batch) draining leaves its update (`completed`, an entry's
    /// error) to it, which sees it when it next takes the lock; the drainer clears
    /// `draining` under the lock in the same critical section where it finds nothing left,
    /// so no update is missed. Allocation-free, no wait.
    pub(super) fn drain<'a>(&'a self, mut st: MutexGuard<'a, RingState>) {
        if st.draining {
            return;
        }
        st.draining = true;
        loop {
            let done = self.completed.load(Ordering::SeqCst);
            let next = match st.in_flight.front() {
                Some(f) if f.error.is_some() => st.in_flight.pop_front(),
                Some(f) if f.value <= done && self.peers_signalled(f) => st.in_flight.pop_front(),
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
            self.drain_gated_peers();
            st = lock(&self.state);
            if f.error.is_some() {
                st.failing.0 = st.failing.0.saturating_sub(1);
            }
        }
    }

    /// Whether the rings `f`'s job waited for on the device have signalled the fences it
    /// waited for (a ring that is gone has). The semaphore reaching `f`'s value proves their
    /// hardware finished that work, but their drains may not have signalled it yet, and one
    /// may still fail it (a device loss fails what a drain has not passed): `f` signals after
    /// them, as its job would have run after them with host waits, so that the scheduler sees
    /// their outcome when it completes `f`'s job (a failed one fails it). If one has not,
    /// the ring is marked gated (before it looks: see `drain_gated_peers`) and stays so
    /// while the drain stops here. Under the ring lock; allocation-free.
    fn peers_signalled(&self, f: &InFlight) -> bool {
        if f.awaits.is_empty() {
            return true;
        }
        if !self.gated.swap(true, Ordering::SeqCst) {
            self.core.comp.gated.fetch_add(1, Ordering::SeqCst);
        }
        let passed = f.awaits.iter().all(|(ring, value)| {
            ring.upgrade().is_none_or(|r| r.signalled.load(Ordering::SeqCst) >= *value)
        });
        if passed && self.gated.swap(false, Ordering::SeqCst) {
            self.core.comp.gated.fetch_sub(1, Ordering::SeqCst);
        }
        passed
    }

    /// After this ring's drain signalled a fence (`signalled` stored first): drains the rings
    /// of the core whose drain stopped at a fence that may have waited for it. Pairs with
    /// `peers_signalled`, which marks its ring gated before it reads the other rings'
    /// `signalled` (each side stores, then reads the other's, all `SeqCst`): either that read
    /// sees this ring's new value or this look sees the ring gated. A ring beyond the
    /// snapshot's size (`MAX_RINGS`, only briefly) is drained by its completion thread's next
    /// look. Allocation-free; a cheap load while no ring is gated.
    fn drain_gated_peers(&self) {
        if self.core.comp.gated.load(Ordering::SeqCst) == 0 {
            return;
        }
        // Taken under `comp.rings`, used and dropped after it is released.
        let rings = self.core.comp.snapshot();
        for r in rings.iter().flatten() {
            if !std::ptr::eq(Arc::as_ptr(r), self) && r.gated.swap(false, Ordering::SeqCst) {
                self.core.comp.gated.fetch_sub(1, Ordering::SeqCst);
                r.drain(lock(&r.state));
            }
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
        st.submissions.iter().find(|s| s.value >= value).map_or(value, |s| s.value)
    }

    /// The value the submission that carries job value `value` signals, if one does (`None`:
    /// not submitted yet, its submission failed, or already seen complete).
    pub(super) fn submitted_signal_value(&self, value: u64) -> Option<u64> {
        let st = lock(&self.state);
        st.submissions.iter().find(|s| s.value >= value).map(|s| s.value)
    }

    /// Releases the injected hang of the submission the hardware is on, if its job was freed
    /// with it pending (force-completed while queued: nothing will time it out, and the ring
    /// behind it would stay stuck). Only at the head of the hardware, so that a hang ahead of
    /// it, still to be judged by a timeout, is not released with it (releasing a value
    /// releases every lower one). Allocation-free.
    /// Without the `fault-injection` feature there is none: a constant early return.
    pub(super) fn release_orphan(&self) {
        if !fault::ENABLED {
            return;
        }
        let Ok(done) = self.counter() else { return };
        let hang = {
            let st = lock(&self.state);
            st.submissions.iter().find(|s| s.value > done).and_then(|s| s.hang.orphan())
        };
        if let Some(h) = hang {
            self.core.release_hang(h);
        }
    }

    /// Signals every in-flight fence the semaphore has not passed with `error` (device
    /// lost), in value order, through the ring's drainer (see `drain`). Allocation-free.
    pub(crate) fn fail_all(&self, error: FenceError) {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        st.submissions.clear();
        let done = self.completed.load(Ordering::SeqCst);
        for f in st.in_flight.iter_mut().filter(|f| f.value > done) {
            f.fail(error, &mut st.failing);
        }
        self.drain(guard);
    }

    /// A command buffer ready for recording: a recycled one whose value the semaphore has
    /// passed, a free one, or a new one.
    pub(super) fn acquire_cb(&self, pool: &mut CmdPool) -> Result<vk::CommandBuffer, vk::Result> {
        if let Some(r) = pool.retired.front() {
            // Hardware progress, not fence state: a lost device (even one whose loss was injected,
            // or reported by a layer above a driver that still runs the work) may still run
            // these command buffers, so a counter read that reports the loss recycles nothing
            // it has not seen complete (the caller declares the loss).
            let done = match self.counter() {
                Ok(c) => c.max(self.completed.load(Ordering::SeqCst)),
                Err(vk::Result::ERROR_DEVICE_LOST) => return Err(vk::Result::ERROR_DEVICE_LOST),
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
        // SAFETY: the semaphore is live; waiting before destroying keeps the pool and the semaphore
        // alive while the hardware may still use them (also on a lost core: a device whose loss was
        // injected still runs its work; a really lost one answers DEVICE_LOST). A device that never
        // finishes (a real hang) leaks them instead of destroying objects in use.
        let idle = match unsafe { d.wait_semaphores(&info, 10_000_000_000) } {
            Ok(()) => true,
            Err(vk::Result::ERROR_DEVICE_LOST) => {
                // The driver reports the device lost, but the work submitted may still run
                // (a layer that reports a loss above a driver that does not lose anything;
                // a driver that reports the loss before its queues stop): wait for the queue
                // to go idle before destroying what that work uses. `vkQueueWaitIdle` on a
                // lost device returns (`VK_ERROR_DEVICE_LOST`) once nothing runs on it any
                // more. Injected hangs first, which would keep it from going idle.
                self.core.release_injected(true);
                let slot = &self.core.queues[self.queue as usize];
                let q = slot.lock();
                // SAFETY: the queue is externally synchronised by its lock (shared with the
                // engine for a lent queue).
                let _ = unsafe { d.queue_wait_idle(*q) };
                true
            }
            Err(_) => false,
        };
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
        // The retired jobs' resources go now, while the core is certainly alive: an engine's
        // own resource (`GpuResource`) holds no reference to the core, and this ring's may be
        // the last one (its fields drop after this body, the core first).
        drop(std::mem::take(&mut lock(&self.pool).retired));
        let pool = lock(&self.pool).pool;
        self.wait_for_waiters();
        // SAFETY: all submitted work of this ring is done, and so is every submission of
        // another ring that waited on its semaphore (`wait_for_waiters`); freeing the pool frees its buffers;
        // the completion thread is gone, or this drop runs on it, between two waits, and it
        // checks `stop` before waiting again (`stop_thread`).
        unsafe {
            d.destroy_command_pool(pool, None);
            d.destroy_semaphore(self.sem, None);
        }
    }
}
