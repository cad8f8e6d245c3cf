//! The evaluators of every (rule, subject) and the inputs that feed them: readings and
//! device statuses per device, segment windows per segment, and the processing clock
//! (offline by silence). Each edge a condition makes goes to the book
//! ([`AlertBook::apply`](super::book::AlertBook::apply)).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::{DeviceId, EventTime, MetricId, Reading, SegmentId};

use super::super::condition::{
    AnomalyState, Arrivals, FlatlineState, MeanLimitState, OfflineState, RateOfChangeState, Step,
    ThresholdState,
};
use super::super::health::{FlagEdge, HealthContext, HealthState, HealthStep};
use super::super::rule::{Rule, RuleKind};
use super::super::Subject;
use super::{AlertEngine, AlertOutput, DeviceProfile, DeviceStatus};
use crate::segment_state::SegmentState;

/// The evaluator state of one (metric rule, device). Thresholds, the most common, sit
/// inline (32 bytes with the tag); the larger states are boxed so they do not set the size
/// of every evaluator. Boxing does not change the serde form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceCondition {
    Threshold(ThresholdState),
    Flatline(Box<FlatlineState>),
    RateOfChange(Box<RateOfChangeState>),
    AirQuality(Box<MeanLimitState>),
    Anomaly(AnomalyState),
}

impl DeviceCondition {
    pub(super) fn new(kind: &RuleKind) -> Option<Self> {
        Some(match kind {
            RuleKind::Threshold(_) => Self::Threshold(ThresholdState::default()),
            RuleKind::Flatline(_) => Self::Flatline(Box::default()),
            RuleKind::RateOfChange(_) => Self::RateOfChange(Box::default()),
            RuleKind::AirQuality(_) => Self::AirQuality(Box::default()),
            RuleKind::Anomaly(_) => Self::Anomaly(AnomalyState::default()),
            RuleKind::Offline(_)
            | RuleKind::Los(_)
            | RuleKind::SegmentThreshold(_)
            | RuleKind::SegmentAnomaly(_)
            | RuleKind::Health(_) => return None,
        })
    }

    pub(super) fn fits(&self, kind: &RuleKind) -> bool {
        matches!(
            (self, kind),
            (Self::Threshold(_), RuleKind::Threshold(_))
                | (Self::Flatline(_), RuleKind::Flatline(_))
                | (Self::RateOfChange(_), RuleKind::RateOfChange(_))
                | (Self::AirQuality(_), RuleKind::AirQuality(_))
                | (Self::Anomaly(_), RuleKind::Anomaly(_))
        )
    }

    pub(super) fn on_sample(&mut self, kind: &RuleKind, t: EventTime, v: f64) -> Step {
        match (self, kind) {
            (Self::Threshold(s), RuleKind::Threshold(r)) => s.on_sample(r, t, v),
            (Self::Flatline(s), RuleKind::Flatline(r)) => s.on_sample(r, t, v),
            (Self::RateOfChange(s), RuleKind::RateOfChange(r)) => s.on_sample(r, t, v),
            (Self::AirQuality(s), RuleKind::AirQuality(r)) => s.on_sample(r, t, v),
            _ => Step::Quiet,
        }
    }

    pub(super) fn is_raised(&self) -> bool {
        match self {
            Self::Threshold(s) => s.is_raised(),
            Self::Flatline(s) => s.is_raised(),
            Self::RateOfChange(s) => s.is_raised(),
            Self::AirQuality(s) => s.is_raised(),
            Self::Anomaly(s) => s.is_raised(),
        }
    }
}

#[derive(Debug)]
pub(super) struct DeviceEvaluator {
    pub(super) rule: u16,
    pub(super) metric: MetricId,
    pub(super) state: DeviceCondition,
}

#[derive(Debug)]
pub(super) struct OfflineEvaluator {
    pub(super) rule: u16,
    pub(super) state: OfflineState,
}

/// The state of one (health rule, device).
#[derive(Debug)]
pub(super) struct HealthEvaluator {
    pub(super) rule: u16,
    pub(super) state: HealthState,
}

#[derive(Debug, Default)]
pub(super) struct DeviceSlot {
    /// Changed since the last checkpoint.
    pub(super) dirty: bool,
    pub(super) kind: Option<String>,
    pub(super) segment: Option<SegmentId>,
    pub(super) interval: Option<Duration>,
    pub(super) arrivals: Arrivals,
    /// Bit `metric as u32`: the device has sent this metric, its evaluators exist.
    pub(super) metrics_seen: u32,
    pub(super) evaluators: Vec<DeviceEvaluator>,
    pub(super) offline: Vec<OfflineEvaluator>,
    /// Detector-health evaluators (every health rule covering the device).
    pub(super) health: Vec<HealthEvaluator>,
}

impl AlertEngine {
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
        self.health_notes.clear();
        slot.dirty = true;
        slot.arrivals.record(now);
        for o in &mut slot.offline {
            if o.state.raised {
                o.state.raised = false;
                self.edges.push((o.rule, Step::Clear { value: 0.0 }, None));
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
            let kind = &self.rules[usize::from(e.rule)].kind;
            let mut expected = None;
            let step = match (&mut e.state, kind) {
                (DeviceCondition::Anomaly(s), RuleKind::Anomaly(a)) => {
                    expected = self.baselines.expected(
                        telemetry::baseline::BaselineOn::Device,
                        r.device.as_str(),
                        a.metric.as_str(),
                        r.time,
                    );
                    s.on_sample(&a.deviation, expected, r.time, r.value)
                }
                (state, kind) => state.on_sample(kind, r.time, r.value),
            };
            match step {
                Step::Quiet => {}
                Step::Stale => self.book.counters.stale_samples += 1,
                step => self.edges.push((e.rule, step, expected)),
            }
        }
        if !slot.health.is_empty() {
            let cx = HealthContext {
                device: r.device.as_str(),
                interval_ms: slot
                    .interval
                    .map(super::super::condition::millis)
                    .or_else(|| slot.arrivals.learned_interval_ms()),
                lanes: slot.segment.as_ref().and_then(|s| self.lanes.get(s)).copied().unwrap_or(1),
                baselines: &self.baselines,
            };
            for h in &mut slot.health {
                let rule = &self.rules[usize::from(h.rule)];
                let RuleKind::Health(health) = &rule.kind else { continue };
                if let Some(hs) = h.state.on_reading(health, r, now, &cx) {
                    health_edge(
                        (h.rule, rule, health.flag(), &r.device),
                        hs,
                        &mut self.book.counters.stale_samples,
                        &mut self.flags,
                        &mut self.health_notes,
                        &mut self.edges,
                    );
                }
            }
        }
        if self.edges.is_empty() {
            return;
        }
        let segment = slot.segment.clone();
        let start = out.len();
        for &(rule, step, expected) in &self.edges {
            self.book.expected = expected;
            self.book.health = self.health_notes.iter().find(|n| n.0 == rule).map(|n| n.1);
            self.book.apply(
                &self.rules[usize::from(rule)],
                Subject::Device(r.device.clone()),
                segment.as_ref(),
                step,
                now,
                out,
            );
        }
        self.book.expected = None;
        self.book.health = None;
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
                RuleKind::SegmentAnomaly(a) => {
                    let middle = EventTime(state.start.millis() / 2 + state.end.millis() / 2);
                    let expected = self.baselines.expected(
                        telemetry::baseline::BaselineOn::Segment,
                        state.segment.as_str(),
                        a.figure.as_str(),
                        middle,
                    );
                    self.book.expected = expected;
                    condition.on_deviation(a, expected, state)
                }
                _ => continue,
            };
            if step == Step::Stale {
                self.book.counters.stale_samples += 1;
            }
            self.book.apply(rule, Subject::Segment(state.segment.clone()), None, step, now, out);
            self.book.expected = None;
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
        self.tick_health(now, out);
        // Every second: also catches suppressors an operator closed since.
        self.resuppress(start, now, out);
    }
}

/// The rules of a slot's evaluators, to tell whether a registry change touched its state.
pub(super) fn evaluator_rules(slot: &DeviceSlot) -> Vec<u16> {
    slot.evaluators
        .iter()
        .map(|e| e.rule)
        .chain(slot.offline.iter().map(|o| o.rule))
        .chain(slot.health.iter().map(|h| h.rule))
        .collect()
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
            // One at a time: a device has a handful, doubling would waste up to half.
            slot.evaluators.reserve_exact(1);
            slot.evaluators.push(DeviceEvaluator { rule: i, metric, state });
        }
    }
}

/// Bring a slot's evaluators in line with the rules and the device's scope: drop those of
/// rules that no longer cover it (returning the raised ones, whose conditions must be
/// cleared) and create the missing ones.
pub(super) fn sync_slot(
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
    slot.health.retain(|h| {
        let keep = covers(h.rule);
        if !keep && h.state.is_raised() {
            dropped.push(h.rule);
        }
        keep
    });
    for (i, rule) in rules.iter().enumerate() {
        let i = i as u16;
        if let RuleKind::Health(h) = &rule.kind {
            if covers(i) && !slot.health.iter().any(|e| e.rule == i) {
                slot.health.reserve_exact(1);
                slot.health.push(HealthEvaluator { rule: i, state: HealthState::new(h) });
            }
        }
    }
    for &i in offline_rules {
        if covers(i) && !slot.offline.iter().any(|o| o.rule == i) {
            slot.offline.reserve_exact(1);
            slot.offline.push(OfflineEvaluator { rule: i, state: OfflineState::default() });
        }
    }
    dropped
}

/// Record a health evaluation: a stale sample counted, a raise or clear queued as an edge
/// (with its note for the message) and as a flag interval opening or closing.
pub(super) fn health_edge(
    (index, rule, flag, device): (u16, &Rule, telemetry::health::HealthFlag, &DeviceId),
    hs: HealthStep,
    stale: &mut u64,
    flags: &mut Vec<FlagEdge>,
    notes: &mut Vec<(u16, super::super::health::HealthNote)>,
    edges: &mut Vec<(u16, Step, Option<telemetry::baseline::Expected>)>,
) {
    match hs.step {
        Step::Quiet => return,
        Step::Stale => {
            *stale += 1;
            return;
        }
        Step::Raise { since, .. } => flags.push(FlagEdge::Open {
            device: device.clone(),
            rule: rule.id.clone(),
            flag,
            since,
        }),
        Step::Clear { .. } => flags.push(FlagEdge::Close {
            device: device.clone(),
            rule: rule.id.clone(),
            flag,
            at: hs.at,
        }),
    }
    notes.push((index, hs.note));
    edges.push((index, hs.step, None));
}
