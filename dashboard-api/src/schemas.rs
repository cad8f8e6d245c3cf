//! The JSON Schemas of what the API answers, each with an example, written from the
//! handlers' own output (`devices::device_view`, `routes::history`, `alerts::segments`,
//! the serialised store records). They are named components of the OpenAPI document
//! (`#/components/schemas/…`), so the docs page renders each once and links to it. The
//! objects are closed (`additionalProperties: false`): a field a handler gains without
//! its schema fails the OpenAPI test, which validates real answers of a running server
//! and every example against these schemas (tests/tests/openapi.rs).
//!
//! The schema builders and the examples' scene are here; the objects are in `devices`
//! (devices, their values, history, segments, the catalogue), `alerts` and `admin`
//! (dead letters, commands, webhooks, deliveries, tokens, the audit log); the answers
//! of the operations, which wrap and page them, in `answers`.

mod admin;
mod alerts;
mod answers;
mod devices;
mod quality;

use serde_json::{json, Value};
use telemetry::MetricId;

use crate::openapi::enumeration;
use admin::{audit_entry, command, dead_letter, delivery, token, webhook};
use alerts::{alert, alert_event};
pub use answers::{
    alert_list, alert_one, alert_with_events, audit_page, baselines_answer, catalogue_answer,
    command_list, command_one, dead_letter_page, dead_letter_reasons, delivery_list,
    device_credentials, device_decommissioned, device_list, device_one, device_with_latest, error,
    forecasts_answer, healthz, history_answer, latest, map_devices, me, readyz, redelivered,
    rule_answer, rules_answer, segment_answer, token_created, token_list, token_one, wall,
    webhook_list, webhook_one,
};
use devices::{
    catalogue, device, device_detail, forecast, history, latest_value, mqtt_credentials, segments,
};
pub use quality::{device_quality, quality_list};

/// A reference to the component `name`.
pub fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A closed object whose `required` keys come first on the page, in this order.
fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "additionalProperties": false, "required": required, "properties": properties})
}

/// A closed object whose every key is present, listed in `order` first.
fn record_in(order: &[&str], properties: Value) -> Value {
    object(order, properties)
}

fn described(mut schema: Value, description: &str) -> Value {
    schema["description"] = json!(description);
    schema
}

fn example(mut schema: Value, example: Value) -> Value {
    schema["examples"] = json!([example]);
    schema
}

fn or_null(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn text(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn number(description: &str) -> Value {
    json!({"type": "number", "description": description})
}

fn whole(description: &str) -> Value {
    json!({"type": "integer", "description": description})
}

fn count(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "description": description})
}

fn flag(description: &str) -> Value {
    json!({"type": "boolean", "description": description})
}

/// Unix milliseconds.
fn ms(description: &str) -> Value {
    json!({"type": "integer", "description": format!("{description} (Unix milliseconds)")})
}

fn ms_or_null(description: &str) -> Value {
    json!({"type": ["integer", "null"], "description": format!("{description} (Unix milliseconds), or null")})
}

fn text_or_null(description: &str) -> Value {
    json!({"type": ["string", "null"], "description": description})
}

fn number_or_null(description: &str) -> Value {
    json!({"type": ["number", "null"], "description": description})
}

fn list(items: Value, description: &str) -> Value {
    json!({"type": "array", "items": items, "description": description})
}

fn names<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|v| name(*v)).collect()
}

fn metric() -> Value {
    described(enumeration(&names(MetricId::ALL, MetricId::as_str)), "A metric id of the catalogue")
}

fn los_grade() -> Value {
    let grades = names(&stream::LevelOfService::ALL, stream::LevelOfService::as_str);
    json!({"type": ["string", "null"], "enum": grades.iter().map(|g| json!(g)).chain([Value::Null]).collect::<Vec<_>>(),
        "description": "Level of Service, A (free flow) to F (breakdown); null without speeds"})
}

// Examples: one small Florence scene used throughout.
const DEVICE: &str = "loop-viale-strozzi-0";
const SEGMENT: &str = "viale-strozzi";
const T0: i64 = 1_763_892_000_000;

fn device_example() -> Value {
    json!({"id": DEVICE, "kind": "traffic_loop", "segment": SEGMENT, "registered_at": T0 - 86_400_000,
        "decommissioned_at": null, "has_credentials": true, "gateway": null,
        "position": {"lon": 11.2471, "lat": 43.7808, "bearing_deg": 95.0}, "online": true})
}

fn latest_example() -> Value {
    json!({"device": DEVICE, "metric": "speed_kmh", "time": T0 + 55_000, "value": 41.5})
}

fn alert_example() -> Value {
    json!({"id": 42, "rule": "congestion", "subject": {"segment": SEGMENT}, "kind": "single",
        "severity": "critical", "state": "acknowledged",
        "message": "segment viale-strozzi: LOS E or worse for 300 s (speed 12.1 km/h)",
        "value": 12.1, "since": T0 - 240_000, "raised_at": T0 + 60_000,
        "acknowledged": {"by": "wall-3", "note": "unit dispatched", "at": T0 + 100_000},
        "cleared": null, "members": 1, "active": true, "returned_at": null, "shelved": null,
        "suppressed": null, "code": "los_at_or_worse",
        "params": {"subject": "segment viale-strozzi", "grade": "E", "for_s": 300.0, "speed_kmh": 12.1}})
}

fn alert_event_example() -> Value {
    json!({"id": 7, "alert": 42, "from": "raised", "to": "acknowledged", "action": "acknowledge",
        "by": "wall-3", "note": "unit dispatched", "at": T0 + 100_000})
}

fn command_example() -> Value {
    json!({"id": "0b0c5c1e-8e0f-4c4e-9a57-3d1b3c2a9f10", "device": DEVICE, "name": "set_interval",
        "args": {"interval": "10s"}, "idempotency_key": "ops-2025-11-23-1", "status": "acked",
        "detail": null, "created_by": "operator-1", "created_at": T0, "sent_at": T0 + 40,
        "expires_at": T0 + 60_000, "finished_at": T0 + 900})
}

fn webhook_example() -> Value {
    json!({"id": 3, "url": "https://hooks.example.org/sccr", "types": ["it.firenze.sccr.alert.*"],
        "enabled": true, "format": "cloudevents", "created_at": T0})
}

/// The answer objects, by component name.
pub fn components() -> Vec<(&'static str, Value)> {
    vec![
        ("Device", device()),
        ("DeviceDetail", device_detail()),
        ("MqttCredentials", mqtt_credentials()),
        ("LatestValue", latest_value()),
        ("History", history()),
        ("SegmentCollection", segments()),
        ("SegmentForecast", forecast()),
        ("Alert", alert()),
        ("AlertEvent", alert_event()),
        ("Catalogue", catalogue()),
        ("DeadLetter", dead_letter()),
        ("Command", command()),
        ("Webhook", webhook()),
        ("Delivery", delivery()),
        ("Token", token()),
        ("AuditEntry", audit_entry()),
    ]
}
