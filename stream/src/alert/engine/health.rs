//! The engine's side of detector health: the processing clock for `missing`, the lanes
//! the implausible check divides flow by, and the flag intervals handed to the caller.

use std::collections::HashMap;

use telemetry::{DeviceId, EventTime, SegmentId};

use super::super::condition::millis;
use super::super::health::{FlagEdge, HealthContext};
use super::super::rule::RuleKind;
use super::super::Subject;
use super::evaluate::health_edge;
use super::{AlertEngine, AlertOutput};

impl AlertEngine {
    /// The lanes of each road segment: the implausible check judges flow per lane of the
    /// device's segment (1 when unknown).
    pub fn set_lanes(&mut self, lanes: HashMap<SegmentId, u32>) {
        self.lanes = lanes;
    }

    /// The flag intervals opened or closed since the last call, in order.
    pub fn take_flags(&mut self) -> Vec<FlagEdge> {
        std::mem::take(&mut self.flags)
    }

    /// Evaluate the `missing` checks at `now` (from [`AlertEngine::tick`]).
    pub(super) fn tick_health(&mut self, now: EventTime, out: &mut Vec<AlertOutput>) {
        let mut edges = Vec::new();
        let mut notes = Vec::new();
        let mut steps: Vec<(DeviceId, Option<SegmentId>, usize, usize)> = Vec::new();
        for (id, slot) in &mut self.devices {
            if slot.health.is_empty() {
                continue;
            }
            let cx = HealthContext {
                device: id.as_str(),
                interval_ms: slot
                    .interval
                    .map(millis)
                    .or_else(|| slot.arrivals.learned_interval_ms()),
                lanes: 1,
                baselines: &self.baselines,
            };
            for h in &mut slot.health {
                let rule = &self.rules[usize::from(h.rule)];
                let RuleKind::Health(health) = &rule.kind else { continue };
                let Some(hs) = h.state.on_tick(health, now, &cx) else { continue };
                let before = edges.len();
                health_edge(
                    (h.rule, rule, health.flag(), id),
                    hs,
                    &mut self.book.counters.stale_samples,
                    &mut self.flags,
                    &mut notes,
                    &mut edges,
                );
                if edges.len() > before {
                    slot.dirty = true;
                    steps.push((
                        id.clone(),
                        slot.segment.clone(),
                        edges.len() - 1,
                        notes.len() - 1,
                    ));
                }
            }
        }
        steps.sort_by(|a, b| (&a.0, edges[a.2].0).cmp(&(&b.0, edges[b.2].0)));
        for (device, segment, e, n) in steps {
            let (rule, step, _) = edges[e];
            self.book.health = Some(notes[n].1);
            self.book.apply(
                &self.rules[usize::from(rule)],
                Subject::Device(device),
                segment.as_ref(),
                step,
                now,
                out,
            );
        }
        self.book.health = None;
    }

    /// Close the flag of a raised health evaluator dropped at `now` (its rule no longer
    /// covers the device).
    pub(super) fn close_flag(&mut self, rule: u16, device: &DeviceId, now: EventTime) {
        let r = &self.rules[usize::from(rule)];
        if let RuleKind::Health(h) = &r.kind {
            self.flags.push(FlagEdge::Close {
                device: device.clone(),
                rule: r.id.clone(),
                flag: h.flag(),
                at: now,
            });
        }
    }

    /// Before a rule change: close the flags of raised health evaluators whose rule goes
    /// (`remap[i]` is `None`).
    pub(super) fn close_gone_flags(&mut self, remap: &[Option<u16>], now: EventTime) {
        for (id, slot) in &self.devices {
            for h in &slot.health {
                if remap.get(usize::from(h.rule)).copied().flatten().is_none()
                    && h.state.is_raised()
                {
                    let r = &self.rules[usize::from(h.rule)];
                    if let RuleKind::Health(health) = &r.kind {
                        self.flags.push(FlagEdge::Close {
                            device: id.clone(),
                            rule: r.id.clone(),
                            flag: health.flag(),
                            at: now,
                        });
                    }
                }
            }
        }
    }
}
