//! Alerts as the store keeps them: one row per alert in `alerts`, one row per lifecycle
//! move in `alert_events`, and the stream's exported state: whole documents in
//! `stream_state`, or in parts in `stream_state_parts` (one row per part, so a checkpoint
//! rewrites only the parts that changed; [`StateSave`] writes a checkpoint's parts in one
//! transaction, so a reader sees all of them or none).
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
    Acknowledgement, AlertKind, AlertMove, AlertRecord, AlertState, Clearance, Severity,
    Subject as AlertSubject, SubjectKind,
};
use telemetry::EventTime;

use crate::{parse_device, parse_segment, StoreError};

fn corrupt(what: &'static str, value: String) -> StoreError {
    StoreError::Corrupt { what, value }
}

pub(crate) fn parse_state(s: String) -> Result<AlertState, StoreError> {
    AlertState::parse(&s).ok_or_else(|| corrupt("alert state", s))
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
}

/// One lifecycle move of an alert (`alert_events`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertEventRecord {
    pub id: i64,
    pub alert: i64,
    /// `None` for the raise.
    pub from: Option<AlertState>,
    pub to: AlertState,
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
    /// Only alerts that come after this one in the listing order. A cursor naming no
    /// alert yields an empty page.
    pub before_id: Option<i64>,
    pub limit: usize,
}

impl AlertFilter {
    pub const DEFAULT_LIMIT: usize = 100;

    /// Alerts not cleared yet (raised or acknowledged).
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
        })
    }
}

/// The refusal of a move from the state an alert is in.
pub(crate) fn refuse(id: i64, from: AlertState, to: AlertState) -> StoreError {
    StoreError::AlertTransition { id, from, to }
}

/// The outbox event of `record`'s move into its current state, at `at`; written by the
/// backends in the transaction of the move.
pub(crate) fn outbox_event(record: &AlertRecord, at: EventTime) -> crate::outbox::OutboxEvent {
    use crate::outbox::event_type;
    crate::outbox::OutboxEvent {
        event_type: match record.state {
            AlertState::Raised => event_type::ALERT_RAISED,
            AlertState::Acknowledged => event_type::ALERT_ACKNOWLEDGED,
            AlertState::Cleared => event_type::ALERT_CLEARED,
        }
        .to_owned(),
        subject: format!("alert/{}", record.id),
        time: at,
        data: serde_json::to_value(record).unwrap_or_default(),
    }
}

/// A checkpoint of the stream's state being saved in parts under one key: the parts
/// written through it become visible together at [`StateSave::commit`]; dropped before,
/// none do. Opened by [`crate::Store::begin_state_save`].
pub enum StateSave {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl StateSave {
    /// Insert or replace `parts` (name, JSON text) under `key`.
    pub async fn put(&mut self, key: &str, parts: &[(String, String)]) -> Result<(), StoreError> {
        match self {
            Self::Postgres(tx) => crate::postgres::put_state_parts(tx, key, parts).await,
            Self::Sqlite(tx) => crate::sqlite::put_state_parts(tx, key, parts).await,
        }
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(tx) => tx.commit().await?,
            Self::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }
}
