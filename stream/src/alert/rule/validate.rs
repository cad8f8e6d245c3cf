//! From a rules document to a [`RuleSet`](super::RuleSet): every error reported with
//! its key path (`rules[3].threshold.above`), those the JSON Schema cannot express marked.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use telemetry::{DeviceId, DeviceKind, MetricId, SegmentId};

use super::super::RuleId;
use super::*;

/// One validation error with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RuleError {
    pub path: String,
    pub message: String,
    /// An error the rules' JSON Schema ([`super::super::schema`]) cannot express: the document
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

/// Which subjects a validated rule watches./// Collects errors under key paths.
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
        ("anomaly", def.anomaly.is_some()),
        ("health", def.health.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, here)| here.then_some(name))
    .collect();
    let kind = match present.as_slice() {
        [] => {
            report.error(
                path,
                "needs one of threshold, offline, flatline, rate_of_change, los, air_quality, anomaly, health",
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
            RuleKind::SegmentAnomaly(_) => report.error(
                format!("{path}.scope"),
                "an anomaly on = \"segment\" watches segments: use all or segments",
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

fn validate_anomaly(a: &AnomalyDefinition, p: &str, report: &mut Report) -> Option<RuleKind> {
    use telemetry::baseline::{learned_metric, BaselineOn, DEVICE_METRICS};
    let before = report.0.len();
    let on = match a.on {
        ThresholdOn::Device => BaselineOn::Device,
        ThresholdOn::Segment => BaselineOn::Segment,
    };
    if learned_metric(on, &a.metric).is_none() {
        let names: Vec<&str> = match on {
            BaselineOn::Device => DEVICE_METRICS.iter().map(|m| m.as_str()).collect(),
            BaselineOn::Segment => SegmentFigure::ALL.map(SegmentFigure::as_str).to_vec(),
        };
        report.error(
            format!("{p}.metric"),
            format!(
                "{:?} has no learned baseline for a {}; one of {}",
                a.metric.chars().take(64).collect::<String>(),
                on.as_str(),
                names.join(", ")
            ),
        );
    }
    if !(a.k.is_finite() && a.k > 0.0 && a.k <= 100.0) {
        report.error(format!("{p}.k"), "must be a number of spreads above 0, at most 100");
    }
    let clear_k = a.clear_k.unwrap_or(a.k / 2.0);
    if let Some(c) = a.clear_k {
        if !(c.is_finite() && c >= 0.0) {
            report.error(format!("{p}.clear_k"), "must be a number of spreads, at least 0");
        } else if c > a.k {
            report.beyond(
                format!("{p}.clear_k"),
                format!("{c} must be at most k ({}) to give hysteresis", a.k),
            );
        }
    }
    if a.min_samples == 0 || a.min_samples > 52 {
        report.error(format!("{p}.min_samples"), "must be 1..=52 (weeks)");
    }
    if report.0.len() != before {
        return None;
    }
    let deviation = Deviation {
        direction: match a.direction {
            AnomalyDirection::Below => Direction::Below,
            AnomalyDirection::Above => Direction::Above,
        },
        k: a.k,
        clear_k,
        hold: a.hold,
        min_samples: a.min_samples,
    };
    Some(match a.on {
        ThresholdOn::Device => {
            RuleKind::Anomaly(AnomalyRule { metric: a.metric.parse().ok()?, deviation })
        }
        ThresholdOn::Segment => RuleKind::SegmentAnomaly(SegmentAnomalyRule {
            figure: SegmentFigure::parse(&a.metric)?,
            deviation,
        }),
    })
}

fn validate_kind(def: &RuleDefinition, path: &str, report: &mut Report) -> Option<RuleKind> {
    if let Some(h) = &def.health {
        return super::health::validate(
            h,
            &format!("{path}.health"),
            &mut |path, message, beyond| {
                report.0.push(RuleError { path, message, beyond_schema: beyond })
            },
        );
    }
    if let Some(a) = &def.anomaly {
        return validate_anomaly(a, &format!("{path}.anomaly"), report);
    }
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
