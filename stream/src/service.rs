//! The stream task: takes batches of validated readings from a bounded queue, updates live
//! state and windows, closes windows of quiet devices every second, and flushes every
//! window when the queue closes (shutdown).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use telemetry::{EventTime, Reading};
use tokio::sync::mpsc;

use crate::config::StreamConfig;
use crate::live::LiveHub;
use crate::window::Windows;

/// Counters of the stream task.
#[derive(Debug, Default)]
pub struct StreamMetrics {
    pub readings: AtomicU64,
    pub windows_emitted: AtomicU64,
    pub too_late: AtomicU64,
}

pub async fn run_stream(config: StreamConfig, hub: Arc<LiveHub>, mut input: mpsc::Receiver<Vec<Reading>>, metrics: Arc<StreamMetrics>) {
    let mut windows = Windows::new(&config);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut out = Vec::new();
    loop {
        tokio::select! {
            batch = input.recv() => match batch {
                Some(readings) => {
                    hub.apply(&readings);
                    for r in &readings {
                        windows.add(r, &mut out);
                    }
                    metrics.readings.fetch_add(readings.len() as u64, Ordering::Relaxed);
                }
                None => break,
            },
            _ = tick.tick() => windows.tick(EventTime::now(), &mut out),
        }
        if !out.is_empty() {
            metrics.windows_emitted.fetch_add(out.len() as u64, Ordering::Relaxed);
            hub.publish_windows(std::mem::take(&mut out));
        }
        metrics.too_late.store(windows.too_late, Ordering::Relaxed);
    }
    windows.flush(&mut out);
    metrics.windows_emitted.fetch_add(out.len() as u64, Ordering::Relaxed);
    hub.publish_windows(out);
    tracing::info!("stream drained; windows flushed");
}
