//! The busy kernel's timing on one core: how many workgroups make a `JobFault::Slow` job run
//! for a given time (measured once per device with `fault-injection`, carried over to each
//! new generation).

use std::sync::atomic::Ordering;
#[cfg(feature = "fault-injection")]
use std::time::Duration;
#[cfg(feature = "fault-injection")]
use std::time::Instant;

#[cfg(feature = "fault-injection")]
use ash::vk;

use super::DeviceCore;
use crate::sync::lock;

#[cfg(feature = "fault-injection")]
impl DeviceCore {
    /// Busy-kernel workgroups (16 rounds each) that run about `d` on this device.
    pub(crate) fn busy_groups_for(&self, d: Duration) -> u32 {
        let per = self.busy_ns_per_group.load(Ordering::Relaxed).max(1);
        let groups = (d.as_nanos() / u128::from(per)).max(1);
        groups.min(u128::from(self.max_workgroups[0])) as u32
    }

    /// Measures the busy kernel on the idle queue: one warm-up dispatch, then the median of
    /// three timed ones (host time from submit to fence, so it includes the submission
    /// latency: negligible at milliseconds). Keeps a default (lavapipe on a 2-core machine)
    /// on failure. The measure is approximate (shared machines), so a `Slow` job meant to run
    /// just under the timeout may overrun it: the timeout handler blames a job still running
    /// at its first timeout (`TimedOut`); only a ring that then makes no progress across
    /// more timeouts (`STUCK_AFTER`) is declared lost.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn calibrate_busy(&self) {
        const DEFAULT_NS: u64 = 50_000;
        const GROUPS: u32 = 128;
        let measured = self.time_busy(4).and_then(|_| {
            let mut runs = [0u64; 3];
            for r in &mut runs {
                *r = self.time_busy(GROUPS)?.as_nanos() as u64 / u64::from(GROUPS);
            }
            runs.sort_unstable();
            Ok(runs[1].max(1))
        });
        let ns = match measured {
            Ok(ns) => ns,
            Err(e) => {
                tracing::warn!(target: "gpusched_vulkan", ?e, "busy kernel calibration failed");
                DEFAULT_NS
            }
        };
        self.busy_ns_per_group.store(ns, Ordering::Relaxed);
    }

    #[cfg(feature = "fault-injection")]
    fn time_busy(&self, groups: u32) -> Result<Duration, vk::Result> {
        let d = &self.device;
        let pinfo = vk::CommandPoolCreateInfo::default().queue_family_index(self.queue_family);
        // SAFETY: valid device and family.
        let pool = unsafe { d.create_command_pool(&pinfo, None) }?;
        let run = || -> Result<Duration, vk::Result> {
            let info = vk::CommandBufferAllocateInfo::default()
                .command_pool(pool)
                .level(vk::CommandBufferLevel::PRIMARY)
                .command_buffer_count(1);
            // SAFETY: the pool is ours.
            let cb = unsafe { d.allocate_command_buffers(&info) }?[0];
            let begin = vk::CommandBufferBeginInfo::default()
                .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
            // SAFETY: fresh command buffer.
            unsafe { d.begin_command_buffer(cb, &begin) }?;
            let ctx = crate::RecordCtx { core: self, declared: &[] };
            if ctx.busy(cb, 16, groups).is_err() {
                return Err(vk::Result::ERROR_UNKNOWN);
            }
            // SAFETY: recording.
            unsafe { d.end_command_buffer(cb) }?;
            // SAFETY: valid device.
            let fence = unsafe { d.create_fence(&vk::FenceCreateInfo::default(), None) }?;
            let cbs = [cb];
            let submit = [vk::SubmitInfo::default().command_buffers(&cbs)];
            let t0 = Instant::now();
            let r = {
                let q = lock(&self.queues[0].queue);
                // SAFETY: the queue is locked; the command buffer is executable.
                unsafe { d.queue_submit(*q, &submit, fence) }
            }
            // SAFETY: the fence belongs to this device.
            .and_then(|()| unsafe { d.wait_for_fences(&[fence], true, 10_000_000_000) });
            let elapsed = t0.elapsed();
            if r.is_err() {
                // SAFETY: the device idles first; nothing else is pending on the fence.
                let _ = unsafe { d.device_wait_idle() };
            }
            // SAFETY: signalled (or the device idled above).
            unsafe { d.destroy_fence(fence, None) };
            r.map(|()| elapsed)
        };
        let r = run();
        // SAFETY: the command buffer completed (or the device idled); freed with the pool.
        unsafe { d.destroy_command_pool(pool, None) };
        r
    }
}
