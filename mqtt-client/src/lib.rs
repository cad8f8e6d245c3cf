//! One MQTT client over the two protocol versions rumqttc speaks: MQTT 5 (`rumqttc::v5`)
//! and MQTT 3.1.1 (`rumqttc`'s v4 client), chosen at run time by [`Protocol`]. Ingest, the
//! edge agent and the simulator drive this one interface, so each has one code path.
//!
//! What MQTT 3.1.1 lacks degrades as follows (see `docs/broker-cluster.md`):
//! - session expiry: a 3.1.1 session without clean start lives as long as the broker keeps
//!   it (its own setting: Mosquitto's `persistent_client_expiration`, NATS keeps it in
//!   JetStream until the client connects with a clean session);
//! - receive maximum: the broker's own in-flight window bounds what it sends us
//!   unacknowledged (Mosquitto `max_inflight_messages`, NATS `mqtt.max_ack_pending`);
//!   ingest still never acknowledges before its commit, so nothing is lost, only the
//!   window is the broker's;
//! - maximum packet size: enforced by the client on what it receives (rumqttc refuses a
//!   larger packet) instead of being announced to the broker;
//! - PUBACK reason codes: a 3.1.1 PUBACK always means accepted;
//! - shared subscriptions: `$share/{group}/…` is only a topic filter; brokers that
//!   implement shared subscriptions for 3.1.1 clients (EMQX, HiveMQ, Mosquitto) honour it,
//!   others treat it as a plain (never matching) topic;
//! - user properties and message expiry: not sent (SCCR uses neither).
//!
//! Either version can fail over between the nodes of a broker cluster
//! ([`Options::failover`]).

/// Parse `host:port` (a `failover` entry of a configuration file).
pub fn parse_broker(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| format!("must be host:port, got {s:?}"))?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_owned(), p)),
        _ => Err(format!("must be host:port with a port from 1 to 65535, got {s:?}")),
    }
}

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5 as p5;
pub use rumqttc::{QoS, Transport};

/// The MQTT protocol version spoken to the broker.
/// Written `"5"` (or `5`) and `"3.1.1"` in configuration files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// MQTT 5.0 (Mosquitto 2, EMQX, HiveMQ, RabbitMQ 3.13+).
    #[default]
    V5,
    /// MQTT 3.1.1 (NATS server, RabbitMQ before 3.13, and every MQTT 5 broker too).
    V311,
}

impl<'de> serde::Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Protocol;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#""5" or "3.1.1""#)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Protocol, E> {
                s.parse().map_err(|_| E::invalid_value(serde::de::Unexpected::Str(s), &self))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Protocol, E> {
                match n {
                    5 => Ok(Protocol::V5),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Unsigned(n), &self)),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Protocol, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(n), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Protocol {
    /// The configuration spelling: `"5"` or `"3.1.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V5 => "5",
            Protocol::V311 => "3.1.1",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "5" | "5.0" => Ok(Protocol::V5),
            "3.1.1" | "311" => Ok(Protocol::V311),
            other => Err(format!("must be \"5\" or \"3.1.1\", got {other:?}")),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Last Will: what the broker publishes for us when our connection is lost.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

/// Connection settings common to both protocol versions. Fields marked "MQTT 5" are not
/// sent over 3.1.1 (the crate documentation says what takes their place).
#[derive(Clone)]
pub struct Options {
    pub protocol: Protocol,
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    /// False: resume the session the broker kept for this client id.
    pub clean_start: bool,
    /// MQTT 5: how long the broker keeps the session after a disconnection.
    pub session_expiry: Option<Duration>,
    /// MQTT 5: QoS 1 messages the broker may have in flight to us unacknowledged.
    pub receive_maximum: Option<u16>,
    /// Largest packet accepted from the broker (announced to it over MQTT 5).
    pub max_packet_size: Option<u32>,
    /// Acknowledge received QoS 1 messages only through [`Client::try_ack`].
    pub manual_acks: bool,
    /// Our own QoS 1 publishes in flight at once (and the size of rumqttc's table of them).
    pub outgoing_inflight: u16,
    pub credentials: Option<(String, String)>,
    pub last_will: Option<Will>,
    pub transport: Option<Transport>,
    /// Other nodes of the broker's cluster: after a failed connection the next one is
    /// tried, in turn with `host:port`. The session is the cluster's, so it resumes there.
    pub failover: Vec<(String, u16)>,
}

impl Options {
    pub fn new(protocol: Protocol, client_id: String, host: String, port: u16) -> Self {
        Self {
            protocol,
            client_id,
            host,
            port,
            keep_alive: Duration::from_secs(30),
            clean_start: false,
            session_expiry: None,
            receive_maximum: None,
            max_packet_size: None,
            manual_acks: false,
            outgoing_inflight: 100,
            credentials: None,
            last_will: None,
            transport: None,
            failover: Vec::new(),
        }
    }
}

fn qos5(q: QoS) -> v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn qos4(q: v5::mqttbytes::QoS) -> QoS {
    match q {
        v5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        v5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        v5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn v5_options(o: &Options, (host, port): (String, u16)) -> v5::MqttOptions {
    let mut m = v5::MqttOptions::new(o.client_id.clone(), host, port);
    m.set_keep_alive(o.keep_alive)
        .set_clean_start(o.clean_start)
        .set_session_expiry_interval(
            o.session_expiry.map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
        )
        .set_receive_maximum(o.receive_maximum)
        .set_max_packet_size(o.max_packet_size)
        .set_manual_acks(o.manual_acks)
        .set_outgoing_inflight_upper_limit(o.outgoing_inflight);
    if let Some((u, p)) = &o.credentials {
        m.set_credentials(u.clone(), p.clone());
    }
    if let Some(w) = &o.last_will {
        m.set_last_will(p5::LastWill::new(
            w.topic.clone(),
            w.payload.clone(),
            qos5(w.qos),
            w.retain,
            None,
        ));
    }
    if let Some(t) = &o.transport {
        m.set_transport(t.clone());
    }
    m
}

fn v4_options(o: &Options, (host, port): (String, u16)) -> rumqttc::MqttOptions {
    let mut m = rumqttc::MqttOptions::new(o.client_id.clone(), host, port);
    m.set_keep_alive(o.keep_alive)
        .set_clean_session(o.clean_start)
        .set_manual_acks(o.manual_acks)
        .set_inflight(o.outgoing_inflight.max(1));
    // rumqttc's 3.1.1 client refuses incoming packets over 10 KiB unless told.
    let incoming = o.max_packet_size.map_or(1024 * 1024, |n| n as usize);
    m.set_max_packet_size(incoming, incoming.max(256 * 1024));
    if let Some((u, p)) = &o.credentials {
        m.set_credentials(u.clone(), p.clone());
    }
    if let Some(w) = &o.last_will {
        m.set_last_will(rumqttc::LastWill::new(
            w.topic.clone(),
            w.payload.clone(),
            w.qos,
            w.retain,
        ));
    }
    if let Some(t) = &o.transport {
        m.set_transport(t.clone());
    }
    m
}

/// A client and its event loop; `capacity` bounds the request channel between them.
pub fn new_client(o: &Options, capacity: usize) -> (Client, EventLoop) {
    let first = (o.host.clone(), o.port);
    let (client, inner) = match o.protocol {
        Protocol::V5 => {
            let (c, e) = v5::AsyncClient::new(v5_options(o, first), capacity);
            (Client::V5(c), Inner::V5(Box::new(e)))
        }
        Protocol::V311 => {
            let (c, e) = rumqttc::AsyncClient::new(v4_options(o, first), capacity);
            (Client::V311(c), Inner::V311(Box::new(e)))
        }
    };
    (client, EventLoop { inner, options: o.clone(), current: 0 })
}

/// A request could not be queued (the channel is full or the event loop is gone).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(String);

/// The connection failed; the next [`EventLoop::poll`] reconnects.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(transparent)]
    V5(#[from] v5::ConnectionError),
    #[error(transparent)]
    V311(#[from] rumqttc::ConnectionError),
    /// The caller's own end of a relay was closed.
    #[error("the event loop is gone")]
    Gone,
}

/// The client half: requests go through a bounded channel to the [`EventLoop`].
#[derive(Clone)]
pub enum Client {
    V5(v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

fn err<E: std::fmt::Display>(e: E) -> ClientError {
    ClientError(e.to_string())
}

impl Client {
    pub fn protocol(&self) -> Protocol {
        match self {
            Client::V5(_) => Protocol::V5,
            Client::V311(_) => Protocol::V311,
        }
    }

    pub fn try_publish(
        &self,
        topic: impl Into<String>,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let (topic, payload) = (topic.into(), payload.into());
        match self {
            Client::V5(c) => c.try_publish(topic, qos5(qos), retain, payload).map_err(err),
            Client::V311(c) => c.try_publish(topic, qos, retain, payload).map_err(err),
        }
    }

    /// Publish, waiting for room in the request channel.
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let (topic, payload) = (topic.into(), payload.into());
        match self {
            Client::V5(c) => c.publish(topic, qos5(qos), retain, payload).await.map_err(err),
            Client::V311(c) => c.publish(topic, qos, retain, payload).await.map_err(err),
        }
    }

    pub fn try_subscribe(&self, filter: impl Into<String>, qos: QoS) -> Result<(), ClientError> {
        match self {
            Client::V5(c) => c.try_subscribe(filter, qos5(qos)).map_err(err),
            Client::V311(c) => c.try_subscribe(filter, qos).map_err(err),
        }
    }

    pub async fn subscribe(&self, filter: impl Into<String>, qos: QoS) -> Result<(), ClientError> {
        match self {
            Client::V5(c) => c.subscribe(filter, qos5(qos)).await.map_err(err),
            Client::V311(c) => c.subscribe(filter, qos).await.map_err(err),
        }
    }

    /// Acknowledge the received message `pkid` (with manual acks).
    pub fn try_ack(&self, pkid: u16, qos: QoS) -> Result<(), ClientError> {
        match self {
            Client::V5(c) => {
                let mut stub = p5::Publish::new("", qos5(qos), Vec::new(), None);
                stub.pkid = pkid;
                c.try_ack(&stub).map_err(err)
            }
            Client::V311(c) => {
                let mut stub = rumqttc::Publish::new("", qos, Vec::new());
                stub.pkid = pkid;
                c.try_ack(&stub).map_err(err)
            }
        }
    }

    pub fn try_disconnect(&self) -> Result<(), ClientError> {
        match self {
            Client::V5(c) => c.try_disconnect().map_err(err),
            Client::V311(c) => c.try_disconnect().map_err(err),
        }
    }

    pub async fn disconnect(&self) -> Result<(), ClientError> {
        match self {
            Client::V5(c) => c.disconnect().await.map_err(err),
            Client::V311(c) => c.disconnect().await.map_err(err),
        }
    }
}

/// A message received from the broker.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub pkid: u16,
    pub retain: bool,
}

/// What the event loop reports; packets SCCR does not act on are [`Event::Other`].
#[derive(Debug, Clone)]
pub enum Event {
    /// The broker accepted the connection.
    ConnAck {
        session_present: bool,
    },
    Publish(Message),
    /// The broker's answer to our QoS 1 publish `pkid`; `refused` holds the MQTT 5 reason
    /// when it did not accept the message (a 3.1.1 PUBACK always accepts).
    PubAck {
        pkid: u16,
        refused: Option<String>,
    },
    /// Per filter of a SUBSCRIBE: the granted QoS, or `None` when refused.
    SubAck {
        granted: Vec<Option<QoS>>,
    },
    /// Our publish went out with this packet id (in the order publishes were requested).
    OutgoingPublish(u16),
    OutgoingDisconnect,
    Other,
}

/// The connection half: polling it drives the network, reconnecting after an error.
pub struct EventLoop {
    inner: Inner,
    options: Options,
    /// Which broker the next connection goes to: 0 is `host:port`, then `failover`.
    current: usize,
}

enum Inner {
    V5(Box<v5::EventLoop>),
    V311(Box<rumqttc::EventLoop>),
}

impl EventLoop {
    /// The next event; an error means the connection is gone: the next poll reconnects, to
    /// the next broker of [`Options::failover`] when there are several.
    pub async fn poll(&mut self) -> Result<Event, ConnectionError> {
        let event = match &mut self.inner {
            Inner::V5(e) => e.poll().await.map(from_v5).map_err(ConnectionError::from),
            Inner::V311(e) => e.poll().await.map(from_v4).map_err(ConnectionError::from),
        };
        if event.is_err() && !self.options.failover.is_empty() {
            self.current = (self.current + 1) % (1 + self.options.failover.len());
            let next = self.broker();
            match &mut self.inner {
                Inner::V5(e) => e.options = v5_options(&self.options, next),
                Inner::V311(e) => e.mqtt_options = v4_options(&self.options, next),
            }
        }
        event
    }

    /// The broker the current (or next) connection goes to.
    pub fn broker(&self) -> (String, u16) {
        match self.current {
            0 => (self.options.host.clone(), self.options.port),
            i => self.options.failover[i - 1].clone(),
        }
    }
}

fn outgoing(o: rumqttc::Outgoing) -> Event {
    match o {
        rumqttc::Outgoing::Publish(pkid) => Event::OutgoingPublish(pkid),
        rumqttc::Outgoing::Disconnect => Event::OutgoingDisconnect,
        _ => Event::Other,
    }
}

fn from_v5(e: v5::Event) -> Event {
    use p5::{PubAckReason, SubscribeReasonCode as S};
    match e {
        v5::Event::Incoming(p5::Packet::ConnAck(a)) => {
            Event::ConnAck { session_present: a.session_present }
        }
        v5::Event::Incoming(p5::Packet::Publish(p)) => Event::Publish(Message {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload,
            qos: qos4(p.qos),
            pkid: p.pkid,
            retain: p.retain,
        }),
        v5::Event::Incoming(p5::Packet::PubAck(a)) => Event::PubAck {
            pkid: a.pkid,
            refused: (!matches!(
                a.reason,
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers
            ))
            .then(|| format!("{:?}", a.reason)),
        },
        v5::Event::Incoming(p5::Packet::SubAck(a)) => Event::SubAck {
            granted: a
                .return_codes
                .iter()
                .map(|c| match c {
                    S::Success(q) => Some(qos4(*q)),
                    _ => None,
                })
                .collect(),
        },
        v5::Event::Incoming(_) => Event::Other,
        v5::Event::Outgoing(o) => outgoing(o),
    }
}

fn from_v4(e: rumqttc::Event) -> Event {
    use rumqttc::{Packet, SubscribeReasonCode as S};
    match e {
        rumqttc::Event::Incoming(Packet::ConnAck(a)) => {
            Event::ConnAck { session_present: a.session_present }
        }
        rumqttc::Event::Incoming(Packet::Publish(p)) => Event::Publish(Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            pkid: p.pkid,
            retain: p.retain,
        }),
        rumqttc::Event::Incoming(Packet::PubAck(a)) => {
            Event::PubAck { pkid: a.pkid, refused: None }
        }
        rumqttc::Event::Incoming(Packet::SubAck(a)) => Event::SubAck {
            granted: a
                .return_codes
                .iter()
                .map(|c| match c {
                    S::Success(q) => Some(*q),
                    S::Failure => None,
                })
                .collect(),
        },
        rumqttc::Event::Incoming(_) => Event::Other,
        rumqttc::Event::Outgoing(o) => outgoing(o),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_spellings() {
        assert_eq!("5".parse::<Protocol>(), Ok(Protocol::V5));
        assert_eq!("3.1.1".parse::<Protocol>(), Ok(Protocol::V311));
        assert!("4".parse::<Protocol>().unwrap_err().contains("\"5\" or \"3.1.1\""));
        assert_eq!(Protocol::V311.to_string(), "3.1.1");
    }

    #[test]
    fn broker_addresses() {
        assert_eq!(parse_broker("nats-2.city:1883"), Ok(("nats-2.city".into(), 1883)));
        assert!(parse_broker("nats-2").unwrap_err().contains("host:port"));
        assert!(parse_broker(":1883").is_err());
        assert!(parse_broker("h:0").unwrap_err().contains("1 to 65535"));
    }

    /// A failed connection moves the next attempt to the next node, round the list.
    #[tokio::test]
    async fn failover_tries_each_node_in_turn() {
        let dead = |_: ()| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let ports = [dead(()), dead(()), dead(())];
        for protocol in [Protocol::V5, Protocol::V311] {
            let mut o = Options::new(protocol, "f".into(), "127.0.0.1".into(), ports[0]);
            o.failover = ports[1..].iter().map(|p| ("127.0.0.1".to_owned(), *p)).collect();
            let (_client, mut eventloop) = new_client(&o, 4);
            let mut seen = Vec::new();
            for _ in 0..4 {
                seen.push(eventloop.broker().1);
                assert!(eventloop.poll().await.is_err());
            }
            assert_eq!(seen, [ports[0], ports[1], ports[2], ports[0]], "{protocol}");
        }
    }
}
