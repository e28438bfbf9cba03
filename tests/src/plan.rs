//! Scenario generation: a seeded, reproducible plan of entities, a job DAG and a fault schedule.
//!
//! The plan is a pure function of the seed and the [`PlanConfig`] (ChaCha8, whose stream is
//! stable across `rand` releases): replaying a seed replays the same entities, jobs,
//! dependencies and faults. What a seed cannot replay is thread timing (which submitter locks a
//! shared buffer first, when the timeout worker runs); the oracle judges each run from the
//! plan *and* what was observed, so every interleaving is checked, not only one.

use std::fmt;
use std::time::Duration;

use gpusched::{Access, Policy, Priority};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A fault injected into one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No fault: the job computes its value.
    None,
    /// The job never completes on the hardware: the timeout handler must blame it
    /// (`TimedOut`) and reset the ring.
    Hang,
    /// The job runs for this long, well past the scheduler's timeout.
    Slow(Duration),
    /// The submission fails (`run_job` returns an error): the job ends with
    /// [`SUBMIT_ERROR`] without reaching the hardware.
    FailSubmit,
}

impl Fault {
    /// Whether the fault makes the job occupy the hardware past the timeout.
    pub fn is_stuck(self) -> bool {
        matches!(self, Fault::Hang | Fault::Slow(_))
    }
}

/// The error a [`Fault::FailSubmit`] job's submission fails with (`-EPROTO`).
pub const SUBMIT_ERROR: gpusched::fence::FenceError = gpusched::fence::FenceError::Driver(-71);

/// One client.
#[derive(Clone, Debug)]
pub struct EntityPlan {
    /// Its run-queue priority.
    pub priority: Priority,
    /// A rogue client: every job hangs, until the timeout handler bans it.
    pub rogue: bool,
    /// The rings (indices) it may be load-balanced over; never empty.
    pub rings: Vec<usize>,
    /// The submitter thread that owns it (an entity's jobs are armed and pushed in order by
    /// one thread).
    pub thread: usize,
}

/// One job of the DAG. Jobs are numbered in a global order; every dependency points to an
/// earlier job, so the DAG is acyclic and submitters never wait for each other in a cycle.
#[derive(Clone, Debug)]
pub struct JobPlan {
    /// The submitting entity.
    pub entity: usize,
    /// Explicit dependencies: earlier jobs whose finished fences this job waits for.
    pub deps: Vec<usize>,
    /// Implicit dependencies: shared buffers (indices) and how the job accesses them; the
    /// fences come from each buffer's `Resv` at submission time.
    pub buffers: Vec<(usize, Access)>,
    /// Ring credits.
    pub credits: u32,
    /// The injected fault.
    pub fault: Fault,
    /// Dropped after arming instead of pushed (its fences end `Cancelled`).
    pub drop_unpushed: bool,
}

/// Something done to the system mid-scenario, right after a job was submitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Kill an entity (`Entity::kill`): its queued jobs end `Killed`.
    Kill(usize),
    /// Lose the device: every unfinished fence ends `DeviceLost`.
    LoseDevice,
}

/// A fault event, run by the submitter of job `after_job` right after submitting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The job after whose submission it happens.
    pub after_job: usize,
    /// What happens.
    pub kind: EventKind,
}

/// Knobs of the generator (sizes and fault rates). The defaults keep a scenario well under a
/// second on the mock ring in a debug build.
#[derive(Clone, Debug)]
pub struct PlanConfig {
    /// Most entities.
    pub max_entities: usize,
    /// Most jobs.
    pub max_jobs: usize,
    /// Most rings (schedulers, all in one reset domain).
    pub max_rings: usize,
    /// Most shared buffers.
    pub max_buffers: usize,
    /// Most submitter threads.
    pub max_threads: usize,
    /// Most hung or slow jobs of well-behaved entities (each costs a timeout).
    pub max_stuck: usize,
    /// The scheduler timeout of the world.
    pub timeout: Duration,
    /// How many timeouts a slow job runs (3 by default; a Vulkan ring declares its device
    /// lost after three timeouts without progress, so the Vulkan world uses less).
    pub slow_timeouts: f64,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            max_entities: 6,
            max_jobs: 40,
            max_rings: 3,
            max_buffers: 4,
            max_threads: 3,
            max_stuck: 2,
            timeout: Duration::from_millis(25),
            slow_timeouts: 3.0,
        }
    }
}

/// A whole scenario; see the module docs.
#[derive(Clone)]
pub struct Scenario {
    /// The seed it was generated from.
    pub seed: u64,
    /// Number of rings.
    pub rings: usize,
    /// Credit limit of every ring.
    pub credit_limit: u32,
    /// Hang limit of every ring (a rogue entity is banned after `hang_limit + 1` hangs).
    pub hang_limit: u32,
    /// Entity-selection policy of every ring.
    pub policy: Policy,
    /// The scheduler timeout.
    pub timeout: Duration,
    /// Number of shared buffers.
    pub buffers: usize,
    /// Number of submitter threads.
    pub threads: usize,
    /// The clients.
    pub entities: Vec<EntityPlan>,
    /// The job DAG, in global order.
    pub jobs: Vec<JobPlan>,
    /// The fault events.
    pub events: Vec<Event>,
}

impl Scenario {
    /// Generates the scenario of `seed`.
    pub fn generate(seed: u64, cfg: &PlanConfig) -> Scenario {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rings = rng.gen_range(1..=cfg.max_rings.max(1));
        let credit_limit = rng.gen_range(2..=12);
        let hang_limit = rng.gen_range(0..=1);
        let policy = *[Policy::Fifo, Policy::RoundRobin, Policy::Fair]
            .choose(&mut rng)
            .unwrap_or(&Policy::Fifo);
        let threads = rng.gen_range(1..=cfg.max_threads.max(1));
        let n_entities = rng.gen_range(2..=cfg.max_entities.max(2));
        let buffers = rng.gen_range(0..=cfg.max_buffers);
        let rogue_entity = rng.gen_bool(0.3).then(|| rng.gen_range(0..n_entities));
        let entities: Vec<EntityPlan> = (0..n_entities)
            .map(|e| {
                let mut rs: Vec<usize> = (0..rings).filter(|_| rng.gen_bool(0.6)).collect();
                if rs.is_empty() {
                    rs.push(rng.gen_range(0..rings));
                }
                EntityPlan {
                    priority: Priority::ALL[rng.gen_range(0..Priority::ALL.len())],
                    rogue: rogue_entity == Some(e),
                    rings: rs,
                    thread: e % threads,
                }
            })
            .collect();
        let n_jobs = rng.gen_range(n_entities..=cfg.max_jobs.max(n_entities));
        let mut jobs: Vec<JobPlan> = Vec::with_capacity(n_jobs);
        let mut stuck = 0;
        // A rogue client needs `hang_limit + 1` hangs to be banned; give it a few more jobs
        // than that so some are submitted after the ban.
        let mut rogue_left = hang_limit as usize + 3;
        for j in 0..n_jobs {
            let mut entity = rng.gen_range(0..n_entities);
            if entities[entity].rogue {
                if rogue_left == 0 {
                    entity = (entity + 1) % n_entities;
                } else {
                    rogue_left -= 1;
                }
            }
            let mut deps = Vec::new();
            if j > 0 {
                for _ in 0..rng.gen_range(0..=2) {
                    let d = rng.gen_range(0..j);
                    if !deps.contains(&d) {
                        deps.push(d);
                    }
                }
            }
            let mut bufs: Vec<(usize, Access)> = Vec::new();
            if buffers > 0 {
                for _ in 0..rng.gen_range(0..=2) {
                    let b = rng.gen_range(0..buffers);
                    if bufs.iter().all(|(x, _)| *x != b) {
                        let access = if rng.gen_bool(0.4) { Access::Write } else { Access::Read };
                        bufs.push((b, access));
                    }
                }
            }
            let fault = if entities[entity].rogue {
                Fault::Hang
            } else {
                let r: f64 = rng.gen();
                if r < 0.03 && stuck < cfg.max_stuck {
                    stuck += 1;
                    Fault::Hang
                } else if r < 0.06 && stuck < cfg.max_stuck {
                    stuck += 1;
                    Fault::Slow(cfg.timeout.mul_f64(cfg.slow_timeouts))
                } else if r < 0.085 {
                    Fault::FailSubmit
                } else {
                    Fault::None
                }
            };
            let drop_unpushed = !entities[entity].rogue && rng.gen_bool(0.025);
            jobs.push(JobPlan {
                entity,
                deps,
                buffers: bufs,
                credits: rng.gen_range(1..=2.min(credit_limit)),
                fault,
                drop_unpushed,
            });
        }
        let mut events = Vec::new();
        if rng.gen_bool(0.25) {
            events.push(Event {
                after_job: rng.gen_range(0..n_jobs),
                kind: EventKind::Kill(rng.gen_range(0..n_entities)),
            });
        }
        if rng.gen_bool(0.1) {
            events.push(Event { after_job: rng.gen_range(0..n_jobs), kind: EventKind::LoseDevice });
        }
        Scenario {
            seed,
            rings,
            credit_limit,
            hang_limit,
            policy,
            timeout: cfg.timeout,
            buffers,
            threads,
            entities,
            jobs,
            events,
        }
    }

    /// Whether the device is lost at some point.
    pub fn loses_device(&self) -> bool {
        self.events.iter().any(|e| e.kind == EventKind::LoseDevice)
    }
}

impl fmt::Debug for Scenario {
    /// A readable dump: one line per entity, job and event.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario seed={} rings={} credit_limit={} hang_limit={} policy={:?} timeout={:?} \
             buffers={} threads={}",
            self.seed,
            self.rings,
            self.credit_limit,
            self.hang_limit,
            self.policy,
            self.timeout,
            self.buffers,
            self.threads
        )?;
        for (i, e) in self.entities.iter().enumerate() {
            writeln!(
                f,
                "  entity {i}: {:?}{} rings {:?} thread {}",
                e.priority,
                if e.rogue { " ROGUE" } else { "" },
                e.rings,
                e.thread
            )?;
        }
        for (i, j) in self.jobs.iter().enumerate() {
            writeln!(
                f,
                "  job {i}: entity {} credits {} deps {:?} buffers {:?} fault {:?}{}",
                j.entity,
                j.credits,
                j.deps,
                j.buffers,
                j.fault,
                if j.drop_unpushed { " DROPPED" } else { "" }
            )?;
        }
        for e in &self.events {
            writeln!(f, "  after job {}: {:?}", e.after_job, e.kind)?;
        }
        Ok(())
    }
}
