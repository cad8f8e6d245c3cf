//! ISA-18.2: returned alerts, shelving, designed suppression.

use super::*;

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
    assert_eq!((s.reason, s.by_alert), (SuppressionReason::SuppressedByRule, Some(alarm.id)));
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
        (SuppressionReason::DeviceOffline, Some(offline))
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

#[test]
fn a_road_operation_suppresses_alerts_on_its_segments_until_it_is_lifted() {
    let mut e = AlertEngine::new(rules(SPEED_LOW));
    let mut out = Vec::new();
    let on = |id: &str, s: &str| DeviceProfile {
        id: dev(id),
        kind: None,
        segment: Some(seg(s)),
        interval: None,
    };
    e.set_devices([on("loop-1", "closed"), on("loop-2", "open")], t(0), &mut out);
    let cover: BTreeMap<SegmentId, String> = [(seg("closed"), "op-1".to_owned())].into();
    e.set_operations(cover, t(0), &mut out);
    out.clear();
    // A raise on the closed segment is recorded suppressed, naming the operation.
    e.on_reading(&reading("loop-1", MetricId::SpeedKmh, 1, 2.0), t(1), &mut out);
    e.on_reading(&reading("loop-2", MetricId::SpeedKmh, 1, 2.0), t(1), &mut out);
    let closed =
        out.iter().find(|o| o.alert().key.subject == Subject::Device(dev("loop-1"))).unwrap();
    let s = closed.alert().suppressed.clone().expect("suppressed by the operation");
    assert_eq!((s.reason, s.by_operation.as_deref()), (SuppressionReason::Operation, Some("op-1")));
    let open =
        out.iter().find(|o| o.alert().key.subject == Subject::Device(dev("loop-2"))).unwrap();
    assert!(open.alert().suppressed.is_none(), "another segment pages as usual");
    let id = closed.alert().id;
    // Lifting the operation unsuppresses the alert still holding: it is shown again.
    out.clear();
    e.set_operations(BTreeMap::new(), t(2), &mut out);
    let AlertOutput::Transition { alert, transition } = &out[0] else { panic!("{out:?}") };
    assert_eq!((alert.id, transition.action), (id, Some(AlertMove::Unsuppress)));
    assert!(e.alert(id).unwrap().suppressed.is_none());
    assert_eq!(e.alert(id).unwrap().state, AlertState::Raised);
    // The same cover again changes nothing.
    out.clear();
    e.set_operations(BTreeMap::new(), t(3), &mut out);
    assert!(out.is_empty());
}
