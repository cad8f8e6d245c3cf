//! `sccr export`: readings or rollups of a time range into Hive-style partitions
//! (`DIR/metric=<m>/date=<YYYY-MM-DD>/part-<N>.<ext>`), with progress on stderr. The work
//! is `store::export_to_dir`; this module parses arguments and reports.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use store::{DirExportSummary, ExportFormat, ExportQuery, Resolution, Store};
use telemetry::{DeviceId, EventTime, MetricId};

pub struct ExportArgs {
    pub from: String,
    pub to: String,
    pub metrics: Vec<String>,
    pub devices: Vec<String>,
    pub resolution: String,
    pub format: String,
    pub out: PathBuf,
}

/// Unix milliseconds or RFC 3339.
fn time(name: &str, v: &str) -> Result<EventTime> {
    let t = match v.parse::<i64>() {
        Ok(ms) => EventTime::from_millis(ms),
        Err(_) => EventTime::parse_rfc3339(v),
    };
    t.with_context(|| {
        format!("--{name} {v:?}: use Unix milliseconds or RFC 3339 (2025-11-23T00:00:00Z)")
    })
}

pub fn query(args: &ExportArgs) -> Result<(ExportQuery, ExportFormat)> {
    let resolution = Resolution::parse(&args.resolution)
        .with_context(|| format!("--resolution {:?}: use raw, 1m, 1h or 1d", args.resolution))?;
    let format = ExportFormat::parse(&args.format)
        .filter(|f| *f != ExportFormat::Json)
        .with_context(|| format!("--format {:?}: use parquet, csv or arrow", args.format))?;
    let mut q = ExportQuery::new(time("from", &args.from)?, time("to", &args.to)?, resolution);
    anyhow::ensure!(q.from < q.to, "--from must be before --to");
    for m in &args.metrics {
        q.metrics.push(m.parse::<MetricId>().with_context(|| format!("--metric {m:?}"))?);
    }
    for d in &args.devices {
        q.devices.push(DeviceId::parse(d).with_context(|| format!("--device {d:?}"))?);
    }
    Ok((q, format))
}

fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}

/// Progress on stderr: a bar redrawn in place on a terminal, a plain line every few
/// seconds otherwise (logs, CI).
struct Progress {
    start: Instant,
    last: Instant,
    expected: u64,
    tty: bool,
}

impl Progress {
    fn show(&mut self, s: DirExportSummary, done: bool) {
        let every = if self.tty { Duration::from_millis(200) } else { Duration::from_secs(5) };
        if !done && self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = human((s.rows as f64 / secs) as u64);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let total = self.expected.max(s.rows).max(1);
            let width = 30;
            let filled = (s.rows * width / total) as usize;
            let _ = write!(
                err,
                "\r[{}{}] {:>3}% {} / ~{} rows, {} files, {rate} rows/s ",
                "#".repeat(filled),
                ".".repeat(width as usize - filled),
                s.rows * 100 / total,
                human(s.rows),
                human(total),
                s.files,
            );
            if done {
                let _ = writeln!(err);
            }
        } else if !done {
            let _ = writeln!(
                err,
                "export: {} of ~{} rows, {} files, {rate} rows/s",
                s.rows, self.expected, s.files
            );
        }
    }
}

pub async fn run(store: &Store, args: ExportArgs) -> Result<()> {
    let (q, format) = query(&args)?;
    let expected = store.export_estimate(&q).await.unwrap_or(0);
    let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut progress = Progress { start, last: start, expected, tty };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let summary =
        store::export_to_dir(store, q, format, &args.out, move |s| progress.show(s, false)).await?;
    let mut done = Progress { start, last: start, expected, tty };
    done.show(summary, true);
    println!(
        "exported {} rows in {} files, {} bytes, {:.2} s ({})",
        summary.rows,
        summary.files,
        summary.bytes,
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
