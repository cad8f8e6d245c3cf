//! The store contract: behaviour every backend must show, run against each of them (SQLite
//! in this crate's tests; PostgreSQL with native partitions, with each write method, and
//! TimescaleDB in the workspace's integration tests). Each function expects a freshly
//! migrated store and uses its own devices and metrics, so they can share one database.

use std::time::Duration;

use telemetry::{DeviceId, EventTime, MetricId, Reading, SegmentId, Seq};

use crate::history::{DAY_MS, HOUR_MS, MINUTE_MS};
use crate::{
    Acknowledgement, AlertEventRecord, AlertFilter, AlertKind, AlertRecord, AlertState,
    AlertSubject, Batch, Clearance, DeadLetter, DeviceRecord, GapFill, HistoryPoint, HistoryQuery,
    HistorySubject, NewAlert, RaiseOutcome, Resolution, Severity, Step, StorageMode, Store,
    StoreError, SubjectKind,
};

const T0: i64 = 1_763_892_000_000; // 2025-11-23T10:00:00Z, a minute boundary

fn dev(s: &str) -> DeviceId {
    DeviceId::parse(s).expect("valid test id")
}

fn reading(d: &str, m: MetricId, t: i64, v: f64) -> Reading {
    Reading { device: dev(d), metric: m, time: EventTime(t), value: v, seq: Some(Seq(7)) }
}

fn batch(readings: Vec<Reading>) -> Batch {
    Batch { readings, ..Batch::default() }
}

async fn write(store: &Store, readings: Vec<Reading>) -> crate::BatchOutcome {
    let out = store.write_batch(&batch(readings)).await.expect("write batch");
    store.merge_all_rollups().await.expect("merge rollups");
    out
}

/// The points of one device at one stored level over all of the test's time.
async fn level(store: &Store, d: &str, m: MetricId, r: Resolution) -> Vec<HistoryPoint> {
    let step = match r.bucket_ms() {
        Some(ms) => Step::Fixed(Duration::from_millis(ms as u64)),
        None => Step::Raw,
    };
    let q = HistoryQuery::device(
        dev(d),
        m,
        EventTime(T0 - 30 * DAY_MS),
        EventTime(T0 + 30 * DAY_MS),
        step,
    );
    let h = store.history(&q).await.expect("history");
    assert_eq!(h.resolution, r);
    h.points
}

fn summary(p: &HistoryPoint) -> (i64, f64, f64, f64, f64) {
    (p.count, p.sum, p.min, p.max, p.last)
}

/// Run every contract check in turn.
pub async fn run_all(store: &Store) {
    replayed_batch_changes_no_row_and_no_rollup(store).await;
    rollups_are_exact_across_batches_and_late_readings(store).await;
    latest_is_newest_by_event_time(store).await;
    history_filters_and_limits(store).await;
    automatic_resolution_and_subjects_agree_with_a_recount(store).await;
    gaps_are_filled_on_request(store).await;
    stepped_history_of_any_range_equals_a_recount(store).await;
    dead_letters_and_devices_are_kept(store).await;
    segments_round_trip(store).await;
    retention_drops_old_readings_and_rollups(store).await;
    alert_lifecycle_is_recorded_and_duplicate_raises_are_refused(store).await;
    automatic_clear_by_key_leaves_other_keys_open(store).await;
    alert_listing_filters_and_pages_by_cursor(store).await;
    alarm_states_shelving_and_suppression_follow_the_table(store).await;
    stream_state_round_trips_and_is_overwritten(store).await;
    stream_state_parts_commit_together_and_replace_on_request(store).await;
    gateways_link_devices_until_either_is_decommissioned(store).await;
    a_sole_token_revokes_the_others_of_its_name(store).await;
    devices_are_placed_in_id_order_on_their_segments(store).await;
}

pub async fn replayed_batch_changes_no_row_and_no_rollup(store: &Store) {
    let b = batch(vec![
        reading("c1", MetricId::SpeedKmh, T0, 40.0),
        reading("c1", MetricId::SpeedKmh, T0 + 1_000, 50.0),
        reading("c1", MetricId::SpeedKmh, T0 + 1_000, 50.0), // duplicate inside the batch
    ]);
    let first = store.write_batch(&b).await.expect("write");
    assert_eq!((first.inserted, first.duplicates), (2, 1));
    store.merge_all_rollups().await.expect("merge");
    for r in Resolution::ROLLUPS {
        let before = level(store, "c1", MetricId::SpeedKmh, r).await;
        assert_eq!(before.len(), 1, "{r:?}");
        assert_eq!(summary(&before[0]), (2, 90.0, 40.0, 50.0, 50.0), "{r:?}");
    }
    let again = write(store, b.readings.clone()).await;
    assert_eq!((again.inserted, again.duplicates), (0, 3));
    for r in Resolution::ROLLUPS {
        let after = level(store, "c1", MetricId::SpeedKmh, r).await;
        assert_eq!(
            after.iter().map(summary).collect::<Vec<_>>(),
            vec![(2, 90.0, 40.0, 50.0, 50.0)],
            "{r:?}"
        );
    }
    assert_eq!(level(store, "c1", MetricId::SpeedKmh, Resolution::Raw).await.len(), 2);
}

pub async fn rollups_are_exact_across_batches_and_late_readings(store: &Store) {
    // Batches over two minutes and two days; later ones carry late readings older than
    // the last value of buckets already merged, and a replay.
    let vc = MetricId::VehicleCount;
    write(store, vec![reading("c2", vc, T0 + 10_000, 5.0)]).await;
    // Two batches between merges: the log folds them together.
    store
        .write_batch(&batch(vec![
            reading("c2", vc, T0 + 50_000, 9.0),
            reading("c2", vc, T0 + 70_000, 3.0),
        ]))
        .await
        .expect("b2");
    store.write_batch(&batch(vec![reading("c2", vc, T0 + DAY_MS, 4.0)])).await.expect("b3");
    store.merge_all_rollups().await.expect("merge");
    write(
        store,
        vec![
            reading("c2", vc, T0 + 20_000, 1.0),
            reading("c2", vc, T0 + 10_000, 5.0), /* replay */
        ],
    )
    .await;
    write(store, vec![reading("c2", vc, T0 - HOUR_MS + 1, 2.0) /* late, an hour earlier */]).await;

    let m = level(store, "c2", vc, Resolution::Minute).await;
    let got: Vec<_> = m.iter().map(|p| (p.time.millis() - T0, summary(p))).collect();
    assert_eq!(
        got,
        vec![
            (-HOUR_MS, (1, 2.0, 2.0, 2.0, 2.0)),
            (0, (3, 15.0, 1.0, 9.0, 9.0)),
            (MINUTE_MS, (1, 3.0, 3.0, 3.0, 3.0)),
            (DAY_MS, (1, 4.0, 4.0, 4.0, 4.0)),
        ]
    );
    let h = level(store, "c2", vc, Resolution::Hour).await;
    let got: Vec<_> = h.iter().map(|p| (p.time.millis() - T0, summary(p))).collect();
    assert_eq!(
        got,
        vec![
            (-HOUR_MS, (1, 2.0, 2.0, 2.0, 2.0)),
            (0, (4, 18.0, 1.0, 9.0, 3.0)),
            (DAY_MS, (1, 4.0, 4.0, 4.0, 4.0))
        ]
    );
    let d = level(store, "c2", vc, Resolution::Day).await;
    let day0 = T0 - T0 % DAY_MS;
    let got: Vec<_> = d.iter().map(|p| (p.time.millis() - day0, summary(p))).collect();
    assert_eq!(got, vec![(0, (5, 20.0, 1.0, 9.0, 3.0)), (DAY_MS, (1, 4.0, 4.0, 4.0, 4.0))]);
}

pub async fn latest_is_newest_by_event_time(store: &Store) {
    write(store, vec![reading("c3", MetricId::No2Ugm3, T0 + 5_000, 30.0)]).await;
    write(store, vec![reading("c3", MetricId::No2Ugm3, T0 + 1_000, 99.0)]).await;
    write(store, vec![reading("c3", MetricId::Pm10Ugm3, T0, 12.0)]).await;
    let l = store.latest(Some(&dev("c3")), Some(MetricId::No2Ugm3)).await.expect("latest");
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].time, l[0].value), (EventTime(T0 + 5_000), 30.0));
    let all = store.latest(Some(&dev("c3")), None).await.expect("latest");
    assert_eq!(all.len(), 2);
    let pm = store.latest(None, Some(MetricId::Pm10Ugm3)).await.expect("latest");
    assert!(pm.iter().any(|v| v.device == dev("c3") && v.value == 12.0));
}

pub async fn history_filters_and_limits(store: &Store) {
    let rs: Vec<_> =
        (0..10).map(|i| reading("c4", MetricId::OccupancyPct, T0 + i * 1_000, i as f64)).collect();
    write(store, rs).await;
    let q = HistoryQuery {
        limit: 100,
        ..HistoryQuery::device(
            dev("c4"),
            MetricId::OccupancyPct,
            EventTime(T0 + 2_000),
            EventTime(T0 + 8_000),
            Step::Raw,
        )
    };
    let pts = store.history(&q).await.expect("h").points;
    let values: Vec<f64> = pts.iter().map(|p| p.last).collect();
    assert_eq!(values, vec![2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    assert!(pts.iter().all(|p| p.count == 1));
    let limited = store.history(&HistoryQuery { limit: 2, ..q.clone() }).await.expect("h");
    assert_eq!(limited.points.len(), 2);
    let other =
        store.history(&HistoryQuery { metric: MetricId::SpeedKmh, ..q.clone() }).await.expect("h");
    assert!(other.points.is_empty());
    // A bad query is refused with the parameter named.
    let bad =
        store.history(&HistoryQuery { step: Step::Fixed(Duration::from_secs(45)), ..q }).await;
    assert!(matches!(bad, Err(crate::StoreError::InvalidQuery { param: "step", .. })), "{bad:?}");
}

/// Three days of readings every ten minutes from three devices, two of them on one
/// segment: every automatic level, and the segment and city views, equal a recount of
/// the raw readings.
pub async fn automatic_resolution_and_subjects_agree_with_a_recount(store: &Store) {
    let m = MetricId::HumidityPct;
    let seg = store.segments().await.expect("segments");
    if seg.is_empty() {
        store
            .upsert_segments(
                &telemetry::segment::parse_geojson(telemetry::segment::FLORENCE_SEED)
                    .expect("seed"),
            )
            .await
            .expect("seed");
    }
    let seg: SegmentId = store.segments().await.expect("segments")[0].id.clone();
    let devices = [("h1", Some(seg.clone())), ("h2", Some(seg.clone())), ("h3", None)];
    let records: Vec<DeviceRecord> = devices
        .iter()
        .map(|(d, s)| DeviceRecord {
            id: dev(d),
            kind: Some("air_quality".into()),
            segment: s.clone(),
            registered_at: EventTime(T0),
        })
        .collect();
    store.upsert_devices(&records).await.expect("devices");
    let start = T0 - T0 % DAY_MS;
    let mut all = Vec::new();
    for (i, (d, _)) in devices.iter().enumerate() {
        for k in 0..(3 * 24 * 6) {
            // Values that differ per device and step, integers so sums are exact.
            all.push(reading(
                d,
                m,
                start + k * 10 * MINUTE_MS + i as i64 * 1_000,
                ((k * 7 + i as i64 * 13) % 90) as f64,
            ));
        }
    }
    // Several batches out of time order.
    all.reverse();
    for chunk in all.chunks(250) {
        store.write_batch(&batch(chunk.to_vec())).await.expect("write");
    }
    store.merge_all_rollups().await.expect("merge");

    let recount = |subject: &[&str], step: i64| -> Vec<(i64, i64, f64, f64, f64, f64)> {
        let mut buckets: std::collections::BTreeMap<i64, telemetry::Partial> =
            std::collections::BTreeMap::new();
        for r in all.iter().filter(|r| subject.contains(&r.device.as_str())) {
            let b = r.time.millis() - r.time.millis() % step;
            let p = telemetry::Partial::of(r.time, r.value);
            buckets.entry(b).and_modify(|a| a.merge(&p)).or_insert(p);
        }
        buckets.into_iter().map(|(t, p)| (t, p.count, p.sum, p.min, p.max, p.last_value)).collect()
    };
    let view = |h: &crate::History| -> Vec<(i64, i64, f64, f64, f64, f64)> {
        h.points.iter().map(|p| (p.time.millis(), p.count, p.sum, p.min, p.max, p.last)).collect()
    };
    let span = |from: i64, to: i64, subject: HistorySubject, max_points: usize| HistoryQuery {
        subject,
        metric: m,
        from: EventTime(from),
        to: EventTime(to),
        step: Step::Auto { max_points },
        fill: GapFill::None,
        limit: 100_000,
    };
    // 30 days around the data, hourly.
    let month =
        span(start - 10 * DAY_MS, start + 20 * DAY_MS, HistorySubject::Device(dev("h1")), 1_000);
    let h = store.history(&month).await.expect("month");
    assert_eq!((h.resolution, h.step_ms), (Resolution::Hour, Some(HOUR_MS)));
    assert_eq!(view(&h), recount(&["h1"], HOUR_MS));
    // Six hours: minutes.
    let q = span(start + HOUR_MS, start + 7 * HOUR_MS, HistorySubject::Device(dev("h2")), 1_000);
    let h = store.history(&q).await.expect("hours");
    assert_eq!(h.resolution, Resolution::Minute);
    let want: Vec<_> = recount(&["h2"], MINUTE_MS)
        .into_iter()
        .filter(|p| p.0 >= start + HOUR_MS && p.0 < start + 7 * HOUR_MS)
        .collect();
    assert_eq!(view(&h), want);
    // A year: days.
    let h = store
        .history(&span(
            start - 300 * DAY_MS,
            start + 65 * DAY_MS,
            HistorySubject::Device(dev("h3")),
            1_000,
        ))
        .await
        .expect("year");
    assert_eq!(h.resolution, Resolution::Day);
    assert_eq!(view(&h), recount(&["h3"], DAY_MS));
    // Ten minutes: raw readings.
    let h = store
        .history(&span(start, start + 10 * MINUTE_MS, HistorySubject::Device(dev("h1")), 1_000))
        .await
        .expect("raw");
    assert_eq!((h.resolution, h.points.len()), (Resolution::Raw, 1));
    // The segment combines its two devices; the city all three.
    let h = store
        .history(&span(
            start - 10 * DAY_MS,
            start + 20 * DAY_MS,
            HistorySubject::Segment(seg.clone()),
            1_000,
        ))
        .await
        .expect("segment");
    assert_eq!(view(&h), recount(&["h1", "h2"], HOUR_MS));
    let h = store
        .history(&span(start - 10 * DAY_MS, start + 20 * DAY_MS, HistorySubject::City, 1_000))
        .await
        .expect("city");
    assert_eq!(view(&h), recount(&["h1", "h2", "h3"], HOUR_MS));
    // An area: the segments listed, combined; none listed, nothing.
    for (from, to, step) in [
        (start - 10 * DAY_MS, start + 20 * DAY_MS, HOUR_MS),
        (start + HOUR_MS, start + 7 * HOUR_MS, MINUTE_MS),
    ] {
        let area = HistorySubject::Segments(vec![
            seg.clone(),
            telemetry::SegmentId::parse("elsewhere").expect("id"),
        ]);
        let h = store.history(&span(from, to, area, 1_000)).await.expect("area");
        let want: Vec<_> =
            recount(&["h1", "h2"], step).into_iter().filter(|p| p.0 >= from && p.0 < to).collect();
        assert_eq!(view(&h), want, "area at {step} ms");
        let h = store
            .history(&span(from, to, HistorySubject::Segments(Vec::new()), 1_000))
            .await
            .expect("empty area");
        assert!(h.points.is_empty());
    }
    // Hourly and daily segment history keeps the links of when the readings came in: moving
    // a device to another segment afterwards does not move its past.
    let moved = DeviceRecord { segment: None, ..records[1].clone() };
    store.upsert_devices(std::slice::from_ref(&moved)).await.expect("relink");
    let h = store
        .history(&span(
            start - 10 * DAY_MS,
            start + 20 * DAY_MS,
            HistorySubject::Segment(seg.clone()),
            1_000,
        ))
        .await
        .expect("segment");
    assert_eq!(view(&h), recount(&["h1", "h2"], HOUR_MS));
    store.upsert_devices(std::slice::from_ref(&records[1])).await.expect("link back");
    // An explicit step of three hours reads hours and folds them.
    let h = store
        .history(&HistoryQuery { step: Step::Fixed(Duration::from_secs(3 * 3_600)), ..month })
        .await
        .expect("3h");
    assert_eq!((h.resolution, h.step_ms), (Resolution::Hour, Some(3 * HOUR_MS)));
    assert_eq!(view(&h), recount(&["h1"], 3 * HOUR_MS));
}

/// A tiny deterministic generator (xorshift64*), so that failing cases can be replayed.
struct Cases(u64);

impl Cases {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: i64) -> i64 {
        (self.next() % n.max(1) as u64) as i64
    }
}

/// Every stepped query over a range whose ends fall anywhere (inside minutes, hours and
/// days) counts exactly the readings of `[from, to)`: each bucket, the partial first and
/// last included, equals a recount of the raw readings, for devices, a segment and the
/// city, at every step and every aggregate.
pub async fn stepped_history_of_any_range_equals_a_recount(store: &Store) {
    let m = MetricId::HeadwayS;
    if store.segments().await.expect("segments").is_empty() {
        let seed = telemetry::segment::parse_geojson(telemetry::segment::FLORENCE_SEED);
        store.upsert_segments(&seed.expect("seed")).await.expect("seed");
    }
    let segs = store.segments().await.expect("segments");
    let (s1, s2) = (segs[0].id.clone(), segs[1].id.clone());
    let devices = [("e1", s1.clone()), ("e2", s1.clone()), ("e3", s2)];
    let records: Vec<DeviceRecord> = devices
        .iter()
        .map(|(d, s)| DeviceRecord {
            id: dev(d),
            kind: Some("traffic_loop".into()),
            segment: Some(s.clone()),
            registered_at: EventTime(T0),
        })
        .collect();
    store.upsert_devices(&records).await.expect("devices");
    // Three days and a bit, away from the other checks' times; distinct instants per
    // device, whole values so that sums are exact.
    let start = T0 + 100 * DAY_MS + 7 * HOUR_MS + 13 * MINUTE_MS;
    let mut rng = Cases(0x5CC2_2026);
    let mut all = Vec::new();
    for (i, (d, _)) in devices.iter().enumerate() {
        let mut t = start + i as i64 * 977;
        while t < start + 3 * DAY_MS + 5 * HOUR_MS {
            all.push(reading(d, m, t, rng.below(300) as f64));
            t += 60_000 + rng.below(9 * 60_000);
        }
    }
    for chunk in all.chunks(400) {
        store.write_batch(&batch(chunk.to_vec())).await.expect("write");
    }
    store.merge_all_rollups().await.expect("merge");
    store.fold_closed_rollups(EventTime(start + 2 * DAY_MS)).await.expect("fold");

    let subjects = [
        (HistorySubject::Device(dev("e1")), vec!["e1"]),
        (HistorySubject::Segment(s1), vec!["e1", "e2"]),
        (HistorySubject::City, vec!["e1", "e2", "e3"]),
    ];
    let steps = [MINUTE_MS, 5 * MINUTE_MS, HOUR_MS, 90 * MINUTE_MS, 3 * HOUR_MS, DAY_MS];
    for case in 0..48 {
        let (subject, members) = &subjects[case % subjects.len()];
        let step = steps[rng.below(steps.len() as i64) as usize];
        let from = start - HOUR_MS + rng.below(2 * DAY_MS);
        let to = from + 1 + rng.below((3 * DAY_MS).min(300 * step));
        let q = HistoryQuery {
            subject: subject.clone(),
            metric: m,
            from: EventTime(from),
            to: EventTime(to),
            step: Step::Fixed(Duration::from_millis(step as u64)),
            fill: GapFill::None,
            limit: 100_000,
        };
        let h = store.history(&q).await.expect("history");
        assert_eq!((h.from, h.to), (q.from, q.to), "case {case}: the range counted");
        let mut want: std::collections::BTreeMap<i64, telemetry::Partial> =
            std::collections::BTreeMap::new();
        for r in &all {
            let t = r.time.millis();
            if t >= from && t < to && members.contains(&r.device.as_str()) {
                let p = telemetry::Partial::of(r.time, r.value);
                want.entry(t.div_euclid(step) * step).and_modify(|a| a.merge(&p)).or_insert(p);
            }
        }
        let want: Vec<_> = want
            .into_iter()
            .map(|(t, p)| (t, p.count, p.sum, p.min, p.max, p.last_value))
            .collect();
        let got: Vec<_> = h
            .points
            .iter()
            .map(|p| (p.time.millis(), p.count, p.sum, p.min, p.max, p.last))
            .collect();
        assert_eq!(
            got, want,
            "case {case}: {subject:?}, step {step} ms, [{from}, {to}) read as {:?}",
            h.resolution
        );
    }
}

pub async fn gaps_are_filled_on_request(store: &Store) {
    let m = MetricId::TemperatureC;
    write(
        store,
        vec![
            reading("g1", m, T0 + MINUTE_MS, 10.0),
            reading("g1", m, T0 + 4 * MINUTE_MS + 5, 13.0),
        ],
    )
    .await;
    let q = HistoryQuery {
        fill: GapFill::Previous,
        ..HistoryQuery::device(
            dev("g1"),
            m,
            EventTime(T0),
            EventTime(T0 + 6 * MINUTE_MS),
            Step::Fixed(Duration::from_secs(60)),
        )
    };
    let h = store.history(&q).await.expect("filled");
    let counts: Vec<i64> = h.points.iter().map(|p| p.count).collect();
    assert_eq!(counts, vec![0, 1, 0, 0, 1, 0]);
    let lasts: Vec<String> = h.points.iter().map(|p| p.last.to_string()).collect();
    assert_eq!(lasts, vec!["NaN", "10", "10", "10", "13", "13"]);
    let h = store.history(&HistoryQuery { fill: GapFill::None, ..q }).await.expect("unfilled");
    assert_eq!(h.points.len(), 2);
}

pub async fn dead_letters_and_devices_are_kept(store: &Store) {
    let b = Batch {
        readings: vec![reading("c5", MetricId::SpeedKmh, T0, 1.0)],
        dead_letters: vec![
            DeadLetter::new(
                "sccr/v1/devices/c5/telemetry",
                Some(dev("c5")),
                "bad_json",
                "first".into(),
                b"{oops",
            ),
            DeadLetter::new(
                "sccr/v1/devices/c5/telemetry",
                Some(dev("c5")),
                "out_of_range",
                "second".into(),
                &[0u8; 10_000],
            ),
        ],
        new_devices: vec![dev("c5")],
    };
    let out = store.write_batch(&b).await.expect("w");
    assert_eq!(out.dead_letters, 2);
    let dl = store.dead_letters(2).await.expect("dl");
    assert_eq!(dl[0].detail, "second");
    assert_eq!(dl[0].payload.len(), crate::DEAD_LETTER_PAYLOAD_LIMIT);
    assert_eq!(dl[0].payload_size, 10_000);
    assert_eq!(dl[1].reason, "bad_json");
    assert_eq!(dl[1].payload, b"{oops");
    // Registering again is harmless.
    store
        .write_batch(&Batch { new_devices: vec![dev("c5")], ..Batch::default() })
        .await
        .expect("w");
    let devices = store.devices().await.expect("devices");
    assert_eq!(devices.iter().filter(|d| d.id == dev("c5")).count(), 1);
}

pub async fn segments_round_trip(store: &Store) {
    let segs = telemetry::segment::parse_geojson(telemetry::segment::FLORENCE_SEED).expect("seed");
    store.upsert_segments(&segs).await.expect("segments");
    store.upsert_segments(&segs).await.expect("segments twice");
    let back = store.segments().await.expect("segments");
    assert_eq!(back.len(), segs.len());
    let mut sorted = segs.clone();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(back, sorted);
    let d = DeviceRecord {
        id: dev("c6"),
        kind: Some("traffic_loop".into()),
        segment: Some(sorted[0].id.clone()),
        registered_at: EventTime(T0),
    };
    store.upsert_devices(std::slice::from_ref(&d)).await.expect("devices");
    let got = store.devices().await.expect("devices");
    assert_eq!(got.iter().find(|x| x.id == d.id), Some(&d));
}

/// Readings past the raw retention disappear; younger ones and their rollups stay.
/// TimescaleDB enforces retention with its own jobs (tested where it runs).
pub async fn retention_drops_old_readings_and_rollups(store: &Store) {
    if store.storage_mode() == StorageMode::TimescaleDb {
        return;
    }
    let m = MetricId::BatteryV;
    let old = T0 - 200 * DAY_MS;
    write(store, vec![reading("r1", m, old, 3.1), reading("r1", m, T0, 3.3)]).await;
    assert_eq!(
        level(store, "r1", m, Resolution::Raw).await.len(),
        1,
        "the old reading is outside the test window"
    );
    let q = |from: i64| {
        HistoryQuery::device(dev("r1"), m, EventTime(from), EventTime(T0 + 1), Step::Raw)
    };
    assert_eq!(store.history(&q(old)).await.expect("h").points.len(), 2);
    // Default retention: raw 90 days, 1m 400 days. As of T0 + 1 day, the old reading goes.
    let report = store.maintain(EventTime(T0 + DAY_MS)).await.expect("maintain");
    let raw = store.history(&q(old)).await.expect("h").points;
    assert_eq!(raw.iter().map(|p| p.last).collect::<Vec<_>>(), vec![3.3]);
    if store.storage_mode() == StorageMode::Native {
        assert!(report.partitions_dropped.iter().any(|p| p == "readings_p20250507"), "{report:?}");
        assert!(!report.partitions_dropped.iter().any(|p| p == "readings_p20251123"), "{report:?}");
    }
    // The minute rollup of the old reading is younger than its 400-day retention: kept.
    let minute = HistoryQuery::device(
        dev("r1"),
        m,
        EventTime(old),
        EventTime(old + HOUR_MS),
        Step::Fixed(Duration::from_secs(60)),
    );
    assert_eq!(store.history(&minute).await.expect("h").points.len(), 1);
    // Maintenance is repeatable.
    store.maintain(EventTime(T0 + DAY_MS)).await.expect("maintain again");
    // Replaying the old reading (a backfill imported again) would find no raw row to
    // dedupe it against: it becomes a dead letter and no rollup counts it twice.
    let horizon = store.horizons().await.expect("horizons").raw.expect("a raw horizon");
    assert!(horizon.millis() > old && horizon.millis() <= T0 + DAY_MS - 90 * DAY_MS);
    let levels = |r| level(store, "r1", m, r);
    let (hours, days) = (levels(Resolution::Hour).await, levels(Resolution::Day).await);
    let out = write(store, vec![reading("r1", m, old, 3.1), reading("r1", m, T0 + 5, 3.4)]).await;
    assert_eq!((out.inserted, out.older_than_retention, out.dead_letters), (1, 1, 1));
    let letter = store.dead_letters(1).await.expect("dead letters").remove(0);
    assert_eq!(letter.reason, crate::OLDER_THAN_RETENTION);
    assert_eq!(letter.device, Some(dev("r1")));
    // Only the new reading is counted, in its own hour and day.
    let count = |pts: &[HistoryPoint]| pts.iter().map(|p| p.count).sum::<i64>();
    let (hours_after, days_after) = (levels(Resolution::Hour).await, levels(Resolution::Day).await);
    assert_eq!((hours_after.len(), days_after.len()), (hours.len(), days.len()));
    assert_eq!((count(&hours_after), count(&days_after)), (count(&hours) + 1, count(&days) + 1));
    // The old hour still counts its reading once, as the whole day around it.
    let old_day = HistoryQuery::device(
        dev("r1"),
        m,
        EventTime(old - old.rem_euclid(DAY_MS)),
        EventTime(old - old.rem_euclid(DAY_MS) + DAY_MS),
        Step::Fixed(Duration::from_millis(DAY_MS as u64)),
    );
    let h = store.history(&old_day).await.expect("old day");
    assert_eq!(h.points.iter().map(|p| p.count).collect::<Vec<_>>(), vec![1]);
}

fn seg(s: &str) -> SegmentId {
    SegmentId::parse(s).expect("valid test segment")
}

fn new_alert(rule: &str, subject: AlertSubject, severity: Severity, raised_at: i64) -> NewAlert {
    NewAlert {
        rule: rule.to_owned(),
        subject,
        kind: AlertKind::Single,
        severity,
        message: format!("{rule} at {raised_at}"),
        value: Some(87.5),
        since: EventTime(raised_at - 60_000),
        raised_at: EventTime(raised_at),
        members: 1,
        code: crate::MessageCode::ThresholdAbove,
        params: serde_json::json!({"metric": "no2_ugm3", "limit": 200.0, "value": 87.5})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        suppressed: None,
    }
}

async fn raise(store: &Store, alert: &NewAlert) -> AlertRecord {
    match store.raise_alert(alert).await.expect("raise") {
        RaiseOutcome::Raised(record) => *record,
        other => {
            panic!("{} on {} should open a new alert, got {other:?}", alert.rule, alert.subject)
        }
    }
}

/// (from, to, by, note, at offset from T0) of an alert's events.
async fn moves(
    store: &Store,
    id: i64,
) -> Vec<(Option<AlertState>, AlertState, Option<String>, Option<String>, i64)> {
    let events: Vec<AlertEventRecord> = store.alert_events(id).await.expect("events");
    assert!(events.iter().all(|e| e.alert == id));
    events.into_iter().map(|e| (e.from, e.to, e.by, e.note, e.at.millis() - T0)).collect()
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

/// raise → duplicate raise refused → acknowledge with a note → illegal moves refused →
/// manual clear → the same key raised again opens a new alert; every move an event.
pub async fn alert_lifecycle_is_recorded_and_duplicate_raises_are_refused(store: &Store) {
    use AlertState::*;
    let subject = AlertSubject::Device(dev("al-1"));
    let first = new_alert("contract.lifecycle", subject.clone(), Severity::Critical, T0);
    let raised = raise(store, &first).await;
    assert_eq!(
        raised,
        AlertRecord {
            id: raised.id,
            rule: "contract.lifecycle".into(),
            subject: subject.clone(),
            kind: AlertKind::Single,
            severity: Severity::Critical,
            state: Raised,
            message: format!("contract.lifecycle at {T0}"),
            value: Some(87.5),
            since: EventTime(T0 - 60_000),
            raised_at: EventTime(T0),
            acknowledged: None,
            cleared: None,
            members: 1,
            active: true,
            returned_at: None,
            shelved: None,
            suppressed: None,
            code: crate::MessageCode::ThresholdAbove,
            params: first.params.clone(),
        }
    );
    let id = raised.id;
    assert_eq!(store.alert(id).await.expect("alert"), Some(raised.clone()));

    let again =
        NewAlert { raised_at: EventTime(T0 + 5_000), message: "again".into(), ..first.clone() };
    assert_eq!(
        store.raise_alert(&again).await.expect("raise again"),
        RaiseOutcome::AlreadyOpen(id)
    );
    assert_eq!(
        store.alert(id).await.expect("alert"),
        Some(raised.clone()),
        "a refused raise changes nothing"
    );

    let acked = store
        .acknowledge_alert(id, "ops-anna", Some("crew dispatched"), EventTime(T0 + 60_000))
        .await
        .expect("ack");
    assert_eq!(acked.state, Acknowledged);
    assert_eq!(
        acked.acknowledged,
        Some(Acknowledgement {
            by: "ops-anna".into(),
            note: some("crew dispatched"),
            at: EventTime(T0 + 60_000)
        })
    );
    assert_eq!(acked.cleared, None);
    assert_eq!(store.alert(id).await.expect("alert"), Some(acked.clone()));

    let refused = store.acknowledge_alert(id, "ops-marco", None, EventTime(T0 + 61_000)).await;
    assert!(
        matches!(refused, Err(StoreError::AlertTransition { id: i, from: Acknowledged, to: Acknowledged }) if i == id),
        "{refused:?}"
    );
    assert_eq!(
        store.raise_alert(&again).await.expect("raise while acknowledged"),
        RaiseOutcome::AlreadyOpen(id)
    );
    let nameless = store.acknowledge_alert(id, " ", None, EventTime(T0 + 61_000)).await;
    assert!(matches!(nameless, Err(StoreError::InvalidQuery { param: "by", .. })), "{nameless:?}");

    let cleared = store
        .clear_alert(id, Some("ops-marco"), Some("sensor replaced"), EventTime(T0 + 120_000))
        .await
        .expect("clear");
    assert_eq!(cleared.state, Cleared);
    assert_eq!(cleared.acknowledged, acked.acknowledged, "the acknowledgement is kept");
    assert_eq!(
        cleared.cleared,
        Some(Clearance {
            by: some("ops-marco"),
            note: some("sensor replaced"),
            at: EventTime(T0 + 120_000)
        })
    );

    for (result, to) in [
        (
            store.acknowledge_alert(id, "ops-anna", None, EventTime(T0 + 130_000)).await,
            Acknowledged,
        ),
        (store.clear_alert(id, None, None, EventTime(T0 + 130_000)).await, Cleared),
    ] {
        assert!(
            matches!(result, Err(StoreError::AlertTransition { id: i, from: Cleared, to: t }) if i == id && t == to),
            "{result:?}"
        );
    }
    assert_eq!(
        store.alert(id).await.expect("alert"),
        Some(cleared.clone()),
        "refused moves change nothing"
    );
    assert_eq!(
        moves(store, id).await,
        vec![
            (None, Raised, None, None, 0),
            (Some(Raised), Acknowledged, some("ops-anna"), some("crew dispatched"), 60_000),
            (Some(Acknowledged), Cleared, some("ops-marco"), some("sensor replaced"), 120_000),
        ]
    );

    let missing = store.acknowledge_alert(i64::MAX, "ops-anna", None, EventTime(T0)).await;
    assert!(matches!(missing, Err(StoreError::AlertNotFound(i64::MAX))), "{missing:?}");
    let missing = store.clear_alert(i64::MAX, None, None, EventTime(T0)).await;
    assert!(matches!(missing, Err(StoreError::AlertNotFound(i64::MAX))), "{missing:?}");
    assert_eq!(store.alert(i64::MAX).await.expect("alert"), None);

    // The condition comes back: a new alert, with its own history.
    let reopened = raise(store, &NewAlert { raised_at: EventTime(T0 + 180_000), ..first }).await;
    assert_ne!(reopened.id, id);
    assert_eq!(
        (reopened.state, reopened.acknowledged.clone(), reopened.cleared.clone()),
        (Raised, None, None)
    );
    assert_eq!(moves(store, reopened.id).await, vec![(None, Raised, None, None, 180_000)]);
    assert_eq!(store.alert(id).await.expect("alert").map(|a| a.state), Some(Cleared));
}

/// ISA-18.2 on the store: a condition ending unacknowledged returns the alert (open,
/// inactive), a returning condition raises the same alert again, acknowledging a returned
/// alert clears it; an acknowledged one clears when its condition ends. Shelving and
/// suppression are overlays: events that keep the state, listed by `shelved` and
/// `suppressed`. Every move names its action.
pub async fn alarm_states_shelving_and_suppression_follow_the_table(store: &Store) {
    use crate::{AlertChange, AlertMove as M, Shelf, Suppression, SuppressionReason};
    use AlertState::*;
    let t = |s: i64| EventTime(T0 + 300_000 + s * 1_000);
    let subject = AlertSubject::Device(dev("isa-1"));
    let a = raise(store, &new_alert("contract.isa", subject.clone(), Severity::Critical, T0)).await;
    let id = a.id;
    let ended = store
        .change_alert(id, &AlertChange::End, None, Some("condition ended"), t(0))
        .await
        .expect("end");
    assert_eq!((ended.state, ended.active, ended.returned_at), (Returned, false, Some(t(0))));
    assert!(
        store
            .alerts(&AlertFilter { rule: some("contract.isa"), ..AlertFilter::open() })
            .await
            .expect("open")
            .iter()
            .any(|r| r.id == id),
        "a returned alert is open"
    );
    let again = store.change_alert(id, &AlertChange::End, None, None, t(1)).await;
    assert!(matches!(again, Err(StoreError::AlertTransition { from: Returned, .. })), "{again:?}");
    let resumed =
        store.change_alert(id, &AlertChange::Resume, None, None, t(2)).await.expect("resume");
    assert_eq!((resumed.state, resumed.active, resumed.returned_at), (Raised, true, None));
    store.change_alert(id, &AlertChange::End, None, None, t(3)).await.expect("end again");
    // Shelved while returned: the state stays.
    let shelf = AlertChange::Shelve { reason: "works on site".into(), until: t(3_600) };
    let nameless = store.change_alert(id, &shelf, None, None, t(4)).await;
    assert!(matches!(nameless, Err(StoreError::InvalidQuery { param: "by", .. })), "{nameless:?}");
    let shelved = store
        .change_alert(id, &shelf, Some("ops-anna"), Some("works on site"), t(4))
        .await
        .expect("shelve");
    assert_eq!(shelved.state, Returned);
    assert_eq!(
        shelved.shelved,
        Some(Shelf {
            by: "ops-anna".into(),
            reason: "works on site".into(),
            at: t(4),
            until: t(3_600)
        })
    );
    let listed = |shelved, suppressed| AlertFilter {
        rule: some("contract.isa"),
        shelved,
        suppressed,
        ..AlertFilter::open()
    };
    assert_eq!(store.alerts(&listed(Some(true), None)).await.expect("shelved").len(), 1);
    assert_eq!(store.expired_shelves(t(3_599)).await.expect("expired"), Vec::<i64>::new());
    assert_eq!(store.expired_shelves(t(3_600)).await.expect("expired"), vec![id]);
    let unshelved = store
        .change_alert(id, &AlertChange::Unshelve, None, Some("shelf expired"), t(3_600))
        .await
        .expect("unshelve");
    assert_eq!((unshelved.state, unshelved.shelved.clone()), (Returned, None));
    let twice =
        store.change_alert(id, &AlertChange::Unshelve, Some("ops-anna"), None, t(3_601)).await;
    assert!(matches!(twice, Err(StoreError::AlertNotShelved(i)) if i == id), "{twice:?}");
    // Acknowledging the returned alert clears it.
    let acked = store.acknowledge_alert(id, "ops-anna", Some("seen"), t(3_602)).await.expect("ack");
    assert_eq!(acked.state, Cleared);
    assert_eq!(acked.acknowledged.as_ref().map(|a| a.by.as_str()), Some("ops-anna"));
    assert_eq!(acked.cleared.as_ref().and_then(|c| c.by.as_deref()), Some("ops-anna"));
    let late = store.change_alert(id, &shelf, Some("ops-anna"), None, t(3_603)).await;
    assert!(matches!(late, Err(StoreError::AlertTransition { from: Cleared, .. })), "{late:?}");
    let events = store.alert_events(id).await.expect("events");
    assert_eq!(
        events.iter().map(|e| (e.from, e.to, e.action, e.by.clone())).collect::<Vec<_>>(),
        vec![
            (None, Raised, None, None),
            (Some(Raised), Returned, Some(M::End), None),
            (Some(Returned), Raised, Some(M::Resume), None),
            (Some(Raised), Returned, Some(M::End), None),
            (Some(Returned), Returned, Some(M::Shelve), some("ops-anna")),
            (Some(Returned), Returned, Some(M::Unshelve), None),
            (Some(Returned), Cleared, Some(M::Acknowledge), some("ops-anna")),
        ]
    );
    // An acknowledged alert clears when its condition ends.
    let b =
        raise(store, &new_alert("contract.isa", subject.clone(), Severity::Critical, T0 + 1)).await;
    store.acknowledge_alert(b.id, "ops-anna", None, t(3_700)).await.expect("ack");
    let ended = store
        .change_alert(b.id, &AlertChange::End, None, Some("condition ended"), t(3_701))
        .await
        .expect("end");
    assert_eq!((ended.state, ended.active), (Cleared, false));
    assert_eq!(ended.cleared.as_ref().map(|c| c.by.clone()), Some(None));
    // A raise recorded suppressed, then lifted.
    let by = Suppression { reason: SuppressionReason::SuppressedByRule, by_alert: Some(b.id) };
    let c = raise(
        store,
        &NewAlert {
            suppressed: Some(by.clone()),
            ..new_alert("contract.isa", subject, Severity::Warning, T0 + 2)
        },
    )
    .await;
    assert_eq!(c.suppressed, Some(by.clone()));
    // Not signalled: the raise wrote no outbox event (the returned alert's return did).
    let subject_of = |id: i64| format!("alert/{id}");
    let mut signalled = Vec::new();
    let mut after = 0;
    loop {
        let page = store.outbox_events(after, 1_000).await.expect("outbox");
        let Some(last) = page.last() else { break };
        after = last.id;
        signalled.extend(
            page.into_iter()
                .filter(|e| e.subject == subject_of(c.id) || e.subject == subject_of(id))
                .map(|e| (e.subject, e.event_type)),
        );
    }
    let types = |id: i64| -> Vec<&str> {
        signalled.iter().filter(|(s, _)| *s == subject_of(id)).map(|(_, t)| t.as_str()).collect()
    };
    assert_eq!(types(c.id), Vec::<&str>::new(), "a suppressed raise is not signalled");
    assert!(types(id).contains(&crate::outbox::event_type::ALERT_RETURNED), "{signalled:?}");
    assert_eq!(store.alerts(&listed(None, Some(true))).await.expect("suppressed").len(), 1);
    let lifted = store
        .change_alert(c.id, &AlertChange::Unsuppress, None, None, t(3_800))
        .await
        .expect("unsuppress");
    assert_eq!((lifted.state, lifted.suppressed), (Raised, None));
    let again = store
        .change_alert(c.id, &AlertChange::Suppress(by.clone()), None, None, t(3_801))
        .await
        .expect("suppress");
    assert_eq!(again.suppressed, Some(by));
    assert!(store
        .alerts(&listed(None, Some(true)))
        .await
        .expect("suppressed")
        .iter()
        .all(|r| r.id == c.id));
    store.clear_alert(c.id, Some("ops-anna"), None, t(3_802)).await.expect("clear");
}

/// The stream clears by key when a condition ends: only that key's open alert moves, with
/// no operator; grouped alerts keep their member count.
pub async fn automatic_clear_by_key_leaves_other_keys_open(store: &Store) {
    let rule = "contract.auto-clear";
    let on_segment = AlertSubject::Segment(seg("ac-seg-1"));
    let segment_alert = raise(
        store,
        &NewAlert {
            kind: AlertKind::SegmentGroup,
            members: 3,
            ..new_alert(rule, on_segment.clone(), Severity::Warning, T0)
        },
    )
    .await;
    let rule_alert = raise(
        store,
        &NewAlert {
            kind: AlertKind::RateLimitOverflow,
            ..new_alert(rule, AlertSubject::Rule, Severity::Warning, T0)
        },
    )
    .await;
    assert_eq!(
        (segment_alert.members, segment_alert.kind, rule_alert.subject.clone()),
        (3, AlertKind::SegmentGroup, AlertSubject::Rule)
    );

    store.update_alert_members(segment_alert.id, 7).await.expect("members");
    assert_eq!(store.alert(segment_alert.id).await.expect("alert").map(|a| a.members), Some(7));
    assert!(matches!(
        store.update_alert_members(i64::MAX, 1).await,
        Err(StoreError::AlertNotFound(i64::MAX))
    ));

    let cleared = store
        .clear_open_alert(rule, &on_segment, EventTime(T0 + 90_000))
        .await
        .expect("auto clear");
    let cleared = cleared.expect("the open alert of the key");
    assert_eq!(
        (cleared.id, cleared.state, cleared.members),
        (segment_alert.id, AlertState::Cleared, 7)
    );
    assert_eq!(
        cleared.cleared,
        Some(Clearance { by: None, note: None, at: EventTime(T0 + 90_000) })
    );
    assert_eq!(
        moves(store, segment_alert.id).await,
        vec![
            (None, AlertState::Raised, None, None, 0),
            (Some(AlertState::Raised), AlertState::Cleared, None, None, 90_000)
        ]
    );
    assert_eq!(
        store.alert(rule_alert.id).await.expect("alert"),
        Some(rule_alert.clone()),
        "another key of the rule stays open"
    );
    assert_eq!(
        store
            .clear_open_alert(rule, &on_segment, EventTime(T0 + 95_000))
            .await
            .expect("nothing open"),
        None
    );
    assert_eq!(moves(store, segment_alert.id).await.len(), 2);
}

/// Listing: each filter alone and combined, newest first with ties by id, and cursor pages
/// that neither skip nor repeat.
pub async fn alert_listing_filters_and_pages_by_cursor(store: &Store) {
    // A time range no other check raises in, so the listing sees only these alerts.
    let base = T0 + 400 * DAY_MS;
    let (a, b) = ("contract.list-a", "contract.list-b");
    let d1 = AlertSubject::Device(dev("ls-1"));
    let a1 = raise(store, &new_alert(a, d1.clone(), Severity::Warning, base + 1_000)).await.id;
    let a2 = raise(
        store,
        &new_alert(a, AlertSubject::Device(dev("ls-2")), Severity::Critical, base + 2_000),
    )
    .await
    .id;
    let a3 = raise(
        store,
        &new_alert(b, AlertSubject::Segment(seg("ls-seg")), Severity::Info, base + 3_000),
    )
    .await
    .id;
    // Raised at the same instant as a3: the later id lists first.
    let a4 = raise(store, &new_alert(b, d1.clone(), Severity::Critical, base + 3_000)).await.id;
    let a5 =
        raise(store, &new_alert(a, AlertSubject::Rule, Severity::Warning, base + 5_000)).await.id;
    store.acknowledge_alert(a2, "ops-anna", None, EventTime(base + 6_000)).await.expect("ack");
    store.clear_alert(a1, None, None, EventTime(base + 7_000)).await.expect("clear");

    let window = AlertFilter {
        raised_from: Some(EventTime(base)),
        raised_to: Some(EventTime(base + DAY_MS)),
        ..AlertFilter::default()
    };
    let ids = |f: AlertFilter| async move {
        store.alerts(&f).await.expect("alerts").into_iter().map(|a| a.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(window.clone()).await, vec![a5, a4, a3, a2, a1]);
    assert_eq!(
        ids(AlertFilter { states: AlertState::OPEN.to_vec(), ..window.clone() }).await,
        vec![a5, a4, a3, a2]
    );
    assert_eq!(
        ids(AlertFilter {
            states: AlertFilter::open().states,
            rule: Some(a.into()),
            ..window.clone()
        })
        .await,
        vec![a5, a2]
    );
    assert_eq!(
        ids(AlertFilter { states: vec![AlertState::Cleared], ..window.clone() }).await,
        vec![a1]
    );
    assert_eq!(
        ids(AlertFilter { states: vec![AlertState::Acknowledged], ..window.clone() }).await,
        vec![a2]
    );
    assert_eq!(
        ids(AlertFilter { severities: vec![Severity::Critical], ..window.clone() }).await,
        vec![a4, a2]
    );
    assert_eq!(
        ids(AlertFilter { severities: vec![Severity::Info, Severity::Warning], ..window.clone() })
            .await,
        vec![a5, a3, a1]
    );
    assert_eq!(ids(AlertFilter { rule: Some(a.into()), ..window.clone() }).await, vec![a5, a2, a1]);
    assert_eq!(
        ids(AlertFilter { subject_kind: Some(SubjectKind::Device), ..window.clone() }).await,
        vec![a4, a2, a1]
    );
    assert_eq!(
        ids(AlertFilter { subject_kind: Some(SubjectKind::Rule), ..window.clone() }).await,
        vec![a5]
    );
    assert_eq!(
        ids(AlertFilter { subject: Some(d1.clone()), ..window.clone() }).await,
        vec![a4, a1]
    );
    assert_eq!(
        ids(AlertFilter { subject: Some(d1), rule: Some(b.into()), ..AlertFilter::default() })
            .await,
        vec![a4]
    );
    let range = AlertFilter {
        raised_from: Some(EventTime(base + 2_000)),
        raised_to: Some(EventTime(base + 5_000)),
        ..AlertFilter::default()
    };
    assert_eq!(ids(range).await, vec![a4, a3, a2]);

    // Pages of two, each starting after the last id of the one before.
    let page = |before_id: Option<i64>| AlertFilter { before_id, limit: 2, ..window.clone() };
    assert_eq!(ids(page(None)).await, vec![a5, a4]);
    assert_eq!(ids(page(Some(a4))).await, vec![a3, a2]);
    assert_eq!(ids(page(Some(a2))).await, vec![a1]);
    assert_eq!(ids(page(Some(a1))).await, Vec::<i64>::new());
    assert_eq!(
        ids(AlertFilter {
            states: AlertFilter::open().states,
            before_id: Some(a5),
            limit: 1,
            ..window.clone()
        })
        .await,
        vec![a4]
    );
    assert_eq!(ids(AlertFilter { limit: 0, ..window }).await, Vec::<i64>::new());

    // What the list returns is the whole record.
    let listed = store
        .alerts(&AlertFilter { rule: Some(b.into()), ..AlertFilter::default() })
        .await
        .expect("alerts");
    assert_eq!(listed.first(), store.alert(a4).await.expect("alert").as_ref());
}

pub async fn stream_state_round_trips_and_is_overwritten(store: &Store) {
    let key = "contract.alert_engine";
    assert_eq!(store.load_stream_state(key).await.expect("load"), None);
    let first = serde_json::json!({
        "next_alert_id": 42,
        "clock": T0,
        "open_alerts": [{ "id": 7, "key": { "rule": "no2-high", "subject": { "device": "aq-3" } }, "value": 231.25, "note": null }],
        "counters": { "raised": 18_446_744_073_709_551_615u64, "ratio": 0.1 },
        "name": "città \"centro\"",
    });
    store.save_stream_state(key, &first).await.expect("save");
    assert_eq!(store.load_stream_state(key).await.expect("load"), Some(first));
    let second = serde_json::json!({ "next_alert_id": 43, "open_alerts": [] });
    store.save_stream_state(key, &second).await.expect("overwrite");
    assert_eq!(store.load_stream_state(key).await.expect("load"), Some(second));
    assert_eq!(store.load_stream_state("contract.other").await.expect("load"), None);
}

pub async fn stream_state_parts_commit_together_and_replace_on_request(store: &Store) {
    let key = "contract.parts";
    let load = || async {
        let mut parts = std::collections::BTreeMap::new();
        store
            .load_state_parts(key, |p, v| {
                parts.insert(p, serde_json::from_str::<serde_json::Value>(&v).expect("json"));
                Ok(())
            })
            .await
            .expect("load");
        parts
    };
    let part = |name: &str, json: &str| (name.to_owned(), json.to_owned());
    store.save_stream_state(key, &serde_json::json!({"legacy": true})).await.expect("legacy");
    let mut save = store.begin_state_save(key, true).await.expect("begin");
    save.put(key, &[part("head", r#"{"n":1}"#), part("device/a", r#"{"v":"città"}"#)])
        .await
        .expect("put");
    save.put(key, &[part("device/b", r#"{"v":2}"#)]).await.expect("put");
    drop(save);
    assert!(load().await.is_empty(), "nothing of an uncommitted checkpoint is visible");
    let mut save = store.begin_state_save(key, true).await.expect("begin");
    save.put(key, &[part("head", r#"{"n":1}"#), part("device/a", r#"{"v":"città"}"#)])
        .await
        .expect("put");
    save.put(key, &[part("device/b", r#"{"v":2}"#)]).await.expect("put");
    save.commit().await.expect("commit");
    assert_eq!(store.load_stream_state(key).await.expect("load"), None, "replaced the document");
    let mut save = store.begin_state_save(key, false).await.expect("begin");
    save.put(key, &[part("head", r#"{"n":2}"#), part("device/b", r#"{"v":3}"#)])
        .await
        .expect("put");
    save.commit().await.expect("commit");
    let parts = load().await;
    assert_eq!(
        parts,
        [
            ("device/a".to_owned(), serde_json::json!({"v": "città"})),
            ("device/b".to_owned(), serde_json::json!({"v": 3})),
            ("head".to_owned(), serde_json::json!({"n": 2})),
        ]
        .into_iter()
        .collect()
    );
    let save = store.begin_state_save(key, true).await.expect("begin");
    save.commit().await.expect("commit");
    assert!(load().await.is_empty(), "a replacing checkpoint drops every earlier part");
}

pub async fn gateways_link_devices_until_either_is_decommissioned(store: &Store) {
    let at = EventTime(T0);
    store
        .register_device(&dev("gw-1"), Some("gateway"), None, None, "$7$hash-gw", at)
        .await
        .expect("gateway");
    let one = store
        .register_device(&dev("gw-loop-1"), None, None, Some(&dev("gw-1")), "$7$hash-1", at)
        .await
        .expect("device");
    assert_eq!(one.gateway, Some(dev("gw-1")));
    store
        .register_device(&dev("gw-loop-2"), None, None, Some(&dev("gw-1")), "$7$hash-2", at)
        .await
        .expect("device");
    store
        .register_device(&dev("gw-loop-3"), None, None, None, "$7$hash-3", at)
        .await
        .expect("device");
    let mine = |links: Vec<(DeviceId, DeviceId)>| {
        links.into_iter().filter(|(g, _)| g.as_str().starts_with("gw-")).collect::<Vec<_>>()
    };
    assert_eq!(
        mine(store.gateway_links().await.expect("links")),
        vec![(dev("gw-1"), dev("gw-loop-1")), (dev("gw-1"), dev("gw-loop-2"))]
    );
    let moved = store
        .update_device(
            &dev("gw-loop-3"),
            &crate::DeviceUpdate { gateway: Some(Some(dev("gw-1"))), ..Default::default() },
        )
        .await
        .expect("update");
    assert_eq!(moved.and_then(|d| d.gateway), Some(dev("gw-1")));
    store
        .update_device(
            &dev("gw-loop-1"),
            &crate::DeviceUpdate { gateway: Some(None), ..Default::default() },
        )
        .await
        .expect("update");
    store.decommission_device(&dev("gw-loop-2"), at).await.expect("decommission");
    assert_eq!(
        mine(store.gateway_links().await.expect("links")),
        vec![(dev("gw-1"), dev("gw-loop-3"))],
        "unlinked and decommissioned devices have no grant"
    );
    store.decommission_device(&dev("gw-1"), at).await.expect("decommission");
    assert!(
        mine(store.gateway_links().await.expect("links")).is_empty(),
        "a decommissioned gateway has no grants"
    );
}

pub async fn a_sole_token_revokes_the_others_of_its_name(store: &Store) {
    let at = EventTime(T0);
    store.ensure_token("other", "admin", "digest-other", at).await.expect("token");
    assert_eq!(store.ensure_sole_token("boot", "admin", "digest-1", at).await.expect("token"), 0);
    // The same token again (a restart with the same secret) changes nothing.
    assert_eq!(store.ensure_sole_token("boot", "admin", "digest-1", at).await.expect("token"), 0);
    assert_eq!(store.ensure_sole_token("boot", "admin", "digest-2", at).await.expect("token"), 1);
    assert!(store.token_by_digest("digest-1").await.expect("token").is_none());
    assert_eq!(
        store.token_by_digest("digest-2").await.expect("token").expect("token").name,
        "boot"
    );
    assert!(store.token_by_digest("digest-other").await.expect("token").is_some());
    let live: Vec<String> = store
        .tokens()
        .await
        .expect("token")
        .into_iter()
        .filter(|t| t.revoked_at.is_none())
        .map(|t| t.name)
        .collect();
    assert_eq!(live.iter().filter(|n| *n == "boot").count(), 1, "{live:?}");
}

/// The map's device pages: in-service devices only, each exactly once across pages, each
/// ranked among its segment's in-service devices in bytewise id order; the kinds of
/// in-service devices.
pub async fn devices_are_placed_in_id_order_on_their_segments(store: &Store) {
    let segment = telemetry::RoadSegment {
        id: SegmentId::parse("map-contract").expect("segment id"),
        name: "Via della Mappa".into(),
        kind: "urban".into(),
        coordinates: vec![[11.25, 43.77], [11.26, 43.77]],
        length_m: 800.0,
        lanes: 2,
        speed_limit_kmh: 50.0,
        free_flow_kmh: 45.0,
        capacity_vph: 1_800.0,
    };
    store.upsert_segments(std::slice::from_ref(&segment)).await.expect("segment");
    let record = |id: &str, kind: Option<&str>, on_segment: bool| DeviceRecord {
        id: dev(id),
        kind: kind.map(str::to_owned),
        segment: on_segment.then(|| segment.id.clone()),
        registered_at: EventTime(T0),
    };
    store
        .upsert_devices(&[
            // Bytewise "map-a-2" < "map-a1" (a collation that skips punctuation says otherwise).
            record("map-a1", Some("map_loop"), true),
            record("map-a-2", None, true),
            record("map-b", Some("map_gone"), true),
            record("map-c", Some("map_loop"), true),
            record("map-none", Some("map_air"), false),
        ])
        .await
        .expect("devices");
    store.decommission_device(&dev("map-b"), EventTime(T0 + 1)).await.expect("decommission");
    let mut all = Vec::new();
    let mut after: Option<DeviceId> = None;
    loop {
        let page = store.placed_devices(after.as_ref(), 2).await.expect("placed devices");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        all.extend(page);
    }
    let ids: Vec<&str> = all.iter().map(|d| d.id.as_str()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "every device once: {ids:?}");
    let mine: std::collections::BTreeMap<&str, (Option<&str>, u32, u32)> = all
        .iter()
        .filter(|d| d.id.as_str().starts_with("map-"))
        .map(|d| {
            assert_eq!(d.segment.is_some(), d.id.as_str() != "map-none", "{}", d.id);
            (d.id.as_str(), (d.kind.as_deref(), d.index, d.of))
        })
        .collect();
    assert_eq!(
        mine.into_iter().collect::<Vec<_>>(),
        [
            ("map-a-2", (None, 0, 3)),
            ("map-a1", (Some("map_loop"), 1, 3)),
            ("map-c", (Some("map_loop"), 2, 3)),
            ("map-none", (Some("map_air"), 0, 0)),
        ]
    );
    let kinds = store.device_kinds().await.expect("kinds");
    assert!(kinds.contains(&"map_loop".to_owned()) && kinds.contains(&"map_air".to_owned()));
    assert!(!kinds.contains(&"map_gone".to_owned()), "decommissioned kinds are not listed");
    let mut sorted = kinds.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(kinds, sorted);
}
