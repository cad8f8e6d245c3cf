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
use telemetry::{DeviceId, DeviceState, EventTime};

use crate::outbox::{event_type, OutboxEvent};
use crate::{Store, StoreError};

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

    pub(crate) fn parse(s: String) -> Result<Self, StoreError> {
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
    /// The event of a final status, written in the transaction that sets it.
    pub(crate) fn outbox_event(&self) -> Option<OutboxEvent> {
        Some(OutboxEvent {
            event_type: self.status.event_type()?.to_owned(),
            subject: format!("command/{}", self.id),
            time: self.finished_at.unwrap_or(self.created_at),
            data: serde_json::to_value(self).unwrap_or_default(),
        })
    }
}

/// The command's `args` as both backends return them (JSON text).
pub(crate) fn args_of(
    text: String,
) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    serde_json::from_str(&text).map_err(|_| StoreError::Corrupt {
        what: "command args",
        value: text.chars().take(80).collect(),
    })
}

/// Commands and device status: see the module doc. The SQL is each backend's
/// (`pg/commands.rs`, `sqlite/commands.rs`).
impl Store {
    /// Create a command, or return the device's command with the same idempotency key.
    /// The flag says whether it was created now (and so is to be published).
    pub async fn create_command(
        &self,
        c: &NewCommand,
    ) -> Result<(CommandRecord, bool), StoreError> {
        let args = serde_json::Value::Object(c.args.clone()).to_string();
        if let Some(created) = dispatch!(self, s => s.insert_command(c, &args).await)? {
            return Ok((created, true));
        }
        let key = c.idempotency_key.as_deref();
        let existing = dispatch!(self, s => s.command_by_key(&c.device, key).await)?;
        Ok((existing, false))
    }

    pub async fn command(&self, id: &str) -> Result<Option<CommandRecord>, StoreError> {
        dispatch!(self, s => s.command(id).await)
    }

    /// A device's commands, newest first.
    pub async fn device_commands(
        &self,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        dispatch!(self, s => s.device_commands(device, limit).await)
    }

    /// Pending → sent (the broker took the publish). A command in any other state is
    /// left alone.
    pub async fn mark_command_sent(&self, id: &str, at: EventTime) -> Result<(), StoreError> {
        dispatch!(self, s => s.mark_command_sent(id, at).await)
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
        dispatch!(self, s => s.finish_command(id, device, status, detail, at).await)
    }

    /// Expire every pending or sent command whose time to live ended before `now`, each
    /// with its outbox event, in one transaction.
    pub async fn expire_commands(&self, now: EventTime) -> Result<Vec<CommandRecord>, StoreError> {
        let detail = "no answer from the device before the command expired";
        dispatch!(self, s => s.expire_commands(now, detail).await)
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
        dispatch!(self, s => s.record_device_status(device, state_str, at, &event).await)
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
