//! The bounded spin a wound/wait waiter does before it sleeps (the kernel's `ww_mutex` spins
//! while the owner is on a CPU, `mutex_optimistic_spin`).
//!
//! Userspace cannot see whether a lock's holder is running, so the spin watches for
//! progress instead: the mutex's owner changing ([`Progress`] bumped under its state lock)
//! and the holding context taking or releasing locks (its own [`Progress`]). The rules:
//! - no spin on a single-CPU machine (the holder cannot run while we spin);
//! - a spin round ends as soon as the mutex's owner changes (the waiter re-checks under the
//!   lock and may spin again), when the waiter is wounded, or when neither counter moved for
//!   [`STALL`] (the holder is preempted, blocked, or busy with long work): then the waiter
//!   sleeps on the condvar as before;
//! - all rounds of one wait together spin at most [`BUDGET`]; spinning is allowed again only
//!   after the waiter was woken from a sleep.
//!
//! The counters are hints read without the state lock: every decision is re-made under the
//! lock after the spin, so they need no ordering (`Relaxed`). Under `cfg(gpusched_loom)` the
//! spin is compiled out (loom models the sleep, which the spin only shortens).

#[cfg(not(gpusched_loom))]
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
#[cfg(not(gpusched_loom))]
use std::time::{Duration, Instant};

use crate::sync::AtomicBool;

/// How long a spinning waiter waits without seeing progress before it sleeps: several
/// lock/unlock steps of a running holder, a small part of a sleep and wake-up.
#[cfg(not(gpusched_loom))]
const STALL: Duration = Duration::from_micros(2);

/// The most one wait spins, over all its rounds, between two sleeps.
#[cfg(not(gpusched_loom))]
const BUDGET: Duration = Duration::from_micros(20);

/// Spin-loop steps between two looks at the clock and the holder's counter: the holder
/// writes its counter on every lock step, and each look pulls the line to this CPU.
#[cfg(not(gpusched_loom))]
const CHECK_EVERY: u32 = 32;

/// A counter one writer at a time bumps (the owner thread of a context, or whoever holds a
/// mutex's state lock) and spinning waiters read.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    #[cfg(not(gpusched_loom))]
    n: AtomicU32,
}

impl Progress {
    pub(crate) const fn new() -> Self {
        Progress {
            #[cfg(not(gpusched_loom))]
            n: AtomicU32::new(0),
        }
    }

    /// Records a step. Callers are the only writer at the time, so a load and a store do.
    #[inline]
    pub(crate) fn bump(&self) {
        #[cfg(not(gpusched_loom))]
        self.n.store(self.n.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    #[cfg(not(gpusched_loom))]
    #[inline]
    fn get(&self) -> u32 {
        self.n.load(Ordering::Relaxed)
    }
}

/// Whether this machine has more than one CPU (cached; 0 = not asked yet).
#[cfg(not(gpusched_loom))]
fn multi_cpu() -> bool {
    static CPUS: AtomicU8 = AtomicU8::new(0);
    match CPUS.load(Ordering::Relaxed) {
        0 => {
            let multi = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
            CPUS.store(if multi { 2 } else { 1 }, Ordering::Relaxed);
            multi
        }
        v => v == 2,
    }
}

/// The spin state of one wait (one `acquire` call).
#[derive(Debug)]
pub(crate) struct Spin {
    /// Spun so far since the last sleep.
    #[cfg(not(gpusched_loom))]
    spent: Duration,
    /// A round ended without progress (or the budget is used up): sleep next.
    #[cfg(not(gpusched_loom))]
    stalled: bool,
}

impl Spin {
    pub(crate) fn new() -> Self {
        Spin {
            #[cfg(not(gpusched_loom))]
            spent: Duration::ZERO,
            #[cfg(not(gpusched_loom))]
            stalled: false,
        }
    }

    /// Whether the waiter should spin (a round of [`Spin::run`]) before it sleeps.
    #[inline]
    pub(crate) fn allowed(&self) -> bool {
        #[cfg(not(gpusched_loom))]
        return !self.stalled && self.spent < BUDGET && multi_cpu();
        #[cfg(gpusched_loom)]
        false
    }

    /// The waiter was woken from a sleep: it may spin again.
    #[inline]
    pub(crate) fn woken(&mut self) {
        #[cfg(not(gpusched_loom))]
        {
            self.spent = Duration::ZERO;
            self.stalled = false;
        }
    }

    /// One round: spins until `version` moves, `wounded` is set, or neither `version` nor
    /// `holder` moved for [`STALL`] (or the budget runs out). Call without the state lock.
    #[cfg_attr(gpusched_loom, allow(unused_variables))]
    pub(crate) fn run(
        &mut self,
        version: &Progress,
        holder: Option<&Progress>,
        wounded: Option<&AtomicBool>,
    ) {
        #[cfg(not(gpusched_loom))]
        {
            let start = Instant::now();
            let v0 = version.get();
            let mut h = holder.map(Progress::get);
            let mut last_progress = start;
            let mut now = start;
            loop {
                for _ in 0..CHECK_EVERY {
                    std::hint::spin_loop();
                    if version.get() != v0 {
                        self.spent += now - start;
                        return;
                    }
                }
                if wounded.is_some_and(|w| w.load(Ordering::Relaxed)) {
                    break;
                }
                now = Instant::now();
                let seen = holder.map(Progress::get);
                if seen != h {
                    h = seen;
                    last_progress = now;
                }
                if now - last_progress >= STALL || self.spent + (now - start) >= BUDGET {
                    break;
                }
            }
            self.spent += now - start;
            self.stalled = true;
        }
    }
}
