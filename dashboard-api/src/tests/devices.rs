//! The device registry over the API: registered, paged, updated and decommissioned.

use axum::http::StatusCode;
use serde_json::Value;

use super::{get, send, state};

#[tokio::test]
async fn devices_are_registered_paged_updated_and_decommissioned() {
    let s = state().await;
    let (st, body) =
        send(&s, "POST", "/api/v1/devices", r#"{"id":"loop-2","kind":"traffic_loop"}"#).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let password = body["mqtt"]["password"].as_str().unwrap();
    assert_eq!(body["mqtt"]["username"], "loop-2");
    assert_eq!(password.len(), 32);
    // Password files (the default): the answer says what to run before the device connects.
    assert_eq!(
        body["broker"],
        serde_json::json!({"provisioning": "password_file", "applied": false,
            "next": "run sccr mqtt-passwd --config sccr.toml --include services.passwd --out PASSWORD_FILE, then send the broker SIGHUP"})
    );
    let creds = s.store.device_credentials().await.unwrap();
    assert_eq!(creds.len(), 1);
    assert!(
        crate::credentials::verify(password, &creds[0].1),
        "the stored hash is the broker's hash of the password"
    );
    assert_eq!(
        send(&s, "POST", "/api/v1/devices", r#"{"id":"loop-2"}"#).await.0,
        StatusCode::CONFLICT,
        "registered twice"
    );
    // loop-1 was auto-registered by its telemetry: registering it issues credentials.
    assert_eq!(
        send(&s, "POST", "/api/v1/devices", r#"{"id":"loop-1","kind":"traffic_loop"}"#).await.0,
        StatusCode::CREATED
    );
    for i in 3..=7 {
        assert_eq!(
            send(
                &s,
                "POST",
                "/api/v1/devices",
                &format!(r#"{{"id":"aq-{i}","kind":"air_quality"}}"#)
            )
            .await
            .0,
            StatusCode::CREATED
        );
    }
    // 400: the body breaks the document; 422: it names a segment that does not exist.
    for (body, field, status) in [
        (r#"{"id":"Bad Id"}"#, "id", StatusCode::BAD_REQUEST),
        (r#"{"id":"x","segment":"no-such-segment"}"#, "segment", StatusCode::UNPROCESSABLE_ENTITY),
        (r#"{"id":"x","kind":"a b"}"#, "kind", StatusCode::BAD_REQUEST),
        (r#"{"id":"x","colour":1}"#, "colour", StatusCode::BAD_REQUEST),
        ("{", "body", StatusCode::BAD_REQUEST),
    ] {
        let (st, resp) = send(&s, "POST", "/api/v1/devices", body).await;
        assert_eq!(st, status, "{body}: {resp}");
        assert_eq!(resp["error"]["param"], field, "{body}: {resp}");
    }

    // Paging by cursor walks every device once, in id order.
    let mut seen = Vec::new();
    let mut uri = "/api/v1/devices?limit=3".to_owned();
    loop {
        let (st, page) = get(&s, &uri).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        seen.extend(
            page["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/v1/devices?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["aq-3", "aq-4", "aq-5", "aq-6", "aq-7", "loop-1", "loop-2"]);
    let (_, page) = get(&s, "/api/v1/devices?kind=traffic_loop").await;
    assert_eq!(page["devices"].as_array().unwrap().len(), 2);
    assert_eq!(get(&s, "/api/v1/devices?limit=0").await.1["error"]["param"], "limit");
    assert_eq!(get(&s, "/api/v1/devices?cursor=%20").await.1["error"]["param"], "cursor");

    // Kinds are a known set: another one is refused naming them, and the closest.
    let (st, body) =
        send(&s, "PATCH", "/api/v1/devices/aq-3", r#"{"kind":"air_quality_v2"}"#).await;
    assert_eq!(
        (st, body["error"]["param"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("kind"))
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("traffic_loop, traffic_light, parking, air_quality, gateway"),
        "{message}"
    );
    let (st, body) =
        send(&s, "POST", "/api/v1/devices", r#"{"id":"aq-9","kind":"air_qualty"}"#).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("did you mean \"air_quality\"?"));
    assert_eq!(get(&s, "/api/v1/devices/aq-9").await.0, StatusCode::NOT_FOUND, "not registered");
    let (st, body) = send(&s, "PATCH", "/api/v1/devices/aq-3", r#"{"kind":"gateway"}"#).await;
    assert_eq!((st, body["device"]["kind"].as_str()), (StatusCode::OK, Some("gateway")));
    let (st, body) = send(&s, "PATCH", "/api/v1/devices/aq-3", r#"{"kind":null}"#).await;
    assert_eq!((st, body["device"]["kind"].clone()), (StatusCode::OK, Value::Null));
    assert_eq!(
        send(&s, "PATCH", "/api/v1/devices/aq-3", r#"{"registered_at":1}"#).await.1["error"]
            ["param"],
        "registered_at"
    );
    assert_eq!(send(&s, "PATCH", "/api/v1/devices/nobody", "{}").await.0, StatusCode::NOT_FOUND);

    // A position (and bearing) for the cadastre import's linking; null clears it.
    let (st, body) = send(
        &s,
        "PATCH",
        "/api/v1/devices/aq-3",
        r#"{"position":{"lon":11.2471,"lat":43.7808,"bearing_deg":95}}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body["device"]["position"],
        serde_json::json!({"lon": 11.2471, "lat": 43.7808, "bearing_deg": 95.0})
    );
    assert_eq!(get(&s, "/api/v1/devices/aq-3").await.1["device"]["position"]["lat"], 43.7808);
    for bad in [
        r#"{"position":{"lon":200,"lat":43}}"#,
        r#"{"position":{"lon":11}}"#,
        r#"{"position":{"lon":11,"lat":43,"bearing_deg":360}}"#,
        r#"{"position":{"lon":11,"lat":43,"height":3}}"#,
        r#"{"position":"11,43"}"#,
    ] {
        let (st, body) = send(&s, "PATCH", "/api/v1/devices/aq-3", bad).await;
        assert_eq!(
            (st, body["error"]["param"].as_str()),
            (StatusCode::BAD_REQUEST, Some("position")),
            "{bad}: {body}"
        );
    }
    let (st, body) = send(&s, "PATCH", "/api/v1/devices/aq-3", r#"{"position":null}"#).await;
    assert_eq!((st, body["device"]["position"].clone()), (StatusCode::OK, Value::Null));

    let (st, body) = send(&s, "DELETE", "/api/v1/devices/aq-4", "").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["broker"]["applied"], false);
    assert!(body["broker"]["next"].as_str().unwrap().contains("sccr mqtt-passwd"));
    assert!(
        body["device"]["decommissioned_at"].is_number()
            && body["device"]["has_credentials"] == false
    );
    assert!(
        !s.store.device_credentials().await.unwrap().iter().any(|(d, _)| d.as_str() == "aq-4"),
        "no credentials left"
    );
    assert_eq!(
        get(&s, "/api/v1/devices?kind=air_quality").await.1["devices"].as_array().unwrap().len(),
        3,
        "decommissioned devices are hidden"
    );
    assert_eq!(
        get(&s, "/api/v1/devices?kind=air_quality&decommissioned=true").await.1["devices"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        send(&s, "POST", "/api/v1/devices/aq-4/credentials", "").await.0,
        StatusCode::NOT_FOUND,
        "no credentials for a decommissioned device"
    );
    assert_eq!(
        send(&s, "POST", "/api/v1/devices", r#"{"id":"aq-4"}"#).await.0,
        StatusCode::CREATED,
        "a decommissioned device can come back"
    );

    let (st, body) = send(&s, "POST", "/api/v1/devices/aq-5/credentials", "").await;
    assert_eq!(st, StatusCode::OK);
    let rotated = body["mqtt"]["password"].as_str().unwrap();
    assert_eq!(body["broker"]["provisioning"], "password_file");
    let hash = s
        .store
        .device_credentials()
        .await
        .unwrap()
        .into_iter()
        .find(|(d, _)| d.as_str() == "aq-5")
        .unwrap()
        .1;
    assert!(crate::credentials::verify(rotated, &hash));

    let (_, one) = get(&s, "/api/v1/devices/loop-1").await;
    assert_eq!(one["device"]["latest"][0]["metric"], "speed_kmh");
    assert_eq!(get(&s, "/api/v1/devices/nobody").await.0, StatusCode::NOT_FOUND);
    let (_, audit) = get(&s, "/api/v1/audit?limit=2").await;
    assert_eq!(audit["entries"][0]["action"], "device.credentials");
    let next = audit["next_cursor"].as_str().unwrap();
    let (_, older) = get(&s, &format!("/api/v1/audit?limit=2&cursor={next}")).await;
    assert_eq!(older["entries"][0]["action"], "device.decommission");
    // A gateway change is an ACL change: the answer names `sccr mqtt-acl`; other changes
    // touch nothing on the broker and say nothing about it.
    let (st, body) = send(&s, "PATCH", "/api/v1/devices/aq-5", r#"{"gateway":"loop-2"}"#).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body["broker"]["next"].as_str().unwrap().contains("sccr mqtt-acl"), "{body}");
    let (_, body) = send(&s, "PATCH", "/api/v1/devices/aq-5", r#"{"kind":"air_quality"}"#).await;
    assert!(body.get("broker").is_none(), "{body}");
}
