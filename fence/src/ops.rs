//! Backend-backed fences: the [`FenceOps`] trait, the analogue of `struct dma_fence_ops`.

use std::any::Any;
use std::time::Instant;

use crate::Fence;

/// What a backend's own blocking wait ([`FenceOps::wait`]) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpsWait {
    /// The hardware has passed the fence's point; [`FenceOps::signaled`] now returns `true`.
    Signaled,
    /// The deadline passed first.
    TimedOut,
    /// The backend has no wait of its own (or not now): use the generic wait.
    Unsupported,
}

/// Operations a backend supplies for fences it signals (`dma_fence_ops`).
///
/// The producer still holds the fence's [`Signaller`](crate::Signaller) and signals it as
/// usual; these hooks let the fence poll the hardware and start interrupts lazily.
///
/// # Contract
/// Every method may be called from any thread, with no lock of this crate held, and some of
/// them from inside a signalling section (`signaled` is called by waiters and by
/// [`Fence::is_signaled`]): none may allocate through a reclaiming path, take a `Resv` lock, or
/// wait on a fence. They must be short.
pub trait FenceOps: Send + Sync + 'static {
    /// The driver name, for diagnostics (`get_driver_name`).
    fn driver_name(&self) -> &str {
        "gpusched"
    }

    /// The timeline name, for diagnostics (`get_timeline_name`). `None` uses the context name.
    fn timeline_name(&self) -> Option<&str> {
        None
    }

    /// Polls the hardware: `true` once the fence's work is complete. When it returns `true`
    /// the fence is signalled (successfully) on the spot, as `dma_fence_is_signaled` does.
    fn signaled(&self) -> bool {
        false
    }

    /// Called once, when the first waiter or callback arrives (`enable_signaling`): start
    /// whatever makes the producer signal promptly (an interrupt, a completion-thread watch).
    /// Return `false` if the fence's work is already complete, to signal it now.
    fn enable_signaling(&self) -> bool {
        true
    }

    /// A hint that a waiter needs the fence by `deadline` (`set_deadline`), e.g. to boost
    /// clocks. Advisory only; the default ignores it. [`Fence::set_deadline`] calls it only
    /// while the fence is pending and only with a deadline earlier than every one passed
    /// before (the earliest deadline wins), on the thread that set it; it must not allocate
    /// through a reclaiming path or block. Setters on several threads may reach it out of
    /// order (a later deadline just after an earlier one): keep the earliest deadline told.
    fn set_deadline(&self, deadline: Instant) {
        let _ = deadline;
    }

    /// Blocks until the hardware passes the fence or `deadline` (the `dma_fence_ops.wait`
    /// hook, e.g. `vkWaitSemaphores` on a timeline semaphore). Only non-interruptible waits
    /// use it: interruptible ones must also watch the reset domain.
    fn wait(&self, deadline: Option<Instant>) -> OpsWait {
        let _ = deadline;
        OpsWait::Unsupported
    }

    /// The fences this one is made of (fence arrays and chains report their members), so that
    /// [`unwrap`](crate::unwrap) can flatten composites. Plain backends report none.
    fn children(&self) -> &[Fence] {
        &[]
    }

    /// Lets this crate recognise its own composite fences (chain nodes). Sealed: the
    /// argument's type cannot be named outside the crate, so the default is the only
    /// implementation other crates can have.
    #[doc(hidden)]
    fn __as_any(&self, _sealed: sealed::Token) -> Option<&dyn Any> {
        None
    }
}

pub(crate) mod sealed {
    /// Only this crate can make one; see [`FenceOps::__as_any`](super::FenceOps::__as_any).
    #[derive(Clone, Copy, Debug)]
    #[allow(unreachable_pub)] // public in a private module: nameable by no other crate
    pub struct Token(pub(crate) ());
}
