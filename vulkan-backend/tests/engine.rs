//! Embedding in an engine: an engine-owned resource ordered through the `GpuResource` trait
//! across rings and kept alive by its jobs, device-local buffers through staging copies,
//! memory locations, rendering into an image and reading it back, and typed errors for bad
//! input (another device's resources, images the device cannot make).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ash::vk;
use common::engine::engine_vk::{EngineBuffer, RawBuffer};
use common::{assert_no_validation_errors, close, device, wait_ok, WATCHDOG};
use gpusched::resv::Usage;
use gpusched::{Entity, Priority, SchedulerConfig};
use gpusched_vulkan::{
    Buffer, GpuResource, GraphicsBuiltin, HostAccessError, ImageDesc, ImageError, Load,
    MemoryLocation, RecordError, SubmitError, TransferError, VulkanDevice, VulkanJob,
};

/// An engine's own buffer (the engine example's), on the first memory type it accepts, and
/// the flag set once its Vulkan objects are destroyed.
fn engine_buffer(dev: &VulkanDevice, size: u64) -> (EngineBuffer, Arc<AtomicBool>) {
    let usage = vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST;
    let first_type = |bits: u32| Some(bits.trailing_zeros());
    let destroyed = Arc::new(AtomicBool::new(false));
    let flag = destroyed.clone();
    let raw = RawBuffer::new(&dev.ash_device(), size, usage, first_type, false)
        .unwrap()
        .on_destroy(move || flag.store(true, Ordering::SeqCst));
    (EngineBuffer::new(raw, dev.generation_id()), destroyed)
}

/// A job that fills the engine buffer with the 32-bit `value`.
fn engine_fill(e: &EngineBuffer, value: u32) -> VulkanJob {
    let (raw, size) = (e.raw().buffer, e.raw().size);
    VulkanJob::new(move |ctx, cb| {
        // SAFETY: `cb` is recording; the buffer is declared (kept alive) and has TRANSFER_DST.
        unsafe { ctx.device().cmd_fill_buffer(cb, raw, 0, size, value) };
        Ok(())
    })
    .writes(e)
}

/// A job that copies the engine buffer into `dst`.
fn engine_copy_out(e: &EngineBuffer, dst: &Buffer) -> VulkanJob {
    let (raw, size, d) = (e.raw().buffer, e.raw().size, dst.clone());
    VulkanJob::new(move |ctx, cb| {
        let region = [vk::BufferCopy { src_offset: 0, dst_offset: 0, size }];
        // SAFETY: `cb` is recording; both buffers belong to this device and are declared.
        unsafe { ctx.device().cmd_copy_buffer(cb, raw, d.raw(), &region) };
        Ok(())
    })
    .reads(e as &dyn GpuResource)
    .writes(dst)
}

#[test]
fn engine_resource_is_ordered_across_rings_and_kept_alive() {
    let Some(dev) = device() else { return };
    let r0 = dev.ring(0, SchedulerConfig::new("r0")).unwrap();
    let r1 = dev.ring(0, SchedulerConfig::new("r1")).unwrap();
    let e0 = Entity::new(&[&r0], Priority::Normal).unwrap();
    let e1 = Entity::new(&[&r1], Priority::Normal).unwrap();
    let (eng, destroyed) = engine_buffer(&dev, 4096);
    let first = dev.buffer(4096).unwrap();
    let second = dev.buffer(4096).unwrap();

    // Write (ring 0), read (ring 1), write (ring 0), read (ring 1). The first write is armed
    // but pushed only after the read was submitted: only the engine buffer's `Resv` can hold
    // the read back until the write ran (without it, the read would copy zeros).
    let w1 = VulkanDevice::arm(&e0, engine_fill(&eng, 0x1111_1111)).unwrap();
    let r1_done = VulkanDevice::submit(&e1, engine_copy_out(&eng, &first)).unwrap();
    // The armed writer's fence is in the engine buffer's `Resv`, the reader's too.
    assert_eq!(eng.resv().iter_unlocked(Usage::Write).count(), 1);
    assert_eq!(eng.resv().iter_unlocked(Usage::Read).count(), 2);
    let w2 = engine_fill(&eng, 0x2222_2222);
    let r2 = engine_copy_out(&eng, &second);
    // The engine drops its handle while jobs that use it are pending: they keep it alive.
    drop(eng);
    assert!(!destroyed.load(Ordering::SeqCst), "destroyed under a pending job");
    assert!(!r1_done.is_signaled(), "the read ran before the write it depends on");
    let w1_done = w1.finished().clone();
    w1.push();
    let w2_done = VulkanDevice::submit(&e0, w2).unwrap();
    let r2_done = VulkanDevice::submit(&e1, r2).unwrap();
    for f in [&w1_done, &r1_done, &w2_done, &r2_done] {
        wait_ok(f);
    }
    assert!(first.read_u32(WATCHDOG).unwrap().iter().all(|v| *v == 0x1111_1111));
    assert!(second.read_u32(WATCHDOG).unwrap().iter().all(|v| *v == 0x2222_2222));
    drop((e0, e1, r0, r1, first, second));
    // Closing the device waits for the rings to go, and their retired jobs with them: the
    // engine's buffer was destroyed, after its last job, before the device.
    close(dev);
    assert!(destroyed.load(Ordering::SeqCst), "never destroyed");
    assert_no_validation_errors();
}

#[test]
fn device_local_buffers_round_trip_through_staging() {
    let Some(dev) = device() else { return };
    let ring = dev.ring(0, SchedulerConfig::new("r0")).unwrap();
    let e = Entity::new(&[&ring], Priority::Normal).unwrap();
    let n = 4096u32;
    let x = dev.buffer_in(u64::from(n) * 4, MemoryLocation::GpuOnly).unwrap();
    let y = dev.buffer_in(u64::from(n) * 4, MemoryLocation::GpuOnly).unwrap();
    for b in [&x, &y] {
        assert_eq!(b.location(), MemoryLocation::GpuOnly);
        assert!(b.memory_properties().contains(vk::MemoryPropertyFlags::DEVICE_LOCAL));
    }
    let xs: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_ne_bytes()).collect();
    let ys: Vec<u8> = (0..n).flat_map(|_| 1.0f32.to_ne_bytes()).collect();
    dev.upload(&e, &x, 0, &xs).unwrap();
    dev.upload(&e, &y, 0, &ys).unwrap();
    // y = 2x + y on the GPU, ordered after both uploads by the buffers' `Resv`s.
    let (xb, yb) = (x.clone(), y.clone());
    let saxpy = VulkanJob::new(move |ctx, cb| {
        let k = ctx.builtin(gpusched_vulkan::Builtin::Saxpy);
        let push = [2.0f32.to_ne_bytes(), n.to_ne_bytes()].concat();
        ctx.dispatch(cb, &k, &[&xb, &yb], &push, [n / 64, 1, 1])
    })
    .reads(&x)
    .writes(&y);
    VulkanDevice::submit(&e, saxpy).unwrap();
    let back = dev.download(&e, &y).unwrap().wait(WATCHDOG).unwrap();
    let got: Vec<f32> =
        back.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect();
    let want: Vec<f32> = (0..n).map(|i| 2.0 * i as f32 + 1.0).collect();
    assert_eq!(got, want);
    // A partial upload at an offset, read back whole.
    dev.upload(&e, &x, 8, &[7u8; 8]).unwrap();
    let back = dev.download(&e, &x).unwrap().wait(WATCHDOG).unwrap();
    assert_eq!(&back[..8], &xs[..8]);
    assert_eq!(&back[8..16], &[7u8; 8]);
    assert_eq!(&back[16..], &xs[16..]);
    // Out of range and empty uploads are typed errors.
    let bad = dev.upload(&e, &x, u64::from(n) * 4 - 4, &[0u8; 8]);
    assert!(matches!(bad, Err(TransferError::OutOfRange { .. })), "{bad:?}");
    assert!(matches!(dev.upload(&e, &x, 0, &[]), Err(TransferError::OutOfRange { .. })));
    // The host cannot map a GpuOnly buffer, nor reach outside a mapped one: typed errors.
    assert_eq!(x.read_bytes(0, 4, WATCHDOG), Err(HostAccessError::NotMapped));
    assert_eq!(x.write_f32(&[1.0], WATCHDOG), Err(HostAccessError::NotMapped));
    let host = dev.buffer(16).unwrap();
    let past = host.read_bytes(12, 8, WATCHDOG);
    assert_eq!(past, Err(HostAccessError::OutOfRange { offset: 12, len: 8, size: 16 }));
    let wrap = host.write_bytes(u64::MAX, &[0; 2], WATCHDOG);
    assert!(matches!(wrap, Err(HostAccessError::OutOfRange { .. })), "{wrap:?}");
    drop(host);
    drop((e, ring, x, y));
    assert_no_validation_errors();
    close(dev);
}

#[test]
fn memory_locations_pick_matching_memory_types() {
    let Some(dev) = device() else { return };
    let host = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
    let up = dev.buffer_in(1024, MemoryLocation::Upload).unwrap();
    assert!(up.memory_properties().contains(host), "{:?}", up.memory_properties());
    let rb = dev.buffer_in(1024, MemoryLocation::Readback).unwrap();
    assert!(rb.memory_properties().contains(host), "{:?}", rb.memory_properties());
    let legacy = dev.buffer(1024).unwrap();
    assert_eq!(legacy.location(), MemoryLocation::Upload);
    assert!(legacy.memory_properties().contains(host));
    // Host-visible locations are written and read directly.
    up.write_bytes(0, &[1, 2, 3, 4], WATCHDOG).unwrap();
    assert_eq!(up.read_bytes(0, 4, WATCHDOG).unwrap(), vec![1, 2, 3, 4]);
    assert!(dev.buffer_in(0, MemoryLocation::GpuOnly).is_err());
    drop((up, rb, legacy));
    close(dev);
}

/// The rgba8 texel at (x, y) of a `w`-wide image.
fn texel(px: &[u8], w: u32, x: u32, y: u32) -> [u8; 4] {
    let i = ((y * w + x) * 4) as usize;
    [px[i], px[i + 1], px[i + 2], px[i + 3]]
}

#[test]
fn render_job_draws_the_triangle_over_the_clear_colour() {
    let Some(dev) = device() else { return };
    if !dev.supports_graphics() {
        eprintln!("SKIPPED: the device cannot record graphics work");
        return;
    }
    let ring = dev.ring(0, SchedulerConfig::new("r0")).unwrap();
    let ring1 = dev.ring(0, SchedulerConfig::new("r1")).unwrap();
    let e = Entity::new(&[&ring], Priority::Normal).unwrap();
    let e1 = Entity::new(&[&ring1], Priority::Normal).unwrap();
    let (w, h) = (64, 48);
    let image = dev.image(ImageDesc::new(vk::Format::R8G8B8A8_UNORM, w, h)).unwrap();
    assert!(image.memory_properties().contains(vk::MemoryPropertyFlags::DEVICE_LOCAL));
    let img = image.clone();
    let render = VulkanJob::new(move |ctx, cb| {
        ctx.render(cb, &img, Load::Clear([0.0, 0.0, 1.0, 1.0]), |pass| {
            pass.draw_builtin(GraphicsBuiltin::Triangle, [1.0, 0.0, 0.0, 1.0])
        })
    })
    .writes(&image);
    VulkanDevice::submit(&e, render).unwrap();
    // Read back from another ring: ordered after the render by the image's `Resv`.
    let px = dev.read_image_rgba8(&e1, &image, WATCHDOG).unwrap();
    assert_eq!(px.len(), (w * h * 4) as usize);
    let (red, blue) = ([255, 0, 0, 255], [0, 0, 255, 255]);
    assert_eq!(texel(&px, w, w / 2, h / 2), red, "centre");
    assert_eq!(texel(&px, w, w / 2, h * 3 / 4 - 2), red, "near the base");
    for (x, y) in [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w / 2, 2)] {
        assert_eq!(texel(&px, w, x, y), blue, "({x}, {y}) is outside the triangle");
    }
    // A second pass keeps the contents and draws a green triangle over the red one.
    let img = image.clone();
    let keep = VulkanJob::new(move |ctx, cb| {
        ctx.render(cb, &img, Load::Keep, |pass| {
            pass.draw_builtin(GraphicsBuiltin::Triangle, [0.0, 1.0, 0.0, 1.0])
        })
    })
    .writes(&image);
    VulkanDevice::submit(&e1, keep).unwrap();
    let px = dev.read_image_rgba8(&e, &image, WATCHDOG).unwrap();
    assert_eq!(texel(&px, w, w / 2, h / 2), [0, 255, 0, 255]);
    assert_eq!(texel(&px, w, 0, 0), blue);
    drop((e, e1, ring, ring1, image));
    assert_no_validation_errors();
    close(dev);
}

#[test]
fn bad_images_are_typed_errors() {
    let Some(dev) = device() else { return };
    let f = vk::Format::R8G8B8A8_UNORM;
    let zero = dev.image(ImageDesc::new(f, 0, 16));
    assert!(matches!(zero, Err(ImageError::ZeroExtent { width: 0, .. })), "{zero:?}");
    let no_mips = dev.image(ImageDesc::new(f, 16, 16).mip_levels(0));
    assert!(matches!(no_mips, Err(ImageError::ZeroExtent { mip_levels: 0, .. })));
    // 16x16 has 5 levels (16, 8, 4, 2, 1).
    assert!(dev.image(ImageDesc::new(f, 16, 16).mip_levels(5)).is_ok());
    let mips = dev.image(ImageDesc::new(f, 16, 16).mip_levels(6));
    assert_eq!(mips.unwrap_err(), ImageError::TooManyMips { requested: 6, max: 5 });
    // A compressed format cannot be rendered into.
    let bc1 = dev.image(ImageDesc::new(vk::Format::BC1_RGB_UNORM_BLOCK, 16, 16));
    assert!(bc1.as_ref().is_err_and(ImageError::is_unsupported_format), "{bc1:?}");
    let empty = dev.image(ImageDesc::new(f, 16, 16).usage(vk::ImageUsageFlags::empty()));
    assert!(empty.is_err_and(|e| e.is_unsupported_format()));
    let huge = dev.image(ImageDesc::new(f, 1 << 20, 4));
    assert!(matches!(huge, Err(ImageError::TooLarge { .. })), "{huge:?}");

    // Rendering into an image made without COLOR_ATTACHMENT usage.
    let ring = dev.ring(0, SchedulerConfig::new("r0")).unwrap();
    let e = Entity::new(&[&ring], Priority::Normal).unwrap();
    let sampled =
        dev.image(ImageDesc::new(f, 8, 8).usage(vk::ImageUsageFlags::TRANSFER_DST)).unwrap();
    let s = sampled.clone();
    let job = VulkanJob::new(move |ctx, cb| ctx.render(cb, &s, Load::Clear([0.0; 4]), |_| Ok(())))
        .writes(&sampled);
    match VulkanDevice::submit(&e, job) {
        Err(SubmitError::Record(RecordError::Image { image, .. })) => {
            assert_eq!(image, sampled.id())
        }
        Err(SubmitError::Record(RecordError::GraphicsUnsupported)) if !dev.supports_graphics() => {}
        other => panic!("expected RecordError::Image, got {other:?}"),
    }
    // An image without TRANSFER_SRC cannot be read back; a BGRA-less odd format neither.
    let r = dev.download_image(&e, &sampled);
    assert!(matches!(r, Err(TransferError::Image { .. })), "{r:?}");
    assert!(sampled.resv().iter_unlocked(Usage::Read).next().is_none(), "no fence added");
    drop((e, ring, sampled));
    assert_no_validation_errors();
    close(dev);
}

#[test]
fn resources_of_another_device_are_refused_without_losing_a_fence() {
    let Some(dev) = device() else { return };
    let other = dev.sibling().unwrap();
    let ring = dev.ring(0, SchedulerConfig::new("r0")).unwrap();
    let e = Entity::new(&[&ring], Priority::Normal).unwrap();
    // An image and an engine buffer of the other device.
    let image = other.image(ImageDesc::new(vk::Format::R8G8B8A8_UNORM, 8, 8)).unwrap();
    let (eng, _) = engine_buffer(&other, 256);
    let img = image.clone();
    let job =
        VulkanJob::new(move |ctx, cb| ctx.render(cb, &img, Load::Clear([0.0; 4]), |_| Ok(())))
            .writes(&image);
    let r = VulkanDevice::submit(&e, job);
    assert!(r.as_ref().is_err_and(SubmitError::is_wrong_device), "{r:?}");
    let r = VulkanDevice::submit(&e, engine_fill(&eng, 1));
    assert!(r.as_ref().is_err_and(SubmitError::is_wrong_device), "{r:?}");
    let r = dev.read_image_rgba8(&e, &image, WATCHDOG);
    assert!(matches!(&r, Err(TransferError::Submit(s)) if s.is_wrong_device()), "{r:?}");
    // A GPU-only buffer of the other device cannot be uploaded to from this one's entity.
    let theirs = other.buffer_in(64, MemoryLocation::GpuOnly).unwrap();
    let r = dev.upload(&e, &theirs, 0, &[1; 64]);
    assert!(matches!(&r, Err(TransferError::Submit(s)) if s.is_wrong_device()), "{r:?}");
    // Nothing was armed: no fence in any of their reservation objects, none on the ring.
    for res in [&image as &dyn GpuResource, &eng, &theirs] {
        assert!(res.resv().iter_unlocked(Usage::Read).next().is_none());
    }
    assert_eq!(e.stats().armed, 0);
    // The ring still works.
    let mine = dev.buffer(64).unwrap();
    wait_ok(&dev.upload(&e, &mine, 0, &[3; 64]).unwrap());
    assert_eq!(mine.read_bytes(0, 64, WATCHDOG).unwrap(), vec![3; 64]);
    drop((e, ring, image, eng, theirs, mine));
    assert_no_validation_errors();
    close(other);
    close(dev);
}
