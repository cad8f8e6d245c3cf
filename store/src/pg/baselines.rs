//! Learned baselines on PostgreSQL (see [`crate::baselines`]).

use sqlx::Row;
use telemetry::baseline::{BaselineOn, BaselineRow, DeviceSlotSum};
use telemetry::EventTime;

use super::{et, ts, PgStore};
use crate::baselines::{parse_metric, parse_on, BaselineMark};
use crate::StoreError;

/// Ranges up to this long are read through the primary key (see `baseline_slot_sums`).
const NARROW_MS: i64 = 6 * 3_600_000;

/// Rows per statement when storing.
const CHUNK: usize = 10_000;

fn row(r: &sqlx::postgres::PgRow) -> Result<BaselineRow, StoreError> {
    Ok(BaselineRow {
        on: parse_on(r.try_get("subject_kind")?)?,
        subject: r.try_get("subject")?,
        metric: r.try_get("metric")?,
        slot: u16::try_from(r.try_get::<i16, _>("slot")?).unwrap_or(0),
        centre: r.try_get("centre")?,
        spread: r.try_get("spread")?,
        samples: u32::try_from(r.try_get::<i32, _>("samples")?).unwrap_or(0),
    })
}

impl PgStore {
    pub(crate) async fn baseline_slot_sums(
        &self,
        from: EventTime,
        to: EventTime,
        metrics: &[String],
    ) -> Result<Vec<DeviceSlotSum>, StoreError> {
        // A narrow range (one slot of a refresh) is read through the primary key (device,
        // metric, bucket) from the registered devices and each metric; a wide one (a full
        // learning) in one pass over the range. The same rows either way.
        let sql = if to.millis() - from.millis() <= NARROW_MS {
            "SELECT r.device, d.segment_id, r.metric,
                    date_bin('15 minutes', r.bucket, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS b,
                    sum(r.count)::bigint AS count, sum(r.sum) AS sum
             FROM devices d CROSS JOIN unnest($3::text[]) AS m(metric)
             JOIN rollup_1m r ON r.device = d.id AND r.metric = m.metric
             WHERE r.bucket >= $1 AND r.bucket < $2
             GROUP BY 1, 2, 3, 4"
        } else {
            "SELECT r.device, d.segment_id, r.metric,
                    date_bin('15 minutes', r.bucket, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS b,
                    sum(r.count)::bigint AS count, sum(r.sum) AS sum
             FROM rollup_1m r JOIN devices d ON d.id = r.device
             WHERE r.bucket >= $1 AND r.bucket < $2 AND r.metric = ANY($3)
             GROUP BY 1, 2, 3, 4"
        };
        let rows = sqlx::query(sql)
            .bind(ts(from))
            .bind(ts(to))
            .bind(metrics)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceSlotSum {
                    device: r.try_get("device")?,
                    segment: r.try_get("segment_id")?,
                    metric: parse_metric(r.try_get("metric")?)?,
                    bucket: et(r.try_get("b")?),
                    count: u64::try_from(r.try_get::<i64, _>("count")?).unwrap_or(0),
                    sum: r.try_get("sum")?,
                })
            })
            .collect()
    }

    pub(crate) async fn put_baselines(
        &self,
        rows: &[BaselineRow],
        relearned: &[u16],
        learned_at: EventTime,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(CHUNK) {
            let kinds: Vec<&str> = chunk.iter().map(|r| r.on.as_str()).collect();
            let subjects: Vec<&str> = chunk.iter().map(|r| r.subject.as_str()).collect();
            let metrics: Vec<&str> = chunk.iter().map(|r| r.metric.as_str()).collect();
            let slots: Vec<i16> = chunk.iter().map(|r| r.slot as i16).collect();
            let centres: Vec<f64> = chunk.iter().map(|r| r.centre).collect();
            let spreads: Vec<f64> = chunk.iter().map(|r| r.spread).collect();
            let samples: Vec<i32> =
                chunk.iter().map(|r| i32::try_from(r.samples).unwrap_or(i32::MAX)).collect();
            sqlx::query(
                "INSERT INTO baselines (subject_kind, subject, metric, slot, centre, spread, samples, learned_at)
                 SELECT k, s, m, slot, c, sp, n, $8
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::float8[], $6::float8[], $7::int[])
                      AS e(k, s, m, slot, c, sp, n)
                 ON CONFLICT (subject_kind, subject, metric, slot) DO UPDATE
                 SET centre = excluded.centre, spread = excluded.spread, samples = excluded.samples,
                     learned_at = excluded.learned_at",
            )
            .bind(kinds)
            .bind(subjects)
            .bind(metrics)
            .bind(slots)
            .bind(centres)
            .bind(spreads)
            .bind(samples)
            .bind(ts(learned_at))
            .execute(&mut *tx)
            .await?;
        }
        let slots: Vec<i16> = relearned.iter().map(|&s| s as i16).collect();
        let deleted =
            sqlx::query("DELETE FROM baselines WHERE slot = ANY($1) AND learned_at <> $2")
                .bind(slots)
                .bind(ts(learned_at))
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }

    pub(crate) async fn baseline_profile(
        &self,
        on: BaselineOn,
        subject: &str,
        metric: &str,
    ) -> Result<Vec<BaselineRow>, StoreError> {
        sqlx::query(
            "SELECT subject_kind, subject, metric, slot, centre, spread, samples FROM baselines
             WHERE subject_kind = $1 AND subject = $2 AND metric = $3 ORDER BY slot",
        )
        .bind(on.as_str())
        .bind(subject)
        .bind(metric)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(row)
        .collect()
    }

    pub(crate) async fn baselines_of_metric(
        &self,
        on: BaselineOn,
        metric: &str,
    ) -> Result<Vec<BaselineRow>, StoreError> {
        sqlx::query(
            "SELECT subject_kind, subject, metric, slot, centre, spread, samples FROM baselines
             WHERE subject_kind = $1 AND metric = $2 ORDER BY subject, slot",
        )
        .bind(on.as_str())
        .bind(metric)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(row)
        .collect()
    }

    pub(crate) async fn baseline_mark(&self) -> Result<Option<BaselineMark>, StoreError> {
        let row: Option<(time::OffsetDateTime, String)> =
            sqlx::query_as("SELECT learned_to, settings FROM baseline_state WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(t, settings)| BaselineMark { learned_to: et(t), settings }))
    }

    pub(crate) async fn set_baseline_mark(&self, mark: &BaselineMark) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO baseline_state (id, learned_to, settings) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET learned_to = excluded.learned_to, settings = excluded.settings",
        )
        .bind(ts(mark.learned_to))
        .bind(&mark.settings)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
