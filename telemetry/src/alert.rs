//! The alert contract, defined once for every crate: how urgent an alert is
//! ([`Severity`]), what it is about ([`Subject`]), what it stands for ([`AlertKind`]),
//! where it stands in its lifecycle ([`AlertState`]) and the one table of the moves between
//! states ([`AlertState::apply`]), who acknowledged or cleared it, and the alert object
//! itself as the store keeps it, the REST API returns it and the live websocket pushes it
//! ([`AlertRecord`]).
//!
//! The stream's engine, the store and the API all move alerts through
//! [`AlertState::apply`]: a move the table does not list is refused with a typed
//! [`TransitionError`], so the engine and the store cannot disagree on what is legal.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{DeviceId, EventTime, SegmentId};

/// How urgent an alert is. Ordered `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// The severity named `s` (`info`, `warning`, `critical`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an alert stands in its lifecycle. `Cleared` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Raised,
    Acknowledged,
    Cleared,
}

/// A move of an alert's lifecycle. [`AlertState::apply`] is its one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertMove {
    /// An operator acknowledges the alert.
    Acknowledge,
    /// The alert is cleared: by an operator, or by the engine when its condition ended.
    Clear,
}

impl AlertMove {
    /// The state the move leads to where it is legal (for messages about refused moves).
    pub fn target(self) -> AlertState {
        match self {
            Self::Acknowledge => AlertState::Acknowledged,
            Self::Clear => AlertState::Cleared,
        }
    }
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
    /// The states of an alert that is not cleared yet.
    pub const OPEN: [AlertState; 2] = [AlertState::Raised, AlertState::Acknowledged];
    pub const ALL: [AlertState; 3] =
        [AlertState::Raised, AlertState::Acknowledged, AlertState::Cleared];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raised => "raised",
            Self::Acknowledged => "acknowledged",
            Self::Cleared => "cleared",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn is_open(self) -> bool {
        self != Self::Cleared
    }

    /// The transition table: the state `mv` leads to from `self`, or why it is refused.
    ///
    /// | from         | acknowledge          | clear          |
    /// |--------------|----------------------|----------------|
    /// | raised       | acknowledged         | cleared        |
    /// | acknowledged | AlreadyAcknowledged  | cleared        |
    /// | cleared      | AlreadyCleared       | AlreadyCleared |
    pub fn apply(self, mv: AlertMove) -> Result<Self, TransitionError> {
        use AlertMove as M;
        use AlertState as S;
        match (self, mv) {
            (S::Cleared, _) => Err(TransitionError::AlreadyCleared),
            (S::Raised, M::Acknowledge) => Ok(S::Acknowledged),
            (S::Acknowledged, M::Acknowledge) => Err(TransitionError::AlreadyAcknowledged),
            (S::Raised | S::Acknowledged, M::Clear) => Ok(S::Cleared),
        }
    }

    pub fn acknowledge(self) -> Result<Self, TransitionError> {
        self.apply(AlertMove::Acknowledge)
    }

    pub fn clear(self) -> Result<Self, TransitionError> {
        self.apply(AlertMove::Clear)
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an alert stands for: one condition of one subject, or raises folded together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl AlertKind {
    pub const ALL: [AlertKind; 3] =
        [AlertKind::Single, AlertKind::SegmentGroup, AlertKind::RateLimitOverflow];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::SegmentGroup => "segment_group",
            Self::RateLimitOverflow => "rate_limit_overflow",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// One device (threshold, offline, flatline, rate of change, air quality).
    Device(DeviceId),
    /// One road segment: a LOS rule, or a group of a segment's devices raising one rule.
    Segment(SegmentId),
    /// The rule as a whole: raises its rate limit turned away, folded into one alert.
    Rule,
}

/// The kind of thing an alert is about (the store's `subject_kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    Device,
    Segment,
    Rule,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Segment => "segment",
            Self::Rule => "rule",
        }
    }
}

impl Subject {
    pub fn kind(&self) -> SubjectKind {
        match self {
            Self::Device(_) => SubjectKind::Device,
            Self::Segment(_) => SubjectKind::Segment,
            Self::Rule => SubjectKind::Rule,
        }
    }

    /// The device or segment id; `""` for the rule as a whole.
    pub fn id(&self) -> &str {
        match self {
            Self::Device(d) => d.as_str(),
            Self::Segment(s) => s.as_str(),
            Self::Rule => "",
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device(d) => write!(f, "device {d}"),
            Self::Segment(s) => write!(f, "segment {s}"),
            Self::Rule => f.write_str("rule"),
        }
    }
}

/// Who acknowledged an alert, when, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub by: String,
    pub note: Option<String>,
    pub at: EventTime,
}

/// How an alert was cleared: by an operator (`by`), or by the stream (`by` = `None`)
/// because its condition ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clearance {
    pub by: Option<String>,
    pub note: Option<String>,
    pub at: EventTime,
}

/// One stored alert: the object the REST API returns, the live websocket pushes and the
/// outbox carries (its `id` is the store's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub id: i64,
    pub rule: String,
    pub subject: Subject,
    pub kind: AlertKind,
    pub severity: Severity,
    pub state: AlertState,
    pub message: String,
    /// The value that raised it, where there is one.
    pub value: Option<f64>,
    /// When the condition began (the subject's event time).
    pub since: EventTime,
    /// When the stream raised it.
    pub raised_at: EventTime,
    pub acknowledged: Option<Acknowledgement>,
    pub cleared: Option<Clearance>,
    /// Subjects folded into it (1 for a single alert).
    pub members: u32,
}

impl AlertRecord {
    /// The segment the alert is about, if any.
    pub fn segment(&self) -> Option<&SegmentId> {
        match &self.subject {
            Subject::Segment(s) => Some(s),
            _ => None,
        }
    }
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

    #[test]
    fn names_round_trip() {
        for s in AlertState::ALL {
            assert_eq!(AlertState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in Severity::ALL {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(AlertState::parse("open"), None);
    }
}
