use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use telemetry::Reading;

use super::*;
use crate::window::Windows;

const T0: i64 = 1_763_892_000_000;
const MIN: i64 = 60_000;

fn config() -> StreamConfig {
    StreamConfig {
        window: Duration::from_secs(60),
        watermark_delay: Duration::from_secs(5),
        allowed_lateness: Duration::from_secs(60),
        ..StreamConfig::default()
    }
}

fn road(id: &str, free_flow_kmh: f64) -> RoadSegment {
    RoadSegment {
        id: SegmentId::parse(id).unwrap(),
        name: id.to_owned(),
        kind: String::new(),
        coordinates: vec![[11.25, 43.77], [11.26, 43.78]],
        length_m: 500.0,
        lanes: 2,
        speed_limit_kmh: 50.0,
        free_flow_kmh,
        capacity_vph: 1_800.0,
    }
}

fn dev(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

fn seg(s: &str) -> SegmentId {
    SegmentId::parse(s).unwrap()
}

fn window(
    device: &str,
    metric: MetricId,
    start: i64,
    values: &[f64],
    revision: u32,
) -> WindowResult {
    let mut agg = Partial::of(EventTime(start), values[0]);
    for (i, v) in values.iter().enumerate().skip(1) {
        agg.merge(&Partial::of(EventTime(start + i as i64), *v));
    }
    WindowResult {
        device: dev(device),
        metric,
        start: EventTime(start),
        end: EventTime(start + MIN),
        aggregate: agg,
        revision,
    }
}

fn segments_with_two_detectors() -> SegmentWindows {
    let mut s = SegmentWindows::new(&config());
    s.set_segments([road("viale-a", 50.0), road("viale-b", 40.0)]);
    s.set_links([
        (dev("loop-1"), seg("viale-a")),
        (dev("loop-2"), seg("viale-a")),
        (dev("loop-3"), seg("viale-b")),
    ]);
    s
}

fn states(events: &[SegmentEvent]) -> Vec<&SegmentState> {
    events
        .iter()
        .filter_map(|e| match e {
            SegmentEvent::State(s) => Some(s),
            SegmentEvent::LosChanged { .. } => None,
        })
        .collect()
}

#[test]
fn flow_speed_occupancy_and_los_follow_the_definitions() {
    let mut s = segments_with_two_detectors();
    let mut out = Vec::new();
    // loop-1: 10 + 20 vehicles at 40 km/h mean; loop-2: 10 vehicles at 20 km/h.
    s.on_window(&window("loop-1", MetricId::VehicleCount, T0, &[10.0, 20.0], 0), &mut out);
    s.on_window(&window("loop-1", MetricId::SpeedKmh, T0, &[30.0, 50.0], 0), &mut out);
    s.on_window(&window("loop-1", MetricId::OccupancyPct, T0, &[10.0, 30.0], 0), &mut out);
    s.on_window(&window("loop-2", MetricId::VehicleCount, T0, &[10.0], 0), &mut out);
    s.on_window(&window("loop-2", MetricId::SpeedKmh, T0, &[20.0], 0), &mut out);
    s.on_window(&window("loop-2", MetricId::OccupancyPct, T0, &[40.0], 0), &mut out);
    assert!(out.is_empty(), "nothing before the window settles");
    s.tick(EventTime(T0 + MIN + 4_999), &mut out);
    assert!(out.is_empty());
    s.tick(EventTime(T0 + MIN + 5_000), &mut out);
    let st = states(&out);
    assert_eq!(st.len(), 1);
    let st = st[0];
    // (30 veh/min and 10 veh/min) × 60 averaged over two detectors.
    assert_eq!(st.flow_vph, Some(1_200.0));
    // (40 × 30 + 20 × 10) / 40
    assert_eq!(st.speed_kmh, Some(35.0));
    // mean of detector means 20 % and 40 %
    assert_eq!(st.occupancy_pct, Some(30.0));
    // 35 / 50 = 0.70 → B
    assert_eq!(st.los, Some(LevelOfService::B));
    assert_eq!(
        (st.detectors, st.revision, st.start, st.end),
        (2, 0, EventTime(T0), EventTime(T0 + MIN))
    );
    assert!(matches!(&out[1], SegmentEvent::LosChanged { from: None, to: LevelOfService::B, .. }));
    assert_eq!(s.current_los(&seg("viale-a")), Some(LevelOfService::B));
}

#[test]
fn speed_falls_back_to_the_plain_mean_without_counts() {
    let mut s = segments_with_two_detectors();
    let mut out = Vec::new();
    s.on_window(&window("loop-1", MetricId::SpeedKmh, T0, &[10.0, 20.0], 0), &mut out);
    s.on_window(&window("loop-2", MetricId::SpeedKmh, T0, &[60.0], 0), &mut out);
    s.flush(&mut out);
    let st = states(&out)[0];
    assert_eq!((st.speed_kmh, st.flow_vph, st.occupancy_pct), (Some(30.0), None, None));
}

#[test]
fn a_late_detector_window_re_emits_a_revision_and_moves_the_los() {
    let mut s = segments_with_two_detectors();
    let mut out = Vec::new();
    s.on_window(&window("loop-1", MetricId::SpeedKmh, T0, &[45.0], 0), &mut out);
    s.tick(EventTime(T0 + MIN + 5_000), &mut out);
    assert_eq!(states(&out)[0].los, Some(LevelOfService::A));
    out.clear();
    // loop-2 arrives late and drags the plain mean to 15 km/h: 0.30 → F.
    s.on_window(&window("loop-2", MetricId::SpeedKmh, T0, &[0.0, 0.0], 0), &mut out);
    let st = states(&out)[0];
    assert_eq!((st.revision, st.detectors, st.los), (1, 2, Some(LevelOfService::F)));
    assert!(matches!(
        &out[1],
        SegmentEvent::LosChanged { from: Some(LevelOfService::A), to: LevelOfService::F, .. }
    ));
    out.clear();
    // A correction of loop-1 replaces (does not add to) its earlier contribution.
    s.on_window(&window("loop-1", MetricId::SpeedKmh, T0, &[45.0, 45.0], 1), &mut out);
    assert_eq!(states(&out)[0].speed_kmh, Some(22.5));
    assert_eq!(states(&out)[0].revision, 2);
    out.clear();
    // Past end + settle + lateness the window is gone.
    s.tick(EventTime(T0 + 2 * MIN + 5_000), &mut out);
    s.on_window(&window("loop-2", MetricId::SpeedKmh, T0, &[1.0], 1), &mut out);
    assert!(out.is_empty());
    assert_eq!(s.too_late, 1);
    assert!(s.is_empty());
}

#[test]
fn corrections_of_older_windows_do_not_move_the_current_los() {
    let mut s = SegmentWindows::new(&StreamConfig {
        allowed_lateness: Duration::from_secs(300),
        ..config()
    });
    s.set_segments([road("viale-a", 50.0)]);
    s.set_links([(dev("loop-1"), seg("viale-a"))]);
    let mut out = Vec::new();
    s.on_window(&window("loop-1", MetricId::SpeedKmh, T0, &[45.0], 0), &mut out);
    s.on_window(&window("loop-1", MetricId::SpeedKmh, T0 + MIN, &[30.0], 0), &mut out);
    s.tick(EventTime(T0 + 2 * MIN + 5_000), &mut out);
    assert_eq!(s.current_los(&seg("viale-a")), Some(LevelOfService::C));
    out.clear();
    s.on_window(&window("loop-1", MetricId::SpeedKmh, T0, &[10.0, 10.0], 1), &mut out);
    assert_eq!(out.len(), 1, "a revision but no LOS change: {out:?}");
    assert_eq!(s.current_los(&seg("viale-a")), Some(LevelOfService::C));
}

#[test]
fn links_and_segments_change_at_runtime() {
    let mut s = segments_with_two_detectors();
    let mut out = Vec::new();
    s.on_window(&window("loop-9", MetricId::SpeedKmh, T0, &[45.0], 0), &mut out);
    assert_eq!(s.unlinked, 1);
    s.link(dev("loop-9"), Some(seg("viale-b")));
    s.on_window(&window("loop-9", MetricId::SpeedKmh, T0, &[20.0], 0), &mut out);
    s.on_window(&window("loop-9", MetricId::No2Ugm3, T0, &[20.0], 0), &mut out);
    s.set_segments([road("viale-a", 50.0)]);
    assert!(s.is_empty(), "viale-b's pending window went with it");
    s.link(dev("loop-9"), None);
    assert_eq!(s.segment_of(&dev("loop-9")), None);
    s.flush(&mut out);
    assert!(out.is_empty());
}

/// Per (segment, window start): the brute-force state from raw readings.
fn brute(
    readings: &[Reading],
    links: &HashMap<DeviceId, SegmentId>,
    roads: &HashMap<SegmentId, RoadSegment>,
) -> BTreeMap<(SegmentId, i64), SegmentState> {
    type Key = (SegmentId, i64);
    let mut per: BTreeMap<Key, BTreeMap<DeviceId, DetectorWindow>> = BTreeMap::new();
    for r in readings {
        let Some(s) = links.get(&r.device) else { continue };
        if !is_traffic(r.metric) {
            continue;
        }
        let start = r.time.floor(MIN).millis();
        let d = per.entry((s.clone(), start)).or_default().entry(r.device.clone()).or_default();
        let slot = match r.metric {
            MetricId::VehicleCount => &mut d.counts,
            MetricId::SpeedKmh => &mut d.speed,
            _ => &mut d.occupancy,
        };
        let p = Partial::of(r.time, r.value);
        match slot {
            Some(a) => a.merge(&p),
            None => *slot = Some(p),
        }
    }
    per.into_iter()
        .map(|((s, start), dets)| ((s.clone(), start), derive_brute(&roads[&s], start, &dets)))
        .collect()
}

/// Independent recomputation of the module-doc definitions.
fn derive_brute(
    road: &RoadSegment,
    start: i64,
    dets: &BTreeMap<DeviceId, DetectorWindow>,
) -> SegmentState {
    let flows: Vec<f64> = dets.values().filter_map(|d| d.counts.map(|c| c.sum * 60.0)).collect();
    let weighted: Vec<(f64, f64)> = dets
        .values()
        .filter_map(|d| Some((d.speed?.sum / d.speed?.count as f64, d.counts?.sum)))
        .filter(|(_, w)| *w > 0.0)
        .collect();
    let total_w: f64 = weighted.iter().map(|(_, w)| w).sum();
    let all_speed: (f64, i64) =
        dets.values().filter_map(|d| d.speed).fold((0.0, 0), |(s, n), p| (s + p.sum, n + p.count));
    let speed = if total_w > 0.0 {
        Some(weighted.iter().map(|(s, w)| s * w).sum::<f64>() / total_w)
    } else if all_speed.1 > 0 {
        Some(all_speed.0 / all_speed.1 as f64)
    } else {
        None
    };
    let occ: Vec<f64> =
        dets.values().filter_map(|d| d.occupancy.map(|o| o.sum / o.count as f64)).collect();
    SegmentState {
        segment: road.id.clone(),
        start: EventTime(start),
        end: EventTime(start + MIN),
        flow_vph: (!flows.is_empty()).then(|| flows.iter().sum::<f64>() / flows.len() as f64),
        speed_kmh: speed,
        occupancy_pct: (!occ.is_empty()).then(|| occ.iter().sum::<f64>() / occ.len() as f64),
        los: speed.and_then(|s| LevelOfService::from_speeds(s, road.free_flow_kmh)),
        detectors: dets.len() as u32,
        revision: 0,
        forecast: None,
    }
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        (a, b) => a == b,
    }
}

/// The last revision of each emitted segment window.
fn finals(events: &[SegmentEvent]) -> BTreeMap<(SegmentId, i64), SegmentState> {
    let mut out: BTreeMap<(SegmentId, i64), SegmentState> = BTreeMap::new();
    for st in states(events) {
        let key = (st.segment.clone(), st.start.millis());
        if out.get(&key).is_none_or(|o| o.revision < st.revision) {
            out.insert(key, st.clone());
        }
    }
    out
}

/// Feeds readings through `Windows` into `SegmentWindows`; returns the final segment states
/// and the readings the device windows admitted.
fn run(
    readings: &[Reading],
    tick_every: Option<usize>,
) -> (BTreeMap<(SegmentId, i64), SegmentState>, Vec<Reading>) {
    let mut admitted = Vec::new();
    let mut w = Windows::new(&config());
    let mut s = segments_with_two_detectors();
    let (mut wout, mut sout) = (Vec::new(), Vec::new());
    let mut newest = T0;
    for (i, r) in readings.iter().enumerate() {
        if w.add(r, &mut wout) != crate::window::Admission::TooLate {
            admitted.push(r.clone());
        }
        newest = newest.max(r.time.millis());
        if tick_every.is_some_and(|n| i % n == n - 1) {
            // A processing clock that trails the newest event time by the watermark delay.
            w.tick(EventTime(newest), &mut wout);
            for x in wout.drain(..) {
                s.on_window(&x, &mut sout);
            }
            s.tick(EventTime(newest), &mut sout);
        }
        for x in wout.drain(..) {
            s.on_window(&x, &mut sout);
        }
    }
    w.flush(&mut wout);
    for x in wout.drain(..) {
        s.on_window(&x, &mut sout);
    }
    s.flush(&mut sout);
    (finals(&sout), admitted)
}

fn assert_matches(
    got: &BTreeMap<(SegmentId, i64), SegmentState>,
    want: &BTreeMap<(SegmentId, i64), SegmentState>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (k, g) in got {
        let w = &want[k];
        prop_assert!(
            close(g.flow_vph, w.flow_vph),
            "{:?}: flow {:?} vs {:?}",
            k,
            g.flow_vph,
            w.flow_vph
        );
        prop_assert!(
            close(g.speed_kmh, w.speed_kmh),
            "{:?}: speed {:?} vs {:?}",
            k,
            g.speed_kmh,
            w.speed_kmh
        );
        prop_assert!(close(g.occupancy_pct, w.occupancy_pct), "{:?}: occupancy", k);
        prop_assert_eq!(g.detectors, w.detectors);
        // LOS is compared through the speed it came from: the float sums may differ in the
        // last bit, which only matters exactly at a boundary.
        let los_from_got = g.speed_kmh.and_then(|s| {
            LevelOfService::from_speeds(s, if k.0.as_str() == "viale-a" { 50.0 } else { 40.0 })
        });
        prop_assert_eq!(g.los, los_from_got);
    }
    Ok(())
}

fn arb_readings() -> impl Strategy<Value = Vec<Reading>> {
    let metric = prop_oneof![
        Just(MetricId::VehicleCount),
        Just(MetricId::SpeedKmh),
        Just(MetricId::OccupancyPct),
        Just(MetricId::No2Ugm3)
    ];
    prop::collection::vec((0usize..4, metric, 0i64..4_000, 0u32..100), 1..200).prop_map(|steps| {
        let mut clock = [T0; 4];
        steps
            .into_iter()
            .map(|(d, metric, advance, v)| {
                clock[d] += advance * 10;
                Reading {
                    device: dev(["loop-1", "loop-2", "loop-3", "loop-4"][d]),
                    metric,
                    time: EventTime(clock[d]),
                    value: f64::from(v),
                    seq: None,
                }
            })
            .collect()
    })
}

fn links_and_roads(
    s: &SegmentWindows,
) -> (HashMap<DeviceId, SegmentId>, HashMap<SegmentId, RoadSegment>) {
    (s.links.clone(), s.segments.clone())
}

/// Readings in event-time order per device, then delivered in the order of
/// `time + jitter`: a reading is never behind the newest one before it by more than the
/// largest jitter.
fn deliver(readings: &[Reading], jitter: &[i64]) -> Vec<Reading> {
    let mut order: Vec<(i64, usize)> = readings
        .iter()
        .enumerate()
        .map(|(i, r)| (r.time.millis() + jitter[i % jitter.len()], i))
        .collect();
    order.sort();
    order.into_iter().map(|(_, i)| readings[i].clone()).collect()
}

proptest! {
    /// Segment flow, speed and occupancy equal a brute-force recomputation from the
    /// readings the device windows admitted, whatever the processing clock does in between
    /// (ticks seal the windows of devices whose clocks lag).
    #[test]
    fn segment_states_equal_brute_force(readings in arb_readings(), tick_every in prop::option::of(1usize..20)) {
        let (links, roads) = links_and_roads(&segments_with_two_detectors());
        let (got, admitted) = run(&readings, tick_every);
        if tick_every.is_none() {
            prop_assert_eq!(admitted.len(), readings.len());
        }
        assert_matches(&got, &brute(&admitted, &links, &roads))?;
    }

    /// Delivering the same readings in different orders, each reading at most
    /// delay + lateness behind the newest of its device (late ones re-emit corrections),
    /// gives the same final segment states, equal to the brute force over all readings.
    #[test]
    fn permuting_readings_within_the_lateness_gives_the_same_final_states(
        readings in arb_readings(),
        jitter_a in prop::collection::vec(0i64..65_000, 1..50),
        jitter_b in prop::collection::vec(0i64..65_000, 1..50),
    ) {
        let (links, roads) = links_and_roads(&segments_with_two_detectors());
        let want = brute(&readings, &links, &roads);
        let (got_a, admitted_a) = run(&deliver(&readings, &jitter_a), None);
        let (got_b, admitted_b) = run(&deliver(&readings, &jitter_b), None);
        prop_assert_eq!(admitted_a.len(), readings.len());
        prop_assert_eq!(admitted_b.len(), readings.len());
        assert_matches(&got_a, &want)?;
        assert_matches(&got_b, &want)?;
    }
}
