//! The command line (clap derive): every flag documented, values range-checked, a bad command
//! line ends with a message naming the flag and exit status 2.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use gpusched_vulkan::DeviceSelector;

/// gpusched: a GPU job scheduler runtime (the Linux DRM synchronisation contract, in Rust).
#[derive(Debug, Parser)]
#[command(name = "gpusched", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run several clients at different priorities submitting chains of compute jobs over
    /// shared buffers on a Vulkan device, inject faults (a hang, a client that hangs until it
    /// is banned, a device loss), verify the results on the host and print a summary.
    #[command(after_help = "ENVIRONMENT:\n    \
        GPUSCHED_DEVICE       default device selector (an index or a name substring)\n    \
        GPUSCHED_VALIDATION   1 enables the validation layer unless a flag says otherwise\n\n\
        EXIT STATUS:\n    \
        0 every check passed; 1 a check failed (verification, checker violation, validation\n    \
        error, totals that do not add up) or no device; 2 a bad command line")]
    Demo(DemoArgs),
}

/// `gpusched demo`'s flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct DemoArgs {
    /// Number of clients (entities); their priorities cycle through high, normal, low.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub(crate) clients: u32,

    /// Rounds per client; each round is a chain of 4 jobs, verified on the host. With faults
    /// on, at least 3 (the hang comes at 1/3 of the rounds, the device loss at 2/3).
    #[arg(long, value_name = "N", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) rounds: u32,

    /// Rings (schedulers), each over one of the device's compute queues, round robin;
    /// clients load-balance over all of them. 0: one per compute queue (lavapipe has one).
    /// More rings than queues share queues: a hang on one ring then stalls the others too.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=8))]
    pub(crate) rings: u32,

    /// Floats per buffer.
    #[arg(long, value_name = "N", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(64..=4_194_304))]
    pub(crate) size: u32,

    /// Enable the Khronos validation layer (its errors are counted and must be 0).
    #[arg(long, overrides_with = "no_validation")]
    pub(crate) validation: bool,

    /// Disable the validation layer (default: on only when GPUSCHED_VALIDATION=1).
    #[arg(long, overrides_with = "validation")]
    pub(crate) no_validation: bool,

    /// The rings' TDR timeout in milliseconds: a job running longer is declared hung.
    #[arg(long, value_name = "MS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub(crate) timeout_ms: u64,

    /// Run without fault injection (no hang, no rogue client, no device loss).
    #[arg(long)]
    pub(crate) no_faults: bool,

    /// Seed of the fault schedule (which client and job hang), for a reproducible run;
    /// default: from the clock, printed at the start.
    #[arg(long, value_name = "N")]
    pub(crate) seed: Option<u64>,

    /// Write a Chrome trace-event JSON file (jobs as spans per ring, dependencies as flows,
    /// timeouts, resets and device losses as markers); open it in Perfetto.
    #[arg(long, value_name = "FILE")]
    pub(crate) trace: Option<PathBuf>,

    /// Write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) summary_json: Option<PathBuf>,

    /// No progress bars (they are off anyway when stdout is not a terminal).
    #[arg(long)]
    pub(crate) no_progress: bool,

    /// The Vulkan device: `best` (a GPU if there is one), an index, or a substring of the
    /// device name; default: GPUSCHED_DEVICE, else best.
    #[arg(long, value_name = "SELECTOR", value_parser = parse_selector)]
    pub(crate) device: Option<DeviceSelector>,
}

fn parse_selector(s: &str) -> Result<DeviceSelector, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty device selector: give `best`, an index or a name substring".into());
    }
    if s.eq_ignore_ascii_case("best") {
        return Ok(DeviceSelector::Best);
    }
    Ok(match s.parse::<usize>() {
        Ok(i) => DeviceSelector::Index(i),
        Err(_) => DeviceSelector::Name(s.to_owned()),
    })
}

impl DemoArgs {
    /// Checks what clap's per-flag parsers cannot: combinations.
    pub(crate) fn check(&self) -> Result<(), clap::Error> {
        if !self.no_faults && self.rounds < 3 {
            let mut cli = Cli::command();
            let cmd = cli.find_subcommand_mut("demo").unwrap_or_else(|| unreachable!("demo"));
            return Err(cmd.error(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "--rounds {} is too few for fault injection (at least 3: the hang comes at \
                     1/3, the device loss at 2/3); pass --no-faults or more rounds",
                    self.rounds
                ),
            ));
        }
        Ok(())
    }

    /// The validation setting: `Some` when a flag forces it.
    pub(crate) fn validation(&self) -> Option<bool> {
        match (self.validation, self.no_validation) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }

    /// Whether faults are injected.
    pub(crate) fn faults(&self) -> bool {
        !self.no_faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
