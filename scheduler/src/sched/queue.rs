//! Entity slots and their queues: registration and the reservations made at arm time, push,
//! armed jobs dropped unpushed, priority changes, and wakes of slots waiting on an event.
//!
//! Relies on: arming (outside any section) reserving every entry a job will need (queue,
//! pending and free lists), so a push and everything after it never allocate; an entity's
//! jobs pushed or dropped in the order they were armed.

use std::collections::VecDeque;

use gpusched_fence::FenceError;

use super::{EntitySlot, SchedShared};
use crate::backend::Backend;
use crate::config::{Policy, Priority};
use crate::entity::EntityShared;
use crate::job::{state, JobInner};
use crate::ready::Link;
use crate::sync::{lock, Arc, Ordering};

impl<B: Backend> SchedShared<B> {
    /// Queues a pushed job on its slot (capacity reserved at arm) and pumps.
    pub(crate) fn push(self: &Arc<Self>, job: Arc<JobInner<B>>) {
        let slot = job.slot;
        let before = job.entity.pushed_seqno.fetch_max(job.info.seqno, Ordering::AcqRel);
        if before > job.info.seqno {
            pushed_out_of_order(job.info.seqno, before);
        }
        // Before it is queued (a flush waits for the fence either way): the job's handle
        // then moves into the queue.
        job.entity.note_pushed(job.info.seqno, &job.scheduled);
        let id = job.info.id;
        let stopped = {
            let mut st = lock(&self.state);
            // Read under the state lock: `shutdown` sets it before taking the lock to drain
            // the queues, so a job is either drained or sees the error. A killed entity's
            // job is queued and cancelled by selection, in timeline order.
            let stopped = self.gone_error();
            let fair = self.config.policy == Policy::Fair;
            let min_v = fair.then_some(st.ready.fair_floor);
            let seq = st.submit_seq;
            st.submit_seq += 1;
            let s = &mut st.slots[slot];
            s.armed -= 1;
            if s.queue.is_empty() && stopped.is_none() {
                if let Some(v) = min_v {
                    // A waking entity does not get credit for the time it slept.
                    s.vruntime = s.vruntime.max(v);
                }
            }
            // Queued even when the scheduler is gone: selection then cancels it after the
            // entity's earlier jobs, in timeline order.
            job.submit_order.store(seq, Ordering::Relaxed);
            job.state.store(state::QUEUED, Ordering::Release);
            s.queue.push_back(job);
            st.on_queued(slot);
            self.load.fetch_add(1, Ordering::Relaxed);
            stopped
        };
        diag!(trace, target: "gpusched", sched = self.name(), job = id, ?stopped, "queued");
        self.pump();
    }

    /// An armed job was dropped unpushed: it is queued marked `DROPPED` (into the room
    /// reserved at arm) so that selection cancels it after the entity's earlier jobs, in
    /// timeline order.
    pub(crate) fn drop_armed(self: &Arc<Self>, job: Arc<JobInner<B>>) {
        let slot = job.slot;
        job.entity.pushed_seqno.fetch_max(job.info.seqno, Ordering::AcqRel);
        let queued = {
            let mut st = lock(&self.state);
            match st.slots.get_mut(slot) {
                Some(s) => {
                    s.armed -= 1;
                    job.state.store(state::DROPPED, Ordering::Release);
                    s.queue.push_back(job.clone());
                    st.on_queued(slot);
                    self.load.fetch_add(1, Ordering::Relaxed);
                    true
                }
                None => false,
            }
        };
        job.entity.note_pushed(job.info.seqno, &job.scheduled);
        if !queued {
            self.cancel(&job, FenceError::Cancelled);
        }
        // A queued job of this scheduler may depend on it (same-scheduler dependencies are
        // checked at selection, not by callback): let selection see the failure.
        self.pump();
    }

    /// Registers an entity's slot (allocates; at arm time).
    pub(crate) fn add_slot(&self, entity: Arc<EntityShared<B>>) -> usize {
        let mut st = lock(&self.state);
        let priority = entity.priority();
        let vruntime = st.ready.fair_floor;
        let context = entity.finished_ctx.id();
        let key = st.slots.insert(EntitySlot {
            entity,
            queue: VecDeque::new(),
            armed: 0,
            vruntime,
            priority,
            link: Link::Idle,
        });
        st.by_context.insert(context, key);
        st.reserve_lists(priority.index());
        key
    }

    /// Moves a slot to the run queue of `priority` (`Entity::set_priority`); its queue keeps
    /// its order. May allocate (room in the new run queue).
    pub(crate) fn set_slot_priority(&self, key: usize, priority: Priority) {
        let mut st = lock(&self.state);
        let Some(slot) = st.slots.get(key) else { return };
        let (old, link) = (slot.priority, slot.link);
        if old == priority {
            return;
        }
        if link == Link::Ready {
            st.unlink(key);
        }
        st.slots[key].priority = priority;
        st.reserve_lists(priority.index());
        if link == Link::Ready {
            st.link_ready(key, false);
        }
    }

    /// Removes an idle entity's slot.
    pub(crate) fn remove_slot(&self, key: usize) {
        let mut st = lock(&self.state);
        st.unlink(key);
        let removed = st.slots.try_remove(key);
        if let Some(slot) = &removed {
            let context = slot.entity.finished_ctx.id();
            if st.by_context.get(&context) == Some(&key) {
                st.by_context.remove(&context);
            }
        }
        drop(st);
        // The slot (and perhaps the last reference to its entity) drops outside the lock.
        drop(removed);
    }

    /// The last external dependency of `job` signalled: if its entity waits for it, it is
    /// ready again. Allocation-free (a dependency callback).
    pub(crate) fn wake_external(&self, job: &JobInner<B>) {
        let mut st = lock(&self.state);
        let waiting = st.slots.get(job.slot).is_some_and(|s| {
            matches!(s.link, Link::External(_))
                && s.queue.front().is_some_and(|h| std::ptr::eq(Arc::as_ptr(h), job))
        });
        if waiting {
            st.wake(job.slot);
        }
    }

    /// Makes slot `key` ready if it is blocked (its entity was stopped: its head ends now).
    pub(crate) fn wake_slot(&self, key: usize) {
        lock(&self.state).wake(key);
    }

    /// Records an event that may end a ring wait (see `ready.rs`), after it happened.
    pub(crate) fn note_progress(&self) {
        lock(&self.state).ready.progress += 1;
    }

    /// Reserves room for one more armed job (allocates; at arm time, outside any section): a
    /// slot in its entity's queue, an entry on the pending list (which holds at most one job
    /// per credit) and one on the free list.
    pub(crate) fn reserve_armed(&self, key: usize) {
        let mut st = lock(&self.state);
        let s = &mut st.slots[key];
        s.armed += 1;
        let need = s.armed;
        s.queue.reserve(need);
        st.jobs += 1;
        let limit = usize::try_from(self.config.credit_limit).unwrap_or(usize::MAX);
        let pending = st.jobs.min(limit);
        let extra = pending.saturating_sub(st.pending.len());
        st.pending.reserve(extra);
        let extra = st.jobs.saturating_sub(st.to_free.len());
        st.to_free.reserve(extra);
    }
}

#[cold]
#[track_caller]
fn pushed_out_of_order(seqno: u64, later: u64) -> ! {
    panic!(
        "gpusched: job {seqno} of an entity was pushed after its job {later}: an entity's jobs \
         must be pushed (or dropped) in the order they were armed (arm and push under one lock \
         when threads share an entity)"
    )
}
