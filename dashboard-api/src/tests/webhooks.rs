//! Webhook subscriptions: https receivers, and URLs the destination allow-list refuses.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Extension;
use links::DestinationPolicy;
use serde_json::Value;
use tower::ServiceExt;

use super::{state, ADMIN};
use crate::app;
use crate::webhooks::WebhookSettings;
use crate::AppState;

const SECRET: &str = "a-very-secret-signing-key-0123456789";

async fn send_with(
    s: &AppState,
    allowed: &[&str],
    method: &str,
    uri: &str,
    url: &str,
) -> (StatusCode, Value) {
    let settings = WebhookSettings {
        destinations: Arc::new(DestinationPolicy::parse(allowed).unwrap()),
        ..WebhookSettings::default()
    };
    let body = serde_json::json!({"url": url, "secret": SECRET}).to_string();
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::from(body))
        .unwrap();
    let resp = app(s.clone()).layer(Extension(settings)).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn create(s: &AppState, allowed: &[&str], url: &str) -> (StatusCode, Value) {
    send_with(s, allowed, "POST", "/api/v1/webhooks", url).await
}

fn refused(body: &Value) -> &str {
    assert_eq!(body["error"]["code"], "destination_refused", "{body}");
    assert_eq!(body["error"]["param"], "url", "{body}");
    body["error"]["message"].as_str().unwrap()
}

#[tokio::test]
async fn https_receivers_are_subscribed() {
    let s = state().await;
    let (st, body) = create(&s, &[], "https://127.0.0.1:9443/hook").await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert_eq!(body["url"], "https://127.0.0.1:9443/hook");
    let (st, body) = create(&s, &[], "ftp://127.0.0.1/hook").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["message"], "url must be http(s)://host[:port]/path");
}

#[tokio::test]
async fn link_local_and_metadata_urls_are_refused_by_default() {
    let s = state().await;
    let (st, body) = create(&s, &[], "http://169.254.169.254/latest/meta-data/").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused(&body),
        "destination refused: 169.254.169.254 is a cloud metadata address, refused unless listed \
         itself (webhooks.allowed_destinations)"
    );
    let (st, body) = create(&s, &[], "http://[::ffff:169.254.169.254]/").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(refused(&body).contains("is a cloud metadata address"), "{body}");
    let (st, body) = create(&s, &[], "https://[fe80::1]:8443/hook").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused(&body),
        "destination refused: fe80::1 is link-local, refused unless a listed network inside \
         169.254.0.0/16 or fe80::/10 covers it (webhooks.allowed_destinations)"
    );
    // Loopback and private networks are allowed by default.
    for url in ["http://127.0.0.1:9/hook", "http://10.20.0.5/hook", "http://localhost:9/hook"] {
        let (st, body) = create(&s, &[], url).await;
        assert_eq!(st, StatusCode::CREATED, "{url}: {body}");
    }
    // A listed metadata address is allowed.
    let (st, body) = create(&s, &["169.254.169.254"], "http://169.254.169.254/hook").await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert_eq!(s.store.webhooks().await.unwrap().len(), 4);
}

#[tokio::test]
async fn an_allow_list_refuses_what_it_does_not_name_at_creation_and_change() {
    let s = state().await;
    let nets = ["10.0.0.0/8"];
    let (st, body) = create(&s, &nets, "http://10.1.2.3:8080/hook").await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let id = body["id"].as_i64().unwrap();
    let (st, body) = create(&s, &nets, "http://127.0.0.1:9/hook").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused(&body),
        "destination refused: 127.0.0.1 is not in the allowed destinations \
         (webhooks.allowed_destinations)"
    );
    // A name is looked up now: localhost is a loopback address, outside the list.
    let (st, body) = create(&s, &nets, "http://localhost:9/hook").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        refused(&body).starts_with(
            "destination refused: localhost resolves only to refused addresses: 127.0.0.1 is \
             not in the allowed destinations"
        ),
        "{body}"
    );
    let names = ["hooks.example"];
    let (st, body) = create(&s, &names, "https://other.example/hook").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused(&body),
        "destination refused: other.example is not in webhooks.allowed_destinations"
    );
    let (st, body) =
        send_with(&s, &nets, "PATCH", &format!("/api/v1/webhooks/{id}"), "http://192.168.1.1/")
            .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(refused(&body).contains("192.168.1.1 is not in the allowed destinations"), "{body}");
    let (st, body) =
        send_with(&s, &nets, "PATCH", &format!("/api/v1/webhooks/{id}"), "https://10.9.9.9/").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["url"], "https://10.9.9.9/");
    assert_eq!(s.store.webhooks().await.unwrap().len(), 1);
}
