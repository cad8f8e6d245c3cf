//! [`AlertEngine`]: the one entry point the service drives. It owns the evaluators of every
//! (rule, subject), the open alerts, and storm protection, and returns what changed as
//! [`AlertOutput`]s for the service to store (`alerts`, `alert_events`) and push.
//!
//! Inputs, each with the processing time `now` the caller observed:
//! [`on_reading`](AlertEngine::on_reading), [`on_segment_state`](AlertEngine::on_segment_state),
//! [`on_status`](AlertEngine::on_status) (Last Will / online), [`tick`](AlertEngine::tick)
//! (offline by silence), and the operator's [`acknowledge`](AlertEngine::acknowledge) and
//! [`clear`](AlertEngine::clear).
//!
//! Invariants:
//! - At most one open alert per [`AlertKey`] (rule, subject). A condition that raises
//!   while an alert for its key is open joins it (counted in `duplicate_raises`).
//! - Every alert's transitions run raise → (acknowledge) → clear, and every one is returned
//!   as an [`AlertTransition`].
//! - A manual clear while the condition still holds does not re-raise: the evaluator stays
//!   raised, so a new alert needs the condition to end (clear edge) and occur again.
//! - Storm protection, in this order for each raise of a device condition:
//!   1. *grouping by segment*: when more than `group_over_devices` distinct devices of one
//!      segment raise the same rule within `group_window` (processing time), the raise that
//!      crosses the limit opens one [`AlertKind::SegmentGroup`] alert about the segment and
//!      every further raise of that rule in that segment joins it (members counted) while it
//!      is open. Alerts opened before the group stay. The group clears when all its members'
//!      conditions have cleared.
//!   2. *rate limit*: each new alert (single or group) takes a token from the rule's bucket
//!      ([`super::storm`], `raises_per_minute`, processing time). Without a token the raise is
//!      suppressed: counted, and folded into the rule's one [`AlertKind::RateLimitOverflow`]
//!      alert (subject [`Subject::Rule`]), which opens without a token and clears when all
//!      folded conditions have cleared. So a rule opens at most `raises_per_minute` per
//!      minute plus its burst, plus one overflow alert.
//! - Everything that must survive a restart (open alerts, evaluator timers, learned
//!   intervals, groups, buckets) is exported as plain serde data by
//!   [`export_state`](AlertEngine::export_state) and restored by
//!   [`restore_state`](AlertEngine::restore_state).
//! - Checkpoints are incremental: [`checkpoint`](AlertEngine::checkpoint) returns the small
//!   engine-wide head, the book of open alerts and storm state when it changed, and one
//!   [`StatePart`] per device or segment whose state changed since the previous checkpoint
//!   (every part after a start, a rule change or a lost checkpoint). Applied in order over
//!   the saved parts, they assemble ([`AlertEngineState::assemble`]) exactly what
//!   `export_state` would return (`checkpoints_assemble_exactly_the_exported_state`).
//!
//! Hot path: `on_reading` does one hash lookup of the device, scans that device's
//! evaluators for the reading's metric, and allocates nothing unless an edge fires or the
//! device sends a metric for the first time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::{DeviceId, EventTime, MetricId, Reading, SegmentId};

use super::condition::{
    millis, Arrivals, FlatlineState, LosState, MeanLimitState, OfflineState, RateOfChangeState,
    Step, ThresholdState,
};
use super::lifecycle::{
    Acknowledgement, Alert, AlertId, AlertKind, AlertMove, AlertState, AlertTransition,
    LifecycleError, MessageCode, Params, Shelf, Suppressed, SuppressionReason, TransitionError,
    LISTED_MEMBERS,
};
use super::rule::{Direction, Rule, RuleKind, RuleSet, StormSettings};
use super::storm::TokenBucket;
use super::{AlertKey, RuleId, Subject};
use crate::segment_state::SegmentState;

/// What the engine knows of a device from the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceProfile {
    pub id: DeviceId,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub segment: Option<SegmentId>,
    /// The reporting interval the device is configured with, if known.
    #[serde(default, with = "crate::duration_serde::option")]
    pub interval: Option<Duration>,
}

/// A device status message (`sccr/v1/devices/{id}/status`); `Offline` is its Last Will.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    Online,
    Offline,
}

/// A change for the service to persist and push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AlertOutput {
    /// A lifecycle move: upsert `alert`, insert `transition` into `alert_events`.
    Transition { alert: Alert, transition: AlertTransition },
    /// A group or overflow alert gained or lost members: update the alert row.
    Updated { alert: Alert },
}

impl AlertOutput {
    pub fn alert(&self) -> &Alert {
        match self {
            Self::Transition { alert, .. } | Self::Updated { alert } => alert,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertCounters {
    pub readings: u64,
    /// Samples not newer than the last evaluated one of their (rule, subject).
    pub stale_samples: u64,
    pub raised: u64,
    pub cleared: u64,
    /// Raises of a key that already had an open alert.
    pub duplicate_raises: u64,
    /// Raises folded into a segment group alert.
    pub grouped_raises: u64,
    /// Raises the rate limit turned away (folded into the overflow alert).
    pub suppressed_raises: u64,
    /// Conditions that ended while their alert was unacknowledged (ISA-18.2 returned).
    #[serde(default)]
    pub returned: u64,
    /// Returned alerts whose condition held again before an acknowledgement.
    #[serde(default)]
    pub resumed: u64,
}

/// The evaluator state of one (metric rule, device).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceCondition {
    Threshold(ThresholdState),
    Flatline(FlatlineState),
    RateOfChange(RateOfChangeState),
    AirQuality(Box<MeanLimitState>),
}

impl DeviceCondition {
    fn new(kind: &RuleKind) -> Option<Self> {
        Some(match kind {
            RuleKind::Threshold(_) => Self::Threshold(ThresholdState::default()),
            RuleKind::Flatline(_) => Self::Flatline(FlatlineState::default()),
            RuleKind::RateOfChange(_) => Self::RateOfChange(RateOfChangeState::default()),
            RuleKind::AirQuality(_) => Self::AirQuality(Box::default()),
            RuleKind::Offline(_) | RuleKind::Los(_) | RuleKind::SegmentThreshold(_) => return None,
        })
    }

    fn fits(&self, kind: &RuleKind) -> bool {
        matches!(
            (self, kind),
            (Self::Threshold(_), RuleKind::Threshold(_))
                | (Self::Flatline(_), RuleKind::Flatline(_))
                | (Self::RateOfChange(_), RuleKind::RateOfChange(_))
                | (Self::AirQuality(_), RuleKind::AirQuality(_))
        )
    }

    fn on_sample(&mut self, kind: &RuleKind, t: EventTime, v: f64) -> Step {
        match (self, kind) {
            (Self::Threshold(s), RuleKind::Threshold(r)) => s.on_sample(r, t, v),
            (Self::Flatline(s), RuleKind::Flatline(r)) => s.on_sample(r, t, v),
            (Self::RateOfChange(s), RuleKind::RateOfChange(r)) => s.on_sample(r, t, v),
            (Self::AirQuality(s), RuleKind::AirQuality(r)) => s.on_sample(r, t, v),
            _ => Step::Quiet,
        }
    }

    fn is_raised(&self) -> bool {
        match self {
            Self::Threshold(s) => s.is_raised(),
            Self::Flatline(s) => s.is_raised(),
            Self::RateOfChange(s) => s.is_raised(),
            Self::AirQuality(s) => s.is_raised(),
        }
    }
}

#[derive(Debug)]
struct DeviceEvaluator {
    rule: u16,
    metric: MetricId,
    state: DeviceCondition,
}

#[derive(Debug)]
struct OfflineEvaluator {
    rule: u16,
    state: OfflineState,
}

#[derive(Debug, Default)]
struct DeviceSlot {
    /// Changed since the last checkpoint.
    dirty: bool,
    kind: Option<String>,
    segment: Option<SegmentId>,
    interval: Option<Duration>,
    arrivals: Arrivals,
    /// Bit `metric as u32`: the device has sent this metric, its evaluators exist.
    metrics_seen: u32,
    evaluators: Vec<DeviceEvaluator>,
    offline: Vec<OfflineEvaluator>,
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementRecord {
    pub rule: RuleId,
    pub subject: Subject,
    pub placement: Placement,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub rule: RuleId,
    pub segment: SegmentId,
    pub group: SegmentGroup,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverflowRecord {
    pub rule: RuleId,
    pub alert: AlertId,
    pub members: BTreeSet<Subject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionRecord {
    pub rule: RuleId,
    pub metric: MetricId,
    pub state: DeviceCondition,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub device: DeviceId,
    pub arrivals: Arrivals,
    pub conditions: Vec<ConditionRecord>,
    pub offline: Vec<(RuleId, OfflineState)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentConditionRecord {
    pub rule: RuleId,
    pub segment: SegmentId,
    pub state: LosState,
}

/// The condition states of one segment, one per rule on segments (LOS, segment
/// threshold) that evaluated it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub segment: SegmentId,
    pub states: Vec<(RuleId, LosState)>,
}

/// The engine-wide part of a checkpoint, written every time (a few hundred bytes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineHead {
    pub next_alert_id: u64,
    pub clock: Option<EventTime>,
    pub counters: AlertCounters,
}

/// Open alerts and storm protection: written when they changed. Its size follows the
/// open alerts and raised conditions, not the fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BookRecord {
    pub open_alerts: Vec<Alert>,
    pub placements: Vec<PlacementRecord>,
    pub groups: Vec<GroupRecord>,
    pub overflow: Vec<OverflowRecord>,
    pub buckets: Vec<(RuleId, TokenBucket)>,
}

/// The per-subject part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatePart {
    Device(DeviceRecord),
    Segment(SegmentRecord),
}

impl StatePart {
    /// The part's stable name under the checkpoint's key (`device/<id>`, `segment/<id>`).
    pub fn name(&self) -> String {
        match self {
            Self::Device(d) => format!("device/{}", d.device),
            Self::Segment(s) => format!("segment/{}", s.segment),
        }
    }
}

/// What a checkpoint writes besides its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineCheckpoint {
    /// The parts that follow replace every saved part (not only those they name).
    pub full: bool,
    pub head: EngineHead,
    /// `None`: unchanged since the previous checkpoint.
    pub book: Option<BookRecord>,
}

/// Everything that must survive a restart, as plain serde data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertEngineState {
    pub next_alert_id: u64,
    pub clock: Option<EventTime>,
    pub open_alerts: Vec<Alert>,
    pub placements: Vec<PlacementRecord>,
    pub groups: Vec<GroupRecord>,
    pub overflow: Vec<OverflowRecord>,
    pub buckets: Vec<(RuleId, TokenBucket)>,
    pub devices: Vec<DeviceRecord>,
    pub segments: Vec<SegmentConditionRecord>,
    pub counters: AlertCounters,
}

/// Cleared alert ids remembered so a late operator action gets `AlreadyCleared`.
const REMEMBERED_CLEARED: usize = 4_096;

/// Open alerts, where each raised condition went, and storm protection.
#[derive(Debug, Default)]
struct AlertBook {
    storm: StormSettings,
    next_id: u64,
    open: BTreeMap<AlertId, Alert>,
    by_key: HashMap<AlertKey, AlertId>,
    recently_cleared: VecDeque<AlertId>,
    placements: HashMap<(RuleId, Subject), Placement>,
    groups: HashMap<(RuleId, SegmentId), SegmentGroup>,
    overflow: HashMap<RuleId, (AlertId, BTreeSet<Subject>)>,
    buckets: HashMap<RuleId, TokenBucket>,
    counters: AlertCounters,
    /// Open alerts, placements, groups, overflow or buckets changed since the last checkpoint.
    dirty: bool,
}

enum Route {
    Single,
    JoinGroup(AlertId, SegmentId),
    OpenGroup(SegmentId),
}

impl AlertBook {
    fn apply(
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
    fn raise(
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
                    let members = g.members.len();
                    if let Some(alert) = self.open.get_mut(&id) {
                        alert.members = u32::try_from(members).unwrap_or(u32::MAX);
                        alert.folded_raises += 1;
                        if alert.listed_members.len() < LISTED_MEMBERS {
                            alert.listed_members.push(subject.clone());
                        }
                        out.push(AlertOutput::Updated { alert: alert.clone() });
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
                    self.resume(
                        id,
                        |a| {
                            a.members = 1;
                            a.folded_raises += 1;
                            a.listed_members = vec![listed];
                        },
                        now,
                        out,
                    )
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
                alert.members = 1;
                alert.folded_raises = 1;
                alert.listed_members.push(subject.clone());
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
                let text = describe(rule, &subject, value);
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
                alert.members = u32::try_from(members.len()).unwrap_or(u32::MAX);
                alert.folded_raises += 1;
                if alert.listed_members.len() < LISTED_MEMBERS {
                    alert.listed_members.push(subject);
                }
                out.push(AlertOutput::Updated { alert: alert.clone() });
                self.placements.insert(pkey, Placement::Overflow(*id));
                return;
            }
        }
        let okey = AlertKey { rule: rule.id.clone(), subject: Subject::Rule };
        if let Some(id) = self.by_key.get(&okey).copied() {
            let listed = subject.clone();
            let reopened = self.resume(
                id,
                |a| {
                    a.members = 1;
                    a.folded_raises += 1;
                    a.listed_members = vec![listed];
                },
                now,
                out,
            );
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
        alert.members = 1;
        alert.folded_raises = 1;
        alert.listed_members.push(subject.clone());
        let id = self.open_alert(alert, out);
        self.overflow.insert(rule.id.clone(), (id, BTreeSet::from([subject])));
        self.placements.insert(pkey, Placement::Overflow(id));
    }

    #[allow(clippy::too_many_arguments)]
    fn new_alert(
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
    fn resume(
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
    fn end(&mut self, id: AlertId, note: String, now: EventTime, out: &mut Vec<AlertOutput>) {
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

    fn open_alert(&mut self, alert: Alert, out: &mut Vec<AlertOutput>) -> AlertId {
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
    fn clear_condition(
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
    fn close(
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

    fn not_open(&self, id: AlertId) -> LifecycleError {
        if self.recently_cleared.contains(&id) {
            LifecycleError::Refused { id, source: TransitionError::AlreadyCleared }
        } else {
            LifecycleError::Unknown(id)
        }
    }

    /// Drop everything of rules that no longer exist (or changed), clearing their alerts.
    fn forget_rules(
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

/// Flat message parameters.
fn params(pairs: &[(&str, serde_json::Value)]) -> Params {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// A number as a message parameter (non-finite values become null).
fn num(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// The message of a single alert: its code, parameters and English text.
fn describe(rule: &Rule, subject: &Subject, value: f64) -> (MessageCode, Params, String) {
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let secs = |d: Duration| num(d.as_secs_f64());
    let who = (String::from("subject"), serde_json::Value::from(subject.to_string()));
    let metric = |m: MetricId| [("metric", m.as_str().into()), ("unit", m.spec().unit.into())];
    let (code, mut p, text) = match &rule.kind {
        RuleKind::Threshold(t) => {
            let (side, code) = if t.direction == Direction::Above {
                ("above", MessageCode::ThresholdAbove)
            } else {
                ("below", MessageCode::ThresholdBelow)
            };
            let mut p = params(&metric(t.metric));
            p.extend(params(&[
                ("limit", num(t.level)),
                ("for_s", secs(t.hold)),
                ("value", num(value)),
            ]));
            (code, p, format!("{} {side} {} for {}: {value}", t.metric, t.level, d(t.hold)))
        }
        RuleKind::SegmentThreshold(t) => {
            let (side, code) = if t.direction == Direction::Above {
                ("above", MessageCode::ThresholdAbove)
            } else {
                ("below", MessageCode::ThresholdBelow)
            };
            let p = params(&[
                ("metric", t.figure.as_str().into()),
                ("unit", t.figure.unit().into()),
                ("limit", num(t.level)),
                ("for_s", secs(t.hold)),
                ("value", num((value * 10.0).round() / 10.0)),
            ]);
            let text = format!(
                "{} {side} {} for {}: {:.1}",
                t.figure,
                t.level,
                d(t.hold),
                (value * 10.0).round() / 10.0
            );
            (code, p, text)
        }
        RuleKind::Offline(_) => (
            MessageCode::DeviceOffline,
            params(&[("silence_s", num(value.round()))]),
            format!("offline, last data {value:.0} s ago"),
        ),
        RuleKind::Flatline(f) => {
            let mut p = params(&metric(f.metric));
            p.extend(params(&[
                ("value", num(value)),
                ("epsilon", num(f.epsilon)),
                ("readings", f.readings.into()),
                ("for_s", secs(f.hold)),
            ]));
            (
                MessageCode::Flatline,
                p,
                format!(
                    "{} stuck at {value} (± {}) for {} readings / {}",
                    f.metric,
                    f.epsilon,
                    f.readings,
                    d(f.hold)
                ),
            )
        }
        RuleKind::RateOfChange(r) => {
            let mut p = params(&metric(r.metric));
            p.extend(params(&[
                ("rate_per_min", num((value * 100.0).round() / 100.0)),
                ("limit_per_min", num(r.max_per_minute)),
            ]));
            (
                MessageCode::RateOfChange,
                p,
                format!("{} changing {value:.2}/min, limit {}/min", r.metric, r.max_per_minute),
            )
        }
        RuleKind::Los(l) => (
            MessageCode::LosAtOrWorse,
            params(&[
                ("grade", l.at_or_worse.as_str().into()),
                ("for_s", secs(l.hold)),
                ("speed_kmh", num((value * 10.0).round() / 10.0)),
            ]),
            format!("LOS {} or worse for {} (speed {value:.1} km/h)", l.at_or_worse, d(l.hold)),
        ),
        RuleKind::AirQuality(a) => {
            let mut p = params(&metric(a.metric));
            p.extend(params(&[
                ("averaging_s", secs(a.averaging)),
                ("mean", num((value * 10.0).round() / 10.0)),
                ("limit", num(a.limit)),
            ]));
            (
                MessageCode::AirQualityMean,
                p,
                format!(
                    "{} mean over {} is {value:.1}, above {}",
                    a.metric,
                    d(a.averaging),
                    a.limit
                ),
            )
        }
    };
    p.insert(who.0, who.1);
    (code, p, format!("{subject}: {text}"))
}

/// The alert engine. See the module documentation for its contract.
#[derive(Debug)]
pub struct AlertEngine {
    rules: Vec<Rule>,
    /// Metric rules by `metric as usize`.
    by_metric: Vec<Vec<u16>>,
    offline_rules: Vec<u16>,
    segment_rules: Vec<u16>,
    devices: HashMap<DeviceId, DeviceSlot>,
    segments: HashMap<(RuleId, SegmentId), LosState>,
    /// Segments whose LOS states changed since the last checkpoint.
    dirty_segments: HashSet<SegmentId>,
    /// The next checkpoint saves every part (after a start, a rule change).
    full_checkpoint: bool,
    book: AlertBook,
    clock: Option<EventTime>,
    edges: Vec<(u16, Step)>,
    /// Rule index by id.
    rule_index: HashMap<RuleId, u16>,
}

impl AlertEngine {
    pub fn new(rules: RuleSet) -> Self {
        let mut engine = Self {
            rules: Vec::new(),
            by_metric: vec![Vec::new(); MetricId::ALL.len()],
            offline_rules: Vec::new(),
            segment_rules: Vec::new(),
            devices: HashMap::new(),
            segments: HashMap::new(),
            dirty_segments: HashSet::new(),
            full_checkpoint: true,
            book: AlertBook::default(),
            clock: None,
            edges: Vec::new(),
            rule_index: HashMap::new(),
        };
        let mut out = Vec::new();
        engine.set_rules(rules, EventTime(0), &mut out);
        engine
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Replace the rule set. Rules kept unchanged keep their evaluator state; alerts of
    /// rules removed or changed are cleared (note "rule changed or removed").
    pub fn set_rules(&mut self, set: RuleSet, now: EventTime, out: &mut Vec<AlertOutput>) {
        let now = self.advance(now);
        // More than u16::MAX rules are not indexable; the admin API never gets near.
        let mut new_rules = set.rules;
        new_rules.truncate(usize::from(u16::MAX));
        let remap: Vec<Option<u16>> = self
            .rules
            .iter()
            .map(|old| new_rules.iter().position(|n| n == old).map(|i| i as u16))
            .collect();
        let gone: BTreeSet<RuleId> = self
            .rules
            .iter()
            .zip(&remap)
            .filter(|(_, m)| m.is_none())
            .map(|(r, _)| r.id.clone())
            .collect();
        self.rules = new_rules;
        self.rule_index =
            self.rules.iter().enumerate().map(|(i, r)| (r.id.clone(), i as u16)).collect();
        self.book.storm = set.storm;
        self.full_checkpoint = true;
        self.by_metric = vec![Vec::new(); MetricId::ALL.len()];
        self.offline_rules.clear();
        self.segment_rules.clear();
        for (i, rule) in self.rules.iter().enumerate() {
            let i = i as u16;
            match &rule.kind {
                RuleKind::Offline(_) => self.offline_rules.push(i),
                RuleKind::Los(_) | RuleKind::SegmentThreshold(_) => self.segment_rules.push(i),
                kind => {
                    if let Some(m) = kind.metric() {
                        self.by_metric[m as usize].push(i);
                    }
                }
            }
        }
        for (id, slot) in &mut self.devices {
            slot.evaluators.retain_mut(|e| {
                remap.get(usize::from(e.rule)).copied().flatten().map(|n| e.rule = n).is_some()
            });
            slot.offline.retain_mut(|e| {
                remap.get(usize::from(e.rule)).copied().flatten().map(|n| e.rule = n).is_some()
            });
            // Scope changes of kept rules cannot happen (a changed rule is a new rule), so
            // nothing raised is dropped here.
            let _ = sync_slot(slot, id, &self.rules, &self.by_metric, &self.offline_rules);
        }
        let rules = &self.rules;
        self.segments.retain(|(r, s), _| {
            rules.iter().any(|x| &x.id == r && x.kind.on_segments() && x.scope.covers_segment(s))
        });
        let start = out.len();
        self.book.forget_rules(&gone, now, out);
        // Suppression follows the new rules' `suppressed_by`.
        self.resuppress(start, now, out);
    }

    /// Replace the registry's view of every device (kind, segment, interval). Devices not
    /// listed keep their timers but lose kind and segment. Conditions of rules that no
    /// longer cover a device are cleared.
    pub fn set_devices(
        &mut self,
        profiles: impl IntoIterator<Item = DeviceProfile>,
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) {
        let mut profiles: HashMap<DeviceId, DeviceProfile> =
            profiles.into_iter().map(|p| (p.id.clone(), p)).collect();
        let ids: Vec<DeviceId> = self.devices.keys().cloned().collect();
        for id in ids {
            let profile = profiles.remove(&id).unwrap_or(DeviceProfile {
                id,
                kind: None,
                segment: None,
                interval: None,
            });
            self.upsert_device(profile, now, out);
        }
        for (_, p) in profiles {
            self.upsert_device(p, now, out);
        }
    }

    /// Add or update one device's registry view.
    pub fn upsert_device(
        &mut self,
        profile: DeviceProfile,
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) {
        let now = self.advance(now);
        let start = out.len();
        let slot = self.devices.entry(profile.id.clone()).or_default();
        slot.kind = profile.kind;
        slot.segment = profile.segment;
        slot.interval = profile.interval;
        let before = evaluator_rules(slot);
        let dropped =
            sync_slot(slot, &profile.id, &self.rules, &self.by_metric, &self.offline_rules);
        if evaluator_rules(slot) != before {
            slot.dirty = true;
        }
        for rule in dropped {
            let id = self.rules[usize::from(rule)].id.clone();
            self.book.clear_condition(
                &id,
                Subject::Device(profile.id.clone()),
                now,
                "device left the rule's scope",
                out,
            );
        }
        self.suppress_pass(start, now, out);
    }

    fn advance(&mut self, now: EventTime) -> EventTime {
        let now = self.clock.map_or(now, |c| c.max(now));
        self.clock = Some(now);
        now
    }

    /// Evaluate one reading that arrived at `now`.
    pub fn on_reading(&mut self, r: &Reading, now: EventTime, out: &mut Vec<AlertOutput>) {
        let now = self.advance(now);
        let Some(slot) = self.devices.get_mut(&r.device) else {
            self.upsert_device(
                DeviceProfile { id: r.device.clone(), kind: None, segment: None, interval: None },
                now,
                out,
            );
            if self.devices.contains_key(&r.device) {
                self.on_reading(r, now, out);
            }
            return;
        };
        self.book.counters.readings += 1;
        self.edges.clear();
        slot.dirty = true;
        slot.arrivals.record(now);
        for o in &mut slot.offline {
            if o.state.raised {
                o.state.raised = false;
                self.edges.push((o.rule, Step::Clear { value: 0.0 }));
            }
        }
        let bit = 1u32 << (r.metric as u32);
        if slot.metrics_seen & bit == 0 {
            slot.metrics_seen |= bit;
            add_metric_evaluators(slot, &r.device, &self.rules, &self.by_metric[r.metric as usize]);
        }
        for e in &mut slot.evaluators {
            if e.metric != r.metric {
                continue;
            }
            match e.state.on_sample(&self.rules[usize::from(e.rule)].kind, r.time, r.value) {
                Step::Quiet => {}
                Step::Stale => self.book.counters.stale_samples += 1,
                step => self.edges.push((e.rule, step)),
            }
        }
        if self.edges.is_empty() {
            return;
        }
        let segment = slot.segment.clone();
        let start = out.len();
        for &(rule, step) in &self.edges {
            self.book.apply(
                &self.rules[usize::from(rule)],
                Subject::Device(r.device.clone()),
                segment.as_ref(),
                step,
                now,
                out,
            );
        }
        self.suppress_pass(start, now, out);
    }

    /// Evaluate a batch of readings that arrived together.
    pub fn on_readings(
        &mut self,
        readings: &[Reading],
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) {
        for r in readings {
            self.on_reading(r, now, out);
        }
    }

    /// A device's status: `Online` counts as an arrival (clears offline), `Offline` is its
    /// Last Will and raises the offline rules that honour it at once.
    pub fn on_status(
        &mut self,
        device: &DeviceId,
        status: DeviceStatus,
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) {
        let now = self.advance(now);
        if !self.devices.contains_key(device) {
            self.upsert_device(
                DeviceProfile { id: device.clone(), kind: None, segment: None, interval: None },
                now,
                out,
            );
        }
        let Some(slot) = self.devices.get_mut(device) else { return };
        slot.dirty = true;
        let mut edges = Vec::new();
        match status {
            DeviceStatus::Online => {
                slot.arrivals.record(now);
                for o in &mut slot.offline {
                    if std::mem::take(&mut o.state.raised) {
                        edges.push((o.rule, Step::Clear { value: 0.0 }));
                    }
                }
            }
            DeviceStatus::Offline => {
                slot.arrivals.last_will(now);
                for o in &mut slot.offline {
                    if let RuleKind::Offline(rule) = &self.rules[usize::from(o.rule)].kind {
                        if let Some((since, value)) = rule
                            .offline_at(&slot.arrivals, slot.interval, now)
                            .filter(|_| !o.state.raised)
                        {
                            o.state.raised = true;
                            edges.push((o.rule, Step::Raise { since, value }));
                        }
                    }
                }
            }
        }
        let segment = slot.segment.clone();
        let start = out.len();
        for (rule, step) in edges {
            self.book.apply(
                &self.rules[usize::from(rule)],
                Subject::Device(device.clone()),
                segment.as_ref(),
                step,
                now,
                out,
            );
        }
        self.suppress_pass(start, now, out);
    }

    /// Evaluate the rules on segments (LOS, segment thresholds) on a segment window.
    pub fn on_segment_state(
        &mut self,
        state: &SegmentState,
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) {
        let now = self.advance(now);
        let start = out.len();
        for &i in &self.segment_rules {
            let rule = &self.rules[usize::from(i)];
            if !rule.kind.on_segments() || !rule.scope.covers_segment(&state.segment) {
                continue;
            }
            if !self.dirty_segments.contains(&state.segment) {
                self.dirty_segments.insert(state.segment.clone());
            }
            let condition =
                self.segments.entry((rule.id.clone(), state.segment.clone())).or_default();
            let step = match &rule.kind {
                RuleKind::Los(los) => condition.on_state(los, state),
                RuleKind::SegmentThreshold(t) => condition.on_figure(t, state),
                _ => continue,
            };
            if step == Step::Stale {
                self.book.counters.stale_samples += 1;
            }
            self.book.apply(rule, Subject::Segment(state.segment.clone()), None, step, now, out);
        }
        self.suppress_pass(start, now, out);
    }

    /// Advance the processing clock: raise offline alerts of devices silent for too long.
    pub fn tick(&mut self, now: EventTime, out: &mut Vec<AlertOutput>) {
        let now = self.advance(now);
        let start = out.len();
        self.expire_shelves(now, out);
        let mut raises = Vec::new();
        for (id, slot) in &mut self.devices {
            for o in &mut slot.offline {
                if o.state.raised {
                    continue;
                }
                if let RuleKind::Offline(rule) = &self.rules[usize::from(o.rule)].kind {
                    if let Some((since, value)) =
                        rule.offline_at(&slot.arrivals, slot.interval, now)
                    {
                        o.state.raised = true;
                        slot.dirty = true;
                        raises.push((id.clone(), slot.segment.clone(), o.rule, since, value));
                    }
                }
            }
        }
        raises.sort_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
        for (device, segment, rule, since, value) in raises {
            self.book.apply(
                &self.rules[usize::from(rule)],
                Subject::Device(device),
                segment.as_ref(),
                Step::Raise { since, value },
                now,
                out,
            );
        }
        // Every second: also catches suppressors an operator closed since.
        self.resuppress(start, now, out);
    }

    /// An operator acknowledges an open alert: raised → acknowledged, returned → cleared.
    pub fn acknowledge(
        &mut self,
        id: AlertId,
        by: &str,
        note: Option<String>,
        now: EventTime,
    ) -> Result<AlertOutput, LifecycleError> {
        if by.trim().is_empty() {
            return Err(LifecycleError::NoOperator);
        }
        let now = self.advance(now);
        let Some(alert) = self.book.open.get_mut(&id) else {
            return Err(self.book.not_open(id));
        };
        let from = alert.state;
        let to = from.acknowledge().map_err(|source| LifecycleError::Refused { id, source })?;
        alert.acknowledged =
            Some(Acknowledgement { by: by.to_owned(), note: note.clone(), at: now });
        self.book.dirty = true;
        if to == AlertState::Cleared {
            return self.close_by_operator(id, by, note, AlertMove::Acknowledge, now);
        }
        alert.state = to;
        let transition = AlertTransition {
            alert: id,
            key: alert.key.clone(),
            from: Some(from),
            to,
            action: Some(AlertMove::Acknowledge),
            by: Some(by.to_owned()),
            note,
            at: now,
        };
        Ok(AlertOutput::Transition { alert: alert.clone(), transition })
    }

    /// An operator clears an open alert. If its condition still holds it does not raise
    /// again until the condition has ended and occurs anew.
    pub fn clear(
        &mut self,
        id: AlertId,
        by: &str,
        note: Option<String>,
        now: EventTime,
    ) -> Result<AlertOutput, LifecycleError> {
        if by.trim().is_empty() {
            return Err(LifecycleError::NoOperator);
        }
        let now = self.advance(now);
        let Some(alert) = self.book.open.get(&id) else {
            return Err(self.book.not_open(id));
        };
        alert.state.clear().map_err(|source| LifecycleError::Refused { id, source })?;
        self.close_by_operator(id, by, note, AlertMove::Clear, now)
    }

    fn close_by_operator(
        &mut self,
        id: AlertId,
        by: &str,
        note: Option<String>,
        mv: AlertMove,
        now: EventTime,
    ) -> Result<AlertOutput, LifecycleError> {
        let Some(alert) = self.book.open.get(&id) else {
            return Err(self.book.not_open(id));
        };
        let key = alert.key.clone();
        match (&key.subject, alert.kind) {
            (Subject::Segment(seg), AlertKind::SegmentGroup) => {
                if let Some(g) = self.book.groups.get_mut(&(key.rule.clone(), seg.clone())) {
                    if g.alert == Some(id) {
                        g.alert = None;
                        g.members.clear();
                    }
                }
            }
            (_, AlertKind::RateLimitOverflow)
                if self.book.overflow.get(&key.rule).is_some_and(|(o, _)| *o == id) =>
            {
                self.book.overflow.remove(&key.rule);
            }
            _ => {}
        }
        let mut out = Vec::with_capacity(1);
        self.book.close(id, Some(by.to_owned()), note, mv, now, &mut out);
        out.pop().ok_or(LifecycleError::Unknown(id))
    }

    /// An operator shelved an open alert (mirrored from the store): it stays as it is,
    /// signals nothing until `shelf.until`, when [`tick`](Self::tick) takes it off.
    pub fn shelve(&mut self, id: AlertId, shelf: Shelf) -> Result<AlertOutput, LifecycleError> {
        self.overlay(id, AlertMove::Shelve, Some(shelf.by.clone()), None, shelf.at, |a| {
            a.shelved = Some(shelf)
        })
    }

    /// An operator took an alert off its shelf (mirrored from the store).
    pub fn unshelve(
        &mut self,
        id: AlertId,
        by: &str,
        now: EventTime,
    ) -> Result<AlertOutput, LifecycleError> {
        self.overlay(id, AlertMove::Unshelve, Some(by.to_owned()), None, now, |a| a.shelved = None)
    }

    fn overlay(
        &mut self,
        id: AlertId,
        mv: AlertMove,
        by: Option<String>,
        note: Option<String>,
        now: EventTime,
        change: impl FnOnce(&mut Alert),
    ) -> Result<AlertOutput, LifecycleError> {
        let Some(alert) = self.book.open.get_mut(&id) else {
            return Err(self.book.not_open(id));
        };
        let to = alert.state.apply(mv).map_err(|source| LifecycleError::Refused { id, source })?;
        change(alert);
        self.book.dirty = true;
        let transition = AlertTransition {
            alert: id,
            key: alert.key.clone(),
            from: Some(to),
            to,
            action: Some(mv),
            by,
            note,
            at: now,
        };
        Ok(AlertOutput::Transition { alert: alert.clone(), transition })
    }

    /// Take the shelves that expired at `now` off their alerts.
    fn expire_shelves(&mut self, now: EventTime, out: &mut Vec<AlertOutput>) {
        let expired: Vec<AlertId> = self
            .book
            .open
            .values()
            .filter(|a| a.shelved.as_ref().is_some_and(|s| s.until <= now))
            .map(|a| a.id)
            .collect();
        for id in expired {
            let note = Some("shelf expired".to_owned());
            if let Ok(o) =
                self.overlay(id, AlertMove::Unshelve, None, note, now, |a| a.shelved = None)
            {
                out.push(o);
            }
        }
    }

    /// What suppresses `a` by design now, if anything: an active alert of a rule in its
    /// rule's `suppressed_by` on its subject (or its device's segment), or its device's
    /// active offline alert.
    fn suppressor_of(&self, a: &Alert) -> Option<Suppressed> {
        let rule = &self.rules[usize::from(*self.rule_index.get(&a.key.rule)?)];
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
                    return Some(Suppressed { reason, by_alert, by_key });
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
                    return Some(Suppressed { reason, by_alert, by_key });
                }
            }
        }
        None
    }

    /// Bring every open alert's designed suppression in line with the alerts active now,
    /// after the outputs from `start` on: a raise among them is recorded suppressed as it
    /// opens; any other alert whose suppression changed gets a suppress/unsuppress move.
    fn suppress_pass(&mut self, start: usize, now: EventTime, out: &mut Vec<AlertOutput>) {
        if out.len() > start {
            self.resuppress(start, now, out);
        }
    }

    /// [`suppress_pass`](Self::suppress_pass) whether or not anything was output.
    fn resuppress(&mut self, start: usize, now: EventTime, out: &mut Vec<AlertOutput>) {
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
                if let Some(by) = &want {
                    suppressed_after(&mut out[start..], id, by.by_alert);
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
                Some(s) => (AlertMove::Suppress, format!("{} by {}", s.reason.as_str(), s.by_key)),
                None => {
                    (AlertMove::Unsuppress, "the suppressing alert is no longer active".to_owned())
                }
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

    pub fn open_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.book.open.values()
    }

    pub fn alert(&self, id: AlertId) -> Option<&Alert> {
        self.book.open.get(&id)
    }

    pub fn counters(&self) -> &AlertCounters {
        &self.book.counters
    }

    /// Everything that must survive a restart.
    pub fn export_state(&self) -> AlertEngineState {
        let mut devices: Vec<DeviceRecord> =
            self.devices.iter().map(|(id, slot)| device_record(&self.rules, id, slot)).collect();
        devices.sort_by(|a, b| a.device.cmp(&b.device));
        let mut segments: Vec<SegmentConditionRecord> = self
            .segments
            .iter()
            .map(|((rule, segment), state)| SegmentConditionRecord {
                rule: rule.clone(),
                segment: segment.clone(),
                state: state.clone(),
            })
            .collect();
        segments.sort_by(|a, b| (&a.rule, &a.segment).cmp(&(&b.rule, &b.segment)));
        let head = EngineHead {
            next_alert_id: self.book.next_id,
            clock: self.clock,
            counters: self.book.counters.clone(),
        };
        AlertEngineState::of(head, self.book_record(), devices, segments)
    }

    /// Take a checkpoint: the head, the book if it changed, and the parts of every device
    /// and segment changed since the previous checkpoint — or of all of them when the
    /// checkpoint is full (the first one, after a rule change, or when `force_full`
    /// because the previous one was not saved). Marks everything returned as saved; the
    /// parts are produced as the iterator is consumed, so a caller can write them in
    /// chunks without the whole state in memory at once.
    pub fn checkpoint(
        &mut self,
        force_full: bool,
    ) -> (EngineCheckpoint, impl Iterator<Item = StatePart> + '_) {
        let full = std::mem::take(&mut self.full_checkpoint) || force_full;
        let book = (full || self.book.dirty).then(|| self.book_record());
        self.book.dirty = false;
        let head = EngineHead {
            next_alert_id: self.book.next_id,
            clock: self.clock,
            counters: self.book.counters.clone(),
        };
        let dirty_segments = std::mem::take(&mut self.dirty_segments);
        let mut by_segment: BTreeMap<SegmentId, Vec<(RuleId, LosState)>> = BTreeMap::new();
        for ((rule, segment), state) in &self.segments {
            if full || dirty_segments.contains(segment) {
                by_segment.entry(segment.clone()).or_default().push((rule.clone(), state.clone()));
            }
        }
        let rules = &self.rules;
        let devices = self.devices.iter_mut().filter_map(move |(id, slot)| {
            if !(full || slot.dirty) {
                return None;
            }
            slot.dirty = false;
            Some(StatePart::Device(device_record(rules, id, slot)))
        });
        let segments = by_segment.into_iter().map(|(segment, mut states)| {
            states.sort_by(|a, b| a.0.cmp(&b.0));
            StatePart::Segment(SegmentRecord { segment, states })
        });
        (EngineCheckpoint { full, head, book }, devices.chain(segments))
    }

    fn book_record(&self) -> BookRecord {
        let mut placements: Vec<PlacementRecord> = self
            .book
            .placements
            .iter()
            .map(|((rule, subject), p)| PlacementRecord {
                rule: rule.clone(),
                subject: subject.clone(),
                placement: p.clone(),
            })
            .collect();
        placements.sort_by(|a, b| (&a.rule, &a.subject).cmp(&(&b.rule, &b.subject)));
        let mut groups: Vec<GroupRecord> = self
            .book
            .groups
            .iter()
            .map(|((rule, segment), g)| GroupRecord {
                rule: rule.clone(),
                segment: segment.clone(),
                group: g.clone(),
            })
            .collect();
        groups.sort_by(|a, b| (&a.rule, &a.segment).cmp(&(&b.rule, &b.segment)));
        let mut overflow: Vec<OverflowRecord> = self
            .book
            .overflow
            .iter()
            .map(|(rule, (alert, members))| OverflowRecord {
                rule: rule.clone(),
                alert: *alert,
                members: members.clone(),
            })
            .collect();
        overflow.sort_by(|a, b| a.rule.cmp(&b.rule));
        let mut buckets: Vec<(RuleId, TokenBucket)> =
            self.book.buckets.iter().map(|(r, b)| (r.clone(), b.clone())).collect();
        buckets.sort_by(|a, b| a.0.cmp(&b.0));
        BookRecord {
            open_alerts: self.book.open.values().cloned().collect(),
            placements,
            groups,
            overflow,
            buckets,
        }
    }

    /// Restore exported state at `now`. Call after `set_rules` (and `set_devices`): state
    /// of rules that no longer exist is dropped and their open alerts are cleared. The
    /// downtime (`now` − the exported clock) is not counted as any device's silence: every
    /// last arrival moves forward by it.
    pub fn restore_state(
        &mut self,
        state: AlertEngineState,
        now: EventTime,
        out: &mut Vec<AlertOutput>,
    ) {
        let downtime = state.clock.map_or(0, |c| now.millis() - c.millis());
        let now = self.advance(state.clock.map_or(now, |c| c.max(now)));
        let index: HashMap<RuleId, u16> =
            self.rules.iter().enumerate().map(|(i, r)| (r.id.clone(), i as u16)).collect();
        let book = &mut self.book;
        book.next_id =
            state.next_alert_id.max(state.open_alerts.iter().map(|a| a.id.0).max().unwrap_or(0));
        book.counters = state.counters;
        let mut orphans = Vec::new();
        for alert in state.open_alerts {
            if !index.contains_key(&alert.key.rule) {
                orphans.push(alert.id);
            }
            book.by_key.insert(alert.key.clone(), alert.id);
            book.open.insert(alert.id, alert);
        }
        for p in state.placements {
            if index.contains_key(&p.rule) {
                book.placements.insert((p.rule, p.subject), p.placement);
            }
        }
        for g in state.groups.into_iter().filter(|g| index.contains_key(&g.rule)) {
            book.groups.insert((g.rule, g.segment), g.group);
        }
        for o in state.overflow.into_iter().filter(|o| index.contains_key(&o.rule)) {
            book.overflow.insert(o.rule, (o.alert, o.members));
        }
        for (rule, bucket) in state.buckets.into_iter().filter(|(r, _)| index.contains_key(r)) {
            book.buckets.insert(rule, bucket);
        }
        for id in orphans {
            book.close(
                id,
                None,
                Some("rule no longer defined".to_owned()),
                AlertMove::Clear,
                now,
                out,
            );
        }
        for record in state.devices {
            let slot = self.devices.entry(record.device.clone()).or_default();
            slot.arrivals = record.arrivals;
            slot.arrivals.shift_by_downtime(downtime);
            slot.evaluators.clear();
            slot.offline.clear();
            for c in record.conditions {
                let Some(&rule) = index.get(&c.rule) else { continue };
                let r = &self.rules[usize::from(rule)];
                if r.kind.metric() == Some(c.metric) && c.state.fits(&r.kind) {
                    slot.metrics_seen |= 1 << (c.metric as u32);
                    slot.evaluators.push(DeviceEvaluator {
                        rule,
                        metric: c.metric,
                        state: c.state,
                    });
                }
            }
            for (rule, state) in record.offline {
                if let Some(&rule) = index
                    .get(&rule)
                    .filter(|&&i| matches!(self.rules[usize::from(i)].kind, RuleKind::Offline(_)))
                {
                    slot.offline.push(OfflineEvaluator { rule, state });
                }
            }
            let dropped =
                sync_slot(slot, &record.device, &self.rules, &self.by_metric, &self.offline_rules);
            for rule in dropped {
                let id = self.rules[usize::from(rule)].id.clone();
                self.book.clear_condition(
                    &id,
                    Subject::Device(record.device.clone()),
                    now,
                    "device left the rule's scope",
                    out,
                );
            }
        }
        for s in state.segments {
            if index.get(&s.rule).is_some_and(|&i| self.rules[usize::from(i)].kind.on_segments()) {
                self.segments.insert((s.rule, s.segment), s.state);
            }
        }
        // Restoring moved every timer by the downtime: save everything again.
        self.full_checkpoint = true;
    }
}

impl AlertEngineState {
    /// The state a sequence of checkpoints saved: the last head, the last book written,
    /// and the last version of every part (parts of a full checkpoint replace all earlier
    /// ones; the caller keeps that rule when storing them). Equal to what `export_state`
    /// returned when the last checkpoint was taken.
    pub fn assemble(
        head: EngineHead,
        book: Option<BookRecord>,
        parts: impl IntoIterator<Item = StatePart>,
    ) -> Self {
        let book = book.unwrap_or_default();
        let mut devices = Vec::new();
        let mut segments = Vec::new();
        for part in parts {
            match part {
                StatePart::Device(d) => devices.push(d),
                StatePart::Segment(s) => {
                    segments.extend(s.states.into_iter().map(|(rule, state)| {
                        SegmentConditionRecord { rule, segment: s.segment.clone(), state }
                    }))
                }
            }
        }
        devices.sort_by(|a, b| a.device.cmp(&b.device));
        segments.sort_by(|a, b| (&a.rule, &a.segment).cmp(&(&b.rule, &b.segment)));
        Self::of(head, book, devices, segments)
    }

    /// The whole state from its head, its book and its per-subject records.
    fn of(
        head: EngineHead,
        book: BookRecord,
        devices: Vec<DeviceRecord>,
        segments: Vec<SegmentConditionRecord>,
    ) -> Self {
        Self {
            next_alert_id: head.next_alert_id,
            clock: head.clock,
            open_alerts: book.open_alerts,
            placements: book.placements,
            groups: book.groups,
            overflow: book.overflow,
            buckets: book.buckets,
            devices,
            segments,
            counters: head.counters,
        }
    }
}

/// One device's record, as exported.
fn device_record(rules: &[Rule], id: &DeviceId, slot: &DeviceSlot) -> DeviceRecord {
    let rule_id = |i: u16| rules[usize::from(i)].id.clone();
    DeviceRecord {
        device: id.clone(),
        arrivals: slot.arrivals.clone(),
        conditions: slot
            .evaluators
            .iter()
            .map(|e| ConditionRecord {
                rule: rule_id(e.rule),
                metric: e.metric,
                state: e.state.clone(),
            })
            .collect(),
        offline: slot.offline.iter().map(|o| (rule_id(o.rule), o.state.clone())).collect(),
    }
}

/// The rules of a slot's evaluators, to tell whether a registry change touched its state.
fn evaluator_rules(slot: &DeviceSlot) -> Vec<u16> {
    slot.evaluators.iter().map(|e| e.rule).chain(slot.offline.iter().map(|o| o.rule)).collect()
}

/// Create the evaluators of `metric_rules` that cover the device and do not exist yet.
fn add_metric_evaluators(
    slot: &mut DeviceSlot,
    id: &DeviceId,
    rules: &[Rule],
    metric_rules: &[u16],
) {
    for &i in metric_rules {
        let rule = &rules[usize::from(i)];
        if !rule.scope.covers_device(id, slot.kind.as_deref(), slot.segment.as_ref())
            || slot.evaluators.iter().any(|e| e.rule == i)
        {
            continue;
        }
        if let (Some(metric), Some(state)) = (rule.kind.metric(), DeviceCondition::new(&rule.kind))
        {
            slot.evaluators.push(DeviceEvaluator { rule: i, metric, state });
        }
    }
}

/// Bring a slot's evaluators in line with the rules and the device's scope: drop those of
/// rules that no longer cover it (returning the raised ones, whose conditions must be
/// cleared) and create the missing ones.
fn sync_slot(
    slot: &mut DeviceSlot,
    id: &DeviceId,
    rules: &[Rule],
    by_metric: &[Vec<u16>],
    offline_rules: &[u16],
) -> Vec<u16> {
    let kind = slot.kind.clone();
    let segment = slot.segment.clone();
    let covers =
        |i: u16| rules[usize::from(i)].scope.covers_device(id, kind.as_deref(), segment.as_ref());
    let mut dropped = Vec::new();
    slot.evaluators.retain(|e| {
        let keep = covers(e.rule);
        if !keep && e.state.is_raised() {
            dropped.push(e.rule);
        }
        keep
    });
    slot.offline.retain(|o| {
        let keep = covers(o.rule);
        if !keep && o.state.raised {
            dropped.push(o.rule);
        }
        keep
    });
    for &m in MetricId::ALL {
        if slot.metrics_seen & (1 << (m as u32)) != 0 {
            add_metric_evaluators(slot, id, rules, &by_metric[m as usize]);
        }
    }
    for &i in offline_rules {
        if covers(i) && !slot.offline.iter().any(|o| o.rule == i) {
            slot.offline.push(OfflineEvaluator { rule: i, state: OfflineState::default() });
        }
    }
    dropped
}
