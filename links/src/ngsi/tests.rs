//! The entities are checked against the structure of the Smart Data Models' documented
//! NGSI-LD examples (normalized form), copied below from the models' repositories:
//! every attribute we emit must exist in the example with the same NGSI-LD kind
//! (Property, GeoProperty, Relationship) and the same JSON shape of value, and enumerated
//! values must be among those the models' schemas list.

use serde_json::{json, Value};
use store::{AlertKind, AlertRecord, AlertState, AlertSubject, Clearance, Severity};
use telemetry::{DeviceId, EventTime, MetricId, SegmentId};

use super::*;

/// https://github.com/smart-data-models/dataModel.Transportation/blob/master/TrafficFlowObserved/examples/example-normalized.jsonld
fn traffic_flow_example() -> Value {
    json!({
        "id": "urn:ngsi-ld:TrafficFlowObserved:TrafficFlowObserved-Valladolid-osm-60821110",
        "type": "TrafficFlowObserved",
        "averageVehicleSpeed": {"type": "Property", "value": 52.6},
        "congested": {"type": "Property", "value": false},
        "dateObserved": {"type": "Property", "value": "2016-12-07T11:10:00/2016-12-07T11:15:00"},
        "dateObservedFrom": {"type": "Property", "value": {"@type": "DateTime", "@value": "2016-12-07T11:10:00Z"}},
        "dateObservedTo": {"type": "Property", "value": {"@type": "DateTime", "@value": "2016-12-07T11:15:00Z"}},
        "intensity": {"type": "Property", "value": 197},
        "laneDirection": {"type": "Property", "value": "forward"},
        "laneId": {"type": "Property", "value": 1},
        "location": {"type": "GeoProperty", "value": {"type": "LineString", "coordinates": [[-4.73735395519672, 41.6538181849672], [-4.73414858659993, 41.6600594193478]]}},
        "occupancy": {"type": "Property", "value": 0.76},
        "refRoadSegment": {"type": "Relationship", "object": "urn:ngsi-ld:RoadSegment:Valladolid-osm-60821110"},
        "@context": ["https://smartdatamodels.org/context.jsonld"]
    })
}

/// https://github.com/smart-data-models/dataModel.Environment/blob/master/AirQualityObserved/examples/example-normalized.jsonld
fn air_quality_example() -> Value {
    json!({
        "id": "urn:ngsi-ld:AirQualityObserved:Madrid-AmbientObserved-28079004-2016-03-15T11:00:00",
        "type": "AirQualityObserved",
        "dateObserved": {"type": "Property", "value": {"@type": "DateTime", "@value": "2016-03-15T11:00:00Z"}},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-3.712247222222222, 40.423852777777775]}},
        "no2": {"type": "Property", "value": 22, "unitCode": "GQ"},
        "o3": {"type": "Property", "value": 45, "unitCode": "GQ"},
        "pm10": {"type": "Property", "value": 18, "unitCode": "GQ"},
        "pm25": {"type": "Property", "value": 12, "unitCode": "GQ"},
        "relativeHumidity": {"type": "Property", "value": 0.54},
        "temperature": {"type": "Property", "value": 12.2, "unitCode": "CEL"},
        "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:device-9845A"},
        "@context": ["https://smartdatamodels.org/context.jsonld"]
    })
}

/// https://github.com/smart-data-models/dataModel.Alert/blob/master/Alert/examples/example-normalized.jsonld
fn alert_example() -> Value {
    json!({
        "id": "urn:ngsi-ld:Alert:Alert:1",
        "type": "Alert",
        "alertSource": {"type": "Relationship", "object": "urn:ngsi-ld:Device:sccr:example"},
        "category": {"type": "Property", "value": "traffic"},
        "dateIssued": {"type": "Property", "value": {"@type": "DateTime", "@value": "2017-01-02T09:25:55.00Z"}},
        "description": {"type": "Property", "value": "The road is completely blocked for 3kms"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-3.712247222222222, 40.423852777777775]}},
        "name": {"type": "Property", "value": "Traffic jam"},
        "severity": {"type": "Property", "value": "medium"},
        "subCategory": {"type": "Property", "value": "carAccident"},
        "validFrom": {"type": "Property", "value": {"@type": "DateTime", "@value": "2017-01-02T09:25:55.00Z"}},
        "validTo": {"type": "Property", "value": {"@type": "DateTime", "@value": "2017-01-02T10:25:55.00Z"}},
        "@context": ["https://smartdatamodels.org/context.jsonld"]
    })
}

/// The JSON shape of a value: numbers alike, objects by their keys.
fn shape(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(a) => format!("array<{}>", a.first().map(shape).unwrap_or_default()),
        Value::Object(o) => {
            let mut keys: Vec<_> = o.keys().cloned().collect();
            keys.sort();
            format!("object{keys:?}")
        }
    }
}

fn assert_like_example(ours: &Value, example: &Value) {
    assert_eq!(ours["type"], example["type"]);
    let id = ours["id"].as_str().unwrap();
    assert!(id.starts_with(&format!("urn:ngsi-ld:{}:", example["type"].as_str().unwrap())), "{id}");
    assert!(ours["@context"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "https://smartdatamodels.org/context.jsonld"));
    for (name, attr) in ours.as_object().unwrap() {
        if ["id", "type", "@context"].contains(&name.as_str()) {
            continue;
        }
        let ex = example.get(name).unwrap_or_else(|| {
            panic!("{name} is not an attribute of the documented {}", example["type"])
        });
        assert_eq!(attr["type"], ex["type"], "{name}: NGSI-LD kind");
        let key = if attr["type"] == "Relationship" { "object" } else { "value" };
        assert_eq!(shape(&attr[key]), shape(&ex[key]), "{name}: value shape");
        assert_eq!(attr.get("unitCode"), ex.get("unitCode"), "{name}: unit code");
        if let Some(obj) = attr[key].as_object().filter(|o| o.contains_key("@value")) {
            assert!(
                EventTime::parse_rfc3339(obj["@value"].as_str().unwrap()).is_ok(),
                "{name}: DateTime"
            );
        }
    }
}

#[test]
fn a_segment_window_is_a_traffic_flow_observed_like_the_documented_example() {
    let seg = SegmentId::parse("viale-strozzi").unwrap();
    let coords = [[11.2460, 43.7810], [11.2520, 43.7800]];
    let w = TrafficFlowWindow {
        segment: &seg,
        lane: Some(1),
        from: EventTime(1_764_064_800_000),
        to: EventTime(1_764_064_860_000),
        intensity: Some(21.4),
        average_speed_kmh: Some(38.5),
        occupancy_pct: Some(24.0),
        coordinates: &coords,
    };
    let e = traffic_flow_observed(&w);
    assert_like_example(&e, &traffic_flow_example());
    assert_eq!(e["intensity"]["value"], 21.0);
    assert_eq!(e["occupancy"]["value"], 0.24);
    assert_eq!(e["refRoadSegment"]["object"], "urn:ngsi-ld:RoadSegment:sccr:viale-strozzi");
    assert_eq!(e["location"]["value"]["coordinates"][1][0], 11.2520);
    let (from, to) = e["dateObserved"]["value"].as_str().unwrap().split_once('/').unwrap();
    assert!(EventTime::parse_rfc3339(from).unwrap() < EventTime::parse_rfc3339(to).unwrap());
}

#[test]
fn station_readings_are_an_air_quality_observed_like_the_documented_example() {
    let d = DeviceId::parse("aq-santa-croce").unwrap();
    let m = |s: &str| s.parse::<MetricId>().unwrap();
    let values = [
        (m("no2_ugm3"), 41.0),
        (m("pm10_ugm3"), 22.0),
        (m("pm25_ugm3"), 14.5),
        (m("o3_ugm3"), 60.0),
        (m("temperature_c"), 11.5),
        (m("humidity_pct"), 71.0),
        (m("battery_v"), 3.6),
    ];
    let e =
        air_quality_observed(&d, EventTime(1_764_064_800_000), Some([11.2622, 43.7685]), &values);
    assert_like_example(&e, &air_quality_example());
    assert_eq!(e["relativeHumidity"]["value"], 0.71);
    assert_eq!(e["no2"]["value"], 41.0);
    assert!(e.get("battery_v").is_none());
    // Required by the model's schema.
    for k in ["id", "type", "dateObserved", "location"] {
        assert!(e.get(k).is_some(), "{k}");
    }
}

fn stored_alert(
    subject: AlertSubject,
    rule: &str,
    severity: Severity,
    cleared: bool,
) -> AlertRecord {
    AlertRecord {
        id: 7,
        rule: rule.into(),
        subject,
        kind: AlertKind::Single,
        severity,
        state: if cleared { AlertState::Cleared } else { AlertState::Raised },
        message: "LOS F on viale Strozzi".into(),
        value: Some(9.0),
        since: EventTime(1_764_064_700_000),
        raised_at: EventTime(1_764_064_800_000),
        acknowledged: None,
        cleared: cleared.then_some(Clearance {
            by: None,
            note: None,
            at: EventTime(1_764_065_800_000),
        }),
        members: 1,
        active: true,
        returned_at: None,
        shelved: None,
        suppressed: None,
        code: Default::default(),
        params: Default::default(),
    }
}

#[test]
fn alerts_are_alert_entities_like_the_documented_example_with_schema_enums() {
    // Enumerations of the Alert schema (dataModel.Alert/Alert/schema.json).
    let categories = [
        "traffic",
        "naturalDisaster",
        "weather",
        "environment",
        "health",
        "security",
        "agriculture",
    ];
    let severities = ["informational", "low", "medium", "high", "critical"];
    let cases = [
        (
            stored_alert(
                AlertSubject::Segment(SegmentId::parse("viale-strozzi").unwrap()),
                "congestion",
                Severity::Critical,
                true,
            ),
            "traffic",
            "trafficJam",
            "critical",
        ),
        (
            stored_alert(
                AlertSubject::Device(DeviceId::parse("aq-1").unwrap()),
                "eu-no2-hourly",
                Severity::Warning,
                false,
            ),
            "environment",
            "airPollution",
            "medium",
        ),
        (
            stored_alert(
                AlertSubject::Device(DeviceId::parse("loop-1").unwrap()),
                "offline",
                Severity::Info,
                false,
            ),
            "traffic",
            "hazardOnRoad",
            "informational",
        ),
    ];
    for (a, category, sub, severity) in cases {
        let e = alert(&a);
        assert_like_example(&e, &alert_example());
        assert_eq!(e["category"]["value"], category);
        assert_eq!(e["subCategory"]["value"], sub);
        assert_eq!(e["severity"]["value"], severity);
        assert!(categories.contains(&e["category"]["value"].as_str().unwrap()));
        assert!(severities.contains(&e["severity"]["value"].as_str().unwrap()));
        assert_eq!(e.get("validTo").is_some(), a.cleared.is_some());
    }
}

#[test]
fn alert_outbox_events_become_alert_entities() {
    let a = stored_alert(
        AlertSubject::Segment(SegmentId::parse("viale-strozzi").unwrap()),
        "congestion",
        Severity::Critical,
        true,
    );
    let r = store::OutboxRecord {
        id: 1,
        event_type: "it.firenze.sccr.alert.cleared".into(),
        subject: "alert/7".into(),
        time: EventTime(0),
        data: serde_json::to_value(&a).unwrap(),
    };
    let e = entity_of_event(&r).unwrap();
    assert_eq!(e, alert(&a));
    let r = store::OutboxRecord { event_type: "it.firenze.sccr.device.online".into(), ..r };
    assert!(entity_of_event(&r).is_none());
}

/// An operation given by a point names the segment derived from it as its source; one
/// with segments names its first.
#[test]
fn an_operation_on_a_point_has_its_derived_segment_as_source() {
    let mut v = json!({
        "id": "op-0195b1c2d3e-4f5a6b7c", "version": 1, "kind": "incident", "title": "Crash",
        "description": null, "severity": "major", "status": "active", "agency": "municipal_police",
        "segments": [], "derived_segments": ["viale-strozzi"], "point": [11.247, 43.7795],
        "area": null, "closes_road": false,
        "planned": {"from": "2026-11-02T07:00:00Z", "to": "2026-11-02T09:00:00Z"},
        "actual": {"from": "2026-11-02T07:05:00Z", "to": null}, "notes": [], "linked_alerts": [],
        "external_ref": null, "created_at": "2026-11-02T07:05:00Z", "created_by": "wall-3",
        "updated_at": "2026-11-02T07:05:00Z", "updated_by": "wall-3"
    });
    let op: store::Operation = serde_json::from_value(v.clone()).unwrap();
    let e = operation_alert(&op);
    let strozzi = road_segment_urn(&SegmentId::parse("viale-strozzi").unwrap());
    assert_eq!(e["alertSource"]["object"], strozzi.as_str(), "{e}");
    assert_eq!(e["location"]["value"]["type"], "Point");
    v["segments"] = json!(["viale-lavagnini"]);
    let op: store::Operation = serde_json::from_value(v).unwrap();
    let lavagnini = road_segment_urn(&SegmentId::parse("viale-lavagnini").unwrap());
    assert_eq!(operation_alert(&op)["alertSource"]["object"], lavagnini.as_str());
}
