//! Storm protection: segment groups and the rate limit's overflow alert.

use super::*;

pub(super) const FAULT_EVERYWHERE: &str = r#"
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
