//! A windowed frame loop: a winit window, its swapchain, and two clients of the scheduler.
//!
//! - A *render* client at high priority draws the built-in triangle (its colour animated
//!   through the push constant) into the presenter's offscreen image; the render job copies
//!   it into the acquired swapchain image, and the [`Presenter`] presents it once the job is
//!   on the queue (the rules: `gpusched_vulkan::Presenter`'s module docs).
//! - A *compute* client at low priority fills a buffer every frame; the render job reads
//!   it (the buffer's reservation object orders them).
//!
//! Frame times and each client's progress are printed every 60 frames.
//!
//! Run (X11; under `Xvfb :99 &` with `DISPLAY=:99` on a machine without a screen):
//! `cargo run -p gpusched-vulkan --features fault-injection --example window -- [--frames N]
//! [--hang-at N] [--lose-at N] [--screenshot FILE]`.
//! `--hang-at N` injects a hung render job at frame N (the ring's timeout ends it and the
//! frame after it is fed by the presenter's fallback); `--lose-at N` injects a device loss
//! at frame N (the swapchain is re-made on the next generation). Frames continue after both.
//! `--screenshot FILE` writes the last rendered frame as a PNG. Exits non-zero if the
//! validation layer (`GPUSCHED_VALIDATION=1`) or the checker reported anything.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use gpusched::fence::{lockdep, Fence};
use gpusched::{Entity, Priority, SchedulerConfig};
use gpusched_vulkan::ash::vk;
use gpusched_vulkan::{
    Buffer, Builtin, GraphicsBuiltin, JobFault, Load, PresentOutcome, Presenter, PresenterConfig,
    Surface, VulkanDevice, VulkanJob, VulkanRing,
};
use winit::application::ApplicationHandler;
use winit::event::WindowEvent;
use winit::event_loop::{ActiveEventLoop, ControlFlow, EventLoop};
use winit::raw_window_handle::{HasDisplayHandle, HasWindowHandle};
use winit::window::{Window, WindowId};

const N: u32 = 4096;
const CLEAR: [f32; 4] = [0.02, 0.02, 0.08, 1.0];

#[derive(Default)]
struct Args {
    frames: Option<u64>,
    hang_at: Option<u64>,
    lose_at: Option<u64>,
    screenshot: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--frames" => args.frames = Some(number(value()?)?),
            "--hang-at" => args.hang_at = Some(number(value()?)?),
            "--lose-at" => args.lose_at = Some(number(value()?)?),
            "--screenshot" => args.screenshot = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// The window and everything drawing into it (dropped before the device closes).
struct Scene {
    presenter: Presenter,
    render: Entity<VulkanRing>,
    compute: Entity<VulkanRing>,
    _rings: [gpusched::Scheduler<VulkanRing>; 2],
    shared: Buffer,
    /// Fences since `shared` was made: one that failed means it must be made anew (its
    /// reservation object would hand the error on to every later job).
    recent: Vec<Fence>,
    /// Compute jobs not finished yet, oldest first, and how many finished successfully.
    compute_pending: std::collections::VecDeque<Fence>,
    compute_done: u64,
    window: Window,
}

struct App {
    dev: VulkanDevice,
    args: Args,
    scene: Option<Scene>,
    frame: u64,
    started: Instant,
    window_start: Instant,
    error: Option<String>,
}

impl App {
    fn setup(&mut self, event_loop: &ActiveEventLoop) -> Result<Scene, String> {
        let attrs = Window::default_attributes()
            .with_title("gpusched window")
            .with_inner_size(winit::dpi::PhysicalSize::new(640u32, 480u32));
        let window = event_loop.create_window(attrs).map_err(|e| e.to_string())?;
        let dev = &self.dev;
        let timeout = Duration::from_millis(500);
        let gfx =
            dev.ring(0, SchedulerConfig::new("gfx").timeout(timeout)).map_err(|e| e.to_string())?;
        let comp = dev
            .ring(0, SchedulerConfig::new("compute").timeout(timeout))
            .map_err(|e| e.to_string())?;
        let render = Entity::new(&[&gfx], Priority::High).map_err(|e| e.to_string())?;
        let compute = Entity::new(&[&comp], Priority::Low).map_err(|e| e.to_string())?;
        // SAFETY: the window (and its display) outlive the presenter: both live in `Scene`,
        // the presenter first, so it drops first.
        let surface = unsafe {
            Surface::new(
                dev,
                window.display_handle().map_err(|e| e.to_string())?.as_raw(),
                window.window_handle().map_err(|e| e.to_string())?.as_raw(),
            )
        }
        .map_err(|e| e.to_string())?;
        let size = window.inner_size();
        let config = PresenterConfig {
            extent: vk::Extent2D { width: size.width.max(1), height: size.height.max(1) },
            ..Default::default()
        };
        let presenter = Presenter::new(dev, surface, config).map_err(|e| e.to_string())?;
        let shared = dev.buffer(u64::from(N) * 4).map_err(|e| e.to_string())?;
        Ok(Scene {
            presenter,
            render,
            compute,
            _rings: [gfx, comp],
            shared,
            recent: Vec::new(),
            compute_pending: Default::default(),
            compute_done: 0,
            window,
        })
    }

    /// One frame: compute fills the shared buffer, the render job reads it and draws.
    fn frame(&mut self) -> Result<(), String> {
        let n = self.frame;
        let dev = self.dev.clone();
        let Some(scene) = self.scene.as_mut() else { return Ok(()) };
        if self.args.lose_at == Some(n) {
            println!("frame {n}: injecting a device loss");
            dev.lose_device();
        }
        let failed = scene.recent.iter().any(|f| f.error().is_some());
        if failed || scene.shared.generation() != dev.generation() {
            if let Ok(b) = dev.buffer(u64::from(N) * 4) {
                scene.shared = b;
                scene.recent.clear();
            }
        }
        scene.recent.retain(|f| !f.is_signaled() || f.error().is_some());
        let shared = scene.shared.clone();
        let b = shared.clone();
        let fill = VulkanJob::new(move |ctx, cb| {
            let k = ctx.builtin(Builtin::Fill);
            let push = [(n as f32).to_ne_bytes(), N.to_ne_bytes()].concat();
            ctx.dispatch(cb, &k, &[&b], &push, [N / 64, 1, 1])
        })
        .writes(&shared);
        if let Ok(f) = VulkanDevice::submit(&scene.compute, fill) {
            scene.compute_pending.push_back(f.clone());
            scene.recent.push(f);
        }
        while scene.compute_pending.front().is_some_and(Fence::is_signaled) {
            if let Some(f) = scene.compute_pending.pop_front() {
                scene.compute_done += u64::from(f.error().is_none());
            }
        }
        let frame = scene.presenter.begin_frame().map_err(|e| format!("frame {n}: {e}"))?;
        let t = n as f32 / 60.0;
        let colour = [0.5 + 0.5 * t.sin(), 0.5 + 0.5 * (t * 1.3).cos(), 0.3, 1.0];
        let mut job = frame
            .render_job(move |ctx, cb, target| {
                ctx.render(cb, target, Load::Clear(CLEAR), |pass| {
                    pass.draw_builtin(GraphicsBuiltin::Triangle, colour)
                })
            })
            .reads(&shared);
        if self.args.hang_at == Some(n) {
            println!("frame {n}: injecting a hung render job");
            job = job.inject(JobFault::Hang);
        }
        let (out, finished) = scene
            .presenter
            .submit(&scene.render, frame, job)
            .map_err(|e| format!("frame {n}: {e}"))?;
        if let PresentOutcome::Fallback(e) = out {
            println!("frame {n}: fed by the fallback ({e:?})");
        }
        scene.recent.extend(finished);
        self.frame += 1;
        if self.frame % 60 == 0 {
            let dt = self.window_start.elapsed() / 60;
            self.window_start = Instant::now();
            let s = scene.presenter.stats();
            println!(
                "frame {:5}: {:6.2} ms/frame; render: {} presented, {} fed by the fallback; \
                 compute: {} jobs done; swapchains made: {}; generation {}",
                self.frame,
                dt.as_secs_f64() * 1000.0,
                s.presented,
                s.fallbacks,
                scene.compute_done,
                s.swapchains,
                dev.generation(),
            );
        }
        scene.window.request_redraw();
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        let Some(scene) = self.scene.as_ref() else { return Ok(()) };
        let Some(path) = &self.args.screenshot else { return Ok(()) };
        let target = scene.presenter.target().ok_or("no swapchain yet")?.clone();
        let px = self
            .dev
            .read_image_rgba8(&scene.render, &target, Duration::from_secs(30))
            .map_err(|e| format!("reading the last frame back: {e}"))?;
        let desc = target.desc();
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), desc.width, desc.height);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()
            .and_then(|mut w| w.write_image_data(&px))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
        Ok(())
    }

    fn fail(&mut self, event_loop: &ActiveEventLoop, e: String) {
        eprintln!("error: {e}");
        self.error = Some(e);
        event_loop.exit();
    }
}

impl ApplicationHandler for App {
    fn resumed(&mut self, event_loop: &ActiveEventLoop) {
        if self.scene.is_none() {
            match self.setup(event_loop) {
                Ok(s) => self.scene = Some(s),
                Err(e) => self.fail(event_loop, e),
            }
        }
    }

    fn window_event(&mut self, event_loop: &ActiveEventLoop, _id: WindowId, event: WindowEvent) {
        match event {
            WindowEvent::CloseRequested => event_loop.exit(),
            WindowEvent::Resized(_) => {
                if let Some(s) = self.scene.as_mut() {
                    s.presenter.recreate();
                }
            }
            _ => {}
        }
    }

    fn about_to_wait(&mut self, event_loop: &ActiveEventLoop) {
        event_loop.set_control_flow(ControlFlow::Poll);
        if self.scene.is_none() {
            return;
        }
        if self.args.frames.is_some_and(|n| self.frame >= n) {
            if let Err(e) = self.finish() {
                self.fail(event_loop, e);
            }
            event_loop.exit();
            return;
        }
        if let Err(e) = self.frame() {
            self.fail(event_loop, e);
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let dev = match VulkanDevice::new() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: no Vulkan device: {e}");
            return ExitCode::FAILURE;
        }
    };
    let event_loop = match EventLoop::new() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: no window system (set DISPLAY, or run under Xvfb): {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = Instant::now();
    let mut app = App {
        dev: dev.clone(),
        args,
        scene: None,
        frame: 0,
        started: now,
        window_start: now,
        error: None,
    };
    if let Err(e) = event_loop.run_app(&mut app) {
        eprintln!("error: event loop: {e}");
        return ExitCode::FAILURE;
    }
    let (frames, elapsed, error) = (app.frame, app.started.elapsed(), app.error.take());
    drop(app);
    println!("{frames} frames in {:.2} s", elapsed.as_secs_f64());
    if dev.close(Duration::from_secs(30)).is_err() {
        eprintln!("error: the device is still referenced");
        return ExitCode::FAILURE;
    }
    let validation = gpusched_vulkan::validation_errors();
    let violations = lockdep::violations();
    if error.is_some() || validation != 0 || violations != 0 {
        eprintln!("failed: validation errors {validation}, checker violations {violations}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
