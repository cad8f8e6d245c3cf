//! The hostile input catalogue, end to end through Mosquitto (project config), `sccr serve`
//! and PostgreSQL. For every kind of bad input: a clear error (HTTP 4xx with the JSON error
//! body, a websocket `error` frame or close) or a dead letter with its reason, a counter in
//! `/metrics` that moved, the pipeline going on (a good message after the bad ones is
//! stored), and the process's memory staying bounded under a flood.
//!
//! Websocket clients are in `hostile/websocket.rs`, road operations' headers, parameters
//! and edits in `hostile/operations.rs`; MQTT and other HTTP input is here.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use sccr_tests::{
    compact, http_get, http_send, publish_all, recent_base_ms, rss_kib, telemetry_topic, wait_for,
    wait_pipeline_ready, Broker, Sccr, TempDir, TestDb,
};
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::Message;
#[path = "hostile/operations.rs"]
mod operations;
#[path = "hostile/websocket.rs"]
mod websocket;

struct Env {
    _broker: Broker,
    _db: TestDb,
    pool: PgPool,
    sccr: Sccr,
    _dir: TempDir,
    port: u16,
}

async fn env(tag: &str) -> Env {
    let broker = Broker::start().await.expect("mosquitto");
    let db = TestDb::create().await.expect("database");
    let pool = PgPool::connect(&db.url).await.expect("pool");
    let dir = TempDir::new(tag).unwrap();
    let sccr = Sccr::serve(broker.port, &db.url, &dir.path, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &pool).await;
    let port = broker.port;
    Env { _broker: broker, _db: db, pool, sccr, _dir: dir, port }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or(-1)
}

/// `name{labels} value` lines of `/metrics`.
async fn metrics(port: u16) -> BTreeMap<String, f64> {
    let (status, body) = http_get(port, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_owned(), v.parse().ok()?))))
        .collect()
}

fn dead_letter_counter(m: &BTreeMap<String, f64>, reason: &str) -> f64 {
    m.get(&format!("sccr_dead_letters_total{{reason=\"{reason}\"}}")).copied().unwrap_or(0.0)
}

/// Publish a good reading for `device` and wait until it is stored: the pipeline goes on.
async fn sentinel(e: &Env, device: &str, seq: u64) {
    let t = recent_base_ms() + 3_000_000 + seq as i64;
    publish_all(
        e.port,
        &format!("sentinel-{device}-{seq}"),
        vec![(telemetry_topic(device), compact(seq, t, &[("speed_kmh", 42.0)]))],
    )
    .await
    .expect("publish");
    let sql = format!("SELECT count(*) FROM readings WHERE device = '{device}' AND time = to_timestamp({t} / 1000.0)");
    wait_for(
        &format!("the good reading after the bad ones ({device})"),
        Duration::from_secs(30),
        || async { (count(&e.pool, &sql).await == 1).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_on_every_topic_are_dead_lettered_counted_and_the_pipeline_goes_on() {
    let e = env("hostile-mqtt").await;
    let t = recent_base_ms();
    let deep = format!("{{\"ts\":{t},\"readings\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let big_readings: Vec<String> = (0..2_000)
        .map(|i| format!("{{\"m\":\"speed_kmh\",\"v\":{i}.0,\"t\":{}}}", t + i))
        .collect();
    let too_large = format!("{{\"ts\":{t},\"readings\":[{}]}}", big_readings.join(","));
    assert!(too_large.len() > 64 * 1024 && too_large.len() < 128 * 1024);
    let reading = |m: &str, v: &str, ts: &str| {
        format!("{{\"seq\":1,\"ts\":{ts},\"readings\":[{{\"m\":\"{m}\",\"v\":{v}}}]}}").into_bytes()
    };
    let tel = telemetry_topic("hx");
    let status = "sccr/v1/devices/hx/status".to_owned();
    let ts = t.to_string();
    // (what, topic, payload, the dead-letter reason expected)
    let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
        ("empty payload", tel.clone(), Vec::new(), "empty"),
        ("binary payload", tel.clone(), vec![0x00, 0xff, 0x13, 0x37, 0x80], "unknown_format"),
        ("deep JSON nesting", tel.clone(), deep.into_bytes(), "bad_schema"),
        ("NaN", tel.clone(), reading("speed_kmh", "NaN", &ts), "bad_json"),
        ("Infinity", tel.clone(), reading("speed_kmh", "Infinity", &ts), "bad_json"),
        ("number beyond f64", tel.clone(), reading("speed_kmh", "1e999", &ts), "bad_json"),
        ("value out of the metric's range", tel.clone(), reading("speed_kmh", "-5", &ts), "out_of_range"),
        ("huge value", tel.clone(), reading("speed_kmh", "1.7976931348623157e308", &ts), "out_of_range"),
        ("fractional count", tel.clone(), reading("vehicle_count", "2.5", &ts), "not_whole"),
        ("timestamp in year 9999", tel.clone(), reading("speed_kmh", "10", "253402300799000"), "time_in_future"),
        ("timestamp past year 9999", tel.clone(), reading("speed_kmh", "10", "253402300800000"), "bad_time"),
        ("timestamp before 1970", tel.clone(), reading("speed_kmh", "10", "-1000"), "bad_time"),
        ("seq out of range", tel.clone(), format!("{{\"seq\":-1,\"ts\":{t},\"readings\":[]}}").into_bytes(), "bad_schema"),
        ("SQL-looking metric", tel.clone(), reading("speed_kmh'); DROP TABLE readings;--", "1", &ts), "unknown_metric"),
        ("unicode metric", tel.clone(), reading("velocità_kmh", "1", &ts), "unknown_metric"),
        ("SQL-looking device id", telemetry_topic("x'; DROP TABLE readings;--"), reading("speed_kmh", "1", &ts), "bad_topic"),
        ("unicode device id", telemetry_topic("spira-località"), reading("speed_kmh", "1", &ts), "bad_topic"),
        (
            "SenML base version changing within the pack",
            tel.clone(),
            format!("[{{\"bver\":10,\"bt\":{},\"n\":\"speed_kmh\",\"v\":1}},{{\"bver\":5,\"n\":\"speed_kmh\",\"v\":2}}]", t / 1000).into_bytes(),
            "version_change",
        ),
        (
            "SenML base unit wrong for the metric",
            tel.clone(),
            format!("[{{\"bu\":\"Cel\",\"bt\":{},\"n\":\"speed_kmh\",\"v\":10}}]", t / 1000).into_bytes(),
            "unit_mismatch",
        ),
        ("SenML base value overflowing", tel.clone(), format!("[{{\"bv\":1e308,\"bt\":{},\"n\":\"speed_kmh\",\"v\":1e308}}]", t / 1000).into_bytes(), "not_finite"),
        ("payload over the validator's limit", tel.clone(), too_large.into_bytes(), "too_large"),
        ("status payload on telemetry", tel.clone(), br#"{"state":"online"}"#.to_vec(), "bad_schema"),
        ("telemetry payload on status", status.clone(), reading("speed_kmh", "1", &ts), "bad_status"),
        ("binary on status", status.clone(), vec![0xde, 0xad, 0xbe, 0xef], "bad_status"),
        ("empty status", status, Vec::new(), "bad_status"),
    ];
    let before = metrics(e.sccr.api_port).await;
    let mut messages: Vec<(String, Vec<u8>)> =
        cases.iter().map(|(_, topic, p, _)| (topic.clone(), p.clone())).collect();
    // Nothing takes commands or acknowledgements from devices yet: junk there must harm nothing.
    messages.push(("sccr/v1/devices/hx/commands/ack".into(), vec![0xff; 1_000]));
    messages.push(("sccr/v1/devices/hx/commands".into(), b"{\"readings\":[".to_vec()));
    publish_all(e.port, "hostile", messages).await.expect("publish");
    sentinel(&e, "hx", 1).await;
    wait_for("every dead letter stored", Duration::from_secs(30), || async {
        (count(&e.pool, "SELECT count(*) FROM dead_letters").await >= cases.len() as i64)
            .then_some(())
    })
    .await;

    let mut stored: Vec<(String, String, String)> =
        sqlx::query_as("SELECT topic, reason, detail FROM dead_letters ORDER BY id")
            .fetch_all(&e.pool)
            .await
            .expect("dead letters");
    // Junk on commands/ack is a dead letter once ingest takes acknowledgements (device
    // commands), and ignored before; never anything else.
    stored.retain(|(topic, reason, _)| {
        !(topic.ends_with("/commands/ack") && reason == "bad_command_ack")
    });
    let mut want: Vec<(&str, &str)> =
        cases.iter().map(|(_, topic, _, reason)| (topic.as_str(), *reason)).collect();
    let mut got: Vec<(&str, &str)> =
        stored.iter().map(|(topic, reason, _)| (topic.as_str(), reason.as_str())).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "dead letters differ from the catalogue; stored: {stored:#?}");
    assert!(
        stored.iter().all(|(_, _, detail)| !detail.is_empty()),
        "a dead letter without its reason's detail: {stored:#?}"
    );
    // Only the sentinel was stored for hx; the readings table is intact.
    assert_eq!(count(&e.pool, "SELECT count(*) FROM readings WHERE device = 'hx'").await, 1);

    let after = metrics(e.sccr.api_port).await;
    let mut per_reason: BTreeMap<&str, f64> = BTreeMap::new();
    for (_, _, _, reason) in &cases {
        *per_reason.entry(reason).or_default() += 1.0;
    }
    for (reason, n) in per_reason {
        let moved = dead_letter_counter(&after, reason) - dead_letter_counter(&before, reason);
        assert_eq!(
            moved, n,
            "sccr_dead_letters_total{{reason=\"{reason}\"}} moved by {moved}, expected {n}"
        );
    }
}

/// A SenML pack and a compact message, each with one bad record among good ones, through
/// the broker: the good readings are stored, the bad record is one dead letter naming its
/// index and reason, and that reason's counter moved by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_record_is_dead_lettered_and_the_rest_of_its_message_stored() {
    let e = env("hostile-records").await;
    let t = recent_base_ms();
    let senml = format!(
        r#"[{{"bn":"urn:dev:rx:","bt":{}}},{{"n":"speed_kmh","v":40}},{{"n":"speed_kmh","v":"fast","t":1}},{{"n":"vehicle_count","v":3,"t":2}}]"#,
        t / 1000
    );
    let compact = format!(
        r#"{{"seq":9,"ts":{t},"readings":[{{"m":"speed_kmh","v":41}},{{"m":"speed_kmh","v":1,"unit":"km/h"}},{{"m":"vehicle_count","v":4,"t":{}}}]}}"#,
        t + 1_000
    );
    let before = metrics(e.sccr.api_port).await;
    publish_all(
        e.port,
        "bad-records",
        vec![
            (telemetry_topic("rx"), senml.clone().into_bytes()),
            (telemetry_topic("ry"), compact.clone().into_bytes()),
        ],
    )
    .await
    .expect("publish");
    let stored_sql = "SELECT count(*) FROM readings WHERE device IN ('rx', 'ry')";
    wait_for("the good readings of both messages", Duration::from_secs(30), || async {
        (count(&e.pool, stored_sql).await == 4
            && count(&e.pool, "SELECT count(*) FROM dead_letters").await == 2)
            .then_some(())
    })
    .await;

    let readings: Vec<(String, String, i64, f64)> = sqlx::query_as(
        "SELECT device, metric, (extract(epoch FROM time) * 1000)::bigint, value FROM readings
         WHERE device IN ('rx', 'ry') ORDER BY device, time, metric",
    )
    .fetch_all(&e.pool)
    .await
    .expect("readings");
    let row = |d: &str, m: &str, at: i64, v: f64| (d.to_owned(), m.to_owned(), at, v);
    assert_eq!(
        readings,
        vec![
            row("rx", "speed_kmh", t, 40.0),
            row("rx", "vehicle_count", t + 2_000, 3.0),
            row("ry", "speed_kmh", t, 41.0),
            row("ry", "vehicle_count", t + 1_000, 4.0),
        ]
    );
    let letters: Vec<(String, Option<String>, String, String, String)> = sqlx::query_as(
        "SELECT topic, device, reason, detail, convert_from(payload, 'UTF8') FROM dead_letters
         ORDER BY device",
    )
    .fetch_all(&e.pool)
    .await
    .expect("dead letters");
    assert_eq!(
        letters,
        vec![
            (
                telemetry_topic("rx"),
                Some("rx".to_owned()),
                "wrong_type".to_owned(),
                "record 2: field \"v\" must be a number".to_owned(),
                senml,
            ),
            (
                telemetry_topic("ry"),
                Some("ry".to_owned()),
                "unknown_field".to_owned(),
                "reading 1: field \"unit\" is not part of the compact format".to_owned(),
                compact,
            ),
        ]
    );
    let after = metrics(e.sccr.api_port).await;
    for reason in ["wrong_type", "unknown_field"] {
        let moved = dead_letter_counter(&after, reason) - dead_letter_counter(&before, reason);
        assert_eq!(moved, 1.0, "sccr_dead_letters_total{{reason=\"{reason}\"}}");
    }
}

/// A publish over the broker's max_packet_size (128 KiB): the broker refuses it (and drops
/// the connection); nothing reaches ingest, which goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_over_the_brokers_packet_limit_never_reaches_ingest_and_harms_nothing() {
    let e = env("hostile-oversize").await;
    let mut opts = MqttOptions::new("oversize", "127.0.0.1", e.port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    client
        .publish(telemetry_topic("hx"), QoS::AtLeastOnce, false, vec![b'{'; 512 * 1024])
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    return format!("acknowledged: {ack:?}")
                }
                Ok(Event::Incoming(Packet::Disconnect(d))) => {
                    return format!("disconnected: {d:?}")
                }
                Ok(_) => {}
                Err(err) => return format!("refused: {err}"),
            }
        }
    })
    .await
    .expect("the broker answers");
    assert!(!outcome.starts_with("acknowledged"), "the broker took a 512 KiB payload: {outcome}");
    sentinel(&e, "hx", 2).await;
    assert_eq!(count(&e.pool, "SELECT count(*) FROM dead_letters").await, 0);
}

/// A flood of bad messages (junk near the validator's limit, deep nesting, oversize) must
/// cost bounded memory: dead letters keep a truncated payload and nothing queues unbounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_messages_keeps_memory_bounded() {
    let e = env("hostile-flood").await;
    let pid = e.sccr.pid().unwrap();
    // Warm up (pools, buffers) with one round before the baseline.
    let round = |n: usize| -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let payload = match i % 3 {
                    0 => vec![0xab; 60 * 1024],
                    1 => format!("{{\"readings\":{}}}", "[".repeat(20_000)).into_bytes(),
                    _ => vec![b' '; 100 * 1024],
                };
                (telemetry_topic(&format!("flood-{}", i % 50)), payload)
            })
            .collect()
    };
    publish_all(e.port, "flood-warm", round(300)).await.expect("warm-up");
    sentinel(&e, "hx", 3).await;
    let before = rss_kib(pid).unwrap();
    let flood = 3_000;
    let t0 = std::time::Instant::now();
    publish_all(e.port, "flood", round(flood)).await.expect("flood");
    sentinel(&e, "hx", 4).await;
    let elapsed = t0.elapsed();
    let after = rss_kib(pid).unwrap();
    wait_for("the flood's dead letters", Duration::from_secs(60), || async {
        (count(&e.pool, "SELECT count(*) FROM dead_letters").await >= (flood + 300) as i64)
            .then_some(())
    })
    .await;
    let max_kept: i64 = count(&e.pool, "SELECT max(length(payload))::int8 FROM dead_letters").await;
    eprintln!(
        "flood of {flood} bad messages (~{} MiB) in {:.1} s: sccr RSS {} MiB before, {} MiB after; largest dead-letter payload kept {max_kept} bytes",
        flood * 55 / 1024,
        elapsed.as_secs_f64(),
        before / 1024,
        after / 1024
    );
    assert!(after < before + 64 * 1024, "RSS grew from {before} KiB to {after} KiB over the flood");
    let m = metrics(e.sccr.api_port).await;
    let counted: f64 =
        m.iter().filter(|(k, _)| k.starts_with("sccr_dead_letters_total{")).map(|(_, v)| v).sum();
    assert_eq!(counted, (flood + 300) as f64, "dead-letter counters: {m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_query_parameters_and_bodies_on_every_route_get_a_4xx_json_error() {
    let e = env("hostile-http").await;
    let port = e.sccr.api_port;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let huge = format!("{{\"by\":\"{}\"}}", "a".repeat(3 * 1024 * 1024));
    let get = |path: &str| ("GET", path.to_owned(), String::new());
    let cases: Vec<(&str, String, String)> = vec![
        get("/api/v1/devices?bogus=1"),
        get("/api/v1/devices?%ZZ=1"),
        get("/api/v1/latest?device=x'%3B%20DROP%20TABLE%20readings%3B--"),
        get("/api/v1/latest?device=localit%C3%A0"),
        get("/api/v1/latest?device=loop-1&device=loop-2"),
        get("/api/v1/latest?metric=warp_factor"),
        get("/api/v1/history"),
        get("/api/v1/history?device=loop-1&metric=speed_kmh&from=yesterday"),
        get("/api/v1/history?device=loop-1&metric=speed_kmh&from=99999-01-01T00:00:00Z"),
        get("/api/v1/history?device=loop-1&metric=speed_kmh&from=-62135596800001"),
        get("/api/v1/history?device=loop-1&metric=speed_kmh&step=-1s"),
        get("/api/v1/history?device=loop-1&metric=speed_kmh&step=NaN"),
        get("/api/v1/history?device=loop-1&metric=speed_kmh&step=999999999999999999999999s"),
        get("/api/v1/history?device=loop-1&metric=speed_kmh&limit=1e999"),
        // Times in every wrong shape, and device and road segment ids that are hostile or
        // name nothing (a typo is a 404 naming it, not an empty history).
        get("/api/v1/history?metric=speed_kmh&from=now-7y"),
        get("/api/v1/history?metric=speed_kmh&from=now-1M"),
        get("/api/v1/history?metric=speed_kmh&from=now-"),
        get("/api/v1/history?metric=speed_kmh&from=now%2B%2B1h"),
        get("/api/v1/history?metric=speed_kmh&from=now-1.5h"),
        get("/api/v1/history?metric=speed_kmh&from=%E2%88%927d"),
        get("/api/v1/history?metric=speed_kmh&from=now-7d%00"),
        get("/api/v1/history?metric=speed_kmh&from=now-99999999999d"),
        get("/api/v1/history?metric=speed_kmh&from=now-999999999w"),
        get("/api/v1/history?metric=speed_kmh&to=2026-02-30"),
        get("/api/v1/history?metric=speed_kmh&to=2026-11-01T24:00:00Z"),
        get("/api/v1/history?metric=speed_kmh&from=2026-11-01&to=2026-11-01"),
        get("/api/v1/history?metric=speed_kmh&segment=ghost-road"),
        get("/api/v1/history?metric=speed_kmh&device=ghost-loop"),
        get("/api/v1/history?metric=speed_kmh&segment=..%2F..%2Fetc%2Fpasswd"),
        get("/api/v1/history?metric=speed_kmh&segment=viale-strozzi%0A"),
        get("/api/v1/history?metric=speed_kmh&segment=x'%3B%20DROP%20TABLE%20road_segments%3B--"),
        get(&format!("/api/v1/history?metric=speed_kmh&segment={}", "s".repeat(5_000))),
        get("/api/v1/latest?device=ghost-loop"),
        get("/api/v1/export/readings?from=tomorrow&to=now"),
        get("/api/v1/export/readings?from=-7d&to=now&segment=ghost-road"),
        get("/api/v1/export/readings?from=-7d&to=now&segment=viale-strozzi,ghost-road"),
        get("/api/v1/export/readings?from=-7d&to=now&segment=%E2%80%AEdaor"),
        get(&format!("/api/v1/export/readings?from=-7d&to=now&segment={}", "a,".repeat(2_000))),
        get("/api/v1/export/readings?from=-7d&to=now&device=loop-1,ghost-loop"),
        get("/api/v1/dead-letters/reasons?since=last%20week"),
        get("/api/v1/segments?x=%00"),
        get("/api/v1/alerts?state=bogus"),
        get("/api/v1/alerts?limit=-1"),
        get("/api/v1/alerts/not-an-id"),
        get("/api/v1/alerts/99999999999999999999999"),
        get("/api/v1/alert-rules?x=1"),
        get("/api/v1/live"),
        ("POST", "/api/v1/alerts/1/ack".into(), "{".into()),
        ("POST", "/api/v1/alerts/1/ack".into(), deep.clone()),
        ("POST", "/api/v1/alerts/1/ack".into(), r#"{"by":7}"#.into()),
        ("POST", "/api/v1/alerts/1/ack".into(), huge.clone()),
        ("POST", "/api/v1/alerts/not-an-id/clear".into(), r#"{"by":"op"}"#.into()),
        ("POST", "/api/v1/alerts/1/clear".into(), "\u{0}\u{1}binary".into()),
        ("PUT", "/api/v1/alert-rules".into(), "{".into()),
        ("PUT", "/api/v1/alert-rules".into(), deep),
        ("PUT", "/api/v1/alert-rules".into(), "[]".into()),
        ("PUT", "/api/v1/alert-rules".into(), r#"{"rules":[{"id":"x'; DROP TABLE alerts;--","threshold":{"metric":"warp","above":1e999}}]}"#.into()),
        ("PUT", "/api/v1/alert-rules".into(), huge),
        ("DELETE", "/api/v1/devices".into(), String::new()),
        // Road operations (more, with concurrent writers, in operations_* below).
        get("/api/v1/operations?status=bogus"),
        get("/api/v1/operations?bbox=1,2,3"),
        get("/api/v1/operations?from=2026-11-02&to=2026-11-01"),
        get("/api/v1/operations/op-nope"),
        get("/api/v1/operations/op-nope/impact?metric=warp"),
        ("POST", "/api/v1/operations".into(), "{".into()),
        ("POST", "/api/v1/operations".into(), r#"{"kind":"meteor","title":"x","severity":"minor","agency":"a","point":[11,43],"planned":{"from":"2026-11-01T00:00:00Z","to":"2026-11-02T00:00:00Z"}}"#.into()),
        ("PATCH", "/api/v1/operations/op-nope".into(), r#"{"title":"x"}"#.into()),
        ("POST", "/api/v1/operations/op-nope/status".into(), r#"{"status":"active"}"#.into()),
        ("POST", "/api/v1/operations/op-nope/notes".into(), r#"{"text":""}"#.into()),
    ];
    let known: [(&str, &str, &str); 0] = [];
    let client_errors = |m: &BTreeMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with("sccr_http_requests_total{") && k.contains("status=\"4"))
            .map(|(_, v)| v)
            .sum()
    };
    let errors_before = client_errors(&metrics(port).await);
    let mut failures = Vec::new();
    for (method, path, body) in &cases {
        if known.contains(&(*method, path.as_str(), body.as_str())) {
            continue;
        }
        let (status, text) = if *method == "GET" {
            http_get(port, path).await.unwrap()
        } else {
            http_send(port, method, path, body).await.unwrap()
        };
        let shown = &path[..path.len().min(80)];
        if !(400..500).contains(&status) {
            failures.push(format!("{method} {shown} → {status} {}", &text[..text.len().min(200)]));
            continue;
        }
        // 404/405 of routes that do not exist come from the router, without a body.
        let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        let has_code = json.as_ref().is_some_and(|j| j["error"]["code"].is_string());
        if !has_code
            && status != 405
            && !(status == 400 && path.ends_with("/live"))
            && status != 413
        {
            failures.push(format!(
                "{method} {shown} → {status} without a JSON error body: {}",
                &text[..text.len().min(200)]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "routes that did not answer bad input with a clear 4xx:\n{}",
        failures.join("\n")
    );
    // Each refusal is counted (unknown routes and methods may be counted under a catch-all).
    let counted = client_errors(&metrics(port).await) - errors_before;
    assert!(
        counted >= (cases.len() - known.len() - 1) as f64,
        "sccr_http_requests_total counted {counted} 4xx answers for {} bad requests",
        cases.len()
    );
    // And the API still serves.
    let (status, _) = http_get(port, "/api/v1/devices").await.unwrap();
    assert_eq!(status, 200);
}

/// Hostile Road Cadastre files for `sccr segments import`: each gets a clear error,
/// imports nothing (the store keeps the segments it had), and the command's peak memory
/// stays bounded (a 10^6-point line is counted, not held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cadastre_files_get_a_clear_error_import_nothing_and_bounded_memory() {
    let db = TestDb::create().await.expect("database");
    let dir = TempDir::new("hostile-cadastre").unwrap();
    let config = dir.path.join("sccr.toml");
    std::fs::write(&config, "").unwrap();
    let pool = PgPool::connect(&db.url).await.expect("pool");
    let feature = |coords: &str| {
        format!(
            r#"{{"type":"FeatureCollection","features":[{{"type":"Feature","properties":{{"id":"x"}},"geometry":{{"type":"LineString","coordinates":{coords}}}}}]}}"#
        )
    };
    let mut million = String::with_capacity(20_000_000);
    million.push('[');
    for i in 0..1_000_000u32 {
        if i > 0 {
            million.push(',');
        }
        million.push_str(&format!("[{:.7},43.77]", 11.0 + f64::from(i) * 1e-7));
    }
    million.push(']');
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "huge coordinates",
            feature("[[1e300,-1e300],[1.7e308,1.7e308]]").into_bytes(),
            "is not a valid position after reprojection",
        ),
        (
            "deeply nested JSON",
            feature(&format!("{}{}", "[".repeat(200_000), "]".repeat(200_000))).into_bytes(),
            "not a GeoJSON FeatureCollection",
        ),
        (
            "a line of a million points",
            feature(&million).into_bytes(),
            "1000000 points, at most 100000",
        ),
        ("binary", vec![0xff, 0xfe, 0x00, 0x13], "UTF-8 text expected"),
        ("not a collection", br#"{"type":"Feature"}"#.to_vec(), "not a GeoJSON FeatureCollection"),
        (
            "an empty collection",
            br#"{"type":"FeatureCollection","features":[]}"#.to_vec(),
            "holds no segment",
        ),
        (
            "numbers as strings everywhere",
            feature(r#"[["11.2","43.7"],["11.3","43.7"]]"#).into_bytes(),
            "not a GeoJSON FeatureCollection",
        ),
    ];
    // Shapefiles and GeoPackages that are not what their name says.
    let mut shp = vec![0u8, 0, 0x27, 0x0a];
    shp.extend(std::iter::repeat_n(0xAB, 200));
    let others: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("a .shp and .dbf of garbage", "hostile.shp", shp, "the Shapefile cannot be read"),
        (
            "a .gpkg that is not SQLite",
            "hostile.gpkg",
            b"GPKG? no".to_vec(),
            "the GeoPackage cannot be read",
        ),
        ("an unknown file type", "hostile.kml", b"<kml/>".to_vec(), "unknown file type \"kml\""),
    ];
    std::fs::write(dir.path.join("hostile.dbf"), [0x03u8, 0xff, 0xff].repeat(50)).unwrap();
    let all = cases.into_iter().map(|(w, b, e)| (w, "hostile.geojson", b, e)).chain(others);
    for (what, name, bytes, expected) in all {
        let path = dir.path.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let mut child = sccr_tests::child_command(&sccr_tests::workspace_bin("sccr").unwrap())
            .args(["segments", "import", "--config"])
            .arg(&config)
            .arg(&path)
            .env("SCCR_DATABASE__URL", &db.url)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The peak resident size (VmHWM) while it runs, sampled until it exits.
        let pid = child.id();
        let mut peak_kib = 0u64;
        let status = loop {
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if let Some(v) = s
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                {
                    peak_kib = peak_kib.max(v.parse().unwrap_or(0));
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!status.success(), "{what}: accepted");
        assert!(err.contains(expected), "{what}: {err}");
        assert!(
            err.contains("nothing imported") || err.contains("holds no segment"),
            "{what}: {err}"
        );
        assert!(
            peak_kib < 512 * 1024,
            "{what}: peak RSS {peak_kib} KiB for a {} byte file",
            bytes.len()
        );
        eprintln!(
            "{what}: {} bytes, peak RSS {} MiB: {}",
            bytes.len(),
            peak_kib / 1024,
            err.lines().last().unwrap_or("")
        );
    }
    let segments: i64 = sqlx::query_scalar("SELECT count(*) FROM road_segments")
        .fetch_one(&pool)
        .await
        .unwrap_or(-1);
    assert!(segments <= 0, "nothing imported: {segments} segments");
}

/// Road operations: every kind of bad payload gets a 4xx JSON error naming the field and
/// stores nothing; two writers of one version: the second gets 412 and nothing is lost;
/// concurrent notes all land; a final operation refuses every change (409).
#[tokio::test]
async fn operations_refuse_hostile_payloads_and_concurrent_writers_lose_nothing() {
    use sccr_tests::http_request_with;
    let e = env("hostile-ops").await;
    let port = e.sccr.api_port;
    let admin = Some(sccr_tests::TEST_ADMIN_TOKEN);
    let window = r#""planned":{"from":"2026-11-01T08:00:00Z","to":"2026-11-01T18:00:00Z"}"#;
    let base = |extra: &str| {
        format!(
            r#"{{"kind":"closure","title":"Lungarno closed","severity":"major","agency":"municipal_police",{window}{extra}}}"#
        )
    };
    let deep = format!("{{\"area\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    // (body, status, the field the error names)
    let cases: Vec<(String, u16, &str)> = vec![
        ("{".into(), 400, "body"),
        ("[]".into(), 400, "body"),
        (deep, 400, "body"),
        (
            base(r#","point":[11.25,43.77],"kind":"meteor""#).replace(r#""kind":"closure","#, ""),
            400,
            "kind",
        ),
        (
            base(r#","point":[11.25,43.77],"severity":"apocalyptic""#)
                .replace(r#""severity":"major","#, ""),
            400,
            "severity",
        ),
        (base(r#","point":[181,43.77]"#), 400, "point"),
        (base(r#","point":["NaN",43.77]"#), 400, "point"),
        (base(r#","point":[11.25,43.77,12]"#), 400, "point"),
        (
            base(r#","point":[11.25,43.77],"title":"\u0000""#)
                .replace(r#""title":"Lungarno closed","#, ""),
            400,
            "title",
        ),
        (
            base(r#","point":[11.25,43.77],"agency":"Police; DROP TABLE operations""#)
                .replace(r#""agency":"municipal_police","#, ""),
            400,
            "agency",
        ),
        (base(r#","point":[11.25,43.77],"status":"ended""#), 400, "status"),
        (base(r#","point":[11.25,43.77],"version":99"#), 400, "version"),
        (base(r#","point":[11.25,43.77],"notes":[]"#), 400, "notes"),
        (
            base(r#","point":[11.25,43.77],"derived_segments":["viale-strozzi"]"#),
            400,
            "derived_segments",
        ),
        (base(r#","segments":["x'; DROP TABLE road_segments;--"]"#), 400, "segments"),
        (base(r#","segments":["ghost-road"]"#), 422, "segments"),
        (base(r#","segments":["viale-strozzi","viale-strozzi"]"#), 400, "segments"),
        (base(""), 422, "segments"),
        (
            base(
                r#","area":{"type":"Polygon","coordinates":[[[11.2,43.7],[11.3,43.8],[11.3,43.7],[11.2,43.8],[11.2,43.7]]]}"#,
            ),
            422,
            "area",
        ),
        (
            base(
                r#","area":{"type":"Polygon","coordinates":[[[11.2,43.7],[11.3,43.7],[11.3,43.8],[11.2,43.8]]]}"#,
            ),
            422,
            "area",
        ),
        (
            base(r#","area":{"type":"LineString","coordinates":[[11.2,43.7],[11.3,43.7]]}"#),
            422,
            "area",
        ),
        (
            base(r#","point":[11.25,43.77]"#).replace(
                window,
                r#""planned":{"from":"2026-11-01T18:00:00Z","to":"2026-11-01T08:00:00Z"}"#,
            ),
            422,
            "planned.to",
        ),
        (
            base(r#","point":[11.25,43.77]"#)
                .replace(window, r#""planned":{"from":"yesterday","to":"2026-11-01T08:00:00Z"}"#),
            422,
            "planned.from",
        ),
    ];
    let mut failures = Vec::new();
    for (body, want, field) in &cases {
        let (status, text) =
            http_request_with(port, "POST", "/api/v1/operations", admin, &[], body).await.unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if status != *want || json["error"]["param"] != *field {
            failures.push(format!("{} → {status} {text}", &body[..body.len().min(120)]));
        }
    }
    assert!(failures.is_empty(), "operations' bad input:\n{}", failures.join("\n"));
    assert_eq!(count(&e.pool, "SELECT count(*) FROM operations").await, 0, "nothing stored");

    // A good one, then two writers of version 1.
    let (status, text) = http_request_with(
        port,
        "POST",
        "/api/v1/operations",
        admin,
        &[],
        &base(r#","segments":["viale-strozzi"]"#),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{text}");
    let op: serde_json::Value = serde_json::from_str(&text).unwrap();
    let path = format!("/api/v1/operations/{}", op["id"].as_str().unwrap());
    let (status, _) =
        http_request_with(port, "PATCH", &path, admin, &[], r#"{"title":"no If-Match"}"#)
            .await
            .unwrap();
    assert_eq!(status, 428);
    let (a, b) = tokio::join!(
        http_request_with(
            port,
            "PATCH",
            &path,
            admin,
            &[("If-Match", "\"1\"")],
            r#"{"title":"first"}"#
        ),
        http_request_with(
            port,
            "PATCH",
            &path,
            admin,
            &[("If-Match", "\"1\"")],
            r#"{"title":"second"}"#
        ),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412], "{a:?} {b:?}");
    let winner = if a.0 == 200 { "first" } else { "second" };
    // Notes need no version: concurrent ones all land.
    let notes = (0..8).map(|i| {
        let body = format!(r#"{{"text":"note {i}"}}"#);
        let path = format!("{path}/notes");
        async move { http_request_with(port, "POST", &path, admin, &[], &body).await.unwrap().0 }
    });
    let answers = futures_util::future::join_all(notes).await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    let (_, text) = http_get(port, &path).await.unwrap();
    let now: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(now["title"], winner);
    assert_eq!(now["notes"].as_array().unwrap().len(), 8, "no note lost");
    assert_eq!(now["version"], 10);
    let (_, text) = http_get(port, &format!("{path}/history")).await.unwrap();
    let trail: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(trail["changes"].as_array().unwrap().len(), 10, "one trail entry per change");
    // Illegal moves, then final.
    let status_of = |body: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let path = format!("{path}/status");
        async move { http_request_with(port, "POST", &path, admin, headers, body).await.unwrap() }
    };
    assert_eq!(status_of(r#"{"status":"ended"}"#, &[]).await.0, 409, "planned cannot end");
    assert_eq!(status_of(r#"{"status":"active"}"#, &[("If-Match", "\"1\"")]).await.0, 412);
    assert_eq!(status_of(r#"{"status":"active","at":"2026-11-01T08:00:00Z"}"#, &[]).await.0, 200);
    let (status, text) = status_of(r#"{"status":"ended","at":"2026-11-01T07:00:00Z"}"#, &[]).await;
    assert_eq!(status, 422, "an end before the start: {text}");
    assert_eq!(status_of(r#"{"status":"ended"}"#, &[]).await.0, 200);
    let (_, text) = http_get(port, &path).await.unwrap();
    let ended: serde_json::Value = serde_json::from_str(&text).unwrap();
    let v = format!("\"{}\"", ended["version"]);
    let headers = [("If-Match", v.as_str())];
    for (method, p, body) in [
        ("PATCH", path.clone(), r#"{"title":"late"}"#),
        ("POST", format!("{path}/notes"), r#"{"text":"late"}"#),
        ("POST", format!("{path}/status"), r#"{"status":"cancelled"}"#),
    ] {
        let (status, text) =
            http_request_with(port, method, &p, admin, &headers, body).await.unwrap();
        assert_eq!(status, 409, "{method} {p} on an ended operation: {text}");
    }
    let (_, text) = http_get(port, &path).await.unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), ended, "nothing changed");
    // Outbox: one event per change, in order.
    let events: Vec<String> =
        sqlx::query_scalar("SELECT type FROM outbox WHERE subject = $1 ORDER BY id")
            .bind(format!("operation/{}", op["id"].as_str().unwrap()))
            .fetch_all(&e.pool)
            .await
            .unwrap();
    assert_eq!(events.len(), 12, "{events:?}");
    assert_eq!(events[0], "it.firenze.sccr.operation.created");
    assert_eq!(events[11], "it.firenze.sccr.operation.status_changed");
}
