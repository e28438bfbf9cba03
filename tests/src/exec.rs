//! The executor: runs a [`Scenario`] against a [`World`] with one submitter thread per group of
//! entities, injects the fault events, waits for every fence under a watchdog, then hands what
//! happened to the [oracle](crate::oracle) and checks teardown (nothing leaked).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gpusched::fence::{lockdep, Fence, FenceError, WaitError};
use gpusched::resv::{Exec, Resv, ResvGuard, Usage};
use gpusched::{Access, ArmFailure, Entity};

use crate::ledger::Ledger;
use crate::oracle::{self, Observed};
use crate::plan::{EventKind, PlanConfig, Scenario};
use crate::world::World;

/// How long a scenario may take before it counts as deadlocked (a watchdog, never a speed
/// assertion).
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// What one scenario did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Jobs in the plan.
    pub jobs: usize,
    /// Jobs armed.
    pub armed: usize,
    /// Jobs whose finished fence signalled successfully.
    pub ok: usize,
    /// Jobs whose finished fence signalled an error.
    pub failed: usize,
    /// Arms refused (killed, banned entity; device gone).
    pub arm_refused: usize,
    /// Guilty jobs reset by the timeout handler.
    pub resets: usize,
    /// Whether the device was lost.
    pub device_lost: bool,
    /// Entities banned (stopped `Cancelled` after too many hangs).
    pub banned: usize,
    /// Entities killed.
    pub killed: usize,
    /// Jobs that succeeded although a blamed dependency failed, tolerated on a world that
    /// does not rerun jobs after a reset (see the oracle's docs).
    pub ran_past_failed_dependency: usize,
    /// Pairs of an entity's finished fences that signalled out of seqno order, tolerated on a
    /// world with a known timeline bug (see the oracle's docs).
    pub timeline_inversions: usize,
    /// Jobs that ended with the world's `SUBMIT_ERROR` in a world whose driver fails
    /// submissions unattributed ([`World::SUBMIT_FAULTS_ATTRIBUTED`](crate::World) false).
    pub driver_submit_failures: usize,
}

/// A failed scenario: its seed, what went wrong, and a dump to debug it.
#[derive(Clone)]
pub struct Failure {
    /// The scenario's seed.
    pub seed: u64,
    /// The world's name.
    pub world: &'static str,
    /// Every invariant that did not hold.
    pub problems: Vec<String>,
    /// The scenario and, where the run got that far, each job's outcome.
    pub dump: String,
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} world, seed {}: {} problem(s)",
            self.world,
            self.seed,
            self.problems.len()
        )?;
        for p in self.problems.iter().take(40) {
            writeln!(f, "  - {p}")?;
        }
        write!(f, "{}", self.dump)
    }
}

/// Generates the scenario of `seed` and runs it on a fresh `W` under the watchdog.
///
/// It counts the checker violations raised in the process while it runs: hold
/// [`serial`](crate::serial) so that no other test of the process runs meanwhile.
///
/// # Errors
/// The invariants that did not hold, with the seed and a dump.
pub fn run_scenario<W: World>(seed: u64, cfg: &PlanConfig) -> Result<Summary, Failure> {
    let scenario = Scenario::generate(seed, cfg);
    let dump = format!("{scenario:?}");
    let (tx, rx) = std::sync::mpsc::channel();
    let runner = std::thread::Builder::new()
        .name(format!("scenario-{seed}"))
        .spawn(move || {
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_body::<W>(&scenario)));
            let _ = tx.send(r);
        })
        .unwrap_or_else(|e| panic!("cannot start a scenario thread: {e}"));
    let fail =
        |problems: Vec<String>, dump: String| Failure { seed, world: W::NAME, problems, dump };
    match rx.recv_timeout(WATCHDOG) {
        Ok(Ok(Ok(summary))) => {
            let _ = runner.join();
            Ok(summary)
        }
        Ok(Ok(Err((problems, details)))) => {
            let _ = runner.join();
            Err(fail(problems, format!("{dump}{details}")))
        }
        Ok(Err(panic)) => {
            let _ = runner.join();
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "non-string panic".to_owned());
            Err(fail(vec![format!("panicked: {msg}")], dump))
        }
        // The runner is left behind (deadlocked): the failure names the seed to replay.
        Err(_) => Err(fail(
            vec![format!("deadlock: the scenario did not finish within {WATCHDOG:?}")],
            dump,
        )),
    }
}

/// What a submitter published for a job, for the jobs that depend on it.
#[derive(Clone)]
enum Published {
    Pending,
    Armed(Fence),
    NotArmed,
}

/// Per-job record kept by the submitters.
#[derive(Clone, Default)]
pub(crate) struct Record {
    pub(crate) finished: Option<Fence>,
    pub(crate) scheduled: Option<Fence>,
    /// Why arming was refused; a backend's refusal is kept as its message.
    pub(crate) arm_error: Option<ArmFailure<String>>,
    /// Its entity had been killed (the kill returned) before it was armed.
    pub(crate) armed_after_kill: bool,
}

struct Board {
    published: Mutex<Vec<Published>>,
    cv: Condvar,
    /// Finished fence (context, seqno) → job index, for mapping implicit dependencies.
    index: Mutex<HashMap<(u64, u64), usize>>,
    records: Mutex<Vec<Record>>,
}

fn lk<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type BodyResult = Result<Summary, (Vec<String>, String)>;

fn run_body<W: World>(scn: &Scenario) -> BodyResult {
    let violations_before = lockdep::violations();
    let n = scn.jobs.len();
    let ledger = Arc::new(Ledger::new(n));
    let world =
        W::new(scn, ledger.clone()).map_err(|e| (vec![format!("world: {e}")], String::new()))?;
    let scheds: Vec<_> = world.schedulers().iter().collect();
    let entities: Vec<Entity<W::Backend>> = scn
        .entities
        .iter()
        .map(|e| {
            let rings: Vec<_> = e.rings.iter().map(|&r| scheds[r]).collect();
            Entity::new(&rings, e.priority).unwrap_or_else(|e| panic!("entity refused: {e}"))
        })
        .collect();
    let buffers: Vec<Resv> = (0..scn.buffers).map(|_| Resv::new()).collect();
    let board = Board {
        published: Mutex::new(vec![Published::Pending; n]),
        cv: Condvar::new(),
        index: Mutex::new(HashMap::new()),
        records: Mutex::new(vec![Record::default(); n]),
    };
    let killed: Vec<AtomicBool> = scn.entities.iter().map(|_| AtomicBool::new(false)).collect();
    let device_lost = AtomicBool::new(false);
    let submit_errors: Mutex<Vec<String>> = Mutex::new(Vec::new());

    std::thread::scope(|s| {
        for t in 0..scn.threads {
            let (board, entities, buffers, killed, device_lost, world, ledger, errs) = (
                &board,
                &entities,
                &buffers,
                &killed,
                &device_lost,
                &world,
                &ledger,
                &submit_errors,
            );
            std::thread::Builder::new()
                .name(format!("submitter-{t}"))
                .spawn_scoped(s, move || {
                    let ctx = Submitter { scn, board, entities, buffers, world, ledger };
                    for j in (0..scn.jobs.len())
                        .filter(|&j| scn.entities[scn.jobs[j].entity].thread == t)
                    {
                        if let Err(e) = ctx.submit(j, killed) {
                            lk(errs).push(e);
                            // Publish so that no other submitter waits for it forever.
                            lk(&board.published)[j] = Published::NotArmed;
                            board.cv.notify_all();
                        }
                        for ev in scn.events.iter().filter(|ev| ev.after_job == j) {
                            match ev.kind {
                                EventKind::Kill(e) => {
                                    entities[e].kill();
                                    killed[e].store(true, Ordering::Release);
                                }
                                EventKind::LoseDevice => {
                                    world.lose_device();
                                    device_lost.store(true, Ordering::Release);
                                }
                            }
                        }
                    }
                })
                .unwrap_or_else(|e| panic!("cannot start a submitter: {e}"));
        }
    });
    let mut problems = std::mem::take(&mut *lk(&submit_errors));
    let records = std::mem::take(&mut *lk(&board.records));

    // Every handed-out fence signals, within the watchdog (inside the scenario's, so that the
    // report has each job's outcome).
    let deadline = Instant::now() + WATCHDOG / 2;
    for (j, r) in records.iter().enumerate() {
        for (what, f) in [("finished", &r.finished), ("scheduled", &r.scheduled)] {
            if let Some(f) = f {
                if let Err(WaitError::Timeout) =
                    f.wait_timeout(deadline.saturating_duration_since(Instant::now()))
                {
                    problems.push(format!("job {j}: its {what} fence never signalled (deadlock)"));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err((problems, oracle::dump(scn, &records, &ledger)));
    }
    // Callbacks, freeing and the last pumps run just after the fences signal: wait for them
    // to settle (bounded), then count exactly.
    let settled = || {
        records.iter().enumerate().all(|(j, r)| {
            let l = ledger.job(j);
            r.finished.is_none()
                || (l.finished_signals.load(Ordering::Acquire) >= 1
                    && l.scheduled_signals.load(Ordering::Acquire) >= 1
                    && (!W::COUNTS_BACKEND_CALLS
                        || l.freed.load(Ordering::Acquire) >= l.prepared.load(Ordering::Acquire)))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !settled() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    if let Err(e) = world.collect() {
        problems.push(format!("collect: {e}"));
    }
    let observed = Observed {
        records: &records,
        ledger: &ledger,
        stopped: entities.iter().map(Entity::stopped).collect(),
        device_lost: device_lost.load(Ordering::Acquire),
        traits: oracle::Traits {
            counts_backend_calls: W::COUNTS_BACKEND_CALLS,
            recovers_from_loss: W::RECOVERS_FROM_LOSS,
            submit_error: W::SUBMIT_ERROR,
            reruns_after_reset: W::RERUNS_AFTER_RESET,
            timeline_in_order: W::TIMELINE_IN_ORDER,
            submit_faults_attributed: W::SUBMIT_FAULTS_ATTRIBUTED,
        },
    };
    let summary = oracle::check(scn, &observed, &mut problems);

    // Counters of the scheduler: nothing queued or on the hardware; every armed job ended.
    for (i, e) in entities.iter().enumerate() {
        let st = e.stats();
        if st.armed != st.finished_ok + st.finished_err {
            problems.push(format!("entity {i}: {st:?}: armed jobs not all finished"));
        }
    }
    for s in world.schedulers() {
        let st = s.stats();
        if st.credits_in_flight != 0 || st.queued != 0 {
            problems.push(format!("scheduler {}: left busy: {st:?}", s.name()));
        }
    }
    for (b, resv) in buffers.iter().enumerate() {
        if !resv.test_signaled_unlocked(Usage::Bookkeep) {
            problems.push(format!("buffer {b}: unsignalled fences left in its resv"));
        }
    }
    drop(buffers);
    drop(entities);
    let dump_after = oracle::dump(scn, &records, &ledger);
    drop(records);
    if let Err(e) = world.teardown() {
        problems.push(format!("teardown: {e}"));
    }
    if !W::COUNTS_BACKEND_CALLS {
        // The world counts `freed` when a payload drops, which the backend may defer until
        // teardown: every payload made (its inputs are set just before) dropped exactly once.
        for j in 0..n {
            let l = ledger.job(j);
            let freed = l.freed.load(Ordering::Acquire);
            if l.inputs.get().is_some() && freed != 1 {
                problems.push(format!("job {j}: payload dropped {freed} times after teardown"));
            }
        }
    }
    let live = ledger.live_objects.load(Ordering::Acquire);
    if live != 0 {
        problems.push(format!("{live} backend objects (payloads, rings) leaked"));
    }
    if Arc::strong_count(&ledger) != 1 {
        problems.push(format!("{} ledger references leaked", Arc::strong_count(&ledger) - 1));
    }
    let violations = lockdep::violations() - violations_before;
    if violations != 0 {
        problems.push(format!("{violations} checker violations: {:#?}", lockdep::reports()));
    }
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err((problems, dump_after))
    }
}

struct Submitter<'a, W: World> {
    scn: &'a Scenario,
    board: &'a Board,
    entities: &'a [Entity<W::Backend>],
    buffers: &'a [Resv],
    world: &'a W,
    ledger: &'a Arc<Ledger>,
}

impl<W: World> Submitter<'_, W> {
    /// Waits until job `d` is published; its finished fence if it was armed.
    fn dependency(&self, d: usize) -> Result<Option<Fence>, String> {
        let deadline = Instant::now() + WATCHDOG;
        let mut p = lk(&self.board.published);
        loop {
            match &p[d] {
                Published::Pending => {}
                Published::Armed(f) => return Ok(Some(f.clone())),
                Published::NotArmed => return Ok(None),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("job {d} was never published (submitter deadlock)"));
            }
            p = self.board.cv.wait_timeout(p, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn submit(&self, j: usize, killed: &[AtomicBool]) -> Result<(), String> {
        let plan = &self.scn.jobs[j];
        let mut explicit = Vec::new();
        for &d in &plan.deps {
            if let Some(f) = self.dependency(d)? {
                explicit.push((d, f));
            }
        }
        let entity = &self.entities[plan.entity];
        let armed_after_kill = killed[plan.entity].load(Ordering::Acquire);
        let objects: Vec<&Resv> = plan.buffers.iter().map(|&(b, _)| &self.buffers[b]).collect();
        let arm = |guards: &mut [ResvGuard<'_>]| {
            // Implicit dependencies, mapped to job indices for the oracle.
            let mut inputs: Vec<usize> = explicit.iter().map(|(d, _)| *d).collect();
            {
                let index = lk(&self.board.index);
                for (g, &(_, access)) in guards.iter().zip(&plan.buffers) {
                    let usage = Usage::for_access(access == Access::Write);
                    for f in g.get_fences(usage) {
                        if let Some(&d) = index.get(&(f.context(), f.seqno())) {
                            inputs.push(d);
                        }
                    }
                }
            }
            inputs.sort_unstable();
            inputs.dedup();
            let _ = self.ledger.job(j).inputs.set(inputs.into_boxed_slice());
            let mut b = entity
                .job(self.world.payload(j, plan.fault))
                .credits(plan.credits)
                .dependencies(explicit.iter().map(|(_, f)| f.clone()));
            for (g, &(_, access)) in guards.iter().zip(&plan.buffers) {
                b = b.resv_dependencies(g, access);
            }
            let armed = b.arm();
            if let Ok(a) = &armed {
                let f = a.finished();
                lk(&self.board.index).insert((f.context(), f.seqno()), j);
                for (g, &(_, access)) in guards.iter_mut().zip(&plan.buffers) {
                    let usage = if access == Access::Write { Usage::Write } else { Usage::Read };
                    if g.reserve_fences(1).is_err() {
                        panic!("cannot reserve a fence slot");
                    }
                    g.add_fence(f.clone(), usage);
                }
            }
            armed
        };
        let armed = if objects.is_empty() {
            arm(&mut [])
        } else {
            Exec::new().lock_all(&objects, arm).map_err(|e| format!("job {j}: locking: {e}"))?
        };
        match armed {
            Ok(a) => {
                let (finished, scheduled) = (a.finished().clone(), a.scheduled().clone());
                let l = self.ledger.clone();
                if let Err(already) =
                    finished.add_callback(move |_: &Fence| l.finished_signalled(j))
                {
                    drop(already);
                    self.ledger.finished_signalled(j);
                }
                let l = self.ledger.clone();
                if let Err(already) =
                    scheduled.add_callback(move |_: &Fence| l.scheduled_signalled(j))
                {
                    drop(already);
                    self.ledger.scheduled_signalled(j);
                }
                {
                    let mut r = lk(&self.board.records);
                    r[j].finished = Some(finished.clone());
                    r[j].scheduled = Some(scheduled);
                    r[j].armed_after_kill = armed_after_kill;
                }
                lk(&self.board.published)[j] = Published::Armed(finished);
                self.board.cv.notify_all();
                if plan.drop_unpushed {
                    drop(a);
                } else {
                    a.push();
                }
            }
            Err(e) => {
                {
                    let mut r = lk(&self.board.records);
                    r[j].arm_error = Some(match &e.error {
                        ArmFailure::Sched(s) => ArmFailure::Sched(s.clone()),
                        ArmFailure::Backend(b) => ArmFailure::Backend(b.to_string()),
                    });
                    r[j].armed_after_kill = armed_after_kill;
                }
                drop(e);
                lk(&self.board.published)[j] = Published::NotArmed;
                self.board.cv.notify_all();
            }
        }
        Ok(())
    }
}

/// The error of a signalled fence, `None` for success.
pub(crate) fn outcome(f: &Fence) -> Option<Result<(), FenceError>> {
    f.is_signaled().then(|| f.error().map_or(Ok(()), Err))
}
