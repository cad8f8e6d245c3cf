//! The alert lifecycle: raised → acknowledged (by an operator, with a note) → cleared
//! (automatically when the condition ends, or by an operator). `Cleared` is final.
//!
//! The states and the one transition table are the contract's
//! ([`telemetry::alert::AlertState::apply`]), shared with the store: it refuses illegal
//! moves with a typed [`TransitionError`]; every legal move is recorded as an
//! [`AlertTransition`] (the `alert_events` row: who, when, from, to, note).

use serde::{Deserialize, Serialize};
use telemetry::EventTime;

pub use telemetry::alert::{
    Acknowledgement, AlertKind, AlertMove, AlertState, MessageCode, Params, Shelf,
    SuppressionReason, TransitionError,
};

use super::{AlertKey, Severity, Subject};

/// Engine-assigned alert number, increasing; persisted with the engine state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AlertId(pub u64);

impl std::fmt::Display for AlertId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why an operator's action on an alert was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("alert {0} is not known to this engine (never raised here, or cleared long ago)")]
    Unknown(AlertId),
    #[error("alert {id}: {source}")]
    Refused { id: AlertId, source: TransitionError },
    #[error("an operator action needs the operator's name")]
    NoOperator,
}

/// Most folded subjects listed on a group or overflow alert; `members` counts them all.
pub const LISTED_MEMBERS: usize = 20;

/// One alert as the store keeps it and the wall shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: AlertId,
    pub key: AlertKey,
    pub kind: AlertKind,
    pub severity: Severity,
    pub state: AlertState,
    /// The value that raised it (the triggering reading, rate, mean or silence in seconds).
    pub value: f64,
    pub message: String,
    /// When the condition began: event time of the subject, or arrival time for offline.
    pub since: EventTime,
    /// Processing time of the raise.
    pub raised_at: EventTime,
    pub acknowledged: Option<Acknowledgement>,
    pub cleared_at: Option<EventTime>,
    /// Subjects folded into a group or overflow alert and still in their condition.
    pub members: u32,
    /// Up to [`LISTED_MEMBERS`] of them.
    pub listed_members: Vec<Subject>,
    /// Raises folded into this alert since it opened (group and overflow alerts).
    pub folded_raises: u64,
    /// Whether the condition still holds (false once it ended: returned, or cleared).
    #[serde(default = "yes")]
    pub active: bool,
    /// When the condition ended, while the alert is returned.
    #[serde(default)]
    pub returned_at: Option<EventTime>,
    /// Shelved by an operator (mirrored from the store; expires at `until`).
    #[serde(default)]
    pub shelved: Option<Shelf>,
    /// Suppressed by design while another alert is active.
    #[serde(default)]
    pub suppressed: Option<Suppressed>,
    /// The message template and its values (`message` is the English text).
    #[serde(default)]
    pub code: MessageCode,
    #[serde(default)]
    pub params: Params,
}

fn yes() -> bool {
    true
}

/// A designed suppression as the engine knows it: the suppressing alert by engine id
/// and key (the sink finds its store id), or the road operation that explains it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppressed {
    pub reason: SuppressionReason,
    pub by_alert: Option<AlertId>,
    pub by_key: Option<AlertKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_operation: Option<String>,
}

impl Suppressed {
    /// What suppresses, for the event's note: `suppressed_by_rule by <key>`, `operation op-…`.
    pub fn describe(&self) -> String {
        match (&self.by_operation, &self.by_key) {
            (Some(op), _) => format!("{} {op}", self.reason.as_str()),
            (None, Some(key)) => format!("{} by {key}", self.reason.as_str()),
            (None, None) => self.reason.as_str().to_owned(),
        }
    }
}

/// One lifecycle move, as stored in `alert_events`. `from` is `None` for the raise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertTransition {
    pub alert: AlertId,
    pub key: AlertKey,
    pub from: Option<AlertState>,
    pub to: AlertState,
    /// The move of the transition table (`None` for the raise).
    #[serde(default)]
    pub action: Option<AlertMove>,
    /// The operator; `None` for moves the engine made.
    pub by: Option<String>,
    pub note: Option<String>,
    pub at: EventTime,
}
