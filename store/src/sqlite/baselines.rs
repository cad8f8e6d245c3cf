//! Learned baselines on SQLite (see [`crate::baselines`]).

use sqlx::Row;
use telemetry::baseline::{BaselineOn, BaselineRow, DeviceSlotSum, SLOT_MS};
use telemetry::EventTime;

use super::SqliteStore;
use crate::baselines::{parse_metric, parse_on, BaselineMark, Pack};
use crate::StoreError;

fn pack(r: &sqlx::sqlite::SqliteRow) -> Result<Pack, StoreError> {
    Ok(Pack {
        on: parse_on(r.try_get("subject_kind")?)?,
        subject: r.try_get("subject")?,
        metric: r.try_get("metric")?,
        day: u8::try_from(r.try_get::<i64, _>("day")?).unwrap_or(u8::MAX),
        slots: r.try_get("slots")?,
    })
}

fn rows(packs: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<BaselineRow>, StoreError> {
    let mut out = Vec::new();
    for r in packs {
        out.extend(pack(r)?.rows()?);
    }
    Ok(out)
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

    pub(crate) async fn baseline_fleet(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        Ok(sqlx::query_as("SELECT id, segment_id FROM devices").fetch_all(&self.pool).await?)
    }

    pub(crate) async fn baseline_summed(
        &self,
        from: EventTime,
        to: EventTime,
    ) -> Result<Vec<i64>, StoreError> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT bucket_ms FROM baseline_sums WHERE bucket_ms >= ? AND bucket_ms < ? ORDER BY bucket_ms",
        )
        .bind(from.millis())
        .bind(to.millis())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(b,)| b).collect())
    }

    pub(crate) async fn baseline_sums(
        &self,
        buckets: &[i64],
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for &b in buckets {
            let row: Option<(i64, Vec<u8>)> =
                sqlx::query_as("SELECT bucket_ms, sums FROM baseline_sums WHERE bucket_ms = ?")
                    .bind(b)
                    .fetch_optional(&self.pool)
                    .await?;
            out.extend(row);
        }
        Ok(out)
    }

    pub(crate) async fn put_baseline_sums(
        &self,
        blobs: &[(i64, Vec<u8>)],
        at: EventTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for (bucket, sums) in blobs {
            sqlx::query(
                "INSERT INTO baseline_sums (bucket_ms, summed_at_ms, sums) VALUES (?, ?, ?)
                 ON CONFLICT (bucket_ms) DO UPDATE
                 SET summed_at_ms = excluded.summed_at_ms, sums = excluded.sums",
            )
            .bind(bucket)
            .bind(at.millis())
            .bind(sums.as_slice())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn prune_baseline_sums(&self, before: EventTime) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM baseline_sums WHERE bucket_ms < ?")
            .bind(before.millis())
            .execute(&self.writer)
            .await?
            .rows_affected())
    }

    pub(crate) async fn baseline_packs(&self, days: &[u8]) -> Result<Vec<Pack>, StoreError> {
        let mut out = Vec::new();
        for &day in days {
            for r in sqlx::query(
                "SELECT subject_kind, subject, metric, day, slots FROM baselines WHERE day = ?",
            )
            .bind(i64::from(day))
            .fetch_all(&self.pool)
            .await?
            .iter()
            {
                out.push(pack(r)?);
            }
        }
        Ok(out)
    }

    /// Replace every stored row of `days` with `packs` (one transaction).
    pub(crate) async fn replace_baseline_packs(
        &self,
        packs: &[Pack],
        days: &[u8],
        learned_at: EventTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for &day in days {
            sqlx::query("DELETE FROM baselines WHERE day = ?")
                .bind(i64::from(day))
                .execute(&mut *tx)
                .await?;
        }
        for p in packs {
            sqlx::query(
                "INSERT INTO baselines (subject_kind, subject, metric, day, slots, learned_at_ms)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (subject_kind, subject, metric, day) DO UPDATE
                 SET slots = excluded.slots, learned_at_ms = excluded.learned_at_ms",
            )
            .bind(p.on.as_str())
            .bind(&p.subject)
            .bind(&p.metric)
            .bind(i64::from(p.day))
            .bind(p.slots.as_slice())
            .bind(learned_at.millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn baseline_profile(
        &self,
        on: BaselineOn,
        subject: &str,
        metric: &str,
    ) -> Result<Vec<BaselineRow>, StoreError> {
        let packs = sqlx::query(
            "SELECT subject_kind, subject, metric, day, slots FROM baselines
             WHERE subject_kind = ? AND subject = ? AND metric = ? ORDER BY day",
        )
        .bind(on.as_str())
        .bind(subject)
        .bind(metric)
        .fetch_all(&self.pool)
        .await?;
        rows(&packs)
    }

    pub(crate) async fn baselines_of_metric(
        &self,
        on: BaselineOn,
        metric: &str,
    ) -> Result<Vec<BaselineRow>, StoreError> {
        let packs = sqlx::query(
            "SELECT subject_kind, subject, metric, day, slots FROM baselines
             WHERE subject_kind = ? AND metric = ? ORDER BY subject, day",
        )
        .bind(on.as_str())
        .bind(metric)
        .fetch_all(&self.pool)
        .await?;
        rows(&packs)
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
