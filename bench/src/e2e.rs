//! SCCR end to end (`sccr serve` fed by the fleet: committed readings/s with ack after
//! durable, queue depths, CPU by process, the database's work per reading by statement)
//! and the publish → websocket latency at half that rate.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use sccr_tests::{wait_pipeline_ready, Broker, Sccr, TestDb};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use telemetry::EventTime;

use crate::load::start_load;
use crate::measure::{cpu_snapshot, cpu_split, metric_value, round2, rss_mib, scrape};

pub(crate) async fn inserted(ports: &[u16]) -> f64 {
    let mut total = 0.0;
    for p in ports {
        total += metric_value(&scrape(*p).await, "sccr_writer_readings_inserted_total");
    }
    total
}

/// Start `instances` sccr processes on a fresh broker and database, ready for load.
pub(crate) async fn core(instances: usize, dir: &Path) -> Result<(Broker, TestDb, Vec<Sccr>)> {
    let broker = Broker::start().await?;
    let db = TestDb::create().await?;
    crate::pgstat::settle(&db.url, "an end-to-end run").await?;
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

/// Where the folded minutes end (Unix ms).
async fn folded_until(pool: &sqlx::PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (extract(epoch FROM at) * 1000)::int8 FROM minute_marks WHERE name = 'folded'",
    )
    .fetch_one(pool)
    .await?)
}

/// Wait until the minute fold moves the folded mark past `after` (the rollup merger folds
/// a 15 s step 10 s after it ends).
async fn next_fold(pool: &sqlx::PgPool, after: i64) -> Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let at = folded_until(pool).await?;
        if at > after {
            return Ok(at);
        }
        if Instant::now() > deadline {
            bail!("no minute fold within 90 s (folded until {at})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SCCR end to end over a window of `secs`, or (`fold_aligned`) from just after one minute
/// fold to just after the first fold at least `secs` later, so that the window holds the
/// fold of about as many readings as it counts.
pub(crate) async fn end_to_end(
    instances: usize,
    devices: usize,
    offered_msgs: f64,
    secs: u64,
    fold_aligned: bool,
    dir: &Path,
) -> Result<Value> {
    let (broker, db, procs) = core(instances, dir).await?;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let ports: Vec<u16> = procs.iter().map(|p| p.api_port).collect();
    let pids: Vec<u32> = procs.iter().filter_map(Sccr::pid).collect();
    let (stop, counters, task) = start_load(broker.port, devices, offered_msgs, "e2e")?;
    // Warm up, then measure a steady window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut folded = folded_until(&pool).await?;
    if fold_aligned {
        folded = next_fold(&pool, folded).await?;
    }
    let window = crate::pgstat::start(&db.url).await;
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
    if fold_aligned {
        next_fold(&pool, folded).await?;
    }
    let (n1, cpu1) = (inserted(&ports).await, cpu_snapshot(&pids, broker.pid().unwrap_or(0)));
    pool.close().await;
    let rss: f64 = pids.iter().map(|p| rss_mib(*p)).sum();
    let database = match window {
        Ok(w) => w.finish(n1 - n0, &cpu1.postgres.since(&cpu0.postgres)).await,
        Err(why) => json!({ "unavailable": why }),
    };
    let _ = stop.send(true);
    let _ = task.await;
    let window = cpu1.at.duration_since(cpu0.at).as_secs_f64();
    let max = |f: fn(&(f64, f64, f64)) -> f64| depths.iter().map(f).fold(0.0, f64::max);
    let mean = |f: fn(&(f64, f64, f64)) -> f64| {
        depths.iter().map(f).sum::<f64>() / depths.len().max(1) as f64
    };
    let m = scrape(ports[0]).await;
    // The server's log, for a look after the run.
    let logs = sccr_tests::workspace_root().join("target/bench-results");
    if std::fs::create_dir_all(&logs).is_ok() {
        for p in &procs {
            let _ = std::fs::copy(
                &p.log,
                logs.join(format!(
                    "e2e-{devices}-{}",
                    p.log.file_name().map_or_else(Default::default, |n| n.to_string_lossy())
                )),
            );
        }
    }
    Ok(json!({
        "instances": instances,
        "devices": devices,
        "offered_msgs_per_s": offered_msgs.round(),
        "published_msgs": counters.published.load(Ordering::Relaxed),
        "readings_per_s": ((n1 - n0) / window).round(),
        "window_s": round2(window),
        "fold_aligned": fold_aligned,
        "writer_queue_depth": { "max": max(|d| d.0), "mean": round2(mean(|d| d.0)) },
        "pending_readings": { "max": max(|d| d.1), "mean": round2(mean(|d| d.1)) },
        "stream_queue_depth": { "max": max(|d| d.2), "mean": round2(mean(|d| d.2)) },
        "last_batch_readings": metric_value(&m, "sccr_writer_last_batch_readings"),
        "last_flush_ms": round2(metric_value(&m, "sccr_writer_last_flush_seconds") * 1000.0),
        "write_errors": metric_value(&m, "sccr_writer_errors_total"),
        "sccr_rss_mib": round2(rss),
        "sccr_rss_kib_per_device": round2(rss * 1024.0 / devices as f64),
        "cpu": cpu_split(&cpu0, &cpu1),
        "database": database,
    }))
}

// 3. Latency: publish → websocket delta

pub(crate) async fn latency(sustained_msgs: f64, samples: usize, dir: &Path) -> Result<Value> {
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
