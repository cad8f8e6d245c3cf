//! Payload codecs. A telemetry payload is compact JSON (first byte `{`) or SenML JSON
//! (first byte `[`, RFC 8428). Decoding turns it into [`Reading`]s for the device named by
//! the topic; a reading that cannot be understood is returned as a [`RejectedReading`]
//! beside the good ones, so one bad value never costs the rest of the message.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, Seq};
use crate::metric::MetricId;
use crate::senml::{self, SenmlError};
use crate::time::{EventTime, TimeError};
use crate::Reading;

/// The two payload formats of SPEC §3.
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
    #[error("SenML: {0}")]
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
            DecodeError::Senml(_) => "bad_senml",
        }
    }

    fn from_json(e: serde_json::Error) -> Self {
        match e.classify() {
            serde_json::error::Category::Data => DecodeError::Schema(e.to_string()),
            _ => DecodeError::Json(e.to_string()),
        }
    }
}

/// Why a single reading inside a decodable message was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadingError {
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
            ReadingError::UnknownMetric(_) => "unknown_metric",
            ReadingError::Time(_) | ReadingError::MissingTime => "bad_time",
            ReadingError::UnitMismatch { .. } => "unit_mismatch",
            ReadingError::UnsupportedValue { .. } => "unsupported_value",
            ReadingError::NotFinite { .. } => "not_finite",
            ReadingError::OutOfRange { .. } => "out_of_range",
            ReadingError::NotWhole { .. } => "not_whole",
            ReadingError::InFuture { .. } => "time_in_future",
            ReadingError::TooOld { .. } => "time_too_old",
        }
    }
}

/// A reading refused inside an otherwise good message; `index` is its position in the payload.
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
            let resolved = senml::resolve(&records, now)?;
            Ok(senml::to_readings(resolved, device))
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

fn decode_compact(payload: &[u8], device: &DeviceId) -> Result<Decoded, DecodeError> {
    let msg: WireMessage = serde_json::from_slice(payload).map_err(DecodeError::from_json)?;
    let seq = msg.seq.map(Seq);
    let base = msg.ts.as_ref().map(TimeField::resolve);
    let mut readings = Vec::with_capacity(msg.readings.len());
    let mut positions = Vec::with_capacity(msg.readings.len());
    let mut rejected = Vec::new();
    for (index, r) in msg.readings.into_iter().enumerate() {
        let time = match (&r.t, &base) {
            (Some(t), _) => t.resolve().map_err(ReadingError::Time),
            (None, Some(base)) => base.clone().map_err(ReadingError::Time),
            (None, None) => Err(ReadingError::MissingTime),
        };
        let metric = r.m.parse::<MetricId>().map_err(|e| ReadingError::UnknownMetric(e.0));
        match (metric, time) {
            (Ok(metric), Ok(time)) => {
                readings.push(Reading { device: device.clone(), metric, time, value: r.v.0, seq });
                positions.push(index);
            }
            (Err(error), _) | (_, Err(error)) => rejected.push(RejectedReading { index, error }),
        }
    }
    Ok(Decoded { format: Format::Compact, seq, readings, positions, rejected })
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
#[allow(clippy::unwrap_used)]
mod tests;
