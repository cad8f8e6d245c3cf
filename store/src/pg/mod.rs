//! The PostgreSQL backend: [`PgStore`] with its pool, the storage mode (native partitions
//! or TimescaleDB, chosen once by the migrations) and the migrations. Each domain's SQL
//! and row decoding is in the submodule named after the domain module it serves
//! (`access`, `alert`, `commands`, `dead_letter_log`, `export`, `history`, `maintenance`,
//! `outbox`, `registry`, `rollup`, `stream_state`, `writer`); the domain logic is on
//! [`crate::Store`]. Times are `timestamptz`, and every session runs in UTC.

mod access;
mod alert;
mod baselines;
mod cadastre;
mod commands;
pub mod copy;
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

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor};
use telemetry::EventTime;
use time::OffsetDateTime;

use crate::{StorageMode, StoreError, StoreOptions, TimescaleMode};

/// A migration's SQL: the same everywhere, or one text per storage mode.
enum MigrationSql {
    Common(&'static str),
    PerMode { native: &'static str, timescale: &'static str },
}

const MIGRATIONS: &[(i64, &str, MigrationSql)] = &[
    (
        1,
        "foundation",
        MigrationSql::Common(include_str!("../../migrations/postgres/0001_foundation.sql")),
    ),
    (
        2,
        "rollup batches",
        MigrationSql::Common(include_str!("../../migrations/postgres/0002_rollup_log.sql")),
    ),
    (
        3,
        "time series",
        MigrationSql::PerMode {
            native: include_str!("../../migrations/postgres/native/0003_timeseries.sql"),
            timescale: include_str!("../../migrations/postgres/timescale/0003_timeseries.sql"),
        },
    ),
    (4, "alerts", MigrationSql::Common(include_str!("../../migrations/postgres/0004_alerts.sql"))),
    (
        5,
        "segment rollups",
        MigrationSql::Common(include_str!("../../migrations/postgres/0005_segment_rollups.sql")),
    ),
    (6, "access", MigrationSql::Common(include_str!("../../migrations/postgres/0006_access.sql"))),
    (
        7,
        "outbox and commands",
        MigrationSql::Common(include_str!("../../migrations/postgres/0007_outbox_commands.sql")),
    ),
    (
        8,
        "gateways",
        MigrationSql::Common(include_str!("../../migrations/postgres/0008_gateways.sql")),
    ),
    (
        9,
        "merge fillfactor",
        MigrationSql::PerMode {
            native: include_str!("../../migrations/postgres/native/0009_merge_fillfactor.sql"),
            timescale: include_str!(
                "../../migrations/postgres/timescale/0009_merge_fillfactor.sql"
            ),
        },
    ),
    (
        10,
        "real-time rollups",
        MigrationSql::PerMode {
            native: include_str!("../../migrations/postgres/native/0010_realtime_rollups.sql"),
            timescale: include_str!(
                "../../migrations/postgres/timescale/0010_realtime_rollups.sql"
            ),
        },
    ),
    (
        11,
        "retention horizons",
        MigrationSql::Common(include_str!("../../migrations/postgres/0011_retention_horizons.sql")),
    ),
    (
        12,
        "stream state parts",
        MigrationSql::Common(include_str!("../../migrations/postgres/0012_stream_state_parts.sql")),
    ),
    (
        13,
        "alarm handling",
        MigrationSql::Common(include_str!("../../migrations/postgres/0013_alarm_handling.sql")),
    ),
    (
        14,
        "minute folds",
        MigrationSql::Common(include_str!("../../migrations/postgres/0014_minute_folds.sql")),
    ),
    (
        15,
        "fold time index",
        MigrationSql::PerMode {
            native: include_str!("../../migrations/postgres/native/0015_fold_time_index.sql"),
            timescale: include_str!("../../migrations/postgres/timescale/0015_fold_time_index.sql"),
        },
    ),
    (
        16,
        "cadastre",
        MigrationSql::Common(include_str!("../../migrations/postgres/0016_cadastre.sql")),
    ),
    (
        17,
        "operations",
        MigrationSql::Common(include_str!("../../migrations/postgres/0017_operations.sql")),
    ),
    (
        19,
        "baselines",
        MigrationSql::Common(include_str!("../../migrations/postgres/0019_baselines.sql")),
    ),
    (
        20,
        "detector flags",
        MigrationSql::Common(include_str!("../../migrations/postgres/0020_detector_flags.sql")),
    ),
    (
        21,
        "baseline sums",
        MigrationSql::Common(include_str!("../../migrations/postgres/0021_baseline_sums.sql")),
    ),
];

/// Arbitrary constant: the advisory lock that serialises migrations across processes.
const MIGRATION_LOCK: i64 = 0x5CC2_0001;

#[derive(Debug, Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
    /// The storage mode recorded by the migrations (0 until migrated).
    mode: Arc<AtomicU8>,
    /// Days whose `readings` partition is known to exist.
    partitions: Arc<Mutex<HashSet<i64>>>,
    /// The hour mark of the real-time rollups as last seen (native mode; 0 until then).
    hour_mark: Arc<AtomicI64>,
    /// The minute marks (migration 14) as this process last saw them (0 until then).
    sealed_mark: Arc<AtomicI64>,
    folded_mark: Arc<AtomicI64>,
    options: StoreOptions,
    /// The hosts that may be the primary (`database.url` and `database.failover_urls`)
    /// and which one the pool connects to; `None` with a single host.
    failover: Option<Arc<crate::replica::Failover>>,
}

/// An event time as bound to a `timestamptz`.
fn ts(t: EventTime) -> OffsetDateTime {
    t.to_offset_date_time()
}

/// A `timestamptz` as an event time.
fn et(t: OffsetDateTime) -> EventTime {
    EventTime::from_offset_date_time(t)
}

const MODE_NATIVE: u8 = 1;
const MODE_TIMESCALE: u8 = 2;

impl PgStore {
    /// Connect to `url`, or, with `options.failover_urls`, to whichever of `url` and
    /// those hosts is the writable primary (`pg_is_in_recovery()` false), and follow the
    /// primary when it moves (see [`crate::replica`]).
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let mut targets = Vec::new();
        for u in std::iter::once(url).chain(options.failover_urls.iter().map(String::as_str)) {
            targets.push(PgConnectOptions::from_str(u)?.options([("TimeZone", "UTC")]));
        }
        let primary_only = targets.len() > 1;
        let first =
            if primary_only { crate::replica::find_primary(&targets, None).await? } else { 0 };
        let connect = targets[first].clone();
        let reset = options.reset_sessions;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if reset {
                        // One statement each: DISCARD ALL refuses to run in a (implicit)
                        // transaction block, and resets search_path on PGlite.
                        for sql in [
                            "ROLLBACK",
                            "DISCARD ALL",
                            "SET search_path TO public",
                            "SET client_min_messages = warning",
                        ] {
                            conn.execute(sql).await?;
                        }
                    }
                    // Rollup buckets are UTC days and hours whatever the server's default.
                    conn.execute("SET TimeZone = 'UTC'").await?;
                    if primary_only {
                        // Never write through a standby (one not yet promoted, or an old
                        // primary brought back as one): the pool refuses the connection.
                        let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                            .fetch_one(&mut *conn)
                            .await?;
                        if standby {
                            return Err(sqlx::Error::Protocol(
                                "the server is a standby (in recovery), not the primary".into(),
                            ));
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await?;
        let mut store = Self::from_pool(pool, options).await?;
        if primary_only {
            store.failover = Some(crate::replica::Failover::start(
                store.pool.clone(),
                targets,
                first,
                options.failover_probe_interval,
            ));
        }
        Ok(store)
    }

    /// A store reading through `url` (a hot standby of this store's database), with this
    /// store's storage mode; its pool connects lazily, so a standby that is down at start
    /// delays nothing (reads then go to the primary, see [`crate::replica::Reads`]).
    pub fn read_replica(&self, url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(url)?.options([("TimeZone", "UTC")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(self.options.acquire_timeout)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("SET TimeZone = 'UTC'").await?;
                    Ok(())
                })
            })
            .connect_lazy_with(connect);
        Ok(Self {
            pool,
            mode: Arc::new(AtomicU8::new(self.mode.load(Ordering::Relaxed))),
            partitions: Arc::default(),
            hour_mark: Arc::default(),
            sealed_mark: Arc::default(),
            folded_mark: Arc::default(),
            options: self.options.clone(),
            failover: None,
        })
    }

    /// The primary's hosts and failovers, when `failover_urls` gave more than one host.
    pub fn failover(&self) -> Option<Arc<crate::replica::Failover>> {
        self.failover.clone()
    }

    /// A store over a pool opened elsewhere (its sessions should use UTC, as
    /// [`PgStore::connect`]'s do), for tools and tests that hold one.
    pub async fn from_pool(pool: PgPool, options: &StoreOptions) -> Result<Self, StoreError> {
        let store = Self {
            pool,
            mode: Arc::new(AtomicU8::new(0)),
            partitions: Arc::new(Mutex::new(HashSet::new())),
            hour_mark: Arc::new(AtomicI64::new(0)),
            sealed_mark: Arc::new(AtomicI64::new(0)),
            folded_mark: Arc::new(AtomicI64::new(0)),
            options: options.clone(),
            failover: None,
        };
        store.load_mode().await?;
        Ok(store)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn storage_mode(&self) -> StorageMode {
        match self.mode.load(Ordering::Relaxed) {
            MODE_TIMESCALE => StorageMode::TimescaleDb,
            _ => StorageMode::Native,
        }
    }

    /// Called at connect (mode 0 until migrated) and after the migrations.
    async fn load_mode(&self) -> Result<(), StoreError> {
        let mode = recorded_mode(&mut *self.pool.acquire().await?).await?;
        let code = match mode.as_deref() {
            Some("timescaledb") => MODE_TIMESCALE,
            Some(_) => MODE_NATIVE,
            None => 0,
        };
        self.mode.store(code, Ordering::Relaxed);
        Ok(())
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        // A session-level lock held for the whole run: two processes starting together
        // would otherwise race even on `CREATE TABLE IF NOT EXISTS`.
        sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK).execute(&mut *conn).await?;
        let result = apply_migrations(&mut conn, &self.options).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await;
        if unlocked.is_err() {
            // The lock dies with the session; make sure the session dies too.
            conn.detach();
        } else {
            drop(conn);
        }
        result?;
        self.load_mode().await?;
        if self.storage_mode() == StorageMode::TimescaleDb {
            self.apply_timescale_policies().await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn apply_migrations(
    conn: &mut sqlx::PgConnection,
    options: &StoreOptions,
) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS sccr_migrations (version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *conn)
    .await?;
    for (version, name, sql) in MIGRATIONS {
        let (version, name) = (*version, *name);
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM sccr_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *conn)
                .await?;
        if done.is_some() {
            continue;
        }
        let (text, mode) = match sql {
            MigrationSql::Common(text) => (text.to_string(), None),
            MigrationSql::PerMode { native, timescale: ts_sql } => {
                // The first per-mode migration chooses the mode; later ones follow it.
                let timescale = match recorded_mode(conn).await? {
                    Some(mode) => mode == "timescaledb",
                    None => use_timescale(conn, options.timescaledb).await?,
                };
                if timescale {
                    (timescale_sql(ts_sql, options), Some("timescaledb"))
                } else {
                    (native.to_string(), Some("native"))
                }
            }
        };
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(&text).execute(&mut *tx).await.map_err(|source| StoreError::Migration {
            version,
            name,
            source,
        })?;
        if let Some(mode) = mode {
            sqlx::query("INSERT INTO sccr_settings (key, value) VALUES ('storage', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                .bind(mode)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO sccr_migrations (version, name) VALUES ($1, $2)")
            .bind(version)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, name, mode, "applied migration");
    }
    Ok(())
}

/// A PostgreSQL interval literal.
fn interval(d: std::time::Duration) -> String {
    format!("'{} seconds'", d.as_secs())
}

/// The TimescaleDB layout with the configured periods. The refresh windows of the
/// continuous aggregates reach back over the raw retention but must stay inside
/// rollup_1m's (refreshing a range whose source rows were dropped would erase it).
fn timescale_sql(text: &str, options: &StoreOptions) -> String {
    const YEAR: u64 = 365 * 86_400;
    let r = options.retention;
    let rollup = r.rollup_1m.unwrap_or(std::time::Duration::from_secs(100 * YEAR));
    let raw = r
        .raw
        .unwrap_or(rollup)
        .min(rollup.saturating_sub(std::time::Duration::from_secs(3 * 86_400)));
    text.replace("{raw_retention}", &interval(raw))
        .replace("{compress_after}", &interval(options.compress_after))
}

/// The storage mode the migrations recorded, if any.
async fn recorded_mode(conn: &mut sqlx::PgConnection) -> Result<Option<String>, StoreError> {
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('sccr_settings')::text")
        .fetch_one(&mut *conn)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    Ok(sqlx::query_scalar("SELECT value FROM sccr_settings WHERE key = 'storage'")
        .fetch_optional(&mut *conn)
        .await?)
}

/// Decide (once, when the time-series layout is created) whether to use TimescaleDB.
async fn use_timescale(
    conn: &mut sqlx::PgConnection,
    mode: TimescaleMode,
) -> Result<bool, StoreError> {
    if mode == TimescaleMode::Off {
        return Ok(false);
    }
    let installed: Option<String> = sqlx::query_scalar(
        "SELECT extversion::text FROM pg_extension WHERE extname = 'timescaledb'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if installed.is_some() {
        return Ok(true);
    }
    let available: Option<String> = sqlx::query_scalar(
        "SELECT name::text FROM pg_available_extensions WHERE name = 'timescaledb'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let created = match available {
        Some(_) => sqlx::query("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .execute(&mut *conn)
            .await
            .map(|_| ()),
        None => Err(sqlx::Error::RowNotFound),
    };
    match (created, mode) {
        (Ok(()), _) => Ok(true),
        (Err(e), TimescaleMode::Require) => Err(StoreError::TimescaleUnavailable(match e {
            sqlx::Error::RowNotFound => {
                "the server does not offer it (pg_available_extensions)".into()
            }
            e => e.to_string(),
        })),
        (Err(e), _) => {
            if !matches!(e, sqlx::Error::RowNotFound) {
                tracing::warn!(error = %e, "TimescaleDB is installed but could not be enabled; using native partitions");
            }
            Ok(false)
        }
    }
}
