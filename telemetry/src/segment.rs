//! Road segments of the Road Cadastre, read from a GeoJSON FeatureCollection of
//! LineStrings (the seed set ships in `deploy/seed/florence-segments.geojson`).

use serde::{Deserialize, Serialize};

use crate::ids::SegmentId;

/// One road segment with the attributes traffic state is derived from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoadSegment {
    pub id: SegmentId,
    pub name: String,
    pub kind: String,
    /// `[lon, lat]` pairs, WGS84.
    pub coordinates: Vec<[f64; 2]>,
    pub length_m: f64,
    pub lanes: u32,
    pub speed_limit_kmh: f64,
    pub free_flow_kmh: f64,
    pub capacity_vph: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SegmentError {
    #[error("segment file is not valid GeoJSON: {0}")]
    Json(String),
    #[error("feature {index}: {message}")]
    Feature { index: usize, message: String },
}

#[derive(Deserialize)]
struct Collection {
    #[serde(rename = "type")]
    kind: String,
    features: Vec<Feature>,
}

#[derive(Deserialize)]
struct Feature {
    properties: Properties,
    geometry: Geometry,
}

#[derive(Deserialize)]
struct Properties {
    id: String,
    name: String,
    #[serde(default)]
    kind: String,
    length_m: f64,
    lanes: u32,
    speed_limit_kmh: f64,
    free_flow_kmh: f64,
    capacity_vph: f64,
}

#[derive(Deserialize)]
struct Geometry {
    #[serde(rename = "type")]
    kind: String,
    coordinates: Vec<[f64; 2]>,
}

/// Parse a FeatureCollection of LineString road segments.
pub fn parse_geojson(text: &str) -> Result<Vec<RoadSegment>, SegmentError> {
    let fc: Collection =
        serde_json::from_str(text).map_err(|e| SegmentError::Json(e.to_string()))?;
    if fc.kind != "FeatureCollection" {
        return Err(SegmentError::Json(format!(
            "type is {:?}, expected \"FeatureCollection\"",
            fc.kind
        )));
    }
    let mut out = Vec::with_capacity(fc.features.len());
    for (index, f) in fc.features.into_iter().enumerate() {
        let err = |message: String| SegmentError::Feature { index, message };
        let id = SegmentId::parse(&f.properties.id).map_err(|e| err(e.to_string()))?;
        if f.geometry.kind != "LineString" {
            return Err(err(format!("geometry is {:?}, expected LineString", f.geometry.kind)));
        }
        if f.geometry.coordinates.len() < 2 {
            return Err(err("a LineString needs at least two points".into()));
        }
        let p = f.properties;
        if p.free_flow_kmh <= 0.0 || p.capacity_vph <= 0.0 || p.lanes == 0 {
            return Err(err("free_flow_kmh, capacity_vph and lanes must be positive".into()));
        }
        out.push(RoadSegment {
            id,
            name: p.name,
            kind: p.kind,
            coordinates: f.geometry.coordinates,
            length_m: p.length_m,
            lanes: p.lanes,
            speed_limit_kmh: p.speed_limit_kmh,
            free_flow_kmh: p.free_flow_kmh,
            capacity_vph: p.capacity_vph,
        });
    }
    Ok(out)
}

/// The seed set shipped with SCCR: real Florence viali, lungarni and radial roads.
pub const FLORENCE_SEED: &str = include_str!("../../deploy/seed/florence-segments.geojson");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn florence_seed_parses() {
        let segs = parse_geojson(FLORENCE_SEED).unwrap();
        assert!(segs.len() >= 20, "{}", segs.len());
        for s in &segs {
            for [lon, lat] in &s.coordinates {
                assert!((11.15..11.33).contains(lon) && (43.73..43.83).contains(lat), "{}", s.id);
            }
        }
    }

    #[test]
    fn bad_features_name_their_index() {
        let text = r#"{"type":"FeatureCollection","features":[{"properties":{"id":"Bad Id","name":"x","length_m":1,"lanes":1,"speed_limit_kmh":50,"free_flow_kmh":45,"capacity_vph":900},"geometry":{"type":"LineString","coordinates":[[11.2,43.7],[11.3,43.8]]}}]}"#;
        let err = parse_geojson(text).unwrap_err();
        assert!(matches!(err, SegmentError::Feature { index: 0, .. }), "{err}");
    }
}
