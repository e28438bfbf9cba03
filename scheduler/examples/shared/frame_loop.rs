//! The frame loop both `frame_loop_tokio` and `frame_loop_smol` run (included by each with
//! `#[path]`): only the executor differs. See either example's docs.

use std::future::Future;
use std::time::{Duration, Instant};

use gpusched::fence::Fence;
use gpusched::testing::{MockJob, MockRing};
use gpusched::{Entity, Priority, Scheduler, SchedulerConfig};

/// Frames the loop renders.
pub(crate) const FRAMES: u64 = 60;

/// Runs the loop on the calling task, awaiting `on_frame` with each frame's render fence
/// as it is pushed, checks the frames' order and outcomes (a panic on a wrong one), and
/// returns the report line, headed `name`.
pub(crate) async fn frame_loop<F: Future<Output = ()>>(
    name: &str,
    mut on_frame: impl FnMut(Fence) -> F,
) -> String {
    let compute = Scheduler::new(MockRing::timed(), SchedulerConfig::new("compute")).unwrap();
    let gfx = Scheduler::new(MockRing::timed(), SchedulerConfig::new("gfx")).unwrap();
    let sim = Entity::new(&[&compute], Priority::Normal).unwrap();
    let render = Entity::new(&[&gfx], Priority::High).unwrap();

    let started = Instant::now();
    let mut sims: Vec<Fence> = Vec::new();
    let mut frames: Vec<Fence> = Vec::new();
    let mut presented = 0;
    for n in 0..FRAMES {
        // Simulation on the compute ring, render on the graphics ring after it (a dependency
        // across schedulers: waited with a callback, never by a parked thread).
        let sim_done = sim
            .job(MockJob::new(n).duration(Duration::from_micros(300)))
            .arm()
            .expect("arm sim")
            .push();
        let mut job = render
            .job(MockJob::new(n).duration(Duration::from_micros(500)))
            .dependency(sim_done.clone());
        if n >= 2 {
            // The swapchain image of frame N-2 is reused: order after that frame. It is on the
            // same ring, so the scheduler only waits until it has been handed to the ring (the
            // ring executes in order); on another ring it would wait for it to finish.
            job = job.dependency(frames[(n - 2) as usize].clone());
        }
        let frame = job.arm().expect("arm render").push();
        on_frame(frame.clone()).await;
        frames.push(frame);
        sims.push(sim_done);

        // Present frame N-2: its fence is awaited, not blocked on; at most two frames are in
        // flight behind it.
        if n >= 2 {
            frames[(n - 2) as usize].clone().await.expect("frame N-2 failed");
            presented += 1;
        }
    }
    for f in &frames[frames.len() - 2..] {
        f.clone().await.expect("last frames failed");
        presented += 1;
    }

    // Every frame finished after the frame two before it (the dependency held) and after its
    // simulation; the graphics ring ran the frames in order.
    for n in 2..FRAMES as usize {
        let (a, b) = (frames[n - 2].timestamp().unwrap(), frames[n].timestamp().unwrap());
        assert!(a <= b, "frame {n} finished before frame {}", n - 2);
    }
    for (n, (sim, frame)) in sims.iter().zip(&frames).enumerate() {
        let (s, f) = (sim.timestamp().unwrap(), frame.timestamp().unwrap());
        assert!(s <= f, "frame {n} finished before its simulation");
    }
    let order = gfx.backend().completed_tags();
    assert_eq!(order, (0..FRAMES).collect::<Vec<_>>(), "graphics ring order");
    assert_eq!(compute.backend().completed_tags().len(), FRAMES as usize);
    assert_eq!(presented, FRAMES);
    // Entity statistics are updated just after a fence signals, so a waiter that has just
    // woken may not see them yet: count from the fences themselves.
    let ok = frames.iter().filter(|f| f.error().is_none() && f.is_signaled()).count();
    assert_eq!(ok, FRAMES as usize, "every frame succeeded");
    format!(
        "{name}: {FRAMES} frames presented in {:.1} ms, {ok} ok",
        started.elapsed().as_secs_f64() * 1e3
    )
}
