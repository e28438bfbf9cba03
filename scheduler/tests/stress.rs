//! Seeded randomized stress test of the scheduler: many entities at mixed priorities on three
//! schedulers (two timed rings, one manual ring driven by a thread), random dependencies across
//! entities and schedulers, random credits, hardware failures, kills and dropped armed jobs.
//!
//! Checks: every finished fence signals exactly once; each job ends with an error it may end
//! with (its own hardware failure, `Killed` for killed entities only, `Cancelled` for dropped
//! jobs, or a dependency's error); a job whose dependency never ran never runs; a job that
//! ran did so after its dependencies (completed, or scheduled on the same ring); each entity's
//! finished fences signal in seqno order; no credit limit is exceeded; nothing hangs.
//!
//! The seed is printed; `SCHED_STRESS_SEED=<n>` replays it.

mod common;

// Allocation inside a signalling section is a checker violation (the contract forbids it).
#[global_allocator]
static ALLOC: gpusched::fence::lockdep::CheckingAllocator =
    gpusched::fence::lockdep::CheckingAllocator::new(std::alloc::System);

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{assert_no_checker_violations, wait};
use gpusched::fence::{Fence, FenceError};
use gpusched::testing::{MockBehavior, MockJob, MockRing};
use gpusched::{Entity, Policy, Priority, SchedError, Scheduler, SchedulerConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const THREADS: usize = 3;
const ENTITIES_PER_THREAD: usize = 6;
const JOBS_PER_ENTITY: usize = 80;

struct Rec {
    tag: u64,
    entity: usize,
    seqno: u64,
    finished: Fence,
    scheduled: Fence,
    dropped: bool,
    hw_error: Option<FenceError>,
    deps: Vec<u64>,
    fires: Arc<AtomicU32>,
}

fn seed() -> u64 {
    match std::env::var("SCHED_STRESS_SEED") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("SCHED_STRESS_SEED={s}: not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

const ROUNDS: u64 = 6;

#[test]
fn scheduler_stress() {
    let seed = seed();
    eprintln!("scheduler_stress: SCHED_STRESS_SEED={seed}");
    for round in 0..ROUNDS {
        stress_round(seed, seed.wrapping_add(round.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    }
    assert_no_checker_violations();
}

fn stress_round(seed: u64, round_seed: u64) {
    let mut rng = StdRng::seed_from_u64(round_seed);

    let policies = [Policy::Fifo, Policy::RoundRobin, Policy::Fair];
    let rings = [MockRing::timed(), MockRing::timed(), MockRing::manual()];
    let scheds: Vec<Scheduler<MockRing>> = rings
        .into_iter()
        .enumerate()
        .map(|(i, ring)| {
            let config = SchedulerConfig::new(format!("s{i}"))
                .credit_limit(rng.gen_range(3..=12))
                .policy(policies[rng.gen_range(0..3)]);
            Scheduler::new(ring, config).unwrap()
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let (s, stop) = (scheds[2].clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                s.backend().complete_all();
                std::thread::sleep(Duration::from_micros(50));
            }
        })
    };

    let pool: Arc<Mutex<Vec<(u64, Fence)>>> = Arc::new(Mutex::new(Vec::new()));
    let next_tag = Arc::new(AtomicU64::new(1));
    let killed: Arc<Vec<AtomicBool>> =
        Arc::new((0..THREADS * ENTITIES_PER_THREAD).map(|_| AtomicBool::new(false)).collect());

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let mut rng = StdRng::seed_from_u64(round_seed.wrapping_add(t as u64 + 1));
            let scheds = scheds.clone();
            let (pool, next_tag, killed) = (pool.clone(), next_tag.clone(), killed.clone());
            std::thread::spawn(move || {
                let mut entities = Vec::new();
                for i in 0..ENTITIES_PER_THREAD {
                    let mut list: Vec<&Scheduler<MockRing>> =
                        scheds.iter().filter(|_| rng.gen_bool(0.5)).collect();
                    if list.is_empty() {
                        list.push(&scheds[rng.gen_range(0..scheds.len())]);
                    }
                    let min_limit = list.iter().map(|s| s.config().credit_limit).min().unwrap();
                    let prio = Priority::ALL[rng.gen_range(0..4)];
                    let kill_at = rng.gen_bool(0.25).then(|| rng.gen_range(0..JOBS_PER_ENTITY));
                    let e = Entity::new(&list, prio).unwrap();
                    entities.push((t * ENTITIES_PER_THREAD + i, e, min_limit, kill_at, false));
                }
                let mut recs = Vec::new();
                for n in 0..JOBS_PER_ENTITY {
                    for (id, e, min_limit, kill_at, dead) in entities.iter_mut() {
                        if *dead {
                            continue;
                        }
                        if *kill_at == Some(n) {
                            killed[*id].store(true, Ordering::Release);
                            e.kill();
                        }
                        let tag = next_tag.fetch_add(1, Ordering::Relaxed);
                        let hw_error =
                            rng.gen_bool(0.03).then_some(FenceError::Driver(-(tag as i32)));
                        let behavior = hw_error.map_or(MockBehavior::Complete, MockBehavior::Fail);
                        let d = Duration::from_micros(rng.gen_range(0..150));
                        let mut b = e
                            .job(MockJob::new(tag).behavior(behavior).duration(d))
                            .credits(rng.gen_range(1..=*min_limit));
                        let mut deps = Vec::new();
                        if rng.gen_bool(0.3) {
                            let p = pool.lock().unwrap();
                            for _ in 0..rng.gen_range(1..=2) {
                                if p.is_empty() {
                                    break;
                                }
                                let lo = p.len().saturating_sub(64);
                                let (dtag, f) = &p[rng.gen_range(lo..p.len())];
                                deps.push(*dtag);
                                b = b.dependency(f.clone());
                            }
                        }
                        let armed = match b.arm() {
                            Ok(a) => a,
                            Err(err) => {
                                assert_eq!(
                                    err.error,
                                    SchedError::EntityStopped(FenceError::Killed)
                                );
                                assert!(killed[*id].load(Ordering::Acquire));
                                assert_eq!(err.payload.tag, tag);
                                *dead = true;
                                continue;
                            }
                        };
                        let fires = Arc::new(AtomicU32::new(0));
                        let fi = fires.clone();
                        let cb = move |_: &Fence| {
                            fi.fetch_add(1, Ordering::AcqRel);
                        };
                        if let Err(already) = armed.finished().add_callback(cb) {
                            (already.into_inner())(armed.finished());
                        }
                        let finished = armed.finished().clone();
                        let scheduled = armed.scheduled().clone();
                        let seqno = finished.seqno();
                        let dropped = rng.gen_bool(0.04);
                        if dropped {
                            drop(armed);
                        } else {
                            armed.push();
                        }
                        pool.lock().unwrap().push((tag, finished.clone()));
                        recs.push(Rec {
                            tag,
                            entity: *id,
                            seqno,
                            finished,
                            scheduled,
                            dropped,
                            hw_error,
                            deps,
                            fires,
                        });
                    }
                }
                recs
            })
        })
        .collect();
    let mut recs: Vec<Rec> = Vec::new();
    for w in workers {
        recs.extend(w.join().unwrap());
    }
    for r in &recs {
        let _ = wait(&r.finished);
        let _ = wait(&r.scheduled);
    }
    // A fence reads as signalled before its callbacks have run (on the signalling thread).
    common::wait_until("every callback", || {
        recs.iter().all(|r| r.fires.load(Ordering::Acquire) >= 1)
    });
    stop.store(true, Ordering::Release);
    driver.join().unwrap();
    check(&recs, &scheds, &killed, seed);
}

fn check(recs: &[Rec], scheds: &[Scheduler<MockRing>], killed: &[AtomicBool], seed: u64) {
    let ctx = format!("(SCHED_STRESS_SEED={seed})");
    // Which ring ran each tag, and at which position.
    let mut ran: HashMap<u64, (usize, usize)> = HashMap::new();
    for (i, s) in scheds.iter().enumerate() {
        for (pos, tag) in s.backend().run_tags().into_iter().enumerate() {
            assert!(ran.insert(tag, (i, pos)).is_none(), "job {tag} ran twice {ctx}");
        }
        let max = s.backend().max_credits_in_flight();
        assert!(max <= s.config().credit_limit, "{}: {max} credits in flight {ctx}", s.name());
        let st = s.stats();
        assert_eq!((st.credits_in_flight, st.queued), (0, 0), "{} not drained {ctx}", s.name());
    }
    let by_tag: HashMap<u64, &Rec> = recs.iter().map(|r| (r.tag, r)).collect();
    let (mut n_ran, mut n_killed, mut n_dropped, mut n_dep, mut n_hw) = (0, 0, 0, 0, 0);
    for r in recs {
        let tag = r.tag;
        assert_eq!(r.fires.load(Ordering::Acquire), 1, "job {tag}: callbacks {ctx}");
        let err = r.finished.error();
        let was_killed = killed[r.entity].load(Ordering::Acquire);
        // The scheduler ignores the job's own entity's fences and keeps the latest fence per
        // entity (`drm_sched_job_add_dependency`): an earlier one's error is not seen.
        let mut foreign_deps: Vec<&Rec> = Vec::new();
        for d in r.deps.iter().map(|d| by_tag[d]).filter(|d| d.entity != r.entity) {
            match foreign_deps.iter_mut().find(|k| k.entity == d.entity) {
                Some(k) if d.seqno > k.seqno => *k = d,
                Some(_) => {}
                None => foreign_deps.push(d),
            }
        }
        if let Some(&(ring, pos)) = ran.get(&tag) {
            n_ran += 1;
            assert!(!r.dropped, "dropped job {tag} ran {ctx}");
            assert_eq!(err, r.hw_error, "job {tag} ran: its hardware result {ctx}");
            n_hw += usize::from(err.is_some());
            assert_eq!(r.scheduled.error(), None, "job {tag} scheduled fence {ctx}");
            for d in &foreign_deps {
                match ran.get(&d.tag) {
                    None => panic!(
                        "job {tag} (ring {ring}) ran though its dependency {} (entity {}, \
                         dropped {}, {:?}) never did {ctx}",
                        d.tag,
                        d.entity,
                        d.dropped,
                        d.finished.error()
                    ),
                    Some(&(dring, dpos)) if dring == ring => {
                        assert!(dpos < pos, "job {tag} ran before dependency {} {ctx}", d.tag)
                    }
                    Some(_) => {
                        let done = d.finished.timestamp().unwrap();
                        let start = r.scheduled.timestamp().unwrap();
                        assert!(done <= start, "job {tag} ran before {} finished {ctx}", d.tag);
                    }
                }
            }
            continue;
        }
        let Some(e) = err else { panic!("job {tag} never ran but succeeded {ctx}") };
        assert_eq!(r.scheduled.error(), Some(e), "job {tag}: scheduled fence error {ctx}");
        let dep_errors: Vec<FenceError> = r
            .deps
            .iter()
            .map(|d| by_tag[d])
            .filter(|d| d.entity != r.entity)
            .filter_map(|d| d.finished.error())
            .collect();
        match e {
            FenceError::Cancelled if r.dropped => n_dropped += 1,
            FenceError::Killed if was_killed && !r.dropped => n_killed += 1,
            e if dep_errors.contains(&e) && !r.dropped => n_dep += 1,
            e => panic!(
                "job {tag} ended with {e:?}: dropped {}, killed {was_killed}, dependency \
                 errors {dep_errors:?} {ctx}",
                r.dropped
            ),
        }
    }
    // Per-entity finished order on the entity's timeline. The signal timestamps (stored
    // before a fence reads as signalled) order the signals; callback order does not: two
    // fences' callbacks may run concurrently on two threads once both flags are set.
    let mut per_entity: HashMap<usize, Vec<&Rec>> = HashMap::new();
    for r in recs {
        per_entity.entry(r.entity).or_default().push(r);
    }
    for (ent, mut v) in per_entity {
        v.sort_by_key(|r| r.seqno);
        for w in v.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert!(
                a.finished.timestamp().unwrap() <= b.finished.timestamp().unwrap(),
                "entity {ent}: seqno {} (job {}, {:?}) signalled after seqno {} (job {}, {:?}) {ctx}",
                a.seqno,
                a.tag,
                a.finished.error(),
                b.seqno,
                b.tag,
                b.finished.error()
            );
        }
    }
    let total_run: u64 = scheds.iter().map(|s| s.stats().jobs_run).sum();
    assert_eq!(total_run, n_ran as u64, "{ctx}");
    eprintln!(
        "scheduler_stress: {} jobs: {n_ran} ran ({n_hw} hw errors), {n_killed} killed, \
         {n_dropped} dropped, {n_dep} failed by dependency",
        recs.len()
    );
}
