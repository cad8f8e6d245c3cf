//! A synthetic road graph of a city of Florence's size, for benchmarks and tests of the
//! Road Cadastre import: a grid of streets centred on the Duomo, 100 m apart, with every
//! 10th street a two-lane secondary road, every 30th a four-lane primary one (70 km/h)
//! and a third of the local streets one-way, as a GeoJSON FeatureCollection in any CRS the
//! importer reads. Deterministic: the same count gives the same file.

use serde_json::{json, Value};
use telemetry::cadastre::{Crs, Reprojector};

/// The grid's centre: Piazza del Duomo.
const CENTRE: [f64; 2] = [11.2560, 43.7731];
/// Street spacing, metres.
const SPACING_M: f64 = 100.0;

/// A small deterministic hash of a number, 0..1.
fn unit(n: u64) -> f64 {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// `n` road segments as a FeatureCollection in `crs` (its `crs` member written unless
/// WGS84).
pub fn city(n: usize, crs: Crs) -> Value {
    // Nodes per side so that the grid's 2·k·(k−1) edges reach n.
    let mut k = 2usize;
    while 2 * k * (k - 1) < n {
        k += 1;
    }
    let (kx, ky) = telemetry::cadastre::geometry::metres_per_degree(CENTRE[1]);
    let half = (k as f64 - 1.0) / 2.0;
    let node = |i: usize, j: usize| {
        [
            CENTRE[0] + (i as f64 - half) * SPACING_M / kx,
            CENTRE[1] + (j as f64 - half) * SPACING_M / ky,
        ]
    };
    let project = Reprojector::new(crs);
    let mut features = Vec::with_capacity(n);
    'grid: for line in 0..k {
        for step in 0..k - 1 {
            for horizontal in [true, false] {
                if features.len() == n {
                    break 'grid;
                }
                let (a, b) = if horizontal {
                    (node(step, line), node(step + 1, line))
                } else {
                    (node(line, step), node(line, step + 1))
                };
                let seed = (features.len() as u64) << 1;
                // Four points, the middle ones bent off the straight line by up to 3 m.
                let points: Vec<[f64; 2]> = (0..4)
                    .map(|p| {
                        let t = f64::from(p) / 3.0;
                        let bend = if p == 0 || p == 3 {
                            0.0
                        } else {
                            (unit(seed + p as u64) - 0.5) * 6.0
                        };
                        let (dx, dy) = if horizontal { (0.0, bend / ky) } else { (bend / kx, 0.0) };
                        let c = [a[0] + (b[0] - a[0]) * t + dx, a[1] + (b[1] - a[1]) * t + dy];
                        let q = project.from_wgs84(c[0], c[1]).unwrap_or(c);
                        let r = if crs == Crs::Wgs84 { 1e7 } else { 1e3 };
                        [(q[0] * r).round() / r, (q[1] * r).round() / r]
                    })
                    .collect();
                let (class, lanes, limit) = if line % 30 == 0 {
                    ("primary", 4, 70)
                } else if line % 10 == 0 {
                    ("secondary", 2, 50)
                } else {
                    ("residential", 1, 30)
                };
                let one_way = class == "residential" && unit(seed + 7) < 0.33;
                let dir = if horizontal { "h" } else { "v" };
                let id = format!("gen-{dir}{line}-{step}");
                let name = format!(
                    "{} {} {line}",
                    if class == "primary" { "Viale" } else { "Via" },
                    if horizontal { "Est" } else { "Nord" }
                );
                features.push(json!({
                    "type": "Feature",
                    "properties": {"id": id, "name": name, "kind": class, "lanes": lanes, "speed_limit_kmh": limit, "one_way": one_way},
                    "geometry": {"type": "LineString", "coordinates": points}
                }));
            }
        }
    }
    let mut doc = json!({"type": "FeatureCollection", "features": features});
    if crs != Crs::Wgs84 {
        doc["crs"] = json!({"type": "name", "properties": {"name": format!("urn:ogc:def:crs:EPSG::{}", crs.epsg())}});
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_city_imports_cleanly_in_each_crs() {
        for crs in [Crs::Wgs84, Crs::MonteMarioItaly1, Crs::Rdn2008Utm32(7791)] {
            let text = city(2_000, crs).to_string();
            let parsed = telemetry::cadastre::parse(&text, None, &Default::default()).unwrap();
            assert_eq!(parsed.segments.len(), 2_000);
            assert_eq!(parsed.crs, crs);
            let s = &parsed.segments[0].segment;
            assert!((95.0..110.0).contains(&s.length_m), "{}", s.length_m);
            let [lon, lat] = s.coordinates[0];
            assert!((11.2..11.3).contains(&lon) && (43.74..43.80).contains(&lat), "{lon} {lat}");
        }
        assert_eq!(city(25_000, Crs::Wgs84)["features"].as_array().unwrap().len(), 25_000);
    }
}
