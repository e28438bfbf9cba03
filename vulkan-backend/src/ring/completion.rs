//! A ring's completion thread: while the ring is busy it waits for the next value the ring
//! owes (a bounded poll first, when the ring's jobs complete fast: [`Pace`], [`spin_until`];
//! then a blocking `vkWaitSemaphores`), or, with several fast jobs in flight, sleeps through
//! some of them ([`Pace::coalesce`], [`Pace::nap`]), and signals the hardware fences the
//! semaphore passed ([`RingHw::complete`], callbacks inline); while it is idle it parks until
//! a submission wakes it. It holds the ring only through a weak reference ([`Watch`]), except once the
//! ring's `RingSlot` is gone: it then adopts the ring ([`RingHw::adopt`]) and drops the last
//! reference itself, between two waits, never inside a signalling section. It exits when the
//! ring is dropped or its core is lost.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use ash::vk;
use gpusched::fence::FenceError;

use super::hw::RingHw;
use crate::device::COMPLETION_TIMEOUT;
use crate::sync::lock;

impl RingHw {
    /// Starts the ring's completion thread (once, from `RingHw::new`; the ring's `watch` is
    /// fresh). Also finds out, once per process, how many CPUs may spin ([`SPIN_CPUS`]).
    pub(super) fn start_completion_thread(self: &Arc<Self>) -> std::io::Result<()> {
        if SPIN_CPUS.load(Ordering::Relaxed) == 0 {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            SPIN_CPUS.store(cpus, Ordering::Relaxed);
        }
        let weak = Arc::downgrade(self);
        let watch = self.watch.clone();
        let h = std::thread::Builder::new()
            .name(format!("gpusched-vk{}-{}", self.core.generation, self.name))
            .spawn(move || completion_thread(weak, watch))?;
        let _ = self.watch.thread.set(h.thread().clone());
        *lock(&self.thread) = Some(h);
        Ok(())
    }

    /// Wakes the ring's completion thread: a submission to an idle ring (it parks while the
    /// ring is idle), or teardown. Allocation-free (a futex wake), no Vulkan call.
    pub(crate) fn wake(&self) {
        if let Some(t) = self.watch.thread.get() {
            t.unpark();
        }
    }

    /// Hands the ring to its own completion thread, which keeps it until it holds the last
    /// reference and then drops it between two waits (the ring's `RingSlot` is gone). So the
    /// last reference to a ring is never dropped inside a signalling section (a job freed by
    /// a callback, a fence polled there): `RingHw::drop` waits, joins, and drops the retired
    /// jobs' buffers, whose `Resv`s may allocate (arc-swap's per-thread debt list on a fresh
    /// thread does). Allocation-free. A thread that has exited (a lost core) adopts nothing:
    /// the recovery thread's graveyard holds a lost generation's rings instead.
    pub(super) fn adopt(self: &Arc<Self>) {
        {
            let mut a = lock(&self.watch.adopted);
            if a.exited {
                return;
            }
            a.ring = Some(self.clone());
        }
        self.wake();
    }

    /// Stops the completion thread and joins it (unless this runs on it). Deadlock-free: the
    /// ring is being dropped, so the thread's weak reference no longer upgrades and it holds
    /// no lock, runs no callback and takes no lock from here on: it is parked (the wake
    /// ends that), or in a wait with a timeout ([`COMPLETION_TIMEOUT`]; after `drop`'s wait
    /// for the hardware to pass everything submitted, it returns at once), and then exits.
    pub(super) fn stop_thread(&self) {
        self.watch.stop.store(true, Ordering::SeqCst);
        self.wake();
        let handle = lock(&self.thread).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

/// What a ring's completion thread shares with the ring, without holding it: the thread must
/// not keep the ring (and so the device) alive while it sleeps.
pub(super) struct Watch {
    /// A copy of the device's function table (valid while the ring lives: the ring holds the
    /// core, and joins the thread before it is destroyed).
    pub(super) device: ash::Device,
    /// The ring's timeline semaphore (destroyed by the ring's drop after `stop`).
    pub(super) sem: vk::Semaphore,
    /// Set by the ring's drop: the thread exits before waiting again.
    pub(super) stop: AtomicBool,
    /// The thread, for `unpark`.
    pub(super) thread: OnceLock<Thread>,
    /// The ring, once its `RingSlot` (the scheduler's backend) is gone: see
    /// [`RingHw::adopt`].
    pub(super) adopted: Mutex<Adopted>,
}

impl Watch {
    /// What the completion thread of a ring whose semaphore is `sem` on `device` shares with
    /// it (no thread yet, nothing adopted).
    pub(super) fn new(device: &ash::Device, sem: vk::Semaphore) -> Arc<Watch> {
        Arc::new(Watch {
            device: device.clone(),
            sem,
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
            adopted: Mutex::new(Adopted { ring: None, exited: false }),
        })
    }
}

/// A ring held by its own completion thread until every other reference is gone.
pub(super) struct Adopted {
    pub(super) ring: Option<Arc<RingHw>>,
    /// The thread has exited (or is exiting): nothing can be adopted any more.
    pub(super) exited: bool,
}

/// How often a completion thread that holds its ring looks whether it holds the last
/// reference (while the ring is idle).
const ADOPTED_POLL: Duration = Duration::from_millis(5);

/// The longest a completion thread polls the semaphore before it blocks (see [`Pace`]).
pub(crate) const SPIN_MAX: Duration = Duration::from_micros(20);

/// The longest a completion thread lets a finished job wait for its signal so that it can
/// retire several at once (see [`Pace::coalesce`]).
pub(crate) const COALESCE_MAX: Duration = Duration::from_micros(100);

/// A completion thread's estimate of how fast its ring completes jobs, for the bounded
/// spin before a blocking wait and for how many jobs one wait covers (see
/// [`device`](crate::device), "The completion threads").
///
/// `per_job` is a moving average (weight 1/4 per sample) of the time per job between two
/// looks that found the ring's `completed` value advanced (by this thread or by a thread
/// that retired on the submission path), with the ring busy in between (the wait after a
/// park starts a new measure: an idle gap is no job's duration); 0 while unknown.
#[derive(Debug, Default)]
struct Pace {
    /// When the last look that found progress saw it, and the `completed` value it saw
    /// (`None`: the ring was idle since).
    last: Option<(Instant, u64)>,
    /// Average time per completed job, in nanoseconds (0: unknown).
    per_job: u64,
}

impl Pace {
    /// Whether the ring's jobs are short enough to poll for and to retire several at once:
    /// known, and completing less than [`SPIN_MAX`] apart.
    fn fast(&self) -> bool {
        self.per_job != 0 && self.per_job <= SPIN_MAX.as_nanos() as u64
    }

    /// How long to poll before blocking: twice the expected time to the next completion,
    /// at most [`SPIN_MAX`]; nothing when jobs take longer than that (or nothing is known):
    /// polling then only takes a CPU from the work.
    fn spin_budget(&self) -> Duration {
        if !self.fast() {
            return Duration::ZERO;
        }
        Duration::from_nanos((2 * self.per_job).min(SPIN_MAX.as_nanos() as u64))
    }

    /// How many of the `in_flight` jobs the next wait covers (at least 1): with fast jobs
    /// and several in flight, up to a quarter of them (the hardware still has the other
    /// three quarters queued when the thread wakes, so retiring late neither starves it nor
    /// leaves much of a burst's tail to retire after it went idle) and no more than fit in
    /// [`COALESCE_MAX`]; otherwise 1 (each job signalled as soon as it completes).
    fn coalesce(&self, in_flight: u64) -> u64 {
        if !self.fast() {
            return 1;
        }
        let window = COALESCE_MAX.as_nanos() as u64 / self.per_job;
        (in_flight / 4).min(window).max(1)
    }

    /// How long to sleep before retiring `ahead` jobs at once: the time the first
    /// `ahead - 1` of them are expected to take (at most [`COALESCE_MAX`]).
    fn nap(&self, ahead: u64) -> Duration {
        Duration::from_nanos(self.per_job.saturating_mul(ahead.saturating_sub(1))).min(COALESCE_MAX)
    }

    /// The ring's `completed` value is `value`, seen at `now`.
    fn progress(&mut self, now: Instant, value: u64) {
        match self.last {
            Some((_, seen)) if value <= seen => return,
            Some((last, seen)) => {
                let jobs = value - seen;
                let sample = (now.saturating_duration_since(last).as_nanos() as u64) / jobs;
                self.per_job =
                    if self.per_job == 0 { sample } else { (3 * self.per_job + sample) / 4 };
            }
            None => {}
        }
        self.last = Some((now, value));
    }
}

/// The CPUs this process may run on, for [`spin_until`]; set when a ring is created (finding
/// it out may allocate: the completion loop does not). 0 until then: no spinning.
pub(super) static SPIN_CPUS: AtomicUsize = AtomicUsize::new(0);

/// How often [`spin_until`] reads the counter: each read takes the driver's semaphore lock,
/// which its queue thread needs to signal.
const POLL_EVERY: Duration = Duration::from_micros(1);

/// Polls the semaphore until it reaches `value`, for at most `budget`, reading the counter
/// every [`POLL_EVERY`] and spinning (`spin_loop`) in between, as a fence wait spins before
/// it sleeps; never on a single CPU. Returns whether it got there; errors are left to the
/// blocking wait, which reports them.
///
/// It does not yield: a thread that yields waits behind whatever else runs on its CPU for a
/// whole scheduler slice, which holds completions (and so credits) back from a client that
/// submits in a loop until the hardware runs dry. So that spinning threads never take every
/// CPU from the work (rings of one device share a `VkQueue`, and on lavapipe its queue
/// thread), at most half the CPUs spin at once, process-wide: others block at once.
fn spin_until(watch: &Watch, value: u64, budget: Duration) -> bool {
    static SPINNING: AtomicUsize = AtomicUsize::new(0);
    if budget.is_zero() {
        return false;
    }
    if SPINNING.fetch_add(1, Ordering::AcqRel) >= SPIN_CPUS.load(Ordering::Relaxed) / 2 {
        SPINNING.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    let reached = poll_until(watch, value, budget);
    SPINNING.fetch_sub(1, Ordering::AcqRel);
    reached
}

/// The polling loop of [`spin_until`].
fn poll_until(watch: &Watch, value: u64, budget: Duration) -> bool {
    let start = Instant::now();
    loop {
        // SAFETY: as the blocking wait in `completion_loop`: the ring destroys the semaphore
        // only after setting `stop` and joining this thread (or on this thread, after it).
        match unsafe { watch.device.get_semaphore_counter_value(watch.sem) } {
            Ok(c) if c >= value => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        let polled = Instant::now();
        if polled.saturating_duration_since(start) >= budget {
            return false;
        }
        while polled.elapsed() < POLL_EVERY {
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        }
    }
}

thread_local! {
    /// This thread is a ring's completion thread: it signals hardware fences, and the
    /// callbacks they run (the scheduler's completion, the application's) may drop the last
    /// handle of a device, inside a signalling section.
    static ON_COMPLETION_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is a ring's completion thread (allocation-free).
pub(crate) fn on_completion_thread() -> bool {
    ON_COMPLETION_THREAD.with(std::cell::Cell::get)
}

/// A ring's completion thread (see [`device`](crate::device), "The completion threads"):
/// while the ring is busy, a bounded poll of the semaphore when its jobs complete faster
/// than [`SPIN_MAX`] ([`Pace`], [`spin_until`]), then a single-semaphore `vkWaitSemaphores`
/// for the next value it owes (or, with several such jobs in flight, a timed sleep through
/// some of them: [`Pace::coalesce`]), then [`RingHw::complete`] (callbacks inline); while it is
/// idle, parked until a submission wakes it. Exits when the ring is dropped or its core is
/// lost. Allocation-free.
pub(super) fn completion_thread(ring: Weak<RingHw>, watch: Arc<Watch>) {
    ON_COMPLETION_THREAD.with(|c| c.set(true));
    set_timer_slack();
    completion_loop(&ring, &watch);
    // Exiting (its core is lost): nothing can be adopted any more. An adopted ring is still
    // held until every other reference is gone (jobs being freed after the loss failed them,
    // a temporary upgrade by a fence's `signaled` or `mark_lost`), then dropped here, outside
    // any signalling section.
    let mut adopted = {
        let mut a = lock(&watch.adopted);
        a.exited = true;
        a.ring.take()
    };
    while let Some(r) = adopted.take() {
        match Arc::try_unwrap(r) {
            Ok(hw) => drop(hw),
            Err(r) => {
                adopted = Some(r);
                std::thread::sleep(ADOPTED_POLL);
            }
        }
    }
}

/// The slack Linux may add to this thread's timed sleeps, in nanoseconds (the default is
/// 50 µs, as long as a whole nap: see [`Pace::nap`]).
const TIMER_SLACK_NS: u64 = 1_000;

/// Sets the calling thread's timer slack to [`TIMER_SLACK_NS`] (Linux; elsewhere nothing).
/// A failure leaves the default, which only makes naps longer.
fn set_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: `PR_SET_TIMERSLACK` takes one integer argument and changes only the calling
    // thread's timer slack; it reads and writes no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS as libc::c_ulong);
    }
}

fn completion_loop(ring: &Weak<RingHw>, watch: &Watch) {
    let timeout = COMPLETION_TIMEOUT.as_nanos() as u64;
    let mut pace = Pace::default();
    // The last nap found nothing completed: the next look waits for the next value.
    let mut stalled = false;
    loop {
        // Holding the last reference to an adopted ring: drop it here (see `RingHw::adopt`);
        // the next upgrade fails and the thread exits. `Arc::try_unwrap` takes it
        // atomically: a weak reference upgraded at the same moment (a fence's `signaled`,
        // `mark_lost`) either keeps it adopted or fails, and never becomes the last one.
        let last = {
            let mut a = lock(&watch.adopted);
            match a.ring.take().map(Arc::try_unwrap) {
                Some(Ok(hw)) => Some(hw),
                Some(Err(r)) => {
                    a.ring = Some(r);
                    None
                }
                None => None,
            }
        };
        let adopted = last.is_none() && lock(&watch.adopted).ring.is_some();
        drop(last);
        // The next value the ring owes, if it is busy. Dropping `r` may drop the last
        // reference to the ring (and the core): their drops then run here, between waits.
        let (next, gated) = {
            let Some(r) = ring.upgrade() else { return };
            if r.core.is_lost() {
                // `mark_lost` failed this ring's fences, unless the core had more live rings
                // than it takes at once (`Completion::snapshot`): this covers those.
                r.fail_all(FenceError::DeviceLost);
                return;
            }
            // The drain waits for another ring's drain (`RingHw::drain`), which drains this
            // ring when it gets there; a ring beyond its snapshot relies on this look.
            if r.gated.load(Ordering::SeqCst) {
                r.drain(lock(&r.state));
            }
            let completed = r.completed.load(Ordering::SeqCst);
            let submitted = r.submitted.load(Ordering::SeqCst);
            let next = (submitted > completed).then(|| {
                // Several jobs at once when they are fast (`Pace::coalesce`), never past a
                // job a deadline was hinted for, and not again after a nap that found the
                // hardware stalled.
                let ahead = if stalled { 1 } else { pace.coalesce(submitted - completed) };
                let mut target = completed + ahead;
                if let Some(v) = r.deadline.value(r.signalled.load(Ordering::SeqCst)) {
                    target = target.min(v.max(completed + 1));
                }
                (r.signal_value(completed + 1), target - completed, completed)
            });
            (next, r.gated.load(Ordering::SeqCst))
        };
        if watch.stop.load(Ordering::SeqCst) {
            return;
        }
        let Some((value, ahead, before)) = next else {
            // Idle: a submission that makes the ring busy wakes us (`RingHw::wake` after it
            // published `submitted`; an unpark before the park is not lost). Holding the
            // ring, look again soon whether the other references are gone; gated, look again
            // soon whether the other ring's drain got there.
            if adopted || gated {
                std::thread::park_timeout(ADOPTED_POLL);
            } else {
                std::thread::park();
            }
            pace.last = None;
            continue;
        };
        let sems = [watch.sem];
        let values = [value];
        let info = vk::SemaphoreWaitInfo::default().semaphores(&sems).values(&values);
        let r = if ahead > 1 {
            // Sleeps through the jobs expected to complete meanwhile, then retires what is
            // done. Not a wait for a later value: mesa's emulated timeline wakes such a wait
            // at every value on the way (it waits for the oldest pending point each time).
            std::thread::park_timeout(pace.nap(ahead));
            Ok(())
        } else if spin_until(watch, value, pace.spin_budget()) {
            Ok(())
        } else {
            // SAFETY: the ring destroys the semaphore only after setting `stop` and joining
            // this thread, or, when its drop runs on this thread, before this thread checks
            // `stop` above; the device outlives the ring. `value` was submitted (the ring is
            // busy).
            unsafe { watch.device.wait_semaphores(&info, timeout) }
        };
        let mut lost = false;
        match r {
            Ok(()) | Err(vk::Result::TIMEOUT) => {}
            Err(vk::Result::ERROR_DEVICE_LOST) => lost = true,
            Err(e) => diag!(warn, target: "gpusched_vulkan", ?e, "vkWaitSemaphores failed"),
        }
        let Some(r) = ring.upgrade() else { return };
        if lost || r.complete().is_err() {
            diag!(error, target: "gpusched_vulkan", ring = %r.name, "device lost");
            r.core.mark_lost();
            return;
        }
        let completed = r.completed.load(Ordering::SeqCst);
        stalled = ahead > 1 && completed == before;
        pace.progress(Instant::now(), completed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(per_job_us: u64, after_idle: bool) -> Pace {
        let last = (!after_idle).then(|| (Instant::now(), 1));
        Pace { last, per_job: per_job_us * 1_000 }
    }

    #[test]
    fn unknown_or_slow_jobs_neither_poll_nor_coalesce() {
        for p in [Pace::default(), pace(SPIN_MAX.as_micros() as u64 + 1, false)] {
            assert_eq!(p.spin_budget(), Duration::ZERO);
            assert_eq!(p.coalesce(64), 1);
        }
    }

    #[test]
    fn fast_jobs_poll_twice_their_pace_at_most_spin_max() {
        assert_eq!(pace(5, false).spin_budget(), Duration::from_micros(10));
        assert_eq!(pace(5, true).spin_budget(), Duration::from_micros(10));
        assert_eq!(pace(15, false).spin_budget(), SPIN_MAX);
    }

    #[test]
    fn coalescing_covers_a_quarter_of_the_jobs_in_flight_within_coalesce_max() {
        let p = pace(5, false);
        // Fewer than 8 in flight: one job at a time.
        assert_eq!(p.coalesce(1), 1);
        assert_eq!(p.coalesce(7), 1);
        assert_eq!(p.coalesce(8), 2);
        assert_eq!(p.coalesce(64), 16);
        // 100 µs of 5 µs jobs.
        assert_eq!(p.coalesce(128), 20);
        assert_eq!(p.nap(20), Duration::from_micros(95));
        assert_eq!(p.nap(1), Duration::ZERO);
        assert_eq!(pace(20, false).nap(100), COALESCE_MAX);
    }

    #[test]
    fn pace_averages_the_time_per_completed_job_whoever_retired_it() {
        let t = Instant::now();
        let mut p = Pace::default();
        p.progress(t, 10);
        assert_eq!(p.per_job, 0, "one look is no measure");
        // 8 jobs in 80 µs (retired by any thread: only the value counts).
        p.progress(t + Duration::from_micros(80), 18);
        assert_eq!(p.per_job, 10_000);
        // No progress: no sample, and the next one measures from the last progress.
        p.progress(t + Duration::from_micros(200), 18);
        assert_eq!(p.per_job, 10_000);
        p.progress(t + Duration::from_micros(280), 20);
        assert_eq!(p.per_job, (3 * 10_000 + 100_000) / 4);
    }
}
