//! Payload codecs. A telemetry payload is compact JSON (first byte `{`) or SenML JSON
//! (first byte `[`, RFC 8428). Decoding turns it into [`Reading`]s for the device named by
//! the topic.
//!
//! Errors have two levels. A message error ([`DecodeError`]) refuses the whole payload:
//! empty, not JSON, not one of the two formats, a bad message field (`seq`, `readings`),
//! or a bad SenML base field, which every following record shares. A record error
//! ([`ReadingError`]) refuses one reading or SenML record, whatever is wrong with it (a
//! string in `v`, a bad name, two values, an unknown field, an unknown metric), and comes
//! back as a [`RejectedReading`] with its index beside the good readings: one bad value
//! never costs the rest of the message (`tests::compact_reading_errors_refuse_only_their_reading`,
//! `senml::tests::record_errors_refuse_only_their_record`).

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, Seq};
use crate::metric::MetricId;
use crate::senml::{self, SenmlError};
use crate::time::{EventTime, TimeError};
use crate::Reading;

/// The two payload formats (docs/mqtt-contract.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Compact,
    Senml,
}

/// A message that could not be decoded at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is empty")]
    Empty,
    #[error(
        "payload starts with byte 0x{0:02x}; expected '{{' (compact JSON) or '[' (SenML JSON)"
    )]
    UnknownFormat(u8),
    #[error("payload is not valid JSON: {0}")]
    Json(String),
    #[error("payload does not match the compact schema: {0}")]
    Schema(String),
    #[error("SenML pack: {0}")]
    Senml(#[from] SenmlError),
}

impl DecodeError {
    /// Short stable code for counters and dead letters.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::UnknownFormat(_) => "unknown_format",
            DecodeError::Json(_) => "bad_json",
            DecodeError::Schema(_) => "bad_schema",
            DecodeError::Senml(e) => e.code(),
        }
    }

    fn from_json(e: serde_json::Error) -> Self {
        match e.classify() {
            serde_json::error::Category::Data => DecodeError::Schema(e.to_string()),
            _ => DecodeError::Json(e.to_string()),
        }
    }
}

/// Why a single reading (compact) or record (SenML) inside a decodable message was
/// refused. The text names no index: the caller prefixes it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadingError {
    #[error("is not a JSON object")]
    NotObject,
    #[error("field {field:?} must be {expected}")]
    FieldType { field: &'static str, expected: &'static str },
    #[error("field {0:?} is missing")]
    MissingField(&'static str),
    #[error("field {0:?} is not part of the compact format")]
    UnknownField(String),
    #[error("field {0:?} ends in '_' and is not understood (RFC 8428 §4.4)")]
    MustUnderstand(String),
    #[error("name {0:?} is empty or has characters outside [A-Za-z0-9:./_-] (RFC 8428 §4.5.1)")]
    BadName(String),
    #[error("has no value (v, vs, vb, vd) and no sum (s)")]
    NoValue,
    #[error("has more than one value field (v, vs, vb, vd)")]
    TwoValues,
    #[error("value is not finite after adding the base value")]
    BaseOverflow,
    #[error("unknown metric {0:?}")]
    UnknownMetric(String),
    #[error("{0}")]
    Time(TimeError),
    #[error("reading has no time: set \"ts\" on the message or \"t\" on the reading")]
    MissingTime,
    #[error("unit {unit:?} is not accepted for {metric}")]
    UnitMismatch { metric: MetricId, unit: String },
    #[error("{metric} takes a number; got a {kind} value")]
    UnsupportedValue { metric: MetricId, kind: &'static str },
    #[error("{metric} value is not a finite number")]
    NotFinite { metric: MetricId },
    #[error("{metric} value {value} is outside {min}..={max}")]
    OutOfRange { metric: MetricId, value: f64, min: f64, max: f64 },
    #[error("{metric} value {value} must be a whole number")]
    NotWhole { metric: MetricId, value: f64 },
    #[error("time {time} is {ahead_s} s in the future (limit {limit_s} s)")]
    InFuture { time: EventTime, ahead_s: i64, limit_s: i64 },
    #[error("time {time} is {age_s} s old (limit {limit_s} s)")]
    TooOld { time: EventTime, age_s: i64, limit_s: i64 },
}

impl ReadingError {
    pub fn code(&self) -> &'static str {
        match self {
            ReadingError::NotObject => "not_an_object",
            ReadingError::FieldType { .. } => "wrong_type",
            ReadingError::MissingField(_) => "missing_field",
            ReadingError::UnknownField(_) => "unknown_field",
            ReadingError::MustUnderstand(_) => "must_understand",
            ReadingError::BadName(_) => "bad_name",
            ReadingError::NoValue => "no_value",
            ReadingError::TwoValues => "two_values",
            ReadingError::BaseOverflow | ReadingError::NotFinite { .. } => "not_finite",
            ReadingError::UnknownMetric(_) => "unknown_metric",
            ReadingError::Time(_) | ReadingError::MissingTime => "bad_time",
            ReadingError::UnitMismatch { .. } => "unit_mismatch",
            ReadingError::UnsupportedValue { .. } => "unsupported_value",
            ReadingError::OutOfRange { .. } => "out_of_range",
            ReadingError::NotWhole { .. } => "not_whole",
            ReadingError::InFuture { .. } => "time_in_future",
            ReadingError::TooOld { .. } => "time_too_old",
        }
    }
}

/// A reading or record refused inside an otherwise good message; `index` is its position
/// in the payload (in `readings` for compact JSON, in the pack for SenML).
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedReading {
    pub index: usize,
    pub error: ReadingError,
}

/// The outcome of decoding one payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub format: Format,
    pub seq: Option<Seq>,
    pub readings: Vec<Reading>,
    /// Position in the payload of each accepted reading (parallel to `readings`).
    pub positions: Vec<usize>,
    pub rejected: Vec<RejectedReading>,
}

/// Decode a telemetry payload for `device`. `now` resolves SenML relative times.
pub fn decode(payload: &[u8], device: &DeviceId, now: EventTime) -> Result<Decoded, DecodeError> {
    let first =
        payload.iter().copied().find(|b| !b.is_ascii_whitespace()).ok_or(DecodeError::Empty)?;
    match first {
        b'{' => decode_compact(payload, device),
        b'[' => {
            let records = senml::parse(payload)?;
            let pack = senml::resolve(&records, now)?;
            Ok(senml::to_readings(pack, device))
        }
        other => Err(DecodeError::UnknownFormat(other)),
    }
}

/// A timestamp as written in compact JSON: Unix milliseconds or RFC 3339.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeField {
    Millis(i64),
    Rfc3339(String),
}

impl TimeField {
    fn resolve(&self) -> Result<EventTime, TimeError> {
        match self {
            TimeField::Millis(ms) => EventTime::from_millis(*ms),
            TimeField::Rfc3339(s) => EventTime::parse_rfc3339(s),
        }
    }
}

impl Serialize for TimeField {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TimeField::Millis(ms) => s.serialize_i64(*ms),
            TimeField::Rfc3339(text) => s.serialize_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for TimeField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TimeField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("Unix milliseconds or an RFC 3339 string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimeField, E> {
                Ok(TimeField::Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeField, E> {
                i64::try_from(v)
                    .map(TimeField::Millis)
                    .map_err(|_| E::custom("timestamp out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TimeField, E> {
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(TimeField::Millis(v as i64))
                } else {
                    Err(E::custom(format_args!(
                        "timestamp {v} is not a whole number of milliseconds"
                    )))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TimeField, E> {
                Ok(TimeField::Rfc3339(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A value in compact JSON: a number, or a boolean for bool metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CompactValue(f64);

impl<'de> Deserialize<'de> for CompactValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = CompactValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a boolean")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<CompactValue, E> {
                Ok(CompactValue(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CompactValue, E> {
                Ok(CompactValue(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<CompactValue, E> {
                Ok(CompactValue(v as f64))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<CompactValue, E> {
                Ok(CompactValue(if v { 1.0 } else { 0.0 }))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireMessage {
    seq: Option<u64>,
    ts: Option<TimeField>,
    readings: Vec<WireReading>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireReading {
    m: String,
    v: CompactValue,
    t: Option<TimeField>,
}

/// The message fields of compact JSON, with its readings left undecoded: the slow path
/// for a message whose typed decoding failed, to find which readings are at fault.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LooseMessage {
    seq: Option<u64>,
    ts: Option<TimeField>,
    readings: Vec<serde_json::Value>,
}

fn decode_compact(payload: &[u8], device: &DeviceId) -> Result<Decoded, DecodeError> {
    // Typed decoding first: the common case, and the fast one. Only a message it refuses
    // for its content is read again, loosely, to tell message errors from reading errors.
    let (seq, ts, wire) = match serde_json::from_slice::<WireMessage>(payload) {
        Ok(msg) => (msg.seq, msg.ts, msg.readings.into_iter().map(Ok).collect::<Vec<_>>()),
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            let loose = match serde_json::from_slice::<LooseMessage>(payload) {
                Ok(loose) => loose,
                Err(again) if again.classify() == serde_json::error::Category::Data => {
                    return Err(DecodeError::from_json(again))
                }
                // Too deep to read as values: keep the first answer.
                Err(_) => return Err(DecodeError::from_json(e)),
            };
            let wire = loose.readings.iter().map(wire_reading).collect();
            (loose.seq, loose.ts, wire)
        }
        Err(e) => return Err(DecodeError::from_json(e)),
    };
    let seq = seq.map(Seq);
    let base = ts.as_ref().map(TimeField::resolve);
    let mut readings = Vec::with_capacity(wire.len());
    let mut positions = Vec::with_capacity(wire.len());
    let mut rejected = Vec::new();
    for (index, r) in wire.into_iter().enumerate() {
        let reading = r.and_then(|r| {
            let time = match (&r.t, &base) {
                (Some(t), _) => t.resolve().map_err(ReadingError::Time),
                (None, Some(base)) => base.clone().map_err(ReadingError::Time),
                (None, None) => Err(ReadingError::MissingTime),
            };
            let metric = r.m.parse::<MetricId>().map_err(|e| ReadingError::UnknownMetric(e.0))?;
            Ok(Reading { device: device.clone(), metric, time: time?, value: r.v.0, seq })
        });
        match reading {
            Ok(reading) => {
                readings.push(reading);
                positions.push(index);
            }
            Err(error) => rejected.push(RejectedReading { index, error }),
        }
    }
    Ok(Decoded { format: Format::Compact, seq, readings, positions, rejected })
}

const COMPACT_TIME: &str = "Unix milliseconds or an RFC 3339 string";

/// One reading of a loosely read message, or the first thing wrong with it.
fn wire_reading(value: &serde_json::Value) -> Result<WireReading, ReadingError> {
    use serde_json::Value;
    let Value::Object(fields) = value else { return Err(ReadingError::NotObject) };
    if let Some(unknown) = fields.keys().find(|k| !matches!(k.as_str(), "m" | "v" | "t")) {
        return Err(ReadingError::UnknownField(unknown.chars().take(32).collect()));
    }
    let m = match fields.get("m") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(ReadingError::FieldType { field: "m", expected: "a string" }),
        None => return Err(ReadingError::MissingField("m")),
    };
    let v = match fields.get("v") {
        Some(v @ (Value::Number(_) | Value::Bool(_))) => {
            CompactValue::deserialize(v).map_err(|_| ReadingError::FieldType {
                field: "v",
                expected: "a number or a boolean",
            })?
        }
        Some(_) => {
            return Err(ReadingError::FieldType { field: "v", expected: "a number or a boolean" })
        }
        None => return Err(ReadingError::MissingField("v")),
    };
    let t = match fields.get("t") {
        None => None,
        Some(Value::String(s)) => Some(TimeField::Rfc3339(s.clone())),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(ms), _) => Some(TimeField::Millis(ms)),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Some(TimeField::Millis(f as i64))
            }
            (None, Some(f)) if f.fract() != 0.0 => {
                return Err(ReadingError::Time(TimeError::NotWhole(n.to_string())))
            }
            _ => return Err(ReadingError::Time(TimeError::OutOfRange(n.to_string()))),
        },
        Some(_) => return Err(ReadingError::FieldType { field: "t", expected: COMPACT_TIME }),
    };
    Ok(WireReading { m, v, t })
}

/// A compact message as a device writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompactMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<TimeField>,
    pub readings: Vec<CompactReading>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompactReading {
    pub m: MetricId,
    pub v: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub t: Option<TimeField>,
}

/// Encode a compact message. Non-finite values have no JSON form and are written as `null`,
/// which decoding refuses.
pub fn encode_compact(msg: &CompactMessage) -> Vec<u8> {
    serde_json::to_vec(msg).unwrap_or_default()
}

#[cfg(test)]
mod tests;
