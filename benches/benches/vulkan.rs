//! Native Vulkan submission vs the same jobs through the scheduler, on one device (lavapipe
//! unless `GPUSCHED_DEVICE` picks another), three paths per group:
//! - `native` (a): the baseline, raw `vkQueueSubmit` of one pre-recorded command buffer per
//!   job, each signalling the next value of a timeline semaphore, then one `vkWaitSemaphores`
//!   for the last value;
//! - `scheduler` (b): the same number of jobs armed and pushed on an entity of a `VulkanRing`
//!   with batching off (recording, the ring's barriers, one submit per job, the completion
//!   thread), then a wait on the last finished fence;
//! - `scheduler_batched` (c): the same with the ring's batching on (one `vkQueueSubmit` for
//!   the jobs one pump hands over).
//!
//! Groups: `vulkan_empty_job` (empty command buffers) and `vulkan_saxpy_1mib` (`y = 2x + y`
//! over 1 MiB, 262,144 floats, per job).
//!
//! After criterion's numbers, each group runs its own loops, the three paths interleaved in 8
//! rounds: jobs per second (best round) and the ratios to native, and each round's ratio
//! (the paths ran back to back in it: min and median over the rounds); submit→completion latency
//! p50/p99 of single jobs (native: the submitting thread blocks in `vkWaitSemaphores`;
//! scheduler: push, then wait on the finished fence, which the completion thread signals);
//! jobs per `vkQueueSubmit` with batching; and, from `/proc/self/task/*/schedstat`, the CPU
//! time per job of each path's throughput loops, with the device's completion thread apart
//! (it waits on one semaphore per ring, polls it for a few µs first while its jobs complete
//! less than 20 µs apart, and sleeps through several such jobs when they are in flight
//! together; it also runs the jobs that completions let onto the ring: its share of an empty
//! job includes that polling and those submissions), the CPU per job of every thread by name (the main thread apart) and the
//! completion thread's sleeps per job. Both paths execute the same commands: native SAXPY command
//! buffers carry the ring's barriers (a full barrier before the work, one to the host after),
//! and an empty job is an empty command buffer on both (`VulkanJob::empty` records no
//! barrier).
//!
//! Burst (`vulkan_burst`): [`BURST`] empty jobs gated on one host-signalled fence (an
//! explicit dependency of every job), armed and pushed, then released at once by signalling
//! the gate: the scheduler hands them to the ring together, which with batching submits them
//! in one `vkQueueSubmit`. Timed from the gate's signal to the last job's finished fence.
//! Baselines: the same number of pre-recorded empty command buffers, one `vkQueueSubmit`
//! each (a1) or all in one (a2), then one wait. Reported: jobs per second (best of 8
//! interleaved rounds), the ratios, and the jobs per `vkQueueSubmit` of the batched path.
//!
//! Cross-ring chains (`vulkan_cross_ring_chain`, [`chain`]): a chain of empty jobs, each
//! depending on the one before, natively over two queues (the GPU waits), on one ring, and
//! alternating between two rings of the same device, once with GPU-side waits (the dependant
//! waits on the host only for the other job's submission, then on the other ring's timeline
//! semaphore inside its own `vkQueueSubmit`) and once with host waits (`set_native_waits(false)`:
//! the dependant runs after the other job's finished fence signalled).
//!
//! Device loss (`fault-injection`): on a second logical device, a ring with an injected hang
//! and 8 jobs queued behind it; `VulkanDevice::lose_device`, then the time to every in-flight
//! fence signalled `DeviceLost`, to the next generation ready (`wait_generation`), and to the
//! first job on it done; p50 and max over several losses. Baseline for the generation: a
//! fresh logical device created (`VulkanDevice::sibling`) and its first job done.
//!
//! `GPUSCHED_BENCH_VULKAN=empty,burst,chain,saxpy,loss` (any of them) runs those sections
//! only; criterion's own filter argument skips its measurements (`-- --bench NONE`).
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::time::{Duration, Instant};

use ash::vk;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpusched::fence::FenceError;
use gpusched::{Entity, Priority, Scheduler, SchedulerConfig};
use gpusched_benches::{metric, ns, percentile, test_mode, thread_cpu, thread_cpu_since};
use gpusched_vulkan::{Buffer, Builtin, JobFault, VulkanDevice, VulkanJob, VulkanRing};

#[path = "vulkan/chain.rs"]
mod chain;

/// Jobs per measured iteration.
const BATCH: u64 = 64;
/// Floats in the SAXPY vectors (1 MiB each).
const SAXPY_N: u32 = 1 << 18;
/// Jobs released by one gate in the burst scenario.
const BURST: usize = 32;

/// Raw submission on the device's queue 0: a timeline semaphore, a pool, and pre-recorded
/// command buffers (simultaneous use: one is pending many times at once).
struct Native {
    dev: VulkanDevice,
    sem: vk::Semaphore,
    pool: vk::CommandPool,
    value: u64,
}

impl Native {
    fn new(dev: &VulkanDevice) -> Native {
        let d = dev.ash_device();
        let mut ty =
            vk::SemaphoreTypeCreateInfo::default().semaphore_type(vk::SemaphoreType::TIMELINE);
        let sinfo = vk::SemaphoreCreateInfo::default().push_next(&mut ty);
        let pinfo = vk::CommandPoolCreateInfo::default().queue_family_index(dev.queue_family());
        // SAFETY: valid device and create infos.
        let (sem, pool) = unsafe {
            (
                d.create_semaphore(&sinfo, None).expect("semaphore"),
                d.create_command_pool(&pinfo, None).expect("pool"),
            )
        };
        Native { dev: dev.clone(), sem, pool, value: 0 }
    }

    /// A new command buffer of the pool, recording (reusable: simultaneous use).
    fn begin(&self) -> vk::CommandBuffer {
        let d = self.dev.ash_device();
        let info = vk::CommandBufferAllocateInfo::default()
            .command_pool(self.pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::SIMULTANEOUS_USE);
        // SAFETY: the pool is ours and used by this thread only.
        let cb = unsafe { d.allocate_command_buffers(&info).expect("cb")[0] };
        // SAFETY: a fresh command buffer.
        unsafe { d.begin_command_buffer(cb, &begin).expect("begin") };
        cb
    }

    /// An empty command buffer: no command at all, as `VulkanJob::empty` records.
    fn record_empty(&self) -> vk::CommandBuffer {
        let cb = self.begin();
        // SAFETY: recording, nothing recorded.
        unsafe { self.dev.ash_device().end_command_buffer(cb).expect("end") };
        cb
    }

    /// A command buffer recorded by `f` with the ring's barriers around it (a full barrier
    /// before, a barrier to the host after), so that it executes what a job's does.
    fn record(
        &self,
        declared: &[Buffer],
        f: impl FnOnce(
            &gpusched_vulkan::RecordCtx<'_>,
            vk::CommandBuffer,
        ) -> Result<(), gpusched_vulkan::RecordError>,
    ) -> vk::CommandBuffer {
        let d = self.dev.ash_device();
        let cb = self.begin();
        self.dev
            .record_into(cb, declared, |ctx, cb| {
                ctx.barrier(cb);
                f(ctx, cb)
            })
            .expect("record");
        let to_host = [vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::MEMORY_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ)];
        // SAFETY: recording; the ring's closing barrier (`ring::host_barrier`).
        unsafe {
            d.cmd_pipeline_barrier(
                cb,
                vk::PipelineStageFlags::ALL_COMMANDS,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &to_host,
                &[],
                &[],
            );
            d.end_command_buffer(cb).expect("end");
        }
        cb
    }

    /// One submission of `cb` signalling the next value.
    fn submit(&mut self, cb: vk::CommandBuffer) -> u64 {
        self.submit_all(cb, 1)
    }

    /// `n` (at most [`BURST`]) submissions of `cb` in one `vkQueueSubmit` (one
    /// `VkSubmitInfo`, the last value). No allocation: the baseline's loop stays as lean as
    /// the ring's.
    fn submit_all(&mut self, cb: vk::CommandBuffer, n: usize) -> u64 {
        assert!((1..=BURST).contains(&n), "{n} command buffers in one submit");
        self.value += 1;
        let cbs = [cb; BURST];
        let sems = [self.sem];
        let values = [self.value];
        let mut tl = vk::TimelineSemaphoreSubmitInfo::default().signal_semaphore_values(&values);
        let submit = [vk::SubmitInfo::default()
            .command_buffers(&cbs[..n])
            .signal_semaphores(&sems)
            .push_next(&mut tl)];
        let d = self.dev.ash_device();
        // SAFETY: the queue is locked by `with_queue`; the command buffer allows simultaneous
        // use, also several times in one batch; values increase.
        self.dev
            .with_queue(0, |q| unsafe { d.queue_submit(q, &submit, vk::Fence::null()) })
            .expect("submit");
        self.value
    }

    /// `bursts` bursts of [`BURST`] jobs: one submit each, or all of a burst in one.
    fn burst(&mut self, cb: vk::CommandBuffer, bursts: usize, one_submit: bool) -> Duration {
        let start = Instant::now();
        for _ in 0..bursts {
            let last = if one_submit {
                self.submit_all(cb, BURST)
            } else {
                (0..BURST).map(|_| self.submit(cb)).last().unwrap_or(0)
            };
            self.wait(last);
        }
        start.elapsed()
    }

    fn wait(&self, value: u64) {
        let sems = [self.sem];
        let values = [value];
        let info = vk::SemaphoreWaitInfo::default().semaphores(&sems).values(&values);
        // SAFETY: our semaphore.
        unsafe { self.dev.ash_device().wait_semaphores(&info, 60_000_000_000) }.expect("wait");
    }

    fn run(&mut self, cb: vk::CommandBuffer, jobs: u64) -> Duration {
        let start = Instant::now();
        let mut last = 0;
        for _ in 0..jobs {
            last = self.submit(cb);
        }
        self.wait(last);
        start.elapsed()
    }

    fn latency(&mut self, cb: vk::CommandBuffer, samples: usize) -> Vec<Duration> {
        (0..samples)
            .map(|_| {
                let t = Instant::now();
                let v = self.submit(cb);
                self.wait(v);
                t.elapsed()
            })
            .collect()
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        self.wait(self.value);
        let d = self.dev.ash_device();
        // SAFETY: all our work is done.
        unsafe {
            d.destroy_command_pool(self.pool, None);
            d.destroy_semaphore(self.sem, None);
        }
    }
}

/// Jobs through the scheduler, on one entity of a `VulkanRing`.
struct Sched {
    ring: Scheduler<VulkanRing>,
    entity: Entity<VulkanRing>,
}

impl Sched {
    fn run(&self, jobs: u64, make: &dyn Fn() -> VulkanJob) -> Duration {
        let start = Instant::now();
        let mut last = None;
        for _ in 0..jobs {
            last = Some(self.entity.job(make()).arm().expect("arm").push());
        }
        if let Some(f) = last {
            f.wait_timeout(Duration::from_secs(60)).expect("job");
        }
        start.elapsed()
    }

    fn latency(&self, samples: usize, make: &dyn Fn() -> VulkanJob) -> Vec<Duration> {
        (0..samples)
            .map(|_| {
                let t = Instant::now();
                let f = self.entity.job(make()).arm().expect("arm").push();
                f.wait_timeout(Duration::from_secs(60)).expect("job");
                t.elapsed()
            })
            .collect()
    }

    /// `bursts` bursts: [`BURST`] empty jobs each depending on a fresh gate fence, armed and
    /// pushed, then released by signalling the gate; timed from each signal to the last
    /// job's finished fence.
    fn burst(&self, gates: &gpusched::fence::FenceContext, bursts: usize) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..bursts {
            let (gate, signaller) = gates.next();
            let fences: Vec<_> = (0..BURST)
                .map(|_| {
                    let job = self.entity.job(VulkanJob::empty()).dependency(gate.clone());
                    job.arm().expect("arm").push()
                })
                .collect();
            let t = Instant::now();
            signaller.signal();
            for f in &fences {
                f.wait_timeout(Duration::from_secs(60)).expect("job");
            }
            total += t.elapsed();
        }
        total
    }

    /// Runs `f` with the ring's batching set to `on`.
    fn batching<R>(&self, on: bool, f: impl FnOnce(&Self) -> R) -> R {
        self.ring.backend().set_batching(on);
        f(self)
    }
}

/// One path's own measurements: every round's throughput loop, the latency samples, and the
/// CPU time its throughput loops took, by thread name (the device's completion thread apart).
#[derive(Default)]
struct Path {
    best: Option<Duration>,
    /// Each round's throughput loop, in round order.
    rounds: Vec<Duration>,
    lat: Vec<Duration>,
    wall: Duration,
    cpu_completion: Duration,
    cpu_total: Duration,
    /// CPU time by thread name (every thread of the process: the submitting thread, the
    /// completion thread, the driver's threads).
    cpu_threads: std::collections::BTreeMap<String, Duration>,
    /// Context switches of the completion threads during the throughput loops.
    switches: u64,
}

/// Voluntary context switches (sleeps) of the threads named `gpusched-vk*` (the
/// completion threads), from `/proc/self/task/*/status`: how often they slept or were
/// preempted.
fn completion_switches() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0 };
    let mut total = 0;
    for entry in dir.flatten() {
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.starts_with("gpusched-vk") || comm.starts_with("gpusched-vk-dev") {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        for line in status.lines() {
            if line.starts_with("voluntary_ctxt_switches:") {
                total += line.split_whitespace().last().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
    }
    total
}

impl Path {
    /// Runs one throughput loop, timing it and its CPU use.
    fn time(&mut self, run: impl FnOnce() -> Duration) {
        let switches = completion_switches();
        let before = thread_cpu();
        let d = run();
        self.best = Some(self.best.map_or(d, |b| b.min(d)));
        self.rounds.push(d);
        self.switches += completion_switches().saturating_sub(switches);
        if let Some(before) = before {
            self.wall += d;
            for (name, t) in thread_cpu_since(&before) {
                *self.cpu_threads.entry(name.clone()).or_default() += t;
                // Thread names are cut to 15 bytes: "gpusched-vk1-co(mpletion)".
                if name.starts_with("gpusched-vk") {
                    self.cpu_completion += t;
                }
                self.cpu_total += t;
            }
        }
    }
}

/// The three paths' own loops, interleaved in 8 rounds so that drift in the machine's
/// load hits them alike: throughput (best round) and latency (samples of every round).
fn measure(
    native: &mut Native,
    cb: vk::CommandBuffer,
    sched: &Sched,
    make: &dyn Fn() -> VulkanJob,
    jobs: u64,
    samples: usize,
) -> [Path; 3] {
    let mut p: [Path; 3] = Default::default();
    // One untimed pass of each path first, so that no round pays for warming up (the
    // driver's first submissions, the ring's and the scheduler's first allocations, the
    // completion thread's pace) whether or not criterion ran before.
    native.run(cb, jobs);
    for on in [false, true] {
        sched.batching(on, |s| s.run(jobs, make));
    }
    let rounds = 8;
    for _ in 0..rounds {
        p[0].time(|| native.run(cb, jobs));
        p[0].lat.extend(native.latency(cb, samples / rounds));
        for (i, on) in [(1, false), (2, true)] {
            sched.batching(on, |s| {
                p[i].time(|| s.run(jobs, make));
                p[i].lat.extend(s.latency(samples / rounds, make));
            });
        }
    }
    p
}

fn report(key: &str, name: &str, device: &str, paths: [Path; 3], jobs: u64, submits: (u64, u64)) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let [mut n, mut s, mut b] = paths;
    let rate = |p: &Path| jobs as f64 / p.best.expect("measured").as_secs_f64();
    let (nr, sr, br) = (rate(&n), rate(&s), rate(&b));
    println!(
        "{name} on {device}: native {nr:.0} jobs/s; scheduler {sr:.0} jobs/s ({:.2}x native); \
         scheduler+batching {br:.0} jobs/s ({:.2}x native, {:.2} jobs per vkQueueSubmit)",
        sr / nr,
        br / nr,
        submits.0 as f64 / submits.1.max(1) as f64
    );
    metric(&format!("vulkan.{key}.native.jobs_per_s"), nr);
    metric(&format!("vulkan.{key}.scheduler.jobs_per_s"), sr);
    metric(&format!("vulkan.{key}.batched.jobs_per_s"), br);
    metric(
        &format!("vulkan.{key}.batched.jobs_per_submit"),
        submits.0 as f64 / submits.1.max(1) as f64,
    );
    // Per round: the paths ran one after the other in each round, so a round's ratio
    // compares them under the same load.
    let mut line = format!("{name} per-round throughput vs native:");
    for (label, path) in [("scheduler", &s), ("batched", &b)] {
        let mut ratios: Vec<f64> = n
            .rounds
            .iter()
            .zip(&path.rounds)
            .map(|(native, ours)| native.as_secs_f64() / ours.as_secs_f64())
            .collect();
        let listed = ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" ");
        ratios.sort_by(f64::total_cmp);
        let (min, median) = (ratios[0], ratios[ratios.len() / 2]);
        line += &format!(" {label} [{listed}] min {min:.2}x median {median:.2}x;");
        metric(&format!("vulkan.{key}.{label}.round_ratio_min"), min);
        metric(&format!("vulkan.{key}.{label}.round_ratio_median"), median);
    }
    println!("{line}");
    let mut line = format!("{name} latency submit->completion:");
    for (label, path) in [("native", &mut n), ("scheduler", &mut s), ("batched", &mut b)] {
        let (p50, p99) = (percentile(&mut path.lat, 0.5), percentile(&mut path.lat, 0.99));
        line += &format!(" {label} p50 {p50:?} p99 {p99:?};");
        metric(&format!("vulkan.{key}.{label}.p50_ns"), ns(p50));
        metric(&format!("vulkan.{key}.{label}.p99_ns"), ns(p99));
    }
    println!("{line}");
    let mut line = format!("{name} CPU per job (throughput loops; {cores} cores):");
    for (label, path) in [("native", &n), ("scheduler", &s), ("batched", &b)] {
        if path.wall.is_zero() {
            continue;
        }
        let loops = (jobs * path.rounds.len() as u64) as f64;
        let per_job = |t: Duration| t.as_secs_f64() * 1e9 / loops;
        line += &format!(
            " {label} {:.0} µs (completion thread {:.0} µs, busy {:.0}% of the wall time);",
            per_job(path.cpu_total) / 1e3,
            per_job(path.cpu_completion) / 1e3,
            100.0 * path.cpu_completion.as_secs_f64() / path.wall.as_secs_f64()
        );
        metric(&format!("vulkan.{key}.{label}.cpu_ns_per_job"), per_job(path.cpu_total));
        if label != "native" && !n.wall.is_zero() {
            let native_loops = (jobs * n.rounds.len() as u64) as f64;
            let native_per_job = n.cpu_total.as_secs_f64() * 1e9 / native_loops;
            metric(
                &format!("vulkan.{key}.{label}.cpu_vs_native"),
                per_job(path.cpu_total) / native_per_job,
            );
        }
        metric(
            &format!("vulkan.{key}.{label}.completion_thread_busy"),
            path.cpu_completion.as_secs_f64() / path.wall.as_secs_f64(),
        );
    }
    println!("{line}");
    let mut line = format!("{name} CPU per job by thread:");
    for (label, path) in [("native", &n), ("scheduler", &s), ("batched", &b)] {
        if path.wall.is_zero() {
            continue;
        }
        let loops = (jobs * path.rounds.len() as u64) as f64;
        line += &format!(
            " {label} (completion thread switches per job {:.2})",
            path.switches as f64 / loops
        );
        for (thread, t) in &path.cpu_threads {
            line += &format!(" {thread} {:.2} µs", t.as_secs_f64() * 1e6 / loops);
        }
        line += ";";
    }
    println!("{line}");
}

/// The three paths under criterion, in one group.
fn criterion_group3(
    c: &mut Criterion,
    group: &str,
    throughput: Throughput,
    per_iter: u64,
    (native, sched): (&mut Native, &Sched),
    cb: vk::CommandBuffer,
    make: &dyn Fn() -> VulkanJob,
) {
    let mut g = c.benchmark_group(group);
    g.throughput(throughput);
    g.bench_function("native", |b| b.iter_custom(|iters| native.run(cb, iters * per_iter)));
    for (name, on) in [("scheduler", false), ("scheduler_batched", true)] {
        sched.batching(on, |s| {
            g.bench_function(name, |b| b.iter_custom(|iters| s.run(iters * per_iter, make)))
        });
    }
    g.finish();
}

/// `vkQueueSubmit` calls and jobs of one batched throughput loop.
fn batched_submits(sched: &Sched, jobs: u64, make: &dyn Fn() -> VulkanJob) -> (u64, u64) {
    sched.batching(true, |s| {
        let before = s.ring.backend().submits();
        s.run(jobs, make);
        (jobs, s.ring.backend().submits() - before)
    })
}

/// The burst scenario (see the module docs): criterion, then 8 interleaved rounds.
fn bench_burst(c: &mut Criterion, native: &mut Native, sched: &Sched, cb: vk::CommandBuffer) {
    let gates = gpusched::fence::FenceContext::new("bench.gate");
    let mut g = c.benchmark_group("vulkan_burst");
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_function("native_each", |b| {
        b.iter_custom(|iters| native.burst(cb, iters as usize, false))
    });
    g.bench_function("native_one_submit", |b| {
        b.iter_custom(|iters| native.burst(cb, iters as usize, true))
    });
    for (name, on) in [("scheduler", false), ("scheduler_batched", true)] {
        sched.batching(on, |s| {
            g.bench_function(name, |b| b.iter_custom(|iters| s.burst(&gates, iters as usize)))
        });
    }
    g.finish();
    let bursts = if test_mode() { 2 } else { 50 };
    let mut best = [Duration::MAX; 4];
    let mut submits = (0u64, 0u64);
    for _ in 0..8 {
        best[0] = best[0].min(native.burst(cb, bursts, false));
        best[1] = best[1].min(native.burst(cb, bursts, true));
        best[2] = best[2].min(sched.batching(false, |s| s.burst(&gates, bursts)));
        let before = sched.ring.backend().submits();
        best[3] = best[3].min(sched.batching(true, |s| s.burst(&gates, bursts)));
        submits.0 += (bursts * BURST) as u64;
        submits.1 += sched.ring.backend().submits() - before;
    }
    let rate = |d: Duration| (bursts * BURST) as f64 / d.as_secs_f64();
    let [each, one, unbatched, batched] = best.map(rate);
    let per_submit = submits.0 as f64 / submits.1.max(1) as f64;
    println!(
        "burst of {BURST} jobs released by one signal: native one submit each (a1) {each:.0} \
         jobs/s, all in one submit (a2) {one:.0} jobs/s; scheduler, batching off {unbatched:.0} \
         jobs/s ({:.2}x a1), on {batched:.0} jobs/s ({:.2}x a1, {:.2}x a2, {per_submit:.2} jobs \
         per vkQueueSubmit)",
        unbatched / each,
        batched / each,
        batched / one,
    );
    metric("vulkan.burst.native_each.jobs_per_s", each);
    metric("vulkan.burst.native_one.jobs_per_s", one);
    metric("vulkan.burst.scheduler.jobs_per_s", unbatched);
    metric("vulkan.burst.batched.jobs_per_s", batched);
    metric("vulkan.burst.batched.jobs_per_submit", per_submit);
    metric("vulkan.burst.batched_vs_native_each", batched / each);
    metric("vulkan.burst.batched_vs_native_one", batched / one);
}

/// Device-loss recovery times (see the module docs), on a sibling of `dev`.
fn bench_device_loss(dev: &VulkanDevice) {
    const WATCHDOG: Duration = Duration::from_secs(60);
    let losses = if test_mode() { 2 } else { 8 };
    let run_one = |e: &Entity<VulkanRing>| {
        let f = e.job(VulkanJob::empty()).arm().expect("arm").push();
        f.wait_timeout(WATCHDOG).expect("a job on the new generation");
    };
    // Baseline: a logical device from scratch, then its first job.
    let mut fresh = Vec::new();
    for _ in 0..losses {
        let t = Instant::now();
        let d = dev.sibling().expect("sibling device");
        let ring = d.ring(0, SchedulerConfig::new("fresh")).expect("ring");
        let e = Entity::new(&[&ring], Priority::Normal).expect("entity");
        run_one(&e);
        fresh.push(t.elapsed());
        drop((e, ring));
        if d.close(WATCHDOG).is_err() {
            println!("warning: a sibling device was still referenced");
        }
    }
    let d = dev.sibling().expect("sibling device");
    let ring = d.ring(0, SchedulerConfig::new("loss")).expect("ring");
    let e = Entity::new(&[&ring], Priority::Normal).expect("entity");
    run_one(&e);
    let (mut failed, mut ready, mut first) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..losses {
        let gen = d.generation();
        let mut fences =
            vec![e.job(VulkanJob::empty().inject(JobFault::Hang)).arm().expect("arm").push()];
        fences.extend((0..8).map(|_| e.job(VulkanJob::empty()).arm().expect("arm").push()));
        let t = Instant::now();
        d.lose_device();
        for f in &fences {
            let r = f.wait_timeout(WATCHDOG);
            assert!(
                matches!(r, Err(gpusched::fence::WaitError::Failed(FenceError::DeviceLost))),
                "an in-flight job ended {r:?}, not DeviceLost"
            );
        }
        failed.push(t.elapsed());
        d.wait_generation(gen, WATCHDOG).expect("the next generation");
        ready.push(t.elapsed());
        run_one(&e);
        first.push(t.elapsed());
    }
    assert_eq!(d.generations(), losses as u64 + 1);
    drop((e, ring));
    if d.close(WATCHDOG).is_err() {
        println!("warning: the lost device was still referenced");
    }
    let mut line = format!("device loss ({losses} losses):");
    for (key, label, v) in [
        ("fences_failed", "lose_device -> every in-flight fence DeviceLost", &mut failed),
        ("generation_ready", "-> next generation ready", &mut ready),
        ("first_job_done", "-> first job on it done", &mut first),
        ("fresh_device_first_job", "baseline: new logical device + first job", &mut fresh),
    ] {
        let (p50, max) = (percentile(v, 0.5), percentile(v, 1.0));
        line += &format!(" {label} p50 {p50:?} max {max:?};");
        metric(&format!("vulkan.loss.{key}.p50_ns"), ns(p50));
        metric(&format!("vulkan.loss.{key}.max_ns"), ns(max));
    }
    println!("{line}");
}

/// Whether the section `name` (`empty`, `burst`, `chain`, `saxpy`, `loss`) runs: all of them,
/// unless `GPUSCHED_BENCH_VULKAN` lists some (comma-separated), for profiling one section.
fn section(name: &str) -> bool {
    std::env::var("GPUSCHED_BENCH_VULKAN").map_or(true, |only| only.split(',').any(|s| s == name))
}

fn bench_vulkan(c: &mut Criterion) {
    let dev = match VulkanDevice::new() {
        Ok(d) => d,
        Err(e) => {
            // Fails under CI or GPUSCHED_REQUIRE_VULKAN=1, skips elsewhere.
            vk_fault_layer::testing::skip_or_fail("bench_vulkan", format!("no Vulkan device: {e}"));
            return;
        }
    };
    let device = dev.name().to_owned();
    println!("vulkan device: {device}");
    let ring = dev.ring(0, SchedulerConfig::new("bench").credit_limit(64)).expect("ring");
    let entity = Entity::new(&[&ring], Priority::Normal).expect("entity");
    let sched = Sched { ring, entity };
    let mut native = Native::new(&dev);
    let (jobs, samples) = if test_mode() { (64, 16) } else { (2000, 400) };

    // Empty jobs.
    let empty_cb = native.record_empty();
    let empty = || VulkanJob::empty();
    if section("empty") {
        let tp = Throughput::Elements(BATCH);
        let paths = (&mut native, &sched);
        criterion_group3(c, "vulkan_empty_job", tp, BATCH, paths, empty_cb, &empty);
        let paths = measure(&mut native, empty_cb, &sched, &empty, jobs, samples);
        let submits = batched_submits(&sched, jobs, &empty);
        report("empty", "empty job", &device, paths, jobs, submits);
    }

    // A burst of jobs released by one signal.
    if section("burst") {
        bench_burst(c, &mut native, &sched, empty_cb);
    }

    // A chain of jobs across two rings.
    if section("chain") {
        chain::bench_chain(c, &dev);
    }

    // SAXPY over 1 MiB.
    let x = dev.buffer(u64::from(SAXPY_N) * 4).expect("x");
    let y = dev.buffer(u64::from(SAXPY_N) * 4).expect("y");
    let saxpy = move |ctx: &gpusched_vulkan::RecordCtx<'_>, cb, x: &Buffer, y: &Buffer| {
        let k = ctx.builtin(Builtin::Saxpy);
        let push = [2.0f32.to_ne_bytes(), SAXPY_N.to_ne_bytes()].concat();
        ctx.dispatch(cb, &k, &[x, y], &push, [SAXPY_N / 64, 1, 1])
    };
    let (xn, yn) = (x.clone(), y.clone());
    let saxpy_cb = native.record(&[x.clone(), y.clone()], |ctx, cb| saxpy(ctx, cb, &xn, &yn));
    let (xs, ys) = (x.clone(), y.clone());
    let make_saxpy = move || {
        let (xj, yj) = (xs.clone(), ys.clone());
        VulkanJob::new(move |ctx, cb| saxpy(ctx, cb, &xj, &yj)).reads(&xs).writes(&ys)
    };
    let (sjobs, ssamples) = if test_mode() { (8, 8) } else { (200, 200) };
    if section("saxpy") {
        let tp = Throughput::Bytes(3 * u64::from(SAXPY_N) * 4);
        let paths = (&mut native, &sched);
        criterion_group3(c, "vulkan_saxpy_1mib", tp, 1, paths, saxpy_cb, &make_saxpy);
        let paths = measure(&mut native, saxpy_cb, &sched, &make_saxpy, sjobs, ssamples);
        let submits = batched_submits(&sched, sjobs, &make_saxpy);
        report("saxpy", "saxpy 1 MiB", &device, paths, sjobs, submits);
    }

    drop((native, sched, make_saxpy, x, y, xn, yn));
    if section("loss") {
        bench_device_loss(&dev);
    }
    if dev.close(Duration::from_secs(60)).is_err() {
        println!("warning: the device was still referenced at the end of the bench");
    }
}

criterion_group!(benches, bench_vulkan);
criterion_main!(benches);
