//! Planning a simulated fleet over road segments: three traffic-loop detectors for every
//! air-quality station, spread round-robin over the segments.

use telemetry::{DeviceId, RoadSegment};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    TrafficLoop,
    AirQuality,
}

impl DeviceKind {
    /// The registry's kind of such a device.
    pub fn kind(self) -> telemetry::DeviceKind {
        match self {
            DeviceKind::TrafficLoop => telemetry::DeviceKind::TrafficLoop,
            DeviceKind::AirQuality => telemetry::DeviceKind::AirQuality,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.kind().as_str()
    }
}

#[derive(Debug, Clone)]
pub struct SimDevice {
    pub id: DeviceId,
    pub kind: DeviceKind,
    pub segment: RoadSegment,
    /// Per-device variation of demand (0.85..1.15), fixed for the device's life.
    pub demand_factor: f64,
}

/// `n` devices over `segments` (which must not be empty).
pub fn plan_fleet(segments: &[RoadSegment], n: usize) -> Vec<SimDevice> {
    let mut per_segment = vec![0usize; segments.len()];
    (0..n)
        .filter_map(|i| {
            let s = i % segments.len();
            let seg = &segments[s];
            let k = per_segment[s];
            per_segment[s] += 1;
            let kind = if i % 4 == 3 { DeviceKind::AirQuality } else { DeviceKind::TrafficLoop };
            let prefix = match kind {
                DeviceKind::TrafficLoop => "loop",
                DeviceKind::AirQuality => "aq",
            };
            let id = DeviceId::parse(&format!("{prefix}-{}-{k}", seg.id)).ok()?;
            // Deterministic variation from the index (golden-ratio sequence).
            let demand_factor = 0.85 + 0.3 * ((i as f64 * 0.618_033_988_75) % 1.0);
            Some(SimDevice { id, kind, segment: seg.clone(), demand_factor })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use telemetry::segment::{parse_geojson, FLORENCE_SEED};

    use super::*;

    #[test]
    fn fleet_covers_segments_with_unique_ids() {
        let segs = parse_geojson(FLORENCE_SEED).unwrap();
        let fleet = plan_fleet(&segs, 200);
        assert_eq!(fleet.len(), 200);
        let ids: std::collections::HashSet<_> = fleet.iter().map(|d| d.id.clone()).collect();
        assert_eq!(ids.len(), 200);
        let covered: std::collections::HashSet<_> =
            fleet.iter().map(|d| d.segment.id.clone()).collect();
        assert_eq!(covered.len(), segs.len().min(200));
        let aq = fleet.iter().filter(|d| d.kind == DeviceKind::AirQuality).count();
        assert!(aq > 20 && aq < 80, "{aq}");
    }
}
