//! Wiring of the server roles into one process: ingest → writer → (acks);
//! ingest (readings, device statuses) → stream → live hub → API; stream → alert sink →
//! store → live hub; API → stream (operator actions, rule changes); store → stream (the
//! registry of segments and device links, re-read every `stream.registry_refresh`);
//! ingest statuses → device status recorder (store + outbox) → stream; API → command link
//! → MQTT, ingest command acks → command link → store + outbox; outbox → webhook
//! dispatcher → receivers. No logic beyond wiring lives here.
//!
//! [`Role`]: `all` wires everything above; `ingest` all but the API (HTTP serves probes and
//! metrics), with the live bus publishing the hub's changes and taking operator actions and
//! rule changes; `api` the API with its own hub fed by the live bus, whose alert engine
//! handle sends to the bus (see `links::live_bus`).
//!
//! At start the alert engine gets its rules (the file's `[alerts]` with the changes saved
//! through the admin API, the file winning for the rules an edit of it changed; see
//! `dashboard_api::rules_at_start`, which refuses a file rule naming a road segment that
//! does not exist — checked after the store is seeded), the registry, and its saved state
//! (open alerts, timers); the restored alerts are then brought in line with the store,
//! where operators may have moved them after the last save ([`crate::alert_sink::reconcile`]).
//!
//! Shutdown is staged: ingest stops taking messages and drops its side of the writer queue;
//! the writer commits what it holds and hands back the tickets; the acker acknowledges them;
//! ingest disconnects; the stream sees its queue close, flushes its windows and queues a
//! last checkpoint; the alert sink stores everything queued and stops; the API stops last.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use dashboard_api::{AlertControl, RulesSource, StoredRules, RULES_STATE_KEY};
use ingest::{
    run_ingest, IngestConfig, IngestMetrics, IngestQueues, SubscriptionMode, UnknownDevicePolicy,
};
use store::{
    run_maintenance, run_rollup_merger, run_writer, AlertFilter, MergerConfig, MergerMetrics,
    Store, StoreError, StoreOptions, WriterConfig, WriterMetrics,
};
use stream::{
    run_stream, AlertSinkItem, DeviceProfile, Emitted, LiveHub, LiveValue, Registry, StreamCommand,
    StreamConfig, StreamCore, StreamMetrics, StreamQueues, StreamServiceConfig,
};
use telemetry::segment::{parse_geojson, FLORENCE_SEED};
use telemetry::EventTime;
use telemetry::ValidationConfig;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::alert_sink::{load_engine_state, reconcile, state_key, AlertSink};
use crate::config::{Config, Subscription, UnknownDevices};
use crate::metrics::AlertSinkMetrics;

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
    let db = &config.database;
    let r = &config.retention;
    let options = StoreOptions {
        max_connections: db.max_connections,
        timescaledb: db.timescaledb,
        write_method: db.write_method,
        reset_sessions: db.reset_sessions,
        partitions_ahead_days: db.partitions_ahead_days,
        retention: store::Retention {
            raw: r.raw,
            rollup_1m: r.rollup_1m,
            rollup_1h: r.rollup_1h,
            rollup_1d: r.rollup_1d,
        },
        compress_after: r.compress_after,
        ..StoreOptions::default()
    };
    let store = Store::connect(&config.database.url, &options)
        .await
        .context("connecting to the database (database.url)")?;
    store.migrate().await.context("applying migrations")?;
    if store.segments().await?.is_empty() {
        let text = match &config.segments.seed {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("reading segments.seed {}", p.display()))?,
            None => FLORENCE_SEED.to_owned(),
        };
        let segments = parse_geojson(&text).context("parsing segments.seed")?;
        store.upsert_segments(&segments).await?;
        tracing::info!(count = segments.len(), "seeded road segments");
    }
    Ok(store)
}

/// Segments and device links as the store holds them.
async fn load_registry(store: &Store) -> Result<Registry, StoreError> {
    let segments = store.segments().await?;
    let devices = store
        .devices()
        .await?
        .into_iter()
        .map(|d| DeviceProfile { id: d.id, kind: d.kind, segment: d.segment, interval: None })
        .collect();
    Ok(Registry { segments, devices })
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

/// Which parts of the server a process runs (docs/scale-out.md). Nothing assumes it is the only
/// replica of its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Everything in one process.
    All,
    /// MQTT ingest, the batch writer, rollups and maintenance, the stream and alert engine,
    /// device statuses, command answers, webhooks; live changes out on the live bus. HTTP
    /// serves only `/healthz`, `/readyz` and `/metrics`.
    Ingest,
    /// REST, the live websocket and the wall dashboard, commands down to devices; live
    /// state from the live bus, operator actions and rule changes back on it.
    Api,
}

impl Role {
    fn ingests(self) -> bool {
        self != Role::Api
    }
}

/// The live bus's settings for this process (its own MQTT client id).
fn bus_config(config: &Config) -> links::BusConfig {
    links::BusConfig {
        host: config.mqtt.host.clone(),
        port: config.mqtt.port,
        client_id: format!("{}-live", config.mqtt.client_id),
        username: config.mqtt.username.clone(),
        password: config.mqtt.password.clone(),
        keep_alive: config.mqtt.keep_alive,
        max_packet_bytes: 4 * 1024 * 1024,
    }
}

/// The alert rules the saved document and this process's `[alerts]` give (after a
/// replica changed them; the start is `dashboard_api::rules_at_start`).
async fn current_rules(store: &Store, config: &Config) -> Result<(StoredRules, RulesSource)> {
    let saved = store
        .load_stream_state(RULES_STATE_KEY)
        .await?
        .and_then(|v| serde_json::from_value::<StoredRules>(v).ok());
    Ok(StoredRules::choose(saved, &config.alerts, EventTime::now()))
}

/// Bring the hub's open alerts in line with the store (after the live bus was down, an
/// alert may have been moved or closed without the hub hearing of it).
async fn resync_alerts(store: &Store, hub: &LiveHub) -> Result<(), StoreError> {
    let open = store.alerts(&AlertFilter { limit: 100_000, ..AlertFilter::open() }).await?;
    let ids: HashSet<i64> = open.iter().map(|a| a.id).collect();
    for a in &open {
        hub.publish_alert(a.clone());
    }
    for held in hub.open_alerts().into_iter().filter(|a| !ids.contains(&a.id)) {
        if let Some(record) = store.alert(held.id).await? {
            hub.publish_alert(record);
        }
    }
    Ok(())
}

/// The API role's side of the live bus: resync alerts on every (re)connection, re-read
/// the rules when a replica changed them.
async fn run_api_notices(
    store: Store,
    hub: Arc<LiveHub>,
    config: Config,
    rules: Arc<tokio::sync::Mutex<StoredRules>>,
    mut notices: mpsc::Receiver<links::BusNotice>,
) {
    while let Some(notice) = notices.recv().await {
        let done = match notice {
            links::BusNotice::Connected => {
                resync_alerts(&store, &hub).await.map_err(anyhow::Error::from)
            }
            links::BusNotice::RulesChanged => match current_rules(&store, &config).await {
                Ok((stored, _)) => {
                    *rules.lock().await = stored;
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, ?notice, "live bus: cannot catch up with the store");
        }
    }
}

/// The ingest role's side of the live bus: apply rules another replica saved.
async fn run_ingest_notices(
    store: Store,
    config: Config,
    commands: mpsc::Sender<StreamCommand>,
    mut notices: mpsc::Receiver<links::BusNotice>,
) {
    while let Some(notice) = notices.recv().await {
        if notice != links::BusNotice::RulesChanged {
            continue;
        }
        let rules = match current_rules(&store, &config).await {
            Ok((stored, RulesSource::Api)) => stored.rules.validate().map_err(|e| anyhow!("{e}")),
            Ok((_, _)) => {
                tracing::warn!("alert rules changed through the API, but against another [alerts] section than this process's file; keeping the rules in force");
                continue;
            }
            Err(e) => Err(e),
        };
        match rules {
            Ok(rules) => {
                let (done, applied) = tokio::sync::oneshot::channel();
                if commands.send(StreamCommand::SetRules { rules, done }).await.is_err() {
                    return;
                }
                let _ = applied.await;
                tracing::info!("alert rules changed through the API applied");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the alert rules saved through the API")
            }
        }
    }
}

pub async fn start(config: &Config, store: Store, role: Role) -> Result<Running> {
    let hub = LiveHub::new(1_024);
    let latest = store.latest(None, None).await?;
    hub.seed(latest.into_iter().map(|v| LiveValue {
        device: v.device,
        metric: v.metric,
        time: v.time,
        value: v.value,
    }));
    let store_open = store.alerts(&AlertFilter { limit: 100_000, ..AlertFilter::open() }).await?;
    hub.seed_alerts(store_open.iter().cloned());

    // The rules: the file's `[alerts]` with the admin API's changes (see rules_at_start).
    let (rules_doc, _) = dashboard_api::rules_at_start(&store, &config.alerts).await?;
    let rule_set = rules_doc.rules.validate().map_err(|e| anyhow!("alerts: {e}"))?;
    let rules = Arc::new(tokio::sync::Mutex::new(rules_doc));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (outgoing_tx, outgoing_rx) = mpsc::channel(256);
    // One dead-letter counter: ingest refuses most, the writer those past the retention.
    let dead_letters = Arc::new(telemetry::metrics::CountsBy::default());
    let ingest_metrics =
        Arc::new(IngestMetrics { dead_letters: dead_letters.clone(), ..IngestMetrics::default() });
    let writer_metrics = Arc::new(WriterMetrics::with_dead_letters(dead_letters));
    let stream_metrics = Arc::new(StreamMetrics::default());
    let bus_metrics = Arc::new(links::BusMetrics::default());
    let command_metrics = Arc::new(links::CommandLinkMetrics::default());
    let command_link = links::CommandLinkConfig {
        host: config.mqtt.host.clone(),
        port: config.mqtt.port,
        client_id: format!("{}-commands", config.mqtt.client_id),
        username: config.mqtt.username.clone(),
        password: config.mqtt.password.clone(),
        keep_alive: config.mqtt.keep_alive,
        sweep_interval: std::time::Duration::from_secs(1),
    };
    let mut tasks: Vec<(&'static str, JoinHandle<()>)> = Vec::new();
    let mut stages = crate::metrics::Stages::default();
    stages.add(command_metrics.clone());
    let (control, readiness) = if role.ingests() {
        let metrics = (ingest_metrics.clone(), writer_metrics.clone(), stream_metrics.clone());
        let side =
            start_ingest(config, &store, &hub, rule_set, store_open, metrics, shutdown_rx.clone())
                .await?;
        let bus = role == Role::Ingest;
        // Commands are published where the API runs; answers are read where ingest runs.
        let outgoing = (!bus).then_some(outgoing_rx);
        tasks.extend(links::run_commands(
            command_link,
            store.clone(),
            outgoing,
            Some(side.command_acks),
            command_metrics,
            shutdown_rx.clone(),
        ));
        if bus {
            let (notices_tx, notices_rx) = mpsc::channel(16);
            tasks.extend(links::run_ingest_bus(
                bus_config(config),
                hub.clone(),
                side.commands.clone(),
                notices_tx,
                bus_metrics.clone(),
                shutdown_rx.clone(),
            ));
            tasks.push((
                "bus notices",
                tokio::spawn(run_ingest_notices(
                    store.clone(),
                    config.clone(),
                    side.commands.clone(),
                    notices_rx,
                )),
            ));
        }
        tasks.extend(side.tasks);
        stages.extend(side.collectors);
        if bus {
            stages.add(bus_metrics);
        }
        let broker = side.ingest_metrics.clone();
        let (writer, stall_after) = (writer_metrics.clone(), config.writer.stall_after);
        let readiness: dashboard_api::Readiness = Arc::new(move || {
            vec![
                (
                    "broker",
                    broker_check(broker.connected.load(std::sync::atomic::Ordering::Relaxed)),
                ),
                ("writer", writer_check(writer.oldest_pending_age(), stall_after)),
            ]
        });
        let control = AlertControl { commands: side.commands, rules: rules.clone() };
        (control, readiness)
    } else {
        let (commands_tx, commands_rx) = mpsc::channel(256);
        let (notices_tx, notices_rx) = mpsc::channel(16);
        tasks.extend(links::run_api_bus(
            bus_config(config),
            hub.clone(),
            commands_rx,
            notices_tx,
            bus_metrics.clone(),
            shutdown_rx.clone(),
        ));
        tasks.push((
            "bus notices",
            tokio::spawn(run_api_notices(
                store.clone(),
                hub.clone(),
                config.clone(),
                rules.clone(),
                notices_rx,
            )),
        ));
        tasks.extend(links::run_commands(
            command_link,
            store.clone(),
            Some(outgoing_rx),
            None,
            command_metrics,
            shutdown_rx.clone(),
        ));
        stages.add(bus_metrics.clone());
        let b = bus_metrics.clone();
        let readiness: dashboard_api::Readiness = Arc::new(move || {
            vec![("broker", broker_check(b.connected.load(std::sync::atomic::Ordering::Relaxed)))]
        });
        (AlertControl { commands: commands_tx, rules: rules.clone() }, readiness)
    };

    let listen = config.api.listen_addrs().map_err(|e| anyhow!("api.listen: {e}"))?;
    let listener = tokio::net::TcpListener::bind(listen.as_slice())
        .await
        .with_context(|| format!("binding api.listen {}", config.api.listen))?;
    let api_addr = listener.local_addr()?;
    // Broker provisioning of device credentials: where the API runs.
    let provisioning = match config.provisioning.dynsec(&config.mqtt) {
        Some(dynsec) if role != Role::Ingest => {
            let (p, t) = links::provisioning::start(dynsec, store.clone(), shutdown_rx.clone());
            tasks.extend(t);
            p
        }
        _ if config.provisioning.mode == links::provisioning::ProvisioningMode::None => {
            links::provisioning::Provisioning::None
        }
        _ => links::provisioning::Provisioning::PasswordFile,
    };
    if let Some(m) = provisioning.metrics() {
        stages.add(m);
    }
    let mut state = dashboard_api::AppState::new(store.clone(), hub.clone());
    let http_metrics = state.http.clone();
    state.max_shelve = config.alerts.max_shelve;
    let mut registry = crate::metrics::registry();
    stages.register(&mut registry);
    state.set_metrics(registry);
    state.provisioning = provisioning;
    state.readiness = Some(readiness);
    state.wall = Arc::new(
        config
            .wall
            .settings()
            .map_err(|errors| anyhow::anyhow!("invalid configuration: {}", errors.join("; ")))?,
    );
    let router = if role == Role::Ingest {
        dashboard_api::probes(state)
    } else {
        if let Some(token) = &config.api.bootstrap_admin_token {
            ensure_bootstrap_admin(&store, token).await?;
        }
        state.alerts = Some(control);
        state.auth =
            dashboard_api::auth::Auth::with_failure_limit(config.api.auth_failures_per_minute);
        dashboard_api::app(state)
            .layer(axum::Extension(dashboard_api::commands::CommandOutlet(outgoing_tx)))
            .layer(axum::Extension(dashboard_api::webhooks::WebhookSettings {
                default_format: config.webhooks.payload,
                destinations: Arc::new(config.webhooks.destinations()?),
            }))
    };
    let limits = dashboard_api::server::ServerLimits {
        header_timeout: config.api.header_timeout,
        request_timeout: config.api.request_timeout,
        max_connections: config.api.max_connections,
    };
    let (api_stop, mut api_stop_rx) = watch::channel(false);
    let api = tokio::spawn(dashboard_api::server::serve(
        listener,
        router,
        limits,
        http_metrics,
        async move {
            let _ = api_stop_rx.wait_for(|stop| *stop).await;
        },
    ));
    tracing::info!(%api_addr, ?role, backend = store.backend(), "SCCR running");
    Ok(Running {
        api_addr,
        store,
        ingest_metrics,
        writer_metrics,
        stream_metrics,
        shutdown: shutdown_tx,
        tasks,
        api,
        api_stop,
    })
}

fn broker_check(connected: bool) -> Result<(), dashboard_api::NotReady> {
    if connected {
        Ok(())
    } else {
        Err(dashboard_api::NotReady {
            code: "broker_unreachable",
            message: "broker unreachable".to_owned(),
        })
    }
}

/// Not ready while the oldest batch not yet committed is older than `writer.stall_after`:
/// the database blocks or refuses writes, and nothing is being acknowledged.
fn writer_check(
    oldest_pending: std::time::Duration,
    stall_after: std::time::Duration,
) -> Result<(), dashboard_api::NotReady> {
    if oldest_pending <= stall_after {
        return Ok(());
    }
    Err(dashboard_api::NotReady {
        code: "writer_stalled",
        message: format!(
            "writer stalled: the oldest uncommitted batch is {:.1} s old (writer.stall_after = {})",
            oldest_pending.as_secs_f64(),
            humantime::format_duration(stall_after)
        ),
    })
}

/// Name of the admin token made from `api.bootstrap_admin_token`.
pub const BOOTSTRAP_ADMIN: &str = "bootstrap-admin";

/// Make `token` the one live bootstrap admin token: a new one revokes the previous, so
/// rotating the secret (or a fresh `sccr demo` token) leaves no forgotten admin behind.
pub async fn ensure_bootstrap_admin(store: &Store, token: &str) -> Result<()> {
    let digest = dashboard_api::auth::token_digest(token);
    let revoked =
        store.ensure_sole_token(BOOTSTRAP_ADMIN, "admin", &digest, EventTime::now()).await?;
    if revoked > 0 {
        tracing::info!(revoked, "previous bootstrap admin token revoked");
    }
    Ok(())
}

/// What the ingest side started.
struct IngestSide {
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    commands: mpsc::Sender<StreamCommand>,
    command_acks: mpsc::Receiver<(telemetry::DeviceId, telemetry::command::CommandAck)>,
    collectors: crate::metrics::Stages,
    ingest_metrics: Arc<IngestMetrics>,
}

/// Start ingest, the writer, rollups and maintenance, the stream and alert engine, device
/// statuses and webhooks (SCCR's pipeline without its API).
#[allow(clippy::too_many_arguments)]
async fn start_ingest(
    config: &Config,
    store: &Store,
    hub: &Arc<LiveHub>,
    rule_set: stream::RuleSet,
    store_open: Vec<store::AlertRecord>,
    metrics: (Arc<IngestMetrics>, Arc<WriterMetrics>, Arc<StreamMetrics>),
    shutdown_rx: watch::Receiver<bool>,
) -> Result<IngestSide> {
    let (ingest_metrics, writer_metrics, stream_metrics) = metrics;
    let known: HashSet<_> = store.devices().await?.into_iter().map(|d| d.id).collect();
    // The alert engine: rules, registry, saved state, reconciled with the store.
    let stream_config = StreamConfig {
        window: config.stream.window,
        watermark_delay: config.stream.watermark_delay,
        allowed_lateness: config.stream.allowed_lateness,
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
    let service = StreamServiceConfig {
        checkpoint_interval: config.stream.state_save_interval,
        checkpoint_lost,
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
        MergerConfig { interval: config.database.rollup_merge_interval, ..MergerConfig::default() },
        shutdown_rx.clone(),
        merger_metrics.clone(),
    ));
    let maintenance = tokio::spawn(run_maintenance(
        store.clone(),
        config.database.maintenance_interval,
        shutdown_rx.clone(),
    ));
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
    .collect();
    Ok(IngestSide { tasks, commands: command_tx, command_acks, collectors, ingest_metrics })
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
