//! `VulkanDevice::adopt`: gpusched on an engine's own instance and device (made here with
//! `ash`, validation on through the engine's own messenger). gpusched destroys nothing it did
//! not create; refused adoptions create nothing; the engine and gpusched share a queue
//! through its `QueueLock`; device loss without and with the engine's re-creation callback.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::engine::{engine_validation_errors, EngineInstance};
use common::{assert_all, assert_no_validation_errors, close, fill_job, wait_ok};
use gpusched::{Entity, Priority, Scheduler, SchedulerConfig};
use gpusched_vulkan::ash::{self, vk};
use gpusched_vulkan::{
    live_devices, AdoptError, AdoptedDevice, Buffer, QueueCaps, QueueLock, VulkanDevice, VulkanRing,
};

const N: u32 = 1024;

/// Live devices are process-wide and the tests of this file run in parallel under `cargo
/// test`: every test holds this lock, so that the counts compared are its own.
static LIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The engine uses its device after gpusched closed: a semaphore made and destroyed, an idle
/// wait, then it destroys the device itself (the validation layer would report a destroyed
/// or double-destroyed device, a leaked gpusched object, or use after destruction).
fn engine_uses_and_destroys(device: &gpusched_vulkan::ash::Device) {
    // SAFETY: the engine's own device, no longer used by gpusched; the semaphore is made
    // and destroyed here.
    unsafe {
        let s = device.create_semaphore(&vk::SemaphoreCreateInfo::default(), None).unwrap();
        device.destroy_semaphore(s, None);
        device.device_wait_idle().unwrap();
        device.destroy_device(None);
    }
}

/// A new device of the engine's and the lock of its lent queue.
fn engine_device(engine: &EngineInstance) -> (ash::Device, Arc<QueueLock>) {
    (engine.create_device(), Arc::new(QueueLock::new()))
}

/// Sets the returned flag when gpusched releases the lent device.
fn release_flag(lent: &mut AdoptedDevice) -> Arc<AtomicBool> {
    let released = Arc::new(AtomicBool::new(false));
    let r = released.clone();
    lent.on_release = Some(Box::new(move || r.store(true, Ordering::SeqCst)));
    released
}

/// A compute ring named `name` on queue 0 of `dev` and an entity on it.
fn compute(dev: &VulkanDevice, name: &str) -> (Scheduler<VulkanRing>, Entity<VulkanRing>) {
    let ring = dev.ring(0, SchedulerConfig::new(name)).unwrap();
    let client = VulkanDevice::entity(&[&ring], Priority::Normal, QueueCaps::COMPUTE).unwrap();
    (ring, client)
}

/// A buffer of `N` floats.
fn buffer(dev: &VulkanDevice) -> Buffer {
    dev.buffer(u64::from(N) * 4).unwrap()
}

/// Asserts that neither the engine's messenger nor gpusched's saw a validation error (use
/// after destruction, leaks, unsynchronised queue use), and the checker nothing.
#[track_caller]
fn assert_clean() {
    assert_eq!(engine_validation_errors(), 0, "engine validation errors");
    assert_no_validation_errors();
}

#[test]
fn adopted_device_computes_and_is_left_to_the_engine() {
    let Some(engine) = EngineInstance::new() else { return };
    let _g = serial();
    let before = live_devices();
    let (device, lock) = engine_device(&engine);
    let mut lent = engine.lend(&device, &lock);
    let released = release_flag(&mut lent);
    // SAFETY: the engine's device, created with the stated features and queue, outlives
    // gpusched's use of it (closed below before the engine destroys it).
    let dev = unsafe { VulkanDevice::adopt(lent, None) }.unwrap();
    assert_eq!(live_devices(), before + 1);
    assert_eq!(dev.queue_family(), engine.family);
    assert_eq!(dev.queue_count(), 1);
    assert_eq!(dev.supports_graphics(), engine.enabled.dynamic_rendering);
    assert_eq!(dev.ash_device().handle(), device.handle());
    let (ring, client) = compute(&dev, "adopted0");
    let buf = buffer(&dev);
    wait_ok(&VulkanDevice::submit(&client, fill_job(&buf, 4.5, N)).unwrap());
    assert_all(&buf, 4.5);
    // A ring past the lent queues is refused.
    assert!(dev.ring(1, SchedulerConfig::new("nope")).is_err());
    drop((client, ring, buf));
    assert!(!released.load(Ordering::SeqCst), "released while gpusched still used it");
    close(dev);
    assert!(released.load(Ordering::SeqCst), "on_release did not run at close");
    assert_eq!(live_devices(), before);
    engine_uses_and_destroys(&device);
    assert_clean();
}

#[test]
fn adoption_checks_the_statement_and_the_queues_and_creates_nothing() {
    let Some(engine) = EngineInstance::new() else { return };
    let _g = serial();
    let (device, lock) = engine_device(&engine);
    let before = live_devices();
    let released = Arc::new(AtomicUsize::new(0));
    let lend = |f: &dyn Fn(&mut AdoptedDevice)| {
        let mut l = engine.lend(&device, &lock);
        let r = released.clone();
        l.on_release = Some(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        f(&mut l);
        // SAFETY: as in the test above; every call here is refused before using the device.
        unsafe { VulkanDevice::adopt(l, None) }
    };

    let e = lend(&|l| l.enabled.timeline_semaphore = false).unwrap_err();
    assert!(matches!(e, AdoptError::NotEnabled { feature } if feature.contains("timeline")), "{e}");
    let e = lend(&|l| l.enabled.push_descriptor = false).unwrap_err();
    assert!(
        matches!(e, AdoptError::NotEnabled { feature } if feature.contains("push_descriptor")),
        "{e}"
    );
    let count = engine.queue_count();
    let e = lend(&|l| l.queues[0].index = count).unwrap_err();
    assert!(
        matches!(e, AdoptError::NoSuchQueue { family, index, count: c }
            if family == engine.family && index == count && c == count),
        "{e}"
    );
    let e = lend(&|l| l.queues[0].family = 999).unwrap_err();
    assert!(matches!(e, AdoptError::NoSuchFamily { family: 999, .. }), "{e}");
    let e = lend(&|l| l.queues.clear()).unwrap_err();
    assert!(matches!(e, AdoptError::NoQueue), "{e}");
    let e = lend(&|l| {
        let q = l.queues[0].clone();
        l.queues.push(q);
    })
    .unwrap_err();
    assert!(matches!(e, AdoptError::DuplicateQueue { .. }), "{e}");

    assert_eq!(live_devices(), before, "a refused adoption created a device");
    assert_eq!(released.load(Ordering::SeqCst), 0, "a refused adoption released the device");
    engine_uses_and_destroys(&device);
    assert_clean();
}

#[test]
fn engine_and_gpusched_share_the_queue_through_its_lock() {
    let Some(engine) = EngineInstance::new() else { return };
    let _g = serial();
    let (device, lock) = engine_device(&engine);
    // SAFETY: as above; the engine submits on the lent queue only under `lock`.
    let dev = unsafe { VulkanDevice::adopt(engine.lend(&device, &lock), None) }.unwrap();
    let (ring, client) = compute(&dev, "shared0");
    let bufs: Vec<Buffer> = (0..4).map(|_| buffer(&dev)).collect();

    // The engine's own submissions (an empty submit signalling its own fence), on the same
    // queue, as fast as it can while gpusched's jobs run.
    let stop = Arc::new(AtomicBool::new(false));
    let engine_thread = {
        let (device, lock, stop) = (device.clone(), lock.clone(), stop.clone());
        // SAFETY: the engine's device.
        let queue = unsafe { device.get_device_queue(engine.family, 0) };
        std::thread::spawn(move || {
            // SAFETY: the engine's device; the fence is waited for before reuse and
            // destruction; the queue is used only under its lock.
            unsafe {
                let fence = device.create_fence(&vk::FenceCreateInfo::default(), None).unwrap();
                let mut submits = 0u32;
                while !stop.load(Ordering::SeqCst) || submits < 20 {
                    {
                        let _q = lock.lock();
                        device.queue_submit(queue, &[vk::SubmitInfo::default()], fence).unwrap();
                    }
                    device.wait_for_fences(&[fence], true, 10_000_000_000).unwrap();
                    device.reset_fences(&[fence]).unwrap();
                    submits += 1;
                }
                device.destroy_fence(fence, None);
                submits
            }
        })
    };
    let mut fences = Vec::new();
    for round in 0..25 {
        for (i, b) in bufs.iter().enumerate() {
            let v = (round * 4 + i) as f32;
            fences.push(VulkanDevice::submit(&client, fill_job(b, v, N)).unwrap());
        }
    }
    for f in &fences {
        wait_ok(f);
    }
    for (i, b) in bufs.iter().enumerate() {
        assert_all(b, (24 * 4 + i) as f32);
    }
    stop.store(true, Ordering::SeqCst);
    let submits = engine_thread.join().unwrap();
    assert!(submits >= 20);
    drop((fences, client, ring, bufs));
    close(dev);
    engine_uses_and_destroys(&device);
    assert_clean();
}

#[cfg(feature = "fault-injection")]
mod loss {
    use std::time::{Duration, Instant};

    use common::WATCHDOG;
    use gpusched::fence::{FenceError, WaitError};
    use gpusched_vulkan::{BufferError, DeviceError, JobFault, VulkanJob};

    use super::*;

    /// The engine's re-creation callback: a new device, lent under `lock` (with `refuse`, with
    /// a false statement gpusched refuses), destroyed by the engine once gpusched releases
    /// it; with the counts of devices made and destroyed.
    fn engine_recreate(
        engine: &Arc<EngineInstance>,
        lock: &Arc<QueueLock>,
        refuse: bool,
    ) -> (gpusched_vulkan::Recreate, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let made = Arc::new(AtomicUsize::new(0));
        let destroyed = Arc::new(AtomicUsize::new(0));
        let (engine, lock, m, d) = (engine.clone(), lock.clone(), made.clone(), destroyed.clone());
        let recreate: gpusched_vulkan::Recreate = Box::new(move || {
            let device = engine.create_device();
            m.fetch_add(1, Ordering::SeqCst);
            let mut l = engine.lend(&device, &lock);
            if refuse {
                l.enabled.push_descriptor = false;
            }
            let destroyed = d.clone();
            l.on_release = Some(Box::new(move || {
                // SAFETY: gpusched released it (or refused it before creating anything on
                // it): nothing of its remains on it.
                unsafe { device.destroy_device(None) };
                destroyed.fetch_add(1, Ordering::SeqCst);
            }));
            Ok(l)
        });
        (recreate, made, destroyed)
    }

    #[test]
    fn adopted_device_without_recreate_stays_lost_with_typed_errors() {
        let Some(engine) = EngineInstance::new() else { return };
        let _g = serial();
        let (device, lock) = engine_device(&engine);
        // SAFETY: as above.
        let dev = unsafe { VulkanDevice::adopt(engine.lend(&device, &lock), None) }.unwrap();
        let gen0 = dev.generation();
        let (ring, client) = compute(&dev, "lost0");
        let buf = buffer(&dev);
        let mut fences =
            vec![VulkanDevice::submit(&client, VulkanJob::empty().inject(JobFault::Hang)).unwrap()];
        for i in 0..4 {
            fences.push(VulkanDevice::submit(&client, fill_job(&buf, i as f32, N)).unwrap());
        }
        dev.lose_device();
        for f in &fences {
            assert_eq!(f.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::DeviceLost)));
        }
        // No re-creation callback: the device is gone for good at once, with typed errors.
        let e = dev.wait_generation(gen0, WATCHDOG).unwrap_err();
        assert!(e.is_gone(), "{e}");
        assert!(dev.is_lost());
        assert_eq!(dev.generations(), 1);
        let e = VulkanDevice::submit(&client, fill_job(&buf, 1.0, N)).unwrap_err();
        assert!(e.is_device_lost(), "{e}");
        let e = dev.buffer(64).unwrap_err();
        assert!(matches!(e, BufferError::Device(DeviceError::Gone { .. })), "{e}");
        drop((fences, client, ring, buf));
        close(dev);
        engine_uses_and_destroys(&device);
        assert_clean();
    }

    #[test]
    fn adopted_device_recreated_by_the_engine_callback() {
        let Some(engine) = EngineInstance::new() else { return };
        let _g = serial();
        let (first, lock) = engine_device(&engine);
        let (recreate, made, destroyed) = engine_recreate(&engine, &lock, false);
        let mut lent = engine.lend(&first, &lock);
        let released = release_flag(&mut lent);
        // SAFETY: as above; the callback's devices are destroyed by their release.
        let dev = unsafe { VulkanDevice::adopt(lent, Some(recreate)) }.unwrap();
        let gen0 = dev.generation();
        let (ring, client) = compute(&dev, "recreated0");
        let old = buffer(&dev);
        let hung =
            VulkanDevice::submit(&client, VulkanJob::empty().inject(JobFault::Hang)).unwrap();
        dev.lose_device();
        assert_eq!(hung.wait_timeout(WATCHDOG), Err(WaitError::Failed(FenceError::DeviceLost)));
        let gen1 = dev.wait_generation(gen0, WATCHDOG).unwrap();
        assert!(gen1 > gen0);
        assert_eq!(made.load(Ordering::SeqCst), 1);
        assert_ne!(dev.ash_device().handle(), first.handle(), "the new generation's device");
        // The new generation computes on the engine's new device, same ring and entity.
        let buf = buffer(&dev);
        wait_ok(&VulkanDevice::submit(&client, fill_job(&buf, 7.0, N)).unwrap());
        assert_all(&buf, 7.0);
        // The lost generation is released once nothing holds it (its buffer goes here).
        drop((hung, old));
        let deadline = Instant::now() + WATCHDOG;
        while !released.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the lost generation was never released");
            std::thread::sleep(Duration::from_millis(5));
        }
        engine_uses_and_destroys(&first);
        drop((client, ring, buf));
        close(dev);
        assert_eq!(destroyed.load(Ordering::SeqCst), 1, "the second device was not released");
        assert_clean();
    }

    /// A re-created device that fails the checks goes straight back to the engine (its
    /// release runs: the engine destroys it), each of the three attempts, and the adopted
    /// device then stays lost.
    #[test]
    fn a_refused_re_created_device_is_released_and_the_device_stays_lost() {
        let Some(engine) = EngineInstance::new() else { return };
        let _g = serial();
        let (first, lock) = engine_device(&engine);
        let (recreate, made, destroyed) = engine_recreate(&engine, &lock, true);
        let before = live_devices();
        // SAFETY: as above.
        let dev =
            unsafe { VulkanDevice::adopt(engine.lend(&first, &lock), Some(recreate)) }.unwrap();
        let gen0 = dev.generation();
        dev.lose_device();
        let e = dev.wait_generation(gen0, WATCHDOG).unwrap_err();
        assert!(e.is_gone(), "{e}");
        let attempts = gpusched_vulkan::recovery::RECREATE_ATTEMPTS as usize;
        assert_eq!(made.load(Ordering::SeqCst), attempts, "every attempt asked the engine");
        assert_eq!(destroyed.load(Ordering::SeqCst), attempts, "each refused device released");
        assert_eq!(live_devices(), before + 1, "only the first generation");
        close(dev);
        assert_eq!(live_devices(), before);
        engine_uses_and_destroys(&first);
        assert_clean();
    }
}
