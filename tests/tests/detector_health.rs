//! Detector health end to end, through a real Mosquitto, a real PostgreSQL and the real
//! `sccr serve`: a stuck detector, one counting zero at a time of the week its baseline
//! calls busy, a silent one and one reporting flow without occupancy each raise their
//! health rule's alert and record a flag; a healthy detector in every rule's scope raises
//! nothing; recovery clears each condition and closes its flag; history with
//! `exclude_flagged=true` leaves exactly the flagged readings out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sccr_tests::{
    compact, http_get, loop_on, publish_all, telemetry_topic, test_segment, wait_for,
    wait_pipeline_ready, Broker, MqttProbe, Sccr, TempDir, TestDb,
};
use serde_json::Value;
use sqlx::PgPool;
use store::{Batch, Store, StoreOptions};
use telemetry::baseline::WEEK_MS;
use telemetry::{DeviceId, EventTime, MetricId, Reading};

const SEGMENT: &str = "via-test-health";
const HEALTHY: &str = "loop-healthy";
const STUCK: &str = "loop-stuck";
const ZERO: &str = "loop-zero";
const SILENT: &str = "loop-silent";
const ODD: &str = "loop-odd";

const CONFIG: &str = r#"
[baselines]
weeks = 3
min_samples = 2

[alerts]
air_quality_defaults = false

[[alerts.rules]]
id = "stuck"
severity = "info"
scope = { devices = ["loop-stuck", "loop-healthy"] }
health = { check = "stuck", readings = 5, for = "30s" }

[[alerts.rules]]
id = "zero-busy"
severity = "info"
scope = { devices = ["loop-zero", "loop-healthy"] }
health = { check = "zero_busy", window = "1m", for = "1m", busy_min_count = 10.0 }

[[alerts.rules]]
id = "silent"
severity = "info"
scope = { devices = ["loop-silent", "loop-healthy"] }
health = { check = "missing", window = "1m", interval = "5s", max_missing = 0.5, clear_missing = 0.2 }

[[alerts.rules]]
id = "implausible"
severity = "info"
scope = { devices = ["loop-odd", "loop-healthy"] }
health = { check = "implausible", window = "1m", for = "1m", interval = "5s" }
"#;

async fn get_json(port: u16, path: &str) -> Option<Value> {
    let (status, body) = http_get(port, path).await.ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

/// A healthy detector's report: 1–3 vehicles per 5 s on two lanes (360–1080 veh/h a lane)
/// at 45 km/h give an occupancy of about 8.8 % (5.5 m a vehicle).
fn healthy(seq: u64, t: i64) -> Vec<u8> {
    let count = 1.0 + (seq % 3) as f64;
    let speed = 45.0 + (seq % 7) as f64 * 0.3;
    compact(
        seq,
        t,
        &[
            ("vehicle_count", count),
            ("speed_kmh", speed),
            ("occupancy_pct", 8.8 + (seq % 5) as f64 * 0.1),
        ],
    )
}

/// Three past weeks of vehicle counts around this time of the week: `per_reading` a minute.
async fn count_history(store: &Store, device: &str, per_reading: f64) {
    let now = EventTime::now().millis();
    let id = DeviceId::parse(device).expect("id");
    for week in 1..=3 {
        let centre = now - week * WEEK_MS;
        let readings: Vec<Reading> = (-120..120)
            .map(|m| Reading {
                device: id.clone(),
                metric: MetricId::VehicleCount,
                time: EventTime(centre - centre % 60_000 + m * 60_000),
                value: per_reading,
                seq: None,
            })
            .collect();
        store.write_batch(&Batch { readings, ..Batch::default() }).await.expect("history");
    }
}

async fn open_alert(port: u16, rule: &str) -> Option<Value> {
    let open = get_json(port, "/api/v1/alerts?state=open").await?;
    open["alerts"].as_array()?.iter().find(|a| a["rule"] == rule).cloned()
}

async fn quality(port: u16, device: &str) -> Value {
    get_json(port, &format!("/api/v1/devices/{device}/quality?window=1h")).await.expect("quality")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_detectors_raise_their_health_flags_and_a_healthy_one_none() {
    let broker = Broker::start().await.expect("mosquitto");
    let db = TestDb::create().await.expect("database");
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("store");
    store.migrate().await.expect("migrate");
    store.upsert_segments(&[test_segment(SEGMENT)]).await.expect("segment");
    let devices: Vec<_> =
        [HEALTHY, STUCK, ZERO, SILENT, ODD].iter().map(|d| loop_on(d, SEGMENT)).collect();
    store.upsert_devices(&devices).await.expect("devices");
    count_history(&store, ZERO, 8.0).await;
    count_history(&store, HEALTHY, 2.0).await;
    store.catch_up_rollups().await.expect("rollups");
    store.close().await;
    let pool = PgPool::connect(&db.url).await.expect("pool");
    let dir = TempDir::new("detector-health").expect("tempdir");
    let sccr = Sccr::serve_with_config(broker.port, &db.url, &dir.path, CONFIG, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &pool).await;
    let port = sccr.api_port;
    wait_for("the count baselines to reach the engine", Duration::from_secs(30), || {
        let log = sccr.log_text();
        async move { log.contains("baselines loaded").then_some(()) }
    })
    .await;

    // Live: the healthy and the silent detector report every 5 s; the silent one stops
    // when told, and starts again when told.
    let silent_on = Arc::new(AtomicBool::new(true));
    let live = {
        let silent_on = silent_on.clone();
        let probe = MqttProbe::connect(broker.port, "health-live", &[]).await.expect("probe");
        tokio::spawn(async move {
            let mut seq = 1_000u64;
            loop {
                seq += 1;
                let t = EventTime::now().millis();
                let payload = String::from_utf8(healthy(seq, t)).expect("utf8");
                let _ = probe.publish(&telemetry_topic(HEALTHY), &payload).await;
                if silent_on.load(Ordering::Relaxed) {
                    let _ = probe.publish(&telemetry_topic(SILENT), &payload).await;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    };

    // Bursts of the last minutes (event time) for the other three, every 5 s.
    let t0 = EventTime::now().millis() - 8 * 60_000;
    let burst = |device: &str,
                 from: i64,
                 n: i64,
                 seq: u64,
                 values: &dyn Fn(i64) -> Vec<(&'static str, f64)>| {
        (0..n)
            .map(|i| {
                (telemetry_topic(device), compact(seq + i as u64, from + i * 5_000, &values(i)))
            })
            .collect::<Vec<_>>()
    };
    let mut messages = Vec::new();
    // Stuck: speed 42.0 for five minutes while count and occupancy move.
    messages.extend(burst(STUCK, t0, 60, 1, &|i| {
        vec![
            ("vehicle_count", 1.0 + (i % 3) as f64),
            ("speed_kmh", 42.0),
            ("occupancy_pct", 9.0 + (i % 4) as f64 * 0.2),
        ]
    }));
    // Zero: no vehicle at all where about 8 a reading are usual.
    messages.extend(burst(ZERO, t0, 60, 1, &|_| {
        vec![("vehicle_count", 0.0), ("speed_kmh", 45.0), ("occupancy_pct", 0.0)]
    }));
    // Odd: vehicles pass, the loop is never occupied.
    messages.extend(burst(ODD, t0, 60, 1, &|i| {
        vec![("vehicle_count", 2.0 + (i % 2) as f64), ("speed_kmh", 45.0), ("occupancy_pct", 0.0)]
    }));
    publish_all(broker.port, "health-burst", messages).await.expect("publish");

    for (rule, device, code) in [
        ("stuck", STUCK, "health_stuck"),
        ("zero-busy", ZERO, "health_zero_busy"),
        ("implausible", ODD, "health_implausible"),
    ] {
        let alert = wait_for(&format!("the {rule} alert"), Duration::from_secs(30), || {
            open_alert(port, rule)
        })
        .await;
        assert_eq!(
            (alert["code"].as_str(), &alert["subject"]),
            (Some(code), &serde_json::json!({"device": device})),
            "{alert}"
        );
        assert_eq!(alert["state"], "raised", "{alert}");
    }
    let odd = open_alert(port, "implausible").await.expect("alert");
    assert_eq!(odd["params"]["reason"], "flow_without_occupancy", "{odd}");
    let zero = open_alert(port, "zero-busy").await.expect("alert");
    assert!(zero["params"]["usual"].as_f64().unwrap() >= 10.0, "{zero}");
    // The stuck flag began at the first 42.0.
    let q = wait_for("the stuck flag", Duration::from_secs(10), || async {
        let q = quality(port, STUCK).await;
        (q["active"] == serde_json::json!(["stuck"])).then_some(q)
    })
    .await;
    assert_eq!(q["flags"][0]["from"], t0, "{q}");
    assert!(q["score"].as_f64().unwrap() < 1.0, "{q}");

    // Silent for a while: more than half the minute's 12 reports missing raises.
    tokio::time::sleep(Duration::from_secs(5)).await;
    wait_for("the silent detector to be watched for a minute", Duration::from_secs(90), || async {
        let watched: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM readings WHERE device = $1 AND metric = 'speed_kmh'",
        )
        .bind(SILENT)
        .fetch_one(&pool)
        .await
        .ok()?;
        (watched >= 15).then_some(())
    })
    .await;
    silent_on.store(false, Ordering::Relaxed);
    let alert =
        wait_for("the missing-data alert", Duration::from_secs(90), || open_alert(port, "silent"))
            .await;
    assert_eq!(
        (alert["code"].as_str(), &alert["subject"]),
        (Some("health_missing"), &serde_json::json!({"device": SILENT})),
        "{alert}"
    );
    assert!(alert["params"]["missing_pct"].as_f64().unwrap() > 50.0, "{alert}");

    // Recovery: each condition ends, its alert returns and its flag closes.
    let t1 = t0 + 5 * 60_000;
    let mut messages = Vec::new();
    messages.extend(burst(STUCK, t1, 3, 100, &|i| vec![("speed_kmh", 40.0 + i as f64)]));
    messages.extend(burst(ZERO, t1, 26, 100, &|i| vec![("vehicle_count", 6.0 + (i % 3) as f64)]));
    messages.extend(burst(ODD, t1, 26, 100, &|i| {
        vec![("vehicle_count", 2.0 + (i % 2) as f64), ("speed_kmh", 45.0), ("occupancy_pct", 9.5)]
    }));
    publish_all(broker.port, "health-recovery", messages).await.expect("publish");
    silent_on.store(true, Ordering::Relaxed);
    for (rule, device) in
        [("stuck", STUCK), ("zero-busy", ZERO), ("implausible", ODD), ("silent", SILENT)]
    {
        let q =
            wait_for(&format!("the {rule} flag to close"), Duration::from_secs(120), || async {
                let q = quality(port, device).await;
                let closed = q["active"].as_array()?.is_empty()
                    && q["flags"].as_array()?.iter().all(|f| !f["to"].is_null());
                closed.then_some(q)
            })
            .await;
        assert_eq!(q["flags"].as_array().unwrap().len(), 1, "{q}");
        let alert = open_alert(port, rule).await.expect("the alert stays open until acknowledged");
        assert_eq!(alert["state"], "returned", "{alert}");
    }
    live.abort();
    for name in ["sccr_detector_flags_opened_total", "sccr_detector_flags_closed_total"] {
        assert_eq!(sccr_tests::metric(port, name).await, Some(4.0), "{name}");
    }

    // History without flagged data: exactly the stuck readings inside the flag are out.
    let to = EventTime::now().millis() + 60_000;
    let h = get_json(port, &format!("/api/v1/history?device={STUCK}&metric=speed_kmh&from={}&to={to}&step=1m&exclude_flagged=true", t0 - 60_000))
        .await
        .expect("history");
    let flagged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM readings r JOIN detector_flags f ON f.device_id = r.device
         WHERE r.device = $1 AND r.metric = 'speed_kmh' AND r.time >= f.from_time AND (f.to_time IS NULL OR r.time < f.to_time)",
    )
    .bind(STUCK)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(h["excluded"]["readings"], flagged, "{h}");
    let counted: i64 =
        h["points"].as_array().unwrap().iter().map(|p| p["count"].as_i64().unwrap()).sum();
    // 60 readings of 42.0 inside the flag, 3 after it.
    assert_eq!((flagged, counted), (60, 3), "{h}");
    let refused = http_get(
        port,
        &format!("/api/v1/history?segment={SEGMENT}&metric=speed_kmh&exclude_flagged=true"),
    )
    .await
    .expect("get");
    assert_eq!(refused.0, 422, "{}", refused.1);

    // The healthy detector, in every rule's scope, raised nothing.
    let all = get_json(port, "/api/v1/alerts").await.expect("alerts");
    let healthy_alerts: Vec<&Value> = all["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["subject"] == serde_json::json!({"device": HEALTHY}))
        .collect();
    assert!(healthy_alerts.is_empty(), "{healthy_alerts:?}");
    let q = quality(port, HEALTHY).await;
    assert_eq!(
        (q["score"].as_f64(), q["flags"].as_array().map(Vec::len)),
        (Some(1.0), Some(0)),
        "{q}"
    );
    // The planner's list: the healthy detector scores 1, the others less, worst first.
    let list = get_json(port, &format!("/api/v1/quality?segment={SEGMENT}&window=1h"))
        .await
        .expect("list");
    let rows = list["devices"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "{list}");
    assert_eq!(rows.last().unwrap()["device"], HEALTHY, "{list}");
    assert!(rows[..4].iter().all(|r| r["score"].as_f64().unwrap() < 1.0), "{list}");
    let stuck_only = get_json(port, "/api/v1/quality?flag=stuck&window=1h").await.expect("list");
    assert_eq!(stuck_only["total"], 1, "{stuck_only}");
}
