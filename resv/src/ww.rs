//! Wound/wait mutexes (`include/linux/ww_mutex.h`, `kernel/locking/ww_mutex.h`,
//! `Documentation/locking/ww-mutex-design.rst`).
//!
//! A set of [`WwMutex`]es of one [`WwClass`] can be locked in any order by several threads at
//! once without deadlock: each thread locks under an [`AcquireCtx`] that carries a *stamp*
//! (a ticket: smaller is older). When two contexts contend, the older one wins:
//!
//! - **wait-die** ([`WwClass::wait_die`], the kernel's reservation class): a younger context
//!   that wants a lock held by an older one *dies* at once ([`WwError::Deadlock`]); an older
//!   one waits for a younger holder.
//! - **wound-wait** ([`WwClass::wound_wait`]): an older context that wants a lock held by a
//!   younger one *wounds* it (sets a flag in the younger context and wakes it if it is
//!   waiting) and waits; a wounded context gets [`WwError::Deadlock`] the next time it would
//!   block (or at once, when it is already blocked). A younger one waits for an older holder.
//!
//! On `Deadlock` the caller releases every lock of the context (drops its guards), then takes
//! the contended lock with [`WwMutex::lock_slow`] (which waits and cannot fail) and locks the
//! rest again. The context keeps its stamp across the back-off, so it ages and eventually wins:
//! no context starves. A context that holds no locks never dies and is never asked to back off.
//!
//! Hand-over is oldest first: a context does not take a free mutex while an older context
//! waits for it, so the oldest context is never overtaken (under wait-die, a context holding
//! locks that finds an older waiter ahead dies, as a holder would make it). Blocking is a
//! per-mutex `std::sync::Mutex` + `Condvar` (loom's, under `cfg(gpusched_loom)`); an unlock
//! notifies only when someone waits. Before it sleeps, a waiter spins briefly (`spin.rs`)
//! while the mutex's state keeps changing or its holder keeps taking and releasing locks: on
//! a machine where both run at once the wait is usually over in a few hundred nanoseconds,
//! far less than a sleep and a wake-up, and a holder that stops making progress (preempted,
//! blocked, or doing long work) sends the waiter to sleep within a couple of microseconds.
//! Interruptible waits poll their [`InterruptDomain`] every millisecond (its event is private
//! to the fence crate).
//!
//! The file is long (about 800 lines) because the class, the context, the mutex's state
//! protocol and the guard are one concern: each of them reads or writes the others' state
//! under the same rules (stamps, wounds, the hand-over order). The spin is in `spin.rs`.
//!
//! # Contract rules enforced here
//! - Every acquisition is reported to the signalling-contract checker
//!   ([`gpusched_fence::lockdep`]) under the class's lock class (by default
//!   [`lockdep::RESV`]), with the context as nest key (locks of one context count as one held
//!   entry); a trylock is annotated [`Acquire::Try`], a lock without context has no nest key.
//!   The checker reports a reservation lock inside a signalling section and a blocking one
//!   inside a reclaim section.
//! - Locking a mutex twice in one context is [`WwError::AlreadyLocked`], not a deadlock.
//! - Guards borrow their context, so a context cannot end while it holds locks; an
//!   [`AcquireCtx`] is `!Send` (its locks are released on the thread that took them).
//! - Misuse (mixing classes, `lock` after [`AcquireCtx::done`], `lock_slow` while holding
//!   locks) panics.

use core::cell::{Cell, UnsafeCell};
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::AtomicU64 as StampCounter;
use std::time::Duration;

use gpusched_fence::lockdep::{self, Acquire, LockClass, NestKey};
use gpusched_fence::InterruptDomain;

use crate::spin::{Progress, Spin};
use crate::sync::{lock, wait, wait_timeout, Arc, AtomicBool, Condvar, Mutex, Ordering};

/// How often a blocked interruptible lock re-checks its [`InterruptDomain`]: the domain's
/// event is private to the fence crate, so the wait polls.
const INTERRUPT_POLL: Duration = Duration::from_millis(1);

/// Source of context ids (nest keys for the checker), unique across classes. Not modelled by
/// loom: ids are names, not synchronisation.
static CONTEXT_IDS: StampCounter = StampCounter::new(1);

/// Why a wound/wait lock was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum WwError {
    /// Taking the lock could deadlock with an older context: release every lock of this
    /// context, [`lock_slow`](WwMutex::lock_slow) the contended one, and retry (`-EDEADLK`).
    #[error("would deadlock with an older context: back off and retry")]
    Deadlock,
    /// This context already holds the lock (`-EALREADY`).
    #[error("the lock is already held by this acquire context")]
    AlreadyLocked,
    /// The interrupt domain interrupted the wait (`-EINTR`); retry after the reset.
    #[error("interrupted by a reset while waiting for the lock")]
    Interrupted,
}

impl WwError {
    /// Whether this is [`WwError::Deadlock`] (back off and retry).
    pub fn is_deadlock(&self) -> bool {
        matches!(self, WwError::Deadlock)
    }

    /// Whether this is [`WwError::AlreadyLocked`].
    pub fn is_already_locked(&self) -> bool {
        matches!(self, WwError::AlreadyLocked)
    }

    /// Whether this is [`WwError::Interrupted`].
    pub fn is_interrupted(&self) -> bool {
        matches!(self, WwError::Interrupted)
    }
}

/// The deadlock-avoidance algorithm of a [`WwClass`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WwAlgorithm {
    /// An older context wounds a younger holder and waits.
    WoundWait,
    /// A younger context dies when it meets an older holder.
    WaitDie,
}

/// A class of wound/wait mutexes: the mutexes one [`AcquireCtx`] may lock together, sharing
/// one stamp sequence and one algorithm. Declare it in a `static`:
///
/// ```
/// use gpusched_resv::WwClass;
/// static BO_CLASS: WwClass = WwClass::wound_wait("buffer-objects");
/// assert_eq!(BO_CLASS.name(), "buffer-objects");
/// ```
pub struct WwClass {
    name: &'static str,
    algorithm: WwAlgorithm,
    lock_class: &'static LockClass,
    /// Next stamp to hand out; a smaller stamp is an older context.
    stamps: StampCounter,
}

impl fmt::Debug for WwClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WwClass")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("lock_class", &self.lock_class.name())
            .finish()
    }
}

impl WwClass {
    /// A wound-wait class, checked under [`lockdep::RESV`].
    pub const fn wound_wait(name: &'static str) -> Self {
        Self::new(name, WwAlgorithm::WoundWait)
    }

    /// A wait-die class (the kernel's `reservation_ww_class`), checked under
    /// [`lockdep::RESV`].
    pub const fn wait_die(name: &'static str) -> Self {
        Self::new(name, WwAlgorithm::WaitDie)
    }

    const fn new(name: &'static str, algorithm: WwAlgorithm) -> Self {
        WwClass { name, algorithm, lock_class: &lockdep::RESV, stamps: StampCounter::new(1) }
    }

    /// The same class checked under another checker lock class (for wound/wait locks that are
    /// not reservation locks).
    pub const fn with_lock_class(self, lock_class: &'static LockClass) -> Self {
        WwClass { name: self.name, algorithm: self.algorithm, lock_class, stamps: self.stamps }
    }

    /// The class name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The class's algorithm.
    pub fn algorithm(&self) -> WwAlgorithm {
        self.algorithm
    }

    /// The checker lock class acquisitions are reported under.
    pub fn lock_class(&self) -> &'static LockClass {
        self.lock_class
    }

    fn next_stamp(&self) -> u64 {
        self.stamps.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
    }
}

/// The part of a context that mutexes and other contexts see.
#[derive(Debug)]
struct CtxShared {
    /// The context's stamp: smaller is older. Fixed for the context's life.
    stamp: u64,
    /// Set (wound-wait only) by an older context that wants a lock this one holds. Read by
    /// the owner when it would block; cleared by the owner when it holds no locks.
    wounded: AtomicBool,
    /// The mutex queue the owner is blocked on, if any, so that a wounder can wake it. Set and
    /// cleared by the owner, read by wounders; lock order: a wounder takes this, then the
    /// queue's state lock (and never holds another queue's state lock meanwhile).
    waiting_on: Mutex<Option<Arc<Queue>>>,
    /// Bumped by the owner thread each time it takes or releases a lock: a waiter spinning on
    /// a mutex this context holds watches it to tell a running holder from a stalled one.
    progress: Progress,
    /// Set by [`AcquireCtx::done`]: the context takes no more locks, so it never waits for
    /// another one and only releases from now on.
    done: AtomicBool,
}

/// An acquire context (`struct ww_acquire_ctx`): one transaction of wound/wait locking. Its
/// stamp is fixed at creation and kept across back-off and retry.
///
/// `!Send`: its locks belong to the thread that took them.
pub struct AcquireCtx {
    class: &'static WwClass,
    id: u64,
    shared: Arc<CtxShared>,
    /// Locks held now (owner thread only).
    acquired: Cell<usize>,
    /// Set by [`AcquireCtx::done`]: no more locks may be taken.
    done: Cell<bool>,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for AcquireCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquireCtx")
            .field("class", &self.class.name)
            .field("stamp", &self.shared.stamp)
            .field("acquired", &self.acquired.get())
            .field("wounded", &self.shared.wounded.load(Ordering::Relaxed))
            .field("done", &self.done.get())
            .finish()
    }
}

impl AcquireCtx {
    /// Starts a transaction on `class` (`ww_acquire_init`): takes the next stamp.
    pub fn new(class: &'static WwClass) -> Self {
        AcquireCtx {
            class,
            id: CONTEXT_IDS.fetch_add(1, core::sync::atomic::Ordering::Relaxed),
            shared: Arc::new(CtxShared {
                stamp: class.next_stamp(),
                wounded: AtomicBool::new(false),
                waiting_on: Mutex::new(None),
                progress: Progress::new(),
                done: AtomicBool::new(false),
            }),
            acquired: Cell::new(0),
            done: Cell::new(false),
            _not_send: PhantomData,
        }
    }

    /// Marks the acquire phase over (`ww_acquire_done`): taking another lock with this context
    /// panics. Locks already held stay held.
    pub fn done(&self) {
        self.done.set(true);
        self.shared.done.store(true, Ordering::Release);
    }

    /// The stamp: a smaller stamp is an older context, which wins contention.
    pub fn stamp(&self) -> u64 {
        self.shared.stamp
    }

    /// The class this context locks.
    pub fn class(&self) -> &'static WwClass {
        self.class
    }

    /// How many locks the context holds now.
    pub fn acquired(&self) -> usize {
        self.acquired.get()
    }

    /// Whether an older context has wounded this one (wound-wait classes): it will get
    /// [`WwError::Deadlock`] the next time it would block.
    pub fn is_wounded(&self) -> bool {
        self.shared.wounded.load(Ordering::SeqCst)
    }

    fn nest_key(&self) -> NestKey {
        NestKey(self.id)
    }

    /// Checks a lock attempt by this context on a mutex of `class`.
    #[track_caller]
    fn check_can_lock(&self, class: &'static WwClass) {
        if !core::ptr::eq(self.class, class) {
            class_mismatch(self.class.name, class.name);
        }
        if self.done.get() {
            lock_after_done();
        }
        if self.acquired.get() == 0 {
            // ww_mutex: a context that holds nothing has nothing to back off from.
            self.shared.wounded.store(false, Ordering::SeqCst);
        }
    }
}

impl Drop for AcquireCtx {
    fn drop(&mut self) {
        if self.acquired.get() != 0 && !std::thread::panicking() {
            leaked_guards(self.acquired.get());
        }
    }
}

#[cold]
#[track_caller]
fn class_mismatch(ctx: &str, mutex: &str) -> ! {
    panic!(
        "wound/wait misuse: an acquire context of class `{ctx}` locked a mutex of class `{mutex}`"
    )
}

#[cold]
#[track_caller]
fn lock_after_done() -> ! {
    panic!("wound/wait misuse: lock with an acquire context after AcquireCtx::done()")
}

#[cold]
#[track_caller]
fn slow_while_holding(n: usize) -> ! {
    panic!(
        "wound/wait misuse: lock_slow with a context that still holds {n} lock(s); release \
         them all before taking the contended lock"
    )
}

#[cold]
fn leaked_guards(n: usize) -> ! {
    panic!("wound/wait misuse: an acquire context ended with {n} lock(s) held (leaked guards)")
}

/// Who holds a mutex. Protected by [`Queue::state`].
#[derive(Debug)]
enum Owner {
    /// Unlocked.
    Free,
    /// Locked without a context ([`WwMutex::lock_no_ctx`], or a trylock without one).
    NoCtx,
    /// Locked by a context.
    Ctx(Arc<CtxShared>),
}

/// The state of a mutex, under [`Queue::state`].
#[derive(Debug)]
struct State {
    owner: Owner,
    /// Threads blocked on [`Queue::cv`] now: an unlock notifies only when there are some
    /// (a notification is a system call even without waiters).
    waiters: u32,
    /// Stamps of the contexts waiting for the mutex (unordered). Grows on the blocking path
    /// only and keeps its capacity.
    waiting: Vec<u64>,
}

impl State {
    /// Whether a context older than `me` waits for the mutex (never, for a context-less
    /// locker, which does not take part in the hand-over order).
    fn older_waiter(&self, me: Option<&Arc<CtxShared>>) -> bool {
        me.is_some_and(|m| self.waiting.iter().any(|&s| s < m.stamp))
    }
}

/// The blocking part of a mutex: owner and wait queue. Shared (`Arc`) so a wounder can wake a
/// context blocked on it.
#[derive(Debug)]
struct Queue {
    state: Mutex<State>,
    /// Bumped under `state`'s lock each time the owner changes (a hint read without the lock
    /// by spinning waiters, who re-check everything under the lock afterwards).
    version: Progress,
    /// Notified (all) on unlock when there are waiters, and when a waiter is wounded.
    cv: Condvar,
}

/// A wound/wait mutex (`struct ww_mutex`) protecting a `T`.
///
/// ```
/// use gpusched_resv::{AcquireCtx, WwClass, WwMutex};
/// static CLASS: WwClass = WwClass::wait_die("example");
///
/// let (a, b) = (WwMutex::new(&CLASS, 1), WwMutex::new(&CLASS, 2));
/// let ctx = AcquireCtx::new(&CLASS);
/// let mut ga = a.lock(&ctx).unwrap();
/// let gb = b.lock(&ctx).unwrap();
/// assert!(a.lock(&ctx).is_err_and(|e| e.is_already_locked()));
/// ctx.done();
/// *ga += *gb;
/// drop((ga, gb));
/// assert_eq!(a.into_inner(), 3);
/// ```
pub struct WwMutex<T> {
    class: &'static WwClass,
    queue: Arc<Queue>,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through a guard, and a guard exists only while the owner
// state says the mutex is held (mutual exclusion), so sharing the mutex hands a `T` from thread
// to thread but never to two at once: `T: Send` suffices, as for `std::sync::Mutex`.
unsafe impl<T: Send> Sync for WwMutex<T> {}

impl<T> fmt::Debug for WwMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WwMutex")
            .field("class", &self.class.name)
            .field("locked", &self.is_locked())
            .finish_non_exhaustive()
    }
}

impl<T: Default> Default for WwMutex<T> {
    /// A mutex of `crate::RESV_WW_CLASS` around `T::default()`.
    fn default() -> Self {
        WwMutex::new(&crate::RESV_WW_CLASS, T::default())
    }
}

impl<T> WwMutex<T> {
    /// A new unlocked mutex of `class`.
    pub fn new(class: &'static WwClass, value: T) -> Self {
        WwMutex {
            class,
            queue: Arc::new(Queue {
                state: Mutex::new(State { owner: Owner::Free, waiters: 0, waiting: Vec::new() }),
                version: Progress::new(),
                cv: Condvar::new(),
            }),
            data: UnsafeCell::new(value),
        }
    }

    /// The mutex's class.
    pub fn class(&self) -> &'static WwClass {
        self.class
    }

    /// Whether someone holds the mutex now (a racy snapshot).
    pub fn is_locked(&self) -> bool {
        !matches!(lock(&self.queue.state).owner, Owner::Free)
    }

    /// The protected value, through exclusive access (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Consumes the mutex, returning the value.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }

    /// Locks under `ctx` (`ww_mutex_lock`), waiting while an older context (or a context-less
    /// locker) holds it.
    ///
    /// # Errors
    /// [`WwError::Deadlock`]: back off (drop every guard of `ctx`), then
    /// [`lock_slow`](WwMutex::lock_slow) this mutex; [`WwError::AlreadyLocked`]: `ctx` holds it.
    ///
    /// # Panics
    /// When `ctx` is of another class or [`done`](AcquireCtx::done).
    #[track_caller]
    pub fn lock<'a>(&'a self, ctx: &'a AcquireCtx) -> Result<WwGuard<'a, T>, WwError> {
        ctx.check_can_lock(self.class);
        self.annotated(Some(ctx), |m| m.acquire(Some(ctx), None))
    }

    /// Like [`lock`](WwMutex::lock), but a wait returns [`WwError::Interrupted`] when
    /// `domain` opens an interrupt section during it, or has one open when it starts.
    ///
    /// # Errors
    /// As [`lock`](WwMutex::lock), plus [`WwError::Interrupted`].
    #[track_caller]
    pub fn lock_interruptible<'a>(
        &'a self,
        ctx: &'a AcquireCtx,
        domain: &InterruptDomain,
    ) -> Result<WwGuard<'a, T>, WwError> {
        ctx.check_can_lock(self.class);
        self.annotated(Some(ctx), |m| m.acquire(Some(ctx), Some(domain)))
    }

    /// Takes the contended lock after backing off (`ww_mutex_lock_slow`): `ctx` holds nothing,
    /// so it waits and cannot be asked to back off.
    ///
    /// # Panics
    /// When `ctx` still holds locks, is of another class, or is done.
    #[track_caller]
    pub fn lock_slow<'a>(&'a self, ctx: &'a AcquireCtx) -> WwGuard<'a, T> {
        if ctx.acquired() != 0 {
            slow_while_holding(ctx.acquired());
        }
        match self.lock(ctx) {
            Ok(g) => g,
            Err(e) => unreachable!("a context holding no locks got {e:?}"),
        }
    }

    /// [`lock_slow`](WwMutex::lock_slow) whose wait `domain` can interrupt.
    ///
    /// # Errors
    /// [`WwError::Interrupted`] only.
    ///
    /// # Panics
    /// As [`lock_slow`](WwMutex::lock_slow).
    #[track_caller]
    pub fn lock_slow_interruptible<'a>(
        &'a self,
        ctx: &'a AcquireCtx,
        domain: &InterruptDomain,
    ) -> Result<WwGuard<'a, T>, WwError> {
        if ctx.acquired() != 0 {
            slow_while_holding(ctx.acquired());
        }
        self.lock_interruptible(ctx, domain)
    }

    /// Takes the lock if it is free (`ww_mutex_trylock`), with or without a context. Never
    /// blocks, never wounds; annotated as a trylock (allowed in reclaim sections).
    ///
    /// # Panics
    /// When `ctx` is of another class or done.
    #[track_caller]
    pub fn try_lock<'a>(&'a self, ctx: Option<&'a AcquireCtx>) -> Option<WwGuard<'a, T>> {
        if let Some(c) = ctx {
            c.check_can_lock(self.class);
        }
        let mut st = lock(&self.queue.state);
        if !matches!(st.owner, Owner::Free) {
            return None;
        }
        st.owner = match ctx {
            Some(c) => Owner::Ctx(c.shared.clone()),
            None => Owner::NoCtx,
        };
        self.queue.version.bump();
        drop(st);
        lockdep::lock_acquire(self.class.lock_class, Acquire::Try, ctx.map(AcquireCtx::nest_key));
        Some(self.guard(ctx))
    }

    /// Locks without a context (`ww_mutex_lock(lock, NULL)`): a plain mutex lock that waits
    /// for any holder. Only safe from deadlock when no other wound/wait lock is held.
    #[track_caller]
    pub fn lock_no_ctx(&self) -> WwGuard<'_, T> {
        match self.annotated(None, |m| m.acquire(None, None)) {
            Ok(g) => g,
            Err(e) => unreachable!("a context-less lock got {e:?}"),
        }
    }

    /// Reports a blocking acquisition to the checker, takes the lock with `take`, and retracts
    /// the report when it fails.
    #[track_caller]
    fn annotated<'a>(
        &'a self,
        ctx: Option<&'a AcquireCtx>,
        take: impl FnOnce(&Self) -> Result<(), WwError>,
    ) -> Result<WwGuard<'a, T>, WwError> {
        let nest = ctx.map(AcquireCtx::nest_key);
        lockdep::lock_acquire(self.class.lock_class, Acquire::Exclusive, nest);
        match take(self) {
            Ok(()) => Ok(self.guard(ctx)),
            Err(e) => {
                lockdep::lock_release(self.class.lock_class, nest);
                Err(e)
            }
        }
    }

    /// Builds the guard of a lock just taken (the owner state already says so).
    fn guard<'a>(&'a self, ctx: Option<&'a AcquireCtx>) -> WwGuard<'a, T> {
        if let Some(c) = ctx {
            c.acquired.set(c.acquired.get() + 1);
            c.shared.progress.bump();
        }
        WwGuard { mutex: self, ctx, _not_send: PhantomData }
    }

    /// The wound/wait lock algorithm. On `Ok` the owner state names the caller.
    ///
    /// Hand-over is oldest first: a context does not take a free mutex while an older context
    /// waits for it (so the oldest cannot be overtaken forever), and under wait-die a context
    /// holding locks dies when it meets an older holder *or* an older waiter (as the kernel's
    /// `__ww_mutex_add_waiter`), or it could wait behind a context that waits for it.
    /// Context-less lockers take a free mutex whatever waits.
    fn acquire(
        &self,
        ctx: Option<&AcquireCtx>,
        domain: Option<&InterruptDomain>,
    ) -> Result<(), WwError> {
        let me = ctx.map(|c| &c.shared);
        let mut st = lock(&self.queue.state);
        match &st.owner {
            Owner::Free if !st.older_waiter(me) => {
                st.owner = me.map_or(Owner::NoCtx, |m| Owner::Ctx(m.clone()));
                self.queue.version.bump();
                return Ok(());
            }
            Owner::Ctx(h) if me.is_some_and(|m| Arc::ptr_eq(h, m)) => {
                return Err(WwError::AlreadyLocked)
            }
            _ => {}
        }
        // Contended: we will wait unless the algorithm says to back off.
        let epoch = match domain {
            Some(d) if d.is_interrupting() => return Err(WwError::Interrupted),
            Some(d) => d.epoch(),
            None => 0,
        };
        let algorithm = self.class.algorithm;
        let mut registered = false;
        let mut spin = Spin::new();
        let result = loop {
            let older_waiter = st.older_waiter(me);
            let holder = match &st.owner {
                Owner::Free if !older_waiter => {
                    st.owner = me.map_or(Owner::NoCtx, |m| Owner::Ctx(m.clone()));
                    self.queue.version.bump();
                    break Ok(());
                }
                Owner::Free | Owner::NoCtx => None,
                Owner::Ctx(h) => Some(h.clone()),
            };
            if let (Some(c), Some(m)) = (ctx, me) {
                if c.acquired.get() > 0 {
                    if algorithm == WwAlgorithm::WoundWait && m.wounded.load(Ordering::SeqCst) {
                        break Err(WwError::Deadlock);
                    }
                    if algorithm == WwAlgorithm::WaitDie
                        && (older_waiter || holder.as_ref().is_some_and(|h| h.stamp < m.stamp))
                    {
                        // An older context is ahead of us: die. Except that an older holder
                        // that is done (it takes no more locks, so it waits for nobody) and
                        // still releasing locks is waited for a bounded spin first: dying
                        // then would only make us wait for it in `lock_slow` after undoing
                        // our work. If it stops making progress, we die as usual.
                        let releasing = !older_waiter
                            && holder.as_ref().is_some_and(|h| h.done.load(Ordering::Acquire));
                        if releasing && spin.allowed() {
                            drop(st);
                            spin.run(
                                &self.queue.version,
                                holder.as_deref().map(|h| &h.progress),
                                None,
                            );
                            st = lock(&self.queue.state);
                            continue;
                        }
                        break Err(WwError::Deadlock);
                    }
                    if let Some(h) = &holder {
                        if algorithm == WwAlgorithm::WoundWait
                            && m.stamp < h.stamp
                            && !h.wounded.swap(true, Ordering::SeqCst)
                        {
                            // The holder is younger: wound it, wake it if it waits, then wait.
                            // Its queue lock is taken without ours held (lock order).
                            drop(st);
                            wake_wounded(h);
                            st = lock(&self.queue.state);
                            continue;
                        }
                    }
                }
                if !registered {
                    // Tell wounders where to find us (without our queue lock: lock order),
                    // then queue our stamp and re-check.
                    drop(st);
                    *lock(&m.waiting_on) = Some(self.queue.clone());
                    st = lock(&self.queue.state);
                    st.waiting.push(m.stamp);
                    registered = true;
                    continue;
                }
            }
            if spin.allowed() {
                // Spin (without the lock) while the mutex or its holder makes progress; then
                // re-check everything under the lock. Stops at once when wounded.
                drop(st);
                let wounded = me.map(|m| &m.wounded);
                spin.run(&self.queue.version, holder.as_deref().map(|h| &h.progress), wounded);
                st = lock(&self.queue.state);
                continue;
            }
            st.waiters += 1;
            match domain {
                Some(d) => {
                    if d.is_interrupting() || d.epoch() != epoch {
                        st.waiters -= 1;
                        break Err(WwError::Interrupted);
                    }
                    st = wait_timeout(&self.queue.cv, st, INTERRUPT_POLL);
                }
                None => st = wait(&self.queue.cv, st),
            }
            st.waiters -= 1;
            spin.woken();
        };
        let mut notify = false;
        if let (true, Some(m)) = (registered, me) {
            if let Some(i) = st.waiting.iter().position(|&s| s == m.stamp) {
                st.waiting.swap_remove(i);
            }
            // The loop takes a free mutex before any exit check, so a waiter leaves a free
            // mutex only while an older one still waits; notify anyway (rare and cheap) so no
            // exit path can strand a younger waiter on a free mutex.
            notify = result.is_err() && matches!(st.owner, Owner::Free) && st.waiters != 0;
        }
        drop(st);
        if notify {
            self.queue.cv.notify_all();
        }
        if registered {
            if let Some(m) = me {
                *lock(&m.waiting_on) = None;
            }
        }
        result
    }

    /// Unlocks (called by the guard).
    fn release(&self) {
        let mut st = lock(&self.queue.state);
        st.owner = Owner::Free;
        self.queue.version.bump();
        let waiters = st.waiters;
        drop(st);
        if waiters != 0 {
            self.queue.cv.notify_all();
        }
    }
}

/// Wakes a just-wounded context if it is blocked on a mutex, so that it sees the wound.
fn wake_wounded(h: &CtxShared) {
    let waiting = lock(&h.waiting_on);
    if let Some(q) = &*waiting {
        // Taking the state lock orders the notification after the waiter's check of `wounded`
        // (it checks under this lock before waiting), so the wake-up cannot be lost.
        let _st = lock(&q.state);
        q.cv.notify_all();
    }
}

/// Holds a [`WwMutex`] locked; unlocks on drop. Borrows the mutex and, when locked under a
/// context, the [`AcquireCtx`], which therefore outlives it.
#[must_use = "the lock is released when the guard is dropped"]
pub struct WwGuard<'a, T> {
    mutex: &'a WwMutex<T>,
    ctx: Option<&'a AcquireCtx>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a shared guard only hands out `&T`, so sharing it across threads is sharing `&T`,
// which `T: Sync` allows (as `std::sync::MutexGuard`).
unsafe impl<T: Sync> Sync for WwGuard<'_, T> {}

impl<'a, T> WwGuard<'a, T> {
    /// The locked mutex.
    pub fn mutex(&self) -> &'a WwMutex<T> {
        self.mutex
    }

    /// The context the lock was taken under, if any.
    pub fn ctx(&self) -> Option<&'a AcquireCtx> {
        self.ctx
    }
}

impl<T> Deref for WwGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while its mutex is held by it (mutual exclusion), so no
        // `&mut T` exists elsewhere.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for WwGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference from the guard.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T: fmt::Debug> fmt::Debug for WwGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WwGuard").field("data", &**self).finish()
    }
}

impl<T> Drop for WwGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.release();
        if let Some(c) = self.ctx {
            c.acquired.set(c.acquired.get() - 1);
            c.shared.progress.bump();
        }
        lockdep::lock_release(self.mutex.class.lock_class, self.ctx.map(AcquireCtx::nest_key));
    }
}
