//! The agent's run loop: devices measure on their own schedule and every message is
//! appended to the disk buffer first; a single task owns the buffer and the MQTT
//! connection, publishes what is unsent, and acknowledges a buffer record only when the
//! broker's PUBACK for the packet that carried it arrives.
//!
//! Packet ids are matched to records through the event loop's `Outgoing::Publish(pkid)`
//! events, which come in the order publishes were requested; a FIFO of the requested
//! records (and `None` for status and command-ack publishes) pairs them. Each connection
//! attempt uses a fresh event loop, so no packet of an earlier connection can be confused
//! with a new one; on every (re)connection the buffer rewinds and unacked records are sent
//! again (the core's dedupe key makes a repeat harmless). The MQTT session itself persists
//! (`clean_start = false`) so commands sent while the device was offline still arrive.
//!
//! Measuring never waits for the network: while the broker is unreachable readings pile up
//! in the buffer (bounded in bytes; the oldest are dropped and counted when it is full).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mqtt_client::{
    Client as AsyncClient, ConnectionError, Event, EventLoop, Message as Publish, Options, QoS,
    Transport, Will,
};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rumqttc::TlsConfiguration;
use telemetry::command::{Command, CommandAck};
use telemetry::{
    encode_compact, CompactMessage, CompactReading, DeviceId, EventTime, TimeField, Topic,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::buffer::{DiskBuffer, RecordId};
use crate::commands::{apply_command, Effect};
use crate::config::{DeviceSpec, MqttSection};
use crate::drivers::Driver;

/// Records in flight to the broker at once.
const WINDOW: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("buffer: {0}")]
    Buffer(#[from] crate::buffer::BufferError),
    #[error("TLS file {path}: {source}")]
    TlsFile { path: PathBuf, source: std::io::Error },
}

/// Counters of a running agent (also written to the stats file).
#[derive(Debug, Default)]
pub struct AgentStats {
    pub messages_buffered: AtomicU64,
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub commands: AtomicU64,
    /// PUBACKs that refused a message (kept buffered and sent again on the next connection).
    pub refused: AtomicU64,
    pub connections: AtomicU64,
    pub connected: AtomicBool,
}

pub struct AgentOptions {
    pub agent_id: DeviceId,
    pub mqtt: MqttSection,
    /// Where to write a JSON snapshot of the counters twice a second.
    pub stats_file: Option<PathBuf>,
    pub firmware: String,
}

fn status_payload(state: &str, fw: &str) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"state": state, "fw": fw, "ts": EventTime::now().millis()}),
    )
    .unwrap_or_default()
}

fn mqtt_options(o: &AgentOptions) -> Result<Options, AgentError> {
    let m = &o.mqtt;
    let client_id = m.client_id.clone().unwrap_or_else(|| o.agent_id.to_string());
    let mut opts = Options::new(m.protocol, client_id, m.host.clone(), m.port);
    opts.keep_alive = m.keep_alive;
    opts.failover = m.failover.iter().filter_map(|b| mqtt_client::parse_broker(b).ok()).collect();
    opts.clean_start = false;
    opts.session_expiry = Some(Duration::from_secs(7 * 24 * 3600));
    // rumqttc sizes its in-flight table by the broker's receive maximum (up to 65,535
    // slots); our window is far smaller, and a field device has little memory.
    opts.outgoing_inflight = WINDOW as u16 + 16;
    opts.last_will = Some(Will {
        topic: Topic::status(&o.agent_id),
        payload: status_payload("offline", &o.firmware),
        qos: QoS::AtLeastOnce,
        retain: true,
    });
    if let (Some(u), Some(p)) = (&m.username, &m.password) {
        opts.credentials = Some((u.clone(), p.clone()));
    }
    if let Some(tls) = &m.tls {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|source| AgentError::TlsFile { path: p.clone(), source })
        };
        let client_auth = match (&tls.client_cert, &tls.client_key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        // rustls needs a process-wide crypto provider; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        opts.transport = Some(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: read(&tls.ca)?,
            alpn: None,
            client_auth,
        }));
    }
    Ok(opts)
}

/// A buffer record is the topic and the payload: `topic_len: u16 LE | topic | payload`.
fn encode_record(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + topic.len() + payload.len());
    out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(payload);
    out
}

fn decode_record(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let len = u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]) as usize;
    let topic = std::str::from_utf8(bytes.get(2..2 + len)?).ok()?;
    Some((topic, bytes.get(2 + len..)?))
}

struct Device {
    spec: DeviceSpec,
    initial: DeviceSpec,
    seq: u64,
    next_due: Instant,
}

struct Agent {
    opts: AgentOptions,
    devices: Vec<Device>,
    by_id: HashMap<String, usize>,
    buffer: DiskBuffer,
    rng: SmallRng,
    stats: Arc<AgentStats>,
}

/// Per-connection bookkeeping; dropped with the connection.
#[derive(Default)]
struct Link {
    connected: bool,
    requested: VecDeque<Option<RecordId>>,
    by_pkid: HashMap<u16, Option<RecordId>>,
    in_flight: usize,
}

pub async fn run_agent(
    opts: AgentOptions,
    devices: Vec<DeviceSpec>,
    buffer: DiskBuffer,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<AgentStats>,
) -> Result<(), AgentError> {
    let now = Instant::now();
    let by_id = devices.iter().enumerate().map(|(i, d)| (d.id.to_string(), i)).collect();
    let devices = devices
        .into_iter()
        .map(|d| Device { initial: d.clone(), spec: d, seq: 0, next_due: now })
        .collect();
    let mut agent = Agent { opts, devices, by_id, buffer, rng: SmallRng::from_os_rng(), stats };
    let mut backoff = Duration::from_millis(200);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stats_tick = tokio::time::interval(Duration::from_millis(500));
    // Each connection attempt has an event loop of its own, so the agent itself moves to
    // the next node of `mqtt.failover` after a failed one.
    let mut attempt = 0usize;
    loop {
        let mut options = mqtt_options(&agent.opts)?;
        let nodes: Vec<(String, u16)> = std::iter::once((options.host.clone(), options.port))
            .chain(std::mem::take(&mut options.failover))
            .collect();
        (options.host, options.port) = nodes[attempt % nodes.len()].clone();
        attempt += 1;
        // Request channel: the publish window plus statuses, subscriptions and command acks.
        let (client, eventloop) = mqtt_client::new_client(&options, WINDOW * 4 + 256);
        agent.buffer.rewind();
        let outcome =
            agent.connection(&client, eventloop, &mut tick, &mut stats_tick, &mut shutdown).await?;
        agent.stats.connected.store(false, Ordering::Relaxed);
        match outcome {
            Outcome::Shutdown => break,
            Outcome::Failed { was_connected } => {
                if was_connected {
                    backoff = Duration::from_millis(200);
                }
                // Keep measuring while waiting to reconnect.
                let until = Instant::now() + backoff;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => break,
                        _ = tick.tick() => agent.measure()?,
                        _ = stats_tick.tick() => agent.write_stats(),
                        _ = shutdown.changed() => {
                            agent.buffer.sync()?;
                            agent.write_stats();
                            return Ok(());
                        }
                    }
                }
                backoff =
                    (backoff * 2).min(agent.opts.mqtt.max_backoff.max(Duration::from_millis(200)));
            }
        }
    }
    agent.buffer.sync()?;
    agent.write_stats();
    Ok(())
}

enum Outcome {
    Shutdown,
    Failed { was_connected: bool },
}

impl Agent {
    async fn connection(
        &mut self,
        client: &AsyncClient,
        mut eventloop: EventLoop,
        tick: &mut tokio::time::Interval,
        stats_tick: &mut tokio::time::Interval,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Outcome, AgentError> {
        let mut link = Link::default();
        // The event loop is polled by its own task: a poll future dropped by `select!` in
        // the middle of writing could lose a packet that rumqttc already counts in flight.
        let (events_tx, mut events) = tokio::sync::mpsc::channel(1024);
        let poller = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let failed = event.is_err();
                if events_tx.send(event).await.is_err() || failed {
                    break;
                }
            }
        });
        let outcome = self.drive(client, &mut link, &mut events, tick, stats_tick, shutdown).await;
        if matches!(outcome, Ok(Outcome::Shutdown)) && link.connected {
            self.go_offline(client, &mut events).await;
        }
        poller.abort();
        outcome
    }

    async fn drive(
        &mut self,
        client: &AsyncClient,
        link: &mut Link,
        events: &mut tokio::sync::mpsc::Receiver<Result<Event, ConnectionError>>,
        tick: &mut tokio::time::Interval,
        stats_tick: &mut tokio::time::Interval,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Outcome, AgentError> {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(Outcome::Shutdown),
                _ = tick.tick() => self.measure()?,
                _ = stats_tick.tick() => self.write_stats(),
                event = events.recv() => match event.unwrap_or(Err(ConnectionError::Gone)) {
                    Ok(Event::ConnAck { .. }) => {
                        link.connected = true;
                        self.stats.connected.store(true, Ordering::Relaxed);
                        self.stats.connections.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("connected to the broker");
                        self.announce(client, link);
                    }
                    Ok(Event::OutgoingPublish(pkid)) => {
                        if let Some(record) = link.requested.pop_front() {
                            link.by_pkid.insert(pkid, record);
                        }
                    }
                    Ok(Event::PubAck { pkid, refused }) => {
                        if let Some(Some(id)) = link.by_pkid.remove(&pkid) {
                            link.in_flight = link.in_flight.saturating_sub(1);
                            // Only a PUBACK that accepts the message releases its record. A
                            // refusal (quota exceeded, not authorized, …) keeps it on disk; it
                            // is sent again on the next connection, while the other records
                            // go on flowing (no head-of-line blocking).
                            if refused.is_none() {
                                self.buffer.ack(id)?;
                                self.stats.acked.fetch_add(1, Ordering::Relaxed);
                            } else {
                                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(reason = ?refused, %id, "broker refused a message; keeping it buffered");
                            }
                        }
                    }
                    Ok(Event::Publish(p)) => self.on_command(client, link, &p),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "broker connection lost; buffering");
                        return Ok(Outcome::Failed { was_connected: link.connected });
                    }
                },
            }
            if link.connected {
                self.publish_unsent(client, link)?;
            }
        }
    }

    /// Sample every device that is due and append its message to the buffer.
    fn measure(&mut self) -> Result<(), AgentError> {
        let now = Instant::now();
        let wall = EventTime::now();
        for d in &mut self.devices {
            if d.next_due > now {
                continue;
            }
            d.next_due = now + d.spec.interval;
            let readings = d.spec.driver.sample(wall, d.spec.interval.as_secs_f64(), &mut self.rng);
            if readings.is_empty() {
                continue;
            }
            d.seq += 1;
            let msg = CompactMessage {
                seq: Some(d.seq),
                ts: None,
                readings: readings
                    .into_iter()
                    .map(|(m, v, t)| CompactReading {
                        m,
                        v,
                        t: Some(TimeField::Millis(t.millis())),
                    })
                    .collect(),
            };
            let record = encode_record(&Topic::telemetry(&d.spec.id), &encode_compact(&msg));
            self.buffer.append(&record)?;
            self.stats.messages_buffered.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn publish_unsent(&mut self, client: &AsyncClient, link: &mut Link) -> Result<(), AgentError> {
        while link.in_flight < WINDOW {
            let batch = self.buffer.next_unsent(WINDOW - link.in_flight)?;
            if batch.is_empty() {
                break;
            }
            for (id, bytes) in batch {
                let Some((topic, payload)) = decode_record(&bytes) else {
                    // Cannot happen for records this agent wrote (the buffer checks CRCs);
                    // acknowledge it so it does not block the queue.
                    tracing::error!(?id, "buffer record without a topic; discarding");
                    self.buffer.ack(id)?;
                    continue;
                };
                if client.try_publish(topic, QoS::AtLeastOnce, false, payload.to_vec()).is_err() {
                    // The request queue is full: hand this record and the rest out again later.
                    self.buffer.unsend_from(id);
                    return Ok(());
                }
                link.requested.push_back(Some(id));
                link.in_flight += 1;
                self.stats.published.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Publish a non-buffered message (status, command ack) and keep the pkid FIFO in step.
    fn publish_direct(
        client: &AsyncClient,
        link: &mut Link,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) {
        if client.try_publish(topic, QoS::AtLeastOnce, retain, payload).is_ok() {
            link.requested.push_back(None);
        }
    }

    fn announce(&mut self, client: &AsyncClient, link: &mut Link) {
        let fw = self.opts.firmware.clone();
        Self::publish_direct(
            client,
            link,
            Topic::status(&self.opts.agent_id),
            true,
            status_payload("online", &fw),
        );
        let topics: Vec<_> = self.devices.iter().map(|d| d.spec.id.clone()).collect();
        for id in &topics {
            if *id != self.opts.agent_id {
                Self::publish_direct(
                    client,
                    link,
                    Topic::status(id),
                    true,
                    status_payload("online", &fw),
                );
            }
            let _ = client.try_subscribe(Topic::commands(id), QoS::AtLeastOnce);
        }
    }

    fn on_command(&mut self, client: &AsyncClient, link: &mut Link, p: &Publish) {
        let topic = p.topic.as_str();
        let Ok(parsed) = telemetry::Topic::parse(topic) else { return };
        let ack = match (self.by_id.get(parsed.device.as_str()), Command::parse(&p.payload)) {
            (Some(&i), Ok(cmd)) => {
                let (ack, effect) =
                    apply_command(&mut self.devices[i].spec, &cmd, EventTime::now());
                if effect == Effect::Reboot {
                    let d = &mut self.devices[i];
                    d.spec = DeviceSpec { interval: d.spec.interval, ..d.initial.clone() };
                    d.seq = 0;
                    d.next_due = Instant::now();
                    Self::publish_direct(
                        client,
                        link,
                        Topic::status(&d.spec.id),
                        true,
                        status_payload("online", &self.opts.firmware),
                    );
                }
                ack
            }
            (_, Err(e)) => match Command::id_of(&p.payload) {
                Some(id) => CommandAck::rejected(&id, e.to_string()),
                None => {
                    tracing::warn!(%topic, "command without a readable id; ignored");
                    return;
                }
            },
            (None, Ok(cmd)) => {
                CommandAck::rejected(&cmd.id, format!("no device {} on this agent", parsed.device))
            }
        };
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        tracing::info!(device = %parsed.device, id = %ack.id, result = ?ack.result, "command answered");
        let payload = serde_json::to_vec(&ack).unwrap_or_default();
        Self::publish_direct(client, link, Topic::command_ack(&parsed.device), false, payload);
    }

    /// Graceful stop: retained offline status (the Last Will only fires on a lost
    /// connection), then DISCONNECT, waiting briefly for the outstanding PUBACKs.
    async fn go_offline(
        &mut self,
        client: &AsyncClient,
        events: &mut tokio::sync::mpsc::Receiver<Result<Event, ConnectionError>>,
    ) {
        let fw = self.opts.firmware.clone();
        let mut ids = vec![self.opts.agent_id.clone()];
        ids.extend(
            self.devices.iter().map(|d| d.spec.id.clone()).filter(|id| *id != self.opts.agent_id),
        );
        for id in ids {
            let _ = client.try_publish(
                Topic::status(&id),
                QoS::AtLeastOnce,
                true,
                status_payload("offline", &fw),
            );
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while let Some(event) = events.recv().await {
                if matches!(event, Ok(Event::OutgoingDisconnect) | Err(_)) {
                    break;
                }
            }
        })
        .await;
    }

    fn write_stats(&self) {
        let Some(path) = &self.opts.stats_file else { return };
        let b = self.buffer.stats();
        let s = &self.stats;
        let json = serde_json::json!({
            "connected": s.connected.load(Ordering::Relaxed),
            "messages_buffered": s.messages_buffered.load(Ordering::Relaxed),
            "published": s.published.load(Ordering::Relaxed),
            "acked": s.acked.load(Ordering::Relaxed),
            "commands": s.commands.load(Ordering::Relaxed),
            "refused": s.refused.load(Ordering::Relaxed),
            "connections": s.connections.load(Ordering::Relaxed),
            "buffer_records": b.records,
            "buffer_bytes": b.bytes,
            "buffer_dropped": b.dropped,
            "buffer_corrupt_skipped": b.corrupt_skipped,
            "replays_finished": self.devices.iter().filter(|d| matches!(&d.spec.driver, Driver::Replay(r) if r.is_finished())).count(),
        });
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, json.to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .is_err()
        {
            tracing::warn!(path = %path.display(), "cannot write the stats file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_topic_and_payload() {
        let r = encode_record("sccr/v1/devices/a/telemetry", b"{\"x\":1}");
        assert_eq!(decode_record(&r), Some(("sccr/v1/devices/a/telemetry", &b"{\"x\":1}"[..])));
        assert_eq!(decode_record(&[5, 0, b'a']), None);
        assert_eq!(decode_record(&[]), None);
    }
}
