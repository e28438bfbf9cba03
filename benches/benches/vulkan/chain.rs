//! Cross-ring chains (`vulkan_cross_ring_chain`): a chain of [`CHAIN`] empty jobs, each
//! depending on the one before, four ways:
//! - `native` (baseline): pre-recorded empty command buffers submitted alternately to two
//!   queues of the main family (the same queue when the family has one), each submission
//!   waiting on the previous one's timeline value and signalling its own: the GPU resolves
//!   every link, the host only submits and waits once;
//! - `one_ring`: the chain on one ring, each job an explicit dependency of the next: the
//!   scheduler's same-ring shortcut (a dependency on the same scheduler only needs
//!   "scheduled") lets the jobs go to the queue back to back, the queue orders them;
//! - `cross_ring`: the chain alternating between two rings (on the two queues `native`
//!   uses), with cross-ring waits on the device (the default): the next job is submitted
//!   once the previous one is, and waits on its ring's timeline semaphore;
//! - `cross_ring_host`: the same with native waits off (`VulkanRing::set_native_waits`):
//!   the next job is submitted when the previous job's fence signals (completion thread,
//!   callback, pump, `vkQueueSubmit`), so each link costs a round trip through the host.
//!
//! Reported: jobs per second of each (best of 8 interleaved rounds), the ratios to native,
//! the cost of one cross-ring link each way (`cross_ring.ns_per_link`,
//! `cross_ring_host.ns_per_link`) and the device waits' speed-up over host waits
//! (`cross_ring_vs_host`).

use std::time::{Duration, Instant};

use ash::vk;
use criterion::{Criterion, Throughput};
use gpusched::fence::Fence;
use gpusched::{Entity, Priority, Scheduler, SchedulerConfig};
use gpusched_benches::{metric, test_mode};
use gpusched_vulkan::{VulkanDevice, VulkanJob, VulkanRing};

/// Jobs in one chain.
pub(crate) const CHAIN: usize = 32;

/// The native chain: two queues of the main family, a timeline semaphore, an empty command
/// buffer (simultaneous use).
struct NativeChain {
    dev: VulkanDevice,
    queues: [u32; 2],
    sem: vk::Semaphore,
    pool: vk::CommandPool,
    cb: vk::CommandBuffer,
    value: u64,
}

impl NativeChain {
    fn new(dev: &VulkanDevice, queues: [u32; 2]) -> NativeChain {
        let d = dev.ash_device();
        let mut ty =
            vk::SemaphoreTypeCreateInfo::default().semaphore_type(vk::SemaphoreType::TIMELINE);
        let sinfo = vk::SemaphoreCreateInfo::default().push_next(&mut ty);
        let pinfo = vk::CommandPoolCreateInfo::default().queue_family_index(dev.queue_family());
        let info = vk::CommandBufferAllocateInfo::default().command_buffer_count(1);
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::SIMULTANEOUS_USE);
        // SAFETY: valid device and create infos; the pool is used by this thread only; the
        // command buffer is fresh, then recorded empty.
        unsafe {
            let sem = d.create_semaphore(&sinfo, None).expect("semaphore");
            let pool = d.create_command_pool(&pinfo, None).expect("pool");
            let cb = d.allocate_command_buffers(&info.command_pool(pool)).expect("cb")[0];
            d.begin_command_buffer(cb, &begin).expect("begin");
            d.end_command_buffer(cb).expect("end");
            NativeChain { dev: dev.clone(), queues, sem, pool, cb, value: 0 }
        }
    }

    /// `chains` chains of [`CHAIN`] submissions, each waiting on the one before.
    fn run(&mut self, chains: usize) -> Duration {
        let d = self.dev.ash_device();
        let start = Instant::now();
        for _ in 0..chains {
            for i in 0..CHAIN {
                let wait = [self.value];
                self.value += 1;
                let signal = [self.value];
                let sems = [self.sem];
                let stages = [vk::PipelineStageFlags::ALL_COMMANDS];
                let cbs = [self.cb];
                let n = usize::from(i > 0);
                let mut tl = vk::TimelineSemaphoreSubmitInfo::default()
                    .wait_semaphore_values(&wait[..n])
                    .signal_semaphore_values(&signal);
                let submit = [vk::SubmitInfo::default()
                    .wait_semaphores(&sems[..n])
                    .wait_dst_stage_mask(&stages[..n])
                    .command_buffers(&cbs)
                    .signal_semaphores(&sems)
                    .push_next(&mut tl)];
                // SAFETY: the queue is locked by `with_queue`; the command buffer allows
                // simultaneous use; values increase, each wait is on a value submitted before.
                self.dev
                    .with_queue(self.queues[i % 2], |q| unsafe {
                        d.queue_submit(q, &submit, vk::Fence::null())
                    })
                    .expect("submit");
            }
            self.wait();
        }
        start.elapsed()
    }

    fn wait(&self) {
        let sems = [self.sem];
        let values = [self.value];
        let info = vk::SemaphoreWaitInfo::default().semaphores(&sems).values(&values);
        // SAFETY: our semaphore.
        unsafe { self.dev.ash_device().wait_semaphores(&info, 60_000_000_000) }.expect("wait");
    }
}

impl Drop for NativeChain {
    fn drop(&mut self) {
        self.wait();
        let d = self.dev.ash_device();
        // SAFETY: all our work is done.
        unsafe {
            d.destroy_command_pool(self.pool, None);
            d.destroy_semaphore(self.sem, None);
        }
    }
}

/// `chains` chains of [`CHAIN`] empty jobs, job `i` on `entities[i % len]`, each depending
/// on the one before.
fn sched_chain(entities: &[&Entity<VulkanRing>], chains: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..chains {
        let mut prev: Option<Fence> = None;
        for i in 0..CHAIN {
            let mut job = entities[i % entities.len()].job(VulkanJob::empty());
            if let Some(p) = prev.take() {
                job = job.dependency(p);
            }
            prev = Some(job.arm().expect("arm").push());
        }
        if let Some(f) = prev {
            f.wait_timeout(Duration::from_secs(60)).expect("chain");
        }
    }
    start.elapsed()
}

/// The cross-ring chain scenario (see the module docs).
pub(crate) fn bench_chain(c: &mut Criterion, dev: &VulkanDevice) {
    let queues = [0, 1.min(dev.queue_count() - 1)];
    let ring = |q: u32, name: &str| -> Scheduler<VulkanRing> {
        dev.ring(q, SchedulerConfig::new(name).credit_limit(64)).expect("ring")
    };
    let (ra, rb) = (ring(queues[0], "chain-a"), ring(queues[1], "chain-b"));
    let ea = Entity::new(&[&ra], Priority::Normal).expect("entity");
    let eb = Entity::new(&[&rb], Priority::Normal).expect("entity");
    let mut native = NativeChain::new(dev, queues);
    println!(
        "cross-ring chain of {CHAIN} empty jobs over queues {} and {} of family {}",
        queues[0],
        queues[1],
        dev.queue_family()
    );

    let mut g = c.benchmark_group("vulkan_cross_ring_chain");
    g.throughput(Throughput::Elements(CHAIN as u64));
    g.bench_function("native", |b| b.iter_custom(|iters| native.run(iters as usize)));
    g.bench_function("one_ring", |b| b.iter_custom(|iters| sched_chain(&[&ea], iters as usize)));
    g.bench_function("cross_ring", |b| {
        b.iter_custom(|iters| sched_chain(&[&ea, &eb], iters as usize))
    });
    let host_waits = |on: bool| {
        ra.backend().set_native_waits(!on);
        rb.backend().set_native_waits(!on);
    };
    g.bench_function("cross_ring_host", |b| {
        b.iter_custom(|iters| {
            host_waits(true);
            let d = sched_chain(&[&ea, &eb], iters as usize);
            host_waits(false);
            d
        })
    });
    g.finish();

    let chains = if test_mode() { 2 } else { 50 };
    let mut best = [Duration::MAX; 4];
    for _ in 0..8 {
        best[0] = best[0].min(native.run(chains));
        best[1] = best[1].min(sched_chain(&[&ea], chains));
        best[2] = best[2].min(sched_chain(&[&ea, &eb], chains));
        host_waits(true);
        best[3] = best[3].min(sched_chain(&[&ea, &eb], chains));
        host_waits(false);
    }
    let rate = |d: Duration| (chains * CHAIN) as f64 / d.as_secs_f64();
    let [native_r, one_r, cross_r, host_r] = best.map(rate);
    let link_ns = best[2].as_nanos() as f64 / (chains * CHAIN) as f64;
    let host_link_ns = best[3].as_nanos() as f64 / (chains * CHAIN) as f64;
    println!(
        "chain: native {native_r:.0} jobs/s; one ring {one_r:.0} jobs/s ({:.2}x native); two \
         rings {cross_r:.0} jobs/s ({:.2}x native, {link_ns:.0} ns per link); two rings with \
         host waits {host_r:.0} jobs/s ({:.2}x native, {host_link_ns:.0} ns per link)",
        one_r / native_r,
        cross_r / native_r,
        host_r / native_r,
    );
    metric("vulkan.chain.native.jobs_per_s", native_r);
    metric("vulkan.chain.one_ring.jobs_per_s", one_r);
    metric("vulkan.chain.cross_ring.jobs_per_s", cross_r);
    metric("vulkan.chain.one_ring_vs_native", one_r / native_r);
    metric("vulkan.chain.cross_ring_vs_native", cross_r / native_r);
    metric("vulkan.chain.cross_ring.ns_per_link", link_ns);
    metric("vulkan.chain.cross_ring_host.jobs_per_s", host_r);
    metric("vulkan.chain.cross_ring_host_vs_native", host_r / native_r);
    metric("vulkan.chain.cross_ring_host.ns_per_link", host_link_ns);
    metric("vulkan.chain.cross_ring_vs_host", cross_r / host_r);
    drop((ea, eb, ra, rb));
}
