//! Planning a history query: the level and step that answer it ([`plan`]), and the pieces
//! that read its range from that level and, at ends that do not fall on the level's bucket
//! boundaries, from finer ones ([`cover`]), so that every bucket counts exactly the readings
//! inside the range.

use telemetry::EventTime;

use super::{HistoryQuery, Horizons, Resolution, Step, DAY_MS, HOUR_MS, MINUTE_MS};
use crate::StoreError;

/// A part of a query's range, read from one level: `[from, to)`, aligned to the level's
/// buckets (any instants for raw readings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub level: Resolution,
    pub from: EventTime,
    pub to: EventTime,
}

/// How a range is read: pieces that tile `[from, to)` without overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cover {
    pub pieces: Vec<Piece>,
    pub from: EventTime,
    pub to: EventTime,
}

fn floor_to(t: i64, w: i64) -> i64 {
    t.div_euclid(w) * w
}

fn ceil_to(t: i64, w: i64) -> i64 {
    -floor_to(-t, w)
}

/// The pieces that read `[from, to)` from `source` and, at the ends that do not fall on
/// `source`'s bucket boundaries, from finer levels (hours, then minutes, then raw
/// readings), so that every bucket, the partial first and last included, counts exactly
/// the readings inside the range. Where retention has dropped the finer detail an end
/// needs, that end is widened to the enclosing bucket of the finest level that still
/// holds it, and the cover's range says so.
pub fn cover(from: EventTime, to: EventTime, source: Resolution, horizons: &Horizons) -> Cover {
    // The rollups end where the folded minutes do: the rest of the range is read raw.
    if let Some(end) = horizons.rolled_up_until.filter(|e| source != Resolution::Raw && to > *e) {
        let raw = Piece { level: Resolution::Raw, from: from.max(end), to };
        if from >= end {
            return Cover { pieces: vec![raw], from, to };
        }
        let h = Horizons { rolled_up_until: None, ..*horizons };
        let mut head = cover(from, end, source, &h);
        if head.to > end {
            // Retention widened the head to a whole bucket past the end: minutes end
            // there (or the raw readings of the end's minute do).
            head = cover(from, end, Resolution::Minute, &h);
        }
        head.pieces.push(raw);
        head.to = to;
        return head;
    }
    let (a, b) = (from.millis(), to.millis());
    if let Some(c) = cover_at(a, b, source, horizons) {
        return c;
    }
    // Not even the source level holds the range's start: its first bucket whole, as
    // stored, and the rest as usual; failing that, whole source buckets.
    let w = source.bucket_ms().unwrap_or(1);
    let first = floor_to(a, w) + w;
    if first < b {
        if let Some(rest) = cover_at(first, b, source, horizons) {
            let mut pieces =
                vec![Piece { level: source, from: EventTime(first - w), to: EventTime(first) }];
            pieces.extend(rest.pieces);
            return Cover { pieces, from: EventTime(first - w), to: rest.to };
        }
    }
    // Else whole source buckets, as stored, up to the end's bucket, and the end from finer
    // levels where they hold it.
    let (start, inner_b) = (floor_to(a, w), floor_to(b, w));
    if let (true, Some(finer)) = (inner_b > start, source.finer()) {
        if let Some(tail) = cover_at(inner_b, b, finer, horizons) {
            let mut pieces =
                vec![Piece { level: source, from: EventTime(start), to: EventTime(inner_b) }];
            pieces.extend(tail.pieces);
            return Cover { pieces, from: EventTime(start), to: tail.to };
        }
    }
    let (a, b) = (start, ceil_to(b, w));
    let piece = Piece { level: source, from: EventTime(a), to: EventTime(b) };
    Cover { pieces: vec![piece], from: EventTime(a), to: EventTime(b) }
}

/// `[a, b)` from `level` and finer levels; `None` where `level` does not hold the part it
/// must read.
fn cover_at(a: i64, b: i64, level: Resolution, h: &Horizons) -> Option<Cover> {
    let piece = |level, from, to| Piece { level, from: EventTime(from), to: EventTime(to) };
    if a >= b {
        return Some(Cover { pieces: Vec::new(), from: EventTime(a), to: EventTime(b) });
    }
    let (Some(w), Some(finer)) = (level.bucket_ms(), level.finer()) else {
        let c = Cover { pieces: vec![piece(level, a, b)], from: EventTime(a), to: EventTime(b) };
        return h.holds(level, a).then_some(c);
    };
    let (inner_a, inner_b) = (ceil_to(a, w), floor_to(b, w));
    if inner_a >= inner_b {
        // No whole bucket of this level inside: finer levels, or the enclosing buckets.
        if let Some(c) = cover_at(a, b, finer, h) {
            return Some(c);
        }
        let (a, b) = (floor_to(a, w), ceil_to(b, w));
        let c = Cover { pieces: vec![piece(level, a, b)], from: EventTime(a), to: EventTime(b) };
        return h.holds(level, a).then_some(c);
    }
    if !h.holds(level, inner_a) {
        return None;
    }
    let head = match cover_at(a, inner_a, finer, h) {
        Some(c) => c,
        None => {
            let start = floor_to(a, w);
            if !h.holds(level, start) {
                return None;
            }
            Cover {
                pieces: vec![piece(level, start, inner_a)],
                from: EventTime(start),
                to: EventTime(inner_a),
            }
        }
    };
    let tail = cover_at(inner_b, b, finer, h).unwrap_or_else(|| {
        let end = ceil_to(b, w);
        Cover {
            pieces: vec![piece(level, inner_b, end)],
            from: EventTime(inner_b),
            to: EventTime(end),
        }
    });
    let mut pieces = head.pieces;
    pieces.push(piece(level, inner_a, inner_b));
    pieces.extend(tail.pieces);
    Some(Cover { pieces, from: head.from, to: tail.to })
}

/// The level to read and the bucket width to fold it into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub source: Resolution,
    /// `None` for raw readings.
    pub step_ms: Option<i64>,
}

/// Raw readings are chosen automatically only while the span holds at most this many
/// points at one reading per second, the fastest rate a field device reports.
const RAW_POINTS_PER_MS: i64 = 1_000;

/// Ceiling division of positive numbers (`i64::div_ceil` is not stable).
fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// Choose the level and step for a query, or say what is wrong with it.
pub fn plan(q: &HistoryQuery) -> Result<Plan, StoreError> {
    if q.to <= q.from {
        return Err(StoreError::InvalidQuery {
            param: "to",
            message: "`to` must be after `from`".into(),
        });
    }
    let span = q.to.millis() - q.from.millis();
    match q.step {
        Step::Raw => Ok(Plan { source: Resolution::Raw, step_ms: None }),
        Step::Fixed(step) => {
            let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
            if step_ms < MINUTE_MS || step_ms % MINUTE_MS != 0 {
                return Err(StoreError::InvalidQuery {
                    param: "step",
                    message: format!(
                        "step must be a whole number of minutes, got {}",
                        humantime::format_duration(step)
                    ),
                });
            }
            let points = ceil_div(span, step_ms);
            if points > q.limit as i64 {
                return Err(StoreError::InvalidQuery {
                    param: "step",
                    message: format!("a step of {} gives {points} points over this span, more than the limit of {}", humantime::format_duration(step), q.limit),
                });
            }
            // The coarsest stored level whose buckets tile the step exactly.
            let source = if step_ms % DAY_MS == 0 {
                Resolution::Day
            } else if step_ms % HOUR_MS == 0 {
                Resolution::Hour
            } else {
                Resolution::Minute
            };
            Ok(Plan { source, step_ms: Some(step_ms) })
        }
        Step::Auto { max_points } => {
            let max_points = (max_points.max(1)).min(q.limit) as i64;
            if span <= max_points * RAW_POINTS_PER_MS {
                return Ok(Plan { source: Resolution::Raw, step_ms: None });
            }
            for level in Resolution::ROLLUPS {
                let width = level.bucket_ms().unwrap_or(DAY_MS);
                if ceil_div(span, width) <= max_points {
                    return Ok(Plan { source: level, step_ms: Some(width) });
                }
            }
            // Longer than max_points days: whole days per point.
            let days = ceil_div(ceil_div(span, DAY_MS), max_points);
            Ok(Plan { source: Resolution::Day, step_ms: Some(days * DAY_MS) })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use telemetry::MetricId;

    use super::*;
    use crate::history::{GapFill, HistorySubject};

    fn q(span_ms: i64, step: Step) -> HistoryQuery {
        HistoryQuery {
            subject: HistorySubject::City,
            metric: MetricId::SpeedKmh,
            from: EventTime(1_000 * DAY_MS),
            to: EventTime(1_000 * DAY_MS + span_ms),
            step,
            fill: GapFill::None,
            limit: 100_000,
        }
    }

    #[test]
    fn auto_picks_the_finest_level_within_max_points() {
        let auto = Step::Auto { max_points: 1_000 };
        assert_eq!(plan(&q(10 * MINUTE_MS, auto)).unwrap().source, Resolution::Raw);
        assert_eq!(
            plan(&q(6 * HOUR_MS, auto)).unwrap(),
            Plan { source: Resolution::Minute, step_ms: Some(MINUTE_MS) }
        );
        assert_eq!(
            plan(&q(30 * DAY_MS, auto)).unwrap(),
            Plan { source: Resolution::Hour, step_ms: Some(HOUR_MS) }
        );
        assert_eq!(
            plan(&q(365 * DAY_MS, auto)).unwrap(),
            Plan { source: Resolution::Day, step_ms: Some(DAY_MS) }
        );
        assert_eq!(
            plan(&q(3_650 * DAY_MS, auto)).unwrap(),
            Plan { source: Resolution::Day, step_ms: Some(4 * DAY_MS) }
        );
    }

    #[test]
    fn fixed_steps_read_the_coarsest_level_that_tiles_them() {
        let fixed = |s| plan(&q(30 * DAY_MS, Step::Fixed(Duration::from_secs(s)))).unwrap();
        assert_eq!(fixed(900).source, Resolution::Minute);
        assert_eq!(fixed(7_200).source, Resolution::Hour);
        assert_eq!(fixed(90 * 60).source, Resolution::Minute);
        assert_eq!(fixed(2 * 86_400), Plan { source: Resolution::Day, step_ms: Some(2 * DAY_MS) });
    }

    #[test]
    fn bad_steps_and_spans_name_the_parameter() {
        let err = |query: &HistoryQuery| match plan(query) {
            Err(StoreError::InvalidQuery { param, .. }) => param,
            other => panic!("expected an invalid query, got {other:?}"),
        };
        assert_eq!(err(&q(HOUR_MS, Step::Fixed(Duration::from_secs(90)))), "step");
        assert_eq!(err(&q(HOUR_MS, Step::Fixed(Duration::from_secs(10)))), "step");
        assert_eq!(
            err(&HistoryQuery { limit: 10, ..q(DAY_MS, Step::Fixed(Duration::from_secs(60))) }),
            "step"
        );
        assert_eq!(err(&q(0, Step::Raw)), "to");
    }

    #[test]
    fn the_ends_of_a_range_are_read_from_finer_levels() {
        let t = |d: i64, h: i64, m: i64, ms: i64| {
            EventTime(d * DAY_MS + h * HOUR_MS + m * MINUTE_MS + ms)
        };
        let p = |level, from, to| Piece { level, from, to };
        // Hourly sums from 15:30:20.5 to 18:00: the half hour from raw and minutes.
        let c =
            cover(t(20, 15, 30, 20_500), t(20, 18, 0, 0), Resolution::Hour, &Horizons::default());
        assert_eq!(
            c.pieces,
            vec![
                p(Resolution::Raw, t(20, 15, 30, 20_500), t(20, 15, 31, 0)),
                p(Resolution::Minute, t(20, 15, 31, 0), t(20, 16, 0, 0)),
                p(Resolution::Hour, t(20, 16, 0, 0), t(20, 18, 0, 0)),
            ]
        );
        // Daily sums from day 20 at 12:00 to day 23 at 06:00: day 23 is read by the hour.
        let c = cover(t(20, 12, 0, 0), t(23, 6, 0, 0), Resolution::Day, &Horizons::default());
        assert_eq!(
            c.pieces,
            vec![
                p(Resolution::Hour, t(20, 12, 0, 0), t(21, 0, 0, 0)),
                p(Resolution::Day, t(21, 0, 0, 0), t(23, 0, 0, 0)),
                p(Resolution::Hour, t(23, 0, 0, 0), t(23, 6, 0, 0)),
            ]
        );
        // Raw readings dropped by retention: the start widens to its whole minute, and
        // the cover says so.
        let h = Horizons { raw: Some(t(25, 0, 0, 0)), ..Horizons::default() };
        let c = cover(t(20, 15, 30, 20_500), t(20, 18, 0, 0), Resolution::Hour, &h);
        assert_eq!((c.from, c.to), (t(20, 15, 30, 0), t(20, 18, 0, 0)));
        assert_eq!(c.pieces[0], p(Resolution::Minute, t(20, 15, 30, 0), t(20, 15, 31, 0)));
    }

    proptest! {
        /// A cover tiles its range with aligned pieces of levels that hold them; it is the
        /// query's range unless retention dropped what an end needs, and then only wider
        /// by less than one bucket of the source level at each end.
        #[test]
        fn covers_tile_the_range_from_levels_that_hold_it(
            from in 0i64..10 * DAY_MS,
            len in 1i64..5 * DAY_MS,
            source in prop::sample::select(vec![Resolution::Minute, Resolution::Hour, Resolution::Day]),
            raw_h in prop::option::of(0i64..12 * DAY_MS),
            minute_h in prop::option::of(0i64..12 * DAY_MS),
            hour_h in prop::option::of(0i64..12 * DAY_MS),
            rolled in prop::option::of(0i64..16 * DAY_MS),
        ) {
            let h = Horizons {
                raw: raw_h.map(EventTime),
                minute: minute_h.map(|t| EventTime(t - t % MINUTE_MS)),
                hour: hour_h.map(|t| EventTime(t - t % HOUR_MS)),
                day: None,
                // Retention keeps the raw readings of minutes not folded yet, and keeps every
                // level at least a day past a day boundary (the folded minutes end less than
                // two minutes before now): no horizon comes within two days of their end, so
                // an end widened by retention stays before it.
                rolled_up_until: rolled.map(|t| {
                    let newest = [raw_h, minute_h, hour_h].into_iter().flatten().max().map_or(t, |h| t.max(h + 2 * DAY_MS));
                    EventTime(ceil_to(newest, MINUTE_MS))
                }),
            };
            let c = cover(EventTime(from), EventTime(from + len), source, &h);
            let w = source.bucket_ms().unwrap();
            prop_assert!(c.from.millis() <= from && from - c.from.millis() < w);
            prop_assert!(c.to.millis() >= from + len && c.to.millis() - (from + len) < w);
            if (Horizons { rolled_up_until: None, ..h }) == Horizons::default() {
                prop_assert_eq!((c.from.millis(), c.to.millis()), (from, from + len));
            }
            let mut at = c.from;
            for (i, p) in c.pieces.iter().enumerate() {
                // Rollups are read only before their end, raw readings after it.
                if let Some(end) = h.rolled_up_until {
                    if p.level != Resolution::Raw {
                        prop_assert!(p.to <= end);
                    } else if p.to > end {
                        prop_assert!(i == c.pieces.len() - 1);
                    }
                }
                prop_assert_eq!(p.from, at);
                prop_assert!(p.from < p.to);
                prop_assert!(p.level <= source);
                if let Some(pw) = p.level.bucket_ms() {
                    prop_assert_eq!((p.from.millis() % pw, p.to.millis() % pw), (0, 0));
                }
                // Only a first piece may be read as stored where its level does not hold it.
                prop_assert!(h.holds(p.level, p.from.millis()) || i == 0);
                at = p.to;
            }
            prop_assert_eq!(at, c.to);
        }

        /// Auto planning never exceeds max_points buckets.
        #[test]
        fn auto_plans_stay_within_max_points(span in 1i64..20 * 365 * DAY_MS, max_points in 1usize..5_000) {
            let p = plan(&q(span, Step::Auto { max_points })).unwrap();
            match p.step_ms {
                None => prop_assert!(span <= max_points as i64 * 1_000),
                Some(step) => prop_assert!(ceil_div(span, step) <= max_points as i64),
            }
        }
    }
}
