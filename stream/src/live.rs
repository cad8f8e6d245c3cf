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
mod tests {
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
        let none = SubscriptionFilter {
            metrics: [MetricId::No2Ugm3].into(),
            ..SubscriptionFilter::default()
        };
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
        assert!(
            !hub.publish_alert(alert(2, AlertState::Raised)),
            "a cleared alert is not reopened"
        );
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
}
