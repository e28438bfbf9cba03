//! Live progress bars (indicatif): one per client (rounds) and one for the totals (jobs
//! finished). Updated from the client threads after each round, never from a fence callback
//! (a callback runs in a signalling section, where drawing, which allocates and locks, is not
//! allowed). Hidden with `--no-progress` or when stdout is not a terminal.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars of a run.
#[derive(Debug)]
pub(crate) struct Progress {
    multi: MultiProgress,
    total: ProgressBar,
}

impl Progress {
    /// Bars drawn on stdout when `enabled` and stdout is a terminal, hidden otherwise.
    pub(crate) fn new(enabled: bool, total_jobs: u64) -> Progress {
        let target = if enabled && std::io::stdout().is_terminal() {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let style = ProgressStyle::with_template(
            "{prefix:>16} [{bar:32}] {pos:>6}/{len:6} jobs  {elapsed_precise} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let total = multi.add(ProgressBar::new(total_jobs).with_style(style));
        total.set_prefix("total");
        Progress { multi, total }
    }

    /// A bar for one client, `rounds` long.
    pub(crate) fn client(&self, name: &str, rounds: u64) -> ProgressBar {
        let style = ProgressStyle::with_template(
            "{prefix:>16} [{bar:32.cyan/blue}] {pos:>6}/{len:6} rounds {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = self.multi.insert_before(&self.total, ProgressBar::new(rounds).with_style(style));
        bar.set_prefix(name.to_owned());
        bar
    }

    /// The totals bar (jobs whose finished fence signalled).
    pub(crate) fn total(&self) -> &ProgressBar {
        &self.total
    }

    /// Clears the bars (the summary follows).
    pub(crate) fn finish(&self) {
        self.total.finish();
        let _ = self.multi.clear();
    }
}
