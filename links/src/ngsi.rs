//! FIWARE Smart Data Models entities in NGSI-LD JSON-LD (normalized form: every attribute
//! a `Property`, `GeoProperty` or `Relationship`), so platforms that already speak FIWARE
//! (Orion-LD, Snap4City) take SCCR's data as they take their own:
//!
//! - [`traffic_flow_observed`]: a road segment's window — `TrafficFlowObserved`
//!   (`intensity` = vehicles counted in the window, `averageVehicleSpeed` km/h,
//!   `occupancy` as a fraction 0–1, `laneId`, `dateObserved`, `dateObservedFrom`/`To`,
//!   `refRoadSegment`, `location` the segment's LineString).
//! - [`air_quality_observed`]: a station's readings — `AirQualityObserved` (`no2`, `pm10`,
//!   `pm25`, `o3` in µg/m³ with unit code `GQ`, `temperature` `CEL`, `relativeHumidity` as
//!   a fraction 0–1, `dateObserved`, `location` Point, `refDevice`).
//! - [`alert`]: a stored alert — `Alert` (`category` traffic/environment, `subCategory`,
//!   `severity` informational/medium/critical, `alertSource`, `dateIssued`,
//!   `validFrom`/`validTo`, `description`).
//! - [`operation_alert`]: a road operation — `Alert` (`category` traffic, `subCategory`
//!   roadClosed for closures and operations that close the road, roadWorks, carAccident for
//!   incidents, trafficJam for events; `severity` informational/low/medium/high/critical
//!   from minor…critical; `validFrom`/`validTo` its window, `alertSource` its first
//!   segment, `location` its point or area). Operation events (`it.firenze.sccr.operation.*`) become
//!   this entity in `ngsi-ld` subscriptions.
//! - [`operation_road_segment`]: a segment under an operation — `RoadSegment` with
//!   `status` closed (an active operation closing the road), limited (other active ones)
//!   or open (planned, ended, cancelled), `statusDescription` the operation's title.
//!
//! Entity ids are URNs `urn:ngsi-ld:<Type>:sccr:<id>`. The export engineer calls these
//! functions directly; the webhook dispatcher uses [`entity_of_event`] for subscriptions
//! whose format is `ngsi-ld`.

use serde_json::{json, Map, Value};
use store::{
    AlertRecord, AlertSubject, Operation, OperationKind, OperationSeverity, OperationStatus,
    OutboxRecord, Severity,
};
use telemetry::{DeviceId, EventTime, MetricId, SegmentId};

/// The JSON-LD contexts of every entity: the NGSI-LD core and the Smart Data Models'.
pub const CONTEXT: [&str; 2] = [
    "https://smartdatamodels.org/context.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld",
];

fn property(value: Value) -> Value {
    json!({ "type": "Property", "value": value })
}

fn property_unit(value: f64, unit: &str) -> Value {
    json!({ "type": "Property", "value": value, "unitCode": unit })
}

fn date_time(t: EventTime) -> Value {
    json!({ "type": "Property", "value": { "@type": "DateTime", "@value": t.to_rfc3339() } })
}

fn relationship(object: String) -> Value {
    json!({ "type": "Relationship", "object": object })
}

fn entity(kind: &str, id: &str, mut attrs: Map<String, Value>) -> Value {
    attrs.insert("id".into(), Value::from(format!("urn:ngsi-ld:{kind}:sccr:{id}")));
    attrs.insert("type".into(), Value::from(kind));
    attrs.insert("@context".into(), json!(CONTEXT));
    Value::Object(attrs)
}

pub fn road_segment_urn(segment: &SegmentId) -> String {
    format!("urn:ngsi-ld:RoadSegment:sccr:{segment}")
}

pub fn device_urn(device: &DeviceId) -> String {
    format!("urn:ngsi-ld:Device:sccr:{device}")
}

/// One window of a road segment (or of one lane of it).
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficFlowWindow<'a> {
    pub segment: &'a SegmentId,
    pub lane: Option<u32>,
    pub from: EventTime,
    pub to: EventTime,
    /// Vehicles counted in the window.
    pub intensity: Option<f64>,
    pub average_speed_kmh: Option<f64>,
    pub occupancy_pct: Option<f64>,
    /// The segment's geometry, `[lon, lat]` pairs.
    pub coordinates: &'a [[f64; 2]],
}

/// A segment window as a `TrafficFlowObserved` entity.
pub fn traffic_flow_observed(w: &TrafficFlowWindow<'_>) -> Value {
    let mut a = Map::new();
    if let Some(v) = w.intensity {
        a.insert("intensity".into(), property(json!(v.round())));
    }
    if let Some(v) = w.average_speed_kmh {
        a.insert("averageVehicleSpeed".into(), property(json!(v)));
    }
    if let Some(v) = w.occupancy_pct {
        a.insert("occupancy".into(), property(json!((v / 100.0).clamp(0.0, 1.0))));
    }
    if let Some(lane) = w.lane {
        a.insert("laneId".into(), property(json!(lane)));
    }
    a.insert(
        "dateObserved".into(),
        property(Value::from(format!("{}/{}", w.from.to_rfc3339(), w.to.to_rfc3339()))),
    );
    a.insert("dateObservedFrom".into(), date_time(w.from));
    a.insert("dateObservedTo".into(), date_time(w.to));
    a.insert("refRoadSegment".into(), relationship(road_segment_urn(w.segment)));
    if !w.coordinates.is_empty() {
        a.insert("location".into(), json!({ "type": "GeoProperty", "value": { "type": "LineString", "coordinates": w.coordinates } }));
    }
    let id = match w.lane {
        Some(l) => format!("{}:{}:lane{l}", w.segment, w.from.millis()),
        None => format!("{}:{}", w.segment, w.from.millis()),
    };
    entity("TrafficFlowObserved", &id, a)
}

/// A station's readings at one time as an `AirQualityObserved` entity. Metrics outside
/// the model are left out.
pub fn air_quality_observed(
    device: &DeviceId,
    time: EventTime,
    location: Option<[f64; 2]>,
    values: &[(MetricId, f64)],
) -> Value {
    let mut a = Map::new();
    for (metric, v) in values {
        let (name, attr) = match metric.as_str() {
            "no2_ugm3" => ("no2", property_unit(*v, "GQ")),
            "pm10_ugm3" => ("pm10", property_unit(*v, "GQ")),
            "pm25_ugm3" => ("pm25", property_unit(*v, "GQ")),
            "o3_ugm3" => ("o3", property_unit(*v, "GQ")),
            "temperature_c" => ("temperature", property_unit(*v, "CEL")),
            "humidity_pct" => ("relativeHumidity", property(json!((v / 100.0).clamp(0.0, 1.0)))),
            _ => continue,
        };
        a.insert(name.into(), attr);
    }
    a.insert("dateObserved".into(), date_time(time));
    a.insert("refDevice".into(), relationship(device_urn(device)));
    if let Some(p) = location {
        a.insert(
            "location".into(),
            json!({ "type": "GeoProperty", "value": { "type": "Point", "coordinates": p } }),
        );
    }
    entity("AirQualityObserved", &format!("{device}:{}", time.millis()), a)
}

const AIR_WORDS: [&str; 7] = ["no2", "pm10", "pm25", "pm2", "o3", "air", "aq"];

/// The model's `category` and `subCategory` of an alert: air-quality rules are
/// environment/airPollution, alerts about segments traffic/trafficJam, device alerts
/// traffic/hazardOnRoad (a detector or signal out of order on the road).
fn categories(a: &AlertRecord) -> (&'static str, &'static str) {
    let rule = a.rule.to_ascii_lowercase();
    if AIR_WORDS.iter().any(|w| rule.contains(w)) {
        ("environment", "airPollution")
    } else if matches!(a.subject, AlertSubject::Segment(_)) {
        ("traffic", "trafficJam")
    } else {
        ("traffic", "hazardOnRoad")
    }
}

/// A stored alert as an `Alert` entity.
pub fn alert(a: &AlertRecord) -> Value {
    let (category, sub) = categories(a);
    let source = match &a.subject {
        AlertSubject::Device(d) => device_urn(d),
        AlertSubject::Segment(s) => road_segment_urn(s),
        AlertSubject::Rule => format!("urn:ngsi-ld:AlertRule:sccr:{}", a.rule),
    };
    let mut m = Map::new();
    m.insert("category".into(), property(json!(category)));
    m.insert("subCategory".into(), property(json!(sub)));
    m.insert(
        "severity".into(),
        property(json!(match a.severity {
            Severity::Info => "informational",
            Severity::Warning => "medium",
            Severity::Critical => "critical",
        })),
    );
    // A Relationship in the model (the Smart Data Models property database says so).
    m.insert("alertSource".into(), relationship(source));
    m.insert("dateIssued".into(), date_time(a.raised_at));
    m.insert("validFrom".into(), date_time(a.since));
    if let Some(c) = &a.cleared {
        m.insert("validTo".into(), date_time(c.at));
    }
    m.insert("description".into(), property(json!(a.message)));
    let status = a.state.as_str();
    m.insert("name".into(), property(json!(format!("{} ({status})", a.rule))));
    entity("Alert", &a.id.to_string(), m)
}

/// The model's `subCategory` of an operation.
fn operation_sub_category(op: &Operation) -> &'static str {
    match op.kind {
        OperationKind::Closure => "roadClosed",
        _ if op.closes_road => "roadClosed",
        OperationKind::Roadworks => "roadWorks",
        OperationKind::Incident => "carAccident",
        OperationKind::Event => "trafficJam",
    }
}

/// A road operation as an `Alert` entity (category traffic).
pub fn operation_alert(op: &Operation) -> Value {
    let mut m = Map::new();
    m.insert("category".into(), property(json!("traffic")));
    m.insert("subCategory".into(), property(json!(operation_sub_category(op))));
    m.insert(
        "severity".into(),
        property(json!(match op.severity {
            OperationSeverity::Minor => "low",
            OperationSeverity::Moderate => "medium",
            OperationSeverity::Major => "high",
            OperationSeverity::Critical => "critical",
        })),
    );
    if let Some(s) = op.affected_segments().first().and_then(|s| SegmentId::parse(s).ok()) {
        m.insert("alertSource".into(), relationship(road_segment_urn(&s)));
    }
    m.insert("dateIssued".into(), date_time(op.created_at));
    m.insert("dateModified".into(), date_time(op.updated_at));
    let (from, to) = op.window();
    m.insert("validFrom".into(), date_time(EventTime(from)));
    if to != i64::MAX {
        m.insert("validTo".into(), date_time(EventTime(to)));
    }
    m.insert("name".into(), property(json!(op.title)));
    let description = match &op.description {
        Some(d) => format!("{} ({}, {}): {d}", op.title, op.kind.as_str(), op.status.as_str()),
        None => format!("{} ({}, {})", op.title, op.kind.as_str(), op.status.as_str()),
    };
    m.insert("description".into(), property(json!(description)));
    m.insert("dataProvider".into(), property(json!(op.agency)));
    if let Some(area) = &op.area {
        m.insert("location".into(), json!({ "type": "GeoProperty", "value": area }));
    } else if let Some(p) = op.point {
        m.insert(
            "location".into(),
            json!({ "type": "GeoProperty", "value": { "type": "Point", "coordinates": p } }),
        );
    }
    entity("Alert", &op.id, m)
}

/// One of an operation's segments with the operation's effect on it as a `RoadSegment`
/// entity (`status`, `statusDescription`).
pub fn operation_road_segment(op: &Operation, segment: &SegmentId) -> Value {
    let status = match op.status {
        OperationStatus::Active if op.closes_road => "closed",
        OperationStatus::Active => "limited",
        _ => "open",
    };
    let mut m = Map::new();
    m.insert("status".into(), property(json!(status)));
    m.insert("statusDescription".into(), property(json!(format!("{} ({})", op.title, op.id))));
    m.insert("dateModified".into(), date_time(op.updated_at));
    let mut e = entity("RoadSegment", segment.as_str(), m);
    e["id"] = json!(road_segment_urn(segment));
    e
}

/// The NGSI-LD entity of an outbox event, where there is one (alert and operation events).
pub fn entity_of_event(e: &OutboxRecord) -> Option<Value> {
    if e.event_type.starts_with("it.firenze.sccr.operation.") {
        let op: Operation = serde_json::from_value(e.data.clone()).ok()?;
        return Some(operation_alert(&op));
    }
    if !e.event_type.starts_with("it.firenze.sccr.alert.") {
        return None;
    }
    let record = alert_from_json(&e.data)?;
    Some(alert(&record))
}

/// Read back an alert as the outbox stores it (the store's JSON of [`AlertRecord`]).
fn alert_from_json(v: &Value) -> Option<AlertRecord> {
    let subject = match v.get("subject")? {
        Value::String(s) if s == "rule" => AlertSubject::Rule,
        Value::Object(o) => {
            if let Some(d) = o.get("device").and_then(Value::as_str) {
                AlertSubject::Device(DeviceId::parse(d).ok()?)
            } else {
                AlertSubject::Segment(SegmentId::parse(o.get("segment")?.as_str()?).ok()?)
            }
        }
        _ => return None,
    };
    let t = |k: &str| v.get(k).and_then(Value::as_i64).map(EventTime);
    Some(AlertRecord {
        id: v.get("id")?.as_i64()?,
        rule: v.get("rule")?.as_str()?.to_owned(),
        subject,
        kind: serde_json::from_value(v.get("kind")?.clone()).ok()?,
        severity: serde_json::from_value(v.get("severity")?.clone()).ok()?,
        state: serde_json::from_value(v.get("state")?.clone()).ok()?,
        message: v.get("message")?.as_str()?.to_owned(),
        value: v.get("value").and_then(Value::as_f64),
        since: t("since")?,
        raised_at: t("raised_at")?,
        acknowledged: None,
        cleared: v.get("cleared").and_then(|c| {
            Some(store::Clearance { by: None, note: None, at: EventTime(c.get("at")?.as_i64()?) })
        }),
        members: u32::try_from(v.get("members").and_then(Value::as_u64).unwrap_or(1)).unwrap_or(1),
        active: v.get("active").and_then(Value::as_bool).unwrap_or(true),
        returned_at: t("returned_at"),
        shelved: None,
        suppressed: None,
        code: v
            .get("code")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default(),
        params: v.get("params").and_then(Value::as_object).cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests;
