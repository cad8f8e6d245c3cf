//! Maintenance on SQLite (see [`crate::maintenance`]): retention deletes old readings and
//! rollup rows and moves each level's horizon in the same transaction.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use telemetry::EventTime;

use super::SqliteStore;
use crate::history::{Horizons, Resolution};
use crate::{MaintenanceReport, StoreError};

impl SqliteStore {
    pub async fn maintain(&self, now: EventTime) -> Result<MaintenanceReport, StoreError> {
        let mut report = MaintenanceReport::default();
        let r = self.retention;
        for (level, keep) in [
            (Resolution::Raw, r.raw),
            (Resolution::Minute, r.rollup_1m),
            (Resolution::Hour, r.rollup_1h),
            (Resolution::Day, r.rollup_1d),
        ] {
            let Some(keep) = keep else { continue };
            let cutoff = now.millis() - keep.as_millis() as i64;
            let (column, tables) = match level {
                Resolution::Raw => ("time_ms", [Some("readings"), None]),
                _ => ("bucket_ms", [Some(level.table()), level.segment_table()]),
            };
            // The horizon moves in the transaction that deletes, so a writer never sees
            // the rows gone and the horizon not yet moved.
            let mut tx = self.writer.begin().await?;
            for table in tables.into_iter().flatten() {
                let done = sqlx::query(&format!("DELETE FROM {table} WHERE {column} < ?"))
                    .bind(cutoff)
                    .execute(&mut *tx)
                    .await?;
                if level != Resolution::Raw {
                    report.rollup_rows_deleted += done.rows_affected();
                }
            }
            sqlx::query(
                "INSERT INTO retention_horizons (level, horizon_ms) VALUES (?, ?)
                 ON CONFLICT (level) DO UPDATE SET horizon_ms = max(horizon_ms, excluded.horizon_ms)",
            )
            .bind(level.as_str())
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(report)
    }

    /// TimescaleDB exists only on PostgreSQL: no jobs to run.
    pub(crate) async fn run_timescale_jobs(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// From when each level is whole (see [`Horizons`]).
    pub async fn horizons(&self) -> Result<Horizons, StoreError> {
        horizons_of(
            sqlx::query("SELECT level, horizon_ms FROM retention_horizons")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

fn horizons_of(rows: Vec<SqliteRow>) -> Result<Horizons, StoreError> {
    let mut h = Horizons::default();
    for row in rows {
        h.record(row.try_get("level")?, EventTime(row.try_get("horizon_ms")?))?;
    }
    Ok(h)
}
