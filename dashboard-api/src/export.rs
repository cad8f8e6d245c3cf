//! `GET /api/v1/export/readings`: readings or rollups of a time range, streamed.
//!
//! Parameters: `from`, `to` (required; any form of `EventTime::parse_spec`: Unix ms,
//! RFC 3339, a UTC date, `now-7d`), `metric`, `device` and `segment` (optional,
//! comma-separated lists; a segment stands for the devices linked to it now),
//! `resolution` (`raw`, the default, `1m`, `1h`, `1d`), `format` (`json`, `csv`, `arrow`,
//! `parquet`) or `Accept`; the default is CSV. A range spans at most [`MAX_SPAN_DAYS`]
//! days (422 beyond); a device or segment that does not exist is a 404 naming it. Columns
//! are `store::export_schema`'s; rows come ordered by (UTC day, metric, time, device). The
//! body streams with bounded memory whatever the row count (see `formats`), named by its
//! range ([`file_name`]). Planner and admin only (its entry in `crate::operations`).

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use store::history::DAY_MS;
use store::{ExportFormat, ExportQuery, Resolution};
use telemetry::EventTime;

use crate::error::ApiError;
use crate::params::{self, Params};
use crate::{formats, AppState};

/// Most entries in a `metric` or `device` list.
const MAX_LIST: usize = 1_000;
/// Longest range of one export: the store reads it a day at a time, so an unbounded range
/// would hold a connection over empty days (ten years, every level).
pub const MAX_SPAN_DAYS: i64 = 3_660;

fn list<T>(
    name: &str,
    v: Option<String>,
    parse: impl Fn(&str, &str) -> Result<T, ApiError>,
) -> Result<Vec<T>, ApiError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let items: Vec<&str> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if items.len() > MAX_LIST {
        return Err(ApiError::bad_param(name, format!("at most {MAX_LIST} values in {name}")));
    }
    items.into_iter().map(|s| parse(name, s)).collect()
}

pub async fn readings(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let now = telemetry::EventTime::now();
    let format = formats::negotiate(p.take("format"), &headers, ExportFormat::Csv)?;
    let from = params::time("from", &p.required("from")?, now)?;
    let to = params::time("to", &p.required("to")?, now)?;
    let resolution = match p.take("resolution") {
        None => Resolution::Raw,
        Some(r) => Resolution::parse(&r).ok_or_else(|| {
            ApiError::bad_param("resolution", "resolution must be raw, 1m, 1h or 1d")
        })?,
    };
    let metrics = list("metric", p.take("metric"), params::metric)?;
    let devices = list("device", p.take("device"), params::device)?;
    let segments = list("segment", p.take("segment"), params::segment)?;
    p.finish()?;
    if from >= to {
        return Err(ApiError::bad_combination("from", "from must be before to"));
    }
    if to.millis() - from.millis() > MAX_SPAN_DAYS * 86_400_000 {
        return Err(ApiError::bad_combination(
            "to",
            format!("an export spans at most {MAX_SPAN_DAYS} days; export longer ranges in parts"),
        ));
    }
    if let Some(d) = state.store.unknown_devices(&devices).await?.first() {
        return Err(ApiError::unknown("device", format!("device {d} does not exist")));
    }
    if let Some(s) = state.store.unknown_segments(&segments).await?.first() {
        return Err(ApiError::unknown("segment", format!("road segment {s} does not exist")));
    }
    let q = ExportQuery { metrics, devices, segments, ..ExportQuery::new(from, to, resolution) };
    // The replica when it is up and close enough; when its first query fails, the primary
    // (once rows stream, a failure ends the download with an error, as on the primary).
    let mut choice = state.reads.choose();
    let mut rows = choice.store.export(q.clone())?;
    let mut first = rows.next().await;
    if let Some(Err(e)) = &first {
        if choice.source == store::replica::ReadSource::Replica {
            if let Some(primary) = state.reads.replica_failed(e) {
                choice = primary;
                rows = choice.store.export(q)?;
                first = rows.next().await;
            }
        }
    }
    let mut response =
        formats::stream_rows_from(first, rows, format, &file_name(resolution, from, to))?;
    crate::routes::mark_read(&mut response, &choice);
    Ok(response)
}

/// The download's name without extension: `sccr-readings-2026-11-01_2026-11-08` for
/// `[from, to)`, the resolution after `readings` when not raw (`sccr-readings-1h-…`), and a
/// time of day (`2026-11-01T0830Z`, seconds when not whole minutes) on an end that is not
/// at 00:00 UTC.
pub fn file_name(resolution: Resolution, from: EventTime, to: EventTime) -> String {
    let end = |t: EventTime| {
        let (day, ms) = (t.millis().div_euclid(DAY_MS), t.millis().rem_euclid(DAY_MS));
        let date = store::export::date_of_day(day);
        let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1_000 % 60);
        match ms {
            0 => date,
            _ if ms % 60_000 == 0 => format!("{date}T{h:02}{m:02}Z"),
            _ => format!("{date}T{h:02}{m:02}{s:02}Z"),
        }
    };
    let level = match resolution {
        Resolution::Raw => String::new(),
        r => format!("{}-", r.as_str()),
    };
    format!("sccr-readings-{level}{}_{}", end(from), end(to))
}

#[cfg(test)]
mod tests;
