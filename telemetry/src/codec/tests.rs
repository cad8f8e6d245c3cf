use proptest::prelude::*;

use super::*;
use crate::validate::{ValidationConfig, ValidationError, Validator};

fn dev() -> DeviceId {
    DeviceId::parse("loop-1").unwrap()
}

const NOW: EventTime = EventTime(1_763_892_000_123);

#[test]
fn spec_example_decodes() {
    let payload = br#"{"seq": 1842, "ts": 1763892000123, "readings": [{"m": "vehicle_count", "v": 14}, {"m": "speed_kmh", "v": 41.5, "t": 1763892000000}]}"#;
    let d = decode(payload, &dev(), NOW).unwrap();
    assert_eq!(d.format, Format::Compact);
    assert_eq!(d.seq, Some(Seq(1842)));
    assert_eq!(d.readings.len(), 2);
    assert_eq!(d.readings[0].metric, MetricId::VehicleCount);
    assert_eq!(d.readings[0].time, EventTime(1_763_892_000_123));
    assert_eq!(d.readings[0].value, 14.0);
    assert_eq!(d.readings[1].time, EventTime(1_763_892_000_000));
    assert_eq!(d.readings[1].value, 41.5);
    assert!(d.rejected.is_empty());
}

#[test]
fn rfc3339_and_bool_values() {
    let payload = br#"{"ts": "2025-11-23T10:00:00Z", "readings": [{"m": "occupied", "v": true}]}"#;
    let d = decode(payload, &dev(), NOW).unwrap();
    assert_eq!(d.readings[0].value, 1.0);
    assert_eq!(d.readings[0].time, EventTime(1_763_892_000_000));
    assert_eq!(d.seq, None);
}

#[test]
fn bad_readings_are_rejected_one_by_one() {
    let payload = br#"{"ts": 1763892000123, "readings": [{"m": "nope", "v": 1}, {"m": "speed_kmh", "v": 30}, {"m": "speed_kmh", "v": 3, "t": "soon"}]}"#;
    let d = decode(payload, &dev(), NOW).unwrap();
    assert_eq!(d.readings.len(), 1);
    assert_eq!(d.positions, vec![1]);
    assert_eq!(d.rejected.len(), 2);
    assert_eq!(d.rejected[0].index, 0);
    assert_eq!(d.rejected[0].error.code(), "unknown_metric");
    assert_eq!(d.rejected[1].index, 2);
    assert_eq!(d.rejected[1].error.code(), "bad_time");
}

#[test]
fn compact_reading_errors_refuse_only_their_reading() {
    let bad = [
        (r#"3"#, "not_an_object", "is not a JSON object"),
        (
            r#"{"m":"speed_kmh","v":"fast"}"#,
            "wrong_type",
            "field \"v\" must be a number or a boolean",
        ),
        (
            r#"{"m":"speed_kmh","v":null}"#,
            "wrong_type",
            "field \"v\" must be a number or a boolean",
        ),
        (r#"{"m":7,"v":1}"#, "wrong_type", "field \"m\" must be a string"),
        (
            r#"{"m":"speed_kmh","v":1,"t":[]}"#,
            "wrong_type",
            "field \"t\" must be Unix milliseconds or an RFC 3339 string",
        ),
        (
            r#"{"m":"speed_kmh","v":1,"t":1763892000000.5}"#,
            "bad_time",
            "timestamp 1763892000000.5 is not a whole number of milliseconds",
        ),
        (
            r#"{"m":"speed_kmh","v":1,"t":1e300}"#,
            "bad_time",
            "timestamp 1e+300 is outside years 1970..=9999",
        ),
        (r#"{"v":1}"#, "missing_field", "field \"m\" is missing"),
        (r#"{"m":"speed_kmh"}"#, "missing_field", "field \"v\" is missing"),
        (
            r#"{"m":"speed_kmh","v":1,"unit":"km/h"}"#,
            "unknown_field",
            "field \"unit\" is not part of the compact format",
        ),
    ];
    for (reading, code, text) in bad {
        let payload = format!(
            r#"{{"seq":7,"ts":1763892000123,"readings":[{{"m":"speed_kmh","v":30}},{reading},{{"m":"occupied","v":true,"t":1763892000000.0}}]}}"#
        );
        let d = decode(payload.as_bytes(), &dev(), NOW).unwrap();
        let got: Vec<_> = d.readings.iter().map(|r| (r.metric, r.value, r.time, r.seq)).collect();
        assert_eq!(
            got,
            vec![
                (MetricId::SpeedKmh, 30.0, EventTime(1_763_892_000_123), Some(Seq(7))),
                (MetricId::Occupied, 1.0, EventTime(1_763_892_000_000), Some(Seq(7))),
            ],
            "{payload}"
        );
        assert_eq!(d.positions, vec![0, 2], "{payload}");
        assert_eq!(d.rejected.len(), 1, "{payload}");
        assert_eq!((d.rejected[0].index, d.rejected[0].error.code()), (1, code), "{payload}");
        assert_eq!(d.rejected[0].error.to_string(), text, "{payload}");
    }
}

#[test]
fn missing_time_is_a_reading_error() {
    let d = decode(br#"{"readings": [{"m": "speed_kmh", "v": 3}]}"#, &dev(), NOW).unwrap();
    assert_eq!(d.rejected[0].error, ReadingError::MissingTime);
}

#[test]
fn malformed_payloads_name_the_problem() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty"),
        (b"   ", "empty"),
        (b"\x00\x01", "unknown_format"),
        (b"hello", "unknown_format"),
        (b"{\"readings\": [", "bad_json"),
        (b"{\"readings\": 3}", "bad_schema"),
        (b"{\"rdgs\": []}", "bad_schema"),
        (b"{\"readings\": [], \"extra\": 1}", "bad_schema"),
        (
            b"{\"seq\": \"1\", \"readings\": [{\"m\": \"speed_kmh\", \"v\": \"fast\"}]}",
            "bad_schema",
        ),
        (b"{\"ts\": [], \"readings\": [{\"m\": \"speed_kmh\", \"v\": \"fast\"}]}", "bad_schema"),
        (b"{\"readings\": [{\"m\": \"speed_kmh\", \"v\": NaN}]}", "bad_json"),
        (b"{\"readings\": [{\"m\": \"speed_kmh\", \"v\": 1e400}]}", "bad_json"),
        (b"[1, 2", "bad_json"),
        (b"[{\"bver\": 11, \"n\": \"speed_kmh\", \"v\": 1}]", "unsupported_version"),
    ];
    for (payload, code) in cases {
        let err = decode(payload, &dev(), NOW).unwrap_err();
        assert_eq!(err.code(), *code, "{:?} -> {err}", String::from_utf8_lossy(payload));
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let mut p = String::from("{\"readings\": [{\"m\": \"speed_kmh\", \"v\": ");
    p.push_str(&"[".repeat(100_000));
    let err = decode(p.as_bytes(), &dev(), NOW).unwrap_err();
    assert!(matches!(err, DecodeError::Json(_) | DecodeError::Schema(_)), "{err}");
}

#[test]
fn validator_checks_size_range_whole_and_skew() {
    let v = Validator::new(ValidationConfig { max_payload_bytes: 400, ..Default::default() });
    let big = vec![b' '; 401];
    assert_eq!(
        v.check(&big, &dev(), NOW).unwrap_err(),
        ValidationError::TooLarge { size: 401, limit: 400 }
    );

    let future = NOW.millis() + 11 * 60 * 1000;
    let old = NOW.millis() - 8 * 24 * 3600 * 1000;
    let payload = format!(
        r#"{{"ts": {}, "readings": [{{"m":"speed_kmh","v":300}},{{"m":"vehicle_count","v":2.5}},{{"m":"speed_kmh","v":40,"t":{future}}},{{"m":"speed_kmh","v":40,"t":{old}}},{{"m":"speed_kmh","v":40}}]}}"#,
        NOW.millis()
    );
    let d = v.check(payload.as_bytes(), &dev(), NOW).unwrap();
    let codes: Vec<_> = d.rejected.iter().map(|r| (r.index, r.error.code())).collect();
    assert_eq!(
        codes,
        vec![(0, "out_of_range"), (1, "not_whole"), (2, "time_in_future"), (3, "time_too_old")]
    );
    assert_eq!(d.readings.len(), 1);
    assert_eq!(d.positions, vec![4]);
}

fn arb_metric() -> impl Strategy<Value = MetricId> {
    prop::sample::select(MetricId::ALL.to_vec())
}

fn arb_time() -> impl Strategy<Value = TimeField> {
    prop_oneof![
        (0i64..253_402_300_799_999).prop_map(TimeField::Millis),
        (0i64..253_402_300_799_999).prop_map(|ms| TimeField::Rfc3339(EventTime(ms).to_rfc3339())),
    ]
}

fn arb_value() -> impl Strategy<Value = f64> {
    prop_oneof![any::<i32>().prop_map(f64::from), -1.0e12f64..1.0e12, Just(0.0), Just(-0.0)]
}

proptest! {
    #[test]
    fn compact_round_trip(
        seq in proptest::option::of(any::<u64>()),
        ts in arb_time(),
        readings in prop::collection::vec((arb_metric(), arb_value(), proptest::option::of(arb_time())), 0..20),
    ) {
        let msg = CompactMessage {
            seq,
            ts: Some(ts.clone()),
            readings: readings.iter().map(|(m, v, t)| CompactReading { m: *m, v: *v, t: t.clone() }).collect(),
        };
        let bytes = encode_compact(&msg);
        let d = decode(&bytes, &dev(), NOW).unwrap();
        prop_assert!(d.rejected.is_empty());
        prop_assert_eq!(d.seq, seq.map(Seq));
        prop_assert_eq!(d.readings.len(), readings.len());
        let base = ts.resolve().unwrap();
        for (got, (m, v, t)) in d.readings.iter().zip(&readings) {
            prop_assert_eq!(got.metric, *m);
            prop_assert_eq!(got.value, *v);
            prop_assert_eq!(got.time, t.as_ref().map_or(base, |t| t.resolve().unwrap()));
            prop_assert_eq!(&got.device, &dev());
        }
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes, &dev(), NOW);
    }

    #[test]
    fn decode_never_panics_on_json_like_input(s in r#"[\[\]{}",:0-9a-z.eE+\- ]{0,120}"#) {
        let _ = decode(s.as_bytes(), &dev(), NOW);
    }
}
