//! History: filters and limits, automatic levels and subjects, any stepped range and gap
//! filling, each checked against a recount of the raw readings.

use std::time::Duration;

use telemetry::{EventTime, MetricId, Reading, SegmentId};

use super::{batch, dev, reading, write, T0};
use crate::history::{DAY_MS, HOUR_MS, MINUTE_MS};
use crate::{DeviceRecord, GapFill, HistoryQuery, HistorySubject, Resolution, Step, Store};

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
    store.catch_up_rollups().await.expect("merge");

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
    store.catch_up_rollups().await.expect("merge");
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
        let want = recount(all.iter().filter(|r| members.contains(&r.device.as_str())), &q, step);
        assert_eq!(
            points(&h),
            want,
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

/// The answers count every stored reading at once, before the rollups do: on PostgreSQL
/// the minutes not folded yet are read raw, and late readings are counted once merged.
/// Uses times after now (live readings, whatever the marks), then folds part of them,
/// adds late and live readings, and checks again after each step.
pub async fn answers_count_readings_not_yet_rolled_up(store: &Store) {
    let m = MetricId::CycleS;
    let now = EventTime::now().millis();
    let base = now - now.rem_euclid(MINUTE_MS) + 10 * MINUTE_MS;
    let mut all: Vec<Reading> = [0, 20_000, 70_000, 61 * MINUTE_MS + 5_000, 2 * HOUR_MS + 1]
        .iter()
        .enumerate()
        .map(|(i, dt)| reading("u1", m, base + dt, 10.0 + i as f64))
        .collect();
    all.push(reading("u2", m, base + 30_000, 99.0));
    store.write_batch(&batch(all.clone())).await.expect("write");
    let check = |all: Vec<Reading>, when: &'static str| async move {
        for step in [MINUTE_MS, 5 * MINUTE_MS, HOUR_MS, DAY_MS] {
            for (from, to) in [(base - HOUR_MS, base + 3 * HOUR_MS), (base + 10_000, base + 75_000)]
            {
                let q = HistoryQuery {
                    subject: HistorySubject::City,
                    metric: m,
                    from: EventTime(from),
                    to: EventTime(to),
                    step: Step::Fixed(Duration::from_millis(step as u64)),
                    fill: GapFill::None,
                    limit: 100_000,
                };
                let h = store.history(&q).await.expect("history");
                let want = recount(all.iter(), &q, step);
                assert_eq!(points(&h), want, "{when}: step {step} ms over [{from}, {to})");
            }
        }
        let latest = store.latest(Some(&dev("u1")), Some(m)).await.expect("latest");
        let newest = all.iter().filter(|r| r.device.as_str() == "u1").max_by_key(|r| r.time);
        assert_eq!(
            latest.iter().map(|l| (l.time, l.value)).collect::<Vec<_>>(),
            newest.map(|r| (r.time, r.value)).into_iter().collect::<Vec<_>>(),
            "{when}: latest"
        );
    };
    check(all.clone(), "nothing folded").await;
    // The first two minutes sealed and folded; then a late reading into them (merged by
    // the merger) and a live one after them.
    store.fold_minutes(EventTime(base + 2 * MINUTE_MS)).await.expect("fold");
    check(all.clone(), "two minutes folded").await;
    let more = vec![reading("u1", m, base + 40_000, 7.0), reading("u1", m, base + 150_000, 8.0)];
    store.write_batch(&batch(more.clone())).await.expect("write more");
    all.extend(more);
    store.merge_all_rollups().await.expect("merge");
    check(all.clone(), "a late and a live reading").await;
    store.catch_up_rollups().await.expect("catch up");
    check(all, "all folded").await;
}

/// A point as compared: bucket start, count, sum, min, max, last.
type Point = (i64, i64, f64, f64, f64, f64);

/// The points of `h`.
fn points(h: &crate::History) -> Vec<Point> {
    h.points.iter().map(|p| (p.time.millis(), p.count, p.sum, p.min, p.max, p.last)).collect()
}

/// The buckets of `step` ms a recount of `readings` inside `q`'s range gives.
fn recount<'a>(
    readings: impl Iterator<Item = &'a Reading>,
    q: &HistoryQuery,
    step: i64,
) -> Vec<Point> {
    let mut want: std::collections::BTreeMap<i64, telemetry::Partial> =
        std::collections::BTreeMap::new();
    for r in readings.filter(|r| r.time >= q.from && r.time < q.to) {
        let p = telemetry::Partial::of(r.time, r.value);
        want.entry(r.time.millis().div_euclid(step) * step)
            .and_modify(|a| a.merge(&p))
            .or_insert(p);
    }
    want.into_iter().map(|(t, p)| (t, p.count, p.sum, p.min, p.max, p.last_value)).collect()
}
