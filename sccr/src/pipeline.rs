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
//!
//! The ingest side (ingest, writer, rollups, stream and alert engine, device statuses,
//! webhooks) is started in `ingest_side`; the roles, the API side and shutdown are here.

mod affinity;
mod ingest_side;

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use dashboard_api::{AlertControl, RulesSource, StoredRules, RULES_STATE_KEY};
use ingest::IngestMetrics;
use store::{AlertFilter, Store, StoreError, StoreOptions, WriterMetrics};
use stream::{LiveHub, LiveValue, StreamCommand, StreamMetrics};
use telemetry::segment::{parse_geojson, FLORENCE_SEED};
use telemetry::EventTime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use ingest_side::start_ingest;

pub struct Running {
    pub api_addr: std::net::SocketAddr,
    pub store: Store,
    pub ingest_metrics: Arc<IngestMetrics>,
    pub writer_metrics: Arc<WriterMetrics>,
    pub stream_metrics: Arc<StreamMetrics>,
    /// Tells the baseline refresher to learn every slot again now (after history was
    /// written behind its mark, as the demo's back-fill does).
    pub relearn_baselines: Arc<tokio::sync::Notify>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    api: JoinHandle<()>,
    api_stop: watch::Sender<bool>,
}

/// The store, migrated, seeded with the road segments of `segments.seed` (or the
/// Florence seed) when it has none.
pub async fn open_store(config: &Config) -> Result<Store> {
    let store = connect_store(config).await?;
    if store.segments().await?.is_empty() && store.retired_segments().await?.is_empty() {
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

/// The store, migrated, as it is (no seed).
pub async fn connect_store(config: &Config) -> Result<Store> {
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
        failover_urls: db.failover_urls.clone(),
        failover_probe_interval: db.failover_probe_interval,
        ..StoreOptions::default()
    };
    let store = Store::connect(&config.database.url, &options)
        .await
        .context("connecting to the database (database.url)")?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
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
        protocol: config.mqtt.protocol,
        host: config.mqtt.host.clone(),
        failover: config.mqtt.failover_brokers(),
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
    // One dead-letter counter: ingest refuses most, the writer those past the retention;
    // every reason is exposed from the start, at zero.
    let dead_letters = Arc::new(telemetry::metrics::CountsBy::with_keys(
        telemetry::contract::DEAD_LETTER_REASONS.iter().map(|r| r.code),
    ));
    let ingest_metrics =
        Arc::new(IngestMetrics { dead_letters: dead_letters.clone(), ..IngestMetrics::default() });
    let writer_metrics = Arc::new(WriterMetrics::with_dead_letters(dead_letters));
    let stream_metrics = Arc::new(StreamMetrics::default());
    let bus_metrics = Arc::new(links::BusMetrics::default());
    let command_metrics = Arc::new(links::CommandLinkMetrics::default());
    let command_link = links::CommandLinkConfig {
        protocol: config.mqtt.protocol,
        host: config.mqtt.host.clone(),
        failover: config.mqtt.failover_brokers(),
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
    let relearn_baselines = Arc::new(tokio::sync::Notify::new());
    let mut partitions = None;
    let (control, readiness) = if role.ingests() {
        let metrics = (ingest_metrics.clone(), writer_metrics.clone(), stream_metrics.clone());
        let side = start_ingest(
            config,
            &store,
            &hub,
            rule_set,
            store_open,
            metrics,
            relearn_baselines.clone(),
            shutdown_rx.clone(),
        )
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
        let affinity = side.affinity.clone();
        partitions = affinity.clone().map(|a| {
            Arc::new(move || a.owned().into_iter().collect::<Vec<u16>>())
                as Arc<dyn Fn() -> Vec<u16> + Send + Sync>
        });
        let readiness: dashboard_api::Readiness = Arc::new(move || {
            // A replica owning no partition has no broker session to be connected on.
            let idle = affinity.as_ref().is_some_and(|a| a.owned().is_empty());
            let connected = broker.connected.load(std::sync::atomic::Ordering::Relaxed);
            vec![
                ("broker", broker_check(connected || idle)),
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
    if let Some(failover) = store.failover() {
        stages.add(failover);
    }
    if let Some(url) = &config.database.read_url {
        let reads = store::replica::Reads::with_replica(
            store.clone(),
            url,
            config.database.max_read_lag,
            config.database.max_connections,
        )
        .context("database.read_url")?;
        if let Some(m) = reads.metrics() {
            stages.add(m);
        }
        if let Some(probe) = reads.spawn_probe(shutdown_rx.clone()) {
            tasks.push(("read replica probe", probe));
        }
        state.reads = reads;
    }
    let http_metrics = state.http.clone();
    state.max_shelve = config.alerts.max_shelve;
    state.operation_point_distance_m = config.cadastre.operation_point_distance_m;
    state.baselines =
        dashboard_api::baselines::BaselineSettings { clock: config.baselines.clock() };
    let mut registry = crate::metrics::registry();
    stages.register(&mut registry);
    state.set_metrics(registry);
    state.provisioning = provisioning;
    state.readiness = Some(readiness);
    state.partitions = partitions;
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
        relearn_baselines,
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
