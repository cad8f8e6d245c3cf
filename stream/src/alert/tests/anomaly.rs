//! Anomaly rules: deviations from the learned baseline per segment window and per device
//! reading, slots without enough samples skipped, hysteresis, and their validation.

use std::sync::Arc;

use telemetry::baseline::{BaselineOn, BaselineRow, Baselines, SlotClock};

use super::*;

/// Every slot of the week learned: centre 50, spread 5, from `samples` weeks.
fn flat_baselines(on: BaselineOn, subject: &str, metric: &str, samples: u32) -> Arc<Baselines> {
    let rows: Vec<BaselineRow> = (0..672)
        .map(|slot| BaselineRow {
            on,
            subject: subject.into(),
            metric: metric.into(),
            slot,
            centre: 50.0,
            spread: 5.0,
            samples,
        })
        .collect();
    let mut b = Baselines::new(SlotClock::default());
    b.extend(&rows);
    Arc::new(b)
}

fn window(segment: &str, m: i64, speed: f64) -> SegmentState {
    SegmentState {
        segment: seg(segment),
        start: t(m * 60),
        end: t(m * 60 + 60),
        flow_vph: Some(900.0),
        speed_kmh: Some(speed),
        occupancy_pct: Some(20.0),
        los: Some(LevelOfService::B),
        detectors: 2,
        revision: 0,
        forecast: None,
    }
}

const UNUSUAL: &str = r#"
air_quality_defaults = false
[[rules]]
id = "unusual"
severity = "warning"
anomaly = { metric = "speed_kmh", on = "segment", direction = "below", k = 3.0, clear_k = 1.0, for = "2m", min_samples = 3 }
"#;

#[test]
fn a_segment_far_below_its_baseline_raises_and_clears_with_hysteresis() {
    let mut e = AlertEngine::new(rules(UNUSUAL));
    let mut out = Vec::new();
    // Without baselines nothing is judged.
    e.on_segment_state(&window("viale-a", 0, 5.0), t(65), &mut out);
    e.on_segment_state(&window("viale-a", 1, 5.0), t(125), &mut out);
    e.on_segment_state(&window("viale-a", 2, 5.0), t(185), &mut out);
    assert!(out.is_empty());
    // Learned from too few weeks: skipped too.
    e.set_baselines(flat_baselines(BaselineOn::Segment, "viale-a", "speed_kmh", 2));
    e.on_segment_state(&window("viale-a", 3, 5.0), t(245), &mut out);
    e.on_segment_state(&window("viale-a", 4, 5.0), t(305), &mut out);
    e.on_segment_state(&window("viale-a", 5, 5.0), t(365), &mut out);
    assert!(out.is_empty());
    assert_eq!(
        e.baseline_needs().into_iter().collect::<Vec<_>>(),
        [(BaselineOn::Segment, "speed_kmh")]
    );
    e.set_baselines(flat_baselines(BaselineOn::Segment, "viale-a", "speed_kmh", 4));
    // 36 km/h is within 3 spreads (trip below 35): quiet. 20 km/h (40 %) for 2 minutes: raised.
    e.on_segment_state(&window("viale-a", 6, 36.0), t(425), &mut out);
    e.on_segment_state(&window("viale-a", 7, 20.0), t(485), &mut out);
    assert!(out.is_empty());
    e.on_segment_state(&window("viale-a", 8, 20.0), t(545), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    let alert = out[0].alert();
    assert_eq!(
        (alert.key.subject.clone(), alert.since),
        (Subject::Segment(seg("viale-a")), t(420))
    );
    assert_eq!(alert.code, MessageCode::AnomalyBelow);
    assert_eq!(
        (
            alert.params["value"].as_f64(),
            alert.params["centre"].as_f64(),
            alert.params["spread"].as_f64()
        ),
        (Some(20.0), Some(50.0), Some(5.0))
    );
    assert_eq!(
        alert.message,
        "segment viale-a: speed_kmh 20.0 km/h, below its usual 50.0 km/h by more than 3 × 5.0 km/h for 2m"
    );
    // 40 km/h is past the trip level but not back within 1 spread (45): still raised.
    out.clear();
    e.on_segment_state(&window("viale-a", 9, 40.0), t(605), &mut out);
    assert!(out.is_empty());
    e.on_segment_state(&window("viale-a", 10, 46.0), t(665), &mut out);
    assert_eq!(transitions_of(&out), [(Subject::Segment(seg("viale-a")), AlertState::Returned)]);
}

fn transitions_of(out: &[AlertOutput]) -> Vec<(Subject, AlertState)> {
    out.iter()
        .filter_map(|o| match o {
            AlertOutput::Transition { alert, transition } => {
                Some((alert.key.subject.clone(), transition.to))
            }
            AlertOutput::Updated { .. } => None,
        })
        .collect()
}

#[test]
fn a_device_reading_above_its_baseline_raises_per_device() {
    let mut e = AlertEngine::new(rules(
        r#"
air_quality_defaults = false
[[rules]]
id = "busy"
severity = "info"
anomaly = { metric = "occupancy_pct", direction = "above", for = "30s" }
"#,
    ));
    e.set_baselines(flat_baselines(BaselineOn::Device, "loop-1", "occupancy_pct", 4));
    let mut out = Vec::new();
    // Trip above 50 + 3 × 5 = 65; another device has no baseline and is never judged.
    for (s, v) in [(0, 70.0), (10, 80.0), (20, 66.0)] {
        e.on_reading(&reading("loop-1", MetricId::OccupancyPct, s, v), t(s), &mut out);
        e.on_reading(&reading("loop-2", MetricId::OccupancyPct, s, 99.0), t(s), &mut out);
    }
    assert!(out.is_empty());
    e.on_reading(&reading("loop-1", MetricId::OccupancyPct, 30, 90.0), t(30), &mut out);
    assert_eq!(transitions_of(&out), [(Subject::Device(dev("loop-1")), AlertState::Raised)]);
    assert_eq!(out[0].alert().code, MessageCode::AnomalyAbove);
    // Default clear_k = k / 2: 57.5 and under clears.
    out.clear();
    e.on_reading(&reading("loop-1", MetricId::OccupancyPct, 40, 60.0), t(40), &mut out);
    assert!(out.is_empty());
    e.on_reading(&reading("loop-1", MetricId::OccupancyPct, 50, 57.0), t(50), &mut out);
    assert_eq!(transitions_of(&out), [(Subject::Device(dev("loop-1")), AlertState::Returned)]);
}

#[test]
fn anomaly_rules_are_validated_with_their_paths() {
    let errors = |anomaly: &str| {
        let text = format!(
            "air_quality_defaults = false\n[[rules]]\nid = \"a\"\nseverity = \"info\"\nanomaly = {anomaly}\n"
        );
        let doc: AlertRulesConfig = toml::from_str(&text).unwrap();
        doc.validate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| (e.path, e.beyond_schema))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        errors(r#"{ metric = "headway_s", direction = "below" }"#),
        [("rules[0].anomaly.metric".to_owned(), false)]
    );
    assert_eq!(
        errors(r#"{ metric = "flow_vph", direction = "below", k = 0.0, min_samples = 0 }"#),
        [
            ("rules[0].anomaly.metric".to_owned(), false),
            ("rules[0].anomaly.k".to_owned(), false),
            ("rules[0].anomaly.min_samples".to_owned(), false)
        ]
    );
    assert_eq!(
        errors(
            r#"{ metric = "flow_vph", on = "segment", direction = "above", k = 2.0, clear_k = 3.0 }"#
        ),
        [("rules[0].anomaly.clear_k".to_owned(), true)]
    );
    let text = "air_quality_defaults = false\n[[rules]]\nid = \"a\"\nseverity = \"info\"\nscope = { kind = \"traffic_loop\" }\nanomaly = { metric = \"speed_kmh\", on = \"segment\", direction = \"below\" }\n";
    let doc: AlertRulesConfig = toml::from_str(text).unwrap();
    let e = doc.validate().unwrap_err();
    assert_eq!(e.0[0].path, "rules[0].scope", "{e}");
}
