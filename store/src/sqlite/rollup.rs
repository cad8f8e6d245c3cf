//! Rollups on SQLite (see [`crate::rollup`]): every level, per device and per road
//! segment, and `latest` are merged from the readings a batch really inserted, inside the
//! batch's transaction, so nothing is ever pending and the merger has nothing to do.

use std::collections::HashMap;

use sqlx::Row;
use telemetry::{DeviceId, EventTime, MetricId, Partial, Reading};

use super::SqliteStore;
use crate::history::Resolution;
use crate::rollup::{partials, partials_by};
use crate::{parse_device, parse_metric, LatestValue, MergeOutcome, StoreError};

impl SqliteStore {
    /// Rollups are merged inside each batch's transaction: nothing is ever pending.
    pub async fn merge_rollups(&self, _max_batches: usize) -> Result<MergeOutcome, StoreError> {
        Ok(MergeOutcome::default())
    }

    /// No real-time rollups to fold here: the batch merged every level.
    pub(crate) async fn fold_closed_rollups(&self, _now: EventTime) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// No minutes to seal or fold: the batch merged every level.
    pub(crate) async fn fold_minutes(&self, _until: EventTime) -> Result<MergeOutcome, StoreError> {
        Ok(MergeOutcome::default())
    }

    /// The rollups hold every reading: no mark.
    pub(crate) fn folded_mark(&self) -> Option<EventTime> {
        None
    }

    /// The rollups hold every reading: nothing is read raw in their place.
    pub(crate) async fn folded_until(&self) -> Result<Option<EventTime>, StoreError> {
        Ok(None)
    }

    /// Nothing is left unfolded.
    pub(crate) async fn newest_unfolded(&self) -> Result<Option<EventTime>, StoreError> {
        Ok(None)
    }

    pub async fn latest(
        &self,
        device: Option<&DeviceId>,
        metric: Option<MetricId>,
    ) -> Result<Vec<LatestValue>, StoreError> {
        let rows = sqlx::query(
            "SELECT device, metric, time_ms, value FROM latest
             WHERE (?1 IS NULL OR device = ?1) AND (?2 IS NULL OR metric = ?2) ORDER BY device, metric",
        )
        .bind(device.map(DeviceId::as_str))
        .bind(metric.map(MetricId::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(LatestValue {
                    device: parse_device(row.try_get("device")?)?,
                    metric: parse_metric(row.try_get("metric")?)?,
                    time: EventTime(row.try_get("time_ms")?),
                    value: row.try_get("value")?,
                })
            })
            .collect()
    }
}

/// Merge the readings a batch inserted into every rollup level (per device, and per road
/// segment for hours and days) and into `latest`, in the batch's transaction.
pub(super) async fn merge_inserted(
    tx: &mut sqlx::SqliteConnection,
    inserted: &[&Reading],
) -> Result<(), StoreError> {
    let segments = if inserted.is_empty() { HashMap::new() } else { device_segments(tx).await? };
    for level in Resolution::ROLLUPS {
        let width = level.bucket_ms().unwrap_or(i64::MAX);
        for ((device, metric, bucket), p) in partials(inserted.iter().copied(), width) {
            merge_rollup_row(tx, level.table(), "device", device.as_str(), metric, bucket, &p)
                .await?;
        }
        let Some(table) = level.segment_table() else { continue };
        let per_segment = partials_by(inserted.iter().copied(), width, |r| {
            segments.get(r.device.as_str()).map_or("", String::as_str)
        });
        for ((segment, metric, bucket), p) in per_segment {
            merge_rollup_row(tx, table, "segment", segment, metric, bucket, &p).await?;
        }
    }
    // One bucket spanning all time: the newest inserted value per (device, metric).
    for ((device, metric, _), p) in partials(inserted.iter().copied(), i64::MAX) {
        sqlx::query(
            "INSERT INTO latest AS l (device, metric, time_ms, value) VALUES (?, ?, ?, ?)
             ON CONFLICT (device, metric) DO UPDATE SET time_ms = excluded.time_ms, value = excluded.value
             WHERE excluded.time_ms >= l.time_ms",
        )
        .bind(device.as_str())
        .bind(metric.as_str())
        .bind(p.last_time.millis())
        .bind(p.last_value)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Device → segment links of every device with one.
async fn device_segments(
    tx: &mut sqlx::SqliteConnection,
) -> Result<HashMap<String, String>, StoreError> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, segment_id FROM devices WHERE segment_id IS NOT NULL")
            .fetch_all(&mut *tx)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Merge one partial into a rollup row keyed by (`key`, metric, bucket).
async fn merge_rollup_row(
    tx: &mut sqlx::SqliteConnection,
    table: &str,
    key: &str,
    id: &str,
    metric: MetricId,
    bucket: EventTime,
    p: &Partial,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO {table} AS r (bucket_ms, {key}, metric, count, sum, min, max, last_value, last_time_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT ({key}, metric, bucket_ms) DO UPDATE SET
           count = r.count + excluded.count,
           sum = r.sum + excluded.sum,
           min = min(r.min, excluded.min),
           max = max(r.max, excluded.max),
           last_value = CASE WHEN excluded.last_time_ms > r.last_time_ms
                               OR (excluded.last_time_ms = r.last_time_ms AND excluded.last_value > r.last_value)
                             THEN excluded.last_value ELSE r.last_value END,
           last_time_ms = max(r.last_time_ms, excluded.last_time_ms)"
    ))
    .bind(bucket.millis())
    .bind(id)
    .bind(metric.as_str())
    .bind(p.count)
    .bind(p.sum)
    .bind(p.min)
    .bind(p.max)
    .bind(p.last_value)
    .bind(p.last_time.millis())
    .execute(&mut *tx)
    .await?;
    Ok(())
}
