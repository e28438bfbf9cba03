//! The fault-injection suite on the mock world ([`MockWorld`]: software rings in one reset
//! domain): seeded scenarios of entities submitting random job DAGs with explicit and implicit
//! dependencies, with hangs, slow jobs, failed submissions, device loss, kills, dropped jobs
//! and a rogue client, each checked by the oracle (see `gpusched_tests`'s docs).
//!
//! - `fixed_seeds`: seeds `0..FAULT_SEEDS` (default 500), what CI runs.
//! - `FAULT_SEED=<n>` replays one seed (printed with every failure).
//! - `soak` (ignored): random seeds for `FAULT_SOAK_SECS` seconds (default 60), printing
//!   scenarios/s and the seed range: `cargo test -p gpusched-tests --test fault_mock --release
//!   -- --ignored soak --nocapture`.
//!
//! Runs under the checker's allocator: an allocation inside a signalling section (the
//! scheduler's or the world's) is a violation, and every scenario asserts none occurred.

use std::time::{Duration, Instant};

use gpusched::fence::lockdep::CheckingAllocator;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use gpusched::Scheduler;
use gpusched_tests::{
    run_scenario, Failure, Fault, FaultJob, FaultRing, Ledger, MockWorld, PlanConfig, Scenario,
    Summary, World,
};

#[global_allocator]
static ALLOC: CheckingAllocator = CheckingAllocator::new(std::alloc::System);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|s| {
        s.trim().parse().unwrap_or_else(|_| panic!("{name}={s}: not a non-negative integer"))
    })
}

#[track_caller]
fn report(f: &Failure) -> ! {
    panic!(
        "{f}\nreplay: FAULT_SEED={} cargo nextest run -p gpusched-tests --test fault_mock \
         fixed_seeds --no-capture",
        f.seed
    )
}

#[derive(Default)]
struct Totals {
    scenarios: u64,
    jobs: usize,
    ok: usize,
    failed: usize,
    arm_refused: usize,
    resets: usize,
    device_lost: usize,
    banned: usize,
    killed: usize,
}

impl Totals {
    fn add(&mut self, s: &Summary) {
        self.scenarios += 1;
        self.jobs += s.jobs;
        self.ok += s.ok;
        self.failed += s.failed;
        self.arm_refused += s.arm_refused;
        self.resets += s.resets;
        self.device_lost += usize::from(s.device_lost);
        self.banned += s.banned;
        self.killed += s.killed;
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} scenarios, {} jobs: {} ok, {} failed, {} arms refused; {} guilty resets; {} \
             device losses; {} entities banned, {} killed",
            self.scenarios,
            self.jobs,
            self.ok,
            self.failed,
            self.arm_refused,
            self.resets,
            self.device_lost,
            self.banned,
            self.killed
        )
    }
}

#[test]
fn fixed_seeds() {
    let cfg = PlanConfig::default();
    let seeds: Vec<u64> = match env_u64("FAULT_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("FAULT_SEEDS").unwrap_or(500)).collect(),
    };
    let start = Instant::now();
    let mut totals = Totals::default();
    let mut failures: Vec<Failure> = Vec::new();
    for &seed in &seeds {
        match run_scenario::<MockWorld>(seed, &cfg) {
            Ok(s) => totals.add(&s),
            Err(f) => {
                eprintln!("seed {seed} FAILED: {}", f.problems.join("; "));
                failures.push(f);
            }
        }
    }
    if let Some(first) = failures.first() {
        let seeds: Vec<u64> = failures.iter().map(|f| f.seed).collect();
        eprintln!(
            "{} of {} seeds failed: {seeds:?}",
            failures.len(),
            totals.scenarios as usize + failures.len()
        );
        report(first);
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "fault suite (mock): seeds {}..={}: {totals} in {secs:.1} s ({:.1} scenarios/s)",
        seeds[0],
        seeds[seeds.len() - 1],
        totals.scenarios as f64 / secs
    );
    // The suite must exercise what it claims to: over the fixed set, every kind of outcome.
    if seeds.len() >= 100 {
        assert!(totals.resets > 0 && totals.device_lost > 0 && totals.arm_refused > 0, "{totals}");
        assert!(totals.banned > 0 && totals.killed > 0, "{totals}");
        assert!(totals.ok * 3 > totals.jobs, "too few successes to check results: {totals}");
    }
}

#[test]
#[ignore = "soak: runs random seeds for FAULT_SOAK_SECS seconds (default 60)"]
fn soak() {
    let cfg = PlanConfig::default();
    let secs = env_u64("FAULT_SOAK_SECS").unwrap_or(60);
    let first = env_u64("FAULT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let start = Instant::now();
    let mut totals = Totals::default();
    let mut seed = first;
    while start.elapsed() < Duration::from_secs(secs) {
        match run_scenario::<MockWorld>(seed, &cfg) {
            Ok(s) => totals.add(&s),
            Err(f) => report(&f),
        }
        seed = seed.wrapping_add(1);
    }
    let el = start.elapsed().as_secs_f64();
    eprintln!(
        "fault soak (mock): seeds {first}..{seed}: {totals} in {el:.1} s ({:.1} scenarios/s)",
        totals.scenarios as f64 / el
    );
}

/// The mock world with its computed results corrupted after the scenario: the oracle must
/// notice (a suite that cannot fail checks nothing).
struct Corrupting {
    inner: MockWorld,
    ledger: Arc<Ledger>,
}

impl World for Corrupting {
    type Backend = FaultRing;
    const NAME: &'static str = "corrupting mock";

    fn new(scenario: &Scenario, ledger: Arc<Ledger>) -> Result<Self, String> {
        Ok(Corrupting { inner: MockWorld::new(scenario, ledger.clone())?, ledger })
    }

    fn schedulers(&self) -> &[Scheduler<FaultRing>] {
        self.inner.schedulers()
    }

    fn payload(&self, idx: usize, fault: Fault) -> FaultJob {
        self.inner.payload(idx, fault)
    }

    fn lose_device(&self) {
        self.inner.lose_device();
    }

    fn collect(&self) -> Result<(), String> {
        for j in 0..self.ledger.len() {
            self.ledger.job(j).result.fetch_xor(0x100, Ordering::AcqRel);
        }
        Ok(())
    }

    fn teardown(self) -> Result<(), String> {
        let Corrupting { inner, ledger } = self;
        drop(ledger);
        inner.teardown()
    }
}

#[test]
fn the_oracle_catches_wrong_results() {
    let cfg = PlanConfig::default();
    let failure = (0..20)
        .find_map(|seed| run_scenario::<Corrupting>(seed, &cfg).err())
        .unwrap_or_else(|| panic!("20 scenarios with corrupted results passed the oracle"));
    assert!(
        failure.problems.iter().any(|p| p.contains("computed")),
        "unexpected problems: {:?}",
        failure.problems
    );
}
