//! Bulk export: readings or rollups of a time range streamed out of the database in
//! bounded Arrow record batches, and the encoders that write them as CSV, JSON, Arrow IPC
//! stream or Parquet to any `std::io::Write`.
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
//! Over 600 lines: the database readers and the encoders share one contract (the schema,
//! the chunks, the text cells); the layout on disk is the `dir` module's.
//!
//! Raw readings on PostgreSQL are read one UTC day at a time (the `readings` partitions
//! and TimescaleDB chunks are days), so the server sorts a day, not the whole range.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures_util::TryStreamExt;
use sqlx::Row;
use telemetry::{DeviceId, EventTime, MetricId, SegmentId};
use tokio::sync::mpsc;

use crate::history::{Resolution, DAY_MS};
use crate::{Store, StoreError};

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

    fn metric_names(&self) -> Option<Vec<String>> {
        (!self.metrics.is_empty())
            .then(|| self.metrics.iter().map(|m| m.as_str().to_owned()).collect())
    }

    fn device_names(&self) -> Option<Vec<String>> {
        (!self.devices.is_empty())
            .then(|| self.devices.iter().map(|d| d.as_str().to_owned()).collect())
    }

    fn segment_names(&self) -> Option<Vec<String>> {
        (!self.segments.is_empty())
            .then(|| self.segments.iter().map(|s| s.as_str().to_owned()).collect())
    }

    /// The values bound to [`sqlite_filters`]' placeholders, in order.
    fn sqlite_filter_values(&self) -> impl Iterator<Item = String> {
        [self.metric_names(), self.device_names(), self.segment_names()]
            .into_iter()
            .flatten()
            .flatten()
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

/// One row as read, before it goes into the column builders.
struct RowIn<'r> {
    time: i64,
    device: &'r str,
    metric: &'r str,
    value: f64,
    seq: Option<i64>,
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
}

/// Column builders of the batch being filled.
struct ChunkBuilder {
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
    fn new(resolution: Resolution, batch_rows: usize) -> Self {
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
    fn push(&mut self, r: RowIn<'_>) -> Result<Option<ExportChunk>, StoreError> {
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
    fn take(&mut self) -> Option<ExportChunk> {
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
struct Abandoned;

async fn send(
    tx: &mpsc::Sender<Result<ExportChunk, StoreError>>,
    chunk: Option<ExportChunk>,
) -> Result<(), Abandoned> {
    match chunk {
        Some(c) => tx.send(Ok(c)).await.map_err(|_| Abandoned),
        None => Ok(()),
    }
}

fn rollup_table(resolution: Resolution) -> &'static str {
    match resolution {
        Resolution::Raw => "readings",
        Resolution::Minute => "rollup_1m",
        Resolution::Hour => "rollup_1h",
        Resolution::Day => "rollup_1d",
    }
}

impl Store {
    /// Stream the rows of `q` in bounded batches (see the module doc). Errors arrive as the
    /// last item of the stream.
    pub fn export(&self, q: ExportQuery) -> Result<ExportStream, StoreError> {
        q.check()?;
        let (tx, rx) = mpsc::channel(EXPORT_QUEUE);
        let schema = export_schema(q.resolution);
        let store = self.clone();
        tokio::spawn(async move {
            let result = match &store {
                Store::Postgres(s) => produce_pg(s.pool(), &q, &tx).await,
                Store::Sqlite(s) => produce_sqlite(s.pool(), &q, &tx).await,
            };
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(ExportStream { rx, schema })
    }

    /// About how many rows `q` exports, cheaply (for progress): raw readings are counted
    /// from the hourly rollups (whole hours, trailing commits by the merge interval),
    /// rollups are counted.
    pub async fn export_estimate(&self, q: &ExportQuery) -> Result<u64, StoreError> {
        q.check()?;
        let (table, agg, from) = match q.resolution {
            Resolution::Raw => ("rollup_1h", "sum(count)", q.from.floor(3_600_000)),
            r => (rollup_table(r), "count(*)", q.from),
        };
        match self {
            Store::Postgres(s) => {
                let sql = format!(
                    "SELECT COALESCE({agg}, 0)::int8 FROM {table} WHERE bucket >= $1 AND bucket < $2 {PG_FILTERS}"
                );
                let n: i64 = sqlx::query_scalar(&sql)
                    .bind(from.to_offset_date_time())
                    .bind(q.to.to_offset_date_time())
                    .bind(q.metric_names())
                    .bind(q.device_names())
                    .bind(q.segment_names())
                    .fetch_one(s.pool())
                    .await?;
                Ok(n.max(0) as u64)
            }
            Store::Sqlite(s) => {
                let sql = format!(
                    "SELECT CAST(COALESCE({agg}, 0) AS INTEGER) FROM {table} WHERE bucket_ms >= ? AND bucket_ms < ?{}",
                    sqlite_filters(q)
                );
                let mut query =
                    sqlx::query_scalar::<_, i64>(&sql).bind(from.millis()).bind(q.to.millis());
                for name in q.sqlite_filter_values() {
                    query = query.bind(name);
                }
                Ok(query.fetch_one(s.pool()).await?.max(0) as u64)
            }
        }
    }
}

/// The metric, device and segment filters of a PostgreSQL export query ($3, $4, $5).
const PG_FILTERS: &str =
    "AND ($3::text[] IS NULL OR metric = ANY($3)) AND ($4::text[] IS NULL OR device = ANY($4))
     AND ($5::text[] IS NULL OR device IN (SELECT id FROM devices WHERE segment_id = ANY($5)))";

async fn produce_pg(
    pool: &sqlx::PgPool,
    q: &ExportQuery,
    tx: &mpsc::Sender<Result<ExportChunk, StoreError>>,
) -> Result<(), StoreError> {
    let (sql, slices) = match q.resolution {
        Resolution::Raw => {
            let sql = format!(
                "SELECT time, device, metric, value, seq FROM readings WHERE time >= $1 AND time < $2 {PG_FILTERS}
                 ORDER BY metric, time, device"
            );
            // One UTC day per query: the server sorts a partition, not the whole range.
            let mut slices = Vec::new();
            let mut lo = q.from.millis();
            while lo < q.to.millis() {
                let hi = ((lo.div_euclid(DAY_MS) + 1) * DAY_MS).min(q.to.millis());
                slices.push((lo, hi));
                lo = hi;
            }
            (sql, slices)
        }
        r => {
            let sql = format!(
                "SELECT bucket AS time, device, metric, count::int8 AS count, sum, min, max, last_value AS value FROM {}
                 WHERE bucket >= $1 AND bucket < $2 {PG_FILTERS}
                 ORDER BY date_trunc('day', bucket AT TIME ZONE 'UTC'), metric, bucket, device",
                rollup_table(r)
            );
            (sql, vec![(q.from.millis(), q.to.millis())])
        }
    };
    let (metrics, devices, segments) = (q.metric_names(), q.device_names(), q.segment_names());
    let mut b = ChunkBuilder::new(q.resolution, q.batch_rows);
    let raw = q.resolution == Resolution::Raw;
    for (lo, hi) in slices {
        let mut rows = sqlx::query(&sql)
            .bind(EventTime(lo).to_offset_date_time())
            .bind(EventTime(hi).to_offset_date_time())
            .bind(&metrics)
            .bind(&devices)
            .bind(&segments)
            .fetch(pool);
        while let Some(row) = rows.try_next().await? {
            let time = EventTime::from_offset_date_time(row.try_get("time")?).millis();
            let r = if raw {
                RowIn {
                    time,
                    device: row.try_get("device")?,
                    metric: row.try_get("metric")?,
                    value: row.try_get("value")?,
                    seq: row.try_get("seq")?,
                    count: 1,
                    sum: 0.0,
                    min: 0.0,
                    max: 0.0,
                }
            } else {
                RowIn {
                    time,
                    device: row.try_get("device")?,
                    metric: row.try_get("metric")?,
                    value: row.try_get("value")?,
                    seq: None,
                    count: row.try_get("count")?,
                    sum: row.try_get("sum")?,
                    min: row.try_get("min")?,
                    max: row.try_get("max")?,
                }
            };
            if send(tx, b.push(r)?).await.is_err() {
                return Ok(());
            }
        }
    }
    let _ = send(tx, b.take()).await;
    Ok(())
}

fn sqlite_filters(q: &ExportQuery) -> String {
    let list = |n: usize| vec!["?"; n].join(", ");
    let mut f = String::new();
    if !q.metrics.is_empty() {
        f.push_str(&format!(" AND metric IN ({})", list(q.metrics.len())));
    }
    if !q.devices.is_empty() {
        f.push_str(&format!(" AND device IN ({})", list(q.devices.len())));
    }
    if !q.segments.is_empty() {
        f.push_str(&format!(
            " AND device IN (SELECT id FROM devices WHERE segment_id IN ({}))",
            list(q.segments.len())
        ));
    }
    f
}

async fn produce_sqlite(
    pool: &sqlx::SqlitePool,
    q: &ExportQuery,
    tx: &mpsc::Sender<Result<ExportChunk, StoreError>>,
) -> Result<(), StoreError> {
    let filters = sqlite_filters(q);
    let sql = match q.resolution {
        Resolution::Raw => format!(
            "SELECT time_ms AS time, device, metric, value, seq, 1 AS count, 0.0 AS sum, 0.0 AS min, 0.0 AS max FROM readings
             WHERE time_ms >= ? AND time_ms < ?{filters} ORDER BY time_ms / {DAY_MS}, metric, time_ms, device"
        ),
        r => format!(
            "SELECT bucket_ms AS time, device, metric, last_value AS value, NULL AS seq, count, sum, min, max FROM {}
             WHERE bucket_ms >= ? AND bucket_ms < ?{filters} ORDER BY bucket_ms / {DAY_MS}, metric, bucket_ms, device",
            rollup_table(r)
        ),
    };
    let mut query = sqlx::query(&sql).bind(q.from.millis()).bind(q.to.millis());
    for name in q.sqlite_filter_values() {
        query = query.bind(name);
    }
    let mut b = ChunkBuilder::new(q.resolution, q.batch_rows);
    let mut rows = query.fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let r = RowIn {
            time: row.try_get("time")?,
            device: row.try_get("device")?,
            metric: row.try_get("metric")?,
            value: row.try_get("value")?,
            seq: row.try_get("seq")?,
            count: row.try_get("count")?,
            sum: row.try_get("sum")?,
            min: row.try_get("min")?,
            max: row.try_get("max")?,
        };
        if send(tx, b.push(r)?).await.is_err() {
            return Ok(());
        }
    }
    let _ = send(tx, b.take()).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Encoders

fn encode_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Encode(e.to_string())
}

/// Writes record batches of one schema in one format; CSV and JSON take any batch of
/// timestamp (ms), string, float64 and int64 columns.
pub struct BatchEncoder<W: Write + Send> {
    inner: Inner<W>,
    rows: u64,
}

enum Inner<W: Write + Send> {
    Text { w: W, format: ExportFormat, line: Vec<u8>, first: bool },
    Arrow(arrow_ipc::writer::StreamWriter<W>),
    ArrowFile(arrow_ipc::writer::FileWriter<W>),
    Parquet(parquet::arrow::ArrowWriter<W>),
}

impl<W: Write + Send> BatchEncoder<W> {
    /// An encoder of files on disk: as [`BatchEncoder::new`], but Arrow is written in the
    /// IPC file format (the `.arrow` of `pandas.read_feather`, `pyarrow.dataset` and
    /// `pyarrow.ipc.open_file`) rather than the stream format of HTTP bodies.
    pub fn new_file(format: ExportFormat, schema: SchemaRef, w: W) -> Result<Self, StoreError> {
        if format != ExportFormat::Arrow {
            return Self::new(format, schema, w);
        }
        let writer = arrow_ipc::writer::FileWriter::try_new(w, &schema).map_err(encode_err)?;
        Ok(Self { inner: Inner::ArrowFile(writer), rows: 0 })
    }

    pub fn new(format: ExportFormat, schema: SchemaRef, mut w: W) -> Result<Self, StoreError> {
        let inner = match format {
            ExportFormat::Csv => {
                let header: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(w, "{}", header.join(",")).map_err(encode_err)?;
                Inner::Text { w, format, line: Vec::new(), first: true }
            }
            ExportFormat::Json => {
                w.write_all(b"[").map_err(encode_err)?;
                Inner::Text { w, format, line: Vec::new(), first: true }
            }
            ExportFormat::Arrow => Inner::Arrow(
                arrow_ipc::writer::StreamWriter::try_new(w, &schema).map_err(encode_err)?,
            ),
            ExportFormat::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .set_max_row_group_size(PARQUET_ROW_GROUP_ROWS)
                    .build();
                Inner::Parquet(
                    parquet::arrow::ArrowWriter::try_new(w, schema, Some(props))
                        .map_err(encode_err)?,
                )
            }
        };
        Ok(Self { inner, rows: 0 })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        self.rows += batch.num_rows() as u64;
        match &mut self.inner {
            Inner::Text { w, format, line, first } => {
                // A few thousand rows at a time: the text of a whole batch is never held.
                const ROWS: usize = 4_096;
                for start in (0..batch.num_rows()).step_by(ROWS) {
                    let part = batch.slice(start, ROWS.min(batch.num_rows() - start));
                    line.clear();
                    match format {
                        ExportFormat::Csv => csv_rows(&part, line),
                        _ => json_rows(&part, line, first),
                    }
                    w.write_all(line).map_err(encode_err)?;
                }
                Ok(())
            }
            Inner::Arrow(a) => a.write(batch).map_err(encode_err),
            Inner::ArrowFile(a) => a.write(batch).map_err(encode_err),
            Inner::Parquet(p) => p.write(batch).map_err(encode_err),
        }
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Write the format's trailer and flush; returns the writer.
    pub fn finish(self) -> Result<W, StoreError> {
        match self.inner {
            Inner::Text { mut w, format, .. } => {
                if format == ExportFormat::Json {
                    w.write_all(b"]\n").map_err(encode_err)?;
                }
                w.flush().map_err(encode_err)?;
                Ok(w)
            }
            Inner::Arrow(mut a) => {
                a.finish().map_err(encode_err)?;
                let mut w = a.into_inner().map_err(encode_err)?;
                w.flush().map_err(encode_err)?;
                Ok(w)
            }
            Inner::ArrowFile(mut a) => {
                a.finish().map_err(encode_err)?;
                let mut w = a.into_inner().map_err(encode_err)?;
                w.flush().map_err(encode_err)?;
                Ok(w)
            }
            Inner::Parquet(p) => {
                let mut w = p.into_inner().map_err(encode_err)?;
                w.flush().map_err(encode_err)?;
                Ok(w)
            }
        }
    }
}

/// A cell of a text format.
enum Cell<'a> {
    Null,
    Time(i64),
    Text(&'a str),
    Float(f64),
    Int(i64),
}

fn cell(col: &dyn Array, i: usize) -> Cell<'_> {
    if col.is_null(i) {
        return Cell::Null;
    }
    let any = col.as_any();
    if let Some(a) = any.downcast_ref::<TimestampMillisecondArray>() {
        Cell::Time(a.value(i))
    } else if let Some(a) = any.downcast_ref::<StringArray>() {
        Cell::Text(a.value(i))
    } else if let Some(a) = any.downcast_ref::<Float64Array>() {
        Cell::Float(a.value(i))
    } else if let Some(a) = any.downcast_ref::<Int64Array>() {
        Cell::Int(a.value(i))
    } else {
        Cell::Null
    }
}

/// RFC 3339 with milliseconds, UTC: `2025-11-23T10:00:00.000Z`.
pub fn write_time(out: &mut Vec<u8>, ms: i64) {
    let days = ms.div_euclid(DAY_MS);
    let in_day = ms.rem_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000
    );
}

/// `YYYY-MM-DD` of a day number (days since the Unix epoch).
pub fn date_of_day(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Proleptic Gregorian date of a day number (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn csv_rows(batch: &RecordBatch, out: &mut Vec<u8>) {
    let cols = batch.columns();
    for i in 0..batch.num_rows() {
        for (c, col) in cols.iter().enumerate() {
            if c > 0 {
                out.push(b',');
            }
            match cell(col.as_ref(), i) {
                Cell::Null => {}
                Cell::Time(ms) => write_time(out, ms),
                Cell::Text(s) if s.contains([',', '"', '\n', '\r']) => {
                    out.push(b'"');
                    out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
                    out.push(b'"');
                }
                Cell::Text(s) => out.extend_from_slice(s.as_bytes()),
                Cell::Float(v) if v.is_finite() => {
                    let _ = write!(out, "{v}");
                }
                Cell::Float(_) => {}
                Cell::Int(v) => {
                    let _ = write!(out, "{v}");
                }
            }
        }
        out.push(b'\n');
    }
}

fn json_rows(batch: &RecordBatch, out: &mut Vec<u8>, first: &mut bool) {
    let schema = batch.schema();
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| serde_json::to_string(f.name()).unwrap_or_else(|_| "\"?\"".into()))
        .collect();
    for i in 0..batch.num_rows() {
        out.extend_from_slice(if *first { b"\n{" } else { b",\n{" });
        *first = false;
        for (c, col) in batch.columns().iter().enumerate() {
            if c > 0 {
                out.push(b',');
            }
            out.extend_from_slice(names[c].as_bytes());
            out.push(b':');
            match cell(col.as_ref(), i) {
                Cell::Null => out.extend_from_slice(b"null"),
                Cell::Time(ms) => {
                    out.push(b'"');
                    write_time(out, ms);
                    out.push(b'"');
                }
                Cell::Text(s) => {
                    out.extend_from_slice(serde_json::to_string(s).unwrap_or_default().as_bytes())
                }
                Cell::Float(v) if v.is_finite() => {
                    let _ = write!(out, "{v}");
                }
                Cell::Float(_) => out.extend_from_slice(b"null"),
                Cell::Int(v) => {
                    let _ = write!(out, "{v}");
                }
            }
        }
        out.push(b'}');
    }
}

mod dir;
pub use dir::{
    export_to_dir, partition_schema, DirExport, DirExportSummary, ExportedFile, MAX_ROWS_PER_FILE,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_are_utc_calendar() {
        assert_eq!(date_of_day(0), "1970-01-01");
        assert_eq!(date_of_day(20_415), "2025-11-23");
        assert_eq!(date_of_day(11_016), "2000-02-29");
        let mut out = Vec::new();
        write_time(&mut out, 1_763_892_000_123);
        assert_eq!(String::from_utf8(out).unwrap(), "2025-11-23T10:00:00.123Z");
        for ms in [0_i64, 951_782_400_000, 1_763_892_000_123, 4_102_444_799_999] {
            let mut out = Vec::new();
            write_time(&mut out, ms);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(EventTime::parse_rfc3339(&text).unwrap().millis(), ms, "{text}");
        }
    }
}
