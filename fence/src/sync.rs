//! One place that picks std or loom primitives, so loom models see every synchronisation the
//! modelled paths do. Build with `RUSTFLAGS="--cfg gpusched_loom"` for the
//! loom flavour; a bare `--cfg loom` would also switch `event-listener`, which we do not want.

#[cfg(gpusched_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard,
};
#[cfg(not(gpusched_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard,
};

/// Locks `m`, ignoring poisoning: every critical section in this crate leaves the protected
/// data consistent before it can panic (callbacks never run under a lock).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// One step of a short wait for another thread's progress (a few stores away): a spin hint,
/// and a yield so a preempted thread can finish; loom's yield under `cfg(gpusched_loom)`.
pub(crate) fn spin_wait() {
    #[cfg(not(gpusched_loom))]
    {
        std::hint::spin_loop();
        std::thread::yield_now();
    }
    #[cfg(gpusched_loom)]
    loom::thread::yield_now();
}

#[cfg(not(gpusched_loom))]
pub(crate) use event_listener::{Event, EventListener};

#[cfg(gpusched_loom)]
pub(crate) use loom_event::{Event, EventListener};

/// A condvar-backed stand-in for `event_listener::Event` that loom can model: a listener taken
/// before a check sees every notification that follows the check.
#[cfg(gpusched_loom)]
mod loom_event {
    use loom::sync::{Arc, Condvar, Mutex};

    #[derive(Debug, Default)]
    struct State {
        generation: Mutex<u64>,
        cv: Condvar,
    }

    /// A notification point.
    #[derive(Debug, Default)]
    pub(crate) struct Event {
        state: Arc<State>,
    }

    /// A registered interest in the next notification.
    #[derive(Debug)]
    pub(crate) struct EventListener {
        state: Arc<State>,
        seen: u64,
    }

    impl Event {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        pub(crate) fn listen(&self) -> EventListener {
            let seen = *self.state.generation.lock().unwrap();
            EventListener { state: self.state.clone(), seen }
        }

        pub(crate) fn notify(&self, _n: usize) {
            *self.state.generation.lock().unwrap() += 1;
            self.state.cv.notify_all();
        }
    }

    impl EventListener {
        pub(crate) fn wait(self) {
            let mut g = self.state.generation.lock().unwrap();
            while *g == self.seen {
                g = self.state.cv.wait(g).unwrap();
            }
        }

        /// Loom has no clock: a deadline wait is modelled as an untimed one.
        pub(crate) fn wait_deadline(self, _deadline: std::time::Instant) -> Option<()> {
            self.wait();
            Some(())
        }
    }
}
