//! SQLite backend for the embedded demo, with the semantics of the PostgreSQL one: the same
//! dedupe key, rollups merged from the rows actually inserted, one transaction per batch.
//! Times are stored as Unix milliseconds. The database runs in WAL mode with
//! `synchronous = FULL`, so a committed batch survives a crash of the process or the host.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row};
use telemetry::{DeviceId, EventTime, MetricId, Partial, RoadSegment};

use crate::history::{fold, HistoryPoint, HistoryQuery, HistorySubject, Plan, Resolution, SourceRow};
use crate::rollup::partials;
use crate::{
    parse_device, parse_metric, parse_segment, Batch, BatchOutcome, DeadLetter, DeviceRecord, LatestValue, MaintenanceReport,
    MergeOutcome, Retention, StoreError, StoreOptions,
};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "foundation", include_str!("../migrations/sqlite/0001_foundation.sql")),
    (2, "time series", include_str!("../migrations/sqlite/0002_timeseries.sql")),
];

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
            let done: Option<i64> = sqlx::query_scalar("SELECT version FROM sccr_migrations WHERE version = ?")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
            if done.is_some() {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(|source| StoreError::Migration { version, name, source })?;
            sqlx::query("INSERT INTO sccr_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)")
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
        for level in Resolution::ROLLUPS {
            let (width, table) = (level.bucket_ms().unwrap_or(i64::MAX), level.table());
            for ((device, metric, bucket), p) in partials(inserted.iter().copied(), width) {
                sqlx::query(&format!(
                    "INSERT INTO {table} AS r (bucket_ms, device, metric, count, sum, min, max, last_value, last_time_ms)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (device, metric, bucket_ms) DO UPDATE SET
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
                .bind(device.as_str())
                .bind(metric.as_str())
                .bind(p.count)
                .bind(p.sum)
                .bind(p.min)
                .bind(p.max)
                .bind(p.last_value)
                .bind(p.last_time.millis())
                .execute(&mut *tx)
                .await?;
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
        })
    }

    pub async fn upsert_segments(&self, segments: &[RoadSegment]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for s in segments {
            let coords = serde_json::to_string(&s.coordinates).unwrap_or_default();
            sqlx::query(
                "INSERT INTO road_segments (id, name, kind, coordinates, length_m, lanes, speed_limit_kmh, free_flow_kmh, capacity_vph)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, coordinates = excluded.coordinates,
                   length_m = excluded.length_m, lanes = excluded.lanes, speed_limit_kmh = excluded.speed_limit_kmh,
                   free_flow_kmh = excluded.free_flow_kmh, capacity_vph = excluded.capacity_vph",
            )
            .bind(s.id.as_str())
            .bind(&s.name)
            .bind(&s.kind)
            .bind(coords)
            .bind(s.length_m)
            .bind(i64::from(s.lanes))
            .bind(s.speed_limit_kmh)
            .bind(s.free_flow_kmh)
            .bind(s.capacity_vph)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn segments(&self) -> Result<Vec<RoadSegment>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, kind, coordinates, length_m, lanes, speed_limit_kmh, free_flow_kmh, capacity_vph FROM road_segments ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let text: String = row.try_get("coordinates")?;
                let coordinates = serde_json::from_str(&text).map_err(|_| StoreError::Corrupt { what: "coordinates", value: text })?;
                Ok(RoadSegment {
                    id: parse_segment(row.try_get("id")?)?,
                    name: row.try_get("name")?,
                    kind: row.try_get("kind")?,
                    coordinates,
                    length_m: row.try_get("length_m")?,
                    lanes: row.try_get::<i64, _>("lanes")? as u32,
                    speed_limit_kmh: row.try_get("speed_limit_kmh")?,
                    free_flow_kmh: row.try_get("free_flow_kmh")?,
                    capacity_vph: row.try_get("capacity_vph")?,
                })
            })
            .collect()
    }

    pub async fn upsert_devices(&self, devices: &[DeviceRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for d in devices {
            sqlx::query(
                "INSERT INTO devices (id, kind, segment_id, registered_at_ms) VALUES (?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, segment_id = excluded.segment_id",
            )
            .bind(d.id.as_str())
            .bind(d.kind.as_deref())
            .bind(d.segment.as_ref().map(|s| s.as_str()))
            .bind(d.registered_at.millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows = sqlx::query("SELECT id, kind, segment_id, registered_at_ms FROM devices ORDER BY id").fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|row| {
                Ok(DeviceRecord {
                    id: parse_device(row.try_get("id")?)?,
                    kind: row.try_get("kind")?,
                    segment: row.try_get::<Option<String>, _>("segment_id")?.map(parse_segment).transpose()?,
                    registered_at: EventTime(row.try_get("registered_at_ms")?),
                })
            })
            .collect()
    }

    pub async fn latest(&self, device: Option<&DeviceId>, metric: Option<MetricId>) -> Result<Vec<LatestValue>, StoreError> {
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

    pub async fn history(&self, q: &HistoryQuery, plan: Plan) -> Result<Vec<HistoryPoint>, StoreError> {
        let (filter, subject): (&str, Option<&str>) = match &q.subject {
            HistorySubject::Device(d) => ("AND device = ?5", Some(d.as_str())),
            HistorySubject::Segment(s) => ("AND device IN (SELECT id FROM devices WHERE segment_id = ?5)", Some(s.as_str())),
            HistorySubject::City => ("AND ?5 IS NULL", None),
        };
        let Some(step) = plan.step_ms else {
            let sql = format!(
                "SELECT time_ms, value FROM readings WHERE metric = ?1 AND time_ms >= ?2 AND time_ms < ?3 {filter}
                 ORDER BY time_ms, device LIMIT ?4"
            );
            let rows = sqlx::query(&sql).bind(q.metric.as_str()).bind(q.from.millis()).bind(q.to.millis()).bind(q.limit as i64).bind(subject).fetch_all(&self.pool).await?;
            return rows
                .into_iter()
                .map(|row| {
                    let v: f64 = row.try_get("value")?;
                    Ok(HistoryPoint { time: EventTime(row.try_get("time_ms")?), count: 1, sum: v, min: v, max: v, last: v })
                })
                .collect();
        };
        // The rows of the source level are folded into the step here rather than in SQL:
        // SQLite has no aggregate for "value at the latest time" next to min and max.
        let sql = format!(
            "SELECT bucket_ms, count, sum, min, max, last_value, last_time_ms FROM {table}
             WHERE metric = ?1 AND bucket_ms >= ?2 AND bucket_ms < ?3 {filter}",
            table = plan.source.table()
        );
        // ?4 (the limit) applies after folding; it is bound so that ?5 keeps its place.
        let rows = sqlx::query(&sql)
            .bind(q.metric.as_str())
            .bind(q.from.millis())
            .bind(q.to.millis())
            .bind(q.limit as i64)
            .bind(subject)
            .fetch_all(&self.pool)
            .await?;
        let source = rows
            .into_iter()
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
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut points = fold(source, step);
        points.truncate(q.limit);
        Ok(points)
    }

    /// Rollups are merged inside each batch's transaction: nothing is ever pending.
    pub async fn merge_rollups(&self, _limit: usize) -> Result<MergeOutcome, StoreError> {
        Ok(MergeOutcome::default())
    }

    pub async fn maintain(&self, now: EventTime) -> Result<MaintenanceReport, StoreError> {
        let mut report = MaintenanceReport::default();
        let r = self.retention;
        if let Some(raw) = r.raw {
            let cutoff = now.millis() - raw.as_millis() as i64;
            sqlx::query("DELETE FROM readings WHERE time_ms < ?").bind(cutoff).execute(&self.pool).await?;
        }
        for (level, keep) in [(Resolution::Minute, r.rollup_1m), (Resolution::Hour, r.rollup_1h), (Resolution::Day, r.rollup_1d)] {
            let Some(keep) = keep else { continue };
            let cutoff = now.millis() - keep.as_millis() as i64;
            let done = sqlx::query(&format!("DELETE FROM {} WHERE bucket_ms < ?", level.table())).bind(cutoff).execute(&self.pool).await?;
            report.rollup_rows_deleted += done.rows_affected();
        }
        Ok(report)
    }

    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT received_at_ms, topic, device, reason, detail, payload, payload_size FROM dead_letters ORDER BY id DESC LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(DeadLetter {
                    received_at: EventTime(row.try_get("received_at_ms")?),
                    topic: row.try_get("topic")?,
                    device: row.try_get::<Option<String>, _>("device")?.map(parse_device).transpose()?,
                    reason: row.try_get("reason")?,
                    detail: row.try_get("detail")?,
                    payload: row.try_get("payload")?,
                    payload_size: row.try_get::<i64, _>("payload_size")? as usize,
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
