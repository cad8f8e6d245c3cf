//! The dashboard API: REST for devices, latest values and history; the live websocket; and
//! health probes. [`app`] builds the whole router from an [`AppState`], so tests drive it
//! with `tower::ServiceExt::oneshot` or a real socket alike.

pub mod error;
pub mod live;
mod params;
pub mod routes;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use store::Store;
use stream::LiveHub;

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
        .route("/api/v1/live", get(live::upgrade))
        .fallback(routes::not_found)
        .with_state(state)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
