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

/// Where an alert stands in its lifecycle (ISA-18.2). `Cleared` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Active, unacknowledged.
    Raised,
    /// Active, acknowledged.
    Acknowledged,
    /// Returned to normal while unacknowledged: the condition ended, the alert stays open
    /// until an operator acknowledges it.
    Returned,
    /// Closed.
    Cleared,
}

/// A move of an alert's lifecycle. [`AlertState::apply`] is its one table; every move is
/// an `alert_events` row (`action`; the raise, which has no move, has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertMove {
    /// An operator acknowledges the alert.
    Acknowledge,
    /// An operator clears the alert (or the engine, when its rule went away).
    Clear,
    /// The engine saw the condition end.
    End,
    /// The engine saw the condition hold again before a returned alert was acknowledged.
    Resume,
    /// An operator shelves the open alert (an overlay: the state does not change).
    Shelve,
    /// An operator takes the alert off the shelf, or the shelf expired.
    Unshelve,
    /// Suppressed by design while another alert is active (an overlay).
    Suppress,
    /// The suppressing alert is no longer active.
    Unsuppress,
}

impl AlertMove {
    pub const ALL: [AlertMove; 8] = [
        AlertMove::Acknowledge,
        AlertMove::Clear,
        AlertMove::End,
        AlertMove::Resume,
        AlertMove::Shelve,
        AlertMove::Unshelve,
        AlertMove::Suppress,
        AlertMove::Unsuppress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledge",
            Self::Clear => "clear",
            Self::End => "end",
            Self::Resume => "resume",
            Self::Shelve => "shelve",
            Self::Unshelve => "unshelve",
            Self::Suppress => "suppress",
            Self::Unsuppress => "unsuppress",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether an operator makes the move through the API (a refusal is then a 409);
    /// otherwise the engine does.
    pub fn by_operator(self) -> bool {
        matches!(self, Self::Acknowledge | Self::Clear | Self::Shelve | Self::Unshelve)
    }

    /// What the move is, for people (the API's docs page).
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Acknowledge => "an operator acknowledges the alert",
            Self::Clear => "an operator clears the alert (or the engine, when its rule went away)",
            Self::End => "the engine saw the condition end",
            Self::Resume => "the engine saw the condition hold again before anyone acknowledged the returned alert",
            Self::Shelve => "an operator shelves the open alert until a time: it signals nothing meanwhile",
            Self::Unshelve => "an operator takes the alert off its shelf, or the shelf expired",
            Self::Suppress => "the engine suppresses it by design while another alert is active",
            Self::Unsuppress => "the suppressing alert is no longer active",
        }
    }

    /// Whether the move leaves the state as it is (shelving, suppression).
    pub fn is_overlay(self) -> bool {
        matches!(self, Self::Shelve | Self::Unshelve | Self::Suppress | Self::Unsuppress)
    }

    /// The state the move typically leads to (for messages about refused moves).
    pub fn target(self) -> AlertState {
        match self {
            Self::Acknowledge => AlertState::Acknowledged,
            Self::End => AlertState::Returned,
            Self::Resume => AlertState::Raised,
            _ => AlertState::Cleared,
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
    #[error("the alert has already returned to normal")]
    AlreadyReturned,
    #[error("the alert has not returned to normal")]
    NotReturned,
}

impl AlertState {
    /// The states of an alert that is not cleared yet.
    pub const OPEN: [AlertState; 3] =
        [AlertState::Raised, AlertState::Acknowledged, AlertState::Returned];
    pub const ALL: [AlertState; 4] =
        [AlertState::Raised, AlertState::Acknowledged, AlertState::Returned, AlertState::Cleared];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raised => "raised",
            Self::Acknowledged => "acknowledged",
            Self::Returned => "returned",
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

    /// What the state means, for people (the API's docs page).
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Raised => "active, unacknowledged",
            Self::Acknowledged => "active, acknowledged",
            Self::Returned => "the condition ended while unacknowledged: returned to normal, open until acknowledged",
            Self::Cleared => "closed; final",
        }
    }

    /// The transition table (ISA-18.2): the state `mv` leads to from `self`, or why it is
    /// refused.
    ///
    /// | from         | acknowledge (op)    | end (engine)    | resume (engine) | clear (op)     | shelve, unshelve, suppress, unsuppress |
    /// |--------------|---------------------|-----------------|-----------------|----------------|-----------------------------------------|
    /// | raised       | acknowledged        | returned        | NotReturned     | cleared        | raised                                  |
    /// | acknowledged | AlreadyAcknowledged | cleared         | NotReturned     | cleared        | acknowledged                            |
    /// | returned     | cleared             | AlreadyReturned | raised          | cleared        | returned                                |
    /// | cleared      | AlreadyCleared      | AlreadyCleared  | AlreadyCleared  | AlreadyCleared | AlreadyCleared                          |
    pub fn apply(self, mv: AlertMove) -> Result<Self, TransitionError> {
        use AlertMove as M;
        use AlertState as S;
        match (self, mv) {
            (S::Cleared, _) => Err(TransitionError::AlreadyCleared),
            (s, m) if m.is_overlay() => Ok(s),
            (S::Raised, M::Acknowledge) => Ok(S::Acknowledged),
            (S::Acknowledged, M::Acknowledge) => Err(TransitionError::AlreadyAcknowledged),
            (S::Returned, M::Acknowledge) => Ok(S::Cleared),
            (S::Raised, M::End) => Ok(S::Returned),
            (S::Acknowledged, M::End) => Ok(S::Cleared),
            (S::Returned, M::End) => Err(TransitionError::AlreadyReturned),
            (S::Returned, M::Resume) => Ok(S::Raised),
            (S::Raised | S::Acknowledged, M::Resume) => Err(TransitionError::NotReturned),
            (_, M::Clear) => Ok(S::Cleared),
            (_, M::Shelve | M::Unshelve | M::Suppress | M::Unsuppress) => Ok(self),
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
    /// Whether the condition still holds.
    #[serde(default = "yes")]
    pub active: bool,
    /// When the condition ended, if it did.
    #[serde(default)]
    pub returned_at: Option<EventTime>,
    /// Shelved by an operator: does not signal until `until`.
    #[serde(default)]
    pub shelved: Option<Shelf>,
    /// Suppressed by design while another alert is active.
    #[serde(default)]
    pub suppressed: Option<Suppression>,
    /// The message template ([`MESSAGE_CODES`]); `message` is its English text.
    #[serde(default)]
    pub code: MessageCode,
    /// The values the message uses, flat (numbers as numbers).
    #[serde(default)]
    pub params: Params,
}

fn yes() -> bool {
    true
}

/// The flat parameters of a message code.
pub type Params = serde_json::Map<String, serde_json::Value>;

/// An operator's shelf on an open alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shelf {
    pub by: String,
    pub reason: String,
    pub at: EventTime,
    pub until: EventTime,
}

/// Why an alert is suppressed by design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// An active alert of a rule named in the rule's `suppressed_by`, on the same subject
    /// or on the device's segment.
    SuppressedByRule,
    /// The device's offline alert is active.
    DeviceOffline,
    /// The subject is a segment (or a device on a segment) of an active road operation
    /// that closes the road or is roadworks: the operation explains it
    /// (docs/operations.md).
    Operation,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SuppressedByRule => "suppressed_by_rule",
            Self::DeviceOffline => "device_offline",
            Self::Operation => "operation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::SuppressedByRule, Self::DeviceOffline, Self::Operation]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A designed suppression: why, and the suppressing alert (the store's id) where known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub reason: SuppressionReason,
    pub by_alert: Option<i64>,
    /// The road operation that explains the alert, when one does; written into the note
    /// of the raise of an alert opened suppressed (not a column: stored records read
    /// back `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_operation: Option<String>,
}

impl Suppression {
    /// The note of the raise of an alert opened under this suppression, where it names
    /// something (`operation op-…`, as the `suppress` event of an open alert says).
    pub fn raise_note(&self) -> Option<String> {
        self.by_operation.as_ref().map(|op| format!("{} {op}", self.reason.as_str()))
    }
}

/// A message template: the wall renders `code` with `params` in its own language; the
/// English `message` is for webhooks and logs. One code per template the engine writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageCode {
    ThresholdAbove,
    ThresholdBelow,
    DeviceOffline,
    Flatline,
    RateOfChange,
    LosAtOrWorse,
    AirQualityMean,
    SegmentGroup,
    RateLimitOverflow,
    AnomalyBelow,
    AnomalyAbove,
    /// Detector health (`telemetry::health`): a data-quality flag.
    HealthStuck,
    HealthZeroBusy,
    HealthMissing,
    HealthImplausible,
    /// Stored before message codes existed: show `message`.
    #[default]
    Legacy,
}

/// One entry of the message catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MessageSpec {
    pub code: MessageCode,
    /// Its parameters, in the order the English text uses them.
    pub params: &'static [&'static str],
    /// The English template, `{param}` standing for a parameter.
    pub english: &'static str,
}

/// The message catalogue: every code with its parameters and English template.
pub const MESSAGE_CODES: [MessageSpec; 16] = [
    MessageSpec {
        code: MessageCode::ThresholdAbove,
        params: &["subject", "metric", "unit", "limit", "for_s", "value"],
        english: "{subject}: {metric} above {limit} {unit} for {for_s} s: {value}",
    },
    MessageSpec {
        code: MessageCode::ThresholdBelow,
        params: &["subject", "metric", "unit", "limit", "for_s", "value"],
        english: "{subject}: {metric} below {limit} {unit} for {for_s} s: {value}",
    },
    MessageSpec {
        code: MessageCode::DeviceOffline,
        params: &["subject", "silence_s"],
        english: "{subject}: offline, last data {silence_s} s ago",
    },
    MessageSpec {
        code: MessageCode::Flatline,
        params: &["subject", "metric", "unit", "value", "epsilon", "readings", "for_s"],
        english: "{subject}: {metric} stuck at {value} {unit} (± {epsilon}) for {readings} readings / {for_s} s",
    },
    MessageSpec {
        code: MessageCode::RateOfChange,
        params: &["subject", "metric", "unit", "rate_per_min", "limit_per_min"],
        english: "{subject}: {metric} changing {rate_per_min} {unit}/min, limit {limit_per_min} {unit}/min",
    },
    MessageSpec {
        code: MessageCode::LosAtOrWorse,
        params: &["subject", "grade", "for_s", "speed_kmh"],
        english: "{subject}: LOS {grade} or worse for {for_s} s (speed {speed_kmh} km/h)",
    },
    MessageSpec {
        code: MessageCode::AirQualityMean,
        params: &["subject", "metric", "unit", "averaging_s", "mean", "limit"],
        english: "{subject}: {metric} mean over {averaging_s} s is {mean} {unit}, above {limit} {unit}",
    },
    MessageSpec {
        code: MessageCode::SegmentGroup,
        params: &["rule", "segment", "over_devices", "window_s"],
        english: "{rule}: more than {over_devices} devices of segment {segment} raised within {window_s} s; grouped",
    },
    MessageSpec {
        code: MessageCode::RateLimitOverflow,
        params: &["rule", "per_minute"],
        english: "{rule}: more than {per_minute} raises a minute; further raises are folded here",
    },
    MessageSpec {
        code: MessageCode::AnomalyBelow,
        params: &["subject", "metric", "unit", "value", "centre", "spread", "k", "for_s"],
        english: "{subject}: {metric} {value} {unit}, below its usual {centre} {unit} by more than {k} × {spread} {unit} for {for_s} s",
    },
    MessageSpec {
        code: MessageCode::AnomalyAbove,
        params: &["subject", "metric", "unit", "value", "centre", "spread", "k", "for_s"],
        english: "{subject}: {metric} {value} {unit}, above its usual {centre} {unit} by more than {k} × {spread} {unit} for {for_s} s",
    },
    MessageSpec {
        code: MessageCode::HealthStuck,
        params: &["subject", "metric", "unit", "value", "readings", "for_s"],
        english: "{subject}: {metric} stuck at {value} {unit} for {readings} readings / {for_s} s (data-quality flag)",
    },
    MessageSpec {
        code: MessageCode::HealthZeroBusy,
        params: &["subject", "for_s", "usual", "window_s"],
        english: "{subject}: no vehicle counted for {for_s} s where {usual} are usual per {window_s} s (data-quality flag)",
    },
    MessageSpec {
        code: MessageCode::HealthMissing,
        params: &["subject", "missing_pct", "window_s"],
        english: "{subject}: {missing_pct} % of the expected readings missing over {window_s} s (data-quality flag)",
    },
    MessageSpec {
        code: MessageCode::HealthImplausible,
        params: &["subject", "reason", "flow_vph", "speed_kmh", "occupancy_pct"],
        english: "{subject}: implausible readings ({reason}): {flow_vph} veh/h at {speed_kmh} km/h, occupancy {occupancy_pct} % (data-quality flag)",
    },
    MessageSpec {
        code: MessageCode::Legacy,
        params: &[],
        english: "(stored before message codes: show the alert's message)",
    },
];

impl MessageCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ThresholdAbove => "threshold_above",
            Self::ThresholdBelow => "threshold_below",
            Self::DeviceOffline => "device_offline",
            Self::Flatline => "flatline",
            Self::RateOfChange => "rate_of_change",
            Self::LosAtOrWorse => "los_at_or_worse",
            Self::AirQualityMean => "air_quality_mean",
            Self::SegmentGroup => "segment_group",
            Self::RateLimitOverflow => "rate_limit_overflow",
            Self::AnomalyBelow => "anomaly_below",
            Self::AnomalyAbove => "anomaly_above",
            Self::HealthStuck => "health_stuck",
            Self::HealthZeroBusy => "health_zero_busy",
            Self::HealthMissing => "health_missing",
            Self::HealthImplausible => "health_implausible",
            Self::Legacy => "legacy",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        MESSAGE_CODES.iter().map(|m| m.code).find(|c| c.as_str() == s)
    }

    pub fn spec(self) -> &'static MessageSpec {
        MESSAGE_CODES
            .iter()
            .find(|m| m.code == self)
            .unwrap_or(&MESSAGE_CODES[MESSAGE_CODES.len() - 1])
    }
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
mod tests;
