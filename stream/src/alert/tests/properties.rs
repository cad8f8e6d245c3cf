//! Property tests on explicit time: disorder, duplicates, gaps, clock skew and operator
//! actions never break the engine's invariants, and a restore continues exactly.

use super::*;

/// One input to the engine.
#[derive(Debug, Clone)]
pub(super) enum Op {
    /// (device, event-time offset, value); arrives at the current processing clock.
    Reading(usize, i64, f64),
    Tick,
    LastWill(usize),
    Ack(usize),
    Clear(usize),
    /// Advance the processing clock.
    Wait(i64),
}

pub(super) fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        8 => (0usize..6, -120i64..60, prop_oneof![Just(0.0), Just(1.0), Just(150.0), Just(250.0), 0.0f64..300.0]).prop_map(|(d, skew, v)| Op::Reading(d, skew, v)),
        1 => Just(Op::Tick),
        1 => (0usize..6).prop_map(Op::LastWill),
        1 => (0usize..8).prop_map(Op::Ack),
        1 => (0usize..8).prop_map(Op::Clear),
        3 => (0i64..40).prop_map(Op::Wait),
    ];
    prop::collection::vec(op, 1..250)
}

pub(super) const MIXED: &str = r#"
air_quality_defaults = false
[storm]
raises_per_minute = 2
group_over_devices = 2
group_window = "1m"
[[rules]]
id = "no2-high"
severity = "warning"
threshold = { metric = "no2_ugm3", above = 200.0, clear = 180.0, for = "30s" }
[[rules]]
id = "offline"
severity = "critical"
offline = { interval = "10s", silence_factor = 3.0, min_silence = "10s" }
[[rules]]
id = "stuck"
severity = "info"
flatline = { metric = "no2_ugm3", readings = 3 }
[[rules]]
id = "jumpy"
severity = "info"
rate_of_change = { metric = "no2_ugm3", max_per_minute = 300.0 }
"#;

/// Runs ops; the device clocks are the processing clock plus a per-op skew (so readings
/// arrive out of order, duplicated when skew repeats, and from clocks ahead or behind).
pub(super) fn drive(e: &mut AlertEngine, ops: &[Op], clock: &mut i64, out: &mut Vec<AlertOutput>) {
    for op in ops {
        match op {
            Op::Reading(d, skew, v) => {
                let r = reading(&format!("aq-{d}"), MetricId::No2Ugm3, *clock + skew, *v);
                e.on_reading(&r, t(*clock), out);
            }
            Op::Tick => e.tick(t(*clock), out),
            Op::LastWill(d) => {
                e.on_status(&dev(&format!("aq-{d}")), DeviceStatus::Offline, t(*clock), out)
            }
            Op::Ack(k) | Op::Clear(k) => {
                let open: Vec<AlertId> = e.open_alerts().map(|a| a.id).collect();
                if let Some(&id) = open.get(*k % open.len().max(1)) {
                    let result = if matches!(op, Op::Ack(_)) {
                        e.acknowledge(id, "op", None, t(*clock))
                    } else {
                        e.clear(id, "op", None, t(*clock))
                    };
                    if let Ok(o) = result {
                        out.push(o);
                    }
                }
            }
            Op::Wait(s) => *clock += s,
        }
    }
}

pub(super) fn engine_with_segments() -> AlertEngine {
    let mut e = AlertEngine::new(rules(MIXED));
    let mut out = Vec::new();
    // Devices 0..4 on one segment, 4 and 5 unlinked.
    let profiles = (0..6).map(|i| DeviceProfile {
        id: dev(&format!("aq-{i}")),
        kind: None,
        segment: (i < 4).then(|| seg("viale-a")),
        interval: None,
    });
    e.set_devices(profiles, t(0), &mut out);
    e
}

proptest! {
    /// Whatever the input order, duplicates, gaps, skew and operator actions: never two open
    /// alerts per key; each alert's transitions run raise → (ack) → clear, with nothing
    /// after the clear; no more new alerts per rule in any minute than the bucket allows
    /// (burst + refill), plus the one overflow alert.
    #[test]
    fn engine_invariants_hold_under_disorder(ops in arb_ops()) {
        let mut e = engine_with_segments();
        let mut out = Vec::new();
        let mut clock = 0;
        drive(&mut e, &ops, &mut clock, &mut out);
        let mut history: BTreeMap<AlertId, Vec<(Option<AlertState>, AlertState)>> = BTreeMap::new();
        let mut open_keys: HashMap<AlertKey, AlertId> = HashMap::new();
        let mut raises: BTreeMap<(RuleId, bool), Vec<i64>> = BTreeMap::new();
        for o in &out {
            let AlertOutput::Transition { alert, transition } = o else { continue };
            let h = history.entry(alert.id).or_default();
            match (h.last().map(|x| x.1), transition.from, transition.to) {
                (None, None, AlertState::Raised) => {
                    prop_assert!(open_keys.insert(alert.key.clone(), alert.id).is_none(), "two open alerts for {}", alert.key);
                    raises.entry((alert.key.rule.clone(), alert.kind == AlertKind::RateLimitOverflow)).or_default().push(transition.at.millis());
                }
                (Some(AlertState::Raised), Some(AlertState::Raised), AlertState::Acknowledged) => {}
                (Some(AlertState::Raised), Some(AlertState::Raised), AlertState::Returned) => {}
                (Some(AlertState::Returned), Some(AlertState::Returned), AlertState::Raised) => {}
                (Some(prev), Some(from), to) if prev == from && from == to && transition.action.is_some_and(|m| m.is_overlay()) => {}
                (Some(prev @ (AlertState::Raised | AlertState::Acknowledged | AlertState::Returned)), Some(from), AlertState::Cleared) if prev == from => {
                    open_keys.remove(&alert.key);
                }
                other => prop_assert!(false, "illegal sequence for {}: {:?}", alert.id, other),
            }
            h.push((transition.from, transition.to));
        }
        let engine_open: Vec<AlertKey> = e.open_alerts().map(|a| a.key.clone()).collect();
        prop_assert_eq!(engine_open.len(), open_keys.len());
        for ((_, overflow), times) in &raises {
            if *overflow {
                continue;
            }
            for (i, from) in times.iter().enumerate() {
                let within = times[i..].iter().take_while(|to| **to - from < 60_000).count();
                // burst 2 + refill 2/min over < 1 min
                prop_assert!(within <= 4, "{} raises within a minute", within);
            }
        }
    }

    /// Exporting, serialising and restoring mid-stream changes nothing that follows.
    #[test]
    fn restore_continues_exactly(ops in arb_ops(), split in 0usize..250) {
        let split = split.min(ops.len());
        let (mut whole, mut first) = (engine_with_segments(), engine_with_segments());
        let (mut out_whole, mut out_first) = (Vec::new(), Vec::new());
        let (mut c1, mut c2) = (0, 0);
        drive(&mut whole, &ops, &mut c1, &mut out_whole);
        drive(&mut first, &ops[..split], &mut c2, &mut out_first);
        let state = first.export_state();
        let json = serde_json::to_string(&state).unwrap();
        let mut second = engine_with_segments();
        let mut out_second = Vec::new();
        // Restored at the engine's own clock: no downtime, so silence timers are unchanged.
        second.restore_state(serde_json::from_str(&json).unwrap(), state.clock.unwrap_or(t(0)), &mut out_second);
        prop_assert!(out_second.is_empty());
        drive(&mut second, &ops[split..], &mut c2, &mut out_second);
        out_first.extend(out_second);
        prop_assert_eq!(out_first, out_whole);
    }
}
