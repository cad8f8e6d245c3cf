//! Dead letters: what ingest refused, with the reason, newest first; and counts by reason.

use axum::extract::{RawQuery, State};
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::params::{self, Params};
use crate::AppState;

pub const MAX_PAGE: usize = 1_000;
const DEFAULT_PAGE: usize = 100;

/// `GET /api/v1/dead-letters?reason=&limit=&cursor=`.
pub async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let reason = p.take("reason");
    let limit = p
        .take("limit")
        .map(|v| params::limit("limit", &v, MAX_PAGE))
        .transpose()?
        .unwrap_or(DEFAULT_PAGE);
    let before = p
        .take("cursor")
        .map(|v| {
            crate::params::whole::<i64>(&v).ok_or_else(|| {
                ApiError::bad_param("cursor", "cursor must be a next_cursor from a previous page")
            })
        })
        .transpose()?;
    p.finish()?;
    let page = state.store.dead_letter_page(reason.as_deref(), before, limit).await?;
    let next = (page.len() == limit).then(|| page.last().map(|d| d.id.to_string())).flatten();
    Ok(Json(json!({ "dead_letters": page, "next_cursor": next })))
}

/// `GET /api/v1/dead-letters/reasons?since=`: counts by reason, most frequent first.
pub async fn reasons(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let now = telemetry::EventTime::now();
    let since = p.take("since").map(|v| params::time("since", &v, now)).transpose()?;
    p.finish()?;
    let counts = state.store.dead_letter_reasons(since).await?;
    let reasons: Vec<Value> = counts
        .into_iter()
        .map(|(reason, count)| json!({"reason": reason, "count": count}))
        .collect();
    Ok(Json(json!({ "reasons": reasons })))
}
