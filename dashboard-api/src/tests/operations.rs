//! Road operations through the router: roles, idempotent creation, If-Match, the live
//! push, and the impact's figures against the readings.

use super::*;

fn body(kind: &str, extra: &str) -> String {
    format!(
        r#"{{"kind":"{kind}","title":"Works","severity":"moderate","agency":"utilities","point":[11.25,43.77],"planned":{{"from":"{}","to":"{}"}}{extra}}}"#,
        EventTime(T0 + 60_000).to_rfc3339(),
        EventTime(T0 + 90_000).to_rfc3339(),
    )
}

async fn send_with(
    state: &AppState,
    token: &str,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp =
        app(state.clone()).oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn roles_decide_who_creates_and_changes_which_operations() {
    let s = state().await;
    // A planner (or a permit system's token) plans roadworks, with a key.
    let key = [("idempotency-key", "PERM-1")];
    let works = body("roadworks", r#","external_ref":"PERM-1""#);
    let (st, h, op) = send_with(&s, PLANNER, "POST", "/api/v1/operations", &key, &works).await;
    assert_eq!(st, StatusCode::CREATED, "{op}");
    assert_eq!(h["etag"], "\"1\"");
    assert_eq!(
        h["location"].to_str().unwrap(),
        format!("/api/v1/operations/{}", op["id"].as_str().unwrap())
    );
    assert_eq!((op["created_by"].as_str(), op["status"].as_str()), (Some("pia"), Some("planned")));
    // The same key and body: the same operation; another body: 409.
    let (st, _, again) = send_with(&s, PLANNER, "POST", "/api/v1/operations", &key, &works).await;
    assert_eq!((st, &again["id"]), (StatusCode::OK, &op["id"]));
    let (st, _, _) =
        send_with(&s, PLANNER, "POST", "/api/v1/operations", &key, &body("event", "")).await;
    assert_eq!(st, StatusCode::CONFLICT);
    // Planners plan roadworks and events only, and only while planned.
    let (st, _) = send_as(&s, PLANNER, "POST", "/api/v1/operations", &body("closure", "")).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) =
        send_as(&s, PLANNER, "POST", "/api/v1/operations", &body("event", r#","status":"active""#))
            .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let path = format!("/api/v1/operations/{}", op["id"].as_str().unwrap());
    let v1 = [("if-match", "\"1\"")];
    let (st, _, _) = send_with(&s, PLANNER, "PATCH", &path, &v1, r#"{"kind":"closure"}"#).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "works cannot become a closure by a planner");
    let (st, h, changed) =
        send_with(&s, PLANNER, "PATCH", &path, &v1, r#"{"title":"Gas main"}"#).await;
    assert_eq!((st, h["etag"].to_str().unwrap()), (StatusCode::OK, "\"2\""), "{changed}");
    // Moves are the operators'.
    let (st, _) =
        send_as(&s, PLANNER, "POST", &format!("{path}/status"), r#"{"status":"active"}"#).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, active) =
        send_as(&s, ADA, "POST", &format!("{path}/status"), r#"{"status":"active"}"#).await;
    assert_eq!((st, active["status"].as_str()), (StatusCode::OK, Some("active")));
    let (st, _, _) =
        send_with(&s, PLANNER, "PATCH", &path, &[("if-match", "\"3\"")], r#"{"title":"x"}"#).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "an active operation is the operators'");
    // Everyone annotates; devices read nothing.
    let (st, noted) =
        send_as(&s, PLANNER, "POST", &format!("{path}/notes"), r#"{"text":"Permit extended"}"#)
            .await;
    assert_eq!((st, noted["notes"][0]["by"].as_str()), (StatusCode::OK, Some("pia")));
    let (st, _, _) = send_with(&s, DEVICE, "GET", "/api/v1/operations", &[], "").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // PATCH without If-Match: 428; with a stale one: 412.
    let (st, _, e) = send_with(&s, ADA, "PATCH", &path, &[], r#"{"title":"x"}"#).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (StatusCode::PRECONDITION_REQUIRED, Some("precondition_required"))
    );
    let (st, _, e) = send_with(&s, ADA, "PATCH", &path, &v1, r#"{"title":"x"}"#).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (StatusCode::PRECONDITION_FAILED, Some("precondition_failed"))
    );
    // The list finds it by kind and agency; the trail has every change.
    let (st, list) = get(&s, "/api/v1/operations?kind=roadworks&agency=utilities").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list["operations"].as_array().unwrap().len(), 1, "{list}");
    let (_, trail) = get(&s, &format!("{path}/history")).await;
    let actions: Vec<&str> = trail["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "updated", "status_changed", "note_added"]);
}

#[tokio::test]
async fn changes_are_pushed_to_every_live_client() {
    let s = state().await;
    let (tx, mut rx) = session(s.hub.clone());
    tx.send(Ok(r#"{"type":"subscribe","values":false}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "snapshot");
    let (st, op) = send(&s, "POST", "/api/v1/operations", &body("incident", "")).await;
    assert_eq!(st, StatusCode::CREATED);
    let f = next_json(&mut rx).await;
    assert_eq!((f["type"].as_str(), &f["operation"]["id"]), (Some("operation"), &op["id"]));
}

#[tokio::test]
async fn the_impact_compares_the_window_with_before_after_and_a_week_earlier() {
    let s = state().await;
    let seg = telemetry::SegmentId::parse("viale-strozzi").unwrap();
    s.store
        .upsert_segments(&[telemetry::RoadSegment {
            id: seg.clone(),
            name: "Viale Filippo Strozzi".into(),
            kind: "ring".into(),
            coordinates: vec![[11.246, 43.781], [11.252, 43.780]],
            length_m: 520.0,
            lanes: 3,
            speed_limit_kmh: 50.0,
            free_flow_kmh: 45.0,
            capacity_vph: 2700.0,
        }])
        .await
        .unwrap();
    s.store
        .upsert_devices(&[store::DeviceRecord {
            id: DeviceId::parse("loop-1").unwrap(),
            kind: Some("traffic_loop".into()),
            segment: Some(seg),
            registered_at: EventTime(T0),
        }])
        .await
        .unwrap();
    let (st, op) = send(
        &s,
        "POST",
        "/api/v1/operations",
        &body("roadworks", r#","segments":["viale-strozzi"]"#),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{op}");
    let (st, impact) =
        get(&s, &format!("/api/v1/operations/{}/impact", op["id"].as_str().unwrap())).await;
    assert_eq!(st, StatusCode::OK, "{impact}");
    let one = &impact["segments"][0];
    // loop-1 read speed i at T0 + i s: the window is i = 60..90, before 30..60, after 90..120.
    let figures = |p: &str| (one[p]["count"].as_i64().unwrap(), one[p]["avg"].as_f64());
    assert_eq!(figures("before"), (30, Some(44.5)));
    assert_eq!(figures("during"), (30, Some(74.5)));
    assert_eq!(figures("after"), (30, Some(104.5)));
    assert_eq!(figures("baseline"), (0, None));
    assert_eq!(one["during"]["from"], EventTime(T0 + 60_000).to_rfc3339());
}
