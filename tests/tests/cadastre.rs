//! `sccr segments import` end to end on PostgreSQL, as an operator runs it: a file in each
//! coordinate system, a file with several mistakes (all named, nothing imported), a
//! re-import with a changed, a removed and an added segment (versions, retirement, kept
//! history and links), device linking with an ambiguous case, `--dry-run` and `--report`.
//! Hostile files are in the hostile-input catalogue (`hostile.rs`).

use std::path::{Path, PathBuf};
use std::process::Output;

use sccr_tests::{segments_import, text, TempDir, TestDb};
use serde_json::{json, Value};
use sqlx::PgPool;
use telemetry::cadastre::{Crs, Reprojector};

/// `sccr segments import ARGS` on `db` with an empty configuration (all defaults).
fn import(dir: &Path, db: &TestDb, args: &[&str]) -> Output {
    segments_import(dir, &db.url, "", args)
}

/// A few roads around the Duomo, WGS84, going east; `lat` sets where.
fn road(id: &str, name: &str, lat: f64) -> (String, String, Vec<[f64; 2]>) {
    (id.into(), name.into(), vec![[11.250, lat], [11.255, lat], [11.260, lat + 0.0005]])
}

/// A FeatureCollection of roads in `crs` (its `crs` member written when `named`).
fn file(
    dir: &Path,
    name: &str,
    roads: &[(String, String, Vec<[f64; 2]>)],
    crs: Crs,
    named: bool,
) -> PathBuf {
    let r = Reprojector::new(crs);
    let features: Vec<Value> = roads
        .iter()
        .map(|(id, name, coords)| {
            let c: Vec<[f64; 2]> = coords.iter().map(|p| r.from_wgs84(p[0], p[1]).unwrap()).collect();
            json!({"type": "Feature", "properties": {"id": id, "name": name, "kind": "secondary", "lanes": 2, "speed_limit_kmh": 50},
                   "geometry": {"type": "LineString", "coordinates": c}})
        })
        .collect();
    let mut doc = json!({"type": "FeatureCollection", "features": features});
    if named {
        doc["crs"] = json!({"type": "name", "properties": {"name": format!("urn:ogc:def:crs:EPSG::{}", crs.epsg())}});
    }
    let path = dir.join(name);
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

async fn coordinates(pool: &PgPool, id: &str) -> Vec<[f64; 2]> {
    let v: Value = sqlx::query_scalar("SELECT coordinates FROM road_segments WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn files_in_each_crs_import_and_a_bad_file_names_every_mistake_and_imports_nothing() {
    let db = TestDb::create().await.unwrap();
    let dir = TempDir::new("cadastre-crs").unwrap();
    let roads = [road("via-a", "Via A", 43.7731), road("via-b", "Via B", 43.7760)];
    let wgs = file(&dir.path, "wgs84.geojson", &roads, Crs::Wgs84, false);
    let o = import(&dir.path, &db, &[wgs.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).starts_with("added 2, changed 0, retired 0, unchanged 0"),
        "{}",
        text(&o.stdout)
    );
    let pool = PgPool::connect(&db.url).await.unwrap();
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM road_segments WHERE retired_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(live, 2, "the file's segments only: no seed in a store the cadastre fills");

    // The same roads in Monte Mario (crs member) and RDN2008 / UTM 32N (--crs) land
    // within a metre (Monte Mario) and a centimetre (UTM) of the WGS84 ones.
    let moved = |a: &[[f64; 2]], b: &[[f64; 2]]| {
        a.iter()
            .zip(b)
            .map(|(p, q)| ((p[0] - q[0]) * 80_000.0).hypot((p[1] - q[1]) * 111_000.0))
            .fold(0.0, f64::max)
    };
    for (crs, named, tol) in [
        (Crs::MonteMarioItaly1, true, 1.0),
        (Crs::Rdn2008Utm32(7791), false, 0.02),
        (Crs::Rdn2008Utm32(6707), true, 0.02),
    ] {
        let renamed: Vec<_> = roads
            .iter()
            .map(|(id, n, c)| (format!("{id}-{}", crs.epsg()), n.clone(), c.clone()))
            .collect();
        let path = file(&dir.path, &format!("{}.geojson", crs.epsg()), &renamed, crs, named);
        let crs_arg = format!("--crs=EPSG:{}", crs.epsg());
        let mut args = vec![path.to_str().unwrap()];
        if !named {
            args.push(&crs_arg);
        }
        let o = import(&dir.path, &db, &args);
        assert!(o.status.success(), "{crs}: {}", text(&o.stderr));
        assert!(
            text(&o.stdout).starts_with("added 2, changed 0, retired 2"),
            "{crs}: {}",
            text(&o.stdout)
        );
        for (id, _, wgs) in &renamed {
            let got = coordinates(&pool, id).await;
            let off = moved(&got, wgs);
            assert!(off < tol, "{crs} {id}: {off} m off");
        }
    }

    // Several mistakes: every one named with its feature, nothing imported.
    let before: Vec<(String, i32, Option<String>)> =
        sqlx::query_as("SELECT id, version, retired_at::text FROM road_segments ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let bad = dir.path.join("bad.geojson");
    std::fs::write(
        &bad,
        json!({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"id": "good", "name": "Good"}, "geometry": {"type": "LineString", "coordinates": [[11.25, 43.77], [11.26, 43.77]]}},
            {"type": "Feature", "properties": {"id": "one-point"}, "geometry": {"type": "LineString", "coordinates": [[11.25, 43.77]]}},
            {"type": "Feature", "properties": {"id": "good"}, "geometry": {"type": "LineString", "coordinates": [[11.25, 43.78], [11.26, 43.78]]}},
            {"type": "Feature", "properties": {"name": "No id"}, "geometry": {"type": "LineString", "coordinates": [[11.25, 43.77], [11.26, 43.77]]}},
            {"type": "Feature", "properties": {"id": "typed", "lanes": "two"}, "geometry": {"type": "LineString", "coordinates": [[11.25, 43.77], [11.26, 43.77]]}},
            {"type": "Feature", "properties": {"id": "projected"}, "geometry": {"type": "LineString", "coordinates": [[681562.0, 4849145.0], [681600.0, 4849145.0]]}}
        ]})
        .to_string(),
    )
    .unwrap();
    let report = dir.path.join("bad-report.json");
    let o = import(&dir.path, &db, &[bad.to_str().unwrap(), "--report", report.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    for line in [
        "feature 1 (id \"one-point\"): 1 point(s), a line needs at least 2",
        "feature 2 (id \"good\"): duplicate id: feature 0 has it too",
        "feature 3: missing property \"id\"",
        "feature 4 (id \"typed\"): property \"lanes\" is a string, expected a number",
        "feature 5 (id \"projected\"): point 0 (681562, 4849145) is not a valid position",
        "5 problem(s) in the features",
        "nothing imported",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["imported"], false);
    assert_eq!(r["errors"].as_array().unwrap().len(), 5, "{r}");
    assert_eq!(r["errors"][0]["index"], 1);
    let after: Vec<(String, i32, Option<String>)> =
        sqlx::query_as("SELECT id, version, retired_at::text FROM road_segments ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(before, after, "nothing imported");

    // An unknown CRS is named.
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&wgs).unwrap()).unwrap();
    doc["crs"] = json!({"type": "name", "properties": {"name": "EPSG:32633"}});
    std::fs::write(&bad, doc.to_string()).unwrap();
    let o = import(&dir.path, &db, &[bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("unknown coordinate reference system \"EPSG:32633\""),
        "{}",
        text(&o.stderr)
    );
    let o = import(&dir.path, &db, &[wgs.to_str().unwrap(), "--crs", "EPSG:9999"]);
    assert!(text(&o.stderr).contains("\"EPSG:9999\""), "{}", text(&o.stderr));
}

#[tokio::test]
async fn a_reimport_versions_changes_retires_what_is_gone_and_links_devices() {
    let db = TestDb::create().await.unwrap();
    let dir = TempDir::new("cadastre-reimport").unwrap();
    // Three parallel roads; c and d (added later) 20 m apart.
    let metre = 1.0 / 111_195.0;
    let a = road("via-a", "Via A", 43.7700);
    let b = road("via-b", "Via B", 43.7710);
    let c = road("via-c", "Via C", 43.7720);
    let d = road("via-d", "Via D", 43.7720 + 20.0 * metre);
    let first =
        file(&dir.path, "first.geojson", &[a.clone(), b.clone(), c.clone()], Crs::Wgs84, false);
    let o = import(&dir.path, &db, &[first.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let pool = PgPool::connect(&db.url).await.unwrap();

    // Devices: one 5 m from a (heading east), one between c and d, one far away, one on b
    // without a position, with a segment rollup row of b's history.
    for (id, seg, pos) in [
        ("loop-a", None, Some((11.2525, 43.7700 + 5.0 * metre, Some(85.0)))),
        ("loop-cd", None, Some((11.2525, 43.7720 + 10.0 * metre, None))),
        ("loop-far", None, Some((11.40, 43.90, None))),
        ("loop-b", Some("via-b"), None),
    ] {
        sqlx::query("INSERT INTO devices (id, kind, segment_id, lon, lat, bearing_deg) VALUES ($1, 'traffic_loop', $2, $3, $4, $5)")
            .bind(id)
            .bind(seg)
            .bind(pos.map(|p| p.0))
            .bind(pos.map(|p| p.1))
            .bind(pos.and_then(|p| p.2))
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO segment_rollup_1h (bucket, segment, metric, count, sum, min, max, last_value, last_time) VALUES (date_trunc('hour', now()), 'via-b', 'speed_kmh', 1, 40, 40, 40, 40, now())")
        .execute(&pool)
        .await
        .unwrap();

    // a renamed, b gone, c as it was, d new.
    let renamed = road("via-a", "Via Nuova", 43.7700);
    let second =
        file(&dir.path, "second.geojson", &[renamed, c.clone(), d.clone()], Crs::Wgs84, false);
    let report = dir.path.join("report.json");
    let dry = import(&dir.path, &db, &[second.to_str().unwrap(), "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(
        text(&dry.stdout)
            .starts_with("dry run, nothing written: added 1, changed 1, retired 1, unchanged 1"),
        "{}",
        text(&dry.stdout)
    );
    let version: i32 = sqlx::query_scalar("SELECT version FROM road_segments WHERE id = 'via-a'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(version, 1, "a dry run writes nothing");

    let o =
        import(&dir.path, &db, &[second.to_str().unwrap(), "--report", report.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.starts_with("added 1, changed 1, retired 1, unchanged 1; devices linked 1 (1 moved), ambiguous 1, unmatched 1"),
        "{out}"
    );
    assert!(out.contains("ambiguous: device loop-cd: via-c at 10.0 m, via-d at 10.0 m"), "{out}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["summary"]["retired_ids"], json!(["via-b"]));
    assert_eq!(r["summary"]["ambiguous"][0]["device"], "loop-cd");
    assert_eq!(r["summary"]["ambiguous"][0]["candidates"].as_array().unwrap().len(), 2);
    assert_eq!(r["summary"]["unmatched"], json!(["loop-far"]));

    let rows: Vec<(String, String, i32, bool)> = sqlx::query_as(
        "SELECT id, name, version, retired_at IS NOT NULL FROM road_segments ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected: Vec<(String, String, i32, bool)> = [
        ("via-a", "Via Nuova", 2, false),
        ("via-b", "Via B", 1, true),
        ("via-c", "Via C", 1, false),
        ("via-d", "Via D", 1, false),
    ]
    .into_iter()
    .map(|(id, name, v, r)| (id.to_owned(), name.to_owned(), v, r))
    .collect();
    assert_eq!(rows, expected);
    let links: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id, segment_id FROM devices ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<(String, Option<String>)> = [
        ("loop-a", Some("via-a")),
        ("loop-b", Some("via-b")),
        ("loop-cd", None),
        ("loop-far", None),
    ]
    .into_iter()
    .map(|(d, s)| (d.to_owned(), s.map(str::to_owned)))
    .collect();
    assert_eq!(
        links, expected,
        "linked by position, ambiguous and far left alone, the link without a position kept"
    );
    let history: i64 =
        sqlx::query_scalar("SELECT count(*) FROM segment_rollup_1h WHERE segment = 'via-b'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(history, 1, "a retired segment keeps its history");

    // Heading west, loop-a is not on the one-way eastbound a: unmatched at the next import.
    sqlx::query("UPDATE devices SET bearing_deg = 270, segment_id = NULL WHERE id = 'loop-a'")
        .execute(&pool)
        .await
        .unwrap();
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&second).unwrap()).unwrap();
    doc["features"][0]["properties"]["one_way"] = json!(true);
    std::fs::write(&second, doc.to_string()).unwrap();
    let o = import(&dir.path, &db, &[second.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("added 0, changed 1, retired 0, unchanged 2; devices linked 0 (0 moved), ambiguous 1, unmatched 2"), "{}", text(&o.stdout));
}
