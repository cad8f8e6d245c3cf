//! Learned baselines: the usual value of a detector's metric or a road segment's figure
//! for each 15-minute slot of the week, with a robust centre and spread.
//!
//! - **Slots.** A week has [`SLOTS_PER_WEEK`] (672) slots of 15 minutes, Monday 00:00 local
//!   time first. Local time is a time zone's wall clock (`[baselines] timezone`, summer
//!   time followed) or UTC plus a fixed offset (`utc_offset_minutes`): [`SlotClock`].
//! - **Samples.** One sample per subject, metric and occurrence of a slot: the mean of the
//!   slot's readings that week (for a segment, its figure over the slot, defined as the
//!   stream defines it per window: [`segment_figures`]). A slot learned over `weeks` weeks
//!   has at most `weeks` samples. Days listed as holidays and slots overlapping an
//!   operation that closed the segment are not samples ([`Exclusions`]).
//! - **Centre and spread.** The centre is the median of the samples; the spread is the
//!   median absolute deviation scaled by 1.4826 (the standard deviation for normal data),
//!   never less than a floor: `max(absolute floor of the metric, relative floor × |centre|)`
//!   ([`SpreadFloor`]), so a slot whose few samples agree does not make every reading an
//!   outlier.
//! - **Between slots.** [`Profile::at`] interpolates centre and spread linearly between the
//!   midpoints of adjacent slots, so that a rush hour's ramp is followed within a slot.
//!
//! Pure: no I/O, no clock. The store gathers the slot means, the API expands profiles into
//! time series, the stream's anomaly rules hold them in memory.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{EventTime, MetricId};

/// 15 minutes.
pub const SLOT_MS: i64 = 15 * 60_000;
/// Slots in a week.
pub const SLOTS_PER_WEEK: usize = 672;
const DAY_MS: i64 = 86_400_000;
/// A week in ms.
pub const WEEK_MS: i64 = 7 * DAY_MS;

/// What a baseline is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineOn {
    /// A device's own readings of a metric of the catalogue.
    Device,
    /// A road segment's figure (`flow_vph`, `speed_kmh`, `occupancy_pct`).
    Segment,
}

impl BaselineOn {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Segment => "segment",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "device" => Some(Self::Device),
            "segment" => Some(Self::Segment),
            _ => None,
        }
    }
}

/// The metrics learned per device: traffic detectors' counts, speed and occupancy, air
/// stations' NO2 and PM10.
pub const DEVICE_METRICS: [MetricId; 5] = [
    MetricId::VehicleCount,
    MetricId::SpeedKmh,
    MetricId::OccupancyPct,
    MetricId::No2Ugm3,
    MetricId::Pm10Ugm3,
];

/// The figures learned per segment (the segment state's figures).
pub const SEGMENT_FIGURES: [&str; 3] = ["flow_vph", "speed_kmh", "occupancy_pct"];

/// Whether `metric` is learned for subjects of `on`, as its canonical name.
pub fn learned_metric(on: BaselineOn, metric: &str) -> Option<&'static str> {
    match on {
        BaselineOn::Device => DEVICE_METRICS.iter().map(|m| m.as_str()).find(|m| *m == metric),
        BaselineOn::Segment => SEGMENT_FIGURES.iter().copied().find(|m| *m == metric),
    }
}

/// The smallest spread a metric's baseline may have, in its unit.
pub fn absolute_floor(metric: &str) -> f64 {
    match metric {
        "speed_kmh" => 2.0,
        "occupancy_pct" => 1.0,
        "flow_vph" => 30.0,
        "vehicle_count" => 1.0,
        "no2_ugm3" => 5.0,
        "pm10_ugm3" => 3.0,
        _ => 0.0,
    }
}

/// A time zone's offsets, looked up without the tz database on the hot path.
#[derive(Debug)]
struct Zone {
    name: String,
    /// The offset before the first transition, in ms.
    first: i64,
    /// (instant in UTC ms, offset in ms from then on), ascending, to [`Zone::TABLE_END`].
    transitions: Vec<(i64, i64)>,
    tz: jiff::tz::TimeZone,
}

impl Zone {
    /// 1900-01-01T00:00Z: offsets before are looked up in the tz database.
    const TABLE_START: i64 = -2_208_988_800_000;
    /// 2200-01-01T00:00Z: offsets after are looked up in the tz database.
    const TABLE_END: i64 = 7_258_118_400_000;

    fn load(name: &str) -> Option<Self> {
        let tz = jiff::tz::TimeZone::get(name).ok()?;
        let start = jiff::Timestamp::from_millisecond(Self::TABLE_START).ok()?;
        let first = i64::from(tz.to_offset(start).seconds()) * 1000;
        let transitions: Vec<(i64, i64)> = tz
            .following(start)
            .map(|t| (t.timestamp().as_millisecond(), i64::from(t.offset().seconds()) * 1000))
            .take_while(|(at, _)| *at < Self::TABLE_END)
            .collect();
        Some(Self { name: name.to_owned(), first, transitions, tz })
    }

    fn offset_ms(&self, t: i64) -> i64 {
        if !(Self::TABLE_START..Self::TABLE_END).contains(&t) {
            return jiff::Timestamp::from_millisecond(t)
                .map_or(self.first, |ts| i64::from(self.tz.to_offset(ts).seconds()) * 1000);
        }
        match self.transitions.partition_point(|(at, _)| *at <= t) {
            0 => self.first,
            i => self.transitions[i - 1].1,
        }
    }
}

/// The zones loaded, each once (a process names a handful at most).
fn zone(name: &str) -> Option<&'static Zone> {
    static ZONES: std::sync::Mutex<Vec<&'static Zone>> = std::sync::Mutex::new(Vec::new());
    let mut zones = ZONES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(z) = zones.iter().find(|z| z.name == name) {
        return Some(z);
    }
    let z: &'static Zone = Box::leak(Box::new(Zone::load(name)?));
    zones.push(z);
    Some(z)
}

/// Local time: UTC plus a fixed offset (a whole number of quarter hours), or the offset of
/// a time zone (an IANA name, from the tz database bundled in the binary) at each instant,
/// so that slots follow the local wall clock through summer time.
///
/// Where the clocks go back (the autumn's doubled hour), both occurrences of each local
/// quarter hour fall in the same slot: that day the slot has two samples. Where they go
/// forward (spring), the skipped quarter hours have no occurrence that day.
#[derive(Clone, Copy)]
pub struct SlotClock {
    offset_ms: i64,
    zone: Option<&'static Zone>,
}

impl std::fmt::Debug for SlotClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl PartialEq for SlotClock {
    fn eq(&self, other: &Self) -> bool {
        match (self.zone, other.zone) {
            (Some(a), Some(b)) => std::ptr::eq(a, b),
            (None, None) => self.offset_ms == other.offset_ms,
            _ => false,
        }
    }
}

impl Eq for SlotClock {}

impl Default for SlotClock {
    /// Florence, CET (a fixed offset).
    fn default() -> Self {
        Self { offset_ms: 3_600_000, zone: None }
    }
}

impl SlotClock {
    /// `offset_minutes` east of UTC; `None` unless a multiple of 15 within ±14 h.
    pub fn new(offset_minutes: i32) -> Option<Self> {
        (offset_minutes % 15 == 0 && offset_minutes.abs() <= 14 * 60)
            .then_some(Self { offset_ms: i64::from(offset_minutes) * 60_000, zone: None })
    }

    /// The time zone `name` (IANA, e.g. `Europe/Rome`); `None` when the bundled tz database
    /// has no such zone, or its offsets since 1970 are not whole quarter hours (the slots'
    /// boundaries are UTC quarter hours).
    pub fn zone(name: &str) -> Option<Self> {
        let z = zone(name)?;
        let quarter = |o: i64| o % SLOT_MS == 0;
        let since_1970 = z.transitions.iter().filter(|(at, _)| *at >= 0).map(|(_, o)| *o);
        (quarter(z.offset_ms(0)) && since_1970.clone().all(quarter))
            .then_some(Self { offset_ms: z.offset_ms(0), zone: Some(z) })
    }

    /// The zone's name, for a clock that follows one.
    pub fn zone_name(self) -> Option<&'static str> {
        self.zone.map(|z| z.name.as_str())
    }

    /// `Europe/Rome`, or `UTC+60` for a fixed offset (what the settings fingerprint
    /// records).
    pub fn describe(self) -> String {
        match self.zone {
            Some(z) => z.name.clone(),
            None => format!("UTC{:+}", self.offset_ms / 60_000),
        }
    }

    /// Minutes east of UTC at `t`.
    pub fn offset_minutes_at(self, t: EventTime) -> i32 {
        (self.offset_at(t.millis()) / 60_000) as i32
    }

    fn offset_at(self, t: i64) -> i64 {
        match self.zone {
            Some(z) => z.offset_ms(t),
            None => self.offset_ms,
        }
    }

    /// Local wall-clock time of `t`, in ms since 1970-01-01T00:00 local.
    pub fn local_ms(self, t: EventTime) -> i64 {
        t.millis().saturating_add(self.offset_at(t.millis()))
    }

    /// The instants whose local time is `local` (ms since 1970-01-01T00:00 local),
    /// earliest first: one, two where the clocks went back, none where they went forward.
    pub fn instants(self, local: i64) -> Vec<EventTime> {
        let mut offsets = vec![self.offset_at(local - DAY_MS), self.offset_at(local + DAY_MS)];
        offsets.sort_unstable_by(|a, b| b.cmp(a));
        offsets.dedup();
        offsets
            .into_iter()
            .map(|o| local - o)
            .filter(|&t| self.offset_at(t) == local - t)
            .map(EventTime)
            .collect()
    }

    /// The slot of the week `t` falls in.
    pub fn slot(self, t: EventTime) -> usize {
        let local = self.local_ms(t);
        // 1970-01-01 was a Thursday: Monday is day 4 of that week.
        let week_ms = (local + 3 * DAY_MS).rem_euclid(WEEK_MS);
        (week_ms / SLOT_MS) as usize
    }

    /// The start of the slot `t` falls in.
    pub fn slot_start(self, t: EventTime) -> EventTime {
        EventTime(t.millis() - self.local_ms(t).rem_euclid(SLOT_MS))
    }

    /// The local day number (days since 1970-01-01 local) of `t`.
    pub fn local_day(self, t: EventTime) -> i64 {
        self.local_ms(t).div_euclid(DAY_MS)
    }
}

/// A local date `YYYY-MM-DD` as a day number, as [`SlotClock::local_day`] counts.
pub fn parse_day(s: &str) -> Option<i64> {
    let mut parts = s.splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    if s.len() != 10 {
        return None;
    }
    let date =
        ::time::Date::from_calendar_date(year, ::time::Month::try_from(month).ok()?, day).ok()?;
    Some(i64::from(date.to_julian_day()) - 2_440_588)
}

/// The floor of the spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpreadFloor {
    /// A fraction of the centre's magnitude (0.1 = 10 %).
    pub relative: f64,
}

impl SpreadFloor {
    pub fn of(self, metric: &str, centre: f64) -> f64 {
        absolute_floor(metric).max(self.relative * centre.abs())
    }
}

/// The median of `v` (reordered); `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) })
}

/// The scale that makes the median absolute deviation estimate a standard deviation.
pub const MAD_SCALE: f64 = 1.4826;

/// One learned slot.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SlotStat {
    pub centre: f64,
    pub spread: f64,
    pub samples: u32,
}

/// Centre and spread of samples (reordered); `None` when empty.
pub fn robust(samples: &mut [f64], metric: &str, floor: SpreadFloor) -> Option<SlotStat> {
    let centre = median(samples)?;
    let mut deviations: Vec<f64> = samples.iter().map(|v| (v - centre).abs()).collect();
    let mad = median(&mut deviations).unwrap_or(0.0);
    Some(SlotStat {
        centre,
        spread: (MAD_SCALE * mad).max(floor.of(metric, centre)),
        samples: u32::try_from(samples.len()).unwrap_or(u32::MAX),
    })
}

/// One slot mean: the sample of a subject's metric for the slot starting at `bucket`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotMean {
    pub on: BaselineOn,
    pub subject: String,
    pub metric: &'static str,
    pub bucket: EventTime,
    pub value: f64,
}

/// One device's readings of a metric in a slot, as the store sums them.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSlotSum {
    pub device: String,
    /// The segment the device is linked to now.
    pub segment: Option<String>,
    pub metric: MetricId,
    pub bucket: EventTime,
    pub count: u64,
    pub sum: f64,
}

/// The device samples and the segment samples of slot sums, with the segment figures
/// defined as the stream's segment state defines them per window
/// (`stream::segment_state`): flow, the mean over the detectors that counted of their
/// vehicles per hour; speed, the mean of the detectors' mean speed weighted by their
/// counts (the plain mean of the speed readings when no detector counted a vehicle);
/// occupancy, the mean over detectors of their mean occupancy.
pub fn slot_means(sums: &[DeviceSlotSum]) -> Vec<SlotMean> {
    let mut out = Vec::with_capacity(sums.len());
    for s in sums.iter().filter(|s| s.count > 0) {
        if let Some(metric) = learned_metric(BaselineOn::Device, s.metric.as_str()) {
            out.push(SlotMean {
                on: BaselineOn::Device,
                subject: s.device.clone(),
                metric,
                bucket: s.bucket,
                value: s.sum / s.count as f64,
            });
        }
    }
    out.extend(segment_figures(sums));
    out
}

/// One detector's readings of a slot, as the segment figures take them.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct DetectorSlot {
    /// Vehicles counted (the sum of its counts), when it counted.
    pub counts: Option<f64>,
    /// Sum and count of its speed readings.
    pub speed: Option<(f64, u64)>,
    /// Its mean occupancy.
    pub occupancy: Option<f64>,
}

impl DetectorSlot {
    /// Take the count and sum of one metric's readings.
    pub fn add(&mut self, metric: MetricId, count: u64, sum: f64) {
        match metric {
            MetricId::VehicleCount => self.counts = Some(sum),
            MetricId::SpeedKmh if count > 0 => self.speed = Some((sum, count)),
            MetricId::OccupancyPct if count > 0 => self.occupancy = Some(sum / count as f64),
            _ => {}
        }
    }
}

/// A segment's figures over a slot, taken detector by detector (see [`slot_means`]).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SegmentSlot {
    counted: f64,
    counters: u32,
    weighted: f64,
    weight: f64,
    plain: f64,
    n: u64,
    occupancy: f64,
    occupied: u32,
}

impl SegmentSlot {
    pub fn add(&mut self, d: &DetectorSlot) {
        if let Some(c) = d.counts {
            self.counted += c;
            self.counters += 1;
        }
        if let Some((sum, count)) = d.speed {
            let w = d.counts.unwrap_or(0.0);
            self.weighted += sum / count as f64 * w;
            self.weight += w;
            self.plain += sum;
            self.n += count;
        }
        if let Some(o) = d.occupancy {
            self.occupancy += o;
            self.occupied += 1;
        }
    }

    /// The figures, in the order of [`SEGMENT_FIGURES`] (`None`: no value).
    pub fn figures(&self) -> [Option<f64>; 3] {
        let per_hour = 3_600_000.0 / SLOT_MS as f64;
        let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
        [
            finite((self.counters > 0).then(|| self.counted * per_hour / f64::from(self.counters))),
            finite(if self.weight > 0.0 {
                Some(self.weighted / self.weight)
            } else {
                (self.n > 0).then(|| self.plain / self.n as f64)
            }),
            finite((self.occupied > 0).then(|| self.occupancy / f64::from(self.occupied))),
        ]
    }
}

/// The segment figures of slot sums (see [`slot_means`]).
pub fn segment_figures(sums: &[DeviceSlotSum]) -> Vec<SlotMean> {
    let mut by: HashMap<(&str, EventTime), HashMap<&str, DetectorSlot>> = HashMap::new();
    for s in sums {
        let Some(segment) = s.segment.as_deref().filter(|g| !g.is_empty()) else { continue };
        let d = by.entry((segment, s.bucket)).or_default().entry(&s.device).or_default();
        d.add(s.metric, s.count, s.sum);
    }
    let mut out = Vec::new();
    for ((segment, bucket), detectors) in by {
        let mut acc = SegmentSlot::default();
        detectors.values().for_each(|d| acc.add(d));
        for (metric, value) in SEGMENT_FIGURES.iter().zip(acc.figures()) {
            if let Some(value) = value {
                out.push(SlotMean {
                    on: BaselineOn::Segment,
                    subject: segment.to_owned(),
                    metric,
                    bucket,
                    value,
                });
            }
        }
    }
    out
}

/// One device's count and sum of one metric in a bucket, by index: the device's index in
/// the fleet being learned, the metric's in [`DEVICE_METRICS`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexedSum {
    pub device: u32,
    pub metric: u8,
    pub count: u64,
    pub sum: f64,
}

/// The sums of one 15-minute bucket, a device's entries next to each other.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketSums {
    pub bucket: EventTime,
    pub sums: Vec<IndexedSum>,
}

/// Learns a whole fleet slot by slot from sums by index, without a string or a sample
/// per sum: the same samples, centres and spreads as [`slot_means`] and [`learn`] give.
pub struct FleetLearner {
    clock: SlotClock,
    floor: SpreadFloor,
    holidays: Vec<i64>,
    /// (segment index, from ms, to ms).
    closures: Vec<(u32, i64, i64)>,
    segment_of: Vec<Option<u32>>,
    device_samples: Vec<Vec<f64>>,
    segment_samples: Vec<Vec<f64>>,
    touched_devices: Vec<u32>,
    touched_segments: Vec<u32>,
    bucket_segments: Vec<SegmentSlot>,
    bucket_touched: Vec<u32>,
    closed: Vec<bool>,
}

impl FleetLearner {
    /// `segment_of`: each device's segment index (into `segments`).
    pub fn new(
        clock: SlotClock,
        floor: SpreadFloor,
        exclusions: &Exclusions,
        segment_of: Vec<Option<u32>>,
        segments: &[String],
    ) -> Self {
        let index: HashMap<&str, u32> =
            segments.iter().enumerate().map(|(i, s)| (s.as_str(), i as u32)).collect();
        let closures = exclusions
            .closures
            .iter()
            .filter_map(|(s, a, b)| Some((*index.get(s.as_str())?, *a, *b)))
            .collect();
        let devices = segment_of.len();
        Self {
            clock,
            floor,
            holidays: exclusions.holidays.clone(),
            closures,
            segment_of,
            device_samples: vec![Vec::new(); devices * DEVICE_METRICS.len()],
            segment_samples: vec![Vec::new(); segments.len() * SEGMENT_FIGURES.len()],
            touched_devices: Vec::new(),
            touched_segments: Vec::new(),
            bucket_segments: vec![SegmentSlot::default(); segments.len()],
            bucket_touched: Vec::new(),
            closed: vec![false; segments.len()],
        }
    }

    /// Take one occurrence's sums as samples of its slot.
    pub fn add(&mut self, b: &BucketSums) {
        if self.holidays.contains(&self.clock.local_day(b.bucket)) {
            return;
        }
        let (from, to) = (b.bucket.millis(), b.bucket.millis() + SLOT_MS);
        let closed: Vec<u32> = self
            .closures
            .iter()
            .filter(|(_, a, z)| *a < to && *z > from)
            .map(|(s, _, _)| *s)
            .collect();
        for &s in &closed {
            self.closed[s as usize] = true;
        }
        let mut i = 0;
        while i < b.sums.len() {
            let device = b.sums[i].device;
            let mut j = i;
            while j < b.sums.len() && b.sums[j].device == device {
                j += 1;
            }
            let segment = self.segment_of.get(device as usize).copied().flatten();
            if segment.is_some_and(|s| self.closed[s as usize]) {
                i = j;
                continue;
            }
            let mut d = DetectorSlot::default();
            for s in &b.sums[i..j] {
                let Some(metric) = DEVICE_METRICS.get(usize::from(s.metric)) else { continue };
                if s.count > 0 {
                    let k = device as usize * DEVICE_METRICS.len() + usize::from(s.metric);
                    if let Some(v) = self.device_samples.get_mut(k) {
                        if v.is_empty() {
                            self.touched_devices.push(k as u32);
                        }
                        v.push(s.sum / s.count as f64);
                    }
                }
                d.add(*metric, s.count, s.sum);
            }
            if let Some(s) = segment {
                if let Some(acc) = self.bucket_segments.get_mut(s as usize) {
                    if *acc == SegmentSlot::default() {
                        self.bucket_touched.push(s);
                    }
                    acc.add(&d);
                }
            }
            i = j;
        }
        for s in std::mem::take(&mut self.bucket_touched) {
            let acc = std::mem::take(&mut self.bucket_segments[s as usize]);
            for (f, value) in acc.figures().into_iter().enumerate() {
                if let Some(value) = value {
                    let v = &mut self.segment_samples[s as usize * SEGMENT_FIGURES.len() + f];
                    if v.is_empty() {
                        self.touched_segments.push((s as usize * SEGMENT_FIGURES.len() + f) as u32);
                    }
                    v.push(value);
                }
            }
        }
        for s in closed {
            self.closed[s as usize] = false;
        }
    }

    /// The slot learned from the occurrences added since the last call: `emit` gets
    /// (kind, device or segment index, metric, centre and spread) for each subject with
    /// samples; the samples are cleared.
    pub fn finish(&mut self, emit: &mut dyn FnMut(BaselineOn, u32, &'static str, SlotStat)) {
        let floor = self.floor;
        for k in std::mem::take(&mut self.touched_devices) {
            let (device, m) =
                (k as usize / DEVICE_METRICS.len(), k as usize % DEVICE_METRICS.len());
            let metric = DEVICE_METRICS[m].as_str();
            let v = &mut self.device_samples[k as usize];
            if let Some(stat) = robust(v, metric, floor) {
                emit(BaselineOn::Device, device as u32, metric, stat);
            }
            v.clear();
        }
        for k in std::mem::take(&mut self.touched_segments) {
            let (segment, f) =
                (k as usize / SEGMENT_FIGURES.len(), k as usize % SEGMENT_FIGURES.len());
            let metric = SEGMENT_FIGURES[f];
            let v = &mut self.segment_samples[k as usize];
            if let Some(stat) = robust(v, metric, floor) {
                emit(BaselineOn::Segment, segment as u32, metric, stat);
            }
            v.clear();
        }
    }
}

/// What is not learned from: holidays (local days) and closures of segments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exclusions {
    pub holidays: Vec<i64>,
    /// (segment, from ms, to ms): an operation that closed the segment.
    pub closures: Vec<(String, i64, i64)>,
}

impl Exclusions {
    /// Whether the slot of `bucket` on `segment` (a device's segment, or the segment
    /// itself) is excluded.
    pub fn excludes(&self, clock: SlotClock, segment: Option<&str>, bucket: EventTime) -> bool {
        if self.holidays.contains(&clock.local_day(bucket)) {
            return true;
        }
        let (from, to) = (bucket.millis(), bucket.millis() + SLOT_MS);
        segment
            .is_some_and(|g| self.closures.iter().any(|(s, a, b)| s == g && *a < to && *b > from))
    }
}

/// One learned slot of one subject's metric, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineRow {
    pub on: BaselineOn,
    pub subject: String,
    pub metric: String,
    pub slot: u16,
    pub centre: f64,
    pub spread: f64,
    pub samples: u32,
}

/// Learn the slots of `means` (every sample of the slots being learned), each slot's
/// samples reduced to [`robust`] centre and spread. `segment_of` gives a device's segment
/// for the closures. Rows come out sorted by subject, metric and slot.
pub fn learn(
    means: &[SlotMean],
    clock: SlotClock,
    exclusions: &Exclusions,
    floor: SpreadFloor,
    segment_of: &dyn Fn(&str) -> Option<String>,
) -> Vec<BaselineRow> {
    let mut groups: HashMap<(BaselineOn, &str, &'static str, u16), Vec<f64>> = HashMap::new();
    let mut segments: HashMap<&str, Option<String>> = HashMap::new();
    for m in means {
        let segment = match m.on {
            BaselineOn::Segment => Some(m.subject.clone()),
            BaselineOn::Device => {
                segments.entry(&m.subject).or_insert_with(|| segment_of(&m.subject)).clone()
            }
        };
        if exclusions.excludes(clock, segment.as_deref(), m.bucket) {
            continue;
        }
        let slot = clock.slot(m.bucket) as u16;
        groups.entry((m.on, &m.subject, m.metric, slot)).or_default().push(m.value);
    }
    let mut rows: Vec<BaselineRow> = groups
        .into_iter()
        .filter_map(|((on, subject, metric, slot), mut samples)| {
            let stat = robust(&mut samples, metric, floor)?;
            Some(BaselineRow {
                on,
                subject: subject.to_owned(),
                metric: metric.to_owned(),
                slot,
                centre: stat.centre,
                spread: stat.spread,
                samples: stat.samples,
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        (a.on, &a.subject, &a.metric, a.slot).cmp(&(b.on, &b.subject, &b.metric, b.slot))
    });
    rows
}

/// The learning window's slot occurrences that hold slot `slot`: for each of the `weeks`
/// local weeks before `end`, the start of that slot that week (the latest week being the
/// last whose occurrence ended at or before `end`), latest first. Local weeks: where the
/// clocks went back a slot occurs twice that week (both are taken), where they went
/// forward not at all (the week counts, without a sample).
pub fn occurrences(clock: SlotClock, slot: usize, weeks: u32, end: EventTime) -> Vec<EventTime> {
    let local_end = clock.local_ms(end);
    let week_start = local_end - (local_end + 3 * DAY_MS).rem_euclid(WEEK_MS);
    // This local week's occurrence, or next week's when it is later than this week's end.
    let mut local = week_start + slot as i64 * SLOT_MS;
    let ended = |local: i64| {
        let at = clock.instants(local);
        match at.last() {
            Some(t) => t.millis() + SLOT_MS <= end.millis(),
            None => local + SLOT_MS <= local_end,
        }
    };
    while !ended(local) {
        local -= WEEK_MS;
    }
    let mut out = Vec::with_capacity(weeks as usize);
    for _ in 0..weeks {
        let mut at = clock.instants(local);
        at.reverse();
        out.extend(at);
        local -= WEEK_MS;
    }
    out
}

/// A learned profile of one subject's metric held in memory: 9 bytes a slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    centre: Box<[f32]>,
    spread: Box<[f32]>,
    samples: Box<[u8]>,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            centre: vec![0.0; SLOTS_PER_WEEK].into_boxed_slice(),
            spread: vec![0.0; SLOTS_PER_WEEK].into_boxed_slice(),
            samples: vec![0; SLOTS_PER_WEEK].into_boxed_slice(),
        }
    }
}

/// The baseline at an instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    pub centre: f64,
    pub spread: f64,
    /// The fewest samples of the slots it was interpolated from.
    pub samples: u32,
}

impl Profile {
    /// Bytes a profile holds on the heap.
    pub const HEAP_BYTES: usize = SLOTS_PER_WEEK * 9;

    pub fn set(&mut self, slot: usize, stat: SlotStat) {
        if slot < SLOTS_PER_WEEK {
            self.centre[slot] = stat.centre as f32;
            self.spread[slot] = stat.spread as f32;
            self.samples[slot] = u8::try_from(stat.samples).unwrap_or(u8::MAX);
        }
    }

    pub fn slot(&self, slot: usize) -> Option<SlotStat> {
        let samples = *self.samples.get(slot)?;
        (samples > 0).then(|| SlotStat {
            centre: f64::from(self.centre[slot]),
            spread: f64::from(self.spread[slot]),
            samples: u32::from(samples),
        })
    }

    /// The baseline at `t`: linear between the midpoints of the slot of `t` and its
    /// neighbour; a slot without samples gives way to the other one.
    pub fn at(&self, clock: SlotClock, t: EventTime) -> Option<Expected> {
        let here = clock.slot(t);
        let into = (t.millis() - clock.slot_start(t).millis()) as f64 / SLOT_MS as f64;
        // The neighbour in time (across a change of the clocks, the slot that follows or
        // precedes on the wall clock that day).
        let (other, w_other) = if into >= 0.5 {
            (clock.slot(EventTime(t.millis() + SLOT_MS)), into - 0.5)
        } else {
            (clock.slot(EventTime(t.millis() - SLOT_MS)), 0.5 - into)
        };
        let expected =
            |s: SlotStat| Expected { centre: s.centre, spread: s.spread, samples: s.samples };
        match (self.slot(here), self.slot(other)) {
            (Some(a), Some(b)) => {
                let w = w_other;
                Some(Expected {
                    centre: a.centre * (1.0 - w) + b.centre * w,
                    spread: a.spread * (1.0 - w) + b.spread * w,
                    samples: a.samples.min(b.samples),
                })
            }
            (Some(a), None) => Some(expected(a)),
            (None, Some(b)) if w_other > 0.0 => Some(expected(b)),
            _ => None,
        }
    }
}

/// Profiles by subject kind and metric, then subject (looked up without allocating).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baselines {
    pub clock: SlotClock,
    pub profiles: HashMap<(BaselineOn, String), HashMap<String, Profile>>,
}

impl Baselines {
    pub fn new(clock: SlotClock) -> Self {
        Self { clock, profiles: HashMap::new() }
    }

    /// Put stored rows in (a later row of a slot replaces an earlier one).
    pub fn extend<'a>(&mut self, rows: impl IntoIterator<Item = &'a BaselineRow>) {
        for r in rows {
            let by = self.profiles.entry((r.on, r.metric.clone())).or_default();
            let profile = match by.get_mut(&r.subject) {
                Some(p) => p,
                None => by.entry(r.subject.clone()).or_default(),
            };
            profile.set(
                usize::from(r.slot),
                SlotStat { centre: r.centre, spread: r.spread, samples: r.samples },
            );
        }
    }

    pub fn get(&self, on: BaselineOn, subject: &str, metric: &str) -> Option<&Profile> {
        self.profiles
            .iter()
            .find(|((o, m), _)| *o == on && m == metric)
            .and_then(|(_, by)| by.get(subject))
    }

    /// The baseline of a subject's metric at `t`.
    pub fn expected(
        &self,
        on: BaselineOn,
        subject: &str,
        metric: &str,
        t: EventTime,
    ) -> Option<Expected> {
        self.get(on, subject, metric)?.at(self.clock, t)
    }

    /// Profiles held.
    pub fn len(&self) -> usize {
        self.profiles.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes of the profiles' slots (the maps' own overhead not counted).
    pub fn slot_bytes(&self) -> usize {
        self.len() * Profile::HEAP_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> EventTime {
        EventTime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn slots_start_on_monday_local_midnight() {
        let clock = SlotClock::default();
        // Monday 2026-01-05 00:00 CET is 2026-01-04T23:00Z.
        assert_eq!(clock.slot(at("2026-01-04T23:00:00Z")), 0);
        assert_eq!(clock.slot(at("2026-01-04T22:59:59Z")), SLOTS_PER_WEEK - 1);
        // Monday 08:30 local: 8 × 4 + 2.
        assert_eq!(clock.slot(at("2026-01-05T07:30:00Z")), 34);
        assert_eq!(clock.slot_start(at("2026-01-05T07:44:59Z")), at("2026-01-05T07:30:00Z"));
        assert!(SlotClock::new(7).is_none());
        assert_eq!(parse_day("1970-01-02"), Some(1));
        assert_eq!(clock.local_day(at("2026-01-04T23:00:00Z")), parse_day("2026-01-05").unwrap());
    }

    #[test]
    fn centre_is_the_median_and_spread_the_scaled_mad_with_a_floor() {
        let floor = SpreadFloor { relative: 0.0 };
        let s = robust(&mut [50.0, 52.0, 48.0, 51.0, 900.0], "temperature_c", floor).unwrap();
        assert_eq!(s.centre, 51.0);
        // Deviations 1, 1, 3, 0, 849: MAD 1.
        assert!((s.spread - MAD_SCALE).abs() < 1e-12, "{s:?}");
        assert_eq!(s.samples, 5);
        let same = robust(&mut [40.0, 40.0, 40.0], "speed_kmh", SpreadFloor { relative: 0.1 });
        assert_eq!(same.unwrap().spread, 4.0);
        assert!(robust(&mut [], "speed_kmh", floor).is_none());
    }

    #[test]
    fn segment_figures_follow_the_stream_definitions() {
        let b = EventTime(0);
        let sum = |device: &str, metric, count, sum| DeviceSlotSum {
            device: device.into(),
            segment: Some("s".into()),
            metric,
            bucket: b,
            count,
            sum,
        };
        let sums = vec![
            sum("a", MetricId::VehicleCount, 10, 100.0),
            sum("a", MetricId::SpeedKmh, 10, 500.0),
            sum("b", MetricId::VehicleCount, 10, 300.0),
            sum("b", MetricId::SpeedKmh, 5, 100.0),
            sum("a", MetricId::OccupancyPct, 2, 20.0),
            sum("b", MetricId::OccupancyPct, 1, 30.0),
        ];
        let mut figures = segment_figures(&sums);
        figures.sort_by(|x, y| x.metric.cmp(y.metric));
        let values: Vec<(&str, f64)> = figures.iter().map(|m| (m.metric, m.value)).collect();
        // Flow: mean of 100 and 300 vehicles per 15 min = 200 × 4 veh/h.
        // Speed: (50 × 100 + 20 × 300) / 400 = 27.5. Occupancy: (10 + 30) / 2.
        assert_eq!(values, vec![("flow_vph", 800.0), ("occupancy_pct", 20.0), ("speed_kmh", 27.5)]);
    }

    #[test]
    fn learning_skips_holidays_and_closures_and_interpolates() {
        let clock = SlotClock::default();
        let monday = at("2026-01-05T07:30:00Z");
        let mut means = Vec::new();
        for week in 0..4 {
            for (slot, v) in [(0, 40.0), (1, 60.0)] {
                means.push(SlotMean {
                    on: BaselineOn::Segment,
                    subject: "s".into(),
                    metric: "speed_kmh",
                    bucket: EventTime(monday.millis() - week * WEEK_MS + slot * SLOT_MS),
                    value: v + week as f64,
                });
            }
        }
        let exclusions = Exclusions {
            holidays: vec![clock.local_day(EventTime(monday.millis() - WEEK_MS))],
            closures: vec![(
                "s".into(),
                monday.millis() - 2 * WEEK_MS,
                monday.millis() - 2 * WEEK_MS + 1,
            )],
        };
        let rows = learn(&means, clock, &exclusions, SpreadFloor { relative: 0.0 }, &|_| None);
        assert_eq!(rows.len(), 2);
        // Weeks 0 and 3 are left for the first slot (40, 43); weeks 0, 2, 3 for the
        // second (the closure touched only the first slot of week 2).
        assert_eq!((rows[0].slot, rows[0].samples, rows[0].centre), (34, 2, 41.5));
        assert_eq!((rows[1].slot, rows[1].samples, rows[1].centre), (35, 3, 62.0));
        let mut b = Baselines::new(clock);
        b.extend(&rows);
        let p = b.get(BaselineOn::Segment, "s", "speed_kmh").unwrap();
        // At the midpoint of slot 34 its own centre; halfway to slot 35's midpoint, between.
        assert_eq!(p.at(clock, EventTime(monday.millis() + SLOT_MS / 2)).unwrap().centre, 41.5);
        let mid = p.at(clock, EventTime(monday.millis() + SLOT_MS)).unwrap();
        assert!((mid.centre - 51.75).abs() < 1e-4, "{mid:?}");
        assert_eq!(mid.samples, 2);
        assert!(p.at(clock, EventTime(monday.millis() + 5 * SLOT_MS)).is_none());
    }

    #[test]
    fn occurrences_are_the_slots_closed_in_the_window() {
        let clock = SlotClock::default();
        let end = at("2026-01-05T07:50:00Z");
        // Slot 34 (07:30Z) closed at 07:45Z: this week's counts.
        let o = occurrences(clock, 34, 2, end);
        assert_eq!(o, vec![at("2026-01-05T07:30:00Z"), at("2025-12-29T07:30:00Z")]);
        // Slot 35 is still open: last week's is the latest.
        assert_eq!(occurrences(clock, 35, 1, end), vec![at("2025-12-29T07:45:00Z")]);
    }

    #[test]
    fn a_time_zone_keeps_the_rush_hour_in_its_slot_through_summer_time() {
        let rome = SlotClock::zone("Europe/Rome").expect("zone");
        assert_eq!(rome.zone_name(), Some("Europe/Rome"));
        // Monday 08:30 local in winter (CET) and in summer (CEST): one slot.
        assert_eq!(rome.slot(at("2026-01-05T07:30:00Z")), 34);
        assert_eq!(rome.slot(at("2026-06-01T06:30:00Z")), 34);
        assert_eq!(rome.offset_minutes_at(at("2026-06-01T06:30:00Z")), 120);
        // A fixed offset does not follow summer time.
        assert_eq!(SlotClock::default().slot(at("2026-06-01T06:30:00Z")), 30);
        assert!(SlotClock::zone("Mars/Olympus_Mons").is_none());
        assert!(SlotClock::zone("Asia/Kathmandu").is_some(), "+05:45 is whole quarter hours");
        assert_ne!(rome, SlotClock::default());
        assert_eq!(rome, SlotClock::zone("Europe/Rome").unwrap());
        assert_eq!(rome.describe(), "Europe/Rome");
        assert_eq!(SlotClock::default().describe(), "UTC+60");
    }

    #[test]
    fn the_doubled_hour_goes_to_one_slot_and_the_skipped_hour_has_no_occurrence() {
        let rome = SlotClock::zone("Europe/Rome").unwrap();
        // Sunday 2026-10-25: 02:00 CEST (00:00Z), then again 02:00 CET (01:00Z).
        let sunday_2am = 6 * 96 + 8;
        assert_eq!(rome.slot(at("2026-10-25T00:00:00Z")), sunday_2am);
        assert_eq!(rome.slot(at("2026-10-25T01:00:00Z")), sunday_2am);
        assert_eq!(rome.slot(at("2026-10-25T00:45:00Z")), sunday_2am + 3);
        let local = rome.local_ms(at("2026-10-25T00:00:00Z"));
        assert_eq!(
            rome.instants(local),
            vec![at("2026-10-25T00:00:00Z"), at("2026-10-25T01:00:00Z")]
        );
        assert_eq!(rome.local_day(at("2026-10-25T01:30:00Z")), parse_day("2026-10-25").unwrap());
        // Sunday 2026-03-29: 02:00 local never happens (01:00Z is 03:00 CEST).
        assert_eq!(rome.slot(at("2026-03-29T00:45:00Z")), sunday_2am - 1);
        assert_eq!(rome.slot(at("2026-03-29T01:00:00Z")), sunday_2am + 4);
        let skipped = rome.local_ms(at("2026-03-29T00:45:00Z")) + SLOT_MS;
        assert!(rome.instants(skipped).is_empty());
        // The learning window: local weeks, latest first.
        let after_autumn = at("2026-10-26T12:00:00Z");
        assert_eq!(
            occurrences(rome, sunday_2am, 2, after_autumn),
            vec![
                at("2026-10-25T01:00:00Z"),
                at("2026-10-25T00:00:00Z"),
                at("2026-10-18T00:00:00Z")
            ]
        );
        let after_spring = at("2026-03-30T12:00:00Z");
        assert_eq!(
            occurrences(rome, sunday_2am, 2, after_spring),
            vec![at("2026-03-22T01:00:00Z")],
            "the week of the skipped hour counts, without a sample"
        );
        // Monday 08:30 across the spring change: 07:30Z in winter, 06:30Z in summer.
        assert_eq!(
            occurrences(rome, 34, 2, at("2026-04-06T12:00:00Z")),
            vec![at("2026-04-06T06:30:00Z"), at("2026-03-30T06:30:00Z")]
        );
        assert_eq!(
            occurrences(rome, 34, 2, at("2026-04-01T12:00:00Z")),
            vec![at("2026-03-30T06:30:00Z"), at("2026-03-23T07:30:00Z")]
        );
        // In the doubled hour the neighbour in time is the slot that follows on the wall
        // clock: 02:56 CEST interpolates towards 02:00 CET's slot.
        let mut p = Profile::default();
        let stat = |c| SlotStat { centre: c, spread: 1.0, samples: 2 };
        p.set(sunday_2am, stat(10.0));
        p.set(sunday_2am + 3, stat(40.0));
        let e = p.at(rome, at("2026-10-25T00:56:15Z")).unwrap();
        assert_eq!(e.centre, 40.0 * 0.75 + 10.0 * 0.25);
    }

    #[test]
    fn the_fleet_learner_learns_what_learn_learns() {
        let clock = SlotClock::zone("Europe/Rome").unwrap();
        let devices = ["a", "b", "c", "d"];
        let segment_of = |d: &str| match d {
            "a" | "b" => Some("s1".to_owned()),
            "c" => Some("s2".to_owned()),
            _ => None,
        };
        let start = at("2026-11-02T07:00:00Z").millis();
        let mut sums = Vec::new();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        for week in 0..5 {
            for q in 0..3 {
                let bucket = EventTime(start + week * WEEK_MS + q * SLOT_MS);
                for d in devices {
                    for metric in [
                        MetricId::VehicleCount,
                        MetricId::SpeedKmh,
                        MetricId::OccupancyPct,
                        MetricId::No2Ugm3,
                    ] {
                        let count = (next() * 16.0) as u64;
                        sums.push(DeviceSlotSum {
                            device: d.into(),
                            segment: segment_of(d),
                            metric,
                            bucket,
                            count,
                            sum: count as f64 * 50.0 * next(),
                        });
                    }
                }
            }
        }
        let exclusions = Exclusions {
            holidays: vec![clock.local_day(EventTime(start + WEEK_MS))],
            closures: vec![(
                "s1".into(),
                start + 2 * WEEK_MS + SLOT_MS,
                start + 2 * WEEK_MS + SLOT_MS + 1,
            )],
        };
        let floor = SpreadFloor { relative: 0.05 };
        let expected = learn(&slot_means(&sums), clock, &exclusions, floor, &segment_of);
        let segments = vec!["s1".to_owned(), "s2".to_owned()];
        let index = |d: &str| devices.iter().position(|x| *x == d).unwrap() as u32;
        let fleet_segments =
            devices.iter().map(|d| segment_of(d).map(|s| (s == "s2") as u32)).collect();
        let mut learner = FleetLearner::new(clock, floor, &exclusions, fleet_segments, &segments);
        let mut got = Vec::new();
        for q in 0..3 {
            for week in 0..5 {
                let bucket = EventTime(start + week * WEEK_MS + q * SLOT_MS);
                let mut b = BucketSums { bucket, sums: Vec::new() };
                for s in sums.iter().filter(|s| s.bucket == bucket) {
                    let metric = DEVICE_METRICS.iter().position(|m| *m == s.metric).unwrap() as u8;
                    b.sums.push(IndexedSum {
                        device: index(&s.device),
                        metric,
                        count: s.count,
                        sum: s.sum,
                    });
                }
                learner.add(&b);
            }
            let slot = clock.slot(EventTime(start + q * SLOT_MS)) as u16;
            learner.finish(&mut |on, i, metric, stat| {
                let subject = match on {
                    BaselineOn::Device => devices[i as usize].to_owned(),
                    BaselineOn::Segment => segments[i as usize].clone(),
                };
                got.push(BaselineRow {
                    on,
                    subject,
                    metric: metric.to_owned(),
                    slot,
                    centre: stat.centre,
                    spread: stat.spread,
                    samples: stat.samples,
                });
            });
        }
        got.sort_by(|a, b| {
            (a.on, &a.subject, &a.metric, a.slot).cmp(&(b.on, &b.subject, &b.metric, b.slot))
        });
        assert_eq!(got.len(), expected.len());
        assert!(got.len() > 40, "{}", got.len());
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(
                (g.on, &g.subject, &g.metric, g.slot, g.samples),
                (e.on, &e.subject, &e.metric, e.slot, e.samples)
            );
            assert!(
                (g.centre - e.centre).abs() < 1e-9 && (g.spread - e.spread).abs() < 1e-9,
                "{g:?} {e:?}"
            );
        }
    }
}
