//! Hostile websocket clients: bad messages get an error frame each, one over the size
//! limit is closed alone, thousands of subscriptions from one socket keep memory put; a
//! slow reader neither blocks the others nor grows the server's memory.

use super::*;

async fn ws_connect(
    port: u16,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio_tungstenite::connect_async(sccr_tests::live_url(port)).await.expect("websocket").0
}

/// The next text frame as JSON (skipping pings), or None when the server closed.
async fn next_frame<S>(ws: &mut S) -> Option<serde_json::Value>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => {
                let frame: serde_json::Value = serde_json::from_str(&t).expect("json");
                if frame["type"] != "heartbeat" {
                    return Some(frame);
                }
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_websocket_clients_get_errors_or_are_closed_and_others_are_served() {
    let e = env("hostile-ws").await;
    let port = e.sccr.api_port;
    let pid = e.sccr.pid().unwrap();

    // Bad messages: an error frame each (counted), the connection stays open.
    let ws_errors = |m: &BTreeMap<String, f64>| -> f64 {
        m.iter().filter(|(k, _)| k.starts_with("sccr_ws_errors_total{")).map(|(_, v)| v).sum()
    };
    let errors_before = ws_errors(&metrics(port).await);
    let mut ws = ws_connect(port).await;
    // Over the 10,000-key limit yet under the 2 MiB message limit.
    let too_many = vec!["a"; 10_001];
    let bad = [
        "not json".to_owned(),
        "{}".to_owned(),
        r#"{"type":"subscribe","devices":"loop-1"}"#.to_owned(),
        r#"{"type":"subscribe","devices":["x'; DROP TABLE readings;--"]}"#.to_owned(),
        r#"{"type":"subscribe","devices":["località"]}"#.to_owned(),
        r#"{"type":"subscribe","metrics":["warp_factor"]}"#.to_owned(),
        r#"{"type":"subscribe","extra":1}"#.to_owned(),
        format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)),
        serde_json::json!({"type": "subscribe", "devices": too_many}).to_string(),
    ];
    for text in &bad {
        assert!(text.len() < 2 * 1024 * 1024, "case over the message limit");
        ws.send(Message::Text(text.clone().into())).await.unwrap();
        let f = next_frame(&mut ws).await.expect("still open");
        assert_eq!(f["type"], "error", "{} → {f}", &text[..text.len().min(60)]);
        assert!(f["code"] == "bad_message" || f["code"] == "bad_subscription", "{f}");
    }
    ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(next_frame(&mut ws).await.expect("open")["type"], "error");
    let counted = ws_errors(&metrics(port).await) - errors_before;
    assert_eq!(counted, (bad.len() + 1) as f64, "sccr_ws_errors_total moved by {counted}");
    ws.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_frame(&mut ws).await.expect("open")["type"], "pong");

    // A message over the 2 MiB limit gets an error frame and a close with 1009, and only
    // that connection is closed.
    let mut huge = ws_connect(port).await;
    let _ = huge.send(Message::Text("x".repeat(3 * 1024 * 1024).into())).await;
    let f = next_frame(&mut huge).await.expect("an error frame before the close");
    assert_eq!((f["type"].as_str(), f["code"].as_str()), (Some("error"), Some("message_too_big")));
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(20), huge.next()).await.expect("a close") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1009));
    ws.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_frame(&mut ws).await.expect("open")["type"], "pong");

    // Thousands of subscriptions from one socket: each replaces the last; memory stays put.
    let rss_before = rss_kib(pid).unwrap();
    let (mut tx, mut rx) = ws_connect(port).await.split();
    let subs = 5_000;
    let reader = tokio::spawn(async move {
        let mut snapshots = 0;
        while snapshots < subs {
            match next_frame(&mut rx).await {
                Some(f) if f["type"] == "snapshot" => snapshots += 1,
                Some(_) => {}
                None => break,
            }
        }
        (snapshots, rx)
    });
    for i in 0..subs {
        let devices: Vec<String> = (0..100).map(|d| format!("sub-{i}-{d}")).collect();
        tx.send(Message::Text(
            serde_json::json!({"type": "subscribe", "devices": devices}).to_string().into(),
        ))
        .await
        .unwrap();
    }
    let (snapshots, mut rx) = reader.await.unwrap();
    assert_eq!(snapshots, subs);
    let rss_after = rss_kib(pid).unwrap();
    eprintln!(
        "{subs} subscriptions on one socket: sccr RSS {} MiB before, {} MiB after",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The last subscription is the one in force.
    let t = recent_base_ms() + 3_500_000;
    let last = format!("sub-{}-7", subs - 1);
    publish_all(
        e.port,
        "ws-last",
        vec![
            (telemetry_topic("sub-0-7"), compact(1, t, &[("speed_kmh", 1.0)])),
            (telemetry_topic(&last), compact(1, t, &[("speed_kmh", 2.0)])),
        ],
    )
    .await
    .unwrap();
    loop {
        let f = next_frame(&mut rx).await.expect("open");
        if f["type"] == "delta" {
            let devices: Vec<&str> = f["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["device"].as_str().unwrap())
                .collect();
            assert!(!devices.contains(&"sub-0-7"), "an old subscription is still in force: {f}");
            if devices.contains(&last.as_str()) {
                break;
            }
        }
    }
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_websocket_reader_neither_blocks_others_nor_grows_memory() {
    let e = env("hostile-slow").await;
    let port = e.sccr.api_port;
    let pid = e.sccr.pid().unwrap();
    // The slow client subscribes to everything, reads its snapshot, then stops reading.
    let mut slow = ws_connect(port).await;
    slow.send(Message::Text(r#"{"type":"subscribe"}"#.into())).await.unwrap();
    assert_eq!(next_frame(&mut slow).await.unwrap()["type"], "snapshot");
    let mut fast = ws_connect(port).await;
    fast.send(Message::Text(r#"{"type":"subscribe","devices":["fast-1"]}"#.into())).await.unwrap();
    assert_eq!(next_frame(&mut fast).await.unwrap()["type"], "snapshot");
    let rss_before = rss_kib(pid).unwrap();

    // 60,000 readings for 200 devices while the slow client's socket fills up.
    let base = recent_base_ms();
    let messages: Vec<(String, Vec<u8>)> = (0..6_000)
        .map(|i| {
            let t = base + (i / 200) as i64 * 1_000;
            let readings: Vec<(&str, f64)> = vec![("speed_kmh", (i % 90) as f64); 1];
            let mut payload = compact(i as u64, t, &readings);
            if i % 200 == 0 {
                payload = compact(
                    i as u64,
                    t,
                    &[
                        ("speed_kmh", 1.0),
                        ("occupancy_pct", 5.0),
                        ("vehicle_count", 3.0),
                        ("flow_vph", 100.0),
                    ],
                );
            }
            (telemetry_topic(&format!("slow-{}", i % 200)), payload)
        })
        .collect();
    publish_all(e.port, "slow-flood", messages).await.unwrap();
    let t = recent_base_ms() + 3_600_000 - 1;
    publish_all(
        e.port,
        "fast-1",
        vec![(telemetry_topic("fast-1"), compact(1, t, &[("speed_kmh", 77.0)]))],
    )
    .await
    .unwrap();
    // The fast client gets its value although the slow one reads nothing.
    loop {
        let f = next_frame(&mut fast).await.expect("open");
        if f["type"] == "delta"
            && f["values"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["device"] == "fast-1" && v["value"] == 77.0)
        {
            break;
        }
    }
    let rss_after = rss_kib(pid).unwrap();
    eprintln!(
        "slow reader under 6,000 messages: sccr RSS {} MiB before, {} MiB after",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        rss_after < rss_before + 48 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The slow client, reading again, catches up (a resync snapshot when it fell behind).
    let mut resynced = false;
    while let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(Duration::from_secs(5), slow.next()).await
    {
        let f: serde_json::Value = serde_json::from_str(&text).unwrap();
        if f["type"] == "snapshot" && f["reason"] == "resync" {
            resynced = true;
            break;
        }
    }
    eprintln!("slow reader got a resync snapshot: {resynced}");
}
