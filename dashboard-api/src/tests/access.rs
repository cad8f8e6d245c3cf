//! Authentication, the role matrix of every route, tokens, the audit log and the
//! API's own metrics (the device registry is in `devices.rs`).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use super::{get, send, send_as, state, ADA, ADMIN, DEVICE, PLANNER};
use crate::app;

fn token_of(role: &str) -> &'static str {
    match role {
        "admin" => ADMIN,
        "operator" => ADA,
        "planner" => PLANNER,
        _ => DEVICE,
    }
}

async fn status(
    s: &crate::AppState,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req =
        Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app(s.clone()).oneshot(req.body(Body::from("{}")).unwrap()).await.unwrap();
    let st = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (st, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The roles of some operations, spelled out here so a change to the table is a visible
/// change to this test too.
const EXPECTED: &[(&str, &str, &[&str])] = &[
    ("GET", "/api/v1/history", &["admin", "operator", "planner"]),
    ("GET", "/api/v1/live", &["admin", "operator", "planner"]),
    ("POST", "/api/v1/alerts/{id}/ack", &["admin", "operator"]),
    ("PUT", "/api/v1/alert-rules", &["admin"]),
    ("POST", "/api/v1/devices", &["admin"]),
    ("POST", "/api/v1/tokens", &["admin"]),
    ("GET", "/metrics", &[]),
];

#[tokio::test]
async fn every_route_refuses_no_token_and_the_wrong_role() {
    let s = state().await;
    let ops = crate::operations();
    for (method, path, roles) in EXPECTED {
        let op = ops
            .iter()
            .find(|o| o.method == *method && o.path == *path)
            .unwrap_or_else(|| panic!("{method} {path} is not in the table"));
        assert_eq!(
            op.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            *roles,
            "{method} {path}"
        );
    }
    assert!(
        ops.iter().all(|o| !o.roles.contains(&crate::auth::Role::Device)),
        "the device role uses no REST route"
    );
    let guarded: Vec<_> = ops.iter().filter(|o| !o.roles.is_empty()).collect();
    assert!(guarded.len() >= 21, "{}", guarded.len());
    for op in guarded {
        let (method, uri) = (op.method, op.example_path("999"));
        let allowed: Vec<&str> = op.roles.iter().map(|r| r.as_str()).collect();
        let uri = if op.params.iter().any(|p| p.required && p.at == crate::openapi::In::Query) {
            format!("{uri}?metric=speed_kmh")
        } else {
            uri
        };
        let uri = uri.as_str();
        let (st, body) = status(&s, method, uri, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{method} {uri} without a token");
        assert_eq!(body["error"]["code"], "unauthorized");
        // (A fresh limiter each time: this test is not about repeated failures.)
        let fresh = crate::AppState { auth: crate::auth::Auth::default(), ..s.clone() };
        let (st, _) = status(&fresh, method, uri, Some("sccr_not_a_token")).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{method} {uri} with an unknown token");
        for role in ["admin", "operator", "planner", "device"] {
            let (st, body) = status(&s, method, uri, Some(token_of(role))).await;
            if allowed.contains(&role) {
                assert!(
                    st != StatusCode::UNAUTHORIZED && st != StatusCode::FORBIDDEN,
                    "{method} {uri} as {role}: {st} {body}"
                );
            } else {
                assert_eq!(st, StatusCode::FORBIDDEN, "{method} {uri} as {role}: {body}");
                assert_eq!(body["error"]["code"], "forbidden");
            }
        }
    }
}

#[tokio::test]
async fn the_websocket_takes_its_token_from_the_query() {
    let s = state().await;
    let (st, _) = status(&s, "GET", "/api/v1/live?access_token=sccr_wrong", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = status(&s, "GET", &format!("/api/v1/live?access_token={DEVICE}"), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = status(&s, "GET", &format!("/api/v1/live?access_token={ADA}"), None).await;
    assert!(st != StatusCode::UNAUTHORIZED && st != StatusCode::FORBIDDEN, "{st}");
    // Elsewhere a token in the query is not looked at (it would end up in logs).
    assert_eq!(
        status(&s, "GET", &format!("/api/v1/latest?access_token={ADA}"), None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn public_routes_need_no_token() {
    let s = state().await;
    for uri in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(status(&s, "GET", uri, None).await.0, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn tokens_are_created_once_shown_used_and_revoked() {
    let s = state().await;
    let (st, body) =
        send(&s, "POST", "/api/v1/tokens", r#"{"name":"wall-3","role":"operator"}"#).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("sccr_") && token.len() == 69, "{token}");
    let id = body["id"].as_i64().unwrap();
    let (st, me) = send_as(&s, &token, "GET", "/api/v1/me", "").await;
    assert_eq!(
        (st, me["name"].as_str(), me["role"].as_str()),
        (StatusCode::OK, Some("wall-3"), Some("operator"))
    );
    let (_, list) = get(&s, "/api/v1/tokens").await;
    let listed = list["tokens"].as_array().unwrap();
    assert!(listed.iter().any(|t| t["id"] == id && t["name"] == "wall-3"));
    assert!(!list.to_string().contains(&token[5..]), "the token is never shown again");

    for (body, field) in [
        (r#"{"name":"x","role":"root"}"#, "role"),
        (r#"{"name":"","role":"admin"}"#, "name"),
        (r#"{"role":"admin"}"#, "body"),
        ("[]", "body"),
    ] {
        let (st, resp) = send(&s, "POST", "/api/v1/tokens", body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(resp["error"]["param"], field, "{body}: {resp}");
    }

    let (st, _) = send(&s, "DELETE", &format!("/api/v1/tokens/{id}"), "").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        send_as(&s, &token, "GET", "/api/v1/me", "").await.0,
        StatusCode::UNAUTHORIZED,
        "revoked at once in this process"
    );
    assert_eq!(send(&s, "DELETE", "/api/v1/tokens/424242", "").await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(&s, "DELETE", "/api/v1/tokens/abc", "").await.1["error"]["param"], "id");

    let (_, audit) = get(&s, "/api/v1/audit?limit=10").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["token.revoke", "token.create"]);
    assert_eq!(audit["entries"][0]["actor"], "root");
}

/// A request from `addr` presenting `token`.
async fn status_from(
    s: &crate::AppState,
    addr: [u8; 4],
    token: &str,
) -> (StatusCode, Option<String>, Value) {
    let mut req = Request::get("/api/v1/me")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let peer = std::net::SocketAddr::from((addr, 40_000));
    req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
    let resp = app(s.clone()).oneshot(req).await.unwrap();
    let st = resp.status();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (st, retry, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn failures_from_an_address_throttle_wrong_tokens_but_never_a_valid_one() {
    let s = state().await;
    let nat = [10, 0, 0, 1];
    let first_failure = std::time::Instant::now();
    for _ in 0..crate::auth::MAX_FAILURES {
        assert_eq!(status_from(&s, nat, "sccr_guess").await.0, StatusCode::UNAUTHORIZED);
    }
    let (st, retry, body) = status_from(&s, nat, "sccr_guess").await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "too_many_requests");
    // The window's remaining whole seconds, counted from the first failure.
    let retry: u64 = retry.as_deref().and_then(|r| r.parse().ok()).expect("Retry-After in seconds");
    let waited = first_failure.elapsed().as_secs();
    assert!((60 - waited.min(59)..=60).contains(&retry), "Retry-After {retry} after {waited} s");
    // Another client behind the same address, with a valid token, is served.
    let (st, _, body) = status_from(&s, nat, ADMIN).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "root");
    assert_eq!(status_from(&s, nat, ADA).await.0, StatusCode::OK);
    // Wrong tokens from it are still throttled; other addresses are not.
    assert_eq!(status_from(&s, nat, "sccr_guess").await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status_from(&s, [10, 0, 0, 2], "sccr_guess").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(s.http.auth_failures("unknown_token"), u64::from(crate::auth::MAX_FAILURES) + 1);
    assert_eq!(s.http.auth_failures("throttled"), 2);
}

#[test]
fn the_failure_limiter_remembers_a_bounded_number_of_addresses() {
    let auth = crate::auth::Auth::with_failure_limit(2);
    let max = crate::auth::FAILURE_ADDRESSES_MAX;
    for i in 0..max + 50 {
        let [_, _, a, b] = (i as u32).to_be_bytes();
        auth.record_failure(std::net::IpAddr::from([10, 1, a, b]));
    }
    assert_eq!(auth.tracked_addresses(), max);
    // An IPv6 client counts by its /64: its other addresses share its budget.
    let v6 = |last: u16| std::net::IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
    auth.record_failure(v6(1));
    auth.record_failure(v6(2));
    assert_eq!(auth.blocked(v6(3)), Some(60));
    assert_eq!(auth.blocked(std::net::IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1])), None);
}
#[tokio::test]
async fn bad_requests_are_counted_by_route_and_status() {
    let s = state().await;
    get(&s, "/api/v1/history?metric=nope").await;
    get(&s, "/api/v1/history?metric=nope").await;
    status(&s, "GET", "/api/v1/segments", None).await;
    assert_eq!(s.http.requests("/api/v1/history", 400), 2);
    assert_eq!(s.http.requests("/api/v1/segments", 401), 1);
    let (_, text) = {
        let resp = app(s.clone())
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        (
            resp.status(),
            String::from_utf8(
                axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec(),
            )
            .unwrap(),
        )
    };
    assert!(
        text.contains(
            "sccr_http_requests_total{route=\"/api/v1/history\",method=\"GET\",status=\"400\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "sccr_http_request_duration_seconds_count{route=\"/api/v1/history\",method=\"GET\"} 2"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn the_openapi_document_and_page_describe_every_operation() {
    let s = state().await;
    let resp = app(s.clone())
        .oneshot(Request::get("/api/v1/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "public");
    let doc: Value =
        serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), 1 << 22).await.unwrap())
            .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = crate::operations();
    for op in &ops {
        let o = &doc["paths"][op.path][op.method.to_lowercase()];
        assert!(o.is_object(), "{} {} missing", op.method, op.path);
        // Every {param} of the path is declared.
        for seg in op.path.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_matches(['{', '}']);
            assert!(
                o["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "path"),
                "{} {name}",
                op.path
            );
        }
        if !op.roles.is_empty() {
            assert!(
                o["responses"]["401"].is_object() && o["responses"]["403"].is_object(),
                "{}",
                op.path
            );
        }
    }
    let counted: usize =
        doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(counted, ops.len(), "one document entry per operation, no more");
    // The answers a read replica may give say so (docs/replication.md).
    for path in crate::openapi::READ_REPLICA_PATHS {
        let headers = &doc["paths"][path]["get"]["responses"]["200"]["headers"];
        for h in ["SCCR-Read-From", "SCCR-Replica-Lag", "SCCR-Read-Reason"] {
            assert!(headers[h]["description"].is_string(), "{path} {h}");
        }
    }
    // Without a replica configured, answers carry none of them.
    let resp = app(s.clone())
        .oneshot(
            Request::get("/api/v1/history?metric=speed_kmh")
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("sccr-read-from").is_none());
    let resp =
        app(s).oneshot(Request::get("/api/v1/docs").body(Body::empty()).unwrap()).await.unwrap();
    let page =
        String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 22).await.unwrap().to_vec())
            .unwrap();
    assert!(ops.iter().all(|o| page.contains(&format!("<code class=path>{}</code>", o.path))));
}

#[tokio::test]
async fn the_live_route_without_an_upgrade_says_so_in_json() {
    let s = state().await;
    let (st, body) = get(&s, "/api/v1/live").await;
    assert_eq!(st, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(body["error"]["code"], "upgrade_required");
}

#[tokio::test]
async fn control_characters_are_refused_before_the_database_sees_them() {
    let s = state().await;
    let (st, body) =
        send(&s, "POST", "/api/v1/tokens", "{\"name\":\"a\\u0000b\",\"role\":\"planner\"}").await;
    assert_eq!((st, body["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("name")));
    let (st, body) = get(&s, "/api/v1/alerts?rule=a%00b").await;
    assert_eq!((st, body["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("rule")));
    let (st, body) = send(&s, "POST", "/api/v1/alerts/1/ack", "{\"note\":\"x\\u0000\"}").await;
    assert_eq!((st, body["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("note")));
}

#[tokio::test]
async fn dead_letters_are_listed_by_page_and_counted_by_reason() {
    let s = state().await;
    let letters: Vec<store::DeadLetter> = (0..5)
        .map(|i| {
            store::DeadLetter::new(
                "sccr/v1/devices/x/telemetry",
                None,
                if i < 3 { "bad_json" } else { "out_of_range" },
                format!("case {i}"),
                b"{oops",
            )
        })
        .collect();
    s.store
        .write_batch(&store::Batch { dead_letters: letters, ..store::Batch::default() })
        .await
        .unwrap();
    let (st, page) = get(&s, "/api/v1/dead-letters?limit=2").await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert_eq!(page["dead_letters"][0]["detail"], "case 4");
    assert_eq!(page["dead_letters"][0]["payload_preview"], "{oops");
    let next = page["next_cursor"].as_str().unwrap();
    let (_, older) = get(&s, &format!("/api/v1/dead-letters?limit=2&cursor={next}")).await;
    assert_eq!(older["dead_letters"][0]["detail"], "case 2");
    let (_, bad_json) = get(&s, "/api/v1/dead-letters?reason=bad_json").await;
    assert_eq!(bad_json["dead_letters"].as_array().unwrap().len(), 3);
    let (_, reasons) = get(&s, "/api/v1/dead-letters/reasons").await;
    assert_eq!(
        reasons["reasons"],
        serde_json::json!([{"reason": "bad_json", "count": 3}, {"reason": "out_of_range", "count": 2}])
    );
    assert_eq!(
        get(&s, "/api/v1/dead-letters/reasons?since=yesterday").await.1["error"]["param"],
        "since"
    );
}

#[tokio::test]
async fn readiness_reports_the_broker() {
    let mut s = state().await;
    let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = up.clone();
    s.readiness = Some(std::sync::Arc::new(move || {
        let check = if probe.load(std::sync::atomic::Ordering::Relaxed) {
            Ok(())
        } else {
            Err(crate::NotReady {
                code: "broker_unreachable",
                message: "broker unreachable".into(),
            })
        };
        vec![("broker", check)]
    }));
    let (st, body) = get(&s, "/readyz").await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("broker"));
    up.store(true, std::sync::atomic::Ordering::Relaxed);
    let (st, body) = get(&s, "/readyz").await;
    assert_eq!((st, body["broker"].as_bool()), (StatusCode::OK, Some(true)));
}

#[tokio::test]
async fn readiness_names_a_stalled_writer() {
    let mut s = state().await;
    s.readiness = Some(std::sync::Arc::new(|| {
        vec![
            ("broker", Ok(())),
            (
                "writer",
                Err(crate::NotReady {
                    code: "writer_stalled",
                    message: "writer stalled: the oldest uncommitted batch is 12.0 s old".into(),
                }),
            ),
        ]
    }));
    let (st, body) = get(&s, "/readyz").await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "writer_stalled");
    assert_eq!(
        body["error"]["message"],
        "writer stalled: the oldest uncommitted batch is 12.0 s old"
    );
}

#[tokio::test]
async fn framework_rejections_are_json_errors_too() {
    let s = state().await;
    // A method the route does not have: axum answers 405 in plain text, we in JSON.
    let (st, body) = send(&s, "PATCH", "/api/v1/segments", "{}").await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn webhook_subscription_changes_are_audited_without_their_secret() {
    let s = state().await;
    let secret = "a-very-secret-signing-key-0123456789";
    let body = format!(
        r#"{{"url":"http://127.0.0.1:9/hook","secret":"{secret}","types":["sccr.alert.raised"]}}"#
    );
    let (st, created) = send(&s, "POST", "/api/v1/webhooks", &body).await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    let (st, _) = send(
        &s,
        "PATCH",
        &format!("/api/v1/webhooks/{id}"),
        &format!(r#"{{"enabled":false,"secret":"{secret}-2"}}"#),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = send(&s, "POST", &format!("/api/v1/webhooks/{id}/redeliver"), "").await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = send(&s, "DELETE", &format!("/api/v1/webhooks/{id}"), "").await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(
        send(&s, "DELETE", &format!("/api/v1/webhooks/{id}"), "").await.0,
        StatusCode::NOT_FOUND
    );

    let (_, audit) = get(&s, "/api/v1/audit?limit=10").await;
    let entries = audit["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["webhook.delete", "webhook.redeliver", "webhook.update", "webhook.create"],
        "a failed delete is not logged"
    );
    assert!(
        entries.iter().all(|e| e["target"] == format!("webhook/{id}") && e["actor"] == "root"),
        "{audit}"
    );
    assert_eq!(entries[3]["detail"]["url"], "http://127.0.0.1:9/hook");
    assert_eq!(entries[3]["detail"]["types"], serde_json::json!(["sccr.alert.raised"]));
    assert_eq!(entries[2]["detail"], serde_json::json!({"enabled": false, "secret_set": true}));
    assert!(!audit.to_string().contains(secret), "the secret never reaches the audit log: {audit}");
}
