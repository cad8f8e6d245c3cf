//! Road-segment state and alerts end to end, through a real Mosquitto, a real PostgreSQL
//! and the real `sccr serve` process: two loop detectors on one segment report falling
//! speeds, the segment's Level of Service turns E then F (seen over REST and the
//! websocket), a LOS rule raises one alert, an operator acknowledges it over REST, speeds
//! recover and the alert clears by itself; every move is an `alert_events` row. And an
//! open alert with its condition survives a restart of `sccr`; a threshold on a segment's
//! mean speed raises one alert for the segment.
//!
//! Over 600 lines: the scenarios share this file's environment (a segment with two linked
//! detectors) and its drivers, which would otherwise be copied.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sccr_tests::{
    compact, http_get, http_send, loop_on, publish_all, telemetry_topic, test_segment,
    wait_pipeline_ready, Broker, Sccr, TempDir, TestDb,
};
use serde_json::Value;
use sqlx::PgPool;
use store::{DeviceRecord, Store, StoreOptions};
use telemetry::EventTime;

const SEGMENT: &str = "via-test-alerts";
const DEVICES: [&str; 2] = ["loop-alert-a", "loop-alert-b"];

/// Free-flow 50 km/h: 17.5 km/h is 35 % (LOS E), 10 km/h is 20 % (F), 45 km/h is 90 % (A).
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
scope = { segments = ["via-test-alerts"] }
los = { at_or_worse = "E", for = "0s" }
"#;

struct Env {
    broker: Broker,
    db: TestDb,
    pool: PgPool,
    dir: TempDir,
}

/// A broker, a database holding one segment with two linked loop detectors.
async fn env(tag: &str) -> Env {
    let broker = Broker::start().await.expect("mosquitto");
    let db = TestDb::create().await.expect("database");
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("store");
    store.migrate().await.expect("migrate");
    store.upsert_segments(&[test_segment(SEGMENT)]).await.expect("segment");
    let devices: Vec<DeviceRecord> = DEVICES.iter().map(|d| loop_on(d, SEGMENT)).collect();
    store.upsert_devices(&devices).await.expect("devices");
    store.close().await;
    let pool = PgPool::connect(&db.url).await.expect("pool");
    Env { broker, db, pool, dir: TempDir::new(tag).expect("tempdir") }
}

fn now_ms() -> i64 {
    EventTime::now().millis()
}

/// One message per detector at the current time with `speed`.
async fn publish_speed(port: u16, seq: u64, speed: f64) {
    let t = now_ms();
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
    publish_all(port, &format!("pub-{seq}"), messages).await.expect("publish");
}

async fn get_json(port: u16, path: &str) -> Option<Value> {
    let (status, body) = http_get(port, path).await.ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

/// The live properties of the test segment from `GET /api/v1/segments`.
async fn segment_properties(port: u16) -> Option<Value> {
    properties_of(port, SEGMENT).await
}

async fn properties_of(port: u16, segment: &str) -> Option<Value> {
    let fc = get_json(port, "/api/v1/segments").await?;
    fc["features"].as_array()?.iter().find(|f| f["id"] == segment).map(|f| f["properties"].clone())
}

/// Publish `speed` to the broker on `mqtt` every 300 ms until `done` holds, or fail after
/// `timeout` naming `what`.
async fn drive_until<F, Fut, T>(
    mqtt: u16,
    seq: &mut u64,
    speed: f64,
    what: &str,
    timeout: Duration,
    mut done: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        *seq += 1;
        publish_speed(mqtt, *seq, speed).await;
        if let Some(v) = done().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn open_alerts(port: u16) -> Vec<Value> {
    get_json(port, &format!("/api/v1/alerts?state=open&segment={SEGMENT}"))
        .await
        .and_then(|v| v["alerts"].as_array().cloned())
        .unwrap_or_default()
}

async fn events(
    pool: &PgPool,
    alert: i64,
) -> Vec<(Option<String>, String, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT from_state, to_state, by, note FROM alert_events WHERE alert_id = $1 ORDER BY id",
    )
    .bind(alert)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_congested_segment_raises_an_alert_an_operator_acknowledges_and_recovery_clears() {
    let e = env("alerts").await;
    let sccr =
        Sccr::serve_with_config(e.broker.port, &e.db.url, &e.dir.path, CONFIG, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(e.broker.port, &e.pool).await;
    let port = sccr.api_port;

    // A wall screen watching the segment and the alerts.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(sccr_tests::live_url(port)).await.expect("websocket");
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        format!(r#"{{"type":"subscribe","values":false,"segments":["{SEGMENT}"],"alerts":true}}"#)
            .into(),
    ))
    .await
    .unwrap();
    let (frames_tx, mut frames) = tokio::sync::mpsc::channel::<Value>(1_024);
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Ok(v) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) {
                if frames_tx.send(v).await.is_err() {
                    break;
                }
            }
        }
    });

    let mut seq = 0;
    drive_until(e.broker.port, &mut seq, 45.0, "LOS A", Duration::from_secs(30), || async {
        segment_properties(port).await.filter(|p| p["los"] == "A")
    })
    .await;
    assert!(open_alerts(port).await.is_empty(), "free flow raises nothing");
    // A window holding only the new speed (the first one after a change may mix both).
    let e_state =
        drive_until(e.broker.port, &mut seq, 17.5, "LOS E", Duration::from_secs(30), || async {
            segment_properties(port).await.filter(|p| p["los"] == "E" && p["speed_kmh"] == 17.5)
        })
        .await;
    assert_eq!(e_state["speed_kmh"], 17.5);
    assert_eq!(e_state["detectors"], 2);
    let f_state =
        drive_until(e.broker.port, &mut seq, 10.0, "LOS F", Duration::from_secs(30), || async {
            segment_properties(port).await.filter(|p| p["los"] == "F" && p["speed_kmh"] == 10.0)
        })
        .await;
    assert_eq!(f_state["speed_kmh"], 10.0);
    assert!(f_state["flow_vph"].as_f64().unwrap() > 0.0);

    // One alert for the whole episode (E, then F), raised automatically.
    let alerts = sccr_tests::wait_for("the congestion alert", Duration::from_secs(20), || async {
        let open = open_alerts(port).await;
        (!open.is_empty()).then_some(open)
    })
    .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    let id = alert["id"].as_i64().unwrap();
    assert_eq!(
        (alert["rule"].as_str(), alert["severity"].as_str(), alert["state"].as_str()),
        (Some("congestion"), Some("critical"), Some("raised"))
    );
    assert_eq!(alert["subject"]["segment"], SEGMENT);

    // An operator (with a token the admin issued) acknowledges it with a note.
    let (status, body) =
        http_send(port, "POST", "/api/v1/tokens", r#"{"name":"operator-ada","role":"operator"}"#)
            .await
            .unwrap();
    assert_eq!(status, 201, "{body}");
    let ada: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ada = ada["token"].as_str().unwrap();
    let ack = format!("/api/v1/alerts/{id}/ack");
    let (status, _) = sccr_tests::http_request(port, "POST", &ack, None, "{}").await.unwrap();
    assert_eq!(status, 401, "no token, no acknowledgement");
    let (status, body) = sccr_tests::http_request(
        port,
        "POST",
        &ack,
        Some(ada),
        r#"{"note":"police unit dispatched"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, _) = sccr_tests::http_request(port, "POST", &ack, Some(ada), "{}").await.unwrap();
    assert_eq!(status, 409, "a second acknowledgement is refused");
    assert_eq!(
        events(&e.pool, id).await,
        vec![
            (None, "raised".into(), None, None),
            (
                Some("raised".into()),
                "acknowledged".into(),
                Some("operator-ada".into()),
                Some("police unit dispatched".into())
            ),
        ]
    );

    // Speeds recover; the alert clears by itself.
    drive_until(
        e.broker.port,
        &mut seq,
        45.0,
        "the automatic clear",
        Duration::from_secs(30),
        || async {
            get_json(port, &format!("/api/v1/alerts/{id}"))
                .await
                .filter(|v| v["alert"]["state"] == "cleared")
        },
    )
    .await;
    let history = events(&e.pool, id).await;
    assert_eq!(history.len(), 3, "{history:?}");
    assert_eq!(
        (history[2].0.as_deref(), history[2].1.as_str(), history[2].2.as_deref()),
        (Some("acknowledged"), "cleared", None),
        "cleared by the stream: by is NULL"
    );
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM alerts").fetch_one(&e.pool).await.unwrap();
    assert_eq!(total, 1, "no duplicate alert");

    // The wall saw the segment go to F and the alert's three states, in order.
    let mut saw_f = false;
    let mut alert_states = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while alert_states.last().map(String::as_str) != Some("cleared") {
        let frame = tokio::time::timeout_at(deadline, frames.recv())
            .await
            .expect("the alert frames in time")
            .expect("socket open");
        match frame["type"].as_str() {
            Some("segment") => saw_f |= frame["segment"]["los"] == "F",
            Some("alert") if frame["alert"]["id"] == id => {
                alert_states.push(frame["alert"]["state"].as_str().unwrap().to_owned())
            }
            _ => {}
        }
    }
    assert!(saw_f, "a segment frame with LOS F");
    assert_eq!(alert_states, vec!["raised", "acknowledged", "cleared"]);
    reader.abort();

    let (_, metrics) = http_get(port, "/metrics").await.unwrap();
    assert!(metrics.contains("sccr_alerts_stored_raised_total 1\n"), "{metrics}");
    assert!(metrics.contains("sccr_alerts_operator_actions_total 1\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_alert_and_its_condition_survive_a_restart() {
    let e = env("alerts-restart").await;
    let mut sccr =
        Sccr::serve_with_config(e.broker.port, &e.db.url, &e.dir.path, CONFIG, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(e.broker.port, &e.pool).await;
    let port = sccr.api_port;

    let mut seq = 0;
    let alerts = drive_until(
        e.broker.port,
        &mut seq,
        10.0,
        "the congestion alert",
        Duration::from_secs(40),
        || async {
            let open = open_alerts(port).await;
            (!open.is_empty()).then_some(open)
        },
    )
    .await;
    let id = alerts[0]["id"].as_i64().unwrap();

    assert!(sccr.terminate(Duration::from_secs(30)).expect("sigterm"), "clean exit");
    sccr.restart().expect("restart");
    sccr.wait_healthy().await;
    assert!(sccr.log_text().contains("alert engine state restored"), "{}", sccr.log_text());

    // Still congested after the restart: the restored alert stays the only one.
    for _ in 0..8 {
        seq += 1;
        publish_speed(e.broker.port, seq, 10.0).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Only recovering speeds now. A fresh engine would not know the segment was congested
    // and would never end the alert; the restored one does (unacknowledged: returned).
    drive_until(
        e.broker.port,
        &mut seq,
        45.0,
        "the return to normal after the restart",
        Duration::from_secs(30),
        || async {
            get_json(port, &format!("/api/v1/alerts/{id}"))
                .await
                .filter(|v| v["alert"]["state"] == "returned")
        },
    )
    .await;
    let history = events(&e.pool, id).await;
    assert_eq!(
        history,
        vec![
            (None, "raised".into(), None, None),
            (Some("raised".into()), "returned".into(), None, Some("condition ended".into()))
        ]
    );
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM alerts").fetch_one(&e.pool).await.unwrap();
    assert_eq!(total, 1, "the alert was not raised twice");
    let (_, metrics) = http_get(port, "/metrics").await.unwrap();
    // The restored engine knew the alert was open: it neither opened one nor tried to (a
    // fresh engine would have raised again and found the alert open in the store).
    assert!(metrics.contains("sccr_alerts_stored_raised_total 0\n"), "{metrics}");
    assert!(metrics.contains("sccr_alerts_stored_already_open_total 0\n"), "{metrics}");
}

/// The LOS rule of [`CONFIG`] and a threshold on the segment's mean speed.
const SEGMENT_CONFIG: &str = r#"
[stream]
window = "2s"
watermark_delay = "200ms"
allowed_lateness = "2s"

[alerts]
air_quality_defaults = false

[[alerts.rules]]
id = "slow-segment"
severity = "warning"
scope = { segments = ["via-test-alerts"] }
threshold = { metric = "speed_kmh", on = "segment", below = 15.0, clear = 20.0, for = "0s" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_threshold_raises_one_alert_for_the_segment_and_returns_with_it() {
    let e = env("alerts-segment-threshold").await;
    let sccr = Sccr::serve_with_config(e.broker.port, &e.db.url, &e.dir.path, SEGMENT_CONFIG, &[])
        .expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(e.broker.port, &e.pool).await;
    let port = sccr.api_port;
    let (_, rules) = http_get(port, "/api/v1/alert-rules").await.unwrap();
    let rules: Value = serde_json::from_str(&rules).unwrap();
    assert_eq!(rules["rules_in_force"][0]["origin"], "file", "{rules}");
    assert_eq!(rules["rules_in_force"][0]["rule"]["threshold"]["on"], "segment");

    // Both detectors at 10 km/h: the segment's mean is under 15, one alert for the segment
    // (a threshold per device would raise two).
    let mut seq = 0;
    let open = drive_until(
        e.broker.port,
        &mut seq,
        10.0,
        "the segment alert",
        Duration::from_secs(40),
        || async {
            let open = open_alerts(port).await;
            (!open.is_empty()).then_some(open)
        },
    )
    .await;
    let alert = &open[0];
    assert_eq!(
        (alert["rule"].as_str(), alert["code"].as_str(), alert["subject"]["segment"].as_str()),
        (Some("slow-segment"), Some("threshold_below"), Some(SEGMENT))
    );
    assert_eq!(alert["params"]["metric"], "speed_kmh");
    let id = alert["id"].as_i64().unwrap();
    // A window at 17.5, between clear (20) and trip (15): it holds; above clear it returns
    // to normal.
    drive_until(
        e.broker.port,
        &mut seq,
        17.5,
        "a window at 17.5 km/h",
        Duration::from_secs(30),
        || async { segment_properties(port).await.filter(|p| p["speed_kmh"] == 17.5) },
    )
    .await;
    assert_eq!(
        get_json(port, &format!("/api/v1/alerts/{id}")).await.unwrap()["alert"]["state"],
        "raised"
    );
    drive_until(
        e.broker.port,
        &mut seq,
        45.0,
        "the return to normal",
        Duration::from_secs(30),
        || async {
            get_json(port, &format!("/api/v1/alerts/{id}"))
                .await
                .filter(|v| v["alert"]["state"] == "returned")
        },
    )
    .await;
    let by_device: i64 =
        sqlx::query_scalar("SELECT count(*) FROM alerts WHERE subject_kind = 'device'")
            .fetch_one(&e.pool)
            .await
            .unwrap();
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM alerts").fetch_one(&e.pool).await.unwrap();
    assert_eq!((total, by_device), (1, 0), "one alert, about the segment");
}

const OFFLINE_CONFIG: &str = r#"
[alerts]
air_quality_defaults = false

[[alerts.rules]]
id = "device-offline"
severity = "warning"
scope = { devices = ["loop-alert-a"] }
offline = { last_will = true, min_silence = "1h" }
"#;

/// A device connection with the field agent's Last Will; returns the client and the task
/// polling its event loop (aborting the task drops the connection without DISCONNECT).
async fn device_with_last_will(
    port: u16,
    device: &str,
) -> (rumqttc::v5::AsyncClient, tokio::task::JoinHandle<()>) {
    use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let status = format!("sccr/v1/devices/{device}/status");
    let mut opts = MqttOptions::new(format!("agent-{device}"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30)).set_last_will(LastWill::new(
        status.clone(),
        br#"{"state":"offline"}"#.to_vec(),
        QoS::AtLeastOnce,
        true,
        None,
    ));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    client
        .publish(status, QoS::AtLeastOnce, true, br#"{"state":"online","fw":"1.2.0"}"#.to_vec())
        .await
        .expect("queue online");
    let (acked_tx, acked_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut acked = Some(acked_tx);
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::PubAck(_)) = event {
                if let Some(tx) = acked.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), acked_rx)
        .await
        .expect("online status acknowledged")
        .expect("event loop alive");
    (client, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_will_raises_an_offline_alert_and_the_device_coming_back_clears_it() {
    let e = env("alerts-offline").await;
    let sccr = Sccr::serve_with_config(e.broker.port, &e.db.url, &e.dir.path, OFFLINE_CONFIG, &[])
        .expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(e.broker.port, &e.pool).await;
    let port = sccr.api_port;
    let device = DEVICES[0];

    let (_client, connection) = device_with_last_will(e.broker.port, device).await;
    sccr_tests::wait_for(
        "the online status to reach the stream",
        Duration::from_secs(20),
        || async {
            sccr_tests::metric(port, "sccr_stream_statuses_total").await.filter(|n| *n >= 1.0)
        },
    )
    .await;
    let open = |port| async move {
        get_json(port, &format!("/api/v1/alerts?state=open&device={device}"))
            .await
            .and_then(|v| v["alerts"].as_array().cloned())
            .unwrap_or_default()
    };
    assert!(open(port).await.is_empty(), "online: no alert");

    // The connection drops without DISCONNECT: the broker publishes the Last Will.
    connection.abort();
    let alerts = sccr_tests::wait_for("the offline alert", Duration::from_secs(30), || async {
        let a = open(port).await;
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0]["rule"].as_str(), alerts[0]["severity"].as_str()),
        (Some("device-offline"), Some("warning"))
    );
    assert_eq!(alerts[0]["subject"]["device"], device);
    let id = alerts[0]["id"].as_i64().unwrap();

    // The device reconnects and says it is online again: unacknowledged, the alert
    // returns to normal and stays open until an operator acknowledges it.
    let (_client, _connection) = device_with_last_will(e.broker.port, device).await;
    sccr_tests::wait_for("the return to normal", Duration::from_secs(30), || async {
        get_json(port, &format!("/api/v1/alerts/{id}"))
            .await
            .filter(|v| v["alert"]["state"] == "returned")
    })
    .await;
    let history = events(&e.pool, id).await;
    assert_eq!(
        history.iter().map(|h| (h.1.as_str(), h.2.clone())).collect::<Vec<_>>(),
        vec![("raised", None), ("returned", None)]
    );

    // A status payload that is not one becomes a dead letter; the pipeline goes on.
    sccr_tests::publish_all(
        e.broker.port,
        "bad-status",
        vec![(format!("sccr/v1/devices/{device}/status"), b"online!".to_vec())],
    )
    .await
    .expect("publish");
    let reason: String =
        sccr_tests::wait_for("the dead letter", Duration::from_secs(20), || async {
            sqlx::query_scalar(
                "SELECT reason FROM dead_letters WHERE topic LIKE '%/status' LIMIT 1",
            )
            .fetch_optional(&e.pool)
            .await
            .ok()
            .flatten()
        })
        .await;
    assert_eq!(reason, "bad_status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detector_linked_to_another_segment_at_runtime_counts_there() {
    let e = env("alerts-links").await;
    let sccr = Sccr::serve_with_config(
        e.broker.port,
        &e.db.url,
        &e.dir.path,
        CONFIG,
        &[("SCCR_STREAM__REGISTRY_REFRESH", "1s")],
    )
    .expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(e.broker.port, &e.pool).await;
    let port = sccr.api_port;
    let mut seq = 0;
    drive_until(
        e.broker.port,
        &mut seq,
        45.0,
        "both detectors on the first segment",
        Duration::from_secs(30),
        || async { segment_properties(port).await.filter(|p| p["detectors"] == 2) },
    )
    .await;

    // An operator moves the second detector to a new segment, in the store only.
    let store = Store::connect(&e.db.url, &StoreOptions::default()).await.expect("store");
    store.upsert_segments(&[test_segment("via-test-nuova")]).await.expect("segment");
    store.upsert_devices(&[loop_on(DEVICES[1], "via-test-nuova")]).await.expect("relink");
    store.close().await;

    drive_until(
        e.broker.port,
        &mut seq,
        45.0,
        "one detector on each segment",
        Duration::from_secs(30),
        || async {
            let new = properties_of(port, "via-test-nuova")
                .await
                .filter(|p| p["detectors"] == 1 && p["los"] == "A")?;
            let old = segment_properties(port).await.filter(|p| p["detectors"] == 1)?;
            Some((old, new))
        },
    )
    .await;
}
