//! Deadline hints on the Vulkan backend: a deadline set on a submitted job's finished fence
//! reaches its hardware fence through the scheduler, and its ring records it.

mod common;

use std::time::{Duration, Instant};

use ash::vk;
use common::{
    assert_no_validation_errors, close, device, fill_job, gated_fill_job, wait_ok, WATCHDOG,
};
use gpusched::{Entity, Priority, SchedulerConfig};
use gpusched_vulkan::{VulkanDevice, VulkanRing};

const N: u32 = 256;

/// Sets `d` on `f` inside a signalling section: the checker and the checking allocator
/// report any allocation or wait on the way to the ring.
fn set_in_section(f: &gpusched::fence::Fence, d: Instant) {
    let _section = gpusched::fence::lockdep::signalling_section();
    f.set_deadline(d);
}

/// Polls the ring's recorded deadline until it is `want`, under the watchdog.
#[track_caller]
fn wait_for_deadline(ring: &VulkanRing, want: Option<Instant>) {
    let end = Instant::now() + WATCHDOG;
    while ring.earliest_deadline() != want {
        assert!(
            Instant::now() < end,
            "the ring recorded {:?}, not {want:?}",
            ring.earliest_deadline()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_deadline_on_a_submitted_jobs_finished_fence_is_recorded_by_its_ring() {
    let Some(dev) = device() else { return };
    let s = dev.ring(0, SchedulerConfig::new("deadline").timeout(WATCHDOG)).unwrap();
    let e = Entity::new(&[&s], Priority::Normal).unwrap();
    let d = dev.ash_device();
    // SAFETY: a valid device; the event is destroyed below, after the device idled.
    let event = unsafe { d.create_event(&vk::EventCreateInfo::default(), None) }.unwrap();
    let (b1, b2) = (dev.buffer(u64::from(N) * 4).unwrap(), dev.buffer(u64::from(N) * 4).unwrap());
    assert_eq!(s.backend().earliest_deadline(), None);

    let first = VulkanDevice::submit(&e, gated_fill_job(event, &b1, 1.0, N)).unwrap();
    let second = VulkanDevice::submit(&e, fill_job(&b2, 2.0, N)).unwrap();
    let now = Instant::now();
    let late = now + Duration::from_millis(40);
    let early = now + Duration::from_millis(10);
    set_in_section(&first, late);
    wait_for_deadline(s.backend(), Some(late));
    // The job behind the gate gets an earlier one: the ring keeps the earliest.
    set_in_section(&second, early);
    wait_for_deadline(s.backend(), Some(early));
    set_in_section(&first, now + Duration::from_millis(20));
    assert_eq!(s.backend().earliest_deadline(), Some(early), "a later hint is ignored");

    // SAFETY: a valid event of this device.
    unsafe { d.set_event(event) }.unwrap();
    wait_ok(&first);
    wait_ok(&second);
    wait_for_deadline(s.backend(), None);
    assert_eq!(b2.read_f32(WATCHDOG).unwrap()[0], 2.0);

    dev.wait_idle(WATCHDOG).unwrap();
    // SAFETY: no pending command buffer uses the event any more (the device idled).
    unsafe { d.destroy_event(event, None) };
    drop((e, s, b1, b2, first, second));
    assert_no_validation_errors();
    close(dev);
}
