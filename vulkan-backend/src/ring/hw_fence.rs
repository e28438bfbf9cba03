//! The hardware fence's backend hooks ([`FenceOps`]): "the ring's semaphore reached the
//! job's value", as the ring's in-order drain reports it.
//!
//! A poll (`HwOps::signaled`) reports how far the ring's drain has signalled
//! (`RingHw::signalled`), never the semaphore counter, which runs ahead of the drain: a poll
//! must not signal a later fence of the ring before the drain has signalled the earlier
//! ones. A wait (`HwOps::wait`) may wait on the semaphore, in slices, and leaves the
//! signal itself to the drain.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ash::vk;
use gpusched::fence::{FenceOps, OpsWait};

use super::hw::RingHw;

/// The hardware fence's backend hooks: "the ring's semaphore reached `value`".
pub(super) struct HwOps {
    pub(super) ring: Weak<RingHw>,
    pub(super) value: Arc<AtomicU64>,
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

    /// Records the deadline on the ring (`RingHw::deadline`), for the fence's job while it is
    /// on the ring. A hint with no effect on scheduling yet. Allocation-free; ignored for a
    /// fence not submitted (value 0) or whose ring is gone.
    fn set_deadline(&self, deadline: Instant) {
        let v = self.value.load(Ordering::Acquire);
        if let Some(r) = self.ring.upgrade() {
            if v != 0 {
                r.deadline.note(deadline, v, r.signalled.load(Ordering::SeqCst));
            }
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
    /// when the ring's drain gets to it (in order, see `HwOps::signaled`): until then the
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
                // The driver reports the loss to this waiter first: declare it (the waiter
                // may hold a `Resv` lock, so no fence callback runs here); the completion
                // threads fail the fences. Another failure: the completion thread signals
                // whatever comes of it.
                Err(vk::Result::ERROR_DEVICE_LOST) => {
                    r.core.declare_lost();
                    return OpsWait::Unsupported;
                }
                Err(_) => return OpsWait::Unsupported,
            }
        }
    }
}

/// The longest single `vkWaitSemaphores` of a hardware fence's wait ([`HwOps`]), between two
/// looks at the loss flag.
const HW_WAIT_SLICE: Duration = Duration::from_millis(10);
