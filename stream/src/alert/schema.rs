//! The JSON Schema of the rules document and of one rule, written once next to the types
//! of [`super::rule`] and served in the API's OpenAPI document.
//!
//! Invariant: a document the schema refuses is refused by serde or by
//! [`AlertRulesConfig::validate`](super::AlertRulesConfig::validate) with an error that is
//! not [`RuleError::beyond_schema`](super::rule::RuleError::beyond_schema); what the schema
//! accepts is accepted, except for what a JSON Schema cannot say, which `validate` reports
//! as `beyond_schema`: two rules with one id, a `clear` on the wrong side of its level, a
//! zero duration where one must be positive, an averaging period under 24 s, storm
//! grouping with a zero window, a `max_shelve` outside 1m to 30d, a `suppressed_by` naming
//! no rule or the rule itself, a scope `kind` that is not a known device kind (the kinds
//! are in the schema's description and examples; refused like an unknown kind at device
//! registration). The segments and devices a scope names are checked against the registry
//! by the caller ([`super::subjects`]), also beyond the schema. Every example in the schema is a valid rule
//! (`tests::schema_examples_are_valid_rules`); the OpenAPI test checks the examples of the
//! API's tests against the schema.

use serde_json::{json, Value};
use telemetry::baseline::{DEVICE_METRICS, SEGMENT_FIGURES};
use telemetry::{DeviceKind, MetricId};

use super::rule::{SegmentFigure, AIR_QUALITY_LIMITS};
use crate::los::LevelOfService;

/// A humantime duration as the schema admits it: up to six terms such as `5m` or `1h 30m`.
pub const DURATION_PATTERN: &str =
    "^[0-9]{1,6}(ns|us|ms|s|m|h|d|w)( ?[0-9]{1,6}(ns|us|ms|s|m|h|d|w)){0,5}$";
/// A rule id: what `RuleId::parse` accepts.
pub const RULE_ID_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";
const DEVICE_ID_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";
const SEGMENT_ID_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,63}$";

fn duration() -> Value {
    json!({"type": "string", "pattern": DURATION_PATTERN, "description": "A duration such as \"90s\", \"5m\" or \"1h 30m\""})
}

fn metric() -> Value {
    let names: Vec<&str> = MetricId::ALL.iter().map(|m| m.as_str()).collect();
    json!({"type": "string", "enum": names})
}

/// The figures of a segment's state a threshold with `on = "segment"` can watch.
fn segment_figure() -> Value {
    json!({"type": "string", "enum": SegmentFigure::ALL.map(SegmentFigure::as_str)})
}

/// A threshold's metric: a metric of the catalogue, or a segment figure (`flow_vph` is
/// one only a segment has).
fn threshold_metric() -> Value {
    let mut names: Vec<&str> = MetricId::ALL.iter().map(|m| m.as_str()).collect();
    for f in SegmentFigure::ALL.map(SegmentFigure::as_str) {
        if !names.contains(&f) {
            names.push(f);
        }
    }
    json!({"type": "string", "enum": names, "description": "A metric of the catalogue (on = \"device\"), or flow_vph, speed_kmh or occupancy_pct (on = \"segment\")"})
}

/// Present: a threshold evaluated on segments.
fn segment_threshold() -> Value {
    json!({"required": ["threshold"], "properties": {"threshold": {"type": "object", "required": ["on"], "properties": {"on": {"const": "segment"}}}}})
}

/// Present: an anomaly evaluated on segments.
fn segment_anomaly() -> Value {
    json!({"required": ["anomaly"], "properties": {"anomaly": {"type": "object", "required": ["on"], "properties": {"on": {"const": "segment"}}}}})
}

/// An anomaly's metric: a learned device metric or segment figure.
fn anomaly_metric() -> Value {
    let mut names: Vec<&str> = DEVICE_METRICS.iter().map(|m| m.as_str()).collect();
    for f in SEGMENT_FIGURES {
        if !names.contains(&f) {
            names.push(f);
        }
    }
    json!({"type": "string", "enum": names, "description": "A learned device metric (vehicle_count, speed_kmh, occupancy_pct, no2_ugm3, pm10_ugm3; on = \"device\") or segment figure (flow_vph, speed_kmh, occupancy_pct; on = \"segment\")"})
}

/// A detector-health check (docs/detector-health.md): `check` and the fields of that check.
fn health() -> Value {
    let share = |d: &str| json!({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "description": d});
    let positive = |d: &str| json!({"type": "number", "exclusiveMinimum": 0, "description": d});
    let only = |check: &str, keys: &[&str]| {
        let not: Vec<Value> = keys.iter().map(|k| json!({"required": [k]})).collect();
        json!({"if": {"properties": {"check": {"const": check}}}, "then": {"not": {"anyOf": not}}})
    };
    json!({
        "allOf": [
            table(&["check"], json!({
                "check": {"type": "string", "enum": telemetry::health::HealthFlag::ALL.map(telemetry::health::HealthFlag::as_str)},
                "for": or_null(duration()),
                "readings": or_null(json!({"type": "integer", "minimum": 2, "maximum": u32::MAX, "description": "stuck: fewest identical readings (default 10)"})),
                "epsilon": or_null(json!({"type": "number", "minimum": 0, "description": "stuck: how close two readings count as one value (default 0)"})),
                "metrics": or_null(json!({"type": "array", "minItems": 1, "items": metric(), "description": "stuck: the metrics watched (default vehicle_count, speed_kmh, occupancy_pct, no2_ugm3, pm10_ugm3)"})),
                "window": or_null(duration()),
                "busy_min_count": or_null(positive("zero_busy: vehicles the baseline must expect in a window for it to be busy (default 10)")),
                "min_samples": or_null(json!({"type": "integer", "minimum": 1, "maximum": 52, "description": "zero_busy: fewest weeks the baseline's slot is learned from (default 2)"})),
                "max_missing": or_null(share("missing: share of expected readings missing that trips (default 0.5)")),
                "clear_missing": or_null(json!({"type": "number", "minimum": 0, "maximum": 1, "description": "missing: share at or under which it clears (default 0.2; at most max_missing)"})),
                "interval": or_null(duration()),
                "capacity_vph": or_null(positive("implausible: most vehicles per hour and lane (default 2400)")),
                "min_flow_vph": or_null(positive("implausible: flow per lane from which occupancy is judged (default 150)")),
                "full_occupancy_pct": or_null(json!({"type": "number", "exclusiveMinimum": 0, "maximum": 100, "description": "implausible: occupancy counted as full (default 90)"})),
                "free_flow_kmh": or_null(positive("implausible: a full detector at this speed or more is implausible (default 50)")),
                "vehicle_length_m": or_null(positive("implausible: effective vehicle length, m (default 6)")),
                "tolerance": or_null(json!({"type": "number", "minimum": 1, "description": "implausible: factor occupancy may differ from flow × length / speed (default 3)"})),
            })),
            only("stuck", &["window", "busy_min_count", "min_samples", "max_missing", "clear_missing", "interval", "capacity_vph", "min_flow_vph", "full_occupancy_pct", "free_flow_kmh", "vehicle_length_m", "tolerance"]),
            only("zero_busy", &["readings", "epsilon", "metrics", "max_missing", "clear_missing", "interval", "capacity_vph", "min_flow_vph", "full_occupancy_pct", "free_flow_kmh", "vehicle_length_m", "tolerance"]),
            only("missing", &["readings", "epsilon", "metrics", "busy_min_count", "min_samples", "capacity_vph", "min_flow_vph", "full_occupancy_pct", "free_flow_kmh", "vehicle_length_m", "tolerance"]),
            only("implausible", &["readings", "epsilon", "metrics", "busy_min_count", "min_samples", "max_missing", "clear_missing"]),
        ],
        "description": "A data-quality check of each device in scope (docs/detector-health.md): stuck (one non-zero value repeated for readings and for), zero_busy (no vehicle over windows the learned baseline calls busy, for), missing (the share of readings the report interval promises that did not arrive over window), implausible (flow, speed and occupancy against the fundamental diagram, per window, for). Each raises its own alert and records a flag interval",
    })
}

/// A scope that watches segments: all, or a list of segments.
fn segments_scope() -> Value {
    json!({"properties": {"scope": {"anyOf": [
        {"const": "all"},
        {"type": "object", "required": ["segments"]},
    ]}}})
}

fn number() -> Value {
    json!({"type": "number"})
}

fn table(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "additionalProperties": false, "required": required, "properties": properties})
}

/// `schema` or null (serde reads null as an absent optional field).
fn or_null(schema: Value) -> Value {
    json!({"anyOf": [{"type": "null"}, schema]})
}

/// Present: given, and not null.
fn given(key: &str, kind: &str) -> Value {
    json!({"required": [key], "properties": {key: {"type": kind}}})
}

/// The schema of one rule (`[[alerts.rules]]`); `id` is required unless `id_optional`
/// (the body of `PUT /api/v1/alert-rules/{id}`, whose id is the path's).
pub fn rule_schema(id_optional: bool) -> Value {
    let shipped: Vec<&str> = AIR_QUALITY_LIMITS.iter().map(|l| l.metric.as_str()).collect();
    let los: Vec<&str> = LevelOfService::ALL.iter().map(|l| l.as_str()).collect();
    let kinds = [
        "threshold",
        "offline",
        "flatline",
        "rate_of_change",
        "los",
        "air_quality",
        "anomaly",
        "health",
    ];
    let id = json!({"type": "string", "pattern": RULE_ID_PATTERN});
    let mut schema = table(
        if id_optional { &["severity"] } else { &["id", "severity"] },
        json!({
            "id": if id_optional { or_null(id) } else { id },
            "description": {"type": "string"},
            "severity": {"type": "string", "enum": ["info", "warning", "critical"]},
            "scope": {"oneOf": [
                {"type": "string", "const": "all"},
                table(&["devices"], json!({"devices": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": DEVICE_ID_PATTERN}}})),
                table(&["kind"], json!({"kind": {"type": "string", "minLength": 1, "examples": DeviceKind::ALL.map(DeviceKind::as_str), "description": format!("Devices of this kind, one of {} (another kind is refused with 422)", DeviceKind::names())}})),
                table(&["segments"], json!({"segments": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": SEGMENT_ID_PATTERN}}})),
            ]},
            "enabled": {"type": "boolean"},
            "raises_per_minute": or_null(json!({"type": "integer", "minimum": 1, "maximum": u32::MAX})),
            "suppressed_by": {"type": "array", "maxItems": 64, "items": {"type": "string", "pattern": RULE_ID_PATTERN}, "description": "Designed suppression: ids of other rules whose active alerts on the same subject (or on a device's segment) suppress this rule's alerts"},
            "threshold": or_null(json!({
                "allOf": [
                    table(&["metric"], json!({
                        "metric": threshold_metric(),
                        "on": {"type": "string", "enum": ["device", "segment"], "description": "device (the default): evaluated on each device's own readings, one condition and one alert per device in scope (a rule scoped to segments watches every device linked to them); segment: evaluated on each road segment's state per window (its flow_vph, mean speed_kmh or mean occupancy_pct over its linked detectors), one alert per segment"},
                        "above": or_null(number()), "below": or_null(number()), "clear": or_null(number()), "for": duration(),
                    })),
                    {"if": {"required": ["on"], "properties": {"on": {"const": "segment"}}},
                     "then": {"properties": {"metric": segment_figure()}},
                     "else": {"properties": {"metric": metric()}}},
                ],
                "oneOf": [given("above", "number"), given("below", "number")],
                "description": "Above (or below) a level for a duration; back at or below (above) clear, which defaults to the level, it clears. Evaluated per device unless on = \"segment\": a device threshold raises one alert per device, never one for a segment's aggregate",
            })),
            "offline": or_null(table(&[], json!({
                "silence_factor": {"type": "number", "minimum": 1},
                "interval": or_null(duration()),
                "min_silence": duration(),
                "last_will": {"type": "boolean"},
            }))),
            "flatline": or_null(json!({
                "allOf": [table(&["metric"], json!({
                    "metric": metric(),
                    "epsilon": {"type": "number", "minimum": 0},
                    "for": or_null(duration()),
                    "readings": or_null(json!({"type": "integer", "minimum": 2, "maximum": u32::MAX})),
                }))],
                "anyOf": [given("for", "string"), given("readings", "integer")],
            })),
            "rate_of_change": or_null(table(&["metric", "max_per_minute"], json!({
                "metric": metric(),
                "max_per_minute": {"type": "number", "exclusiveMinimum": 0},
                "for": duration(),
            }))),
            "los": or_null(table(&["at_or_worse"], json!({
                "at_or_worse": {"type": "string", "enum": los},
                "for": duration(),
            }))),
            "air_quality": or_null(json!({
                "allOf": [table(&["metric"], json!({
                    "metric": metric(),
                    "limit": or_null(number()),
                    "averaging": or_null(duration()),
                    "clear": or_null(number()),
                }))],
                "anyOf": [given("limit", "number"), {"properties": {"metric": {"enum": shipped}}}],
                "description": "A running mean over averaging above limit; metrics with a shipped limit (no2_ugm3, pm10_ugm3, pm25_ugm3, o3_ugm3) may leave limit and averaging out",
            })),
            "anomaly": or_null(json!({
                "allOf": [
                    table(&["metric", "direction"], json!({
                        "metric": anomaly_metric(),
                        "on": {"type": "string", "enum": ["device", "segment"], "description": "device (the default): each device's readings against its own baseline; segment: each road segment's state per window against the segment's baseline"},
                        "direction": {"type": "string", "enum": ["below", "above"]},
                        "k": {"type": "number", "exclusiveMinimum": 0, "maximum": 100, "description": "Robust spreads past the usual centre that trip (default 3)"},
                        "clear_k": or_null(json!({"type": "number", "minimum": 0, "description": "Spreads within which the value is back (default k / 2; at most k)"})),
                        "for": duration(),
                        "min_samples": {"type": "integer", "minimum": 1, "maximum": 52, "description": "Fewest weeks a slot must have been learned from to be judged against (default 2)"},
                    })),
                    {"if": {"required": ["on"], "properties": {"on": {"const": "segment"}}},
                     "then": {"properties": {"metric": {"enum": SEGMENT_FIGURES}}},
                     "else": {"properties": {"metric": {"enum": DEVICE_METRICS.map(MetricId::as_str)}}}},
                ],
                "description": "Past the learned time-of-week baseline (docs/baselines.md) by more than k robust spreads, below or above, for a duration; back within clear_k spreads clears. Samples whose slot is not learned from min_samples weeks are skipped",
            })),
            "health": or_null(health()),
        }),
    );
    // Exactly one kind table, given and not null.
    let one_kind: Vec<Value> = kinds.iter().map(|k| given(k, "object")).collect();
    schema["oneOf"] = json!(one_kind);
    // A LOS rule, a threshold and an anomaly on segments watch segments.
    schema["allOf"] = json!([
        {"if": given("los", "object"), "then": segments_scope()},
        {"if": segment_threshold(), "then": segments_scope()},
        {"if": segment_anomaly(), "then": segments_scope()},
    ]);
    schema["examples"] = Value::Array(examples(id_optional));
    schema
}

/// The schema of the rules document (`[alerts]` as JSON).
pub fn rules_document_schema() -> Value {
    let mut schema = table(
        &[],
        json!({
            "storm": table(&[], json!({
                "raises_per_minute": {"type": "integer", "minimum": 1, "maximum": u32::MAX},
                "group_over_devices": {"type": "integer", "minimum": 0, "maximum": u32::MAX},
                "group_window": duration(),
            })),
            "air_quality_defaults": {"type": "boolean"},
            "max_shelve": {"type": "string", "pattern": DURATION_PATTERN, "description": "The longest an operator may shelve an alert, 1m to 30d (default 8h)"},
            "operator_positions": {"type": "integer", "minimum": 1, "maximum": 100, "description": "Operator positions: alarm-flood figures are per position (default 1)"},
            "rules": {"type": "array", "items": without_examples(rule_schema(false))},
        }),
    );
    schema["examples"] = json!([
        {"air_quality_defaults": false, "rules": examples(false)},
        {"air_quality_defaults": false, "max_shelve": "4h", "operator_positions": 3, "rules": [
            {"id": "no2-alarm", "severity": "critical", "threshold": {"metric": "no2_ugm3", "above": 400.0}},
            {"id": "no2-warn", "severity": "warning", "suppressed_by": ["no2-alarm"], "threshold": {"metric": "no2_ugm3", "above": 200.0}},
        ]},
        {"storm": {"raises_per_minute": 10, "group_over_devices": 5, "group_window": "30s"}, "rules": []},
    ]);
    schema
}

fn without_examples(mut schema: Value) -> Value {
    if let Some(o) = schema.as_object_mut() {
        o.remove("examples");
    }
    schema
}

/// A rule of each kind, as the README and the tests write them.
pub fn examples(id_optional: bool) -> Vec<Value> {
    let mut rules = vec![
        json!({"id": "congestion", "severity": "critical", "scope": {"segments": ["viale-strozzi"]}, "los": {"at_or_worse": "E", "for": "5m"}}),
        json!({"id": "no2-high", "severity": "warning", "threshold": {"metric": "no2_ugm3", "above": 200.0, "clear": 180.0, "for": "10m"}}),
        json!({"id": "slow-traffic", "severity": "info", "scope": {"kind": "traffic_loop"}, "threshold": {"metric": "speed_kmh", "below": 10.0, "for": "2m"}}),
        json!({"id": "offline", "severity": "warning", "offline": {"silence_factor": 3.0, "min_silence": "1m", "last_will": true}}),
        json!({"id": "stuck-speed", "severity": "info", "scope": {"devices": ["loop-viale-strozzi-0"]}, "flatline": {"metric": "speed_kmh", "epsilon": 0.01, "readings": 30}}),
        json!({"id": "speed-jump", "severity": "info", "rate_of_change": {"metric": "speed_kmh", "max_per_minute": 40.0, "for": "1m"}}),
        json!({"id": "pm10-daily", "severity": "warning", "air_quality": {"metric": "pm10_ugm3"}}),
        json!({"id": "slow-segment", "severity": "warning", "scope": {"segments": ["viale-strozzi"]}, "threshold": {"metric": "speed_kmh", "on": "segment", "below": 15.0, "clear": 20.0, "for": "5m"}}),
        json!({"id": "unusually-slow", "severity": "warning", "anomaly": {"metric": "speed_kmh", "on": "segment", "direction": "below", "k": 3.0, "for": "3m"}}),
        json!({"id": "loop-implausible", "severity": "info", "scope": {"kind": "traffic_loop"}, "health": {"check": "implausible", "window": "5m", "for": "15m"}}),
    ];
    if id_optional {
        for r in &mut rules {
            if let Some(o) = r.as_object_mut() {
                o.remove("id");
            }
        }
    }
    rules
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::AlertRulesConfig;

    #[test]
    fn schema_examples_are_valid_rules() {
        let schema = rules_document_schema();
        for doc in schema["examples"].as_array().unwrap() {
            let parsed: AlertRulesConfig = serde_json::from_value(doc.clone()).unwrap();
            parsed.validate().unwrap();
        }
        let rules: Vec<Value> = rule_schema(false)["examples"].as_array().unwrap().clone();
        assert_eq!(rules.len(), 10);
        let doc: AlertRulesConfig =
            serde_json::from_value(json!({"air_quality_defaults": true, "rules": rules})).unwrap();
        assert_eq!(doc.validate().unwrap().rules.len(), 10 + AIR_QUALITY_LIMITS.len());
    }

    #[test]
    fn schema_durations_parse() {
        for text in ["5m", "1h 30m", "1h30m", "90s", "250ms", "999999w", "1d 2h 3m 4s 5ms 6us"] {
            humantime::parse_duration(text).unwrap();
        }
    }
}
