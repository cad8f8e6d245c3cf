//! Wiring of the server roles into one process: ingest → writer → (acks) and
//! ingest → stream → live hub → API. No logic beyond wiring lives here.
//!
//! Shutdown is staged: ingest stops taking messages and drops its side of the writer queue;
//! the writer commits what it holds and hands back the tickets; the acker acknowledges them;
//! ingest disconnects; the stream sees its queue close and flushes its windows; the API
//! stops last.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Context, Result};
use ingest::{run_ingest, IngestConfig, IngestMetrics, SubscriptionMode, UnknownDevicePolicy};
use store::{run_writer, Store, StoreOptions, WriterConfig, WriterMetrics};
use stream::{run_stream, LiveHub, LiveValue, StreamConfig, StreamMetrics};
use telemetry::segment::{parse_geojson, FLORENCE_SEED};
use telemetry::ValidationConfig;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, Subscription, UnknownDevices};

pub struct Running {
    pub api_addr: std::net::SocketAddr,
    pub store: Store,
    pub ingest_metrics: Arc<IngestMetrics>,
    pub writer_metrics: Arc<WriterMetrics>,
    pub stream_metrics: Arc<StreamMetrics>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    api: JoinHandle<()>,
    api_stop: watch::Sender<bool>,
}

pub async fn open_store(config: &Config) -> Result<Store> {
    let options = StoreOptions { max_connections: config.database.max_connections, ..StoreOptions::default() };
    let store = Store::connect(&config.database.url, &options).await.context("connecting to the database (database.url)")?;
    store.migrate().await.context("applying migrations")?;
    if store.segments().await?.is_empty() {
        let text = match &config.segments.seed {
            Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading segments.seed {}", p.display()))?,
            None => FLORENCE_SEED.to_owned(),
        };
        let segments = parse_geojson(&text).context("parsing segments.seed")?;
        store.upsert_segments(&segments).await?;
        tracing::info!(count = segments.len(), "seeded road segments");
    }
    Ok(store)
}

pub async fn start(config: &Config, store: Store) -> Result<Running> {
    let hub = LiveHub::new(16_384);
    let latest = store.latest(None, None).await?;
    hub.seed(latest.into_iter().map(|v| LiveValue { device: v.device, metric: v.metric, time: v.time, value: v.value }));
    let known: HashSet<_> = store.devices().await?.into_iter().map(|d| d.id).collect();

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (writer_tx, writer_rx) = mpsc::channel(config.writer.queue_messages);
    let (committed_tx, committed_rx) = mpsc::channel(1024);
    let (live_tx, live_rx) = mpsc::channel(8_192);

    let ingest_metrics = Arc::new(IngestMetrics::default());
    let writer_metrics = Arc::new(WriterMetrics::default());
    let stream_metrics = Arc::new(StreamMetrics::default());

    let writer_config = WriterConfig {
        max_batch_readings: config.writer.max_batch_readings,
        max_batch_age: config.writer.max_batch_age,
        ..WriterConfig::default()
    };
    let writer = tokio::spawn(run_writer(store.clone(), writer_config, writer_rx, committed_tx, writer_metrics.clone()));
    let stream_config = StreamConfig {
        window: config.stream.window,
        watermark_delay: config.stream.watermark_delay,
        allowed_lateness: config.stream.allowed_lateness,
        ..StreamConfig::default()
    };
    let stream = tokio::spawn(run_stream(stream_config, hub.clone(), live_rx, stream_metrics.clone()));
    let ingest_config = IngestConfig {
        host: config.mqtt.host.clone(),
        port: config.mqtt.port,
        client_id: config.mqtt.client_id.clone(),
        subscription: match config.mqtt.subscription {
            Subscription::Exclusive => SubscriptionMode::Exclusive,
            Subscription::Shared => SubscriptionMode::Shared,
        },
        group: config.mqtt.group.clone(),
        username: config.mqtt.username.clone(),
        password: config.mqtt.password.clone(),
        keep_alive: config.mqtt.keep_alive,
        session_expiry: config.mqtt.session_expiry,
        receive_maximum: config.mqtt.receive_maximum,
        max_pending_readings: config.ingest.max_pending_readings,
        validation: ValidationConfig {
            max_payload_bytes: config.ingest.max_payload_bytes,
            max_future_skew: config.ingest.max_future_skew,
            max_past_age: config.ingest.max_past_age,
        },
        unknown_devices: match config.ingest.unknown_devices {
            UnknownDevices::AutoRegister => UnknownDevicePolicy::AutoRegister,
            UnknownDevices::Reject => UnknownDevicePolicy::Reject,
        },
        ..IngestConfig::default()
    };
    let ingest = run_ingest(ingest_config, writer_tx, live_tx, committed_rx, known, ingest_metrics.clone(), shutdown_rx);

    let listener = tokio::net::TcpListener::bind(&config.api.listen)
        .await
        .with_context(|| format!("binding api.listen {}", config.api.listen))?;
    let api_addr = listener.local_addr()?;
    let router = dashboard_api::app(dashboard_api::AppState { store: store.clone(), hub: hub.clone() });
    let (api_stop, mut api_stop_rx) = watch::channel(false);
    let api = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = api_stop_rx.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "API server failed");
        }
    });
    tracing::info!(%api_addr, backend = store.backend(), "SCCR pipeline running");
    Ok(Running {
        api_addr,
        store,
        ingest_metrics,
        writer_metrics,
        stream_metrics,
        shutdown: shutdown_tx,
        tasks: vec![("ingest", ingest.ingest), ("acker", ingest.acker), ("writer", writer), ("stream", stream)],
        api,
        api_stop,
    })
}

impl Running {
    /// Drain and stop every stage in order (see the module doc).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for (name, task) in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(task = name, error = %e, "task ended abnormally");
            }
        }
        let _ = self.api_stop.send(true);
        let _ = self.api.await;
        self.store.close().await;
        tracing::info!("SCCR stopped cleanly");
    }
}
