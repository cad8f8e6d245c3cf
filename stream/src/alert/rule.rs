//! Alert rule definitions and their validation.
//!
//! [`AlertRulesConfig`] is the `[alerts]` document as written in the config file or sent
//! to the admin API: serde, `deny_unknown_fields`, durations as humantime strings. A rule
//! names its kind by the one table it carries:
//!
//! ```toml
//! [[rules]]
//! id = "no2-high"
//! severity = "warning"
//! scope = { kind = "air_quality" }
//! [rules.threshold]
//! metric = "no2_ugm3"
//! above = 200.0
//! clear = 180.0
//! for = "10m"
//! ```
//!
//! [`AlertRulesConfig::validate`] turns it into a [`RuleSet`] or reports *every* error with
//! its key path (`rules[3].threshold.above`). Invariant: a [`Rule`] only exists validated.
//! A scope `kind` must be a known [`DeviceKind`]; whether the segments and devices a scope
//! names exist is the registry's to say ([`super::subjects`]).
//!
//! Subjects: a `threshold`, `flatline`, `rate_of_change`, `air_quality` or `offline` rule
//! is evaluated **per device**: every device in scope has its own condition and raises its
//! own alert (a scope of segments means the devices linked to them). A `los` rule, and a
//! `threshold` with `on = "segment"` ([`ThresholdOn`]), are evaluated **per road
//! segment** on its state per window (flow, mean speed, mean occupancy, LOS) and raise one
//! alert per segment.
//!
//! Air-quality defaults ([`AIR_QUALITY_LIMITS`], added to every rule set unless
//! `air_quality_defaults = false` or a rule reuses the id):
//! - NO2: 200 µg/m³ hourly mean, limit value for the protection of human health
//!   (Directive 2008/50/EC, Annex XI).
//! - PM10: 50 µg/m³ daily mean, limit value (2008/50/EC, Annex XI).
//! - PM2.5: 15 µg/m³ daily mean, the WHO 2021 Air Quality Guideline 24-hour level. The
//!   2008 Directive has only an annual PM2.5 limit (25 µg/m³), which a live alert cannot
//!   watch; the WHO daily level is the documented guideline we ship instead.
//! - O3: 180 µg/m³ hourly mean, information threshold (2008/50/EC, Annex XII), and
//!   120 µg/m³ 8-hour running mean, target value (2008/50/EC, Annex VII).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::{DeviceId, DeviceKind, MetricId, SegmentId};

use super::{RuleId, Severity};
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
    /// Add the shipped air-quality rules ([`AIR_QUALITY_LIMITS`]).
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

/// A shipped air-quality limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AirQualityLimit {
    pub rule_id: &'static str,
    pub metric: MetricId,
    pub limit: f64,
    pub averaging: Duration,
    pub severity: Severity,
    pub basis: &'static str,
    /// The shipped rules that suppress this one by design.
    pub suppressed_by: &'static [&'static str],
}

/// The shipped air-quality rules; the first entry of a metric is its default limit.
pub const AIR_QUALITY_LIMITS: [AirQualityLimit; 5] = [
    AirQualityLimit {
        rule_id: "aq-no2-hourly",
        metric: MetricId::No2Ugm3,
        limit: 200.0,
        averaging: Duration::from_secs(3_600),
        severity: Severity::Warning,
        basis: "EU Directive 2008/50/EC Annex XI: NO2 hourly limit value",
        suppressed_by: &[],
    },
    AirQualityLimit {
        rule_id: "aq-pm10-daily",
        metric: MetricId::Pm10Ugm3,
        limit: 50.0,
        averaging: Duration::from_secs(86_400),
        severity: Severity::Warning,
        basis: "EU Directive 2008/50/EC Annex XI: PM10 daily limit value",
        suppressed_by: &[],
    },
    AirQualityLimit {
        rule_id: "aq-pm25-daily",
        metric: MetricId::Pm25Ugm3,
        limit: 15.0,
        averaging: Duration::from_secs(86_400),
        severity: Severity::Info,
        basis: "WHO Air Quality Guidelines 2021: PM2.5 24-hour guideline level",
        suppressed_by: &[],
    },
    AirQualityLimit {
        rule_id: "aq-o3-information",
        metric: MetricId::O3Ugm3,
        limit: 180.0,
        averaging: Duration::from_secs(3_600),
        severity: Severity::Warning,
        basis: "EU Directive 2008/50/EC Annex XII: O3 information threshold (hourly mean)",
        suppressed_by: &[],
    },
    AirQualityLimit {
        rule_id: "aq-o3-8h-target",
        metric: MetricId::O3Ugm3,
        limit: 120.0,
        averaging: Duration::from_secs(8 * 3_600),
        severity: Severity::Info,
        basis: "EU Directive 2008/50/EC Annex VII: O3 target value (8-hour mean)",
        // Above the information threshold the 8-hour target says nothing more.
        suppressed_by: &["aq-o3-information"],
    },
];

impl AirQualityLimit {
    pub fn default_for(metric: MetricId) -> Option<&'static AirQualityLimit> {
        AIR_QUALITY_LIMITS.iter().find(|l| l.metric == metric)
    }

    /// The rule definition this limit ships as.
    pub fn definition(&self) -> RuleDefinition {
        RuleDefinition {
            id: self.rule_id.to_owned(),
            description: self.basis.to_owned(),
            severity: self.severity,
            scope: ScopeDefinition::All,
            enabled: true,
            raises_per_minute: None,
            suppressed_by: self.suppressed_by.iter().map(|s| (*s).to_owned()).collect(),
            threshold: None,
            offline: None,
            flatline: None,
            rate_of_change: None,
            los: None,
            air_quality: Some(AirQualityDefinition {
                metric: self.metric.as_str().to_owned(),
                limit: Some(self.limit),
                averaging: Some(self.averaging),
                clear: None,
            }),
        }
    }
}

/// One validation error with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RuleError {
    pub path: String,
    pub message: String,
    /// An error the rules' JSON Schema ([`super::schema`]) cannot express: the document
    /// matches the schema, yet its values contradict each other or a bound between fields.
    pub beyond_schema: bool,
}

/// Every error found in a rules document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error(s) in the alert rules", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl RuleErrors {
    /// Whether every error is one the JSON Schema cannot express.
    pub fn all_beyond_schema(&self) -> bool {
        self.0.iter().all(|e| e.beyond_schema)
    }
}

/// Which subjects a validated rule watches.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleScope {
    All,
    Devices(BTreeSet<DeviceId>),
    Kind(DeviceKind),
    Segments(BTreeSet<SegmentId>),
}

impl RuleScope {
    pub fn covers_device(
        &self,
        id: &DeviceId,
        kind: Option<&str>,
        segment: Option<&SegmentId>,
    ) -> bool {
        match self {
            Self::All => true,
            Self::Devices(ids) => ids.contains(id),
            Self::Kind(k) => kind == Some(k.as_str()),
            Self::Segments(segs) => segment.is_some_and(|s| segs.contains(s)),
        }
    }

    pub fn covers_segment(&self, segment: &SegmentId) -> bool {
        match self {
            Self::All => true,
            Self::Segments(segs) => segs.contains(segment),
            Self::Devices(_) | Self::Kind(_) => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Above,
    Below,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdRule {
    pub metric: MetricId,
    pub direction: Direction,
    pub level: f64,
    pub clear: f64,
    pub hold: Duration,
}

/// A threshold on a segment figure, evaluated per segment window.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentThresholdRule {
    pub figure: SegmentFigure,
    pub direction: Direction,
    pub level: f64,
    pub clear: f64,
    pub hold: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OfflineRule {
    pub silence_factor: f64,
    pub interval: Option<Duration>,
    pub min_silence: Duration,
    pub last_will: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlatlineRule {
    pub metric: MetricId,
    pub epsilon: f64,
    pub hold: Duration,
    pub readings: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateOfChangeRule {
    pub metric: MetricId,
    pub max_per_minute: f64,
    pub hold: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LosRule {
    pub at_or_worse: LevelOfService,
    pub hold: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MeanLimitRule {
    pub metric: MetricId,
    pub limit: f64,
    pub clear: f64,
    pub averaging: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// Per device (`threshold`, `on = "device"`).
    Threshold(ThresholdRule),
    /// Per segment (`threshold`, `on = "segment"`).
    SegmentThreshold(SegmentThresholdRule),
    Offline(OfflineRule),
    Flatline(FlatlineRule),
    RateOfChange(RateOfChangeRule),
    Los(LosRule),
    AirQuality(MeanLimitRule),
}

impl RuleKind {
    /// The metric whose readings the rule evaluates (`None` for offline and LOS).
    pub fn metric(&self) -> Option<MetricId> {
        match self {
            Self::Threshold(r) => Some(r.metric),
            Self::Flatline(r) => Some(r.metric),
            Self::RateOfChange(r) => Some(r.metric),
            Self::AirQuality(r) => Some(r.metric),
            Self::Offline(_) | Self::Los(_) | Self::SegmentThreshold(_) => None,
        }
    }

    /// Whether the rule is evaluated on segment windows (its subjects are segments).
    pub fn on_segments(&self) -> bool {
        matches!(self, Self::Los(_) | Self::SegmentThreshold(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Threshold(_) | Self::SegmentThreshold(_) => "threshold",
            Self::Offline(_) => "offline",
            Self::Flatline(_) => "flatline",
            Self::RateOfChange(_) => "rate_of_change",
            Self::Los(_) => "los",
            Self::AirQuality(_) => "air_quality",
        }
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: RuleId,
    pub description: String,
    pub severity: Severity,
    pub scope: RuleScope,
    pub raises_per_minute: u32,
    /// Rules whose active alerts suppress this rule's (validated: they exist, not itself).
    pub suppressed_by: Vec<RuleId>,
    pub kind: RuleKind,
}

/// The enabled, validated rules and the storm settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    pub storm: StormSettings,
    pub rules: Vec<Rule>,
}

impl Default for RuleSet {
    fn default() -> Self {
        // The shipped defaults are known to be valid.
        AlertRulesConfig::default()
            .validate()
            .unwrap_or(Self { storm: StormSettings::default(), rules: Vec::new() })
    }
}

/// Collects errors under key paths.
struct Report(Vec<RuleError>);

impl Report {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(RuleError { path: path.into(), message: message.into(), beyond_schema: false });
    }

    /// An error the JSON Schema cannot express (see [`RuleError::beyond_schema`]).
    fn beyond(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(RuleError { path: path.into(), message: message.into(), beyond_schema: true });
    }

    fn metric(&mut self, path: String, name: &str) -> Option<MetricId> {
        match name.parse::<MetricId>() {
            Ok(m) => Some(m),
            Err(e) => {
                self.error(path, e.to_string());
                None
            }
        }
    }

    fn finite(&mut self, path: String, v: f64) -> Option<f64> {
        if v.is_finite() {
            Some(v)
        } else {
            self.error(path, "must be a finite number");
            None
        }
    }
}

impl AlertRulesConfig {
    /// The definitions in force: the configured rules plus the shipped air-quality rules
    /// whose ids the configuration does not reuse.
    pub fn effective_definitions(&self) -> Vec<RuleDefinition> {
        let mut defs = self.rules.clone();
        if self.air_quality_defaults {
            for l in &AIR_QUALITY_LIMITS {
                if !defs.iter().any(|d| d.id == l.rule_id) {
                    defs.push(l.definition());
                }
            }
        }
        defs
    }

    /// Validate everything, reporting every error with its key path.
    pub fn validate(&self) -> Result<RuleSet, RuleErrors> {
        let mut report = Report(Vec::new());
        if self.storm.raises_per_minute == 0 {
            report.error("storm.raises_per_minute", "must be at least 1");
        }
        if self.storm.group_window.is_zero() && self.storm.group_over_devices > 0 {
            report.beyond("storm.group_window", "must be positive when grouping is on");
        }
        let (lo, hi) = MAX_SHELVE_RANGE;
        if !(lo..=hi).contains(&self.max_shelve) {
            report.beyond("max_shelve", "must be from 1m to 30d");
        }
        if !(1..=100).contains(&self.operator_positions) {
            report.error("operator_positions", "must be a whole number from 1 to 100");
        }
        let mut rules = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let defs = self.effective_definitions();
        for (i, def) in defs.iter().enumerate() {
            let path = format!("rules[{i}]");
            if let Some(j) = seen.insert(def.id.as_str(), i) {
                report.beyond(
                    format!("{path}.id"),
                    format!("{:?} is already the id of rules[{j}]", def.id),
                );
            }
            for (k, other) in def.suppressed_by.iter().enumerate() {
                let p = format!("{path}.suppressed_by[{k}]");
                if RuleId::parse(other).is_err() {
                    report.error(p, format!("{other:?} is not a rule id"));
                } else if *other == def.id {
                    report.beyond(p, "a rule cannot suppress itself");
                } else if !defs.iter().any(|d| d.id == *other) {
                    report.beyond(p, format!("no rule has the id {other:?}"));
                }
            }
            if let Some(rule) = validate_rule(def, &path, self.storm.raises_per_minute, &mut report)
            {
                if def.enabled {
                    rules.push(rule);
                }
            }
        }
        if report.0.is_empty() {
            Ok(RuleSet { storm: self.storm.clone(), rules })
        } else {
            Err(RuleErrors(report.0))
        }
    }
}

fn validate_rule(
    def: &RuleDefinition,
    path: &str,
    default_rpm: u32,
    report: &mut Report,
) -> Option<Rule> {
    let before = report.0.len();
    let id =
        RuleId::parse(&def.id).map_err(|e| report.error(format!("{path}.id"), e.to_string())).ok();
    if def.raises_per_minute == Some(0) {
        report.error(format!("{path}.raises_per_minute"), "must be at least 1");
    }
    let scope = validate_scope(&def.scope, &format!("{path}.scope"), report);
    let present: Vec<&str> = [
        ("threshold", def.threshold.is_some()),
        ("offline", def.offline.is_some()),
        ("flatline", def.flatline.is_some()),
        ("rate_of_change", def.rate_of_change.is_some()),
        ("los", def.los.is_some()),
        ("air_quality", def.air_quality.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, here)| here.then_some(name))
    .collect();
    let kind = match present.as_slice() {
        [] => {
            report.error(
                path,
                "needs one of threshold, offline, flatline, rate_of_change, los, air_quality",
            );
            None
        }
        [_] => validate_kind(def, path, report),
        many => {
            report.error(path, format!("has {}; a rule has exactly one kind", many.join(" and ")));
            None
        }
    };
    if let (Some(kind), Some(RuleScope::Devices(_) | RuleScope::Kind(_))) = (&kind, &scope) {
        match kind {
            RuleKind::Los(_) => report
                .error(format!("{path}.scope"), "a los rule watches segments: use all or segments"),
            RuleKind::SegmentThreshold(_) => report.error(
                format!("{path}.scope"),
                "a threshold on = \"segment\" watches segments: use all or segments",
            ),
            _ => {}
        }
    }
    if report.0.len() != before {
        return None;
    }
    Some(Rule {
        id: id?,
        description: def.description.clone(),
        severity: def.severity,
        scope: scope?,
        raises_per_minute: def.raises_per_minute.unwrap_or(default_rpm),
        suppressed_by: def.suppressed_by.iter().filter_map(|s| RuleId::parse(s).ok()).collect(),
        kind: kind?,
    })
}

fn validate_scope(scope: &ScopeDefinition, path: &str, report: &mut Report) -> Option<RuleScope> {
    let before = report.0.len();
    let out = match scope {
        ScopeDefinition::All => RuleScope::All,
        ScopeDefinition::Devices(ids) => {
            if ids.is_empty() {
                report.error(format!("{path}.devices"), "lists no device");
            }
            RuleScope::Devices(
                ids.iter()
                    .enumerate()
                    .filter_map(|(k, s)| {
                        DeviceId::parse(s)
                            .map_err(|e| {
                                report.error(format!("{path}.devices[{k}]"), e.to_string())
                            })
                            .ok()
                    })
                    .collect(),
            )
        }
        ScopeDefinition::Kind(k) => match k.parse::<DeviceKind>() {
            Ok(kind) => RuleScope::Kind(kind),
            Err(e) => {
                report.beyond(format!("{path}.kind"), e.to_string());
                RuleScope::All
            }
        },
        ScopeDefinition::Segments(ids) => {
            if ids.is_empty() {
                report.error(format!("{path}.segments"), "lists no segment");
            }
            RuleScope::Segments(
                ids.iter()
                    .enumerate()
                    .filter_map(|(k, s)| {
                        SegmentId::parse(s)
                            .map_err(|e| {
                                report.error(format!("{path}.segments[{k}]"), e.to_string())
                            })
                            .ok()
                    })
                    .collect(),
            )
        }
    };
    (report.0.len() == before).then_some(out)
}

fn validate_kind(def: &RuleDefinition, path: &str, report: &mut Report) -> Option<RuleKind> {
    if let Some(t) = &def.threshold {
        let p = format!("{path}.threshold");
        let watched = match t.on {
            ThresholdOn::Device => report.metric(format!("{p}.metric"), &t.metric).map(Ok),
            ThresholdOn::Segment => match SegmentFigure::parse(&t.metric) {
                Some(f) => Some(Err(f)),
                None => {
                    let names = SegmentFigure::ALL.map(SegmentFigure::as_str).join(", ");
                    report.error(
                        format!("{p}.metric"),
                        format!(
                            "{:?} is not a segment figure; on = \"segment\" watches one of {names}",
                            t.metric.chars().take(64).collect::<String>()
                        ),
                    );
                    None
                }
            },
        };
        let (direction, level) = match (t.above, t.below) {
            (Some(a), None) => (Direction::Above, report.finite(format!("{p}.above"), a)?),
            (None, Some(b)) => (Direction::Below, report.finite(format!("{p}.below"), b)?),
            (None, None) => {
                report.error(p, "needs above or below");
                return None;
            }
            (Some(_), Some(_)) => {
                report.error(p, "has both above and below; write two rules");
                return None;
            }
        };
        let clear = match t.clear {
            None => level,
            Some(c) => {
                let c = report.finite(format!("{p}.clear"), c)?;
                let ok = match direction {
                    Direction::Above => c <= level,
                    Direction::Below => c >= level,
                };
                if !ok {
                    let side = if direction == Direction::Above {
                        "at or below above"
                    } else {
                        "at or above below"
                    };
                    report.beyond(
                        format!("{p}.clear"),
                        format!("{c} must be {side} ({level}) to give hysteresis"),
                    );
                    return None;
                }
                c
            }
        };
        return Some(match watched? {
            Ok(metric) => {
                RuleKind::Threshold(ThresholdRule { metric, direction, level, clear, hold: t.hold })
            }
            Err(figure) => RuleKind::SegmentThreshold(SegmentThresholdRule {
                figure,
                direction,
                level,
                clear,
                hold: t.hold,
            }),
        });
    }
    if let Some(o) = &def.offline {
        let p = format!("{path}.offline");
        if !(o.silence_factor.is_finite() && o.silence_factor >= 1.0) {
            report
                .error(format!("{p}.silence_factor"), "must be a number of intervals, at least 1");
        }
        if o.interval.is_some_and(|d| d.is_zero()) {
            report.beyond(format!("{p}.interval"), "must be positive");
        }
        return Some(RuleKind::Offline(OfflineRule {
            silence_factor: o.silence_factor,
            interval: o.interval,
            min_silence: o.min_silence,
            last_will: o.last_will,
        }));
    }
    if let Some(f) = &def.flatline {
        let p = format!("{path}.flatline");
        let metric = report.metric(format!("{p}.metric"), &f.metric);
        if !(f.epsilon.is_finite() && f.epsilon >= 0.0) {
            report.error(format!("{p}.epsilon"), "must be a finite number, at least 0");
        }
        match (f.hold, f.readings) {
            (None, None) => report.error(p.clone(), "needs for, readings, or both"),
            (_, Some(n)) if n < 2 => report.error(format!("{p}.readings"), "must be at least 2"),
            (Some(d), None) if d.is_zero() => report.beyond(format!("{p}.for"), "must be positive"),
            _ => {}
        }
        return Some(RuleKind::Flatline(FlatlineRule {
            metric: metric?,
            epsilon: f.epsilon,
            hold: f.hold.unwrap_or_default(),
            readings: f.readings.unwrap_or(1),
        }));
    }
    if let Some(r) = &def.rate_of_change {
        let p = format!("{path}.rate_of_change");
        let metric = report.metric(format!("{p}.metric"), &r.metric);
        if !(r.max_per_minute.is_finite() && r.max_per_minute > 0.0) {
            report.error(format!("{p}.max_per_minute"), "must be a positive number");
            return None;
        }
        return Some(RuleKind::RateOfChange(RateOfChangeRule {
            metric: metric?,
            max_per_minute: r.max_per_minute,
            hold: r.hold,
        }));
    }
    if let Some(l) = &def.los {
        return Some(RuleKind::Los(LosRule { at_or_worse: l.at_or_worse, hold: l.hold }));
    }
    if let Some(a) = &def.air_quality {
        let p = format!("{path}.air_quality");
        let metric = report.metric(format!("{p}.metric"), &a.metric)?;
        let shipped = AirQualityLimit::default_for(metric);
        let Some(limit) = a.limit.or(shipped.map(|l| l.limit)) else {
            report.error(format!("{p}.limit"), format!("{metric} has no shipped limit; set one"));
            return None;
        };
        let limit = report.finite(format!("{p}.limit"), limit)?;
        let averaging =
            a.averaging.or(shipped.map(|l| l.averaging)).unwrap_or(Duration::from_secs(3_600));
        if averaging < Duration::from_secs(24) {
            report.beyond(format!("{p}.averaging"), "must be at least 24s");
            return None;
        }
        let clear = match a.clear {
            Some(c) if c > limit => {
                report.beyond(
                    format!("{p}.clear"),
                    format!("{c} must be at or below the limit ({limit})"),
                );
                return None;
            }
            Some(c) => report.finite(format!("{p}.clear"), c)?,
            None => limit,
        };
        return Some(RuleKind::AirQuality(MeanLimitRule { metric, limit, clear, averaging }));
    }
    None
}
