//! Alerts over REST and the alert rules admin API. The alert object is the contract's
//! (`telemetry::alert::AlertRecord`): the store returns it, the REST API and the live hub
//! show it as it is.
//!
//! The store is the authority on alerts: an operator's acknowledgement or clear is applied
//! to the store first (which refuses unknown ids with 404 and illegal moves with 409), then
//! pushed to live subscribers, then mirrored into the running alert engine through the
//! stream's bounded command queue ([`AlertControl`]), so the engine neither stores the move
//! twice nor re-raises what an operator cleared.
//!
//! The alert rules admin API is [`crate::rules`]'s.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use store::{AlertChange, AlertFilter, AlertState, AlertSubject, Severity};
use stream::{AlertKey, OperatorAction, StreamCommand};
use telemetry::EventTime;
use tokio::sync::{mpsc, Mutex};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::params::{self, Params};
use crate::AppState;

/// Most alerts one list request returns.
pub const MAX_ALERTS: usize = 1_000;

/// The handle of the running alert engine.
#[derive(Clone)]
pub struct AlertControl {
    pub commands: mpsc::Sender<StreamCommand>,
    /// The rules in force; the lock also serialises rule changes.
    pub rules: Arc<Mutex<crate::rules::StoredRules>>,
}

// ---- REST ----

/// The `state` filter's values: the states, plus the open overlays.
pub const STATE_FILTERS: [&str; 7] =
    ["open", "raised", "acknowledged", "returned", "cleared", "shelved", "suppressed"];

/// Read `state`: states (`open` is raised, acknowledged and returned), and `shelved` or
/// `suppressed`, which narrow to open alerts that are (with other states, to those of
/// them that are). Returns the states and the two narrowings.
fn states(v: &str) -> Result<(Vec<AlertState>, bool, bool), ApiError> {
    let mut out: Vec<AlertState> = Vec::new();
    let (mut shelved, mut suppressed) = (false, false);
    for s in v.split(',') {
        let more = match s.trim() {
            "open" => AlertState::OPEN.to_vec(),
            "shelved" => {
                shelved = true;
                Vec::new()
            }
            "suppressed" => {
                suppressed = true;
                Vec::new()
            }
            name => match AlertState::parse(name) {
                Some(state) => vec![state],
                None => {
                    return Err(ApiError::bad_param(
                        "state",
                        "state must be open, raised, acknowledged, returned, cleared, shelved or suppressed (comma-separated for several)",
                    ))
                }
            },
        };
        for state in more {
            if !out.contains(&state) {
                out.push(state);
            }
        }
    }
    if (shelved || suppressed) && out.is_empty() {
        out = AlertState::OPEN.to_vec();
    }
    Ok((out, shelved, suppressed))
}

fn severities(v: &str) -> Result<Vec<Severity>, ApiError> {
    v.split(',')
        .map(|s| match s.trim() {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            _ => Err(ApiError::bad_param(
                "severity",
                "severity must be info, warning or critical (comma-separated for several)",
            )),
        })
        .collect()
}

/// `GET /api/v1/alerts`: newest first; filters `state`, `severity`, `segment`, `device`,
/// `rule`; paging by `before` (the `next` of the previous page) and `limit`.
pub async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let mut filter = AlertFilter::default();
    if let Some(v) = p.take("state") {
        let (states, shelved, suppressed) = states(&v)?;
        filter.states = states;
        filter.shelved = shelved.then_some(true);
        filter.suppressed = suppressed.then_some(true);
    }
    if let Some(v) = p.take("severity") {
        filter.severities = severities(&v)?;
    }
    let device = p.take("device").map(|v| params::device("device", &v)).transpose()?;
    let segment = p.take("segment").map(|v| params::segment("segment", &v)).transpose()?;
    filter.subject = match (device, segment) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_combination("segment", "give device or segment, not both"))
        }
        (Some(d), None) => Some(AlertSubject::Device(d)),
        (None, Some(s)) => Some(AlertSubject::Segment(s)),
        (None, None) => None,
    };
    filter.subject_kind = filter.subject.as_ref().map(AlertSubject::kind);
    filter.rule = p.take("rule");
    filter.before_id = p
        .take("before")
        .map(|v| {
            params::whole::<i64>(&v).ok_or_else(|| {
                ApiError::bad_param(
                    "before",
                    "before must be an alert id (the `next` of the previous page)",
                )
            })
        })
        .transpose()?;
    filter.limit = p
        .take("limit")
        .map(|v| params::limit("limit", &v, MAX_ALERTS))
        .transpose()?
        .unwrap_or(AlertFilter::DEFAULT_LIMIT);
    p.finish()?;
    let alerts = state.store.alerts(&filter).await?;
    let next = (alerts.len() == filter.limit).then(|| alerts.last().map(|a| a.id)).flatten();
    Ok(Json(json!({ "alerts": alerts, "next": next })))
}

fn alert_id(raw: &str) -> Result<i64, ApiError> {
    params::whole::<i64>(raw).filter(|id| *id >= 1).ok_or_else(|| {
        ApiError::bad_param("id", format!("an alert id is a whole number from 1 to {}", i64::MAX))
    })
}

/// `GET /api/v1/alerts/{id}`: the alert with its lifecycle events, oldest first.
pub async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = alert_id(&id)?;
    let Some(record) = state.store.alert(id).await? else {
        return Err(ApiError::not_found(format!("alert {id} does not exist")));
    };
    let events = state.store.alert_events(id).await?;
    Ok(Json(json!({ "alert": record, "events": events })))
}

/// The body of an acknowledgement or a clear. The operator is the caller's token name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorBody {
    #[serde(default)]
    note: Option<String>,
}

/// Longest note kept.
const MAX_NOTE: usize = 2_000;

fn operator_note(body: &Bytes) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let parsed: OperatorBody = crate::access::json_body(body, r#"{"note": "…"}"#)?;
    let note = parsed.note.filter(|n| !n.trim().is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > MAX_NOTE) {
        return Err(ApiError::bad_field(
            "note",
            format!("note is longer than {MAX_NOTE} characters"),
        ));
    }
    if note
        .as_ref()
        .is_some_and(|n| n.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')))
    {
        return Err(ApiError::bad_field(
            "note",
            "note must not contain control characters other than line breaks and tabs",
        ));
    }
    Ok(note)
}

async fn operator_move(
    state: AppState,
    who: Principal,
    id: String,
    body: Bytes,
    action: OperatorAction,
) -> Result<Json<Value>, ApiError> {
    let id = alert_id(&id)?;
    let note = operator_note(&body)?;
    let at = EventTime::now();
    let change = match action {
        OperatorAction::Acknowledge => AlertChange::Acknowledge,
        _ => AlertChange::Clear,
    };
    store_operator_move(state, who, id, change, action, note, at).await
}

/// Take an operator's move in the store, audit it, push it live and mirror it into the
/// alert engine; answers `{"alert": …}`.
async fn store_operator_move(
    state: AppState,
    who: Principal,
    id: i64,
    change: AlertChange,
    action: OperatorAction,
    note: Option<String>,
    at: EventTime,
) -> Result<Json<Value>, ApiError> {
    let by = who.name.clone();
    let record = state.store.change_alert(id, &change, Some(&by), note.as_deref(), at).await?;
    let detail = match &change {
        AlertChange::Shelve { reason, until } => json!({ "reason": reason, "until": until }),
        _ => json!({ "note": note }),
    };
    crate::access::audit(&state, &who, action.name(), &format!("alert/{id}"), detail).await;
    state.hub.publish_alert(record.clone());
    let reply = json!({ "alert": record });
    if let (Some(control), Some(key)) = (&state.alerts, AlertKey::of_record(&record)) {
        let command =
            StreamCommand::Operator { action, key, by, note, at, alert: Box::new(record) };
        if control.commands.send(command).await.is_err() {
            tracing::warn!(
                id,
                "the stream task is gone; the alert engine does not see this operator action"
            );
        }
    }
    Ok(Json(reply))
}

/// `POST /api/v1/alerts/{id}/ack` with `{"note": "..."}` (optional); the operator is the
/// caller.
pub async fn acknowledge(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    operator_move(state, who, id, body, OperatorAction::Acknowledge).await
}

/// `POST /api/v1/alerts/{id}/clear` with `{"note": "..."}` (optional).
pub async fn clear(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    operator_move(state, who, id, body, OperatorAction::Clear).await
}

/// The body of a shelving: `{"reason": …, "for": "2h"}` or `{"reason": …, "until": t}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShelveBody {
    reason: String,
    #[serde(rename = "for", default)]
    hold: Option<String>,
    /// A JSON Schema integer: `5` or `5.0`.
    #[serde(default)]
    until: Option<f64>,
}

/// Longest shelving reason, in characters.
pub const MAX_SHELVE_REASON: usize = 500;

/// The shelving `body` asks for at `now`, checked against `max_shelve`: the reason and
/// the time the shelf ends.
fn shelving(
    body: &Bytes,
    now: EventTime,
    max_shelve: std::time::Duration,
) -> Result<(String, EventTime), ApiError> {
    let parsed: ShelveBody = crate::access::json_body(
        body,
        r#"{"reason": "…", "for": "2h"} or {"reason": "…", "until": 1767225600000}"#,
    )?;
    let reason = parsed.reason.trim().to_owned();
    let chars = reason.chars().count();
    if chars == 0 || chars > MAX_SHELVE_REASON {
        return Err(ApiError::unprocessable(
            "reason",
            format!("reason must be 1 to {MAX_SHELVE_REASON} characters"),
        ));
    }
    if reason.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(ApiError::unprocessable(
            "reason",
            "reason must not contain control characters other than line breaks and tabs",
        ));
    }
    let max_ms = i64::try_from(max_shelve.as_millis()).unwrap_or(i64::MAX);
    let until = match (parsed.hold, parsed.until) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::unprocessable("for", "give exactly one of for and until"))
        }
        (Some(text), None) => {
            let d = humantime::parse_duration(text.trim()).map_err(|e| {
                ApiError::unprocessable("for", format!("for must be a duration like \"2h\": {e}"))
            })?;
            if d.is_zero() {
                return Err(ApiError::unprocessable("for", "for must be positive"));
            }
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            if ms > max_ms {
                return Err(ApiError::unprocessable(
                    "for",
                    format!(
                        "for must be at most alerts.max_shelve ({})",
                        humantime::format_duration(max_shelve)
                    ),
                ));
            }
            EventTime(now.millis() + ms)
        }
        (None, Some(until)) => {
            if until.fract() != 0.0 || !(0.0..=253_402_300_799_999.0).contains(&until) {
                return Err(ApiError::bad_field(
                    "until",
                    "until must be a whole number of Unix milliseconds",
                ));
            }
            let until = EventTime(until as i64);
            if until <= now {
                return Err(ApiError::unprocessable("until", "until must be in the future"));
            }
            if until.millis() - now.millis() > max_ms {
                return Err(ApiError::unprocessable(
                    "until",
                    format!(
                        "until must be at most alerts.max_shelve ({}) ahead",
                        humantime::format_duration(max_shelve)
                    ),
                ));
            }
            until
        }
    };
    Ok((reason, until))
}

/// The longest shelf: the rules document's in force where an engine runs here, else the
/// configured one.
async fn max_shelve(state: &AppState) -> std::time::Duration {
    match &state.alerts {
        Some(control) => control.rules.lock().await.rules.max_shelve,
        None => state.max_shelve,
    }
}

/// `POST /api/v1/alerts/{id}/shelve` with `{"reason": …, "for": "2h"}` or
/// `{"reason": …, "until": t}`: the open alert stays as it is and signals nothing until
/// then (ISA-18.2 shelving). The operator is the caller.
pub async fn shelve(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = alert_id(&id)?;
    let at = EventTime::now();
    let (reason, until) = shelving(&body, at, max_shelve(&state).await)?;
    let action = OperatorAction::Shelve { reason: reason.clone(), until };
    let change = AlertChange::Shelve { reason: reason.clone(), until };
    store_operator_move(state, who, id, change, action, Some(reason), at).await
}

/// `POST /api/v1/alerts/{id}/unshelve` with `{"note": …}` (optional).
pub async fn unshelve(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = alert_id(&id)?;
    let note = operator_note(&body)?;
    let at = EventTime::now();
    store_operator_move(state, who, id, AlertChange::Unshelve, OperatorAction::Unshelve, note, at)
        .await
}

/// `GET /api/v1/segments`: a GeoJSON FeatureCollection of the live road segments, each
/// with its live traffic state (that of its newest emitted window) in `properties`;
/// `bbox=` keeps those whose bounding box crosses an area (read through the store's
/// bounding-box index), `zoom=` simplifies their geometry for that zoom level.
pub async fn segments(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let bbox = p.take("bbox").map(|v| crate::params::bbox("bbox", &v)).transpose()?;
    let zoom = p
        .take("zoom")
        .map(|v| {
            crate::params::whole::<u8>(&v)
                .filter(|z| *z <= 22)
                .ok_or_else(|| ApiError::bad_param("zoom", "zoom must be a whole number 0..=22"))
        })
        .transpose()?;
    p.finish()?;
    let segments = match bbox {
        Some(b) => state.store.segments_in(b).await?,
        None => state.store.segments().await?,
    };
    let tolerance = zoom.map(telemetry::cadastre::geometry::zoom_tolerance);
    let features: Vec<Value> = segments
        .iter()
        .map(|s| {
            let live = state.hub.segment_state(&s.id);
            let coordinates = match tolerance {
                Some(t) => telemetry::cadastre::geometry::simplify(&s.coordinates, t),
                None => s.coordinates.clone(),
            };
            json!({
                "type": "Feature",
                "id": s.id,
                "geometry": { "type": "LineString", "coordinates": coordinates },
                "properties": {
                    "id": s.id,
                    "name": s.name,
                    "kind": s.kind,
                    "length_m": s.length_m,
                    "lanes": s.lanes,
                    "speed_limit_kmh": s.speed_limit_kmh,
                    "free_flow_kmh": s.free_flow_kmh,
                    "capacity_vph": s.capacity_vph,
                    "flow_vph": live.as_ref().and_then(|l| l.flow_vph),
                    "speed_kmh": live.as_ref().and_then(|l| l.speed_kmh),
                    "occupancy_pct": live.as_ref().and_then(|l| l.occupancy_pct),
                    "los": live.as_ref().and_then(|l| l.los),
                    "detectors": live.as_ref().map(|l| l.detectors),
                    "window": live.as_ref().map(|l| json!({"start": l.start, "end": l.end, "revision": l.revision})),
                    "forecast": live.as_ref().and_then(|l| l.forecast.as_ref()),
                }
            })
        })
        .collect();
    Ok(Json(json!({ "type": "FeatureCollection", "features": features })))
}
