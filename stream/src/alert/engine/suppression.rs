//! Designed suppression: an open alert is suppressed while an active alert of a rule in
//! its rule's `suppressed_by` (on its subject or its device's segment), or its device's
//! offline alert, is active, or while a road operation explains it (an active closure or
//! roadworks on its segment or its device's segment; the registry carries them);
//! recomputed after every edge and every tick and when the operations change.

use std::collections::BTreeMap;

use telemetry::{EventTime, SegmentId};

use super::super::lifecycle::{
    Alert, AlertId, AlertMove, AlertState, AlertTransition, Suppressed, SuppressionReason,
};
use super::super::rule::RuleKind;
use super::super::{AlertKey, Subject};
use super::{AlertEngine, AlertOutput};

impl AlertEngine {
    /// What suppresses `a` by design now, if anything: an active alert of a rule in its
    /// rule's `suppressed_by` on its subject (or its device's segment), or its device's
    /// active offline alert.
    pub(super) fn suppressor_of(&self, a: &Alert) -> Option<Suppressed> {
        let rule = &self.rules[usize::from(*self.rule_index.get(&a.key.rule)?)];
        // A road operation explains the alert: its segment, or its device's segment.
        let on = match &a.key.subject {
            Subject::Segment(s) => Some(s.clone()),
            Subject::Device(d) => self.devices.get(d).and_then(|s| s.segment.clone()),
            _ => None,
        };
        if let Some(op) = on.and_then(|s| self.operations.get(&s)) {
            return Some(Suppressed {
                reason: SuppressionReason::Operation,
                by_alert: None,
                by_key: None,
                by_operation: Some(op.clone()),
            });
        }
        let active = |key: AlertKey| {
            self.book
                .by_key
                .get(&key)
                .and_then(|id| self.book.open.get(id))
                .filter(|x| x.active && x.id != a.id)
                .map(|x| (x.id, x.key.clone()))
        };
        let segment = match &a.key.subject {
            Subject::Device(d) => self.devices.get(d).and_then(|s| s.segment.clone()),
            _ => None,
        };
        for other in &rule.suppressed_by {
            let subjects =
                std::iter::once(a.key.subject.clone()).chain(segment.clone().map(Subject::Segment));
            for subject in subjects {
                if let Some((by_alert, by_key)) = active(AlertKey { rule: other.clone(), subject })
                {
                    let reason = SuppressionReason::SuppressedByRule;
                    let (by_alert, by_key) = (Some(by_alert), Some(by_key));
                    return Some(Suppressed { reason, by_alert, by_key, by_operation: None });
                }
            }
        }
        if matches!(a.key.subject, Subject::Device(_)) && !matches!(rule.kind, RuleKind::Offline(_))
        {
            for &o in &self.offline_rules {
                let key = AlertKey {
                    rule: self.rules[usize::from(o)].id.clone(),
                    subject: a.key.subject.clone(),
                };
                if let Some((by_alert, by_key)) = active(key) {
                    let reason = SuppressionReason::DeviceOffline;
                    let (by_alert, by_key) = (Some(by_alert), Some(by_key));
                    return Some(Suppressed { reason, by_alert, by_key, by_operation: None });
                }
            }
        }
        None
    }

    /// Replace the segments of the road operations that explain alerts (each with the
    /// operation's id) and bring every open alert's suppression in line with them.
    pub fn set_operations(
        &mut self,
        operations: BTreeMap<SegmentId, String>,
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) {
        if operations == self.operations {
            return;
        }
        self.operations = operations;
        let now = self.advance(now);
        let start = out.len();
        self.resuppress(start, now, out);
    }

    /// Bring every open alert's designed suppression in line with the alerts active now,
    /// after the outputs from `start` on: a raise among them is recorded suppressed as it
    /// opens; any other alert whose suppression changed gets a suppress/unsuppress move.
    pub(super) fn suppress_pass(
        &mut self,
        start: usize,
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) {
        if out.len() > start {
            self.resuppress(start, now, out);
        }
    }

    /// [`suppress_pass`](Self::suppress_pass) whether or not anything was output.
    pub(super) fn resuppress(&mut self, start: usize, now: EventTime, out: &mut Vec<AlertOutput>) {
        let changes: Vec<(AlertId, Option<Suppressed>)> = self
            .book
            .open
            .values()
            .filter_map(|a| {
                let want = self.suppressor_of(a);
                (want != a.suppressed).then_some((a.id, want))
            })
            .collect();
        for (id, want) in changes {
            let Some(alert) = self.book.open.get_mut(&id) else { continue };
            alert.suppressed = want.clone();
            self.book.dirty = true;
            let opened_here = out[start..].iter_mut().find_map(|o| match o {
                AlertOutput::Transition { alert, transition }
                    if transition.alert == id && transition.from.is_none() =>
                {
                    Some(alert)
                }
                _ => None,
            });
            if let Some(raised) = opened_here {
                raised.suppressed = want.clone();
                if let Some(by) = want.as_ref().and_then(|w| w.by_alert) {
                    suppressed_after(&mut out[start..], id, by);
                }
                continue;
            }
            // Raised again in this batch: suppressed (or not) before the re-raise is stored,
            // so a suppressed re-raise does not signal.
            let resumed_at = out[start..].iter_mut().position(|o| {
                matches!(o, AlertOutput::Transition { transition, .. }
                    if transition.alert == id && transition.action == Some(AlertMove::Resume))
            });
            if let Some(k) = resumed_at {
                if let AlertOutput::Transition { alert, .. } = &mut out[start + k] {
                    alert.suppressed = want.clone();
                }
            }
            let Some(alert) = self.book.open.get(&id) else { continue };
            let (mv, note) = match &want {
                Some(s) => (AlertMove::Suppress, s.describe()),
                None => (
                    AlertMove::Unsuppress,
                    "what suppressed it (an alert, a road operation) is no longer active"
                        .to_owned(),
                ),
            };
            // Inserted before the re-raise, it moves the alert while still returned.
            let state = if resumed_at.is_some() { AlertState::Returned } else { alert.state };
            let transition = AlertTransition {
                alert: id,
                key: alert.key.clone(),
                from: Some(state),
                to: state,
                action: Some(mv),
                by: None,
                note: Some(note),
                at: now,
            };
            let output = AlertOutput::Transition { alert: alert.clone(), transition };
            match resumed_at {
                Some(k) => out.insert(start + k, output),
                None => out.push(output),
            }
        }
    }
}

/// Move the raise of `id` after the raise of `by` when both are among `outputs` and
/// `id`'s came first, so the suppressing alert is stored before the alert naming it.
fn suppressed_after(outputs: &mut [AlertOutput], id: AlertId, by: AlertId) {
    let raise_of = |o: &AlertOutput, which: AlertId| matches!(o, AlertOutput::Transition { transition, .. } if transition.alert == which && transition.from.is_none());
    let Some(i) = outputs.iter().position(|o| raise_of(o, id)) else { return };
    let Some(j) = outputs.iter().position(|o| raise_of(o, by)) else { return };
    if i < j {
        outputs[i..=j].rotate_left(1);
    }
}
