//! Native Vulkan submission vs the same jobs through the scheduler, on one device (lavapipe
//! unless `GPUSCHED_DEVICE` picks another):
//! - `empty/native`: the baseline, raw `vkQueueSubmit` of one pre-recorded empty command
//!   buffer per job, each signalling the next value of a timeline semaphore, then one
//!   `vkWaitSemaphores` for the last value;
//! - `empty/scheduler`: the same number of empty jobs armed and pushed on an entity of a
//!   `VulkanRing` (recording, the ring's barriers, one submit per job, the completion
//!   thread), then a wait on the last finished fence;
//! - `saxpy_1mib/native` and `saxpy_1mib/scheduler`: the same with `y = 2x + y` over 1 MiB
//!   (262,144 floats) per job.
//!
//! After criterion's numbers, each group prints jobs per second from its own timed loop, the
//! throughput ratio scheduler/native, and submit→completion latency p50/p99 for single jobs
//! (native: the submitting thread blocks in `vkWaitSemaphores`; scheduler: push, then wait on
//! the finished fence, which the completion thread signals).
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::time::{Duration, Instant};

use ash::vk;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpusched::{Entity, Priority, Scheduler, SchedulerConfig};
use gpusched_vulkan::{Buffer, Builtin, VulkanDevice, VulkanJob, VulkanRing};

/// Jobs per measured iteration.
const BATCH: u64 = 64;
/// Floats in the SAXPY vectors (1 MiB each).
const SAXPY_N: u32 = 1 << 18;

fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

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

    /// A command buffer recorded by `f` (with the ring's barriers, for a like-for-like job).
    fn record(
        &self,
        declared: &[Buffer],
        f: impl FnOnce(
            &gpusched_vulkan::RecordCtx<'_>,
            vk::CommandBuffer,
        ) -> Result<(), gpusched_vulkan::RecordError>,
    ) -> vk::CommandBuffer {
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
        self.dev
            .record_into(cb, declared, |ctx, cb| {
                ctx.barrier(cb);
                f(ctx, cb)
            })
            .expect("record");
        // SAFETY: recording.
        unsafe { d.end_command_buffer(cb).expect("end") };
        cb
    }

    fn submit(&mut self, cb: vk::CommandBuffer) -> u64 {
        self.value += 1;
        let cbs = [cb];
        let sems = [self.sem];
        let values = [self.value];
        let mut tl = vk::TimelineSemaphoreSubmitInfo::default().signal_semaphore_values(&values);
        let submit = [vk::SubmitInfo::default()
            .command_buffers(&cbs)
            .signal_semaphores(&sems)
            .push_next(&mut tl)];
        let d = self.dev.ash_device();
        // SAFETY: the queue is locked by `with_queue`; the command buffer allows simultaneous
        // use; values increase.
        self.dev
            .with_queue(0, |q| unsafe { d.queue_submit(q, &submit, vk::Fence::null()) })
            .expect("submit");
        self.value
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

/// Jobs through the scheduler.
struct Sched {
    _ring: Scheduler<VulkanRing>,
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
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn report(
    name: &str,
    device: &str,
    native: (Duration, Vec<Duration>),
    sched: (Duration, Vec<Duration>),
    jobs: u64,
) {
    let (nt, mut nl) = native;
    let (st, mut sl) = sched;
    let nr = jobs as f64 / nt.as_secs_f64();
    let sr = jobs as f64 / st.as_secs_f64();
    println!(
        "{name} on {device}: native {nr:.0} jobs/s, scheduler {sr:.0} jobs/s, ratio scheduler/native {:.2}",
        sr / nr
    );
    println!(
        "{name} latency submit->completion: native p50 {:?} p99 {:?}; scheduler p50 {:?} p99 {:?}",
        percentile(&mut nl, 0.5),
        percentile(&mut nl, 0.99),
        percentile(&mut sl, 0.5),
        percentile(&mut sl, 0.99)
    );
}

fn bench_vulkan(c: &mut Criterion) {
    let dev = match VulkanDevice::new() {
        Ok(d) => d,
        Err(e) => {
            println!("SKIPPED: no Vulkan device: {e}");
            return;
        }
    };
    let device = dev.name().to_owned();
    let ring = dev.ring(0, SchedulerConfig::new("bench").credit_limit(64)).expect("ring");
    let entity = Entity::new(&[&ring], Priority::Normal).expect("entity");
    let sched = Sched { _ring: ring, entity };
    let mut native = Native::new(&dev);
    let (jobs, samples) = if test_mode() { (64, 16) } else { (4000, 1000) };

    // Empty jobs.
    let empty_cb = native.record(&[], |_, _| Ok(()));
    let empty = || VulkanJob::empty();
    let mut g = c.benchmark_group("vulkan_empty_job");
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("native", |b| b.iter_custom(|iters| native.run(empty_cb, iters * BATCH)));
    g.bench_function("scheduler", |b| b.iter_custom(|iters| sched.run(iters * BATCH, &empty)));
    g.finish();
    let n = (native.run(empty_cb, jobs), native.latency(empty_cb, samples));
    let s = (sched.run(jobs, &empty), sched.latency(samples, &empty));
    report("empty job", &device, n, s, jobs);

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
    let mut g = c.benchmark_group("vulkan_saxpy_1mib");
    g.throughput(Throughput::Bytes(3 * u64::from(SAXPY_N) * 4));
    g.bench_function("native", |b| b.iter_custom(|iters| native.run(saxpy_cb, iters)));
    g.bench_function("scheduler", |b| b.iter_custom(|iters| sched.run(iters, &make_saxpy)));
    g.finish();
    let n = (native.run(saxpy_cb, sjobs), native.latency(saxpy_cb, ssamples));
    let s = (sched.run(sjobs, &make_saxpy), sched.latency(ssamples, &make_saxpy));
    report("saxpy 1 MiB", &device, n, s, sjobs);

    drop((native, sched, make_saxpy, x, y, xn, yn));
    if dev.close(Duration::from_secs(60)).is_err() {
        println!("warning: the device was still referenced at the end of the bench");
    }
}

criterion_group!(benches, bench_vulkan);
criterion_main!(benches);
