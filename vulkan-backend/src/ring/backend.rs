//! The [`Backend`] impl of a Vulkan ring: how the scheduler's hooks map to the ring.
//!
//! - `prepare_job` (arm time, may allocate) records the command buffer on the ring's
//!   *current* `RingHw` (one per device generation), allocates the hardware fence with its
//!   [`FenceOps`](gpusched::fence::FenceOps) and reserves room in the in-flight and
//!   submission lists; the job keeps its `RingHw`.
//! - `run_job` (signalling section: no allocation, no `Resv` lock, no wait; rule 4 of
//!   CONTRACT.md) takes the ring lock, then the queue lock, submits the job (or batches it for
//!   `flush`) and publishes the prepared fence. A job prepared on a generation since lost ends
//!   `DeviceLost` (its command buffer belongs to the dead pool). A job handed over again (a
//!   resubmission) ends `Cancelled`: a ring never resubmits (see `timeout.rs`).
//! - `flush` submits the batch (see `submit.rs`), then, off the completion thread, retires
//!   what the hardware finished (`RingHw::retire`).
//! - `timedout_job` decides whether the guilty job hangs (see `timeout.rs`).
//! - `free_job` (may run in a signalling section) hands the job's command buffer, recording
//!   closure and buffers to the retired list of its own `RingHw`; they are reused or dropped
//!   only once its semaphore has passed the job's value (see `hw.rs`). An empty job that
//!   submitted the ring's shared empty command buffer keeps nothing, and retires nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gpusched::fence::{Fence, FenceError};
use gpusched::{Backend, JobInfo, Recovery, TimeoutStatus};

use super::hw::{KeptAlive, Retired};
use super::hw_fence::HwOps;
use super::VulkanRing;
use crate::error::RecordError;
use crate::job::{Prepared, VulkanJob};
use crate::sync::lock;

impl Backend for VulkanRing {
    type Job = VulkanJob;
    /// Why a job could not be recorded; arming hands it back in
    /// [`ArmFailure::Backend`](gpusched::ArmFailure::Backend).
    type Error = RecordError;

    fn prepare_job(&self, job: &mut VulkanJob, _info: &JobInfo) -> Result<(), RecordError> {
        let faults = &self.slot.shared.faults;
        // Every armed job draws (reproducible plans); a job's own fault wins.
        faults.arm(&mut job.fault);
        if self.slot.shared.dead.load(Ordering::SeqCst) {
            return Err(RecordError::DeviceGone);
        }
        let hw = self.slot.hw();
        if hw.core.is_lost() {
            return Err(RecordError::DeviceLost { generation: hw.core.generation });
        }
        let recorded = hw.record(job);
        faults.count_recording(&job.fault, &recorded);
        let cb = recorded?;
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
            st.submissions.reserve(need);
            st.batch.reserve(need);
        }
        job.sub.hw = Some(hw);
        Ok(())
    }
    fn run_job(&self, job: &mut VulkanJob, _info: &JobInfo) -> Result<Fence, FenceError> {
        self.run(job)
    }

    /// Rings of one device wait for each other on the device (see `native.rs`).
    fn can_wait_natively(&self, other: &Self) -> bool {
        self.same_device(other)
    }

    /// Wait slots in the job's own submission (which is then never batched).
    fn reserve_native_waits(&self, job: &mut VulkanJob, count: usize) {
        job.external.get_or_insert_with(Box::default).reserve_native(count);
    }

    /// A wait on the other ring's timeline semaphore, in the job's `VkSubmitInfo`.
    fn wait_natively(
        &self,
        job: &mut VulkanJob,
        index: usize,
        hw: Option<&Fence>,
    ) -> Result<(), FenceError> {
        self.record_native_wait(job, index, hw)
    }

    /// Submits the jobs `run_job` batched on the current generation (one `vkQueueSubmit`),
    /// then, on a thread other than the ring's completion thread, retires what the hardware
    /// finished (`RingHw::retire`: fence callbacks may run here, as on the completion
    /// thread). A batch left on a generation lost meanwhile was failed by the loss.
    fn flush(&self) {
        // Never the last reference (the slot or, once swapped, the graveyard holds it).
        let hw = self.slot.hw();
        // A refused batch's fences end with its error (`submit_batch`).
        let _ = hw.submit_batch();
        // The pumping thread retires what the hardware finished meanwhile (the completion
        // thread retires on its own loop).
        if !super::on_completion_thread() {
            hw.retire();
        }
    }

    /// See `timeout.rs`. Allocation-free and `Resv`-lock-free.
    fn timedout_job(&self, recovery: &mut Recovery<'_, Self>) -> TimeoutStatus {
        self.judge_timeout(recovery)
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
        if job.fault.take_releasable_hang().is_some() {
            // Marked an orphan, released once the hardware reaches it (a completed job's
            // entry is gone).
            {
                let mut st = lock(&hw.state);
                if let Some(s) = st.submissions.iter_mut().find(|s| s.value == job.sub.value) {
                    s.hang.set_orphan();
                }
            }
            hw.release_orphan();
        }
        if job.sub.prepared.take().is_some() {
            let mut st = lock(&hw.state);
            st.prepared = st.prepared.saturating_sub(1);
        }
        let Some(cb) = job.sub.cb.take() else { return };
        if hw.empty_cb.get() == Some(&cb) {
            // The ring's shared empty command buffer: an empty job keeps nothing alive (no
            // resource, a closure that captures nothing: `record_is_empty`), and the buffer
            // stays the ring's.
            return;
        }
        let keep = KeptAlive { _record: job.record, _buffers: std::mem::take(&mut job.declared) };
        // Capacity: one entry per command buffer allocated (`CmdPool` invariant).
        lock(&hw.pool).retired.push_back(Retired { value: job.sub.value, cb, _keep: keep });
    }
}
