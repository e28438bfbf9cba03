//! Seeded multi-thread stress: 8 worker threads create 100k fences in batches and race
//! callback adds, removals and blocking/timed waits against 4 signaller threads that signal,
//! fail or drop the signallers. Checks that every callback that was added and not removed ran
//! exactly once, that removed or refused callbacks never ran, and that every wait returned
//! the outcome the fence was given.
//!
//! The seed is printed; `FENCE_STRESS_SEED=<seed>` replays its choices (thread interleavings
//! still vary). `FENCE_STRESS_FENCES` overrides the fence count.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use gpusched_fence::{Fence, FenceContext, FenceError, Signaller, WaitError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WORKERS: usize = 8;
const SIGNALLERS: usize = 4;
/// Callback slots per fence: up to 3 added before the signaller leaves, 3 racing it.
const SLOTS: usize = 6;
/// Deadlock watchdog, never a speed assertion.
const WATCHDOG: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug)]
enum Action {
    Signal,
    Fail(FenceError),
    Drop,
}

impl Action {
    fn outcome(self) -> Result<(), FenceError> {
        match self {
            Action::Signal => Ok(()),
            Action::Fail(e) => Err(e),
            Action::Drop => Err(FenceError::Abandoned),
        }
    }

    fn apply(self, s: Signaller) {
        match self {
            Action::Signal => drop(s.signal()),
            Action::Fail(e) => drop(s.signal_error(e)),
            Action::Drop => drop(s),
        }
    }

    fn random(rng: &mut StdRng) -> Action {
        const ERRORS: [FenceError; 5] = [
            FenceError::Cancelled,
            FenceError::TimedOut,
            FenceError::DeviceLost,
            FenceError::Killed,
            FenceError::Driver(-5),
        ];
        match rng.gen_range(0..10) {
            0..=4 => Action::Signal,
            5..=7 => Action::Fail(ERRORS[rng.gen_range(0..ERRORS.len())]),
            _ => Action::Drop,
        }
    }
}

/// Per callback slot: how often it ran (written by the callback) and whether it must have run
/// exactly once (written by the worker that owns the slot).
struct Slots {
    ran: Vec<AtomicU8>,
    expected: Vec<AtomicU8>,
}

fn seed() -> u64 {
    match std::env::var("FENCE_STRESS_SEED") {
        Ok(s) => s.trim().parse().expect("FENCE_STRESS_SEED must be a u64"),
        Err(_) => {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            t.map_or(0x5eed, |d| d.as_nanos() as u64)
        }
    }
}

fn add_cb(fence: &Fence, slots: &Arc<Slots>, slot: usize) -> Option<gpusched_fence::CallbackId> {
    let s = slots.clone();
    match fence.add_callback(move |f| {
        // The callback runs after the fence is marked signalled.
        assert!(f.is_signaled());
        let prev = s.ran[slot].fetch_add(1, Ordering::SeqCst);
        assert_eq!(prev, 0, "callback slot {slot} ran twice");
    }) {
        Ok(id) => {
            slots.expected[slot].store(1, Ordering::SeqCst);
            Some(id)
        }
        Err(_) => None,
    }
}

#[test]
fn stress_signal_wait_callbacks() {
    let seed = seed();
    println!("FENCE_STRESS_SEED={seed}");
    eprintln!("FENCE_STRESS_SEED={seed}");
    let total: usize = std::env::var("FENCE_STRESS_FENCES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100_000);
    let per_worker = total.div_ceil(WORKERS);
    let slots = Arc::new(Slots {
        ran: (0..per_worker * WORKERS * SLOTS).map(|_| AtomicU8::new(0)).collect(),
        expected: (0..per_worker * WORKERS * SLOTS).map(|_| AtomicU8::new(0)).collect(),
    });
    let waits_returned = Arc::new(AtomicUsize::new(0));
    let waits_issued = Arc::new(AtomicUsize::new(0));
    let fences_done = Arc::new(AtomicUsize::new(0));

    // Signaller threads: apply the chosen action, sometimes after a short spin.
    let mut to_signallers = Vec::new();
    let mut signaller_threads = Vec::new();
    for i in 0..SIGNALLERS {
        let (tx, rx) = mpsc::channel::<Vec<(Signaller, Action)>>();
        to_signallers.push(tx);
        let mut rng = StdRng::seed_from_u64(seed ^ (0xA5A5 + i as u64));
        signaller_threads.push(thread::spawn(move || {
            for batch in rx {
                for (s, action) in batch {
                    if rng.gen_ratio(1, 8) {
                        thread::yield_now();
                    }
                    action.apply(s);
                }
            }
        }));
    }

    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let slots = slots.clone();
            let tx = to_signallers[w % SIGNALLERS].clone();
            let waits_returned = waits_returned.clone();
            let waits_issued = waits_issued.clone();
            let fences_done = fences_done.clone();
            thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w as u64));
                let ctx = FenceContext::new(format!("worker{w}"));
                let mut made = 0;
                while made < per_worker {
                    let n = rng.gen_range(1..=64).min(per_worker - made);
                    let mut batch = Vec::with_capacity(n);
                    let mut remote = Vec::with_capacity(n);
                    for k in 0..n {
                        let index = w * per_worker + made + k;
                        let (fence, signaller) = ctx.next();
                        let action = Action::random(&mut rng);
                        let base = index * SLOTS;
                        let mut ids = Vec::new();
                        for j in 0..rng.gen_range(0..=3) {
                            ids.push((base + j, add_cb(&fence, &slots, base + j)));
                        }
                        let local = rng.gen_ratio(1, 4);
                        if local {
                            action.apply(signaller);
                        } else {
                            remote.push((signaller, action));
                        }
                        batch.push((fence, action, base, ids));
                    }
                    made += n;
                    tx.send(remote).expect("signaller thread alive");
                    // Race the signallers: add, remove, wait.
                    for (fence, action, base, ids) in &mut batch {
                        for j in 3..3 + rng.gen_range(0..=3) {
                            ids.push((*base + j, add_cb(fence, &slots, *base + j)));
                        }
                        for (slot, id) in ids.iter() {
                            if let Some(id) = id {
                                if rng.gen_ratio(1, 3) && fence.remove_callback(*id) {
                                    // Removed before it ran: it must never run.
                                    slots.expected[*slot].store(0, Ordering::SeqCst);
                                }
                            }
                        }
                        let want = action.outcome();
                        match rng.gen_range(0..4) {
                            0 => {
                                waits_issued.fetch_add(1, Ordering::Relaxed);
                                assert_eq!(fence.wait(), want);
                                waits_returned.fetch_add(1, Ordering::Relaxed);
                            }
                            1 => {
                                waits_issued.fetch_add(1, Ordering::Relaxed);
                                let t = Duration::from_micros(rng.gen_range(0..200));
                                match fence.wait_timeout(t) {
                                    Err(WaitError::Timeout) => assert_eq!(fence.wait(), want),
                                    r => assert_eq!(r, want.map_err(WaitError::Failed)),
                                }
                                waits_returned.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                    // Every fence of the batch ends with its chosen outcome.
                    for (fence, action, _, _) in &batch {
                        waits_issued.fetch_add(1, Ordering::Relaxed);
                        assert_eq!(
                            fence.wait_timeout(WATCHDOG),
                            action.outcome().map_err(WaitError::Failed)
                        );
                        waits_returned.fetch_add(1, Ordering::Relaxed);
                        fences_done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    drop(to_signallers);

    let start = Instant::now();
    for w in workers {
        if let Err(e) = w.join() {
            panic!("worker panicked (FENCE_STRESS_SEED={seed}): {e:?}");
        }
    }
    for s in signaller_threads {
        if let Err(e) = s.join() {
            panic!("signaller thread panicked (FENCE_STRESS_SEED={seed}): {e:?}");
        }
    }
    assert!(start.elapsed() < WATCHDOG, "stress took too long (FENCE_STRESS_SEED={seed})");
    let fences = fences_done.load(Ordering::SeqCst);
    assert_eq!(fences, per_worker * WORKERS);
    assert_eq!(waits_returned.load(Ordering::SeqCst), waits_issued.load(Ordering::SeqCst));
    let mut expected_runs = 0;
    for (slot, (ran, expected)) in slots.ran.iter().zip(&slots.expected).enumerate() {
        let (ran, expected) = (ran.load(Ordering::SeqCst), expected.load(Ordering::SeqCst));
        assert_eq!(
            ran, expected,
            "callback slot {slot}: ran {ran} times, expected {expected} (FENCE_STRESS_SEED={seed})"
        );
        expected_runs += usize::from(expected);
    }
    println!(
        "{fences} fences, {expected_runs} callbacks ran once, {} waits, in {:?}",
        waits_returned.load(Ordering::SeqCst),
        start.elapsed()
    );
    assert!(expected_runs > fences / 2, "the stress must actually run callbacks");
}
