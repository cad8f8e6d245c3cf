//! PostgreSQL backend. A batch is one statement chain in one transaction: readings go in
//! through `unnest` arrays with `ON CONFLICT DO NOTHING … RETURNING`, and the rows that
//! were really inserted feed the rollup and latest-value upserts in the same statement.

mod access;
mod alert;
mod commands;
pub mod copy;
mod dead_letter_log;
pub(crate) mod outbox;
mod registry;
pub(crate) mod stream_state;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, Row};
use telemetry::{EventTime, MetricId, Partial};
use time::OffsetDateTime;

use self::copy::CopyEncoder;
use crate::history::{
    HistoryPoint, HistoryQuery, HistorySubject, Horizons, Piece, Resolution, SourceRow, DAY_MS,
};

use crate::{
    parse_device, parse_metric, refuse_too_old, Batch, BatchOutcome, DeadLetter, LatestValue,
    MaintenanceReport, MergeOutcome, StorageMode, StoreError, StoreOptions, TimescaleMode,
    WriteMethod,
};

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
    options: StoreOptions,
}

/// "Last by time" in SQL: `(max(ARRAY[epoch seconds, value]))[2]`. Arrays compare
/// element by element, so the maximum is the latest time and, on equal times, the larger
/// value (the tie rule of `telemetry::Partial::merge`). Unlike `array_agg(… ORDER BY …)`
/// it needs no sort, so grouping stays a hash aggregate. Epoch seconds with microseconds
/// are exact in a float8 for any time this system stores.
///
/// The fallback write: readings through `unnest` arrays, skipping stored ones; the rows
/// really inserted carry the batch id ($6), so only they reach the rollups.
const INSERT_BATCH: &str = r#"
WITH ins AS (
    INSERT INTO readings (time, device, metric, value, seq, batch)
    SELECT time, device, metric, value, seq, $6
    FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::float8[], $5::int8[]) AS t(time, device, metric, value, seq)
    ON CONFLICT (device, metric, time) DO NOTHING
    RETURNING 1
)
SELECT count(*) AS inserted FROM ins
"#;

/// Registers a batch for the rollup merger, in the batch's transaction.
const REGISTER_BATCH: &str =
    "INSERT INTO rollup_pending (batch, min_time, max_time) VALUES (nextval('readings_batch_seq'), $1, $2) RETURNING batch";

/// The rollup merger's statement: take up to $1 committed batches off `rollup_pending`,
/// fold their readings per level, merge them into each level's table, and move `latest`
/// forward. The levels are appended by [`merge_statement`].
const MERGE_HEAD: &str = r#"
WITH b AS (
    DELETE FROM rollup_pending WHERE batch IN (SELECT batch FROM rollup_pending ORDER BY batch LIMIT $1)
    RETURNING batch, min_time, max_time
), m AS (
    SELECT date_trunc('minute', time) AS bucket, device, metric, count(*)::int8 AS count, sum(value) AS sum,
           min(value) AS min, max(value) AS max,
           (max(ARRAY[date_part('epoch', time), value]))[2] AS last_value, max(time) AS last_time
    FROM readings
    WHERE batch = ANY(ARRAY(SELECT batch FROM b))
      AND time >= (SELECT min(min_time) FROM b) AND time <= (SELECT max(max_time) FROM b)
    GROUP BY 1, 2, 3
), lat AS (
    INSERT INTO latest AS l (device, metric, time, value)
    SELECT device, metric, max(last_time), (max(ARRAY[date_part('epoch', last_time), last_value]))[2] FROM m
    GROUP BY device, metric
    ON CONFLICT (device, metric) DO UPDATE SET time = excluded.time, value = excluded.value
        WHERE excluded.time > l.time OR (excluded.time = l.time AND excluded.value > l.value)
    RETURNING 1
)"#;

/// One level of the merge: `{name}` folds the finer level's CTE `{src}` into this level's
/// buckets, `{key}` is the column rows are kept per (`device`, or `segment` for segment
/// rollups).
const MERGE_FOLD: &str = r#", {name} AS (
    SELECT date_trunc('{unit}', bucket) AS bucket, {key}, metric, sum(count)::int8 AS count, sum(sum) AS sum,
           min(min) AS min, max(max) AS max,
           (max(ARRAY[date_part('epoch', last_time), last_value]))[2] AS last_value, max(last_time) AS last_time
    FROM {src} GROUP BY 1, 2, 3
)"#;

/// Adds partials (`excluded`) to a stored rollup row (`r`) with the same key.
const ON_CONFLICT_MERGE: &str = "ON CONFLICT ({key}, metric, bucket) DO UPDATE SET
        count = r.count + excluded.count,
        sum = r.sum + excluded.sum,
        min = least(r.min, excluded.min),
        max = greatest(r.max, excluded.max),
        last_value = CASE WHEN excluded.last_time > r.last_time
                            OR (excluded.last_time = r.last_time AND excluded.last_value > r.last_value)
                          THEN excluded.last_value ELSE r.last_value END,
        last_time = greatest(r.last_time, excluded.last_time)";

/// Merges the partials of CTE `{src}` (those passing `{filter}`) into `{table}`, in key
/// order (the index is walked once, left to right).
const MERGE_WRITE: &str = r#", {name}_w AS (
    INSERT INTO {table} AS r (bucket, {key}, metric, count, sum, min, max, last_value, last_time)
    SELECT * FROM {src}{filter} ORDER BY {key}, metric, bucket
    {conflict}
    RETURNING 1
)"#;

/// The minute partials with the segment each device is linked to now ('' for none).
const SEGMENT_SOURCE: &str = r#", sm AS (
    SELECT m.bucket, coalesce(d.segment_id, '') AS segment, m.metric, m.count, m.sum, m.min, m.max, m.last_value, m.last_time
    FROM m LEFT JOIN devices d ON d.id = m.device
)"#;

/// Native mode: the merge locks the marks of the real-time hourly and daily rollups
/// (migration 10) for the length of its transaction.
const MERGE_MARKS: &str = r#", mk AS (
    SELECT hour_mark, day_mark FROM rollup_marks FOR SHARE
)"#;

/// The merge statement for the device levels this storage mode maintains itself, each
/// with the table it writes and the filter on its partials, plus the segment levels
/// (always maintained here).
fn merge_statement(levels: &[(Resolution, &str, &str)]) -> String {
    let mut sql = MERGE_HEAD.to_owned();
    if levels.iter().any(|(_, _, filter)| filter.contains("mk")) {
        sql.push_str(MERGE_MARKS);
    }
    let mut counts = Vec::new();
    // `m` is already per minute: the minute level writes it as it is.
    let mut level = |sql: &mut String,
                     name: &str,
                     unit: &str,
                     key: &str,
                     src: &str,
                     table: &str,
                     filter: &str| {
        let folded = if unit == "minute" && src == "m" {
            src
        } else {
            sql.push_str(
                &MERGE_FOLD
                    .replace("{name}", name)
                    .replace("{unit}", unit)
                    .replace("{key}", key)
                    .replace("{src}", src),
            );
            name
        };
        sql.push_str(
            &MERGE_WRITE
                .replace("{conflict}", ON_CONFLICT_MERGE)
                .replace("{name}", name)
                .replace("{key}", key)
                .replace("{src}", folded)
                .replace("{filter}", filter)
                .replace("{table}", table),
        );
        counts.push(format!("(SELECT count(*) FROM {name}_w)"));
        folded.to_owned()
    };
    let mut src = "m".to_owned();
    for &(l, table, filter) in levels {
        let (name, unit) = match l {
            Resolution::Minute => ("l1m", "minute"),
            Resolution::Hour => ("l1h", "hour"),
            Resolution::Day => ("l1d", "day"),
            Resolution::Raw => continue,
        };
        src = level(&mut sql, name, unit, "device", &src, table, filter);
    }
    sql.push_str(SEGMENT_SOURCE);
    let s1h = level(&mut sql, "s1h", "hour", "segment", "sm", "segment_rollup_1h", "");
    level(&mut sql, "s1d", "day", "segment", &s1h, "segment_rollup_1d", "");
    sql.push_str(&format!(
        "\nSELECT (SELECT count(*) FROM b) AS batches, coalesce((SELECT sum(count) FROM m), 0)::int8 AS readings, \
         ({})::int8 AS rollup_rows, (SELECT count(*) FROM lat) AS latest",
        counts.join(" + ")
    ));
    sql
}

/// Native mode: folds the `{unit}`s before `$1` from `{src}` into `{table}`, from the
/// level's mark (`$2`) on.
const FOLD_CLOSED: &str = r#"
INSERT INTO {table} AS r (bucket, device, metric, count, sum, min, max, last_value, last_time)
SELECT date_trunc('{unit}', bucket, 'UTC'), device, metric, sum(count)::int8, sum(sum), min(min), max(max),
       (max(ARRAY[date_part('epoch', last_time), last_value]))[2], max(last_time)
FROM {src} WHERE bucket >= $2 AND bucket < $1
GROUP BY 1, 2, 3 ORDER BY 2, 3, 1
{conflict}"#;

fn fold_statement(unit: &str, src: &str, table: &str) -> String {
    FOLD_CLOSED
        .replace("{conflict}", &ON_CONFLICT_MERGE.replace("{key}", "device"))
        .replace("{unit}", unit)
        .replace("{src}", src)
        .replace("{table}", table)
}

fn join(segments: &[telemetry::SegmentId]) -> String {
    segments.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

pub(crate) fn ts(t: EventTime) -> OffsetDateTime {
    t.to_offset_date_time()
}

pub(crate) fn et(t: OffsetDateTime) -> EventTime {
    EventTime::from_offset_date_time(t)
}

/// Days since the Unix epoch of an event time (UTC).
fn day_of(t: EventTime) -> i64 {
    t.millis().div_euclid(crate::history::DAY_MS)
}

fn date_of_day(day: i64) -> Result<time::Date, StoreError> {
    // 2,440,588 is the Julian day number of 1970-01-01.
    i32::try_from(day + 2_440_588).ok().and_then(|j| time::Date::from_julian_day(j).ok()).ok_or(
        StoreError::InvalidQuery { param: "time", message: format!("day {day} is out of range") },
    )
}

fn is_code(e: &sqlx::Error, code: &str) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some(code))
}

const MODE_NATIVE: u8 = 1;
const MODE_TIMESCALE: u8 = 2;

impl PgStore {
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(url)?.options([("TimeZone", "UTC")]);
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
                    Ok(())
                })
            })
            .connect_with(connect)
            .await?;
        let store = Self {
            pool,
            mode: Arc::new(AtomicU8::new(0)),
            partitions: Arc::new(Mutex::new(HashSet::new())),
            hour_mark: Arc::new(AtomicI64::new(0)),
            options: options.clone(),
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

    /// Make sure the daily partitions holding these days exist (native mode).
    async fn ensure_partitions(
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

    pub async fn write_batch(&self, batch: &Batch) -> Result<BatchOutcome, StoreError> {
        // Read before writing: maintenance moves the horizon in the transaction that drops
        // the partitions, and a write into a dropped partition fails and is retried.
        let refused = refuse_too_old(batch, self.horizons().await?.raw);
        let older_than_retention =
            refused.as_ref().map_or(0, |b| (batch.readings.len() - b.readings.len()) as u64);
        let batch = refused.as_ref().unwrap_or(batch);
        let outcome = self.write_checked(batch).await?;
        Ok(BatchOutcome { older_than_retention, ..outcome })
    }

    async fn write_checked(&self, batch: &Batch) -> Result<BatchOutcome, StoreError> {
        if self.storage_mode() == StorageMode::Native && !batch.readings.is_empty() {
            self.ensure_partitions(batch.readings.iter().map(|r| day_of(r.time))).await?;
        }
        let result = match self.options.write_method {
            WriteMethod::Copy => match self.write_copy(batch).await {
                // The batch holds a reading stored before (a redelivery): only the
                // conflict-skipping path can write it.
                Err(StoreError::Db(e)) if is_code(&e, "23505") => self.write_unnest(batch).await,
                other => other,
            },
            WriteMethod::Unnest => self.write_unnest(batch).await,
        };
        match result {
            // A partition vanished under us (dropped by retention in another process):
            // forget what we knew and create it again.
            Err(StoreError::Db(e)) if is_code(&e, "23514") => {
                self.partitions.lock().unwrap_or_else(|p| p.into_inner()).clear();
                Err(StoreError::Db(e))
            }
            other => other,
        }
    }

    /// Binary COPY of the batch's distinct readings, tagged with the batch's id, straight
    /// into `readings`. Fails with a unique violation when any reading was stored before.
    async fn write_copy(&self, batch: &Batch) -> Result<BatchOutcome, StoreError> {
        let mut seen = HashSet::with_capacity(batch.readings.len());
        let unique: Vec<&telemetry::Reading> =
            batch.readings.iter().filter(|r| seen.insert((&r.device, r.metric, r.time))).collect();
        let mut tx = self.pool.begin().await?;
        register_devices(&mut tx, batch).await?;
        if let Some(id) = register_batch(&mut tx, batch).await? {
            let mut enc = CopyEncoder::with_capacity(unique.len() * 80);
            for r in &unique {
                enc.row(6);
                enc.timestamptz(r.time);
                enc.text(r.device.as_str());
                enc.text(r.metric.as_str());
                enc.f64(r.value);
                match r.seq {
                    Some(s) => enc.i64(i64::try_from(s.0).unwrap_or(i64::MAX)),
                    None => enc.null(),
                }
                enc.i64(id);
            }
            copy_in(&mut tx, "COPY readings (time, device, metric, value, seq, batch) FROM STDIN (FORMAT binary)", enc.finish()).await?;
        }
        let outcome = BatchOutcome {
            inserted: unique.len() as u64,
            duplicates: (batch.readings.len() - unique.len()) as u64,
            dead_letters: batch.dead_letters.len() as u64,
            older_than_retention: 0,
        };
        insert_dead_letters(&mut tx, &batch.dead_letters).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn write_unnest(&self, batch: &Batch) -> Result<BatchOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        register_devices(&mut tx, batch).await?;
        let mut outcome = BatchOutcome::default();
        if let Some(id) = register_batch(&mut tx, batch).await? {
            let n = batch.readings.len();
            let (mut times, mut devices, mut metrics, mut values, mut seqs) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for r in &batch.readings {
                times.push(ts(r.time));
                devices.push(r.device.as_str());
                metrics.push(r.metric.as_str());
                values.push(r.value);
                seqs.push(r.seq.map(|s| i64::try_from(s.0).unwrap_or(i64::MAX)));
            }
            let row = sqlx::query(INSERT_BATCH)
                .bind(&times)
                .bind(&devices)
                .bind(&metrics)
                .bind(&values)
                .bind(&seqs)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            let inserted: i64 = row.try_get("inserted")?;
            outcome.inserted = inserted as u64;
            outcome.duplicates = n as u64 - outcome.inserted;
        }
        insert_dead_letters(&mut tx, &batch.dead_letters).await?;
        outcome.dead_letters = batch.dead_letters.len() as u64;
        tx.commit().await?;
        Ok(outcome)
    }

    pub async fn merge_rollups(&self, max_batches: usize) -> Result<MergeOutcome, StoreError> {
        // Built once per storage mode: under TimescaleDB the hourly and daily levels are
        // continuous aggregates over rollup_1m.
        static NATIVE: LazyLock<String> = LazyLock::new(|| {
            merge_statement(&[
                (Resolution::Minute, "rollup_1m", ""),
                // Buckets from the marks on are aggregated from rollup_1m when read.
                (
                    Resolution::Hour,
                    "rollup_1h_closed",
                    " WHERE bucket < (SELECT hour_mark FROM mk)",
                ),
                (Resolution::Day, "rollup_1d_closed", " WHERE bucket < (SELECT day_mark FROM mk)"),
            ])
        });
        static TIMESCALE: LazyLock<String> =
            LazyLock::new(|| merge_statement(&[(Resolution::Minute, "rollup_1m", "")]));
        let statement: &str = match self.storage_mode() {
            StorageMode::TimescaleDb => &TIMESCALE,
            _ => &NATIVE,
        };
        let mut tx = self.pool.begin().await?;
        // A merge lost in a crash is rolled back whole (its batches stay pending and are
        // merged again), so it need not wait for its commit to reach the disk.
        tx.execute("SET LOCAL synchronous_commit = off").await?;
        // The merge's hash aggregates and sorts hold one row per (key, bucket) of up to
        // `max_batches` batches: at 4 MB (the default) they spill to disk.
        tx.execute("SET LOCAL work_mem = '32MB'").await?;
        let row = sqlx::query(statement).bind(max_batches as i64).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(MergeOutcome {
            batches: row.try_get::<i64, _>("batches")? as u64,
            readings: row.try_get::<i64, _>("readings")? as u64,
            rollup_rows: row.try_get::<i64, _>("rollup_rows")? as u64,
        })
    }

    /// Native mode: folds the hours that ended before `now` into rollup_1h_closed, and
    /// the days whose hours are all folded into rollup_1d_closed, moving the marks of the
    /// real-time rollups (migration 10), a day of hours per transaction. Cheap when there
    /// is nothing to fold (the hour mark is cached). Returns the rows written.
    pub async fn fold_closed_rollups(&self, now: EventTime) -> Result<u64, StoreError> {
        const HOUR_MS: i64 = 3_600_000;
        const DAY_MS: i64 = crate::history::DAY_MS;
        static HOURS: LazyLock<String> =
            LazyLock::new(|| fold_statement("hour", "rollup_1m", "rollup_1h_closed"));
        static DAYS: LazyLock<String> =
            LazyLock::new(|| fold_statement("day", "rollup_1h_closed", "rollup_1d_closed"));
        if self.storage_mode() != StorageMode::Native {
            return Ok(0);
        }
        let hour = now.millis().div_euclid(HOUR_MS) * HOUR_MS;
        let mut rows = 0;
        while hour > self.hour_mark.load(Ordering::Relaxed) {
            let mut tx = self.pool.begin().await?;
            // Waits for the merges in flight (they hold the row FOR SHARE).
            let (hour_mark, day_mark): (OffsetDateTime, OffsetDateTime) =
                sqlx::query_as("SELECT hour_mark, day_mark FROM rollup_marks FOR UPDATE")
                    .fetch_one(&mut *tx)
                    .await?;
            let (hour_mark, day_mark) = (et(hour_mark).millis(), et(day_mark).millis());
            let hours_to = hour.min(hour_mark + DAY_MS).max(hour_mark);
            if hours_to > hour_mark {
                let done = sqlx::query(&HOURS)
                    .bind(ts(EventTime(hours_to)))
                    .bind(ts(EventTime(hour_mark)))
                    .execute(&mut *tx)
                    .await?;
                rows += done.rows_affected();
                sqlx::query("UPDATE rollup_marks SET hour_mark = $1")
                    .bind(ts(EventTime(hours_to)))
                    .execute(&mut *tx)
                    .await?;
            }
            // A day is folded once all its hours are.
            let days_to = hours_to.div_euclid(DAY_MS) * DAY_MS;
            if days_to > day_mark {
                let done = sqlx::query(&DAYS)
                    .bind(ts(EventTime(days_to)))
                    .bind(ts(EventTime(day_mark)))
                    .execute(&mut *tx)
                    .await?;
                rows += done.rows_affected();
                sqlx::query("UPDATE rollup_marks SET day_mark = $1")
                    .bind(ts(EventTime(days_to)))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            self.hour_mark.store(hours_to, Ordering::Relaxed);
            if hours_to > hour_mark {
                tracing::info!(rows, hour_mark = %ts(EventTime(hours_to)), "folded closed hours and days into the stored rollups");
            }
        }
        Ok(rows)
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
    async fn apply_timescale_policies(&self) -> Result<(), StoreError> {
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

    /// The query's subject as a filter on `$5`, and the table holding `level` for it
    /// (segment tables hold hours and days per road segment).
    fn history_source(
        q: &HistoryQuery,
        level: Resolution,
    ) -> (String, &'static str, Option<String>) {
        let by_segment =
            level.segment_table().filter(|_| !matches!(q.subject, HistorySubject::Device(_)));
        let (filter, subject): (&str, Option<String>) = match (&q.subject, by_segment) {
            (HistorySubject::Device(d), _) => ("AND device = $5", Some(d.to_string())),
            (HistorySubject::Segment(s), Some(_)) => ("AND segment = $5", Some(s.to_string())),
            (HistorySubject::Segment(s), None) => ("AND device IN (SELECT id FROM devices WHERE segment_id = $5)", Some(s.to_string())),
            // Segment ids have no commas.
            (HistorySubject::Segments(list), Some(_)) => ("AND segment = ANY(string_to_array($5, ','))", Some(join(list))),
            (HistorySubject::Segments(list), None) => {
                ("AND device IN (SELECT id FROM devices WHERE segment_id = ANY(string_to_array($5, ',')))", Some(join(list)))
            }
            (HistorySubject::City, _) => ("AND $5::text IS NULL", None),
        };
        (filter.to_owned(), by_segment.unwrap_or(level.table()), subject)
    }

    /// Raw readings of `[from, to)`, one point each.
    pub async fn history_raw(&self, q: &HistoryQuery) -> Result<Vec<HistoryPoint>, StoreError> {
        let (filter, _, subject) = Self::history_source(q, Resolution::Raw);
        let sql = format!(
            "SELECT time AS t, value FROM readings
             WHERE metric = $1 AND time >= $2 AND time < $3 {filter} ORDER BY time, device LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(q.metric.as_str())
            .bind(ts(q.from))
            .bind(ts(q.to))
            .bind(q.limit as i64)
            .bind(subject)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let v: f64 = row.try_get("value")?;
                Ok(HistoryPoint {
                    time: et(row.try_get("t")?),
                    count: 1,
                    sum: v,
                    min: v,
                    max: v,
                    last: v,
                })
            })
            .collect()
    }

    /// One piece of a stepped query, aggregated into epoch-aligned buckets of `step_ms`.
    pub async fn history_piece(
        &self,
        q: &HistoryQuery,
        piece: Piece,
        step_ms: i64,
    ) -> Result<Vec<SourceRow>, StoreError> {
        let (filter, table, subject) = Self::history_source(q, piece.level);
        let bin =
            |col: &str| format!("date_bin(make_interval(secs => $6), {col}, timestamptz 'epoch')");
        let sql = match piece.level {
            Resolution::Raw => format!(
                "SELECT {t} AS t, count(*)::int8 AS count, sum(value) AS sum, min(value) AS min, max(value) AS max,
                        (max(ARRAY[date_part('epoch', time), value]))[2] AS last, max(time) AS last_time
                 FROM readings WHERE metric = $1 AND time >= $2 AND time < $3 {filter}
                 GROUP BY 1 ORDER BY 1 LIMIT $4",
                t = bin("time")
            ),
            _ => format!(
                "SELECT {t} AS t, sum(count)::int8 AS count, sum(sum) AS sum, min(min) AS min, max(max) AS max,
                        (max(ARRAY[date_part('epoch', last_time), last_value]))[2] AS last, max(last_time) AS last_time
                 FROM {table} WHERE metric = $1 AND bucket >= $2 AND bucket < $3 {filter}
                 GROUP BY 1 ORDER BY 1 LIMIT $4",
                t = bin("bucket")
            ),
        };
        let rows = sqlx::query(&sql)
            .bind(q.metric.as_str())
            .bind(ts(piece.from))
            .bind(ts(piece.to))
            .bind(q.limit as i64)
            .bind(subject)
            .bind(step_ms as f64 / 1_000.0)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(SourceRow {
                    bucket: et(row.try_get("t")?),
                    partial: Partial {
                        count: row.try_get("count")?,
                        sum: row.try_get("sum")?,
                        min: row.try_get("min")?,
                        max: row.try_get("max")?,
                        last_value: row.try_get("last")?,
                        last_time: et(row.try_get("last_time")?),
                    },
                })
            })
            .collect()
    }

    pub async fn latest(
        &self,
        device: Option<&telemetry::DeviceId>,
        metric: Option<MetricId>,
    ) -> Result<Vec<LatestValue>, StoreError> {
        let rows = sqlx::query(
            "SELECT device, metric, time, value FROM latest
             WHERE ($1::text IS NULL OR device = $1) AND ($2::text IS NULL OR metric = $2)
             ORDER BY device, metric",
        )
        .bind(device.map(|d| d.as_str()))
        .bind(metric.map(MetricId::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(LatestValue {
                    device: parse_device(row.try_get("device")?)?,
                    metric: parse_metric(row.try_get("metric")?)?,
                    time: et(row.try_get("time")?),
                    value: row.try_get("value")?,
                })
            })
            .collect()
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

fn partition_name(day: i64) -> Result<String, StoreError> {
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

async fn register_devices(tx: &mut sqlx::PgConnection, batch: &Batch) -> Result<(), StoreError> {
    if batch.new_devices.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = batch.new_devices.iter().map(|d| d.as_str()).collect();
    sqlx::query(
        "INSERT INTO devices (id) SELECT * FROM unnest($1::text[]) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Give a batch with readings its id and register it for the rollup merger.
async fn register_batch(
    tx: &mut sqlx::PgConnection,
    batch: &Batch,
) -> Result<Option<i64>, StoreError> {
    let (Some(min), Some(max)) =
        (batch.readings.iter().map(|r| r.time).min(), batch.readings.iter().map(|r| r.time).max())
    else {
        return Ok(None);
    };
    Ok(Some(
        sqlx::query_scalar(REGISTER_BATCH).bind(ts(min)).bind(ts(max)).fetch_one(&mut *tx).await?,
    ))
}

async fn copy_in(
    tx: &mut sqlx::PgConnection,
    statement: &str,
    data: Vec<u8>,
) -> Result<u64, StoreError> {
    let mut copy = tx.copy_in_raw(statement).await?;
    if let Err(e) = copy.send(data).await {
        // Abort the COPY so the connection is usable again; the transaction rolls back.
        let _ = copy.abort("write failed").await;
        return Err(e.into());
    }
    Ok(copy.finish().await?)
}

async fn insert_dead_letters(
    tx: &mut sqlx::PgConnection,
    letters: &[DeadLetter],
) -> Result<(), StoreError> {
    if letters.is_empty() {
        return Ok(());
    }
    let received: Vec<OffsetDateTime> = letters.iter().map(|d| ts(d.received_at)).collect();
    let topics: Vec<&str> = letters.iter().map(|d| d.topic.as_str()).collect();
    let devices: Vec<Option<&str>> =
        letters.iter().map(|d| d.device.as_ref().map(|x| x.as_str())).collect();
    let reasons: Vec<&str> = letters.iter().map(|d| d.reason.as_str()).collect();
    let details: Vec<&str> = letters.iter().map(|d| d.detail.as_str()).collect();
    let payloads: Vec<&[u8]> = letters.iter().map(|d| d.payload.as_slice()).collect();
    let sizes: Vec<i32> =
        letters.iter().map(|d| i32::try_from(d.payload_size).unwrap_or(i32::MAX)).collect();
    sqlx::query(
        "INSERT INTO dead_letters (received_at, topic, device, reason, detail, payload, payload_size)
         SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::int4[])",
    )
    .bind(&received)
    .bind(&topics)
    .bind(&devices)
    .bind(&reasons)
    .bind(&details)
    .bind(&payloads)
    .bind(&sizes)
    .execute(&mut *tx)
    .await?;
    Ok(())
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
