//! Live state and its fan-out. [`LiveHub`] holds the last value per (device, metric), the
//! newest traffic state per road segment and the open alerts, and broadcasts every change as
//! a [`LiveEvent`] on a bounded channel. A subscriber that falls behind loses events (the
//! channel never grows) and is told so by the receiver's `Lagged` error; it then takes a
//! fresh snapshot ([`LiveHub::snapshot`], [`LiveHub::segment_states`],
//! [`LiveHub::open_alerts`]) instead of being disconnected.
//!
//! Alerts reach the hub as [`LiveAlert`]s, the stored alert (store ids, as the REST API
//! shows them) *after* the store took the change: the hub never shows an alert the
//! database does not have. A change older than the one held (a raise arriving after its
//! acknowledgement, say) is ignored, so the held state only moves forward along the
//! lifecycle.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use telemetry::{DeviceId, DeviceState, EventTime, MetricId, Reading, SegmentId, StatusEvent};

use crate::fanout::{Routes, Subscription};

use crate::alert::AlertState;
use crate::segment_state::SegmentState;
use crate::window::WindowResult;

/// The current value of one (device, metric).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LiveValue {
    pub device: DeviceId,
    pub metric: MetricId,
    pub time: EventTime,
    pub value: f64,
}

pub use telemetry::alert::Clearance;

/// An alert as stored (its `id` is the store's) and as the wall shows it: the contract's
/// alert object, the same the REST API returns.
pub type LiveAlert = telemetry::alert::AlertRecord;

/// How far along the lifecycle a state is; the hub never moves an alert back. Raised and
/// returned rank alike: a returned alert is raised again while its condition comes back
/// (the store orders those moves; changes of one alert reach the hub in that order).
fn rank(state: AlertState) -> u8 {
    match state {
        AlertState::Raised | AlertState::Returned => 0,
        AlertState::Acknowledged => 1,
        AlertState::Cleared => 2,
    }
}

/// A change pushed to live subscribers.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveEvent {
    Value(LiveValue),
    Window(WindowResult),
    /// A segment window was emitted or corrected.
    Segment(SegmentState),
    /// An alert moved (raised, acknowledged, returned, cleared, shelved, suppressed…) or
    /// gained or lost members. Boxed: the alert object is the largest event.
    Alert(Box<LiveAlert>),
    /// A device said it went online or offline (only to subscribers with `statuses`).
    Status(StatusEvent),
    /// A road operation changed (created, edited, moved, annotated): the operation as the
    /// API shows it (`store::Operation`), for every subscriber.
    Operation(Arc<serde_json::Value>),
}

/// What a subscriber wants: values and windows of `devices` × `metrics` (an empty set means
/// all) when `values` is on; segment states of `segments` (`None`: none; an empty set: all);
/// alert changes when `alerts` is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionFilter {
    pub values: bool,
    pub devices: BTreeSet<DeviceId>,
    pub metrics: BTreeSet<MetricId>,
    pub segments: Option<BTreeSet<SegmentId>>,
    pub alerts: bool,
    /// Device status messages (the live bus forwards them; screens get presence in `kpi`).
    pub statuses: bool,
    /// Devices and segments taken out again by an `unsubscribe` naming them (an empty
    /// `devices`/`segments` set means "all", so removing keys needs its own set).
    pub excluded_devices: BTreeSet<DeviceId>,
    pub excluded_segments: BTreeSet<SegmentId>,
}

impl Default for SubscriptionFilter {
    /// Every value and window; no segments, no alerts (the original protocol).
    fn default() -> Self {
        Self {
            values: true,
            devices: BTreeSet::new(),
            metrics: BTreeSet::new(),
            segments: None,
            alerts: false,
            statuses: false,
            excluded_devices: BTreeSet::new(),
            excluded_segments: BTreeSet::new(),
        }
    }
}

impl SubscriptionFilter {
    pub fn matches(&self, device: &DeviceId, metric: MetricId) -> bool {
        self.values
            && (self.devices.is_empty() || self.devices.contains(device))
            && (self.metrics.is_empty() || self.metrics.contains(&metric))
            && !self.excluded_devices.contains(device)
    }

    pub fn matches_segment(&self, segment: &SegmentId) -> bool {
        self.segments.as_ref().is_some_and(|s| s.is_empty() || s.contains(segment))
            && !self.excluded_segments.contains(segment)
    }

    /// Take devices out of the subscription.
    pub fn remove_devices(&mut self, devices: impl IntoIterator<Item = DeviceId>) {
        for d in devices {
            if self.devices.is_empty() {
                self.excluded_devices.insert(d);
            } else {
                self.devices.remove(&d);
                if self.devices.is_empty() {
                    // The last listed device went: nothing is left, not "all".
                    self.values = false;
                }
            }
        }
    }

    /// Take segments out of the subscription.
    pub fn remove_segments(&mut self, segments: impl IntoIterator<Item = SegmentId>) {
        for seg in segments {
            match &mut self.segments {
                Some(set) if !set.is_empty() => {
                    set.remove(&seg);
                    if set.is_empty() {
                        self.segments = None;
                    }
                }
                Some(_) => {
                    self.excluded_segments.insert(seg);
                }
                None => {}
            }
        }
    }

    pub fn matches_event(&self, event: &LiveEvent) -> bool {
        match event {
            LiveEvent::Value(v) => self.matches(&v.device, v.metric),
            LiveEvent::Window(w) => self.matches(&w.device, w.metric),
            LiveEvent::Segment(s) => self.matches_segment(&s.segment),
            LiveEvent::Alert(_) => self.alerts,
            LiveEvent::Status(_) => self.statuses,
            LiveEvent::Operation(_) => true,
        }
    }
}

/// Cleared alert ids remembered so a late, older change cannot reopen them in the hub.
const REMEMBERED_CLEARED: usize = 4_096;

impl Presence {
    fn online(&self, now_ms: i64) -> bool {
        self.offline_ms.is_none_or(|off| self.heard_ms > off)
            && now_ms - self.heard_ms <= PRESENCE_WINDOW_MS
    }
}

#[derive(Debug, Default)]
struct AlertBoard {
    open: BTreeMap<i64, LiveAlert>,
    cleared: VecDeque<i64>,
}

/// A device is online while it was heard from (a reading or an `online` status) within
/// this long and did not say it went offline since. `GET /api/v1/catalogue` tells screens
/// this figure (`live.device_online_s`).
pub const PRESENCE_WINDOW_MS: i64 = 5 * 60_000;

/// How long a detector's latest speed counts towards its segment's grade on a screen that
/// grades segments from live values between segment windows (`live.speed_fresh_s` in
/// `GET /api/v1/catalogue`); older speeds are ignored and the segment shows its last
/// window's grade.
pub const SPEED_FRESH_MS: i64 = 90_000;

/// What the hub last heard from a device, in processing time.
#[derive(Debug, Clone, Copy, Default)]
struct Presence {
    heard_ms: i64,
    offline_ms: Option<i64>,
}

#[derive(Debug)]
pub struct LiveHub {
    values: RwLock<HashMap<(DeviceId, MetricId), (EventTime, f64)>>,
    presence: RwLock<HashMap<DeviceId, Presence>>,
    segments: RwLock<HashMap<SegmentId, SegmentState>>,
    alerts: RwLock<AlertBoard>,
    routes: Arc<RwLock<Routes>>,
    /// Per-subscriber queue bound (see [`crate::fanout`]).
    capacity: usize,
    readings: std::sync::atomic::AtomicU64,
}

impl LiveHub {
    /// A hub whose subscribers each queue at most `capacity` events (and `capacity × 16`
    /// distinct values) before they are resynchronised with a snapshot.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            values: RwLock::new(HashMap::new()),
            presence: RwLock::new(HashMap::new()),
            segments: RwLock::new(HashMap::new()),
            alerts: RwLock::new(AlertBoard::default()),
            routes: Arc::default(),
            capacity: capacity.max(16),
            readings: Default::default(),
        })
    }

    /// Start receiving the events `filter` selects (values conflated; see [`crate::fanout`]).
    pub fn subscribe(&self, filter: SubscriptionFilter) -> Subscription {
        Subscription::register(&self.routes, filter, self.capacity)
    }

    /// Like [`LiveHub::subscribe`] with another queue bound: the live bus forwards every
    /// change of the city and needs more room than a screen.
    pub fn subscribe_with_capacity(
        &self,
        filter: SubscriptionFilter,
        capacity: usize,
    ) -> Subscription {
        Subscription::register(&self.routes, filter, capacity)
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn dispatch(&self, events: &[Arc<LiveEvent>]) {
        if !events.is_empty() {
            self.routes.read().unwrap_or_else(|e| e.into_inner()).dispatch(events);
        }
    }

    /// Seed the open alerts (from the store at start) without broadcasting.
    pub fn seed_alerts(&self, alerts: impl IntoIterator<Item = LiveAlert>) {
        let mut board = self.alerts.write().unwrap_or_else(|e| e.into_inner());
        for a in alerts.into_iter().filter(|a| a.state.is_open()) {
            board.open.insert(a.id, a);
        }
    }

    /// Take a stored alert change and broadcast it, unless it is older than what the hub
    /// holds (see the module doc). Returns whether it was taken.
    pub fn publish_alert(&self, alert: LiveAlert) -> bool {
        {
            let mut board = self.alerts.write().unwrap_or_else(|e| e.into_inner());
            if board.cleared.contains(&alert.id) {
                return false;
            }
            if board
                .open
                .get(&alert.id)
                .is_some_and(|held| rank(held.state) > rank(alert.state) || *held == alert)
            {
                // Older than what is held, or the same change again (replicas forward it too).
                return false;
            }
            if alert.state.is_open() {
                board.open.insert(alert.id, alert.clone());
            } else {
                board.open.remove(&alert.id);
                if board.cleared.len() == REMEMBERED_CLEARED {
                    board.cleared.pop_front();
                }
                board.cleared.push_back(alert.id);
            }
        }
        self.dispatch(&[Arc::new(LiveEvent::Alert(Box::new(alert)))]);
        true
    }

    /// Broadcast a stored change of a road operation to every subscriber (the API does,
    /// after the store took it).
    pub fn publish_operation(&self, operation: serde_json::Value) {
        self.dispatch(&[Arc::new(LiveEvent::Operation(Arc::new(operation)))]);
    }

    /// Open alerts, oldest id first.
    pub fn open_alerts(&self) -> Vec<LiveAlert> {
        self.alerts.read().unwrap_or_else(|e| e.into_inner()).open.values().cloned().collect()
    }

    /// Take segment windows: each becomes the segment's state unless the hub holds a newer
    /// window of it (a correction of an older window is still broadcast).
    pub fn publish_segments(&self, states: Vec<SegmentState>) {
        if states.is_empty() {
            return;
        }
        {
            let mut map = self.segments.write().unwrap_or_else(|e| e.into_inner());
            for s in &states {
                let newer = map
                    .get(&s.segment)
                    .is_none_or(|held| (s.start, s.revision) >= (held.start, held.revision));
                if newer {
                    map.insert(s.segment.clone(), s.clone());
                }
            }
        }
        let events: Vec<Arc<LiveEvent>> =
            states.into_iter().map(|s| Arc::new(LiveEvent::Segment(s))).collect();
        self.dispatch(&events);
    }

    /// The current state of the segments the filter selects, by segment id.
    pub fn segment_states(&self, filter: &SubscriptionFilter) -> Vec<SegmentState> {
        let map = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<SegmentState> =
            map.values().filter(|s| filter.matches_segment(&s.segment)).cloned().collect();
        out.sort_by(|a, b| a.segment.cmp(&b.segment));
        out
    }

    /// The current state of one segment.
    pub fn segment_state(&self, segment: &SegmentId) -> Option<SegmentState> {
        self.segments.read().unwrap_or_else(|e| e.into_inner()).get(segment).cloned()
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

    /// Take a device's status message: `offline` (or its Last Will) marks it offline until
    /// it is heard from again; a live `online` counts as hearing from it (a retained one
    /// replayed by the broker does not).
    pub fn set_status(&self, status: &StatusEvent) {
        {
            let mut map = self.presence.write().unwrap_or_else(|e| e.into_inner());
            let p = map.entry(status.device.clone()).or_default();
            match status.state {
                // Taken after a reading (the live bus applies a batch's values first), the
                // status still wins: the last word heard is the device's.
                DeviceState::Offline => {
                    p.offline_ms = Some(status.received_at.millis().max(p.heard_ms))
                }
                DeviceState::Online if !status.retained => {
                    p.heard_ms = p.heard_ms.max(status.received_at.millis());
                    p.offline_ms = None;
                }
                DeviceState::Online => {}
            }
        }
        self.dispatch(&[Arc::new(LiveEvent::Status(status.clone()))]);
    }

    /// Whether a device is online at `now`; `None` when the hub never heard of it.
    pub fn device_online(&self, device: &DeviceId, now: EventTime) -> Option<bool> {
        self.presence
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(device)
            .map(|p| p.online(now.millis()))
    }

    /// Presence of each device, in order: `None` when the hub never heard of it, else
    /// whether it is online at `now` (as [`LiveHub::device_online`]) and when it was last
    /// heard from (`None` when only an `offline` status was heard). One lock for all.
    pub fn presences<'a>(
        &self,
        devices: impl IntoIterator<Item = &'a DeviceId>,
        now: EventTime,
    ) -> Vec<Option<(bool, Option<EventTime>)>> {
        let map = self.presence.read().unwrap_or_else(|e| e.into_inner());
        devices
            .into_iter()
            .map(|d| {
                map.get(d).map(|p| {
                    (p.online(now.millis()), (p.heard_ms > 0).then_some(EventTime(p.heard_ms)))
                })
            })
            .collect()
    }

    /// (online, offline) devices among those the hub heard of.
    pub fn presence_counts(&self, now: EventTime) -> (usize, usize) {
        let map = self.presence.read().unwrap_or_else(|e| e.into_inner());
        let online = map.values().filter(|p| p.online(now.millis())).count();
        (online, map.len() - online)
    }

    /// Apply readings; broadcast those that are newer than the value held.
    pub fn apply(&self, readings: &[Reading]) {
        self.count_readings(readings.len() as u64);
        self.mark_heard(readings.iter().map(|r| &r.device));
        self.merge_values(readings.iter().map(|r| LiveValue {
            device: r.device.clone(),
            metric: r.metric,
            time: r.time,
            value: r.value,
        }));
    }

    /// Apply values another process took (the live bus): `heard` when they just arrived
    /// (deltas), not when they are a snapshot of what is held there. Readings are counted
    /// separately ([`LiveHub::count_readings`]), as values arrive conflated.
    pub fn apply_values(&self, values: Vec<LiveValue>, heard: bool) {
        if heard {
            self.mark_heard(values.iter().map(|v| &v.device));
        }
        self.merge_values(values.into_iter());
    }

    /// Count readings taken (for the readings/s figure).
    pub fn count_readings(&self, n: u64) {
        self.readings.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn mark_heard<'a>(&self, devices: impl Iterator<Item = &'a DeviceId>) {
        let now = EventTime::now().millis();
        let mut presence = self.presence.write().unwrap_or_else(|e| e.into_inner());
        let mut last: Option<&DeviceId> = None;
        for d in devices {
            if last != Some(d) {
                let p = presence.entry(d.clone()).or_default();
                p.heard_ms = now;
                p.offline_ms = None;
                last = Some(d);
            }
        }
    }

    fn merge_values(&self, values: impl Iterator<Item = LiveValue>) {
        let mut changed = Vec::new();
        {
            let mut map = self.values.write().unwrap_or_else(|e| e.into_inner());
            for v in values {
                let key = (v.device.clone(), v.metric);
                let newer = map.get(&key).is_none_or(|(t, _)| v.time >= *t);
                if newer {
                    map.insert(key, (v.time, v.value));
                    changed.push(Arc::new(LiveEvent::Value(v)));
                }
            }
        }
        self.dispatch(&changed);
    }

    pub fn publish_windows(&self, windows: Vec<WindowResult>) {
        let events: Vec<Arc<LiveEvent>> =
            windows.into_iter().map(|w| Arc::new(LiveEvent::Window(w))).collect();
        self.dispatch(&events);
    }

    /// Current values matching `filter`, ordered by device then metric.
    pub fn snapshot(&self, filter: &SubscriptionFilter) -> Vec<LiveValue> {
        let map = self.values.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<LiveValue> = map
            .iter()
            .filter(|((d, m), _)| filter.matches(d, *m))
            .map(|((d, m), (t, v))| LiveValue {
                device: d.clone(),
                metric: *m,
                time: *t,
                value: *v,
            })
            .collect();
        out.sort_by(|a, b| (&a.device, a.metric).cmp(&(&b.device, b.metric)));
        out
    }

    /// Readings applied since start (for rates).
    pub fn readings_applied(&self) -> u64 {
        self.readings.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every segment's current state.
    pub fn all_segment_states(&self) -> Vec<SegmentState> {
        self.segments.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.values.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
