//! The alert rules admin API: documents read and replaced with every error named, single
//! rules added, replaced and removed, subjects checked against the registry,
//! create/replace statuses, origins and precedence.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use stream::{AlertRulesConfig, StreamCommand};
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::{get, send, state, state_with_engine, state_with_file, ADMIN};
use crate::app;
use crate::rules::StoredRules;

/// Accept every rule set the API sends to the engine.
fn engine(mut commands: mpsc::Receiver<StreamCommand>) {
    tokio::spawn(async move {
        while let Some(command) = commands.recv().await {
            if let StreamCommand::SetRules { done, .. } = command {
                let _ = done.send(());
            }
        }
    });
}

/// Status, `Location` header and body of an admin request.
async fn call(
    s: &crate::AppState,
    method: &str,
    uri: &str,
    body: &str,
) -> (StatusCode, Option<String>, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = app(s.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let location = resp.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, location, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn errors(body: &Value) -> Vec<(String, String)> {
    body["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (e["path"].as_str().unwrap().to_owned(), e["message"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn scopes_naming_missing_segments_devices_or_kinds_are_refused_with_their_paths() {
    let (s, commands) = state_with_file(&AlertRulesConfig::default()).await;
    engine(commands);
    let doc = json!({"rules": [
        {"id": "ok", "severity": "info", "scope": {"segments": ["viale-strozzi"]}, "los": {"at_or_worse": "E"}},
        {"id": "dev-ok", "severity": "info", "scope": {"devices": ["loop-1"]}, "offline": {}},
        {"id": "typo", "severity": "info", "scope": {"segments": ["viale-strozzi", "viale-strozi"]}, "los": {"at_or_worse": "E"}},
        {"id": "nowhere", "severity": "info", "scope": {"devices": ["loop-9"]}, "offline": {}},
    ]});
    let (st, _, body) = call(&s, "PUT", "/api/v1/alert-rules", &doc.to_string()).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_rules");
    assert_eq!(body["error"]["param"], "rules[2].scope.segments[1]");
    assert_eq!(
        errors(&body),
        [
            (
                "rules[2].scope.segments[1]".to_owned(),
                "no segment \"viale-strozi\" (did you mean \"viale-strozzi\"?)".to_owned()
            ),
            (
                "rules[3].scope.devices[0]".to_owned(),
                "no device \"loop-9\" (did you mean \"loop-1\"?)".to_owned()
            ),
        ]
    );
    let rules = get(&s, "/api/v1/alert-rules").await.1;
    assert_eq!(rules["rules"]["rules"], json!([]), "nothing of a refused document applies");

    // One rule: the same check, under the path in the body sent.
    let (st, _, body) = call(
        &s,
        "PUT",
        "/api/v1/alert-rules/far",
        r#"{"severity":"info","scope":{"segments":["seg-999"]},"threshold":{"metric":"speed_kmh","on":"segment","below":10}}"#,
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        errors(&body),
        [("scope.segments[0]".to_owned(), "no segment \"seg-999\"".to_owned())]
    );
    assert_eq!(body["error"]["param"], "scope.segments[0]");

    // Kinds are a known set: a typo is refused (422) with the kinds and the closest one.
    let (st, _, body) = call(
        &s,
        "PUT",
        "/api/v1/alert-rules/aq",
        r#"{"severity":"info","scope":{"kind":"air_qualty"},"threshold":{"metric":"no2_ugm3","above":200}}"#,
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (path, message) = &errors(&body)[0];
    assert_eq!(path, "scope.kind");
    assert!(
        message.contains("did you mean \"air_quality\"?") && message.contains("traffic_light"),
        "{message}"
    );
}

#[tokio::test]
async fn rules_already_in_force_are_not_judged_again() {
    // The file names a device that is not registered (yet): it is in force, and other
    // changes go through.
    let file: AlertRulesConfig = serde_json::from_value(json!({"rules": [
        {"id": "watch-loop-9", "severity": "info", "scope": {"devices": ["loop-9"]}, "offline": {}},
    ]}))
    .unwrap();
    let (s, commands) = state_with_file(&file).await;
    engine(commands);
    let (st, _, body) = call(
        &s,
        "PUT",
        "/api/v1/alert-rules/slow",
        r#"{"severity":"info","threshold":{"metric":"speed_kmh","below":5}}"#,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    // Changing that rule judges it.
    let (st, _, body) = call(
        &s,
        "PUT",
        "/api/v1/alert-rules/watch-loop-9",
        r#"{"severity":"critical","scope":{"devices":["loop-9"]},"offline":{}}"#,
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn creating_answers_201_with_location_and_replacing_200() {
    let (s, commands) = state_with_file(&AlertRulesConfig::default()).await;
    engine(commands);
    let rule =
        r#"{"severity":"warning","threshold":{"metric":"no2_ugm3","above":150.0,"for":"10m"}}"#;
    let (st, location, body) = call(&s, "PUT", "/api/v1/alert-rules/no2-watch", rule).await;
    assert_eq!(
        (st, location.as_deref()),
        (StatusCode::CREATED, Some("/api/v1/alert-rules/no2-watch")),
        "{body}"
    );
    let (st, location, _) = call(&s, "PUT", "/api/v1/alert-rules/no2-watch", rule).await;
    assert_eq!((st, location), (StatusCode::OK, None), "replaced");

    // POST creates with the id in the body; an id in force is a conflict.
    let with_id = r#"{"id":"pm10-watch","severity":"info","air_quality":{"metric":"pm10_ugm3"}}"#;
    let (st, location, body) = call(&s, "POST", "/api/v1/alert-rules", with_id).await;
    assert_eq!(
        (st, location.as_deref()),
        (StatusCode::CREATED, Some("/api/v1/alert-rules/pm10-watch")),
        "{body}"
    );
    assert_eq!(body["rules_in_force"][1]["rule"]["id"], "pm10-watch");
    let (st, _, body) = call(&s, "POST", "/api/v1/alert-rules", with_id).await;
    assert_eq!((st, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    let (st, _, body) =
        call(&s, "POST", "/api/v1/alert-rules", r#"{"severity":"info","offline":{}}"#).await;
    assert_eq!((st, body["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("id")));

    // A shipped default is in force: POST of its id conflicts, PUT replaces it (200).
    let default =
        r#"{"id":"aq-no2-hourly","severity":"critical","air_quality":{"metric":"no2_ugm3"}}"#;
    assert_eq!(call(&s, "POST", "/api/v1/alert-rules", default).await.0, StatusCode::CONFLICT);
    let (st, _, body) = call(&s, "DELETE", "/api/v1/alert-rules/aq-pm10-daily", "").await;
    assert_eq!(st, StatusCode::CONFLICT, "a default is turned off, not deleted: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("enabled"), "{body}");
    let (st, location, _) = call(&s, "PUT", "/api/v1/alert-rules/aq-no2-hourly", default).await;
    assert_eq!((st, location), (StatusCode::OK, None));
    let (st, one) = get(&s, "/api/v1/alert-rules/aq-no2-hourly").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (one["origin"].as_str(), one["replaces_default"].as_bool()),
        (Some("api"), Some(true))
    );
    assert_eq!(one["rule"]["severity"], "critical");

    // Every change is audited.
    let (_, audit) = get(&s, "/api/v1/audit").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.iter().filter(|a| a.starts_with("alert_rule")).count(), 4, "{actions:?}");
}

#[tokio::test]
async fn every_rule_in_force_is_listed_with_its_origin() {
    let file: AlertRulesConfig = serde_json::from_value(json!({"rules": [
        {"id": "jam", "severity": "critical", "los": {"at_or_worse": "F", "for": "1m"}},
        {"id": "slow", "severity": "info", "threshold": {"metric": "speed_kmh", "below": 5}},
    ]}))
    .unwrap();
    let (s, commands) = state_with_file(&file).await;
    engine(commands);
    let origins = |body: &Value| -> Vec<(String, String)> {
        body["rules_in_force"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["rule"]["id"].as_str().unwrap().to_owned(),
                    r["origin"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let (_, body) = get(&s, "/api/v1/alert-rules").await;
    let listed = origins(&body);
    assert_eq!(listed.len(), 2 + 5);
    assert_eq!(
        listed[..3],
        [
            ("jam".into(), "file".into()),
            ("slow".into(), "file".into()),
            ("aq-no2-hourly".into(), "default".into())
        ]
    );
    assert_eq!(body["effective_rules"], 7);
    assert_eq!(body["replaced_by_file"], json!([]));
    // The shipped defaults are readable one by one too.
    let (st, one) = get(&s, "/api/v1/alert-rules/aq-o3-8h-target").await;
    assert_eq!((st, one["origin"].as_str()), (StatusCode::OK, Some("default")));

    // Changed through the API: that rule's origin is api, the other stays file's.
    let (st, _, _) = call(
        &s,
        "PUT",
        "/api/v1/alert-rules/slow",
        r#"{"severity":"warning","threshold":{"metric":"speed_kmh","below":5}}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let listed = origins(&get(&s, "/api/v1/alert-rules").await.1);
    assert_eq!(listed[..2], [("jam".into(), "file".into()), ("slow".into(), "api".into())]);
}

#[tokio::test]
async fn alert_rules_are_read_and_replaced_with_every_error_named() {
    let (s, mut commands) = state_with_engine().await;
    let (st, body) = get(&s, "/api/v1/alert-rules").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["rules"]["air_quality_defaults"], true);
    assert_eq!(body["effective_rules"], 5);

    let bad =
        r#"{"rules":[{"id":"Bad Id","severity":"info","threshold":{"metric":"warp","above":1}}]}"#;
    let (st, body) = send(&s, "PUT", "/api/v1/alert-rules", bad).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_rules");
    let paths: Vec<&str> = body["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"rules[0].id") && paths.contains(&"rules[0].threshold.metric"),
        "{paths:?}"
    );
    let (st, body) = send(
        &s,
        "PUT",
        "/api/v1/alert-rules",
        r#"{"rules":[{"id":"x","severity":"info","threshold":{"metric":"speed_kmh","abov":1}}]}"#,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body["error"]["param"].as_str().unwrap().starts_with("rules[0].threshold"), "{body}");
    // A scope of another form: the forms, in words.
    let (st, body) = send(
        &s,
        "POST",
        "/api/v1/alert-rules",
        r#"{"id":"k","severity":"info","scope":{"kinds":["parking"]},"offline":{}}"#,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "scope", "{body}");
    assert_eq!(
        body["error"]["message"],
        "\"kinds\" is none of the forms: \"all\", \"devices\", \"kind\", \"segments\"",
        "{body}"
    );
    // A key the rule kind does not have: its keys.
    let (st, body) = send(
        &s,
        "POST",
        "/api/v1/alert-rules",
        r#"{"id":"k","severity":"info","offline":{"after":"5m"}}"#,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("\"after\" is not a key here; the keys are "), "{body}");

    let good = r#"{"air_quality_defaults":false,"rules":[{"id":"congestion","severity":"critical","scope":{"segments":["viale-strozzi"]},"los":{"at_or_worse":"E","for":"5m"}}]}"#;
    let engine = tokio::spawn(async move {
        match commands.recv().await {
            Some(StreamCommand::SetRules { rules, done }) => {
                let _ = done.send(());
                rules.rules.iter().map(|r| r.id.to_string()).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        }
    });
    let (st, body) = send(&s, "PUT", "/api/v1/alert-rules", good).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(engine.await.unwrap(), vec!["congestion"]);
    assert_eq!(get(&s, "/api/v1/alert-rules").await.1["rules"]["rules"][0]["id"], "congestion");
    let saved: StoredRules = serde_json::from_value(
        s.store.load_stream_state(crate::RULES_STATE_KEY).await.unwrap().unwrap(),
    )
    .unwrap();
    assert_eq!(saved.rules.rules.len(), 1);
    assert_eq!(
        saved.file,
        AlertRulesConfig::default(),
        "the file's section it replaced is kept with it"
    );
}

#[tokio::test]
async fn single_rules_are_added_replaced_and_removed() {
    let (s, mut commands) = state_with_engine().await;
    // The engine side: accept every rule set, report the ids it got.
    let (ids_tx, mut ids) = mpsc::channel::<Vec<String>>(8);
    tokio::spawn(async move {
        while let Some(StreamCommand::SetRules { rules, done }) = commands.recv().await {
            let _ = done.send(());
            let _ = ids_tx.send(rules.rules.iter().map(|r| r.id.to_string()).collect()).await;
        }
    });
    let rule =
        r#"{"severity":"warning","threshold":{"metric":"no2_ugm3","above":150.0,"for":"10m"}}"#;
    let (st, body) = send(&s, "PUT", "/api/v1/alert-rules/no2-watch", rule).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert!(ids.recv().await.unwrap().contains(&"no2-watch".to_owned()));
    let (st, one) = get(&s, "/api/v1/alert-rules/no2-watch").await;
    assert_eq!((st, one["rule"]["severity"].as_str()), (StatusCode::OK, Some("warning")));
    let critical = r#"{"id":"no2-watch","severity":"critical","threshold":{"metric":"no2_ugm3","above":150.0,"for":"10m"}}"#;
    assert_eq!(send(&s, "PUT", "/api/v1/alert-rules/no2-watch", critical).await.0, StatusCode::OK);
    ids.recv().await.unwrap();
    assert_eq!(
        get(&s, "/api/v1/alert-rules/no2-watch").await.1["rule"]["severity"],
        "critical",
        "replaced, not added twice"
    );
    assert_eq!(
        get(&s, "/api/v1/alert-rules").await.1["rules"]["rules"].as_array().unwrap().len(),
        1
    );
    let (st, body) = send(&s, "PUT", "/api/v1/alert-rules/other", critical).await;
    assert_eq!(
        (st, body["error"]["param"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("id")),
        "ids of body and path differ"
    );
    let (st, body) = send(
        &s,
        "PUT",
        "/api/v1/alert-rules/x",
        r#"{"severity":"info","threshold":{"metric":"warp","above":1}}"#,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(send(&s, "DELETE", "/api/v1/alert-rules/no2-watch", "").await.0, StatusCode::OK);
    assert!(!ids.recv().await.unwrap().contains(&"no2-watch".to_owned()));
    assert_eq!(get(&s, "/api/v1/alert-rules/no2-watch").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        send(&s, "DELETE", "/api/v1/alert-rules/no2-watch", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&s, "/api/v1/alert-rules/bad%20id").await.1["error"]["param"], "id");
}

#[tokio::test]
async fn rules_need_a_running_engine() {
    let s = state().await;
    assert_eq!(get(&s, "/api/v1/alert-rules").await.0, StatusCode::SERVICE_UNAVAILABLE);
}
