//! gpusched inside an engine: the engine owns the Vulkan instance, the device and some of
//! its own memory (plain `ash` code below, as any engine has), and hands the device to
//! gpusched with [`VulkanDevice::adopt`], lending it its queue(s) under a shared
//! [`QueueLock`]. Two clients share the GPU:
//! - a *background compute* client (low priority): each frame it advances a simulation,
//!   `state += 1` over a device-local ([`MemoryLocation::GpuOnly`]) buffer;
//! - a *render* client (high priority): each frame it clears an image and draws a triangle
//!   (`RecordCtx::render`, dynamic rendering), in colours that depend on the frame, and copies
//!   the simulation's first value into a buffer the *engine* made (wrapped as a
//!   [`GpuResource`], so implicit synchronisation covers it like gpusched's own buffers).
//!
//! No dependency is spelled out: the jobs declare what they read and write and gpusched
//! orders them through the resources' reservation objects. Each frame the engine reads the
//! image back ([`VulkanDevice::read_image_rgba8`], on the compute client: ordered after the
//! render by the image) and checks its pixels, checks the value in its own buffer, and
//! "presents" (an empty submission of its own on the lent queue, under the queue lock). At
//! the end it downloads the simulation ([`VulkanDevice::download`]) and checks it, writes
//! the last frame as a PNG (`--out FILE`), closes gpusched, and destroys its device itself.
//!
//! Run: `cargo run -p gpusched-vulkan --example engine -- [--frames N] [--out frame.png]`
//! (`GPUSCHED_VALIDATION=1` puts the Khronos validation layer on the engine's instance).
//! It exits non-zero on a wrong pixel or value, a validation error, or a checker report.

mod engine_vk;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use engine_vk::{
    create_instance, destroy_instance, validation_errors, EngineBuffer, Messenger, RawBuffer, Res,
};
use gpusched::fence::lockdep;
use gpusched::{Priority, SchedulerConfig};
use gpusched_vulkan::ash::{self, vk};
use gpusched_vulkan::{
    AdoptedDevice, Buffer, Builtin, EnabledFeatures, GenerationId, Image, ImageDesc, LentQueue,
    Load, MemoryLocation, QueueCaps, QueueLock, VulkanDevice, VulkanJob, VulkanRing,
};

/// Floats in the simulation.
const N: u32 = 4096;
/// The image size.
const W: u32 = 64;
const H: u32 = 48;
/// A deadlock watchdog for every wait, not a speed target.
const WATCHDOG: Duration = Duration::from_secs(60);

/// The engine's own Vulkan objects.
struct Engine {
    entry: ash::Entry,
    instance: ash::Instance,
    messenger: Option<Messenger>,
    physical: vk::PhysicalDevice,
    family: u32,
    /// How many queues of `family` the device has (and lends).
    queues: u32,
    device: ash::Device,
    queue: vk::Queue,
    /// Taken by the engine for every call on its queue 0, and by gpusched's rings on it.
    queue_lock: Arc<QueueLock>,
    enabled: EnabledFeatures,
    validation: bool,
}

impl Engine {
    fn new(validation: bool) -> Res<Engine> {
        // SAFETY: loading the system Vulkan loader.
        let entry = unsafe { ash::Entry::load() }?;
        let (instance, messenger) =
            create_instance(&entry, c"gpusched engine example", validation)?;
        // The first device with a graphics + compute family and Vulkan 1.3's dynamic
        // rendering (lavapipe qualifies).
        // SAFETY: a live instance.
        let physicals = unsafe { instance.enumerate_physical_devices() }?;
        let mut chosen = None;
        for p in physicals {
            // SAFETY: a physical device of the enumeration.
            let props = unsafe { instance.get_physical_device_properties(p) };
            // SAFETY: as above.
            let families = unsafe { instance.get_physical_device_queue_family_properties(p) };
            let gc = vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE;
            let family = families.iter().position(|f| f.queue_flags.contains(gc));
            if let (Some(f), true) = (family, props.api_version >= vk::API_VERSION_1_3) {
                chosen = Some((p, f as u32, families[f].queue_count.min(2)));
                break;
            }
        }
        let Some((physical, family, queues)) = chosen else {
            return Err("no Vulkan 1.3 device with a graphics and compute queue".into());
        };
        let priorities = [1.0f32; 2];
        let qinfo = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(family)
            .queue_priorities(&priorities[..queues as usize])];
        let dexts = [ash::khr::push_descriptor::NAME.as_ptr()];
        let mut f12 = vk::PhysicalDeviceVulkan12Features::default().timeline_semaphore(true);
        let mut f13 = vk::PhysicalDeviceVulkan13Features::default()
            .synchronization2(true)
            .dynamic_rendering(true);
        let dinfo = vk::DeviceCreateInfo::default()
            .queue_create_infos(&qinfo)
            .enabled_extension_names(&dexts)
            .push_next(&mut f12)
            .push_next(&mut f13);
        // SAFETY: the create info and its chain live across the call.
        let device = unsafe { instance.create_device(physical, &dinfo, None) }?;
        // SAFETY: queue 0 of the family was created with the device.
        let queue = unsafe { device.get_device_queue(family, 0) };
        let enabled = EnabledFeatures {
            timeline_semaphore: true,
            push_descriptor: true,
            synchronization2: true,
            dynamic_rendering: true,
        };
        let queue_lock = Arc::new(QueueLock::new());
        Ok(Engine {
            entry,
            instance,
            messenger,
            physical,
            family,
            queues,
            device,
            queue,
            queue_lock,
            enabled,
            validation,
        })
    }

    /// What the engine lends gpusched: its device and every queue it made, queue 0 under
    /// the lock the engine uses too.
    fn lend(&self) -> AdoptedDevice {
        let queues = (0..self.queues)
            .map(|index| LentQueue {
                family: self.family,
                index,
                lock: if index == 0 { self.queue_lock.clone() } else { Arc::new(QueueLock::new()) },
            })
            .collect();
        AdoptedDevice {
            entry: self.entry.clone(),
            instance: self.instance.clone(),
            physical: self.physical,
            device: self.device.clone(),
            queues,
            enabled: self.enabled,
            validation: self.validation,
            on_release: None,
        }
    }

    /// Stands in for `vkQueuePresentKHR`: the engine's own submission on the shared queue,
    /// under the queue lock, then waited for (outside the lock).
    fn present(&self) -> Res<()> {
        // SAFETY: the engine's device; the fence is waited for before it is destroyed; the
        // queue is used under its lock only.
        unsafe {
            let fence = self.device.create_fence(&vk::FenceCreateInfo::default(), None)?;
            let submitted = {
                let _q = self.queue_lock.lock();
                self.device.queue_submit(self.queue, &[vk::SubmitInfo::default()], fence)
            };
            let waited = submitted.and_then(|()| {
                self.device.wait_for_fences(&[fence], true, WATCHDOG.as_nanos() as u64)
            });
            self.device.destroy_fence(fence, None);
            waited?;
        }
        Ok(())
    }

    /// A host-visible, coherent buffer of the engine's own, mapped.
    fn host_buffer(&self, size: u64, owner: GenerationId) -> Res<EngineBuffer> {
        // SAFETY: a valid physical device of the instance.
        let mem = unsafe { self.instance.get_physical_device_memory_properties(self.physical) };
        let want = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let host_visible = |bits: u32| {
            (0..mem.memory_type_count).find(|&i| {
                bits & (1 << i) != 0 && mem.memory_types[i as usize].property_flags.contains(want)
            })
        };
        let usage = vk::BufferUsageFlags::TRANSFER_DST | vk::BufferUsageFlags::STORAGE_BUFFER;
        let raw = RawBuffer::new(&self.device, size, usage, host_visible, true)?;
        Ok(EngineBuffer::new(raw, owner))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: gpusched was closed and every object of the engine's own is gone: the
        // engine destroys its device and instance itself.
        unsafe {
            let _ = self.device.device_wait_idle();
            self.device.destroy_device(None);
            destroy_instance(&self.instance, self.messenger.take());
        }
    }
}

/// `state += 1`: SAXPY with `a = 1` over a buffer of ones.
fn simulate(ones: &Buffer, state: &Buffer) -> VulkanJob {
    let (x, y) = (ones.clone(), state.clone());
    VulkanJob::new(move |ctx, cb| {
        let k = ctx.builtin(Builtin::Saxpy);
        let push = [1.0f32.to_ne_bytes(), N.to_ne_bytes()].concat();
        ctx.dispatch(cb, &k, &[&x, &y], &push, [N.div_ceil(64), 1, 1])
    })
    .reads(ones)
    .writes(state)
}

/// The colours of frame `frame`: (clear, triangle), exact in 8-bit UNORM.
fn colours(frame: u32) -> ([f32; 4], [f32; 4]) {
    let k = (frame * 37 + 40) % 256;
    let c = |v: u32| v as f32 / 255.0;
    ([0.0, c(255 - k), c(k), 1.0], [c(255 - k), c(k), 0.0, 1.0])
}

fn to_rgba8(c: [f32; 4]) -> [u8; 4] {
    c.map(|v| (v * 255.0).round() as u8)
}

/// Clear, draw the triangle, and copy the simulation's first value into the engine's buffer.
fn render(image: &Image, state: &Buffer, probe: &EngineBuffer, frame: u32) -> VulkanJob {
    let (target, src, dst) = (image.clone(), state.clone(), probe.raw().buffer);
    let (clear, tri) = colours(frame);
    VulkanJob::new(move |ctx, cb| {
        ctx.render(cb, &target, Load::Clear(clear), |pass| {
            pass.draw_builtin(gpusched_vulkan::GraphicsBuiltin::Triangle, tri)
        })?;
        let region = [vk::BufferCopy::default().size(4)];
        // SAFETY: `cb` is recording; both buffers are declared by the job (so alive and
        // ordered), large enough, with transfer usage.
        unsafe { ctx.device().cmd_copy_buffer(cb, src.raw(), dst, &region) };
        Ok(())
    })
    .writes(image)
    .reads(state)
    .writes(probe)
}

/// Checks frame `frame`'s pixels: the triangle's colour at the centre, the clear colour in
/// the corners.
fn check_frame(pixels: &[u8], frame: u32) -> Result<(), String> {
    let (clear, tri) = colours(frame);
    let at = |x: u32, y: u32| {
        let i = ((y * W + x) * 4) as usize;
        [pixels[i], pixels[i + 1], pixels[i + 2], pixels[i + 3]]
    };
    let checks = [
        ((W / 2, H / 2), to_rgba8(tri)),
        ((0, 0), to_rgba8(clear)),
        ((W - 1, 0), to_rgba8(clear)),
        ((0, H - 1), to_rgba8(clear)),
    ];
    for ((x, y), want) in checks {
        if at(x, y) != want {
            return Err(format!(
                "frame {frame}: pixel ({x}, {y}) is {:?}, want {want:?}",
                at(x, y)
            ));
        }
    }
    Ok(())
}

struct Args {
    frames: u32,
    out: Option<String>,
}

fn args() -> Res<Args> {
    let mut a = Args { frames: 8, out: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--frames" => {
                let v = it.next().ok_or("--frames needs a number")?;
                a.frames = v.parse().map_err(|_| format!("--frames: not a number: {v}"))?;
                if a.frames == 0 {
                    return Err("--frames must be at least 1".into());
                }
            }
            "--out" => a.out = Some(it.next().ok_or("--out needs a file name")?),
            "-h" | "--help" => {
                println!("engine [--frames N] [--out FILE.png]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    Ok(a)
}

fn write_png(path: &str, pixels: &[u8]) -> Res<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut enc = png::Encoder::new(file, W, H);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(pixels)?;
    Ok(())
}

/// The frames, on gpusched over the engine's device.
fn run(engine: &Engine, dev: &VulkanDevice, a: &Args) -> Res<()> {
    if !dev.supports_graphics() {
        return Err("the adopted device cannot do graphics work".into());
    }
    // Rings on the lent queues: the render ring on queue 0 (the one the engine presents on),
    // the compute ring on the second lent queue where there is one.
    let gfx = dev.ring(0, SchedulerConfig::new("render"))?;
    let compute = dev.ring(dev.queue_count() - 1, SchedulerConfig::new("compute"))?;
    let rings: [&gpusched::Scheduler<VulkanRing>; 2] = [&compute, &gfx];
    let background = VulkanDevice::entity(&rings[..1], Priority::Low, QueueCaps::COMPUTE)?;
    let renderer = VulkanDevice::entity(&rings[1..], Priority::High, QueueCaps::GRAPHICS)?;

    let ones = dev.buffer_in(u64::from(N) * 4, MemoryLocation::GpuOnly)?;
    let state = dev.buffer_in(u64::from(N) * 4, MemoryLocation::GpuOnly)?;
    let one: Vec<u8> = (0..N).flat_map(|_| 1.0f32.to_ne_bytes()).collect();
    let zero = vec![0u8; N as usize * 4];
    dev.upload(&background, &ones, 0, &one)?;
    dev.upload(&background, &state, 0, &zero)?;
    let image = dev.image(ImageDesc::new(vk::Format::R8G8B8A8_UNORM, W, H))?;
    let probe = engine.host_buffer(16, dev.generation_id())?;

    let mut last = Vec::new();
    for frame in 0..a.frames {
        VulkanDevice::submit(&background, simulate(&ones, &state))?;
        let drawn = VulkanDevice::submit(&renderer, render(&image, &state, &probe, frame))?;
        let pixels = dev.read_image_rgba8(&background, &image, WATCHDOG)?;
        check_frame(&pixels, frame)?;
        drawn.wait_timeout(WATCHDOG)?;
        let want = (frame + 1) as f32;
        let held = probe.raw().first_f32().ok_or("the engine's buffer is not mapped")?;
        if held != want {
            return Err(
                format!("frame {frame}: the engine's buffer holds {held}, want {want}").into()
            );
        }
        engine.present()?;
        last = pixels;
    }
    let sim = dev.download(&renderer, &state)?.wait(WATCHDOG)?;
    let want = a.frames as f32;
    if let Some((i, v)) = sim
        .chunks_exact(4)
        .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .enumerate()
        .find(|(_, v)| *v != want)
    {
        return Err(format!("simulation value {i} is {v}, want {want}").into());
    }
    if let Some(path) = &a.out {
        write_png(path, &last)?;
        println!("wrote the last frame to {path}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = (|| -> Res<()> {
        let a = args()?;
        let validation = std::env::var("GPUSCHED_VALIDATION").is_ok_and(|v| v == "1");
        let engine = Engine::new(validation)?;
        // SAFETY: the engine created the device with the stated features and every lent
        // queue, keeps it until gpusched is closed below, and uses queue 0 only under the
        // lent lock.
        let dev = unsafe { VulkanDevice::adopt(engine.lend(), None) }?;
        let outcome = run(&engine, &dev, &a);
        if dev.close(WATCHDOG).is_err() {
            return Err("gpusched still referenced at close".into());
        }
        // gpusched destroyed everything it made; the engine still uses its device, then
        // destroys it (`Engine`'s drop).
        engine.present()?;
        drop(engine);
        outcome?;
        println!("engine: {} frames rendered and checked on the engine's device", a.frames);
        Ok(())
    })();
    let validation = validation_errors();
    let checker = lockdep::violations();
    match result {
        Ok(()) if validation == 0 && checker == 0 => ExitCode::SUCCESS,
        Ok(()) => {
            eprintln!("FAILED: {validation} validation errors, {checker} checker reports");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
