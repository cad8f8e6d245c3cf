//! The payload codecs on arbitrary input: an answer (readings, rejected readings or an
//! error with its code) for every byte string, never a panic. The cargo-fuzz targets in
//! `fuzz/` explore the same functions for longer; these run in the normal suite.

use proptest::prelude::*;
use telemetry::{decode, senml, DeviceId, EventTime, ValidationConfig, Validator};

fn now() -> EventTime {
    EventTime::from_millis(1_764_000_000_000).expect("a valid time")
}

/// JSON-ish bytes: more likely than uniform bytes to get past the first checks.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("\"readings\"".to_owned()),
        Just("\"m\"".to_owned()),
        Just("\"v\"".to_owned()),
        Just("\"t\"".to_owned()),
        Just("\"ts\"".to_owned()),
        Just("\"seq\"".to_owned()),
        Just("\"bn\"".to_owned()),
        Just("\"bt\"".to_owned()),
        Just("\"bv\"".to_owned()),
        Just("\"bu\"".to_owned()),
        Just("\"bver\"".to_owned()),
        Just("\"n\"".to_owned()),
        Just("\"u\"".to_owned()),
        Just("\"s\"".to_owned()),
        Just("\"vs\"".to_owned()),
        Just("\"speed_kmh\"".to_owned()),
        Just("\"vehicle_count\"".to_owned()),
        Just("\"km/h\"".to_owned()),
        Just("true".to_owned()),
        Just("null".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        "[a-z_:/.\\-]{0,12}".prop_map(|s| format!("\"{s}\"")),
    ];
    prop::collection::vec(token, 0..60).prop_map(|t| t.concat().into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let device = DeviceId::parse("loop-1").unwrap();
        let _ = decode(&bytes, &device, now());
        let _ = Validator::new(ValidationConfig::default()).check(&bytes, &device, now());
    }

    #[test]
    fn decode_never_panics_on_json_like_bytes(bytes in jsonish()) {
        let device = DeviceId::parse("loop-1").unwrap();
        if let Ok(decoded) = decode(&bytes, &device, now()) {
            // Whatever was accepted is finite and carries a valid time.
            for r in &decoded.readings {
                prop_assert!(r.value.is_finite());
            }
        }
    }

    #[test]
    fn senml_never_panics_on_json_like_bytes(body in jsonish()) {
        let mut pack = b"[{".to_vec();
        pack.extend_from_slice(&body);
        let device = DeviceId::parse("loop-1").unwrap();
        for bytes in [&body, &pack] {
            if let Ok(records) = senml::parse(bytes) {
                if let Ok(resolved) = senml::resolve(&records, now()) {
                    let _ = senml::to_readings(resolved, &device);
                }
            }
        }
    }
}
