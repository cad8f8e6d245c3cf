//! Detector-health evaluators: one state machine per (health rule, device), turning the
//! device's readings (and, for `missing`, the processing clock) into raise/clear edges
//! like every condition ([`super::condition`]), plus the flag intervals they stand for
//! ([`FlagEdge`]), which the store keeps so that flagged data can be left out of history.
//!
//! - **stuck**: per watched metric, a run of readings within `epsilon` of the run's first
//!   value; values under the metric's quiet level (`telemetry::baseline::absolute_floor`:
//!   speed 2 km/h, occupancy 1 %, a count of 1, NO2 5, PM10 3; zero for others) end a run
//!   and never start one (a quiet road counts zero, and reads the same low occupancy, for
//!   hours; the `zero_busy` check judges zeros). Held once a run has `readings` readings spanning
//!   `for`; clears when no watched metric is stuck. The flag starts at the run's first
//!   reading.
//! - **zero_busy** and **implausible** judge fixed windows of event time (`window`,
//!   aligned to the epoch): the sum of `vehicle_count`, the mean `speed_kmh` and
//!   `occupancy_pct`. A window is judged when the first reading of a later window arrives.
//!   zero_busy trips on a window without a vehicle whose usual count (the device's
//!   `vehicle_count` baseline at the window's middle × the count readings in it) is at
//!   least `busy_min_count`, and clears on a window with a vehicle; implausible trips on a
//!   window [`telemetry::health::Plausibility::judge`] refuses and clears on one it accepts. Flow is the
//!   counted vehicles over the time the count readings cover (readings × the report
//!   interval; without an interval, the window). Both use `for` over windows, from the
//!   start of the first tripping window to the end of the latest; the flag starts at the
//!   first tripping window and ends at the start of the window that cleared.
//! - **missing**: reports (readings of a new event time) counted by arrival time in 12
//!   sub-windows of `window`; on each tick, the share of the `window / interval` expected
//!   reports that did not arrive in the last 12 whole sub-windows, once the device has
//!   been watched that long. Trips above `max_missing`, clears at or under
//!   `clear_missing`, after `for`.

use serde::{Deserialize, Serialize};
use telemetry::baseline::{BaselineOn, Baselines};
use telemetry::health::{HealthFlag, Implausible};
use telemetry::{DeviceId, EventTime, MetricId, Reading};

use super::condition::{millis, HoldTimer, Level, Step};
use super::rule::{HealthCheck, HealthRule};
use super::RuleId;

/// A flag interval opening or closing (event time, except `missing`: processing time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "edge", rename_all = "snake_case")]
pub enum FlagEdge {
    Open { device: DeviceId, rule: RuleId, flag: HealthFlag, since: EventTime },
    Close { device: DeviceId, rule: RuleId, flag: HealthFlag, at: EventTime },
}

impl FlagEdge {
    pub fn device(&self) -> &DeviceId {
        match self {
            Self::Open { device, .. } | Self::Close { device, .. } => device,
        }
    }

    pub fn flag(&self) -> HealthFlag {
        match self {
            Self::Open { flag, .. } | Self::Close { flag, .. } => *flag,
        }
    }
}

/// What an edge's message tells (the figures at the time it raised).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HealthNote {
    pub metric: Option<MetricId>,
    pub readings: u32,
    pub usual: f64,
    pub missing: f64,
    pub reason: Option<Implausible>,
    pub flow_vph: f64,
    pub speed_kmh: f64,
    pub occupancy_pct: f64,
}

/// One evaluation's result: the step, the instant a clear ends the flag, the note.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthStep {
    pub step: Step,
    pub at: EventTime,
    pub note: HealthNote,
}

/// What the engine knows of the device when evaluating.
#[derive(Debug, Clone, Copy)]
pub struct HealthContext<'a> {
    pub device: &'a str,
    /// The device's report interval: registered, else learned (ms).
    pub interval_ms: Option<i64>,
    pub lanes: u32,
    pub baselines: &'a Baselines,
}

/// The state of one (health rule, device).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Stuck(Box<StuckState>),
    Window(Box<WindowState>),
    Missing(Box<MissingState>),
}

impl HealthState {
    pub fn new(rule: &HealthRule) -> Self {
        match rule.check {
            HealthCheck::Stuck { .. } => Self::Stuck(Box::default()),
            HealthCheck::ZeroBusy { .. } | HealthCheck::Implausible { .. } => {
                Self::Window(Box::default())
            }
            HealthCheck::Missing { .. } => Self::Missing(Box::default()),
        }
    }

    pub fn fits(&self, rule: &HealthRule) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(&Self::new(rule))
    }

    pub fn is_raised(&self) -> bool {
        match self {
            Self::Stuck(s) => s.raised,
            Self::Window(s) => s.timer.is_raised(),
            Self::Missing(s) => s.timer.is_raised(),
        }
    }

    /// A reading of the device that arrived at `now`.
    pub fn on_reading(
        &mut self,
        rule: &HealthRule,
        r: &Reading,
        now: EventTime,
        cx: &HealthContext<'_>,
    ) -> Option<HealthStep> {
        match (self, &rule.check) {
            (Self::Stuck(s), HealthCheck::Stuck { readings, epsilon, metrics }) => {
                if !metrics.contains(&r.metric) {
                    return None;
                }
                s.on_reading(*readings, *epsilon, millis(rule.hold), r)
            }
            (Self::Window(s), check) => s.on_reading(rule, check, r, cx),
            (Self::Missing(s), HealthCheck::Missing { window, .. }) => {
                s.on_reading(millis(*window), r, now);
                None
            }
            _ => None,
        }
    }

    /// The processing clock advanced (only `missing` listens).
    pub fn on_tick(
        &mut self,
        rule: &HealthRule,
        now: EventTime,
        cx: &HealthContext<'_>,
    ) -> Option<HealthStep> {
        match (self, &rule.check) {
            (
                Self::Missing(s),
                HealthCheck::Missing { window, max_missing, clear_missing, interval },
            ) => {
                let interval = interval.map(millis).or(cx.interval_ms)?;
                let missing = s.missing_at(millis(*window), interval, now)?;
                let level = if missing > *max_missing {
                    Level::Trips
                } else if missing <= *clear_missing {
                    Level::Clears
                } else {
                    Level::Neutral
                };
                let step = s.timer.step(now, now, now, level, millis(rule.hold), missing);
                Some(HealthStep {
                    step,
                    at: now,
                    note: HealthNote { missing, ..HealthNote::default() },
                })
            }
            _ => None,
        }
    }
}

/// One metric's run of equal readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    metric: MetricId,
    value: f64,
    start: EventTime,
    last: EventTime,
    len: u32,
}

/// `stuck`: a run per watched metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StuckState {
    runs: Vec<Run>,
    /// The last reading time per metric whose run a zero ended.
    zeros: Vec<(MetricId, EventTime)>,
    raised: bool,
}

impl StuckState {
    fn on_reading(
        &mut self,
        readings: u32,
        epsilon: f64,
        hold_ms: i64,
        r: &Reading,
    ) -> Option<HealthStep> {
        let stale = |t: EventTime| r.time <= t;
        if self.zeros.iter().any(|&(m, t)| m == r.metric && stale(t))
            || self.runs.iter().any(|x| x.metric == r.metric && stale(x.last))
        {
            return Some(HealthStep { step: Step::Stale, at: r.time, note: HealthNote::default() });
        }
        self.zeros.retain(|&(m, _)| m != r.metric);
        let stuck = |x: &Run| x.len >= readings && x.last.millis() - x.start.millis() >= hold_ms;
        let i = self.runs.iter().position(|x| x.metric == r.metric);
        // Values near zero repeat on a quiet road: under the metric's quiet level they end
        // a run and never start one.
        let quiet = telemetry::baseline::absolute_floor(r.metric.as_str()).max(f64::MIN_POSITIVE);
        if r.value.abs() < quiet {
            if let Some(i) = i {
                self.runs.swap_remove(i);
            }
            self.zeros.push((r.metric, r.time));
        } else {
            match i.map(|i| &mut self.runs[i]) {
                Some(run) if (r.value - run.value).abs() <= epsilon => {
                    run.len = run.len.saturating_add(1);
                    run.last = r.time;
                }
                Some(run) => {
                    *run = Run {
                        metric: r.metric,
                        value: r.value,
                        start: r.time,
                        last: r.time,
                        len: 1,
                    }
                }
                None => self.runs.push(Run {
                    metric: r.metric,
                    value: r.value,
                    start: r.time,
                    last: r.time,
                    len: 1,
                }),
            }
        }
        let this = self.runs.iter().find(|x| x.metric == r.metric);
        let step = if !self.raised {
            match this.filter(|x| stuck(x)) {
                Some(run) => {
                    self.raised = true;
                    let note = HealthNote {
                        metric: Some(run.metric),
                        readings: run.len,
                        ..HealthNote::default()
                    };
                    return Some(HealthStep {
                        step: Step::Raise { since: run.start, value: run.value },
                        at: r.time,
                        note,
                    });
                }
                None => Step::Quiet,
            }
        } else if !self.runs.iter().any(stuck) {
            self.raised = false;
            Step::Clear { value: r.value }
        } else {
            Step::Quiet
        };
        Some(HealthStep { step, at: r.time, note: HealthNote::default() })
    }
}

/// `zero_busy`, `implausible`: sums over the current window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    window: Option<i64>,
    counts: u32,
    count_sum: f64,
    speeds: u32,
    speed_sum: f64,
    occupancies: u32,
    occupancy_sum: f64,
    /// The last reading time of count, speed and occupancy.
    last: [Option<EventTime>; 3],
    timer: HoldTimer,
}

impl WindowState {
    fn on_reading(
        &mut self,
        rule: &HealthRule,
        check: &HealthCheck,
        r: &Reading,
        cx: &HealthContext<'_>,
    ) -> Option<HealthStep> {
        let k = match r.metric {
            MetricId::VehicleCount => 0,
            MetricId::SpeedKmh => 1,
            MetricId::OccupancyPct => 2,
            _ => return None,
        };
        let width = match check {
            HealthCheck::ZeroBusy { window, .. } | HealthCheck::Implausible { window, .. } => {
                millis(*window).max(1)
            }
            _ => return None,
        };
        if self.last[k].is_some_and(|l| r.time <= l) {
            return Some(HealthStep { step: Step::Stale, at: r.time, note: HealthNote::default() });
        }
        let index = r.time.millis().div_euclid(width);
        let mut out = None;
        match self.window {
            Some(w) if index < w => {
                return Some(HealthStep {
                    step: Step::Stale,
                    at: r.time,
                    note: HealthNote::default(),
                })
            }
            Some(w) if index > w => {
                out = self.judge(rule, check, w, width, cx);
                let timer = std::mem::take(&mut self.timer);
                *self = Self { window: Some(index), timer, ..Self::default() };
            }
            Some(_) => {}
            None => self.window = Some(index),
        }
        self.last[k] = Some(r.time);
        match k {
            0 => (self.counts, self.count_sum) = (self.counts + 1, self.count_sum + r.value),
            1 => (self.speeds, self.speed_sum) = (self.speeds + 1, self.speed_sum + r.value),
            _ => {
                (self.occupancies, self.occupancy_sum) =
                    (self.occupancies + 1, self.occupancy_sum + r.value)
            }
        }
        out
    }

    /// Judge the finished window `w` (its sums are this state's).
    fn judge(
        &mut self,
        rule: &HealthRule,
        check: &HealthCheck,
        w: i64,
        width: i64,
        cx: &HealthContext<'_>,
    ) -> Option<HealthStep> {
        let (start, end) = (EventTime(w * width), EventTime((w + 1) * width));
        let mean = |sum: f64, n: u32| (n > 0).then(|| sum / f64::from(n));
        let hold = millis(rule.hold);
        let (level, value, note) = match check {
            HealthCheck::ZeroBusy { busy_min_count, min_samples, .. } => {
                if self.counts == 0 {
                    return None;
                }
                let middle = EventTime(start.millis() + width / 2);
                let usual = cx
                    .baselines
                    .expected(
                        BaselineOn::Device,
                        cx.device,
                        MetricId::VehicleCount.as_str(),
                        middle,
                    )
                    .filter(|e| e.samples >= *min_samples)
                    .map(|e| e.centre * f64::from(self.counts));
                let level = if self.count_sum > 0.0 {
                    Level::Clears
                } else if usual.is_some_and(|u| u >= *busy_min_count) {
                    Level::Trips
                } else {
                    Level::Neutral
                };
                let usual = usual.unwrap_or(0.0);
                (level, usual, HealthNote { usual, ..HealthNote::default() })
            }
            HealthCheck::Implausible { limits, interval, .. } => {
                let covered = interval.map(millis).or(cx.interval_ms).map_or(width, |i| {
                    i.saturating_mul(i64::from(self.counts)).clamp(1, width.max(1))
                });
                let flow = (self.counts > 0).then(|| self.count_sum * 3_600_000.0 / covered as f64);
                let speed = mean(self.speed_sum, self.speeds);
                let occupancy = mean(self.occupancy_sum, self.occupancies);
                if flow.is_none() && speed.is_none() && occupancy.is_none() {
                    return None;
                }
                let reason = limits.judge(flow, speed, occupancy, cx.lanes);
                let level = if reason.is_some() { Level::Trips } else { Level::Clears };
                let note = HealthNote {
                    reason,
                    flow_vph: flow.unwrap_or(f64::NAN),
                    speed_kmh: speed.unwrap_or(f64::NAN),
                    occupancy_pct: occupancy.unwrap_or(f64::NAN),
                    ..HealthNote::default()
                };
                (level, flow.unwrap_or(0.0), note)
            }
            _ => return None,
        };
        let step = self.timer.step(end, start, end, level, hold, value);
        Some(HealthStep { step, at: start, note })
    }
}

/// Sub-windows of the `missing` window.
pub const MISSING_PARTS: usize = 12;

/// `missing`: reports counted by arrival in a ring of sub-windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MissingState {
    first: Option<EventTime>,
    last_report: Option<EventTime>,
    index: [i64; MISSING_PARTS],
    reports: [u32; MISSING_PARTS],
    timer: HoldTimer,
}

impl MissingState {
    fn on_reading(&mut self, window_ms: i64, r: &Reading, now: EventTime) {
        self.first.get_or_insert(now);
        if self.last_report.is_some_and(|l| r.time <= l) {
            return;
        }
        self.last_report = Some(r.time);
        let part = (window_ms / MISSING_PARTS as i64).max(1);
        let i = now.millis().div_euclid(part);
        let p = i.rem_euclid(MISSING_PARTS as i64) as usize;
        if self.index[p] != i {
            self.index[p] = i;
            self.reports[p] = 0;
        }
        self.reports[p] = self.reports[p].saturating_add(1);
    }

    /// The share of expected reports missing over the last whole window before `now`;
    /// `None` before the device has been watched that long.
    fn missing_at(&self, window_ms: i64, interval_ms: i64, now: EventTime) -> Option<f64> {
        let part = (window_ms / MISSING_PARTS as i64).max(1);
        let current = now.millis().div_euclid(part);
        let from = current - MISSING_PARTS as i64;
        if self.first? > EventTime(from * part) || interval_ms <= 0 {
            return None;
        }
        let received: u32 = (from..current)
            .map(|i| {
                let p = i.rem_euclid(MISSING_PARTS as i64) as usize;
                if self.index[p] == i {
                    self.reports[p]
                } else {
                    0
                }
            })
            .sum();
        let expected = (part * MISSING_PARTS as i64) as f64 / interval_ms as f64;
        Some((1.0 - f64::from(received) / expected).clamp(0.0, 1.0))
    }
}
