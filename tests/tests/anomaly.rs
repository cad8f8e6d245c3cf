//! Anomaly alerts end to end, through a real Mosquitto, a real PostgreSQL and the real
//! `sccr serve`: three weeks of a detector's history at about 50 km/h around this time of
//! the week are stored; at start `sccr` learns the baselines and hands them to the alert
//! engine; an incident (speed at 40 % of usual, 20 km/h) raises the anomaly rule's alert
//! while an absolute threshold at 15 km/h stays quiet, and the segment's forecast (made
//! from the same learned baselines) expects it slow for a while, recovering towards usual.

use std::time::Duration;

use sccr_tests::{
    compact, http_get, loop_on, publish_all, telemetry_topic, test_segment, wait_for,
    wait_pipeline_ready, Broker, Sccr, TempDir, TestDb,
};
use serde_json::Value;
use sqlx::PgPool;
use store::{Batch, Store, StoreOptions};
use telemetry::baseline::WEEK_MS;
use telemetry::{DeviceId, EventTime, MetricId, Reading};

const SEGMENT: &str = "via-test-anomaly";
const DEVICE: &str = "loop-anomaly";

const CONFIG: &str = r#"
[baselines]
weeks = 3
min_samples = 2

[alerts]
air_quality_defaults = false

[[alerts.rules]]
id = "unusually-slow"
severity = "warning"
anomaly = { metric = "speed_kmh", direction = "below", k = 3.0, for = "1m" }

[[alerts.rules]]
id = "slow"
severity = "warning"
threshold = { metric = "speed_kmh", below = 15.0, for = "1m" }
"#;

async fn get_json(port: u16, path: &str) -> Option<Value> {
    let (status, body) = http_get(port, path).await.ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

/// A figure of `/metrics` (0 when absent).
async fn figure(port: u16, name: &str) -> f64 {
    sccr_tests::metric(port, name).await.unwrap_or(0.0)
}

/// `sccr_stream_readings_total` from `/metrics`.
async fn stream_readings(port: u16) -> f64 {
    figure(port, "sccr_stream_readings_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_raises_an_anomaly_while_a_fixed_threshold_stays_quiet() {
    let broker = Broker::start().await.expect("mosquitto");
    let db = TestDb::create().await.expect("database");
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("store");
    store.migrate().await.expect("migrate");
    store.upsert_segments(&[test_segment(SEGMENT)]).await.expect("segment");
    store.upsert_devices(&[loop_on(DEVICE, SEGMENT)]).await.expect("device");
    // Three past weeks, two hours either side of this time of the week, a reading a
    // minute between 48 and 52 km/h.
    let now = EventTime::now().millis();
    let device = DeviceId::parse(DEVICE).expect("id");
    for week in 1..=3 {
        let centre = now - week * WEEK_MS;
        let readings: Vec<Reading> = (-120..120)
            .map(|m| Reading {
                device: device.clone(),
                metric: MetricId::SpeedKmh,
                time: EventTime(centre - centre % 60_000 + m * 60_000),
                value: 50.0 + ((m + week).rem_euclid(5) - 2) as f64,
                seq: None,
            })
            .collect();
        store.write_batch(&Batch { readings, ..Batch::default() }).await.expect("history");
    }
    store.catch_up_rollups().await.expect("rollups");
    store.close().await;
    let pool = PgPool::connect(&db.url).await.expect("pool");
    let dir = TempDir::new("anomaly").expect("tempdir");

    let sccr = Sccr::serve_with_config(broker.port, &db.url, &dir.path, CONFIG, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &pool).await;
    let port = sccr.api_port;
    wait_for("the baselines to reach the alert engine", Duration::from_secs(30), || {
        let log = sccr.log_text();
        async move { log.contains("baselines loaded for the anomaly rules").then_some(()) }
    })
    .await;
    // The refresher's figures: a full learning of the week's 672 slots, the rule's profile
    // held by the stream.
    assert!(figure(port, "sccr_baseline_refreshes_total").await >= 1.0);
    assert_eq!(figure(port, "sccr_baseline_refresh_failures_total").await, 0.0);
    assert!(figure(port, "sccr_baseline_slots_learned_total").await >= 672.0);
    assert!(figure(port, "sccr_baseline_profiles_loaded").await >= 1.0);
    assert!(figure(port, "sccr_baseline_loaded_bytes").await > 0.0);
    let usual = get_json(
        port,
        &format!(
            "/api/v1/baselines?device={DEVICE}&metric=speed_kmh&from={}&to={}",
            now - 900_000,
            now + 900_000
        ),
    )
    .await
    .expect("baselines");
    let centres: Vec<f64> =
        usual["points"].as_array().unwrap().iter().filter_map(|p| p["centre"].as_f64()).collect();
    assert!(!centres.is_empty() && centres.iter().all(|c| (48.0..=52.0).contains(c)), "{usual}");

    let before = stream_readings(port).await;
    // The incident: 20 km/h (40 % of usual) for three minutes of event time.
    let start = EventTime::now().millis() - 180_000;
    let messages: Vec<(String, Vec<u8>)> = (0..=36)
        .map(|i| {
            (
                telemetry_topic(DEVICE),
                compact(100 + i as u64, start + i * 5_000, &[("speed_kmh", 20.0)]),
            )
        })
        .collect();
    publish_all(broker.port, "incident", messages).await.expect("publish");
    let alert = wait_for("the anomaly alert", Duration::from_secs(30), || async {
        let open = get_json(port, "/api/v1/alerts?state=open").await?;
        open["alerts"].as_array()?.iter().find(|a| a["rule"] == "unusually-slow").cloned()
    })
    .await;
    assert_eq!(alert["code"], "anomaly_below", "{alert}");
    assert_eq!(alert["subject"], serde_json::json!({"device": DEVICE}), "{alert}");
    assert_eq!(alert["params"]["value"], 20.0, "{alert}");
    let centre = alert["params"]["centre"].as_f64().unwrap();
    assert!((48.0..=52.0).contains(&centre), "{alert}");
    // Once the stream has applied every reading of the incident, the threshold, evaluated
    // on the same readings, has stayed quiet.
    wait_for("the stream to apply the incident's readings", Duration::from_secs(30), || async {
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM readings WHERE device = $1 AND value = 20.0")
                .bind(DEVICE)
                .fetch_one(&pool)
                .await
                .ok()?;
        (stored == 37 && stream_readings(port).await >= before + 37.0).then_some(())
    })
    .await;
    let all = get_json(port, "/api/v1/alerts").await.expect("alerts");
    assert!(
        !all["alerts"].as_array().unwrap().iter().any(|a| a["rule"] == "slow"),
        "the fixed threshold raised: {all}"
    );

    // The segment's forecast, made from a window of the incident: the usual speed ahead
    // (the learned 48–52 km/h) scaled by the ratio now (0.4), the difference fading.
    let path = format!("/api/v1/forecasts?segment={SEGMENT}");
    let answer = wait_for("the segment's forecast", Duration::from_secs(30), || async {
        let a = get_json(port, &path).await?;
        (a["forecasts"].as_array()?.len() == 1).then_some(a)
    })
    .await;
    let item = &answer["forecasts"][0];
    assert_eq!(item["segment"], SEGMENT, "{answer}");
    let f = &item["forecast"];
    let ratio = f["ratio"].as_f64().unwrap();
    assert!((0.35..0.6).contains(&ratio), "{answer}");
    let horizons = f["horizons"].as_array().unwrap();
    assert_eq!(
        horizons.iter().map(|h| h["minutes"].as_u64().unwrap()).collect::<Vec<_>>(),
        [15, 30]
    );
    let mut last = 0.0;
    for h in horizons {
        let usual = h["usual_kmh"].as_f64().unwrap();
        let speed = h["speed_kmh"].as_f64().unwrap();
        assert!((48.0..=52.0).contains(&usual), "{answer}");
        assert!(speed > 20.0 && speed < usual * 0.6, "slow for a while: {answer}");
        assert!(speed > last, "recovering towards usual: {answer}");
        last = speed;
    }
    // The same forecast rides the segment's GeoJSON; an unknown segment is a 404.
    let (status, body) = http_get(port, "/api/v1/segments").await.expect("segments");
    assert_eq!(status, 200);
    let segments: Value = serde_json::from_str(&body).unwrap();
    let feature = segments["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == SEGMENT)
        .expect("the segment")
        .clone();
    assert!(feature["properties"]["forecast"]["horizons"].is_array(), "{feature}");
    let (status, body) = http_get(port, "/api/v1/forecasts?segment=nowhere").await.unwrap();
    assert_eq!(status, 404, "{body}");
    let (status, body) = http_get(port, "/api/v1/forecasts?degrading=maybe").await.unwrap();
    assert_eq!(status, 400, "{body}");
}
