//! Resolution is checked on the examples of RFC 8428 §5.1, with the resolved values the RFC
//! gives (§5.1.3 / §4.6), then the mapping onto SCCR metrics.

use proptest::prelude::*;

use super::*;
use crate::codec::decode;

const NOW: EventTime = EventTime(1_763_892_000_000);

fn resolve_str(s: &str) -> Result<Vec<ResolvedRecord>, SenmlError> {
    resolve(&parse(s.as_bytes())?, NOW)
}

fn num(name: &str, unit: &str, v: f64, t: f64) -> ResolvedRecord {
    ResolvedRecord {
        name: name.into(),
        unit: Some(unit.into()),
        value: SenmlValue::Number(v),
        time: t,
    }
}

#[test]
fn rfc8428_5_1_1_single_datapoint_is_now() {
    let r = resolve_str(r#"[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]"#).unwrap();
    assert_eq!(r, vec![num("urn:dev:ow:10e2073a01080063", "Cel", 23.1, 1_763_892_000.0)]);
}

#[test]
fn rfc8428_5_1_2_multiple_datapoints() {
    let r = resolve_str(
        r#"[{"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},{"n":"current","u":"A","v":1.2}]"#,
    )
    .unwrap();
    assert_eq!(
        r,
        vec![
            num("urn:dev:ow:10e2073a01080063:voltage", "V", 120.1, 1_763_892_000.0),
            num("urn:dev:ow:10e2073a01080063:current", "A", 1.2, 1_763_892_000.0),
        ]
    );
}

#[test]
fn rfc8428_5_1_3_multiple_measurements_resolve_as_the_rfc_says() {
    let pack = r#"[
     {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,"bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},
     {"n":"current","t":-5,"v":1.2},
     {"n":"current","t":-4,"v":1.3},
     {"n":"current","t":-3,"v":1.4},
     {"n":"current","t":-2,"v":1.5},
     {"n":"current","t":-1,"v":1.6},
     {"n":"current","v":1.7}
    ]"#;
    let r = resolve_str(pack).unwrap();
    // RFC 8428 §5.1.3, "resolved" form.
    let base = "urn:dev:ow:10e2073a0108006:";
    let expected = vec![
        num(&format!("{base}voltage"), "V", 120.1, 1.276020076001e+09),
        num(&format!("{base}current"), "A", 1.2, 1.276020071001e+09),
        num(&format!("{base}current"), "A", 1.3, 1.276020072001e+09),
        num(&format!("{base}current"), "A", 1.4, 1.276020073001e+09),
        num(&format!("{base}current"), "A", 1.5, 1.276020074001e+09),
        num(&format!("{base}current"), "A", 1.6, 1.276020075001e+09),
        num(&format!("{base}current"), "A", 1.7, 1.276020076001e+09),
    ];
    assert_eq!(r.len(), expected.len());
    for (got, want) in r.iter().zip(&expected) {
        assert_eq!(got.name, want.name);
        assert_eq!(got.unit, want.unit);
        assert_eq!(got.value, want.value);
        assert!((got.time - want.time).abs() < 1e-6, "{} vs {}", got.time, want.time);
    }
}

#[test]
fn rfc8428_5_1_5_multiple_data_types_and_name_from_base_only() {
    let pack = r#"[
     {"bn":"urn:dev:ow:10e2073a01080063:","bt":1.320067464e+09,"bu":"%RH","v":20.0},
     {"u":"lon","v":24.30621},
     {"u":"lat","v":60.07965},
     {"t":60,"v":20.3},
     {"u":"lon","t":60,"v":24.30622}
    ]"#;
    let r = resolve_str(pack).unwrap();
    let n = "urn:dev:ow:10e2073a01080063:";
    assert_eq!(r[0], num(n, "%RH", 20.0, 1.320067464e+09));
    assert_eq!(r[1], num(n, "lon", 24.30621, 1.320067464e+09));
    assert_eq!(r[3], num(n, "%RH", 20.3, 1.320067524e+09));
    assert_eq!(r[4], num(n, "lon", 24.30622, 1.320067524e+09));
}

#[test]
fn rfc8428_5_1_4_string_and_boolean_values() {
    let pack = r#"[
     {"bn":"urn:dev:ow:10e2073a01080063:","n":"temperature","u":"Cel","v":23.1},
     {"n":"label","vs":"Machine Room"},
     {"n":"open","vb":false},
     {"n":"nfc-reader","vd":"aGkgCg"}
    ]"#;
    let r = resolve_str(pack).unwrap();
    assert_eq!(r[1].value, SenmlValue::String("Machine Room".into()));
    assert_eq!(r[2].value, SenmlValue::Bool(false));
    assert_eq!(r[3].value, SenmlValue::Data("aGkgCg".into()));
}

#[test]
fn base_value_and_base_sum_are_added() {
    let r = resolve_str(
        r#"[{"bn":"x:","bv":100,"n":"a","v":1.5},{"n":"b","v":-2},{"n":"c","bs":10,"s":5}]"#,
    )
    .unwrap();
    assert_eq!(r[0].value, SenmlValue::Number(101.5));
    assert_eq!(r[1].value, SenmlValue::Number(98.0));
    assert_eq!(r[2].value, SenmlValue::Sum(15.0));
}

#[test]
fn invalid_packs_are_refused_with_reasons() {
    let cases = [
        (r#"{"n":"x","v":1}"#, "must be a JSON array"),
        (r#"[{"n":"x","v":1}"#, "not valid JSON"),
        (r#"[{"n":"x","v":1}, 3]"#, "record 1 is not a JSON object"),
        (r#"[{"n":"x","v":"1"}]"#, "must be a number"),
        (r#"[{"n":"x","v":1,"foo_":2}]"#, "not understood"),
        (r#"[{"n":"x","v":1,"bver":11}]"#, "newer than"),
        (r#"[{"bver":5,"n":"x","v":1},{"bver":6,"n":"x","v":1}]"#, "base version changes"),
        (r#"[{"n":"","v":1}]"#, "is empty or has characters"),
        (r#"[{"n":"-x","v":1}]"#, "is empty or has characters"),
        (r#"[{"n":"a b","v":1}]"#, "is empty or has characters"),
        (r#"[{"n":"x"}]"#, "has no value"),
        (r#"[{"n":"x","v":1,"vb":true}]"#, "more than one value"),
        (r#"[{"n":"x","vb":1}]"#, "must be a boolean"),
        (r#"[{"bv":1e308,"n":"x","v":1e308}]"#, "not finite"),
    ];
    for (pack, want) in cases {
        let err = resolve_str(pack).unwrap_err().to_string();
        assert!(err.contains(want), "{pack}: {err}");
    }
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
    let codes: Vec<_> = d.rejected.iter().map(|r| (r.index, r.error.code())).collect();
    assert_eq!(codes, vec![(3, "unit_mismatch"), (4, "unsupported_value"), (5, "unknown_metric")]);
}

proptest! {
    /// Writing a pack with base fields and with everything spelled out resolves the same.
    #[test]
    fn base_fields_resolve_like_explicit_fields(
        bt in 1.0e9f64..2.0e9,
        bv in -100.0f64..100.0,
        recs in prop::collection::vec((prop::sample::select(vec!["speed_kmh", "no2_ugm3", "temperature_c"]), -1000.0f64..1000.0, -3600i32..3600), 1..10),
    ) {
        let mut with_base = Vec::new();
        let mut explicit = Vec::new();
        for (i, (n, v, t)) in recs.iter().enumerate() {
            let mut rec = serde_json::json!({"n": n, "v": v, "t": t});
            if i == 0 {
                rec["bn"] = "dev:".into();
                rec["bt"] = bt.into();
                rec["bv"] = bv.into();
            }
            with_base.push(rec);
            explicit.push(serde_json::json!({"n": format!("dev:{n}"), "v": bv + v, "t": bt + f64::from(*t)}));
        }
        let a = resolve(&parse(serde_json::to_string(&with_base).unwrap().as_bytes()).unwrap(), NOW).unwrap();
        let b = resolve(&parse(serde_json::to_string(&explicit).unwrap().as_bytes()).unwrap(), NOW).unwrap();
        prop_assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            prop_assert_eq!(&x.name, &y.name);
            prop_assert_eq!(&x.value, &y.value);
            prop_assert!((x.time - y.time).abs() < 1e-6);
        }
    }

    /// Relative times (below 2^28 s) are offsets from now; absolute ones are kept.
    #[test]
    fn relative_times_are_offsets_from_now(t in -1.0e6f64..2.6e8) {
        let r = resolve_str(&format!(r#"[{{"n":"x","v":1,"t":{t}}}]"#)).unwrap();
        prop_assert!((r[0].time - (t + 1_763_892_000.0)).abs() < 1e-3);
    }
}
