//! Jobs, in two parts: what the user describes ([`VulkanJob`]: a recording closure, the
//! buffers it reads and writes, explicit dependencies, an injected fault) and what the
//! backend owns for it from `prepare_job` to `free_job` (`Submission`: the recorded command
//! buffer, the hardware ring it was recorded on, the prepared hardware fence, the timeline
//! value).

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use ash::vk;
use gpusched::fence::{Fence, PreparedFence};

use crate::error::RecordError;
use crate::fault::JobFaults;
use crate::kernel::RecordCtx;
use crate::resource::GpuResource;
use crate::ring::RingHw;

/// A recording closure: records the job's commands into a command buffer that is already
/// begun (and is ended for it). It may run again on another device (re-recording), so it is
/// `Fn`, and it gets the device's kernels through the [`RecordCtx`].
pub type RecordFn =
    Box<dyn Fn(&RecordCtx<'_>, vk::CommandBuffer) -> Result<(), RecordError> + Send>;

/// A job for a [`VulkanRing`](crate::VulkanRing): a recording closure and the resources
/// ([`GpuResource`]: buffers, images, an engine's own objects) it reads and writes (for
/// implicit synchronisation and to keep them alive until the hardware is done).
pub struct VulkanJob {
    pub(crate) record: RecordFn,
    pub(crate) reads: Vec<Arc<dyn GpuResource>>,
    pub(crate) writes: Vec<Arc<dyn GpuResource>>,
    /// Explicit dependencies ([`VulkanJob::after`]), taken at arm time.
    pub(crate) deps: Vec<Fence>,
    /// Made by [`VulkanJob::empty`]: recorded without the ring's barriers.
    pub(crate) bare: bool,
    /// Every declared resource (in declaration order), for the recording checks; it keeps
    /// them alive until the hardware passed the job (`free_job`).
    pub(crate) declared: Vec<Arc<dyn GpuResource>>,
    /// An injected fault (explicit, or drawn from the device's plan at arm time) and its
    /// submitted hang; zero-sized without the `fault-injection` feature.
    pub(crate) fault: JobFaults,
    /// What the backend made of it (empty until `prepare_job`).
    pub(crate) sub: Submission,
    /// External semaphores to wait on and signal (`semaphore.rs`): the submission's arrays,
    /// built with the job. A job with them is never batched.
    pub(crate) external: Option<Box<crate::semaphore::External>>,
}

/// The backend's state of one job, from `prepare_job` (recording) to `free_job` (retiring
/// its command buffer once the hardware passed it).
#[derive(Default)]
pub(crate) struct Submission {
    /// The recorded command buffer, of `hw`'s pool.
    pub(crate) cb: Option<vk::CommandBuffer>,
    /// The hardware ring (device generation) it was recorded on: it runs there, and its
    /// resources retire there.
    pub(crate) hw: Option<Arc<RingHw>>,
    /// What `prepare_job` made for `run_job`; taken by `run_job`.
    pub(crate) prepared: Option<Prepared>,
    /// The timeline value it was submitted with (0: never submitted).
    pub(crate) value: u64,
}

/// What `prepare_job` made for `run_job`.
pub(crate) struct Prepared {
    pub(crate) hw: PreparedFence,
    /// The timeline value, shared with the hardware fence's ops; set by `run_job`.
    pub(crate) value: Arc<AtomicU64>,
}

impl fmt::Debug for VulkanJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VulkanJob")
            .field("reads", &self.reads.len())
            .field("writes", &self.writes.len())
            .field("deps", &self.deps.len())
            .field("value", &self.sub.value)
            .field("fault", &self.fault)
            .field("generation", &self.sub.hw.as_ref().map(|h| h.core.generation))
            .finish_non_exhaustive()
    }
}

impl VulkanJob {
    /// A job that records with `record`.
    ///
    /// `record` runs when the job is armed, on the arming thread, with the ring's command
    /// pool locked (and, through [`VulkanDevice::submit`](crate::VulkanDevice::submit), the
    /// declared buffers' reservation locks held). It must only record: submitting or arming
    /// a job on the same ring deadlocks on the pool lock, and waiting for a fence may
    /// deadlock too (the completion path frees finished jobs into that pool, and needs it).
    pub fn new(
        record: impl Fn(&RecordCtx<'_>, vk::CommandBuffer) -> Result<(), RecordError> + Send + 'static,
    ) -> Self {
        VulkanJob {
            record: Box::new(record),
            reads: Vec::new(),
            writes: Vec::new(),
            deps: Vec::new(),
            bare: false,
            declared: Vec::new(),
            fault: JobFaults::new(),
            sub: Submission::default(),
            external: None,
        }
    }
    /// A job that records nothing (it still orders and signals like any other): a pure
    /// synchronisation point. Its command buffer holds no command at all, not even the ring's
    /// barriers (it has no work to order after earlier jobs and no writes to make visible to
    /// the host; its semaphore signal still waits for every command submitted before it), so
    /// it costs what a native empty submission costs: unless it declares a resource, it
    /// records nothing at arm time and submits its ring's one empty command buffer.
    pub fn empty() -> Self {
        let mut job = Self::new(|_, _| Ok(()));
        job.bare = true;
        job
    }

    /// Declares that the job reads `resource` (a [`Buffer`](crate::Buffer), an
    /// [`Image`](crate::Image), an engine's own [`GpuResource`], or a `&dyn GpuResource`):
    /// it waits for the resource's writers, and keeps it alive until the hardware passed it.
    pub fn reads(mut self, resource: &(impl GpuResource + ?Sized)) -> Self {
        let r = resource.keep_alive();
        self.reads.push(r.clone());
        self.declared.push(r);
        self
    }

    /// Declares that the job writes `resource`: it waits for its readers and writers, and
    /// keeps it alive until the hardware passed it.
    pub fn writes(mut self, resource: &(impl GpuResource + ?Sized)) -> Self {
        let r = resource.keep_alive();
        self.writes.push(r.clone());
        self.declared.push(r);
        self
    }

    /// Adds an explicit dependency (`drm_sched_job_add_dependency`): the job runs only after
    /// `fence` signalled, and ends with its error if it failed (a dependency's error
    /// propagates). For orderings no buffer expresses (a host-side producer, a fence from
    /// another device or another API); buffers declared with [`reads`](Self::reads) and
    /// [`writes`](Self::writes) need none.
    pub fn after(mut self, fence: &Fence) -> Self {
        self.deps.push(fence.clone());
        self
    }

    /// Injects `fault` into this job (feature `fault-injection`; see
    /// [`fault`](crate::fault)). It replaces whatever the device's fault plan would draw.
    #[cfg(feature = "fault-injection")]
    pub fn inject(mut self, fault: crate::fault::JobFault) -> Self {
        self.fault.inject(fault);
        self
    }
}
