//! The wall map's server side end to end, through a real Mosquitto, a real PostgreSQL and
//! the real `sccr serve` process: `[wall] basemap` naming a PMTiles file is checked by
//! `sccr check-config`, told by `GET /api/v1/wall` and served by byte range at
//! `/basemap.pmtiles` with no token over a real socket; `GET /api/v1/map/devices` places
//! the registered devices on their segment and shows a device online once its telemetry
//! arrives; `GET /api/v1/catalogue` lists the registry's kinds.

use std::process::Command;
use std::time::Duration;

use sccr_tests::{
    compact, http_get, loop_on, publish_all, recent_base_ms, telemetry_topic, test_segment,
    wait_for, workspace_bin, Broker, Sccr, TempDir, TestDb,
};
use serde_json::{json, Value};
use store::{Store, StoreOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SEGMENT: &str = "via-test-map";

/// A GET with extra headers and no token: (status, head, body bytes).
async fn raw_get(port: u16, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, buf[split + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_gets_its_basemap_devices_and_catalogue_from_the_server() {
    let dir = TempDir::new("wall").unwrap();
    let tiles = dir.path.join("florence.pmtiles");
    let mut bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    bytes[..8].copy_from_slice(b"PMTiles\x03");
    std::fs::write(&tiles, &bytes).unwrap();
    let tiles = tiles.to_str().unwrap().to_owned();

    // check-config names the key of a bad basemap and takes a good one.
    let config = dir.path.join("sccr.toml");
    std::fs::write(&config, "[wall]\nbasemap_max_zoom = 18\n").unwrap();
    let check = |basemap: &str| {
        Command::new(workspace_bin("sccr").unwrap())
            .arg("check-config")
            .arg("--config")
            .arg(&config)
            .env_clear()
            .env("SCCR_WALL__BASEMAP", basemap)
            .output()
            .unwrap()
    };
    let bad = check("https://tiles.example/{z}/{x}.png");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("wall.basemap"), "{stderr}");
    let missing = check("/nonexistent/florence.pmtiles");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("wall.basemap"));
    assert!(check(&tiles).status.success(), "{}", String::from_utf8_lossy(&check(&tiles).stderr));

    let broker = Broker::start().await.expect("mosquitto");
    let db = TestDb::create().await.expect("database");
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("store");
    store.migrate().await.expect("migrate");
    store.upsert_segments(&[test_segment(SEGMENT)]).await.expect("segment");
    store
        .upsert_devices(&[loop_on("loop-map-a", SEGMENT), loop_on("loop-map-b", SEGMENT)])
        .await
        .expect("devices");
    store.close().await;
    let sccr = Sccr::serve(
        broker.port,
        &db.url,
        &dir.path,
        &[("SCCR_WALL__BASEMAP", &tiles), ("SCCR_WALL__BASEMAP_ATTRIBUTION", "© test")],
    )
    .expect("sccr");
    sccr.wait_healthy().await;
    let port = sccr.api_port;

    let (st, body) = http_get(port, "/api/v1/wall").await.unwrap();
    assert_eq!(st, 200, "{body}");
    let wall: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        wall,
        json!({"basemap": {"kind": "pmtiles", "url": "/basemap.pmtiles", "attribution": "© test", "max_zoom": 19}})
    );

    // The archive by range, with no token.
    let (st, head, body) = raw_get(port, "/basemap.pmtiles", "Range: bytes=0-7\r\n").await;
    assert_eq!(st, 206, "{head}");
    assert!(head.contains("content-range: bytes 0-7/200000"), "{head}");
    assert_eq!(body, b"PMTiles\x03");
    let (st, head, body) = raw_get(port, "/basemap.pmtiles", "Range: bytes=-70000\r\n").await;
    assert_eq!((st, body.len()), (206, 70_000), "{head}");
    assert_eq!(body, bytes[130_000..]);
    let (st, head, _) = raw_get(port, "/basemap.pmtiles", "Range: bytes=200000-\r\n").await;
    assert_eq!(st, 416);
    assert!(head.contains("content-range: bytes */200000"), "{head}");
    let (st, head, body) = raw_get(port, "/basemap.pmtiles", "").await;
    assert_eq!((st, body.len()), (200, bytes.len()));
    assert!(head.contains("accept-ranges: bytes"), "{head}");

    // Devices on the map: placed along the segment; online once heard from.
    let payload = compact(1, recent_base_ms(), &[("speed_kmh", 42.0)]);
    publish_all(broker.port, "map-pub", vec![(telemetry_topic("loop-map-a"), payload)])
        .await
        .expect("publish");
    let rows: Vec<Value> =
        wait_for("loop-map-a online on the map", Duration::from_secs(30), || async move {
            let (_, body) = http_get(port, "/api/v1/map/devices").await.ok()?;
            let page: Value = serde_json::from_str(&body).ok()?;
            let rows = page["rows"].as_array()?.clone();
            rows.iter().any(|r| r[0] == "loop-map-a" && r[5] == true).then_some(rows)
        })
        .await;
    let row =
        |id: &str| rows.iter().find(|r| r[0] == id).unwrap_or_else(|| panic!("{id}: {rows:?}"));
    let (a, b) = (row("loop-map-a"), row("loop-map-b"));
    assert_eq!((a[1].as_str(), a[2].as_str()), (Some("traffic_loop"), Some(SEGMENT)));
    assert!(a[6].as_i64().is_some(), "{a}");
    assert_eq!(b[5], Value::Null, "not heard of: {b}");
    // Two devices on a straight segment: at its thirds.
    let [p0, p1] = [[11.2460, 43.7810], [11.2520, 43.7800]];
    for (r, f) in [(a, 1.0 / 3.0), (b, 2.0 / 3.0)] {
        let (lon, lat) = (r[3].as_f64().unwrap(), r[4].as_f64().unwrap());
        assert!((lon - (p0[0] + (p1[0] - p0[0]) * f)).abs() < 2e-6, "{r}");
        assert!((lat - (p0[1] + (p1[1] - p0[1]) * f)).abs() < 2e-6, "{r}");
    }

    let (st, body) = http_get(port, "/api/v1/catalogue").await.unwrap();
    assert_eq!(st, 200, "{body}");
    let catalogue: Value = serde_json::from_str(&body).unwrap();
    assert!(catalogue["device_kinds"].as_array().unwrap().contains(&json!("traffic_loop")));
    assert_eq!(catalogue["metrics"].as_array().unwrap().len(), 17);
}
