//! Reading the dead letters back: pages by id (newest first) and counts by reason.

use sqlx::Row;
use telemetry::EventTime;

use crate::pg::{et, ts};
use crate::{Store, StoreError};

/// Bytes of a payload shown in listings (the stored copy is already truncated).
const PREVIEW_BYTES: usize = 512;

/// A dead letter as listed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeadLetterEntry {
    pub id: i64,
    pub received_at: EventTime,
    pub topic: String,
    pub device: Option<String>,
    pub reason: String,
    pub detail: String,
    pub payload_size: i64,
    /// The start of the payload as text (invalid UTF-8 replaced).
    pub payload_preview: String,
}

fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(PREVIEW_BYTES)]).into_owned()
}

impl Store {
    /// Dead letters newest first: `limit` of them older than `before_id`, of one reason if given.
    pub async fn dead_letter_page(
        &self,
        reason: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<DeadLetterEntry>, StoreError> {
        let before = before_id.unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match self {
            Store::Postgres(s) => sqlx::query(
                "SELECT id, received_at, topic, device, reason, detail, payload, payload_size FROM dead_letters
                 WHERE id < $1 AND ($2::text IS NULL OR reason = $2) ORDER BY id DESC LIMIT $3",
            )
            .bind(before)
            .bind(reason)
            .bind(limit)
            .fetch_all(&s.pool)
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
            .collect(),
            Store::Sqlite(s) => sqlx::query(
                "SELECT id, received_at_ms, topic, device, reason, detail, payload, payload_size FROM dead_letters
                 WHERE id < ?1 AND (?2 IS NULL OR reason = ?2) ORDER BY id DESC LIMIT ?3",
            )
            .bind(before)
            .bind(reason)
            .bind(limit)
            .fetch_all(&s.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(DeadLetterEntry {
                    id: r.try_get("id")?,
                    received_at: EventTime(r.try_get("received_at_ms")?),
                    topic: r.try_get("topic")?,
                    device: r.try_get("device")?,
                    reason: r.try_get("reason")?,
                    detail: r.try_get("detail")?,
                    payload_size: r.try_get("payload_size")?,
                    payload_preview: preview(&r.try_get::<Vec<u8>, _>("payload")?),
                })
            })
            .collect(),
        }
    }

    /// (reason, count) of the dead letters received since `since` (all when `None`), most
    /// frequent first.
    pub async fn dead_letter_reasons(
        &self,
        since: Option<EventTime>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let since = since.unwrap_or(EventTime(0));
        Ok(match self {
            Store::Postgres(s) => {
                sqlx::query_as("SELECT reason, count(*) AS n FROM dead_letters WHERE received_at >= $1 GROUP BY reason ORDER BY n DESC, reason")
                    .bind(ts(since))
                    .fetch_all(&s.pool)
                    .await?
            }
            Store::Sqlite(s) => {
                sqlx::query_as("SELECT reason, count(*) AS n FROM dead_letters WHERE received_at_ms >= ? GROUP BY reason ORDER BY n DESC, reason")
                    .bind(since.millis())
                    .fetch_all(&s.pool)
                    .await?
            }
        })
    }
}
