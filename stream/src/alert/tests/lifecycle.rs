//! Raise, acknowledge, clear; offline by Last Will and by silence; LOS on segments.

use super::*;

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
    e.on_segment_state(&jam(0, LevelOfService::E), t(65), &mut out);
    assert!(out.is_empty());
    e.on_segment_state(&jam(1, LevelOfService::F), t(125), &mut out);
    assert_eq!(out[0].alert().key.subject, Subject::Segment(seg("viale-a")));
    e.on_segment_state(&jam(2, LevelOfService::C), t(185), &mut out);
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
