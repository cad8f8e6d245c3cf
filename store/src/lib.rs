//! SCCR storage: schema migrations, the batch writer, history queries, alerts.
//!
//! Two backends with the same semantics behind [`Store`]: PostgreSQL (production) and
//! SQLite (the embedded store of `sccr demo`). The invariants kept here:
//! - **Dedupe**: `readings` has the key (device, metric, time); a replayed reading inserts
//!   nothing.
//! - **Exact rollups**: on PostgreSQL closed time is written once, from its readings.
//!   Each batch reads the sealed mark of `minute_marks` `FOR SHARE` in its transaction:
//!   readings from the mark on are live and stored untagged; readings before it are late,
//!   carry the batch's id, and the batch is registered in `rollup_pending`. The rollup
//!   merger ([`maintenance`]) seals time in steps a grace after they end (the mark's UPDATE waits
//!   for the batches in flight) and folds the untagged readings of the sealed range into
//!   `rollup_1m`, the segment rollups and `latest` in the transaction that moves the folded
//!   mark ([`PgStore::fold_minutes`]); it merges the committed batches of late readings as
//!   before (count/sum/min/max added, last-by-time kept), each once even with several
//!   mergers. History, exports and `latest` read the minutes from the folded mark on from
//!   the raw readings. A replayed reading is not inserted and is counted by neither path.
//!   SQLite merges every level inside the batch's transaction.
//! - **Real-time hours and days** (PostgreSQL without TimescaleDB, as TimescaleDB's
//!   real-time continuous aggregates): `rollup_1h` and `rollup_1d` are views, stored rows
//!   before the marks in `rollup_marks` and an aggregate of `rollup_1m` from them on. A merge
//!   writes hourly and daily partials only for buckets before the marks (late readings);
//!   [`PgStore::fold_closed_rollups`] moves ended hours and days into the stored rows and the
//!   marks forward in one transaction. Merges hold the marks `FOR SHARE`, folds `FOR
//!   UPDATE`, so a fold never misses a merge in flight and no partial is counted twice.
//! - **One transaction per batch**: readings, the batch's `rollup_pending` row if it has
//!   late readings (SQLite: its rollups and latest values), new devices and dead letters of a batch commit
//!   together or not at all; the writer hands back the batch's
//!   tickets (MQTT acks) only after the commit.
//! - **One open alert per key**: at most one alert per (rule, subject) is raised or
//!   acknowledged, enforced by the partial unique index `alerts_one_open_per_key` (`WHERE
//!   state <> 'cleared'`) rather than by a check in code, so concurrent raises from several
//!   tasks or replicas open exactly one alert and the others get
//!   [`RaiseOutcome::AlreadyOpen`] with its id.
//! - **Every alert transition is an event**: the raise, the acknowledgement and the clear
//!   each write their `alert_events` row (who, when, from, to, note) in the same transaction
//!   as the change to `alerts`; an illegal move (acknowledging a cleared alert) writes
//!   nothing and fails with [`StoreError::AlertTransition`]. See [`alert`].
//!
//! The code is split one way, by backend behind one dispatch point. [`Store`] is an enum of
//! [`PgStore`] and [`SqliteStore`], taken apart only by the `dispatch!` macro below (and by
//! [`Store::connect`] and [`Store::backend`]). Each domain module ([`writer`], [`rollup`],
//! [`maintenance`], [`history`], [`registry`], [`access`], [`alert`] with the stream's saved
//! state, [`operations`], [`commands`], [`outbox`], [`dead_letter_log`], [`export`]) holds its types, checks,
//! shared row decoding and the `impl Store` methods, written once; `pg/<domain>.rs` and
//! `sqlite/<domain>.rs` hold only that dialect's SQL and row decoding, and `pg/mod.rs`,
//! `sqlite/mod.rs` the pool and the migrations. The store contract (`contract`, one file per
//! domain) runs on every backend.

/// The one place a [`Store`] is taken apart by backend: `dispatch!(self, s => s.f(x).await)`
/// runs the same expression on the [`PgStore`] or the [`SqliteStore`] inside. Domain
/// modules write their logic once on [`Store`] and hand each backend only its SQL
/// (`pg/<domain>.rs`, `sqlite/<domain>.rs`) through this macro; defined before the modules
/// so that every one of them can use it.
macro_rules! dispatch {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            $crate::Store::Postgres($s) => $e,
            $crate::Store::Sqlite($s) => $e,
        }
    };
}

pub mod access;
pub mod affinity;
pub mod alert;
pub mod baselines;
pub mod cadastre;
pub mod commands;
#[cfg(any(test, feature = "testing"))]
pub mod contract;
pub mod dead_letter_log;
pub mod detector_health;
pub mod export;
pub mod history;
pub mod maintenance;
pub mod operations;
pub mod outbox;
mod pg;
pub mod registry;
pub mod replica;
pub mod rollup;
mod sqlite;
mod stream_state;
pub mod writer;

use std::time::Duration;

use telemetry::{DeviceId, EventTime, MetricId, Reading, SegmentId};

pub use access::{AuditEntry, AuditRecord, TokenRecord};
pub use alert::{
    Acknowledgement, AlertChange, AlertEventRecord, AlertFilter, AlertKind, AlertMove, AlertRecord,
    AlertState, AlertSubject, Clearance, MessageCode, NewAlert, Params, RaiseOutcome, Severity,
    Shelf, StateSave, SubjectKind, Suppression, SuppressionReason,
};
pub use commands::{CommandRecord, CommandStatus, NewCommand};
pub use dead_letter_log::DeadLetterEntry;
pub use export::{
    export_schema, export_to_dir, partition_schema, BatchEncoder, DirExport, DirExportSummary,
    ExportChunk, ExportFormat, ExportQuery, ExportStream, ExportedFile,
};
pub use history::{
    GapFill, History, HistoryPoint, HistoryQuery, HistorySubject, Horizons, Resolution, Step,
};
pub use maintenance::{run_maintenance, run_rollup_merger, MergerConfig, MergerMetrics};
pub use operations::{
    ActualWindow, ChangeKind, Created, Operation, OperationChange, OperationFilter, OperationKind,
    OperationNote, OperationPage, OperationSeverity, OperationStatus, PlannedWindow,
};
pub use outbox::{
    AttemptOutcome, ClaimedDelivery, DeliveryRecord, DeliveryState, NewWebhook, OutboxBacklog,
    OutboxEvent, OutboxRecord, WebhookFormat, WebhookPatch, WebhookRecord,
};
pub use pg::copy as pgcopy;
pub use pg::PgStore;
pub use registry::{DeviceDetail, DeviceFilter, DeviceUpdate, PlacedDevice};
pub use sqlite::SqliteStore;
pub use writer::{run_writer, ArrivalLag, WriteItem, WriterConfig, WriterMetrics};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL {0:?} is neither postgres:// nor sqlite:")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration {version} ({name}) failed: {source}")]
    Migration { version: i64, name: &'static str, source: sqlx::Error },
    #[error("row holds an invalid {what}: {value:?}")]
    Corrupt { what: &'static str, value: String },
    #[error("invalid query parameter `{param}`: {message}")]
    InvalidQuery { param: &'static str, message: String },
    #[error("no writable primary among database.url and database.failover_urls: {0}")]
    NoPrimary(String),
    #[error("TimescaleDB is required by `timescaledb = \"require\"` but the extension is not available: {0}")]
    TimescaleUnavailable(String),
    #[error("export failed: {0}")]
    Encode(String),
    #[error("alert {0} does not exist")]
    AlertNotFound(i64),
    #[error("alert {0} is not shelved")]
    AlertNotShelved(i64),
    #[error("alert {id} is {from} and cannot become {to}")]
    AlertTransition { id: i64, from: AlertState, to: AlertState },
    #[error("device {0} is already registered with credentials")]
    DeviceExists(String),
    #[error("road segment {0:?} does not exist")]
    UnknownSegment(String),
    #[error("gateway {0:?} is not a registered device")]
    UnknownGateway(String),
    #[error("{message}")]
    OperationInvalid { field: String, message: String },
    #[error("operation {0} does not exist")]
    OperationNotFound(String),
    #[error("operation {id} is at version {current}, not {expected}: it changed meanwhile; read it again")]
    OperationVersion { id: String, expected: i64, current: i64 },
    #[error("operation {id} is {status}, which is final: it cannot change")]
    OperationFinal { id: String, status: &'static str },
    #[error("operation {id} is {from} and cannot become {to}")]
    OperationTransition { id: String, from: &'static str, to: &'static str },
}

impl StoreError {
    /// Whether retrying the same operation later may succeed (connection lost, database
    /// restarting, lock timeout) as opposed to a bug or bad data.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(db) => {
                    let code = db.code().unwrap_or_default();
                    // PostgreSQL: connection exceptions, insufficient resources, operator
                    // intervention (restart), serialization/deadlock. SQLite: busy/locked.
                    code.starts_with("08")
                        || code.starts_with("53")
                        || code.starts_with("57")
                        || code == "40001"
                        || code == "40P01"
                        // read_only_sql_transaction: a standby, before the failover
                        // finds the promoted primary.
                        || code == "25006"
                        || code == "5"
                        || code == "6"
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// A message or reading that was refused, kept for operators with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub received_at: EventTime,
    pub topic: String,
    pub device: Option<DeviceId>,
    /// Stable reason code (`bad_json`, `out_of_range`, …).
    pub reason: String,
    /// Human-readable detail naming what was wrong.
    pub detail: String,
    /// The payload, truncated to [`DEAD_LETTER_PAYLOAD_LIMIT`] bytes.
    pub payload: Vec<u8>,
    pub payload_size: usize,
}

/// How much of a refused payload is kept.
pub const DEAD_LETTER_PAYLOAD_LIMIT: usize = 4096;

impl DeadLetter {
    pub fn new(
        topic: &str,
        device: Option<DeviceId>,
        reason: &str,
        detail: String,
        payload: &[u8],
    ) -> Self {
        Self {
            received_at: EventTime::now(),
            topic: topic.chars().take(256).collect(),
            device,
            reason: reason.to_owned(),
            detail,
            payload: payload[..payload.len().min(DEAD_LETTER_PAYLOAD_LIMIT)].to_vec(),
            payload_size: payload.len(),
        }
    }
}

/// Everything one transaction writes.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub readings: Vec<Reading>,
    pub dead_letters: Vec<DeadLetter>,
    /// Devices to register if they are not known yet.
    pub new_devices: Vec<DeviceId>,
}

/// What a committed batch changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub inserted: u64,
    /// Readings already stored (replays, redeliveries).
    pub duplicates: u64,
    /// Dead letters stored, those below included.
    pub dead_letters: u64,
    /// Readings refused as older than the raw retention horizon ([`OLDER_THAN_RETENTION`] dead letters).
    pub older_than_retention: u64,
}

/// The dead-letter reason of a reading older than the raw retention horizon.
pub const OLDER_THAN_RETENTION: &str = "older_than_retention";

/// A device as registered.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub kind: Option<String>,
    pub segment: Option<SegmentId>,
    pub registered_at: EventTime,
}

/// The last value of one (device, metric).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LatestValue {
    pub device: DeviceId,
    pub metric: MetricId,
    pub time: EventTime,
    pub value: f64,
}

/// Connection and layout settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// Whether PostgreSQL should use TimescaleDB (decided once, by the migration that
    /// lays out the time-series tables).
    pub timescaledb: TimescaleMode,
    /// How readings reach PostgreSQL.
    pub write_method: WriteMethod,
    /// Reset session state on every new connection (`ROLLBACK; DISCARD ALL`): for
    /// single-session servers such as PGlite, where a pooled connection is a shared session.
    pub reset_sessions: bool,
    pub retention: Retention,
    /// Age after which TimescaleDB compresses readings and minute rollups.
    pub compress_after: Duration,
    /// Daily partitions of `readings` created ahead of time (native PostgreSQL).
    pub partitions_ahead_days: u32,
    /// Other hosts that may become the primary (PostgreSQL): the store connects to the
    /// writable one and follows it after a failover ([`replica`]).
    pub failover_urls: Vec<String>,
    /// How often the hosts are checked for the primary when `failover_urls` is set.
    pub failover_probe_interval: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            timescaledb: TimescaleMode::Auto,
            write_method: WriteMethod::Copy,
            reset_sessions: false,
            retention: Retention::default(),
            compress_after: Duration::from_secs(7 * 86_400),
            partitions_ahead_days: 3,
            failover_urls: Vec::new(),
            failover_probe_interval: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimescaleMode {
    /// Use the extension when the server has it.
    Auto,
    /// Fail to migrate without it.
    Require,
    /// Native partitioning even where the extension exists.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMethod {
    /// Binary `COPY` into `readings`; a batch that holds an already stored reading falls
    /// back to `Unnest` for that batch.
    Copy,
    /// `INSERT … SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING` (servers without COPY).
    Unnest,
}

/// How long each level is kept; `None` keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub raw: Option<Duration>,
    pub rollup_1m: Option<Duration>,
    pub rollup_1h: Option<Duration>,
    pub rollup_1d: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Self {
            raw: Some(Duration::from_secs(90 * DAY)),
            rollup_1m: Some(Duration::from_secs(400 * DAY)),
            rollup_1h: Some(Duration::from_secs(10 * 365 * DAY)),
            rollup_1d: None,
        }
    }
}

/// How PostgreSQL holds the time series (SQLite is always `Embedded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageMode {
    /// Daily native partitions; rollups maintained by the rollup merger.
    Native,
    /// Hypertables; hourly and daily rollups are continuous aggregates.
    TimescaleDb,
    Embedded,
}

/// What one run of the rollup merger folded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Committed batches taken off `rollup_pending`.
    pub batches: u64,
    /// Readings of those batches folded into the rollups.
    pub readings: u64,
    /// Rollup rows written (all levels).
    pub rollup_rows: u64,
}

/// What one maintenance pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub partitions_created: Vec<String>,
    pub partitions_dropped: Vec<String>,
    pub rollup_rows_deleted: u64,
}

/// The store: one of the two backends.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Store {
    /// Connect by URL: `postgres://…` / `postgresql://…` or `sqlite:PATH` / `sqlite::memory:`.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PgStore::connect(url, options).await?))
        } else if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(SqliteStore::connect(url, options).await?))
        } else {
            Err(StoreError::UnsupportedUrl(url.chars().take(64).collect()))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Apply pending migrations; safe to call from several processes at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.migrate().await)
    }

    pub fn storage_mode(&self) -> StorageMode {
        dispatch!(self, s => s.storage_mode())
    }

    /// Cheap liveness probe of the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }

    pub async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }

    /// The hosts that may be the primary and where writes go, with `failover_urls`.
    pub fn failover(&self) -> Option<std::sync::Arc<replica::Failover>> {
        dispatch!(self, s => s.failover())
    }
}

pub(crate) fn parse_device(s: String) -> Result<DeviceId, StoreError> {
    DeviceId::parse(&s).map_err(|_| StoreError::Corrupt { what: "device id", value: s })
}

pub(crate) fn parse_metric(s: String) -> Result<MetricId, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt { what: "metric", value: s })
}

pub(crate) fn parse_segment(s: String) -> Result<SegmentId, StoreError> {
    SegmentId::parse(&s).map_err(|_| StoreError::Corrupt { what: "segment id", value: s })
}

#[cfg(test)]
mod tests;
