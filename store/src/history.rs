//! History queries: which rollup level answers a query and which pieces of the range are
//! read from finer levels ([`plan`], [`cover`], in `history/planning.rs`), how the rows are
//! folded into the requested step, and gap filling. Planning and folding are pure and
//! shared by every backend, so all of them give the same answer to the same query; a
//! backend only reads raw readings and the rows of each piece.

use std::time::Duration;

use telemetry::{DeviceId, EventTime, MetricId, Partial, SegmentId};

use crate::{Store, StoreError};

mod planning;
pub use planning::{cover, plan, Cover, Piece, Plan};

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
    /// Where the rollup levels end: they hold nothing from this instant on (minutes not
    /// folded yet, PostgreSQL), which is read from raw readings. `None`: they hold every
    /// reading.
    pub rolled_up_until: Option<EventTime>,
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

/// History queries: see the module doc. The SQL is each backend's (`pg/history.rs`,
/// `sqlite/history.rs`).
impl Store {
    /// History at the level and step the query plans (see [`plan`]). Stepped
    /// queries read the ends of the range from finer levels ([`cover`]), so every
    /// bucket, the partial first and last included, equals a recount of the readings of
    /// the range in it.
    pub async fn history(&self, q: &HistoryQuery) -> Result<History, StoreError> {
        let plan = plan(q)?;
        let Some(step) = plan.step_ms else {
            let points = dispatch!(self, s => s.history_raw(q).await)?;
            return Ok(History {
                resolution: plan.source,
                step_ms: None,
                from: q.from,
                to: q.to,
                points,
            });
        };
        let mut horizons = self.horizons().await?;
        horizons.rolled_up_until = self.folded_until().await?;
        let cover = cover(q.from, q.to, plan.source, &horizons);
        let mut rows = Vec::new();
        for piece in &cover.pieces {
            rows.extend(dispatch!(self, s => s.history_piece(q, *piece, step).await)?);
        }
        let mut points = fold(rows, step);
        points.truncate(q.limit);
        let points = fill_gaps(points, cover.from, cover.to, step, q.fill, q.limit);
        Ok(History {
            resolution: plan.source,
            step_ms: Some(step),
            from: cover.from,
            to: cover.to,
            points,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

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

    }
}
