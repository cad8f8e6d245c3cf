//! What the wall map needs from the server, each in one call:
//! - `GET /api/v1/catalogue`: the metric catalogue with labels, display units and
//!   decimals (`telemetry::metric`), the Level of Service bounds (`stream::los`), the live
//!   hub's freshness figures (`stream::live`), the alert message codes with their
//!   parameters and English templates (`telemetry::alert::MESSAGE_CODES`), the device
//!   kinds in the registry and the languages; screens keep no copy of any of it.
//! - `GET /api/v1/map/devices`: every in-service device with its position and presence,
//!   as compact rows, paged by id.
//! - `GET /api/v1/wall`: the configured basemap (`[wall]`, see [`crate::basemap`]).
//!
//! Device positions: the registry has no coordinates, so a device is placed on its road
//! segment: the `n` in-service devices of a segment, in id order, sit at the fractions
//! `(k + 1) / (n + 1)` of the segment polyline's length (lengths equirectangular, with
//! the cosine of each piece's mean latitude). Devices without a segment (or whose segment
//! has no geometry) have null coordinates.

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use stream::LevelOfService;
use telemetry::{DeviceId, EventTime, MetricId, RoadSegment, SegmentId};

use crate::error::ApiError;
use crate::params::{self, Params};
use crate::AppState;

/// Devices per `GET /api/v1/map/devices` page when `limit` is not given.
pub const DEFAULT_MAP_PAGE: usize = 5_000;
/// Most devices per page; a larger `limit` is refused with 422.
pub const MAX_MAP_PAGE: usize = 20_000;
/// The columns of each `GET /api/v1/map/devices` row, in order.
pub const MAP_COLUMNS: [&str; 7] = ["id", "kind", "segment", "lon", "lat", "online", "last_seen"];

/// The catalogue document, given the kinds of the registered devices (which come from the
/// registry; `device_kinds` lists every kind devices and kind-scoped rules may name).
pub fn catalogue_document(registered_kinds: &[String]) -> Value {
    let metrics: Vec<Value> = MetricId::ALL
        .iter()
        .map(|m| {
            let s = m.spec();
            json!({
                "id": s.name,
                "label": {"en": s.label.en, "it": s.label.it},
                "unit": s.display_unit,
                "unit_ascii": s.unit,
                "decimals": s.decimals,
                "min": s.min,
                "max": s.max,
                "kind": s.kind.as_str(),
                "zero_based": s.zero_based,
                "aggregate": s.kind.aggregate().as_str(),
            })
        })
        .collect();
    let levels: Vec<Value> = LevelOfService::ALL
        .iter()
        .map(|l| json!({"los": l.as_str(), "above_ratio": l.lower_bound()}))
        .collect();
    let alert_codes: Vec<Value> = telemetry::alert::MESSAGE_CODES
        .iter()
        .map(|m| json!({"code": m.code, "params": m.params, "english": m.english}))
        .collect();
    json!({
        "metrics": metrics,
        "alert_codes": alert_codes,
        "los": {"basis": "speed / free-flow speed", "levels": levels},
        "live": {
            "speed_fresh_s": stream::live::SPEED_FRESH_MS / 1_000,
            "device_online_s": stream::live::PRESENCE_WINDOW_MS / 1_000,
        },
        "device_kinds": telemetry::DeviceKind::ALL.map(telemetry::DeviceKind::as_str),
        "registered_device_kinds": registered_kinds,
        "languages": telemetry::metric::LANGUAGES,
    })
}

/// `GET /api/v1/catalogue`.
pub async fn catalogue(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    Params::parse(raw.as_deref())?.finish()?;
    let kinds = state.store.device_kinds().await?;
    Ok(Json(catalogue_document(&kinds)))
}

/// `GET /api/v1/wall`.
pub async fn wall(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    Params::parse(raw.as_deref())?.finish()?;
    Ok(Json(json!({"basemap": state.wall.basemap_json()})))
}

/// A segment polyline with the cumulative length at each vertex.
struct Polyline<'a> {
    points: &'a [[f64; 2]],
    cumulative: Vec<f64>,
}

impl<'a> Polyline<'a> {
    fn new(points: &'a [[f64; 2]]) -> Self {
        let mut cumulative = Vec::with_capacity(points.len());
        let mut total = 0.0;
        for (i, p) in points.iter().enumerate() {
            if i > 0 {
                let q = points[i - 1];
                let cos = ((p[1] + q[1]) / 2.0).to_radians().cos();
                total += ((p[0] - q[0]) * cos).hypot(p[1] - q[1]);
            }
            cumulative.push(total);
        }
        Self { points, cumulative }
    }

    /// The point at `fraction` (0..=1) of the length; `None` without points.
    fn at(&self, fraction: f64) -> Option<[f64; 2]> {
        let first = *self.points.first()?;
        let total = *self.cumulative.last()?;
        if total <= 0.0 || !total.is_finite() {
            return Some(first);
        }
        let target = fraction.clamp(0.0, 1.0) * total;
        let i = self.cumulative.partition_point(|&c| c < target).clamp(1, self.points.len() - 1);
        let (a, b) = (self.points[i - 1], self.points[i]);
        let piece = self.cumulative[i] - self.cumulative[i - 1];
        let t = if piece > 0.0 { (target - self.cumulative[i - 1]) / piece } else { 0.0 };
        Some([a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t])
    }
}

/// Where the `index`-th of `of` devices of a segment with this geometry sits.
pub fn device_position(coordinates: &[[f64; 2]], index: u32, of: u32) -> Option<[f64; 2]> {
    place(&Polyline::new(coordinates), index, of)
}

fn place(line: &Polyline<'_>, index: u32, of: u32) -> Option<[f64; 2]> {
    let fraction = (f64::from(index) + 1.0) / (f64::from(of.max(index + 1)) + 1.0);
    line.at(fraction)
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// `GET /api/v1/map/devices?limit=&cursor=`.
pub async fn devices(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let limit = match p.take("limit") {
        None => DEFAULT_MAP_PAGE,
        Some(v) => match params::whole::<u64>(&v) {
            Some(n) if n > MAX_MAP_PAGE as u64 => {
                return Err(ApiError::bad_combination(
                    "limit",
                    format!("limit must be at most {MAX_MAP_PAGE}; page with cursor"),
                ))
            }
            Some(n) if n >= 1 => n as usize,
            _ => {
                return Err(ApiError::bad_param(
                    "limit",
                    format!("limit must be a whole number in 1..={MAX_MAP_PAGE}"),
                ))
            }
        },
    };
    let after = p
        .take("cursor")
        .map(|v| {
            DeviceId::parse(&v).map_err(|_| {
                ApiError::bad_param("cursor", "cursor must be a next_cursor from a previous page")
            })
        })
        .transpose()?;
    p.finish()?;
    let (segments, page) = tokio::try_join!(
        state.store.segments(),
        state.store.placed_devices(after.as_ref(), limit)
    )?;
    let lines: HashMap<&SegmentId, Polyline<'_>> =
        segments.iter().map(|s: &RoadSegment| (&s.id, Polyline::new(&s.coordinates))).collect();
    let presence = state.hub.presences(page.iter().map(|d| &d.id), EventTime::now());
    let rows: Vec<Row<'_>> = page
        .iter()
        .zip(presence)
        .map(|(d, presence)| {
            let at = d
                .segment
                .as_ref()
                .and_then(|s| lines.get(s))
                .and_then(|line| place(line, d.index, d.of));
            (
                d.id.as_str(),
                d.kind.as_deref(),
                d.segment.as_ref().map(SegmentId::as_str),
                at.map(|p| round6(p[0])),
                at.map(|p| round6(p[1])),
                presence.map(|p| p.0),
                presence.and_then(|p| p.1).map(EventTime::millis),
            )
        })
        .collect();
    let next = (page.len() == limit).then(|| page.last().map(|d| d.id.as_str())).flatten();
    let body = serde_json::to_vec(&Page { columns: MAP_COLUMNS, rows, next_cursor: next })
        .map_err(|e| ApiError {
            status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: format!("cannot write the page: {e}"),
            param: None,
            errors: Vec::new(),
        })?;
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// id, kind, segment, lon, lat, online, last_seen.
type Row<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<f64>,
    Option<f64>,
    Option<bool>,
    Option<i64>,
);

#[derive(serde::Serialize)]
struct Page<'a> {
    columns: [&'static str; 7],
    rows: Vec<Row<'a>>,
    next_cursor: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_spread_evenly_along_the_polyline() {
        // Two equal pieces along the equator (cos = 1): 0..1 then 1..2 degrees of longitude.
        let line = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]];
        let at = |k, n| device_position(&line, k, n).unwrap();
        assert_eq!(at(0, 1), [1.0, 0.0]);
        let third = at(0, 2);
        assert!((third[0] - 2.0 / 3.0).abs() < 1e-12 && third[1] == 0.0);
        let two_thirds = at(1, 2);
        assert!((two_thirds[0] - 4.0 / 3.0).abs() < 1e-12);
        // An L shape: 1 degree east, then 1 degree north; the middle is the corner.
        let l = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]];
        let mid = device_position(&l, 0, 1).unwrap();
        assert!((mid[0] - 1.0).abs() < 1e-3 && mid[1].abs() < 1e-3, "{mid:?}");
        // Degenerate geometry.
        assert_eq!(device_position(&[], 0, 1), None);
        assert_eq!(device_position(&[[5.0, 6.0]], 0, 3), Some([5.0, 6.0]));
        assert_eq!(device_position(&[[5.0, 6.0], [5.0, 6.0]], 1, 3), Some([5.0, 6.0]));
    }

    #[test]
    fn longitude_is_shortened_by_latitude() {
        // At 60° a degree of longitude is half a degree of latitude long: a piece 2° east
        // then 1° north has two equal halves, so the middle is the corner.
        let line = [[10.0, 60.0], [12.0, 60.0], [12.0, 61.0]];
        let mid = device_position(&line, 0, 1).unwrap();
        assert!((mid[0] - 12.0).abs() < 0.02 && (mid[1] - 60.0).abs() < 0.02, "{mid:?}");
    }

    #[test]
    fn the_catalogue_lists_every_metric_once_with_both_languages() {
        let doc = catalogue_document(&["loop".to_owned()]);
        let metrics = doc["metrics"].as_array().unwrap();
        assert_eq!(metrics.len(), MetricId::ALL.len());
        for m in MetricId::ALL {
            let found: Vec<&Value> = metrics.iter().filter(|v| v["id"] == m.as_str()).collect();
            assert_eq!(found.len(), 1, "{m}");
            let v = found[0];
            for lang in telemetry::metric::LANGUAGES {
                assert!(v["label"][lang].as_str().is_some_and(|l| !l.is_empty()), "{m} {lang}");
            }
            assert!(v["unit"].is_string() && v["unit_ascii"].is_string(), "{m}");
            assert!(["gauge", "count", "bool", "code"].contains(&v["kind"].as_str().unwrap()));
            assert!(["avg", "sum", "last"].contains(&v["aggregate"].as_str().unwrap()));
        }
        let no2 = metrics.iter().find(|v| v["id"] == "no2_ugm3").unwrap();
        assert_eq!(no2["unit"], "µg/m³");
        assert_eq!(no2["unit_ascii"], "ug/m3");
        assert_eq!(no2["label"]["en"], "NO₂");
        assert_eq!(doc["languages"], json!(["it", "en"]));
        assert_eq!(doc["registered_device_kinds"], json!(["loop"]));
        assert_eq!(doc["device_kinds"].as_array().unwrap().len(), telemetry::DeviceKind::ALL.len());
        assert_eq!(doc["live"]["device_online_s"], 300);
        assert_eq!(doc["live"]["speed_fresh_s"], 90);
        let codes = doc["alert_codes"].as_array().unwrap();
        assert_eq!(codes.len(), telemetry::alert::MESSAGE_CODES.len());
        let threshold = codes.iter().find(|c| c["code"] == "threshold_above").unwrap();
        assert!(threshold["params"].as_array().unwrap().contains(&json!("limit")));
    }

    #[test]
    fn the_catalogue_los_levels_agree_with_the_grading() {
        let doc = catalogue_document(&[]);
        let levels = doc["los"]["levels"].as_array().unwrap();
        let letters: Vec<&str> = levels.iter().map(|l| l["los"].as_str().unwrap()).collect();
        assert_eq!(letters, ["A", "B", "C", "D", "E", "F"]);
        let bounds: Vec<Option<f64>> = levels.iter().map(|l| l["above_ratio"].as_f64()).collect();
        assert_eq!(bounds, [Some(0.85), Some(0.67), Some(0.5), Some(0.4), Some(0.3), None]);
        for l in levels {
            let los: LevelOfService = l["los"].as_str().unwrap().parse().unwrap();
            match l["above_ratio"].as_f64() {
                Some(b) => {
                    // Just above the bound: this grade; at the bound: a worse one.
                    assert_eq!(LevelOfService::from_speed_ratio(b + 1e-9), Some(los));
                    assert!(LevelOfService::from_speed_ratio(b).unwrap() > los);
                }
                None => assert_eq!(LevelOfService::from_speed_ratio(0.0), Some(los)),
            }
        }
    }
}
