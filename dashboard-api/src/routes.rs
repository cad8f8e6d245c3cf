//! REST handlers.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use store::replica::ReadSource;
use store::{
    ExportFormat, GapFill, HistoryPoint, HistoryQuery, HistorySubject, Resolution, Step, Store,
};
use telemetry::EventTime;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::formats;
use crate::params::{self, Params};
use crate::AppState;

/// Most points one history request returns.
pub const MAX_HISTORY_POINTS: usize = 100_000;
const DEFAULT_HISTORY_POINTS: usize = 10_000;
const DEFAULT_SPAN_MS: i64 = 3_600_000;
/// Points an automatic step aims at: about one per pixel column of a wall chart.
const DEFAULT_AUTO_POINTS: usize = 1_000;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(|_| ApiError::unavailable("database unreachable"))?;
    let deps = state.readiness.as_ref().map(|r| r()).unwrap_or_default();
    if let Some((_, Err(not_ready))) = deps.iter().find(|(_, check)| check.is_err()) {
        return Err(ApiError {
            code: not_ready.code,
            ..ApiError::unavailable(not_ready.message.clone())
        });
    }
    let mut body = json!({"status": "ready", "store": state.store.backend()});
    for (name, _) in deps {
        body[name] = json!(true);
    }
    if let Some(partitions) = &state.partitions {
        body["partitions"] = json!(partitions());
    }
    Ok(Json(body))
}

/// The process's metrics registry as OpenMetrics text.
pub async fn metrics(
    State(state): State<AppState>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    let mut text = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail.
    let _ = telemetry::metrics::encode_text(&mut text, &state.metrics);
    ([(axum::http::header::CONTENT_TYPE, telemetry::metrics::CONTENT_TYPE)], text)
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

pub async fn latest(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let device = p.take("device").map(|v| params::device("device", &v)).transpose()?;
    let metric = p.take("metric").map(|v| params::metric("metric", &v)).transpose()?;
    p.finish()?;
    if let Some(d) = &device {
        known_subject(&state, &HistorySubject::Device(d.clone())).await?;
    }
    let values = state.store.latest(device.as_ref(), metric).await?;
    Ok(Json(json!({ "values": values })))
}

/// 404 naming the device or road segment when the registry does not know it: a typo must
/// not look like a subject without data. A known device without readings, or a
/// decommissioned one, is known.
async fn known_subject(state: &AppState, subject: &HistorySubject) -> Result<(), ApiError> {
    match subject {
        HistorySubject::Device(d) => {
            if !state.store.unknown_devices(std::slice::from_ref(d)).await?.is_empty() {
                return Err(ApiError::unknown("device", format!("device {d} does not exist")));
            }
        }
        HistorySubject::Segment(s) => {
            if !state.store.unknown_segments(std::slice::from_ref(s)).await?.is_empty() {
                return Err(ApiError::unknown(
                    "segment",
                    format!("road segment {s} does not exist"),
                ));
            }
        }
        HistorySubject::Segments(_) | HistorySubject::City => {}
    }
    Ok(())
}

/// Which figure of a bucket the `v` of each point carries.
#[derive(Debug, Clone, Copy)]
enum Aggregate {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Last,
}

impl Aggregate {
    fn parse(v: &str) -> Result<Self, ApiError> {
        Ok(match v {
            "avg" => Aggregate::Avg,
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            "sum" => Aggregate::Sum,
            "count" => Aggregate::Count,
            "last" => Aggregate::Last,
            _ => {
                return Err(ApiError::bad_param(
                    "agg",
                    "agg must be one of avg, min, max, sum, count, last",
                ))
            }
        })
    }

    fn of(self, p: &HistoryPoint) -> f64 {
        match self {
            Aggregate::Avg => p.avg(),
            Aggregate::Min => p.min,
            Aggregate::Max => p.max,
            Aggregate::Sum => p.sum,
            Aggregate::Count => p.count as f64,
            Aggregate::Last => p.last,
        }
    }
}

/// History of one device, the devices of one segment (`segment=`), of the segments with a
/// point in a box (`bbox=min_lon,min_lat,max_lon,max_lat`), or the whole city (none), at the resolution the span calls for (`step=auto`, the default, with
/// `max_points`), at a stored level (`resolution=raw|1m|1h|1d`) or in buckets of a given
/// width (`step=15m`); `agg` picks the figure in `v`; `fill=null|previous` adds the empty
/// buckets.
pub async fn history(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let now = EventTime::now();
    let format = formats::negotiate(p.take("format"), &headers, ExportFormat::Json)?;
    formats::require_bulk_role(&who, format)?;
    let device = p.take("device").map(|v| params::device("device", &v)).transpose()?;
    let segment = p.take("segment").map(|v| params::segment("segment", &v)).transpose()?;
    let bbox = p.take("bbox").map(|v| params::bbox("bbox", &v)).transpose()?;
    let subject = match (device, segment, bbox) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(ApiError::bad_combination("segment", "give one of device, segment or bbox"))
        }
        (Some(d), None, None) => HistorySubject::Device(d),
        (None, Some(s), None) => HistorySubject::Segment(s),
        (None, None, Some(b)) => {
            HistorySubject::Segments(params::segments_in_bbox(&state.store.segments().await?, b))
        }
        (None, None, None) => HistorySubject::City,
    };
    let metric = params::metric("metric", &p.required("metric")?)?;
    let to = p.take("to").map(|v| params::time("to", &v, now)).transpose()?.unwrap_or(now);
    let from = p
        .take("from")
        .map(|v| params::time("from", &v, now))
        .transpose()?
        .unwrap_or(EventTime(to.millis().saturating_sub(DEFAULT_SPAN_MS).max(0)));
    let max_points = p
        .take("max_points")
        .map(|v| params::limit("max_points", &v, MAX_HISTORY_POINTS))
        .transpose()?;
    let step = match (p.take("step"), p.take("resolution")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_combination(
                "resolution",
                "give step or resolution, not both",
            ))
        }
        (None, Some(r)) => match Resolution::parse(&r) {
            Some(Resolution::Raw) => Step::Raw,
            Some(level) => Step::Fixed(std::time::Duration::from_millis(
                level.bucket_ms().unwrap_or(60_000) as u64,
            )),
            None => {
                return Err(ApiError::bad_param(
                    "resolution",
                    "resolution must be raw, 1m, 1h or 1d",
                ))
            }
        },
        (Some(s), None) if s == "raw" => Step::Raw,
        (None, None) => Step::Auto { max_points: max_points.unwrap_or(DEFAULT_AUTO_POINTS) },
        (Some(s), None) if s == "auto" => {
            Step::Auto { max_points: max_points.unwrap_or(DEFAULT_AUTO_POINTS) }
        }
        (Some(s), None) => Step::Fixed(humantime::parse_duration(&s).map_err(|e| {
            ApiError::bad_param(
                "step",
                format!("step must be auto, raw or a duration such as 15m: {e}"),
            )
        })?),
    };
    let fill = match p.take("fill") {
        None => GapFill::None,
        Some(v) => GapFill::parse(&v)
            .ok_or_else(|| ApiError::bad_param("fill", "fill must be none, null or previous"))?,
    };
    let agg = p.take("agg").map(|v| Aggregate::parse(&v)).transpose()?.unwrap_or(Aggregate::Avg);
    let limit = p
        .take("limit")
        .map(|v| params::limit("limit", &v, MAX_HISTORY_POINTS))
        .transpose()?
        .unwrap_or(DEFAULT_HISTORY_POINTS);
    let exclude_flagged = match p.take("exclude_flagged").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::bad_param(
                "exclude_flagged",
                "exclude_flagged must be true or false",
            ))
        }
    };
    p.finish()?;
    if from >= to {
        return Err(ApiError::bad_combination("from", "from must be before to"));
    }
    known_subject(&state, &subject).await?;
    let q = HistoryQuery { subject, metric, from, to, step, fill, limit };
    let read = |store: Store| {
        let q = &q;
        async move {
            if exclude_flagged {
                let (h, excluded) = store.history_unflagged(q).await?;
                Ok::<_, store::StoreError>((h, Some(excluded)))
            } else {
                Ok((store.history(q).await?, None))
            }
        }
    };
    let mut choice = state.reads.choose();
    let (history, excluded) = match read(choice.store.clone()).await {
        Ok(answer) => answer,
        Err(e) => match (choice.source, state.reads.replica_failed(&e)) {
            (ReadSource::Replica, Some(primary)) => {
                choice = primary;
                read(choice.store.clone()).await?
            }
            _ => return Err(e.into()),
        },
    };
    if format != ExportFormat::Json {
        let mut response = formats::history_response(
            &history,
            |p| agg.of(p),
            format,
            &format!("history-{}", q.metric.as_str()),
        )?;
        mark_read(&mut response, &choice);
        return Ok(response);
    }
    let points: Vec<Value> = match history.step_ms {
        None => history.points.iter().map(|p| json!({"t": p.time, "v": p.last})).collect(),
        Some(_) => history
            .points
            .iter()
            .map(|p| {
                json!({
                    "t": p.time, "v": agg.of(p), "count": p.count, "sum": p.sum, "min": p.min, "max": p.max,
                    "last": p.last, "avg": p.avg(),
                })
            })
            .collect(),
    };
    let (device, segment) = match &q.subject {
        HistorySubject::Device(d) => (Some(d.as_str()), None),
        HistorySubject::Segment(s) => (None, Some(s.as_str())),
        HistorySubject::Segments(_) | HistorySubject::City => (None, None),
    };
    let segments = match &q.subject {
        HistorySubject::Segments(list) => Some(list.clone()),
        _ => None,
    };
    let mut answer = json!({
        "device": device,
        "segment": segment,
        "segments": segments,
        "metric": q.metric,
        "unit": q.metric.spec().unit,
        "resolution": history.resolution,
        "step_ms": history.step_ms,
        "from": q.from,
        "to": q.to,
        // The readings counted: [from, to) unless retention dropped the detail an end
        // needs, then widened to whole buckets.
        "covered_from": history.from,
        "covered_to": history.to,
        "points": points,
    });
    if let Some(excluded) = excluded {
        answer["excluded"] = json!(excluded);
    }
    let mut response = Json(answer).into_response();
    mark_read(&mut response, &choice);
    Ok(response)
}

/// Say where a read went, when a read replica is configured: `SCCR-Read-From: replica`
/// with `SCCR-Replica-Lag` (seconds at its last probe), or `SCCR-Read-From: primary` with
/// `SCCR-Read-Reason` (`replica_down`, `replica_lagging`).
pub fn mark_read(response: &mut Response, choice: &store::replica::ReadChoice) {
    if !choice.replicated {
        return;
    }
    let h = response.headers_mut();
    h.insert("sccr-read-from", axum::http::HeaderValue::from_static(choice.source.as_str()));
    if let Some(lag) = choice.lag {
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("{:.3}", lag.as_secs_f64())) {
            h.insert("sccr-replica-lag", v);
        }
    }
    if let Some(reason) = choice.source.reason() {
        h.insert("sccr-read-reason", axum::http::HeaderValue::from_static(reason));
    }
}
