//! Errors as a driver returns them: the fault layer (`vk-fault-layer`, loaded above the
//! validation layer through `VK_INSTANCE_LAYERS`) makes real Vulkan calls of the backend fail,
//! and each test checks the documented outcome of one error path:
//!
//! - `VK_ERROR_DEVICE_LOST` from `vkWaitSemaphores` on a ring's completion thread, from
//!   `vkGetSemaphoreCounterValue` when it reads the counter, from `vkQueueSubmit` (alone, and
//!   in the middle of a batch), and from `vkWaitSemaphores` in `VulkanDevice::wait_idle` (a
//!   loss the idle rings never see): every unfinished fence of the generation ends
//!   `DeviceLost`, the next generation is created, and works;
//! - `VK_ERROR_OUT_OF_DEVICE_MEMORY` from `vkQueueSubmit` in the middle of a batch: the jobs of
//!   the failed call end `-ENOMEM`, the others succeed, and the ring goes on (no value reused:
//!   the validation layer would report it);
//! - out of memory from `vkAllocateMemory`, `vkCreateBuffer`, `vkMapMemory` (buffer creation)
//!   and `vkAllocateCommandBuffers` (recording at arm time): a typed error, no fence, nothing
//!   leaked, and the next try works;
//! - `VK_ERROR_INITIALIZATION_FAILED` from `vkCreateDevice` during re-creation: retried and
//!   then successful; and failing every try: the device is gone for good, every fence signalled
//!   `DeviceLost`, later calls return a typed "gone" error.
//!
//! Every test ends with no validation error, no checker violation, and every device destroyed
//! (the backend's count and the layer's). The layer's state is process-global: the tests run
//! one at a time. Without the layer library (`cargo build -p vk-fault-layer`), a Vulkan driver
//! or the validation layer they are skipped, with a printed reason, except under CI (or
//! `GPUSCHED_REQUIRE_VULKAN=1`), where they fail.

mod common;

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use ash::vk;
use common::{
    assert_no_validation_errors, close, device, fill_job, gated_fill_job, wait_ok, WATCHDOG,
};
use gpusched::fence::{errno, Fence, FenceContext, FenceError};
use gpusched::{Entity, Priority, Scheduler, SchedulerConfig};
use gpusched_vulkan::recovery::RECREATE_ATTEMPTS;
use gpusched_vulkan::{live_devices, Buffer, VulkanDevice, VulkanJob, VulkanRing};
use vk_fault_layer::testing::skip_or_fail;
use vk_fault_layer::{FaultCall, FaultLayer, LayerSetup};

static SERIAL: Mutex<()> = Mutex::new(());

/// The layer set up once per process, before the backend's first instance (which the loader
/// then gives the layer, above the validation layer).
static SETUP: OnceLock<Result<LayerSetup, String>> = OnceLock::new();

/// Floats per test buffer.
const N: u32 = 256;

/// One test's hold: the serial lock, the counts at its start, a validated device under the
/// layer, and the layer's control.
struct Env {
    layer: FaultLayer,
    dev: VulkanDevice,
    live: usize,
    layer_live: u64,
    _serial: MutexGuard<'static, ()>,
}

fn setup(test: &str) -> Option<Env> {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let setup = SETUP.get_or_init(|| {
        let setup = LayerSetup::locate().map_err(|e| e.to_string())?;
        setup.install_env_enabled();
        Ok(setup)
    });
    let setup = match setup {
        Ok(setup) => setup,
        Err(e) => {
            skip_or_fail(test, e);
            return None;
        }
    };
    let layer = setup.open().expect("the fault layer library opens");
    layer.reset();
    let live = live_devices();
    let layer_live = layer.live_devices();
    let dev = device()?;
    assert_eq!(
        layer.live_devices(),
        layer_live + 1,
        "the backend's device was not created through the fault layer"
    );
    Some(Env { layer, dev, live, layer_live, _serial: serial })
}

/// The end of every test, once it dropped its handles: no validation error or checker
/// violation, the device destroyed, and no device left alive (backend and layer counts).
#[track_caller]
fn teardown(env: Env) {
    let Env { layer, dev, live, layer_live, _serial } = env;
    layer.reset();
    assert_no_validation_errors();
    close(dev);
    assert_eq!(live_devices(), live, "a device generation leaked");
    assert_eq!(layer.live_devices(), layer_live, "a VkDevice was never destroyed");
}

/// Waits for `f` by polling its state only (a wait would make Vulkan calls of its own, which
/// could take the armed fault), and returns its error.
#[track_caller]
fn settle(f: &Fence) -> Option<FenceError> {
    let deadline = Instant::now() + WATCHDOG;
    while !f.is_signaled() {
        assert!(Instant::now() < deadline, "a fence never signalled");
        std::thread::sleep(Duration::from_millis(1));
    }
    f.error()
}

fn ring(dev: &VulkanDevice, credits: u32) -> (Scheduler<VulkanRing>, Entity<VulkanRing>) {
    let ring = dev
        .ring(0, SchedulerConfig::new("driver-faults").credit_limit(credits).timeout(WATCHDOG))
        .unwrap();
    let entity = Entity::new(&[&ring], Priority::Normal).unwrap();
    (ring, entity)
}

fn buffer(dev: &VulkanDevice) -> Buffer {
    dev.buffer(u64::from(N) * 4).unwrap()
}

#[track_caller]
fn assert_all(buf: &Buffer, value: f32) {
    let v = buf.read_f32(WATCHDOG).unwrap();
    assert!(v[..N as usize].iter().all(|x| *x == value), "expected {value}, got {:?}...", &v[..4]);
}

/// The generation after `lost` exists and runs work: a fill job on a fresh buffer computes.
#[track_caller]
fn assert_recovered(dev: &VulkanDevice, entity: &Entity<VulkanRing>, lost: u64) {
    let next = dev.wait_generation(lost, WATCHDOG).expect("the device was re-created");
    assert!(next > lost);
    assert!(!dev.is_lost());
    let b = buffer(dev);
    wait_ok(&VulkanDevice::submit(entity, fill_job(&b, 7.0, N)).unwrap());
    assert_all(&b, 7.0);
}

#[test]
fn device_lost_from_the_completion_threads_wait() {
    let Some(env) = setup("device_lost_from_the_completion_threads_wait") else { return };
    let (ring, entity) = ring(&env.dev, 8);
    let b = buffer(&env.dev);
    let lost = env.dev.generation();
    // The completion thread's `vkWaitSemaphores` for the job is the next call.
    env.layer.fail_nth(FaultCall::WaitSemaphores, 1, vk::Result::ERROR_DEVICE_LOST).unwrap();
    let f = VulkanDevice::submit(&entity, fill_job(&b, 1.0, N)).unwrap();
    assert_eq!(settle(&f), Some(FenceError::DeviceLost));
    assert_eq!(env.layer.injected(FaultCall::WaitSemaphores), 1);
    assert_recovered(&env.dev, &entity, lost);
    assert_eq!(env.dev.generations(), 2);
    drop((b, entity, ring));
    teardown(env);
}

#[test]
fn device_lost_from_the_counter_read() {
    let Some(env) = setup("device_lost_from_the_counter_read") else { return };
    let (ring, entity) = ring(&env.dev, 8);
    let b = buffer(&env.dev);
    let lost = env.dev.generation();
    // The completion thread reads the counter once its wait returns.
    env.layer
        .fail_nth(FaultCall::GetSemaphoreCounterValue, 1, vk::Result::ERROR_DEVICE_LOST)
        .unwrap();
    let f = VulkanDevice::submit(&entity, fill_job(&b, 1.0, N)).unwrap();
    assert_eq!(settle(&f), Some(FenceError::DeviceLost));
    assert_eq!(env.layer.injected(FaultCall::GetSemaphoreCounterValue), 1);
    assert_recovered(&env.dev, &entity, lost);
    drop((b, entity, ring));
    teardown(env);
}

#[test]
fn device_lost_from_a_single_submission() {
    let Some(env) = setup("device_lost_from_a_single_submission") else { return };
    let (ring, entity) = ring(&env.dev, 8);
    ring.backend().set_batching(false);
    let b = buffer(&env.dev);
    let lost = env.dev.generation();
    env.layer.fail_nth(FaultCall::QueueSubmit, 1, vk::Result::ERROR_DEVICE_LOST).unwrap();
    let f = VulkanDevice::submit(&entity, fill_job(&b, 1.0, N)).unwrap();
    assert_eq!(settle(&f), Some(FenceError::DeviceLost));
    assert_eq!(env.layer.injected(FaultCall::QueueSubmit), 1);
    assert_recovered(&env.dev, &entity, lost);
    drop((b, entity, ring));
    teardown(env);
}

/// A batch large enough for two `vkQueueSubmit` calls (one per 32 jobs), held behind a gate so
/// that the scheduler hands it over in one go; returns the gate's fence (the batch's first
/// job), the jobs' fences and buffers, and the gate's signaller.
fn gated_batch(
    dev: &VulkanDevice,
    entity: &Entity<VulkanRing>,
    jobs: usize,
) -> (Fence, Vec<(Fence, Buffer)>, gpusched::fence::Signaller) {
    let (gate, open) = FenceContext::new("gate").next();
    let head = entity.job(VulkanJob::empty()).dependency(gate).arm().unwrap().push();
    let batch = (0..jobs)
        .map(|i| {
            let b = buffer(dev);
            let f = VulkanDevice::submit(entity, fill_job(&b, i as f32, N)).unwrap();
            (f, b)
        })
        .collect();
    (head, batch, open)
}

#[test]
fn device_lost_from_a_submission_in_the_middle_of_a_batch() {
    let Some(env) = setup("device_lost_from_a_submission_in_the_middle_of_a_batch") else {
        return;
    };
    let (ring, entity) = ring(&env.dev, 64);
    let lost = env.dev.generation();
    let (head, batch, open) = gated_batch(&env.dev, &entity, 40);
    // The batch's second call (jobs 32..) reports the loss; the first went to the hardware.
    env.layer.fail_nth(FaultCall::QueueSubmit, 2, vk::Result::ERROR_DEVICE_LOST).unwrap();
    open.signal();
    let mut outcomes = vec![settle(&head)];
    outcomes.extend(batch.iter().map(|(f, _)| settle(f)));
    assert_eq!(env.layer.injected(FaultCall::QueueSubmit), 1, "the batch was not split");
    for (i, o) in outcomes.iter().enumerate() {
        assert!(
            o.is_none() || *o == Some(FenceError::DeviceLost),
            "job {i} ended {o:?} (outcomes {outcomes:?})"
        );
    }
    // The jobs of the failed call never reached the hardware.
    assert!(outcomes[33..].iter().all(|o| *o == Some(FenceError::DeviceLost)), "{outcomes:?}");
    // (The buffers of the lost generation cannot be read: its memory is gone.)
    assert_recovered(&env.dev, &entity, lost);
    drop((head, batch, entity, ring));
    teardown(env);
}

#[test]
fn out_of_memory_from_a_submission_in_the_middle_of_a_batch() {
    let Some(env) = setup("out_of_memory_from_a_submission_in_the_middle_of_a_batch") else {
        return;
    };
    let (ring, entity) = ring(&env.dev, 64);
    let generation = env.dev.generation();
    let (head, batch, open) = gated_batch(&env.dev, &entity, 40);
    env.layer.fail_nth(FaultCall::QueueSubmit, 2, vk::Result::ERROR_OUT_OF_DEVICE_MEMORY).unwrap();
    open.signal();
    assert_eq!(settle(&head), None);
    let outcomes: Vec<_> = batch.iter().map(|(f, _)| settle(f)).collect();
    assert_eq!(env.layer.injected(FaultCall::QueueSubmit), 1, "the batch was not split");
    // The first call carried the head and jobs 0..31; the failed one carried jobs 31..40.
    let enomem = Some(FenceError::Driver(errno::ENOMEM));
    assert!(outcomes[..31].iter().all(Option::is_none), "{outcomes:?}");
    assert!(outcomes[31..].iter().all(|o| *o == enomem), "{outcomes:?}");
    for (i, (_, b)) in batch.iter().enumerate().take(31) {
        assert_all(b, i as f32);
    }
    // No loss, and the ring goes on with higher values (a reused value would be a
    // validation error, checked at teardown).
    assert_eq!(env.dev.generation(), generation);
    let b = buffer(&env.dev);
    wait_ok(&VulkanDevice::submit(&entity, fill_job(&b, 9.0, N)).unwrap());
    assert_all(&b, 9.0);
    drop((b, head, batch, entity, ring));
    teardown(env);
}

#[test]
fn device_lost_reported_to_wait_idle_on_idle_rings() {
    let Some(env) = setup("device_lost_reported_to_wait_idle_on_idle_rings") else { return };
    let (ring, entity) = ring(&env.dev, 8);
    let b = buffer(&env.dev);
    wait_ok(&VulkanDevice::submit(&entity, fill_job(&b, 1.0, N)).unwrap());
    let lost = env.dev.generation();
    // The rings are idle: their completion threads make no call that could see the loss.
    assert_eq!(env.layer.lose_device(), 1);
    let e = env.dev.wait_idle(WATCHDOG).unwrap_err();
    assert!(e.is_device_lost(), "{e}");
    assert_recovered(&env.dev, &entity, lost);
    // Buffers of the lost generation are refused, with both generations named.
    let err = VulkanDevice::submit(&entity, fill_job(&b, 2.0, N)).unwrap_err();
    assert!(err.is_device_lost(), "{err}");
    drop((b, entity, ring));
    teardown(env);
}

#[test]
fn out_of_memory_at_buffer_creation() {
    let Some(env) = setup("out_of_memory_at_buffer_creation") else { return };
    let oom = vk::Result::ERROR_OUT_OF_DEVICE_MEMORY;
    // A fresh device has no memory chunk yet: the first buffer allocates one.
    env.layer.fail_nth(FaultCall::AllocateMemory, 1, oom).unwrap();
    let e = env.dev.buffer(64).unwrap_err();
    assert!(e.is_out_of_memory(), "{e}");
    env.layer.fail_nth(FaultCall::CreateBuffer, 1, oom).unwrap();
    let e = env.dev.buffer(64).unwrap_err();
    assert!(e.is_out_of_memory(), "{e}");
    // A dedicated allocation (over the 4 MiB chunk size) whose mapping fails.
    env.layer.fail_nth(FaultCall::MapMemory, 1, vk::Result::ERROR_MEMORY_MAP_FAILED).unwrap();
    let e = env.dev.buffer(8 << 20).unwrap_err();
    assert!(e.is_out_of_memory(), "{e}");
    assert_eq!(env.layer.injected(FaultCall::AllocateMemory), 1);
    assert_eq!(env.layer.injected(FaultCall::CreateBuffer), 1);
    assert_eq!(env.layer.injected(FaultCall::MapMemory), 1);
    // Nothing was lost, and the next buffers work (a leaked buffer or allocation is reported
    // by the validation layer when the device is destroyed).
    assert!(!env.dev.is_lost());
    let (ring, entity) = ring(&env.dev, 8);
    let b = buffer(&env.dev);
    let big = env.dev.buffer(8 << 20).unwrap();
    wait_ok(&VulkanDevice::submit(&entity, fill_job(&b, 3.0, N)).unwrap());
    assert_all(&b, 3.0);
    drop((big, b, entity, ring));
    teardown(env);
}

#[test]
fn out_of_memory_at_record_time() {
    let Some(env) = setup("out_of_memory_at_record_time") else { return };
    let (ring, entity) = ring(&env.dev, 8);
    let b = buffer(&env.dev);
    env.layer
        .fail_nth(FaultCall::AllocateCommandBuffers, 1, vk::Result::ERROR_OUT_OF_HOST_MEMORY)
        .unwrap();
    let e = VulkanDevice::submit(&entity, fill_job(&b, 1.0, N)).unwrap_err();
    assert!(e.is_out_of_memory(), "{e}");
    assert_eq!(env.layer.injected(FaultCall::AllocateCommandBuffers), 1);
    // No fence exists for the refused job: the buffer's reservation holds none, and the
    // entity goes on.
    assert_eq!(b.resv().iter_unlocked(gpusched::resv::Usage::Bookkeep).count(), 0);
    wait_ok(&VulkanDevice::submit(&entity, fill_job(&b, 2.0, N)).unwrap());
    assert_all(&b, 2.0);
    assert!(!env.dev.is_lost());
    drop((b, entity, ring));
    teardown(env);
}

#[test]
fn failed_recreation_is_retried() {
    let Some(env) = setup("failed_recreation_is_retried") else { return };
    let (ring, entity) = ring(&env.dev, 8);
    let b = buffer(&env.dev);
    let lost = env.dev.generation();
    let created = env.layer.calls(FaultCall::CreateDevice);
    env.layer
        .fail_nth(FaultCall::CreateDevice, 1, vk::Result::ERROR_INITIALIZATION_FAILED)
        .unwrap();
    env.layer.fail_nth(FaultCall::QueueSubmit, 1, vk::Result::ERROR_DEVICE_LOST).unwrap();
    let f = VulkanDevice::submit(&entity, fill_job(&b, 1.0, N)).unwrap();
    assert_eq!(settle(&f), Some(FenceError::DeviceLost));
    assert_recovered(&env.dev, &entity, lost);
    assert_eq!(env.layer.injected(FaultCall::CreateDevice), 1);
    assert_eq!(
        env.layer.calls(FaultCall::CreateDevice),
        created + 2,
        "one failed try, one success"
    );
    assert_eq!(env.dev.generations(), 2);
    drop((b, entity, ring));
    teardown(env);
}

#[test]
fn recreation_failing_every_time_leaves_the_device_gone() {
    let Some(env) = setup("recreation_failing_every_time_leaves_the_device_gone") else {
        return;
    };
    let (ring, entity) = ring(&env.dev, 8);
    let gated_entity = Entity::new(&[&ring], Priority::Normal).unwrap();
    let b = buffer(&env.dev);
    // Jobs armed before the loss, held behind a gate until the device is gone.
    let (gate, open) = FenceContext::new("gate").next();
    let held: Vec<Fence> = (0..3)
        .map(|_| {
            let job = VulkanJob::empty().after(&gate);
            VulkanDevice::submit(&gated_entity, job).unwrap()
        })
        .collect();
    env.layer
        .fail_random(FaultCall::CreateDevice, 1.0, 1, vk::Result::ERROR_INITIALIZATION_FAILED)
        .unwrap();
    env.layer.fail_nth(FaultCall::QueueSubmit, 1, vk::Result::ERROR_DEVICE_LOST).unwrap();
    let lost = env.dev.generation();
    let f = VulkanDevice::submit(&entity, fill_job(&b, 1.0, N)).unwrap();
    assert_eq!(settle(&f), Some(FenceError::DeviceLost));
    let e = env.dev.wait_generation(lost, WATCHDOG).unwrap_err();
    assert!(e.is_gone() && e.is_device_lost(), "{e}");
    assert_eq!(env.layer.injected(FaultCall::CreateDevice), u64::from(RECREATE_ATTEMPTS));
    assert!(env.dev.is_lost());
    // Every fence handed out signals `DeviceLost`, the held ones included.
    open.signal();
    for h in &held {
        assert_eq!(settle(h), Some(FenceError::DeviceLost));
    }
    // Later calls say the device is gone.
    let e = VulkanDevice::submit(&entity, fill_job(&b, 2.0, N)).unwrap_err();
    assert!(e.is_gone(), "{e}");
    let e = env.dev.buffer(64).unwrap_err();
    assert!(e.is_device_lost() && e.to_string().contains("gone for good"), "{e}");
    let e = env.dev.ring(0, SchedulerConfig::new("late")).unwrap_err();
    assert!(e.is_gone(), "{e}");
    drop((held, f, b, gated_entity, entity, ring));
    teardown(env);
}

/// A loss the driver reports while work still runs below it (the layer reports it; lavapipe
/// goes on): the lost generation's ring is not destroyed (command pool, semaphore) until that
/// work is done. Destroying it earlier is reported by the validation layer.
#[test]
fn device_lost_while_work_still_runs_below() {
    let Some(env) = setup("device_lost_while_work_still_runs_below") else { return };
    let (ring, entity) = ring(&env.dev, 8);
    let old = env.dev.ash_device();
    // SAFETY: a valid device; the event is destroyed below, after that device's work ended.
    let event = unsafe { old.create_event(&vk::EventCreateInfo::default(), None) }.unwrap();
    // Holds the lost generation alive until the event is destroyed.
    let b = buffer(&env.dev);
    let f = VulkanDevice::submit(&entity, gated_fill_job(event, &b, 5.0, N)).unwrap();
    let deadline = Instant::now() + WATCHDOG;
    while ring.backend().submits() == 0 {
        assert!(Instant::now() < deadline, "the held job was never submitted");
        std::thread::sleep(Duration::from_millis(1));
    }
    let lost = env.dev.generation();
    assert_eq!(env.layer.lose_device(), 1);
    assert_eq!(settle(&f), Some(FenceError::DeviceLost));
    assert_recovered(&env.dev, &entity, lost);
    // The recovery thread now tries to destroy the lost ring, whose work still waits.
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: a valid event of the old device.
    unsafe { old.set_event(event) }.unwrap();
    // The held job ends at once; the recovery thread, waiting for the old queue to idle,
    // then destroys the ring. Only then may this thread use the old device's queues.
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: the old device, whose queue no other thread uses any more; the layer lets its
    // work end before it reports the loss.
    let _ = unsafe { old.device_wait_idle() };
    // SAFETY: no pending command buffer uses the event any more (the device idled).
    unsafe { old.destroy_event(event, None) };
    drop((f, b, entity, ring));
    teardown(env);
}

/// A job handed over in the same pump as a batch but not batchable (it waits on an external
/// semaphore), depending on a batched job: its `run_job` submits the batch first, the driver
/// refuses it, and the dependant must fail with the batch's error instead of running without
/// its dependency's results.
#[test]
fn an_unbatchable_dependant_of_a_refused_batch_fails_with_its_error() {
    let Some(env) = setup("an_unbatchable_dependant_of_a_refused_batch_fails_with_its_error")
    else {
        return;
    };
    let (ring, entity) = ring(&env.dev, 8);
    let d = env.dev.ash_device();
    let mut t = vk::SemaphoreTypeCreateInfo::default()
        .semaphore_type(vk::SemaphoreType::TIMELINE)
        .initial_value(1);
    // SAFETY: a valid device; the semaphore is destroyed below, after every job using it.
    let sem =
        unsafe { d.create_semaphore(&vk::SemaphoreCreateInfo::default().push_next(&mut t), None) }
            .unwrap();
    let (gate, open) = FenceContext::new("gate").next();
    let a_buf = buffer(&env.dev);
    let a = entity.job(fill_job(&a_buf, 1.0, N)).dependency(gate).arm().unwrap().push();
    let b_buf = buffer(&env.dev);
    let wait = gpusched_vulkan::ExternalWait {
        semaphore: sem,
        value: Some(1),
        stage: vk::PipelineStageFlags::ALL_COMMANDS,
    };
    // SAFETY: the test's timeline semaphore, already at the awaited value, destroyed after
    // the device is idle.
    let b_job = unsafe { fill_job(&b_buf, 2.0, N).wait_semaphore(wait) };
    let b = entity.job(b_job).dependency(a.clone()).arm().unwrap().push();
    env.layer.fail_nth(FaultCall::QueueSubmit, 1, vk::Result::ERROR_OUT_OF_DEVICE_MEMORY).unwrap();
    open.signal();
    let (ea, eb) = (settle(&a), settle(&b));
    assert_eq!(ea, Some(FenceError::Driver(errno::ENOMEM)), "the batch was refused");
    assert_eq!(eb, ea, "the dependant fails with its dependency's error");
    drop((a, b, a_buf, b_buf, entity, ring));
    env.dev.wait_idle(WATCHDOG).unwrap();
    // SAFETY: no job uses the semaphore any more (every one ended, the device is idle).
    unsafe { d.destroy_semaphore(sem, None) };
    teardown(env);
}
