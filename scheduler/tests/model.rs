//! Stateful property test of the scheduler (proptest-state-machine): a reference model of
//! `drm_sched` selection, credits, dependencies, kills, bans and the standard TDR reset,
//! against a real [`Scheduler`] over a manual [`MockRing`], under random transitions.
//!
//! Transitions: create an entity (priority), create or signal an external fence, submit a
//! job (credits 1..=2, behaviour complete/fail/hang, an optional dependency on an earlier
//! job's finished fence or an external fence, pushed or dropped armed), complete the ring's
//! next job, kill an entity, release hangs, and *tick*: let the head job's timeout fire and
//! wait until its recovery has run.
//!
//! After every transition the test waits (under a watchdog) until the scheduler has settled
//! to the model's state (work submitted by the TDR thread is asynchronous), then checks:
//! - the ring received and completed exactly the jobs the model says, in that order
//!   (resubmissions after a reset included), and never held more than the credit limit;
//! - every job's scheduled and finished fences are pending or signalled exactly as the model
//!   says, with the expected error (completion ok/failed, `Killed`, `Cancelled` for a dropped
//!   job or a banned entity, `TimedOut`, a failed dependency's error): nothing signals early;
//! - each entity's finished fences signal in seqno order (timestamps non-decreasing);
//! - the signalling-contract checker recorded no violation.
//!
//! At teardown the scheduler is shut down (`drm_sched_fini`): every fence must have signalled
//! when it returns, with the outcome the model predicts (queued jobs and jobs on the ring
//! `Cancelled`, the latter through the ring's `cancel_running`; finished jobs their result).
//!
//! # Determinism
//! The timeout is short (20 ms), so it also fires while the test is busy between ticks. The
//! ring is wrapped in a backend whose timeout handler resets only when a tick armed it and
//! answers [`TimeoutStatus::NoHang`] otherwise (the scheduler then re-arms and changes
//! nothing), so exactly one reset happens per tick, on the head job the model expects.
//!
//! `PROPTEST_CASES` sets the number of cases (default 64); failures are persisted next to
//! this file (`model.proptest-regressions`) and replayed first; `PROPTEST_VERBOSE=1` prints each
//! transition as it is applied.

#![cfg(not(gpusched_loom))]

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gpusched::fence::{Fence, FenceContext, FenceError, FenceStatus, Signaller};
use gpusched::testing::{MockBehavior, MockJob, MockRing};
use gpusched::{
    Backend, Entity, JobInfo, Priority, Recovery, Scheduler, SchedulerConfig, TimeoutStatus,
};
use proptest::prelude::*;
use proptest::test_runner::Config;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

const CREDIT_LIMIT: u32 = 3;
const HANG_LIMIT: u32 = 1;
const TIMEOUT: Duration = Duration::from_millis(20);
const MAX_ENTITIES: usize = 4;
const MAX_EXT: usize = 3;
/// The error a failing job's hardware fence signals (EIO).
const HW_ERROR: FenceError = FenceError::Driver(-5);
/// Deadlock watchdog for settling and ticks: generous, never a speed assertion.
const WATCHDOG: Duration = Duration::from_secs(20);

type Outcome = Result<(), FenceError>;

// ---------------------------------------------------------------------------------------
// The reference model.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behavior {
    Complete,
    Fail,
    Hang,
}

impl Behavior {
    fn mock(self) -> MockBehavior {
        match self {
            Behavior::Complete => MockBehavior::Complete,
            Behavior::Fail => MockBehavior::Fail(HW_ERROR),
            Behavior::Hang => MockBehavior::Hang,
        }
    }
}

/// What a submitted job depends on (as generated: an index into jobs or external fences).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dep {
    Job(usize),
    Ext(usize),
}

#[derive(Clone, Debug)]
enum Transition {
    NewEntity(Priority),
    NewExt,
    SignalExt { ext: usize, error: bool },
    Submit { entity: usize, credits: u32, behavior: Behavior, dep: Option<Dep>, drop: bool },
    CompleteNext,
    Kill(usize),
    ReleaseHangs,
    Tick,
}

/// A dependency as the scheduler keeps it after arming (own-entity and signalled-ok
/// dependencies are dropped at arm).
#[derive(Clone, Copy, Debug)]
enum ArmedDep {
    None,
    SameSched(usize),
    External(usize),
}

#[derive(Clone, Debug)]
struct MJob {
    entity: usize,
    /// Index in the entity's jobs (seqno - 1).
    idx: usize,
    credits: u32,
    behavior: Behavior,
    dep: ArmedDep,
    /// An external dependency's callback has run (the job's `deps_pending` reached zero).
    dep_seen: bool,
    dropped: bool,
    push_order: u64,
    scheduled: Option<Outcome>,
    finished: Option<Outcome>,
    /// Off the ring, ending with this error once its entity's previous job has finished
    /// (a same-ring dependency failed in a reset while it sat behind it).
    deferred: Option<FenceError>,
}

#[derive(Clone, Debug)]
struct MEntity {
    prio: Priority,
    stopped: Option<FenceError>,
    karma: u32,
    registered: bool,
    jobs: Vec<usize>,
    queue: VecDeque<usize>,
    /// Highest entity index of a job handed to the ring (`scheduled_seqno`).
    ran_max: Option<usize>,
}

#[derive(Clone, Copy, Debug)]
struct RingEntry {
    job: usize,
    hang: bool,
}

#[derive(Clone, Debug, Default)]
struct Model {
    entities: Vec<MEntity>,
    /// Entities per priority, in the order they registered on the scheduler (first arm).
    order: [Vec<usize>; 4],
    jobs: Vec<MJob>,
    ext: Vec<Option<Outcome>>,
    ring: VecDeque<RingEntry>,
    credits: u32,
    push_seq: u64,
    run_log: Vec<u64>,
    completed_log: Vec<u64>,
}

enum Readiness {
    Ready,
    Blocked,
    Failed(FenceError),
}

enum Step {
    Run(usize),
    Cancel(usize, FenceError),
    Idle,
}

impl Model {
    fn new_entity(&mut self, prio: Priority) {
        self.entities.push(MEntity {
            prio,
            stopped: None,
            karma: 0,
            registered: false,
            jobs: Vec::new(),
            queue: VecDeque::new(),
            ran_max: None,
        });
    }

    fn readiness(&self, j: usize) -> Readiness {
        let job = &self.jobs[j];
        if job.dropped {
            return Readiness::Failed(FenceError::Cancelled);
        }
        if let Some(e) = self.entities[job.entity].stopped {
            return Readiness::Failed(e);
        }
        match job.dep {
            ArmedDep::None => Readiness::Ready,
            ArmedDep::External(_) if !job.dep_seen => Readiness::Blocked,
            ArmedDep::External(k) => match self.ext[k] {
                None => Readiness::Blocked,
                Some(Err(e)) => Readiness::Failed(e),
                Some(Ok(())) => Readiness::Ready,
            },
            ArmedDep::SameSched(d) => {
                let dep = &self.jobs[d];
                if let Some(Err(e)) = dep.finished {
                    return Readiness::Failed(e);
                }
                if let Some(e) = dep.deferred {
                    return Readiness::Failed(e);
                }
                let scheduled = self.entities[dep.entity].ran_max.is_some_and(|m| m >= dep.idx);
                if !scheduled && dep.finished.is_none() {
                    Readiness::Blocked
                } else {
                    Readiness::Ready
                }
            }
        }
    }

    fn prev_signalled(&self, j: usize) -> bool {
        let job = &self.jobs[j];
        job.idx == 0 || self.jobs[self.entities[job.entity].jobs[job.idx - 1]].finished.is_some()
    }

    /// `select` of sched/select.rs under `Policy::Fifo`, step for step.
    fn select(&mut self) -> Step {
        let mut chosen = None;
        for p in 0..4 {
            let mut best: Option<(usize, u64)> = None;
            for &e in &self.order[p] {
                let Some(&head) = self.entities[e].queue.front() else { continue };
                match self.readiness(head) {
                    Readiness::Blocked => continue,
                    Readiness::Failed(_) if !self.prev_signalled(head) => continue,
                    Readiness::Failed(err) => {
                        self.entities[e].queue.pop_front();
                        return Step::Cancel(head, err);
                    }
                    Readiness::Ready => {}
                }
                let rank = self.jobs[head].push_order;
                if best.is_none_or(|(_, r)| rank < r) {
                    best = Some((e, rank));
                }
            }
            if let Some((e, _)) = best {
                chosen = Some(e);
                break;
            }
        }
        let Some(e) = chosen else { return Step::Idle };
        let head = self.entities[e].queue[0];
        if self.credits + self.jobs[head].credits > CREDIT_LIMIT {
            return Step::Idle;
        }
        self.entities[e].queue.pop_front();
        Step::Run(head)
    }

    fn run(&mut self, j: usize) {
        let job = &mut self.jobs[j];
        job.scheduled = Some(Ok(()));
        self.credits += job.credits;
        let ent = &mut self.entities[job.entity];
        ent.ran_max = Some(ent.ran_max.map_or(job.idx, |m| m.max(job.idx)));
        self.ring.push_back(RingEntry { job: j, hang: job.behavior == Behavior::Hang });
        self.run_log.push(j as u64);
    }

    /// The scheduler's pump: select until idle.
    fn pump(&mut self) {
        loop {
            match self.select() {
                Step::Idle => return,
                Step::Run(j) => self.run(j),
                Step::Cancel(j, e) => {
                    self.jobs[j].scheduled = Some(Err(e));
                    self.jobs[j].finished = Some(Err(e));
                }
            }
        }
    }

    /// An external fence signalled: its callbacks run in the order they were added (arm
    /// order) and each marks its dependant ready; the scheduler's pump is deferred to the end
    /// of the callback run (`defer_after_callbacks`). So jobs released by one fence are
    /// selected together: by priority, then by policy.
    fn signal_ext(&mut self, k: usize) {
        let mut released = false;
        for j in 0..self.jobs.len() {
            let job = &mut self.jobs[j];
            if matches!(job.dep, ArmedDep::External(d) if d == k) && !job.dep_seen {
                job.dep_seen = true;
                released = true;
            }
        }
        if released {
            self.pump();
        }
    }

    /// `MockRing::complete_next`, then the completion's pump.
    fn complete_next(&mut self) -> bool {
        match self.ring.front() {
            Some(e) if !e.hang => {}
            _ => return false,
        }
        let Some(entry) = self.ring.pop_front() else { return false };
        let job = &mut self.jobs[entry.job];
        job.finished = Some(match job.behavior {
            Behavior::Fail => Err(HW_ERROR),
            Behavior::Complete | Behavior::Hang => Ok(()),
        });
        self.credits -= job.credits;
        self.completed_log.push(entry.job as u64);
        self.release_deferred();
        self.pump();
        true
    }

    /// Deferred jobs whose entity's previous job has finished end with their error, in
    /// timeline order (`release_deferred` in sched/complete.rs).
    fn release_deferred(&mut self) {
        loop {
            let next = (0..self.jobs.len())
                .find(|&j| self.jobs[j].deferred.is_some() && self.prev_signalled(j));
            let Some(j) = next else { return };
            let e = self.jobs[j].deferred.take();
            self.jobs[j].finished = e.map(Err);
            self.credits -= self.jobs[j].credits;
        }
    }

    /// `Recovery::standard_reset` on the head job, then the worker's pump.
    fn tick(&mut self) {
        let Some(guilty) = self.ring.front().map(|e| e.job) else { return };
        let ent = &mut self.entities[self.jobs[guilty].entity];
        ent.karma += 1;
        if ent.karma > HANG_LIMIT {
            ent.stopped.get_or_insert(FenceError::Cancelled);
        }
        self.jobs[guilty].finished = Some(Err(FenceError::TimedOut));
        self.credits -= self.jobs[guilty].credits;
        let innocent: Vec<usize> =
            self.ring.drain(..).map(|e| e.job).filter(|&j| j != guilty).collect();
        for j in innocent {
            match self.entities[self.jobs[j].entity].stopped {
                Some(e) => {
                    self.jobs[j].finished = Some(Err(e));
                    self.credits -= self.jobs[j].credits;
                }
                None => {
                    // A same-ring dependency that failed (in this reset or before): the job
                    // is not rerun; it ends with that error in its entity's timeline order.
                    let dep_error = match self.jobs[j].dep {
                        ArmedDep::SameSched(d) => match self.jobs[d].finished {
                            Some(Err(e)) => Some(e),
                            _ => self.jobs[d].deferred,
                        },
                        _ => None,
                    };
                    if let Some(e) = dep_error {
                        self.jobs[j].deferred = Some(e);
                        continue;
                    }
                    let hang = self.jobs[j].behavior == Behavior::Hang;
                    self.ring.push_back(RingEntry { job: j, hang });
                    self.run_log.push(j as u64);
                }
            }
        }
        self.release_deferred();
        self.pump();
    }

    fn submit(
        &mut self,
        entity: usize,
        credits: u32,
        behavior: Behavior,
        dep: Option<Dep>,
        dropped: bool,
    ) {
        if self.entities[entity].stopped.is_some() {
            return; // arm fails
        }
        let dep = match dep {
            None => ArmedDep::None,
            Some(Dep::Job(d)) => {
                let dj = &self.jobs[d];
                if dj.entity == entity || dj.finished == Some(Ok(())) {
                    ArmedDep::None
                } else {
                    ArmedDep::SameSched(d)
                }
            }
            Some(Dep::Ext(k)) if self.ext[k] == Some(Ok(())) => ArmedDep::None,
            Some(Dep::Ext(k)) => ArmedDep::External(k),
        };
        let j = self.jobs.len();
        let ent = &mut self.entities[entity];
        if !ent.registered {
            ent.registered = true;
            self.order[ent.prio as usize].push(entity);
        }
        let idx = ent.jobs.len();
        ent.jobs.push(j);
        ent.queue.push_back(j);
        let push_order = self.push_seq;
        if !dropped {
            self.push_seq += 1;
        }
        self.jobs.push(MJob {
            entity,
            idx,
            credits,
            behavior,
            dep,
            dep_seen: matches!(dep, ArmedDep::External(k) if self.ext[k].is_some()),
            dropped,
            push_order,
            scheduled: None,
            finished: None,
            deferred: None,
        });
        self.pump();
    }

    /// The jobs on the ring when the test ends, with their outcome once hangs are released.
    fn teardown_outcome(&self, j: usize) -> Outcome {
        if let Some(o) = self.jobs[j].finished {
            return o;
        }
        if let Some(e) = self.jobs[j].deferred {
            return Err(e);
        }
        // On the ring (cancelled through the backend) or queued.
        Err(FenceError::Cancelled)
    }
}

fn priority() -> impl Strategy<Value = Priority> {
    prop::sample::select(vec![Priority::High, Priority::Normal, Priority::Low])
}

fn behavior() -> impl Strategy<Value = Behavior> {
    prop_oneof![5 => Just(Behavior::Complete), 2 => Just(Behavior::Fail), 2 => Just(Behavior::Hang)]
}

struct SchedModel;

impl ReferenceStateMachine for SchedModel {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        prop::collection::vec(priority(), 1..=2)
            .prop_map(|prios| {
                let mut m = Model::default();
                for p in prios {
                    m.new_entity(p);
                }
                m
            })
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Transition> {
        let n_ent = state.entities.len();
        let n_jobs = state.jobs.len();
        let n_ext = state.ext.len();
        let mut dep: Vec<(u32, BoxedStrategy<Option<Dep>>)> = vec![(3, Just(None).boxed())];
        if n_jobs > 0 {
            dep.push((2, (0..n_jobs).prop_map(|j| Some(Dep::Job(j))).boxed()));
        }
        if n_ext > 0 {
            dep.push((1, (0..n_ext).prop_map(|k| Some(Dep::Ext(k))).boxed()));
        }
        let dep = prop::strategy::Union::new_weighted(dep);
        let mut t: Vec<(u32, BoxedStrategy<Transition>)> = vec![
            (1, priority().prop_map(Transition::NewEntity).boxed()),
            (1, Just(Transition::NewExt).boxed()),
            (
                8,
                (0..n_ent, 1..=2u32, behavior(), dep, prop::bool::weighted(0.15))
                    .prop_map(|(entity, credits, behavior, dep, drop)| Transition::Submit {
                        entity,
                        credits,
                        behavior,
                        dep,
                        drop,
                    })
                    .boxed(),
            ),
            (5, Just(Transition::CompleteNext).boxed()),
            (1, (0..n_ent).prop_map(Transition::Kill).boxed()),
            (1, Just(Transition::ReleaseHangs).boxed()),
            (2, Just(Transition::Tick).boxed()),
        ];
        if n_ext > 0 {
            t.push((
                2,
                (0..n_ext, prop::bool::weighted(0.3))
                    .prop_map(|(ext, error)| Transition::SignalExt { ext, error })
                    .boxed(),
            ));
        }
        prop::strategy::Union::new_weighted(t).boxed()
    }

    fn preconditions(state: &Model, t: &Transition) -> bool {
        let n_ent = state.entities.len();
        match *t {
            Transition::NewEntity(_) => n_ent < MAX_ENTITIES,
            Transition::NewExt => state.ext.len() < MAX_EXT,
            Transition::SignalExt { ext, .. } => state.ext.get(ext).is_some_and(Option::is_none),
            Transition::Submit { entity, dep, .. } => {
                entity < n_ent
                    && match dep {
                        None => true,
                        Some(Dep::Job(j)) => j < state.jobs.len(),
                        Some(Dep::Ext(k)) => k < state.ext.len(),
                    }
            }
            Transition::Kill(e) => e < n_ent,
            Transition::Tick => !state.ring.is_empty(),
            Transition::CompleteNext | Transition::ReleaseHangs => true,
        }
    }

    fn apply(mut state: Model, t: &Transition) -> Model {
        match *t {
            Transition::NewEntity(p) => state.new_entity(p),
            Transition::NewExt => state.ext.push(None),
            Transition::SignalExt { ext, error } => {
                state.ext[ext] = Some(if error { Err(HW_ERROR) } else { Ok(()) });
                state.signal_ext(ext);
            }
            Transition::Submit { entity, credits, behavior, dep, drop } => {
                state.submit(entity, credits, behavior, dep, drop);
            }
            Transition::CompleteNext => {
                state.complete_next();
            }
            Transition::Kill(e) => {
                state.entities[e].stopped.get_or_insert(FenceError::Killed);
                state.pump();
            }
            Transition::ReleaseHangs => {
                for e in state.ring.iter_mut() {
                    e.hang = false;
                }
                while state.complete_next() {}
            }
            Transition::Tick => state.tick(),
        }
        state
    }
}

// ---------------------------------------------------------------------------------------
// The system under test.

/// The mock ring with a timeout handler that resets only when a tick armed it.
struct GatedRing {
    ring: MockRing,
    reset_armed: AtomicBool,
    resets: AtomicU64,
    not_reset: AtomicU64,
}

impl Backend for GatedRing {
    common::mock_ring_delegate!();

    fn timedout_job(&self, recovery: &mut Recovery<'_, Self>) -> TimeoutStatus {
        if !self.reset_armed.swap(false, Ordering::AcqRel) {
            return TimeoutStatus::NoHang;
        }
        let status = recovery.standard_reset(|| {
            self.ring.reset_hw();
            true
        });
        if status != TimeoutStatus::Reset {
            self.not_reset.fetch_add(1, Ordering::Relaxed);
        }
        self.resets.fetch_add(1, Ordering::Release);
        status
    }

    fn free_job(&self, job: MockJob, info: &JobInfo) {
        self.ring.free_job(job, info);
    }

    fn cancel_job(&self, job: &mut MockJob, info: &JobInfo, error: FenceError) {
        self.ring.cancel_job(job, info, error);
    }

    fn cancel_running(&self, job: &mut MockJob, info: &JobInfo, error: FenceError) {
        self.ring.cancel_running(job, info, error);
    }
}

struct Sut {
    sched: Scheduler<GatedRing>,
    entities: Vec<Entity<GatedRing>>,
    /// (scheduled, finished) per job, in model order.
    jobs: Vec<(Fence, Fence)>,
    ext: Vec<(Fence, Option<Signaller>)>,
    ext_ctx: FenceContext,
}

impl Sut {
    fn ring(&self) -> &MockRing {
        &self.sched.backend().ring
    }

    fn new_entity(&mut self, prio: Priority) {
        let e = Entity::new(&[&self.sched], prio).expect("one scheduler given");
        self.entities.push(e);
    }

    fn settled(&self, m: &Model) -> bool {
        let ring = self.ring();
        ring.in_flight() == m.ring.len()
            && ring.run_tags().len() == m.run_log.len()
            && self.sched.stats().credits_in_flight == m.credits
            && m.jobs.iter().zip(&self.jobs).all(|(mj, (s, f))| {
                mj.finished.is_none_or(|_| f.is_signaled())
                    && mj.scheduled.is_none_or(|_| s.is_signaled())
            })
    }

    /// Waits until the scheduler reached the model's state, then checks it in detail.
    fn check(&self, m: &Model) {
        let deadline = Instant::now() + WATCHDOG;
        while !self.settled(m) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        let ring = self.ring();
        assert_eq!(ring.run_tags(), m.run_log, "jobs handed to the ring");
        assert_eq!(ring.completed_tags(), m.completed_log, "jobs completed by the ring");
        assert_eq!(ring.in_flight(), m.ring.len(), "jobs on the ring");
        assert_eq!(self.sched.stats().credits_in_flight, m.credits, "credits in flight");
        assert!(
            ring.max_credits_in_flight() <= CREDIT_LIMIT,
            "{} credits on the ring",
            ring.max_credits_in_flight()
        );
        for (j, (mj, (s, f))) in m.jobs.iter().zip(&self.jobs).enumerate() {
            assert_eq!(status_of(mj.scheduled), s.status(), "scheduled fence of job {j}: {mj:?}");
            assert_eq!(status_of(mj.finished), f.status(), "finished fence of job {j}: {mj:?}");
        }
        self.check_entity_order(m);
        assert_eq!(gpusched::fence::lockdep::violations(), 0, "checker violations");
        assert_eq!(self.sched.backend().not_reset.load(Ordering::Relaxed), 0);
    }

    /// Each entity's finished fences signal in seqno order.
    fn check_entity_order(&self, m: &Model) {
        for (e, ent) in m.entities.iter().enumerate() {
            let mut last: Option<Instant> = None;
            let mut pending_seen = false;
            for &j in &ent.jobs {
                let f = &self.jobs[j].1;
                match f.timestamp() {
                    Some(t) => {
                        assert!(
                            !pending_seen,
                            "entity {e}: job {j} signalled before an earlier one"
                        );
                        assert!(last.is_none_or(|l| l <= t), "entity {e}: job {j} signalled early");
                        last = Some(t);
                    }
                    None => pending_seen = true,
                }
            }
        }
    }
}

fn status_of(o: Option<Outcome>) -> FenceStatus {
    match o {
        None => FenceStatus::Pending,
        Some(Ok(())) => FenceStatus::Signaled,
        Some(Err(e)) => FenceStatus::Failed(e),
    }
}

struct SchedTest;

impl StateMachineTest for SchedTest {
    type SystemUnderTest = Sut;
    type Reference = SchedModel;

    fn init_test(m: &Model) -> Sut {
        let backend = GatedRing {
            ring: MockRing::manual(),
            reset_armed: AtomicBool::new(false),
            resets: AtomicU64::new(0),
            not_reset: AtomicU64::new(0),
        };
        let config = SchedulerConfig::new("model")
            .credit_limit(CREDIT_LIMIT)
            .hang_limit(HANG_LIMIT)
            .timeout(TIMEOUT);
        let sched = Scheduler::new(backend, config).expect("valid config");
        let mut sut = Sut {
            sched,
            entities: Vec::new(),
            jobs: Vec::new(),
            ext: Vec::new(),
            ext_ctx: FenceContext::new("external"),
        };
        for e in &m.entities {
            sut.new_entity(e.prio);
        }
        sut
    }

    fn apply(mut sut: Sut, m: &Model, t: Transition) -> Sut {
        match t {
            Transition::NewEntity(p) => sut.new_entity(p),
            Transition::NewExt => {
                let (f, s) = sut.ext_ctx.next();
                sut.ext.push((f, Some(s)));
            }
            Transition::SignalExt { ext, error } => {
                let s = sut.ext[ext].1.take().expect("precondition: pending");
                if error {
                    s.signal_error(HW_ERROR);
                } else {
                    s.signal();
                }
            }
            Transition::Submit { entity, credits, behavior, dep, drop } => {
                let tag = sut.jobs.len() as u64;
                let payload = MockJob::new(tag).behavior(behavior.mock());
                let mut b = sut.entities[entity].job(payload).credits(credits);
                match dep {
                    Some(Dep::Job(j)) => b = b.dependency(sut.jobs[j].1.clone()),
                    Some(Dep::Ext(k)) => b = b.dependency(sut.ext[k].0.clone()),
                    None => {}
                }
                let expect_armed = m.jobs.len() > sut.jobs.len();
                match b.arm() {
                    Ok(armed) => {
                        assert!(expect_armed, "arm succeeded on a stopped entity");
                        sut.jobs.push((armed.scheduled().clone(), armed.finished().clone()));
                        if drop {
                            std::mem::drop(armed);
                        } else {
                            armed.push();
                        }
                    }
                    Err(e) => {
                        assert!(!expect_armed, "arm failed: {e}");
                        assert!(e.error.is_entity_stopped(), "{e}");
                    }
                }
            }
            Transition::CompleteNext => {
                let expected = m.completed_log.len() > sut.ring().completed_tags().len();
                assert_eq!(sut.ring().complete_next(), expected, "complete_next");
            }
            Transition::Kill(e) => sut.entities[e].kill(),
            Transition::ReleaseHangs => {
                sut.ring().release_hangs();
                // Completions chain into runs; if the TDR thread ran them, complete_all may
                // have stopped early: finish what the model says release_hangs completes.
                let deadline = Instant::now() + WATCHDOG;
                while sut.ring().completed_tags().len() < m.completed_log.len() {
                    assert!(Instant::now() < deadline, "release_hangs did not complete");
                    if !sut.ring().complete_next() {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            }
            Transition::Tick => {
                let b = sut.sched.backend();
                let before = b.resets.load(Ordering::Acquire);
                b.reset_armed.store(true, Ordering::Release);
                std::thread::sleep(TIMEOUT);
                let deadline = Instant::now() + WATCHDOG;
                while b.resets.load(Ordering::Acquire) == before {
                    assert!(Instant::now() < deadline, "the timeout did not fire");
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        }
        sut.check(m);
        sut
    }

    fn teardown(sut: Sut, m: Model) {
        sut.sched.shutdown(FenceError::Cancelled);
        // Every job was pushed or dropped: all fences signalled before `shutdown` returned.
        for (j, (s, f)) in sut.jobs.iter().enumerate() {
            assert!(s.is_signaled() && f.is_signaled(), "job {j} pending after teardown");
        }
        for (j, (_, f)) in sut.jobs.iter().enumerate() {
            let expected = status_of(Some(m.teardown_outcome(j)));
            assert_eq!(f.status(), expected, "job {j} at teardown: {:?}", m.jobs[j]);
        }
        sut.check_entity_order(&m);
        assert_eq!(sut.ring().in_flight(), 0);
        assert!(sut.ring().max_credits_in_flight() <= CREDIT_LIMIT);
        let Sut { sched, entities, jobs, ext, ext_ctx } = sut;
        drop((entities, ext, ext_ctx));
        drop(sched);
        drop(jobs);
        assert_eq!(gpusched::fence::lockdep::violations(), 0, "checker violations");
    }
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64);
    Config { cases, max_shrink_iters: 2048, ..Config::default() }
}

prop_state_machine! {
    #![proptest_config(config())]
    #[test]
    fn scheduler_matches_model(sequential 1..30 => SchedTest);
}
