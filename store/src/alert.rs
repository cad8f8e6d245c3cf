//! Alerts as the store keeps them: one row per alert in `alerts`, one row per lifecycle
//! move in `alert_events`. The stream's exported state, saved next to the alerts it
//! raised, is the `stream_state` module's ([`StateSave`]).
//!
//! The alert types (state, severity, kind, subject, the stored alert itself) are the
//! contract's, `telemetry::alert`, shared with the stream and the API; the stream's engine
//! has its richer `Alert`, which the alert sink maps onto [`NewAlert`]. The invariants the
//! backends keep:
//! - **One open alert per key**: at most one alert per (rule, subject) is not `cleared`,
//!   enforced by the partial unique index `alerts_one_open_per_key`, so two tasks or two
//!   replicas raising the same condition at once open one alert; the other gets
//!   [`RaiseOutcome::AlreadyOpen`].
//! - **Every move is an event**: the raise, the acknowledgement and the clear each write
//!   their `alert_events` row in the same transaction as the change to `alerts`.
//! - **Only legal moves**: those of the one transition table,
//!   [`AlertState::apply`]. A move it refuses changes nothing and fails with
//!   [`StoreError::AlertTransition`].

pub use telemetry::alert::{
    Acknowledgement, AlertKind, AlertMove, AlertRecord, AlertState, Clearance, MessageCode, Params,
    Severity, Shelf, Subject as AlertSubject, SubjectKind, Suppression, SuppressionReason,
};
use telemetry::EventTime;

use crate::{parse_device, parse_segment, Store, StoreError};

pub use crate::stream_state::StateSave;

fn corrupt(what: &'static str, value: String) -> StoreError {
    StoreError::Corrupt { what, value }
}

pub(crate) fn parse_state(s: String) -> Result<AlertState, StoreError> {
    AlertState::parse(&s).ok_or_else(|| corrupt("alert state", s))
}

pub(crate) fn parse_action(s: Option<String>) -> Result<Option<AlertMove>, StoreError> {
    s.map(|s| AlertMove::parse(&s).ok_or_else(|| corrupt("alert event action", s))).transpose()
}

fn parse_severity(s: String) -> Result<Severity, StoreError> {
    Severity::parse(&s).ok_or_else(|| corrupt("alert severity", s))
}

fn parse_kind(s: String) -> Result<AlertKind, StoreError> {
    AlertKind::parse(&s).ok_or_else(|| corrupt("alert kind", s))
}

/// The subject stored as (`subject_kind`, `subject`), `subject` being the device or
/// segment id, and `''` for an alert about the rule as a whole.
fn subject_from_columns(kind: String, subject: String) -> Result<AlertSubject, StoreError> {
    match kind.as_str() {
        "device" => parse_device(subject).map(AlertSubject::Device),
        "segment" => parse_segment(subject).map(AlertSubject::Segment),
        "rule" if subject.is_empty() => Ok(AlertSubject::Rule),
        _ => Err(corrupt("alert subject", format!("{kind} {subject:?}"))),
    }
}

/// An alert to open.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    /// The rule's id.
    pub rule: String,
    pub subject: AlertSubject,
    pub kind: AlertKind,
    pub severity: Severity,
    pub message: String,
    /// The value that raised it, where there is one.
    pub value: Option<f64>,
    /// When the condition began (the subject's event time).
    pub since: EventTime,
    /// When the stream raised it.
    pub raised_at: EventTime,
    /// Subjects folded into it (1 for a single alert).
    pub members: u32,
    pub code: MessageCode,
    pub params: Params,
    /// Opened suppressed by design: recorded, not signalled (no webhook).
    pub suppressed: Option<Suppression>,
}

/// A change to an open alert: a move of the lifecycle's table with what it carries.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertChange {
    Acknowledge,
    /// By an operator, or (`by` = `None`) by the stream.
    Clear,
    /// The condition ended: raised → returned, acknowledged → cleared.
    End,
    /// The condition holds again: returned → raised.
    Resume,
    Shelve {
        reason: String,
        until: EventTime,
    },
    /// Off the shelf: by an operator, or (`by` = `None`) because the shelf expired.
    Unshelve,
    Suppress(Suppression),
    Unsuppress,
}

impl AlertChange {
    pub fn mv(&self) -> AlertMove {
        match self {
            Self::Acknowledge => AlertMove::Acknowledge,
            Self::Clear => AlertMove::Clear,
            Self::End => AlertMove::End,
            Self::Resume => AlertMove::Resume,
            Self::Shelve { .. } => AlertMove::Shelve,
            Self::Unshelve => AlertMove::Unshelve,
            Self::Suppress(_) => AlertMove::Suppress,
            Self::Unsuppress => AlertMove::Unsuppress,
        }
    }

    /// The columns the change sets on its way to `to`, with placeholders each backend
    /// replaces: `{at}` the time, `{by}` the operator, `{note}`, `{reason}`, `{until}`,
    /// `{by_alert}`, and `{false}`/`{true}` its booleans.
    pub(crate) fn set_clause(&self, to: AlertState) -> &'static str {
        match (self, to) {
            (Self::Acknowledge, AlertState::Cleared) => {
                "acknowledged_at = {at}, acknowledged_by = {by}, ack_note = {note}, cleared_at = {at}, cleared_by = {by}, clear_note = {note}"
            }
            (Self::Acknowledge, _) => {
                "acknowledged_at = {at}, acknowledged_by = {by}, ack_note = {note}"
            }
            (Self::Clear, _) => {
                "cleared_at = {at}, cleared_by = {by}, clear_note = {note}, active = CASE WHEN {by} IS NULL THEN {false} ELSE active END"
            }
            (Self::End, AlertState::Cleared) => {
                "returned_at = {at}, active = {false}, cleared_at = {at}, cleared_by = NULL, clear_note = {note}"
            }
            (Self::End, _) => "returned_at = {at}, active = {false}",
            (Self::Resume, _) => "returned_at = NULL, active = {true}",
            (Self::Shelve { .. }, _) => {
                "shelved_by = {by}, shelved_reason = {reason}, shelved_at = {at}, shelved_until = {until}"
            }
            (Self::Unshelve, _) => {
                "shelved_by = NULL, shelved_reason = NULL, shelved_at = NULL, shelved_until = NULL"
            }
            (Self::Suppress(_), _) => "suppressed_reason = {reason}, suppressed_by_alert = {by_alert}",
            (Self::Unsuppress, _) => "suppressed_reason = NULL, suppressed_by_alert = NULL",
        }
    }

    /// The text bound as `{reason}`.
    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            Self::Shelve { reason, .. } => Some(reason),
            Self::Suppress(s) => Some(s.reason.as_str()),
            _ => None,
        }
    }

    pub(crate) fn until(&self) -> Option<EventTime> {
        match self {
            Self::Shelve { until, .. } => Some(*until),
            _ => None,
        }
    }

    pub(crate) fn by_alert(&self) -> Option<i64> {
        match self {
            Self::Suppress(s) => s.by_alert,
            _ => None,
        }
    }
}

/// The state `change` leads to from `from` by the lifecycle's table, or its refusal (also
/// for taking an alert off a shelf it is not on).
pub(crate) fn check_change(
    id: i64,
    from: AlertState,
    shelved: bool,
    change: &AlertChange,
) -> Result<AlertState, StoreError> {
    let mv = change.mv();
    let to = from.apply(mv).map_err(|_| refuse(id, from, mv.target()))?;
    if matches!(change, AlertChange::Unshelve) && !shelved {
        return Err(StoreError::AlertNotShelved(id));
    }
    Ok(to)
}

/// One lifecycle move of an alert (`alert_events`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertEventRecord {
    pub id: i64,
    pub alert: i64,
    /// `None` for the raise.
    pub from: Option<AlertState>,
    pub to: AlertState,
    /// The move (`None` for the raise); shelving and suppression leave the state as it is.
    pub action: Option<AlertMove>,
    /// The operator; `None` for moves the stream made.
    pub by: Option<String>,
    pub note: Option<String>,
    pub at: EventTime,
}

/// What [`crate::Store::raise_alert`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum RaiseOutcome {
    /// A new alert was opened, with its `raised` event.
    Raised(Box<AlertRecord>),
    /// An alert for the same (rule, subject) is open already: nothing was written.
    AlreadyOpen(i64),
}

/// Which alerts to list. Every set field narrows the list; results are newest first
/// (by `raised_at`, then id) and paged by cursor: pass the id of the last alert of a page
/// as `before_id` to get the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertFilter {
    /// Any of these states; empty for all.
    pub states: Vec<AlertState>,
    /// Any of these severities; empty for all.
    pub severities: Vec<Severity>,
    pub subject_kind: Option<SubjectKind>,
    pub subject: Option<AlertSubject>,
    pub rule: Option<String>,
    /// Raised at or after.
    pub raised_from: Option<EventTime>,
    /// Raised before.
    pub raised_to: Option<EventTime>,
    /// Only shelved (`Some(true)`) or unshelved (`Some(false)`) alerts.
    pub shelved: Option<bool>,
    /// Only suppressed (`Some(true)`) or unsuppressed (`Some(false)`) alerts.
    pub suppressed: Option<bool>,
    /// Only alerts that come after this one in the listing order. A cursor naming no
    /// alert yields an empty page.
    pub before_id: Option<i64>,
    pub limit: usize,
}

impl AlertFilter {
    pub const DEFAULT_LIMIT: usize = 100;

    /// Alerts not cleared yet (raised, acknowledged or returned).
    pub fn open() -> Self {
        Self { states: AlertState::OPEN.to_vec(), ..Self::default() }
    }
}

impl Default for AlertFilter {
    fn default() -> Self {
        Self {
            states: Vec::new(),
            severities: Vec::new(),
            subject_kind: None,
            subject: None,
            rule: None,
            raised_from: None,
            raised_to: None,
            shelved: None,
            suppressed: None,
            before_id: None,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

/// The columns of an `alerts` row, read by either backend, with times in milliseconds.
pub(crate) struct AlertColumns {
    pub id: i64,
    pub rule: String,
    pub subject_kind: String,
    pub subject: String,
    pub kind: String,
    pub severity: String,
    pub state: String,
    pub message: String,
    pub value: Option<f64>,
    pub since: EventTime,
    pub raised_at: EventTime,
    pub acknowledged_at: Option<EventTime>,
    pub acknowledged_by: Option<String>,
    pub ack_note: Option<String>,
    pub cleared_at: Option<EventTime>,
    pub cleared_by: Option<String>,
    pub clear_note: Option<String>,
    pub members: i64,
    pub active: bool,
    pub returned_at: Option<EventTime>,
    pub shelved_by: Option<String>,
    pub shelved_reason: Option<String>,
    pub shelved_at: Option<EventTime>,
    pub shelved_until: Option<EventTime>,
    pub suppressed_reason: Option<String>,
    pub suppressed_by_alert: Option<i64>,
    pub code: String,
    pub params: serde_json::Value,
}

impl AlertColumns {
    pub fn into_record(self) -> Result<AlertRecord, StoreError> {
        let acknowledged = match (self.acknowledged_at, self.acknowledged_by) {
            (Some(at), Some(by)) => Some(Acknowledgement { by, note: self.ack_note, at }),
            _ => None,
        };
        Ok(AlertRecord {
            id: self.id,
            rule: self.rule,
            subject: subject_from_columns(self.subject_kind, self.subject)?,
            kind: parse_kind(self.kind)?,
            severity: parse_severity(self.severity)?,
            state: parse_state(self.state)?,
            message: self.message,
            value: self.value,
            since: self.since,
            raised_at: self.raised_at,
            acknowledged,
            cleared: self.cleared_at.map(|at| Clearance {
                by: self.cleared_by,
                note: self.clear_note,
                at,
            }),
            members: u32::try_from(self.members).map_err(|_| StoreError::Corrupt {
                what: "alert members",
                value: self.members.to_string(),
            })?,
            active: self.active,
            returned_at: self.returned_at,
            shelved: match (
                self.shelved_by,
                self.shelved_reason,
                self.shelved_at,
                self.shelved_until,
            ) {
                (Some(by), Some(reason), Some(at), Some(until)) => {
                    Some(Shelf { by, reason, at, until })
                }
                _ => None,
            },
            suppressed: self
                .suppressed_reason
                .map(|r| {
                    SuppressionReason::parse(&r)
                        .map(|reason| Suppression {
                            reason,
                            by_alert: self.suppressed_by_alert,
                            by_operation: None,
                        })
                        .ok_or_else(|| corrupt("alert suppression", r))
                })
                .transpose()?,
            code: MessageCode::parse(&self.code).ok_or_else(|| corrupt("alert code", self.code))?,
            params: match self.params {
                serde_json::Value::Object(m) => m,
                other => return Err(corrupt("alert params", other.to_string())),
            },
        })
    }
}

/// The refusal of a move from the state an alert is in.
pub(crate) fn refuse(id: i64, from: AlertState, to: AlertState) -> StoreError {
    StoreError::AlertTransition { id, from, to }
}

/// Whether a change of `record` into its state is signalled (an outbox event, hence
/// webhooks): overlays are not, nor a raise or re-raise of a suppressed or shelved alert.
pub(crate) fn signals(record: &AlertRecord, mv: Option<AlertMove>) -> bool {
    match mv {
        Some(m) if m.is_overlay() => false,
        None | Some(AlertMove::Resume) => record.suppressed.is_none() && record.shelved.is_none(),
        Some(_) => true,
    }
}

/// The outbox event of `record`'s move into its current state, at `at`; written by the
/// backends in the transaction of the move.
pub(crate) fn outbox_event(record: &AlertRecord, at: EventTime) -> crate::outbox::OutboxEvent {
    use crate::outbox::event_type;
    crate::outbox::OutboxEvent {
        event_type: match record.state {
            AlertState::Raised => event_type::ALERT_RAISED,
            AlertState::Acknowledged => event_type::ALERT_ACKNOWLEDGED,
            AlertState::Returned => event_type::ALERT_RETURNED,
            AlertState::Cleared => event_type::ALERT_CLEARED,
        }
        .to_owned(),
        subject: format!("alert/{}", record.id),
        time: at,
        data: serde_json::to_value(record).unwrap_or_default(),
    }
}

/// Alerts: see the module doc for the invariants. The SQL is each backend's
/// (`pg/alert.rs`, `sqlite/alert.rs`).
impl Store {
    /// Open an alert with its `raised` event, unless one for the same (rule, subject) is
    /// open already: then nothing is written and the open alert's id comes back.
    pub async fn raise_alert(&self, alert: &NewAlert) -> Result<RaiseOutcome, StoreError> {
        dispatch!(self, s => s.raise_alert(alert).await)
    }

    /// An operator acknowledges a raised alert.
    pub async fn acknowledge_alert(
        &self,
        id: i64,
        by: &str,
        note: Option<&str>,
        at: EventTime,
    ) -> Result<AlertRecord, StoreError> {
        if by.trim().is_empty() {
            return Err(StoreError::InvalidQuery {
                param: "by",
                message: "an acknowledgement needs the operator's name".into(),
            });
        }
        dispatch!(self, s => s.move_alert(id, &AlertChange::Acknowledge, Some(by), note, at).await)
    }

    /// Clear a raised or acknowledged alert: by an operator, or (`by` = `None`) by the
    /// stream because the condition ended.
    pub async fn clear_alert(
        &self,
        id: i64,
        by: Option<&str>,
        note: Option<&str>,
        at: EventTime,
    ) -> Result<AlertRecord, StoreError> {
        if by.is_some_and(|b| b.trim().is_empty()) {
            return Err(StoreError::InvalidQuery {
                param: "by",
                message: "a manual clear needs the operator's name".into(),
            });
        }
        dispatch!(self, s => s.move_alert(id, &AlertChange::Clear, by, note, at).await)
    }

    /// Apply `change` to an alert with its `alert_events` row, if the lifecycle's table
    /// allows it (see [`AlertChange`]): `by` is the operator, `None` for the stream.
    pub async fn change_alert(
        &self,
        id: i64,
        change: &AlertChange,
        by: Option<&str>,
        note: Option<&str>,
        at: EventTime,
    ) -> Result<AlertRecord, StoreError> {
        if by.is_some_and(|b| b.trim().is_empty()) {
            return Err(StoreError::InvalidQuery {
                param: "by",
                message: "an operator's move needs the operator's name".into(),
            });
        }
        if matches!(change, AlertChange::Shelve { .. }) && by.is_none() {
            return Err(StoreError::InvalidQuery {
                param: "by",
                message: "shelving needs the operator's name".into(),
            });
        }
        dispatch!(self, s => s.move_alert(id, change, by, note, at).await)
    }

    /// Open alerts whose shelf expired at `now` (at most 1,000).
    pub async fn expired_shelves(&self, now: EventTime) -> Result<Vec<i64>, StoreError> {
        dispatch!(self, s => s.expired_shelves(now).await)
    }

    /// Clear automatically the open alert of (rule, subject), if there is one: the stream
    /// knows its conditions by key, not by alert id (after a restart, say).
    pub async fn clear_open_alert(
        &self,
        rule: &str,
        subject: &AlertSubject,
        at: EventTime,
    ) -> Result<Option<AlertRecord>, StoreError> {
        // An operator may clear the alert between the look-up and the move: look again.
        for _ in 0..3 {
            let Some(id) = dispatch!(self, s => s.open_alert_id(rule, subject).await)? else {
                return Ok(None);
            };
            match self.clear_alert(id, None, None, at).await {
                Err(StoreError::AlertTransition { .. }) => continue,
                other => return other.map(Some),
            }
        }
        Ok(None)
    }

    /// Set how many subjects a grouped alert holds.
    pub async fn update_alert_members(&self, id: i64, members: u32) -> Result<(), StoreError> {
        dispatch!(self, s => s.update_alert_members(id, members).await)
    }

    /// Alerts matching the filter, newest first (see [`AlertFilter`]).
    pub async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        dispatch!(self, s => s.alerts(filter).await)
    }

    pub async fn alert(&self, id: i64) -> Result<Option<AlertRecord>, StoreError> {
        dispatch!(self, s => s.alert(id).await)
    }

    /// The lifecycle of one alert, oldest move first.
    pub async fn alert_events(&self, id: i64) -> Result<Vec<AlertEventRecord>, StoreError> {
        dispatch!(self, s => s.alert_events(id).await)
    }
}
