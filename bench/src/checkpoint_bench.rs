//! Alert engine checkpoint benchmark: what one checkpoint costs (bytes written, seconds)
//! and what it does to the process's RSS, with 100,000 devices' worth of engine state
//! (10,000 with `--quick`), saved into PostgreSQL.
//!
//! Workload: three traffic loops in four (speed, count, occupancy), one air-quality station
//! in four (NO2, PM10, PM2.5, O3), each fed ten reports five seconds apart so every timer
//! and learned interval holds state; the shipped air-quality rules plus offline, LOS,
//! speed threshold and flatline rules (the demo's kind of rule set).
//!
//! Rows, in this order (RSS never shrinks much once grown, so the old path runs last):
//! the first checkpoint after start (every part), one after 1 % of the devices reported,
//! one after all of them reported, each as the stream and the alert sink write it (parts in
//! chunks of 1,000, one transaction); then the whole state as one JSON document, the way
//! checkpoints were saved before they were incremental (`export_state`, `to_value`,
//! `stream_state`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sccr_tests::TestDb;
use serde_json::{json, Value};
use store::{Store, StoreOptions};
use stream::{AlertEngine, AlertRulesConfig, DeviceProfile, StatePart};
use telemetry::{DeviceId, EventTime, MetricId, Reading, SegmentId};

const TRAFFIC: [MetricId; 3] = [MetricId::SpeedKmh, MetricId::VehicleCount, MetricId::OccupancyPct];
const AIR: [MetricId; 4] =
    [MetricId::No2Ugm3, MetricId::Pm10Ugm3, MetricId::Pm25Ugm3, MetricId::O3Ugm3];
const KEY: &str = "alert_engine/bench";

fn rules() -> Result<stream::RuleSet> {
    let doc = json!({
        "air_quality_defaults": true,
        "rules": [
            {"id": "offline", "severity": "warning", "offline": {"min_silence": "1m"}},
            {"id": "congestion", "severity": "critical", "los": {"at_or_worse": "E", "for": "5m"}},
            {"id": "speed-low", "severity": "info", "threshold": {"metric": "speed_kmh", "below": 5.0, "for": "5m"}},
            {"id": "count-stuck", "severity": "info", "flatline": {"metric": "vehicle_count", "readings": 100}},
        ]
    });
    let config: AlertRulesConfig = serde_json::from_value(doc).context("benchmark rules")?;
    config.validate().map_err(|e| anyhow::anyhow!("{e}"))
}

fn id<T>(r: Result<T, telemetry::IdError>) -> T {
    r.unwrap_or_else(|_| unreachable!("benchmark ids are valid"))
}

fn device(d: usize) -> DeviceId {
    id(DeviceId::parse(&format!("dev-{d:06}")))
}

fn is_traffic(d: usize) -> bool {
    d % 4 != 3
}

/// One report of device `d` at `at`.
fn report(e: &mut AlertEngine, d: usize, at: i64, round: i64) {
    let metrics: &[MetricId] = if is_traffic(d) { &TRAFFIC } else { &AIR };
    let mut out = Vec::new();
    for &metric in metrics {
        let value = 20.0 + ((d as i64 * 7 + round) % 30) as f64;
        let r = Reading { device: device(d), metric, time: EventTime(at), value, seq: None };
        e.on_reading(&r, EventTime(at), &mut out);
    }
}

fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Row {
    what: &'static str,
    parts: usize,
    bytes: usize,
    secs: f64,
    rss_before: u64,
    rss_after: u64,
    peak_after: u64,
    /// Why the store refused it, if it did.
    error: Option<String>,
}

/// One checkpoint as the stream and the alert sink take and write it.
async fn incremental(store: &Store, e: &mut AlertEngine, what: &'static str) -> Result<Row> {
    let (rss_before, _) = rss_kib();
    let started = Instant::now();
    let (begin, mut parts) = e.checkpoint(false);
    let mut save = store.begin_state_save(KEY, begin.full).await?;
    let mut rows = vec![("head".to_owned(), serde_json::to_string(&begin.head)?)];
    if let Some(book) = &begin.book {
        rows.push(("book".to_owned(), serde_json::to_string(book)?));
    }
    let (mut count, mut bytes) = (0, 0);
    loop {
        let chunk: Vec<StatePart> =
            parts.by_ref().take(stream::service::CHECKPOINT_CHUNK).collect();
        for p in &chunk {
            rows.push((p.name(), serde_json::to_string(p)?));
        }
        count += rows.len();
        bytes += rows.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
        save.put(KEY, &rows).await?;
        rows.clear();
        if chunk.is_empty() {
            break;
        }
    }
    save.commit().await?;
    let secs = started.elapsed().as_secs_f64();
    let (rss_after, peak_after) = rss_kib();
    Ok(Row { what, parts: count, bytes, secs, rss_before, rss_after, peak_after, error: None })
}

/// The whole state as one document, as checkpoints were saved before.
async fn whole_document(store: &Store, e: &AlertEngine) -> Result<Row> {
    let (rss_before, _) = rss_kib();
    let started = Instant::now();
    let value = serde_json::to_value(e.export_state())?;
    let bytes = value.to_string().len();
    // PostgreSQL refuses a jsonb document over 256 MiB: report it rather than stop.
    let error = store.save_stream_state(KEY, &value).await.err().map(|e| e.to_string());
    drop(value);
    let secs = started.elapsed().as_secs_f64();
    let (rss_after, peak_after) = rss_kib();
    Ok(Row {
        what: "whole document (before)",
        parts: 1,
        bytes,
        secs,
        rss_before,
        rss_after,
        peak_after,
        error,
    })
}

pub async fn run(quick: bool) -> Result<Value> {
    let devices = if quick { 10_000 } else { 100_000 };
    let db = TestDb::create().await?;
    let store = Store::connect(&db.url, &StoreOptions::default()).await?;
    store.migrate().await?;
    let mut e = AlertEngine::new(rules()?);
    let base = EventTime::now().millis() - 3_600_000;
    let mut out = Vec::new();
    e.set_devices(
        (0..devices).map(|d| DeviceProfile {
            id: device(d),
            kind: Some(if is_traffic(d) { "traffic_loop" } else { "air_quality" }.into()),
            segment: is_traffic(d).then(|| id(SegmentId::parse(&format!("seg-{}", d / 3)))),
            interval: Some(Duration::from_secs(5)),
        }),
        EventTime(base),
        &mut out,
    );
    let mut at = base;
    for round in 0..10 {
        at = base + round * 5_000;
        for d in 0..devices {
            report(&mut e, d, at, round);
        }
    }
    let (rss_loaded, _) = rss_kib();
    let mut rows = vec![incremental(&store, &mut e, "first checkpoint (every part)").await?];
    for d in (0..devices).step_by(100) {
        report(&mut e, d, at + 5_000, 10);
    }
    rows.push(incremental(&store, &mut e, "after 1 % of devices reported").await?);
    for d in 0..devices {
        report(&mut e, d, at + 10_000, 11);
    }
    rows.push(incremental(&store, &mut e, "after every device reported").await?);
    rows.push(whole_document(&store, &e).await?);
    store.close().await;

    eprintln!(
        "alert engine checkpoints, {devices} devices (RSS with the engine loaded: {} MiB)",
        rss_loaded / 1024
    );
    eprintln!("| checkpoint | parts | bytes written | seconds | RSS before → after (MiB) | peak RSS after (MiB) | error |");
    eprintln!("|---|---:|---:|---:|---:|---:|---|");
    let mut report_rows = Vec::new();
    for r in &rows {
        eprintln!(
            "| {} | {} | {} | {:.2} | {} → {} | {} | {} |",
            r.what,
            r.parts,
            r.bytes,
            r.secs,
            r.rss_before / 1024,
            r.rss_after / 1024,
            r.peak_after / 1024,
            r.error.as_deref().unwrap_or("")
        );
        report_rows.push(json!({
            "checkpoint": r.what, "parts": r.parts, "bytes": r.bytes,
            "seconds": (r.secs * 1000.0).round() / 1000.0,
            "rss_before_mib": r.rss_before / 1024, "rss_after_mib": r.rss_after / 1024,
            "peak_rss_after_mib": r.peak_after / 1024, "error": r.error,
        }));
    }
    Ok(
        json!({ "devices": devices, "rss_engine_loaded_mib": rss_loaded / 1024, "rows": report_rows }),
    )
}
