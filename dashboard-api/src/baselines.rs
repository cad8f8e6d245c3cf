//! `GET /api/v1/baselines`: a learned time-of-week profile (`telemetry::baseline`)
//! expanded into a time series aligned with history's 15-minute buckets.

use axum::extract::{RawQuery, State};
use axum::Json;
use serde_json::{json, Value};
use telemetry::baseline::{
    learned_metric, BaselineOn, SlotClock, DEVICE_METRICS, SEGMENT_FIGURES, SLOT_MS,
};
use telemetry::EventTime;

use crate::error::ApiError;
use crate::params::{self, Params};
use crate::AppState;

/// The longest range answered: 31 days of 15-minute points.
pub const MAX_SPAN_MS: i64 = 31 * 86_400_000;
/// The range without `from`: the day before `to`.
const DEFAULT_SPAN_MS: i64 = 86_400_000;

/// The baselines' settings the API needs (`[baselines]`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BaselineSettings {
    pub clock: SlotClock,
}

pub async fn baselines(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let now = EventTime::now();
    let device = p.take("device").map(|v| params::device("device", &v)).transpose()?;
    let segment = p.take("segment").map(|v| params::segment("segment", &v)).transpose()?;
    let metric = p.required("metric")?;
    let to = p.take("to").map(|v| params::time("to", &v, now)).transpose()?.unwrap_or(now);
    let from = p
        .take("from")
        .map(|v| params::time("from", &v, now))
        .transpose()?
        .unwrap_or(EventTime(to.millis().saturating_sub(DEFAULT_SPAN_MS)));
    p.finish()?;
    let (on, subject) = match (&device, &segment) {
        (Some(d), None) => (BaselineOn::Device, d.as_str().to_owned()),
        (None, Some(s)) => (BaselineOn::Segment, s.as_str().to_owned()),
        _ => return Err(ApiError::bad_combination("segment", "give one of device or segment")),
    };
    let Some(metric) = learned_metric(on, &metric) else {
        let learned: Vec<&str> = match on {
            BaselineOn::Device => DEVICE_METRICS.iter().map(|m| m.as_str()).collect(),
            BaselineOn::Segment => SEGMENT_FIGURES.to_vec(),
        };
        let message = format!(
            "no baseline of {metric:?} is learned for a {}; the learned ones are {}",
            on.as_str(),
            learned.join(", ")
        );
        // A metric learned for the other kind of subject matches the schema's enum: the
        // parameters contradict each other (422); any other is a bad parameter (400).
        let other = match on {
            BaselineOn::Device => BaselineOn::Segment,
            BaselineOn::Segment => BaselineOn::Device,
        };
        return Err(if learned_metric(other, &metric).is_some() {
            ApiError::bad_combination("metric", message)
        } else {
            ApiError::bad_param("metric", message)
        });
    };
    if from >= to {
        return Err(ApiError::bad_combination("from", "from must be before to"));
    }
    if to.millis().saturating_sub(from.millis()) > MAX_SPAN_MS {
        return Err(ApiError::bad_combination("to", "a range spans at most 31 days"));
    }
    if let Some(d) = &device {
        if !state.store.unknown_devices(std::slice::from_ref(d)).await?.is_empty() {
            return Err(ApiError::unknown("device", format!("device {d} does not exist")));
        }
    }
    if let Some(s) = &segment {
        if !state.store.unknown_segments(std::slice::from_ref(s)).await?.is_empty() {
            return Err(ApiError::unknown("segment", format!("road segment {s} does not exist")));
        }
    }
    let clock = state.baselines.clock;
    let rows = state.store.baseline_profile(on, &subject, metric).await?;
    let mut slots = vec![None; telemetry::baseline::SLOTS_PER_WEEK];
    for r in &rows {
        if let Some(s) = slots.get_mut(usize::from(r.slot)) {
            *s = Some(r);
        }
    }
    // Every 15-minute bucket overlapping [from, to), as history buckets them.
    let mut points = Vec::new();
    let mut t = from.millis().div_euclid(SLOT_MS) * SLOT_MS;
    while t < to.millis() {
        let point = match slots[clock.slot(EventTime(t))] {
            Some(r) => {
                json!({"t": t, "centre": r.centre, "spread": r.spread, "samples": r.samples})
            }
            None => json!({"t": t, "centre": null, "spread": null, "samples": 0}),
        };
        points.push(point);
        t += SLOT_MS;
    }
    Ok(Json(json!({
        "device": device.as_ref().map(|d| d.as_str()),
        "segment": segment.as_ref().map(|s| s.as_str()),
        "metric": metric,
        "from": from.millis(),
        "to": to.millis(),
        "step_ms": SLOT_MS,
        "utc_offset_minutes": clock.offset_minutes_at(from),
        "timezone": clock.zone_name(),
        "learned_slots": rows.len(),
        "points": points,
    })))
}
