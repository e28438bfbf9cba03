//! Implementing [`gpusched::Backend`] for your own queue: a software "GPU" that runs kernels
//! (closures) on a worker thread, in submission order.
//!
//! Run: `cargo run -p gpusched --example custom_backend`. It exits non-zero if a result is
//! wrong or the checker found a violation.
//!
//! What it shows:
//! - `prepare_job` runs at arm time, outside any signalling section: it allocates everything
//!   `run_job` will need, including the hardware fence (`FenceContext::prepare` gives a
//!   `PreparedFence`, an allocated fence without a seqno yet) and room in the queue.
//! - `run_job` runs inside a signalling section and must not allocate, take a `Resv` lock or
//!   wait: it initialises the prepared fence (`PreparedFence::init`, no allocation), pushes
//!   onto a queue whose capacity was reserved, and returns the fence.
//! - The worker thread signals the hardware fence when the kernel returns (the scheduler's
//!   completion then runs on that thread).
//! - `timedout_job` recovers a hung kernel with `Recovery::standard_reset`, giving it the
//!   queue's reset: abort the running kernel and forget the queued ones (the scheduler
//!   resubmits the innocent jobs).
//!
//! The program installs the checker's `CheckingAllocator` as its global allocator: an
//! allocation inside a signalling section (in `run_job`, or anywhere on the completion path)
//! would be reported, and the program fails if any violation was found.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gpusched::fence::lockdep::{self, CheckingAllocator};
use gpusched::fence::{errno, FenceContext, FenceError, PreparedFence, Signaller};
use gpusched::fence::{Fence, WaitError};
use gpusched::{Backend, Entity, JobInfo, Priority, Recovery, Scheduler, SchedulerConfig};
use gpusched::{ResetDomain, TimeoutStatus};

#[global_allocator]
static ALLOC: CheckingAllocator = CheckingAllocator::new(std::alloc::System);

/// Tells a running kernel that the queue was reset under it.
#[derive(Debug)]
struct Abort<'a> {
    generation: u64,
    current: &'a AtomicU64,
}

impl Abort<'_> {
    /// Whether the queue was reset since this kernel started: it should return at once.
    fn requested(&self) -> bool {
        self.current.load(Ordering::Acquire) != self.generation
    }
}

/// A kernel: re-runnable (a job may be resubmitted after a reset), so shared, not `FnOnce`.
type Kernel = Arc<dyn Fn(&Abort<'_>) -> Result<(), FenceError> + Send + Sync>;

/// The job payload of the software queue.
struct SoftJob {
    kernel: Kernel,
    /// The hardware fence for the first run, allocated by `prepare_job`.
    hw: Option<PreparedFence>,
    /// One more for a resubmission after a reset (`run_job` must not allocate one).
    spare: Option<PreparedFence>,
}

impl SoftJob {
    fn new(kernel: impl Fn(&Abort<'_>) -> Result<(), FenceError> + Send + Sync + 'static) -> Self {
        SoftJob { kernel: Arc::new(kernel), hw: None, spare: None }
    }
}

struct QueueState {
    /// Submitted kernels with the signaller of their hardware fence, in order.
    work: VecDeque<(Kernel, Signaller)>,
    /// Jobs prepared and not yet freed: `work` has room for all of them.
    live: usize,
    shutdown: bool,
}

struct Shared {
    ctx: FenceContext,
    state: Mutex<QueueState>,
    cv: Condvar,
    /// Bumped by each reset; a running kernel compares it with its start value.
    generation: AtomicU64,
    resets: AtomicU64,
}

fn lock(m: &Mutex<QueueState>) -> MutexGuard<'_, QueueState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A software queue: one worker thread runs the kernels in order.
struct SoftQueue {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl fmt::Debug for SoftQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftQueue").field("context", &self.shared.ctx.id()).finish()
    }
}

impl SoftQueue {
    /// A queue named `name` (the name of its hardware-fence timeline).
    fn new(name: &'static str) -> Self {
        let shared = Arc::new(Shared {
            ctx: FenceContext::new(name),
            state: Mutex::new(QueueState { work: VecDeque::new(), live: 0, shutdown: false }),
            cv: Condvar::new(),
            generation: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        });
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name(format!("{name}-worker"))
            .spawn(move || worker(&s))
            .expect("spawn the worker");
        SoftQueue { shared, worker: Some(worker) }
    }

    /// The queue's reset: abort the running kernel and forget the queued ones (their old
    /// hardware fences signal `Abandoned`; the scheduler has detached from them and will
    /// resubmit the innocent jobs). Allocation-free: it runs inside the TDR's section.
    fn reset(&self) -> bool {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.shared.state).work.clear();
        self.shared.resets.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// How many resets happened.
    fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::Relaxed)
    }
}

fn worker(shared: &Shared) {
    loop {
        let (kernel, signaller) = {
            let mut st = lock(&shared.state);
            loop {
                if st.shutdown {
                    return;
                }
                if let Some(item) = st.work.pop_front() {
                    break item;
                }
                st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        let abort = Abort {
            generation: shared.generation.load(Ordering::Acquire),
            current: &shared.generation,
        };
        // Signalling the hardware fence runs the scheduler's completion on this thread: it
        // retires the job and may call `run_job` for the next one.
        match kernel(&abort) {
            Ok(()) => signaller.signal(),
            Err(e) => signaller.signal_error(e),
        };
    }
}

impl Drop for SoftQueue {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.generation.fetch_add(1, Ordering::AcqRel); // abort a running kernel
        self.shared.cv.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Backend for SoftQueue {
    type Job = SoftJob;
    type Error = std::convert::Infallible;

    // Arm time, outside any section: allocate here.
    fn prepare_job(&self, job: &mut SoftJob, _info: &JobInfo) -> Result<(), Self::Error> {
        // One callback slot: the scheduler's completion callback is added without allocating.
        job.hw = Some(self.shared.ctx.prepare(1, None));
        job.spare = Some(self.shared.ctx.prepare(1, None));
        let mut st = lock(&self.shared.state);
        st.live += 1;
        let room = st.live;
        st.work.reserve(room);
        Ok(())
    }

    // Inside a signalling section: no allocation, no `Resv` lock, no wait.
    fn run_job(&self, job: &mut SoftJob, _info: &JobInfo) -> Result<Fence, FenceError> {
        let prepared = job.hw.take().or_else(|| job.spare.take()).ok_or(FenceError::Cancelled)?;
        // The seqno is taken now, so that the timeline's seqnos follow submission order.
        let (fence, signaller) = prepared.init(self.shared.ctx.next_seqno());
        let mut st = lock(&self.shared.state);
        // Never reallocates: `work` has room for every live job.
        st.work.push_back((job.kernel.clone(), signaller));
        drop(st);
        self.shared.cv.notify_one();
        Ok(fence)
    }

    fn timedout_job(&self, recovery: &mut Recovery<'_, Self>) -> TimeoutStatus {
        // stop, blame, force-complete the guilty job (`TimedOut`), interrupt interruptible
        // waits, reset the queue, resubmit the innocent jobs, start.
        recovery.standard_reset(|| self.reset())
    }

    fn free_job(&self, job: SoftJob, _info: &JobInfo) {
        lock(&self.shared.state).live -= 1;
        drop(job); // releasing memory is fine inside a section
    }
}

fn wait(fence: &Fence) -> Result<(), FenceError> {
    match fence.wait_timeout(Duration::from_secs(20)) {
        Ok(()) => Ok(()),
        Err(WaitError::Failed(e)) => Err(e),
        Err(e) => panic!("a job did not finish within 20 s (watchdog): {e}"),
    }
}

fn main() {
    let config = SchedulerConfig::new("soft0")
        .credit_limit(8)
        .timeout(Duration::from_millis(100))
        .reset_domain(&ResetDomain::new("soft"));
    let sched = Scheduler::new(SoftQueue::new("soft0"), config).expect("scheduler");
    let client = Entity::new(&[&sched], Priority::Normal).expect("entity");

    // A small pipeline: fill a buffer, then sum it (a dependency), then a kernel that fails.
    let buffer = Arc::new(Mutex::new(Vec::<u64>::new()));
    let sum = Arc::new(AtomicU64::new(0));
    let b = buffer.clone();
    let fill = client
        .job(SoftJob::new(move |_| {
            *b.lock().unwrap() = (1..=1000).collect(); // the kernel's own work may allocate
            Ok(())
        }))
        .arm()
        .unwrap_or_else(|e| panic!("arm: {}", e.error))
        .push();
    let (b, s) = (buffer.clone(), sum.clone());
    let reduce = client
        .job(SoftJob::new(move |_| {
            s.store(b.lock().unwrap().iter().sum(), Ordering::Relaxed);
            Ok(())
        }))
        .dependency(fill.clone())
        .arm()
        .unwrap_or_else(|e| panic!("arm: {}", e.error))
        .push();
    let faulty = client
        .job(SoftJob::new(|_| Err(FenceError::Driver(errno::EFAULT))))
        .arm()
        .unwrap_or_else(|e| panic!("arm: {}", e.error))
        .push();
    assert_eq!(wait(&reduce), Ok(()));
    assert_eq!(sum.load(Ordering::Relaxed), 500_500);
    assert_eq!(wait(&faulty), Err(FenceError::Driver(errno::EFAULT)));
    println!("pipeline: sum = {}, faulty kernel: {:?}", sum.load(Ordering::Relaxed), wait(&faulty));

    // A hung kernel (it spins until the queue is reset), and an innocent job behind it on
    // another entity: the TDR fires after 100 ms, the hung job ends `TimedOut`, the queue is
    // reset, and the innocent job is resubmitted and completes.
    let other = Entity::new(&[&sched], Priority::Normal).expect("entity");
    let started = Instant::now();
    let hung = client
        .job(SoftJob::new(|abort| {
            while !abort.requested() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(FenceError::Cancelled)
        }))
        .arm()
        .unwrap_or_else(|e| panic!("arm: {}", e.error))
        .push();
    let ran = Arc::new(AtomicU64::new(0));
    let r = ran.clone();
    let innocent = other
        .job(SoftJob::new(move |_| {
            r.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }))
        .arm()
        .unwrap_or_else(|e| panic!("arm: {}", e.error))
        .push();
    assert_eq!(wait(&hung), Err(FenceError::TimedOut));
    assert_eq!(wait(&innocent), Ok(()));
    println!(
        "hang: {:?} after {:.0} ms; innocent job: {:?} (ran {} time(s)); queue resets: {}",
        wait(&hung),
        started.elapsed().as_secs_f64() * 1e3,
        wait(&innocent),
        ran.load(Ordering::Relaxed),
        sched.backend().resets()
    );
    assert_eq!(sched.backend().resets(), 1);
    assert_eq!(sched.reset_domain().recoveries(), 1);

    let violations = lockdep::violations();
    assert_eq!(violations, 0, "the checker found violations: {:?}", lockdep::reports());
    println!("custom_backend: ok (checker: {violations} violations, run_job allocation-free)");
}
