//! The Vulkan world: [`VulkanWorld`], the fault suite over `gpusched-vulkan` (lavapipe by
//! default, with the validation layer), its faults injected through the backend's own fault
//! API (`VulkanJob::inject`, `VulkanDevice::lose_device`).
//!
//! # Real computation
//! Each job owns a 4-byte buffer, zeroed by the host when made. Its payload records, on the
//! device, [`job_value`](crate::job_value)`(idx, inputs)` (32-bit FNV-1a): `vkCmdFillBuffer`
//! with the seed word `(0x811C9DC5 ^ idx) * 16777619` (computed on the host: it depends on
//! nothing the device produces), then one dispatch of the `fnv_step` kernel
//! (`tests/shaders/fnv_step.comp`) per input, reading that input job's buffer *on the GPU*:
//! `acc = (acc ^ input) * 16777619`, `| 1` on the last step (with no input, the fill writes
//! the final `seed | 1`). A job that executed before one of its inputs computed reads that
//! input's 0 and ends with a wrong value, which the oracle catches. [`World::collect`] waits
//! for the device to be idle (a force-completed job may still run) and reads every buffer back
//! into the ledger.
//!
//! # What the world counts (the contract's counters, from outside the backend)
//! `VulkanRing` is the backend crate's own `Backend`, and a wrapper cannot delegate its
//! `timedout_job` (a `Recovery<'_, VulkanRing>` cannot be made from another backend's), so
//! the world sets [`World::COUNTS_BACKEND_CALLS`] to `false` and counts what it observes:
//! `prepared` when the recording closure runs (`prepare_job` records), `freed` when the
//! closure drops (the backend retires it once the hardware passed the job, at the latest at
//! teardown). Payloads and rings count into `live_objects`.
//!
//! # Device loss
//! [`World::lose_device`] injects a loss (every unfinished fence ends `DeviceLost`) and waits
//! for the next generation ([`World::RECOVERS_FROM_LOSS`]). Buffers of the lost generation are
//! gone ("VRAM lost"): a payload made afterwards skips inputs whose buffer belongs to a lost
//! generation, and such jobs, like every job whose own buffer was lost, are marked
//! `unchecked` in the ledger (not value-checked).
//!
//! # Batching is on
//! A `VulkanRing` batches the jobs handed over in one go into one `vkQueueSubmit` with one
//! `VkSubmitInfo` per job, each signalling its own job's timeline value, so each job of a
//! batch completes on its own (when one submit signalled only the last job's value, a slow
//! job batched behind fault-free ones made the head of the batch late and the timeout handler
//! blamed that innocent job). The world keeps the backend's default, batching
//! on; `GPUSCHED_FAULT_BATCHING=0` turns it off (`VulkanRing::set_batching(false)`).
//!
//! # Checked like the other worlds
//! The oracle checks the Vulkan world with the default [`World::RERUNS_AFTER_RESET`] and
//! [`World::TIMELINE_IN_ORDER`]: a job queued on the `VkQueue` behind a same-ring dependency
//! that is blamed ends with its error (`VulkanRing::timedout_job` calls
//! `Recovery::fail_dependants`; its command buffer still runs), and a ring's hardware fences
//! signal only through its in-order drain (a poll never signals one early). `FAULT_STRICT=1`
//! in `fault_vulkan` still fails on any occurrence the oracle would tolerate and count.
//!
//! # Faults
//! [`Fault::Hang`] → `JobFault::Hang` (released by the timeout handler), [`Fault::Slow`] →
//! `JobFault::Slow`, [`Fault::FailSubmit`] → `JobFault::FailSubmit(OutOfDeviceMemory)`, whose
//! fence ends `Driver(-12)` ([`World::SUBMIT_ERROR`]).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gpusched::fence::FenceError;
use gpusched::{Scheduler, SchedulerConfig};
use gpusched_vulkan::{
    Buffer, DeviceConfig, InitError, JobFault, Kernel, SubmitFault, VulkanDevice, VulkanJob,
    VulkanRing,
};

use crate::layer::LayerFaults;
use crate::ledger::Ledger;
use crate::plan::{Fault, PlanConfig, Scenario};
use crate::world::World;

/// The `fnv_step` kernel (`tests/shaders/fnv_step.comp`): bindings `src`, `acc`; push
/// constant `last: u32`.
const FNV_STEP: &[u8] = include_bytes!("../shaders/fnv_step.spv");

/// The FNV-1a prime.
const FNV_PRIME: u32 = 0x0100_0193;

/// How long host waits (buffer writes and reads, idling, recreation) may take: a watchdog.
const WAIT: Duration = Duration::from_secs(30);

/// The generator's knobs for the Vulkan world: a timeout long enough that a fault-free job is
/// never late on lavapipe in a debug build with validation on a loaded machine (an innocent
/// job at the head of a ring at a timeout is blamed: the ring cannot tell it from a slow one),
/// slow jobs of one and a quarter timeouts, and fewer jobs. A slow job runs on after its
/// blame, and the busy kernel's calibration drifts 2x on a loaded machine: three timeouts
/// without progress declare the device lost (slow jobs of two timeouts, and now and then of
/// one and a half, reached that), and a slow job ending near two timeouts, when the job behind it times out, risks
/// that job's blame. At 1.25 those take a 2.4x and a 1.6x slowdown; a slow job that ends
/// before its timeout (a 1.25x speed-up) is accepted by the oracle (`Ok` or `TimedOut`).
pub const VULKAN_PLAN: PlanConfig = PlanConfig {
    max_entities: 5,
    max_jobs: 24,
    max_rings: 3,
    max_buffers: 4,
    max_threads: 3,
    max_stuck: 2,
    timeout: Duration::from_millis(400),
    slow_timeouts: 1.25,
};

/// Counts a payload's drop (`freed`, `live_objects`): owned by its recording closure.
struct FreeGuard {
    idx: usize,
    ledger: Arc<Ledger>,
}

impl Drop for FreeGuard {
    fn drop(&mut self) {
        self.ledger.job(self.idx).freed.fetch_add(1, Ordering::AcqRel);
        self.ledger.live_objects.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The Vulkan world; see the module docs.
pub struct VulkanWorld {
    schedulers: Vec<Scheduler<VulkanRing>>,
    device: Option<VulkanDevice>,
    kernel: Kernel,
    ledger: Arc<Ledger>,
    /// Each job's result buffer, once its payload was made.
    buffers: Mutex<Vec<Option<Buffer>>>,
    /// Where failed submissions, allocation failures and device losses come from: the
    /// backend's fault API (`None`), or the Vulkan fault layer ([`LayerWorld`](crate::LayerWorld)).
    pub(crate) layer: Option<LayerFaults>,
}

impl fmt::Debug for VulkanWorld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VulkanWorld")
            .field("rings", &self.schedulers.len())
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl VulkanWorld {
    fn dev(&self) -> &VulkanDevice {
        match &self.device {
            Some(d) => d,
            None => unreachable!("the device is taken only by teardown, which consumes the world"),
        }
    }

    /// A zeroed 4-byte buffer on the current generation, waiting for a lost one's
    /// replacement, and trying again after an allocation failure (which the layer world
    /// injects: a driver's out-of-memory refuses the buffer and nothing else).
    fn result_buffer(&self, idx: usize) -> Buffer {
        let dev = self.dev();
        if let Some(layer) = &self.layer {
            layer.before_buffer(idx);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let generation = dev.generation();
            let made =
                dev.buffer(4).map_err(|e| (e.is_out_of_memory(), e.to_string())).and_then(|b| {
                    b.write_bytes(0, &[0; 4], WAIT).map(|()| b).map_err(|e| (false, e.to_string()))
                });
            match made {
                Ok(b) => return b,
                Err((_, e)) if Instant::now() > deadline => {
                    panic!("job {idx}: cannot make its result buffer: {e}")
                }
                Err((true, _)) => {}
                Err((false, _)) => {
                    let _ = dev.wait_generation(generation, WAIT);
                }
            }
        }
    }

    /// The world over a new validated device: the backend's own (`layer` `None`) or one
    /// whose Vulkan calls go through the fault layer.
    pub(crate) fn make(
        scenario: &Scenario,
        ledger: Arc<Ledger>,
        layer: Option<LayerFaults>,
    ) -> Result<Self, String> {
        let validation = std::env::var("GPUSCHED_TEST_NOVAL").is_err();
        let device = match VulkanDevice::with_config(DeviceConfig::default().validation(validation))
        {
            Ok(d) => d,
            Err(e @ (InitError::LoaderMissing(_) | InitError::NoDevice(_))) => {
                return Err(format!("no Vulkan device can be created: {e}"))
            }
            Err(e) => panic!("cannot create a validated Vulkan device: {e}"),
        };
        if let Some(layer) = &layer {
            layer.device_created();
        }
        let kernel = device
            .create_kernel(FNV_STEP, 2, 4)
            .unwrap_or_else(|e| panic!("the fnv_step kernel was refused: {e}"));
        let queues = device.queue_count();
        let batching = std::env::var("GPUSCHED_FAULT_BATCHING").map_or(true, |v| v != "0");
        let schedulers = (0..scenario.rings)
            .map(|r| {
                let config = SchedulerConfig::new(format!("vk-fault-ring{r}"))
                    .credit_limit(scenario.credit_limit)
                    .timeout(scenario.timeout)
                    .hang_limit(scenario.hang_limit)
                    .policy(scenario.policy);
                // The device's reset domain (the default): one per device.
                let ring = device.ring(r as u32 % queues, config).map_err(|e| e.to_string())?;
                ring.backend().set_batching(batching);
                Ok::<_, String>(ring)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let n = ledger.len();
        Ok(VulkanWorld {
            schedulers,
            device: Some(device),
            kernel,
            ledger,
            buffers: Mutex::new(vec![None; n]),
            layer,
        })
    }
}

impl World for VulkanWorld {
    type Backend = VulkanRing;
    const NAME: &'static str = "vulkan";
    /// `VK_ERROR_OUT_OF_DEVICE_MEMORY` from `vkQueueSubmit` (`-ENOMEM`).
    const SUBMIT_ERROR: FenceError = FenceError::Driver(-12);
    const COUNTS_BACKEND_CALLS: bool = false;
    const RECOVERS_FROM_LOSS: bool = true;

    fn new(scenario: &Scenario, ledger: Arc<Ledger>) -> Result<Self, String> {
        Self::make(scenario, ledger, None)
    }

    fn schedulers(&self) -> &[Scheduler<VulkanRing>] {
        &self.schedulers
    }

    fn payload(&self, idx: usize, fault: Fault) -> VulkanJob {
        let own = self.result_buffer(idx);
        let ledger = &self.ledger;
        let inputs = ledger.job(idx).inputs.get().map_or(&[][..], |b| &b[..]);
        let mut reads: Vec<Buffer> = Vec::with_capacity(inputs.len());
        {
            let mut bufs = lock(&self.buffers);
            for &d in inputs {
                match &bufs[d] {
                    Some(b) if b.generation() == own.generation() => reads.push(b.clone()),
                    // Lost with its generation (or never made): this job's value cannot be
                    // checked.
                    _ => ledger.job(idx).unchecked.store(true, Ordering::Release),
                }
            }
            bufs[idx] = Some(own.clone());
        }
        let seed = (0x811C_9DC5u32 ^ idx as u32).wrapping_mul(FNV_PRIME);
        ledger.live_objects.fetch_add(1, Ordering::AcqRel);
        let guard = FreeGuard { idx, ledger: ledger.clone() };
        let kernel = self.kernel;
        let acc = own.clone();
        let srcs = reads.clone();
        let mut job = VulkanJob::new(move |ctx, cb| {
            let l = guard.ledger.job(guard.idx);
            l.prepared.fetch_add(1, Ordering::AcqRel);
            if srcs.is_empty() {
                return ctx.fill_u32(cb, &acc, seed | 1);
            }
            ctx.fill_u32(cb, &acc, seed)?;
            for (k, src) in srcs.iter().enumerate() {
                ctx.barrier(cb);
                let last = u32::from(k + 1 == srcs.len());
                ctx.dispatch(cb, &kernel, &[src, &acc], &last.to_ne_bytes(), [1, 1, 1])?;
            }
            Ok(())
        })
        .writes(&own);
        for b in &reads {
            job = job.reads(b);
        }
        match (fault, &self.layer) {
            (Fault::None, _) => job,
            (Fault::Hang, _) => job.inject(JobFault::Hang),
            (Fault::Slow(d), _) => job.inject(JobFault::Slow(d)),
            (Fault::FailSubmit, None) => {
                job.inject(JobFault::FailSubmit(SubmitFault::OutOfDeviceMemory))
            }
            (Fault::FailSubmit, Some(layer)) => {
                layer.fail_next_submit();
                job
            }
        }
    }

    fn lose_device(&self) {
        let dev = self.dev();
        let generation = dev.generation();
        match &self.layer {
            None => dev.lose_device(),
            Some(layer) => layer.lose_device(dev),
        }
        if let Err(e) = dev.wait_generation(generation, WAIT) {
            panic!("the device was not recreated after an injected loss: {e}");
        }
    }

    fn collect(&self) -> Result<(), String> {
        let dev = self.dev();
        // Jobs force-completed by a timeout (a released hang, a slow job) may still run.
        dev.wait_idle(WAIT).map_err(|e| format!("the device did not become idle: {e}"))?;
        let bufs = lock(&self.buffers);
        for (j, b) in bufs.iter().enumerate() {
            let Some(b) = b else { continue };
            if b.is_lost() {
                self.ledger.job(j).unchecked.store(true, Ordering::Release);
                continue;
            }
            let v = b.read_u32(WAIT).map_err(|e| format!("job {j}: reading its result: {e}"))?;
            self.ledger.job(j).result.store(v[0], Ordering::Release);
        }
        Ok(())
    }

    fn teardown(self) -> Result<(), String> {
        let VulkanWorld { schedulers, device, kernel: _, ledger, buffers, layer } = self;
        drop(schedulers);
        drop(buffers);
        drop(ledger);
        let Some(device) = device else { return Ok(()) };
        device.close(WAIT).map_err(|d| {
            format!(
                "the device could not be closed within {WAIT:?} (something still holds it): {d:?}"
            )
        })?;
        match layer {
            Some(layer) => layer.teardown(),
            None => Ok(()),
        }
    }
}
