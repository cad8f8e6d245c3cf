//! The live websocket's messages, each with its JSON Schema and an example, defined once
//! beside the session that reads and writes them ([`super`]). The OpenAPI document carries
//! them as components (`LiveClientMessage`, `LiveServerMessage` and one per message) and
//! the docs page renders them; the OpenAPI test checks real frames of a live session and
//! every example against them (tests/tests/openapi.rs).

use serde_json::{json, Value};
use stream::LevelOfService;
use telemetry::MetricId;

use super::{MAX_CLIENT_MESSAGE, MAX_SUBSCRIPTION_KEYS, WORST_SEGMENTS};
use crate::openapi::{device_id, segment_id};
use crate::schemas::reference;

/// The subprotocol a client offers and the server answers.
pub const PROTOCOL: &str = "sccr.live";

/// Not JSON, not a known message, or a binary frame.
pub const BAD_MESSAGE: &str = "bad_message";
/// A subscribe that names a bad key or a bad box.
pub const BAD_SUBSCRIPTION: &str = "bad_subscription";
/// An unsubscribe that names a bad key.
pub const BAD_UNSUBSCRIBE: &str = "bad_unsubscribe";
/// No message for the idle timeout: the connection is closed after it.
pub const IDLE_TIMEOUT: &str = "idle_timeout";
/// A message over the size limit: the connection is closed with 1009 after it.
pub const MESSAGE_TOO_BIG: &str = "message_too_big";

/// Every `error` frame's code, with what it means.
pub const ERROR_CODES: [(&str, &str); 5] = [
    (BAD_MESSAGE, "not JSON, not a known message, or a binary frame; the connection stays open"),
    (BAD_SUBSCRIPTION, "a subscribe naming a bad device, metric or segment, too many keys, or a bad bbox; the previous subscription stays"),
    (BAD_UNSUBSCRIBE, "an unsubscribe naming a bad key"),
    (IDLE_TIMEOUT, "no client message, websocket ping or pong for 60 s; the connection is closed"),
    (MESSAGE_TOO_BIG, "a client message over 2 MiB; the connection is closed with code 1009"),
];

/// Who sends a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

/// One message of the protocol.
#[derive(Debug, Clone)]
pub struct MessageDoc {
    /// Its `type`.
    pub name: &'static str,
    pub direction: Direction,
    /// When it is sent and what it does.
    pub description: &'static str,
    /// Its schema, with its examples.
    pub schema: Value,
}

impl MessageDoc {
    /// The component name of its schema.
    pub fn component(&self) -> String {
        let mut name = String::from("Live");
        for part in self.name.split('_') {
            let mut chars = part.chars();
            if let Some(first) = chars.next() {
                name.extend(first.to_uppercase());
                name.push_str(chars.as_str());
            }
        }
        name.push_str("Message");
        name
    }
}

fn message(
    name: &'static str,
    direction: Direction,
    description: &'static str,
    required: &[&str],
    properties: Value,
    examples: Vec<Value>,
) -> MessageDoc {
    let mut props = json!({"type": {"const": name}});
    for (k, v) in properties.as_object().cloned().unwrap_or_default() {
        props[k] = v;
    }
    let mut req = vec!["type"];
    req.extend_from_slice(required);
    let schema = json!({"type": "object", "additionalProperties": false, "required": req,
        "properties": props, "description": description, "examples": examples});
    MessageDoc { name, direction, description, schema }
}

fn keys(item: Value, description: &str) -> Value {
    json!({"type": "array", "items": item, "maxItems": MAX_SUBSCRIPTION_KEYS, "description": description})
}

fn keys_or_null(item: Value, description: &str) -> Value {
    json!({"type": ["array", "null"], "items": item, "maxItems": MAX_SUBSCRIPTION_KEYS, "description": description})
}

fn metric() -> Value {
    let names: Vec<&str> = MetricId::ALL.iter().map(|m| m.as_str()).collect();
    json!({"type": "string", "enum": names})
}

const DEVICE: &str = "loop-viale-strozzi-0";
const SEGMENT: &str = "viale-strozzi";
const T0: i64 = 1_763_892_000_000;

fn value_example() -> Value {
    json!({"device": DEVICE, "metric": "speed_kmh", "time": T0 + 55_000, "value": 41.5})
}

fn segment_example(los: &str, speed: f64) -> Value {
    json!({"segment": SEGMENT, "start": T0, "end": T0 + 60_000, "flow_vph": 1260.0,
        "speed_kmh": speed, "occupancy_pct": 41.0, "los": los, "detectors": 2, "revision": 0})
}

/// The objects the messages carry, by component name.
pub fn components() -> Vec<(&'static str, Value)> {
    let ms =
        |d: &str| json!({"type": "integer", "description": format!("{d} (Unix milliseconds)")});
    let count = |d: &str| json!({"type": "integer", "minimum": 0, "description": d});
    let num = |d: &str| json!({"type": "number", "description": d});
    let num_or_null = |d: &str| json!({"type": ["number", "null"], "description": d});
    let grades: Vec<Value> =
        LevelOfService::ALL.iter().map(|l| json!(l.as_str())).chain([Value::Null]).collect();
    let closed = |required: &[&str], properties: Value| json!({"type": "object", "additionalProperties": false, "required": required, "properties": properties});
    let value = closed(
        &["device", "metric", "time", "value"],
        json!({"device": device_id(), "metric": metric(), "time": ms("The reading's time"), "value": num("The value, in the metric's unit")}),
    );
    let window = closed(
        &["device", "metric", "start", "end", "aggregate", "revision"],
        json!({
            "device": device_id(), "metric": metric(),
            "start": ms("Window start, inclusive"), "end": ms("Window end, exclusive"),
            "aggregate": closed(&["count", "sum", "min", "max", "last_value", "last_time"], json!({
                "count": count("Readings"), "sum": num("Their sum"), "min": num("Their minimum"),
                "max": num("Their maximum"), "last_value": num("The last value by time"),
                "last_time": ms("Its time")})),
            "revision": count("0 on the first emission, one more per late correction"),
        }),
    );
    let segment = closed(
        &[
            "segment",
            "start",
            "end",
            "flow_vph",
            "speed_kmh",
            "occupancy_pct",
            "los",
            "detectors",
            "revision",
        ],
        json!({
            "segment": segment_id(), "start": ms("Window start"), "end": ms("Window end"),
            "flow_vph": num_or_null("Flow, vehicles per hour, or null"),
            "speed_kmh": num_or_null("Mean speed, km/h, or null"),
            "occupancy_pct": num_or_null("Occupancy, %, or null"),
            "los": {"type": ["string", "null"], "enum": grades, "description": "Level of Service A to F; null without speeds"},
            "detectors": count("Linked detectors that reported in the window"),
            "revision": count("0 on the first emission, one more per correction"),
            "forecast": {"description": "The forecast made from this window (absent without one: no learned baseline yet, or forecasts off)", "allOf": [reference("SegmentForecast")]},
        }),
    );
    let worst = closed(
        &["segment", "name", "los", "speed_kmh", "free_flow_kmh", "ratio"],
        json!({
            "segment": segment_id(),
            "name": {"type": ["string", "null"], "description": "Street name"},
            "los": {"type": "string", "enum": LevelOfService::ALL.iter().map(|l| l.as_str()).collect::<Vec<_>>()},
            "speed_kmh": num("Mean speed, km/h"),
            "free_flow_kmh": num("Free-flow speed, km/h"),
            "ratio": num("speed / free-flow speed, rounded to 3 decimals"),
        }),
    );
    let kpi = closed(
        &[
            "devices_online",
            "devices_offline",
            "readings_per_s",
            "alerts_open",
            "city_speed_kmh",
            "worst_segments",
        ],
        json!({
            "devices_online": count("Devices heard from recently"),
            "devices_offline": count("Devices known but not heard from recently, or that said offline"),
            "readings_per_s": {"type": ["number", "null"], "minimum": 0, "description": "Readings per second since the previous frame; null in a session's first frame"},
            "alerts_open": closed(&["critical", "warning", "info"], json!({
                "critical": count("Open critical alerts"), "warning": count("Open warnings"), "info": count("Open info alerts")})),
            "city_speed_kmh": num_or_null("The segments' mean speeds weighted by length, or null without speeds"),
            "worst_segments": {"type": "array", "items": worst, "maxItems": WORST_SEGMENTS,
                "description": "Lowest speed / free-flow ratio first, ties by the worse LOS, then by id (stream::los::worst_first)"},
        }),
    );
    let with_example = |mut schema: Value, example: Value| {
        schema["examples"] = json!([example]);
        schema
    };
    vec![
        ("LiveValue", with_example(value, value_example())),
        (
            "LiveWindow",
            with_example(
                window,
                json!({"device": DEVICE, "metric": "speed_kmh", "start": T0, "end": T0 + 60_000,
                    "aggregate": {"count": 6, "sum": 243.0, "min": 38.5, "max": 42.0, "last_value": 41.5, "last_time": T0 + 55_000},
                    "revision": 0}),
            ),
        ),
        ("LiveSegmentState", with_example(segment, segment_example("B", 38.4))),
        ("LiveKpi", with_example(kpi, kpi_example())),
    ]
}

fn kpi_example() -> Value {
    json!({"devices_online": 58, "devices_offline": 2, "readings_per_s": 12.4,
        "alerts_open": {"critical": 1, "warning": 3, "info": 0}, "city_speed_kmh": 34.7,
        "worst_segments": [{"segment": SEGMENT, "name": "Viale Filippo Strozzi", "los": "F",
            "speed_kmh": 12.1, "free_flow_kmh": 50.0, "ratio": 0.242}]})
}

/// Every message, client's first.
pub fn messages() -> Vec<MessageDoc> {
    use Direction::{ClientToServer as Up, ServerToClient as Down};
    let alert = crate::schemas::alert_one()["examples"][0]["alert"].clone();
    let bbox = json!({"type": ["array", "null"], "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
        "description": "[min_lon, min_lat, max_lon, max_lat] in WGS84: adds the segments with a point inside and their linked devices"});
    let list = |item: Value, d: &str| json!({"type": "array", "items": item, "description": d});
    let error_codes: Vec<&str> = ERROR_CODES.iter().map(|(c, _)| *c).collect();
    vec![
        message("subscribe", Up, "Selects what the client receives; a new one replaces the previous one. Answered by a snapshot (or an error).",
            &[], json!({
                "devices": keys(device_id(), "The devices whose values and windows are wanted; empty or absent: all"),
                "metrics": keys(metric(), "The metrics wanted; empty or absent: all"),
                "segments": keys_or_null(segment_id(), "The segments whose traffic state is wanted; [] all, absent or null none"),
                "bbox": bbox,
                "alerts": {"type": "boolean", "description": "Alert changes and open alerts (default false)"},
                "values": {"type": "boolean", "description": "false turns values and windows off (default true)"},
                "kpi": {"type": "boolean", "description": "A kpi frame every second (default false)"},
            }),
            vec![json!({"type": "subscribe", "devices": [DEVICE], "metrics": ["speed_kmh"], "segments": [SEGMENT], "bbox": [11.24, 43.76, 11.27, 43.78], "alerts": true, "values": true, "kpi": true}),
                json!({"type": "subscribe", "values": false, "segments": [], "alerts": true, "kpi": true})]),
        message("unsubscribe", Up, "Alone, stops every frame but pong, heartbeat and error; with lists, takes only those keys out. Answered by unsubscribed.",
            &[], json!({
                "devices": keys_or_null(device_id(), "Devices to take out"),
                "segments": keys_or_null(segment_id(), "Segments to take out"),
            }),
            vec![json!({"type": "unsubscribe"}), json!({"type": "unsubscribe", "devices": [DEVICE], "segments": [SEGMENT]})]),
        message("ping", Up, "Asks for a pong. Any client message, websocket ping or pong is activity; 60 s without any closes the session (idle_timeout).",
            &[], json!({}), vec![json!({"type": "ping"})]),
        message("snapshot", Down, "Answers each subscribe: the selected values, plus the current state of each selected segment when segments were asked for and every open alert when alerts were. With reason resync it replaces what a client that fell behind missed (a slow client is never disconnected).",
            &["values"], json!({
                "reason": {"const": "resync", "description": "Present when the client fell behind and missed changes"},
                "values": list(reference("LiveValue"), "The current value of each selected (device, metric)"),
                "segments": list(reference("LiveSegmentState"), "The current state of each selected segment"),
                "alerts": list(reference("Alert"), "Every open alert (raised, acknowledged, returned; shelved and suppressed ones included)"),
            }),
            vec![json!({"type": "snapshot", "values": [value_example()], "segments": [segment_example("B", 38.4)], "alerts": [alert]})]),
        message("delta", Down, "New values, conflated: one entry per (device, metric), the latest; at most 1,000 per frame.",
            &["values"], json!({"values": {"type": "array", "items": reference("LiveValue"), "minItems": 1, "maxItems": 1_000}}),
            vec![json!({"type": "delta", "values": [value_example()]})]),
        message("window", Down, "A device window closed or was corrected (revision counts corrections).",
            &["window"], json!({"window": reference("LiveWindow")}),
            vec![json!({"type": "window", "window": components()[1].1["examples"][0]})]),
        message("segment", Down, "A segment window was emitted or corrected.",
            &["segment"], json!({"segment": reference("LiveSegmentState")}),
            vec![json!({"type": "segment", "segment": segment_example("F", 12.1)})]),
        message("alert", Down, "An alert was raised, acknowledged, returned to normal, raised again, cleared, shelved or unshelved, suppressed or no longer, or its members changed, once the store has it; the object GET /api/v1/alerts/{id} shows.",
            &["alert"], json!({"alert": reference("Alert")}),
            vec![json!({"type": "alert", "alert": alert})]),
        message("operations", Down, "Follows each snapshot (subscribe and resync): the road operations in force, active ones and planned ones starting within 24 h (left out while there are none and the client was never shown any).",
            &["operations"], json!({"operations": list(reference("Operation"), "The operations in force")}),
            vec![json!({"type": "operations", "operations": [crate::operations::operation_schema()["examples"][0]]})]),
        message("operation", Down, "A road operation was created, changed, moved or annotated, once the store has it; the object GET /api/v1/operations/{id} shows. Sent to every subscribed client.",
            &["operation"], json!({"operation": reference("Operation")}),
            vec![json!({"type": "operation", "operation": crate::operations::operation_schema()["examples"][0]})]),
        message("kpi", Down, "Every second when asked for: the wall's key figures.",
            &["kpi"], json!({"kpi": reference("LiveKpi")}),
            vec![json!({"type": "kpi", "kpi": kpi_example()})]),
        message("heartbeat", Down, "Every 15 s, with a websocket ping (which client libraries answer by themselves).",
            &["time"], json!({"time": {"type": "integer", "description": "The server's time (Unix milliseconds)"}}),
            vec![json!({"type": "heartbeat", "time": T0 + 75_000})]),
        message("unsubscribed", Down, "Answers unsubscribe, naming the keys taken out when there were lists.",
            &[], json!({"devices": list(device_id(), "Devices taken out"), "segments": list(segment_id(), "Segments taken out")}),
            vec![json!({"type": "unsubscribed"}), json!({"type": "unsubscribed", "devices": [DEVICE], "segments": [SEGMENT]})]),
        message("pong", Down, "Answers ping.", &[], json!({}), vec![json!({"type": "pong"})]),
        message("error", Down, "A message that could not be used; the connection stays open except after idle_timeout and message_too_big. Each is counted in sccr_ws_errors_total.",
            &["code", "message"], json!({
                "code": {"type": "string", "enum": error_codes, "description": "What went wrong"},
                "message": {"type": "string", "description": "Details, naming the field"},
            }),
            vec![json!({"type": "error", "code": BAD_SUBSCRIPTION, "message": "metrics: unknown metric \"speed\""})]),
    ]
}

/// The schemas of the whole protocol, by component name: the carried objects, each
/// message, and `LiveClientMessage` / `LiveServerMessage` (one of the messages).
pub fn all_components() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> =
        components().into_iter().map(|(name, schema)| (name.to_owned(), schema)).collect();
    let all = messages();
    for (union, direction, description) in [
        (
            "LiveClientMessage",
            Direction::ClientToServer,
            "A message a client sends on /api/v1/live",
        ),
        (
            "LiveServerMessage",
            Direction::ServerToClient,
            "A message the server sends on /api/v1/live",
        ),
    ] {
        let refs: Vec<Value> = all
            .iter()
            .filter(|m| m.direction == direction)
            .map(|m| reference(&m.component()))
            .collect();
        out.push((union.to_owned(), json!({"oneOf": refs, "description": description})));
    }
    out.extend(all.into_iter().map(|m| (m.component(), m.schema)));
    out
}

/// Largest client message, for the docs.
pub const MAX_MESSAGE_MIB: usize = MAX_CLIENT_MESSAGE / (1024 * 1024);
