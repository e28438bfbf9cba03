//! A headless compute frame loop on a real Vulkan device (lavapipe when there is no GPU),
//! awaited on tokio, smol or `futures-lite`'s `block_on` (fences implement `IntoFuture`: any
//! executor works; the loop is the same `async fn` on all three).
//!
//! Two rings, like an engine's async-compute and graphics queues. Frame `N`:
//! - *simulate* on the compute ring: `state += 1` (SAXPY with `x = 1`), a write to `state`;
//! - *render* on the graphics ring: `image[N % 2] = 2 * state` (fill with 0, then SAXPY), a
//!   read of `state` and a write of the swapchain-like image `N % 2`.
//!
//! No dependency is spelled out: each job declares the buffers it reads and writes and
//! [`VulkanDevice::submit`] derives the order from their reservation objects (implicit sync,
//! as `dma_resv` does for the kernel's drivers): render `N` waits for simulate `N` (it reads
//! what that wrote, on another ring), and for frame `N - 2`, which wrote the same image.
//! Before submitting frame `N` the loop *presents* frame `N - 2`: it awaits that frame's
//! finished fence and reads the image back on the host, checking `2 * (N - 1)`. So at most
//! two frames are in flight, and the image is never overwritten while it is presented.
//!
//! Run: `cargo run -p gpusched-vulkan --example frame_loop [-- tokio|smol]` (default:
//! `futures_lite::future::block_on`; add `GPUSCHED_VALIDATION=1` for the Khronos validation
//! layer). It exits non-zero if a frame fails, shows the wrong values, or the validation
//! layer or the checker reported anything.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use gpusched::fence::{lockdep, Fence};
use gpusched::{Entity, Priority, SchedulerConfig};
use gpusched_vulkan::{Buffer, Builtin, VulkanDevice, VulkanJob};

const FRAMES: u32 = 120;
/// Floats per buffer.
const N: u32 = 16 * 1024;
/// A deadlock watchdog for every wait, not a speed target.
const WATCHDOG: Duration = Duration::from_secs(60);

fn push(a: f32, n: u32) -> Vec<u8> {
    [a.to_ne_bytes(), n.to_ne_bytes()].concat()
}

/// `state += 1`: SAXPY with `a = 1` over a buffer of ones.
fn simulate(ones: &Buffer, state: &Buffer) -> VulkanJob {
    let (x, y) = (ones.clone(), state.clone());
    VulkanJob::new(move |ctx, cb| {
        let k = ctx.builtin(Builtin::Saxpy);
        ctx.dispatch(cb, &k, &[&x, &y], &push(1.0, N), [N.div_ceil(64), 1, 1])
    })
    .reads(ones)
    .writes(state)
}

/// `image = 2 * state`: clear the image, then SAXPY with `a = 2`.
fn render(state: &Buffer, image: &Buffer) -> VulkanJob {
    let (x, y) = (state.clone(), image.clone());
    VulkanJob::new(move |ctx, cb| {
        ctx.fill_u32(cb, &y, 0)?;
        ctx.barrier(cb);
        let k = ctx.builtin(Builtin::Saxpy);
        ctx.dispatch(cb, &k, &[&x, &y], &push(2.0, N), [N.div_ceil(64), 1, 1])
    })
    .reads(state)
    .writes(image)
}

/// Awaits frame `n`'s fence and checks its image on the host.
async fn present(n: u32, frame: &Fence, image: &Buffer) -> Result<(), String> {
    frame.clone().await.map_err(|e| format!("frame {n} failed: {e}"))?;
    let pixels = image.read_f32(WATCHDOG).map_err(|e| format!("frame {n}: read back: {e}"))?;
    let want = 2.0 * (n + 1) as f32;
    match pixels.iter().position(|p| *p != want) {
        None => Ok(()),
        Some(i) => Err(format!("frame {n}: pixel {i} is {} instead of {want}", pixels[i])),
    }
}

async fn frame_loop(dev: &VulkanDevice) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let gfx_queue = dev.queue_count().min(2) - 1;
    let compute = dev.ring(0, SchedulerConfig::new("compute")).map_err(|x| e(&x))?;
    let gfx = dev.ring(gfx_queue, SchedulerConfig::new("gfx")).map_err(|x| e(&x))?;
    let sim = Entity::new(&[&compute], Priority::Normal).map_err(|x| e(&x))?;
    let draw = Entity::new(&[&gfx], Priority::High).map_err(|x| e(&x))?;

    let bytes = u64::from(N) * 4;
    let ones = dev.buffer(bytes).map_err(|x| e(&x))?;
    ones.write_f32(&vec![1.0; N as usize], WATCHDOG).map_err(|x| e(&x))?;
    let state = dev.buffer(bytes).map_err(|x| e(&x))?;
    state.write_f32(&vec![0.0; N as usize], WATCHDOG).map_err(|x| e(&x))?;
    let images = [dev.buffer(bytes).map_err(|x| e(&x))?, dev.buffer(bytes).map_err(|x| e(&x))?];

    let started = Instant::now();
    let mut frames: Vec<Fence> = Vec::with_capacity(FRAMES as usize);
    for n in 0..FRAMES {
        if n >= 2 {
            present(n - 2, &frames[(n - 2) as usize], &images[(n % 2) as usize]).await?;
        }
        VulkanDevice::submit(&sim, simulate(&ones, &state)).map_err(|x| e(&x))?;
        let done = VulkanDevice::submit(&draw, render(&state, &images[(n % 2) as usize]))
            .map_err(|x| e(&x))?;
        frames.push(done);
    }
    for n in FRAMES - 2..FRAMES {
        present(n, &frames[n as usize], &images[(n % 2) as usize]).await?;
    }
    let elapsed = started.elapsed();

    // Frame N finished after frame N - 2 (same image): the implicit dependency held.
    for n in 2..FRAMES as usize {
        let (a, b) = (frames[n - 2].timestamp(), frames[n].timestamp());
        if a > b {
            return Err(format!("frame {n} finished before frame {}", n - 2));
        }
    }
    let (cs, gs) = (compute.stats(), gfx.stats());
    println!(
        "frame_loop: {FRAMES} frames on {} in {:.1} ms ({:.0} frames/s); compute ran {}, gfx ran {}",
        dev.name(),
        elapsed.as_secs_f64() * 1e3,
        f64::from(FRAMES) / elapsed.as_secs_f64(),
        cs.jobs_run,
        gs.jobs_run,
    );
    Ok(())
}

/// The executor that drives [`frame_loop`], from the first command-line argument.
#[derive(Debug, Clone, Copy)]
enum Executor {
    /// A multi-threaded tokio runtime with two workers.
    Tokio,
    /// `smol::block_on`.
    Smol,
    /// `futures_lite::future::block_on` (the default).
    BlockOn,
}

impl Executor {
    fn from_args() -> Result<Self, String> {
        match std::env::args().nth(1).as_deref() {
            None | Some("block-on") => Ok(Executor::BlockOn),
            Some("tokio") => Ok(Executor::Tokio),
            Some("smol") => Ok(Executor::Smol),
            Some(other) => {
                Err(format!("unknown executor `{other}` (expected `tokio`, `smol` or `block-on`)"))
            }
        }
    }

    fn run(self, dev: &VulkanDevice) -> Result<(), String> {
        match self {
            Executor::Tokio => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .map_err(|e| format!("tokio runtime: {e}"))?
                .block_on(frame_loop(dev)),
            Executor::Smol => smol::block_on(frame_loop(dev)),
            Executor::BlockOn => futures_lite::future::block_on(frame_loop(dev)),
        }
    }
}

fn main() -> ExitCode {
    let executor = match Executor::from_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("frame_loop: {e}");
            return ExitCode::from(2);
        }
    };
    let dev = match VulkanDevice::new() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("frame_loop: no Vulkan device: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = executor.run(&dev);
    // Rings, entities and buffers are dropped by now; destroy the device before exit.
    if dev.close(WATCHDOG).is_err() {
        eprintln!("frame_loop: the device is still referenced");
        return ExitCode::FAILURE;
    }
    let (validation, violations) = (gpusched_vulkan::validation_errors(), lockdep::violations());
    match result {
        Ok(()) if validation == 0 && violations == 0 => ExitCode::SUCCESS,
        Ok(()) => {
            eprintln!(
                "frame_loop: {validation} validation errors, {violations} checker violations"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("frame_loop: {e}");
            ExitCode::FAILURE
        }
    }
}
