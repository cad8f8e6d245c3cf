//! The live protocol's extras: conflation, partial unsubscribe, bounding boxes, KPI
//! frames, heartbeats, the idle timeout and error counting.

use std::time::Duration;

use stream::{LevelOfService, LiveHub};
use telemetry::{DeviceId, EventTime, RoadSegment, SegmentId};

use super::{next_json, reading, segment_state, session, session_with, state, T0};
use crate::live::{Session, SessionConfig};

fn road(id: &str, name: &str, at: [f64; 2], length_m: f64) -> RoadSegment {
    RoadSegment {
        id: SegmentId::parse(id).unwrap(),
        name: name.into(),
        kind: "urban".into(),
        coordinates: vec![at, [at[0] + 0.001, at[1] + 0.001]],
        length_m,
        lanes: 2,
        speed_limit_kmh: 50.0,
        free_flow_kmh: 50.0,
        capacity_vph: 1800.0,
    }
}

/// A store with two segments far apart, each with a linked device.
async fn session_on_map(config: SessionConfig) -> (Session, std::sync::Arc<LiveHub>) {
    let s = state().await;
    s.store
        .upsert_segments(&[
            road("north", "Viale Nord", [11.25, 43.80], 1000.0),
            road("south", "Viale Sud", [11.25, 43.70], 3000.0),
        ])
        .await
        .unwrap();
    let link = |dev: &str, seg: &str| store::DeviceRecord {
        id: DeviceId::parse(dev).unwrap(),
        kind: None,
        segment: Some(SegmentId::parse(seg).unwrap()),
        registered_at: EventTime(T0),
    };
    s.store.upsert_devices(&[link("n1", "north"), link("s1", "south")]).await.unwrap();
    let hub = LiveHub::new(256);
    (Session { hub: hub.clone(), http: s.http.clone(), store: Some(s.store.clone()), config }, hub)
}

#[tokio::test]
async fn deltas_carry_the_latest_value_per_key_once() {
    let hub = LiveHub::new(256);
    let (tx, mut rx) = session(hub.clone());
    tx.send(Ok(r#"{"type":"subscribe"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "snapshot");
    // One burst the session drains at once: three values of "a", one of "b".
    for (dev, t, v) in [("a", 1, 1.0), ("b", 1, 5.0), ("a", 2, 2.0), ("a", 3, 3.0)] {
        hub.apply(&[reading(dev, T0 + t, v)]);
    }
    let delta = next_json(&mut rx).await;
    assert_eq!(delta["type"], "delta");
    let values: Vec<(String, f64)> = delta["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["device"].as_str().unwrap().to_owned(), v["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(values, [("a".to_owned(), 3.0), ("b".to_owned(), 5.0)]);
}

#[tokio::test]
async fn unsubscribing_some_keys_stops_exactly_those() {
    let hub = LiveHub::new(256);
    let (tx, mut rx) = session(hub.clone());
    tx.send(Ok(r#"{"type":"subscribe","segments":[]}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "snapshot");
    tx.send(Ok(r#"{"type":"unsubscribe","devices":["a"],"segments":["s1"]}"#.into()))
        .await
        .unwrap();
    let f = next_json(&mut rx).await;
    assert_eq!((f["type"].as_str(), f["devices"][0].as_str()), (Some("unsubscribed"), Some("a")));
    hub.apply(&[reading("a", T0, 1.0), reading("b", T0, 2.0)]);
    hub.publish_segments(vec![
        segment_state("s1", T0, 10.0, LevelOfService::F),
        segment_state("s2", T0, 40.0, LevelOfService::B),
    ]);
    let delta = next_json(&mut rx).await;
    assert_eq!(delta["values"].as_array().unwrap().len(), 1);
    assert_eq!(delta["values"][0]["device"], "b");
    assert_eq!(next_json(&mut rx).await["segment"]["segment"], "s2", "s1 is not sent");
    tx.send(Ok(r#"{"type":"unsubscribe","devices":["NOT OK"]}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["code"], "bad_unsubscribe");
}

#[tokio::test]
async fn a_bounding_box_selects_its_segments_and_their_devices() {
    let (ctx, hub) = session_on_map(SessionConfig::default()).await;
    let (tx, mut rx) = session_with(ctx);
    tx.send(Ok(r#"{"type":"subscribe","bbox":[11.2,43.78,11.3,43.82]}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "snapshot");
    hub.apply(&[reading("s1", T0, 1.0), reading("n1", T0, 2.0)]);
    let delta = next_json(&mut rx).await;
    assert_eq!(delta["values"].as_array().unwrap().len(), 1);
    assert_eq!(delta["values"][0]["device"], "n1");
    hub.publish_segments(vec![
        segment_state("south", T0, 10.0, LevelOfService::F),
        segment_state("north", T0, 40.0, LevelOfService::B),
    ]);
    assert_eq!(next_json(&mut rx).await["segment"]["segment"], "north");

    // A box over nothing selects nothing (not everything).
    tx.send(Ok(r#"{"type":"subscribe","bbox":[0,0,1,1]}"#.into())).await.unwrap();
    let snap = next_json(&mut rx).await;
    assert_eq!(snap["values"].as_array().unwrap().len(), 0);
    assert!(snap.get("segments").is_none());
    for bad in ["[11.3,43.7,11.2,43.8]", "[0,0,0]", "[0,-91,1,1]", r#"["a",0,1,1]"#] {
        tx.send(Ok(format!(r#"{{"type":"subscribe","bbox":{bad}}}"#))).await.unwrap();
        let f = next_json(&mut rx).await;
        assert_eq!(f["type"], "error", "{bad}");
    }
}

#[tokio::test]
async fn kpi_frames_sum_up_the_city() {
    let (ctx, hub) = session_on_map(SessionConfig {
        kpi_interval: Duration::from_millis(50),
        ..SessionConfig::default()
    })
    .await;
    hub.apply(&[reading("n1", T0, 40.0), reading("s1", T0, 10.0)]);
    hub.publish_segments(vec![
        segment_state("south", T0, 10.0, LevelOfService::F),
        segment_state("north", T0, 50.0, LevelOfService::A),
    ]);
    let (tx, mut rx) = session_with(ctx);
    tx.send(Ok(r#"{"type":"subscribe","values":false,"kpi":true}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut rx).await["type"], "snapshot");
    let f = loop {
        let f = next_json(&mut rx).await;
        if f["type"] == "kpi" {
            break f;
        }
    };
    let k = &f["kpi"];
    assert_eq!((k["devices_online"].as_u64(), k["devices_offline"].as_u64()), (Some(2), Some(0)));
    // Length-weighted: (50 × 1000 + 10 × 3000) / 4000 = 20.
    assert_eq!(k["city_speed_kmh"], 20.0);
    assert_eq!(k["worst_segments"][0]["segment"], "south");
    assert_eq!(k["worst_segments"][0]["name"], "Viale Sud");
    assert_eq!(k["worst_segments"][0]["los"], "F");
    assert_eq!(k["worst_segments"][0]["ratio"], 0.2);
    assert_eq!(k["worst_segments"][0]["free_flow_kmh"], 50.0);
    assert_eq!(k["worst_segments"][1]["segment"], "north");
    assert_eq!(k["alerts_open"]["critical"], 0);
}

#[tokio::test]
async fn worst_segments_rank_by_relative_speed_and_list_ten() {
    let s = state().await;
    let slow_road = |id: &str, free_flow: f64| RoadSegment {
        free_flow_kmh: free_flow,
        ..road(id, &format!("Via {id}"), [11.25, 43.77], 500.0)
    };
    // A quiet street at 25 of 28 km/h (LOS A) is slower than an avenue at 35 of 70 km/h
    // (LOS D, congested); twelve fast roads at ratios 0.80..0.69 (LOS B) fill the rest.
    let mut roads = vec![slow_road("via-calma", 28.0), slow_road("viale-lento", 70.0)];
    roads.extend((0..12).map(|i| slow_road(&format!("fast-{i:02}"), 100.0)));
    s.store.upsert_segments(&roads).await.unwrap();
    let hub = LiveHub::new(256);
    let mut states = vec![
        segment_state("via-calma", T0, 25.0, LevelOfService::A),
        segment_state("viale-lento", T0, 35.0, LevelOfService::D),
        // Not in the registry: no free-flow speed, so no ratio and no place in the list.
        segment_state("unknown", T0, 1.0, LevelOfService::F),
    ];
    states.extend(
        (0..12).map(|i| {
            segment_state(&format!("fast-{i:02}"), T0, 80.0 - i as f64, LevelOfService::B)
        }),
    );
    hub.publish_segments(states);
    let config =
        SessionConfig { kpi_interval: Duration::from_millis(50), ..SessionConfig::default() };
    let ctx = Session { hub, http: s.http.clone(), store: Some(s.store.clone()), config };
    let (tx, mut rx) = session_with(ctx);
    tx.send(Ok(r#"{"type":"subscribe","values":false,"kpi":true}"#.into())).await.unwrap();
    let f = loop {
        let f = next_json(&mut rx).await;
        if f["type"] == "kpi" {
            break f;
        }
    };
    let worst = f["kpi"]["worst_segments"].as_array().unwrap();
    assert_eq!(worst.len(), 10);
    let ids: Vec<&str> = worst.iter().map(|w| w["segment"].as_str().unwrap()).collect();
    assert_eq!(&ids[..4], ["viale-lento", "fast-11", "fast-10", "fast-09"]);
    assert!(!ids.contains(&"via-calma"), "ratio 0.893 is above every other's: {ids:?}");
    assert!(!ids.contains(&"unknown"));
    assert_eq!(worst[0]["ratio"], 0.5);
    assert_eq!(worst[0]["free_flow_kmh"], 70.0);
    assert_eq!(worst[0]["los"], "D");
    assert_eq!(worst[0]["speed_kmh"], 35.0);
    assert_eq!(worst[0]["name"], "Via viale-lento");
    assert_eq!(worst[1]["ratio"], 0.69);
    assert_eq!(worst[1]["los"], "B");
}

#[tokio::test]
async fn heartbeats_flow_and_a_silent_client_is_closed() {
    let hub = LiveHub::new(16);
    let config = SessionConfig {
        heartbeat: Duration::from_millis(40),
        idle_timeout: Duration::from_millis(300),
        ..SessionConfig::default()
    };
    let ctx = Session { config, ..Session::new(hub) };
    let http = ctx.http.clone();
    let (tx, mut rx) = session_with(ctx);
    assert_eq!(next_json(&mut rx).await["type"], "heartbeat");
    // Pings keep it alive past the idle timeout.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(500) {
        tx.send(Ok(r#"{"type":"ping"}"#.into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        http.ws_open.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "still open while the client talks"
    );
    // Then silence: an idle_timeout error, and the session ends.
    let closed = loop {
        let Some(text) =
            tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("closes in time")
        else {
            break true;
        };
        if text == crate::live::PING_MARK {
            continue;
        }
        let f: serde_json::Value = serde_json::from_str(&text).unwrap();
        if f["type"] == "error" {
            assert_eq!(f["code"], "idle_timeout");
        }
    };
    assert!(closed);
    assert_eq!(http.ws_errors("idle_timeout"), 1);
    assert_eq!(http.ws_open.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test]
async fn error_frames_are_counted_by_code() {
    let hub = LiveHub::new(16);
    let ctx = Session::new(hub);
    let http = ctx.http.clone();
    let (tx, mut rx) = session_with(ctx);
    for msg in ["nope", "{}", r#"{"type":"subscribe","devices":["A B"]}"#] {
        tx.send(Ok(msg.into())).await.unwrap();
        assert_eq!(next_json(&mut rx).await["type"], "error");
    }
    assert_eq!(http.ws_errors("bad_message"), 2);
    assert_eq!(http.ws_errors("bad_subscription"), 1);
}

#[tokio::test]
async fn history_of_an_area_combines_the_segments_inside_it() {
    let s = state().await;
    s.store.upsert_segments(&[road("north", "Viale Nord", [11.25, 43.80], 1000.0)]).await.unwrap();
    let linked = store::DeviceRecord {
        id: DeviceId::parse("loop-1").unwrap(),
        kind: None,
        segment: Some(SegmentId::parse("north").unwrap()),
        registered_at: EventTime(T0),
    };
    s.store.upsert_devices(&[linked]).await.unwrap();
    let q =
        format!("/api/v1/history?metric=speed_kmh&from={T0}&to={}&resolution=raw", T0 + 3_600_000);
    let (st, body) = super::get(&s, &format!("{q}&bbox=11.2,43.78,11.3,43.82")).await;
    assert_eq!(st, axum::http::StatusCode::OK, "{body}");
    assert_eq!(body["points"].as_array().unwrap().len(), 120);
    assert_eq!(body["segments"], serde_json::json!(["north"]));
    let (_, body) = super::get(&s, &format!("{q}&bbox=0,0,1,1")).await;
    assert!(body["points"].as_array().unwrap().is_empty(), "an empty area has no history");
    for bad in ["1,2,3", "a,b,c,d", "11.3,43.7,11.2,43.8"] {
        assert_eq!(
            super::get(&s, &format!("{q}&bbox={bad}")).await.1["error"]["param"],
            "bbox",
            "{bad}"
        );
    }
    assert_eq!(
        super::get(&s, &format!("{q}&bbox=0,0,1,1&segment=north")).await.0,
        axum::http::StatusCode::UNPROCESSABLE_ENTITY
    );
}
