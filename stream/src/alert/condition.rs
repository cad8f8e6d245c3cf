//! Condition evaluators: one small state machine per rule kind and subject, turning
//! samples into raise/clear edges ([`Step`]). They know nothing of alerts, lifecycle or
//! storms; the engine maps edges to alerts.
//!
//! Shared semantics, per (rule, subject):
//! - **Event time, in order.** Samples are evaluated in the subject's own event time; a
//!   sample not newer than the last evaluated one (out of order, or a duplicate of the same
//!   time) is [`Step::Stale`] and changes nothing. So replays, duplicates and reordering
//!   cannot fake a duration, and a device's skewed clock only affects its own conditions.
//!   Consequence: after a device clock jumps back, its readings are ignored for duration
//!   logic until its clock passes the newest time seen (bounded by ingest's future-skew
//!   limit, 10 min by default).
//! - **`for` (hold).** A condition raises at the first sample at which it has held
//!   continuously for at least `for`: every evaluated sample from `since` up to this one
//!   tripped, and `this − since ≥ for`. A gap without samples does not break a run (no data
//!   is not evidence of recovery; the offline rule watches silence).
//! - **Hysteresis.** Once raised, a condition clears at the first sample back past the
//!   clear level; samples between the clear level and the trip level keep it raised. Before
//!   it raises, such samples break the run. Clearing needs no duration: the clear level
//!   already damps flapping, and an operator should see recovery at once.
//! - Each evaluator raises at most once until it clears, so edges alternate
//!   raise, clear, raise, … starting with a raise.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::EventTime;

use super::rule::{
    Deviation, Direction, FlatlineRule, LosRule, MeanLimitRule, OfflineRule, RateOfChangeRule,
    SegmentThresholdRule, ThresholdRule,
};
use crate::segment_state::SegmentState;

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What one sample did to a condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Not newer than the last evaluated sample: ignored.
    Stale,
    /// Evaluated; no edge.
    Quiet,
    /// The condition began at `since` and has now held long enough.
    Raise {
        since: EventTime,
        value: f64,
    },
    Clear {
        value: f64,
    },
}

/// Where a sample stands against a condition with hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Past the trip level.
    Trips,
    /// Between the clear and the trip level.
    Neutral,
    /// Back past the clear level.
    Clears,
}

/// "Held continuously for a duration" with hysteresis; the core of most evaluators.
///
/// 24 bytes: the two optional times are stored bare with presence flags (an absent time
/// is stored as 0, so equality is that of the options). Checkpoints hold it as
/// [`HoldTimerRecord`], two options and the raised flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "HoldTimerRecord", into = "HoldTimerRecord")]
pub struct HoldTimer {
    last: EventTime,
    since: EventTime,
    /// `HAS_LAST`, `HAS_SINCE`, `RAISED`.
    flags: u8,
}

impl Default for HoldTimer {
    fn default() -> Self {
        Self { last: EventTime(0), since: EventTime(0), flags: 0 }
    }
}

const HAS_LAST: u8 = 1;
const HAS_SINCE: u8 = 2;
const RAISED: u8 = 4;

/// [`HoldTimer`] as checkpoints hold it.
#[derive(Serialize, Deserialize)]
pub struct HoldTimerRecord {
    last: Option<EventTime>,
    since: Option<EventTime>,
    raised: bool,
}

impl From<HoldTimer> for HoldTimerRecord {
    fn from(t: HoldTimer) -> Self {
        Self { last: t.last(), since: t.since(), raised: t.is_raised() }
    }
}

impl From<HoldTimerRecord> for HoldTimer {
    fn from(r: HoldTimerRecord) -> Self {
        let mut t = Self::default();
        t.set_last(r.last);
        t.set_since(r.since);
        t.set_raised(r.raised);
        t
    }
}

impl HoldTimer {
    pub fn is_raised(&self) -> bool {
        self.flags & RAISED != 0
    }

    fn last(&self) -> Option<EventTime> {
        (self.flags & HAS_LAST != 0).then_some(self.last)
    }

    fn since(&self) -> Option<EventTime> {
        (self.flags & HAS_SINCE != 0).then_some(self.since)
    }

    fn set_last(&mut self, last: Option<EventTime>) {
        self.last = last.unwrap_or(EventTime(0));
        self.flags = if last.is_some() { self.flags | HAS_LAST } else { self.flags & !HAS_LAST };
    }

    fn set_since(&mut self, since: Option<EventTime>) {
        self.since = since.unwrap_or(EventTime(0));
        self.flags = if since.is_some() { self.flags | HAS_SINCE } else { self.flags & !HAS_SINCE };
    }

    fn set_raised(&mut self, raised: bool) {
        self.flags = if raised { self.flags | RAISED } else { self.flags & !RAISED };
    }

    /// Evaluate a sample ordered by `order`, whose tripping run would begin at `begins` and
    /// has held until `ends` (all three are the reading time for readings; a window's start
    /// and end for segment states).
    pub fn step(
        &mut self,
        order: EventTime,
        begins: EventTime,
        ends: EventTime,
        level: Level,
        hold_ms: i64,
        value: f64,
    ) -> Step {
        if self.last().is_some_and(|l| order <= l) {
            return Step::Stale;
        }
        self.set_last(Some(order));
        if self.is_raised() {
            if level == Level::Clears {
                self.set_raised(false);
                self.set_since(None);
                return Step::Clear { value };
            }
            return Step::Quiet;
        }
        if level != Level::Trips {
            self.set_since(None);
            return Step::Quiet;
        }
        let since = self.since().unwrap_or(begins);
        self.set_since(Some(since));
        if ends.millis().saturating_sub(since.millis()) >= hold_ms {
            self.set_raised(true);
            Step::Raise { since, value }
        } else {
            Step::Quiet
        }
    }
}

/// Where `v` stands against a trip `level` crossed in `direction`, with `clear` for
/// hysteresis.
fn against(direction: Direction, level: f64, clear: f64, v: f64) -> Level {
    match direction {
        Direction::Above if v > level => Level::Trips,
        Direction::Above if v <= clear => Level::Clears,
        Direction::Below if v < level => Level::Trips,
        Direction::Below if v >= clear => Level::Clears,
        _ => Level::Neutral,
    }
}

impl ThresholdRule {
    pub fn level(&self, v: f64) -> Level {
        against(self.direction, self.level, self.clear, v)
    }
}

impl SegmentThresholdRule {
    pub fn level(&self, v: f64) -> Level {
        against(self.direction, self.level, self.clear, v)
    }
}

impl Deviation {
    /// Where `v` stands against the baseline `expected`; `None` when the slot has fewer
    /// samples than the rule needs (the sample is skipped).
    pub fn level(&self, expected: Option<telemetry::baseline::Expected>, v: f64) -> Option<Level> {
        let e = expected.filter(|e| e.samples >= self.min_samples)?;
        let (trip, clear) = match self.direction {
            Direction::Below => (e.centre - self.k * e.spread, e.centre - self.clear_k * e.spread),
            Direction::Above => (e.centre + self.k * e.spread, e.centre + self.clear_k * e.spread),
        };
        Some(against(self.direction, trip, clear, v))
    }
}

/// A deviation from the baseline with `for` and hysteresis: a threshold whose levels move
/// with the time of the week. A sample without a usable baseline is skipped (no step).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnomalyState {
    timer: HoldTimer,
}

impl AnomalyState {
    pub fn on_sample(
        &mut self,
        rule: &Deviation,
        expected: Option<telemetry::baseline::Expected>,
        t: EventTime,
        v: f64,
    ) -> Step {
        match rule.level(expected, v) {
            Some(level) => self.timer.step(t, t, t, level, millis(rule.hold), v),
            None => Step::Quiet,
        }
    }

    pub fn is_raised(&self) -> bool {
        self.timer.is_raised()
    }
}

/// Threshold with `for` and hysteresis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThresholdState {
    timer: HoldTimer,
}

impl ThresholdState {
    pub fn on_sample(&mut self, rule: &ThresholdRule, t: EventTime, v: f64) -> Step {
        self.timer.step(t, t, t, rule.level(v), millis(rule.hold), v)
    }

    pub fn is_raised(&self) -> bool {
        self.timer.is_raised()
    }
}

/// Stuck sensor. A run starts at a reading; later readings within ± epsilon of the run's
/// *first* value extend it. The condition holds once the run has at least `readings`
/// readings and spans at least `for` (each defaults to no constraint); a reading outside the
/// band ends the run, clears a raised condition and starts a new run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlatlineState {
    last: Option<EventTime>,
    run_start: Option<EventTime>,
    run_value: f64,
    run_len: u32,
    raised: bool,
}

impl FlatlineState {
    pub fn on_sample(&mut self, rule: &FlatlineRule, t: EventTime, v: f64) -> Step {
        if self.last.is_some_and(|l| t <= l) {
            return Step::Stale;
        }
        self.last = Some(t);
        let start = match self.run_start {
            Some(start) if (v - self.run_value).abs() <= rule.epsilon => {
                self.run_len = self.run_len.saturating_add(1);
                start
            }
            _ => {
                let was_raised = std::mem::take(&mut self.raised);
                self.run_start = Some(t);
                self.run_value = v;
                self.run_len = 1;
                if was_raised {
                    return Step::Clear { value: v };
                }
                t
            }
        };
        if !self.raised
            && self.run_len >= rule.readings
            && t.millis() - start.millis() >= millis(rule.hold)
        {
            self.raised = true;
            return Step::Raise { since: start, value: v };
        }
        Step::Quiet
    }

    pub fn is_raised(&self) -> bool {
        self.raised
    }
}

/// |Δvalue/Δt| between consecutive evaluated readings, per minute, above a limit for `for`.
/// The run of a fast change begins at the earlier reading of the first fast pair; a pair
/// within the limit clears. The value reported is the rate per minute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateOfChangeState {
    prev: Option<(EventTime, f64)>,
    timer: HoldTimer,
}

impl RateOfChangeState {
    pub fn on_sample(&mut self, rule: &RateOfChangeRule, t: EventTime, v: f64) -> Step {
        let Some((pt, pv)) = self.prev else {
            self.prev = Some((t, v));
            return Step::Quiet;
        };
        if t <= pt {
            return Step::Stale;
        }
        self.prev = Some((t, v));
        let per_minute = (v - pv).abs() / (t.millis() - pt.millis()) as f64 * 60_000.0;
        let level = if per_minute > rule.max_per_minute { Level::Trips } else { Level::Clears };
        self.timer.step(t, pt, t, level, millis(rule.hold), per_minute)
    }

    pub fn is_raised(&self) -> bool {
        self.timer.is_raised()
    }
}

/// Sub-periods of a running mean.
pub const MEAN_BUCKETS: usize = 24;
/// Sub-periods that must hold data before a mean is judged: 75 %, the Air Quality
/// Directive's minimum data capture for an aggregated value.
pub const MEAN_MIN_BUCKETS: usize = 18;

/// One sub-period as checkpoints write it (every position of the ring, empty ones as zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct MeanBucket {
    index: i64,
    sum: f64,
    count: u32,
}

/// Running mean over the trailing averaging period, kept in [`MEAN_BUCKETS`] sub-periods
/// (so the window slides in steps of 1/24 of the period, with fixed memory). Trips when the
/// mean is above the limit and at least [`MEAN_MIN_BUCKETS`] sub-periods hold data; clears
/// when it is back at or below the clear level. The value reported is the mean.
///
/// Sub-period `index` sits at position `index mod 24` of a ring. Only positions holding data
/// within the 24 sub-periods that end at `head` (the newest one written) are stored, in
/// position order, so a state costs 8 + 4 bytes per sub-period with data and nothing for
/// the others; the mean adds them in position order, as a full ring would.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "MeanLimitRecord", into = "MeanLimitRecord")]
pub struct MeanLimitState {
    /// Bit `p`: position `p` holds data.
    live: u32,
    /// The newest sub-period written; every stored one lies in `(head − 24, head]`.
    head: i64,
    /// Sum and count of each position in `live`, lowest position first.
    sums: Box<[f64]>,
    counts: Box<[u32]>,
    /// Its last sample is the state's last evaluated sample (checkpoints write it twice).
    timer: HoldTimer,
}

/// [`MeanLimitState`] as checkpoints hold it: the whole ring of 24 sub-periods.
#[derive(Serialize, Deserialize)]
struct MeanLimitRecord {
    buckets: [MeanBucket; MEAN_BUCKETS],
    timer: HoldTimer,
    last: Option<EventTime>,
}

impl From<MeanLimitState> for MeanLimitRecord {
    fn from(s: MeanLimitState) -> Self {
        let mut buckets = [MeanBucket::default(); MEAN_BUCKETS];
        for (rank, p) in positions(s.live).enumerate() {
            let back = (s.head - p as i64).rem_euclid(MEAN_BUCKETS as i64);
            buckets[p] =
                MeanBucket { index: s.head - back, sum: s.sums[rank], count: s.counts[rank] };
        }
        Self { buckets, last: s.timer.last(), timer: s.timer }
    }
}

impl From<MeanLimitRecord> for MeanLimitState {
    fn from(r: MeanLimitRecord) -> Self {
        // Only sub-periods within 24 of the newest one with data count (the mean skipped
        // older ones and the next sample in their position would have replaced them).
        let head = r.buckets.iter().filter(|b| b.count > 0).map(|b| b.index).max();
        // `last` and the timer's last sample are one time: both are set by every sample.
        let mut timer = r.timer;
        timer.set_last(r.last.max(timer.last()));
        let mut s = Self { timer, ..Self::default() };
        let Some(head) = head else { return s };
        s.head = head;
        let (mut sums, mut counts) = (Vec::new(), Vec::new());
        for (p, b) in r.buckets.iter().enumerate() {
            let current = b.index > head.saturating_sub(MEAN_BUCKETS as i64)
                && b.index.rem_euclid(MEAN_BUCKETS as i64) == p as i64;
            if b.count > 0 && current {
                s.live |= 1 << p;
                sums.push(b.sum);
                counts.push(b.count);
            }
        }
        s.sums = sums.into_boxed_slice();
        s.counts = counts.into_boxed_slice();
        s
    }
}

/// The positions set in `live`, lowest first.
fn positions(live: u32) -> impl Iterator<Item = usize> {
    (0..MEAN_BUCKETS).filter(move |p| live & (1 << p) != 0)
}

/// `slice` with `value` inserted at `at`, in an allocation of exactly the new length.
fn inserted<T: Copy>(slice: &[T], at: usize, value: T) -> Box<[T]> {
    let mut v = Vec::with_capacity(slice.len() + 1);
    v.extend_from_slice(&slice[..at]);
    v.push(value);
    v.extend_from_slice(&slice[at..]);
    v.into_boxed_slice()
}

/// `slice` without the elements whose flag in `keep` is false.
fn kept<T: Copy>(slice: &[T], keep: impl Fn(usize) -> bool) -> Box<[T]> {
    let v: Vec<T> = slice.iter().enumerate().filter(|(i, _)| keep(*i)).map(|(_, x)| *x).collect();
    v.into_boxed_slice()
}

impl MeanLimitState {
    pub fn on_sample(&mut self, rule: &MeanLimitRule, t: EventTime, v: f64) -> Step {
        if self.timer.last().is_some_and(|l| t <= l) {
            return Step::Stale;
        }
        let width = (millis(rule.averaging) / MEAN_BUCKETS as i64).max(1);
        let index = t.millis().div_euclid(width);
        self.advance(index);
        let p = index.rem_euclid(MEAN_BUCKETS as i64) as u32;
        let rank = (self.live & ((1u32 << p) - 1)).count_ones() as usize;
        if self.live & (1 << p) == 0 {
            self.live |= 1 << p;
            self.sums = inserted(&self.sums, rank, 0.0);
            self.counts = inserted(&self.counts, rank, 0);
        }
        self.sums[rank] += v;
        self.counts[rank] += 1;
        let (mut sum, mut count) = (0.0, 0u64);
        for (s, c) in self.sums.iter().zip(self.counts.iter()) {
            sum += s;
            count += u64::from(*c);
        }
        let covered = self.live.count_ones() as usize;
        let mean = sum / count as f64;
        let level = if mean > rule.limit && covered >= MEAN_MIN_BUCKETS {
            Level::Trips
        } else if mean <= rule.clear {
            Level::Clears
        } else {
            Level::Neutral
        };
        self.timer.step(t, t, t, level, 0, mean)
    }

    /// Move the ring's head to sub-period `index` (not older than the head: samples come
    /// in event-time order), dropping the sub-periods 24 or more before it.
    fn advance(&mut self, index: i64) {
        let ahead = index.saturating_sub(self.head);
        if self.live == 0 || ahead < 0 || ahead >= MEAN_BUCKETS as i64 {
            if self.live != 0 {
                *self = Self { timer: self.timer.clone(), ..Self::default() };
            }
            self.head = index;
            return;
        }
        let mut gone = 0u32;
        for i in self.head + 1..=index {
            gone |= 1 << i.rem_euclid(MEAN_BUCKETS as i64);
        }
        self.head = index;
        if self.live & gone == 0 {
            return;
        }
        let drop: Vec<bool> = positions(self.live).map(|p| gone & (1 << p) != 0).collect();
        self.sums = kept(&self.sums, |i| !drop[i]);
        self.counts = kept(&self.counts, |i| !drop[i]);
        self.live &= !gone;
    }

    pub fn is_raised(&self) -> bool {
        self.timer.is_raised()
    }
}

/// The condition of a rule evaluated on segment windows, per (rule, segment): a LOS rule
/// (LOS at or worse than a grade) or a segment threshold (a figure of the segment past a
/// level, with hysteresis). The run begins at the start of its first tripping window and
/// has held until the end of the latest. Windows without the LOS or the figure are
/// skipped; a correction (higher revision) of a window already evaluated is stale, like
/// any sample not newer than the last. The value is the speed for LOS, the figure for a
/// threshold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LosState {
    timer: HoldTimer,
}

impl LosState {
    pub fn on_state(&mut self, rule: &LosRule, s: &SegmentState) -> Step {
        let (Some(los), Some(speed)) = (s.los, s.speed_kmh) else {
            return Step::Quiet;
        };
        let level = if los >= rule.at_or_worse { Level::Trips } else { Level::Clears };
        self.timer.step(s.start, s.start, s.end, level, millis(rule.hold), speed)
    }

    /// A segment anomaly on one window, against the segment's baseline at the window's
    /// middle.
    pub fn on_deviation(
        &mut self,
        rule: &super::rule::SegmentAnomalyRule,
        expected: Option<telemetry::baseline::Expected>,
        s: &SegmentState,
    ) -> Step {
        let Some(v) = rule.figure.of(s) else {
            return Step::Quiet;
        };
        match rule.deviation.level(expected, v) {
            Some(level) => {
                self.timer.step(s.start, s.start, s.end, level, millis(rule.deviation.hold), v)
            }
            None => Step::Quiet,
        }
    }

    /// A segment threshold on one window.
    pub fn on_figure(&mut self, rule: &SegmentThresholdRule, s: &SegmentState) -> Step {
        let Some(v) = rule.figure.of(s) else {
            return Step::Quiet;
        };
        self.timer.step(s.start, s.start, s.end, rule.level(v), millis(rule.hold), v)
    }

    pub fn is_raised(&self) -> bool {
        self.timer.is_raised()
    }
}

/// Inter-arrival gaps remembered to learn a device's interval.
const GAPS: usize = 8;
/// Gaps needed before a learned interval is trusted.
const MIN_GAPS: u8 = 3;

/// A device's arrivals on the processing clock: last arrival, its Last Will, and the
/// interval learned as the median of its last 8 positive inter-arrival gaps (readings that
/// arrive together in one message or batch share one arrival and add no gap).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Arrivals {
    pub last: Option<EventTime>,
    pub last_will_at: Option<EventTime>,
    gaps_ms: [u32; GAPS],
    gap_count: u8,
    next: u8,
}

impl Arrivals {
    /// Something arrived from the device (a reading, or an `online` status).
    pub fn record(&mut self, now: EventTime) {
        self.last_will_at = None;
        match self.last {
            Some(last) if now > last => {
                let gap = u32::try_from(now.millis() - last.millis()).unwrap_or(u32::MAX);
                self.gaps_ms[usize::from(self.next)] = gap;
                self.next = (self.next + 1) % GAPS as u8;
                self.gap_count = (self.gap_count + 1).min(GAPS as u8);
                self.last = Some(now);
            }
            Some(_) => {}
            None => self.last = Some(now),
        }
    }

    /// The device's Last Will (`offline` status) arrived.
    pub fn last_will(&mut self, now: EventTime) {
        self.last_will_at.get_or_insert(now);
    }

    /// Median of the remembered gaps, once there are enough.
    pub fn learned_interval_ms(&self) -> Option<i64> {
        if self.gap_count < MIN_GAPS {
            return None;
        }
        let mut gaps = self.gaps_ms;
        let gaps = &mut gaps[..usize::from(self.gap_count)];
        gaps.sort_unstable();
        Some(i64::from(gaps[gaps.len() / 2]))
    }

    /// After a restart: the downtime does not count as the device's silence.
    pub fn shift_by_downtime(&mut self, downtime_ms: i64) {
        if let Some(last) = self.last.as_mut() {
            *last = EventTime(last.millis().saturating_add(downtime_ms.max(0)));
        }
    }
}

impl OfflineRule {
    /// Is the device offline at `now`? `Some((since, silence in s))` if so; `since` is the
    /// Last Will's arrival, or the last arrival for silence. The expected
    /// interval is the rule's, else the device's registered one, else the learned one;
    /// without any, only the Last Will counts. Silence must exceed both
    /// `silence_factor × interval` and `min_silence`.
    pub fn offline_at(
        &self,
        arrivals: &Arrivals,
        registered: Option<Duration>,
        now: EventTime,
    ) -> Option<(EventTime, f64)> {
        let silence = |since: EventTime| (now.millis() - since.millis()).max(0) as f64 / 1_000.0;
        if self.last_will {
            if let Some(at) = arrivals.last_will_at {
                return Some((at, arrivals.last.map_or(0.0, silence)));
            }
        }
        let interval =
            self.interval.or(registered).map(millis).or_else(|| arrivals.learned_interval_ms())?;
        let last = arrivals.last?;
        let limit = ((interval as f64 * self.silence_factor) as i64).max(millis(self.min_silence));
        (now.millis() - last.millis() > limit).then(|| (last, silence(last)))
    }
}

/// Raised flag of one (offline rule, device).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OfflineState {
    pub raised: bool,
}

#[cfg(test)]
mod tests;
