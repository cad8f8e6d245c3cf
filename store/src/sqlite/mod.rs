//! SQLite backend for the embedded demo, with the semantics of the PostgreSQL one: the same
//! dedupe key, rollups merged from the rows actually inserted, one transaction per batch.
//! Times are stored as Unix milliseconds. The database runs in WAL mode with
//! `synchronous = FULL`, so a committed batch survives a crash of the process or the host.

mod access;
mod alert;
mod commands;
mod dead_letter_log;
pub(crate) mod outbox;
mod registry;
pub(crate) mod stream_state;

use std::collections::HashMap;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, Row};
use telemetry::{DeviceId, EventTime, MetricId, Partial};

use crate::history::{
    point, HistoryPoint, HistoryQuery, HistorySubject, Horizons, Piece, Resolution, SourceRow,
};
use crate::rollup::{partials, partials_by};
use crate::{
    parse_device, parse_metric, refuse_too_old, Batch, BatchOutcome, LatestValue,
    MaintenanceReport, MergeOutcome, Retention, StoreError, StoreOptions,
};

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
];

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
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
        // An in-memory database exists per connection: keep exactly one.
        let max = if url.contains(":memory:") { 1 } else { options.max_connections };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        Ok(Self { pool, retention: options.retention })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
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

    pub async fn write_batch(&self, batch: &Batch) -> Result<BatchOutcome, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let refused = refuse_too_old(batch, raw_horizon(&mut tx).await?);
        let older_than_retention =
            refused.as_ref().map_or(0, |b| (batch.readings.len() - b.readings.len()) as u64);
        let batch = refused.as_ref().unwrap_or(batch);
        let now = EventTime::now().millis();
        for d in &batch.new_devices {
            sqlx::query("INSERT INTO devices (id, registered_at_ms) VALUES (?, ?) ON CONFLICT (id) DO NOTHING")
                .bind(d.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        let mut inserted = Vec::with_capacity(batch.readings.len());
        for r in &batch.readings {
            let res = sqlx::query(
                "INSERT INTO readings (time_ms, device, metric, value, seq) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(r.time.millis())
            .bind(r.device.as_str())
            .bind(r.metric.as_str())
            .bind(r.value)
            .bind(r.seq.map(|s| i64::try_from(s.0).unwrap_or(i64::MAX)))
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 1 {
                inserted.push(r);
            }
        }
        let segments =
            if inserted.is_empty() { HashMap::new() } else { device_segments(&mut tx).await? };
        for level in Resolution::ROLLUPS {
            let width = level.bucket_ms().unwrap_or(i64::MAX);
            for ((device, metric, bucket), p) in partials(inserted.iter().copied(), width) {
                merge_rollup_row(
                    &mut tx,
                    level.table(),
                    "device",
                    device.as_str(),
                    metric,
                    bucket,
                    &p,
                )
                .await?;
            }
            let Some(table) = level.segment_table() else { continue };
            let per_segment = partials_by(inserted.iter().copied(), width, |r| {
                segments.get(r.device.as_str()).map_or("", String::as_str)
            });
            for ((segment, metric, bucket), p) in per_segment {
                merge_rollup_row(&mut tx, table, "segment", segment, metric, bucket, &p).await?;
            }
        }
        // One bucket spanning all time: the newest inserted value per (device, metric).
        for ((device, metric, _), p) in partials(inserted.iter().copied(), i64::MAX) {
            sqlx::query(
                "INSERT INTO latest AS l (device, metric, time_ms, value) VALUES (?, ?, ?, ?)
                 ON CONFLICT (device, metric) DO UPDATE SET time_ms = excluded.time_ms, value = excluded.value
                 WHERE excluded.time_ms >= l.time_ms",
            )
            .bind(device.as_str())
            .bind(metric.as_str())
            .bind(p.last_time.millis())
            .bind(p.last_value)
            .execute(&mut *tx)
            .await?;
        }
        for d in &batch.dead_letters {
            sqlx::query(
                "INSERT INTO dead_letters (received_at_ms, topic, device, reason, detail, payload, payload_size) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(d.received_at.millis())
            .bind(&d.topic)
            .bind(d.device.as_ref().map(DeviceId::as_str))
            .bind(&d.reason)
            .bind(&d.detail)
            .bind(&d.payload)
            .bind(d.payload_size as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(BatchOutcome {
            inserted: inserted.len() as u64,
            duplicates: (batch.readings.len() - inserted.len()) as u64,
            dead_letters: batch.dead_letters.len() as u64,
            older_than_retention,
        })
    }

    pub async fn latest(
        &self,
        device: Option<&DeviceId>,
        metric: Option<MetricId>,
    ) -> Result<Vec<LatestValue>, StoreError> {
        let rows = sqlx::query(
            "SELECT device, metric, time_ms, value FROM latest
             WHERE (?1 IS NULL OR device = ?1) AND (?2 IS NULL OR metric = ?2) ORDER BY device, metric",
        )
        .bind(device.map(DeviceId::as_str))
        .bind(metric.map(MetricId::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(LatestValue {
                    device: parse_device(row.try_get("device")?)?,
                    metric: parse_metric(row.try_get("metric")?)?,
                    time: EventTime(row.try_get("time_ms")?),
                    value: row.try_get("value")?,
                })
            })
            .collect()
    }

    /// The query's subject as a filter on `?5`, and the table holding `level` for it.
    fn history_source(
        q: &HistoryQuery,
        level: Resolution,
    ) -> (String, &'static str, Option<String>) {
        let by_segment =
            level.segment_table().filter(|_| !matches!(q.subject, HistorySubject::Device(_)));
        let (filter, subject): (&str, Option<String>) = match (&q.subject, by_segment) {
            (HistorySubject::Device(d), _) => ("AND device = ?5", Some(d.to_string())),
            (HistorySubject::Segment(s), Some(_)) => ("AND segment = ?5", Some(s.to_string())),
            (HistorySubject::Segment(s), None) => ("AND device IN (SELECT id FROM devices WHERE segment_id = ?5)", Some(s.to_string())),
            (HistorySubject::Segments(list), Some(_)) => ("AND segment IN (SELECT value FROM json_each(?5))", Some(json_list(list))),
            (HistorySubject::Segments(list), None) => {
                ("AND device IN (SELECT id FROM devices WHERE segment_id IN (SELECT value FROM json_each(?5)))", Some(json_list(list)))
            }
            (HistorySubject::City, _) => ("AND ?5 IS NULL", None),
        };
        (filter.to_owned(), by_segment.unwrap_or(level.table()), subject)
    }

    /// Raw readings of `[from, to)`, one point each.
    pub async fn history_raw(&self, q: &HistoryQuery) -> Result<Vec<HistoryPoint>, StoreError> {
        let rows = self.raw_rows(q, q.from, q.to, Some(q.limit)).await?;
        Ok(rows.into_iter().map(|r| point(r.bucket, &r.partial)).collect())
    }

    async fn raw_rows(
        &self,
        q: &HistoryQuery,
        from: EventTime,
        to: EventTime,
        limit: Option<usize>,
    ) -> Result<Vec<SourceRow>, StoreError> {
        let (filter, _, subject) = Self::history_source(q, Resolution::Raw);
        let sql = format!(
            "SELECT time_ms, value FROM readings WHERE metric = ?1 AND time_ms >= ?2 AND time_ms < ?3 {filter}
             ORDER BY time_ms, device LIMIT ?4"
        );
        let rows = sqlx::query(&sql)
            .bind(q.metric.as_str())
            .bind(from.millis())
            .bind(to.millis())
            .bind(limit.map_or(-1, |l| l as i64))
            .bind(subject.as_deref())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let t = EventTime(row.try_get("time_ms")?);
                Ok(SourceRow { bucket: t, partial: Partial::of(t, row.try_get("value")?) })
            })
            .collect()
    }

    /// One piece of a stepped query as stored; the caller folds the rows into the step
    /// (SQLite has no aggregate for "value at the latest time" next to min and max).
    pub async fn history_piece(
        &self,
        q: &HistoryQuery,
        piece: Piece,
        _step_ms: i64,
    ) -> Result<Vec<SourceRow>, StoreError> {
        if piece.level == Resolution::Raw {
            return self.raw_rows(q, piece.from, piece.to, None).await;
        }
        let (filter, table, subject) = Self::history_source(q, piece.level);
        let sql = format!(
            "SELECT bucket_ms, count, sum, min, max, last_value, last_time_ms FROM {table}
             WHERE metric = ?1 AND bucket_ms >= ?2 AND bucket_ms < ?3 {filter}"
        );
        // ?4 (the limit) applies after folding; it is bound so that ?5 keeps its place.
        let rows = sqlx::query(&sql)
            .bind(q.metric.as_str())
            .bind(piece.from.millis())
            .bind(piece.to.millis())
            .bind(q.limit as i64)
            .bind(subject.as_deref())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(SourceRow {
                    bucket: EventTime(row.try_get("bucket_ms")?),
                    partial: Partial {
                        count: row.try_get("count")?,
                        sum: row.try_get("sum")?,
                        min: row.try_get("min")?,
                        max: row.try_get("max")?,
                        last_value: row.try_get("last_value")?,
                        last_time: EventTime(row.try_get("last_time_ms")?),
                    },
                })
            })
            .collect()
    }

    /// Rollups are merged inside each batch's transaction: nothing is ever pending.
    pub async fn merge_rollups(&self, _max_batches: usize) -> Result<MergeOutcome, StoreError> {
        Ok(MergeOutcome::default())
    }

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
            let mut tx = self.pool.begin().await?;
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

    /// From when each level is whole (see [`Horizons`]).
    pub async fn horizons(&self) -> Result<Horizons, StoreError> {
        horizons_of(
            sqlx::query("SELECT level, horizon_ms FROM retention_horizons")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Device → segment links of every device with one.
async fn device_segments(
    tx: &mut sqlx::SqliteConnection,
) -> Result<HashMap<String, String>, StoreError> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, segment_id FROM devices WHERE segment_id IS NOT NULL")
            .fetch_all(&mut *tx)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Merge one partial into a rollup row keyed by (`key`, metric, bucket).
async fn merge_rollup_row(
    tx: &mut sqlx::SqliteConnection,
    table: &str,
    key: &str,
    id: &str,
    metric: MetricId,
    bucket: EventTime,
    p: &Partial,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO {table} AS r (bucket_ms, {key}, metric, count, sum, min, max, last_value, last_time_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT ({key}, metric, bucket_ms) DO UPDATE SET
           count = r.count + excluded.count,
           sum = r.sum + excluded.sum,
           min = min(r.min, excluded.min),
           max = max(r.max, excluded.max),
           last_value = CASE WHEN excluded.last_time_ms > r.last_time_ms
                               OR (excluded.last_time_ms = r.last_time_ms AND excluded.last_value > r.last_value)
                             THEN excluded.last_value ELSE r.last_value END,
           last_time_ms = max(r.last_time_ms, excluded.last_time_ms)"
    ))
    .bind(bucket.millis())
    .bind(id)
    .bind(metric.as_str())
    .bind(p.count)
    .bind(p.sum)
    .bind(p.min)
    .bind(p.max)
    .bind(p.last_value)
    .bind(p.last_time.millis())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn json_list(segments: &[telemetry::SegmentId]) -> String {
    serde_json::Value::from(segments.iter().map(|s| s.as_str()).collect::<Vec<_>>()).to_string()
}

fn horizons_of(rows: Vec<SqliteRow>) -> Result<Horizons, StoreError> {
    let mut h = Horizons::default();
    for row in rows {
        h.record(row.try_get("level")?, EventTime(row.try_get("horizon_ms")?))?;
    }
    Ok(h)
}

/// The horizon of raw readings, read inside a write transaction.
async fn raw_horizon(conn: &mut sqlx::SqliteConnection) -> Result<Option<EventTime>, StoreError> {
    let t: Option<i64> =
        sqlx::query_scalar("SELECT horizon_ms FROM retention_horizons WHERE level = 'raw'")
            .fetch_optional(conn)
            .await?;
    Ok(t.map(EventTime))
}
