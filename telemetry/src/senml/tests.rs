//! Resolution is checked on every example of RFC 8428 §5.1 (§5.1.1 to §5.1.7), with the
//! resolved values the RFC gives (§5.1.4 is the resolved form of §5.1.3); then the
//! version rules of §4.4, record errors against pack errors, and the mapping onto SCCR
//! metrics.
//!
//! The RFC's examples are in `tests/rfc8428.rs`; the rest is here.

use proptest::prelude::*;

use super::*;
use crate::codec::decode;

const NOW: EventTime = EventTime(1_763_892_000_000);
const NOW_S: f64 = 1_763_892_000.0;

fn resolve_str(s: &str) -> Result<ResolvedPack, SenmlError> {
    resolve(&parse(s.as_bytes())?, NOW)
}

/// The records of a pack that must resolve without a refused record.
fn records(s: &str) -> Vec<ResolvedRecord> {
    let pack = resolve_str(s).unwrap();
    assert_eq!(pack.rejected, vec![], "{s}");
    pack.records
}

fn num(name: &str, unit: &str, v: f64, t: f64) -> ResolvedRecord {
    ResolvedRecord {
        name: name.into(),
        unit: Some(unit.into()),
        value: SenmlValue::Number(v),
        time: t,
    }
}

/// Names, units and values exactly; times to the microsecond (they are sums of floats).
fn assert_resolved(got: &[ResolvedRecord], want: &[ResolvedRecord]) {
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!((&g.name, &g.unit, &g.value), (&w.name, &w.unit, &w.value), "record {i}");
        assert!((g.time - w.time).abs() < 1e-6, "record {i}: time {} vs {}", g.time, w.time);
    }
}

fn codes(rejected: &[RejectedReading]) -> Vec<(usize, &'static str)> {
    rejected.iter().map(|r| (r.index, r.error.code())).collect()
}
#[test]
fn base_only_records_set_bases_anywhere_in_the_pack() {
    let pack = resolve_str(
        r#"[{"bn":"a:","bt":1.7e9},{"n":"x","v":1},{"bn":"b:","bu":"Cel","bver":10},{"n":"y","v":2}]"#,
    )
    .unwrap();
    let x = ResolvedRecord {
        name: "a:x".into(),
        unit: None,
        value: SenmlValue::Number(1.0),
        time: 1.7e9,
    };
    assert_eq!(pack.records, vec![x, num("b:y", "Cel", 2.0, 1.7e9)]);
    assert_eq!(pack.positions, vec![1, 3]);
    assert_eq!(pack.rejected, vec![]);
    // A record with neither base nor regular fields is not base-only: it has no value, and
    // no name without a base name.
    let r = resolve_str(r#"[{},{"bn":"p:"},{},{"n":"x","v":1}]"#).unwrap();
    assert_eq!(codes(&r.rejected), vec![(0, "bad_name"), (2, "no_value")]);
    assert_eq!(r.positions, vec![3]);
}

#[test]
fn base_value_and_base_sum_are_added() {
    let r = records(
        r#"[{"bn":"x:","bv":100,"n":"a","v":1.5},{"n":"b","v":-2},{"n":"c","bs":10,"s":5}]"#,
    );
    assert_eq!(r[0].value, SenmlValue::Number(101.5));
    assert_eq!(r[1].value, SenmlValue::Number(98.0));
    assert_eq!(r[2].value, SenmlValue::Sum(15.0));
}

#[test]
fn version_must_be_a_positive_integer_we_understand() {
    let cases = [
        (
            r#"[{"bver":5.5,"n":"x","v":1}]"#,
            "bad_version",
            "record 0: bver must be a positive integer; got 5.5",
        ),
        (
            r#"[{"bver":0,"n":"x","v":1}]"#,
            "bad_version",
            "record 0: bver must be a positive integer; got 0",
        ),
        (
            r#"[{"bver":-3,"n":"x","v":1}]"#,
            "bad_version",
            "record 0: bver must be a positive integer; got -3",
        ),
        (
            r#"[{"bver":"10","n":"x","v":1}]"#,
            "bad_version",
            "record 0: bver must be a positive integer; got \"10\"",
        ),
        (
            r#"[{"bver":11,"n":"x","v":1}]"#,
            "unsupported_version",
            "record 0: version 11 is newer than 10",
        ),
    ];
    for (pack, code, text) in cases {
        let err = resolve_str(pack).unwrap_err();
        assert_eq!((err.code(), err.to_string().as_str()), (code, text), "{pack}");
    }
    for pack in [
        r#"[{"bver":1,"n":"x","v":1}]"#,
        r#"[{"bver":10,"n":"x","v":1}]"#,
        r#"[{"bver":10.0,"n":"x","v":1}]"#,
    ] {
        assert_eq!(resolve_str(pack).unwrap().records.len(), 1, "{pack}");
    }
}

#[test]
fn every_record_of_a_pack_has_the_same_version() {
    let refused = [
        // Implicit 10 in the first record, 5 in the second.
        (
            r#"[{"n":"x","v":1},{"bver":5,"n":"x","v":2}]"#,
            "record 1: version 5 differs from the pack's version 10 (RFC 8428 §4.4)",
        ),
        (
            r#"[{"bver":5,"n":"x","v":1},{"bver":6,"n":"x","v":2}]"#,
            "record 1: version 6 differs from the pack's version 5 (RFC 8428 §4.4)",
        ),
        (
            r#"[{"bver":5,"n":"x","v":1},{"n":"x","v":2},{"bver":10,"n":"x","v":3}]"#,
            "record 2: version 10 differs from the pack's version 5 (RFC 8428 §4.4)",
        ),
    ];
    for (pack, text) in refused {
        let err = resolve_str(pack).unwrap_err();
        assert_eq!((err.code(), err.to_string().as_str()), ("version_change", text), "{pack}");
    }
    for pack in [
        r#"[{"bver":5,"n":"x","v":1},{"n":"x","v":2}]"#,
        r#"[{"bver":5,"n":"x","v":1},{"bver":5,"n":"x","v":2}]"#,
        r#"[{"n":"x","v":1},{"bver":10,"n":"x","v":2}]"#,
    ] {
        assert_eq!(resolve_str(pack).unwrap().records.len(), 2, "{pack}");
    }
}

#[test]
fn pack_errors_refuse_the_pack_with_reasons() {
    let cases = [
        (r#"{"n":"x","v":1}"#, "bad_senml", "pack must be a JSON array of objects"),
        (
            r#"[{"n":"x","v":1},{"bn":7,"n":"y","v":1}]"#,
            "bad_base_field",
            "record 1: base field \"bn\" must be a string",
        ),
        (
            r#"[{"bt":"now","n":"x","v":1}]"#,
            "bad_base_field",
            "record 0: base field \"bt\" must be a number",
        ),
        (
            r#"[{"bu":1,"n":"x","v":1}]"#,
            "bad_base_field",
            "record 0: base field \"bu\" must be a string",
        ),
        (
            r#"[{"bv":true,"n":"x","v":1}]"#,
            "bad_base_field",
            "record 0: base field \"bv\" must be a number",
        ),
        (
            r#"[{"bs":[],"n":"x","v":1}]"#,
            "bad_base_field",
            "record 0: base field \"bs\" must be a number",
        ),
        (
            r#"[{"n":"x","v":1},{"bx_":1}]"#,
            "must_understand",
            "record 1: field \"bx_\" ends in '_', is not understood and may be a base field",
        ),
    ];
    for (pack, code, text) in cases {
        let err = resolve_str(pack).unwrap_err();
        assert_eq!((err.code(), err.to_string().as_str()), (code, text), "{pack}");
    }
    assert_eq!(resolve_str(r#"[{"n":"x","v":1}"#).unwrap_err().code(), "bad_json");
}

#[test]
fn record_errors_refuse_only_their_record() {
    let bad = [
        (r#"3"#, "not_an_object", "is not a JSON object"),
        (r#"{"n":"x","v":"1"}"#, "wrong_type", "field \"v\" must be a number"),
        (r#"{"n":7,"v":1}"#, "wrong_type", "field \"n\" must be a string"),
        (r#"{"n":"x","u":1,"v":1}"#, "wrong_type", "field \"u\" must be a string"),
        (r#"{"n":"x","vb":1}"#, "wrong_type", "field \"vb\" must be a boolean"),
        (r#"{"n":"x","v":1,"t":"now"}"#, "wrong_type", "field \"t\" must be a number"),
        (
            r#"{"n":"x","v":1,"foo_":2}"#,
            "must_understand",
            "field \"foo_\" ends in '_' and is not understood (RFC 8428 §4.4)",
        ),
        (
            r#"{"n":"a b","v":1}"#,
            "bad_name",
            "name \"p:a b\" is empty or has characters outside [A-Za-z0-9:./_-] (RFC 8428 §4.5.1)",
        ),
        (r#"{"n":"x"}"#, "no_value", "has no value (v, vs, vb, vd) and no sum (s)"),
        (
            r#"{"n":"x","v":1,"vb":true}"#,
            "two_values",
            "has more than one value field (v, vs, vb, vd)",
        ),
    ];
    for (record, code, text) in bad {
        let pack =
            format!(r#"[{{"bn":"p:","bt":1.7e9,"n":"a","v":1}},{record},{{"n":"b","v":2}}]"#);
        let r = resolve_str(&pack).unwrap();
        assert_eq!(r.positions, vec![0, 2], "{pack}");
        assert_eq!(
            r.records[1],
            ResolvedRecord {
                name: "p:b".into(),
                unit: None,
                value: SenmlValue::Number(2.0),
                time: 1.7e9
            }
        );
        assert_eq!(r.rejected.len(), 1, "{pack}");
        assert_eq!((r.rejected[0].index, r.rejected[0].error.code()), (1, code), "{pack}");
        assert_eq!(r.rejected[0].error.to_string(), text, "{pack}");
    }
    // The base value makes one record overflow, not the next.
    let r = resolve_str(r#"[{"bn":"p:","bv":1e308},{"n":"x","v":1e308},{"n":"y","v":-1e308}]"#)
        .unwrap();
    assert_eq!((codes(&r.rejected), r.positions), (vec![(1, "not_finite")], vec![2]));
    assert_eq!(r.rejected[0].error.to_string(), "value is not finite after adding the base value");
    assert_eq!(r.records[0].value, SenmlValue::Number(0.0));
    // A record with a bad name is refused, and its valid base fields still apply.
    let r = resolve_str(r#"[{"bn":"-bad:","n":"x","v":1},{"bn":"ok:","n":"y","v":2}]"#).unwrap();
    assert_eq!((codes(&r.rejected), r.positions), (vec![(0, "bad_name")], vec![1]));
    // An unknown field without '_' is ignored (RFC 8428 §4.4).
    assert_eq!(records(r#"[{"n":"x","v":1,"foo":2}]"#).len(), 1);
}

#[test]
fn senml_maps_names_units_and_bools_onto_metrics() {
    let dev = DeviceId::parse("aq-1").unwrap();
    let pack = br#"[
      {"bn":"urn:dev:mac:0024befffe804ff1:","bt":1763891990,"n":"speed_kmh","u":"m/s","v":10},
      {"n":"occupied","vb":true},
      {"n":"temperature_c","u":"Cel","v":12.5,"t":1},
      {"n":"humidity_pct","u":"Cel","v":50},
      {"n":"speed_kmh","vs":"fast"},
      {"n":"mystery","v":1}
    ]"#;
    let d = decode(pack, &dev, NOW).unwrap();
    assert_eq!(d.format, crate::codec::Format::Senml);
    assert_eq!(d.readings.len(), 3);
    assert_eq!(d.readings[0].metric, MetricId::SpeedKmh);
    assert_eq!(d.readings[0].value, 36.0);
    assert_eq!(d.readings[0].time, EventTime(1_763_891_990_000));
    assert_eq!(d.readings[1].value, 1.0);
    assert_eq!(d.readings[2].time, EventTime(1_763_891_991_000));
    assert_eq!(
        codes(&d.rejected),
        vec![(3, "unit_mismatch"), (4, "unsupported_value"), (5, "unknown_metric")]
    );
}

#[test]
fn decoding_a_pack_keeps_the_good_records_and_names_the_bad_in_order() {
    let dev = DeviceId::parse("aq-1").unwrap();
    let pack = br#"[
      {"bn":"urn:dev:mac:0024befffe804ff1:","bt":1763891990},
      {"n":"speed_kmh","v":40},
      {"n":"speed_kmh","v":"fast","t":1},
      {"n":"mystery","v":1,"t":2},
      {"n":"vehicle_count","v":3,"t":3},
      {"n":"no2_ugm3","v":1,"vb":true,"t":4}
    ]"#;
    let d = decode(pack, &dev, NOW).unwrap();
    let got: Vec<_> = d.readings.iter().map(|r| (r.metric, r.value, r.time)).collect();
    assert_eq!(
        got,
        vec![
            (MetricId::SpeedKmh, 40.0, EventTime(1_763_891_990_000)),
            (MetricId::VehicleCount, 3.0, EventTime(1_763_891_993_000)),
        ]
    );
    assert_eq!(d.positions, vec![1, 4]);
    assert_eq!(
        codes(&d.rejected),
        vec![(2, "wrong_type"), (3, "unknown_metric"), (5, "two_values")]
    );
}

proptest! {
    /// Writing a pack with base fields and with everything spelled out resolves the same.
    #[test]
    fn base_fields_resolve_like_explicit_fields(
        bt in 1.0e9f64..2.0e9,
        bv in -100.0f64..100.0,
        base_only in any::<bool>(),
        recs in prop::collection::vec((prop::sample::select(vec!["speed_kmh", "no2_ugm3", "temperature_c"]), -1000.0f64..1000.0, -3600i32..3600), 1..10),
    ) {
        let mut with_base = Vec::new();
        let mut explicit = Vec::new();
        if base_only {
            with_base.push(serde_json::json!({"bn": "dev:", "bt": bt, "bv": bv}));
        }
        for (i, (n, v, t)) in recs.iter().enumerate() {
            let mut rec = serde_json::json!({"n": n, "v": v, "t": t});
            if i == 0 && !base_only {
                rec["bn"] = "dev:".into();
                rec["bt"] = bt.into();
                rec["bv"] = bv.into();
            }
            with_base.push(rec);
            explicit.push(serde_json::json!({"n": format!("dev:{n}"), "v": bv + v, "t": bt + f64::from(*t)}));
        }
        let a = resolve(&with_base, NOW).unwrap();
        let b = resolve(&explicit, NOW).unwrap();
        prop_assert_eq!(a.records.len(), b.records.len());
        prop_assert!(a.rejected.is_empty());
        for (x, y) in a.records.iter().zip(&b.records) {
            prop_assert_eq!(&x.name, &y.name);
            prop_assert_eq!(&x.value, &y.value);
            prop_assert!((x.time - y.time).abs() < 1e-6);
        }
    }

    /// Relative times (below 2^28 s) are offsets from now; absolute ones are kept.
    #[test]
    fn relative_times_are_offsets_from_now(t in -1.0e6f64..2.6e8) {
        let r = records(&format!(r#"[{{"n":"x","v":1,"t":{t}}}]"#));
        prop_assert!((r[0].time - (t + NOW_S)).abs() < 1e-3);
    }

    /// Refusing records never moves the others: every index is either resolved or refused
    /// (base-only records aside), in order.
    #[test]
    fn every_record_is_resolved_or_refused_once(kinds in prop::collection::vec(0u8..4, 0..30)) {
        let pack: Vec<Value> = kinds.iter().map(|k| match k {
            0 => serde_json::json!({"n": "x", "v": 1}),
            1 => serde_json::json!({"n": "x", "v": "1"}),
            2 => serde_json::json!({"bn": "p:"}),
            _ => serde_json::json!(7),
        }).collect();
        let r = resolve(&pack, NOW).unwrap();
        let mut seen: Vec<usize> = r.positions.clone();
        seen.extend(r.rejected.iter().map(|x| x.index));
        seen.sort_unstable();
        let want: Vec<usize> = kinds.iter().enumerate().filter(|(_, k)| **k != 2).map(|(i, _)| i).collect();
        prop_assert_eq!(seen, want);
    }
}

mod rfc8428;
