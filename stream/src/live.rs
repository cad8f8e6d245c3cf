//! Live state and its fan-out. [`LiveHub`] holds the last value per (device, metric) and
//! broadcasts every change as a [`LiveEvent`] on a bounded channel. A subscriber that falls
//! behind loses events (the channel never grows) and is told so by the receiver's `Lagged`
//! error; it then takes a fresh [`LiveHub::snapshot`] instead of being disconnected.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use telemetry::{DeviceId, EventTime, MetricId, Reading};
use tokio::sync::broadcast;

use crate::window::WindowResult;

/// The current value of one (device, metric).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LiveValue {
    pub device: DeviceId,
    pub metric: MetricId,
    pub time: EventTime,
    pub value: f64,
}

/// A change pushed to live subscribers.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveEvent {
    Value(LiveValue),
    Window(WindowResult),
}

impl LiveEvent {
    pub fn device(&self) -> &DeviceId {
        match self {
            LiveEvent::Value(v) => &v.device,
            LiveEvent::Window(w) => &w.device,
        }
    }

    pub fn metric(&self) -> MetricId {
        match self {
            LiveEvent::Value(v) => v.metric,
            LiveEvent::Window(w) => w.metric,
        }
    }
}

/// Which devices and metrics a subscriber wants; an empty set means all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionFilter {
    pub devices: BTreeSet<DeviceId>,
    pub metrics: BTreeSet<MetricId>,
}

impl SubscriptionFilter {
    pub fn matches(&self, device: &DeviceId, metric: MetricId) -> bool {
        (self.devices.is_empty() || self.devices.contains(device)) && (self.metrics.is_empty() || self.metrics.contains(&metric))
    }
}

#[derive(Debug)]
pub struct LiveHub {
    values: RwLock<HashMap<(DeviceId, MetricId), (EventTime, f64)>>,
    tx: broadcast::Sender<Arc<LiveEvent>>,
}

impl LiveHub {
    pub fn new(buffer: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(buffer.max(16));
        Arc::new(Self { values: RwLock::new(HashMap::new()), tx })
    }

    /// Seed state (e.g. from the store's latest values at start) without broadcasting.
    pub fn seed(&self, values: impl IntoIterator<Item = LiveValue>) {
        let mut map = self.values.write().unwrap_or_else(|e| e.into_inner());
        for v in values {
            let slot = map.entry((v.device, v.metric)).or_insert((v.time, v.value));
            if v.time >= slot.0 {
                *slot = (v.time, v.value);
            }
        }
    }

    /// Apply readings; broadcast those that are newer than the value held.
    pub fn apply(&self, readings: &[Reading]) {
        let mut changed = Vec::new();
        {
            let mut map = self.values.write().unwrap_or_else(|e| e.into_inner());
            for r in readings {
                let key = (r.device.clone(), r.metric);
                let newer = map.get(&key).is_none_or(|(t, _)| r.time >= *t);
                if newer {
                    map.insert(key, (r.time, r.value));
                    changed.push(LiveValue { device: r.device.clone(), metric: r.metric, time: r.time, value: r.value });
                }
            }
        }
        for v in changed {
            // No receivers is fine: nobody is watching.
            let _ = self.tx.send(Arc::new(LiveEvent::Value(v)));
        }
    }

    pub fn publish_windows(&self, windows: Vec<WindowResult>) {
        for w in windows {
            let _ = self.tx.send(Arc::new(LiveEvent::Window(w)));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }

    /// Current values matching `filter`, ordered by device then metric.
    pub fn snapshot(&self, filter: &SubscriptionFilter) -> Vec<LiveValue> {
        let map = self.values.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<LiveValue> = map
            .iter()
            .filter(|((d, m), _)| filter.matches(d, *m))
            .map(|((d, m), (t, v))| LiveValue { device: d.clone(), metric: *m, time: *t, value: *v })
            .collect();
        out.sort_by(|a, b| (&a.device, a.metric).cmp(&(&b.device, b.metric)));
        out
    }

    pub fn len(&self) -> usize {
        self.values.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn r(dev: &str, t: i64, v: f64) -> Reading {
        Reading { device: DeviceId::parse(dev).unwrap(), metric: MetricId::SpeedKmh, time: EventTime(t), value: v, seq: None }
    }

    #[test]
    fn older_readings_do_not_replace_newer_ones_and_are_not_broadcast() {
        let hub = LiveHub::new(16);
        let mut rx = hub.subscribe();
        hub.apply(&[r("a", 2_000, 20.0), r("a", 1_000, 10.0), r("b", 1_000, 5.0)]);
        let snap = hub.snapshot(&SubscriptionFilter::default());
        assert_eq!(snap.iter().map(|v| (v.device.as_str(), v.value)).collect::<Vec<_>>(), vec![("a", 20.0), ("b", 5.0)]);
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push(e.device().to_string());
        }
        assert_eq!(got, vec!["a", "b"]);
    }

    #[test]
    fn snapshot_honours_the_filter() {
        let hub = LiveHub::new(16);
        hub.apply(&[r("a", 1, 1.0), r("b", 1, 2.0)]);
        let filter = SubscriptionFilter { devices: [DeviceId::parse("b").unwrap()].into(), metrics: BTreeSet::new() };
        let snap = hub.snapshot(&filter);
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].value, 2.0);
        let none = SubscriptionFilter { devices: BTreeSet::new(), metrics: [MetricId::No2Ugm3].into() };
        assert!(hub.snapshot(&none).is_empty());
    }

    #[test]
    fn a_slow_subscriber_lags_instead_of_growing_the_buffer() {
        let hub = LiveHub::new(16);
        let mut rx = hub.subscribe();
        for i in 0..100 {
            hub.apply(&[r("a", i, i as f64)]);
        }
        assert!(matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Lagged(84))));
    }
}
