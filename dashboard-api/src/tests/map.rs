//! The wall map's routes: the catalogue, the devices' positions and presence in pages, the
//! basemap settings and the PMTiles file by byte range.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::{json, Value};
use store::DeviceRecord;
use telemetry::{DeviceId, DeviceState, EventTime, RoadSegment, SegmentId, StatusEvent};
use tower::ServiceExt;

use super::{get, reading, state, T0};
use crate::basemap::{Basemap, WallSettings};
use crate::{app, AppState};

fn segment(id: &str, coordinates: Vec<[f64; 2]>) -> RoadSegment {
    RoadSegment {
        id: SegmentId::parse(id).unwrap(),
        name: format!("Via {id}"),
        kind: "urban".into(),
        coordinates,
        length_m: 1_000.0,
        lanes: 2,
        speed_limit_kmh: 50.0,
        free_flow_kmh: 45.0,
        capacity_vph: 1_800.0,
    }
}

fn device(id: &str, kind: Option<&str>, seg: Option<&str>) -> DeviceRecord {
    DeviceRecord {
        id: DeviceId::parse(id).unwrap(),
        kind: kind.map(str::to_owned),
        segment: seg.map(|s| SegmentId::parse(s).unwrap()),
        registered_at: EventTime(T0),
    }
}

/// Every row of every page, following next_cursor from the first page of `limit`.
async fn all_pages(s: &AppState, limit: usize) -> (Vec<Value>, usize) {
    let (mut rows, mut pages) = (Vec::new(), 0);
    let mut uri = format!("/api/v1/map/devices?limit={limit}");
    loop {
        let (st, body) = get(s, &uri).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        pages += 1;
        let page = body["rows"].as_array().unwrap();
        assert!(page.len() <= limit);
        rows.extend(page.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/v1/map/devices?limit={limit}&cursor={c}"),
            None => break,
        }
    }
    (rows, pages)
}

#[tokio::test]
async fn the_catalogue_is_served_with_the_registry_kinds() {
    let s = state().await;
    s.store.upsert_segments(&[segment("via-a", vec![[11.0, 43.0], [11.01, 43.0]])]).await.unwrap();
    s.store
        .upsert_devices(&[
            device("aq-1", Some("air_quality"), Some("via-a")),
            device("loop-2", Some("traffic_loop"), None),
        ])
        .await
        .unwrap();
    let (st, body) = get(&s, "/api/v1/catalogue").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["registered_device_kinds"], json!(["air_quality", "traffic_loop"]));
    let known = telemetry::DeviceKind::ALL.map(telemetry::DeviceKind::as_str);
    assert_eq!(body["device_kinds"], json!(known), "every kind a rule accepts, before any device");
    assert_eq!(body["metrics"].as_array().unwrap().len(), telemetry::MetricId::ALL.len());
    let speed = body["metrics"].as_array().unwrap().iter().find(|m| m["id"] == "speed_kmh");
    let speed = speed.unwrap();
    assert_eq!(speed["label"], json!({"en": "Speed", "it": "Velocità"}));
    assert_eq!((speed["unit"].as_str(), speed["aggregate"].as_str()), (Some("km/h"), Some("avg")));
    assert_eq!(body["los"]["levels"][0], json!({"los": "A", "above_ratio": 0.85}));
    assert_eq!(body["los"]["levels"][5], json!({"los": "F", "above_ratio": null}));
    assert_eq!(body["live"], json!({"speed_fresh_s": 90, "device_online_s": 300}));
    let (st, body) = get(&s, "/api/v1/catalogue?lang=it").await;
    assert_eq!((st, body["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("lang")));
}

#[tokio::test]
async fn map_devices_are_placed_on_their_segments_with_presence() {
    let s = state().await;
    s.store
        .upsert_segments(&[
            // 0.01° of longitude east, then 0.01° more: devices at 1/3 and 2/3 of its length.
            segment("via-a", vec![[11.0, 43.0], [11.01, 43.0], [11.02, 43.0]]),
            segment("via-b", vec![[11.1, 43.1], [11.1, 43.2]]),
        ])
        .await
        .unwrap();
    s.store
        .upsert_devices(&[
            device("a-2", Some("loop"), Some("via-a")),
            device("a-1", Some("loop"), Some("via-a")),
            device("a-gone", Some("loop"), Some("via-a")),
            device("b-1", None, Some("via-b")),
        ])
        .await
        .unwrap();
    s.store.decommission_device(&DeviceId::parse("a-gone").unwrap(), EventTime(T0)).await.unwrap();
    s.hub.apply(&[reading("a-1", T0, 30.0)]);
    s.hub.set_status(&StatusEvent {
        device: DeviceId::parse("b-1").unwrap(),
        state: DeviceState::Offline,
        received_at: EventTime::now(),
        retained: false,
    });
    let (st, body) = get(&s, "/api/v1/map/devices").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        body["columns"],
        json!(["id", "kind", "segment", "lon", "lat", "online", "last_seen"])
    );
    assert_eq!(body["next_cursor"], Value::Null);
    let rows = body["rows"].as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(ids, ["a-1", "a-2", "b-1", "loop-1"], "id order, decommissioned left out");
    let a1 = &rows[0];
    assert_eq!((a1[1].as_str(), a1[2].as_str()), (Some("loop"), Some("via-a")));
    let lon = a1[3].as_f64().unwrap();
    assert!((lon - (11.0 + 0.02 / 3.0)).abs() < 2e-6, "{lon}");
    assert_eq!(a1[4], 43.0);
    assert_eq!(a1[5], true);
    let seen = a1[6].as_i64().unwrap();
    assert!((EventTime::now().millis() - seen).abs() < 60_000, "{seen}");
    let a2 = &rows[1];
    assert!((a2[3].as_f64().unwrap() - (11.0 + 0.04 / 3.0)).abs() < 2e-6, "{a2}");
    assert_eq!((a2[5].clone(), a2[6].clone()), (Value::Null, Value::Null), "never heard of");
    let b1 = &rows[2];
    assert_eq!(b1[1], Value::Null);
    assert_eq!((b1[3].as_f64(), b1[4].as_f64()), (Some(11.1), Some(43.15)), "the middle");
    assert_eq!((b1[5].clone(), b1[6].clone()), (json!(false), Value::Null), "went offline");
    let loop1 = &rows[3];
    assert_eq!(
        (loop1[2].clone(), loop1[3].clone(), loop1[4].clone()),
        (Value::Null, Value::Null, Value::Null)
    );
}

#[tokio::test]
async fn map_device_pages_cover_every_device_once_and_refuse_bad_parameters() {
    let s = state().await;
    s.store
        .upsert_segments(&[
            segment("via-a", vec![[11.0, 43.0], [11.01, 43.0]]),
            segment("via-b", vec![[11.1, 43.1], [11.1, 43.2]]),
        ])
        .await
        .unwrap();
    // 5,003 devices over two segments and none: the default page is 5,000.
    let devices: Vec<DeviceRecord> = (0..5_003)
        .map(|i| {
            let seg = match i % 3 {
                0 => Some("via-a"),
                1 => Some("via-b"),
                _ => None,
            };
            device(&format!("dev-{i:05}"), Some("loop"), seg)
        })
        .collect();
    s.store.upsert_devices(&devices).await.unwrap();
    let expected: BTreeSet<String> =
        devices.iter().map(|d| d.id.to_string()).chain(["loop-1".to_owned()]).collect();

    let started = std::time::Instant::now();
    let (st, first) = get(&s, "/api/v1/map/devices").await;
    let took = started.elapsed();
    eprintln!("GET /api/v1/map/devices: 5000 rows in {took:?}");
    assert_eq!(st, StatusCode::OK);
    assert_eq!(first["rows"].as_array().unwrap().len(), 5_000);
    assert_eq!(first["next_cursor"], "dev-04999");
    let (st, second) = get(&s, "/api/v1/map/devices?cursor=dev-04999").await;
    assert_eq!(st, StatusCode::OK);
    let rest: Vec<&str> =
        second["rows"].as_array().unwrap().iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(rest, ["dev-05000", "dev-05001", "dev-05002", "loop-1"]);
    assert_eq!(second["next_cursor"], Value::Null);

    for limit in [997, 5_004, 20_000] {
        let (rows, pages) = all_pages(&s, limit).await;
        let ids: Vec<String> = rows.iter().map(|r| r[0].as_str().unwrap().to_owned()).collect();
        let unique: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(unique.len(), ids.len(), "limit {limit}: a device came twice");
        assert_eq!(unique, expected, "limit {limit}");
        assert_eq!(pages, 5_004_usize.div_ceil(limit) + usize::from(5_004 % limit == 0));
        // Positions: every device of a segment on it, spread at distinct places.
        let on_a: BTreeSet<String> = rows
            .iter()
            .filter(|r| r[2] == "via-a")
            .map(|r| format!("{}", r[3].as_f64().unwrap()))
            .collect();
        assert!(on_a.len() > 1_000, "{}", on_a.len());
    }

    // A device added before the cursor does not shift the next page.
    let (_, p1) = get(&s, "/api/v1/map/devices?limit=10").await;
    s.store.upsert_devices(&[device("dev-00000a", None, None)]).await.unwrap();
    let (_, p2) = get(&s, "/api/v1/map/devices?limit=10&cursor=dev-00009").await;
    assert_eq!(p1["rows"][9][0], "dev-00009");
    assert_eq!(p2["rows"][0][0], "dev-00010");

    let (st, body) = get(&s, "/api/v1/map/devices?limit=20001").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["param"], "limit");
    for bad in ["limit=0", "limit=-1", "limit=abc", "limit=1.5", "cursor=NOT%20AN%20ID", "bbox=1"] {
        let (st, body) = get(&s, &format!("/api/v1/map/devices?{bad}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

fn with_wall(s: &AppState, wall: WallSettings) -> AppState {
    AppState { wall: Arc::new(wall), ..s.clone() }
}

#[tokio::test]
async fn the_wall_tells_its_basemap_of_each_kind() {
    let s = state().await;
    let (st, body) = get(&s, "/api/v1/wall").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body, json!({"basemap": {"kind": "context"}}));
    let url = "https://tiles.comune.example/{z}/{x}/{y}.png";
    let xyz = with_wall(
        &s,
        WallSettings {
            basemap: Basemap::Xyz(url.into()),
            attribution: "© OSM".into(),
            max_zoom: 18,
        },
    );
    let (_, body) = get(&xyz, "/api/v1/wall").await;
    assert_eq!(
        body,
        json!({"basemap": {"kind": "xyz", "url": url, "attribution": "© OSM", "max_zoom": 18}})
    );
    let pm = with_wall(
        &s,
        WallSettings {
            basemap: Basemap::Pmtiles(PathBuf::from("/srv/city.pmtiles")),
            attribution: String::new(),
            max_zoom: 19,
        },
    );
    let (_, body) = get(&pm, "/api/v1/wall").await;
    assert_eq!(
        body,
        json!({"basemap": {"kind": "pmtiles", "url": "/basemap.pmtiles", "attribution": "", "max_zoom": 19}})
    );
    // Only a configured PMTiles file is served.
    let (st, _, body) = raw(&s, "GET", &[]).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{:?}", String::from_utf8_lossy(&body));
}

/// `/basemap.pmtiles` with these headers and no token: status, headers, body.
async fn raw(
    s: &AppState,
    method: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri("/basemap.pmtiles");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app(s.clone()).oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap().to_vec();
    (status, headers, body)
}

#[tokio::test]
async fn the_pmtiles_basemap_is_served_by_byte_range_without_a_token() {
    const SIZE: usize = 300_000;
    let dir = std::env::temp_dir().join(format!("sccr-pmtiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("florence.pmtiles");
    // A PMTiles v3 magic, then bytes that differ from their neighbours.
    let mut bytes: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 251) as u8).collect();
    bytes[..8].copy_from_slice(b"PMTiles\x03");
    std::fs::write(&path, &bytes).unwrap();
    let s = with_wall(
        &state().await,
        WallSettings {
            basemap: Basemap::parse(path.to_str().unwrap()).unwrap(),
            ..WallSettings::default()
        },
    );

    let (st, h, body) = raw(&s, "GET", &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-length"], SIZE.to_string().as_str());
    assert!(h.get("content-range").is_none());
    assert_eq!(body, bytes, "the whole file");
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.contains(&format!("{SIZE:x}-")), "{etag}");

    let part = |range: &'static str| {
        let s = s.clone();
        async move { raw(&s, "GET", &[("range", range)]).await }
    };
    for (range, first, last) in [
        ("bytes=0-0", 0, 0),
        ("bytes=299999-299999", SIZE - 1, SIZE - 1),
        ("bytes=299990-", SIZE - 10, SIZE - 1),
        ("bytes=-16", SIZE - 16, SIZE - 1),
        ("bytes=-400000", 0, SIZE - 1),
        ("bytes=250000-999999", 250_000, SIZE - 1),
        // Across several read chunks.
        ("bytes=100-200000", 100, 200_000),
        ("bytes=0-16383", 0, 16_383),
    ] {
        let (st, h, body) = part(range).await;
        assert_eq!(st, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(h["content-range"], format!("bytes {first}-{last}/{SIZE}").as_str(), "{range}");
        assert_eq!(h["content-length"], (last - first + 1).to_string().as_str(), "{range}");
        assert_eq!(h["accept-ranges"], "bytes");
        assert_eq!(body, bytes[first..=last], "{range}");
    }
    for range in [
        "bytes=300000-",
        "bytes=300000-300001",
        "bytes=-0",
        "bytes=abc",
        "bytes=0-1,5-6",
        "lines=0-1",
        "bytes=5-4",
    ] {
        let (st, h, body) = part(range).await;
        assert_eq!(st, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(h["content-range"], format!("bytes */{SIZE}").as_str(), "{range}");
        let err: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(err["error"]["code"], "range_not_satisfiable", "{range}");
    }

    // Validators: the same ETag answers 304; an If-Range of another version gets it whole.
    let (st, _, body) = raw(&s, "GET", &[("if-none-match", etag.as_str())]).await;
    assert_eq!((st, body.len()), (StatusCode::NOT_MODIFIED, 0));
    let (st, _, body) = raw(&s, "GET", &[("range", "bytes=0-9"), ("if-range", "\"old\"")]).await;
    assert_eq!((st, body.len()), (StatusCode::OK, SIZE));
    let (st, _, body) =
        raw(&s, "GET", &[("range", "bytes=0-9"), ("if-range", etag.as_str())]).await;
    assert_eq!((st, body.len()), (StatusCode::PARTIAL_CONTENT, 10));
    let (st, h, _) = raw(&s, "HEAD", &[("range", "bytes=0-9")]).await;
    assert_eq!((st, h["content-length"].to_str().unwrap()), (StatusCode::PARTIAL_CONTENT, "10"));

    // A file that disappears answers 503, not a crash.
    std::fs::remove_dir_all(&dir).unwrap();
    let (st, _, _) = raw(&s, "GET", &[("range", "bytes=0-9")]).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
}
