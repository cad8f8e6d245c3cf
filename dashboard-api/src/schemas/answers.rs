//! The answers of the operations: the objects wrapped (`{"device": …}`), paged
//! (`{"devices": […], "next_cursor": …}`) or composed, each with its example.

use serde_json::{json, Map, Value};

use super::admin::dead_letter;
use super::devices::{forecast, mqtt_credentials};
use super::*;
use crate::openapi::segment_id;

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
            "properties": {"status": {"const": "ready"}, "store": text("The store's backend (postgres, timescaledb, sqlite)"),
                "partitions": {"type": "array", "items": {"type": "integer", "minimum": 0},
                    "description": "The device partitions this ingest replica owns (with ingest.partitions > 1; docs/scale-out.md)"}},
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

pub fn forecasts_answer() -> Value {
    let item = record_in(
        &["segment", "window", "speed_kmh", "los", "forecast"],
        json!({
            "segment": segment_id(),
            "window": record_in(&["start", "end", "revision"], json!({
                "start": ms("Start of the window the forecast was made from"), "end": ms("Its end"), "revision": count("0, one more per correction")})),
            "speed_kmh": number_or_null("The window's mean speed, km/h"),
            "los": los_grade(),
            "forecast": reference("SegmentForecast"),
        }),
    );
    let forecast = forecast()["examples"][0].clone();
    example(
        record_in(&["forecasts"], json!({"forecasts": list(item, "Segments in id order")})),
        json!({"forecasts": [{"segment": SEGMENT, "window": {"start": T0, "end": T0 + 60_000, "revision": 0},
            "speed_kmh": 28.1, "los": "C", "forecast": forecast}]}),
    )
}

pub fn history_answer() -> Value {
    example(reference("History"), history()["examples"][0].clone())
}

pub fn baselines_answer() -> Value {
    let point = object(
        &["t", "centre", "spread", "samples"],
        json!({
            "t": ms("Start of the 15-minute bucket (Unix milliseconds)"),
            "centre": number_or_null("The slot's median of its weekly means, in the metric's unit; null when the slot is not learned"),
            "spread": number_or_null("The slot's robust spread (1.4826 × median absolute deviation, floored), same unit; null when not learned"),
            "samples": count("Weeks the slot was learned from"),
        }),
    );
    example(
        object(
            &[
                "device",
                "segment",
                "metric",
                "from",
                "to",
                "step_ms",
                "utc_offset_minutes",
                "timezone",
                "learned_slots",
                "points",
            ],
            json!({
                "device": text_or_null("The device, or null for a segment"),
                "segment": text_or_null("The road segment, or null for a device"),
                "metric": text("The metric or segment figure"),
                "from": ms("Start asked (Unix milliseconds)"),
                "to": ms("End asked, exclusive (Unix milliseconds)"),
                "step_ms": count("Bucket width: 900000 (15 minutes)"),
                "utc_offset_minutes": whole("The local time the week's slots follow at `from` (minutes east of UTC)"),
                "timezone": text_or_null("The time zone the slots follow (IANA name), or null for a fixed offset"),
                "learned_slots": count("Slots of the week learned for this subject and metric (0 to 672)"),
                "points": list(point, "One per 15-minute bucket overlapping [from, to)"),
            }),
        ),
        json!({"device": null, "segment": SEGMENT, "metric": "speed_kmh", "from": T0, "to": T0 + 1_800_000,
            "step_ms": 900_000, "utc_offset_minutes": 60, "timezone": "Europe/Rome", "learned_slots": 672,
            "points": [{"t": T0, "centre": 41.5, "spread": 4.2, "samples": 4},
                       {"t": T0 + 900_000, "centre": 38.0, "spread": 3.8, "samples": 4}]}),
    )
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
