//! The [`World`] trait: the backend-specific part of the fault suite. The engine
//! ([`run_scenario`](crate::run_scenario)) generates a scenario, makes a world for it, and
//! drives it through this trait only; a Vulkan world implements it over `gpusched-vulkan`'s
//! fault API the same way [`MockWorld`](crate::MockWorld) does over a software ring.

use std::sync::Arc;

use gpusched::fence::FenceError;
use gpusched::{Backend, Scheduler};

use crate::ledger::Ledger;
use crate::plan::{Fault, Scenario};

/// A backend world for fault scenarios.
///
/// # Contract
/// - [`new`](World::new) makes `scenario.rings` schedulers in **one reset domain** (one
///   device), each with the scenario's credit limit, timeout, hang limit and policy.
/// - [`payload`](World::payload) makes job `idx`'s payload. Executed on the hardware, it
///   computes [`job_value`](crate::job_value)`(idx, inputs)` from the results of the jobs listed
///   in `ledger.job(idx).inputs` (set before the call; 0 for an input without a result) and
///   makes it readable through the ledger's `result` by the time [`collect`](World::collect)
///   returns. Fault behaviour: [`Fault::Hang`] never completes until the ring is reset;
///   [`Fault::Slow`] runs that long; [`Fault::FailSubmit`] fails its first `run_job` with
///   [`World::SUBMIT_ERROR`].
/// - The backend counts into the ledger: `prepared` in `prepare_job`, `runs` in `run_job`,
///   `cancelled` in `cancel_job`, `freed` in `free_job`, and `guilty` for the job it resets as
///   guilty in `timedout_job` (only when the reset blames it: not when it answers `NoHang`).
///   Backend objects count into `live_objects` (up when made, down when dropped).
/// - `timedout_job` resets the ring (`Recovery::standard_reset`) when the head job is really
///   stuck, answers `NoHang` when the hardware is making progress (a fault-free job that is
///   only late because the host is busy), and declares the device gone (`NoDevice`) once
///   [`lose_device`](World::lose_device) was called.
/// - [`lose_device`](World::lose_device) loses the device: nothing completes afterwards;
///   submissions fail with `DeviceLost`, and jobs on the hardware end `DeviceLost` through the
///   timeout handler.
pub trait World: Sized + Send + Sync + 'static {
    /// The backend of the world's schedulers.
    type Backend: Backend;

    /// The world's name in reports (`mock`, `vulkan`).
    const NAME: &'static str;

    /// The error a [`Fault::FailSubmit`] job's fence ends with.
    const SUBMIT_ERROR: FenceError = crate::plan::SUBMIT_ERROR;

    /// Whether the backend counts every call of the contract (`runs`, `cancelled`, `guilty`,
    /// and `freed` in `free_job`). A world over a backend it cannot instrument (Vulkan: the
    /// `VulkanRing` is the crate's own `Backend`) sets it to `false` and counts only what it
    /// observes from outside: `prepared` (its recording closure runs in `prepare_job`) and
    /// `freed` (the payload dropped, which the backend may defer to teardown); the oracle
    /// then relaxes the rules that need the other counters (see its docs).
    const COUNTS_BACKEND_CALLS: bool = true;

    /// Whether the device comes back after [`lose_device`](World::lose_device) (Vulkan
    /// recreates it as a new generation): jobs armed after the loss may succeed, and arms
    /// refused by `prepare_job` while it is recreated are justified.
    const RECOVERS_FROM_LOSS: bool = false;

    /// Whether the jobs whose same-ring dependency was blamed end with its error (both
    /// worlds: the mock through `Recovery::standard_reset`'s resubmission, Vulkan through
    /// `Recovery::fail_dependants`, since a Vulkan ring cannot take submissions off its
    /// queue). `false` only for a backend with that bug: such jobs are then counted, not
    /// failed (see the oracle's docs). It also tells the oracle whether a stuck job that
    /// computed a value can be taken as blamed (not when failed dependants still run).
    const RERUNS_AFTER_RESET: bool = true;

    /// Whether each entity's finished fences are known to signal in seqno order. `false`
    /// only for a world with a known, reported backend bug (Vulkan): inversions are then
    /// counted in the [`Summary`](crate::Summary) instead of failing the scenario.
    const TIMELINE_IN_ORDER: bool = true;

    /// Whether a [`Fault::FailSubmit`] fails that job's own submission (`true`: both the
    /// backend-injected worlds). `false` for a world whose faults come from a driver (the
    /// Vulkan fault layer): the job arms a failure of the next `vkQueueSubmit`, which may carry
    /// another job (or a batch): see the oracle's rules for such worlds.
    const SUBMIT_FAULTS_ATTRIBUTED: bool = true;

    /// Makes the world for `scenario`, writing its observations into `ledger`.
    ///
    /// # Errors
    /// The world cannot be made (no device): the scenario is skipped with this reason.
    fn new(scenario: &Scenario, ledger: Arc<Ledger>) -> Result<Self, String>;

    /// The rings' schedulers, one per ring of the scenario.
    fn schedulers(&self) -> &[Scheduler<Self::Backend>];

    /// Job `idx`'s payload, with `fault` (see the contract).
    fn payload(&self, idx: usize, fault: Fault) -> <Self::Backend as Backend>::Job;

    /// Loses the device (see the contract).
    fn lose_device(&self);

    /// Called once every fence of the scenario has signalled: make every computed result
    /// visible in the ledger (a Vulkan world reads its buffers back here).
    ///
    /// # Errors
    /// A result could not be read.
    fn collect(&self) -> Result<(), String> {
        Ok(())
    }

    /// Drops the schedulers and everything else, and checks that the backend released every
    /// object (threads joined, devices destroyed).
    ///
    /// # Errors
    /// What leaked.
    fn teardown(self) -> Result<(), String>;
}

/// World `W` with every computed result corrupted after [`collect`](World::collect): the
/// oracle must notice (a suite that cannot fail checks nothing). Everything else is `W`'s.
#[derive(Debug)]
pub struct Corrupting<W> {
    inner: W,
    ledger: Arc<Ledger>,
}

impl<W: World> World for Corrupting<W> {
    type Backend = W::Backend;
    const NAME: &'static str = "corrupting";
    const SUBMIT_ERROR: FenceError = W::SUBMIT_ERROR;
    const COUNTS_BACKEND_CALLS: bool = W::COUNTS_BACKEND_CALLS;
    const RECOVERS_FROM_LOSS: bool = W::RECOVERS_FROM_LOSS;
    const RERUNS_AFTER_RESET: bool = W::RERUNS_AFTER_RESET;
    const TIMELINE_IN_ORDER: bool = W::TIMELINE_IN_ORDER;
    const SUBMIT_FAULTS_ATTRIBUTED: bool = W::SUBMIT_FAULTS_ATTRIBUTED;

    fn new(scenario: &Scenario, ledger: Arc<Ledger>) -> Result<Self, String> {
        Ok(Corrupting { inner: W::new(scenario, ledger.clone())?, ledger })
    }

    fn schedulers(&self) -> &[Scheduler<Self::Backend>] {
        self.inner.schedulers()
    }

    fn payload(&self, idx: usize, fault: Fault) -> <Self::Backend as Backend>::Job {
        self.inner.payload(idx, fault)
    }

    fn lose_device(&self) {
        self.inner.lose_device();
    }

    fn collect(&self) -> Result<(), String> {
        self.inner.collect()?;
        for j in 0..self.ledger.len() {
            self.ledger.job(j).result.fetch_xor(0x100, std::sync::atomic::Ordering::AcqRel);
        }
        Ok(())
    }

    fn teardown(self) -> Result<(), String> {
        let Corrupting { inner, ledger } = self;
        drop(ledger);
        inner.teardown()
    }
}
