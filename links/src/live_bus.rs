//! The live bus between server roles (docs/scale-out.md): `sccr serve --role ingest` runs the
//! stream and publishes every change of its [`LiveHub`] on [`LIVE_TOPIC`]; any number of
//! `sccr serve --role api` replicas subscribe and apply the changes to their own hub, from
//! which their websocket sessions fan out as in one process. Operator actions, rule
//! changes and snapshot requests go the other way on [`CONTROL_TOPIC`].
//!
//! Ingest side ([`run_ingest_bus`]): the publisher is one more hub subscriber, with a
//! larger queue than a screen's, so values are conflated to the latest per key while the
//! broker is slow, and a queue that overflows turns into a snapshot (never unbounded
//! memory). Every (re)connection, and every `snapshot_request` from an API replica,
//! publishes a snapshot of what the hub holds (values, segment states, open alerts).
//!
//! API side ([`run_api_bus`]): applies batches to the hub; on every (re)connection asks
//! for snapshots and tells the composition root ([`BusNotice::Connected`]) so it can
//! bring open alerts in line with the store, which a snapshot cannot do for alerts that
//! closed in between. The alert engine's commands (`StreamCommand`) become control
//! messages: an operator's acknowledgement or clear (the store already took it) reaches
//! every ingest replica's engine, whose hub forwards the stored alert to every API
//! replica; a rules change (saved in the store) makes every replica re-read the rules.
//!
//! Messages are JSON with a version (`v`), QoS 1, at most [`MAX_VALUES_PER_MESSAGE`]
//! values each. A message that does not decode is counted and skipped.
//!
//! The messages and their encoding are in `messages`; the two sides are here.

mod messages;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mqtt_client::{Client as AsyncClient, Event, EventLoop, Options, Protocol, QoS};
use stream::{LiveHub, StreamCommand, SubscriptionFilter};
use telemetry::metrics::{self, Collector, Encoder};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

pub use messages::{BusError, BusStatus, ControlMessage, LiveBatch};

/// Changes of the stream's live state, from ingest replicas to API replicas.
pub const LIVE_TOPIC: &str = "sccr/v1/live/events";
/// Operator actions, rule changes and snapshot requests, from API replicas.
pub const CONTROL_TOPIC: &str = "sccr/v1/control";
/// The message format's version.
pub const VERSION: u8 = 1;
/// Most values in one live message (about 200 KiB of JSON).
pub const MAX_VALUES_PER_MESSAGE: usize = 2_000;
/// Most events (windows, segment states, alerts, statuses) in one live message.
pub const MAX_EVENTS_PER_MESSAGE: usize = 1_000;
/// The ingest side's hub queue: events before a snapshot replaces them (values: 16×).
pub const PUBLISHER_QUEUE: usize = 65_536;

/// What the bus tells the composition root.
#[derive(Debug, Clone, PartialEq)]
pub enum BusNotice {
    /// (Re)connected to the broker: the live state may have missed changes.
    Connected,
    /// The alert rules in the store changed.
    RulesChanged,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BusConfig {
    /// The protocol of `[mqtt]`.
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    /// Other nodes of the broker's cluster, tried in turn when the connection fails.
    pub failover: Vec<(String, u16)>,
    /// Unique per process (a replica's MQTT client id plus `-live`).
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    /// Largest MQTT packet (a snapshot message of 2,000 values is about 200 KiB).
    pub max_packet_bytes: u32,
}

#[derive(Debug, Default)]
pub struct BusMetrics {
    pub connected: AtomicBool,
    pub connections: AtomicU64,
    pub messages_out: AtomicU64,
    pub messages_in: AtomicU64,
    pub values_out: AtomicU64,
    pub values_in: AtomicU64,
    pub snapshots_out: AtomicU64,
    pub control_out: AtomicU64,
    pub control_in: AtomicU64,
    pub decode_errors: AtomicU64,
    pub publish_errors: AtomicU64,
}

impl BusMetrics {
    /// Count and log a bus message that did not decode.
    fn skipped(&self, e: &BusError, what: &str) {
        self.decode_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "live bus: {what} skipped");
    }
}

impl Collector for BusMetrics {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let e = &mut e;
        metrics::flag(
            e,
            "bus_connected",
            "1 while the live bus's broker connection is up.",
            self.connected.load(Ordering::Relaxed),
        )?;
        let counters = [
            ("bus_connections", "Live bus connections to the broker.", &self.connections),
            ("bus_messages_out", "Live messages published.", &self.messages_out),
            ("bus_messages_in", "Live messages applied.", &self.messages_in),
            ("bus_values_out", "Values published on the live bus.", &self.values_out),
            ("bus_values_in", "Values taken from the live bus.", &self.values_in),
            ("bus_snapshots_out", "Snapshots of the live state published.", &self.snapshots_out),
            ("bus_control_out", "Control messages published.", &self.control_out),
            ("bus_control_in", "Control messages taken.", &self.control_in),
            (
                "bus_decode_errors",
                "Bus messages skipped because they did not decode.",
                &self.decode_errors,
            ),
            (
                "bus_publish_errors",
                "Bus messages that could not be handed to the client.",
                &self.publish_errors,
            ),
        ];
        for (name, help, value) in counters {
            metrics::counter(e, name, help, value.load(Ordering::Relaxed))?;
        }
        Ok(())
    }
}

fn client(config: &BusConfig) -> (AsyncClient, EventLoop) {
    let mut opts =
        Options::new(config.protocol, config.client_id.clone(), config.host.clone(), config.port);
    opts.keep_alive = config.keep_alive;
    opts.failover = config.failover.clone();
    opts.clean_start = true;
    opts.max_packet_size = Some(config.max_packet_bytes);
    if let (Some(u), Some(p)) = (&config.username, &config.password) {
        opts.credentials = Some((u.clone(), p.clone()));
    }
    mqtt_client::new_client(&opts, 256)
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// The bus's MQTT connection.
struct Connection {
    client: AsyncClient,
    /// What arrives on its topics, with whether it is a control message.
    incoming: mpsc::Receiver<(bool, bytes::Bytes)>,
    /// Notified at every (re)connection.
    connected: Arc<Notify>,
    /// The task driving it.
    driver: JoinHandle<()>,
}

/// The bus's connection subscribed to `topics`.
fn connect(
    config: &BusConfig,
    topics: &'static [&'static str],
    metrics: &Arc<BusMetrics>,
    shutdown: &watch::Receiver<bool>,
) -> Connection {
    let (client, eventloop) = client(config);
    let (incoming_tx, incoming) = mpsc::channel(64);
    let connected = Arc::new(Notify::new());
    let driver = tokio::spawn(drive(
        client.clone(),
        eventloop,
        topics,
        incoming_tx,
        connected.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    Connection { client, incoming, connected, driver }
}

/// Poll the event loop: subscribe to `topics` on every connection, hand incoming messages
/// on them to `incoming` (with whether they are control messages), and `connected` on
/// every (re)connection.
async fn drive(
    client: AsyncClient,
    mut eventloop: EventLoop,
    topics: &'static [&'static str],
    incoming: mpsc::Sender<(bool, bytes::Bytes)>,
    connected: Arc<Notify>,
    metrics: Arc<BusMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::ConnAck { .. }) => {
                    metrics.connected.store(true, Ordering::Relaxed);
                    metrics.connections.fetch_add(1, Ordering::Relaxed);
                    for topic in topics {
                        if let Err(e) = client.try_subscribe(*topic, QoS::AtLeastOnce) {
                            tracing::warn!(error = %e, topic, "live bus: cannot subscribe");
                        }
                    }
                    connected.notify_one();
                }
                Ok(Event::Publish(p)) => {
                    let control = p.topic == CONTROL_TOPIC;
                    // Bounded: a slow consumer holds the event loop, and the broker holds
                    // the rest (QoS 1), rather than this process growing.
                    if incoming.send((control, p.payload)).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    metrics.connected.store(false, Ordering::Relaxed);
                    if *shutdown.borrow() {
                        break;
                    }
                    tracing::warn!(error = %e, "live bus: broker connection failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = stopped(&mut shutdown) => break,
                    }
                }
            },
            () = stopped(&mut shutdown) => break,
        }
    }
    metrics.connected.store(false, Ordering::Relaxed);
}

async fn publish(
    client: &AsyncClient,
    topic: &str,
    payload: Vec<u8>,
    metrics: &BusMetrics,
) -> bool {
    match client.publish(topic, QoS::AtLeastOnce, false, payload).await {
        Ok(()) => true,
        Err(e) => {
            metrics.publish_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "live bus: cannot publish");
            false
        }
    }
}

async fn publish_batches(client: &AsyncClient, batches: Vec<LiveBatch>, metrics: &BusMetrics) {
    for b in batches.into_iter().filter(|b| !b.is_empty()) {
        let values = b.values.len() as u64;
        if publish(client, LIVE_TOPIC, b.encode(), metrics).await {
            metrics.messages_out.fetch_add(1, Ordering::Relaxed);
            metrics.values_out.fetch_add(values, Ordering::Relaxed);
        }
    }
}

/// The ingest side: publish the hub's changes; take control messages (operator actions go
/// to `commands` and to the hub, rule changes to `notices`).
pub fn run_ingest_bus(
    config: BusConfig,
    hub: Arc<LiveHub>,
    commands: mpsc::Sender<StreamCommand>,
    notices: mpsc::Sender<BusNotice>,
    metrics: Arc<BusMetrics>,
    shutdown: watch::Receiver<bool>,
) -> Vec<(&'static str, JoinHandle<()>)> {
    let Connection { client, mut incoming, connected, driver } =
        connect(&config, &[CONTROL_TOPIC], &metrics, &shutdown);
    let snapshot_wanted = Arc::new(Notify::new());
    let control = {
        let (hub, metrics, snapshot_wanted) =
            (hub.clone(), metrics.clone(), snapshot_wanted.clone());
        tokio::spawn(async move {
            while let Some((_, payload)) = incoming.recv().await {
                match ControlMessage::decode(&payload) {
                    Ok(message) => {
                        metrics.control_in.fetch_add(1, Ordering::Relaxed);
                        match message {
                            ControlMessage::SnapshotRequest => snapshot_wanted.notify_one(),
                            ControlMessage::RulesChanged => {
                                let _ = notices.send(BusNotice::RulesChanged).await;
                            }
                            ControlMessage::Operator { action, key, by, note, at, alert } => {
                                hub.publish_alert((*alert).clone());
                                let command =
                                    StreamCommand::Operator { action, key, by, note, at, alert };
                                if commands.send(command).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => metrics.skipped(&e, "control message"),
                }
            }
        })
    };
    let origin = config.client_id.clone();
    let mut stop = shutdown;
    let publisher = tokio::spawn(async move {
        let all = SubscriptionFilter {
            segments: Some(Default::default()),
            alerts: true,
            statuses: true,
            ..SubscriptionFilter::default()
        };
        let sub = hub.subscribe_with_capacity(all, PUBLISHER_QUEUE);
        let mut counted = hub.readings_applied();
        loop {
            let snapshot = tokio::select! {
                () = sub.ready() => false,
                () = connected.notified() => true,
                () = snapshot_wanted.notified() => true,
                () = stopped(&mut stop) => break,
            };
            let pending = sub.take();
            let applied = hub.readings_applied();
            let readings = applied - counted;
            counted = applied;
            if snapshot || pending.lagged {
                metrics.snapshots_out.fetch_add(1, Ordering::Relaxed);
                let mut batches = LiveBatch::snapshot(&origin, &hub);
                batches.push(LiveBatch { readings, ..LiveBatch::new(&origin, false) });
                publish_batches(&client, batches, &metrics).await;
            } else {
                publish_batches(
                    &client,
                    LiveBatch::from_pending(&origin, pending, readings),
                    &metrics,
                )
                .await;
            }
        }
        let _ = client.disconnect().await;
    });
    vec![("live bus", driver), ("live bus control", control), ("live bus publisher", publisher)]
}

/// The API side: apply live messages to `hub`; publish the alert engine's `commands` as
/// control messages; tell the composition root of (re)connections and rule changes.
pub fn run_api_bus(
    config: BusConfig,
    hub: Arc<LiveHub>,
    mut commands: mpsc::Receiver<StreamCommand>,
    notices: mpsc::Sender<BusNotice>,
    metrics: Arc<BusMetrics>,
    shutdown: watch::Receiver<bool>,
) -> Vec<(&'static str, JoinHandle<()>)> {
    let Connection { client, mut incoming, connected, driver } =
        connect(&config, &[LIVE_TOPIC, CONTROL_TOPIC], &metrics, &shutdown);
    let applier = {
        let (metrics, notices) = (metrics.clone(), notices.clone());
        tokio::spawn(async move {
            while let Some((control, payload)) = incoming.recv().await {
                if control {
                    // Another API replica changed the rules (operator actions come back
                    // from ingest on the live topic; snapshot requests are for ingest).
                    match ControlMessage::decode(&payload) {
                        Ok(ControlMessage::RulesChanged) => {
                            metrics.control_in.fetch_add(1, Ordering::Relaxed);
                            let _ = notices.send(BusNotice::RulesChanged).await;
                        }
                        Ok(_) => {}
                        Err(e) => metrics.skipped(&e, "control message"),
                    }
                    continue;
                }
                match LiveBatch::decode(&payload) {
                    Ok(batch) => {
                        metrics.messages_in.fetch_add(1, Ordering::Relaxed);
                        metrics.values_in.fetch_add(batch.values.len() as u64, Ordering::Relaxed);
                        batch.apply(&hub);
                    }
                    Err(e) => metrics.skipped(&e, "message"),
                }
            }
        })
    };
    let mut stop = shutdown;
    let controller = tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                () = connected.notified() => {
                    let _ = notices.send(BusNotice::Connected).await;
                    ControlMessage::SnapshotRequest
                }
                command = commands.recv() => match command {
                    Some(StreamCommand::Operator { action, key, by, note, at, alert }) => {
                        ControlMessage::Operator { action, key, by, note, at, alert }
                    }
                    Some(StreamCommand::SetRules { done, .. }) => {
                        // The rules are saved in the store; every replica re-reads them
                        // (this one too: the message comes back to it).
                        let _ = done.send(());
                        ControlMessage::RulesChanged
                    }
                    Some(StreamCommand::Registry(_) | StreamCommand::Baselines(_)) => continue,
                    None => break,
                },
                () = stopped(&mut stop) => break,
            };
            if publish(&client, CONTROL_TOPIC, message.encode(), &metrics).await {
                metrics.control_out.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _ = client.disconnect().await;
    });
    vec![("live bus", driver), ("live bus applier", applier), ("live bus control", controller)]
}
