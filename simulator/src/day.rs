//! A day in the simulated city: traffic that congests in the rush hours, air quality that
//! follows it with pollution episodes, and a recurring incident on one central segment.
//! Everything is a pure function of the time and a seed ([`City::new`]), so the live
//! simulation, the demo's back-fill of past days and the tests see the same city.
//!
//! **Traffic.** Each segment has a demand `x` as a fraction of its capacity. On weekdays
//! `x` follows a morning peak (plateau around 08:30) and an evening peak (around 18:15),
//! a midday shoulder and a quiet night (about 5 % of the peak); Saturdays peak at about
//! 60 % around noon and in the early evening, Sundays lower still. How hard a segment's
//! peaks press on its capacity is fixed per segment: the arterials (`ring_road` and
//! `radial` segments) are ranked by the seed, separately for the morning and the evening,
//! and the ranks get a ladder of peak demands — two at 112 % of capacity (LOS F), four at
//! 105 % (LOS E), four at 101 % (LOS D), the other arterials 80–94 % (LOS A–C); the
//! `lungarno` segments stay at 65–92 %. A day factor (±0.7 %) and a smooth 10-minute
//! wander (±0.7 %) keep days from being identical without moving a segment's peak grade.
//!
//! Speed follows a speed–flow relation: a gentle fall at low demand, then a steep
//! breakdown once demand approaches capacity ([`speed_ratio`]: speed / free-flow about
//! 0.78 at 90 % of capacity, 0.50 at 100 %, 0.35 at 105 %, 0.24 at 112 %; the LOS bounds
//! are 0.85, 0.67, 0.50, 0.40, 0.30). The measured flow is the demand up to capacity, and a little less past it
//! (the capacity drop of a queue). Occupancy is density × an effective vehicle length of
//! 5.5 m.
//!
//! **Counts.** A detector reports the vehicles it counted in its reporting interval: a
//! Poisson draw with mean `flow × interval`, so a 2 s report counts 0–3 vehicles and a
//! 5-minute report a few hundred, and the flow per hour (sum of counts) is not on any grid.
//! (A flow derived from a *one-minute* window of whole vehicles is necessarily a multiple
//! of 60 veh/h divided by the detectors averaged — 30 veh/h with two detectors — as with
//! real loops; only longer windows or more detectors make that grid finer.)
//!
//! **Air quality.** NO2 is a background plus a term in the station segment's traffic
//! flow, scaled by the mixing of the air (poorer at night and in the evening). On weekdays
//! one or two stations (chosen by the seed for each day) have an NO2 episode in the
//! evening peak: readings above 200 µg/m³ (the EU hourly limit) for about 30–37 minutes,
//! enough to take the running hourly mean over the limit too. About one day in three is
//! a stagnant-air day with PM10 raised all day (daily means near or above 50 µg/m³ at the
//! busy stations). O3 follows the sun less NO titration; temperature and humidity follow
//! the day.
//!
//! **Incident.** One central segment ([`INCIDENT_SEGMENT`], else the first ring-road
//! segment; either only with a traffic detector on it) has a breakdown every [`INCIDENT_PERIOD_MS`] (15 minutes, starting on the
//! quarter hour: :00, :15, :30, :45) lasting [`INCIDENT_DURATION_MS`] (6.5 minutes):
//! speed falls to about 20 % of free flow (LOS F) within 45 s, holds, and recovers in the
//! last minute; a lane is blocked, so the flow is capped at 45 % of capacity. Its peaks
//! are kept below capacity, so outside the incident it is never worse than LOS C.

use telemetry::{EventTime, MetricId, RoadSegment};

use crate::fleet::{DeviceKind, SimDevice};

/// The segment of the recurring incident when the network has it.
pub const INCIDENT_SEGMENT: &str = "viale-lavagnini";
/// An incident starts every 15 minutes, on the quarter hour.
pub const INCIDENT_PERIOD_MS: i64 = 15 * 60_000;
/// Each incident lasts 6.5 minutes.
pub const INCIDENT_DURATION_MS: i64 = 6 * 60_000 + 30_000;
/// Speed / free-flow speed at the height of an incident.
const INCIDENT_RATIO: f64 = 0.2;

/// Florence local time offset from UTC in hours (CET; summer time is ignored here).
const UTC_OFFSET_H: f64 = 1.0;
const HOUR_MS: f64 = 3_600_000.0;

/// Peak demand (fraction of capacity) by rank among the arterials.
const LADDER: [f64; 10] = [1.12, 1.12, 1.054, 1.054, 1.054, 1.054, 1.01, 1.01, 1.01, 1.01];

/// The traffic state of a segment at an instant (before per-reading noise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Traffic {
    /// Demand as a fraction of capacity.
    pub demand: f64,
    /// Vehicles per hour crossing the section.
    pub flow_vph: f64,
    pub speed_kmh: f64,
    /// Mean speed / free-flow speed (what LOS is graded from).
    pub speed_ratio: f64,
    pub occupancy_pct: f64,
}

#[derive(Debug, Clone)]
struct SegmentModel {
    segment: RoadSegment,
    /// Salt of the segment's own noise.
    key: u64,
    am_peak: f64,
    pm_peak: f64,
}

#[derive(Debug, Clone)]
struct DeviceModel {
    segment: usize,
    kind: DeviceKind,
    /// Index among the air-quality stations (for episodes); 0 for detectors.
    station: usize,
    key: u64,
}

/// The simulated city: segments, where devices stand, and the seed.
#[derive(Debug, Clone)]
pub struct City {
    seed: u64,
    segments: Vec<SegmentModel>,
    devices: Vec<DeviceModel>,
    stations: usize,
    incident: Option<usize>,
}

/// Where one NO2 episode is and when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Episode {
    /// Start of the rise (ms).
    pub start: EventTime,
    /// Minutes at the peak (the rise and fall take 6 minutes each).
    pub plateau_min: f64,
    /// NO2 at the height of the episode, µg/m³.
    pub peak: f64,
}

const EPISODE_RAMP_MIN: f64 = 6.0;

impl City {
    /// The city of `devices` (each on its segment) under `seed`.
    pub fn new(devices: &[SimDevice], seed: u64) -> Self {
        let mut segments: Vec<SegmentModel> = Vec::new();
        let mut models = Vec::with_capacity(devices.len());
        let mut stations = 0;
        for d in devices {
            let index = match segments.iter().position(|s| s.segment.id == d.segment.id) {
                Some(i) => i,
                None => {
                    segments.push(SegmentModel {
                        key: text_hash(d.segment.id.as_str()),
                        segment: d.segment.clone(),
                        am_peak: 0.0,
                        pm_peak: 0.0,
                    });
                    segments.len() - 1
                }
            };
            let station = if d.kind == DeviceKind::AirQuality {
                stations += 1;
                stations - 1
            } else {
                0
            };
            models.push(DeviceModel {
                segment: index,
                kind: d.kind,
                station,
                key: text_hash(d.id.as_str()),
            });
        }
        // The incident needs a detector to be seen.
        let detected: Vec<bool> = (0..segments.len())
            .map(|i| models.iter().any(|m| m.segment == i && m.kind == DeviceKind::TrafficLoop))
            .collect();
        let incident = segments
            .iter()
            .enumerate()
            .position(|(i, s)| detected[i] && s.segment.id.as_str() == INCIDENT_SEGMENT)
            .or_else(|| {
                segments
                    .iter()
                    .enumerate()
                    .position(|(i, s)| detected[i] && s.segment.kind == "ring_road")
            });
        for (salt, am) in [(0xA11, true), (0xB22, false)] {
            let mut arterials: Vec<usize> = (0..segments.len())
                .filter(|&i| Some(i) != incident && is_arterial(&segments[i].segment))
                .collect();
            arterials.sort_by_key(|&i| hash(&[seed, salt, segments[i].key]));
            for (i, s) in segments.iter_mut().enumerate() {
                let u = unit(hash(&[seed, salt + 1, s.key]));
                let peak = match arterials.iter().position(|&a| a == i) {
                    Some(rank) if rank < LADDER.len() => LADDER[rank],
                    Some(_) => 0.80 + 0.14 * u,
                    None if Some(i) == incident => 0.80 + 0.08 * u,
                    None => 0.65 + 0.27 * u,
                };
                if am {
                    s.am_peak = peak;
                } else {
                    s.pm_peak = peak;
                }
            }
        }
        Self { seed, segments, devices: models, stations, incident }
    }

    /// The segments the devices stand on, in order of first appearance.
    pub fn segments(&self) -> impl Iterator<Item = &RoadSegment> {
        self.segments.iter().map(|s| &s.segment)
    }

    /// Index of a segment by id.
    pub fn segment_index(&self, id: &str) -> Option<usize> {
        self.segments.iter().position(|s| s.segment.id.as_str() == id)
    }

    /// The segment of the recurring incident.
    pub fn incident_segment(&self) -> Option<&RoadSegment> {
        self.incident.map(|i| &self.segments[i].segment)
    }

    /// The arterials whose weekday morning peak is over capacity (LOS E–F at 08:30).
    pub fn congested_in_morning(&self) -> Vec<&RoadSegment> {
        self.segments.iter().filter(|s| s.am_peak > 1.03).map(|s| &s.segment).collect()
    }

    /// How far into an incident `t` is (0 outside one, up to 1 at its height).
    pub fn incident_strength(t: EventTime) -> f64 {
        let phase = t.millis().rem_euclid(INCIDENT_PERIOD_MS) as f64;
        let d = INCIDENT_DURATION_MS as f64;
        if phase >= d {
            return 0.0;
        }
        (phase / 45_000.0).min(1.0).min((d - phase) / 60_000.0)
    }

    /// The traffic on segment `index` at `t`.
    pub fn traffic(&self, index: usize, t: EventTime) -> Traffic {
        let s = &self.segments[index];
        let (hour, weekday) = local_day(t);
        let day = day_number(t);
        let cap = s.segment.capacity_vph.max(1.0);
        let shape_am = plateau(hour, 8.5, 1.3).max(0.85 * bump(hour, 8.5, 1.8));
        let shape_pm = plateau(hour, 18.25, 1.4).max(0.85 * bump(hour, 18.25, 2.2));
        let level = 0.5 * (s.am_peak + s.pm_peak);
        let base = match weekday {
            5 => (0.6 * bump(hour, 12.5, 3.0)).max(0.55 * bump(hour, 18.5, 2.0)),
            6 => (0.45 * bump(hour, 12.5, 3.0)).max(0.45 * bump(hour, 18.5, 2.0)),
            _ => (0.68 * plateau(hour, 13.0, 4.5)).max(0.35 * bump(hour, 21.0, 1.5)),
        };
        let mut x = (0.05 * level).max(base * level);
        if weekday < 5 {
            x = x.max(shape_am * s.am_peak).max(shape_pm * s.pm_peak);
        }
        let day_factor = 1.0 + 0.007 * signed(hash(&[self.seed, 0xD4, s.key, day as u64]));
        let wander = 1.0 + 0.007 * self.smooth(&[0x5E, s.key], t, 600_000);
        x *= day_factor * wander;
        let mut ratio = speed_ratio(x);
        let mut flow = if x <= 0.97 { x } else { (0.97 - 0.6 * (x - 0.97)).max(0.7) } * cap;
        if Some(index) == self.incident {
            let k = Self::incident_strength(t);
            ratio = ratio * (1.0 - k) + INCIDENT_RATIO * k;
            flow = flow.min(cap * (1.0 - 0.55 * k));
        }
        let speed = s.segment.free_flow_kmh * ratio;
        let lanes = f64::from(s.segment.lanes.max(1));
        let occupancy = (flow / lanes / speed.max(1.0) * 0.55).clamp(0.0, 95.0);
        Traffic {
            demand: x,
            flow_vph: flow,
            speed_kmh: speed,
            speed_ratio: ratio,
            occupancy_pct: occupancy,
        }
    }

    /// The NO2 episodes of the day of `t` (weekdays: one or two stations).
    pub fn episodes(&self, t: EventTime) -> Vec<(usize, Episode)> {
        let (_, weekday) = local_day(t);
        if weekday >= 5 || self.stations == 0 {
            return Vec::new();
        }
        let day = day_number(t);
        let h = hash(&[self.seed, 0xE9, day as u64]);
        let count = (1 + (h % 2) as usize).min(self.stations);
        let mut order: Vec<usize> = (0..self.stations).collect();
        order.sort_by_key(|&s| hash(&[self.seed, 0xEA, day as u64, s as u64]));
        let midnight = (day as f64 * 24.0 - UTC_OFFSET_H) * HOUR_MS;
        order
            .into_iter()
            .take(count)
            .map(|station| {
                let u = |salt: u64| unit(hash(&[self.seed, salt, day as u64, station as u64]));
                let start_h = 17.5 + u(0xEB);
                let episode = Episode {
                    start: EventTime((midnight + start_h * HOUR_MS) as i64),
                    plateau_min: 24.0 + 6.0 * u(0xEC),
                    peak: 380.0 + 30.0 * u(0xED),
                };
                (station, episode)
            })
            .collect()
    }

    /// Whether the day of `t` is a stagnant-air day with raised PM10.
    pub fn pm10_episode_day(&self, t: EventTime) -> bool {
        hash(&[self.seed, 0xF1, day_number(t) as u64]).is_multiple_of(3)
    }

    /// Readings of device `index` (in the order given to [`City::new`]) for a report at
    /// `t` covering the `interval_s` before it.
    pub fn readings(&self, index: usize, t: EventTime, interval_s: f64) -> Vec<(MetricId, f64)> {
        let d = &self.devices[index];
        let n = |salt: u64| signed(hash(&[self.seed, d.key, t.millis() as u64, salt]));
        match d.kind {
            DeviceKind::TrafficLoop => {
                let tr = self.traffic(d.segment, t);
                let seg = &self.segments[d.segment].segment;
                let lanes = f64::from(seg.lanes.max(1));
                let mean = tr.flow_vph * interval_s.max(0.0) / 3_600.0;
                let count = poisson(mean, hash(&[self.seed, d.key, t.millis() as u64, 1]));
                // Per-detector calibration (±2 %) and the spread of one report (±4 %).
                let bias = 1.0 + 0.02 * signed(hash(&[self.seed, d.key, 0xCA1]));
                let speed = (tr.speed_kmh * bias * (1.0 + 0.04 * n(2)))
                    .clamp(2.0, seg.speed_limit_kmh * 1.3);
                let occupancy = (tr.occupancy_pct * (1.0 + 0.08 * n(3))).clamp(0.0, 100.0);
                let per_lane = tr.flow_vph / lanes;
                let headway = if per_lane > 1.0 {
                    (3_600.0 / per_lane * (1.0 + 0.1 * n(4))).clamp(0.5, 3_600.0)
                } else {
                    3_600.0
                };
                vec![
                    (MetricId::VehicleCount, count),
                    (MetricId::SpeedKmh, round1(speed)),
                    (MetricId::OccupancyPct, round1(occupancy)),
                    (MetricId::HeadwayS, round1(headway)),
                ]
            }
            DeviceKind::AirQuality => {
                let a = self.air(index, t);
                vec![
                    (MetricId::No2Ugm3, round1((a.no2 + 4.0 * n(5)).max(0.0))),
                    (MetricId::Pm10Ugm3, round1((a.pm10 + 2.5 * n(6)).max(0.0))),
                    (MetricId::Pm25Ugm3, round1((a.pm25 + 1.5 * n(7)).max(0.0))),
                    (MetricId::O3Ugm3, round1((a.o3 + 4.0 * n(8)).max(0.0))),
                    (MetricId::TemperatureC, round1(a.temperature + 0.3 * n(9))),
                    (MetricId::HumidityPct, round1((a.humidity + 2.0 * n(10)).clamp(0.0, 100.0))),
                ]
            }
        }
    }

    /// Air quality at the station `index` (a device index) at `t`, before reading noise.
    pub fn air(&self, index: usize, t: EventTime) -> Air {
        let d = &self.devices[index];
        let (hour, _) = local_day(t);
        let flow = self.traffic(d.segment, t).flow_vph;
        // Mixing: good in the afternoon, poor at night and in the evening.
        let mixing = 1.35 - 0.55 * bump(hour, 14.0, 3.5);
        let background = 16.0 + 4.0 * self.smooth(&[0xA1, d.key], t, 3_600_000);
        let traffic_no2 = 22.0 * flow / 1_000.0 * mixing;
        let mut no2 =
            background + traffic_no2 * (1.0 + 0.05 * self.smooth(&[0xA2, d.key], t, 900_000));
        for (_, e) in self.episodes(t).iter().filter(|(s, _)| *s == d.station) {
            no2 += (e.peak - no2).max(0.0) * episode_shape(e, t);
        }
        let stagnant =
            if self.pm10_episode_day(t) { 34.0 + 8.0 * bump(hour, 20.0, 4.0) } else { 0.0 };
        let pm10 = 13.0
            + 5.0 * flow / 1_000.0 * mixing
            + stagnant
            + 3.0 * self.smooth(&[0xA3, d.key], t, 3_600_000);
        let pm25 = 0.62 * pm10;
        let sun = bump(hour, 14.5, 3.2);
        let o3 = (28.0 + 65.0 * sun - 0.3 * traffic_no2 + 6.0 * self.smooth(&[0xA4], t, 3_600_000))
            .max(2.0);
        let temperature = 9.0
            + 7.0 * bump(hour, 15.0, 5.0)
            + 2.5 * signed(hash(&[self.seed, 0x7E, day_number(t) as u64]));
        let humidity = 85.0 - 25.0 * bump(hour, 15.0, 5.0);
        Air { no2, pm10, pm25, o3, temperature, humidity }
    }

    /// Smooth noise in [-1, 1]: values at knots `every` ms apart, eased between them.
    fn smooth(&self, salt: &[u64], t: EventTime, every: i64) -> f64 {
        let k = t.millis().div_euclid(every);
        let f = t.millis().rem_euclid(every) as f64 / every as f64;
        let at = |k: i64| {
            let mut parts = vec![self.seed, k as u64];
            parts.extend_from_slice(salt);
            signed(hash(&parts))
        };
        let e = f * f * (3.0 - 2.0 * f);
        at(k) * (1.0 - e) + at(k + 1) * e
    }
}

/// Air quality at a station before the noise of a reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Air {
    pub no2: f64,
    pub pm10: f64,
    pub pm25: f64,
    pub o3: f64,
    pub temperature: f64,
    pub humidity: f64,
}

/// 0 outside the episode, rising to 1 over its plateau.
fn episode_shape(e: &Episode, t: EventTime) -> f64 {
    let m = (t.millis() - e.start.millis()) as f64 / 60_000.0;
    let total = 2.0 * EPISODE_RAMP_MIN + e.plateau_min;
    if !(0.0..total).contains(&m) {
        return 0.0;
    }
    let rise = (m / EPISODE_RAMP_MIN).min(1.0);
    let fall = ((total - m) / EPISODE_RAMP_MIN).min(1.0);
    rise.min(fall)
}

fn is_arterial(s: &RoadSegment) -> bool {
    s.kind == "ring_road" || s.kind == "radial"
}

/// Speed / free-flow speed at demand `x` (fraction of capacity): a gentle fall, then a
/// steep breakdown around capacity.
pub fn speed_ratio(x: f64) -> f64 {
    let x = x.max(0.0);
    let gentle = 1.0 - 0.1 * x * x;
    let breakdown = 0.2 + 0.8 / (1.0 + ((x - 0.985) / 0.06).exp());
    (gentle * breakdown).clamp(0.05, 1.0)
}

/// (local hour in [0, 24), weekday with 0 = Monday).
pub fn local_day(t: EventTime) -> (f64, u32) {
    let hours = t.millis() as f64 / HOUR_MS + UTC_OFFSET_H;
    // 1970-01-01 was a Thursday.
    let weekday = ((hours / 24.0).floor() as i64 + 3).rem_euclid(7) as u32;
    (hours.rem_euclid(24.0), weekday)
}

/// Local days since 1970-01-01.
pub fn day_number(t: EventTime) -> i64 {
    ((t.millis() as f64 / HOUR_MS + UTC_OFFSET_H) / 24.0).floor() as i64
}

fn bump(hour: f64, centre: f64, width: f64) -> f64 {
    (-((hour - centre) / width).powi(2)).exp()
}

/// A bump with a flat top.
fn plateau(hour: f64, centre: f64, width: f64) -> f64 {
    (-((hour - centre) / width).powi(4)).exp()
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0x243F_6A88_85A3_08D3, |h, &p| mix(h ^ mix(p)))
}

fn text_hash(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3))
}

/// Uniform in [0, 1).
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniform in [-1, 1).
fn signed(h: u64) -> f64 {
    2.0 * unit(h) - 1.0
}

/// A Poisson draw with mean `mean` from the hash `h` (inversion below 40, a normal
/// approximation above).
fn poisson(mean: f64, h: u64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    let u = unit(h);
    if mean < 40.0 {
        let mut p = (-mean).exp();
        let mut cdf = p;
        let mut k = 0u32;
        while u > cdf && k < 200 {
            k += 1;
            p *= mean / f64::from(k);
            cdf += p;
        }
        return f64::from(k);
    }
    let u2 = unit(mix(h ^ 0x5151));
    let z = (-2.0 * u.max(1e-12).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (mean + mean.sqrt() * z).round().max(0.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
