//! Who retires a ring's finished work: its completion thread, and a thread that pumps the
//! ring's scheduler (a client pushing jobs reads the counter and signals what completed).
//! Whoever gets there first, every fence signals once, in order, with its job's result; an
//! empty job submits the ring's one empty command buffer (simultaneous use) without a
//! validation error.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use common::{assert_no_validation_errors, close, device, wait_ok, Gate};
use gpusched::{Entity, Priority, SchedulerConfig};
use gpusched_vulkan::VulkanJob;

/// What the finished fences' callbacks saw, in preallocated atomics (a callback runs inside a
/// signalling section: no allocation).
struct Seen {
    /// How many times each job's finished fence ran its callback.
    calls: Vec<AtomicU32>,
    /// The index of the last job whose callback ran (`u64::MAX`: none yet).
    last: AtomicU64,
    /// A callback ran for a job before one armed earlier on the same entity.
    out_of_order: AtomicBool,
    /// A fence signalled with an error.
    failed: AtomicBool,
    /// Callbacks that ran on the pushing thread (its pump retired the job, or found the
    /// job done when it ran it), and on another thread.
    on_pusher: AtomicUsize,
    elsewhere: AtomicUsize,
}

#[test]
fn each_fence_signals_once_in_order_when_the_pushing_thread_retires_too() {
    let Some(dev) = device() else { return };
    // A small credit limit keeps the ring full while the test keeps pushing, so that jobs
    // complete while more are owed and the pushing thread's pump finds them done.
    let ring = dev.ring(0, SchedulerConfig::new("retire").credit_limit(8)).unwrap();
    ring.backend().set_batching(false);
    let entity = Entity::new(&[&ring], Priority::Normal).unwrap();
    const MAX_JOBS: usize = 40_000;
    const ROUND: usize = 2_000;
    let seen = Arc::new(Seen {
        calls: (0..MAX_JOBS).map(|_| AtomicU32::new(0)).collect(),
        last: AtomicU64::new(u64::MAX),
        out_of_order: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        on_pusher: AtomicUsize::new(0),
        elsewhere: AtomicUsize::new(0),
    });
    let pusher = std::thread::current().id();
    let mut pushed = 0;
    let mut last = None;
    // Rounds until both threads retired some (the pushing thread's share depends on timing;
    // the completion thread always retires the tail of a round).
    while pushed < MAX_JOBS
        && (ring.backend().retired_by_pump() == 0 || seen.elsewhere.load(Ordering::SeqCst) == 0)
    {
        for _ in 0..ROUND {
            let armed = entity.job(VulkanJob::empty()).arm().unwrap();
            let (s, i) = (seen.clone(), pushed as u64);
            let added = armed.finished().add_callback(move |f| {
                s.calls[i as usize].fetch_add(1, Ordering::SeqCst);
                let prev = s.last.swap(i, Ordering::SeqCst);
                if prev != u64::MAX && prev >= i {
                    s.out_of_order.store(true, Ordering::SeqCst);
                }
                if f.error().is_some() {
                    s.failed.store(true, Ordering::SeqCst);
                }
                if std::thread::current().id() == pusher {
                    s.on_pusher.fetch_add(1, Ordering::SeqCst);
                } else {
                    s.elsewhere.fetch_add(1, Ordering::SeqCst);
                }
            });
            assert!(added.is_ok(), "job {pushed} signalled before it was pushed");
            last = Some(armed.push());
            pushed += 1;
        }
        wait_ok(last.as_ref().unwrap());
    }
    // A waiter may return while the signalling thread still runs the last callbacks.
    let deadline = std::time::Instant::now() + common::WATCHDOG;
    while seen.on_pusher.load(Ordering::SeqCst) + seen.elsewhere.load(Ordering::SeqCst) < pushed
        && std::time::Instant::now() < deadline
    {
        std::thread::yield_now();
    }
    for (i, c) in seen.calls[..pushed].iter().enumerate() {
        assert_eq!(c.load(Ordering::SeqCst), 1, "job {i}'s fence signalled {c:?} times");
    }
    assert!(!seen.out_of_order.load(Ordering::SeqCst), "fences signalled out of order");
    assert!(!seen.failed.load(Ordering::SeqCst), "an empty job failed");
    let (mine, theirs) =
        (seen.on_pusher.load(Ordering::SeqCst), seen.elsewhere.load(Ordering::SeqCst));
    assert_eq!(mine + theirs, pushed);
    assert!(mine > 0, "no fence signalled on the pushing thread in {pushed} jobs");
    let by_pump = ring.backend().retired_by_pump();
    assert!(by_pump > 0, "the pushing thread never retired a job in {pushed} jobs");
    assert!(theirs > 0, "the completion thread never retired a job in {pushed} jobs");
    assert_no_validation_errors();
    drop((entity, ring));
    close(dev);
}

#[test]
fn empty_jobs_pending_together_share_one_command_buffer() {
    let Some(dev) = device() else { return };
    let ring = dev.ring(0, SchedulerConfig::new("empty").credit_limit(64)).unwrap();
    let entity = Entity::new(&[&ring], Priority::Normal).unwrap();
    let buf = dev.buffer(256).unwrap();
    let gates = [Gate::new(&dev), Gate::new(&dev)];
    for (batching, gate) in [false, true].into_iter().zip(&gates) {
        ring.backend().set_batching(batching);
        // The gated job holds the queue: the empty jobs behind it are all pending at once,
        // with and without batching (several in one `vkQueueSubmit`).
        let gated = entity.job(gate.job(&buf, 1.0, 64)).arm().unwrap().push();
        let empties: Vec<_> =
            (0..40).map(|_| entity.job(VulkanJob::empty()).arm().unwrap().push()).collect();
        // An empty job that declares a resource records its own command buffer, which keeps
        // the resource until the hardware has passed it.
        let keeper = dev.buffer(256).unwrap();
        let kept = entity.job(VulkanJob::empty().reads(&keeper)).arm().unwrap().push();
        drop(keeper);
        assert!(!empties[0].is_signaled(), "an empty job ran before the gated job");
        gate.open();
        wait_ok(&gated);
        for f in &empties {
            wait_ok(f);
        }
        wait_ok(&kept);
    }
    assert_no_validation_errors();
    drop((entity, ring, buf));
    for gate in gates {
        gate.destroy(&dev);
    }
    close(dev);
}
