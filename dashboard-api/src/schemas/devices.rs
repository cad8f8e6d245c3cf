//! The objects of devices and what they measure: a device (and with its latest values),
//! its MQTT credentials, a latest value, a history, the road segments with their live
//! state, and the catalogue the wall renders from.

use serde_json::{json, Map, Value};
use telemetry::MetricId;

use super::*;
use crate::openapi::{device_id, segment_id};

pub(super) fn device_fields() -> Map<String, Value> {
    let props = json!({
        "id": described(device_id(), "Device id, also its MQTT user name"),
        "kind": text_or_null("What it is (traffic_loop, traffic_light, parking, air_quality, …)"),
        "segment": json!({"type": ["string", "null"], "description": "The road segment it measures, or null"}),
        "registered_at": ms("When it was registered"),
        "decommissioned_at": ms_or_null("When it was decommissioned"),
        "has_credentials": flag("Whether it has an MQTT password"),
        "gateway": text_or_null("The device it is reached through, or null"),
        "position": json!({"type": ["object", "null"], "additionalProperties": false, "required": ["lon", "lat", "bearing_deg"],
            "description": "Where it stands (WGS84) and the direction it faces (degrees clockwise from north, or null); null without a position. The Road Cadastre import links it to the nearest segment by these",
            "properties": {"lon": {"type": "number"}, "lat": {"type": "number"}, "bearing_deg": {"type": ["number", "null"]}}}),
        "online": json!({"type": ["boolean", "null"], "description": "Whether it is online now; null when not heard from since the server started"}),
    });
    props.as_object().cloned().unwrap_or_default()
}

const DEVICE_ORDER: [&str; 9] = [
    "id",
    "kind",
    "segment",
    "registered_at",
    "decommissioned_at",
    "has_credentials",
    "gateway",
    "position",
    "online",
];

pub(super) fn device() -> Value {
    example(record_in(&DEVICE_ORDER, Value::Object(device_fields())), device_example())
}

pub(super) fn device_detail() -> Value {
    let mut props = device_fields();
    props
        .insert("latest".into(), list(reference("LatestValue"), "Its latest value of each metric"));
    let mut order = DEVICE_ORDER.to_vec();
    order.push("latest");
    let mut ex = device_example();
    ex["latest"] = json!([latest_example()]);
    example(record_in(&order, Value::Object(props)), ex)
}

pub(super) fn mqtt_credentials() -> Value {
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

pub(super) fn latest_value() -> Value {
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

pub(super) fn history() -> Value {
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
                "excluded": object(&["flags", "readings"], json!({
                    "flags": count("Flag intervals of the device overlapping the range"),
                    "readings": count("Readings left out because a flag covered them"),
                })),
            }),
        ),
        json!({"device": DEVICE, "segment": null, "segments": null, "metric": "speed_kmh", "unit": "km/h",
            "resolution": "1m", "step_ms": 900_000, "from": T0, "to": T0 + 1_800_000,
            "covered_from": T0, "covered_to": T0 + 1_800_000, "points": [
                {"t": T0, "v": 38.2, "count": 450, "sum": 17190.0, "min": 12.5, "max": 52.0, "last": 40.0, "avg": 38.2},
                {"t": T0 + 900_000, "v": 41.0, "count": 450, "sum": 18450.0, "min": 20.0, "max": 55.5, "last": 41.5, "avg": 41.0}]}),
    )
}

pub(super) fn segments() -> Value {
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
            "forecast",
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
            "forecast": described(or_null(reference("SegmentForecast")), "The forecast made from that window, or null (no learned baseline yet, or forecasts off)"),
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
                "window": {"start": T0, "end": T0 + 60_000, "revision": 0}, "forecast": null}}]}),
    )
}

/// A segment's short-term forecast (`stream::forecast`, docs/forecasts.md).
pub(super) fn forecast() -> Value {
    let horizon = record_in(
        &["minutes", "at", "speed_kmh", "usual_kmh", "los", "kept", "learned"],
        json!({
            "minutes": count("Minutes after the window's end"),
            "at": ms("The instant forecast"),
            "speed_kmh": number("Forecast mean speed, km/h"),
            "usual_kmh": number("The learned usual speed then (the historical average), km/h"),
            "los": los_grade(),
            "kept": number("The share of today's difference from usual expected to remain then (0 to 1)"),
            "learned": flag("Whether that share was learned from this segment's own windows (else the configured prior)"),
        }),
    );
    example(
        record_in(
            &["ratio", "horizons", "degrading"],
            json!({
                "ratio": number("The smoothed ratio of the observed speed to the usual one now"),
                "horizons": list(horizon, "One per configured horizon ([forecasts] horizons_minutes; 15 and 30 by default)"),
                "degrading": flag("Some horizon's LOS is worse than the window's and D or worse"),
            }),
        ),
        json!({"ratio": 0.72, "horizons": [
            {"minutes": 15, "at": T0 + 960_000, "speed_kmh": 31.3, "usual_kmh": 39.0, "los": "C", "kept": 0.71, "learned": true},
            {"minutes": 30, "at": T0 + 1_860_000, "speed_kmh": 28.1, "usual_kmh": 33.1, "los": "D", "kept": 0.54, "learned": true}],
            "degrading": true}),
    )
}

pub(super) fn catalogue() -> Value {
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
            &[
                "metrics",
                "alert_codes",
                "los",
                "live",
                "device_kinds",
                "registered_device_kinds",
                "languages",
            ],
            json!({
                "metrics": list(metric_entry, "Every metric SCCR accepts"),
                "alert_codes": list(code_entry, "Alert message codes"),
                "los": record_in(&["basis", "levels"], json!({"basis": text("What the grades measure"), "levels": list(level, "A to F")})),
                "live": record_in(&["speed_fresh_s", "device_online_s"], json!({
                    "speed_fresh_s": count("A segment speed older than this many seconds is stale"),
                    "device_online_s": count("A device heard from within this many seconds is online")})),
                "device_kinds": list(json!({"type": "string"}), "Every kind a device may be registered with and a rule scoped to"),
                "registered_device_kinds": list(json!({"type": "string"}), "Kinds of the registered devices (a kind outside device_kinds matches no kind-scoped rule)"),
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
            "device_kinds": telemetry::DeviceKind::ALL.map(telemetry::DeviceKind::as_str),
            "registered_device_kinds": ["air_quality", "traffic_loop"], "languages": ["it", "en"]}),
    )
}
