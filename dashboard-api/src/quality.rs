//! Detector health (docs/detector-health.md): `GET /api/v1/devices/{id}/quality` (a
//! device's data-quality score and flags) and `GET /api/v1/quality` (the devices by score,
//! for the planner). The score is `telemetry::health::quality_score` over the flag
//! intervals the health rules recorded in the store.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde_json::{json, Value};
use store::detector_health::FlagFilter;
use telemetry::health::{quality_score, FlagInterval, HealthFlag};
use telemetry::{DeviceKind, EventTime};

use crate::error::ApiError;
use crate::params::{self, Params};
use crate::AppState;

/// The window scored without `window`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(86_400);
/// The longest window scored.
pub const MAX_WINDOW: Duration = Duration::from_secs(31 * 86_400);
/// Devices listed without `limit`, and at most.
pub const DEFAULT_LIST: usize = 500;
pub const MAX_LIST: usize = 10_000;

/// `window`: a duration from 1 minute to 31 days (400 if not a duration, 422 outside).
fn window(p: &mut Params) -> Result<Duration, ApiError> {
    let Some(v) = p.take("window") else { return Ok(DEFAULT_WINDOW) };
    let w = humantime::parse_duration(&v).map_err(|e| {
        ApiError::bad_param("window", format!("window must be a duration such as 24h: {e}"))
    })?;
    if w < Duration::from_secs(60) || w > MAX_WINDOW {
        return Err(ApiError::bad_combination("window", "window must be from 1m to 31d"));
    }
    Ok(w)
}

fn range(w: Duration) -> (EventTime, EventTime) {
    let now = EventTime::now();
    (EventTime(now.millis().saturating_sub(w.as_millis() as i64)), now)
}

/// Milliseconds of `[from, to)` under any of `flags`.
fn flagged_ms(flags: &[&FlagInterval], from: EventTime, to: EventTime) -> i64 {
    let mut spans: Vec<(i64, i64)> = flags
        .iter()
        .map(|f| {
            (
                f.from.millis().max(from.millis()),
                f.to.map_or(to.millis(), |t| t.millis()).min(to.millis()),
            )
        })
        .filter(|(a, b)| a < b)
        .collect();
    spans.sort_unstable();
    let (mut total, mut end) = (0, i64::MIN);
    for (a, b) in spans {
        let a = a.max(end);
        if b > a {
            total += b - a;
            end = b;
        }
    }
    total
}

fn active(flags: &[&FlagInterval]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> =
        flags.iter().filter(|f| f.to.is_none()).map(|f| f.flag.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// `GET /api/v1/devices/{id}/quality?window=24h`.
pub async fn device_quality(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let id = params::device("id", &id)?;
    let w = window(&mut p)?;
    p.finish()?;
    let Some(device) = state.store.device(&id).await? else {
        return Err(ApiError::not_found(format!("device {id} does not exist")));
    };
    let (from, to) = range(w);
    let flags = state
        .store
        .flags(&FlagFilter { device: Some(id.clone()), flag: None, from, to, open_only: false })
        .await?;
    let refs: Vec<&FlagInterval> = flags.iter().collect();
    Ok(Json(json!({
        "device": id.as_str(),
        "kind": device.kind,
        "segment": device.segment,
        "from": from.millis(),
        "to": to.millis(),
        "score": quality_score(flags.iter(), from, to),
        "active": active(&refs),
        "flags": flags.iter().map(|f| json!({
            "flag": f.flag, "rule": f.rule, "from": f.from.millis(), "to": f.to.map(|t| t.millis()),
        })).collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/quality?kind=&segment=&flag=&below=&window=&limit=`: devices (not
/// decommissioned) by score, worst first.
pub async fn quality_list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let kind = p
        .take("kind")
        .map(|k| {
            k.parse::<DeviceKind>().map_err(|e| ApiError::bad_combination("kind", e.to_string()))
        })
        .transpose()?;
    let segment = p.take("segment").map(|v| params::segment("segment", &v)).transpose()?;
    let flag = p
        .take("flag")
        .map(|f| {
            HealthFlag::parse(&f).ok_or_else(|| {
                ApiError::bad_param("flag", format!("flag must be one of {}", HealthFlag::names()))
            })
        })
        .transpose()?;
    let below = p
        .take("below")
        .map(|v| match v.parse::<f64>() {
            Ok(b) if (0.0..=1.0).contains(&b) => Ok(b),
            _ => Err(ApiError::bad_param("below", "below must be a score from 0 to 1")),
        })
        .transpose()?;
    let w = window(&mut p)?;
    let limit = p
        .take("limit")
        .map(|v| params::limit("limit", &v, MAX_LIST))
        .transpose()?
        .unwrap_or(DEFAULT_LIST);
    p.finish()?;
    let (from, to) = range(w);
    let flags = state
        .store
        .flags(&FlagFilter { device: None, flag: None, from, to, open_only: false })
        .await?;
    let mut by_device: BTreeMap<&str, Vec<&FlagInterval>> = BTreeMap::new();
    for f in &flags {
        by_device.entry(f.device.as_str()).or_default().push(f);
    }
    let mut rows = Vec::new();
    for d in state.store.devices().await? {
        if kind.is_some_and(|k| d.kind.as_deref() != Some(k.as_str()))
            || segment.as_ref().is_some_and(|s| d.segment.as_ref() != Some(s))
        {
            continue;
        }
        let mine = by_device.get(d.id.as_str()).cloned().unwrap_or_default();
        if flag.is_some_and(|f| !mine.iter().any(|x| x.flag == f)) {
            continue;
        }
        let score = quality_score(mine.iter().copied(), from, to);
        if below.is_some_and(|b| score >= b) {
            continue;
        }
        rows.push((score, d, flagged_ms(&mine, from, to), active(&mine)));
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    let total = rows.len();
    let devices: Vec<Value> = rows
        .into_iter()
        .take(limit)
        .map(|(score, d, flagged, active)| {
            json!({"device": d.id, "kind": d.kind, "segment": d.segment, "score": score,
                "active": active, "flagged_ms": flagged})
        })
        .collect();
    Ok(Json(json!({"from": from.millis(), "to": to.millis(), "total": total, "devices": devices})))
}
