//! Websocket fan-out: many wall screens on one `sccr serve` while ingest runs.
//!
//! 10,000 websocket clients (500 in quick mode) each subscribe to one road segment of the
//! seed set and to that segment's probe device; the simulated fleet publishes about
//! 20,000 readings/s in the background (readings of devices no client lists, so they cost
//! the server routing, not frames); a probe publisher sends one reading every 20 ms to the
//! probe of the next segment, which reaches every client watching that segment. Latency is
//! publish (before the MQTT publish call) to the frame parsed in the client, same clock.
//! Reported: connection time, latency percentiles, server RSS (idle, with clients, under
//! load), the server's CPU, frames received per second.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use telemetry::segment::{parse_geojson, FLORENCE_SEED};
use telemetry::EventTime;
use tokio_tungstenite::tungstenite::Message;

use crate::{core, cpu_snapshot, cpu_split, round2, rss_mib, start_load};

/// Readings per second of background ingest.
const BACKGROUND_READINGS: f64 = 20_000.0;
/// Websocket connections opened at once while the clients connect.
const CONNECT_CONCURRENCY: usize = 100;

#[derive(Default)]
struct Shared {
    /// (probe device, reading time) → when it was published.
    sent: Mutex<HashMap<(String, i64), Instant>>,
    latencies_ms: Mutex<Vec<f64>>,
    subscribed: AtomicU64,
    frames: AtomicU64,
    measuring: std::sync::atomic::AtomicBool,
}

fn probe(segment: &str) -> String {
    format!("probe-{segment}")
}

async fn client(
    url: String,
    segment: String,
    shared: Arc<Shared>,
    gate: Arc<tokio::sync::Semaphore>,
) -> Result<()> {
    let permit = gate.acquire_owned().await?;
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let sub = json!({"type": "subscribe", "segments": [segment], "devices": [probe(&segment)]})
        .to_string();
    ws.send(Message::Text(sub.into())).await?;
    // The snapshot confirms the subscription.
    loop {
        let Some(msg) = ws.next().await else { bail!("closed before the snapshot") };
        if msg?.to_text().is_ok_and(|t| t.contains("\"snapshot\"")) {
            break;
        }
    }
    drop(permit);
    shared.subscribed.fetch_add(1, Ordering::Relaxed);
    while let Some(msg) = ws.next().await {
        let Ok(Message::Text(text)) = msg else { continue };
        shared.frames.fetch_add(1, Ordering::Relaxed);
        if !shared.measuring.load(Ordering::Relaxed) || !text.contains("\"delta\"") {
            continue;
        }
        let received = Instant::now();
        let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
        for v in frame["values"].as_array().into_iter().flatten() {
            let (Some(device), Some(t)) = (v["device"].as_str(), v["time"].as_i64()) else {
                continue;
            };
            let published = shared
                .sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(device.to_owned(), t))
                .copied();
            if let Some(at) = published {
                shared
                    .latencies_ms
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(received.duration_since(at).as_secs_f64() * 1000.0);
            }
        }
    }
    Ok(())
}

pub async fn run(quick: bool, dir: &Path) -> Result<Value> {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, MqttOptions};
    let clients = if quick { 500 } else { 10_000 };
    let secs = if quick { 5 } else { 20 };
    let segments: Vec<String> =
        parse_geojson(FLORENCE_SEED)?.into_iter().map(|s| s.id.to_string()).collect();
    let (broker, _db, procs) = core(1, dir).await?;
    let server = &procs[0];
    let pid = server.pid().unwrap_or(0);
    let rss_idle = rss_mib(pid);

    let shared = Arc::new(Shared::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let segment = segments[i % segments.len()].clone();
        tasks.push(tokio::spawn(client(
            sccr_tests::live_url(server.api_port),
            segment,
            shared.clone(),
            gate.clone(),
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while (shared.subscribed.load(Ordering::Relaxed) as usize) < clients {
        if Instant::now() > deadline
            || tasks.iter().filter(|t| t.is_finished()).count() > clients / 100
        {
            bail!(
                "only {} of {clients} websocket clients subscribed",
                shared.subscribed.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let rss_clients = rss_mib(pid);

    // Background ingest, then the probes.
    let (stop, counters, load) = start_load(broker.port, 2_000, BACKGROUND_READINGS / 4.5, "ws")?;
    let mut opts = MqttOptions::new("bench-ws-probe", "127.0.0.1", broker.port);
    opts.set_outgoing_inflight_upper_limit(100);
    let (mqtt, mut eventloop) = AsyncClient::new(opts, 100);
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    tokio::time::sleep(Duration::from_secs(1)).await;
    shared.measuring.store(true, Ordering::Relaxed);
    let (r0, f0) =
        (counters.readings.load(Ordering::Relaxed), shared.frames.load(Ordering::Relaxed));
    let cpu0 = cpu_snapshot(&[pid], broker.pid().unwrap_or(0));
    let window_start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut probes = 0u64;
    let mut rss_peak: f64 = rss_clients;
    while window_start.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let segment = &segments[probes as usize % segments.len()];
        let device = probe(segment);
        let t = EventTime::now().millis();
        let payload = json!({"seq": probes, "ts": t, "readings": [{"m": "speed_kmh", "v": (probes % 90) as f64}]}).to_string();
        shared
            .sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((device.clone(), t), Instant::now());
        mqtt.publish(
            format!("sccr/v1/devices/{device}/telemetry"),
            QoS::AtLeastOnce,
            false,
            payload,
        )
        .await?;
        probes += 1;
        if probes.is_multiple_of(50) {
            rss_peak = rss_peak.max(rss_mib(pid));
        }
    }
    let window = window_start.elapsed().as_secs_f64();
    let cpu1 = cpu_snapshot(&[pid], broker.pid().unwrap_or(0));
    let (r1, f1) =
        (counters.readings.load(Ordering::Relaxed), shared.frames.load(Ordering::Relaxed));
    // Let the last probes arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let _ = stop.send(true);
    let _ = load.await;
    poller.abort();
    for t in &tasks {
        t.abort();
    }
    let mut lat =
        std::mem::take(&mut *shared.latencies_ms.lock().unwrap_or_else(|e| e.into_inner()));
    if lat.len() < 100 {
        bail!("only {} latency samples arrived", lat.len());
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| round2(lat[((lat.len() - 1) as f64 * p).round() as usize]);
    let expected = probes as f64 * (clients as f64 / segments.len() as f64);
    Ok(json!({
        "clients": clients,
        "segments": segments.len(),
        "connect_s": round2(connect_secs),
        "background_readings_per_s": ((r1 - r0) as f64 / window).round(),
        "probe_publishes": probes,
        "samples": lat.len(),
        "delivered_ratio": round2(lat.len() as f64 / expected.max(1.0)),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        "frames_per_s": ((f1 - f0) as f64 / window).round(),
        "server_rss_mib": { "idle": round2(rss_idle), "with_clients": round2(rss_clients), "peak_under_load": round2(rss_peak) },
        "cpu": cpu_split(&cpu0, &cpu1),
    }))
}
