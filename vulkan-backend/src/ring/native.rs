//! Cross-ring waits on the device: a job depending on a job of another ring of the same
//! device waits for that ring's timeline semaphore to reach the job's value inside its own
//! `VkSubmitInfo` ([`Backend::wait_natively`](gpusched::Backend::wait_natively)), instead of
//! on the host for its finished fence.
//!
//! # Rules
//! - Two rings can wait for each other when they are rings of one [`VulkanDevice`]
//!   (`can_wait_natively`); the hardware fence awaited must be of the waiting job's own
//!   generation (a fence of a lost generation fails the job `DeviceLost`; it was failed with
//!   that error too).
//! - The awaited value is on a `VkQueue` before the wait is: a value the other ring still
//!   holds in its batch is submitted first (its `flush`, early). A wait-before-signal on one
//!   queue would block that queue for good (rings may share a queue, as on lavapipe).
//! - A value whose submission failed fails the job with that submission's error instead of
//!   waiting for a signal that will never come.
//! - The job carries the waits in its own `VkSubmitInfo` (the external-semaphore arrays,
//!   slots reserved at arm): it is never batched.
//! - Its hardware fence signals only after the awaited rings' drains have signalled the
//!   fences it waited for (`RingHw::drain`), as it would have run after them with host waits:
//!   the semaphore proves that work finished, but a device loss may still fail a fence its
//!   ring has not drained, and the scheduler then fails the dependant with that error when it
//!   completes it. Without the order, the dependant could succeed and its dependency end
//!   `DeviceLost` (seen with the fault layer: a loss between the two rings' drains).
//! - A ring's semaphore outlives every submission waiting on it: the drop of a ring that
//!   was waited on waits for the generation's queues to go idle
//!   ([`RingHw::wait_for_waiters`]) before destroying it.
//! - Timeouts: the scheduler does not run the timeout handler for a job whose awaited job
//!   has not finished (its time counts from then); a hang of the awaited ring is that
//!   ring's to judge. When the awaited job is force-completed, the wait resolves once the
//!   hardware passes it (an injected hang is released when its job is freed), or the device
//!   is lost.
//!
//! [`VulkanDevice`]: crate::VulkanDevice

use std::sync::atomic::Ordering;
use std::sync::Arc;

use gpusched::fence::{Fence, FenceError};

use super::hw::RingHw;
use super::VulkanRing;
use crate::job::VulkanJob;
use crate::sync::lock;

impl VulkanRing {
    /// Whether `other` is another ring of this ring's device and this ring's native waits
    /// are on ([`VulkanRing::set_native_waits`]).
    pub(super) fn same_device(&self, other: &VulkanRing) -> bool {
        self.slot.flags.native_waits.load(Ordering::Relaxed)
            && Arc::ptr_eq(&self.slot.shared, &other.slot.shared)
            && !Arc::ptr_eq(&self.slot, &other.slot)
    }

    /// The body of `wait_natively`: records in `job`'s submission the wait for `hw` (a
    /// hardware fence of another ring of the device). Allocation-free.
    pub(super) fn record_native_wait(
        &self,
        job: &mut VulkanJob,
        index: usize,
        hw: Option<&Fence>,
    ) -> Result<(), FenceError> {
        let Some(own) = job.sub.hw.clone() else { return Err(FenceError::Cancelled) };
        let wait = match hw {
            Some(f) => wait_target(&own, f)?,
            None => None,
        };
        match job.external.as_deref_mut() {
            Some(e) => {
                e.set_native(index, wait.as_ref().map(|(ring, value)| (ring, *value)));
                Ok(())
            }
            // Reserved at arm: not expected.
            None if wait.is_none() => Ok(()),
            None => Err(FenceError::Cancelled),
        }
    }
}

/// The ring (of `own`'s core) whose hardware fence `fence` is, and the value its semaphore
/// signals for it, once that value is on a queue; `None` when the hardware has passed it
/// already.
fn wait_target(own: &RingHw, fence: &Fence) -> Result<Option<(Arc<RingHw>, u64)>, FenceError> {
    if let Some(e) = fence.error() {
        return Err(e);
    }
    if fence.is_signaled() {
        return Ok(None);
    }
    let value = fence.seqno();
    // Taken under `comp.rings`, used after it is released (see `DeviceCore::mark_lost`).
    let rings = own.core.comp.snapshot();
    let Some(other) = rings.iter().flatten().find(|r| r.ctx.id() == fence.context()) else {
        // Not a ring of this generation: the generation it was on is lost.
        return Err(FenceError::DeviceLost);
    };
    if other.completed.load(Ordering::SeqCst) >= value {
        return Ok(None);
    }
    if other.submitted.load(Ordering::SeqCst) < value {
        // Still in its ring's batch: submit the batch now, ahead of this wait (a batch the
        // driver refused fails the awaited job, and so this one, with its error).
        other.submit_batch()?;
    }
    if own.core.is_lost() {
        return Err(FenceError::DeviceLost);
    }
    if other.submitted_signal_value(value).is_some() {
        other.waited_on.store(true, Ordering::SeqCst);
        return Ok(Some((other.clone(), value)));
    }
    if other.completed.load(Ordering::SeqCst) >= value {
        return Ok(None);
    }
    // Its submission failed: its fence fails with that error.
    let failed = lock(&other.state).failing.1;
    Err(failed.unwrap_or(FenceError::DeviceLost))
}

impl RingHw {
    /// If a job of another ring waited on this ring's semaphore, waits until every queue of
    /// the generation is idle (the waiting submissions are done; injected hangs are released
    /// first, as this ring's drop does), so the semaphore may be destroyed. The other rings
    /// may be gone from the generation's list already (a lost generation's rings move to the
    /// graveyard), so the queues are what is waited for. For the ring's drop (outside any
    /// signalling section).
    pub(super) fn wait_for_waiters(&self) {
        if !self.waited_on.load(Ordering::SeqCst) {
            return;
        }
        self.core.release_injected(true);
        for slot in self.core.queues.iter() {
            let q = slot.lock();
            // SAFETY: the queue is externally synchronised by its lock (shared with the
            // engine for a lent queue). A lost device answers `VK_ERROR_DEVICE_LOST` once
            // nothing runs on it any more.
            let _ = unsafe { self.core.device.queue_wait_idle(*q) };
        }
    }
}
