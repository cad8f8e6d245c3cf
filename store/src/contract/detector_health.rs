//! Detector flags: intervals open once per (device, rule) and close once, and history
//! without flagged readings equals a recount of the raw readings outside the flags.

use std::time::Duration;

use telemetry::health::{FlagInterval, HealthFlag};
use telemetry::{EventTime, MetricId, Partial};

use super::{dev, reading, write, T0};
use crate::detector_health::FlagFilter;
use crate::history::{HOUR_MS, MINUTE_MS};
use crate::{GapFill, HistoryQuery, Step, Store};

pub async fn flagged_readings_are_left_out_of_history_exactly(store: &Store) {
    let m = MetricId::SpeedKmh;
    let start = T0 + 2 * 86_400_000;
    // Six hours of readings every 20 s, integer values so sums are exact.
    let all: Vec<_> = (0..6 * 180)
        .map(|k| reading("fx1", m, start + k * 20_000, ((k * 17) % 97) as f64))
        .collect();
    write(store, all.clone()).await;
    // Another device's readings and flags change nothing here.
    write(store, vec![reading("fx2", m, start + 60_000, 5.0)]).await;
    let d = dev("fx1");
    let at = |ms: i64| EventTime(start + ms);
    assert!(store
        .open_flag(&d, "stuck", HealthFlag::Stuck, at(HOUR_MS + 10_000))
        .await
        .expect("open"));
    // An open interval is opened once.
    assert!(!store
        .open_flag(&d, "stuck", HealthFlag::Stuck, at(HOUR_MS + 50_000))
        .await
        .expect("open"));
    assert!(store.close_flag(&d, "stuck", at(HOUR_MS + 40 * MINUTE_MS)).await.expect("close"));
    assert!(!store.close_flag(&d, "stuck", at(HOUR_MS + 50 * MINUTE_MS)).await.expect("close"));
    store
        .open_flag(&d, "implausible", HealthFlag::Implausible, at(3 * HOUR_MS))
        .await
        .expect("open");
    store
        .close_flag(&d, "implausible", at(3 * HOUR_MS + 5 * MINUTE_MS + 7_000))
        .await
        .expect("close");
    // A close before the start leaves an empty interval.
    store.open_flag(&d, "missing", HealthFlag::Missing, at(4 * HOUR_MS)).await.expect("open");
    store.close_flag(&d, "missing", at(4 * HOUR_MS - 60_000)).await.expect("close");
    // Still open: flags everything from 5 h 30 min on.
    store
        .open_flag(&d, "stuck", HealthFlag::Stuck, at(5 * HOUR_MS + 30 * MINUTE_MS))
        .await
        .expect("open");
    store.open_flag(&dev("fx2"), "stuck", HealthFlag::Stuck, at(0)).await.expect("open");

    let listed = store
        .flags(&FlagFilter {
            device: Some(d.clone()),
            flag: None,
            from: at(0),
            to: at(6 * HOUR_MS),
            open_only: false,
        })
        .await
        .expect("flags");
    let spans: Vec<(HealthFlag, i64, Option<i64>)> = listed
        .iter()
        .map(|f| (f.flag, f.from.millis() - start, f.to.map(|t| t.millis() - start)))
        .collect();
    assert_eq!(
        spans,
        [
            (HealthFlag::Stuck, HOUR_MS + 10_000, Some(HOUR_MS + 40 * MINUTE_MS)),
            (HealthFlag::Implausible, 3 * HOUR_MS, Some(3 * HOUR_MS + 5 * MINUTE_MS + 7_000)),
            (HealthFlag::Missing, 4 * HOUR_MS, Some(4 * HOUR_MS)),
            (HealthFlag::Stuck, 5 * HOUR_MS + 30 * MINUTE_MS, None),
        ]
    );
    let open = store
        .flags(&FlagFilter {
            device: None,
            flag: Some(HealthFlag::Stuck),
            from: at(0),
            to: at(6 * HOUR_MS),
            open_only: true,
        })
        .await
        .expect("flags");
    assert_eq!(open.iter().map(|f| f.device.as_str()).collect::<Vec<_>>(), ["fx1", "fx2"]);

    let flagged = |t: EventTime| listed.iter().any(|f: &FlagInterval| f.covers(t));
    let recount = |from: i64, to: i64, step: Option<i64>| -> Vec<(i64, i64, f64, f64, f64, f64)> {
        let kept = all
            .iter()
            .filter(|r| r.time.millis() >= from && r.time.millis() < to && !flagged(r.time));
        match step {
            None => {
                kept.map(|r| (r.time.millis(), 1, r.value, r.value, r.value, r.value)).collect()
            }
            Some(step) => {
                let mut buckets: std::collections::BTreeMap<i64, Partial> = Default::default();
                for r in kept {
                    let p = Partial::of(r.time, r.value);
                    buckets
                        .entry(r.time.millis().div_euclid(step) * step)
                        .and_modify(|a| a.merge(&p))
                        .or_insert(p);
                }
                buckets
                    .into_iter()
                    .map(|(t, p)| (t, p.count, p.sum, p.min, p.max, p.last_value))
                    .collect()
            }
        }
    };
    let flagged_in = |from: i64, to: i64| {
        all.iter()
            .filter(|r| r.time.millis() >= from && r.time.millis() < to && flagged(r.time))
            .count() as i64
    };
    // Unaligned ends, every step from raw readings to hours.
    let (from, to) = (start + 7 * MINUTE_MS + 13_000, start + 6 * HOUR_MS - 3 * MINUTE_MS);
    for (step, want_step) in [
        (Step::Raw, None),
        (Step::Fixed(Duration::from_secs(60)), Some(MINUTE_MS)),
        (Step::Fixed(Duration::from_secs(900)), Some(15 * MINUTE_MS)),
        (Step::Fixed(Duration::from_secs(3_600)), Some(HOUR_MS)),
        (Step::Auto { max_points: 40 }, Some(HOUR_MS)),
    ] {
        let q = HistoryQuery {
            limit: 100_000,
            ..HistoryQuery::device(d.clone(), m, EventTime(from), EventTime(to), step)
        };
        let (h, excluded) = store.history_unflagged(&q).await.expect("history");
        assert_eq!(h.step_ms, want_step, "{step:?}");
        assert_eq!((h.from.millis(), h.to.millis()), (from, to));
        let got: Vec<_> = h
            .points
            .iter()
            .map(|p| (p.time.millis(), p.count, p.sum, p.min, p.max, p.last))
            .collect();
        assert_eq!(got, recount(from, to, want_step), "{step:?}");
        assert_eq!(excluded.readings, flagged_in(from, to), "{step:?}");
        assert_eq!(excluded.flags, 4);
        // Without flags in range the answer is the plain history.
        let early = HistoryQuery { to: at(HOUR_MS), ..q.clone() };
        let (plain, none) = store.history_unflagged(&early).await.expect("history");
        assert_eq!(
            (plain.points, none.readings),
            (store.history(&early).await.expect("history").points, 0)
        );
    }
    // Gaps left by flagged buckets are filled on request like any gap.
    let q = HistoryQuery {
        fill: GapFill::Null,
        limit: 100_000,
        ..HistoryQuery::device(
            d.clone(),
            m,
            at(5 * HOUR_MS),
            at(6 * HOUR_MS),
            Step::Fixed(Duration::from_secs(600)),
        )
    };
    let (h, _) = store.history_unflagged(&q).await.expect("history");
    assert_eq!(h.points.iter().map(|p| p.count).collect::<Vec<_>>(), [30, 30, 30, 0, 0, 0]);
    // Only a device's history leaves flagged data out.
    let city = HistoryQuery { subject: crate::HistorySubject::City, ..q };
    let refused = store.history_unflagged(&city).await;
    assert!(
        matches!(refused, Err(crate::StoreError::InvalidQuery { param: "exclude_flagged", .. })),
        "{refused:?}"
    );
}
