//! Plane geometry on WGS84 lines at city scale: lengths, distances from a point to a
//! line with the direction there, and Douglas-Peucker simplification. Distances use a
//! local equirectangular projection around the point (error well under 0.1 % within a
//! city); lengths the haversine formula.

/// Mean Earth radius (IUGG), metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Length of a `[lon, lat]` line in metres (haversine).
pub fn length_m(coords: &[[f64; 2]]) -> f64 {
    coords
        .windows(2)
        .map(|w| {
            let (la1, la2) = (w[0][1].to_radians(), w[1][1].to_radians());
            let dlat = la2 - la1;
            let dlon = (w[1][0] - w[0][0]).to_radians();
            let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
            2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
        })
        .sum()
}

/// Metres per degree of longitude and of latitude at `lat`.
pub fn metres_per_degree(lat: f64) -> (f64, f64) {
    let k = EARTH_RADIUS_M.to_radians();
    (k * lat.to_radians().cos().max(1e-9), k)
}

/// The nearest point of a line to `p`: its distance in metres and the bearing (degrees
/// clockwise from north, 0..360) of the line's step it lies on, in the line's order.
pub fn nearest(p: [f64; 2], coords: &[[f64; 2]]) -> Option<(f64, f64)> {
    let (kx, ky) = metres_per_degree(p[1]);
    let local = |c: [f64; 2]| ((c[0] - p[0]) * kx, (c[1] - p[1]) * ky);
    let mut best: Option<(f64, f64)> = None;
    for w in coords.windows(2) {
        let (ax, ay) = local(w[0]);
        let (bx, by) = local(w[1]);
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = dx * dx + dy * dy;
        if len2 == 0.0 {
            continue;
        }
        let t = (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0);
        let d = (ax + t * dx).hypot(ay + t * dy);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, dx.atan2(dy).to_degrees().rem_euclid(360.0)));
        }
    }
    best
}

/// The smallest angle between two bearings, 0..=180 degrees.
pub fn angle_between(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(360.0);
    d.min(360.0 - d)
}

/// Whether the steps `a-b` and `c-d` meet: they cross, or one touches the other (an end
/// on the other step, collinear overlap).
pub fn steps_meet(a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]) -> bool {
    let orient = |p: [f64; 2], q: [f64; 2], r: [f64; 2]| {
        let v = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]);
        (v > 0.0) as i8 - (v < 0.0) as i8
    };
    // Whether `q`, collinear with `p-r`, lies within its box.
    let within = |p: [f64; 2], q: [f64; 2], r: [f64; 2]| {
        q[0] >= p[0].min(r[0])
            && q[0] <= p[0].max(r[0])
            && q[1] >= p[1].min(r[1])
            && q[1] <= p[1].max(r[1])
    };
    let (o1, o2, o3, o4) = (orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b));
    (o1 != o2 && o3 != o4)
        || (o1 == 0 && within(a, c, b))
        || (o2 == 0 && within(a, d, b))
        || (o3 == 0 && within(c, a, d))
        || (o4 == 0 && within(c, b, d))
}

/// Whether `p` lies inside a polygon given by its rings (the outer one, then holes):
/// the even-odd rule, so a point in a hole is outside.
pub fn point_in_polygon(p: [f64; 2], rings: &[Vec<[f64; 2]>]) -> bool {
    let mut inside = false;
    for ring in rings {
        for w in ring.windows(2) {
            let (a, b) = (w[0], w[1]);
            if (a[1] > p[1]) != (b[1] > p[1]) {
                let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
                if p[0] < x {
                    inside = !inside;
                }
            }
        }
    }
    inside
}

/// Whether a line reaches into a polygon (rings as in [`point_in_polygon`]): one of its
/// positions is inside, or one of its steps meets a ring.
pub fn line_meets_polygon(line: &[[f64; 2]], rings: &[Vec<[f64; 2]>]) -> bool {
    if line.iter().any(|p| point_in_polygon(*p, rings)) {
        return true;
    }
    line.windows(2).any(|s| {
        rings.iter().any(|ring| ring.windows(2).any(|e| steps_meet(s[0], s[1], e[0], e[1])))
    })
}

/// Douglas-Peucker simplification with a tolerance in degrees (iterative: a line of any
/// length needs no deep stack). The ends are always kept.
pub fn simplify(coords: &[[f64; 2]], tolerance: f64) -> Vec<[f64; 2]> {
    if coords.len() < 3 || tolerance <= 0.0 {
        return coords.to_vec();
    }
    let mut keep = vec![false; coords.len()];
    keep[0] = true;
    keep[coords.len() - 1] = true;
    let mut stack = vec![(0, coords.len() - 1)];
    while let Some((first, last)) = stack.pop() {
        let (a, b) = (coords[first], coords[last]);
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len = dx.hypot(dy);
        let mut worst = (0.0, 0);
        for (i, c) in coords.iter().enumerate().take(last).skip(first + 1) {
            let d = if len == 0.0 {
                (c[0] - a[0]).hypot(c[1] - a[1])
            } else {
                ((c[0] - a[0]) * dy - (c[1] - a[1]) * dx).abs() / len
            };
            if d > worst.0 {
                worst = (d, i);
            }
        }
        if worst.0 > tolerance {
            keep[worst.1] = true;
            stack.push((first, worst.1));
            stack.push((worst.1, last));
        }
    }
    coords.iter().zip(keep).filter(|(_, k)| *k).map(|(c, _)| *c).collect()
}

/// The simplification tolerance in degrees for a web-map zoom level: half a pixel of a
/// 256-pixel tile at that zoom (at the equator; finer at Florence's latitude).
pub fn zoom_tolerance(zoom: u8) -> f64 {
    360.0 / (256.0 * f64::from(1u32 << zoom.min(30))) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_of_a_degree_of_latitude() {
        let l = length_m(&[[11.0, 43.0], [11.0, 44.0]]);
        assert!((l - 111_195.0).abs() < 5.0, "{l}");
    }

    #[test]
    fn nearest_gives_distance_and_bearing() {
        // A line going east; a point 10 m north of its middle.
        let line = [[11.0, 43.0], [11.01, 43.0]];
        let (_, ky) = metres_per_degree(43.0);
        let (d, b) = nearest([11.005, 43.0 + 10.0 / ky], &line).unwrap();
        assert!((d - 10.0).abs() < 0.01, "{d}");
        assert!((b - 90.0).abs() < 1e-6, "{b}");
        assert_eq!(angle_between(350.0, 10.0), 20.0);
        assert_eq!(angle_between(90.0, 270.0), 180.0);
    }

    #[test]
    fn simplify_keeps_ends_and_the_shape() {
        let line: Vec<[f64; 2]> = (0..=100).map(|i| [f64::from(i) * 0.001, 0.0]).collect();
        assert_eq!(simplify(&line, 1e-6), vec![[0.0, 0.0], [0.1, 0.0]]);
        let bent = [[0.0, 0.0], [0.5, 0.0001], [1.0, 0.0], [1.0, 1.0]];
        assert_eq!(simplify(&bent, 0.01), vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]);
        assert_eq!(simplify(&bent, 0.00001).len(), 4);
        assert!(zoom_tolerance(18) < zoom_tolerance(12));
    }

    #[test]
    fn lines_meeting_a_polygon_with_a_hole() {
        let square = vec![[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]];
        let hole = vec![[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0], [1.0, 1.0]];
        let rings = vec![square, hole];
        assert!(point_in_polygon([0.5, 0.5], &rings));
        assert!(!point_in_polygon([2.0, 2.0], &rings), "in the hole");
        assert!(!point_in_polygon([5.0, 2.0], &rings));
        // Inside; crossing through with no position inside; touching an edge; in the
        // hole only; outside.
        assert!(line_meets_polygon(&[[0.5, 0.5], [0.6, 0.6]], &rings));
        assert!(line_meets_polygon(&[[-1.0, 0.5], [5.0, 0.5]], &rings));
        assert!(line_meets_polygon(&[[4.0, -1.0], [4.0, 5.0]], &rings), "along an edge");
        assert!(line_meets_polygon(&[[5.0, 2.0], [4.0, 2.0]], &rings), "an end on an edge");
        assert!(!line_meets_polygon(&[[1.5, 2.0], [2.5, 2.0]], &rings));
        assert!(!line_meets_polygon(&[[5.0, 5.0], [6.0, 6.0]], &rings));
        assert!(!steps_meet([0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]), "collinear apart");
    }
}
