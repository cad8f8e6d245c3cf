//! Short-term forecasts of each road segment's speed and Level of Service, 15 and 30
//! minutes ahead (by default), from an explainable model: **the usual speed at that time,
//! scaled by how far from usual the segment is now, that difference fading with time.**
//!
//! For a segment window `[start, end)` with a mean speed `v` (the segment state's):
//! 1. **Today's ratio.** `q = v / usual(mid)`, the usual speed being the segment's learned
//!    `speed_kmh` baseline ([`telemetry::baseline`], interpolated between slots) at the
//!    window's midpoint. The ratio is smoothed over consecutive windows:
//!    `r = α·q + (1 − α)·r_prev` (`smoothing` α; the previous window's `r` when it is at
//!    most [`MAX_GAP_WINDOWS`] windows old, otherwise `r = q`). A correction of a window
//!    (a higher revision) is smoothed from the same `r_prev` as the window it corrects.
//! 2. **Forecast at horizon `h`.** `speed(h) = usual(end + h) · (1 + β_h·(r − 1))`, `β_h`
//!    being the share of today's difference from usual still there `h` later. Each
//!    segment learns its own `β_h` from its windows: the least-squares slope of the raw
//!    ratio's difference from usual at `t + h` on the smoothed one at `t`,
//!    `β_h = Σ x·y / Σ x²` over pairs weighted by age (half-life [`LEARN_HALF_LIFE`]),
//!    clamped to 0..=1. Until a segment has [`MIN_PAIRS`] pairs for a horizon, the
//!    configured prior `φ^(h / 15 min)` stands in (`persistence` φ). `β = 1` is
//!    persistence of the ratio, `β = 0` the historical average; a road whose slowdowns
//!    pass quickly learns a small `β`, one whose days run above or below usual a large
//!    one. The LOS is that of the forecast speed against the segment's free-flow speed
//!    ([`LevelOfService::from_speeds`]).
//! 3. **Degrading.** A segment is predicted to degrade when some horizon's LOS is worse
//!    than the window's and is D or worse.
//!
//! No baseline for the segment (not learned yet, or the slot has no samples), or a window
//! without a speed: no forecast. Neither the smoothed ratio nor the learned `β` is
//! checkpointed: after a restart the first window starts the ratio afresh and the prior
//! stands in until [`MIN_PAIRS`] windows have been seen again. Corrections of a window
//! are forecast from but not learned from (each window is one pair). The defaults of α and φ come from the accuracy
//! benchmark (`sccr-bench --intel`, docs/forecasts.md), which measures the model against
//! persistence and the historical average.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use telemetry::baseline::{BaselineOn, Baselines};
use telemetry::{EventTime, SegmentId};

use crate::los::LevelOfService;
use crate::segment_state::SegmentState;

/// A ratio older than this many windows is not smoothed with: the segment starts afresh.
pub const MAX_GAP_WINDOWS: i64 = 5;
/// The metric the forecasts are made of (a segment figure of the baselines).
pub const FORECAST_METRIC: &str = "speed_kmh";
const FADE_STEP_MS: f64 = 15.0 * 60_000.0;
/// Pairs a segment needs at a horizon before its own `β` replaces the prior (12 hours of
/// one-minute windows).
pub const MIN_PAIRS: u32 = 720;
/// The age at which a pair's weight in the learned `β` has halved.
pub const LEARN_HALF_LIFE: Duration = Duration::from_secs(3 * 86_400);

/// How forecasts are made (`[forecasts]` in the configuration; its values are checked by
/// `sccr check-config`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastSettings {
    pub enabled: bool,
    /// Minutes ahead, ascending (each 1..=120).
    pub horizons_minutes: Vec<u32>,
    /// α: the weight of the newest window in the smoothed ratio (0 < α ≤ 1).
    pub smoothing: f64,
    /// φ: the share of today's difference from usual left 15 minutes later (0..=1).
    pub persistence: f64,
}

impl Default for ForecastSettings {
    fn default() -> Self {
        Self { enabled: true, horizons_minutes: vec![15, 30], smoothing: 0.1, persistence: 0.9 }
    }
}

impl ForecastSettings {
    /// The prior share of today's difference from usual left `minutes` later: `φ^(minutes / 15)`.
    pub fn prior(&self, minutes: u32) -> f64 {
        self.persistence.powf(f64::from(minutes) * 60_000.0 / FADE_STEP_MS)
    }
}

/// The forecast speed from the smoothed ratio `ratio`, the usual speed then and the share
/// `kept` of today's difference from usual expected to remain.
pub fn forecast_speed(ratio: f64, usual_kmh: f64, kept: f64) -> f64 {
    (usual_kmh * (1.0 + (ratio - 1.0) * kept)).max(0.0)
}

/// One horizon of a segment's forecast.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HorizonForecast {
    /// Minutes after the window's end.
    pub minutes: u32,
    /// The instant forecast (the window's end plus `minutes`).
    pub at: EventTime,
    pub speed_kmh: f64,
    /// The learned usual speed at `at` (the historical average).
    pub usual_kmh: f64,
    pub los: Option<LevelOfService>,
    /// The share of today's difference from usual expected to remain at `at` (`β`).
    pub kept: f64,
    /// Whether `kept` was learned from this segment's own windows (else the prior).
    pub learned: bool,
}

/// A segment's forecast, made from one of its windows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegmentForecast {
    /// The smoothed ratio of the observed speed to the usual one.
    pub ratio: f64,
    pub horizons: Vec<HorizonForecast>,
    /// Some horizon's LOS is worse than the window's and D or worse.
    pub degrading: bool,
}

#[derive(Debug, Clone, Copy)]
struct Smoothed {
    start: EventTime,
    /// The ratio the window at `start` was smoothed from (`None`: it started afresh).
    before: Option<f64>,
    ratio: f64,
}

/// What a segment's past windows say of how long its differences from usual last.
#[derive(Debug, Default)]
struct Persistence {
    /// The smoothed ratios' differences from usual (`r − 1`) of recent first emissions, by
    /// window start, oldest first, as far back as the longest horizon.
    recent: VecDeque<(i64, f32)>,
    /// Per horizon: age-weighted Σ x·y, Σ x², and the pairs seen.
    sums: Vec<(f64, f64, u32)>,
}

impl Persistence {
    /// `β` of horizon `i`, when learned.
    fn kept(&self, i: usize) -> Option<f64> {
        let &(xy, xx, n) = self.sums.get(i)?;
        (n >= MIN_PAIRS && xx > 1e-12).then(|| (xy / xx).clamp(0.0, 1.0))
    }
}

/// Forecasts for the segment windows the stream emits. See the module documentation.
#[derive(Debug)]
pub struct Forecaster {
    settings: ForecastSettings,
    window_ms: i64,
    /// Weight kept by a pair per window of age.
    decay: f64,
    baselines: Arc<Baselines>,
    free_flow: HashMap<SegmentId, f64>,
    smoothed: HashMap<SegmentId, Smoothed>,
    learned: HashMap<SegmentId, Persistence>,
}

impl Forecaster {
    pub fn new(settings: ForecastSettings, window: Duration) -> Self {
        let window_ms = window.as_millis().max(1) as i64;
        Self {
            settings,
            window_ms,
            decay: 0.5f64.powf(window_ms as f64 / LEARN_HALF_LIFE.as_millis() as f64),
            baselines: Arc::default(),
            free_flow: HashMap::new(),
            smoothed: HashMap::new(),
            learned: HashMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    pub fn set_baselines(&mut self, baselines: Arc<Baselines>) {
        self.baselines = baselines;
    }

    /// The segments' free-flow speeds (their LOS reference). Segments gone are forgotten.
    pub fn set_segments(&mut self, free_flow: impl IntoIterator<Item = (SegmentId, f64)>) {
        self.free_flow = free_flow.into_iter().collect();
        self.smoothed.retain(|s, _| self.free_flow.contains_key(s));
        self.learned.retain(|s, _| self.free_flow.contains_key(s));
    }

    /// The forecast made from `state` (and remembered for the windows that follow).
    pub fn forecast(&mut self, state: &SegmentState) -> Option<SegmentForecast> {
        if !self.settings.enabled {
            return None;
        }
        let speed = state.speed_kmh?;
        let subject = state.segment.as_str();
        let baselines = self.baselines.clone();
        let expected = |t: EventTime| {
            baselines
                .expected(BaselineOn::Segment, subject, FORECAST_METRIC, t)
                .filter(|e| e.centre.is_finite() && e.centre > 1.0)
        };
        let mid = EventTime((state.start.millis() + state.end.millis()) / 2);
        let q = (speed / expected(mid)?.centre).clamp(0.05, 3.0);
        let held = self.smoothed.get(&state.segment).copied();
        let before = match held {
            Some(h) if h.start == state.start => h.before,
            Some(h) if h.start > state.start => return None, // a correction of an older window
            Some(h)
                if state.start.millis() - h.start.millis() <= MAX_GAP_WINDOWS * self.window_ms =>
            {
                Some(h.ratio)
            }
            _ => None,
        };
        let a = self.settings.smoothing;
        let ratio = before.map_or(q, |b| a * q + (1.0 - a) * b);
        if state.revision == 0 {
            self.learn(state, q - 1.0, ratio - 1.0);
        }
        let learned = self.learned.get(&state.segment);
        let horizons: Vec<HorizonForecast> = self
            .settings
            .horizons_minutes
            .iter()
            .enumerate()
            .filter_map(|(i, &minutes)| {
                let at = EventTime(state.end.millis() + i64::from(minutes) * 60_000);
                let usual = expected(at)?.centre;
                let own = learned.and_then(|p| p.kept(i));
                let kept = own.unwrap_or_else(|| self.settings.prior(minutes));
                let speed_kmh = forecast_speed(ratio, usual, kept);
                let los = self
                    .free_flow
                    .get(&state.segment)
                    .and_then(|ff| LevelOfService::from_speeds(speed_kmh, *ff));
                Some(HorizonForecast {
                    minutes,
                    at,
                    speed_kmh,
                    usual_kmh: usual,
                    los,
                    kept,
                    learned: own.is_some(),
                })
            })
            .collect();
        self.smoothed.insert(state.segment.clone(), Smoothed { start: state.start, before, ratio });
        let degrading = horizons.iter().any(|h| {
            h.los.is_some_and(|l| l >= LevelOfService::D && state.los.is_none_or(|now| l > now))
        });
        Some(SegmentForecast { ratio, horizons, degrading })
    }

    /// Learn from a window's first emission: pair its raw difference from usual `y` with
    /// the smoothed difference of the window `h` before it, for each horizon; keep its
    /// smoothed difference `x` for the windows `h` after it.
    fn learn(&mut self, state: &SegmentState, y: f64, x: f64) {
        let horizons = &self.settings.horizons_minutes;
        let longest = i64::from(horizons.iter().copied().max().unwrap_or(0)) * 60_000;
        let p = self.learned.entry(state.segment.clone()).or_default();
        p.sums.resize(horizons.len(), (0.0, 0.0, 0));
        let start = state.start.millis();
        for (i, &minutes) in horizons.iter().enumerate() {
            let then = start - i64::from(minutes) * 60_000;
            if let Ok(k) = p.recent.binary_search_by_key(&then, |e| e.0) {
                let past = f64::from(p.recent[k].1);
                let (xy, xx, n) = &mut p.sums[i];
                *xy = *xy * self.decay + past * y;
                *xx = *xx * self.decay + past * past;
                *n = n.saturating_add(1);
            }
        }
        if p.recent.back().is_none_or(|e| e.0 < start) {
            p.recent.push_back((start, x as f32));
        }
        while p.recent.front().is_some_and(|e| e.0 < start - longest) {
            p.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use telemetry::baseline::{BaselineRow, SlotClock, SLOTS_PER_WEEK};

    use super::*;

    const T0: i64 = 1_764_547_200_000; // a Monday 00:00 UTC

    fn seg() -> SegmentId {
        SegmentId::parse("s1").unwrap()
    }

    /// A segment whose usual speed is 50 km/h all week except 40 from Monday 08:00 UTC.
    fn baselines() -> Arc<Baselines> {
        let mut b = Baselines::new(SlotClock::new(0).unwrap());
        let rows: Vec<BaselineRow> = (0..SLOTS_PER_WEEK)
            .map(|slot| BaselineRow {
                on: BaselineOn::Segment,
                subject: "s1".into(),
                metric: FORECAST_METRIC.into(),
                slot: slot as u16,
                centre: if (32..40).contains(&slot) { 40.0 } else { 50.0 },
                spread: 3.0,
                samples: 4,
            })
            .collect();
        b.extend(&rows);
        Arc::new(b)
    }

    fn state(k: i64, speed: Option<f64>, revision: u32) -> SegmentState {
        let start = EventTime(T0 + k * 60_000);
        SegmentState {
            segment: seg(),
            start,
            end: EventTime(start.millis() + 60_000),
            flow_vph: Some(600.0),
            speed_kmh: speed,
            occupancy_pct: Some(10.0),
            los: speed.and_then(|v| LevelOfService::from_speeds(v, 50.0)),
            detectors: 2,
            revision,
            forecast: None,
        }
    }

    fn forecaster(smoothing: f64, persistence: f64) -> Forecaster {
        let mut f = Forecaster::new(
            ForecastSettings { smoothing, persistence, ..ForecastSettings::default() },
            Duration::from_secs(60),
        );
        f.set_baselines(baselines());
        f.set_segments([(seg(), 50.0)]);
        f
    }

    #[test]
    fn usual_traffic_forecasts_the_usual_speed_of_the_target_time() {
        let mut f = forecaster(0.5, 0.7);
        // Monday 07:44: the usual speed is 50 now, 40 at 08:00 onwards.
        let fc = f.forecast(&state(7 * 60 + 44, Some(50.0), 0)).unwrap();
        assert!((fc.ratio - 1.0).abs() < 1e-9);
        assert_eq!(fc.horizons.len(), 2);
        assert_eq!(fc.horizons[0].minutes, 15);
        assert_eq!(fc.horizons[0].at, EventTime(T0 + (8 * 60) * 60_000));
        assert!((fc.horizons[1].speed_kmh - 40.0).abs() < 1e-6, "{fc:?}");
        assert_eq!(fc.horizons[1].los, Some(LevelOfService::B));
        assert!(!fc.degrading);
    }

    #[test]
    fn a_slowdown_fades_towards_usual_with_the_persistence() {
        let mut f = forecaster(1.0, 0.5);
        let fc = f.forecast(&state(3 * 60, Some(20.0), 0)).unwrap();
        // ratio 0.4: 15 minutes ahead half the difference is left, 30 minutes a quarter.
        assert!((fc.horizons[0].speed_kmh - 50.0 * (1.0 - 0.6 * 0.5)).abs() < 1e-6);
        assert!((fc.horizons[1].speed_kmh - 50.0 * (1.0 - 0.6 * 0.25)).abs() < 1e-6);
        assert_eq!(fc.horizons[0].los, Some(LevelOfService::B));
    }

    #[test]
    fn the_ratio_is_smoothed_and_a_correction_restarts_from_the_same_point() {
        let mut f = forecaster(0.5, 1.0);
        assert!((f.forecast(&state(100, Some(50.0), 0)).unwrap().ratio - 1.0).abs() < 1e-9);
        let r = f.forecast(&state(101, Some(25.0), 0)).unwrap().ratio;
        assert!((r - 0.75).abs() < 1e-9, "{r}");
        // The same window corrected: smoothed from the ratio before it, not from 0.75.
        let r = f.forecast(&state(101, Some(35.0), 1)).unwrap().ratio;
        assert!((r - 0.85).abs() < 1e-9, "{r}");
        // An older window's correction gets no forecast and leaves the state alone.
        assert!(f.forecast(&state(100, Some(10.0), 1)).is_none());
        // After a gap longer than MAX_GAP_WINDOWS the ratio starts afresh.
        let r = f.forecast(&state(101 + MAX_GAP_WINDOWS + 1, Some(20.0), 0)).unwrap().ratio;
        assert!((r - 0.4).abs() < 1e-9, "{r}");
    }

    #[test]
    fn a_segment_about_to_break_down_is_marked_degrading() {
        let mut f = forecaster(1.0, 1.0);
        // Now 38 km/h against a usual 50 (LOS B); at 08:00 the usual falls to 40:
        // 40 × 0.76 = 30.4 km/h, ratio 0.61 of free flow: C. Not D: not degrading.
        assert!(!f.forecast(&state(7 * 60 + 44, Some(38.0), 0)).unwrap().degrading);
        // 30 km/h now (C), usual 40 later: 24 km/h = 0.48: D, worse: degrading.
        let fc = f.forecast(&state(7 * 60 + 45, Some(30.0), 0)).unwrap();
        assert_eq!(fc.horizons[1].los, Some(LevelOfService::D), "{fc:?}");
        assert!(fc.degrading);
    }

    #[test]
    fn each_segment_learns_how_long_its_differences_last() {
        let mut f = forecaster(1.0, 0.7);
        // 15 windows 20 % above usual, 15 windows 20 % below, and again: a difference is
        // reversed 15 minutes later and the same 30 minutes later.
        let speed = |k: i64| if (k / 15) % 2 == 0 { 60.0 } else { 40.0 };
        let mut last = None;
        for k in 0..(i64::from(MIN_PAIRS) + 45) {
            last = f.forecast(&state(k, Some(speed(k)), 0));
        }
        let fc = last.unwrap();
        let (h15, h30) = (&fc.horizons[0], &fc.horizons[1]);
        assert!(h15.learned && h30.learned, "{fc:?}");
        assert_eq!(h15.kept, 0.0, "a reversing difference keeps nothing: {fc:?}");
        // (Not exactly 1: the usual speed drops to 40 for two of these hours.)
        assert!(h30.kept > 0.9, "the same difference half an hour later: {fc:?}");
        // Before MIN_PAIRS windows the prior stands in.
        let mut g = forecaster(1.0, 0.7);
        let fc = g.forecast(&state(0, Some(40.0), 0)).unwrap();
        assert!(!fc.horizons[0].learned);
        assert!((fc.horizons[0].kept - 0.7).abs() < 1e-9);
        assert!((fc.horizons[1].kept - 0.49).abs() < 1e-9);
    }

    #[test]
    fn no_baseline_or_no_speed_no_forecast() {
        let mut f = forecaster(0.5, 0.7);
        assert!(f.forecast(&state(10, None, 0)).is_none());
        let mut other = state(10, Some(30.0), 0);
        other.segment = SegmentId::parse("s2").unwrap();
        assert!(f.forecast(&other).is_none());
        let mut off = forecaster(0.5, 0.7);
        off.settings.enabled = false;
        assert!(off.forecast(&state(10, Some(30.0), 0)).is_none());
    }
}
