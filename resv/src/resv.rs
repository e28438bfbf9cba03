//! Reservation objects (`drivers/dma-buf/dma-resv.c`): a wound/wait lock plus the fences that
//! guard a buffer, each tagged with a [`Usage`].
//!
//! Writers lock the object ([`Resv::lock`] and friends give a [`ResvGuard`]), reserve slots
//! ([`ResvGuard::reserve_fences`], the only step that allocates), then add fences
//! ([`ResvGuard::add_fence`], which never allocates). Readers either lock too, or read the
//! lock-free snapshot ([`Resv::iter_unlocked`], [`Resv::wait_unlocked`], ...): the kernel
//! reads its fence list under RCU; we publish an immutable `Arc` of the list through
//! `arc-swap` when a guard that changed the list is dropped, so waiting for a buffer never
//! contends with its writers.
//!
//! # Contract rules enforced here
//! - The dma-buf locking convention in types: every operation that needs the lock is a method
//!   of [`ResvGuard`]; `*_unlocked` methods of [`Resv`] read the snapshot.
//! - Reserve, then add: [`ResvGuard::add_fence`] panics when no slot is reserved (API misuse,
//!   the kernel's `BUG_ON`), so the add itself cannot allocate. Reservations end with the
//!   guard, as the kernel's debug builds reset them on unlock.
//! - A fence replaces an older one of the same context whose usage is the same or later in
//!   the [`Usage`] order (seen by no more queries than the new one), so no query ever stops
//!   seeing a context it saw; signalled fences are pruned.
//! - Waiting for fences under the lock is allowed (rule 2 of CONTRACT.md).

use std::collections::TryReserveError;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use gpusched_fence::{Fence, FenceArray, FenceError, FenceStatus, InterruptDomain, WaitError};

use crate::ww::{AcquireCtx, WwClass, WwError, WwGuard, WwMutex};

/// The wound/wait class of every [`Resv`] lock (the kernel's `reservation_ww_class`):
/// wait-die.
pub static RESV_WW_CLASS: WwClass = WwClass::wait_die("reservation");

/// How a fence uses the buffer (`enum dma_resv_usage`). Ordered: a query for a usage sees the
/// fences of that usage and of every smaller one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Usage {
    /// Kernel-internal work that everyone must wait for (moves, clears).
    Kernel,
    /// Implicit-sync writers.
    Write,
    /// Implicit-sync readers.
    Read,
    /// Work that takes part in no implicit sync (page-table updates, preemption fences); only
    /// eviction and destruction wait for it.
    Bookkeep,
}

impl Usage {
    /// Every usage, in order.
    pub const ALL: [Usage; 4] = [Usage::Kernel, Usage::Write, Usage::Read, Usage::Bookkeep];

    /// The usage that waiting for buffer access of a writer (`true`) or reader (`false`)
    /// needs (`dma_resv_usage_rw`): a writer waits for readers too, a reader only for writers.
    pub fn for_access(write: bool) -> Usage {
        if write {
            Usage::Read
        } else {
            Usage::Write
        }
    }
}

/// One fence of a reservation object.
#[derive(Clone, Debug)]
struct Entry {
    fence: Fence,
    usage: Usage,
}

/// The locked part of a [`Resv`].
#[derive(Debug, Default)]
struct Locked {
    /// The fences. `capacity() >= len() + reserved` at all times.
    list: Vec<Entry>,
    /// Slots reserved by `reserve_fences` and not yet used by `add_fence`; reset on unlock.
    reserved: usize,
    /// The list changed since the snapshot was published.
    dirty: bool,
    /// The buffer of the next snapshot: uniquely owned, empty, with room for
    /// `list.len() + reserved` entries once `reserve_fences` ran, so that publishing on unlock
    /// does not allocate. Refilled by recycling the previous snapshot when no reader holds it.
    spare: Option<Arc<Vec<Entry>>>,
}

impl Locked {
    #[track_caller]
    fn check(&self) {
        debug_assert!(self.list.capacity() >= self.list.len() + self.reserved);
        debug_assert!(self.spare.as_ref().is_none_or(|a| a.is_empty()));
    }

    /// Publishes the list (pruned of signalled fences) as the new snapshot of `resv`.
    fn publish(&mut self, resv: &Resv) {
        self.list.retain(|e| !e.fence.is_signaled());
        let next = match self.spare.take() {
            Some(mut spare) if spare.capacity() >= self.list.len() => {
                match Arc::get_mut(&mut spare) {
                    Some(v) => {
                        v.extend(self.list.iter().cloned());
                        spare
                    }
                    None => Arc::new(self.list.clone()),
                }
            }
            _ => Arc::new(self.list.clone()),
        };
        let mut old = resv.snapshot.swap(next);
        // After the swap no reader can reach `old` but through a reference it counted.
        if let Some(v) = Arc::get_mut(&mut old) {
            v.clear();
            self.spare = Some(old);
        }
        self.check();
    }
}

/// A reservation object (`struct dma_resv`): a [`WwMutex`] of [`RESV_WW_CLASS`] and the
/// fences of the buffer it guards. See the [module docs](crate) for the rules.
pub struct Resv {
    lock: WwMutex<Locked>,
    /// The fence list as of the last unlock that changed it; read without the lock.
    snapshot: ArcSwap<Vec<Entry>>,
}

impl fmt::Debug for Resv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resv")
            .field("locked", &self.lock.is_locked())
            .field("published_fences", &self.snapshot.load().len())
            .finish()
    }
}

impl Default for Resv {
    fn default() -> Self {
        Resv::new()
    }
}

impl Resv {
    /// A new object without fences.
    pub fn new() -> Self {
        Resv {
            lock: WwMutex::new(&RESV_WW_CLASS, Locked::default()),
            snapshot: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Locks under `ctx` (`dma_resv_lock`); see [`WwMutex::lock`].
    ///
    /// # Errors
    /// [`WwError::Deadlock`] (back off) or [`WwError::AlreadyLocked`].
    #[track_caller]
    pub fn lock<'a>(&'a self, ctx: &'a AcquireCtx) -> Result<ResvGuard<'a>, WwError> {
        self.lock.lock(ctx).map(|g| self.guard(g))
    }

    /// Locks under `ctx`, interruptibly (`dma_resv_lock_interruptible`); see
    /// [`WwMutex::lock_interruptible`].
    ///
    /// # Errors
    /// [`WwError::Deadlock`], [`WwError::AlreadyLocked`] or [`WwError::Interrupted`].
    #[track_caller]
    pub fn lock_interruptible<'a>(
        &'a self,
        ctx: &'a AcquireCtx,
        domain: &InterruptDomain,
    ) -> Result<ResvGuard<'a>, WwError> {
        self.lock.lock_interruptible(ctx, domain).map(|g| self.guard(g))
    }

    /// Takes the contended lock after backing off (`dma_resv_lock_slow`).
    ///
    /// # Panics
    /// When `ctx` still holds locks.
    #[track_caller]
    pub fn lock_slow<'a>(&'a self, ctx: &'a AcquireCtx) -> ResvGuard<'a> {
        self.guard(self.lock.lock_slow(ctx))
    }

    /// Interruptible [`lock_slow`](Resv::lock_slow).
    ///
    /// # Errors
    /// [`WwError::Interrupted`].
    #[track_caller]
    pub fn lock_slow_interruptible<'a>(
        &'a self,
        ctx: &'a AcquireCtx,
        domain: &InterruptDomain,
    ) -> Result<ResvGuard<'a>, WwError> {
        self.lock.lock_slow_interruptible(ctx, domain).map(|g| self.guard(g))
    }

    /// Takes the lock if it is free (`dma_resv_trylock`): allowed in reclaim sections.
    #[track_caller]
    pub fn try_lock<'a>(&'a self, ctx: Option<&'a AcquireCtx>) -> Option<ResvGuard<'a>> {
        self.lock.try_lock(ctx).map(|g| self.guard(g))
    }

    /// Locks without a context (`dma_resv_lock(obj, NULL)`), for code that locks one object.
    #[track_caller]
    pub fn lock_no_ctx(&self) -> ResvGuard<'_> {
        self.guard(self.lock.lock_no_ctx())
    }

    /// Whether the object is locked now (a racy snapshot).
    pub fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }

    fn guard<'a>(&'a self, inner: WwGuard<'a, Locked>) -> ResvGuard<'a> {
        ResvGuard { resv: self, inner }
    }

    /// The fences of usage `<= usage` as of the last unlock, each with its usage, read without
    /// the lock and skipping fences that have signalled successfully (the kernel's unlocked
    /// `dma_resv_iter_first_unlocked`/`dma_resv_iter_next_unlocked`). Usage is cumulative as
    /// in every query here: asking for [`Usage::Read`] gives the `Kernel`, `Write` and `Read`
    /// fences, in list order.
    ///
    /// Unlike the kernel's iterator, which skips every signalled fence, a fence that *failed*
    /// is reported, so that a reader collecting dependencies learns of the failure instead of
    /// proceeding as if the work had succeeded ([`Fence::status`] tells which).
    ///
    /// Does not allocate: the iterator holds the snapshot (an `Arc`) and clones each fence as
    /// it yields it. While it lives the next unlock cannot recycle that snapshot's buffer, so
    /// drop it promptly.
    pub fn iter_unlocked(&self, usage: Usage) -> UnlockedIter {
        UnlockedIter { snapshot: self.snapshot.load_full(), pos: 0, usage }
    }

    /// The fences of usage `<= usage` as of the last unlock, read without the lock. Signalled
    /// fences are included; [`Resv::iter_unlocked`] skips them and reports usages too.
    pub fn fences_unlocked(&self, usage: Usage) -> Vec<Fence> {
        self.snapshot.load().iter().filter(|e| e.usage <= usage).map(|e| e.fence.clone()).collect()
    }

    /// Whether every fence of usage `<= usage` has signalled, without the lock
    /// (`dma_resv_test_signaled`).
    pub fn test_signaled_unlocked(&self, usage: Usage) -> bool {
        self.snapshot.load().iter().filter(|e| e.usage <= usage).all(|e| e.fence.is_signaled())
    }

    /// One fence that signals when every fence of usage `<= usage` has, without the lock;
    /// see [`ResvGuard::get_singleton`].
    pub fn get_singleton_unlocked(&self, usage: Usage) -> Option<Fence> {
        singleton(self.snapshot.load().iter(), usage)
    }

    /// Waits, without the lock, for the fences of usage `<= usage` published at the call
    /// (`dma_resv_wait_timeout`); see [`ResvGuard::wait`].
    ///
    /// # Errors
    /// As [`ResvGuard::wait`].
    #[track_caller]
    pub fn wait_unlocked(
        &self,
        usage: Usage,
        interruptible: bool,
        timeout: Option<Duration>,
    ) -> Result<(), WaitError> {
        let snap = self.snapshot.load_full();
        wait_entries(snap.iter(), usage, interruptible, timeout)
    }
}

/// Holds a [`Resv`] locked: the only way to reach its locked operations. Dropping it publishes
/// the fence list for unlocked readers (when it changed), ends the reservation and unlocks.
///
/// Publishing does not allocate after [`reserve_fences`](ResvGuard::reserve_fences): the
/// reservation also sizes the next snapshot's buffer, and the previous snapshot's buffer is
/// recycled when no reader holds it. Changes made without a reservation
/// ([`replace_fences`](ResvGuard::replace_fences), pruning) may allocate it on unlock.
#[must_use = "the lock is released when the guard is dropped"]
pub struct ResvGuard<'a> {
    resv: &'a Resv,
    inner: WwGuard<'a, Locked>,
}

impl fmt::Debug for ResvGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResvGuard")
            .field("fences", &self.inner.list.len())
            .field("reserved", &self.inner.reserved)
            .finish()
    }
}

impl<'a> ResvGuard<'a> {
    /// The locked object.
    pub fn resv(&self) -> &'a Resv {
        self.resv
    }

    /// The acquire context the lock was taken under, if any.
    pub fn ctx(&self) -> Option<&'a AcquireCtx> {
        self.inner.ctx()
    }

    /// Reserves room for `n` more fences (`dma_resv_reserve_fences`): the only step that
    /// allocates. Prunes signalled fences first. Reservations add up until the guard drops.
    ///
    /// # Errors
    /// The allocation failed.
    pub fn reserve_fences(&mut self, n: usize) -> Result<(), TryReserveError> {
        let l = &mut *self.inner;
        if l.list.iter().any(|e| e.fence.is_signaled()) {
            l.list.retain(|e| !e.fence.is_signaled());
            l.dirty = true;
        }
        l.list.try_reserve(l.reserved + n)?;
        l.reserved += n;
        let need = l.list.len() + l.reserved;
        if l.spare.as_ref().is_none_or(|a| a.capacity() < need) {
            // As large as the list can grow without reallocating, so the two buffers that
            // take turns as snapshot settle at the same size.
            let mut v = Vec::new();
            v.try_reserve_exact(l.list.capacity())?;
            l.spare = Some(Arc::new(v));
        }
        l.check();
        Ok(())
    }

    /// Slots reserved and not used yet.
    pub fn reserved(&self) -> usize {
        self.inner.reserved
    }

    /// Adds `fence` with `usage` (`dma_resv_add_fence`). It replaces, in place, the first fence
    /// that either is of the same context, not later than `fence`, with a usage the same as
    /// `usage` or later in the [`Usage`] order, or has signalled; otherwise it takes a new
    /// slot. Never allocates.
    ///
    /// # Panics
    /// When no slot is reserved ([`reserve_fences`](ResvGuard::reserve_fences) first): every
    /// add uses up one reservation, replacement or not, so the rule does not depend on what
    /// the list holds.
    #[track_caller]
    pub fn add_fence(&mut self, fence: Fence, usage: Usage) {
        let l = &mut *self.inner;
        if l.reserved == 0 {
            add_without_reserve();
        }
        l.reserved -= 1;
        let slot = l.list.iter().position(|old| {
            (old.fence.context() == fence.context()
                && old.usage >= usage
                && (old.fence.ptr_eq(&fence) || !old.fence.is_later(&fence)))
                || old.fence.is_signaled()
        });
        match slot {
            // The same fence with the same usage: the list does not change, nor need the
            // snapshot.
            Some(i) if l.list[i].usage == usage && l.list[i].fence.ptr_eq(&fence) => {}
            Some(i) => {
                l.list[i] = Entry { fence, usage };
                l.dirty = true;
            }
            None => {
                l.list.push(Entry { fence, usage });
                l.dirty = true;
            }
        }
        l.check();
    }

    /// Replaces every fence of `context` by `replacement` with `usage`
    /// (`dma_resv_replace_fences`), e.g. to swap a preemption fence for a page-table update.
    /// Never allocates: the fences stay in their slots.
    pub fn replace_fences(&mut self, context: u64, replacement: &Fence, usage: Usage) {
        let l = &mut *self.inner;
        for e in l.list.iter_mut().filter(|e| e.fence.context() == context) {
            *e = Entry { fence: replacement.clone(), usage };
            l.dirty = true;
        }
        l.check();
    }

    /// Iterates the fences of usage `<= usage` with their usage, under the lock
    /// (`dma_resv_for_each_fence`).
    pub fn fences(&self, usage: Usage) -> FenceIter<'_> {
        FenceIter { inner: self.inner.list.iter(), usage }
    }

    /// Clones of the fences of usage `<= usage` (`dma_resv_get_fences`).
    pub fn get_fences(&self, usage: Usage) -> Vec<Fence> {
        self.fences(usage).map(|(f, _)| f.clone()).collect()
    }

    /// One fence for all fences of usage `<= usage` (`dma_resv_get_singleton`): `None` when
    /// there are none, the fence itself when there is one, a [`FenceArray::all`] otherwise.
    pub fn get_singleton(&self, usage: Usage) -> Option<Fence> {
        singleton(self.inner.list.iter(), usage)
    }

    /// Whether every fence of usage `<= usage` has signalled (`dma_resv_test_signaled`).
    pub fn test_signaled(&self, usage: Usage) -> bool {
        self.fences(usage).all(|(f, _)| f.is_signaled())
    }

    /// Waits for every fence of usage `<= usage` (`dma_resv_wait_timeout`), `None` waiting
    /// forever. Interruptible waits use each fence's interrupt domain
    /// ([`Fence::wait_interruptible`]). Waiting under the lock is allowed.
    ///
    /// # Errors
    /// [`WaitError::Timeout`] or [`WaitError::Interrupted`] when the wait ended early;
    /// [`WaitError::Failed`] with the first error (in list order) once every fence has
    /// signalled and some failed.
    #[track_caller]
    pub fn wait(
        &self,
        usage: Usage,
        interruptible: bool,
        timeout: Option<Duration>,
    ) -> Result<(), WaitError> {
        wait_entries(self.inner.list.iter(), usage, interruptible, timeout)
    }
}

impl Drop for ResvGuard<'_> {
    fn drop(&mut self) {
        let l = &mut *self.inner;
        l.reserved = 0;
        if l.dirty {
            l.dirty = false;
            l.publish(self.resv);
        }
        // `inner` unlocks after this body.
    }
}

#[cold]
#[track_caller]
fn add_without_reserve() -> ! {
    panic!(
        "resv misuse: add_fence without a reserved slot; call ResvGuard::reserve_fences(n) \
         first (add_fence never allocates)"
    )
}

/// Iterator over the fences of a locked [`Resv`]; see [`ResvGuard::fences`].
#[derive(Debug)]
pub struct FenceIter<'g> {
    inner: std::slice::Iter<'g, Entry>,
    usage: Usage,
}

impl<'g> Iterator for FenceIter<'g> {
    type Item = (&'g Fence, Usage);

    fn next(&mut self) -> Option<Self::Item> {
        let usage = self.usage;
        self.inner.by_ref().find(|e| e.usage <= usage).map(|e| (&e.fence, e.usage))
    }
}

/// Iterator over the unsignalled (or failed) fences of a [`Resv`]'s lock-free snapshot, with
/// their usage; see [`Resv::iter_unlocked`].
pub struct UnlockedIter {
    snapshot: Arc<Vec<Entry>>,
    pos: usize,
    usage: Usage,
}

impl fmt::Debug for UnlockedIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnlockedIter")
            .field("usage", &self.usage)
            .field("pos", &self.pos)
            .field("len", &self.snapshot.len())
            .finish()
    }
}

impl Iterator for UnlockedIter {
    type Item = (Fence, Usage);

    fn next(&mut self) -> Option<(Fence, Usage)> {
        while let Some(e) = self.snapshot.get(self.pos) {
            self.pos += 1;
            // `status` polls the backend, as `dma_fence_is_signaled` does.
            if e.usage <= self.usage && e.fence.status() != FenceStatus::Signaled {
                return Some((e.fence.clone(), e.usage));
            }
        }
        None
    }
}

fn singleton<'e>(entries: impl Iterator<Item = &'e Entry>, usage: Usage) -> Option<Fence> {
    let mut matching = entries.filter(|e| e.usage <= usage).map(|e| e.fence.clone());
    let first = matching.next()?;
    match matching.next() {
        None => Some(first),
        Some(second) => {
            Some(FenceArray::all([first, second].into_iter().chain(matching).collect::<Vec<_>>()))
        }
    }
}

#[track_caller]
fn wait_entries<'e>(
    entries: impl Iterator<Item = &'e Entry>,
    usage: Usage,
    interruptible: bool,
    timeout: Option<Duration>,
) -> Result<(), WaitError> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut first_error: Option<FenceError> = None;
    for e in entries.filter(|e| e.usage <= usage) {
        let r = if interruptible {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            e.fence.wait_interruptible(left)
        } else {
            match deadline {
                Some(d) => e.fence.wait_deadline(d),
                None => e.fence.wait().map_err(WaitError::Failed),
            }
        };
        match r {
            Ok(()) => {}
            Err(WaitError::Failed(err)) => {
                first_error.get_or_insert(err);
            }
            Err(other) => return Err(other),
        }
    }
    first_error.map_or(Ok(()), |e| Err(WaitError::Failed(e)))
}
