//! Ingest settings.

use std::time::Duration;

pub use mqtt_client::Protocol;
use telemetry::ValidationConfig;

/// How ingest subscribes to telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionMode {
    /// A plain persistent subscription: one ingest process per broker. Survives broker
    /// restarts on Mosquitto 2.0, which restores plain subscriptions from persistence.
    Exclusive,
    /// An MQTT 5 shared subscription (`$share/{group}/…`): ingest processes in one group
    /// split the load. Needs a broker that persists shared subscriptions across its own
    /// restarts (EMQX, HiveMQ); Mosquitto 2.0.11 does not, and drops telemetry that arrives
    /// after its restart until ingest subscribes again.
    Shared,
}

/// What to do with telemetry from a device that is not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownDevicePolicy {
    /// Register it on first contact.
    AutoRegister,
    /// Dead-letter its messages (reason `unknown_device`).
    Reject,
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// MQTT 5, or 3.1.1 for brokers without MQTT 5 (see `mqtt_client` for what degrades).
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    /// Other nodes of the broker's cluster, tried in turn when the connection fails.
    pub failover: Vec<(String, u16)>,
    /// MQTT client id; must be stable across restarts so the persistent session resumes.
    pub client_id: String,
    pub subscription: SubscriptionMode,
    /// Shared-subscription group (with `SubscriptionMode::Shared`).
    pub group: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    /// How long the broker keeps our session (and queues for it) while we are away.
    pub session_expiry: Duration,
    /// MQTT 5 receive maximum: messages the broker may have in flight to us unacknowledged.
    pub receive_maximum: u16,
    /// Largest packet we accept from the broker. Larger than any payload the broker takes, so
    /// an oversized payload reaches us and is dead-lettered instead of looping.
    pub max_packet_size: u32,
    /// Readings allowed between the broker and the durable commit.
    pub max_pending_readings: usize,
    pub validation: ValidationConfig,
    pub unknown_devices: UnknownDevicePolicy,
    /// Device affinity: the partition this session serves; messages of other partitions'
    /// devices are acknowledged at once, unprocessed. `None`: every message is processed.
    pub partition: Option<crate::PartitionFilter>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            protocol: Protocol::V5,
            host: "127.0.0.1".into(),
            port: 1883,
            failover: Vec::new(),
            client_id: "sccr-ingest-1".into(),
            subscription: SubscriptionMode::Exclusive,
            group: "sccr-ingest".into(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            session_expiry: Duration::from_secs(7 * 24 * 3600),
            receive_maximum: 1_000,
            max_packet_size: 1024 * 1024,
            max_pending_readings: 50_000,
            validation: ValidationConfig::default(),
            unknown_devices: UnknownDevicePolicy::AutoRegister,
            partition: None,
        }
    }
}
