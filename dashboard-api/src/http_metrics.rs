//! The API's own figures for `/metrics`: requests by route, method and status (so 4xx
//! answers to bad input are counted), latency histograms by route, and the websocket
//! sessions (open, total, error frames by code, resyncs, queue overflows).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use stream::LiveHub;
use telemetry::metrics::{self, Collector, CountsBy, Encoder, Histogram, Registry, Unit};
use telemetry::metrics::{ConstCounter, EncodeMetric, MetricType, NoLabelSet};

use crate::AppState;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Default)]
pub struct HttpMetrics {
    requests: Mutex<HashMap<(String, String, u16), u64>>,
    latency: Mutex<HashMap<(String, String), Arc<Histogram>>>,
    pub ws_open: AtomicU64,
    pub ws_sessions: AtomicU64,
    pub ws_resyncs: AtomicU64,
    pub ws_frames_sent: AtomicU64,
    ws_errors: CountsBy,
    auth_failures: CountsBy,
    /// HTTP connections open now (websockets included).
    pub connections_open: AtomicU64,
    /// Connections refused for being over `api.max_connections`.
    pub connections_refused: AtomicU64,
    timeouts: CountsBy,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HttpMetrics {
    pub fn observe(&self, route: &str, method: &str, status: u16, took: Duration) {
        *lock(&self.requests).entry((route.to_owned(), method.to_owned(), status)).or_default() +=
            1;
        let h = lock(&self.latency)
            .entry((route.to_owned(), method.to_owned()))
            .or_insert_with(|| Arc::new(Histogram::new(&BUCKETS)))
            .clone();
        h.observe(took);
    }

    /// A websocket error frame sent to a client, by its code.
    pub fn ws_error(&self, code: &'static str) {
        self.ws_errors.add(code, 1);
    }

    /// A refused token, by outcome (`unknown_token`: 401; `throttled`: 429, the address
    /// is over its failure budget).
    pub fn auth_failure(&self, outcome: &'static str) {
        self.auth_failures.add(outcome, 1);
    }

    pub fn auth_failures(&self, outcome: &str) -> u64 {
        self.auth_failures.get(outcome)
    }

    /// A connection closed or a request answered for being too slow, by phase (`headers`:
    /// the request head did not arrive in time; `request`: no answer in time).
    pub fn timeout(&self, phase: &'static str) {
        self.timeouts.add(phase, 1);
    }

    pub fn timeouts(&self, phase: &str) -> u64 {
        self.timeouts.get(phase)
    }

    /// Requests counted for (route, status), for tests.
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        lock(&self.requests)
            .iter()
            .filter(|((r, _, s), _)| r == route && *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn ws_errors(&self, code: &str) -> u64 {
        self.ws_errors.get(code)
    }
}

impl Collector for HttpMetrics {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let e = &mut e;
        let requests: BTreeMap<_, _> =
            lock(&self.requests).iter().map(|(k, v)| (k.clone(), *v)).collect();
        let mut family = e.encode_descriptor(
            "http_requests",
            "HTTP requests answered, by route, method and status.",
            None,
            MetricType::Counter,
        )?;
        for ((route, method, status), n) in requests {
            let labels =
                [("route", route.as_str()), ("method", &method), ("status", &status.to_string())];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        let latency: BTreeMap<_, _> =
            lock(&self.latency).iter().map(|(k, h)| (k.clone(), h.snapshot())).collect();
        let mut family = e.encode_descriptor(
            "http_request_duration",
            "Time to answer HTTP requests, by route and method.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for ((route, method), h) in latency {
            family
                .encode_family(&[("route", route.as_str()), ("method", &method)])?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let count = |a: &AtomicU64| i64::try_from(get(a)).unwrap_or(i64::MAX);
        metrics::gauge(
            e,
            "http_connections",
            "HTTP connections open now, websockets included.",
            count(&self.connections_open),
        )?;
        metrics::counter(
            e,
            "http_connections_refused",
            "Connections refused for being over api.max_connections.",
            get(&self.connections_refused),
        )?;
        metrics::gauge(e, "ws_clients", "Websocket sessions open now.", count(&self.ws_open))?;
        metrics::counter(e, "ws_sessions", "Websocket sessions opened.", get(&self.ws_sessions))?;
        metrics::counter(
            e,
            "ws_resyncs",
            "Fresh snapshots sent to websocket clients that fell behind.",
            get(&self.ws_resyncs),
        )?;
        metrics::counter(
            e,
            "ws_frames_sent",
            "Frames sent to websocket clients.",
            get(&self.ws_frames_sent),
        )?;
        self.ws_errors.encode(
            e,
            "ws_errors",
            "Error frames sent to websocket clients for bad messages, by code.",
            "code",
        )?;
        self.timeouts.encode(
            e,
            "http_timeouts",
            "Connections closed (headers: the request head came too slowly) and requests answered 503 (request: no answer in time) for slowness.",
            "phase",
        )?;
        self.auth_failures.encode(
            e,
            "http_auth_failures",
            "Refused tokens: unknown_token (401), throttled (429, the address is over its failure budget).",
            "outcome",
        )
    }
}

/// The number of (device, metric) values the live hub holds.
#[derive(Debug)]
struct LiveValues(Arc<LiveHub>);

impl Collector for LiveValues {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let n = i64::try_from(self.0.len()).unwrap_or(i64::MAX);
        metrics::gauge(
            &mut e,
            "live_values",
            "Current (device, metric) values held for live subscribers.",
            n,
        )
    }
}

/// `registry` with the API's collectors added under the `sccr` prefix.
pub fn with_api_metrics(
    mut registry: Registry,
    http: &Arc<HttpMetrics>,
    hub: &Arc<LiveHub>,
) -> Registry {
    let sccr = registry.sub_registry_with_prefix("sccr");
    sccr.register_collector(Box::new(http.clone()));
    sccr.register_collector(Box::new(LiveValues(hub.clone())));
    registry
}

/// Middleware counting every answer by its matched route (`unmatched` for the fallback).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    state.http.observe(&route, &method, resp.status().as_u16(), started.elapsed());
    resp
}
