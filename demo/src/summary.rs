//! The summary: counted from the job records after the run, printed as a table and written
//! as JSON (`--summary-json`). Its totals must add up, between two independent counts: the
//! fences the scheduler published and their outcomes, from the scheduler's own counters
//! ([`gpusched::EntityStats`] of every entity), against the outcomes the demo observed through
//! callbacks on the fences it holds (the job records). Every fence published must have
//! signalled, ok or with an error, as the scheduler says it did.

use std::collections::BTreeMap;
use std::time::Duration;

use gpusched::{EntityStats, Priority};
use serde_json::{json, Value};

use crate::trace::{JobRecord, Outcome};

/// Per-priority figures.
#[derive(Debug, Default, Clone)]
pub(crate) struct PriorityRow {
    pub(crate) clients: u32,
    pub(crate) jobs: u64,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    /// Submit to finished, of the jobs that succeeded.
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

/// Everything the demo reports.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) device: String,
    pub(crate) validation_on: bool,
    pub(crate) faults: bool,
    pub(crate) seed: Option<u64>,
    pub(crate) clients: u32,
    pub(crate) rounds: u32,
    pub(crate) size: u32,
    pub(crate) elapsed: Duration,
    /// Finished fences the scheduler published (jobs armed), by its own counters.
    pub(crate) published: u64,
    /// Of those, signalled ok and with an error, by the scheduler's counters.
    pub(crate) sched_ok: u64,
    pub(crate) sched_errors: u64,
    /// Finished fences the demo holds and watches (its job records).
    pub(crate) observed: u64,
    /// Outcomes the demo's callbacks saw on those fences.
    pub(crate) ok: u64,
    pub(crate) errors: BTreeMap<&'static str, u64>,
    pub(crate) pending: u64,
    /// Jobs refused before a fence existed (arm or recording failed), by reason.
    pub(crate) refused: BTreeMap<String, u64>,
    /// Jobs that reached a ring (their scheduled fence signalled ok): the trace's spans.
    pub(crate) ran: u64,
    /// The rings' own count of `run_job` calls (a resubmitted job counts again).
    pub(crate) rings_run: u64,
    pub(crate) per_priority: BTreeMap<String, PriorityRow>,
    pub(crate) timeouts: u64,
    pub(crate) resets: u64,
    pub(crate) generations: u64,
    pub(crate) banned: Vec<String>,
    pub(crate) rounds_verified: u64,
    pub(crate) rounds_skipped: u64,
    pub(crate) verify_failures: u64,
    /// Per client: name, rounds verified, skipped, wrong.
    pub(crate) per_client: Vec<(String, u64, u64, u64)>,
    /// Rounds verified after the hung one, of the client whose job hung.
    pub(crate) hang_client_verified_after: u64,
    pub(crate) validation_errors: u64,
    pub(crate) checker_violations: u64,
    pub(crate) problems: Vec<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

impl Summary {
    /// Counts fences by outcome and latencies by priority. `priority_of[c]` is client `c`'s
    /// priority (the rogue and the set-up entity included).
    pub(crate) fn count(&mut self, records: &[JobRecord], priority_of: &[Priority]) {
        for k in Outcome::ERRORS {
            self.errors.insert(k.name(), 0);
        }
        let mut lat: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
        for r in records {
            self.observed += 1;
            if r.ran() {
                self.ran += 1;
            }
            let prio = priority_of.get(r.client as usize).copied().unwrap_or(Priority::Normal);
            let row = self.per_priority.entry(format!("{prio:?}")).or_default();
            row.jobs += 1;
            match r.finished {
                Outcome::Pending => self.pending += 1,
                Outcome::Ok => {
                    self.ok += 1;
                    row.ok += 1;
                    if let (Some(s), Some(f)) = (r.submit_ns, r.fin_ns) {
                        let l = lat.entry(format!("{prio:?}")).or_default();
                        l.push(Duration::from_nanos(f.saturating_sub(s)));
                    }
                }
                e => {
                    *self.errors.entry(e.name()).or_default() += 1;
                    row.errors += 1;
                    // Blamed for a hang (it ran); a dependant failing with the same error
                    // never ran, and is only counted by kind.
                    if e == Outcome::TimedOut && r.ran() {
                        self.timeouts += 1;
                    }
                }
            }
        }
        for (p, mut l) in lat {
            l.sort();
            if let Some(row) = self.per_priority.get_mut(&p) {
                row.p50 = percentile(&l, 0.5);
                row.p99 = percentile(&l, 0.99);
            }
        }
        for (i, p) in priority_of.iter().enumerate() {
            if (i as u32) < self.clients {
                self.per_priority.entry(format!("{p:?}")).or_default().clients += 1;
            }
        }
    }

    /// Adds the scheduler's counters of one entity (every entity of the run, once).
    pub(crate) fn count_entity(&mut self, stats: EntityStats) {
        self.published += stats.armed;
        self.sched_ok += stats.finished_ok;
        self.sched_errors += stats.finished_err;
    }

    /// The errors, all kinds.
    pub(crate) fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Whether the two counts agree: every fence the scheduler published was observed and
    /// signalled (nothing pending), ok + errors observed = published, and the observed ok and
    /// errors are the scheduler's.
    pub(crate) fn totals_add_up(&self) -> bool {
        self.pending == 0
            && self.observed == self.published
            && self.ok + self.error_total() == self.published
            && self.ok == self.sched_ok
            && self.error_total() == self.sched_errors
    }

    /// Prints the table.
    pub(crate) fn print(&self) {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        println!();
        println!(
            "{:<10} {:>7} {:>7} {:>7} {:>7} {:>11} {:>11}",
            "priority", "clients", "jobs", "ok", "errors", "p50", "p99"
        );
        for (p, r) in &self.per_priority {
            println!(
                "{:<10} {:>7} {:>7} {:>7} {:>7} {:>11} {:>11}",
                p,
                r.clients,
                r.jobs,
                r.ok,
                r.errors,
                ms(r.p50),
                ms(r.p99)
            );
        }
        println!();
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        println!(
            "jobs                 {} in {:.2?} ({:.0} jobs/s, {:.0} ok/s)",
            self.published,
            self.elapsed,
            self.published as f64 / secs,
            self.ok as f64 / secs
        );
        println!("ran on a ring        {} (rings' run_job calls: {})", self.ran, self.rings_run);
        for (why, n) in &self.refused {
            println!("refused at submit    {n} ({why})");
        }
        println!(
            "fences published     {} (scheduler: {} ok, {} with error)",
            self.published, self.sched_ok, self.sched_errors
        );
        println!("fences observed      {} (callbacks on the demo's fences)", self.observed);
        println!("  signalled ok       {}", self.ok);
        println!("  with error         {}", self.error_total());
        for (k, n) in self.errors.iter().filter(|(_, n)| **n > 0) {
            println!("    {k:<16} {n}");
        }
        if self.pending > 0 {
            println!("  STILL PENDING      {}", self.pending);
        }
        println!(
            "  ok + error         {} {}",
            self.ok + self.error_total(),
            if self.totals_add_up() { "(= published)" } else { "(MISMATCH)" }
        );
        println!("timeouts             {}", self.timeouts);
        println!("resets (TDR runs)    {}", self.resets);
        println!("device generations   {}", self.generations);
        println!(
            "banned clients       {}{}",
            self.banned.len(),
            if self.banned.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.banned.join(", "))
            }
        );
        println!(
            "rounds verified      {} (skipped after a failed job: {}, wrong results: {})",
            self.rounds_verified, self.rounds_skipped, self.verify_failures
        );
        for (name, v, s, w) in &self.per_client {
            println!("  {name:<18} verified {v}, skipped {s}, wrong {w}");
        }
        println!("validation errors    {}", self.validation_errors);
        println!("checker violations   {}", self.checker_violations);
        for p in &self.problems {
            println!("PROBLEM: {p}");
        }
    }

    /// The summary as JSON.
    pub(crate) fn to_json(&self) -> Value {
        let prios: BTreeMap<&String, Value> = self
            .per_priority
            .iter()
            .map(|(p, r)| {
                (
                    p,
                    json!({
                        "clients": r.clients, "jobs": r.jobs, "ok": r.ok, "errors": r.errors,
                        "p50_us": r.p50.as_micros() as u64, "p99_us": r.p99.as_micros() as u64,
                    }),
                )
            })
            .collect();
        json!({
            "device": self.device,
            "validation": self.validation_on,
            "faults": self.faults,
            "seed": self.seed,
            "clients": self.clients,
            "rounds": self.rounds,
            "size": self.size,
            "elapsed_ms": self.elapsed.as_secs_f64() * 1e3,
            "published": self.published,
            "sched_ok": self.sched_ok,
            "sched_errors": self.sched_errors,
            "observed": self.observed,
            "ok": self.ok,
            "error_total": self.error_total(),
            "errors": self.errors,
            "pending": self.pending,
            "refused": self.refused,
            "ran": self.ran,
            "rings_run": self.rings_run,
            "per_priority": prios,
            "timeouts": self.timeouts,
            "resets": self.resets,
            "generations": self.generations,
            "banned_clients": self.banned,
            "rounds_verified": self.rounds_verified,
            "rounds_skipped": self.rounds_skipped,
            "verify_failures": self.verify_failures,
            "hang_client_verified_after": self.hang_client_verified_after,
            "per_client": self.per_client.iter().map(|(n, v, s, w)| {
                json!({"name": n, "verified": v, "skipped": s, "wrong": w})
            }).collect::<Vec<_>>(),
            "validation_errors": self.validation_errors,
            "checker_violations": self.checker_violations,
            "totals_add_up": self.totals_add_up(),
            "problems": self.problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(ok: u64, errors: u64, sched: EntityStats) -> Summary {
        let mut s = Summary { observed: ok + errors, ok, ..Summary::default() };
        s.errors.insert("timed_out", errors);
        s.count_entity(sched);
        s
    }

    #[test]
    fn totals_compare_the_scheduler_counts_with_the_observed_outcomes() {
        let sched = EntityStats { armed: 5, finished_ok: 3, finished_err: 2 };
        assert!(summary(3, 2, sched).totals_add_up());
        // A fence the scheduler published that the demo never observed.
        let more = EntityStats { armed: 6, ..sched };
        assert!(!summary(3, 2, more).totals_add_up());
        // The same total, but an outcome the scheduler counted differently.
        let other = EntityStats { armed: 5, finished_ok: 4, finished_err: 1 };
        assert!(!summary(3, 2, other).totals_add_up());
        // Something still pending.
        let mut pending = summary(3, 2, sched);
        pending.pending = 1;
        assert!(!pending.totals_add_up());
    }
}
