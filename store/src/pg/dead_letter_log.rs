//! Reading dead letters back on PostgreSQL (see [`crate::dead_letter_log`]); the batch
//! writer stores them (`pg/writer.rs`).

use sqlx::Row;
use telemetry::EventTime;

use super::{et, ts, PgStore};
use crate::dead_letter_log::{preview, DeadLetterEntry};
use crate::{parse_device, DeadLetter, StoreError};

impl PgStore {
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
                    device: row
                        .try_get::<Option<String>, _>("device")?
                        .map(parse_device)
                        .transpose()?,
                    reason: row.try_get("reason")?,
                    detail: row.try_get("detail")?,
                    payload: row.try_get("payload")?,
                    payload_size: row.try_get::<i32, _>("payload_size")? as usize,
                })
            })
            .collect()
    }

    pub(crate) async fn dead_letter_page(
        &self,
        reason: Option<&str>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<DeadLetterEntry>, StoreError> {
        sqlx::query(
            "SELECT id, received_at, topic, device, reason, detail, payload, payload_size FROM dead_letters
             WHERE id < $1 AND ($2::text IS NULL OR reason = $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(before)
        .bind(reason)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(DeadLetterEntry {
                id: r.try_get("id")?,
                received_at: et(r.try_get("received_at")?),
                topic: r.try_get("topic")?,
                device: r.try_get("device")?,
                reason: r.try_get("reason")?,
                detail: r.try_get("detail")?,
                payload_size: i64::from(r.try_get::<i32, _>("payload_size")?),
                payload_preview: preview(&r.try_get::<Vec<u8>, _>("payload")?),
            })
        })
        .collect()
    }

    pub(crate) async fn dead_letter_reasons(
        &self,
        since: EventTime,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as("SELECT reason, count(*) AS n FROM dead_letters WHERE received_at >= $1 GROUP BY reason ORDER BY n DESC, reason")
            .bind(ts(since))
            .fetch_all(&self.pool)
            .await?)
    }
}
