//! The simulated day on the Florence seed and the demo fleet: rush hours, the incident,
//! NO2 and PM10 episodes, counts off any grid, determinism by seed.

use stream::LevelOfService;
use telemetry::segment::{parse_geojson, FLORENCE_SEED};

use super::*;
use crate::fleet::plan_fleet;

/// The Florence seed's segments in the store's order (by id), as `sccr demo` reads them.
fn segments() -> Vec<RoadSegment> {
    let mut segs = parse_geojson(FLORENCE_SEED).unwrap();
    segs.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    segs
}

/// The demo's default fleet (60 devices) with the demo's seed.
fn demo_city() -> City {
    City::new(&plan_fleet(&segments(), 60), 42)
}

/// Monday 2025-11-24 00:00 local (CET) plus `h` hours.
fn monday(h: f64) -> EventTime {
    EventTime(1_763_938_800_000 + (h * HOUR_MS) as i64)
}

fn los(city: &City, i: usize, t: EventTime) -> LevelOfService {
    let seg = city.segments().nth(i).unwrap();
    LevelOfService::from_speeds(city.traffic(i, t).speed_kmh, seg.free_flow_kmh).unwrap()
}

#[test]
fn weekday_rush_hours_congest_the_arterials_and_nights_are_free() {
    let city = demo_city();
    let n = city.segments.len();
    let congested = city.congested_in_morning();
    assert!(congested.len() >= 4, "{congested:?}");
    for day in 0..5 {
        let at = |h: f64| monday(24.0 * f64::from(day) + h);
        for seg in &congested {
            let i = city.segment_index(seg.id.as_str()).unwrap();
            let l = los(&city, i, at(8.5));
            assert!(l >= LevelOfService::E, "day {day} 08:30 {}: {l}", seg.id);
        }
        let grades: Vec<LevelOfService> = (0..n).map(|i| los(&city, i, at(8.5))).collect();
        let f = grades.iter().filter(|&&l| l == LevelOfService::F).count();
        let d_or_e =
            grades.iter().filter(|&&l| l == LevelOfService::D || l == LevelOfService::E).count();
        assert!((1..=3).contains(&f), "day {day}: {f} segments at F: {grades:?}");
        assert!(d_or_e >= 4, "day {day}: {d_or_e} at D-E: {grades:?}");
        // The evening peak congests too.
        let evening = (0..n).filter(|&i| los(&city, i, at(18.25)) >= LevelOfService::E).count();
        assert!(evening >= 3, "day {day}: {evening} segments at E-F at 18:15");
        // 03:00 and noon: free flow everywhere.
        for h in [3.0, 12.0] {
            for i in 0..n {
                let l = los(&city, i, at(h));
                assert!(l <= LevelOfService::B, "day {day} {h}:00 segment {i}: {l}");
            }
        }
    }
    // The weekend never congests.
    for h in (0..96).map(|q| 5.0 * 24.0 + f64::from(q) * 0.5) {
        for i in 0..n {
            if Some(i) == city.incident {
                continue;
            }
            assert!(los(&city, i, monday(h)) <= LevelOfService::C, "weekend {h} segment {i}");
        }
    }
}

#[test]
fn the_incident_segment_breaks_down_inside_its_window_only() {
    let city = demo_city();
    let i = city.segment_index(INCIDENT_SEGMENT).unwrap();
    assert_eq!(city.incident_segment().unwrap().id.as_str(), INCIDENT_SEGMENT);
    let mut bad_minutes = 0;
    // Every 10 s of a weekday (rush hours included).
    for step in 0..(24 * 360) {
        let t = EventTime(monday(0.0).millis() + step * 10_000);
        let phase = t.millis().rem_euclid(INCIDENT_PERIOD_MS);
        let l = los(&city, i, t);
        if (45_000..INCIDENT_DURATION_MS - 60_000).contains(&phase) {
            assert_eq!(l, LevelOfService::F, "at {t}: {l}");
        } else if phase >= INCIDENT_DURATION_MS {
            assert!(l <= LevelOfService::C, "outside the incident at {t}: {l}");
        }
        if l >= LevelOfService::E {
            bad_minutes += 1;
        }
    }
    // 96 incidents a day, each 5-8 minutes at E-F (counted in 10 s steps).
    let per_incident = f64::from(bad_minutes) / 6.0 / 96.0;
    assert!((5.0..=8.0).contains(&per_incident), "{per_incident} minutes per incident");
    // The neighbours are not affected.
    let other = (0..city.segments.len()).find(|&j| j != i).unwrap();
    let quiet = EventTime(monday(3.0).millis() + 120_000);
    assert!(los(&city, other, quiet) <= LevelOfService::B);
}

#[test]
fn the_incident_needs_a_detector() {
    // The seed file's order: with 37 devices viale-lavagnini's is an air-quality station.
    let segs = parse_geojson(FLORENCE_SEED).unwrap();
    let city = City::new(&plan_fleet(&segs, 37), 42);
    let seg = city.incident_segment().unwrap();
    assert_ne!(seg.id.as_str(), INCIDENT_SEGMENT);
    assert_eq!(seg.kind, "ring_road");
    let aq: Vec<_> =
        plan_fleet(&segs, 60).into_iter().filter(|d| d.kind == DeviceKind::AirQuality).collect();
    assert!(City::new(&aq, 42).incident_segment().is_none());
}

#[test]
fn no2_episodes_exceed_the_hourly_limit_in_the_evening_peak() {
    let city = demo_city();
    let stations: Vec<usize> = (0..city.devices.len())
        .filter(|&d| city.devices[d].kind == DeviceKind::AirQuality)
        .collect();
    let limit = 200.0; // stream's aq-no2-hourly default (EU hourly limit value)
    for day in 0..7 {
        let episodes = city.episodes(monday(24.0 * f64::from(day) + 12.0));
        if day >= 5 {
            assert!(episodes.is_empty(), "no episode at weekends");
        } else {
            assert!((1..=2).contains(&episodes.len()), "day {day}: {episodes:?}");
        }
        for &d in &stations {
            // One sample a minute over the day.
            let no2: Vec<f64> = (0..1_440)
                .map(|m| city.air(d, monday(24.0 * f64::from(day) + f64::from(m) / 60.0)).no2)
                .collect();
            let above: Vec<usize> = (0..no2.len()).filter(|&m| no2[m] > limit).collect();
            let hourly_max =
                no2.windows(60).map(|w| w.iter().sum::<f64>() / 60.0).fold(0.0, f64::max);
            let has_episode = episodes.iter().any(|(s, _)| *s == city.devices[d].station);
            if has_episode {
                assert!(
                    (20..=40).contains(&above.len()),
                    "day {day} station {d}: {} minutes",
                    above.len()
                );
                let first = above[0] as f64 / 60.0;
                assert!((17.5..20.0).contains(&first), "starts at {first}");
                assert!(hourly_max > limit, "hourly mean {hourly_max}");
            } else {
                assert!(above.is_empty(), "day {day} station {d}: NO2 above the limit");
                assert!(hourly_max > 15.0 && hourly_max < 150.0, "{hourly_max}");
            }
        }
    }
}

#[test]
fn pm10_episode_days_raise_the_daily_mean_past_the_limit() {
    let city = demo_city();
    let stations: Vec<usize> = (0..city.devices.len())
        .filter(|&d| city.devices[d].kind == DeviceKind::AirQuality)
        .collect();
    let daily_max = |day: i32| {
        stations
            .iter()
            .map(|&d| {
                (0..288)
                    .map(|k| city.air(d, monday(24.0 * f64::from(day) + f64::from(k) / 12.0)).pm10)
                    .sum::<f64>()
                    / 288.0
            })
            .fold(0.0, f64::max)
    };
    let episode_days: Vec<i32> =
        (0..14).filter(|&d| city.pm10_episode_day(monday(24.0 * f64::from(d) + 12.0))).collect();
    assert!((2..=8).contains(&episode_days.len()), "{episode_days:?}");
    for day in 0..14 {
        let max = daily_max(day);
        if episode_days.contains(&day) {
            assert!(max > 50.0, "day {day}: highest daily PM10 mean {max}");
        } else {
            assert!(max < 45.0, "day {day}: highest daily PM10 mean {max}");
        }
    }
}

#[test]
fn hourly_flows_are_counts_not_a_coarse_grid() {
    let city = demo_city();
    let loops: Vec<usize> = (0..city.devices.len())
        .filter(|&d| city.devices[d].kind == DeviceKind::TrafficLoop)
        .take(12)
        .collect();
    let (mut hours, mut on_grid) = (0, 0);
    for &d in &loops {
        let seg = city.devices[d].segment;
        for h in 0..24 {
            // Reports every 2 s, as the live demo sends them.
            let start = monday(f64::from(h)).millis();
            let vehicles: f64 =
                (1..=1_800).map(|k| city.readings(d, EventTime(start + k * 2_000), 2.0)[0].1).sum();
            let expected: f64 = (1..=60)
                .map(|m| city.traffic(seg, EventTime(start + m * 60_000)).flow_vph)
                .sum::<f64>()
                / 60.0;
            let tolerance = 4.0 * expected.sqrt() + 0.02 * expected + 5.0;
            assert!((vehicles - expected).abs() < tolerance, "hour {h}: {vehicles} vs {expected}");
            hours += 1;
            if vehicles % 30.0 == 0.0 {
                on_grid += 1;
            }
        }
    }
    // Random counts land on a multiple of 30 about one time in 30.
    assert!(on_grid * 10 < hours, "{on_grid} of {hours} hourly flows are multiples of 30");
    // 5-minute reports (the back-fill) count a few hundred vehicles at the peak.
    let busy = city.segment_index("viale-strozzi").unwrap();
    let d = (0..city.devices.len())
        .find(|&d| {
            city.devices[d].segment == busy && city.devices[d].kind == DeviceKind::TrafficLoop
        })
        .unwrap();
    let peak = city.readings(d, monday(8.5), 300.0)[0].1;
    assert!(peak > 150.0 && peak < 450.0 && peak.fract() == 0.0, "{peak}");
}

#[test]
fn readings_are_deterministic_valid_and_depend_on_the_seed() {
    let segs = segments();
    let fleet = plan_fleet(&segs, 60);
    let (a, b, c) = (City::new(&fleet, 42), City::new(&fleet, 42), City::new(&fleet, 7));
    let v = telemetry::Validator::new(telemetry::ValidationConfig::default());
    let mut differs = false;
    for (d, device) in fleet.iter().enumerate() {
        for q in 0..96 {
            let t = monday(f64::from(q) * 0.25 + 24.0 * f64::from(q % 7));
            for interval in [2.0, 300.0] {
                let r = a.readings(d, t, interval);
                assert_eq!(r, b.readings(d, t, interval));
                differs |= r != c.readings(d, t, interval);
                for (metric, value) in r {
                    let reading = telemetry::Reading {
                        device: device.id.clone(),
                        metric,
                        time: t,
                        value,
                        seq: None,
                    };
                    v.check_reading(&reading, t)
                        .unwrap_or_else(|e| panic!("{metric} {value}: {e}"));
                }
            }
        }
    }
    assert!(differs, "another seed gives another city");
}
