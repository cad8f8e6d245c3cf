//! Device commands and device status on PostgreSQL (see [`crate::commands`]).

use sqlx::postgres::PgRow;
use sqlx::Row;
use telemetry::{DeviceId, EventTime};

use super::PgStore;
use crate::commands::{args_of, CommandRecord, CommandStatus, NewCommand};
use crate::outbox::OutboxEvent;
use crate::{parse_device, StoreError};

const COLUMNS: &str = "id, device, name, args::text AS args, idempotency_key, status, detail, created_by, created_at, sent_at, expires_at, finished_at";

fn command(row: &PgRow) -> Result<CommandRecord, StoreError> {
    let t = |name: &str| -> Result<Option<EventTime>, StoreError> {
        Ok(row
            .try_get::<Option<time::OffsetDateTime>, _>(name)?
            .map(EventTime::from_offset_date_time))
    };
    Ok(CommandRecord {
        id: row.try_get("id")?,
        device: parse_device(row.try_get("device")?)?,
        name: row.try_get("name")?,
        args: args_of(row.try_get("args")?)?,
        idempotency_key: row.try_get("idempotency_key")?,
        status: CommandStatus::parse(row.try_get("status")?)?,
        detail: row.try_get("detail")?,
        created_by: row.try_get("created_by")?,
        created_at: EventTime::from_offset_date_time(row.try_get("created_at")?),
        sent_at: t("sent_at")?,
        expires_at: EventTime::from_offset_date_time(row.try_get("expires_at")?),
        finished_at: t("finished_at")?,
    })
}

impl PgStore {
    /// Insert the command; `None` when the device has one with its idempotency key.
    pub(crate) async fn insert_command(
        &self,
        c: &NewCommand,
        args: &str,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO commands (id, device, name, args, idempotency_key, status, created_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4::jsonb, $5, 'pending', $6, $7, $8)
             ON CONFLICT (device, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING {COLUMNS}"
        ))
        .bind(&c.id)
        .bind(c.device.as_str())
        .bind(&c.name)
        .bind(args)
        .bind(&c.idempotency_key)
        .bind(&c.created_by)
        .bind(c.created_at.to_offset_date_time())
        .bind(c.expires_at.to_offset_date_time())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(command).transpose()
    }

    pub(crate) async fn command_by_key(
        &self,
        device: &DeviceId,
        key: Option<&str>,
    ) -> Result<CommandRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM commands WHERE device = $1 AND idempotency_key = $2"
        ))
        .bind(device.as_str())
        .bind(key)
        .fetch_one(&self.pool)
        .await?;
        command(&row)
    }

    pub(crate) async fn command(&self, id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM commands WHERE id = $1"))
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
            "SELECT {COLUMNS} FROM commands WHERE device = $1 ORDER BY created_at DESC, id LIMIT $2"
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
            "UPDATE commands SET status = 'sent', sent_at = $2 WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(at.to_offset_date_time())
        .execute(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE commands SET status = $3, detail = $4, finished_at = $5
             WHERE id = $1 AND device = $2 AND status IN ('pending', 'sent') RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(device.as_str())
        .bind(status.as_str())
        .bind(detail)
        .bind(at.to_offset_date_time())
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
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(&format!(
            "UPDATE commands SET status = 'expired', detail = $2, finished_at = $1
             WHERE status IN ('pending', 'sent') AND expires_at < $1 RETURNING {COLUMNS}"
        ))
        .bind(now.to_offset_date_time())
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
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "INSERT INTO device_status (device, state, since) VALUES ($1, $2, $3)
             ON CONFLICT (device) DO UPDATE SET state = excluded.state, since = excluded.since
             WHERE device_status.state <> excluded.state",
        )
        .bind(device.as_str())
        .bind(state)
        .bind(at.to_offset_date_time())
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
