//! Road operations end to end, through a real Mosquitto, a real PostgreSQL and the real
//! `sccr serve` process: an active closure suppresses the alerts of the detectors on its
//! segment by design (recorded suppressed, no outbox event: nobody is paged), the wall
//! gets the operation's changes live, and ending the operation lifts the suppression so
//! the alert still holding is shown again.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sccr_tests::{
    compact, http_get, http_send, loop_on, publish_all, telemetry_topic, test_segment, wait_for,
    wait_pipeline_ready, Broker, Sccr, TempDir, TestDb,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use store::{DeviceRecord, Store, StoreOptions};
use telemetry::EventTime;

const SEGMENT: &str = "via-test-closure";
const OTHER: &str = "via-test-open";
const DEVICE: &str = "loop-closure-a";
const OTHER_DEVICE: &str = "loop-open-a";

/// A critical rule on low speed for both detectors; the registry (and the operations with
/// it) re-read every second.
const CONFIG: &str = r#"
[stream]
registry_refresh = "1s"

[alerts]
air_quality_defaults = false

[[alerts.rules]]
id = "stopped"
severity = "critical"
scope = { devices = ["loop-closure-a", "loop-open-a"] }
threshold = { metric = "speed_kmh", below = 15.0 }
"#;

async fn get_json(port: u16, path: &str) -> Option<Value> {
    let (status, body) = http_get(port, path).await.ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

async fn metric_value(port: u16, name: &str) -> f64 {
    sccr_tests::metric(port, name).await.unwrap_or(0.0)
}

/// The open alert of `device`, once there is one matching `pred`.
async fn alert_of(port: u16, device: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, Duration::from_secs(30), || async {
        let all = get_json(port, "/api/v1/alerts?state=raised").await?;
        all["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["subject"]["device"] == device && pred(a))
            .cloned()
    })
    .await
}

#[tokio::test]
async fn an_active_closure_suppresses_alerts_on_its_segment_until_it_ends() {
    let broker = Broker::start().await.expect("mosquitto");
    let db = TestDb::create().await.expect("database");
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("store");
    store.migrate().await.expect("migrate");
    store.upsert_segments(&[test_segment(SEGMENT), test_segment(OTHER)]).await.expect("segments");
    let devices: Vec<DeviceRecord> = vec![loop_on(DEVICE, SEGMENT), loop_on(OTHER_DEVICE, OTHER)];
    store.upsert_devices(&devices).await.expect("devices");
    store.close().await;
    let pool = PgPool::connect(&db.url).await.expect("pool");
    let dir = TempDir::new("operations-e2e").expect("tempdir");
    let sccr = Sccr::serve_with_config(broker.port, &db.url, &dir.path, CONFIG, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &pool).await;
    let port = sccr.api_port;

    // A wall watching.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(sccr_tests::live_url(port)).await.expect("websocket");
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        r#"{"type":"subscribe","values":false,"alerts":true}"#.into(),
    ))
    .await
    .unwrap();

    // The closure, active now.
    let from = EventTime(EventTime::now().millis() - 60_000).to_rfc3339();
    let to = EventTime(EventTime::now().millis() + 3_600_000).to_rfc3339();
    let body = format!(
        r#"{{"kind":"closure","title":"Burst water main","severity":"major","agency":"utilities","segments":["{SEGMENT}"],"status":"active","planned":{{"from":"{from}","to":"{to}"}}}}"#
    );
    let updates_before = metric_value(port, "sccr_stream_registry_updates_total").await;
    let (status, text) = http_send(port, "POST", "/api/v1/operations", &body).await.unwrap();
    assert_eq!(status, 201, "{text}");
    let op: Value = serde_json::from_str(&text).unwrap();
    let id = op["id"].as_str().unwrap().to_owned();
    assert_eq!((op["status"].as_str(), op["closes_road"].as_bool()), (Some("active"), Some(true)));

    // The wall is told.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the operation frame in time")
            .expect("socket open")
            .expect("frame");
        let v: Value = serde_json::from_str(msg.to_text().unwrap_or("")).unwrap_or_default();
        if v["type"] == "operation" {
            assert_eq!(v["operation"]["id"], id.as_str());
            break;
        }
    }
    // The stream has the operation once the registry was read again after it.
    wait_for("the registry re-read", Duration::from_secs(30), || async {
        (metric_value(port, "sccr_stream_registry_updates_total").await > updates_before)
            .then_some(())
    })
    .await;

    // Both detectors report a standstill.
    let t0 = EventTime::now().millis();
    let messages = [DEVICE, OTHER_DEVICE]
        .iter()
        .map(|d| (telemetry_topic(d), compact(1, t0, &[("speed_kmh", 3.0)])))
        .collect();
    publish_all(broker.port, "pub-closure", messages).await.expect("publish");

    // On the closed segment: recorded, suppressed by the operation, nobody paged.
    let closed =
        alert_of(port, DEVICE, "the suppressed alert", |a| !a["suppressed"].is_null()).await;
    assert_eq!(closed["suppressed"]["reason"], "operation", "{closed}");
    // Elsewhere: raised as usual.
    let open = alert_of(port, OTHER_DEVICE, "the other alert", |_| true).await;
    assert!(open["suppressed"].is_null(), "{open}");
    let raised_events = |subject: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM outbox WHERE type = 'it.firenze.sccr.alert.raised' AND subject = $1",
            )
            .bind(subject)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let closed_id = closed["id"].as_i64().unwrap();
    assert_eq!(
        raised_events(format!("alert/{closed_id}")).await,
        0,
        "a suppressed raise pages no one"
    );
    assert_eq!(raised_events(format!("alert/{}", open["id"])).await, 1);
    // Its raise names the operation that explains it.
    let raise_note: Option<String> = sqlx::query_scalar(
        "SELECT note FROM alert_events WHERE alert_id = $1 AND from_state IS NULL ORDER BY id LIMIT 1",
    )
    .bind(closed_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(raise_note, Some(format!("operation {id}")));

    // The operator links the alert it explains; an alert that does not exist is refused
    // naming the field, and nothing is written.
    let path = format!("/api/v1/operations/{id}");
    let link = |ids: String| {
        let path = path.clone();
        async move {
            sccr_tests::http_request_with(
                port,
                "PATCH",
                &path,
                Some(sccr_tests::TEST_ADMIN_TOKEN),
                &[("If-Match", "\"1\"")],
                &format!(r#"{{"linked_alerts":{ids}}}"#),
            )
            .await
            .unwrap()
        }
    };
    let (status, text) = link(format!("[{closed_id},{}]", closed_id + 1_000_000)).await;
    let refused: Value = serde_json::from_str(&text).unwrap_or_default();
    assert_eq!((status, &refused["error"]["param"]), (422, &json!("linked_alerts")), "{text}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains(&(closed_id + 1_000_000).to_string()),
        "{text}"
    );
    let (status, text) = link(format!("[{closed_id}]")).await;
    assert_eq!(status, 200, "{text}");
    let linked: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (linked["version"].as_i64(), &linked["linked_alerts"]),
        (Some(2), &json!([closed_id]))
    );
    let (_, text) = http_get(port, &format!("{path}/history")).await.unwrap();
    let trail: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        trail["changes"][1]["changes"]["linked_alerts"],
        json!([[], [closed_id]]),
        "{trail}"
    );

    // Ending the operation lifts the suppression: the alert still holding is shown again.
    let (status, text) = http_send(
        port,
        "POST",
        &format!("/api/v1/operations/{id}/status"),
        r#"{"status":"ended"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{text}");
    let shown =
        alert_of(port, DEVICE, "the alert shown again", |a| a["suppressed"].is_null()).await;
    assert_eq!(shown["id"], closed["id"]);
    assert_eq!(shown["state"], "raised");
    let actions: Vec<Option<String>> =
        sqlx::query_scalar("SELECT action FROM alert_events WHERE alert_id = $1 ORDER BY id")
            .bind(closed_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(actions.contains(&Some("unsuppress".to_owned())), "{actions:?}");
    // The operation's outbox events: created, updated (the link), status_changed.
    let types: Vec<String> =
        sqlx::query_scalar("SELECT type FROM outbox WHERE subject = $1 ORDER BY id")
            .bind(format!("operation/{id}"))
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        types,
        [
            "it.firenze.sccr.operation.created",
            "it.firenze.sccr.operation.updated",
            "it.firenze.sccr.operation.status_changed"
        ]
    );
}

/// A segment of the point-and-area test: an eastbound street `north_m` north of a
/// reference latitude, 400 m long.
fn street(id: &str, north_m: f64) -> telemetry::RoadSegment {
    let (kx, ky) = telemetry::cadastre::geometry::metres_per_degree(43.78);
    let lat = 43.78 + north_m / ky;
    telemetry::RoadSegment {
        coordinates: vec![[11.24, lat], [11.24 + 400.0 / kx, lat]],
        length_m: 400.0,
        ..test_segment(id)
    }
}

/// A position `east_m` east and `north_m` north of the streets' origin.
fn at(east_m: f64, north_m: f64) -> [f64; 2] {
    let (kx, ky) = telemetry::cadastre::geometry::metres_per_degree(43.78);
    [11.24 + east_m / kx, 43.78 + north_m / ky]
}

const POINT_CONFIG: &str = r#"
[stream]
registry_refresh = "1s"

[alerts]
air_quality_defaults = false

[[alerts.rules]]
id = "stopped"
severity = "critical"
scope = { devices = ["loop-point-a", "loop-area-a", "loop-away-a"] }
threshold = { metric = "speed_kmh", below = 15.0 }
"#;

#[tokio::test]
async fn point_and_area_operations_suppress_alerts_on_the_segments_they_touch() {
    let broker = Broker::start().await.expect("mosquitto");
    let db = TestDb::create().await.expect("database");
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("store");
    store.migrate().await.expect("migrate");
    // Three parallel streets 300 m apart.
    let segments = [
        street("via-test-point", 0.0),
        street("via-test-area", 300.0),
        street("via-test-away", 600.0),
    ];
    store.upsert_segments(&segments).await.expect("segments");
    let devices: Vec<DeviceRecord> = vec![
        loop_on("loop-point-a", "via-test-point"),
        loop_on("loop-area-a", "via-test-area"),
        loop_on("loop-away-a", "via-test-away"),
    ];
    store.upsert_devices(&devices).await.expect("devices");
    store.close().await;
    let pool = PgPool::connect(&db.url).await.expect("pool");
    let dir = TempDir::new("operations-place").expect("tempdir");
    let sccr =
        Sccr::serve_with_config(broker.port, &db.url, &dir.path, POINT_CONFIG, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &pool).await;
    let port = sccr.api_port;

    let from = EventTime(EventTime::now().millis() - 60_000).to_rfc3339();
    let to = EventTime(EventTime::now().millis() + 3_600_000).to_rfc3339();
    let updates_before = metric_value(port, "sccr_stream_registry_updates_total").await;
    // A crash reported by position, 10 m off the first street: the road is closed there.
    let [lon, lat] = at(200.0, 10.0);
    let crash_body = format!(
        r#"{{"kind":"incident","title":"Crash","severity":"major","agency":"municipal_police","point":[{lon},{lat}],"closes_road":true,"status":"active","planned":{{"from":"{from}","to":"{to}"}}}}"#
    );
    let (status, text) = http_send(port, "POST", "/api/v1/operations", &crash_body).await.unwrap();
    assert_eq!(status, 201, "{text}");
    let crash: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(crash["segments"], serde_json::json!([]));
    assert_eq!(crash["derived_segments"], serde_json::json!(["via-test-point"]), "{crash}");
    // Roadworks given by an area around the middle street only.
    let ring: Vec<[f64; 2]> = vec![
        at(100.0, 250.0),
        at(300.0, 250.0),
        at(300.0, 350.0),
        at(100.0, 350.0),
        at(100.0, 250.0),
    ];
    let works = serde_json::json!({
        "kind": "roadworks", "title": "Gas main", "severity": "moderate", "agency": "utilities",
        "area": {"type": "Polygon", "coordinates": [ring]}, "status": "active",
        "planned": {"from": from, "to": to}
    });
    let (status, text) =
        http_send(port, "POST", "/api/v1/operations", &works.to_string()).await.unwrap();
    assert_eq!(status, 201, "{text}");
    let works: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(works["derived_segments"], serde_json::json!(["via-test-area"]), "{works}");
    // Clients cannot set the derived segments.
    let mut forged = serde_json::from_str::<Value>(&crash_body).unwrap();
    forged["derived_segments"] = serde_json::json!(["via-test-away"]);
    let (status, text) =
        http_send(port, "POST", "/api/v1/operations", &forged.to_string()).await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("derived_segments"), "{text}");
    wait_for("the registry re-read", Duration::from_secs(30), || async {
        (metric_value(port, "sccr_stream_registry_updates_total").await > updates_before)
            .then_some(())
    })
    .await;

    let t0 = EventTime::now().millis();
    let messages = ["loop-point-a", "loop-area-a", "loop-away-a"]
        .iter()
        .map(|d| (telemetry_topic(d), compact(1, t0, &[("speed_kmh", 3.0)])))
        .collect();
    publish_all(broker.port, "pub-place", messages).await.expect("publish");
    for device in ["loop-point-a", "loop-area-a"] {
        let a =
            alert_of(port, device, "the suppressed alert", |a| !a["suppressed"].is_null()).await;
        assert_eq!(a["suppressed"]["reason"], "operation", "{a}");
    }
    let away = alert_of(port, "loop-away-a", "the alert away from both", |_| true).await;
    assert!(away["suppressed"].is_null(), "{away}");

    // Ending the crash lifts its suppression only: the works still explain theirs.
    let (status, text) = http_send(
        port,
        "POST",
        &format!("/api/v1/operations/{}/status", crash["id"].as_str().unwrap()),
        r#"{"status":"ended"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{text}");
    alert_of(port, "loop-point-a", "the crash's alert shown again", |a| a["suppressed"].is_null())
        .await;
    let works_alert = alert_of(port, "loop-area-a", "the works' alert", |_| true).await;
    assert_eq!(works_alert["suppressed"]["reason"], "operation", "{works_alert}");
}

/// The impact of an operation is a recount of the readings: for each period (before,
/// during, after, and the baseline a week earlier), the count and mean of every speed
/// reading of the devices on the operation's segments, on its segments together and on
/// each alone, whether they were given or derived from a point.
#[tokio::test]
async fn the_impact_answer_equals_a_recount_of_the_readings() {
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;
    let broker = Broker::start().await.expect("mosquitto");
    let db = TestDb::create().await.expect("database");
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("store");
    store.migrate().await.expect("migrate");
    let segments =
        [street("via-impact-a", 0.0), street("via-impact-b", 300.0), street("via-impact-c", 600.0)];
    store.upsert_segments(&segments).await.expect("segments");
    // Two loops on a, one on b, one on c (whose readings must not count).
    let devices = [
        ("loop-impact-a1", "via-impact-a"),
        ("loop-impact-a2", "via-impact-a"),
        ("loop-impact-b1", "via-impact-b"),
        ("loop-impact-c1", "via-impact-c"),
    ];
    let records: Vec<DeviceRecord> = devices.iter().map(|(d, s)| loop_on(d, s)).collect();
    store.upsert_devices(&records).await.expect("devices");
    // Twelve days of speeds at uneven times (1 to 9 minutes apart), whole km/h.
    let now = EventTime::now().millis();
    let mut x: u64 = 0x5CC2_0023;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut readings = Vec::new();
    for (i, (d, _)) in devices.iter().enumerate() {
        let mut t = now - 12 * DAY + i as i64 * 7_919;
        while t < now - HOUR {
            readings.push(telemetry::Reading {
                device: telemetry::DeviceId::parse(d).unwrap(),
                metric: telemetry::MetricId::SpeedKmh,
                time: EventTime(t),
                value: (5 + next(60)) as f64,
                seq: None,
            });
            t += MIN + next(8 * MIN as u64) as i64;
        }
    }
    for chunk in readings.chunks(2_000) {
        let batch = store::Batch { readings: chunk.to_vec(), ..Default::default() };
        store.write_batch(&batch).await.expect("write");
    }
    store.catch_up_rollups().await.expect("rollups");
    store.close().await;
    let pool = PgPool::connect(&db.url).await.expect("pool");
    let dir = TempDir::new("operations-impact").expect("tempdir");
    let sccr = Sccr::serve_with_config(broker.port, &db.url, &dir.path, CONFIG, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &pool).await;
    let port = sccr.api_port;

    // The recount: readings of the devices on `segs` within [from, to).
    let recount = |segs: &[&str], from: i64, to: i64| {
        let on: Vec<&str> =
            devices.iter().filter(|(_, s)| segs.contains(s)).map(|(d, _)| *d).collect();
        let vals: Vec<f64> = readings
            .iter()
            .filter(|r| on.contains(&r.device.as_str()) && (from..to).contains(&r.time.millis()))
            .map(|r| r.value)
            .collect();
        let n = vals.len() as i64;
        (n, (n > 0).then(|| vals.iter().sum::<f64>() / n as f64))
    };
    let ms = |v: &Value| EventTime::parse_rfc3339(v.as_str().unwrap()).unwrap().millis();
    let check = |label: &str, answer: &Value, segs: &[&str], expected: [(i64, i64); 4]| {
        for (name, (from, to)) in
            ["before", "during", "after", "baseline"].into_iter().zip(expected)
        {
            let p = &answer[name];
            assert_eq!((ms(&p["from"]), ms(&p["to"])), (from, to), "{label} {name} period");
            let (n, avg) = recount(segs, from, to);
            assert!(n > 100, "{label} {name}: {n} readings, the period is not covered");
            assert_eq!(p["count"].as_i64(), Some(n), "{label} {name} count");
            let got = p["avg"].as_f64().unwrap();
            let want = avg.unwrap();
            assert!((got - want).abs() <= 1e-9 * want, "{label} {name}: {got} != {want}");
            let points: i64 =
                p["points"].as_array().unwrap().iter().map(|q| q["count"].as_i64().unwrap()).sum();
            assert_eq!(points, n, "{label} {name}: the points add up to the count");
        }
    };

    // Roadworks on a and b that ran for a day and seven hours, ended two days ago, at
    // times on no minute; moved through their lifecycle as they happened.
    let (from, to) = (now - 3 * DAY - 7 * HOUR + 12_345, now - 2 * DAY + 54_321);
    let planned =
        serde_json::json!({"from": EventTime(from).to_rfc3339(), "to": EventTime(to).to_rfc3339()});
    let create = |body: Value| async move {
        let (status, text) =
            http_send(port, "POST", "/api/v1/operations", &body.to_string()).await.unwrap();
        assert_eq!(status, 201, "{text}");
        let op: Value = serde_json::from_str(&text).unwrap();
        let id = op["id"].as_str().unwrap().to_owned();
        for (to_status, at) in [("active", from), ("ended", to)] {
            let body =
                format!(r#"{{"status":"{to_status}","at":"{}"}}"#, EventTime(at).to_rfc3339());
            let path = format!("/api/v1/operations/{id}/status");
            let (status, text) = http_send(port, "POST", &path, &body).await.unwrap();
            assert_eq!(status, 200, "{text}");
        }
        (id, op)
    };
    let (works, _) = create(serde_json::json!({
        "kind": "roadworks", "title": "Resurfacing", "severity": "moderate", "agency": "mobility",
        "segments": ["via-impact-a", "via-impact-b"], "planned": planned,
    }))
    .await;
    // A crash reported by position 10 m off street a, over the same window.
    let [lon, lat] = at(150.0, 10.0);
    let (crash, answer) = create(serde_json::json!({
        "kind": "incident", "title": "Crash", "severity": "minor", "agency": "municipal_police",
        "point": [lon, lat], "planned": planned,
    }))
    .await;
    assert_eq!(answer["derived_segments"], serde_json::json!(["via-impact-a"]));

    let len = to - from;
    let periods = [(from - len, from), (from, to), (to, to + len), (from - 7 * DAY, to - 7 * DAY)];
    let impact = get_json(port, &format!("/api/v1/operations/{works}/impact?metric=speed_kmh"))
        .await
        .expect("impact");
    check("a and b together", &impact, &["via-impact-a", "via-impact-b"], periods);
    let each = impact["segments"].as_array().unwrap();
    assert_eq!(each.len(), 2);
    for entry in each {
        let seg = entry["segment"].as_str().unwrap();
        check(seg, entry, &[seg], periods);
    }
    let impact = get_json(port, &format!("/api/v1/operations/{crash}/impact?metric=speed_kmh"))
        .await
        .expect("impact");
    check("the crash's derived segment", &impact, &["via-impact-a"], periods);
    assert_eq!(impact["segments"][0]["segment"], "via-impact-a");
}
