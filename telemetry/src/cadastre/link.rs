//! Linking positioned devices to the nearest road segment.
//!
//! A device is linked to the segment nearest its position within `max_distance_m`. Where
//! the device has a bearing, only segments whose direction at the nearest point is within
//! [`MAX_BEARING_DIFF_DEG`] of it count: a one-way segment in its drawing order, a two-way
//! segment either way. When a second segment lies within [`AMBIGUITY_RATIO`] of the best
//! distance (20 % farther at most), the match is ambiguous: reported, not linked.
//!
//! Candidates are found through a grid of cells as large as the search distance: every
//! step of every line is entered in the cells it passes through, and a device looks at
//! its cell and the eight around it.

use std::collections::HashMap;

use serde::Serialize;

use super::geometry::{angle_between, metres_per_degree, nearest};
use crate::ids::{DeviceId, SegmentId};

pub const MAX_BEARING_DIFF_DEG: f64 = 45.0;
pub const AMBIGUITY_RATIO: f64 = 1.2;

/// A device's position (WGS84) and optional bearing (degrees clockwise from north).
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePosition {
    pub id: DeviceId,
    pub lon: f64,
    pub lat: f64,
    pub bearing_deg: Option<f64>,
}

/// A segment as linking sees it.
#[derive(Debug, Clone, Copy)]
pub struct LinkTarget<'a> {
    pub id: &'a SegmentId,
    pub coordinates: &'a [[f64; 2]],
    pub one_way: bool,
}

/// A candidate segment and the device's distance from it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub segment: SegmentId,
    pub distance_m: f64,
}

/// What linking decided for one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum LinkOutcome {
    Linked {
        device: DeviceId,
        segment: SegmentId,
        distance_m: f64,
    },
    /// Two or more segments within 20 % of the best distance, nearest first.
    Ambiguous {
        device: DeviceId,
        candidates: Vec<Candidate>,
    },
    /// No segment (in the device's direction) within the distance.
    Unmatched {
        device: DeviceId,
    },
}

/// Link every device (see the module doc), in the order given.
pub fn link(
    devices: &[DevicePosition],
    segments: &[LinkTarget<'_>],
    max_distance_m: f64,
) -> Vec<LinkOutcome> {
    // Cells in degrees, sized for the city's latitude (the first device's, or 45°).
    let lat0 = devices.first().map_or(45.0, |d| d.lat);
    let (kx, ky) = metres_per_degree(lat0);
    let (cx, cy) = (max_distance_m.max(1.0) / kx, max_distance_m.max(1.0) / ky);
    let cell = |c: [f64; 2]| ((c[0] / cx).floor() as i64, (c[1] / cy).floor() as i64);
    let mut grid: HashMap<(i64, i64), Vec<u32>> = HashMap::new();
    for (i, s) in segments.iter().enumerate() {
        let mut cells: Vec<(i64, i64)> = Vec::new();
        for w in s.coordinates.windows(2) {
            // Walk the step in half cells so that no cell it crosses is missed.
            let (a, b) = (cell(w[0]), cell(w[1]));
            let n =
                (a.0 - b.0).unsigned_abs().max((a.1 - b.1).unsigned_abs()).saturating_mul(2) + 1;
            let n = n.min(1_000_000);
            for k in 0..=n {
                let t = k as f64 / n as f64;
                cells.push(cell([
                    w[0][0] + (w[1][0] - w[0][0]) * t,
                    w[0][1] + (w[1][1] - w[0][1]) * t,
                ]));
            }
        }
        cells.sort_unstable();
        cells.dedup();
        for c in cells {
            grid.entry(c).or_default().push(i as u32);
        }
    }
    devices
        .iter()
        .map(|d| {
            let (gx, gy) = cell([d.lon, d.lat]);
            let mut seen: Vec<u32> = Vec::new();
            for dx in -1..=1 {
                for dy in -1..=1 {
                    if let Some(v) = grid.get(&(gx + dx, gy + dy)) {
                        seen.extend(v);
                    }
                }
            }
            seen.sort_unstable();
            seen.dedup();
            let mut candidates: Vec<Candidate> = seen
                .into_iter()
                .filter_map(|i| {
                    let s = &segments[i as usize];
                    let (dist, dir) = nearest([d.lon, d.lat], s.coordinates)?;
                    let heading_ok = d.bearing_deg.is_none_or(|b| {
                        angle_between(b, dir) <= MAX_BEARING_DIFF_DEG
                            || (!s.one_way && angle_between(b, dir + 180.0) <= MAX_BEARING_DIFF_DEG)
                    });
                    (dist <= max_distance_m && heading_ok)
                        .then(|| Candidate { segment: s.id.clone(), distance_m: dist })
                })
                .collect();
            candidates.sort_by(|a, b| {
                a.distance_m.total_cmp(&b.distance_m).then_with(|| a.segment.cmp(&b.segment))
            });
            let Some(best) = candidates.first() else {
                return LinkOutcome::Unmatched { device: d.id.clone() };
            };
            let limit = best.distance_m * AMBIGUITY_RATIO;
            let close = candidates.iter().take_while(|c| c.distance_m <= limit).count();
            if close > 1 {
                candidates.truncate(close);
                LinkOutcome::Ambiguous { device: d.id.clone(), candidates }
            } else {
                let best = candidates.swap_remove(0);
                LinkOutcome::Linked {
                    device: d.id.clone(),
                    segment: best.segment,
                    distance_m: best.distance_m,
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: &str) -> SegmentId {
        SegmentId::parse(id).unwrap()
    }
    fn dev(id: &str, lon: f64, lat: f64, bearing_deg: Option<f64>) -> DevicePosition {
        DevicePosition { id: DeviceId::parse(id).unwrap(), lon, lat, bearing_deg }
    }

    #[test]
    fn nearest_within_distance_bearing_and_ambiguity() {
        let (_, ky) = metres_per_degree(43.77);
        let m = 1.0 / ky; // a metre of latitude
        let (north, south, far) = (seg("north"), seg("south"), seg("far"));
        // Two parallel eastbound lines 20 m apart; a third 1 km away.
        let n = [[11.25, 43.77 + 10.0 * m], [11.26, 43.77 + 10.0 * m]];
        let s = [[11.25, 43.77 - 10.0 * m], [11.26, 43.77 - 10.0 * m]];
        let f = [[11.25, 43.78], [11.26, 43.78]];
        let targets = [
            LinkTarget { id: &north, coordinates: &n, one_way: true },
            LinkTarget { id: &south, coordinates: &s, one_way: false },
            LinkTarget { id: &far, coordinates: &f, one_way: false },
        ];
        let out = link(
            &[
                dev("near-north", 11.255, 43.77 + 7.0 * m, None),
                dev("middle", 11.255, 43.77, None),
                dev("middle-westbound", 11.255, 43.77, Some(270.0)),
                dev("nowhere", 11.30, 43.70, None),
            ],
            &targets,
            30.0,
        );
        assert!(
            matches!(&out[0], LinkOutcome::Linked { segment, distance_m, .. } if *segment == north && (distance_m - 3.0).abs() < 0.01),
            "{:?}",
            out[0]
        );
        match &out[1] {
            LinkOutcome::Ambiguous { candidates, .. } => {
                let ids: Vec<_> = candidates.iter().map(|c| c.segment.as_str()).collect();
                assert_eq!(ids, ["north", "south"]);
            }
            other => panic!("{other:?}"),
        }
        // Heading west: the one-way eastbound line is not a candidate.
        assert!(
            matches!(&out[2], LinkOutcome::Linked { segment, .. } if *segment == south),
            "{:?}",
            out[2]
        );
        assert!(matches!(&out[3], LinkOutcome::Unmatched { .. }));
    }

    #[test]
    fn long_steps_are_found_from_any_cell() {
        let id = seg("long");
        let line = [[11.0, 43.77], [11.5, 43.77]];
        let out = link(
            &[dev("mid", 11.3333, 43.77001, None)],
            &[LinkTarget { id: &id, coordinates: &line, one_way: false }],
            30.0,
        );
        assert!(matches!(&out[0], LinkOutcome::Linked { .. }), "{:?}", out[0]);
    }
}
