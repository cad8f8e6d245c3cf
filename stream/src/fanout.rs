//! Routing live events to the subscribers that want them.
//!
//! Each subscriber (a websocket session) has a [`Subscription`]: a bounded queue the hub
//! fills and a [`Notify`] that wakes its task. The hub indexes subscriptions by device and
//! by segment, so an event costs a lookup plus one push per *interested* subscriber: ten
//! thousand wall screens watching one segment each do not all wake for every reading of
//! the city. In the queue:
//! - values are **conflated**: one entry per (device, metric), the latest by time;
//! - other events (windows, segment states, alerts) queue in order, at most `capacity`;
//!   beyond that, or beyond `capacity × 16` distinct values, the queue is dropped and
//!   marked lagged, and the subscriber sends a fresh snapshot instead (it is never
//!   disconnected for being slow, and its memory never grows past the bound).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock, Weak};

use telemetry::{DeviceId, MetricId, SegmentId};
use tokio::sync::Notify;

use crate::live::{LiveEvent, LiveValue, SubscriptionFilter};

/// What a subscriber has not taken yet.
#[derive(Debug, Default)]
pub struct Pending {
    pub values: BTreeMap<(DeviceId, MetricId), LiveValue>,
    pub events: VecDeque<Arc<LiveEvent>>,
    /// The queue overflowed and was dropped: send a snapshot.
    pub lagged: bool,
}

#[derive(Debug)]
struct Queue {
    pending: Mutex<Pending>,
    notify: Notify,
    capacity: usize,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue an event; whether the subscriber needs waking (it was idle).
    fn push(&self, event: &Arc<LiveEvent>) -> bool {
        let mut p = self.lock();
        if p.lagged {
            return false;
        }
        let was_empty = p.values.is_empty() && p.events.is_empty();
        match &**event {
            LiveEvent::Value(v) => {
                let key = (v.device.clone(), v.metric);
                match p.values.get_mut(&key) {
                    Some(held) if held.time > v.time => {}
                    Some(held) => *held = v.clone(),
                    None => {
                        p.values.insert(key, v.clone());
                    }
                }
                if p.values.len() > self.capacity * 16 {
                    *p = Pending { lagged: true, ..Pending::default() };
                }
            }
            _ => {
                p.events.push_back(event.clone());
                if p.events.len() > self.capacity {
                    *p = Pending { lagged: true, ..Pending::default() };
                }
            }
        }
        was_empty || p.lagged
    }
}

#[derive(Debug)]
struct Client {
    filter: SubscriptionFilter,
    queue: Arc<Queue>,
}

/// The index of subscriptions.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    next_id: u64,
    clients: HashMap<u64, Client>,
    by_device: HashMap<DeviceId, Vec<u64>>,
    all_devices: Vec<u64>,
    by_segment: HashMap<SegmentId, Vec<u64>>,
    all_segments: Vec<u64>,
    alerts: Vec<u64>,
    statuses: Vec<u64>,
}

fn remove_id(list: &mut Vec<u64>, id: u64) {
    list.retain(|x| *x != id);
}

impl Routes {
    fn index(&mut self, id: u64) {
        let Some(c) = self.clients.get(&id) else { return };
        let f = &c.filter;
        if f.values {
            if f.devices.is_empty() {
                self.all_devices.push(id);
            } else {
                for d in &f.devices {
                    self.by_device.entry(d.clone()).or_default().push(id);
                }
            }
        }
        match &f.segments {
            Some(s) if s.is_empty() => self.all_segments.push(id),
            Some(s) => {
                for seg in s {
                    self.by_segment.entry(seg.clone()).or_default().push(id);
                }
            }
            None => {}
        }
        if f.alerts {
            self.alerts.push(id);
        }
        if f.statuses {
            self.statuses.push(id);
        }
    }

    fn unindex(&mut self, id: u64) {
        let Some(c) = self.clients.get(&id) else { return };
        let f = c.filter.clone();
        remove_id(&mut self.all_devices, id);
        remove_id(&mut self.all_segments, id);
        remove_id(&mut self.alerts, id);
        remove_id(&mut self.statuses, id);
        for d in &f.devices {
            if let Some(list) = self.by_device.get_mut(d) {
                remove_id(list, id);
                if list.is_empty() {
                    self.by_device.remove(d);
                }
            }
        }
        for seg in f.segments.iter().flatten() {
            if let Some(list) = self.by_segment.get_mut(seg) {
                remove_id(list, id);
                if list.is_empty() {
                    self.by_segment.remove(seg);
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }

    /// Route events to the interested subscribers and wake those that were idle.
    pub(crate) fn dispatch(&self, events: &[Arc<LiveEvent>]) {
        let mut wake: Vec<&Arc<Queue>> = Vec::new();
        let mut offer = |id: &u64, event: &Arc<LiveEvent>| {
            if let Some(c) = self.clients.get(id) {
                if c.filter.matches_event(event) && c.queue.push(event) {
                    wake.push(&c.queue);
                }
            }
        };
        for e in events {
            match &**e {
                LiveEvent::Value(LiveValue { device, .. })
                | LiveEvent::Window(crate::window::WindowResult { device, .. }) => {
                    self.by_device
                        .get(device)
                        .into_iter()
                        .flatten()
                        .chain(self.all_devices.iter())
                        .for_each(|id| offer(id, e));
                }
                LiveEvent::Segment(s) => {
                    self.by_segment
                        .get(&s.segment)
                        .into_iter()
                        .flatten()
                        .chain(self.all_segments.iter())
                        .for_each(|id| offer(id, e));
                }
                LiveEvent::Alert(_) => self.alerts.iter().for_each(|id| offer(id, e)),
                LiveEvent::Status(_) => self.statuses.iter().for_each(|id| offer(id, e)),
                LiveEvent::Operation(_) => self.clients.keys().for_each(|id| offer(id, e)),
            }
        }
        for q in wake {
            q.notify.notify_one();
        }
    }
}

/// A subscriber's end: its queue, and its place in the hub's index until dropped.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    queue: Arc<Queue>,
    routes: Weak<RwLock<Routes>>,
}

impl Subscription {
    pub(crate) fn register(
        routes: &Arc<RwLock<Routes>>,
        filter: SubscriptionFilter,
        capacity: usize,
    ) -> Self {
        let queue = Arc::new(Queue {
            pending: Mutex::default(),
            notify: Notify::new(),
            capacity: capacity.max(1),
        });
        let mut r = routes.write().unwrap_or_else(|e| e.into_inner());
        r.next_id += 1;
        let id = r.next_id;
        r.clients.insert(id, Client { filter, queue: queue.clone() });
        r.index(id);
        Self { id, queue, routes: Arc::downgrade(routes) }
    }

    /// Replace the filter; what was queued under the old one is dropped.
    pub fn set_filter(&self, filter: SubscriptionFilter) {
        if let Some(routes) = self.routes.upgrade() {
            let mut r = routes.write().unwrap_or_else(|e| e.into_inner());
            r.unindex(self.id);
            if let Some(c) = r.clients.get_mut(&self.id) {
                c.filter = filter;
            }
            r.index(self.id);
        }
        *self.queue.lock() = Pending::default();
    }

    /// Wait until something is queued (returns at once if something already is).
    pub async fn ready(&self) {
        self.queue.notify.notified().await;
    }

    /// Take everything queued.
    pub fn take(&self) -> Pending {
        std::mem::take(&mut *self.queue.lock())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(routes) = self.routes.upgrade() {
            let mut r = routes.write().unwrap_or_else(|e| e.into_inner());
            r.unindex(self.id);
            r.clients.remove(&self.id);
        }
    }
}
