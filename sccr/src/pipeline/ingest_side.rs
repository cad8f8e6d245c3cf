//! The ingest side of a process: ingest, the writer and its acker, rollups and
//! maintenance, the stream with its alert engine (rules, registry, saved state reconciled
//! with the store) and alert sink, device statuses and webhooks; and the registry refresh.
//!
//! Ingest, the writer and acker, the stream and the alert sink form one *pipeline*
//! ([`start_pipeline`]). With `ingest.partitions = 1` the process runs one, on the MQTT
//! session `mqtt.client_id`. With more, each partition it owns runs its own
//! (`super::affinity`, docs/scale-out.md#device-affinity); the rest is the process's.

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
pub(super) async fn load_registry(store: &Store) -> Result<Registry, StoreError> {
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
    /// Device affinity's figures (`ingest.partitions` > 1).
    pub(super) affinity: Option<Arc<super::affinity::AffinityMetrics>>,
}

/// What every pipeline of a process shares.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) store: Store,
    pub(super) hub: Arc<LiveHub>,
    pub(super) ingest_metrics: Arc<IngestMetrics>,
    pub(super) writer_metrics: Arc<WriterMetrics>,
    pub(super) stream_metrics: Arc<StreamMetrics>,
    pub(super) alert_metrics: Arc<AlertSinkMetrics>,
    pub(super) command_acks: mpsc::Sender<(telemetry::DeviceId, telemetry::command::CommandAck)>,
    pub(super) baseline_needs: watch::Sender<stream::BaselineNeeds>,
}

/// Which partition a pipeline serves.
#[derive(Clone)]
pub(super) struct PipelinePartition {
    pub(super) partition: u16,
    pub(super) map: Arc<std::sync::RwLock<ingest::PartitionMap>>,
}

/// The state a pipeline starts from.
pub(super) struct PipelineStart {
    pub(super) rules: stream::RuleSet,
    /// The registry, the devices of the pipeline's partition only.
    pub(super) registry: Registry,
    pub(super) baselines: Option<Arc<telemetry::baseline::Baselines>>,
    pub(super) store_open: Vec<store::AlertRecord>,
}

/// One running pipeline: ingest (one MQTT session), the writer and acker, the stream core
/// and the alert sink.
pub(super) struct Pipeline {
    pub(super) tasks: Vec<(&'static str, JoinHandle<()>)>,
    pub(super) commands: mpsc::Sender<StreamCommand>,
    pub(super) probes: crate::metrics::QueueProbes,
}

/// The alert engine's saved state's key: `alert_engine/<mqtt.client_id>`, or per
/// partition `alert_engine/<mqtt.group>-p<k>` (its session's client id), so a replica
/// taking a partition over restores its state.
pub(super) fn session_id(config: &Config, partition: Option<&PipelinePartition>) -> String {
    match partition {
        Some(p) => format!("{}-p{}", config.mqtt.group, p.partition),
        None => config.mqtt.client_id.clone(),
    }
}

/// Start a pipeline. With a partition, the windows of its devices are first rebuilt from
/// the readings the store holds for them (what a dead owner had in memory), then its MQTT
/// session is opened (the broker's backlog for it follows).
pub(super) async fn start_pipeline(
    shared: &Shared,
    partition: Option<PipelinePartition>,
    start: PipelineStart,
    shutdown_rx: watch::Receiver<bool>,
) -> Result<Pipeline> {
    let Shared { config, store, hub, .. } = shared;
    let session = session_id(config, partition.as_ref());
    let known: HashSet<_> = store.devices().await?.into_iter().map(|d| d.id).collect();
    // The alert engine: rules, registry, saved state, reconciled with the store.
    let stream_config = StreamConfig {
        window: config.stream.window,
        watermark_delay: config.stream.watermark_delay,
        allowed_lateness: config.stream.allowed_lateness,
        forecast: config.forecasts.clone(),
        ..StreamConfig::default()
    };
    let mut core = StreamCore::new(&stream_config, start.rules);
    let now = EventTime::now();
    let mut boot = Emitted::default();
    let devices: Vec<telemetry::DeviceId> =
        start.registry.devices.iter().map(|d| d.id.clone()).collect();
    core.set_registry(start.registry, now, &mut boot);
    if let Some(baselines) = start.baselines {
        core.set_baselines(baselines);
    }
    let engine_key = state_key(&session);
    match load_engine_state(store, &engine_key).await {
        Ok(Some(state)) => {
            core.restore_state(state, now, &mut boot);
            tracing::info!(%session, open_alerts = core.open_alerts().count(), "alert engine state restored");
        }
        Ok(None) => {}
        Err(e @ StoreError::Corrupt { .. }) => {
            tracing::warn!(error = %e, "saved alert engine state is unreadable; starting afresh")
        }
        Err(e) => return Err(e.into()),
    }
    reconcile(&mut core, &start.store_open, now);
    if partition.is_some() {
        let from = EventTime::from_millis(now.millis() - core.open_span().as_millis() as i64)
            .unwrap_or(now);
        let readings = store.readings_since(&devices, from).await?;
        tracing::info!(%session, readings = readings.len(), "open windows rebuilt from the store");
        shared
            .stream_metrics
            .rebuilt_readings
            .fetch_add(readings.len() as u64, std::sync::atomic::Ordering::Relaxed);
        core.rebuild(&readings, now, &mut boot);
    }
    hub.publish_windows(std::mem::take(&mut boot.windows));
    hub.publish_segments(std::mem::take(&mut boot.segments));

    let (writer_tx, writer_rx) = mpsc::channel(config.writer.queue_messages);
    let (committed_tx, committed_rx) = mpsc::channel(1024);
    let (live_tx, live_rx) = mpsc::channel(8_192);
    let (status_tx, status_in_rx) = mpsc::channel(1_024);
    let (status_in_tx, status_rx) = mpsc::channel(1_024);
    let (command_tx, command_rx) = mpsc::channel(256);
    let (sink_tx, sink_rx) = mpsc::channel(4_096);
    let writer_config = WriterConfig {
        max_batch_readings: config.writer.max_batch_readings,
        max_batch_age: config.writer.max_batch_age,
        ..WriterConfig::default()
    };
    let direct_acks = partition.is_some().then(|| committed_tx.clone());
    let writer = tokio::spawn(run_writer(
        store.clone(),
        writer_config,
        writer_rx,
        committed_tx,
        shared.writer_metrics.clone(),
    ));
    let checkpoint_lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sink = AlertSink::new(
        store.clone(),
        hub.clone(),
        engine_key,
        shared.alert_metrics.clone(),
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
    let service = StreamServiceConfig {
        checkpoint_interval: config.stream.state_save_interval,
        checkpoint_lost,
        baseline_needs: Some(shared.baseline_needs.clone()),
    };
    let stream =
        tokio::spawn(run_stream(core, service, hub.clone(), queues, shared.stream_metrics.clone()));
    let ingest_config = IngestConfig {
        protocol: config.mqtt.protocol,
        host: config.mqtt.host.clone(),
        failover: config.mqtt.failover_brokers(),
        port: config.mqtt.port,
        client_id: session,
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
        partition: partition
            .map(|p| ingest::PartitionFilter { partition: p.partition, map: p.map }),
        ..IngestConfig::default()
    };
    // Weak handles: the metrics must not keep the queues open at shutdown.
    let (writer_probe, live_probe) = (writer_tx.downgrade(), live_tx.downgrade());
    let ingest_queues = IngestQueues {
        writer: writer_tx,
        live: live_tx,
        statuses: status_tx,
        command_acks: Some(shared.command_acks.clone()),
        committed: committed_rx,
        direct_acks,
    };
    let ingest =
        run_ingest(ingest_config, ingest_queues, known, shared.ingest_metrics.clone(), shutdown_rx);
    let status_recorder =
        tokio::spawn(links::run_status_recorder(store.clone(), status_in_rx, status_in_tx));
    let probes = crate::metrics::QueueProbes {
        writer: writer_probe,
        live: live_probe,
        budget: ingest.budget.clone(),
        max_pending: config.ingest.max_pending_readings.max(1),
    };
    // Stop order: ingest, acker and writer first, then the stream and what it feeds.
    let tasks = vec![
        ("ingest", ingest.ingest),
        ("acker", ingest.acker),
        ("writer", writer),
        ("device status", status_recorder),
        ("stream", stream),
        ("alert sink", sink),
    ];
    Ok(Pipeline { tasks, commands: command_tx, probes })
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
    let alert_metrics = Arc::new(AlertSinkMetrics::default());
    alert_metrics
        .operator_positions
        .store(config.alerts.operator_positions, std::sync::atomic::Ordering::Relaxed);
    let (command_ack_tx, command_acks) = mpsc::channel(1_024);
    let (needs_tx, needs_rx) = watch::channel(stream::BaselineNeeds::new());
    let shared = Shared {
        config: config.clone(),
        store: store.clone(),
        hub: hub.clone(),
        ingest_metrics: ingest_metrics.clone(),
        writer_metrics: writer_metrics.clone(),
        stream_metrics: stream_metrics.clone(),
        alert_metrics: alert_metrics.clone(),
        command_acks: command_ack_tx,
        baseline_needs: needs_tx,
    };
    let registry = load_registry(store).await?;
    let mut collectors = crate::metrics::Stages::default();
    let mut tasks: Vec<(&'static str, JoinHandle<()>)> = Vec::new();
    let (command_tx, affinity) = if config.ingest.partitions <= 1 {
        let start = PipelineStart {
            rules: rule_set,
            registry: registry.clone(),
            baselines: None,
            store_open,
        };
        let pipeline = start_pipeline(&shared, None, start, shutdown_rx.clone()).await?;
        collectors.add(pipeline.probes);
        tasks.extend(pipeline.tasks);
        (pipeline.commands, None)
    } else {
        let (command_tx, command_rx) = mpsc::channel(256);
        let (task, metrics) = super::affinity::start(
            shared.clone(),
            rule_set,
            registry.clone(),
            command_rx,
            shutdown_rx.clone(),
        )
        .await?;
        tasks.push(("partitions", task));
        collectors.add(metrics.clone());
        (command_tx, Some(metrics))
    };
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
    collectors
        .add(ingest_metrics.clone())
        .add(writer_metrics.clone())
        .add(stream_metrics.clone())
        .add(merger_metrics.clone())
        .add(alert_metrics.clone());
    if config.webhooks.enabled {
        collectors.add(dispatcher_metrics);
    }
    if config.baselines.enabled {
        collectors.add(baseline_metrics);
    }
    // Stop order: the pipelines first (ingest, acker, writer, device statuses, stream,
    // alert sink), then the webhooks; the merger and maintenance stop after the writers'
    // last commits.
    tasks.extend(dispatcher.map(|d| ("webhook dispatcher", d)));
    tasks.extend([
        ("rollup merger", merger),
        ("maintenance", maintenance),
        ("registry refresh", registry),
    ]);
    tasks.extend(baselines.map(|b| ("baseline refresh", b)));
    Ok(IngestSide {
        tasks,
        commands: command_tx,
        command_acks,
        collectors,
        ingest_metrics,
        affinity,
    })
}
