//! `sccr` configuration: one TOML file, overridden by `SCCR_<SECTION>__<KEY>` environment
//! variables, unknown keys refused, every problem reported at once with its key.
//!
//! This module holds the settings and their defaults; [`load`] reads a file and the
//! environment into them, [`plain`] words every parse and type error for an operator,
//! [`validate`] checks the values; `default.toml` is the commented file that
//! `sccr generate-config` prints.

mod load;
mod plain;
#[cfg(test)]
mod tests;
mod validate;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use telemetry::duration_serde::deserialize as duration;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mqtt: MqttSection,
    pub provisioning: ProvisioningSection,
    pub database: DatabaseSection,
    pub retention: RetentionSection,
    pub api: ApiSection,
    pub ingest: IngestSection,
    pub writer: WriterSection,
    pub stream: StreamSection,
    /// Learned time-of-week baselines (`telemetry::baseline`).
    pub baselines: BaselinesSection,
    /// Short-term forecasts of the segments' speed and LOS (`stream::forecast`).
    pub forecasts: stream::ForecastSettings,
    pub segments: SegmentsSection,
    /// `sccr segments import`: the property mapping and device linking.
    pub cadastre: telemetry::cadastre::CadastreConfig,
    pub webhooks: WebhooksSection,
    pub wall: WallSection,
    /// The alert rules (the stream's rules document; see `stream::alert::rule`).
    pub alerts: stream::AlertRulesConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// "5" or "3.1.1" (brokers without MQTT 5: NATS, RabbitMQ before 3.13).
    pub protocol: ingest::Protocol,
    pub host: String,
    pub port: u16,
    /// Other nodes of a broker cluster, `host:port`, tried in turn when the connection fails.
    pub failover: Vec<String>,
    pub client_id: String,
    pub subscription: Subscription,
    pub group: String,
    pub username: Option<String>,
    pub password: Option<String>,
    #[serde(deserialize_with = "duration")]
    pub keep_alive: Duration,
    #[serde(deserialize_with = "duration")]
    pub session_expiry: Duration,
    pub receive_maximum: u16,
}

impl MqttSection {
    /// The `failover` nodes, parsed (`validate` names the bad ones).
    pub fn failover_brokers(&self) -> Vec<(String, u16)> {
        self.failover.iter().filter_map(|b| mqtt_client::parse_broker(b).ok()).collect()
    }
}

/// `[provisioning]`: how device credentials and topic rights reach the broker
/// (`links::provisioning`). A section of its own, not `[mqtt.provisioning]`, so that the
/// environment can carry its secret (`SCCR_PROVISIONING__PASSWORD`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisioningSection {
    pub mode: links::provisioning::ProvisioningMode,
    /// An account with the dynamic security plugin's admin role (mode `dynsec`).
    pub username: Option<String>,
    pub password: Option<String>,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub reconcile_interval: Duration,
}

impl Default for ProvisioningSection {
    fn default() -> Self {
        Self {
            mode: links::provisioning::ProvisioningMode::PasswordFile,
            username: None,
            password: None,
            timeout: Duration::from_secs(5),
            reconcile_interval: Duration::from_secs(60),
        }
    }
}

impl ProvisioningSection {
    pub(super) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let dynsec = self.mode == links::provisioning::ProvisioningMode::Dynsec;
        let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        if dynsec && !(given(&self.username) && given(&self.password)) {
            out.push("provisioning.username, provisioning.password: both are required with provisioning.mode = \"dynsec\" (an account with the dynamic security plugin's admin role)".to_owned());
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&self.timeout) {
            out.push("provisioning.timeout: must be between 100ms and 60s".to_owned());
        }
        if self.reconcile_interval < Duration::from_secs(1) {
            out.push("provisioning.reconcile_interval: must be at least 1s".to_owned());
        }
        out
    }

    /// The dynsec link's settings (mode `dynsec`): the broker of `[mqtt]`, a client id of
    /// its own.
    pub fn dynsec(&self, mqtt: &MqttSection) -> Option<links::provisioning::DynsecConfig> {
        (self.mode == links::provisioning::ProvisioningMode::Dynsec).then(|| {
            links::provisioning::DynsecConfig {
                host: mqtt.host.clone(),
                port: mqtt.port,
                client_id: format!("{}-provisioning", mqtt.client_id),
                username: self.username.clone().unwrap_or_default(),
                password: self.password.clone().unwrap_or_default(),
                keep_alive: mqtt.keep_alive,
                timeout: self.timeout,
                reconcile_interval: self.reconcile_interval,
            }
        })
    }
}

/// A retention period, or "forever".
fn retention<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct Retention;
    impl serde::de::Visitor<'_> for Retention {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(r#""forever" or a duration like "90d" or "400days""#)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            if s == "forever" {
                return Ok(None);
            }
            humantime::parse_duration(s)
                .map(Some)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(s), &self))
        }
    }
    d.deserialize_str(Retention)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    pub url: String,
    /// Other hosts that may become the primary (`postgres://…`, the same database), tried
    /// when the primary is lost: the store writes to whichever is writable.
    pub failover_urls: Vec<String>,
    /// How often the hosts are checked for the primary when `failover_urls` is set.
    #[serde(deserialize_with = "duration")]
    pub failover_probe_interval: Duration,
    /// A hot standby that history and exports may read from (docs/replication.md).
    pub read_url: Option<String>,
    /// Reads go to the primary instead of `read_url` while the standby is further behind.
    #[serde(deserialize_with = "duration")]
    pub max_read_lag: Duration,
    pub max_connections: u32,
    pub timescaledb: store::TimescaleMode,
    pub write_method: store::WriteMethod,
    pub reset_sessions: bool,
    pub partitions_ahead_days: u32,
    #[serde(deserialize_with = "duration")]
    pub rollup_merge_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub maintenance_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    #[serde(deserialize_with = "retention")]
    pub raw: Option<Duration>,
    #[serde(deserialize_with = "retention")]
    pub rollup_1m: Option<Duration>,
    #[serde(deserialize_with = "retention")]
    pub rollup_1h: Option<Duration>,
    #[serde(deserialize_with = "retention")]
    pub rollup_1d: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    pub compress_after: Duration,
}

impl Default for RetentionSection {
    fn default() -> Self {
        let r = store::Retention::default();
        Self {
            raw: r.raw,
            rollup_1m: r.rollup_1m,
            rollup_1h: r.rollup_1h,
            rollup_1d: r.rollup_1d,
            compress_after: store::StoreOptions::default().compress_after,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    pub listen: String,
    /// An admin token created at start if absent (deployments that provision their first
    /// admin from a secret); leave unset and use `sccr token create` otherwise.
    pub bootstrap_admin_token: Option<String>,
    /// Failed authentications allowed per client address per minute before 429s (0: no limit).
    pub auth_failures_per_minute: u32,
    /// A connection whose request head has not arrived in this time is closed (also the
    /// idle time allowed between keep-alive requests).
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// A request not answered in this time gets 503 (streamed answers and websocket
    /// sessions are not cut).
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Connections served at once, websockets included; more are answered 503.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subscription {
    Exclusive,
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownDevices {
    AutoRegister,
    Reject,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    pub max_payload_bytes: usize,
    #[serde(deserialize_with = "duration")]
    pub max_future_skew: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_past_age: Duration,
    pub unknown_devices: UnknownDevices,
    pub max_pending_readings: usize,
    /// Device affinity (docs/scale-out.md#device-affinity): devices map to this many
    /// partitions, each owned by one ingest replica at a time. 1: no partitioning.
    pub partitions: u16,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterSection {
    pub max_batch_readings: usize,
    #[serde(deserialize_with = "duration")]
    pub max_batch_age: Duration,
    pub queue_messages: usize,
    /// `/readyz` answers 503 while the oldest uncommitted batch is older than this.
    #[serde(deserialize_with = "duration")]
    pub stall_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSection {
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    #[serde(deserialize_with = "duration")]
    pub watermark_delay: Duration,
    #[serde(deserialize_with = "duration")]
    pub allowed_lateness: Duration,
    /// How often the alert engine's state (open alerts, timers) is saved to the store.
    #[serde(deserialize_with = "duration")]
    pub state_save_interval: Duration,
    /// How often segments and device→segment links are re-read from the store.
    #[serde(deserialize_with = "duration")]
    pub registry_refresh: Duration,
}

/// Learned baselines: what they are learned from and how often they are refreshed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselinesSection {
    pub enabled: bool,
    /// Weeks of minute rollups each slot is learned from (1..=52).
    pub weeks: u32,
    /// Slots learned from fewer samples are not stored (1..=52, at most `weeks`).
    pub min_samples: u32,
    /// The spread's relative floor, percent of the centre (0..=100).
    pub spread_floor_pct: f64,
    /// Local time: an IANA time zone (summer time followed). Neither this nor
    /// `utc_offset_minutes`: Europe/Rome (Florence).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Local time as a fixed offset east of UTC in minutes, a multiple of 15 (instead of
    /// `timezone`).
    #[serde(default)]
    pub utc_offset_minutes: Option<i32>,
    /// Local days not learned from, `YYYY-MM-DD`.
    pub holidays: Vec<String>,
    /// How often closed slots are learned (at least 1m).
    #[serde(deserialize_with = "duration")]
    pub refresh_interval: Duration,
}

impl Default for BaselinesSection {
    fn default() -> Self {
        Self {
            enabled: true,
            weeks: 4,
            min_samples: 2,
            spread_floor_pct: 10.0,
            timezone: None,
            utc_offset_minutes: None,
            holidays: Vec::new(),
            refresh_interval: Duration::from_secs(15 * 60),
        }
    }
}

impl BaselinesSection {
    /// The learning settings (the values validated).
    pub fn learn_settings(&self) -> store::baselines::LearnSettings {
        store::baselines::LearnSettings {
            weeks: self.weeks,
            min_samples: self.min_samples,
            clock: self.clock(),
            floor: telemetry::baseline::SpreadFloor { relative: self.spread_floor_pct / 100.0 },
            holidays: self
                .holidays
                .iter()
                .filter_map(|d| telemetry::baseline::parse_day(d))
                .collect(),
        }
    }

    /// The local time of the slots (the values validated).
    pub fn clock(&self) -> telemetry::baseline::SlotClock {
        use telemetry::baseline::SlotClock;
        match (&self.timezone, self.utc_offset_minutes) {
            (Some(zone), _) => SlotClock::zone(zone),
            (None, Some(offset)) => SlotClock::new(offset),
            (None, None) => SlotClock::zone(DEFAULT_TIMEZONE),
        }
        .unwrap_or_default()
    }
}

/// The slots' time zone when `[baselines]` names none.
pub const DEFAULT_TIMEZONE: &str = "Europe/Rome";

impl BaselinesSection {}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentsSection {
    /// GeoJSON file of road segments loaded into an empty store; absent: the Florence seed.
    pub seed: Option<PathBuf>,
}

/// The wall dashboard's map.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WallSection {
    /// Empty: the built-in offline context layer; an http(s) XYZ template with {z}, {x}
    /// and {y}; or the path of a `.pmtiles` file, served at `/basemap.pmtiles`.
    pub basemap: String,
    /// Credit shown on the map for the basemap (at most 300 characters).
    pub basemap_attribution: String,
    /// Deepest zoom the basemap has tiles for (1..=22).
    pub basemap_max_zoom: u8,
}

impl Default for WallSection {
    fn default() -> Self {
        Self {
            basemap: String::new(),
            basemap_attribution: String::new(),
            basemap_max_zoom: dashboard_api::basemap::DEFAULT_MAX_ZOOM,
        }
    }
}

impl WallSection {
    /// The settings the API serves; every problem is named with its key.
    pub fn settings(&self) -> Result<dashboard_api::basemap::WallSettings, Vec<String>> {
        use dashboard_api::basemap::{Basemap, WallSettings, MAX_ATTRIBUTION};
        let mut errors = Vec::new();
        let basemap = Basemap::parse(&self.basemap)
            .map_err(|e| errors.push(format!("wall.basemap: {e}")))
            .unwrap_or_default();
        let attribution = self.basemap_attribution.trim();
        if attribution.chars().count() > MAX_ATTRIBUTION {
            errors.push(format!(
                "wall.basemap_attribution: must be at most {MAX_ATTRIBUTION} characters"
            ));
        }
        if attribution.chars().any(char::is_control) {
            errors.push("wall.basemap_attribution: must not contain control characters".into());
        }
        if let Some(problem) =
            validate::whole("wall.basemap_max_zoom", self.basemap_max_zoom.into())
        {
            errors.push(problem);
        }
        if errors.is_empty() {
            Ok(WallSettings {
                basemap,
                attribution: attribution.to_owned(),
                max_zoom: self.basemap_max_zoom,
            })
        } else {
            Err(errors)
        }
    }
}

/// The outbox dispatcher: webhook deliveries as CloudEvents.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksSection {
    /// Run the dispatcher in this process (any number of processes may).
    pub enabled: bool,
    /// The CloudEvents `source` of every event.
    pub source: String,
    /// The payload of subscriptions created without a `format`: "cloudevents" or "ngsi-ld".
    pub payload: store::WebhookFormat,
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Attempts (the first included) before a delivery is dead.
    pub max_attempts: u32,
    #[serde(deserialize_with = "duration")]
    pub backoff_base: Duration,
    #[serde(deserialize_with = "duration")]
    pub backoff_cap: Duration,
    pub concurrency: usize,
    /// Events delivered to every subscription are deleted after this long.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
    /// Where webhooks may be delivered: host names, `*.domain`, IP addresses, networks in
    /// CIDR form. Empty: anywhere but link-local and cloud metadata addresses.
    pub allowed_destinations: Vec<String>,
    /// PEM CA certificates trusted for https receivers instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain and key presented to https receivers (mutual TLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl WebhooksSection {
    /// The allow-list of destinations (validated with the configuration).
    pub fn destinations(&self) -> Result<links::DestinationPolicy, ConfigError> {
        links::DestinationPolicy::parse(&self.allowed_destinations).map_err(|errors| {
            ConfigError::invalid(errors.iter().map(ToString::to_string).collect())
        })
    }

    pub fn tls_files(&self) -> links::TlsFiles {
        links::TlsFiles {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }
}

impl Default for WebhooksSection {
    fn default() -> Self {
        Self {
            enabled: true,
            source: "urn:sccr:firenze".into(),
            payload: store::WebhookFormat::CloudEvents,
            poll_interval: Duration::from_millis(500),
            request_timeout: Duration::from_secs(10),
            max_attempts: 12,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(600),
            concurrency: 16,
            retention: Duration::from_secs(7 * 86_400),
            allowed_destinations: Vec::new(),
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }
}

impl Default for MqttSection {
    fn default() -> Self {
        Self {
            protocol: ingest::Protocol::V5,
            host: "127.0.0.1".into(),
            port: 1883,
            failover: Vec::new(),
            client_id: "sccr-ingest-1".into(),
            subscription: Subscription::Exclusive,
            group: "sccr-ingest".into(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            session_expiry: Duration::from_secs(7 * 24 * 3600),
            receive_maximum: 1000,
        }
    }
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/sccr".into(),
            failover_urls: Vec::new(),
            failover_probe_interval: store::StoreOptions::default().failover_probe_interval,
            read_url: None,
            max_read_lag: Duration::from_secs(5),
            max_connections: 8,
            timescaledb: store::TimescaleMode::Auto,
            write_method: store::WriteMethod::Copy,
            reset_sessions: false,
            partitions_ahead_days: 3,
            rollup_merge_interval: Duration::from_millis(500),
            maintenance_interval: Duration::from_secs(3_600),
        }
    }
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            bootstrap_admin_token: None,
            auth_failures_per_minute: dashboard_api::auth::MAX_FAILURES,
            header_timeout: dashboard_api::server::ServerLimits::default().header_timeout,
            request_timeout: dashboard_api::server::ServerLimits::default().request_timeout,
            max_connections: dashboard_api::server::ServerLimits::default().max_connections,
        }
    }
}

impl Default for IngestSection {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 * 1024,
            max_future_skew: Duration::from_secs(600),
            max_past_age: Duration::from_secs(7 * 24 * 3600),
            unknown_devices: UnknownDevices::AutoRegister,
            max_pending_readings: 50_000,
            partitions: 1,
        }
    }
}

impl Default for WriterSection {
    fn default() -> Self {
        Self {
            max_batch_readings: 5_000,
            max_batch_age: Duration::from_millis(50),
            queue_messages: 10_000,
            stall_after: Duration::from_secs(10),
        }
    }
}

impl Default for StreamSection {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            watermark_delay: Duration::from_secs(5),
            allowed_lateness: Duration::from_secs(60),
            state_save_interval: Duration::from_secs(30),
            registry_refresh: Duration::from_secs(30),
        }
    }
}

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named could not be read (its I/O error is part of the message, not a
    /// separate cause, so that it is printed once).
    #[error("cannot read the configuration file {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    /// Every problem found, one `key: message` each, in the file (or text) `origin`.
    #[error("{}", report(origin, problems))]
    Invalid { origin: String, problems: Vec<String> },
}

impl ConfigError {
    /// Problems of a configuration that is not (or not only) a file's.
    pub fn invalid(problems: Vec<String>) -> Self {
        Self::Invalid { origin: "the configuration".into(), problems }
    }
}

/// One `  - key: message` line per problem, then their count.
fn report(origin: &str, problems: &[String]) -> String {
    let mut out = String::new();
    for p in problems {
        out.push_str("  - ");
        out.push_str(p);
        out.push('\n');
    }
    let n = problems.len();
    out.push_str(&format!("{n} problem{} in {origin}", if n == 1 { "" } else { "s" }));
    out
}

/// The commented default file printed by `sccr generate-config`.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");
