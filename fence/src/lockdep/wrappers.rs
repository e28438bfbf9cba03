//! [`Mutex`] and [`RwLock`]: `std::sync` locks with a [`LockClass`], so an engine's own locks
//! take part in the checker (lockdep's annotated `mutex`/`rw_semaphore`). Each blocking
//! acquisition is annotated before it blocks (an inversion is reported instead of hanging);
//! `try_*` is annotated as [`Acquire::Try`] (no ordering edge) when it succeeds; the guard's
//! drop releases. Poisoning is ignored (as `parking_lot`): a panic under the lock leaves the
//! data as the panicking code left it.

use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use std::sync::{self, TryLockError};

use super::{lock_acquire, lock_release, Acquire, LockClass};

/// A mutual-exclusion lock whose acquisitions the checker sees.
pub struct Mutex<T: ?Sized> {
    class: &'static LockClass,
    inner: sync::Mutex<T>,
}

/// The guard of a [`Mutex`]; releases (and un-annotates) on drop.
#[must_use = "the lock is released when the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    class: &'static LockClass,
    guard: sync::MutexGuard<'a, T>,
    _not_send: PhantomData<*const ()>,
}

impl<T> Mutex<T> {
    /// A new mutex of `class`.
    pub const fn new(class: &'static LockClass, value: T) -> Self {
        Mutex { class, inner: sync::Mutex::new(value) }
    }

    /// Consumes the mutex, returning the data.
    pub fn into_inner(self) -> T {
        self.inner.into_inner().unwrap_or_else(sync::PoisonError::into_inner)
    }
}

impl<T: ?Sized> Mutex<T> {
    /// The lock's class.
    pub fn class(&self) -> &'static LockClass {
        self.class
    }

    /// Blocks until the lock is acquired. Annotated as [`Acquire::Exclusive`].
    #[track_caller]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        lock_acquire(self.class, Acquire::Exclusive, None);
        let guard = self.inner.lock().unwrap_or_else(sync::PoisonError::into_inner);
        MutexGuard { class: self.class, guard, _not_send: PhantomData }
    }

    /// Acquires the lock if it is free. Annotated as [`Acquire::Try`] when it succeeds.
    #[track_caller]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let guard = match self.inner.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        lock_acquire(self.class, Acquire::Try, None);
        Some(MutexGuard { class: self.class, guard, _not_send: PhantomData })
    }

    /// Mutable access without locking (the borrow proves exclusivity).
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut().unwrap_or_else(sync::PoisonError::into_inner)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("class", &self.class.name())
            .field("inner", &&self.inner)
            .finish()
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        lock_release(self.class, None);
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard")
            .field("class", &self.class.name())
            .field("value", &&*self.guard)
            .finish()
    }
}

/// A reader-writer lock whose acquisitions the checker sees. Reads are annotated as
/// [`Acquire::Shared`]: two read locks of one class on one thread are same-class recursion
/// (a queued writer makes the second read block).
pub struct RwLock<T: ?Sized> {
    class: &'static LockClass,
    inner: sync::RwLock<T>,
}

/// The read guard of a [`RwLock`].
#[must_use = "the lock is released when the guard is dropped"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    class: &'static LockClass,
    guard: sync::RwLockReadGuard<'a, T>,
    _not_send: PhantomData<*const ()>,
}

/// The write guard of a [`RwLock`].
#[must_use = "the lock is released when the guard is dropped"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    class: &'static LockClass,
    guard: sync::RwLockWriteGuard<'a, T>,
    _not_send: PhantomData<*const ()>,
}

impl<T> RwLock<T> {
    /// A new reader-writer lock of `class`.
    pub const fn new(class: &'static LockClass, value: T) -> Self {
        RwLock { class, inner: sync::RwLock::new(value) }
    }

    /// Consumes the lock, returning the data.
    pub fn into_inner(self) -> T {
        self.inner.into_inner().unwrap_or_else(sync::PoisonError::into_inner)
    }
}

impl<T: ?Sized> RwLock<T> {
    /// The lock's class.
    pub fn class(&self) -> &'static LockClass {
        self.class
    }

    /// Blocks until a shared lock is acquired. Annotated as [`Acquire::Shared`].
    #[track_caller]
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        lock_acquire(self.class, Acquire::Shared, None);
        let guard = self.inner.read().unwrap_or_else(sync::PoisonError::into_inner);
        RwLockReadGuard { class: self.class, guard, _not_send: PhantomData }
    }

    /// Blocks until the exclusive lock is acquired. Annotated as [`Acquire::Exclusive`].
    #[track_caller]
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        lock_acquire(self.class, Acquire::Exclusive, None);
        let guard = self.inner.write().unwrap_or_else(sync::PoisonError::into_inner);
        RwLockWriteGuard { class: self.class, guard, _not_send: PhantomData }
    }

    /// Takes a shared lock if possible. Annotated as [`Acquire::Try`] when it succeeds.
    #[track_caller]
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        let guard = match self.inner.try_read() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        lock_acquire(self.class, Acquire::Try, None);
        Some(RwLockReadGuard { class: self.class, guard, _not_send: PhantomData })
    }

    /// Takes the exclusive lock if possible. Annotated as [`Acquire::Try`] when it succeeds.
    #[track_caller]
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        let guard = match self.inner.try_write() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        lock_acquire(self.class, Acquire::Try, None);
        Some(RwLockWriteGuard { class: self.class, guard, _not_send: PhantomData })
    }

    /// Mutable access without locking.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut().unwrap_or_else(sync::PoisonError::into_inner)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLock")
            .field("class", &self.class.name())
            .field("inner", &&self.inner)
            .finish()
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        lock_release(self.class, None);
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLockReadGuard")
            .field("class", &self.class.name())
            .field("value", &&*self.guard)
            .finish()
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        lock_release(self.class, None);
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLockWriteGuard")
            .field("class", &self.class.name())
            .field("value", &&*self.guard)
            .finish()
    }
}
