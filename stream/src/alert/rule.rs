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
//!
//! The parts: `definition` (the document as written), `air_quality` (the shipped
//! limits), `validate` (from a document to a [`RuleSet`], every error with its path); the
//! validated rules are here.

mod air_quality;
mod definition;
mod health;
mod validate;

use std::collections::BTreeSet;
use std::time::Duration;

use telemetry::{DeviceId, DeviceKind, MetricId, SegmentId};

pub use air_quality::{AirQualityLimit, AIR_QUALITY_LIMITS};
pub use definition::{
    AirQualityDefinition, AlertRulesConfig, AnomalyDefinition, AnomalyDirection,
    FlatlineDefinition, LosDefinition, OfflineDefinition, RateOfChangeDefinition, RuleDefinition,
    ScopeDefinition, SegmentFigure, StormSettings, ThresholdDefinition, ThresholdOn,
    DEFAULT_MAX_SHELVE, MAX_SHELVE_RANGE,
};
pub use health::{HealthCheck, HealthDefinition, HealthRule, STUCK_METRICS};
pub use validate::{RuleError, RuleErrors};

use super::{RuleId, Severity};
use crate::los::LevelOfService;

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

/// How far from the baseline, for how long (the shared part of the anomaly rules).
#[derive(Debug, Clone, PartialEq)]
pub struct Deviation {
    pub direction: Direction,
    pub k: f64,
    pub clear_k: f64,
    pub hold: Duration,
    pub min_samples: u32,
}

/// A deviation of a device's readings of a learned metric from its baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyRule {
    pub metric: MetricId,
    pub deviation: Deviation,
}

/// A deviation of a segment figure from the segment's baseline, per window.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentAnomalyRule {
    pub figure: SegmentFigure,
    pub deviation: Deviation,
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
    /// Per device (`anomaly`, `on = "device"`).
    Anomaly(AnomalyRule),
    /// Per segment (`anomaly`, `on = "segment"`).
    SegmentAnomaly(SegmentAnomalyRule),
    /// Per device: a data-quality check (`health`, docs/detector-health.md).
    Health(HealthRule),
}

impl RuleKind {
    /// The metric whose readings the rule evaluates (`None` for offline and LOS).
    pub fn metric(&self) -> Option<MetricId> {
        match self {
            Self::Threshold(r) => Some(r.metric),
            Self::Flatline(r) => Some(r.metric),
            Self::RateOfChange(r) => Some(r.metric),
            Self::AirQuality(r) => Some(r.metric),
            Self::Anomaly(r) => Some(r.metric),
            Self::Offline(_)
            | Self::Los(_)
            | Self::SegmentThreshold(_)
            | Self::SegmentAnomaly(_)
            | Self::Health(_) => None,
        }
    }

    /// Whether the rule is evaluated on segment windows (its subjects are segments).
    pub fn on_segments(&self) -> bool {
        matches!(self, Self::Los(_) | Self::SegmentThreshold(_) | Self::SegmentAnomaly(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Threshold(_) | Self::SegmentThreshold(_) => "threshold",
            Self::Offline(_) => "offline",
            Self::Flatline(_) => "flatline",
            Self::RateOfChange(_) => "rate_of_change",
            Self::Los(_) => "los",
            Self::AirQuality(_) => "air_quality",
            Self::Anomaly(_) | Self::SegmentAnomaly(_) => "anomaly",
            Self::Health(_) => "health",
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

impl RuleKind {
    /// The baseline an anomaly rule judges against: (subject kind, metric name).
    pub fn baseline(&self) -> Option<(telemetry::baseline::BaselineOn, &'static str)> {
        use telemetry::baseline::BaselineOn;
        match self {
            Self::Anomaly(r) => Some((BaselineOn::Device, r.metric.as_str())),
            Self::SegmentAnomaly(r) => Some((BaselineOn::Segment, r.figure.as_str())),
            Self::Health(HealthRule { check: HealthCheck::ZeroBusy { .. }, .. }) => {
                Some((BaselineOn::Device, MetricId::VehicleCount.as_str()))
            }
            _ => None,
        }
    }
}

/// The enabled, validated rules and the storm settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    pub storm: StormSettings,
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// The baselines the anomaly rules need: (subject kind, metric name).
    pub fn baseline_needs(
        &self,
    ) -> std::collections::BTreeSet<(telemetry::baseline::BaselineOn, &'static str)> {
        self.rules.iter().filter_map(|r| r.kind.baseline()).collect()
    }
}

impl Default for RuleSet {
    fn default() -> Self {
        // The shipped defaults are known to be valid.
        AlertRulesConfig::default()
            .validate()
            .unwrap_or(Self { storm: StormSettings::default(), rules: Vec::new() })
    }
}
