//! The signalling-contract checker: lockdep for fences.
//!
//! The Linux kernel primes lockdep so that any code on the path to signalling a fence that
//! takes a reservation lock, allocates with reclaim, or waits on a fence is reported the
//! first time it runs, not the day it deadlocks (`drivers/dma-buf/dma-fence.c`:
//! `dma_fence_begin_signalling`, `dma_fence_end_signalling`, `__dma_fence_might_wait`,
//! `dma_fence_init` priming; `kernel/locking/lockdep.c`; `mm/page_alloc.c`'s
//! `fs_reclaim_acquire`/`fs_reclaim_release` and `might_alloc`; `drivers/dma-buf/dma-resv.c`
//! `dma_resv_lockdep` priming). This module does the same for Rust code using this workspace.
//!
//! # The contract and how each rule is checked
//! The rules are numbered in CONTRACT.md at the repository root (rules 4 to 7 are the ones
//! checked here; [`Rule::contract_rule`] maps each report to its rule).
//! Locks belong to static, named [`LockClass`]es; every thread keeps a fixed-size stack of
//! the classes it holds (depth 48, no allocation); a global graph records an edge `A -> B`
//! the first time `B` is taken while `A` is held. An acquisition whose new edge closes a
//! cycle is a violation, reported with the recorded chain. Three pseudo-classes turn the
//! contract into lock order:
//! - `signalling`: [`signalling_section`] / [`begin_signalling`] take it *shared and
//!   recursive* (nesting is free; [`Signaller::signal`](crate::Signaller::signal) enters a
//!   section every time, as `dma_fence_signal` does); every fence wait ([`might_wait`])
//!   takes it *exclusively*, for a moment. So a wait inside a section is a violation, and a
//!   lock taken inside a section and elsewhere held across a wait closes a cycle.
//! - `reclaim`: [`reclaim_section`] takes it; every allocation that may reclaim
//!   ([`might_alloc`], or any allocation through [`CheckingAllocator`]) takes it for a moment.
//! - [`RESV`]: the class of every reservation lock (for the `resv` crate).
//! - user *outer* classes ([`LockClass::outer`]), the `mmap_lock` analogue.
//!
//! **Priming.** At first use the graph is seeded with `outer -> resv -> reclaim ->
//! signalling` (and each outer class gets `outer -> resv` when first used), so every forbidden
//! order is caught on its first occurrence even if the allowed order never ran in this
//! process: `resv` in a section (`signalling -> resv`), allocation in a section
//! (`signalling -> reclaim`), a blocking `resv` lock in reclaim (`reclaim -> resv`), an outer
//! lock under `resv` (`resv -> outer`), a wait in a section. Allowed: waits under `resv`
//! (rule 2 of CONTRACT.md) and in reclaim (rule 3), trylocks anywhere (a trylock records no edge, as in
//! lockdep), allocations inside a reclaim section (`PF_MEMALLOC`: they cannot re-enter
//! reclaim) or inside [`no_reclaim`] (the `GFP_NOWAIT` analogue).
//!
//! **Reset.** A class made with [`LockClass::reset_needed`] (the modeset-lock case, rule 7)
//! may be held across [`might_wait_interruptible`] (the reset worker can interrupt the wait,
//! so no edge to `signalling` is recorded) but not across [`might_wait`].
//!
//! **Nest keys.** Locks of one class taken under one [`NestKey`] (an acquire context) count
//! as one held entry (lockdep's `nest_lock`); without a key, taking a class already held is
//! same-class recursion.
//!
//! **Precision.** Edges are recorded only from the held locks down to the first blocking one
//! (older ones are covered by transitivity, as lockdep's `check_prevs_add`), never to a
//! trylock, and not after a violation (so one mistake is not reported again as the cycles it
//! would seed). Shared acquisitions are ordered like exclusive ones (a queued writer makes a
//! read block, as lockdep treats non-recursive reads); only the `signalling` section is
//! recursive. A reset-needed class records no edge to `signalling` at all: its waits are
//! checked by rule 7 instead.
//!
//! # Reading a report
//! A [`Report`] starts with the rule broken in one sentence and its short name, then the
//! acquisition that was checked (`this thread: `class` at file:line (thread name)`), the held
//! lock it conflicts with, and for a cycle every recorded edge that closes it with the
//! `file:line` and thread that first recorded it (`primed order` for the seeded edges); then
//! the thread's held locks. Fix it by removing one edge of the cycle: usually by moving the
//! lock, wait or allocation out of the section (pre-allocate at arm time, trylock, or use an
//! interruptible wait).
//!
//! # Policy
//! [`Policy::Panic`] (the default with `debug_assertions`), [`Policy::Log`] (the default
//! otherwise: `tracing::error!`, counted, each place reported once), [`Policy::Off`]
//! (annotations return at once). [`capture`] collects the calling thread's reports instead
//! (and checks even under `Off`), for tests. Violations found inside the global allocator
//! cannot panic there (a `GlobalAlloc` must not unwind): under `Panic` they panic at the next
//! annotation on that thread (for example when the section ends).
//!
//! # Cost
//! Entering and leaving a section with no lock held is a few thread-local `Cell` accesses;
//! a known edge is one relaxed atomic load; only a new edge takes a global lock (and does a
//! breadth-first search over bitset rows). Without the `checker` feature, or under
//! `cfg(gpusched_loom)`, every annotation compiles to nothing with the same API.

use core::marker::PhantomData;
use core::panic::Location;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

mod alloc;
mod report;
mod wrappers;

// The one switch: the checker's engine (`enabled.rs`), or the same crate-internal API as
// no-ops (`disabled.rs`). Everything else in this module is the same in both builds.
#[cfg(all(feature = "checker", not(gpusched_loom)))]
#[path = "enabled.rs"]
mod imp;
#[cfg(not(all(feature = "checker", not(gpusched_loom))))]
#[path = "disabled.rs"]
mod imp;

pub use self::alloc::{no_reclaim, CheckingAllocator, NoReclaim};
pub use self::report::{ChainEdge, Report, Rule, Site};
pub use self::wrappers::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// What kind of node of the class graph a [`LockClass`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClassKind {
    /// An ordinary lock class.
    Plain,
    /// An outer class: primed `outer -> resv`.
    Outer,
    /// A pseudo-class (`resv`, `reclaim`, `signalling`), primed at first use.
    Pseudo,
}

/// A named, static lock class. Every lock of one class shares one node of the dependency
/// graph. Declare classes in `static`s: the graph has room for 512 classes per process.
#[derive(Debug)]
pub struct LockClass {
    name: &'static str,
    reset_needed: bool,
    kind: ClassKind,
    /// The class's graph id plus one, assigned at first use (0: not yet; `u32::MAX`: no room
    /// left). Written once under the checker's global lock. Only the enabled checker reads it.
    #[allow(dead_code)]
    id: AtomicU32,
}

impl LockClass {
    /// A new lock class. Declare it in a `static`.
    pub const fn new(name: &'static str) -> Self {
        LockClass { name, reset_needed: false, kind: ClassKind::Plain, id: AtomicU32::new(0) }
    }

    /// A lock class that the timeout-and-reset worker needs: holding it across a
    /// non-interruptible fence wait is a violation.
    pub const fn reset_needed(name: &'static str) -> Self {
        LockClass { name, reset_needed: true, kind: ClassKind::Plain, id: AtomicU32::new(0) }
    }

    /// An outer lock class (the `mmap_lock` analogue): primed to be taken before any
    /// reservation lock, so taking it while holding one is a violation.
    pub const fn outer(name: &'static str) -> Self {
        LockClass { name, reset_needed: false, kind: ClassKind::Outer, id: AtomicU32::new(0) }
    }

    const fn pseudo(name: &'static str) -> Self {
        LockClass { name, reset_needed: false, kind: ClassKind::Pseudo, id: AtomicU32::new(0) }
    }

    /// The class name, as reports show it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the reset worker needs this class.
    pub fn is_reset_needed(&self) -> bool {
        self.reset_needed
    }

    /// Whether this is an outer class ([`LockClass::outer`]).
    pub fn is_outer(&self) -> bool {
        self.kind == ClassKind::Outer
    }
}

/// The class of every reservation (`Resv`) lock.
pub static RESV: LockClass = LockClass::pseudo("resv");
/// The reclaim pseudo-class (`__fs_reclaim_map`).
pub(crate) static RECLAIM: LockClass = LockClass::pseudo("reclaim");
/// The signalling pseudo-class (`dma_fence_lockdep_map`).
pub(crate) static SIGNALLING: LockClass = LockClass::pseudo("signalling");

/// How a lock is being acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// A blocking exclusive acquisition.
    Exclusive,
    /// A blocking shared (read) acquisition.
    Shared,
    /// A trylock: it cannot block, so it records no ordering edge.
    Try,
}

/// Identifies an acquire context: locks of one class taken under one key count as a single
/// held entry (lockdep's `nest_lock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NestKey(pub u64);

/// What the checker does with a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Panic with the report (the default with `debug_assertions`).
    Panic,
    /// Emit the report with `tracing::error!` and count it (the default otherwise). Each
    /// (rule, place) is logged once; every occurrence is counted.
    Log,
    /// Check nothing: every annotation returns at once.
    Off,
}

const POLICY_DEFAULT: u8 = 0;
const POLICY_PANIC: u8 = 1;
const POLICY_LOG: u8 = 2;
const POLICY_OFF: u8 = 3;

/// The process-wide policy; `POLICY_DEFAULT` until [`set_policy`] is called.
static POLICY: AtomicU8 = AtomicU8::new(POLICY_DEFAULT);

/// Sets the process-wide policy.
pub fn set_policy(policy: Policy) {
    let v = match policy {
        Policy::Panic => POLICY_PANIC,
        Policy::Log => POLICY_LOG,
        Policy::Off => POLICY_OFF,
    };
    POLICY.store(v, Ordering::Relaxed);
}

/// The process-wide policy.
pub fn policy() -> Policy {
    match POLICY.load(Ordering::Relaxed) {
        POLICY_PANIC => Policy::Panic,
        POLICY_LOG => Policy::Log,
        POLICY_OFF => Policy::Off,
        _ if cfg!(debug_assertions) => Policy::Panic,
        _ => Policy::Log,
    }
}

/// Whether the checker is compiled in (the `checker` feature, and not a loom build).
pub const ENABLED: bool = imp::ENABLED;

/// How many violations this process has found (every occurrence, under any policy).
pub fn violations() -> u64 {
    imp::violations()
}

/// The last reports (at most 64), oldest first, without removing them.
pub fn reports() -> Vec<Report> {
    imp::reports(false)
}

/// The last reports (at most 64), oldest first, removing them.
pub fn take_reports() -> Vec<Report> {
    imp::reports(true)
}

/// Runs `f` and returns the violations raised on the calling thread meanwhile, instead of
/// panicking or logging them (they still count in [`violations`]). Checks even while the
/// policy is [`Policy::Off`]. Nestable; for tests that run in parallel in one process.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<Report>) {
    imp::capture(f)
}

/// Records that the current thread takes a lock of `class` (before blocking on it, so an
/// inversion is reported instead of hanging).
#[track_caller]
#[inline]
pub fn lock_acquire(class: &'static LockClass, how: Acquire, nest: Option<NestKey>) {
    imp::acquire(class, how, nest, Location::caller());
}

/// Records that the current thread released a lock of `class` (taken with the same `nest`).
#[inline]
pub fn lock_release(class: &'static LockClass, nest: Option<NestKey>) {
    imp::release(class, nest);
}

/// Guard of a signalling section; see [`signalling_section`]. Not `Send`: a section ends on
/// the thread that began it.
#[must_use = "the section ends when the guard is dropped"]
#[derive(Debug)]
pub struct SignallingSection {
    tracked: bool,
    _not_send: PhantomData<*const ()>,
}

/// Enters a signalling section: the code until the guard drops is on the path to signalling a
/// published fence (`dma_fence_begin_signalling`). Sections nest. Inside one, taking a `resv`
/// lock, allocating through a reclaiming path, or waiting on a fence is a violation.
#[track_caller]
#[inline]
pub fn signalling_section() -> SignallingSection {
    let tracked = imp::section_enter(&SIGNALLING, Acquire::Shared, Location::caller());
    SignallingSection { tracked, _not_send: PhantomData }
}

impl Drop for SignallingSection {
    #[inline]
    fn drop(&mut self) {
        if self.tracked {
            imp::section_exit(&SIGNALLING);
        }
    }
}

/// The kernel-style token of a section begun with [`begin_signalling`]. It is `Send` so that
/// a section ended on the wrong thread can be written, and reported, by [`end_signalling`].
#[must_use = "pass the cookie to end_signalling"]
#[derive(Debug)]
pub struct SignallingCookie {
    tracked: bool,
    thread: std::thread::ThreadId,
    thread_name: Option<String>,
    begun_at: &'static Location<'static>,
}

/// Begins a signalling section and returns its cookie (`dma_fence_begin_signalling`). Prefer
/// [`signalling_section`], whose guard cannot leave the thread.
#[track_caller]
pub fn begin_signalling() -> SignallingCookie {
    let begun_at = Location::caller();
    let tracked = imp::section_enter(&SIGNALLING, Acquire::Shared, begun_at);
    let t = std::thread::current();
    SignallingCookie { tracked, thread: t.id(), thread_name: t.name().map(str::to_owned), begun_at }
}

/// Ends a section begun with [`begin_signalling`] (`dma_fence_end_signalling`). Ending it on
/// another thread is a violation ([`Rule::SectionEndedOnWrongThread`]); the section then
/// stays open on the thread that began it.
#[track_caller]
pub fn end_signalling(cookie: SignallingCookie) {
    if !cookie.tracked {
        return;
    }
    if cookie.thread == std::thread::current().id() {
        imp::section_exit(&SIGNALLING);
    } else {
        let began = cookie.thread_name.unwrap_or_else(|| format!("{:?}", cookie.thread));
        imp::wrong_thread_end(cookie.begun_at, began, Location::caller());
    }
}

/// Guard of a reclaim section; see [`reclaim_section`].
#[must_use = "the section ends when the guard is dropped"]
#[derive(Debug)]
pub struct ReclaimSection {
    tracked: bool,
    _not_send: PhantomData<*const ()>,
}

/// Enters a reclaim section (`fs_reclaim_acquire`): a shrinker or memory-pressure callback.
/// Inside it, fence waits are allowed but blocking `resv` locks are not (trylock only), and
/// allocations are not reported (they cannot re-enter reclaim, as `PF_MEMALLOC`).
#[track_caller]
#[inline]
pub fn reclaim_section() -> ReclaimSection {
    let tracked = imp::section_enter(&RECLAIM, Acquire::Exclusive, Location::caller());
    ReclaimSection { tracked, _not_send: PhantomData }
}

impl Drop for ReclaimSection {
    #[inline]
    fn drop(&mut self) {
        if self.tracked {
            imp::section_exit(&RECLAIM);
        }
    }
}

/// Annotates a blocking, non-interruptible fence wait that is about to happen
/// (`__dma_fence_might_wait`). Unconditional: a wait on an already-signalled fence is checked
/// too.
#[track_caller]
#[inline]
pub fn might_wait() {
    imp::might_wait(false, Location::caller());
}

/// Annotates a blocking, interruptible fence wait that is about to happen. Locks of
/// [`LockClass::reset_needed`] classes may be held across it.
#[track_caller]
#[inline]
pub fn might_wait_interruptible() {
    imp::might_wait(true, Location::caller());
}

/// Annotates an allocation that may enter reclaim (`might_alloc(GFP_KERNEL)`): reported inside
/// a signalling section, unless inside [`no_reclaim`] or a [`reclaim_section`].
#[track_caller]
#[inline]
pub fn might_alloc() {
    imp::might_alloc(Location::caller(), false);
}
