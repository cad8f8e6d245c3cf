//! Export reads on PostgreSQL (see [`crate::export`]): rows streamed with `fetch` (the
//! server sends rows as the reader polls), raw readings one UTC day at a time (the
//! `readings` partitions and TimescaleDB chunks are days), so the server sorts a day, not
//! the whole range.

use futures_util::TryStreamExt;
use sqlx::Row;
use telemetry::EventTime;
use tokio::sync::mpsc;

use super::PgStore;
use crate::export::{send, ChunkBuilder, ExportChunk, ExportQuery, RowIn};
use crate::history::{Resolution, DAY_MS};
use crate::StoreError;

/// The metric, device and segment filters of an export query ($3, $4, $5).
const FILTERS: &str =
    "AND ($3::text[] IS NULL OR metric = ANY($3)) AND ($4::text[] IS NULL OR device = ANY($4))
     AND ($5::text[] IS NULL OR device IN (SELECT id FROM devices WHERE segment_id = ANY($5)))";

/// The rows of a rollup level in `[$1, $2)`: stored buckets before `$6`, and from there
/// buckets aggregated from rollup_1m rows before `$7` (where the folded minutes end) and
/// raw readings from `$7` to `$8` (the end of the last bucket).
fn rollup_export_sql(level: Resolution) -> String {
    let unit = match level {
        Resolution::Hour => "hour",
        Resolution::Day => "day",
        _ => "minute",
    };
    format!(
        "SELECT bucket AS time, device, metric, count, sum, min, max, value FROM (
             SELECT bucket, device, metric, count::int8 AS count, sum, min, max, last_value AS value FROM {table}
             WHERE bucket >= $1 AND bucket < least($2, $6) {FILTERS}
             UNION ALL
             SELECT date_trunc('{unit}', bucket, 'UTC'), device, metric, sum(count)::int8, sum(sum), min(min), max(max),
                    (max(ARRAY[date_part('epoch', last_time), last_value]))[2]
             FROM (
                 SELECT bucket, device, metric, count, sum, min, max, last_value, last_time FROM rollup_1m
                 WHERE bucket >= $6 AND bucket < $7 {FILTERS}
                 UNION ALL
                 SELECT date_trunc('minute', time), device, metric, count(*), sum(value), min(value), max(value),
                        (max(ARRAY[date_part('epoch', time), value]))[2], max(time)
                 FROM readings WHERE time >= $7 AND time < $8 {FILTERS}
                 GROUP BY 1, 2, 3
             ) tail GROUP BY 1, 2, 3
         ) rows
         ORDER BY date_trunc('day', bucket AT TIME ZONE 'UTC'), metric, bucket, device",
        table = level.table()
    )
}

impl PgStore {
    /// `agg` of the rows of `table` with buckets in `[from, q.to)` passing `q`'s filters.
    pub(crate) async fn export_estimate(
        &self,
        q: &ExportQuery,
        table: &str,
        agg: &str,
        from: EventTime,
    ) -> Result<i64, StoreError> {
        let sql = format!(
            "SELECT COALESCE({agg}, 0)::int8 FROM {table} WHERE bucket >= $1 AND bucket < $2 {FILTERS}"
        );
        Ok(sqlx::query_scalar(&sql)
            .bind(from.to_offset_date_time())
            .bind(q.to.to_offset_date_time())
            .bind(q.metric_names())
            .bind(q.device_names())
            .bind(q.segment_names())
            .fetch_one(&self.pool)
            .await?)
    }

    /// Read `q`'s rows in export order into chunks sent to `tx`; stops early when the
    /// receiver is gone.
    pub(crate) async fn produce_export(
        &self,
        q: &ExportQuery,
        tx: &mpsc::Sender<Result<ExportChunk, StoreError>>,
    ) -> Result<(), StoreError> {
        let (sql, slices) = match q.resolution {
            Resolution::Raw => {
                let sql = format!(
                    "SELECT time, device, metric, value, seq FROM readings WHERE time >= $1 AND time < $2 {FILTERS}
                     ORDER BY metric, time, device"
                );
                // One UTC day per query: the server sorts a partition, not the whole range.
                let mut slices = Vec::new();
                let mut lo = q.from.millis();
                while lo < q.to.millis() {
                    let hi = ((lo.div_euclid(DAY_MS) + 1) * DAY_MS).min(q.to.millis());
                    slices.push((lo, hi));
                    lo = hi;
                }
                (sql, slices)
            }
            r => (rollup_export_sql(r), vec![(q.from.millis(), q.to.millis())]),
        };
        // The rollups end where the folded minutes do: later buckets are aggregated from
        // rollup_1m up to there and from the raw readings after it ($6, $7, $8).
        let w = q.resolution.bucket_ms().unwrap_or(1);
        let end = self.folded_until().await?.map_or(q.to.millis(), |t| t.millis());
        let tail_from = (-(-q.from.millis()).div_euclid(w) * w).max(end.div_euclid(w) * w);
        let tail_to = -(-q.to.millis()).div_euclid(w) * w;
        let (metrics, devices, segments) = (q.metric_names(), q.device_names(), q.segment_names());
        let mut b = ChunkBuilder::new(q.resolution, q.batch_rows);
        let raw = q.resolution == Resolution::Raw;
        for (from, to) in slices {
            let mut query = sqlx::query(&sql)
                .bind(EventTime(from).to_offset_date_time())
                .bind(EventTime(to).to_offset_date_time())
                .bind(&metrics)
                .bind(&devices)
                .bind(&segments);
            if !raw {
                query = query
                    .bind(EventTime(tail_from).to_offset_date_time())
                    .bind(EventTime(end.max(tail_from)).to_offset_date_time())
                    .bind(EventTime(tail_to).to_offset_date_time());
            }
            let mut rows = query.fetch(&self.pool);
            while let Some(row) = rows.try_next().await? {
                let time = EventTime::from_offset_date_time(row.try_get("time")?).millis();
                let r = if raw {
                    RowIn {
                        time,
                        device: row.try_get("device")?,
                        metric: row.try_get("metric")?,
                        value: row.try_get("value")?,
                        seq: row.try_get("seq")?,
                        count: 1,
                        sum: 0.0,
                        min: 0.0,
                        max: 0.0,
                    }
                } else {
                    RowIn {
                        time,
                        device: row.try_get("device")?,
                        metric: row.try_get("metric")?,
                        value: row.try_get("value")?,
                        seq: None,
                        count: row.try_get("count")?,
                        sum: row.try_get("sum")?,
                        min: row.try_get("min")?,
                        max: row.try_get("max")?,
                    }
                };
                if send(tx, b.push(r)?).await.is_err() {
                    return Ok(());
                }
            }
        }
        let _ = send(tx, b.take()).await;
        Ok(())
    }
}
