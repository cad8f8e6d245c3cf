//! Rule validation and the engine: lifecycle, storm protection, restart, and property
//! tests on explicit time with disorder, duplicates, gaps and clock skew.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use telemetry::{DeviceId, EventTime, MetricId, Reading, SegmentId};

use super::*;
use crate::los::LevelOfService;
use crate::segment_state::SegmentState;

const T0: i64 = 1_763_892_000_000;

fn t(s: i64) -> EventTime {
    EventTime(T0 + s * 1_000)
}

fn dev(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

fn seg(s: &str) -> SegmentId {
    SegmentId::parse(s).unwrap()
}

fn rules(toml_text: &str) -> RuleSet {
    let config: AlertRulesConfig = toml::from_str(toml_text).unwrap();
    config.validate().unwrap()
}

fn reading(d: &str, metric: MetricId, ts: i64, v: f64) -> Reading {
    Reading { device: dev(d), metric, time: t(ts), value: v, seq: None }
}

const NO2_HIGH: &str = r#"
air_quality_defaults = false
[[rules]]
id = "no2-high"
severity = "warning"
[rules.threshold]
metric = "no2_ugm3"
above = 200.0
clear = 180.0
for = "1m"
"#;

fn transitions(out: &[AlertOutput]) -> Vec<(AlertId, Option<AlertState>, AlertState)> {
    out.iter()
        .filter_map(|o| match o {
            AlertOutput::Transition { transition: tr, .. } => Some((tr.alert, tr.from, tr.to)),
            AlertOutput::Updated { .. } => None,
        })
        .collect()
}

// ---- rules ----

#[test]
fn a_rules_file_parses_with_every_kind_and_humantime_durations() {
    let set = rules(
        r#"
[storm]
raises_per_minute = 5
group_over_devices = 2
group_window = "30s"

[[rules]]
id = "no2-high"
severity = "warning"
scope = { kind = "air_quality" }
threshold = { metric = "no2_ugm3", above = 200.0, clear = 180.0, for = "10m" }

[[rules]]
id = "offline"
severity = "critical"
offline = { silence_factor = 3.0, min_silence = "2m" }

[[rules]]
id = "stuck-temp"
severity = "info"
flatline = { metric = "temperature_c", epsilon = 0.01, for = "2h", readings = 10 }

[[rules]]
id = "speed-jump"
severity = "info"
scope = { devices = ["loop-1", "loop-2"] }
rate_of_change = { metric = "speed_kmh", max_per_minute = 40.0 }

[[rules]]
id = "congested"
severity = "warning"
scope = { segments = ["viale-a"] }
los = { at_or_worse = "E", for = "5m" }
"#,
    );
    assert_eq!(set.storm.group_window, Duration::from_secs(30));
    let ids: Vec<&str> = set.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "no2-high",
            "offline",
            "stuck-temp",
            "speed-jump",
            "congested",
            "aq-no2-hourly",
            "aq-pm10-daily",
            "aq-pm25-daily",
            "aq-o3-information",
            "aq-o3-8h-target"
        ]
    );
    assert!(
        matches!(&set.rules[0].kind, rule::RuleKind::Threshold(t) if t.hold == Duration::from_secs(600) && t.clear == 180.0)
    );
    assert_eq!(set.rules[0].raises_per_minute, 5);
}

#[test]
fn validation_reports_every_error_with_its_key_path() {
    let config: AlertRulesConfig = toml::from_str(
        r#"
air_quality_defaults = false
[storm]
raises_per_minute = 0
[[rules]]
id = "Bad Id"
severity = "info"
threshold = { metric = "no2", above = 1.0 }
[[rules]]
id = "both"
severity = "info"
threshold = { metric = "no2_ugm3", above = 1.0 }
offline = {}
[[rules]]
id = "hyst"
severity = "info"
threshold = { metric = "no2_ugm3", above = 200.0, clear = 210.0 }
[[rules]]
id = "hyst"
severity = "info"
scope = { devices = ["ok", "NOT OK"] }
los = { at_or_worse = "D" }
[[rules]]
id = "none"
severity = "info"
"#,
    )
    .unwrap();
    let errors = config.validate().unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "storm.raises_per_minute",
            "rules[0].id",
            "rules[0].threshold.metric",
            "rules[1]",
            "rules[2].threshold.clear",
            "rules[3].id",
            "rules[3].scope.devices[1]",
            "rules[4]",
        ],
        "{errors}"
    );
    assert!(
        errors
            .to_string()
            .contains("rules[2].threshold.clear: 210 must be at or below above (200)"),
        "{errors}"
    );
}

#[test]
fn unknown_keys_are_refused() {
    let err = toml::from_str::<AlertRulesConfig>("[[rules]]\nid = \"x\"\nseverity = \"info\"\nthreshold = { metric = \"no2_ugm3\", abov = 1.0 }\n").unwrap_err();
    assert!(err.to_string().contains("abov"), "{err}");
}

#[test]
fn shipped_air_quality_defaults_and_overrides() {
    let set = RuleSet::default();
    assert_eq!(set.rules.len(), 5);
    let no2 = set.rules.iter().find(|r| r.id.as_str() == "aq-no2-hourly").unwrap();
    assert!(
        matches!(&no2.kind, rule::RuleKind::AirQuality(a) if a.limit == 200.0 && a.averaging == Duration::from_secs(3_600))
    );
    let pm25 = AirQualityLimit::default_for(MetricId::Pm25Ugm3).unwrap();
    assert_eq!((pm25.limit, pm25.averaging), (15.0, Duration::from_secs(86_400)));
    // Reusing a shipped id replaces it; a default limit fills in.
    let set = rules("[[rules]]\nid = \"aq-pm10-daily\"\nseverity = \"critical\"\nair_quality = { metric = \"pm10_ugm3\" }\n");
    assert_eq!(set.rules.len(), 5);
    assert_eq!(set.rules[0].severity, Severity::Critical);
    assert!(matches!(&set.rules[0].kind, rule::RuleKind::AirQuality(a) if a.limit == 50.0));
    // The config round-trips through serde.
    let config = AlertRulesConfig {
        rules: AlertRulesConfig::default().effective_definitions(),
        ..AlertRulesConfig::default()
    };
    let text = toml::to_string(&config).unwrap();
    assert_eq!(toml::from_str::<AlertRulesConfig>(&text).unwrap(), config);
}

// ---- lifecycle ----

#[test]
fn raise_acknowledge_and_auto_clear_each_leave_a_transition() {
    let mut e = AlertEngine::new(rules(NO2_HIGH));
    let mut out = Vec::new();
    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 0, 250.0), t(1), &mut out);
    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 60, 250.0), t(61), &mut out);
    let [AlertOutput::Transition { alert, transition }] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!(
        (alert.state, alert.since, alert.raised_at, alert.value),
        (AlertState::Raised, t(0), t(61), 250.0)
    );
    assert_eq!(
        alert.key,
        AlertKey {
            rule: RuleId::parse("no2-high").unwrap(),
            subject: Subject::Device(dev("aq-1"))
        }
    );
    assert_eq!(transition.from, None);
    let id = alert.id;
    let ack = e.acknowledge(id, "marta", Some("crew sent".into()), t(70)).unwrap();
    let AlertOutput::Transition { transition, .. } = &ack else { panic!() };
    assert_eq!(
        (transition.from, transition.to, transition.by.as_deref(), transition.note.as_deref()),
        (Some(AlertState::Raised), AlertState::Acknowledged, Some("marta"), Some("crew sent"))
    );
    assert_eq!(
        e.acknowledge(id, "marta", None, t(71)),
        Err(LifecycleError::Refused { id, source: TransitionError::AlreadyAcknowledged })
    );
    out.clear();
    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 120, 190.0), t(121), &mut out);
    assert!(out.is_empty(), "190 is above the clear level");
    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 180, 170.0), t(181), &mut out);
    assert_eq!(transitions(&out), [(id, Some(AlertState::Acknowledged), AlertState::Cleared)]);
    assert_eq!(
        e.acknowledge(id, "marta", None, t(200)),
        Err(LifecycleError::Refused { id, source: TransitionError::AlreadyCleared })
    );
    assert_eq!(
        e.clear(AlertId(999), "marta", None, t(200)),
        Err(LifecycleError::Unknown(AlertId(999)))
    );
    assert_eq!(e.clear(id, " ", None, t(200)), Err(LifecycleError::NoOperator));
    assert_eq!(e.open_alerts().count(), 0);
}

#[test]
fn a_manual_clear_holds_until_the_condition_ends_and_recurs() {
    let mut e = AlertEngine::new(rules(NO2_HIGH));
    let mut out = Vec::new();
    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 0, 250.0), t(0), &mut out);
    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 60, 250.0), t(60), &mut out);
    let id = out[0].alert().id;
    let cleared = e.clear(id, "marta", Some("known roadworks".into()), t(61)).unwrap();
    assert!(matches!(
        cleared,
        AlertOutput::Transition {
            transition: AlertTransition { to: AlertState::Cleared, by: Some(_), .. },
            ..
        }
    ));
    out.clear();
    for s in 2..10 {
        e.on_reading(&reading("aq-1", MetricId::No2Ugm3, s * 60, 250.0), t(s * 60), &mut out);
    }
    assert!(out.is_empty(), "still holding: no new alert");
    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 600, 100.0), t(600), &mut out);
    assert!(out.is_empty(), "the end of the condition clears nothing: the alert is gone");
    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 660, 250.0), t(660), &mut out);
    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 720, 250.0), t(720), &mut out);
    assert_eq!(transitions(&out).len(), 1);
    assert_ne!(out[0].alert().id, id);
}

#[test]
fn offline_by_last_will_and_by_silence_on_the_processing_clock() {
    let mut e = AlertEngine::new(rules("air_quality_defaults = false\n[[rules]]\nid = \"offline\"\nseverity = \"critical\"\noffline = { silence_factor = 2.0, interval = \"30s\", min_silence = \"10s\" }\n"));
    let mut out = Vec::new();
    // The device clock is an hour behind: offline does not care.
    e.on_reading(&reading("loop-1", MetricId::SpeedKmh, -3_600, 40.0), t(0), &mut out);
    e.tick(t(60), &mut out);
    assert!(out.is_empty());
    e.tick(t(61), &mut out);
    assert_eq!(transitions(&out).len(), 1);
    assert_eq!(out[0].alert().since, t(0));
    let first = out[0].alert().id;
    out.clear();
    e.on_reading(&reading("loop-1", MetricId::SpeedKmh, -3_500, 40.0), t(70), &mut out);
    assert_eq!(transitions(&out)[0].2, AlertState::Returned, "unacknowledged: returned");
    out.clear();
    // Offline again before anyone acknowledged: the same alert is raised again.
    e.on_status(&dev("loop-1"), DeviceStatus::Offline, t(80), &mut out);
    assert_eq!(transitions(&out), vec![(first, Some(AlertState::Returned), AlertState::Raised)]);
    assert_eq!(out[0].alert().id, first);
    out.clear();
    e.tick(t(500), &mut out);
    assert!(out.is_empty(), "already open: no duplicate");
    e.on_status(&dev("loop-1"), DeviceStatus::Online, t(501), &mut out);
    assert_eq!(transitions(&out)[0].2, AlertState::Returned);
}

#[test]
fn los_rule_raises_on_segment_states() {
    let mut e = AlertEngine::new(rules("air_quality_defaults = false\n[[rules]]\nid = \"jam\"\nseverity = \"warning\"\nlos = { at_or_worse = \"E\", for = \"2m\" }\n"));
    let mut out = Vec::new();
    let state = |m: i64, los| SegmentState {
        segment: seg("viale-a"),
        start: t(m * 60),
        end: t(m * 60 + 60),
        flow_vph: Some(900.0),
        speed_kmh: Some(12.0),
        occupancy_pct: Some(40.0),
        los: Some(los),
        detectors: 2,
        revision: 0,
    };
    e.on_segment_state(&state(0, LevelOfService::E), t(65), &mut out);
    assert!(out.is_empty());
    e.on_segment_state(&state(1, LevelOfService::F), t(125), &mut out);
    assert_eq!(out[0].alert().key.subject, Subject::Segment(seg("viale-a")));
    e.on_segment_state(&state(2, LevelOfService::C), t(185), &mut out);
    assert_eq!(
        transitions(&out).iter().map(|t| t.2).collect::<Vec<_>>(),
        [AlertState::Raised, AlertState::Returned]
    );
    let alert = out.last().unwrap().alert();
    assert_eq!((alert.active, alert.returned_at), (false, Some(t(185))));
    assert_eq!(alert.code, MessageCode::LosAtOrWorse);
    assert_eq!(alert.params["grade"], "E");
    assert_eq!(alert.params["for_s"], 120.0);
    assert_eq!(alert.params["subject"], "segment viale-a");
}

// ---- storm protection ----

const FAULT_EVERYWHERE: &str = r#"
air_quality_defaults = false
[storm]
raises_per_minute = 3
group_over_devices = 2
group_window = "1m"
[[rules]]
id = "fault"
severity = "critical"
threshold = { metric = "fault", above = 0.5 }
"#;

#[test]
fn devices_of_one_segment_fold_into_a_group_alert() {
    let mut e = AlertEngine::new(rules(FAULT_EVERYWHERE));
    let mut out = Vec::new();
    let profiles = (0..5).map(|i| DeviceProfile {
        id: dev(&format!("tl-{i}")),
        kind: None,
        segment: Some(seg("viale-a")),
        interval: None,
    });
    e.set_devices(profiles, t(0), &mut out);
    for i in 0..5 {
        e.on_reading(&reading(&format!("tl-{i}"), MetricId::Fault, i, 1.0), t(i), &mut out);
    }
    let raised: Vec<&Alert> = out
        .iter()
        .filter(|o| matches!(o, AlertOutput::Transition { .. }))
        .map(AlertOutput::alert)
        .collect();
    assert_eq!(raised.len(), 3, "two singles, then the group: {out:?}");
    assert_eq!(raised[2].kind, AlertKind::SegmentGroup);
    assert_eq!(raised[2].key.subject, Subject::Segment(seg("viale-a")));
    let group = e.open_alerts().find(|a| a.kind == AlertKind::SegmentGroup).unwrap();
    assert_eq!((group.members, group.folded_raises), (3, 3));
    assert_eq!(e.counters().grouped_raises, 3);
    // The group clears when every member's condition has ended.
    out.clear();
    for i in 2..5 {
        e.on_reading(
            &reading(&format!("tl-{i}"), MetricId::Fault, 10 + i, 0.0),
            t(10 + i),
            &mut out,
        );
    }
    let returned: Vec<_> =
        transitions(&out).into_iter().filter(|t| t.2 == AlertState::Returned).collect();
    assert_eq!(returned.len(), 1, "unacknowledged, the group returns");
    assert_eq!(e.open_alerts().filter(|a| a.active).count(), 2);
    assert_eq!(e.open_alerts().count(), 3, "the returned group stays open");
}

#[test]
fn the_rate_limit_folds_the_excess_into_one_overflow_alert() {
    let mut e = AlertEngine::new(rules(FAULT_EVERYWHERE));
    let mut out = Vec::new();
    for i in 0..10 {
        e.on_reading(&reading(&format!("tl-{i}"), MetricId::Fault, 0, 1.0), t(0), &mut out);
    }
    let raised: Vec<&Alert> = out
        .iter()
        .filter(|o| matches!(o, AlertOutput::Transition { .. }))
        .map(AlertOutput::alert)
        .collect();
    assert_eq!(raised.len(), 4, "three singles and the overflow");
    assert_eq!(raised[3].kind, AlertKind::RateLimitOverflow);
    assert_eq!(raised[3].key.subject, Subject::Rule);
    assert_eq!(e.counters().suppressed_raises, 7);
    let overflow = e.open_alerts().find(|a| a.kind == AlertKind::RateLimitOverflow).unwrap();
    assert_eq!((overflow.members, overflow.listed_members.len()), (7, 7));
    // 20 s later one token has come back.
    out.clear();
    e.on_reading(&reading("tl-10", MetricId::Fault, 20, 1.0), t(20), &mut out);
    assert_eq!(out[0].alert().kind, AlertKind::Single);
}

// ---- restart ----

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

// ---- properties ----

/// One input to the engine.
#[derive(Debug, Clone)]
enum Op {
    /// (device, event-time offset, value); arrives at the current processing clock.
    Reading(usize, i64, f64),
    Tick,
    LastWill(usize),
    Ack(usize),
    Clear(usize),
    /// Advance the processing clock.
    Wait(i64),
}

fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
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

const MIXED: &str = r#"
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
fn drive(e: &mut AlertEngine, ops: &[Op], clock: &mut i64, out: &mut Vec<AlertOutput>) {
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

fn engine_with_segments() -> AlertEngine {
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

// ---- incremental checkpoints ----

/// What a store keeps of a key's checkpoints: the last head, the last book written and the
/// last version of every part, each through JSON as the sink saves them.
#[derive(Default)]
struct SavedParts {
    head: EngineHead,
    book: Option<BookRecord>,
    parts: BTreeMap<String, StatePart>,
}

impl SavedParts {
    /// Save a checkpoint; returns the names of the parts it wrote.
    fn save(&mut self, e: &mut AlertEngine, force_full: bool) -> (bool, bool, Vec<String>) {
        let (begin, parts) = e.checkpoint(force_full);
        let parts: Vec<StatePart> = parts.collect();
        if begin.full {
            self.parts.clear();
        }
        self.head = serde_json::from_str(&json(&begin.head)).unwrap();
        let wrote_book = begin.book.is_some();
        if let Some(book) = &begin.book {
            self.book = Some(serde_json::from_str(&json(book)).unwrap());
        }
        let mut names = Vec::new();
        for part in parts {
            let back: StatePart = serde_json::from_str(&json(&part)).unwrap();
            names.push(part.name());
            self.parts.insert(part.name(), back);
        }
        (begin.full, wrote_book, names)
    }

    fn assemble(&self) -> AlertEngineState {
        AlertEngineState::assemble(
            self.head.clone(),
            self.book.clone(),
            self.parts.values().cloned(),
        )
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

fn jam(m: i64, los: LevelOfService) -> SegmentState {
    SegmentState {
        segment: seg("viale-a"),
        start: t(m * 60),
        end: t(m * 60 + 60),
        flow_vph: Some(900.0),
        speed_kmh: Some(12.0),
        occupancy_pct: Some(40.0),
        los: Some(los),
        detectors: 2,
        revision: 0,
    }
}

#[test]
fn a_checkpoint_after_a_change_to_one_subject_writes_only_that_subject() {
    let text = format!("{MIXED}\n[[rules]]\nid = \"jam\"\nseverity = \"warning\"\nlos = {{ at_or_worse = \"E\", for = \"2m\" }}\n");
    let mut e = AlertEngine::new(rules(&text));
    let mut out = Vec::new();
    for d in 0..3 {
        e.on_reading(&reading(&format!("aq-{d}"), MetricId::No2Ugm3, 1, 50.0), t(1), &mut out);
    }
    e.on_segment_state(&jam(0, LevelOfService::B), t(61), &mut out);
    let mut saved = SavedParts::default();
    let (full, book, names) = saved.save(&mut e, false);
    assert!(full && book, "the first checkpoint saves everything");
    let mut names = names;
    names.sort();
    assert_eq!(names, ["device/aq-0", "device/aq-1", "device/aq-2", "segment/viale-a"]);

    let (full, book, names) = saved.save(&mut e, false);
    assert_eq!((full, book, names), (false, false, Vec::<String>::new()), "nothing changed");

    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 5, 60.0), t(5), &mut out);
    let (full, book, names) = saved.save(&mut e, false);
    assert_eq!((full, book, names), (false, false, vec!["device/aq-1".to_owned()]));

    e.on_segment_state(&jam(1, LevelOfService::C), t(121), &mut out);
    let (full, book, names) = saved.save(&mut e, false);
    assert_eq!((full, book, names), (false, false, vec!["segment/viale-a".to_owned()]));

    // A raise changes the book too; still only the raising device's part.
    e.on_reading(&reading("aq-2", MetricId::No2Ugm3, 10, 250.0), t(10), &mut out);
    e.on_reading(&reading("aq-2", MetricId::No2Ugm3, 50, 250.0), t(50), &mut out);
    let open: Vec<String> =
        e.open_alerts().filter(|a| a.active).map(|a| a.key.to_string()).collect();
    assert_eq!(open.len(), 1, "no2-high raised: {open:?}");
    let (full, book, names) = saved.save(&mut e, false);
    assert_eq!((full, book, names), (false, true, vec!["device/aq-2".to_owned()]));
    assert_eq!(saved.assemble(), e.export_state());

    // After a lost checkpoint the next one is full.
    let (full, _, names) = saved.save(&mut e, true);
    assert!(full);
    assert_eq!(names.len(), 4);
    assert_eq!(saved.assemble(), e.export_state());
}

proptest! {
    /// Checkpoints taken anywhere in a stream of inputs, applied over what was saved
    /// before, assemble exactly the state `export_state` returns at that point; a rule
    /// change makes the next checkpoint full.
    #[test]
    fn checkpoints_assemble_exactly_the_exported_state(ops in arb_ops(), cuts in prop::collection::vec(0usize..250, 1..6), rule_change in 0usize..8) {
        let text = format!("{MIXED}\n[[rules]]\nid = \"jam\"\nseverity = \"warning\"\nlos = {{ at_or_worse = \"E\", for = \"2m\" }}\n");
        let mut e = engine_with_segments();
        let mut out = Vec::new();
        e.set_rules(rules(&text), t(0), &mut out);
        let mut saved = SavedParts::default();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(ops.len())).collect();
        cuts.sort_unstable();
        cuts.push(ops.len());
        let (mut from, mut clock) = (0, 0);
        for (i, cut) in cuts.into_iter().enumerate() {
            drive(&mut e, &ops[from..cut], &mut clock, &mut out);
            from = cut;
            let los = if i % 2 == 0 { LevelOfService::F } else { LevelOfService::A };
            e.on_segment_state(&jam(i as i64, los), t(clock), &mut out);
            if i == rule_change {
                e.set_rules(rules(MIXED), t(clock), &mut out);
            }
            let (full, _, _) = saved.save(&mut e, false);
            prop_assert!(full || i != rule_change, "a rule change makes the next checkpoint full");
            prop_assert_eq!(saved.assemble(), e.export_state());
        }
    }
}

/// Rough throughput of the hot path: 10,000 devices, 50 rules. Run with
/// `cargo test --release -p stream -- --ignored throughput --nocapture`.
#[test]
#[ignore]
fn throughput_of_on_reading_with_10k_devices_and_50_rules() {
    let mut text = String::from("air_quality_defaults = true\n");
    let metrics = [
        "vehicle_count",
        "speed_kmh",
        "occupancy_pct",
        "no2_ugm3",
        "pm10_ugm3",
        "pm25_ugm3",
        "o3_ugm3",
        "temperature_c",
        "humidity_pct",
        "battery_v",
    ];
    let mut n = 5; // the shipped air-quality rules
    for (i, m) in metrics.iter().enumerate() {
        for k in 0..3 {
            text += &format!("[[rules]]\nid = \"t-{i}-{k}\"\nseverity = \"info\"\nthreshold = {{ metric = \"{m}\", above = {}, for = \"1m\" }}\n", 5_000 + k);
            n += 1;
        }
        text += &format!("[[rules]]\nid = \"f-{i}\"\nseverity = \"info\"\nflatline = {{ metric = \"{m}\", readings = 1000 }}\n");
        n += 1;
    }
    for (i, m) in metrics.iter().take(4).enumerate() {
        text += &format!("[[rules]]\nid = \"r-{i}\"\nseverity = \"info\"\nrate_of_change = {{ metric = \"{m}\", max_per_minute = 100000.0 }}\n");
        n += 1;
    }
    text += "[[rules]]\nid = \"offline\"\nseverity = \"critical\"\noffline = {}\n";
    n += 1;
    assert_eq!(n, 50);
    let mut e = AlertEngine::new(rules(&text));
    assert_eq!(e.rules().len(), 50);
    let mut templates: Vec<Reading> = Vec::new();
    for d in 0..10_000 {
        let id = dev(&format!("dev-{d:05}"));
        let set: &[MetricId] = if d % 4 == 3 {
            &[
                MetricId::No2Ugm3,
                MetricId::Pm10Ugm3,
                MetricId::Pm25Ugm3,
                MetricId::O3Ugm3,
                MetricId::TemperatureC,
                MetricId::HumidityPct,
            ]
        } else {
            &[MetricId::VehicleCount, MetricId::SpeedKmh, MetricId::OccupancyPct]
        };
        for &metric in set {
            templates.push(Reading {
                device: id.clone(),
                metric,
                time: t(0),
                value: 0.0,
                seq: None,
            });
        }
    }
    let mut out = Vec::new();
    let rounds = 60;
    let start = std::time::Instant::now();
    let mut count = 0u64;
    for round in 0..rounds {
        let now = t(round * 30);
        for (i, r) in templates.iter_mut().enumerate() {
            r.time = now;
            r.value = ((i as i64 * 7 + round * 13) % 100) as f64;
            e.on_reading(r, now, &mut out);
            count += 1;
        }
        out.clear();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{count} readings, {} devices, {} rules: {:.2} s, {:.0} readings/s (includes first-seen setup)", 10_000, e.rules().len(), secs, count as f64 / secs);
}

// ---- ISA-18.2: returned, shelving, designed suppression ----

const SPEED_LOW: &str = r#"
air_quality_defaults = false
[[rules]]
id = "slow"
severity = "critical"
threshold = { metric = "speed_kmh", below = 10.0 }
"#;

#[test]
fn a_condition_ending_unacknowledged_returns_and_an_acknowledgement_clears_it() {
    let mut e = AlertEngine::new(rules(SPEED_LOW));
    let mut out = Vec::new();
    e.on_reading(&reading("loop-1", MetricId::SpeedKmh, 0, 5.0), t(0), &mut out);
    let id = out[0].alert().id;
    // 100 ms later the condition has ended: the alert stays open, returned.
    out.clear();
    let back =
        Reading { time: EventTime(T0 + 100), ..reading("loop-1", MetricId::SpeedKmh, 0, 40.0) };
    e.on_reading(&back, EventTime(T0 + 100), &mut out);
    assert_eq!(transitions(&out), vec![(id, Some(AlertState::Raised), AlertState::Returned)]);
    let a = e.alert(id).expect("still open");
    assert_eq!(
        (a.state, a.active, a.returned_at),
        (AlertState::Returned, false, Some(EventTime(T0 + 100)))
    );
    assert_eq!(a.code, MessageCode::ThresholdBelow);
    assert_eq!(a.params["limit"], 10.0);
    assert_eq!(a.params["unit"], "km/h");
    // Acknowledging a returned alert closes it.
    let o = e.acknowledge(id, "ada", Some("seen".into()), t(5)).unwrap();
    assert_eq!(o.alert().state, AlertState::Cleared);
    assert_eq!(o.alert().acknowledged.as_ref().map(|a| a.by.as_str()), Some("ada"));
    let AlertOutput::Transition { transition, .. } = &o else { panic!() };
    assert_eq!(transition.action, Some(AlertMove::Acknowledge));
    assert!(e.alert(id).is_none());
    // And the condition coming back opens a new alert.
    out.clear();
    e.on_reading(&reading("loop-1", MetricId::SpeedKmh, 10, 5.0), t(10), &mut out);
    assert_ne!(out[0].alert().id, id);
}

#[test]
fn an_acknowledged_alert_clears_when_its_condition_ends() {
    let mut e = AlertEngine::new(rules(SPEED_LOW));
    let mut out = Vec::new();
    e.on_reading(&reading("loop-1", MetricId::SpeedKmh, 0, 5.0), t(0), &mut out);
    let id = out[0].alert().id;
    e.acknowledge(id, "ada", None, t(1)).unwrap();
    out.clear();
    e.on_reading(&reading("loop-1", MetricId::SpeedKmh, 2, 40.0), t(2), &mut out);
    assert_eq!(transitions(&out), vec![(id, Some(AlertState::Acknowledged), AlertState::Cleared)]);
}

#[test]
fn a_shelf_expires_by_itself_and_survives_a_restart_with_the_returned_state() {
    let set = rules(SPEED_LOW);
    let mut e = AlertEngine::new(set.clone());
    let mut out = Vec::new();
    e.on_reading(&reading("loop-1", MetricId::SpeedKmh, 0, 5.0), t(0), &mut out);
    let id = out[0].alert().id;
    e.on_reading(&reading("loop-1", MetricId::SpeedKmh, 1, 40.0), t(1), &mut out);
    let shelf = Shelf { by: "ada".into(), reason: "works on site".into(), at: t(2), until: t(60) };
    e.shelve(id, shelf.clone()).unwrap();
    // Exported and restored: still returned, still shelved.
    let json = serde_json::to_string(&e.export_state()).unwrap();
    let mut restored = AlertEngine::new(set);
    out.clear();
    restored.restore_state(serde_json::from_str(&json).unwrap(), t(3), &mut out);
    assert!(out.is_empty());
    let a = restored.alert(id).unwrap();
    assert_eq!((a.state, a.shelved.as_ref()), (AlertState::Returned, Some(&shelf)));
    restored.tick(t(59), &mut out);
    assert!(out.is_empty(), "not yet");
    restored.tick(t(60), &mut out);
    let AlertOutput::Transition { alert, transition } = &out[0] else { panic!("{out:?}") };
    assert_eq!((transition.action, transition.by.as_deref()), (Some(AlertMove::Unshelve), None));
    assert_eq!((alert.state, alert.shelved.as_ref()), (AlertState::Returned, None));
    // The condition holds again before an acknowledgement: the same alert, raised again.
    out.clear();
    restored.on_reading(&reading("loop-1", MetricId::SpeedKmh, 70, 5.0), t(70), &mut out);
    assert_eq!(transitions(&out), vec![(id, Some(AlertState::Returned), AlertState::Raised)]);
    assert!(restored.alert(id).unwrap().active);
}

const SUPPRESSION: &str = r#"
air_quality_defaults = false
[[rules]]
id = "no2-warn"
severity = "warning"
suppressed_by = ["no2-alarm"]
threshold = { metric = "no2_ugm3", above = 200.0 }
[[rules]]
id = "no2-alarm"
severity = "critical"
threshold = { metric = "no2_ugm3", above = 400.0 }
[[rules]]
id = "offline"
severity = "warning"
offline = { last_will = true, min_silence = "1h" }
"#;

#[test]
fn suppressed_by_records_raises_suppressed_and_suppresses_open_alerts() {
    let mut e = AlertEngine::new(rules(SUPPRESSION));
    let mut out = Vec::new();
    // Both rules raise on one reading: the warning opens suppressed by the alarm.
    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 0, 450.0), t(0), &mut out);
    let opened: Vec<&Alert> = out.iter().map(AlertOutput::alert).collect();
    assert_eq!(
        opened.iter().map(|a| a.key.rule.as_str()).collect::<Vec<_>>(),
        ["no2-alarm", "no2-warn"],
        "the suppressing alert is stored first"
    );
    let warn = opened.iter().find(|a| a.key.rule.as_str() == "no2-warn").unwrap();
    let alarm = opened.iter().find(|a| a.key.rule.as_str() == "no2-alarm").unwrap();
    let s = warn.suppressed.as_ref().expect("opened suppressed");
    assert_eq!((s.reason, s.by_alert), (SuppressionReason::SuppressedByRule, alarm.id));
    assert!(alarm.suppressed.is_none());
    let (warn_id, alarm_id) = (warn.id, alarm.id);
    // The alarm's condition ends: the warning is no longer suppressed.
    out.clear();
    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 1, 300.0), t(1), &mut out);
    let AlertOutput::Transition { alert, transition } =
        out.iter().find(|o| o.alert().id == warn_id).expect("an unsuppress move")
    else {
        panic!()
    };
    assert_eq!((transition.action, alert.suppressed.as_ref()), (Some(AlertMove::Unsuppress), None));
    assert_eq!(e.alert(alarm_id).map(|a| a.state), Some(AlertState::Returned));
    // Back above the alarm level: the returned alarm is raised again and the open warning
    // becomes suppressed.
    out.clear();
    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 2, 450.0), t(2), &mut out);
    let moves: Vec<(AlertId, Option<AlertMove>)> = out
        .iter()
        .filter_map(|o| match o {
            AlertOutput::Transition { transition, .. } => {
                Some((transition.alert, transition.action))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        moves,
        vec![(alarm_id, Some(AlertMove::Resume)), (warn_id, Some(AlertMove::Suppress))]
    );
}

#[test]
fn a_devices_offline_alert_suppresses_its_other_alerts() {
    let mut e = AlertEngine::new(rules(SUPPRESSION));
    let mut out = Vec::new();
    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 0, 250.0), t(0), &mut out);
    let warn = out[0].alert().id;
    assert!(out[0].alert().suppressed.is_none());
    out.clear();
    e.on_status(&dev("aq-1"), DeviceStatus::Offline, t(5), &mut out);
    let offline = out[0].alert().id;
    let suppressed = e.alert(warn).unwrap().suppressed.clone().expect("suppressed");
    assert_eq!(
        (suppressed.reason, suppressed.by_alert),
        (SuppressionReason::DeviceOffline, offline)
    );
    assert!(e.alert(offline).unwrap().suppressed.is_none(), "offline is not suppressed by itself");
}

#[test]
fn suppressed_by_must_name_other_existing_rules_and_the_alarm_settings_are_bounded() {
    let doc: AlertRulesConfig = toml::from_str(
        "air_quality_defaults = false\nmax_shelve = \"40d\"\noperator_positions = 0\n[[rules]]\nid = \"a\"\nseverity = \"info\"\nsuppressed_by = [\"a\", \"nope\", \"BAD\"]\nthreshold = { metric = \"speed_kmh\", below = 1.0 }\n",
    )
    .unwrap();
    let errors = doc.validate().unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "max_shelve",
            "operator_positions",
            "rules[0].suppressed_by[0]",
            "rules[0].suppressed_by[1]",
            "rules[0].suppressed_by[2]"
        ]
    );
    // The shipped O3 target is suppressed by the O3 information threshold.
    let shipped = AlertRulesConfig::default().validate().unwrap();
    let target = shipped.rules.iter().find(|r| r.id.as_str() == "aq-o3-8h-target").unwrap();
    assert_eq!(target.suppressed_by, [RuleId::parse("aq-o3-information").unwrap()]);
}

mod segment_threshold;
