//! Road segments as GeoJSON with their live state; segment and alert frames following
//! the subscription.

use super::*;

#[tokio::test]
async fn segments_are_geojson_with_their_live_state() {
    let s = state().await;
    let seg = telemetry::RoadSegment {
        id: telemetry::SegmentId::parse("viale-strozzi").unwrap(),
        name: "Viale Filippo Strozzi".into(),
        kind: "ring".into(),
        coordinates: vec![[11.246, 43.781], [11.252, 43.780]],
        length_m: 520.0,
        lanes: 3,
        speed_limit_kmh: 50.0,
        free_flow_kmh: 45.0,
        capacity_vph: 2700.0,
    };
    let mut quiet = seg.clone();
    quiet.id = telemetry::SegmentId::parse("lungarno-corsini").unwrap();
    s.store.upsert_segments(&[seg, quiet]).await.unwrap();
    s.hub.publish_segments(vec![segment_state(
        "viale-strozzi",
        T0,
        15.0,
        stream::LevelOfService::E,
    )]);
    let (st, body) = get(&s, "/api/v1/segments").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["type"], "FeatureCollection");
    let features = body["features"].as_array().unwrap();
    let strozzi = features.iter().find(|f| f["id"] == "viale-strozzi").unwrap();
    assert_eq!(strozzi["geometry"]["type"], "LineString");
    assert_eq!(strozzi["geometry"]["coordinates"][0][0], 11.246);
    let p = &strozzi["properties"];
    assert_eq!(
        (
            p["los"].as_str(),
            p["speed_kmh"].as_f64(),
            p["flow_vph"].as_f64(),
            p["occupancy_pct"].as_f64()
        ),
        (Some("E"), Some(15.0), Some(720.0), Some(31.0))
    );
    assert_eq!(p["window"]["start"], T0);
    assert_eq!(p["free_flow_kmh"], 45.0);
    let corsini = features.iter().find(|f| f["id"] == "lungarno-corsini").unwrap();
    assert!(corsini["properties"]["los"].is_null() && corsini["properties"]["window"].is_null());
}

#[tokio::test]
async fn segments_filter_by_bbox_and_simplify_by_zoom() {
    use serde_json::json;
    let s = state().await;
    let road = |id: &str, coordinates: Vec<[f64; 2]>| telemetry::RoadSegment {
        id: telemetry::SegmentId::parse(id).unwrap(),
        name: id.into(),
        kind: "local".into(),
        coordinates,
        length_m: 1000.0,
        lanes: 1,
        speed_limit_kmh: 50.0,
        free_flow_kmh: 40.0,
        capacity_vph: 600.0,
    };
    // A wiggly line of 201 points in the west, a straight one in the east.
    let wiggly: Vec<[f64; 2]> = (0..=200)
        .map(|i| [11.20 + f64::from(i) * 1e-4, 43.77 + if i % 2 == 0 { 0.0 } else { 2e-6 }])
        .collect();
    s.store
        .upsert_segments(&[
            road("west", wiggly.clone()),
            road("east", vec![[11.30, 43.77], [11.31, 43.77]]),
        ])
        .await
        .unwrap();
    let ids = |body: &Value| -> Vec<String> {
        body["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (st, all) = get(&s, "/api/v1/segments").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ids(&all), ["east", "west"], "no parameters: every segment, full geometry");
    let west = &all["features"][1]["geometry"]["coordinates"];
    assert_eq!(west.as_array().unwrap().len(), 201);
    // A box crossing the west line between two of its points still finds it.
    let (st, boxed) = get(&s, "/api/v1/segments?bbox=11.2005,43.76,11.2006,43.78").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ids(&boxed), ["west"]);
    // Zoom 12: the 2e-6 wiggle is far below a pixel, only the ends are left; zoom 22
    // keeps it.
    let (_, coarse) = get(&s, "/api/v1/segments?bbox=11.19,43.76,11.23,43.78&zoom=12").await;
    let line = coarse["features"][0]["geometry"]["coordinates"].as_array().unwrap().clone();
    assert_eq!(line.len(), 2);
    assert_eq!(line[0], json!(wiggly[0]));
    assert_eq!(line[1], json!(wiggly[200]));
    let (_, fine) = get(&s, "/api/v1/segments?zoom=22").await;
    let west = fine["features"].as_array().unwrap().iter().find(|f| f["id"] == "west").unwrap();
    assert_eq!(west["geometry"]["coordinates"].as_array().unwrap().len(), 201);
    // Bad parameters: the project's error body naming the parameter.
    for (query, status) in [
        ("zoom=23", StatusCode::BAD_REQUEST),
        ("zoom=x", StatusCode::BAD_REQUEST),
        ("bbox=1,2,3", StatusCode::BAD_REQUEST),
        ("bbox=11.3,43.8,11.2,43.7", StatusCode::UNPROCESSABLE_ENTITY),
        ("size=1", StatusCode::BAD_REQUEST),
    ] {
        let (st, body) = get(&s, &format!("/api/v1/segments?{query}")).await;
        assert_eq!(st, status, "{query}: {body}");
        assert!(body["error"].is_object() || body["error"].is_string(), "{query}: {body}");
    }
}

#[tokio::test]
async fn segment_and_alert_frames_follow_the_subscription() {
    let s = state().await;
    let hub = s.hub.clone();
    hub.publish_segments(vec![
        segment_state("viale-strozzi", T0, 40.0, stream::LevelOfService::A),
        segment_state("lungarno-corsini", T0, 40.0, stream::LevelOfService::A),
    ]);
    let id = raise(&s, "viale-strozzi", T0).await;
    let open = s.store.alert(id).await.unwrap().unwrap();
    hub.publish_alert(open.clone());
    let (tx, mut rx) = session(hub.clone());
    tx.send(Ok(
        r#"{"type":"subscribe","values":false,"segments":["viale-strozzi"],"alerts":true}"#.into(),
    ))
    .await
    .unwrap();
    let snap = next_json(&mut rx).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["segments"].as_array().unwrap().len(), 1);
    assert_eq!(snap["segments"][0]["segment"], "viale-strozzi");
    assert_eq!(snap["alerts"][0]["id"], id);
    assert!(snap["values"].as_array().unwrap().is_empty());

    hub.apply(&[reading("a", T0, 1.0)]); // values are off
    hub.publish_segments(vec![segment_state(
        "lungarno-corsini",
        T0 + 60_000,
        9.0,
        stream::LevelOfService::F,
    )]); // not subscribed
    hub.publish_segments(vec![segment_state(
        "viale-strozzi",
        T0 + 60_000,
        12.0,
        stream::LevelOfService::E,
    )]);
    let f = next_json(&mut rx).await;
    assert_eq!(f["type"], "segment", "{f}");
    assert_eq!(f["segment"]["segment"], "viale-strozzi");
    assert_eq!(f["segment"]["los"], "E");
    let acked = s.store.acknowledge_alert(id, "ada", None, EventTime(T0 + 1)).await.unwrap();
    hub.publish_alert(acked.clone());
    let f = next_json(&mut rx).await;
    assert_eq!(f["type"], "alert");
    assert_eq!(f["alert"]["state"], "acknowledged");
    assert_eq!(f["alert"]["acknowledged"]["by"], "ada");

    tx.send(Ok(r#"{"type":"unsubscribe"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "unsubscribed");
    hub.publish_segments(vec![segment_state(
        "viale-strozzi",
        T0 + 120_000,
        40.0,
        stream::LevelOfService::A,
    )]);
    tx.send(Ok(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "pong", "nothing after unsubscribe");

    // The original protocol (no segments, no alerts) gets neither.
    let (tx, mut rx) = session(hub.clone());
    tx.send(Ok(r#"{"type":"subscribe"}"#.into())).await.unwrap();
    let snap = next_json(&mut rx).await;
    assert!(snap.get("segments").is_none() && snap.get("alerts").is_none(), "{snap}");
    hub.publish_segments(vec![segment_state(
        "viale-strozzi",
        T0 + 180_000,
        40.0,
        stream::LevelOfService::A,
    )]);
    tx.send(Ok(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "pong");
}
