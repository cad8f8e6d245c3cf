//! The alert lifecycle: raised → acknowledged (by an operator, with a note) → cleared
//! (automatically when the condition ends, or by an operator). `Cleared` is final.
//!
//! [`AlertState::acknowledge`] and [`AlertState::clear`] are the only ways to move an alert
//! and they refuse illegal moves with a typed [`TransitionError`]; every legal move is
//! recorded as an [`AlertTransition`] (the `alert_events` row: who, when, from, to, note).

use serde::{Deserialize, Serialize};
use telemetry::EventTime;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Raised,
    Acknowledged,
    Cleared,
}

/// A move the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the alert is already acknowledged")]
    AlreadyAcknowledged,
    #[error("the alert is already cleared")]
    AlreadyCleared,
}

impl AlertState {
    pub fn is_open(self) -> bool {
        self != Self::Cleared
    }

    pub fn acknowledge(self) -> Result<Self, TransitionError> {
        match self {
            Self::Raised => Ok(Self::Acknowledged),
            Self::Acknowledged => Err(TransitionError::AlreadyAcknowledged),
            Self::Cleared => Err(TransitionError::AlreadyCleared),
        }
    }

    pub fn clear(self) -> Result<Self, TransitionError> {
        match self {
            Self::Raised | Self::Acknowledged => Ok(Self::Cleared),
            Self::Cleared => Err(TransitionError::AlreadyCleared),
        }
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

/// What an alert stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// One condition of one subject.
    Single,
    /// More devices of one segment raised the rule than the grouping allows at once; their
    /// raises are folded into this alert about the segment.
    SegmentGroup,
    /// Raises the rule's rate limit turned away, folded into this alert about the rule.
    RateLimitOverflow,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub by: String,
    pub note: Option<String>,
    pub at: EventTime,
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
}

/// One lifecycle move, as stored in `alert_events`. `from` is `None` for the raise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertTransition {
    pub alert: AlertId,
    pub key: AlertKey,
    pub from: Option<AlertState>,
    pub to: AlertState,
    /// The operator; `None` for moves the engine made.
    pub by: Option<String>,
    pub note: Option<String>,
    pub at: EventTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_moves_are_legal() {
        use AlertState::*;
        assert_eq!(Raised.acknowledge(), Ok(Acknowledged));
        assert_eq!(Raised.clear(), Ok(Cleared));
        assert_eq!(Acknowledged.clear(), Ok(Cleared));
        assert_eq!(Acknowledged.acknowledge(), Err(TransitionError::AlreadyAcknowledged));
        assert_eq!(Cleared.acknowledge(), Err(TransitionError::AlreadyCleared));
        assert_eq!(Cleared.clear(), Err(TransitionError::AlreadyCleared));
        assert!(Raised.is_open() && Acknowledged.is_open() && !Cleared.is_open());
    }
}
