//! Device commands and device status as the store keeps them.
//!
//! A command's lifecycle: `pending` (stored, not yet accepted by the broker) → `sent`
//! (the broker acknowledged the publish) → `acked` / `rejected` / `failed` (the device's
//! answer), or `expired` when its time to live passes first. The final move writes its
//! outbox event (`it.firenze.sccr.command.<status>`) in the same transaction; a final
//! status never changes again, so a late ack of an expired command changes nothing.
//!
//! Idempotency: a command created with an idempotency key that the device already has a
//! command for is not created again; the existing one is returned (and not re-published).
//!
//! Device status: `device_status` holds each device's last known state; a change (or the
//! first sighting) writes it and its outbox event (`it.firenze.sccr.device.online|offline`)
//! in one transaction, and a repeated state writes nothing.

use serde::Serialize;
use sqlx::{Connection, Row};
use telemetry::{DeviceId, DeviceState, EventTime};

use crate::outbox::{event_type, pg_append, sqlite_append, OutboxEvent};
use crate::{parse_device, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Pending,
    Sent,
    Acked,
    Rejected,
    Failed,
    Expired,
}

impl CommandStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Acked => "acked",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Sent)
    }

    fn parse(s: String) -> Result<Self, StoreError> {
        Ok(match s.as_str() {
            "pending" => Self::Pending,
            "sent" => Self::Sent,
            "acked" => Self::Acked,
            "rejected" => Self::Rejected,
            "failed" => Self::Failed,
            "expired" => Self::Expired,
            _ => return Err(StoreError::Corrupt { what: "command status", value: s }),
        })
    }

    /// The outbox event type of a final status.
    fn event_type(self) -> Option<&'static str> {
        match self {
            Self::Acked => Some(event_type::COMMAND_ACKED),
            Self::Rejected => Some(event_type::COMMAND_REJECTED),
            Self::Failed => Some(event_type::COMMAND_FAILED),
            Self::Expired => Some(event_type::COMMAND_EXPIRED),
            Self::Pending | Self::Sent => None,
        }
    }
}

/// A command to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCommand {
    /// A UUID, sent to the device as the command's `id`.
    pub id: String,
    pub device: DeviceId,
    pub name: String,
    pub args: serde_json::Map<String, serde_json::Value>,
    pub idempotency_key: Option<String>,
    pub created_by: Option<String>,
    pub created_at: EventTime,
    pub expires_at: EventTime,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandRecord {
    pub id: String,
    pub device: DeviceId,
    pub name: String,
    pub args: serde_json::Map<String, serde_json::Value>,
    pub idempotency_key: Option<String>,
    pub status: CommandStatus,
    /// The device's detail, or why the command failed or expired.
    pub detail: Option<String>,
    pub created_by: Option<String>,
    pub created_at: EventTime,
    pub sent_at: Option<EventTime>,
    pub expires_at: EventTime,
    pub finished_at: Option<EventTime>,
}

impl CommandRecord {
    fn outbox_event(&self) -> Option<OutboxEvent> {
        Some(OutboxEvent {
            event_type: self.status.event_type()?.to_owned(),
            subject: format!("command/{}", self.id),
            time: self.finished_at.unwrap_or(self.created_at),
            data: serde_json::to_value(self).unwrap_or_default(),
        })
    }
}

const PG_COLUMNS: &str = "id, device, name, args::text AS args, idempotency_key, status, detail, created_by, created_at, sent_at, expires_at, finished_at";
const SQLITE_COLUMNS: &str = "id, device, name, args, idempotency_key, status, detail, created_by, created_at_ms, sent_at_ms, expires_at_ms, finished_at_ms";

fn args_of(text: String) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    serde_json::from_str(&text).map_err(|_| StoreError::Corrupt {
        what: "command args",
        value: text.chars().take(80).collect(),
    })
}

fn pg_command(row: &sqlx::postgres::PgRow) -> Result<CommandRecord, StoreError> {
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

fn sqlite_command(row: &sqlx::sqlite::SqliteRow) -> Result<CommandRecord, StoreError> {
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

/// Commands and device status: see the module doc.
impl Store {
    /// Create a command, or return the device's command with the same idempotency key.
    /// The flag says whether it was created now (and so is to be published).
    pub async fn create_command(
        &self,
        c: &NewCommand,
    ) -> Result<(CommandRecord, bool), StoreError> {
        let args = serde_json::Value::Object(c.args.clone()).to_string();
        match self {
            Store::Postgres(s) => {
                let row = sqlx::query(&format!(
                    "INSERT INTO commands (id, device, name, args, idempotency_key, status, created_by, created_at, expires_at)
                     VALUES ($1, $2, $3, $4::jsonb, $5, 'pending', $6, $7, $8)
                     ON CONFLICT (device, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                     RETURNING {PG_COLUMNS}"
                ))
                .bind(&c.id)
                .bind(c.device.as_str())
                .bind(&c.name)
                .bind(&args)
                .bind(&c.idempotency_key)
                .bind(&c.created_by)
                .bind(c.created_at.to_offset_date_time())
                .bind(c.expires_at.to_offset_date_time())
                .fetch_optional(s.pool())
                .await?;
                if let Some(row) = row {
                    return Ok((pg_command(&row)?, true));
                }
                let row = sqlx::query(&format!(
                    "SELECT {PG_COLUMNS} FROM commands WHERE device = $1 AND idempotency_key = $2"
                ))
                .bind(c.device.as_str())
                .bind(&c.idempotency_key)
                .fetch_one(s.pool())
                .await?;
                Ok((pg_command(&row)?, false))
            }
            Store::Sqlite(s) => {
                let row = sqlx::query(&format!(
                    "INSERT INTO commands (id, device, name, args, idempotency_key, status, created_by, created_at_ms, expires_at_ms)
                     VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)
                     ON CONFLICT (device, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                     RETURNING {SQLITE_COLUMNS}"
                ))
                .bind(&c.id)
                .bind(c.device.as_str())
                .bind(&c.name)
                .bind(&args)
                .bind(&c.idempotency_key)
                .bind(&c.created_by)
                .bind(c.created_at.millis())
                .bind(c.expires_at.millis())
                .fetch_optional(s.pool())
                .await?;
                if let Some(row) = row {
                    return Ok((sqlite_command(&row)?, true));
                }
                let row = sqlx::query(&format!("SELECT {SQLITE_COLUMNS} FROM commands WHERE device = ? AND idempotency_key = ?"))
                    .bind(c.device.as_str())
                    .bind(&c.idempotency_key)
                    .fetch_one(s.pool())
                    .await?;
                Ok((sqlite_command(&row)?, false))
            }
        }
    }

    pub async fn command(&self, id: &str) -> Result<Option<CommandRecord>, StoreError> {
        match self {
            Store::Postgres(s) => {
                let row = sqlx::query(&format!("SELECT {PG_COLUMNS} FROM commands WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(s.pool())
                    .await?;
                row.as_ref().map(pg_command).transpose()
            }
            Store::Sqlite(s) => {
                let row =
                    sqlx::query(&format!("SELECT {SQLITE_COLUMNS} FROM commands WHERE id = ?"))
                        .bind(id)
                        .fetch_optional(s.pool())
                        .await?;
                row.as_ref().map(sqlite_command).transpose()
            }
        }
    }

    /// A device's commands, newest first.
    pub async fn device_commands(
        &self,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match self {
            Store::Postgres(s) => {
                let rows = sqlx::query(&format!("SELECT {PG_COLUMNS} FROM commands WHERE device = $1 ORDER BY created_at DESC, id LIMIT $2"))
                    .bind(device.as_str())
                    .bind(limit)
                    .fetch_all(s.pool())
                    .await?;
                rows.iter().map(pg_command).collect()
            }
            Store::Sqlite(s) => {
                let rows = sqlx::query(&format!("SELECT {SQLITE_COLUMNS} FROM commands WHERE device = ? ORDER BY created_at_ms DESC, id LIMIT ?"))
                    .bind(device.as_str())
                    .bind(limit)
                    .fetch_all(s.pool())
                    .await?;
                rows.iter().map(sqlite_command).collect()
            }
        }
    }

    /// Pending → sent (the broker took the publish). A command in any other state is
    /// left alone.
    pub async fn mark_command_sent(&self, id: &str, at: EventTime) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => {
                sqlx::query("UPDATE commands SET status = 'sent', sent_at = $2 WHERE id = $1 AND status = 'pending'")
                    .bind(id)
                    .bind(at.to_offset_date_time())
                    .execute(s.pool())
                    .await?;
            }
            Store::Sqlite(s) => {
                sqlx::query("UPDATE commands SET status = 'sent', sent_at_ms = ? WHERE id = ? AND status = 'pending'")
                    .bind(at.millis())
                    .bind(id)
                    .execute(s.pool())
                    .await?;
            }
        }
        Ok(())
    }

    /// Give a pending or sent command of `device` its final status, with its outbox
    /// event, in one transaction. `None` when there is no such open command (unknown id,
    /// another device's command, or already final).
    pub async fn finish_command(
        &self,
        id: &str,
        device: &DeviceId,
        status: CommandStatus,
        detail: Option<&str>,
        at: EventTime,
    ) -> Result<Option<CommandRecord>, StoreError> {
        if !status.is_final() {
            return Err(StoreError::InvalidQuery {
                param: "status",
                message: format!("{} is not a final command status", status.as_str()),
            });
        }
        match self {
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                let row = sqlx::query(&format!(
                    "UPDATE commands SET status = $3, detail = $4, finished_at = $5
                     WHERE id = $1 AND device = $2 AND status IN ('pending', 'sent') RETURNING {PG_COLUMNS}"
                ))
                .bind(id)
                .bind(device.as_str())
                .bind(status.as_str())
                .bind(detail)
                .bind(at.to_offset_date_time())
                .fetch_optional(&mut *tx)
                .await?;
                let Some(record) = row.as_ref().map(pg_command).transpose()? else {
                    return Ok(None);
                };
                if let Some(event) = record.outbox_event() {
                    pg_append(&mut tx, &event).await?;
                }
                tx.commit().await?;
                Ok(Some(record))
            }
            Store::Sqlite(s) => {
                let mut conn = s.pool().acquire().await?;
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                let row = sqlx::query(&format!(
                    "UPDATE commands SET status = ?3, detail = ?4, finished_at_ms = ?5
                     WHERE id = ?1 AND device = ?2 AND status IN ('pending', 'sent') RETURNING {SQLITE_COLUMNS}"
                ))
                .bind(id)
                .bind(device.as_str())
                .bind(status.as_str())
                .bind(detail)
                .bind(at.millis())
                .fetch_optional(&mut *tx)
                .await?;
                let Some(record) = row.as_ref().map(sqlite_command).transpose()? else {
                    return Ok(None);
                };
                if let Some(event) = record.outbox_event() {
                    sqlite_append(&mut tx, &event).await?;
                }
                tx.commit().await?;
                Ok(Some(record))
            }
        }
    }

    /// Expire every pending or sent command whose time to live ended before `now`, each
    /// with its outbox event, in one transaction.
    pub async fn expire_commands(&self, now: EventTime) -> Result<Vec<CommandRecord>, StoreError> {
        let detail = "no answer from the device before the command expired";
        let records = match self {
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                let rows = sqlx::query(&format!(
                    "UPDATE commands SET status = 'expired', detail = $2, finished_at = $1
                     WHERE status IN ('pending', 'sent') AND expires_at < $1 RETURNING {PG_COLUMNS}"
                ))
                .bind(now.to_offset_date_time())
                .bind(detail)
                .fetch_all(&mut *tx)
                .await?;
                let records = rows.iter().map(pg_command).collect::<Result<Vec<_>, _>>()?;
                for event in records.iter().filter_map(CommandRecord::outbox_event) {
                    pg_append(&mut tx, &event).await?;
                }
                tx.commit().await?;
                records
            }
            Store::Sqlite(s) => {
                let mut conn = s.pool().acquire().await?;
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                let rows = sqlx::query(&format!(
                    "UPDATE commands SET status = 'expired', detail = ?2, finished_at_ms = ?1
                     WHERE status IN ('pending', 'sent') AND expires_at_ms < ?1 RETURNING {SQLITE_COLUMNS}"
                ))
                .bind(now.millis())
                .bind(detail)
                .fetch_all(&mut *tx)
                .await?;
                let records = rows.iter().map(sqlite_command).collect::<Result<Vec<_>, _>>()?;
                for event in records.iter().filter_map(CommandRecord::outbox_event) {
                    sqlite_append(&mut tx, &event).await?;
                }
                tx.commit().await?;
                records
            }
        };
        Ok(records)
    }

    /// Record a device's state; writes it and its outbox event only when it differs from
    /// the last one recorded (or is the first). Returns whether it changed.
    pub async fn record_device_status(
        &self,
        device: &DeviceId,
        state: DeviceState,
        at: EventTime,
    ) -> Result<bool, StoreError> {
        let state_str = match state {
            DeviceState::Online => "online",
            DeviceState::Offline => "offline",
        };
        let event = OutboxEvent {
            event_type: match state {
                DeviceState::Online => event_type::DEVICE_ONLINE,
                DeviceState::Offline => event_type::DEVICE_OFFLINE,
            }
            .to_owned(),
            subject: format!("device/{device}"),
            time: at,
            data: serde_json::json!({ "device": device.as_str(), "state": state_str, "since": at }),
        };
        match self {
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                let changed = sqlx::query(
                    "INSERT INTO device_status (device, state, since) VALUES ($1, $2, $3)
                     ON CONFLICT (device) DO UPDATE SET state = excluded.state, since = excluded.since
                     WHERE device_status.state <> excluded.state",
                )
                .bind(device.as_str())
                .bind(state_str)
                .bind(at.to_offset_date_time())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if changed {
                    pg_append(&mut tx, &event).await?;
                }
                tx.commit().await?;
                Ok(changed)
            }
            Store::Sqlite(s) => {
                let mut conn = s.pool().acquire().await?;
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                let changed = sqlx::query(
                    "INSERT INTO device_status (device, state, since_ms) VALUES (?, ?, ?)
                     ON CONFLICT (device) DO UPDATE SET state = excluded.state, since_ms = excluded.since_ms
                     WHERE device_status.state <> excluded.state",
                )
                .bind(device.as_str())
                .bind(state_str)
                .bind(at.millis())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if changed {
                    sqlite_append(&mut tx, &event).await?;
                }
                tx.commit().await?;
                Ok(changed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    #[tokio::test]
    async fn commands_are_idempotent_final_once_and_their_results_are_outbox_events() {
        let store = Store::connect("sqlite::memory:", &StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        let device = DeviceId::parse("loop-1").unwrap();
        let new = |id: &str, key: &str| NewCommand {
            id: id.into(),
            device: device.clone(),
            name: "ping".into(),
            args: Default::default(),
            idempotency_key: Some(key.into()),
            created_by: Some("ada".into()),
            created_at: EventTime(1_000),
            expires_at: EventTime(61_000),
        };
        let (c, created) = store.create_command(&new("c1", "k")).await.unwrap();
        assert!(created);
        let (again, created) = store.create_command(&new("c2", "k")).await.unwrap();
        assert!(!created);
        assert_eq!(again.id, c.id);
        store.mark_command_sent("c1", EventTime(1_100)).await.unwrap();
        let other = DeviceId::parse("loop-2").unwrap();
        assert!(
            store
                .finish_command("c1", &other, CommandStatus::Acked, None, EventTime(1_200))
                .await
                .unwrap()
                .is_none(),
            "another device's ack"
        );
        let done = store
            .finish_command("c1", &device, CommandStatus::Acked, Some("ok"), EventTime(1_200))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((done.status, done.sent_at), (CommandStatus::Acked, Some(EventTime(1_100))));
        assert!(
            store
                .finish_command("c1", &device, CommandStatus::Failed, None, EventTime(1_300))
                .await
                .unwrap()
                .is_none(),
            "final once"
        );
        store.create_command(&new("c3", "k3")).await.unwrap();
        assert!(
            store.expire_commands(EventTime(61_000)).await.unwrap().is_empty(),
            "not before its time to live"
        );
        let expired = store.expire_commands(EventTime(61_001)).await.unwrap();
        assert_eq!(
            expired.iter().map(|c| (c.id.as_str(), c.status)).collect::<Vec<_>>(),
            [("c3", CommandStatus::Expired)]
        );
        assert!(store
            .record_device_status(&device, DeviceState::Offline, EventTime(2_000))
            .await
            .unwrap());
        assert!(!store
            .record_device_status(&device, DeviceState::Offline, EventTime(2_100))
            .await
            .unwrap());
        let events = store.outbox_events(0, 10).await.unwrap();
        let kinds: Vec<(&str, &str)> =
            events.iter().map(|e| (e.event_type.as_str(), e.subject.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (event_type::COMMAND_ACKED, "command/c1"),
                (event_type::COMMAND_EXPIRED, "command/c3"),
                (event_type::DEVICE_OFFLINE, "device/loop-1")
            ]
        );
        assert_eq!(events[0].data["created_by"], "ada");
    }
}
