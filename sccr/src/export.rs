//! `sccr export`: readings or rollups of a time range into Hive-style partitions
//! (`DIR/metric=<m>/date=<YYYY-MM-DD>/part-<N>.<ext>`), with progress on stderr. The work
//! is `store::export_to_dir`; this module parses arguments and reports.

use std::path::PathBuf;

use crate::progress::Progress;
use anyhow::{Context, Result};
use store::{ExportFormat, ExportQuery, Resolution, Store};
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
    EventTime::parse_ms_or_rfc3339(v).with_context(|| {
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

pub async fn run(store: &Store, args: ExportArgs) -> Result<()> {
    let (q, format) = query(&args)?;
    let expected = store.export_estimate(&q).await.unwrap_or(0);
    let mut progress = Progress::new("export", expected);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut live = progress.clone();
    let summary = store::export_to_dir(store, q, format, &args.out, move |s| {
        live.show(s.rows, &format!("{} files", s.files), false)
    })
    .await?;
    progress.show(summary.rows, &format!("{} files", summary.files), true);
    println!(
        "exported {} rows in {} files, {} bytes, {:.2} s ({})",
        summary.rows,
        summary.files,
        summary.bytes,
        progress.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
