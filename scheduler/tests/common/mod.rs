//! Helpers shared by the scheduler's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use gpusched::fence::{Fence, FenceError, WaitError};
use gpusched::testing::{MockJob, MockRing};
use gpusched::{Policy, Scheduler, SchedulerConfig};

/// Deadlock watchdog for waits that must end: generous, never a speed assertion.
pub const WATCHDOG: Duration = Duration::from_secs(20);

/// Signalling-contract checker (`gpusched::fence::lockdep`) violations recorded so far in
/// this process (under the debug default policy a violation also panics where it happens).
pub fn checker_violations() -> u64 {
    gpusched::fence::lockdep::violations()
}

/// Asserts the checker recorded no violation so far; every test calls it at its end.
pub fn assert_no_checker_violations() {
    assert_eq!(checker_violations(), 0, "the dependency checker reported violations");
}

/// Waits for `f` under the watchdog; panics if it does not signal.
pub fn wait(f: &Fence) -> Result<(), FenceError> {
    match f.wait_timeout(WATCHDOG) {
        Ok(()) => Ok(()),
        Err(WaitError::Failed(e)) => Err(e),
        Err(e) => panic!("fence {}:{} did not signal in time: {e}", f.context(), f.seqno()),
    }
}

/// Polls `cond` until true, under the watchdog.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WATCHDOG;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A scheduler over a fresh ring.
pub fn sched(ring: MockRing, name: &str, credits: u32, policy: Policy) -> Scheduler<MockRing> {
    let config = SchedulerConfig::new(name).credit_limit(credits).policy(policy);
    match Scheduler::new(ring, config) {
        Ok(s) => s,
        Err(e) => panic!("valid config refused: {e}"),
    }
}

/// Shorthand for a mock job.
pub fn job(tag: u64) -> MockJob {
    MockJob::new(tag)
}

/// The `Backend` items that a wrapper around the mock ring (in its field `ring`) hands to the
/// ring unchanged: the job and error types, `prepare_job` and `run_job`, and with `free_job`
/// that method too. The wrapper writes the methods it changes (its timeout handler) itself.
// Not every test binary including this module wraps the mock ring.
#[allow(unused_macros)]
macro_rules! mock_ring_delegate {
    () => {
        type Job = gpusched::testing::MockJob;
        type Error = std::convert::Infallible;

        fn prepare_job(
            &self,
            job: &mut Self::Job,
            info: &gpusched::JobInfo,
        ) -> Result<(), Self::Error> {
            self.ring.prepare_job(job, info)
        }

        fn run_job(
            &self,
            job: &mut Self::Job,
            info: &gpusched::JobInfo,
        ) -> Result<gpusched::fence::Fence, gpusched::fence::FenceError> {
            self.ring.run_job(job, info)
        }
    };
    (free_job) => {
        crate::common::mock_ring_delegate!();

        fn free_job(&self, job: Self::Job, info: &gpusched::JobInfo) {
            self.ring.free_job(job, info)
        }
    };
}
#[allow(unused_imports)]
pub(crate) use mock_ring_delegate;
