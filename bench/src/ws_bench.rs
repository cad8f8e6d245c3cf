//! Websocket fan-out: many wall screens on one `sccr serve` while ingest runs.
//!
//! 10,000 websocket clients (500 in quick mode) each subscribe to one road segment of the
//! seed set and to that segment's probe device; the simulated fleet publishes about
//! 20,000 readings/s in the background (readings of devices no client lists, so they cost
//! the server routing, not frames); a probe publisher sends one reading every 20 ms to the
//! probe of the next segment, which reaches every client watching that segment. Latency is
//! publish (before the MQTT publish call) to the frame parsed in the client, same clock.
//!
//! The clients and the probe publisher run in their own process (`sccr-bench
//! --ws-clients`), so that the figure is not bent by the benchmark's own load generator
//! sharing their runtime, and the CPU of each side is read apart. Three rounds are
//! measured on the same connections, to show the spread. Reported per round: latency
//! percentiles, frames/s, CPU of the server, the client fleet and the broker; overall:
//! connection time and the server's RSS (idle, with clients, under load).

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use telemetry::segment::{parse_geojson, FLORENCE_SEED};
use telemetry::EventTime;
use tokio_tungstenite::tungstenite::Message;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::e2e::core;
use crate::load::start_load;
use crate::measure::{cpu_secs, cpu_snapshot, cpu_split, metric_value, round2, rss_mib, scrape};

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

/// What the client fleet is asked to do (the `--ws-clients` argument, as JSON).
struct FleetSpec {
    api_port: u16,
    mqtt_port: u16,
    clients: usize,
    round_secs: u64,
    rounds: usize,
}

impl FleetSpec {
    fn to_json(&self) -> String {
        json!({"api_port": self.api_port, "mqtt_port": self.mqtt_port, "clients": self.clients, "round_secs": self.round_secs, "rounds": self.rounds}).to_string()
    }

    fn parse(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)?;
        let n = |k: &str| v[k].as_u64().with_context(|| format!("--ws-clients: `{k}` missing"));
        Ok(Self {
            api_port: u16::try_from(n("api_port")?)?,
            mqtt_port: u16::try_from(n("mqtt_port")?)?,
            clients: usize::try_from(n("clients")?)?,
            round_secs: n("round_secs")?,
            rounds: usize::try_from(n("rounds")?)?,
        })
    }
}

/// Print one line of the fleet's protocol on stdout.
fn say(v: &Value) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

/// `sccr-bench --ws-clients SPEC`: connect the clients, say `subscribed`, wait for `go` on
/// stdin, then measure the rounds, saying `round_start` and `round_end` (with the
/// round's figures) for each.
pub async fn clients_main(spec: &str) -> Result<()> {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, MqttOptions};
    let spec = FleetSpec::parse(spec)?;
    let segments: Vec<String> =
        parse_geojson(FLORENCE_SEED)?.into_iter().map(|s| s.id.to_string()).collect();
    let shared = Arc::new(Shared::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(spec.clients);
    for i in 0..spec.clients {
        let segment = segments[i % segments.len()].clone();
        tasks.push(tokio::spawn(client(
            sccr_tests::live_url(spec.api_port),
            segment,
            shared.clone(),
            gate.clone(),
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while (shared.subscribed.load(Ordering::Relaxed) as usize) < spec.clients {
        if Instant::now() > deadline
            || tasks.iter().filter(|t| t.is_finished()).count() > spec.clients / 100
        {
            bail!(
                "only {} of {} websocket clients subscribed",
                shared.subscribed.load(Ordering::Relaxed),
                spec.clients
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    say(&json!({"event": "subscribed", "connect_s": round2(started.elapsed().as_secs_f64())}))?;
    let go = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await??;
    if go.trim() != "go" {
        bail!("expected `go` on stdin");
    }

    let mut opts = MqttOptions::new("bench-ws-probe", "127.0.0.1", spec.mqtt_port);
    opts.set_outgoing_inflight_upper_limit(100);
    let (mqtt, mut eventloop) = AsyncClient::new(opts, 100);
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let mut probes = 0u64;
    for round in 1..=spec.rounds {
        shared.latencies_ms.lock().unwrap_or_else(|e| e.into_inner()).clear();
        shared.measuring.store(true, Ordering::Relaxed);
        let f0 = shared.frames.load(Ordering::Relaxed);
        let first_probe = probes;
        say(&json!({"event": "round_start", "round": round}))?;
        let window_start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while window_start.elapsed() < Duration::from_secs(spec.round_secs) {
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
        }
        let window = window_start.elapsed().as_secs_f64();
        let f1 = shared.frames.load(Ordering::Relaxed);
        // Let the round's last probes arrive.
        tokio::time::sleep(Duration::from_millis(500)).await;
        shared.measuring.store(false, Ordering::Relaxed);
        let mut lat =
            std::mem::take(&mut *shared.latencies_ms.lock().unwrap_or_else(|e| e.into_inner()));
        if lat.len() < 100 {
            bail!("round {round}: only {} latency samples arrived", lat.len());
        }
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| round2(lat[((lat.len() - 1) as f64 * p).round() as usize]);
        let sent = probes - first_probe;
        let expected = sent as f64 * (spec.clients as f64 / segments.len() as f64);
        say(&json!({
            "event": "round_end",
            "round": round,
            "window_s": round2(window),
            "probe_publishes": sent,
            "samples": lat.len(),
            "delivered_ratio": round2(lat.len() as f64 / expected.max(1.0)),
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "max_ms": pct(1.0),
            "frames_per_s": ((f1 - f0) as f64 / window).round(),
        }))?;
    }
    poller.abort();
    for t in &tasks {
        t.abort();
    }
    Ok(())
}

/// Steps of the server's stream loop that took over 25 ms so far (live values wait behind
/// them), from its `/metrics`.
async fn slow_steps(api_port: u16) -> f64 {
    let text = scrape(api_port).await;
    metric_value(&text, "sccr_stream_step_seconds_count")
        - metric_value(&text, "sccr_stream_step_seconds_bucket{le=\"0.025\"}")
}

pub async fn run(quick: bool, dir: &Path) -> Result<Value> {
    let clients = if quick { 500 } else { 10_000 };
    let (round_secs, rounds) = if quick { (2, 3) } else { (10, 3) };
    let segments = parse_geojson(FLORENCE_SEED)?.len();
    let (broker, _db, procs) = core(1, dir).await?;
    let server = &procs[0];
    let pid = server.pid().unwrap_or(0);
    let broker_pid = broker.pid().unwrap_or(0);
    let rss_idle = rss_mib(pid);
    let spec = FleetSpec {
        api_port: server.api_port,
        mqtt_port: broker.port,
        clients,
        round_secs,
        rounds,
    };
    let mut fleet = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--ws-clients", &spec.to_json()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let fleet_pid = fleet.id().unwrap_or(0);
    let mut stdin = fleet.stdin.take().context("fleet stdin")?;
    let mut lines = BufReader::new(fleet.stdout.take().context("fleet stdout")?).lines();
    let (said_tx, mut said) = tokio::sync::mpsc::channel::<Value>(8);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(v) = serde_json::from_str(&line) else { continue };
            if said_tx.send(v).await.is_err() {
                return;
            }
        }
    });
    let subscribed = tokio::time::timeout(Duration::from_secs(240), said.recv())
        .await
        .context("the client fleet did not subscribe within 240 s")?
        .context("the client fleet stopped")?;
    let rss_clients = rss_mib(pid);

    // Background ingest, then the rounds.
    let (stop, counters, load) = start_load(broker.port, 2_000, BACKGROUND_READINGS / 4.5, "ws")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stdin.write_all(b"go\n").await?;
    stdin.flush().await?;
    let mut measured = Vec::new();
    let mut rss_peak = rss_clients;
    for _ in 0..rounds {
        let start = said.recv().await.context("the client fleet stopped")?;
        if start["event"] != "round_start" {
            bail!("the client fleet said {start} instead of starting a round");
        }
        let slow0 = slow_steps(server.api_port).await;
        let (cpu0, fleet0, r0) = (
            cpu_snapshot(&[pid], broker_pid),
            cpu_secs(fleet_pid),
            counters.readings.load(Ordering::Relaxed),
        );
        // The round ends after its window and a short drain; RSS is read along the way.
        let deadline = Instant::now() + Duration::from_secs(round_secs + 60);
        let end = loop {
            if Instant::now() > deadline {
                bail!("the client fleet did not finish a round in time");
            }
            match tokio::time::timeout(Duration::from_millis(500), said.recv()).await {
                Ok(Some(v)) => break v,
                Ok(None) => bail!("the client fleet stopped"),
                Err(_) => rss_peak = rss_peak.max(rss_mib(pid)),
            }
        };
        let (cpu1, fleet1, r1) = (
            cpu_snapshot(&[pid], broker_pid),
            cpu_secs(fleet_pid),
            counters.readings.load(Ordering::Relaxed),
        );
        let slow = slow_steps(server.api_port).await - slow0;
        let secs = cpu1.at.duration_since(cpu0.at).as_secs_f64().max(1e-3);
        let mut round = end;
        if let Some(o) = round.as_object_mut() {
            o.remove("event");
            let cpu = cpu_split(&cpu0, &cpu1);
            let fleet_cores = (fleet1 - fleet0) / secs;
            // What the machine did beyond the processes measured (another job's work
            // bends a round's tail; it is shown, not hidden).
            let ours: f64 =
                ["sccr_cores", "broker_cores", "postgres_cores", "load_generator_cores"]
                    .iter()
                    .filter_map(|k| cpu[*k].as_f64())
                    .sum::<f64>()
                    + fleet_cores;
            let other = cpu["machine_busy_cores"].as_f64().map(|m| round2((m - ours).max(0.0)));
            o.insert("cpu".into(), cpu);
            o.insert("client_fleet_cores".into(), json!(round2(fleet_cores)));
            o.insert("other_cores".into(), json!(other));
            o.insert("stream_steps_over_25_ms".into(), json!(slow));
            o.insert("background_readings_per_s".into(), json!(((r1 - r0) as f64 / secs).round()));
        }
        measured.push(round);
    }
    let _ = stop.send(true);
    let _ = load.await;
    let _ = fleet.wait().await;
    let p99: Vec<f64> = measured.iter().filter_map(|r| r["p99_ms"].as_f64()).collect();
    let worst = p99.iter().copied().fold(0.0, f64::max);
    let best = p99.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(json!({
        "clients": clients,
        "segments": segments,
        "connect_s": subscribed["connect_s"],
        "background_readings_per_s": measured.first().map(|r| r["background_readings_per_s"].clone()),
        "rounds": measured,
        "p99_ms": { "worst": round2(worst), "best": round2(best) },
        "server_rss_mib": { "idle": round2(rss_idle), "with_clients": round2(rss_clients), "peak_under_load": round2(rss_peak) },
    }))
}
