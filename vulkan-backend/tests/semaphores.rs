//! External semaphores per job (`VulkanJob::wait_semaphore`, `signal_semaphore`): an engine's
//! timeline and binary semaphores ordering gpusched jobs against the engine's own work, and
//! a job whose semaphore is never signalled (a hang the scheduler cannot see).

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_all, assert_no_validation_errors, close, device, fill_job, wait, wait_ok, WATCHDOG,
};
use gpusched::fence::{FenceError, WaitError};
use gpusched::{Priority, SchedulerConfig};
use gpusched_vulkan::ash::{self, vk};
use gpusched_vulkan::{ExternalSignal, ExternalWait, QueueCaps, VulkanDevice, VulkanJob};

const N: u32 = 1024;

/// The engine's timeline semaphore at 0.
fn timeline(d: &ash::Device) -> vk::Semaphore {
    let mut t = vk::SemaphoreTypeCreateInfo::default()
        .semaphore_type(vk::SemaphoreType::TIMELINE)
        .initial_value(0);
    // SAFETY: a live device; the chain lives across the call.
    unsafe { d.create_semaphore(&vk::SemaphoreCreateInfo::default().push_next(&mut t), None) }
        .unwrap()
}

fn host_signal(d: &ash::Device, sem: vk::Semaphore, value: u64) {
    // SAFETY: a timeline semaphore of `d`, signalled above its current value.
    unsafe { d.signal_semaphore(&vk::SemaphoreSignalInfo::default().semaphore(sem).value(value)) }
        .unwrap();
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: never happened");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_job_waiting_on_an_engine_timeline_runs_only_after_the_engine_signals() {
    let Some(dev) = device() else { return };
    let d = dev.ash_device();
    let ring = dev.ring(0, SchedulerConfig::new("waits0")).unwrap();
    let client = VulkanDevice::entity(&[&ring], Priority::Normal, QueueCaps::COMPUTE).unwrap();
    let buf = dev.buffer(u64::from(N) * 4).unwrap();
    buf.write_f32(&vec![0.0; N as usize], WATCHDOG).unwrap();
    let sem = timeline(&d);
    // SAFETY: the test's own timeline semaphore, destroyed after the device is idle.
    let job = unsafe {
        fill_job(&buf, 6.0, N).wait_semaphore(ExternalWait {
            semaphore: sem,
            value: Some(3),
            stage: vk::PipelineStageFlags::COMPUTE_SHADER,
        })
    };
    let submits = ring.backend().submits();
    let f = VulkanDevice::submit(&client, job).unwrap();
    // Submitted (alone: its own vkQueueSubmit), but held by the engine's semaphore.
    wait_until("submission", || ring.backend().submitted() >= 1);
    assert_eq!(ring.backend().submits(), submits + 1);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!f.is_signaled(), "the job ran before its semaphore was signalled");
    assert!(ring.backend().hw_progress() < ring.backend().submitted());
    host_signal(&d, sem, 2);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!f.is_signaled(), "the job ran before its semaphore reached its value");
    host_signal(&d, sem, 3);
    wait_ok(&f);
    assert_all(&buf, 6.0);
    // SAFETY: the job's submission is complete (its fence signalled without error).
    unsafe { d.destroy_semaphore(sem, None) };
    drop((f, client, ring, buf));
    close(dev);
    assert_no_validation_errors();
}

#[test]
fn a_job_signals_engine_semaphores_when_its_work_is_done() {
    let Some(dev) = device() else { return };
    let d = dev.ash_device();
    let ring = dev.ring(0, SchedulerConfig::new("signals0")).unwrap();
    let client = VulkanDevice::entity(&[&ring], Priority::Normal, QueueCaps::COMPUTE).unwrap();
    let buf = dev.buffer(u64::from(N) * 4).unwrap();
    let sem = timeline(&d);
    // SAFETY: a live device.
    let binary = unsafe { d.create_semaphore(&vk::SemaphoreCreateInfo::default(), None) }.unwrap();
    // A first job held by the engine, so that the signalling one is submitted before its
    // work can run: the engine's wait below must really wait for it.
    let gate = timeline(&d);
    // SAFETY: the test's own timeline semaphore, destroyed after the device is idle.
    let first = unsafe {
        VulkanJob::empty().wait_semaphore(ExternalWait {
            semaphore: gate,
            value: Some(1),
            stage: vk::PipelineStageFlags::ALL_COMMANDS,
        })
    };
    let first = VulkanDevice::submit(&client, first).unwrap();
    // SAFETY: the test's own semaphores: the timeline one at a value above any signalled,
    // the binary one unsignalled; destroyed after the device is idle.
    let job = unsafe {
        fill_job(&buf, 2.0, N)
            .signal_semaphore(ExternalSignal { semaphore: sem, value: Some(5) })
            .signal_semaphore(ExternalSignal { semaphore: binary, value: None })
    };
    let f = VulkanDevice::submit(&client, job).unwrap();
    wait_until("submission", || ring.backend().submitted() >= 2);
    let engine = {
        let d = d.clone();
        std::thread::spawn(move || {
            let (sems, values) = ([sem], [5u64]);
            let info = vk::SemaphoreWaitInfo::default().semaphores(&sems).values(&values);
            // SAFETY: a timeline semaphore of `d`, alive until this thread is joined.
            unsafe { d.wait_semaphores(&info, WATCHDOG.as_nanos() as u64) }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(!engine.is_finished(), "the engine's wait returned before the job ran");
    host_signal(&d, gate, 1);
    engine.join().unwrap().unwrap();
    // The semaphore is signalled by the job's submission, with the ring's own value.
    assert!(ring.backend().hw_progress() >= 2);
    wait_ok(&first);
    wait_ok(&f);
    assert_all(&buf, 2.0);
    // A job waiting on the binary semaphore the previous job signalled (its signal was
    // submitted first: binary semaphores have no wait-before-signal).
    // SAFETY: the binary semaphore's signal was submitted (the previous job) and nothing else
    // waits on it; destroyed after the device is idle.
    let after = unsafe {
        fill_job(&buf, 3.0, N).wait_semaphore(ExternalWait {
            semaphore: binary,
            value: None,
            stage: vk::PipelineStageFlags::ALL_COMMANDS,
        })
    };
    let after = VulkanDevice::submit(&client, after).unwrap();
    wait_ok(&after);
    assert_all(&buf, 3.0);
    // SAFETY: every submission using them is complete.
    unsafe {
        d.destroy_semaphore(sem, None);
        d.destroy_semaphore(binary, None);
        d.destroy_semaphore(gate, None);
    }
    drop((first, f, after, client, ring, buf));
    close(dev);
    assert_no_validation_errors();
}

/// A job waiting on a semaphore the engine never signals is a hang the scheduler cannot see:
/// its timeout ends it `TimedOut`; the job queued behind it on the blocked queue times out
/// without hardware progress until the generation is declared lost (`DeviceLost`). Every
/// fence signals. The engine then signals, so that the lost generation drains and teardown
/// completes.
#[test]
fn an_unsignalled_external_wait_times_out_and_every_fence_signals() {
    let Some(dev) = device() else { return };
    let gen0 = dev.generation();
    let d = dev.ash_device();
    let timeout = Duration::from_millis(300);
    let ring = dev.ring(0, SchedulerConfig::new("blocked0").timeout(timeout)).unwrap();
    let client = VulkanDevice::entity(&[&ring], Priority::Normal, QueueCaps::COMPUTE).unwrap();
    let a = dev.buffer(u64::from(N) * 4).unwrap();
    let b = dev.buffer(u64::from(N) * 4).unwrap();
    let sem = timeline(&d);
    // SAFETY: the test's own timeline semaphore, signalled before teardown and destroyed
    // after the device is idle.
    let blocked = unsafe {
        fill_job(&a, 1.0, N).wait_semaphore(ExternalWait {
            semaphore: sem,
            value: Some(1),
            stage: vk::PipelineStageFlags::ALL_COMMANDS,
        })
    };
    let blocked = VulkanDevice::submit(&client, blocked).unwrap();
    let behind = VulkanDevice::submit(&client, fill_job(&b, 2.0, N)).unwrap();
    assert_eq!(wait(&blocked), Err(WaitError::Failed(FenceError::TimedOut)));
    assert_eq!(wait(&behind), Err(WaitError::Failed(FenceError::DeviceLost)));
    let gen1 = dev.wait_generation(gen0, WATCHDOG).unwrap();
    assert!(gen1 > gen0);
    // The engine signals late: the lost generation's queue drains; the semaphore may go once
    // that device is idle (`a` keeps the lost generation alive until then).
    host_signal(&d, sem, 1);
    // SAFETY: gpusched submits nothing more to the lost generation's queue.
    unsafe {
        d.device_wait_idle().unwrap();
        d.destroy_semaphore(sem, None);
    }
    // The new generation works.
    let c = dev.buffer(u64::from(N) * 4).unwrap();
    wait_ok(&VulkanDevice::submit(&client, fill_job(&c, 4.0, N)).unwrap());
    assert_all(&c, 4.0);
    drop((blocked, behind, client, ring, a, b, c));
    close(dev);
    assert_no_validation_errors();
}
