//! `sccr segments import` of Shapefiles and GeoPackages on PostgreSQL, with fixtures
//! generated here: the same mapping, checks and CRS handling as GeoJSON (docs/cadastre.md).
//! A Shapefile in Monte Mario (its `.prj` as ESRI writes it) with the `.dbf`'s own field
//! names mapped in `[cadastre]`; one in RDN2008 / UTM 32N without `.prj` (`--crs`); one
//! with every kind of mistake (all named, nothing imported) and one with an unknown
//! `.prj`. A GeoPackage in EPSG:7791 with two feature tables (`--layer`), envelopes and a
//! MultiLineString; one whose CRS is only a WKT definition; one with a polygon.

use std::path::{Path, PathBuf};
use std::process::Output;

use sccr_tests::{segments_import, text, TempDir, TestDb};
use shapefile::dbase::{FieldValue, Record, TableWriterBuilder};
use shapefile::{Point, Polyline};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use telemetry::cadastre::{Crs, Reprojector};

/// The `.dbf` field names of the city's files, mapped.
const CONFIG: &str = r#"
[cadastre]
id_property = "ID"
name_property = "NOME"
class_property = "TIPO"
lanes_property = "CORSIE"
speed_limit_property = "VEL_MAX"
one_way_property = "SENSO"
"#;

const ESRI_MONTE_MARIO: &str = r#"PROJCS["Monte_Mario_Italy_1",GEOGCS["GCS_Monte_Mario",DATUM["D_Monte_Mario",SPHEROID["International_1924",6378388.0,297.0]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],PARAMETER["False_Easting",1500000.0],PARAMETER["False_Northing",0.0],PARAMETER["Central_Meridian",9.0],PARAMETER["Scale_Factor",0.9996],PARAMETER["Latitude_Of_Origin",0.0],UNIT["Meter",1.0]]"#;
const ESRI_WGS84: &str = r#"GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",6378137.0,298.257223563]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]]"#;

fn import(dir: &Path, db: &TestDb, args: &[&str]) -> Output {
    segments_import(dir, &db.url, CONFIG, args)
}

/// A road of the fixtures: id (None: missing), name, lanes and its parts in WGS84.
struct Road {
    id: Option<&'static str>,
    name: &'static str,
    lanes: f64,
    parts: Vec<Vec<[f64; 2]>>,
}

fn road(id: &'static str, name: &'static str, lat: f64) -> Road {
    Road {
        id: Some(id),
        name,
        lanes: 2.0,
        parts: vec![vec![[11.250, lat], [11.255, lat], [11.260, lat + 0.0005]]],
    }
}

/// Via B in two parts that join end to end.
fn two_parts(id: &'static str, lat: f64) -> Road {
    Road {
        id: Some(id),
        name: "Via in due parti",
        lanes: 1.0,
        parts: vec![
            vec![[11.250, lat], [11.253, lat]],
            vec![[11.253, lat], [11.256, lat + 0.0004], [11.259, lat]],
        ],
    }
}

/// Write `roads` as a Shapefile in `crs`, with `prj` as its `.prj` when given.
fn shapefile(dir: &Path, name: &str, roads: &[Road], crs: Crs, prj: Option<&str>) -> PathBuf {
    let path = dir.join(name);
    let r = Reprojector::new(crs);
    let table = TableWriterBuilder::new()
        .add_character_field("ID".try_into().unwrap(), 40)
        .add_character_field("NOME".try_into().unwrap(), 80)
        .add_character_field("TIPO".try_into().unwrap(), 20)
        .add_numeric_field("CORSIE".try_into().unwrap(), 4, 0)
        .add_numeric_field("VEL_MAX".try_into().unwrap(), 6, 1)
        .add_character_field("SENSO".try_into().unwrap(), 4);
    let mut w = shapefile::Writer::from_path(&path, table).unwrap();
    for road in roads {
        let parts: Vec<Vec<Point>> = road
            .parts
            .iter()
            .map(|part| {
                part.iter()
                    .map(|p| {
                        let [x, y] = r.from_wgs84(p[0], p[1]).unwrap();
                        Point::new(x, y)
                    })
                    .collect()
            })
            .collect();
        let mut rec = Record::default();
        rec.insert("ID".into(), FieldValue::Character(road.id.map(str::to_owned)));
        rec.insert("NOME".into(), FieldValue::Character(Some(road.name.into())));
        rec.insert("TIPO".into(), FieldValue::Character(Some("secondary".into())));
        rec.insert("CORSIE".into(), FieldValue::Numeric(Some(road.lanes)));
        rec.insert("VEL_MAX".into(), FieldValue::Numeric(Some(30.0)));
        rec.insert("SENSO".into(), FieldValue::Character(Some("no".into())));
        w.write_shape_and_record(&Polyline::with_parts(parts), &rec).unwrap();
    }
    drop(w);
    if let Some(prj) = prj {
        std::fs::write(path.with_extension("prj"), prj).unwrap();
    }
    path
}

/// A GeoPackage geometry blob: header (little endian, with an XY envelope when asked),
/// then little-endian WKB.
fn gpkg_blob(srs_id: i32, wkb: &[u8], envelope: Option<[f64; 4]>) -> Vec<u8> {
    let flags = 1u8 | if envelope.is_some() { 0b10 } else { 0 };
    let mut b = vec![b'G', b'P', 0, flags];
    b.extend(srs_id.to_le_bytes());
    for v in envelope.into_iter().flatten() {
        b.extend(v.to_le_bytes());
    }
    b.extend(wkb);
    b
}

fn wkb_line(points: &[[f64; 2]]) -> Vec<u8> {
    let mut b = vec![1u8];
    b.extend(2u32.to_le_bytes());
    b.extend((points.len() as u32).to_le_bytes());
    for p in points {
        b.extend(p[0].to_le_bytes());
        b.extend(p[1].to_le_bytes());
    }
    b
}

fn wkb_multi(parts: &[Vec<[f64; 2]>]) -> Vec<u8> {
    let mut b = vec![1u8];
    b.extend(5u32.to_le_bytes());
    b.extend((parts.len() as u32).to_le_bytes());
    for p in parts {
        b.extend(wkb_line(p));
    }
    b
}

/// A square polygon's WKB.
fn wkb_polygon() -> Vec<u8> {
    let ring = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]];
    let mut b = vec![1u8];
    b.extend(3u32.to_le_bytes());
    b.extend(1u32.to_le_bytes());
    b.extend((ring.len() as u32).to_le_bytes());
    for p in ring {
        b.extend(f64::to_le_bytes(p[0]));
        b.extend(f64::to_le_bytes(p[1]));
    }
    b
}

/// A GeoPackage with the feature tables `tables` (each: name and roads), their geometry
/// in `crs`, declared as `srs` (srs_id, organization, code, definition).
async fn geopackage(
    dir: &Path,
    name: &str,
    tables: &[(&str, &[Road])],
    crs: Crs,
    srs: (i32, &str, i32, &str),
    polygon: bool,
) -> PathBuf {
    let path = dir.join(name);
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    for sql in [
        "PRAGMA application_id = 1196444487",
        "CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT)",
        "CREATE TABLE gpkg_contents (table_name TEXT PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT, description TEXT DEFAULT '', last_change DATETIME, min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER)",
        "CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL, geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL)",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    sqlx::query("INSERT INTO gpkg_spatial_ref_sys VALUES ('fixture', ?1, ?2, ?3, ?4, NULL)")
        .bind(srs.0)
        .bind(srs.1)
        .bind(srs.2)
        .bind(srs.3)
        .execute(&mut conn)
        .await
        .unwrap();
    let r = Reprojector::new(crs);
    for (table, roads) in tables {
        sqlx::query(&format!(
            "CREATE TABLE {table} (fid INTEGER PRIMARY KEY AUTOINCREMENT, geom BLOB, ID TEXT, NOME TEXT, TIPO TEXT, CORSIE INTEGER, VEL_MAX REAL)"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO gpkg_contents (table_name, data_type, srs_id) VALUES (?1, 'features', ?2)",
        )
        .bind(table)
        .bind(srs.0)
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO gpkg_geometry_columns VALUES (?1, 'geom', 'MULTILINESTRING', ?2, 0, 0)",
        )
        .bind(table)
        .bind(srs.0)
        .execute(&mut conn)
        .await
        .unwrap();
        for (k, road) in roads.iter().enumerate() {
            let parts: Vec<Vec<[f64; 2]>> = road
                .parts
                .iter()
                .map(|p| p.iter().map(|q| r.from_wgs84(q[0], q[1]).unwrap()).collect())
                .collect();
            let all: Vec<[f64; 2]> = parts.iter().flatten().copied().collect();
            let env = [
                all.iter().map(|p| p[0]).fold(f64::MAX, f64::min),
                all.iter().map(|p| p[0]).fold(f64::MIN, f64::max),
                all.iter().map(|p| p[1]).fold(f64::MAX, f64::min),
                all.iter().map(|p| p[1]).fold(f64::MIN, f64::max),
            ];
            let wkb = if parts.len() == 1 { wkb_line(&parts[0]) } else { wkb_multi(&parts) };
            // Every other row with its envelope.
            let blob = gpkg_blob(srs.0, &wkb, (k % 2 == 0).then_some(env));
            sqlx::query(&format!(
                "INSERT INTO {table} (geom, ID, NOME, TIPO, CORSIE, VEL_MAX) VALUES (?1, ?2, ?3, 'secondary', ?4, 30.0)"
            ))
            .bind(blob)
            .bind(road.id)
            .bind(road.name)
            .bind(road.lanes as i64)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        if polygon {
            sqlx::query(&format!(
                "INSERT INTO {table} (geom, ID, NOME) VALUES (?1, 'piazza', 'Piazza')"
            ))
            .bind(gpkg_blob(srs.0, &wkb_polygon(), None))
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
    path
}

/// How far apart two lines are at their farthest point, metres.
fn off(a: &[[f64; 2]], b: &[[f64; 2]]) -> f64 {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    a.iter()
        .zip(b)
        .map(|(p, q)| ((p[0] - q[0]) * 80_000.0).hypot((p[1] - q[1]) * 111_000.0))
        .fold(0.0, f64::max)
}

async fn stored(pool: &PgPool, id: &str) -> (String, i32, f64, Vec<[f64; 2]>) {
    let (name, lanes, speed, coords): (String, i32, f64, serde_json::Value) = sqlx::query_as(
        "SELECT name, lanes, speed_limit_kmh, coordinates FROM road_segments WHERE id = $1 AND retired_at IS NULL",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    (name, lanes, speed, serde_json::from_value(coords).unwrap())
}

/// The WGS84 line a road becomes (its parts joined).
fn joined(r: &Road) -> Vec<[f64; 2]> {
    let mut line = r.parts[0].clone();
    for p in &r.parts[1..] {
        line.extend(p.iter().skip(1));
    }
    line
}

#[tokio::test]
async fn shapefiles_import_with_their_prj_and_mapping_and_every_mistake_is_named() {
    let db = TestDb::create().await.unwrap();
    let dir = TempDir::new("cadastre-shp").unwrap();
    let pool = PgPool::connect(&db.url).await.unwrap();
    let roads = [road("via-a", "Via Àlfa", 43.7731), two_parts("via-b", 43.7760)];

    // Monte Mario, named by the .prj as ESRI writes it.
    let mm =
        shapefile(&dir.path, "grafo-mm.shp", &roads, Crs::MonteMarioItaly1, Some(ESRI_MONTE_MARIO));
    let o = import(&dir.path, &db, &[mm.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("added 2, changed 0, retired 0"), "{}", text(&o.stdout));
    for r in &roads {
        let (name, lanes, speed, coords) = stored(&pool, r.id.unwrap()).await;
        assert_eq!((name.as_str(), lanes, speed), (r.name, r.lanes as i32, 30.0));
        let d = off(&coords, &joined(r));
        assert!(d < 1.0, "{}: {d} m off", r.id.unwrap());
    }

    // The same roads in RDN2008 / UTM 32N without .prj (--crs says it): both files
    // reproject to the same WGS84 points (to the stored 1e-7 degree), so nothing changes.
    let utm = shapefile(&dir.path, "grafo-utm.shp", &roads, Crs::Rdn2008Utm32(7791), None);
    let o = import(&dir.path, &db, &[utm.to_str().unwrap(), "--crs", "EPSG:7791"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).starts_with("added 0, changed 0, retired 0, unchanged 2"),
        "{}",
        text(&o.stdout)
    );
    for r in &roads {
        let d = off(&stored(&pool, r.id.unwrap()).await.3, &joined(r));
        assert!(d < 0.02, "{}: {d} m off", r.id.unwrap());
    }
    // The .prj and --crs must agree.
    let o = import(&dir.path, &db, &[mm.to_str().unwrap(), "--crs", "EPSG:7791", "--dry-run"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("the file says its CRS is EPSG:3003 but --crs says EPSG:7791"),
        "{}",
        text(&o.stderr)
    );

    // Every mistake named with its record, nothing imported.
    let before: Vec<(String, i32)> =
        sqlx::query_as("SELECT id, version FROM road_segments ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut repeat = road("repeat", "Un punto due volte", 43.78);
    let first = repeat.parts[0][0];
    repeat.parts[0].insert(1, first);
    let mut no_id = road("x", "Senza id", 43.781);
    no_id.id = None;
    let mut nine_lanes = road("corsie", "Troppe corsie", 43.782);
    nine_lanes.lanes = 40.0;
    let mut gap = two_parts("gap", 43.783);
    gap.parts[1][0][1] += 0.001;
    let bad_roads =
        [road("dup", "Uno", 43.779), repeat, road("dup", "Due", 43.784), no_id, nine_lanes, gap];
    let bad = shapefile(&dir.path, "bad.shp", &bad_roads, Crs::Wgs84, Some(ESRI_WGS84));
    let o = import(&dir.path, &db, &[bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    for line in [
        "feature 1 (id \"repeat\"): point 1 repeats point 0 (a zero-length step)",
        "feature 2 (id \"dup\"): duplicate id: feature 0 has it too",
        "feature 3: missing property \"ID\"",
        "feature 4 (id \"corsie\"): property \"CORSIE\" is 40, outside 1..=16",
        "feature 5 (id \"gap\"): MultiLineString parts 0 and 1 do not join end to end",
        "5 problem(s) in the features",
        "nothing imported",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    let after: Vec<(String, i32)> =
        sqlx::query_as("SELECT id, version FROM road_segments ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(before, after, "nothing imported");

    // A .prj of a system the importer does not know is named; so is a missing .dbf.
    let other = shapefile(
        &dir.path,
        "other.shp",
        &roads,
        Crs::Wgs84,
        Some(r#"PROJCS["ETRS89_UTM_zone_33N",GEOGCS["GCS_ETRS_1989"]]"#),
    );
    let o = import(&dir.path, &db, &[other.to_str().unwrap()]);
    assert!(
        text(&o.stderr).contains("unknown coordinate reference system \"ETRS89_UTM_zone_33N\""),
        "{}",
        text(&o.stderr)
    );
    std::fs::remove_file(other.with_extension("dbf")).unwrap();
    std::fs::remove_file(other.with_extension("prj")).unwrap();
    let o = import(&dir.path, &db, &[other.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("the Shapefile cannot be read"), "{}", text(&o.stderr));
    // --layer is for GeoPackages.
    let o = import(&dir.path, &db, &[mm.to_str().unwrap(), "--layer", "strade"]);
    assert!(
        text(&o.stderr).contains("--layer names a GeoPackage's feature table"),
        "{}",
        text(&o.stderr)
    );
}

#[tokio::test]
async fn geopackages_import_their_feature_table_in_its_crs() {
    let db = TestDb::create().await.unwrap();
    let dir = TempDir::new("cadastre-gpkg").unwrap();
    let pool = PgPool::connect(&db.url).await.unwrap();
    let roads = [
        road("via-a", "Via Àlfa", 43.7731),
        two_parts("via-b", 43.7760),
        road("via-c", "Via Ci", 43.7790),
    ];
    let stops = [road("fermata", "Fermata", 43.77)];
    let utm = Crs::Rdn2008Utm32(7791);
    let epsg = (7791, "EPSG", 7791, "PROJCS[\"RDN2008 / UTM zone 32N\"]");
    let two = geopackage(
        &dir.path,
        "grafo.gpkg",
        &[("strade", &roads), ("fermate", &stops)],
        utm,
        epsg,
        false,
    )
    .await;

    // Two feature tables: name one.
    let o = import(&dir.path, &db, &[two.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("2 feature tables (fermate, strade): name one with --layer"),
        "{}",
        text(&o.stderr)
    );
    let o = import(&dir.path, &db, &[two.to_str().unwrap(), "--layer", "piazze"]);
    assert!(
        text(&o.stderr).contains("no feature table \"piazze\"; it has: fermate, strade"),
        "{}",
        text(&o.stderr)
    );
    let o = import(&dir.path, &db, &[two.to_str().unwrap(), "--layer", "strade"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("added 3, changed 0, retired 0"), "{}", text(&o.stdout));
    for r in &roads {
        let (name, lanes, speed, coords) = stored(&pool, r.id.unwrap()).await;
        assert_eq!((name.as_str(), lanes, speed), (r.name, r.lanes as i32, 30.0));
        let d = off(&coords, &joined(r));
        assert!(d < 0.02, "{}: {d} m off", r.id.unwrap());
    }
    // The geometry column's CRS beats no --crs, and must agree with one given.
    let o = import(
        &dir.path,
        &db,
        &[two.to_str().unwrap(), "--layer", "strade", "--crs", "EPSG:3003", "--dry-run"],
    );
    assert!(
        text(&o.stderr).contains("the file says its CRS is EPSG:7791 but --crs says EPSG:3003"),
        "{}",
        text(&o.stderr)
    );

    // A CRS given only by its WKT definition (another organisation): Monte Mario.
    let wkt = (100_003, "ACME", 1, ESRI_MONTE_MARIO);
    let mm = geopackage(
        &dir.path,
        "grafo-mm.gpkg",
        &[("strade", &roads)],
        Crs::MonteMarioItaly1,
        wkt,
        false,
    )
    .await;
    let report = dir.path.join("mm-report.json");
    let o = import(
        &dir.path,
        &db,
        &[mm.to_str().unwrap(), "--dry-run", "--report", report.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["crs"], "EPSG:3003", "{r}");
    assert_eq!(r["summary"]["dry_run"], true);

    // A polygon among the lines is named; nothing imported.
    let poly = geopackage(&dir.path, "piazza.gpkg", &[("strade", &roads)], utm, epsg, true).await;
    let o = import(&dir.path, &db, &[poly.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("feature 3 (id \"piazza\"): geometry is \"Polygon\", expected LineString or MultiLineString"),
        "{}",
        text(&o.stderr)
    );
    // Not a GeoPackage at all.
    let fake = dir.path.join("fake.gpkg");
    std::fs::write(&fake, "not sqlite").unwrap();
    let o = import(&dir.path, &db, &[fake.to_str().unwrap()]);
    assert!(text(&o.stderr).contains("the GeoPackage cannot be read"), "{}", text(&o.stderr));
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM road_segments WHERE retired_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(live, 3);
}
