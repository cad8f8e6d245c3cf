//! Tumbling windows per (device, metric) on event time.
//!
//! Each device has its own watermark: its newest event time minus the watermark delay, so
//! one device's skewed clock cannot make every other device late. A window closes (and is
//! emitted) when its end passes the device's watermark, or, for devices that went quiet,
//! when the wall clock passes its end plus the delay ([`Windows::tick`]). A closed window is
//! kept for the allowed lateness: a late reading within it updates the window and re-emits
//! it with a higher revision; a reading later than that is counted in `too_late` (it is
//! still stored raw, and the store's rollups include it).
//!
//! Invariant: every emission of a (device, metric, window) carries the aggregate of *all*
//! readings admitted to it so far, so a consumer replaces by key and revision. To keep it,
//! a window dropped by the wall clock is sealed: once `tick(now)` has passed
//! `end + delay + lateness`, readings for that window are too late even when the device's
//! own watermark would still admit them (a device clock lagging the wall clock by more than
//! delay + lateness, or a replayed backlog). Without the seal such a reading would open a
//! fresh window and re-emit a revision 0 holding only itself.
//!
//! Memory: a device holds a few windows per metric (the open one and those within the
//! allowed lateness), so they sit in one small vector per device, sorted by (start,
//! metric), grown one window at a time and trimmed when windows are dropped: 56 bytes a
//! window, with the aggregate kept whole (exact count, sum, min, max, last); a window's
//! start is that of its last reading.

use std::collections::HashMap;

use telemetry::{DeviceId, EventTime, MetricId, Partial, Reading};

use crate::config::StreamConfig;

/// An emitted window: its first emission has revision 0, each late correction one more.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowResult {
    pub device: DeviceId,
    pub metric: MetricId,
    pub start: EventTime,
    pub end: EventTime,
    pub aggregate: Partial,
    pub revision: u32,
}

#[derive(Debug)]
struct Window {
    /// Its start is not stored: every reading in it lies in `[start, start + size)`, so
    /// the start is `aggregate.last_time` floored to the window size.
    aggregate: Partial,
    /// The revision last emitted; meaningful once `closed`.
    revision: u32,
    metric: MetricId,
    /// Emitted (closed by the watermark or the wall clock).
    closed: bool,
}

impl Window {
    fn start(&self, size: i64) -> EventTime {
        self.aggregate.last_time.floor(size)
    }

    /// Is (this window's start, metric) before (`start`, `metric`)? `start` is a window
    /// start, so this window starts before it exactly when its last reading does.
    fn before(&self, start: EventTime, size: i64, metric: MetricId) -> bool {
        let last = self.aggregate.last_time.millis();
        last < start.millis() || (last < start.millis() + size && self.metric < metric)
    }

    fn is(&self, start: EventTime, size: i64, metric: MetricId) -> bool {
        let last = self.aggregate.last_time.millis();
        self.metric == metric && last >= start.millis() && last < start.millis() + size
    }

    /// `None` while open; the revision last emitted once closed.
    fn emitted(&self) -> Option<u32> {
        self.closed.then_some(self.revision)
    }

    fn emit(&mut self, revision: u32) {
        self.closed = true;
        self.revision = revision;
    }
}

#[derive(Debug, Default)]
struct DeviceWindows {
    max_event_time: Option<EventTime>,
    /// Sorted by (window start, metric), each pair once.
    windows: Vec<Window>,
}

impl DeviceWindows {
    /// The window of (`start`, `metric`), opened with `p` if absent (then `None`).
    fn merge(
        &mut self,
        start: EventTime,
        size: i64,
        metric: MetricId,
        p: Partial,
    ) -> Option<&mut Window> {
        let at = self.windows.partition_point(|w| w.before(start, size, metric));
        if self.windows.get(at).is_some_and(|w| w.is(start, size, metric)) {
            let w = &mut self.windows[at];
            w.aggregate.merge(&p);
            return Some(w);
        }
        if self.windows.len() == self.windows.capacity() {
            // One at a time: a device holds a handful, doubling would waste up to half.
            self.windows.reserve_exact(1);
        }
        let window = Window { aggregate: p, revision: 0, metric, closed: false };
        self.windows.insert(at, window);
        None
    }
}

/// What happened to one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Added to an open window.
    Open,
    /// Added to a closed window still within the allowed lateness; re-emitted.
    Late,
    /// Past the allowed lateness: not windowed.
    TooLate,
}

#[derive(Debug)]
pub struct Windows {
    size: i64,
    delay: i64,
    lateness: i64,
    devices: HashMap<DeviceId, DeviceWindows>,
    /// Windows ending at or before this were dropped by the wall clock (`tick`): sealed.
    sealed_end: i64,
    pub too_late: u64,
}

impl Windows {
    pub fn new(config: &StreamConfig) -> Self {
        Self {
            size: (config.window.as_millis() as i64).max(1),
            delay: config.watermark_delay.as_millis() as i64,
            lateness: config.allowed_lateness.as_millis() as i64,
            devices: HashMap::new(),
            sealed_end: i64::MIN,
            too_late: 0,
        }
    }

    /// Windows currently held (open or awaiting late data).
    pub fn len(&self) -> usize {
        self.devices.values().map(|d| d.windows.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add one reading; closed or corrected windows are appended to `out`.
    pub fn add(&mut self, r: &Reading, out: &mut Vec<WindowResult>) -> Admission {
        let (size, delay, lateness) = (self.size, self.delay, self.lateness);
        let dev = self.devices.entry(r.device.clone()).or_default();
        let watermark_before = dev.max_event_time.map(|t| t.millis() - delay);
        let start = r.time.floor(size);
        let end = start.millis() + size;
        let admission = match watermark_before {
            _ if end <= self.sealed_end => Admission::TooLate,
            Some(wm) if end + lateness <= wm => Admission::TooLate,
            Some(wm) if end <= wm => Admission::Late,
            _ => Admission::Open,
        };
        if admission == Admission::TooLate {
            self.too_late += 1;
            return admission;
        }
        let p = Partial::of(r.time, r.value);
        if let Some(w) = dev.merge(start, size, r.metric, p) {
            if let Some(rev) = w.emitted() {
                // A correction of a window that was already emitted.
                let rev = rev + 1;
                w.emit(rev);
                out.push(result(&r.device, r.metric, start, size, w.aggregate, rev));
            }
        }
        if dev.max_event_time.is_none_or(|m| r.time > m) {
            dev.max_event_time = Some(r.time);
            let wm = r.time.millis() - delay;
            close(&r.device, dev, size, lateness, wm, out);
        }
        admission
    }

    /// Close windows by wall clock for devices that stopped sending.
    pub fn tick(&mut self, now: EventTime, out: &mut Vec<WindowResult>) {
        let wm = now.millis() - self.delay;
        self.sealed_end = self.sealed_end.max(wm - self.lateness);
        for (device, dev) in &mut self.devices {
            close(device, dev, self.size, self.lateness, wm, out);
        }
        self.devices.retain(|_, d| {
            !d.windows.is_empty()
                || d.max_event_time.is_some_and(|t| t.millis() > wm - self.lateness)
        });
    }

    /// Emit every open window (shutdown).
    pub fn flush(&mut self, out: &mut Vec<WindowResult>) {
        for (device, dev) in &mut self.devices {
            for w in &dev.windows {
                if !w.closed {
                    let start = w.start(self.size);
                    out.push(result(device, w.metric, start, self.size, w.aggregate, 0));
                }
            }
        }
        self.devices.clear();
    }
}

fn result(
    device: &DeviceId,
    metric: MetricId,
    start: EventTime,
    size: i64,
    aggregate: Partial,
    revision: u32,
) -> WindowResult {
    WindowResult {
        device: device.clone(),
        metric,
        start,
        end: EventTime(start.millis() + size),
        aggregate,
        revision,
    }
}

fn close(
    device: &DeviceId,
    dev: &mut DeviceWindows,
    size: i64,
    lateness: i64,
    wm: i64,
    out: &mut Vec<WindowResult>,
) {
    for w in dev.windows.iter_mut() {
        let start = w.start(size);
        if start.millis() + size > wm {
            break; // ordered by start: the rest are still open
        }
        if !w.closed {
            w.emit(0);
            out.push(result(device, w.metric, start, size, w.aggregate, 0));
        }
    }
    let held = dev.windows.len();
    dev.windows.retain(|w| w.start(size).millis() + size + lateness > wm);
    if dev.windows.len() < held {
        dev.windows.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests;
