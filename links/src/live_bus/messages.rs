//! The bus's messages: [`LiveBatch`] (changes of the live state, or a snapshot of it,
//! split to the per-message limits) and [`ControlMessage`], JSON with a version.

use serde::{Deserialize, Serialize};
use stream::{
    AlertKey, LiveAlert, LiveEvent, LiveHub, LiveValue, OperatorAction, Pending, SegmentState,
    SubscriptionFilter, WindowResult,
};
use telemetry::{DeviceId, DeviceState, EventTime, StatusEvent};

use super::{MAX_EVENTS_PER_MESSAGE, MAX_VALUES_PER_MESSAGE, VERSION};

/// A device status as the bus carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusStatus {
    pub device: DeviceId,
    pub state: DeviceState,
    pub received_at: EventTime,
    pub retained: bool,
}

/// One live message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveBatch {
    pub v: u8,
    /// The publishing process (its MQTT client id).
    pub origin: String,
    /// A snapshot of what the origin holds, not changes that just happened.
    #[serde(default)]
    pub snapshot: bool,
    /// Readings the origin took since its previous message (values arrive conflated).
    #[serde(default)]
    pub readings: u64,
    #[serde(default)]
    pub values: Vec<LiveValue>,
    #[serde(default)]
    pub windows: Vec<WindowResult>,
    #[serde(default)]
    pub segments: Vec<SegmentState>,
    #[serde(default)]
    pub alerts: Vec<LiveAlert>,
    #[serde(default)]
    pub statuses: Vec<BusStatus>,
}

/// Why a bus message was skipped.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("not a bus message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("bus message version {0}, expected {VERSION}")]
    Version(u8),
}

impl LiveBatch {
    pub(super) fn new(origin: &str, snapshot: bool) -> Self {
        Self { v: VERSION, origin: origin.to_owned(), snapshot, ..Self::default() }
    }

    fn events(&self) -> usize {
        self.windows.len() + self.segments.len() + self.alerts.len() + self.statuses.len()
    }

    /// The messages for what a hub subscription queued, `readings` counted in the first.
    pub fn from_pending(origin: &str, pending: Pending, readings: u64) -> Vec<LiveBatch> {
        let mut out = vec![LiveBatch { readings, ..Self::new(origin, false) }];
        let current = |out: &mut Vec<LiveBatch>, value: bool| -> usize {
            let last = out.len() - 1;
            let full = if value {
                out[last].values.len() >= MAX_VALUES_PER_MESSAGE
            } else {
                out[last].events() >= MAX_EVENTS_PER_MESSAGE
            };
            if full {
                out.push(Self::new(origin, false));
            }
            out.len() - 1
        };
        for v in pending.values.into_values() {
            let i = current(&mut out, true);
            out[i].values.push(v);
        }
        for e in pending.events {
            let i = current(&mut out, false);
            let b = &mut out[i];
            match &*e {
                LiveEvent::Value(v) => b.values.push(v.clone()),
                LiveEvent::Window(w) => b.windows.push(w.clone()),
                LiveEvent::Segment(s) => b.segments.push(s.clone()),
                LiveEvent::Alert(a) => b.alerts.push((**a).clone()),
                // Operation changes are published by the API process that made them.
                LiveEvent::Operation(_) => {}
                LiveEvent::Status(s) => {
                    b.statuses.push(BusStatus {
                        device: s.device.clone(),
                        state: s.state,
                        received_at: s.received_at,
                        retained: s.retained,
                    });
                }
            }
        }
        out
    }

    /// What `hub` holds, as snapshot messages.
    pub fn snapshot(origin: &str, hub: &LiveHub) -> Vec<LiveBatch> {
        let all = SubscriptionFilter {
            segments: Some(Default::default()),
            ..SubscriptionFilter::default()
        };
        let mut out = Vec::new();
        let values = hub.snapshot(&all);
        for chunk in values.chunks(MAX_VALUES_PER_MESSAGE) {
            out.push(LiveBatch { values: chunk.to_vec(), ..Self::new(origin, true) });
        }
        for chunk in hub.segment_states(&all).chunks(MAX_EVENTS_PER_MESSAGE) {
            out.push(LiveBatch { segments: chunk.to_vec(), ..Self::new(origin, true) });
        }
        for chunk in hub.open_alerts().chunks(MAX_EVENTS_PER_MESSAGE) {
            out.push(LiveBatch { alerts: chunk.to_vec(), ..Self::new(origin, true) });
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.readings == 0 && self.values.is_empty() && self.events() == 0
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, BusError> {
        let batch: LiveBatch = serde_json::from_slice(bytes)?;
        if batch.v != VERSION {
            return Err(BusError::Version(batch.v));
        }
        Ok(batch)
    }

    /// Apply to `hub`, which broadcasts what is newer than what it holds.
    pub fn apply(self, hub: &LiveHub) {
        hub.count_readings(self.readings);
        hub.apply_values(self.values, !self.snapshot);
        hub.publish_windows(self.windows);
        hub.publish_segments(self.segments);
        for a in self.alerts {
            hub.publish_alert(a);
        }
        for s in self.statuses {
            hub.set_status(&StatusEvent {
                device: s.device,
                state: s.state,
                received_at: s.received_at,
                retained: s.retained,
            });
        }
    }
}

/// A control message from an API replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    /// An operator acknowledged or cleared an alert; `alert` is the stored result.
    Operator {
        action: OperatorAction,
        key: AlertKey,
        by: String,
        note: Option<String>,
        at: EventTime,
        alert: Box<LiveAlert>,
    },
    /// The alert rules were replaced in the store: re-read them.
    RulesChanged,
    /// Publish a snapshot of the live state (an API replica started or reconnected).
    SnapshotRequest,
}

impl ControlMessage {
    pub fn encode(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("v".into(), VERSION.into());
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, BusError> {
        #[derive(Deserialize)]
        struct Version {
            v: u8,
        }
        let Version { v } = serde_json::from_slice(bytes)?;
        if v != VERSION {
            return Err(BusError::Version(v));
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use stream::{AlertState, Severity, Subject};
    use telemetry::{MetricId, SegmentId};

    fn value(d: &str, t: i64, v: f64) -> LiveValue {
        LiveValue {
            device: DeviceId::parse(d).unwrap(),
            metric: MetricId::SpeedKmh,
            time: EventTime(t),
            value: v,
        }
    }

    fn alert(id: i64, state: AlertState) -> LiveAlert {
        LiveAlert {
            id,
            rule: "slow".into(),
            subject: Subject::Segment(SegmentId::parse("s1").unwrap()),
            kind: stream::alert::AlertKind::Single,
            severity: Severity::Warning,
            state,
            message: "slow traffic".into(),
            value: Some(12.5),
            since: EventTime(1_000),
            raised_at: EventTime(1_000),
            acknowledged: None,
            cleared: None,
            members: 1,
            active: true,
            returned_at: None,
            shelved: None,
            suppressed: None,
            code: Default::default(),
            params: Default::default(),
        }
    }

    #[test]
    fn a_pending_queue_round_trips_into_another_hub() {
        let source = LiveHub::new(64);
        let all = SubscriptionFilter {
            segments: Some(Default::default()),
            alerts: true,
            statuses: true,
            ..SubscriptionFilter::default()
        };
        let sub = source.subscribe_with_capacity(all.clone(), 1_000);
        let readings: Vec<telemetry::Reading> = (0..5_000)
            .map(|i| telemetry::Reading {
                device: DeviceId::parse(&format!("d{i}")).unwrap(),
                metric: MetricId::SpeedKmh,
                time: EventTime(i),
                value: i as f64,
                seq: None,
            })
            .collect();
        source.apply(&readings);
        source.publish_alert(alert(7, AlertState::Raised));
        source.set_status(&StatusEvent {
            device: DeviceId::parse("d1").unwrap(),
            state: DeviceState::Offline,
            received_at: EventTime::now(),
            retained: false,
        });
        let batches = LiveBatch::from_pending("ingest-a", sub.take(), 5_000);
        assert_eq!(batches.len(), 3, "5,000 values make three messages of at most 2,000");
        assert!(batches.iter().all(|b| b.values.len() <= MAX_VALUES_PER_MESSAGE));

        let target = LiveHub::new(1_000);
        let screen = target.subscribe(all.clone());
        for b in batches {
            LiveBatch::decode(&b.encode()).unwrap().apply(&target);
        }
        assert_eq!(target.snapshot(&all), source.snapshot(&all));
        assert_eq!(target.open_alerts(), vec![alert(7, AlertState::Raised)]);
        assert_eq!(target.readings_applied(), 5_000);
        assert_eq!(
            target.device_online(&DeviceId::parse("d1").unwrap(), EventTime::now()),
            Some(false),
            "the offline status crossed"
        );
        assert_eq!(
            target.device_online(&DeviceId::parse("d2").unwrap(), EventTime::now()),
            Some(true)
        );
        let seen = screen.take();
        assert_eq!(seen.values.len(), 5_000, "a screen on the target hub sees every value");
        assert_eq!(seen.events.iter().filter(|e| matches!(***e, LiveEvent::Alert(_))).count(), 1);
    }

    #[test]
    fn a_snapshot_does_not_mark_devices_heard_and_never_moves_values_back() {
        let source = LiveHub::new(64);
        source.apply_values(vec![value("a", 10, 1.0), value("b", 10, 2.0)], true);
        let target = LiveHub::new(64);
        target.apply_values(vec![value("a", 20, 9.0)], true);
        for b in LiveBatch::snapshot("ingest-a", &source) {
            LiveBatch::decode(&b.encode()).unwrap().apply(&target);
        }
        let got: BTreeMap<String, f64> = target
            .snapshot(&SubscriptionFilter::default())
            .into_iter()
            .map(|v| (v.device.to_string(), v.value))
            .collect();
        assert_eq!(
            got,
            BTreeMap::from([("a".into(), 9.0), ("b".into(), 2.0)]),
            "the newer value held is kept"
        );
        assert_eq!(
            target.device_online(&DeviceId::parse("b").unwrap(), EventTime::now()),
            None,
            "a snapshot is not a sign of life"
        );
    }

    #[test]
    fn a_forwarded_alert_seen_twice_is_broadcast_once() {
        let hub = LiveHub::new(64);
        let sub =
            hub.subscribe(SubscriptionFilter { alerts: true, ..SubscriptionFilter::default() });
        assert!(hub.publish_alert(alert(1, AlertState::Acknowledged)));
        assert!(
            !hub.publish_alert(alert(1, AlertState::Acknowledged)),
            "the same change from a second replica"
        );
        assert!(!hub.publish_alert(alert(1, AlertState::Raised)), "an older state");
        assert_eq!(sub.take().events.len(), 1);
    }

    #[test]
    fn control_messages_round_trip_and_bad_messages_are_refused() {
        let messages = [
            ControlMessage::RulesChanged,
            ControlMessage::SnapshotRequest,
            ControlMessage::Operator {
                action: OperatorAction::Acknowledge,
                key: AlertKey {
                    rule: stream::alert::RuleId::parse("slow").unwrap(),
                    subject: Subject::Rule,
                },
                by: "anna".into(),
                note: Some("seen".into()),
                at: EventTime(5),
                alert: Box::new(alert(3, AlertState::Acknowledged)),
            },
        ];
        for m in messages {
            assert_eq!(ControlMessage::decode(&m.encode()).unwrap(), m);
        }
        assert!(matches!(
            ControlMessage::decode(br#"{"type":"rules_changed","v":2}"#),
            Err(BusError::Version(2))
        ));
        assert!(ControlMessage::decode(br#"{"type":"reboot","v":1}"#).is_err());
        assert!(ControlMessage::decode(b"\xff\x00").is_err());
        assert!(LiveBatch::decode(br#"{"v":1,"origin":"x","values":[{"device":"BAD ID","metric":"speed_kmh","time":1,"value":1}]}"#).is_err());
        assert!(matches!(LiveBatch::decode(br#"{"v":9,"origin":"x"}"#), Err(BusError::Version(9))));
    }
}
