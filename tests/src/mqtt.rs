//! A small MQTT 5 client for broker tests: what it sees (messages, acknowledgements, a
//! refusal or a closed connection) arrives in order on a channel, and each wait has a
//! deadline.

use std::time::Duration;

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
