//! The outbox, webhook subscriptions and deliveries on SQLite (see [`crate::outbox`]).
//! Fan-out and claims run in `BEGIN IMMEDIATE` transactions: the write lock is held from
//! the first read, so no other writer takes the same rows. A subscription's types are a
//! JSON array in text.

use serde::Deserialize;
use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, Row};
use telemetry::EventTime;

use super::SqliteStore;
use crate::outbox::{
    corrupt_json, delivery_state, status_of, ClaimedDelivery, DeliveryRecord, DeliveryState,
    DeliveryUpdate, NewWebhook, OutboxEvent, OutboxRecord, WebhookFormat, WebhookRecord,
};
use crate::StoreError;

/// Append an event inside a SQLite transaction.
pub async fn append(
    tx: &mut sqlx::SqliteConnection,
    event: &OutboxEvent,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO outbox (type, subject, time_ms, data) VALUES (?, ?, ?, ?) RETURNING id",
    )
    .bind(&event.event_type)
    .bind(&event.subject)
    .bind(event.time.millis())
    .bind(event.data.to_string())
    .fetch_one(&mut *tx)
    .await?)
}

const WEBHOOK: &str = "id, url, types, secret, enabled, format, created_at_ms";

fn webhook(row: &SqliteRow) -> Result<WebhookRecord, StoreError> {
    let types: String = row.try_get("types")?;
    Ok(WebhookRecord {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        types: serde_json::from_str(&types).map_err(|_| corrupt_json("webhook types", &types))?,
        secret: row.try_get("secret")?,
        enabled: row.try_get("enabled")?,
        format: WebhookFormat::parse(row.try_get("format")?)?,
        created_at: EventTime(row.try_get("created_at_ms")?),
    })
}

fn event(row: &SqliteRow) -> Result<OutboxRecord, StoreError> {
    let data: String = row.try_get("data")?;
    Ok(OutboxRecord {
        id: row.try_get("event_id")?,
        event_type: row.try_get("type")?,
        subject: row.try_get("subject")?,
        time: EventTime(row.try_get("time_ms")?),
        data: serde_json::from_str(&data).map_err(|_| corrupt_json("outbox data", &data))?,
    })
}

/// A subscription as `json_object` of its columns (a claim returns it with the update).
fn webhook_json(text: &str) -> Result<WebhookRecord, StoreError> {
    #[derive(Deserialize)]
    struct H {
        id: i64,
        url: String,
        types: String,
        secret: String,
        enabled: i64,
        format: String,
        created_at_ms: i64,
    }
    let h: H = serde_json::from_str(text).map_err(|_| corrupt_json("webhook", text))?;
    Ok(WebhookRecord {
        id: h.id,
        url: h.url,
        types: serde_json::from_str(&h.types)
            .map_err(|_| corrupt_json("webhook types", &h.types))?,
        secret: h.secret,
        enabled: h.enabled != 0,
        format: WebhookFormat::parse(h.format)?,
        created_at: EventTime(h.created_at_ms),
    })
}

/// An outbox event as `json_object` of its columns.
fn event_json(text: &str) -> Result<OutboxRecord, StoreError> {
    #[derive(Deserialize)]
    struct E {
        id: i64,
        #[serde(rename = "type")]
        ty: String,
        subject: String,
        time_ms: i64,
        data: String,
    }
    let e: E = serde_json::from_str(text).map_err(|_| corrupt_json("outbox event", text))?;
    Ok(OutboxRecord {
        id: e.id,
        event_type: e.ty,
        subject: e.subject,
        time: EventTime(e.time_ms),
        data: serde_json::from_str(&e.data).map_err(|_| corrupt_json("outbox data", &e.data))?,
    })
}

impl SqliteStore {
    pub(crate) async fn append_outbox(&self, event: &OutboxEvent) -> Result<i64, StoreError> {
        let mut conn = self.writer.acquire().await?;
        append(&mut conn, event).await
    }

    pub(crate) async fn outbox_events(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let rows = sqlx::query("SELECT id AS event_id, type, subject, time_ms, data FROM outbox WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event).collect()
    }

    pub(crate) async fn create_webhook(&self, w: &NewWebhook) -> Result<WebhookRecord, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO webhooks (url, types, secret, enabled, format, created_at_ms) VALUES (?, ?, ?, ?, ?, ?) RETURNING {WEBHOOK}"
        ))
        .bind(&w.url)
        .bind(serde_json::Value::from(w.types.clone()).to_string())
        .bind(&w.secret)
        .bind(w.enabled)
        .bind(w.format.as_str())
        .bind(EventTime::now().millis())
        .fetch_one(&self.writer)
        .await?;
        webhook(&row)
    }

    pub(crate) async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {WEBHOOK} FROM webhooks ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(webhook).collect()
    }

    /// Store every field of `w` under its id; the rows changed.
    pub(crate) async fn update_webhook(&self, w: &WebhookRecord) -> Result<u64, StoreError> {
        Ok(sqlx::query("UPDATE webhooks SET url = ?2, types = ?3, secret = ?4, enabled = ?5, format = ?6 WHERE id = ?1")
            .bind(w.id)
            .bind(&w.url)
            .bind(serde_json::Value::from(w.types.clone()).to_string())
            .bind(&w.secret)
            .bind(w.enabled)
            .bind(w.format.as_str())
            .execute(&self.writer)
            .await?
            .rows_affected())
    }

    pub(crate) async fn delete_webhook(&self, id: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM webhooks WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await?
            .rows_affected())
    }

    /// Fan out up to `limit` events to `hooks` (the enabled subscriptions).
    pub(crate) async fn fan_out_outbox(
        &self,
        hooks: &[WebhookRecord],
        limit: i64,
    ) -> Result<usize, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "SELECT id, type, subject FROM outbox WHERE fanned_out = 0 ORDER BY id LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let now = EventTime::now().millis();
        for row in &rows {
            let (id, ty, subject): (i64, String, String) =
                (row.try_get("id")?, row.try_get("type")?, row.try_get("subject")?);
            for h in hooks.iter().filter(|h| h.wants(&ty)) {
                sqlx::query("INSERT INTO webhook_deliveries (webhook_id, outbox_id, subject, next_attempt_at_ms) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
                    .bind(h.id)
                    .bind(id)
                    .bind(&subject)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("UPDATE outbox SET fanned_out = 1 WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    /// Claim the due deliveries and lease them until `until`, one update each.
    pub(crate) async fn claim_deliveries(
        &self,
        now: EventTime,
        until: EventTime,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let due = sqlx::query(
            "SELECT d.webhook_id, d.outbox_id FROM webhook_deliveries d
             JOIN webhooks w ON w.id = d.webhook_id AND w.enabled
             WHERE d.state = 'pending' AND d.next_attempt_at_ms <= ?1
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e
                               WHERE e.webhook_id = d.webhook_id AND e.subject = d.subject
                                 AND e.state = 'pending' AND e.outbox_id < d.outbox_id)
             ORDER BY d.outbox_id LIMIT ?2",
        )
        .bind(now.millis())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(due.len());
        for row in &due {
            let (hook, event): (i64, i64) = (row.try_get("webhook_id")?, row.try_get("outbox_id")?);
            let row = sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at_ms = ?3 WHERE webhook_id = ?1 AND outbox_id = ?2
                 RETURNING attempts,
                   (SELECT json_object('id', id, 'url', url, 'types', types, 'secret', secret, 'enabled', enabled, 'format', format, 'created_at_ms', created_at_ms) FROM webhooks WHERE id = ?1) AS hook,
                   (SELECT json_object('id', id, 'type', type, 'subject', subject, 'time_ms', time_ms, 'data', data) FROM outbox WHERE id = ?2) AS event",
            )
            .bind(hook)
            .bind(event)
            .bind(until.millis())
            .fetch_one(&mut *tx)
            .await?;
            let (h, e): (String, String) = (row.try_get("hook")?, row.try_get("event")?);
            out.push(ClaimedDelivery {
                webhook: webhook_json(&h)?,
                event: event_json(&e)?,
                attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn finish_delivery(
        &self,
        webhook: i64,
        event: i64,
        u: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET state = ?3, attempts = attempts + 1, last_status = ?4, last_error = ?5, next_attempt_at_ms = ?6, delivered_at_ms = ?7
             WHERE webhook_id = ?1 AND outbox_id = ?2",
        )
        .bind(webhook)
        .bind(event)
        .bind(u.state.as_str())
        .bind(u.status.map(i64::from))
        .bind(&u.error)
        .bind(u.next.millis())
        .bind(u.delivered.map(EventTime::millis))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(crate) async fn deliveries(
        &self,
        webhook: i64,
        state: Option<DeliveryState>,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.webhook_id, d.outbox_id, o.type, d.subject, d.state, d.attempts, d.next_attempt_at_ms, d.last_status, d.last_error, d.delivered_at_ms
             FROM webhook_deliveries d JOIN outbox o ON o.id = d.outbox_id
             WHERE d.webhook_id = ?1 AND (?2 IS NULL OR d.state = ?2) ORDER BY d.outbox_id DESC LIMIT ?3",
        )
        .bind(webhook)
        .bind(state.map(DeliveryState::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRecord {
                    webhook: r.try_get("webhook_id")?,
                    event: r.try_get("outbox_id")?,
                    event_type: r.try_get("type")?,
                    subject: r.try_get("subject")?,
                    state: delivery_state(r.try_get("state")?)?,
                    attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
                    next_attempt_at: EventTime(r.try_get("next_attempt_at_ms")?),
                    last_status: status_of(r.try_get("last_status")?),
                    last_error: r.try_get("last_error")?,
                    delivered_at: r.try_get::<Option<i64>, _>("delivered_at_ms")?.map(EventTime),
                })
            })
            .collect()
    }

    /// Events to fan out, deliveries pending, and the time (ms) of the oldest event
    /// with a pending delivery.
    pub(crate) async fn outbox_backlog(&self) -> Result<(i64, i64, Option<i64>), StoreError> {
        Ok(sqlx::query_as(
            "SELECT (SELECT count(*) FROM outbox WHERE fanned_out = 0),
                (SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'),
                (SELECT min(o.time_ms)
                   FROM webhook_deliveries d JOIN outbox o ON o.id = d.outbox_id
                  WHERE d.state = 'pending')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub(crate) async fn prune_outbox(&self, before: EventTime) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM outbox WHERE fanned_out = 1 AND time_ms < ?
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.outbox_id = outbox.id AND d.state <> 'delivered')",
        )
        .bind(before.millis())
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    pub(crate) async fn redeliver(
        &self,
        webhook: i64,
        event: Option<i64>,
        now: EventTime,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at_ms = ?3, last_error = NULL
             WHERE webhook_id = ?1 AND state = 'dead' AND (?2 IS NULL OR outbox_id = ?2)",
        )
        .bind(webhook)
        .bind(event)
        .bind(now.millis())
        .execute(&self.writer)
        .await?
        .rows_affected())
    }
}
