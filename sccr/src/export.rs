//! `sccr export`: readings or rollups of a time range into a folder of Hive-style
//! partitions (`DIR/metric=<m>/date=<YYYY-MM-DD>/part-<N>.<ext>`, the layout of
//! `store::export_to_dir`: the partition keys are in the path only), with a manifest,
//! [`MANIFEST`], that says what the folder holds. Progress goes to stderr.
//!
//! A folder holds one export:
//! - a missing or empty `--out` is written;
//! - one holding an earlier export (its manifest) is refused, since exporting again would
//!   hold every row twice, unless `--replace`, which removes the files the earlier manifest
//!   lists and nothing else;
//! - one holding anything else (a file no manifest lists, a folder without a manifest) is
//!   refused, `--replace` or not: no file of someone else's is ever deleted.
//!
//! All or nothing: the export is written into a hidden staging directory inside the
//! folder ([`STAGING`]: Hive readers skip names starting with `.`, and the staged files'
//! names end in [`STAGED`], so that globs such as DuckDB's `**/*.parquet` skip them too;
//! created exclusively, it also keeps a second export out of the folder meanwhile). Only once every file is
//! complete is the earlier export removed and the new files renamed into place, the
//! manifest last, so a folder with a manifest holds a whole export. A failed export
//! leaves the folder as it was.

use std::path::{Path, PathBuf};

use crate::progress::Progress;
use anyhow::{bail, Context, Result};
use arrow_schema::DataType;
use store::{ExportFormat, ExportQuery, ExportedFile, Resolution, Store};
use telemetry::{DeviceId, EventTime, MetricId, SegmentId};

/// The manifest of an export folder; readers skip names starting with `_`.
pub const MANIFEST: &str = "_sccr_export.json";
/// Where an export is written before it is moved into place.
pub const STAGING: &str = ".sccr-export-staging";
/// The end of every staged file's name: no reader's glob (`**/*.parquet`) takes it for data.
const STAGED: &str = ".staged";
/// The version of the folder layout and manifest.
const LAYOUT_VERSION: u32 = 1;

/// What `sccr export` exports, and where.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Start (inclusive): Unix ms, RFC 3339, a UTC date (2026-11-01), now, now-7d or -7d.
    #[arg(long, allow_hyphen_values = true)]
    pub from: String,
    /// End (exclusive), in the forms of --from.
    #[arg(long, allow_hyphen_values = true)]
    pub to: String,
    /// Only this metric (repeatable); all when absent.
    #[arg(long = "metric")]
    pub metrics: Vec<String>,
    /// Only this device (repeatable); all when absent.
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Only the devices linked to this road segment (repeatable); all when absent.
    #[arg(long = "segment")]
    pub segments: Vec<String>,
    /// raw, 1m, 1h or 1d.
    #[arg(long, default_value = "raw")]
    pub resolution: String,
    /// parquet, csv or arrow (IPC file).
    #[arg(long, default_value = "parquet")]
    pub format: String,
    /// Output folder: missing or empty, or holding an earlier export with --replace.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the export the folder holds (only the files its manifest lists).
    #[arg(long)]
    pub replace: bool,
}

/// The query and format of `args`; relative times count from `now`.
pub fn query(args: &ExportArgs, now: EventTime) -> Result<(ExportQuery, ExportFormat)> {
    let time = |name: &str, v: &str| {
        EventTime::parse_spec(v, now).map_err(|e| anyhow::anyhow!("--{name}: {e}"))
    };
    let resolution = Resolution::parse(&args.resolution)
        .with_context(|| format!("--resolution {:?}: use raw, 1m, 1h or 1d", args.resolution))?;
    let format = ExportFormat::parse(&args.format)
        .filter(|f| *f != ExportFormat::Json)
        .with_context(|| format!("--format {:?}: use parquet, csv or arrow", args.format))?;
    let mut q = ExportQuery::new(time("from", &args.from)?, time("to", &args.to)?, resolution);
    anyhow::ensure!(q.from < q.to, "--from ({}) must be before --to ({})", q.from, q.to);
    for m in &args.metrics {
        q.metrics.push(m.parse::<MetricId>().with_context(|| format!("--metric {m:?}"))?);
    }
    for d in &args.devices {
        q.devices.push(DeviceId::parse(d).with_context(|| format!("--device {d:?}"))?);
    }
    for s in &args.segments {
        q.segments.push(SegmentId::parse(s).with_context(|| format!("--segment {s:?}"))?);
    }
    Ok((q, format))
}

/// The store an export reads, as the HTTP exports choose it: the read replica
/// (`[database] read_url`) when it is up and at most `max_read_lag` behind, else the
/// primary. Says which on stderr.
pub async fn read_store(config: &crate::config::Config, primary: &Store) -> Result<Store> {
    let Some(url) = &config.database.read_url else { return Ok(primary.clone()) };
    let reads = store::replica::Reads::with_replica(
        primary.clone(),
        url,
        config.database.max_read_lag,
        config.database.max_connections,
    )
    .context("database.read_url")?;
    reads.probe().await;
    let choice = reads.choose();
    use store::replica::ReadSource;
    match (choice.source, choice.lag) {
        (ReadSource::Replica, Some(lag)) => {
            eprintln!("reading from the read replica ({:.1} s behind)", lag.as_secs_f64());
        }
        (ReadSource::PrimaryReplicaDown, _) => {
            eprintln!("reading from the primary: the read replica does not answer");
        }
        (ReadSource::PrimaryReplicaLagging, _) => eprintln!(
            "reading from the primary: the read replica is more than {} s behind",
            config.database.max_read_lag.as_secs_f64()
        ),
        _ => {}
    }
    Ok(choice.store)
}

/// Refuse devices and road segments the store does not know: a typo would export nothing.
async fn check_subjects(store: &Store, q: &ExportQuery) -> Result<()> {
    if let Some(d) = store.unknown_devices(&q.devices).await?.first() {
        bail!("--device {d}: no such device in the registry");
    }
    if let Some(s) = store.unknown_segments(&q.segments).await?.first() {
        bail!("--segment {s}: no such road segment");
    }
    Ok(())
}

/// The manifest: what the folder holds and how it was asked for.
#[derive(Debug, serde::Serialize)]
struct Manifest<'a> {
    /// The layout version.
    sccr_export: u32,
    written_at: String,
    sccr_version: &'static str,
    query: ManifestQuery,
    format: &'static str,
    layout: String,
    /// In the path only, not in the files.
    partition_columns: [&'static str; 2],
    /// The columns of every file.
    columns: Vec<ManifestColumn>,
    rows: u64,
    bytes: u64,
    files: &'a [ExportedFile],
}

#[derive(Debug, serde::Serialize)]
struct ManifestQuery {
    from: String,
    to: String,
    resolution: &'static str,
    metrics: Vec<&'static str>,
    devices: Vec<String>,
    segments: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
struct ManifestColumn {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// What a later export reads of a manifest.
#[derive(Debug, serde::Deserialize)]
struct EarlierExport {
    sccr_export: u32,
    written_at: String,
    rows: u64,
    files: Vec<ExportedFile>,
}

fn type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Timestamp(..) => "timestamp[ms, UTC]",
        DataType::Utf8 => "string",
        DataType::Float64 => "float64",
        DataType::Int64 => "int64",
        _ => "other",
    }
}

fn manifest_json(
    q: &ExportQuery,
    format: ExportFormat,
    files: &[ExportedFile],
    rows: u64,
    bytes: u64,
) -> Result<String> {
    let columns = store::partition_schema(q.resolution)
        .fields()
        .iter()
        .map(|f| ManifestColumn { name: f.name().clone(), kind: type_name(f.data_type()) })
        .collect();
    let manifest = Manifest {
        sccr_export: LAYOUT_VERSION,
        written_at: EventTime::now().to_rfc3339(),
        sccr_version: env!("CARGO_PKG_VERSION"),
        query: ManifestQuery {
            from: q.from.to_rfc3339(),
            to: q.to.to_rfc3339(),
            resolution: q.resolution.as_str(),
            metrics: q.metrics.iter().map(|m| m.as_str()).collect(),
            devices: q.devices.iter().map(|d| d.as_str().to_owned()).collect(),
            segments: q.segments.iter().map(|s| s.as_str().to_owned()).collect(),
        },
        format: format.as_str(),
        layout: format!("metric=<metric>/date=<YYYY-MM-DD, UTC>/part-<N>.{}", format.extension()),
        partition_columns: ["metric", "date"],
        columns,
        rows,
        bytes,
        files,
    };
    Ok(serde_json::to_string_pretty(&manifest)? + "\n")
}

/// What `--out` holds before the export.
#[derive(Debug)]
enum Folder {
    /// Not there: it is created, and removed again if the export fails.
    Missing,
    Empty,
    /// An earlier export: its manifest, and its files that are there (relative paths).
    Export {
        earlier: EarlierExport,
        present: Vec<String>,
    },
}

/// A path of the layout: `metric=<m>`, `metric=<m>/date=<d>` or, with `file`,
/// `metric=<m>/date=<d>/part-<N>.<ext>`.
fn in_layout(rel: &str, file: bool) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    let named = |p: &str, key: &str| {
        p.strip_prefix(key).is_some_and(|v| !v.is_empty() && v != "." && v != "..")
    };
    let dirs_ok = |n: usize| {
        parts.first().is_some_and(|p| named(p, "metric="))
            && (n < 2 || parts.get(1).is_some_and(|p| named(p, "date=")))
    };
    match (file, parts.len()) {
        (false, n @ 1..=2) => dirs_ok(n),
        (true, 3) => {
            dirs_ok(2)
                && parts[2].strip_prefix("part-").and_then(|p| p.split_once('.')).is_some_and(
                    |(n, ext)| {
                        !n.is_empty()
                            && n.bytes().all(|b| b.is_ascii_digit())
                            && ["parquet", "csv", "arrow"].contains(&ext)
                    },
                )
        }
        _ => false,
    }
}

/// Every entry under `dir` as (relative `/`-separated path, is a directory), symbolic
/// links as files (never followed), [`STAGING`] left out.
fn entries(dir: &Path, rel: &str, out: &mut Vec<(String, bool)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if rel.is_empty() && name == STAGING {
            continue;
        }
        let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        out.push((path.clone(), is_dir));
        if is_dir {
            entries(&entry.path(), &path, out)?;
        }
    }
    Ok(())
}

/// `a, b, c (and 4 more)`.
fn some_of(paths: &[String]) -> String {
    let shown: Vec<&str> = paths.iter().take(5).map(String::as_str).collect();
    match paths.len() {
        n if n > 5 => format!("{} (and {} more)", shown.join(", "), n - 5),
        _ => shown.join(", "),
    }
}

fn inspect(out: &Path) -> Result<Folder> {
    match std::fs::metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Folder::Missing),
        Err(e) => return Err(e).with_context(|| format!("--out {}", out.display())),
        Ok(m) if !m.is_dir() => bail!("--out {}: not a directory", out.display()),
        Ok(_) => {}
    }
    let mut all = Vec::new();
    entries(out, "", &mut all)?;
    if all.is_empty() {
        return Ok(Folder::Empty);
    }
    let manifest = out.join(MANIFEST);
    if !all.iter().any(|(p, is_dir)| p == MANIFEST && !is_dir) {
        let names: Vec<String> = all.into_iter().map(|(p, _)| p).collect();
        bail!(
            "--out {}: the folder is not empty and holds no sccr export (no {MANIFEST}): {}. \
             Choose an empty or new folder; sccr export never deletes files it did not write",
            out.display(),
            some_of(&names)
        );
    }
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let earlier: EarlierExport = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not the manifest of an sccr export; nothing in {} is removed",
            manifest.display(),
            out.display()
        )
    })?;
    let listed: std::collections::HashSet<&str> =
        earlier.files.iter().map(|f| f.path.as_str()).filter(|p| in_layout(p, true)).collect();
    let foreign: Vec<String> = all
        .iter()
        .filter(|(p, is_dir)| {
            if *is_dir {
                !in_layout(p, false)
            } else {
                p != MANIFEST && !listed.contains(p.as_str())
            }
        })
        .map(|(p, _)| p.clone())
        .collect();
    if !foreign.is_empty() {
        bail!(
            "--out {}: besides an sccr export, the folder holds files it did not write: {}. \
             Move them away or choose another folder; sccr export never deletes them",
            out.display(),
            some_of(&foreign)
        );
    }
    let present =
        all.into_iter().filter(|(p, is_dir)| !is_dir && p != MANIFEST).map(|(p, _)| p).collect();
    Ok(Folder::Export { earlier, present })
}

/// Remove the earlier export: its listed files, its manifest, then the layout folders
/// left empty.
fn remove_earlier(out: &Path, present: &[String]) -> Result<()> {
    for rel in present {
        let path = out.join(rel);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let manifest = out.join(MANIFEST);
    std::fs::remove_file(&manifest).with_context(|| format!("removing {}", manifest.display()))?;
    let mut dirs = Vec::new();
    entries(out, "", &mut dirs)?;
    // Deepest first: the date folders, then the metric folders.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.matches('/').count()));
    for (rel, _) in dirs.iter().filter(|(p, is_dir)| *is_dir && in_layout(p, false)) {
        // Not empty (it cannot be, having passed `inspect`): left as it is.
        let _ = std::fs::remove_dir(out.join(rel));
    }
    Ok(())
}

/// Move the finished export from `staging` into `out`, the manifest last.
fn move_into_place(
    out: &Path,
    staging: &Path,
    files: &[ExportedFile],
    manifest: &str,
) -> Result<()> {
    for f in files {
        let (from, to) = (staging.join(format!("{}{STAGED}", f.path)), out.join(&f.path));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::rename(&from, &to).with_context(|| format!("moving into {}", to.display()))?;
    }
    let staged = staging.join(MANIFEST);
    std::fs::File::create(&staged)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, manifest.as_bytes())?;
            file.sync_all()
        })
        .with_context(|| format!("writing {}", staged.display()))?;
    std::fs::rename(&staged, out.join(MANIFEST))
        .with_context(|| format!("moving {MANIFEST} into {}", out.display()))?;
    // Make the renames durable; a failure here loses nothing already written.
    let _ = std::fs::File::open(out).and_then(|d| d.sync_all());
    Ok(())
}

pub async fn run(store: &Store, args: ExportArgs) -> Result<()> {
    let (q, format) = query(&args, EventTime::now())?;
    check_subjects(store, &q).await?;
    let out = &args.out;
    let folder = inspect(out)?;
    if let Folder::Export { earlier, .. } = &folder {
        if !args.replace {
            bail!(
                "--out {}: the folder already holds an sccr export ({} rows in {} files, written \
                 {}); exporting into it again would hold every row twice. Pass --replace to \
                 replace it, or choose another folder",
                out.display(),
                earlier.rows,
                earlier.files.len(),
                earlier.written_at
            );
        }
        anyhow::ensure!(
            earlier.sccr_export <= LAYOUT_VERSION,
            "--out {}: the export there has layout version {}, newer than this sccr ({LAYOUT_VERSION}); nothing is removed",
            out.display(),
            earlier.sccr_export
        );
    }
    let created = matches!(folder, Folder::Missing);
    if created {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    let staging = out.join(STAGING);
    if let Err(e) = std::fs::create_dir(&staging) {
        if created {
            let _ = std::fs::remove_dir(out);
        }
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            bail!(
                "{} exists: another sccr export is writing into {}, or one was stopped before \
                 it finished; remove that folder if no export is running",
                staging.display(),
                out.display()
            );
        }
        return Err(e).with_context(|| format!("creating {}", staging.display()));
    }
    let result = write(store, &q, format, out, &staging, args.replace).await;
    let _ = std::fs::remove_dir_all(&staging);
    if result.is_err() && created {
        let _ = std::fs::remove_dir(out);
    }
    result
}

/// Export into `staging`, then replace what `out` holds with it.
async fn write(
    store: &Store,
    q: &ExportQuery,
    format: ExportFormat,
    out: &Path,
    staging: &Path,
    replace: bool,
) -> Result<()> {
    let expected = store.export_estimate(q).await.unwrap_or(0);
    let mut progress = Progress::new("export", expected);
    let mut live = progress.clone();
    let done = store::export_to_dir(store, q.clone(), format, staging, STAGED, move |s| {
        live.show(s.rows, &format!("{} files", s.files), false)
    })
    .await?;
    let summary = done.summary;
    progress.show(summary.rows, &format!("{} files", summary.files), true);
    let manifest = manifest_json(q, format, &done.files, summary.rows, summary.bytes)?;
    // Looked at again: the folder may have changed during a long export.
    let replaced = match inspect(out)? {
        Folder::Export { earlier, present } if replace => {
            remove_earlier(out, &present)?;
            Some(earlier.rows)
        }
        Folder::Export { .. } => {
            bail!("--out {}: another export appeared meanwhile", out.display())
        }
        Folder::Missing | Folder::Empty => None,
    };
    move_into_place(out, staging, &done.files, &manifest)?;
    println!(
        "exported {} rows in {} files, {} bytes, {:.2} s ({}){}",
        summary.rows,
        summary.files,
        summary.bytes,
        progress.elapsed().as_secs_f64(),
        out.display(),
        replaced.map_or(String::new(), |rows| format!("; replaced an export of {rows} rows")),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_the_layout_are_an_exports() {
        for ok in ["metric=speed_kmh/date=2026-11-01/part-0.parquet", "metric=x/date=y/part-12.csv"]
        {
            assert!(in_layout(ok, true), "{ok}");
        }
        for bad in [
            "../etc/passwd",
            "metric=x/../../etc/part-0.csv",
            "metric=x/date=../part-0.csv",
            "metric=x/date=y/part-0.parquet/x",
            "metric=x/date=y/notes.txt",
            "metric=x/date=y/part-.csv",
            "metric=x/date=y/part-1.exe",
            "/metric=x/date=y/part-0.csv",
            "metric=/date=y/part-0.csv",
        ] {
            assert!(!in_layout(bad, true), "{bad}");
        }
        assert!(in_layout("metric=x", false) && in_layout("metric=x/date=y", false));
        assert!(!in_layout("notes", false) && !in_layout("metric=x/date=y/z", false));
    }

    #[test]
    fn relative_and_plain_dates_are_read_as_the_api_reads_them() {
        let args = ExportArgs {
            from: "2026-11-01".into(),
            to: "now".into(),
            metrics: vec![],
            devices: vec![],
            segments: vec!["viale-strozzi".into()],
            resolution: "1h".into(),
            format: "csv".into(),
            out: PathBuf::from("/x"),
            replace: false,
        };
        let now = EventTime(1_793_491_200_000 + 86_400_000);
        let (q, format) = query(&args, now).unwrap();
        assert_eq!((q.from, q.to, format), (EventTime(1_793_491_200_000), now, ExportFormat::Csv));
        assert_eq!(q.segments[0].as_str(), "viale-strozzi");
        let bad = ExportArgs { from: "yesterday".into(), ..args };
        let e = query(&bad, now).unwrap_err().to_string();
        assert!(
            e.starts_with("--from: \"yesterday\" is not a time") && e.contains("now-7d"),
            "{e}"
        );
    }
}
