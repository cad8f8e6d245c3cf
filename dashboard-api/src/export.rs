//! `GET /api/v1/export/readings`: readings or rollups of a time range, streamed.
//!
//! Parameters: `from`, `to` (required; RFC 3339 or Unix ms), `metric` and `device`
//! (optional, comma-separated lists), `resolution` (`raw`, the default, `1m`, `1h`, `1d`),
//! `format` (`json`, `csv`, `arrow`, `parquet`) or `Accept`; the default is CSV. A range
//! spans at most [`MAX_SPAN_DAYS`] days (422 beyond). Columns
//! are `store::export_schema`'s; rows come ordered by (UTC day, metric, time, device). The
//! body streams with bounded memory whatever the row count (see `formats`). Planner and
//! admin only (its entry in `crate::operations`).

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use store::{ExportFormat, ExportQuery, Resolution};

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
    let format = formats::negotiate(p.take("format"), &headers, ExportFormat::Csv)?;
    let from = params::time("from", &p.required("from")?)?;
    let to = params::time("to", &p.required("to")?)?;
    let resolution = match p.take("resolution") {
        None => Resolution::Raw,
        Some(r) => Resolution::parse(&r).ok_or_else(|| {
            ApiError::bad_param("resolution", "resolution must be raw, 1m, 1h or 1d")
        })?,
    };
    let metrics = list("metric", p.take("metric"), params::metric)?;
    let devices = list("device", p.take("device"), params::device)?;
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
    let q = ExportQuery { metrics, devices, ..ExportQuery::new(from, to, resolution) };
    let rows = state.store.export(q)?;
    let name = format!("readings-{}-{}-{}", resolution.as_str(), from.millis(), to.millis());
    formats::stream_rows(rows, format, &name).await
}

#[cfg(test)]
mod tests;
