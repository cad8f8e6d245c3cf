//! Device commands (docs/mqtt-contract.md): `sccr/v1/devices/{id}/commands` carries
//! `{"id":"<uuid>","name":"set_interval","args":{…},"expires_at":…}` down to a device, and
//! `sccr/v1/devices/{id}/commands/ack` carries `{"id":"…","result":"ok"|"rejected"|"failed","detail":…}` back.

use serde::{Deserialize, Serialize};

use crate::codec::TimeField;
use crate::time::EventTime;

/// A command as sent to a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub args: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<TimeField>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandResult {
    Ok,
    Rejected,
    Failed,
}

/// A device's answer to a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandAck {
    pub id: String,
    pub result: CommandResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl CommandAck {
    pub fn ok(id: &str, detail: Option<String>) -> Self {
        Self { id: id.to_owned(), result: CommandResult::Ok, detail }
    }

    pub fn rejected(id: &str, detail: impl Into<String>) -> Self {
        Self { id: id.to_owned(), result: CommandResult::Rejected, detail: Some(detail.into()) }
    }
}

/// Why a command payload could not be read (answered with `rejected` when its id is known).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("command is not valid: {0}")]
    Invalid(String),
}

impl Command {
    pub fn parse(payload: &[u8]) -> Result<Self, CommandError> {
        let c: Command =
            serde_json::from_slice(payload).map_err(|e| CommandError::Invalid(e.to_string()))?;
        if c.id.is_empty() || c.id.len() > 128 {
            return Err(CommandError::Invalid("id must be 1 to 128 characters".into()));
        }
        Ok(c)
    }

    /// Whether the command expired before `now`. An unreadable expiry counts as expired.
    pub fn is_expired(&self, now: EventTime) -> bool {
        match &self.expires_at {
            None => false,
            Some(TimeField::Millis(ms)) => *ms < now.millis(),
            Some(TimeField::Rfc3339(s)) => EventTime::parse_rfc3339(s).map_or(true, |t| t < now),
        }
    }

    /// The id of a payload that is otherwise unreadable, so it can still be answered.
    pub fn id_of(payload: &[u8]) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        v.get("id")?.as_str().filter(|s| !s.is_empty() && s.len() <= 128).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_expire() {
        let c = Command::parse(
            br#"{"id":"a1","name":"set_interval","args":{"interval":"10s"},"expires_at":1000}"#,
        )
        .unwrap();
        assert_eq!(c.name, "set_interval");
        assert!(c.is_expired(EventTime(1001)));
        assert!(!c.is_expired(EventTime(1000)));
        let c = Command::parse(br#"{"id":"a2","name":"ping"}"#).unwrap();
        assert!(!c.is_expired(EventTime(i64::MAX)));
        assert!(Command::parse(br#"{"id":"","name":"ping"}"#).is_err());
        assert!(Command::parse(br#"{"id":"x","name":"ping","extra":1}"#).is_err());
        assert_eq!(Command::id_of(br#"{"id":"x","name":5}"#), Some("x".into()));
    }

    #[test]
    fn acks_serialise_as_the_spec_says() {
        let a = CommandAck::rejected("a1", "expired");
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"id":"a1","result":"rejected","detail":"expired"}"#
        );
        let a = CommandAck::ok("a2", None);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"id":"a2","result":"ok"}"#);
    }
}
