//! Road operations over REST (docs/operations.md): incidents, roadworks, closures and
//! planned events on the Road Cadastre.
//!
//! - Roles: operators and admins create, edit, move and annotate any operation; planners
//!   create and edit planned `roadworks` and `event` operations and annotate any. An
//!   external system (the roadworks permit system) gets a `planner` token: it creates and
//!   updates its planned roadworks with an `Idempotency-Key` (per token name) and
//!   `external_ref` holding its permit number.
//! - `PATCH` needs `If-Match` with the version read (`ETag: "3"`): 428 without, 412 when
//!   another change came first (nothing written). A status move or a note takes `If-Match`
//!   optionally. Ended and cancelled operations are final (409).
//! - Bodies: a field that breaks what the OpenAPI schema states is 400 naming it; what the
//!   schema cannot state (a window ending before it starts, an unknown segment, an area
//!   crossing itself) is 422 naming it, as everywhere in this API.
//! - Every change is pushed to the live hub (`{"type":"operation",…}`) after the store took
//!   it, with its outbox event and audit-trail entry written in its transaction.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use store::operations::{rfc3339, MAX_PAGE};
use store::{
    ActualWindow, ChangeKind, Created, HistoryQuery, HistorySubject, Operation, OperationFilter,
    OperationKind, OperationSeverity, OperationStatus, PlannedWindow, StoreError,
};
use telemetry::{EventTime, MetricId, SegmentId};

use crate::auth::{Principal, Role, OPERATORS, READERS};
use crate::error::ApiError;
use crate::openapi::Op;
use crate::params::Params;
use crate::AppState;

const MAX_KEY: usize = 128;
/// Longest body of an operation (an area of 2,000 positions fits).
pub const MAX_BODY: usize = 256 * 1024;

/// Fields a failure of which the OpenAPI schema states (400); others are 422.
const SCHEMA_FIELDS: &[&str] =
    &["title", "description", "agency", "point", "text", "external_ref", "linked_alerts"];

/// The JSON schema of an operation (answers, live frames, outbox data).
pub fn operation_schema() -> Value {
    let time = json!({"type": "string", "format": "date-time"});
    let time_or_null = json!({"type": ["string", "null"], "format": "date-time"});
    json!({
        "type": "object",
        "required": ["id", "version", "kind", "title", "severity", "status", "agency", "segments", "derived_segments", "point", "area", "closes_road", "planned", "actual", "notes", "linked_alerts", "external_ref", "created_at", "created_by", "updated_at", "updated_by"],
        "properties": {
            "id": {"type": "string", "pattern": "^op-[a-z0-9-]{1,60}$", "description": "Server-assigned, stable, URL-safe"},
            "version": {"type": "integer", "minimum": 1, "description": "Increases on every change; the ETag is its quoted form"},
            "kind": {"enum": ["incident", "roadworks", "closure", "event"]},
            "title": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "severity": {"enum": ["minor", "moderate", "major", "critical"]},
            "status": {"enum": ["planned", "active", "ended", "cancelled"]},
            "agency": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"},
            "segments": {"type": "array", "items": {"type": "string"}},
            "derived_segments": {"type": "array", "items": {"type": "string"}, "description": "Set by the server when no segments are given: the segment nearest the point, or those reaching into the area; alerts on them are explained as on segments"},
            "point": {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 2, "maxItems": 2, "description": "[lon, lat], WGS84"},
            "area": {"type": ["object", "null"], "description": "A GeoJSON Polygon"},
            "closes_road": {"type": "boolean"},
            "planned": {"type": "object", "required": ["from", "to"], "properties": {"from": time.clone(), "to": time.clone()}},
            "actual": {"type": "object", "required": ["from", "to"], "properties": {"from": time_or_null.clone(), "to": time_or_null}},
            "notes": {"type": "array", "items": {"type": "object", "required": ["at", "by", "text"], "properties": {"at": time.clone(), "by": {"type": "string"}, "text": {"type": "string"}}}},
            "linked_alerts": {"type": "array", "items": {"type": "integer"}},
            "external_ref": {"type": ["string", "null"]},
            "created_at": time.clone(), "created_by": {"type": "string"},
            "updated_at": time, "updated_by": {"type": "string"}
        },
        "examples": [example()]
    })
}

/// An operation as the API shows it, for the schema's example.
fn example() -> Value {
    json!({
        "id": "op-0195b1c2d3e-4f5a6b7c", "version": 3, "kind": "roadworks",
        "title": "Gas main works on Lungarno Torrigiani", "description": "One lane closed",
        "severity": "moderate", "status": "active", "agency": "utilities",
        "segments": ["lungarno-torrigiani"], "derived_segments": [], "point": [11.2571, 43.7664], "area": null,
        "closes_road": false,
        "planned": {"from": "2026-11-02T07:00:00Z", "to": "2026-11-06T18:00:00Z"},
        "actual": {"from": "2026-11-02T07:20:00Z", "to": null},
        "notes": [{"at": "2026-11-02T07:25:00Z", "by": "wall-3", "text": "Barriers in place"}],
        "linked_alerts": [], "external_ref": "PERM-2026-0412",
        "created_at": "2026-10-28T09:00:00Z", "created_by": "permits",
        "updated_at": "2026-11-02T07:25:00Z", "updated_by": "wall-3"
    })
}

fn text_schema(max: usize) -> Value {
    // No control character but tab and line breaks, and at least one character that is
    // neither a space nor a control character (`\S` alone would admit a lone DEL).
    const CTRL: &str = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f";
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": format!("^[^{CTRL}]*[^\\s{CTRL}][^{CTRL}]*$")})
}

/// The schema of an operation's editable fields (`required` for creation).
fn body_schema(required: &[&str], creation: bool) -> Value {
    let lon = json!({"type": "number", "minimum": -180, "maximum": 180});
    let lat = json!({"type": "number", "minimum": -90, "maximum": 90});
    let position = json!({"type": "array", "prefixItems": [lon, lat], "items": false, "minItems": 2, "maxItems": 2});
    let time = json!({"type": "string", "format": "date-time"});
    let mut schema = json!({
        "type": "object", "additionalProperties": false, "required": required,
        "properties": {
            "kind": {"enum": ["incident", "roadworks", "closure", "event"]},
            "title": text_schema(store::operations::MAX_TITLE),
            "description": {"anyOf": [text_schema(store::operations::MAX_DESCRIPTION), {"type": "null"}]},
            "severity": {"enum": ["minor", "moderate", "major", "critical"]},
            "agency": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"},
            "segments": {"type": "array", "maxItems": store::operations::MAX_SEGMENTS, "uniqueItems": true, "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,63}$"}, "description": "Road Cadastre segments (existing ones)"},
            "point": {"anyOf": [position.clone(), {"type": "null"}]},
            "area": {"anyOf": [{"type": "object", "required": ["type", "coordinates"], "properties": {"type": {"const": "Polygon"}, "coordinates": {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 4, "items": position}}}}, {"type": "null"}], "description": "A GeoJSON Polygon: closed rings that do not cross themselves"},
            "closes_road": {"type": "boolean", "description": "Traffic cannot pass the segments (default: true for closures)"},
            "planned": {"type": "object", "additionalProperties": false, "required": ["from", "to"], "properties": {"from": time.clone(), "to": time.clone()}, "description": "to must be after from (422)"},
            "linked_alerts": {"type": "array", "maxItems": store::operations::MAX_LINKED_ALERTS, "items": {"type": "integer", "minimum": 1, "maximum": i64::MAX}},
            "external_ref": {"anyOf": [text_schema(store::operations::MAX_EXTERNAL_REF), {"type": "null"}], "description": "e.g. the roadworks permit number"},
        }
    });
    if creation {
        schema["properties"]["status"] = json!({"enum": ["planned", "active", null], "description": "planned (default) or active (actual.from = now)"});
    }
    schema
}

/// The operation routes.
pub fn operations() -> Vec<Op> {
    let id = || json!({"type": "string", "pattern": "^op-[a-z0-9-]{1,60}$", "examples": ["op-0195b1c2d3e-4f5a6b7c"]});
    let one = || json!({"$ref": "#/components/schemas/Operation"});
    let time = crate::openapi::time;
    let creators: &'static [Role] = &[Role::Admin, Role::Operator, Role::Planner];
    vec![
        Op::new("GET", "/api/v1/operations", READERS, "operations", "Road operations in creation order, paged by cursor; default: those not ended or cancelled", get(list))
            .query("status", json!({"type": "string", "pattern": "^(planned|active|ended|cancelled)(,(planned|active|ended|cancelled)){0,3}$"}), "Only these statuses (comma-separated)")
            .query("kind", json!({"enum": ["incident", "roadworks", "closure", "event"]}), "Only this kind")
            .query("agency", json!({"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"}), "Only this agency")
            .query("bbox", bbox_schema(), "min_lon,min_lat,max_lon,max_lat: operations whose segments, point or area reach into it")
            .query("from", time(), "Window (actual, else planned) overlapping from…")
            .query("to", time(), "…to")
            .query("cursor", id(), "next_cursor of the previous page")
            .query("limit", json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE}), "Operations per page (default 100)")
            .ok(200, json!({"type": "object", "required": ["operations", "next_cursor"], "properties": {"operations": {"type": "array", "items": one()}, "next_cursor": {"type": ["string", "null"]}},
                "examples": [{"operations": [example()], "next_cursor": null}]}))
            .error(422, "from is after to, or a bbox whose minimum exceeds its maximum"),
        Op::new("POST", "/api/v1/operations", creators, "operations", "Create an operation (Idempotency-Key header: same key and body, same operation, 200; other body, 409). Planners create planned roadworks and events only", post(create))
            .body(body_schema(&["kind", "title", "severity", "agency", "planned"], true))
            .example(json!({"kind": "roadworks", "title": "Gas main works on Lungarno Torrigiani", "severity": "moderate", "agency": "utilities", "segments": [], "point": [11.2571, 43.7664], "planned": {"from": "2026-11-02T07:00:00Z", "to": "2026-11-06T18:00:00Z"}, "external_ref": "PERM-2026-0412"}))
            .ok(201, one())
            .also_ok(200, "The same Idempotency-Key and body were seen before from this token: the operation created then")
            .error(403, "A planner creating anything but a planned roadworks or event")
            .error(409, "The Idempotency-Key was used for another request")
            .error(422, "The planned window ends before it starts, a segment or a linked alert does not exist, the area crosses itself, or no segment, point or area is given (param names the field)"),
        Op::new("GET", "/api/v1/operations/{id}", READERS, "operations", "An operation (ETag: its version)", get(fetch))
            .path_param("id", id(), "Operation id")
            .ok(200, one()),
        Op::new("PATCH", "/api/v1/operations/{id}", creators, "operations", "Change an operation's fields (If-Match: the version read). Planners change planned roadworks and events only", axum::routing::patch(patch))
            .path_param("id", id(), "Operation id")
            .body(body_schema(&[], false))
            .example(json!({"severity": "major", "closes_road": true}))
            .ok(200, one())
            .error(403, "A planner changing anything but a planned roadworks or event")
            .error(409, "The operation is ended or cancelled")
            .error(412, "If-Match names a version that is no longer current: nothing was changed")
            .error(422, "The change leaves the operation invalid (param names the field)")
            .error(428, "No If-Match header"),
        Op::new("POST", "/api/v1/operations/{id}/status", OPERATORS, "operations", "Move an operation: planned → active → ended, planned | active → cancelled (If-Match optional)", post(move_status))
            .path_param("id", id(), "Operation id")
            .body(json!({"type": "object", "additionalProperties": false, "required": ["status"], "properties": {"status": {"enum": ["planned", "active", "ended", "cancelled"]}, "at": {"type": ["string", "null"], "format": "date-time", "description": "When it happened (default: now)"}}}))
            .example(json!({"status": "active"}))
            .ok(200, one())
            .error(409, "A move the lifecycle forbids, or the operation is ended or cancelled")
            .error(412, "If-Match names a version that is no longer current")
            .error(422, "at makes the actual window end before it starts"),
        Op::new("POST", "/api/v1/operations/{id}/notes", READERS, "operations", "Add a note to an operation's timeline (the caller is its author)", post(add_note))
            .path_param("id", id(), "Operation id")
            .body(json!({"type": "object", "additionalProperties": false, "required": ["text"], "properties": {"text": text_schema(store::operations::MAX_NOTE)}}))
            .example(json!({"text": "Barriers in place"}))
            .ok(200, one())
            .error(409, "The operation is ended or cancelled"),
        Op::new("GET", "/api/v1/operations/{id}/history", READERS, "operations", "The operation's audit trail: every change, who made it, when, and each field's before and after", get(history))
            .path_param("id", id(), "Operation id")
            .ok(200, json!({"type": "object", "required": ["changes"], "properties": {"changes": {"type": "array", "items": {"type": "object", "required": ["version", "at", "by", "action", "changes"], "properties": {"version": {"type": "integer"}, "at": {"type": "string", "format": "date-time"}, "by": {"type": "string"}, "action": {"enum": ["created", "updated", "status_changed", "note_added"]}, "changes": {"type": "object"}}}}},
                "examples": [{"changes": [{"version": 2, "at": "2026-11-02T07:20:00Z", "by": "wall-3", "action": "status_changed", "changes": {"status": ["planned", "active"], "actual": [{"from": null, "to": null}, {"from": "2026-11-02T07:20:00Z", "to": null}]}}]}]})),
        Op::new("GET", "/api/v1/operations/{id}/impact", READERS, "operations", "A metric's history on the operation's segments before, during and after its window, and a week earlier as a baseline", get(impact))
            .path_param("id", id(), "Operation id")
            .query("metric", crate::openapi::metric_id(), "The metric (default speed_kmh)")
            .ok(200, impact_schema()),
    ]
}

/// A bounding box within WGS84 bounds (that min is not after max is checked beyond: 422).
fn bbox_schema() -> Value {
    let lon = r"-?(180(\.0{1,8})?|(1[0-7][0-9]|[0-9]{1,2})(\.[0-9]{1,8})?)";
    let lat = r"-?(90(\.0{1,8})?|[0-8]?[0-9](\.[0-9]{1,8})?)";
    json!({"type": "string", "pattern": format!("^{lon},{lat},{lon},{lat}$")})
}

fn impact_schema() -> Value {
    let time = json!({"type": "string", "format": "date-time"});
    let period = json!({"type": "object", "required": ["from", "to", "points", "avg", "count"], "properties": {
        "from": time.clone(), "to": time,
        "points": {"type": "array", "items": {"type": "object", "required": ["time", "avg", "count"], "properties": {"time": {"type": "string", "format": "date-time"}, "avg": {"type": ["number", "null"]}, "count": {"type": "integer"}}}},
        "avg": {"type": ["number", "null"], "description": "Over every reading of the period (null without readings)"},
        "count": {"type": "integer", "description": "Readings counted"}}});
    json!({"type": "object", "required": ["operation", "metric", "before", "during", "after", "baseline", "segments"], "properties": {
        "operation": {"type": "string"}, "metric": {"type": "string"},
        "before": period.clone(), "during": period.clone(), "after": period.clone(), "baseline": period.clone(),
        "segments": {"type": "array", "items": {"type": "object", "required": ["segment", "before", "during", "after", "baseline"], "properties": {
            "segment": {"type": "string"}, "before": period.clone(), "during": period.clone(), "after": period.clone(), "baseline": period}}}},
        "examples": [{"operation": "op-0195b1c2d3e-4f5a6b7c", "metric": "speed_kmh",
            "before": {"from": "2026-10-29T20:40:00Z", "to": "2026-11-02T07:20:00Z", "points": [{"time": "2026-10-30T00:00:00Z", "avg": 31.2, "count": 5760}], "avg": 31.2, "count": 5760},
            "during": {"from": "2026-11-02T07:20:00Z", "to": "2026-11-05T17:20:00Z", "points": [{"time": "2026-11-03T00:00:00Z", "avg": 18.4, "count": 5702}], "avg": 18.4, "count": 5702},
            "after": {"from": "2026-11-05T17:20:00Z", "to": "2026-11-05T17:20:00Z", "points": [], "avg": null, "count": 0},
            "baseline": {"from": "2026-10-26T07:20:00Z", "to": "2026-10-29T17:20:00Z", "points": [{"time": "2026-10-27T00:00:00Z", "avg": 30.8, "count": 5698}], "avg": 30.8, "count": 5698},
            "segments": [{"segment": "lungarno-torrigiani",
            "before": {"from": "2026-10-29T20:40:00Z", "to": "2026-11-02T07:20:00Z", "points": [{"time": "2026-10-30T00:00:00Z", "avg": 31.2, "count": 5760}], "avg": 31.2, "count": 5760},
            "during": {"from": "2026-11-02T07:20:00Z", "to": "2026-11-05T17:20:00Z", "points": [{"time": "2026-11-03T00:00:00Z", "avg": 18.4, "count": 5702}], "avg": 18.4, "count": 5702},
            "after": {"from": "2026-11-05T17:20:00Z", "to": "2026-11-05T17:20:00Z", "points": [], "avg": null, "count": 0},
            "baseline": {"from": "2026-10-26T07:20:00Z", "to": "2026-10-29T17:20:00Z", "points": [{"time": "2026-10-27T00:00:00Z", "avg": 30.8, "count": 5698}], "avg": 30.8, "count": 5698}}]}]})
}

/// The answer of one operation: its JSON with `ETag`.
fn answer(status: StatusCode, op: &Operation) -> Response {
    let mut resp = (status, Json(json!(op))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", op.version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError { status: StatusCode::FORBIDDEN, code: "forbidden", ..ApiError::conflict(message) }
}

/// A store error, with the field of an invalid operation judged 400 (the schema states
/// it) or 422 (it cannot).
fn refused(e: StoreError) -> ApiError {
    match &e {
        StoreError::OperationInvalid { field, message } => {
            if SCHEMA_FIELDS.contains(&field.as_str()) {
                ApiError::bad_field(field, message.clone())
            } else {
                ApiError::unprocessable(field, message.clone())
            }
        }
        _ => e.into(),
    }
}

/// The version `If-Match` names (`"3"`, `W/"3"` or `3`); `None` without the header.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = v.to_str().unwrap_or_default().trim();
    let bare = text.trim_start_matches("W/").trim_matches('"');
    bare.parse::<i64>().ok().filter(|v| *v >= 1).map(Some).ok_or_else(|| {
        ApiError::bad_param("If-Match", "If-Match must be the ETag of the version read, e.g. \"3\"")
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let k = v
        .to_str()
        .map_err(|_| ApiError::bad_param("Idempotency-Key", "must be visible ASCII"))?
        .trim()
        .to_owned();
    if k.is_empty() || k.len() > MAX_KEY {
        return Err(ApiError::bad_param(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY} characters"),
        ));
    }
    Ok(Some(k))
}

/// The body as a JSON object, with 400 naming `body` otherwise.
fn object(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::bad_field(
            "body",
            format!("the body is over {} KiB", MAX_BODY / 1024),
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_field("body", "the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_field("body", format!("the body is not JSON: {e}"))),
    }
}

/// Fields a PATCH or a creation may set.
const EDITABLE: &[&str] = &[
    "kind",
    "title",
    "description",
    "severity",
    "agency",
    "segments",
    "point",
    "area",
    "closes_road",
    "planned",
    "linked_alerts",
    "external_ref",
];

/// `op` with `fields` set, read as an operation again (400 naming the field it fails on).
fn merged(op: &Operation, fields: &serde_json::Map<String, Value>) -> Result<Operation, ApiError> {
    let mut v = serde_json::to_value(op).map_err(|e| ApiError::bad_field("body", e.to_string()))?;
    for (k, val) in fields {
        if !EDITABLE.contains(&k.as_str()) {
            let hint = match k.as_str() {
                "status" => " (move it with POST …/status)",
                "notes" => " (add one with POST …/notes)",
                _ => "",
            };
            return Err(ApiError::bad_field(
                k,
                format!("{k} cannot be set here{hint}; fields: {}", EDITABLE.join(", ")),
            ));
        }
        v[k] = match (k.as_str(), val) {
            // JSON Schema counts 49.0 as an integer: so do alert ids here.
            ("linked_alerts", Value::Array(ids)) => Value::Array(
                ids.iter()
                    .map(|id| match id.as_f64() {
                        Some(f) if !id.is_i64() && f.fract() == 0.0 && f.abs() < 9.2e18 => {
                            json!(f as i64)
                        }
                        _ => id.clone(),
                    })
                    .collect(),
            ),
            _ => val.clone(),
        };
    }
    let op = serde_path_to_error::deserialize::<_, Operation>(v).map_err(|e| {
        let path = e.path().to_string();
        // `point[0]` is the field `point`.
        let field = match path.split('[').next() {
            Some(".") | Some("") | None => "body".to_owned(),
            Some(f) => f.to_owned(),
        };
        if field.starts_with("planned") {
            // A date-time the schema admits may still be outside years 1970..=9999.
            return ApiError::unprocessable(&field, format!("{path}: {}", e.inner()));
        }
        ApiError::bad_field(&field, format!("{path}: {}", e.inner()))
    })?;
    // What the schema states of segments (how many, their pattern, no repeats): 400.
    if op.segments.len() > store::operations::MAX_SEGMENTS {
        return Err(ApiError::bad_field(
            "segments",
            format!("at most {} segments", store::operations::MAX_SEGMENTS),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for s in &op.segments {
        SegmentId::parse(s).map_err(|e| ApiError::bad_field("segments", format!("{s:?}: {e}")))?;
        if !seen.insert(s.as_str()) {
            return Err(ApiError::bad_field("segments", format!("segment {s} is listed twice")));
        }
    }
    Ok(op)
}

/// Each alert `op` links that `before` did not must exist: 422 naming `linked_alerts`
/// otherwise. (Alerts linked before stay linked, though retention may have removed them.)
async fn linked_alerts_exist(
    state: &AppState,
    op: &Operation,
    before: &[i64],
) -> Result<(), ApiError> {
    let mut unknown = Vec::new();
    for id in op.linked_alerts.iter().filter(|id| !before.contains(id)) {
        if state.store.alert(*id).await?.is_none() {
            unknown.push(id.to_string());
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ApiError::unprocessable(
        "linked_alerts",
        format!("unknown alert(s): {}", unknown.join(", ")),
    ))
}

/// Whether a planner may create or change `op` (planned roadworks and events only).
fn planner_may(op: &Operation) -> bool {
    op.status == OperationStatus::Planned
        && matches!(op.kind, OperationKind::Roadworks | OperationKind::Event)
}

fn new_id(now: EventTime) -> Result<String, ApiError> {
    let r = crate::auth::random_bytes::<4>()?;
    Ok(format!("op-{:011x}-{}", now.millis().max(0), crate::auth::hex(&r)))
}

async fn create(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let mut fields = object(&body)?;
    let status = match fields.remove("status") {
        None | Some(Value::Null) => OperationStatus::Planned,
        Some(Value::String(s)) if s == "planned" => OperationStatus::Planned,
        Some(Value::String(s)) if s == "active" => OperationStatus::Active,
        Some(_) => {
            return Err(ApiError::bad_field("status", "a new operation is planned or active"))
        }
    };
    for required in ["kind", "title", "severity", "agency", "planned"] {
        if !fields.contains_key(required) {
            return Err(ApiError::bad_field(required, format!("{required} is required")));
        }
    }
    let kind = fields.get("kind").and_then(Value::as_str).and_then(OperationKind::parse);
    if !fields.contains_key("closes_road") {
        fields.insert("closes_road".into(), json!(kind == Some(OperationKind::Closure)));
    }
    let now = EventTime::now();
    let blank = Operation {
        id: new_id(now)?,
        version: 1,
        kind: OperationKind::Incident,
        title: String::new(),
        description: None,
        severity: OperationSeverity::Minor,
        status,
        agency: String::new(),
        segments: Vec::new(),
        derived_segments: Vec::new(),
        point: None,
        area: None,
        closes_road: false,
        planned: PlannedWindow { from: now, to: now },
        actual: ActualWindow { from: (status == OperationStatus::Active).then_some(now), to: None },
        notes: Vec::new(),
        linked_alerts: Vec::new(),
        external_ref: None,
        created_at: now,
        created_by: who.name.clone(),
        updated_at: now,
        updated_by: who.name.clone(),
    };
    let mut op = merged(&blank, &fields)?;
    if who.role == Role::Planner && !planner_may(&op) {
        return Err(forbidden("planners create planned roadworks and events only"));
    }
    op.validate().map_err(refused)?;
    linked_alerts_exist(&state, &op, &[]).await?;
    state
        .store
        .place_operation(&mut op, state.operation_point_distance_m)
        .await
        .map_err(refused)?;
    // The request's identity for the Idempotency-Key: its fields, canonical (sorted keys).
    let digest = crate::auth::hex(&Sha256::digest(
        serde_json::to_string(&Value::Object(fields.into_iter().collect())).unwrap_or_default(),
    ));
    match state.store.create_operation(&op, key.as_deref(), &digest).await.map_err(refused)? {
        Created::New(op) => {
            state.hub.publish_operation(json!(op));
            let mut resp = answer(StatusCode::CREATED, &op);
            if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/operations/{}", op.id)) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Ok(resp)
        }
        Created::Existing(op) => Ok(answer(StatusCode::OK, &op)),
        Created::KeyReused(id) => Err(ApiError::conflict(format!(
            "Idempotency-Key was used for another request (operation {id})"
        ))),
    }
}

async fn fetch(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match state.store.operation(&id).await? {
        Some(op) => Ok(answer(StatusCode::OK, &op)),
        None => Err(ApiError::not_found(format!("operation {id} does not exist"))),
    }
}

async fn patch(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(version) = if_match(&headers)? else {
        return Err(ApiError {
            status: StatusCode::PRECONDITION_REQUIRED,
            code: "precondition_required",
            ..ApiError::bad_param(
                "If-Match",
                "a change needs If-Match with the version read (its ETag)",
            )
        });
    };
    let fields = object(&body)?;
    let Some(current) = state.store.operation(&id).await? else {
        return Err(ApiError::not_found(format!("operation {id} does not exist")));
    };
    if current.version != version {
        return Err(refused(StoreError::OperationVersion {
            id,
            expected: version,
            current: current.version,
        }));
    }
    if current.status.is_final() {
        return Err(refused(StoreError::OperationFinal { id, status: current.status.as_str() }));
    }
    let mut changed = merged(&current, &fields)?;
    if who.role == Role::Planner && !(planner_may(&current) && planner_may(&changed)) {
        return Err(forbidden("planners change planned roadworks and events only"));
    }
    changed.validate().map_err(refused)?;
    linked_alerts_exist(&state, &changed, &current.linked_alerts).await?;
    state
        .store
        .place_operation(&mut changed, state.operation_point_distance_m)
        .await
        .map_err(refused)?;
    let now = EventTime::now();
    let op = state
        .store
        .change_operation(&id, Some(version), &who.name, now, ChangeKind::Updated, |o| {
            *o = changed.clone();
            Ok(())
        })
        .await
        .map_err(refused)?;
    state.hub.publish_operation(json!(op));
    Ok(answer(StatusCode::OK, &op))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: String,
    #[serde(default, with = "rfc3339::option")]
    at: Option<EventTime>,
}

async fn move_status(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let parsed: StatusBody = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message =
            format!("the body must be {{\"status\": …, \"at\": RFC 3339}}: {}", e.inner());
        match path.as_str() {
            // A date-time the schema admits may still be outside years 1970..=9999.
            "at" => ApiError::unprocessable("at", message),
            "status" => ApiError::bad_field("status", message),
            _ => ApiError::bad_field("body", message),
        }
    })?;
    let to = OperationStatus::parse(&parsed.status).ok_or_else(|| {
        ApiError::bad_field("status", format!("status must be {}", OperationStatus::names()))
    })?;
    let now = EventTime::now();
    let op = state
        .store
        .move_operation(&id, expected, to, parsed.at, &who.name, now)
        .await
        .map_err(refused)?;
    state.hub.publish_operation(json!(op));
    Ok(answer(StatusCode::OK, &op))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    text: String,
}

async fn add_note(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let parsed: NoteBody = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = if e.path().to_string() == "text" { "text" } else { "body" };
        ApiError::bad_field(field, format!("the body must be {{\"text\": …}}: {}", e.inner()))
    })?;
    let op = state
        .store
        .add_operation_note(&id, &who.name, &parsed.text, EventTime::now())
        .await
        .map_err(refused)?;
    state.hub.publish_operation(json!(op));
    Ok(answer(StatusCode::OK, &op))
}

async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if state.store.operation(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("operation {id} does not exist")));
    }
    Ok(Json(json!({ "changes": state.store.operation_changes(&id).await? })))
}

async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let now = EventTime::now();
    let mut f = OperationFilter { limit: 100, ..Default::default() };
    if let Some(s) = p.take("status") {
        for word in s.split(',') {
            let st = OperationStatus::parse(word).ok_or_else(|| {
                ApiError::bad_param(
                    "status",
                    format!("{word:?} is not a status: {}", OperationStatus::names()),
                )
            })?;
            if !f.statuses.contains(&st) {
                f.statuses.push(st);
            }
        }
    }
    if let Some(k) = p.take("kind") {
        f.kind = Some(OperationKind::parse(&k).ok_or_else(|| {
            ApiError::bad_param("kind", format!("kind must be {}", OperationKind::names()))
        })?);
    }
    if let Some(a) = p.take("agency") {
        let ok = (1..=64).contains(&a.len())
            && a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(ApiError::bad_param(
                "agency",
                "agency is 1 to 64 characters of a-z, 0-9, _ and -",
            ));
        }
        f.agency = Some(a);
    }
    if let Some(b) = p.take("bbox") {
        f.bbox = Some(crate::params::bbox("bbox", &b)?);
    }
    if let Some(t) = p.take("from") {
        f.from = Some(crate::params::time("from", &t, now)?);
    }
    if let Some(t) = p.take("to") {
        f.to = Some(crate::params::time("to", &t, now)?);
    }
    if let (Some(a), Some(b)) = (f.from, f.to) {
        if a > b {
            return Err(ApiError::bad_combination("from", "from is after to"));
        }
    }
    if let Some(c) = p.take("cursor") {
        let ok = c.strip_prefix("op-").is_some_and(|rest| {
            (1..=60).contains(&rest.len())
                && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
        if !ok {
            return Err(ApiError::bad_param("cursor", "cursor must be the next_cursor of a page"));
        }
        f.after = Some(c);
    }
    if let Some(l) = p.take("limit") {
        f.limit = crate::params::limit("limit", &l, MAX_PAGE)?;
    }
    p.finish()?;
    let page = state.store.operations(&f).await?;
    Ok(Json(json!({"operations": page.operations, "next_cursor": page.next_cursor})))
}

/// The periods of the impact: before (as long as the window, ending at its start),
/// during, after (as long, from its end, or up to now) and the baseline (during, a week
/// earlier), each `[from, to)` in ms.
pub fn impact_periods(op: &Operation, now: EventTime) -> [(&'static str, i64, i64); 4] {
    const WEEK: i64 = 7 * 86_400_000;
    let (from, to) = op.window();
    let to = to.min(now.millis()).max(from + 1);
    let len = to - from;
    let after_to = (to + len).min(now.millis()).max(to);
    [
        ("before", from - len, from),
        ("during", from, to),
        ("after", to, after_to),
        ("baseline", from - WEEK, to - WEEK),
    ]
}

async fn impact(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let metric = match p.take("metric") {
        Some(m) => crate::params::metric("metric", &m)?,
        None => MetricId::SpeedKmh,
    };
    p.finish()?;
    let Some(op) = state.store.operation(&id).await? else {
        return Err(ApiError::not_found(format!("operation {id} does not exist")));
    };
    let periods = impact_periods(&op, EventTime::now());
    let ids: Vec<SegmentId> =
        op.affected_segments().iter().filter_map(|s| SegmentId::parse(s).ok()).collect();
    // The operation's segments together (what the planner compares), then each alone.
    let mut whole =
        impact_of(&state, HistorySubject::Segments(ids.clone()), metric, &periods).await?;
    let mut segments = Vec::new();
    for segment in ids {
        let mut entry =
            impact_of(&state, HistorySubject::Segment(segment.clone()), metric, &periods).await?;
        entry.insert("segment".into(), json!(segment.as_str()));
        segments.push(Value::Object(entry));
    }
    whole.insert("operation".into(), json!(op.id));
    whole.insert("metric".into(), json!(metric.as_str()));
    whole.insert("segments".into(), json!(segments));
    Ok(Json(Value::Object(whole)))
}

/// The periods of an impact for one subject: each with its points and the average over
/// every reading in it.
async fn impact_of(
    state: &AppState,
    subject: HistorySubject,
    metric: MetricId,
    periods: &[(&'static str, i64, i64); 4],
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let mut entry = serde_json::Map::new();
    for &(name, from, to) in periods {
        let q = HistoryQuery {
            subject: subject.clone(),
            metric,
            from: EventTime(from),
            to: EventTime(to.max(from)),
            step: store::Step::Auto { max_points: 500 },
            fill: store::GapFill::None,
            limit: 100_000,
        };
        let h = if to > from { Some(state.store.history(&q).await?) } else { None };
        let points = h.as_ref().map(|h| h.points.as_slice()).unwrap_or_default();
        let (sum, count) = points.iter().fold((0.0, 0i64), |(s, c), p| (s + p.sum, c + p.count));
        entry.insert(
            name.into(),
            json!({
                "from": EventTime(from).to_rfc3339(),
                "to": EventTime(to.max(from)).to_rfc3339(),
                "points": points.iter().map(|p| json!({"time": p.time.to_rfc3339(), "avg": (p.count > 0).then(|| p.avg()), "count": p.count})).collect::<Vec<_>>(),
                "avg": (count > 0).then(|| sum / count as f64),
                "count": count,
            }),
        );
    }
    Ok(entry)
}
