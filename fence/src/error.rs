//! Error types: how a fence failed ([`FenceError`]), why a wait returned early ([`WaitError`]),
//! and the refusal to add a callback to a signalled fence ([`AlreadySignaled`]).

use crate::errno;

/// Why a fence's work did not complete. A fence signalled with an error still counts as
/// signalled: its waiters wake, its callbacks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum FenceError {
    /// The work was cancelled before it ran (an entity was banned, a scheduler dropped).
    #[error("cancelled")]
    Cancelled,
    /// The work ran past its timeout and was blamed for a hang.
    #[error("timed out")]
    TimedOut,
    /// The device was lost (or reset with its memory contents) before the work completed.
    #[error("device lost")]
    DeviceLost,
    /// The submitting entity was killed.
    #[error("killed")]
    Killed,
    /// A reset interrupted the work; it may be restarted (the kernel's `-ERESTARTSYS`).
    #[error("interrupted, restart")]
    Interrupted,
    /// The producer dropped its [`Signaller`](crate::Signaller) without signalling.
    #[error("abandoned: the signaller was dropped without signalling")]
    Abandoned,
    /// A driver-defined error code: a negated kernel errno (the constants of
    /// [`errno`](crate::errno), e.g. `Driver(errno::EIO)`), as a `dma_fence` carries it.
    #[error("driver error {0}")]
    Driver(i32),
}

impl FenceError {
    /// Whether this is [`FenceError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, FenceError::Cancelled)
    }

    /// Whether this is [`FenceError::TimedOut`].
    pub fn is_timed_out(&self) -> bool {
        matches!(self, FenceError::TimedOut)
    }

    /// Whether this is [`FenceError::DeviceLost`].
    pub fn is_device_lost(&self) -> bool {
        matches!(self, FenceError::DeviceLost)
    }

    /// The kernel errno a `dma_fence` would carry for this error (negative), for readers who
    /// know the kernel's codes and for FFI.
    pub fn errno(&self) -> i32 {
        match *self {
            FenceError::Cancelled => errno::ECANCELED,
            FenceError::TimedOut => errno::ETIME,
            FenceError::DeviceLost => errno::ENODEV,
            FenceError::Killed => errno::ESRCH,
            FenceError::Interrupted => errno::ERESTARTSYS,
            FenceError::Abandoned => errno::EPIPE,
            FenceError::Driver(code) => code,
        }
    }

    /// Packs an optional error into one word for atomic storage: `0` for `None`, non-zero
    /// for an error; [`FenceError::decode`] is its inverse. The low three bits are a tag (1 to
    /// 6 for the named errors, 7 for [`FenceError::Driver`], whose code is the high 32 bits).
    pub fn encode(this: Option<FenceError>) -> u64 {
        match this {
            None => 0,
            Some(FenceError::Cancelled) => 1,
            Some(FenceError::TimedOut) => 2,
            Some(FenceError::DeviceLost) => 3,
            Some(FenceError::Killed) => 4,
            Some(FenceError::Interrupted) => 5,
            Some(FenceError::Abandoned) => 6,
            Some(FenceError::Driver(code)) => 7 | (u64::from(code as u32) << 32),
        }
    }

    /// Inverse of [`FenceError::encode`].
    pub fn decode(word: u64) -> Option<FenceError> {
        match word & 0xffff_ffff {
            0 => None,
            1 => Some(FenceError::Cancelled),
            2 => Some(FenceError::TimedOut),
            3 => Some(FenceError::DeviceLost),
            4 => Some(FenceError::Killed),
            5 => Some(FenceError::Interrupted),
            6 => Some(FenceError::Abandoned),
            _ => Some(FenceError::Driver((word >> 32) as u32 as i32)),
        }
    }
}

/// Why a wait returned without the fence having signalled successfully.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The timeout or deadline passed first.
    #[error("wait timed out")]
    Timeout,
    /// A reset interrupted an interruptible wait: restart it after the reset.
    #[error("wait interrupted by a reset, restart it")]
    Interrupted,
    /// The fence signalled with an error.
    #[error("fence signalled with an error: {0}")]
    Failed(#[from] FenceError),
    /// `wait_any` was given no fences: nothing could ever end the wait.
    #[error("wait on an empty set of fences")]
    NoFences,
}

impl WaitError {
    /// Whether the wait timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, WaitError::Timeout)
    }

    /// Whether a reset interrupted the wait.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, WaitError::Interrupted)
    }

    /// The fence's error, when the fence signalled with one.
    pub fn fence_error(&self) -> Option<FenceError> {
        match *self {
            WaitError::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// A callback was not added because the fence had already signalled. The callback is handed
/// back, not run (as `dma_fence_add_callback` returns `-ENOENT`).
#[derive(thiserror::Error)]
#[error("the fence has already signalled")]
pub struct AlreadySignaled<F>(pub F);

impl<F> AlreadySignaled<F> {
    /// The callback that was not added.
    pub fn into_inner(self) -> F {
        self.0
    }
}

impl<F> core::fmt::Debug for AlreadySignaled<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AlreadySignaled(..)")
    }
}
