//! The SQLite backend of the embedded demo, with the semantics of the PostgreSQL one: the
//! same dedupe key, rollups merged from the rows actually inserted, one transaction per
//! batch. [`SqliteStore`] holds the pool and runs the migrations; each domain's SQL and row
//! decoding is in the submodule named after the domain module it serves, as on PostgreSQL
//! (`pg/`). Times are stored as Unix milliseconds (`_ms` columns). The database runs in WAL
//! mode with `synchronous = FULL`, so a committed batch survives a crash of the process or
//! the host.

mod access;
mod alert;
mod baselines;
mod cadastre;
mod commands;
mod dead_letter_log;
mod detector_health;
mod export;
mod history;
mod maintenance;
mod operations;
pub(crate) mod outbox;
mod registry;
mod rollup;
pub(crate) mod stream_state;
mod writer;

use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Connection;
use telemetry::EventTime;

use crate::{Retention, StorageMode, StoreError, StoreOptions};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "foundation", include_str!("../../migrations/sqlite/0001_foundation.sql")),
    (2, "time series", include_str!("../../migrations/sqlite/0002_timeseries.sql")),
    (3, "alerts", include_str!("../../migrations/sqlite/0003_alerts.sql")),
    (4, "segment rollups", include_str!("../../migrations/sqlite/0004_segment_rollups.sql")),
    (5, "access", include_str!("../../migrations/sqlite/0005_access.sql")),
    (6, "outbox and commands", include_str!("../../migrations/sqlite/0006_outbox_commands.sql")),
    (7, "gateways", include_str!("../../migrations/sqlite/0007_gateways.sql")),
    (8, "retention horizons", include_str!("../../migrations/sqlite/0008_retention_horizons.sql")),
    (9, "stream state parts", include_str!("../../migrations/sqlite/0009_stream_state_parts.sql")),
    (10, "alarm handling", include_str!("../../migrations/sqlite/0010_alarm_handling.sql")),
    (11, "cadastre", include_str!("../../migrations/sqlite/0011_cadastre.sql")),
    (12, "operations", include_str!("../../migrations/sqlite/0012_operations.sql")),
    (14, "baselines", include_str!("../../migrations/sqlite/0014_baselines.sql")),
    (15, "detector flags", include_str!("../../migrations/sqlite/0015_detector_flags.sql")),
    (16, "baseline sums", include_str!("../../migrations/sqlite/0016_baseline_sums.sql")),
];

#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Connections that read. In WAL mode readers never wait for the writer.
    pub(crate) pool: SqlitePool,
    /// The one connection that writes. SQLite takes one writer at a time, and a writer
    /// waiting for the lock holds its connection: in a shared pool, the writers queued at
    /// once (the batch writer, a back-fill or import, the rollup folds, the alert sink, the
    /// outbox, maintenance) would take every connection and leave a history query waiting
    /// behind them. Here they queue for this connection and readers keep theirs.
    pub(crate) writer: SqlitePool,
    retention: Retention,
}

impl SqliteStore {
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(options.acquire_timeout);
        if url.contains(":memory:") {
            // An in-memory database exists per connection: keep exactly one, for both.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await?;
            return Ok(Self { writer: pool.clone(), pool, retention: options.retention });
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        Ok(Self { pool, writer, retention: options.retention })
    }

    /// One file, no primary to follow (PostgreSQL's [`crate::PgStore::failover`]).
    pub fn failover(&self) -> Option<std::sync::Arc<crate::replica::Failover>> {
        None
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// SQLite is always the embedded layout.
    pub(crate) fn storage_mode(&self) -> StorageMode {
        StorageMode::Embedded
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS sccr_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        for &(version, name, sql) in MIGRATIONS {
            // BEGIN IMMEDIATE takes the write lock, serialising concurrent migrators.
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM sccr_migrations WHERE version = ?")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_some() {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(|source| StoreError::Migration {
                version,
                name,
                source,
            })?;
            sqlx::query(
                "INSERT INTO sccr_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)",
            )
            .bind(version)
            .bind(name)
            .bind(EventTime::now().millis())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(version, name, "applied migration");
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}
