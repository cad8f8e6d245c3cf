//! Writes: dedupe, exact rollups across batches and late readings, latest values by
//! event time, dead letters and auto-registered devices, retention.

use std::time::Duration;

use telemetry::{EventTime, MetricId};

use super::{batch, dev, level, reading, summary, write, T0};
use crate::history::{DAY_MS, HOUR_MS, MINUTE_MS};
use crate::{Batch, DeadLetter, HistoryPoint, HistoryQuery, Resolution, Step, StorageMode, Store};

pub async fn replayed_batch_changes_no_row_and_no_rollup(store: &Store) {
    let b = batch(vec![
        reading("c1", MetricId::SpeedKmh, T0, 40.0),
        reading("c1", MetricId::SpeedKmh, T0 + 1_000, 50.0),
        reading("c1", MetricId::SpeedKmh, T0 + 1_000, 50.0), // duplicate inside the batch
    ]);
    let first = store.write_batch(&b).await.expect("write");
    assert_eq!((first.inserted, first.duplicates), (2, 1));
    store.catch_up_rollups().await.expect("merge");
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
    store.catch_up_rollups().await.expect("merge");
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
