//! The dashboard API: REST for devices, latest values, history, road segments with their
//! live state, alerts (list, acknowledge, clear) and alert rules; the live websocket; and
//! health probes. [`app`] builds the whole router from an [`AppState`], so tests drive it
//! with `tower::ServiceExt::oneshot` or a real socket alike.

pub mod access;
pub mod alerts;
pub mod auth;
pub mod credentials;
pub mod devices;
pub mod error;
pub mod http_metrics;
pub mod live;
mod params;
pub mod routes;
pub mod web;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use auth::{guard, ADMINS, OPERATORS, READERS};
use store::Store;
use stream::LiveHub;

pub use alerts::{AlertControl, RulesSource, StoredRules, RULES_STATE_KEY};
pub use error::ApiError;

/// Renders the Prometheus text exposition of the running process's counters.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub hub: Arc<LiveHub>,
    /// Counters of the pipeline stages running in this process, if any.
    pub metrics: Option<MetricsRenderer>,
    /// The alert engine running in this process, if any: operator actions are mirrored
    /// into it and rules changed through it. Without it alerts are still listed and moved
    /// in the store.
    pub alerts: Option<AlertControl>,
    /// Token validation (cache, failure limiter).
    pub auth: auth::Auth,
    /// Request counters and latency by route, websocket sessions.
    pub http: Arc<http_metrics::HttpMetrics>,
}

impl AppState {
    /// State with no pipeline metrics and no alert engine in this process.
    pub fn new(store: Store, hub: Arc<LiveHub>) -> Self {
        Self { store, hub, metrics: None, alerts: None, auth: auth::Auth::default(), http: Arc::default() }
    }
}

/// The whole API.
///
/// Every `/api/` route but the public documents needs a bearer token ([`auth`]); each
/// route admits the roles its `guard` names.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/api/v1/latest", guard(READERS, get(routes::latest)))
        .route("/api/v1/history", guard(READERS, get(routes::history)))
        .route("/api/v1/segments", guard(READERS, get(alerts::segments)))
        .route("/api/v1/alerts", guard(READERS, get(alerts::list)))
        .route("/api/v1/alerts/{id}", guard(READERS, get(alerts::one)))
        .route("/api/v1/alerts/{id}/ack", guard(OPERATORS, post(alerts::acknowledge)))
        .route("/api/v1/alerts/{id}/clear", guard(OPERATORS, post(alerts::clear)))
        .route("/api/v1/alert-rules", guard(READERS, get(alerts::rules)).merge(guard(ADMINS, axum::routing::put(alerts::put_rules))))
        .route("/api/v1/live", guard(READERS, get(live::upgrade)))
        .merge(access::router())
        .merge(devices::router())
        .merge(web::router())
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), http_metrics::track))
        .with_state(state)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
