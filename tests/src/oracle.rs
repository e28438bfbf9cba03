//! The oracle: from the scenario and what was observed (each fence's outcome, the ledger,
//! which entities ended stopped, whether the device was lost), decides whether every job
//! ended the way the scheduler's contract says it must.
//!
//! # The rules (what `gpusched` promises, read from `scheduler/src`)
//! - **Propagation.** A job waits for its *effective* dependencies: per other entity, the
//!   latest of that entity's fences it was given (`drm_sched_job_add_dependency` keeps the
//!   later fence per context; fences of the job's own entity are dropped, since its FIFO
//!   orders them: as in the kernel, an entity's failed job does not fail its later jobs). A
//!   failed effective dependency fails the job with that dependency's error; with several
//!   failed, whichever was seen first (racy, so any of them is accepted).
//! - **Justified errors.** A job may end with: `Cancelled` if it was dropped unpushed (then nothing
//!   else) or its entity was banned; its entity's stop error (`Killed`, or `Cancelled` once
//!   banned); `TimedOut` only if the world reset it as guilty; `DeviceLost` only if the device was
//!   lost; the world's [`SUBMIT_ERROR`](crate::World::SUBMIT_ERROR) only if its own submission
//!   failed; or an effective dependency's error. Anything else (an innocent job `TimedOut`,
//!   `Abandoned`, a `Killed` job of a live entity) is a violation.
//! - **Innocent jobs succeed.** A job without a fault, pushed, of an entity never killed or
//!   banned, on a device never lost, whose effective dependencies all succeeded, must succeed:
//!   resets of other jobs resubmit it.
//! - **Computed results.** A job that succeeded must have computed
//!   [`job_value`]`(idx, inputs)` from its inputs' values: an input that succeeded must have
//!   been read with its value (so the job executed after it: ordering), an input that failed
//!   may have been read as absent or, if the hardware got to it before its reset, with its
//!   value (both are accepted; it can only be a same-entity or superseded dependency, since an
//!   effective one would have failed the job).
//! - **Racy by nature, so accepted:** a killed entity's job that was already on the hardware
//!   finishes normally (`Ok`) or, if still queued, `Killed` (`drm_sched_entity_kill` leaves
//!   jobs on the hardware alone); a slow job may complete before the timeout handler gets to
//!   it on a loaded machine (`Ok` or `TimedOut`); after a device loss, any unfinished job
//!   ends `DeviceLost` while others finished first.
//! - **Bans.** An entity blamed for more than `hang_limit` hangs is banned (stopped with
//!   `Cancelled`, unless it was killed first); an entity stopped with `Cancelled` was blamed
//!   that often.
//! - **Worlds that cannot count backend calls**
//!   ([`World::COUNTS_BACKEND_CALLS`](crate::World::COUNTS_BACKEND_CALLS) false: Vulkan, whose
//!   `VulkanRing` is not ours to instrument) count `prepared` and `freed` only. Then: `TimedOut` is
//!   justified for a job with a stuck fault (hang or slow), not by a `guilty` count; an entity's
//!   blame count is its stuck jobs that ended `TimedOut` and either reached the hardware (a
//!   computed value: a blamed job runs on, late) or had no dependency that timed out; a failed
//!   submission is justified by the fault alone (no `runs` count); `cancelled` is not checked;
//!   `freed` is checked after teardown (the backend retires payloads lazily), by the executor.
//! - **Worlds that recover from device loss**
//!   ([`World::RECOVERS_FROM_LOSS`](crate::World::RECOVERS_FROM_LOSS): Vulkan makes a new
//!   generation): an arm refused by `prepare_job` (`ArmFailure::Backend`) is justified once the
//!   device was lost (the replacement not ready yet, or a payload made for the lost generation); a
//!   job marked `unchecked` in the ledger (its memory was lost) is not value-checked.
//! - **Worlds that do not rerun jobs after a reset**
//!   ([`World::RERUNS_AFTER_RESET`](crate::World::RERUNS_AFTER_RESET) false: a backend that cannot
//!   take a submission off a queue and leaves its dependants be; Vulkan fails them,
//!   `Recovery::fail_dependants`): a job already on the hardware behind a stuck dependency that is
//!   then blamed (`TimedOut`) runs to completion after it, on its (late) results, and succeeds.
//!   This breaks propagation, so it is a known backend limitation, not a rule: the oracle tolerates
//!   it only for blamed stuck dependencies and counts it
//!   ([`Summary::ran_past_failed_dependency`](crate::Summary)); the computed value is still
//!   checked.
//! - **Worlds whose timelines are known to invert**
//!   ([`World::TIMELINE_IN_ORDER`](crate::World::TIMELINE_IN_ORDER) false: a world with a known
//!   backend bug; none now): an entity's finished fences signalling out of seqno order are counted
//!   ([`Summary::timeline_inversions`](crate::Summary)), not reported.
//! - **Worlds whose driver fails submissions unattributed**
//!   ([`World::SUBMIT_FAULTS_ATTRIBUTED`](crate::World::SUBMIT_FAULTS_ATTRIBUTED) false: the
//!   Vulkan layer world, where a [`Fault::FailSubmit`] job arms the fault layer to fail the next
//!   `vkQueueSubmit`, whichever job (or batch) it carries): any job may end with the world's
//!   `SUBMIT_ERROR`, counted ([`Summary::driver_submit_failures`](crate::Summary)), and a
//!   `FailSubmit` job may succeed. Its dependants still end with its error (propagation), and
//!   every success is still value-checked.
//! - **Exactly once, no leaks.** Each handed-out fence signalled once (counted by callbacks);
//!   each armed job was prepared once and freed once, cancelled at most once and only if it
//!   never ran; each refused arm never reached the backend; each entity's finished fences
//!   signalled in seqno order (its timeline).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use gpusched::fence::FenceError;
use gpusched::{ArmFailure, SchedError};

use crate::exec::{outcome, Record, Summary};
use crate::ledger::{job_value, Ledger};
use crate::plan::{Fault, Scenario};

/// The world's properties the rules depend on (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Traits {
    pub(crate) counts_backend_calls: bool,
    pub(crate) recovers_from_loss: bool,
    pub(crate) submit_error: FenceError,
    pub(crate) reruns_after_reset: bool,
    pub(crate) timeline_in_order: bool,
    pub(crate) submit_faults_attributed: bool,
}

/// What the executor observed.
pub(crate) struct Observed<'a> {
    pub(crate) records: &'a [Record],
    pub(crate) ledger: &'a Ledger,
    /// Each entity's final stop error.
    pub(crate) stopped: Vec<Option<FenceError>>,
    pub(crate) device_lost: bool,
    pub(crate) traits: Traits,
}

/// Most ambiguous inputs whose combinations are enumerated for the value check.
const MAX_AMBIGUOUS: usize = 10;

/// Checks every rule of the module docs; pushes one line per violation.
pub(crate) fn check(scn: &Scenario, obs: &Observed<'_>, problems: &mut Vec<String>) -> Summary {
    let n = scn.jobs.len();
    let status: Vec<Option<Result<(), FenceError>>> =
        obs.records.iter().map(|r| r.finished.as_ref().and_then(outcome)).collect();
    let seqno: Vec<Option<u64>> =
        obs.records.iter().map(|r| r.finished.as_ref().map(|f| f.seqno())).collect();
    let mut summary = Summary { jobs: n, device_lost: obs.device_lost, ..Summary::default() };
    let mut guilty_per_entity = vec![0u32; scn.entities.len()];
    let tr = obs.traits;

    for j in 0..n {
        let plan = &scn.jobs[j];
        let e = plan.entity;
        let l = obs.ledger.job(j);
        let rec = &obs.records[j];
        let stop = obs.stopped[e];
        let prepared = l.prepared.load(Ordering::Acquire);
        let runs = l.runs.load(Ordering::Acquire);
        let freed = l.freed.load(Ordering::Acquire);
        let cancelled = l.cancelled.load(Ordering::Acquire);
        let counted_guilty = l.guilty.load(Ordering::Acquire);
        let mut bad = |msg: String| problems.push(format!("job {j}: {msg}"));

        let Some(st) = status[j] else {
            // Not armed.
            summary.arm_refused += 1;
            match &rec.arm_error {
                Some(ArmFailure::Sched(SchedError::EntityStopped(x))) if Some(*x) == stop => {}
                Some(ArmFailure::Sched(SchedError::SchedulerGone {
                    error: FenceError::DeviceLost,
                    ..
                })) if obs.device_lost => {}
                Some(ArmFailure::Backend(_)) if obs.device_lost && tr.recovers_from_loss => {}
                Some(other) => bad(format!(
                    "arm refused with `{other}`, unjustified (entity stop {stop:?}, device lost \
                     {})",
                    obs.device_lost
                )),
                None if rec.finished.is_some() => bad("finished fence unsignalled".into()),
                None => bad("neither armed nor refused".into()),
            }
            let reached = if tr.counts_backend_calls {
                prepared + runs + freed + cancelled
            } else {
                prepared
            };
            if reached != 0 {
                bad(format!(
                    "refused arm reached the backend (prepared {prepared}, runs {runs}, freed \
                     {freed}, cancelled {cancelled})"
                ));
            }
            continue;
        };
        summary.armed += 1;
        if rec.armed_after_kill {
            bad("armed after its entity was killed".into());
        }

        // Effective dependencies: per other entity, the latest armed input.
        let inputs = l.inputs.get().map_or(&[][..], |b| &b[..]);
        let mut effective: HashMap<usize, usize> = HashMap::new();
        for &d in inputs {
            let de = scn.jobs[d].entity;
            if de == e || seqno[d].is_none() {
                continue;
            }
            let later = effective.get(&de).is_none_or(|&k| seqno[d] > seqno[k]);
            if later {
                effective.insert(de, d);
            }
        }
        let failed_deps: Vec<(usize, FenceError)> = effective
            .values()
            .filter_map(|&d| match status[d] {
                Some(Err(x)) => Some((d, x)),
                _ => None,
            })
            .collect();

        let guilty = if tr.counts_backend_calls {
            counted_guilty
        } else {
            // Blamed: a stuck job that timed out, not by a dependency's timeout. In a world
            // that does not rerun jobs after a reset, a job that computed a value reached the
            // hardware and was blamed there (blamed jobs run on, late). In one that does
            // (Vulkan fails such dependants without rerunning them, but their command buffers
            // still run and compute), a job ended by a timed-out dependency was not blamed.
            u32::from(
                plan.fault.is_stuck()
                    && st == Err(FenceError::TimedOut)
                    && ((!tr.reruns_after_reset && l.result.load(Ordering::Acquire) != 0)
                        || !failed_deps.iter().any(|&(_, y)| y == FenceError::TimedOut)),
            )
        };
        guilty_per_entity[e] += guilty;
        summary.resets += guilty as usize;

        match st {
            Err(x) => {
                summary.failed += 1;
                let justified = if plan.drop_unpushed {
                    x == FenceError::Cancelled
                } else {
                    (x == FenceError::Cancelled && stop == Some(FenceError::Cancelled))
                        || Some(x) == stop
                        || (x == FenceError::TimedOut
                            && (guilty > 0 || (!tr.counts_backend_calls && plan.fault.is_stuck())))
                        || (x == FenceError::DeviceLost && obs.device_lost)
                        || (x == tr.submit_error
                            && plan.fault == Fault::FailSubmit
                            && (runs > 0 || !tr.counts_backend_calls))
                        || (x == tr.submit_error && !tr.submit_faults_attributed)
                        || failed_deps.iter().any(|&(_, y)| y == x)
                };
                if !justified {
                    bad(format!(
                        "ended `{x}` unjustified (fault {:?}, dropped {}, entity stop {stop:?}, \
                         guilty {guilty}, runs {runs}, device lost {}, failed deps {failed_deps:?})",
                        plan.fault, plan.drop_unpushed, obs.device_lost
                    ));
                }
            }
            Ok(()) => {
                summary.ok += 1;
                if plan.drop_unpushed {
                    bad("dropped unpushed, yet succeeded".into());
                }
                let ran_past = !tr.reruns_after_reset
                    && !failed_deps.is_empty()
                    && failed_deps
                        .iter()
                        .all(|&(d, y)| y == FenceError::TimedOut && scn.jobs[d].fault.is_stuck());
                if ran_past {
                    summary.ran_past_failed_dependency += 1;
                } else if !failed_deps.is_empty() {
                    bad(format!("succeeded although its dependencies failed: {failed_deps:?}"));
                }
                if plan.fault == Fault::Hang
                    || (plan.fault == Fault::FailSubmit && tr.submit_faults_attributed)
                {
                    bad(format!("succeeded with fault {:?}", plan.fault));
                }
                if guilty > 0 {
                    bad("succeeded although it was reset as guilty".into());
                }
                if !(tr.recovers_from_loss && l.unchecked.load(Ordering::Acquire)) {
                    check_value(j, inputs, &status, obs.ledger, &mut bad);
                }
            }
        }
        let innocent = plan.fault == Fault::None
            && !plan.drop_unpushed
            && stop.is_none()
            && !obs.device_lost
            && effective.values().all(|&d| status[d] == Some(Ok(())));
        // A driver that fails submissions unattributed may fail any job's (and so every job
        // sharing its `vkQueueSubmit` call).
        let driver_failed = !tr.submit_faults_attributed && st == Err(tr.submit_error);
        if driver_failed {
            summary.driver_submit_failures += 1;
        }
        if innocent && st.is_err() && !driver_failed {
            bad(format!("innocent job failed with {st:?}"));
        }
        // Exactly once; no leak.
        let fin = l.finished_signals.load(Ordering::Acquire);
        let sch = l.scheduled_signals.load(Ordering::Acquire);
        if fin != 1 || sch != 1 {
            bad(format!("finished fence signalled {fin} times, scheduled fence {sch} times"));
        }
        if prepared != 1 || (tr.counts_backend_calls && freed != 1) {
            bad(format!("prepared {prepared} times, freed {freed} times (leak or double free)"));
        }
        if tr.counts_backend_calls && (cancelled > 1 || (cancelled == 1 && runs > 0)) {
            bad(format!("cancelled {cancelled} times after {runs} runs"));
        }
    }

    // Bans.
    for (e, plan) in scn.entities.iter().enumerate() {
        let blamed = guilty_per_entity[e];
        let stop = obs.stopped[e];
        match stop {
            Some(FenceError::Cancelled) => summary.banned += 1,
            Some(FenceError::Killed) => summary.killed += 1,
            _ => {}
        }
        if blamed > scn.hang_limit && stop.is_none() {
            problems.push(format!(
                "entity {e}: blamed {blamed} times (hang limit {}) but not banned",
                scn.hang_limit
            ));
        }
        if stop == Some(FenceError::Cancelled) && blamed <= scn.hang_limit {
            problems
                .push(format!("entity {e}: banned after {blamed} hangs (rogue {})", plan.rogue));
        }
    }
    // Timelines: each entity's finished fences signalled in seqno order. (By their signal
    // timestamps, taken before the fence is marked signalled: the order callbacks run in on
    // different threads is not the signal order.)
    for e in 0..scn.entities.len() {
        let mut jobs: Vec<(u64, std::time::Instant, usize)> = (0..n)
            .filter(|&j| scn.jobs[j].entity == e)
            .filter_map(|j| {
                let f = obs.records[j].finished.as_ref()?;
                Some((f.seqno(), f.timestamp()?, j))
            })
            .collect();
        jobs.sort_unstable();
        for w in jobs.windows(2) {
            if w[0].1 > w[1].1 && !tr.timeline_in_order {
                summary.timeline_inversions += 1;
            } else if w[0].1 > w[1].1 {
                problems.push(format!(
                    "entity {e}: job {} (seqno {}) finished after job {} (seqno {}): timeline \
                     out of order",
                    w[0].2, w[0].0, w[1].2, w[1].0
                ));
            }
        }
    }
    summary
}

/// Checks a successful job's computed value against every admissible reading of its inputs.
fn check_value(
    j: usize,
    inputs: &[usize],
    status: &[Option<Result<(), FenceError>>],
    ledger: &Ledger,
    bad: &mut impl FnMut(String),
) {
    let got = ledger.job(j).result.load(Ordering::Acquire);
    // Per input: the values it may have been read with.
    let choices: Vec<Vec<u32>> = inputs
        .iter()
        .map(|&d| {
            let r = ledger.job(d).result.load(Ordering::Acquire);
            match status[d] {
                Some(Ok(())) => vec![r],
                _ if r == 0 => vec![0],
                _ => vec![0, r],
            }
        })
        .collect();
    let ambiguous = choices.iter().filter(|c| c.len() > 1).count();
    if ambiguous > MAX_AMBIGUOUS {
        return;
    }
    let mut pick = vec![0usize; choices.len()];
    loop {
        let v = job_value(j, choices.iter().zip(&pick).map(|(c, &i)| c[i]));
        if v == got {
            return;
        }
        // Next combination.
        let mut k = 0;
        loop {
            if k == pick.len() {
                let expected = job_value(j, choices.iter().map(|c| c[0]));
                bad(format!(
                    "computed {got:#010x}, expected {expected:#010x} from inputs {inputs:?} \
                     (read too early, out of order, or not executed)"
                ));
                return;
            }
            pick[k] += 1;
            if pick[k] < choices[k].len() {
                break;
            }
            pick[k] = 0;
            k += 1;
        }
    }
}

/// One line per job: outcome, arm error, inputs, ledger counters.
pub(crate) fn dump(scn: &Scenario, records: &[Record], ledger: &Ledger) -> String {
    let mut s = String::from("outcomes:\n");
    for (j, r) in records.iter().enumerate() {
        let l = ledger.job(j);
        let _ = writeln!(
            s,
            "  job {j} (entity {}): {} seqno {:?} inputs {:?} prepared {} runs {} cancelled {} \
             freed {} guilty {} result {:#010x} signals {}/{} ticks {:?}",
            scn.jobs[j].entity,
            match (&r.arm_error, r.finished.as_ref().map(outcome)) {
                (Some(e), _) => format!("arm refused `{e}`"),
                (None, Some(Some(Ok(())))) => "ok".to_owned(),
                (None, Some(Some(Err(x)))) => format!("`{x}`"),
                (None, Some(None)) => "PENDING".to_owned(),
                (None, None) => "not submitted".to_owned(),
            },
            r.finished.as_ref().map(|f| f.seqno()),
            l.inputs.get(),
            l.prepared.load(Ordering::Acquire),
            l.runs.load(Ordering::Acquire),
            l.cancelled.load(Ordering::Acquire),
            l.freed.load(Ordering::Acquire),
            l.guilty.load(Ordering::Acquire),
            l.result.load(Ordering::Acquire),
            l.scheduled_signals.load(Ordering::Acquire),
            l.finished_signals.load(Ordering::Acquire),
            l.run_ticks.iter().map(|t| t.load(Ordering::Acquire)).collect::<Vec<_>>(),
        );
    }
    s
}
