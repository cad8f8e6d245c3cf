//! Traffic intelligence (`--intel`): the anomaly rules' accuracy on the simulator, and what
//! learned baselines cost.
//!
//! **Accuracy.** The simulated city (`simulator::City`, the Florence seed's segments, two
//! devices a segment, detectors reporting every 60 s) is learned over four weeks into
//! baselines with the product's own code (`telemetry::baseline`: slot sums as the store
//! gives them, `slot_means`, `learn`), then a fortnight is run through the real
//! `StreamCore` (device windows, segment windows, the alert engine) twice: once with
//! incidents injected (the speed readings of every detector on a random segment at 40 %
//! of what they would have been, for 10 minutes, at a random time), once without. An
//! incident is detected by an anomaly raise on its segment from its start to 5 minutes
//! after its end; the time to detect is the raise's processing time minus the incident's
//! start. False alerts are raises on incident-free data, per segment and week. The
//! simulator's own recurring incident segment (a 6.5-minute breakdown every 15 minutes,
//! which a 15-minute baseline cannot hold as usual) is left out of both. Several rule
//! settings run side by side on the same data.
//!
//! **Cost.** Memory of the profiles for 25,000 segments × 3 figures and 10,000 detectors
//! × 3 metrics (every slot learned); the time to learn from PostgreSQL (`refresh_baselines`:
//! the first learning from minute rollups written with `generate_series`, a full relearn
//! from the stored slot sums, one slot), for `--intel-detectors` detectors.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use sccr_tests::TestDb;
use serde_json::{json, Value};
use simulator::{plan_fleet, City, DeviceKind, INCIDENT_SEGMENT};
use store::baselines::LearnSettings;
use store::{DeviceRecord, Store, StoreOptions, TimescaleMode};
use stream::{
    AlertOutput, AlertRulesConfig, AlertState, DeviceProfile, Emitted, Registry, StreamConfig,
    StreamCore, Subject,
};
use telemetry::baseline::{
    self, BaselineOn, BaselineRow, Baselines, DeviceSlotSum, Exclusions, SlotClock, SpreadFloor,
    SLOTS_PER_WEEK, SLOT_MS, WEEK_MS,
};
use telemetry::segment::{parse_geojson, FLORENCE_SEED};
use telemetry::{EventTime, MetricId, Reading};

use crate::measure::heap_bytes;

const MINUTE: i64 = 60_000;
const INCIDENT_MS: i64 = 10 * MINUTE;
/// A raise up to this long after an incident ends still counts as its detection.
const GRACE_MS: i64 = 5 * MINUTE;

/// The rule settings compared: (id, k, clear_k, for).
const SETTINGS: [(&str, f64, f64, &str); 4] = [
    ("k3-for1m", 3.0, 1.5, "1m"),
    ("k3-for2m", 3.0, 1.5, "2m"),
    ("k4-for1m", 4.0, 2.0, "1m"),
    ("k2.5-for2m", 2.5, 1.25, "2m"),
];

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Clone)]
struct Incident {
    segment: String,
    start: i64,
}

struct Sim {
    city: City,
    devices: Vec<simulator::SimDevice>,
    /// Per device: its report offset within the minute.
    offsets: Vec<i64>,
    /// Extra variation of each segment's speed: ± this fraction per day, and half of it per
    /// 10-minute block (0: the simulator as it is).
    noise: f64,
}

/// A number in [-1, 1] from a key.
fn signed(key: &[u64]) -> f64 {
    let mut r = Rng(0x5EED);
    for k in key {
        r.0 ^= k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        r.next();
    }
    (r.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

impl Sim {
    /// The factor on speed readings of device `i` at `t` (1 without noise).
    fn speed_factor(&self, i: usize, t: i64) -> f64 {
        if self.noise == 0.0 {
            return 1.0;
        }
        let seg = self.devices[i]
            .segment
            .id
            .as_str()
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let day = (t + 3_600_000).div_euclid(86_400_000) as u64;
        let block = t.div_euclid(600_000) as u64;
        1.0 + self.noise * signed(&[seg, day]) + 0.5 * self.noise * signed(&[seg, block, 1])
    }

    fn readings(&self, minute: i64, incidents: &[Incident], out: &mut Vec<Reading>) {
        for (i, d) in self.devices.iter().enumerate() {
            let t = minute + self.offsets[i];
            let hit = d.kind == DeviceKind::TrafficLoop
                && incidents.iter().any(|x| {
                    x.segment == d.segment.id.as_str()
                        && (x.start..x.start + INCIDENT_MS).contains(&t)
                });
            let factor = self.speed_factor(i, t);
            for (metric, value) in self.city.readings(i, EventTime(t), 60.0) {
                let value = match metric {
                    MetricId::SpeedKmh if hit => (value * factor * 0.4 * 10.0).round() / 10.0,
                    MetricId::SpeedKmh => value * factor,
                    _ => value,
                };
                out.push(Reading {
                    device: d.id.clone(),
                    metric,
                    time: EventTime(t),
                    value,
                    seq: None,
                });
            }
        }
    }
}

/// Learn the city's baselines over `weeks` weeks before `end`, as the store would.
fn learn(sim: &Sim, end: i64, weeks: i64, clock: SlotClock) -> Vec<BaselineRow> {
    let mut sums: HashMap<(usize, MetricId, i64), (u64, f64)> = HashMap::new();
    let mut minute = end - weeks * WEEK_MS;
    while minute < end {
        for i in 0..sim.devices.len() {
            let t = minute + sim.offsets[i];
            let bucket = t - t.rem_euclid(SLOT_MS);
            let factor = sim.speed_factor(i, t);
            for (metric, value) in sim.city.readings(i, EventTime(t), 60.0) {
                let value = if metric == MetricId::SpeedKmh { value * factor } else { value };
                let e = sums.entry((i, metric, bucket)).or_insert((0, 0.0));
                e.0 += 1;
                e.1 += value;
            }
        }
        minute += MINUTE;
    }
    let slot_sums: Vec<DeviceSlotSum> = sums
        .into_iter()
        .map(|((i, metric, bucket), (count, sum))| DeviceSlotSum {
            device: sim.devices[i].id.to_string(),
            segment: Some(sim.devices[i].segment.id.to_string()),
            metric,
            bucket: EventTime(bucket),
            count,
            sum,
        })
        .collect();
    let means = baseline::slot_means(&slot_sums);
    let segment_of: HashMap<String, String> =
        sim.devices.iter().map(|d| (d.id.to_string(), d.segment.id.to_string())).collect();
    baseline::learn(&means, clock, &Exclusions::default(), SpreadFloor { relative: 0.1 }, &|d| {
        segment_of.get(d).cloned()
    })
}

/// A stream core running `rules` over the simulated city's devices (reporting every 60 s)
/// and the Florence seed segments, judging against `baselines`, from `start`.
fn city_core(
    sim: &Sim,
    rules: Vec<Value>,
    baselines: &Arc<Baselines>,
    start: i64,
) -> Result<StreamCore> {
    let config: AlertRulesConfig =
        serde_json::from_value(json!({"air_quality_defaults": false, "rules": rules}))?;
    let rules = config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut core = StreamCore::new(&StreamConfig::default(), rules);
    let registry = Registry {
        segments: parse_geojson(FLORENCE_SEED)?,
        devices: sim
            .devices
            .iter()
            .map(|d| DeviceProfile {
                id: d.id.clone(),
                kind: Some(d.kind.kind().as_str().to_owned()),
                segment: Some(d.segment.id.clone()),
                interval: Some(std::time::Duration::from_secs(60)),
            })
            .collect(),
        operations: BTreeMap::new(),
    };
    // What the registry's arrival emits (nothing for a fresh core) is not part of a run.
    core.set_registry(registry, EventTime(start), &mut Emitted::default());
    core.set_baselines(baselines.clone());
    Ok(core)
}

/// What a fortnight through the stream core gave.
struct Fortnight {
    /// Raises as (rule, segment, processing time).
    raises: Vec<(String, String, i64)>,
    readings: u64,
    seconds: f64,
    /// The segment windows in emission order, each with the forecast made from it.
    states: Vec<stream::SegmentState>,
}

/// A fortnight through the stream core from `start`, with `incidents` injected.
fn run_fortnight(
    sim: &Sim,
    baselines: &Arc<Baselines>,
    start: i64,
    incidents: &[Incident],
) -> Result<Fortnight> {
    let rules: Vec<Value> = SETTINGS
        .iter()
        .map(|(id, k, clear_k, hold)| {
            json!({"id": id, "severity": "warning", "raises_per_minute": 1000,
                "anomaly": {"metric": "speed_kmh", "on": "segment", "direction": "below", "k": k, "clear_k": clear_k, "for": hold}})
        })
        .collect();
    let mut core = city_core(sim, rules, baselines, start)?;
    let mut raises = Vec::new();
    let mut states = Vec::new();
    let mut readings = 0u64;
    let mut batch = Vec::new();
    let started = Instant::now();
    let mut minute = start;
    while minute < start + 2 * WEEK_MS {
        batch.clear();
        sim.readings(minute, incidents, &mut batch);
        readings += batch.len() as u64;
        let mut out = Emitted::default();
        core.on_readings(&batch, EventTime(minute + MINUTE), &mut out);
        core.tick(EventTime(minute + MINUTE + 6_000), &mut out);
        states.append(&mut out.segments);
        for o in &out.alerts {
            if let AlertOutput::Transition { alert, transition } = o {
                if transition.to == AlertState::Raised {
                    if let Subject::Segment(s) = &alert.key.subject {
                        raises.push((
                            alert.key.rule.to_string(),
                            s.to_string(),
                            transition.at.millis(),
                        ));
                    }
                }
            }
        }
        minute += MINUTE;
    }
    Ok(Fortnight { raises, readings, seconds: started.elapsed().as_secs_f64(), states })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    baseline::median(&mut v)
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// The accuracy of each rule setting on the simulator, with `noise` added (see [`Sim`]).
pub fn accuracy(quick: bool, noise: f64) -> Result<Value> {
    let segments = parse_geojson(FLORENCE_SEED)?;
    let devices = plan_fleet(&segments, segments.len() * 2);
    let city = City::new(&devices, 24);
    let offsets = (0..devices.len()).map(|i| (i as i64 * 7_919) % 60_000).collect();
    let sim = Sim { city, devices, offsets, noise };
    let clock = SlotClock::default();
    // The fortnight starts on Monday 2026-11-09 00:00 CET; four weeks before it are learned.
    let start = EventTime::parse_rfc3339("2026-11-08T23:00:00Z")?.millis();
    let weeks = if quick { 2 } else { 4 };
    let t = Instant::now();
    let rows = learn(&sim, start, weeks, clock);
    let learn_s = t.elapsed().as_secs_f64();
    let mut baselines = Baselines::new(clock);
    baselines.extend(&rows);
    let baselines = Arc::new(baselines);
    // Segments with a detector, but the simulator's own recurring incident.
    let mut watched: Vec<String> = sim
        .devices
        .iter()
        .filter(|d| d.kind == DeviceKind::TrafficLoop && d.segment.id.as_str() != INCIDENT_SEGMENT)
        .map(|d| d.segment.id.to_string())
        .collect();
    watched.sort();
    watched.dedup();
    let skipped: Vec<String> =
        sim.city.incident_segment().map(|s| s.id.to_string()).into_iter().collect();
    // Incidents: at random times of the fortnight on random segments, one at a time per
    // segment with at least an hour between them.
    let mut rng = Rng(0x0001_D7E1);
    let wanted = if quick { 60 } else { 200 };
    let mut incidents: Vec<Incident> = Vec::new();
    while incidents.len() < wanted {
        let segment = watched[rng.below(watched.len() as u64) as usize].clone();
        let at = start + 6 * 3_600_000 + rng.below((2 * WEEK_MS - 7 * 3_600_000) as u64) as i64;
        if incidents
            .iter()
            .any(|x| x.segment == segment && (x.start - at).abs() < 3_600_000 + INCIDENT_MS)
        {
            continue;
        }
        incidents.push(Incident { segment, start: at });
    }
    let a = run_fortnight(&sim, &baselines, start, &incidents)?;
    let b = run_fortnight(&sim, &baselines, start, &[])?;
    let (with, readings_a, secs_a) = (&a.raises, a.readings, a.seconds);
    let (clean, readings_b, secs_b) = (&b.raises, b.readings, b.seconds);
    let mut results = Vec::new();
    for (id, k, clear_k, hold) in SETTINGS {
        let mine = |r: &Vec<(String, String, i64)>| -> Vec<(String, i64)> {
            r.iter()
                .filter(|x| x.0 == id && !skipped.contains(&x.1))
                .map(|x| (x.1.clone(), x.2))
                .collect()
        };
        let raised = mine(with);
        let mut delays = Vec::new();
        let mut matched = vec![false; raised.len()];
        for x in &incidents {
            let hit = raised.iter().enumerate().find(|(_, (s, at))| {
                *s == x.segment && *at >= x.start && *at <= x.start + INCIDENT_MS + GRACE_MS
            });
            if let Some((i, (_, at))) = hit {
                matched[i] = true;
                delays.push((at - x.start) as f64 / 1_000.0);
            }
        }
        let unmatched = matched.iter().filter(|m| !**m).count();
        let false_clean = mine(clean).len();
        let segment_weeks = watched.len() as f64 * 2.0;
        let mut sorted = delays.clone();
        sorted.sort_by(f64::total_cmp);
        let p90 = sorted.get(((sorted.len() as f64 - 1.0) * 0.9).round() as usize).copied();
        results.push(json!({
            "rule": id, "k": k, "clear_k": clear_k, "for": hold,
            "incidents": incidents.len(),
            "detected": delays.len(),
            "detection_rate": round(delays.len() as f64 / incidents.len() as f64, 3),
            "median_time_to_detect_s": median(delays).map(|v| round(v, 1)),
            "p90_time_to_detect_s": p90.map(|v| round(v, 1)),
            "raises_not_matching_an_incident": unmatched,
            "false_alerts_incident_free": false_clean,
            "false_alerts_per_segment_week": round(false_clean as f64 / segment_weeks, 3),
        }));
    }
    // Forecasts: all windows, and those made during an injected incident (with incidents)
    // or more than 10 % off the usual speed (incident-free).
    let window = StreamConfig::default().window;
    let during = |s: &stream::SegmentState| {
        incidents.iter().any(|x| {
            x.segment == s.segment.as_str()
                && (x.start..x.start + INCIDENT_MS).contains(&s.end.millis())
        })
    };
    let off_usual = |s: &stream::SegmentState| {
        let mid = EventTime((s.start.millis() + s.end.millis()) / 2);
        let usual = baselines.expected(BaselineOn::Segment, s.segment.as_str(), "speed_kmh", mid);
        matches!((s.speed_kmh, usual), (Some(v), Some(u)) if u.centre > 1.0 && (v / u.centre - 1.0).abs() > 0.1)
    };
    let kept = |states: &[stream::SegmentState]| -> Vec<stream::SegmentState> {
        states.iter().filter(|s| !skipped.contains(&s.segment.to_string())).cloned().collect()
    };
    let forecasts = json!({
        "with_incidents": crate::forecast_bench::accuracy(&kept(&a.states), &baselines, &segments, window, &during),
        "incident_free": crate::forecast_bench::accuracy(&kept(&b.states), &baselines, &segments, window, &off_usual),
        "disturbed_windows": {"with_incidents": "made during an injected incident", "incident_free": "made from a window more than 10 % off its usual speed"},
    });
    Ok(json!({
        "forecasts": forecasts,
        "extra_speed_noise": {"per_day": noise, "per_10_min": noise / 2.0},
        "segments_watched": watched.len(),
        "segments_left_out": skipped,
        "devices": sim.devices.len(),
        "learned_weeks": weeks,
        "learned_rows": rows.len(),
        "learn_s": round(learn_s, 1),
        "fortnight_readings": readings_a,
        "stream_core_readings_per_s": [round(readings_a as f64 / secs_a, 0), round(readings_b as f64 / secs_b, 0)],
        "settings": results,
    }))
}

/// Heap bytes of profiles for 25,000 segments × 3 figures and 10,000 detectors × 3 metrics.
fn memory(quick: bool) -> Value {
    let (segments, detectors) = if quick { (2_500, 1_000) } else { (25_000, 10_000) };
    let before = heap_bytes();
    let t = Instant::now();
    let mut b = Baselines::new(SlotClock::default());
    let mut rows = Vec::with_capacity(SLOTS_PER_WEEK);
    for (on, n, metrics) in [
        (BaselineOn::Segment, segments, baseline::SEGMENT_FIGURES.to_vec()),
        (BaselineOn::Device, detectors, vec!["vehicle_count", "speed_kmh", "occupancy_pct"]),
    ] {
        for i in 0..n {
            for metric in &metrics {
                rows.clear();
                rows.extend((0..SLOTS_PER_WEEK as u16).map(|slot| BaselineRow {
                    on,
                    subject: format!("s-{i}"),
                    metric: (*metric).to_owned(),
                    slot,
                    centre: 40.0,
                    spread: 4.0,
                    samples: 4,
                }));
                b.extend(&rows);
            }
        }
    }
    let build_s = t.elapsed().as_secs_f64();
    let bytes = heap_bytes() - before;
    let profiles = b.len();
    // Lookups as the engine makes them, one per reading.
    let t = Instant::now();
    let mut found = 0u64;
    let n = 1_000_000u64;
    for i in 0..n {
        let subject = format!("s-{}", i % segments as u64);
        if b.expected(BaselineOn::Segment, &subject, "speed_kmh", EventTime(i as i64 * 1_000))
            .is_some()
        {
            found += 1;
        }
    }
    let lookup_ns = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    json!({
        "segments": segments, "detectors": detectors, "profiles": profiles,
        "heap_mb": round(bytes as f64 / 1_048_576.0, 1),
        "slot_bytes_mb": round(b.slot_bytes() as f64 / 1_048_576.0, 1),
        "build_s": round(build_s, 2),
        "lookups": found,
        "lookup_ns": round(lookup_ns, 0),
    })
}

/// The learning from PostgreSQL: `detectors` detectors (two per segment) reporting speed,
/// counts and occupancy every minute for `weeks` weeks.
///
/// Up to 1,000 detectors their minute rollups are written (`generate_series`) and the
/// first learning sums them (nothing stored yet); then a change of settings relearns
/// everything from the stored slot sums; then one slot is learned. Above 1,000 (the
/// minute rollups of 10,000 detectors over four weeks would be 1.2 billion rows) the slot
/// sums are written as the first learning would have stored them, the relearn is measured
/// from them, and only the minute rollups of the slot learned incrementally are written.
pub async fn from_store(quick: bool, detectors: Option<i64>) -> Result<Value> {
    let (detectors, weeks) = match detectors {
        Some(n) => (n.max(2), if quick { 2 } else { 4 }),
        None if quick => (100, 2),
        None => (250, 4),
    };
    let db = TestDb::create().await?;
    let store = Store::connect(
        &db.url,
        &StoreOptions { timescaledb: TimescaleMode::Off, ..StoreOptions::default() },
    )
    .await?;
    store.migrate().await?;
    let segments: Vec<telemetry::RoadSegment> =
        (0..detectors / 2).map(|i| sccr_tests::test_segment(&format!("seg-{i}"))).collect();
    store.upsert_segments(&segments).await?;
    let records: Vec<DeviceRecord> = (0..detectors)
        .map(|i| sccr_tests::loop_on(&format!("loop-{i}"), &format!("seg-{}", i / 2)))
        .collect();
    for chunk in records.chunks(1_000) {
        store.upsert_devices(chunk).await?;
    }
    let now = EventTime::now().millis();
    let end = now - now.rem_euclid(SLOT_MS);
    let from = end - weeks * WEEK_MS;
    let Store::Postgres(pg) = &store else { anyhow::bail!("a postgres store") };
    let clock = SlotClock::zone("Europe/Rome").ok_or_else(|| anyhow::anyhow!("Europe/Rome"))?;
    let settings = LearnSettings {
        weeks: weeks as u32,
        min_samples: 1,
        clock,
        floor: SpreadFloor { relative: 0.1 },
        holidays: vec![],
    };
    // Speed 40–46 km/h, 10–12 vehicles and 5–8 % occupancy a minute, by detector.
    let rollups = |a: i64, b: i64| {
        sqlx::query(
            "INSERT INTO rollup_1m (bucket, device, metric, count, sum, min, max, last_value, last_time)
             SELECT b, 'loop-' || d, m, 1, v, v, v, v, b
             FROM generate_series($1::timestamptz, $2::timestamptz - interval '1 minute', interval '1 minute') AS b,
                  generate_series(0, $3 - 1) AS d,
                  unnest(ARRAY['speed_kmh', 'vehicle_count', 'occupancy_pct']) AS m,
                  LATERAL (SELECT CASE m WHEN 'speed_kmh' THEN 40 + (d % 7)
                                         WHEN 'vehicle_count' THEN 10 + (d % 3)
                                         ELSE 5 + (d % 4) END::float8 AS v) AS x",
        )
        .bind(EventTime(a).to_offset_date_time())
        .bind(EventTime(b).to_offset_date_time())
        .bind(detectors)
    };
    let mut out = serde_json::Map::new();
    let t = Instant::now();
    if detectors <= 1_000 {
        rollups(from - WEEK_MS / 7, end).execute(pg.pool()).await?;
        let rollup_rows = detectors * 3 * (end - from + WEEK_MS / 7) / MINUTE;
        out.insert("rollup_1m_rows".into(), json!(rollup_rows));
        out.insert("write_s".into(), json!(round(t.elapsed().as_secs_f64(), 1)));
        let t = Instant::now();
        let first = store.refresh_baselines(&settings, EventTime(end + 6 * MINUTE)).await?;
        let first_s = t.elapsed().as_secs_f64();
        out.insert("first_learning_s".into(), json!(round(first_s, 2)));
        out.insert("first_learning_buckets_summed".into(), json!(first.summed));
        out.insert(
            "first_learning_s_per_detector".into(),
            json!(round(first_s / detectors as f64, 4)),
        );
    } else {
        // The sums the first learning would have stored, a day of buckets at a time.
        let sums_from = end - weeks * WEEK_MS - WEEK_MS / 7;
        let mut bucket = sums_from;
        while bucket < end {
            let mut sums = Vec::new();
            for b in (bucket..(bucket + 86_400_000).min(end)).step_by(SLOT_MS as usize) {
                for d in 0..detectors {
                    for (metric, v) in [
                        (MetricId::SpeedKmh, 40 + d % 7),
                        (MetricId::VehicleCount, 10 + d % 3),
                        (MetricId::OccupancyPct, 5 + d % 4),
                    ] {
                        sums.push(DeviceSlotSum {
                            device: format!("loop-{d}"),
                            segment: None,
                            metric,
                            bucket: EventTime(b),
                            count: 15,
                            sum: 15.0 * v as f64,
                        });
                    }
                }
            }
            store.put_baseline_slot_sums(&sums, EventTime(now)).await?;
            bucket += 86_400_000;
        }
        out.insert("slot_sums_written".into(), json!((end - sums_from) / SLOT_MS * detectors * 3));
        out.insert("write_s".into(), json!(round(t.elapsed().as_secs_f64(), 1)));
        // The minute rollups of the slot learned incrementally below.
        let slot = clock.slot(EventTime(end - SLOT_MS));
        for o in baseline::occurrences(clock, slot, weeks as u32, EventTime(end)) {
            rollups(o.millis(), o.millis() + SLOT_MS).execute(pg.pool()).await?;
        }
    }
    // A change of settings: everything relearned, from the stored sums.
    let relearn = LearnSettings { floor: SpreadFloor { relative: 0.11 }, ..settings.clone() };
    let t = Instant::now();
    let full = store.refresh_baselines(&relearn, EventTime(end + 6 * MINUTE)).await?;
    let full_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(full.full && full.summed == 0, "a relearn from stored sums: {full:?}");
    // One more slot closed: the incremental refresh.
    let mark = store.baseline_mark().await?.ok_or_else(|| anyhow::anyhow!("no mark"))?;
    store
        .set_baseline_mark(&store::baselines::BaselineMark {
            learned_to: EventTime(mark.learned_to.millis() - SLOT_MS),
            settings: mark.settings,
        })
        .await?;
    let t = Instant::now();
    let one = store.refresh_baselines(&relearn, EventTime(end + 6 * MINUTE)).await?;
    let one_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let loaded = store.baselines_of_metric(BaselineOn::Segment, "speed_kmh").await?;
    let load_s = t.elapsed().as_secs_f64();
    let sizes: (i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('baseline_sums'), pg_total_relation_size('baselines')",
    )
    .fetch_one(pg.pool())
    .await?;
    store.close().await;
    out.extend([
        ("detectors".into(), json!(detectors)),
        ("segments".into(), json!(detectors / 2)),
        ("weeks".into(), json!(weeks)),
        ("relearn_from_stored_sums_s".into(), json!(round(full_s, 2))),
        ("relearn_buckets_read".into(), json!(full.sums)),
        ("relearn_slots_learned".into(), json!(full.rows)),
        ("one_slot_refresh_s".into(), json!(round(one_s, 3))),
        ("one_slot_buckets_summed".into(), json!(one.summed)),
        ("one_slot_rows".into(), json!(one.rows)),
        ("one_slot_full".into(), json!(one.full)),
        ("load_segment_speed_s".into(), json!(round(load_s, 2))),
        ("load_segment_speed_rows".into(), json!(loaded.len())),
        ("baseline_sums_bytes".into(), json!(sizes.0)),
        ("baselines_bytes".into(), json!(sizes.1)),
    ]);
    Ok(Value::Object(out))
}

pub async fn run(quick: bool) -> Result<Value> {
    eprintln!("== intel: memory of 25,000 segments and 10,000 detectors");
    let mem = memory(quick);
    eprintln!("{mem}");
    eprintln!("== intel: learning from PostgreSQL");
    let store = from_store(quick, None).await?;
    eprintln!("{store}");
    eprintln!("== intel: anomaly accuracy on the simulator");
    let acc = tokio::task::spawn_blocking(move || accuracy(quick, 0.0)).await??;
    eprintln!("{acc}");
    eprintln!(
        "== intel: anomaly accuracy with day-to-day variation added (±8 % a day, ±4 % per 10 min)"
    );
    let noisy = tokio::task::spawn_blocking(move || accuracy(quick, 0.08)).await??;
    eprintln!("{noisy}");
    eprintln!("== intel: detector health on the simulator (clean fortnight, injected faults)");
    let health = tokio::task::spawn_blocking(move || health(quick)).await??;
    eprintln!("{health}");
    Ok(
        json!({"memory": mem, "store": store, "accuracy": acc, "accuracy_with_variation": noisy, "health": health}),
    )
}

/// The detector-health rules the bench runs, with their shipped defaults.
const HEALTH_RULES: [(&str, &str); 4] = [
    ("stuck", r#"{"check": "stuck"}"#),
    ("zero-busy", r#"{"check": "zero_busy"}"#),
    ("missing", r#"{"check": "missing"}"#),
    ("implausible", r#"{"check": "implausible"}"#),
];

/// A fault injected into one detector's readings for two hours.
#[derive(Debug, Clone)]
struct Fault {
    device: usize,
    flag: telemetry::health::HealthFlag,
    start: i64,
}

const FAULT_MS: i64 = 2 * 3_600_000;

/// Flags opened as (flag, device, since, processing time) and flagged milliseconds per flag.
type HealthRun =
    (Vec<(telemetry::health::HealthFlag, String, i64, i64)>, BTreeMap<String, i64>, u64, f64);

/// A fortnight of the simulator through the stream core with the health rules, `faults`
/// injected: stuck (the speed frozen at its value when the fault starts), zero_busy (every
/// count 0), missing (no reading at all), implausible (occupancy 0).
fn run_health(
    sim: &Sim,
    baselines: &Arc<Baselines>,
    start: i64,
    faults: &[Fault],
) -> Result<HealthRun> {
    use telemetry::health::HealthFlag;
    let rules: Vec<Value> = HEALTH_RULES
        .iter()
        .map(|(id, table)| -> Result<Value> {
            Ok(json!({"id": id, "severity": "info", "raises_per_minute": 1000, "health": serde_json::from_str::<Value>(table)?}))
        })
        .collect::<Result<_>>()?;
    let mut core = city_core(sim, rules, baselines, start)?;
    let mut opened = Vec::new();
    let mut open_since: HashMap<(String, HealthFlag), i64> = HashMap::new();
    let mut flagged: BTreeMap<String, i64> = BTreeMap::new();
    let mut frozen: HashMap<usize, f64> = HashMap::new();
    let mut readings = 0u64;
    let mut batch = Vec::new();
    let started = Instant::now();
    let end = start + 2 * WEEK_MS;
    let mut minute = start;
    while minute < end {
        batch.clear();
        sim.readings(minute, &[], &mut batch);
        let index: HashMap<&str, usize> = if faults.is_empty() {
            HashMap::new()
        } else {
            sim.devices.iter().enumerate().map(|(i, d)| (d.id.as_str(), i)).collect()
        };
        if !faults.is_empty() {
            batch.retain_mut(|r| {
                let i = index[r.device.as_str()];
                let Some(f) = faults.iter().find(|f| {
                    f.device == i && (f.start..f.start + FAULT_MS).contains(&r.time.millis())
                }) else {
                    if r.metric == MetricId::SpeedKmh {
                        frozen.remove(&i);
                    }
                    return true;
                };
                match (f.flag, r.metric) {
                    (HealthFlag::Missing, _) => return false,
                    (HealthFlag::Stuck, MetricId::SpeedKmh) => {
                        r.value = *frozen.entry(i).or_insert(r.value)
                    }
                    (HealthFlag::ZeroBusy, MetricId::VehicleCount) => r.value = 0.0,
                    (HealthFlag::Implausible, MetricId::OccupancyPct) => r.value = 0.0,
                    _ => {}
                }
                true
            });
        }
        readings += batch.len() as u64;
        let mut out = Emitted::default();
        let now = minute + MINUTE;
        core.on_readings(&batch, EventTime(now), &mut out);
        for s in [6_000, 21_000, 36_000, 51_000] {
            core.tick(EventTime(now + s), &mut out);
        }
        for edge in core.take_flags() {
            match edge {
                stream::FlagEdge::Open { device, flag, since, .. } => {
                    opened.push((flag, device.to_string(), since.millis(), now));
                    open_since.insert((device.to_string(), flag), since.millis());
                }
                stream::FlagEdge::Close { device, flag, at, .. } => {
                    if let Some(since) = open_since.remove(&(device.to_string(), flag)) {
                        *flagged.entry(flag.as_str().to_owned()).or_default() +=
                            (at.millis() - since).max(0);
                    }
                }
            }
        }
        minute += MINUTE;
    }
    for ((_, flag), since) in open_since {
        *flagged.entry(flag.as_str().to_owned()).or_default() += (end - since).max(0);
    }
    Ok((opened, flagged, readings, started.elapsed().as_secs_f64()))
}

/// Detector health on the simulator: flags raised on the clean fortnight (false flags) and
/// the detection of injected faults, with the shipped default settings.
pub fn health(quick: bool) -> Result<Value> {
    use telemetry::health::HealthFlag;
    let segments = parse_geojson(FLORENCE_SEED)?;
    let devices = plan_fleet(&segments, segments.len() * 2);
    let city = City::new(&devices, 24);
    let offsets = (0..devices.len()).map(|i| (i as i64 * 7_919) % 60_000).collect();
    let sim = Sim { city, devices, offsets, noise: 0.0 };
    let clock = SlotClock::default();
    let start = EventTime::parse_rfc3339("2026-11-08T23:00:00Z")?.millis();
    let rows = learn(&sim, start, if quick { 2 } else { 4 }, clock);
    let mut baselines = Baselines::new(clock);
    baselines.extend(&rows);
    let baselines = Arc::new(baselines);
    let loops: Vec<usize> = (0..sim.devices.len())
        .filter(|&i| sim.devices[i].kind == DeviceKind::TrafficLoop)
        .collect();
    let stations = sim.devices.len() - loops.len();
    let device_weeks = sim.devices.len() as f64 * 2.0;
    let loop_weeks = loops.len() as f64 * 2.0;

    let (clean, clean_ms, readings, secs) = run_health(&sim, &baselines, start, &[])?;
    let mut false_flags = Vec::new();
    for flag in HealthFlag::ALL {
        let n = clean.iter().filter(|x| x.0 == flag).count();
        let on = if matches!(flag, HealthFlag::Stuck | HealthFlag::Missing) {
            device_weeks
        } else {
            loop_weeks
        };
        let subjects = if matches!(flag, HealthFlag::Stuck | HealthFlag::Missing) {
            sim.devices.len()
        } else {
            loops.len()
        };
        let ms = clean_ms.get(flag.as_str()).copied().unwrap_or(0);
        false_flags.push(json!({
            "flag": flag.as_str(), "raised": n,
            "per_device_week": round(n as f64 / on, 3),
            "share_of_time_flagged": round(ms as f64 / (subjects as f64 * 2.0 * WEEK_MS as f64), 5),
            "devices": clean.iter().filter(|x| x.0 == flag).map(|x| x.1.clone()).collect::<std::collections::BTreeSet<_>>().len(),
        }));
    }
    // Faults: per kind, on random detectors at random times (zero counts at weekday rush
    // hours, 07:00–09:00 local), two hours each, at most one per detector at a time.
    let per_kind = if quick { 10 } else { 25 };
    let mut rng = Rng(0x004E_A174);
    let mut faults: Vec<Fault> = Vec::new();
    for flag in HealthFlag::ALL {
        let mut n = 0;
        while n < per_kind {
            let device = loops[rng.below(loops.len() as u64) as usize];
            let at = if flag == HealthFlag::ZeroBusy {
                let day = rng.below(10) as i64;
                let day = day + day / 5 * 2; // the ten weekdays of the two weeks
                start + 3_600_000 + day * 86_400_000 + 6 * 3_600_000 + rng.below(3_600_000) as i64
            } else {
                start + 6 * 3_600_000 + rng.below((2 * WEEK_MS - 9 * 3_600_000) as u64) as i64
            };
            if faults
                .iter()
                .any(|f| f.device == device && (f.start - at).abs() < FAULT_MS + 3_600_000)
            {
                continue;
            }
            faults.push(Fault { device, flag, start: at });
            n += 1;
        }
    }
    let (raised, _, _, _) = run_health(&sim, &baselines, start, &faults)?;
    let mut detection = Vec::new();
    for flag in HealthFlag::ALL {
        let mut delays = Vec::new();
        for f in faults.iter().filter(|f| f.flag == flag) {
            let id = sim.devices[f.device].id.as_str();
            if let Some(x) = raised.iter().find(|x| {
                x.0 == flag
                    && x.1 == id
                    && x.3 >= f.start
                    && x.3 <= f.start + FAULT_MS + 30 * MINUTE
            }) {
                delays.push((x.3 - f.start) as f64 / 60_000.0);
            }
        }
        detection.push(json!({
            "flag": flag.as_str(), "faults": per_kind, "detected": delays.len(),
            "detection_rate": round(delays.len() as f64 / per_kind as f64, 3),
            "median_time_to_flag_min": median(delays).map(|v| round(v, 1)),
        }));
    }
    Ok(json!({
        "devices": sim.devices.len(), "traffic_loops": loops.len(), "air_stations": stations,
        "report_interval_s": 60, "fortnight_readings": readings,
        "stream_core_readings_per_s": round(readings as f64 / secs, 0),
        "clean_fortnight": false_flags,
        "injected_faults_2h": detection,
    }))
}
