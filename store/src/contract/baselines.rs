//! Learned baselines: slot sums from the minute rollups, holidays and closures left out,
//! a full learning and an incremental one.

use telemetry::baseline::{parse_day, BaselineOn, SlotClock, SpreadFloor, SLOT_MS, WEEK_MS};
use telemetry::{EventTime, MetricId};

use super::{dev, reading, write, T0};
use crate::baselines::LearnSettings;
use crate::operations::{OperationKind, OperationSeverity, OperationStatus};
use crate::{ActualWindow, DeviceRecord, Operation, PlannedWindow, Store};

const MINUTE: i64 = 60_000;

pub async fn baselines_learn_slots_without_holidays_and_closures(store: &Store) {
    let segs = telemetry::segment::parse_geojson(telemetry::segment::FLORENCE_SEED).expect("seed");
    store.upsert_segments(&segs).await.expect("segments");
    let segment = segs[1].id.clone();
    let devices: Vec<DeviceRecord> = ["bl-1", "bl-2"]
        .iter()
        .map(|d| DeviceRecord {
            id: dev(d),
            kind: Some("traffic_loop".into()),
            segment: Some(segment.clone()),
            registered_at: EventTime(T0),
        })
        .collect();
    store.upsert_devices(&devices).await.expect("devices");
    // Monday 2025-12-01 08:00 CET, then the two Mondays after: slots X and X + 1.
    let monday = EventTime::parse_rfc3339("2025-12-01T07:00:00Z").expect("time").millis();
    assert!(monday > T0 + 2 * 86_400_000, "after the contract's retention horizon");
    let mut readings = Vec::new();
    for w in 0..3 {
        let week = monday + w * WEEK_MS;
        for m in 0..30 {
            let t = week + m * MINUTE;
            let (s1, c1, s2, c2) = if m < 15 {
                (30.0 + w as f64, 5.0, 50.0 + w as f64, 15.0)
            } else {
                (60.0, 10.0, 60.0, 10.0)
            };
            readings.push(reading("bl-1", MetricId::SpeedKmh, t, s1));
            readings.push(reading("bl-1", MetricId::VehicleCount, t, c1));
            readings.push(reading("bl-2", MetricId::SpeedKmh, t, s2));
            readings.push(reading("bl-2", MetricId::VehicleCount, t, c2));
        }
    }
    write(store, readings).await;
    let sums = store
        .baseline_slot_sums(EventTime(monday), EventTime(monday + SLOT_MS), &[MetricId::SpeedKmh])
        .await
        .expect("sums");
    let mine: Vec<_> = sums.iter().filter(|s| s.device.starts_with("bl-")).collect();
    assert_eq!(mine.len(), 2, "{sums:?}");
    assert!(mine.iter().all(|s| s.count == 15 && s.bucket == EventTime(monday)));
    assert!(mine.iter().any(|s| s.device == "bl-1" && s.sum == 450.0));

    // Week 1's Monday is a holiday; a closure of the segment covers week 2's slot X + 1.
    let closure_from = monday + 2 * WEEK_MS + SLOT_MS;
    let op = Operation {
        id: "op-bl".into(),
        version: 1,
        kind: OperationKind::Closure,
        title: "closed for the baseline".into(),
        description: None,
        severity: OperationSeverity::Moderate,
        status: OperationStatus::Planned,
        agency: "mobility".into(),
        segments: vec![segment.to_string()],
        derived_segments: Vec::new(),
        point: None,
        area: None,
        closes_road: true,
        planned: PlannedWindow {
            from: EventTime(closure_from),
            to: EventTime(closure_from + SLOT_MS),
        },
        actual: ActualWindow::default(),
        notes: vec![],
        linked_alerts: vec![],
        external_ref: None,
        created_at: EventTime(T0),
        created_by: "ada".into(),
        updated_at: EventTime(T0),
        updated_by: "ada".into(),
    };
    store.create_operation(&op, None, "ada").await.expect("closure");
    let at = |t: i64| Some(EventTime(t));
    store
        .move_operation(
            "op-bl",
            None,
            OperationStatus::Active,
            at(closure_from),
            "ada",
            EventTime(closure_from),
        )
        .await
        .expect("active");
    store
        .move_operation(
            "op-bl",
            None,
            OperationStatus::Ended,
            at(closure_from + SLOT_MS),
            "ada",
            EventTime(closure_from + SLOT_MS),
        )
        .await
        .expect("ended");

    let settings = LearnSettings {
        weeks: 3,
        min_samples: 1,
        clock: SlotClock::default(),
        floor: SpreadFloor { relative: 0.0 },
        holidays: vec![parse_day("2025-12-08").expect("day")],
    };
    let now = EventTime(monday + 2 * WEEK_MS + 40 * MINUTE);
    let report = store.refresh_baselines(&settings, now).await.expect("refresh");
    assert!(report.full, "{report:?}");
    assert_eq!(report.slots, 672);
    assert_eq!(report.learned_to, EventTime(monday + 2 * WEEK_MS + 30 * MINUTE));
    let slot = SlotClock::default().slot(EventTime(monday)) as u16;
    let profile = |on, subject: &str, metric: &'static str| {
        let subject = subject.to_owned();
        async move { store.baseline_profile(on, &subject, metric).await.expect("profile") }
    };
    let d1 = profile(BaselineOn::Device, "bl-1", "speed_kmh").await;
    // Slot X: weeks 0 and 2 (30, 32). Slot X + 1: week 0 only (the closure on week 2).
    assert_eq!(
        d1.iter().map(|r| (r.slot, r.centre, r.samples)).collect::<Vec<_>>(),
        vec![(slot, 31.0, 2), (slot + 1, 60.0, 1)]
    );
    // MAD 1 × 1.4826 is under the 2 km/h floor.
    assert_eq!(d1[0].spread, 2.0);
    let seg = segment.to_string();
    let speed = profile(BaselineOn::Segment, &seg, "speed_kmh").await;
    // Count-weighted: (30 × 75 + 50 × 225) / 300 = 45 in week 0, 47 in week 2.
    assert_eq!(speed[0].centre, 46.0);
    let flow = profile(BaselineOn::Segment, &seg, "flow_vph").await;
    // Mean of 75 and 225 vehicles a quarter hour, per hour.
    assert_eq!(flow[0].centre, 600.0);
    assert_eq!(flow.len(), 2);

    // The sums of every occurrence learned from are stored, summed from the rollups.
    assert_eq!(report.summed, report.sums);
    let stored = store
        .baseline_summed_buckets(EventTime(monday), EventTime(monday + 2 * SLOT_MS))
        .await
        .expect("summed");
    assert_eq!(stored, vec![EventTime(monday), EventTime(monday + SLOT_MS)]);

    // Nothing closed since: nothing learned.
    let again = store.refresh_baselines(&settings, now).await.expect("refresh");
    assert_eq!((again.full, again.slots, again.rows), (false, 0, 0));

    // A late reading for week 2's slot X, already summed: 15 × 32 + 192 over 16 = 42.
    write(
        store,
        vec![reading(
            "bl-1",
            MetricId::SpeedKmh,
            monday + 2 * WEEK_MS + 7 * MINUTE + 30_000,
            192.0,
        )],
    )
    .await;
    // Other settings: a full relearn, from the stored sums (the late reading not yet in).
    let other = LearnSettings { floor: SpreadFloor { relative: 0.001 }, ..settings.clone() };
    let report = store.refresh_baselines(&other, now).await.expect("refresh");
    assert!(report.full, "{report:?}");
    assert_eq!(report.summed, 0, "every bucket was stored: {report:?}");
    let centre = |rows: &[telemetry::baseline::BaselineRow]| {
        rows.iter().find(|r| r.slot == slot).map(|r| r.centre)
    };
    assert_eq!(centre(&profile(BaselineOn::Device, "bl-1", "speed_kmh").await), Some(31.0));
    // The slot learned incrementally: its occurrences summed again, the late reading in.
    let mark = store.baseline_mark().await.expect("mark").expect("a mark");
    store
        .set_baseline_mark(&crate::baselines::BaselineMark {
            learned_to: EventTime(monday + 2 * WEEK_MS),
            settings: mark.settings,
        })
        .await
        .expect("mark");
    let report = store.refresh_baselines(&other, now).await.expect("refresh");
    assert!(!report.full && report.summed == report.sums, "{report:?}");
    assert_eq!(centre(&profile(BaselineOn::Device, "bl-1", "speed_kmh").await), Some(36.0));
    // And it stays in a full relearn from the stored sums.
    let report = store.refresh_baselines(&settings, now).await.expect("refresh");
    assert!(report.full && report.summed == 0, "{report:?}");
    assert_eq!(centre(&profile(BaselineOn::Device, "bl-1", "speed_kmh").await), Some(36.0));
    // Sums older than the learning window and a week are dropped at the next refresh.
    let old = EventTime(monday - 10 * WEEK_MS);
    store
        .put_baseline_slot_sums(
            &[telemetry::baseline::DeviceSlotSum {
                device: "bl-1".into(),
                segment: None,
                metric: MetricId::SpeedKmh,
                bucket: old,
                count: 1,
                sum: 1.0,
            }],
            now,
        )
        .await
        .expect("old sums");
    let before = |t: EventTime| store.baseline_summed_buckets(EventTime(0), t);
    assert_eq!(before(EventTime(old.millis() + SLOT_MS)).await.expect("summed"), vec![old]);
    // Week 3's slot X comes in; 30 minutes later slots X and X + 1 are relearned from
    // weeks 1 to 3 (week 0 left the window, week 1 is a holiday).
    let week3 = monday + 3 * WEEK_MS;
    let mut readings = Vec::new();
    for m in 0..15 {
        readings.push(reading("bl-1", MetricId::SpeedKmh, week3 + m * MINUTE, 40.0));
    }
    write(store, readings).await;
    let later = EventTime(week3 + 40 * MINUTE);
    let mark = store.baseline_mark().await.expect("mark").expect("a mark");
    store
        .set_baseline_mark(&crate::baselines::BaselineMark {
            learned_to: EventTime(week3),
            settings: mark.settings,
        })
        .await
        .expect("mark");
    let report = store.refresh_baselines(&settings, later).await.expect("refresh");
    assert!(!report.full, "{report:?}");
    assert_eq!(report.slots, 2);
    let d1 = profile(BaselineOn::Device, "bl-1", "speed_kmh").await;
    // Slot X: weeks 2 (42 with the late reading) and 3 (40). Slot X + 1: week 2 was
    // closed, week 3 has no reading: no sample left, the slot is gone.
    assert_eq!(
        d1.iter().map(|r| (r.slot, r.centre, r.samples)).collect::<Vec<_>>(),
        vec![(slot, 41.0, 2)]
    );
    // Slot X + 1 cleared for the counts and speeds of bl-1 and bl-2 and the segment's
    // flow and speed.
    assert_eq!(report.deleted, 6, "{report:?}");
    assert!(before(EventTime(old.millis() + SLOT_MS)).await.expect("summed").is_empty(), "pruned");
    let all = store.baselines_of_metric(BaselineOn::Segment, "flow_vph").await.expect("all");
    assert!(all.iter().any(|r| r.subject == seg));
}
