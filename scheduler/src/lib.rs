//! `gpusched`: a GPU job scheduler in the manner of the Linux kernel's `drm_sched`
//! (`drivers/gpu/drm/scheduler/`), checked against the dma-fence signalling contract. It
//! re-exports the [`fence`] and [`resv`] crates so that one dependency is enough.
//!
//! - A [`Scheduler`] drives one hardware ring through a [`Backend`]: a credit limit, run queues
//!   by [`Priority`], an entity-selection [`Policy`].
//! - An [`Entity`] is a client's FIFO of jobs; it may load-balance over several schedulers
//!   ([`Entity::modify_sched`] changes them, [`Entity::set_priority`] its priority).
//! - A job is built (`entity.job(payload)`), given credits and dependencies (explicit fences,
//!   implicit ones from `Resv`s), armed (its *finished* fence exists and may be published) and
//!   pushed. It runs once its dependencies signalled; a dependency on a job of the same
//!   scheduler only waits for that job to be *scheduled*, since the ring executes in order.
//!
//! # The contract
//! Between arming a job (publishing its finished fence) and signalling that fence, the
//! scheduler runs inside signalling sections and never allocates, takes a `Resv` lock or waits
//! on a fence: storage is reserved at arm time; dependencies are waited with callbacks, never
//! by parking a thread per job. A backend's `run_job` must follow the same rules (see
//! [`Backend`]). Every fence handed out signals exactly once: a dropped armed job, a killed
//! entity, a failed dependency and a shut-down scheduler signal an error instead of leaving it
//! pending (a scheduler's teardown cancels even the jobs on the ring,
//! [`Backend::cancel_running`]).
//!
//! # Example
//! ```
//! use gpusched::testing::{MockJob, MockRing};
//! use gpusched::{Entity, Priority, Scheduler, SchedulerConfig};
//!
//! let sched = Scheduler::new(MockRing::immediate(), SchedulerConfig::new("ring0")).unwrap();
//! let client = Entity::new(&[&sched], Priority::Normal).unwrap();
//! let a = client.job(MockJob::new(1)).arm().unwrap();
//! let a_done = a.finished().clone(); // may be published before push
//! a.push();
//! let b = client.job(MockJob::new(2)).dependency(a_done.clone()).arm().unwrap().push();
//! b.wait().unwrap();
//! assert!(a_done.is_signaled());
//! assert_eq!(sched.backend().completed_tags(), vec![1, 2]);
//! ```
//!
//! # Features and switches
//! | what | how | default |
//! |---|---|---|
//! | the signalling-contract checker ([`fence::lockdep`]) | cargo feature `checker` (forwards to `gpusched-fence/checker` and `gpusched-resv/checker`); without it every annotation compiles to nothing, with the same API | on |
//! | fault injection | the mock ring in every build (`testing::MockBehavior`: hangs, failures); the Vulkan backend's cargo feature `fault-injection` (`gpusched-vulkan`: per-job faults, a seeded fault plan, device loss) | mock: always; Vulkan: off |
//! | Vulkan validation layer | environment `GPUSCHED_VALIDATION=1`, Vulkan backend (`gpusched-vulkan`) | off |
//!
//! # Examples
//! In `scheduler/examples/` (`cargo run -p gpusched --example NAME`): `frame_loop_tokio` and
//! `frame_loop_smol` (a headless frame loop on [`testing::MockRing`], frame N depending on
//! frame N−2's finished fence, awaited with `.await`; the Vulkan version comes with the
//! backend), `priorities_and_hang` (priorities, a hung job recovered by the TDR, a client
//! banned), `checker_report` (your own locks under the checker, and a report),
//! `custom_backend` (implementing [`Backend`] for a thread-backed software queue with an
//! allocation-free `run_job` and [`Recovery::standard_reset`]).
//!
//! A job's finished fence is awaited on any executor (fences implement `IntoFuture`):
//! ```
//! use gpusched::testing::{MockJob, MockRing};
//! use gpusched::{Entity, Priority, Scheduler, SchedulerConfig};
//!
//! let sched = Scheduler::new(MockRing::timed(), SchedulerConfig::new("ring0")).unwrap();
//! let client = Entity::new(&[&sched], Priority::Normal).unwrap();
//! let frame = client.job(MockJob::new(7)).arm().unwrap().push();
//! futures_lite::future::block_on(async { frame.await.unwrap() });
//! assert_eq!(sched.backend().completed_tags(), vec![7]);
//! ```

/// A `tracing` event exempt from the checker's allocation rule: a subscriber may allocate to
/// format it, and diagnostics on the signalling path must not count as reclaim (the
/// `GFP_NOWAIT` analogue, `lockdep::no_reclaim`). An event above the current maximum level
/// (`LevelFilter::current`, one relaxed load; none without a subscriber) costs nothing more:
/// the exemption is entered only for events that may be recorded.
macro_rules! diag {
    (trace, $($arg:tt)*) => { diag!(@ tracing::Level::TRACE, trace, $($arg)*) };
    (debug, $($arg:tt)*) => { diag!(@ tracing::Level::DEBUG, debug, $($arg)*) };
    (info, $($arg:tt)*) => { diag!(@ tracing::Level::INFO, info, $($arg)*) };
    (warn, $($arg:tt)*) => { diag!(@ tracing::Level::WARN, warn, $($arg)*) };
    (error, $($arg:tt)*) => { diag!(@ tracing::Level::ERROR, error, $($arg)*) };
    (@ $lvl:expr, $level:ident, $($arg:tt)*) => {{
        if $lvl <= tracing::level_filters::STATIC_MAX_LEVEL
            && $lvl <= tracing::level_filters::LevelFilter::current()
        {
            let _exempt = gpusched_fence::lockdep::no_reclaim();
            tracing::$level!($($arg)*);
        }
    }};
}

mod backend;
mod config;
mod cross_ring;
mod deadline;
mod entity;
mod error;
mod job;
#[cfg(all(test, gpusched_loom))]
mod loom_model;
mod ready;
mod sched;
mod sync;
mod tdr;
mod teardown;
#[cfg(not(gpusched_loom))]
pub mod testing;

pub use gpusched_fence as fence;
pub use gpusched_resv as resv;

pub use crate::backend::{Backend, JobInfo, TimeoutStatus};
pub use crate::config::{Policy, Priority, SchedulerConfig, Timeout};
pub use crate::entity::{Entity, EntityStats};
pub use crate::error::{ArmError, ArmFailure, SchedError};
pub use crate::job::{Access, ArmedJob, JobBuilder};
pub use crate::sched::{Scheduler, SchedulerStats};
pub use crate::tdr::{Recovery, ResetDomain};
