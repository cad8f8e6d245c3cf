//! The MQTT contract as data, for the documents that describe it (the API's docs page at
//! `/api/v1/docs`, checked against docs/mqtt-contract.md): the topics, every field of the
//! compact JSON, SenML, status, command and acknowledgement payloads with its type and
//! unit, and every dead-letter reason. The tests below tie each table to the codecs, so a
//! field or a reason the code gains or loses fails them until the table follows.

use crate::topic::TopicKind;

/// One field of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub required: bool,
    /// The JSON type(s) the field takes.
    pub kind: &'static str,
    /// What it means, with its unit.
    pub meaning: &'static str,
}

const fn field(
    name: &'static str,
    required: bool,
    kind: &'static str,
    meaning: &'static str,
) -> Field {
    Field { name, required, kind, meaning }
}

/// One topic of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicDoc {
    pub kind: TopicKind,
    pub direction: &'static str,
    /// QoS and retain flag.
    pub delivery: &'static str,
    pub payload: &'static str,
}

/// The four topics of a device, `sccr/v1/devices/{id}/{suffix}`.
pub const TOPICS: [TopicDoc; 4] = [
    TopicDoc {
        kind: TopicKind::Telemetry,
        direction: "device → core",
        delivery: "QoS 1, not retained",
        payload: "compact JSON or SenML JSON",
    },
    TopicDoc {
        kind: TopicKind::Status,
        direction: "device → core",
        delivery: "QoS 1, retained; also the device's Last Will",
        payload: "status object",
    },
    TopicDoc {
        kind: TopicKind::Commands,
        direction: "core → device",
        delivery: "QoS 1, not retained",
        payload: "command object",
    },
    TopicDoc {
        kind: TopicKind::CommandAck,
        direction: "device → core",
        delivery: "QoS 1, not retained",
        payload: "acknowledgement object",
    },
];

/// The unit of compact JSON times (`ts`, `t`).
pub const COMPACT_TIME: &str =
    "Unix milliseconds (an integer, or a number without fraction) or an RFC 3339 string with any offset";
/// The unit of SenML times (`bt`, `t`).
pub const SENML_TIME: &str =
    "seconds (fractions allowed, rounded to the millisecond); below 2^28 s relative to the time of receipt";

/// The fields of a compact JSON message (first byte `{`). Unknown fields refuse the
/// message (`bad_schema`).
pub const COMPACT_MESSAGE: [Field; 3] = [
    field(
        "seq",
        false,
        "integer ≥ 0",
        "The device's message counter; stored with each reading, not part of the dedupe key",
    ),
    field(
        "ts",
        false,
        "integer or string",
        "The time of every reading without its own t: Unix milliseconds or RFC 3339",
    ),
    field("readings", true, "array of readings", "The readings of the message"),
];

/// The fields of one compact reading. An unknown field refuses the reading
/// (`unknown_field`).
pub const COMPACT_READING: [Field; 3] = [
    field("m", true, "string", "A metric id of the catalogue"),
    field("v", true, "number or boolean", "The value in the metric's unit (true = 1, false = 0)"),
    field(
        "t",
        false,
        "integer or string",
        "The reading's time, wins over ts: Unix milliseconds or RFC 3339",
    ),
];

/// The SenML fields SCCR reads (RFC 8428); other fields are ignored, but a field ending
/// in `_` refuses its record (or the pack, when it starts with `b`).
pub const SENML: [Field; 15] = [
    field("bn", false, "string", "Base name, prefixed to every following n"),
    field("bt", false, "number", "Base time in seconds, added to every following t"),
    field("bu", false, "string", "Base unit of the following records without u"),
    field("bv", false, "number", "Base value, added to every following v"),
    field("bs", false, "number", "Base sum, added to every following s"),
    field("bver", false, "integer 1 to 10", "SenML version; the same in every record, 10 when absent"),
    field("n", false, "string", "Name; bn + n must start with a letter or digit and hold only A-Za-z0-9-:./_; the metric is the part after the last : or /"),
    field("u", false, "string", "Unit: the metric's unit or one of its accepted SenML units (converted); none means the catalogue's unit"),
    field("v", false, "number", "Value (plus bv); every record needs exactly one of v or vb"),
    field("vb", false, "boolean", "Boolean value, only for metrics of kind bool"),
    field("vs", false, "string", "String value: refused (unsupported_value)"),
    field("vd", false, "string", "Data value: refused (unsupported_value)"),
    field("s", false, "number", "Sum: ignored beside v, refused alone (unsupported_value)"),
    field("t", false, "number", "Time in seconds, added to bt"),
    field("ut", false, "number", "Update time: ignored"),
];

/// The fields of a status payload; other keys are ignored.
pub const STATUS: [Field; 3] = [
    field(
        "state",
        true,
        "\"online\" or \"offline\"",
        "Whether the device is connected; its Last Will says offline",
    ),
    field("fw", false, "string", "Firmware version (kept to 64 characters)"),
    field(
        "ts",
        false,
        "integer or string",
        "The device's time of the message: Unix milliseconds or RFC 3339",
    ),
];

/// The fields of a command sent to a device. Unknown fields are refused.
pub const COMMAND: [Field; 4] = [
    field("id", true, "string", "The command's UUID (1 to 128 characters on the wire), echoed in the acknowledgement"),
    field("name", true, "string", "What to do, matching [a-z0-9_]{1,64} (the edge agent knows set_interval, set_plan, reboot, ping)"),
    field("args", false, "object", "Arguments of the command (default {})"),
    field("expires_at", false, "integer or string", "After this time the device rejects it: Unix milliseconds (RFC 3339 also read)"),
];

/// The fields of a device's answer to a command.
pub const COMMAND_ACK: [Field; 3] = [
    field("id", true, "string", "The command's id"),
    field("result", true, "\"ok\", \"rejected\" or \"failed\"", "The outcome"),
    field("detail", false, "string", "Why, or what the device did"),
];

/// What a dead letter refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refuses {
    /// The whole payload.
    Message,
    /// One compact reading or SenML record; the rest of the message is stored.
    Record,
    /// The whole pack or one record, depending on the field.
    MessageOrRecord,
    /// One reading, refused by the store after validation.
    Reading,
}

impl Refuses {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Record => "record",
            Self::MessageOrRecord => "message or record",
            Self::Reading => "reading",
        }
    }
}

/// One dead-letter reason: the `reason` of a `dead_letters` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    pub code: &'static str,
    pub refuses: Refuses,
    pub cause: &'static str,
}

const fn reason(code: &'static str, refuses: Refuses, cause: &'static str) -> Reason {
    Reason { code, refuses, cause }
}

/// Every dead-letter reason, from the codecs (`code()` of [`crate::DecodeError`],
/// [`crate::senml::SenmlError`], [`crate::ReadingError`], [`crate::ValidationError`],
/// [`crate::StatusError`]), ingest's topic and command-answer checks, and the store's
/// retention check.
pub const DEAD_LETTER_REASONS: [Reason; 34] = [
    reason("bad_topic", Refuses::Message, "the topic is not sccr/v1/devices/{id}/{suffix} with a valid id and suffix"),
    reason("wrong_topic", Refuses::Message, "a valid topic of another kind where this one was expected"),
    reason("unknown_device", Refuses::Message, "ingest.unknown_devices = \"reject\" and the device is not registered"),
    reason("too_large", Refuses::Message, "over ingest.max_payload_bytes"),
    reason("empty", Refuses::Message, "no payload"),
    reason("unknown_format", Refuses::Message, "first byte neither { nor ["),
    reason("bad_json", Refuses::Message, "not JSON"),
    reason("bad_schema", Refuses::Message, "compact JSON whose message fields are wrong (seq, ts, readings, an unknown key)"),
    reason("bad_senml", Refuses::Message, "SenML that is not an array"),
    reason("bad_base_field", Refuses::Message, "a SenML base field of the wrong type"),
    reason("must_understand", Refuses::MessageOrRecord, "a field ending in _: the pack when it starts with b, else the record"),
    reason("bad_version", Refuses::Message, "bver is not a positive integer"),
    reason("unsupported_version", Refuses::Message, "bver above 10"),
    reason("version_change", Refuses::Message, "bver differs from the pack's version"),
    reason("not_an_object", Refuses::Record, "a reading or record that is not a JSON object"),
    reason("wrong_type", Refuses::Record, "a field of the wrong JSON type (m, v, t, n, u, vb, …)"),
    reason("missing_field", Refuses::Record, "compact m or v missing"),
    reason("unknown_field", Refuses::Record, "a compact reading field other than m, v, t"),
    reason("bad_name", Refuses::Record, "a SenML name that is empty or has characters outside A-Za-z0-9-:./_"),
    reason("no_value", Refuses::Record, "a SenML record without a value or sum"),
    reason("two_values", Refuses::Record, "more than one of v, vs, vb, vd"),
    reason("not_finite", Refuses::Record, "NaN or infinite, also after adding bv"),
    reason("unknown_metric", Refuses::Record, "not in the catalogue"),
    reason("bad_time", Refuses::Record, "a time that is not Unix ms (compact) or seconds (SenML) or RFC 3339, outside 1970..9999, or missing"),
    reason("unit_mismatch", Refuses::Record, "a SenML unit the metric does not accept"),
    reason("unsupported_value", Refuses::Record, "a SenML string, data or sum value, or vb on a metric that is not bool"),
    reason("out_of_range", Refuses::Record, "outside the metric's min..=max"),
    reason("not_whole", Refuses::Record, "a fraction on a count, bool or code metric"),
    reason("time_in_future", Refuses::Record, "further ahead than ingest.max_future_skew"),
    reason("time_too_old", Refuses::Record, "older than ingest.max_past_age"),
    reason("older_than_retention", Refuses::Reading, "older than the raw retention horizon (refused by the store)"),
    reason("bad_status", Refuses::Message, "a status payload that is not an object with a valid state"),
    reason("bad_timestamp", Refuses::Message, "a status ts that is neither Unix ms nor RFC 3339"),
    reason("bad_command_ack", Refuses::Message, "a command answer that is not {\"id\",\"result\",\"detail\"} or whose id is not 1 to 128 characters"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ReadingError;
    use crate::senml::SenmlError;
    use crate::{DecodeError, DeviceId, EventTime, MetricId, StatusError, TimeError};

    const CONTRACT_MD: &str = include_str!("../../docs/mqtt-contract.md");

    fn device() -> DeviceId {
        DeviceId::parse("loop-1").unwrap()
    }

    fn listed(code: &str) -> bool {
        DEAD_LETTER_REASONS.iter().any(|r| r.code == code)
    }

    /// One error of every variant (the match makes a new variant fail to compile here).
    fn every_reading_error() -> Vec<ReadingError> {
        let m = MetricId::SpeedKmh;
        let t = EventTime(0);
        let all = vec![
            ReadingError::NotObject,
            ReadingError::FieldType { field: "v", expected: "a number" },
            ReadingError::MissingField("m"),
            ReadingError::UnknownField("x".into()),
            ReadingError::MustUnderstand("x_".into()),
            ReadingError::BadName("".into()),
            ReadingError::NoValue,
            ReadingError::TwoValues,
            ReadingError::BaseOverflow,
            ReadingError::UnknownMetric("x".into()),
            ReadingError::Time(TimeError::NotWhole("1.5".into())),
            ReadingError::MissingTime,
            ReadingError::UnitMismatch { metric: m, unit: "x".into() },
            ReadingError::UnsupportedValue { metric: m, kind: "string" },
            ReadingError::NotFinite { metric: m },
            ReadingError::OutOfRange { metric: m, value: 1.0, min: 0.0, max: 0.0 },
            ReadingError::NotWhole { metric: m, value: 0.5 },
            ReadingError::InFuture { time: t, ahead_s: 1, limit_s: 0 },
            ReadingError::TooOld { time: t, age_s: 1, limit_s: 0 },
        ];
        for e in &all {
            match e {
                ReadingError::NotObject
                | ReadingError::FieldType { .. }
                | ReadingError::MissingField(_)
                | ReadingError::UnknownField(_)
                | ReadingError::MustUnderstand(_)
                | ReadingError::BadName(_)
                | ReadingError::NoValue
                | ReadingError::TwoValues
                | ReadingError::BaseOverflow
                | ReadingError::UnknownMetric(_)
                | ReadingError::Time(_)
                | ReadingError::MissingTime
                | ReadingError::UnitMismatch { .. }
                | ReadingError::UnsupportedValue { .. }
                | ReadingError::NotFinite { .. }
                | ReadingError::OutOfRange { .. }
                | ReadingError::NotWhole { .. }
                | ReadingError::InFuture { .. }
                | ReadingError::TooOld { .. } => {}
            }
        }
        all
    }

    fn every_message_error() -> Vec<DecodeError> {
        let senml = [
            SenmlError::Json(String::new()),
            SenmlError::NotArray,
            SenmlError::BaseField { index: 0, field: "bt", expected: "a number" },
            SenmlError::MustUnderstandBase { index: 0, field: "b_".into() },
            SenmlError::BadVersion { index: 0, version: "0".into() },
            SenmlError::Version { index: 0, version: 11 },
            SenmlError::VersionChange { index: 0, version: 9, pack: 10 },
        ];
        for e in &senml {
            match e {
                SenmlError::Json(_)
                | SenmlError::NotArray
                | SenmlError::BaseField { .. }
                | SenmlError::MustUnderstandBase { .. }
                | SenmlError::BadVersion { .. }
                | SenmlError::Version { .. }
                | SenmlError::VersionChange { .. } => {}
            }
        }
        let mut all = vec![
            DecodeError::Empty,
            DecodeError::UnknownFormat(b'x'),
            DecodeError::Json(String::new()),
            DecodeError::Schema(String::new()),
        ];
        all.extend(senml.into_iter().map(DecodeError::Senml));
        for e in &all {
            match e {
                DecodeError::Empty
                | DecodeError::UnknownFormat(_)
                | DecodeError::Json(_)
                | DecodeError::Schema(_)
                | DecodeError::Senml(_) => {}
            }
        }
        all
    }

    #[test]
    fn every_reason_the_code_gives_is_listed_once_and_in_the_contract_page() {
        let mut codes: Vec<&str> = every_reading_error().iter().map(ReadingError::code).collect();
        codes.extend(every_message_error().iter().map(DecodeError::code));
        codes.extend(
            [StatusError::BadJson(String::new()), StatusError::BadTime(String::new())]
                .iter()
                .map(StatusError::code),
        );
        codes.push(crate::ValidationError::TooLarge { size: 2, limit: 1 }.code());
        for code in &codes {
            assert!(listed(code), "{code} is not in DEAD_LETTER_REASONS");
        }
        let mut seen = std::collections::HashSet::new();
        for r in DEAD_LETTER_REASONS {
            assert!(seen.insert(r.code), "{} twice", r.code);
            let row = format!("| `{}` | {} |", r.code, r.refuses.as_str());
            assert!(CONTRACT_MD.contains(&row), "docs/mqtt-contract.md lacks the row {row}");
        }
    }

    #[test]
    fn every_metric_is_in_the_contract_page_with_its_unit_and_range() {
        let number = |v: f64| {
            let whole = v as i64;
            let digits = whole.unsigned_abs().to_string();
            let mut grouped = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    grouped.push(',');
                }
                grouped.push(c);
            }
            if whole < 0 {
                format!("-{grouped}")
            } else {
                grouped
            }
        };
        for &m in MetricId::ALL {
            let s = m.spec();
            let unit = if s.unit.is_empty() { "none".to_owned() } else { format!("`{}`", s.unit) };
            let row = format!("| `{}` | {unit} |", s.name);
            let line = CONTRACT_MD
                .lines()
                .find(|l| l.starts_with(&row))
                .unwrap_or_else(|| panic!("docs/mqtt-contract.md lacks {row}"));
            let tail = format!("| {} | {} | {} |", number(s.min), number(s.max), s.kind.as_str());
            assert!(line.ends_with(&tail), "{line} should end with {tail}");
            for (unit, _) in s.senml_units {
                assert!(line.contains(&format!("`{unit}`")), "{line} lacks {unit}");
            }
        }
    }

    #[test]
    fn every_documented_field_is_read_and_the_time_units_hold() {
        // Compact: every field at once; ts and t are milliseconds.
        let all = br#"{"seq":7,"ts":1763892000123,"readings":[{"m":"speed_kmh","v":40},{"m":"fault","v":true,"t":1763892000456}]}"#;
        let d = crate::decode(all, &device(), EventTime(1_763_892_001_000)).unwrap();
        assert_eq!(d.readings[0].time, EventTime(1_763_892_000_123));
        assert_eq!((d.readings[1].time, d.readings[1].value), (EventTime(1_763_892_000_456), 1.0));
        let names: Vec<&str> = COMPACT_MESSAGE.iter().map(|f| f.name).collect();
        assert_eq!(names, ["seq", "ts", "readings"]);
        let err = crate::decode(br#"{"ts":1,"readings":[],"x":1}"#, &device(), EventTime(0));
        assert_eq!(err.map_err(|e| e.code()).err(), Some("bad_schema"));
        let one = crate::decode(
            br#"{"ts":1763892000123,"readings":[{"m":"speed_kmh","v":1,"q":1}]}"#,
            &device(),
            EventTime(0),
        )
        .unwrap();
        assert_eq!(one.rejected[0].error.code(), "unknown_field");
        let names: Vec<&str> = COMPACT_READING.iter().map(|f| f.name).collect();
        assert_eq!(names, ["m", "v", "t"]);

        // SenML: bt and t are seconds; every label the resolver knows is documented.
        let pack = br#"[{"bn":"urn:dev:loop-1:","bt":1763891990,"bu":"km/h","bver":10},{"n":"speed_kmh","v":40,"t":2.5}]"#;
        let d = crate::decode(pack, &device(), EventTime(1_763_892_000_000)).unwrap();
        assert_eq!(d.readings[0].time, EventTime(1_763_891_992_500));
        for label in crate::senml::REGULAR.iter().chain(crate::senml::BASE.iter()) {
            assert!(SENML.iter().any(|f| f.name == *label), "SenML field {label} undocumented");
        }
        assert_eq!(SENML.len(), crate::senml::REGULAR.len() + crate::senml::BASE.len());

        // Status and commands: the documented fields are the ones read.
        let status =
            crate::decode_status(br#"{"state":"online","fw":"1.2.0","ts":1763892000123}"#).unwrap();
        assert_eq!(status.time, Some(EventTime(1_763_892_000_123)));
        let command = crate::command::Command::parse(
            br#"{"id":"c-1","name":"set_interval","args":{"interval":"10s"},"expires_at":1763892060000}"#,
        )
        .unwrap();
        assert_eq!(command.name, "set_interval");
        assert!(crate::command::Command::parse(br#"{"id":"c","name":"x","y":1}"#).is_err());
        let ack: crate::command::CommandAck =
            serde_json::from_str(r#"{"id":"c-1","result":"failed","detail":"no"}"#).unwrap();
        assert_eq!(ack.result, crate::command::CommandResult::Failed);
        assert_eq!(TOPICS.map(|t| t.kind), TopicKind::ALL);
    }
}
