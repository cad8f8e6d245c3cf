//! Device commands and device status on SQLite (see [`crate::commands`]). Writes with an
//! outbox event run in `BEGIN IMMEDIATE` transactions.

use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, Row};
use telemetry::{DeviceId, EventTime};

use super::SqliteStore;
use crate::commands::{args_of, CommandRecord, CommandStatus, NewCommand};
use crate::outbox::OutboxEvent;
use crate::{parse_device, StoreError};

const COLUMNS: &str = "id, device, name, args, idempotency_key, status, detail, created_by, created_at_ms, sent_at_ms, expires_at_ms, finished_at_ms";

fn command(row: &SqliteRow) -> Result<CommandRecord, StoreError> {
    Ok(CommandRecord {
        id: row.try_get("id")?,
        device: parse_device(row.try_get("device")?)?,
        name: row.try_get("name")?,
        args: args_of(row.try_get("args")?)?,
        idempotency_key: row.try_get("idempotency_key")?,
        status: CommandStatus::parse(row.try_get("status")?)?,
        detail: row.try_get("detail")?,
        created_by: row.try_get("created_by")?,
        created_at: EventTime(row.try_get("created_at_ms")?),
        sent_at: row.try_get::<Option<i64>, _>("sent_at_ms")?.map(EventTime),
        expires_at: EventTime(row.try_get("expires_at_ms")?),
        finished_at: row.try_get::<Option<i64>, _>("finished_at_ms")?.map(EventTime),
    })
}

impl SqliteStore {
    /// Insert the command; `None` when the device has one with its idempotency key.
    pub(crate) async fn insert_command(
        &self,
        c: &NewCommand,
        args: &str,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO commands (id, device, name, args, idempotency_key, status, created_by, created_at_ms, expires_at_ms)
             VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)
             ON CONFLICT (device, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING {COLUMNS}"
        ))
        .bind(&c.id)
        .bind(c.device.as_str())
        .bind(&c.name)
        .bind(args)
        .bind(&c.idempotency_key)
        .bind(&c.created_by)
        .bind(c.created_at.millis())
        .bind(c.expires_at.millis())
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(command).transpose()
    }

    pub(crate) async fn command_by_key(
        &self,
        device: &DeviceId,
        key: Option<&str>,
    ) -> Result<CommandRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM commands WHERE device = ? AND idempotency_key = ?"
        ))
        .bind(device.as_str())
        .bind(key)
        .fetch_one(&self.pool)
        .await?;
        command(&row)
    }

    pub(crate) async fn command(&self, id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM commands WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(command).transpose()
    }

    pub(crate) async fn device_commands(
        &self,
        device: &DeviceId,
        limit: i64,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM commands WHERE device = ? ORDER BY created_at_ms DESC, id LIMIT ?"
        ))
        .bind(device.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(command).collect()
    }

    pub(crate) async fn mark_command_sent(
        &self,
        id: &str,
        at: EventTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE commands SET status = 'sent', sent_at_ms = ? WHERE id = ? AND status = 'pending'",
        )
        .bind(at.millis())
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(crate) async fn finish_command(
        &self,
        id: &str,
        device: &DeviceId,
        status: CommandStatus,
        detail: Option<&str>,
        at: EventTime,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(&format!(
            "UPDATE commands SET status = ?3, detail = ?4, finished_at_ms = ?5
             WHERE id = ?1 AND device = ?2 AND status IN ('pending', 'sent') RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(device.as_str())
        .bind(status.as_str())
        .bind(detail)
        .bind(at.millis())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(record) = row.as_ref().map(command).transpose()? else {
            return Ok(None);
        };
        if let Some(event) = record.outbox_event() {
            super::outbox::append(&mut tx, &event).await?;
        }
        tx.commit().await?;
        Ok(Some(record))
    }

    pub(crate) async fn expire_commands(
        &self,
        now: EventTime,
        detail: &str,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(&format!(
            "UPDATE commands SET status = 'expired', detail = ?2, finished_at_ms = ?1
             WHERE status IN ('pending', 'sent') AND expires_at_ms < ?1 RETURNING {COLUMNS}"
        ))
        .bind(now.millis())
        .bind(detail)
        .fetch_all(&mut *tx)
        .await?;
        let records = rows.iter().map(command).collect::<Result<Vec<_>, _>>()?;
        for event in records.iter().filter_map(CommandRecord::outbox_event) {
            super::outbox::append(&mut tx, &event).await?;
        }
        tx.commit().await?;
        Ok(records)
    }

    /// Write the state and `event` unless the state is the one recorded; whether it was.
    pub(crate) async fn record_device_status(
        &self,
        device: &DeviceId,
        state: &str,
        at: EventTime,
        event: &OutboxEvent,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let changed = sqlx::query(
            "INSERT INTO device_status (device, state, since_ms) VALUES (?, ?, ?)
             ON CONFLICT (device) DO UPDATE SET state = excluded.state, since_ms = excluded.since_ms
             WHERE device_status.state <> excluded.state",
        )
        .bind(device.as_str())
        .bind(state)
        .bind(at.millis())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if changed {
            super::outbox::append(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }
}
