//! Response formats: JSON, CSV, Arrow IPC stream and Parquet, chosen by `format=` (which
//! wins) or `Accept`, and the streaming of record batches as a response body.
//!
//! Bounded memory: batches come from a bounded channel, are encoded on a blocking thread,
//! and leave through a channel of [`BODY_QUEUE`] chunks of about [`CHUNK_BYTES`]; a slow
//! client therefore slows the database read instead of filling memory. A client that goes
//! away drops the body, which stops the encoder and then the database read.

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::http::header::{ACCEPT, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use store::{BatchEncoder, ExportFormat, ExportStream, StoreError};
use tokio::sync::mpsc;

use crate::error::ApiError;

/// Encoded bytes per body chunk.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Body chunks queued for the client.
pub const BODY_QUEUE: usize = 4;

/// `format=` values, for messages.
const FORMATS: &str = "json, csv, arrow or parquet";

/// The format of a response: `format=` when given, else the first supported media type
/// of `Accept` (`*/*`, `application/*` or no header: `default`). 400 naming `format` for
/// an unknown value, 406 when `Accept` lists nothing we produce.
pub fn negotiate(
    format: Option<String>,
    headers: &HeaderMap,
    default: ExportFormat,
) -> Result<ExportFormat, ApiError> {
    if let Some(f) = format {
        return ExportFormat::parse(&f)
            .ok_or_else(|| ApiError::bad_param("format", format!("format must be {FORMATS}")));
    }
    let Some(accept) = headers.get(ACCEPT) else { return Ok(default) };
    let accept = accept.to_str().unwrap_or("");
    if accept.trim().is_empty() {
        return Ok(default);
    }
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        // q=0 means "not acceptable".
        if parts.any(|p| matches!(p.trim().split_once('='), Some(("q", v)) if v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))) {
            continue;
        }
        let f = match media.as_str() {
            "*/*" | "application/*" => Some(default),
            "application/json" => Some(ExportFormat::Json),
            "text/csv" | "text/*" => Some(ExportFormat::Csv),
            "application/vnd.apache.arrow.stream" => Some(ExportFormat::Arrow),
            "application/vnd.apache.parquet" | "application/x-parquet" => {
                Some(ExportFormat::Parquet)
            }
            _ => None,
        };
        if let Some(f) = f {
            return Ok(f);
        }
    }
    Err(ApiError {
        status: StatusCode::NOT_ACCEPTABLE,
        code: "not_acceptable",
        message: format!(
            "Accept lists no format this route produces: application/json, text/csv, application/vnd.apache.arrow.stream, application/vnd.apache.parquet (or use format={FORMATS})"
        ),
        param: None,
        errors: Vec::new(),
    })
}

/// Tables (CSV, Arrow, Parquet) are bulk data: planners and admins only; JSON follows the
/// route's own roles.
pub fn require_bulk_role(
    who: &crate::auth::Principal,
    format: ExportFormat,
) -> Result<(), ApiError> {
    use crate::auth::PLANNERS;
    if format == ExportFormat::Json || PLANNERS.contains(&who.role) {
        return Ok(());
    }
    Err(ApiError {
        status: StatusCode::FORBIDDEN,
        code: "forbidden",
        message: format!(
            "the {} role may not download {} (allowed: admin, planner)",
            who.role.as_str(),
            format.as_str()
        ),
        param: Some("format".into()),
        errors: Vec::new(),
    })
}

/// Collects encoder output and hands it to the body in chunks of about [`CHUNK_BYTES`].
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

fn attachment(format: ExportFormat, filename: &str) -> Vec<(axum::http::HeaderName, HeaderValue)> {
    // An Arrow body is the IPC stream format, whose registered extension is `.arrows`
    // (`.arrow` is the file format of `sccr export`).
    let extension = match format {
        ExportFormat::Arrow => "arrows",
        other => other.extension(),
    };
    let disposition = format!("attachment; filename=\"{filename}.{extension}\"");
    let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static(format.content_type()))];
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.push((CONTENT_DISPOSITION, v));
    }
    headers
}

/// Stream the rows of `rows` as a response in `format`, named `filename` (without
/// extension) for downloads. The first batch is awaited before answering, so a query that
/// fails at once is an error status, not a truncated body; a later failure aborts the body.
pub async fn stream_rows(
    mut rows: ExportStream,
    format: ExportFormat,
    filename: &str,
) -> Result<Response, ApiError> {
    let first = rows.next().await;
    stream_rows_from(first, rows, format, filename)
}

/// [`stream_rows`] with the stream's first chunk already taken (`first`), so a caller can
/// try another source when the first query fails.
pub fn stream_rows_from(
    first: Option<Result<store::ExportChunk, StoreError>>,
    rows: ExportStream,
    format: ExportFormat,
    filename: &str,
) -> Result<Response, ApiError> {
    let first = match first {
        Some(Err(e)) => return Err(e.into()),
        other => other,
    };
    let mut rows = rows;
    let schema = rows.schema();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(BODY_QUEUE);
    tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK_BYTES) };
        let result = (|| -> Result<(), StoreError> {
            let mut encoder = BatchEncoder::new(format, schema, writer)?;
            let mut next = first;
            while let Some(chunk) = next {
                encoder.write(&chunk?.batch)?;
                next = rows.blocking_next();
            }
            encoder.finish()?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "export stream aborted");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Ok((attachment(format, filename).into_iter().collect::<HeaderMap>(), body).into_response())
}

/// A small, already complete table (history points) as a response in `format`.
pub fn table_response(
    batch: &arrow_array::RecordBatch,
    format: ExportFormat,
    filename: &str,
) -> Result<Response, ApiError> {
    let mut encoder = BatchEncoder::new(format, batch.schema(), Vec::new())?;
    encoder.write(batch)?;
    let bytes = encoder.finish()?;
    Ok((attachment(format, filename).into_iter().collect::<HeaderMap>(), bytes).into_response())
}

/// History points as a table: `time, value` for raw readings; `time, v, count, sum, min,
/// max, last, avg` for buckets (`v` is the figure `agg` chose).
pub fn history_response(
    history: &store::History,
    v: impl Fn(&store::HistoryPoint) -> f64,
    format: ExportFormat,
    filename: &str,
) -> Result<Response, ApiError> {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMillisecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};

    let points = &history.points;
    let time: ArrayRef = Arc::new(
        TimestampMillisecondArray::from_iter_values(points.iter().map(|p| p.time.millis()))
            .with_timezone("UTC"),
    );
    let f64s = |f: &dyn Fn(&store::HistoryPoint) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(points.iter().map(f)))
    };
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let (fields, columns) = match history.step_ms {
        None => (
            vec![Field::new("time", ts, false), Field::new("value", DataType::Float64, false)],
            vec![time, f64s(&|p| p.last)],
        ),
        Some(_) => {
            let mut fields = vec![Field::new("time", ts, false)];
            fields.extend(["v", "count", "sum", "min", "max", "last", "avg"].map(|n| {
                Field::new(n, if n == "count" { DataType::Int64 } else { DataType::Float64 }, true)
            }));
            let count: ArrayRef =
                Arc::new(Int64Array::from_iter_values(points.iter().map(|p| p.count)));
            let columns = vec![
                time,
                f64s(&v),
                count,
                f64s(&|p| p.sum),
                f64s(&|p| p.min),
                f64s(&|p| p.max),
                f64s(&|p| p.last),
                f64s(&|p| p.avg()),
            ];
            (fields, columns)
        }
    };
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| ApiError::from(StoreError::Encode(e.to_string())))?;
    table_response(&batch, format, filename)
}
