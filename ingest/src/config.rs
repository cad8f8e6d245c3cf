//! Ingest settings.

use std::time::Duration;

use telemetry::ValidationConfig;

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
    pub host: String,
    pub port: u16,
    /// MQTT client id; must be stable across restarts so the persistent session resumes.
    pub client_id: String,
    /// Shared-subscription group: ingest processes in one group split the load.
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
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "sccr-ingest-1".into(),
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
        }
    }
}
