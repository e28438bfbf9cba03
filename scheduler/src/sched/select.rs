//! Selection (`drm_sched_select_entity`): which job the pump runs or cancels next, by
//! priority, policy and credits.
//!
//! Relies on: the ready lists (`ready.rs`) naming every slot whose head may be selectable;
//! the pending list and the per-entity queues having room reserved at arm, so selection
//! never allocates (the module contract in `mod.rs`); readiness read under the state lock,
//! which selection holds until the chosen job is on the pending list.

use std::time::Instant;

use gpusched_fence::FenceError;

use super::run::Step;
use super::{SchedShared, SchedState};
use crate::backend::Backend;
use crate::config::{Policy, Priority};
use crate::job::{state, Blocker, JobInner, Readiness};
use crate::ready::Link;
use crate::sync::{Arc, Ordering};

/// The top of one run queue, once blocked entities are parked.
enum Top<B: Backend> {
    Empty,
    Ready(usize),
    Cancel(Arc<JobInner<B>>, FenceError),
}

impl<B: Backend> SchedShared<B> {
    /// Picks the next job to run or cancel (`drm_sched_select_entity`). Allocation-free.
    pub(super) fn select(&self, st: &mut SchedState<B>) -> Step<B> {
        if st.stopped {
            return Step::Idle;
        }
        // Same-ring dependencies may have failed without signalling yet (a deferred error):
        // readiness then looks them up on the pending list.
        let deferred_in = (self.deferred.load(Ordering::Acquire) > 0).then_some(&st.pending);
        if st.shut {
            // Shut down or device gone: nothing runs any more; queued jobs end with the
            // scheduler's error, each after its entity's previous job (timeline order).
            let error = self.gone_error().unwrap_or(FenceError::Cancelled);
            for (_, slot) in st.slots.iter_mut() {
                let ready = slot.queue.front().is_some_and(|head| head.prev_signalled());
                if ready {
                    if let Some(job) = slot.queue.pop_front() {
                        self.load.fetch_sub(1, Ordering::Relaxed);
                        let e = match job.readiness(deferred_in) {
                            Readiness::Failed(FenceError::Cancelled) => FenceError::Cancelled,
                            _ => error,
                        };
                        return Step::Cancel(job, e);
                    }
                }
            }
            return Step::Idle;
        }
        let deferred = deferred_in.is_some();
        #[cfg(debug_assertions)]
        st.check_lists();
        st.wake_ring();
        let policy = self.config.policy;
        let mut chosen: Option<(usize, usize)> = None;
        for prio in Priority::ALL {
            let p = prio.index();
            let key = match self.top(st, p, deferred) {
                Top::Empty => continue,
                Top::Cancel(job, e) => return Step::Cancel(job, e),
                Top::Ready(key) => key,
            };
            if policy == Policy::Fair && prio != Priority::Kernel {
                // Fair: Kernel is strict; the others compete on virtual runtime.
                let better =
                    chosen.is_none_or(|(_, c)| st.slots[key].vruntime < st.slots[c].vruntime);
                if better {
                    chosen = Some((p, key));
                }
                continue;
            }
            chosen = Some((p, key));
            break;
        }
        let Some((p, key)) = chosen else { return Step::Idle };
        let Some(credits) = st.slots[key].queue.front().map(|j| j.info.credits) else {
            return Step::Idle;
        };
        if u64::from(st.credits_used) + u64::from(credits) > u64::from(self.config.credit_limit) {
            // Head-of-line: wait for completions rather than let a smaller job overtake.
            return self.cancel_behind(st, p, deferred);
        }
        st.pop_top(p);
        let slot = &mut st.slots[key];
        let Some(job) = slot.queue.pop_front() else {
            slot.link = Link::Idle;
            return Step::Idle;
        };
        let vruntime = slot.vruntime;
        slot.vruntime += u64::from(credits) * slot.priority.fair_weight();
        st.ready.fair_floor = st.ready.fair_floor.max(vruntime);
        // Round-robin: a job ran, so the entity goes to the back of its run queue.
        st.relink_after_pop(key, false);
        // Its entity's dependants on this ring may be ready once it is scheduled (by the next
        // selection, which follows this job's `run` on the pumping thread).
        st.ready.progress += 1;
        st.credits_used += credits;
        // Load counts a queued job as 1 and a job on the ring as its credits (`hw_done`
        // subtracts them): without this a multi-credit job wrapped the counter.
        if credits > 1 {
            self.load.fetch_add(credits as usize - 1, Ordering::Relaxed);
        }
        // The ring was idle: the job's timeout starts now. The worker is told by the run (a
        // job that completes within `run_job` then costs no announcement).
        let deadline = if st.pending.is_empty() {
            st.deadline = self.config.timeout.deadline_from(Instant::now());
            st.deadline
        } else {
            None
        };
        st.pending.push_back(job.clone());
        job.state.store(state::RUNNING, Ordering::Release);
        Step::Run(job, deadline)
    }

    /// The ring is full: FIFO and Fair still end, without waiting for credits, a failed head
    /// job (killed entity, failed dependency) anywhere in the run queues they would have
    /// chosen from (up to priority index `p`; Fair: all but a strict `Kernel` choice), as
    /// their scan of every entity did. O(ready entities), only while the ring is full and
    /// only for those policies (round-robin takes failed heads in rotation order, at the top).
    fn cancel_behind(&self, st: &mut SchedState<B>, p: usize, deferred: bool) -> Step<B> {
        let last = match self.config.policy {
            Policy::RoundRobin => return Step::Idle,
            Policy::Fifo => p,
            Policy::Fair if p == Priority::Kernel.index() => p,
            Policy::Fair => Priority::ALL.len() - 1,
        };
        for q in 0..=last {
            let pending = deferred.then_some(&st.pending);
            let failed = st.ready.queues[q].keys().find_map(|key| {
                let head = st.slots.get(key)?.queue.front()?;
                match head.readiness(pending) {
                    Readiness::Failed(e) if head.prev_signalled() => Some((key, e)),
                    _ => None,
                }
            });
            if let Some((key, e)) = failed {
                let job = st.slots[key].queue.pop_front();
                st.relink_ready(key);
                if let Some(job) = job {
                    self.load.fetch_sub(1, Ordering::Relaxed);
                    return Step::Cancel(job, e);
                }
            }
        }
        Step::Idle
    }

    /// The entity at the top of run queue `p` whose head job may run, parking the blocked
    /// ones it meets on their blocked lists; or a head job to cancel (failed dependency,
    /// killed entity, dropped unpushed), taken off its queue.
    fn top(&self, st: &mut SchedState<B>, p: usize, deferred: bool) -> Top<B> {
        loop {
            let Some(key) = st.ready.queues[p].top() else { return Top::Empty };
            let readiness = match st.slots.get(key).and_then(|s| s.queue.front()) {
                Some(head) => {
                    let pending = deferred.then_some(&st.pending);
                    match head.readiness(pending) {
                        // Ends without running, but not before the entity's previous job
                        // (on the ring now): its completion wakes the entity.
                        Readiness::Failed(_) if !head.prev_signalled() => {
                            Readiness::Blocked(Blocker::Ring)
                        }
                        r => r,
                    }
                }
                None => {
                    // Not expected (an empty queue idles its slot); heal it.
                    st.pop_top(p);
                    if let Some(s) = st.slots.get_mut(key) {
                        s.link = Link::Idle;
                    }
                    continue;
                }
            };
            match readiness {
                Readiness::Ready => return Top::Ready(key),
                Readiness::Blocked(on) => {
                    st.pop_top(p);
                    st.block(key, on);
                }
                Readiness::Failed(e) => {
                    st.pop_top(p);
                    let job = st.slots[key].queue.pop_front();
                    // A cancelled job does not use up the entity's round-robin turn.
                    st.relink_after_pop(key, true);
                    if let Some(job) = job {
                        self.load.fetch_sub(1, Ordering::Relaxed);
                        return Top::Cancel(job, e);
                    }
                }
            }
        }
    }
}
