//! The mock-ring world: [`FaultRing`], a software ring that executes jobs in ring order on a
//! thread and computes each job's value into the [`Ledger`], with the faults `MockRing`
//! cannot express (submission failure, device loss, computed results read from dependencies).
//!
//! It follows the backend contract (`gpusched::Backend`): everything `run_job` needs is
//! allocated in `prepare_job` (the hardware fence, spares for resubmissions, room in the ring);
//! `run_job`, completion, `timedout_job`, `cancel_job` and `free_job` only touch atomics and a
//! plain mutex.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gpusched::fence::{Fence, FenceContext, FenceError, PreparedFence, Signaller};
use gpusched::{
    Backend, JobInfo, Recovery, ResetDomain, Scheduler, SchedulerConfig, TimeoutStatus,
};

use crate::ledger::Ledger;
use crate::plan::{Fault, Scenario, SUBMIT_ERROR};
use crate::world::World;

/// Spare hardware fences a ring keeps for resubmissions (each reset resubmits at most a
/// credit limit's worth of jobs).
const SPARES: usize = 256;

/// A job on the fault ring.
pub struct FaultJob {
    idx: usize,
    fault: Fault,
    hw: Option<PreparedFence>,
    ledger: Arc<Ledger>,
}

impl fmt::Debug for FaultJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultJob").field("idx", &self.idx).field("fault", &self.fault).finish()
    }
}

impl Drop for FaultJob {
    fn drop(&mut self) {
        self.ledger.live_objects.fetch_sub(1, Ordering::AcqRel);
    }
}

struct InFlight {
    idx: usize,
    /// `None`: hangs until the ring is reset.
    due: Option<Instant>,
    signaller: Signaller,
}

struct RingState {
    /// Jobs on the hardware, in ring order. Capacity reserved at prepare.
    in_flight: VecDeque<InFlight>,
    /// Fences prepared for resubmissions (`run_job` must not allocate).
    spares: Vec<PreparedFence>,
    shutdown: bool,
}

/// The device the rings of one world share.
struct Device {
    lost: AtomicBool,
    ledger: Arc<Ledger>,
}

struct RingShared {
    ctx: FenceContext,
    device: Arc<Device>,
    state: Mutex<RingState>,
    cv: Condvar,
}

fn lock(m: &Mutex<RingState>) -> MutexGuard<'_, RingState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The software ring of the mock world; see the module docs.
pub struct FaultRing {
    shared: Arc<RingShared>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for FaultRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultRing").field("context", &self.shared.ctx.id()).finish_non_exhaustive()
    }
}

impl FaultRing {
    fn new(name: String, device: Arc<Device>) -> FaultRing {
        let shared = Arc::new(RingShared {
            ctx: FenceContext::builder(name.clone()).driver_name("fault-ring").build(),
            device,
            state: Mutex::new(RingState {
                in_flight: VecDeque::new(),
                spares: Vec::with_capacity(SPARES),
                shutdown: false,
            }),
            cv: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || execute(&s))
            .unwrap_or_else(|e| panic!("cannot start a fault ring's thread: {e}"));
        FaultRing { shared, thread: Some(thread) }
    }

    /// The hardware reset: forgets every job on the ring (their hardware fences signal
    /// `Abandoned`; the scheduler detached from them). Allocation-free.
    fn reset_hw(&self) {
        let mut st = lock(&self.shared.state);
        // Popping keeps the queue's allocation for later pushes.
        while let Some(e) = st.in_flight.pop_front() {
            drop(e);
        }
    }
}

/// The ring's hardware: executes the head job once it is due, in ring order; a hung head
/// stalls the ring; nothing executes on a lost device.
fn execute(shared: &RingShared) {
    let mut st = lock(&shared.state);
    loop {
        if st.shutdown {
            return;
        }
        let now = Instant::now();
        let lost = shared.device.lost.load(Ordering::Acquire);
        let wait = match st.in_flight.front() {
            _ if lost => Some(Duration::from_secs(3600)),
            Some(InFlight { due: Some(due), .. }) if *due <= now => None,
            Some(InFlight { due: Some(due), .. }) => Some(*due - now),
            _ => Some(Duration::from_secs(3600)),
        };
        match wait {
            None => {
                if let Some(e) = st.in_flight.pop_front() {
                    // Compute under the ring lock: a reset either forgets the job or finds it
                    // executed.
                    shared.device.ledger.execute(e.idx);
                    drop(st);
                    let _section = gpusched::fence::lockdep::signalling_section();
                    e.signaller.signal();
                    st = lock(&shared.state);
                }
            }
            Some(d) => st = shared.cv.wait_timeout(st, d).unwrap_or_else(|p| p.into_inner()).0,
        }
    }
}

impl Drop for FaultRing {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.take() {
            // The last scheduler handle may drop on the ring's own thread (a completion
            // callback): it exits by itself once it sees `shutdown`.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        self.shared.device.ledger.live_objects.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Backend for FaultRing {
    type Job = FaultJob;
    type Error = std::convert::Infallible;

    fn prepare_job(&self, job: &mut FaultJob, _info: &JobInfo) -> Result<(), Self::Error> {
        self.shared.device.ledger.job(job.idx).prepared.fetch_add(1, Ordering::AcqRel);
        job.hw = Some(self.shared.ctx.prepare(1, None));
        let spares = [self.shared.ctx.prepare(1, None), self.shared.ctx.prepare(1, None)];
        let mut st = lock(&self.shared.state);
        for s in spares {
            if st.spares.len() < SPARES {
                st.spares.push(s);
            }
        }
        // Room for every job that may be on the ring at once, resubmissions included.
        st.in_flight.reserve(64);
        Ok(())
    }

    fn run_job(&self, job: &mut FaultJob, _info: &JobInfo) -> Result<Fence, FenceError> {
        let ledger = &self.shared.device.ledger;
        ledger.ran(job.idx);
        if self.shared.device.lost.load(Ordering::Acquire) {
            return Err(FenceError::DeviceLost);
        }
        let first_run = job.hw.is_some();
        if first_run && job.fault == Fault::FailSubmit {
            job.hw = None;
            return Err(SUBMIT_ERROR);
        }
        let mut st = lock(&self.shared.state);
        let prepared = match job.hw.take() {
            Some(p) => p,
            None => match st.spares.pop() {
                Some(p) => p,
                // Cannot happen with the spares reserved at prepare; an error the oracle
                // would flag rather than an allocation.
                None => return Err(FenceError::Abandoned),
            },
        };
        let (fence, signaller) = prepared.init(self.shared.ctx.next_seqno());
        let start = st
            .in_flight
            .back()
            .and_then(|e| e.due)
            .map_or_else(Instant::now, |d| d.max(Instant::now()));
        let due = match job.fault {
            Fault::Hang => None,
            Fault::Slow(d) => Some(start + d),
            Fault::None | Fault::FailSubmit => Some(start),
        };
        if st.in_flight.len() == st.in_flight.capacity() {
            drop(st);
            return Err(FenceError::Abandoned);
        }
        st.in_flight.push_back(InFlight { idx: job.idx, due, signaller });
        drop(st);
        self.shared.cv.notify_all();
        Ok(fence)
    }

    fn timedout_job(&self, recovery: &mut Recovery<'_, Self>) -> TimeoutStatus {
        if self.shared.device.lost.load(Ordering::Acquire) {
            recovery.stop();
            self.reset_hw();
            recovery.device_gone();
            return TimeoutStatus::NoDevice;
        }
        let guilty = recovery.with_guilty_payload(|p| (p.idx, p.fault));
        let Some((idx, fault)) = guilty else { return TimeoutStatus::NoHang };
        if !fault.is_stuck() {
            // The hardware is making progress: a fault-free job takes microseconds and is
            // late only because the host has not run the ring's thread (a loaded machine).
            return TimeoutStatus::NoHang;
        }
        let ledger = &self.shared.device.ledger;
        ledger.job(idx).guilty.fetch_add(1, Ordering::AcqRel);
        // Diagnostics: when the reset happened (a guilty job never executes).
        let t = ledger.tick.fetch_add(1, Ordering::AcqRel);
        ledger.job(idx).run_ticks[2].store(t, Ordering::Release);
        let status = recovery.standard_reset(|| {
            self.reset_hw();
            true
        });
        if status == TimeoutStatus::NoHang {
            // It completed as the timeout fired: not blamed.
            ledger.job(idx).guilty.fetch_sub(1, Ordering::AcqRel);
        }
        status
    }

    fn cancel_job(&self, job: &mut FaultJob, _info: &JobInfo, _error: FenceError) {
        self.shared.device.ledger.job(job.idx).cancelled.fetch_add(1, Ordering::AcqRel);
    }

    fn free_job(&self, job: FaultJob, _info: &JobInfo) {
        self.shared.device.ledger.job(job.idx).freed.fetch_add(1, Ordering::AcqRel);
        drop(job);
    }
}

/// The mock world: [`FaultRing`]s in one reset domain; see the module docs.
pub struct MockWorld {
    schedulers: Vec<Scheduler<FaultRing>>,
    device: Arc<Device>,
}

impl fmt::Debug for MockWorld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockWorld").field("rings", &self.schedulers.len()).finish_non_exhaustive()
    }
}

impl World for MockWorld {
    type Backend = FaultRing;
    const NAME: &'static str = "mock";

    fn new(scenario: &Scenario, ledger: Arc<Ledger>) -> Result<Self, String> {
        let device = Arc::new(Device { lost: AtomicBool::new(false), ledger });
        let domain = ResetDomain::new(format!("fault-device-{}", scenario.seed));
        let schedulers = (0..scenario.rings)
            .map(|r| {
                let name = format!("fault-ring{r}");
                device.ledger.live_objects.fetch_add(1, Ordering::AcqRel);
                let ring = FaultRing::new(name.clone(), device.clone());
                let config = SchedulerConfig::new(name)
                    .credit_limit(scenario.credit_limit)
                    .timeout(scenario.timeout)
                    .hang_limit(scenario.hang_limit)
                    .policy(scenario.policy)
                    .reset_domain(&domain);
                Scheduler::new(ring, config).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MockWorld { schedulers, device })
    }

    fn schedulers(&self) -> &[Scheduler<FaultRing>] {
        &self.schedulers
    }

    fn payload(&self, idx: usize, fault: Fault) -> FaultJob {
        self.device.ledger.live_objects.fetch_add(1, Ordering::AcqRel);
        FaultJob { idx, fault, hw: None, ledger: self.device.ledger.clone() }
    }

    fn lose_device(&self) {
        self.device.lost.store(true, Ordering::Release);
        for s in &self.schedulers {
            s.backend().shared.cv.notify_all();
        }
    }

    fn teardown(self) -> Result<(), String> {
        let MockWorld { schedulers, device } = self;
        drop(schedulers);
        // The reset domain's worker and completion callbacks may hold a scheduler for a
        // moment after the last handle dropped: wait (bounded) for the rings to go.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Arc::strong_count(&device) > 1 {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} references to the device remain after teardown (a scheduler or ring \
                     leaked)",
                    Arc::strong_count(&device) - 1
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}
