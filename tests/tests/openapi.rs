//! The API against its own OpenAPI document: schemathesis (PyPI) generates requests for
//! every operation of a running `sccr serve` (real broker, real PostgreSQL) and fails on
//! any 5xx, an undocumented status, a wrong content type, a body that breaks its schema,
//! or schema-valid data refused as invalid (400). Before it, the alert-rule schemas are
//! checked against the rules of the API's tests (`tests/python/rule_schema_check.py`), and
//! the schemas' own examples are sent to the server, which must take each.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sccr_tests::{
    http_get, http_request_with, http_send, python_venv, workspace_root, Broker, Sccr, TempDir,
    TestDb, TEST_ADMIN_TOKEN,
};

/// Rules documents and single rules from the API's tests and the README, as the server
/// takes or refuses them.
fn rule_cases() -> serde_json::Value {
    serde_json::json!({
        "documents": {
            "accepted": [
                {"air_quality_defaults": false, "rules": [{"id": "congestion", "severity": "critical", "scope": {"segments": ["viale-strozzi"]}, "los": {"at_or_worse": "E", "for": "5m"}}]},
                {"rules": [{"id": "congestion", "severity": "critical", "los": {"at_or_worse": "E", "for": "5m"}}]},
                {"rules": [{"id": "no2-high", "severity": "warning", "threshold": {"metric": "no2_ugm3", "above": 200.0, "clear": 180.0, "for": "10m"}}]},
                {"rules": [{"id": "offline", "severity": "warning", "offline": {"silence_factor": 3.0, "min_silence": "1m", "last_will": true}},
                           {"id": "stuck", "severity": "info", "flatline": {"metric": "speed_kmh", "epsilon": 0.01, "readings": 30}},
                           {"id": "jump", "severity": "info", "rate_of_change": {"metric": "speed_kmh", "max_per_minute": 40.0, "for": "1m"}},
                           {"id": "pm10", "severity": "warning", "air_quality": {"metric": "pm10_ugm3"}}]},
                {"rules": [{"id": "slow", "severity": "warning", "scope": {"segments": ["viale-strozzi"]}, "threshold": {"metric": "flow_vph", "on": "segment", "above": 2000.0}},
                           {"id": "slow-loops", "severity": "info", "scope": {"kind": "traffic_loop"}, "threshold": {"metric": "speed_kmh", "on": "device", "below": 5.0}}]},
            ],
            "refused": [
                {"rules": [{"id": "Bad Id", "severity": "info", "threshold": {"metric": "warp", "above": 1}}]},
                {"rules": [{"id": "x", "severity": "info", "threshold": {"metric": "speed_kmh", "abov": 1}}]},
                {"rules": [{"id": "x", "severity": "info", "threshold": {"metric": "speed_kmh", "above": 1, "below": 0}}]},
                {"rules": [{"id": "x", "severity": "info"}]},
                {"rules": [{"id": "x", "severity": "info", "scope": {"devices": ["loop-1"]}, "los": {"at_or_worse": "E"}}]},
                {"rules": [{"id": "x", "severity": "info", "air_quality": {"metric": "speed_kmh"}}]},
                {"rules": [{"id": "x", "severity": "info", "threshold": {"metric": "no2_ugm3", "on": "segment", "above": 1}}]},
                {"rules": [{"id": "x", "severity": "info", "threshold": {"metric": "flow_vph", "above": 1}}]},
                {"rules": [{"id": "x", "severity": "info", "scope": {"devices": ["loop-1"]}, "threshold": {"metric": "speed_kmh", "on": "segment", "below": 1}}]},
            ],
        },
        "rules": {
            "accepted": [
                {"severity": "warning", "threshold": {"metric": "no2_ugm3", "above": 150.0, "for": "10m"}},
                {"id": "no2-watch", "severity": "critical", "threshold": {"metric": "no2_ugm3", "above": 150.0, "for": "10m"}},
            ],
            "refused": [
                {"severity": "info", "threshold": {"metric": "warp", "above": 1}},
                {"severity": "loud", "threshold": {"metric": "no2_ugm3", "above": 1}},
            ],
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_schemas_agree_with_the_server() {
    let Some(venv) = python_venv("py-schemathesis", &["schemathesis==4.32.5"], "schemathesis")
    else {
        assert!(std::env::var("CI").is_err(), "schemathesis (and jsonschema_rs) must install");
        eprintln!("!!! SKIPPED: schemathesis could not be installed from PyPI");
        return;
    };
    let broker = Broker::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let dir = TempDir::new("rule-schema").unwrap();
    let sccr = Sccr::serve(broker.port, &db.url, &dir.path, &[]).unwrap();
    sccr.wait_healthy().await;
    let port = sccr.api_port;
    let (st, document) = http_get(port, "/api/v1/openapi.json").await.unwrap();
    assert_eq!(st, 200);
    std::fs::write(dir.path.join("openapi.json"), &document).unwrap();
    let cases = rule_cases();
    std::fs::write(dir.path.join("cases.json"), cases.to_string()).unwrap();
    let out = tokio::process::Command::new(venv.join("bin/python"))
        .arg(workspace_root().join("tests/python/rule_schema_check.py"))
        .arg(dir.path.join("openapi.json"))
        .arg(dir.path.join("cases.json"))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let examples: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // The device the schema's examples name exists (rules naming missing ones are 422).
    let (st, body) = http_send(
        port,
        "POST",
        "/api/v1/devices",
        r#"{"id":"loop-viale-strozzi-0","kind":"traffic_loop","segment":"viale-strozzi"}"#,
    )
    .await
    .unwrap();
    assert_eq!(st, 201, "{body}");

    // What the schema accepts, the server takes; what it refuses, the server refuses.
    let put_document = |body: String| async move {
        http_send(port, "PUT", "/api/v1/alert-rules", &body).await.unwrap()
    };
    let put_rule = |id: String, body: String| async move {
        http_send(port, "PUT", &format!("/api/v1/alert-rules/{id}"), &body).await.unwrap()
    };
    let documents = cases["documents"]["accepted"].as_array().unwrap().iter();
    for doc in documents.chain(examples["documents"].as_array().unwrap()) {
        let (st, body) = put_document(doc.to_string()).await;
        assert_eq!(st, 200, "{doc} → {body}");
    }
    for doc in cases["documents"]["refused"].as_array().unwrap() {
        let (st, body) = put_document(doc.to_string()).await;
        assert_eq!(st, 400, "{doc} → {body}");
    }
    let rules = cases["rules"]["accepted"].as_array().unwrap().iter();
    for (i, rule) in rules.chain(examples["rules"].as_array().unwrap()).enumerate() {
        let id = rule["id"].as_str().map_or_else(|| format!("example-{i}"), str::to_owned);
        let (st, body) = put_rule(id, rule.to_string()).await;
        assert!(st == 201 || st == 200, "{rule} → {st} {body}");
    }
    for rule in cases["rules"]["refused"].as_array().unwrap() {
        let (st, body) = put_rule("x".into(), rule.to_string()).await;
        assert_eq!(st, 400, "{rule} → {body}");
    }
    // Beyond the schema: a clear on the wrong side of its level.
    let (st, body) = put_rule(
        "wrong-side".into(),
        r#"{"severity":"info","threshold":{"metric":"no2_ugm3","above":100,"clear":120}}"#.into(),
    )
    .await;
    assert_eq!(st, 422, "{body}");
    assert!(body.contains(r#""path":"threshold.clear""#), "the body's own path: {body}");
    // Beyond the schema: a segment that does not exist, a device kind that does not.
    for (rule, path) in [
        (
            r#"{"severity":"info","scope":{"segments":["viale-strozi"]},"los":{"at_or_worse":"E"}}"#,
            "scope.segments[0]",
        ),
        (r#"{"severity":"info","scope":{"kind":"air_qualty"},"offline":{}}"#, "scope.kind"),
    ] {
        let (st, body) = put_rule("beyond".into(), rule.into()).await;
        assert_eq!(st, 422, "{rule} → {body}");
        assert!(
            body.contains(&format!(r#""path":"{path}""#)) && body.contains("did you mean"),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let Some(venv) = python_venv("py-schemathesis", &["schemathesis==4.32.5"], "schemathesis")
    else {
        assert!(
            std::env::var("CI").is_err(),
            "schemathesis could not be installed from PyPI; under CI this test must run"
        );
        eprintln!(
            "!!! SKIPPED: schemathesis could not be installed from PyPI (python3 -m venv + pip)"
        );
        return;
    };
    let broker = Broker::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let dir = TempDir::new("openapi").unwrap();
    // No failure limit: schemathesis sends wrong tokens on purpose.
    let sccr = Sccr::serve(
        broker.port,
        &db.url,
        &dir.path,
        &[("SCCR_API__AUTH_FAILURES_PER_MINUTE", "0")],
    )
    .unwrap();
    sccr.wait_healthy().await;
    let url = format!("http://127.0.0.1:{}/api/v1/openapi.json", sccr.api_port);
    let config = dir.path.join("schemathesis.toml");
    std::fs::write(
        &config,
        "[checks.positive_data_acceptance]\n\
         expected-statuses = [\"2xx\", \"401\", \"403\", \"404\", \"409\", \"412\", \"422\", \"428\", \"429\", \"5xx\"]\n",
    )
    .unwrap();
    let run = tokio::process::Command::new(venv.join("bin/schemathesis"))
        .current_dir(&dir.path)
        .args(["--config-file", &config.to_string_lossy(), "run", &url])
        .args(["--header", &format!("Authorization: Bearer {TEST_ADMIN_TOKEN}")])
        // Every check, "schema-valid data must be accepted" included. What a JSON schema
        // cannot say (parameters that contradict each other, a reference to a road segment
        // that does not exist, rules that contradict each other) is answered 422, which
        // each such operation documents; schema-valid data is never answered 400.
        .args(["--checks", "all", "--max-examples", "25", "--seed", "1"])
        .args(["--exclude-path", "/api/v1/live", "--suppress-health-check", "all"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finishes")
        .expect("schemathesis runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis failed:\n{text}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sccr.log_text()
    );
    assert!(text.contains("Tested: "), "{text}");
    let summary: Vec<&str> =
        text.lines().filter(|l| l.contains("passed") || l.contains("Tested:")).collect();
    eprintln!("schemathesis:\n{}", summary.join("\n"));
}

const SEGMENT: &str = "via-test-docs";
const DEVICES: [&str; 2] = ["loop-docs-a", "loop-docs-b"];

/// Short windows, and congestion on the test segment raises at once (free flow 50 km/h:
/// 10 km/h is LOS F).
const LIVE_CONFIG: &str = r#"
[stream]
window = "2s"
watermark_delay = "200ms"
allowed_lateness = "2s"

[alerts]
air_quality_defaults = false

[[alerts.rules]]
id = "congestion"
severity = "critical"
scope = { segments = ["via-test-docs"] }
los = { at_or_worse = "E", for = "0s" }
"#;

/// Every frame of one live session, as it came.
type Frames = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

fn frame_types(frames: &Frames) -> std::collections::BTreeSet<String> {
    let frames = frames.lock().unwrap();
    frames.iter().filter_map(|f| f["type"].as_str().map(str::to_owned)).collect()
}

/// The answers, live frames and examples of a running server against its OpenAPI
/// document (`tests/python/answer_check.py`, JSON Schema 2020-12 with jsonschema_rs):
/// every operation's success answer as a real server gives it, with data in it (a
/// raised alert, windows, segment states, a dead letter, a command, a webhook), every
/// message type of a live session, and every example the document holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_live_frames_and_examples_match_the_documented_schemas() {
    use futures_util::{SinkExt, StreamExt};
    use sccr_tests::{compact, loop_on, publish_all, telemetry_topic, test_segment, wait_for};
    use serde_json::{json, Value};
    use tokio_tungstenite::tungstenite::Message;

    let Some(venv) = python_venv("py-schemathesis", &["schemathesis==4.32.5"], "jsonschema_rs")
    else {
        assert!(std::env::var("CI").is_err(), "jsonschema_rs (with schemathesis) must install");
        eprintln!("!!! SKIPPED: jsonschema_rs could not be installed from PyPI");
        return;
    };
    let broker = Broker::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let store = store::Store::connect(&db.url, &store::StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store.upsert_segments(&[test_segment(SEGMENT)]).await.unwrap();
    let devices: Vec<store::DeviceRecord> = DEVICES.iter().map(|d| loop_on(d, SEGMENT)).collect();
    store.upsert_devices(&devices).await.unwrap();
    store.close().await;
    let dir = TempDir::new("answers").unwrap();
    let sccr = Sccr::serve_with_config(broker.port, &db.url, &dir.path, LIVE_CONFIG, &[]).unwrap();
    sccr.wait_healthy().await;
    let port = sccr.api_port;
    let mqtt = broker.port;

    // A live session asking for everything.
    let (ws, _) = tokio_tungstenite::connect_async(sccr_tests::live_url(port)).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    let frames: Frames = Frames::default();
    let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let reader = {
        let (frames, arrived) = (frames.clone(), arrived.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = rx.next().await {
                if let Ok(v) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) {
                    frames.lock().unwrap().push(v);
                    arrived.notify_one();
                }
            }
        })
    };
    let mut sent = Vec::new();
    let mut message = |m: Value| {
        sent.push(m.clone());
        Message::Text(m.to_string().into())
    };
    tx.send(message(json!({"type": "subscribe", "segments": [], "alerts": true, "kpi": true})))
        .await
        .unwrap();

    // Congestion until the alert is raised (a report every 300 ms at most); a refused
    // reading makes a dead letter.
    let raised = |frames: &Frames| {
        let frames = frames.lock().unwrap();
        frames.iter().any(|f| f["type"] == "alert" && f["alert"]["state"] == "raised")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut seq = 0u64;
    while !raised(&frames) {
        assert!(tokio::time::Instant::now() < deadline, "no raised alert within 40 s");
        seq += 1;
        let t = telemetry::EventTime::now().millis();
        let readings = [("speed_kmh", 10.0), ("vehicle_count", 4.0), ("occupancy_pct", 20.0)];
        let messages =
            DEVICES.iter().map(|d| (telemetry_topic(d), compact(seq, t, &readings))).collect();
        publish_all(mqtt, &format!("docs-pub-{seq}"), messages).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(300), arrived.notified()).await;
    }
    publish_all(
        mqtt,
        "docs-bad",
        vec![(
            telemetry_topic(DEVICES[0]),
            br#"{"ts":1,"readings":[{"m":"speed_kmh","v":400}]}"#.to_vec(),
        )],
    )
    .await
    .unwrap();
    for m in [
        json!({"type": "ping"}),
        json!({"type": "unsubscribe", "devices": [DEVICES[1]], "segments": [SEGMENT]}),
        json!({"type": "unsubscribe"}),
    ] {
        tx.send(message(m)).await.unwrap();
    }
    // Two the server refuses (not in `sent`: the schema refuses them too).
    for bad in [r#"{"type":"subscribe","metrics":["speed"]}"#, "not json"] {
        tx.send(Message::Text(bad.into())).await.unwrap();
    }
    let wanted = [
        "snapshot",
        "delta",
        "window",
        "segment",
        "alert",
        "kpi",
        "heartbeat",
        "pong",
        "error",
        "unsubscribed",
    ];
    wait_for("every server message type", Duration::from_secs(30), || {
        let seen = frame_types(&frames);
        async move { wanted.iter().all(|t| seen.contains(*t)).then_some(()) }
    })
    .await;

    // The REST answers, each with the template of its operation.
    let mut answers: Vec<Value> = Vec::new();
    let call = |method: &'static str, template: &'static str, path: String, body: Value| {
        let (port, body) = (port, if body.is_null() { String::new() } else { body.to_string() });
        async move {
            let (status, text) = http_send(port, method, &path, &body).await.unwrap();
            let parsed: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path} → {status}: not JSON ({e}): {text}"));
            (json!({"method": method, "path": template, "status": status, "body": parsed}), parsed)
        }
    };
    macro_rules! get {
        ($template:literal, $path:expr) => {{
            let (a, v) = call("GET", $template, $path.to_string(), Value::Null).await;
            assert_eq!(a["status"], 200, "{a}");
            answers.push(a);
            v
        }};
    }
    macro_rules! send {
        ($method:literal, $template:literal, $path:expr, $body:expr, $status:literal) => {{
            let (a, v) = call($method, $template, $path.to_string(), $body).await;
            assert_eq!(a["status"], $status, "{a}");
            answers.push(a);
            v
        }};
    }
    get!("/healthz", "/healthz");
    get!("/readyz", "/readyz");
    get!("/api/v1/me", "/api/v1/me");
    let token = send!(
        "POST",
        "/api/v1/tokens",
        "/api/v1/tokens",
        json!({"name": "wall-9", "role": "operator"}),
        201
    );
    get!("/api/v1/tokens", "/api/v1/tokens");
    send!(
        "DELETE",
        "/api/v1/tokens/{id}",
        format!("/api/v1/tokens/{}", token["id"]),
        Value::Null,
        200
    );
    let device = send!(
        "POST",
        "/api/v1/devices",
        "/api/v1/devices",
        json!({"id": "loop-docs-new", "kind": "traffic_loop", "segment": SEGMENT}),
        201
    );
    assert_eq!(device["mqtt"]["username"], "loop-docs-new");
    get!("/api/v1/devices", "/api/v1/devices?limit=2");
    let one = get!("/api/v1/devices/{id}", format!("/api/v1/devices/{}", DEVICES[0]));
    assert!(!one["device"]["latest"].as_array().unwrap().is_empty(), "{one}");
    send!(
        "PATCH",
        "/api/v1/devices/{id}",
        "/api/v1/devices/loop-docs-new",
        json!({"kind": null, "gateway": DEVICES[0]}),
        200
    );
    send!(
        "POST",
        "/api/v1/devices/{id}/credentials",
        "/api/v1/devices/loop-docs-new/credentials",
        Value::Null,
        200
    );
    send!("DELETE", "/api/v1/devices/{id}", "/api/v1/devices/loop-docs-new", Value::Null, 200);
    get!("/api/v1/latest", "/api/v1/latest");
    let raw = get!(
        "/api/v1/history",
        format!("/api/v1/history?metric=speed_kmh&device={}&resolution=raw", DEVICES[0])
    );
    assert!(!raw["points"].as_array().unwrap().is_empty(), "{raw}");
    get!(
        "/api/v1/history",
        format!("/api/v1/history?metric=speed_kmh&segment={SEGMENT}&step=1m&fill=null")
    );
    get!(
        "/api/v1/history",
        "/api/v1/history?metric=vehicle_count&bbox=11.2,43.7,11.3,43.8&agg=sum&fill=previous"
    );
    get!("/api/v1/baselines", format!("/api/v1/baselines?metric=speed_kmh&segment={SEGMENT}"));
    get!("/api/v1/forecasts", format!("/api/v1/forecasts?segment={SEGMENT}"));
    get!("/api/v1/forecasts", "/api/v1/forecasts?degrading=true");
    let unflagged = get!(
        "/api/v1/history",
        format!(
            "/api/v1/history?metric=speed_kmh&device={}&step=1m&exclude_flagged=true",
            DEVICES[0]
        )
    );
    assert_eq!(unflagged["excluded"]["readings"], 0, "{unflagged}");
    let quality =
        get!("/api/v1/devices/{id}/quality", format!("/api/v1/devices/{}/quality", DEVICES[0]));
    assert_eq!(quality["score"], 1.0, "{quality}");
    get!("/api/v1/quality", "/api/v1/quality?kind=traffic_loop&window=1h");
    let segments = get!("/api/v1/segments", "/api/v1/segments");
    assert_eq!(segments["features"][0]["properties"]["los"], "F", "{segments}");
    get!("/api/v1/catalogue", "/api/v1/catalogue");
    get!("/api/v1/map/devices", "/api/v1/map/devices");
    get!("/api/v1/wall", "/api/v1/wall");
    let alerts = get!("/api/v1/alerts", "/api/v1/alerts?state=open");
    let id = alerts["alerts"][0]["id"].as_i64().unwrap();
    send!(
        "POST",
        "/api/v1/alerts/{id}/ack",
        format!("/api/v1/alerts/{id}/ack"),
        json!({"note": "unit dispatched"}),
        200
    );
    send!(
        "POST",
        "/api/v1/alerts/{id}/shelve",
        format!("/api/v1/alerts/{id}/shelve"),
        json!({"reason": "roadworks", "for": "1h"}),
        200
    );
    send!(
        "POST",
        "/api/v1/alerts/{id}/unshelve",
        format!("/api/v1/alerts/{id}/unshelve"),
        json!({}),
        200
    );
    send!(
        "POST",
        "/api/v1/alerts/{id}/clear",
        format!("/api/v1/alerts/{id}/clear"),
        json!({"note": "lane reopened"}),
        200
    );
    let detail = get!("/api/v1/alerts/{id}", format!("/api/v1/alerts/{id}"));
    assert!(detail["events"].as_array().unwrap().len() >= 5, "{detail}");
    let rules = get!("/api/v1/alert-rules", "/api/v1/alert-rules");
    get!("/api/v1/alert-rules/{id}", "/api/v1/alert-rules/congestion");
    send!(
        "PUT",
        "/api/v1/alert-rules/{id}",
        "/api/v1/alert-rules/no2-watch",
        json!({"severity": "warning", "threshold": {"metric": "no2_ugm3", "above": 150.0, "for": "10m"}}),
        201
    );
    send!("DELETE", "/api/v1/alert-rules/{id}", "/api/v1/alert-rules/no2-watch", Value::Null, 200);
    send!(
        "POST",
        "/api/v1/alert-rules",
        "/api/v1/alert-rules",
        json!({"id": "pm10-watch", "severity": "info", "air_quality": {"metric": "pm10_ugm3"}}),
        201
    );
    send!("DELETE", "/api/v1/alert-rules/{id}", "/api/v1/alert-rules/pm10-watch", Value::Null, 200);
    send!("PUT", "/api/v1/alert-rules", "/api/v1/alert-rules", rules["rules"].clone(), 200);
    wait_for("the dead letter", Duration::from_secs(20), || async {
        let (_, text) = http_get(port, "/api/v1/dead-letters").await.ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        (!v["dead_letters"].as_array()?.is_empty()).then_some(())
    })
    .await;
    get!("/api/v1/dead-letters", "/api/v1/dead-letters");
    get!("/api/v1/dead-letters/reasons", "/api/v1/dead-letters/reasons");
    let command = send!(
        "POST",
        "/api/v1/devices/{id}/commands",
        format!("/api/v1/devices/{}/commands", DEVICES[0]),
        json!({"name": "set_interval", "args": {"interval": "10s"}}),
        201
    );
    get!("/api/v1/devices/{id}/commands", format!("/api/v1/devices/{}/commands", DEVICES[0]));
    get!("/api/v1/commands/{id}", format!("/api/v1/commands/{}", command["id"].as_str().unwrap()));
    let hook = send!(
        "POST",
        "/api/v1/webhooks",
        "/api/v1/webhooks",
        json!({"url": "http://receiver.invalid/sccr", "secret": "a-long-shared-secret-0123"}),
        201
    );
    let hook = hook["id"].as_i64().unwrap();
    get!("/api/v1/webhooks", "/api/v1/webhooks");
    get!("/api/v1/webhooks/{id}", format!("/api/v1/webhooks/{hook}"));
    send!(
        "PATCH",
        "/api/v1/webhooks/{id}",
        format!("/api/v1/webhooks/{hook}"),
        json!({"enabled": false}),
        200
    );
    get!("/api/v1/webhooks/{id}/deliveries", format!("/api/v1/webhooks/{hook}/deliveries"));
    send!(
        "POST",
        "/api/v1/webhooks/{id}/redeliver",
        format!("/api/v1/webhooks/{hook}/redeliver"),
        Value::Null,
        200
    );
    get!("/api/v1/audit", "/api/v1/audit");
    // Road operations (a PATCH needs If-Match: sent by hand).
    let op = send!(
        "POST",
        "/api/v1/operations",
        "/api/v1/operations",
        json!({"kind": "roadworks", "title": "Works", "severity": "moderate", "agency": "utilities",
               "point": [11.2490, 43.7805],
               "planned": {"from": "2026-11-02T07:00:00Z", "to": "2026-11-06T18:00:00Z"}}),
        201
    );
    let op_path = format!("/api/v1/operations/{}", op["id"].as_str().unwrap());
    get!("/api/v1/operations", "/api/v1/operations");
    get!("/api/v1/operations/{id}", op_path);
    let (status, text) = http_request_with(
        port,
        "PATCH",
        &op_path,
        Some(TEST_ADMIN_TOKEN),
        &[("If-Match", "\"1\"")],
        r#"{"severity":"major"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    answers.push(json!({"method": "PATCH", "path": "/api/v1/operations/{id}", "status": status, "body": body}));
    send!(
        "POST",
        "/api/v1/operations/{id}/status",
        format!("{op_path}/status"),
        json!({"status": "active"}),
        200
    );
    send!(
        "POST",
        "/api/v1/operations/{id}/notes",
        format!("{op_path}/notes"),
        json!({"text": "Barriers in place"}),
        200
    );
    get!("/api/v1/operations/{id}/history", format!("{op_path}/history"));
    get!("/api/v1/operations/{id}/impact", format!("{op_path}/impact"));
    // An error answer has the documented error body.
    send!("GET", "/api/v1/alerts/{id}", "/api/v1/alerts/999999", Value::Null, 404);
    send!("GET", "/api/v1/history", "/api/v1/history?metric=speed", Value::Null, 400);
    reader.abort();

    let (st, document) = http_get(port, "/api/v1/openapi.json").await.unwrap();
    assert_eq!(st, 200);
    std::fs::write(dir.path.join("openapi.json"), &document).unwrap();
    let frames: Vec<Value> = frames.lock().unwrap().clone();
    let cases = json!({"answers": answers, "frames": frames, "sent": sent});
    std::fs::write(dir.path.join("cases.json"), cases.to_string()).unwrap();
    let out = tokio::process::Command::new(venv.join("bin/python"))
        .arg(workspace_root().join("tests/python/answer_check.py"))
        .arg(dir.path.join("openapi.json"))
        .arg(dir.path.join("cases.json"))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let covered: Value = serde_json::from_slice(&out.stdout).unwrap();
    let types: Vec<&str> =
        covered["frame_types"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(wanted.iter().all(|t| types.contains(t)), "{covered}");
    // Every operation that answers JSON was called, but these.
    let exempt = [
        "GET /api/v1/openapi.json",    // the document itself
        "GET /api/v1/export/readings", // streamed rows, CSV by default
        "POST /api/v1/webhooks/{id}/deliveries/{event}/redeliver", // needs a dead delivery; answers as redeliver
    ];
    let doc: Value = serde_json::from_str(&document).unwrap();
    let called: Vec<&str> =
        covered["operations"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let json_answer = op["responses"].as_object().unwrap().iter().any(|(status, r)| {
                let schema = &r["content"]["application/json"]["schema"];
                status.starts_with('2') && schema.is_object() && *schema != json!({})
            });
            let name = format!("{} {path}", method.to_uppercase());
            if json_answer && !exempt.contains(&name.as_str()) {
                assert!(called.contains(&name.as_str()), "{name} was not checked");
            }
        }
    }
    eprintln!("checked: {covered}");
}
