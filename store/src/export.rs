//! Bulk export: readings or rollups of a time range streamed out of the database in
//! bounded Arrow record batches, and the encoders that write them as CSV, JSON, Arrow IPC
//! stream or Parquet to any `std::io::Write` (`export/encode.rs`, which touches no
//! database).
//!
//! Invariants kept here:
//! - **Bounded memory**: rows are read with a streaming `fetch` (PostgreSQL sends rows as
//!   the reader polls; nothing collects the result set), folded into batches of at most
//!   [`ExportQuery::batch_rows`] rows, and handed over a channel of [`EXPORT_QUEUE`]
//!   batches; encoders hold at most one Parquet row group ([`PARQUET_ROW_GROUP_ROWS`]).
//!   Memory therefore does not grow with the number of rows exported.
//! - **Order and grouping**: rows come ordered by (UTC day, metric, time, device), and
//!   every [`ExportChunk`] holds rows of one (metric, day) only, so each Hive partition
//!   `metric=…/date=…` is one contiguous run and [`export_to_dir`] keeps one file open.
//! - **Complete files only**: [`export_to_dir`] writes each file under a hidden temporary
//!   name and renames it into place once the encoder finished it. Its layout (partition
//!   keys in the path only, Arrow as the IPC file format) is in `dir`'s doc.
//!
//! Each backend reads the rows in that order into the shared chunk builder
//! (`pg/export.rs`, `sqlite/export.rs`). Raw readings on PostgreSQL are read one UTC day
//! at a time (the `readings` partitions and TimescaleDB chunks are days), so the server
//! sorts a day, not the whole range.

use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use telemetry::{DeviceId, EventTime, MetricId, SegmentId};
use tokio::sync::mpsc;

use crate::history::{Resolution, DAY_MS};
use crate::{Store, StoreError};

mod dir;
mod encode;
pub use dir::{
    export_to_dir, partition_schema, DirExport, DirExportSummary, ExportedFile, MAX_ROWS_PER_FILE,
};
pub use encode::{date_of_day, write_time, BatchEncoder};

/// Rows per record batch unless the query says otherwise.
pub const DEFAULT_BATCH_ROWS: usize = 65_536;
/// Batches queued between the database reader and the encoder.
pub const EXPORT_QUEUE: usize = 2;
/// Rows per Parquet row group: the most a Parquet encoder buffers.
pub const PARQUET_ROW_GROUP_ROWS: usize = 131_072;

/// How exported rows are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    /// A JSON array of one object per row.
    Json,
    /// Arrow IPC streaming format.
    Arrow,
    Parquet,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csv" => Some(ExportFormat::Csv),
            "json" => Some(ExportFormat::Json),
            "arrow" => Some(ExportFormat::Arrow),
            "parquet" => Some(ExportFormat::Parquet),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
            ExportFormat::Arrow => "arrow",
            ExportFormat::Parquet => "parquet",
        }
    }

    /// File name extension.
    pub fn extension(self) -> &'static str {
        self.as_str()
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Json => "application/json",
            ExportFormat::Arrow => "application/vnd.apache.arrow.stream",
            ExportFormat::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportQuery {
    /// Inclusive start (reading time, or bucket start for rollups).
    pub from: EventTime,
    /// Exclusive end.
    pub to: EventTime,
    pub resolution: Resolution,
    /// Only these metrics; empty: all.
    pub metrics: Vec<MetricId>,
    /// Only these devices; empty: all.
    pub devices: Vec<DeviceId>,
    /// Only the devices linked to these road segments when the export runs; empty: all.
    pub segments: Vec<SegmentId>,
    /// Most rows per record batch.
    pub batch_rows: usize,
}

impl ExportQuery {
    pub fn new(from: EventTime, to: EventTime, resolution: Resolution) -> Self {
        Self {
            from,
            to,
            resolution,
            metrics: Vec::new(),
            devices: Vec::new(),
            segments: Vec::new(),
            batch_rows: DEFAULT_BATCH_ROWS,
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.from >= self.to {
            return Err(StoreError::InvalidQuery {
                param: "from",
                message: "from must be before to".into(),
            });
        }
        Ok(())
    }

    /// The filters as the backends bind them: `None` where the list is empty (no filter).
    pub(crate) fn metric_names(&self) -> Option<Vec<String>> {
        (!self.metrics.is_empty())
            .then(|| self.metrics.iter().map(|m| m.as_str().to_owned()).collect())
    }

    pub(crate) fn device_names(&self) -> Option<Vec<String>> {
        (!self.devices.is_empty())
            .then(|| self.devices.iter().map(|d| d.as_str().to_owned()).collect())
    }

    pub(crate) fn segment_names(&self) -> Option<Vec<String>> {
        (!self.segments.is_empty())
            .then(|| self.segments.iter().map(|s| s.as_str().to_owned()).collect())
    }
}

/// Columns of an export: `time, device, metric, value, seq` for raw readings;
/// `bucket, device, metric, count, sum, min, max, last, avg` for rollups. Times are
/// milliseconds, UTC.
pub fn export_schema(resolution: Resolution) -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let fields = match resolution {
        Resolution::Raw => vec![
            Field::new("time", ts, false),
            Field::new("device", DataType::Utf8, false),
            Field::new("metric", DataType::Utf8, false),
            Field::new("value", DataType::Float64, false),
            Field::new("seq", DataType::Int64, true),
        ],
        _ => vec![
            Field::new("bucket", ts, false),
            Field::new("device", DataType::Utf8, false),
            Field::new("metric", DataType::Utf8, false),
            Field::new("count", DataType::Int64, false),
            Field::new("sum", DataType::Float64, false),
            Field::new("min", DataType::Float64, false),
            Field::new("max", DataType::Float64, false),
            Field::new("last", DataType::Float64, false),
            Field::new("avg", DataType::Float64, false),
        ],
    };
    Arc::new(Schema::new(fields))
}

/// Rows of one (metric, UTC day).
#[derive(Debug, Clone)]
pub struct ExportChunk {
    pub metric: MetricId,
    /// Days since the Unix epoch.
    pub day: i64,
    pub batch: RecordBatch,
}

/// Chunks in export order, produced by a task reading the database; dropping this stops it.
pub struct ExportStream {
    rx: mpsc::Receiver<Result<ExportChunk, StoreError>>,
    schema: SchemaRef,
}

impl ExportStream {
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub async fn next(&mut self) -> Option<Result<ExportChunk, StoreError>> {
        self.rx.recv().await
    }

    /// For encoders running on a blocking thread.
    pub fn blocking_next(&mut self) -> Option<Result<ExportChunk, StoreError>> {
        self.rx.blocking_recv()
    }
}

/// One row as a backend read it, before it goes into the column builders: a raw reading
/// (`value`, `seq`) or a rollup row (`count`, `sum`, `min`, `max`, and its last value as
/// `value`). `time` is milliseconds, UTC.
pub(crate) struct RowIn<'r> {
    pub time: i64,
    pub device: &'r str,
    pub metric: &'r str,
    pub value: f64,
    pub seq: Option<i64>,
    pub count: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

/// Column builders of the batch being filled: every backend folds its rows through one, so
/// chunks are cut the same way (per (metric, UTC day), at most `batch_rows` rows) on both.
pub(crate) struct ChunkBuilder {
    resolution: Resolution,
    schema: SchemaRef,
    batch_rows: usize,
    key: Option<(MetricId, i64)>,
    rows: usize,
    time: TimestampMillisecondBuilder,
    device: StringBuilder,
    metric: StringBuilder,
    value: Float64Builder,
    seq: Int64Builder,
    count: Int64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    avg: Float64Builder,
}

impl ChunkBuilder {
    pub(crate) fn new(resolution: Resolution, batch_rows: usize) -> Self {
        let n = batch_rows.min(DEFAULT_BATCH_ROWS);
        Self {
            resolution,
            schema: export_schema(resolution),
            batch_rows: batch_rows.max(1),
            key: None,
            rows: 0,
            time: TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC"),
            device: StringBuilder::with_capacity(n, n * 12),
            metric: StringBuilder::with_capacity(n, n * 12),
            value: Float64Builder::with_capacity(n),
            seq: Int64Builder::with_capacity(n),
            count: Int64Builder::with_capacity(n),
            sum: Float64Builder::with_capacity(n),
            min: Float64Builder::with_capacity(n),
            max: Float64Builder::with_capacity(n),
            avg: Float64Builder::with_capacity(n),
        }
    }

    /// Append a row; returns the chunk finished before it: the row starts another
    /// (metric, day), or the batch was full.
    pub(crate) fn push(&mut self, r: RowIn<'_>) -> Result<Option<ExportChunk>, StoreError> {
        let day = r.time.div_euclid(DAY_MS);
        let same = self.key.filter(|(m, d)| m.as_str() == r.metric && *d == day);
        let done = if same.is_none() || self.rows >= self.batch_rows { self.take() } else { None };
        let metric = match same {
            Some((m, _)) => m,
            None => crate::parse_metric(r.metric.to_owned())?,
        };
        self.key = Some((metric, day));
        self.time.append_value(r.time);
        self.device.append_value(r.device);
        self.metric.append_value(r.metric);
        if self.resolution == Resolution::Raw {
            self.value.append_value(r.value);
            self.seq.append_option(r.seq);
        } else {
            self.count.append_value(r.count);
            self.sum.append_value(r.sum);
            self.min.append_value(r.min);
            self.max.append_value(r.max);
            self.value.append_value(r.value);
            self.avg.append_value(if r.count > 0 { r.sum / r.count as f64 } else { f64::NAN });
        }
        self.rows += 1;
        Ok(done)
    }

    /// The rows gathered so far as a chunk (None when empty); the builders start afresh.
    pub(crate) fn take(&mut self) -> Option<ExportChunk> {
        let (metric, day) = self.key?;
        if self.rows == 0 {
            return None;
        }
        self.rows = 0;
        let columns: Vec<ArrayRef> = if self.resolution == Resolution::Raw {
            vec![
                Arc::new(self.time.finish()),
                Arc::new(self.device.finish()),
                Arc::new(self.metric.finish()),
                Arc::new(self.value.finish()),
                Arc::new(self.seq.finish()),
            ]
        } else {
            vec![
                Arc::new(self.time.finish()),
                Arc::new(self.device.finish()),
                Arc::new(self.metric.finish()),
                Arc::new(self.count.finish()),
                Arc::new(self.sum.finish()),
                Arc::new(self.min.finish()),
                Arc::new(self.max.finish()),
                Arc::new(self.value.finish()),
                Arc::new(self.avg.finish()),
            ]
        };
        // The columns match the schema by construction.
        let batch = RecordBatch::try_new(self.schema.clone(), columns).ok()?;
        Some(ExportChunk { metric, day, batch })
    }
}

/// The receiver went away (client disconnected, export abandoned): stop reading.
pub(crate) struct Abandoned;

/// Hand a finished chunk (if any) to the encoder's side.
pub(crate) async fn send(
    tx: &mpsc::Sender<Result<ExportChunk, StoreError>>,
    chunk: Option<ExportChunk>,
) -> Result<(), Abandoned> {
    match chunk {
        Some(c) => tx.send(Ok(c)).await.map_err(|_| Abandoned),
        None => Ok(()),
    }
}

/// Exports: see the module doc. The reads are each backend's (`pg/export.rs`,
/// `sqlite/export.rs`).
impl Store {
    /// Stream the rows of `q` in bounded batches (see the module doc). Errors arrive as the
    /// last item of the stream.
    pub fn export(&self, q: ExportQuery) -> Result<ExportStream, StoreError> {
        q.check()?;
        let (tx, rx) = mpsc::channel(EXPORT_QUEUE);
        let schema = export_schema(q.resolution);
        let store = self.clone();
        tokio::spawn(async move {
            let result = dispatch!(&store, s => s.produce_export(&q, &tx).await);
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(ExportStream { rx, schema })
    }

    /// About how many rows `q` exports, cheaply (for progress): raw readings are counted
    /// from the hourly rollups (whole hours, without the minutes not folded yet),
    /// rollups are counted.
    pub async fn export_estimate(&self, q: &ExportQuery) -> Result<u64, StoreError> {
        q.check()?;
        let (table, agg, from) = match q.resolution {
            Resolution::Raw => ("rollup_1h", "sum(count)", q.from.floor(3_600_000)),
            r => (r.table(), "count(*)", q.from),
        };
        let n = dispatch!(self, s => s.export_estimate(q, table, agg, from).await)?;
        Ok(n.max(0) as u64)
    }
}
