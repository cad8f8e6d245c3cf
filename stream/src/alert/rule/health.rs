//! Detector-health rules (`health = { check = "…", … }`): the definition as written, its
//! defaults and its validation. What each check watches is `docs/detector-health.md`;
//! the evaluators are [`crate::alert::health`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::health::{HealthFlag, Plausibility};
use telemetry::MetricId;

use super::RuleKind;

/// A data-quality check of each device in scope. Every field but `check` is optional;
/// a field that belongs to another check is refused under its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthDefinition {
    pub check: HealthFlag,
    /// How long the condition must hold before it raises.
    #[serde(
        rename = "for",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration_serde::option"
    )]
    pub hold: Option<Duration>,
    /// `stuck`: fewest identical readings (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readings: Option<u32>,
    /// `stuck`: how close two readings count as the same value (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// `stuck`: the metrics watched (default vehicle_count, speed_kmh, occupancy_pct,
    /// no2_ugm3, pm10_ugm3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<String>>,
    /// `zero_busy`, `implausible`: the window readings are summed over (default 5m);
    /// `missing`: the window the share of missing readings is taken over (default 1h).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration_serde::option"
    )]
    pub window: Option<Duration>,
    /// `zero_busy`: vehicles the baseline must expect in a window for it to be busy
    /// (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_min_count: Option<f64>,
    /// `zero_busy`: fewest weeks the baseline's slot must be learned from (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u32>,
    /// `missing`: the share of expected readings missing that trips (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_missing: Option<f64>,
    /// `missing`: the share at or under which it clears (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_missing: Option<f64>,
    /// `missing`, `implausible`: the device's report interval; default its registered
    /// one, else the one learned from its arrivals.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration_serde::option"
    )]
    pub interval: Option<Duration>,
    /// `implausible`: most vehicles per hour and lane (default 2400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_vph: Option<f64>,
    /// `implausible`: flow per lane from which occupancy is judged (default 150).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_flow_vph: Option<f64>,
    /// `implausible`: occupancy counted as full (default 90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_occupancy_pct: Option<f64>,
    /// `implausible`: a full detector at this speed or more is implausible (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_flow_kmh: Option<f64>,
    /// `implausible`: effective vehicle length in m (default 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vehicle_length_m: Option<f64>,
    /// `implausible`: factor by which occupancy may differ from flow × length / speed
    /// (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
}

/// The metrics a `stuck` check watches by default.
pub const STUCK_METRICS: [MetricId; 5] = [
    MetricId::VehicleCount,
    MetricId::SpeedKmh,
    MetricId::OccupancyPct,
    MetricId::No2Ugm3,
    MetricId::Pm10Ugm3,
];

/// A validated detector-health rule.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthRule {
    pub check: HealthCheck,
    pub hold: Duration,
}

impl HealthRule {
    pub fn flag(&self) -> HealthFlag {
        match self.check {
            HealthCheck::Stuck { .. } => HealthFlag::Stuck,
            HealthCheck::ZeroBusy { .. } => HealthFlag::ZeroBusy,
            HealthCheck::Missing { .. } => HealthFlag::Missing,
            HealthCheck::Implausible { .. } => HealthFlag::Implausible,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum HealthCheck {
    Stuck { readings: u32, epsilon: f64, metrics: Vec<MetricId> },
    ZeroBusy { window: Duration, busy_min_count: f64, min_samples: u32 },
    Missing { window: Duration, max_missing: f64, clear_missing: f64, interval: Option<Duration> },
    Implausible { window: Duration, limits: Plausibility, interval: Option<Duration> },
}

const MIN: Duration = Duration::from_secs(60);

/// Validate a `health` table at `p` (`rules[3].health`), every error with its key.
pub(super) fn validate(
    h: &HealthDefinition,
    p: &str,
    error: &mut dyn FnMut(String, String, bool),
) -> Option<RuleKind> {
    let mut failed = false;
    let mut err = |key: &str, msg: String, beyond: bool| {
        failed = true;
        error(format!("{p}.{key}"), msg, beyond);
    };
    // Fields of other checks are refused by name.
    let own: &[&str] = match h.check {
        HealthFlag::Stuck => &["readings", "epsilon", "metrics"],
        HealthFlag::ZeroBusy => &["window", "busy_min_count", "min_samples"],
        HealthFlag::Missing => &["window", "max_missing", "clear_missing", "interval"],
        HealthFlag::Implausible => &[
            "window",
            "interval",
            "capacity_vph",
            "min_flow_vph",
            "full_occupancy_pct",
            "free_flow_kmh",
            "vehicle_length_m",
            "tolerance",
        ],
    };
    let given = [
        ("readings", h.readings.is_some()),
        ("epsilon", h.epsilon.is_some()),
        ("metrics", h.metrics.is_some()),
        ("window", h.window.is_some()),
        ("busy_min_count", h.busy_min_count.is_some()),
        ("min_samples", h.min_samples.is_some()),
        ("max_missing", h.max_missing.is_some()),
        ("clear_missing", h.clear_missing.is_some()),
        ("interval", h.interval.is_some()),
        ("capacity_vph", h.capacity_vph.is_some()),
        ("min_flow_vph", h.min_flow_vph.is_some()),
        ("full_occupancy_pct", h.full_occupancy_pct.is_some()),
        ("free_flow_kmh", h.free_flow_kmh.is_some()),
        ("vehicle_length_m", h.vehicle_length_m.is_some()),
        ("tolerance", h.tolerance.is_some()),
    ];
    for (key, here) in given {
        if here && !own.contains(&key) {
            err(
                key,
                format!(
                    "does not apply to check {:?}; it takes {}",
                    h.check.as_str(),
                    own.join(", ")
                ),
                false,
            );
        }
    }
    let positive =
        |v: Option<f64>, default: f64, key: &str, err: &mut dyn FnMut(&str, String, bool)| {
            let v = v.unwrap_or(default);
            if !(v.is_finite() && v > 0.0) {
                err(key, "must be a number above 0".into(), false);
            }
            v
        };
    let window = |default: Duration, err: &mut dyn FnMut(&str, String, bool)| {
        let w = h.window.unwrap_or(default);
        if w < MIN || w > Duration::from_secs(86_400) {
            err("window", "must be from 1m to 1d".into(), true);
        }
        w
    };
    let check = match h.check {
        HealthFlag::Stuck => {
            let readings = h.readings.unwrap_or(10);
            if readings < 2 {
                err("readings", "must be at least 2".into(), false);
            }
            let epsilon = h.epsilon.unwrap_or(0.0);
            if !(epsilon.is_finite() && epsilon >= 0.0) {
                err("epsilon", "must be a number, at least 0".into(), false);
            }
            let metrics = match &h.metrics {
                None => STUCK_METRICS.to_vec(),
                Some(list) => {
                    if list.is_empty() {
                        err("metrics", "lists no metric".into(), false);
                    }
                    let mut out = Vec::new();
                    for (i, m) in list.iter().enumerate() {
                        match m.parse::<MetricId>() {
                            Ok(m) => out.push(m),
                            Err(e) => err(&format!("metrics[{i}]"), e.to_string(), false),
                        }
                    }
                    out
                }
            };
            HealthCheck::Stuck { readings, epsilon, metrics }
        }
        HealthFlag::ZeroBusy => {
            let window = window(Duration::from_secs(300), &mut err);
            let busy_min_count = positive(h.busy_min_count, 10.0, "busy_min_count", &mut err);
            let min_samples = h.min_samples.unwrap_or(2);
            if !(1..=52).contains(&min_samples) {
                err("min_samples", "must be 1..=52 (weeks)".into(), false);
            }
            HealthCheck::ZeroBusy { window, busy_min_count, min_samples }
        }
        HealthFlag::Missing => {
            let window = window(Duration::from_secs(3_600), &mut err);
            let max_missing = h.max_missing.unwrap_or(0.5);
            if !(max_missing.is_finite() && max_missing > 0.0 && max_missing < 1.0) {
                err("max_missing", "must be a share above 0 and under 1".into(), false);
            }
            let clear_missing = h.clear_missing.unwrap_or(0.2_f64.min(max_missing));
            if !(clear_missing.is_finite() && clear_missing >= 0.0) {
                err("clear_missing", "must be a share, at least 0".into(), false);
            } else if clear_missing > max_missing {
                err(
                    "clear_missing",
                    format!("{clear_missing} must be at most max_missing ({max_missing}) to give hysteresis"),
                    true,
                );
            }
            if h.interval.is_some_and(|i| i.is_zero() || i > window) {
                err("interval", "must be positive and at most the window".into(), true);
            }
            HealthCheck::Missing { window, max_missing, clear_missing, interval: h.interval }
        }
        HealthFlag::Implausible => {
            let window = window(Duration::from_secs(300), &mut err);
            let d = Plausibility::default();
            let limits = Plausibility {
                capacity_vph: positive(h.capacity_vph, d.capacity_vph, "capacity_vph", &mut err),
                min_flow_vph: positive(h.min_flow_vph, d.min_flow_vph, "min_flow_vph", &mut err),
                full_occupancy_pct: positive(
                    h.full_occupancy_pct,
                    d.full_occupancy_pct,
                    "full_occupancy_pct",
                    &mut err,
                ),
                free_flow_kmh: positive(
                    h.free_flow_kmh,
                    d.free_flow_kmh,
                    "free_flow_kmh",
                    &mut err,
                ),
                vehicle_length_m: positive(
                    h.vehicle_length_m,
                    d.vehicle_length_m,
                    "vehicle_length_m",
                    &mut err,
                ),
                tolerance: positive(h.tolerance, d.tolerance, "tolerance", &mut err),
            };
            if limits.full_occupancy_pct > 100.0 {
                err("full_occupancy_pct", "must be at most 100".into(), false);
            }
            if limits.tolerance < 1.0 {
                err("tolerance", "must be a factor of at least 1".into(), false);
            }
            if h.interval.is_some_and(|i| i.is_zero() || i > window) {
                err("interval", "must be positive and at most the window".into(), true);
            }
            HealthCheck::Implausible { window, limits, interval: h.interval }
        }
    };
    let hold = h.hold.unwrap_or(match h.check {
        HealthFlag::Stuck => Duration::from_secs(1_800),
        HealthFlag::ZeroBusy | HealthFlag::Implausible => Duration::from_secs(900),
        HealthFlag::Missing => Duration::ZERO,
    });
    (!failed).then_some(RuleKind::Health(HealthRule { check, hold }))
}
