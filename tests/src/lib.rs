//! Cross-crate integration and fault-injection suites for `gpusched` (the suites live in
//! `tests/tests/`). This library is the fault-injection engine they share.
//!
//! # The fault suite
//! A seeded generator ([`Scenario::generate`]) makes a scenario: entities at mixed priorities (one
//! perhaps rogue, hanging until banned) on one to three rings of one device, a random DAG of jobs
//! with explicit dependencies (earlier jobs' finished fences) and implicit ones (shared buffers'
//! `Resv`s, read or written, through `JobBuilder::resv_dependencies`), and faults: hung jobs, slow
//! jobs past the timeout, failed submissions, device loss, entities killed mid-flight, armed jobs
//! dropped unpushed. The executor ([`run_scenario`]) runs it against a [`World`] (the backend:
//! [`MockWorld`] on a software ring, [`VulkanWorld`] over `gpusched-vulkan` on lavapipe) from
//! several submitter threads (and [`LayerWorld`]: the Vulkan world with its device losses, failed
//! submissions and allocation failures made by the Vulkan fault layer), and the oracle checks, after every scenario, the rules its module
//! documents: every fence handed out signalled exactly once; every error is the right one (guilty
//! `TimedOut`, banned `Cancelled`, killed `Killed`, lost `DeviceLost`, a failed dependency's error
//! propagated); every innocent job succeeded with the right computed result ([`job_value`]); no
//! deadlock (a watchdog per scenario, [`WATCHDOG`]); no checker violation; no leaked job, payload,
//! ring or scheduler.
//!
//! A failure is a [`Failure`]: the seed, every broken rule, and a dump of the scenario and of
//! each job's outcome. The suites print how to replay it (`FAULT_SEED=<seed>`).
//!
//! The suites share their seed loop, replay and soak ([`run_seeds`], [`soak`], configured by a
//! [`Harness`]; the variables are listed in the `harness` module): `FAULT_SEED=<n>` replays one
//! seed, `FAULT_SEEDS=<n>` runs the mock suite on seeds `0..n` and `FAULT_VULKAN_SEEDS=<n>` the
//! Vulkan suite (each suite its own count: a Vulkan scenario is far slower),
//! `FAULT_SOAK_SECS` sizes the soaks, `FAULT_DUMP=1` prints every failing seed's dump.

mod exec;
mod harness;
mod layer;
mod ledger;
mod mock;
mod oracle;
mod plan;
#[path = "../../vulkan-backend/tests/common/probe.rs"]
mod probe;
mod vulkan;
mod world;

pub use crate::exec::{run_scenario, Failure, Summary, WATCHDOG};
pub use crate::harness::{env_u64, run_seeds, serial, soak, Harness, Seeds, Totals};
pub use crate::layer::{fault_layer, layer_injected, LayerWorld};
pub use crate::ledger::{job_value, JobLedger, Ledger};
pub use crate::mock::{FaultJob, FaultRing, MockWorld};
pub use crate::plan::{
    EntityPlan, Event, EventKind, Fault, JobPlan, PlanConfig, Scenario, SUBMIT_ERROR,
};
pub use crate::probe::{validated_device, validated_device_available};
pub use crate::vulkan::{VulkanWorld, VULKAN_PLAN};
pub use crate::world::{Corrupting, World};
