//! Recording and submission: a job's command buffer ([`RingHw::record`]), its submission
//! alone (`VulkanRing::run`, the body of `run_job`) or in a batch ([`RingHw::submit_batch`],
//! the body of `flush`), and the three steps that publish a submission.
//!
//! # Ordering on the queue
//! Vulkan does not order separate submissions. Each recorded command buffer starts with a
//! global memory barrier (all commands → all commands), so it runs after, and sees the writes
//! of, everything submitted to its queue before it: the ring executes in order, as the
//! scheduler's same-ring dependency shortcut requires. It ends with a barrier to the host, so
//! host reads after the fence see the results. A [`VulkanJob::empty`](crate::VulkanJob::empty)
//! job records neither (no command: nothing to order or make visible; its semaphore signal
//! still waits for every command submitted before it, which is all its fence promises): one
//! that declared no resource records nothing at all and submits the ring's empty command
//! buffer, recorded once for simultaneous use (`RingHw::empty_cb`), as a native client would
//! reuse one.
//!
//! # Batching
//! With batching on, `run_job` only takes the job's value and hands out its fence; `flush`
//! submits the batch with one `vkQueueSubmit` per [`SUBMIT_CHUNK`] jobs, one `VkSubmitInfo`
//! per job signalling that job's own value, so each job of a batch completes, and is judged
//! by the timeout handler, on its own. A job with an injected hang or submit failure is
//! never batched: `run_job` submits the jobs batched before it, then submits it alone (with
//! its wait on the hang semaphore).
//!
//! # A refused batch
//! When `vkQueueSubmit` fails for a chunk of a batch, the chunks before it stay submitted,
//! and the jobs of the refused chunk and of every later one end with the call's error
//! (`DeviceError::fence_error`: `DeviceLost`, which also declares the generation lost, or
//! `-ENOMEM`, ...). Their values are never reused. Until the ring's drainer has signalled those
//! fences, a job handed to the ring fails with the same error (see `VulkanRing::run`): the
//! scheduler counts a job as on the ring once `run_job` returned, and lets its same-ring
//! dependants run.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use ash::vk;
use gpusched::fence::{Fence, FenceError};

use super::hw::{InFlight, RingHw, RingState, Submission};
use super::VulkanRing;
use crate::device::DeviceCore;
use crate::error::{map_device, map_record, DeviceError, RecordError};
use crate::fault::PendingHang;
use crate::job::{Prepared, VulkanJob};
use crate::kernel::{full_barrier, host_barrier, RecordCtx};
use crate::resource::GpuResource;
use crate::semaphore::NativePeer;
use crate::sync::lock;

/// The most jobs of a batch one `vkQueueSubmit` carries (one `VkSubmitInfo` each, in stack
/// arrays: `flush` does not allocate); a larger batch takes several calls.
pub(crate) const SUBMIT_CHUNK: usize = 32;

impl RingHw {
    /// Submits the batched jobs (see [`Backend::flush`](gpusched::Backend::flush)): one
    /// `vkQueueSubmit` per [`SUBMIT_CHUNK`] jobs (one for a usual batch), with one `VkSubmitInfo`
    /// per job that signals the job's own value, so each job completes (and is judged by the
    /// timeout handler) on its own. Allocation-free: the arrays are on the stack, the batch's room
    /// was reserved at prepare time.
    pub(super) fn submit_batch(&self) -> Result<(), FenceError> {
        let hw = self;
        let mut guard = lock(&hw.state);
        let st = &mut *guard;
        if st.batch.is_empty() {
            return Ok(());
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
            let q = slot.lock();
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
                    hw.note_queue_submit(
                        &mut st.submissions,
                        &values[..chunk.len()],
                        seq,
                        PendingHang::NONE,
                    );
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
            hw.publish_submitted(done);
        }
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                // The rest of the batch never reached the hardware: its fences (the entries
                // above `done`) end with the error, in value order, after the fences before
                // them (the ring's drainer signals them outside the lock: their callbacks
                // re-enter the scheduler). Their values are not reused (a later submission
                // signals a higher value, which timeline waits cover), so seqnos stay unique.
                let error = e.fence_error();
                for f in st.in_flight.iter_mut().rev().take(batched).filter(|f| f.value > done) {
                    f.fail(error, &mut st.failing);
                }
                if e.is_device_lost() {
                    drop(guard);
                    hw.core.mark_lost();
                    guard = lock(&hw.state);
                }
                hw.drain(guard);
                Err(error)
            }
        }
    }

    /// The ring's empty command buffer (`RingHw::empty_cb`), recorded by the first call:
    /// no command, simultaneous use, so any number of empty jobs may have it pending at once.
    fn empty_cb(&self) -> Result<vk::CommandBuffer, vk::Result> {
        if let Some(cb) = self.empty_cb.get() {
            return Ok(*cb);
        }
        // Under the pool lock: the pool needs external synchronisation, and two first empty
        // jobs record one buffer.
        let pool = lock(&self.pool);
        if let Some(cb) = self.empty_cb.get() {
            return Ok(*cb);
        }
        let info = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool.pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        let d = &self.core.device;
        // SAFETY: the pool is locked.
        let cb = unsafe { d.allocate_command_buffers(&info) }?[0];
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::SIMULTANEOUS_USE);
        // SAFETY: a fresh command buffer of the locked pool; nothing is recorded between
        // begin and end.
        let recorded =
            unsafe { d.begin_command_buffer(cb, &begin).and_then(|()| d.end_command_buffer(cb)) };
        if let Err(code) = recorded {
            // SAFETY: the buffer is of the locked pool and was never submitted.
            unsafe { d.free_command_buffers(pool.pool, &[cb]) };
            return Err(code);
        }
        let _ = self.empty_cb.set(cb);
        Ok(cb)
    }

    pub(super) fn record(&self, job: &mut VulkanJob) -> Result<vk::CommandBuffer, RecordError> {
        let core = &self.core;
        for b in job.declared.iter() {
            check_generation(b, core)?;
        }
        let d = &core.device;
        // A driver error of a recording call: out of memory refuses the job; a lost device
        // is declared lost, as every call that reports it does, without running fence
        // callbacks here (arm time: the entity's lock is held).
        let failed = |op, code| {
            if code == vk::Result::ERROR_DEVICE_LOST {
                core.declare_lost();
            }
            map_record(op, code, core.generation)
        };
        // An injected slow job records the busy kernel first, sized to run about its time.
        let slow = job.fault.slow_groups(core);
        if job.bare && slow.is_none() && job.declared.is_empty() && record_is_empty(&job.record) {
            // An empty job keeps nothing alive and records nothing: it submits the ring's
            // shared empty command buffer (`free_job` retires nothing for it).
            if job.fault.drops_recording() {
                return Err(RecordError::RecordingDropped);
            }
            return self.empty_cb().map_err(|code| failed("vkAllocateCommandBuffers", code));
        }
        let mut pool = lock(&self.pool);
        let cb = match self.acquire_cb(&mut pool) {
            Ok(cb) => cb,
            Err(code) => {
                drop(pool);
                return Err(failed("vkAllocateCommandBuffers", code));
            }
        };
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: `cb` is from this ring's pool, locked; it is not pending (fresh, or the
        // semaphore passed its last submission); the pool allows per-buffer reset.
        if let Err(code) = unsafe { d.begin_command_buffer(cb, &begin) } {
            pool.free.push(cb);
            drop(pool);
            return Err(failed("vkBeginCommandBuffer", code));
        }
        // An empty job (no injected busy kernel either) records no command at all.
        let bare = job.bare && slow.is_none();
        if !bare {
            full_barrier(d, cb);
        }
        let ctx = RecordCtx { core, declared: &job.declared };
        let mut recorded = Ok(());
        if let Some(groups) = slow {
            recorded = ctx.busy(cb, 16, groups);
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
            (Ok(()), Ok(())) if job.fault.drops_recording() => {
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
                drop(pool);
                Err(failed("vkEndCommandBuffer", code))
            }
        }
    }
}

/// Whether a recording closure captures nothing (a zero-sized closure, as
/// [`VulkanJob::empty`](crate::VulkanJob::empty)'s): dropping it frees nothing, so a job
/// whose closure is one and that declared no resource has nothing to keep alive until the
/// hardware has passed it.
pub(super) fn record_is_empty(record: &crate::job::RecordFn) -> bool {
    std::mem::size_of_val(&**record) == 0
}

/// A resource recorded for `core` must belong to it: one of a lost generation of the
/// same device is [`RecordError::LostGeneration`], one of another device
/// [`RecordError::WrongDevice`] (see `resource::check_owner`).
pub(crate) fn check_generation(
    b: &(impl GpuResource + ?Sized),
    core: &DeviceCore,
) -> Result<(), RecordError> {
    crate::resource::check_owner(b, core)
}

/// Publishing a submission takes three steps, each a helper below, used by the single and
/// the batched path alike: [`RingState::publish_fence`] when `run_job` hands the job's fence
/// out (its value taken, its in-flight entry appended), [`RingHw::note_queue_submit`] after
/// each successful `vkQueueSubmit` (the per-queue sequence number and one [`Submission`] per
/// job it carries), then [`RingHw::publish_submitted`] (the completion thread may wait for
/// the new values).
impl RingState {
    /// Takes `value` (the next timeline value; the caller stores it in the job) and hands out
    /// the job's hardware fence:
    /// the prepared fence is initialised with seqno `value`, the fence ops poll it, and its
    /// in-flight entry is appended (the ring's drainer signals it). Under the ring lock;
    /// allocation-free (room reserved at prepare time).
    fn publish_fence(&mut self, value: u64, prepared: Prepared, awaits: Vec<NativePeer>) -> Fence {
        debug_assert_eq!(value, self.next_value + 1, "values are taken in order");
        self.next_value = value;
        prepared.value.store(value, Ordering::Release);
        let (fence, signaller) = prepared.hw.init(value);
        self.in_flight.push_back(InFlight {
            value,
            signaller,
            error: None,
            ops_value: prepared.value.clone(),
            awaits,
        });
        fence
    }
}

impl RingHw {
    /// Records a successful `vkQueueSubmit` (sequence number `seq` on its `VkQueue`) that
    /// carried the jobs of `values`, the first (only, if `hang` has one) waiting on the
    /// injected hang `hang`: counts the call and appends one [`Submission`] per job. Under
    /// the ring lock (`submissions` is its `RingState::submissions`); allocation-free (room
    /// reserved at prepare time).
    fn note_queue_submit(
        &self,
        submissions: &mut VecDeque<Submission>,
        values: &[u64],
        seq: u64,
        hang: PendingHang,
    ) {
        self.flags.submits.fetch_add(1, Ordering::Relaxed);
        for &value in values {
            submissions.push_back(Submission { value, queue_seq: seq, hang });
        }
    }

    /// Publishes `last` as the last value submitted (`submitted`, what the completion thread
    /// waits for) and wakes the completion thread if the ring was idle (it may be parked).
    fn publish_submitted(&self, last: u64) {
        let prev = self.submitted.swap(last, Ordering::SeqCst);
        if prev <= self.completed.load(Ordering::SeqCst) {
            self.wake();
        }
    }
}

impl VulkanRing {
    /// The body of `run_job`.
    pub(super) fn run(&self, job: &mut VulkanJob) -> Result<Fence, FenceError> {
        let Some(prepared) = job.sub.prepared.take() else {
            // A resubmission: Vulkan has no queue reset, so there is none (see `timeout.rs`).
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
        if let (1.., Some(error)) = st.failing {
            // An earlier submission of this ring failed (a batch the driver refused) and its
            // fences have not all signalled yet: the drainer that signals them is busy (this
            // may be its callback), or is signalling one now (popped, its callbacks still
            // running). The scheduler took those jobs as on the ring, so a same-ring
            // dependant of one of them is ready now and would run without its results. Every
            // job handed over in that window fails with the same error, as if it had been in
            // the refused batch.
            return Err(error);
        }
        // Injected faults on submission (without the feature: `None` and `false`, constants).
        let fail = faults.submit_failure(&job.fault);
        let hang = job.fault.hangs();
        let external = job.external.is_some();
        if self.slot.flags.batching.load(Ordering::Relaxed) && fail.is_none() && !hang && !external
        {
            // Submitted by `flush`, with the other jobs the scheduler hands over now.
            let value = st.next_value + 1;
            st.batch.push(cb);
            job.sub.value = value;
            return Ok(st.publish_fence(value, prepared, Vec::new()));
        }
        if !st.batch.is_empty() {
            // What was batched before this job goes first, in its own submission.
            drop(st);
            let batch = hw.submit_batch();
            st = lock(&hw.state);
            if hw.core.is_lost() {
                return Err(FenceError::DeviceLost);
            }
            // The batch handed over with this job was refused: this job may depend on one of
            // its jobs (the scheduler took them as on the ring), so it fails with the same
            // error, as a job handed over while a refused batch's fences drain does.
            batch?;
            if let (1.., Some(error)) = st.failing {
                return Err(error);
            }
        }
        let value = st.next_value + 1;
        let values = [value];
        let result = match fail {
            Some(code) => {
                faults.count_failed_submit(code);
                Err(code)
            }
            None => {
                let slot = &hw.core.queues[hw.queue as usize];
                let q = slot.lock();
                // An injected hang's wait value is taken under the queue lock, so hang values
                // increase in the queue's submission order: releasing one (which releases
                // every lower value) never releases a hang queued behind it, whose own
                // timeout has yet to come. Queues of one device share the hang timeline: with
                // several queues an injected hang may still be released by another queue's
                // (fault injection only).
                let wait = hw.core.faults.hang_wait(&mut job.fault, faults);
                // SAFETY: the queue is externally synchronised by its lock; the command
                // buffer is executable and not pending; `value` is above every value signalled
                // or pending on the semaphore (values increase under the ring lock); the hang
                // semaphore is a timeline semaphore of this device, the external ones the
                // engine's of it (`VulkanJob::wait_semaphore`).
                unsafe {
                    crate::semaphore::submit_one(
                        &hw.core.device,
                        *q,
                        cb,
                        (hw.sem, value),
                        wait,
                        job.external.as_deref_mut(),
                    )
                }
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
        hw.note_queue_submit(&mut st.submissions, &values, seq, job.fault.pending_hang());
        job.sub.value = value;
        let awaits = job.external.as_deref_mut().map_or_else(Vec::new, |e| e.take_native_peers());
        let fence = st.publish_fence(value, prepared, awaits);
        drop(st);
        hw.publish_submitted(value);
        Ok(fence)
    }
}
