//! The baseline refresher: learns the slots closed since the last refresh
//! (`Store::refresh_baselines`) at start and every `[baselines] refresh_interval`, and hands
//! the stream the baselines its anomaly rules need (after each refresh that learned
//! something, and whenever the rules come to need others).

use std::sync::Arc;
use std::time::Duration;

use store::baselines::LearnSettings;
use store::{Store, StoreError};
use stream::{BaselineNeeds, StreamCommand};
use telemetry::baseline::{Baselines, SlotClock};
use telemetry::EventTime;
use tokio::sync::{mpsc, watch};

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
/// retried at the next tick (the mark did not move, so nothing is lost).
pub async fn run_baseline_refresh(
    store: Store,
    settings: LearnSettings,
    every: Duration,
    mut needs: watch::Receiver<BaselineNeeds>,
    commands: mpsc::Sender<StreamCommand>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut loaded: Option<BaselineNeeds> = None;
    let mut next = tokio::time::Instant::now();
    loop {
        let mut learned = false;
        if tokio::time::Instant::now() >= next {
            next = tokio::time::Instant::now() + every;
            let started = std::time::Instant::now();
            match store.refresh_baselines(&settings, EventTime::now()).await {
                Ok(r) if r.slots > 0 => {
                    learned = true;
                    tracing::info!(
                        full = r.full,
                        slots = r.slots,
                        sums = r.sums,
                        rows = r.rows,
                        deleted = r.deleted,
                        ms = started.elapsed().as_millis() as u64,
                        "baselines learned"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot learn baselines; retrying at the next refresh")
                }
            }
        }
        let wanted = needs.borrow_and_update().clone();
        if !wanted.is_empty() && (learned || loaded.as_ref() != Some(&wanted)) {
            match load_baselines(&store, settings.clock, &wanted).await {
                Ok(b) => {
                    tracing::info!(
                        profiles = b.len(),
                        bytes = b.slot_bytes(),
                        "baselines loaded for the anomaly rules"
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
            changed = needs.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
