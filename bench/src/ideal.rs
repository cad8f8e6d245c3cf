//! The ideal pipeline: the least any correct ingest must do, as a ceiling for SCCR in the
//! same run. A minimal Rust bridge in its own process (`sccr-bench --ideal-bridge`): the
//! same broker and payloads, one persistent QoS 1 subscription with manual acks and the
//! same receive maximum as SCCR's ingest, the same decoder, binary `COPY` into a table
//! with the readings' primary key, one transaction per batch, and the PUBACKs sent only
//! after the commit. Nothing else: no dedupe of replays, no rollups, no live state, no
//! dead letters, no registry.
//!
//! Group commit on [`COMMITTERS`] connections: a batch is handed to a committer as soon as
//! one is idle, so what arrives while commits run goes into the next; a batch that reaches
//! [`BATCH_ROWS`] waits for a committer.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value};
use sqlx::Connection;
use store::pgcopy::CopyEncoder;
use telemetry::{EventTime, Topic, TopicKind};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::load::{probe_until, start_load};
use crate::measure::{bridge_cpu_split, cpu_snapshot, round2};
use sccr_tests::{Broker, TestDb};

/// Readings per batch, as SCCR's writer.
const BATCH_ROWS: usize = 5_000;
/// Commits in flight at once, each on its own connection.
const COMMITTERS: usize = 2;
/// Messages the broker may have in flight to the bridge (SCCR's ingest default).
const RECEIVE_MAXIMUM: u16 = 1_000;

pub(crate) const TABLE: &str = "CREATE TABLE IF NOT EXISTS ideal_readings (
    time timestamptz NOT NULL, device text NOT NULL, metric text NOT NULL,
    value double precision NOT NULL, seq bigint, PRIMARY KEY (device, metric, time))";

struct Batch {
    readings: Vec<telemetry::Reading>,
    publishes: Vec<Publish>,
}

impl Batch {
    fn new() -> Self {
        Self { readings: Vec::with_capacity(BATCH_ROWS), publishes: Vec::new() }
    }

    fn encode(&mut self) -> Vec<u8> {
        copy_rows(&mut self.readings)
    }
}

/// The `COPY` of the ideal pipeline (and of the benchmark's fleet-keys limit).
pub(crate) const COPY: &str =
    "COPY ideal_readings (time, device, metric, value, seq) FROM STDIN (FORMAT binary)";

/// `readings` as binary `COPY` rows of [`TABLE`], in the primary key's order as SCCR's
/// writer sends them (consecutive rows on the same index pages).
pub(crate) fn copy_rows(readings: &mut [telemetry::Reading]) -> Vec<u8> {
    readings.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
    let mut copy = CopyEncoder::with_capacity(readings.len() * 64);
    for r in readings.iter() {
        copy.row(5);
        copy.reading(r);
    }
    copy.finish()
}

/// `sccr-bench --ideal-bridge PORT DB_URL`: run the bridge until killed, printing the
/// readings committed so far (`committed N`) every 100 ms.
pub async fn bridge_main(port: u16, db_url: &str) -> Result<()> {
    let mut conn = sqlx::PgConnection::connect(db_url).await.context("connect")?;
    sqlx::query(TABLE).execute(&mut conn).await?;
    conn.close().await?;
    let mut opts = MqttOptions::new("bench-ideal-bridge", "127.0.0.1", port);
    opts.set_clean_start(false)
        .set_session_expiry_interval(Some(3_600))
        .set_receive_maximum(Some(RECEIVE_MAXIMUM))
        .set_max_packet_size(Some(1 << 20))
        .set_manual_acks(true)
        .set_outgoing_inflight_upper_limit(16);
    let (client, mut eventloop) = AsyncClient::new(opts, usize::from(RECEIVE_MAXIMUM) + 64);
    client.subscribe(TopicKind::Telemetry.filter(), QoS::AtLeastOnce).await?;

    // The event loop on its own task, never blocked: it also sends the PUBACKs the
    // committer queues, so a full queue towards the batcher would stall both. The queue is
    // bounded by the broker, which has at most the receive maximum unacknowledged.
    let (pub_tx, mut pub_rx) = mpsc::unbounded_channel::<Publish>();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if pub_tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("ideal bridge: connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });

    // The committers, one connection each: a batch closes as soon as one is idle (group
    // commit: what arrives during a commit goes in the next), or at BATCH_ROWS.
    // A committer's permit travels with the batch it takes and is returned once the
    // batch is acknowledged: the free permits are the idle committers.
    let (batch_tx, batch_rx) = mpsc::channel::<(Batch, OwnedSemaphorePermit)>(COMMITTERS);
    let batch_rx = Arc::new(tokio::sync::Mutex::new(batch_rx));
    let idle = Arc::new(Semaphore::new(COMMITTERS));
    let committed = Arc::new(AtomicU64::new(0));
    let mut committers = Vec::new();
    for _ in 0..COMMITTERS {
        let mut conn = sqlx::PgConnection::connect(db_url).await.context("connect")?;
        let (acker, batch_rx, committed) = (client.clone(), batch_rx.clone(), committed.clone());
        committers.push(tokio::spawn(async move {
            loop {
                let Some((mut batch, _permit)) = batch_rx.lock().await.recv().await else {
                    break;
                };
                let rows = batch.readings.len();
                let mut tx = conn.begin().await?;
                if rows > 0 {
                    let mut copy = tx.copy_in_raw(COPY).await?;
                    copy.send(batch.encode()).await?;
                    copy.finish().await?;
                }
                tx.commit().await?;
                for p in &batch.publishes {
                    acker.ack(p).await?;
                }
                committed.fetch_add(rows as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    // The count committed so far, for the benchmark, every 100 ms.
    let reported = committed.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            println!("committed {}", reported.load(Ordering::Relaxed));
            if std::io::stdout().flush().is_err() {
                return;
            }
        }
    });
    // Hand the batch to an idle committer (or wait for one once the batch is full).
    let hand_over = async |batch: &mut Batch, full: bool| -> bool {
        let permit = match idle.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) if !full => return true,
            Err(_) => match idle.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return false,
            },
        };
        batch_tx.send((std::mem::replace(batch, Batch::new()), permit)).await.is_ok()
    };

    let mut batch = Batch::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    loop {
        tokio::select! {
            p = pub_rx.recv() => {
                let Some(p) = p else { break };
                let now = EventTime::now();
                let topic = std::str::from_utf8(&p.topic).ok().and_then(|t| Topic::parse(t).ok());
                if let Some(topic) = topic {
                    if let Ok(decoded) = telemetry::decode(&p.payload, &topic.device, now) {
                        batch.readings.extend(decoded.readings);
                    }
                }
                batch.publishes.push(p);
                let full = batch.readings.len() >= BATCH_ROWS;
                if !hand_over(&mut batch, full).await {
                    break;
                }
            }
            _ = tick.tick(), if !batch.publishes.is_empty() => {
                if !hand_over(&mut batch, false).await {
                    break;
                }
            }
        }
    }
    drop(batch_tx);
    for c in committers {
        c.await?.inspect_err(|e| eprintln!("ideal bridge: {e:#}"))?;
    }
    Ok(())
}
/// Run the ideal pipeline under the same load as SCCR's end-to-end run and measure its
/// committed readings/s and the CPU of each process.
pub async fn run(devices: usize, offered_msgs: f64, secs: u64) -> Result<Value> {
    let broker = Broker::start().await?;
    let db = TestDb::create().await?;
    crate::pgstat::settle(&db.url, "the ideal pipeline").await?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--ideal-bridge", &broker.port.to_string(), &db.url])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start the ideal bridge")?;
    let pid = child.id().unwrap_or(0);
    let committed = Arc::new(AtomicU64::new(0));
    let stdout = child.stdout.take().context("bridge stdout")?;
    let counter = committed.clone();
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(n) = line.strip_prefix("committed ").and_then(|n| n.parse().ok()) {
                counter.store(n, Ordering::Relaxed);
            }
        }
    });
    // Ready once a probe reading has been committed.
    let probed = committed.clone();
    probe_until(broker.port, "bench-ideal-probe", "the ideal bridge", || {
        let n = probed.load(Ordering::Relaxed);
        async move { n > 0 }
    })
    .await?;
    let (stop, _counters, task) = start_load(broker.port, devices, offered_msgs, "ideal")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let broker_pid = broker.pid().unwrap_or(0);
    let window = crate::pgstat::start(&db.url).await;
    let (c0, cpu0) = (committed.load(Ordering::Relaxed), cpu_snapshot(&[pid], broker_pid));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (c1, cpu1) = (committed.load(Ordering::Relaxed), cpu_snapshot(&[pid], broker_pid));
    let database = match window {
        Ok(w) => w.finish((c1 - c0) as f64, &cpu1.postgres.since(&cpu0.postgres)).await,
        Err(why) => json!({ "unavailable": why }),
    };
    let _ = stop.send(true);
    let _ = task.await;
    let _ = child.kill().await;
    reader.abort();
    let window = cpu1.at.duration_since(cpu0.at).as_secs_f64();
    let cpu = bridge_cpu_split(&cpu0, &cpu1);
    let rate = (c1 - c0) as f64 / window;
    let pg = cpu["postgres_cores"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "database": database,
        "devices": devices,
        "readings_per_s": rate.round(),
        "window_s": round2(window),
        "postgres_cpu_us_per_reading": round2(pg * 1e6 / rate.max(1.0)),
        "cpu": cpu,
    }))
}
