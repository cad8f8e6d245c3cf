//! `/api/v1/me`, API tokens (admin) and the audit log (admin).

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;

use axum::body::Bytes;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use store::AuditEntry;
use telemetry::EventTime;

use crate::auth::{self, Principal, Role};
use crate::error::ApiError;
use crate::params::{self, Params};
use crate::AppState;

const MAX_NAME: usize = 128;
const DEFAULT_AUDIT_PAGE: usize = 100;
const MAX_AUDIT_PAGE: usize = 1_000;

/// Record a privileged action; a failure to record is logged, not returned (the action
/// itself already happened).
pub async fn audit(state: &AppState, who: &Principal, action: &str, target: &str, detail: Value) {
    let entry = AuditEntry {
        at: EventTime::now(),
        actor: &who.name,
        role: who.role.as_str(),
        action,
        target,
        detail,
    };
    if let Err(e) = state.store.audit(&entry).await {
        tracing::error!(error = %e, action, target, "audit log write failed");
    }
}

/// `GET /api/v1/me`: the caller's name and role.
pub(crate) async fn me(who: Principal) -> Json<Value> {
    Json(json!({ "name": who.name, "role": who.role, "token_id": who.token_id }))
}

pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    Params::parse(raw.as_deref())?.finish()?;
    Ok(Json(json!({ "tokens": state.store.tokens().await? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
}

/// Parse a JSON body, naming the field at fault.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    body: &Bytes,
    shape: &str,
) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path.is_empty() || path == "." || path == "?" || path.starts_with('[') {
            "body".to_owned()
        } else {
            path
        };
        ApiError::bad_field(&field, format!("the body must be JSON {shape}: {}", e.inner()))
    })
}

/// A role name from a body field.
pub(crate) fn role_field(field: &str, v: &str) -> Result<Role, ApiError> {
    Role::parse(v).ok_or_else(|| {
        ApiError::bad_field(field, "role must be one of admin, operator, planner, device")
    })
}

/// `POST /api/v1/tokens` `{"name", "role"}`: a new token, shown once.
pub(crate) async fn create_token(
    State(state): State<AppState>,
    who: Principal,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: NewToken = json_body(&body, r#"{"name": "...", "role": "operator"}"#)?;
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_field(
            "name",
            format!("name must have 1 to {MAX_NAME} characters, none of them control characters"),
        ));
    }
    let role = role_field("role", &req.role)?;
    let (token, digest) = auth::generate_token()?;
    let record = state.store.create_token(name, role.as_str(), &digest, EventTime::now()).await?;
    audit(
        &state,
        &who,
        "token.create",
        &format!("token/{}", record.id),
        json!({"name": name, "role": role}),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": record.id, "name": record.name, "role": record.role, "created_at": record.created_at, "token": token }),
        ),
    ))
}

/// `DELETE /api/v1/tokens/{id}`: revoke a token (effective within the cache TTL everywhere,
/// at once in this process).
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: i64 =
        id.parse().map_err(|_| ApiError::bad_param("id", "a token id is a whole number"))?;
    let Some(record) = state.store.revoke_token(id, EventTime::now()).await? else {
        return Err(ApiError::not_found(format!("token {id} does not exist")));
    };
    state.auth.forget_all();
    audit(&state, &who, "token.revoke", &format!("token/{id}"), json!({"name": record.name})).await;
    Ok(Json(json!({ "token": record })))
}

/// `GET /api/v1/audit?limit=&cursor=`: newest first; `next_cursor` pages on.
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let limit = p
        .take("limit")
        .map(|v| params::limit("limit", &v, MAX_AUDIT_PAGE))
        .transpose()?
        .unwrap_or(DEFAULT_AUDIT_PAGE);
    let before = p
        .take("cursor")
        .map(|v| {
            params::whole::<i64>(&v).ok_or_else(|| {
                ApiError::bad_param("cursor", "cursor must be a next_cursor from a previous page")
            })
        })
        .transpose()?;
    p.finish()?;
    let entries = state.store.audit_log(before, limit).await?;
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.id.to_string())).flatten();
    Ok(Json(json!({ "entries": entries, "next_cursor": next })))
}
