//! Per-job records and the Chrome trace.
//!
//! Every job submitted gets a slot in a table preallocated for the whole run. The client
//! thread fills in who submitted what (client, round, ring, dependencies, submit time) before
//! it publishes the job; the job's *scheduled* and *finished* fences fill in the rest from
//! their callbacks. Those callbacks run inside the signalling section of whichever thread
//! signals (the completion thread, the TDR worker, a dependency's signaller), so they only
//! store into atomics: no allocation, no lock, no wait (rule 4 of CONTRACT.md; the checking
//! allocator would count an allocation there as a violation). The table is read once the run
//! is over: the summary counts outcomes from it and [`Recorder::chrome_trace`] serialises it
//! in the Chrome trace-event format (`X` spans per ring, `s`/`f` flows for dependencies, `i`
//! markers for timeouts, resets, device losses and new device generations).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gpusched::fence::{Fence, FenceError};
use serde_json::{json, Value};

/// No dependency in a slot's dependency list.
pub(crate) const NO_DEP: u32 = u32::MAX;

/// How a fence ended, as stored in a slot (one byte, written once by a callback).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub(crate) enum Outcome {
    /// Not signalled (yet).
    Pending = 0,
    /// Signalled without error.
    Ok = 1,
    /// [`FenceError::Cancelled`] (a banned client's jobs).
    Cancelled = 2,
    /// [`FenceError::TimedOut`] (blamed for a hang).
    TimedOut = 3,
    /// [`FenceError::DeviceLost`].
    DeviceLost = 4,
    /// [`FenceError::Killed`].
    Killed = 5,
    /// [`FenceError::Interrupted`].
    Interrupted = 6,
    /// [`FenceError::Abandoned`].
    Abandoned = 7,
    /// A driver error or a kind this binary does not know.
    Other = 8,
}

impl Outcome {
    /// Every error kind, in summary order.
    pub(crate) const ERRORS: [Outcome; 7] = [
        Outcome::Cancelled,
        Outcome::TimedOut,
        Outcome::DeviceLost,
        Outcome::Killed,
        Outcome::Interrupted,
        Outcome::Abandoned,
        Outcome::Other,
    ];

    pub(crate) fn of(result: Option<FenceError>) -> Outcome {
        match result {
            None => Outcome::Ok,
            Some(FenceError::Cancelled) => Outcome::Cancelled,
            Some(FenceError::TimedOut) => Outcome::TimedOut,
            Some(FenceError::DeviceLost) => Outcome::DeviceLost,
            Some(FenceError::Killed) => Outcome::Killed,
            Some(FenceError::Interrupted) => Outcome::Interrupted,
            Some(FenceError::Abandoned) => Outcome::Abandoned,
            Some(_) => Outcome::Other,
        }
    }

    fn from_u8(v: u8) -> Outcome {
        match v {
            1 => Outcome::Ok,
            2 => Outcome::Cancelled,
            3 => Outcome::TimedOut,
            4 => Outcome::DeviceLost,
            5 => Outcome::Killed,
            6 => Outcome::Interrupted,
            7 => Outcome::Abandoned,
            8 => Outcome::Other,
            _ => Outcome::Pending,
        }
    }

    /// The name used in the summary and the trace (snake case).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Ok => "ok",
            Outcome::Cancelled => "cancelled",
            Outcome::TimedOut => "timed_out",
            Outcome::DeviceLost => "device_lost",
            Outcome::Killed => "killed",
            Outcome::Interrupted => "interrupted",
            Outcome::Abandoned => "abandoned",
            Outcome::Other => "other",
        }
    }
}

/// What a job does, for its span's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    /// `x = v`.
    FillX = 0,
    /// `y = 1`.
    FillY = 1,
    /// `y += 2 x`.
    Saxpy = 2,
    /// `y += s` (the shared buffer).
    AddShared = 3,
    /// `s = S`: the shared buffer's set-up (once per device generation).
    FillShared = 4,
    /// The rogue client's job (always hangs).
    Rogue = 5,
    /// The rogue client's harmless job, gated on a host fence.
    RogueGated = 6,
}

impl Kind {
    fn name(v: u32) -> &'static str {
        match v {
            0 => "fill x",
            1 => "fill y",
            2 => "y += 2x",
            3 => "y += shared",
            4 => "fill shared",
            5 => "hang",
            _ => "gated",
        }
    }
}

/// One job's record. Written by the submitting thread before the job is published (plain
/// relaxed stores: the fences' callbacks do not read them), then by the callbacks.
#[derive(Debug, Default)]
struct Slot {
    /// Client index (the rogue and the set-up entity have indices past the clients).
    client: AtomicU32,
    /// Ring index + 1 (0: not known).
    ring: AtomicU32,
    /// [`Kind`].
    kind: AtomicU32,
    round: AtomicU32,
    /// Device generation the job was submitted on.
    generation: AtomicU64,
    /// Slots this job depends on, [`NO_DEP`] when unused.
    deps: [AtomicU32; 2],
    /// Nanoseconds since the start, + 1 (0: not yet). Submit: by the client; scheduled and
    /// finished: by the fences' callbacks.
    submit_ns: AtomicU64,
    sched_ns: AtomicU64,
    fin_ns: AtomicU64,
    /// [`Outcome`] of the scheduled and the finished fence.
    sched_outcome: AtomicU8,
    fin_outcome: AtomicU8,
}

/// A one-off event for the trace (`i` markers).
#[derive(Clone, Debug)]
pub(crate) struct Marker {
    pub(crate) name: String,
    pub(crate) at: Instant,
    pub(crate) detail: String,
}

/// The table of job records, preallocated for the run.
#[derive(Debug)]
pub(crate) struct Recorder {
    start: Instant,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    /// Written by client and monitor threads only, never from a callback.
    markers: Mutex<Vec<Marker>>,
}

/// What the submitter knows about a job before it is published.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JobMeta {
    pub(crate) client: u32,
    pub(crate) kind: Kind,
    pub(crate) round: u32,
    pub(crate) generation: u64,
    pub(crate) deps: [Option<usize>; 2],
}

/// One job's record, read back after the run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JobRecord {
    pub(crate) client: u32,
    pub(crate) ring: Option<u32>,
    pub(crate) kind: u32,
    pub(crate) round: u32,
    pub(crate) generation: u64,
    pub(crate) deps: [Option<usize>; 2],
    pub(crate) submit_ns: Option<u64>,
    pub(crate) sched_ns: Option<u64>,
    pub(crate) fin_ns: Option<u64>,
    pub(crate) scheduled: Outcome,
    pub(crate) finished: Outcome,
}

impl JobRecord {
    /// Whether the job reached the hardware (its scheduled fence signalled without error).
    pub(crate) fn ran(&self) -> bool {
        self.scheduled == Outcome::Ok && self.sched_ns.is_some() && self.ring.is_some()
    }
}

/// Which of a job's two fences a callback reports.
#[derive(Clone, Copy, Debug)]
enum Which {
    Scheduled,
    Finished,
}

fn stamp(start: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(start).as_nanos() as u64 + 1
}

impl Recorder {
    /// A table for at most `capacity` jobs.
    pub(crate) fn new(capacity: usize) -> Arc<Recorder> {
        let slots: Vec<Slot> = (0..capacity).map(|_| Slot::default()).collect();
        Arc::new(Recorder {
            start: Instant::now(),
            slots: slots.into_boxed_slice(),
            next: AtomicUsize::new(0),
            markers: Mutex::new(Vec::new()),
        })
    }

    /// Takes a slot for a job about to be submitted and records `meta` and the submit time.
    /// `None` when the table is full (a sizing bug: the caller reports it).
    pub(crate) fn open(&self, meta: JobMeta) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(s) = self.slots.get(i) else {
            self.next.fetch_sub(1, Ordering::Relaxed);
            return None;
        };
        s.client.store(meta.client, Ordering::Relaxed);
        s.kind.store(meta.kind as u32, Ordering::Relaxed);
        s.round.store(meta.round, Ordering::Relaxed);
        s.generation.store(meta.generation, Ordering::Relaxed);
        for (d, m) in s.deps.iter().zip(meta.deps) {
            d.store(m.map_or(NO_DEP, |v| v as u32), Ordering::Relaxed);
        }
        s.submit_ns.store(stamp(self.start, Instant::now()), Ordering::Relaxed);
        Some(i)
    }

    /// Records the ring a job landed on (index into the device's rings).
    pub(crate) fn set_ring(&self, slot: usize, ring: u32) {
        self.slots[slot].ring.store(ring + 1, Ordering::Relaxed);
    }

    /// Watches a job's two fences: each callback stores its time and outcome. Called before
    /// the job is pushed; a fence that has already signalled is recorded at once.
    pub(crate) fn watch(self: &Arc<Self>, slot: usize, scheduled: &Fence, finished: &Fence) {
        for (fence, which) in [(scheduled, Which::Scheduled), (finished, Which::Finished)] {
            let rec = self.clone();
            // Runs in a signalling section: atomics only.
            let cb = move |f: &Fence| rec.mark(slot, which, f);
            if let Err(already) = fence.add_callback(cb) {
                drop(already);
                self.mark(slot, which, fence);
            }
        }
    }

    fn mark(&self, slot: usize, which: Which, f: &Fence) {
        let s = &self.slots[slot];
        let at = stamp(self.start, f.timestamp().unwrap_or_else(Instant::now));
        let outcome = Outcome::of(f.error()) as u8;
        match which {
            Which::Scheduled => {
                s.sched_ns.store(at, Ordering::Relaxed);
                s.sched_outcome.store(outcome, Ordering::Release);
            }
            Which::Finished => {
                s.fin_ns.store(at, Ordering::Relaxed);
                s.fin_outcome.store(outcome, Ordering::Release);
            }
        }
    }

    /// Records a marker (client and monitor threads only).
    pub(crate) fn marker(&self, name: &str, detail: String) {
        let m = Marker { name: name.to_owned(), at: Instant::now(), detail };
        self.markers.lock().unwrap_or_else(|p| p.into_inner()).push(m);
    }

    /// The markers so far.
    pub(crate) fn markers(&self) -> Vec<Marker> {
        self.markers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads every used slot.
    pub(crate) fn records(&self) -> Vec<JobRecord> {
        let n = self.next.load(Ordering::Acquire).min(self.slots.len());
        let opt = |v: u64| (v != 0).then(|| v - 1);
        self.slots[..n]
            .iter()
            .map(|s| {
                let deps = [0, 1].map(|k| {
                    let d = s.deps[k].load(Ordering::Relaxed);
                    (d != NO_DEP).then_some(d as usize)
                });
                let ring = s.ring.load(Ordering::Relaxed);
                JobRecord {
                    client: s.client.load(Ordering::Relaxed),
                    ring: (ring != 0).then(|| ring - 1),
                    kind: s.kind.load(Ordering::Relaxed),
                    round: s.round.load(Ordering::Relaxed),
                    generation: s.generation.load(Ordering::Relaxed),
                    deps,
                    scheduled: Outcome::from_u8(s.sched_outcome.load(Ordering::Acquire)),
                    finished: Outcome::from_u8(s.fin_outcome.load(Ordering::Acquire)),
                    submit_ns: opt(s.submit_ns.load(Ordering::Relaxed)),
                    sched_ns: opt(s.sched_ns.load(Ordering::Relaxed)),
                    fin_ns: opt(s.fin_ns.load(Ordering::Relaxed)),
                }
            })
            .collect()
    }

    /// The run as a Chrome trace-event document: `pid` 1 is the device, `tid` r + 1 ring r,
    /// `tid` 0 the host's markers. `client_names[c]` names client `c` (and the rogue and the
    /// set-up entity after the clients).
    pub(crate) fn chrome_trace(
        &self,
        device: &str,
        rings: &[String],
        client_names: &[String],
    ) -> Value {
        let us = |ns: u64| ns as f64 / 1000.0;
        let records = self.records();
        let mut events = vec![
            json!({"name": "process_name", "ph": "M", "pid": 1, "tid": 0,
                   "args": {"name": format!("device {device}")}}),
            json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": 0,
                   "args": {"name": "host markers"}}),
        ];
        for (i, r) in rings.iter().enumerate() {
            events.push(json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": i + 1,
                               "args": {"name": r}}));
        }
        let client = |c: u32| client_names.get(c as usize).cloned().unwrap_or_default();
        // A ring executes in order: a job occupies it from when it was scheduled, or when the
        // ring's previous job finished if later, until it finished. So spans on one ring never
        // overlap (Perfetto wants slices on one track nested or disjoint).
        let mut spans: Vec<Option<(u32, u64, u64)>> = vec![None; records.len()];
        let mut order: Vec<usize> = (0..records.len()).filter(|i| records[*i].ran()).collect();
        order.sort_by_key(|i| (records[*i].ring, records[*i].fin_ns, records[*i].sched_ns));
        let mut ring_free: Vec<(u32, u64)> = Vec::new();
        for i in order {
            let r = &records[i];
            let (Some(ring), Some(sched)) = (r.ring, r.sched_ns) else { continue };
            let free = match ring_free.iter_mut().find(|(k, _)| *k == ring) {
                Some(f) => f,
                None => {
                    ring_free.push((ring, 0));
                    let last = ring_free.len() - 1;
                    &mut ring_free[last]
                }
            };
            let end = r.fin_ns.unwrap_or(sched).max(sched).max(free.1);
            let start = sched.max(free.1);
            free.1 = end;
            spans[i] = Some((ring, start, end));
            events.push(json!({
                "name": format!("{} r{} {}", client(r.client), r.round, Kind::name(r.kind)),
                "cat": "job", "ph": "X", "pid": 1, "tid": ring + 1,
                "ts": us(start), "dur": us(end - start),
                "args": {
                    "client": client(r.client), "round": r.round, "generation": r.generation,
                    "outcome": r.finished.name(),
                    "submitted_us": r.submit_ns.map(us), "scheduled_us": us(sched),
                },
            }));
        }
        // Flows from a dependency's span (its last nanosecond) to its dependant's start.
        let mut flow = 0u64;
        for (i, r) in records.iter().enumerate() {
            let Some((ring, start, _)) = spans[i] else { continue };
            for d in r.deps.iter().flatten() {
                let Some((dring, dstart, dend)) = spans.get(*d).copied().flatten() else {
                    continue;
                };
                flow += 1;
                events.push(json!({"name": "dependency", "cat": "dep", "ph": "s", "id": flow,
                                   "pid": 1, "tid": dring + 1,
                                   "ts": us(dend.saturating_sub(1).max(dstart))}));
                events.push(json!({"name": "dependency", "cat": "dep", "ph": "f", "bp": "e",
                                   "id": flow, "pid": 1, "tid": ring + 1, "ts": us(start)}));
            }
        }
        for r in records.iter().filter(|r| r.finished == Outcome::TimedOut && r.ran()) {
            let at = r.fin_ns.unwrap_or(0);
            events.push(json!({"name": "timeout", "cat": "fault", "ph": "i", "s": "g",
                               "pid": 1, "tid": 0, "ts": us(at),
                               "args": {"client": client(r.client), "round": r.round}}));
        }
        for m in self.markers() {
            let at = m.at.saturating_duration_since(self.start).as_nanos() as u64;
            events.push(json!({"name": m.name, "cat": "fault", "ph": "i", "s": "g",
                               "pid": 1, "tid": 0, "ts": us(at),
                               "args": {"detail": m.detail}}));
        }
        json!({"traceEvents": events, "displayTimeUnit": "ms"})
    }
}
