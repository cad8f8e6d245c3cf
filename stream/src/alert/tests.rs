//! Rule validation and the engine: lifecycle, storm protection, restart, and property
//! tests on explicit time with disorder, duplicates, gaps and clock skew. The shared
//! drivers are here; each concern has its file under `tests/`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use telemetry::{DeviceId, EventTime, MetricId, Reading, SegmentId};

use super::*;
use crate::los::LevelOfService;
use crate::segment_state::SegmentState;

const T0: i64 = 1_763_892_000_000;

fn t(s: i64) -> EventTime {
    EventTime(T0 + s * 1_000)
}

fn dev(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

fn seg(s: &str) -> SegmentId {
    SegmentId::parse(s).unwrap()
}

fn rules(toml_text: &str) -> RuleSet {
    let config: AlertRulesConfig = toml::from_str(toml_text).unwrap();
    config.validate().unwrap()
}

fn reading(d: &str, metric: MetricId, ts: i64, v: f64) -> Reading {
    Reading { device: dev(d), metric, time: t(ts), value: v, seq: None }
}

const NO2_HIGH: &str = r#"
air_quality_defaults = false
[[rules]]
id = "no2-high"
severity = "warning"
[rules.threshold]
metric = "no2_ugm3"
above = 200.0
clear = 180.0
for = "1m"
"#;

/// A jammed window of segment `viale-a` from minute `m`, graded `los`.
fn jam(m: i64, los: LevelOfService) -> SegmentState {
    SegmentState {
        segment: seg("viale-a"),
        start: t(m * 60),
        end: t(m * 60 + 60),
        flow_vph: Some(900.0),
        speed_kmh: Some(12.0),
        occupancy_pct: Some(40.0),
        los: Some(los),
        detectors: 2,
        revision: 0,
        forecast: None,
    }
}

fn transitions(out: &[AlertOutput]) -> Vec<(AlertId, Option<AlertState>, AlertState)> {
    out.iter()
        .filter_map(|o| match o {
            AlertOutput::Transition { transition: tr, .. } => Some((tr.alert, tr.from, tr.to)),
            AlertOutput::Updated { .. } => None,
        })
        .collect()
}

mod anomaly;
mod checkpoint;
mod health;
mod isa;
mod lifecycle;
mod properties;
mod restart;
mod rules;
mod segment_threshold;
mod storm;
