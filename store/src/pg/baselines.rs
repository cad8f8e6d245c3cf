//! Learned baselines on PostgreSQL (see [`crate::baselines`]).

use sqlx::Row;
use telemetry::baseline::{BaselineOn, BaselineRow, DeviceSlotSum};
use telemetry::EventTime;

use super::{et, ts, PgStore};
use crate::baselines::{parse_metric, parse_on, BaselineMark, Pack};
use crate::StoreError;

/// Ranges up to this long are read through the primary key (see `baseline_slot_sums`).
const NARROW_MS: i64 = 6 * 3_600_000;

/// Rows per statement when storing (1.6 kB each).
const CHUNK: usize = 2_000;

fn pack(r: &sqlx::postgres::PgRow) -> Result<Pack, StoreError> {
    Ok(Pack {
        on: parse_on(r.try_get("subject_kind")?)?,
        subject: r.try_get("subject")?,
        metric: r.try_get("metric")?,
        day: u8::try_from(r.try_get::<i16, _>("day")?).unwrap_or(u8::MAX),
        slots: r.try_get("slots")?,
    })
}

fn rows(packs: &[sqlx::postgres::PgRow]) -> Result<Vec<BaselineRow>, StoreError> {
    let mut out = Vec::new();
    for r in packs {
        out.extend(pack(r)?.rows()?);
    }
    Ok(out)
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

    pub(crate) async fn baseline_fleet(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        Ok(sqlx::query_as("SELECT id, segment_id FROM devices").fetch_all(&self.pool).await?)
    }

    pub(crate) async fn baseline_summed(
        &self,
        from: EventTime,
        to: EventTime,
    ) -> Result<Vec<i64>, StoreError> {
        let rows: Vec<(time::OffsetDateTime,)> = sqlx::query_as(
            "SELECT bucket FROM baseline_sums WHERE bucket >= $1 AND bucket < $2 ORDER BY bucket",
        )
        .bind(ts(from))
        .bind(ts(to))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(b,)| et(b).millis()).collect())
    }

    pub(crate) async fn baseline_sums(
        &self,
        buckets: &[i64],
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let buckets: Vec<time::OffsetDateTime> =
            buckets.iter().map(|&b| ts(EventTime(b))).collect();
        let rows: Vec<(time::OffsetDateTime, Vec<u8>)> =
            sqlx::query_as("SELECT bucket, sums FROM baseline_sums WHERE bucket = ANY($1)")
                .bind(buckets)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(b, s)| (et(b).millis(), s)).collect())
    }

    pub(crate) async fn put_baseline_sums(
        &self,
        blobs: &[(i64, Vec<u8>)],
        at: EventTime,
    ) -> Result<(), StoreError> {
        let buckets: Vec<time::OffsetDateTime> =
            blobs.iter().map(|(b, _)| ts(EventTime(*b))).collect();
        let sums: Vec<&[u8]> = blobs.iter().map(|(_, s)| s.as_slice()).collect();
        sqlx::query(
            "INSERT INTO baseline_sums (bucket, summed_at, sums)
             SELECT b, $3, s FROM unnest($1::timestamptz[], $2::bytea[]) AS u(b, s)
             ON CONFLICT (bucket) DO UPDATE SET summed_at = excluded.summed_at, sums = excluded.sums",
        )
        .bind(buckets)
        .bind(sums)
        .bind(ts(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn prune_baseline_sums(&self, before: EventTime) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM baseline_sums WHERE bucket < $1")
            .bind(ts(before))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    pub(crate) async fn baseline_packs(&self, days: &[u8]) -> Result<Vec<Pack>, StoreError> {
        let days: Vec<i16> = days.iter().map(|&d| i16::from(d)).collect();
        sqlx::query(
            "SELECT subject_kind, subject, metric, day, slots FROM baselines WHERE day = ANY($1)",
        )
        .bind(days)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(pack)
        .collect()
    }

    /// Replace every stored row of `days` with `packs` (one transaction, one writer at a
    /// time).
    pub(crate) async fn replace_baseline_packs(
        &self,
        packs: &[Pack],
        days: &[u8],
        learned_at: EventTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('sccr.baselines'))")
            .execute(&mut *tx)
            .await?;
        let all_days: Vec<i16> = days.iter().map(|&d| i16::from(d)).collect();
        if all_days.len() == 7 {
            sqlx::query("DELETE FROM baselines").execute(&mut *tx).await?;
        } else {
            sqlx::query("DELETE FROM baselines WHERE day = ANY($1)")
                .bind(all_days)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in packs.chunks(CHUNK) {
            let kinds: Vec<&str> = chunk.iter().map(|p| p.on.as_str()).collect();
            let subjects: Vec<&str> = chunk.iter().map(|p| p.subject.as_str()).collect();
            let metrics: Vec<&str> = chunk.iter().map(|p| p.metric.as_str()).collect();
            let days: Vec<i16> = chunk.iter().map(|p| i16::from(p.day)).collect();
            let slots: Vec<&[u8]> = chunk.iter().map(|p| p.slots.as_slice()).collect();
            sqlx::query(
                "INSERT INTO baselines (subject_kind, subject, metric, day, slots, learned_at)
                 SELECT k, s, m, d, sl, $6
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::bytea[])
                      AS e(k, s, m, d, sl)
                 ON CONFLICT (subject_kind, subject, metric, day) DO UPDATE
                 SET slots = excluded.slots, learned_at = excluded.learned_at",
            )
            .bind(kinds)
            .bind(subjects)
            .bind(metrics)
            .bind(days)
            .bind(slots)
            .bind(ts(learned_at))
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
             WHERE subject_kind = $1 AND subject = $2 AND metric = $3 ORDER BY day",
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
             WHERE subject_kind = $1 AND metric = $2 ORDER BY subject, day",
        )
        .bind(on.as_str())
        .bind(metric)
        .fetch_all(&self.pool)
        .await?;
        rows(&packs)
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
