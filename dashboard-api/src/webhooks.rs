//! Webhook subscriptions over REST (admin). The outbox's events (alert moves, device
//! status changes, command results) are delivered to them as signed CloudEvents by the
//! dispatcher (`links` crate); see its docs for headers and retries.
//!
//! - `GET/POST /api/v1/webhooks`: list; create with `{"url":"http(s)://…","types":["it.firenze.sccr.alert.*"],
//!   "secret":"…","enabled":true,"format":"cloudevents"|"ngsi-ld"}` (the secret is write-only:
//!   never returned).
//! - A URL the destination allow-list refuses (`links::destination`) is a 400 with code
//!   `destination_refused` when it can be told now: an address in the URL, a host name
//!   outside a list of names, or a name that resolves (within 2 s) only to refused
//!   addresses. Otherwise the dispatcher judges the addresses at each delivery.
//! - `GET/PATCH/DELETE /api/v1/webhooks/{id}`.
//! - `GET /api/v1/webhooks/{id}/deliveries?state=pending|delivered|dead&limit=`.
//! - `POST /api/v1/webhooks/{id}/redeliver`: every dead delivery again;
//!   `POST /api/v1/webhooks/{id}/deliveries/{event}/redeliver`: one.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::routing::{delete, get, patch, post};
use axum::{Extension, Json};
use links::destination::{resolve_within, DestinationError, DestinationPolicy, HostVerdict};
use serde::Deserialize;
use serde_json::{json, Value};
use store::{DeliveryState, NewWebhook, WebhookFormat, WebhookPatch};
use telemetry::EventTime;

use crate::access::audit;
use crate::auth::{Principal, ADMINS};
use crate::error::ApiError;
use crate::openapi::{enumeration, Op};
use crate::AppState;

/// Settings of the process's webhooks: the format of subscriptions created without one,
/// and where they may point.
#[derive(Debug, Clone, Default)]
pub struct WebhookSettings {
    pub default_format: WebhookFormat,
    pub destinations: Arc<DestinationPolicy>,
}

/// How long a subscription change waits for its host name's addresses; a slower or
/// failed lookup leaves the judgement to the delivery.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

const MIN_SECRET: usize = 16;
const MAX_SECRET: usize = 256;

/// The webhook operations (admins).
pub fn operations() -> Vec<Op> {
    // Every field may be null (absent); a required one must be given and not null.
    let body = |required: &[&str]| {
        let nullable = |schema: Value| json!({"anyOf": [{"type": "null"}, schema]});
        let given: Vec<Value> = required
            .iter()
            .map(|k| json!({"required": [k], "properties": {*k: {"not": {"type": "null"}}}}))
            .collect();
        let mut schema = json!({"type": "object", "additionalProperties": false, "properties": {
            "url": nullable(json!({"type": "string", "pattern": "^https?://[a-z0-9]([a-z0-9.-]{0,62})(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~/-]{0,200})?$", "description": "http(s)://host[:port]/path, within the allowed destinations"})),
            "types": nullable(json!({"type": "array", "items": {"type": "string", "pattern": "^[ -~]*[!-~][ -~]*$", "maxLength": 200}, "description": "Event types, or prefixes ending in *; empty: all"})),
            "secret": nullable(json!({"type": "string", "pattern": format!("^[ -~]{{{MIN_SECRET},{MAX_SECRET}}}$"), "description": "Signs every delivery (printable ASCII); write-only"})),
            "enabled": nullable(json!({"type": "boolean", "description": "Whether deliveries are made (default true)"})),
            "format": nullable(json!({"type": "string", "enum": ["cloudevents", "ngsi-ld"], "description": "The payload shape (default webhooks.default_format)"}))}});
        if !given.is_empty() {
            schema["allOf"] = Value::Array(given);
        }
        schema
    };
    let id = || crate::openapi::int64(i64::MIN);
    vec![
        Op::new(
            "GET",
            "/api/v1/webhooks",
            ADMINS,
            "webhooks",
            "Webhook subscriptions (never their secret)",
            get(list),
        )
        .ok(200, crate::schemas::webhook_list()),
        Op::new(
            "POST",
            "/api/v1/webhooks",
            ADMINS,
            "webhooks",
            "Subscribe a receiver to outbox events (CloudEvents, HMAC-signed)",
            post(create),
        )
        .body(body(&["url", "secret"]))
        .example(json!({"url": "https://hooks.example.org/sccr", "types": ["it.firenze.sccr.alert.*"], "secret": "a-long-shared-secret-0123", "format": "cloudevents"}))
        .ok(201, crate::schemas::webhook_one()),
        Op::new("GET", "/api/v1/webhooks/{id}", ADMINS, "webhooks", "A subscription", get(one))
            .path_param("id", id(), "Webhook id")
            .ok(200, crate::schemas::webhook_one()),
        Op::new(
            "PATCH",
            "/api/v1/webhooks/{id}",
            ADMINS,
            "webhooks",
            "Change a subscription",
            patch(update),
        )
        .path_param("id", id(), "Webhook id")
        .body(body(&[]))
        .example(json!({"enabled": false}))
        .ok(200, crate::schemas::webhook_one()),
        Op::new(
            "DELETE",
            "/api/v1/webhooks/{id}",
            ADMINS,
            "webhooks",
            "Delete a subscription and its deliveries",
            delete(remove),
        )
        .path_param("id", id(), "Webhook id")
        .ok(204, Value::Null),
        Op::new(
            "GET",
            "/api/v1/webhooks/{id}/deliveries",
            ADMINS,
            "webhooks",
            "A subscription's deliveries, newest event first",
            get(deliveries),
        )
        .path_param("id", id(), "Webhook id")
        .query(
            "state",
            enumeration(&["pending", "delivered", "dead"]),
            "Only deliveries in this state",
        )
        .query(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": 1000}),
            "Deliveries (default 100)",
        )
        .ok(200, crate::schemas::delivery_list()),
        Op::new(
            "POST",
            "/api/v1/webhooks/{id}/redeliver",
            ADMINS,
            "webhooks",
            "Deliver every dead delivery again",
            post(redeliver_all),
        )
        .path_param("id", id(), "Webhook id")
        .ok(200, crate::schemas::redelivered()),
        Op::new(
            "POST",
            "/api/v1/webhooks/{id}/deliveries/{event}/redeliver",
            ADMINS,
            "webhooks",
            "Deliver one dead delivery again",
            post(redeliver_one),
        )
        .path_param("id", id(), "Webhook id")
        .path_param("event", id(), "Event (outbox) id")
        .ok(200, crate::schemas::redelivered())
        .error(409, "No dead delivery of that event"),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    url: Option<String>,
    types: Option<Vec<String>>,
    secret: Option<String>,
    enabled: Option<bool>,
    format: Option<WebhookFormat>,
}

fn parse_body(body: &[u8]) -> Result<Body, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if ["url", "types", "secret", "enabled", "format"].iter().any(|f| path.starts_with(f)) { path } else { "body".to_owned() };
        ApiError::bad_field(&field, format!("the body must be JSON {{\"url\", \"types\", \"secret\", \"enabled\", \"format\"}}: {}", e.inner()))
    })
}

async fn check_url(url: &str, policy: &DestinationPolicy) -> Result<(), ApiError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| ApiError::bad_field("url", format!("{url:?} is not a URL: {e}")))?;
    let host = match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => host,
        _ => return Err(ApiError::bad_field("url", "url must be http(s)://host[:port]/path")),
    };
    let refused = |e: DestinationError| ApiError {
        code: "destination_refused",
        ..ApiError::bad_field("url", e.to_string())
    };
    match policy.judge_host(host) {
        HostVerdict::Admitted => Ok(()),
        HostVerdict::Refused(e) => Err(refused(e)),
        HostVerdict::Resolve => match resolve_within(policy, host, LOOKUP_TIMEOUT).await {
            // A name that does not resolve now is judged at each delivery.
            Err(DestinationError::Resolve { .. }) | Ok(_) => Ok(()),
            Err(e) => Err(refused(e)),
        },
    }
}

fn check_types(types: &[String]) -> Result<(), ApiError> {
    if types.iter().any(|t| t.trim().is_empty() || t.len() > 200) {
        return Err(ApiError::bad_field(
            "types",
            "event types must be 1 to 200 characters (a trailing * matches a prefix)",
        ));
    }
    Ok(())
}

fn check_secret(secret: &str) -> Result<(), ApiError> {
    if secret.contains('\0') {
        return Err(ApiError::bad_field("secret", "secret must not contain NUL characters"));
    }
    if !(MIN_SECRET..=MAX_SECRET).contains(&secret.len()) {
        return Err(ApiError::bad_field(
            "secret",
            format!("secret must be {MIN_SECRET} to {MAX_SECRET} bytes"),
        ));
    }
    Ok(())
}

async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "webhooks": state.store.webhooks().await? })))
}

/// What the audit log keeps of a subscription change: never the secret, only that it
/// was set.
fn audit_detail(
    url: Option<&str>,
    types: Option<&Vec<String>>,
    format: Option<WebhookFormat>,
    enabled: Option<bool>,
    secret_set: bool,
) -> Value {
    let mut d = serde_json::Map::new();
    if let Some(u) = url {
        d.insert("url".into(), json!(u));
    }
    if let Some(t) = types {
        d.insert("types".into(), json!(t));
    }
    if let Some(f) = format {
        d.insert("format".into(), json!(f));
    }
    if let Some(e) = enabled {
        d.insert("enabled".into(), json!(e));
    }
    if secret_set {
        d.insert("secret_set".into(), json!(true));
    }
    Value::Object(d)
}

async fn create(
    State(state): State<AppState>,
    who: Principal,
    settings: Option<Extension<WebhookSettings>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b = parse_body(&body)?;
    let settings = settings.map(|Extension(s)| s).unwrap_or_default();
    let url = b.url.ok_or_else(|| ApiError::bad_field("url", "url is required"))?;
    check_url(&url, &settings.destinations).await?;
    let secret = b.secret.ok_or_else(|| {
        ApiError::bad_field("secret", "secret is required (it signs every delivery)")
    })?;
    check_secret(&secret)?;
    let types = b.types.unwrap_or_default();
    check_types(&types)?;
    let format = b.format.unwrap_or(settings.default_format);
    let enabled = b.enabled.unwrap_or(true);
    let detail = audit_detail(Some(&url), Some(&types), Some(format), Some(enabled), true);
    let w = state.store.create_webhook(&NewWebhook { url, types, secret, enabled, format }).await?;
    audit(&state, &who, "webhook.create", &format!("webhook/{}", w.id), detail).await;
    Ok((StatusCode::CREATED, Json(json!(w))))
}

fn not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("webhook {id} does not exist"))
}

async fn one(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    state.store.webhook(id).await?.map(|w| Json(json!(w))).ok_or_else(|| not_found(id))
}

async fn update(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<i64>,
    settings: Option<Extension<WebhookSettings>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b = parse_body(&body)?;
    if let Some(u) = &b.url {
        let settings = settings.map(|Extension(s)| s).unwrap_or_default();
        check_url(u, &settings.destinations).await?;
    }
    if let Some(s) = &b.secret {
        check_secret(s)?;
    }
    if let Some(t) = &b.types {
        check_types(t)?;
    }
    let detail =
        audit_detail(b.url.as_deref(), b.types.as_ref(), b.format, b.enabled, b.secret.is_some());
    let patch = WebhookPatch {
        url: b.url,
        types: b.types,
        secret: b.secret,
        enabled: b.enabled,
        format: b.format,
    };
    let w = state.store.update_webhook(id, &patch).await?.ok_or_else(|| not_found(id))?;
    audit(&state, &who, "webhook.update", &format!("webhook/{id}"), detail).await;
    Ok(Json(json!(w)))
}

async fn remove(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_webhook(id).await? {
        audit(&state, &who, "webhook.delete", &format!("webhook/{id}"), json!({})).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(id))
    }
}

#[derive(Deserialize)]
struct DeliveryQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn deliveries(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter =
        match q.state.as_deref() {
            None => None,
            Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
                ApiError::bad_param("state", "state is pending, delivered or dead")
            })?),
        };
    if state.store.webhook(id).await?.is_none() {
        return Err(not_found(id));
    }
    let limit = match q.limit {
        None => 100,
        Some(n) if (1..=1_000).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::bad_param("limit", "limit must be a whole number in 1..=1000"))
        }
    };
    let list = state.store.deliveries(id, filter, limit).await?;
    Ok(Json(json!({ "deliveries": list })))
}

async fn redeliver_all(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    if state.store.webhook(id).await?.is_none() {
        return Err(not_found(id));
    }
    let n = state.store.redeliver(id, None, EventTime::now()).await?;
    audit(&state, &who, "webhook.redeliver", &format!("webhook/{id}"), json!({ "redelivered": n }))
        .await;
    Ok(Json(json!({ "redelivered": n })))
}

async fn redeliver_one(
    State(state): State<AppState>,
    who: Principal,
    Path((id, event)): Path<(i64, i64)>,
) -> Result<Json<Value>, ApiError> {
    if state.store.webhook(id).await?.is_none() {
        return Err(not_found(id));
    }
    let n = state.store.redeliver(id, Some(event), EventTime::now()).await?;
    if n == 0 {
        return Err(ApiError::conflict(format!(
            "event {event} has no dead delivery to webhook {id}"
        )));
    }
    audit(
        &state,
        &who,
        "webhook.redeliver",
        &format!("webhook/{id}/events/{event}"),
        json!({ "redelivered": n }),
    )
    .await;
    Ok(Json(json!({ "redelivered": n })))
}
