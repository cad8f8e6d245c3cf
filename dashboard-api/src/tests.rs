//! The API against an in-memory SQLite store, through the router: the shared state, tokens
//! and request and session drivers are here; each area has its file under `tests/`.

use crate::rules::StoredRules;
use crate::AlertControl;
use crate::{app, live, AppState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use store::{Batch, Store, StoreOptions};
use stream::LiveHub;
use stream::{AlertRulesConfig, OperatorAction, StreamCommand};
use telemetry::{DeviceId, EventTime, MetricId, Reading};
use tokio::sync::mpsc;
use tower::ServiceExt;

mod access;
mod alerts;
mod baselines;
mod devices;
mod live_protocol;
mod live_session;
mod map;
mod operations;
mod readings;
mod rules;
mod segments;
mod server;
mod webhooks;

const T0: i64 = 1_763_892_000_000;

async fn state() -> AppState {
    let store = Store::connect("sqlite::memory:", &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let readings: Vec<Reading> = (0..120)
        .map(|i| Reading {
            device: DeviceId::parse("loop-1").unwrap(),
            metric: MetricId::SpeedKmh,
            time: EventTime(T0 + i * 1_000),
            value: i as f64,
            seq: None,
        })
        .collect();
    store
        .write_batch(&Batch {
            readings,
            new_devices: vec![DeviceId::parse("loop-1").unwrap()],
            ..Batch::default()
        })
        .await
        .unwrap();
    for (token, name, role) in TOKENS {
        store
            .ensure_token(name, role, &crate::auth::token_digest(token), EventTime(T0))
            .await
            .unwrap();
    }
    let mut state = AppState::new(store, LiveHub::new(64));
    // The pipeline's collectors, as the composition root registers them.
    let pipeline = std::sync::Arc::new(store::WriterMetrics::default());
    pipeline.batches.store(7, std::sync::atomic::Ordering::Relaxed);
    let mut registry = telemetry::metrics::Registry::default();
    registry.sub_registry_with_prefix("sccr").register_collector(Box::new(pipeline));
    state.set_metrics(registry);
    state
}

const ADMIN: &str = "sccr_test_admin";
const ADA: &str = "sccr_test_ada";
const BOB: &str = "sccr_test_bob";
const PLANNER: &str = "sccr_test_planner";
const DEVICE: &str = "sccr_test_device";
/// (token, name, role) stored by [`state`].
const TOKENS: [(&str, &str, &str); 5] = [
    (ADMIN, "root", "admin"),
    (ADA, "ada", "operator"),
    (BOB, "bob", "operator"),
    (PLANNER, "pia", "planner"),
    (DEVICE, "loop-1", "device"),
];

async fn get(state: &AppState, uri: &str) -> (StatusCode, Value) {
    let req = Request::get(uri)
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn reading(dev: &str, t: i64, v: f64) -> Reading {
    Reading {
        device: DeviceId::parse(dev).unwrap(),
        metric: MetricId::SpeedKmh,
        time: EventTime(t),
        value: v,
        seq: None,
    }
}

async fn next_json(rx: &mut mpsc::Receiver<String>) -> Value {
    loop {
        let text = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("a frame in time")
            .expect("open");
        if text != live::PING_MARK {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Drive a session over channels: (client → server sender, server → client receiver).
fn session(
    hub: std::sync::Arc<LiveHub>,
) -> (mpsc::Sender<Result<String, ()>>, mpsc::Receiver<String>) {
    session_with(live::Session::new(hub))
}

/// Like [`session`] with a given session context (store, timers).
fn session_with(ctx: live::Session) -> (mpsc::Sender<Result<String, ()>>, mpsc::Receiver<String>) {
    let (in_tx, in_rx) = mpsc::channel::<Result<String, ()>>(16);
    let (out_tx, out_rx) = mpsc::channel::<String>(1024);
    let sink = futures_util::sink::unfold(out_tx, |tx, frame: String| async move {
        tx.send(frame).await.map_err(|_| ())?;
        Ok::<_, ()>(tx)
    });
    let stream = tokio_stream_from(in_rx);
    tokio::spawn(live::run_session(ctx, Box::pin(sink), stream));
    (in_tx, out_rx)
}

fn tokio_stream_from(
    rx: mpsc::Receiver<Result<String, ()>>,
) -> std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<String, ()>> + Send>> {
    Box::pin(futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
    ))
}

/// A state with an alert control whose command queue the test reads, the config file's
/// `[alerts]` being the default section.
async fn state_with_engine() -> (AppState, mpsc::Receiver<StreamCommand>) {
    state_with_file(&AlertRulesConfig::default()).await
}

/// A state with an alert control (the config file's `[alerts]` being `file`), the Florence
/// road segments and the registered device `loop-1`.
async fn state_with_file(file: &AlertRulesConfig) -> (AppState, mpsc::Receiver<StreamCommand>) {
    let mut s = state().await;
    let segments = telemetry::segment::parse_geojson(telemetry::segment::FLORENCE_SEED).unwrap();
    s.store.upsert_segments(&segments).await.unwrap();
    let (tx, rx) = mpsc::channel(8);
    let rules = StoredRules::of_file(file);
    s.alerts = Some(AlertControl {
        commands: tx,
        rules: std::sync::Arc::new(tokio::sync::Mutex::new(rules)),
    });
    (s, rx)
}

async fn send(state: &AppState, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    send_as(state, ADMIN, method, uri, body).await
}

async fn send_as(
    state: &AppState,
    token: &str,
    method: &str,
    uri: &str,
    body: &str,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn raise(state: &AppState, segment: &str, at: i64) -> i64 {
    let alert = store::NewAlert {
        rule: "congestion".into(),
        subject: store::AlertSubject::Segment(telemetry::SegmentId::parse(segment).unwrap()),
        kind: store::AlertKind::Single,
        severity: store::Severity::Critical,
        message: "LOS E or worse".into(),
        value: Some(12.5),
        since: EventTime(at),
        raised_at: EventTime(at),
        members: 1,
        code: store::MessageCode::LosAtOrWorse,
        params: serde_json::json!({"grade": "E"}).as_object().cloned().unwrap(),
        suppressed: None,
    };
    match state.store.raise_alert(&alert).await.unwrap() {
        store::RaiseOutcome::Raised(r) => r.id,
        other => panic!("{other:?}"),
    }
}

fn segment_state(
    seg: &str,
    start: i64,
    speed: f64,
    los: stream::LevelOfService,
) -> stream::SegmentState {
    stream::SegmentState {
        segment: telemetry::SegmentId::parse(seg).unwrap(),
        start: EventTime(start),
        end: EventTime(start + 60_000),
        flow_vph: Some(720.0),
        speed_kmh: Some(speed),
        occupancy_pct: Some(31.0),
        los: Some(los),
        detectors: 2,
        revision: 0,
        forecast: None,
    }
}
