//! The timeout decision (`timedout_job`). It runs in the TDR's signalling section: no
//! allocation, no `Resv` lock, no wait (rule 4 of CONTRACT.md).
//!
//! Vulkan has no queue reset and no way to take a submission off a queue, so nothing is
//! resubmitted: the handler decides whether the guilty job really hangs, from the ring's
//! hardware progress (the semaphore counter) rather than fence state. It stops the
//! scheduler, restarts it before returning, and answers with the first case that applies:
//!
//! 1. The guilty job completed after all (its fence signalled, or the semaphore passed its
//!    value and the drain has yet to signal it): [`TimeoutStatus::NoHang`].
//! 2. Its submission is queued behind an unfinished earlier submission of another ring on the
//!    same `VkQueue` (rings may share one: lavapipe has a single queue; compared by
//!    per-queue sequence numbers): it has not started. `NoHang`; the other ring's timeout
//!    judges the job that holds the queue.
//! 3. A lost generation of the device still runs work its hardware has not passed
//!    (`DeviceShared::lost_busy`): the job may be waiting behind it on the same physical
//!    device (an injected loss leaves that work running, and lavapipe runs the dispatches of
//!    every `VkDevice` of a physical device on one thread pool). `NoHang`, at most
//!    [`STUCK_AFTER`] times per ring and generation, so that a lost generation wedged for
//!    good delays the blame of a real hang by a few timeouts and never prevents it.
//! 4. The previous timeout answered 2 or 3: the head started at most one timeout ago, when
//!    what it waited for finished. `NoHang`; the next timeout judges it as usual.
//! 5. The semaphore stands where it stood at this ring's previous timeout, with work
//!    pending: the hardware is still on the submission that timed out then (already
//!    force-completed), and the head has not started. `NoHang`, after releasing the injected
//!    hangs of force-completed submissions ahead of it. After [`STUCK_AFTER`] such timeouts
//!    in a row (or a counter read that reports the device lost) the ring is stuck on
//!    something nothing in the process can release: every job of the ring ends
//!    `DeviceLost`, the generation is declared lost (see [`recovery`](crate::recovery)) and
//!    recreated ([`TimeoutStatus::Reset`]).
//! 6. The hardware moved but is still on an earlier submission of this ring (a job
//!    force-completed while queued, such as a dependant of an earlier guilty job): `NoHang`,
//!    after releasing the injected hangs ahead of the guilty job.
//! 7. Otherwise the guilty job hangs: it is blamed (karma; a banned entity's jobs end
//!    `Cancelled`) and force-completed `TimedOut`, the jobs of the ring that depend on it
//!    end with its error ([`Recovery::fail_dependants`]: they would run on its missing
//!    results), and an injected releasable hang is released: `Reset`.
//!
//! The innocent jobs behind a blamed one are still queued on the `VkQueue` with valid
//! command buffers: they complete by themselves once it is released (or finishes, for a slow
//! job), and their hardware fences, reattached by the restart, retire them. A job slower than
//! `STUCK_AFTER + 1` timeouts is indistinguishable from a hang and costs a device generation.
//! The state these rules carry from one timeout to the next is [`StallState`].

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use ash::vk;
use gpusched::fence::FenceError;
use gpusched::{Recovery, TimeoutStatus};

use super::hw::RingHw;
use super::VulkanRing;
use crate::fault;
use crate::sync::lock;

/// Consecutive timeouts without hardware progress after which the ring is stuck for good
/// (a hang nothing can release): the device generation is declared lost. A job slower than
/// `STUCK_AFTER + 1` timeouts is indistinguishable from such a hang.
pub(crate) const STUCK_AFTER: u32 = 2;

/// What the timeout handler remembers between a ring's timeouts (one per `RingHw`: a new
/// generation starts afresh). Read and written only by the timeout handler; atomics, so that
/// it takes no lock for them.
#[derive(Debug)]
pub(super) struct StallState {
    /// The semaphore value at this ring's last timeout (`u64::MAX`: none yet): a timeout that
    /// finds it unchanged, with work pending, means the hardware made no progress since.
    pub(super) counter: AtomicU64,
    /// Consecutive timeouts that found no progress.
    pub(super) stalls: AtomicU32,
    /// The last timeout found the head queued behind another ring's submission (or behind a
    /// lost generation's work): the next one, if that submission has finished, gives the
    /// head a whole timeout (it may have just started).
    pub(super) behind: AtomicBool,
    /// Timeouts of this ring answered `NoHang` because a lost generation of its device still
    /// ran work on the hardware (`DeviceShared::lost_busy`): at most [`STUCK_AFTER`] over the
    /// ring's life (one generation), so that a lost generation wedged for good delays the
    /// blame of a real hang here a few timeouts, never forever.
    pub(super) lost_waits: AtomicU32,
}

impl Default for StallState {
    fn default() -> Self {
        StallState {
            counter: AtomicU64::new(u64::MAX),
            stalls: AtomicU32::new(0),
            behind: AtomicBool::new(false),
            lost_waits: AtomicU32::new(0),
        }
    }
}

impl RingHw {
    /// The queue sequence number of the submission that carries job value `value` (`None`:
    /// not submitted, or already seen complete).
    pub(super) fn queue_seq_of(&self, value: u64) -> Option<u64> {
        let st = lock(&self.state);
        st.submissions.iter().find(|s| s.value >= value).map(|s| s.queue_seq)
    }

    /// Whether an earlier submission of this ring than the one carrying job value `value` is
    /// unfinished (the job has not started: the ring runs in order). Allocation-free.
    pub(super) fn behind_own_submission(&self, value: u64) -> bool {
        let Ok(done) = self.counter() else { return false };
        let st = lock(&self.state);
        st.submissions.iter().find(|s| s.value > done).is_some_and(|s| s.value < value)
    }

    /// Releases the injected (releasable) hangs of this ring's unfinished submissions before
    /// the one carrying job value `value`: jobs force-completed while still queued (the
    /// dependants of a blamed job, `Recovery::fail_dependants`), whose hang no timeout of
    /// their own will release, and which the jobs behind them wait for. Allocation-free.
    /// Without the `fault-injection` feature there are none: a constant early return.
    pub(super) fn release_hangs_before(&self, value: u64) {
        if !fault::ENABLED {
            return;
        }
        let Ok(done) = self.counter() else { return };
        // One at a time, in submission order, the ring lock not held (a host signal): the
        // validation layer wants each signal at most one past a pending wait.
        let mut from = done;
        loop {
            let next = {
                let st = lock(&self.state);
                st.submissions
                    .iter()
                    .find(|s| s.value > from && s.value < value)
                    .map(|s| (s.value, s.hang))
            };
            let Some((v, hang)) = next else { return };
            if let Some(h) = hang.value() {
                self.core.release_hang(h);
            }
            from = v;
        }
    }

    /// The queue sequence number of this ring's oldest submission the hardware has not
    /// finished (`None`: none).
    pub(super) fn oldest_unfinished_seq(&self) -> Option<u64> {
        let done = self.counter().ok()?;
        let st = lock(&self.state);
        st.submissions.iter().find(|s| s.value > done).map(|s| s.queue_seq)
    }

    /// Whether the submission carrying job value `value` waits behind an unfinished earlier
    /// submission of another ring on the same `VkQueue` (it has not started: queues run in
    /// order and every non-empty command buffer starts with a full barrier; an empty job has
    /// nothing of its own to run). Allocation-free.
    pub(super) fn behind_another_ring(&self, value: u64) -> bool {
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
}

impl VulkanRing {
    /// The body of `timedout_job` (see the module docs).
    pub(super) fn judge_timeout(&self, recovery: &mut Recovery<'_, Self>) -> TimeoutStatus {
        recovery.stop();
        let (hw, hang, value) = recovery
            .with_guilty_payload(|j| (j.sub.hw.clone(), j.fault.releasable_hang(), j.sub.value))
            .unwrap_or((None, None, 0));
        // The ring the guilty job runs on (reference counts only: no allocation, and never
        // the last reference: the job, the slot or the graveyard holds it).
        let hw = hw.unwrap_or_else(|| lock(&self.slot.current).clone());
        // Case 1. Completed: its fence signalled, or the hardware passed it and the ring's drain
        // (which alone signals its fences, in order) has not got to it yet.
        if recovery.guilty_completed() || (value != 0 && hw.counter().is_ok_and(|c| c >= value)) {
            recovery.start();
            return TimeoutStatus::NoHang;
        }
        if value != 0 && hw.behind_another_ring(value) {
            // Case 2. Queued behind another ring's unfinished submission on the shared `VkQueue`:
            // it has not started. That ring's own timeout deals with its job; wait another
            // timeout.
            hw.stall.behind.store(true, Ordering::SeqCst);
            recovery.start();
            return TimeoutStatus::NoHang;
        }
        if value != 0
            && self.slot.shared.lost_busy.load(Ordering::SeqCst)
            && hw.stall.lost_waits.fetch_add(1, Ordering::SeqCst) < STUCK_AFTER
        {
            // Case 3. A lost generation of this device still runs work (an injected loss leaves it
            // running; lavapipe runs the dispatches of every `VkDevice` of a physical device
            // on one thread pool): the guilty job may be queued behind it on the hardware
            // and not have started. Not its fault: wait another timeout (bounded: see
            // `StallState::lost_waits`), then give it a whole one (it may have just started).
            hw.stall.behind.store(true, Ordering::SeqCst);
            recovery.start();
            return TimeoutStatus::NoHang;
        }
        if hw.stall.behind.swap(false, Ordering::SeqCst) {
            // Case 4. It was behind at the last timeout: it started at most one timeout ago.
            recovery.start();
            return TimeoutStatus::NoHang;
        }
        let stalls = match hw.counter() {
            Err(vk::Result::ERROR_DEVICE_LOST) => STUCK_AFTER,
            Ok(c) => {
                let before = hw.stall.counter.swap(c, Ordering::SeqCst);
                if before == c && hw.submitted.load(Ordering::SeqCst) > c {
                    hw.stall.stalls.fetch_add(1, Ordering::SeqCst) + 1
                } else {
                    hw.stall.stalls.store(0, Ordering::SeqCst);
                    0
                }
            }
            Err(_) => 0,
        };
        if stalls >= STUCK_AFTER {
            // Case 5, stuck. No hardware progress across several timeouts: stuck on a submission
            // nothing in the process can release. The job at the head is not the culprit (the one
            // that timed out first was, and was blamed then). Every job on the ring ends
            // `DeviceLost`, the generation is lost and recreated.
            hw.stall.stalls.store(0, Ordering::SeqCst);
            recovery.force_complete_all(FenceError::DeviceLost);
            hw.core.mark_lost();
            recovery.start();
            return TimeoutStatus::Reset;
        }
        if stalls > 0 {
            // Case 5. The hardware is still on the submission that timed out last time (force-
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
            // Case 6. The hardware made progress, but is still on an earlier submission of this
            // ring (a job force-completed while it still runs: a dependant of an earlier guilty
            // job, `fail_dependants`): the guilty job has not started. Wait another timeout,
            // releasing the injected hangs ahead of it (as in case 5).
            hw.release_hangs_before(value);
            recovery.start();
            return TimeoutStatus::NoHang;
        }
        // Case 7: the guilty job hangs.
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
}
