//! Background drivers of the store: the rollup merger (folds the readings of committed
//! batches into the rollup tables and `latest`, see [`crate::rollup`]) and maintenance
//! (partitions ahead, retention). Both are safe to run in several processes at once: the
//! merger consumes each committed batch exactly once (its `rollup_pending` row is deleted
//! in the transaction that merges it), and partition creation is serialised in the
//! database.
//!
//! Retention ([`Store::maintain`]) moves each level's horizon ([`Store::horizons`]) in the
//! transaction that drops its rows, so a writer never sees the rows gone and the horizon
//! not yet moved; under TimescaleDB the policies drop the rows and the horizons are the
//! cut-offs of their last runs.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use telemetry::metrics::{self, Collector, Encoder, Unit};
use telemetry::EventTime;
use tokio::sync::watch;

use crate::history::Horizons;
use crate::writer::ArrivalLag;
use crate::{MaintenanceReport, StorageMode, Store, StoreError};

/// Maintenance and retention: see the module doc. The SQL is each backend's
/// (`pg/maintenance.rs`, `sqlite/maintenance.rs`).
impl Store {
    /// Create partitions ahead and enforce retention, as of `now`.
    pub async fn maintain(&self, now: EventTime) -> Result<MaintenanceReport, StoreError> {
        dispatch!(self, s => s.maintain(now).await)
    }

    /// From when each stored level is whole: what retention has dropped so far.
    pub async fn horizons(&self) -> Result<Horizons, StoreError> {
        dispatch!(self, s => s.horizons().await)
    }

    /// Run TimescaleDB's policy jobs now (see [`crate::PgStore::run_timescale_jobs`]); 0
    /// elsewhere.
    pub async fn run_timescale_jobs(&self) -> Result<usize, StoreError> {
        if self.storage_mode() != StorageMode::TimescaleDb {
            return Ok(0);
        }
        dispatch!(self, s => s.run_timescale_jobs().await)
    }
}

#[derive(Debug, Clone)]
pub struct MergerConfig {
    /// Pause between merges while the log is empty or small.
    pub interval: Duration,
    /// Committed batches folded per transaction (a batch holds up to the writer's
    /// `max_batch_readings`).
    pub max_batches: usize,
    /// How long after a minute has ended its live readings may still arrive (in flight
    /// from devices and through the writer) before the minute is sealed and folded.
    /// Readings of a sealed minute take the late path, exact but dearer.
    pub seal_grace: Duration,
    /// Sealed and folded in steps of this length (a divisor of a minute): a minute row
    /// is written once per step that holds its readings. Shorter steps spread the fold's
    /// work and shorten the raw tail queries read; longer ones write fewer rows.
    pub seal_step: Duration,
    /// How late live readings reach the store (the writer's measure). The seal waits
    /// for it when it exceeds `seal_grace`, up to `max_seal_grace`.
    pub arrival_lag: Option<Arc<ArrivalLag>>,
    pub max_seal_grace: Duration,
}

/// The longest the seal waits for late-arriving live readings (the default
/// `max_seal_grace`); the writer's arrival lag is measured up to it.
pub const MAX_SEAL_GRACE: Duration = Duration::from_secs(60);

impl MergerConfig {
    /// How long after its end a step is sealed now.
    pub fn seal_grace_now(&self) -> Duration {
        let lag = self.arrival_lag.as_ref().map_or(Duration::ZERO, |l| l.current());
        // A quarter more than the worst recent lag, and a second for the batch in flight.
        let wanted = lag + lag / 4 + Duration::from_secs(1);
        wanted.clamp(self.seal_grace, self.max_seal_grace.max(self.seal_grace))
    }
}

impl Default for MergerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            max_batches: 200,
            seal_grace: Duration::from_secs(10),
            seal_step: Duration::from_secs(15),
            arrival_lag: None,
            max_seal_grace: MAX_SEAL_GRACE,
        }
    }
}

#[derive(Debug, Default)]
pub struct MergerMetrics {
    pub merges: AtomicU64,
    pub batches_merged: AtomicU64,
    pub readings_merged: AtomicU64,
    pub rollup_rows: AtomicU64,
    /// Live readings folded into rollups by the minute fold.
    pub readings_folded: AtomicU64,
    /// How long after its end a step is sealed (ms), as last decided.
    pub seal_grace_ms: AtomicU64,
    /// Where the folded minutes end (Unix ms; 0 until the first fold).
    pub folded_until_ms: AtomicI64,
    pub errors: AtomicU64,
    pub last_merge_micros: AtomicU64,
}

impl Collector for MergerMetrics {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let e = &mut e;
        metrics::counter(e, "rollup_merges", "Runs of the rollup merger.", get(&self.merges))?;
        metrics::counter(
            e,
            "rollup_batches_merged",
            "Committed batches folded into rollups.",
            get(&self.batches_merged),
        )?;
        metrics::counter(
            e,
            "rollup_readings_merged",
            "Readings folded into rollups.",
            get(&self.readings_merged),
        )?;
        metrics::counter(
            e,
            "rollup_readings_folded",
            "Live readings folded into rollups once their minute was sealed.",
            get(&self.readings_folded),
        )?;
        let folded = self.folded_until_ms.load(Ordering::Relaxed);
        if folded > 0 {
            metrics::gauge_f64(
                e,
                "rollup_fold_lag",
                "How far the folded minutes trail now (history reads the rest raw).",
                Some(&Unit::Seconds),
                (EventTime::now().millis() - folded).max(0) as f64 / 1e3,
            )?;
        }
        metrics::gauge_f64(
            e,
            "rollup_seal_grace",
            "How long after it ends a step of live readings is sealed (follows the arrival lag).",
            Some(&Unit::Seconds),
            get(&self.seal_grace_ms) as f64 / 1e3,
        )?;
        metrics::counter(
            e,
            "rollup_rows_written",
            "Rollup rows upserted (all levels).",
            get(&self.rollup_rows),
        )?;
        metrics::counter(
            e,
            "rollup_merge_errors",
            "Failed rollup merges (retried).",
            get(&self.errors),
        )?;
        metrics::gauge_f64(
            e,
            "rollup_last_merge",
            "Duration of the last rollup merge.",
            Some(&Unit::Seconds),
            get(&self.last_merge_micros) as f64 / 1e6,
        )
    }
}

/// Merge until `shutdown` turns true, then merge what is left once more (best effort:
/// whatever stays in the log is merged by the next process).
pub async fn run_rollup_merger(
    store: Store,
    config: MergerConfig,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<MergerMetrics>,
) {
    loop {
        let started = tokio::time::Instant::now();
        let full = match store.merge_rollups(config.max_batches).await {
            Ok(m) => {
                metrics.merges.fetch_add(1, Ordering::Relaxed);
                metrics.batches_merged.fetch_add(m.batches, Ordering::Relaxed);
                metrics.readings_merged.fetch_add(m.readings, Ordering::Relaxed);
                metrics.rollup_rows.fetch_add(m.rollup_rows, Ordering::Relaxed);
                metrics
                    .last_merge_micros
                    .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                m.batches as usize >= config.max_batches
            }
            Err(e) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "rollup merge failed; the log is kept and merged later");
                false
            }
        };
        // A step that ended more than the grace ago is sealed and folded once.
        let grace = config.seal_grace_now();
        metrics.seal_grace_ms.store(grace.as_millis() as u64, Ordering::Relaxed);
        let until = EventTime::now().millis() - grace.as_millis() as i64;
        let step = (config.seal_step.as_millis() as i64).clamp(1_000, 60_000);
        match store.fold_minutes(EventTime(until.div_euclid(step) * step)).await {
            Ok(m) => {
                metrics.readings_folded.fetch_add(m.readings, Ordering::Relaxed);
                metrics.rollup_rows.fetch_add(m.rollup_rows, Ordering::Relaxed);
                // The mark the fold just moved (or read): no query.
                if let Some(t) = store.folded_mark() {
                    metrics.folded_until_ms.store(t.millis(), Ordering::Relaxed);
                }
            }
            Err(e) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "folding sealed minutes failed; retried at the next run");
            }
        }
        // An hour that has ended moves from the real-time part of the hourly rollups to
        // the stored part (a no-op until then).
        match store.fold_closed_rollups(EventTime::now()).await {
            Ok(rows) => {
                metrics.rollup_rows.fetch_add(rows, Ordering::Relaxed);
            }
            Err(e) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "folding closed hours failed; retried after the next merge");
            }
        }
        if *shutdown.borrow() {
            break;
        }
        if full {
            // A backlog: keep going without waiting.
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(config.interval) => {}
            _ = shutdown.changed() => {}
        }
    }
    if let Err(e) = store.merge_all_rollups().await {
        tracing::warn!(error = %e, "final rollup merge failed; the next start merges the log");
    }
}

/// Create partitions ahead and enforce retention now and every `interval`.
pub async fn run_maintenance(
    store: Store,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match store.maintain(EventTime::now()).await {
            Ok(r) => {
                if !r.partitions_created.is_empty()
                    || !r.partitions_dropped.is_empty()
                    || r.rollup_rows_deleted > 0
                {
                    tracing::info!(created = ?r.partitions_created, dropped = ?r.partitions_dropped, rollup_rows_deleted = r.rollup_rows_deleted, "store maintenance");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "store maintenance failed; retrying at the next interval")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
