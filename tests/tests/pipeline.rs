//! End to end through a real Mosquitto (project config), a real PostgreSQL and the real
//! `sccr serve` process: exactly-once storage with exact rollups, live websocket deltas,
//! dead letters that do not stop the pipeline, and crashes that lose nothing.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sccr_tests::{
    assert_rollups_match_raw, compact, publish_all, recent_base_ms, telemetry_topic, wait_for,
    wait_pipeline_ready, Broker, Sccr, TempDir, TestDb,
};
use sqlx::PgPool;

struct Env {
    broker: Broker,
    db: TestDb,
    pool: PgPool,
    dir: TempDir,
}

async fn env() -> Env {
    let broker = Broker::start().await.expect("mosquitto");
    let db = TestDb::create().await.expect("database");
    let pool = PgPool::connect(&db.url).await.expect("pool");
    Env { broker, db, pool, dir: TempDir::new("pipeline").expect("tempdir") }
}

async fn next_json<S>(ws: &mut S) -> serde_json::Value
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("frame in time")
        .expect("open")
        .expect("ok");
    serde_json::from_str(msg.to_text().expect("text")).expect("json")
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or(-1)
}

/// `devices` × `per_device` messages, two readings each, one second apart.
fn workload(devices: usize, per_device: usize, base: i64) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..per_device {
        for d in 0..devices {
            let t = base + i as i64 * 1_000;
            let payload = compact(
                i as u64,
                t,
                &[("speed_kmh", (i % 90) as f64 + d as f64), ("vehicle_count", (i % 7) as f64)],
            );
            out.push((telemetry_topic(&format!("loop-{d}")), payload));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_readings_are_stored_exactly_once_with_exact_rollups() {
    let e = env().await;
    let sccr = Sccr::serve(e.broker.port, &e.db.url, &e.dir.path, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(e.broker.port, &e.pool).await;

    let base = recent_base_ms();
    let messages = workload(10, 150, base);
    // Publish everything twice: the second copy is a replay and must change nothing.
    publish_all(e.broker.port, "pub-a", messages.clone()).await.expect("publish");
    publish_all(e.broker.port, "pub-b", messages).await.expect("replay");
    let expected = 10 * 150 * 2;
    wait_for("all readings stored", Duration::from_secs(60), || async {
        (count(&e.pool, "SELECT count(*) FROM readings WHERE device LIKE 'loop-%'").await
            >= expected)
            .then_some(())
    })
    .await;
    // Give a stray duplicate every chance to show up before counting exactly.
    wait_for("ingest to settle", Duration::from_secs(30), || async {
        let (status, body) =
            sccr_tests::http_get(sccr.api_port, "/api/v1/latest?device=loop-9&metric=speed_kmh")
                .await
                .ok()?;
        (status == 200 && body.contains(&format!("{}", base + 149_000))).then_some(())
    })
    .await;
    assert_eq!(
        count(&e.pool, "SELECT count(*) FROM readings WHERE device LIKE 'loop-%'").await,
        expected
    );

    // Exact rollup of one device and metric, computed here from what was sent.
    sccr_tests::wait_rollups_merged(&e.pool).await;
    let rows: Vec<(i64, f64, f64, f64, f64)> = sqlx::query_as(
        "SELECT count, sum, min, max, last_value FROM rollup_1m WHERE device = 'loop-3' AND metric = 'speed_kmh' ORDER BY bucket",
    )
    .fetch_all(&e.pool)
    .await
    .expect("rollups");
    let mut want = Vec::new();
    for minute in 0..3 {
        let vals: Vec<f64> =
            (minute * 60..((minute + 1) * 60).min(150)).map(|i| (i % 90) as f64 + 3.0).collect();
        let sum: f64 = vals.iter().sum();
        let lo = vals.iter().cloned().fold(f64::MAX, f64::min);
        let hi = vals.iter().cloned().fold(f64::MIN, f64::max);
        want.push((vals.len() as i64, sum, lo, hi, *vals.last().unwrap()));
    }
    assert_eq!(rows, want);
    assert_rollups_match_raw(&e.pool).await;

    let (status, body) =
        sccr_tests::http_get(sccr.api_port, "/api/v1/devices").await.expect("devices");
    assert_eq!(status, 200);
    assert!(body.contains("\"loop-9\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscriber_receives_new_values_of_its_device() {
    let e = env().await;
    let sccr = Sccr::serve(e.broker.port, &e.db.url, &e.dir.path, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(e.broker.port, &e.pool).await;

    let (mut ws, _) =
        tokio_tungstenite::connect_async(sccr_tests::live_url(sccr.api_port)).await.expect("ws");
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        r#"{"type":"subscribe","devices":["aq-7"]}"#.into(),
    ))
    .await
    .expect("send");
    let snapshot = next_json(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["values"].as_array().unwrap().len(), 0);

    let t = recent_base_ms() + 3_000_000;
    publish_all(
        e.broker.port,
        "pub-ws",
        vec![
            (telemetry_topic("aq-8"), compact(1, t, &[("no2_ugm3", 99.0)])),
            (telemetry_topic("aq-7"), compact(1, t, &[("no2_ugm3", 41.5), ("pm10_ugm3", 18.0)])),
        ],
    )
    .await
    .expect("publish");
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 2 {
        let f = next_json(&mut ws).await;
        if f["type"] == "delta" {
            for v in f["values"].as_array().unwrap() {
                assert_eq!(v["device"], "aq-7", "a value of another device arrived: {v}");
                assert_eq!(v["time"], t);
                seen.insert(v["metric"].as_str().unwrap().to_owned(), v["value"].as_f64().unwrap());
            }
        }
    }
    assert_eq!(seen["no2_ugm3"], 41.5);
    assert_eq!(seen["pm10_ugm3"], 18.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payload_is_dead_lettered_and_the_pipeline_goes_on() {
    let e = env().await;
    let sccr = Sccr::serve(e.broker.port, &e.db.url, &e.dir.path, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(e.broker.port, &e.pool).await;
    let t = recent_base_ms();
    publish_all(
        e.broker.port,
        "pub-bad",
        vec![
            (telemetry_topic("loop-1"), compact(1, t, &[("speed_kmh", 30.0)])),
            (telemetry_topic("loop-1"), b"{\"readings\": [".to_vec()),
            (
                telemetry_topic("loop-1"),
                compact(2, t + 1_000, &[("warp_factor", 9.0), ("speed_kmh", 31.0)]),
            ),
            (telemetry_topic("loop-1"), compact(3, t + 2_000, &[("speed_kmh", 999.0)])),
            (telemetry_topic("loop-1"), vec![0xff, 0xfe, 0x00]),
            (telemetry_topic("loop-1"), compact(4, t + 3_000, &[("speed_kmh", 33.0)])),
        ],
    )
    .await
    .expect("publish");
    wait_for("readings after the bad ones", Duration::from_secs(30), || async {
        (count(&e.pool, "SELECT count(*) FROM readings WHERE device = 'loop-1'").await == 3)
            .then_some(())
    })
    .await;
    let letters: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT reason, detail, payload FROM dead_letters WHERE device = 'loop-1' ORDER BY id",
    )
    .fetch_all(&e.pool)
    .await
    .expect("dl");
    let reasons: Vec<&str> = letters.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(reasons, vec!["bad_json", "unknown_metric", "out_of_range", "unknown_format"]);
    assert_eq!(letters[0].2, b"{\"readings\": [");
    assert!(letters[1].1.contains("warp_factor"), "{}", letters[1].1);
    assert!(letters[2].1.contains("999"), "{}", letters[2].1);
    let values: Vec<f64> =
        sqlx::query_scalar("SELECT value FROM readings WHERE device = 'loop-1' ORDER BY time")
            .fetch_all(&e.pool)
            .await
            .expect("values");
    assert_eq!(values, vec![30.0, 31.0, 33.0]);
    let (status, metrics) = sccr_tests::http_get(sccr.api_port, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    for line in [
        "sccr_dead_letters_total{reason=\"bad_json\"} 1",
        "sccr_dead_letters_total{reason=\"unknown_metric\"} 1",
        "sccr_dead_letters_total{reason=\"out_of_range\"} 1",
        "sccr_dead_letters_total{reason=\"unknown_format\"} 1",
        // Reasons not seen yet are there from the start, at zero.
        "sccr_dead_letters_total{reason=\"bad_topic\"} 0",
        "sccr_dead_letters_total{reason=\"older_than_retention\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    // Every metric family the process exposes is documented.
    let doc = std::fs::read_to_string(sccr_tests::workspace_root().join("docs/metrics.md"))
        .expect("docs/metrics.md");
    let families: Vec<&str> =
        metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    assert!(families.len() > 60, "{families:?}");
    let missing: Vec<&&str> = families.iter().filter(|f| !doc.contains(&format!("`{f}"))).collect();
    assert!(missing.is_empty(), "not in docs/metrics.md: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_ingest_loses_and_duplicates_nothing() {
    let e = env().await;
    let mut sccr = Sccr::serve(e.broker.port, &e.db.url, &e.dir.path, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(e.broker.port, &e.pool).await;

    let base = recent_base_ms();
    let messages = workload(20, 250, base); // 5,000 messages, 10,000 readings
    let expected = 10_000;
    let port = e.broker.port;
    let publisher = tokio::spawn(async move { publish_all(port, "pub-kill", messages).await });
    // Kill (SIGKILL) mid-stream: some readings committed, others in flight or queued.
    wait_for("part of the stream to be stored", Duration::from_secs(60), || async {
        let n = count(&e.pool, "SELECT count(*) FROM readings WHERE device LIKE 'loop-%'").await;
        (n >= 1_000).then_some(())
    })
    .await;
    sccr.kill();
    let stored_at_kill =
        count(&e.pool, "SELECT count(*) FROM readings WHERE device LIKE 'loop-%'").await;
    publisher.await.expect("join").expect("every message was acknowledged by the broker");
    assert!(
        stored_at_kill < expected,
        "the kill came too late to prove anything ({stored_at_kill})"
    );

    sccr.restart().expect("restart");
    wait_for("every reading after the restart", Duration::from_secs(90), || async {
        (count(&e.pool, "SELECT count(*) FROM readings WHERE device LIKE 'loop-%'").await
            >= expected)
            .then_some(())
    })
    .await;
    let per_key_max: i64 = count(&e.pool, "SELECT coalesce(max(c), 0) FROM (SELECT count(*) AS c FROM readings GROUP BY device, metric, time) x").await;
    assert_eq!(per_key_max, 1);
    assert_eq!(
        count(&e.pool, "SELECT count(*) FROM readings WHERE device LIKE 'loop-%'").await,
        expected
    );
    sccr_tests::wait_rollups_merged(&e.pool).await;
    assert_eq!(
        count(
            &e.pool,
            "SELECT coalesce(sum(count), 0)::int8 FROM rollup_1m WHERE device LIKE 'loop-%'"
        )
        .await,
        expected
    );
    assert_rollups_match_raw(&e.pool).await;
    assert!(
        sccr.log_text().contains("session_present=true"),
        "ingest did not resume its session:\n{}",
        sccr.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_flushes_before_exit() {
    let e = env().await;
    let mut sccr =
        Sccr::serve(e.broker.port, &e.db.url, &e.dir.path, &[("SCCR_WRITER__MAX_BATCH_AGE", "2s")])
            .expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(e.broker.port, &e.pool).await;
    let t = recent_base_ms();
    // With a 2 s batch age these sit in the writer's batch when SIGTERM arrives.
    publish_all(
        e.broker.port,
        "pub-term",
        (0..50)
            .map(|i| {
                (
                    telemetry_topic("loop-t"),
                    compact(i, t + i as i64 * 1_000, &[("speed_kmh", 40.0)]),
                )
            })
            .collect(),
    )
    .await
    .expect("publish");
    wait_for("ingest to take the messages", Duration::from_secs(10), || async {
        let (_, body) = sccr_tests::http_get(sccr.api_port, "/healthz").await.ok()?;
        Some(body)
    })
    .await;
    let exited_ok = sccr.terminate(Duration::from_secs(30)).expect("terminate");
    assert!(exited_ok, "sccr exited with an error:\n{}", sccr.log_text());
    let stored = count(&e.pool, "SELECT count(*) FROM readings WHERE device = 'loop-t'").await;
    // Everything that ingest took was flushed; anything it had not taken is still queued
    // at the broker for the next session.
    sccr.restart().expect("restart");
    wait_for("all 50 readings", Duration::from_secs(30), || async {
        (count(&e.pool, "SELECT count(*) FROM readings WHERE device = 'loop-t'").await == 50)
            .then_some(())
    })
    .await;
    assert!(sccr.log_text().contains("SCCR stopped cleanly"));
    assert!(stored > 0, "nothing was flushed at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingest_processes_on_a_shared_subscription_store_everything_once() {
    let e = env().await;
    let shared = [("SCCR_MQTT__SUBSCRIPTION", "shared")];
    let a = Sccr::serve(e.broker.port, &e.db.url, &e.dir.path, &shared).expect("sccr a");
    a.wait_healthy().await;
    let b = Sccr::serve(e.broker.port, &e.db.url, &e.dir.path, &shared).expect("sccr b");
    b.wait_healthy().await;
    wait_pipeline_ready(e.broker.port, &e.pool).await;
    wait_for("both ingest processes subscribed", Duration::from_secs(30), || async {
        (a.log_text().contains(": subscribed") && b.log_text().contains(": subscribed"))
            .then_some(())
    })
    .await;
    publish_all(e.broker.port, "pub-shared", workload(10, 100, recent_base_ms()))
        .await
        .expect("publish");
    wait_for("all readings stored", Duration::from_secs(60), || async {
        (count(&e.pool, "SELECT count(*) FROM readings WHERE device LIKE 'loop-%'").await >= 2_000)
            .then_some(())
    })
    .await;
    assert_eq!(
        count(&e.pool, "SELECT count(*) FROM readings WHERE device LIKE 'loop-%'").await,
        2_000
    );
    assert_rollups_match_raw(&e.pool).await;
}

/// With queues far smaller than the broker's in-flight window, every link of the cycle
/// broker → ingest → writer → acker → broker is full at once; the pipeline must keep
/// flowing (the acker never blocks) and store everything exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_queues_under_a_burst_neither_stall_nor_lose() {
    let e = env().await;
    let tiny = [
        ("SCCR_INGEST__MAX_PENDING_READINGS", "20"),
        ("SCCR_WRITER__QUEUE_MESSAGES", "2"),
        ("SCCR_WRITER__MAX_BATCH_READINGS", "10"),
        ("SCCR_MQTT__RECEIVE_MAXIMUM", "500"),
    ];
    let sccr = Sccr::serve(e.broker.port, &e.db.url, &e.dir.path, &tiny).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(e.broker.port, &e.pool).await;
    publish_all(e.broker.port, "pub-burst", workload(20, 150, recent_base_ms()))
        .await
        .expect("publish");
    wait_for("the burst to be stored", Duration::from_secs(90), || async {
        (count(&e.pool, "SELECT count(*) FROM readings WHERE device LIKE 'loop-%'").await >= 6_000)
            .then_some(())
    })
    .await;
    assert_eq!(
        count(&e.pool, "SELECT count(*) FROM readings WHERE device LIKE 'loop-%'").await,
        6_000
    );
    assert_rollups_match_raw(&e.pool).await;
}
