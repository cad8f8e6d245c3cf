//! The baseline refresher: learns the slots closed since the last refresh
//! (`Store::refresh_baselines`) at start and every `[baselines] refresh_interval`.

use std::time::Duration;

use store::baselines::LearnSettings;
use store::Store;
use telemetry::EventTime;
use tokio::sync::watch;

/// Refresh now and then every `every` until shutdown. A failed refresh is logged and
/// retried at the next tick (the mark did not move, so nothing is lost).
pub async fn run_baseline_refresh(
    store: Store,
    settings: LearnSettings,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let started = std::time::Instant::now();
        match store.refresh_baselines(&settings, EventTime::now()).await {
            Ok(r) if r.slots > 0 => tracing::info!(
                full = r.full,
                slots = r.slots,
                sums = r.sums,
                rows = r.rows,
                deleted = r.deleted,
                ms = started.elapsed().as_millis() as u64,
                "baselines learned"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot learn baselines; retrying at the next refresh")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
