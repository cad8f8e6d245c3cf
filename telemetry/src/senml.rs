//! SenML JSON (RFC 8428): parsing, base-field resolution (§4.6) and mapping of resolved
//! records onto SCCR metrics.
//!
//! Resolution is kept apart from mapping so it can be checked against the RFC's own
//! examples (§5.1.1 to §5.1.7, in `tests.rs`). A resolved record's metric is the last
//! component of its name (after the last `:` or `/`), so
//! `urn:dev:mac:0024befffe804ff1:speed_kmh` and `speed_kmh` both map to `speed_kmh`; the
//! device always comes from the MQTT topic.
//!
//! What is wrong with one record refuses that record only ([`ReadingError`], with its
//! index). What every following record shares refuses the pack ([`SenmlError`]): a base
//! field of the wrong type, a must-understand field that may be a base field, and the
//! version (§4.4: a positive integer, at most 10, the same in every record; a record
//! without `bver` has the first record's version, 10 by default). A record with base
//! fields only (§5.1.7) sets them for the records after it and yields no reading.

use serde_json::{Map, Value};

use crate::codec::{Decoded, Format, ReadingError, RejectedReading};
use crate::ids::DeviceId;
use crate::metric::{MetricId, MetricKind};
use crate::time::EventTime;
use crate::Reading;

/// Times below 2^28 seconds are relative to now (RFC 8428 §4.5.3).
const RELATIVE_LIMIT_S: f64 = 268_435_456.0;
/// The SenML version of RFC 8428 (§4.4), the default, and the highest we understand.
const VERSION: u64 = 10;
/// Labels of the regular fields (RFC 8428 §4.2); a record with none of them is base only.
pub(crate) const REGULAR: [&str; 9] = ["n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"];
/// Labels of the base fields (RFC 8428 §4.1).
pub(crate) const BASE: [&str; 6] = ["bn", "bt", "bu", "bv", "bs", "bver"];

/// Why a whole pack was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SenmlError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("pack must be a JSON array of objects")]
    NotArray,
    #[error("record {index}: base field {field:?} must be {expected}")]
    BaseField { index: usize, field: &'static str, expected: &'static str },
    #[error(
        "record {index}: field {field:?} ends in '_', is not understood and may be a base field"
    )]
    MustUnderstandBase { index: usize, field: String },
    #[error("record {index}: bver must be a positive integer; got {version}")]
    BadVersion { index: usize, version: String },
    #[error("record {index}: version {version} is newer than {VERSION}")]
    Version { index: usize, version: u64 },
    #[error(
        "record {index}: version {version} differs from the pack's version {pack} (RFC 8428 §4.4)"
    )]
    VersionChange { index: usize, version: u64, pack: u64 },
}

impl SenmlError {
    /// Short stable code for counters and dead letters.
    pub fn code(&self) -> &'static str {
        match self {
            SenmlError::Json(_) => "bad_json",
            SenmlError::NotArray => "bad_senml",
            SenmlError::BaseField { .. } => "bad_base_field",
            SenmlError::MustUnderstandBase { .. } => "must_understand",
            SenmlError::BadVersion { .. } => "bad_version",
            SenmlError::Version { .. } => "unsupported_version",
            SenmlError::VersionChange { .. } => "version_change",
        }
    }
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

/// A pack after resolution. Base-only records are in neither list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResolvedPack {
    pub records: Vec<ResolvedRecord>,
    /// Index in the pack of each resolved record (parallel to `records`).
    pub positions: Vec<usize>,
    /// Records refused, in pack order.
    pub rejected: Vec<RejectedReading>,
}

/// Parse a SenML JSON pack into its records (each checked to be an object at resolution).
pub fn parse(payload: &[u8]) -> Result<Vec<Value>, SenmlError> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| SenmlError::Json(e.to_string()))?;
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(SenmlError::NotArray),
    }
}

/// A regular field of the wrong type refuses its record.
fn num(rec: &Map<String, Value>, field: &'static str) -> Result<Option<f64>, ReadingError> {
    match rec.get(field) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            n.as_f64().map(Some).ok_or(ReadingError::FieldType { field, expected: "a number" })
        }
        Some(_) => Err(ReadingError::FieldType { field, expected: "a number" }),
    }
}

fn text<'a>(
    rec: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, ReadingError> {
    match rec.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ReadingError::FieldType { field, expected: "a string" }),
    }
}

/// A base field of the wrong type refuses the pack.
fn base_num(
    rec: &Map<String, Value>,
    index: usize,
    field: &'static str,
) -> Result<Option<f64>, SenmlError> {
    num(rec, field).map_err(|_| SenmlError::BaseField { index, field, expected: "a number" })
}

fn base_text<'a>(
    rec: &'a Map<String, Value>,
    index: usize,
    field: &'static str,
) -> Result<Option<&'a str>, SenmlError> {
    text(rec, field).map_err(|_| SenmlError::BaseField { index, field, expected: "a string" })
}

/// `bver`: a positive integer (RFC 8428 §4.1), at most [`VERSION`].
fn version(rec: &Map<String, Value>, index: usize) -> Result<Option<u64>, SenmlError> {
    let Some(raw) = rec.get("bver") else { return Ok(None) };
    let bad =
        || SenmlError::BadVersion { index, version: raw.to_string().chars().take(32).collect() };
    let Value::Number(n) = raw else { return Err(bad()) };
    let v = match (n.as_u64(), n.as_f64()) {
        (Some(v), _) => v,
        // 5.0 is the number 5 in JSON.
        (None, Some(f)) if f.fract() == 0.0 && (1.0..=1.0e9).contains(&f) => f as u64,
        _ => return Err(bad()),
    };
    if v == 0 {
        return Err(bad());
    }
    if v > VERSION {
        return Err(SenmlError::Version { index, version: v });
    }
    Ok(Some(v))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '/' | '_'))
}

/// The base fields in force at a record.
#[derive(Debug, Default)]
struct Base {
    name: String,
    time: f64,
    unit: Option<String>,
    value: f64,
    sum: f64,
}

/// Resolve base fields (RFC 8428 §4.6). `now` is used for relative times (§4.5.3).
pub fn resolve(records: &[Value], now: EventTime) -> Result<ResolvedPack, SenmlError> {
    let mut base = Base::default();
    let mut pack_version: Option<u64> = None;
    let now_s = now.millis() as f64 / 1000.0;
    let mut out = ResolvedPack {
        records: Vec::with_capacity(records.len()),
        positions: Vec::with_capacity(records.len()),
        rejected: Vec::new(),
    };

    for (index, item) in records.iter().enumerate() {
        let Value::Object(rec) = item else {
            out.rejected.push(RejectedReading { index, error: ReadingError::NotObject });
            continue;
        };
        // Base fields apply to every record after this one: what is wrong with them
        // refuses the pack.
        if let Some(field) = rec.keys().find(|k| k.ends_with('_') && k.starts_with('b')) {
            return Err(SenmlError::MustUnderstandBase {
                index,
                field: field.chars().take(32).collect(),
            });
        }
        let declared = version(rec, index)?;
        let pack = *pack_version.get_or_insert(declared.unwrap_or(VERSION));
        if let Some(v) = declared.filter(|v| *v != pack) {
            return Err(SenmlError::VersionChange { index, version: v, pack });
        }
        if let Some(bn) = base_text(rec, index, "bn")? {
            bn.clone_into(&mut base.name);
        }
        if let Some(bt) = base_num(rec, index, "bt")? {
            base.time = bt;
        }
        if let Some(bu) = base_text(rec, index, "bu")? {
            base.unit = Some(bu.to_owned());
        }
        if let Some(bv) = base_num(rec, index, "bv")? {
            base.value = bv;
        }
        if let Some(bs) = base_num(rec, index, "bs")? {
            base.sum = bs;
        }

        if let Some(field) = rec.keys().find(|k| k.ends_with('_')) {
            let error = ReadingError::MustUnderstand(field.chars().take(32).collect());
            out.rejected.push(RejectedReading { index, error });
            continue;
        }
        let base_only = !rec.keys().any(|k| REGULAR.contains(&k.as_str()))
            && rec.keys().any(|k| BASE.contains(&k.as_str()));
        if base_only {
            continue;
        }
        match resolve_record(rec, &base, now_s) {
            Ok(record) => {
                out.records.push(record);
                out.positions.push(index);
            }
            Err(error) => out.rejected.push(RejectedReading { index, error }),
        }
    }
    Ok(out)
}

/// The regular fields of one record, with the base fields in force.
fn resolve_record(
    rec: &Map<String, Value>,
    base: &Base,
    now_s: f64,
) -> Result<ResolvedRecord, ReadingError> {
    let name = format!("{}{}", base.name, text(rec, "n")?.unwrap_or(""));
    if !valid_name(&name) {
        return Err(ReadingError::BadName(name.chars().take(64).collect()));
    }
    let unit = text(rec, "u")?.map(str::to_owned).or_else(|| base.unit.clone());

    let v = num(rec, "v")?;
    let vs = text(rec, "vs")?;
    let vd = text(rec, "vd")?;
    let vb = match rec.get("vb") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(ReadingError::FieldType { field: "vb", expected: "a boolean" }),
    };
    let s = num(rec, "s")?;
    let t = num(rec, "t")?;
    let present =
        [v.is_some(), vs.is_some(), vd.is_some(), vb.is_some()].iter().filter(|p| **p).count();
    if present > 1 {
        return Err(ReadingError::TwoValues);
    }
    let value = if let Some(v) = v {
        SenmlValue::Number(base.value + v)
    } else if let Some(b) = vb {
        SenmlValue::Bool(b)
    } else if let Some(s) = vs {
        SenmlValue::String(s.to_owned())
    } else if let Some(d) = vd {
        SenmlValue::Data(d.to_owned())
    } else if let Some(s) = s {
        SenmlValue::Sum(base.sum + s)
    } else {
        return Err(ReadingError::NoValue);
    };
    if let SenmlValue::Number(x) | SenmlValue::Sum(x) = value {
        if !x.is_finite() {
            return Err(ReadingError::BaseOverflow);
        }
    }

    let mut time = base.time + t.unwrap_or(0.0);
    if time < RELATIVE_LIMIT_S {
        time += now_s;
    }
    Ok(ResolvedRecord { name, unit, value, time })
}

/// Map resolved records onto readings of `device`; records refused at resolution or here
/// are returned in pack order.
pub fn to_readings(pack: ResolvedPack, device: &DeviceId) -> Decoded {
    let mut readings = Vec::with_capacity(pack.records.len());
    let mut positions = Vec::with_capacity(pack.records.len());
    let mut rejected = pack.rejected;
    for (rec, index) in pack.records.into_iter().zip(pack.positions) {
        match to_reading(rec, device) {
            Ok(r) => {
                readings.push(r);
                positions.push(index);
            }
            Err(error) => rejected.push(RejectedReading { index, error }),
        }
    }
    rejected.sort_by_key(|r| r.index);
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
mod tests;
