//! Per-item output with an optional progress bar (indicatif): only when stdout is a terminal
//! and there are enough items for a bar to help.

use std::io::Write;

use indicatif::{ProgressBar, ProgressStyle};

/// Fewer items than this print their lines only.
const BAR_FROM: usize = 20;

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(total: usize, interactive: bool, what: &str) -> Self {
        let bar = (interactive && total > BAR_FROM).then(|| {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) =
                ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} ({elapsed}, eta {eta})")
            {
                bar.set_style(style);
            }
            bar.set_message(what.to_owned());
            bar
        });
        Self { bar }
    }

    /// A counter for a run of unknown length (a spinner with the count), on a terminal only.
    pub fn counting(interactive: bool, what: &str) -> Self {
        let bar = interactive.then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {pos} {msg} ({elapsed})") {
                bar.set_style(style);
            }
            bar.set_message(what.to_owned());
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        Self { bar }
    }

    pub fn set_message(&self, what: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(what.to_owned());
        }
    }

    /// Prints one line above the bar (or plainly).
    pub fn line(&self, out: &mut dyn Write, line: &str) -> std::io::Result<()> {
        match &self.bar {
            Some(bar) => {
                bar.suspend(|| writeln!(out, "{line}"))?;
                Ok(())
            }
            None => writeln!(out, "{line}"),
        }
    }

    pub fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
