//! Device drivers: what each kind of field hardware measures. Drivers are plain state
//! machines: `sample(now)` returns the readings due at `now`, randomness comes from the
//! caller's generator, so they are tested without clocks or I/O.

use std::path::Path;

use rand::Rng;
use telemetry::{EventTime, MetricId, RoadSegment};

use simulator::profile::{air_readings, local_clock, traffic_demand, traffic_readings};

/// A traffic-light signal plan: phase durations in seconds; the cycle is their sum.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalPlan {
    pub phases: Vec<f64>,
}

impl SignalPlan {
    pub fn new(phases: Vec<f64>) -> Result<Self, String> {
        if phases.is_empty() || phases.len() > 16 {
            return Err("a plan has 1 to 16 phases".into());
        }
        if phases.iter().any(|p| !p.is_finite() || *p <= 0.0) {
            return Err("phase durations must be positive seconds".into());
        }
        let cycle: f64 = phases.iter().sum();
        if cycle > 600.0 {
            return Err(format!("cycle of {cycle} s exceeds 600 s"));
        }
        Ok(Self { phases })
    }

    pub fn cycle_s(&self) -> f64 {
        self.phases.iter().sum()
    }

    /// Index of the phase running at `now` (plans start at the epoch, so all controllers
    /// with one plan are coordinated).
    pub fn phase_at(&self, now: EventTime) -> usize {
        let mut pos = (now.millis() as f64 / 1000.0).rem_euclid(self.cycle_s());
        for (i, d) in self.phases.iter().enumerate() {
            if pos < *d {
                return i;
            }
            pos -= d;
        }
        self.phases.len() - 1
    }
}

/// One recorded reading to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRecord {
    pub time: EventTime,
    pub metric: MetricId,
    pub value: f64,
}

/// How replayed readings are stamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayTimestamps {
    /// The time the reading is replayed (needed when looping).
    Rewrite,
    /// The time recorded in the file.
    Original,
}

#[derive(Debug, Clone)]
pub struct Replay {
    records: Vec<ReplayRecord>,
    speed: f64,
    stamps: ReplayTimestamps,
    looping: bool,
    next: usize,
    /// Wall time at which the file's first record is replayed in this pass.
    start: Option<EventTime>,
}

impl Replay {
    pub fn new(
        mut records: Vec<ReplayRecord>,
        speed: f64,
        stamps: ReplayTimestamps,
        looping: bool,
    ) -> Result<Self, String> {
        if !(speed.is_finite() && speed > 0.0) {
            return Err("speed must be a positive number".into());
        }
        if looping && stamps == ReplayTimestamps::Original {
            return Err(
                "looping replays must rewrite timestamps (original ones would repeat)".into()
            );
        }
        records.sort_by_key(|r| r.time);
        Ok(Self { records, speed, stamps, looping, next: 0, start: None })
    }

    pub fn is_finished(&self) -> bool {
        !self.looping && self.next >= self.records.len()
    }

    fn sample(&mut self, now: EventTime) -> Vec<(MetricId, f64, EventTime)> {
        let mut out = Vec::new();
        let Some(first) = self.records.first().map(|r| r.time) else { return out };
        let last = self.records.last().map_or(first, |r| r.time);
        let mut start = *self.start.get_or_insert(now);
        // Bounded work per call, even for a looping replay at a huge speed.
        while out.len() < 10_000 {
            let Some(r) = self.records.get(self.next) else {
                if !self.looping {
                    break;
                }
                // The next pass starts one mean record spacing after this one ends.
                let n = self.records.len() as i64;
                let span = last.millis() - first.millis();
                let gap = if n > 1 { span / (n - 1) } else { 1_000 };
                start =
                    EventTime(start.millis() + (((span + gap) as f64 / self.speed) as i64).max(1));
                self.start = Some(start);
                self.next = 0;
                continue;
            };
            let offset = ((r.time.millis() - first.millis()) as f64 / self.speed) as i64;
            let due = EventTime(start.millis() + offset);
            if due > now {
                break;
            }
            let stamp = match self.stamps {
                ReplayTimestamps::Rewrite => due,
                ReplayTimestamps::Original => r.time,
            };
            out.push((r.metric, r.value, stamp));
            self.next += 1;
        }
        out
    }
}

/// Read a replay file: CSV with a `time,metric,value` header, or a JSON array of
/// `{"t":…, "m":…, "v":…}`. Times are Unix milliseconds or RFC 3339.
pub fn read_replay_file(path: &Path) -> Result<Vec<ReplayRecord>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json { parse_replay_json(&text) } else { parse_replay_csv(&text) }
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_time(s: &str) -> Result<EventTime, String> {
    EventTime::parse_ms_or_rfc3339(s.trim()).map_err(|e| e.to_string())
}

pub fn parse_replay_csv(text: &str) -> Result<Vec<ReplayRecord>, String> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        Some((_, h)) if h.trim().replace(' ', "") == "time,metric,value" => {}
        _ => return Err("the first line must be the header time,metric,value".into()),
    }
    lines
        .map(|(i, line)| {
            let cols: Vec<&str> = line.split(',').collect();
            let [t, m, v] = cols[..] else {
                return Err(format!("line {}: expected 3 columns", i + 1));
            };
            Ok(ReplayRecord {
                time: parse_time(t).map_err(|e| format!("line {}: {e}", i + 1))?,
                metric: m.trim().parse().map_err(|e| format!("line {}: {e}", i + 1))?,
                value: v
                    .trim()
                    .parse()
                    .map_err(|_| format!("line {}: value {v:?} is not a number", i + 1))?,
            })
        })
        .collect()
}

pub fn parse_replay_json(text: &str) -> Result<Vec<ReplayRecord>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rec {
        t: serde_json::Value,
        m: String,
        v: f64,
    }
    let recs: Vec<Rec> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    recs.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let t = match &r.t {
                serde_json::Value::Number(n) => n
                    .as_i64()
                    .ok_or("t must be whole milliseconds".to_string())
                    .and_then(|ms| parse_time(&ms.to_string())),
                serde_json::Value::String(s) => parse_time(s),
                _ => Err("t must be milliseconds or RFC 3339".into()),
            };
            Ok(ReplayRecord {
                time: t.map_err(|e| format!("record {i}: {e}"))?,
                metric: r.m.parse().map_err(|e| format!("record {i}: {e}"))?,
                value: r.v,
            })
        })
        .collect()
}

#[derive(Debug, Clone)]
pub enum Driver {
    TrafficLoop { segment: RoadSegment, demand_factor: f64 },
    TrafficLight { plan: SignalPlan, fault_until: Option<EventTime>, fault_rate_per_hour: f64 },
    Parking { capacity: u32 },
    AirQuality,
    Replay(Replay),
}

impl Driver {
    pub fn kind(&self) -> &'static str {
        match self {
            Driver::TrafficLoop { .. } => "traffic_loop",
            Driver::TrafficLight { .. } => "traffic_light",
            Driver::Parking { .. } => "parking",
            Driver::AirQuality => "air_quality",
            Driver::Replay(_) => "replay",
        }
    }

    /// Readings due at `now` for a device reporting every `interval_s`. Readings without
    /// their own time are stamped `now`.
    pub fn sample(
        &mut self,
        now: EventTime,
        interval_s: f64,
        rng: &mut impl Rng,
    ) -> Vec<(MetricId, f64, EventTime)> {
        let (hour, weekend) = local_clock(now);
        let noise = rng.random_range(-1.0..=1.0);
        let stamped = |v: Vec<(MetricId, f64)>| v.into_iter().map(|(m, x)| (m, x, now)).collect();
        match self {
            Driver::TrafficLoop { segment, demand_factor } => stamped(traffic_readings(
                segment,
                traffic_demand(hour, weekend) * *demand_factor,
                interval_s,
                noise,
                rng.random(),
            )),
            Driver::AirQuality => stamped(air_readings(traffic_demand(hour, weekend), hour, noise)),
            Driver::Parking { capacity } => {
                // Central car parks fill during business hours and empty at night.
                let busy = 0.35
                    + 0.5 * (-((hour - 13.0) / 4.0).powi(2)).exp()
                    + if weekend { 0.1 } else { 0.0 };
                let occupied =
                    ((busy + 0.05 * noise).clamp(0.0, 1.0) * f64::from(*capacity)).round();
                let free = f64::from(*capacity) - occupied;
                stamped(vec![
                    (MetricId::FreeSpaces, free),
                    (MetricId::Occupied, f64::from(u8::from(free == 0.0))),
                ])
            }
            Driver::TrafficLight { plan, fault_until, fault_rate_per_hour } => {
                if fault_until.is_some_and(|t| t <= now) {
                    *fault_until = None;
                }
                let p_fault = *fault_rate_per_hour * interval_s / 3600.0;
                if fault_until.is_none() && rng.random_bool(p_fault.clamp(0.0, 1.0)) {
                    // A lamp or detector fault lasting 2 to 10 minutes.
                    *fault_until =
                        Some(EventTime(now.millis() + rng.random_range(120_000..600_000)));
                }
                let fault = fault_until.is_some();
                stamped(vec![
                    (MetricId::Phase, plan.phase_at(now) as f64),
                    (MetricId::CycleS, plan.cycle_s()),
                    (MetricId::Fault, f64::from(u8::from(fault))),
                ])
            }
            Driver::Replay(r) => r.sample(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn signal_plan_phases_follow_the_cycle() {
        let plan = SignalPlan::new(vec![40.0, 5.0, 40.0, 5.0]).unwrap();
        assert_eq!(plan.cycle_s(), 90.0);
        let at = |s: i64| plan.phase_at(EventTime(s * 1000));
        assert_eq!(
            (at(0), at(39), at(40), at(44), at(45), at(85), at(89), at(90)),
            (0, 0, 1, 1, 2, 3, 3, 0)
        );
        assert!(SignalPlan::new(vec![]).is_err());
        assert!(SignalPlan::new(vec![-1.0]).is_err());
        assert!(SignalPlan::new(vec![400.0, 400.0]).is_err());
    }

    #[test]
    fn traffic_light_faults_come_and_go() {
        let mut d = Driver::TrafficLight {
            plan: SignalPlan::new(vec![30.0, 30.0]).unwrap(),
            fault_until: None,
            fault_rate_per_hour: 3600.0,
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let r = d.sample(EventTime(0), 1.0, &mut rng);
        assert_eq!(r[2], (MetricId::Fault, 1.0, EventTime(0)));
        let Driver::TrafficLight { fault_until, fault_rate_per_hour, .. } = &mut d else {
            unreachable!()
        };
        let until = fault_until.unwrap();
        assert!((120_000..600_000).contains(&until.millis()));
        *fault_rate_per_hour = 0.0;
        let r = d.sample(until, 1.0, &mut rng);
        assert_eq!(r[2].1, 0.0);
    }

    #[test]
    fn parking_never_exceeds_capacity() {
        let mut d = Driver::Parking { capacity: 120 };
        let mut rng = SmallRng::seed_from_u64(2);
        for h in 0..48 {
            let r = d.sample(EventTime(h * 1_800_000), 60.0, &mut rng);
            assert!((0.0..=120.0).contains(&r[0].1), "{r:?}");
            assert_eq!(r[1].1, f64::from(u8::from(r[0].1 == 0.0)));
        }
    }

    #[test]
    fn replay_scales_time_and_stamps_as_asked() {
        let recs = parse_replay_csv(
            "time,metric,value\n1000,speed_kmh,40\n11000,speed_kmh,42\n2000,vehicle_count,3\n",
        )
        .unwrap();
        let mut r = Replay::new(recs.clone(), 10.0, ReplayTimestamps::Rewrite, false).unwrap();
        let t0 = EventTime(5_000_000);
        assert_eq!(r.sample(t0), vec![(MetricId::SpeedKmh, 40.0, t0)]);
        // 1 s of file time is 100 ms at 10× speed.
        assert_eq!(r.sample(EventTime(t0.millis() + 99)), vec![]);
        assert_eq!(
            r.sample(EventTime(t0.millis() + 100)),
            vec![(MetricId::VehicleCount, 3.0, EventTime(t0.millis() + 100))]
        );
        assert_eq!(
            r.sample(EventTime(t0.millis() + 5_000)),
            vec![(MetricId::SpeedKmh, 42.0, EventTime(t0.millis() + 1_000))]
        );
        assert!(r.is_finished());
        let mut o = Replay::new(recs, 1.0, ReplayTimestamps::Original, false).unwrap();
        assert_eq!(o.sample(t0).len(), 1, "the first call starts the replay");
        let rest = o.sample(EventTime(t0.millis() + 60_000));
        assert_eq!(rest.iter().map(|x| x.2.millis()).collect::<Vec<_>>(), vec![2000, 11000]);
    }

    #[test]
    fn looping_replay_starts_over() {
        let recs = parse_replay_json(
            r#"[{"t":0,"m":"no2_ugm3","v":10},{"t":"1970-01-01T00:00:01Z","m":"no2_ugm3","v":11}]"#,
        )
        .unwrap();
        let mut r = Replay::new(recs, 1.0, ReplayTimestamps::Rewrite, true).unwrap();
        assert_eq!(r.sample(EventTime(10_000)).len(), 1);
        assert_eq!(r.sample(EventTime(11_000)).len(), 1);
        assert_eq!(r.sample(EventTime(12_000)).len(), 1, "second pass starts");
        assert!(!r.is_finished());
        assert!(Replay::new(vec![], 1.0, ReplayTimestamps::Original, true).is_err());
    }

    #[test]
    fn replay_files_report_the_bad_line() {
        assert!(parse_replay_csv("t,m,v\n").unwrap_err().contains("header"));
        assert!(parse_replay_csv("time,metric,value\n1,speed_kmh\n")
            .unwrap_err()
            .contains("line 2"));
        assert!(parse_replay_csv("time,metric,value\n1,warp,3\n")
            .unwrap_err()
            .contains("unknown metric"));
        assert!(parse_replay_json(r#"[{"t":true,"m":"speed_kmh","v":1}]"#)
            .unwrap_err()
            .contains("record 0"));
    }
}
