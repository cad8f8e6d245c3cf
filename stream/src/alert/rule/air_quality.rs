//! The shipped air-quality rules (see [`super`] for their legal basis), added to every
//! rule set unless `air_quality_defaults = false` or a rule reuses the id.

use std::time::Duration;

use telemetry::MetricId;

use super::super::Severity;
use super::{AirQualityDefinition, RuleDefinition, ScopeDefinition};

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
            anomaly: None,
            health: None,
        }
    }
}
