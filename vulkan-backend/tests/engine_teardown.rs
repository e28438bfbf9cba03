//! Images, located buffers and render work leak nothing, whatever order their handles go
//! in: the live-device count returns to where it started. Alone in its test binary (its own
//! process): it compares the process-wide live-device count, which any other test creating a
//! device would change meanwhile under plain `cargo test`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ash::vk;
use common::engine::engine_vk::RawBuffer;
use common::{
    assert_no_validation_errors, close, device, wait_ended_or_cancelled, wait_live, wait_ok,
};
use gpusched::resv::Resv;
use gpusched::{Entity, Priority, SchedulerConfig};
use gpusched_vulkan::{
    Buffer, GenerationId, GpuResource, GraphicsBuiltin, Image, ImageDesc, Load, MemoryLocation,
    VulkanDevice, VulkanJob, VulkanRing,
};

/// An engine's own buffer (no reference to gpusched's device): its drop records how many
/// devices were alive then, to show its device was not destroyed before it.
struct EngineBuffer {
    raw: RawBuffer,
    resv: Resv,
    owner: GenerationId,
    live_at_drop: Arc<AtomicUsize>,
}

impl Drop for EngineBuffer {
    fn drop(&mut self) {
        // Its Vulkan objects (`raw`) go next: gpusched keeps this alive until the hardware
        // passed every job using it, and drops it before the device generation.
        self.live_at_drop.store(gpusched_vulkan::live_devices(), Ordering::SeqCst);
    }
}

impl GpuResource for EngineBuffer {
    fn resv(&self) -> &Resv {
        &self.resv
    }
    fn owner(&self) -> GenerationId {
        self.owner
    }
    fn keep_alive(&self) -> Arc<dyn GpuResource> {
        unreachable!("declared through its `Arc`, which is its own keep-alive handle")
    }
}

fn engine_buffer(dev: &VulkanDevice, live_at_drop: Arc<AtomicUsize>) -> Arc<EngineBuffer> {
    let first_type = |bits: u32| Some(bits.trailing_zeros());
    let usage = vk::BufferUsageFlags::TRANSFER_DST;
    let raw = RawBuffer::new(&dev.ash_device(), 256, usage, first_type, false).unwrap();
    let owner = dev.generation_id();
    Arc::new(EngineBuffer { raw, resv: Resv::new(), owner, live_at_drop })
}

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
    // Dropping the ring's scheduler cancels what is still on it (`drm_sched_fini`).
    for f in &fences {
        wait_ended_or_cancelled(f);
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

    // 4. An engine's own resource, whose last holder is a finished job on a ring: the device
    //    handle goes first, then the ring (its hardware ring, holding the retired job, may
    //    hold the last reference to the device generation): the resource still goes first.
    let Some(dev) = device() else { return };
    let ring = dev.ring(0, SchedulerConfig::new("r0")).unwrap();
    let entity = Entity::new(&[&ring], Priority::Normal).unwrap();
    let live_at_drop = Arc::new(AtomicUsize::new(usize::MAX));
    let eng = engine_buffer(&dev, live_at_drop.clone());
    let raw = eng.raw.buffer;
    let fill = VulkanJob::new(move |ctx, cb| {
        // SAFETY: `cb` is recording; the buffer is declared and has TRANSFER_DST.
        unsafe { ctx.device().cmd_fill_buffer(cb, raw, 0, 256, 5) };
        Ok(())
    })
    .writes(&eng);
    let done = VulkanDevice::submit(&entity, fill).unwrap();
    drop(eng);
    wait_ok(&done);
    drop((done, dev, entity, ring));
    wait_live(live);
    assert_eq!(live_at_drop.load(Ordering::SeqCst), live + 1, "dropped after its device");
    assert_no_validation_errors();
}
