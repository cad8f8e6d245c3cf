//! What survives a restart: the exported state ([`AlertEngineState`]), incremental
//! checkpoints (a head, the book when it changed, and one [`StatePart`] per device or
//! segment changed since the previous one), assembling saved parts, and restoring.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use telemetry::{DeviceId, EventTime, MetricId, SegmentId};

use super::super::condition::{Arrivals, LosState, OfflineState};
use super::super::lifecycle::{Alert, AlertId, AlertMove};
use super::super::rule::{Rule, RuleKind};
use super::super::storm::TokenBucket;
use super::super::{RuleId, Subject};
use super::evaluate::{sync_slot, DeviceEvaluator, DeviceSlot, OfflineEvaluator};
use super::{AlertCounters, AlertEngine, AlertOutput, DeviceCondition, Placement, SegmentGroup};

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
    /// Detector-health evaluators (absent in checkpoints written before them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<(RuleId, crate::alert::health::HealthState)>,
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

impl AlertEngine {
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
            slot.health.clear();
            for (rule, state) in record.health {
                if let Some(&i) = index.get(&rule) {
                    if let RuleKind::Health(h) = &self.rules[usize::from(i)].kind {
                        if state.fits(h) {
                            slot.health.push(super::evaluate::HealthEvaluator { rule: i, state });
                        }
                    }
                }
            }
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
            slot.evaluators.shrink_to_fit();
            slot.offline.shrink_to_fit();
            for rule in dropped {
                let id = self.rules[usize::from(rule)].id.clone();
                self.close_flag(rule, &record.device, now);
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
        health: slot.health.iter().map(|h| (rule_id(h.rule), h.state.clone())).collect(),
    }
}
