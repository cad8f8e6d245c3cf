//! The hub: values only move forward, routing and conflation, presences, snapshots,
//! segment states, alerts moving forward only, event kinds, lagging subscribers.

use super::*;
use crate::alert::{AlertKind, Severity, Subject};

fn r(dev: &str, t: i64, v: f64) -> Reading {
    Reading {
        device: DeviceId::parse(dev).unwrap(),
        metric: MetricId::SpeedKmh,
        time: EventTime(t),
        value: v,
        seq: None,
    }
}

#[test]
fn older_readings_do_not_replace_newer_ones_and_are_not_sent() {
    let hub = LiveHub::new(16);
    let sub = hub.subscribe(SubscriptionFilter::default());
    hub.apply(&[r("a", 2_000, 20.0), r("a", 1_000, 10.0), r("b", 1_000, 5.0)]);
    let snap = hub.snapshot(&SubscriptionFilter::default());
    assert_eq!(
        snap.iter().map(|v| (v.device.as_str(), v.value)).collect::<Vec<_>>(),
        vec![("a", 20.0), ("b", 5.0)]
    );
    let got: Vec<(String, f64)> =
        sub.take().values.values().map(|v| (v.device.to_string(), v.value)).collect();
    assert_eq!(got, vec![("a".into(), 20.0), ("b".into(), 5.0)]);
}

#[test]
fn values_are_conflated_and_routed_only_to_interested_subscribers() {
    let hub = LiveHub::new(16);
    let only_a = hub.subscribe(SubscriptionFilter {
        devices: [DeviceId::parse("a").unwrap()].into(),
        ..SubscriptionFilter::default()
    });
    let only_s1 = hub.subscribe(SubscriptionFilter {
        values: false,
        segments: Some([SegmentId::parse("s1").unwrap()].into()),
        ..SubscriptionFilter::default()
    });
    assert_eq!(hub.subscribers(), 2);
    for i in 0..500 {
        hub.apply(&[r("a", i, i as f64), r("b", i, i as f64)]);
    }
    let p = only_a.take();
    assert!(!p.lagged, "conflated values never overflow one key");
    assert_eq!(
        p.values.values().map(|v| (v.device.to_string(), v.value)).collect::<Vec<_>>(),
        vec![("a".into(), 499.0)]
    );
    assert!(only_s1.take().values.is_empty());
    hub.publish_segments(vec![seg_state("s2", 0, 0, 5.0), seg_state("s1", 0, 0, 9.0)]);
    let p = only_s1.take();
    assert_eq!(p.events.len(), 1);
    assert!(matches!(&*p.events[0], LiveEvent::Segment(s) if s.segment.as_str() == "s1"));
    drop(only_a);
    assert_eq!(hub.subscribers(), 1, "a dropped subscription leaves the index");
    only_s1.set_filter(SubscriptionFilter { values: false, ..SubscriptionFilter::default() });
    hub.publish_segments(vec![seg_state("s1", 60_000, 0, 9.0)]);
    assert!(only_s1.take().events.is_empty(), "nothing after the filter dropped the segment");
}

#[test]
fn presences_tell_online_last_heard_and_unknown_devices() {
    let hub = LiveHub::new(16);
    hub.apply(&[r("a", 1, 1.0)]);
    hub.set_status(&StatusEvent {
        device: DeviceId::parse("b").unwrap(),
        state: DeviceState::Offline,
        received_at: EventTime::now(),
        retained: false,
    });
    let ids = ["a", "b", "c"].map(|d| DeviceId::parse(d).unwrap());
    let now = EventTime::now();
    let got = hub.presences(&ids, now);
    let (online, heard) = got[0].unwrap();
    assert!(online);
    assert!(heard.is_some_and(|t| (now.millis() - t.millis()).abs() < 60_000));
    assert_eq!(got[1], Some((false, None)), "only an offline status was heard");
    assert_eq!(got[2], None, "never heard of");
    let later = EventTime(now.millis() + PRESENCE_WINDOW_MS + 1);
    assert_eq!(hub.presences(&ids[..1], later)[0].map(|p| p.0), Some(false));
    assert_eq!(hub.device_online(&ids[0], now), Some(true));
}

#[test]
fn snapshot_honours_the_filter() {
    let hub = LiveHub::new(16);
    hub.apply(&[r("a", 1, 1.0), r("b", 1, 2.0)]);
    let filter = SubscriptionFilter {
        devices: [DeviceId::parse("b").unwrap()].into(),
        ..SubscriptionFilter::default()
    };
    let snap = hub.snapshot(&filter);
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].value, 2.0);
    let none =
        SubscriptionFilter { metrics: [MetricId::No2Ugm3].into(), ..SubscriptionFilter::default() };
    assert!(hub.snapshot(&none).is_empty());
}

fn seg_state(seg: &str, start: i64, revision: u32, speed: f64) -> SegmentState {
    SegmentState {
        segment: SegmentId::parse(seg).unwrap(),
        start: EventTime(start),
        end: EventTime(start + 60_000),
        flow_vph: None,
        speed_kmh: Some(speed),
        occupancy_pct: None,
        los: None,
        detectors: 1,
        revision,
        forecast: None,
    }
}

fn alert(id: i64, state: AlertState) -> LiveAlert {
    LiveAlert {
        id,
        rule: "los".into(),
        subject: Subject::Segment(SegmentId::parse("s1").unwrap()),
        kind: AlertKind::Single,
        severity: Severity::Critical,
        state,
        message: String::new(),
        value: Some(10.0),
        since: EventTime(0),
        raised_at: EventTime(0),
        acknowledged: None,
        cleared: None,
        members: 1,
        active: state != AlertState::Returned,
        returned_at: (state == AlertState::Returned).then_some(EventTime(5)),
        shelved: None,
        suppressed: None,
        code: Default::default(),
        params: Default::default(),
    }
}

#[test]
fn a_segment_keeps_its_newest_window_and_every_change_is_sent() {
    let hub = LiveHub::new(16);
    let sub = hub.subscribe(SubscriptionFilter {
        segments: Some(BTreeSet::new()),
        ..SubscriptionFilter::default()
    });
    hub.publish_segments(vec![
        seg_state("s1", 60_000, 0, 30.0),
        seg_state("s1", 0, 1, 10.0),
        seg_state("s2", 0, 0, 5.0),
    ]);
    hub.publish_segments(vec![seg_state("s1", 60_000, 1, 31.0)]);
    let all =
        SubscriptionFilter { segments: Some(BTreeSet::new()), ..SubscriptionFilter::default() };
    let held: Vec<(String, i64, Option<f64>)> = hub
        .segment_states(&all)
        .iter()
        .map(|s| (s.segment.to_string(), s.start.millis(), s.speed_kmh))
        .collect();
    assert_eq!(held, vec![("s1".into(), 60_000, Some(31.0)), ("s2".into(), 0, Some(5.0))]);
    let only_s2 = SubscriptionFilter {
        segments: Some([SegmentId::parse("s2").unwrap()].into()),
        ..SubscriptionFilter::default()
    };
    assert_eq!(hub.segment_states(&only_s2).len(), 1);
    assert!(
        hub.segment_states(&SubscriptionFilter::default()).is_empty(),
        "no segments unless asked for"
    );
    let events = sub.take().events;
    assert!(events.iter().all(|e| matches!(&**e, LiveEvent::Segment(_))));
    assert_eq!(events.len(), 4);
}

#[test]
fn alerts_only_move_forward_and_cleared_ones_leave_the_board() {
    let hub = LiveHub::new(16);
    assert!(hub.publish_alert(alert(1, AlertState::Raised)));
    assert!(hub.publish_alert(alert(2, AlertState::Raised)));
    assert!(hub.publish_alert(alert(1, AlertState::Acknowledged)));
    assert!(
        !hub.publish_alert(alert(1, AlertState::Raised)),
        "a late raise does not undo the acknowledgement"
    );
    assert_eq!(
        hub.open_alerts().iter().map(|a| (a.id, a.state)).collect::<Vec<_>>(),
        vec![(1, AlertState::Acknowledged), (2, AlertState::Raised)]
    );
    assert!(hub.publish_alert(alert(2, AlertState::Cleared)));
    assert!(!hub.publish_alert(alert(2, AlertState::Raised)), "a cleared alert is not reopened");
    assert_eq!(hub.open_alerts().len(), 1);
}

#[test]
fn the_filter_selects_event_kinds() {
    let value = LiveEvent::Value(LiveValue {
        device: DeviceId::parse("a").unwrap(),
        metric: MetricId::SpeedKmh,
        time: EventTime(0),
        value: 1.0,
    });
    let segment = LiveEvent::Segment(seg_state("s1", 0, 0, 1.0));
    let alert = LiveEvent::Alert(Box::new(alert(1, AlertState::Raised)));
    let default = SubscriptionFilter::default();
    assert!(
        default.matches_event(&value)
            && !default.matches_event(&segment)
            && !default.matches_event(&alert)
    );
    let walls = SubscriptionFilter {
        values: false,
        segments: Some(BTreeSet::new()),
        alerts: true,
        ..SubscriptionFilter::default()
    };
    assert!(
        !walls.matches_event(&value)
            && walls.matches_event(&segment)
            && walls.matches_event(&alert)
    );
}

#[test]
fn a_slow_subscriber_lags_instead_of_growing_its_queue() {
    let hub = LiveHub::new(16);
    let sub = hub.subscribe(SubscriptionFilter {
        segments: Some(BTreeSet::new()),
        ..SubscriptionFilter::default()
    });
    for i in 0..100 {
        hub.publish_segments(vec![seg_state("s1", i * 60_000, 0, 1.0)]);
    }
    let p = sub.take();
    assert!(p.lagged && p.events.is_empty(), "the overflowing queue is dropped for a snapshot");
    hub.publish_segments(vec![seg_state("s1", 100 * 60_000, 0, 1.0)]);
    assert_eq!(sub.take().events.len(), 1, "and the subscriber goes on afterwards");
}
