//! The alert lifecycle in the engine: the book of open alerts, where each raised
//! condition went ([`Placement`]), and every transition it makes (open, return, resume,
//! clear, forget a rule's alerts), each returned as an [`AlertOutput`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use telemetry::{EventTime, SegmentId};

use super::super::condition::Step;
use super::super::lifecycle::{
    Alert, AlertId, AlertKind, AlertMove, AlertState, AlertTransition, LifecycleError, MessageCode,
    Params, TransitionError,
};
use super::super::rule::{Rule, StormSettings};
use super::super::storm::TokenBucket;
use super::super::{AlertKey, RuleId, Subject};
use super::{AlertCounters, AlertOutput, Placement, SegmentGroup};

/// Cleared alert ids remembered so a late operator action gets `AlreadyCleared`.
const REMEMBERED_CLEARED: usize = 4_096;
/// Open alerts, where each raised condition went, and storm protection.
#[derive(Debug, Default)]
pub(super) struct AlertBook {
    pub(super) storm: StormSettings,
    pub(super) next_id: u64,
    pub(super) open: BTreeMap<AlertId, Alert>,
    pub(super) by_key: HashMap<AlertKey, AlertId>,
    pub(super) recently_cleared: VecDeque<AlertId>,
    pub(super) placements: HashMap<(RuleId, Subject), Placement>,
    pub(super) groups: HashMap<(RuleId, SegmentId), SegmentGroup>,
    pub(super) overflow: HashMap<RuleId, (AlertId, BTreeSet<Subject>)>,
    pub(super) buckets: HashMap<RuleId, TokenBucket>,
    pub(super) counters: AlertCounters,
    /// Open alerts, placements, groups, overflow or buckets changed since the last checkpoint.
    pub(super) dirty: bool,
    /// The baseline of the anomaly edge being applied (for its message), set by the
    /// evaluator around [`AlertBook::apply`].
    pub(super) expected: Option<telemetry::baseline::Expected>,
    /// The figures of the health edge being applied (for its message), likewise.
    pub(super) health: Option<crate::alert::health::HealthNote>,
}

impl AlertBook {
    pub(super) fn apply(
        &mut self,
        rule: &Rule,
        subject: Subject,
        segment: Option<&SegmentId>,
        step: Step,
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) {
        if matches!(step, Step::Raise { .. } | Step::Clear { .. }) {
            self.dirty = true;
        }
        match step {
            Step::Raise { since, value } => {
                self.raise(rule, subject, segment, since, value, now, out)
            }
            Step::Clear { .. } => {
                self.clear_condition(&rule.id, subject, now, "condition ended", out)
            }
            Step::Stale | Step::Quiet => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_alert(
        &mut self,
        rule: &Rule,
        subject: Subject,
        kind: AlertKind,
        since: EventTime,
        value: f64,
        (code, params, message): (MessageCode, Params, String),
        now: EventTime,
    ) -> Alert {
        self.next_id += 1;
        Alert {
            id: AlertId(self.next_id),
            key: AlertKey { rule: rule.id.clone(), subject },
            kind,
            severity: rule.severity,
            state: AlertState::Raised,
            value,
            message,
            since,
            raised_at: now,
            acknowledged: None,
            cleared_at: None,
            members: 0,
            listed_members: Vec::new(),
            folded_raises: 0,
            active: true,
            returned_at: None,
            shelved: None,
            suppressed: None,
            code,
            params,
        }
    }

    /// The condition of a returned alert holds again before an acknowledgement: the same
    /// alert is raised again (`prepare` first adjusts it). False if `id` is not returned.
    pub(super) fn resume(
        &mut self,
        id: AlertId,
        prepare: impl FnOnce(&mut Alert),
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) -> bool {
        let Some(alert) = self.open.get_mut(&id) else { return false };
        let Ok(to) = alert.state.apply(AlertMove::Resume) else { return false };
        let from = alert.state;
        prepare(alert);
        alert.state = to;
        alert.active = true;
        alert.returned_at = None;
        self.dirty = true;
        self.counters.resumed += 1;
        let transition = AlertTransition {
            alert: id,
            key: alert.key.clone(),
            from: Some(from),
            to,
            action: Some(AlertMove::Resume),
            by: None,
            note: Some("condition holds again".to_owned()),
            at: now,
        };
        out.push(AlertOutput::Transition { alert: alert.clone(), transition });
        true
    }

    /// The condition of an open alert ended: unacknowledged it returns (stays open until
    /// acknowledged), acknowledged it clears.
    pub(super) fn end(
        &mut self,
        id: AlertId,
        note: String,
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) {
        let Some(alert) = self.open.get_mut(&id) else { return };
        match alert.state.apply(AlertMove::End) {
            Ok(AlertState::Returned) => {
                let from = alert.state;
                alert.state = AlertState::Returned;
                alert.active = false;
                alert.returned_at = Some(now);
                self.dirty = true;
                self.counters.returned += 1;
                let transition = AlertTransition {
                    alert: id,
                    key: alert.key.clone(),
                    from: Some(from),
                    to: AlertState::Returned,
                    action: Some(AlertMove::End),
                    by: None,
                    note: Some(note),
                    at: now,
                };
                out.push(AlertOutput::Transition { alert: alert.clone(), transition });
            }
            Ok(_) => self.close(id, None, Some(note), AlertMove::End, now, out),
            Err(_) => {}
        }
    }

    pub(super) fn open_alert(&mut self, alert: Alert, out: &mut Vec<AlertOutput>) -> AlertId {
        let id = alert.id;
        self.counters.raised += 1;
        let transition = AlertTransition {
            alert: id,
            key: alert.key.clone(),
            from: None,
            to: AlertState::Raised,
            action: None,
            by: None,
            note: None,
            at: alert.raised_at,
        };
        self.by_key.insert(alert.key.clone(), id);
        out.push(AlertOutput::Transition { alert: alert.clone(), transition });
        self.open.insert(id, alert);
        id
    }

    /// The condition of (rule, subject) ended: clear or shrink wherever it went.
    pub(super) fn clear_condition(
        &mut self,
        rule: &RuleId,
        subject: Subject,
        now: EventTime,
        note: &str,
        out: &mut Vec<AlertOutput>,
    ) {
        let Some(placement) = self.placements.remove(&(rule.clone(), subject.clone())) else {
            return;
        };
        self.dirty = true;
        match placement {
            Placement::Alert(id) => self.end(id, note.to_owned(), now, out),
            Placement::Group { alert, segment } => {
                let gkey = (rule.clone(), segment);
                let Some(g) = self.groups.get_mut(&gkey) else { return };
                if g.alert != Some(alert) {
                    return;
                }
                if let Subject::Device(dev) = &subject {
                    g.members.remove(dev);
                }
                if g.members.is_empty() {
                    g.alert = None;
                    self.end(alert, format!("{note} for every device of the group"), now, out);
                } else if let Some(a) = self.open.get_mut(&alert) {
                    a.members = u32::try_from(g.members.len()).unwrap_or(u32::MAX);
                    a.listed_members.retain(|s| s != &subject);
                    out.push(AlertOutput::Updated { alert: a.clone() });
                }
            }
            Placement::Overflow(id) => {
                let Some((current, members)) = self.overflow.get_mut(rule) else { return };
                if *current != id {
                    return;
                }
                members.remove(&subject);
                if members.is_empty() {
                    self.overflow.remove(rule);
                    self.end(id, format!("{note} for every folded raise"), now, out);
                } else if let Some(a) = self.open.get_mut(&id) {
                    a.members = u32::try_from(members.len()).unwrap_or(u32::MAX);
                    a.listed_members.retain(|s| s != &subject);
                    out.push(AlertOutput::Updated { alert: a.clone() });
                }
            }
        }
    }

    /// Clear an open alert by `mv` (no-op if it is not open).
    pub(super) fn close(
        &mut self,
        id: AlertId,
        by: Option<String>,
        note: Option<String>,
        mv: AlertMove,
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) {
        let Some(mut alert) = self.open.remove(&id) else { return };
        self.dirty = true;
        self.by_key.remove(&alert.key);
        let from = alert.state;
        alert.state = AlertState::Cleared;
        alert.cleared_at = Some(now);
        if by.is_none() {
            alert.active = false;
        }
        self.counters.cleared += 1;
        if self.recently_cleared.len() == REMEMBERED_CLEARED {
            self.recently_cleared.pop_front();
        }
        self.recently_cleared.push_back(id);
        let transition = AlertTransition {
            alert: id,
            key: alert.key.clone(),
            from: Some(from),
            to: AlertState::Cleared,
            action: Some(mv),
            by,
            note,
            at: now,
        };
        out.push(AlertOutput::Transition { alert, transition });
    }

    pub(super) fn not_open(&self, id: AlertId) -> LifecycleError {
        if self.recently_cleared.contains(&id) {
            LifecycleError::Refused { id, source: TransitionError::AlreadyCleared }
        } else {
            LifecycleError::Unknown(id)
        }
    }

    /// Drop everything of rules that no longer exist (or changed), clearing their alerts.
    pub(super) fn forget_rules(
        &mut self,
        gone: &BTreeSet<RuleId>,
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) {
        if gone.is_empty() {
            return;
        }
        self.dirty = true;
        let ids: Vec<AlertId> =
            self.open.values().filter(|a| gone.contains(&a.key.rule)).map(|a| a.id).collect();
        for id in ids {
            self.close(
                id,
                None,
                Some("rule changed or removed".to_owned()),
                AlertMove::Clear,
                now,
                out,
            );
        }
        self.placements.retain(|(r, _), _| !gone.contains(r));
        self.groups.retain(|(r, _), _| !gone.contains(r));
        self.overflow.retain(|r, _| !gone.contains(r));
        self.buckets.retain(|r, _| !gone.contains(r));
    }
}
