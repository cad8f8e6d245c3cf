//! Commands over MQTT (docs/mqtt-contract.md). The API stores a command (`pending`) and hands it
//! here; this task publishes it on `sccr/v1/devices/{id}/commands` with QoS 1 and marks it
//! `sent` when the broker's PUBACK for that packet arrives (packet ids are paired with
//! commands through the event loop's `Outgoing::Publish` events, in request order). The
//! device's answer on `…/commands/ack` is read by ingest and handed here: the command
//! becomes `acked`, `rejected` or `failed` with its outbox event. A sweeper expires
//! commands whose time to live passed without an answer (also with an outbox event), so
//! a command sent to a stopped device ends `expired`.
//!
//! A command whose publish is lost (broker down) stays `pending` and expires: commands
//! are not re-sent behind the operator's back.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mqtt_client::{Event, Options, Protocol, QoS};
use store::{CommandRecord, CommandStatus, Store};
use telemetry::command::{Command, CommandAck, CommandResult};
use telemetry::metrics::{self, Collector, Encoder};
use telemetry::{DeviceId, EventTime, Topic};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

#[derive(Debug, Clone, PartialEq)]
pub struct CommandLinkConfig {
    /// The protocol of `[mqtt]` (the broker ingest uses).
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    /// Other nodes of the broker's cluster, tried in turn when the connection fails.
    pub failover: Vec<(String, u16)>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    /// How often expired commands are looked for.
    pub sweep_interval: Duration,
}

#[derive(Debug, Default)]
pub struct CommandLinkMetrics {
    pub published: AtomicU64,
    pub sent: AtomicU64,
    pub answered: AtomicU64,
    /// Acks naming no open command of their device (late, unknown, or replayed).
    pub stray_acks: AtomicU64,
    pub expired: AtomicU64,
    pub errors: AtomicU64,
}

impl Collector for CommandLinkMetrics {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let e = &mut e;
        let counters = [
            ("commands_published", "Commands handed to the broker client.", &self.published),
            ("commands_sent", "Commands the broker took (PUBACK).", &self.sent),
            ("commands_answered", "Commands a device answered.", &self.answered),
            (
                "commands_stray_acks",
                "Device answers naming no open command of the device (late, unknown or replayed).",
                &self.stray_acks,
            ),
            ("commands_expired", "Commands that expired unanswered.", &self.expired),
            ("commands_errors", "Command link errors (store or broker).", &self.errors),
        ];
        for (name, help, value) in counters {
            metrics::counter(e, name, help, value.load(Ordering::Relaxed))?;
        }
        Ok(())
    }
}

/// Resolves once shutdown is requested (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The payload sent to the device.
pub fn command_payload(c: &CommandRecord) -> Vec<u8> {
    let cmd = Command {
        id: c.id.clone(),
        name: c.name.clone(),
        args: c.args.clone(),
        expires_at: Some(telemetry::TimeField::Millis(c.expires_at.millis())),
    };
    serde_json::to_vec(&cmd).unwrap_or_default()
}

/// The final status an ack gives.
pub fn status_of(result: CommandResult) -> CommandStatus {
    match result {
        CommandResult::Ok => CommandStatus::Acked,
        CommandResult::Rejected => CommandStatus::Rejected,
        CommandResult::Failed => CommandStatus::Failed,
    }
}

/// Start the command link: `outgoing` takes commands to publish (from the API), `acks`
/// the devices' answers (from ingest). Runs until `shutdown`.
///
/// A process that serves the API publishes (`outgoing`, with the expiry sweeper); one that
/// runs ingest records the answers (`acks`); one process may do both.
pub fn run_commands(
    config: CommandLinkConfig,
    store: Store,
    outgoing: Option<mpsc::Receiver<CommandRecord>>,
    acks: Option<mpsc::Receiver<(DeviceId, CommandAck)>>,
    metrics: Arc<CommandLinkMetrics>,
    shutdown: watch::Receiver<bool>,
) -> Vec<(&'static str, JoinHandle<()>)> {
    let mut tasks = Vec::new();
    if let Some(outgoing) = outgoing {
        let publisher = tokio::spawn(run_publisher(
            config.clone(),
            store.clone(),
            outgoing,
            metrics.clone(),
            shutdown.clone(),
        ));
        let sweeper = tokio::spawn(run_sweeper(
            store.clone(),
            config.sweep_interval,
            metrics.clone(),
            shutdown,
        ));
        tasks.push(("command publisher", publisher));
        tasks.push(("command sweeper", sweeper));
    }
    if let Some(acks) = acks {
        tasks.push(("command acks", tokio::spawn(run_answers(store, acks, metrics))));
    }
    tasks
}

async fn run_publisher(
    config: CommandLinkConfig,
    store: Store,
    mut outgoing: mpsc::Receiver<CommandRecord>,
    metrics: Arc<CommandLinkMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut opts =
        Options::new(config.protocol, config.client_id.clone(), config.host.clone(), config.port);
    opts.keep_alive = config.keep_alive;
    opts.failover = config.failover.clone();
    opts.clean_start = true;
    if let (Some(u), Some(p)) = (&config.username, &config.password) {
        opts.credentials = Some((u.clone(), p.clone()));
    }
    let (client, mut eventloop) = mqtt_client::new_client(&opts, 64);
    // Commands whose publish was requested, in request order, until their packet id is known.
    let mut requested: VecDeque<String> = VecDeque::new();
    let mut in_flight: HashMap<u16, String> = HashMap::new();
    let mut open = true;
    let stop = shutdown.clone();
    loop {
        tokio::select! {
            c = outgoing.recv(), if open => match c {
                Some(c) => {
                    let topic = Topic::commands(&c.device);
                    match client.publish(topic, QoS::AtLeastOnce, false, command_payload(&c)).await {
                        Ok(()) => {
                            metrics.published.fetch_add(1, Ordering::Relaxed);
                            requested.push_back(c.id);
                        }
                        Err(e) => {
                            metrics.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(command = %c.id, error = %e, "cannot publish command; it will expire");
                        }
                    }
                }
                None => open = false,
            },
            event = eventloop.poll() => match event {
                Ok(Event::OutgoingPublish(pkid)) => {
                    if let Some(id) = requested.pop_front() {
                        in_flight.insert(pkid, id);
                    }
                }
                Ok(Event::PubAck { pkid, .. }) => {
                    if let Some(id) = in_flight.remove(&pkid) {
                        match store.mark_command_sent(&id, EventTime::now()).await {
                            Ok(()) => metrics.sent.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                tracing::warn!(command = %id, error = %e, "cannot mark command sent");
                                metrics.errors.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // Publishes of the lost connection are not retried: they expire.
                    requested.clear();
                    in_flight.clear();
                    tracing::warn!(error = %e, "command link: broker connection failed; retrying");
                    let stopping = *stop.borrow();
                    if stopping {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            () = stopped(&mut shutdown) => break,
        }
    }
    let _ = client.disconnect().await;
}

async fn run_answers(
    store: Store,
    mut acks: mpsc::Receiver<(DeviceId, CommandAck)>,
    metrics: Arc<CommandLinkMetrics>,
) {
    while let Some((device, ack)) = acks.recv().await {
        let status = status_of(ack.result);
        let mut tries = 0;
        loop {
            match store
                .finish_command(&ack.id, &device, status, ack.detail.as_deref(), EventTime::now())
                .await
            {
                Ok(Some(_)) => {
                    metrics.answered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(None) => {
                    metrics.stray_acks.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%device, command = %ack.id, "ack for no open command of the device");
                    break;
                }
                Err(e) if e.is_transient() && tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(e) => {
                    metrics.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%device, command = %ack.id, error = %e, "cannot store a command's answer; it will expire");
                    break;
                }
            }
        }
    }
}

async fn run_sweeper(
    store: Store,
    every: Duration,
    metrics: Arc<CommandLinkMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stopped(&mut shutdown) => return,
        }
        match store.expire_commands(EventTime::now()).await {
            Ok(expired) => {
                for c in &expired {
                    tracing::info!(command = %c.id, device = %c.device, "command expired without an answer");
                }
                metrics.expired.fetch_add(expired.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot expire commands; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_what_the_edge_agent_parses() {
        let c = CommandRecord {
            id: "0b5c3f4e-1d2a-4c1b-9e8f-123456789abc".into(),
            device: DeviceId::parse("loop-1").unwrap(),
            name: "set_interval".into(),
            args: serde_json::json!({"interval": "2s"}).as_object().unwrap().clone(),
            idempotency_key: Some("k".into()),
            status: CommandStatus::Pending,
            detail: None,
            created_by: None,
            created_at: EventTime(1_000),
            sent_at: None,
            expires_at: EventTime(61_000),
            finished_at: None,
        };
        let parsed = Command::parse(&command_payload(&c)).unwrap();
        assert_eq!(parsed.id, c.id);
        assert_eq!(parsed.args["interval"], "2s");
        assert!(!parsed.is_expired(EventTime(61_000)));
        assert!(parsed.is_expired(EventTime(61_001)));
        assert_eq!(status_of(CommandResult::Rejected), CommandStatus::Rejected);
    }
}
