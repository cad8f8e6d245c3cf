//! Stream core benchmark (issue #5): readings/s that [`stream::StreamCore`] — device
//! windows, segment windows with LOS, and the alert engine — sustains on one thread, with
//! 10,000 devices and 50 rules, exactly as the stream task drives it (batches of readings,
//! one tick per simulated second). Goal: over 1 million readings/s.
//!
//! Workload: 7,500 traffic loops on 2,500 road segments (three per segment; speed, count,
//! occupancy) and 2,500 air-quality stations (NO2, PM10, PM2.5, O3, temperature,
//! humidity), every device reporting every 5 s of event time, in batches of 1,000
//! readings. One segment in fifty is congested (LOS F), so LOS alerts are raised and the
//! raise path is exercised. Rules: the 5 shipped air-quality rules, 30 thresholds (3 per
//! metric), 10 flatline, 3 rate of change, 1 offline, 1 LOS = 50.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use stream::{
    AlertRulesConfig, DeviceProfile, Emitted, LiveHub, Registry, StreamConfig, StreamCore,
};

use crate::measure::{heap_bytes, round2};
use telemetry::{DeviceId, EventTime, MetricId, Reading, RoadSegment, SegmentId};

const DEVICES: usize = 10_000;
const SEGMENTS: usize = 2_500;
const GOAL_READINGS_PER_S: f64 = 1_000_000.0;
const TRAFFIC: [MetricId; 3] = [MetricId::VehicleCount, MetricId::SpeedKmh, MetricId::OccupancyPct];
const AIR: [MetricId; 6] = [
    MetricId::No2Ugm3,
    MetricId::Pm10Ugm3,
    MetricId::Pm25Ugm3,
    MetricId::O3Ugm3,
    MetricId::TemperatureC,
    MetricId::HumidityPct,
];

fn rules() -> Result<AlertRulesConfig> {
    let metrics = [
        "vehicle_count",
        "speed_kmh",
        "occupancy_pct",
        "no2_ugm3",
        "pm10_ugm3",
        "pm25_ugm3",
        "o3_ugm3",
        "temperature_c",
        "humidity_pct",
        "battery_v",
    ];
    let mut rules = Vec::new();
    for (i, m) in metrics.iter().enumerate() {
        for k in 0..3 {
            rules.push(json!({"id": format!("t-{i}-{k}"), "severity": "info", "threshold": {"metric": m, "above": 5_000 + k, "for": "1m"}}));
        }
        rules.push(json!({"id": format!("f-{i}"), "severity": "info", "flatline": {"metric": m, "readings": 1_000}}));
    }
    for (i, m) in metrics.iter().take(3).enumerate() {
        rules.push(json!({"id": format!("r-{i}"), "severity": "info", "rate_of_change": {"metric": m, "max_per_minute": 100_000.0}}));
    }
    rules.push(json!({"id": "offline", "severity": "critical", "offline": {}}));
    rules.push(json!({"id": "congestion", "severity": "critical", "los": {"at_or_worse": "E", "for": "0s"}}));
    let doc = json!({"air_quality_defaults": true, "storm": {"raises_per_minute": 1_000}, "rules": rules});
    serde_json::from_value(doc).context("benchmark rules")
}

fn id<T>(r: Result<T, telemetry::IdError>) -> T {
    r.unwrap_or_else(|_| unreachable!("benchmark ids are valid"))
}

fn registry() -> Registry {
    registry_of(DEVICES, SEGMENTS)
}

/// `devices` devices: three traffic loops per segment on `segments` segments, the rest
/// air-quality stations.
fn registry_of(devices: usize, segments: usize) -> Registry {
    let segments: Vec<RoadSegment> = (0..segments)
        .map(|s| RoadSegment {
            id: id(SegmentId::parse(&format!("seg-{s}"))),
            name: format!("Segment {s}"),
            kind: "urban".into(),
            coordinates: vec![[11.2, 43.7], [11.21, 43.71]],
            length_m: 300.0,
            lanes: 2,
            speed_limit_kmh: 50.0,
            free_flow_kmh: 50.0,
            capacity_vph: 1_800.0,
        })
        .collect();
    let traffic_devices = segments.len() * 3;
    let devices = (0..devices)
        .map(|d| {
            let traffic = d < traffic_devices;
            DeviceProfile {
                id: id(DeviceId::parse(&format!("dev-{d:05}"))),
                kind: Some(if traffic { "traffic_loop" } else { "air_quality" }.into()),
                segment: traffic.then(|| id(SegmentId::parse(&format!("seg-{}", d / 3)))),
                interval: Some(Duration::from_secs(5)),
            }
        })
        .collect();
    Registry { segments, devices, ..Registry::default() }
}

/// Every device's readings of one report (values filled per round).
fn templates() -> Vec<Reading> {
    templates_of(DEVICES, SEGMENTS)
}

fn templates_of(devices: usize, segments: usize) -> Vec<Reading> {
    let mut out = Vec::new();
    for d in 0..devices {
        let device = id(DeviceId::parse(&format!("dev-{d:05}")));
        let metrics: &[MetricId] = if d < segments * 3 { &TRAFFIC } else { &AIR };
        for &metric in metrics {
            out.push(Reading {
                device: device.clone(),
                metric,
                time: EventTime(0),
                value: 0.0,
                seq: None,
            });
        }
    }
    out
}

fn value(r: &Reading, d: usize, round: i64) -> f64 {
    match r.metric {
        MetricId::SpeedKmh if (d / 3).is_multiple_of(50) => 10.0 + (round % 3) as f64,
        MetricId::SpeedKmh => 40.0 + ((d as i64 + round) % 8) as f64,
        MetricId::VehicleCount => ((d as i64 * 7 + round) % 12) as f64,
        MetricId::OccupancyPct => ((d as i64 * 3 + round) % 40) as f64,
        _ => ((d as i64 * 13 + round * 7) % 90) as f64,
    }
}

/// Run the benchmark on the calling thread.
pub fn measure(quick: bool) -> Result<Value> {
    let rules = rules()?.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let rule_count = rules.rules.len();
    let config = StreamConfig::default();
    let mut core = StreamCore::new(&config, rules);
    let base = EventTime::now().millis() / 60_000 * 60_000 - 3_600_000;
    let mut out = Emitted::default();
    core.set_registry(registry(), EventTime(base), &mut out);
    let mut readings = templates();
    let device_of: Vec<usize> = {
        let mut v = Vec::with_capacity(readings.len());
        for d in 0..DEVICES {
            let n = if d < SEGMENTS * 3 { TRAFFIC.len() } else { AIR.len() };
            v.extend(std::iter::repeat_n(d, n));
        }
        v
    };
    let rounds: i64 = if quick { 36 } else { 240 };
    let (mut windows, mut segment_windows, mut alerts) = (0usize, 0usize, 0usize);
    let mut processed = 0u64;
    let started = Instant::now();
    for round in 0..rounds {
        let now = EventTime(base + round * 5_000);
        for (r, &d) in readings.iter_mut().zip(&device_of) {
            r.time = now;
            r.value = value(r, d, round);
        }
        for batch in readings.chunks(1_000) {
            core.on_readings(batch, now, &mut out);
            processed += batch.len() as u64;
        }
        core.tick(now, &mut out);
        windows += out.windows.len();
        segment_windows += out.segments.len();
        alerts += out.alerts.len();
        out.windows.clear();
        out.segments.clear();
        out.alerts.clear();
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = processed as f64 / secs.max(1e-9);
    Ok(json!({
        "devices": DEVICES,
        "segments": SEGMENTS,
        "rules": rule_count,
        "readings": processed,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "readings_per_s": rate.round(),
        "device_windows": windows,
        "segment_windows": segment_windows,
        "alert_outputs": alerts,
        "open_alerts": core.open_alerts().count(),
        "goal_readings_per_s": GOAL_READINGS_PER_S,
        "vs_goal": (rate / GOAL_READINGS_PER_S * 100.0).round() / 100.0,
    }))
}

/// Heap bytes held once `devices` devices (three traffic loops per segment on a tenth as
/// many segments, the rest air-quality stations) have reported every 5 s for 3 minutes of
/// event time, fed as the stream task feeds them. Counted by the benchmark's allocator
/// ([`crate::measure::heap_bytes`]) on this thread alone.
struct Weighed {
    /// The registry handed to the core (profiles, links, segments).
    registry: isize,
    /// Everything else the core holds at the end.
    state: isize,
}

fn weigh_core(devices: usize, rules: stream::RuleSet) -> Weighed {
    let segments = devices / 10;
    let config = StreamConfig::default();
    let registry = registry_of(devices, segments);
    let mut readings = templates_of(devices, segments);
    let base = EventTime::now().millis() / 60_000 * 60_000 - 3_600_000;
    let mut out = Emitted::default();
    let heap0 = heap_bytes();
    let mut core = StreamCore::new(&config, rules);
    core.set_registry(registry, EventTime(base), &mut out);
    let heap_registry = heap_bytes();
    for round in 0..36 {
        let now = EventTime(base + round * 5_000);
        for (k, r) in readings.iter_mut().enumerate() {
            r.time = now;
            r.value = ((k as i64 + round) % 7) as f64 + 20.0;
        }
        for batch in readings.chunks(1_000) {
            core.on_readings(batch, now, &mut out);
        }
        core.tick(now, &mut out);
        out.windows = Vec::new();
        out.segments = Vec::new();
        out.alerts = Vec::new();
    }
    let weighed = Weighed { registry: heap_registry - heap0, state: heap_bytes() - heap_registry };
    drop(core);
    weighed
}

/// The same feed into device windows alone, and into the live hub alone.
fn weigh_windows_and_hub(devices: usize) -> (isize, isize) {
    let segments = devices / 10;
    let config = StreamConfig::default();
    let mut readings = templates_of(devices, segments);
    let base = EventTime::now().millis() / 60_000 * 60_000 - 3_600_000;
    let heap0 = heap_bytes();
    let mut windows = stream::Windows::new(&config);
    let mut emitted = Vec::new();
    for round in 0..36 {
        let now = EventTime(base + round * 5_000);
        for r in readings.iter_mut() {
            r.time = now;
        }
        for r in &readings {
            windows.add(r, &mut emitted);
        }
        windows.tick(now, &mut emitted);
        emitted = Vec::new();
    }
    let windows_bytes = heap_bytes() - heap0;
    drop(windows);
    let heap0 = heap_bytes();
    let hub = LiveHub::new(1_024);
    for batch in readings.chunks(1_000) {
        hub.apply(batch);
    }
    let hub_bytes = heap_bytes() - heap0;
    drop(hub);
    (windows_bytes, hub_bytes)
}

/// Bytes per device of each part of the stream core, and of the live hub.
pub fn memory(devices: usize) -> Result<Value> {
    let per_device = |bytes: isize| round2(bytes as f64 / devices as f64);
    let shipped =
        stream::AlertRulesConfig::default().validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let shipped_rules = shipped.rules.len();
    let none = stream::AlertRulesConfig { air_quality_defaults: false, ..Default::default() }
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let many = rules()?.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let bare = weigh_core(devices, none);
    let with_shipped = weigh_core(devices, shipped);
    let with_many = weigh_core(devices, many);
    let (windows, hub) = weigh_windows_and_hub(devices);
    let total = |w: &Weighed| w.registry + w.state;
    Ok(json!({
        "devices": devices,
        "segments": devices / 10,
        "stream_core_bytes_per_device": per_device(total(&with_shipped)),
        "shipped_rules": shipped_rules,
        "stream_core_with_50_rules_bytes_per_device": per_device(total(&with_many)),
        "parts_bytes_per_device": {
            "registry": per_device(with_shipped.registry),
            "device_windows": per_device(windows),
            "segment_windows": per_device(bare.state - windows),
            "alert_engine_shipped_rules": per_device(with_shipped.state - bare.state),
            "alert_engine_50_rules": per_device(with_many.state - bare.state),
        },
        "live_hub_bytes_per_device": per_device(hub),
        "goal_stream_core_bytes_per_device": 1_536,
    }))
}

/// Run on a thread of its own (one core), off the async runtime.
pub async fn run(quick: bool) -> Result<Value> {
    tokio::task::spawn_blocking(move || {
        let mut report = measure(quick)?;
        report["memory"] = memory(if quick { 10_000 } else { 100_000 })?;
        Ok(report)
    })
    .await
    .context("stream benchmark thread")?
}
