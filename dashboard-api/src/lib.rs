//! The dashboard API: REST for devices, latest values, history, road segments with their
//! live state, alerts (list, acknowledge, clear) and alert rules; the live websocket; and
//! health probes. [`app`] builds the whole router from an [`AppState`], so tests drive it
//! with `tower::ServiceExt::oneshot` or a real socket alike.

pub mod alerts;
pub mod error;
pub mod export;
pub mod formats;
pub mod live;
mod params;
pub mod routes;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
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
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/api/v1/devices", get(routes::devices))
        .route("/api/v1/latest", get(routes::latest))
        .route("/api/v1/history", get(routes::history))
        .route("/api/v1/segments", get(alerts::segments))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/{id}", get(alerts::one))
        .route("/api/v1/alerts/{id}/ack", post(alerts::acknowledge))
        .route("/api/v1/alerts/{id}/clear", post(alerts::clear))
        .route("/api/v1/alert-rules", get(alerts::rules).put(alerts::put_rules))
        .route("/api/v1/live", get(live::upgrade))
        .merge(export::router())
        .fallback(routes::not_found)
        .with_state(state)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
