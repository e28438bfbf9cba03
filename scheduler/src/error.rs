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
    /// The backend refused to prepare the job.
    #[error("the backend could not prepare the job: {0}")]
    Prepare(FenceError),
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

/// Arming failed: the error, and the payload handed back unconsumed.
#[derive(thiserror::Error)]
#[error("{error}")]
pub struct ArmError<P> {
    /// Why arming failed.
    pub error: SchedError,
    /// The job's payload, unconsumed.
    pub payload: P,
}

impl<P> core::fmt::Debug for ArmError<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ArmError").field("error", &self.error).finish_non_exhaustive()
    }
}
