//! Detector health: the flag intervals the health rules raise (`detector_flags`), and
//! history that leaves flagged readings out.
//!
//! - **Intervals.** [`Store::open_flag`] opens one interval per (device, rule) — the
//!   partial unique index `detector_flags_one_open` keeps at most one open, so a replayed
//!   open changes nothing — and [`Store::close_flag`] closes it (never before it began).
//!   A flag of a device covers its readings of every metric with `from <= time < to`
//!   (`to` open: until now).
//! - **Excluding flagged data.** [`Store::history_unflagged`] answers a device's history as
//!   [`Store::history`] does, except that readings inside the device's flag intervals are
//!   not counted: buckets no flag touches come from the rollups unchanged, and the buckets
//!   a flag touches are folded again from the raw readings of the bucket (within the
//!   answer's range) minus the flagged ones. So every point equals a recount of the raw
//!   readings outside flags (`contract::flagged_readings_are_left_out_of_history_exactly`).
//!   Where retention has dropped the raw readings a flagged bucket needs, the answer is
//!   refused ([`StoreError::InvalidQuery`] on `exclude_flagged`) rather than approximated.

use std::collections::BTreeMap;

use telemetry::health::{FlagInterval, HealthFlag};
use telemetry::{DeviceId, EventTime, Partial};

use crate::history::{fill_gaps, fold, GapFill, SourceRow, Step};
use crate::{History, HistoryQuery, HistorySubject, Store, StoreError};

/// Raw readings read to refold the flagged buckets of one answer, at most.
pub const MAX_REFOLD_READINGS: usize = 2_000_000;

/// What leaving flagged readings out changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Excluded {
    /// Flag intervals overlapping the answer's range.
    pub flags: usize,
    /// Readings left out.
    pub readings: i64,
}

/// Which flags to list.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagFilter {
    pub device: Option<DeviceId>,
    pub flag: Option<HealthFlag>,
    /// Overlapping `[from, to)`.
    pub from: EventTime,
    pub to: EventTime,
    /// Only intervals still open.
    pub open_only: bool,
}

/// A stored flag interval from its columns (both backends' rows decode to these).
pub(crate) fn flag_interval(
    device: String,
    rule: String,
    flag: String,
    from: EventTime,
    to: Option<EventTime>,
) -> Result<FlagInterval, StoreError> {
    let flag = HealthFlag::parse(&flag)
        .ok_or(StoreError::Corrupt { what: "detector flag", value: flag })?;
    Ok(FlagInterval { device, rule, flag, from, to })
}

impl Store {
    /// Open `device`'s interval of `rule` from `since`; nothing if one is open.
    pub async fn open_flag(
        &self,
        device: &DeviceId,
        rule: &str,
        flag: HealthFlag,
        since: EventTime,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.open_flag(device.as_str(), rule, flag.as_str(), since).await)
    }

    /// Close `device`'s open interval of `rule` at `at` (at its start if `at` is earlier);
    /// `false` when none was open.
    pub async fn close_flag(
        &self,
        device: &DeviceId,
        rule: &str,
        at: EventTime,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.close_flag(device.as_str(), rule, at).await)
    }

    /// Flag intervals overlapping the filter's range, by device then start.
    pub async fn flags(&self, filter: &FlagFilter) -> Result<Vec<FlagInterval>, StoreError> {
        if filter.from >= filter.to {
            return Ok(Vec::new());
        }
        dispatch!(self, s => s.flags(filter).await)
    }

    /// A device's history without its flagged readings (see the module doc).
    pub async fn history_unflagged(
        &self,
        q: &HistoryQuery,
    ) -> Result<(History, Excluded), StoreError> {
        let HistorySubject::Device(device) = &q.subject else {
            return Err(StoreError::InvalidQuery {
                param: "exclude_flagged",
                message: "flagged data is left out of a device's history only".into(),
            });
        };
        let flags = self
            .flags(&FlagFilter {
                device: Some(device.clone()),
                flag: None,
                from: q.from,
                to: q.to,
                open_only: false,
            })
            .await?;
        let flagged = |t: EventTime| flags.iter().any(|f| f.covers(t));
        let mut excluded = Excluded { flags: flags.len(), readings: 0 };
        let plain = HistoryQuery { fill: GapFill::None, ..q.clone() };
        let mut h = self.history(&plain).await?;
        if flags.is_empty() {
            h.points = match h.step_ms {
                Some(step) => fill_gaps(h.points, h.from, h.to, step, q.fill, q.limit),
                None => h.points,
            };
            return Ok((h, excluded));
        }
        let Some(step) = h.step_ms else {
            // Raw: read past the limit by the flagged readings, then leave them out.
            let mut raw =
                self.history(&HistoryQuery { limit: MAX_REFOLD_READINGS, ..plain }).await?;
            let before = raw.points.len();
            raw.points.retain(|p| !flagged(p.time));
            excluded.readings = (before - raw.points.len()) as i64;
            raw.points.truncate(q.limit);
            return Ok((raw, excluded));
        };
        // The buckets a flag touches, merged into runs, clipped to the answer's range.
        let mut runs: Vec<(i64, i64)> = Vec::new();
        for f in &flags {
            let a = f.from.millis().max(h.from.millis());
            let b = f.to.map_or(h.to.millis(), |t| t.millis()).min(h.to.millis());
            if a >= b {
                continue;
            }
            let first = a.div_euclid(step) * step;
            let last = (b - 1).div_euclid(step) * step + step;
            runs.push((first.max(h.from.millis()), last.min(h.to.millis())));
        }
        runs.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::new();
        for (a, b) in runs {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        let horizons = self.horizons().await?;
        let mut points: BTreeMap<i64, crate::HistoryPoint> =
            h.points.iter().map(|p| (p.time.millis(), *p)).collect();
        let mut read = 0usize;
        for (a, b) in merged {
            if horizons.raw.is_some_and(|r| r.millis() > a) {
                return Err(StoreError::InvalidQuery {
                    param: "exclude_flagged",
                    message: format!(
                        "the raw readings of flagged data before {} are gone (retention): flagged data cannot be left out there",
                        horizons.raw.map_or(0, |r| r.millis())
                    ),
                });
            }
            let raw = self
                .history(&HistoryQuery {
                    from: EventTime(a),
                    to: EventTime(b),
                    step: Step::Raw,
                    fill: GapFill::None,
                    limit: MAX_REFOLD_READINGS - read + 1,
                    ..q.clone()
                })
                .await?;
            read += raw.points.len();
            if read > MAX_REFOLD_READINGS {
                return Err(StoreError::InvalidQuery {
                    param: "exclude_flagged",
                    message: format!(
                        "over {MAX_REFOLD_READINGS} readings in flagged buckets: ask for a shorter range"
                    ),
                });
            }
            let first = a.div_euclid(step) * step;
            points.retain(|&t, _| t < first || t >= b);
            let kept: Vec<SourceRow> = raw
                .points
                .iter()
                .filter(|p| {
                    let out = flagged(p.time);
                    excluded.readings += i64::from(out);
                    !out
                })
                .map(|p| SourceRow { bucket: p.time, partial: Partial::of(p.time, p.last) })
                .collect();
            for p in fold(kept, step) {
                points.insert(p.time.millis(), p);
            }
        }
        let mut out: Vec<crate::HistoryPoint> = points.into_values().collect();
        out.truncate(q.limit);
        h.points = fill_gaps(out, h.from, h.to, step, q.fill, q.limit);
        Ok((h, excluded))
    }
}
