//! The checker's engine, compiled in with the `checker` feature (`disabled.rs` is the same
//! crate-internal API as no-ops; `mod.rs` picks one): class ids, the per-thread held stack,
//! the class graph and the cycle search (`kernel/locking/lockdep.c`: `__lock_acquire`,
//! `check_prevs_add`, `check_noncircular`, `nest_lock`), and report delivery. It is long
//! because these share one set of fixed-size, allocation-free structures (below) whose
//! invariants every entry point relies on; reports' formatting is in `report.rs`, the
//! checking allocator in `alloc.rs`, the lock wrappers in `wrappers.rs`.
//!
//! # Data structures
//! - Class ids: a class gets `id + 1` in its `AtomicU32` at first use, under [`SLOW`]; ids
//!   never change. At most [`MAX_CLASSES`]; past that a class is untracked (reported once).
//! - The graph: [`ADJ`], a bitset adjacency matrix (`ADJ[a]` bit `b` set: edge `a -> b`,
//!   "`b` was taken while `a` was held"). Bits are only ever set, with `fetch_or` under
//!   [`SLOW`]; the fast path is a relaxed load (a stale zero only sends us to the slow path,
//!   which re-checks under the lock). The first places that created each edge live in
//!   `Slow::edges`, for reports.
//! - The held stack: a fixed array of `Cell<Held>` in a `const` thread-local without a
//!   destructor, so the global-allocator hook may touch it at any time, teardown included.
//! - Re-entrancy: `ThreadState::in_checker` is set whenever the checker itself may allocate,
//!   log or take [`SLOW`]/[`REPORTS`]; every entry point returns at once while it is set, so
//!   the checking allocator never recurses and the checker never deadlocks on itself.

use core::cell::{Cell, RefCell};
use core::fmt;
use core::panic::Location;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Mutex as StdMutex, MutexGuard as StdMutexGuard};

use super::{
    policy, Acquire, ChainEdge, ClassKind, LockClass, NestKey, Policy, Report, Rule, Site, POLICY,
    POLICY_OFF, RECLAIM, RESV, SIGNALLING,
};

/// Whether the checker is compiled in.
pub(crate) const ENABLED: bool = true;

/// Whether checking is on process-wide (one relaxed load).
#[inline]
fn policy_on() -> bool {
    POLICY.load(Ordering::Relaxed) != POLICY_OFF
}

impl LockClass {
    fn kind(&self) -> ClassKind {
        self.kind
    }

    fn raw_id(&self) -> &AtomicU32 {
        &self.id
    }
}

/// The graph's capacity in classes.
pub(crate) const MAX_CLASSES: usize = 512;
/// Words per bitset row.
const WORDS: usize = MAX_CLASSES / 64;
/// The held stack's depth (lockdep's `MAX_LOCK_DEPTH`).
pub(crate) const DEPTH: usize = 48;
/// `LockClass::id` value of a class that found no room.
const ID_EXHAUSTED: u32 = u32::MAX;
/// How many reports [`REPORTS`] keeps.
const MAX_REPORTS: usize = 64;

/// The adjacency matrix; see the module docs. Bits are set only under [`SLOW`].
static ADJ: [[AtomicU64; WORDS]; MAX_CLASSES] =
    [const { [const { AtomicU64::new(0) }; WORDS] }; MAX_CLASSES];

/// Every violation found (all policies, captured ones included).
static VIOLATIONS: AtomicU64 = AtomicU64::new(0);
/// Threads inside `capture` (which checks even under `Policy::Off`); lets the `Off` fast path
/// skip the thread-local.
static CAPTURING_THREADS: AtomicUsize = AtomicUsize::new(0);
/// Set when `ClassesExhausted` has been reported (it is reported once per process).
static EXHAUSTED_REPORTED: AtomicBool = AtomicBool::new(false);

/// Slots of the edge-information table (open addressing); edges past 3/4 of it are still
/// checked, only their first places are not kept.
const EDGE_SLOTS: usize = 4096;

/// A thread's name, kept without allocating (truncated to 40 bytes).
#[derive(Clone, Copy, Debug)]
struct ThreadTag {
    buf: [u8; 40],
    len: u8,
}

impl ThreadTag {
    const EMPTY: ThreadTag = ThreadTag { buf: [0; 40], len: 0 };

    fn of(name: &str) -> Self {
        let mut tag = Self::EMPTY;
        let _ = fmt::Write::write_str(&mut tag, name);
        tag
    }

    fn current() -> Self {
        let t = std::thread::current();
        match t.name() {
            Some(n) => Self::of(n),
            None => {
                let mut tag = Self::EMPTY;
                let _ = fmt::Write::write_fmt(&mut tag, format_args!("{:?}", t.id()));
                tag
            }
        }
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("?")
    }
}

impl fmt::Write for ThreadTag {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let len = self.len as usize;
            if len + c.len_utf8() > self.buf.len() {
                break;
            }
            c.encode_utf8(&mut self.buf[len..]);
            self.len += c.len_utf8() as u8;
        }
        Ok(())
    }
}

/// Where an edge was first recorded. `key` 0: an empty slot; else `(from << 16 | to) + 1`.
#[derive(Clone, Copy, Debug)]
struct EdgeSlot {
    key: u32,
    primed: bool,
    held_at: Option<&'static Location<'static>>,
    taken_at: Option<&'static Location<'static>>,
    thread: ThreadTag,
}

const EMPTY_SLOT: EdgeSlot =
    EdgeSlot { key: 0, primed: false, held_at: None, taken_at: None, thread: ThreadTag::EMPTY };

/// The slow-path state, under [`SLOW`]. Fixed-size (zero-initialised, so it costs no memory
/// until touched): recording classes and edges never allocates.
#[derive(Debug)]
struct Slow {
    /// Whether the pseudo-classes have ids and the primed edges exist.
    primed: bool,
    /// Classes with ids.
    count: usize,
    /// Class by id.
    classes: [Option<&'static LockClass>; MAX_CLASSES],
    /// Used slots of `edges`.
    edges_used: usize,
    /// First sighting of edges set in [`ADJ`] (open addressing, linear probing).
    edges: [EdgeSlot; EDGE_SLOTS],
    /// (rule, place, place) already logged under `Policy::Log` (allocates, after a report).
    logged: BTreeSet<(Rule, usize, usize)>,
}

impl Slow {
    fn slot(key: u32) -> usize {
        (key.wrapping_mul(0x9E37_79B1) >> 20) as usize % EDGE_SLOTS
    }

    fn edge_key(a: u16, b: u16) -> u32 {
        ((u32::from(a) << 16) | u32::from(b)) + 1
    }

    fn record(&mut self, a: u16, b: u16, mut info: EdgeSlot) {
        if self.edges_used >= EDGE_SLOTS / 4 * 3 {
            return;
        }
        info.key = Self::edge_key(a, b);
        let mut i = Self::slot(info.key);
        while self.edges[i].key != 0 {
            if self.edges[i].key == info.key {
                return;
            }
            i = (i + 1) % EDGE_SLOTS;
        }
        self.edges[i] = info;
        self.edges_used += 1;
    }

    fn info(&self, a: u16, b: u16) -> Option<&EdgeSlot> {
        let key = Self::edge_key(a, b);
        let mut i = Self::slot(key);
        while self.edges[i].key != 0 {
            if self.edges[i].key == key {
                return Some(&self.edges[i]);
            }
            i = (i + 1) % EDGE_SLOTS;
        }
        None
    }

    fn name(&self, id: u16) -> &'static str {
        self.classes[id as usize].map_or("?", LockClass::name)
    }
}

static SLOW: StdMutex<Slow> = StdMutex::new(Slow {
    primed: false,
    count: 0,
    classes: [None; MAX_CLASSES],
    edges_used: 0,
    edges: [EMPTY_SLOT; EDGE_SLOTS],
    logged: BTreeSet::new(),
});

/// The last [`MAX_REPORTS`] reports.
static REPORTS: StdMutex<VecDeque<Report>> = StdMutex::new(VecDeque::new());

fn lock<T>(m: &StdMutex<T>) -> StdMutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One entry of the held stack.
#[derive(Clone, Copy, Debug)]
struct Held {
    class: &'static LockClass,
    id: u16,
    how: Acquire,
    nest: Option<NestKey>,
    /// Locks of this class under `nest` (or nested recursive sections) this entry stands for.
    count: u32,
    at: &'static Location<'static>,
}

const EMPTY: Held = Held {
    class: &SIGNALLING,
    id: 0,
    how: Acquire::Try,
    nest: None,
    count: 0,
    at: Location::caller(),
};

/// Per-thread state. No destructor, `const`-initialised: safe to touch from the allocator.
#[derive(Debug)]
struct ThreadState {
    /// The checker itself is running on this thread (see the module docs).
    in_checker: Cell<bool>,
    /// Open `capture` scopes.
    capturing: Cell<u32>,
    /// Open `no_reclaim` scopes.
    no_reclaim: Cell<u32>,
    /// Open reclaim sections (allocations inside are exempt, as `PF_MEMALLOC`).
    in_reclaim: Cell<u32>,
    /// `HeldStackOverflow` was reported for this thread.
    overflow_reported: Cell<bool>,
    /// A violation found inside the allocator waits in `PENDING` to panic.
    pending_panic: Cell<bool>,
    /// Entries used in `held`.
    len: Cell<usize>,
    held: [Cell<Held>; DEPTH],
}

thread_local! {
    static STATE: ThreadState = const {
        ThreadState {
            in_checker: Cell::new(false),
            capturing: Cell::new(0),
            no_reclaim: Cell::new(0),
            in_reclaim: Cell::new(0),
            overflow_reported: Cell::new(false),
            pending_panic: Cell::new(false),
            len: Cell::new(0),
            held: [const { Cell::new(EMPTY) }; DEPTH],
        }
    };
    /// Reports collected by `capture` (touched only with `in_checker` set).
    static CAPTURED: RefCell<Vec<Report>> = const { RefCell::new(Vec::new()) };
    /// The report a deferred panic will carry (touched only with `in_checker` set).
    static PENDING: RefCell<Option<Report>> = const { RefCell::new(None) };
}

/// Sets `in_checker` for its lifetime (restored on unwind too).
struct InChecker<'a> {
    s: &'a ThreadState,
    prev: bool,
}

impl<'a> InChecker<'a> {
    fn enter(s: &'a ThreadState) -> Self {
        let prev = s.in_checker.replace(true);
        InChecker { s, prev }
    }
}

impl Drop for InChecker<'_> {
    fn drop(&mut self) {
        self.s.in_checker.set(self.prev);
    }
}

/// Runs `f` with `in_checker` set (when the thread-local is still alive).
fn with_checker<R>(f: impl FnOnce() -> R) -> R {
    match STATE.try_with(|s| s.in_checker.replace(true)) {
        Ok(prev) => {
            struct Restore(bool);
            impl Drop for Restore {
                fn drop(&mut self) {
                    let prev = self.0;
                    let _ = STATE.try_with(|s| s.in_checker.set(prev));
                }
            }
            let _restore = Restore(prev);
            f()
        }
        Err(_) => f(),
    }
}

#[inline]
fn active(s: &ThreadState) -> bool {
    !s.in_checker.get() && (policy_on() || s.capturing.get() > 0)
}

/// A backtrace for a report: always for allocations (whose `file:line` is the allocator's),
/// otherwise only when `RUST_BACKTRACE` asks for one.
fn backtrace(force: bool) -> Option<String> {
    use std::backtrace::{Backtrace, BacktraceStatus};
    let bt = if force { Backtrace::force_capture() } else { Backtrace::capture() };
    (bt.status() == BacktraceStatus::Captured).then(|| bt.to_string())
}

fn thread_name() -> String {
    let t = std::thread::current();
    match t.name() {
        Some(n) => n.to_owned(),
        None => format!("{:?}", t.id()),
    }
}

// ---------------------------------------------------------------------------------------------
// Class ids and priming.

/// The class's id, assigning one (and priming the graph) at first use. `None` when the graph
/// is full.
#[inline]
fn class_id(
    s: &ThreadState,
    class: &'static LockClass,
    at: &'static Location<'static>,
) -> Option<u16> {
    match class.raw_id().load(Ordering::Acquire) {
        0 => class_id_slow(s, class, at),
        ID_EXHAUSTED => None,
        v => Some((v - 1) as u16),
    }
}

#[cold]
fn class_id_slow(
    s: &ThreadState,
    class: &'static LockClass,
    at: &'static Location<'static>,
) -> Option<u16> {
    let exhausted = {
        let _g = InChecker::enter(s);
        let mut slow = lock(&SLOW);
        prime(&mut slow);
        assign(&mut slow, class)
    };
    match class.raw_id().load(Ordering::Acquire) {
        0 | ID_EXHAUSTED => {
            if exhausted && !EXHAUSTED_REPORTED.swap(true, Ordering::Relaxed) {
                let report = {
                    let _g = InChecker::enter(s);
                    Report {
                        rule: Rule::ClassesExhausted,
                        acquired: Site { class: class.name(), location: at, thread: thread_name() },
                        held: None,
                        chain: Vec::new(),
                        held_locks: held_sites(s),
                        backtrace: backtrace(false),
                    }
                };
                raise(s, report, false);
            }
            None
        }
        v => Some((v - 1) as u16),
    }
}

/// Seeds the graph with `resv -> reclaim -> signalling` (outer classes add `outer -> resv`
/// as they get ids), as `dma_resv_lockdep` and `dma_fence_init`'s priming do in the kernel.
fn prime(slow: &mut Slow) {
    if slow.primed {
        return;
    }
    slow.primed = true;
    for c in [&RESV, &RECLAIM, &SIGNALLING] {
        assign(slow, c);
    }
    primed_edge(slow, &RESV, &RECLAIM);
    primed_edge(slow, &RECLAIM, &SIGNALLING);
}

fn primed_edge(slow: &mut Slow, from: &'static LockClass, to: &'static LockClass) {
    let a = (from.raw_id().load(Ordering::Relaxed) - 1) as u16;
    let b = (to.raw_id().load(Ordering::Relaxed) - 1) as u16;
    set_edge(a, b);
    slow.record(a, b, EdgeSlot { primed: true, thread: ThreadTag::of("(primed)"), ..EMPTY_SLOT });
}

/// Gives `class` an id under the lock. Returns whether it found no room.
fn assign(slow: &mut Slow, class: &'static LockClass) -> bool {
    if class.raw_id().load(Ordering::Relaxed) != 0 {
        return false;
    }
    if slow.count >= MAX_CLASSES {
        class.raw_id().store(ID_EXHAUSTED, Ordering::Release);
        return true;
    }
    let id = slow.count;
    slow.classes[id] = Some(class);
    slow.count += 1;
    class.raw_id().store(id as u32 + 1, Ordering::Release);
    if class.kind() == ClassKind::Outer {
        primed_edge(slow, class, &RESV);
    }
    false
}

// ---------------------------------------------------------------------------------------------
// The graph.

#[inline]
fn edge_known(a: u16, b: u16) -> bool {
    let (a, b) = (a as usize, b as usize);
    ADJ[a][b / 64].load(Ordering::Relaxed) & (1 << (b % 64)) != 0
}

fn set_edge(a: u16, b: u16) {
    let (a, b) = (a as usize, b as usize);
    ADJ[a][b / 64].fetch_or(1 << (b % 64), Ordering::Relaxed);
}

/// Breadth-first search over the bitset rows for a path `start ->* goal`; returns it (both
/// ends included). Allocates only for the found path.
fn find_path(start: u16, goal: u16) -> Option<Vec<u16>> {
    let mut visited = [0u64; WORDS];
    let mut parent = [u16::MAX; MAX_CLASSES];
    let mut queue = [0u16; MAX_CLASSES];
    let (mut head, mut tail) = (0usize, 1usize);
    queue[0] = start;
    visited[start as usize / 64] |= 1 << (start % 64);
    while head < tail {
        let u = queue[head];
        head += 1;
        if u == goal {
            let mut path = vec![goal];
            let mut v = goal;
            while v != start {
                v = parent[v as usize];
                path.push(v);
            }
            path.reverse();
            return Some(path);
        }
        for (w, word) in ADJ[u as usize].iter().enumerate() {
            let mut bits = word.load(Ordering::Relaxed) & !visited[w];
            visited[w] |= bits;
            while bits != 0 {
                let v = (w * 64) as u16 + bits.trailing_zeros() as u16;
                bits &= bits - 1;
                parent[v as usize] = u;
                queue[tail] = v;
                tail += 1;
            }
        }
    }
    None
}

/// Records the edge `held -> (id, class)` or reports the cycle it would close. Returns
/// whether it was fine.
fn check_edge(
    s: &ThreadState,
    held: &Held,
    class: &'static LockClass,
    id: u16,
    at: &'static Location<'static>,
    from_alloc: bool,
) -> bool {
    if edge_known(held.id, id) {
        return true;
    }
    check_edge_slow(s, held, class, id, at, from_alloc)
}

#[cold]
fn check_edge_slow(
    s: &ThreadState,
    held: &Held,
    class: &'static LockClass,
    id: u16,
    at: &'static Location<'static>,
    from_alloc: bool,
) -> bool {
    let report = {
        let _g = InChecker::enter(s);
        let mut slow = lock(&SLOW);
        if edge_known(held.id, id) {
            return true;
        }
        match find_path(id, held.id) {
            None => {
                set_edge(held.id, id);
                slow.record(
                    held.id,
                    id,
                    EdgeSlot {
                        held_at: Some(held.at),
                        taken_at: Some(at),
                        thread: ThreadTag::current(),
                        ..EMPTY_SLOT
                    },
                );
                return true;
            }
            Some(path) => {
                let rule = classify(s, class, held, &path);
                if s.capturing.get() == 0
                    && policy() == Policy::Log
                    && slow.logged.contains(&log_key(rule, at, Some(held.at)))
                {
                    // Logged before: count it, skip building the report (and backtrace).
                    VIOLATIONS.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                let chain = path
                    .windows(2)
                    .map(|w| {
                        let info = slow.info(w[0], w[1]).copied().unwrap_or(EMPTY_SLOT);
                        ChainEdge {
                            from: slow.name(w[0]),
                            to: slow.name(w[1]),
                            held_at: info.held_at,
                            taken_at: info.taken_at,
                            thread: info.thread.as_str().to_owned(),
                            primed: info.primed,
                        }
                    })
                    .collect::<Vec<_>>();
                drop(slow);
                let thread = thread_name();
                Report {
                    rule,
                    acquired: Site { class: class.name(), location: at, thread: thread.clone() },
                    held: Some(Site { class: held.class.name(), location: held.at, thread }),
                    chain,
                    held_locks: held_sites(s),
                    backtrace: backtrace(from_alloc),
                }
            }
        }
    };
    raise(s, report, from_alloc);
    false
}

/// Names the rule a cycle breaks, from what the thread holds and what it takes.
fn classify(s: &ThreadState, class: &'static LockClass, held: &Held, path: &[u16]) -> Rule {
    let holds = |c: &'static LockClass| stack(s).any(|h| core::ptr::eq(h.class, c));
    let sig_id = (SIGNALLING.raw_id().load(Ordering::Relaxed) - 1) as u16;
    if core::ptr::eq(class, &RESV) && holds(&SIGNALLING) {
        Rule::ResvInSignalling
    } else if core::ptr::eq(class, &RECLAIM) && holds(&SIGNALLING) {
        Rule::ReclaimInSignalling
    } else if core::ptr::eq(class, &RESV) && holds(&RECLAIM) {
        Rule::ResvInReclaim
    } else if class.is_outer() && holds(&RESV) {
        Rule::OuterUnderResv
    } else if core::ptr::eq(class, &SIGNALLING)
        || core::ptr::eq(held.class, &SIGNALLING)
        || holds(&SIGNALLING)
        || path.contains(&sig_id)
    {
        Rule::LockHeldAcrossWait
    } else {
        Rule::LockOrderInversion
    }
}

// ---------------------------------------------------------------------------------------------
// The held stack.

fn stack(s: &ThreadState) -> impl Iterator<Item = Held> + '_ {
    s.held[..s.len.get()].iter().map(Cell::get)
}

fn held_sites(s: &ThreadState) -> Vec<Site> {
    let thread = thread_name();
    stack(s)
        .map(|h| Site { class: h.class.name(), location: h.at, thread: thread.clone() })
        .collect()
}

fn push(s: &ThreadState, h: Held) -> bool {
    let len = s.len.get();
    if len == DEPTH {
        if !s.overflow_reported.replace(true) {
            let report = {
                let _g = InChecker::enter(s);
                Report {
                    rule: Rule::HeldStackOverflow,
                    acquired: Site { class: h.class.name(), location: h.at, thread: thread_name() },
                    held: None,
                    chain: Vec::new(),
                    held_locks: held_sites(s),
                    backtrace: backtrace(false),
                }
            };
            raise(s, report, false);
        }
        return false;
    }
    s.held[len].set(h);
    s.len.set(len + 1);
    check(s);
    true
}

/// The held stack's invariants (debug builds): within its depth, every entry stands for at
/// least one acquisition of a class that has this id.
#[track_caller]
fn check(s: &ThreadState) {
    debug_assert!(s.len.get() <= DEPTH);
    for h in stack(s) {
        debug_assert!(h.count >= 1, "empty held entry for `{}`", h.class.name());
        debug_assert_eq!(h.class.raw_id().load(Ordering::Relaxed), u32::from(h.id) + 1);
    }
}

/// The acquisition path shared by locks and sections. Returns whether the acquisition is now
/// on the stack (so a release must follow).
fn acquire_in(
    s: &ThreadState,
    class: &'static LockClass,
    how: Acquire,
    nest: Option<NestKey>,
    at: &'static Location<'static>,
) -> bool {
    if !active(s) {
        return false;
    }
    raise_pending(s);
    let Some(id) = class_id(s, class, at) else { return false };
    let len = s.len.get();
    if len == 0 {
        // Nothing held: no recursion to find, no edge to record.
        s.held[0].set(Held { class, id, how, nest, count: 1, at });
        s.len.set(1);
        return true;
    }
    let recursive = core::ptr::eq(class, &SIGNALLING) && how == Acquire::Shared;
    for i in (0..len).rev() {
        let mut h = s.held[i].get();
        if h.id != id {
            continue;
        }
        if (nest.is_some() && h.nest == nest) || (recursive && h.how == Acquire::Shared) {
            h.count += 1;
            s.held[i].set(h);
            check(s);
            return true;
        }
        if how == Acquire::Try {
            // A trylock of a held class fails instead of deadlocking: lockdep skips it.
            break;
        }
        let report = {
            let _g = InChecker::enter(s);
            let thread = thread_name();
            Report {
                rule: Rule::SameClassRecursion,
                acquired: Site { class: class.name(), location: at, thread: thread.clone() },
                held: Some(Site { class: h.class.name(), location: h.at, thread }),
                chain: Vec::new(),
                held_locks: held_sites(s),
                backtrace: backtrace(false),
            }
        };
        raise(s, report, false);
        return push(s, Held { class, id, how, nest, count: 1, at });
    }
    if how != Acquire::Try {
        // Edges from the held locks down to (and including) the first blocking one: the
        // older ones already have edges to it, so transitivity covers them.
        for i in (0..len).rev() {
            let h = s.held[i].get();
            if h.id != id && !check_edge(s, &h, class, id, at, false) {
                break;
            }
            if h.how != Acquire::Try {
                break;
            }
        }
    }
    push(s, Held { class, id, how, nest, count: 1, at })
}

/// [`super::lock_acquire`].
#[inline]
pub(crate) fn acquire(
    class: &'static LockClass,
    how: Acquire,
    nest: Option<NestKey>,
    at: &'static Location<'static>,
) {
    if !policy_on() && CAPTURING_THREADS.load(Ordering::Relaxed) == 0 {
        return;
    }
    let _ = STATE.try_with(|s| acquire_in(s, class, how, nest, at));
}

/// [`super::lock_release`].
#[inline]
pub(crate) fn release(class: &'static LockClass, nest: Option<NestKey>) {
    let _ = STATE.try_with(|s| release_in(s, class, nest));
}

fn release_in(s: &ThreadState, class: &'static LockClass, nest: Option<NestKey>) {
    let len = s.len.get();
    if len == 0 || s.in_checker.get() {
        return;
    }
    let id = match class.raw_id().load(Ordering::Relaxed) {
        0 | ID_EXHAUSTED => return,
        v => (v - 1) as u16,
    };
    let mut top = s.held[len - 1].get();
    if top.id == id && top.nest == nest {
        // The common cases: the last acquisition is released first, or one level of a
        // nested section (a fence signalled inside a scheduler's section) ends.
        if top.count == 1 {
            s.len.set(len - 1);
        } else {
            top.count -= 1;
            s.held[len - 1].set(top);
        }
        return;
    }
    let found = (0..len)
        .rev()
        .find(|&i| {
            let h = s.held[i].get();
            h.id == id && h.nest == nest
        })
        .or_else(|| (0..len).rev().find(|&i| s.held[i].get().id == id));
    // Not found: taken while checking was off, or not tracked (overflow); nothing to undo.
    let Some(i) = found else { return };
    let mut h = s.held[i].get();
    if h.count > 1 {
        h.count -= 1;
        s.held[i].set(h);
        return;
    }
    for j in i..len - 1 {
        s.held[j].set(s.held[j + 1].get());
    }
    s.len.set(len - 1);
    check(s);
}

/// Enters a signalling (`Shared`) or reclaim section. Returns whether the exit must be
/// recorded.
#[inline]
pub(crate) fn section_enter(
    class: &'static LockClass,
    how: Acquire,
    at: &'static Location<'static>,
) -> bool {
    STATE
        .try_with(|s| {
            if core::ptr::eq(class, &RECLAIM) {
                if s.in_checker.get() {
                    return false;
                }
                let depth = s.in_reclaim.get();
                s.in_reclaim.set(depth + 1);
                if depth == 0 {
                    acquire_in(s, class, how, None, at);
                }
                true
            } else if s.len.get() == 0
                && !s.in_checker.get()
                && !s.pending_panic.get()
                && policy_on()
            {
                // Nothing held (the common case of a fence signalled outside any lock): the
                // entry goes straight to the bottom of the stack, as `acquire_in` would put
                // it, without its recursion and edge checks (there is nothing to check
                // against). A class without an id yet, or exhausted ids, take the full path.
                match class.raw_id().load(Ordering::Acquire) {
                    0 | ID_EXHAUSTED => acquire_in(s, class, how, None, at),
                    v => {
                        let id = (v - 1) as u16;
                        s.held[0].set(Held { class, id, how, nest: None, count: 1, at });
                        s.len.set(1);
                        true
                    }
                }
            } else {
                acquire_in(s, class, how, None, at)
            }
        })
        .unwrap_or(false)
}

/// Leaves a section entered with [`section_enter`].
#[inline]
pub(crate) fn section_exit(class: &'static LockClass) {
    let _ = STATE.try_with(|s| {
        if core::ptr::eq(class, &RECLAIM) {
            let depth = s.in_reclaim.get().saturating_sub(1);
            s.in_reclaim.set(depth);
            if depth == 0 {
                release_in(s, class, None);
            }
        } else if s.len.get() == 1 && !s.in_checker.get() && s.held[0].get().count == 1 {
            // The entry `section_enter` pushed on an empty stack, released first: pop it
            // (`release_in`'s common case, without its search).
            let top = s.held[0].get();
            if core::ptr::eq(top.class, class) && top.nest.is_none() {
                s.len.set(0);
            } else {
                release_in(s, class, None);
            }
        } else {
            release_in(s, class, None);
        }
        raise_pending(s);
    });
}

/// Reports a cookie section ended on another thread.
pub(crate) fn wrong_thread_end(
    begun_at: &'static Location<'static>,
    began_on: String,
    at: &'static Location<'static>,
) {
    let _ = STATE.try_with(|s| {
        if !active(s) {
            return;
        }
        let report = {
            let _g = InChecker::enter(s);
            Report {
                rule: Rule::SectionEndedOnWrongThread,
                acquired: Site { class: SIGNALLING.name(), location: at, thread: thread_name() },
                held: Some(Site { class: SIGNALLING.name(), location: begun_at, thread: began_on }),
                chain: Vec::new(),
                held_locks: held_sites(s),
                backtrace: backtrace(false),
            }
        };
        raise(s, report, false);
    });
}

/// [`super::might_wait`] and [`super::might_wait_interruptible`]: a momentary exclusive
/// acquisition of `signalling`.
#[inline]
pub(crate) fn might_wait(interruptible: bool, at: &'static Location<'static>) {
    let _ = STATE.try_with(|s| {
        if s.len.get() == 0 || !active(s) {
            return;
        }
        might_wait_slow(s, interruptible, at);
    });
}

fn might_wait_slow(s: &ThreadState, interruptible: bool, at: &'static Location<'static>) {
    raise_pending(s);
    let Some(sig) = class_id(s, &SIGNALLING, at) else { return };
    let simple = |rule: Rule, h: &Held| {
        let _g = InChecker::enter(s);
        let thread = thread_name();
        Report {
            rule,
            acquired: Site { class: SIGNALLING.name(), location: at, thread: thread.clone() },
            held: Some(Site { class: h.class.name(), location: h.at, thread }),
            chain: Vec::new(),
            held_locks: held_sites(s),
            backtrace: backtrace(false),
        }
    };
    if !interruptible {
        if let Some(h) = stack(s).find(|h| h.class.is_reset_needed()) {
            let report = simple(Rule::ResetLockAcrossWait, &h);
            raise(s, report, false);
        }
    }
    if let Some(h) = stack(s).find(|h| h.id == sig) {
        let report = simple(Rule::WaitInSignalling, &h);
        raise(s, report, false);
        return;
    }
    for i in (0..s.len.get()).rev() {
        let h = s.held[i].get();
        if h.class.is_reset_needed() {
            // Interruptible: the reset worker can interrupt the wait, so there is no
            // dependency on signalling. Non-interruptible: reported above by rule 7 (the
            // edge is not recorded, as lockdep records nothing after a violation).
            continue;
        }
        if !check_edge(s, &h, &SIGNALLING, sig, at, false) || h.how != Acquire::Try {
            break;
        }
    }
}

/// [`super::might_alloc`] and the allocator hook: a momentary acquisition of `reclaim`.
#[inline]
pub(crate) fn might_alloc(at: &'static Location<'static>, from_alloc: bool) {
    let _ = STATE.try_with(|s| {
        if s.len.get() == 0
            || s.no_reclaim.get() > 0
            || s.in_reclaim.get() > 0
            || !active(s)
            || (from_alloc && std::thread::panicking())
        {
            return;
        }
        might_alloc_slow(s, at, from_alloc);
    });
}

fn might_alloc_slow(s: &ThreadState, at: &'static Location<'static>, from_alloc: bool) {
    if !from_alloc {
        raise_pending(s);
    }
    let Some(id) = class_id(s, &RECLAIM, at) else { return };
    for i in (0..s.len.get()).rev() {
        let h = s.held[i].get();
        if !check_edge(s, &h, &RECLAIM, id, at, from_alloc) || h.how != Acquire::Try {
            break;
        }
    }
}

/// Enters (`true`) or leaves a `no_reclaim` scope.
pub(crate) fn no_reclaim(enter: bool) {
    let _ = STATE.try_with(|s| {
        let d = s.no_reclaim.get();
        s.no_reclaim.set(if enter { d + 1 } else { d.saturating_sub(1) });
    });
}

// ---------------------------------------------------------------------------------------------
// Delivery.

/// Counts, stores and delivers a report according to the capture state and the policy.
/// `from_alloc`: we are inside the global allocator and must not unwind.
fn raise(s: &ThreadState, report: Report, from_alloc: bool) {
    VIOLATIONS.fetch_add(1, Ordering::Relaxed);
    let g = InChecker::enter(s);
    {
        let mut ring = lock(&REPORTS);
        if ring.len() == MAX_REPORTS {
            ring.pop_front();
        }
        ring.push_back(report.clone());
    }
    if s.capturing.get() > 0 {
        // `try_with`: a report raised from a thread-local destructor is dropped, not a crash.
        let _ = CAPTURED.try_with(|c| c.borrow_mut().push(report));
        return;
    }
    match policy() {
        Policy::Off => {}
        Policy::Log => {
            let key = log_key(
                report.rule,
                report.acquired.location,
                report.held.as_ref().map(|h| h.location),
            );
            let first = lock(&SLOW).logged.insert(key);
            if first {
                tracing::error!(target: "gpusched::lockdep", rule = report.rule.name(), "{report}");
            }
        }
        Policy::Panic if from_alloc || std::thread::panicking() => {
            if PENDING.try_with(|p| *p.borrow_mut() = Some(report)).is_ok() {
                s.pending_panic.set(true);
            }
        }
        Policy::Panic => {
            // `g` stays alive: the panic message's allocation is the checker's own.
            panic!("{report}");
        }
    }
    drop(g);
}

/// The `Policy::Log` de-duplication key: the rule and both places.
fn log_key(
    rule: Rule,
    at: &'static Location<'static>,
    held_at: Option<&'static Location<'static>>,
) -> (Rule, usize, usize) {
    let addr = |l: &'static Location<'static>| l as *const Location<'static> as usize;
    (rule, addr(at), held_at.map_or(0, addr))
}

/// Panics with a report deferred from inside the allocator, if any (and not unwinding).
#[inline]
fn raise_pending(s: &ThreadState) {
    if s.pending_panic.get() && !std::thread::panicking() {
        raise_pending_slow(s);
    }
}

#[cold]
fn raise_pending_slow(s: &ThreadState) {
    s.pending_panic.set(false);
    let _g = InChecker::enter(s);
    if let Some(report) = PENDING.try_with(|p| p.borrow_mut().take()).ok().flatten() {
        panic!("{report}");
    }
}

pub(crate) fn violations() -> u64 {
    VIOLATIONS.load(Ordering::Relaxed)
}

pub(crate) fn reports(take: bool) -> Vec<Report> {
    with_checker(|| {
        let mut ring = lock(&REPORTS);
        if take {
            ring.drain(..).collect()
        } else {
            ring.iter().cloned().collect()
        }
    })
}

pub(crate) fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<Report>) {
    struct Scope;
    impl Drop for Scope {
        fn drop(&mut self) {
            let _ = STATE.try_with(|s| s.capturing.set(s.capturing.get().saturating_sub(1)));
            CAPTURING_THREADS.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let start = with_checker(|| CAPTURED.try_with(|c| c.borrow().len()).unwrap_or(0));
    CAPTURING_THREADS.fetch_add(1, Ordering::Relaxed);
    let _ = STATE.try_with(|s| s.capturing.set(s.capturing.get() + 1));
    let scope = Scope;
    let r = f();
    drop(scope);
    let reports = with_checker(|| {
        CAPTURED
            .try_with(|c| {
                let mut c = c.borrow_mut();
                let start = start.min(c.len());
                c.split_off(start)
            })
            .unwrap_or_default()
    });
    (r, reports)
}
