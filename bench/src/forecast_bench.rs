//! Forecast accuracy (part of `--intel`): the segment forecasts (`stream::forecast`) made
//! over a simulated fortnight, against what each segment's window then measured, beside
//! the two reference forecasts the model must beat:
//! - **persistence**: the speed of the window the forecast is made from;
//! - **historical average**: the learned usual speed at the target time (the baseline's
//!   centre, the `usual_kmh` of each forecast).
//!
//! The target of a horizon `h` made from the window `[start, end)` is the segment window
//! `[end + h − 1 min, end + h)`, the newest minute at the forecast instant. Errors are
//! per forecast: MAE in km/h, MAPE in % (targets under 1 km/h left out of MAPE), and the
//! share of forecasts whose LOS grade is the target's. Several settings of the model run
//! side by side on the same windows (the product's default first); they replay the
//! fortnight's segment states through `Forecaster` itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use stream::{ForecastSettings, Forecaster, LevelOfService, SegmentState};
use telemetry::baseline::Baselines;
use telemetry::RoadSegment;

const MINUTE: i64 = 60_000;

/// (smoothing α, prior persistence φ) compared with the product's default; each segment's
/// own `β` replaces the prior after `MIN_PAIRS` windows.
const GRID: [(f64, f64); 6] =
    [(1.0, 1.0), (0.5, 0.5), (0.5, 0.7), (0.2, 0.8), (0.2, 0.9), (0.05, 0.95)];

#[derive(Debug, Default, Clone, Copy)]
struct Errors {
    n: u64,
    abs: f64,
    pct_n: u64,
    pct: f64,
    los_n: u64,
    los_hit: u64,
}

impl Errors {
    fn add(&mut self, forecast: f64, actual: f64, los: Option<(LevelOfService, LevelOfService)>) {
        self.n += 1;
        self.abs += (forecast - actual).abs();
        if actual >= 1.0 {
            self.pct_n += 1;
            self.pct += (forecast - actual).abs() / actual;
        }
        if let Some((f, a)) = los {
            self.los_n += 1;
            self.los_hit += u64::from(f == a);
        }
    }

    fn json(&self) -> Value {
        let r = |v: f64, places: i32| (v * 10f64.powi(places)).round() / 10f64.powi(places);
        json!({
            "n": self.n,
            "mae_kmh": r(self.abs / self.n.max(1) as f64, 3),
            "mape_pct": r(100.0 * self.pct / self.pct_n.max(1) as f64, 2),
            "los_exact_share": r(self.los_hit as f64 / self.los_n.max(1) as f64, 4),
        })
    }
}

/// Errors at each horizon, for the forecasts made from windows `within` selects.
struct Scores {
    horizons: Vec<u32>,
    model: Vec<Errors>,
    persistence: Vec<Errors>,
    average: Vec<Errors>,
}

impl Scores {
    fn new(horizons: &[u32]) -> Self {
        let n = horizons.len();
        Self {
            horizons: horizons.to_vec(),
            model: vec![Errors::default(); n],
            persistence: vec![Errors::default(); n],
            average: vec![Errors::default(); n],
        }
    }

    fn by_horizon(&self, errors: &[Errors]) -> Value {
        self.horizons
            .iter()
            .zip(errors)
            .map(|(h, e)| (format!("{h}m"), e.json()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// Accuracy of the forecasts over `states` (the fortnight's segment windows in emission
/// order). `disturbed` selects the windows of a second, harder subset (for example those
/// during injected incidents), reported beside all windows.
pub fn accuracy(
    states: &[SegmentState],
    baselines: &Arc<Baselines>,
    segments: &[RoadSegment],
    window: Duration,
    disturbed: &dyn Fn(&SegmentState) -> bool,
) -> Value {
    let free_flow: HashMap<&str, f64> =
        segments.iter().map(|s| (s.id.as_str(), s.free_flow_kmh)).collect();
    // The last revision of each window: what the segment measured.
    let mut actual: HashMap<(&str, i64), (f64, Option<LevelOfService>)> = HashMap::new();
    for s in states {
        if let Some(v) = s.speed_kmh {
            actual.insert((s.segment.as_str(), s.start.millis()), (v, s.los));
        }
    }
    let default = ForecastSettings::default();
    let mut settings = vec![default.clone()];
    settings.extend(GRID.iter().map(|&(smoothing, persistence)| ForecastSettings {
        smoothing,
        persistence,
        ..default.clone()
    }));
    settings.dedup_by(|a, b| a.smoothing == b.smoothing && a.persistence == b.persistence);
    let mut results = Vec::new();
    let mut reference = None;
    for (k, setting) in settings.iter().enumerate() {
        let mut f = Forecaster::new(setting.clone(), window);
        f.set_baselines(baselines.clone());
        f.set_segments(segments.iter().map(|s| (s.id.clone(), s.free_flow_kmh)));
        let mut all = Scores::new(&setting.horizons_minutes);
        let mut hard = Scores::new(&setting.horizons_minutes);
        for s in states.iter().filter(|s| s.revision == 0) {
            let Some(fc) = f.forecast(s) else { continue };
            let (Some(now), ff) = (s.speed_kmh, free_flow.get(s.segment.as_str())) else {
                continue;
            };
            for (i, h) in fc.horizons.iter().enumerate() {
                let Some(&(target, target_los)) =
                    actual.get(&(s.segment.as_str(), h.at.millis() - MINUTE))
                else {
                    continue;
                };
                let grade = |v: f64| ff.and_then(|ff| LevelOfService::from_speeds(v, *ff));
                let pair = |f: Option<LevelOfService>| f.zip(target_los);
                for scores in
                    [Some(&mut all), disturbed(s).then_some(&mut hard)].into_iter().flatten()
                {
                    scores.model[i].add(h.speed_kmh, target, pair(h.los));
                    scores.persistence[i].add(now, target, pair(s.los));
                    scores.average[i].add(h.usual_kmh, target, pair(grade(h.usual_kmh)));
                }
            }
        }
        if k == 0 {
            reference = Some(json!({
                "all_windows": {
                    "persistence": all.by_horizon(&all.persistence),
                    "historical_average": all.by_horizon(&all.average),
                },
                "disturbed_windows": {
                    "persistence": hard.by_horizon(&hard.persistence),
                    "historical_average": hard.by_horizon(&hard.average),
                },
            }));
        }
        let beats = |a: &Scores| {
            a.model.iter().zip(&a.persistence).zip(&a.average).all(|((m, p), h)| {
                let mae = |e: &Errors| e.abs / e.n.max(1) as f64;
                mae(m) < mae(p) && mae(m) < mae(h)
            })
        };
        results.push(json!({
            "smoothing": setting.smoothing,
            "persistence": setting.persistence,
            "product_default": k == 0,
            "all_windows": all.by_horizon(&all.model),
            "disturbed_windows": hard.by_horizon(&hard.model),
            "beats_both_on_mae_all_windows": beats(&all),
            "beats_both_on_mae_disturbed_windows": beats(&hard),
        }));
    }
    json!({
        "target": "the segment's mean speed over the minute ending at the forecast instant",
        "references": reference,
        "model": results,
    })
}
