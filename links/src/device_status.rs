//! Device online/offline changes on their way from ingest to the stream: each status is
//! handed to the stream first (the stream's alert rules see it as before), then recorded
//! in the store, where a change of state (or a first sighting) writes `device_status` and
//! its outbox event in one transaction, and a repeated state (a retained status replayed
//! on subscribe) writes nothing.

use std::time::Duration;

use store::Store;
use telemetry::StatusEvent;
use tokio::sync::mpsc;

/// Forward statuses from `input` to `stream` and record them; ends when `input` closes.
pub async fn run_status_recorder(
    store: Store,
    mut input: mpsc::Receiver<StatusEvent>,
    stream: mpsc::Sender<StatusEvent>,
) {
    while let Some(event) = input.recv().await {
        let (device, state, at) = (event.device.clone(), event.state, event.received_at);
        if stream.send(event).await.is_err() {
            tracing::warn!("device status: the stream is gone");
        }
        for attempt in 0u32..5 {
            match store.record_device_status(&device, state, at).await {
                Ok(changed) => {
                    if changed {
                        tracing::info!(%device, ?state, "device status changed");
                    }
                    break;
                }
                Err(e) if e.is_transient() && attempt < 4 => {
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await
                }
                Err(e) => {
                    // The broker keeps the status retained: the next subscription replays it.
                    tracing::error!(%device, error = %e, "cannot record a device status change");
                    break;
                }
            }
        }
    }
}
