//! The JSON Schemas of what the API answers, each with an example, written from the
//! handlers' own output (`devices::device_view`, `routes::history`, `alerts::segments`,
//! the serialised store records). They are named components of the OpenAPI document
//! (`#/components/schemas/…`), so the docs page renders each once and links to it. The
//! objects are closed (`additionalProperties: false`): a field a handler gains without
//! its schema fails the OpenAPI test, which validates real answers of a running server
//! and every example against these schemas (tests/tests/openapi.rs).
//!
//! Over 600 lines: one schema per answer object, kept together so each is written once.

use serde_json::{json, Map, Value};
use telemetry::alert::{AlertKind, AlertMove, AlertState, Severity, MESSAGE_CODES};
use telemetry::MetricId;

use crate::openapi::{device_id, enumeration, segment_id};

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
        "decommissioned_at": null, "has_credentials": true, "gateway": null, "online": true})
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

fn device_fields() -> Map<String, Value> {
    let props = json!({
        "id": described(device_id(), "Device id, also its MQTT user name"),
        "kind": text_or_null("What it is (traffic_loop, traffic_light, parking, air_quality, …)"),
        "segment": json!({"type": ["string", "null"], "description": "The road segment it measures, or null"}),
        "registered_at": ms("When it was registered"),
        "decommissioned_at": ms_or_null("When it was decommissioned"),
        "has_credentials": flag("Whether it has an MQTT password"),
        "gateway": text_or_null("The device it is reached through, or null"),
        "online": json!({"type": ["boolean", "null"], "description": "Whether it is online now; null when not heard from since the server started"}),
    });
    props.as_object().cloned().unwrap_or_default()
}

const DEVICE_ORDER: [&str; 8] = [
    "id",
    "kind",
    "segment",
    "registered_at",
    "decommissioned_at",
    "has_credentials",
    "gateway",
    "online",
];

fn device() -> Value {
    example(record_in(&DEVICE_ORDER, Value::Object(device_fields())), device_example())
}

fn device_detail() -> Value {
    let mut props = device_fields();
    props
        .insert("latest".into(), list(reference("LatestValue"), "Its latest value of each metric"));
    let mut order = DEVICE_ORDER.to_vec();
    order.push("latest");
    let mut ex = device_example();
    ex["latest"] = json!([latest_example()]);
    example(record_in(&order, Value::Object(props)), ex)
}

fn mqtt_credentials() -> Value {
    let topic = |what: &str| text(what);
    example(
        record_in(
            &["username", "password", "topics"],
            json!({
                "username": text("The MQTT user name: the device id"),
                "password": text("The MQTT password; shown once, only its hash is kept"),
                "topics": record_in(&["telemetry", "status", "commands", "command_acks"], json!({
                    "telemetry": topic("Where it publishes readings"),
                    "status": topic("Where it publishes its status (and its Last Will)"),
                    "commands": topic("Where it receives commands"),
                    "command_acks": topic("Where it answers commands"),
                })),
            }),
        ),
        json!({"username": DEVICE, "password": "q8V3n1kTz0bYwL5pX2mR7cJ4",
            "topics": {"telemetry": format!("sccr/v1/devices/{DEVICE}/telemetry"),
                "status": format!("sccr/v1/devices/{DEVICE}/status"),
                "commands": format!("sccr/v1/devices/{DEVICE}/commands"),
                "command_acks": format!("sccr/v1/devices/{DEVICE}/commands/ack")}}),
    )
}

fn latest_value() -> Value {
    example(
        record_in(
            &["device", "metric", "time", "value"],
            json!({
                "device": described(device_id(), "Device id"),
                "metric": metric(),
                "time": ms("The reading's time"),
                "value": number("The value, in the metric's unit"),
            }),
        ),
        latest_example(),
    )
}

fn history() -> Value {
    let nullable = |d: &str| number_or_null(&format!("{d}; null in a filled gap"));
    let raw = record_in(
        &["t", "v"],
        json!({"t": ms("The reading's time"), "v": number("The reading's value")}),
    );
    let bucket = record_in(
        &["t", "v", "count", "sum", "min", "max", "last", "avg"],
        json!({
            "t": ms("The bucket's start"),
            "v": nullable("The figure agg asks for"),
            "count": count("Readings in the bucket (0 in a filled gap)"),
            "sum": number("Their sum"),
            "min": nullable("Their minimum"),
            "max": nullable("Their maximum"),
            "last": nullable("The last value by time (the previous bucket's with fill=previous)"),
            "avg": nullable("Their mean"),
        }),
    );
    example(
        record_in(
            &[
                "metric",
                "unit",
                "device",
                "segment",
                "segments",
                "resolution",
                "step_ms",
                "from",
                "to",
                "covered_from",
                "covered_to",
                "points",
            ],
            json!({
                "device": text_or_null("The device asked for, or null"),
                "segment": text_or_null("The segment asked for, or null"),
                "segments": json!({"type": ["array", "null"], "items": segment_id(), "description": "With bbox: the segments in the box; else null"}),
                "metric": metric(),
                "unit": text("The metric's stored unit (empty for flags, states and bare counts)"),
                "resolution": described(enumeration(&["raw", "1m", "1h", "1d"]), "The stored level read"),
                "step_ms": json!({"type": ["integer", "null"], "description": "The bucket width in milliseconds; null for raw readings"}),
                "from": ms("Start asked for, inclusive"),
                "to": ms("End asked for, exclusive"),
                "covered_from": ms("Start of the readings counted: from, unless retention dropped the detail it needs (then widened to a whole bucket)"),
                "covered_to": ms("End of the readings counted, exclusive"),
                "points": list(json!({"anyOf": [raw, bucket]}), "Raw readings {t, v} (step_ms null), or buckets with their figures, oldest first"),
            }),
        ),
        json!({"device": DEVICE, "segment": null, "segments": null, "metric": "speed_kmh", "unit": "km/h",
            "resolution": "1m", "step_ms": 900_000, "from": T0, "to": T0 + 1_800_000,
            "covered_from": T0, "covered_to": T0 + 1_800_000, "points": [
                {"t": T0, "v": 38.2, "count": 450, "sum": 17190.0, "min": 12.5, "max": 52.0, "last": 40.0, "avg": 38.2},
                {"t": T0 + 900_000, "v": 41.0, "count": 450, "sum": 18450.0, "min": 20.0, "max": 55.5, "last": 41.5, "avg": 41.0}]}),
    )
}

fn segments() -> Value {
    let properties = record_in(
        &[
            "id",
            "name",
            "kind",
            "length_m",
            "lanes",
            "speed_limit_kmh",
            "free_flow_kmh",
            "capacity_vph",
            "flow_vph",
            "speed_kmh",
            "occupancy_pct",
            "los",
            "detectors",
            "window",
        ],
        json!({
            "id": described(segment_id(), "Segment id (Road Cadastre)"),
            "name": text("Street name"),
            "kind": text("Road class (urban, arterial, …)"),
            "length_m": number("Length in metres"),
            "lanes": count("Lanes"),
            "speed_limit_kmh": number("Speed limit, km/h"),
            "free_flow_kmh": number("Free-flow speed, km/h: the LOS basis"),
            "capacity_vph": number("Capacity, vehicles per hour"),
            "flow_vph": number_or_null("Live flow, vehicles per hour (newest window), or null"),
            "speed_kmh": number_or_null("Live mean speed, km/h, or null"),
            "occupancy_pct": number_or_null("Live occupancy, %, or null"),
            "los": los_grade(),
            "detectors": json!({"type": ["integer", "null"], "minimum": 0, "description": "Linked detectors that reported in the newest window, or null without one"}),
            "window": described(or_null(record_in(&["start", "end", "revision"], json!({
                "start": ms("Window start"), "end": ms("Window end"), "revision": count("0, one more per correction")}))), "The window the live figures come from, or null"),
        }),
    );
    let feature = record_in(
        &["type", "id", "geometry", "properties"],
        json!({
            "type": {"const": "Feature"},
            "id": segment_id(),
            "geometry": record_in(&["type", "coordinates"], json!({
                "type": {"const": "LineString"},
                "coordinates": list(json!({"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}), "[lon, lat] pairs, WGS84"),
            })),
            "properties": properties,
        }),
    );
    example(
        record_in(
            &["type", "features"],
            json!({"type": {"const": "FeatureCollection"}, "features": list(feature, "One feature per road segment")}),
        ),
        json!({"type": "FeatureCollection", "features": [{"type": "Feature", "id": SEGMENT,
            "geometry": {"type": "LineString", "coordinates": [[11.2421, 43.7793], [11.2468, 43.7812]]},
            "properties": {"id": SEGMENT, "name": "Viale Filippo Strozzi", "kind": "arterial", "length_m": 480.0,
                "lanes": 2, "speed_limit_kmh": 50.0, "free_flow_kmh": 50.0, "capacity_vph": 1800.0,
                "flow_vph": 1320.0, "speed_kmh": 38.4, "occupancy_pct": 12.5, "los": "B", "detectors": 2,
                "window": {"start": T0, "end": T0 + 60_000, "revision": 0}}}]}),
    )
}

fn alert() -> Value {
    let states = names(&AlertState::ALL, AlertState::as_str);
    let codes: Vec<&str> = MESSAGE_CODES.iter().map(|m| m.code.as_str()).collect();
    let who = |by_null: bool| {
        record_in(
            &["by", "note", "at"],
            json!({
                "by": if by_null { text_or_null("The operator; null when the engine cleared it") } else { text("The operator (the token's name)") },
                "note": text_or_null("The operator's note"),
                "at": ms("When"),
            }),
        )
    };
    example(
        record_in(
            &[
                "id",
                "rule",
                "subject",
                "kind",
                "severity",
                "state",
                "active",
                "message",
                "code",
                "params",
                "value",
                "since",
                "raised_at",
                "returned_at",
                "acknowledged",
                "cleared",
                "shelved",
                "suppressed",
                "members",
            ],
            json!({
                "id": whole("The store's id"),
                "rule": text("The rule's id"),
                "subject": {"description": "What it is about", "oneOf": [
                    object(&["device"], json!({"device": device_id()})),
                    object(&["segment"], json!({"segment": segment_id()})),
                    {"const": "rule", "description": "The rule as a whole (rate-limit overflow)"},
                ]},
                "kind": described(enumeration(&names(&AlertKind::ALL, AlertKind::as_str)), "single; segment_group (devices of a segment folded); rate_limit_overflow (raises over the rule's rate limit folded)"),
                "severity": described(enumeration(&names(&Severity::ALL, Severity::as_str)), "How urgent"),
                "state": described(enumeration(&states), "Where it stands in its lifecycle (see the alert lifecycle)"),
                "active": flag("Whether the condition still holds"),
                "message": text("English text, for webhooks and logs; screens render code and params"),
                "code": described(enumeration(&codes), "The message template (GET /api/v1/catalogue lists each with its params)"),
                "params": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]}, "description": "The template's values, flat, numbers as numbers"},
                "value": number_or_null("The value that raised it, or null"),
                "since": ms("When the condition began"),
                "raised_at": ms("When it was raised (the first raise)"),
                "returned_at": ms_or_null("When the condition ended"),
                "acknowledged": described(or_null(who(false)), "Who acknowledged it, when and why; null until acknowledged"),
                "cleared": described(or_null(who(true)), "Who cleared it, when and why; null while open"),
                "shelved": described(or_null(record_in(&["by", "reason", "at", "until"], json!({
                    "by": text("The operator"), "reason": text("Why"), "at": ms("When shelved"), "until": ms("When the shelf ends")}))), "The shelf it is on, or null: a shelved alert signals nothing"),
                "suppressed": described(or_null(record_in(&["reason", "by_alert"], json!({
                    "reason": enumeration(&["suppressed_by_rule", "device_offline"]),
                    "by_alert": json!({"type": ["integer", "null"], "description": "The suppressing alert's id, where known"})}))), "Why it is suppressed by design, or null"),
                "members": count("Subjects folded into it (1 for a single alert)"),
            }),
        ),
        alert_example(),
    )
}

fn alert_event() -> Value {
    let states = names(&AlertState::ALL, AlertState::as_str);
    let nullable_state = json!({"type": ["string", "null"], "enum": states.iter().map(|s| json!(s)).chain([Value::Null]).collect::<Vec<_>>(), "description": "The state before; null for the raise"});
    let moves: Vec<Value> =
        AlertMove::ALL.iter().map(|m| json!(m.as_str())).chain([Value::Null]).collect();
    example(
        record_in(
            &["id", "alert", "from", "to", "action", "by", "note", "at"],
            json!({
                "id": whole("Event id"),
                "alert": whole("The alert's id"),
                "from": nullable_state,
                "to": described(enumeration(&states), "The state after"),
                "action": {"type": ["string", "null"], "enum": moves, "description": "The move; null for the raise"},
                "by": text_or_null("The operator; null for the engine's moves"),
                "note": text_or_null("The operator's note, or the engine's (\"shelf expired\")"),
                "at": ms("When"),
            }),
        ),
        alert_event_example(),
    )
}

fn catalogue() -> Value {
    let kinds = ["gauge", "count", "bool", "code"];
    let metric_entry = record_in(
        &[
            "id",
            "label",
            "unit",
            "unit_ascii",
            "decimals",
            "min",
            "max",
            "kind",
            "zero_based",
            "aggregate",
        ],
        json!({
            "id": metric(),
            "label": record_in(&["en", "it"], json!({"en": text("English"), "it": text("Italian")})),
            "unit": text("Display unit with proper symbols (µg/m³, °C); empty for flags, states and bare counts"),
            "unit_ascii": text("Stored unit (ASCII, SenML where SenML has one)"),
            "decimals": count("Decimals a screen shows"),
            "min": number("Lowest plausible value (lower ones are refused)"),
            "max": number("Highest plausible value (higher ones are refused)"),
            "kind": described(enumeration(&kinds), "gauge (a level), count (per reporting interval, whole), bool (0 or 1), code (a whole number naming a state)"),
            "zero_based": flag("Whether a chart's axis starts at zero"),
            "aggregate": described(enumeration(&["avg", "sum", "last"]), "The figure that sums up a bucket"),
        }),
    );
    let code_entry = record_in(
        &["code", "params", "english"],
        json!({"code": text("Message code"), "params": list(json!({"type": "string"}), "Its parameters"), "english": text("English template, {param} for a parameter")}),
    );
    let level = record_in(
        &["los", "above_ratio"],
        json!({"los": enumeration(&names(&stream::LevelOfService::ALL, stream::LevelOfService::as_str)),
            "above_ratio": number_or_null("The grade applies above this speed / free-flow ratio (null for F)")}),
    );
    let spec = MetricId::SpeedKmh.spec();
    example(
        record_in(
            &["metrics", "alert_codes", "los", "live", "device_kinds", "languages"],
            json!({
                "metrics": list(metric_entry, "Every metric SCCR accepts"),
                "alert_codes": list(code_entry, "Alert message codes"),
                "los": record_in(&["basis", "levels"], json!({"basis": text("What the grades measure"), "levels": list(level, "A to F")})),
                "live": record_in(&["speed_fresh_s", "device_online_s"], json!({
                    "speed_fresh_s": count("A segment speed older than this many seconds is stale"),
                    "device_online_s": count("A device heard from within this many seconds is online")})),
                "device_kinds": list(json!({"type": "string"}), "Kinds of the registered devices"),
                "languages": list(json!({"type": "string"}), "Languages of the labels"),
            }),
        ),
        json!({"metrics": [{"id": spec.name, "label": {"en": spec.label.en, "it": spec.label.it},
                "unit": spec.display_unit, "unit_ascii": spec.unit, "decimals": spec.decimals,
                "min": spec.min, "max": spec.max, "kind": spec.kind.as_str(), "zero_based": spec.zero_based,
                "aggregate": spec.kind.aggregate().as_str()}],
            "alert_codes": [{"code": "device_offline", "params": ["subject", "silence_s"], "english": "{subject}: offline, last data {silence_s} s ago"}],
            "los": {"basis": "speed / free-flow speed", "levels": [{"los": "A", "above_ratio": 0.85}, {"los": "F", "above_ratio": null}]},
            "live": {"speed_fresh_s": 180, "device_online_s": 120},
            "device_kinds": ["air_quality", "traffic_loop"], "languages": ["it", "en"]}),
    )
}

fn dead_letter() -> Value {
    example(
        record_in(
            &[
                "id",
                "received_at",
                "topic",
                "device",
                "reason",
                "detail",
                "payload_size",
                "payload_preview",
            ],
            json!({
                "id": whole("Entry id"),
                "received_at": ms("When ingest received it"),
                "topic": text("The MQTT topic"),
                "device": text_or_null("The device the topic names, or null"),
                "reason": text("The dead-letter reason (see the MQTT contract)"),
                "detail": text("What was wrong; a refused record's detail starts with its index"),
                "payload_size": count("The payload's size in bytes"),
                "payload_preview": text("The payload's first 512 bytes as text"),
            }),
        ),
        json!({"id": 9001, "received_at": T0, "topic": format!("sccr/v1/devices/{DEVICE}/telemetry"),
            "device": DEVICE, "reason": "out_of_range", "detail": "reading 0: speed_kmh value 400 is outside 0..=250",
            "payload_size": 54, "payload_preview": "{\"ts\":1763892000000,\"readings\":[{\"m\":\"speed_kmh\",\"v\":400}]}"}),
    )
}

fn command() -> Value {
    let statuses = ["pending", "sent", "acked", "rejected", "failed", "expired"];
    example(
        record_in(
            &[
                "id",
                "device",
                "name",
                "args",
                "status",
                "detail",
                "idempotency_key",
                "created_by",
                "created_at",
                "sent_at",
                "expires_at",
                "finished_at",
            ],
            json!({
                "id": text("The command's UUID, sent to the device"),
                "device": described(device_id(), "The device"),
                "name": text("What to do"),
                "args": crate::openapi::command_args(),
                "status": described(enumeration(&statuses), "pending → sent (the broker took it) → acked, rejected or failed (the device's answer), or expired"),
                "detail": text_or_null("The device's detail, or why it failed or expired"),
                "idempotency_key": text_or_null("The Idempotency-Key it was sent with"),
                "created_by": text_or_null("Who sent it"),
                "created_at": ms("When it was stored"),
                "sent_at": ms_or_null("When the broker took it"),
                "expires_at": ms("When it expires unanswered"),
                "finished_at": ms_or_null("When it reached a final status"),
            }),
        ),
        command_example(),
    )
}

fn webhook() -> Value {
    example(
        record_in(
            &["id", "url", "types", "enabled", "format", "created_at"],
            json!({
                "id": whole("Subscription id"),
                "url": text("The receiver"),
                "types": list(json!({"type": "string"}), "Event types or prefixes ending in *; empty: all"),
                "enabled": flag("Whether deliveries are made"),
                "format": described(enumeration(&["cloudevents", "ngsi-ld"]), "The payload shape"),
                "created_at": ms("When it was created"),
            }),
        ),
        webhook_example(),
    )
}

fn delivery() -> Value {
    example(
        record_in(
            &[
                "webhook",
                "event",
                "type",
                "subject",
                "state",
                "attempts",
                "next_attempt_at",
                "last_status",
                "last_error",
                "delivered_at",
            ],
            json!({
                "webhook": whole("The subscription"),
                "event": whole("The event's id (the CloudEvents id)"),
                "type": text("The event type"),
                "subject": text("What the event is about (alert/42, command/…)"),
                "state": enumeration(&["pending", "delivered", "dead"]),
                "attempts": count("Attempts made"),
                "next_attempt_at": ms("When the next attempt is due"),
                "last_status": json!({"type": ["integer", "null"], "description": "The receiver's last HTTP status, or null"}),
                "last_error": text_or_null("The last failure, or null"),
                "delivered_at": ms_or_null("When it was delivered"),
            }),
        ),
        json!({"webhook": 3, "event": 1204, "type": "it.firenze.sccr.alert.raised", "subject": "alert/42",
            "state": "delivered", "attempts": 1, "next_attempt_at": T0, "last_status": 204, "last_error": null,
            "delivered_at": T0 + 120}),
    )
}

fn token() -> Value {
    example(
        record_in(
            &["id", "name", "role", "created_at", "revoked_at"],
            json!({
                "id": whole("Token id"),
                "name": text("Who or what uses it (the operator's name in alert events)"),
                "role": enumeration(&["admin", "operator", "planner", "device"]),
                "created_at": ms("When it was created"),
                "revoked_at": ms_or_null("When it was revoked"),
            }),
        ),
        json!({"id": 5, "name": "wall-3", "role": "operator", "created_at": T0, "revoked_at": null}),
    )
}

fn audit_entry() -> Value {
    example(
        record_in(
            &["id", "at", "actor", "role", "action", "target", "detail"],
            json!({
                "id": whole("Entry id"),
                "at": ms("When"),
                "actor": text("The token's name"),
                "role": text("The token's role"),
                "action": text("What was done (device.register, alert.shelve, token.revoke, …)"),
                "target": text("What it was done to (device/loop-12, token/5, …)"),
                "detail": {"description": "The action's details"},
            }),
        ),
        json!({"id": 77, "at": T0, "actor": "admin", "role": "admin", "action": "device.register",
            "target": format!("device/{DEVICE}"), "detail": {"kind": "traffic_loop", "segment": SEGMENT, "gateway": null}}),
    )
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

/// A reference to `component`, described.
fn described_ref(component: &str, description: &str) -> Value {
    described(reference(component), description)
}

/// `{key: <component>}` (plus `extra` keys), with an example.
fn wrap(key: &str, component: &str, description: &str, ex: Value, extra: Value) -> Value {
    let mut props = Map::new();
    props.insert(key.into(), described_ref(component, description));
    let mut order = vec![key.to_owned()];
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        order.push(k.clone());
        props.insert(k, v);
    }
    let order: Vec<&str> = order.iter().map(String::as_str).collect();
    example(object(&order, Value::Object(props)), ex)
}

/// `{key: [<component>…], next_cursor}`: a page.
fn page(key: &str, component: &str, item: Value, cursor: &str, next: Value) -> Value {
    let mut extra = Map::new();
    extra.insert(cursor.into(), next.clone());
    let mut ex = Map::new();
    ex.insert(key.into(), json!([item]));
    ex.insert(cursor.into(), Value::Null);
    let mut props = Map::new();
    props.insert(key.into(), list(reference(component), "This page, in order"));
    props.insert(cursor.into(), next);
    example(object(&[key, cursor], Value::Object(props)), Value::Object(ex))
}

fn string_cursor(what: &str) -> Value {
    text_or_null(&format!("Pass as cursor for the next page ({what}); null on the last page"))
}

pub fn device_one() -> Value {
    let ex = json!({"device": device_example(), "broker": broker_example()});
    let extra = json!({"broker": described(broker_outcome(), "Present when the change reached the broker's rights (a gateway given)")});
    let mut schema = wrap("device", "Device", "The device", ex, extra);
    schema["required"] = json!(["device"]);
    schema
}

/// What the broker got of a change of credentials or rights (`[provisioning] mode`).
fn broker_outcome() -> Value {
    object(
        &["provisioning", "applied"],
        json!({
            "provisioning": {"type": "string", "enum": ["dynsec", "password_file", "none"], "description": "How credentials reach the broker ([provisioning] mode)"},
            "applied": flag("The broker has it now (dynsec confirmed it)"),
            "pending": flag("dynsec did not confirm in time or refused: SCCR applies it when the broker answers"),
            "error": text("Why it is pending"),
            "next": text("What to run (password files), or what happens next"),
        }),
    )
}

fn broker_example() -> Value {
    json!({"provisioning": "dynsec", "applied": true})
}

pub fn device_decommissioned() -> Value {
    wrap(
        "device",
        "Device",
        "The device, decommissioned",
        json!({"device": device_example(), "broker": broker_example()}),
        json!({"broker": broker_outcome()}),
    )
}

pub fn device_with_latest() -> Value {
    let mut ex = device_example();
    ex["latest"] = json!([latest_example()]);
    wrap(
        "device",
        "DeviceDetail",
        "The device with its latest values",
        json!({"device": ex}),
        json!({}),
    )
}

pub fn device_list() -> Value {
    page(
        "devices",
        "Device",
        device_example(),
        "next_cursor",
        string_cursor("the last device's id"),
    )
}

/// A device with its MQTT credentials (registration, new password).
pub fn device_credentials() -> Value {
    let ex = json!({"device": device_example(), "mqtt": mqtt_credentials()["examples"][0], "broker": broker_example()});
    wrap(
        "device",
        "Device",
        "The device",
        ex,
        json!({"mqtt": described_ref("MqttCredentials", "Its MQTT user name, password (shown once) and topics"), "broker": described(broker_outcome(), "What the broker got: applied at once (dynsec), pending, or what to run (password files)")}),
    )
}

pub fn latest() -> Value {
    let mut ex = Map::new();
    ex.insert("values".into(), json!([latest_example()]));
    example(
        object(
            &["values"],
            json!({"values": list(reference("LatestValue"), "One per (device, metric)")}),
        ),
        Value::Object(ex),
    )
}

pub fn alert_list() -> Value {
    example(
        object(
            &["alerts", "next"],
            json!({
                "alerts": list(reference("Alert"), "Newest first"),
                "next": json!({"type": ["integer", "null"], "description": "Pass as before for the next page; null on the last page"}),
            }),
        ),
        json!({"alerts": [alert_example()], "next": null}),
    )
}

pub fn alert_one() -> Value {
    wrap("alert", "Alert", "The alert as it is now", json!({"alert": alert_example()}), json!({}))
}

pub fn alert_with_events() -> Value {
    wrap(
        "alert",
        "Alert",
        "The alert",
        json!({"alert": alert_example(), "events": [alert_event_example()]}),
        json!({"events": list(reference("AlertEvent"), "Its lifecycle moves, oldest first")}),
    )
}

/// `schema` (an input schema of the rules) for what the server writes: durations as
/// humantime formats them, which may use units and term counts the input pattern
/// does not (`"237years 8months 24days 2h"`).
fn as_written(mut schema: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if m.get("pattern").and_then(Value::as_str)
                    == Some(stream::alert::schema::DURATION_PATTERN)
                {
                    m.insert("pattern".into(), json!(telemetry::duration_serde::WRITTEN_PATTERN));
                }
                m.remove("examples");
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut schema);
    schema
}

/// The rules document in force (the `[alerts]` section as JSON) and the rules it makes.
/// A rule in force with where it comes from.
fn rule_in_force() -> Value {
    object(
        &["origin", "replaces_default", "rule"],
        json!({
            "origin": {"type": "string", "enum": ["file", "api", "default"], "description": "Where the rule comes from: the config file's [alerts], the admin API, or the shipped air-quality defaults"},
            "replaces_default": flag("It has the id of a shipped default, which it replaces"),
            "rule": as_written(stream::alert::schema::rule_schema(false)),
        }),
    )
}

pub fn rules_answer() -> Value {
    example(
        json!({"type": "object", "additionalProperties": false, "required": ["rules"], "properties": {
            "rules": as_written(stream::alert::schema::rules_document_schema()),
            "effective_rules": count("Rules in force: the document's enabled rules plus the shipped air-quality rules it keeps"),
            "rules_in_force": list(rule_in_force(), "Every rule in force, in document order then the shipped defaults, with its origin"),
            "replaced_by_file": list(json!({"type": "object", "description": "An admin API version an edit of the config file replaced: `id`, `api` (what the API had), `file` (what the file defines now), `at`"}), "The API's versions the config file's edits replaced, newest last"),
        }}),
        json!({"rules": {"air_quality_defaults": true, "max_shelve": "8h", "operator_positions": 1,
                "storm": {"raises_per_minute": 10, "group_over_devices": 3, "group_window": "1m"},
                "rules": [{"id": "congestion", "severity": "critical", "scope": "all", "enabled": true, "los": {"at_or_worse": "E", "for": "5m"}}]},
            "effective_rules": 5,
            "rules_in_force": [{"origin": "file", "replaces_default": false, "rule": {"id": "congestion", "severity": "critical", "scope": "all", "enabled": true, "los": {"at_or_worse": "E", "for": "5m"}}}],
            "replaced_by_file": []}),
    )
}

pub fn rule_answer() -> Value {
    example(
        object(
            &["rule", "origin", "replaces_default"],
            json!({
                "rule": as_written(stream::alert::schema::rule_schema(false)),
                "origin": {"type": "string", "enum": ["file", "api", "default"], "description": "Where the rule comes from"},
                "replaces_default": flag("It has the id of a shipped default, which it replaces"),
            }),
        ),
        json!({"rule": {"id": "congestion", "severity": "critical", "scope": "all", "enabled": true, "los": {"at_or_worse": "E", "for": "5m"}}, "origin": "file", "replaces_default": false}),
    )
}

pub fn dead_letter_page() -> Value {
    let ex = dead_letter()["examples"][0].clone();
    page("dead_letters", "DeadLetter", ex, "next_cursor", string_cursor("the last entry's id"))
}

pub fn dead_letter_reasons() -> Value {
    example(
        object(
            &["reasons"],
            json!({"reasons": list(record_in(&["reason", "count"], json!({
            "reason": text("The reason"), "count": count("Dead letters with it")})), "Most frequent first")}),
        ),
        json!({"reasons": [{"reason": "out_of_range", "count": 12}, {"reason": "bad_json", "count": 1}]}),
    )
}

pub fn command_one() -> Value {
    example(reference("Command"), command_example())
}

pub fn command_list() -> Value {
    example(
        object(&["commands"], json!({"commands": list(reference("Command"), "Newest first")})),
        json!({"commands": [command_example()]}),
    )
}

pub fn webhook_one() -> Value {
    example(reference("Webhook"), webhook_example())
}

pub fn webhook_list() -> Value {
    example(
        object(
            &["webhooks"],
            json!({"webhooks": list(reference("Webhook"), "Every subscription")}),
        ),
        json!({"webhooks": [webhook_example()]}),
    )
}

pub fn delivery_list() -> Value {
    let ex = delivery()["examples"][0].clone();
    example(
        object(
            &["deliveries"],
            json!({"deliveries": list(reference("Delivery"), "Newest event first")}),
        ),
        json!({"deliveries": [ex]}),
    )
}

pub fn redelivered() -> Value {
    example(
        object(&["redelivered"], json!({"redelivered": count("Deliveries made due again")})),
        json!({"redelivered": 2}),
    )
}

pub fn token_list() -> Value {
    let ex = token()["examples"][0].clone();
    example(
        object(
            &["tokens"],
            json!({"tokens": list(reference("Token"), "Every token, revoked ones included")}),
        ),
        json!({"tokens": [ex]}),
    )
}

pub fn token_one() -> Value {
    let ex = token()["examples"][0].clone();
    wrap("token", "Token", "The revoked token", json!({"token": ex}), json!({}))
}

/// A new token: shown once.
pub fn token_created() -> Value {
    example(
        record_in(
            &["id", "name", "role", "created_at", "token"],
            json!({
                "id": whole("Token id"),
                "name": text("Its name"),
                "role": enumeration(&["admin", "operator", "planner", "device"]),
                "created_at": ms("When it was created"),
                "token": text("The bearer token; shown once, only its digest is kept"),
            }),
        ),
        json!({"id": 5, "name": "wall-3", "role": "operator", "created_at": T0,
            "token": "sccr_3f5c0e9a7d1b4c2e8f6a0b9c7d5e3f1a2b4c6d8e0f1a3b5c7d9e1f3a5b7c9d1e"}),
    )
}

pub fn audit_page() -> Value {
    let ex = audit_entry()["examples"][0].clone();
    page("entries", "AuditEntry", ex, "next_cursor", string_cursor("the last entry's id"))
}

pub fn me() -> Value {
    example(
        record_in(
            &["name", "role", "token_id"],
            json!({
                "name": text("The token's name"),
                "role": enumeration(&["admin", "operator", "planner", "device"]),
                "token_id": whole("The token's id"),
            }),
        ),
        json!({"name": "wall-3", "role": "operator", "token_id": 5}),
    )
}

pub fn healthz() -> Value {
    example(object(&["status"], json!({"status": {"const": "ok"}})), json!({"status": "ok"}))
}

pub fn readyz() -> Value {
    example(
        json!({"type": "object", "required": ["status", "store"],
            "properties": {"status": {"const": "ready"}, "store": text("The store's backend (postgres, timescaledb, sqlite)")},
            "additionalProperties": {"type": "boolean", "description": "Each further dependency checked (broker, writer, …): true"}}),
        json!({"status": "ready", "store": "postgres", "broker": true, "writer": true}),
    )
}

pub fn catalogue_answer() -> Value {
    example(reference("Catalogue"), catalogue()["examples"][0].clone())
}

pub fn segment_answer() -> Value {
    example(reference("SegmentCollection"), segments()["examples"][0].clone())
}

pub fn history_answer() -> Value {
    example(reference("History"), history()["examples"][0].clone())
}

pub fn map_devices() -> Value {
    // Positional types (prefixItems) would say more, but OpenAPI tools read them poorly.
    let row = json!({"type": "array", "minItems": 7, "maxItems": 7,
        "items": {"type": ["string", "number", "boolean", "null"]}});
    example(
        object(
            &["columns", "rows", "next_cursor"],
            json!({
                "columns": {"const": crate::map::MAP_COLUMNS, "description": "The meaning of each row's entries"},
                "rows": list(row, "One per in-service device, in id order, its entries as columns says: id (string), kind (string or null), segment (string or null), lon and lat (WGS84, null without a segment), online (boolean; null when not heard from since the server started), last_seen (Unix milliseconds, or null)"),
                "next_cursor": string_cursor("the last device's id"),
            }),
        ),
        json!({"columns": crate::map::MAP_COLUMNS,
            "rows": [[DEVICE, "traffic_loop", SEGMENT, 11.244533, 43.780248, true, T0 + 55_000]],
            "next_cursor": null}),
    )
}

pub fn wall() -> Value {
    let attribution = || text("Attribution to show on the map");
    let max_zoom = || count("Deepest zoom level");
    example(
        object(
            &["basemap"],
            json!({"basemap": {"oneOf": [
                object(&["kind"], json!({"kind": {"const": "context"}})),
                object(&["kind", "url", "attribution", "max_zoom"], json!({"kind": {"const": "xyz"}, "url": text("A {z}/{x}/{y} tile URL template"), "attribution": attribution(), "max_zoom": max_zoom()})),
                object(&["kind", "url", "attribution", "max_zoom"], json!({"kind": {"const": "pmtiles"}, "url": text("The archive, served by this server"), "attribution": attribution(), "max_zoom": max_zoom()})),
            ]}}),
        ),
        json!({"basemap": {"kind": "context"}}),
    )
}

/// The common error body (`error::ApiError`).
pub fn error() -> Value {
    example(
        object(
            &["error"],
            json!({"error": object(&["code", "message", "param"], json!({
                "code": text("Stable machine-readable code (table on the docs page)"),
                "message": text("What is wrong and how to fix it, for people"),
                "param": text_or_null("The query parameter or body field at fault, or null"),
                "errors": list(object(&["path", "message"], json!({"path": text("Key path in the document"), "message": text("What is wrong there")})),
                    "Every problem found, for documents validated as a whole (alert rules)"),
            }))}),
        ),
        json!({"error": {"code": "bad_parameter", "message": "metric: unknown metric \"speed\"", "param": "metric"}}),
    )
}
