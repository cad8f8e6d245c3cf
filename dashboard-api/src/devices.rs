//! The device registry: list (filters, cursor paging), get, register with MQTT
//! credentials, update, decommission, rotate credentials.
//!
//! Registration answers the device's MQTT username (its id) and a random password once;
//! the store keeps only the broker's hash of it (see [`crate::credentials`]). Every
//! change of credentials or gateway is committed first, then handed to the broker's
//! provisioning (`[provisioning]`, `links::provisioning`); the answer's `broker` object
//! says whether it applied, is pending, or what to run (password files).
//!
//! A device's `kind` is one of [`DeviceKind::ALL`] (or none): registration and updates
//! refuse another with 422 listing the kinds, as alert rule scopes do, so a kind-scoped
//! rule and the devices it is meant for cannot disagree on a spelling. Devices stored with
//! another kind before are listed as they are and can be given a known kind by `PATCH`.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;

use axum::body::Bytes;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use store::{DeviceDetail, DeviceFilter, DeviceUpdate};
use telemetry::{DeviceId, DeviceKind, EventTime, SegmentId};

use crate::access::{audit, json_body};
use crate::auth::Principal;
use crate::credentials;
use crate::error::ApiError;
use crate::params::{self, Params};
use crate::AppState;

pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1_000;
const MAX_KIND: usize = 64;

fn device_view(state: &AppState, d: &DeviceDetail) -> Value {
    json!({
        "id": d.id,
        "kind": d.kind,
        "segment": d.segment,
        "registered_at": d.registered_at,
        "decommissioned_at": d.decommissioned_at,
        "has_credentials": d.has_credentials,
        "gateway": d.gateway,
        "position": d.position.map(|[lon, lat]| json!({"lon": lon, "lat": lat, "bearing_deg": d.bearing_deg})),
        "online": state.hub.device_online(&d.id, EventTime::now()),
    })
}

/// `GET /api/v1/devices?kind=&segment=&decommissioned=true&limit=&cursor=`: devices in id
/// order; `next_cursor` (absent on the last page) continues the listing.
pub(crate) async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let kind = p.take("kind");
    let segment = p.take("segment").map(|v| params::segment("segment", &v)).transpose()?;
    let include_decommissioned =
        params::boolean("decommissioned", p.take("decommissioned").as_deref())?;
    let limit = p
        .take("limit")
        .map(|v| params::limit("limit", &v, MAX_PAGE))
        .transpose()?
        .unwrap_or(DEFAULT_PAGE);
    let after = p
        .take("cursor")
        .map(|v| {
            DeviceId::parse(&v).map_err(|_| {
                ApiError::bad_param("cursor", "cursor must be a next_cursor from a previous page")
            })
        })
        .transpose()?;
    p.finish()?;
    let page = state
        .store
        .devices_page(&DeviceFilter { kind, segment, include_decommissioned, after, limit })
        .await?;
    let next = (page.len() == limit).then(|| page.last().map(|d| d.id.clone())).flatten();
    let devices: Vec<Value> = page.iter().map(|d| device_view(&state, d)).collect();
    Ok(Json(json!({ "devices": devices, "next_cursor": next })))
}

fn device_id(v: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(v).map_err(|e| ApiError::bad_param("id", e.to_string()))
}

/// `GET /api/v1/devices/{id}`: the device and its latest values.
pub(crate) async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = device_id(&id)?;
    let Some(device) = state.store.device(&id).await? else {
        return Err(ApiError::not_found(format!("device {id} does not exist")));
    };
    let latest = state.store.latest(Some(&id), None).await?;
    let mut view = device_view(&state, &device);
    view["latest"] = json!(latest);
    Ok(Json(json!({ "device": view })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    id: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    segment: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

/// A device kind: 400 if it breaks the document's pattern, 422 if it is not a known kind.
fn kind_field(kind: Option<String>) -> Result<Option<DeviceKind>, ApiError> {
    let Some(kind) = kind.map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    if kind.chars().count() > MAX_KIND
        || !kind.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(ApiError::bad_field(
            "kind",
            format!("kind must be up to {MAX_KIND} characters of [A-Za-z0-9_.-]"),
        ));
    }
    kind.parse()
        .map(Some)
        .map_err(|e: telemetry::UnknownDeviceKind| ApiError::unprocessable("kind", e.to_string()))
}

fn segment_field(segment: Option<String>) -> Result<Option<SegmentId>, ApiError> {
    segment
        .map(|s| SegmentId::parse(&s).map_err(|e| ApiError::bad_field("segment", e.to_string())))
        .transpose()
}

/// The gateway a device is reached through: another active registered device.
async fn gateway_field(
    state: &AppState,
    device: &DeviceId,
    gateway: Option<String>,
) -> Result<Option<DeviceId>, ApiError> {
    let Some(raw) = gateway else { return Ok(None) };
    let gateway =
        DeviceId::parse(&raw).map_err(|e| ApiError::bad_field("gateway", e.to_string()))?;
    if &gateway == device {
        return Err(ApiError::unprocessable("gateway", "a device cannot be its own gateway"));
    }
    match state.store.device(&gateway).await? {
        Some(g) if g.decommissioned_at.is_none() => Ok(Some(gateway)),
        _ => Err(ApiError::unprocessable(
            "gateway",
            format!("gateway {gateway} is not an active registered device"),
        )),
    }
}

fn mqtt_credentials(id: &DeviceId, password: &str) -> Value {
    json!({ "username": id, "password": password, "topics": {
        "telemetry": telemetry::Topic::telemetry(id),
        "status": format!("sccr/v1/devices/{id}/status"),
        "commands": format!("sccr/v1/devices/{id}/commands"),
        "command_acks": format!("sccr/v1/devices/{id}/commands/ack"),
    }})
}

/// `POST /api/v1/devices` `{"id", "kind"?, "segment"?, "gateway"?}`: register a device;
/// the answer holds its MQTT password, shown once. A device reached through a gateway (an
/// edge agent serving several devices) names it; the broker's ACL then lets the gateway's
/// account use the device's topics (`sccr mqtt-acl`).
pub(crate) async fn register(
    State(state): State<AppState>,
    who: Principal,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: Registration =
        json_body(&body, r#"{"id": "loop-12", "kind": "traffic_loop", "segment": "viale-..."}"#)?;
    let id = DeviceId::parse(&req.id).map_err(|e| ApiError::bad_field("id", e.to_string()))?;
    let kind = kind_field(req.kind)?;
    let segment = segment_field(req.segment)?;
    let gateway = gateway_field(&state, &id, req.gateway).await?;
    let password = credentials::generate_password()?;
    let hash = credentials::hash_password(&password)?;
    let device = state
        .store
        .register_device(
            &id,
            kind.map(DeviceKind::as_str),
            segment.as_ref(),
            gateway.as_ref(),
            &hash,
            EventTime::now(),
        )
        .await?;
    audit(
        &state,
        &who,
        "device.register",
        &format!("device/{id}"),
        json!({"kind": kind, "segment": segment, "gateway": gateway}),
    )
    .await;
    let gateways: Vec<DeviceId> = gateway.iter().cloned().collect();
    let broker = state
        .provisioning
        .credentials_issued(&id, &password, &hash, &gateways, !gateways.is_empty())
        .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "device": device_view(&state, &device),
            "mqtt": mqtt_credentials(&id, &password),
            "broker": broker,
        })),
    ))
}

/// `[lon, lat]` and the bearing of a device's position.
type Position = ([f64; 2], Option<f64>);

/// A device's `position`: `{"lon", "lat", "bearing_deg"?}` (WGS84 degrees; bearing
/// clockwise from north, 0 to under 360), or null to clear it.
fn position_field(v: &Value) -> Result<Option<Position>, ApiError> {
    const RULE: &str = "position must be null or {\"lon\": -180..180, \"lat\": -90..90, \"bearing_deg\": 0 to under 360 or null}";
    let Value::Object(o) = v else {
        return if v.is_null() { Ok(None) } else { Err(ApiError::bad_field("position", RULE)) };
    };
    let num = |k: &str| o.get(k).and_then(Value::as_f64);
    let known = o.keys().all(|k| ["lon", "lat", "bearing_deg"].contains(&k.as_str()));
    let (Some(lon), Some(lat)) = (num("lon"), num("lat")) else {
        return Err(ApiError::bad_field("position", RULE));
    };
    let bearing = match o.get("bearing_deg") {
        None | Some(Value::Null) => None,
        Some(b) => Some(
            b.as_f64()
                .filter(|b| (0.0..360.0).contains(b))
                .ok_or_else(|| ApiError::bad_field("position", RULE))?,
        ),
    };
    if !known || !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
        return Err(ApiError::bad_field("position", RULE));
    }
    Ok(Some(([lon, lat], bearing)))
}

/// `PATCH /api/v1/devices/{id}` `{"kind"?, "segment"?, "gateway"?, "position"?}`: a field given as
/// `null` is emptied.
pub(crate) async fn update(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = device_id(&id)?;
    let fields: serde_json::Map<String, Value> =
        json_body(&body, r#"{"kind": "...", "segment": "..." or null}"#)?;
    let mut update = DeviceUpdate::default();
    let mut position = None;
    for (key, value) in &fields {
        if key == "position" {
            position = Some(position_field(value)?);
            continue;
        }
        let text = match value {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            _ => return Err(ApiError::bad_field(key, format!("{key} must be a string or null"))),
        };
        match key.as_str() {
            "kind" => update.kind = Some(kind_field(text)?.map(|k| k.as_str().to_owned())),
            "segment" => update.segment = Some(segment_field(text)?),
            "gateway" => update.gateway = Some(gateway_field(&state, &id, text).await?),
            _ => {
                return Err(ApiError::bad_field(
                    key,
                    format!(
                        "unknown field {:?}; kind, segment, gateway and position can change",
                        key.chars().take(64).collect::<String>()
                    ),
                ))
            }
        }
    }
    // The gateway it leaves, whose broker rights change too.
    let before = match update.gateway {
        Some(_) => state.store.device(&id).await?.and_then(|d| d.gateway),
        None => None,
    };
    let Some(mut device) = state.store.update_device(&id, &update).await? else {
        return Err(ApiError::not_found(format!("device {id} does not exist")));
    };
    if let Some(p) = position {
        let (at, bearing) = p.map_or((None, None), |(at, b)| (Some(at), b));
        state.store.set_device_position(&id, at, bearing).await?;
        device.position = at;
        device.bearing_deg = at.and(bearing);
    }
    audit(&state, &who, "device.update", &format!("device/{id}"), Value::Object(fields)).await;
    let mut answer = json!({ "device": device_view(&state, &device) });
    if update.gateway.is_some() {
        let ids: Vec<DeviceId> =
            [Some(id.clone()), before, device.gateway.clone()].into_iter().flatten().collect();
        answer["broker"] = json!(state.provisioning.devices_changed(&ids, true).await);
    }
    Ok(Json(answer))
}

/// `DELETE /api/v1/devices/{id}`: decommission (history kept, credentials removed).
pub(crate) async fn decommission(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = device_id(&id)?;
    let Some(device) = state.store.decommission_device(&id, EventTime::now()).await? else {
        return Err(ApiError::not_found(format!("device {id} does not exist")));
    };
    audit(&state, &who, "device.decommission", &format!("device/{id}"), json!({})).await;
    // Its client goes, and with it its rights on its gateway's account.
    let ids: Vec<DeviceId> =
        [Some(id.clone()), device.gateway.clone()].into_iter().flatten().collect();
    let broker = state.provisioning.devices_changed(&ids, device.gateway.is_some()).await;
    Ok(Json(json!({ "device": device_view(&state, &device), "broker": broker })))
}

/// `POST /api/v1/devices/{id}/credentials`: a new MQTT password, shown once.
pub(crate) async fn rotate(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = device_id(&id)?;
    let password = credentials::generate_password()?;
    let hash = credentials::hash_password(&password)?;
    let Some(device) = state.store.set_device_password(&id, &hash).await? else {
        return Err(ApiError::not_found(format!("no active device {id}")));
    };
    audit(&state, &who, "device.credentials", &format!("device/{id}"), json!({})).await;
    let gateways: Vec<DeviceId> = device.gateway.iter().cloned().collect();
    let broker =
        state.provisioning.credentials_issued(&id, &password, &hash, &gateways, false).await;
    Ok(Json(json!({
        "device": device_view(&state, &device),
        "mqtt": mqtt_credentials(&id, &password),
        "broker": broker,
    })))
}
