//! Thresholds evaluated per segment (`on = "segment"`), thresholds evaluated per device
//! whatever their scope, and device kinds in scopes.

use super::*;

/// A window of `segment` from minute `m` with a mean speed and a flow.
fn window(segment: &str, m: i64, speed: f64, flow: f64) -> SegmentState {
    SegmentState {
        segment: seg(segment),
        start: t(m * 60),
        end: t(m * 60 + 60),
        flow_vph: Some(flow),
        speed_kmh: Some(speed),
        occupancy_pct: Some(30.0),
        los: Some(LevelOfService::C),
        detectors: 2,
        revision: 0,
        forecast: None,
    }
}

const SLOW: &str = r#"
air_quality_defaults = false
[[rules]]
id = "slow"
severity = "warning"
scope = { segments = ["viale-a", "viale-b", "viale-c"] }
threshold = { metric = "speed_kmh", on = "segment", below = 15.0, clear = 20.0, for = "2m" }
"#;

fn transitions_of(out: &[AlertOutput]) -> Vec<(Subject, AlertState)> {
    out.iter()
        .filter_map(|o| match o {
            AlertOutput::Transition { alert, transition } => {
                Some((alert.key.subject.clone(), transition.to))
            }
            AlertOutput::Updated { .. } => None,
        })
        .collect()
}

#[test]
fn a_segment_threshold_raises_once_per_segment_after_its_duration_with_hysteresis() {
    let mut e = AlertEngine::new(rules(SLOW));
    let mut out = Vec::new();
    // Minute 0 is slow, minute 1 too: the run holds from 0:00 to 2:00.
    e.on_segment_state(&window("viale-a", 0, 12.0, 400.0), t(65), &mut out);
    assert!(out.is_empty(), "held 1 min of 2");
    e.on_segment_state(&window("viale-a", 1, 11.0, 380.0), t(125), &mut out);
    assert_eq!(transitions_of(&out), [(Subject::Segment(seg("viale-a")), AlertState::Raised)]);
    let alert = out[0].alert();
    assert_eq!(
        (alert.since, alert.kind, alert.severity),
        (t(0), AlertKind::Single, Severity::Warning)
    );
    assert_eq!(alert.code, MessageCode::ThresholdBelow);
    assert_eq!(alert.params["metric"], "speed_kmh");
    assert_eq!(alert.params["unit"], "km/h");
    assert_eq!(
        (alert.params["limit"].as_f64(), alert.params["value"].as_f64()),
        (Some(15.0), Some(11.0))
    );
    assert_eq!(alert.params["subject"], "segment viale-a");
    assert_eq!(alert.message, "segment viale-a: speed_kmh below 15 for 2m: 11.0");
    // Between clear and trip (17 km/h): still raised. The same window again: stale.
    out.clear();
    e.on_segment_state(&window("viale-a", 2, 17.0, 500.0), t(185), &mut out);
    e.on_segment_state(&window("viale-a", 2, 25.0, 500.0), t(186), &mut out);
    assert!(out.is_empty(), "hysteresis holds it, a correction of a window is stale");
    assert_eq!(e.open_alerts().count(), 1);
    // Back above clear: returned (unacknowledged), subject the segment.
    e.on_segment_state(&window("viale-a", 3, 22.0, 600.0), t(245), &mut out);
    assert_eq!(transitions_of(&out), [(Subject::Segment(seg("viale-a")), AlertState::Returned)]);
    // A window without a speed changes nothing.
    out.clear();
    let empty = SegmentState { speed_kmh: None, ..window("viale-a", 4, 0.0, 0.0) };
    e.on_segment_state(&empty, t(305), &mut out);
    assert!(out.is_empty());
    // A segment out of scope is not watched.
    e.on_segment_state(&window("viale-z", 0, 1.0, 10.0), t(306), &mut out);
    e.on_segment_state(&window("viale-z", 5, 1.0, 10.0), t(307), &mut out);
    assert!(out.is_empty());
}

#[test]
fn a_flow_threshold_on_all_segments_with_no_duration_raises_at_the_first_window() {
    let mut e = AlertEngine::new(rules(
        "air_quality_defaults = false\n[[rules]]\nid = \"busy\"\nseverity = \"info\"\nthreshold = { metric = \"flow_vph\", on = \"segment\", above = 2000.0 }\n",
    ));
    let mut out = Vec::new();
    e.on_segment_state(&window("viale-a", 0, 40.0, 2_500.0), t(65), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].alert().code, MessageCode::ThresholdAbove);
    assert_eq!(out[0].alert().params["unit"], "veh/h");
    e.on_segment_state(&window("viale-a", 1, 40.0, 1_900.0), t(125), &mut out);
    assert_eq!(transitions_of(&out)[1].1, AlertState::Returned);
}

#[test]
fn segment_thresholds_have_storm_protection_suppression_and_survive_a_restart() {
    let text = format!(
        "{}\n[storm]\nraises_per_minute = 1\n[[rules]]\nid = \"jam\"\nseverity = \"critical\"\nlos = {{ at_or_worse = \"C\" }}\n",
        SLOW.replace("severity = \"warning\"", "severity = \"warning\"\nsuppressed_by = [\"jam\"]")
            .replace("for = \"2m\"", "for = \"0s\"")
    );
    let set = rules(&text);
    // Rate limit: one token a minute for `slow`; the LOS rule `jam` has its own bucket.
    let no_jam = rules(&text.replace("at_or_worse = \"C\"", "at_or_worse = \"F\""));
    let mut e = AlertEngine::new(no_jam.clone());
    let mut out = Vec::new();
    for (k, s) in ["viale-a", "viale-b", "viale-c"].into_iter().enumerate() {
        e.on_segment_state(&window(s, 0, 10.0, 100.0), t(61 + k as i64), &mut out);
    }
    let kinds: Vec<AlertKind> = e.open_alerts().map(|a| a.kind).collect();
    assert_eq!(kinds, [AlertKind::Single, AlertKind::RateLimitOverflow], "{out:?}");
    let overflow = e.open_alerts().find(|a| a.kind == AlertKind::RateLimitOverflow).unwrap();
    assert_eq!(overflow.members, 2);

    // Restart: the state (open alerts, timers) comes back.
    let saved = e.export_state();
    let mut restored = AlertEngine::new(no_jam);
    out.clear();
    restored.restore_state(saved, t(70), &mut out);
    assert!(out.is_empty());
    assert_eq!(restored.open_alerts().count(), 2);
    restored.on_segment_state(&window("viale-a", 1, 30.0, 100.0), t(125), &mut out);
    assert_eq!(transitions_of(&out), [(Subject::Segment(seg("viale-a")), AlertState::Returned)]);

    // Designed suppression: while `jam` is active on the segment, `slow` is suppressed.
    let mut e = AlertEngine::new(set);
    out.clear();
    e.on_segment_state(&window("viale-b", 0, 10.0, 100.0), t(61), &mut out);
    let slow = e.open_alerts().find(|a| a.key.rule.as_str() == "slow").unwrap();
    assert_eq!(
        slow.suppressed.as_ref().map(|s| s.reason),
        Some(SuppressionReason::SuppressedByRule)
    );
}

#[test]
fn a_device_threshold_scoped_to_a_segment_raises_per_device() {
    let mut e = AlertEngine::new(rules(
        "air_quality_defaults = false\n[storm]\ngroup_over_devices = 0\n[[rules]]\nid = \"slow-loops\"\nseverity = \"info\"\nscope = { segments = [\"viale-a\"] }\nthreshold = { metric = \"speed_kmh\", below = 15.0 }\n",
    ));
    let mut out = Vec::new();
    let on = |id: &str| DeviceProfile {
        id: dev(id),
        kind: Some("traffic_loop".into()),
        segment: Some(seg("viale-a")),
        interval: None,
    };
    e.set_devices([on("loop-1"), on("loop-2")], t(0), &mut out);
    e.on_reading(&reading("loop-1", MetricId::SpeedKmh, 1, 10.0), t(1), &mut out);
    e.on_reading(&reading("loop-2", MetricId::SpeedKmh, 1, 10.0), t(1), &mut out);
    // A segment window at 10 km/h raises nothing: the rule is not on segments.
    e.on_segment_state(&window("viale-a", 0, 10.0, 100.0), t(61), &mut out);
    let subjects: Vec<Subject> = transitions_of(&out).into_iter().map(|(s, _)| s).collect();
    assert_eq!(subjects, [Subject::Device(dev("loop-1")), Subject::Device(dev("loop-2"))]);
}

#[test]
fn segment_thresholds_and_scope_kinds_are_validated_with_their_paths() {
    let doc: AlertRulesConfig = toml::from_str(
        r#"
air_quality_defaults = false
[[rules]]
id = "device-metric-on-segment"
severity = "info"
threshold = { metric = "no2_ugm3", on = "segment", above = 1.0 }
[[rules]]
id = "flow-on-device"
severity = "info"
threshold = { metric = "flow_vph", above = 1.0 }
[[rules]]
id = "segment-rule-on-devices"
severity = "info"
scope = { devices = ["loop-1"] }
threshold = { metric = "speed_kmh", on = "segment", below = 1.0 }
[[rules]]
id = "kind-typo"
severity = "info"
scope = { kind = "air_qualty" }
threshold = { metric = "no2_ugm3", above = 1.0 }
"#,
    )
    .unwrap();
    let errors = doc.validate().unwrap_err();
    let found: Vec<(&str, bool)> =
        errors.0.iter().map(|e| (e.path.as_str(), e.beyond_schema)).collect();
    assert_eq!(
        found,
        [
            ("rules[0].threshold.metric", false),
            ("rules[1].threshold.metric", false),
            ("rules[2].scope", false),
            ("rules[3].scope.kind", true),
        ]
    );
    assert!(errors.0[0].message.contains("flow_vph, speed_kmh, occupancy_pct"), "{errors}");
    assert_eq!(
        errors.0[3].message,
        "unknown device kind \"air_qualty\" (did you mean \"air_quality\"?); the kinds are \
         traffic_loop, traffic_light, parking, air_quality, gateway"
    );
    // A known kind is a kind scope; `on = "device"` is the default and is not written back.
    let set = rules("air_quality_defaults = false\n[[rules]]\nid = \"k\"\nseverity = \"info\"\nscope = { kind = \"parking\" }\nthreshold = { metric = \"free_spaces\", below = 1.0, on = \"device\" }\n");
    assert_eq!(set.rules[0].scope, RuleScope::Kind(telemetry::DeviceKind::Parking));
    let doc: AlertRulesConfig = toml::from_str("[[rules]]\nid = \"k\"\nseverity = \"info\"\nthreshold = { metric = \"free_spaces\", below = 1.0, on = \"device\" }\n").unwrap();
    assert!(!serde_json::to_string(&doc).unwrap().contains("\"on\""));
}
