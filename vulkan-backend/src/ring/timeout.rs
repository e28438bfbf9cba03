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
    /// `done`: the semaphore counter the caller read.
    pub(super) fn behind_own_submission(&self, done: u64, value: u64) -> bool {
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

/// What one timeout observes of the ring, gathered before anything is decided (one read of
/// the semaphore counter), so that [`decide`] is a pure function of it and [`Stall`].
#[derive(Clone, Copy, Debug)]
pub(super) struct TimeoutView {
    /// The guilty job's value on the ring (0: it has no submission).
    pub(super) value: u64,
    /// Its finished fence signalled.
    pub(super) guilty_completed: bool,
    /// The semaphore counter (`Err`: the read failed).
    pub(super) counter: Result<u64, vk::Result>,
    /// The highest value submitted on the ring.
    pub(super) submitted: u64,
    /// Its submission is queued behind an unfinished earlier submission of another ring on
    /// the same `VkQueue` ([`RingHw::behind_another_ring`]).
    pub(super) behind_another_ring: bool,
    /// An earlier submission of this ring is unfinished ([`RingHw::behind_own_submission`]).
    pub(super) behind_own_submission: bool,
    /// A lost generation of the device still runs work (`DeviceShared::lost_busy`).
    pub(super) lost_busy: bool,
}

/// [`StallState`] as plain values, for [`decide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stall {
    /// See [`StallState::counter`].
    pub(super) counter: u64,
    /// See [`StallState::stalls`].
    pub(super) stalls: u32,
    /// See [`StallState::behind`].
    pub(super) behind: bool,
    /// See [`StallState::lost_waits`].
    pub(super) lost_waits: u32,
}

impl Default for Stall {
    fn default() -> Self {
        Stall { counter: u64::MAX, stalls: 0, behind: false, lost_waits: 0 }
    }
}

impl StallState {
    /// The current values. Only the timeout handler reads and writes them, one timeout of a
    /// ring at a time, so a load, [`decide`] and a [`store`](Self::store) do not race.
    fn load(&self) -> Stall {
        Stall {
            counter: self.counter.load(Ordering::SeqCst),
            stalls: self.stalls.load(Ordering::SeqCst),
            behind: self.behind.load(Ordering::SeqCst),
            lost_waits: self.lost_waits.load(Ordering::SeqCst),
        }
    }

    fn store(&self, s: Stall) {
        self.counter.store(s.counter, Ordering::SeqCst);
        self.stalls.store(s.stalls, Ordering::SeqCst);
        self.behind.store(s.behind, Ordering::SeqCst);
        self.lost_waits.store(s.lost_waits, Ordering::SeqCst);
    }
}

/// The case of the module docs that applies to a timeout, in their order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Case 1: the guilty job completed after all.
    Completed,
    /// Case 2: queued behind another ring's unfinished submission on the same `VkQueue`.
    BehindAnotherRing,
    /// Case 3: a lost generation of the device still runs work.
    BehindLostGeneration,
    /// Case 4: the last timeout found it behind; it started at most one timeout ago.
    StartedRecently,
    /// Case 5: no hardware progress since the last timeout; the head has not started.
    Stalled,
    /// Case 5, [`STUCK_AFTER`] times in a row (or the counter read reports the device
    /// lost): stuck for good.
    Stuck,
    /// Case 6: the hardware moved, but is still on an earlier submission of this ring.
    BehindOwnSubmission,
    /// Case 7: the guilty job hangs.
    Hangs,
}

/// The timeout decision of the module docs, as a pure function of what the timeout observed
/// and what the ring's earlier timeouts left in `stall` (updated in place).
pub(super) fn decide(view: &TimeoutView, stall: &mut Stall) -> Verdict {
    let submitted_job = view.value != 0;
    if view.guilty_completed || (submitted_job && view.counter.is_ok_and(|c| c >= view.value)) {
        return Verdict::Completed;
    }
    if submitted_job && view.behind_another_ring {
        stall.behind = true;
        return Verdict::BehindAnotherRing;
    }
    if submitted_job && view.lost_busy {
        let waited = stall.lost_waits;
        stall.lost_waits = waited.saturating_add(1);
        if waited < STUCK_AFTER {
            stall.behind = true;
            return Verdict::BehindLostGeneration;
        }
    }
    if std::mem::take(&mut stall.behind) {
        return Verdict::StartedRecently;
    }
    let stalls = match view.counter {
        Err(vk::Result::ERROR_DEVICE_LOST) => STUCK_AFTER,
        Ok(c) => {
            let before = std::mem::replace(&mut stall.counter, c);
            if before == c && view.submitted > c {
                stall.stalls = stall.stalls.saturating_add(1);
            } else {
                stall.stalls = 0;
            }
            stall.stalls
        }
        Err(_) => 0,
    };
    if stalls >= STUCK_AFTER {
        stall.stalls = 0;
        return Verdict::Stuck;
    }
    if stalls > 0 {
        return Verdict::Stalled;
    }
    if submitted_job && view.behind_own_submission {
        return Verdict::BehindOwnSubmission;
    }
    Verdict::Hangs
}

impl VulkanRing {
    /// The body of `timedout_job` (see the module docs): observes, [`decide`]s, acts.
    pub(super) fn judge_timeout(&self, recovery: &mut Recovery<'_, Self>) -> TimeoutStatus {
        recovery.stop();
        let (hw, hang, value) = recovery
            .with_guilty_payload(|j| (j.sub.hw.clone(), j.fault.releasable_hang(), j.sub.value))
            .unwrap_or((None, None, 0));
        // The ring the guilty job runs on (reference counts only: no allocation, and never
        // the last reference: the job, the slot or the graveyard holds it).
        let hw = hw.unwrap_or_else(|| lock(&self.slot.current).clone());
        let counter = hw.counter();
        let view = TimeoutView {
            value,
            guilty_completed: recovery.guilty_completed(),
            counter,
            submitted: hw.submitted.load(Ordering::SeqCst),
            behind_another_ring: value != 0 && hw.behind_another_ring(value),
            behind_own_submission: value != 0
                && counter.is_ok_and(|done| hw.behind_own_submission(done, value)),
            lost_busy: self.slot.shared.lost_busy.load(Ordering::SeqCst),
        };
        let mut stall = hw.stall.load();
        let verdict = decide(&view, &mut stall);
        hw.stall.store(stall);
        let status = match verdict {
            Verdict::Completed
            | Verdict::BehindAnotherRing
            | Verdict::BehindLostGeneration
            | Verdict::StartedRecently => TimeoutStatus::NoHang,
            Verdict::Stalled | Verdict::BehindOwnSubmission => {
                // A force-completed submission ahead of the head that waits on an injected
                // hang is released (a real hang stays, and the ring ends up stuck).
                if value != 0 {
                    hw.release_hangs_before(value);
                }
                TimeoutStatus::NoHang
            }
            Verdict::Stuck => {
                // The job at the head is not the culprit (the one that timed out first was,
                // and was blamed then). Every job on the ring ends `DeviceLost`, the
                // generation is lost and recreated.
                recovery.force_complete_all(FenceError::DeviceLost);
                hw.core.mark_lost();
                TimeoutStatus::Reset
            }
            Verdict::Hangs => {
                recovery.blame();
                recovery.force_complete_guilty(FenceError::TimedOut);
                // Nothing is resubmitted, so the scheduler's resubmission never fails the
                // jobs queued behind the guilty one that depend on it (on this ring): they
                // would run on its missing results and end `Ok`. They end with its error
                // now; their command buffers still run, and are retired once the semaphore
                // passes them (`free_job`).
                recovery.fail_dependants();
                if let Some(v) = hang {
                    // An injected hang: release it; the guilty job then runs (late), and so
                    // do the jobs queued behind it.
                    hw.core.release_hang(v);
                }
                TimeoutStatus::Reset
            }
        };
        recovery.start();
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guilty job of value 5 on a ring that submitted up to 8, the hardware at 3.
    fn view() -> TimeoutView {
        TimeoutView {
            value: 5,
            guilty_completed: false,
            counter: Ok(3),
            submitted: 8,
            behind_another_ring: false,
            behind_own_submission: false,
            lost_busy: false,
        }
    }

    #[test]
    fn a_job_that_completed_after_all_is_no_hang() {
        let mut stall = Stall::default();
        let signalled = TimeoutView { guilty_completed: true, ..view() };
        assert_eq!(decide(&signalled, &mut stall), Verdict::Completed);
        let passed = TimeoutView { counter: Ok(5), ..view() };
        assert_eq!(decide(&passed, &mut stall), Verdict::Completed);
        assert_eq!(stall, Stall::default(), "nothing to remember");
    }

    #[test]
    fn a_job_behind_another_ring_gets_one_more_whole_timeout() {
        let mut stall = Stall::default();
        let behind = TimeoutView { behind_another_ring: true, ..view() };
        assert_eq!(decide(&behind, &mut stall), Verdict::BehindAnotherRing);
        assert_eq!(decide(&view(), &mut stall), Verdict::StartedRecently);
        assert!(!stall.behind);
        // The hardware moved since (the other ring's job finished): the job itself hangs.
        assert_eq!(decide(&TimeoutView { counter: Ok(4), ..view() }, &mut stall), Verdict::Hangs);
    }

    #[test]
    fn a_wedged_lost_generation_delays_the_blame_a_bounded_number_of_timeouts() {
        let mut stall = Stall::default();
        let lost = TimeoutView { lost_busy: true, ..view() };
        let mut verdicts = Vec::new();
        for c in 0..10 {
            // The hardware moves every time: only the lost generation keeps it from a verdict.
            let v = decide(&TimeoutView { counter: Ok(c.min(4)), ..lost }, &mut stall);
            verdicts.push(v);
            if v == Verdict::Hangs {
                break;
            }
        }
        let waits = verdicts.iter().filter(|v| **v == Verdict::BehindLostGeneration).count();
        assert_eq!(waits as u32, STUCK_AFTER);
        assert_eq!(verdicts.last(), Some(&Verdict::Hangs), "{verdicts:?}");
        assert!(verdicts.len() <= STUCK_AFTER as usize + 2, "{verdicts:?}");
    }

    #[test]
    fn a_ring_without_progress_is_stuck_after_stuck_after_stalls() {
        let mut stall = Stall::default();
        // The first timeout: the guilty job is blamed.
        assert_eq!(decide(&view(), &mut stall), Verdict::Hangs);
        // The hardware is still on it: the jobs behind it are not blamed.
        for _ in 1..STUCK_AFTER {
            assert_eq!(decide(&view(), &mut stall), Verdict::Stalled);
        }
        assert_eq!(decide(&view(), &mut stall), Verdict::Stuck);
        assert_eq!(stall.stalls, 0, "the next generation starts afresh");
    }

    #[test]
    fn a_slow_ring_that_keeps_moving_is_never_stuck() {
        let mut stall = Stall::default();
        for i in 0..10 {
            let moving = TimeoutView { value: 50 + i, counter: Ok(i), submitted: 100, ..view() };
            let v = decide(&moving, &mut stall);
            assert_eq!(v, Verdict::Hangs, "timeout {i}: progress is never a stall");
        }
        assert_eq!(stall.stalls, 0);
    }

    #[test]
    fn a_counter_read_that_reports_the_loss_is_stuck_at_once() {
        let mut stall = Stall::default();
        let lost = TimeoutView { counter: Err(vk::Result::ERROR_DEVICE_LOST), ..view() };
        assert_eq!(decide(&lost, &mut stall), Verdict::Stuck);
        // Another read failure is no evidence of a stall: the job is judged on its own.
        let failed = TimeoutView { counter: Err(vk::Result::ERROR_UNKNOWN), ..view() };
        assert_eq!(decide(&failed, &mut stall), Verdict::Hangs);
    }

    #[test]
    fn a_job_behind_its_own_rings_earlier_submission_is_no_hang() {
        let mut stall = Stall::default();
        let behind = TimeoutView { behind_own_submission: true, ..view() };
        assert_eq!(decide(&behind, &mut stall), Verdict::BehindOwnSubmission);
        // Without a submission the ring-position rules do not apply.
        let unsubmitted = TimeoutView { value: 0, behind_another_ring: true, ..behind };
        assert_eq!(decide(&unsubmitted, &mut Stall::default()), Verdict::Hangs);
    }

    #[test]
    fn an_idle_counter_is_not_a_stall() {
        let mut stall = Stall::default();
        // Everything submitted has passed (the guilty job has no submission).
        let idle = TimeoutView { value: 0, counter: Ok(8), ..view() };
        assert_eq!(decide(&idle, &mut stall), Verdict::Hangs);
        assert_eq!(decide(&idle, &mut stall), Verdict::Hangs);
        assert_eq!(stall.stalls, 0);
    }
}
