//! Presenting frames to a window, ordered by the scheduler: a [`Presenter`] owns a
//! [`Surface`]'s [`Swapchain`] on a [`VulkanDevice`], hands out [`Frame`]s
//! ([`Presenter::begin_frame`]), turns a frame's recording into its render job
//! ([`Frame::render_job`]) and presents it ([`Presenter::present`], or
//! [`Presenter::submit`] for both).
//!
//! # The rules
//! - **Acquire.** `begin_frame` acquires a swapchain image with a binary *acquire*
//!   semaphore. The render job waits on it (an [`ExternalWait`](crate::ExternalWait), binary, at
//!   `COLOR_ATTACHMENT_OUTPUT`) and signals the image's binary *present* semaphore (an
//!   [`ExternalSignal`](crate::ExternalSignal)); it renders into the presenter's offscreen image
//!   ([`Frame::target`]) and copies that into the swapchain image, left in
//!   `PRESENT_SRC_KHR`.
//! - **Present after scheduled.** The present is issued only once the render job's
//!   submission is on the queue: the frame's thread waits for the job's *scheduled* fence,
//!   then for its `vkQueueSubmit` to have returned (the scheduler signals the scheduled
//!   fence just before `run_job`), then calls `vkQueuePresentKHR` on the job's queue, under
//!   that queue's lock. Queue order does the rest (the argument `drm_sched` makes for
//!   same-ring dependencies). `vkQueuePresentKHR` may block (FIFO): it is never called from
//!   a signalling section (`run_job`, a completion callback, the timeout worker), only from
//!   the thread calling `present`, which must not be in one either.
//! - **Every path consumes the acquire semaphore.** A render job that never reaches the
//!   queue (refused at arm, its entity killed or banned, a failed dependency, a device loss,
//!   a failed submission) leaves the acquire semaphore signalled and the present semaphore
//!   unsignalled. The presenter then submits a *fallback*, under the queue lock from the
//!   frame's thread: a command buffer that waits the acquire semaphore, clears the image
//!   to [`FALLBACK_COLOUR`] in `PRESENT_SRC_KHR` and signals the present semaphore, and
//!   presents that. So no binary semaphore is left signalled or waited without a signal,
//!   every acquired image is presented, and the swapchain never deadlocks.
//! - **Frames in flight** are bounded ([`PresenterConfig::frames_in_flight`], 2 or 3):
//!   `begin_frame` first waits for the oldest frame's finished fence (its acquire
//!   semaphore is reused only then). A frame whose job ended with an error may still be on
//!   the queue (a timed-out job, an injected device loss): its semaphore is reused only
//!   after its queue went idle.
//! - **Re-creation.** `VK_ERROR_OUT_OF_DATE_KHR` or `VK_SUBOPTIMAL_KHR` (at acquire or
//!   present), [`Presenter::recreate`], or a new device generation (a device loss) make the
//!   next `begin_frame` re-create the swapchain: every frame in flight finishes first, the
//!   queue goes idle, the old swapchain and its semaphores are destroyed, and a new one is
//!   made from the same surface on the current generation.
//! - A [`Frame`] must be given back to [`Presenter::present`] (with the render job's
//!   fences, or `None` when there is no job): dropping it leaves its image acquired.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ash::vk;
use gpusched::fence::{Fence, FenceError};
use gpusched::Entity;

use crate::frame::{new_target, record_fallback, Frame};
use crate::swapchain::{Surface, Swapchain};
use crate::{DeviceError, Image, ImageError, SubmitError, VulkanDevice, VulkanJob, VulkanRing};

/// The colour a fallback submission clears a frame to (see the module's rules).
pub const FALLBACK_COLOUR: [f32; 4] = [0.0, 0.0, 0.0, 1.0];

/// Why presenting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PresentError {
    /// The instance lacks a window-system extension the display needs (a headless loader).
    #[error("the Vulkan instance has no surface support: {0} is not enabled")]
    NoSurfaceSupport(String),
    /// The device cannot make a swapchain for this surface.
    #[error("no swapchain: {0}")]
    NoSwapchainSupport(&'static str),
    /// A Vulkan call failed.
    #[error("{call}: {code}")]
    Vulkan {
        /// The call.
        call: &'static str,
        /// Its result.
        code: vk::Result,
    },
    /// No image was acquired within [`PresenterConfig::acquire_timeout`] (nothing is left
    /// acquired: try again).
    #[error("no swapchain image became available in time")]
    AcquireTimeout,
    /// A frame in flight did not finish within [`PresenterConfig::wait_timeout`].
    #[error("a frame in flight did not finish in time")]
    FrameTimeout,
    /// A configuration value is out of range.
    #[error("invalid presenter configuration: {0}")]
    Config(&'static str),
    /// The device generation went away and no new one came.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The offscreen image could not be made.
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl PresentError {
    pub(crate) fn vulkan(call: &'static str, code: vk::Result) -> PresentError {
        PresentError::Vulkan { call, code }
    }
}

/// How a [`Presenter`] runs.
#[derive(Clone, Copy, Debug)]
pub struct PresenterConfig {
    /// Frames in flight, 2 or 3.
    pub frames_in_flight: usize,
    /// The queue (index in the main family) the render jobs' ring uses; presents go there.
    pub queue_index: u32,
    /// How long `begin_frame` waits for an image.
    pub acquire_timeout: Duration,
    /// How long a wait for a frame's fences may take (above the rings' job timeout).
    pub wait_timeout: Duration,
    /// The swapchain's size when the surface leaves it to the application.
    pub extent: vk::Extent2D,
}

impl Default for PresenterConfig {
    fn default() -> Self {
        PresenterConfig {
            frames_in_flight: 2,
            queue_index: 0,
            acquire_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(60),
            extent: vk::Extent2D { width: 640, height: 480 },
        }
    }
}

/// How a frame ended on the screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresentOutcome {
    /// The render job's image was presented.
    Presented,
    /// The render job never reached the queue (its error, `None` when there was no job):
    /// the fallback submission consumed the acquire semaphore and a cleared image was
    /// presented.
    Fallback(Option<FenceError>),
}

/// Counters of a presenter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PresentStats {
    /// Frames presented with their render job's image.
    pub presented: u64,
    /// Frames fed by the fallback submission.
    pub fallbacks: u64,
    /// Swapchains made (the first one included).
    pub swapchains: u64,
    /// Acquires that timed out.
    pub acquire_timeouts: u64,
}

/// A frame whose work may still be in flight.
struct InFlight {
    /// The render job's finished fence (`None`: fed by the fallback).
    finished: Option<Fence>,
    acquire: vk::Semaphore,
    /// Whether its submissions may still be on the queue after `finished` signalled.
    errored: bool,
}

/// The swapchain of one generation and what goes with it.
struct Chain {
    swapchain: Swapchain,
    target: Image,
    /// Command pool of the fallback command buffers (used by the presenter's thread only).
    pool: vk::CommandPool,
    /// Per image: the fallback command buffer (clear to `PRESENT_SRC_KHR`) and the fence of
    /// its last submission.
    fallback: Vec<(vk::CommandBuffer, vk::Fence)>,
    /// Acquire semaphores not in use.
    free: Vec<vk::Semaphore>,
    /// Every acquire semaphore made (destroyed with the chain).
    all: Vec<vk::Semaphore>,
}

/// Presents frames rendered by scheduled jobs (see the module's rules).
pub struct Presenter {
    dev: VulkanDevice,
    config: PresenterConfig,
    chain: Option<Chain>,
    in_flight: VecDeque<InFlight>,
    stale: bool,
    /// A frame's job failed: the next frame renders into a new offscreen image.
    failed_target: bool,
    frames: u64,
    stats: PresentStats,
    // Dropped last: the swapchain goes before its surface.
    surface: Surface,
}

impl std::fmt::Debug for Presenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presenter")
            .field("swapchain", &self.chain.as_ref().map(|c| &c.swapchain))
            .field("in_flight", &self.in_flight.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Presenter {
    /// A presenter for `surface` on `dev` (its swapchain is made on the first frame).
    ///
    /// # Errors
    /// [`PresentError::Config`] for frames in flight outside 2..=3, a queue index the
    /// main family lacks, or an empty extent.
    pub fn new(
        dev: &VulkanDevice,
        surface: Surface,
        config: PresenterConfig,
    ) -> Result<Presenter, PresentError> {
        if !(2..=3).contains(&config.frames_in_flight) {
            return Err(PresentError::Config("frames_in_flight must be 2 or 3"));
        }
        if config.queue_index >= dev.queue_count() {
            return Err(PresentError::Config("queue_index is not a queue of the main family"));
        }
        if config.extent.width == 0 || config.extent.height == 0 {
            return Err(PresentError::Config("the extent must not be empty"));
        }
        Ok(Presenter {
            dev: dev.clone(),
            config,
            chain: None,
            in_flight: VecDeque::new(),
            stale: false,
            failed_target: false,
            frames: 0,
            stats: PresentStats::default(),
            surface,
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> PresentStats {
        self.stats
    }

    /// The current swapchain, if made.
    pub fn swapchain(&self) -> Option<&Swapchain> {
        self.chain.as_ref().map(|c| &c.swapchain)
    }

    /// The offscreen image of the current swapchain (what the last rendered frame drew),
    /// to read back.
    pub fn target(&self) -> Option<&Image> {
        self.chain.as_ref().map(|c| &c.target)
    }

    /// Makes the next [`begin_frame`](Presenter::begin_frame) re-create the swapchain (after
    /// a resize the surface did not report, or to test re-creation).
    pub fn recreate(&mut self) {
        self.stale = true;
    }

    /// Waits for a free frame slot, re-creates the swapchain if needed, and acquires an image.
    ///
    /// # Errors
    /// [`PresentError::AcquireTimeout`] (nothing is left acquired); a frame in flight that
    /// did not finish; swapchain creation or acquisition failed; the device is gone.
    pub fn begin_frame(&mut self) -> Result<Frame, PresentError> {
        for _ in 0..3 {
            let generation = self.dev.generation();
            let lost = self.dev.is_lost();
            let outdated = self.chain.as_ref().is_some_and(|c| {
                c.swapchain.generation() != generation || c.swapchain.core.is_lost()
            });
            if self.stale || outdated || lost {
                self.drain()?;
                self.chain = None;
                self.stale = false;
                if self.dev.is_lost() {
                    self.dev.wait_generation(generation, self.config.wait_timeout)?;
                }
            }
            while self.in_flight.len() >= self.config.frames_in_flight {
                self.retire_oldest()?;
            }
            if self.chain.is_none() {
                self.chain = Some(self.make_chain()?);
                self.stats.swapchains += 1;
                self.failed_target = false;
            }
            if self.failed_target {
                let Some(chain) = self.chain.as_mut() else { unreachable!("made above") };
                chain.target = new_target(&self.dev, chain.swapchain.extent())?;
                self.failed_target = false;
            }
            let Some(chain) = self.chain.as_mut() else { unreachable!("made above") };
            let acquire = match chain.free.pop() {
                Some(s) => s,
                None => {
                    // SAFETY: a plain object creation on the chain's live device.
                    let s = unsafe {
                        chain.swapchain.core.device.create_semaphore(&Default::default(), None)
                    }
                    .map_err(|c| PresentError::vulkan("vkCreateSemaphore", c))?;
                    chain.all.push(s);
                    s
                }
            };
            let timeout = u64::try_from(self.config.acquire_timeout.as_nanos()).unwrap_or(u64::MAX);
            let sc = &chain.swapchain;
            // SAFETY: a live swapchain of the semaphore's device; the semaphore is unsignalled
            // with no pending operation (new, or its last frame finished); fewer images are
            // acquired than the swapchain allows without an infinite timeout.
            let r = unsafe {
                sc.loader.acquire_next_image(sc.raw, timeout, acquire, vk::Fence::null())
            };
            match r {
                Ok((index, suboptimal)) => {
                    self.stale |= suboptimal;
                    let frame = Frame {
                        number: self.frames,
                        index,
                        image: sc.images()[index as usize],
                        acquire,
                        present: sc.present_sems[index as usize],
                        target: chain.target.clone(),
                        generation: sc.generation(),
                        submitted: Arc::new(AtomicBool::new(false)),
                    };
                    self.frames += 1;
                    return Ok(frame);
                }
                Err(code) => {
                    chain.free.push(acquire);
                    match code {
                        vk::Result::TIMEOUT | vk::Result::NOT_READY => {
                            self.stats.acquire_timeouts += 1;
                            return Err(PresentError::AcquireTimeout);
                        }
                        vk::Result::ERROR_OUT_OF_DATE_KHR | vk::Result::ERROR_DEVICE_LOST => {
                            self.stale = true;
                        }
                        c => return Err(PresentError::vulkan("vkAcquireNextImageKHR", c)),
                    }
                }
            }
        }
        Err(PresentError::vulkan("vkAcquireNextImageKHR", vk::Result::ERROR_OUT_OF_DATE_KHR))
    }

    /// Arms `job` (a [`Frame::render_job`]) on `entity`, pushes it and presents the frame:
    /// [`present`](Presenter::present) with its fences, or with `None` when arming refused it.
    ///
    /// # Errors
    /// As [`present`](Presenter::present).
    pub fn submit(
        &mut self,
        entity: &Entity<VulkanRing>,
        frame: Frame,
        job: VulkanJob,
    ) -> Result<(PresentOutcome, Option<Fence>), PresentError> {
        match VulkanDevice::arm(entity, job) {
            Ok(armed) => {
                let scheduled = armed.scheduled().clone();
                let finished = armed.push();
                let out = self.present(frame, Some((scheduled, finished.clone())))?;
                Ok((out, Some(finished)))
            }
            Err(e) => {
                let _: &SubmitError = &e;
                Ok((self.present(frame, None)?, None))
            }
        }
    }

    /// Presents `frame` once its render job (its scheduled and finished fences; `None` when
    /// there is none, such as a job refused at arm) is on the queue, or feeds it with the
    /// fallback submission when the job never got there (the module's rules). Call it
    /// from a thread outside any signalling section: it waits, and presenting may block.
    ///
    /// # Errors
    /// The job's fences did not settle within [`PresenterConfig::wait_timeout`]
    /// ([`PresentError::FrameTimeout`]); a Vulkan call failed.
    pub fn present(
        &mut self,
        frame: Frame,
        fences: Option<(Fence, Fence)>,
    ) -> Result<PresentOutcome, PresentError> {
        let deadline = Instant::now() + self.config.wait_timeout;
        let mut error = None;
        let on_queue = match &fences {
            Some((scheduled, finished)) => {
                // The scheduled fence signals just before `run_job`; the submission is on
                // the queue once the flag is set, and never will be once the finished fence
                // signalled without it (finished signals only after `run_job` returned).
                let _ = scheduled.wait_deadline(deadline);
                loop {
                    if frame.submitted.load(Ordering::SeqCst) {
                        break true;
                    }
                    if finished.is_signaled() {
                        error = finished.error();
                        break frame.submitted.load(Ordering::SeqCst);
                    }
                    if Instant::now() >= deadline {
                        return Err(PresentError::FrameTimeout);
                    }
                    let _ = finished.wait_timeout(Duration::from_micros(200));
                }
            }
            None => false,
        };
        let Some(chain) = self.chain.as_mut() else {
            unreachable!("a frame exists only with its chain")
        };
        debug_assert_eq!(chain.swapchain.generation(), frame.generation);
        let core = chain.swapchain.core.clone();
        let slot = core
            .queue_slot(core.queue_family, self.config.queue_index)
            .map_err(PresentError::Device)?;
        let queue = &core.queues[slot as usize];
        let outcome = if on_queue {
            PresentOutcome::Presented
        } else {
            let (cb, fence) = chain.fallback[frame.index as usize];
            let d = &core.device;
            // SAFETY: the fence is of this device; waiting on it is allowed here (the
            // presenter's thread is outside any signalling section).
            unsafe { d.wait_for_fences(&[fence], true, u64::MAX) }
                .and_then(|()| {
                    // SAFETY: the fence is not in use by a pending submission (waited).
                    unsafe { d.reset_fences(&[fence]) }
                })
                .map_err(|c| PresentError::vulkan("vkWaitForFences", c))?;
            let waits = [frame.acquire];
            let stages = [vk::PipelineStageFlags::TRANSFER];
            let signals = [frame.present];
            let cbs = [cb];
            let submit = [vk::SubmitInfo::default()
                .wait_semaphores(&waits)
                .wait_dst_stage_mask(&stages)
                .command_buffers(&cbs)
                .signal_semaphores(&signals)];
            let q = queue.lock();
            // SAFETY: the queue is locked; the acquire semaphore has a pending signal (the
            // acquire) and no waiter (the render job never reached the queue); the present
            // semaphore is unsignalled; the command buffer is not pending (its fence waited).
            unsafe { d.queue_submit(*q, &submit, fence) }
                .map_err(|c| PresentError::vulkan("vkQueueSubmit (present fallback)", c))?;
            PresentOutcome::Fallback(error)
        };
        let waits = [frame.present];
        let swapchains = [chain.swapchain.raw];
        let indices = [frame.index];
        let info = vk::PresentInfoKHR::default()
            .wait_semaphores(&waits)
            .swapchains(&swapchains)
            .image_indices(&indices);
        let r = {
            let q = queue.lock();
            // SAFETY: the queue is locked; the present semaphore's signal is submitted (by
            // the render job or the fallback, checked above); the image is acquired and left
            // in PRESENT_SRC_KHR by that submission.
            unsafe { chain.swapchain.loader.queue_present(*q, &info) }
        };
        match r {
            Ok(suboptimal) => self.stale |= suboptimal,
            Err(vk::Result::ERROR_OUT_OF_DATE_KHR) | Err(vk::Result::ERROR_DEVICE_LOST) => {
                self.stale = true;
            }
            Err(c) => return Err(PresentError::vulkan("vkQueuePresentKHR", c)),
        }
        match outcome {
            PresentOutcome::Presented => self.stats.presented += 1,
            PresentOutcome::Fallback(_) => self.stats.fallbacks += 1,
        }
        let finished = fences.map(|(_, f)| f);
        let errored =
            !on_queue || error.is_some() || finished.as_ref().is_some_and(|f| f.error().is_some());
        self.in_flight.push_back(InFlight {
            finished: if on_queue { finished } else { None },
            acquire: frame.acquire,
            errored,
        });
        Ok(outcome)
    }

    /// Waits for the oldest frame in flight and frees its acquire semaphore.
    fn retire_oldest(&mut self) -> Result<(), PresentError> {
        let Some(f) = self.in_flight.pop_front() else { return Ok(()) };
        let mut errored = f.errored;
        if let Some(fin) = &f.finished {
            match fin.wait_timeout(self.config.wait_timeout) {
                Ok(()) => {}
                Err(gpusched::fence::WaitError::Failed(_)) => errored = true,
                Err(_) => {
                    self.in_flight.push_front(f);
                    return Err(PresentError::FrameTimeout);
                }
            }
        }
        if errored {
            // Its submissions may still be on the queue (an ended fence does not mean the
            // hardware passed them): wait for the queue before reusing the semaphore.
            self.queue_idle()?;
        }
        if let Some(chain) = self.chain.as_mut() {
            chain.free.push(f.acquire);
        }
        Ok(())
    }

    /// `vkQueueWaitIdle` on the chain's queue, under its lock; fallback fences reset.
    fn queue_idle(&self) -> Result<(), PresentError> {
        let Some(chain) = self.chain.as_ref() else { return Ok(()) };
        let core = &chain.swapchain.core;
        let slot = core.queue_slot(core.queue_family, self.config.queue_index)?;
        let q = core.queues[slot as usize].lock();
        // SAFETY: the queue is locked (externally synchronised); waiting is allowed on this
        // thread (outside any signalling section).
        match unsafe { core.device.queue_wait_idle(*q) } {
            Ok(()) | Err(vk::Result::ERROR_DEVICE_LOST) => Ok(()),
            Err(c) => Err(PresentError::vulkan("vkQueueWaitIdle", c)),
        }
    }

    /// Every frame in flight finishes, then the queue goes idle.
    fn drain(&mut self) -> Result<(), PresentError> {
        while !self.in_flight.is_empty() {
            self.retire_oldest()?;
        }
        self.queue_idle()
    }

    fn make_chain(&self) -> Result<Chain, PresentError> {
        let core = self.dev.core();
        let swapchain = Swapchain::new(core.clone(), &self.surface, self.config.extent)?;
        let target = new_target(&self.dev, swapchain.extent())?;
        let mut chain = Chain {
            swapchain,
            target,
            pool: vk::CommandPool::null(),
            fallback: Vec::new(),
            free: Vec::new(),
            all: Vec::new(),
        };
        let d = &core.device;
        let info = vk::CommandPoolCreateInfo::default().queue_family_index(core.queue_family);
        // SAFETY: a plain object creation on a live device; on a later failure `chain`'s drop
        // destroys what was made.
        chain.pool = unsafe { d.create_command_pool(&info, None) }
            .map_err(|c| PresentError::vulkan("vkCreateCommandPool", c))?;
        let n = u32::try_from(chain.swapchain.images().len()).unwrap_or(u32::MAX);
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(chain.pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(n);
        // SAFETY: the pool is of this device and used by this thread only.
        let cbs = unsafe { d.allocate_command_buffers(&alloc) }
            .map_err(|c| PresentError::vulkan("vkAllocateCommandBuffers", c))?;
        for (cb, image) in cbs.into_iter().zip(chain.swapchain.images().to_vec()) {
            let signalled = vk::FenceCreateInfo::default().flags(vk::FenceCreateFlags::SIGNALED);
            // SAFETY: a plain object creation on a live device.
            let fence = unsafe { d.create_fence(&signalled, None) }
                .map_err(|c| PresentError::vulkan("vkCreateFence", c))?;
            chain.fallback.push((cb, fence));
            record_fallback(d, cb, image)?;
        }
        Ok(chain)
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        let d = &self.swapchain.core.device;
        // SAFETY: a chain is dropped only after its queue went idle (`Presenter::drain`), so
        // no fence, command buffer or semaphore of it is in use.
        unsafe {
            for (_, fence) in self.fallback.drain(..) {
                d.destroy_fence(fence, None);
            }
            if self.pool != vk::CommandPool::null() {
                d.destroy_command_pool(self.pool, None);
            }
            for s in self.all.drain(..) {
                d.destroy_semaphore(s, None);
            }
        }
    }
}

impl Drop for Presenter {
    fn drop(&mut self) {
        if let Err(e) = self.drain() {
            tracing::warn!(target: "gpusched_vulkan", error = %e, "presenter: draining at drop failed");
            // Still idle the queue: the chain's objects must not be in use when destroyed.
            let _ = self.queue_idle();
        }
        self.chain = None;
    }
}
