//! The encoders of exports: record batches written as CSV, JSON, Arrow IPC (stream or
//! file) or Parquet to any `std::io::Write`. No database here: the readers are the
//! backends' (`pg/export.rs`, `sqlite/export.rs`), and [`super::ExportStream`] hands their
//! batches over. An encoder holds at most one Parquet row group
//! ([`super::PARQUET_ROW_GROUP_ROWS`]) and the text of a few thousand rows.

use std::io::Write;

use arrow_array::{
    Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow_schema::SchemaRef;

use super::{ExportFormat, PARQUET_ROW_GROUP_ROWS};
use crate::history::DAY_MS;
use crate::StoreError;

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

#[cfg(test)]
mod tests {
    use telemetry::EventTime;

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
