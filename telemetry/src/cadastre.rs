//! The Road Cadastre import: a GeoJSON FeatureCollection of LineStrings and
//! MultiLineStrings, in WGS84 or a projected system Italian municipalities publish
//! ([`crs`]), read through a property mapping ([`CadastreConfig`]) into road segments.
//! Other formats (Shapefile, GeoPackage: `sccr/src/cadastre_files.rs`) are read into
//! [`SourceFeature`]s and go through the same checks ([`parse_features`]).
//!
//! Every problem is collected, each naming its feature (index and id), so that one run
//! shows all of them; an importer imports nothing unless [`parse`] returned no error.
//!
//! What is refused, per feature: a geometry other than LineString or MultiLineString, or
//! none; a MultiLineString whose parts do not join end to end (the gap is named); fewer
//! than 2 points; more than [`MAX_POINTS`]; a point that is not a number, not finite or
//! outside the globe after reprojection; a point repeating the one before (a zero-length
//! step) or the one before that (the line folding back on itself); an id or name missing
//! or of the wrong type; an id that is not a segment id after normalisation (lower case,
//! `_`, `.`, `/` and spaces turned into `-`); a duplicate id; an attribute of the wrong
//! type or out of range. Per file: not JSON (nesting deeper than 128 levels included), not
//! a FeatureCollection, an unknown CRS.
//!
//! Derived attributes, where the file has none (`free_flow_property`,
//! `capacity_property` absent or empty): the free-flow speed is the speed limit times the
//! class's factor, the capacity the lanes times the class's capacity per lane
//! ([`class_profile`]). The length is always measured on the geometry.

pub mod crs;
pub mod geometry;
pub mod link;

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crs::{Crs, Reprojector, UnknownCrs};

use crate::ids::SegmentId;
use crate::segment::RoadSegment;

/// Most points one segment may have (after joining a MultiLineString's parts).
pub const MAX_POINTS: usize = 100_000;
/// Most features one file may hold.
pub const MAX_FEATURES: usize = 1_000_000;
/// Most errors reported one by one; the rest are counted.
pub const MAX_REPORTED_ERRORS: usize = 1_000;
/// Distance below which two MultiLineString parts count as joined, metres.
const JOIN_TOLERANCE_M: f64 = 0.05;

/// How far from an operation's point a segment may be to be derived from it, by default
/// (metres; `cadastre.operation_point_distance_m`).
pub const DEFAULT_OPERATION_POINT_DISTANCE_M: f64 = 30.0;

/// `[cadastre]`: which feature property holds each attribute, the defaults of the
/// optional ones, and how devices are linked to segments.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CadastreConfig {
    /// The segment id (required; a string or an integer). When the property is absent,
    /// the Feature's own `id` member is used.
    pub id_property: String,
    /// The road's name (a string; absent: the id).
    pub name_property: String,
    /// The road class (a string; absent: `default_class`).
    pub class_property: String,
    /// Lanes (an integer 1..=16; absent: `default_lanes`).
    pub lanes_property: String,
    /// Speed limit in km/h (a number 5..=150; absent: `default_speed_limit_kmh`).
    pub speed_limit_property: String,
    /// One-way: a boolean, 0/1, "yes"/"no"/"true"/"false"/"one_way"/"both", or "-1"
    /// (one-way against the drawing order: the line is reversed).
    pub one_way_property: String,
    /// Free-flow speed in km/h, if the file has it ("" to always derive it).
    pub free_flow_property: String,
    /// Capacity in vehicles per hour, if the file has it ("" to always derive it).
    pub capacity_property: String,
    pub default_class: String,
    pub default_lanes: u32,
    pub default_speed_limit_kmh: f64,
    pub default_one_way: bool,
    /// Devices with a position are linked to the nearest segment within this distance.
    pub link_max_distance_m: f64,
    /// An operation given by a point (and no segments) explains alerts on the segment
    /// nearest it within this distance (docs/operations.md).
    pub operation_point_distance_m: f64,
}

impl Default for CadastreConfig {
    fn default() -> Self {
        CadastreConfig {
            id_property: "id".into(),
            name_property: "name".into(),
            class_property: "kind".into(),
            lanes_property: "lanes".into(),
            speed_limit_property: "speed_limit_kmh".into(),
            one_way_property: "one_way".into(),
            free_flow_property: "free_flow_kmh".into(),
            capacity_property: "capacity_vph".into(),
            default_class: "local".into(),
            default_lanes: 1,
            default_speed_limit_kmh: 50.0,
            default_one_way: false,
            link_max_distance_m: 30.0,
            operation_point_distance_m: DEFAULT_OPERATION_POINT_DISTANCE_M,
        }
    }
}

/// The free-flow factor (of the speed limit) and the capacity per lane (vehicles per
/// hour) of a road class. Classes are matched case-insensitively; OpenStreetMap's
/// `highway` values and the seed's classes are known, anything else is a local road.
///
/// | class | free flow / limit | capacity per lane |
/// |---|---|---|
/// | motorway | 0.95 | 1,900 |
/// | trunk, primary, ring_road | 0.90 | 1,050 |
/// | secondary, radial | 0.85 | 900 |
/// | tertiary, lungarno | 0.80 | 850 |
/// | anything else (residential, local, service, …) | 0.75 | 600 |
pub fn class_profile(class: &str) -> (f64, f64) {
    let c = class.to_ascii_lowercase();
    let base = c.strip_suffix("_link").unwrap_or(&c);
    match base {
        "motorway" => (0.95, 1900.0),
        "trunk" | "primary" | "ring_road" => (0.90, 1050.0),
        "secondary" | "radial" => (0.85, 900.0),
        "tertiary" | "lungarno" => (0.80, 850.0),
        _ => (0.75, 600.0),
    }
}

/// A segment read from a cadastre file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CadastreSegment {
    #[serde(flatten)]
    pub segment: RoadSegment,
    pub one_way: bool,
}

/// One problem of one feature.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureError {
    /// The feature's index in the file, from 0.
    pub index: usize,
    /// Its id, when one could be read.
    pub id: Option<String>,
    pub problem: String,
}

impl fmt::Display for FeatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "feature {} (id {id:?}): {}", self.index, self.problem),
            None => write!(f, "feature {}: {}", self.index, self.problem),
        }
    }
}

/// Why a file was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CadastreError {
    #[error("the file is not a GeoJSON FeatureCollection: {0}")]
    NotGeoJson(String),
    #[error("the file holds {0} features or more, at most {MAX_FEATURES}")]
    TooManyFeatures(usize),
    #[error("the {format} cannot be read: {message}")]
    Unreadable { format: &'static str, message: String },
    #[error("{0}")]
    UnknownCrs(#[from] UnknownCrs),
    #[error("the file says its CRS is {file} but --crs says {given}")]
    CrsConflict { file: Crs, given: Crs },
    #[error("{} problem(s) in the features{}", .total, listed(.total, .errors))]
    Features { errors: Vec<FeatureError>, total: usize },
}

/// How many of the problems are listed, when not all.
fn listed(total: &usize, errors: &[FeatureError]) -> String {
    if *total > errors.len() {
        format!(" ({} listed)", errors.len())
    } else {
        String::new()
    }
}

/// A parsed file: its segments in file order and the CRS they were read in.
#[derive(Debug, Clone)]
pub struct Cadastre {
    pub crs: Crs,
    pub segments: Vec<CadastreSegment>,
}

/// The CRS to read in: the file's, else the caller's (`--crs`), else WGS84; the two must
/// agree when both are given.
pub fn pick_crs(file: Option<Crs>, given: Option<Crs>) -> Result<Crs, CadastreError> {
    match (file, given) {
        (Some(f), Some(g)) if f != g => Err(CadastreError::CrsConflict { file: f, given: g }),
        (Some(f), _) => Ok(f),
        (None, Some(g)) => Ok(g),
        (None, None) => Ok(Crs::Wgs84),
    }
}

/// A feature read from a file of another format than GeoJSON: its attributes as JSON
/// values (what the property mapping reads) and its geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFeature {
    pub properties: Map<String, Value>,
    pub geometry: Option<SourceGeometry>,
}

/// A feature's geometry, in the file's CRS.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceGeometry {
    LineString(Vec<[f64; 2]>),
    MultiLineString(Vec<Vec<[f64; 2]>>),
    /// Any other kind, by name (refused, naming it).
    Other(String),
}

/// Check features read from another format, in `crs`, as [`parse`] checks a GeoJSON
/// file's: the same mapping, validation and reprojection, every problem named.
pub fn parse_features(
    features: Vec<SourceFeature>,
    crs: Crs,
    cfg: &CadastreConfig,
) -> Result<Cadastre, CadastreError> {
    let line = |points: Vec<[f64; 2]>| Line { total: points.len(), points };
    let raw = features
        .into_iter()
        .map(|f| RawFeature {
            id: None,
            properties: Some(f.properties),
            geometry: f.geometry.map(|g| match g {
                SourceGeometry::LineString(p) => RawGeometry {
                    kind: "LineString".into(),
                    coordinates: Coordinates::Points(line(p)),
                },
                SourceGeometry::MultiLineString(parts) => RawGeometry {
                    kind: "MultiLineString".into(),
                    coordinates: Coordinates::Lines(parts.into_iter().map(line).collect()),
                },
                SourceGeometry::Other(kind) => {
                    RawGeometry { kind, coordinates: Coordinates::default() }
                }
            }),
        })
        .collect();
    check_features(raw, crs, cfg)
}

/// Read a cadastre file (see the module doc). `crs` is the CRS given by the caller
/// (`--crs`), used when the file names none; the file's and the caller's must agree.
pub fn parse(
    text: &str,
    crs: Option<Crs>,
    cfg: &CadastreConfig,
) -> Result<Cadastre, CadastreError> {
    let fc: RawCollection =
        serde_json::from_str(text).map_err(|e| CadastreError::NotGeoJson(e.to_string()))?;
    if fc.kind != "FeatureCollection" {
        return Err(CadastreError::NotGeoJson(format!(
            "type is {:?}, expected \"FeatureCollection\"",
            fc.kind
        )));
    }
    let file_crs = fc.crs.as_ref().map(crs_member).transpose()?;
    let crs = pick_crs(file_crs, crs)?;
    check_features(fc.features.0, crs, cfg)
}

/// Check every feature, in `crs` (see the module doc).
fn check_features(
    features: Vec<RawFeature>,
    crs: Crs,
    cfg: &CadastreConfig,
) -> Result<Cadastre, CadastreError> {
    if features.len() > MAX_FEATURES {
        return Err(CadastreError::TooManyFeatures(features.len()));
    }
    let reproject = Reprojector::new(crs);
    let mut errors: Vec<FeatureError> = Vec::new();
    let mut total = 0usize;
    let mut push = |e: FeatureError, errors: &mut Vec<FeatureError>| {
        total += 1;
        if errors.len() < MAX_REPORTED_ERRORS {
            errors.push(e);
        }
    };
    let mut seen: HashMap<SegmentId, usize> = HashMap::new();
    let mut segments = Vec::with_capacity(features.len());
    for (index, f) in features.into_iter().enumerate() {
        let mut problems: Vec<String> = Vec::new();
        let props = f.properties.unwrap_or_default();
        let (raw_id, id) = read_id(&props, f.id.as_ref(), cfg, &mut problems);
        if let Some(id) = &id {
            if let Some(first) = seen.get(id) {
                problems.push(format!("duplicate id: feature {first} has it too"));
            } else {
                seen.insert(id.clone(), index);
            }
        }
        let coordinates = read_geometry(f.geometry, &reproject, &mut problems);
        let attrs = read_attributes(&props, cfg, &mut problems);
        if problems.is_empty() {
            if let (Some(id), Some(mut coordinates), Some(a)) = (id, coordinates, attrs) {
                if a.reversed {
                    coordinates.reverse();
                }
                let (factor, per_lane) = class_profile(&a.class);
                segments.push(CadastreSegment {
                    segment: RoadSegment {
                        name: a.name.unwrap_or_else(|| id.as_str().to_owned()),
                        id,
                        kind: a.class,
                        length_m: (geometry::length_m(&coordinates) * 10.0).round() / 10.0,
                        coordinates,
                        lanes: a.lanes,
                        speed_limit_kmh: a.speed_limit,
                        free_flow_kmh: a
                            .free_flow
                            .unwrap_or((a.speed_limit * factor * 10.0).round() / 10.0),
                        capacity_vph: a.capacity.unwrap_or(f64::from(a.lanes) * per_lane),
                    },
                    one_way: a.one_way,
                });
            }
        } else {
            for problem in problems {
                push(FeatureError { index, id: raw_id.clone(), problem }, &mut errors);
            }
        }
    }
    if total > 0 {
        return Err(CadastreError::Features { errors, total });
    }
    Ok(Cadastre { crs, segments })
}

/// The GeoJSON 2008 `crs` member: `{"type":"name","properties":{"name":"EPSG:3003"}}`
/// (or `"type":"EPSG","properties":{"code":3003}`).
fn crs_member(v: &Value) -> Result<Crs, CadastreError> {
    let props = v.get("properties");
    if let Some(name) = props.and_then(|p| p.get("name")).and_then(Value::as_str) {
        return Ok(Crs::parse(name)?);
    }
    if let Some(code) = props.and_then(|p| p.get("code")).and_then(Value::as_u64) {
        return Ok(Crs::from_epsg(u32::try_from(code).unwrap_or(u32::MAX))?);
    }
    Err(CadastreError::UnknownCrs(UnknownCrs(v.to_string().chars().take(200).collect())))
}

fn read_id(
    props: &Map<String, Value>,
    feature_id: Option<&Value>,
    cfg: &CadastreConfig,
    problems: &mut Vec<String>,
) -> (Option<String>, Option<SegmentId>) {
    let v = props.get(&cfg.id_property).filter(|v| !v.is_null()).or(feature_id);
    let raw = match v {
        None | Some(Value::Null) => {
            problems.push(format!("missing property {:?} (the segment id)", cfg.id_property));
            return (None, None);
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(other) => {
            problems.push(format!(
                "property {:?} is {}, expected a string or an integer",
                cfg.id_property,
                type_name(other)
            ));
            return (None, None);
        }
    };
    let shown: String = raw.chars().take(80).collect();
    let normal: String = raw
        .trim()
        .chars()
        .map(|c| match c {
            '_' | '.' | '/' | ' ' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    match SegmentId::parse(&normal) {
        Ok(id) => (Some(shown), Some(id)),
        Err(e) => {
            problems.push(format!("id {shown:?} is not a segment id: {e}"));
            (Some(shown), None)
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Attributes {
    name: Option<String>,
    class: String,
    lanes: u32,
    speed_limit: f64,
    one_way: bool,
    reversed: bool,
    free_flow: Option<f64>,
    capacity: Option<f64>,
}

/// A property's value: absent (or null, or the mapping names no property) is `None`.
fn prop<'a>(props: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if key.is_empty() {
        return None;
    }
    props.get(key).filter(|v| !v.is_null())
}

/// A number, or a string holding one (shapefile attributes often are text).
fn number(
    props: &Map<String, Value>,
    key: &str,
    range: std::ops::RangeInclusive<f64>,
    problems: &mut Vec<String>,
) -> Option<f64> {
    let v = prop(props, key)?;
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace(',', ".").parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n.is_finite() && range.contains(&n) => Some(n),
        Some(n) => {
            problems.push(format!(
                "property {key:?} is {n}, outside {}..={}",
                range.start(),
                range.end()
            ));
            None
        }
        None => {
            problems.push(format!("property {key:?} is {}, expected a number", type_name(v)));
            None
        }
    }
}

fn read_attributes(
    props: &Map<String, Value>,
    cfg: &CadastreConfig,
    problems: &mut Vec<String>,
) -> Option<Attributes> {
    let before = problems.len();
    let name = match prop(props, &cfg.name_property) {
        None => None,
        Some(Value::String(s)) => Some(s.chars().take(200).collect()),
        Some(v) => {
            problems.push(format!(
                "property {:?} is {}, expected a string",
                cfg.name_property,
                type_name(v)
            ));
            None
        }
    };
    let class = match prop(props, &cfg.class_property) {
        None => cfg.default_class.clone(),
        Some(Value::String(s)) if s.len() <= 64 => s.clone(),
        Some(v) => {
            problems.push(format!(
                "property {:?} is {}, expected a string of at most 64 bytes",
                cfg.class_property,
                type_name(v)
            ));
            String::new()
        }
    };
    let lanes = match number(props, &cfg.lanes_property, 1.0..=16.0, problems) {
        Some(n) if n.fract() == 0.0 => n as u32,
        Some(n) => {
            problems
                .push(format!("property {:?} is {n}, expected a whole number", cfg.lanes_property));
            0
        }
        None => cfg.default_lanes,
    };
    let speed_limit = number(props, &cfg.speed_limit_property, 5.0..=150.0, problems)
        .unwrap_or(cfg.default_speed_limit_kmh);
    let (one_way, reversed) = match prop(props, &cfg.one_way_property) {
        None => (cfg.default_one_way, false),
        Some(Value::Bool(b)) => (*b, false),
        Some(Value::Number(n)) if n.as_i64() == Some(0) => (false, false),
        Some(Value::Number(n)) if n.as_i64() == Some(1) => (true, false),
        Some(Value::Number(n)) if n.as_i64() == Some(-1) => (true, true),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "yes" | "true" | "1" | "one_way" | "oneway" | "si" | "sì" | "ft" => (true, false),
            "no" | "false" | "0" | "both" | "two_way" => (false, false),
            "-1" | "reverse" | "tf" => (true, true),
            _ => {
                problems.push(format!(
                    "property {:?} is {s:?}, expected yes/no, true/false, 1/0/-1",
                    cfg.one_way_property
                ));
                (false, false)
            }
        },
        Some(v) => {
            problems.push(format!(
                "property {:?} is {}, expected a boolean",
                cfg.one_way_property,
                type_name(v)
            ));
            (false, false)
        }
    };
    let free_flow = number(props, &cfg.free_flow_property, 1.0..=150.0, problems);
    let capacity = number(props, &cfg.capacity_property, 1.0..=20_000.0, problems);
    (problems.len() == before).then_some(Attributes {
        name,
        class,
        lanes,
        speed_limit,
        one_way,
        reversed,
        free_flow,
        capacity,
    })
}

fn read_geometry(
    g: Option<RawGeometry>,
    reproject: &Reprojector,
    problems: &mut Vec<String>,
) -> Option<Vec<[f64; 2]>> {
    let Some(g) = g else {
        problems.push("no geometry".into());
        return None;
    };
    let too_many = |n: usize| format!("{n} points, at most {MAX_POINTS}");
    let parts: Vec<Line> = match (g.kind.as_str(), g.coordinates) {
        ("LineString", Coordinates::Points(l)) => vec![l],
        ("MultiLineString", Coordinates::Lines(parts)) => parts,
        ("MultiLineString", Coordinates::Points(l)) if l.total == 0 => vec![l],
        ("LineString" | "MultiLineString", _) => {
            problems.push(format!("{} coordinates are not nested as a {} needs", g.kind, g.kind));
            return None;
        }
        (other, _) => {
            problems.push(format!(
                "geometry is {:?}, expected LineString or MultiLineString",
                other.chars().take(40).collect::<String>()
            ));
            return None;
        }
    };
    let total: usize = parts.iter().map(|p| p.total).sum();
    if total > MAX_POINTS {
        problems.push(too_many(total));
        return None;
    }
    let mut out: Vec<Vec<[f64; 2]>> = Vec::with_capacity(parts.len());
    for (p, part) in parts.iter().enumerate() {
        let mut line = Vec::with_capacity(part.points.len());
        for (i, &[x, y]) in part.points.iter().enumerate() {
            match reproject.to_wgs84(x, y) {
                Some([lon, lat]) => {
                    line.push([(lon * 1e7).round() / 1e7, (lat * 1e7).round() / 1e7])
                }
                None => {
                    let at = if parts.len() > 1 {
                        format!("part {p} point {i}")
                    } else {
                        format!("point {i}")
                    };
                    problems.push(format!(
                        "{at} ({x}, {y}) is not a valid position after reprojection to WGS84"
                    ));
                    return None;
                }
            }
        }
        out.push(line);
    }
    let line = join_parts(out, problems)?;
    if line.len() < 2 {
        problems.push(format!("{} point(s), a line needs at least 2", line.len()));
        return None;
    }
    for i in 1..line.len() {
        if line[i] == line[i - 1] {
            problems.push(format!("point {i} repeats point {} (a zero-length step)", i - 1));
            return None;
        }
        if i >= 2 && line[i] == line[i - 2] {
            problems.push(format!(
                "point {i} returns to point {} (the line folds back on itself)",
                i - 2
            ));
            return None;
        }
    }
    Some(line)
}

/// Join a MultiLineString's parts, in order, each starting where the previous ended (or
/// ending there: the part is then reversed).
fn join_parts(parts: Vec<Vec<[f64; 2]>>, problems: &mut Vec<String>) -> Option<Vec<[f64; 2]>> {
    let mut iter = parts.into_iter();
    let mut line = iter.next().unwrap_or_default();
    for (k, mut part) in iter.enumerate() {
        let (Some(&end), Some(&first), Some(&last)) = (line.last(), part.first(), part.last())
        else {
            problems.push(format!("MultiLineString part {} is empty", k + 1));
            return None;
        };
        let d_first = geometry::length_m(&[end, first]);
        let d_last = geometry::length_m(&[end, last]);
        if d_first <= JOIN_TOLERANCE_M {
            line.extend(part.into_iter().skip(1));
        } else if d_last <= JOIN_TOLERANCE_M {
            part.reverse();
            line.extend(part.into_iter().skip(1));
        } else {
            problems.push(format!(
                "MultiLineString parts {k} and {} do not join end to end (gap of {:.1} m); split the feature or fix its geometry",
                k + 1,
                d_first.min(d_last)
            ));
            return None;
        }
    }
    Some(line)
}

#[derive(Deserialize)]
struct RawCollection {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    crs: Option<Value>,
    #[serde(default)]
    features: Features,
}

/// The features, stopping to store (but still reading) past [`MAX_FEATURES`] + 1.
#[derive(Default)]
struct Features(Vec<RawFeature>);

impl<'de> Deserialize<'de> for Features {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Features;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of features")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Features, A::Error> {
                let mut out = Vec::new();
                while let Some(f) = seq.next_element::<RawFeature>()? {
                    if out.len() > MAX_FEATURES {
                        return Err(de::Error::custom(format!(
                            "more than {MAX_FEATURES} features"
                        )));
                    }
                    out.push(f);
                }
                Ok(Features(out))
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize)]
struct RawFeature {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
    #[serde(default)]
    geometry: Option<RawGeometry>,
}

#[derive(Deserialize)]
struct RawGeometry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    coordinates: Coordinates,
}

/// A line's points, keeping at most [`MAX_POINTS`] + 1 but counting them all.
#[derive(Default)]
struct Line {
    points: Vec<[f64; 2]>,
    total: usize,
}

/// Coordinates nested one level (a LineString's) or two (a MultiLineString's).
enum Coordinates {
    Points(Line),
    Lines(Vec<Line>),
}

impl Default for Coordinates {
    fn default() -> Self {
        Coordinates::Points(Line::default())
    }
}

/// An element of a coordinates array: a position or a line of positions.
enum Element {
    Position([f64; 2]),
    Line(Line),
}

/// A position's first number, or a nested position.
enum Head {
    Number(f64),
    Position([f64; 2]),
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Head;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a position")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Head, E> {
                Ok(Head::Number(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Head, E> {
                Ok(Head::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Head, E> {
                Ok(Head::Number(v as f64))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Head, A::Error> {
                Ok(Head::Position(position_rest(seq, None)?))
            }
        }
        d.deserialize_any(V)
    }
}

/// The rest of a position: x (unless given), y, and any further numbers (ignored).
fn position_rest<'de, A: SeqAccess<'de>>(mut seq: A, x: Option<f64>) -> Result<[f64; 2], A::Error> {
    let x = match x {
        Some(x) => x,
        None => seq
            .next_element::<f64>()?
            .ok_or_else(|| de::Error::custom("a position needs two numbers"))?,
    };
    let y = seq
        .next_element::<f64>()?
        .ok_or_else(|| de::Error::custom("a position needs two numbers"))?;
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok([x, y])
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Element;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a position or an array of positions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
                match seq.next_element::<Head>()? {
                    None => Ok(Element::Line(Line::default())),
                    Some(Head::Number(x)) => Ok(Element::Position(position_rest(seq, Some(x))?)),
                    Some(Head::Position(p)) => {
                        let mut line = Line { points: vec![p], total: 1 };
                        while let Some(p) = seq.next_element::<PositionOnly>()? {
                            line.total += 1;
                            if line.points.len() <= MAX_POINTS {
                                line.points.push(p.0);
                            }
                        }
                        Ok(Element::Line(line))
                    }
                }
            }
        }
        d.deserialize_seq(V)
    }
}

struct PositionOnly([f64; 2]);

impl<'de> Deserialize<'de> for PositionOnly {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PositionOnly;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a position: an array of two or three numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<PositionOnly, A::Error> {
                Ok(PositionOnly(position_rest(seq, None)?))
            }
        }
        d.deserialize_seq(V)
    }
}

impl<'de> Deserialize<'de> for Coordinates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Coordinates;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of positions or of arrays of positions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Coordinates, A::Error> {
                let mut points = Line::default();
                let mut lines: Vec<Line> = Vec::new();
                while let Some(e) = seq.next_element::<Element>()? {
                    match e {
                        Element::Position(p) if lines.is_empty() => {
                            points.total += 1;
                            if points.points.len() <= MAX_POINTS {
                                points.points.push(p);
                            }
                        }
                        Element::Line(l) if points.total == 0 => {
                            if lines.len() > MAX_POINTS {
                                return Err(de::Error::custom(format!(
                                    "more than {MAX_POINTS} lines"
                                )));
                            }
                            lines.push(l)
                        }
                        _ => return Err(de::Error::custom("coordinates mix positions and lines")),
                    }
                }
                Ok(if lines.is_empty() {
                    Coordinates::Points(points)
                } else {
                    Coordinates::Lines(lines)
                })
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests;
