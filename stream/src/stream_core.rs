//! [`StreamCore`]: the whole stream logic of one process behind one synchronous API, so the
//! service task only moves messages and the benchmark measures exactly what runs.
//!
//! Per reading: `Windows::add` (device windows) and `AlertEngine::on_reading`. Every
//! device window emitted goes to `SegmentWindows::on_window`; every segment window emitted
//! goes to `AlertEngine::on_segment_state` (LOS rules, segment thresholds). `tick(now)` advances the three on
//! the same processing clock. Everything emitted is appended to an [`Emitted`] for the
//! caller to publish (windows, segment states) and persist (alert outputs).
//!
//! Invariants kept here:
//! - A segment window reaches the alert engine exactly when it is emitted (first emission
//!   and each correction), in emission order.
//! - Operator actions ([`StreamCore::operator`]) mirror a change the store has already
//!   made; what the engine returns for them is not emitted again, so it is never stored
//!   twice.
//! - Status messages the broker replays from its retained store on subscribe
//!   ([`StatusEvent::retained`]) do not count as a sign of life: a retained `online` is the
//!   device's *last* word, not proof it is alive now. A retained `offline` (a Last Will that
//!   fired while we were away) does raise.

use std::collections::{BTreeMap, HashSet};

use telemetry::{
    DeviceId, DeviceState, EventTime, MetricId, Reading, RoadSegment, SegmentId, StatusEvent,
};

use crate::alert::{
    Alert, AlertEngine, AlertEngineState, AlertKey, AlertOutput, DeviceProfile, DeviceStatus,
    EngineCheckpoint, LifecycleError, RuleSet, StatePart,
};
use crate::config::StreamConfig;
use crate::forecast::{Forecaster, FORECAST_METRIC};
use crate::segment_state::{SegmentEvent, SegmentState, SegmentWindows};
use crate::window::{WindowResult, Windows};

/// What one call emitted.
#[derive(Debug, Default, PartialEq)]
pub struct Emitted {
    pub windows: Vec<WindowResult>,
    pub segments: Vec<SegmentState>,
    /// Segments whose current LOS changed.
    pub los_changes: u64,
    pub alerts: Vec<AlertOutput>,
}

impl Emitted {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.segments.is_empty() && self.alerts.is_empty()
    }
}

/// The road segments and the devices as the registry (the store) holds them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    pub segments: Vec<RoadSegment>,
    pub devices: Vec<DeviceProfile>,
    /// Segments of the road operations that explain alerts now (active closures and
    /// roadworks), each with the operation's id: alerts on them and their devices are
    /// suppressed by design.
    pub operations: BTreeMap<SegmentId, String>,
}

/// An operator's move on an alert, already stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorAction {
    Acknowledge,
    Clear,
    /// Shelved until `until` (the operator is the command's `by`, the time its `at`).
    Shelve {
        reason: String,
        until: EventTime,
    },
    Unshelve,
}

impl OperatorAction {
    /// The audit log's and the logs' name of the action.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Acknowledge => "alert.acknowledge",
            Self::Clear => "alert.clear",
            Self::Shelve { .. } => "alert.shelve",
            Self::Unshelve => "alert.unshelve",
        }
    }
}

/// The stream logic of one process. See the module documentation.
#[derive(Debug)]
pub struct StreamCore {
    windows: Windows,
    segments: SegmentWindows,
    engine: AlertEngine,
    forecaster: Forecaster,
    window_buf: Vec<WindowResult>,
    segment_buf: Vec<SegmentEvent>,
    /// Readings [`StreamCore::rebuild`] put in the windows from the store: a redelivery of
    /// one (the broker resends what a dead owner committed but had not acknowledged) is
    /// not windowed again. Dropped once the wall clock passes `restored_until`, when every
    /// window they could reach is sealed.
    restored: HashSet<(DeviceId, MetricId, i64)>,
    restored_until: i64,
    /// Redeliveries of restored readings not windowed again.
    redelivered: u64,
    /// Window + watermark delay + allowed lateness, in ms: how far back windows are open.
    open_span: i64,
}

impl StreamCore {
    pub fn new(config: &StreamConfig, rules: RuleSet) -> Self {
        Self {
            windows: Windows::new(config),
            segments: SegmentWindows::new(config),
            engine: AlertEngine::new(rules),
            forecaster: Forecaster::new(config.forecast.clone(), config.window),
            window_buf: Vec::new(),
            segment_buf: Vec::new(),
            restored: HashSet::new(),
            restored_until: i64::MIN,
            redelivered: 0,
            open_span: (config.window + config.watermark_delay + config.allowed_lateness)
                .as_millis() as i64,
        }
    }

    /// How far back from now windows may still be open or correctable (window + watermark
    /// delay + allowed lateness): the stored readings [`StreamCore::rebuild`] needs.
    pub fn open_span(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.open_span as u64)
    }

    /// Rebuild the windows of a partition taken over from the readings the store holds
    /// for its devices (those of the last [`StreamCore::open_span`], in time order),
    /// before its broker backlog is taken. The readings go to the windows only: the alert
    /// engine's state comes from its checkpoint. A later redelivery of any of them is not
    /// windowed twice.
    pub fn rebuild(&mut self, readings: &[Reading], now: EventTime, out: &mut Emitted) {
        for r in readings {
            if self.restored.insert((r.device.clone(), r.metric, r.time.millis())) {
                self.windows.add(r, &mut self.window_buf);
                self.restored_until = self.restored_until.max(r.time.millis() + self.open_span);
            }
        }
        self.route_windows(now, out);
    }

    /// Replace segments, device→segment links and device profiles.
    pub fn set_registry(&mut self, registry: Registry, now: EventTime, out: &mut Emitted) {
        let links: Vec<(DeviceId, SegmentId)> = registry
            .devices
            .iter()
            .filter_map(|d| d.segment.clone().map(|s| (d.id.clone(), s)))
            .collect();
        self.forecaster
            .set_segments(registry.segments.iter().map(|s| (s.id.clone(), s.free_flow_kmh)));
        self.engine
            .set_lanes(registry.segments.iter().map(|s| (s.id.clone(), s.lanes.max(1))).collect());
        self.segments.set_segments(registry.segments);
        self.segments.set_links(links);
        self.engine.set_devices(registry.devices, now, &mut out.alerts);
        self.engine.set_operations(registry.operations, now, &mut out.alerts);
    }

    /// The learned baselines the anomaly rules judge against and forecasts start from.
    pub fn set_baselines(&mut self, baselines: std::sync::Arc<telemetry::baseline::Baselines>) {
        self.forecaster.set_baselines(baselines.clone());
        self.engine.set_baselines(baselines);
    }

    /// The baselines the anomaly rules in force and the forecasts need.
    pub fn baseline_needs(&self) -> crate::service::BaselineNeeds {
        let mut needs = self.engine.baseline_needs();
        if self.forecaster.enabled() {
            needs.insert((telemetry::baseline::BaselineOn::Segment, FORECAST_METRIC));
        }
        needs
    }

    /// Replace the alert rules (alerts of removed or changed rules are cleared).
    pub fn set_rules(&mut self, rules: RuleSet, now: EventTime, out: &mut Emitted) {
        self.engine.set_rules(rules, now, &mut out.alerts);
    }

    /// Readings that arrived together at `now`. (Readings past the allowed lateness are
    /// counted in [`StreamCore::too_late`]; the store still has them.)
    pub fn on_readings(&mut self, readings: &[Reading], now: EventTime, out: &mut Emitted) {
        for r in readings {
            if self.restored.is_empty()
                || !self.restored.contains(&(r.device.clone(), r.metric, r.time.millis()))
            {
                self.windows.add(r, &mut self.window_buf);
            } else {
                self.redelivered += 1;
            }
            self.engine.on_reading(r, now, &mut out.alerts);
        }
        self.route_windows(now, out);
    }

    /// A device status message.
    pub fn on_status(&mut self, event: &StatusEvent, out: &mut Emitted) {
        let status = match (event.state, event.retained) {
            (DeviceState::Online, true) => return,
            (DeviceState::Online, false) => DeviceStatus::Online,
            (DeviceState::Offline, _) => DeviceStatus::Offline,
        };
        self.engine.on_status(&event.device, status, event.received_at, &mut out.alerts);
    }

    /// Advance the processing clock: close quiet windows, emit due segment windows, raise
    /// offline alerts.
    pub fn tick(&mut self, now: EventTime, out: &mut Emitted) {
        if !self.restored.is_empty() && now.millis() > self.restored_until {
            self.restored = HashSet::new();
        }
        self.windows.tick(now, &mut self.window_buf);
        self.route_windows(now, out);
        self.segments.tick(now, &mut self.segment_buf);
        self.route_segments(now, out);
        self.engine.tick(now, &mut out.alerts);
    }

    /// Emit everything pending (shutdown).
    pub fn flush(&mut self, now: EventTime, out: &mut Emitted) {
        self.windows.flush(&mut self.window_buf);
        self.route_windows(now, out);
        self.segments.flush(&mut self.segment_buf);
        self.route_segments(now, out);
    }

    fn route_windows(&mut self, now: EventTime, out: &mut Emitted) {
        if self.window_buf.is_empty() {
            return;
        }
        for w in &self.window_buf {
            self.segments.on_window(w, &mut self.segment_buf);
        }
        out.windows.append(&mut self.window_buf);
        self.route_segments(now, out);
    }

    fn route_segments(&mut self, now: EventTime, out: &mut Emitted) {
        for event in self.segment_buf.drain(..) {
            match event {
                SegmentEvent::State(mut s) => {
                    s.forecast = self.forecaster.forecast(&s);
                    self.engine.on_segment_state(&s, now, &mut out.alerts);
                    out.segments.push(s);
                }
                SegmentEvent::LosChanged { .. } => out.los_changes += 1,
            }
        }
    }

    /// Mirror an operator's stored action on the open alert of `key`. Returns whether the
    /// engine had that alert open (it may have cleared it meanwhile, or never known it).
    pub fn operator(
        &mut self,
        action: OperatorAction,
        key: &AlertKey,
        by: &str,
        note: Option<String>,
        at: EventTime,
    ) -> Result<bool, LifecycleError> {
        let Some(id) = self.engine.open_alerts().find(|a| &a.key == key).map(|a| a.id) else {
            return Ok(false);
        };
        match action {
            OperatorAction::Acknowledge => self.engine.acknowledge(id, by, note, at).map(|_| true),
            OperatorAction::Clear => self.engine.clear(id, by, note, at).map(|_| true),
            OperatorAction::Shelve { reason, until } => self
                .engine
                .shelve(id, crate::alert::Shelf { by: by.to_owned(), reason, at, until })
                .map(|_| true),
            OperatorAction::Unshelve => self.engine.unshelve(id, by, at).map(|_| true),
        }
    }

    pub fn open_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.engine.open_alerts()
    }

    /// The detector-health flag intervals opened or closed since the last call, in order
    /// (for the store: `detector_flags`).
    pub fn take_flags(&mut self) -> Vec<crate::alert::FlagEdge> {
        self.engine.take_flags()
    }

    pub fn engine(&self) -> &AlertEngine {
        &self.engine
    }

    pub fn segment_windows(&self) -> &SegmentWindows {
        &self.segments
    }

    /// Redeliveries of readings [`StreamCore::rebuild`] had windowed, not windowed again.
    pub fn redelivered(&self) -> u64 {
        self.redelivered
    }

    /// Readings past the allowed lateness (not windowed; still stored).
    pub fn too_late(&self) -> u64 {
        self.windows.too_late
    }

    pub fn export_state(&self) -> AlertEngineState {
        self.engine.export_state()
    }

    /// An incremental checkpoint of the alert engine (see [`AlertEngine::checkpoint`]).
    pub fn checkpoint(
        &mut self,
        force_full: bool,
    ) -> (EngineCheckpoint, impl Iterator<Item = StatePart> + '_) {
        self.engine.checkpoint(force_full)
    }

    /// Restore the alert engine (after `set_rules` and `set_registry`).
    pub fn restore_state(&mut self, state: AlertEngineState, now: EventTime, out: &mut Emitted) {
        self.engine.restore_state(state, now, &mut out.alerts);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use telemetry::MetricId;

    use super::*;
    use crate::alert::{AlertRulesConfig, AlertState, AlertTransition, Subject};
    use crate::los::LevelOfService;

    const T0: i64 = 1_763_892_000_000;

    fn config() -> StreamConfig {
        StreamConfig {
            window: Duration::from_secs(10),
            watermark_delay: Duration::from_secs(1),
            allowed_lateness: Duration::from_secs(10),
            ..StreamConfig::default()
        }
    }

    fn rules(text: &str) -> RuleSet {
        toml::from_str::<AlertRulesConfig>(text).unwrap().validate().unwrap()
    }

    fn los_rules() -> RuleSet {
        rules("air_quality_defaults = false\n[[rules]]\nid = \"congestion\"\nseverity = \"critical\"\nscope = { segments = [\"s1\"] }\nlos = { at_or_worse = \"E\", for = \"0s\" }\n")
    }

    fn segment() -> RoadSegment {
        RoadSegment {
            id: SegmentId::parse("s1").unwrap(),
            name: "S1".into(),
            kind: "urban".into(),
            coordinates: vec![[11.0, 43.0], [11.001, 43.001]],
            length_m: 150.0,
            lanes: 2,
            speed_limit_kmh: 50.0,
            free_flow_kmh: 50.0,
            capacity_vph: 1800.0,
        }
    }

    fn registry() -> Registry {
        let dev = |id: &str| DeviceProfile {
            id: DeviceId::parse(id).unwrap(),
            kind: Some("traffic_loop".into()),
            segment: Some(SegmentId::parse("s1").unwrap()),
            interval: None,
        };
        Registry {
            segments: vec![segment()],
            devices: vec![dev("loop-a"), dev("loop-b")],
            ..Registry::default()
        }
    }

    fn speeds(t: i64, v: f64) -> Vec<Reading> {
        ["loop-a", "loop-b"]
            .iter()
            .flat_map(|d| {
                [(MetricId::SpeedKmh, v), (MetricId::VehicleCount, 5.0)].map(|(metric, value)| {
                    Reading {
                        device: DeviceId::parse(d).unwrap(),
                        metric,
                        time: EventTime(t),
                        value,
                        seq: None,
                    }
                })
            })
            .collect()
    }

    fn transitions(out: &Emitted) -> Vec<(AlertState, Option<String>)> {
        out.alerts
            .iter()
            .filter_map(|o| match o {
                AlertOutput::Transition { transition: AlertTransition { to, by, .. }, .. } => {
                    Some((*to, by.clone()))
                }
                AlertOutput::Updated { .. } => None,
            })
            .collect()
    }

    /// One window of readings at `speed`, then ticks until the segment window is emitted.
    fn window(core: &mut StreamCore, k: i64, speed: f64, out: &mut Emitted) {
        let start = T0 + k * 10_000;
        for s in 0..10 {
            core.on_readings(&speeds(start + s * 1_000, speed), EventTime(start + s * 1_000), out);
        }
        core.tick(EventTime(start + 10_000 + 1_000), out);
    }

    /// A partition taken over: its windows rebuilt from stored readings equal those of a
    /// core that saw every reading once, although the broker redelivers some stored ones.
    #[test]
    fn rebuilt_windows_do_not_count_redelivered_readings_twice() {
        let mut whole = StreamCore::new(&config(), los_rules());
        let mut taker = StreamCore::new(&config(), los_rules());
        let (mut a, mut b) = (Emitted::default(), Emitted::default());
        whole.set_registry(registry(), EventTime(T0), &mut a);
        taker.set_registry(registry(), EventTime(T0), &mut b);
        let batches: Vec<Vec<Reading>> =
            (0..10).map(|s| speeds(T0 + s * 1_000, 20.0 + s as f64)).collect();
        for (s, batch) in batches.iter().enumerate() {
            whole.on_readings(batch, EventTime(T0 + s as i64 * 1_000), &mut a);
        }
        // The dead owner had stored the first six seconds; the last two of them were
        // never acknowledged, so the broker redelivers them with the rest.
        let stored: Vec<Reading> = batches[..6].concat();
        taker.rebuild(&stored, EventTime(T0 + 6_000), &mut b);
        for (s, batch) in batches.iter().enumerate().skip(4) {
            taker.on_readings(batch, EventTime(T0 + s as i64 * 1_000), &mut b);
        }
        assert_eq!(taker.redelivered(), 8, "2 seconds of 2 devices' 2 metrics");
        let end = EventTime(T0 + 30_000);
        whole.tick(end, &mut a);
        taker.tick(end, &mut b);
        let finals = |out: &Emitted| {
            let mut m = BTreeMap::new();
            for w in &out.windows {
                m.insert((w.device.clone(), w.metric, w.start), w.aggregate);
            }
            m
        };
        assert_eq!(finals(&b), finals(&a));
        assert_eq!(finals(&a).values().map(|p| p.count).sum::<i64>(), 40);
        assert_eq!(b.segments.last(), a.segments.last());
        // Once every window they reach is sealed, the rebuilt keys are forgotten.
        taker.tick(EventTime(T0 + 60_000), &mut b);
        assert!(taker.restored.is_empty());
    }

    #[test]
    fn segment_windows_reach_the_los_rule_and_its_alert_clears_on_recovery() {
        let mut core = StreamCore::new(&config(), los_rules());
        let mut out = Emitted::default();
        core.set_registry(registry(), EventTime(T0), &mut out);
        window(&mut core, 0, 45.0, &mut out);
        assert_eq!(out.segments.len(), 1);
        assert_eq!(out.segments[0].los, Some(LevelOfService::A));
        assert!(out.alerts.is_empty());
        window(&mut core, 1, 17.5, &mut out); // 35 % of free flow: E
        assert_eq!(out.segments.last().unwrap().los, Some(LevelOfService::E));
        assert_eq!(transitions(&out), vec![(AlertState::Raised, None)]);
        window(&mut core, 2, 10.0, &mut out); // F: same open alert, nothing new
        assert_eq!(out.segments.last().unwrap().los, Some(LevelOfService::F));
        assert_eq!(transitions(&out).len(), 1);
        assert_eq!(out.los_changes, 3);
        window(&mut core, 3, 45.0, &mut out);
        assert_eq!(
            transitions(&out),
            vec![(AlertState::Raised, None), (AlertState::Returned, None)],
            "recovered unacknowledged: returned, open until acknowledged"
        );
        assert_eq!(core.open_alerts().count(), 1);
    }

    #[test]
    fn operator_actions_mirror_the_store_without_emitting() {
        let mut core = StreamCore::new(&config(), los_rules());
        let mut out = Emitted::default();
        core.set_registry(registry(), EventTime(T0), &mut out);
        window(&mut core, 0, 10.0, &mut out);
        let key = AlertKey {
            rule: crate::alert::RuleId::parse("congestion").unwrap(),
            subject: Subject::Segment(SegmentId::parse("s1").unwrap()),
        };
        out.alerts.clear();
        assert_eq!(
            core.operator(
                OperatorAction::Acknowledge,
                &key,
                "ada",
                Some("on it".into()),
                EventTime(T0 + 20_000)
            ),
            Ok(true)
        );
        assert!(out.alerts.is_empty());
        assert_eq!(core.open_alerts().next().unwrap().state, AlertState::Acknowledged);
        assert!(
            core.operator(OperatorAction::Acknowledge, &key, "ada", None, EventTime(T0 + 20_000))
                .is_err(),
            "twice is refused"
        );
        // Recovery clears the acknowledged alert automatically.
        window(&mut core, 2, 45.0, &mut out);
        assert_eq!(transitions(&out), vec![(AlertState::Cleared, None)]);
        assert_eq!(
            core.operator(OperatorAction::Clear, &key, "ada", None, EventTime(T0 + 40_000)),
            Ok(false)
        );
    }

    #[test]
    fn retained_online_is_no_sign_of_life_but_retained_offline_raises() {
        let mut core = StreamCore::new(&config(), rules("air_quality_defaults = false\n[[rules]]\nid = \"offline\"\nseverity = \"warning\"\noffline = {}\n"));
        let mut out = Emitted::default();
        core.set_registry(registry(), EventTime(T0), &mut out);
        let status = |state, retained, t| StatusEvent {
            device: DeviceId::parse("loop-a").unwrap(),
            state,
            received_at: EventTime(t),
            retained,
        };
        core.on_status(&status(DeviceState::Offline, true, T0), &mut out);
        assert_eq!(transitions(&out), vec![(AlertState::Raised, None)]);
        core.on_status(&status(DeviceState::Online, true, T0 + 1_000), &mut out);
        assert_eq!(transitions(&out).len(), 1, "a retained online does not clear");
        core.on_status(&status(DeviceState::Online, false, T0 + 2_000), &mut out);
        assert_eq!(
            transitions(&out),
            vec![(AlertState::Raised, None), (AlertState::Returned, None)]
        );
    }

    #[test]
    fn a_runtime_link_change_moves_a_device_to_another_segment() {
        let mut core = StreamCore::new(&config(), los_rules());
        let mut out = Emitted::default();
        core.set_registry(registry(), EventTime(T0), &mut out);
        let mut moved = registry();
        let mut s2 = segment();
        s2.id = SegmentId::parse("s2").unwrap();
        moved.segments.push(s2);
        moved.devices[1].segment = Some(SegmentId::parse("s2").unwrap());
        core.set_registry(moved, EventTime(T0), &mut out);
        window(&mut core, 0, 45.0, &mut out);
        let mut seen: Vec<(String, u32)> =
            out.segments.iter().map(|s| (s.segment.to_string(), s.detectors)).collect();
        seen.sort();
        assert_eq!(seen, vec![("s1".into(), 1), ("s2".into(), 1)]);
    }

    #[test]
    fn exported_state_restores_an_open_alert_and_its_condition() {
        let mut core = StreamCore::new(&config(), los_rules());
        let mut out = Emitted::default();
        core.set_registry(registry(), EventTime(T0), &mut out);
        window(&mut core, 0, 10.0, &mut out);
        assert_eq!(transitions(&out).len(), 1);
        let state = core.export_state();
        let json = serde_json::to_value(&state).unwrap();

        let mut restarted = StreamCore::new(&config(), los_rules());
        let mut out = Emitted::default();
        restarted.set_registry(registry(), EventTime(T0 + 15_000), &mut out);
        restarted.restore_state(
            serde_json::from_value(json).unwrap(),
            EventTime(T0 + 15_000),
            &mut out,
        );
        assert_eq!(restarted.open_alerts().count(), 1);
        window(&mut restarted, 2, 10.0, &mut out);
        assert!(transitions(&out).is_empty(), "still congested: no second alert");
        window(&mut restarted, 3, 45.0, &mut out);
        assert_eq!(
            transitions(&out),
            vec![(AlertState::Returned, None)],
            "recovery ends the restored alert's condition"
        );
    }
}
