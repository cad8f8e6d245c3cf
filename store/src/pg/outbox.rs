//! The outbox, webhook subscriptions and deliveries on PostgreSQL (see [`crate::outbox`]).
//! Fan-out and claims lock their rows `FOR UPDATE SKIP LOCKED`, so several dispatchers
//! (replicas) never take the same rows.

use sqlx::postgres::PgRow;
use sqlx::Row;
use telemetry::EventTime;

use super::PgStore;
use crate::outbox::{
    corrupt_json, delivery_state, status_of, ClaimedDelivery, DeliveryRecord, DeliveryState,
    DeliveryUpdate, NewWebhook, OutboxEvent, OutboxRecord, WebhookFormat, WebhookRecord,
};
use crate::StoreError;

/// Append an event inside a PostgreSQL transaction.
pub async fn append(tx: &mut sqlx::PgConnection, event: &OutboxEvent) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("INSERT INTO outbox (type, subject, time, data) VALUES ($1, $2, $3, $4::jsonb) RETURNING id")
        .bind(&event.event_type)
        .bind(&event.subject)
        .bind(event.time.to_offset_date_time())
        .bind(event.data.to_string())
        .fetch_one(&mut *tx)
        .await?)
}

const WEBHOOK: &str = "id, url, types, secret, enabled, format, created_at";

fn webhook(row: &PgRow) -> Result<WebhookRecord, StoreError> {
    Ok(WebhookRecord {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        types: row.try_get("types")?,
        secret: row.try_get("secret")?,
        enabled: row.try_get("enabled")?,
        format: WebhookFormat::parse(row.try_get("format")?)?,
        created_at: EventTime::from_offset_date_time(row.try_get("created_at")?),
    })
}

fn event(row: &PgRow) -> Result<OutboxRecord, StoreError> {
    let data: String = row.try_get("data")?;
    Ok(OutboxRecord {
        id: row.try_get("event_id")?,
        event_type: row.try_get("type")?,
        subject: row.try_get("subject")?,
        time: EventTime::from_offset_date_time(row.try_get("time")?),
        data: serde_json::from_str(&data).map_err(|_| corrupt_json("outbox data", &data))?,
    })
}

impl PgStore {
    pub(crate) async fn append_outbox(&self, event: &OutboxEvent) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub(crate) async fn outbox_events(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let rows = sqlx::query("SELECT id AS event_id, type, subject, time, data::text AS data FROM outbox WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event).collect()
    }

    pub(crate) async fn create_webhook(&self, w: &NewWebhook) -> Result<WebhookRecord, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO webhooks (url, types, secret, enabled, format) VALUES ($1, $2, $3, $4, $5) RETURNING {WEBHOOK}"
        ))
        .bind(&w.url)
        .bind(&w.types)
        .bind(&w.secret)
        .bind(w.enabled)
        .bind(w.format.as_str())
        .fetch_one(&self.pool)
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
        Ok(sqlx::query("UPDATE webhooks SET url = $2, types = $3, secret = $4, enabled = $5, format = $6 WHERE id = $1")
            .bind(w.id)
            .bind(&w.url)
            .bind(&w.types)
            .bind(&w.secret)
            .bind(w.enabled)
            .bind(w.format.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    pub(crate) async fn delete_webhook(&self, id: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Fan out up to `limit` events to `hooks` (the enabled subscriptions).
    pub(crate) async fn fan_out_outbox(
        &self,
        hooks: &[WebhookRecord],
        limit: i64,
    ) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query("SELECT id, type, subject FROM outbox WHERE NOT fanned_out ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED")
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let (mut hook_ids, mut event_ids, mut subjects, mut ids) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let (id, ty, subject): (i64, String, String) =
                (row.try_get("id")?, row.try_get("type")?, row.try_get("subject")?);
            ids.push(id);
            for h in hooks.iter().filter(|h| h.wants(&ty)) {
                hook_ids.push(h.id);
                event_ids.push(id);
                subjects.push(subject.clone());
            }
        }
        // A subscription deleted meanwhile fails the foreign key: then nothing is
        // marked and the next pass fans out again.
        sqlx::query(
            "INSERT INTO webhook_deliveries (webhook_id, outbox_id, subject)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&hook_ids)
        .bind(&event_ids)
        .bind(&subjects)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE outbox SET fanned_out = true WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ids.len())
    }

    /// Claim the due deliveries and lease them until `until`, in one statement.
    pub(crate) async fn claim_deliveries(
        &self,
        now: EventTime,
        until: EventTime,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let rows = sqlx::query(
            "WITH due AS (
                 SELECT d.webhook_id, d.outbox_id FROM webhook_deliveries d
                 JOIN webhooks w ON w.id = d.webhook_id AND w.enabled
                 WHERE d.state = 'pending' AND d.next_attempt_at <= $1
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e
                                   WHERE e.webhook_id = d.webhook_id AND e.subject = d.subject
                                     AND e.state = 'pending' AND e.outbox_id < d.outbox_id)
                 ORDER BY d.outbox_id
                 LIMIT $3
                 FOR UPDATE OF d SKIP LOCKED)
             UPDATE webhook_deliveries d SET next_attempt_at = $2
             FROM due, webhooks w, outbox o
             WHERE d.webhook_id = due.webhook_id AND d.outbox_id = due.outbox_id AND w.id = d.webhook_id AND o.id = d.outbox_id
             RETURNING d.attempts, w.id, w.url, w.types, w.secret, w.enabled, w.format, w.created_at,
                       o.id AS event_id, o.type, o.subject, o.time, o.data::text AS data",
        )
        .bind(now.to_offset_date_time())
        .bind(until.to_offset_date_time())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ClaimedDelivery {
                    webhook: webhook(row)?,
                    event: event(row)?,
                    attempts: u32::try_from(row.try_get::<i32, _>("attempts")?).unwrap_or(0),
                })
            })
            .collect()
    }

    pub(crate) async fn finish_delivery(
        &self,
        webhook: i64,
        event: i64,
        u: &DeliveryUpdate,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $3, attempts = attempts + 1, last_status = $4, last_error = $5, next_attempt_at = $6, delivered_at = $7
             WHERE webhook_id = $1 AND outbox_id = $2",
        )
        .bind(webhook)
        .bind(event)
        .bind(u.state.as_str())
        .bind(u.status.map(i32::from))
        .bind(&u.error)
        .bind(u.next.to_offset_date_time())
        .bind(u.delivered.map(EventTime::to_offset_date_time))
        .execute(&self.pool)
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
            "SELECT d.webhook_id, d.outbox_id, o.type, d.subject, d.state, d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.delivered_at
             FROM webhook_deliveries d JOIN outbox o ON o.id = d.outbox_id
             WHERE d.webhook_id = $1 AND ($2::text IS NULL OR d.state = $2) ORDER BY d.outbox_id DESC LIMIT $3",
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
                    attempts: u32::try_from(r.try_get::<i32, _>("attempts")?).unwrap_or(0),
                    next_attempt_at: EventTime::from_offset_date_time(
                        r.try_get("next_attempt_at")?,
                    ),
                    last_status: status_of(
                        r.try_get::<Option<i32>, _>("last_status")?.map(i64::from),
                    ),
                    last_error: r.try_get("last_error")?,
                    delivered_at: r
                        .try_get::<Option<time::OffsetDateTime>, _>("delivered_at")?
                        .map(EventTime::from_offset_date_time),
                })
            })
            .collect()
    }

    /// Events to fan out, deliveries pending, and the time (ms) of the oldest event
    /// with a pending delivery.
    pub(crate) async fn outbox_backlog(&self) -> Result<(i64, i64, Option<i64>), StoreError> {
        Ok(sqlx::query_as(
            "SELECT (SELECT count(*) FROM outbox WHERE NOT fanned_out),
                (SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'),
                (SELECT (extract(epoch FROM min(o.time)) * 1000)::bigint
                   FROM webhook_deliveries d JOIN outbox o ON o.id = d.outbox_id
                  WHERE d.state = 'pending')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub(crate) async fn prune_outbox(&self, before: EventTime) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM outbox o WHERE o.fanned_out AND o.time < $1
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.outbox_id = o.id AND d.state <> 'delivered')",
        )
        .bind(before.to_offset_date_time())
        .execute(&self.pool)
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
            "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = $3, last_error = NULL
             WHERE webhook_id = $1 AND state = 'dead' AND ($2::bigint IS NULL OR outbox_id = $2)",
        )
        .bind(webhook)
        .bind(event)
        .bind(now.to_offset_date_time())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
