//! Restart: exported state, downtime, rule changes.

use super::storm::FAULT_EVERYWHERE;
use super::*;

#[test]
fn exported_state_restores_open_alerts_and_running_timers() {
    let set = rules(NO2_HIGH);
    let mut e = AlertEngine::new(set.clone());
    let mut out = Vec::new();
    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 0, 250.0), t(0), &mut out);
    e.on_reading(&reading("aq-2", MetricId::No2Ugm3, 0, 250.0), t(0), &mut out);
    e.on_reading(&reading("aq-2", MetricId::No2Ugm3, 60, 250.0), t(60), &mut out);
    assert_eq!(out.len(), 1);
    let json = serde_json::to_string(&e.export_state()).unwrap();
    let mut restored = AlertEngine::new(set);
    out.clear();
    restored.restore_state(serde_json::from_str(&json).unwrap(), t(100), &mut out);
    assert!(out.is_empty());
    assert_eq!(restored.open_alerts().count(), 1);
    // aq-1's run started at 0 before the restart: it raises at 60 s of event time.
    restored.on_reading(&reading("aq-1", MetricId::No2Ugm3, 60, 250.0), t(101), &mut out);
    assert_eq!(out[0].alert().since, t(0));
    assert!(out[0].alert().id.0 > 1, "ids continue");
    // And aq-2's alert still clears.
    out.clear();
    restored.on_reading(&reading("aq-2", MetricId::No2Ugm3, 120, 10.0), t(102), &mut out);
    assert_eq!(transitions(&out)[0].2, AlertState::Returned);
    assert_eq!(restored.export_state().open_alerts.len(), 2, "aq-1's, and aq-2's returned");
}

#[test]
fn downtime_does_not_count_as_silence() {
    let set = rules("air_quality_defaults = false\n[[rules]]\nid = \"offline\"\nseverity = \"critical\"\noffline = { interval = \"10s\", silence_factor = 3.0, min_silence = \"10s\" }\n");
    let mut e = AlertEngine::new(set.clone());
    let mut out = Vec::new();
    e.on_reading(&reading("loop-1", MetricId::SpeedKmh, 0, 40.0), t(0), &mut out);
    e.tick(t(20), &mut out);
    let state = e.export_state();
    let mut restored = AlertEngine::new(set);
    // Down for an hour: 20 s of silence before the restart still count, the hour does not.
    restored.restore_state(state, t(3_620), &mut out);
    restored.tick(t(3_630), &mut out);
    assert!(out.is_empty());
    restored.tick(t(3_631), &mut out);
    assert_eq!(out[0].alert().since, t(3_600));
}

#[test]
fn changing_a_rule_clears_its_alerts_and_keeps_the_others() {
    let mut e = AlertEngine::new(rules(FAULT_EVERYWHERE));
    let mut out = Vec::new();
    e.on_reading(&reading("tl-1", MetricId::Fault, 0, 1.0), t(0), &mut out);
    out.clear();
    e.set_rules(rules(&FAULT_EVERYWHERE.replace("above = 0.5", "above = 0.7")), t(5), &mut out);
    let [AlertOutput::Transition { transition, .. }] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!(transition.note.as_deref(), Some("rule changed or removed"));
    assert_eq!(e.open_alerts().count(), 0);
}
