//! Clear errors for bad input, with no fence lost: every fence handed out signals.

mod common;

use std::time::Duration;

use common::{assert_no_validation_errors, close, device, push, wait, wait_ok, WATCHDOG};
use gpusched::fence::FenceError;
use gpusched::{ArmFailure, Entity, Priority, SchedulerConfig};
use gpusched_vulkan::{BufferError, Builtin, RecordError, SubmitError, VulkanDevice, VulkanJob};

/// Fills the whole buffer with `value`.
fn fill(buf: &gpusched_vulkan::Buffer, value: f32) -> VulkanJob {
    common::fill_job(buf, value, (buf.size() / 4) as u32)
}

#[test]
fn bad_input_is_refused_and_no_fence_is_lost() {
    let Some(dev) = device() else { return };
    let other = dev.sibling().unwrap();
    let ring = dev.ring(0, SchedulerConfig::new("r0")).unwrap();
    let e = Entity::new(&[&ring], Priority::Normal).unwrap();
    let buf = dev.buffer(256 * 4).unwrap();
    let foreign = other.buffer(256 * 4).unwrap();
    let mut fences = vec![VulkanDevice::submit(&e, fill(&buf, 1.0)).unwrap()];

    // A recording closure that fails.
    let err = VulkanDevice::submit(
        &e,
        VulkanJob::new(|_, _| Err(RecordError::failed("no"))).writes(&buf),
    )
    .unwrap_err();
    assert!(matches!(err, SubmitError::Record(RecordError::Failed(ref m)) if m == "no"), "{err}");
    fences.push(VulkanDevice::submit(&e, fill(&buf, 2.0)).unwrap());

    // A buffer of another device.
    let err = VulkanDevice::submit(&e, fill(&foreign, 3.0)).unwrap_err();
    assert!(err.is_wrong_device(), "{err}");
    // A buffer used but not declared.
    let undeclared = buf.clone();
    let err =
        VulkanDevice::submit(&e, VulkanJob::new(move |ctx, cb| ctx.fill_u32(cb, &undeclared, 0)))
            .unwrap_err();
    assert!(matches!(err, SubmitError::Record(RecordError::Undeclared(_))), "{err}");
    // Wrong binding count and push-constant size.
    let b2 = buf.clone();
    let err = VulkanDevice::submit(
        &e,
        VulkanJob::new(move |ctx, cb| {
            ctx.dispatch(cb, &ctx.builtin(Builtin::Saxpy), &[&b2], &[0; 8], [1, 1, 1])
        })
        .writes(&buf),
    )
    .unwrap_err();
    assert!(
        matches!(err, SubmitError::Record(RecordError::Bindings { expected: 2, got: 1 })),
        "{err}"
    );
    let b3 = buf.clone();
    let err = VulkanDevice::submit(
        &e,
        VulkanJob::new(move |ctx, cb| {
            ctx.dispatch(cb, &ctx.builtin(Builtin::Fill), &[&b3], &[0; 4], [1, 1, 1])
        })
        .writes(&buf),
    )
    .unwrap_err();
    assert!(matches!(err, SubmitError::Record(RecordError::PushConstants { .. })), "{err}");
    fences.push(VulkanDevice::submit(&e, fill(&buf, 4.0)).unwrap());

    // Through the scheduler directly: the backend's own error comes back with its type, and
    // the payload with it.
    let failing = VulkanJob::new(|_, _| Err(RecordError::failed("direct")));
    let arm = e.job(failing).arm().unwrap_err();
    assert_eq!(arm.error, ArmFailure::Backend(RecordError::failed("direct")), "{}", arm.error);
    assert!(arm.error.is_backend() && arm.error.sched().is_none());
    let payload = arm.payload;

    for f in &fences {
        wait_ok(f);
    }
    assert!(buf.read_f32(WATCHDOG).unwrap().iter().all(|v| *v == 4.0));
    assert_eq!(ring.stats().finished_ok, 3);
    assert_eq!(ring.stats().finished_err + ring.stats().cancelled, 0);
    drop(foreign);
    assert_no_validation_errors();
    drop((e, ring, buf, fences, payload));
    close(other);
    close(dev);
}

#[test]
fn buffers_too_large_or_empty_are_refused() {
    let Some(dev) = device() else { return };
    let max = dev.max_buffer_size();
    let err = dev.buffer(max + 1).unwrap_err();
    assert!(err.is_too_large(), "{err}");
    assert_eq!(err, BufferError::TooLarge { size: max + 1, max });
    assert_eq!(dev.buffer(0).unwrap_err(), BufferError::ZeroSize);
    // Sizes across the size classes and a dedicated allocation work.
    for size in [1, 255, 256, 4096, 3 << 20, 5 << 20] {
        let b = dev.buffer(size).unwrap();
        b.write_bytes(0, &vec![7u8; size as usize], WATCHDOG).unwrap();
        assert_eq!(b.read_bytes(size - 1, 1, WATCHDOG).unwrap(), vec![7u8]);
    }
    assert_no_validation_errors();
    close(dev);
}

#[test]
fn invalid_spirv_is_refused_before_the_driver_sees_it() {
    let Some(dev) = device() else { return };
    for bad in [&b""[..], b"abc", b"garbage!", &[0u8; 64][..]] {
        let err = dev.create_kernel(bad, 1, 8).unwrap_err();
        assert!(err.is_invalid_spirv(), "{err}");
    }
    assert!(dev.create_kernel(Builtin::Fill.spirv(), 9, 8).is_err(), "too many bindings");
    // A user kernel from valid SPIR-V runs.
    let k = dev.create_kernel(Builtin::Fill.spirv(), 1, 8).unwrap();
    let ring = dev.ring(0, SchedulerConfig::new("r0")).unwrap();
    let e = Entity::new(&[&ring], Priority::Normal).unwrap();
    let buf = dev.buffer(64 * 4).unwrap();
    let b = buf.clone();
    let f = VulkanDevice::submit(
        &e,
        VulkanJob::new(move |ctx, cb| {
            ctx.dispatch(
                cb,
                &k,
                &[&b],
                &push(&[9.0f32.to_ne_bytes(), 64u32.to_ne_bytes()]),
                [1, 1, 1],
            )
        })
        .writes(&buf),
    )
    .unwrap();
    wait_ok(&f);
    assert!(buf.read_f32(WATCHDOG).unwrap().iter().all(|v| *v == 9.0));
    assert_no_validation_errors();
    drop((e, ring, buf, f));
    close(dev);
}

#[test]
fn bad_device_selector_is_a_clear_error() {
    use gpusched_vulkan::{DeviceConfig, DeviceSelector, InitError};
    let Some(dev) = device() else { return };
    let err = VulkanDevice::with_config(
        DeviceConfig::default().selector(DeviceSelector::Name("no such gpu xyz".into())),
    )
    .unwrap_err();
    assert!(matches!(err, InitError::SelectorMismatch { .. }), "{err}");
    assert!(err.is_no_device());
    let err =
        VulkanDevice::with_config(DeviceConfig::default().selector(DeviceSelector::Index(999)))
            .unwrap_err();
    assert!(err.is_no_device(), "{err}");
    close(dev);
}

#[test]
fn a_timeout_ends_in_no_device_and_every_fence_signals() {
    let Some(dev) = device() else { return };
    let ring = dev
        .ring(0, SchedulerConfig::new("r0").timeout(Duration::from_millis(20)).hang_limit(0))
        .unwrap();
    let e = Entity::new(&[&ring], Priority::Normal).unwrap();
    // ~0.5-1 s of shader work on lavapipe against a 20 ms timeout: past the three timeouts
    // without hardware progress that declare the ring stuck (device generation lost).
    let slow = VulkanDevice::submit(&e, VulkanJob::new(|ctx, cb| ctx.busy(cb, 16, 16384))).unwrap();
    let next = VulkanDevice::submit(&e, VulkanJob::empty()).unwrap();
    assert_eq!(wait(&slow), Err(gpusched::fence::WaitError::Failed(FenceError::TimedOut)));
    let r = wait(&next);
    assert!(
        matches!(
            r,
            Err(gpusched::fence::WaitError::Failed(FenceError::DeviceLost | FenceError::Cancelled))
        ),
        "{r:?}"
    );
    let err = VulkanDevice::submit(&e, VulkanJob::empty()).unwrap_err();
    assert!(err.is_sched(), "{err}");
    assert!(dev.reset_domain().recoveries() >= 1);
    // Dropping everything waits for the shader still running, then destroys the device.
    // The timed-out shader still runs: `close` waits for it, then tears down synchronously.
    drop((e, ring, slow, next));
    close(dev);
    assert_no_validation_errors();
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<VulkanDevice>();
    send_sync::<gpusched_vulkan::Buffer>();
    send_sync::<gpusched_vulkan::VulkanRing>();
    send_sync::<gpusched_vulkan::Kernel>();
    send_sync::<gpusched_vulkan::Builtin>();
    send_sync::<SubmitError>();
    send_sync::<gpusched_vulkan::InitError>();
    send::<VulkanJob>();
}
