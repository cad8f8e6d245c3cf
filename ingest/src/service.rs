//! The ingest driver: the MQTT event loop, the hand-off to the writer, and the acker.
//!
//! Telemetry and device status topics are subscribed. A status message (retained by the
//! broker, and the devices' Last Will) is decoded and handed to the stream on its bounded
//! status queue; it is then acknowledged through the same path as telemetry (an empty
//! write item whose ticket the writer hands back), so its PUBACK never precedes the
//! hand-off. Acking once the stream has it, rather than once something is durable, is
//! enough: the broker keeps the last status of every device retained, and the alert
//! engine's checkpoints carry what it made of it. A bad status payload becomes a dead
//! letter like bad telemetry. Devices' answers to commands (`…/commands/ack`) take the same
//! path to the command link's queue.
//!
//! Staged shutdown: on the shutdown signal ingest stops taking publishes (those that
//! arrive stay unacknowledged and are redelivered to the next session), drops its side of
//! the writer queue so the writer flushes and commits what it holds, keeps polling the
//! connection while the acker sends the last acknowledgements, then disconnects.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mqtt_client::{Client, Event, EventLoop, Message, Options, QoS};
use store::WriteItem;
use telemetry::command::CommandAck;
use telemetry::metrics::{self, Collector, CountsBy, Encoder};
use telemetry::{DeviceId, EventTime, Reading, StatusEvent, TopicKind, Validator};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::{IngestConfig, SubscriptionMode};
use crate::process::{process_command_ack, process_publish, process_status, topic_kind, Processed};

/// Proof that a message is pending durable commit. Handing it back to the acker after the
/// commit acknowledges the MQTT packet; dropping it releases the message's share of the
/// reading budget without acknowledging anything.
#[derive(Debug)]
pub struct AckToken {
    pkid: u16,
    qos: QoS,
    generation: u64,
    _budget: OwnedSemaphorePermit,
}

/// Counters of ingest, read by `/metrics` and benchmarks.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    pub messages: AtomicU64,
    pub readings: AtomicU64,
    /// Messages and readings refused, by reason: the process's one dead-letter counter,
    /// shared with the writer (which refuses readings older than the raw retention).
    pub dead_letters: Arc<CountsBy>,
    pub acks: AtomicU64,
    /// Acks not sent because the connection they belonged to is gone (the broker redelivers).
    pub stale_acks: AtomicU64,
    pub connections: AtomicU64,
    pub connection_errors: AtomicU64,
    /// Readings not shown live because the stream queue was full (they are still stored).
    pub live_dropped: AtomicU64,
    /// Device status messages handed to the stream.
    pub statuses: AtomicU64,
    /// Devices' answers to commands handed to the command link.
    pub command_acks: AtomicU64,
    /// QoS 0 messages dropped because the hand-off to the handler was full.
    pub qos0_shed: AtomicU64,
    /// QoS 1 messages the broker sent beyond our receive maximum (the event loop waited).
    pub window_overruns: AtomicU64,
    /// Messages of other partitions' devices acknowledged unprocessed (device affinity).
    pub foreign_acked: AtomicU64,
    /// Whether the broker connection is up now.
    pub connected: std::sync::atomic::AtomicBool,
}

impl Collector for IngestMetrics {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let e = &mut e;
        metrics::counter(
            e,
            "ingest_messages",
            "MQTT messages taken by ingest.",
            get(&self.messages),
        )?;
        metrics::counter(e, "ingest_readings", "Valid readings decoded.", get(&self.readings))?;
        metrics::counter(
            e,
            "ingest_acks",
            "MQTT acknowledgements sent after commit.",
            get(&self.acks),
        )?;
        metrics::counter(
            e,
            "ingest_stale_acks",
            "Acks skipped because their connection was gone (the broker redelivers).",
            get(&self.stale_acks),
        )?;
        metrics::counter(
            e,
            "ingest_connections",
            "Connections to the broker.",
            get(&self.connections),
        )?;
        metrics::counter(
            e,
            "ingest_connection_errors",
            "Broker connection failures.",
            get(&self.connection_errors),
        )?;
        metrics::counter(
            e,
            "ingest_live_dropped",
            "Readings not shown live because the stream queue was full (they are stored).",
            get(&self.live_dropped),
        )?;
        metrics::counter(
            e,
            "ingest_statuses",
            "Device status messages handed to the stream.",
            get(&self.statuses),
        )?;
        metrics::counter(
            e,
            "ingest_command_acks",
            "Devices' answers to commands handed to the command link.",
            get(&self.command_acks),
        )?;
        metrics::counter(
            e,
            "ingest_qos0_shed",
            "QoS 0 messages dropped because ingest's hand-off queue was full.",
            get(&self.qos0_shed),
        )?;
        metrics::counter(
            e,
            "ingest_window_overruns",
            "QoS 1 messages the broker sent beyond ingest's receive maximum.",
            get(&self.window_overruns),
        )?;
        metrics::counter(
            e,
            "ingest_foreign_acked",
            "Messages of other partitions' devices acknowledged unprocessed (device affinity).",
            get(&self.foreign_acked),
        )?;
        self.dead_letters.encode(
            e,
            "dead_letters",
            "Messages and readings refused, by reason (ingest's and the writer's).",
            "reason",
        )?;
        metrics::flag(
            e,
            "mqtt_connected",
            "1 while ingest's broker connection is up.",
            self.connected.load(Ordering::Relaxed),
        )
    }
}

pub struct IngestHandles {
    pub ingest: JoinHandle<()>,
    pub acker: JoinHandle<()>,
    /// The reading budget: permits in use are readings between the broker and the commit.
    pub budget: Arc<Semaphore>,
}

fn mqtt_options(config: &IngestConfig) -> Options {
    let mut opts =
        Options::new(config.protocol, config.client_id.clone(), config.host.clone(), config.port);
    opts.keep_alive = config.keep_alive;
    opts.failover = config.failover.clone();
    opts.clean_start = false;
    opts.session_expiry = Some(config.session_expiry);
    opts.receive_maximum = Some(config.receive_maximum);
    opts.max_packet_size = Some(config.max_packet_size);
    opts.manual_acks = true;
    // Ingest publishes nothing; rumqttc would otherwise preallocate an outgoing in-flight
    // table sized by the broker's receive maximum (up to 65,535 slots).
    opts.outgoing_inflight = 16;
    if let (Some(u), Some(p)) = (&config.username, &config.password) {
        opts.credentials = Some((u.clone(), p.clone()));
    }
    opts
}

/// The queues ingest feeds and reads.
pub struct IngestQueues {
    /// Messages to store (readings, dead letters) with their ack tickets.
    pub writer: mpsc::Sender<WriteItem<AckToken>>,
    /// Readings for the stream (`try_send`: the live view may drop, the store does not).
    pub live: mpsc::Sender<Vec<Reading>>,
    /// Device status messages for the stream.
    pub statuses: mpsc::Sender<StatusEvent>,
    /// Devices' answers to commands, for the command link; `None`: not subscribed.
    pub command_acks: Option<mpsc::Sender<(DeviceId, CommandAck)>>,
    /// Tickets of committed batches, from the writer.
    pub committed: mpsc::Receiver<Vec<AckToken>>,
    /// The acker's queue (`committed`'s sender), for the tickets of messages of other
    /// partitions, acknowledged unprocessed; needed with `IngestConfig::partition`.
    pub direct_acks: Option<mpsc::Sender<Vec<AckToken>>>,
}

/// Start ingest.
pub fn run_ingest(
    config: IngestConfig,
    queues: IngestQueues,
    known: HashSet<DeviceId>,
    metrics: Arc<IngestMetrics>,
    shutdown: watch::Receiver<bool>,
) -> IngestHandles {
    let IngestQueues { writer, live, statuses, command_acks, committed, direct_acks } = queues;
    // The request channel (its capacity is this argument; rumqttc's v5 option of that name is
    // unused) carries acks: room for one per message the broker may have in flight to us.
    let (client, eventloop) =
        mqtt_client::new_client(&mqtt_options(&config), usize::from(config.receive_maximum) + 64);
    let generation = Arc::new(AtomicU64::new(0));
    let (acks_done_tx, acks_done_rx) = oneshot::channel();
    let acker = tokio::spawn(
        run_acker(client.clone(), committed, generation.clone(), metrics.clone(), acks_done_tx)
            .instrument(tracing::info_span!("acker")),
    );
    let budget = Arc::new(Semaphore::new(config.max_pending_readings.max(1)));
    let handler = Handler {
        budget: budget.clone(),
        validator: Validator::new(config.validation.clone()),
        config: config.clone(),
        writer,
        live,
        statuses,
        command_acks: command_acks.clone(),
        direct_acks,
        known,
        metrics: metrics.clone(),
    };
    let driver =
        Driver { config, client, metrics, generation, command_acks: command_acks.is_some() };
    let ingest = tokio::spawn(
        driver
            .run(eventloop, handler, shutdown, acks_done_rx)
            .instrument(tracing::info_span!("ingest")),
    );
    IngestHandles { ingest, acker, budget }
}

/// Owns the MQTT event loop and polls it without pause, so keep-alive pings, their
/// answers and the acker's PUBACKs flow however slow the writer is. Publishes go to the
/// [`Handler`] through a queue stamped with their connection's generation. The broker sends
/// at most `receive_maximum` unacknowledged QoS 1 messages, so the queue always has room
/// for those; QoS 0 messages only take room beyond that and are shed (counted) when the
/// handler is behind.
struct Driver {
    config: IngestConfig,
    client: Client,
    metrics: Arc<IngestMetrics>,
    generation: Arc<AtomicU64>,
    command_acks: bool,
}

/// The room in the hand-off queue beyond the broker's in-flight window (for QoS 0).
const QOS0_ROOM: usize = 256;

impl Driver {
    async fn run(
        self,
        mut eventloop: EventLoop,
        handler: Handler,
        mut shutdown: watch::Receiver<bool>,
        mut acks_done: oneshot::Receiver<()>,
    ) {
        let window = usize::from(self.config.receive_maximum);
        let (publishes, queued) = mpsc::channel(window + QOS0_ROOM);
        let mut handler = tokio::spawn(
            handler.run(queued, shutdown.clone()).instrument(tracing::Span::current()),
        );
        let mut handler_done = false;
        let mut backoff = Duration::from_millis(100);
        let mut draining = false;
        loop {
            let event = tokio::select! {
                changed = shutdown.changed(), if !draining => {
                    if changed.is_err() || *shutdown.borrow() {
                        tracing::info!("shutdown requested; draining");
                        draining = true;
                    }
                    continue;
                }
                // The handler stops on shutdown, or when it was stopped while waiting for
                // room in the pipeline; either way its writer queue is dropped and the writer
                // flushes, commits and hands back the last tickets.
                _ = &mut handler, if !handler_done => {
                    handler_done = true;
                    draining = true;
                    continue;
                }
                _ = &mut acks_done, if draining => break,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::ConnAck { session_present }) => {
                    // Tokens of earlier connections must not ack: packet ids are per connection.
                    self.generation.fetch_add(1, Ordering::SeqCst);
                    self.metrics.connections.fetch_add(1, Ordering::Relaxed);
                    self.metrics.connected.store(true, Ordering::Relaxed);
                    backoff = Duration::from_millis(100);
                    let (host, port) = eventloop.broker();
                    tracing::info!(session_present, protocol = %self.config.protocol, %host, port, "connected to broker");
                    // Subscribe on every connection, even when the session was resumed:
                    // re-subscribing is idempotent, and a broker may restore a session
                    // without its subscriptions (Mosquitto 2.0 does so for shared ones).
                    let acks = self.command_acks.then_some(TopicKind::CommandAck);
                    for kind in [TopicKind::Telemetry, TopicKind::Status].into_iter().chain(acks) {
                        let filter = match self.config.subscription {
                            SubscriptionMode::Exclusive => kind.filter(),
                            SubscriptionMode::Shared => kind.shared_filter(&self.config.group),
                        };
                        if let Err(e) = self.client.try_subscribe(filter, QoS::AtLeastOnce) {
                            tracing::error!(error = %e, "cannot queue subscription");
                        }
                    }
                }
                Ok(Event::Publish(publish)) if !draining => {
                    let generation = self.generation.load(Ordering::SeqCst);
                    if publish.qos == QoS::AtMostOnce {
                        if publishes.capacity() <= window
                            || publishes.try_send((publish, generation)).is_err()
                        {
                            self.metrics.qos0_shed.fetch_add(1, Ordering::Relaxed);
                        }
                    } else if let Err(mpsc::error::TrySendError::Full(item)) =
                        publishes.try_send((publish, generation))
                    {
                        // Only a broker sending past our receive maximum gets here: wait
                        // rather than drop a message it will not resend on this connection.
                        self.metrics.window_overruns.fetch_add(1, Ordering::Relaxed);
                        let _ = publishes.send(item).await;
                    }
                }
                Ok(Event::SubAck { granted }) => {
                    tracing::info!(?granted, "subscribed");
                }
                Ok(_) => {}
                Err(e) => {
                    // Acks queued from now on belong to a dead connection: rumqttc would send
                    // them on the next one, where their packet ids may name other messages.
                    self.generation.fetch_add(1, Ordering::SeqCst);
                    self.metrics.connection_errors.fetch_add(1, Ordering::Relaxed);
                    self.metrics.connected.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, retry_in = ?backoff, "broker connection failed");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = &mut acks_done, if draining => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let _ = self.client.disconnect().await;
        // Let the event loop write the DISCONNECT (bounded: the broker may be gone).
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::OutgoingDisconnect) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        tracing::info!("stopped");
    }
}

/// Decodes and validates publishes and hands them to the writer and the stream, waiting
/// for room in the reading budget and the writer queue: the backpressure that, through
/// unacknowledged messages, reaches the broker.
struct Handler {
    config: IngestConfig,
    validator: Validator,
    budget: Arc<Semaphore>,
    writer: mpsc::Sender<WriteItem<AckToken>>,
    live: mpsc::Sender<Vec<Reading>>,
    statuses: mpsc::Sender<StatusEvent>,
    command_acks: Option<mpsc::Sender<(DeviceId, CommandAck)>>,
    direct_acks: Option<mpsc::Sender<Vec<AckToken>>>,
    known: HashSet<DeviceId>,
    metrics: Arc<IngestMetrics>,
}

impl Handler {
    /// Runs until shutdown; messages still queued are left unacknowledged for the next
    /// session. Returning drops the writer queue.
    async fn run(
        mut self,
        mut queued: mpsc::Receiver<(Message, u64)>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return,
                next = queued.recv() => next,
            };
            let Some((publish, generation)) = next else { return };
            if !self.handle(publish, generation, &mut shutdown).await {
                tracing::info!("shutdown requested while the pipeline was full; draining");
                return;
            }
        }
    }

    /// Process one publish. Returns false if shutdown was requested while waiting for room
    /// in the pipeline (the message is then left unacknowledged for the next session).
    async fn handle(
        &mut self,
        publish: Message,
        generation: u64,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let writer = self.writer.clone();
        let topic = publish.topic.clone();
        let stop = async {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stop);
        if let (Some(filter), Some(direct)) = (&self.config.partition, &self.direct_acks) {
            if !filter.takes(&topic) {
                // Another partition's device: its owner processes it from its own session.
                let permit = tokio::select! {
                    permit = self.budget.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => return true,
                    },
                    () = &mut stop => return false,
                };
                let token =
                    AckToken { pkid: publish.pkid, qos: publish.qos, generation, _budget: permit };
                self.metrics.foreign_acked.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = direct.send(vec![token]) => return true,
                    () = &mut stop => return false,
                }
            }
        }
        let processed = if topic_kind(&topic) == Some(TopicKind::Status) {
            match process_status(&topic, &publish.payload, publish.retain, EventTime::now()) {
                Ok(event) => {
                    tokio::select! {
                        sent = self.statuses.send(event) => {
                            if sent.is_ok() {
                                self.metrics.statuses.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        () = &mut stop => return false,
                    }
                    Processed::default()
                }
                Err(letter) => Processed { dead_letters: vec![*letter], ..Processed::default() },
            }
        } else if topic_kind(&topic) == Some(TopicKind::CommandAck) {
            match (
                process_command_ack(&topic, &publish.payload, EventTime::now()),
                &self.command_acks,
            ) {
                (Ok(ack), Some(acks)) => {
                    tokio::select! {
                        sent = acks.send(ack) => {
                            if sent.is_ok() {
                                self.metrics.command_acks.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        () = &mut stop => return false,
                    }
                    Processed::default()
                }
                (Ok(_), None) => Processed::default(),
                (Err(letter), _) => {
                    Processed { dead_letters: vec![*letter], ..Processed::default() }
                }
            }
        } else {
            process_publish(
                &topic,
                &publish.payload,
                EventTime::now(),
                &self.validator,
                &self.known,
                self.config.unknown_devices,
            )
        };
        self.metrics.messages.fetch_add(1, Ordering::Relaxed);
        self.metrics.readings.fetch_add(processed.readings.len() as u64, Ordering::Relaxed);
        for d in &processed.dead_letters {
            self.metrics.dead_letters.add(&d.reason, 1);
            tracing::debug!(topic = %d.topic, reason = %d.reason, detail = %d.detail, "dead letter");
        }
        for (reason, n) in &processed.folded {
            self.metrics.dead_letters.add(reason, *n);
        }
        let cost = processed.readings.len().clamp(1, self.config.max_pending_readings.max(1));
        let permit = tokio::select! {
            permit = self.budget.clone().acquire_many_owned(cost as u32) => match permit {
                Ok(p) => p,
                Err(_) => return true,
            },
            () = &mut stop => return false,
        };
        let token = AckToken { pkid: publish.pkid, qos: publish.qos, generation, _budget: permit };
        let new_devices: Vec<DeviceId> = processed.new_device.into_iter().collect();
        for d in &new_devices {
            self.known.insert(d.clone());
        }
        if !processed.readings.is_empty() && self.live.try_send(processed.readings.clone()).is_err()
        {
            self.metrics.live_dropped.fetch_add(processed.readings.len() as u64, Ordering::Relaxed);
        }
        let item = WriteItem {
            readings: processed.readings,
            dead_letters: processed.dead_letters,
            new_devices,
            ticket: token,
        };
        tokio::select! {
            sent = writer.send(item) => {
                if sent.is_err() {
                    tracing::warn!("writer is gone; message left unacknowledged");
                }
                true
            }
            () = &mut stop => false,
        }
    }
}

/// Sends the acks of committed messages. It must never block: the event loop that writes
/// the acks is polled by the ingest driver, which itself may be waiting for the writer, and
/// the writer for us. So the reading budget is released at commit (the readings are durable
/// then), and acks that do not fit in the client's request channel wait here and are
/// retried. That queue is bounded by the broker's in-flight window (receive maximum): only
/// messages the broker has sent and we have not acknowledged can be in it.
async fn run_acker(
    client: Client,
    mut committed: mpsc::Receiver<Vec<AckToken>>,
    generation: Arc<AtomicU64>,
    metrics: Arc<IngestMetrics>,
    done: oneshot::Sender<()>,
) {
    let mut waiting: std::collections::VecDeque<(u16, QoS, u64)> =
        std::collections::VecDeque::new();
    let mut open = true;
    // A request channel that stays full this long means the event loop is gone.
    let mut full_since: Option<tokio::time::Instant> = None;
    while open || !waiting.is_empty() {
        if waiting.is_empty() {
            match committed.recv().await {
                Some(tokens) => {
                    waiting.extend(tokens.into_iter().map(|t| (t.pkid, t.qos, t.generation)))
                }
                None => open = false,
            }
        } else if open {
            // Take newly committed batches without waiting, then retry the queue shortly.
            tokio::select! {
                batch = committed.recv() => match batch {
                    Some(tokens) => waiting.extend(tokens.into_iter().map(|t| (t.pkid, t.qos, t.generation))),
                    None => open = false,
                },
                () = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The tokens' budget permits were dropped above: the readings are committed.
        while let Some(&(pkid, qos, gen)) = waiting.front() {
            if gen != generation.load(Ordering::SeqCst) {
                metrics.stale_acks.fetch_add(1, Ordering::Relaxed);
                waiting.pop_front();
                continue;
            }
            match client.try_ack(pkid, qos) {
                Ok(()) => {
                    metrics.acks.fetch_add(1, Ordering::Relaxed);
                    waiting.pop_front();
                    full_since = None;
                }
                Err(_) if full_since.is_none_or(|t| t.elapsed() < Duration::from_secs(30)) => {
                    full_since.get_or_insert_with(tokio::time::Instant::now);
                    break; // the channel is full: retry shortly
                }
                Err(_) => {
                    // The event loop is gone: the broker redelivers these to the next session.
                    tracing::error!(
                        pending = waiting.len(),
                        "acks cannot be sent; giving up on them"
                    );
                    metrics.stale_acks.fetch_add(waiting.len() as u64, Ordering::Relaxed);
                    waiting.clear();
                }
            }
        }
    }
    let _ = done.send(());
}
