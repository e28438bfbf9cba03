//! [`Fence`] and [`Signaller`]: the shared read side and the unique write side of a one-shot
//! completion (`struct dma_fence`, `drivers/dma-buf/dma-fence.c`).
//!
//! This file is long because the state word's protocol (signal, claim, callbacks, waits,
//! deadlines) is one thing: every path that reads or sets its bits is here, to be read
//! against the table below. Composites, contexts, waits and chains are in their own files.
//!
//! # State
//! The fence's state word holds the bits below. `SIGNALED` is set exactly once, with an AcqRel
//! RMW that also carries the error's tag, after the timestamp (and a driver error's code) were
//! stored by the one thread that signals (the
//! `Signaller`'s, or whoever set `CLAIMED` first on a fence with backend ops); a reader that sees
//! it (Acquire) sees both. The callback lock is taken only when a callback was ever added
//! (`CALLBACKS`): the signaller then takes the list out under it, and runs the callbacks after
//! the lock is released, on the signalling thread, in the order they were added. A fence
//! nobody added a callback to signals with one RMW and no lock.
//!
//! # Contract
//! Signalling enters a signalling section (as `dma_fence_signal` does under lockdep): callbacks
//! run inside it and must not allocate through a reclaiming path, take a `Resv` lock or wait on
//! a fence. Signalling itself never allocates: callback storage is reserved when callbacks are
//! added ([`Fence::reserve_callbacks`], [`Fence::add_prepared_callback`]).

use std::fmt;
use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::callback::Callback;
use crate::context::{seqno_is_later, ContextShared, SeqnoWidth};
use crate::error::{AlreadySignaled, FenceError, WaitError};
use crate::interrupt::InterruptDomain;
use crate::lockdep;
use crate::ops::{FenceOps, OpsWait};
use crate::sync::{
    lock, Arc, AtomicU32, AtomicU64, Event, EventListener, Mutex, MutexGuard, Ordering,
};

/// Set once, when the fence signals (with or without an error), by an AcqRel RMW that also
/// sets the error's tag (`ERROR_MASK`), after `driver_code` and `timestamp_ns` are stored;
/// never cleared.
const SIGNALED: u32 = 1 << 0;
/// Set by the first waiter or callback (`DMA_FENCE_FLAG_ENABLE_SIGNAL_BIT`); whoever sets it
/// calls [`FenceOps::enable_signaling`]. Never cleared.
const ENABLE_SIGNALING: u32 = 1 << 1;
/// Set (AcqRel RMW) by a waiter *after* it registered a listener on `Inner::event` and before
/// it re-checks `SIGNALED`; the signaller sets `SIGNALED` with an AcqRel RMW and notifies only
/// when the previous word had this bit. The two RMWs are totally ordered on the state word:
/// either the signaller sees the bit (and the listener registered before it, so the notify
/// reaches it), or the waiter's RMW comes later and its re-check sees `SIGNALED`. Skipping the
/// notify when nobody listens keeps `signal()` allocation-free: `event_listener::Event::notify`
/// allocates the event's shared state on first use. Never cleared.
const LISTENING: u32 = 1 << 2;
/// Set (AcqRel RMW) by a blocking waiter before it re-checks `SIGNALED` and sleeps on this
/// word (a futex on Linux, `park.rs`); the signaller wakes the word's sleepers when the
/// previous word had this bit. Same total-order argument as `LISTENING`; the sleep compares
/// the word under the kernel's lock and `SIGNALED` changes it before the wake, so a waiter
/// either sees `SIGNALED` or is woken. Never cleared.
#[cfg_attr(gpusched_loom, allow(dead_code))] // loom models the event-listener path only
const PARKED: u32 = 1 << 3;
/// Set (AcqRel RMW, under `Inner::cbs`'s lock) by every callback add before it checks
/// `SIGNALED`; the signaller takes the lock and the list only when the RMW that set `SIGNALED`
/// saw this bit. The RMWs are totally ordered: an add whose RMW came first holds the lock from
/// before its RMW until its push, so the signaller's later lock sees the entry; an add whose RMW
/// came later sees `SIGNALED` and refuses. Never cleared.
const CALLBACKS: u32 = 1 << 4;
/// Set by the thread that will signal a fence with backend ops (several may try: the producer,
/// a backend poll, `enable_signaling`); the first RMW to set it wins and stores the error and
/// timestamp, the others wait for `SIGNALED`. A fence without ops has one signaller (the
/// unique [`Signaller`]) and sets it together with `SIGNALED`. Never cleared.
const CLAIMED: u32 = 1 << 5;

/// The state word's bits that hold the error's tag (`FenceError::encode`'s low three bits;
/// 0 = no error), set by the RMW that sets `SIGNALED`; the tag that stands for
/// `FenceError::Driver` finds its code in `Inner::driver_code`.
const ERROR_SHIFT: u32 = 8;
/// See `ERROR_SHIFT`.
const ERROR_MASK: u32 = 0x7 << ERROR_SHIFT;
/// `FenceError::encode`'s tag of `FenceError::Driver`.
const DRIVER_TAG: u64 = 7;

/// `Inner::deadline_ns` while no deadline was set.
const NO_DEADLINE: u64 = u64::MAX;

/// The process-wide origin of fence timestamps.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Identifies a callback added to one fence, to remove it before the fence signals. It
/// remembers its fence: removing it through another fence is a misuse and panics (ids are
/// numbered per fence, so it would otherwise remove an unrelated callback).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallbackId {
    /// The address of the fence's shared state, to catch ids used on the wrong fence.
    fence: usize,
    /// Numbered from 1, so that `Option<CallbackId>` is no larger than the id.
    id: NonZeroU64,
}

/// The pending callbacks. Protected by `Inner::cbs`.
struct CallbackList {
    /// The next callback's id; starts at 1 (see `CallbackId::id`).
    next_id: NonZeroU64,
    entries: Vec<(u64, Callback)>,
}

pub(crate) struct Inner {
    /// `SIGNALED | ENABLE_SIGNALING | LISTENING | PARKED | CALLBACKS | CLAIMED` and the error's
    /// tag (`ERROR_MASK`), see the constants.
    state: AtomicU32,
    /// The code of a `FenceError::Driver` error; written before `SIGNALED`, never after.
    driver_code: AtomicU32,
    /// The signal time, a count of the timestamp clock (`clock::now_ns`, converted to an
    /// `Instant` only when read); written before `SIGNALED`.
    timestamp_ns: AtomicU64,
    /// The earliest deadline hint (`Fence::set_deadline`), nanoseconds since `epoch()`;
    /// `NO_DEADLINE` while none. Only ever lowered (`fetch_min`).
    deadline_ns: AtomicU64,
    seqno: u64,
    ctx: Arc<ContextShared>,
    /// The callback list; with `CALLBACKS` its lock orders signalling against callback adds and
    /// removals.
    cbs: Mutex<CallbackList>,
    /// Notified (all) after `SIGNALED` is set.
    event: Event,
    ops: Option<Box<dyn FenceOps>>,
}

/// The shared, cloneable read side of a one-shot completion (`struct dma_fence`).
///
/// A fence belongs to a context (timeline) and has a seqno on it. It signals exactly once,
/// possibly with a [`FenceError`]; then its waiters wake and its callbacks run. It is `Send`,
/// `Sync` and cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Fence {
    inner: Arc<Inner>,
}

/// Where a fence is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FenceStatus {
    /// Not signalled yet.
    Pending,
    /// Signalled successfully.
    Signaled,
    /// Signalled with an error.
    Failed(FenceError),
}

impl FenceStatus {
    /// Whether the fence has signalled (successfully or not).
    pub fn is_signaled(&self) -> bool {
        !matches!(self, FenceStatus::Pending)
    }

    /// The error, when the fence failed.
    pub fn error(&self) -> Option<FenceError> {
        match *self {
            FenceStatus::Failed(e) => Some(e),
            _ => None,
        }
    }
}

impl Fence {
    pub(crate) fn new_pending(
        ctx: Arc<ContextShared>,
        seqno: u64,
        ops: Option<Box<dyn FenceOps>>,
    ) -> (Fence, Signaller) {
        let fence = Fence {
            inner: Arc::new(Inner {
                state: AtomicU32::new(0),
                driver_code: AtomicU32::new(0),
                timestamp_ns: AtomicU64::new(0),
                deadline_ns: AtomicU64::new(NO_DEADLINE),
                seqno,
                ctx,
                cbs: Mutex::new(CallbackList { next_id: NonZeroU64::MIN, entries: Vec::new() }),
                event: Event::new(),
                ops,
            }),
        };
        (fence.clone(), Signaller { fence })
    }

    /// A fence that is already signalled, successfully (`dma_fence_get_stub`). Cheap: all
    /// stubs share one allocation.
    pub fn signaled() -> Fence {
        #[cfg(not(gpusched_loom))]
        {
            static STUB: OnceLock<Fence> = OnceLock::new();
            STUB.get_or_init(|| Fence::new_signaled(None)).clone()
        }
        #[cfg(gpusched_loom)]
        {
            Fence::new_signaled(None)
        }
    }

    /// A fence that is already signalled with `error`.
    pub fn failed(error: FenceError) -> Fence {
        Fence::new_signaled(Some(error))
    }

    fn new_signaled(error: Option<FenceError>) -> Fence {
        let (fence, signaller) = Fence::new_pending(ContextShared::stub(), 0, None);
        signaller.signal_result(error.map_or(Ok(()), Err));
        fence
    }

    /// The context (timeline) id.
    pub fn context(&self) -> u64 {
        self.inner.ctx.id
    }

    /// The seqno on the context.
    pub fn seqno(&self) -> u64 {
        self.inner.seqno
    }

    /// The timeline name, for diagnostics.
    pub fn timeline_name(&self) -> &str {
        self.inner.ops.as_ref().and_then(|o| o.timeline_name()).unwrap_or(&self.inner.ctx.name)
    }

    /// The driver name, for diagnostics.
    pub fn driver_name(&self) -> &str {
        match &self.inner.ops {
            Some(o) => o.driver_name(),
            None => self.inner.ctx.driver,
        }
    }

    /// The interrupt domain whose resets interrupt interruptible waits on this fence.
    pub fn interrupt_domain(&self) -> Option<&InterruptDomain> {
        self.inner.ctx.domain.as_ref()
    }

    /// Whether two handles are the same fence.
    pub fn ptr_eq(&self, other: &Fence) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether this fence is later than `other` on the same context, with the context's
    /// wrap-around rule (`dma_fence_is_later`). Fences of different contexts are unordered:
    /// the answer is `false`.
    pub fn is_later(&self, other: &Fence) -> bool {
        self.context() == other.context()
            && seqno_is_later(self.seqno(), other.seqno(), self.inner.ctx.width)
    }

    /// The later of two fences of the same context (`dma_fence_later`); `None` when the
    /// contexts differ.
    pub fn later<'a>(&'a self, other: &'a Fence) -> Option<&'a Fence> {
        if self.context() != other.context() {
            None
        } else if other.is_later(self) {
            Some(other)
        } else {
            Some(self)
        }
    }

    /// The seqno width of the fence's context.
    pub fn seqno_width(&self) -> SeqnoWidth {
        self.inner.ctx.width
    }

    /// Whether the `SIGNALED` bit is set, without asking the backend.
    #[inline]
    fn flag_signaled(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) & SIGNALED != 0
    }

    /// The outcome, if the `SIGNALED` bit is set.
    #[inline]
    fn outcome(&self) -> Option<Result<(), FenceError>> {
        let word = self.inner.state.load(Ordering::Acquire);
        if word & SIGNALED == 0 {
            return None;
        }
        let tag = u64::from((word & ERROR_MASK) >> ERROR_SHIFT);
        let code = if tag == DRIVER_TAG {
            u64::from(self.inner.driver_code.load(Ordering::Relaxed)) << 32
        } else {
            0
        };
        Some(match FenceError::decode(tag | code) {
            None => Ok(()),
            Some(e) => Err(e),
        })
    }

    /// The outcome, polling the backend (and signalling on its word) when the bit is clear.
    fn poll_outcome(&self) -> Option<Result<(), FenceError>> {
        if let Some(r) = self.outcome() {
            return Some(r);
        }
        if self.is_signaled() {
            self.outcome()
        } else {
            None
        }
    }

    /// Whether the fence has signalled (successfully or not). Asks the backend
    /// ([`FenceOps::signaled`]) when the fence is not yet marked, and signals it if the
    /// hardware is done (`dma_fence_is_signaled`).
    pub fn is_signaled(&self) -> bool {
        if self.flag_signaled() {
            return true;
        }
        match &self.inner.ops {
            Some(ops) if ops.signaled() => {
                self.signal_internal(None);
                true
            }
            // A poll may have signalled the fence another way (a composite's members).
            Some(_) => self.flag_signaled(),
            None => false,
        }
    }

    /// The fence's status (`dma_fence_get_status`), polling the backend.
    pub fn status(&self) -> FenceStatus {
        match self.poll_outcome() {
            None => FenceStatus::Pending,
            Some(Ok(())) => FenceStatus::Signaled,
            Some(Err(e)) => FenceStatus::Failed(e),
        }
    }

    /// The error the fence signalled with, if it has signalled with one.
    pub fn error(&self) -> Option<FenceError> {
        self.status().error()
    }

    /// When the fence signalled, if it has: read from the clock when it signalled, and stable
    /// once set. On Linux the signal stores the raw `CLOCK_MONOTONIC` reading (the clock
    /// `Instant` reads there) and this maps it onto an `Instant` by a fixed offset calibrated
    /// once, so timestamps keep the clock's exact order and spacing, and compare with
    /// `Instant`s the caller read to within that calibration (tens of nanoseconds at worst).
    pub fn timestamp(&self) -> Option<Instant> {
        if self.flag_signaled() {
            Some(crate::clock::to_instant(self.inner.timestamp_ns.load(Ordering::Relaxed)))
        } else {
            None
        }
    }

    /// Starts lazy signalling once (`dma_fence_enable_sw_signaling`): calls
    /// [`FenceOps::enable_signaling`] the first time, and signals if it reports completion.
    pub fn enable_signaling(&self) {
        let prev = self.inner.state.fetch_or(ENABLE_SIGNALING, Ordering::AcqRel);
        if prev & (ENABLE_SIGNALING | SIGNALED) == 0 {
            if let Some(ops) = &self.inner.ops {
                if !ops.enable_signaling() {
                    self.signal_internal(None);
                }
            }
        }
    }

    /// Tells the fence's producer that a waiter needs it by `deadline`
    /// (`dma_fence_set_deadline`), e.g. to boost clocks. Advisory only; no effect on a
    /// signalled fence.
    ///
    /// The earliest deadline wins: the fence remembers it ([`Fence::deadline`]), and a hint
    /// later than one set before is ignored. A hint that lowers the deadline reaches, in this
    /// order, the backend ([`FenceOps::set_deadline`]; arrays, chains, timeline points and
    /// merge results pass it on to their component fences) and the deadline hook of the
    /// fence's context ([`FenceContextBuilder::on_deadline`](crate::FenceContextBuilder::on_deadline)),
    /// both on the calling thread (setters on several threads may reach them out of order;
    /// [`Fence::deadline`] is always the earliest). Never allocates.
    ///
    /// On a `gpusched` job's finished fence the scheduler passes the deadline on to the job's
    /// hardware fence (what the backend's `run_job` returned): at once if the job runs, else
    /// when it reaches the hardware (`drm_sched_fence_set_deadline_finished`); the Vulkan
    /// backend records it per ring.
    pub fn set_deadline(&self, deadline: Instant) {
        if self.flag_signaled() {
            return;
        }
        let ns = deadline.saturating_duration_since(epoch()).as_nanos();
        let ns = u64::try_from(ns).unwrap_or(NO_DEADLINE - 1);
        let prev = self.inner.deadline_ns.fetch_min(ns, Ordering::AcqRel);
        if ns >= prev {
            return; // an earlier (or the same) deadline was set before
        }
        if let Some(ops) = &self.inner.ops {
            ops.set_deadline(deadline);
        }
        if let Some(hook) = &self.inner.ctx.deadline_hook {
            hook(self, deadline);
        }
    }

    /// The earliest deadline set on the fence ([`Fence::set_deadline`]), at nanosecond
    /// resolution; `None` while none was set. Kept after the fence signals. The producer of a
    /// plain fence polls it (through [`Signaller::deadline`]) or is told through its
    /// context's deadline hook.
    pub fn deadline(&self) -> Option<Instant> {
        match self.inner.deadline_ns.load(Ordering::Acquire) {
            NO_DEADLINE => None,
            ns => Some(epoch() + Duration::from_nanos(ns)),
        }
    }

    /// The fences this one is built from (members of an array or chain); empty for plain
    /// fences.
    pub fn children(&self) -> &[Fence] {
        match &self.inner.ops {
            Some(ops) => ops.children(),
            None => &[],
        }
    }

    /// Makes room for `additional` more callbacks, so that adding them with
    /// [`Fence::add_prepared_callback`] does not allocate.
    pub fn reserve_callbacks(&self, additional: usize) {
        lock(&self.inner.cbs).entries.reserve(additional);
    }

    /// Adds a callback that runs exactly once, on the signalling thread, when the fence
    /// signals (`dma_fence_add_callback`). Callbacks run in the order they were added, inside
    /// a signalling section: keep them short, allocation-free and wait-free. If one panics,
    /// the others still run, and the panic then resumes on the signalling thread.
    ///
    /// # Errors
    /// If the fence has already signalled the callback is not run and is handed back in
    /// [`AlreadySignaled`].
    pub fn add_callback<F>(&self, f: F) -> Result<CallbackId, AlreadySignaled<F>>
    where
        F: FnOnce(&Fence) + Send + 'static,
    {
        match self.lock_for_add() {
            Some(mut list) => {
                let id = list.next_id;
                list.next_id = id.saturating_add(1);
                list.entries.push((id.get(), Callback::new(f)));
                Ok(CallbackId { fence: self.addr(), id })
            }
            None => Err(AlreadySignaled(f)),
        }
    }

    /// Adds a callback boxed beforehand. Does not allocate when room was reserved with
    /// [`Fence::reserve_callbacks`].
    ///
    /// # Errors
    /// Hands the callback back if the fence has already signalled.
    pub fn add_prepared_callback(
        &self,
        cb: Callback,
    ) -> Result<CallbackId, AlreadySignaled<Callback>> {
        match self.lock_for_add() {
            Some(mut list) => {
                let id = list.next_id;
                list.next_id = id.saturating_add(1);
                list.entries.push((id.get(), cb));
                Ok(CallbackId { fence: self.addr(), id })
            }
            None => Err(AlreadySignaled(cb)),
        }
    }

    /// Enables signalling, then locks the callback list for an add and announces it
    /// (`CALLBACKS`, see the constant); `None` when the fence has signalled.
    fn lock_for_add(&self) -> Option<MutexGuard<'_, CallbackList>> {
        if self.inner.ops.is_some() {
            // The backend's hook may signal at once; it must run without the lock.
            self.enable_signaling();
        }
        let list = lock(&self.inner.cbs);
        let prev = self.inner.state.fetch_or(ENABLE_SIGNALING | CALLBACKS, Ordering::AcqRel);
        (prev & SIGNALED == 0).then_some(list)
    }

    /// Removes a callback before it runs (`dma_fence_remove_callback`). Returns `true` when it
    /// was still pending and is now removed (it will never run), `false` when the fence has
    /// signalled (the callback ran, or is running now on the signalling thread) or the id is
    /// unknown.
    ///
    /// # Panics
    /// If `id` was returned by another fence.
    pub fn remove_callback(&self, id: CallbackId) -> bool {
        if id.fence != self.addr() {
            foreign_callback_id(id);
        }
        let removed = {
            let mut list = lock(&self.inner.cbs);
            // Once the fence is marked signalled its signaller runs what the list holds (it
            // takes the list under this lock, after setting the flag): the callback is no
            // longer removable, as for a fence whose callbacks already ran.
            if self.flag_signaled() {
                return false;
            }
            list.entries
                .iter()
                .position(|(i, _)| *i == id.id.get())
                .map(|pos| list.entries.remove(pos))
        };
        // Dropped outside the lock: the closure's captures may do anything on drop.
        removed.is_some()
    }

    /// Removes a callback before it runs and hands it back, so it can be added again later
    /// without allocating (a scheduler detaching its completion callback during a reset,
    /// `drm_sched_stop`). `None` when the fence has signalled or the id is unknown.
    ///
    /// # Panics
    /// If `id` was returned by another fence.
    pub fn take_callback(&self, id: CallbackId) -> Option<Callback> {
        if id.fence != self.addr() {
            foreign_callback_id(id);
        }
        let mut list = lock(&self.inner.cbs);
        // As in `remove_callback`: a fence marked signalled runs the callback itself.
        if self.flag_signaled() {
            return None;
        }
        let pos = list.entries.iter().position(|(i, _)| *i == id.id.get())?;
        Some(list.entries.remove(pos).1)
    }

    /// The fence's shared context (for composites that reuse a context).
    pub(crate) fn ctx_shared(&self) -> &Arc<ContextShared> {
        &self.inner.ctx
    }

    /// The backend ops, if any.
    pub(crate) fn ops(&self) -> Option<&dyn FenceOps> {
        self.inner.ops.as_deref()
    }

    /// Whether this handle is the only one to the fence: nobody else can reach it, so its
    /// state may be taken apart (iterative drops of long chains).
    pub(crate) fn is_unique(&self) -> bool {
        Arc::strong_count(&self.inner) == 1
    }

    /// The address of the shared state: the fence's identity while any handle lives.
    fn addr(&self) -> usize {
        &*self.inner as *const Inner as usize
    }

    /// Signals the fence if it is still pending. Returns whether this call signalled it.
    #[track_caller]
    pub(crate) fn signal_internal(&self, error: Option<FenceError>) -> bool {
        let _section = lockdep::signalling_section();
        if self.inner.ops.is_some() {
            // Several threads may signal a fence with ops: the first claim wins.
            if self.inner.state.fetch_or(CLAIMED, Ordering::Acquire) & CLAIMED != 0 {
                // Return once the winner has published the outcome, so that a caller that
                // saw the backend done (`is_signaled`) then reads the fence as signalled.
                while !self.flag_signaled() {
                    crate::sync::spin_wait();
                }
                return false;
            }
        } else if self.flag_signaled() {
            return false; // the unique signaller signals once; kept as a cheap guard
        }
        let encoded = FenceError::encode(error);
        let tag = encoded & 0x7;
        if tag == DRIVER_TAG {
            self.inner.driver_code.store((encoded >> 32) as u32, Ordering::Relaxed);
        }
        self.inner.timestamp_ns.store(crate::clock::now_ns(), Ordering::Relaxed);
        let error_bits = (tag as u32) << ERROR_SHIFT;
        let prev = self.inner.state.fetch_or(SIGNALED | CLAIMED | error_bits, Ordering::AcqRel);
        if prev & LISTENING != 0 {
            self.inner.event.notify(usize::MAX);
        }
        #[cfg(not(gpusched_loom))]
        if prev & PARKED != 0 {
            // A futex wake on Linux (allocation-free); see `park.rs`.
            crate::park::wake_all(&self.inner.state);
        }
        if prev & CALLBACKS != 0 {
            let entries = core::mem::take(&mut lock(&self.inner.cbs).entries);
            self.run_callbacks(entries);
        }
        true
    }

    /// Runs the callbacks taken out at signal time, on the signalling thread (inside its
    /// section). A panicking callback must not cost the others their run: each runs exactly
    /// once, and the first panic resumes after all of them. Work the callbacks defer
    /// (`defer_after_callbacks`) runs after the last of them.
    #[inline(never)]
    fn run_callbacks(&self, entries: Vec<(u64, Callback)>) {
        let mut panicked = None;
        if !entries.is_empty() {
            #[cfg(not(gpusched_loom))]
            let mark = crate::defer::enter();
            for (_, cb) in entries {
                if let Err(p) =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb.call(self)))
                {
                    panicked.get_or_insert(p);
                }
            }
            #[cfg(not(gpusched_loom))]
            if let Err(p) = std::panic::catch_unwind(|| crate::defer::leave(mark)) {
                panicked.get_or_insert(p);
            }
        }
        if let Some(p) = panicked {
            std::panic::resume_unwind(p);
        }
    }

    /// Blocks this thread on the fence's state word until it signals or `deadline` passes:
    /// after a short spin (a few microseconds, as `i915_request_wait` spins before it sleeps:
    /// a fence that signals within it costs no sleep and no wake syscall), a futex wait on
    /// Linux (as `std::sync::Condvar`), with no per-wait allocation; see `park.rs`.
    #[cfg(not(gpusched_loom))]
    fn park_until(&self, deadline: Option<Instant>) -> Result<(), WaitError> {
        crate::park::ensure_ready();
        if crate::park::spin_until(&self.inner.state, SIGNALED, deadline) {
            if let Some(r) = self.poll_outcome() {
                return r.map_err(WaitError::from);
            }
        }
        loop {
            let word = self.inner.state.fetch_or(PARKED, Ordering::AcqRel) | PARKED;
            if let Some(r) = self.poll_outcome() {
                return r.map_err(WaitError::from);
            }
            if word & SIGNALED == 0 && !crate::park::wait(&self.inner.state, word, deadline) {
                return match self.poll_outcome() {
                    Some(r) => r.map_err(WaitError::from),
                    None => Err(WaitError::Timeout),
                };
            }
        }
    }

    /// Registers a listener for the signal. The caller must re-check the outcome after this
    /// returns, before sleeping on the listener (see `LISTENING`).
    pub(crate) fn listen(&self) -> EventListener {
        let listener = self.inner.event.listen();
        self.inner.state.fetch_or(LISTENING, Ordering::AcqRel);
        listener
    }

    /// The outcome if signalled (flag only, no backend poll); used by futures.
    pub(crate) fn current_outcome(&self) -> Option<Result<(), FenceError>> {
        self.outcome()
    }

    /// Polls the backend too; used by futures and multi-waits.
    #[cfg_attr(gpusched_loom, allow(dead_code))] // the futures are not built under loom
    pub(crate) fn polled_outcome(&self) -> Option<Result<(), FenceError>> {
        self.poll_outcome()
    }

    /// Blocks until the fence signals (`dma_fence_wait(fence, false)`): a non-interruptible
    /// wait. Returns the fence's outcome.
    ///
    /// Annotated for the checker: waiting inside a signalling section is a violation, even
    /// when the fence has already signalled (the mistake is reported the first time it runs,
    /// not the day it deadlocks).
    ///
    /// # Errors
    /// The fence's error, when it signalled with one.
    #[track_caller]
    pub fn wait(&self) -> Result<(), FenceError> {
        lockdep::might_wait();
        match self.wait_until(None) {
            Ok(()) => Ok(()),
            Err(WaitError::Failed(e)) => Err(e),
            Err(other) => unreachable!("an untimed plain wait ended with {other:?}"),
        }
    }

    /// Blocks until the fence signals or `timeout` passes.
    ///
    /// # Errors
    /// [`WaitError::Timeout`], or [`WaitError::Failed`] with the fence's error.
    #[track_caller]
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), WaitError> {
        lockdep::might_wait();
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// Blocks until the fence signals or `deadline` passes.
    ///
    /// # Errors
    /// [`WaitError::Timeout`], or [`WaitError::Failed`] with the fence's error.
    #[track_caller]
    pub fn wait_deadline(&self, deadline: Instant) -> Result<(), WaitError> {
        lockdep::might_wait();
        self.wait_until(Some(deadline))
    }

    /// An interruptible wait (`dma_fence_wait(fence, true)`): like
    /// [`wait_timeout`](Fence::wait_timeout) (`None` waits forever), but when a reset of the
    /// fence's [`InterruptDomain`] interrupts waits, it returns [`WaitError::Interrupted`],
    /// and while an interrupt section is open it fails at once. A fence that has already
    /// signalled returns its outcome even then. Fences without a domain wait as usual.
    ///
    /// # Errors
    /// [`WaitError::Interrupted`], [`WaitError::Timeout`], or [`WaitError::Failed`].
    #[cfg(not(gpusched_loom))]
    #[track_caller]
    pub fn wait_interruptible(&self, timeout: Option<Duration>) -> Result<(), WaitError> {
        lockdep::might_wait_interruptible();
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        if let Some(r) = self.poll_outcome() {
            return r.map_err(WaitError::from);
        }
        if self.interrupt_domain().is_none() {
            return self.wait_until(deadline);
        }
        self.enable_signaling();
        let fut = crate::wait::FenceFuture::new(self.clone(), true);
        match crate::wait::block_on_deadline(fut, deadline) {
            Some(r) => r,
            None => Err(WaitError::Timeout),
        }
    }

    /// The generic blocking wait, without the checker annotation (callers annotate).
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> Result<(), WaitError> {
        if let Some(r) = self.poll_outcome() {
            return r.map_err(WaitError::from);
        }
        self.enable_signaling();
        if let Some(ops) = &self.inner.ops {
            match ops.wait(deadline) {
                OpsWait::Signaled => {
                    if let Some(r) = self.poll_outcome() {
                        return r.map_err(WaitError::from);
                    }
                }
                // A backend that reports a timeout for an untimed wait is wrong; an untimed wait
                // must not turn it into a `Timeout` (plain `wait` would panic): fall back to the
                // generic wait, which ends when the producer signals.
                OpsWait::TimedOut if deadline.is_some() => {
                    return match self.poll_outcome() {
                        Some(r) => r.map_err(WaitError::from),
                        None => Err(WaitError::Timeout),
                    }
                }
                OpsWait::TimedOut => {}
                OpsWait::Unsupported => {}
            }
        }
        #[cfg(not(gpusched_loom))]
        return self.park_until(deadline);
        #[cfg(gpusched_loom)]
        loop {
            let listener = self.listen();
            if let Some(r) = self.poll_outcome() {
                return r.map_err(WaitError::from);
            }
            match deadline {
                None => listener.wait(),
                Some(d) => {
                    if listener.wait_deadline(d).is_none() {
                        return match self.poll_outcome() {
                            Some(r) => r.map_err(WaitError::from),
                            None => Err(WaitError::Timeout),
                        };
                    }
                }
            }
        }
    }
}

#[cold]
#[track_caller]
fn foreign_callback_id(id: CallbackId) -> ! {
    panic!("Fence::remove_callback: {id:?} was returned by another fence's add_callback")
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fence")
            .field("context", &self.context())
            .field("seqno", &self.seqno())
            .field("timeline", &self.timeline_name())
            .field("status", &self.outcome())
            .finish()
    }
}

impl PartialEq for Fence {
    /// Two fences are equal when they are the same fence.
    fn eq(&self, other: &Fence) -> bool {
        self.ptr_eq(other)
    }
}

impl Eq for Fence {}

/// The unique write side of a fence. Signalling consumes it, so a second signal cannot be
/// written; dropping it unsignalled signals the fence with [`FenceError::Abandoned`], so no
/// published fence is ever left pending.
///
/// ```
/// use gpusched_fence::{FenceContext, FenceError};
///
/// let ctx = FenceContext::new("ring");
/// let (fence, signaller) = ctx.next();
/// assert!(signaller.signal());
/// assert_eq!(fence.wait(), Ok(()));
///
/// let (fence, signaller) = ctx.next();
/// drop(signaller);
/// assert_eq!(fence.wait(), Err(FenceError::Abandoned));
/// ```
///
/// Signalling twice does not compile: the first `signal` moved the signaller.
///
/// ```compile_fail,E0382
/// use gpusched_fence::FenceContext;
///
/// let (_fence, signaller) = FenceContext::new("ring").next();
/// signaller.signal();
/// signaller.signal(); // error[E0382]: use of moved value: `signaller`
/// ```
///
/// Nor can a clone be kept to signal later: a `Signaller` is not `Clone`.
///
/// ```compile_fail,E0599
/// use gpusched_fence::FenceContext;
///
/// let (_fence, signaller) = FenceContext::new("ring").next();
/// let second = signaller.clone();
/// ```
#[must_use = "dropping a signaller signals its fence with FenceError::Abandoned"]
pub struct Signaller {
    fence: Fence,
}

impl fmt::Debug for Signaller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signaller").field("fence", &self.fence).finish()
    }
}

impl Signaller {
    /// The fence this signaller completes.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The earliest deadline a waiter set on the fence ([`Fence::deadline`]): a producer that
    /// can hurry (a scheduler forwarding a job's deadline to its hardware fence) polls it.
    pub fn deadline(&self) -> Option<Instant> {
        self.fence.deadline()
    }

    /// Signals success (`dma_fence_signal`). Returns `false` if the fence was already marked
    /// signalled through its backend ([`FenceOps::signaled`]).
    #[track_caller]
    pub fn signal(self) -> bool {
        self.fence.signal_internal(None)
    }

    /// Signals with an error (`dma_fence_set_error` + `dma_fence_signal`).
    #[track_caller]
    pub fn signal_error(self, error: FenceError) -> bool {
        self.fence.signal_internal(Some(error))
    }

    /// Signals with the given outcome.
    #[track_caller]
    pub fn signal_result(self, result: Result<(), FenceError>) -> bool {
        self.fence.signal_internal(result.err())
    }
}

impl Drop for Signaller {
    fn drop(&mut self) {
        if !self.fence.flag_signaled() {
            self.fence.signal_internal(Some(FenceError::Abandoned));
        }
    }
}

#[cfg(all(test, not(gpusched_loom)))]
mod tests {
    use super::*;

    /// The memory rules (CONTRACT.md): a pending fence costs at most 128 bytes with its
    /// `Arc`. An `ArcInner` is the two reference counts (16 bytes on 64-bit targets) followed
    /// by the value.
    #[test]
    fn pending_fence_allocation_fits_128_bytes() {
        let arc_inner = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Inner>();
        assert!(
            arc_inner <= 128,
            "Arc<Inner> is {arc_inner} bytes (Inner {} bytes), over the 128-byte budget",
            std::mem::size_of::<Inner>()
        );
        println!("size_of::<ArcInner<Inner>>() = {arc_inner} (Inner = {})", arc_inner - 16);
    }
}

/// A fence allocated ahead of time, whose seqno is assigned when it is published
/// ([`PreparedFence::init`]): a backend allocates it when a job is prepared, outside any
/// signalling section, and initialises it in `run_job`, inside one, without allocating (the
/// kernel embeds the hardware fence in the job for the same reason). Made by
/// [`FenceContext::prepare`](crate::FenceContext::prepare).
#[cfg(not(gpusched_loom))]
pub struct PreparedFence {
    /// The only handle to the allocation until `init`.
    inner: Arc<Inner>,
}

#[cfg(not(gpusched_loom))]
impl fmt::Debug for PreparedFence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedFence").field("context", &self.inner.ctx.id).finish()
    }
}

#[cfg(not(gpusched_loom))]
impl PreparedFence {
    pub(crate) fn new(
        ctx: Arc<ContextShared>,
        callbacks: usize,
        ops: Option<Box<dyn FenceOps>>,
    ) -> Self {
        PreparedFence {
            inner: Arc::new(Inner {
                state: AtomicU32::new(0),
                driver_code: AtomicU32::new(0),
                timestamp_ns: AtomicU64::new(0),
                deadline_ns: AtomicU64::new(NO_DEADLINE),
                seqno: 0,
                ctx,
                cbs: Mutex::new(CallbackList {
                    next_id: NonZeroU64::MIN,
                    entries: Vec::with_capacity(callbacks),
                }),
                event: Event::new(),
                ops,
            }),
        }
    }

    /// The context id the fence will have.
    pub fn context(&self) -> u64 {
        self.inner.ctx.id
    }

    /// Publishes the fence with `seqno`. Never allocates.
    pub fn init(mut self, seqno: u64) -> (Fence, Signaller) {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.seqno = seqno,
            None => unreachable!("a PreparedFence is the only handle to its allocation"),
        }
        let fence = Fence { inner: self.inner };
        (fence.clone(), Signaller { fence })
    }
}
