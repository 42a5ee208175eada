//! Progress output: a spinner and byte bars on a terminal, plain lines otherwise (CI logs).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Progress reporter for one image build.
#[derive(Debug)]
pub struct Progress {
    prefix: String,
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress {
    /// A reporter for image `name`; `quiet` prints nothing but results.
    pub fn new(name: &str, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} [{prefix}] {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_prefix(name.to_owned());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Self {
            prefix: name.to_owned(),
            bar,
            quiet,
        }
    }

    /// Announces a step.
    pub fn step(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.set_message(msg.to_owned()),
            None if !self.quiet => eprintln!("guest-image [{}] {msg}", self.prefix),
            None => {}
        }
    }

    /// A line that stays, printed even when quiet: something the user should know (the
    /// kernel moved to another version, an old image is used).
    pub fn notice(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(format!("guest-image [{}] {msg}", self.prefix)),
            None => eprintln!("guest-image [{}] {msg}", self.prefix),
        }
    }

    /// A byte bar for a download of `total` bytes.
    pub fn bytes(&self, msg: &str, total: u64) -> ProgressBar {
        self.step(msg);
        match &self.bar {
            Some(_) => {
                let b = ProgressBar::new(total);
                b.set_style(
                    ProgressStyle::with_template(
                        "  [{prefix}] {msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_prefix(self.prefix.clone());
                b.set_message(msg.to_owned());
                b
            }
            None => ProgressBar::hidden(),
        }
    }

    /// Ends the reporter with a final line.
    pub fn finish(&self, msg: &str) {
        match &self.bar {
            Some(b) => {
                b.finish_and_clear();
                eprintln!("guest-image [{}] {msg}", self.prefix);
            }
            None if !self.quiet => eprintln!("guest-image [{}] {msg}", self.prefix),
            None => {}
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar
            && !b.is_finished()
        {
            b.finish_and_clear();
        }
    }
}
