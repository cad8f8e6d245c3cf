//! Learned baselines (`telemetry::baseline`): the slot sums they are learned from, the
//! learned slots, and the mark of what was learned.
//!
//! - **Samples.** [`Store::baseline_slot_sums`] sums `rollup_1m` into 15-minute buckets
//!   per device and metric (with the device's segment now), so every backend gives the
//!   learner the same sums; rollups are exact on every backend (ARCHITECTURE.md). On
//!   PostgreSQL the minute rollups trail now by the fold (at most 25 s): the refresher only
//!   learns slots that ended [`SETTLE`] ago.
//! - **Refresh.** [`Store::refresh_baselines`] learns the slots of the week that closed
//!   since the mark (`baseline_state`), each from its occurrences over the last `weeks`
//!   weeks: a new week's sample comes in and the oldest goes out in one step. Every slot
//!   when there is no mark, the mark is older than a week, or the settings changed. Late
//!   readings for a slot already learned count when that slot is next learned (a week
//!   later, before it is used again).
//! - **Rows.** One per (subject kind, subject, metric, slot); a relearned slot replaces
//!   its row, a slot with no sample left is deleted.

use std::collections::{BTreeSet, HashMap};

use telemetry::baseline::{
    self, occurrences, BaselineOn, BaselineRow, DeviceSlotSum, Exclusions, SlotClock, SpreadFloor,
    SLOTS_PER_WEEK, SLOT_MS, WEEK_MS,
};
use telemetry::{EventTime, MetricId};

use crate::operations::{OperationFilter, OperationStatus};
use crate::{Store, StoreError};

/// How long after a slot ends it is learned (minute rollups are whole by then).
pub const SETTLE: i64 = 5 * 60_000;

/// The `[baselines]` settings the learning depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnSettings {
    pub weeks: u32,
    /// Slots learned from fewer samples are not stored.
    pub min_samples: u32,
    pub clock: SlotClock,
    pub floor: SpreadFloor,
    /// Local days not learned from.
    pub holidays: Vec<i64>,
}

impl LearnSettings {
    /// What the mark records: a change relearns every slot.
    pub fn fingerprint(&self) -> String {
        format!(
            "v2 weeks={} min={} clock={} floor={} holidays={:?}",
            self.weeks,
            self.min_samples,
            self.clock.describe(),
            self.floor.relative,
            self.holidays
        )
    }
}

/// What one refresh did.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshReport {
    /// Slots of the week learned (672 for a full refresh).
    pub slots: usize,
    /// Slot sums read from the store.
    pub sums: usize,
    /// Rows written (subject, metric, slot).
    pub rows: usize,
    /// Rows deleted (no sample left).
    pub deleted: u64,
    pub full: bool,
    /// The new mark: slots ending at or before it are learned.
    pub learned_to: EventTime,
}

/// The stored mark.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineMark {
    pub learned_to: EventTime,
    pub settings: String,
}

impl Store {
    /// Per registered device, metric (of `metrics`) and 15-minute bucket starting in `[from, to)`
    /// (buckets aligned on UTC quarter hours, which are local ones for every offset
    /// [`SlotClock`] admits), the count and sum of its readings, with the device's segment.
    pub async fn baseline_slot_sums(
        &self,
        from: EventTime,
        to: EventTime,
        metrics: &[MetricId],
    ) -> Result<Vec<DeviceSlotSum>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let names: Vec<String> = metrics.iter().map(|m| m.as_str().to_owned()).collect();
        dispatch!(self, s => s.baseline_slot_sums(from, to, &names).await)
    }

    /// Store the rows learned at `learned_at` for the `relearned` slots (replacing their
    /// stored rows), in one transaction that deletes the other rows of those slots (their
    /// subjects had no sample left). Answers the rows deleted.
    pub async fn put_baselines(
        &self,
        rows: &[BaselineRow],
        relearned: &[u16],
        learned_at: EventTime,
    ) -> Result<u64, StoreError> {
        dispatch!(self, s => s.put_baselines(rows, relearned, learned_at).await)
    }

    /// The learned slots of one subject's metric, by slot.
    pub async fn baseline_profile(
        &self,
        on: BaselineOn,
        subject: &str,
        metric: &str,
    ) -> Result<Vec<BaselineRow>, StoreError> {
        dispatch!(self, s => s.baseline_profile(on, subject, metric).await)
    }

    /// Every learned slot of `metric` for subjects of `on` (what the anomaly rules hold).
    pub async fn baselines_of_metric(
        &self,
        on: BaselineOn,
        metric: &str,
    ) -> Result<Vec<BaselineRow>, StoreError> {
        dispatch!(self, s => s.baselines_of_metric(on, metric).await)
    }

    pub async fn baseline_mark(&self) -> Result<Option<BaselineMark>, StoreError> {
        dispatch!(self, s => s.baseline_mark().await)
    }

    pub async fn set_baseline_mark(&self, mark: &BaselineMark) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_baseline_mark(mark).await)
    }

    /// Segments closed by operations (active or ended, closing the road) overlapping
    /// `[from, to)`, with their windows.
    pub async fn closures(
        &self,
        from: EventTime,
        to: EventTime,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .operations(&OperationFilter {
                    statuses: vec![OperationStatus::Active, OperationStatus::Ended],
                    from: Some(from),
                    to: Some(to),
                    after: after.clone(),
                    limit: 500,
                    ..Default::default()
                })
                .await?;
            for op in page.operations.iter().filter(|o| o.closes_road) {
                let (a, b) = op.window();
                out.extend(op.segments.iter().map(|s| (s.clone(), a, b)));
            }
            match page.next_cursor {
                Some(c) => after = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Learn the slots that closed since the mark (every slot when the mark is missing,
    /// older than a week or made with other settings) as of `now`, store them and move the
    /// mark. See the module doc.
    pub async fn refresh_baselines(
        &self,
        settings: &LearnSettings,
        now: EventTime,
    ) -> Result<RefreshReport, StoreError> {
        let clock = settings.clock;
        let learned_to = clock.slot_start(EventTime(now.millis() - SETTLE));
        let mark = self.baseline_mark().await?;
        let fingerprint = settings.fingerprint();
        let full = match &mark {
            Some(m) => {
                m.settings != fingerprint
                    || m.learned_to.millis() <= learned_to.millis() - WEEK_MS
                    || m.learned_to > learned_to
            }
            None => true,
        };
        let slots: BTreeSet<usize> = if full {
            (0..SLOTS_PER_WEEK).collect()
        } else {
            let from = mark.as_ref().map_or(learned_to.millis(), |m| m.learned_to.millis());
            (0..(learned_to.millis() - from) / SLOT_MS)
                .map(|i| clock.slot(EventTime(from + i * SLOT_MS)))
                .collect()
        };
        let mut report =
            RefreshReport { slots: slots.len(), sums: 0, rows: 0, deleted: 0, full, learned_to };
        if slots.is_empty() {
            return Ok(report);
        }
        // The time ranges holding the slots' occurrences: one per week when the slots are
        // few and contiguous, else the whole window.
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        if full {
            ranges.push((
                learned_to.millis() - i64::from(settings.weeks) * WEEK_MS,
                learned_to.millis(),
            ));
        } else {
            for &slot in &slots {
                for start in occurrences(clock, slot, settings.weeks, learned_to) {
                    let (a, b) = (start.millis(), start.millis() + SLOT_MS);
                    match ranges.iter_mut().find(|r| r.1 == a || r.0 == b) {
                        Some(r) => *r = (r.0.min(a), r.1.max(b)),
                        None => ranges.push((a, b)),
                    }
                }
            }
        }
        let window = (
            ranges.iter().map(|r| r.0).min().unwrap_or(0),
            ranges.iter().map(|r| r.1).max().unwrap_or(0),
        );
        let exclusions = Exclusions {
            holidays: settings.holidays.clone(),
            closures: self.closures(EventTime(window.0), EventTime(window.1)).await?,
        };
        let mut sums = Vec::new();
        for (a, b) in &ranges {
            sums.extend(
                self.baseline_slot_sums(EventTime(*a), EventTime(*b), &baseline::DEVICE_METRICS)
                    .await?,
            );
        }
        report.sums = sums.len();
        let segment_of: HashMap<String, Option<String>> =
            sums.iter().map(|s| (s.device.clone(), s.segment.clone())).collect();
        let means: Vec<_> = baseline::slot_means(&sums)
            .into_iter()
            .filter(|m| slots.contains(&clock.slot(m.bucket)))
            .collect();
        let rows = baseline::learn(&means, clock, &exclusions, settings.floor, &|d| {
            segment_of.get(d).cloned().flatten()
        })
        .into_iter()
        .filter(|r| r.samples >= settings.min_samples)
        .collect::<Vec<_>>();
        let relearned: Vec<u16> = slots.iter().map(|&s| s as u16).collect();
        report.deleted = self.put_baselines(&rows, &relearned, now).await?;
        self.set_baseline_mark(&BaselineMark { learned_to, settings: fingerprint }).await?;
        report.rows = rows.len();
        Ok(report)
    }
}

/// A stored subject kind.
pub(crate) fn parse_on(s: &str) -> Result<BaselineOn, StoreError> {
    BaselineOn::parse(s)
        .ok_or_else(|| StoreError::Corrupt { what: "baseline subject kind", value: s.to_owned() })
}

/// A stored metric name as a catalogue metric.
pub(crate) fn parse_metric(s: &str) -> Result<MetricId, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt { what: "metric", value: s.to_owned() })
}
