//! The baseline refresher: learns the slots closed since the last refresh
//! (`Store::refresh_baselines`) at start and every `[baselines] refresh_interval`, and hands
//! the stream the baselines its anomaly rules need (after each refresh that learned
//! something, and whenever the rules come to need others).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use store::baselines::LearnSettings;
use store::{Store, StoreError};
use stream::{BaselineNeeds, StreamCommand};
use telemetry::baseline::{Baselines, SlotClock};
use telemetry::metrics::{self, Collector, Encoder, Unit};
use telemetry::EventTime;
use tokio::sync::{mpsc, watch};

/// What the refresher did, for `/metrics`.
#[derive(Debug, Default)]
pub struct BaselineMetrics {
    pub refreshes: AtomicU64,
    pub refresh_failures: AtomicU64,
    /// Slots of the week relearned (each for every detector and segment).
    pub slots_learned: AtomicU64,
    pub last_refresh_micros: AtomicU64,
    /// Profiles held by the stream for its anomaly rules, and their slots' bytes.
    pub profiles_loaded: AtomicU64,
    pub loaded_bytes: AtomicU64,
}

impl Collector for BaselineMetrics {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let e = &mut e;
        metrics::counter(e, "baseline_refreshes", "Baseline refreshes run.", get(&self.refreshes))?;
        metrics::counter(
            e,
            "baseline_refresh_failures",
            "Baseline refreshes that failed (retried at the next interval).",
            get(&self.refresh_failures),
        )?;
        metrics::counter(
            e,
            "baseline_slots_learned",
            "15-minute slots of the week relearned.",
            get(&self.slots_learned),
        )?;
        metrics::gauge_f64(
            e,
            "baseline_last_refresh",
            "Duration of the last baseline refresh.",
            Some(&Unit::Seconds),
            get(&self.last_refresh_micros) as f64 / 1e6,
        )?;
        metrics::gauge_f64(
            e,
            "baseline_profiles_loaded",
            "Baseline profiles held for the anomaly rules.",
            None,
            get(&self.profiles_loaded) as f64,
        )?;
        metrics::gauge_f64(
            e,
            "baseline_loaded",
            "Memory of the baseline profiles held for the anomaly rules.",
            Some(&Unit::Bytes),
            get(&self.loaded_bytes) as f64,
        )
    }
}

/// The stored baselines of `needs`, in memory.
pub async fn load_baselines(
    store: &Store,
    clock: SlotClock,
    needs: &BaselineNeeds,
) -> Result<Baselines, StoreError> {
    let mut baselines = Baselines::new(clock);
    for (on, metric) in needs {
        baselines.extend(&store.baselines_of_metric(*on, metric).await?);
    }
    Ok(baselines)
}

/// Refresh now and then every `every` until shutdown. A failed refresh is logged and
/// retried at the next tick (the mark did not move, so nothing is lost). `relearn` asks for
/// every slot to be learned again at once: history written behind the mark (a back-fill,
/// an import) is otherwise learned slot by slot over the following week.
#[allow(clippy::too_many_arguments)]
pub async fn run_baseline_refresh(
    store: Store,
    settings: LearnSettings,
    every: Duration,
    mut needs: watch::Receiver<BaselineNeeds>,
    commands: mpsc::Sender<StreamCommand>,
    metrics: Arc<BaselineMetrics>,
    relearn: Arc<tokio::sync::Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut loaded: Option<BaselineNeeds> = None;
    let mut next = tokio::time::Instant::now();
    let mut relearn_now = false;
    loop {
        if std::mem::take(&mut relearn_now) {
            // A mark older than a week relearns every slot (`Store::refresh_baselines`).
            match store.baseline_mark().await {
                Ok(Some(mark)) => {
                    let back = store::baselines::BaselineMark { learned_to: EventTime(0), ..mark };
                    if let Err(e) = store.set_baseline_mark(&back).await {
                        tracing::warn!(error = %e, "cannot reset the baselines' mark");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the baselines' mark"),
            }
            tracing::info!("learning every baseline slot again");
            next = tokio::time::Instant::now();
        }
        let mut learned = false;
        if tokio::time::Instant::now() >= next {
            next = tokio::time::Instant::now() + every;
            let started = std::time::Instant::now();
            let result = store.refresh_baselines(&settings, EventTime::now()).await;
            metrics.refreshes.fetch_add(1, Ordering::Relaxed);
            metrics
                .last_refresh_micros
                .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            match result {
                Ok(r) if r.slots > 0 => {
                    metrics.slots_learned.fetch_add(r.slots as u64, Ordering::Relaxed);
                    learned = true;
                    tracing::info!(
                        full = r.full,
                        slots = r.slots,
                        sums = r.sums,
                        summed = r.summed,
                        rows = r.rows,
                        deleted = r.deleted,
                        ms = started.elapsed().as_millis() as u64,
                        "baselines learned"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    metrics.refresh_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot learn baselines; retrying at the next refresh")
                }
            }
        }
        let wanted = needs.borrow_and_update().clone();
        if !wanted.is_empty() && (learned || loaded.as_ref() != Some(&wanted)) {
            match load_baselines(&store, settings.clock, &wanted).await {
                Ok(b) => {
                    metrics.profiles_loaded.store(b.len() as u64, Ordering::Relaxed);
                    metrics.loaded_bytes.store(b.slot_bytes() as u64, Ordering::Relaxed);
                    tracing::info!(
                        profiles = b.len(),
                        bytes = b.slot_bytes(),
                        "baselines loaded for the anomaly rules and forecasts"
                    );
                    if commands.send(StreamCommand::Baselines(Arc::new(b))).await.is_err() {
                        return;
                    }
                    loaded = Some(wanted);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read baselines; keeping the previous ones")
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = relearn.notified() => relearn_now = true,
            changed = needs.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
