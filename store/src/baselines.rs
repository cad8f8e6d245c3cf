//! Learned baselines (`telemetry::baseline`): the slot sums they are learned from, the
//! learned slots, and the mark of what was learned.
//!
//! - **Samples.** [`Store::baseline_slot_sums`] sums `rollup_1m` into 15-minute buckets
//!   per device and metric (with the device's segment now), so every backend gives the
//!   learner the same sums; rollups are exact on every backend (ARCHITECTURE.md). On
//!   PostgreSQL the minute rollups trail now by the fold (at most 25 s): the refresher only
//!   learns slots that ended [`SETTLE`] ago.
//! - **Stored sums.** Each bucket's sums (every device, every learned metric) are kept in
//!   `baseline_sums`, one packed row per bucket, for the learning window plus a week. A
//!   full relearn reads them (a 15th of the minute rollups' values, in 2,688 rows for four
//!   weeks) and sums from `rollup_1m` only the buckets never summed. An incremental
//!   refresh sums its slots' occurrences from `rollup_1m` again and stores them, so a late
//!   reading for a bucket already summed reaches the sums (and the baselines) when its slot
//!   is next learned incrementally, at most a week later, as before the sums were kept.
//! - **Refresh.** [`Store::refresh_baselines`] learns the slots of the week that closed
//!   since the mark (`baseline_state`), each from its occurrences over the last `weeks`
//!   local weeks: a new week's sample comes in and the oldest goes out in one step. Every
//!   slot when there is no mark, the mark is older than a week, or the settings changed.
//!   The whole fleet is learned by index (`FleetLearner`): no string or allocation per
//!   sum.
//! - **Rows.** Stored packed, one row per (subject kind, subject, metric, local day of the
//!   week) holding its 96 slots; a relearned slot replaces its value, a slot with no
//!   sample left is cleared. [`Store::baseline_profile`] and
//!   [`Store::baselines_of_metric`] answer one [`BaselineRow`] per learned slot.

use std::collections::{BTreeSet, HashMap};

use telemetry::baseline::{
    occurrences, BaselineOn, BaselineRow, BucketSums, DeviceSlotSum, Exclusions, FleetLearner,
    IndexedSum, SlotClock, SlotStat, SpreadFloor, DEVICE_METRICS, SLOTS_PER_WEEK, SLOT_MS, WEEK_MS,
};
use telemetry::{EventTime, MetricId};

use crate::operations::{OperationFilter, OperationStatus};
use crate::{Store, StoreError};

/// How long after a slot ends it is learned (minute rollups are whole by then).
pub const SETTLE: i64 = 5 * 60_000;

/// Slots in a stored row: a local day.
pub(crate) const PACK_SLOTS: usize = 96;
/// Bytes a slot takes in a stored row: centre and spread (f64 LE), samples (u8).
const SLOT_BYTES: usize = 17;
/// Bytes of a stored row's slots.
pub(crate) const PACK_BYTES: usize = PACK_SLOTS * SLOT_BYTES;
/// Buckets summed from `rollup_1m` in one statement (6 hours: read through the key).
const SUM_RANGE: usize = 24;
/// Slots learned from one read of stored sums (their occurrences' rows in memory at once).
const LEARN_CHUNK: usize = 16;

/// The learned slots of one subject's metric on one local day of the week, as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pack {
    pub on: BaselineOn,
    pub subject: String,
    pub metric: String,
    /// 0 = Monday.
    pub day: u8,
    /// [`PACK_BYTES`].
    pub slots: Vec<u8>,
}

fn pack_set(slots: &mut [u8], i: usize, stat: Option<SlotStat>) {
    let b = &mut slots[i * SLOT_BYTES..(i + 1) * SLOT_BYTES];
    match stat {
        Some(s) => {
            b[..8].copy_from_slice(&s.centre.to_le_bytes());
            b[8..16].copy_from_slice(&s.spread.to_le_bytes());
            b[16] = u8::try_from(s.samples.max(1)).unwrap_or(u8::MAX);
        }
        None => b.fill(0),
    }
}

fn pack_get(slots: &[u8], i: usize) -> Option<SlotStat> {
    let b = slots.get(i * SLOT_BYTES..(i + 1) * SLOT_BYTES)?;
    let f = |r: &[u8]| f64::from_le_bytes(r.try_into().unwrap_or([0; 8]));
    (b[16] > 0).then(|| SlotStat {
        centre: f(&b[..8]),
        spread: f(&b[8..16]),
        samples: u32::from(b[16]),
    })
}

impl Pack {
    /// Its learned slots as rows.
    pub(crate) fn rows(&self) -> Result<Vec<BaselineRow>, StoreError> {
        if self.slots.len() != PACK_BYTES || self.day >= 7 {
            return Err(StoreError::Corrupt {
                what: "baseline row",
                value: format!(
                    "{} {} {} day {}",
                    self.on.as_str(),
                    self.subject,
                    self.metric,
                    self.day
                ),
            });
        }
        Ok((0..PACK_SLOTS)
            .filter_map(|i| {
                let s = pack_get(&self.slots, i)?;
                Some(BaselineRow {
                    on: self.on,
                    subject: self.subject.clone(),
                    metric: self.metric.clone(),
                    slot: (usize::from(self.day) * PACK_SLOTS + i) as u16,
                    centre: s.centre,
                    spread: s.spread,
                    samples: s.samples,
                })
            })
            .collect())
    }
}

/// Encode one bucket's sums (sorted by device) as a `baseline_sums` row.
fn encode_sums(sums: &[&DeviceSlotSum]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sums.len() * 24);
    let mut i = 0;
    while i < sums.len() {
        let device = sums[i].device.as_str();
        let mut j = i;
        while j < sums.len() && sums[j].device == device {
            j += 1;
        }
        let entries: Vec<(u8, &DeviceSlotSum)> = sums[i..j]
            .iter()
            .filter_map(|s| Some((DEVICE_METRICS.iter().position(|m| *m == s.metric)? as u8, *s)))
            .collect();
        if !entries.is_empty() && device.len() <= usize::from(u16::MAX) {
            out.extend_from_slice(&(device.len() as u16).to_le_bytes());
            out.extend_from_slice(device.as_bytes());
            out.push(entries.len() as u8);
            for (m, s) in entries {
                out.push(m);
                out.extend_from_slice(&u32::try_from(s.count).unwrap_or(u32::MAX).to_le_bytes());
                out.extend_from_slice(&s.sum.to_le_bytes());
            }
        }
        i = j;
    }
    out
}

/// Decode a `baseline_sums` row, keeping the devices of `fleet` (by index).
fn decode_sums(
    bucket: i64,
    blob: &[u8],
    fleet: &HashMap<String, u32>,
) -> Result<BucketSums, StoreError> {
    let corrupt =
        || StoreError::Corrupt { what: "baseline sums", value: format!("bucket {bucket}") };
    let mut out = BucketSums { bucket: EventTime(bucket), sums: Vec::new() };
    let mut p = 0;
    let take = |p: &mut usize, n: usize| -> Result<&[u8], StoreError> {
        let r = blob.get(*p..*p + n).ok_or_else(corrupt)?;
        *p += n;
        Ok(r)
    };
    while p < blob.len() {
        let len = u16::from_le_bytes(take(&mut p, 2)?.try_into().map_err(|_| corrupt())?);
        let device = std::str::from_utf8(take(&mut p, usize::from(len))?).map_err(|_| corrupt())?;
        let index = fleet.get(device).copied();
        let n = take(&mut p, 1)?[0];
        for _ in 0..n {
            let e = take(&mut p, 13)?;
            let count = u32::from_le_bytes(e[1..5].try_into().map_err(|_| corrupt())?);
            let sum = f64::from_le_bytes(e[5..13].try_into().map_err(|_| corrupt())?);
            if let Some(device) = index {
                out.sums.push(IndexedSum { device, metric: e[0], count: u64::from(count), sum });
            }
        }
    }
    Ok(out)
}

/// Sorted buckets as ranges `[from, to)` of at most [`SUM_RANGE`] buckets.
fn ranges(buckets: &[i64]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &b in buckets {
        match out.last_mut() {
            Some(r) if r.1 == b && (r.1 - r.0) / SLOT_MS < SUM_RANGE as i64 => r.1 = b + SLOT_MS,
            _ => out.push((b, b + SLOT_MS)),
        }
    }
    out
}

/// The devices learned (the registered ones), by index, with their segments now.
struct Fleet {
    devices: Vec<String>,
    index: HashMap<String, u32>,
    segment_of: Vec<Option<u32>>,
    segments: Vec<String>,
}

impl Fleet {
    fn new(mut devices: Vec<(String, Option<String>)>) -> Self {
        devices.sort();
        let mut segments: Vec<String> =
            devices.iter().filter_map(|(_, s)| s.clone()).filter(|s| !s.is_empty()).collect();
        segments.sort();
        segments.dedup();
        let seg_index: HashMap<&str, u32> =
            segments.iter().enumerate().map(|(i, s)| (s.as_str(), i as u32)).collect();
        let segment_of = devices
            .iter()
            .map(|(_, s)| s.as_deref().and_then(|s| seg_index.get(s).copied()))
            .collect();
        let index = devices.iter().enumerate().map(|(i, (d, _))| (d.clone(), i as u32)).collect();
        Self { devices: devices.into_iter().map(|(d, _)| d).collect(), index, segment_of, segments }
    }

    fn name(&self, on: BaselineOn, i: u32) -> &str {
        match on {
            BaselineOn::Device => &self.devices[i as usize],
            BaselineOn::Segment => &self.segments[i as usize],
        }
    }
}

/// The learned slots of a refresh, packed as they are stored.
#[derive(Default)]
struct Packs {
    by: HashMap<(BaselineOn, u32, &'static str, u8), Vec<u8>>,
    rows: usize,
}

impl Packs {
    fn set(
        &mut self,
        on: BaselineOn,
        subject: u32,
        metric: &'static str,
        slot: usize,
        stat: SlotStat,
    ) {
        let day = (slot / PACK_SLOTS) as u8;
        let pack = self.by.entry((on, subject, metric, day)).or_insert_with(|| vec![0; PACK_BYTES]);
        pack_set(pack, slot % PACK_SLOTS, Some(stat));
        self.rows += 1;
    }
}

/// The `[baselines]` settings the learning depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnSettings {
    pub weeks: u32,
    /// Slots learned from fewer samples are not stored.
    pub min_samples: u32,
    pub clock: SlotClock,
    pub floor: SpreadFloor,
    /// Local days not learned from.
    pub holidays: Vec<i64>,
}

impl LearnSettings {
    /// What the mark records: a change relearns every slot.
    pub fn fingerprint(&self) -> String {
        format!(
            "v2 weeks={} min={} clock={} floor={} holidays={:?}",
            self.weeks,
            self.min_samples,
            self.clock.describe(),
            self.floor.relative,
            self.holidays
        )
    }
}

/// What one refresh did.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshReport {
    /// Slots of the week learned (672 for a full refresh).
    pub slots: usize,
    /// Buckets of sums learned from (stored ones and summed ones).
    pub sums: usize,
    /// Buckets summed from the minute rollups (the others were stored).
    pub summed: usize,
    /// Slots learned (subject, metric, slot).
    pub rows: usize,
    /// Learned slots cleared (no sample left).
    pub deleted: u64,
    pub full: bool,
    /// The new mark: slots ending at or before it are learned.
    pub learned_to: EventTime,
}

/// The stored mark.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineMark {
    pub learned_to: EventTime,
    pub settings: String,
}

impl Store {
    /// Per registered device, metric (of `metrics`) and 15-minute bucket starting in `[from, to)`
    /// (buckets aligned on UTC quarter hours, which are local ones for every offset
    /// [`SlotClock`] admits), the count and sum of its readings, with the device's segment.
    pub async fn baseline_slot_sums(
        &self,
        from: EventTime,
        to: EventTime,
        metrics: &[MetricId],
    ) -> Result<Vec<DeviceSlotSum>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let names: Vec<String> = metrics.iter().map(|m| m.as_str().to_owned()).collect();
        dispatch!(self, s => s.baseline_slot_sums(from, to, &names).await)
    }

    /// Store the rows learned at `learned_at` for the `relearned` slots (replacing their
    /// stored values), clearing the other subjects' values of those slots (they had no
    /// sample left). Answers the slots cleared.
    pub async fn put_baselines(
        &self,
        rows: &[BaselineRow],
        relearned: &[u16],
        learned_at: EventTime,
    ) -> Result<u64, StoreError> {
        let mut days: Vec<u8> =
            relearned.iter().map(|&s| (usize::from(s) / PACK_SLOTS) as u8).collect();
        days.sort_unstable();
        days.dedup();
        let mut packs: HashMap<(BaselineOn, String, String, u8), Vec<u8>> = HashMap::new();
        let mut cleared: BTreeSet<(BaselineOn, String, String, u16)> = BTreeSet::new();
        for p in dispatch!(self, s => s.baseline_packs(&days).await)? {
            let mut slots = p.slots;
            if slots.len() != PACK_BYTES {
                continue;
            }
            for &r in
                relearned.iter().filter(|&&r| usize::from(r) / PACK_SLOTS == usize::from(p.day))
            {
                let i = usize::from(r) % PACK_SLOTS;
                if pack_get(&slots, i).is_some() {
                    cleared.insert((p.on, p.subject.clone(), p.metric.clone(), r));
                }
                pack_set(&mut slots, i, None);
            }
            packs.insert((p.on, p.subject, p.metric, p.day), slots);
        }
        for r in rows {
            let day = (usize::from(r.slot) / PACK_SLOTS) as u8;
            let slots = packs
                .entry((r.on, r.subject.clone(), r.metric.clone(), day))
                .or_insert_with(|| vec![0; PACK_BYTES]);
            cleared.remove(&(r.on, r.subject.clone(), r.metric.clone(), r.slot));
            pack_set(
                slots,
                usize::from(r.slot) % PACK_SLOTS,
                Some(SlotStat { centre: r.centre, spread: r.spread, samples: r.samples }),
            );
        }
        let packs: Vec<Pack> = packs
            .into_iter()
            .filter(|(_, slots)| (0..PACK_SLOTS).any(|i| pack_get(slots, i).is_some()))
            .map(|((on, subject, metric, day), slots)| Pack { on, subject, metric, day, slots })
            .collect();
        dispatch!(self, s => s.replace_baseline_packs(&packs, &days, learned_at).await)?;
        Ok(cleared.len() as u64)
    }

    /// The learned slots of one subject's metric, by slot.
    pub async fn baseline_profile(
        &self,
        on: BaselineOn,
        subject: &str,
        metric: &str,
    ) -> Result<Vec<BaselineRow>, StoreError> {
        dispatch!(self, s => s.baseline_profile(on, subject, metric).await)
    }

    /// Every learned slot of `metric` for subjects of `on` (what the anomaly rules hold).
    pub async fn baselines_of_metric(
        &self,
        on: BaselineOn,
        metric: &str,
    ) -> Result<Vec<BaselineRow>, StoreError> {
        dispatch!(self, s => s.baselines_of_metric(on, metric).await)
    }

    pub async fn baseline_mark(&self) -> Result<Option<BaselineMark>, StoreError> {
        dispatch!(self, s => s.baseline_mark().await)
    }

    pub async fn set_baseline_mark(&self, mark: &BaselineMark) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_baseline_mark(mark).await)
    }

    /// Segments closed by operations (active or ended, closing the road) overlapping
    /// `[from, to)`, with their windows.
    pub async fn closures(
        &self,
        from: EventTime,
        to: EventTime,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .operations(&OperationFilter {
                    statuses: vec![OperationStatus::Active, OperationStatus::Ended],
                    from: Some(from),
                    to: Some(to),
                    after: after.clone(),
                    limit: 500,
                    ..Default::default()
                })
                .await?;
            for op in page.operations.iter().filter(|o| o.closes_road) {
                let (a, b) = op.window();
                out.extend(op.segments.iter().map(|s| (s.clone(), a, b)));
            }
            match page.next_cursor {
                Some(c) => after = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Learn the slots that closed since the mark (every slot when the mark is missing,
    /// older than a week or made with other settings) as of `now`, store them and move the
    /// mark. See the module doc.
    pub async fn refresh_baselines(
        &self,
        settings: &LearnSettings,
        now: EventTime,
    ) -> Result<RefreshReport, StoreError> {
        let clock = settings.clock;
        let learned_to = clock.slot_start(EventTime(now.millis() - SETTLE));
        let mark = self.baseline_mark().await?;
        let fingerprint = settings.fingerprint();
        let full = match &mark {
            Some(m) => {
                m.settings != fingerprint
                    || m.learned_to.millis() <= learned_to.millis() - WEEK_MS
                    || m.learned_to > learned_to
            }
            None => true,
        };
        let slots: BTreeSet<usize> = if full {
            (0..SLOTS_PER_WEEK).collect()
        } else {
            let from = mark.as_ref().map_or(learned_to.millis(), |m| m.learned_to.millis());
            (0..(learned_to.millis() - from) / SLOT_MS)
                .map(|i| clock.slot(EventTime(from + i * SLOT_MS)))
                .collect()
        };
        let mut report = RefreshReport {
            slots: slots.len(),
            sums: 0,
            summed: 0,
            rows: 0,
            deleted: 0,
            full,
            learned_to,
        };
        if slots.is_empty() {
            return Ok(report);
        }
        let occurrences: Vec<(usize, Vec<EventTime>)> =
            slots.iter().map(|&s| (s, occurrences(clock, s, settings.weeks, learned_to))).collect();
        let all: BTreeSet<i64> =
            occurrences.iter().flat_map(|(_, o)| o.iter().map(|t| t.millis())).collect();
        let (Some(&first), Some(&last)) = (all.first(), all.last()) else {
            return Ok(report);
        };
        let window = (EventTime(first), EventTime(last + SLOT_MS));
        let exclusions = Exclusions {
            holidays: settings.holidays.clone(),
            closures: self.closures(window.0, window.1).await?,
        };
        let fleet = Fleet::new(dispatch!(self, s => s.baseline_fleet().await)?);
        // Sum from the minute rollups: an incremental refresh every occurrence (late
        // readings come in), a full one the buckets never summed.
        let to_sum: Vec<i64> = if full {
            let stored: BTreeSet<i64> =
                dispatch!(self, s => s.baseline_summed(window.0, window.1).await)?
                    .into_iter()
                    .collect();
            all.iter().copied().filter(|b| !stored.contains(b)).collect()
        } else {
            all.iter().copied().collect()
        };
        report.summed = to_sum.len();
        let mut fresh: HashMap<i64, BucketSums> = HashMap::new();
        for (a, b) in ranges(&to_sum) {
            let sums = self.baseline_slot_sums(EventTime(a), EventTime(b), &DEVICE_METRICS).await?;
            let mut by: HashMap<i64, Vec<&DeviceSlotSum>> = HashMap::new();
            for s in &sums {
                by.entry(s.bucket.millis()).or_default().push(s);
            }
            let mut blobs = Vec::new();
            for bucket in (a..b).step_by(SLOT_MS as usize) {
                let mut sums = by.remove(&bucket).unwrap_or_default();
                sums.sort_by(|x, y| {
                    (&x.device, x.metric.as_str()).cmp(&(&y.device, y.metric.as_str()))
                });
                let blob = encode_sums(&sums);
                if !full {
                    fresh.insert(bucket, decode_sums(bucket, &blob, &fleet.index)?);
                }
                blobs.push((bucket, blob));
            }
            dispatch!(self, s => s.put_baseline_sums(&blobs, now).await)?;
        }
        // Learn slot by slot from the sums, a chunk of slots' occurrences read at once.
        let mut learner = FleetLearner::new(
            clock,
            settings.floor,
            &exclusions,
            fleet.segment_of.clone(),
            &fleet.segments,
        );
        let mut packs = Packs::default();
        for chunk in occurrences.chunks(LEARN_CHUNK) {
            let mut read: HashMap<i64, BucketSums> = HashMap::new();
            if full {
                let buckets: Vec<i64> =
                    chunk.iter().flat_map(|(_, o)| o.iter().map(|t| t.millis())).collect();
                for (bucket, blob) in dispatch!(self, s => s.baseline_sums(&buckets).await)? {
                    read.insert(bucket, decode_sums(bucket, &blob, &fleet.index)?);
                }
            }
            let sums = if full { &read } else { &fresh };
            for (slot, occ) in chunk {
                for t in occ {
                    if let Some(b) = sums.get(&t.millis()) {
                        report.sums += 1;
                        learner.add(b);
                    }
                }
                learner.finish(&mut |on, subject, metric, stat| {
                    if stat.samples >= settings.min_samples {
                        packs.set(on, subject, metric, *slot, stat);
                    }
                });
            }
        }
        report.rows = packs.rows;
        if full {
            let packs: Vec<Pack> = packs
                .by
                .into_iter()
                .map(|((on, subject, metric, day), slots)| Pack {
                    on,
                    subject: fleet.name(on, subject).to_owned(),
                    metric: metric.to_owned(),
                    day,
                    slots,
                })
                .collect();
            let days: Vec<u8> = (0..7).collect();
            dispatch!(self, s => s.replace_baseline_packs(&packs, &days, now).await)?;
        } else {
            let mut rows = Vec::with_capacity(packs.rows);
            for ((on, subject, metric, day), p) in &packs.by {
                for i in 0..PACK_SLOTS {
                    if let Some(stat) = pack_get(p, i) {
                        rows.push(BaselineRow {
                            on: *on,
                            subject: fleet.name(*on, *subject).to_owned(),
                            metric: (*metric).to_owned(),
                            slot: (usize::from(*day) * PACK_SLOTS + i) as u16,
                            centre: stat.centre,
                            spread: stat.spread,
                            samples: stat.samples,
                        });
                    }
                }
            }
            let relearned: Vec<u16> = slots.iter().map(|&s| s as u16).collect();
            report.deleted = self.put_baselines(&rows, &relearned, now).await?;
        }
        // The sums are kept for the learning window, a week more and a day of margin.
        let keep_from = first.min(learned_to.millis() - i64::from(settings.weeks) * WEEK_MS)
            - WEEK_MS
            - 86_400_000;
        dispatch!(self, s => s.prune_baseline_sums(EventTime(keep_from)).await)?;
        self.set_baseline_mark(&BaselineMark { learned_to, settings: fingerprint }).await?;
        Ok(report)
    }

    /// Store slot sums as the refresh stores them: each bucket present in `sums` gets
    /// exactly these sums (its stored ones replaced). For imports and benchmarks; the
    /// refresh sums from the minute rollups itself.
    pub async fn put_baseline_slot_sums(
        &self,
        sums: &[DeviceSlotSum],
        at: EventTime,
    ) -> Result<(), StoreError> {
        let mut by: HashMap<i64, Vec<&DeviceSlotSum>> = HashMap::new();
        for s in sums {
            by.entry(s.bucket.millis()).or_default().push(s);
        }
        let mut blobs: Vec<(i64, Vec<u8>)> = by
            .into_iter()
            .map(|(bucket, mut sums)| {
                sums.sort_by(|x, y| {
                    (&x.device, x.metric.as_str()).cmp(&(&y.device, y.metric.as_str()))
                });
                (bucket, encode_sums(&sums))
            })
            .collect();
        blobs.sort_by_key(|(b, _)| *b);
        for chunk in blobs.chunks(SUM_RANGE) {
            dispatch!(self, s => s.put_baseline_sums(chunk, at).await)?;
        }
        Ok(())
    }

    /// The 15-minute buckets in `[from, to)` whose sums are stored (for tests and tools).
    pub async fn baseline_summed_buckets(
        &self,
        from: EventTime,
        to: EventTime,
    ) -> Result<Vec<EventTime>, StoreError> {
        Ok(dispatch!(self, s => s.baseline_summed(from, to).await)?
            .into_iter()
            .map(EventTime)
            .collect())
    }
}

/// A stored subject kind.
pub(crate) fn parse_on(s: &str) -> Result<BaselineOn, StoreError> {
    BaselineOn::parse(s)
        .ok_or_else(|| StoreError::Corrupt { what: "baseline subject kind", value: s.to_owned() })
}

/// A stored metric name as a catalogue metric.
pub(crate) fn parse_metric(s: &str) -> Result<MetricId, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt { what: "metric", value: s.to_owned() })
}
