//! Level of Service of an urban street (after the HCM urban-street method): a
//! grade A–F from the ratio of the measured mean speed to the segment's free-flow speed.
//!
//! | LOS | speed / free-flow |
//! |-----|-------------------|
//! | A   | > 85 %            |
//! | B   | > 67 %            |
//! | C   | > 50 %            |
//! | D   | > 40 %            |
//! | E   | > 30 %            |
//! | F   | ≤ 30 %            |
//!
//! Invariant: the grade is monotone in the ratio (a higher ratio never gives a worse
//! grade). `Ord` runs from best to worst (`A < F`), so "at or worse than D" is `los >= D`.
//!
//! "Worst segments" (the wall's list, the KPI frame's `worst_segments`) follow one rule,
//! [`worst_first`]: relative speed (speed / free-flow speed) ascending, ties by the worse
//! grade, then by segment id. A slow road built for slow traffic is not congested; a fast
//! road at half its free-flow speed is.

use std::fmt;
use std::str::FromStr;

/// A Level of Service grade, `A` (free flow) to `F` (breakdown). Ordered best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LevelOfService {
    A,
    B,
    C,
    D,
    E,
    F,
}

/// Lower bounds (exclusive) of the speed ratio for A..E; anything else is F.
const LOWER_BOUNDS: [(f64, LevelOfService); 5] = [
    (0.85, LevelOfService::A),
    (0.67, LevelOfService::B),
    (0.50, LevelOfService::C),
    (0.40, LevelOfService::D),
    (0.30, LevelOfService::E),
];

impl LevelOfService {
    pub const ALL: [LevelOfService; 6] = [Self::A, Self::B, Self::C, Self::D, Self::E, Self::F];

    /// The speed ratio this grade lies above (exclusive); `None` for F, which has no lower
    /// bound. A ratio `r` has grade `g` when `r > g.lower_bound()` and not above the bound
    /// of the grade before `g`.
    pub fn lower_bound(self) -> Option<f64> {
        LOWER_BOUNDS.iter().find(|(_, los)| *los == self).map(|(bound, _)| *bound)
    }

    /// The grade of a speed ratio (mean speed / free-flow speed); `None` for a ratio that
    /// is not a finite non-negative number.
    pub fn from_speed_ratio(ratio: f64) -> Option<Self> {
        if !ratio.is_finite() || ratio < 0.0 {
            return None;
        }
        Some(LOWER_BOUNDS.iter().find(|(bound, _)| ratio > *bound).map_or(Self::F, |(_, los)| *los))
    }

    /// The grade of a mean speed on a segment with the given free-flow speed; `None` when
    /// the free-flow speed is not positive or either speed is not a number.
    pub fn from_speeds(mean_speed_kmh: f64, free_flow_kmh: f64) -> Option<Self> {
        if free_flow_kmh.is_nan() || free_flow_kmh <= 0.0 {
            return None;
        }
        Self::from_speed_ratio(mean_speed_kmh / free_flow_kmh)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::B => "B",
            Self::C => "C",
            Self::D => "D",
            Self::E => "E",
            Self::F => "F",
        }
    }
}

/// The speed ratio of a mean speed on a segment with the given free-flow speed; `None`
/// when it has no grade (see [`LevelOfService::from_speeds`]).
pub fn speed_ratio(mean_speed_kmh: f64, free_flow_kmh: f64) -> Option<f64> {
    LevelOfService::from_speeds(mean_speed_kmh, free_flow_kmh)
        .map(|_| mean_speed_kmh / free_flow_kmh)
}

/// Where a segment stands in the "worst segments" list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing<'a> {
    pub segment: &'a str,
    /// Speed / free-flow speed ([`speed_ratio`]).
    pub ratio: f64,
    pub los: LevelOfService,
}

/// The order of the "worst segments" list, worst first: relative speed ascending, ties by
/// the worse grade, then by segment id (so the order is total and stable).
pub fn worst_first(a: &Standing<'_>, b: &Standing<'_>) -> std::cmp::Ordering {
    a.ratio.total_cmp(&b.ratio).then(b.los.cmp(&a.los)).then_with(|| a.segment.cmp(b.segment))
}

/// Text that is not one of `A`..`F`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("level of service {0:?} is not one of A, B, C, D, E, F")]
pub struct UnknownLevelOfService(pub String);

impl FromStr for LevelOfService {
    type Err = UnknownLevelOfService;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| UnknownLevelOfService(s.chars().take(8).collect()))
    }
}

impl fmt::Display for LevelOfService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for LevelOfService {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for LevelOfService {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn boundaries_follow_the_hcm_table() {
        use LevelOfService::*;
        let cases = [
            (1.2, A),
            (0.851, A),
            (0.85, B),
            (0.671, B),
            (0.67, C),
            (0.501, C),
            (0.50, D),
            (0.401, D),
            (0.40, E),
            (0.301, E),
            (0.30, F),
            (0.0, F),
        ];
        for (ratio, los) in cases {
            assert_eq!(LevelOfService::from_speed_ratio(ratio), Some(los), "{ratio}");
        }
        assert_eq!(LevelOfService::from_speeds(45.0, 50.0), Some(A));
        assert_eq!(LevelOfService::from_speeds(16.0, 50.0), Some(E));
        assert_eq!(LevelOfService::from_speeds(15.0, 50.0), Some(F));
    }

    #[test]
    fn lower_bounds_agree_with_the_grading_at_the_boundaries() {
        let mut above_previous: Option<f64> = None;
        for los in LevelOfService::ALL {
            match los.lower_bound() {
                Some(bound) => {
                    assert_eq!(LevelOfService::from_speed_ratio(bound + 1e-9), Some(los));
                    assert!(LevelOfService::from_speed_ratio(bound) > Some(los), "{los}");
                    assert!(above_previous.is_none_or(|p| bound < p), "{los}");
                    above_previous = Some(bound);
                }
                None => {
                    assert_eq!(los, LevelOfService::F);
                    assert_eq!(LevelOfService::from_speed_ratio(0.0), Some(los));
                }
            }
        }
    }

    #[test]
    fn worst_segments_go_by_relative_speed_not_absolute_speed() {
        use LevelOfService::*;
        // A residential street at 25 of 28 km/h flows freely; an avenue at 35 of 70 is
        // congested although faster.
        let street =
            Standing { segment: "via-calma", ratio: speed_ratio(25.0, 28.0).unwrap(), los: A };
        let avenue =
            Standing { segment: "viale-lento", ratio: speed_ratio(35.0, 70.0).unwrap(), los: D };
        let jammed = Standing { segment: "ponte", ratio: 0.2, los: F };
        let mut list = [street, avenue, jammed];
        list.sort_by(worst_first);
        assert_eq!(
            list.iter().map(|s| s.segment).collect::<Vec<_>>(),
            ["ponte", "viale-lento", "via-calma"]
        );
        // Equal ratios: the worse grade first, then the segment id.
        let a = Standing { segment: "b", ratio: 0.5, los: C };
        let b = Standing { segment: "a", ratio: 0.5, los: D };
        let c = Standing { segment: "c", ratio: 0.5, los: D };
        let mut tied = [a, c, b];
        tied.sort_by(worst_first);
        assert_eq!(tied.iter().map(|s| s.segment).collect::<Vec<_>>(), ["a", "c", "b"]);
        assert_eq!(speed_ratio(30.0, 0.0), None);
    }

    #[test]
    fn nonsense_inputs_have_no_grade() {
        assert_eq!(LevelOfService::from_speed_ratio(f64::NAN), None);
        assert_eq!(LevelOfService::from_speed_ratio(-0.1), None);
        assert_eq!(LevelOfService::from_speeds(40.0, 0.0), None);
        assert_eq!(LevelOfService::from_speeds(f64::NAN, 50.0), None);
    }

    #[test]
    fn text_and_serde_use_the_letter() {
        for los in LevelOfService::ALL {
            assert_eq!(los.to_string().parse::<LevelOfService>(), Ok(los));
            let json = serde_json::to_string(&los).unwrap();
            assert_eq!(json, format!("\"{los}\""));
            assert_eq!(serde_json::from_str::<LevelOfService>(&json).unwrap(), los);
        }
        assert!("a".parse::<LevelOfService>().is_err());
        assert!(serde_json::from_str::<LevelOfService>("\"G\"").is_err());
        assert!(LevelOfService::A < LevelOfService::F);
    }

    proptest! {
        #[test]
        fn grade_is_monotone_in_the_speed_ratio(a in 0.0f64..2.0, b in 0.0f64..2.0) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let worse = LevelOfService::from_speed_ratio(lo).unwrap();
            let better = LevelOfService::from_speed_ratio(hi).unwrap();
            prop_assert!(better <= worse, "{hi} -> {better}, {lo} -> {worse}");
        }

        #[test]
        fn grade_from_speeds_equals_grade_from_ratio(speed in 0.0f64..150.0, free_flow in 1.0f64..130.0) {
            prop_assert_eq!(LevelOfService::from_speeds(speed, free_flow), LevelOfService::from_speed_ratio(speed / free_flow));
        }
    }
}
