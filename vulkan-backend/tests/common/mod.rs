//! Shared helpers of the Vulkan integration tests: a validated device (or a clear skip when
//! no Vulkan device can be created at all), watchdog waits, push-constant packing.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use gpusched::fence::{lockdep, Fence};

/// Every allocation is checked against the signalling contract (none inside a signalling
/// section: `run_job`, the completion thread's signalling path).
#[global_allocator]
static ALLOC: lockdep::CheckingAllocator = lockdep::CheckingAllocator::new(std::alloc::System);
use gpusched_vulkan::VulkanDevice;

/// Deadlock watchdog for every wait (never a speed assertion).
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// The device-or-skip rule, shared with the `gpusched-tests` suites (one file, compiled in
/// both: `gpusched-tests` depends on this crate, so this crate's tests cannot use it).
mod probe;

/// A device with the validation layer on, or `None` when Vulkan, every device or the
/// validation layer is missing on a developer machine (a printed `SKIPPED` line). Under CI (or
/// `GPUSCHED_REQUIRE_VULKAN=1`) anything missing fails the test
/// (`vk_fault_layer::testing::skip_or_fail`).
#[track_caller]
pub fn device() -> Option<VulkanDevice> {
    probe::validated_device("vulkan test", std::env::var("GPUSCHED_TEST_NOVAL").is_err())
}

/// Waits with the watchdog and returns the outcome.
pub fn wait(f: &Fence) -> Result<(), gpusched::fence::WaitError> {
    f.wait_timeout(WATCHDOG)
}

/// Asserts that the fence signalled successfully within the watchdog.
#[track_caller]
pub fn wait_ok(f: &Fence) {
    match f.wait_timeout(WATCHDOG) {
        Ok(()) => {}
        Err(e) => panic!("fence failed or hung: {e:?}"),
    }
}

/// Asserts that a job whose scheduler was dropped while it ran ended: `Ok` if the hardware
/// finished it first, `Cancelled` if the scheduler's teardown cancelled it on the ring
/// (`drm_sched_fini`); never pending, never another error.
#[track_caller]
pub fn wait_ended_or_cancelled(f: &Fence) {
    match f.wait_timeout(WATCHDOG) {
        Ok(())
        | Err(gpusched::fence::WaitError::Failed(gpusched::fence::FenceError::Cancelled)) => {}
        Err(e) => panic!("fence failed or hung: {e:?}"),
    }
}

/// Packs push constants.
pub fn push(words: &[[u8; 4]]) -> Vec<u8> {
    words.concat()
}

/// Asserts that no validation error and no checker violation was reported so far.
#[track_caller]
pub fn assert_no_validation_errors() {
    assert_eq!(gpusched_vulkan::validation_errors(), 0, "validation errors were reported");
    assert_eq!(lockdep::violations(), 0, "checker violations: {:#?}", lockdep::reports());
}

/// Destroys the device synchronously (after the test dropped its rings, entities and
/// buffers): a device left for the completion thread to destroy may outlive the test process
/// and race the driver's exit handlers.
#[track_caller]
pub fn close(dev: VulkanDevice) {
    if let Err(dev) = dev.close(WATCHDOG) {
        panic!("device {dev:?} still referenced after the test dropped its handles");
    }
}

/// Asserts that every float of `buf` is `value`.
#[track_caller]
pub fn assert_all(buf: &gpusched_vulkan::Buffer, value: f32) {
    let v = buf.read_f32(WATCHDOG).unwrap();
    assert!(v.iter().all(|x| *x == value), "expected {value}, got {:?}...", &v[..4]);
}

/// A job that writes `value` into the first `n` floats of `buf` (the built-in fill kernel).
pub fn fill_job(buf: &gpusched_vulkan::Buffer, value: f32, n: u32) -> gpusched_vulkan::VulkanJob {
    let b = buf.clone();
    gpusched_vulkan::VulkanJob::new(move |ctx, cb| {
        let k = ctx.builtin(gpusched_vulkan::Builtin::Fill);
        ctx.dispatch(
            cb,
            &k,
            &[&b],
            &push(&[value.to_ne_bytes(), n.to_ne_bytes()]),
            [n.div_ceil(64), 1, 1],
        )
    })
    .writes(buf)
}

/// A job that keeps the hardware busy a while, then fills `buf` with the 32-bit value 7.
pub fn slow_fill_job(buf: &gpusched_vulkan::Buffer) -> gpusched_vulkan::VulkanJob {
    let b = buf.clone();
    gpusched_vulkan::VulkanJob::new(move |ctx, cb| {
        ctx.busy(cb, 8, 1024)?;
        ctx.fill_u32(cb, &b, 7)
    })
    .writes(buf)
}

/// Waits (with the watchdog) until the process-wide live-device count is back down to
/// `live`, and asserts that it is exactly `live`.
#[track_caller]
pub fn wait_live(live: usize) {
    let deadline = std::time::Instant::now() + WATCHDOG;
    while gpusched_vulkan::live_devices() > live {
        assert!(std::time::Instant::now() < deadline, "a device was never destroyed");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(gpusched_vulkan::live_devices(), live);
}

/// A job that waits for a host-set `VkEvent` (hardware progress under the test's control),
/// then fills the first `n` floats of `buf` with `value`.
pub fn gated_fill_job(
    event: gpusched_vulkan::ash::vk::Event,
    buf: &gpusched_vulkan::Buffer,
    value: f32,
    n: u32,
) -> gpusched_vulkan::VulkanJob {
    use gpusched_vulkan::ash::vk;
    let b = buf.clone();
    gpusched_vulkan::VulkanJob::new(move |ctx, cb| {
        // SAFETY: `cb` is recording; the event is set by the host (HOST source stage),
        // outside any render pass.
        unsafe {
            ctx.device().cmd_wait_events(
                cb,
                &[event],
                vk::PipelineStageFlags::HOST,
                vk::PipelineStageFlags::ALL_COMMANDS,
                &[],
                &[],
                &[],
            )
        };
        let k = ctx.builtin(gpusched_vulkan::Builtin::Fill);
        let push = push(&[value.to_ne_bytes(), n.to_ne_bytes()]);
        ctx.dispatch(cb, &k, &[&b], &push, [n.div_ceil(64), 1, 1])
    })
    .writes(buf)
}

/// A host-set `VkEvent` the test's jobs wait on: hardware progress under the test's control.
pub struct Gate {
    dev: gpusched_vulkan::ash::Device,
    event: gpusched_vulkan::ash::vk::Event,
}

impl Gate {
    /// A closed gate on `dev`'s current generation.
    pub fn new(dev: &VulkanDevice) -> Gate {
        let d = dev.ash_device();
        let info = gpusched_vulkan::ash::vk::EventCreateInfo::default();
        // SAFETY: a valid device; the event is destroyed in `destroy`, after the device idled.
        let event = unsafe { d.create_event(&info, None) }.unwrap();
        Gate { dev: d, event }
    }

    /// A job that waits for the gate, then fills the first `n` floats of `buf` with `value`.
    pub fn job(
        &self,
        buf: &gpusched_vulkan::Buffer,
        value: f32,
        n: u32,
    ) -> gpusched_vulkan::VulkanJob {
        gated_fill_job(self.event, buf, value, n)
    }

    /// Opens the gate: the jobs waiting on it run.
    pub fn open(&self) {
        // SAFETY: a valid event of this device.
        unsafe { self.dev.set_event(self.event) }.unwrap();
    }

    /// Destroys the event once the device is idle.
    pub fn destroy(self, dev: &VulkanDevice) {
        dev.wait_idle(WATCHDOG).unwrap();
        // SAFETY: no pending command buffer uses the event any more (the device idled).
        unsafe { self.dev.destroy_event(self.event, None) };
    }
}

pub mod engine;
