//! Learned baselines on SQLite (see [`crate::baselines`]).

use sqlx::Row;
use telemetry::baseline::{BaselineOn, BaselineRow, DeviceSlotSum, SLOT_MS};
use telemetry::EventTime;

use super::SqliteStore;
use crate::baselines::{parse_metric, parse_on, BaselineMark};
use crate::StoreError;

fn row(r: &sqlx::sqlite::SqliteRow) -> Result<BaselineRow, StoreError> {
    Ok(BaselineRow {
        on: parse_on(r.try_get("subject_kind")?)?,
        subject: r.try_get("subject")?,
        metric: r.try_get("metric")?,
        slot: u16::try_from(r.try_get::<i64, _>("slot")?).unwrap_or(0),
        centre: r.try_get("centre")?,
        spread: r.try_get("spread")?,
        samples: u32::try_from(r.try_get::<i64, _>("samples")?).unwrap_or(0),
    })
}

impl SqliteStore {
    pub(crate) async fn baseline_slot_sums(
        &self,
        from: EventTime,
        to: EventTime,
        metrics: &[String],
    ) -> Result<Vec<DeviceSlotSum>, StoreError> {
        let mut out = Vec::new();
        for metric in metrics {
            let rows = sqlx::query(
                "SELECT r.device, d.segment_id, r.metric,
                        (r.bucket_ms - ((r.bucket_ms % ?4) + ?4) % ?4) AS b,
                        sum(r.count) AS count, sum(r.sum) AS sum
                 FROM devices d JOIN rollup_1m r ON r.device = d.id
                 WHERE r.metric = ?3 AND r.bucket_ms >= ?1 AND r.bucket_ms < ?2
                 GROUP BY 1, 2, 3, 4",
            )
            .bind(from.millis())
            .bind(to.millis())
            .bind(metric)
            .bind(SLOT_MS)
            .fetch_all(&self.pool)
            .await?;
            for r in &rows {
                out.push(DeviceSlotSum {
                    device: r.try_get("device")?,
                    segment: r.try_get("segment_id")?,
                    metric: parse_metric(r.try_get("metric")?)?,
                    bucket: EventTime(r.try_get("b")?),
                    count: u64::try_from(r.try_get::<i64, _>("count")?).unwrap_or(0),
                    sum: r.try_get("sum")?,
                });
            }
        }
        Ok(out)
    }

    pub(crate) async fn put_baselines(
        &self,
        rows: &[BaselineRow],
        relearned: &[u16],
        learned_at: EventTime,
    ) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO baselines (subject_kind, subject, metric, slot, centre, spread, samples, learned_at_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (subject_kind, subject, metric, slot) DO UPDATE
                 SET centre = excluded.centre, spread = excluded.spread, samples = excluded.samples,
                     learned_at_ms = excluded.learned_at_ms",
            )
            .bind(r.on.as_str())
            .bind(&r.subject)
            .bind(&r.metric)
            .bind(i64::from(r.slot))
            .bind(r.centre)
            .bind(r.spread)
            .bind(i64::from(r.samples))
            .bind(learned_at.millis())
            .execute(&mut *tx)
            .await?;
        }
        let mut deleted = 0;
        for slot in relearned {
            deleted += sqlx::query("DELETE FROM baselines WHERE slot = ? AND learned_at_ms <> ?")
                .bind(i64::from(*slot))
                .bind(learned_at.millis())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
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
             WHERE subject_kind = ? AND subject = ? AND metric = ? ORDER BY slot",
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
             WHERE subject_kind = ? AND metric = ? ORDER BY subject, slot",
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
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT learned_to_ms, settings FROM baseline_state WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(t, settings)| BaselineMark { learned_to: EventTime(t), settings }))
    }

    pub(crate) async fn set_baseline_mark(&self, mark: &BaselineMark) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO baseline_state (id, learned_to_ms, settings) VALUES (1, ?, ?)
             ON CONFLICT (id) DO UPDATE SET learned_to_ms = excluded.learned_to_ms, settings = excluded.settings",
        )
        .bind(mark.learned_to.millis())
        .bind(&mark.settings)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}
