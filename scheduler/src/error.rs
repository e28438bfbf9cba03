//! Errors of job submission.

use gpusched_fence::FenceError;

/// Why a job could not be armed or a scheduler or entity could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedError {
    /// A job must carry at least one credit.
    #[error("a job must carry at least one credit")]
    ZeroCredits,
    /// The job needs more credits than the ring can ever hold.
    #[error("job needs {credits} credits but scheduler {scheduler} holds at most {limit}")]
    TooManyCredits {
        /// The job's credits.
        credits: u32,
        /// The scheduler's credit limit.
        limit: u32,
        /// The scheduler's name.
        scheduler: String,
    },
    /// The entity was killed (or banned): it accepts no more jobs.
    #[error("the entity was killed or banned and accepts no more jobs ({0})")]
    EntityStopped(FenceError),
    /// The scheduler was shut down or its device is gone.
    #[error("scheduler {scheduler} is shut down or its device is gone ({error})")]
    SchedulerGone {
        /// The scheduler's name.
        scheduler: String,
        /// The error its remaining fences signalled with.
        error: FenceError,
    },
    /// An entity needs at least one scheduler.
    #[error("an entity needs at least one scheduler")]
    NoSchedulers,
    /// The configuration is invalid.
    #[error("invalid scheduler configuration: {0}")]
    InvalidConfig(&'static str),
}

impl SchedError {
    /// Whether the entity was killed or banned.
    pub fn is_entity_stopped(&self) -> bool {
        matches!(self, SchedError::EntityStopped(_))
    }

    /// Whether the scheduler is gone.
    pub fn is_scheduler_gone(&self) -> bool {
        matches!(self, SchedError::SchedulerGone { .. })
    }
}

/// Why arming failed: the scheduler's reason, or the backend's own error from
/// [`Backend::prepare_job`](crate::Backend::prepare_job), kept with its type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArmFailure<E> {
    /// The scheduler refused the job (credits, a stopped entity, a scheduler that is gone).
    #[error(transparent)]
    Sched(#[from] SchedError),
    /// The backend refused to prepare the job.
    #[error("the backend could not prepare the job: {0}")]
    Backend(E),
}

impl<E> ArmFailure<E> {
    /// The scheduler's reason, if the scheduler refused the job.
    pub fn sched(&self) -> Option<&SchedError> {
        match self {
            ArmFailure::Sched(e) => Some(e),
            ArmFailure::Backend(_) => None,
        }
    }

    /// The backend's error, if the backend refused the job.
    pub fn backend(&self) -> Option<&E> {
        match self {
            ArmFailure::Sched(_) => None,
            ArmFailure::Backend(e) => Some(e),
        }
    }

    /// Whether the backend refused the job.
    pub fn is_backend(&self) -> bool {
        matches!(self, ArmFailure::Backend(_))
    }

    /// Whether the entity was killed or banned ([`SchedError::is_entity_stopped`]).
    pub fn is_entity_stopped(&self) -> bool {
        self.sched().is_some_and(SchedError::is_entity_stopped)
    }

    /// Whether the scheduler is gone ([`SchedError::is_scheduler_gone`]).
    pub fn is_scheduler_gone(&self) -> bool {
        self.sched().is_some_and(SchedError::is_scheduler_gone)
    }
}

/// A scheduler refusal compares equal to the same [`SchedError`] (`err.error == SchedError::…`).
impl<E> PartialEq<SchedError> for ArmFailure<E> {
    fn eq(&self, other: &SchedError) -> bool {
        self.sched() == Some(other)
    }
}

/// Arming failed: the error, and the payload handed back unconsumed. `E` is the backend's
/// [`Backend::Error`](crate::Backend::Error).
#[derive(thiserror::Error)]
#[error("{error}")]
pub struct ArmError<P, E> {
    /// Why arming failed.
    pub error: ArmFailure<E>,
    /// The job's payload, unconsumed.
    pub payload: P,
}

impl<P, E: core::fmt::Debug> core::fmt::Debug for ArmError<P, E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ArmError").field("error", &self.error).finish_non_exhaustive()
    }
}
