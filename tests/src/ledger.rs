//! The ledger: what a world's backend observed, per job, in preallocated atomics (the backend
//! writes it from `run_job`, completion and `timedout_job`, inside signalling sections, so
//! nothing here allocates after [`Ledger::new`]).

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

/// A job's computed value from its index and its inputs' values (0 = the input had no value
/// when the job executed): 32-bit FNV-1a over the words, never 0. Simple enough for a compute
/// shader to evaluate the same way.
pub fn job_value(idx: usize, inputs: impl IntoIterator<Item = u32>) -> u32 {
    let mut h: u32 = 0x811C_9DC5 ^ (idx as u32);
    h = h.wrapping_mul(0x0100_0193);
    for v in inputs {
        h = (h ^ v).wrapping_mul(0x0100_0193);
    }
    h | 1
}

/// Per-job counters.
#[derive(Debug, Default)]
pub struct JobLedger {
    /// `prepare_job` calls.
    pub prepared: AtomicU32,
    /// `run_job` calls (first runs and resubmissions).
    pub runs: AtomicU32,
    /// `cancel_job` calls.
    pub cancelled: AtomicU32,
    /// `free_job` calls.
    pub freed: AtomicU32,
    /// Times the world blamed it in `timedout_job` (it was reset as guilty).
    pub guilty: AtomicU32,
    /// The value the hardware computed (0: never executed to completion).
    pub result: AtomicU32,
    /// Ledger ticks of its `run_job` calls (first, last) and of its execution (diagnostics).
    pub run_ticks: [AtomicU64; 3],
    /// Signals of its finished fence (counted by a callback).
    pub finished_signals: AtomicU32,
    /// Signals of its scheduled fence.
    pub scheduled_signals: AtomicU32,
    /// Its computed value cannot be checked: it read, or its result lies in, the memory of a
    /// device generation that was lost (Vulkan's "VRAM lost"). Set by the world.
    pub unchecked: std::sync::atomic::AtomicBool,
    /// The jobs whose values it reads, sorted (its explicit and implicit dependencies), set
    /// when its payload is made, before it is armed.
    pub inputs: OnceLock<Box<[usize]>>,
}

/// Observations of one scenario; see the module docs.
#[derive(Debug)]
pub struct Ledger {
    jobs: Box<[JobLedger]>,
    /// A global event counter for the diagnostics ticks.
    pub tick: AtomicU64,
    /// Backend objects alive (payloads, buffers, rings): worlds count up when they make one
    /// and down when it drops; zero after teardown.
    pub live_objects: AtomicI64,
}

impl Ledger {
    /// A ledger for `jobs` jobs.
    pub fn new(jobs: usize) -> Ledger {
        Ledger {
            jobs: (0..jobs).map(|_| JobLedger::default()).collect(),
            tick: AtomicU64::new(1),
            live_objects: AtomicI64::new(0),
        }
    }

    /// Job `idx`'s counters.
    pub fn job(&self, idx: usize) -> &JobLedger {
        &self.jobs[idx]
    }

    /// Number of jobs.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether there are no jobs.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Computes job `idx`'s value from the current results of its inputs and stores it (the
    /// mock hardware's execution). Allocation-free.
    pub fn execute(&self, idx: usize) -> u32 {
        let inputs = self.jobs[idx].inputs.get().map_or(&[][..], |b| &b[..]);
        let v = job_value(idx, inputs.iter().map(|&d| self.jobs[d].result.load(Ordering::Acquire)));
        self.jobs[idx].result.store(v, Ordering::Release);
        let t = self.tick.fetch_add(1, Ordering::AcqRel);
        self.jobs[idx].run_ticks[2].store(t, Ordering::Release);
        v
    }

    /// Records a `run_job` call of job `idx` (diagnostics ticks).
    pub fn ran(&self, idx: usize) {
        let t = self.tick.fetch_add(1, Ordering::AcqRel);
        let j = &self.jobs[idx];
        let _ = j.run_ticks[0].compare_exchange(0, t, Ordering::AcqRel, Ordering::Acquire);
        j.run_ticks[1].store(t, Ordering::Release);
        j.runs.fetch_add(1, Ordering::AcqRel);
    }

    /// Records a finished-fence signal of job `idx` (from a fence callback).
    pub fn finished_signalled(&self, idx: usize) {
        self.jobs[idx].finished_signals.fetch_add(1, Ordering::AcqRel);
    }

    /// Records a scheduled-fence signal of job `idx`.
    pub fn scheduled_signalled(&self, idx: usize) {
        self.jobs[idx].scheduled_signals.fetch_add(1, Ordering::AcqRel);
    }
}
