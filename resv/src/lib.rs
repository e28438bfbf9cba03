//! `gpusched-resv`: wound/wait mutexes and reservation objects, after the Linux kernel's
//! `ww_mutex` (`include/linux/ww_mutex.h`, `Documentation/locking/ww-mutex-design.rst`),
//! `dma_resv` (`drivers/dma-buf/dma-resv.c`) and `drm_exec` (`drivers/gpu/drm/drm_exec.c`).
//!
//! - [`WwMutex`], [`AcquireCtx`], [`WwClass`]: mutexes that many threads can lock in any
//!   order; contention between two contexts is resolved by age (wound-wait or wait-die), and
//!   the younger one backs off ([`WwError::Deadlock`]) and retries with its old stamp.
//! - [`Resv`]: a [`WwMutex`] of [`RESV_WW_CLASS`] plus the fences of a buffer, tagged by
//!   [`Usage`]; locked operations are [`ResvGuard`] methods, and the `*_unlocked` readers use
//!   a lock-free snapshot.
//! - [`Exec`]: locks a set of [`Resv`]s with the back-off loop done for you.
//!
//! # Contract rules enforced here
//! Every acquisition is reported to the checker ([`gpusched_fence::lockdep`], class
//! [`lockdep::RESV`](gpusched_fence::lockdep::RESV)): a reservation lock inside a signalling
//! section, or a blocking one inside a reclaim section, is a violation (rules 4 and 6 of
//! CONTRACT.md); a trylock is annotated as such. Waiting for fences under a reservation lock
//! is allowed (rule 2). The dma-buf locking convention (rule 8) is in the types: a locked
//! operation without the lock does not compile.
//!
//! ```compile_fail,E0599
//! use gpusched_fence::FenceContext;
//! use gpusched_resv::{Resv, Usage};
//! let resv = Resv::new();
//! let (fence, _signaller) = FenceContext::new("ring").next();
//! resv.add_fence(fence, Usage::Write); // `add_fence` is a `ResvGuard` method: lock first
//! ```
//!
//! With the lock, it does:
//!
//! ```
//! use gpusched_fence::FenceContext;
//! use gpusched_resv::{Resv, Usage};
//! let resv = Resv::new();
//! let (fence, _signaller) = FenceContext::new("ring").next();
//! let mut guard = resv.lock_no_ctx();
//! guard.reserve_fences(1).unwrap();
//! guard.add_fence(fence, Usage::Write);
//! assert_eq!(guard.get_fences(Usage::Read).len(), 1);
//! ```
//!
//! A guard cannot outlive its acquire context:
//!
//! ```compile_fail,E0597
//! use gpusched_resv::{AcquireCtx, Resv, RESV_WW_CLASS};
//! let resv = Resv::new();
//! let guard = {
//!     let ctx = AcquireCtx::new(&RESV_WW_CLASS);
//!     resv.lock(&ctx).unwrap()
//! };
//! ```
//!
//! and an acquire context stays on its thread:
//!
//! ```compile_fail,E0277
//! use gpusched_resv::{AcquireCtx, RESV_WW_CLASS};
//! let ctx = AcquireCtx::new(&RESV_WW_CLASS);
//! std::thread::spawn(move || drop(ctx));
//! ```
//!
//! nor does a guard (it is released on the thread that took it):
//!
//! ```compile_fail,E0277
//! use gpusched_resv::Resv;
//! let resv = Resv::new();
//! let guard = resv.lock_no_ctx();
//! std::thread::scope(|s| {
//!     s.spawn(move || drop(guard));
//! });
//! ```

#[cfg(not(gpusched_loom))]
mod exec;
#[cfg(not(gpusched_loom))]
mod resv;
mod spin;
mod sync;
mod ww;

#[cfg(not(gpusched_loom))]
pub use crate::exec::Exec;
#[cfg(not(gpusched_loom))]
pub use crate::resv::{FenceIter, Resv, ResvGuard, UnlockedIter, Usage, RESV_WW_CLASS};
pub use crate::ww::{AcquireCtx, WwAlgorithm, WwClass, WwError, WwGuard, WwMutex};

/// The class of the reservation lock (only for the loom build, where [`Resv`] is left out).
#[cfg(gpusched_loom)]
pub static RESV_WW_CLASS: WwClass = WwClass::wait_die("reservation");
