//! Hive-style partitions on disk: `DIR/metric=<m>/date=<YYYY-MM-DD>/part-<N>.<ext>`, as
//! `sccr export` writes them.
//!
//! The layout, for every Hive reader (pandas, pyarrow, DuckDB, Spark, Polars):
//! - **Partition keys in the path only.** `metric` and `date` are not stored in the files:
//!   readers add them from the path, each with the type it infers (`pyarrow.parquet` and
//!   pandas a dictionary or category, `pyarrow.dataset` a string, DuckDB a VARCHAR and a
//!   DATE), and a column stored in the files too would clash with that type. The files hold
//!   [`partition_schema`]'s columns: `time` (timestamp, ms, UTC), `device`, `value`, `seq`;
//!   or `bucket`, `device`, `count`, `sum`, `min`, `max`, `last`, `avg` for rollups.
//! - **Arrow files are the IPC file format** (`.arrow`: `pandas.read_feather`,
//!   `pyarrow.dataset(format="arrow")`); the API's downloads stay the IPC stream format.
//! - **Complete files only**: each file is written under a hidden temporary name (readers
//!   skip names starting with `.` or `_`) and renamed into place once finished.
//!
//! [`export_to_dir`] writes into a directory that holds no earlier part of the same
//! partitions; what a folder may hold before and after an export (the manifest, replacing
//! an earlier export) is the caller's policy (`sccr export`, which writes into a staging
//! directory with a `suffix` on every name, so that no glob such as DuckDB's
//! `**/*.parquet` takes a staged file for data, and moves the files into place at the end).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use telemetry::MetricId;

use super::{date_of_day, export_schema, BatchEncoder, ExportFormat, ExportQuery};
use crate::history::Resolution;
use crate::{Store, StoreError};

/// Rows most in one file before the next `part-N` of the partition starts.
pub const MAX_ROWS_PER_FILE: u64 = 10_000_000;

/// What [`export_to_dir`] has written so far (closed files' bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirExportSummary {
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
}

/// One file an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportedFile {
    /// Relative to the export's directory, `/`-separated:
    /// `metric=speed_kmh/date=2026-11-01/part-0.parquet`.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// What [`export_to_dir`] wrote: the totals and every file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirExport {
    pub summary: DirExportSummary,
    pub files: Vec<ExportedFile>,
}

/// The columns of the files of a partitioned export: [`export_schema`] less `metric`,
/// which is in the path (`metric=<m>`), as the UTC day is (`date=<YYYY-MM-DD>`).
pub fn partition_schema(resolution: Resolution) -> SchemaRef {
    let full = export_schema(resolution);
    let fields: Vec<_> =
        full.fields().iter().filter(|f| f.name() != "metric").map(|f| f.as_ref().clone()).collect();
    Arc::new(Schema::new(fields))
}

/// The indices of [`partition_schema`]'s columns in [`export_schema`].
fn kept_columns(resolution: Resolution) -> Vec<usize> {
    let full = export_schema(resolution);
    (0..full.fields().len()).filter(|&i| full.field(i).name() != "metric").collect()
}

/// Counts the bytes that pass.
struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Encode(format!("{}: {e}", path.display()))
}

struct OpenFile {
    key: (MetricId, i64),
    part: u64,
    tmp: PathBuf,
    path: PathBuf,
    rel: String,
    encoder: BatchEncoder<CountingWriter<std::io::BufWriter<std::fs::File>>>,
}

/// Where files go: the directory and a suffix of every file name.
#[derive(Clone)]
struct Target {
    dir: PathBuf,
    suffix: String,
    format: ExportFormat,
    schema: SchemaRef,
}

fn open_file(t: &Target, key: (MetricId, i64), part: u64) -> Result<OpenFile, StoreError> {
    let partition = format!("metric={}/date={}", key.0.as_str(), date_of_day(key.1));
    let part_dir = t.dir.join(&partition);
    std::fs::create_dir_all(&part_dir).map_err(|e| io_err(&part_dir, e))?;
    let name = format!("part-{part}.{}", t.format.extension());
    let path = part_dir.join(format!("{name}{}", t.suffix));
    if path.exists() {
        return Err(io_err(&path, "already exists; export into a directory of its own"));
    }
    // Hidden while incomplete: Hive-style readers skip names starting with '.'.
    let tmp = part_dir.join(format!(".{name}.tmp"));
    let file = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    let w = CountingWriter { inner: std::io::BufWriter::with_capacity(1 << 20, file), bytes: 0 };
    let encoder = BatchEncoder::new_file(t.format, t.schema.clone(), w)?;
    Ok(OpenFile { key, part, tmp, path, rel: format!("{partition}/{name}"), encoder })
}

fn close_file(f: OpenFile, out: &mut DirExport) -> Result<(), StoreError> {
    let rows = f.encoder.rows();
    let w = f.encoder.finish()?;
    let file = w.inner.into_inner().map_err(|e| io_err(&f.tmp, e.error()))?;
    file.sync_all().map_err(|e| io_err(&f.tmp, e))?;
    std::fs::rename(&f.tmp, &f.path).map_err(|e| io_err(&f.path, e))?;
    out.summary.files += 1;
    out.summary.bytes += w.bytes;
    out.files.push(ExportedFile { path: f.rel, rows, bytes: w.bytes });
    Ok(())
}

/// Export `q` into `dir/metric=<m>/date=<YYYY-MM-DD>/part-<N>.<ext><suffix>` (the layout
/// of the module doc; `suffix` is empty for the final names), one file open at a time;
/// `progress` is called after every batch with what is done so far (rows, files and bytes
/// of closed files). Runs the encoding on a blocking thread. The files listed in the
/// answer are named without `suffix`. A file that exists already is an error: `dir` must
/// not hold the partitions already. On an error the file being written is removed; closed
/// ones stay.
pub async fn export_to_dir(
    store: &Store,
    q: ExportQuery,
    format: ExportFormat,
    dir: &Path,
    suffix: &str,
    progress: impl FnMut(DirExportSummary) + Send + 'static,
) -> Result<DirExport, StoreError> {
    let resolution = q.resolution;
    let mut stream = store.export(q)?;
    let target = Target {
        dir: dir.to_path_buf(),
        suffix: suffix.to_owned(),
        format,
        schema: partition_schema(resolution),
    };
    let mut progress = progress;
    let task = tokio::task::spawn_blocking(move || {
        let kept = kept_columns(resolution);
        let mut out = DirExport::default();
        let mut open: Option<OpenFile> = None;
        let result = (|| {
            while let Some(chunk) = stream.blocking_next() {
                let chunk = chunk?;
                let key = (chunk.metric, chunk.day);
                let part = match &open {
                    Some(f) if f.key == key && f.encoder.rows() >= MAX_ROWS_PER_FILE => {
                        Some(f.part + 1)
                    }
                    Some(f) if f.key == key => None,
                    _ => Some(0),
                };
                if let Some(part) = part {
                    if let Some(f) = open.take() {
                        close_file(f, &mut out)?;
                    }
                    open = Some(open_file(&target, key, part)?);
                }
                let batch: RecordBatch = chunk
                    .batch
                    .project(&kept)
                    .map_err(|e| StoreError::Encode(format!("partition columns: {e}")))?;
                if let Some(f) = &mut open {
                    f.encoder.write(&batch)?;
                }
                out.summary.rows += batch.num_rows() as u64;
                progress(out.summary);
            }
            if let Some(f) = open.take() {
                close_file(f, &mut out)?;
            }
            progress(out.summary);
            Ok(())
        })();
        if let Some(f) = open {
            let _ = std::fs::remove_file(&f.tmp);
        }
        result.map(|()| out)
    });
    task.await.map_err(|e| StoreError::Encode(format!("export task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_files_leave_the_partition_keys_to_the_path() {
        let raw = partition_schema(Resolution::Raw);
        let names: Vec<&str> = raw.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["time", "device", "value", "seq"]);
        assert_eq!(kept_columns(Resolution::Raw), [0, 1, 3, 4]);
        let hourly = partition_schema(Resolution::Hour);
        let names: Vec<&str> = hourly.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["bucket", "device", "count", "sum", "min", "max", "last", "avg"]);
    }
}
