//! Detector health: the quality flags a detector can carry, the physical plausibility of a
//! traffic detector's figures (the fundamental diagram), and the data-quality score. Pure;
//! the stream raises the flags (`stream::alert` rule kind `health`), the store keeps their
//! intervals, the API serves the score.
//!
//! **Flags.** `stuck` (a metric repeats one non-zero value), `zero_busy` (no vehicles while
//! the learned baseline says the slot is busy), `missing` (too few of the readings its
//! report interval promises), `implausible` (flow, speed and occupancy that cannot occur
//! together). A flag holds over an interval `[from, to)` of event time (`to` open while the
//! condition holds); every reading of the device inside a flag's interval is *flagged* and
//! can be left out of history aggregates.
//!
//! **Score.** Over a window `[from, to)` (24 h by default in the API), the share of the
//! window's time without a flag, each instant weighted by the heaviest flag active then
//! ([`HealthFlag::weight`]): `score = 1 − Σ_t max_weight(t) / |window|`, in `[0, 1]`, 1 for
//! a detector without flags. Overlapping flags count once, at the heaviest weight.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::EventTime;

/// A quality flag of a detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthFlag {
    /// The same non-zero value, repeated for a duration and a number of readings.
    Stuck,
    /// No vehicles counted over windows the baseline says are busy.
    ZeroBusy,
    /// A share of the readings expected from the report interval did not arrive.
    Missing,
    /// Flow, speed and occupancy that cannot occur together.
    Implausible,
}

impl HealthFlag {
    pub const ALL: [HealthFlag; 4] =
        [Self::Stuck, Self::ZeroBusy, Self::Missing, Self::Implausible];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stuck => "stuck",
            Self::ZeroBusy => "zero_busy",
            Self::Missing => "missing",
            Self::Implausible => "implausible",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// How much an instant under this flag lowers the score: values that are wrong count
    /// fully, missing data (what did arrive is sound) half.
    pub fn weight(self) -> f64 {
        match self {
            Self::Stuck | Self::ZeroBusy | Self::Implausible => 1.0,
            Self::Missing => 0.5,
        }
    }

    /// The names, for error messages.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl fmt::Display for HealthFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One flag of one device over `[from, to)`; `to` is `None` while it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagInterval {
    pub device: String,
    pub flag: HealthFlag,
    /// The rule that raised it.
    pub rule: String,
    pub from: EventTime,
    pub to: Option<EventTime>,
}

impl FlagInterval {
    /// Whether a reading at `t` falls inside.
    pub fn covers(&self, t: EventTime) -> bool {
        t >= self.from && self.to.is_none_or(|to| t < to)
    }

    /// Whether the interval overlaps `[from, to)`.
    pub fn overlaps(&self, from: EventTime, to: EventTime) -> bool {
        self.from < to && self.to.is_none_or(|end| end > from)
    }
}

/// The data-quality score of flags over `[from, to)` (see the module doc); 1 without flags.
pub fn quality_score<'a>(
    flags: impl IntoIterator<Item = &'a FlagInterval>,
    from: EventTime,
    to: EventTime,
) -> f64 {
    let span = (to.millis() - from.millis()) as f64;
    if span <= 0.0 {
        return 1.0;
    }
    // Sweep the clipped intervals' edges, weighting each stretch by the heaviest flag.
    let mut edges: Vec<(i64, f64, bool)> = Vec::new();
    for f in flags {
        let a = f.from.millis().max(from.millis());
        let b = f.to.map_or(to.millis(), |t| t.millis()).min(to.millis());
        if a < b {
            edges.push((a, f.flag.weight(), true));
            edges.push((b, f.flag.weight(), false));
        }
    }
    edges.sort_by_key(|x| x.0);
    let mut active: Vec<f64> = Vec::new();
    let mut lost = 0.0;
    let mut at = from.millis();
    for (t, w, opens) in edges {
        let heaviest = active.iter().copied().fold(0.0, f64::max);
        lost += heaviest * (t - at) as f64;
        at = t;
        if opens {
            active.push(w);
        } else if let Some(i) = active.iter().position(|&x| x == w) {
            active.swap_remove(i);
        }
    }
    (1.0 - lost / span).clamp(0.0, 1.0)
}

/// Limits of what a traffic detector can report over one window (the `implausible` check).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plausibility {
    /// Most vehicles per hour one lane carries.
    pub capacity_vph: f64,
    /// Flow per lane from which an occupancy of 0 or a fundamental-diagram mismatch counts
    /// (150 veh/h at up to 80 km/h occupies a loop at least 1.1 % of the time).
    pub min_flow_vph: f64,
    /// Occupancy from which the detector is "full".
    pub full_occupancy_pct: f64,
    /// A full detector at this speed or faster is implausible.
    pub free_flow_kmh: f64,
    /// Effective vehicle length (vehicle plus loop), m: occupancy ≈ density × length.
    pub vehicle_length_m: f64,
    /// How far measured occupancy may be from the one flow and speed imply (a factor).
    pub tolerance: f64,
}

impl Default for Plausibility {
    fn default() -> Self {
        Self {
            capacity_vph: 2_400.0,
            min_flow_vph: 150.0,
            full_occupancy_pct: 90.0,
            free_flow_kmh: 50.0,
            vehicle_length_m: 6.0,
            tolerance: 3.0,
        }
    }
}

/// Why a window's figures are implausible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Implausible {
    /// More vehicles per lane than a lane carries.
    OverCapacity,
    /// Vehicles passing over a loop that was never occupied.
    FlowWithoutOccupancy,
    /// Vehicles passing at a speed of zero.
    StoppedWithFlow,
    /// A detector occupied almost all the time while vehicles pass at free-flow speed.
    FullAtFreeFlow,
    /// Occupancy far from what flow and speed imply (density = flow / speed).
    FundamentalDiagram,
}

impl Implausible {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OverCapacity => "over_capacity",
            Self::FlowWithoutOccupancy => "flow_without_occupancy",
            Self::StoppedWithFlow => "stopped_with_flow",
            Self::FullAtFreeFlow => "full_at_free_flow",
            Self::FundamentalDiagram => "fundamental_diagram",
        }
    }
}

impl Plausibility {
    /// Judge one window's figures of a detector: `flow_vph` over all its `lanes`, mean
    /// `speed_kmh`, mean `occupancy_pct` (each `None` when not reported). `None`:
    /// plausible (or nothing to judge).
    ///
    /// The fundamental diagram: flow q = density k × speed v, and occupancy o ≈ k × L (the
    /// effective vehicle length), so per lane o% ≈ q·L / (10·v). Measured occupancy more
    /// than `tolerance` times off that, at a flow of at least `min_flow_vph`, is
    /// implausible.
    pub fn judge(
        &self,
        flow_vph: Option<f64>,
        speed_kmh: Option<f64>,
        occupancy_pct: Option<f64>,
        lanes: u32,
    ) -> Option<Implausible> {
        let q = flow_vph.map(|q| q / f64::from(lanes.max(1)));
        if q.is_some_and(|q| q > self.capacity_vph) {
            return Some(Implausible::OverCapacity);
        }
        if let (Some(o), Some(v)) = (occupancy_pct, speed_kmh) {
            if o >= self.full_occupancy_pct && v >= self.free_flow_kmh {
                return Some(Implausible::FullAtFreeFlow);
            }
        }
        let q = q.filter(|&q| q >= self.min_flow_vph)?;
        if occupancy_pct.is_some_and(|o| o <= 0.0) {
            return Some(Implausible::FlowWithoutOccupancy);
        }
        let v = speed_kmh?;
        if v <= 0.0 {
            return Some(Implausible::StoppedWithFlow);
        }
        let o = occupancy_pct?;
        let implied = q * self.vehicle_length_m / (10.0 * v);
        let ratio = o / implied;
        (ratio > self.tolerance || ratio < 1.0 / self.tolerance)
            .then_some(Implausible::FundamentalDiagram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(flag: HealthFlag, from: i64, to: Option<i64>) -> FlagInterval {
        FlagInterval {
            device: "loop-1".into(),
            flag,
            rule: "r".into(),
            from: EventTime(from),
            to: to.map(EventTime),
        }
    }

    #[test]
    fn the_score_is_the_weighted_share_of_time_without_flags() {
        let (a, b) = (EventTime(0), EventTime(1_000));
        assert_eq!(quality_score(&[], a, b), 1.0);
        // A quarter stuck: 0.75.
        assert_eq!(quality_score(&[flag(HealthFlag::Stuck, 0, Some(250))], a, b), 0.75);
        // Missing weighs half: a quarter costs 0.125.
        assert_eq!(quality_score(&[flag(HealthFlag::Missing, 500, Some(750))], a, b), 0.875);
        // Overlaps count once at the heaviest weight; an open flag runs to the end; what
        // lies outside the window does not count.
        let flags = [
            flag(HealthFlag::Missing, -500, Some(500)),
            flag(HealthFlag::Implausible, 250, Some(500)),
            flag(HealthFlag::Stuck, 900, None),
        ];
        // [0,250) missing 0.5 → 125; [250,500) implausible 1 → 250; [900,1000) 100.
        assert!((quality_score(&flags, a, b) - (1.0 - 475.0 / 1_000.0)).abs() < 1e-12);
        assert_eq!(quality_score(&[flag(HealthFlag::Stuck, -10, None)], a, b), 0.0);
    }

    #[test]
    fn the_fundamental_diagram_tells_plausible_from_impossible() {
        let p = Plausibility::default();
        // 900 veh/h on one lane at 50 km/h: density 18 veh/km, occupancy ≈ 10.8 %.
        assert_eq!(p.judge(Some(900.0), Some(50.0), Some(10.0), 1), None);
        // Two lanes share the flow.
        assert_eq!(p.judge(Some(1_800.0), Some(50.0), Some(10.0), 2), None);
        assert_eq!(
            p.judge(Some(3_000.0), Some(50.0), Some(20.0), 1),
            Some(Implausible::OverCapacity)
        );
        assert_eq!(
            p.judge(Some(900.0), Some(50.0), Some(0.0), 1),
            Some(Implausible::FlowWithoutOccupancy)
        );
        assert_eq!(
            p.judge(Some(900.0), Some(0.0), Some(30.0), 1),
            Some(Implausible::StoppedWithFlow)
        );
        assert_eq!(
            p.judge(Some(100.0), Some(80.0), Some(95.0), 1),
            Some(Implausible::FullAtFreeFlow)
        );
        // Speed 3 km/h with 900 veh/h implies occupancy 180 %: measured 40 % is a third off.
        assert_eq!(
            p.judge(Some(900.0), Some(3.0), Some(40.0), 1),
            Some(Implausible::FundamentalDiagram)
        );
        // A jam: low speed, high occupancy, modest flow is fine.
        assert_eq!(p.judge(Some(600.0), Some(8.0), Some(45.0), 1), None);
        // Light traffic is not judged on the diagram; nothing reported, nothing judged.
        assert_eq!(p.judge(Some(120.0), Some(3.0), Some(0.0), 1), None);
        assert_eq!(p.judge(None, None, None, 1), None);
    }
}
