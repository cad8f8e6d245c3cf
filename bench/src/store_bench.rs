//! Store benchmark (issue: time-series store), in one run:
//! - the limit: binary `COPY` of readings into a freshly migrated store's own `readings`
//!   table (partitioned by day, with its key), nothing else;
//! - our writer: `Store::write_batch` (binary COPY) with the rollup merger running beside
//!   it as in `sccr serve`, until every rollup level holds every reading (the minutes
//!   folded, the late batches merged); rows/s from the first write to the last fold;
//! - history latency: a 30-day hourly query for one road segment and for the whole city,
//!   answered from the hourly rollups (per segment for both), over a dataset of raw readings kept in its own
//!   database between runs (`sccr_bench_history`: built once, by server-side
//!   `generate_series` and rollups aggregated from those rows in SQL).

use std::time::Instant;

use anyhow::{bail, Result};
use sccr_tests::TestDb;
use serde_json::{json, Value};
use sqlx::Connection;
use store::pgcopy::CopyEncoder;
use store::{
    Batch, GapFill, HistoryQuery, HistorySubject, MergerConfig, MergerMetrics, Step, Store,
    StoreOptions, TimescaleMode,
};
use telemetry::{DeviceId, EventTime, MetricId, Reading};

const METRICS: [MetricId; 4] =
    [MetricId::VehicleCount, MetricId::SpeedKmh, MetricId::OccupancyPct, MetricId::HeadwayS];

/// `rows` readings of 10,000 devices × 4 metrics every 5 s, in time order, in 5,000-row
/// batches: what ingest hands the writer under load. Live readings start now (after the
/// sealed minutes: the minute fold counts them); `late` ones are an hour old, before the
/// sealed minutes and the hour the real-time rollups aggregate when read, so the rollup
/// merger counts them and every merge also updates stored hourly and daily rows.
fn workload(rows: usize, late: bool) -> Vec<Vec<Reading>> {
    let devices: Vec<DeviceId> = (0..10_000)
        .map(|d| DeviceId::parse(&format!("sb-{d}")).unwrap_or_else(|_| unreachable!()))
        .collect();
    let now = EventTime::now().millis();
    let span = (rows / 40_000) as i64 * 5_000 + 1_000;
    let base = if late { now - 3_600_000 - span } else { now };
    let all: Vec<Reading> = (0..rows)
        .map(|i| {
            let (step, rest) = (i / 40_000, i % 40_000);
            Reading {
                device: devices[rest / 4].clone(),
                metric: METRICS[rest % 4],
                time: EventTime(base + step as i64 * 5_000 + (rest / 4 % 1000) as i64),
                value: ((i * 7) % 113) as f64,
                seq: Some(telemetry::Seq(step as u64)),
            }
        })
        .collect();
    all.chunks(5_000).map(<[Reading]>::to_vec).collect()
}

async fn fresh_store() -> Result<(TestDb, Store)> {
    let db = TestDb::create().await?;
    let store = Store::connect(
        &db.url,
        &StoreOptions { timescaledb: TimescaleMode::Off, ..StoreOptions::default() },
    )
    .await?;
    store.migrate().await?;
    Ok((db, store))
}

async fn copy_limit(batches: &[Vec<Reading>]) -> Result<f64> {
    let (db, store) = fresh_store().await?;
    // Partitions exist before the clock starts, as they do for the writer (created ahead).
    store.write_batch(&Batch { readings: batches[0][..1].to_vec(), ..Batch::default() }).await?;
    let mut conn = sqlx::PgConnection::connect(&db.url).await?;
    sqlx::query("TRUNCATE readings").execute(&mut conn).await?;
    let started = Instant::now();
    let mut rows = 0usize;
    for b in batches {
        let mut enc = CopyEncoder::with_capacity(b.len() * 72);
        for r in b {
            enc.row(5);
            enc.reading(r);
        }
        let mut tx = conn.begin().await?;
        let mut copy = tx
            .copy_in_raw(
                "COPY readings (time, device, metric, value, seq) FROM STDIN (FORMAT binary)",
            )
            .await?;
        copy.send(enc.finish()).await?;
        copy.finish().await?;
        tx.commit().await?;
        rows += b.len();
    }
    let secs = started.elapsed().as_secs_f64();
    store.close().await;
    Ok(rows as f64 / secs)
}

async fn writer(batches: &[Vec<Reading>]) -> Result<Value> {
    let (_db, store) = fresh_store().await?;
    store.write_batch(&Batch { readings: batches[0][..1].to_vec(), ..Batch::default() }).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics = std::sync::Arc::new(MergerMetrics::default());
    let merger = tokio::spawn(store::run_rollup_merger(
        store.clone(),
        MergerConfig::default(),
        stop_rx,
        metrics.clone(),
    ));
    let started = Instant::now();
    let mut rows = 0u64;
    let mut batch_ms = Vec::new();
    for b in &batches[1..] {
        let t = Instant::now();
        rows +=
            store.write_batch(&Batch { readings: b.clone(), ..Batch::default() }).await?.inserted;
        batch_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let written = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    merger.await?;
    store.catch_up_rollups().await?;
    let secs = started.elapsed().as_secs_f64();
    let rolled: i64 = match &store {
        Store::Postgres(pg) => {
            sqlx::query_scalar("SELECT sum(count)::int8 FROM rollup_1h")
                .fetch_one(pg.pool())
                .await?
        }
        Store::Sqlite(_) => 0,
    };
    if rolled as u64 != rows + 1 {
        bail!("rollup_1h counts {rolled} readings, {} were written", rows + 1);
    }
    batch_ms.sort_by(f64::total_cmp);
    store.close().await;
    Ok(json!({
        "rows": rows,
        "rows_per_s": (rows as f64 / secs).round(),
        "write_only_rows_per_s": (rows as f64 / written).round(),
        "batch_p50_ms": super::round2(batch_ms[batch_ms.len() / 2]),
        "batch_p99_ms": super::round2(batch_ms[batch_ms.len() * 99 / 100]),
        "merges": metrics.merges.load(std::sync::atomic::Ordering::Relaxed),
        // Time from the last commit until every level held every reading.
        "merge_tail_s": super::round2(secs - written),
    }))
}

/// The history dataset: `devices` loop stations on the seed segments, vehicle_count and
/// speed_kmh every 10 s for `days` days ending at the start of today (UTC).
async fn history_dataset(db_name: &str, devices: usize, days: i64) -> Result<(Store, i64)> {
    let admin = sccr_tests::admin_url();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_owned();
    let url = format!("{base}/{db_name}");
    let mut conn = sqlx::PgConnection::connect(&admin).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(db_name)
        .fetch_optional(&mut conn)
        .await?;
    let end = EventTime::now().millis() / 86_400_000 * 86_400_000;
    let want_rows = devices as i64 * 2 * 8_640 * days;
    if exists.is_some() {
        let store = Store::connect(
            &url,
            &StoreOptions { timescaledb: TimescaleMode::Off, ..StoreOptions::default() },
        )
        .await?;
        let Store::Postgres(pg) = &store else { bail!("postgres expected") };
        let marker: Option<String> =
            sqlx::query_scalar("SELECT value FROM sccr_settings WHERE key = 'bench_dataset_v2'")
                .fetch_optional(pg.pool())
                .await?;
        if let Some(m) =
            marker.and_then(|m| m.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())))
        {
            if m.0.parse::<i64>().ok() == Some(want_rows) {
                eprintln!("   reusing {db_name} ({want_rows} readings)");
                // Later migrations (e.g. segment rollups) fill themselves from what is there.
                store.migrate().await?;
                return Ok((store, m.1.parse().unwrap_or(end)));
            }
        }
        store.close().await;
        sqlx::query(&format!("DROP DATABASE {db_name} WITH (FORCE)")).execute(&mut conn).await?;
    }
    sqlx::query(&format!("CREATE DATABASE {db_name}")).execute(&mut conn).await?;
    let store = Store::connect(
        &url,
        &StoreOptions { timescaledb: TimescaleMode::Off, ..StoreOptions::default() },
    )
    .await?;
    store.migrate().await?;
    let segments = telemetry::segment::parse_geojson(telemetry::segment::FLORENCE_SEED)?;
    store.upsert_segments(&segments).await?;
    let records: Vec<store::DeviceRecord> = (0..devices)
        .map(|d| store::DeviceRecord {
            id: DeviceId::parse(&format!("hist-{d}")).unwrap_or_else(|_| unreachable!()),
            kind: Some("traffic_loop".into()),
            segment: Some(segments[d % segments.len()].id.clone()),
            registered_at: EventTime(end - days * 86_400_000),
        })
        .collect();
    store.upsert_devices(&records).await?;
    let Store::Postgres(pg) = &store else { bail!("postgres expected") };
    let started = Instant::now();
    for day in 0..days {
        let from = EventTime(end - (days - day) * 86_400_000);
        // Creates the day's partition.
        store
            .write_batch(&Batch {
                readings: vec![Reading {
                    device: records[0].id.clone(),
                    metric: MetricId::HeadwayS,
                    time: from,
                    value: 1.0,
                    seq: None,
                }],
                ..Batch::default()
            })
            .await?;
        sqlx::query(
            "INSERT INTO readings (time, device, metric, value, seq)
             SELECT t, 'hist-' || d, m, CASE m WHEN 'speed_kmh' THEN 20 + (d * 7 + extract(epoch FROM t)::int8 / 10) % 40
                                              ELSE (d + extract(epoch FROM t)::int8 / 10) % 12 END, NULL
             FROM generate_series($1::timestamptz, $1::timestamptz + interval '1 day' - interval '10 seconds', interval '10 seconds') t,
                  generate_series(0, $2 - 1) d, unnest(ARRAY['vehicle_count', 'speed_kmh']) m",
        )
        .bind(from.to_offset_date_time())
        .bind(devices as i32)
        .execute(pg.pool())
        .await?;
        eprintln!("   day {}/{days} loaded ({:.0} s)", day + 1, started.elapsed().as_secs_f64());
    }
    sqlx::query("DELETE FROM readings WHERE metric = 'headway_s'").execute(pg.pool()).await?;
    sqlx::query("TRUNCATE rollup_pending, rollup_1m, rollup_1h_closed, rollup_1d_closed, segment_rollup_1h, segment_rollup_1d").execute(pg.pool()).await?;
    // The dataset ends before the hour and day marks of the real-time rollups: all of it
    // goes to the stored (closed) tables.
    for (table, unit, src) in [
        ("rollup_1m", "minute", "readings"),
        ("rollup_1h_closed", "hour", "rollup_1m"),
        ("rollup_1d_closed", "day", "rollup_1h_closed"),
    ] {
        let cols = if src == "readings" {
            "count(*), sum(value), min(value), max(value), (array_agg(value ORDER BY time DESC))[1], max(time)"
        } else {
            "sum(count), sum(sum), min(min), max(max), (array_agg(last_value ORDER BY last_time DESC))[1], max(last_time)"
        };
        let time = if src == "readings" { "time" } else { "bucket" };
        sqlx::query(&format!(
            "INSERT INTO {table} (bucket, device, metric, count, sum, min, max, last_value, last_time)
             SELECT date_trunc('{unit}', {time}), device, metric, {cols} FROM {src} GROUP BY 1, 2, 3"
        ))
        .execute(pg.pool())
        .await?;
        eprintln!("   {table} built ({:.0} s)", started.elapsed().as_secs_f64());
    }
    // Segment rollups from the device rollups and the links, as the merger keeps them.
    for (table, unit, src) in [
        ("segment_rollup_1h", "hour", "rollup_1h_closed r JOIN devices d ON d.id = r.device"),
        ("segment_rollup_1d", "day", "segment_rollup_1h r"),
    ] {
        let seg =
            if table == "segment_rollup_1h" { "coalesce(d.segment_id, '')" } else { "r.segment" };
        sqlx::query(&format!(
            "INSERT INTO {table} (bucket, segment, metric, count, sum, min, max, last_value, last_time)
             SELECT date_trunc('{unit}', r.bucket), {seg}, r.metric, sum(r.count), sum(r.sum), min(r.min), max(r.max),
                    (max(ARRAY[date_part('epoch', r.last_time), r.last_value]))[2], max(r.last_time)
             FROM {src} GROUP BY 1, 2, 3"
        ))
        .execute(pg.pool())
        .await?;
    }
    sqlx::query("VACUUM ANALYZE").execute(pg.pool()).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings").fetch_one(pg.pool()).await?;
    if n != want_rows {
        bail!("dataset holds {n} readings, expected {want_rows}");
    }
    sqlx::query("INSERT INTO sccr_settings (key, value) VALUES ('bench_dataset_v2', $1)")
        .bind(format!("{want_rows}:{end}"))
        .execute(pg.pool())
        .await?;
    Ok((store, end))
}

async fn query_latency(
    store: &Store,
    subject: HistorySubject,
    end: i64,
    runs: usize,
) -> Result<Value> {
    let q = HistoryQuery {
        subject,
        metric: MetricId::SpeedKmh,
        from: EventTime(end - 30 * 86_400_000),
        to: EventTime(end),
        step: Step::Auto { max_points: 1_000 },
        fill: GapFill::None,
        limit: 100_000,
    };
    let first = store.history(&q).await?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let h = store.history(&q).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        if h.points.len() != first.points.len() {
            bail!("history answers changed between runs");
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok(json!({
        "resolution": first.resolution,
        "points": first.points.len(),
        "readings_covered": first.points.iter().map(|p| p.count).sum::<i64>(),
        "p50_ms": super::round2(ms[ms.len() / 2]),
        "p95_ms": super::round2(ms[ms.len() * 95 / 100]),
    }))
}

/// The same 30-day hourly queries through the HTTP API of a running `sccr serve` on the
/// dataset (token check, parameter parsing, JSON encoding included).
async fn api_latency(db_url: &str, seg: &str, end: i64, runs: usize) -> Result<Value> {
    let broker = sccr_tests::Broker::start().await?;
    let dir = sccr_tests::TempDir::new("bench-api")?;
    let sccr = sccr_tests::Sccr::serve(broker.port, db_url, &dir.path, &[])?;
    sccr.wait_healthy().await;
    let from = end - 30 * 86_400_000;
    let mut out = serde_json::Map::new();
    for (name, subject) in
        [("segment_30d_hourly", format!("segment={seg}&")), ("city_30d_hourly", String::new())]
    {
        let path =
            format!("/api/v1/history?{subject}metric=speed_kmh&from={from}&to={end}&step=1h");
        let (status, body) = sccr_tests::http_get(sccr.api_port, &path).await?;
        if status != 200 {
            bail!("GET {path}: {status} {body}");
        }
        let points = serde_json::from_str::<Value>(&body)?["points"].as_array().map_or(0, Vec::len);
        let mut ms = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let (status, _) = sccr_tests::http_get(sccr.api_port, &path).await?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            if status != 200 {
                bail!("GET {path}: {status}");
            }
        }
        ms.sort_by(f64::total_cmp);
        out.insert(name.into(), json!({ "points": points, "p50_ms": super::round2(ms[ms.len() / 2]), "p95_ms": super::round2(ms[ms.len() * 95 / 100]) }));
    }
    Ok(Value::Object(out))
}

/// The writer against the COPY limit only (no history), `rounds` times in turn: for work on
/// the writer, where one pair of figures on a shared machine says little.
pub async fn run_writer_only(quick: bool, rounds: usize) -> Result<Value> {
    let rows = if quick { 100_000 } else { 2_000_000 };
    let mut runs = Vec::new();
    for round in 1..=rounds {
        eprintln!("   round {round}/{rounds}: COPY limit, then the writer ({rows} rows)");
        runs.push(writer_against_limit(&workload(rows, false)).await?);
    }
    let late = writer_late(rows).await?;
    Ok(json!({ "runs": runs, "late": late }))
}

/// The COPY limit, then the writer, on the same batches: `copy_limit_rows_per_s`,
/// `writer` and `writer_vs_limit`.
async fn writer_against_limit(batches: &[Vec<Reading>]) -> Result<Value> {
    let limit = copy_limit(batches).await?;
    let w = writer(batches).await?;
    let ratio = super::round2(w["rows_per_s"].as_f64().unwrap_or(0.0) / limit.max(1.0));
    eprintln!("   limit {limit:.0} rows/s, writer {} rows/s, ratio {ratio}", w["rows_per_s"]);
    Ok(json!({ "copy_limit_rows_per_s": limit.round(), "writer": w, "writer_vs_limit": ratio }))
}

/// The writer on readings an hour old (every merge updates stored hourly and daily rows
/// too), against its own COPY limit.
async fn writer_late(rows: usize) -> Result<Value> {
    eprintln!("   late readings: COPY limit, then the writer ({rows} rows)");
    writer_against_limit(&workload(rows, true)).await
}

pub async fn run(quick: bool) -> Result<Value> {
    let rows = if quick { 100_000 } else { 2_000_000 };
    eprintln!("   COPY limit, then the writer with rollups ({rows} rows)");
    let mut report = writer_against_limit(&workload(rows, false)).await?;
    report["late"] = writer_late(rows).await?;
    let (db, devices, days) =
        if quick { ("sccr_bench_history_quick", 20, 3) } else { ("sccr_bench_history", 100, 30) };
    eprintln!("   history dataset ({devices} devices, {days} days)");
    let t = Instant::now();
    let (store, end) = history_dataset(db, devices, days).await?;
    let setup_s = t.elapsed().as_secs();
    let raw: i64 = match &store {
        Store::Postgres(pg) => {
            sqlx::query_scalar("SELECT count(*) FROM readings").fetch_one(pg.pool()).await?
        }
        Store::Sqlite(_) => 0,
    };
    // The dataset puts device d on segment d mod 37: the first segment holds 3 of 100.
    let Some(seg) = store.segments().await?.into_iter().next().map(|s| s.id) else {
        bail!("no segments")
    };
    let runs = if quick { 5 } else { 30 };
    let one = query_latency(&store, HistorySubject::Segment(seg.clone()), end, runs).await?;
    let city = query_latency(&store, HistorySubject::City, end, runs).await?;
    store.close().await;
    eprintln!("   history through the HTTP API");
    let admin = sccr_tests::admin_url();
    let db_url = format!("{}/{db}", admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b));
    let api = api_latency(&db_url, seg.as_str(), end, runs).await?;
    report["history"] = json!({
        "raw_readings": raw,
        "dataset_setup_s": setup_s,
        "segment": seg.as_str(),
        "segment_30d_hourly": one,
        "city_30d_hourly": city,
        "api": api,
    });
    Ok(report)
}
