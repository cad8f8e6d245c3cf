//! The API's own figures for `/metrics`: requests by route, method and status (so 4xx
//! answers to bad input are counted), latency histograms by route, and the websocket
//! sessions (open, total, error frames by code, resyncs, queue overflows).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct HttpMetrics {
    requests: Mutex<HashMap<(String, String, u16), u64>>,
    latency: Mutex<HashMap<(String, String), Histogram>>,
    pub ws_open: AtomicU64,
    pub ws_sessions: AtomicU64,
    pub ws_resyncs: AtomicU64,
    pub ws_frames_sent: AtomicU64,
    ws_errors: Mutex<BTreeMap<&'static str, u64>>,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// HTTP connections open now (websockets included).
    pub connections_open: AtomicU64,
    /// Connections refused for being over `api.max_connections`.
    pub connections_refused: AtomicU64,
    timeouts: Mutex<BTreeMap<&'static str, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HttpMetrics {
    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        *lock(&self.requests).entry((route.to_owned(), method.to_owned(), status)).or_default() +=
            1;
        let mut latency = lock(&self.latency);
        let h = latency.entry((route.to_owned(), method.to_owned())).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// A websocket error frame sent to a client, by its code.
    pub fn ws_error(&self, code: &'static str) {
        *lock(&self.ws_errors).entry(code).or_default() += 1;
    }

    /// A refused token, by outcome (`unknown_token`: 401; `throttled`: 429, the address
    /// is over its failure budget).
    pub fn auth_failure(&self, outcome: &'static str) {
        *lock(&self.auth_failures).entry(outcome).or_default() += 1;
    }

    pub fn auth_failures(&self, outcome: &str) -> u64 {
        lock(&self.auth_failures).get(outcome).copied().unwrap_or(0)
    }

    /// A connection closed or a request answered for being too slow, by phase (`headers`:
    /// the request head did not arrive in time; `request`: no answer in time).
    pub fn timeout(&self, phase: &'static str) {
        *lock(&self.timeouts).entry(phase).or_default() += 1;
    }

    pub fn timeouts(&self, phase: &str) -> u64 {
        lock(&self.timeouts).get(phase).copied().unwrap_or(0)
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
        lock(&self.ws_errors).get(code).copied().unwrap_or(0)
    }

    /// Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP sccr_http_requests_total HTTP requests answered, by route, method and status."
        );
        let _ = writeln!(out, "# TYPE sccr_http_requests_total counter");
        let requests: BTreeMap<_, _> =
            lock(&self.requests).iter().map(|(k, v)| (k.clone(), *v)).collect();
        for ((route, method, status), n) in requests {
            let _ = writeln!(out, "sccr_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP sccr_http_request_duration_seconds Time to answer HTTP requests, by route and method.");
        let _ = writeln!(out, "# TYPE sccr_http_request_duration_seconds histogram");
        let latency = lock(&self.latency);
        let mut keys: Vec<_> = latency.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let Some(h) = latency.get(&key) else { continue };
            let (route, method) = key;
            for (le, n) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(out, "sccr_http_request_duration_seconds_bucket{{route=\"{route}\",method=\"{method}\",le=\"{le}\"}} {n}");
            }
            let _ = writeln!(out, "sccr_http_request_duration_seconds_bucket{{route=\"{route}\",method=\"{method}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "sccr_http_request_duration_seconds_sum{{route=\"{route}\",method=\"{method}\"}} {}", h.sum);
            let _ = writeln!(out, "sccr_http_request_duration_seconds_count{{route=\"{route}\",method=\"{method}\"}} {}", h.count);
        }
        drop(latency);
        let gauges = [
            (
                "sccr_http_connections",
                "gauge",
                "HTTP connections open now, websockets included.",
                self.connections_open.load(Ordering::Relaxed),
            ),
            (
                "sccr_http_connections_refused_total",
                "counter",
                "Connections refused for being over api.max_connections.",
                self.connections_refused.load(Ordering::Relaxed),
            ),
            (
                "sccr_ws_clients",
                "gauge",
                "Websocket sessions open now.",
                self.ws_open.load(Ordering::Relaxed),
            ),
            (
                "sccr_ws_sessions_total",
                "counter",
                "Websocket sessions opened.",
                self.ws_sessions.load(Ordering::Relaxed),
            ),
            (
                "sccr_ws_resyncs_total",
                "counter",
                "Fresh snapshots sent to websocket clients that fell behind.",
                self.ws_resyncs.load(Ordering::Relaxed),
            ),
            (
                "sccr_ws_frames_sent_total",
                "counter",
                "Frames sent to websocket clients.",
                self.ws_frames_sent.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        let _ = writeln!(out, "# HELP sccr_ws_errors_total Error frames sent to websocket clients for bad messages, by code.");
        let _ = writeln!(out, "# TYPE sccr_ws_errors_total counter");
        for (code, n) in lock(&self.ws_errors).iter() {
            let _ = writeln!(out, "sccr_ws_errors_total{{code=\"{code}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP sccr_http_timeouts_total Connections closed (headers: the request head came too slowly) and requests answered 503 (request: no answer in time) for slowness.");
        let _ = writeln!(out, "# TYPE sccr_http_timeouts_total counter");
        for (phase, n) in lock(&self.timeouts).iter() {
            let _ = writeln!(out, "sccr_http_timeouts_total{{phase=\"{phase}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP sccr_http_auth_failures_total Refused tokens: unknown_token (401), throttled (429, the address is over its failure budget).");
        let _ = writeln!(out, "# TYPE sccr_http_auth_failures_total counter");
        for (outcome, n) in lock(&self.auth_failures).iter() {
            let _ = writeln!(out, "sccr_http_auth_failures_total{{outcome=\"{outcome}\"}} {n}");
        }
    }
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
    state.http.observe(&route, &method, resp.status().as_u16(), started.elapsed().as_secs_f64());
    resp
}
