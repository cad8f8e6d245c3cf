//! Every example of RFC 8428 §5.1 (§5.1.1 to §5.1.7) resolved, with the resolved values
//! the RFC gives (§5.1.4 is the resolved form of §5.1.3).

use super::*;

#[test]
fn rfc8428_5_1_1_single_datapoint_is_now() {
    let r = records(r#"[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]"#);
    assert_eq!(r, vec![num("urn:dev:ow:10e2073a01080063", "Cel", 23.1, NOW_S)]);
}

#[test]
fn rfc8428_5_1_2_multiple_datapoints_now() {
    let r = records(
        r#"[{"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
            {"n":"current","u":"A","v":1.2}]"#,
    );
    assert_eq!(
        r,
        vec![
            num("urn:dev:ow:10e2073a01080063:voltage", "V", 120.1, NOW_S),
            num("urn:dev:ow:10e2073a01080063:current", "A", 1.2, NOW_S),
        ]
    );
}

#[test]
fn rfc8428_5_1_2_multiple_datapoints_with_base_time_unit_and_version() {
    let r = records(
        r#"[
     {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,"bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},
     {"n":"current","t":-5,"v":1.2},
     {"n":"current","t":-4,"v":1.3},
     {"n":"current","t":-3,"v":1.4},
     {"n":"current","t":-2,"v":1.5},
     {"n":"current","t":-1,"v":1.6},
     {"n":"current","v":1.7}
    ]"#,
    );
    // Tue Jun 8 18:01:16.001 UTC 2010 and each second of the 5 before it.
    let n = |m: &str| format!("urn:dev:ow:10e2073a0108006:{m}");
    assert_resolved(
        &r,
        &[
            num(&n("voltage"), "V", 120.1, 1.276020076001e+09),
            num(&n("current"), "A", 1.2, 1.276020071001e+09),
            num(&n("current"), "A", 1.3, 1.276020072001e+09),
            num(&n("current"), "A", 1.4, 1.276020073001e+09),
            num(&n("current"), "A", 1.5, 1.276020074001e+09),
            num(&n("current"), "A", 1.6, 1.276020075001e+09),
            num(&n("current"), "A", 1.7, 1.276020076001e+09),
        ],
    );
}

#[test]
fn rfc8428_5_1_2_sensml_stream_has_the_base_name_as_name() {
    // The stream example, cut after its fourth record (the RFC shows "...").
    let r = records(
        r#"[
     {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,"bu":"%RH","v":21.2},
     {"t":10,"v":21.3},
     {"t":20,"v":21.4},
     {"t":30,"v":21.4}
    ]"#,
    );
    let n = "urn:dev:ow:10e2073a01080063";
    assert_resolved(
        &r,
        &[
            num(n, "%RH", 21.2, 1.320067464e+09),
            num(n, "%RH", 21.3, 1.320067474e+09),
            num(n, "%RH", 21.4, 1.320067484e+09),
            num(n, "%RH", 21.4, 1.320067494e+09),
        ],
    );
}

/// RFC 8428 §5.1.3 (humidity, position and battery of a mobile device).
const RFC_5_1_3: &str = r#"[
     {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,"bu":"%RH","v":20},
     {"u":"lon","v":24.30621},
     {"u":"lat","v":60.07965},
     {"t":60,"v":20.3},
     {"u":"lon","t":60,"v":24.30622},
     {"u":"lat","t":60,"v":60.07965},
     {"t":120,"v":20.7},
     {"u":"lon","t":120,"v":24.30623},
     {"u":"lat","t":120,"v":60.07966},
     {"u":"%EL","t":150,"v":98},
     {"t":180,"v":21.2},
     {"u":"lon","t":180,"v":24.30628},
     {"u":"lat","t":180,"v":60.07967}
    ]"#;

/// RFC 8428 §5.1.4: the example of §5.1.3 in resolved form.
const RFC_5_1_4: &str = r#"[
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,"v":20},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,"v":24.30621},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,"v":60.07965},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,"v":20.3},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,"v":24.30622},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,"v":60.07965},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,"v":20.7},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,"v":24.30623},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,"v":60.07966},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,"v":98},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,"v":21.2},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,"v":24.30628},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,"v":60.07967}
    ]"#;

#[test]
fn rfc8428_5_1_3_multiple_measurements_name_from_base_only() {
    let r = records(RFC_5_1_3);
    let n = "urn:dev:ow:10e2073a01080063";
    assert_eq!(r.len(), 13);
    assert_eq!(r[0], num(n, "%RH", 20.0, 1.320067464e+09));
    assert_eq!(r[1], num(n, "lon", 24.30621, 1.320067464e+09));
    assert_eq!(r[3], num(n, "%RH", 20.3, 1.320067524e+09));
    assert_eq!(r[9], num(n, "%EL", 98.0, 1.320067614e+09));
    assert_eq!(r[12], num(n, "lat", 60.07967, 1.320067644e+09));
}

#[test]
fn rfc8428_5_1_4_resolved_data_is_what_5_1_3_resolves_to() {
    let resolved = records(RFC_5_1_4);
    assert_resolved(&records(RFC_5_1_3), &resolved);
    // Resolved records resolve to themselves.
    let again: Vec<Value> = resolved
        .iter()
        .map(|r| {
            let SenmlValue::Number(v) = r.value else { panic!("{r:?}") };
            serde_json::json!({"n": r.name, "u": r.unit, "t": r.time, "v": v})
        })
        .collect();
    assert_eq!(resolve(&again, NOW).unwrap().records, resolved);
}

#[test]
fn rfc8428_5_1_5_multiple_data_types() {
    let pack = r#"[
     {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
     {"n":"label","vs":"Machine Room"},
     {"n":"open","vb":false},
     {"n":"nfv-reader","vd":"aGkgCg"}
    ]"#;
    let r = records(pack);
    let n = |m: &str| format!("urn:dev:ow:10e2073a01080063:{m}");
    let rec = |m: &str, unit: Option<&str>, value| ResolvedRecord {
        name: n(m),
        unit: unit.map(str::to_owned),
        value,
        time: NOW_S,
    };
    assert_eq!(
        r,
        vec![
            rec("temp", Some("Cel"), SenmlValue::Number(23.1)),
            rec("label", None, SenmlValue::String("Machine Room".into())),
            rec("open", None, SenmlValue::Bool(false)),
            rec("nfv-reader", None, SenmlValue::Data("aGkgCg".into())),
        ]
    );
}

#[test]
fn rfc8428_5_1_6_collection_of_resources_keeps_the_first_base_time() {
    let pack = r#"[
     {"bn":"2001:db8::2/","bt":1.320078429e+09,"n":"temperature","u":"Cel","v":25.2},
     {"n":"humidity","u":"%RH","v":30},
     {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
     {"n":"humidity","u":"%RH","v":67}
    ]"#;
    // The last record takes the base name of the third and the base time of the first.
    assert_eq!(
        records(pack),
        vec![
            num("2001:db8::2/temperature", "Cel", 25.2, 1.320078429e+09),
            num("2001:db8::2/humidity", "%RH", 30.0, 1.320078429e+09),
            num("2001:db8::1/temperature", "Cel", 12.3, 1.320078429e+09),
            num("2001:db8::1/humidity", "%RH", 67.0, 1.320078429e+09),
        ]
    );
}

#[test]
fn rfc8428_5_1_7_actuator_pack_starting_with_a_base_only_record() {
    let pack = resolve_str(
        r#"[
     {"bn":"urn:dev:ow:10e2073a01080063:"},
     {"n":"temp","u":"Cel","v":23.1},
     {"n":"heat","u":"/","v":1},
     {"n":"fan","u":"/","v":0}
    ]"#,
    )
    .unwrap();
    let n = |m: &str| format!("urn:dev:ow:10e2073a01080063:{m}");
    assert_eq!(
        pack,
        ResolvedPack {
            records: vec![
                num(&n("temp"), "Cel", 23.1, NOW_S),
                num(&n("heat"), "/", 1.0, NOW_S),
                num(&n("fan"), "/", 0.0, NOW_S),
            ],
            positions: vec![1, 2, 3],
            rejected: vec![],
        }
    );
}

#[test]
fn rfc8428_5_1_7_lights_switched_together() {
    let on = records(
        r#"[
     {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":1},
     {"n":"2001:db8::4","v":1}
    ]"#,
    );
    assert_eq!(
        on,
        vec![
            num("2001:db8::3", "/", 1.0, 1.320078429e+09),
            num("2001:db8::4", "/", 1.0, 1.320078429e+09),
        ]
    );
    let off = records(
        r#"[
     {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":0.5},
     {"n":"2001:db8::4","v":0.5},
     {"n":"2001:db8::3","t":0.1,"v":0},
     {"n":"2001:db8::4","t":0.1,"v":0}
    ]"#,
    );
    assert_resolved(
        &off,
        &[
            num("2001:db8::3", "/", 0.5, 1.320078429e+09),
            num("2001:db8::4", "/", 0.5, 1.320078429e+09),
            num("2001:db8::3", "/", 0.0, 1.3200784291e+09),
            num("2001:db8::4", "/", 0.0, 1.3200784291e+09),
        ],
    );
}
