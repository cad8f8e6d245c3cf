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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde::{Deserialize, Serialize};
use stream::{
    AlertKey, LiveAlert, LiveEvent, LiveHub, LiveValue, OperatorAction, Pending, SegmentState,
    StreamCommand, SubscriptionFilter, WindowResult,
};
use telemetry::metrics::{self, Collector, Encoder};
use telemetry::{DeviceId, DeviceState, EventTime, StatusEvent};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

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

/// A device status as the bus carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusStatus {
    pub device: DeviceId,
    pub state: DeviceState,
    pub received_at: EventTime,
    pub retained: bool,
}

/// One live message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveBatch {
    pub v: u8,
    /// The publishing process (its MQTT client id).
    pub origin: String,
    /// A snapshot of what the origin holds, not changes that just happened.
    #[serde(default)]
    pub snapshot: bool,
    /// Readings the origin took since its previous message (values arrive conflated).
    #[serde(default)]
    pub readings: u64,
    #[serde(default)]
    pub values: Vec<LiveValue>,
    #[serde(default)]
    pub windows: Vec<WindowResult>,
    #[serde(default)]
    pub segments: Vec<SegmentState>,
    #[serde(default)]
    pub alerts: Vec<LiveAlert>,
    #[serde(default)]
    pub statuses: Vec<BusStatus>,
}

/// Why a bus message was skipped.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("not a bus message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("bus message version {0}, expected {VERSION}")]
    Version(u8),
}

impl LiveBatch {
    fn new(origin: &str, snapshot: bool) -> Self {
        Self { v: VERSION, origin: origin.to_owned(), snapshot, ..Self::default() }
    }

    fn events(&self) -> usize {
        self.windows.len() + self.segments.len() + self.alerts.len() + self.statuses.len()
    }

    /// The messages for what a hub subscription queued, `readings` counted in the first.
    pub fn from_pending(origin: &str, pending: Pending, readings: u64) -> Vec<LiveBatch> {
        let mut out = vec![LiveBatch { readings, ..Self::new(origin, false) }];
        let current = |out: &mut Vec<LiveBatch>, value: bool| -> usize {
            let last = out.len() - 1;
            let full = if value {
                out[last].values.len() >= MAX_VALUES_PER_MESSAGE
            } else {
                out[last].events() >= MAX_EVENTS_PER_MESSAGE
            };
            if full {
                out.push(Self::new(origin, false));
            }
            out.len() - 1
        };
        for v in pending.values.into_values() {
            let i = current(&mut out, true);
            out[i].values.push(v);
        }
        for e in pending.events {
            let i = current(&mut out, false);
            let b = &mut out[i];
            match &*e {
                LiveEvent::Value(v) => b.values.push(v.clone()),
                LiveEvent::Window(w) => b.windows.push(w.clone()),
                LiveEvent::Segment(s) => b.segments.push(s.clone()),
                LiveEvent::Alert(a) => b.alerts.push((**a).clone()),
                LiveEvent::Status(s) => {
                    b.statuses.push(BusStatus {
                        device: s.device.clone(),
                        state: s.state,
                        received_at: s.received_at,
                        retained: s.retained,
                    });
                }
            }
        }
        out
    }

    /// What `hub` holds, as snapshot messages.
    pub fn snapshot(origin: &str, hub: &LiveHub) -> Vec<LiveBatch> {
        let all = SubscriptionFilter {
            segments: Some(Default::default()),
            ..SubscriptionFilter::default()
        };
        let mut out = Vec::new();
        let values = hub.snapshot(&all);
        for chunk in values.chunks(MAX_VALUES_PER_MESSAGE) {
            out.push(LiveBatch { values: chunk.to_vec(), ..Self::new(origin, true) });
        }
        for chunk in hub.segment_states(&all).chunks(MAX_EVENTS_PER_MESSAGE) {
            out.push(LiveBatch { segments: chunk.to_vec(), ..Self::new(origin, true) });
        }
        for chunk in hub.open_alerts().chunks(MAX_EVENTS_PER_MESSAGE) {
            out.push(LiveBatch { alerts: chunk.to_vec(), ..Self::new(origin, true) });
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.readings == 0 && self.values.is_empty() && self.events() == 0
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, BusError> {
        let batch: LiveBatch = serde_json::from_slice(bytes)?;
        if batch.v != VERSION {
            return Err(BusError::Version(batch.v));
        }
        Ok(batch)
    }

    /// Apply to `hub`, which broadcasts what is newer than what it holds.
    pub fn apply(self, hub: &LiveHub) {
        hub.count_readings(self.readings);
        hub.apply_values(self.values, !self.snapshot);
        hub.publish_windows(self.windows);
        hub.publish_segments(self.segments);
        for a in self.alerts {
            hub.publish_alert(a);
        }
        for s in self.statuses {
            hub.set_status(&StatusEvent {
                device: s.device,
                state: s.state,
                received_at: s.received_at,
                retained: s.retained,
            });
        }
    }
}

/// A control message from an API replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    /// An operator acknowledged or cleared an alert; `alert` is the stored result.
    Operator {
        action: OperatorAction,
        key: AlertKey,
        by: String,
        note: Option<String>,
        at: EventTime,
        alert: Box<LiveAlert>,
    },
    /// The alert rules were replaced in the store: re-read them.
    RulesChanged,
    /// Publish a snapshot of the live state (an API replica started or reconnected).
    SnapshotRequest,
}

impl ControlMessage {
    pub fn encode(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("v".into(), VERSION.into());
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, BusError> {
        #[derive(Deserialize)]
        struct Version {
            v: u8,
        }
        let Version { v } = serde_json::from_slice(bytes)?;
        if v != VERSION {
            return Err(BusError::Version(v));
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

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
    pub host: String,
    pub port: u16,
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
    let mut opts = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
    opts.set_keep_alive(config.keep_alive)
        .set_clean_start(true)
        .set_max_packet_size(Some(config.max_packet_bytes));
    if let (Some(u), Some(p)) = (&config.username, &config.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    AsyncClient::new(opts, 256)
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
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
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    metrics.connected.store(true, Ordering::Relaxed);
                    metrics.connections.fetch_add(1, Ordering::Relaxed);
                    for topic in topics {
                        if let Err(e) = client.try_subscribe(*topic, QoS::AtLeastOnce) {
                            tracing::warn!(error = %e, topic, "live bus: cannot subscribe");
                        }
                    }
                    connected.notify_one();
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let control = p.topic.as_ref() == CONTROL_TOPIC.as_bytes();
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
    let (client, eventloop) = client(&config);
    let (incoming_tx, mut incoming) = mpsc::channel(64);
    let connected = Arc::new(Notify::new());
    let driver = tokio::spawn(drive(
        client.clone(),
        eventloop,
        &[CONTROL_TOPIC],
        incoming_tx,
        connected.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
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
    let (client, eventloop) = client(&config);
    let (incoming_tx, mut incoming) = mpsc::channel(64);
    let connected = Arc::new(Notify::new());
    let driver = tokio::spawn(drive(
        client.clone(),
        eventloop,
        &[LIVE_TOPIC, CONTROL_TOPIC],
        incoming_tx,
        connected.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
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
                    Some(StreamCommand::Registry(_)) => continue,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use stream::{AlertState, Severity, Subject};
    use telemetry::{MetricId, SegmentId};

    fn value(d: &str, t: i64, v: f64) -> LiveValue {
        LiveValue {
            device: DeviceId::parse(d).unwrap(),
            metric: MetricId::SpeedKmh,
            time: EventTime(t),
            value: v,
        }
    }

    fn alert(id: i64, state: AlertState) -> LiveAlert {
        LiveAlert {
            id,
            rule: "slow".into(),
            subject: Subject::Segment(SegmentId::parse("s1").unwrap()),
            kind: stream::alert::AlertKind::Single,
            severity: Severity::Warning,
            state,
            message: "slow traffic".into(),
            value: Some(12.5),
            since: EventTime(1_000),
            raised_at: EventTime(1_000),
            acknowledged: None,
            cleared: None,
            members: 1,
            active: true,
            returned_at: None,
            shelved: None,
            suppressed: None,
            code: Default::default(),
            params: Default::default(),
        }
    }

    #[test]
    fn a_pending_queue_round_trips_into_another_hub() {
        let source = LiveHub::new(64);
        let all = SubscriptionFilter {
            segments: Some(Default::default()),
            alerts: true,
            statuses: true,
            ..SubscriptionFilter::default()
        };
        let sub = source.subscribe_with_capacity(all.clone(), 1_000);
        let readings: Vec<telemetry::Reading> = (0..5_000)
            .map(|i| telemetry::Reading {
                device: DeviceId::parse(&format!("d{i}")).unwrap(),
                metric: MetricId::SpeedKmh,
                time: EventTime(i),
                value: i as f64,
                seq: None,
            })
            .collect();
        source.apply(&readings);
        source.publish_alert(alert(7, AlertState::Raised));
        source.set_status(&StatusEvent {
            device: DeviceId::parse("d1").unwrap(),
            state: DeviceState::Offline,
            received_at: EventTime::now(),
            retained: false,
        });
        let batches = LiveBatch::from_pending("ingest-a", sub.take(), 5_000);
        assert_eq!(batches.len(), 3, "5,000 values make three messages of at most 2,000");
        assert!(batches.iter().all(|b| b.values.len() <= MAX_VALUES_PER_MESSAGE));

        let target = LiveHub::new(1_000);
        let screen = target.subscribe(all.clone());
        for b in batches {
            LiveBatch::decode(&b.encode()).unwrap().apply(&target);
        }
        assert_eq!(target.snapshot(&all), source.snapshot(&all));
        assert_eq!(target.open_alerts(), vec![alert(7, AlertState::Raised)]);
        assert_eq!(target.readings_applied(), 5_000);
        assert_eq!(
            target.device_online(&DeviceId::parse("d1").unwrap(), EventTime::now()),
            Some(false),
            "the offline status crossed"
        );
        assert_eq!(
            target.device_online(&DeviceId::parse("d2").unwrap(), EventTime::now()),
            Some(true)
        );
        let seen = screen.take();
        assert_eq!(seen.values.len(), 5_000, "a screen on the target hub sees every value");
        assert_eq!(seen.events.iter().filter(|e| matches!(***e, LiveEvent::Alert(_))).count(), 1);
    }

    #[test]
    fn a_snapshot_does_not_mark_devices_heard_and_never_moves_values_back() {
        let source = LiveHub::new(64);
        source.apply_values(vec![value("a", 10, 1.0), value("b", 10, 2.0)], true);
        let target = LiveHub::new(64);
        target.apply_values(vec![value("a", 20, 9.0)], true);
        for b in LiveBatch::snapshot("ingest-a", &source) {
            LiveBatch::decode(&b.encode()).unwrap().apply(&target);
        }
        let got: BTreeMap<String, f64> = target
            .snapshot(&SubscriptionFilter::default())
            .into_iter()
            .map(|v| (v.device.to_string(), v.value))
            .collect();
        assert_eq!(
            got,
            BTreeMap::from([("a".into(), 9.0), ("b".into(), 2.0)]),
            "the newer value held is kept"
        );
        assert_eq!(
            target.device_online(&DeviceId::parse("b").unwrap(), EventTime::now()),
            None,
            "a snapshot is not a sign of life"
        );
    }

    #[test]
    fn a_forwarded_alert_seen_twice_is_broadcast_once() {
        let hub = LiveHub::new(64);
        let sub =
            hub.subscribe(SubscriptionFilter { alerts: true, ..SubscriptionFilter::default() });
        assert!(hub.publish_alert(alert(1, AlertState::Acknowledged)));
        assert!(
            !hub.publish_alert(alert(1, AlertState::Acknowledged)),
            "the same change from a second replica"
        );
        assert!(!hub.publish_alert(alert(1, AlertState::Raised)), "an older state");
        assert_eq!(sub.take().events.len(), 1);
    }

    #[test]
    fn control_messages_round_trip_and_bad_messages_are_refused() {
        let messages = [
            ControlMessage::RulesChanged,
            ControlMessage::SnapshotRequest,
            ControlMessage::Operator {
                action: OperatorAction::Acknowledge,
                key: AlertKey {
                    rule: stream::alert::RuleId::parse("slow").unwrap(),
                    subject: Subject::Rule,
                },
                by: "anna".into(),
                note: Some("seen".into()),
                at: EventTime(5),
                alert: Box::new(alert(3, AlertState::Acknowledged)),
            },
        ];
        for m in messages {
            assert_eq!(ControlMessage::decode(&m.encode()).unwrap(), m);
        }
        assert!(matches!(
            ControlMessage::decode(br#"{"type":"rules_changed","v":2}"#),
            Err(BusError::Version(2))
        ));
        assert!(ControlMessage::decode(br#"{"type":"reboot","v":1}"#).is_err());
        assert!(ControlMessage::decode(b"\xff\x00").is_err());
        assert!(LiveBatch::decode(br#"{"v":1,"origin":"x","values":[{"device":"BAD ID","metric":"speed_kmh","time":1,"value":1}]}"#).is_err());
        assert!(matches!(LiveBatch::decode(br#"{"v":9,"origin":"x"}"#), Err(BusError::Version(9))));
    }
}
