//! The status message (`sccr/v1/devices/{id}/status`, docs/mqtt-contract.md): retained by the
//! broker, and also each device's Last Will (`{"state":"offline"}`), so the core learns that
//! a device dropped off without waiting for its silence to be noticed.
//!
//! Payload: a JSON object with `state` (`"online"` or `"offline"`, required) and optional
//! `fw` (firmware version) and `ts` (Unix milliseconds or RFC 3339); other keys are ignored
//! so devices may add diagnostics.

use serde::Deserialize;

use crate::{DeviceId, EventTime};

/// Whether a device says it is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Online,
    Offline,
}

/// A decoded status message.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusMessage {
    pub state: DeviceState,
    pub firmware: Option<String>,
    /// The device's own time of the message, if it sent one.
    pub time: Option<EventTime>,
}

/// A status message as it reaches the stream core.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusEvent {
    pub device: DeviceId,
    pub state: DeviceState,
    /// When the core received it (processing time).
    pub received_at: EventTime,
    /// The broker delivered it from its retained store on subscribe: it describes the past
    /// (the last status the device published), not something that just happened.
    pub retained: bool,
}

/// Why a status payload was refused. `code()` is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("status payload is not a JSON object with a \"state\": {0}")]
    BadJson(String),
    #[error("status \"ts\" is neither Unix milliseconds nor RFC 3339: {0}")]
    BadTime(String),
}

impl StatusError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadJson(_) => "bad_status",
            Self::BadTime(_) => "bad_timestamp",
        }
    }
}

#[derive(Deserialize)]
struct Raw {
    state: DeviceState,
    #[serde(default)]
    fw: Option<String>,
    #[serde(default)]
    ts: Option<serde_json::Value>,
}

/// Decode one status payload.
pub fn decode_status(payload: &[u8]) -> Result<StatusMessage, StatusError> {
    let raw: Raw =
        serde_json::from_slice(payload).map_err(|e| StatusError::BadJson(e.to_string()))?;
    let time = match raw.ts {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => {
            let ms = n.as_i64().ok_or_else(|| StatusError::BadTime(n.to_string()))?;
            Some(EventTime::from_millis(ms).map_err(|e| StatusError::BadTime(e.to_string()))?)
        }
        Some(serde_json::Value::String(s)) => {
            Some(EventTime::parse_rfc3339(&s).map_err(|e| StatusError::BadTime(e.to_string()))?)
        }
        Some(other) => {
            return Err(StatusError::BadTime(other.to_string().chars().take(40).collect()))
        }
    };
    Ok(StatusMessage {
        state: raw.state,
        firmware: raw.fw.map(|f| f.chars().take(64).collect()),
        time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_offline_and_last_will_payloads_decode() {
        let m = decode_status(br#"{"state":"online","fw":"1.2.0","ts":1763892000123}"#).unwrap();
        assert_eq!(
            m,
            StatusMessage {
                state: DeviceState::Online,
                firmware: Some("1.2.0".into()),
                time: Some(EventTime(1_763_892_000_123))
            }
        );
        let will = decode_status(br#"{"state":"offline"}"#).unwrap();
        assert_eq!(will, StatusMessage { state: DeviceState::Offline, firmware: None, time: None });
        let rfc = decode_status(br#"{"state":"offline","ts":"2025-11-23T10:00:00Z","rssi":-70}"#)
            .unwrap();
        assert_eq!(rfc.time, Some(EventTime(1_763_892_000_000)));
    }

    #[test]
    fn bad_payloads_are_refused_with_a_reason() {
        for (payload, code) in [
            (&b"online"[..], "bad_status"),
            (br#"{"fw":"1"}"#, "bad_status"),
            (br#"{"state":"asleep"}"#, "bad_status"),
            (br#"{"state":"online","ts":true}"#, "bad_timestamp"),
            (br#"{"state":"online","ts":"yesterday"}"#, "bad_timestamp"),
            (br#"{"state":"online","ts":-5}"#, "bad_timestamp"),
        ] {
            let e = decode_status(payload).unwrap_err();
            assert_eq!(e.code(), code, "{}: {e}", String::from_utf8_lossy(payload));
        }
    }
}
