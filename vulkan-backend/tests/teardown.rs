//! Device teardown after the last handle: a device whose every handle went while its work ran
//! is destroyed later, by whoever drops the last reference. Alone in its test binary (its own
//! process): it compares the process-wide live-device count, which any other test creating a
//! device would change meanwhile under plain `cargo test`.

mod common;

use common::{
    assert_no_validation_errors, device, slow_fill_job, wait_ended_or_cancelled, wait_live,
};
use gpusched::{Entity, Priority, SchedulerConfig};
use gpusched_vulkan::VulkanDevice;

#[test]
fn dropping_every_handle_with_work_outstanding_destroys_the_device_later() {
    let live = gpusched_vulkan::live_devices();
    let Some(dev) = device() else { return };
    let ring = dev.ring(0, SchedulerConfig::new("r0")).unwrap();
    let e = Entity::new(&[&ring], Priority::Normal).unwrap();
    let buf = dev.buffer(4096).unwrap();
    let done = VulkanDevice::submit(&e, slow_fill_job(&buf)).unwrap();
    // Every handle goes while the job runs, the device's too: the last reference is the
    // job's, dropped once it finished, wherever that happens. Dropping the ring's scheduler
    // cancels the job on the ring (`drm_sched_fini`): it ends `Cancelled`, or `Ok` if the
    // hardware finished it first; either way the device goes once the hardware is done.
    drop((e, ring, buf, dev));
    wait_ended_or_cancelled(&done);
    drop(done);
    wait_live(live);
    assert_no_validation_errors();
}
