//! Storm protection in the engine: each raise of a device condition goes to its own
//! alert, into its segment's group alert, or, without a token from the rule's bucket
//! ([`super::super::storm`]), into the rule's one overflow alert. The order and the limits
//! are the engine's contract (see [`super`]).

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use telemetry::{DeviceId, EventTime, SegmentId};

use super::super::condition::millis;
use super::super::lifecycle::{Alert, AlertId, AlertKind, MessageCode, LISTED_MEMBERS};
use super::super::rule::Rule;
use super::super::storm::TokenBucket;
use super::super::{AlertKey, Subject};
use super::book::AlertBook;
use super::message::{describe, params};
use super::AlertOutput;

/// Where a raised condition went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    Alert(AlertId),
    Group { alert: AlertId, segment: SegmentId },
    Overflow(AlertId),
}

/// Grouping state of one (rule, segment).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentGroup {
    /// Distinct devices that raised within the group window, by processing time.
    pub recent: VecDeque<(EventTime, DeviceId)>,
    pub alert: Option<AlertId>,
    pub members: BTreeSet<DeviceId>,
}

enum Route {
    Single,
    JoinGroup(AlertId, SegmentId),
    OpenGroup(SegmentId),
}

impl AlertBook {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn raise(
        &mut self,
        rule: &Rule,
        subject: Subject,
        segment: Option<&SegmentId>,
        since: EventTime,
        value: f64,
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) {
        let pkey = (rule.id.clone(), subject.clone());
        if self.placements.contains_key(&pkey) {
            self.counters.duplicate_raises += 1;
            return;
        }
        let key = AlertKey { rule: rule.id.clone(), subject: subject.clone() };
        if let Some(&id) = self.by_key.get(&key) {
            // Returned and not acknowledged yet: the same alert is raised again.
            if !self.resume(id, |_| {}, now, out) {
                self.counters.duplicate_raises += 1;
            }
            self.placements.insert(pkey, Placement::Alert(id));
            return;
        }
        let route = self.route(rule, &subject, segment, now);
        match route {
            Route::JoinGroup(id, seg) => {
                self.counters.grouped_raises += 1;
                if let (Some(g), Subject::Device(dev)) =
                    (self.groups.get_mut(&(rule.id.clone(), seg.clone())), &subject)
                {
                    g.members.insert(dev.clone());
                    if let Some(alert) = self.open.get_mut(&id) {
                        join(alert, g.members.len(), subject.clone(), out);
                    }
                }
                self.placements.insert(pkey, Placement::Group { alert: id, segment: seg });
            }
            Route::OpenGroup(seg) => {
                let gkey =
                    AlertKey { rule: rule.id.clone(), subject: Subject::Segment(seg.clone()) };
                let returned = self.by_key.get(&gkey).copied();
                let reopened = returned.filter(|&id| {
                    let listed = subject.clone();
                    self.resume(id, |a| first_member(a, listed), now, out)
                });
                if let Some(id) = reopened {
                    self.counters.grouped_raises += 1;
                    if let (Some(g), Subject::Device(dev)) =
                        (self.groups.get_mut(&(rule.id.clone(), seg.clone())), &subject)
                    {
                        g.alert = Some(id);
                        g.members = BTreeSet::from([dev.clone()]);
                    }
                    self.placements.insert(pkey, Placement::Group { alert: id, segment: seg });
                    return;
                }
                if !self.take_token(rule, now) {
                    self.overflow(rule, subject, since, value, now, out);
                    return;
                }
                self.counters.grouped_raises += 1;
                let message = format!(
                    "{}: more than {} devices of segment {seg} raised within {}; grouped",
                    rule.id,
                    self.storm.group_over_devices,
                    humantime::format_duration(self.storm.group_window)
                );
                let params = params(&[
                    ("rule", rule.id.as_str().into()),
                    ("segment", seg.as_str().into()),
                    ("over_devices", self.storm.group_over_devices.into()),
                    ("window_s", self.storm.group_window.as_secs_f64().into()),
                ]);
                let mut alert = self.new_alert(
                    rule,
                    Subject::Segment(seg.clone()),
                    AlertKind::SegmentGroup,
                    since,
                    value,
                    (MessageCode::SegmentGroup, params, message),
                    now,
                );
                first_member(&mut alert, subject.clone());
                let id = self.open_alert(alert, out);
                if let (Some(g), Subject::Device(dev)) =
                    (self.groups.get_mut(&(rule.id.clone(), seg.clone())), &subject)
                {
                    g.alert = Some(id);
                    g.members = BTreeSet::from([dev.clone()]);
                }
                self.placements.insert(pkey, Placement::Group { alert: id, segment: seg });
            }
            Route::Single => {
                if !self.take_token(rule, now) {
                    self.overflow(rule, subject, since, value, now, out);
                    return;
                }
                let text = describe(rule, &subject, value, self.expected, self.health);
                let alert =
                    self.new_alert(rule, subject, AlertKind::Single, since, value, text, now);
                let id = self.open_alert(alert, out);
                self.placements.insert(pkey, Placement::Alert(id));
            }
        }
    }

    fn route(
        &mut self,
        rule: &Rule,
        subject: &Subject,
        segment: Option<&SegmentId>,
        now: EventTime,
    ) -> Route {
        let (Subject::Device(dev), Some(seg)) = (subject, segment) else {
            return Route::Single;
        };
        let over = self.storm.group_over_devices as usize;
        if over == 0 {
            return Route::Single;
        }
        let window = millis(self.storm.group_window);
        let g = self.groups.entry((rule.id.clone(), seg.clone())).or_default();
        if let Some(id) = g.alert {
            if self.open.contains_key(&id) {
                return Route::JoinGroup(id, seg.clone());
            }
            // Cleared by an operator: its members stay silenced until their conditions end.
            g.alert = None;
            g.members.clear();
        }
        while g.recent.front().is_some_and(|(t, _)| t.millis() <= now.millis() - window) {
            g.recent.pop_front();
        }
        if !g.recent.iter().any(|(_, d)| d == dev) {
            g.recent.push_back((now, dev.clone()));
        }
        if g.recent.len() > over {
            Route::OpenGroup(seg.clone())
        } else {
            Route::Single
        }
    }

    fn take_token(&mut self, rule: &Rule, now: EventTime) -> bool {
        self.buckets
            .entry(rule.id.clone())
            .or_insert_with(|| TokenBucket::full(rule.raises_per_minute, now))
            .take(rule.raises_per_minute, now)
    }

    fn overflow(
        &mut self,
        rule: &Rule,
        subject: Subject,
        since: EventTime,
        value: f64,
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) {
        self.counters.suppressed_raises += 1;
        let pkey = (rule.id.clone(), subject.clone());
        if let Some((id, members)) = self.overflow.get_mut(&rule.id) {
            if let Some(alert) = self.open.get_mut(id) {
                members.insert(subject.clone());
                join(alert, members.len(), subject, out);
                self.placements.insert(pkey, Placement::Overflow(*id));
                return;
            }
        }
        let okey = AlertKey { rule: rule.id.clone(), subject: Subject::Rule };
        if let Some(id) = self.by_key.get(&okey).copied() {
            let listed = subject.clone();
            let reopened = self.resume(id, |a| first_member(a, listed), now, out);
            if reopened {
                self.overflow.insert(rule.id.clone(), (id, BTreeSet::from([subject])));
                self.placements.insert(pkey, Placement::Overflow(id));
                return;
            }
        }
        let message = format!(
            "{}: more than {} raises a minute; further raises are folded here",
            rule.id, rule.raises_per_minute
        );
        let params = params(&[
            ("rule", rule.id.as_str().into()),
            ("per_minute", rule.raises_per_minute.into()),
        ]);
        let mut alert = self.new_alert(
            rule,
            Subject::Rule,
            AlertKind::RateLimitOverflow,
            since,
            value,
            (MessageCode::RateLimitOverflow, params, message),
            now,
        );
        first_member(&mut alert, subject.clone());
        let id = self.open_alert(alert, out);
        self.overflow.insert(rule.id.clone(), (id, BTreeSet::from([subject])));
        self.placements.insert(pkey, Placement::Overflow(id));
    }
}

/// `subject` is the first member of a folded alert (a segment group or the overflow) that
/// opens or is raised again.
fn first_member(alert: &mut Alert, subject: Subject) {
    alert.members = 1;
    alert.folded_raises += 1;
    alert.listed_members = vec![subject];
}

/// `subject` joined a folded alert, which now has `members` members.
fn join(alert: &mut Alert, members: usize, subject: Subject, out: &mut Vec<AlertOutput>) {
    alert.members = u32::try_from(members).unwrap_or(u32::MAX);
    alert.folded_raises += 1;
    if alert.listed_members.len() < LISTED_MEMBERS {
        alert.listed_members.push(subject);
    }
    out.push(AlertOutput::Updated { alert: alert.clone() });
}
