//! Device commands over REST (operator, admin):
//!
//! - `POST /api/v1/devices/{id}/commands` with `{"name":"set_interval","args":{…},"ttl":"60s"}`
//!   and an `Idempotency-Key` header: stores the command (`pending`) and hands it to the
//!   command link, which publishes it on the device's command topic (QoS 1). A request
//!   repeating a key the device already has a command for returns that command (200, no
//!   second publish); a new command answers 201. Reusing a key for another command is 409.
//! - `GET /api/v1/devices/{id}/commands` (newest first, `limit`), `GET /api/v1/commands/{id}`.
//!
//! Status: `pending` → `sent` (the broker took it) → `acked` / `rejected` / `failed` (the
//! device's answer), or `expired` after its time to live. Final statuses are outbox events.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json};
use rand::{RngCore, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Value};
use store::{CommandRecord, NewCommand};
use telemetry::{DeviceId, EventTime};
use tokio::sync::mpsc;

use crate::auth::{Principal, OPERATORS};
use crate::error::ApiError;
use crate::openapi::Op;
use crate::AppState;

/// Whether a NUL character is in any key or string of `v`.
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Where stored commands go to be published (the command link of this process).
#[derive(Clone)]
pub struct CommandOutlet(pub mpsc::Sender<CommandRecord>);

pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
pub const MAX_TTL: Duration = Duration::from_secs(86_400);
const MAX_KEY: usize = 128;

/// The command operations (operators and admins).
pub fn operations() -> Vec<Op> {
    let device_id = || json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"});
    vec![
        Op::new("POST", "/api/v1/devices/{id}/commands", OPERATORS, "commands", "Send a command to a device (Idempotency-Key header: same key, same command)", post(send))
            .path_param("id", device_id(), "Device id")
            .body(json!({"type": "object", "required": ["name"], "additionalProperties": false,
                "properties": {"name": {"type": "string", "pattern": "^[a-z0-9_]{1,64}$", "description": "What to do (the edge agent knows set_interval, set_plan, reboot, ping)"}, "args": crate::openapi::command_args(), "ttl": {"type": ["string", "null"], "pattern": "^([1-9][0-9]{0,3}s|[1-9][0-9]{0,2}m|([1-9]|1[0-9]|2[0-4])h|1d)$", "description": "How long the device may take to answer: 1s to 1d, default 60s"}}}))
            .example(json!({"name": "set_interval", "args": {"interval": "10s"}, "ttl": "60s"}))
            .ok(201, crate::schemas::command_one())
            .error(404, "The device is not registered")
            .error(409, "The Idempotency-Key was used for another command, or the device is decommissioned")
            .error(503, "No command link runs in this process"),
        Op::new("GET", "/api/v1/devices/{id}/commands", OPERATORS, "commands", "A device's commands, newest first", get(list))
            .path_param("id", device_id(), "Device id")
            .query("limit", json!({"type": "integer", "minimum": 1, "maximum": 1000}), "Commands (default 100)")
            .ok(200, crate::schemas::command_list()),
        Op::new("GET", "/api/v1/commands/{id}", OPERATORS, "commands", "A command and its status", get(one))
            .path_param("id", json!({"type": "string", "examples": ["0b0c5c1e-8e0f-4c4e-9a57-3d1b3c2a9f10"]}), "Command id (UUID)")
            .ok(200, crate::schemas::command_one()),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    name: String,
    #[serde(default)]
    args: serde_json::Map<String, Value>,
    ttl: Option<String>,
}

fn device_id(id: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(id).map_err(|e| ApiError::bad_param("id", e.to_string()))
}

/// A random (version 4) UUID.
fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    rand::rngs::StdRng::from_os_rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

async fn send(
    State(state): State<AppState>,
    who: Principal,
    outlet: Option<Extension<CommandOutlet>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let device = device_id(&id)?;
    let Some(Extension(outlet)) = outlet else {
        return Err(ApiError::unavailable("no command link runs in this process"));
    };
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
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
            Some(k)
        }
    };
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let parsed: CommandBody = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field =
            if ["name", "args", "ttl"].contains(&path.as_str()) { path } else { "body".to_owned() };
        ApiError::bad_field(
            &field,
            format!(
                "the body must be JSON {{\"name\": …, \"args\": {{…}}, \"ttl\": \"60s\"}}: {}",
                e.inner()
            ),
        )
    })?;
    let name = parsed.name.trim().to_owned();
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(ApiError::bad_field(
            "name",
            "name must be 1 to 64 characters of a-z, 0-9 and _",
        ));
    }
    if has_nul(&Value::Object(parsed.args.clone())) {
        // PostgreSQL's jsonb cannot hold U+0000; nor can a device's parser be trusted to.
        return Err(ApiError::bad_field(
            "args",
            "args must not contain NUL characters (U+0000) in keys or strings",
        ));
    }
    let ttl = match &parsed.ttl {
        None => DEFAULT_TTL,
        Some(t) => humantime::parse_duration(t).map_err(|e| {
            ApiError::bad_field("ttl", format!("{t:?} is not a duration like \"60s\": {e}"))
        })?,
    };
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        return Err(ApiError::bad_field("ttl", "ttl must be between 1s and 1d"));
    }
    match state.store.device(&device).await? {
        None => return Err(ApiError::not_found(format!("device {device} is not registered"))),
        Some(d) if d.decommissioned_at.is_some() => {
            return Err(ApiError::conflict(format!("device {device} is decommissioned")))
        }
        Some(_) => {}
    }
    let now = EventTime::now();
    let new = NewCommand {
        id: uuid_v4(),
        device,
        name,
        args: parsed.args,
        idempotency_key: key,
        created_by: Some(who.name),
        created_at: now,
        expires_at: EventTime(
            now.millis().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
        ),
    };
    let (record, created) = state.store.create_command(&new).await?;
    if !created {
        if record.name != new.name || record.args != new.args {
            return Err(ApiError::conflict(format!(
                "Idempotency-Key was used for another command ({})",
                record.id
            )));
        }
        return Ok((StatusCode::OK, Json(json!(record))));
    }
    // Bounded: a command link that cannot keep up leaves the command pending; it expires.
    if tokio::time::timeout(Duration::from_secs(2), outlet.0.send(record.clone()))
        .await
        .map_or(true, |r| r.is_err())
    {
        tracing::warn!(command = %record.id, "command link is not taking commands; the command will expire");
    }
    Ok((StatusCode::CREATED, Json(json!(record))))
}

async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let device = device_id(&id)?;
    let mut p = crate::params::Params::parse(raw.as_deref())?;
    let limit = p
        .take("limit")
        .map(|v| crate::params::limit("limit", &v, 1_000))
        .transpose()?
        .unwrap_or(100);
    p.finish()?;
    let commands = state.store.device_commands(&device, limit).await?;
    Ok(Json(json!({ "commands": commands })))
}

async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.store.command(&id).await? {
        Some(c) => Ok(Json(json!(c))),
        None => Err(ApiError::not_found(format!("command {id} does not exist"))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_are_version_4() {
        let u = super::uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(["8", "9", "a", "b"].contains(&&u[19..20]));
        assert_ne!(u, super::uuid_v4());
    }
}
