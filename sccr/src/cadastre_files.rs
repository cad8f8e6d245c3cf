//! Road Cadastre files of other formats than GeoJSON, read into
//! [`SourceFeature`]s that then go through the GeoJSON import's mapping, checks and
//! reprojection ([`cadastre::parse_features`], docs/cadastre.md):
//!
//! - **Shapefile** (`.shp` with its `.dbf`, and `.prj` for the CRS), read with the
//!   `shapefile` crate: PolyLine shapes (M and Z too; their measures and heights are
//!   dropped), one part a LineString, several a MultiLineString; the `.dbf` attributes as
//!   properties (numbers, text trimmed, logicals, dates as `YYYY-MM-DD`).
//! - **GeoPackage** (`.gpkg`, SQLite) read with sqlx: the one feature table of
//!   `gpkg_contents` (or the one `--layer` names), its CRS from `gpkg_spatial_ref_sys`
//!   (an EPSG organisation code, else the WKT definition), each row's geometry blob (the
//!   GeoPackage header, then Well-Known Binary decoded with the `wkb` crate) and its other
//!   columns as properties.
//!
//! Each reader bounds what it reads: files of at most [`MAX_FILE_BYTES`], at most
//! [`cadastre::MAX_FEATURES`] features; a file it cannot read is a
//! [`CadastreError::Unreadable`] naming the format and what is wrong.

use std::path::Path;

use geo_traits::{CoordTrait, GeometryTrait, GeometryType, LineStringTrait, MultiLineStringTrait};
use serde_json::{json, Map, Value};
use shapefile::dbase::FieldValue;
use shapefile::Shape;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Column, ConnectOptions, Row, TypeInfo, ValueRef};
use telemetry::cadastre::{self, CadastreError, Crs, SourceFeature, SourceGeometry};

/// Largest cadastre file read, bytes (a city's road graph is tens of MiB).
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// The formats `sccr segments import` reads, by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    GeoJson,
    Shapefile,
    GeoPackage,
}

impl Format {
    /// `.geojson`/`.json`, `.shp`, `.gpkg` (any case).
    pub fn of(path: &Path) -> Result<Format, CadastreError> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "geojson" | "json" => Ok(Format::GeoJson),
            "shp" => Ok(Format::Shapefile),
            "gpkg" => Ok(Format::GeoPackage),
            other => Err(CadastreError::Unreadable {
                format: "file",
                message: format!(
                    "{}: unknown file type {other:?}; expected .geojson (or .json), .shp or .gpkg",
                    path.display()
                ),
            }),
        }
    }
}

fn unreadable(format: &'static str, message: impl Into<String>) -> CadastreError {
    CadastreError::Unreadable { format, message: message.into() }
}

/// Refuse a file over [`MAX_FILE_BYTES`] (or missing) before reading it.
fn check_size(format: &'static str, path: &Path) -> Result<(), CadastreError> {
    let len = std::fs::metadata(path)
        .map_err(|e| unreadable(format, format!("{}: {e}", path.display())))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(unreadable(
            format,
            format!("{} is larger than {} MiB", path.display(), MAX_FILE_BYTES / 1024 / 1024),
        ));
    }
    Ok(())
}

/// A whole number as an integer (so that an id read as 12.0 is "12"), else a float.
fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        json!(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// A `.dbf` field as the property mapping reads it.
fn field_json(v: FieldValue) -> Value {
    match v {
        FieldValue::Character(s) => s
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .map_or(Value::Null, Value::String),
        FieldValue::Memo(s) => Value::String(s.trim().to_owned()),
        FieldValue::Numeric(n) => n.map_or(Value::Null, number),
        FieldValue::Float(n) => n.map_or(Value::Null, |f| number(f64::from(f))),
        FieldValue::Integer(i) => json!(i),
        FieldValue::Double(f) | FieldValue::Currency(f) => number(f),
        FieldValue::Logical(b) => b.map_or(Value::Null, Value::Bool),
        FieldValue::Date(d) => d.map_or(Value::Null, |d| {
            json!(format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()))
        }),
        FieldValue::DateTime(_) => Value::Null,
    }
}

/// A polyline's parts as a LineString (one part) or MultiLineString.
fn polyline(parts: Vec<Vec<[f64; 2]>>) -> SourceGeometry {
    if parts.len() == 1 {
        SourceGeometry::LineString(parts.into_iter().next().unwrap_or_default())
    } else {
        SourceGeometry::MultiLineString(parts)
    }
}

/// The CRS a `.prj` beside the `.shp` names, if there is one.
fn prj_crs(path: &Path) -> Result<Option<Crs>, CadastreError> {
    let prj = path.with_extension("prj");
    match std::fs::metadata(&prj) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable("Shapefile", format!("{}: {e}", prj.display()))),
        Ok(m) if m.len() > 64 * 1024 => {
            return Err(unreadable("Shapefile", format!("{} is over 64 KiB", prj.display())))
        }
        Ok(_) => {}
    }
    let wkt = std::fs::read_to_string(&prj)
        .map_err(|e| unreadable("Shapefile", format!("{}: {e}", prj.display())))?;
    Ok(Some(Crs::from_wkt(&wkt)?))
}

/// Read a Shapefile (see the module doc): its features and the CRS of its `.prj`.
pub fn read_shapefile(path: &Path) -> Result<(Vec<SourceFeature>, Option<Crs>), CadastreError> {
    const FORMAT: &str = "Shapefile";
    check_size(FORMAT, path)?;
    check_size(FORMAT, &path.with_extension("dbf"))?;
    let crs = prj_crs(path)?;
    let mut reader = shapefile::Reader::from_path(path)
        .map_err(|e| unreadable(FORMAT, format!("{}: {e}", path.display())))?;
    let mut features = Vec::new();
    for (i, item) in reader.iter_shapes_and_records().enumerate() {
        if i >= cadastre::MAX_FEATURES {
            return Err(CadastreError::TooManyFeatures(i + 1));
        }
        let (shape, record) = item.map_err(|e| unreadable(FORMAT, format!("record {i}: {e}")))?;
        let xy = |parts: Vec<Vec<[f64; 2]>>| Some(polyline(parts));
        let geometry = match shape {
            Shape::NullShape => None,
            Shape::Polyline(p) => {
                xy(p.parts().iter().map(|l| l.iter().map(|q| [q.x, q.y]).collect()).collect())
            }
            Shape::PolylineM(p) => {
                xy(p.parts().iter().map(|l| l.iter().map(|q| [q.x, q.y]).collect()).collect())
            }
            Shape::PolylineZ(p) => {
                xy(p.parts().iter().map(|l| l.iter().map(|q| [q.x, q.y]).collect()).collect())
            }
            other => Some(SourceGeometry::Other(other.shapetype().to_string())),
        };
        let properties: Map<String, Value> =
            record.into_iter().map(|(k, v)| (k, field_json(v))).collect();
        features.push(SourceFeature { properties, geometry });
    }
    Ok((features, crs))
}

/// The geometry of a GeoPackage geometry blob: its header (magic `GP`, version, flags,
/// SRS id, optional envelope), then Well-Known Binary. `None` for an empty geometry.
pub fn gpkg_geometry(blob: &[u8]) -> Result<Option<SourceGeometry>, String> {
    if blob.len() < 8 || &blob[..2] != b"GP" {
        return Err("not a GeoPackage geometry blob (no GP header)".into());
    }
    let flags = blob[3];
    if flags & 0b0010_0000 != 0 {
        return Err("an extended GeoPackage geometry type".into());
    }
    let envelope = match (flags >> 1) & 0b111 {
        0 => 0,
        1 => 32,
        2 | 3 => 48,
        4 => 64,
        n => return Err(format!("envelope code {n} is not defined")),
    };
    if flags & 0b0001_0000 != 0 {
        return Ok(None);
    }
    let wkb = blob.get(8 + envelope..).ok_or("the blob ends inside its header")?;
    let g = wkb::reader::read_wkb(wkb).map_err(|e| format!("bad Well-Known Binary: {e}"))?;
    Ok(Some(match g.as_type() {
        GeometryType::LineString(l) => {
            SourceGeometry::LineString(l.coords().map(|c| [c.x(), c.y()]).collect())
        }
        GeometryType::MultiLineString(m) => SourceGeometry::MultiLineString(
            m.line_strings().map(|l| l.coords().map(|c| [c.x(), c.y()]).collect()).collect(),
        ),
        GeometryType::Point(_) => SourceGeometry::Other("Point".into()),
        GeometryType::Polygon(_) => SourceGeometry::Other("Polygon".into()),
        GeometryType::MultiPoint(_) => SourceGeometry::Other("MultiPoint".into()),
        GeometryType::MultiPolygon(_) => SourceGeometry::Other("MultiPolygon".into()),
        _ => SourceGeometry::Other("GeometryCollection".into()),
    }))
}

/// An SQL identifier, quoted.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Read a GeoPackage (see the module doc): the features of its one feature table (or of
/// `layer`) and the CRS of that table's geometry column.
pub async fn read_geopackage(
    path: &Path,
    layer: Option<&str>,
) -> Result<(Vec<SourceFeature>, Option<Crs>), CadastreError> {
    const FORMAT: &str = "GeoPackage";
    let bad = |m: String| unreadable(FORMAT, format!("{}: {m}", path.display()));
    check_size(FORMAT, path)?;
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .connect()
        .await
        .map_err(|e| bad(e.to_string()))?;
    let layers: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT c.table_name, g.column_name, g.srs_id
         FROM gpkg_contents c JOIN gpkg_geometry_columns g ON g.table_name = c.table_name
         WHERE c.data_type = 'features' ORDER BY c.table_name",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|e| bad(format!("not a GeoPackage with feature tables ({e})")))?;
    let names = || layers.iter().map(|l| l.0.as_str()).collect::<Vec<_>>().join(", ");
    let (table, column, srs_id) = match layer {
        Some(name) => layers
            .iter()
            .find(|l| l.0 == name)
            .cloned()
            .ok_or_else(|| bad(format!("no feature table {name:?}; it has: {}", names())))?,
        None => match layers.as_slice() {
            [one] => one.clone(),
            [] => return Err(bad("no feature table".into())),
            _ => {
                return Err(bad(format!(
                    "{} feature tables ({}): name one with --layer",
                    layers.len(),
                    names()
                )))
            }
        },
    };
    let srs: Option<(String, i64, String)> = sqlx::query_as(
        "SELECT organization, organization_coordsys_id, definition FROM gpkg_spatial_ref_sys WHERE srs_id = ?1",
    )
    .bind(srs_id)
    .fetch_optional(&mut conn)
    .await
    .map_err(|e| bad(format!("gpkg_spatial_ref_sys: {e}")))?;
    let crs = match srs {
        // The undefined Cartesian (-1) and geographic (0) systems: --crs, else WGS84.
        _ if srs_id <= 0 => None,
        Some((org, code, _)) if org.eq_ignore_ascii_case("EPSG") => {
            Some(Crs::from_epsg(u32::try_from(code).unwrap_or(0))?)
        }
        Some((_, _, definition)) => Some(Crs::from_wkt(&definition)?),
        None => return Err(bad(format!("srs_id {srs_id} is not in gpkg_spatial_ref_sys"))),
    };
    let rows = sqlx::query(&format!(
        "SELECT * FROM {} LIMIT {}",
        quoted(&table),
        cadastre::MAX_FEATURES + 1
    ))
    .fetch_all(&mut conn)
    .await
    .map_err(|e| bad(format!("table {table:?}: {e}")))?;
    if rows.len() > cadastre::MAX_FEATURES {
        return Err(CadastreError::TooManyFeatures(rows.len()));
    }
    let mut features = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let mut properties = Map::new();
        let mut geometry = None;
        for (c, col) in row.columns().iter().enumerate() {
            let raw = row.try_get_raw(c).map_err(|e| bad(e.to_string()))?;
            if raw.is_null() {
                properties.insert(col.name().to_owned(), Value::Null);
                continue;
            }
            let kind = raw.type_info().name().to_owned();
            if col.name() == column {
                let blob: Vec<u8> = row.try_get(c).map_err(|e| bad(e.to_string()))?;
                geometry = gpkg_geometry(&blob)
                    .map_err(|m| bad(format!("row {i}: column {column:?}: {m}")))?;
                continue;
            }
            let value = match kind.as_str() {
                "INTEGER" => row.try_get::<i64, _>(c).map(|v| json!(v)),
                "REAL" => row.try_get::<f64, _>(c).map(number),
                "TEXT" => row.try_get::<String, _>(c).map(Value::String),
                _ => Ok(Value::Null),
            }
            .map_err(|e| bad(format!("row {i}: column {:?}: {e}", col.name())))?;
            properties.insert(col.name().to_owned(), value);
        }
        features.push(SourceFeature { properties, geometry });
    }
    Ok((features, crs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_extension() {
        assert_eq!(Format::of(Path::new("a/city.GeoJSON")).unwrap(), Format::GeoJson);
        assert_eq!(Format::of(Path::new("grafo.shp")).unwrap(), Format::Shapefile);
        assert_eq!(Format::of(Path::new("grafo.gpkg")).unwrap(), Format::GeoPackage);
        let e = Format::of(Path::new("grafo.kml")).unwrap_err().to_string();
        assert!(e.contains("\"kml\"") && e.contains(".gpkg"), "{e}");
    }

    #[test]
    fn geopackage_blobs_with_and_without_envelope() {
        // LINESTRING(1 2, 3 4), little endian.
        let mut wkb = vec![1u8, 2, 0, 0, 0, 2, 0, 0, 0];
        for v in [1.0f64, 2.0, 3.0, 4.0] {
            wkb.extend(v.to_le_bytes());
        }
        let plain: Vec<u8> = [b"GP".as_slice(), &[0, 1], &4326i32.to_le_bytes(), &wkb].concat();
        assert_eq!(
            gpkg_geometry(&plain).unwrap(),
            Some(SourceGeometry::LineString(vec![[1.0, 2.0], [3.0, 4.0]]))
        );
        let envelope: Vec<u8> =
            [1.0f64, 3.0, 2.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let with: Vec<u8> =
            [b"GP".as_slice(), &[0, 0b11], &4326i32.to_le_bytes(), &envelope, &wkb].concat();
        assert_eq!(gpkg_geometry(&with).unwrap(), gpkg_geometry(&plain).unwrap());
        let empty: Vec<u8> = [b"GP".as_slice(), &[0, 0b1_0001], &4326i32.to_le_bytes()].concat();
        assert_eq!(gpkg_geometry(&empty).unwrap(), None);
        assert!(gpkg_geometry(b"XX\0\0\0\0\0\0").is_err());
        assert!(gpkg_geometry(&plain[..20]).is_err(), "truncated WKB");
        // POINT(1 2): read, and refused by name later.
        let point: Vec<u8> = [
            b"GP".as_slice(),
            &[0, 1],
            &0i32.to_le_bytes(),
            &[1, 1, 0, 0, 0],
            &1.0f64.to_le_bytes(),
            &2.0f64.to_le_bytes(),
        ]
        .concat();
        assert_eq!(gpkg_geometry(&point).unwrap(), Some(SourceGeometry::Other("Point".into())));
        // A LineString that claims four billion points in a few bytes is refused.
        let bomb: Vec<u8> = [
            b"GP".as_slice(),
            &[0, 1],
            &0i32.to_le_bytes(),
            &[1, 2, 0, 0, 0],
            &u32::MAX.to_le_bytes(),
            &1.0f64.to_le_bytes(),
        ]
        .concat();
        assert!(gpkg_geometry(&bomb).is_err());
    }
}
