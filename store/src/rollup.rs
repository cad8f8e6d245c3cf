//! Rollup partials per (device, metric, bucket), built from [`telemetry::Partial`]s.

use std::collections::BTreeMap;

use telemetry::{DeviceId, EventTime, MetricId, Partial, Reading};

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
