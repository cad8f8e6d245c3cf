//! REST handlers.

use axum::extract::{RawQuery, State};
use axum::Json;
use serde_json::{json, Value};
use store::{HistoryQuery, Resolution};
use telemetry::EventTime;

use crate::error::ApiError;
use crate::params::{self, Params};
use crate::AppState;

/// Most points one history request returns.
pub const MAX_HISTORY_POINTS: usize = 100_000;
const DEFAULT_HISTORY_POINTS: usize = 10_000;
const DEFAULT_SPAN_MS: i64 = 3_600_000;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(|_| ApiError::unavailable("database unreachable"))?;
    Ok(Json(json!({"status": "ready", "store": state.store.backend()})))
}

/// Prometheus text exposition: the pipeline's counters and the live hub's size.
pub async fn metrics(State(state): State<AppState>) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    let mut text = state.metrics.as_ref().map(|render| render()).unwrap_or_default();
    text.push_str(&format!(
        "# HELP sccr_live_values Current (device, metric) values held for live subscribers.\n# TYPE sccr_live_values gauge\nsccr_live_values {}\n",
        state.hub.len()
    ));
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

pub async fn devices(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    Params::parse(raw.as_deref())?.finish()?;
    let devices = state.store.devices().await?;
    Ok(Json(json!({ "devices": devices })))
}

pub async fn latest(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let device = p.take("device").map(|v| params::device("device", &v)).transpose()?;
    let metric = p.take("metric").map(|v| params::metric("metric", &v)).transpose()?;
    p.finish()?;
    let values = state.store.latest(device.as_ref(), metric).await?;
    Ok(Json(json!({ "values": values })))
}

pub async fn history(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let device = params::device("device", &p.required("device")?)?;
    let metric = params::metric("metric", &p.required("metric")?)?;
    let to = p.take("to").map(|v| params::time("to", &v)).transpose()?.unwrap_or_else(EventTime::now);
    let from = p
        .take("from")
        .map(|v| params::time("from", &v))
        .transpose()?
        .unwrap_or(EventTime(to.millis().saturating_sub(DEFAULT_SPAN_MS).max(0)));
    let resolution = match p.take("resolution") {
        None => Resolution::Raw,
        Some(v) => Resolution::parse(&v).ok_or_else(|| ApiError::bad_param("resolution", "resolution must be raw or 1m"))?,
    };
    let limit = p.take("limit").map(|v| params::limit("limit", &v, MAX_HISTORY_POINTS)).transpose()?.unwrap_or(DEFAULT_HISTORY_POINTS);
    p.finish()?;
    if from >= to {
        return Err(ApiError::bad_param("from", "from must be before to"));
    }
    let q = HistoryQuery { device, metric, from, to, resolution, limit };
    let points = state.store.history(&q).await?;
    let points: Vec<Value> = match resolution {
        Resolution::Raw => points.iter().map(|p| json!({"t": p.time, "v": p.last})).collect(),
        Resolution::Minute => points
            .iter()
            .map(|p| {
                json!({
                    "t": p.time, "count": p.count, "sum": p.sum, "min": p.min, "max": p.max, "last": p.last,
                    "avg": if p.count > 0 { p.sum / p.count as f64 } else { 0.0 },
                })
            })
            .collect(),
    };
    Ok(Json(json!({
        "device": q.device,
        "metric": q.metric,
        "unit": q.metric.spec().unit,
        "resolution": match resolution { Resolution::Raw => "raw", Resolution::Minute => "1m" },
        "from": q.from,
        "to": q.to,
        "points": points,
    })))
}
