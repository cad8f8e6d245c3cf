//! The machine's limits in this run: the broker's QoS 1 throughput to one subscriber, and
//! `COPY` rows/s into a table of the readings' shape (with the PostgreSQL CPU it costs),
//! both on 10 keys (the historical limit) and on the end-to-end fleet's keys.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use sccr_tests::{Broker, TestDb};
use serde_json::{json, Value};
use telemetry::EventTime;

use crate::load::start_load;
use crate::measure::{cpu_snapshot, cpu_split, pg_cpu, round2};
use crate::pgstat::us_per_row_by_kind;
use crate::Plan;

pub(crate) async fn broker_limit(plan: &Plan) -> Result<Value> {
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

pub(crate) async fn copy_limit(plan: &Plan, devices: usize) -> Result<Value> {
    use sqlx::Connection;
    let db = TestDb::create().await?;
    crate::pgstat::settle(&db.url, "the COPY limit").await?;
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
    let pg0 = pg_cpu();
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
    let pg = pg_cpu().since(&pg0);
    let pg_secs: f64 = pg.values().sum();
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM copy_limit").fetch_one(&mut conn).await?;
    if stored as usize != plan.copy_rows {
        bail!("COPY stored {stored} rows of {}", plan.copy_rows);
    }
    drop(conn);
    let same_keys = copy_fleet_keys(plan, devices).await?;
    Ok(json!({
        "rows": plan.copy_rows,
        "rows_per_s": (plan.copy_rows as f64 / secs).round(),
        "batch_rows": 5000,
        "postgres_cpu_us_per_row": round2(pg_secs * 1e6 / plan.copy_rows as f64),
        "postgres_cpu_us_per_row_by_kind": us_per_row_by_kind(&pg, plan.copy_rows as f64),
        "fleet_keys": same_keys,
    }))
}

/// Devices of the end-to-end run and the ideal pipeline.
pub(crate) const FLEET_DEVICES: usize = 2_000;

/// The `COPY` limit on the keys an ingest of `devices` simulated devices writes: the
/// ideal pipeline's table (binary `COPY`, the readings' primary key), the simulator's
/// readings of the same fleet in arrival order (time order, devices interleaved, each
/// reporting every 5 s), 5,000-row batches, a commit each, one connection. A btree insert
/// costs more on 2,000 devices' keys than on the 10 of [`copy_limit`]'s rows: the
/// index's pages touched per batch grow with the keys.
async fn copy_fleet_keys(plan: &Plan, devices: usize) -> Result<Value> {
    use sqlx::Connection;
    let db = TestDb::create().await?;
    crate::pgstat::settle(&db.url, "the COPY limit on the fleet's keys").await?;
    let mut conn = sqlx::PgConnection::connect(&db.url).await?;
    sqlx::query(crate::ideal::TABLE).execute(&mut conn).await?;
    let fleet = crate::load::fleet(devices)?;
    let city = simulator::City::new(&fleet, 1);
    let start = EventTime::now().millis() - 86_400_000;
    let mut rows = Vec::with_capacity(plan.copy_rows);
    'fill: for step in 0.. {
        for (i, d) in fleet.iter().enumerate() {
            // Devices spread their reports over the 5 s between two of theirs.
            let t = EventTime(start + step * 5_000 + (i * 5_000 / devices) as i64);
            for (metric, value) in city.readings(i, t, 5.0) {
                if rows.len() == plan.copy_rows {
                    break 'fill;
                }
                rows.push(telemetry::Reading {
                    device: d.id.clone(),
                    metric,
                    time: t,
                    value,
                    seq: Some(telemetry::Seq(step as u64)),
                });
            }
        }
    }
    let batches: Vec<Vec<u8>> = rows
        .chunks_mut(5_000)
        // In the primary key's order, as SCCR's writer and the ideal pipeline send them.
        .map(crate::ideal::copy_rows)
        .collect();
    let started = Instant::now();
    let pg0 = pg_cpu();
    for batch in batches {
        let mut tx = conn.begin().await?;
        let mut copy = tx.copy_in_raw(crate::ideal::COPY).await?;
        copy.send(batch).await?;
        copy.finish().await?;
        tx.commit().await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let pg = pg_cpu().since(&pg0);
    let pg_secs: f64 = pg.values().sum();
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ideal_readings").fetch_one(&mut conn).await?;
    if stored as usize != rows.len() {
        bail!("COPY stored {stored} rows of {}", rows.len());
    }
    Ok(json!({
        "devices": devices,
        "rows": rows.len(),
        "rows_per_s": (rows.len() as f64 / secs).round(),
        "postgres_cpu_us_per_row": round2(pg_secs * 1e6 / rows.len() as f64),
        "postgres_cpu_us_per_row_by_kind": us_per_row_by_kind(&pg, rows.len() as f64),
    }))
}
