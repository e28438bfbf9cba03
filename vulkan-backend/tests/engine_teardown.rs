//! Images, located buffers and render work leak nothing, whatever order their handles go
//! in: the live-device count returns to where it started. Alone in its test binary (its own
//! process): it compares the process-wide live-device count, which any other test creating a
//! device would change meanwhile under plain `cargo test`.

mod common;

use ash::vk;
use common::{assert_no_validation_errors, close, device, wait_ok, WATCHDOG};
use gpusched::{Entity, Priority, SchedulerConfig};
use gpusched_vulkan::{
    Buffer, GraphicsBuiltin, Image, ImageDesc, Load, MemoryLocation, VulkanDevice, VulkanJob,
    VulkanRing,
};

/// A device, a ring, an entity, a GPU-only buffer and an image, with a render job and an
/// upload submitted (and, with `wait`, finished).
struct World {
    dev: VulkanDevice,
    ring: gpusched::Scheduler<VulkanRing>,
    entity: Entity<VulkanRing>,
    buffer: Buffer,
    image: Image,
    fences: Vec<gpusched::fence::Fence>,
}

fn world() -> Option<World> {
    let dev = device()?;
    let ring = dev.ring(0, SchedulerConfig::new("r0")).unwrap();
    let entity = Entity::new(&[&ring], Priority::Normal).unwrap();
    let buffer = dev.buffer_in(1 << 16, MemoryLocation::GpuOnly).unwrap();
    let image = dev.image(ImageDesc::new(vk::Format::R8G8B8A8_UNORM, 32, 32)).unwrap();
    let mut fences = vec![dev.upload(&entity, &buffer, 0, &[9; 1 << 16]).unwrap()];
    if dev.supports_graphics() {
        let img = image.clone();
        let render = VulkanJob::new(move |ctx, cb| {
            ctx.render(cb, &img, Load::Clear([0.0, 0.0, 0.0, 1.0]), |pass| {
                pass.draw_builtin(GraphicsBuiltin::Triangle, [1.0; 4])
            })
        })
        .writes(&image);
        fences.push(VulkanDevice::submit(&entity, render).unwrap());
    }
    Some(World { dev, ring, entity, buffer, image, fences })
}

#[track_caller]
fn wait_live(live: usize) {
    let deadline = std::time::Instant::now() + WATCHDOG;
    while gpusched_vulkan::live_devices() > live {
        assert!(std::time::Instant::now() < deadline, "a device was never destroyed");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(gpusched_vulkan::live_devices(), live);
}

#[test]
fn every_drop_order_destroys_the_device() {
    let live = gpusched_vulkan::live_devices();

    // 1. The device handle first, with the work still outstanding; then the image, the
    //    ring, the entity, the buffer, the fences.
    let Some(w) = world() else { return };
    let World { dev, ring, entity, buffer, image, fences } = w;
    drop(dev);
    drop(image);
    drop(ring);
    drop(entity);
    drop(buffer);
    for f in &fences {
        wait_ok(f);
    }
    drop(fences);
    wait_live(live);

    // 2. Every handle but an image and a GPU-only buffer (they keep the device generation,
    //    and its memory allocator, alive), then those: the last one destroys the device.
    let Some(w) = world() else { return };
    let World { dev, ring, entity, buffer, image, fences } = w;
    for f in &fences {
        wait_ok(f);
    }
    drop((fences, entity, ring, dev));
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(gpusched_vulkan::live_devices(), live + 1, "the image and buffer hold it");
    drop(buffer);
    drop(image);
    wait_live(live);

    // 3. The resources first (jobs still hold them), then entity, ring and device.
    let Some(w) = world() else { return };
    let World { dev, ring, entity, buffer, image, fences } = w;
    drop((image, buffer));
    for f in &fences {
        wait_ok(f);
    }
    drop((fences, entity, ring));
    close(dev);
    wait_live(live);
    assert_no_validation_errors();
}
