//! Rollups: partials per (device, metric, bucket), built from [`telemetry::Partial`]s, and
//! their upkeep in the rollup levels and `latest` (the invariants are the crate's: exact
//! rollups, real-time hours and days). On PostgreSQL the rollup merger
//! ([`crate::maintenance::run_rollup_merger`], `pg/rollup.rs`) folds closed time once
//! from its live readings, in steps, and merges the committed batches of late readings; history
//! reads the minutes not folded yet from the raw readings. SQLite merges each batch inside
//! its own transaction (`sqlite/rollup.rs`).

use std::collections::BTreeMap;

use telemetry::{DeviceId, EventTime, MetricId, Partial, Reading};

use crate::{LatestValue, MergeOutcome, Store, StoreError};

/// Key of a rollup row.
pub type RollupKey = (DeviceId, MetricId, EventTime);

/// Partials per (device, metric, bucket start) of `bucket_ms`-wide buckets.
pub fn partials<'a>(
    readings: impl IntoIterator<Item = &'a Reading>,
    bucket_ms: i64,
) -> BTreeMap<RollupKey, Partial> {
    partials_by(readings, bucket_ms, |r| r.device.clone())
}

/// Partials per (`key` of the reading, metric, bucket start), e.g. per road segment.
pub fn partials_by<'a, K: Ord>(
    readings: impl IntoIterator<Item = &'a Reading>,
    bucket_ms: i64,
    key: impl Fn(&Reading) -> K,
) -> BTreeMap<(K, MetricId, EventTime), Partial> {
    let mut out = BTreeMap::new();
    for r in readings {
        let p = Partial::of(r.time, r.value);
        out.entry((key(r), r.metric, r.time.floor(bucket_ms)))
            .and_modify(|acc: &mut Partial| acc.merge(&p))
            .or_insert(p);
    }
    out
}

/// The rollup merger's side of [`Store`]: see the module doc.
impl Store {
    /// Fold the readings of up to `max_batches` committed batches into the rollup tables
    /// and `latest`, in one transaction. Readings are counted in rollups once this has run
    /// after their batch committed (SQLite merges inside the batch: a no-op there).
    pub async fn merge_rollups(&self, max_batches: usize) -> Result<MergeOutcome, StoreError> {
        dispatch!(self, s => s.merge_rollups(max_batches).await)
    }

    /// Fold closed hours and days into the stored rollups (PostgreSQL without
    /// TimescaleDB: [`crate::PgStore::fold_closed_rollups`]); 0 elsewhere.
    pub async fn fold_closed_rollups(&self, now: EventTime) -> Result<u64, StoreError> {
        dispatch!(self, s => s.fold_closed_rollups(now).await)
    }

    /// Seal the minutes before `until` and fold the sealed ones into the rollups and
    /// `latest` (PostgreSQL: [`crate::PgStore::fold_minutes`]); nothing elsewhere.
    pub async fn fold_minutes(&self, until: EventTime) -> Result<MergeOutcome, StoreError> {
        dispatch!(self, s => s.fold_minutes(until).await)
    }

    /// [`Store::folded_until`] as this process last read or moved it, without a query
    /// (`None` before its first fold, and on SQLite); for the merger's metrics.
    pub fn folded_mark(&self) -> Option<EventTime> {
        dispatch!(self, s => s.folded_mark())
    }

    /// Where the rollups end: they hold every reading before this instant, and history
    /// reads raw readings from it on. `None` where they hold every reading (SQLite).
    pub async fn folded_until(&self) -> Result<Option<EventTime>, StoreError> {
        dispatch!(self, s => s.folded_until().await)
    }

    /// Bring the rollups and `latest` up to every reading stored so far: merge the
    /// pending batches and seal and fold up to the newest reading (or now, if later).
    /// Readings written later with earlier times take the late path. For imports,
    /// benchmarks and tests; the rollup merger folds a step once it has closed.
    pub async fn catch_up_rollups(&self) -> Result<MergeOutcome, StoreError> {
        let mut total = self.merge_all_rollups().await?;
        let newest = dispatch!(self, s => s.newest_unfolded().await)?;
        let until =
            EventTime::now().max(newest.map_or(EventTime(i64::MIN), |t| EventTime(t.millis() + 1)));
        let folded = self.fold_minutes(until).await?;
        total.readings += folded.readings;
        total.rollup_rows += folded.rollup_rows;
        Ok(total)
    }

    /// Merge until no committed batch is pending.
    pub async fn merge_all_rollups(&self) -> Result<MergeOutcome, StoreError> {
        let mut total = MergeOutcome::default();
        loop {
            let m = self.merge_rollups(200).await?;
            total.batches += m.batches;
            total.readings += m.readings;
            total.rollup_rows += m.rollup_rows;
            if m.batches == 0 {
                return Ok(total);
            }
        }
    }

    /// Latest values, optionally of one device and/or one metric.
    pub async fn latest(
        &self,
        device: Option<&DeviceId>,
        metric: Option<MetricId>,
    ) -> Result<Vec<LatestValue>, StoreError> {
        dispatch!(self, s => s.latest(device, metric).await)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn reading(dev: u8, t: i64, v: i32) -> Reading {
        Reading {
            device: DeviceId::parse(&format!("d{dev}")).unwrap(),
            metric: MetricId::SpeedKmh,
            time: EventTime(t),
            value: f64::from(v),
            seq: None,
        }
    }

    proptest! {
        /// Any split of the readings into batches merges to the aggregate of all of them.
        #[test]
        fn split_batches_merge_to_the_whole(
            rs in prop::collection::vec((0u8..3, 0i64..600_000, -1000i32..1000), 1..200),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let readings: Vec<_> = rs.iter().map(|&(d, t, v)| reading(d, t, v)).collect();
            let whole = partials(&readings, 60_000);
            let mut idx: Vec<usize> = cuts.iter().map(|c| c.index(readings.len())).collect();
            idx.push(0);
            idx.push(readings.len());
            idx.sort_unstable();
            let mut merged: BTreeMap<RollupKey, Partial> = BTreeMap::new();
            for w in idx.windows(2).rev() {
                for (k, p) in partials(&readings[w[0]..w[1]], 60_000) {
                    merged.entry(k).and_modify(|acc| acc.merge(&p)).or_insert(p);
                }
            }
            prop_assert_eq!(merged.len(), whole.len());
            for (k, p) in &whole {
                let m = merged[k];
                prop_assert_eq!(m.count, p.count);
                prop_assert_eq!(m.sum, p.sum); // integer-valued sums are exact in f64
                prop_assert_eq!(m.min, p.min);
                prop_assert_eq!(m.max, p.max);
                prop_assert_eq!(m.last_time, p.last_time);
                prop_assert_eq!(m.last_value, p.last_value);
            }
        }
    }
}
