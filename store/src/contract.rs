//! The store contract: behaviour every backend must show, run against each of them (SQLite
//! in this crate's tests, PostgreSQL in the workspace's integration tests). Each function
//! expects a freshly migrated, empty store.

use telemetry::{DeviceId, EventTime, MetricId, Reading, Seq};

use crate::{Batch, DeadLetter, DeviceRecord, HistoryQuery, Resolution, Store};

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

async fn minute(store: &Store, d: &str, m: MetricId) -> Vec<crate::HistoryPoint> {
    store
        .history(&HistoryQuery {
            device: dev(d),
            metric: m,
            from: EventTime(0),
            to: EventTime(T0 * 2),
            resolution: Resolution::Minute,
            limit: 10_000,
        })
        .await
        .expect("history")
}

/// Run every contract check in turn.
pub async fn run_all(store: &Store) {
    replayed_batch_changes_no_row_and_no_rollup(store).await;
    rollups_are_exact_across_batches_and_late_readings(store).await;
    latest_is_newest_by_event_time(store).await;
    history_filters_and_limits(store).await;
    dead_letters_and_devices_are_kept(store).await;
    segments_round_trip(store).await;
}

pub async fn replayed_batch_changes_no_row_and_no_rollup(store: &Store) {
    let b = batch(vec![
        reading("c1", MetricId::SpeedKmh, T0, 40.0),
        reading("c1", MetricId::SpeedKmh, T0 + 1_000, 50.0),
        reading("c1", MetricId::SpeedKmh, T0 + 1_000, 50.0), // duplicate inside the batch
    ]);
    let first = store.write_batch(&b).await.expect("write");
    assert_eq!((first.inserted, first.duplicates), (2, 1));
    let before = minute(store, "c1", MetricId::SpeedKmh).await;
    let again = store.write_batch(&b).await.expect("replay");
    assert_eq!((again.inserted, again.duplicates), (0, 3));
    assert_eq!(minute(store, "c1", MetricId::SpeedKmh).await, before);
    assert_eq!(before.len(), 1);
    assert_eq!((before[0].count, before[0].sum, before[0].last), (2, 90.0, 50.0));
}

pub async fn rollups_are_exact_across_batches_and_late_readings(store: &Store) {
    // Three batches over two minutes; the third carries a late reading for minute one that
    // is older than that minute's last value.
    store
        .write_batch(&batch(vec![reading("c2", MetricId::VehicleCount, T0 + 10_000, 5.0)]))
        .await
        .expect("b1");
    store
        .write_batch(&batch(vec![
            reading("c2", MetricId::VehicleCount, T0 + 50_000, 9.0),
            reading("c2", MetricId::VehicleCount, T0 + 70_000, 3.0),
        ]))
        .await
        .expect("b2");
    store
        .write_batch(&batch(vec![
            reading("c2", MetricId::VehicleCount, T0 + 20_000, 1.0),
            reading("c2", MetricId::VehicleCount, T0 + 10_000, 5.0), // replay
        ]))
        .await
        .expect("b3");
    let pts = minute(store, "c2", MetricId::VehicleCount).await;
    assert_eq!(pts.len(), 2);
    assert_eq!(pts[0].time, EventTime(T0));
    assert_eq!((pts[0].count, pts[0].sum, pts[0].min, pts[0].max, pts[0].last), (3, 15.0, 1.0, 9.0, 9.0));
    assert_eq!(pts[1].time, EventTime(T0 + 60_000));
    assert_eq!((pts[1].count, pts[1].sum, pts[1].min, pts[1].max, pts[1].last), (1, 3.0, 3.0, 3.0, 3.0));
}

pub async fn latest_is_newest_by_event_time(store: &Store) {
    store.write_batch(&batch(vec![reading("c3", MetricId::No2Ugm3, T0 + 5_000, 30.0)])).await.expect("w");
    store.write_batch(&batch(vec![reading("c3", MetricId::No2Ugm3, T0 + 1_000, 99.0)])).await.expect("late");
    store.write_batch(&batch(vec![reading("c3", MetricId::Pm10Ugm3, T0, 12.0)])).await.expect("w");
    let l = store.latest(Some(&dev("c3")), Some(MetricId::No2Ugm3)).await.expect("latest");
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].time, l[0].value), (EventTime(T0 + 5_000), 30.0));
    let all = store.latest(Some(&dev("c3")), None).await.expect("latest");
    assert_eq!(all.len(), 2);
    let pm = store.latest(None, Some(MetricId::Pm10Ugm3)).await.expect("latest");
    assert!(pm.iter().any(|v| v.device == dev("c3") && v.value == 12.0));
}

pub async fn history_filters_and_limits(store: &Store) {
    let rs: Vec<_> = (0..10).map(|i| reading("c4", MetricId::OccupancyPct, T0 + i * 1_000, i as f64)).collect();
    store.write_batch(&batch(rs)).await.expect("w");
    let q = HistoryQuery {
        device: dev("c4"),
        metric: MetricId::OccupancyPct,
        from: EventTime(T0 + 2_000),
        to: EventTime(T0 + 8_000),
        resolution: Resolution::Raw,
        limit: 100,
    };
    let pts = store.history(&q).await.expect("h");
    let values: Vec<f64> = pts.iter().map(|p| p.last).collect();
    assert_eq!(values, vec![2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    assert!(pts.iter().all(|p| p.count == 1));
    let limited = store.history(&HistoryQuery { limit: 2, ..q.clone() }).await.expect("h");
    assert_eq!(limited.len(), 2);
    let other = store.history(&HistoryQuery { metric: MetricId::SpeedKmh, ..q }).await.expect("h");
    assert!(other.is_empty());
}

pub async fn dead_letters_and_devices_are_kept(store: &Store) {
    let b = Batch {
        readings: vec![reading("c5", MetricId::SpeedKmh, T0, 1.0)],
        dead_letters: vec![
            DeadLetter::new("sccr/v1/devices/c5/telemetry", Some(dev("c5")), "bad_json", "first".into(), b"{oops"),
            DeadLetter::new("sccr/v1/devices/c5/telemetry", Some(dev("c5")), "out_of_range", "second".into(), &[0u8; 10_000]),
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
    store.write_batch(&Batch { new_devices: vec![dev("c5")], ..Batch::default() }).await.expect("w");
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
