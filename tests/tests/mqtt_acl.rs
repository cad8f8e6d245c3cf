#![allow(clippy::unwrap_used)]
//! The secured broker configuration (`deploy/mosquitto/sccr-secure.conf` with
//! `deploy/mosquitto/sccr.acl`) on a real Mosquitto: passwords required, and each device
//! (username = device id) publishes only to its own topics and reads only its own commands;
//! the ingest service account reads every device, through `$share` too.

use std::process::Command;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use sccr_tests::{workspace_root, Broker};
use tokio::sync::mpsc::UnboundedReceiver;

const ACCOUNTS: &[(&str, &str)] = &[("loop-1", "pw-loop-1"), ("loop-2", "pw-loop-2"), ("sccr-ingest", "pw-ingest"), ("sccr-api", "pw-api")];

/// Mosquitto with the project's secured configuration: its listener moved to a free
/// loopback port, its files to the broker's directory, the ACL file as shipped.
async fn secure_broker() -> Broker {
    Broker::start_config(|dir, port| {
        let passwd = dir.join("sccr.passwd");
        for (i, (user, pass)) in ACCOUNTS.iter().enumerate() {
            let mut cmd = Command::new("mosquitto_passwd");
            if i == 0 {
                cmd.arg("-c");
            }
            let st = cmd.arg("-b").arg(&passwd).arg(user).arg(pass).status()?;
            anyhow::ensure!(st.success(), "mosquitto_passwd failed");
        }
        let acl = dir.join("sccr.acl");
        std::fs::copy(workspace_root().join("deploy/mosquitto/sccr.acl"), &acl)?;
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        let text = std::fs::read_to_string(workspace_root().join("deploy/mosquitto/sccr-secure.conf"))?;
        let mut replaced = 0;
        let conf: Vec<String> = text
            .lines()
            .map(|l| {
                let (out, hit) = match l {
                    "listener 1883" => (format!("listener {port} 127.0.0.1"), true),
                    l if l.starts_with("password_file ") => (format!("password_file {}", passwd.display()), true),
                    l if l.starts_with("acl_file ") => (format!("acl_file {}", acl.display()), true),
                    l if l.starts_with("persistence_location ") => (format!("persistence_location {}/", data.display()), true),
                    l => (l.to_owned(), false),
                };
                replaced += usize::from(hit);
                out
            })
            .collect();
        anyhow::ensure!(replaced == 4, "sccr-secure.conf changed shape: {replaced} of 4 lines found");
        Ok(conf.join("\n") + "\n")
    })
    .await
    .expect("mosquitto with sccr-secure.conf")
}

#[derive(Debug)]
enum Seen {
    Message(String, Vec<u8>),
    SubAck(Vec<SubscribeReasonCode>),
    PubAck(PubAckReason),
    Refused(String),
}

struct Client {
    client: AsyncClient,
    rx: UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    async fn connect(port: u16, user: &str, pass: &str) -> Self {
        let mut opts = MqttOptions::new(format!("{user}-{}", sccr_tests::free_port()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30)).set_credentials(user, pass);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let seen = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => Seen::Message(String::from_utf8_lossy(&p.topic).into_owned(), p.payload.to_vec()),
                    Ok(Event::Incoming(Packet::SubAck(s))) => Seen::SubAck(s.return_codes),
                    Ok(Event::Incoming(Packet::PubAck(a))) => Seen::PubAck(a.reason),
                    Ok(_) => continue,
                    Err(ConnectionError::ConnectionRefused(code)) => Seen::Refused(format!("{code:?}")),
                    Err(e) => Seen::Refused(e.to_string()),
                };
                let stop = matches!(seen, Seen::Refused(_));
                if tx.send(seen).is_err() || stop {
                    break;
                }
            }
        });
        Self { client, rx, task }
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv()).await.expect("an MQTT event in time").expect("event loop running")
    }

    async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        loop {
            if let Seen::SubAck(codes) = self.next().await {
                return codes[0];
            }
        }
    }

    async fn publish(&mut self, topic: &str, payload: &str) -> PubAckReason {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await.unwrap();
        loop {
            if let Seen::PubAck(reason) = self.next().await {
                return reason;
            }
        }
    }

    /// Messages received until one with `payload` arrives (that one included).
    async fn messages_until(&mut self, payload: &str) -> Vec<(String, String)> {
        let mut got = Vec::new();
        loop {
            if let Seen::Message(t, p) = self.next().await {
                let p = String::from_utf8_lossy(&p).into_owned();
                let last = p == payload;
                got.push((t, p));
                if last {
                    return got;
                }
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn granted(code: SubscribeReasonCode) -> bool {
    matches!(code, SubscribeReasonCode::Success(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_publish_as_another_device() {
    let broker = secure_broker().await;
    let mut ingest = Client::connect(broker.port, "sccr-ingest", "pw-ingest").await;
    assert!(granted(ingest.subscribe("sccr/v1/devices/+/telemetry").await));
    assert!(granted(ingest.subscribe("sccr/v1/devices/+/status").await));
    let mut device = Client::connect(broker.port, "loop-1", "pw-loop-1").await;
    // Forged first, then its own: same connection, so had the forgery been delivered it
    // would arrive before the genuine message.
    assert_eq!(device.publish("sccr/v1/devices/loop-2/telemetry", "forged").await, PubAckReason::NotAuthorized);
    assert_eq!(device.publish("sccr/v1/devices/loop-2/status", "forged-status").await, PubAckReason::NotAuthorized);
    assert_eq!(device.publish("sccr/v1/devices/loop-1/commands", "self-command").await, PubAckReason::NotAuthorized);
    assert_eq!(device.publish("sccr/v1/devices/loop-1/telemetry", "genuine").await, PubAckReason::Success);
    let got = ingest.messages_until("genuine").await;
    assert_eq!(got, vec![("sccr/v1/devices/loop-1/telemetry".to_owned(), "genuine".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_read_another_devices_commands() {
    let broker = secure_broker().await;
    let mut spy = Client::connect(broker.port, "loop-2", "pw-loop-2").await;
    // Mosquitto 2.0 may grant the subscription itself (0x00 in SUBACK); what the ACL
    // guarantees is that no message the device may not read is ever delivered.
    let _ = spy.subscribe("sccr/v1/devices/loop-1/commands").await;
    let _ = spy.subscribe("sccr/v1/devices/+/commands").await;
    let _ = spy.subscribe("#").await;
    assert!(granted(spy.subscribe("sccr/v1/devices/loop-2/commands").await));
    let mut api = Client::connect(broker.port, "sccr-api", "pw-api").await;
    assert_eq!(api.publish("sccr/v1/devices/loop-1/commands", "for-loop-1").await, PubAckReason::Success);
    assert_eq!(api.publish("sccr/v1/devices/loop-2/commands", "for-loop-2").await, PubAckReason::Success);
    let got = spy.messages_until("for-loop-2").await;
    assert!(got.iter().all(|(t, _)| t == "sccr/v1/devices/loop-2/commands"), "loop-2 read another device's commands: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_account_reads_every_device_also_through_a_shared_subscription() {
    let broker = secure_broker().await;
    let mut ingest = Client::connect(broker.port, "sccr-ingest", "pw-ingest").await;
    assert!(granted(ingest.subscribe("$share/sccr/sccr/v1/devices/+/telemetry").await));
    assert!(granted(ingest.subscribe("$share/sccr/sccr/v1/devices/+/commands/ack").await));
    let mut d1 = Client::connect(broker.port, "loop-1", "pw-loop-1").await;
    let mut d2 = Client::connect(broker.port, "loop-2", "pw-loop-2").await;
    assert_eq!(d1.publish("sccr/v1/devices/loop-1/telemetry", "one").await, PubAckReason::Success);
    assert_eq!(d2.publish("sccr/v1/devices/loop-2/commands/ack", "two").await, PubAckReason::Success);
    let mut got = ingest.messages_until("one").await;
    if !got.iter().any(|(_, p)| p == "two") {
        got.extend(ingest.messages_until("two").await);
    }
    got.sort();
    assert_eq!(
        got,
        vec![("sccr/v1/devices/loop-1/telemetry".to_owned(), "one".to_owned()), ("sccr/v1/devices/loop-2/commands/ack".to_owned(), "two".to_owned())]
    );
    // The API account follows acknowledgements but does not read telemetry.
    let mut api = Client::connect(broker.port, "sccr-api", "pw-api").await;
    let _ = api.subscribe("sccr/v1/devices/loop-1/telemetry").await;
    assert!(granted(api.subscribe("sccr/v1/devices/loop-1/commands/ack").await));
    assert_eq!(d1.publish("sccr/v1/devices/loop-1/telemetry", "not-for-api").await, PubAckReason::Success);
    assert_eq!(d1.publish("sccr/v1/devices/loop-1/commands/ack", "ack-for-api").await, PubAckReason::Success);
    let got = api.messages_until("ack-for-api").await;
    assert_eq!(got, vec![("sccr/v1/devices/loop-1/commands/ack".to_owned(), "ack-for-api".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_user_and_anonymous_are_refused() {
    let broker = secure_broker().await;
    for (user, pass) in [("loop-1", "wrong"), ("nobody", "pw-loop-1"), ("sccr-ingest", "")] {
        let mut c = Client::connect(broker.port, user, pass).await;
        match c.next().await {
            Seen::Refused(why) => assert!(!why.is_empty()),
            other => panic!("{user}/{pass} was not refused: {other:?}"),
        }
    }
    let mut opts = MqttOptions::new("anonymous", "127.0.0.1", broker.port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (_client, mut eventloop) = AsyncClient::new(opts, 10);
    let first = tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await.expect("an answer");
    assert!(first.is_err(), "an anonymous client was accepted: {first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_service_accounts_use_the_live_bus() {
    let broker = secure_broker().await;
    // Readers and writers on separate connections (a writer waiting for its PUBACK skips
    // what it receives).
    let mut api = Client::connect(broker.port, "sccr-api", "pw-api").await;
    assert!(granted(api.subscribe("sccr/v1/live/events").await));
    assert!(granted(api.subscribe("sccr/v1/control").await));
    let mut ingest = Client::connect(broker.port, "sccr-ingest", "pw-ingest").await;
    assert!(granted(ingest.subscribe("sccr/v1/control").await));
    // A device can neither forge live state for the wall nor control messages.
    let mut device = Client::connect(broker.port, "loop-1", "pw-loop-1").await;
    assert_eq!(device.publish("sccr/v1/live/events", "forged-live").await, PubAckReason::NotAuthorized);
    assert_eq!(device.publish("sccr/v1/control", "forged-control").await, PubAckReason::NotAuthorized);
    // The API account does not publish live state; ingest does, and the API asks ingest.
    let mut api_writer = Client::connect(broker.port, "sccr-api", "pw-api").await;
    let mut ingest_writer = Client::connect(broker.port, "sccr-ingest", "pw-ingest").await;
    assert_eq!(api_writer.publish("sccr/v1/live/events", "api-live").await, PubAckReason::NotAuthorized);
    assert_eq!(ingest_writer.publish("sccr/v1/live/events", "live").await, PubAckReason::Success);
    assert_eq!(api_writer.publish("sccr/v1/control", "control").await, PubAckReason::Success);
    let got = api.messages_until("control").await;
    assert_eq!(
        got,
        vec![("sccr/v1/live/events".to_owned(), "live".to_owned()), ("sccr/v1/control".to_owned(), "control".to_owned())],
        "only the genuine messages arrive"
    );
    assert_eq!(ingest.messages_until("control").await, vec![("sccr/v1/control".to_owned(), "control".to_owned())]);
}
