//! Daily profiles of Florence traffic and air quality. Pure functions of local time, so the
//! simulated city has a morning peak (07:30–09:30), an evening peak (17:00–19:30), quieter
//! weekends, and pollution that follows traffic.

use telemetry::{EventTime, MetricId, RoadSegment};

/// Florence local time offset from UTC in hours (CET; summer time is ignored here).
const UTC_OFFSET_H: f64 = 1.0;

/// (hour of day in [0, 24), is weekend)
pub fn local_clock(t: EventTime) -> (f64, bool) {
    let hours = t.millis() as f64 / 3_600_000.0 + UTC_OFFSET_H;
    let hour = hours.rem_euclid(24.0);
    // 1970-01-01 was a Thursday: day 0 → Thursday.
    let day = (hours / 24.0).floor() as i64;
    let weekday = (day + 3).rem_euclid(7); // 0 = Monday
    (hour, weekday >= 5)
}

fn bump(hour: f64, centre: f64, width: f64) -> f64 {
    (-((hour - centre) / width).powi(2)).exp()
}

/// Demand as a fraction of capacity, 0.05..~1.
pub fn traffic_demand(hour: f64, weekend: bool) -> f64 {
    let night = 0.05;
    if weekend {
        night + 0.45 * bump(hour, 12.0, 3.5) + 0.35 * bump(hour, 18.5, 2.0)
    } else {
        night
            + 0.25 * bump(hour, 13.0, 4.0)
            + 0.85 * bump(hour, 8.5, 1.0)
            + 0.8 * bump(hour, 18.2, 1.3)
    }
    .min(1.1)
}

/// Readings of a traffic loop over one reporting interval. `noise` in [-1, 1].
/// `noise` in [-1, 1]; `dither` uniform in [0, 1): the vehicle count is rounded up with
/// probability equal to its fraction, so counts average to the flow (plain rounding would
/// report no vehicle at all whenever fewer than half a vehicle passes per interval).
pub fn traffic_readings(
    seg: &RoadSegment,
    demand: f64,
    interval_s: f64,
    noise: f64,
    dither: f64,
) -> Vec<(MetricId, f64)> {
    let x = (demand * (1.0 + 0.1 * noise)).clamp(0.0, 1.1);
    let flow_vph = x * seg.capacity_vph;
    let speed = (seg.free_flow_kmh * (1.0 - 0.75 * x.min(1.0).powi(3)) * (1.0 + 0.04 * noise))
        .clamp(3.0, seg.speed_limit_kmh * 1.2);
    let lanes = f64::from(seg.lanes.max(1));
    let per_lane = flow_vph / lanes;
    let occupancy = (per_lane / speed * 0.6).clamp(0.0, 100.0);
    let count = (flow_vph * interval_s / 3600.0 + dither.clamp(0.0, 0.999_999)).floor();
    let headway = if per_lane > 1.0 { (3600.0 / per_lane).min(3600.0) } else { 3600.0 };
    vec![
        (MetricId::VehicleCount, count),
        (MetricId::SpeedKmh, round1(speed)),
        (MetricId::OccupancyPct, round1(occupancy)),
        (MetricId::HeadwayS, round1(headway)),
    ]
}

/// Readings of an air-quality station. `noise` in [-1, 1].
pub fn air_readings(demand: f64, hour: f64, noise: f64) -> Vec<(MetricId, f64)> {
    let sun = bump(hour, 15.0, 3.5);
    let no2 = 15.0 + 55.0 * demand + 6.0 * noise;
    let pm10 = 14.0 + 22.0 * demand + 4.0 * noise;
    let pm25 = pm10 * 0.62;
    let o3 = 25.0 + 70.0 * sun - 15.0 * demand + 5.0 * noise;
    let temp = 9.0 + 7.0 * bump(hour, 15.0, 5.0) + 0.5 * noise;
    let hum = (85.0 - 25.0 * bump(hour, 15.0, 5.0) + 3.0 * noise).clamp(0.0, 100.0);
    vec![
        (MetricId::No2Ugm3, round1(no2.max(0.0))),
        (MetricId::Pm10Ugm3, round1(pm10.max(0.0))),
        (MetricId::Pm25Ugm3, round1(pm25.max(0.0))),
        (MetricId::O3Ugm3, round1(o3.max(0.0))),
        (MetricId::TemperatureC, round1(temp)),
        (MetricId::HumidityPct, round1(hum)),
    ]
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use telemetry::segment::{parse_geojson, FLORENCE_SEED};
    use telemetry::{ValidationConfig, Validator};

    use super::*;

    #[test]
    fn weekday_peaks_and_quiet_nights() {
        let peak = traffic_demand(8.5, false);
        let evening = traffic_demand(18.2, false);
        let night = traffic_demand(3.0, false);
        let sunday_morning = traffic_demand(8.5, true);
        assert!(peak > 0.8 && evening > 0.75, "{peak} {evening}");
        assert!(night < 0.1, "{night}");
        assert!(sunday_morning < peak / 2.0, "{sunday_morning}");
    }

    #[test]
    fn local_clock_knows_the_week() {
        // 2025-11-23T10:00:00Z is a Sunday, 11:00 in Florence.
        let (h, weekend) = local_clock(EventTime(1_763_892_000_000));
        assert!((h - 11.0).abs() < 1e-9 && weekend);
        let (_, weekend) = local_clock(EventTime(1_763_892_000_000 + 86_400_000));
        assert!(!weekend);
    }

    #[test]
    fn counts_average_to_the_flow_even_below_one_vehicle_per_interval() {
        let seg = &parse_geojson(FLORENCE_SEED).unwrap()[0];
        for (demand, interval_s) in [(0.05, 1.0), (0.3, 5.0), (0.9, 60.0)] {
            let expected = demand * seg.capacity_vph * interval_s / 3600.0;
            let n = 1_000;
            let mean = (0..n)
                .map(|i| {
                    traffic_readings(
                        seg,
                        demand,
                        interval_s,
                        0.0,
                        (f64::from(i) + 0.5) / f64::from(n),
                    )[0]
                    .1
                })
                .sum::<f64>()
                / f64::from(n);
            assert!(
                (mean - expected).abs() < 0.01,
                "demand {demand}, {interval_s} s: mean {mean}, expected {expected}"
            );
        }
    }

    #[test]
    fn congestion_lowers_speed_and_every_value_is_valid() {
        let seg = &parse_geojson(FLORENCE_SEED).unwrap()[0];
        let v = Validator::new(ValidationConfig::default());
        let speed = |d| traffic_readings(seg, d, 60.0, 0.0, 0.5)[1].1;
        assert!(speed(1.0) < 0.4 * seg.free_flow_kmh);
        assert!(speed(0.1) > 0.95 * seg.free_flow_kmh);
        for d in [0.0, 0.3, 0.7, 1.1] {
            for noise in [-1.0, 0.0, 1.0] {
                for h in [0.0, 8.5, 15.0, 23.9] {
                    let mut all = traffic_readings(seg, d, 1.0, noise, 0.99);
                    all.extend(air_readings(d, h, noise));
                    for (m, value) in all {
                        let r = telemetry::Reading {
                            device: telemetry::DeviceId::parse("x").unwrap(),
                            metric: m,
                            time: EventTime(0),
                            value,
                            seq: None,
                        };
                        v.check_reading(&r, EventTime(0))
                            .unwrap_or_else(|e| panic!("{m} {value}: {e}"));
                    }
                }
            }
        }
    }
}
