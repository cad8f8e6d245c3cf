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
//!
//! The engine's parts, one file each under `engine/`:
//! - `evaluate`: the per-device and per-segment evaluators and the inputs that feed them
//!   (readings, statuses, segment windows, the clock);
//! - `book` (lifecycle): the open alerts and their transitions (open, return, resume,
//!   clear), the record of where each raised condition went;
//! - `storm`: storm protection, routing a raise into its own alert, a segment group or the
//!   rule's overflow alert;
//! - `operator`: acknowledgements, clears and shelves;
//! - `suppression`: designed suppression (`suppressed_by`, a device's offline alert);
//! - `message`: the code, parameters and text of each alert;
//! - `checkpoint`: the exported state, incremental checkpoints and restore.
//!
//! [`AlertKey`]: super::AlertKey
//! [`AlertKind::SegmentGroup`]: super::AlertKind::SegmentGroup
//! [`AlertKind::RateLimitOverflow`]: super::AlertKind::RateLimitOverflow

mod book;
mod checkpoint;
mod evaluate;
mod health;
mod message;
mod operator;
mod storm;
mod suppression;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::{DeviceId, EventTime, MetricId, SegmentId};

use super::condition::{LosState, Step};
use super::lifecycle::{Alert, AlertId, AlertTransition};
use super::rule::{Rule, RuleKind, RuleSet};
use super::{RuleId, Subject};
use book::AlertBook;
pub use checkpoint::{
    AlertEngineState, BookRecord, ConditionRecord, DeviceRecord, EngineCheckpoint, EngineHead,
    GroupRecord, OverflowRecord, PlacementRecord, SegmentConditionRecord, SegmentRecord, StatePart,
};
pub use evaluate::DeviceCondition;
use evaluate::{evaluator_rules, sync_slot, DeviceSlot};
pub use storm::{Placement, SegmentGroup};

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
    /// Edges of the reading being evaluated, with the baseline of an anomaly's.
    edges: Vec<(u16, Step, Option<telemetry::baseline::Expected>)>,
    /// Rule index by id.
    rule_index: HashMap<RuleId, u16>,
    /// Segments of the road operations that explain alerts now, with the operation's id
    /// (set with the registry; not checkpointed: the registry is read again at start).
    operations: std::collections::BTreeMap<SegmentId, String>,
    /// The learned baselines the anomaly rules judge against (set by the baseline
    /// refresher; not checkpointed: they are read from the store).
    baselines: std::sync::Arc<telemetry::baseline::Baselines>,
    /// Flag intervals opened or closed by the health rules, until taken
    /// ([`AlertEngine::take_flags`]).
    flags: Vec<super::health::FlagEdge>,
    /// The notes of the health edges of the reading being evaluated, by rule.
    health_notes: Vec<(u16, super::health::HealthNote)>,
    /// Lanes of each segment (from the registry), for the implausible check.
    lanes: HashMap<SegmentId, u32>,
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
            operations: Default::default(),
            baselines: Default::default(),
            flags: Vec::new(),
            health_notes: Vec::new(),
            lanes: HashMap::new(),
        };
        let mut out = Vec::new();
        engine.set_rules(rules, EventTime(0), &mut out);
        engine
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Judge anomaly rules against these baselines from now on.
    pub fn set_baselines(&mut self, baselines: std::sync::Arc<telemetry::baseline::Baselines>) {
        self.baselines = baselines;
    }

    /// The baselines the anomaly rules in force need: (subject kind, metric name).
    pub fn baseline_needs(
        &self,
    ) -> std::collections::BTreeSet<(telemetry::baseline::BaselineOn, &'static str)> {
        self.rules.iter().filter_map(|r| r.kind.baseline()).collect()
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
        self.close_gone_flags(&remap, now);
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
                kind if kind.on_segments() => self.segment_rules.push(i),
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
            slot.health.retain_mut(|e| {
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
            self.close_flag(rule, &profile.id, now);
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

    pub fn open_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.book.open.values()
    }

    pub fn alert(&self, id: AlertId) -> Option<&Alert> {
        self.book.open.get(&id)
    }

    pub fn counters(&self) -> &AlertCounters {
        &self.book.counters
    }
}
