//! Detector-health rules: each check raises and clears with its flag interval, restarts
//! keep its state, and its settings are validated under their keys.

use std::sync::Arc;

use telemetry::baseline::{BaselineOn, BaselineRow, Baselines, SlotClock};
use telemetry::health::HealthFlag;

use super::*;
use crate::alert::health::FlagEdge;

fn health_rules(table: &str) -> RuleSet {
    rules(&format!(
        "air_quality_defaults = false\n[[rules]]\nid = \"h\"\nseverity = \"info\"\nhealth = {table}\n"
    ))
}

fn edges(e: &mut AlertEngine) -> Vec<(HealthFlag, bool, EventTime)> {
    e.take_flags()
        .into_iter()
        .map(|f| match f {
            FlagEdge::Open { flag, since, .. } => (flag, true, since),
            FlagEdge::Close { flag, at, .. } => (flag, false, at),
        })
        .collect()
}

fn states(out: &[AlertOutput]) -> Vec<AlertState> {
    out.iter()
        .filter_map(|o| match o {
            AlertOutput::Transition { transition, .. } => Some(transition.to),
            AlertOutput::Updated { .. } => None,
        })
        .collect()
}

#[test]
fn a_stuck_value_raises_with_its_flag_and_a_change_clears_it() {
    let mut e = AlertEngine::new(health_rules(r#"{ check = "stuck", readings = 5, for = "2m" }"#));
    let mut out = Vec::new();
    // Zeros for an hour are a quiet road, not a stuck detector.
    for s in (0..3_600).step_by(10) {
        e.on_reading(&reading("loop-1", MetricId::VehicleCount, s, 0.0), t(s), &mut out);
    }
    assert!(out.is_empty() && edges(&mut e).is_empty());
    // 42.0 km/h from 3600 s on: held at 3720 s (2 minutes, 13 readings).
    for s in (3_600..=3_720).step_by(10) {
        e.on_reading(&reading("loop-1", MetricId::SpeedKmh, s, 42.0), t(s), &mut out);
        e.on_reading(
            &reading("loop-1", MetricId::VehicleCount, s, 3.0 + (s % 20) as f64),
            t(s),
            &mut out,
        );
    }
    assert_eq!(states(&out), [AlertState::Raised]);
    let alert = out[0].alert();
    assert_eq!(alert.code, MessageCode::HealthStuck);
    assert_eq!(alert.since, t(3_600));
    assert_eq!(alert.params["metric"], "speed_kmh");
    assert_eq!(alert.params["readings"], 13);
    assert_eq!(edges(&mut e), [(HealthFlag::Stuck, true, t(3_600))]);
    // A duplicate changes nothing; a new value ends the run and clears.
    out.clear();
    e.on_reading(&reading("loop-1", MetricId::SpeedKmh, 3_720, 42.0), t(3_721), &mut out);
    e.on_reading(&reading("loop-1", MetricId::SpeedKmh, 3_730, 41.5), t(3_730), &mut out);
    assert_eq!(states(&out), [AlertState::Returned]);
    assert_eq!(edges(&mut e), [(HealthFlag::Stuck, false, t(3_730))]);
}

/// Baselines of `vehicle_count` for `loop-1`: `centre` vehicles per reading all week.
fn counts(centre: f64) -> Arc<Baselines> {
    let rows: Vec<BaselineRow> = (0..672)
        .map(|slot| BaselineRow {
            on: BaselineOn::Device,
            subject: "loop-1".into(),
            metric: "vehicle_count".into(),
            slot,
            centre,
            spread: 1.0,
            samples: 4,
        })
        .collect();
    let mut b = Baselines::new(SlotClock::default());
    b.extend(&rows);
    Arc::new(b)
}

#[test]
fn zero_counts_in_busy_windows_raise_and_a_vehicle_clears() {
    let rule = r#"{ check = "zero_busy", window = "1m", for = "3m", busy_min_count = 10.0 }"#;
    let mut e = AlertEngine::new(health_rules(rule));
    assert_eq!(
        e.baseline_needs().into_iter().collect::<Vec<_>>(),
        [(BaselineOn::Device, "vehicle_count")]
    );
    let mut out = Vec::new();
    let feed = |e: &mut AlertEngine, from: i64, to: i64, v: f64, out: &mut Vec<AlertOutput>| {
        for s in (from..to).step_by(10) {
            e.on_reading(&reading("loop-1", MetricId::VehicleCount, s, v), t(s), out);
        }
    };
    // Without a baseline nothing is busy; with a quiet one (0.5 × 6 readings = 3 < 10) neither.
    feed(&mut e, 0, 300, 0.0, &mut out);
    e.set_baselines(counts(0.5));
    feed(&mut e, 300, 610, 0.0, &mut out);
    assert!(out.is_empty() && edges(&mut e).is_empty());
    // Busy (5 per reading, 30 a window): three empty windows [600, 780) raise when the
    // first reading of the next window arrives.
    e.set_baselines(counts(5.0));
    feed(&mut e, 610, 780, 0.0, &mut out);
    assert!(out.is_empty());
    feed(&mut e, 780, 790, 0.0, &mut out);
    assert_eq!(states(&out), [AlertState::Raised]);
    assert_eq!(out[0].alert().code, MessageCode::HealthZeroBusy);
    assert_eq!(out[0].alert().params["usual"], 30.0);
    assert_eq!(edges(&mut e), [(HealthFlag::ZeroBusy, true, t(600))]);
    // A window with a vehicle clears; the flag ends where that window begins.
    out.clear();
    feed(&mut e, 790, 840, 0.0, &mut out);
    feed(&mut e, 840, 850, 2.0, &mut out);
    feed(&mut e, 850, 910, 0.0, &mut out);
    assert_eq!(states(&out), [AlertState::Returned]);
    assert_eq!(edges(&mut e), [(HealthFlag::ZeroBusy, false, t(840))]);
}

fn loop_readings(
    e: &mut AlertEngine,
    s: i64,
    count: f64,
    speed: f64,
    occupancy: f64,
    out: &mut Vec<AlertOutput>,
) {
    for (m, v) in [
        (MetricId::VehicleCount, count),
        (MetricId::SpeedKmh, speed),
        (MetricId::OccupancyPct, occupancy),
    ] {
        e.on_reading(&reading("loop-1", m, s, v), t(s), out);
    }
}

#[test]
fn implausible_combinations_raise_with_their_reason() {
    let rule = r#"{ check = "implausible", window = "1m", for = "2m", interval = "10s" }"#;
    let mut e = AlertEngine::new(health_rules(rule));
    let mut out = Vec::new();
    // 5 vehicles every 10 s is 1800 veh/h; at 50 km/h the occupancy should be about
    // 21.6 %: 20 % is plausible.
    for s in (0..300).step_by(10) {
        loop_readings(&mut e, s, 5.0, 50.0, 20.0, &mut out);
    }
    assert!(out.is_empty() && edges(&mut e).is_empty());
    // An occupancy of 0 with that flow, for two windows [300, 420).
    for s in (300..430).step_by(10) {
        loop_readings(&mut e, s, 5.0, 50.0, 0.0, &mut out);
    }
    assert_eq!(states(&out), [AlertState::Raised]);
    let a = out[0].alert();
    assert_eq!(a.code, MessageCode::HealthImplausible);
    assert_eq!(
        (
            a.params["reason"].as_str(),
            a.params["flow_vph"].as_f64(),
            a.params["occupancy_pct"].as_f64()
        ),
        (Some("flow_without_occupancy"), Some(1800.0), Some(0.0))
    );
    assert_eq!(edges(&mut e), [(HealthFlag::Implausible, true, t(300))]);
    // Speed 2 km/h with 1800 veh/h implies 540 % occupancy: still implausible (the
    // fundamental diagram), so it holds; then plausible figures clear it.
    out.clear();
    for s in (430..480).step_by(10) {
        loop_readings(&mut e, s, 5.0, 2.0, 30.0, &mut out);
    }
    for s in (480..550).step_by(10) {
        loop_readings(&mut e, s, 5.0, 50.0, 20.0, &mut out);
    }
    assert_eq!(states(&out), [AlertState::Returned]);
    assert_eq!(edges(&mut e), [(HealthFlag::Implausible, false, t(480))]);
}

#[test]
fn a_silent_device_raises_missing_data_and_clears_when_it_reports_again() {
    let rule = r#"{ check = "missing", window = "2m", interval = "10s", max_missing = 0.5, clear_missing = 0.2 }"#;
    let mut e = AlertEngine::new(health_rules(rule));
    let mut out = Vec::new();
    // Reports every 10 s for 5 minutes, the clock ticking every second: nothing missing.
    for s in 0..300 {
        if s % 10 == 0 {
            e.on_reading(
                &reading("loop-1", MetricId::SpeedKmh, s, 40.0 + (s % 7) as f64),
                t(s),
                &mut out,
            );
        }
        e.tick(t(s), &mut out);
    }
    assert!(out.is_empty() && edges(&mut e).is_empty());
    // Silent from 300 s: past half of the window's 12 reports missing within about a minute.
    let mut raised_at = None;
    for s in 300..500 {
        e.tick(t(s), &mut out);
        if raised_at.is_none() && !out.is_empty() {
            raised_at = Some(s);
        }
    }
    let raised_at = raised_at.expect("missing data raised");
    assert!((360..=380).contains(&raised_at), "raised at {raised_at} s");
    assert_eq!(states(&out), [AlertState::Raised]);
    assert_eq!(out[0].alert().code, MessageCode::HealthMissing);
    assert_eq!(edges(&mut e), [(HealthFlag::Missing, true, t(raised_at))]);
    // Back: clears once at most 20 % of a window is missing.
    out.clear();
    for s in 500..700 {
        if s % 10 == 0 {
            e.on_reading(
                &reading("loop-1", MetricId::SpeedKmh, s, 40.0 + (s % 7) as f64),
                t(s),
                &mut out,
            );
        }
        e.tick(t(s), &mut out);
    }
    assert_eq!(states(&out), [AlertState::Returned]);
    let closed = edges(&mut e);
    assert!(
        matches!(closed.as_slice(), [(HealthFlag::Missing, false, at)] if *at > t(590) && *at < t(640)),
        "{closed:?}"
    );
}

#[test]
fn a_raised_health_condition_survives_a_restart_and_a_removed_rule_closes_its_flag() {
    let set = health_rules(r#"{ check = "stuck", readings = 3, for = "30s" }"#);
    let mut e = AlertEngine::new(set.clone());
    let mut out = Vec::new();
    for s in (0..=40).step_by(10) {
        e.on_reading(&reading("loop-1", MetricId::OccupancyPct, s, 7.5), t(s), &mut out);
    }
    assert_eq!(states(&out), [AlertState::Raised]);
    let state = e.export_state();
    let mut again = AlertEngine::new(set);
    out.clear();
    again.restore_state(state, t(41), &mut out);
    out.clear();
    again.on_reading(&reading("loop-1", MetricId::OccupancyPct, 50, 7.5), t(50), &mut out);
    assert!(out.is_empty(), "{out:?}");
    again.on_reading(&reading("loop-1", MetricId::OccupancyPct, 60, 9.0), t(60), &mut out);
    assert_eq!(states(&out), [AlertState::Returned]);
    assert_eq!(edges(&mut again), [(HealthFlag::Stuck, false, t(60))]);
    // Raised again, then the rule is removed: its flag closes at the change.
    for s in (70..=110).step_by(10) {
        again.on_reading(&reading("loop-1", MetricId::OccupancyPct, s, 11.0), t(s), &mut out);
    }
    assert_eq!(edges(&mut again), [(HealthFlag::Stuck, true, t(70))]);
    again.set_rules(rules("air_quality_defaults = false\n"), t(120), &mut out);
    assert_eq!(edges(&mut again), [(HealthFlag::Stuck, false, t(120))]);
}

#[test]
fn health_settings_are_validated_under_their_keys() {
    let errors = |table: &str| {
        let text = format!(
            "air_quality_defaults = false\n[[rules]]\nid = \"a\"\nseverity = \"info\"\nhealth = {table}\n"
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
        errors(r#"{ check = "stuck", window = "5m", readings = 1 }"#),
        [
            ("rules[0].health.window".to_owned(), false),
            ("rules[0].health.readings".to_owned(), false),
        ]
    );
    assert_eq!(
        errors(r#"{ check = "missing", max_missing = 1.5 }"#),
        [("rules[0].health.max_missing".to_owned(), false)]
    );
    assert_eq!(
        errors(r#"{ check = "missing", max_missing = 0.3, clear_missing = 0.4 }"#),
        [("rules[0].health.clear_missing".to_owned(), true)]
    );
    assert_eq!(
        errors(r#"{ check = "implausible", tolerance = 0.5, window = "10s" }"#),
        [
            ("rules[0].health.window".to_owned(), true),
            ("rules[0].health.tolerance".to_owned(), false),
        ]
    );
    assert_eq!(
        errors(r#"{ check = "stuck", metrics = ["speed_kmh", "sped"] }"#),
        [("rules[0].health.metrics[1]".to_owned(), false)]
    );
    let bad: Result<AlertRulesConfig, _> = toml::from_str(
        "[[rules]]\nid = \"a\"\nseverity = \"info\"\nhealth = { check = \"stuk\" }\n",
    );
    assert!(bad.unwrap_err().to_string().contains("stuck"));
}
