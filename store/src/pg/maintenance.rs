//! Maintenance on PostgreSQL (see [`crate::maintenance`]): daily partitions of `readings`
//! ahead of time and retention (native mode), TimescaleDB's policies and jobs, and the
//! retention horizons both record.

use sqlx::Row;
use telemetry::EventTime;
use time::OffsetDateTime;

use super::{et, ts, PgStore};
use crate::history::{Horizons, Resolution, DAY_MS};
use crate::{MaintenanceReport, StorageMode, StoreError};

/// Days since the Unix epoch of an event time (UTC).
pub(super) fn day_of(t: EventTime) -> i64 {
    t.millis().div_euclid(crate::history::DAY_MS)
}

fn date_of_day(day: i64) -> Result<time::Date, StoreError> {
    // 2,440,588 is the Julian day number of 1970-01-01.
    i32::try_from(day + 2_440_588).ok().and_then(|j| time::Date::from_julian_day(j).ok()).ok_or(
        StoreError::InvalidQuery { param: "time", message: format!("day {day} is out of range") },
    )
}

pub(super) fn partition_name(day: i64) -> Result<String, StoreError> {
    let d = date_of_day(day)?;
    Ok(format!("readings_p{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day()))
}

/// The day a partition named by [`partition_name`] holds.
fn partition_day(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("readings_p")?;
    if digits.len() != 8 {
        return None;
    }
    let (y, m, d) =
        (digits[..4].parse().ok()?, digits[4..6].parse::<u8>().ok()?, digits[6..].parse().ok()?);
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()?;
    Some(i64::from(date.to_julian_day()) - 2_440_588)
}

impl PgStore {
    /// Make sure the daily partitions holding these days exist (native mode).
    pub(super) async fn ensure_partitions(
        &self,
        days: impl IntoIterator<Item = i64>,
    ) -> Result<Vec<String>, StoreError> {
        let missing: Vec<i64> = {
            let known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
            let mut m: Vec<i64> = days.into_iter().filter(|d| !known.contains(d)).collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        let mut created = Vec::new();
        for day in missing {
            let date = date_of_day(day)?;
            let new: bool = sqlx::query_scalar("SELECT sccr_ensure_readings_partition($1)")
                .bind(date)
                .fetch_one(&self.pool)
                .await?;
            if new {
                created.push(partition_name(day)?);
            }
            self.partitions.lock().unwrap_or_else(|p| p.into_inner()).insert(day);
        }
        Ok(created)
    }

    pub async fn maintain(&self, now: EventTime) -> Result<MaintenanceReport, StoreError> {
        let mut report = MaintenanceReport::default();
        let r = self.options.retention;
        // Segment rollups are plain tables in every mode.
        for (level, keep) in [(Resolution::Hour, r.rollup_1h), (Resolution::Day, r.rollup_1d)] {
            let (Some(keep), Some(table)) = (keep, level.segment_table()) else { continue };
            let cutoff = EventTime(now.millis() - keep.as_millis() as i64);
            let done = sqlx::query(&format!("DELETE FROM {table} WHERE bucket < $1"))
                .bind(ts(cutoff))
                .execute(&self.pool)
                .await?;
            report.rollup_rows_deleted += done.rows_affected();
        }
        if self.storage_mode() == StorageMode::TimescaleDb {
            // Retention, compression and aggregate refreshes of the rest are TimescaleDB jobs.
            return Ok(report);
        }
        let today = day_of(now);
        report.partitions_created = self
            .ensure_partitions(today..=today + i64::from(self.options.partitions_ahead_days))
            .await?;
        if let Some(raw) = self.options.retention.raw {
            // A partition goes once its whole day is older than the retention.
            let cutoff_day = day_of(EventTime(now.millis() - raw.as_millis() as i64));
            // Readings of minutes not folded yet stay: the rollups do not hold them yet
            // (only after an outage of every merger longer than the raw retention).
            let folded = self.folded_until().await?.map_or(cutoff_day, day_of);
            let cutoff_day = cutoff_day.min(folded);
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'readings'::regclass ORDER BY 1",
            )
            .fetch_all(&self.pool)
            .await?;
            // The horizon moves in the transaction that drops, so that no writer sees the
            // partitions gone and the horizon not yet moved.
            let mut tx = self.pool.begin().await?;
            let mut dropped = Vec::new();
            for name in names {
                let Some(day) = partition_day(&name) else { continue };
                if day < cutoff_day {
                    let drop = format!("DROP TABLE IF EXISTS \"{name}\"");
                    sqlx::query(&drop).execute(&mut *tx).await?;
                    dropped.push((day, name));
                }
            }
            record_horizon(&mut tx, Resolution::Raw, EventTime(cutoff_day * DAY_MS)).await?;
            tx.commit().await?;
            let mut known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
            for (day, name) in dropped {
                known.remove(&day);
                report.partitions_dropped.push(name);
            }
        }
        // Open hours and days are read from rollup_1m: fold what has closed before its
        // retention can reach it.
        self.fold_closed_rollups(now).await?;
        for (level, table, keep) in [
            (Resolution::Minute, "rollup_1m", r.rollup_1m),
            (Resolution::Hour, "rollup_1h_closed", r.rollup_1h),
            (Resolution::Day, "rollup_1d_closed", r.rollup_1d),
        ] {
            let Some(keep) = keep else { continue };
            let cutoff = EventTime(now.millis() - keep.as_millis() as i64);
            let mut tx = self.pool.begin().await?;
            let delete = format!("DELETE FROM {table} WHERE bucket < $1");
            let done = sqlx::query(&delete).bind(ts(cutoff)).execute(&mut *tx).await?;
            record_horizon(&mut tx, level, cutoff).await?;
            tx.commit().await?;
            report.rollup_rows_deleted += done.rows_affected();
        }
        Ok(report)
    }

    /// From when each level is whole (see [`Horizons`]): as maintenance recorded it, and
    /// under TimescaleDB as its retention jobs last ran (the cut-off of a job's last
    /// successful run: chunks wholly older than it are gone).
    pub async fn horizons(&self) -> Result<Horizons, StoreError> {
        let mut h = Horizons::default();
        let rows = sqlx::query("SELECT level, horizon FROM retention_horizons")
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            h.record(row.try_get("level")?, et(row.try_get("horizon")?))?;
        }
        if self.storage_mode() == StorageMode::TimescaleDb {
            for row in sqlx::query(TIMESCALE_HORIZONS).fetch_all(&self.pool).await? {
                h.record(row.try_get("level")?, et(row.try_get("horizon")?))?;
            }
        }
        Ok(h)
    }

    /// (Re)apply the retention policies from the options (TimescaleDB mode), so that a
    /// changed configuration takes effect at the next start.
    pub(super) async fn apply_timescale_policies(&self) -> Result<(), StoreError> {
        let r = self.options.retention;
        for (table, keep) in [
            ("readings", r.raw),
            ("rollup_1m", r.rollup_1m),
            ("rollup_1h", r.rollup_1h),
            ("rollup_1d", r.rollup_1d),
        ] {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT remove_retention_policy($1::regclass, if_exists => true)")
                .bind(table)
                .execute(&mut *tx)
                .await?;
            if let Some(keep) = keep {
                sqlx::query("SELECT add_retention_policy($1::regclass, drop_after => make_interval(secs => $2))")
                    .bind(table)
                    .bind(keep.as_secs_f64())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Run every TimescaleDB policy job now, aggregate refreshes finest first. Where jobs
    /// have no background workers (PGlite) this is how they run; elsewhere it is a way to
    /// apply a change at once.
    pub async fn run_timescale_jobs(&self) -> Result<usize, StoreError> {
        let jobs: Vec<i32> = sqlx::query_scalar(
            "SELECT job_id FROM timescaledb_information.jobs
             WHERE hypertable_name IS NOT NULL
             ORDER BY CASE proc_name WHEN 'policy_refresh_continuous_aggregate' THEN 0 ELSE 1 END,
                      CASE hypertable_name WHEN 'rollup_1h' THEN 0 ELSE 1 END, job_id",
        )
        .fetch_all(&self.pool)
        .await?;
        for &job in &jobs {
            sqlx::query("CALL run_job($1)").bind(job).execute(&self.pool).await?;
        }
        // A job run by hand leaves no run statistics (where there is no scheduler, as in
        // PGlite): record the retention cut-offs it applied, as maintenance does.
        sqlx::query(&format!(
            "INSERT INTO retention_horizons (level, horizon)
             SELECT level, horizon FROM ({TIMESCALE_POLICIES}) p WHERE level IS NOT NULL
             ON CONFLICT (level) DO UPDATE SET horizon = greatest(retention_horizons.horizon, excluded.horizon)"
        ))
        .bind(OffsetDateTime::now_utc())
        .execute(&self.pool)
        .await?;
        Ok(jobs.len())
    }
}

/// Move a level's horizon forward (never back) inside the transaction that drops its rows.
async fn record_horizon(
    conn: &mut sqlx::PgConnection,
    level: Resolution,
    horizon: EventTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO retention_horizons (level, horizon) VALUES ($1, $2)
         ON CONFLICT (level) DO UPDATE SET horizon = greatest(retention_horizons.horizon, excluded.horizon)",
    )
    .bind(level.as_str())
    .bind(ts(horizon))
    .execute(conn)
    .await?;
    Ok(())
}

/// Per level, the cut-off of its TimescaleDB retention job as of `$1`.
const TIMESCALE_POLICIES: &str = "
    SELECT CASE coalesce(c.view_name, j.hypertable_name)
             WHEN 'readings' THEN 'raw' WHEN 'rollup_1m' THEN '1m'
             WHEN 'rollup_1h' THEN '1h' WHEN 'rollup_1d' THEN '1d' END AS level,
           $1::timestamptz - (j.config->>'drop_after')::interval AS horizon
    FROM timescaledb_information.jobs j
    LEFT JOIN timescaledb_information.continuous_aggregates c
      ON c.materialization_hypertable_name = j.hypertable_name
    WHERE j.proc_name = 'policy_retention'";

/// Per level, the cut-off of its TimescaleDB retention job's last successful run by the
/// scheduler.
const TIMESCALE_HORIZONS: &str = "
    SELECT p.level, p.horizon FROM (
      SELECT CASE coalesce(c.view_name, j.hypertable_name)
               WHEN 'readings' THEN 'raw' WHEN 'rollup_1m' THEN '1m'
               WHEN 'rollup_1h' THEN '1h' WHEN 'rollup_1d' THEN '1d' END AS level,
             s.last_successful_finish - (j.config->>'drop_after')::interval AS horizon
      FROM timescaledb_information.jobs j
      JOIN timescaledb_information.job_stats s USING (job_id)
      LEFT JOIN timescaledb_information.continuous_aggregates c
        ON c.materialization_hypertable_name = j.hypertable_name
      WHERE j.proc_name = 'policy_retention'
        AND s.last_successful_finish IS NOT NULL AND s.last_successful_finish > '-infinity'
    ) p WHERE p.level IS NOT NULL AND p.horizon IS NOT NULL";
