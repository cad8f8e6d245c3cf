//! Road operations, beyond the creation bodies of `operations_refuse_hostile_payloads…`:
//! hostile headers (`Idempotency-Key`, `If-Match`), list parameters, bodies at and past
//! every limit, edits that would leave an operation invalid, status moves and notes that
//! are not what they should be. Each gets a 4xx JSON error naming what is at fault, and
//! the operation is left exactly as it was (same version, same trail).

use super::*;
use sccr_tests::{http_request_with, TEST_ADMIN_TOKEN};

#[tokio::test]
async fn operations_refuse_hostile_headers_parameters_and_edits_and_change_nothing() {
    let e = env("hostile-ops-edits").await;
    let port = e.sccr.api_port;
    let admin = Some(TEST_ADMIN_TOKEN);
    let window = r#""planned":{"from":"2026-11-01T08:00:00Z","to":"2026-11-01T18:00:00Z"}"#;
    let good = format!(
        r#"{{"kind":"roadworks","title":"Lungarno works","severity":"minor","agency":"utilities","segments":["viale-strozzi"],{window}}}"#
    );
    let (status, text) =
        http_request_with(port, "POST", "/api/v1/operations", admin, &[], &good).await.unwrap();
    assert_eq!(status, 201, "{text}");
    let op: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = op["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/operations/{id}");
    let v1: &[(&str, &str)] = &[("If-Match", "\"1\"")];

    let long = |n: usize| "x".repeat(n);
    let many_segments =
        format!("[{}]", (0..501).map(|i| format!("\"seg-{i}\"")).collect::<Vec<_>>().join(","));
    // A closed ring of 2,101 positions around Florence (over the 2,000 allowed).
    let ring: Vec<String> = (0..=2_100)
        .map(|i| {
            let a = std::f64::consts::TAU * f64::from(i % 2_100) / 2_100.0;
            format!("[{:.6},{:.6}]", 11.25 + 0.01 * a.cos(), 43.77 + 0.01 * a.sin())
        })
        .collect();
    let big_area = format!(r#"{{"type":"Polygon","coordinates":[[{}]]}}"#, ring.join(","));
    let key_129 = long(129);
    let huge_body = format!(r#"{{"title":"{}"}}"#, long(300 * 1024));
    let with_create = |extra: &str| good.replacen(r#""segments":["viale-strozzi"]"#, extra, 1);

    // (method, path, headers, body, status, the field or parameter named)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, String, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        // Headers.
        ("POST", "/api/v1/operations".into(), vec![("Idempotency-Key", key_129.as_str())], good.clone(), 400, "Idempotency-Key"),
        ("POST", "/api/v1/operations".into(), vec![("Idempotency-Key", "   ")], good.clone(), 400, "Idempotency-Key"),
        ("PATCH", path.clone(), vec![("If-Match", "\"abc\"")], r#"{"title":"x"}"#.into(), 400, "If-Match"),
        ("PATCH", path.clone(), vec![("If-Match", "\"0\"")], r#"{"title":"x"}"#.into(), 400, "If-Match"),
        ("PATCH", path.clone(), vec![("If-Match", "\"-1\"")], r#"{"title":"x"}"#.into(), 400, "If-Match"),
        ("PATCH", path.clone(), vec![("If-Match", "*")], r#"{"title":"x"}"#.into(), 400, "If-Match"),
        ("PATCH", path.clone(), vec![("If-Match", "\"99999999999999999999\"")], r#"{"title":"x"}"#.into(), 400, "If-Match"),
        // Bodies at and past the limits.
        ("POST", "/api/v1/operations".into(), vec![], with_create(&format!(r#""segments":{many_segments}"#)), 400, "segments"),
        ("POST", "/api/v1/operations".into(), vec![], with_create(&format!(r#""segments":[],"area":{big_area}"#)), 422, "area"),
        ("POST", "/api/v1/operations".into(), vec![], good.replace("Lungarno works", &long(201)), 400, "title"),
        ("POST", "/api/v1/operations".into(), vec![], good.replace("Lungarno works", ""), 400, "title"),
        ("POST", "/api/v1/operations".into(), vec![], good.replace("Lungarno works", r"red \u001b[31m alert"), 400, "title"),
        ("POST", "/api/v1/operations".into(), vec![], with_create(&format!(r#""segments":["viale-strozzi"],"external_ref":"{}""#, long(129))), 400, "external_ref"),
        ("POST", "/api/v1/operations".into(), vec![], with_create(r#""segments":["viale-strozzi"],"linked_alerts":[0]"#), 400, "linked_alerts"),
        ("POST", "/api/v1/operations".into(), vec![], with_create(r#""segments":["viale-strozzi"],"linked_alerts":[987654321]"#), 422, "linked_alerts"),
        ("POST", "/api/v1/operations".into(), vec![], with_create(r#""segments":["viale-strozzi"],"closes_road":"yes""#), 400, "closes_road"),
        ("POST", "/api/v1/operations".into(), vec![], with_create(r#""segments":["viale-strozzi"],"point":[11.25]"#), 400, "point"),
        ("POST", "/api/v1/operations".into(), vec![], with_create(r#""segments":["viale-strozzi"],"point":[11.25,91]"#), 400, "point"),
        ("POST", "/api/v1/operations".into(), vec![], good.replace("2026-11-01T18:00:00Z", "10000-01-01T00:00:00Z"), 422, "planned.to"),
        ("POST", "/api/v1/operations".into(), vec![], good.replace("2026-11-01T18:00:00Z", "2026-11-01T08:00:00Z"), 422, "planned.to"),
        ("POST", "/api/v1/operations".into(), vec![], huge_body.clone(), 400, "body"),
        ("POST", "/api/v1/operations".into(), vec![], "null".into(), 400, "body"),
        ("POST", "/api/v1/operations".into(), vec![], "\u{feff}{}".into(), 400, "body"),
        // Edits that would leave it invalid, or touch what is not editable.
        ("PATCH", path.clone(), v1.to_vec(), r#"{"planned":{"from":"2026-11-01T18:00:00Z","to":"2026-11-01T08:00:00Z"}}"#.into(), 422, "planned.to"),
        ("PATCH", path.clone(), v1.to_vec(), r#"{"segments":["ghost-road"]}"#.into(), 422, "segments"),
        ("PATCH", path.clone(), v1.to_vec(), r#"{"segments":[]}"#.into(), 422, "segments"),
        ("PATCH", path.clone(), v1.to_vec(), r#"{"area":{"type":"Polygon","coordinates":[[[11.2,43.7],[11.3,43.8],[11.3,43.7],[11.2,43.8],[11.2,43.7]]]}}"#.into(), 422, "area"),
        ("PATCH", path.clone(), v1.to_vec(), r#"{"linked_alerts":[987654321]}"#.into(), 422, "linked_alerts"),
        ("PATCH", path.clone(), v1.to_vec(), r#"{"status":"ended"}"#.into(), 400, "status"),
        ("PATCH", path.clone(), v1.to_vec(), r#"{"id":"op-mine"}"#.into(), 400, "id"),
        ("PATCH", path.clone(), v1.to_vec(), r#"{"version":7}"#.into(), 400, "version"),
        ("PATCH", path.clone(), v1.to_vec(), r#"{"created_by":"someone-else"}"#.into(), 400, "created_by"),
        ("PATCH", path.clone(), v1.to_vec(), r#"{"actual":{"from":"2026-11-01T08:00:00Z","to":null}}"#.into(), 400, "actual"),
        ("PATCH", path.clone(), v1.to_vec(), r#"{"kind":null}"#.into(), 400, "kind"),
        ("PATCH", path.clone(), v1.to_vec(), "[]".into(), 400, "body"),
        // Status moves and notes.
        ("POST", format!("{path}/status"), vec![], r#"{"status":"bogus"}"#.into(), 400, "status"),
        ("POST", format!("{path}/status"), vec![], r#"{"status":"active","at":"soon"}"#.into(), 422, "at"),
        ("POST", format!("{path}/status"), vec![], r#"{"status":"active","by":"mallory"}"#.into(), 400, "body"),
        ("POST", format!("{path}/status"), vec![], r#"{}"#.into(), 400, "body"),
        ("POST", format!("{path}/status"), vec![("If-Match", "\"abc\"")], r#"{"status":"active"}"#.into(), 400, "If-Match"),
        ("POST", format!("{path}/notes"), vec![], format!(r#"{{"text":"{}"}}"#, long(2_001)), 400, "text"),
        ("POST", format!("{path}/notes"), vec![], r#"{"text":""}"#.into(), 400, "text"),
        ("POST", format!("{path}/notes"), vec![], r#"{"text":"\u0007bell"}"#.into(), 400, "text"),
        ("POST", format!("{path}/notes"), vec![], r#"{"text":"ok\u007f"}"#.into(), 400, "text"),
        ("POST", format!("{path}/notes"), vec![], r#"{"text":"ok","by":"mallory"}"#.into(), 400, "body"),
        // List parameters.
        ("GET", "/api/v1/operations?limit=0".into(), vec![], String::new(), 400, "limit"),
        ("GET", "/api/v1/operations?limit=501".into(), vec![], String::new(), 400, "limit"),
        ("GET", "/api/v1/operations?limit=-1".into(), vec![], String::new(), 400, "limit"),
        ("GET", "/api/v1/operations?cursor=%27%3B%20DROP%20TABLE%20operations".into(), vec![], String::new(), 400, "cursor"),
        ("GET", "/api/v1/operations?cursor=op-".into(), vec![], String::new(), 400, "cursor"),
        ("GET", "/api/v1/operations?kind=meteor".into(), vec![], String::new(), 400, "kind"),
        ("GET", "/api/v1/operations?agency=Police".into(), vec![], String::new(), 400, "agency"),
        ("GET", "/api/v1/operations?status=active,".into(), vec![], String::new(), 400, "status"),
        ("GET", "/api/v1/operations?bbox=11.3,43.8,11.2,43.7".into(), vec![], String::new(), 422, "bbox"),
        ("GET", "/api/v1/operations?bbox=NaN,43.7,11.3,43.8".into(), vec![], String::new(), 400, "bbox"),
        ("GET", "/api/v1/operations?from=yesterday-ish".into(), vec![], String::new(), 400, "from"),
        ("GET", "/api/v1/operations?status=active&status=planned".into(), vec![], String::new(), 400, "status"),
        ("GET", "/api/v1/operations?colour=red".into(), vec![], String::new(), 400, "colour"),
        ("GET", format!("{path}/impact?metric=speed_kmh%00"), vec![], String::new(), 400, "metric"),
    ];
    let mut failures = Vec::new();
    for (method, p, headers, body, want, field) in &cases {
        let (status, text) =
            http_request_with(port, method, p, admin, headers, body).await.unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if status != *want || json["error"]["param"] != *field {
            let shown: String = body.chars().take(100).collect();
            failures.push(format!(
                "{method} {p} {shown} → {status} {}",
                text.chars().take(300).collect::<String>()
            ));
        }
    }
    assert!(failures.is_empty(), "operations' hostile input:\n{}", failures.join("\n"));

    // Nothing changed: one operation, still version 1, one trail entry, one event.
    assert_eq!(count(&e.pool, "SELECT count(*) FROM operations").await, 1, "nothing else stored");
    let (_, text) = http_get(port, &path).await.unwrap();
    let now: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(now, op, "the operation is as it was created");
    let (_, text) = http_get(port, &format!("{path}/history")).await.unwrap();
    let trail: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(trail["changes"].as_array().map(Vec::len), Some(1), "{trail}");
    assert_eq!(
        count(&e.pool, &format!("SELECT count(*) FROM outbox WHERE subject = 'operation/{id}'"))
            .await,
        1
    );
}
