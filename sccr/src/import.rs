//! `sccr import`: historical readings from files (the columns of `sccr export` at raw
//! resolution: `time, device, metric, value[, seq]`) through the same validation, dedupe
//! and rollups as live telemetry. Files are Parquet, CSV or Arrow IPC (file or stream
//! format), or directories of them (an export's Hive-style tree, whose files leave
//! `metric` to their `metric=<m>` folder). Readings already stored are skipped by the store's
//! dedupe key, so importing a file again changes nothing; readings older than the raw
//! retention horizon are refused by the store (`older_than_retention`), as from MQTT.
//!
//! Rows that cannot become a reading are counted per reason and the first ones are
//! printed with their file and row; the rest of the file is imported.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use store::{Batch, BatchOutcome, Store};
use telemetry::{DeviceId, EventTime, MetricId, Reading, Seq, ValidationConfig, Validator};

use crate::progress::{human, Progress};

/// Readings per write: one transaction each, as the live writer's batches.
pub const BATCH: usize = 10_000;
/// Refused rows printed in full; the rest are only counted.
const SHOWN_ERRORS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Parquet,
    Csv,
    Arrow,
}

impl Format {
    fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "parquet" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            "arrow" | "arrows" | "ipc" => Some(Format::Arrow),
            _ => None,
        }
    }
}

pub struct ImportArgs {
    pub paths: Vec<PathBuf>,
    /// `retention.raw`: older readings are refused, as live ones are.
    pub raw_retention: Option<Duration>,
    /// Register devices not in the registry (the `ingest.unknown_devices` policy).
    pub register_unknown: bool,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub files: u64,
    pub rows: u64,
    pub inserted: u64,
    pub duplicates: u64,
    pub older_than_retention: u64,
    /// Rows refused before the store, by reason.
    pub refused: BTreeMap<&'static str, u64>,
}

/// The files to read, in a stable order: each path, or the supported files under it.
fn files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Format)>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found).with_context(|| format!("reading directory {}", p.display()))?;
            found.sort();
            out.extend(found.into_iter().filter_map(|f| Format::of(&f).map(|k| (f, k))));
        } else {
            let Some(format) = Format::of(p) else {
                bail!("{}: not a .parquet, .csv or .arrow file", p.display());
            };
            out.push((p.clone(), format));
        }
    }
    if out.is_empty() {
        bail!("no .parquet, .csv or .arrow files in {paths:?}");
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Rows in a file, for the progress bar (CSV: lines less the header).
fn rows_in(path: &Path, format: Format) -> u64 {
    match format {
        Format::Parquet => File::open(path)
            .ok()
            .and_then(|f| parquet::file::reader::SerializedFileReader::new(f).ok())
            .map_or(0, |r| {
                use parquet::file::reader::FileReader;
                r.metadata().file_metadata().num_rows().max(0) as u64
            }),
        Format::Csv => std::fs::read(path)
            .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count().saturating_sub(1) as u64),
        Format::Arrow => 0,
    }
}

/// The write path of historical readings, shared by `sccr import` and the demo's
/// back-fill: each reading is checked as live telemetry is (ranges, whole numbers, future
/// skew; no age limit but the raw retention), unknown devices are refused or registered
/// per `ingest.unknown_devices`, and the readings are written in batches through
/// [`Store::write_batch`] (dedupe, dead letters) with their rollups merged after each.
/// Readings reach the store only: the stream and its alert engine never see them.
pub struct Importer<'a> {
    store: &'a Store,
    validator: Validator,
    now: EventTime,
    /// The oldest time accepted: now less `retention.raw`.
    oldest: Option<EventTime>,
    known: HashSet<DeviceId>,
    register_unknown: bool,
    batch: Batch,
    summary: ImportSummary,
    shown: usize,
}

/// One row as read from any format.
struct Row<'r> {
    time: Result<i64, String>,
    device: Option<&'r str>,
    metric: Option<&'r str>,
    value: Result<f64, String>,
    seq: Result<Option<i64>, String>,
}

impl<'a> Importer<'a> {
    /// An importer into `store`; `raw_retention` is `retention.raw`, `register_unknown`
    /// the `ingest.unknown_devices = "auto_register"` policy.
    pub async fn new(
        store: &'a Store,
        raw_retention: Option<Duration>,
        register_unknown: bool,
    ) -> Result<Self> {
        // History is what is imported: no age limit but the raw retention (checked in
        // `push`); ranges, whole numbers and the future skew are checked as for live
        // telemetry.
        let validator = Validator::new(ValidationConfig {
            max_past_age: Duration::from_secs(1_000 * 365 * 86_400),
            ..ValidationConfig::default()
        });
        let known = store.devices().await.context("reading the device registry")?;
        let now = EventTime::now();
        Ok(Self {
            store,
            validator,
            now,
            oldest: raw_retention
                .map(|keep| EventTime(now.millis().saturating_sub(keep.as_millis() as i64))),
            known: known.into_iter().map(|d| d.id).collect(),
            register_unknown,
            batch: Batch::default(),
            summary: ImportSummary::default(),
            shown: 0,
        })
    }

    /// What was imported so far (`rows` counts the readings pushed).
    pub fn summary(&self) -> &ImportSummary {
        &self.summary
    }

    /// Readings waiting for the next write.
    pub fn pending(&self) -> usize {
        self.batch.readings.len()
    }

    fn refuse(&mut self, reason: &'static str, at: &str, detail: String) {
        *self.summary.refused.entry(reason).or_default() += 1;
        if self.shown < SHOWN_ERRORS {
            self.shown += 1;
            eprintln!("{at}: {reason}: {detail}");
        } else if self.shown == SHOWN_ERRORS {
            self.shown += 1;
            eprintln!("(further refused rows are only counted)");
        }
    }

    fn row(&mut self, row: Row<'_>, at: &dyn Fn() -> String) {
        self.summary.rows += 1;
        let time = match row.time {
            Ok(ms) => match EventTime::from_millis(ms) {
                Ok(t) => t,
                Err(e) => return self.refuse("bad_time", &at(), e.to_string()),
            },
            Err(e) => return self.refuse("bad_time", &at(), e),
        };
        let device = match row.device.map(DeviceId::parse) {
            Some(Ok(d)) => d,
            Some(Err(e)) => return self.refuse("bad_device", &at(), e.to_string()),
            None => return self.refuse("bad_device", &at(), "no device".into()),
        };
        let metric = match row.metric.map(str::parse::<MetricId>) {
            Some(Ok(m)) => m,
            Some(Err(e)) => return self.refuse("unknown_metric", &at(), e.to_string()),
            None => return self.refuse("unknown_metric", &at(), "no metric".into()),
        };
        let value = match row.value {
            Ok(v) => v,
            Err(e) => return self.refuse("bad_value", &at(), e),
        };
        let seq = match row.seq {
            Ok(None) => None,
            Ok(Some(s)) if s >= 0 => Some(Seq(s as u64)),
            Ok(Some(s)) => return self.refuse("bad_seq", &at(), format!("seq {s} is negative")),
            Err(e) => return self.refuse("bad_seq", &at(), e),
        };
        self.check(Reading { device, metric, time, value, seq }, at);
    }

    /// One reading (already counted in `rows`) through the checks into the batch; `at`
    /// names it in the message of a refusal.
    fn check(&mut self, reading: Reading, at: &dyn Fn() -> String) {
        if let Some(oldest) = self.oldest.filter(|&o| reading.time < o) {
            let detail =
                format!("{} is older than retention.raw allows (before {oldest})", reading.time);
            return self.refuse(store::OLDER_THAN_RETENTION, &at(), detail);
        }
        if let Err(e) = self.validator.check_reading(&reading, self.now) {
            return self.refuse(e.code(), &at(), e.to_string());
        }
        if !self.known.contains(&reading.device) {
            if !self.register_unknown {
                let detail = format!("device {} is not registered", reading.device);
                return self.refuse("unknown_device", &at(), detail);
            }
            self.known.insert(reading.device.clone());
            self.batch.new_devices.push(reading.device.clone());
        }
        self.batch.readings.push(reading);
    }

    /// One reading into the batch, checked as a row of a file is; `at` names it in the
    /// message of a refusal. Call [`Importer::flush_if_full`] or [`Importer::flush`] to write.
    pub fn push(&mut self, reading: Reading, at: &dyn Fn() -> String) {
        self.summary.rows += 1;
        self.check(reading, at);
    }

    /// Write the batch once it is full; whether it was.
    pub async fn flush_if_full(&mut self) -> Result<bool> {
        if self.batch.readings.len() < BATCH {
            return Ok(false);
        }
        self.flush().await?;
        Ok(true)
    }

    /// Write what the batch holds, in one transaction, and merge its rollups.
    pub async fn flush(&mut self) -> Result<()> {
        if self.batch.readings.is_empty() && self.batch.new_devices.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let out: BatchOutcome = self.store.write_batch(&batch).await.context("writing readings")?;
        self.store.catch_up_rollups().await.context("merging rollups")?;
        self.summary.inserted += out.inserted;
        // Readings refused by the store are neither inserted nor duplicates.
        self.summary.duplicates += out.duplicates;
        self.summary.older_than_retention += out.older_than_retention;
        Ok(())
    }
}

/// The metric of a file without a `metric` column: its `metric=<m>` folder (the Hive
/// partition of an export), if it is in one.
fn metric_of_path(file: &Path) -> Option<String> {
    file.ancestors()
        .filter_map(|p| p.file_name()?.to_str()?.strip_prefix("metric=").map(str::to_owned))
        .next()
}

const COLUMNS: &str = "time, device, metric (or a metric=<m> folder), value[, seq]";

/// A column of a record batch by name, cast to `to`; `None` when absent.
fn column(
    batch: &RecordBatch,
    name: &str,
    to: &DataType,
) -> Result<Option<std::sync::Arc<dyn Array>>> {
    let Ok(index) = batch.schema().index_of(name) else { return Ok(None) };
    let col = batch.column(index);
    let cast = match (col.data_type(), to) {
        // Plain integers in a time column are Unix milliseconds.
        (DataType::Int64 | DataType::Int32 | DataType::UInt64, DataType::Timestamp(..)) => {
            let ms = arrow_cast::cast(col, &DataType::Int64)?;
            arrow_cast::cast(&ms, &DataType::Timestamp(TimeUnit::Millisecond, None))?
        }
        _ => arrow_cast::cast(col, to).with_context(|| {
            format!("column {name:?} ({}) cannot be read as {to}", col.data_type())
        })?,
    };
    Ok(Some(cast))
}

async fn import_batches(
    importer: &mut Importer<'_>,
    file: &Path,
    batches: impl Iterator<Item = Result<RecordBatch, arrow_schema::ArrowError>>,
    progress: &mut Progress,
) -> Result<()> {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    let path_metric = metric_of_path(file);
    let mut offset = 0usize;
    for batch in batches {
        let batch = batch.with_context(|| format!("reading {}", file.display()))?;
        let need = |c: Option<_>, name: &str| {
            c.with_context(|| format!("{}: no {name:?} column ({COLUMNS})", file.display()))
        };
        let time = need(column(&batch, "time", &ts)?, "time")?;
        let device = need(column(&batch, "device", &DataType::Utf8)?, "device")?;
        let metric =
            match (column(&batch, "metric", &DataType::Utf8)?, &path_metric) {
                (Some(m), _) => m,
                (None, Some(m)) => std::sync::Arc::new(arrow_array::StringArray::from(vec![
                m.as_str();
                batch.num_rows()
            ])),
                (None, None) => need(None, "metric")?,
            };
        let value = need(column(&batch, "value", &DataType::Float64)?, "value")?;
        let seq = column(&batch, "seq", &DataType::Int64)?;
        let time = time.as_primitive::<TimestampMillisecondType>();
        let (device, metric) = (device.as_string::<i32>(), metric.as_string::<i32>());
        let value = value.as_primitive::<Float64Type>();
        let seq = seq.as_ref().map(|s| s.as_primitive::<Int64Type>());
        for i in 0..batch.num_rows() {
            let row = Row {
                time: if time.is_null(i) { Err("no time".into()) } else { Ok(time.value(i)) },
                device: (!device.is_null(i)).then(|| device.value(i)),
                metric: (!metric.is_null(i)).then(|| metric.value(i)),
                value: if value.is_null(i) { Err("no value".into()) } else { Ok(value.value(i)) },
                seq: Ok(seq.and_then(|s| (!s.is_null(i)).then(|| s.value(i)))),
            };
            importer.row(row, &|| format!("{} row {}", file.display(), offset + i + 1));
        }
        offset += batch.num_rows();
        importer.flush_if_full().await?;
        progress.show(importer.summary.rows, &format!("{} files", importer.summary.files), false);
    }
    Ok(())
}

async fn import_csv(
    importer: &mut Importer<'_>,
    file: &Path,
    progress: &mut Progress,
) -> Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(file)
        .with_context(|| format!("opening {}", file.display()))?;
    let headers =
        reader.headers().with_context(|| format!("{}: reading the header", file.display()))?;
    let index = |name: &str| headers.iter().position(|h| h == name);
    let need = |name: &str| {
        index(name).with_context(|| {
            format!("{}: no {name:?} column in the header ({COLUMNS})", file.display())
        })
    };
    let path_metric = metric_of_path(file);
    let m = match (index("metric"), &path_metric) {
        (Some(m), _) => Some(m),
        (None, Some(_)) => None,
        (None, None) => Some(need("metric")?),
    };
    let (t, d, v) = (need("time")?, need("device")?, need("value")?);
    let s = index("seq");
    let mut record = csv::StringRecord::new();
    let mut line = 1u64;
    loop {
        line += 1;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                importer.summary.rows += 1;
                importer.refuse(
                    "bad_csv",
                    &format!("{} line {line}", file.display()),
                    e.to_string(),
                );
                continue;
            }
        }
        let cell = |i: usize| record.get(i).filter(|c| !c.is_empty());
        let row = Row {
            time: cell(t).map_or(Err("no time".into()), |c| {
                EventTime::parse_ms_or_rfc3339(c).map(|t| t.millis()).map_err(|e| e.to_string())
            }),
            device: cell(d),
            metric: m.map_or(path_metric.as_deref(), cell),
            value: cell(v).map_or(Err("no value".into()), |c| {
                c.parse::<f64>().map_err(|_| format!("{c:?} is not a number"))
            }),
            seq: match s.and_then(cell) {
                None => Ok(None),
                Some(c) => {
                    c.parse::<i64>().map(Some).map_err(|_| format!("{c:?} is not an integer"))
                }
            },
        };
        importer.row(row, &|| format!("{} line {line}", file.display()));
        if importer.flush_if_full().await? {
            progress.show(
                importer.summary.rows,
                &format!("{} files", importer.summary.files),
                false,
            );
        }
    }
    Ok(())
}

pub async fn run(store: &Store, args: ImportArgs) -> Result<ImportSummary> {
    let files = files(&args.paths)?;
    let expected = files.iter().map(|(p, f)| rows_in(p, *f)).sum();
    let mut progress = Progress::new("import", expected);
    let mut importer = Importer::new(store, args.raw_retention, args.register_unknown).await?;
    for (path, format) in &files {
        importer.summary.files += 1;
        match format {
            Format::Csv => import_csv(&mut importer, path, &mut progress).await?,
            Format::Parquet => {
                let file =
                    File::open(path).with_context(|| format!("opening {}", path.display()))?;
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .and_then(|b| b.with_batch_size(8_192).build())
                        .with_context(|| format!("{}: not a Parquet file", path.display()))?;
                import_batches(&mut importer, path, reader, &mut progress).await?;
            }
            Format::Arrow => {
                let mut file =
                    File::open(path).with_context(|| format!("opening {}", path.display()))?;
                // The IPC file format (what `sccr export` writes) opens with "ARROW1"; the
                // stream format (API downloads) with a message.
                let mut magic = [0u8; 6];
                let is_file =
                    std::io::Read::read_exact(&mut file, &mut magic).is_ok() && &magic == b"ARROW1";
                std::io::Seek::rewind(&mut file)
                    .with_context(|| format!("reading {}", path.display()))?;
                if is_file {
                    let reader = arrow_ipc::reader::FileReader::try_new(file, None)
                        .with_context(|| format!("{}: not an Arrow IPC file", path.display()))?;
                    import_batches(&mut importer, path, reader, &mut progress).await?;
                } else {
                    let reader = arrow_ipc::reader::StreamReader::try_new(
                        std::io::BufReader::new(file),
                        None,
                    )
                    .with_context(|| format!("{}: not an Arrow IPC stream", path.display()))?;
                    import_batches(&mut importer, path, reader, &mut progress).await?;
                }
            }
        }
    }
    importer.flush().await?;
    let s = importer.summary;
    progress.show(s.rows, &format!("{} files", s.files), true);
    let refused: u64 = s.refused.values().sum();
    println!(
        "imported {} rows from {} files in {:.2} s: {} new readings, {} already stored, {} older than the raw retention, {} refused",
        s.rows,
        s.files,
        progress.elapsed().as_secs_f64(),
        s.inserted,
        s.duplicates,
        s.older_than_retention,
        refused,
    );
    for (reason, n) in &s.refused {
        println!("  refused {reason}: {}", human(*n));
    }
    Ok(s)
}
