//! The checks of values a configuration's types cannot express: ranges, addresses, files
//! that must be readable, keys that go together. Each problem is `key: message`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use super::{ApiSection, Config, ConfigError};

/// Whole-number keys allowed a narrower range than their type's: `(key, least, most)`,
/// `most` `None` for the type's own limit. The one statement of each range, for the
/// checks below and for the words of a wrong-type error at the key.
pub(super) const WHOLE_RANGES: &[(&str, u64, Option<u64>)] = &[
    ("mqtt.port", 1, Some(65_535)),
    ("mqtt.receive_maximum", 1, Some(65_535)),
    ("database.max_connections", 1, None),
    ("api.max_connections", 1, None),
    ("ingest.max_payload_bytes", 64, None),
    ("ingest.max_pending_readings", 1, None),
    ("ingest.partitions", 1, Some(1_024)),
    ("writer.max_batch_readings", 1, None),
    ("writer.queue_messages", 1, None),
    ("webhooks.max_attempts", 1, None),
    ("webhooks.concurrency", 1, None),
    ("wall.basemap_max_zoom", 1, Some(dashboard_api::basemap::MAX_ZOOM as u64)),
    ("alerts.operator_positions", 1, Some(100)),
    ("alerts.storm.raises_per_minute", 1, None),
];

/// `a whole number from 1 to 65535`, for a key of [`WHOLE_RANGES`].
pub(super) fn range_words(key: &str) -> Option<String> {
    WHOLE_RANGES.iter().find(|(k, ..)| *k == key).map(|(_, least, most)| match most {
        Some(most) => format!("a whole number from {least} to {most}"),
        None => format!("a whole number, at least {least}"),
    })
}

/// The problem of `value` at `key` when it is outside the key's range.
pub(super) fn whole(key: &str, value: u64) -> Option<String> {
    let (_, least, most) = WHOLE_RANGES.iter().find(|(k, ..)| *k == key)?;
    if value >= *least && most.is_none_or(|m| value <= m) {
        return None;
    }
    Some(format!("{key}: must be {}, got {value}", range_words(key)?))
}

impl ApiSection {
    /// The addresses `listen` names: an IP address and port (`0.0.0.0:8080`,
    /// `[::]:8080`) or a host name and port (`localhost:8080`, resolved now), IPv4 ones
    /// first. The API binds the first of them it can.
    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        const EXAMPLES: &str = "an address and port such as 127.0.0.1:8080, 0.0.0.0:8080 \
                                (every IPv4 interface), [::]:8080 or localhost:8080";
        let listen = self.listen.trim();
        if let Ok(addr) = listen.parse::<SocketAddr>() {
            return Ok(vec![addr]);
        }
        let Some((host, port)) = listen.rsplit_once(':') else {
            return Err(format!("must be {EXAMPLES}, got {listen:?}"));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("must be {EXAMPLES}, got {listen:?}"));
        }
        let mut addrs: Vec<SocketAddr> = listen
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve the host name {host:?} ({e}); use {EXAMPLES}"))?
            .collect();
        addrs.sort_by_key(SocketAddr::is_ipv6);
        if addrs.is_empty() {
            return Err(format!("the host name {host:?} resolves to no address; use {EXAMPLES}"));
        }
        Ok(addrs)
    }
}

/// The problem of a file named at `key` that cannot be opened for reading.
fn readable(key: &str, path: &Path) -> Option<String> {
    let problem = match std::fs::metadata(path) {
        Err(e) => e.to_string(),
        Ok(meta) if !meta.is_file() => "it is not a file".to_owned(),
        Ok(_) => std::fs::File::open(path).err()?.to_string(),
    };
    let relative = if path.is_relative() {
        std::env::current_dir()
            .map(|d| format!(", relative to the working directory {}", d.display()))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Some(format!("{key}: cannot read {}{relative}: {problem}", path.display()))
}

impl Config {
    /// Every problem of the values, each `key: message`; `Ok` when there is none.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::invalid(problems))
        }
    }

    /// Every problem of the values, each `key: message`.
    pub fn problems(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, key: &str, msg: &str| {
            if !ok {
                errors.push(format!("{key}: {msg}"));
            }
        };
        let m = &self.mqtt;
        check(!m.host.is_empty(), "mqtt.host", "must not be empty");
        for (i, b) in m.failover.iter().enumerate() {
            let problem = mqtt_client::parse_broker(b).err().unwrap_or_default();
            check(problem.is_empty(), &format!("mqtt.failover[{i}]"), &problem);
        }
        check(!m.client_id.is_empty(), "mqtt.client_id", "must not be empty");
        check(
            !m.group.is_empty() && !m.group.contains(['/', '+', '#']),
            "mqtt.group",
            "must be non-empty, without '/', '+' or '#'",
        );
        check(
            m.username.is_some() || m.password.is_none(),
            "mqtt.username",
            "is required with mqtt.password",
        );
        check(
            m.password.is_some() || m.username.is_none(),
            "mqtt.password",
            "is required with mqtt.username (e.g. from SCCR_MQTT__PASSWORD)",
        );
        check(m.keep_alive >= Duration::from_secs(5), "mqtt.keep_alive", "must be at least 5s");
        let d = &self.database;
        check(
            ["postgres://", "postgresql://", "sqlite:"].iter().any(|p| d.url.starts_with(p)),
            "database.url",
            "must start with postgres://, postgresql:// or sqlite: (e.g. \
             postgres://sccr@db.example:5432/sccr or sqlite:/var/lib/sccr/sccr.db)",
        );
        let is_pg = |u: &str| ["postgres://", "postgresql://"].iter().any(|p| u.starts_with(p));
        let replicated = d.read_url.is_some() || !d.failover_urls.is_empty();
        check(
            !replicated || is_pg(&d.url),
            "database.url",
            "must be postgres:// or postgresql:// with database.read_url or database.failover_urls \
             (replication is PostgreSQL's)",
        );
        for (i, u) in d.failover_urls.iter().enumerate() {
            check(
                is_pg(u),
                &format!("database.failover_urls[{i}]"),
                &format!("must start with postgres:// or postgresql://, got {:?}", preview(u)),
            );
            check(
                *u != d.url && !d.failover_urls[..i].contains(u),
                &format!("database.failover_urls[{i}]"),
                "repeats database.url or another failover URL",
            );
        }
        check(
            d.failover_probe_interval >= Duration::from_millis(100),
            "database.failover_probe_interval",
            "must be at least 100ms",
        );
        if let Some(r) = &d.read_url {
            check(
                is_pg(r),
                "database.read_url",
                &format!(
                    "must start with postgres:// or postgresql:// (a hot standby), got {:?}",
                    preview(r)
                ),
            );
        }
        check(!d.max_read_lag.is_zero(), "database.max_read_lag", "must be positive");
        check(
            self.ingest.partitions <= 1 || !d.url.starts_with("sqlite:"),
            "ingest.partitions",
            "must be 1 with SQLite (a single process; partitions are owned through \
             PostgreSQL advisory locks)",
        );
        check(
            self.ingest.partitions <= 1 || m.subscription == super::Subscription::Exclusive,
            "ingest.partitions",
            "needs mqtt.subscription = \"exclusive\" (each partition is a persistent \
             session with plain subscriptions)",
        );
        check(
            !d.rollup_merge_interval.is_zero(),
            "database.rollup_merge_interval",
            "must be positive",
        );
        check(
            d.maintenance_interval >= Duration::from_secs(1),
            "database.maintenance_interval",
            "must be at least 1s",
        );
        let r = &self.retention;
        let day = Duration::from_secs(86_400);
        for (key, kept) in [
            ("retention.raw", r.raw),
            ("retention.rollup_1m", r.rollup_1m),
            ("retention.rollup_1h", r.rollup_1h),
            ("retention.rollup_1d", r.rollup_1d),
        ] {
            check(
                kept.is_none_or(|d| d >= day),
                key,
                "must be at least 1d (partitions are days), or \"forever\"",
            );
        }
        check(
            r.raw.is_none_or(|raw| self.ingest.max_past_age <= raw),
            "ingest.max_past_age",
            "must not be longer than retention.raw: a reading older than the raw retention \
             may have lost the raw row that dedupes it, so the store refuses it (dead letter \
             older_than_retention) rather than count it twice; lengthen retention.raw to \
             accept older readings (backfills with `sccr import` are bound by retention.raw \
             too)",
        );
        check(
            self.api
                .bootstrap_admin_token
                .as_ref()
                .is_none_or(|t| t.len() >= 32 && t.chars().all(|c| c.is_ascii_graphic())),
            "api.bootstrap_admin_token",
            "must be at least 32 printable characters (e.g. from `openssl rand -hex 32`)",
        );
        check(
            self.api.header_timeout >= Duration::from_millis(100),
            "api.header_timeout",
            "must be at least 100ms",
        );
        check(
            self.api.request_timeout >= Duration::from_secs(1),
            "api.request_timeout",
            "must be at least 1s",
        );
        let w = &self.writer;
        check(!w.max_batch_age.is_zero(), "writer.max_batch_age", "must be positive");
        check(!w.stall_after.is_zero(), "writer.stall_after", "must be positive");
        let s = &self.stream;
        check(s.window >= Duration::from_secs(1), "stream.window", "must be at least 1s");
        check(
            s.state_save_interval >= Duration::from_secs(1),
            "stream.state_save_interval",
            "must be at least 1s",
        );
        check(
            s.registry_refresh >= Duration::from_secs(1),
            "stream.registry_refresh",
            "must be at least 1s",
        );
        let b = &self.baselines;
        check((1..=52).contains(&b.weeks), "baselines.weeks", "must be 1..=52");
        check(
            b.min_samples >= 1 && b.min_samples <= b.weeks,
            "baselines.min_samples",
            "must be at least 1 and at most baselines.weeks",
        );
        check(
            b.spread_floor_pct.is_finite() && (0.0..=100.0).contains(&b.spread_floor_pct),
            "baselines.spread_floor_pct",
            "must be 0..=100 (percent of the centre)",
        );
        if let Some(zone) = &b.timezone {
            check(
                telemetry::baseline::SlotClock::zone(zone).is_some(),
                "baselines.timezone",
                &format!(
                    "must be an IANA time zone with offsets in whole quarter hours (Florence: \"Europe/Rome\"), got {zone:?}"
                ),
            );
            check(
                b.utc_offset_minutes.is_none(),
                "baselines.utc_offset_minutes",
                "must not be given with baselines.timezone (one local time)",
            );
        }
        if let Some(offset) = b.utc_offset_minutes {
            check(
                telemetry::baseline::SlotClock::new(offset).is_some(),
                "baselines.utc_offset_minutes",
                "must be a multiple of 15 from -840 to 840",
            );
        }
        for (i, day) in b.holidays.iter().enumerate() {
            check(
                telemetry::baseline::parse_day(day).is_some(),
                &format!("baselines.holidays[{i}]"),
                &format!("must be a date YYYY-MM-DD, got {day:?}"),
            );
        }
        check(
            b.refresh_interval >= Duration::from_secs(60),
            "baselines.refresh_interval",
            "must be at least 1m",
        );
        let f = &self.forecasts;
        check(
            !f.horizons_minutes.is_empty()
                && f.horizons_minutes.len() <= 8
                && f.horizons_minutes.iter().all(|m| (1..=120).contains(m))
                && f.horizons_minutes.windows(2).all(|w| w[0] < w[1]),
            "forecasts.horizons_minutes",
            "must list 1 to 8 horizons in minutes, ascending, each 1..=120",
        );
        check(
            f.smoothing.is_finite() && f.smoothing > 0.0 && f.smoothing <= 1.0,
            "forecasts.smoothing",
            "must be above 0 and at most 1",
        );
        check(
            f.persistence.is_finite() && (0.0..=1.0).contains(&f.persistence),
            "forecasts.persistence",
            "must be 0..=1",
        );
        let c = &self.cadastre;
        check(
            c.link_max_distance_m.is_finite() && (1.0..=1_000.0).contains(&c.link_max_distance_m),
            "cadastre.link_max_distance_m",
            "must be 1..=1000 (metres)",
        );
        check(
            c.operation_point_distance_m.is_finite()
                && (1.0..=1_000.0).contains(&c.operation_point_distance_m),
            "cadastre.operation_point_distance_m",
            "must be 1..=1000 (metres)",
        );
        check((1..=16).contains(&c.default_lanes), "cadastre.default_lanes", "must be 1..=16");
        check(
            (5.0..=150.0).contains(&c.default_speed_limit_kmh),
            "cadastre.default_speed_limit_kmh",
            "must be 5..=150 (km/h)",
        );
        check(!c.id_property.is_empty(), "cadastre.id_property", "must not be empty");
        check(c.default_class.len() <= 64, "cadastre.default_class", "must be at most 64 bytes");
        let w = &self.webhooks;
        check(!w.source.trim().is_empty(), "webhooks.source", "must not be empty");
        check(
            w.poll_interval >= Duration::from_millis(10),
            "webhooks.poll_interval",
            "must be at least 10ms",
        );
        check(
            w.request_timeout >= Duration::from_millis(100),
            "webhooks.request_timeout",
            "must be at least 100ms",
        );
        check(!w.backoff_base.is_zero(), "webhooks.backoff_base", "must be positive");
        check(
            w.backoff_cap >= w.backoff_base,
            "webhooks.backoff_cap",
            "must be at least webhooks.backoff_base",
        );
        check(
            w.retention >= Duration::from_secs(3_600),
            "webhooks.retention",
            "must be at least 1h",
        );
        for (key, value) in [
            ("mqtt.port", u64::from(self.mqtt.port)),
            ("mqtt.receive_maximum", u64::from(self.mqtt.receive_maximum)),
            ("database.max_connections", u64::from(self.database.max_connections)),
            ("api.max_connections", self.api.max_connections as u64),
            ("ingest.max_payload_bytes", self.ingest.max_payload_bytes as u64),
            ("ingest.max_pending_readings", self.ingest.max_pending_readings as u64),
            ("ingest.partitions", u64::from(self.ingest.partitions)),
            ("writer.max_batch_readings", self.writer.max_batch_readings as u64),
            ("writer.queue_messages", self.writer.queue_messages as u64),
            ("webhooks.max_attempts", u64::from(self.webhooks.max_attempts)),
            ("webhooks.concurrency", self.webhooks.concurrency as u64),
        ] {
            errors.extend(whole(key, value));
        }
        if let Err(problem) = self.api.listen_addrs() {
            errors.push(format!("api.listen: {problem}"));
        }
        if let Err(ConfigError::Invalid { problems, .. }) = w.destinations() {
            errors.extend(problems);
        }
        // Files named by the configuration are opened now, so that `check-config` finds
        // one that is missing or unreadable.
        if let Some(seed) = &self.segments.seed {
            errors.extend(readable("segments.seed", seed));
        }
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
        errors
    }
}

/// The start of a URL for a message (the scheme and host, not a password further on).
fn preview(url: &str) -> String {
    let cut = url.find('@').map_or(url.len().min(24), |_| url.find("://").map_or(0, |i| i + 3));
    let head: String = url.chars().take(cut).collect();
    if head.len() < url.len() {
        format!("{head}…")
    } else {
        head
    }
}
