//! `sccr-bench`: the whole pipeline measured against this machine's own limits, in one run,
//! on loopback, with a real Mosquitto (the project's configuration) and PostgreSQL.
//!
//! 1. Limits: raw broker throughput (a Rust publisher fleet to one QoS 1 subscriber, our
//!    payloads) and raw `COPY` rows/s into a table of the `readings` shape.
//! 2. SCCR end to end: the `sccr serve` process fed by the fleet simulator; committed
//!    readings/s with ack-after-durable, queue depths, and CPU by process.
//! 3. Latency: publish to websocket delta at half the sustained rate.
//! 4. The naive baseline (`bench/baselines/python_bridge.py`), fed the same way.
//! 5. The store: writer with rollups against raw COPY, history query latency (store_bench).
//! 6. The stream core: readings/s through windows, segment windows and the alert engine on
//!    one thread, 10,000 devices and 50 rules (stream_bench).
//! 7. Alert engine checkpoints (`--checkpoint` only): bytes, seconds and RSS of one
//!    checkpoint with 100,000 devices' state, incremental against the whole document
//!    (checkpoint_bench).
//! 8. Export over HTTP: raw readings as CSV and Parquet from PostgreSQL, rows/s and the
//!    server's peak RSS for 1M and 10M rows (export_bench).
//! 9. Scaling (full run only): two ingest processes on a shared subscription, and 1k, 10k,
//!    100k devices.
//!
//! Targets are reported as ratios, never asserted. `--quick` runs every stage briefly so CI
//! keeps the harness working.

mod checkpoint_bench;
mod export_bench;
mod store_bench;
mod stream_bench;
mod ws_bench;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use sccr_tests::{http_get, wait_pipeline_ready, workspace_root, Broker, Sccr, TempDir, TestDb};
use serde_json::{json, Value};
use simulator::{plan_fleet, run_simulation, SimulateConfig, SimulationCounters};
use telemetry::segment::{parse_geojson, FLORENCE_SEED};
use telemetry::EventTime;
use tokio::sync::watch;

struct Plan {
    quick: bool,
    broker_secs: u64,
    copy_rows: usize,
    e2e_secs: u64,
    latency_samples: usize,
    baseline_secs: u64,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                broker_secs: 4,
                copy_rows: 100_000,
                e2e_secs: 8,
                latency_samples: 100,
                baseline_secs: 8,
            }
        } else {
            Self {
                quick,
                broker_secs: 15,
                copy_rows: 1_000_000,
                e2e_secs: 30,
                latency_samples: 500,
                baseline_secs: 20,
            }
        }
    }
}

/// CPU time of a process in seconds (utime + stime), from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds of every process whose command name is `comm`.
fn cpu_secs_of(comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0.0 };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .map(cpu_secs)
        .sum()
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// CPU in cores used by each stage between two snapshots.
#[derive(Clone)]
struct CpuSnapshot {
    at: Instant,
    sccr: Vec<f64>,
    broker: f64,
    postgres: f64,
    load: f64,
}

fn cpu_snapshot(sccr: &[u32], broker: u32) -> CpuSnapshot {
    CpuSnapshot {
        at: Instant::now(),
        sccr: sccr.iter().map(|p| cpu_secs(*p)).collect(),
        broker: cpu_secs(broker),
        postgres: cpu_secs_of("postgres"),
        load: cpu_secs(std::process::id()),
    }
}

fn cpu_split(a: &CpuSnapshot, b: &CpuSnapshot) -> Value {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
    let sccr: f64 = b.sccr.iter().zip(&a.sccr).map(|(x, y)| x - y).sum();
    json!({
        "sccr_cores": round2(sccr / secs),
        "broker_cores": round2((b.broker - a.broker) / secs),
        "postgres_cores": round2((b.postgres - a.postgres) / secs),
        "load_generator_cores": round2((b.load - a.load) / secs),
    })
}

fn round2(v: f64) -> f64 {
    // Adding 0.0 turns a -0.0 into 0.0.
    (v * 100.0).round() / 100.0 + 0.0
}

fn fleet(n: usize) -> Result<Vec<simulator::SimDevice>> {
    Ok(plan_fleet(&parse_geojson(FLORENCE_SEED)?, n))
}

/// Run the simulator with `devices` at `msgs_per_s` until `stop` flips.
fn start_load(
    port: u16,
    devices: usize,
    msgs_per_s: f64,
    tag: &str,
) -> Result<(
    watch::Sender<bool>,
    Arc<SimulationCounters>,
    tokio::task::JoinHandle<simulator::SimulationReport>,
)> {
    let interval = Duration::from_secs_f64((devices as f64 / msgs_per_s.max(1.0)).max(0.001));
    let config = SimulateConfig {
        port,
        client_prefix: format!("bench-{tag}"),
        connections: 8,
        interval,
        messages_per_device: None,
        ..SimulateConfig::default()
    };
    let counters = Arc::new(SimulationCounters::default());
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run_simulation(
        config,
        fleet(devices)?,
        counters.clone(),
        rx,
        Duration::from_secs(5),
    ));
    Ok((tx, counters, task))
}

// ---------------------------------------------------------------------------------------
// 1. Limits

async fn broker_limit(plan: &Plan) -> Result<Value> {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let broker = Broker::start().await?;
    let received = Arc::new(AtomicU64::new(0));
    let mut opts = MqttOptions::new("bench-subscriber", "127.0.0.1", broker.port);
    opts.set_receive_maximum(Some(1000))
        .set_max_packet_size(Some(1 << 20))
        .set_outgoing_inflight_upper_limit(16);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    client.subscribe("sccr/v1/devices/+/telemetry", QoS::AtLeastOnce).await?;
    let counter = received.clone();
    let sub = tokio::spawn(async move {
        while let Ok(e) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = e {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    // Offer far more than any broker on this machine carries: the fleet is throttled by
    // the broker's acknowledgements, so what arrives is the limit.
    let (stop, counters, task) = start_load(broker.port, 2_000, 200_000.0, "limit")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (r0, t0) = (received.load(Ordering::Relaxed), Instant::now());
    let cpu0 = cpu_snapshot(&[], broker.pid().unwrap_or(0));
    tokio::time::sleep(Duration::from_secs(plan.broker_secs)).await;
    let (r1, t1) = (received.load(Ordering::Relaxed), Instant::now());
    let cpu1 = cpu_snapshot(&[], broker.pid().unwrap_or(0));
    let _ = stop.send(true);
    let report = task.await?;
    // Let the subscriber drain what the broker still holds (until nothing arrives for 3 s),
    // then count what never came: under this deliberate overload the broker's queue for the
    // subscriber grows past `max_queued_messages` and the broker sheds the excess.
    let mut last = received.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_secs(3) && last < report.acked {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = received.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    sub.abort();
    let msgs = (r1 - r0) as f64 / t1.duration_since(t0).as_secs_f64();
    let per_msg = counters.readings.load(Ordering::Relaxed) as f64
        / counters.published.load(Ordering::Relaxed).max(1) as f64;
    Ok(json!({
        "msgs_per_s": msgs.round(),
        "readings_per_msg": round2(per_msg),
        "readings_per_s": (msgs * per_msg).round(),
        "published_acked": report.acked,
        "received": last,
        "shed_by_broker_queue_limit": report.acked.saturating_sub(last),
        "cpu": cpu_split(&cpu0, &cpu1),
    }))
}

async fn copy_limit(plan: &Plan) -> Result<Value> {
    use sqlx::Connection;
    let db = TestDb::create().await?;
    let mut conn = sqlx::PgConnection::connect(&db.url).await?;
    sqlx::query(
        "CREATE TABLE copy_limit (time timestamptz NOT NULL, device text NOT NULL, metric text NOT NULL, value double precision NOT NULL, seq bigint, PRIMARY KEY (device, metric, time))",
    )
    .execute(&mut conn)
    .await?;
    let metrics = ["vehicle_count", "speed_kmh", "occupancy_pct", "headway_s"];
    let base = EventTime::now().millis() - 86_400_000;
    let batches: Vec<String> = (0..plan.copy_rows)
        .collect::<Vec<_>>()
        .chunks(5_000)
        .map(|chunk| {
            let mut csv = String::with_capacity(chunk.len() * 80);
            for &i in chunk {
                let t = EventTime(base + (i / 40) as i64 * 1_000).to_rfc3339();
                csv.push_str(&format!(
                    "{t},dev-{},{},{}.5,{}\n",
                    (i / 4) % 10,
                    metrics[i % 4],
                    i % 97,
                    i
                ));
            }
            csv
        })
        .collect();
    let started = Instant::now();
    for csv in batches {
        let mut copy = conn
            .copy_in_raw(
                "COPY copy_limit (time, device, metric, value, seq) FROM STDIN WITH (FORMAT csv)",
            )
            .await?;
        copy.send(csv.into_bytes()).await?;
        copy.finish().await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM copy_limit").fetch_one(&mut conn).await?;
    if stored as usize != plan.copy_rows {
        bail!("COPY stored {stored} rows of {}", plan.copy_rows);
    }
    Ok(
        json!({ "rows": plan.copy_rows, "rows_per_s": (plan.copy_rows as f64 / secs).round(), "batch_rows": 5000 }),
    )
}

// ---------------------------------------------------------------------------------------
// 2. SCCR end to end

fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(port: u16) -> String {
    http_get(port, "/metrics").await.map(|(_, b)| b).unwrap_or_default()
}

async fn inserted(ports: &[u16]) -> f64 {
    let mut total = 0.0;
    for p in ports {
        total += metric_value(&scrape(*p).await, "sccr_writer_readings_inserted_total");
    }
    total
}

/// Start `instances` sccr processes on a fresh broker and database, ready for load.
async fn core(instances: usize, dir: &Path) -> Result<(Broker, TestDb, Vec<Sccr>)> {
    let broker = Broker::start().await?;
    let db = TestDb::create().await?;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let shared: &[(&str, &str)] =
        if instances > 1 { &[("SCCR_MQTT__SUBSCRIPTION", "shared")] } else { &[] };
    let mut procs = Vec::new();
    for _ in 0..instances {
        let s = Sccr::serve(broker.port, &db.url, dir, shared)?;
        s.wait_healthy().await;
        procs.push(s);
    }
    wait_pipeline_ready(broker.port, &pool).await;
    pool.close().await;
    Ok((broker, db, procs))
}

async fn end_to_end(
    instances: usize,
    devices: usize,
    offered_msgs: f64,
    secs: u64,
    dir: &Path,
) -> Result<Value> {
    let (broker, _db, procs) = core(instances, dir).await?;
    let ports: Vec<u16> = procs.iter().map(|p| p.api_port).collect();
    let pids: Vec<u32> = procs.iter().filter_map(Sccr::pid).collect();
    let (stop, counters, task) = start_load(broker.port, devices, offered_msgs, "e2e")?;
    // Warm up, then measure a steady window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (n0, cpu0) = (inserted(&ports).await, cpu_snapshot(&pids, broker.pid().unwrap_or(0)));
    let mut depths: Vec<(f64, f64, f64)> = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m = scrape(ports[0]).await;
        depths.push((
            metric_value(&m, "sccr_writer_queue_depth"),
            metric_value(&m, "sccr_ingest_pending_readings"),
            metric_value(&m, "sccr_stream_queue_depth"),
        ));
    }
    let (n1, cpu1) = (inserted(&ports).await, cpu_snapshot(&pids, broker.pid().unwrap_or(0)));
    let rss: f64 = pids.iter().map(|p| rss_mib(*p)).sum();
    let _ = stop.send(true);
    let _ = task.await;
    let window = cpu1.at.duration_since(cpu0.at).as_secs_f64();
    let max = |f: fn(&(f64, f64, f64)) -> f64| depths.iter().map(f).fold(0.0, f64::max);
    let mean = |f: fn(&(f64, f64, f64)) -> f64| {
        depths.iter().map(f).sum::<f64>() / depths.len().max(1) as f64
    };
    let m = scrape(ports[0]).await;
    Ok(json!({
        "instances": instances,
        "devices": devices,
        "offered_msgs_per_s": offered_msgs.round(),
        "published_msgs": counters.published.load(Ordering::Relaxed),
        "readings_per_s": ((n1 - n0) / window).round(),
        "window_s": round2(window),
        "writer_queue_depth": { "max": max(|d| d.0), "mean": round2(mean(|d| d.0)) },
        "pending_readings": { "max": max(|d| d.1), "mean": round2(mean(|d| d.1)) },
        "stream_queue_depth": { "max": max(|d| d.2), "mean": round2(mean(|d| d.2)) },
        "last_batch_readings": metric_value(&m, "sccr_writer_last_batch_readings"),
        "last_flush_ms": round2(metric_value(&m, "sccr_writer_last_flush_seconds") * 1000.0),
        "write_errors": metric_value(&m, "sccr_writer_errors_total"),
        "sccr_rss_mib": round2(rss),
        "cpu": cpu_split(&cpu0, &cpu1),
    }))
}

// ---------------------------------------------------------------------------------------
// 3. Latency: publish → websocket delta

async fn latency(sustained_msgs: f64, samples: usize, dir: &Path) -> Result<Value> {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, MqttOptions};
    use tokio_tungstenite::tungstenite::Message;
    let (broker, _db, procs) = core(1, dir).await?;
    let load_rate = sustained_msgs * 0.5;
    let (stop, _counters, task) = start_load(broker.port, 2_000, load_rate, "lat")?;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(sccr_tests::live_url(procs[0].api_port)).await?;
    ws.send(Message::Text(r#"{"type":"subscribe","devices":["latency-probe"]}"#.into())).await?;
    let mut opts = MqttOptions::new("bench-latency-probe", "127.0.0.1", broker.port);
    opts.set_outgoing_inflight_upper_limit(100);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let sent: Arc<std::sync::Mutex<std::collections::HashMap<i64, Instant>>> = Arc::default();
    let sent_by_probe = sent.clone();
    let total = samples + 20;
    let publisher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0..total {
            tick.tick().await;
            let ts = EventTime::now().millis();
            let payload = json!({"seq": i, "ts": ts, "readings": [{"m": "speed_kmh", "v": (i % 100) as f64}]}).to_string();
            sent_by_probe.lock().unwrap_or_else(|e| e.into_inner()).insert(ts, Instant::now());
            if client
                .publish(
                    "sccr/v1/devices/latency-probe/telemetry",
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut lat_ms = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lat_ms.len() < total && Instant::now() < deadline {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await
        else {
            break;
        };
        let Ok(text) = msg.to_text() else { continue };
        let Ok(v) = serde_json::from_str::<Value>(text) else { continue };
        if v["type"] != "delta" {
            continue;
        }
        for val in v["values"].as_array().into_iter().flatten() {
            if let Some(t) = val["time"].as_i64() {
                if let Some(at) = sent.lock().unwrap_or_else(|e| e.into_inner()).remove(&t) {
                    lat_ms.push(at.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
    }
    let _ = stop.send(true);
    let _ = task.await;
    publisher.abort();
    poller.abort();
    if lat_ms.len() < 30 {
        bail!("only {} latency samples arrived", lat_ms.len());
    }
    let mut measured: Vec<f64> = lat_ms.into_iter().skip(20).collect(); // warm-up
    measured.sort_by(f64::total_cmp);
    let pct = |p: f64| round2(measured[((measured.len() - 1) as f64 * p).round() as usize]);
    Ok(json!({
        "background_msgs_per_s": load_rate.round(),
        "samples": measured.len(),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    }))
}

// ---------------------------------------------------------------------------------------
// 4. The naive baseline

fn python_with_deps() -> Option<PathBuf> {
    sccr_tests::python_venv(
        "bench-venv",
        &["paho-mqtt==2.2.0", "psycopg[binary]==3.3.9"],
        "paho.mqtt, psycopg",
    )
    .map(|venv| venv.join("bin/python"))
}

async fn baseline(offered_msgs: f64, secs: u64) -> Result<Value> {
    let Some(python) = python_with_deps() else {
        eprintln!("!!! naive baseline SKIPPED: could not install paho-mqtt and psycopg from PyPI");
        return Ok(json!({ "skipped": "paho-mqtt/psycopg unavailable" }));
    };
    let broker = Broker::start().await?;
    let db = TestDb::create().await?;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let mut bridge = tokio::process::Command::new(python)
        .arg(workspace_root().join("bench/baselines/python_bridge.py"))
        .args([
            "--port",
            &broker.port.to_string(),
            "--db",
            &db.url,
            "--seconds",
            &(secs + 30).to_string(),
        ])
        .kill_on_drop(true)
        .spawn()
        .context("start the python bridge")?;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM readings_baseline")
            .fetch_one(&pool)
            .await
            .unwrap_or(-1)
    };
    // Ready when its table exists and a probe message made it through.
    let ready_by = Instant::now() + Duration::from_secs(30);
    while count().await <= 0 {
        if Instant::now() > ready_by {
            bail!("the python bridge did not start");
        }
        let payload =
            json!({"ts": EventTime::now().millis(), "readings": [{"m": "battery_v", "v": 12.0}]})
                .to_string()
                .into_bytes();
        let _ = sccr_tests::publish_all(
            broker.port,
            "bench-probe",
            vec![("sccr/v1/devices/probe/telemetry".into(), payload)],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bridge_pid = bridge.id().unwrap_or(0);
    let (stop, _counters, task) = start_load(broker.port, 2_000, offered_msgs, "base")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c0, cpu0) = (count().await, cpu_snapshot(&[bridge_pid], broker.pid().unwrap_or(0)));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (c1, cpu1) = (count().await, cpu_snapshot(&[bridge_pid], broker.pid().unwrap_or(0)));
    let _ = stop.send(true);
    let _ = task.await;
    let _ = bridge.kill().await;
    let window = cpu1.at.duration_since(cpu0.at).as_secs_f64();
    let mut cpu = cpu_split(&cpu0, &cpu1);
    if let Some(o) = cpu.as_object_mut() {
        if let Some(v) = o.remove("sccr_cores") {
            o.insert("bridge_cores".into(), v);
        }
    }
    Ok(
        json!({ "readings_per_s": ((c1 - c0) as f64 / window).round(), "window_s": round2(window), "cpu": cpu }),
    )
}

// ---------------------------------------------------------------------------------------

fn command_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(if o.stdout.is_empty() { &o.stderr } else { &o.stdout })
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|| "unknown".into())
}

async fn machine() -> Value {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    let mem_gib = mem_kib / 1024.0 / 1024.0;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_owned();
    let pg = match TestDb::create().await {
        Ok(db) => match sqlx::PgPool::connect(&db.url).await {
            Ok(pool) => sqlx::query_scalar::<_, String>("SHOW server_version")
                .fetch_one(&pool)
                .await
                .unwrap_or_default(),
            Err(_) => String::new(),
        },
        Err(_) => String::new(),
    };
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": round2(mem_gib),
        "kernel": command_line("uname", &["-r"]),
        "mosquitto": command_line("mosquitto", &["-h"]),
        "postgres": pg,
        "rustc": command_line("rustc", &["-V"]),
    })
}

fn markdown(r: &Value) -> String {
    let f = |v: &Value| match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    out.push_str(&format!(
        "# SCCR benchmark, {}{}\n\n",
        r["date"].as_str().unwrap_or(""),
        if r["quick"] == true { " (quick)" } else { "" }
    ));
    let m = &r["machine"];
    out.push_str(&format!(
        "Machine: {} cores ({}), {} GiB; {}; PostgreSQL {}; {}; kernel {}. Everything on loopback on this machine.\n\n",
        f(&m["cores"]), f(&m["cpu"]), f(&m["memory_gib"]), f(&m["mosquitto"]), f(&m["postgres"]), f(&m["rustc"]), f(&m["kernel"])
    ));
    out.push_str("| figure | measured | against | ratio | goal |\n|---|---|---|---|---|\n");
    let b = &r["broker_limit"];
    let c = &r["copy_limit"];
    let e = &r["end_to_end"];
    let lim = r["lower_limit_readings_per_s"].as_f64().unwrap_or(0.0);
    out.push_str(&format!("| broker limit, QoS 1, 1 subscriber | {} msg/s = {} readings/s ({} shed by the broker's queue limit under overload) | | | |\n", f(&b["msgs_per_s"]), f(&b["readings_per_s"]), f(&b["shed_by_broker_queue_limit"])));
    out.push_str(&format!(
        "| `COPY` limit, 5,000-row batches | {} rows/s | | | |\n",
        f(&c["rows_per_s"])
    ));
    out.push_str(&format!(
        "| SCCR end to end, committed, ack after durable | {} readings/s | lower limit {} | {} | ≥ 0.6 |\n",
        f(&e["readings_per_s"]), lim, f(&r["ratios"]["end_to_end_vs_limit"])
    ));
    let l = &r["latency"];
    out.push_str(&format!(
        "| publish → websocket at half that rate | p50 {} ms, p95 {} ms, p99 {} ms | | | p99 < 50 ms |\n",
        f(&l["p50_ms"]), f(&l["p95_ms"]), f(&l["p99_ms"])
    ));
    out.push_str(&format!(
        "| naive Python bridge, same load | {} readings/s | SCCR | {} | SCCR ≥ 10× |\n",
        f(&r["baseline"]["readings_per_s"]),
        f(&r["ratios"]["sccr_vs_baseline"])
    ));
    let s = &r["store"];
    out.push_str(&format!(
        "| store writer with 1m/1h/1d rollups (binary COPY + rollup merger) | {} rows/s (batch p50 {} ms) | binary `COPY` into `readings` {} rows/s | {} | ≥ 0.7 |\n",
        f(&s["writer"]["rows_per_s"]), f(&s["writer"]["batch_p50_ms"]), f(&s["copy_limit_rows_per_s"]), f(&s["writer_vs_limit"])
    ));
    if s["late"].is_object() {
        out.push_str(&format!(
            "| the same with readings an hour old (stored hourly and daily rows updated by every merge) | {} rows/s | {} rows/s | {} | |\n",
            f(&s["late"]["writer"]["rows_per_s"]), f(&s["late"]["copy_limit_rows_per_s"]), f(&s["late"]["writer_vs_limit"])
        ));
    }
    let h = &s["history"];
    for (name, key) in [("one segment", "segment_30d_hourly"), ("whole city", "city_30d_hourly")] {
        out.push_str(&format!(
            "| history, 30 days hourly, {name}, over {} raw readings | p50 {} ms, p95 {} ms ({} points, {} readings) | | | < 50 ms |\n",
            f(&h["raw_readings"]), f(&h[key]["p50_ms"]), f(&h[key]["p95_ms"]), f(&h[key]["points"]), f(&h[key]["readings_covered"])
        ));
    }
    let api = &h["api"];
    if api.is_object() {
        out.push_str(&format!(
            "| history API (HTTP, token, JSON), 30 days hourly | one segment p50 {} ms, p95 {} ms; whole city p50 {} ms, p95 {} ms | | | < 50 ms |\n",
            f(&api["segment_30d_hourly"]["p50_ms"]), f(&api["segment_30d_hourly"]["p95_ms"]), f(&api["city_30d_hourly"]["p50_ms"]), f(&api["city_30d_hourly"]["p95_ms"])
        ));
    }
    let w = &r["websocket"];
    if w.is_object() {
        out.push_str(&format!(
            "| websocket fan-out: {} clients on one server, each on one of {} segments, {} background readings/s | publish→screen p50 {} ms, p95 {} ms, p99 {} ms ({} samples, {} of expected); {} frames/s; server RSS {} MiB with clients, peak {} MiB; server CPU {} cores | | | p99 < 50 ms |\n",
            f(&w["clients"]), f(&w["segments"]), f(&w["background_readings_per_s"]), f(&w["p50_ms"]), f(&w["p95_ms"]), f(&w["p99_ms"]), f(&w["samples"]), f(&w["delivered_ratio"]),
            f(&w["frames_per_s"]), f(&w["server_rss_mib"]["with_clients"]), f(&w["server_rss_mib"]["peak_under_load"]), f(&w["cpu"]["sccr_cores"])
        ));
    }
    let st = &r["stream"];
    out.push_str(&format!(
        "| stream core on one thread: device windows + segment windows/LOS + alert engine, {} devices, {} rules | {} readings/s ({} readings in {} s) | goal {} | {} | > 1M readings/s |\n",
        f(&st["devices"]), f(&st["rules"]), f(&st["readings_per_s"]), f(&st["readings"]), f(&st["seconds"]), f(&st["goal_readings_per_s"]), f(&st["vs_goal"])
    ));
    // Readings per core of the process between broker and database: the bridge is bound by
    // its one Python core, SCCR by the machine the broker and PostgreSQL share with it.
    let per_core = |rate: &Value, cores: &Value| match (rate.as_f64(), cores.as_f64()) {
        (Some(r), Some(c)) if c > 0.0 => Some(r / c),
        _ => None,
    };
    if let (Some(sccr), Some(bridge)) = (
        per_core(&e["readings_per_s"], &e["cpu"]["sccr_cores"]),
        per_core(&r["baseline"]["readings_per_s"], &r["baseline"]["cpu"]["bridge_cores"]),
    ) {
        out.push_str(&format!(
            "| readings per core of the bridging process (end to end vs baseline runs) | SCCR {} readings/s per core | Python bridge {} | {} | |\n",
            round2(sccr).round(),
            round2(bridge).round(),
            round2(sccr / bridge)
        ));
    }
    if let Some(rows) = r["export"]["exports"].as_array() {
        for x in rows {
            out.push_str(&format!(
                "| export over HTTP, {} rows as {} | {} rows/s, {} MB, server RSS {} → {} MiB peak | | | memory bounded |\n",
                f(&x["rows"]), x["format"].as_str().unwrap_or("?"), f(&x["rows_per_s"]), f(&x["mb"]), f(&x["server_rss_before_mib"]), f(&x["server_peak_rss_mib"])
            ));
        }
    }
    if let Some(rows) = r["scaling"].as_array() {
        for s in rows {
            out.push_str(&format!(
                "| scaling: {} ingest, {} devices | {} readings/s, sccr RSS {} MiB | | | |\n",
                f(&s["instances"]),
                f(&s["devices"]),
                f(&s["readings_per_s"]),
                f(&s["sccr_rss_mib"])
            ));
        }
    }
    out.push_str(&format!(
        "\nEnd to end, by stage: CPU cores used {}; writer queue depth (messages) {}; readings pending commit {}; stream queue depth {}; last batch {} readings in {} ms.\n",
        e["cpu"], e["writer_queue_depth"], e["pending_readings"], e["stream_queue_depth"], f(&e["last_batch_readings"]), f(&e["last_flush_ms"])
    ));
    out.push_str(&format!(
        "Broker limit run, CPU: {}. Baseline run, CPU: {}.\n",
        b["cpu"], r["baseline"]["cpu"]
    ));
    out
}

async fn run(quick: bool) -> Result<()> {
    let plan = Plan::new(quick);
    let work = TempDir::new("bench")?;
    let started = Instant::now();
    eprintln!("== machine");
    let machine = machine().await;
    eprintln!("== 1a broker limit ({} s)", plan.broker_secs);
    let broker = broker_limit(&plan).await?;
    eprintln!("{broker}");
    eprintln!("== 1b COPY limit ({} rows)", plan.copy_rows);
    let copy = copy_limit(&plan).await?;
    eprintln!("{copy}");
    let broker_msgs = broker["msgs_per_s"].as_f64().unwrap_or(1000.0);
    let per_msg = broker["readings_per_msg"].as_f64().unwrap_or(1.0).max(1.0);
    let lower = broker["readings_per_s"]
        .as_f64()
        .unwrap_or(0.0)
        .min(copy["rows_per_s"].as_f64().unwrap_or(0.0));
    let offered = broker_msgs * 1.1;
    eprintln!("== 2 SCCR end to end ({} s at {offered:.0} msg/s offered)", plan.e2e_secs);
    let e2e = end_to_end(1, 2_000, offered, plan.e2e_secs, &work.path).await?;
    eprintln!("{e2e}");
    let sustained = e2e["readings_per_s"].as_f64().unwrap_or(0.0) / per_msg;
    eprintln!("== 3 latency ({} samples)", plan.latency_samples);
    let lat = latency(sustained, plan.latency_samples, &work.path).await?;
    eprintln!("{lat}");
    eprintln!("== 4 naive baseline ({} s)", plan.baseline_secs);
    let base = baseline(offered, plan.baseline_secs).await?;
    eprintln!("{base}");
    eprintln!("== 5 store");
    let store = store_bench::run(plan.quick).await?;
    eprintln!("{store}");
    eprintln!("== 6 stream core");
    let stream_core = stream_bench::run(plan.quick).await?;
    eprintln!("{stream_core}");
    eprintln!("== 7 websocket fan-out");
    let websocket = ws_bench::run(plan.quick, &work.path).await?;
    eprintln!("{websocket}");
    eprintln!("== 8 export over HTTP");
    let export = export_bench::run(plan.quick).await?;
    eprintln!("{export}");
    let mut scaling = Vec::new();
    if !plan.quick {
        eprintln!("== 5 scaling");
        scaling.push(end_to_end(2, 2_000, offered, 20, &work.path).await?);
        eprintln!("{}", scaling.last().unwrap_or(&Value::Null));
        for devices in [1_000, 10_000, 100_000] {
            scaling.push(end_to_end(1, devices, offered, 15, &work.path).await?);
            eprintln!("{}", scaling.last().unwrap_or(&Value::Null));
        }
    }
    let e2e_rate = e2e["readings_per_s"].as_f64().unwrap_or(0.0);
    let base_rate = base["readings_per_s"].as_f64();
    let date = EventTime::now().to_rfc3339();
    let report = json!({
        "date": &date[..10],
        "quick": plan.quick,
        "machine": machine,
        "broker_limit": broker,
        "copy_limit": copy,
        "lower_limit_readings_per_s": lower,
        "end_to_end": e2e,
        "latency": lat,
        "baseline": base,
        "store": store,
        "stream": stream_core,
        "websocket": websocket,
        "export": export,
        "scaling": scaling,
        "ratios": {
            "end_to_end_vs_limit": round2(e2e_rate / lower.max(1.0)),
            "sccr_vs_baseline": base_rate.map(|b| round2(e2e_rate / b.max(1.0))),
        },
        "duration_s": started.elapsed().as_secs(),
    });
    let md = markdown(&report);
    println!("{md}");
    let dir = if plan.quick {
        workspace_root().join("target/bench-results")
    } else {
        workspace_root().join("bench/results")
    };
    std::fs::create_dir_all(&dir)?;
    let stem = format!("{}{}", &date[..10], if plan.quick { "-quick" } else { "" });
    std::fs::write(dir.join(format!("{stem}.md")), &md)?;
    std::fs::write(dir.join(format!("{stem}.json")), serde_json::to_string_pretty(&report)?)?;
    eprintln!(
        "written to {}/{stem}.{{md,json}} in {} s",
        dir.display(),
        started.elapsed().as_secs()
    );
    Ok(())
}

/// `--stream`: only the stream core benchmark, printed as JSON.
async fn stream_only(quick: bool) -> Result<()> {
    let report = stream_bench::run(quick).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `--export`: only the HTTP export benchmark, printed as JSON.
async fn export_only(quick: bool) -> Result<()> {
    let report = export_bench::run(quick).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `--ws`: only the websocket fan-out benchmark, printed as JSON.
async fn ws_only(quick: bool) -> Result<()> {
    let work = TempDir::new("bench-ws")?;
    let report = ws_bench::run(quick, &work.path).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `--e2e`: only the limits and SCCR end to end, twice in turn (for work on the pipeline,
/// where one figure on a shared machine says little), printed as JSON.
async fn e2e_only(quick: bool) -> Result<()> {
    let plan = Plan::new(quick);
    let work = TempDir::new("bench-e2e")?;
    let mut runs = Vec::new();
    for round in 1..=2 {
        eprintln!(
            "== round {round}/2: broker limit ({} s), COPY limit, end to end ({} s)",
            plan.broker_secs, plan.e2e_secs
        );
        let broker = broker_limit(&plan).await?;
        let copy = copy_limit(&plan).await?;
        let lower = broker["readings_per_s"]
            .as_f64()
            .unwrap_or(0.0)
            .min(copy["rows_per_s"].as_f64().unwrap_or(0.0));
        let offered = broker["msgs_per_s"].as_f64().unwrap_or(1000.0) * 1.1;
        let e2e = end_to_end(1, 2_000, offered, plan.e2e_secs, &work.path).await?;
        let ratio = round2(e2e["readings_per_s"].as_f64().unwrap_or(0.0) / lower.max(1.0));
        eprintln!(
            "   {} readings/s of lower limit {lower} = {ratio}; {e2e}",
            e2e["readings_per_s"]
        );
        runs.push(json!({ "broker_limit": broker, "copy_limit": copy, "lower_limit_readings_per_s": lower, "end_to_end": e2e, "end_to_end_vs_limit": ratio }));
    }
    println!("{}", serde_json::to_string_pretty(&json!({ "runs": runs }))?);
    Ok(())
}

/// `--store`: only the store benchmark, printed as JSON (for working on the store).
async fn store_only(quick: bool) -> Result<()> {
    let report = store_bench::run(quick).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn main() -> Result<()> {
    let mut quick = false;
    let mut store = false;
    let mut store_writer = false;
    let mut e2e = false;
    let mut stream = false;
    let mut ws = false;
    let mut export = false;
    let mut checkpoint = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--render" => {
                // The markdown table of a saved JSON report, e.g. after the table gained rows.
                let path = args.next().context("--render needs a report .json")?;
                let report: Value = serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?)?;
                print!("{}", markdown(&report));
                return Ok(());
            }
            "--quick" => quick = true,
            "--store" => store = true,
            "--store-writer" => store_writer = true,
            "--e2e" => e2e = true,
            "--stream" => stream = true,
            "--ws" => ws = true,
            "--export" => export = true,
            "--checkpoint" => checkpoint = true,
            "-h" | "--help" => {
                println!("sccr-bench [--quick] [--store | --store-writer | --e2e | --stream | --ws | --export | --checkpoint] | --render REPORT.json: measure SCCR against this machine's broker and COPY limits");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}; use --quick, --store, --store-writer, --e2e, --stream, --ws, --export, --checkpoint or nothing"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if e2e {
        return rt.block_on(e2e_only(quick));
    }
    if store_writer {
        // Three rounds: the writer against the COPY limit, without the history part.
        return rt.block_on(async {
            let report = store_bench::run_writer_only(quick, 3).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        });
    }
    if store {
        return rt.block_on(store_only(quick));
    }
    if stream {
        return rt.block_on(stream_only(quick));
    }
    if ws {
        return rt.block_on(ws_only(quick));
    }
    if export {
        return rt.block_on(export_only(quick));
    }
    if checkpoint {
        // The table goes to stderr, the JSON report to stdout.
        return rt.block_on(async {
            let report = checkpoint_bench::run(quick).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        });
    }
    rt.block_on(run(quick))
}
