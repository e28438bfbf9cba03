//! The run: a device, two rings, the clients (one thread each), the rogue client, the fault
//! schedule, host verification, and the summary.
//!
//! # A client's round
//! Each client has two entities at its priority: a *producer* and a *consumer*. Round `r`
//! (value `v`, a small integer so every sum is exact in `f32`) is the chain
//! 1. producer: `x = v`;  2. producer: `y = 1`;
//! 3. consumer: `y += 2 x` (reads `x`, writes `y`: depends on 1 and 2 through the buffers'
//!    reservations, across entities, so a failure of 1 or 2 fails it too);
//! 4. consumer: `y += s`, `s` the buffer shared by every client (filled with `S` once per
//!    device generation by a kernel-priority set-up entity, read by every client's step 4).
//!
//! The client waits for its chain and reads `y` back: it must be `2 v + 1 + S` everywhere.
//! A round in which any job failed is skipped, not verified: a job's own entity's earlier
//! jobs are ordered (FIFO) but their errors are not propagated to it (as in drm_sched), and a
//! failed job's outputs are undefined. Every round starts from fresh fills, and after a failed
//! round the client re-creates its buffers (the failed fences stay in the old buffers'
//! reservations, where the next round's jobs would find them), so a failed round never
//! poisons the next one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gpusched::fence::{lockdep, Fence, FenceContext, FenceError};
use gpusched::{Entity, Priority, Scheduler, SchedulerConfig};
use gpusched_vulkan::{
    Buffer, Builtin, DeviceConfig, SubmitError, VulkanDevice, VulkanJob, VulkanRing,
};

use crate::cli::DemoArgs;
use crate::faults::{self, Schedule};
use crate::progress::Progress;
use crate::summary::Summary;
use crate::trace::{JobMeta, Kind, Outcome, Recorder};

/// The shared buffer's value.
const SHARED_VALUE: f32 = 100.0;
/// Deadlock watchdog for every wait (never a speed assertion).
const WATCHDOG: Duration = Duration::from_secs(60);
/// Jobs per client round.
const CHAIN: usize = 4;
/// The most jobs the rogue client submits while waiting to be banned.
const ROGUE_MAX: u32 = 8;
/// Room in the job table for the set-up jobs (one per device generation) and retries.
const SPARE_SLOTS: usize = 64;

fn push_consts(words: &[[u8; 4]]) -> Vec<u8> {
    words.concat()
}

/// `buf[i] = value` for `n` floats.
fn fill(buf: &Buffer, value: f32, n: u32) -> VulkanJob {
    let b = buf.clone();
    VulkanJob::new(move |ctx, cb| {
        let k = ctx.builtin(Builtin::Fill);
        let pc = push_consts(&[value.to_ne_bytes(), n.to_ne_bytes()]);
        ctx.dispatch(cb, &k, &[&b], &pc, [n.div_ceil(64), 1, 1])
    })
    .writes(buf)
}

/// `y = a * x + y` over `n` floats.
fn saxpy(a: f32, x: &Buffer, y: &Buffer, n: u32) -> VulkanJob {
    let (xb, yb) = (x.clone(), y.clone());
    VulkanJob::new(move |ctx, cb| {
        let k = ctx.builtin(Builtin::Saxpy);
        let pc = push_consts(&[a.to_ne_bytes(), n.to_ne_bytes()]);
        ctx.dispatch(cb, &k, &[&xb, &yb], &pc, [n.div_ceil(64), 1, 1])
    })
    .reads(x)
    .writes(y)
}

/// What everything running shares.
struct Run<'a> {
    args: &'a DemoArgs,
    dev: VulkanDevice,
    rings: Vec<Scheduler<VulkanRing>>,
    ring_names: Vec<String>,
    rec: Arc<Recorder>,
    schedule: Option<Schedule>,
    /// The shared buffer of the current generation, its set-up job's slot and fence.
    shared: Mutex<Option<(Buffer, usize, Fence)>>,
    /// Fills the shared buffer (kernel priority).
    setup: Entity<VulkanRing>,
    /// The highest device generation a client has seen (a marker when it grows).
    generation_seen: AtomicU64,
    /// Jobs refused before a fence existed, by reason.
    refused: Mutex<BTreeMap<String, u64>>,
}

/// How a round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoundEnd {
    Verified,
    Skipped,
    Wrong,
}

impl Run<'_> {
    fn refuse(&self, why: String) {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()).entry(why).or_default() += 1;
    }

    fn ring_index(&self, name: Option<String>) -> Option<u32> {
        let name = name?;
        self.ring_names.iter().position(|n| *n == name).map(|i| i as u32)
    }

    /// Submits `job` on `entity` ([`VulkanDevice::arm`]: implicit synchronisation through
    /// its buffers, its explicit dependencies), recording it in a new slot of the trace: the
    /// ring it landed on, and callbacks on its scheduled and finished fences, added before
    /// the job is pushed.
    fn submit(
        &self,
        entity: &Entity<VulkanRing>,
        job: VulkanJob,
        meta: JobMeta,
    ) -> Result<(Fence, usize), SubmitError> {
        let armed = VulkanDevice::arm(entity, job)?;
        let Some(slot) = self.rec.open(meta) else {
            // Dropping the armed job cancels it: its fences signal, nothing leaks.
            drop(armed);
            self.refuse("job table full (a sizing bug)".into());
            return Err(SubmitError::Reserve);
        };
        if let Some(ring) = self.ring_index(entity.current_scheduler()) {
            self.rec.set_ring(slot, ring);
        }
        self.rec.watch(slot, armed.scheduled(), armed.finished());
        Ok((armed.push(), slot))
    }

    /// The shared buffer of generation `generation` (made and filled on first use, and made
    /// again if its fill failed: its contents are then undefined, and every job reading it
    /// would fail), the slot of the job that fills it, and that job's fence.
    fn shared(&self, generation: u64) -> Result<(Buffer, usize, Fence), String> {
        let mut g = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((b, slot, f)) = &*g {
            if b.generation() == generation && f.error().is_none() {
                return Ok((b.clone(), *slot, f.clone()));
            }
        }
        let n = self.args.size;
        let s = self.dev.buffer(u64::from(n) * 4).map_err(|e| format!("shared buffer: {e}"))?;
        let meta = JobMeta {
            client: self.args.clients + 1,
            kind: Kind::FillShared,
            round: 0,
            generation: s.generation(),
            deps: [None, None],
        };
        let (f, slot) = self
            .submit(&self.setup, fill(&s, SHARED_VALUE, n), meta)
            .map_err(|e| format!("filling the shared buffer: {e}"))?;
        *g = Some((s.clone(), slot, f.clone()));
        Ok((s, slot, f))
    }

    /// Called when something failed in a way that may be a device loss: if the device was
    /// lost (or already replaced), waits for the generation after `generation` and returns
    /// it; `None` when the device is fine.
    fn recover(&self, generation: u64) -> Result<Option<u64>, String> {
        let now = self.dev.generation();
        let new = if now != generation {
            now
        } else if self.dev.is_lost() {
            faults::wait_generation(&self.dev, generation, faults::RECREATE_TIMEOUT)?
        } else {
            return Ok(None);
        };
        if self.generation_seen.fetch_max(new, Ordering::AcqRel) < new {
            self.rec.marker("new device generation", format!("generation {new}"));
        }
        Ok(Some(new))
    }
}

/// One client: two entities at its priority (see the module doc).
struct Client {
    index: u32,
    name: String,
    priority: Priority,
    producer: Entity<VulkanRing>,
    consumer: Entity<VulkanRing>,
}

/// What a client thread reports.
#[derive(Debug, Default)]
struct ClientReport {
    verified: u64,
    skipped: u64,
    wrong: u64,
    /// Rounds verified after the round in which this client's job hung.
    verified_after_hang: u64,
    problems: Vec<String>,
}

/// Why a submission was refused, for the summary.
fn refusal(e: &SubmitError) -> String {
    match e {
        SubmitError::Sched(s) if s.is_entity_stopped() => "entity banned or killed".into(),
        SubmitError::Sched(s) if s.is_scheduler_gone() => "scheduler gone".into(),
        e if e.is_device_lost() => "device lost".into(),
        SubmitError::Record(_) => "recording failed".into(),
        SubmitError::Lock(_) => "buffer lock interrupted".into(),
        e => e.to_string(),
    }
}

fn client_loop(
    run: &Run<'_>,
    c: &Client,
    bar: &indicatif::ProgressBar,
    total: &indicatif::ProgressBar,
) -> ClientReport {
    let mut report = ClientReport::default();
    let n = run.args.size;
    let mut generation = run.dev.generation();
    let mut bufs: Option<(Buffer, Buffer)> = None;
    for round in 0..run.args.rounds {
        let end = client_round(run, c, round, n, &mut generation, &mut bufs, &mut report);
        match end {
            RoundEnd::Verified => {
                report.verified += 1;
                if run.schedule.is_some_and(|s| s.hang_client == c.index && round > s.hang_round) {
                    report.verified_after_hang += 1;
                }
            }
            RoundEnd::Skipped => report.skipped += 1,
            RoundEnd::Wrong => report.wrong += 1,
        }
        bar.inc(1);
        total.inc(CHAIN as u64);
    }
    bar.finish_with_message(format!(
        "verified {} skipped {} wrong {}",
        report.verified, report.skipped, report.wrong
    ));
    report
}

fn client_round(
    run: &Run<'_>,
    c: &Client,
    round: u32,
    n: u32,
    generation: &mut u64,
    bufs: &mut Option<(Buffer, Buffer)>,
    report: &mut ClientReport,
) -> RoundEnd {
    let value = ((c.index * 5 + round) % 13 + 1) as f32;
    let want = 2.0 * value + 1.0 + SHARED_VALUE;
    // Something failed: recover if the device was lost; otherwise `problem` is a real one.
    let mut trouble = false;
    let mut problem: Option<String> = None;
    let end = 'round: {
        // Buffers of the current device generation (contents are lost with a device).
        if bufs.as_ref().is_none_or(|(x, _)| x.generation() != *generation) {
            let bytes = u64::from(n) * 4;
            match (run.dev.buffer(bytes), run.dev.buffer(bytes)) {
                (Ok(x), Ok(y)) => *bufs = Some((x, y)),
                (Err(e), _) | (_, Err(e)) => {
                    problem = Some(format!("{}: buffer: {e}", c.name));
                    trouble = true;
                    break 'round RoundEnd::Skipped;
                }
            }
        }
        let Some((x, y)) = bufs.clone() else { break 'round RoundEnd::Skipped };
        let (shared, shared_slot, _) = match run.shared(x.generation()) {
            Ok(s) => s,
            Err(e) => {
                problem = Some(e);
                trouble = true;
                break 'round RoundEnd::Skipped;
            }
        };
        let hang = run
            .schedule
            .filter(|s| s.hang_client == c.index && s.hang_round == round)
            .map(|s| s.hang_job);
        let jobs = [
            fill(&x, value, n),
            fill(&y, 1.0, n),
            saxpy(2.0, &x, &y, n),
            saxpy(1.0, &shared, &y, n),
        ];
        let kinds = [Kind::FillX, Kind::FillY, Kind::Saxpy, Kind::AddShared];
        let mut slots: [Option<usize>; CHAIN] = [None; CHAIN];
        let mut fences: Vec<Fence> = Vec::with_capacity(CHAIN);
        let mut complete = true;
        for (k, mut job) in jobs.into_iter().enumerate() {
            let entity = if k < 2 { &c.producer } else { &c.consumer };
            let deps = match k {
                2 => [slots[0], slots[1]],
                3 => [slots[2], Some(shared_slot)],
                _ => [None, None],
            };
            if hang == Some(k) {
                job = faults::hang(job);
                run.rec.marker("hang injected", format!("{} round {round} job {k}", c.name));
            }
            let meta = JobMeta {
                client: c.index,
                kind: kinds[k],
                round,
                generation: x.generation(),
                deps,
            };
            match run.submit(entity, job, meta) {
                Ok((f, slot)) => {
                    slots[k] = Some(slot);
                    fences.push(f);
                }
                Err(e) => {
                    run.refuse(refusal(&e));
                    problem = Some(format!("{} round {round}: {e}", c.name));
                    complete = false;
                    trouble = true;
                    break;
                }
            }
        }
        if run.schedule.is_some_and(|s| c.index == 0 && round == s.loss_round) {
            // Lose the device with this round's chain in flight.
            run.rec.marker("device lost", format!("injected by {} in round {round}", c.name));
            faults::lose_device(&run.dev);
        }
        for f in &fences {
            if let Err(e) = f.wait_timeout(WATCHDOG) {
                complete = false;
                trouble = true;
                if e.is_timeout() {
                    report.problems.push(format!(
                        "{} round {round}: a fence did not signal within {WATCHDOG:?}",
                        c.name
                    ));
                }
            }
        }
        if !complete {
            break 'round RoundEnd::Skipped;
        }
        match y.read_f32(WATCHDOG) {
            Ok(got) => match got.iter().position(|v| *v != want) {
                None => RoundEnd::Verified,
                Some(i) => {
                    report.problems.push(format!(
                        "{} round {round}: y[{i}] = {} but should be {want}",
                        c.name, got[i]
                    ));
                    RoundEnd::Wrong
                }
            },
            Err(_) => {
                trouble = true;
                RoundEnd::Skipped
            }
        }
    };
    if end != RoundEnd::Verified {
        // A failed job's outputs are undefined, and its failed fence stays in the buffers'
        // reservations, where the next round's jobs would find it as a dependency and fail
        // too: start the next round on fresh buffers (as a client does after an error).
        *bufs = None;
    }
    if trouble {
        match run.recover(*generation) {
            Ok(Some(g)) => *generation = g,
            // The device is fine: a refusal or a failed buffer is a real problem (a failed
            // fence is not: the faults make some, and the summary counts them).
            Ok(None) => report.problems.extend(problem),
            Err(e) => report.problems.push(format!("{}: {e}", c.name)),
        }
    }
    end
}

/// The rogue client: submits a job that hangs, then a harmless one gated on a host fence,
/// and waits for the first. One hang at a time: a second hang queued behind the first would
/// stall the (shared) queue again as soon as the TDR releases the first. While the scheduler
/// has not banned it, it opens the gate and goes on; once banned, the gated job, still queued,
/// ends `Cancelled`, and later submissions are refused. Returns problems.
fn rogue_loop(
    run: &Run<'_>,
    entity: &Entity<VulkanRing>,
    bar: &indicatif::ProgressBar,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut generation = run.dev.generation();
    let gates = FenceContext::new("rogue-gate");
    // Start once the shared buffer is ready: a hang submitted ahead of its fill would stall it.
    if let Ok((_, _, f)) = run.shared(generation) {
        let _ = f.wait_timeout(WATCHDOG);
    }
    let mut round = 0;
    while round < ROGUE_MAX && entity.stopped().is_none() {
        let meta = |kind, round| JobMeta {
            client: run.args.clients,
            kind,
            round,
            generation,
            deps: [None, None],
        };
        let hung = run.submit(entity, faults::hang(VulkanJob::empty()), meta(Kind::Rogue, round));
        let (gate, opener) = gates.next();
        let gated = VulkanJob::empty().after(&gate);
        let gated = run.submit(entity, gated, meta(Kind::RogueGated, round));
        round += 1;
        let mut lost = false;
        for r in [&hung, &gated] {
            if let Err(e) = r {
                run.refuse(format!("rogue: {}", refusal(e)));
                lost |= e.is_device_lost();
            }
        }
        if lost {
            // Refused because the device is being recreated: wait for it, and try again.
            round -= 1;
            match run.recover(generation) {
                Ok(Some(g)) => generation = g,
                Ok(None) => {}
                Err(e) => {
                    problems.push(format!("rogue: {e}"));
                    break;
                }
            }
        }
        if let Ok((f, _)) = &hung {
            match f.wait_timeout(WATCHDOG) {
                Err(e) if e.is_timeout() => {
                    problems.push(format!("rogue: a fence did not signal within {WATCHDOG:?}"));
                }
                Err(e) if e.fence_error() == Some(FenceError::DeviceLost) => {
                    if let Ok(Some(g)) = run.recover(generation) {
                        generation = g;
                    }
                }
                _ => {}
            }
        }
        // Banned: the scheduler cancels the gated job; the gate signals afterwards.
        if entity.stopped().is_some() {
            if let Ok((f, _)) = &gated {
                let _ = f.wait_timeout(WATCHDOG);
            }
        }
        opener.signal();
        if let Ok((f, _)) = &gated {
            if f.wait_timeout(WATCHDOG).is_err_and(|e| e.is_timeout()) {
                problems.push(format!("rogue: a gated fence did not signal within {WATCHDOG:?}"));
            }
        }
        bar.inc(1);
    }
    let banned = entity.stopped().is_some();
    if banned {
        // One more try: refused at arm time.
        let job = VulkanJob::empty();
        let meta = JobMeta {
            client: run.args.clients,
            kind: Kind::Rogue,
            round,
            generation,
            deps: [None, None],
        };
        if let Err(e) = run.submit(entity, job, meta) {
            run.refuse(format!("rogue: {}", refusal(&e)));
        } else {
            problems.push("rogue: a banned entity accepted a job".into());
        }
    }
    bar.finish_with_message(if banned { "banned" } else { "NOT banned" });
    problems
}

/// Runs the demo; `Ok(true)` when every check passed.
pub(crate) fn run(args: &DemoArgs) -> Result<bool, String> {
    let mut config = DeviceConfig::default();
    if let Some(sel) = &args.device {
        config = config.selector(sel.clone());
    }
    if let Some(v) = args.validation() {
        config = config.validation(v);
    }
    let dev = VulkanDevice::with_config(config).map_err(|e| format!("no Vulkan device: {e}"))?;
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    let schedule = args.faults().then(|| Schedule::new(seed, args.clients, args.rounds));
    println!(
        "device: {} (validation {}), {} clients x {} rounds x {CHAIN} jobs, {} floats per buffer, \
         TDR timeout {} ms",
        dev.name(),
        if dev.validation() { "on" } else { "off" },
        args.clients,
        args.rounds,
        args.size,
        args.timeout_ms
    );
    match &schedule {
        Some(s) => println!(
            "faults: seed {} (replay with --seed {}): client {} job {} hangs in round {}; a rogue client hangs until banned; device lost during round {}",
            s.seed, s.seed, s.hang_client, s.hang_job, s.hang_round, s.loss_round
        ),
        None => println!("faults: off"),
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let ring_count = if args.rings == 0 { dev.queue_count().min(8) } else { args.rings };
    let ring_names: Vec<String> = (0..ring_count).map(|i| format!("ring{i}")).collect();
    println!("rings: {ring_count} over {} compute queue(s)", dev.queue_count());
    let mut rings = Vec::new();
    for (i, name) in ring_names.iter().enumerate() {
        let queue = i as u32 % dev.queue_count();
        let ring = dev
            .ring(queue, SchedulerConfig::new(name.clone()).timeout(timeout))
            .map_err(|e| format!("{name}: {e}"))?;
        rings.push(ring);
    }
    let ring_refs: Vec<&Scheduler<VulkanRing>> = rings.iter().collect();
    let prios = [Priority::High, Priority::Normal, Priority::Low];
    let mut clients = Vec::new();
    for i in 0..args.clients {
        let priority = prios[i as usize % prios.len()];
        let producer = Entity::new(&ring_refs, priority).map_err(|e| e.to_string())?;
        let consumer = Entity::new(&ring_refs, priority).map_err(|e| e.to_string())?;
        let name = format!("client{i} {}", format!("{priority:?}").to_lowercase());
        clients.push(Client { index: i, name, priority, producer, consumer });
    }
    let rogue = Entity::new(&ring_refs, Priority::Normal).map_err(|e| e.to_string())?;
    let setup = Entity::new(&ring_refs, Priority::Kernel).map_err(|e| e.to_string())?;
    let capacity =
        args.clients as usize * args.rounds as usize * CHAIN + 2 * ROGUE_MAX as usize + SPARE_SLOTS;
    let run = Run {
        args,
        dev: dev.clone(),
        rings,
        ring_names: ring_names.clone(),
        rec: Recorder::new(capacity),
        schedule,
        shared: Mutex::new(None),
        setup,
        generation_seen: AtomicU64::new(dev.generation()),
        refused: Mutex::new(BTreeMap::new()),
    };
    let progress =
        Progress::new(!args.no_progress, u64::from(args.clients * args.rounds) * CHAIN as u64);
    let bars: Vec<indicatif::ProgressBar> =
        clients.iter().map(|c| progress.client(&c.name, u64::from(args.rounds))).collect();
    let hangs_to_ban = u64::from(run.rings[0].config().hang_limit) + 1;
    let rogue_bar = schedule.map(|_| progress.client("rogue", hangs_to_ban));
    let start = Instant::now();
    let (reports, rogue_problems) = std::thread::scope(|scope| {
        let run = &run;
        let total = progress.total();
        let handles: Vec<_> = clients
            .iter()
            .zip(&bars)
            .map(|(c, bar)| scope.spawn(move || client_loop(run, c, bar, total)))
            .collect();
        let rogue_handle = rogue_bar.as_ref().map(|bar| {
            let rogue = &rogue;
            scope.spawn(move || rogue_loop(run, rogue, bar))
        });
        // Markers for the TDR's recoveries, sampled while the clients run.
        let domain = run.rings[0].reset_domain();
        let mut seen = domain.recoveries();
        while !handles.iter().all(|h| h.is_finished())
            || rogue_handle.as_ref().is_some_and(|h| !h.is_finished())
        {
            std::thread::sleep(Duration::from_millis(2));
            let now = domain.recoveries();
            if now > seen {
                run.rec.marker("reset", format!("TDR recovery #{now}"));
                seen = now;
            }
        }
        let reports: Vec<ClientReport> = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| ClientReport {
                    problems: vec!["a client thread panicked".into()],
                    ..ClientReport::default()
                })
            })
            .collect();
        let rogue_problems = rogue_handle
            .map(|h| h.join().unwrap_or_else(|_| vec!["the rogue thread panicked".into()]))
            .unwrap_or_default();
        (reports, rogue_problems)
    });
    let elapsed = start.elapsed();
    // Every fence must signal: wait for the stragglers (set-up jobs) before counting.
    let _ = dev.wait_idle(WATCHDOG);
    let deadline = Instant::now() + WATCHDOG;
    while run.rec.records().iter().any(|r| r.finished == Outcome::Pending)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    progress.finish();

    let mut names: Vec<String> = clients.iter().map(|c| c.name.clone()).collect();
    names.push("rogue".into());
    names.push("setup".into());
    let mut prio_of: Vec<Priority> = clients.iter().map(|c| c.priority).collect();
    prio_of.push(Priority::Normal);
    prio_of.push(Priority::Kernel);

    let mut sum = Summary {
        device: dev.name().to_owned(),
        validation_on: dev.validation(),
        faults: args.faults(),
        seed: schedule.map(|s| s.seed),
        clients: args.clients,
        rounds: args.rounds,
        size: args.size,
        elapsed,
        ..Summary::default()
    };
    let records = run.rec.records();
    sum.count(&records, &prio_of);
    // The scheduler's own counts, to check the records' against.
    for c in &clients {
        sum.count_entity(c.producer.stats());
        sum.count_entity(c.consumer.stats());
    }
    sum.count_entity(rogue.stats());
    sum.count_entity(run.setup.stats());
    sum.refused = run.refused.lock().unwrap_or_else(|p| p.into_inner()).clone();
    sum.rings_run = run.rings.iter().map(|r| r.stats().jobs_run).sum();
    sum.resets = run.rings[0].reset_domain().recoveries();
    sum.generations = faults::generations(&dev);
    for c in &clients {
        if c.producer.stopped().is_some() || c.consumer.stopped().is_some() {
            sum.banned.push(c.name.clone());
        }
    }
    if rogue.stopped().is_some() {
        sum.banned.push("rogue".into());
    }
    for (c, r) in clients.iter().zip(&reports) {
        sum.per_client.push((c.name.clone(), r.verified, r.skipped, r.wrong));
        sum.rounds_verified += r.verified;
        sum.rounds_skipped += r.skipped;
        sum.verify_failures += r.wrong;
        sum.problems.extend(r.problems.iter().cloned());
    }
    sum.problems.extend(rogue_problems);
    if let Some(s) = schedule {
        sum.hang_client_verified_after = reports[s.hang_client as usize].verified_after_hang;
    }
    sum.validation_errors = gpusched_vulkan::validation_errors();
    sum.checker_violations = lockdep::violations();

    // The checks.
    let mut failed: Vec<String> = Vec::new();
    if !sum.totals_add_up() {
        failed.push(
            "the fences observed (ok + errors) do not match the fences the scheduler published"
                .into(),
        );
    }
    if sum.verify_failures > 0 {
        failed.push(format!("{} rounds computed wrong results", sum.verify_failures));
    }
    if sum.validation_errors > 0 {
        failed.push(format!("{} validation errors", sum.validation_errors));
    }
    if sum.checker_violations > 0 {
        failed.push(format!("{} checker violations", sum.checker_violations));
        for r in lockdep::reports() {
            eprintln!("{r}");
        }
    }
    if !sum.problems.is_empty() {
        failed.push(format!("{} problems", sum.problems.len()));
    }
    match schedule {
        None => {
            if sum.error_total() > 0 || sum.rounds_verified != u64::from(args.clients * args.rounds)
            {
                failed.push("without faults every job and every round must succeed".into());
            }
        }
        Some(_) => {
            if sum.timeouts == 0 {
                failed.push("the injected hangs caused no timeout".into());
            }
            if !sum.banned.iter().any(|b| b == "rogue") {
                failed.push("the rogue client was not banned".into());
            }
            if sum.banned.len() != 1 {
                failed.push(format!("banned clients: {:?}, expected only the rogue", sum.banned));
            }
            if sum.generations != 2 {
                failed.push(format!("{} device generations, expected 2", sum.generations));
            }
            if sum.hang_client_verified_after == 0 {
                failed.push("the client whose job hung verified no later round".into());
            }
        }
    }
    sum.problems.extend(failed.iter().map(|f| format!("check failed: {f}")));
    sum.print();

    if let Some(path) = &args.summary_json {
        let text = serde_json::to_string_pretty(&sum.to_json()).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.trace {
        let doc = run.rec.chrome_trace(dev.name(), &ring_names, &names);
        let text = serde_json::to_string(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("trace: {} (open in https://ui.perfetto.dev)", path.display());
    }

    // Teardown: everything that holds the device, then the device, synchronously.
    drop(clients);
    drop(rogue);
    drop(run);
    if dev.close(WATCHDOG).is_err() {
        println!("the device was still referenced {WATCHDOG:?} after the run");
        return Ok(false);
    }
    Ok(failed.is_empty())
}
