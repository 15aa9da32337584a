//! How commands print: aligned tables and plain lines for people, JSON for
//! scripts (`--json`), and progress on stderr for long operations (a bar
//! on a terminal, a line every second otherwise).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Prints `value` as indented JSON on stdout.
pub(super) fn json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(err) => eprintln!("bgtasks: could not write JSON: {err}"),
    }
}

/// A table printed with its columns aligned.
pub(super) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(super) fn print(&self) {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let text: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            println!("{}", text.join("  ").trim_end());
        };
        line(self.headers.clone());
        for row in &self.rows {
            line(row.iter().map(String::as_str).collect());
        }
    }
}

/// A time as people read it in a terminal: UTC to the second.
pub(super) fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An optional time, or a dash.
pub(super) fn maybe_time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), time)
}

/// The last non-empty line of an error (a traceback's conclusion), at most
/// `max` characters.
pub(super) fn error_line(error: &str, max: usize) -> String {
    let line = error
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default()
        .trim();
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// Progress of a long operation on stderr: a bar when stderr is a
/// terminal, otherwise a plain line at most once a second (and at the end).
pub(super) struct Progress {
    label: &'static str,
    total: Option<u64>,
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
    done: u64,
}

impl Progress {
    /// Progress towards `total` (unknown when `None`), silent with `quiet`
    /// (JSON output keeps stderr for errors only).
    pub(super) fn new(label: &'static str, total: Option<u64>, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = match total {
                Some(total) => indicatif::ProgressBar::new(total).with_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:40}] {pos}/{len} ({elapsed})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
                None => indicatif::ProgressBar::new_spinner(),
            };
            bar.set_message(label);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            label,
            total,
            bar,
            last_line: Instant::now(),
            // Quiet progress prints nothing at all.
            done: if quiet { u64::MAX } else { 0 },
        }
    }

    /// `done` units are finished.
    pub(super) fn set(&mut self, done: u64) {
        if self.done == u64::MAX {
            return;
        }
        self.done = done;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if self.last_line.elapsed() >= Duration::from_secs(1) {
            self.last_line = Instant::now();
            self.line();
        }
    }

    /// Ends the progress display.
    pub(super) fn finish(self) {
        if self.done == u64::MAX {
            return;
        }
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => self.line(),
        }
    }

    fn line(&self) {
        match self.total {
            Some(total) => eprintln!("{}: {}/{total}", self.label, self.done),
            None => eprintln!("{}: {}", self.label, self.done),
        }
    }
}
