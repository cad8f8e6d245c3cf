//! The ingest side of a process: ingest, the writer and its acker, rollups and
//! maintenance, the stream with its alert engine (rules, registry, saved state reconciled
//! with the store) and alert sink, device statuses and webhooks; and the registry refresh.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Result;
use ingest::{
    run_ingest, IngestConfig, IngestMetrics, IngestQueues, SubscriptionMode, UnknownDevicePolicy,
};
use store::{
    run_maintenance, run_rollup_merger, run_writer, MergerConfig, MergerMetrics, Store, StoreError,
    WriterConfig, WriterMetrics,
};
use stream::{
    run_stream, AlertSinkItem, DeviceProfile, Emitted, LiveHub, Registry, StreamCommand,
    StreamConfig, StreamCore, StreamMetrics, StreamQueues, StreamServiceConfig,
};
use telemetry::EventTime;
use telemetry::ValidationConfig;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::alert_sink::{load_engine_state, reconcile, state_key, AlertSink};
use crate::config::{Config, Subscription, UnknownDevices};
use crate::metrics::AlertSinkMetrics;

/// Segments and device links as the store holds them.
async fn load_registry(store: &Store) -> Result<Registry, StoreError> {
    let segments = store.segments().await?;
    let devices = store
        .devices()
        .await?
        .into_iter()
        .map(|d| DeviceProfile { id: d.id, kind: d.kind, segment: d.segment, interval: None })
        .collect();
    // Segments of the operations that explain alerts now (docs/operations.md).
    let mut operations = std::collections::BTreeMap::new();
    for op in store.suppressing_operations().await? {
        for s in op.affected_segments() {
            if let Ok(id) = telemetry::SegmentId::parse(s) {
                operations.entry(id).or_insert_with(|| op.id.clone());
            }
        }
    }
    Ok(Registry { segments, devices, operations })
}

/// Re-read the registry every `every` and hand changes to the stream.
async fn run_registry_refresh(
    store: Store,
    mut last: Registry,
    every: std::time::Duration,
    commands: mpsc::Sender<StreamCommand>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        match load_registry(&store).await {
            Ok(registry) if registry != last => {
                last = registry.clone();
                if commands.send(StreamCommand::Registry(registry)).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read segments and device links; keeping the previous ones")
            }
        }
    }
}

/// What the ingest side started.
pub(super) struct IngestSide {
    pub(super) tasks: Vec<(&'static str, JoinHandle<()>)>,
    pub(super) commands: mpsc::Sender<StreamCommand>,
    pub(super) command_acks: mpsc::Receiver<(telemetry::DeviceId, telemetry::command::CommandAck)>,
    pub(super) collectors: crate::metrics::Stages,
    pub(super) ingest_metrics: Arc<IngestMetrics>,
}

/// Start ingest, the writer, rollups and maintenance, the stream and alert engine, device
/// statuses and webhooks (SCCR's pipeline without its API).
#[allow(clippy::too_many_arguments)]
pub(super) async fn start_ingest(
    config: &Config,
    store: &Store,
    hub: &Arc<LiveHub>,
    rule_set: stream::RuleSet,
    store_open: Vec<store::AlertRecord>,
    metrics: (Arc<IngestMetrics>, Arc<WriterMetrics>, Arc<StreamMetrics>),
    relearn_baselines: Arc<tokio::sync::Notify>,
    shutdown_rx: watch::Receiver<bool>,
) -> Result<IngestSide> {
    let (ingest_metrics, writer_metrics, stream_metrics) = metrics;
    let known: HashSet<_> = store.devices().await?.into_iter().map(|d| d.id).collect();
    // The alert engine: rules, registry, saved state, reconciled with the store.
    let stream_config = StreamConfig {
        window: config.stream.window,
        watermark_delay: config.stream.watermark_delay,
        allowed_lateness: config.stream.allowed_lateness,
        forecast: config.forecasts.clone(),
        ..StreamConfig::default()
    };
    let mut core = StreamCore::new(&stream_config, rule_set);
    let now = EventTime::now();
    let mut boot = Emitted::default();
    let registry = load_registry(store).await?;
    core.set_registry(registry.clone(), now, &mut boot);
    let engine_key = state_key(&config.mqtt.client_id);
    match load_engine_state(store, &engine_key).await {
        Ok(Some(state)) => {
            core.restore_state(state, now, &mut boot);
            tracing::info!(open_alerts = core.open_alerts().count(), "alert engine state restored");
        }
        Ok(None) => {}
        Err(e @ StoreError::Corrupt { .. }) => {
            tracing::warn!(error = %e, "saved alert engine state is unreadable; starting afresh")
        }
        Err(e) => return Err(e.into()),
    }
    reconcile(&mut core, &store_open, now);

    let (writer_tx, writer_rx) = mpsc::channel(config.writer.queue_messages);
    let (committed_tx, committed_rx) = mpsc::channel(1024);
    let (live_tx, live_rx) = mpsc::channel(8_192);
    let (status_tx, status_in_rx) = mpsc::channel(1_024);
    let (status_in_tx, status_rx) = mpsc::channel(1_024);
    let (command_ack_tx, command_acks) = mpsc::channel(1_024);
    let (command_tx, command_rx) = mpsc::channel(256);
    let (sink_tx, sink_rx) = mpsc::channel(4_096);
    let alert_metrics = Arc::new(AlertSinkMetrics::default());
    alert_metrics
        .operator_positions
        .store(config.alerts.operator_positions, std::sync::atomic::Ordering::Relaxed);

    let writer_config = WriterConfig {
        max_batch_readings: config.writer.max_batch_readings,
        max_batch_age: config.writer.max_batch_age,
        ..WriterConfig::default()
    };
    let writer = tokio::spawn(run_writer(
        store.clone(),
        writer_config,
        writer_rx,
        committed_tx,
        writer_metrics.clone(),
    ));
    let checkpoint_lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sink = AlertSink::new(
        store.clone(),
        hub.clone(),
        engine_key,
        alert_metrics.clone(),
        checkpoint_lost.clone(),
    );
    let sink = tokio::spawn(sink.run(sink_rx));
    // What restoring changed (alerts of rules that no longer exist, cleared) is stored first.
    for output in boot.alerts {
        let _ = sink_tx.send(AlertSinkItem::Output(output)).await;
    }
    let queues = StreamQueues {
        readings: live_rx,
        statuses: status_rx,
        commands: command_rx,
        alerts: sink_tx,
    };
    let (needs_tx, needs_rx) = watch::channel(stream::BaselineNeeds::new());
    let service = StreamServiceConfig {
        checkpoint_interval: config.stream.state_save_interval,
        checkpoint_lost,
        baseline_needs: Some(needs_tx),
    };
    let stream =
        tokio::spawn(run_stream(core, service, hub.clone(), queues, stream_metrics.clone()));
    let registry = tokio::spawn(run_registry_refresh(
        store.clone(),
        registry,
        config.stream.registry_refresh,
        command_tx.clone(),
        shutdown_rx.clone(),
    ));
    let merger_metrics = Arc::new(MergerMetrics::default());
    let merger = tokio::spawn(run_rollup_merger(
        store.clone(),
        MergerConfig {
            interval: config.database.rollup_merge_interval,
            arrival_lag: Some(writer_metrics.arrival_lag.clone()),
            ..MergerConfig::default()
        },
        shutdown_rx.clone(),
        merger_metrics.clone(),
    ));
    let maintenance = tokio::spawn(run_maintenance(
        store.clone(),
        config.database.maintenance_interval,
        shutdown_rx.clone(),
    ));
    let baseline_metrics = Arc::new(crate::baselines::BaselineMetrics::default());
    let baselines = config.baselines.enabled.then(|| {
        tokio::spawn(crate::baselines::run_baseline_refresh(
            store.clone(),
            config.baselines.learn_settings(),
            config.baselines.refresh_interval,
            needs_rx,
            command_tx.clone(),
            baseline_metrics.clone(),
            relearn_baselines,
            shutdown_rx.clone(),
        ))
    });
    let ingest_config = IngestConfig {
        protocol: config.mqtt.protocol,
        host: config.mqtt.host.clone(),
        failover: config.mqtt.failover_brokers(),
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
    // Weak handles: the metrics must not keep the queues open at shutdown.
    let (writer_probe, live_probe) = (writer_tx.downgrade(), live_tx.downgrade());
    let ingest_queues = IngestQueues {
        writer: writer_tx,
        live: live_tx,
        statuses: status_tx,
        command_acks: Some(command_ack_tx),
        committed: committed_rx,
    };
    let ingest = run_ingest(
        ingest_config,
        ingest_queues,
        known,
        ingest_metrics.clone(),
        shutdown_rx.clone(),
    );
    let status_recorder =
        tokio::spawn(links::run_status_recorder(store.clone(), status_in_rx, status_in_tx));
    let w = &config.webhooks;
    let client = if w.enabled {
        let destinations = w.destinations()?;
        Some(links::WebhookClient::new(w.request_timeout, &w.tls_files(), destinations)?)
    } else {
        None
    };
    let dispatcher_metrics = Arc::new(links::DispatcherMetrics::default());
    let dispatcher = client.map(|client| {
        let dispatcher_config = links::DispatcherConfig {
            source: w.source.clone(),
            poll_interval: w.poll_interval,
            request_timeout: w.request_timeout,
            backoff: links::backoff::Backoff {
                base: w.backoff_base,
                cap: w.backoff_cap,
                max_attempts: w.max_attempts,
            },
            concurrency: w.concurrency,
            retention: w.retention,
        };
        tokio::spawn(links::run_dispatcher(
            store.clone(),
            dispatcher_config,
            client,
            dispatcher_metrics.clone(),
            shutdown_rx.clone(),
        ))
    });
    let mut collectors = crate::metrics::Stages::default();
    collectors
        .add(ingest_metrics.clone())
        .add(writer_metrics.clone())
        .add(stream_metrics.clone())
        .add(merger_metrics.clone())
        .add(alert_metrics.clone())
        .add(crate::metrics::QueueProbes {
            writer: writer_probe,
            live: live_probe,
            budget: ingest.budget.clone(),
            max_pending: config.ingest.max_pending_readings.max(1),
        });
    if config.webhooks.enabled {
        collectors.add(dispatcher_metrics);
    }
    if config.baselines.enabled {
        collectors.add(baseline_metrics);
    }
    // Stop order: ingest, acker and writer first (the merger and maintenance stop after
    // the writer's last commit), then the stream and what it feeds.
    let tasks = [
        ("ingest", ingest.ingest),
        ("acker", ingest.acker),
        ("writer", writer),
        ("device status", status_recorder),
    ]
    .into_iter()
    .chain(dispatcher.map(|d| ("webhook dispatcher", d)))
    .chain([
        ("stream", stream),
        ("alert sink", sink),
        ("rollup merger", merger),
        ("maintenance", maintenance),
        ("registry refresh", registry),
    ])
    .chain(baselines.map(|b| ("baseline refresh", b)))
    .collect();
    Ok(IngestSide { tasks, commands: command_tx, command_acks, collectors, ingest_metrics })
}
