//! The fault layer on lavapipe, under the Khronos validation layer: each fault mode returns
//! exactly the armed code at exactly the armed calls, a failed call has no effect, and
//! validation reports nothing.

mod common;

use ash::vk;
use common::{assert_no_validation_messages, create_gpu, harness};

use vk_fault_layer::{ArmError, Fault, FaultCall, FaultLayer, Trigger};

const OOD: vk::Result = vk::Result::ERROR_OUT_OF_DEVICE_MEMORY;
const LOST: vk::Result = vk::Result::ERROR_DEVICE_LOST;

/// The number of separate mappings of `path` at file offset 0 in this process (one per
/// loaded copy of the library).
fn loaded_copies(path: &std::path::Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    let path = path.to_str().expect("UTF-8 path");
    maps.lines()
        .filter(|line| line.ends_with(path))
        .filter(|line| line.split_whitespace().nth(2) == Some("00000000"))
        .count()
}

#[test]
fn control_handle_reaches_the_loaders_copy_of_the_layer() {
    let Some(h) = harness("control_handle_reaches_the_loaders_copy_of_the_layer") else {
        return;
    };
    let (instances, devices) = (h.layer.live_instances(), h.layer.live_devices());
    let gpu = create_gpu(&h).expect("instance");
    // The loader's copy counted the instance: the handle's dlopen returned that copy.
    assert_eq!(h.layer.live_instances(), instances + 1);
    assert_eq!(loaded_copies(h.setup.library()), 1, "the layer library is loaded twice");
    let dev = gpu.create_device().expect("device");
    assert_eq!(h.layer.live_devices(), devices + 1);
    // A second handle opened by path sees the same state.
    let second = FaultLayer::open(h.setup.library()).expect("second handle");
    assert_eq!(second.live_devices(), devices + 1);
    assert_eq!(second.calls(FaultCall::CreateDevice), 1);
    dev.destroy(&[]);
    gpu.destroy();
    // Destroying everything removes the layer's dispatch data: nothing leaks.
    assert_eq!(h.layer.live_devices(), devices);
    assert_eq!(h.layer.live_instances(), instances);
    assert_no_validation_messages();
}

#[test]
fn validation_runs_below_the_fault_layer() {
    let Some(h) = harness("validation_runs_below_the_fault_layer") else {
        return;
    };
    let gpu = create_gpu(&h).expect("instance");
    let dev = gpu.create_device().expect("device");
    // A zero-sized buffer is invalid (VUID-VkBufferCreateInfo-size-00912).
    let invalid =
        vk::BufferCreateInfo::default().size(0).usage(vk::BufferUsageFlags::STORAGE_BUFFER);
    // Failed by the fault layer, the call never reaches validation.
    h.layer.fail_nth(FaultCall::CreateBuffer, 1, OOD).expect("arm");
    // SAFETY: a valid device; the create info is invalid on purpose, and stops at our layer.
    assert_eq!(unsafe { dev.device.create_buffer(&invalid, None) }, Err(OOD));
    assert_no_validation_messages();
    // Passed through, it does: validation is on, below the fault layer, and reports it.
    // SAFETY: as above; validation rejects the call before the driver sees it.
    let result = unsafe { dev.device.create_buffer(&invalid, None) };
    let messages = common::validation_messages();
    assert!(messages.iter().any(|m| m.contains("00912")), "{messages:?} ({result:?})");
    if let Ok(buffer) = result {
        // SAFETY: the buffer is unused.
        unsafe { dev.device.destroy_buffer(buffer, None) };
    }
    dev.destroy(&[]);
    gpu.destroy();
}

#[test]
fn nth_allocation_fails_with_out_of_device_memory_exactly_once() {
    let Some(h) = harness("nth_allocation_fails_with_out_of_device_memory_exactly_once") else {
        return;
    };
    let gpu = create_gpu(&h).expect("instance");
    let dev = gpu.create_device().expect("device");
    h.layer.fail_nth(FaultCall::AllocateMemory, 3, OOD).expect("arm");
    let results: Vec<_> = (0..6).map(|_| dev.allocate(256)).collect();
    for (i, result) in results.iter().enumerate() {
        match result {
            Err(code) => assert!(i == 2 && *code == OOD, "call {}: {code:?}", i + 1),
            Ok(memory) => {
                assert_ne!(i, 2, "the 3rd allocation succeeded");
                dev.free(*memory);
            }
        }
    }
    assert_eq!(h.layer.calls(FaultCall::AllocateMemory), 6);
    assert_eq!(h.layer.injected(FaultCall::AllocateMemory), 1);
    dev.destroy(&[]);
    gpu.destroy();
    assert_no_validation_messages();
}

#[test]
fn failed_queue_submit_submits_nothing() {
    let Some(h) = harness("failed_queue_submit_submits_nothing") else {
        return;
    };
    let gpu = create_gpu(&h).expect("instance");
    let dev = gpu.create_device().expect("device");
    let timeline = dev.timeline();
    dev.signal(timeline, &[1]).expect("first submit");
    // The second vkQueueSubmit, a batch of two, fails as a whole.
    h.layer.fail_nth(FaultCall::QueueSubmit, 1, LOST).expect("arm");
    assert_eq!(dev.signal(timeline, &[2, 3]), Err(LOST));
    // SAFETY: a valid queue; the layer passes the wait through (the rule fired).
    unsafe { dev.device.queue_wait_idle(dev.queue) }.expect("queue idle");
    assert_eq!(dev.counter(timeline), Ok(1), "a batch of the failed submit ran");
    // The queue still works: the next submit goes through.
    dev.signal(timeline, &[4]).expect("submit after the failure");
    dev.wait(timeline, 4).expect("wait for 4");
    assert_eq!(h.layer.calls(FaultCall::QueueSubmit), 3);
    assert_eq!(h.layer.injected(FaultCall::QueueSubmit), 1);
    dev.destroy(&[timeline]);
    gpu.destroy();
    assert_no_validation_messages();
}

#[test]
fn lost_device_fails_every_command_that_reports_it() {
    let Some(h) = harness("lost_device_fails_every_command_that_reports_it") else {
        return;
    };
    let gpu = create_gpu(&h).expect("instance");
    let dev = gpu.create_device().expect("device");
    let timeline = dev.timeline();
    dev.signal(timeline, &[1]).expect("submit");
    dev.wait(timeline, 1).expect("wait");
    // SAFETY: a valid device and create info.
    let fence =
        unsafe { dev.device.create_fence(&vk::FenceCreateInfo::default(), None) }.expect("fence");
    assert_eq!(h.layer.lose_device(), 1);
    assert_eq!(h.layer.lost_devices(), 1);
    // A wait for a value nothing will signal returns DEVICE_LOST (lavapipe would time out).
    assert_eq!(dev.wait(timeline, 2), Err(LOST));
    assert_eq!(dev.counter(timeline), Err(LOST));
    assert_eq!(dev.signal(timeline, &[2]), Err(LOST));
    // SAFETY: valid handles of this device (every call below).
    unsafe {
        assert_eq!(dev.device.device_wait_idle(), Err(LOST));
        assert_eq!(dev.device.queue_wait_idle(dev.queue), Err(LOST));
        assert_eq!(dev.device.get_fence_status(fence), Err(LOST));
        assert_eq!(dev.device.wait_for_fences(&[fence], true, 10_000_000_000), Err(LOST));
        let submit2 = vk::SubmitInfo2::default();
        assert_eq!(dev.device.queue_submit2(dev.queue, &[submit2], vk::Fence::null()), Err(LOST));
    }
    // Commands that cannot report a lost device pass through.
    let memory = dev.allocate(256).expect("allocation on a lost device passes through");
    dev.free(memory);
    // A device created after the loss (a re-creation) is healthy.
    let fresh = gpu.create_device().expect("device created after the loss");
    let fresh_timeline = fresh.timeline();
    fresh.signal(fresh_timeline, &[1]).expect("submit on the new device");
    fresh.wait(fresh_timeline, 1).expect("wait on the new device");
    assert_eq!(h.layer.lost_devices(), 1);
    assert_eq!(dev.counter(timeline), Err(LOST), "the old device is still lost");
    // Reset: the old device works again, and it never ran the submit that failed.
    h.layer.reset();
    assert_eq!(dev.counter(timeline), Ok(1));
    // SAFETY: the fence is unused.
    unsafe { dev.device.destroy_fence(fence, None) };
    fresh.destroy(&[fresh_timeline]);
    dev.destroy(&[timeline]);
    gpu.destroy();
    assert_no_validation_messages();
}

#[test]
fn lost_wait_idle_drains_submitted_work_before_reporting() {
    let Some(h) = harness("lost_wait_idle_drains_submitted_work_before_reporting") else {
        return;
    };
    let gpu = create_gpu(&h).expect("instance");
    let dev = gpu.create_device().expect("device");
    let (gate, done) = (dev.timeline(), dev.timeline());
    // A batch that waits on the GPU for `gate` = 1, then signals `done` = 1.
    let waits = [gate];
    let wait_values = [1];
    let signals = [done];
    let signal_values = [1];
    let stages = [vk::PipelineStageFlags::ALL_COMMANDS];
    let mut timeline = vk::TimelineSemaphoreSubmitInfo::default()
        .wait_semaphore_values(&wait_values)
        .signal_semaphore_values(&signal_values);
    let submit = vk::SubmitInfo::default()
        .wait_semaphores(&waits)
        .wait_dst_stage_mask(&stages)
        .signal_semaphores(&signals)
        .push_next(&mut timeline);
    // SAFETY: a valid submit whose pointers outlive the call.
    unsafe { dev.device.queue_submit(dev.queue, &[submit], vk::Fence::null()) }.expect("submit");
    h.layer.lose_device();
    // Another thread opens the gate from the host (vkSignalSemaphore is not intercepted)
    // while this one is in vkDeviceWaitIdle: the wait-idle must still be waiting then.
    let device = dev.device.clone();
    let opener = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let signal = vk::SemaphoreSignalInfo::default().semaphore(gate).value(1);
        // SAFETY: a valid signal info; the semaphore lives until the thread is joined.
        unsafe { device.signal_semaphore(&signal) }
    });
    // The wait-idle reports the loss only once the batch ran: destroying is safe after it.
    // SAFETY: a valid device.
    assert_eq!(unsafe { dev.device.device_wait_idle() }, Err(LOST));
    h.layer.reset();
    // Read before joining the opener: without the drain the gate would still be closed.
    let drained = dev.counter(done);
    opener.join().expect("opener thread").expect("host signal");
    assert_eq!(drained, Ok(1), "vkDeviceWaitIdle reported the loss before the work ended");
    dev.destroy(&[gate, done]);
    gpu.destroy();
    assert_no_validation_messages();
}

#[test]
fn lose_device_fault_loses_the_device_mid_run() {
    let Some(h) = harness("lose_device_fault_loses_the_device_mid_run") else {
        return;
    };
    let gpu = create_gpu(&h).expect("instance");
    let dev = gpu.create_device().expect("device");
    let timeline = dev.timeline();
    h.layer.arm(FaultCall::QueueSubmit, Trigger::Nth(2), Fault::LoseDevice).expect("arm");
    dev.signal(timeline, &[1]).expect("first submit");
    assert_eq!(dev.signal(timeline, &[2]), Err(LOST));
    assert_eq!(h.layer.lost_devices(), 1);
    // Lost from then on: the wait for the first, real submit reports the loss too.
    assert_eq!(dev.wait(timeline, 1), Err(LOST));
    assert_eq!(dev.signal(timeline, &[3]), Err(LOST));
    h.layer.reset();
    dev.wait(timeline, 1).expect("wait after reset");
    assert_eq!(dev.counter(timeline), Ok(1));
    dev.destroy(&[timeline]);
    gpu.destroy();
    assert_no_validation_messages();
}

/// The indices (0-based) of the failing calls among `calls` allocations.
fn failing_allocations(
    layer: &FaultLayer,
    dev: &common::Dev,
    seed: u64,
    calls: usize,
) -> Vec<usize> {
    layer.fail_random(FaultCall::AllocateMemory, 0.3, seed, OOD).expect("arm");
    let mut failing = Vec::new();
    for i in 0..calls {
        match dev.allocate(256) {
            Ok(memory) => dev.free(memory),
            Err(code) => {
                assert_eq!(code, OOD);
                failing.push(i);
            }
        }
    }
    layer.disarm(FaultCall::AllocateMemory);
    failing
}

#[test]
fn seeded_random_faults_are_reproducible() {
    let Some(h) = harness("seeded_random_faults_are_reproducible") else {
        return;
    };
    let gpu = create_gpu(&h).expect("instance");
    let dev = gpu.create_device().expect("device");
    let first = failing_allocations(&h.layer, &dev, 42, 64);
    // Calls to other commands in between do not shift this command's stream.
    let timeline = dev.timeline();
    let again = failing_allocations(&h.layer, &dev, 42, 64);
    let other = failing_allocations(&h.layer, &dev, 43, 64);
    assert_eq!(first, again, "the same seed failed other calls");
    assert_ne!(first, other, "seeds 42 and 43 failed the same calls");
    assert!((5..40).contains(&first.len()), "{} of 64 failed at p = 0.3", first.len());
    assert_eq!(
        h.layer.injected(FaultCall::AllocateMemory) as usize,
        first.len() + again.len() + other.len()
    );
    dev.destroy(&[timeline]);
    gpu.destroy();
    assert_no_validation_messages();
}

#[test]
fn reset_restores_pass_through() {
    let Some(h) = harness("reset_restores_pass_through") else {
        return;
    };
    let gpu = create_gpu(&h).expect("instance");
    let dev = gpu.create_device().expect("device");
    let timeline = dev.timeline();
    for call in [FaultCall::AllocateMemory, FaultCall::QueueSubmit, FaultCall::WaitSemaphores] {
        h.layer.fail_random(call, 1.0, 1, OOD).expect("arm");
    }
    h.layer.lose_device();
    assert_eq!(dev.allocate(256), Err(OOD));
    assert_eq!(dev.signal(timeline, &[1]), Err(LOST));
    h.layer.reset();
    assert_eq!(h.layer.lost_devices(), 0);
    assert_eq!(h.layer.calls(FaultCall::AllocateMemory), 0);
    let memory = dev.allocate(256).expect("allocation after reset");
    dev.free(memory);
    dev.signal(timeline, &[1]).expect("submit after reset");
    dev.wait(timeline, 1).expect("wait after reset");
    assert_eq!(h.layer.injected(FaultCall::AllocateMemory), 0);
    dev.destroy(&[timeline]);
    gpu.destroy();
    assert_no_validation_messages();
}

#[test]
fn armed_create_device_fails_with_initialization_failed() {
    let Some(h) = harness("armed_create_device_fails_with_initialization_failed") else {
        return;
    };
    let gpu = create_gpu(&h).expect("instance");
    let devices = h.layer.live_devices();
    let init_failed = vk::Result::ERROR_INITIALIZATION_FAILED;
    h.layer.fail_nth(FaultCall::CreateDevice, 2, init_failed).expect("arm");
    let first = gpu.create_device().expect("first device");
    // The re-creation fails, the one after it works.
    assert_eq!(gpu.create_device().err(), Some(init_failed));
    assert_eq!(h.layer.live_devices(), devices + 1);
    let third = gpu.create_device().expect("third device");
    assert_eq!(h.layer.injected(FaultCall::CreateDevice), 1);
    third.destroy(&[]);
    first.destroy(&[]);
    assert_eq!(h.layer.live_devices(), devices);
    // An armed vkCreateInstance fails the same way, before the instance exists.
    h.layer.fail_nth(FaultCall::CreateInstance, 1, init_failed).expect("arm");
    assert_eq!(create_gpu(&h).err(), Some(init_failed));
    gpu.destroy();
    // The loader reports the failed device chain (as it would a driver's failure).
    let general = common::general_messages();
    assert!(general.iter().any(|m| m.contains("Failed to create device chain")), "{general:?}");
    assert_no_validation_messages();
}

#[test]
fn other_commands_fail_once_with_their_codes() {
    let Some(h) = harness("other_commands_fail_once_with_their_codes") else {
        return;
    };
    let gpu = create_gpu(&h).expect("instance");
    let dev = gpu.create_device().expect("device");
    let d = &dev.device;
    let ooh = vk::Result::ERROR_OUT_OF_HOST_MEMORY;
    let buffer_info =
        vk::BufferCreateInfo::default().size(256).usage(vk::BufferUsageFlags::STORAGE_BUFFER);
    let pool_info = vk::CommandPoolCreateInfo::default().queue_family_index(gpu.family);
    // SAFETY: valid handles and create infos of this device (every call below).
    unsafe {
        h.layer.fail_nth(FaultCall::CreateBuffer, 1, OOD).expect("arm");
        assert_eq!(d.create_buffer(&buffer_info, None), Err(OOD));
        let buffer = d.create_buffer(&buffer_info, None).expect("second buffer");
        d.destroy_buffer(buffer, None);

        h.layer.fail_nth(FaultCall::CreateSemaphore, 1, ooh).expect("arm");
        assert_eq!(d.create_semaphore(&vk::SemaphoreCreateInfo::default(), None), Err(ooh));

        let memory = dev.allocate(4096).expect("memory");
        let map_failed = vk::Result::ERROR_MEMORY_MAP_FAILED;
        h.layer.fail_nth(FaultCall::MapMemory, 1, map_failed).expect("arm");
        let flags = vk::MemoryMapFlags::empty();
        assert_eq!(d.map_memory(memory, 0, vk::WHOLE_SIZE, flags).err(), Some(map_failed));
        let pointer = d.map_memory(memory, 0, vk::WHOLE_SIZE, flags).expect("second map");
        assert!(!pointer.is_null());
        d.unmap_memory(memory);
        dev.free(memory);

        let pool = d.create_command_pool(&pool_info, None).expect("pool");
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(2);
        h.layer.fail_nth(FaultCall::AllocateCommandBuffers, 1, OOD).expect("arm");
        assert_eq!(d.allocate_command_buffers(&alloc), Err(OOD));
        let buffers = d.allocate_command_buffers(&alloc).expect("second allocation");
        assert_eq!(buffers.len(), 2);
        d.free_command_buffers(pool, &buffers);
        d.destroy_command_pool(pool, None);

        // vkQueueSubmit2 submits nothing when it fails.
        let timeline = dev.timeline();
        let signal = [vk::SemaphoreSubmitInfo::default().semaphore(timeline).value(1)];
        let submit = [vk::SubmitInfo2::default().signal_semaphore_infos(&signal)];
        h.layer.fail_nth(FaultCall::QueueSubmit2, 1, OOD).expect("arm");
        assert_eq!(d.queue_submit2(dev.queue, &submit, vk::Fence::null()), Err(OOD));
        d.queue_wait_idle(dev.queue).expect("idle");
        assert_eq!(dev.counter(timeline), Ok(0));
        d.queue_submit2(dev.queue, &submit, vk::Fence::null()).expect("second submit2");
        dev.wait(timeline, 1).expect("wait for the second submit2");

        h.layer.fail_nth(FaultCall::GetSemaphoreCounterValue, 1, ooh).expect("arm");
        assert_eq!(dev.counter(timeline), Err(ooh));
        assert_eq!(dev.counter(timeline), Ok(1));

        for call in [FaultCall::CreateBuffer, FaultCall::MapMemory, FaultCall::QueueSubmit2] {
            assert_eq!(h.layer.injected(call), 1, "{call:?}");
            assert_eq!(h.layer.calls(call), 2, "{call:?}");
        }
        dev.destroy(&[timeline]);
    }
    gpu.destroy();
    assert_no_validation_messages();
}

#[test]
fn invalid_faults_are_refused_and_change_nothing() {
    let Some(h) = harness("invalid_faults_are_refused_and_change_nothing") else {
        return;
    };
    let gpu = create_gpu(&h).expect("instance");
    let dev = gpu.create_device().expect("device");
    let layer = &h.layer;
    assert_eq!(
        layer.fail_nth(FaultCall::AllocateMemory, 1, LOST),
        Err(ArmError::CodeNotAllowed { call: FaultCall::AllocateMemory, code: LOST })
    );
    assert_eq!(
        layer.arm(FaultCall::AllocateMemory, Trigger::Nth(1), Fault::LoseDevice),
        Err(ArmError::CannotLoseDevice(FaultCall::AllocateMemory))
    );
    assert_eq!(layer.fail_nth(FaultCall::AllocateMemory, 0, OOD), Err(ArmError::ZeroIndex));
    assert!(matches!(
        layer.fail_random(FaultCall::AllocateMemory, 2.0, 1, OOD),
        Err(ArmError::BadProbability(_))
    ));
    let memory = dev.allocate(256).expect("nothing was armed");
    dev.free(memory);
    dev.destroy(&[]);
    gpu.destroy();
    assert_no_validation_messages();
}
