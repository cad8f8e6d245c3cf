use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use store::{Batch, Store, StoreOptions};
use stream::LiveHub;
use telemetry::{DeviceId, EventTime, MetricId, Reading};
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::{app, live, AppState};

mod access;
mod live_protocol;
mod map;
mod rules;
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

#[tokio::test]
async fn devices_latest_and_health() {
    let s = state().await;
    let (st, body) = get(&s, "/api/v1/devices").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["devices"][0]["id"], "loop-1");
    let (st, body) = get(&s, "/api/v1/latest?device=loop-1&metric=speed_kmh").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["values"][0]["value"], 119.0);
    assert_eq!(body["values"][0]["time"], T0 + 119_000);
    assert_eq!(get(&s, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&s, "/readyz").await.1["store"], "sqlite");
    let resp = app(s.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text =
        String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec())
            .unwrap();
    assert!(
        text.contains("\nsccr_writer_batches_total 7\n")
            && text.contains("\nsccr_live_values 0\n")
            && text.ends_with("# EOF\n"),
        "{text}"
    );
}

#[tokio::test]
async fn history_raw_and_minute() {
    let s = state().await;
    let (st, body) = get(
        &s,
        &format!("/api/v1/history?device=loop-1&metric=speed_kmh&from={}&to={}", T0, T0 + 3_000),
    )
    .await;
    assert_eq!(body["resolution"], "raw", "a short span is answered with raw readings: {body}");
    assert_eq!(st, StatusCode::OK, "{body}");
    let vs: Vec<f64> =
        body["points"].as_array().unwrap().iter().map(|p| p["v"].as_f64().unwrap()).collect();
    assert_eq!(vs, vec![0.0, 1.0, 2.0]);
    let (_, body) = get(
        &s,
        "/api/v1/history?device=loop-1&metric=speed_kmh&from=2025-11-23T10:00:00Z&to=2025-11-23T10:05:00Z&resolution=1m",
    )
    .await;
    let pts = body["points"].as_array().unwrap();
    assert_eq!(pts.len(), 2);
    assert_eq!(pts[0]["count"], 60);
    assert_eq!(pts[0]["sum"], (0..60).sum::<i32>() as f64);
    assert_eq!(pts[1]["min"], 60.0);
    assert_eq!(pts[1]["avg"], 89.5);
    assert_eq!(body["unit"], "km/h");
}

#[tokio::test]
async fn bad_parameters_get_json_errors_naming_them() {
    let s = state().await;
    let cases = [
        ("/api/v1/history?device=loop-1", "metric", StatusCode::BAD_REQUEST),
        (
            "/api/v1/history?device=loop-1&segment=viale-x&metric=speed_kmh",
            "segment",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("/api/v1/history?segment=Bad!&metric=speed_kmh", "segment", StatusCode::BAD_REQUEST),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&step=5s",
            "step",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&step=soon",
            "step",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&step=1m&resolution=1h",
            "resolution",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&fill=zero",
            "fill",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&agg=median",
            "agg",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&max_points=0",
            "max_points",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/history?device=Bad!&metric=speed_kmh", "device", StatusCode::BAD_REQUEST),
        ("/api/v1/history?device=loop-1&metric=warp", "metric", StatusCode::BAD_REQUEST),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&from=yesterday",
            "from",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&from=2000&to=1000",
            "from",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&resolution=5s",
            "resolution",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&limit=0",
            "limit",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&limit=abc",
            "limit",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=loop-1&device=loop-2&metric=speed_kmh",
            "device",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/latest?colour=red", "colour", StatusCode::BAD_REQUEST),
        ("/api/v1/devices?x=1", "x", StatusCode::BAD_REQUEST),
    ];
    // 400: a parameter breaks the OpenAPI document; 422: each is valid, not together.
    for (uri, param, status) in cases {
        let (st, body) = get(&s, uri).await;
        assert_eq!(st, status, "{uri}");
        assert_eq!(body["error"]["code"], "bad_parameter", "{uri}");
        assert_eq!(body["error"]["param"], param, "{uri}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let (st, body) = get(&s, "/api/v1/nothing").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
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

#[tokio::test]
async fn subscribe_gives_snapshot_then_filtered_deltas() {
    let hub = LiveHub::new(64);
    hub.apply(&[reading("a", T0, 1.0), reading("b", T0, 2.0)]);
    let (tx, mut rx) = session(hub.clone());
    tx.send(Ok(r#"{"type":"subscribe","devices":["a"]}"#.into())).await.unwrap();
    let snap = next_json(&mut rx).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["values"].as_array().unwrap().len(), 1);
    assert_eq!(snap["values"][0]["value"], 1.0);
    hub.apply(&[reading("b", T0 + 1, 20.0), reading("a", T0 + 1, 10.0)]);
    let delta = next_json(&mut rx).await;
    assert_eq!(delta["type"], "delta");
    assert_eq!(delta["values"].as_array().unwrap().len(), 1);
    assert_eq!(delta["values"][0]["device"], "a");
    assert_eq!(delta["values"][0]["value"], 10.0);

    tx.send(Ok(r#"{"type":"unsubscribe"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "unsubscribed");
    hub.apply(&[reading("a", T0 + 2, 11.0)]);
    tx.send(Ok(r#"{"type":"ping"}"#.into())).await.unwrap();
    // The pong comes next: nothing for "a" was sent after unsubscribe.
    assert_eq!(next_json(&mut rx).await["type"], "pong");
}

#[tokio::test]
async fn bad_messages_get_errors_and_the_session_goes_on() {
    let hub = LiveHub::new(64);
    let (tx, mut rx) = session(hub);
    for (msg, code) in [
        ("not json", "bad_message"),
        (r#"{"type":"dance"}"#, "bad_message"),
        (r#"{"type":"subscribe","devices":["NO"]}"#, "bad_subscription"),
        (r#"{"type":"subscribe","metrics":["warp"]}"#, "bad_subscription"),
        ("\u{0}binary", "bad_message"),
    ] {
        tx.send(Ok(msg.into())).await.unwrap();
        let f = next_json(&mut rx).await;
        assert_eq!(f["type"], "error", "{msg}");
        assert_eq!(f["code"], code, "{msg}");
    }
    tx.send(Ok(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "pong");
}

#[tokio::test]
async fn a_client_that_falls_behind_gets_a_fresh_snapshot() {
    let hub = LiveHub::new(16);
    let (tx, mut rx) = session(hub.clone());
    tx.send(Ok(r#"{"type":"subscribe","segments":[]}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "snapshot");
    // On this single-threaded runtime the session cannot run during this synchronous burst,
    // so its 16-event queue overflows before it reads; values, conflated, never do.
    for i in 0..200 {
        hub.publish_segments(vec![segment_state(
            "s1",
            T0 + i * 60_000,
            20.0,
            stream::LevelOfService::C,
        )]);
        hub.apply(&[reading("a", T0 + i, i as f64)]);
    }
    let f = next_json(&mut rx).await;
    assert_eq!(
        (f["type"].as_str(), f["reason"].as_str()),
        (Some("snapshot"), Some("resync")),
        "{f}"
    );
    assert_eq!(f["segments"][0]["start"], T0 + 199 * 60_000);
    assert_eq!(f["values"][0]["value"], 199.0);
}

// ---- alerts, rules, segments ----

use stream::{AlertRulesConfig, OperatorAction, StreamCommand};

use crate::rules::StoredRules;
use crate::AlertControl;

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

#[tokio::test]
async fn alerts_are_listed_filtered_and_paged() {
    let s = state().await;
    let a = raise(&s, "viale-strozzi", T0).await;
    let b = raise(&s, "lungarno-acciaiuoli", T0 + 1_000).await;
    let (st, body) = get(&s, "/api/v1/alerts?state=open").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let ids: Vec<i64> =
        body["alerts"].as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![b, a], "newest first");
    assert_eq!(body["alerts"][0]["subject"]["segment"], "lungarno-acciaiuoli");
    assert_eq!(body["alerts"][0]["severity"], "critical");
    assert_eq!(body["alerts"][0]["state"], "raised");
    let (_, page) = get(&s, "/api/v1/alerts?limit=1").await;
    assert_eq!(page["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(page["next"], b);
    let (_, page2) = get(&s, &format!("/api/v1/alerts?limit=1&before={b}")).await;
    assert_eq!(page2["alerts"][0]["id"], a);
    let (_, seg) =
        get(&s, "/api/v1/alerts?segment=viale-strozzi&severity=critical,warning&rule=congestion")
            .await;
    assert_eq!(seg["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(seg["alerts"][0]["id"], a);
    let (_, none) = get(&s, "/api/v1/alerts?state=cleared").await;
    assert!(none["alerts"].as_array().unwrap().is_empty());
    for (uri, param) in [
        ("/api/v1/alerts?state=asleep", "state"),
        ("/api/v1/alerts?severity=loud", "severity"),
        ("/api/v1/alerts?before=x", "before"),
        ("/api/v1/alerts?limit=0", "limit"),
        ("/api/v1/alerts?colour=red", "colour"),
    ] {
        let (st, body) = get(&s, uri).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(body["error"]["param"], param, "{uri}: {body}");
    }
}

#[tokio::test]
async fn shelving_is_checked_stored_audited_pushed_and_mirrored() {
    let (s, mut commands) = state_with_engine().await;
    let id = raise(&s, "viale-strozzi", T0).await;
    let shelve = format!("/api/v1/alerts/{id}/shelve");
    let now = EventTime::now().millis();
    let long = "x".repeat(501);
    for (body, field) in [
        (r#"{"reason":" ","for":"1h"}"#.to_owned(), "reason"),
        (format!(r#"{{"reason":"{long}","for":"1h"}}"#), "reason"),
        (r#"{"reason":"works"}"#.to_owned(), "for"),
        (format!(r#"{{"reason":"works","for":"1h","until":{}}}"#, now + 60_000), "for"),
        (r#"{"reason":"works","for":"9h"}"#.to_owned(), "for"),
        (r#"{"reason":"works","for":"soon"}"#.to_owned(), "for"),
        (format!(r#"{{"reason":"works","until":{}}}"#, now - 1), "until"),
        (format!(r#"{{"reason":"works","until":{}}}"#, now + 9 * 3_600_000), "until"),
    ] {
        let (st, answer) = send_as(&s, ADA, "POST", &shelve, &body).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["param"], field, "{body}: {answer}");
    }
    let (st, _) = send_as(&s, ADA, "POST", &shelve, r#"{"for":"1h"}"#).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "reason is required");
    let (st, _) = send_as(&s, PLANNER, "POST", &shelve, r#"{"reason":"x","for":"1h"}"#).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "operators only");
    assert!(commands.try_recv().is_err(), "nothing refused reaches the engine");

    let (st, body) =
        send_as(&s, ADA, "POST", &shelve, r#"{"reason":"road works","for":"2h"}"#).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["alert"]["state"], "raised");
    assert_eq!(body["alert"]["shelved"]["by"], "ada");
    assert_eq!(body["alert"]["shelved"]["reason"], "road works");
    let until = body["alert"]["shelved"]["until"].as_i64().unwrap();
    assert_eq!(until - body["alert"]["shelved"]["at"].as_i64().unwrap(), 7_200_000);
    assert!(s.hub.open_alerts()[0].shelved.is_some(), "pushed live");
    let Some(StreamCommand::Operator {
        action: OperatorAction::Shelve { reason, until: u },
        by,
        ..
    }) = commands.try_recv().ok()
    else {
        panic!("no command")
    };
    assert_eq!((reason.as_str(), u.millis(), by.as_str()), ("road works", until, "ada"));
    let (_, listed) = get(&s, "/api/v1/alerts?state=shelved").await;
    assert_eq!(listed["alerts"][0]["id"], id);
    let (_, listed) = get(&s, "/api/v1/alerts?state=raised,suppressed").await;
    assert_eq!(listed["alerts"].as_array().unwrap().len(), 0);

    let unshelve = format!("/api/v1/alerts/{id}/unshelve");
    let (st, body) = send_as(&s, BOB, "POST", &unshelve, r#"{"note":"done"}"#).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body["alert"]["shelved"].is_null());
    let (st, _) = send_as(&s, BOB, "POST", &unshelve, "").await;
    assert_eq!(st, StatusCode::CONFLICT, "not shelved");
    let audit = s.store.audit_log(None, 10).await.unwrap();
    let actions: Vec<(&str, &str, &str)> = audit
        .iter()
        .rev()
        .filter(|a| a.action.contains("shelve"))
        .map(|a| (a.actor.as_str(), a.action.as_str(), a.target.as_str()))
        .collect();
    let target = format!("alert/{id}");
    assert_eq!(
        actions,
        [("ada", "alert.shelve", target.as_str()), ("bob", "alert.unshelve", target.as_str())]
    );
    let events = s.store.alert_events(id).await.unwrap();
    assert_eq!(
        events.iter().map(|e| (e.action, e.by.as_deref())).collect::<Vec<_>>(),
        [
            (None, None),
            (Some(store::AlertMove::Shelve), Some("ada")),
            (Some(store::AlertMove::Unshelve), Some("bob"))
        ]
    );

    let (st, _) = send_as(&s, ADA, "POST", &format!("/api/v1/alerts/{id}/clear"), "").await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = send_as(&s, ADA, "POST", &shelve, r#"{"reason":"late","for":"1h"}"#).await;
    assert_eq!(st, StatusCode::CONFLICT, "a cleared alert");
    let (st, _) =
        send_as(&s, ADA, "POST", "/api/v1/alerts/999/shelve", r#"{"reason":"x","for":"1h"}"#).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, body) = get(&s, "/api/v1/alerts?state=nope").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body.to_string().contains("returned"), "{body}");
}

#[tokio::test]
async fn acknowledge_and_clear_update_the_store_the_hub_and_the_engine() {
    let (s, mut commands) = state_with_engine().await;
    let id = raise(&s, "viale-strozzi", T0).await;
    let (st, body) = send_as(
        &s,
        ADA,
        "POST",
        &format!("/api/v1/alerts/{id}/ack"),
        r#"{"note":"crew on the way"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["alert"]["state"], "acknowledged");
    assert_eq!(body["alert"]["acknowledged"]["by"], "ada");
    assert_eq!(s.hub.open_alerts()[0].state, stream::AlertState::Acknowledged, "pushed live");
    let Some(StreamCommand::Operator {
        action: OperatorAction::Acknowledge, key, by, note, ..
    }) = commands.try_recv().ok()
    else {
        panic!("no command")
    };
    assert_eq!(
        (key.rule.as_str(), key.subject.to_string(), by.as_str(), note.as_deref()),
        ("congestion", "segment viale-strozzi".to_owned(), "ada", Some("crew on the way"))
    );

    let (st, body) = send_as(&s, BOB, "POST", &format!("/api/v1/alerts/{id}/ack"), "").await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert!(commands.try_recv().is_err(), "a refused move is not mirrored");

    let (st, body) = send_as(
        &s,
        ADA,
        "POST",
        &format!("/api/v1/alerts/{id}/clear"),
        r#"{"note":"cleared on site"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["alert"]["cleared"]["by"], "ada");
    assert!(matches!(
        commands.try_recv(),
        Ok(StreamCommand::Operator { action: OperatorAction::Clear, .. })
    ));
    assert!(s.hub.open_alerts().is_empty());
    assert_eq!(
        send_as(&s, ADA, "POST", &format!("/api/v1/alerts/{id}/clear"), "{}").await.0,
        StatusCode::CONFLICT
    );

    let (st, detail) = get(&s, &format!("/api/v1/alerts/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    let events: Vec<(Value, Value, Value)> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["to"].clone(), e["by"].clone(), e["note"].clone()))
        .collect();
    assert_eq!(
        events,
        vec![
            (Value::from("raised"), Value::Null, Value::Null),
            (Value::from("acknowledged"), Value::from("ada"), Value::from("crew on the way")),
            (Value::from("cleared"), Value::from("ada"), Value::from("cleared on site")),
        ]
    );
}

#[tokio::test]
async fn operator_moves_refuse_unknown_ids_and_bad_bodies() {
    let s = state().await;
    let id = raise(&s, "viale-strozzi", T0).await;
    let (st, body) = send(&s, "POST", "/api/v1/alerts/999/ack", "{}").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(get(&s, "/api/v1/alerts/999").await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(&s, "POST", "/api/v1/alerts/999/clear", "{}").await.0, StatusCode::NOT_FOUND);
    for (body, field) in [
        (r#"{"by":"ada"}"#, "by"),
        ("not json", "body"),
        ("[1]", "body"),
        (r#"{"colour":"red"}"#, "colour"),
        (r#"{"note":5}"#, "note"),
    ] {
        let (st, resp) = send(&s, "POST", &format!("/api/v1/alerts/{id}/ack"), body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(resp["error"]["param"], field, "{body}: {resp}");
    }
    assert_eq!(send(&s, "POST", "/api/v1/alerts/abc/ack", "{}").await.1["error"]["param"], "id");
    assert_eq!(
        get(&s, &format!("/api/v1/alerts/{id}")).await.1["alert"]["state"],
        "raised",
        "nothing moved"
    );
}

#[tokio::test]
async fn alert_rules_are_read_and_replaced_with_every_error_named() {
    let (s, mut commands) = state_with_engine().await;
    let (st, body) = get(&s, "/api/v1/alert-rules").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["rules"]["air_quality_defaults"], true);
    assert_eq!(body["effective_rules"], 5);

    let bad =
        r#"{"rules":[{"id":"Bad Id","severity":"info","threshold":{"metric":"warp","above":1}}]}"#;
    let (st, body) = send(&s, "PUT", "/api/v1/alert-rules", bad).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_rules");
    let paths: Vec<&str> = body["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"rules[0].id") && paths.contains(&"rules[0].threshold.metric"),
        "{paths:?}"
    );
    let (st, body) = send(
        &s,
        "PUT",
        "/api/v1/alert-rules",
        r#"{"rules":[{"id":"x","severity":"info","threshold":{"metric":"speed_kmh","abov":1}}]}"#,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body["error"]["param"].as_str().unwrap().starts_with("rules[0].threshold"), "{body}");

    let good = r#"{"air_quality_defaults":false,"rules":[{"id":"congestion","severity":"critical","scope":{"segments":["viale-strozzi"]},"los":{"at_or_worse":"E","for":"5m"}}]}"#;
    let engine = tokio::spawn(async move {
        match commands.recv().await {
            Some(StreamCommand::SetRules { rules, done }) => {
                let _ = done.send(());
                rules.rules.iter().map(|r| r.id.to_string()).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        }
    });
    let (st, body) = send(&s, "PUT", "/api/v1/alert-rules", good).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(engine.await.unwrap(), vec!["congestion"]);
    assert_eq!(get(&s, "/api/v1/alert-rules").await.1["rules"]["rules"][0]["id"], "congestion");
    let saved: StoredRules = serde_json::from_value(
        s.store.load_stream_state(crate::RULES_STATE_KEY).await.unwrap().unwrap(),
    )
    .unwrap();
    assert_eq!(saved.rules.rules.len(), 1);
    assert_eq!(
        saved.file,
        AlertRulesConfig::default(),
        "the file's section it replaced is kept with it"
    );
}

#[tokio::test]
async fn single_rules_are_added_replaced_and_removed() {
    let (s, mut commands) = state_with_engine().await;
    // The engine side: accept every rule set, report the ids it got.
    let (ids_tx, mut ids) = mpsc::channel::<Vec<String>>(8);
    tokio::spawn(async move {
        while let Some(StreamCommand::SetRules { rules, done }) = commands.recv().await {
            let _ = done.send(());
            let _ = ids_tx.send(rules.rules.iter().map(|r| r.id.to_string()).collect()).await;
        }
    });
    let rule =
        r#"{"severity":"warning","threshold":{"metric":"no2_ugm3","above":150.0,"for":"10m"}}"#;
    let (st, body) = send(&s, "PUT", "/api/v1/alert-rules/no2-watch", rule).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert!(ids.recv().await.unwrap().contains(&"no2-watch".to_owned()));
    let (st, one) = get(&s, "/api/v1/alert-rules/no2-watch").await;
    assert_eq!((st, one["rule"]["severity"].as_str()), (StatusCode::OK, Some("warning")));
    let critical = r#"{"id":"no2-watch","severity":"critical","threshold":{"metric":"no2_ugm3","above":150.0,"for":"10m"}}"#;
    assert_eq!(send(&s, "PUT", "/api/v1/alert-rules/no2-watch", critical).await.0, StatusCode::OK);
    ids.recv().await.unwrap();
    assert_eq!(
        get(&s, "/api/v1/alert-rules/no2-watch").await.1["rule"]["severity"],
        "critical",
        "replaced, not added twice"
    );
    assert_eq!(
        get(&s, "/api/v1/alert-rules").await.1["rules"]["rules"].as_array().unwrap().len(),
        1
    );
    let (st, body) = send(&s, "PUT", "/api/v1/alert-rules/other", critical).await;
    assert_eq!(
        (st, body["error"]["param"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("id")),
        "ids of body and path differ"
    );
    let (st, body) = send(
        &s,
        "PUT",
        "/api/v1/alert-rules/x",
        r#"{"severity":"info","threshold":{"metric":"warp","above":1}}"#,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(send(&s, "DELETE", "/api/v1/alert-rules/no2-watch", "").await.0, StatusCode::OK);
    assert!(!ids.recv().await.unwrap().contains(&"no2-watch".to_owned()));
    assert_eq!(get(&s, "/api/v1/alert-rules/no2-watch").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        send(&s, "DELETE", "/api/v1/alert-rules/no2-watch", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&s, "/api/v1/alert-rules/bad%20id").await.1["error"]["param"], "id");
}

#[tokio::test]
async fn rules_need_a_running_engine() {
    let s = state().await;
    assert_eq!(get(&s, "/api/v1/alert-rules").await.0, StatusCode::SERVICE_UNAVAILABLE);
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
    }
}

#[tokio::test]
async fn segments_are_geojson_with_their_live_state() {
    let s = state().await;
    let seg = telemetry::RoadSegment {
        id: telemetry::SegmentId::parse("viale-strozzi").unwrap(),
        name: "Viale Filippo Strozzi".into(),
        kind: "ring".into(),
        coordinates: vec![[11.246, 43.781], [11.252, 43.780]],
        length_m: 520.0,
        lanes: 3,
        speed_limit_kmh: 50.0,
        free_flow_kmh: 45.0,
        capacity_vph: 2700.0,
    };
    let mut quiet = seg.clone();
    quiet.id = telemetry::SegmentId::parse("lungarno-corsini").unwrap();
    s.store.upsert_segments(&[seg, quiet]).await.unwrap();
    s.hub.publish_segments(vec![segment_state(
        "viale-strozzi",
        T0,
        15.0,
        stream::LevelOfService::E,
    )]);
    let (st, body) = get(&s, "/api/v1/segments").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["type"], "FeatureCollection");
    let features = body["features"].as_array().unwrap();
    let strozzi = features.iter().find(|f| f["id"] == "viale-strozzi").unwrap();
    assert_eq!(strozzi["geometry"]["type"], "LineString");
    assert_eq!(strozzi["geometry"]["coordinates"][0][0], 11.246);
    let p = &strozzi["properties"];
    assert_eq!(
        (
            p["los"].as_str(),
            p["speed_kmh"].as_f64(),
            p["flow_vph"].as_f64(),
            p["occupancy_pct"].as_f64()
        ),
        (Some("E"), Some(15.0), Some(720.0), Some(31.0))
    );
    assert_eq!(p["window"]["start"], T0);
    assert_eq!(p["free_flow_kmh"], 45.0);
    let corsini = features.iter().find(|f| f["id"] == "lungarno-corsini").unwrap();
    assert!(corsini["properties"]["los"].is_null() && corsini["properties"]["window"].is_null());
}

#[tokio::test]
async fn segment_and_alert_frames_follow_the_subscription() {
    let s = state().await;
    let hub = s.hub.clone();
    hub.publish_segments(vec![
        segment_state("viale-strozzi", T0, 40.0, stream::LevelOfService::A),
        segment_state("lungarno-corsini", T0, 40.0, stream::LevelOfService::A),
    ]);
    let id = raise(&s, "viale-strozzi", T0).await;
    let open = s.store.alert(id).await.unwrap().unwrap();
    hub.publish_alert(open.clone());
    let (tx, mut rx) = session(hub.clone());
    tx.send(Ok(
        r#"{"type":"subscribe","values":false,"segments":["viale-strozzi"],"alerts":true}"#.into(),
    ))
    .await
    .unwrap();
    let snap = next_json(&mut rx).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["segments"].as_array().unwrap().len(), 1);
    assert_eq!(snap["segments"][0]["segment"], "viale-strozzi");
    assert_eq!(snap["alerts"][0]["id"], id);
    assert!(snap["values"].as_array().unwrap().is_empty());

    hub.apply(&[reading("a", T0, 1.0)]); // values are off
    hub.publish_segments(vec![segment_state(
        "lungarno-corsini",
        T0 + 60_000,
        9.0,
        stream::LevelOfService::F,
    )]); // not subscribed
    hub.publish_segments(vec![segment_state(
        "viale-strozzi",
        T0 + 60_000,
        12.0,
        stream::LevelOfService::E,
    )]);
    let f = next_json(&mut rx).await;
    assert_eq!(f["type"], "segment", "{f}");
    assert_eq!(f["segment"]["segment"], "viale-strozzi");
    assert_eq!(f["segment"]["los"], "E");
    let acked = s.store.acknowledge_alert(id, "ada", None, EventTime(T0 + 1)).await.unwrap();
    hub.publish_alert(acked.clone());
    let f = next_json(&mut rx).await;
    assert_eq!(f["type"], "alert");
    assert_eq!(f["alert"]["state"], "acknowledged");
    assert_eq!(f["alert"]["acknowledged"]["by"], "ada");

    tx.send(Ok(r#"{"type":"unsubscribe"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "unsubscribed");
    hub.publish_segments(vec![segment_state(
        "viale-strozzi",
        T0 + 120_000,
        40.0,
        stream::LevelOfService::A,
    )]);
    tx.send(Ok(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "pong", "nothing after unsubscribe");

    // The original protocol (no segments, no alerts) gets neither.
    let (tx, mut rx) = session(hub.clone());
    tx.send(Ok(r#"{"type":"subscribe"}"#.into())).await.unwrap();
    let snap = next_json(&mut rx).await;
    assert!(snap.get("segments").is_none() && snap.get("alerts").is_none(), "{snap}");
    hub.publish_segments(vec![segment_state(
        "viale-strozzi",
        T0 + 180_000,
        40.0,
        stream::LevelOfService::A,
    )]);
    tx.send(Ok(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "pong");
}
