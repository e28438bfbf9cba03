//! The seed harness the fault suites share (`tests/tests/fault_mock.rs`,
//! `tests/tests/fault_vulkan.rs`): which seeds a run covers, the loop that runs them, the
//! totals it prints, and the failure report with its replay command.
//!
//! # Variables
//! - `FAULT_SEED=<n>`: replays seed `n` alone (`fixed_seeds`), or starts the soak there.
//! - The suite's own count variable ([`Harness::seeds_var`]): seeds `0..n` instead of the
//!   suite's default set. Each suite has its own (`FAULT_SEEDS` for the mock world,
//!   `FAULT_VULKAN_SEEDS` for Vulkan, whose scenarios are some hundred times slower), so a
//!   count sized for one never runs the other past nextest's slow-timeout.
//! - `FAULT_SOAK_SECS`: the soak's duration (default [`Harness::soak_secs`]).
//! - `FAULT_DUMP=1`: prints every failing seed's dump as it fails (the first one is always
//!   printed, in the panic that ends the run).
//!
//! # One test at a time
//! A scenario compares process-wide counters before and after it (checker violations,
//! validation errors, live Vulkan devices), so two tests of one binary running scenarios at
//! once would see each other's. Every test that runs scenarios holds [`serial`] throughout:
//! plain `cargo test` (threads in one process) then runs them one at a time, as nextest
//! (a process per test) always does.

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::exec::{Failure, Summary};

/// A fault suite's seed harness: what [`run_seeds`] and [`soak`] need to know about it.
#[derive(Clone, Copy, Debug)]
pub struct Harness {
    /// The suite's test binary (`fault_mock`), named in the replay command.
    pub test: &'static str,
    /// The world's name in the summary line (`mock`, `vulkan`).
    pub world: &'static str,
    /// The variable giving the number of seeds `0..n` that `fixed_seeds` runs instead of
    /// its default set.
    pub seeds_var: &'static str,
    /// The soak's duration when `FAULT_SOAK_SECS` is not set.
    pub soak_secs: u64,
}

/// The seeds of a `fixed_seeds` run (see [`Harness::seeds`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seeds {
    /// The seeds, in order.
    pub seeds: Vec<u64>,
    /// Whether they are the suite's default set (no variable chose them): the suite then
    /// asserts that the set exercises what it claims to.
    pub default_set: bool,
}

/// Serialises the tests of one process that read process-wide state (see the module docs):
/// hold the guard for the whole test. A test that panicked while holding it does not block
/// the others (the poison is ignored: the lock guards no data).
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads a non-negative integer variable; `None` when unset.
///
/// # Panics
/// When the variable is set to something else (a typo must not silently run the default).
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|s| {
        s.trim().parse().unwrap_or_else(|_| panic!("{name}={s}: not a non-negative integer"))
    })
}

impl Harness {
    /// The seeds to run: `FAULT_SEED` alone, else `0..n` from [`seeds_var`](Self::seeds_var),
    /// else `default`.
    pub fn seeds(&self, default: impl FnOnce() -> Vec<u64>) -> Seeds {
        match (env_u64("FAULT_SEED"), env_u64(self.seeds_var)) {
            (Some(seed), _) => Seeds { seeds: vec![seed], default_set: false },
            (None, Some(n)) => Seeds { seeds: (0..n).collect(), default_set: false },
            (None, None) => Seeds { seeds: default(), default_set: true },
        }
    }

    /// Panics with the failure, its dump and the command that replays it.
    #[cold]
    #[track_caller]
    pub fn report(&self, f: &Failure) -> ! {
        panic!(
            "{f}\nreplay: FAULT_SEED={} cargo nextest run -p gpusched-tests --test {} \
             fixed_seeds --no-capture",
            f.seed, self.test
        )
    }
}

/// What a run of seeds observed, added over its scenarios.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Scenarios that passed.
    pub scenarios: u64,
    /// Jobs in them.
    pub jobs: usize,
    /// Jobs that succeeded.
    pub ok: usize,
    /// Jobs that failed.
    pub failed: usize,
    /// Arms refused.
    pub arm_refused: usize,
    /// Guilty resets (counted by the backend, or by the oracle from outside it).
    pub resets: usize,
    /// Scenarios that lost the device.
    pub device_lost: usize,
    /// Entities banned.
    pub banned: usize,
    /// Entities killed.
    pub killed: usize,
    /// Known-bug occurrences the oracle tolerated: jobs that succeeded past a blamed
    /// dependency ([`Summary::ran_past_failed_dependency`]).
    pub ran_past: usize,
    /// Known-bug occurrences: timeline inversions ([`Summary::timeline_inversions`]).
    pub inversions: usize,
    /// Jobs failed by a driver's unattributed submission failure
    /// ([`Summary::driver_submit_failures`]).
    pub driver_submit_failures: usize,
}

impl Totals {
    /// Adds a passed scenario's summary.
    pub fn add(&mut self, s: &Summary) {
        self.scenarios += 1;
        self.jobs += s.jobs;
        self.ok += s.ok;
        self.failed += s.failed;
        self.arm_refused += s.arm_refused;
        self.resets += s.resets;
        self.device_lost += usize::from(s.device_lost);
        self.banned += s.banned;
        self.killed += s.killed;
        self.ran_past += s.ran_past_failed_dependency;
        self.inversions += s.timeline_inversions;
        self.driver_submit_failures += s.driver_submit_failures;
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        )?;
        if self.driver_submit_failures != 0 {
            write!(f, "; {} jobs failed by the driver's submission", self.driver_submit_failures)?;
        }
        if self.ran_past + self.inversions != 0 {
            write!(
                f,
                "; known bugs: {} ran past a blamed dependency, {} timeline inversions",
                self.ran_past, self.inversions
            )?;
        }
        Ok(())
    }
}

/// Runs every seed through `run` (one scenario each), prints each failure as it happens
/// (with its dump under `FAULT_DUMP=1`) and a summary line, and returns the totals; after
/// the last seed, panics with the first failure's report ([`Harness::report`]) if any seed
/// failed, listing every failing seed.
pub fn run_seeds(
    h: &Harness,
    seeds: &[u64],
    mut run: impl FnMut(u64) -> Result<Summary, Failure>,
) -> Totals {
    let dump = std::env::var_os("FAULT_DUMP").is_some_and(|v| v != "0");
    let start = Instant::now();
    let mut totals = Totals::default();
    let mut failures: Vec<Failure> = Vec::new();
    for &seed in seeds {
        match run(seed) {
            Ok(s) => totals.add(&s),
            Err(f) => {
                eprintln!("seed {seed} FAILED: {}", f.problems.join("; "));
                if dump {
                    eprintln!("{f}");
                }
                failures.push(f);
            }
        }
    }
    if let Some(first) = failures.first() {
        let failed: Vec<u64> = failures.iter().map(|f| f.seed).collect();
        eprintln!("{} of {} seeds failed: {failed:?}", failures.len(), seeds.len());
        h.report(first);
    }
    let secs = start.elapsed().as_secs_f64();
    let range = match seeds {
        [] => "none".to_owned(),
        [first, .., last] if seeds.len() > 20 => format!("{first}..={last}"),
        _ => format!("{seeds:?}"),
    };
    eprintln!(
        "fault suite ({}): seeds {range}: {totals} in {secs:.1} s ({:.2} scenarios/s)",
        h.world,
        totals.scenarios as f64 / secs
    );
    totals
}

/// The soak: consecutive seeds from `FAULT_SEED` (else a time-based one) for
/// `FAULT_SOAK_SECS` seconds (else [`Harness::soak_secs`]); panics with the first failure's
/// report; prints the seed range covered and scenarios/s, and returns the totals.
pub fn soak(h: &Harness, mut run: impl FnMut(u64) -> Result<Summary, Failure>) -> Totals {
    let secs = env_u64("FAULT_SOAK_SECS").unwrap_or(h.soak_secs);
    let first = env_u64("FAULT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let start = Instant::now();
    let mut totals = Totals::default();
    let mut seed = first;
    while start.elapsed() < Duration::from_secs(secs) {
        match run(seed) {
            Ok(s) => totals.add(&s),
            Err(f) => {
                eprintln!("soak ({}): seeds {first}..{seed} passed before this one", h.world);
                h.report(&f)
            }
        }
        seed = seed.wrapping_add(1);
    }
    let el = start.elapsed().as_secs_f64();
    eprintln!(
        "fault soak ({}): seeds {first}..{seed}: {totals} in {el:.1} s ({:.2} scenarios/s)",
        h.world,
        totals.scenarios as f64 / el
    );
    totals
}
