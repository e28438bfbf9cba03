//! Teardown nested inside a scheduled-fence callback (the last scheduler handle dropped
//! there), while the job is selected but before its `run_job` returned: the payload must not
//! be freed while its hardware fence is pending (`free_job` may release what the hardware
//! still uses).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpusched::fence::{Fence, FenceContext, FenceError, PreparedFence, Signaller};
use gpusched::{
    Backend, Entity, JobInfo, Priority, Recovery, Scheduler, SchedulerConfig, TimeoutStatus,
};

#[derive(Default)]
struct Shared {
    signallers: Mutex<Vec<Signaller>>,
    early_free: AtomicUsize,
    frees: AtomicUsize,
}

struct Ring {
    ctx: FenceContext,
    sh: Arc<Shared>,
}

struct J {
    prep: Option<PreparedFence>,
    hw: Option<Fence>,
}

impl Backend for Ring {
    type Job = J;
    type Error = std::convert::Infallible;
    fn prepare_job(&self, job: &mut J, _: &JobInfo) -> Result<(), Self::Error> {
        job.prep = Some(self.ctx.prepare(1, None));
        self.sh.signallers.lock().unwrap().reserve(8);
        Ok(())
    }
    fn run_job(&self, job: &mut J, _: &JobInfo) -> Result<Fence, FenceError> {
        let (f, s) = job.prep.take().unwrap().init(self.ctx.next_seqno());
        job.hw = Some(f.clone());
        self.sh.signallers.lock().unwrap().push(s);
        Ok(f)
    }
    fn timedout_job(&self, _: &mut Recovery<'_, Self>) -> TimeoutStatus {
        TimeoutStatus::NoHang
    }
    fn free_job(&self, job: J, _: &JobInfo) {
        self.sh.frees.fetch_add(1, Ordering::SeqCst);
        if job.hw.as_ref().is_some_and(|f| !f.is_signaled()) {
            self.sh.early_free.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn teardown_nested_in_a_scheduled_callback_keeps_the_payload_until_the_hardware_is_done() {
    let sh = Arc::new(Shared::default());
    let ring = Ring { ctx: FenceContext::new("r"), sh: sh.clone() };
    let s = Scheduler::new(ring, SchedulerConfig::new("r").credit_limit(4)).unwrap();
    let e = Entity::new(&[&s], Priority::Normal).unwrap();
    let armed = e.job(J { prep: None, hw: None }).arm().unwrap();
    let handle = Arc::new(Mutex::new(None));
    let h = handle.clone();
    armed
        .scheduled()
        .add_callback(move |_| drop(h.lock().unwrap_or_else(|p| p.into_inner()).take()))
        .unwrap();
    *handle.lock().unwrap() = Some(s);
    let finished = armed.push();
    assert!(finished.wait_timeout(Duration::from_secs(5)).is_ok() || finished.is_signaled());
    assert!(finished.is_signaled(), "teardown signalled the finished fence");
    assert_eq!(sh.signallers.lock().unwrap().len(), 1, "the hardware still runs the job");
    assert_eq!(sh.frees.load(Ordering::SeqCst), 0, "payload freed while its hardware ran it");
    // The hardware finishes: now the payload is freed, once.
    for s in sh.signallers.lock().unwrap().drain(..) {
        s.signal();
    }
    assert_eq!(sh.frees.load(Ordering::SeqCst), 1);
    assert_eq!(sh.early_free.load(Ordering::SeqCst), 0);
    drop(e);
}
