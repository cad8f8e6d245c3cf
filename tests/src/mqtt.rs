//! MQTT 5 clients for tests: [`Client`], a user's connection for broker tests, whose
//! sightings (messages, acknowledgements, a refusal or a closed connection) arrive in
//! order on a channel, each wait with a deadline; [`MqttProbe`], a subscriber collecting
//! what arrives; and [`publish_all`], publishing at QoS 1 until every PUBACK.

use std::time::Duration;

use anyhow::{Context, Result};

use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use tokio::sync::mpsc::UnboundedReceiver;

/// What a [`Client`] saw.
#[derive(Debug)]
pub enum Seen {
    Message(String, Vec<u8>),
    SubAck(Vec<SubscribeReasonCode>),
    PubAck(PubAckReason),
    /// The broker refused the connection or closed it (the client stops there).
    Refused(String),
}

/// A connection as a user, polled by a task of its own.
pub struct Client {
    pub client: AsyncClient,
    pub rx: UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    pub async fn connect(port: u16, user: &str, pass: &str) -> Self {
        let mut opts =
            MqttOptions::new(format!("{user}-{}", crate::free_port()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30)).set_credentials(user, pass);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let seen = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => Seen::Message(
                        String::from_utf8_lossy(&p.topic).into_owned(),
                        p.payload.to_vec(),
                    ),
                    Ok(Event::Incoming(Packet::SubAck(s))) => Seen::SubAck(s.return_codes),
                    Ok(Event::Incoming(Packet::PubAck(a))) => Seen::PubAck(a.reason),
                    Ok(_) => continue,
                    Err(ConnectionError::ConnectionRefused(code)) => {
                        Seen::Refused(format!("{code:?}"))
                    }
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

    /// Wait until the broker refuses or closes the connection (other events skipped).
    pub async fn closed(&mut self) -> String {
        loop {
            if let Seen::Refused(why) = self.next().await {
                return why;
            }
        }
    }

    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("an MQTT event in time")
            .expect("event loop running")
    }

    pub async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        loop {
            if let Seen::SubAck(codes) = self.next().await {
                return codes[0];
            }
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: &str) -> PubAckReason {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
        loop {
            if let Seen::PubAck(reason) = self.next().await {
                return reason;
            }
        }
    }

    /// Messages received until one with `payload` arrives (that one included).
    pub async fn messages_until(&mut self, payload: &str) -> Vec<(String, String)> {
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

pub fn granted(code: SubscribeReasonCode) -> bool {
    matches!(code, SubscribeReasonCode::Success(_))
}

/// Publish with a real MQTT 5 client at QoS 1 and wait for every PUBACK.
pub async fn publish_all(
    port: u16,
    client_id: &str,
    messages: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    publish_all_with(mqtt_client::Protocol::V5, port, client_id, messages).await
}

/// [`publish_all`] over the given MQTT protocol version.
pub async fn publish_all_with(
    protocol: mqtt_client::Protocol,
    port: u16,
    client_id: &str,
    messages: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    use mqtt_client::{Event, Options, QoS};
    let mut opts = Options::new(protocol, client_id.to_owned(), "127.0.0.1".into(), port);
    opts.clean_start = true;
    let (client, mut eventloop) = mqtt_client::new_client(&opts, 100);
    let total = messages.len();
    let publisher = tokio::spawn(async move {
        for (topic, payload) in messages {
            client.publish(topic, QoS::AtLeastOnce, false, payload).await?;
        }
        Ok::<_, mqtt_client::ClientError>(client)
    });
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked < total {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .context("publishing timed out")?;
        if let Event::PubAck { .. } = event.context("publisher connection")? {
            acked += 1;
        }
    }
    let client = publisher.await??;
    let _ = client.disconnect().await;
    Ok(())
}

/// An MQTT 5 client for tests: subscribes to `filters` and collects what arrives.
pub struct MqttProbe {
    pub client: rumqttc::v5::AsyncClient,
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>, bool)>,
    task: tokio::task::JoinHandle<()>,
}

impl MqttProbe {
    pub async fn connect(port: u16, client_id: &str, filters: &[&str]) -> Result<Self> {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        // Live bus messages run to hundreds of kilobytes (rumqttc's default limit is 10 KiB).
        opts.set_max_packet_size(Some(4 * 1024 * 1024));
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).await?;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    if tx.send((topic, p.payload.to_vec(), p.retain)).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Self { client, rx, task })
    }

    /// The next message on `topic` whose payload satisfies `pred`, within `timeout`.
    pub async fn expect(
        &mut self,
        topic: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            let Ok(Some((t, payload, _))) = next else {
                panic!("no matching message on {topic} within {timeout:?}")
            };
            if t == topic {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&payload) {
                    if pred(&v) {
                        return v;
                    }
                }
            }
        }
    }

    /// The next message already received (topic, payload), without waiting.
    pub fn try_next(&mut self) -> Option<(String, Vec<u8>)> {
        self.rx.try_recv().ok().map(|(t, p, _)| (t, p))
    }

    pub async fn publish(&self, topic: &str, payload: &str) -> Result<()> {
        self.client
            .publish(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload.as_bytes().to_vec(),
            )
            .await?;
        Ok(())
    }
}

impl Drop for MqttProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}
