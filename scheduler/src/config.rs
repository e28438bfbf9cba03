//! Scheduler configuration: priorities, entity-selection policies, limits.

use std::time::Duration;

/// Run-queue priority of an entity, highest first (`enum drm_sched_priority`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Kernel-internal work (page-table updates, moves): always first.
    Kernel = 0,
    /// High priority clients.
    High = 1,
    /// The default.
    #[default]
    Normal = 2,
    /// Background work.
    Low = 3,
}

impl Priority {
    /// All priorities, highest first.
    pub const ALL: [Priority; 4] =
        [Priority::Kernel, Priority::High, Priority::Normal, Priority::Low];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The priority of [`index`](Self::index) `i` (`Low` past the end).
    pub(crate) fn from_index(i: u32) -> Self {
        match i {
            0 => Priority::Kernel,
            1 => Priority::High,
            2 => Priority::Normal,
            _ => Priority::Low,
        }
    }

    /// The virtual-runtime weight under [`Policy::Fair`]: a job of `c` credits costs
    /// `c * weight` virtual time, so a `Low` entity gets a quarter of a `High` one's share.
    pub(crate) fn fair_weight(self) -> u64 {
        match self {
            Priority::Kernel => 1,
            Priority::High => 2,
            Priority::Normal => 4,
            Priority::Low => 8,
        }
    }
}

/// How the scheduler picks the next entity to run a job from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// Strict priority; within a priority, the entity whose head job was pushed first
    /// (`drm_sched_policy = 1`, the kernel default). A busy high-priority entity can starve
    /// lower ones.
    #[default]
    Fifo,
    /// Strict priority; within a priority, entities take turns (`drm_sched_policy = 0`).
    RoundRobin,
    /// Virtual runtime: every entity accrues `credits * weight(priority)` per job run, and the
    /// ready entity with the least runs next (`Kernel` stays strictly first). No entity is
    /// starved forever and none monopolises the ring; priorities set the shares.
    Fair,
}

/// How long a job may run on the hardware before the timeout handler runs (the kernel's
/// `timeout` argument of `drm_sched_init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timeout {
    /// The timeout handler runs once the job at the head of the ring has been there this
    /// long. Between 1 ns and [`Timeout::MAX_DURATION`].
    After(Duration),
    /// Jobs never time out (`MAX_SCHEDULE_TIMEOUT`): no deadline is armed, the TDR worker
    /// never runs the timeout handler for this scheduler. A hung job then ends only through
    /// the backend (its hardware fence), a teardown or a recovery of another scheduler of
    /// the reset domain.
    Never,
}

impl Timeout {
    /// The longest finite timeout (2^32 - 1 seconds, about 136 years): longer deadlines are
    /// not representable on every platform's clock; use [`Timeout::Never`] for "no timeout".
    pub const MAX_DURATION: Duration = Duration::from_secs(u32::MAX as u64);

    /// The finite duration, `None` for [`Timeout::Never`].
    pub fn duration(self) -> Option<Duration> {
        match self {
            Timeout::After(d) => Some(d),
            Timeout::Never => None,
        }
    }

    /// The deadline of a job that reached the head of the ring at `now`; `None` for
    /// [`Timeout::Never`] (or a deadline past what the clock can represent).
    pub(crate) fn deadline_from(self, now: std::time::Instant) -> Option<std::time::Instant> {
        now.checked_add(self.duration()?)
    }

    /// Checks the value (see [`Scheduler::new`](crate::Scheduler::new)).
    pub(crate) fn validate(self) -> Result<(), &'static str> {
        match self {
            Timeout::After(d) if d.is_zero() => Err("timeout must be non-zero"),
            Timeout::After(d) if d > Self::MAX_DURATION => {
                Err("timeout exceeds Timeout::MAX_DURATION (use Timeout::Never for no timeout)")
            }
            _ => Ok(()),
        }
    }
}

impl From<Duration> for Timeout {
    fn from(d: Duration) -> Self {
        Timeout::After(d)
    }
}

/// `None` means [`Timeout::Never`].
impl From<Option<Duration>> for Timeout {
    fn from(d: Option<Duration>) -> Self {
        d.map_or(Timeout::Never, Timeout::After)
    }
}

/// Configuration of one [`Scheduler`](crate::Scheduler) (one hardware ring).
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Name for diagnostics and traces.
    pub name: String,
    /// Credits the ring can hold at once; a job's credits count until its hardware fence
    /// signals (`credit_limit`, formerly `hw_submission_limit`). At least 1; any larger value
    /// (up to `u32::MAX`, what the kernel's mock scheduler uses) costs nothing: the
    /// scheduler's storage follows the jobs that exist, never the limit.
    pub credit_limit: u32,
    /// How long a job may run on the hardware before the timeout handler runs, or
    /// [`Timeout::Never`].
    pub timeout: Timeout,
    /// Hangs an entity may cause before it is banned (`hang_limit`); `u32::MAX`: never banned.
    pub hang_limit: u32,
    /// Entity-selection policy.
    pub policy: Policy,
    /// The reset domain (schedulers sharing hardware); `None` gives the scheduler its own.
    pub reset_domain: Option<crate::ResetDomain>,
}

impl SchedulerConfig {
    /// A configuration with the given name and defaults: 64 credits, 10 s timeout, hang
    /// limit 2, FIFO.
    pub fn new(name: impl Into<String>) -> Self {
        SchedulerConfig {
            name: name.into(),
            credit_limit: 64,
            timeout: Timeout::After(Duration::from_secs(10)),
            hang_limit: 2,
            policy: Policy::Fifo,
            reset_domain: None,
        }
    }

    /// Sets the credit limit.
    pub fn credit_limit(mut self, credits: u32) -> Self {
        self.credit_limit = credits;
        self
    }

    /// Sets the job timeout: a [`Duration`], a [`Timeout`], or an `Option<Duration>` (`None`:
    /// never time out).
    pub fn timeout(mut self, timeout: impl Into<Timeout>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// Jobs never time out ([`Timeout::Never`], the kernel's `MAX_SCHEDULE_TIMEOUT`).
    pub fn no_timeout(self) -> Self {
        self.timeout(Timeout::Never)
    }

    /// Sets the hang limit.
    pub fn hang_limit(mut self, limit: u32) -> Self {
        self.hang_limit = limit;
        self
    }

    /// Puts the scheduler in a reset domain shared with other schedulers.
    pub fn reset_domain(mut self, domain: &crate::ResetDomain) -> Self {
        self.reset_domain = Some(domain.clone());
        self
    }

    /// Sets the entity-selection policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }
}
