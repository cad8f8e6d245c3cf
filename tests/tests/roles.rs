//! The server split into roles (`sccr serve --role ingest|api`), through a real Mosquitto
//! and PostgreSQL: one ingest process and two API processes that share live state only
//! over the broker's live bus. A wall screen on each API replica sees the segment state
//! and the alert the ingest replica's engine raised; an acknowledgement on one replica
//! reaches the other's screen and the engine; a rules change on one replica is applied by
//! the ingest replica's engine and seen by the other API replica; a replica started late
//! gets the live state from a snapshot; a device command goes down from an API replica
//! and its answer, read by ingest, is visible from the API; the ingest role answers only
//! its probes and metrics.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sccr_tests::{
    compact, http_get, http_send, loop_on, metric, publish_all, telemetry_topic, test_segment,
    wait_for, wait_pipeline_ready, Broker, MqttProbe, Sccr, TempDir, TestDb,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use store::{DeviceRecord, Store, StoreOptions};
use telemetry::EventTime;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const SEGMENT: &str = "via-test-roles";
const DEVICES: [&str; 2] = ["loop-role-a", "loop-role-b"];

/// Free-flow 50 km/h: 10 km/h is LOS F, 45 km/h is A.
const CONFIG: &str = r#"
[stream]
window = "2s"
watermark_delay = "200ms"
allowed_lateness = "2s"
state_save_interval = "1s"

[alerts]
air_quality_defaults = false

[[alerts.rules]]
id = "congestion"
severity = "critical"
scope = { segments = ["via-test-roles"] }
los = { at_or_worse = "E", for = "0s" }
"#;

async fn publish_speed(port: u16, seq: u64, speed: f64) {
    let t = EventTime::now().millis();
    let messages = DEVICES
        .iter()
        .map(|d| {
            (
                telemetry_topic(d),
                compact(
                    seq,
                    t,
                    &[("speed_kmh", speed), ("vehicle_count", 4.0), ("occupancy_pct", 20.0)],
                ),
            )
        })
        .collect();
    publish_all(port, &format!("roles-pub-{seq}"), messages).await.expect("publish");
}

async fn get_json(port: u16, path: &str) -> Option<Value> {
    let (status, body) = http_get(port, path).await.ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

/// A wall screen on `port` watching the test segment and the alerts: its frames.
async fn screen(port: u16) -> (mpsc::Receiver<Value>, tokio::task::JoinHandle<()>) {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(sccr_tests::live_url(port)).await.expect("websocket");
    let subscribe =
        format!(r#"{{"type":"subscribe","values":false,"segments":["{SEGMENT}"],"alerts":true}}"#);
    ws.send(Message::Text(subscribe.into())).await.unwrap();
    let (tx, rx) = mpsc::channel::<Value>(4_096);
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Ok(v) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) {
                if tx.send(v).await.is_err() {
                    break;
                }
            }
        }
    });
    (rx, reader)
}

/// Wait for a frame `pred` accepts, failing with `what` after `timeout`.
async fn frame(
    frames: &mut mpsc::Receiver<Value>,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let f = tokio::time::timeout_at(deadline, frames.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {timeout:?}"))
            .expect("socket open");
        if pred(&f) {
            return f;
        }
    }
}

/// Publish `speed` every 300 ms until a frame `pred` accepts arrives on `frames`.
async fn drive_until_frame(
    mqtt: u16,
    seq: &mut u64,
    speed: f64,
    frames: &mut mpsc::Receiver<Value>,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        *seq += 1;
        publish_speed(mqtt, *seq, speed).await;
        let wait = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some(f)) = tokio::time::timeout_at(wait, frames.recv()).await {
            if pred(&f) {
                return f;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
    }
}

fn is_alert(f: &Value, state: &str) -> bool {
    f["type"] == "alert" && f["alert"]["rule"] == "congestion" && f["alert"]["state"] == state
}

/// A broker and a database holding the test segment with its two loop detectors.
async fn env() -> (Broker, TestDb, PgPool) {
    let broker = Broker::start().await.expect("mosquitto");
    let db = TestDb::create().await.expect("database");
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("store");
    store.migrate().await.expect("migrate");
    store.upsert_segments(&[test_segment(SEGMENT)]).await.expect("segment");
    let devices: Vec<DeviceRecord> = DEVICES.iter().map(|d| loop_on(d, SEGMENT)).collect();
    store.upsert_devices(&devices).await.expect("devices");
    store.close().await;
    let pool = PgPool::connect(&db.url).await.expect("pool");
    (broker, db, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_api_replicas_share_live_state_alerts_rules_and_commands_over_the_broker() {
    let (broker, db, pool) = env().await;
    let dir = TempDir::new("roles").expect("tempdir");
    let mqtt = broker.port;

    let ingest =
        Sccr::serve_role("ingest", mqtt, &db.url, &dir.path, Some(CONFIG), &[]).expect("ingest");
    let api_a =
        Sccr::serve_role("api", mqtt, &db.url, &dir.path, Some(CONFIG), &[]).expect("api a");
    ingest.wait_healthy().await;
    api_a.wait_healthy().await;
    wait_pipeline_ready(mqtt, &pool).await;

    // The ingest role answers its probes and metrics, nothing of the API.
    let (status, body) = http_get(ingest.api_port, "/api/v1/alerts").await.unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(serde_json::from_str::<Value>(&body).is_ok(), "a JSON error: {body}");
    let (status, _) = http_get(ingest.api_port, "/").await.unwrap();
    assert_eq!(status, 404, "no dashboard on the ingest role");
    wait_for("ingest's live bus up", Duration::from_secs(20), || async {
        metric(ingest.api_port, "sccr_bus_connected").await.filter(|v| *v == 1.0)
    })
    .await;
    wait_for("api a ready (database and live bus)", Duration::from_secs(20), || async {
        http_get(api_a.api_port, "/readyz").await.ok().filter(|(s, _)| *s == 200)
    })
    .await;

    // Congestion on the segment: the screen on API replica A sees LOS F and the alert.
    let (mut frames_a, reader_a) = screen(api_a.api_port).await;
    let mut seq = 0;
    drive_until_frame(mqtt, &mut seq, 10.0, &mut frames_a, "LOS F on replica a", |f| {
        f["type"] == "segment" && f["segment"]["los"] == "F"
    })
    .await;
    let raised =
        frame(&mut frames_a, "the raised alert on replica a", Duration::from_secs(20), |f| {
            is_alert(f, "raised")
        })
        .await;
    let id = raised["alert"]["id"].as_i64().unwrap();
    assert_eq!(raised["alert"]["severity"], "critical");

    // Replica B starts now: it saw none of that, and gets it from a snapshot of the
    // ingest replica (segment state) and the store (the open alert).
    let api_b =
        Sccr::serve_role("api", mqtt, &db.url, &dir.path, Some(CONFIG), &[]).expect("api b");
    api_b.wait_healthy().await;
    wait_for("the segment's live LOS on replica b", Duration::from_secs(20), || async {
        let fc = get_json(api_b.api_port, "/api/v1/segments").await?;
        let seg = fc["features"].as_array()?.iter().find(|f| f["id"] == SEGMENT)?.clone();
        (seg["properties"]["los"] == "F").then_some(())
    })
    .await;
    let (mut frames_b, reader_b) = screen(api_b.api_port).await;
    let snapshot =
        frame(&mut frames_b, "the snapshot on replica b", Duration::from_secs(10), |f| {
            f["type"] == "snapshot"
        })
        .await;
    assert!(
        snapshot["alerts"].as_array().is_some_and(|a| a.iter().any(|a| a["id"] == id)),
        "{snapshot}"
    );

    // An operator acknowledges on replica B: the store takes it, replica A's screen sees
    // it (B → control → ingest → live bus → A), and the ingest replica's engine mirrors it.
    let (status, body) = http_send(
        api_b.api_port,
        "POST",
        &format!("/api/v1/alerts/{id}/ack"),
        r#"{"note":"unit on site"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let acked =
        frame(&mut frames_a, "the acknowledgement on replica a", Duration::from_secs(10), |f| {
            is_alert(f, "acknowledged")
        })
        .await;
    assert_eq!(acked["alert"]["id"], id);
    assert_eq!(acked["alert"]["acknowledged"]["note"], "unit on site");
    wait_for("the ingest engine mirrors the acknowledgement", Duration::from_secs(10), || async {
        metric(ingest.api_port, "sccr_alerts_operator_actions_total").await.filter(|v| *v == 1.0)
    })
    .await;

    // Recovery clears it by itself (the ingest engine), on both screens.
    drive_until_frame(
        mqtt,
        &mut seq,
        45.0,
        &mut frames_a,
        "the automatic clear on replica a",
        |f| is_alert(f, "cleared") && f["alert"]["id"] == id,
    )
    .await;
    frame(&mut frames_b, "the automatic clear on replica b", Duration::from_secs(10), |f| {
        is_alert(f, "cleared") && f["alert"]["id"] == id
    })
    .await;

    // Replica A turns the rule's severity to warning. Replica B serves the new document,
    // and the next congestion raises a warning: the ingest replica's engine applied it.
    let (_, rules) = http_get(api_a.api_port, "/api/v1/alert-rules").await.unwrap();
    let mut doc: Value = serde_json::from_str::<Value>(&rules).unwrap()["rules"].clone();
    doc["rules"][0]["severity"] = json!("warning");
    let (status, body) =
        http_send(api_a.api_port, "PUT", "/api/v1/alert-rules", &doc.to_string()).await.unwrap();
    assert_eq!(status, 200, "{body}");
    wait_for("replica b serving the new rules", Duration::from_secs(10), || async {
        let v = get_json(api_b.api_port, "/api/v1/alert-rules").await?;
        (v["rules"]["rules"][0]["severity"] == "warning").then_some(())
    })
    .await;
    let warning = drive_until_frame(
        mqtt,
        &mut seq,
        10.0,
        &mut frames_b,
        "a warning alert on replica b",
        |f| is_alert(f, "raised") && f["alert"]["id"] != id,
    )
    .await;
    assert_eq!(warning["alert"]["severity"], "warning", "{warning}");
    reader_a.abort();
    reader_b.abort();

    // A command from replica A reaches the device; its answer, read by ingest, shows on A.
    let device = DEVICES[0];
    let mut probe =
        MqttProbe::connect(mqtt, "roles-device", &[&format!("sccr/v1/devices/{device}/commands")])
            .await
            .expect("device probe");
    let (status, body) = http_send(
        api_a.api_port,
        "POST",
        &format!("/api/v1/devices/{device}/commands"),
        r#"{"name":"reboot","args":{}}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let sent: Value = serde_json::from_str(&body).unwrap();
    let command_id = sent["id"].as_str().unwrap().to_owned();
    let got = probe
        .expect(&format!("sccr/v1/devices/{device}/commands"), Duration::from_secs(10), |v| {
            v["id"] == command_id.as_str()
        })
        .await;
    assert_eq!(got["name"], "reboot");
    probe
        .publish(
            &format!("sccr/v1/devices/{device}/commands/ack"),
            &json!({"id": command_id, "result": "ok"}).to_string(),
        )
        .await
        .unwrap();
    wait_for("the command acknowledged, seen from replica a", Duration::from_secs(10), || async {
        let v = get_json(api_a.api_port, &format!("/api/v1/commands/{command_id}")).await?;
        (v["status"] == "acked").then_some(())
    })
    .await;

    // A NUL anywhere in the arguments is refused, naming the field.
    let (status, body) = http_send(
        api_a.api_port,
        "POST",
        &format!("/api/v1/devices/{device}/commands"),
        r#"{"name":"set","args":{"x":["ok","a\u0000b"]}}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(r#""param":"args""#), "{body}");

    // No commands to a decommissioned device.
    let gone = DEVICES[1];
    assert_eq!(
        http_send(api_a.api_port, "DELETE", &format!("/api/v1/devices/{gone}"), "")
            .await
            .unwrap()
            .0,
        200
    );
    let (status, body) = http_send(
        api_a.api_port,
        "POST",
        &format!("/api/v1/devices/{gone}/commands"),
        r#"{"name":"reboot"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 409, "{body}");

    // Bus counters: values went out of ingest and into both API replicas; nothing
    // failed to decode.
    assert!(metric(ingest.api_port, "sccr_bus_values_out_total").await.unwrap() > 0.0);
    for api in [&api_a, &api_b] {
        assert!(metric(api.api_port, "sccr_bus_values_in_total").await.unwrap() > 0.0);
        assert_eq!(metric(api.api_port, "sccr_bus_decode_errors_total").await, Some(0.0));
    }
    drop((ingest, api_a, api_b));
}

/// Wall screens on an API replica keep their connection while the ingest replica is
/// SIGKILLed and restarted, and see the live state move again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screens_on_an_api_replica_outlive_an_ingest_restart() {
    let (broker, db, pool) = env().await;
    let dir = TempDir::new("roles-restart").expect("tempdir");
    let mqtt = broker.port;
    let mut ingest =
        Sccr::serve_role("ingest", mqtt, &db.url, &dir.path, Some(CONFIG), &[]).expect("ingest");
    let api = Sccr::serve_role("api", mqtt, &db.url, &dir.path, Some(CONFIG), &[]).expect("api");
    ingest.wait_healthy().await;
    api.wait_healthy().await;
    wait_pipeline_ready(mqtt, &pool).await;

    let (mut frames, reader) = screen(api.api_port).await;
    let mut seq = 0;
    drive_until_frame(mqtt, &mut seq, 45.0, &mut frames, "LOS A", |f| {
        f["type"] == "segment" && f["segment"]["los"] == "A"
    })
    .await;

    ingest.kill();
    let (status, body) = http_get(api.api_port, "/readyz").await.unwrap();
    assert_eq!(
        status, 200,
        "the API replica stays ready without ingest (the broker is up): {body}"
    );
    let applied_before = metric(api.api_port, "sccr_bus_messages_in_total").await.unwrap();

    ingest.restart().expect("ingest again");
    ingest.wait_healthy().await;
    drive_until_frame(mqtt, &mut seq, 10.0, &mut frames, "LOS F after the restart", |f| {
        f["type"] == "segment" && f["segment"]["los"] == "F"
    })
    .await;
    assert!(!reader.is_finished(), "the screen's socket stayed open");
    assert!(metric(api.api_port, "sccr_bus_messages_in_total").await.unwrap() > applied_before);
    // Nothing published was lost across the kill: every reading the broker took is stored.
    wait_for("every published reading stored", Duration::from_secs(20), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT time) FROM readings WHERE device = $1 AND metric = 'speed_kmh'",
        )
        .bind(DEVICES[0])
        .fetch_one(&pool)
        .await
        .ok()?;
        (n == seq as i64).then_some(())
    })
    .await;
    reader.abort();
}
