//! PostgreSQL backend. A batch is one statement chain in one transaction: readings go in
//! through `unnest` arrays with `ON CONFLICT DO NOTHING … RETURNING`, and the rows that
//! were really inserted feed the rollup and latest-value upserts in the same statement.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};
use telemetry::{EventTime, MetricId, RoadSegment};
use time::OffsetDateTime;

use crate::{
    parse_device, parse_metric, parse_segment, Batch, BatchOutcome, DeadLetter, DeviceRecord, HistoryPoint, HistoryQuery,
    LatestValue, Resolution, StoreError, StoreOptions,
};

const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "foundation", include_str!("../migrations/postgres/0001_foundation.sql"))];

/// Arbitrary constant: the advisory lock that serialises migrations across processes.
const MIGRATION_LOCK: i64 = 0x5CC2_0001;

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

const INSERT_BATCH: &str = r#"
WITH input AS (
    SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::float8[], $5::int8[])
        AS t(time, device, metric, value, seq)
), ins AS (
    INSERT INTO readings (time, device, metric, value, seq)
    SELECT time, device, metric, value, seq FROM input
    ON CONFLICT (device, metric, time) DO NOTHING
    RETURNING time, device, metric, value
), agg AS (
    SELECT date_trunc('minute', time) AS bucket, device, metric,
           count(*) AS count, sum(value) AS sum, min(value) AS min, max(value) AS max,
           (array_agg(value ORDER BY time DESC, value DESC))[1] AS last_value, max(time) AS last_time
    FROM ins GROUP BY 1, 2, 3
), roll AS (
    INSERT INTO rollup_1m AS r (bucket, device, metric, count, sum, min, max, last_value, last_time)
    SELECT bucket, device, metric, count, sum, min, max, last_value, last_time FROM agg
    ORDER BY device, metric, bucket
    ON CONFLICT (device, metric, bucket) DO UPDATE SET
        count = r.count + excluded.count,
        sum = r.sum + excluded.sum,
        min = least(r.min, excluded.min),
        max = greatest(r.max, excluded.max),
        last_value = CASE WHEN excluded.last_time >= r.last_time THEN excluded.last_value ELSE r.last_value END,
        last_time = greatest(r.last_time, excluded.last_time)
    RETURNING 1
), lat AS (
    INSERT INTO latest AS l (device, metric, time, value)
    SELECT DISTINCT ON (device, metric) device, metric, time, value FROM ins
    ORDER BY device, metric, time DESC
    ON CONFLICT (device, metric) DO UPDATE SET time = excluded.time, value = excluded.value
        WHERE excluded.time >= l.time
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins) AS inserted, (SELECT count(*) FROM roll) AS rollups, (SELECT count(*) FROM lat) AS latest
"#;

fn ts(t: EventTime) -> OffsetDateTime {
    t.to_offset_date_time()
}

fn et(t: OffsetDateTime) -> EventTime {
    EventTime::from_offset_date_time(t)
}

impl PgStore {
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(url)?.options([("TimeZone", "UTC")]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        // A session-level lock held for the whole run: two processes starting together
        // would otherwise race even on `CREATE TABLE IF NOT EXISTS`.
        sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK).execute(&mut *conn).await?;
        let result = apply_migrations(&mut conn).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK).execute(&mut *conn).await;
        if unlocked.is_err() {
            // The lock dies with the session; make sure the session dies too.
            conn.detach();
        }
        result
    }

    pub async fn write_batch(&self, batch: &Batch) -> Result<BatchOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !batch.new_devices.is_empty() {
            let ids: Vec<&str> = batch.new_devices.iter().map(|d| d.as_str()).collect();
            sqlx::query("INSERT INTO devices (id) SELECT * FROM unnest($1::text[]) ON CONFLICT (id) DO NOTHING")
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
        }
        let mut outcome = BatchOutcome::default();
        if !batch.readings.is_empty() {
            let n = batch.readings.len();
            let (mut times, mut devices, mut metrics, mut values, mut seqs) =
                (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
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
                .fetch_one(&mut *tx)
                .await?;
            let inserted: i64 = row.try_get("inserted")?;
            outcome.inserted = inserted as u64;
            outcome.duplicates = n as u64 - outcome.inserted;
        }
        if !batch.dead_letters.is_empty() {
            insert_dead_letters(&mut tx, &batch.dead_letters).await?;
            outcome.dead_letters = batch.dead_letters.len() as u64;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    pub async fn upsert_segments(&self, segments: &[RoadSegment]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for s in segments {
            let coords = serde_json::to_value(&s.coordinates).unwrap_or_default();
            sqlx::query(
                "INSERT INTO road_segments (id, name, kind, coordinates, length_m, lanes, speed_limit_kmh, free_flow_kmh, capacity_vph)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, coordinates = excluded.coordinates,
                   length_m = excluded.length_m, lanes = excluded.lanes, speed_limit_kmh = excluded.speed_limit_kmh,
                   free_flow_kmh = excluded.free_flow_kmh, capacity_vph = excluded.capacity_vph",
            )
            .bind(s.id.as_str())
            .bind(&s.name)
            .bind(&s.kind)
            .bind(sqlx::types::Json(coords))
            .bind(s.length_m)
            .bind(s.lanes as i32)
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
                let coords: sqlx::types::Json<Vec<[f64; 2]>> = row.try_get("coordinates")?;
                Ok(RoadSegment {
                    id: parse_segment(row.try_get("id")?)?,
                    name: row.try_get("name")?,
                    kind: row.try_get("kind")?,
                    coordinates: coords.0,
                    length_m: row.try_get("length_m")?,
                    lanes: row.try_get::<i32, _>("lanes")? as u32,
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
                "INSERT INTO devices (id, kind, segment_id, registered_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, segment_id = excluded.segment_id",
            )
            .bind(d.id.as_str())
            .bind(d.kind.as_deref())
            .bind(d.segment.as_ref().map(|s| s.as_str()))
            .bind(ts(d.registered_at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows = sqlx::query("SELECT id, kind, segment_id, registered_at FROM devices ORDER BY id").fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|row| {
                Ok(DeviceRecord {
                    id: parse_device(row.try_get("id")?)?,
                    kind: row.try_get("kind")?,
                    segment: row.try_get::<Option<String>, _>("segment_id")?.map(parse_segment).transpose()?,
                    registered_at: et(row.try_get("registered_at")?),
                })
            })
            .collect()
    }

    pub async fn latest(&self, device: Option<&telemetry::DeviceId>, metric: Option<MetricId>) -> Result<Vec<LatestValue>, StoreError> {
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

    pub async fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryPoint>, StoreError> {
        let sql = match q.resolution {
            Resolution::Raw => {
                "SELECT time, 1::int8 AS count, value AS sum, value AS min, value AS max, value AS last FROM readings
                 WHERE device = $1 AND metric = $2 AND time >= $3 AND time < $4 ORDER BY time LIMIT $5"
            }
            Resolution::Minute => {
                "SELECT bucket AS time, count, sum, min, max, last_value AS last FROM rollup_1m
                 WHERE device = $1 AND metric = $2 AND bucket >= $3 AND bucket < $4 ORDER BY bucket LIMIT $5"
            }
        };
        let rows = sqlx::query(sql)
            .bind(q.device.as_str())
            .bind(q.metric.as_str())
            .bind(ts(q.from))
            .bind(ts(q.to))
            .bind(q.limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(HistoryPoint {
                    time: et(row.try_get("time")?),
                    count: row.try_get("count")?,
                    sum: row.try_get("sum")?,
                    min: row.try_get("min")?,
                    max: row.try_get("max")?,
                    last: row.try_get("last")?,
                })
            })
            .collect()
    }

    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT received_at, topic, device, reason, detail, payload, payload_size FROM dead_letters ORDER BY id DESC LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(DeadLetter {
                    received_at: et(row.try_get("received_at")?),
                    topic: row.try_get("topic")?,
                    device: row.try_get::<Option<String>, _>("device")?.map(parse_device).transpose()?,
                    reason: row.try_get("reason")?,
                    detail: row.try_get("detail")?,
                    payload: row.try_get("payload")?,
                    payload_size: row.try_get::<i32, _>("payload_size")? as usize,
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

async fn apply_migrations(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS sccr_migrations (version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *conn)
    .await?;
    for &(version, name, sql) in MIGRATIONS {
        let done: Option<i64> = sqlx::query_scalar("SELECT version FROM sccr_migrations WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *conn)
            .await?;
        if done.is_some() {
            continue;
        }
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(|source| StoreError::Migration { version, name, source })?;
        sqlx::query("INSERT INTO sccr_migrations (version, name) VALUES ($1, $2)")
            .bind(version)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied migration");
    }
    Ok(())
}

async fn insert_dead_letters(tx: &mut sqlx::PgConnection, letters: &[DeadLetter]) -> Result<(), StoreError> {
    let received: Vec<OffsetDateTime> = letters.iter().map(|d| ts(d.received_at)).collect();
    let topics: Vec<&str> = letters.iter().map(|d| d.topic.as_str()).collect();
    let devices: Vec<Option<&str>> = letters.iter().map(|d| d.device.as_ref().map(|x| x.as_str())).collect();
    let reasons: Vec<&str> = letters.iter().map(|d| d.reason.as_str()).collect();
    let details: Vec<&str> = letters.iter().map(|d| d.detail.as_str()).collect();
    let payloads: Vec<&[u8]> = letters.iter().map(|d| d.payload.as_slice()).collect();
    let sizes: Vec<i32> = letters.iter().map(|d| i32::try_from(d.payload_size).unwrap_or(i32::MAX)).collect();
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
