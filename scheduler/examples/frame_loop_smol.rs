//! A headless frame loop on smol: two mock rings (compute and graphics), frame `N`'s render
//! job depends on its simulation job (another ring) and on frame `N-2`'s render (the
//! swapchain image it reuses, two images), and the loop `.await`s frame `N-2`'s finished fence
//! before it "presents" it. Fences implement `IntoFuture`, so any executor can await them.
//!
//! Run: `cargo run -p gpusched --example frame_loop_smol`. It exits non-zero if a frame
//! finished out of order or failed. The Vulkan version of this loop comes with the
//! `gpusched-vulkan` backend; here the rings are `MockRing::timed()` (each job completes its
//! `duration` after it started, on a completion thread).

use std::time::{Duration, Instant};

use gpusched::fence::Fence;
use gpusched::testing::{MockJob, MockRing};
use gpusched::{Entity, Priority, Scheduler, SchedulerConfig};

const FRAMES: u64 = 60;

fn main() {
    // The loop runs as a task on a smol executor; a second task awaits the same fences (any
    // number of futures may wait on one fence).
    let ex = smol::Executor::new();
    let report = smol::block_on(ex.run(frame_loop(&ex)));
    println!("{report}");
}

async fn frame_loop(ex: &smol::Executor<'_>) -> String {
    let compute = Scheduler::new(MockRing::timed(), SchedulerConfig::new("compute")).unwrap();
    let gfx = Scheduler::new(MockRing::timed(), SchedulerConfig::new("gfx")).unwrap();
    let sim = Entity::new(&[&compute], Priority::Normal).unwrap();
    let render = Entity::new(&[&gfx], Priority::High).unwrap();

    let (tx, rx) = smol::channel::unbounded::<Fence>();
    let watcher = ex.spawn(async move {
        let mut ok = 0u64;
        while let Ok(frame) = rx.recv().await {
            if frame.await.is_ok() {
                ok += 1;
            }
        }
        ok
    });

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
        tx.send(frame.clone()).await.expect("watcher alive");
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

    drop(tx);
    assert_eq!(watcher.await, FRAMES, "the watcher task saw every frame succeed");

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
        "frame_loop_smol: {FRAMES} frames presented in {:.1} ms, {ok} ok",
        started.elapsed().as_secs_f64() * 1e3
    )
}
