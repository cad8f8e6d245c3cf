//! Export reads on SQLite (see [`crate::export`]): one streamed query in export order,
//! filters as `IN (?, …)` lists.

use futures_util::TryStreamExt;
use sqlx::Row;
use telemetry::EventTime;
use tokio::sync::mpsc;

use super::SqliteStore;
use crate::export::{send, ChunkBuilder, ExportChunk, ExportQuery, RowIn};
use crate::history::{Resolution, DAY_MS};
use crate::StoreError;

/// The metric, device and segment filters of `q`, one placeholder per value.
fn filters(q: &ExportQuery) -> String {
    let list = |n: usize| vec!["?"; n].join(", ");
    let mut f = String::new();
    if !q.metrics.is_empty() {
        f.push_str(&format!(" AND metric IN ({})", list(q.metrics.len())));
    }
    if !q.devices.is_empty() {
        f.push_str(&format!(" AND device IN ({})", list(q.devices.len())));
    }
    if !q.segments.is_empty() {
        f.push_str(&format!(
            " AND device IN (SELECT id FROM devices WHERE segment_id IN ({}))",
            list(q.segments.len())
        ));
    }
    f
}

/// The values bound to [`filters`]' placeholders, in order.
fn filter_values(q: &ExportQuery) -> impl Iterator<Item = String> {
    [q.metric_names(), q.device_names(), q.segment_names()].into_iter().flatten().flatten()
}

impl SqliteStore {
    /// `agg` of the rows of `table` with buckets in `[from, q.to)` passing `q`'s filters.
    pub(crate) async fn export_estimate(
        &self,
        q: &ExportQuery,
        table: &str,
        agg: &str,
        from: EventTime,
    ) -> Result<i64, StoreError> {
        let sql = format!(
            "SELECT CAST(COALESCE({agg}, 0) AS INTEGER) FROM {table} WHERE bucket_ms >= ? AND bucket_ms < ?{}",
            filters(q)
        );
        let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(from.millis()).bind(q.to.millis());
        for name in filter_values(q) {
            query = query.bind(name);
        }
        Ok(query.fetch_one(&self.pool).await?)
    }

    /// Read `q`'s rows in export order into chunks sent to `tx`; stops early when the
    /// receiver is gone.
    pub(crate) async fn produce_export(
        &self,
        q: &ExportQuery,
        tx: &mpsc::Sender<Result<ExportChunk, StoreError>>,
    ) -> Result<(), StoreError> {
        let filter = filters(q);
        let sql = match q.resolution {
            Resolution::Raw => format!(
                "SELECT time_ms AS time, device, metric, value, seq, 1 AS count, 0.0 AS sum, 0.0 AS min, 0.0 AS max FROM readings
                 WHERE time_ms >= ? AND time_ms < ?{filter} ORDER BY time_ms / {DAY_MS}, metric, time_ms, device"
            ),
            r => format!(
                "SELECT bucket_ms AS time, device, metric, last_value AS value, NULL AS seq, count, sum, min, max FROM {}
                 WHERE bucket_ms >= ? AND bucket_ms < ?{filter} ORDER BY bucket_ms / {DAY_MS}, metric, bucket_ms, device",
                r.table()
            ),
        };
        let mut query = sqlx::query(&sql).bind(q.from.millis()).bind(q.to.millis());
        for name in filter_values(q) {
            query = query.bind(name);
        }
        let mut b = ChunkBuilder::new(q.resolution, q.batch_rows);
        let mut rows = query.fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            let r = RowIn {
                time: row.try_get("time")?,
                device: row.try_get("device")?,
                metric: row.try_get("metric")?,
                value: row.try_get("value")?,
                seq: row.try_get("seq")?,
                count: row.try_get("count")?,
                sum: row.try_get("sum")?,
                min: row.try_get("min")?,
                max: row.try_get("max")?,
            };
            if send(tx, b.push(r)?).await.is_err() {
                return Ok(());
            }
        }
        let _ = send(tx, b.take()).await;
        Ok(())
    }
}
