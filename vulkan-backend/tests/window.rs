//! Frames on a screen: a [`Presenter`] on a winit window of an `Xvfb` server this test starts
//! (and kills at the end, also on panic), on lavapipe with validation on.
//!
//! Its own `main` (`harness = false`): winit's event loop must be made on the main thread,
//! and only once per process, so the cases run one after the other on one window:
//! - a frame loop of a few hundred frames (a render client at high priority drawing the
//!   built-in triangle, reading a buffer a low-priority compute client writes), with an
//!   injected hang, a forced swapchain re-creation, a device loss, and a real resize of the
//!   window (the driver reports the swapchain suboptimal or out of date; exactly one new
//!   swapchain at the window's new size follows); the last rendered image has the triangle's
//!   colour at the centre and the clear colour at a corner;
//! - a render job refused at arm (its entity killed): the acquire semaphore is consumed by
//!   the fallback and the frame presented;
//! - a render job cancelled after arm (dropped unpushed);
//! - acquire timeouts (every image held), then the held frames presented;
//! - a device loss between acquire and render.
//!
//! Every fence signals, no validation error, no checker report, no device left alive.
//! Without `Xvfb` the test fails under CI (or `GPUSCHED_REQUIRE_VULKAN=1`) and prints
//! `SKIPPED` otherwise (`vk_fault_layer::testing::skip_or_fail`).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gpusched::fence::{Fence, FenceError, WaitError};
use gpusched::{Entity, Priority, SchedulerConfig};
use gpusched_vulkan::ash::vk;
use gpusched_vulkan::{
    live_devices, Buffer, Frame, GraphicsBuiltin, JobFault, Load, PresentError, PresentOutcome,
    Presenter, PresenterConfig, Surface, VulkanDevice, VulkanRing, FALLBACK_COLOUR,
};
use winit::event_loop::EventLoop;
use winit::raw_window_handle::{HasDisplayHandle, HasWindowHandle};

const CLEAR: [f32; 4] = [0.0, 0.0, 0.25, 1.0];
const N: u32 = 4096;

/// An `Xvfb` server on a free display, killed on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    /// Starts one on `:97 + pid % 100` (or the next free number), waiting for its socket.
    fn start() -> Result<Xvfb, String> {
        let base = 97 + std::process::id() % 100;
        for n in base..base + 20 {
            let socket = format!("/tmp/.X11-unix/X{n}");
            if Path::new(&socket).exists() || Path::new(&format!("/tmp/.X{n}-lock")).exists() {
                continue;
            }
            let display = format!(":{n}");
            let child = Command::new("Xvfb")
                .args([display.as_str(), "-screen", "0", "640x480x24", "-nolisten", "tcp"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start Xvfb ({e}); install the xvfb package"))?;
            let mut x = Xvfb { child, display };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if Path::new(&socket).exists() {
                    return Ok(x);
                }
                if let Ok(Some(status)) = x.child.try_wait() {
                    return Err(format!("Xvfb {} exited at start: {status}", x.display));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            return Err(format!("Xvfb {} did not open its socket {socket}", x.display));
        }
        Err("no free X display number".into())
    }
}

impl Drop for Xvfb {
    /// SIGTERM first, so the server removes its socket and lock file; SIGKILL if it lingers.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", pid.as_str()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The render and compute clients and their shared buffer (re-made on a new generation).
struct Scene {
    dev: VulkanDevice,
    render: Entity<VulkanRing>,
    compute: Entity<VulkanRing>,
    shared: Buffer,
    fences: Vec<Fence>,
    /// `fences[since..]` were submitted after the shared buffer was last made.
    since: usize,
}

impl Scene {
    /// The shared buffer, made anew on a new generation or after a job touching it failed
    /// (its reservation object would hand the error on to every later job).
    fn shared_buffer(&mut self) -> Buffer {
        let failed = self.fences[self.since..].iter().any(|f| f.error().is_some());
        if failed || self.shared.generation() != self.dev.generation() {
            if let Ok(b) = self.dev.buffer(u64::from(N) * 4) {
                self.shared = b;
                self.since = self.fences.len();
            }
        }
        self.shared.clone()
    }

    /// One frame: compute writes the shared buffer, the render job reads it and draws.
    fn frame(
        &mut self,
        presenter: &mut Presenter,
        frame: Frame,
        fault: Option<JobFault>,
    ) -> PresentOutcome {
        let shared = self.shared_buffer();
        if let Ok(f) = VulkanDevice::submit(&self.compute, common::fill_job(&shared, 1.0, N)) {
            self.fences.push(f);
        }
        let colour = [1.0, 0.4, 0.0, 1.0];
        let mut job = frame
            .render_job(move |ctx, cb, target| {
                ctx.render(cb, target, Load::Clear(CLEAR), |pass| {
                    pass.draw_builtin(GraphicsBuiltin::Triangle, colour)
                })
            })
            .reads(&shared);
        if let Some(f) = fault {
            job = job.inject(f);
        }
        let (out, fin) = presenter.submit(&self.render, frame, job).expect("present");
        self.fences.extend(fin);
        out
    }
}

fn pixel(px: &[u8], width: u32, x: u32, y: u32) -> [u8; 4] {
    let i = ((y * width + x) * 4) as usize;
    [px[i], px[i + 1], px[i + 2], px[i + 3]]
}

fn to_u8(c: [f32; 4]) -> [u8; 4] {
    c.map(|v| (v * 255.0).round() as u8)
}

/// The one test's name, for test runners that list tests (`--list`, as cargo-nextest does).
const NAME: &str = "window";

/// Answers libtest's listing protocol (`--list [--format terse] [--ignored]`) and its name
/// filter: runs the test unless listing, or filtered out.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("{NAME}: test");
        }
        return;
    }
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected = filters.is_empty()
        || filters.iter().any(|f| if exact { *f == NAME } else { NAME.contains(f.as_str()) });
    if !selected {
        return;
    }
    let x = match Xvfb::start() {
        Ok(x) => x,
        Err(e) => {
            vk_fault_layer::testing::skip_or_fail("window", e);
            return;
        }
    };
    let Some(dev) = common::device() else { return };
    if !dev.supports_graphics() {
        vk_fault_layer::testing::skip_or_fail("window", "the device has no graphics support");
        return;
    }
    // Before any thread of ours reads the environment (winit reads it next).
    std::env::set_var("DISPLAY", &x.display);
    std::env::remove_var("WAYLAND_DISPLAY");
    let event_loop = EventLoop::new().expect("winit event loop on the Xvfb display");
    #[allow(deprecated)] // `create_window` outside `run_app`: this test drives no event loop
    let window = event_loop
        .create_window(
            winit::window::Window::default_attributes()
                .with_title("gpusched window test")
                .with_inner_size(winit::dpi::PhysicalSize::new(320u32, 240u32)),
        )
        .expect("a window");
    run(&dev, &window);
    drop(window);
    drop(event_loop);
    common::close(dev);
    assert_eq!(live_devices(), 0, "a device is still alive");
    common::assert_no_validation_errors();
    drop(x);
    println!("window: ok");
}

fn run(dev: &VulkanDevice, window: &winit::window::Window) {
    let timeout = Duration::from_millis(400);
    let ring = dev.ring(0, SchedulerConfig::new("gfx").timeout(timeout)).expect("ring");
    let cring = dev.ring(0, SchedulerConfig::new("compute").timeout(timeout)).expect("ring");
    let mut scene = Scene {
        dev: dev.clone(),
        render: Entity::new(&[&ring], Priority::High).expect("entity"),
        compute: Entity::new(&[&cring], Priority::Low).expect("entity"),
        shared: dev.buffer(u64::from(N) * 4).expect("buffer"),
        fences: Vec::new(),
        since: 0,
    };
    let make_surface = || {
        // SAFETY: the window (and its display) outlive every presenter, dropped in this
        // function.
        unsafe {
            Surface::new(
                dev,
                window.display_handle().expect("display").as_raw(),
                window.window_handle().expect("window").as_raw(),
            )
        }
        .expect("surface")
    };
    let config = PresenterConfig {
        frames_in_flight: 2,
        extent: vk::Extent2D { width: 320, height: 240 },
        ..Default::default()
    };
    // Bad configuration values are typed errors.
    let bad = [
        PresenterConfig { frames_in_flight: 1, ..config },
        PresenterConfig { frames_in_flight: 4, ..config },
        PresenterConfig { queue_index: dev.queue_count(), ..config },
        PresenterConfig { extent: vk::Extent2D { width: 0, height: 240 }, ..config },
    ];
    for c in bad {
        match Presenter::new(dev, make_surface(), c) {
            Err(PresentError::Config(_)) => {}
            other => panic!("{c:?} accepted: {:?}", other.map(|_| ())),
        }
    }
    let mut presenter = Presenter::new(dev, make_surface(), config).expect("presenter");

    // The frame loop, with a hang, a forced re-creation, a device loss and a window resize.
    const FRAMES: u64 = 240;
    let gen0 = dev.generation();
    let mut fallbacks = 0;
    let mut before_resize = 0;
    for n in 0..FRAMES {
        let frame = presenter.begin_frame().expect("acquire");
        let fault = (n == 40).then_some(JobFault::Hang);
        if n == 100 {
            presenter.recreate();
        }
        if n == 150 {
            dev.lose_device();
        }
        if n == 200 {
            // A real resize: the X server resizes the window, the driver's presentation
            // engine reports the swapchain suboptimal or out of date, and the presenter makes
            // a new one at the surface's new extent.
            let _ = window.request_inner_size(winit::dpi::PhysicalSize::new(400u32, 300u32));
            before_resize = presenter.stats().swapchains;
        }
        if let PresentOutcome::Fallback(e) = scene.frame(&mut presenter, frame, fault) {
            eprintln!("frame {n}: fed by the fallback ({e:?})");
            fallbacks += 1;
        }
    }
    let stats = presenter.stats();
    assert_eq!(stats.presented + stats.fallbacks, FRAMES);
    assert!(stats.presented >= FRAMES - 10, "too few frames presented: {stats:?}");
    assert_eq!(fallbacks, stats.fallbacks);
    assert!(stats.swapchains >= 4, "re-creation, resize and the new generation: {stats:?}");
    assert_eq!(stats.swapchains, before_resize + 1, "one new swapchain for the resize");
    let desc = presenter.target().expect("a swapchain").desc();
    assert_eq!((desc.width, desc.height), (400, 300), "the swapchain follows the window's size");
    assert_ne!(dev.generation(), gen0, "the loss made a new generation");
    let hung = scene.fences.iter().filter(|f| f.error() == Some(FenceError::TimedOut)).count();
    assert!(hung >= 1, "the injected hang timed out");
    check_last_image(&mut scene, &mut presenter);

    // A render job refused at arm: its entity is killed.
    let doomed = Entity::new(&[&ring], Priority::High).expect("entity");
    doomed.kill();
    let before = presenter.stats();
    let frame = presenter.begin_frame().expect("acquire");
    let job = frame.render_job(|ctx, cb, t| {
        ctx.render(cb, t, Load::Clear(CLEAR), |p| {
            p.draw_builtin(GraphicsBuiltin::Triangle, [1.0; 4])
        })
    });
    let (out, fin) = presenter.submit(&doomed, frame, job).expect("present");
    assert!(fin.is_none(), "a killed entity refuses the job at arm");
    assert_eq!(out, PresentOutcome::Fallback(None));
    assert_eq!(presenter.stats().fallbacks, before.fallbacks + 1);

    // A render job armed, then dropped unpushed: both fences end Cancelled, the frame is fed.
    let frame = presenter.begin_frame().expect("acquire");
    let job = frame.render_job(|ctx, cb, t| ctx.render(cb, t, Load::Clear(CLEAR), |_| Ok(())));
    let armed = VulkanDevice::arm(&scene.render, job).expect("arm");
    let (sched, fin) = (armed.scheduled().clone(), armed.finished().clone());
    drop(armed);
    let out = presenter.present(frame, Some((sched, fin.clone()))).expect("present");
    assert_eq!(out, PresentOutcome::Fallback(Some(FenceError::Cancelled)));
    assert_eq!(fin.error(), Some(FenceError::Cancelled));

    // Acquire timeouts: hold every image, then present the held frames with no job.
    let mut held = Vec::new();
    let timeout_config = PresenterConfig {
        frames_in_flight: 3,
        acquire_timeout: Duration::from_millis(100),
        ..config
    };
    drop(presenter);
    let mut presenter = Presenter::new(dev, make_surface(), timeout_config).expect("presenter");
    let err = loop {
        match presenter.begin_frame() {
            Ok(f) => held.push(f),
            Err(e) => break e,
        }
        assert!(held.len() <= 8, "acquire never timed out");
    };
    assert!(matches!(err, PresentError::AcquireTimeout), "{err}");
    assert!(!held.is_empty());
    assert_eq!(presenter.stats().acquire_timeouts, 1);
    for f in held {
        assert_eq!(presenter.present(f, None).expect("present"), PresentOutcome::Fallback(None));
    }
    // The swapchain still works after.
    let frame = presenter.begin_frame().expect("acquire after the timeouts");
    assert_eq!(scene.frame(&mut presenter, frame, None), PresentOutcome::Presented);

    // A device loss between acquire and render: the job is refused or fails, the frame is
    // fed on the lost generation, and the next frame is on a new swapchain of the new one.
    let generation = dev.generation();
    let swapchains = presenter.stats().swapchains;
    let frame = presenter.begin_frame().expect("acquire");
    dev.lose_device();
    let out = scene.frame(&mut presenter, frame, None);
    assert!(matches!(out, PresentOutcome::Fallback(_)), "{out:?}");
    let mut presented = false;
    for _ in 0..5 {
        let frame = presenter.begin_frame().expect("acquire on the new generation");
        presented |= scene.frame(&mut presenter, frame, None) == PresentOutcome::Presented;
    }
    assert!(presented);
    assert_ne!(dev.generation(), generation);
    assert_eq!(presenter.stats().swapchains, swapchains + 1);
    check_last_image(&mut scene, &mut presenter);

    drop(presenter);
    // Every fence signals: successfully, or with the error of an injected fault.
    for f in &scene.fences {
        match common::wait(f) {
            Ok(())
            | Err(WaitError::Failed(
                FenceError::TimedOut | FenceError::DeviceLost | FenceError::Cancelled,
            )) => {}
            Err(e) => panic!("fence failed or hung: {e:?}"),
        }
    }
}

/// The last rendered image: the triangle's colour at the centre, the clear colour at a
/// corner (never the fallback's).
fn check_last_image(scene: &mut Scene, presenter: &mut Presenter) {
    let target = presenter.target().expect("a swapchain").clone();
    let desc = target.desc();
    let px = scene
        .dev
        .read_image_rgba8(&scene.render, &target, Duration::from_secs(30))
        .expect("read back");
    assert_eq!(pixel(&px, desc.width, desc.width / 2, desc.height / 2), [255, 102, 0, 255]);
    assert_eq!(pixel(&px, desc.width, 1, 1), to_u8(CLEAR));
    assert_ne!(to_u8(CLEAR), to_u8(FALLBACK_COLOUR));
}
