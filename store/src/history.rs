//! History queries: which rollup level answers a query, how its rows are folded into the
//! requested step, and gap filling. Planning and folding are pure and shared by every
//! backend, so all of them give the same answer to the same query.

use std::time::Duration;

use telemetry::{DeviceId, EventTime, MetricId, Partial, SegmentId};

use crate::StoreError;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// A stored level of detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Resolution {
    #[serde(rename = "raw")]
    Raw,
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "1d")]
    Day,
}

impl Resolution {
    pub const ROLLUPS: [Resolution; 3] = [Resolution::Minute, Resolution::Hour, Resolution::Day];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "raw" => Some(Resolution::Raw),
            "1m" => Some(Resolution::Minute),
            "1h" => Some(Resolution::Hour),
            "1d" => Some(Resolution::Day),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
            Resolution::Day => "1d",
        }
    }

    /// Bucket width in milliseconds; `None` for raw readings.
    pub fn bucket_ms(self) -> Option<i64> {
        match self {
            Resolution::Raw => None,
            Resolution::Minute => Some(MINUTE_MS),
            Resolution::Hour => Some(HOUR_MS),
            Resolution::Day => Some(DAY_MS),
        }
    }

    /// The table holding this level per road segment, where there is one (hours and days).
    pub(crate) fn segment_table(self) -> Option<&'static str> {
        match self {
            Resolution::Hour => Some("segment_rollup_1h"),
            Resolution::Day => Some("segment_rollup_1d"),
            _ => None,
        }
    }

    /// The next finer stored level; raw readings have none.
    pub fn finer(self) -> Option<Resolution> {
        match self {
            Resolution::Raw => None,
            Resolution::Minute => Some(Resolution::Raw),
            Resolution::Hour => Some(Resolution::Minute),
            Resolution::Day => Some(Resolution::Hour),
        }
    }

    /// The table holding this level.
    pub(crate) fn table(self) -> &'static str {
        match self {
            Resolution::Raw => "readings",
            Resolution::Minute => "rollup_1m",
            Resolution::Hour => "rollup_1h",
            Resolution::Day => "rollup_1d",
        }
    }
}

/// Whose history.
#[derive(Debug, Clone, PartialEq)]
pub enum HistorySubject {
    Device(DeviceId),
    /// The devices linked to the segment when the query runs, combined.
    Segment(SegmentId),
    /// The devices of several segments (an area on the map), combined.
    Segments(Vec<SegmentId>),
    /// Every device, combined.
    City,
}

/// How points are spaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// The finest level that returns at most `max_points` points over the span.
    Auto { max_points: usize },
    /// Raw readings, one point each.
    Raw,
    /// Buckets of this width, aligned to the Unix epoch; a whole number of minutes.
    Fixed(Duration),
}

/// What an empty bucket looks like when gaps are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GapFill {
    /// Empty buckets are left out.
    #[default]
    None,
    /// Empty buckets appear with count 0 and no values (NaN, serialised as `null`).
    Null,
    /// Empty buckets appear with count 0 and the previous bucket's last value.
    Previous,
}

impl GapFill {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(GapFill::None),
            "null" => Some(GapFill::Null),
            "previous" => Some(GapFill::Previous),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    pub subject: HistorySubject,
    pub metric: MetricId,
    /// Inclusive.
    pub from: EventTime,
    /// Exclusive.
    pub to: EventTime,
    pub step: Step,
    pub fill: GapFill,
    /// Most points returned.
    pub limit: usize,
}

impl HistoryQuery {
    pub fn device(
        device: DeviceId,
        metric: MetricId,
        from: EventTime,
        to: EventTime,
        step: Step,
    ) -> Self {
        Self {
            subject: HistorySubject::Device(device),
            metric,
            from,
            to,
            step,
            fill: GapFill::None,
            limit: 100_000,
        }
    }
}

/// One point of history: a raw reading (count 1) or a bucket's aggregate. `time` is the
/// reading's time or the bucket's start. A filled gap has count 0.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct HistoryPoint {
    pub time: EventTime,
    pub count: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
}

impl HistoryPoint {
    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }
}

/// The answer: the level read, the step of the points (none for raw), the range the points
/// count and the points. The range is the query's `[from, to)` unless retention has dropped
/// the finer detail one of its ends needs (see [`cover`]); then it is widened to whole
/// buckets of the coarser level, and says so.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct History {
    pub resolution: Resolution,
    pub step_ms: Option<i64>,
    /// Inclusive start of the readings counted.
    pub from: EventTime,
    /// Exclusive end of the readings counted.
    pub to: EventTime,
    pub points: Vec<HistoryPoint>,
}

/// From when each level is whole: retention may have dropped what is older. Recorded by
/// whoever drops data (maintenance, TimescaleDB's policies); `None` where nothing was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Horizons {
    pub raw: Option<EventTime>,
    pub minute: Option<EventTime>,
    pub hour: Option<EventTime>,
    pub day: Option<EventTime>,
}

impl Horizons {
    pub fn get(&self, level: Resolution) -> Option<EventTime> {
        match level {
            Resolution::Raw => self.raw,
            Resolution::Minute => self.minute,
            Resolution::Hour => self.hour,
            Resolution::Day => self.day,
        }
    }

    pub fn set(&mut self, level: Resolution, t: Option<EventTime>) {
        let slot = match level {
            Resolution::Raw => &mut self.raw,
            Resolution::Minute => &mut self.minute,
            Resolution::Hour => &mut self.hour,
            Resolution::Day => &mut self.day,
        };
        *slot = t;
    }

    /// Record a stored horizon, by level name (`raw`, `1m`, `1h`, `1d`); a later one for
    /// the same level wins if it is later.
    pub(crate) fn record(&mut self, level: String, t: EventTime) -> Result<(), StoreError> {
        let level = Resolution::parse(&level)
            .ok_or(StoreError::Corrupt { what: "retention level", value: level })?;
        self.set(level, Some(self.get(level).map_or(t, |old| old.max(t))));
        Ok(())
    }

    /// Whether `level` still holds everything from `t` on.
    fn holds(&self, level: Resolution, t: i64) -> bool {
        self.get(level).is_none_or(|h| t >= h.millis())
    }
}

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
    let (a, b) = (from.millis(), to.millis());
    if let Some(c) = cover_at(a, b, source, horizons) {
        return c;
    }
    // Not even the source level holds the range's start: whole source buckets, as stored.
    let w = source.bucket_ms().unwrap_or(1);
    let (a, b) = (floor_to(a, w), ceil_to(b, w));
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

/// One row of a rollup level as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceRow {
    pub bucket: EventTime,
    pub partial: Partial,
}

/// Fold rows (any order, any devices) into epoch-aligned buckets of `step_ms`, sorted.
pub fn fold(rows: impl IntoIterator<Item = SourceRow>, step_ms: i64) -> Vec<HistoryPoint> {
    let mut buckets: std::collections::BTreeMap<i64, Partial> = std::collections::BTreeMap::new();
    for r in rows {
        let b = r.bucket.millis().div_euclid(step_ms) * step_ms;
        buckets.entry(b).and_modify(|p| p.merge(&r.partial)).or_insert(r.partial);
    }
    buckets.into_iter().map(|(t, p)| point(EventTime(t), &p)).collect()
}

pub(crate) fn point(time: EventTime, p: &Partial) -> HistoryPoint {
    HistoryPoint { time, count: p.count, sum: p.sum, min: p.min, max: p.max, last: p.last_value }
}

/// Insert the empty buckets of `[from, to)` between the points, as `fill` says.
pub fn fill_gaps(
    points: Vec<HistoryPoint>,
    from: EventTime,
    to: EventTime,
    step_ms: i64,
    fill: GapFill,
    limit: usize,
) -> Vec<HistoryPoint> {
    if fill == GapFill::None {
        return points;
    }
    let first = from.millis().div_euclid(step_ms) * step_ms;
    let mut out = Vec::with_capacity(points.len());
    let mut given = points.into_iter().peekable();
    let mut previous: Option<f64> = None;
    let mut t = first;
    while t < to.millis() && out.len() < limit {
        match given.peek() {
            Some(p) if p.time.millis() == t => {
                let p = given.next().unwrap_or_else(|| unreachable!());
                previous = Some(p.last);
                out.push(p);
            }
            _ => {
                let v = match fill {
                    GapFill::Previous => previous.unwrap_or(f64::NAN),
                    _ => f64::NAN,
                };
                out.push(HistoryPoint {
                    time: EventTime(t),
                    count: 0,
                    sum: 0.0,
                    min: v,
                    max: v,
                    last: v,
                });
            }
        }
        t += step_ms;
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

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

    #[test]
    fn gaps_are_filled_with_nothing_or_the_previous_value() {
        let p = |t: i64, v: f64| HistoryPoint {
            time: EventTime(t * MINUTE_MS),
            count: 1,
            sum: v,
            min: v,
            max: v,
            last: v,
        };
        let pts = vec![p(1, 5.0), p(3, 7.0)];
        let null = fill_gaps(
            pts.clone(),
            EventTime(0),
            EventTime(5 * MINUTE_MS),
            MINUTE_MS,
            GapFill::Null,
            100,
        );
        assert_eq!(null.iter().map(|x| x.count).collect::<Vec<_>>(), vec![0, 1, 0, 1, 0]);
        assert!(null[0].last.is_nan() && null[2].last.is_nan());
        let prev = fill_gaps(
            pts,
            EventTime(0),
            EventTime(5 * MINUTE_MS),
            MINUTE_MS,
            GapFill::Previous,
            100,
        );
        let lasts: Vec<String> = prev.iter().map(|x| format!("{}", x.last)).collect();
        assert_eq!(lasts, vec!["NaN", "5", "5", "7", "7"]);
        assert_eq!(serde_json::to_value(null[0]).unwrap()["last"], serde_json::Value::Null);
    }

    proptest! {
        /// Folding any rows at any level into a coarser step equals folding the raw
        /// readings straight into that step.
        #[test]
        fn folding_rollups_equals_folding_readings(
            readings in prop::collection::vec((0i64..3 * DAY_MS, -500i32..500), 1..300),
            step_hours in 1i64..30,
        ) {
            let step = step_hours * HOUR_MS;
            let raw: Vec<SourceRow> = readings.iter().map(|&(t, v)| SourceRow { bucket: EventTime(t), partial: Partial::of(EventTime(t), f64::from(v)) }).collect();
            let minutes: Vec<SourceRow> = fold(raw.clone(), MINUTE_MS).into_iter().map(|p| SourceRow {
                bucket: p.time,
                partial: Partial { count: p.count, sum: p.sum, min: p.min, max: p.max, last_value: p.last, last_time: EventTime(0) },
            }).collect();
            let direct = fold(raw, step);
            let via = fold(minutes, step);
            prop_assert_eq!(direct.len(), via.len());
            for (a, b) in direct.iter().zip(&via) {
                prop_assert_eq!((a.time, a.count, a.sum, a.min, a.max), (b.time, b.count, b.sum, b.min, b.max));
            }
        }

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
        ) {
            let h = Horizons {
                raw: raw_h.map(EventTime),
                minute: minute_h.map(|t| EventTime(t - t % MINUTE_MS)),
                hour: hour_h.map(|t| EventTime(t - t % HOUR_MS)),
                day: None,
            };
            let c = cover(EventTime(from), EventTime(from + len), source, &h);
            let w = source.bucket_ms().unwrap();
            prop_assert!(c.from.millis() <= from && from - c.from.millis() < w);
            prop_assert!(c.to.millis() >= from + len && c.to.millis() - (from + len) < w);
            if h == Horizons::default() {
                prop_assert_eq!((c.from.millis(), c.to.millis()), (from, from + len));
            }
            let mut at = c.from;
            for p in &c.pieces {
                prop_assert_eq!(p.from, at);
                prop_assert!(p.from < p.to);
                prop_assert!(p.level <= source);
                if let Some(pw) = p.level.bucket_ms() {
                    prop_assert_eq!((p.from.millis() % pw, p.to.millis() % pw), (0, 0));
                }
                prop_assert!(h.holds(p.level, p.from.millis()) || c.pieces.len() == 1);
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
