//! The `[alerts]` document as written in the config file and sent to the admin API:
//! serde, `deny_unknown_fields`, durations as humantime strings; defaults of its settings.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::MetricId;

use super::super::Severity;
use crate::los::LevelOfService;
use crate::segment_state::SegmentState;

/// Counts as JSON Schema's `integer` reads them: `5` or `5.0` (the rules' schema says
/// `integer`, which admits both).
mod whole {
    use serde::{Deserialize, Deserializer};

    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let v = f64::deserialize(d)?;
        if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) {
            Ok(v as u32)
        } else {
            Err(serde::de::Error::custom(format!(
                "{v} is not a whole number from 0 to {}",
                u32::MAX
            )))
        }
    }

    pub fn option_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        #[derive(Deserialize)]
        struct Whole(#[serde(deserialize_with = "u32")] u32);
        Ok(Option::<Whole>::deserialize(d)?.map(|Whole(v)| v))
    }
}

/// Storm protection settings shared by all rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StormSettings {
    /// Token bucket per rule: at most this many new alerts per minute (and as a burst);
    /// further raises are folded into one overflow alert of the rule. A rule may override.
    #[serde(default = "default_raises_per_minute", deserialize_with = "whole::u32")]
    pub raises_per_minute: u32,
    /// When more than this many devices of one segment raise one rule within
    /// `group_window`, further raises of that segment fold into one segment alert. 0 turns
    /// grouping off.
    #[serde(default = "default_group_over", deserialize_with = "whole::u32")]
    pub group_over_devices: u32,
    #[serde(default = "default_group_window", with = "crate::duration_serde")]
    pub group_window: Duration,
}

fn default_raises_per_minute() -> u32 {
    10
}
fn default_group_over() -> u32 {
    3
}
fn default_group_window() -> Duration {
    Duration::from_secs(60)
}
fn yes() -> bool {
    true
}

impl Default for StormSettings {
    fn default() -> Self {
        Self {
            raises_per_minute: default_raises_per_minute(),
            group_over_devices: default_group_over(),
            group_window: default_group_window(),
        }
    }
}

/// The alert rules document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRulesConfig {
    #[serde(default)]
    pub storm: StormSettings,
    /// Add the shipped air-quality rules ([`AIR_QUALITY_LIMITS`](super::AIR_QUALITY_LIMITS)).
    #[serde(default = "yes")]
    pub air_quality_defaults: bool,
    /// The longest an operator may shelve an alert (ISA-18.2 shelving), 1m to 30d.
    #[serde(default = "default_max_shelve", with = "crate::duration_serde")]
    pub max_shelve: Duration,
    /// Operator positions watching the alerts, 1 to 100: the alarm-flood figures are per
    /// position (EEMUA 191).
    #[serde(default = "default_positions", deserialize_with = "whole::u32")]
    pub operator_positions: u32,
    #[serde(default)]
    pub rules: Vec<RuleDefinition>,
}

/// The default longest shelf: one shift.
pub const DEFAULT_MAX_SHELVE: Duration = Duration::from_secs(8 * 3_600);
/// The bounds of `max_shelve`.
pub const MAX_SHELVE_RANGE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(30 * 86_400));

fn default_max_shelve() -> Duration {
    DEFAULT_MAX_SHELVE
}
fn default_positions() -> u32 {
    1
}

impl Default for AlertRulesConfig {
    fn default() -> Self {
        Self {
            storm: StormSettings::default(),
            air_quality_defaults: true,
            max_shelve: DEFAULT_MAX_SHELVE,
            operator_positions: 1,
            rules: Vec::new(),
        }
    }
}

/// Which subjects a rule watches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ScopeDefinition {
    #[default]
    All,
    /// These registered devices.
    Devices(Vec<String>),
    /// Devices of one kind, one of [`DeviceKind::ALL`] (`traffic_loop`, `air_quality`, …).
    ///
    /// [`DeviceKind::ALL`]: telemetry::DeviceKind::ALL
    Kind(String),
    /// Devices linked to these segments, or these segments for a rule evaluated on
    /// segments (`los`, `threshold` with `on = "segment"`).
    Segments(Vec<String>),
}

/// One rule as written. Exactly one of the kind tables must be present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDefinition {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub severity: Severity,
    #[serde(default)]
    pub scope: ScopeDefinition,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::option_u32"
    )]
    pub raises_per_minute: Option<u32>,
    /// Designed suppression (ISA-18.2): while an alert of one of these rules is active on
    /// the same subject (or, for a device, on its segment), this rule's alerts are
    /// recorded suppressed, not signalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressed_by: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<ThresholdDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<OfflineDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flatline: Option<FlatlineDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_of_change: Option<RateOfChangeDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub los: Option<LosDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub air_quality: Option<AirQualityDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<AnomalyDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<super::HealthDefinition>,
}

/// A value past a level for a duration, with a clear level for hysteresis.
///
/// Evaluated per device by default (`on = "device"`): each device in scope has its own
/// condition on its own readings of `metric`, and raises its own alert (subject: the
/// device); a rule scoped to segments watches the devices linked to them. With
/// `on = "segment"` it is evaluated on each road segment's state per window (`metric` one
/// of [`SegmentFigure`]: the segment's flow, mean speed or mean occupancy over its linked
/// detectors), once per segment (subject: the segment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdDefinition {
    pub metric: String,
    /// What the threshold is evaluated on: each device's readings, or each segment's state.
    #[serde(default, skip_serializing_if = "ThresholdOn::is_device")]
    pub on: ThresholdOn,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Back past this level clears; defaults to the threshold itself (no hysteresis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<f64>,
    #[serde(rename = "for", default, with = "crate::duration_serde")]
    pub hold: Duration,
}

/// What a threshold is evaluated on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdOn {
    /// Each device's own readings: one condition and one alert per device.
    #[default]
    Device,
    /// Each road segment's state per window: one condition and one alert per segment.
    Segment,
}

impl ThresholdOn {
    pub fn is_device(&self) -> bool {
        *self == Self::Device
    }
}

/// A figure of a road segment's state per window that a threshold can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentFigure {
    /// Vehicles per hour past the segment (the sum over its detectors).
    FlowVph,
    /// Mean speed of the segment's detectors, km/h.
    SpeedKmh,
    /// Mean occupancy of the segment's detectors, %.
    OccupancyPct,
}

impl SegmentFigure {
    pub const ALL: [SegmentFigure; 3] = [Self::FlowVph, Self::SpeedKmh, Self::OccupancyPct];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FlowVph => "flow_vph",
            Self::SpeedKmh => "speed_kmh",
            Self::OccupancyPct => "occupancy_pct",
        }
    }

    /// The unit, as the metric catalogue writes units.
    pub fn unit(self) -> &'static str {
        match self {
            Self::FlowVph => "veh/h",
            Self::SpeedKmh => MetricId::SpeedKmh.spec().unit,
            Self::OccupancyPct => MetricId::OccupancyPct.spec().unit,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The figure in a segment window, if the window has it.
    pub fn of(self, s: &SegmentState) -> Option<f64> {
        match self {
            Self::FlowVph => s.flow_vph,
            Self::SpeedKmh => s.speed_kmh,
            Self::OccupancyPct => s.occupancy_pct,
        }
    }
}

impl fmt::Display for SegmentFigure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A deviation from the learned baseline (docs/baselines.md): the value past the usual
/// centre by more than `k` robust spreads, in `direction`, for `for`; back within `clear_k`
/// spreads clears. Evaluated per device on its readings of `metric` (`on = "device"`, a
/// learned device metric), or per segment on its state per window (`on = "segment"`, a
/// segment figure). A sample whose slot has fewer than `min_samples` samples (or none) is
/// skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyDefinition {
    pub metric: String,
    #[serde(default, skip_serializing_if = "ThresholdOn::is_device")]
    pub on: ThresholdOn,
    pub direction: AnomalyDirection,
    /// Robust spreads past the centre that trip (default 3).
    #[serde(default = "default_k")]
    pub k: f64,
    /// Spreads within which the value is back (default half of `k`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_k: Option<f64>,
    #[serde(rename = "for", default, with = "crate::duration_serde")]
    pub hold: Duration,
    /// Fewest samples a slot needs to be judged against (default 2).
    #[serde(default = "default_min_samples", deserialize_with = "whole::u32")]
    pub min_samples: u32,
}

fn default_k() -> f64 {
    3.0
}
fn default_min_samples() -> u32 {
    2
}

/// Which side of the baseline an anomaly is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyDirection {
    Below,
    Above,
}

/// A device offline: its Last Will, or silence longer than `silence_factor` × its interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineDefinition {
    #[serde(default = "default_silence_factor")]
    pub silence_factor: f64,
    /// The expected reporting interval; without it, the device's registered interval, else
    /// the one learned from its recent inter-arrival times.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration_serde::option"
    )]
    pub interval: Option<Duration>,
    /// Never call a device silent before this long, whatever its interval.
    #[serde(default = "default_min_silence", with = "crate::duration_serde")]
    pub min_silence: Duration,
    #[serde(default = "yes")]
    pub last_will: bool,
}

fn default_silence_factor() -> f64 {
    3.0
}
fn default_min_silence() -> Duration {
    Duration::from_secs(60)
}

/// A stuck sensor: the same value (± epsilon) for a duration and/or a number of readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlatlineDefinition {
    pub metric: String,
    #[serde(default)]
    pub epsilon: f64,
    #[serde(
        rename = "for",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration_serde::option"
    )]
    pub hold: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::option_u32"
    )]
    pub readings: Option<u32>,
}

/// |Δvalue / Δt| between consecutive readings above a limit per minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateOfChangeDefinition {
    pub metric: String,
    pub max_per_minute: f64,
    #[serde(rename = "for", default, with = "crate::duration_serde")]
    pub hold: Duration,
}

/// A segment's Level of Service at or worse than a grade for a duration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LosDefinition {
    pub at_or_worse: LevelOfService,
    #[serde(rename = "for", default, with = "crate::duration_serde")]
    pub hold: Duration,
}

/// A running mean over an averaging period above a limit (air-quality limit values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AirQualityDefinition {
    pub metric: String,
    /// Defaults to the shipped limit of the metric ([`AIR_QUALITY_LIMITS`]).
    ///
    /// [`AIR_QUALITY_LIMITS`]: super::AIR_QUALITY_LIMITS
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration_serde::option"
    )]
    pub averaging: Option<Duration>,
    /// The running mean back at or below this clears; defaults to the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<f64>,
}
