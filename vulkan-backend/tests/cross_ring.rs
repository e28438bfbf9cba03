//! Cross-ring dependencies on the device: a job depending on a job of another ring of the
//! same device is submitted once that job is, and waits for it on the other ring's timeline
//! semaphore; results match host waits; a hang or a loss of the awaited ring is handled
//! without blaming the waiting job.

mod common;

use std::sync::Mutex;
use std::time::Duration;

#[cfg(feature = "fault-injection")]
use common::wait;
use common::{
    assert_all, assert_no_validation_errors, close, device, fill_job, wait_ok, Gate, WATCHDOG,
};
use gpusched::fence::FenceStatus;
#[cfg(feature = "fault-injection")]
use gpusched::fence::{FenceError, WaitError};
use gpusched::{Entity, Priority, Scheduler, SchedulerConfig};
use gpusched_vulkan::{Buffer, Builtin, VulkanDevice, VulkanJob, VulkanRing};

const N: u32 = 1024;

/// One test at a time: the tests time hangs and count validation errors.
static SERIAL: Mutex<()> = Mutex::new(());

/// `y = a * x + y` over `N` floats.
fn saxpy_job(x: &Buffer, y: &Buffer, a: f32) -> VulkanJob {
    let (xb, yb) = (x.clone(), y.clone());
    VulkanJob::new(move |ctx, cb| {
        let k = ctx.builtin(Builtin::Saxpy);
        let push = common::push(&[a.to_ne_bytes(), N.to_ne_bytes()]);
        ctx.dispatch(cb, &k, &[&xb, &yb], &push, [N / 64, 1, 1])
    })
    .reads(x)
    .writes(y)
}

#[track_caller]
fn rings(dev: &VulkanDevice, timeout: Duration) -> (Scheduler<VulkanRing>, Scheduler<VulkanRing>) {
    let cfg = |name: &str| SchedulerConfig::new(name).timeout(timeout).hang_limit(0);
    (dev.ring(0, cfg("ra")).unwrap(), dev.ring(0, cfg("rb")).unwrap())
}

/// Two rings of `dev` (timeout `timeout`), an entity on each, and two buffers of `N` floats.
struct TwoRings {
    ra: Scheduler<VulkanRing>,
    rb: Scheduler<VulkanRing>,
    ea: Entity<VulkanRing>,
    eb: Entity<VulkanRing>,
    x: Buffer,
    y: Buffer,
}

#[track_caller]
fn two_rings(dev: &VulkanDevice, timeout: Duration) -> TwoRings {
    let (ra, rb) = rings(dev, timeout);
    let ea = Entity::new(&[&ra], Priority::Normal).unwrap();
    let eb = Entity::new(&[&rb], Priority::Normal).unwrap();
    let x = dev.buffer(u64::from(N) * 4).unwrap();
    let y = dev.buffer(u64::from(N) * 4).unwrap();
    TwoRings { ra, rb, ea, eb, x, y }
}

/// A chain alternating between two rings, each job reading the previous one's result
/// (`y += x`, twelve times), with cross-ring waits on the device (`native`) or on the host
/// ([`VulkanRing::set_native_waits`]). Returns `y`.
fn saxpy_chain(dev: &VulkanDevice, native: bool) -> Vec<f32> {
    let TwoRings { ra, rb, ea, eb, x, y } = two_rings(dev, WATCHDOG);
    wait_ok(&VulkanDevice::submit(&ea, fill_job(&x, 1.0, N)).unwrap());
    wait_ok(&VulkanDevice::submit(&ea, fill_job(&y, 0.0, N)).unwrap());
    ra.backend().set_native_waits(native);
    rb.backend().set_native_waits(native);
    let mut jobs = Vec::new();
    for i in 0..12 {
        let e = if i % 2 == 0 { &ea } else { &eb };
        let armed = VulkanDevice::arm(e, saxpy_job(&x, &y, 1.0)).unwrap();
        let scheduled = armed.scheduled().clone();
        jobs.push((scheduled, armed.push()));
    }
    let last = jobs.last().map(|(_, f)| f.clone());
    wait_ok(&last.unwrap());
    if !native {
        // Host waits: each job reached its ring only once the previous one had finished.
        for w in jobs.windows(2) {
            let (prev_done, submitted) = (w[0].1.timestamp(), w[1].0.timestamp());
            assert!(submitted >= prev_done, "a host wait submitted before its dependency ended");
        }
    }
    let v = y.read_f32(WATCHDOG).unwrap();
    drop((ea, eb, ra, rb));
    v
}

#[test]
fn a_chain_across_two_rings_gives_the_same_results_as_host_waits() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(dev) = device() else { return };
    let host = saxpy_chain(&dev, false);
    let gpu = saxpy_chain(&dev, true);
    assert!(host.iter().all(|v| *v == 12.0), "host waits: {:?}", &host[..4]);
    assert_eq!(gpu, host);
    assert_no_validation_errors();
    close(dev);
}

#[test]
fn the_dependant_is_submitted_before_its_dependency_finishes() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(dev) = device() else { return };
    let TwoRings { ra, rb, ea, eb, x, y } = two_rings(&dev, WATCHDOG);
    let gate = Gate::new(&dev);
    wait_ok(&VulkanDevice::submit(&eb, fill_job(&y, 1.0, N)).unwrap());
    let first = VulkanDevice::submit(&ea, gate.job(&x, 3.0, N)).unwrap();
    let armed = VulkanDevice::arm(&eb, saxpy_job(&x, &y, 2.0)).unwrap();
    let scheduled = armed.scheduled().clone();
    let second = armed.push();
    // On ring B's queue while ring A's job waits for the gate: no host round trip.
    assert_eq!(scheduled.wait_timeout(WATCHDOG), Ok(()));
    assert_eq!(first.status(), FenceStatus::Pending);
    assert!(rb.backend().submitted() > rb.backend().hw_progress(), "B waits on the device");
    gate.open();
    wait_ok(&first);
    wait_ok(&second);
    assert_all(&y, 7.0);
    assert_no_validation_errors();
    gate.destroy(&dev);
    drop((ea, eb, ra, rb, x, y));
    close(dev);
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_hang_of_the_awaited_ring_does_not_blame_the_waiting_job() {
    use gpusched_vulkan::JobFault;
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(dev) = device() else { return };
    let timeout = Duration::from_millis(150);
    let TwoRings { ra, rb, ea: guilty, eb: innocent, x, y } = two_rings(&dev, timeout);
    wait_ok(&VulkanDevice::submit(&innocent, fill_job(&y, 1.0, N)).unwrap());
    let hung = VulkanDevice::submit(&guilty, fill_job(&x, 3.0, N).inject(JobFault::Hang)).unwrap();
    let armed = VulkanDevice::arm(&innocent, saxpy_job(&x, &y, 2.0)).unwrap();
    let scheduled = armed.scheduled().clone();
    let waiting = armed.push();
    assert_eq!(scheduled.wait_timeout(WATCHDOG), Ok(()), "waits on the device, not the host");
    // Ring A's job is blamed; ring B's job ends with its dependency's error, as after a host
    // wait, but is not blamed itself (hang limit 0 would ban its entity).
    assert_eq!(wait(&hung), Err(WaitError::Failed(FenceError::TimedOut)));
    assert_eq!(wait(&waiting), Err(WaitError::Failed(FenceError::TimedOut)));
    let after = VulkanDevice::submit(&innocent, fill_job(&y, 5.0, N))
        .expect("the waiting job's entity is not banned");
    wait_ok(&after);
    assert_all(&y, 5.0);
    assert!(VulkanDevice::submit(&guilty, fill_job(&x, 1.0, N)).is_err(), "guilty is banned");
    assert_eq!(dev.generations(), 1);
    assert_no_validation_errors();
    drop((guilty, innocent, ra, rb, x, y));
    close(dev);
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_device_loss_while_a_cross_ring_wait_is_pending_fails_every_fence() {
    use gpusched_vulkan::JobFault;
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(dev) = device() else { return };
    let TwoRings { ra, rb, ea, eb, x, y } = two_rings(&dev, WATCHDOG);
    let hung = VulkanDevice::submit(&ea, fill_job(&x, 3.0, N).inject(JobFault::Hang)).unwrap();
    let armed = VulkanDevice::arm(&eb, saxpy_job(&x, &y, 2.0)).unwrap();
    let scheduled = armed.scheduled().clone();
    let waiting = armed.push();
    assert_eq!(scheduled.wait_timeout(WATCHDOG), Ok(()));
    let behind = VulkanDevice::submit(&eb, fill_job(&y, 4.0, N)).unwrap();
    let gen0 = dev.generation();
    dev.lose_device();
    for f in [&hung, &waiting, &behind] {
        assert_eq!(wait(f), Err(WaitError::Failed(FenceError::DeviceLost)));
    }
    assert_no_validation_errors();
    drop((ea, eb, ra, rb, x, y, hung, waiting, behind));
    dev.wait_generation(gen0, WATCHDOG).unwrap();
    close(dev);
}

/// A dependant that waited on the device for another ring's job completes only after that
/// ring's drain has signalled the job: the semaphore proves the work finished, but the
/// other ring may still fail what it has not drained (a device loss does), and the
/// dependant must see that. Ring A's drain is held (a callback on the awaited hardware fence
/// spins) while the hardware runs both jobs: ring B's job stays unfinished until A's drain
/// goes on. Before, it finished at once, and a loss in that window left it `Ok` beside a
/// dependency that ended `DeviceLost`.
#[test]
fn a_dependant_completes_only_after_the_awaited_rings_drain() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(dev) = device() else { return };
    let TwoRings { ra, rb, ea, eb, x, y } = two_rings(&dev, WATCHDOG);
    let gate = Gate::new(&dev);
    wait_ok(&VulkanDevice::submit(&ea, fill_job(&x, 1.0, N)).unwrap());
    // Ring A's job waits for the gate on the device; ring B's reads its result.
    let first = VulkanDevice::submit(&ea, gate.job(&y, 3.0, N)).unwrap();
    let armed = VulkanDevice::arm(&eb, saxpy_job(&x, &y, 1.0)).unwrap();
    let scheduled = armed.scheduled().clone();
    let dependant = armed.push();
    assert_eq!(scheduled.wait_timeout(WATCHDOG), Ok(()));
    let hw = ra.pending_hw_fences().pop().expect("ring A's job is on the hardware");
    let (held, release) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let hold = {
        let (held, release) = (held.clone(), release.clone());
        move |_: &gpusched::fence::Fence| {
            held.store(true, Ordering::SeqCst);
            while !release.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        }
    };
    assert!(hw.add_callback(hold).is_ok(), "ring A's job ran before the gate opened");
    gate.open();
    let start = Instant::now();
    let ran =
        || held.load(Ordering::SeqCst) && rb.backend().hw_progress() >= rb.backend().submitted();
    while !ran() && start.elapsed() < WATCHDOG {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(ran(), "the hardware never ran both jobs");
    std::thread::sleep(Duration::from_millis(50));
    let early = dependant.status();
    release.store(true, Ordering::SeqCst);
    wait_ok(&first);
    wait_ok(&dependant);
    assert_eq!(early, FenceStatus::Pending, "finished before ring A drained its dependency");
    assert_all(&y, 4.0);
    assert_no_validation_errors();
    gate.destroy(&dev);
    drop((ea, eb, ra, rb, x, y));
    close(dev);
}
