//! A mock hardware ring for tests, benches and examples (the kernel's scheduler KUnit tests
//! use the same device: `drm_mock_scheduler`). It is a real [`Backend`]: a software timeline
//! whose hardware fences signal in ring order, immediately, by hand, or after each job's
//! duration on a completion thread, with hangs and failures on request.
//!
//! It follows the backend contract: everything `run_job` needs (the hardware fence, room in
//! the in-flight queue and logs) is allocated in `prepare_job`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gpusched_fence::{Fence, FenceContext, FenceError, PreparedFence, Signaller};

use crate::backend::{Backend, JobInfo, TimeoutStatus};
use crate::tdr::Recovery;

/// What a mock job does on the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MockBehavior {
    /// Completes successfully.
    Complete,
    /// Completes with an error (a hardware fault).
    Fail(FenceError),
    /// Never completes until [`MockRing::release_hangs`] (the ring stalls behind it, as real
    /// rings and lavapipe do).
    Hang,
}

/// A mock job: a tag to recognise it, a behaviour, a duration (timed rings only).
pub struct MockJob {
    /// The tag logged when the job runs and completes.
    pub tag: u64,
    /// What it does.
    pub behavior: MockBehavior,
    /// How long it runs on a timed ring.
    pub duration: Duration,
    hw: Option<PreparedFence>,
    /// Hardware fences of other rings the ring waits for before running the job (see
    /// [`MockRing::on_device`]); slots reserved at arm.
    native: Vec<Option<Fence>>,
}

impl fmt::Debug for MockJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockJob")
            .field("tag", &self.tag)
            .field("behavior", &self.behavior)
            .field("duration", &self.duration)
            .finish()
    }
}

impl MockJob {
    /// A job that completes successfully at once.
    pub fn new(tag: u64) -> Self {
        MockJob {
            tag,
            behavior: MockBehavior::Complete,
            duration: Duration::ZERO,
            hw: None,
            native: Vec::new(),
        }
    }

    /// Sets the behaviour.
    pub fn behavior(mut self, behavior: MockBehavior) -> Self {
        self.behavior = behavior;
        self
    }

    /// Sets the duration on a timed ring.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }
}

/// When the mock ring's hardware fences signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Inside `run_job` (unless the job hangs or something hangs ahead of it).
    Immediate,
    /// When the test calls [`MockRing::complete_next`] or [`MockRing::complete_all`].
    Manual,
    /// On a completion thread, each job `duration` after it started (after the one before).
    Timed,
}

struct InFlight {
    /// The scheduler's job id (`JobInfo::id`).
    id: u64,
    tag: u64,
    credits: u32,
    behavior: MockBehavior,
    due: Instant,
    signaller: Signaller,
    /// Other rings' hardware fences the job waits for on the "device" before it runs.
    waits: Vec<Option<Fence>>,
}

impl InFlight {
    /// Whether the ring still waits, on the device, for another ring's job.
    fn waiting(&self) -> bool {
        self.waits.iter().flatten().any(|f| !f.is_signaled())
    }

    /// Whether the ring may complete it now.
    fn can_complete(&self) -> bool {
        self.behavior != MockBehavior::Hang && !self.waiting()
    }
}

#[derive(Default)]
struct RingState {
    in_flight: VecDeque<InFlight>,
    /// Jobs prepared and not yet run or freed: room reserved for them.
    prepared: usize,
    ran: Vec<u64>,
    completed: Vec<u64>,
    /// Tags of the jobs cancelled on the ring (`cancel_running`), in order.
    cancelled: Vec<u64>,
    completed_at: Vec<Instant>,
    credits_in_flight: u32,
    max_credits_in_flight: u32,
    shutdown: bool,
    timeouts: u64,
    resets: u64,
    /// Fences prepared for resubmissions after a reset (run_job must not allocate).
    spares: Vec<PreparedFence>,
    /// Waits for other rings' hardware fences submitted with jobs so far.
    native_waits: u64,
}

struct RingShared {
    mode: Completion,
    ctx: FenceContext,
    state: Mutex<RingState>,
    cv: Condvar,
    timeout_answer: Mutex<TimeoutStatus>,
    /// Rings with the same non-zero device wait for each other's hardware fences natively.
    device: u64,
}

fn lock(m: &Mutex<RingState>) -> MutexGuard<'_, RingState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The mock hardware ring; see the module docs.
pub struct MockRing {
    shared: Arc<RingShared>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for MockRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockRing")
            .field("mode", &self.shared.mode)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl MockRing {
    /// A ring completing jobs inside `run_job`.
    pub fn immediate() -> Self {
        Self::new(Completion::Immediate)
    }

    /// A ring completing jobs when the test says so.
    pub fn manual() -> Self {
        Self::new(Completion::Manual)
    }

    /// A ring completing jobs after their durations, on its own thread.
    pub fn timed() -> Self {
        Self::new(Completion::Timed)
    }

    /// A ring with the given completion mode.
    pub fn new(mode: Completion) -> Self {
        Self::on_device(mode, 0)
    }

    /// A ring of mock device `device`: rings of one non-zero device wait for each other's
    /// jobs on the "device" ([`Backend::can_wait_natively`]): a job waiting for another
    /// ring's job is submitted once that job is, and the ring completes it only after that
    /// job's hardware fence signalled (a hang there stalls this ring too). `0`: no device,
    /// every cross-ring dependency waits on the host.
    pub fn on_device(mode: Completion, device: u64) -> Self {
        let shared = Arc::new(RingShared {
            mode,
            ctx: FenceContext::builder("mock-ring").driver_name("mock").build(),
            state: Mutex::new(RingState::default()),
            cv: Condvar::new(),
            timeout_answer: Mutex::new(TimeoutStatus::Reset),
            device,
        });
        let thread = (mode == Completion::Timed).then(|| {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("mock-ring".into())
                .spawn(move || completion_thread(&s))
                .unwrap_or_else(|e| panic!("cannot start the mock ring's thread: {e}"))
        });
        MockRing { shared, thread }
    }

    /// The ring's hardware fence context id.
    pub fn context(&self) -> u64 {
        self.shared.ctx.id()
    }

    /// Completes the oldest job on the ring, unless it hangs. Returns whether one completed.
    pub fn complete_next(&self) -> bool {
        let entry = {
            let mut st = lock(&self.shared.state);
            match st.in_flight.front() {
                Some(e) if e.can_complete() => st.in_flight.pop_front(),
                _ => None,
            }
        };
        match entry {
            Some(e) => {
                finish(&self.shared, e);
                true
            }
            None => false,
        }
    }

    /// Completes jobs in ring order until the ring is empty or a hang blocks it. Returns how
    /// many completed.
    pub fn complete_all(&self) -> usize {
        let mut n = 0;
        while self.complete_next() {
            n += 1;
        }
        n
    }

    /// Turns every hanging job into one that completes, and completes what it can (manual and
    /// immediate rings) or lets the thread do it (timed rings).
    pub fn release_hangs(&self) {
        {
            let mut st = lock(&self.shared.state);
            let now = Instant::now();
            for e in st.in_flight.iter_mut() {
                if e.behavior == MockBehavior::Hang {
                    e.behavior = MockBehavior::Complete;
                    e.due = now;
                }
            }
        }
        self.shared.cv.notify_all();
        if self.shared.mode != Completion::Timed {
            self.complete_all();
        }
    }

    /// Jobs on the ring now.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared.state).in_flight.len()
    }

    /// Tags of the jobs in the order the ring received them.
    pub fn run_tags(&self) -> Vec<u64> {
        lock(&self.shared.state).ran.clone()
    }

    /// Tags of the jobs in the order they completed.
    pub fn completed_tags(&self) -> Vec<u64> {
        lock(&self.shared.state).completed.clone()
    }

    /// Tags of the jobs cancelled on the ring by a scheduler teardown
    /// ([`Backend::cancel_running`]), in order.
    pub fn cancelled_tags(&self) -> Vec<u64> {
        lock(&self.shared.state).cancelled.clone()
    }

    /// Tags of the completed jobs with the time the ring completed each, in order.
    pub fn completion_log(&self) -> Vec<(u64, Instant)> {
        let st = lock(&self.shared.state);
        st.completed.iter().copied().zip(st.completed_at.iter().copied()).collect()
    }

    /// The most credits that were ever on the ring at once.
    pub fn max_credits_in_flight(&self) -> u32 {
        lock(&self.shared.state).max_credits_in_flight
    }

    /// How many waits for other rings' hardware fences were submitted with jobs.
    pub fn native_waits(&self) -> u64 {
        lock(&self.shared.state).native_waits
    }

    /// Whether the oldest job on the ring waits, on the device, for another ring's job.
    pub fn head_waits_natively(&self) -> bool {
        lock(&self.shared.state).in_flight.front().is_some_and(InFlight::waiting)
    }

    /// How many times the timeout handler ran.
    pub fn timeouts(&self) -> u64 {
        lock(&self.shared.state).timeouts
    }

    /// The hardware reset: the ring forgets every job on it (their old hardware fences
    /// signal `Abandoned`; the scheduler has detached from them). Allocation-free.
    pub fn reset_hw(&self) {
        let mut st = lock(&self.shared.state);
        st.in_flight.clear();
        st.credits_in_flight = 0;
        st.resets += 1;
    }

    /// How many hardware resets happened.
    pub fn resets(&self) -> u64 {
        lock(&self.shared.state).resets
    }

    /// What [`Backend::timedout_job`] answers (default [`TimeoutStatus::Reset`]).
    pub fn set_timeout_answer(&self, answer: TimeoutStatus) {
        *self.shared.timeout_answer.lock().unwrap_or_else(|p| p.into_inner()) = answer;
    }
}

fn finish(shared: &RingShared, e: InFlight) {
    let idx = {
        let mut st = lock(&shared.state);
        st.completed.push(e.tag);
        st.completed_at.push(Instant::now());
        st.credits_in_flight -= e.credits;
        st.completed.len() - 1
    };
    match e.behavior {
        MockBehavior::Fail(err) => e.signaller.signal_error(err),
        _ => e.signaller.signal(),
    };
    // The completion time is when the hardware fence *has* signalled: the moment the
    // scheduler can observe it.
    lock(&shared.state).completed_at[idx] = Instant::now();
}

fn completion_thread(shared: &RingShared) {
    let mut st = lock(&shared.state);
    loop {
        if st.shutdown {
            return;
        }
        let now = Instant::now();
        let wait = match st.in_flight.front() {
            // A device-side wait for another ring: poll.
            Some(e) if e.waiting() => Some(Duration::from_millis(1)),
            Some(e) if e.behavior != MockBehavior::Hang && e.due <= now => None,
            Some(e) if e.behavior != MockBehavior::Hang => Some(e.due - now),
            _ => Some(Duration::from_secs(3600)),
        };
        match wait {
            None => {
                if let Some(e) = st.in_flight.pop_front() {
                    drop(st);
                    finish(shared, e);
                    st = lock(&shared.state);
                }
            }
            Some(d) => {
                st = shared.cv.wait_timeout(st, d).unwrap_or_else(|p| p.into_inner()).0;
            }
        }
    }
}

impl Drop for MockRing {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.take() {
            // The last handle may be dropped by a completion callback on the ring's own thread:
            // it exits by itself once it sees `shutdown`; joining it from itself would fail.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        // In-flight signallers drop with the state: their fences signal `Abandoned`.
    }
}

impl Backend for MockRing {
    type Job = MockJob;
    type Error = std::convert::Infallible;

    fn prepare_job(&self, job: &mut MockJob, _info: &JobInfo) -> Result<(), Self::Error> {
        job.hw = Some(self.shared.ctx.prepare(1, None));
        // Two spares per prepared job (capped): each resubmission after a reset needs a fresh
        // hardware fence, and `run_job` must not allocate one.
        let spares = [self.shared.ctx.prepare(1, None), self.shared.ctx.prepare(1, None)];
        let mut st = lock(&self.shared.state);
        for spare in spares {
            if st.spares.len() < 512 {
                st.spares.push(spare);
            }
        }
        st.prepared += 1;
        // Room for every prepared job, plus slack for resubmissions after resets (which run
        // and complete jobs again without a new prepare).
        let need = 2 * st.prepared + 64;
        st.in_flight.reserve(need);
        st.ran.reserve(need);
        st.completed.reserve(need);
        st.cancelled.reserve(need);
        st.completed_at.reserve(need);
        Ok(())
    }

    fn run_job(&self, job: &mut MockJob, info: &JobInfo) -> Result<Fence, FenceError> {
        let first_run = job.hw.is_some();
        let prepared = match job.hw.take() {
            Some(p) => p,
            // A resubmission after a reset: use a spare prepared earlier.
            None => match lock(&self.shared.state).spares.pop() {
                Some(p) => p,
                None => return Err(FenceError::Cancelled),
            },
        };
        let (fence, signaller) = prepared.init(self.shared.ctx.next_seqno());
        let immediate = {
            let mut st = lock(&self.shared.state);
            if first_run {
                st.prepared = st.prepared.saturating_sub(1);
            }
            st.ran.push(job.tag);
            st.native_waits += job.native.iter().flatten().count() as u64;
            st.credits_in_flight += info.credits;
            st.max_credits_in_flight = st.max_credits_in_flight.max(st.credits_in_flight);
            let start =
                st.in_flight.back().map_or_else(Instant::now, |e| e.due.max(Instant::now()));
            st.in_flight.push_back(InFlight {
                id: info.id,
                tag: job.tag,
                credits: info.credits,
                behavior: job.behavior,
                due: start + job.duration,
                signaller,
                // Moved, not copied: a resubmission has no native waits left to honour.
                waits: std::mem::take(&mut job.native),
            });
            self.shared.mode == Completion::Immediate
        };
        match self.shared.mode {
            Completion::Timed => self.shared.cv.notify_all(),
            _ if immediate => {
                self.complete_all();
            }
            _ => {}
        }
        Ok(fence)
    }

    fn can_wait_natively(&self, other: &Self) -> bool {
        self.shared.device != 0 && self.shared.device == other.shared.device
    }

    fn reserve_native_waits(&self, job: &mut MockJob, count: usize) {
        job.native = vec![None; count];
    }

    fn wait_natively(
        &self,
        job: &mut MockJob,
        index: usize,
        hw: Option<&Fence>,
    ) -> Result<(), FenceError> {
        // A resubmission after a reset: the slots were moved to the first submission.
        if let Some(slot) = job.native.get_mut(index) {
            *slot = hw.cloned();
        }
        Ok(())
    }

    /// A head job still waiting on the device for another ring's job is not hung: the
    /// timeout is extended ([`TimeoutStatus::NoHang`]) whatever the configured answer.
    fn timedout_job(&self, recovery: &mut Recovery<'_, Self>) -> TimeoutStatus {
        lock(&self.shared.state).timeouts += 1;
        if self.head_waits_natively() {
            return TimeoutStatus::NoHang;
        }
        let answer = *self.shared.timeout_answer.lock().unwrap_or_else(|p| p.into_inner());
        match answer {
            TimeoutStatus::NoHang => TimeoutStatus::NoHang,
            TimeoutStatus::Reset => recovery.standard_reset(|| {
                self.reset_hw();
                true
            }),
            TimeoutStatus::NoDevice => {
                recovery.stop();
                recovery.device_gone();
                TimeoutStatus::NoDevice
            }
        }
    }

    /// Takes the job off the ring (a hung one included) and signals its hardware fence with
    /// `error`; the jobs behind it go on. Allocation-free (the log has room from
    /// `prepare_job`).
    fn cancel_running(&self, _job: &mut MockJob, info: &JobInfo, error: FenceError) {
        let entry = {
            let mut st = lock(&self.shared.state);
            let pos = st.in_flight.iter().position(|e| e.id == info.id);
            let entry = pos.and_then(|p| st.in_flight.remove(p));
            if let Some(e) = &entry {
                st.credits_in_flight -= e.credits;
                st.cancelled.push(e.tag);
            }
            entry
        };
        // Signalled with no ring lock held: the completion callback may call back in.
        if let Some(e) = entry {
            e.signaller.signal_error(error);
            self.shared.cv.notify_all();
        }
    }

    fn free_job(&self, job: MockJob, _info: &JobInfo) {
        if job.hw.is_some() {
            let mut st = lock(&self.shared.state);
            st.prepared = st.prepared.saturating_sub(1);
        }
    }
}
