//! The run queues' ready lists: selection in O(1) (round-robin) or O(log n) (FIFO, fair) in
//! the number of entities, instead of a scan of every entity per job.
//!
//! # Invariants (under the scheduler's state lock)
//! Every entity slot is in exactly one place, recorded in its `link` ([`Link`]):
//! - `Idle`: its queue is empty; in no list.
//! - `Ready`: in the run queue of its priority, once. Its head job may run, or may turn out
//!   blocked or failed when selection looks at it (readiness is only read at selection).
//! - `External(pos)`: at index `pos` of `external`: its head job waits for an external
//!   dependency. The dependency callback that counts the last one down moves it back to
//!   `Ready` (`SchedShared::wake_external`): O(1).
//! - `Ring`: in `ring`: its head job waits for a job of this scheduler (a same-ring
//!   dependency to be scheduled, or the entity's previous job to signal before a failed job
//!   may). Every event that can end such a wait (a job selected to run, a finished fence
//!   signalled, a deferred error set or cleared, an entity stopped) bumps `progress`; the next
//!   selection moves every `Ring` entity back to `Ready`, so it costs O(entities blocked on
//!   the ring) per such event, nothing while none is.
//!
//! A push to an `Idle` entity makes it `Ready`; selection takes a job from the entity at the
//! top of a run queue and then relinks it (`Ready` again if its queue is not empty, else
//! `Idle`), or moves it to a blocked list. After a shutdown (`SchedState::shut`) selection no
//! longer reads the lists: it cancels every queue's jobs in timeline order by scanning the
//! slots, and an entity's `link` may then name a list while its queue is empty.
//!
//! # Order within a priority
//! - [`Policy::RoundRobin`]: a `VecDeque` rotated by selection (a job that ran sends its
//!   entity to the back; a cancelled job leaves it at the front): O(1).
//! - [`Policy::Fifo`]: a binary heap keyed on the head job's push order (global), so the
//!   oldest ready head runs first, exactly: O(log n) per selection.
//! - [`Policy::Fair`]: a binary heap keyed on the entity's virtual runtime (ties: the one
//!   linked first): O(log n). Across priorities, `Kernel` is strict and the tops of the other
//!   three heaps compete on virtual runtime. A waking entity's virtual runtime is raised to
//!   `fair_floor`, the highest virtual runtime selection has seen at a top (CFS's
//!   `min_vruntime`), so it gets no credit for the time it slept.
//!
//! No operation here allocates on the signalling path: the lists hold at most one entry per
//! slot, and their capacity covers every slot (reserved when a slot is added or moves to
//! another priority, outside any signalling section).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::backend::Backend;
use crate::config::Policy;
use crate::sched::SchedState;
use crate::sync::Ordering;

/// Where an entity slot is among the ready lists (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Link {
    Idle,
    Ready,
    External(usize),
    Ring,
}

/// One priority's run queue of ready entity slots.
pub(crate) enum RunQueue {
    /// Round-robin order, front first.
    Rotate(VecDeque<usize>),
    /// Lowest `(rank, link order)` first.
    Ranked(BinaryHeap<Reverse<(u64, u64, usize)>>),
}

impl RunQueue {
    fn new(policy: Policy) -> Self {
        match policy {
            Policy::RoundRobin => RunQueue::Rotate(VecDeque::new()),
            Policy::Fifo | Policy::Fair => RunQueue::Ranked(BinaryHeap::new()),
        }
    }

    /// The slot at the top.
    pub(crate) fn top(&self) -> Option<usize> {
        match self {
            RunQueue::Rotate(q) => q.front().copied(),
            RunQueue::Ranked(h) => h.peek().map(|Reverse((_, _, k))| *k),
        }
    }

    /// The slots, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        let (rotate, ranked) = match self {
            RunQueue::Rotate(q) => (Some(q.iter().copied()), None),
            RunQueue::Ranked(h) => (None, Some(h.iter().map(|Reverse((_, _, k))| *k))),
        };
        rotate.into_iter().flatten().chain(ranked.into_iter().flatten())
    }

    fn pop(&mut self) {
        match self {
            RunQueue::Rotate(q) => {
                q.pop_front();
            }
            RunQueue::Ranked(h) => {
                h.pop();
            }
        }
    }

    fn push(&mut self, key: usize, rank: u64, seq: u64, front: bool) {
        match self {
            RunQueue::Rotate(q) if front => q.push_front(key),
            RunQueue::Rotate(q) => q.push_back(key),
            RunQueue::Ranked(h) => h.push(Reverse((rank, seq, key))),
        }
    }

    /// Removes `key` (O(n); not on the hot path: priority changes, slot removal).
    fn remove(&mut self, key: usize) {
        match self {
            RunQueue::Rotate(q) => q.retain(|k| *k != key),
            RunQueue::Ranked(h) => h.retain(|Reverse((_, _, k))| *k != key),
        }
    }

    /// Makes the capacity at least `n`.
    fn reserve_total(&mut self, n: usize) {
        match self {
            RunQueue::Rotate(q) => q.reserve(n.saturating_sub(q.len())),
            RunQueue::Ranked(h) => h.reserve(n.saturating_sub(h.len())),
        }
    }
}

/// The ready lists of one scheduler (see the module docs). Protected by the state lock.
pub(crate) struct ReadyLists {
    policy: Policy,
    /// Ready slots per priority.
    pub(crate) queues: [RunQueue; 4],
    /// Slots whose head waits for an external dependency (`Link::External` holds the index).
    external: Vec<usize>,
    /// Slots whose head waits for a job of this scheduler.
    ring: Vec<usize>,
    /// Bumped by every event that may end a `Ring` wait.
    pub(crate) progress: u64,
    /// `progress` when `ring` was last woken.
    seen: u64,
    /// Link order, the tie-break of ranked queues.
    seq: u64,
    /// See the module docs (`Policy::Fair`).
    pub(crate) fair_floor: u64,
}

impl ReadyLists {
    pub(crate) fn new(policy: Policy) -> Self {
        ReadyLists {
            policy,
            queues: std::array::from_fn(|_| RunQueue::new(policy)),
            external: Vec::new(),
            ring: Vec::new(),
            progress: 0,
            seen: 0,
            seq: 0,
            fair_floor: 0,
        }
    }
}

impl<B: Backend> SchedState<B> {
    /// Links slot `key` into its priority's run queue (`front`: a round-robin entity keeps
    /// its turn). Allocation-free (capacity reserved per slot).
    pub(crate) fn link_ready(&mut self, key: usize, front: bool) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        let rank = match self.ready.policy {
            Policy::Fifo => {
                slot.queue.front().map_or(u64::MAX, |j| j.submit_order.load(Ordering::Relaxed))
            }
            Policy::Fair => slot.vruntime,
            Policy::RoundRobin => 0,
        };
        slot.link = Link::Ready;
        let p = slot.priority.index();
        self.ready.seq += 1;
        let seq = self.ready.seq;
        self.ready.queues[p].push(key, rank, seq, front);
    }

    /// A job was queued on slot `key`: an idle entity becomes ready.
    pub(crate) fn on_queued(&mut self, key: usize) {
        if self.slots.get(key).is_some_and(|s| s.link == Link::Idle) {
            self.link_ready(key, false);
        }
    }

    /// Takes the entity at the top of run queue `p` off it; the caller relinks or blocks it.
    pub(crate) fn pop_top(&mut self, p: usize) {
        self.ready.queues[p].pop();
    }

    /// After a job was taken from the top entity of run queue `p` (already popped with
    /// [`pop_top`](Self::pop_top)): relinks it if its queue is not empty, else idles it.
    pub(crate) fn relink_after_pop(&mut self, key: usize, front: bool) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        if slot.queue.is_empty() {
            slot.link = Link::Idle;
        } else {
            self.link_ready(key, front);
        }
    }

    /// Parks slot `key` (popped off its run queue) on the blocked list for `on`.
    pub(crate) fn block(&mut self, key: usize, on: crate::job::Blocker) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        match on {
            crate::job::Blocker::External => {
                slot.link = Link::External(self.ready.external.len());
                self.ready.external.push(key);
            }
            crate::job::Blocker::Ring => {
                slot.link = Link::Ring;
                self.ready.ring.push(key);
            }
        }
    }

    /// Takes slot `key` off the external blocked list, if it is there (O(1)).
    fn unblock_external(&mut self, key: usize) -> bool {
        let Some(Link::External(pos)) = self.slots.get(key).map(|s| s.link) else { return false };
        self.ready.external.swap_remove(pos);
        if let Some(&moved) = self.ready.external.get(pos) {
            if let Some(s) = self.slots.get_mut(moved) {
                s.link = Link::External(pos);
            }
        }
        if let Some(s) = self.slots.get_mut(key) {
            s.link = Link::Idle;
        }
        true
    }

    /// Makes a blocked slot ready again: an external wait ends at once, a ring wait at the
    /// next selection (as every ring wait does after an event).
    pub(crate) fn wake(&mut self, key: usize) {
        match self.slots.get(key).map(|s| s.link) {
            Some(Link::External(_)) if self.unblock_external(key) => {
                self.link_ready(key, false);
            }
            Some(Link::Ring) => self.ready.progress += 1,
            _ => {}
        }
    }

    /// If an event happened since the last call, moves every ring-blocked slot back to its
    /// run queue. Allocation-free (the list keeps its buffer).
    pub(crate) fn wake_ring(&mut self) {
        if self.ready.progress == self.ready.seen {
            return;
        }
        self.ready.seen = self.ready.progress;
        let mut ring = std::mem::take(&mut self.ready.ring);
        for key in ring.drain(..) {
            if self.slots.get(key).is_some_and(|s| s.link == Link::Ring) {
                self.link_ready(key, false);
            }
        }
        self.ready.ring = ring;
    }

    /// Takes slot `key`, which is `Ready`, out of its run queue and relinks it (its head
    /// changed off the top: FIFO's rank follows the head).
    pub(crate) fn relink_ready(&mut self, key: usize) {
        self.unlink(key);
        self.relink_after_pop(key, true);
    }

    /// Takes slot `key` out of whichever list holds it (slot removal, priority change): O(n)
    /// in that list, off the hot path, allocation-free.
    pub(crate) fn unlink(&mut self, key: usize) {
        let Some(slot) = self.slots.get(key) else { return };
        let p = slot.priority.index();
        match slot.link {
            Link::Idle => {}
            Link::Ready => self.ready.queues[p].remove(key),
            Link::External(_) => {
                self.unblock_external(key);
            }
            Link::Ring => self.ready.ring.retain(|k| *k != key),
        }
        if let Some(s) = self.slots.get_mut(key) {
            s.link = Link::Idle;
        }
    }

    /// Checks the invariants of the module docs (debug builds, up to 64 slots: it costs
    /// O(slots²)).
    #[cfg(debug_assertions)]
    pub(crate) fn check_lists(&self) {
        if self.slots.len() > 64 {
            return;
        }
        for (key, slot) in self.slots.iter() {
            let p = slot.priority.index();
            let in_queue = match &self.ready.queues[p] {
                RunQueue::Rotate(q) => q.iter().filter(|k| **k == key).count(),
                RunQueue::Ranked(h) => h.iter().filter(|Reverse((_, _, k))| *k == key).count(),
            };
            let others: usize = (0..4)
                .filter(|&o| o != p)
                .map(|o| match &self.ready.queues[o] {
                    RunQueue::Rotate(q) => q.iter().filter(|k| **k == key).count(),
                    RunQueue::Ranked(h) => h.iter().filter(|Reverse((_, _, k))| *k == key).count(),
                })
                .sum();
            let ext = self.ready.external.iter().filter(|k| **k == key).count();
            let ring = self.ready.ring.iter().filter(|k| **k == key).count();
            let ok = match slot.link {
                Link::Idle => slot.queue.is_empty() && in_queue + ext + ring == 0,
                Link::Ready => in_queue == 1 && ext + ring == 0,
                Link::External(pos) => self.ready.external.get(pos) == Some(&key) && ext == 1,
                Link::Ring => ring == 1 && in_queue + ext == 0,
            };
            assert!(ok && others == 0, "slot {key}: {:?}, queue {}, in run queue {in_queue} (others {others}), external {ext}, ring {ring}", slot.link, slot.queue.len());
        }
    }

    /// Reserves list room for every slot, in the run queue of priority index `p` (allocates;
    /// when a slot is added or changes priority, outside any signalling section).
    pub(crate) fn reserve_lists(&mut self, p: usize) {
        let n = self.slots.len();
        self.ready.queues[p].reserve_total(n);
        self.ready.external.reserve(n.saturating_sub(self.ready.external.len()));
        self.ready.ring.reserve(n.saturating_sub(self.ready.ring.len()));
    }
}
