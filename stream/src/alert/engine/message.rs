//! The message of each alert the engine opens: a stable code, its parameters and the
//! English text.

use std::time::Duration;

use telemetry::MetricId;

use super::super::lifecycle::{MessageCode, Params};
use super::super::rule::{Deviation, Direction, Rule, RuleKind};
use super::super::Subject;

/// Flat message parameters.
pub(super) fn params(pairs: &[(&str, serde_json::Value)]) -> Params {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// A number as a message parameter (non-finite values become null).
fn num(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// An anomaly's message: the value, the usual centre and spread at the time it raised.
fn anomaly(
    d: &Deviation,
    metric: &str,
    unit: &str,
    value: f64,
    expected: Option<telemetry::baseline::Expected>,
) -> (MessageCode, Params, String) {
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let (side, code) = if d.direction == Direction::Above {
        ("above", MessageCode::AnomalyAbove)
    } else {
        ("below", MessageCode::AnomalyBelow)
    };
    let (centre, spread) = expected.map_or((f64::NAN, f64::NAN), |e| (e.centre, e.spread));
    let p = params(&[
        ("metric", metric.into()),
        ("unit", unit.into()),
        ("value", num(round(value))),
        ("centre", num(round(centre))),
        ("spread", num(round(spread))),
        ("k", num(d.k)),
        ("for_s", num(d.hold.as_secs_f64())),
    ]);
    let text = format!(
        "{metric} {:.1} {unit}, {side} its usual {:.1} {unit} by more than {} × {:.1} {unit} for {}",
        round(value),
        round(centre),
        d.k,
        round(spread),
        humantime::format_duration(d.hold)
    );
    (code, p, text)
}

/// The message of a single alert: its code, parameters and English text.
pub(super) fn describe(
    rule: &Rule,
    subject: &Subject,
    value: f64,
    expected: Option<telemetry::baseline::Expected>,
    health: Option<crate::alert::health::HealthNote>,
) -> (MessageCode, Params, String) {
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let secs = |d: Duration| num(d.as_secs_f64());
    let who = (String::from("subject"), serde_json::Value::from(subject.to_string()));
    let metric = |m: MetricId| [("metric", m.as_str().into()), ("unit", m.spec().unit.into())];
    let (code, mut p, text) = match &rule.kind {
        RuleKind::Threshold(t) => {
            let (side, code) = if t.direction == Direction::Above {
                ("above", MessageCode::ThresholdAbove)
            } else {
                ("below", MessageCode::ThresholdBelow)
            };
            let mut p = params(&metric(t.metric));
            p.extend(params(&[
                ("limit", num(t.level)),
                ("for_s", secs(t.hold)),
                ("value", num(value)),
            ]));
            (code, p, format!("{} {side} {} for {}: {value}", t.metric, t.level, d(t.hold)))
        }
        RuleKind::SegmentThreshold(t) => {
            let (side, code) = if t.direction == Direction::Above {
                ("above", MessageCode::ThresholdAbove)
            } else {
                ("below", MessageCode::ThresholdBelow)
            };
            let p = params(&[
                ("metric", t.figure.as_str().into()),
                ("unit", t.figure.unit().into()),
                ("limit", num(t.level)),
                ("for_s", secs(t.hold)),
                ("value", num((value * 10.0).round() / 10.0)),
            ]);
            let text = format!(
                "{} {side} {} for {}: {:.1}",
                t.figure,
                t.level,
                d(t.hold),
                (value * 10.0).round() / 10.0
            );
            (code, p, text)
        }
        RuleKind::Anomaly(a) => {
            anomaly(&a.deviation, a.metric.as_str(), a.metric.spec().unit, value, expected)
        }
        RuleKind::SegmentAnomaly(a) => {
            anomaly(&a.deviation, a.figure.as_str(), a.figure.unit(), value, expected)
        }
        RuleKind::Health(h) => health_message(h, value, health.unwrap_or_default()),
        RuleKind::Offline(_) => (
            MessageCode::DeviceOffline,
            params(&[("silence_s", num(value.round()))]),
            format!("offline, last data {value:.0} s ago"),
        ),
        RuleKind::Flatline(f) => {
            let mut p = params(&metric(f.metric));
            p.extend(params(&[
                ("value", num(value)),
                ("epsilon", num(f.epsilon)),
                ("readings", f.readings.into()),
                ("for_s", secs(f.hold)),
            ]));
            (
                MessageCode::Flatline,
                p,
                format!(
                    "{} stuck at {value} (± {}) for {} readings / {}",
                    f.metric,
                    f.epsilon,
                    f.readings,
                    d(f.hold)
                ),
            )
        }
        RuleKind::RateOfChange(r) => {
            let mut p = params(&metric(r.metric));
            p.extend(params(&[
                ("rate_per_min", num((value * 100.0).round() / 100.0)),
                ("limit_per_min", num(r.max_per_minute)),
            ]));
            (
                MessageCode::RateOfChange,
                p,
                format!("{} changing {value:.2}/min, limit {}/min", r.metric, r.max_per_minute),
            )
        }
        RuleKind::Los(l) => (
            MessageCode::LosAtOrWorse,
            params(&[
                ("grade", l.at_or_worse.as_str().into()),
                ("for_s", secs(l.hold)),
                ("speed_kmh", num((value * 10.0).round() / 10.0)),
            ]),
            format!("LOS {} or worse for {} (speed {value:.1} km/h)", l.at_or_worse, d(l.hold)),
        ),
        RuleKind::AirQuality(a) => {
            let mut p = params(&metric(a.metric));
            p.extend(params(&[
                ("averaging_s", secs(a.averaging)),
                ("mean", num((value * 10.0).round() / 10.0)),
                ("limit", num(a.limit)),
            ]));
            (
                MessageCode::AirQualityMean,
                p,
                format!(
                    "{} mean over {} is {value:.1}, above {}",
                    a.metric,
                    d(a.averaging),
                    a.limit
                ),
            )
        }
    };
    p.insert(who.0, who.1);
    (code, p, format!("{subject}: {text}"))
}

/// A detector-health flag's message, from the figures of the edge that raised it.
fn health_message(
    h: &crate::alert::rule::HealthRule,
    value: f64,
    note: crate::alert::health::HealthNote,
) -> (MessageCode, Params, String) {
    use crate::alert::rule::HealthCheck;
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let for_s = num(h.hold.as_secs_f64());
    let hold = humantime::format_duration(h.hold);
    match &h.check {
        HealthCheck::Stuck { .. } => {
            let metric = note.metric.unwrap_or(MetricId::SpeedKmh);
            let unit = metric.spec().unit;
            let p = params(&[
                ("metric", metric.as_str().into()),
                ("unit", unit.into()),
                ("value", num(value)),
                ("readings", note.readings.into()),
                ("for_s", for_s),
            ]);
            let text = format!(
                "{metric} stuck at {value} {unit} for {} readings / {hold} (data-quality flag)",
                note.readings
            );
            (MessageCode::HealthStuck, p, text)
        }
        HealthCheck::ZeroBusy { window, .. } => {
            let usual = round(note.usual);
            let p = params(&[
                ("for_s", for_s),
                ("usual", num(usual)),
                ("window_s", num(window.as_secs_f64())),
            ]);
            let text = format!(
                "no vehicle counted for {hold} where {usual} are usual per {} (data-quality flag)",
                humantime::format_duration(*window)
            );
            (MessageCode::HealthZeroBusy, p, text)
        }
        HealthCheck::Missing { window, .. } => {
            let pct = (note.missing * 1000.0).round() / 10.0;
            let p = params(&[("missing_pct", num(pct)), ("window_s", num(window.as_secs_f64()))]);
            let text = format!(
                "{pct} % of the expected readings missing over {} (data-quality flag)",
                humantime::format_duration(*window)
            );
            (MessageCode::HealthMissing, p, text)
        }
        HealthCheck::Implausible { .. } => {
            let reason = note.reason.map_or("implausible", |r| r.as_str());
            let (q, v, o) =
                (round(note.flow_vph), round(note.speed_kmh), round(note.occupancy_pct));
            let p = params(&[
                ("reason", reason.into()),
                ("flow_vph", num(q)),
                ("speed_kmh", num(v)),
                ("occupancy_pct", num(o)),
            ]);
            let text = format!(
                "implausible readings ({reason}): {q} veh/h at {v} km/h, occupancy {o} % (data-quality flag)"
            );
            (MessageCode::HealthImplausible, p, text)
        }
    }
}
