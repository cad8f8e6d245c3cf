//! Progress of a long command on stderr: a bar redrawn in place on a terminal, a plain
//! line every few seconds otherwise (logs, CI). Shared by `sccr export` and `sccr import`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}

#[derive(Clone)]
pub struct Progress {
    verb: &'static str,
    start: Instant,
    last: Instant,
    expected: u64,
    tty: bool,
}

impl Progress {
    /// `verb` names the command in plain lines ("export", "import").
    pub fn new(verb: &'static str, expected: u64) -> Self {
        let now = Instant::now();
        let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        Self { verb, start: now, last: now, expected, tty }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// `rows` done so far, and a short detail ("12 files"); `done` ends the bar's line.
    pub fn show(&mut self, rows: u64, detail: &str, done: bool) {
        let every = if self.tty { Duration::from_millis(200) } else { Duration::from_secs(5) };
        if !done && self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = human((rows as f64 / secs) as u64);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let total = self.expected.max(rows).max(1);
            let width = 30;
            let filled = (rows * width / total) as usize;
            let _ = write!(
                err,
                "\r[{}{}] {:>3}% {} / ~{} rows, {detail}, {rate} rows/s ",
                "#".repeat(filled),
                ".".repeat(width as usize - filled),
                rows * 100 / total,
                human(rows),
                human(total),
            );
            if done {
                let _ = writeln!(err);
            }
        } else if !done {
            let _ = writeln!(
                err,
                "{}: {rows} of ~{} rows, {detail}, {rate} rows/s",
                self.verb, self.expected
            );
        }
    }
}
