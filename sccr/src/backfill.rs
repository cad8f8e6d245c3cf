//! The demo's back-fill: the simulated city's past (the same [`simulator::City`] as the
//! live fleet) written at start through `sccr import`'s write path ([`Importer`]: the
//! same validation, dedupe, batch writes and rollups as any reading), so the planner's
//! charts have a week of history from the first minute.
//!
//! - **Coarse.** One report per device every [`STEP_MS`] (5 minutes; the vehicle count
//!   is the count of those 5 minutes), on a grid aligned to the epoch, so a week of the
//!   default 60-device fleet is about 544,000 readings.
//! - **Newest first.** Batches are whole time steps written from the newest back, so the
//!   24-hour chart fills first and an interrupted back-fill leaves one stored span.
//! - **Incremental.** Only what lies outside the stored span is filled: from `now - span`
//!   up to the oldest stored reading, and from one step after the newest stored reading
//!   (the last live reading of the previous run) up to now. A restart within one step adds
//!   nothing; the store's dedupe would drop repeats anyway.
//! - **No alerts.** The readings go to the store only. Through the stream they would be
//!   too late for the windows (so no LOS), but the alert engine evaluates per-reading
//!   rules in event time, so a week of air-quality episodes would raise and clear a flood
//!   of historical alerts; the import path does not reach the stream at all.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use simulator::City;
use store::{HistoryQuery, HistorySubject, Step, Store};
use telemetry::{DeviceId, EventTime, MetricId, Reading};
use tokio::sync::watch;

use crate::import::{Importer, BATCH};
use crate::progress::human;

/// The back-fill's reporting interval.
pub const STEP_MS: i64 = 5 * 60_000;

/// A time range `[from, to)` to fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from: EventTime,
    pub to: EventTime,
}

impl Gap {
    /// Grid times in the gap, newest first.
    fn steps(self) -> impl Iterator<Item = EventTime> {
        let first = self.from.millis().div_euclid(STEP_MS)
            + i64::from(self.from.millis().rem_euclid(STEP_MS) != 0);
        let last = (self.to.millis() - 1).div_euclid(STEP_MS);
        (first..=last).rev().map(|k| EventTime(k * STEP_MS))
    }

    fn len(self) -> u64 {
        self.steps().count() as u64
    }
}

/// The gaps to fill at `now` for a back-fill of `span`, given the oldest and newest
/// readings stored (none when the store has no readings).
pub fn gaps(now: EventTime, span: Duration, stored: Option<(EventTime, EventTime)>) -> Vec<Gap> {
    let span_ms = i64::try_from(span.as_millis()).unwrap_or(i64::MAX);
    let lower = EventTime(now.millis().saturating_sub(span_ms));
    // A gap without a step of the grid in it adds nothing.
    let gap = |from: EventTime, to: EventTime| Some(Gap { from, to }).filter(|g| g.len() > 0);
    match stored {
        None => gap(lower, now).into_iter().collect(),
        Some((oldest, newest)) => {
            let after = EventTime(newest.millis().saturating_add(STEP_MS).max(lower.millis()));
            // Newest first: the recent gap, then the older one.
            [gap(after, now), gap(lower, oldest.min(now))].into_iter().flatten().collect()
        }
    }
}

/// The oldest and newest readings stored: the first raw `speed_kmh` (every demo fleet has
/// a traffic detector) and the newest of the `latest` table.
pub async fn stored_span(store: &Store, now: EventTime) -> Result<Option<(EventTime, EventTime)>> {
    let newest = store.latest(None, None).await?.into_iter().map(|v| v.time).max();
    let Some(newest) = newest else { return Ok(None) };
    let q = HistoryQuery {
        subject: HistorySubject::City,
        metric: MetricId::SpeedKmh,
        from: EventTime(0),
        to: EventTime(now.millis().max(newest.millis()) + 1),
        step: Step::Raw,
        fill: store::GapFill::None,
        limit: 1,
    };
    let oldest = store.history(&q).await?.points.first().map_or(newest, |p| p.time);
    Ok(Some((oldest, newest)))
}

/// What a back-fill wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackfillSummary {
    pub readings: u64,
    pub inserted: u64,
    pub duplicates: u64,
    pub refused: u64,
    /// Stopped before the end (shutdown).
    pub interrupted: bool,
}

/// Write the readings of `devices` (in the order [`City::new`] was given them) for every
/// step of `gaps` through the import path, newest first, until done or `stop` turns true.
/// A progress line goes to stderr every few seconds.
pub async fn run(
    store: &Store,
    city: &City,
    devices: &[DeviceId],
    gaps: &[Gap],
    raw_retention: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) -> Result<BackfillSummary> {
    let started = Instant::now();
    let mut importer = Importer::new(store, raw_retention, false).await?;
    let total_steps: u64 = gaps.iter().map(|g| g.len()).sum();
    let per_step: u64 = (0..devices.len())
        .map(|i| city.readings(i, EventTime(0), STEP_MS as f64 / 1_000.0).len() as u64)
        .sum();
    let expected = total_steps * per_step;
    let interval_s = STEP_MS as f64 / 1_000.0;
    let (mut done_steps, mut last_line) = (0u64, Instant::now());
    let mut interrupted = false;
    'gaps: for gap in gaps {
        for t in gap.steps() {
            for (i, device) in devices.iter().enumerate() {
                for (metric, value) in city.readings(i, t, interval_s) {
                    let reading =
                        Reading { device: device.clone(), metric, time: t, value, seq: None };
                    importer.push(reading, &|| format!("back-fill {device} at {t}"));
                }
            }
            done_steps += 1;
            if importer.pending() >= BATCH {
                importer.flush().await.context("back-fill")?;
                if *stop.borrow_and_update() {
                    interrupted = true;
                    break 'gaps;
                }
                if last_line.elapsed() >= Duration::from_secs(2) {
                    last_line = Instant::now();
                    let s = importer.summary();
                    eprintln!(
                        "back-fill: {} of ~{} readings ({}%), back to {t}, {:.1} s",
                        human(s.rows),
                        human(expected),
                        done_steps * 100 / total_steps.max(1),
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }
    importer.flush().await.context("back-fill")?;
    let s = importer.summary();
    Ok(BackfillSummary {
        readings: s.rows,
        inserted: s.inserted,
        duplicates: s.duplicates,
        refused: s.refused.values().sum::<u64>() + s.older_than_retention,
        interrupted,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use store::DeviceRecord;

    const H: i64 = 3_600_000;

    #[test]
    fn gaps_fill_outside_the_stored_span_only() {
        let now = EventTime(1_000 * H + 123_456);
        let week = Duration::from_secs(7 * 86_400);
        // An empty store: the whole span.
        let all = gaps(now, week, None);
        assert_eq!(all, vec![Gap { from: EventTime(now.millis() - 168 * H), to: now }]);
        assert_eq!(all[0].len(), 168 * 12, "one step every 5 minutes");
        let steps: Vec<_> = all[0].steps().collect();
        assert!(steps.windows(2).all(|w| w[0].millis() - w[1].millis() == STEP_MS), "newest first");
        assert!(steps[0] < now && steps.last().unwrap() >= &all[0].from);
        // A restart within one step of the last reading adds nothing.
        let stored = Some((EventTime(now.millis() - 168 * H), EventTime(now.millis() - 60_000)));
        assert!(gaps(now, week, stored).is_empty());
        // After a day away: the day since the last reading, and the older end.
        let stored = Some((EventTime(now.millis() - 100 * H), EventTime(now.millis() - 24 * H)));
        let g = gaps(now, week, stored);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0], Gap { from: EventTime(now.millis() - 24 * H + STEP_MS), to: now });
        assert_eq!(
            g[1],
            Gap { from: EventTime(now.millis() - 168 * H), to: EventTime(now.millis() - 100 * H) }
        );
        // Nor does a restart a moment later, although the span's older end moved on.
        let first = EventTime(all[0].steps().last().unwrap().millis());
        let later = EventTime(now.millis() + 40_000);
        assert!(
            gaps(later, week, Some((first, now))).is_empty(),
            "{:?}",
            gaps(later, week, Some((first, now)))
        );
        // A span of 0 fills nothing.
        assert!(gaps(now, Duration::ZERO, None).is_empty());
    }

    /// A back-fill of the same gap twice: the store's dedupe adds nothing the second time;
    /// the readings are found by the history of their segment.
    #[tokio::test]
    async fn a_second_backfill_of_a_gap_adds_nothing() {
        let dir = std::env::temp_dir().join(format!("sccr-backfill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = crate::config::Config::default();
        config.database.url = format!("sqlite:{}", dir.join("sccr.db").display());
        let store = crate::pipeline::open_store(&config).await.unwrap();
        let segments = store.segments().await.unwrap();
        let fleet = simulator::plan_fleet(&segments, 8);
        let records: Vec<DeviceRecord> = fleet
            .iter()
            .map(|d| DeviceRecord {
                id: d.id.clone(),
                kind: Some(d.kind.as_str().into()),
                segment: Some(d.segment.id.clone()),
                registered_at: EventTime::now(),
            })
            .collect();
        store.upsert_devices(&records).await.unwrap();
        let city = City::new(&fleet, 42);
        let ids: Vec<DeviceId> = fleet.iter().map(|d| d.id.clone()).collect();
        let now = EventTime::now();
        assert_eq!(stored_span(&store, now).await.unwrap(), None);
        let gaps = gaps(now, Duration::from_secs(3_600), None);
        let (_stop_tx, stop) = watch::channel(false);
        let retention = config.retention.raw;
        let first = run(&store, &city, &ids, &gaps, retention, stop.clone()).await.unwrap();
        // 12 steps of 6 loops (4 metrics) and 2 stations (6 metrics).
        assert_eq!(first.readings, 12 * 36);
        assert_eq!((first.inserted, first.duplicates, first.refused), (12 * 36, 0, 0));
        let second = run(&store, &city, &ids, &gaps, retention, stop).await.unwrap();
        assert_eq!((second.readings, second.inserted, second.duplicates), (12 * 36, 0, 12 * 36));
        let (oldest, newest) = stored_span(&store, now).await.unwrap().unwrap();
        assert_eq!(newest, gaps[0].steps().next().unwrap());
        assert_eq!(oldest, gaps[0].steps().last().unwrap());
        let q = HistoryQuery {
            subject: HistorySubject::Segment(fleet[0].segment.id.clone()),
            metric: MetricId::SpeedKmh,
            from: gaps[0].from,
            to: now,
            step: Step::Raw,
            fill: store::GapFill::None,
            limit: 100,
        };
        assert_eq!(store.history(&q).await.unwrap().points.len(), 12);
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
