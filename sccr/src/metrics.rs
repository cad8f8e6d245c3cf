//! The process's one metrics registry and the composition root's own figures.
//!
//! Every stage keeps its counters where it runs (`IngestMetrics`, `WriterMetrics`,
//! `StreamMetrics`, …) and describes them in its `Collector`; [`registry`] gathers the
//! collectors of the stages a process runs, with the standard `process_*` figures and
//! `sccr_build_info`, and `/metrics` encodes it (OpenMetrics text, prometheus-client).
//! This module adds what only the composition root sees: the alert sink's counters and the
//! alarm-flood figures, and the depth of the queues between the stages.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use telemetry::metrics::{self, BuildInfo, Collector, Encoder, ProcessCollector, Registry, Unit};
use tokio::sync::{mpsc, Semaphore};

/// Counters of the alert sink, for `/metrics`.
#[derive(Debug, Default)]
pub struct AlertSinkMetrics {
    pub raised: AtomicU64,
    /// Raises that found the key's alert already open in the store.
    pub already_open: AtomicU64,
    pub acknowledged: AtomicU64,
    pub cleared: AtomicU64,
    pub updated: AtomicU64,
    /// Conditions that ended while their alert was unacknowledged (returned).
    pub returned: AtomicU64,
    /// Returned alerts raised again.
    pub resumed: AtomicU64,
    /// Shelves expired, suppressions set or lifted.
    pub overlays: AtomicU64,
    /// Moves the store refused because the alert had moved on (an operator was first).
    pub refused: AtomicU64,
    pub state_saves: AtomicU64,
    /// Checkpoint parts written (head and book included) and their JSON bytes.
    pub state_parts: AtomicU64,
    pub state_bytes: AtomicU64,
    /// Checkpoints that could not be saved (the next one is full).
    pub state_save_errors: AtomicU64,
    pub errors: AtomicU64,
    /// Detector-health flag intervals opened and closed in the store.
    pub flags_opened: AtomicU64,
    pub flags_closed: AtomicU64,
    /// Operator positions (`alerts.operator_positions`) for the flood figures; 0 reads as 1.
    pub operator_positions: AtomicU32,
    /// Times the raises per position over the last 10 minutes crossed above
    /// [`FLOOD_PER_POSITION`].
    pub floods: AtomicU64,
    /// Processing times of the signalled raises of the last [`FLOOD_WINDOW_MS`].
    flood_window: Mutex<VecDeque<i64>>,
}

/// The alarm-flood window (EEMUA 191): raises are counted over the last 10 minutes.
pub const FLOOD_WINDOW_MS: i64 = 10 * 60_000;
/// More raises than this per operator position in the window is a flood (EEMUA 191:
/// one is acceptable, more than ten is a flood).
pub const FLOOD_PER_POSITION: f64 = 10.0;
/// Most raises the window holds (it counts no further).
const FLOOD_WINDOW_CAP: usize = 100_000;

impl AlertSinkMetrics {
    fn positions(&self) -> f64 {
        f64::from(self.operator_positions.load(Ordering::Relaxed).max(1))
    }

    /// A raise or re-raise that signals (neither suppressed nor shelved), at `at`.
    pub fn record_raise(&self, at: telemetry::EventTime) {
        let mut w = self.flood_window.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut w, at.millis());
        let before = w.len() as f64 / self.positions();
        if w.len() < FLOOD_WINDOW_CAP {
            w.push_back(at.millis());
        }
        let after = w.len() as f64 / self.positions();
        if before <= FLOOD_PER_POSITION && after > FLOOD_PER_POSITION {
            self.floods.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                raises = w.len(),
                per_position = after,
                "alarm flood: more than 10 alerts per operator position in 10 minutes"
            );
        }
    }

    /// Signalled raises in the 10 minutes up to `now`, and that per operator position.
    pub fn raised_last_10m(&self, now: telemetry::EventTime) -> (usize, f64) {
        let mut w = self.flood_window.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut w, now.millis());
        (w.len(), w.len() as f64 / self.positions())
    }
}

fn prune(w: &mut VecDeque<i64>, now_ms: i64) {
    while w.front().is_some_and(|&t| t <= now_ms - FLOOD_WINDOW_MS) {
        w.pop_front();
    }
}

impl Collector for AlertSinkMetrics {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let e = &mut e;
        let counters = [
            ("alerts_stored_raised", "Alerts opened in the store.", &self.raised),
            (
                "detector_flags_opened",
                "Detector-health flag intervals opened in the store.",
                &self.flags_opened,
            ),
            (
                "detector_flags_closed",
                "Detector-health flag intervals closed in the store.",
                &self.flags_closed,
            ),
            (
                "alerts_stored_already_open",
                "Raises that found their alert already open in the store.",
                &self.already_open,
            ),
            (
                "alerts_stored_acknowledged",
                "Acknowledgements the engine stored.",
                &self.acknowledged,
            ),
            ("alerts_stored_cleared", "Automatic clears stored.", &self.cleared),
            (
                "alerts_stored_updated",
                "Group and overflow alerts whose members changed.",
                &self.updated,
            ),
            (
                "alerts_stored_returned",
                "Conditions that ended while their alert was unacknowledged (returned).",
                &self.returned,
            ),
            (
                "alerts_stored_resumed",
                "Returned alerts raised again before an acknowledgement.",
                &self.resumed,
            ),
            (
                "alerts_stored_overlays",
                "Shelves that expired and suppressions set or lifted.",
                &self.overlays,
            ),
            (
                "alerts_store_refused",
                "Moves the store refused because an operator moved the alert first.",
                &self.refused,
            ),
            ("alerts_store_errors", "Alert changes that could not be stored.", &self.errors),
            (
                "alert_floods",
                "Times the raises per operator position in 10 minutes crossed above 10.",
                &self.floods,
            ),
            ("stream_state_saves", "Alert engine state checkpoints saved.", &self.state_saves),
            (
                "stream_state_parts",
                "Alert engine checkpoint parts written (only changed ones after the first).",
                &self.state_parts,
            ),
            (
                "stream_state_save_errors",
                "Alert engine checkpoints that could not be saved (the next one is full).",
                &self.state_save_errors,
            ),
        ];
        for (name, help, value) in counters {
            metrics::counter(e, name, help, value.load(Ordering::Relaxed))?;
        }
        metrics::counter_in(
            e,
            "stream_state",
            "Alert engine checkpoint parts written, in JSON bytes.",
            &Unit::Bytes,
            self.state_bytes.load(Ordering::Relaxed) as f64,
        )?;
        let (raised, per_position) = self.raised_last_10m(telemetry::EventTime::now());
        metrics::gauge(
            e,
            "alerts_raised_last_10m",
            "Alerts raised (and raised again) in the last 10 minutes, suppressed and shelved ones excluded.",
            i64::try_from(raised).unwrap_or(i64::MAX),
        )?;
        metrics::gauge_f64(
            e,
            "alerts_per_position_last_10m",
            "Raises of the last 10 minutes per operator position (EEMUA 191: 1 is acceptable, over 10 is a flood).",
            None,
            per_position,
        )
    }
}

/// The queues between ingest, the writer and the stream, read at each scrape.
pub struct QueueProbes {
    pub writer: mpsc::WeakSender<store::WriteItem<ingest::AckToken>>,
    pub live: mpsc::WeakSender<Vec<telemetry::Reading>>,
    /// The reading budget (`ingest.max_pending_readings` permits).
    pub budget: Arc<Semaphore>,
    pub max_pending: usize,
}

impl std::fmt::Debug for QueueProbes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueProbes").field("max_pending", &self.max_pending).finish()
    }
}

fn depth<T>(weak: &mpsc::WeakSender<T>) -> i64 {
    let n = weak.upgrade().map_or(0, |tx| tx.max_capacity() - tx.capacity());
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for QueueProbes {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let e = &mut e;
        let pending = self.max_pending.saturating_sub(self.budget.available_permits());
        metrics::gauge(
            e,
            "ingest_pending_readings",
            "Readings between the broker and the durable commit.",
            i64::try_from(pending).unwrap_or(i64::MAX),
        )?;
        metrics::gauge(
            e,
            "writer_queue_depth",
            "Messages waiting for the batch writer.",
            depth(&self.writer),
        )?;
        metrics::gauge(
            e,
            "stream_queue_depth",
            "Reading batches waiting for the stream core.",
            depth(&self.live),
        )
    }
}

/// A registry holding the standard process figures and `sccr_build_info`; the stages add
/// their collectors with [`Stages::register`].
pub fn registry() -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector::default()));
    registry.sub_registry_with_prefix("sccr").register_collector(Box::new(BuildInfo {
        name: "build",
        labels: vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("profile", if cfg!(debug_assertions) { "debug" } else { "release" }.to_owned()),
        ],
    }));
    registry
}

/// Adds the collectors of the stages a process runs to `registry`, under `sccr_`.
#[derive(Default)]
pub struct Stages(Vec<Box<dyn Collector>>);

impl Stages {
    pub fn add(&mut self, c: impl Collector) -> &mut Self {
        self.0.push(Box::new(c));
        self
    }

    pub fn extend(&mut self, other: Stages) -> &mut Self {
        self.0.extend(other.0);
        self
    }

    pub fn register(self, registry: &mut Registry) {
        let sccr = registry.sub_registry_with_prefix("sccr");
        for c in self.0 {
            sccr.register_collector(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use telemetry::EventTime;

    use super::*;

    #[test]
    fn the_flood_figures_count_signalled_raises_per_position_over_ten_minutes() {
        let m = AlertSinkMetrics::default();
        m.operator_positions.store(2, Ordering::Relaxed);
        for i in 0..20 {
            m.record_raise(EventTime(i * 1_000));
        }
        assert_eq!(m.raised_last_10m(EventTime(20_000)), (20, 10.0));
        assert_eq!(m.floods.load(Ordering::Relaxed), 0, "10 per position is not a flood");
        m.record_raise(EventTime(21_000));
        assert_eq!(m.floods.load(Ordering::Relaxed), 1, "11 per position is");
        m.record_raise(EventTime(22_000));
        assert_eq!(m.floods.load(Ordering::Relaxed), 1, "counted once per crossing");
        // Ten minutes on, the window has emptied.
        assert_eq!(m.raised_last_10m(EventTime(22_000 + FLOOD_WINDOW_MS)), (0, 0.0));
        m.record_raise(EventTime(30 * 60_000));
        assert_eq!(m.raised_last_10m(EventTime(30 * 60_000)), (1, 0.5));
    }

    #[test]
    fn the_registry_has_the_process_and_build_figures() {
        let mut text = String::new();
        metrics::encode_text(&mut text, &registry()).unwrap();
        assert!(text.contains("\nsccr_build_info{version=\""), "{text}");
        assert!(text.contains("\nprocess_start_time_seconds "), "{text}");
        if cfg!(target_os = "linux") {
            for name in
                ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"]
            {
                assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing:\n{text}");
            }
        }
    }
}
