//! The KPI frame of the wall's tiles: devices online and offline, readings per second,
//! open alerts by severity, the city's speed, the worst segments.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{json, Value};
use stream::{worst_first, LiveHub, SegmentState, Severity, Standing};
use telemetry::{EventTime, RoadSegment, SegmentId};

use super::Session;

/// Entries in the KPI frame's `worst_segments` (a 1080p wall shows 5, a 4K wall 10).
pub const WORST_SEGMENTS: usize = 10;

/// What the KPI frame needs of a segment from the registry.
struct KpiSegment {
    name: String,
    length_m: f64,
    free_flow_kmh: f64,
}

/// The figures of the wall's KPI tiles.
pub(super) struct Kpi {
    /// Every segment, read at subscribe.
    segments: HashMap<SegmentId, KpiSegment>,
    last: (Instant, u64),
}

impl Kpi {
    pub(super) async fn new(session: &Session) -> Self {
        let segments = match &session.store {
            Some(store) => store.segments().await.unwrap_or_default(),
            None => Vec::new(),
        };
        Self {
            segments: segments
                .into_iter()
                .map(|s: RoadSegment| {
                    let k = KpiSegment {
                        name: s.name,
                        length_m: s.length_m,
                        free_flow_kmh: s.free_flow_kmh,
                    };
                    (s.id, k)
                })
                .collect(),
            last: (Instant::now(), session.hub.readings_applied()),
        }
    }

    pub(super) fn frame(&mut self, hub: &LiveHub) -> String {
        let now = Instant::now();
        let applied = hub.readings_applied();
        let secs = now.duration_since(self.last.0).as_secs_f64();
        // The first frame of a session comes at once: no interval to count over yet, so no
        // rate (null) rather than a misleading 0.
        let rate = (secs >= 0.5).then(|| applied.saturating_sub(self.last.1) as f64 / secs);
        self.last = (now, applied);
        let (online, offline) = hub.presence_counts(EventTime::now());
        let mut open = [0u64; 3];
        for a in hub.open_alerts() {
            open[match a.severity {
                Severity::Critical => 0,
                Severity::Warning => 1,
                Severity::Info => 2,
            }] += 1;
        }
        let states = hub.all_segment_states();
        // City speed: the segments' mean speeds weighted by their length.
        let (mut weighted, mut length) = (0.0, 0.0);
        for s in &states {
            if let Some(v) = s.speed_kmh {
                let l = self.segments.get(&s.segment).map_or(1.0, |k| k.length_m.max(1.0));
                weighted += v * l;
                length += l;
            }
        }
        // Worst segments by the one rule of `stream::los::worst_first`.
        let mut worst: Vec<(Standing<'_>, &SegmentState, f64)> = states
            .iter()
            .filter_map(|s| {
                let free_flow = self.segments.get(&s.segment)?.free_flow_kmh;
                let ratio = stream::speed_ratio(s.speed_kmh?, free_flow)?;
                let standing = Standing { segment: s.segment.as_str(), ratio, los: s.los? };
                Some((standing, s, free_flow))
            })
            .collect();
        worst.sort_by(|a, b| worst_first(&a.0, &b.0));
        let worst: Vec<Value> = worst
            .iter()
            .take(WORST_SEGMENTS)
            .map(|(standing, s, free_flow)| {
                json!({
                    "segment": s.segment,
                    "name": self.segments.get(&s.segment).map(|k| k.name.as_str()),
                    "los": standing.los.as_str(),
                    "speed_kmh": s.speed_kmh,
                    "free_flow_kmh": free_flow,
                    "ratio": (standing.ratio * 1000.0).round() / 1000.0,
                })
            })
            .collect();
        json!({"type": "kpi", "kpi": {
            "devices_online": online,
            "devices_offline": offline,
            "readings_per_s": rate.map(|r| (r * 10.0).round() / 10.0),
            "alerts_open": {"critical": open[0], "warning": open[1], "info": open[2]},
            "city_speed_kmh": (length > 0.0).then(|| (weighted / length * 10.0).round() / 10.0),
            "worst_segments": worst,
        }})
        .to_string()
    }
}
