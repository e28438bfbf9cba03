//! Loom models of the scheduler's races (run by `make loom`, `scripts/loom.sh`): they need the
//! crate's internals, so they live in `src/` under `#[cfg(all(test, gpusched_loom))]`.

use std::time::{Duration, Instant};

use gpusched_fence::{Fence, FenceContext, FenceError, FenceStatus, Signaller};

use crate::backend::{Backend, JobInfo, TimeoutStatus};
use crate::sync::{lock, Arc, Mutex};
use crate::tdr::{Recovery, TimeoutTarget};
use crate::{Entity, Priority, Scheduler, SchedulerConfig};

struct LoomRing {
    ctx: FenceContext,
    hw: Mutex<Option<Signaller>>,
}

impl Backend for LoomRing {
    type Job = ();
    type Error = std::convert::Infallible;

    fn run_job(&self, _job: &mut (), _info: &JobInfo) -> Result<Fence, FenceError> {
        let (fence, signaller) = self.ctx.next();
        *lock(&self.hw) = Some(signaller);
        Ok(fence)
    }

    fn timedout_job(&self, r: &mut Recovery<'_, Self>) -> TimeoutStatus {
        // The reset forgets the job on the ring; resubmission runs it again.
        r.standard_reset(|| {
            drop(lock(&self.hw).take());
            true
        })
    }
}

fn complete(ring: &LoomRing) {
    let s = lock(&ring.hw).take();
    if let Some(s) = s {
        s.signal();
    }
}

/// The race at the centre of TDR: the hardware completing a job, the timeout handler
/// recovering it, and teardown (device loss) force-completing it, all at once. Every
/// interleaving must retire the job exactly once, leave no credits in flight, and signal its
/// finished fence with one of the outcomes those three paths produce.
#[test]
fn completion_vs_timeout_vs_teardown() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let ring = LoomRing { ctx: FenceContext::new("loom-ring"), hw: Mutex::new(None) };
        let sched = Scheduler::new(
            ring,
            SchedulerConfig::new("loom").timeout(Duration::from_secs(1)).hang_limit(10),
        )
        .unwrap();
        let entity = Entity::new(&[&sched], Priority::Normal).unwrap();
        let finished = entity.job(()).arm().unwrap().push();
        let far = Instant::now() + Duration::from_secs(3600);

        let s1 = sched.shared.clone();
        let hw = loom::thread::spawn(move || complete(&s1.backend));
        let s2 = sched.shared.clone();
        let tdr = loom::thread::spawn(move || s2.handle_timeout(far));
        let s3: Arc<crate::sched::SchedShared<LoomRing>> = sched.shared.clone();
        let teardown = loom::thread::spawn(move || s3.device_gone());
        hw.join().unwrap();
        tdr.join().unwrap();
        teardown.join().unwrap();
        // A resubmitted job may still be on the ring: let the hardware finish it.
        complete(&sched.shared.backend);

        match finished.status() {
            FenceStatus::Signaled
            | FenceStatus::Failed(FenceError::TimedOut | FenceError::DeviceLost) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
        let stats = sched.stats();
        assert_eq!(stats.finished_ok + stats.finished_err + stats.cancelled, 1, "{stats:?}");
        assert_eq!(stats.credits_in_flight, 0);
        assert!(lock(&sched.shared.state).pending.is_empty());
    });
}

/// A ring with the teardown op: `cancel_running` signals the hardware fence with the
/// error, unless the hardware completed it first. Counts frees.
struct CancelRing {
    ctx: FenceContext,
    hw: Mutex<Option<Signaller>>,
    /// The hardware fence of the job, to check that it is freed only after it signalled.
    fence: Mutex<Option<Fence>>,
    freed: crate::sync::AtomicUsize,
    cancel_op: bool,
}

impl Backend for CancelRing {
    type Job = ();
    type Error = std::convert::Infallible;

    fn run_job(&self, _job: &mut (), _info: &JobInfo) -> Result<Fence, FenceError> {
        let (fence, signaller) = self.ctx.next();
        *lock(&self.hw) = Some(signaller);
        *lock(&self.fence) = Some(fence.clone());
        Ok(fence)
    }

    fn timedout_job(&self, _r: &mut Recovery<'_, Self>) -> TimeoutStatus {
        TimeoutStatus::NoHang
    }

    fn free_job(&self, _job: (), _info: &JobInfo) {
        let hw = lock(&self.fence).clone();
        assert!(hw.is_some_and(|f| f.is_signaled()), "freed before the hardware was done");
        self.freed.fetch_add(1, crate::sync::Ordering::AcqRel);
    }

    fn cancel_running(&self, _job: &mut (), _info: &JobInfo, error: FenceError) {
        if !self.cancel_op {
            return;
        }
        let s = lock(&self.hw).take();
        if let Some(s) = s {
            s.signal_error(error);
        }
    }
}

/// Teardown (`fini`) racing the hardware's completion of the job on the ring, with and
/// without the backend's cancel op: the finished fence has signalled when teardown
/// returns (its real outcome or `Cancelled`), the job is retired once, and its payload
/// is freed exactly once, never before the hardware fence signalled.
#[test]
fn completion_vs_fini_with_cancel_op() {
    completion_vs_fini(true);
}

#[test]
fn completion_vs_fini_without_cancel_op() {
    completion_vs_fini(false);
}

fn completion_vs_fini(cancel_op: bool) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        let ring = CancelRing {
            ctx: FenceContext::new("loom-ring"),
            hw: Mutex::new(None),
            fence: Mutex::new(None),
            freed: crate::sync::AtomicUsize::new(0),
            cancel_op,
        };
        let sched = Scheduler::new(ring, SchedulerConfig::new("loom").no_timeout()).unwrap();
        let entity = Entity::new(&[&sched], Priority::Normal).unwrap();
        let finished = entity.job(()).arm().unwrap().push();
        let shared = sched.shared.clone();
        let s1 = sched.shared.clone();
        let hw = loom::thread::spawn(move || complete_cancel_ring(&s1.backend));
        sched.shutdown(FenceError::Cancelled);
        match finished.status() {
            FenceStatus::Signaled | FenceStatus::Failed(FenceError::Cancelled) => {}
            other => panic!("pending or unexpected after teardown: {other:?}"),
        }
        hw.join().unwrap();
        let stats = sched.stats();
        assert_eq!(stats.finished_ok + stats.finished_err, 1, "{stats:?}");
        assert_eq!(stats.credits_in_flight, 0);
        // The hardware fence has signalled (completion or cancel): freed once.
        assert_eq!(shared.backend.freed.load(crate::sync::Ordering::Acquire), 1);
        drop(entity);
    });
}

fn complete_cancel_ring(ring: &CancelRing) {
    let s = lock(&ring.hw).take();
    if let Some(s) = s {
        s.signal();
    }
}

/// The ready lists' wake-up of an entity whose head job waits for an external dependency:
/// the dependency signals on another thread while the job is pushed and selection parks the
/// entity. The callback that counts the last dependency down must find the entity parked (or
/// selection must find the dependency met): in every interleaving the job runs exactly once.
#[test]
fn dependency_signal_vs_push_and_selection() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let ring = LoomRing { ctx: FenceContext::new("loom-ring"), hw: Mutex::new(None) };
        let sched =
            Scheduler::new(ring, SchedulerConfig::new("loom").timeout(Duration::from_secs(1)))
                .unwrap();
        let entity = Entity::new(&[&sched], Priority::Normal).unwrap();
        let gate_ctx = FenceContext::new("gate");
        let (gate, signaller) = gate_ctx.next();
        let armed = entity.job(()).dependency(gate).arm().unwrap();
        let signal = loom::thread::spawn(move || {
            signaller.signal();
        });
        let finished = armed.push();
        signal.join().unwrap();
        // The job is on the ring now, unless its wake-up was lost.
        complete(&sched.shared.backend);
        assert!(finished.is_signaled(), "{:?}", finished.status());
        assert_eq!(sched.stats().jobs_run, 1);
    });
}
