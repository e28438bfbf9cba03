//! `gpusched-fence`: one-shot completion objects in the manner of the Linux kernel's
//! `dma_fence` (`drivers/dma-buf/dma-fence.c`), and the signalling-contract checker
//! ([`lockdep`]).
//!
//! A [`Fence`] is the shared, cloneable read side; its producer holds the unique
//! [`Signaller`]. Fences live on a [`FenceContext`] (a timeline: unique context id, increasing
//! seqnos) and signal exactly once, optionally with a [`FenceError`]. Waiters block
//! ([`Fence::wait`], timed and interruptible variants), `.await` on any executor, or register
//! callbacks that run on the signalling thread.
//!
//! # The contract
//! 1. A published fence signals in finite time, exactly once. Signalling consumes the
//!    [`Signaller`]; dropping an unsignalled one signals [`FenceError::Abandoned`].
//! 2. Everything on the path to signalling a published fence (a *signalling section*) must not
//!    take a reservation (`Resv`) lock, allocate through a path that can reclaim, or wait on a
//!    fence: waits on fences are allowed under `Resv` locks and from reclaim, so any of those
//!    inside a section can deadlock. [`lockdep`] reports each of them the first time it runs.
//! 3. Signalling never allocates: callback storage is reserved when callbacks are added.
//!
//! # Example
//! ```
//! use gpusched_fence::{FenceContext, FenceError, FenceStatus};
//!
//! let ring = FenceContext::new("ring0");
//! let (fence, signaller) = ring.next();
//! let waiter = fence.clone();
//! let t = std::thread::spawn(move || waiter.wait());
//! fence.add_callback(|f| assert!(f.is_signaled())).unwrap();
//! signaller.signal_error(FenceError::TimedOut);
//! assert_eq!(t.join().unwrap(), Err(FenceError::TimedOut));
//! assert_eq!(fence.status(), FenceStatus::Failed(FenceError::TimedOut));
//! ```

mod callback;
mod chain;
mod clock;
mod composite;
mod context;
#[cfg(not(gpusched_loom))]
mod defer;
pub mod errno;
mod error;
mod fence;
mod interrupt;
pub mod lockdep;
mod ops;
#[cfg(not(gpusched_loom))]
mod park;
mod sync;
#[cfg(not(gpusched_loom))]
mod wait;

pub use crate::callback::{Callback, SharedCallback};
pub use crate::chain::{ChainIter, ChainSeqnoError, FenceChain};
pub use crate::composite::{merge, unwrap, FenceArray, PointOrderError, Timeline};
pub use crate::context::{seqno_is_later, FenceContext, FenceContextBuilder, SeqnoWidth};
#[cfg(not(gpusched_loom))]
pub use crate::defer::{defer_after_callbacks, AfterCallbacks};
pub use crate::error::{AlreadySignaled, FenceError, WaitError};
#[cfg(not(gpusched_loom))]
pub use crate::fence::PreparedFence;
pub use crate::fence::{CallbackId, Fence, FenceStatus, Signaller};
pub use crate::interrupt::{InterruptDomain, InterruptSection};
pub use crate::ops::{FenceOps, OpsWait};
#[cfg(not(gpusched_loom))]
pub use crate::wait::{wait_all, wait_any, FenceAwait, FenceFuture};

/// Sets how long a blocking wait ([`Fence::wait`] and friends) spins on a pending fence
/// before it sleeps, process-wide (default 3 µs; zero never spins; there is no spin on a
/// single-CPU machine). A fence that signals within the spin wakes its waiter without a
/// sleep, a wake syscall or a context switch, as the i915 driver spins before sleeping on a
/// request; a longer spin trades CPU for latency. Waits on a backend fence whose
/// [`FenceOps::wait`] blocks by itself do not spin.
pub fn set_wait_spin(spin: std::time::Duration) {
    #[cfg(not(gpusched_loom))]
    park::set_spin(spin);
    #[cfg(gpusched_loom)]
    let _ = spin;
}

/// The spin of blocking waits (see [`set_wait_spin`]).
pub fn wait_spin() -> std::time::Duration {
    #[cfg(not(gpusched_loom))]
    return park::spin();
    #[cfg(gpusched_loom)]
    std::time::Duration::ZERO
}
