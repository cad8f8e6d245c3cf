use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use store::{Batch, Store, StoreOptions};
use stream::LiveHub;
use telemetry::{DeviceId, EventTime, MetricId, Reading};
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::{app, live, AppState};

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
        .write_batch(&Batch { readings, new_devices: vec![DeviceId::parse("loop-1").unwrap()], ..Batch::default() })
        .await
        .unwrap();
    AppState { store, hub: LiveHub::new(64), metrics: Some(std::sync::Arc::new(|| "sccr_test_total 7\n".to_string())) }
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, Value) {
    let resp = app(state.clone()).oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
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
    let resp = app(s.clone()).oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    assert!(text.contains("sccr_test_total 7\n") && text.contains("sccr_live_values 0\n"), "{text}");
}

#[tokio::test]
async fn history_raw_and_minute() {
    let s = state().await;
    let (st, body) = get(&s, &format!("/api/v1/history?device=loop-1&metric=speed_kmh&from={}&to={}", T0, T0 + 3_000)).await;
    assert_eq!(body["resolution"], "raw", "a short span is answered with raw readings: {body}");
    assert_eq!(st, StatusCode::OK, "{body}");
    let vs: Vec<f64> = body["points"].as_array().unwrap().iter().map(|p| p["v"].as_f64().unwrap()).collect();
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
        ("/api/v1/history?device=loop-1", "metric"),
        ("/api/v1/history?device=loop-1&segment=viale-x&metric=speed_kmh", "segment"),
        ("/api/v1/history?segment=Bad!&metric=speed_kmh", "segment"),
        ("/api/v1/history?device=loop-1&metric=speed_kmh&step=5s", "step"),
        ("/api/v1/history?device=loop-1&metric=speed_kmh&step=soon", "step"),
        ("/api/v1/history?device=loop-1&metric=speed_kmh&step=1m&resolution=1h", "resolution"),
        ("/api/v1/history?device=loop-1&metric=speed_kmh&fill=zero", "fill"),
        ("/api/v1/history?device=loop-1&metric=speed_kmh&agg=median", "agg"),
        ("/api/v1/history?device=loop-1&metric=speed_kmh&max_points=0", "max_points"),
        ("/api/v1/history?device=Bad!&metric=speed_kmh", "device"),
        ("/api/v1/history?device=loop-1&metric=warp", "metric"),
        ("/api/v1/history?device=loop-1&metric=speed_kmh&from=yesterday", "from"),
        ("/api/v1/history?device=loop-1&metric=speed_kmh&from=2000&to=1000", "from"),
        ("/api/v1/history?device=loop-1&metric=speed_kmh&resolution=5s", "resolution"),
        ("/api/v1/history?device=loop-1&metric=speed_kmh&limit=0", "limit"),
        ("/api/v1/history?device=loop-1&metric=speed_kmh&limit=abc", "limit"),
        ("/api/v1/history?device=loop-1&device=loop-2&metric=speed_kmh", "device"),
        ("/api/v1/latest?colour=red", "colour"),
        ("/api/v1/devices?x=1", "x"),
    ];
    for (uri, param) in cases {
        let (st, body) = get(&s, uri).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(body["error"]["code"], "bad_parameter", "{uri}");
        assert_eq!(body["error"]["param"], param, "{uri}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let (st, body) = get(&s, "/api/v1/nothing").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}

fn reading(dev: &str, t: i64, v: f64) -> Reading {
    Reading { device: DeviceId::parse(dev).unwrap(), metric: MetricId::SpeedKmh, time: EventTime(t), value: v, seq: None }
}

async fn next_json(rx: &mut mpsc::Receiver<String>) -> Value {
    let text = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await.expect("a frame in time").expect("open");
    serde_json::from_str(&text).unwrap()
}

/// Drive a session over channels: (client → server sender, server → client receiver).
fn session(hub: std::sync::Arc<LiveHub>) -> (mpsc::Sender<Result<String, ()>>, mpsc::Receiver<String>) {
    let (in_tx, in_rx) = mpsc::channel::<Result<String, ()>>(16);
    let (out_tx, out_rx) = mpsc::channel::<String>(1024);
    let sink = futures_util::sink::unfold(out_tx, |tx, frame: String| async move {
        tx.send(frame).await.map_err(|_| ())?;
        Ok::<_, ()>(tx)
    });
    let stream = tokio_stream_from(in_rx);
    tokio::spawn(live::run_session(hub, Box::pin(sink), stream));
    (in_tx, out_rx)
}

fn tokio_stream_from(rx: mpsc::Receiver<Result<String, ()>>) -> std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<String, ()>> + Send>> {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) }))
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
    tx.send(Ok(r#"{"type":"subscribe"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "snapshot");
    // On this single-threaded runtime the session cannot run during this synchronous burst,
    // so the hub's 16-event buffer overflows before it reads.
    for i in 0..200 {
        hub.apply(&[reading("a", T0 + i, i as f64)]);
    }
    let mut saw_resync = false;
    for _ in 0..10 {
        let f = next_json(&mut rx).await;
        if f["type"] == "snapshot" && f["reason"] == "resync" {
            assert_eq!(f["values"][0]["value"], 199.0);
            saw_resync = true;
            break;
        }
    }
    assert!(saw_resync);
}
