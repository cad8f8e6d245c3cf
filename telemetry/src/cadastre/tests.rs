use serde_json::json;

use super::*;
use crate::segment::{parse_geojson, FLORENCE_SEED};

fn cfg() -> CadastreConfig {
    CadastreConfig::default()
}

fn fc(features: Vec<Value>) -> String {
    json!({"type": "FeatureCollection", "features": features}).to_string()
}

fn line(id: Value, coords: Value) -> Value {
    json!({"type": "Feature", "properties": {"id": id, "name": "Via Test"},
           "geometry": {"type": "LineString", "coordinates": coords}})
}

#[test]
fn the_seed_file_imports_with_the_default_mapping() {
    let c = parse(FLORENCE_SEED, None, &cfg()).unwrap();
    let seed = parse_geojson(FLORENCE_SEED).unwrap();
    assert_eq!(c.crs, Crs::Wgs84);
    assert_eq!(c.segments.len(), seed.len());
    for (a, b) in c.segments.iter().zip(&seed) {
        assert_eq!(a.segment.id, b.id);
        assert_eq!(a.segment.coordinates, b.coordinates);
        assert_eq!((a.segment.lanes, a.segment.capacity_vph), (b.lanes, b.capacity_vph));
        assert_eq!(a.segment.free_flow_kmh, b.free_flow_kmh);
        // The measured length is close to the seed's stated one.
        assert!((a.segment.length_m - b.length_m).abs() / b.length_m < 0.1, "{}", b.id);
    }
}

#[test]
fn missing_attributes_are_defaulted_and_derived() {
    let text = fc(vec![
        json!({"type": "Feature", "properties": {"id": "A_1", "kind": "primary", "lanes": "2", "speed_limit_kmh": 50},
               "geometry": {"type": "LineString", "coordinates": [[11.25, 43.77], [11.26, 43.77]]}}),
        json!({"type": "Feature", "id": 42, "properties": {"one_way": "-1"},
               "geometry": {"type": "LineString", "coordinates": [[11.25, 43.78], [11.26, 43.78]]}}),
    ]);
    let c = parse(&text, None, &cfg()).unwrap();
    let a = &c.segments[0];
    assert_eq!(a.segment.id.as_str(), "a-1");
    assert_eq!(a.segment.name, "a-1");
    assert_eq!(
        (a.segment.lanes, a.segment.free_flow_kmh, a.segment.capacity_vph),
        (2, 45.0, 2100.0)
    );
    assert!(!a.one_way);
    let b = &c.segments[1];
    assert_eq!(b.segment.id.as_str(), "42");
    assert_eq!(b.segment.kind, "local");
    assert_eq!(
        (b.segment.lanes, b.segment.speed_limit_kmh, b.segment.capacity_vph),
        (1, 50.0, 600.0)
    );
    assert!(b.one_way);
    assert_eq!(b.segment.coordinates[0], [11.26, 43.78], "-1 reverses the line");
    assert!((b.segment.length_m - 802.8).abs() < 0.5, "{}", b.segment.length_m);
}

#[test]
fn every_error_is_named_with_its_feature() {
    let text = fc(vec![
        line(json!("ok"), json!([[11.25, 43.77], [11.26, 43.77]])),
        line(json!("short"), json!([[11.25, 43.77]])),
        line(json!("ok"), json!([[11.25, 43.70], [11.26, 43.70]])),
        json!({"type": "Feature", "properties": {"name": "no id"},
               "geometry": {"type": "LineString", "coordinates": [[11.25, 43.77], [11.26, 43.77]]}}),
        json!({"type": "Feature", "properties": {"id": "typed", "lanes": "many", "speed_limit_kmh": true},
               "geometry": {"type": "LineString", "coordinates": [[11.25, 43.77], [11.26, 43.77]]}}),
        line(json!("far"), json!([[681562.75, 4849145.56], [681600.0, 4849145.0]])),
        line(json!("dup-point"), json!([[11.25, 43.77], [11.25, 43.77], [11.26, 43.77]])),
        line(json!("fold"), json!([[11.25, 43.77], [11.26, 43.77], [11.25, 43.77]])),
        json!({"type": "Feature", "properties": {"id": "poly"}, "geometry": {"type": "Polygon", "coordinates": [[[11.0, 43.0], [11.1, 43.0], [11.0, 43.1], [11.0, 43.0]]]}}),
        json!({"type": "Feature", "properties": {"id": "Bad Id!"}, "geometry": {"type": "LineString", "coordinates": [[11.25, 43.77], [11.26, 43.77]]}}),
    ]);
    let CadastreError::Features { errors, total } = parse(&text, None, &cfg()).unwrap_err() else {
        panic!("expected feature errors")
    };
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(total, shown.len());
    let has = |index: usize, words: &str| {
        assert!(
            errors.iter().any(|e| e.index == index && e.to_string().contains(words)),
            "no error for feature {index} with {words:?} in {shown:#?}"
        )
    };
    has(1, "1 point(s)");
    has(2, "duplicate id: feature 0");
    has(3, "missing property \"id\"");
    has(4, "\"lanes\" is a string");
    has(4, "\"speed_limit_kmh\" is a boolean");
    has(5, "not a valid position after reprojection");
    has(6, "repeats point 0");
    has(7, "folds back");
    has(8, "\"Polygon\"");
    has(9, "not a segment id");
    assert!(shown.iter().all(|s| !s.starts_with("feature 0 ")), "{shown:#?}");
    assert!(shown.iter().any(|s| s.starts_with("feature 5 (id \"far\")")), "{shown:#?}");
}

#[test]
fn multilinestrings_join_end_to_end_or_are_refused() {
    let multi = |id: &str, parts: Value| {
        json!({"type": "Feature", "properties": {"id": id},
               "geometry": {"type": "MultiLineString", "coordinates": parts}})
    };
    let text = fc(vec![multi(
        "joined",
        json!([[[11.25, 43.77], [11.26, 43.77]], [[11.27, 43.78], [11.26, 43.77]]]),
    )]);
    let c = parse(&text, None, &cfg()).unwrap();
    assert_eq!(
        c.segments[0].segment.coordinates,
        vec![[11.25, 43.77], [11.26, 43.77], [11.27, 43.78]]
    );
    let text = fc(vec![multi(
        "gap",
        json!([[[11.25, 43.77], [11.26, 43.77]], [[11.27, 43.77], [11.28, 43.77]]]),
    )]);
    let err = parse(&text, None, &cfg()).unwrap_err();
    let CadastreError::Features { errors, .. } = &err else { panic!("{err}") };
    assert!(
        errors[0].to_string().contains("parts 0 and 1 do not join end to end (gap of 803.0 m)"),
        "{}",
        errors[0]
    );
}

#[test]
fn the_crs_comes_from_the_file_or_the_caller() {
    let features =
        vec![line(json!("utm"), json!([[681562.7519, 4849145.5591], [681600.0, 4849200.0]]))];
    let mut doc = json!({"type": "FeatureCollection", "features": features});
    let utm = parse(&doc.to_string(), Some(Crs::Rdn2008Utm32(7791)), &cfg()).unwrap();
    let [lon, lat] = utm.segments[0].segment.coordinates[0];
    assert!((lon - 11.256).abs() < 1e-6 && (lat - 43.7731).abs() < 1e-6, "{lon} {lat}");
    doc["crs"] = json!({"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::6707"}});
    let from_file = parse(&doc.to_string(), None, &cfg()).unwrap();
    assert_eq!(from_file.crs, Crs::Rdn2008Utm32(6707));
    assert_eq!(from_file.segments[0].segment.coordinates, utm.segments[0].segment.coordinates);
    let conflict = parse(&doc.to_string(), Some(Crs::MonteMarioItaly1), &cfg()).unwrap_err();
    assert!(matches!(conflict, CadastreError::CrsConflict { .. }), "{conflict}");
    doc["crs"] = json!({"type": "name", "properties": {"name": "EPSG:32632"}});
    let unknown = parse(&doc.to_string(), None, &cfg()).unwrap_err();
    assert!(unknown.to_string().contains("EPSG:32632"), "{unknown}");
}

#[test]
fn hostile_files_get_a_clear_error() {
    // Nesting far deeper than any geometry.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let text = format!(
        r#"{{"type":"FeatureCollection","features":[{{"type":"Feature","properties":{{"id":"x"}},"geometry":{{"type":"LineString","coordinates":{deep}}}}}]}}"#
    );
    assert!(matches!(parse(&text, None, &cfg()), Err(CadastreError::NotGeoJson(_))));
    // Huge coordinates.
    let text = fc(vec![line(json!("huge"), json!([[1e300, -1e300], [1.7e308, 1.7e308]]))]);
    let err = parse(&text, None, &cfg()).unwrap_err().to_string();
    assert!(err.contains("1 problem(s)"), "{err}");
    let err = parse(&text, Some(Crs::MonteMarioItaly1), &cfg()).unwrap_err().to_string();
    assert!(err.contains("1 problem(s)"), "{err}");
    // A line of a million points: refused by count, holding at most MAX_POINTS + 1.
    let mut text = String::from(
        r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"id":"long"},"geometry":{"type":"LineString","coordinates":["#,
    );
    for i in 0..1_000_000u32 {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!("[{},43.7]", 11.0 + f64::from(i) * 1e-7));
    }
    text.push_str("]}}]}");
    let CadastreError::Features { errors, .. } = parse(&text, None, &cfg()).unwrap_err() else {
        panic!("expected a feature error")
    };
    assert!(errors[0].problem.contains("1000000 points, at most 100000"), "{}", errors[0]);
    // Not a collection; not JSON.
    assert!(matches!(
        parse(r#"{"type":"Feature"}"#, None, &cfg()),
        Err(CadastreError::NotGeoJson(_))
    ));
    assert!(matches!(parse("\u{0}", None, &cfg()), Err(CadastreError::NotGeoJson(_))));
}
