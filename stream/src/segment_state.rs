//! Traffic state per road segment and tumbling window: flow, mean speed, occupancy and
//! Level of Service, derived from the device windows of the detectors linked to the
//! segment.
//!
//! [`SegmentWindows`] is fed the [`WindowResult`]s that [`crate::window::Windows`] emits
//! (same window size), so it inherits their event-time semantics exactly: a device window
//! reaches it when that device's watermark closes it, and every late correction arrives as
//! a higher revision that *replaces* the device's contribution (device windows are
//! cumulative). No reading is counted twice and none is windowed differently here than in
//! the device rollups.
//!
//! Definitions, per segment and window `[start, end)` of `size`:
//! - **flow** (veh/h): each detector station counts the whole cross-section, so the
//!   segment's flow is the *mean over the detectors that reported `vehicle_count`* of
//!   `their count summed over the window × 1 h / size`. `None` when no detector counted.
//! - **speed** (km/h): the count-weighted mean of the detectors' mean `speed_kmh`,
//!   weight = the detector's vehicle count in the window (detectors that reported speed
//!   without counts weigh 0). When no weight is positive (no counts, or all zero), the
//!   plain mean of every `speed_kmh` reading of the window. `None` without speed readings.
//! - **occupancy** (%): the mean over detectors of their mean `occupancy_pct`.
//! - **LOS**: [`LevelOfService::from_speeds`] of speed vs the segment's free-flow speed.
//! - **detectors**: linked devices that sent any of these three metrics in the window.
//!
//! Emission: a segment window is first emitted (revision 0) by [`SegmentWindows::tick`]
//! once the processing clock `now` passes `end + settle` (settle = the watermark delay),
//! the same rule by which `Windows::tick` closes the windows of quiet devices, so a
//! quiet or skewed detector cannot hold a segment open. A device window that arrives
//! after that (a late correction, or a detector whose window closed later) re-emits the
//! segment window with the next revision, until `now` passes `end + settle + lateness`;
//! later device windows are counted in `too_late`. Invariant: the last revision of a
//! segment window is a function of the last revision of each linked device window only,
//! so any arrival order of the same device windows gives the same final state.
//!
//! Links and segments can be replaced at runtime. A new link applies to device windows
//! that arrive afterwards; contributions already held stay where they were counted.
//! Removing a segment drops its pending windows.

use std::collections::HashMap;

use telemetry::{DeviceId, EventTime, MetricId, Partial, RoadSegment, SegmentId};

use crate::config::StreamConfig;
use crate::los::LevelOfService;
use crate::window::WindowResult;

/// The derived traffic state of one segment in one window.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegmentState {
    pub segment: SegmentId,
    pub start: EventTime,
    pub end: EventTime,
    pub flow_vph: Option<f64>,
    pub speed_kmh: Option<f64>,
    pub occupancy_pct: Option<f64>,
    pub los: Option<LevelOfService>,
    /// Linked detectors that reported in this window.
    pub detectors: u32,
    /// 0 on first emission, one more for each correction.
    pub revision: u32,
    /// The forecast made from this window ([`crate::forecast`]), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<crate::forecast::SegmentForecast>,
}

/// What [`SegmentWindows`] emits for the service to store and push.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SegmentEvent {
    /// A segment window, first emission or a correction.
    State(SegmentState),
    /// The segment's current LOS (that of its newest emitted window with a speed) changed.
    LosChanged {
        segment: SegmentId,
        window_start: EventTime,
        from: Option<LevelOfService>,
        to: LevelOfService,
    },
}

/// The latest device window of each traffic metric of one detector.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct DetectorWindow {
    counts: Option<Partial>,
    speed: Option<Partial>,
    occupancy: Option<Partial>,
}

#[derive(Debug, Default)]
struct SegmentWindow {
    /// Sorted by device, each once; grown one at a time (a segment has a few detectors).
    detectors: Vec<(DeviceId, DetectorWindow)>,
    /// `None` until first emitted; then the revision last emitted.
    emitted: Option<u32>,
}

/// Segment windows, the device→segment links and each segment's current LOS.
#[derive(Debug)]
pub struct SegmentWindows {
    size: i64,
    settle: i64,
    lateness: i64,
    segments: HashMap<SegmentId, RoadSegment>,
    links: HashMap<DeviceId, SegmentId>,
    /// Per segment, its windows sorted by start (a few at a time).
    windows: HashMap<SegmentId, Vec<(EventTime, SegmentWindow)>>,
    current_los: HashMap<SegmentId, (EventTime, LevelOfService)>,
    /// The processing clock: the newest `now` given to `tick`.
    clock: Option<EventTime>,
    /// Device windows that arrived after their segment window was dropped.
    pub too_late: u64,
    /// Traffic device windows of devices linked to no known segment.
    pub unlinked: u64,
}

/// Is `metric` one the segment state is derived from?
fn is_traffic(metric: MetricId) -> bool {
    matches!(metric, MetricId::VehicleCount | MetricId::SpeedKmh | MetricId::OccupancyPct)
}

impl SegmentWindows {
    pub fn new(config: &StreamConfig) -> Self {
        Self {
            size: (config.window.as_millis() as i64).max(1),
            settle: config.watermark_delay.as_millis() as i64,
            lateness: config.allowed_lateness.as_millis() as i64,
            segments: HashMap::new(),
            links: HashMap::new(),
            windows: HashMap::new(),
            current_los: HashMap::new(),
            clock: None,
            too_late: 0,
            unlinked: 0,
        }
    }

    /// Replace the segment set. Pending windows of segments no longer present are dropped.
    pub fn set_segments(&mut self, segments: impl IntoIterator<Item = RoadSegment>) {
        self.segments = segments.into_iter().map(|s| (s.id.clone(), s)).collect();
        let known = &self.segments;
        self.windows.retain(|id, _| known.contains_key(id));
        self.current_los.retain(|id, _| known.contains_key(id));
    }

    /// Replace every device→segment link.
    pub fn set_links(&mut self, links: impl IntoIterator<Item = (DeviceId, SegmentId)>) {
        self.links = links.into_iter().collect();
    }

    /// Link one device to a segment, or unlink it with `None`.
    pub fn link(&mut self, device: DeviceId, segment: Option<SegmentId>) {
        match segment {
            Some(s) => {
                self.links.insert(device, s);
            }
            None => {
                self.links.remove(&device);
            }
        }
    }

    /// The segment a device is linked to.
    pub fn segment_of(&self, device: &DeviceId) -> Option<&SegmentId> {
        self.links.get(device)
    }

    /// Current LOS of a segment (that of its newest emitted window with a speed).
    pub fn current_los(&self, segment: &SegmentId) -> Option<LevelOfService> {
        self.current_los.get(segment).map(|(_, l)| *l)
    }

    /// Segment windows held (awaiting emission or late corrections).
    pub fn len(&self) -> usize {
        self.windows.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Take one device window; a correction of an emitted segment window is appended to
    /// `out` at once.
    pub fn on_window(&mut self, w: &WindowResult, out: &mut Vec<SegmentEvent>) {
        if !is_traffic(w.metric) {
            return;
        }
        let Some(segment) = self.links.get(&w.device).filter(|s| self.segments.contains_key(*s))
        else {
            self.unlinked += 1;
            return;
        };
        if self
            .clock
            .is_some_and(|now| w.end.millis() + self.settle + self.lateness <= now.millis())
        {
            self.too_late += 1;
            return;
        }
        let windows = self.windows.entry(segment.clone()).or_default();
        let at = windows.partition_point(|(start, _)| *start < w.start);
        if windows.get(at).is_none_or(|(start, _)| *start != w.start) {
            windows.reserve_exact(1);
            windows.insert(at, (w.start, SegmentWindow::default()));
        }
        let sw = &mut windows[at].1;
        let at = sw.detectors.partition_point(|(d, _)| d < &w.device);
        if sw.detectors.get(at).is_none_or(|(d, _)| d != &w.device) {
            sw.detectors.reserve_exact(1);
            sw.detectors.insert(at, (w.device.clone(), DetectorWindow::default()));
        }
        let det = &mut sw.detectors[at].1;
        let slot = match w.metric {
            MetricId::VehicleCount => &mut det.counts,
            MetricId::SpeedKmh => &mut det.speed,
            _ => &mut det.occupancy,
        };
        *slot = Some(w.aggregate);
        if let Some(rev) = sw.emitted {
            sw.emitted = Some(rev + 1);
            let segment = segment.clone();
            self.emit(&segment, w.start, out);
        }
    }

    /// Advance the processing clock: emit segment windows whose end + settle has passed and
    /// drop those past their lateness.
    pub fn tick(&mut self, now: EventTime, out: &mut Vec<SegmentEvent>) {
        let now = self.clock.map_or(now, |c| c.max(now));
        self.clock = Some(now);
        let due: Vec<(SegmentId, EventTime)> = self
            .windows
            .iter_mut()
            .flat_map(|(id, ws)| {
                ws.iter_mut()
                    .take_while(|(start, _)| {
                        start.millis() + self.size + self.settle <= now.millis()
                    })
                    .filter(|(_, w)| w.emitted.is_none())
                    .map(|(start, w)| {
                        w.emitted = Some(0);
                        (id.clone(), *start)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut due = due;
        due.sort(); // deterministic output order: by segment, then window
        for (segment, start) in due {
            self.emit(&segment, start, out);
        }
        let horizon = now.millis() - self.settle - self.lateness - self.size;
        for ws in self.windows.values_mut() {
            let held = ws.len();
            ws.retain(|(start, _)| start.millis() > horizon);
            if ws.len() < held {
                ws.shrink_to_fit();
            }
        }
        self.windows.retain(|_, ws| !ws.is_empty());
    }

    /// Emit every segment window not yet emitted (shutdown); keeps nothing.
    pub fn flush(&mut self, out: &mut Vec<SegmentEvent>) {
        let mut pending: Vec<(SegmentId, EventTime)> = self
            .windows
            .iter()
            .flat_map(|(id, ws)| {
                ws.iter().filter(|(_, w)| w.emitted.is_none()).map(|(s, _)| (id.clone(), *s))
            })
            .collect();
        pending.sort();
        for (segment, start) in pending {
            if let Some(w) = self.window_mut(&segment, start) {
                w.emitted = Some(0);
            }
            self.emit(&segment, start, out);
        }
        self.windows.clear();
    }

    fn window(&self, segment: &SegmentId, start: EventTime) -> Option<&SegmentWindow> {
        let ws = self.windows.get(segment)?;
        ws.binary_search_by_key(&start, |(s, _)| *s).ok().map(|i| &ws[i].1)
    }

    fn window_mut(&mut self, segment: &SegmentId, start: EventTime) -> Option<&mut SegmentWindow> {
        let ws = self.windows.get_mut(segment)?;
        ws.binary_search_by_key(&start, |(s, _)| *s).ok().map(|i| &mut ws[i].1)
    }

    fn emit(&mut self, segment: &SegmentId, start: EventTime, out: &mut Vec<SegmentEvent>) {
        let (Some(w), Some(road)) = (self.window(segment, start), self.segments.get(segment))
        else {
            return;
        };
        let state = derive_state(
            road,
            start,
            self.size,
            w.detectors.iter().map(|(_, d)| d),
            w.emitted.unwrap_or(0),
        );
        let mut change = None;
        if let Some(los) = state.los {
            let current = self.current_los.get(segment).copied();
            // Corrections of windows older than the one the current LOS came from do not move it.
            if current.is_none_or(|(at, _)| start >= at) {
                self.current_los.insert(segment.clone(), (start, los));
                let from = current.map(|(_, l)| l);
                if from != Some(los) {
                    change = Some(SegmentEvent::LosChanged {
                        segment: segment.clone(),
                        window_start: start,
                        from,
                        to: los,
                    });
                }
            }
        }
        out.push(SegmentEvent::State(state));
        out.extend(change);
    }
}

fn mean(p: &Partial) -> f64 {
    p.sum / p.count as f64
}

/// The segment state of one window from its detectors' device windows (see module doc).
fn derive_state<'a>(
    road: &RoadSegment,
    start: EventTime,
    size: i64,
    detectors: impl Iterator<Item = &'a DetectorWindow>,
    revision: u32,
) -> SegmentState {
    let per_hour = 3_600_000.0 / size as f64;
    let (mut flow_sum, mut flow_n) = (0.0, 0u32);
    let (mut weighted, mut weight) = (0.0, 0.0);
    let (mut speed_sum, mut speed_n) = (0.0, 0i64);
    let (mut occ_sum, mut occ_n) = (0.0, 0u32);
    let mut reporting = 0u32;
    for d in detectors {
        if d.counts.is_none() && d.speed.is_none() && d.occupancy.is_none() {
            continue;
        }
        reporting += 1;
        if let Some(c) = &d.counts {
            flow_sum += c.sum * per_hour;
            flow_n += 1;
        }
        if let Some(s) = &d.speed {
            speed_sum += s.sum;
            speed_n += s.count;
            let w = d.counts.map_or(0.0, |c| c.sum);
            if w > 0.0 {
                weighted += mean(s) * w;
                weight += w;
            }
        }
        if let Some(o) = &d.occupancy {
            occ_sum += mean(o);
            occ_n += 1;
        }
    }
    let speed = if weight > 0.0 {
        Some(weighted / weight)
    } else if speed_n > 0 {
        Some(speed_sum / speed_n as f64)
    } else {
        None
    };
    SegmentState {
        segment: road.id.clone(),
        start,
        end: EventTime(start.millis() + size),
        flow_vph: (flow_n > 0).then(|| flow_sum / f64::from(flow_n)),
        speed_kmh: speed,
        occupancy_pct: (occ_n > 0).then(|| occ_sum / f64::from(occ_n)),
        los: speed.and_then(|s| LevelOfService::from_speeds(s, road.free_flow_kmh)),
        detectors: reporting,
        revision,
        forecast: None,
    }
}

#[cfg(test)]
mod tests;
