//! A device generation's fault state ([`DeviceFaults`]): the injected-hang semaphores and the
//! busy kernel's calibration (how many workgroups make a [`JobFault::Slow`] job run for a
//! given time: measured once per device handle when it is created, carried over to each new
//! generation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ash::vk;

use super::{FaultState, JobFault, JobFaults, Kind};
use crate::device::DeviceCore;
use crate::error::{map_init, InitError};
use crate::sync::lock;

/// One device generation's injected-hang semaphores ([`JobFault::Hang`] and
/// [`JobFault::HangForever`]: a hung job's submission waits on the next value of one of them;
/// only the host signals them) and the busy kernel's calibration. Owned by its `DeviceCore`,
/// which destroys it ([`DeviceFaults::destroy`]) before its `VkDevice`.
#[derive(Debug)]
pub(crate) struct DeviceFaults {
    /// Released by the timeout handler.
    hang: vk::Semaphore,
    /// Released only at teardown (stands in for a hang nothing can release).
    wedge: vk::Semaphore,
    /// The last wait values handed out.
    hang_next: AtomicU64,
    wedge_next: AtomicU64,
    /// The last values signalled (values must increase), `(hang, wedge)`.
    released: Mutex<(u64, u64)>,
    /// Nanoseconds one workgroup of the busy kernel (16 rounds) takes (0: not calibrated).
    busy_ns_per_group: AtomicU64,
}

impl DeviceFaults {
    /// Creates the hang semaphores on `d` (timeline semaphores enabled). On failure nothing
    /// is left behind.
    pub(crate) fn create(d: &ash::Device) -> Result<DeviceFaults, InitError> {
        let semaphore = || {
            let mut type_info =
                vk::SemaphoreTypeCreateInfo::default().semaphore_type(vk::SemaphoreType::TIMELINE);
            let sinfo = vk::SemaphoreCreateInfo::default().push_next(&mut type_info);
            // SAFETY: valid device; timeline semaphores are enabled.
            unsafe { d.create_semaphore(&sinfo, None) }
                .map_err(|c| map_init("vkCreateSemaphore", c))
        };
        let hang = semaphore()?;
        let wedge = match semaphore() {
            Ok(s) => s,
            Err(e) => {
                // SAFETY: an unused semaphore of this device.
                unsafe { d.destroy_semaphore(hang, None) };
                return Err(e);
            }
        };
        Ok(DeviceFaults {
            hang,
            wedge,
            hang_next: AtomicU64::new(0),
            wedge_next: AtomicU64::new(0),
            released: Mutex::new((0, 0)),
            busy_ns_per_group: AtomicU64::new(0),
        })
    }

    /// Destroys the semaphores.
    ///
    /// # Safety
    /// `d` created them, and no submission waits on them any more (every hang was released
    /// and the device idled).
    pub(crate) unsafe fn destroy(&self, d: &ash::Device) {
        // SAFETY: the caller's contract.
        unsafe {
            d.destroy_semaphore(self.hang, None);
            d.destroy_semaphore(self.wedge, None);
        }
    }

    /// For a hung job being submitted (under its queue's lock): the semaphore and value its
    /// submission waits on (the next value of the wedge semaphore for
    /// [`JobFault::HangForever`], of the hang semaphore otherwise, kept in the job for the
    /// timeout handler), counted in `counts`. `None` for any other job. Allocation-free.
    pub(crate) fn hang_wait(
        &self,
        job: &mut JobFaults,
        counts: &FaultState,
    ) -> Option<(vk::Semaphore, u64)> {
        match job.fault {
            Some(JobFault::HangForever) => {
                counts.count(Kind::HangForever);
                Some((self.wedge, self.wedge_next.fetch_add(1, Ordering::SeqCst) + 1))
            }
            Some(JobFault::Hang) => {
                counts.count(Kind::Hang);
                let v = self.hang_next.fetch_add(1, Ordering::SeqCst) + 1;
                job.hang = Some(v);
                Some((self.hang, v))
            }
            _ => None,
        }
    }

    /// Releases injected hangs up to wait value `value` (host signals on `d`, one value at a
    /// time: the validation layer wants no signal past a pending wait). Allocation-free.
    pub(crate) fn release_hang(&self, d: &ash::Device, value: u64) {
        let mut r = lock(&self.released);
        while r.0 < value {
            r.0 += 1;
            signal(d, self.hang, r.0);
        }
    }

    /// Releases every injected hang handed out so far, and with `wedges` the un-releasable
    /// ones too (teardown: a simulated wedge must not leak the device).
    pub(crate) fn release_injected(&self, d: &ash::Device, wedges: bool) {
        self.release_hang(d, self.hang_next.load(Ordering::SeqCst));
        if wedges {
            let mut r = lock(&self.released);
            let v = self.wedge_next.load(Ordering::SeqCst);
            if v > r.1 {
                signal(d, self.wedge, v);
                r.1 = v;
            }
        }
    }

    /// Takes over the busy kernel's calibration of the generation `old` (a new generation
    /// does not measure again: the old one's queue may still be running work).
    pub(crate) fn inherit_calibration(&self, old: &DeviceFaults) {
        let ns = old.busy_ns_per_group.load(Ordering::Relaxed);
        self.busy_ns_per_group.store(ns, Ordering::Relaxed);
    }

    /// Busy-kernel workgroups (16 rounds each) that run about `d`, at most `max`.
    pub(super) fn busy_groups_for(&self, d: Duration, max: u32) -> u32 {
        let per = self.busy_ns_per_group.load(Ordering::Relaxed).max(1);
        let groups = (d.as_nanos() / u128::from(per)).max(1);
        groups.min(u128::from(max)) as u32
    }
}

fn signal(d: &ash::Device, sem: vk::Semaphore, value: u64) {
    let info = vk::SemaphoreSignalInfo::default().semaphore(sem).value(value);
    // SAFETY: a timeline semaphore of this device; `value` is above the last value
    // signalled (callers hold `released`). A lost device may refuse: nothing waits then.
    if let Err(e) = unsafe { d.signal_semaphore(&info) } {
        if e != vk::Result::ERROR_DEVICE_LOST {
            diag!(warn, target: "gpusched_vulkan", ?e, "releasing an injected hang failed");
        }
    }
}

/// Measures the busy kernel on `core`'s idle queue (a new device, before any ring exists):
/// one warm-up dispatch, then the median of three timed ones (host time from submit to fence,
/// so it includes the submission latency: negligible at milliseconds). Keeps a default
/// (lavapipe on a 2-core machine) on failure. The measure is approximate (shared machines),
/// so a `Slow` job meant to run just under the timeout may overrun it: the timeout handler
/// blames a job still running at its first timeout (`TimedOut`); only a ring that then makes
/// no progress across more timeouts (`STUCK_AFTER`) is declared lost.
pub(crate) fn calibrate_busy(core: &DeviceCore) {
    const DEFAULT_NS: u64 = 50_000;
    const GROUPS: u32 = 128;
    let measured = time_busy(core, 4).and_then(|_| {
        let mut runs = [0u64; 3];
        for r in &mut runs {
            *r = time_busy(core, GROUPS)?.as_nanos() as u64 / u64::from(GROUPS);
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
    core.faults.busy_ns_per_group.store(ns, Ordering::Relaxed);
}

/// Host time of one busy-kernel dispatch of `groups` workgroups on `core`'s first queue.
fn time_busy(core: &DeviceCore, groups: u32) -> Result<Duration, vk::Result> {
    let d = &core.device;
    let pinfo = vk::CommandPoolCreateInfo::default().queue_family_index(core.queue_family);
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
        let ctx = crate::RecordCtx { core, declared: &[] };
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
            let q = core.queues[0].lock();
            // SAFETY: the queue is locked; the command buffer is executable.
            unsafe { d.queue_submit(*q, &submit, fence) }
        }
        // SAFETY: the fence belongs to this device.
        .and_then(|()| unsafe { d.wait_for_fences(&[fence], true, 10_000_000_000) });
        let elapsed = t0.elapsed();
        if r.is_err() {
            // SAFETY: the queue idles first (under its lock: an adopted device's engine may
            // use its other queues, so not `vkDeviceWaitIdle`); nothing else is pending on
            // the fence.
            let _ = unsafe { d.queue_wait_idle(*core.queues[0].lock()) };
        }
        // SAFETY: signalled (or the queue idled above).
        unsafe { d.destroy_fence(fence, None) };
        r.map(|()| elapsed)
    };
    let r = run();
    // SAFETY: the command buffer completed (or the device idled); freed with the pool.
    unsafe { d.destroy_command_pool(pool, None) };
    r
}
