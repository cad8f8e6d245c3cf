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
