//! `gpusched`: the project's demo on the default Vulkan device (lavapipe when there is no GPU).
//! The `gpusched-demo` package (`demo/`, not published): its command-line dependencies stay out
//! of `gpusched-vulkan`.
//!
//! `gpusched demo` runs several clients (entities) at different priorities over two rings of
//! one device. Each client submits, per round, a chain of compute jobs over its own buffers
//! and a buffer shared by every client (implicit synchronisation through the buffers'
//! reservation objects); the round's result is read back and verified on the host. Midway it
//! injects faults (a hang, a rogue client that hangs until it is banned, a device loss: see
//! `faults.rs`), shows live progress bars, and ends with a summary whose totals must add up: the
//! fences the scheduler published, by its own counters, against the outcomes the demo's fence
//! callbacks observed.
//! `--trace FILE` writes a Chrome trace-event file (open it in Perfetto or `chrome://tracing`).
//!
//! Exit status: 0 when every check passed, 1 when one failed (a verification, a checker
//! violation, a validation error, totals that do not add up, a device that cannot be
//! created), 2 for a bad command line.
//!
//! Modules: `cli` (the command line), `demo` (the run), `faults` (fault injection),
//! `trace` (per-job records filled from fence callbacks, and the Chrome trace),
//! `summary` (the table and `--summary-json`), `progress` (the bars).

use std::process::ExitCode;

use clap::Parser;
use gpusched::fence::lockdep;

mod cli;
mod demo;
mod faults;
mod progress;
mod summary;
mod trace;

/// Every allocation is checked against the signalling contract: an allocation inside a
/// signalling section (a fence callback, `run_job`, the completion thread) is a violation,
/// counted in the summary.
#[global_allocator]
static ALLOC: lockdep::CheckingAllocator = lockdep::CheckingAllocator::new(std::alloc::System);

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Demo(args) => {
            if let Err(e) = args.check() {
                e.exit();
            }
            // Violations are counted and reported in the summary, not panics.
            lockdep::set_policy(lockdep::Policy::Log);
            match demo::run(&args) {
                Ok(true) => {
                    println!("demo: ok");
                    ExitCode::SUCCESS
                }
                Ok(false) => {
                    println!("demo: FAILED");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("gpusched: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
