//! The progress of the commands that work through many schemas
//! (`migrate`, `migrate --revert`, `ops exec`), on stderr: on a terminal a
//! bar per step, with failures and notes printed above it; elsewhere one
//! line per step, failure and note.

use std::fmt::Display;
use std::io::IsTerminal;
use std::sync::{Mutex, MutexGuard};

use appschema_core::migrate::Event;
use indicatif::{ProgressBar, ProgressStyle};

/// Which way a `migrate` run goes, for the words of its progress.
#[derive(Clone, Copy)]
pub(crate) enum Direction {
    /// `migrate`.
    Apply,
    /// `migrate --revert`.
    Revert,
}

/// One command's progress. The library calls its event handler from its
/// worker threads, hence the lock around the bar.
pub(crate) struct Progress {
    /// Whether steps draw a bar (stderr is a terminal and not `quiet`).
    terminal: bool,
    /// Whether nothing is printed at all (`--json`).
    quiet: bool,
    /// The current step's bar, on a terminal.
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress {
    /// Progress on stderr; `quiet` prints none of it.
    pub(crate) fn new(quiet: bool) -> Self {
        Progress {
            terminal: !quiet && std::io::stderr().is_terminal(),
            quiet,
            bar: Mutex::new(None),
        }
    }

    fn bar(&self) -> MutexGuard<'_, Option<ProgressBar>> {
        self.bar.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A step over `len` items begins, and the previous step's bar is
    /// cleared: on a terminal a bar drawn by the indicatif `template` with
    /// `message` as its `{msg}`, elsewhere the line `line`.
    pub(crate) fn step(&self, len: usize, template: &str, message: String, line: String) {
        let mut bar = self.bar();
        if let Some(b) = bar.take() {
            b.finish_and_clear();
        }
        if self.terminal {
            let b = ProgressBar::new(len as u64);
            b.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message(message);
            *bar = Some(b);
        } else if !self.quiet {
            eprintln!("{line}");
        }
    }

    /// One item of the step is done.
    pub(crate) fn done(&self) {
        if let Some(b) = self.bar().as_ref() {
            b.inc(1);
        }
    }

    /// One item of the step failed: counted on the bar, and `failed: …`
    /// printed.
    pub(crate) fn failed(&self, failure: &dyn Display) {
        match self.bar().as_ref() {
            Some(b) => {
                b.inc(1);
                b.println(format!("failed: {failure}"));
            }
            None if !self.quiet => eprintln!("failed: {failure}"),
            None => {}
        }
    }

    /// A line above the bar, or on its own.
    pub(crate) fn note(&self, line: &str) {
        match self.bar().as_ref() {
            Some(b) => b.println(line),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }

    /// The run is over: the last bar is cleared.
    pub(crate) fn finish(&self) {
        if let Some(b) = self.bar().take() {
            b.finish_and_clear();
        }
    }

    /// Shows one event of a `migrate` (`Apply`) or `migrate --revert`
    /// (`Revert`) run.
    pub(crate) fn migrate_event(&self, direction: Direction, event: Event) {
        match event {
            Event::StepStarted {
                scope,
                migrations,
                schemas,
            } => {
                let what = format!("{scope} {}", super::summarize(&migrations));
                let (template, line) = match direction {
                    Direction::Apply => (
                        "{msg} [{bar:30}] {pos}/{len} schemas {elapsed}",
                        format!("applying {what} to {schemas} schema(s)"),
                    ),
                    Direction::Revert => (
                        "reverting {msg} [{bar:30}] {pos}/{len} schemas {elapsed}",
                        format!("reverting {what} in {schemas} schema(s)"),
                    ),
                };
                self.step(schemas, template, what, line);
            }
            Event::SchemaDone { .. } => self.done(),
            Event::SchemaFailed(f) => self.failed(&f),
            Event::Waiting { schema } => {
                let holder = match direction {
                    Direction::Apply => "another migrate run",
                    Direction::Revert => "another run",
                };
                self.note(&format!(
                    "waiting: {holder} holds the lock of schema `{schema}`; continuing when it finishes"
                ));
            }
            _ => {}
        }
    }
}
