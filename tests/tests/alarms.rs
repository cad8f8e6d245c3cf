//! ISA-18.2 alarm handling end to end, through a real Mosquitto, a real PostgreSQL and the
//! real `sccr serve` process: a critical alert whose condition ends 100 ms after it was
//! raised stays open as `returned` (REST and a fresh websocket snapshot) until an operator
//! acknowledges it; shelving with its checks, its audit rows and its expiry; designed
//! suppression (`suppressed_by`); the alarm-flood figures; and a returned, shelved alert
//! surviving a restart.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sccr_tests::{
    compact, http_get, http_send, loop_on, publish_all, telemetry_topic, test_segment, wait_for,
    wait_pipeline_ready, Broker, Sccr, TempDir, TestDb,
};
use serde_json::Value;
use sqlx::PgPool;
use store::{DeviceRecord, Store, StoreOptions};
use telemetry::EventTime;

const SEGMENT: &str = "via-test-alarms";
const DEVICE: &str = "loop-alarm-a";

/// A critical rule on low speed, its warning counterpart suppressed by it, two operator
/// positions and a one-hour longest shelf.
const CONFIG: &str = r#"
[stream]
state_save_interval = "1s"

[alerts]
air_quality_defaults = false
operator_positions = 2
max_shelve = "1h"

[[alerts.rules]]
id = "stopped"
severity = "critical"
scope = { devices = ["loop-alarm-a"] }
threshold = { metric = "speed_kmh", below = 15.0 }

[[alerts.rules]]
id = "slow"
severity = "warning"
scope = { devices = ["loop-alarm-a"] }
suppressed_by = ["stopped"]
threshold = { metric = "speed_kmh", below = 30.0 }
"#;

struct Env {
    broker: Broker,
    db: TestDb,
    pool: PgPool,
    dir: TempDir,
}

async fn env(tag: &str) -> Env {
    let broker = Broker::start().await.expect("mosquitto");
    let db = TestDb::create().await.expect("database");
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("store");
    store.migrate().await.expect("migrate");
    store.upsert_segments(&[test_segment(SEGMENT)]).await.expect("segment");
    let devices: Vec<DeviceRecord> = vec![loop_on(DEVICE, SEGMENT)];
    store.upsert_devices(&devices).await.expect("devices");
    store.close().await;
    let pool = PgPool::connect(&db.url).await.expect("pool");
    Env { broker, db, pool, dir: TempDir::new(tag).expect("tempdir") }
}

/// Publish `speeds` of the device, one message each, `step_ms` apart in event time.
async fn publish_speeds(port: u16, seq: &mut u64, speeds: &[f64], step_ms: i64) {
    let t0 = EventTime::now().millis();
    let messages = speeds
        .iter()
        .enumerate()
        .map(|(i, v)| {
            *seq += 1;
            (telemetry_topic(DEVICE), compact(*seq, t0 + i as i64 * step_ms, &[("speed_kmh", *v)]))
        })
        .collect();
    publish_all(port, &format!("pub-{seq}"), messages).await.expect("publish");
}

async fn get_json(port: u16, path: &str) -> Option<Value> {
    let (status, body) = http_get(port, path).await.ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

async fn alerts(port: u16, query: &str) -> Vec<Value> {
    get_json(port, &format!("/api/v1/alerts?{query}"))
        .await
        .and_then(|v| v["alerts"].as_array().cloned())
        .unwrap_or_default()
}

/// The alerts of `rule` in `state`, once there are some.
async fn wait_alerts(port: u16, what: &str, query: &str) -> Vec<Value> {
    wait_for(what, Duration::from_secs(30), || async {
        let found = alerts(port, query).await;
        (!found.is_empty()).then_some(found)
    })
    .await
}

async fn post(port: u16, path: &str, body: &str) -> (u16, Value) {
    let (status, body) = http_send(port, "POST", path, body).await.expect("request");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// (from, to, action, by, note) of an alert's events.
async fn events(
    pool: &PgPool,
    alert: i64,
) -> Vec<(Option<String>, String, Option<String>, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT from_state, to_state, action, by, note FROM alert_events WHERE alert_id = $1 ORDER BY id",
    )
    .bind(alert)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

async fn start(e: &Env) -> Sccr {
    let sccr =
        Sccr::serve_with_config(e.broker.port, &e.db.url, &e.dir.path, CONFIG, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(e.broker.port, &e.pool).await;
    sccr
}

/// The first frame of a fresh websocket subscribed to alerts: the snapshot.
async fn snapshot(port: u16) -> Value {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(sccr_tests::live_url(port)).await.expect("websocket");
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        r#"{"type":"subscribe","values":false,"alerts":true}"#.into(),
    ))
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a snapshot in time")
            .expect("socket open")
            .expect("frame");
        if let Ok(v) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) {
            if v.get("alerts").is_some() {
                return v;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_alert_ending_100ms_after_its_raise_stays_open_as_returned_until_acknowledged() {
    let e = env("alarms-returned").await;
    let sccr = start(&e).await;
    let port = sccr.api_port;
    let mut seq = 0;
    // Stopped, then moving again 100 ms later.
    publish_speeds(e.broker.port, &mut seq, &[5.0, 40.0], 100).await;
    let returned = wait_alerts(port, "the returned alert", "state=returned&rule=stopped").await;
    assert_eq!(returned.len(), 1, "{returned:?}");
    let a = &returned[0];
    let id = a["id"].as_i64().unwrap();
    assert_eq!((a["state"].as_str(), a["active"].as_bool()), (Some("returned"), Some(false)));
    assert!(a["returned_at"].as_i64().unwrap() >= a["raised_at"].as_i64().unwrap());
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["code"], "threshold_below");
    assert_eq!(
        (
            a["params"]["metric"].as_str(),
            a["params"]["limit"].as_f64(),
            a["params"]["value"].as_f64()
        ),
        (Some("speed_kmh"), Some(15.0), Some(5.0))
    );
    assert_eq!((a["shelved"].is_null(), a["suppressed"].is_null()), (true, true));
    // Open: in the open list, and in a fresh websocket's snapshot.
    assert!(alerts(port, "state=open").await.iter().any(|x| x["id"] == id));
    let frame = snapshot(port).await;
    let shown: Vec<&Value> =
        frame["alerts"].as_array().unwrap().iter().filter(|x| x["id"] == id).collect();
    assert_eq!(shown.len(), 1, "{frame}");
    assert_eq!(
        (shown[0]["state"].as_str(), shown[0]["code"].as_str()),
        (Some("returned"), Some("threshold_below"))
    );

    // Acknowledging a returned alert clears it.
    let (status, body) =
        post(port, &format!("/api/v1/alerts/{id}/ack"), r#"{"note":"seen"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["alert"]["state"], "cleared");
    let history = events(&e.pool, id).await;
    assert_eq!(
        history.iter().map(|h| (h.0.clone(), h.1.clone(), h.2.clone())).collect::<Vec<_>>(),
        vec![
            (None, "raised".into(), None),
            (s("raised"), "returned".into(), s("end")),
            (s("returned"), "cleared".into(), s("acknowledge")),
        ]
    );
    let frame = snapshot(port).await;
    assert!(frame["alerts"].as_array().unwrap().iter().all(|x| x["id"] != id), "{frame}");

    // The warning rule opened suppressed by the critical one (not signalled: no webhook),
    // and was no longer suppressed once the critical one's condition ended.
    let slow = alerts(port, "rule=slow").await;
    assert_eq!(slow.len(), 1, "{slow:?}");
    let slow_id = slow[0]["id"].as_i64().unwrap();
    let actions: Vec<Option<String>> =
        events(&e.pool, slow_id).await.into_iter().map(|h| h.2).collect();
    assert!(actions.contains(&s("unsuppress")), "{actions:?}");
    let outbox: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE subject = $1 AND type = 'it.firenze.sccr.alert.raised'",
    )
    .bind(format!("alert/{slow_id}"))
    .fetch_one(&e.pool)
    .await
    .unwrap();
    assert_eq!(outbox, 0, "a suppressed raise is not signalled");

    // Flood figures: one signalled raise in 10 minutes (the suppressed one is not), over
    // two positions.
    assert_eq!(sccr_tests::metric(port, "sccr_alerts_raised_last_10m").await, Some(1.0));
    assert_eq!(sccr_tests::metric(port, "sccr_alerts_per_position_last_10m").await, Some(0.5));
    assert_eq!(sccr_tests::metric(port, "sccr_alert_floods_total").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shelving_is_checked_audited_and_expires_by_itself() {
    let e = env("alarms-shelve").await;
    let sccr = start(&e).await;
    let port = sccr.api_port;
    let mut seq = 0;
    publish_speeds(e.broker.port, &mut seq, &[5.0], 0).await;
    let raised = wait_alerts(port, "the raised alert", "state=raised&rule=stopped").await;
    let id = raised[0]["id"].as_i64().unwrap();
    let shelve = format!("/api/v1/alerts/{id}/shelve");
    // Designed suppression: the warning counterpart is open, suppressed by this alert.
    let suppressed = wait_alerts(port, "the suppressed warning", "state=suppressed").await;
    assert_eq!(suppressed.len(), 1, "{suppressed:?}");
    assert_eq!(suppressed[0]["rule"], "slow");
    assert_eq!(suppressed[0]["state"], "raised");
    assert_eq!(suppressed[0]["suppressed"]["reason"], "suppressed_by_rule");
    assert_eq!(suppressed[0]["suppressed"]["by_alert"], id);

    let future = EventTime::now().millis() + 2 * 3_600_000;
    for (body, field) in [
        (r#"{"reason":"","for":"1m"}"#.to_owned(), "reason"),
        (format!(r#"{{"reason":"{}","for":"1m"}}"#, "x".repeat(501)), "reason"),
        (r#"{"reason":"works"}"#.to_owned(), "for"),
        (r#"{"reason":"works","for":"1m","until":1}"#.to_owned(), "for"),
        (r#"{"reason":"works","for":"2h"}"#.to_owned(), "for"),
        (r#"{"reason":"works","until":1000}"#.to_owned(), "until"),
        (format!(r#"{{"reason":"works","until":{future}}}"#), "until"),
    ] {
        let (status, answer) = post(port, &shelve, &body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(answer.to_string().contains(field), "{body}: {answer}");
    }
    let (status, answer) = post(port, &shelve, r#"{"for":"1m"}"#).await;
    assert_eq!(status, 400, "no reason: {answer}");

    let (status, answer) = post(port, &shelve, r#"{"reason":"road works","for":"30m"}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["alert"]["state"], "raised", "shelving keeps the state");
    assert_eq!(answer["alert"]["shelved"]["reason"], "road works");
    assert!(alerts(port, "state=shelved").await.iter().any(|x| x["id"] == id));
    let (status, answer) = post(port, &format!("/api/v1/alerts/{id}/unshelve"), "").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["alert"]["shelved"].is_null());
    let (status, _) = post(port, &format!("/api/v1/alerts/{id}/unshelve"), "").await;
    assert_eq!(status, 409, "not shelved");
    let audit: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, target FROM audit_log WHERE action LIKE 'alert.%shelve' ORDER BY id",
    )
    .fetch_all(&e.pool)
    .await
    .unwrap();
    let target = format!("alert/{id}");
    assert_eq!(
        audit,
        vec![("alert.shelve".to_owned(), target.clone()), ("alert.unshelve".to_owned(), target)]
    );

    // A short shelf comes off by itself, pushed again with `shelved` null.
    let (status, answer) = post(port, &shelve, r#"{"reason":"camera check","for":"2s"}"#).await;
    assert_eq!(status, 200, "{answer}");
    wait_for("the shelf to expire", Duration::from_secs(20), || async {
        get_json(port, &format!("/api/v1/alerts/{id}"))
            .await
            .filter(|v| v["alert"]["shelved"].is_null())
    })
    .await;
    let shelving: Vec<_> = events(&e.pool, id)
        .await
        .into_iter()
        .filter(|h| h.2.as_deref().is_some_and(|a| a.contains("shelve")))
        .map(|h| (h.2, h.3, h.4))
        .collect();
    assert_eq!(
        shelving,
        vec![
            (s("shelve"), s("bootstrap-admin"), s("road works")),
            (s("unshelve"), s("bootstrap-admin"), None),
            (s("shelve"), s("bootstrap-admin"), s("camera check")),
            (s("unshelve"), None, s("shelf expired")),
        ]
    );

    // A cleared alert cannot be shelved.
    let (status, _) = post(port, &format!("/api/v1/alerts/{id}/clear"), "").await;
    assert_eq!(status, 200);
    let (status, _) = post(port, &shelve, r#"{"reason":"late","for":"1m"}"#).await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_shelved_alert_survives_a_restart_and_is_raised_again() {
    let e = env("alarms-restart").await;
    let mut sccr = start(&e).await;
    let port = sccr.api_port;
    let mut seq = 0;
    publish_speeds(e.broker.port, &mut seq, &[5.0, 40.0], 100).await;
    let returned = wait_alerts(port, "the returned alert", "state=returned&rule=stopped").await;
    let id = returned[0]["id"].as_i64().unwrap();
    let (status, answer) = post(
        port,
        &format!("/api/v1/alerts/{id}/shelve"),
        r#"{"reason":"night works","for":"50m"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // The engine's checkpoint holds the shelf once saved (every second).
    wait_for("a checkpoint with the shelf", Duration::from_secs(20), || async {
        let book: Option<String> =
            sqlx::query_scalar("SELECT value::text FROM stream_state_parts WHERE part = 'book'")
                .fetch_optional(&e.pool)
                .await
                .ok()
                .flatten();
        book.filter(|b| b.contains("night works"))
    })
    .await;

    assert!(sccr.terminate(Duration::from_secs(30)).expect("sigterm"), "clean exit");
    sccr.restart().expect("restart");
    sccr.wait_healthy().await;
    assert!(sccr.log_text().contains("alert engine state restored"), "{}", sccr.log_text());
    let after = get_json(port, &format!("/api/v1/alerts/{id}")).await.expect("the alert");
    assert_eq!(after["alert"]["state"], "returned");
    assert_eq!(after["alert"]["shelved"]["reason"], "night works");

    // Stopped again before anyone acknowledged: the restored engine raises the same alert
    // again (a fresh one would find it open in the store and change nothing).
    publish_speeds(e.broker.port, &mut seq, &[5.0], 0).await;
    wait_for("the alert raised again", Duration::from_secs(30), || async {
        get_json(port, &format!("/api/v1/alerts/{id}"))
            .await
            .filter(|v| v["alert"]["state"] == "raised")
    })
    .await;
    let again = get_json(port, &format!("/api/v1/alerts/{id}")).await.unwrap();
    assert_eq!(again["alert"]["shelved"]["reason"], "night works", "still shelved");
    assert_eq!(again["alert"]["active"], true);
    let actions: Vec<Option<String>> = events(&e.pool, id).await.into_iter().map(|h| h.2).collect();
    assert_eq!(actions, vec![None, s("end"), s("shelve"), s("resume")]);
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts WHERE rule = 'stopped'")
        .fetch_one(&e.pool)
        .await
        .unwrap();
    assert_eq!(total, 1);
    // Shelved: its re-raise is not counted as a flood raise.
    assert_eq!(sccr_tests::metric(port, "sccr_alerts_raised_last_10m").await, Some(0.0));
}
