//! Deadline hints a ring records (`dma_fence_set_deadline` on its hardware fences).
//!
//! The scheduler forwards a deadline set on a job's finished fence to the job's hardware
//! fence, whose backend hook (`HwOps::set_deadline`) records it here. The ring keeps the
//! earliest deadline of a job still on it, readable through
//! [`VulkanRing::earliest_deadline`](crate::VulkanRing::earliest_deadline), for clock boosting
//! or completion polling to act on later. It is a hint with no effect on scheduling or
//! completion yet.

use std::sync::Mutex;
use std::time::Instant;

use crate::sync::lock;

/// The earliest deadline hinted for a job still on the ring, with the timeline value of that
/// job's hardware fence: once the ring's drain has signalled that value the hint is stale
/// and forgotten (a later hint for a job still on the ring replaces it; hints for other jobs
/// heard before are not kept, which is enough for a hint).
#[derive(Default)]
pub(crate) struct DeadlineHint {
    earliest: Mutex<Option<(Instant, u64)>>,
}

impl DeadlineHint {
    /// Records that the fence of timeline value `value` is needed by `deadline`; `signalled`
    /// is how far the ring's drain got. Allocation-free, never waits (a short lock): it runs
    /// from `Fence::set_deadline`, possibly inside a signalling section (rule 4 of
    /// CONTRACT.md).
    pub(crate) fn note(&self, deadline: Instant, value: u64, signalled: u64) {
        let mut e = lock(&self.earliest);
        let replace = match *e {
            None => true,
            Some((d, v)) => v <= signalled || deadline < d,
        };
        if replace {
            *e = Some((deadline, value));
        }
    }

    /// The timeline value of the job the earliest deadline was hinted for, if the drain has
    /// not signalled it yet: the completion thread does not hold its signal back to retire
    /// it with later jobs.
    pub(crate) fn value(&self, signalled: u64) -> Option<u64> {
        match *lock(&self.earliest) {
            Some((_, v)) if v > signalled => Some(v),
            _ => None,
        }
    }

    /// The earliest deadline recorded for a job the drain has not signalled yet.
    pub(crate) fn earliest(&self, signalled: u64) -> Option<Instant> {
        match *lock(&self.earliest) {
            Some((d, v)) if v > signalled => Some(d),
            _ => None,
        }
    }
}
