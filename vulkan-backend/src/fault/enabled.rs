//! Fault injection with the feature on: the plan and counters of a device handle
//! ([`FaultState`]), one job's fault (`JobFaults`), the injected hang a ring's submission waits
//! for (`PendingHang`), and a device generation's hang semaphores and busy-kernel calibration
//! ([`DeviceFaults`], in `enabled/device.rs`). `disabled.rs` mirrors the crate-internal part of
//! this API with zero-sized no-ops.

mod device;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ash::vk;

pub(crate) use self::device::{calibrate_busy, DeviceFaults};
use crate::device::DeviceCore;
use crate::error::RecordError;
use crate::sync::lock;

/// Whether fault injection is compiled in (guards loops that only look for injected state).
pub(crate) const ENABLED: bool = true;

/// A fault injected into one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobFault {
    /// The submission waits on a host-signalled timeline value; the timeout handler releases
    /// it (the job reports `TimedOut`, jobs behind it complete).
    Hang,
    /// Stands in for a real shader hang: nothing in the process can release it, so the
    /// device is declared lost (every unfinished fence: `DeviceLost`) and recreated.
    HangForever,
    /// The busy kernel is recorded first, sized to run about this long.
    Slow(Duration),
    /// `vkQueueSubmit` reports this instead of submitting.
    FailSubmit(SubmitFault),
    /// The recording is dropped: arming fails with a typed `RecordError`, no fence.
    DropRecording,
}

/// The failure an injected [`JobFault::FailSubmit`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitFault {
    /// `VK_ERROR_OUT_OF_DEVICE_MEMORY`: the job fails (`Driver(errno::ENOMEM)`), the device lives on.
    OutOfDeviceMemory,
    /// `VK_ERROR_DEVICE_LOST`: the device-loss path (every fence `DeviceLost`, recreation).
    DeviceLost,
}

/// A seeded plan of random faults for one device handle (builder). Probabilities are per
/// armed job (per buffer allocation for [`fail_buffer_alloc`](FaultPlan::fail_buffer_alloc))
/// and clamped to `0.0..=1.0`; at most one job fault is drawn per job, in the order hang,
/// slow, fail-submit, drop-recording. A job with a fault of its own
/// ([`VulkanJob::inject`](crate::VulkanJob::inject)) keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    seed: u64,
    hang: f64,
    slow: f64,
    slow_for: Duration,
    fail_submit: f64,
    drop_recording: f64,
    fail_buffer_alloc: f64,
    lose_device_after: Option<u64>,
}

impl FaultPlan {
    /// A plan that injects nothing yet, drawing from `seed`.
    pub fn new(seed: u64) -> Self {
        FaultPlan {
            seed,
            hang: 0.0,
            slow: 0.0,
            slow_for: Duration::ZERO,
            fail_submit: 0.0,
            drop_recording: 0.0,
            fail_buffer_alloc: 0.0,
            lose_device_after: None,
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Hangs a job ([`JobFault::Hang`]) with probability `p`.
    pub fn hang(mut self, p: f64) -> Self {
        self.hang = p.clamp(0.0, 1.0);
        self
    }

    /// Makes a job slow ([`JobFault::Slow`] of `d`) with probability `p`.
    pub fn slow(mut self, p: f64, d: Duration) -> Self {
        self.slow = p.clamp(0.0, 1.0);
        self.slow_for = d;
        self
    }

    /// Fails a job's submission with `VK_ERROR_OUT_OF_DEVICE_MEMORY` with probability `p`
    /// (device loss is [`lose_device_after`](FaultPlan::lose_device_after)).
    pub fn fail_submit(mut self, p: f64) -> Self {
        self.fail_submit = p.clamp(0.0, 1.0);
        self
    }

    /// Drops a job's recording ([`JobFault::DropRecording`]) with probability `p`.
    pub fn drop_recording(mut self, p: f64) -> Self {
        self.drop_recording = p.clamp(0.0, 1.0);
        self
    }

    /// Fails a buffer allocation with probability `p`.
    pub fn fail_buffer_alloc(mut self, p: f64) -> Self {
        self.fail_buffer_alloc = p.clamp(0.0, 1.0);
        self
    }

    /// Loses the device once, when submitting the job after the first `n` jobs submitted
    /// since the plan was set (its `vkQueueSubmit` reports `VK_ERROR_DEVICE_LOST`).
    pub fn lose_device_after(mut self, n_jobs: u64) -> Self {
        self.lose_device_after = Some(n_jobs);
        self
    }
}

/// Faults injected so far on a device handle, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultStats {
    /// Releasable hangs submitted.
    pub hangs: u64,
    /// Un-releasable hangs submitted.
    pub hangs_forever: u64,
    /// Slow jobs recorded.
    pub slow: u64,
    /// Submissions failed with `VK_ERROR_OUT_OF_DEVICE_MEMORY`.
    pub failed_submits: u64,
    /// Recordings dropped.
    pub dropped_recordings: u64,
    /// Buffer allocations failed.
    pub failed_buffer_allocs: u64,
    /// Device losses injected (a failed submission, the plan's `lose_device_after`, or
    /// [`VulkanDevice::lose_device`](crate::VulkanDevice::lose_device)).
    pub device_losses: u64,
}

/// The kinds counted in [`FaultStats`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Hang = 0,
    HangForever,
    Slow,
    FailedSubmit,
    DroppedRecording,
    FailedBufferAlloc,
    DeviceLoss,
}

/// splitmix64.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        // Always draw, so that every job consumes the same number of values.
        let x = self.next_f64();
        x < p
    }
}

/// A device handle's fault state (shared by its generations).
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    plan: Mutex<Option<(FaultPlan, Rng)>>,
    counts: [AtomicU64; 7],
    /// Jobs submitted since the plan was set, and the count after which the device is lost
    /// (`u64::MAX`: never). Atomics: read in `run_job`, inside a signalling section.
    submitted: AtomicU64,
    lose_after: AtomicU64,
}

impl FaultState {
    pub(crate) fn new() -> Self {
        let s = FaultState::default();
        s.lose_after.store(u64::MAX, Ordering::Relaxed);
        s
    }

    pub(crate) fn set_plan(&self, plan: Option<FaultPlan>) {
        let mut p = lock(&self.plan);
        self.submitted.store(0, Ordering::SeqCst);
        let after = plan.as_ref().and_then(|p| p.lose_device_after).unwrap_or(u64::MAX);
        self.lose_after.store(after, Ordering::SeqCst);
        *p = plan.map(|plan| {
            let rng = Rng(plan.seed);
            (plan, rng)
        });
    }

    /// The fault the plan gives the job being armed (arm time, outside signalling sections).
    fn draw_job(&self) -> Option<JobFault> {
        let mut p = lock(&self.plan);
        let (plan, rng) = p.as_mut()?;
        let hang = rng.chance(plan.hang);
        let slow = rng.chance(plan.slow);
        let fail = rng.chance(plan.fail_submit);
        let drop = rng.chance(plan.drop_recording);
        if hang {
            Some(JobFault::Hang)
        } else if slow {
            Some(JobFault::Slow(plan.slow_for))
        } else if fail {
            Some(JobFault::FailSubmit(SubmitFault::OutOfDeviceMemory))
        } else if drop {
            Some(JobFault::DropRecording)
        } else {
            None
        }
    }

    /// Whether the plan fails this buffer allocation.
    fn draw_buffer_alloc(&self) -> bool {
        let mut p = lock(&self.plan);
        match p.as_mut() {
            Some((plan, rng)) => rng.chance(plan.fail_buffer_alloc),
            None => false,
        }
    }

    /// Counts a submission; whether it is the one that loses the device. Allocation-free.
    fn lose_now(&self) -> bool {
        let after = self.lose_after.load(Ordering::Relaxed);
        if after == u64::MAX {
            return false;
        }
        let n = self.submitted.fetch_add(1, Ordering::SeqCst);
        n == after
            && self
                .lose_after
                .compare_exchange(after, u64::MAX, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    pub(crate) fn count(&self, kind: Kind) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> FaultStats {
        let c = |k: Kind| self.counts[k as usize].load(Ordering::Relaxed);
        FaultStats {
            hangs: c(Kind::Hang),
            hangs_forever: c(Kind::HangForever),
            slow: c(Kind::Slow),
            failed_submits: c(Kind::FailedSubmit),
            dropped_recordings: c(Kind::DroppedRecording),
            failed_buffer_allocs: c(Kind::FailedBufferAlloc),
            device_losses: c(Kind::DeviceLoss),
        }
    }

    /// Arm time (`prepare_job`, outside signalling sections): every armed job draws
    /// (reproducible plans); a job's own fault wins.
    pub(crate) fn arm(&self, job: &mut JobFaults) {
        let drawn = self.draw_job();
        if job.fault.is_none() {
            job.fault = drawn;
        }
    }

    /// Counts what recording made of the job's fault: a slow job recorded, a recording
    /// dropped.
    pub(crate) fn count_recording(
        &self,
        job: &JobFaults,
        recorded: &Result<vk::CommandBuffer, RecordError>,
    ) {
        match recorded {
            Ok(_) if matches!(job.fault, Some(JobFault::Slow(_))) => self.count(Kind::Slow),
            Err(RecordError::RecordingDropped) => self.count(Kind::DroppedRecording),
            _ => {}
        }
    }

    /// Whether the plan fails this buffer allocation (counted).
    pub(crate) fn fail_buffer_alloc(&self) -> bool {
        let fail = self.draw_buffer_alloc();
        if fail {
            self.count(Kind::FailedBufferAlloc);
        }
        fail
    }

    /// The code an injected submit failure reports instead of submitting the job: its own
    /// [`JobFault::FailSubmit`], or the plan's `lose_device_after` (which counts the
    /// submission). Allocation-free (`run_job`).
    pub(crate) fn submit_failure(&self, job: &JobFaults) -> Option<vk::Result> {
        match job.fault {
            Some(JobFault::FailSubmit(SubmitFault::OutOfDeviceMemory)) => {
                Some(vk::Result::ERROR_OUT_OF_DEVICE_MEMORY)
            }
            Some(JobFault::FailSubmit(SubmitFault::DeviceLost)) => {
                Some(vk::Result::ERROR_DEVICE_LOST)
            }
            _ if self.lose_now() => Some(vk::Result::ERROR_DEVICE_LOST),
            _ => None,
        }
    }

    /// Counts an injected submit failure that reported `code`. Allocation-free.
    pub(crate) fn count_failed_submit(&self, code: vk::Result) {
        self.count(if code == vk::Result::ERROR_DEVICE_LOST {
            Kind::DeviceLoss
        } else {
            Kind::FailedSubmit
        });
    }
}

/// One job's injected fault: its own ([`VulkanJob::inject`](crate::VulkanJob::inject)) or
/// drawn from the plan at arm time, and the wait value of its releasable hang once submitted.
#[derive(Debug, Default)]
pub(crate) struct JobFaults {
    fault: Option<JobFault>,
    /// The wait value of its injected releasable hang, once submitted, until the job is freed.
    hang: Option<u64>,
}

impl JobFaults {
    /// No fault yet.
    pub(crate) fn new() -> Self {
        JobFaults::default()
    }

    /// Gives the job `fault` (it replaces whatever the plan would draw).
    pub(crate) fn inject(&mut self, fault: JobFault) {
        self.fault = Some(fault);
    }

    /// For a [`JobFault::Slow`] job: the busy-kernel workgroups (16 rounds each) to record
    /// before its own commands on `core`.
    pub(crate) fn slow_groups(&self, core: &DeviceCore) -> Option<u32> {
        match self.fault {
            Some(JobFault::Slow(d)) => Some(core.faults.busy_groups_for(d, core.max_workgroups[0])),
            _ => None,
        }
    }

    /// Whether the recording is to be dropped ([`JobFault::DropRecording`]).
    pub(crate) fn drops_recording(&self) -> bool {
        self.fault == Some(JobFault::DropRecording)
    }

    /// Whether the job hangs ([`JobFault::Hang`], [`JobFault::HangForever`]): it is then
    /// submitted alone, never batched.
    pub(crate) fn hangs(&self) -> bool {
        matches!(self.fault, Some(JobFault::Hang | JobFault::HangForever))
    }

    /// The wait value of its submitted releasable hang (the timeout handler releases it).
    pub(crate) fn releasable_hang(&self) -> Option<u64> {
        self.hang
    }

    /// Takes the wait value of its submitted releasable hang (the job is being freed).
    pub(crate) fn take_releasable_hang(&mut self) -> Option<u64> {
        self.hang.take()
    }

    /// The hang its submission waits for, as the ring's submission list records it.
    pub(crate) fn pending_hang(&self) -> PendingHang {
        PendingHang { value: self.hang.unwrap_or(0), orphan: false }
    }
}

/// The injected releasable hang one submission of a ring waits for, if any, and whether its
/// job was freed with it pending (an orphan: the ring releases it once the hardware reaches
/// the submission, as nothing will time it out).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingHang {
    /// The hang semaphore's wait value (0: none).
    value: u64,
    orphan: bool,
}

impl PendingHang {
    /// No hang (batched submissions: a hung job is never batched).
    pub(crate) const NONE: PendingHang = PendingHang { value: 0, orphan: false };

    /// The wait value, if the submission waits on a releasable hang.
    pub(crate) fn value(self) -> Option<u64> {
        (self.value != 0).then_some(self.value)
    }

    /// Marks its job freed with the hang pending.
    pub(crate) fn set_orphan(&mut self) {
        self.orphan = true;
    }

    /// The wait value, if the hang is an orphan's.
    pub(crate) fn orphan(self) -> Option<u64> {
        self.value().filter(|_| self.orphan)
    }
}
