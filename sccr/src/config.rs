//! `sccr` configuration: one TOML file, overridden by `SCCR_<SECTION>__<KEY>` environment
//! variables, unknown keys refused, every invalid value reported at once with its key.

use std::net::SocketAddr;
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
    pub segments: SegmentsSection,
    pub webhooks: WebhooksSection,
    pub wall: WallSection,
    /// The alert rules (the stream's rules document; see `stream::alert::rule`).
    pub alerts: stream::AlertRulesConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    pub host: String,
    pub port: u16,
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
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let dynsec = self.mode == links::provisioning::ProvisioningMode::Dynsec;
        let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        if dynsec && !(given(&self.username) && given(&self.password)) {
            out.push("provisioning.username and provisioning.password are required with provisioning.mode = \"dynsec\" (an account with the dynamic security plugin's admin role)".to_owned());
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&self.timeout) {
            out.push("provisioning.timeout must be between 100ms and 60s".to_owned());
        }
        if self.reconcile_interval < Duration::from_secs(1) {
            out.push("provisioning.reconcile_interval must be at least 1s".to_owned());
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

#[cfg(test)]
mod provisioning_tests {
    use super::*;

    #[test]
    fn dynsec_needs_its_account_and_each_error_names_its_key() {
        let env = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        let c = Config::from_toml(
            "[provisioning]\nmode = \"dynsec\"\nusername = \"sccr-prov\"\n",
            env("SCCR_PROVISIONING__PASSWORD", "s3cret"),
        )
        .unwrap();
        let d = c.provisioning.dynsec(&c.mqtt).unwrap();
        assert_eq!(
            (d.username.as_str(), d.password.as_str(), d.port),
            ("sccr-prov", "s3cret", 1883)
        );
        assert_eq!(d.client_id, "sccr-ingest-1-provisioning");
        assert!(
            Config::default().provisioning.dynsec(&c.mqtt).is_none(),
            "password_file by default"
        );
        let e = Config::from_toml(
            "[provisioning]\nmode = \"dynsec\"\ntimeout = \"1ms\"\nreconcile_interval = \"10ms\"\n",
            [],
        )
        .unwrap_err()
        .to_string();
        for key in [
            "provisioning.username and provisioning.password",
            "provisioning.timeout",
            "provisioning.reconcile_interval",
        ] {
            assert!(e.contains(key), "{key} in {e}");
        }
        let e = Config::from_toml("[provisioning]\nmode = \"acl\"\n", []).unwrap_err().to_string();
        assert!(
            e.contains("provisioning.mode")
                && e.contains("dynsec")
                && e.contains("password_file")
                && e.contains("none"),
            "{e}"
        );
    }
}

/// A retention period, or "forever".
fn retention<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    if s == "forever" {
        return Ok(None);
    }
    humantime::parse_duration(&s).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is neither \"forever\" nor a duration like \"90d\": {e}"
        ))
    })
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    pub url: String,
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
        use dashboard_api::basemap::{Basemap, WallSettings, MAX_ATTRIBUTION, MAX_ZOOM};
        let mut errors = Vec::new();
        let basemap = Basemap::parse(&self.basemap)
            .map_err(|e| errors.push(format!("wall.basemap: {e}")))
            .unwrap_or_default();
        let attribution = self.basemap_attribution.trim();
        if attribution.chars().count() > MAX_ATTRIBUTION {
            errors.push(format!(
                "wall.basemap_attribution must be at most {MAX_ATTRIBUTION} characters"
            ));
        }
        if attribution.chars().any(char::is_control) {
            errors.push("wall.basemap_attribution must not contain control characters".into());
        }
        if !(1..=MAX_ZOOM).contains(&self.basemap_max_zoom) {
            errors.push(format!("wall.basemap_max_zoom must be in 1..={MAX_ZOOM}"));
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
            ConfigError::Invalid(errors.iter().map(ToString::to_string).collect())
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
            host: "127.0.0.1".into(),
            port: 1883,
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

/// A configuration that could not be used; lists every problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Parse(String),
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Read `path` (or start from defaults), apply `SCCR_…` overrides from `env`, validate.
    pub fn load(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|source| ConfigError::Read { path: p.to_path_buf(), source })?,
            None => String::new(),
        };
        Self::from_toml(&text, env)
    }

    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        for (var, value) in env {
            let Some(path) = var.strip_prefix("SCCR_") else { continue };
            let Some((section, key)) = path.split_once("__") else {
                return Err(ConfigError::Env {
                    var,
                    message: "expected SCCR_<SECTION>__<KEY>, e.g. SCCR_DATABASE__URL".into(),
                });
            };
            let section = section.to_ascii_lowercase();
            let key = key.to_ascii_lowercase();
            // A value that reads as TOML (numbers, booleans) is taken as such; anything else is a string.
            let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => {
                    t.insert(key, parsed);
                }
                _ => {
                    return Err(ConfigError::Env {
                        var,
                        message: format!("[{section}] is not a section"),
                    })
                }
            }
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                if path == "." || path.is_empty() {
                    ConfigError::Parse(e.inner().to_string())
                } else {
                    ConfigError::Parse(format!("{path}: {}", e.inner()))
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                errors.push(msg.to_owned());
            }
        };
        check(!self.mqtt.host.is_empty(), "mqtt.host must not be empty");
        check(self.mqtt.port != 0, "mqtt.port must not be 0");
        check(!self.mqtt.client_id.is_empty(), "mqtt.client_id must not be empty");
        check(
            !self.mqtt.group.is_empty() && !self.mqtt.group.contains(['/', '+', '#']),
            "mqtt.group must be non-empty without '/', '+' or '#'",
        );
        check(
            self.mqtt.username.is_some() == self.mqtt.password.is_some(),
            "mqtt.username and mqtt.password go together",
        );
        check(
            self.mqtt.keep_alive >= Duration::from_secs(5),
            "mqtt.keep_alive must be at least 5s",
        );
        check(self.mqtt.receive_maximum > 0, "mqtt.receive_maximum must be at least 1");
        check(
            ["postgres://", "postgresql://", "sqlite:"]
                .iter()
                .any(|p| self.database.url.starts_with(p)),
            "database.url must start with postgres://, postgresql:// or sqlite:",
        );
        check(self.database.max_connections > 0, "database.max_connections must be at least 1");
        check(
            !self.database.rollup_merge_interval.is_zero(),
            "database.rollup_merge_interval must be positive",
        );
        check(
            self.database.maintenance_interval >= Duration::from_secs(1),
            "database.maintenance_interval must be at least 1s",
        );
        let r = &self.retention;
        check(
            r.raw.is_none_or(|d| d >= Duration::from_secs(86_400)),
            "retention.raw must be at least 1d (partitions are days)",
        );
        check(
            r.rollup_1m.is_none_or(|d| d >= Duration::from_secs(86_400))
                && r.rollup_1h.is_none_or(|d| d >= Duration::from_secs(86_400))
                && r.rollup_1d.is_none_or(|d| d >= Duration::from_secs(86_400)),
            "retention.rollup_1m, rollup_1h and rollup_1d must be at least 1d",
        );
        check(
            r.raw.is_none_or(|raw| self.ingest.max_past_age <= raw),
            "ingest.max_past_age must not be longer than retention.raw: a reading older than \
             the raw retention may have lost the raw row that dedupes it, so the store refuses it \
             (dead letter older_than_retention) rather than count it twice; lengthen retention.raw \
             to accept older readings (backfills with `sccr import` are bound by retention.raw too)",
        );
        check(
            self.api.listen.parse::<SocketAddr>().is_ok(),
            "api.listen must be an address like 127.0.0.1:8080",
        );
        check(
            self.api.bootstrap_admin_token.as_ref().is_none_or(|t| t.len() >= 32 && t.chars().all(|c| c.is_ascii_graphic())),
            "api.bootstrap_admin_token must be at least 32 printable characters (e.g. from `openssl rand -hex 32`)",
        );
        check(
            self.api.header_timeout >= Duration::from_millis(100),
            "api.header_timeout must be at least 100ms",
        );
        check(
            self.api.request_timeout >= Duration::from_secs(1),
            "api.request_timeout must be at least 1s",
        );
        check(self.api.max_connections >= 1, "api.max_connections must be at least 1");
        check(self.ingest.max_payload_bytes >= 64, "ingest.max_payload_bytes must be at least 64");
        check(
            self.ingest.max_pending_readings > 0,
            "ingest.max_pending_readings must be at least 1",
        );
        check(self.writer.max_batch_readings > 0, "writer.max_batch_readings must be at least 1");
        check(!self.writer.max_batch_age.is_zero(), "writer.max_batch_age must be positive");
        check(self.writer.queue_messages > 0, "writer.queue_messages must be at least 1");
        check(!self.writer.stall_after.is_zero(), "writer.stall_after must be positive");
        check(self.stream.window >= Duration::from_secs(1), "stream.window must be at least 1s");
        check(
            self.stream.state_save_interval >= Duration::from_secs(1),
            "stream.state_save_interval must be at least 1s",
        );
        check(
            self.stream.registry_refresh >= Duration::from_secs(1),
            "stream.registry_refresh must be at least 1s",
        );
        let w = &self.webhooks;
        check(!w.source.trim().is_empty(), "webhooks.source must not be empty");
        check(
            w.poll_interval >= Duration::from_millis(10),
            "webhooks.poll_interval must be at least 10ms",
        );
        check(
            w.request_timeout >= Duration::from_millis(100),
            "webhooks.request_timeout must be at least 100ms",
        );
        check(w.max_attempts >= 1, "webhooks.max_attempts must be at least 1");
        check(!w.backoff_base.is_zero(), "webhooks.backoff_base must be positive");
        check(
            w.backoff_cap >= w.backoff_base,
            "webhooks.backoff_cap must be at least webhooks.backoff_base",
        );
        check(w.concurrency >= 1, "webhooks.concurrency must be at least 1");
        check(w.retention >= Duration::from_secs(3_600), "webhooks.retention must be at least 1h");
        if let Err(ConfigError::Invalid(list)) = w.destinations() {
            errors.extend(list);
        }
        // The TLS files are read now, so that `check-config` finds an unreadable one.
        errors.extend(w.tls_files().problems().iter().map(ToString::to_string));
        // So is a PMTiles basemap.
        if let Err(list) = self.wall.settings() {
            errors.extend(list);
        }
        if let Err(rule_errors) = self.alerts.validate() {
            errors
                .extend(rule_errors.0.iter().map(|e| format!("alerts.{}: {}", e.path, e.message)));
        }
        errors.extend(self.provisioning.problems());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }
}

/// The commented default file printed by `sccr generate-config`.
pub const DEFAULT_CONFIG: &str = r#"# SCCR configuration. Every key is optional; shown here with its default.
# Any key can be overridden from the environment as SCCR_<SECTION>__<KEY>,
# e.g. SCCR_DATABASE__URL=postgres://sccr@db/sccr.

[mqtt]
host = "127.0.0.1"
port = 1883
# Stable across restarts: the broker keeps this client's session and queues for it.
client_id = "sccr-ingest-1"
# "exclusive": one ingest process per broker, with a plain persistent subscription.
# "shared": ingest processes of one group split the load ($share/<group>/...). Use it only
# on a broker that keeps shared subscriptions across its own restarts (EMQX, HiveMQ):
# Mosquitto 2.0.11 does not, and would drop telemetry after a restart until ingest
# subscribes again.
subscription = "exclusive"
group = "sccr-ingest"
# username = "sccr-ingest"
# password = "..."
keep_alive = "30s"
session_expiry = "7d"
# Messages the broker may have in flight to ingest before our acknowledgements.
receive_maximum = 1000

[provisioning]
# How device credentials and topic rights reach the broker:
# "password_file": the registry keeps password hashes; `sccr mqtt-passwd` and
#   `sccr mqtt-acl` write the broker's files, which apply when it is sent SIGHUP.
# "dynsec": applied at once through Mosquitto's dynamic security plugin, by an account
#   with the plugin's admin role (deploy/mosquitto/sccr-dynsec.conf); a device connects
#   right after its registration answer.
# "none": the broker's credentials are managed outside SCCR.
mode = "password_file"
# username = "sccr-provisioning"
# password = "..."
# How long the plugin's answer is awaited; past it the change is answered as pending.
timeout = "5s"
# How often the broker's clients and roles are brought in line with the registry (also at
# start and whenever the broker comes back).
reconcile_interval = "60s"

[database]
# postgres://user@host:port/db, or sqlite:path/to/file.db
url = "postgres://postgres@127.0.0.1:5432/sccr"
max_connections = 8
# TimescaleDB: "auto" uses the extension where the server offers it, "require" refuses to
# start without it, "off" uses native partitions. Decided once, when the time-series
# tables are first created.
timescaledb = "auto"
# "copy": binary COPY (batches that hold an already stored reading fall back to unnest);
# "unnest": INSERT from arrays, for servers without COPY FROM STDIN.
write_method = "copy"
# Reset session state on each new connection (single-session servers such as PGlite).
reset_sessions = false
# Daily partitions of readings created ahead (native partitions only).
partitions_ahead_days = 3
# How often committed readings are folded into the 1m/1h/1d rollups and latest values.
rollup_merge_interval = "500ms"
# How often partitions are created ahead and retention is enforced.
maintenance_interval = "1h"

[retention]
# How long each level is kept: a duration, or "forever". TimescaleDB applies them as
# retention policies; otherwise maintenance drops raw partitions and deletes old rollups.
raw = "90days"
rollup_1m = "400days"
rollup_1h = "3650days"
rollup_1d = "forever"
# TimescaleDB only: readings and minute rollups older than this are compressed.
compress_after = "7days"

[api]
listen = "127.0.0.1:8080"
# An admin API token created at start if absent (from a secret; at least 32 characters).
# Without it, create tokens with `sccr token create --role admin --name NAME`.
# bootstrap_admin_token = "..."
# Wrong tokens allowed per client address per minute; past them wrong tokens get 429
# (valid tokens from the address are still served). 0: no limit.
auth_failures_per_minute = 20
# A connection is closed when its request head (or, between keep-alive requests, the next
# one) has not arrived in this time.
header_timeout = "10s"
# A request not answered in this time gets 503; streamed exports and websocket sessions
# are not cut.
request_timeout = "30s"
# Connections served at once, websockets included; one more is answered 503 and closed.
# Keep it under the process's descriptor limit (ulimit -n).
max_connections = 20000

[ingest]
max_payload_bytes = 65536
max_future_skew = "10m"
# At most retention.raw: older readings are refused (older_than_retention).
max_past_age = "7d"
# auto_register: devices are registered on first telemetry; reject: dead-letter them.
unknown_devices = "auto_register"
# Readings allowed between the broker and the durable commit (backpressure bound).
max_pending_readings = 50000

[writer]
# A batch is written when it holds this many readings, or when it is this old.
max_batch_readings = 5000
max_batch_age = "50ms"
queue_messages = 10000
# /readyz answers 503 (writer stalled) while the oldest batch not yet committed is older
# than this, e.g. while another session locks the readings table.
stall_after = "10s"

[stream]
window = "1m"
watermark_delay = "5s"
allowed_lateness = "1m"
# How often the alert engine's state (open alerts and their timers) is saved to the
# store; it is also saved at shutdown and restored at start.
state_save_interval = "30s"
# How often road segments and device-to-segment links are re-read from the store.
registry_refresh = "30s"

[segments]
# GeoJSON road segments loaded into an empty store (default: the Florence seed set).
# seed = "deploy/seed/florence-segments.geojson"

[webhooks]
# Deliver the outbox (alert moves, device online/offline, command results) to the webhook
# subscriptions managed at /api/v1/webhooks, as CloudEvents 1.0 (structured JSON) signed
# with X-SCCR-Signature: sha256=HMAC(secret, "<X-SCCR-Timestamp>.<body>").
enabled = true
# The CloudEvents "source" of every event.
source = "urn:sccr:firenze"
# Payload of subscriptions created without a "format": "cloudevents", or "ngsi-ld"
# (alert events carry a FIWARE Smart Data Models Alert entity).
payload = "cloudevents"
poll_interval = "500ms"
request_timeout = "10s"
# Retries: exponential backoff with full jitter, from backoff_base up to backoff_cap;
# a delivery is dead after max_attempts attempts (redeliver through the API).
max_attempts = 12
backoff_base = "1s"
backoff_cap = "10m"
# Deliveries attempted at once (one at a time per subscription and subject, in order).
concurrency = 16
# Events delivered to every subscription are deleted after this long (pending and dead
# ones are kept).
retention = "7d"
# Where webhooks may be delivered: host names ("orchestrator.comune.fi.it", or
# "*.comune.fi.it" for a domain), IP addresses and networks ("10.20.0.0/16"). Empty: any
# address but link-local ones (169.254.0.0/16, fe80::/10) and cloud metadata ones
# (169.254.169.254, fd00:ec2::254, 100.100.100.200); loopback and private networks are
# allowed. A list allows only what it names (add "127.0.0.1" for the demo's localhost).
# Link-local addresses need a listed network inside their range, metadata addresses the
# address itself. The addresses a name resolves to are checked at each delivery.
allowed_destinations = []
# https receivers are verified against the system's CA certificates (/etc/ssl/certs), or
# only against this PEM bundle when set.
# ca_file = "/etc/sccr/orchestrator-ca.pem"
# Mutual TLS: a PEM certificate chain and its PEM private key, presented when asked.
# client_cert = "/etc/sccr/webhooks-client.pem"
# client_key = "/etc/sccr/webhooks-client.key"

[wall]
# What the wall map draws under the segments and devices. Empty: the built-in offline
# context layer (web/geo/florence-context.geojson; nothing is fetched from the internet).
# Or raster tiles from an XYZ server, as an http(s) template with {z}, {x} and {y}
# (e.g. "https://tiles.comune.example/osm/{z}/{x}/{y}.png"), or a PMTiles archive on this
# server's disk (e.g. "/var/lib/sccr/florence.pmtiles"), which must exist and be readable;
# it is served to the screens at /basemap.pmtiles, by byte range, with no token.
basemap = ""
# The credit the map shows for the basemap (at most 300 characters).
basemap_attribution = ""
# The deepest zoom the basemap has tiles for (1..=22).
basemap_max_zoom = 19

[alerts]
# The shipped air-quality rules (EU 2008/50/EC limit values, WHO 2021 PM2.5 guideline).
air_quality_defaults = true
# The longest an operator may shelve an alert (1m to 30d).
max_shelve = "8h"
# Operator positions watching the alerts (1 to 100): the alarm-flood figures on /metrics
# are per position (EEMUA 191: over 10 alerts per position in 10 minutes is a flood).
operator_positions = 1

[alerts.storm]
# New alerts per rule per minute (and burst); further raises fold into one overflow alert.
raises_per_minute = 10
# More than this many devices of one segment raising one rule within group_window fold
# into one alert about the segment (0 turns grouping off).
group_over_devices = 3
group_window = "1m"

# Rules, one [[alerts.rules]] table each, with exactly one kind table: threshold, offline,
# flatline, rate_of_change, los or air_quality. Examples:
#
# [[alerts.rules]]
# id = "congestion"
# severity = "critical"                      # info, warning, critical
# scope = { segments = ["viale-strozzi"] }   # or { devices = [...] }, { kind = "traffic_loop" }
# los = { at_or_worse = "E", for = "5m" }
#
# [[alerts.rules]]
# id = "device-offline"
# severity = "warning"
# offline = { silence_factor = 3.0, min_silence = "1m", last_will = true }
#
# [[alerts.rules]]
# id = "no2-high"
# severity = "warning"
# scope = { kind = "air_quality" }
# threshold = { metric = "no2_ugm3", above = 200.0, clear = 180.0, for = "10m" }
#
# [[alerts.rules]]
# id = "stuck-speed"
# severity = "info"
# flatline = { metric = "speed_kmh", epsilon = 0.01, readings = 30 }
#
# [[alerts.rules]]
# id = "speed-collapse"
# severity = "warning"
# rate_of_change = { metric = "speed_kmh", max_per_minute = 40.0, for = "1m" }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn generated_file_is_the_default() {
        assert_eq!(Config::from_toml(DEFAULT_CONFIG, []).unwrap(), Config::default());
        assert_eq!(Config::from_toml("", []).unwrap(), Config::default());
    }

    #[test]
    fn environment_overrides_keys() {
        let c = Config::from_toml(
            "[mqtt]\nport = 1884\n",
            env(&[
                ("SCCR_DATABASE__URL", "sqlite:x.db"),
                ("SCCR_MQTT__PORT", "2000"),
                ("SCCR_WRITER__MAX_BATCH_AGE", "10ms"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.database.url, "sqlite:x.db");
        assert_eq!(c.mqtt.port, 2000);
        assert_eq!(c.writer.max_batch_age, Duration::from_millis(10));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::from_toml("[mqtt]\nhots = \"x\"\n", []).unwrap_err().to_string();
        assert!(e.contains("hots"), "{e}");
        let e = Config::from_toml("[stream]\nwindow = \"soon\"\n", []).unwrap_err().to_string();
        assert!(e.contains("soon") && e.contains("duration"), "{e}");
        let e = Config::from_toml("[nope]\n", []).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let e = Config::from_toml("", env(&[("SCCR_DATABASE_URL", "x")])).unwrap_err().to_string();
        assert!(e.contains("SCCR_DATABASE_URL"), "{e}");
    }

    #[test]
    fn max_past_age_longer_than_the_raw_retention_is_refused_with_the_reason() {
        let e = Config::from_toml("[retention]\nraw = \"3d\"\n", []).unwrap_err();
        let ConfigError::Invalid(list) = e else { panic!("{e}") };
        assert!(
            list.iter().any(|m| m
                .starts_with("ingest.max_past_age must not be longer than retention.raw")
                && m.contains("older_than_retention")),
            "{list:?}"
        );
        let ok = "[retention]\nraw = \"3d\"\n[ingest]\nmax_past_age = \"3d\"\n";
        assert!(Config::from_toml(ok, []).is_ok());
        assert!(Config::from_toml(
            "[retention]\nraw = \"forever\"\n[ingest]\nmax_past_age = \"400d\"\n",
            []
        )
        .is_ok());
    }

    #[test]
    fn the_alarm_settings_are_read_and_their_errors_named_under_alerts() {
        let c = Config::from_toml("[alerts]\nmax_shelve = \"2h\"\noperator_positions = 4\n", [])
            .unwrap();
        assert_eq!(
            (c.alerts.max_shelve, c.alerts.operator_positions),
            (Duration::from_secs(7_200), 4)
        );
        let d = Config::default();
        assert_eq!(
            (d.alerts.max_shelve, d.alerts.operator_positions),
            (Duration::from_secs(8 * 3_600), 1)
        );
        let e = Config::from_toml(
            "[alerts]\nmax_shelve = \"10s\"\noperator_positions = 101\n[[alerts.rules]]\nid = \"a\"\nseverity = \"info\"\nsuppressed_by = [\"a\"]\nthreshold = { metric = \"speed_kmh\", below = 1.0 }\n",
            [],
        )
        .unwrap_err();
        let ConfigError::Invalid(list) = e else { panic!("{e}") };
        for key in [
            "alerts.max_shelve:",
            "alerts.operator_positions:",
            "alerts.rules[0].suppressed_by[0]:",
        ] {
            assert!(list.iter().any(|m| m.starts_with(key)), "{key} in {list:?}");
        }
    }

    #[test]
    fn alert_rules_are_read_and_their_errors_named_under_alerts() {
        let c = Config::from_toml(
            "[alerts]\nair_quality_defaults = false\n[[alerts.rules]]\nid = \"congestion\"\nseverity = \"critical\"\nlos = { at_or_worse = \"E\", for = \"0s\" }\n",
            [],
        )
        .unwrap();
        let rules = c.alerts.validate().unwrap();
        assert_eq!(rules.rules.len(), 1);
        assert_eq!(rules.rules[0].id.as_str(), "congestion");
        let e = Config::from_toml("[[alerts.rules]]\nid = \"BAD ID\"\nseverity = \"info\"\nthreshold = { metric = \"nope\", above = 1.0 }\n", []).unwrap_err();
        let ConfigError::Invalid(list) = e else { panic!("{e}") };
        assert!(list.iter().any(|m| m.starts_with("alerts.rules[0].id:")), "{list:?}");
        assert!(
            list.iter().any(|m| m.starts_with("alerts.rules[0].threshold.metric:")),
            "{list:?}"
        );
        let e = Config::from_toml("[[alerts.rules]]\nid = \"x\"\nseverity = \"info\"\nthreshold = { metric = \"speed_kmh\", abov = 1.0 }\n", []).unwrap_err().to_string();
        assert!(e.contains("alerts.rules") && e.contains("abov"), "{e}");
        let c =
            Config::from_toml("", env(&[("SCCR_ALERTS__AIR_QUALITY_DEFAULTS", "false")])).unwrap();
        assert!(!c.alerts.air_quality_defaults);
    }

    #[test]
    fn webhooks_section_is_read_and_its_errors_named() {
        let c = Config::from_toml(
            "[webhooks]\npayload = \"ngsi-ld\"\nmax_attempts = 3\nbackoff_base = \"50ms\"\n",
            [],
        )
        .unwrap();
        assert_eq!(c.webhooks.payload, store::WebhookFormat::NgsiLd);
        assert_eq!(c.webhooks.max_attempts, 3);
        assert_eq!(c.webhooks.backoff_base, Duration::from_millis(50));
        let e = Config::from_toml("[webhooks]\nmax_attempts = 0\nbackoff_base = \"1m\"\nbackoff_cap = \"1s\"\nsource = \"\"\n", []).unwrap_err();
        let ConfigError::Invalid(list) = e else { panic!("{e}") };
        for key in ["webhooks.max_attempts", "webhooks.backoff_cap", "webhooks.source"] {
            assert!(list.iter().any(|m| m.starts_with(key)), "{key}: {list:?}");
        }
        let e = Config::from_toml("[webhooks]\npayload = \"xml\"\n", []).unwrap_err().to_string();
        assert!(e.contains("webhooks.payload"), "{e}");
    }

    #[test]
    fn webhook_destinations_and_tls_files_are_checked_and_named() {
        let c = Config::from_toml(
            "[webhooks]\nallowed_destinations = [\"hooks.example\", \"10.0.0.0/8\"]\n",
            env(&[("SCCR_WEBHOOKS__ALLOWED_DESTINATIONS", "[\"127.0.0.1\", \"*.city.example\"]")]),
        )
        .unwrap();
        assert_eq!(c.webhooks.allowed_destinations, ["127.0.0.1", "*.city.example"]);
        let e = Config::from_toml(
            "[webhooks]\nallowed_destinations = [\"ok.example\", \"http://x/\", \"10.0.0.1/8\"]\nca_file = \"/nonexistent/ca.pem\"\nclient_cert = \"/nonexistent/c.pem\"\n",
            [],
        )
        .unwrap_err();
        let ConfigError::Invalid(list) = e else { panic!("{e}") };
        assert_eq!(list.len(), 4, "{list:?}");
        assert!(list[0].starts_with("webhooks.allowed_destinations[1]: \"http://x/\""), "{list:?}");
        assert_eq!(
            list[1],
            "webhooks.allowed_destinations[2]: \"10.0.0.1/8\" has host bits set; the network is 10.0.0.0/8"
        );
        assert!(
            list[2].starts_with("webhooks.ca_file: cannot read /nonexistent/ca.pem"),
            "{list:?}"
        );
        assert_eq!(list[3], "webhooks.client_key: is required with webhooks.client_cert");
        let e = Config::from_toml("[webhooks]\nclient_cert = \"/nonexistent/c.pem\"\n", [])
            .unwrap_err();
        let ConfigError::Invalid(list) = e else { panic!("{e}") };
        assert_eq!(list, ["webhooks.client_key: is required with webhooks.client_cert"]);
    }

    #[test]
    fn wall_section_is_read_and_its_errors_named() {
        use dashboard_api::basemap::Basemap;
        let c = Config::from_toml("", []).unwrap();
        assert_eq!(c.wall.settings().unwrap().basemap, Basemap::Context);
        assert_eq!(c.wall.settings().unwrap().max_zoom, 19);
        let url = "https://tiles.comune.example/osm/{z}/{x}/{y}.png";
        let c = Config::from_toml(
            &format!("[wall]\nbasemap = \"{url}\"\nbasemap_attribution = \"© OSM\"\nbasemap_max_zoom = 17\n"),
            [],
        )
        .unwrap();
        let settings = c.wall.settings().unwrap();
        assert_eq!(settings.basemap, Basemap::Xyz(url.into()));
        assert_eq!((settings.attribution.as_str(), settings.max_zoom), ("© OSM", 17));
        let long = "x".repeat(301);
        for (toml, key) in [
            ("basemap = \"https://tiles.example/{z}/{x}.png\"", "wall.basemap"),
            ("basemap = \"https://{s}.tiles.example/{z}/{x}/{y}.png\"", "wall.basemap"),
            ("basemap = \"/nonexistent/florence.pmtiles\"", "wall.basemap"),
            ("basemap = \"tiles.png\"", "wall.basemap"),
            ("basemap_max_zoom = 0", "wall.basemap_max_zoom"),
            ("basemap_max_zoom = 23", "wall.basemap_max_zoom"),
            (&format!("basemap_attribution = \"{long}\""), "wall.basemap_attribution"),
        ] {
            let e = Config::from_toml(&format!("[wall]\n{toml}\n"), []).unwrap_err();
            let ConfigError::Invalid(list) = &e else { panic!("{toml}: {e}") };
            assert!(list.iter().any(|m| m.starts_with(key)), "{toml}: {list:?}");
        }
        // A readable PMTiles file is taken, also from the environment.
        let dir = std::env::temp_dir().join(format!("sccr-wall-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("florence.pmtiles");
        std::fs::write(&file, b"PMTiles").unwrap();
        let c =
            Config::from_toml("", env(&[("SCCR_WALL__BASEMAP", file.to_str().unwrap())])).unwrap();
        assert_eq!(c.wall.settings().unwrap().basemap, Basemap::Pmtiles(file.clone()));
        std::fs::remove_dir_all(&dir).unwrap();
        let e = Config::from_toml("[wall]\nbasemap_max_zoom = 300\n", []).unwrap_err().to_string();
        assert!(e.contains("wall.basemap_max_zoom"), "{e}");
    }

    #[test]
    fn every_invalid_value_is_reported_at_once() {
        let e = Config::from_toml(
            "[mqtt]\nport = 0\ngroup = \"a/b\"\n[database]\nurl = \"mysql://x\"\n[api]\nlisten = \"everywhere\"\n",
            [],
        )
        .unwrap_err();
        let ConfigError::Invalid(list) = e else { panic!("{e}") };
        assert_eq!(list.len(), 4, "{list:?}");
        assert!(list.iter().any(|m| m.starts_with("mqtt.port")));
        assert!(list.iter().any(|m| m.starts_with("mqtt.group")));
        assert!(list.iter().any(|m| m.starts_with("database.url")));
        assert!(list.iter().any(|m| m.starts_with("api.listen")));
    }
}

/// The configuration parser on arbitrary text and environment overrides: a configuration
/// or an error naming the key, never a panic (`fuzz/` explores it for longer).
#[cfg(test)]
mod never_panics {
    use proptest::prelude::*;

    use super::*;

    fn tomlish() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("\n".to_owned()),
            Just("[mqtt]\n".to_owned()),
            Just("[database]\n".to_owned()),
            Just("[retention]\n".to_owned()),
            Just("[api]\n".to_owned()),
            Just("[ingest]\n".to_owned()),
            Just("[writer]\n".to_owned()),
            Just("[stream]\n".to_owned()),
            Just("[alerts]\n".to_owned()),
            Just("[[alerts.rules]]\n".to_owned()),
            Just("port = ".to_owned()),
            Just("listen = ".to_owned()),
            Just("raw = ".to_owned()),
            Just("keep_alive = ".to_owned()),
            Just("max_batch_age = ".to_owned()),
            Just("window = ".to_owned()),
            Just("threshold = ".to_owned()),
            Just("\"forever\"".to_owned()),
            Just("\"0s\"".to_owned()),
            Just("\"1000000000000d\"".to_owned()),
            Just("{ metric = \"speed_kmh\", above = 1e308 }".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
        ];
        prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn config_parser_never_panics(text in prop_oneof![tomlish(), "\\PC{0,200}"], var in "SCCR_[A-Z_]{0,16}", value in "\\PC{0,16}") {
            let _ = Config::from_toml(&text, []);
            let _ = Config::from_toml(&text, [(var, value)]);
        }
    }
}
