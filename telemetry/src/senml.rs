//! SenML JSON (RFC 8428): parsing, base-field resolution (§4.6) and mapping of resolved
//! records onto SCCR metrics.
//!
//! Resolution is kept apart from mapping so it can be checked against the RFC's own
//! examples. A resolved record's metric is the last component of its name (after the last
//! `:` or `/`), so `urn:dev:mac:0024befffe804ff1:speed_kmh` and `speed_kmh` both map to
//! `speed_kmh`; the device always comes from the MQTT topic.

use serde_json::{Map, Value};

use crate::codec::{Decoded, Format, ReadingError, RejectedReading};
use crate::ids::DeviceId;
use crate::metric::{MetricId, MetricKind};
use crate::time::EventTime;
use crate::Reading;

/// Times below 2^28 seconds are relative to now (RFC 8428 §4.5.3).
const RELATIVE_LIMIT_S: f64 = 268_435_456.0;
/// The highest SenML version we understand (RFC 8428 §4.4: default 10).
const MAX_VERSION: i64 = 10;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SenmlError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("pack must be a JSON array of objects")]
    NotArray,
    #[error("record {0} is not a JSON object")]
    NotObject(usize),
    #[error("record {index}: field {field:?} must be {expected}")]
    FieldType { index: usize, field: &'static str, expected: &'static str },
    #[error("record {index}: field {field:?} ends in '_' and is not understood")]
    MustUnderstand { index: usize, field: String },
    #[error("record {index}: version {version} is newer than {MAX_VERSION}")]
    Version { index: usize, version: i64 },
    #[error("record {index}: base version changes within the pack")]
    VersionChange { index: usize },
    #[error("record {index}: resolved name {name:?} is empty or has characters outside [A-Za-z0-9:./_-]")]
    BadName { index: usize, name: String },
    #[error("record {index}: has no value (v, vs, vb, vd) and no sum (s)")]
    NoValue { index: usize },
    #[error("record {index}: has more than one value field")]
    TwoValues { index: usize },
    #[error("record {index}: value is not finite after adding the base value")]
    NotFinite { index: usize },
}

/// The value of a resolved record.
#[derive(Debug, Clone, PartialEq)]
pub enum SenmlValue {
    Number(f64),
    Bool(bool),
    String(String),
    Data(String),
    /// A record with only a sum.
    Sum(f64),
}

/// A record after base-field resolution: absolute name, unit, value and time (seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedRecord {
    pub name: String,
    pub unit: Option<String>,
    pub value: SenmlValue,
    /// Absolute time in seconds since the Unix epoch.
    pub time: f64,
}

/// Parse a SenML JSON pack into its records.
pub fn parse(payload: &[u8]) -> Result<Vec<Map<String, Value>>, SenmlError> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| SenmlError::Json(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(SenmlError::NotArray);
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(map) => Ok(map),
            _ => Err(SenmlError::NotObject(i)),
        })
        .collect()
}

fn num(
    rec: &Map<String, Value>,
    index: usize,
    field: &'static str,
) -> Result<Option<f64>, SenmlError> {
    match rec.get(field) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            n.as_f64().map(Some).ok_or(SenmlError::FieldType { index, field, expected: "a number" })
        }
        Some(_) => Err(SenmlError::FieldType { index, field, expected: "a number" }),
    }
}

fn text<'a>(
    rec: &'a Map<String, Value>,
    index: usize,
    field: &'static str,
) -> Result<Option<&'a str>, SenmlError> {
    match rec.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(SenmlError::FieldType { index, field, expected: "a string" }),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '/' | '_'))
}

/// Resolve base fields (RFC 8428 §4.6). `now` is used for relative times.
pub fn resolve(
    records: &[Map<String, Value>],
    now: EventTime,
) -> Result<Vec<ResolvedRecord>, SenmlError> {
    let mut base_name = String::new();
    let mut base_time = 0.0;
    let mut base_unit: Option<String> = None;
    let mut base_value = 0.0;
    let mut base_sum = 0.0;
    let mut version: Option<i64> = None;
    let now_s = now.millis() as f64 / 1000.0;
    let mut out = Vec::with_capacity(records.len());

    for (index, rec) in records.iter().enumerate() {
        if let Some(field) = rec.keys().find(|k| k.ends_with('_')) {
            return Err(SenmlError::MustUnderstand {
                index,
                field: field.chars().take(32).collect(),
            });
        }
        if let Some(v) = num(rec, index, "bver")? {
            let v = v as i64;
            if v > MAX_VERSION {
                return Err(SenmlError::Version { index, version: v });
            }
            if version.is_some_and(|prev| prev != v) {
                return Err(SenmlError::VersionChange { index });
            }
            version = Some(v);
        }
        if let Some(bn) = text(rec, index, "bn")? {
            base_name = bn.to_owned();
        }
        if let Some(bt) = num(rec, index, "bt")? {
            base_time = bt;
        }
        if let Some(bu) = text(rec, index, "bu")? {
            base_unit = Some(bu.to_owned());
        }
        if let Some(bv) = num(rec, index, "bv")? {
            base_value = bv;
        }
        if let Some(bs) = num(rec, index, "bs")? {
            base_sum = bs;
        }

        let name = format!("{base_name}{}", text(rec, index, "n")?.unwrap_or(""));
        if !valid_name(&name) {
            return Err(SenmlError::BadName { index, name: name.chars().take(64).collect() });
        }
        let unit = text(rec, index, "u")?.map(str::to_owned).or_else(|| base_unit.clone());

        let v = num(rec, index, "v")?;
        let vs = text(rec, index, "vs")?;
        let vd = text(rec, index, "vd")?;
        let vb = match rec.get("vb") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                return Err(SenmlError::FieldType { index, field: "vb", expected: "a boolean" })
            }
        };
        let s = num(rec, index, "s")?;
        let present =
            [v.is_some(), vs.is_some(), vd.is_some(), vb.is_some()].iter().filter(|p| **p).count();
        if present > 1 {
            return Err(SenmlError::TwoValues { index });
        }
        let value = if let Some(v) = v {
            SenmlValue::Number(base_value + v)
        } else if let Some(b) = vb {
            SenmlValue::Bool(b)
        } else if let Some(s) = vs {
            SenmlValue::String(s.to_owned())
        } else if let Some(d) = vd {
            SenmlValue::Data(d.to_owned())
        } else if let Some(s) = s {
            SenmlValue::Sum(base_sum + s)
        } else {
            return Err(SenmlError::NoValue { index });
        };
        if let SenmlValue::Number(x) | SenmlValue::Sum(x) = value {
            if !x.is_finite() {
                return Err(SenmlError::NotFinite { index });
            }
        }

        let mut time = base_time + num(rec, index, "t")?.unwrap_or(0.0);
        if time < RELATIVE_LIMIT_S {
            time += now_s;
        }
        out.push(ResolvedRecord { name, unit, value, time });
    }
    Ok(out)
}

/// Map resolved records onto readings of `device`.
pub fn to_readings(records: Vec<ResolvedRecord>, device: &DeviceId) -> Decoded {
    let mut readings = Vec::with_capacity(records.len());
    let mut positions = Vec::with_capacity(records.len());
    let mut rejected = Vec::new();
    for (index, rec) in records.into_iter().enumerate() {
        match to_reading(rec, device) {
            Ok(r) => {
                readings.push(r);
                positions.push(index);
            }
            Err(error) => rejected.push(RejectedReading { index, error }),
        }
    }
    Decoded { format: Format::Senml, seq: None, readings, positions, rejected }
}

fn to_reading(rec: ResolvedRecord, device: &DeviceId) -> Result<Reading, ReadingError> {
    let short = rec.name.rsplit([':', '/']).next().unwrap_or(&rec.name);
    let metric: MetricId = short
        .parse()
        .map_err(|e: crate::metric::UnknownMetric| ReadingError::UnknownMetric(e.0))?;
    let spec = metric.spec();
    let factor = match &rec.unit {
        None => 1.0,
        Some(u) if u == spec.unit => 1.0,
        Some(u) => {
            spec.senml_units.iter().find(|(name, _)| name == u).map(|(_, f)| *f).ok_or_else(
                || ReadingError::UnitMismatch { metric, unit: u.chars().take(16).collect() },
            )?
        }
    };
    let value = match rec.value {
        SenmlValue::Number(v) => v * factor,
        SenmlValue::Bool(b) if spec.kind == MetricKind::Bool => f64::from(u8::from(b)),
        SenmlValue::Bool(_) => {
            return Err(ReadingError::UnsupportedValue { metric, kind: "boolean" })
        }
        SenmlValue::String(_) => {
            return Err(ReadingError::UnsupportedValue { metric, kind: "string" })
        }
        SenmlValue::Data(_) => return Err(ReadingError::UnsupportedValue { metric, kind: "data" }),
        SenmlValue::Sum(_) => return Err(ReadingError::UnsupportedValue { metric, kind: "sum" }),
    };
    let ms = (rec.time * 1000.0).round();
    let time = if ms.is_finite() && ms.abs() < 9.0e15 {
        EventTime::from_millis(ms as i64).map_err(ReadingError::Time)?
    } else {
        return Err(ReadingError::Time(crate::time::TimeError::OutOfRange(rec.time.to_string())));
    };
    Ok(Reading { device: device.clone(), metric, time, value, seq: None })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
