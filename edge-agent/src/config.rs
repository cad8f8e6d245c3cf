//! The agent's configuration file: the broker, the disk buffer, and the devices with their
//! drivers. Unknown keys are refused; every invalid value is reported at once with its key
//! (e.g. `devices[2].capacity`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use telemetry::{DeviceId, RoadSegment};

use crate::buffer::{BufferConfig, FsyncPolicy};
use crate::drivers::{read_replay_file, Driver, Replay, ReplayTimestamps, SignalPlan};

use telemetry::duration_serde::deserialize as duration;
use telemetry::duration_serde::option::deserialize as opt_duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub agent: AgentSection,
    #[serde(default)]
    pub mqtt: MqttSection,
    #[serde(default)]
    pub buffer: BufferSection,
    #[serde(default)]
    pub devices: Vec<DeviceSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// The agent's own id: its status topic carries the Last Will.
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// "5" (default) or "3.1.1", for a broker without MQTT 5 (NATS server, RabbitMQ before
    /// 3.13). Over 3.1.1 the session lasts as long as the broker keeps it, and a refused
    /// message cannot be told from an accepted one (a 3.1.1 PUBACK has no reason code).
    pub protocol: mqtt_client::Protocol,
    pub host: String,
    pub port: u16,
    /// Other nodes of a broker cluster, "host:port", tried in turn when the connection fails.
    pub failover: Vec<String>,
    /// Defaults to the agent id.
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    #[serde(deserialize_with = "duration")]
    pub keep_alive: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_backoff: Duration,
    pub tls: Option<TlsSection>,
}

impl Default for MqttSection {
    fn default() -> Self {
        Self {
            protocol: mqtt_client::Protocol::V5,
            host: "127.0.0.1".into(),
            port: 1883,
            failover: Vec::new(),
            client_id: None,
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file of the CA that signed the broker's certificate.
    pub ca: PathBuf,
    /// PEM client certificate and key, for brokers that authenticate devices by certificate.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferSection {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    /// "always", "never", or "every-N" (fsync every N appends).
    pub fsync: String,
}

impl Default for BufferSection {
    fn default() -> Self {
        Self {
            dir: "edge-buffer".into(),
            max_bytes: 64 << 20,
            segment_bytes: 4 << 20,
            fsync: "always".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    pub id: String,
    /// traffic_loop, traffic_light, parking, air_quality or replay.
    pub driver: String,
    #[serde(default, deserialize_with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Road segment id (traffic loops).
    pub segment: Option<String>,
    /// Signal plan phase durations in seconds (traffic lights).
    pub phases: Option<Vec<f64>>,
    pub faults_per_hour: Option<f64>,
    /// Bays (parking).
    pub capacity: Option<u32>,
    /// Replay file (CSV or JSON).
    pub file: Option<PathBuf>,
    /// Replay time scaling: 10 plays ten times faster than recorded.
    pub speed: Option<f64>,
    /// "rewrite" (default) or "original".
    pub timestamps: Option<String>,
    #[serde(rename = "loop")]
    pub looping: Option<bool>,
}

/// A configured device, ready to run.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub id: DeviceId,
    pub interval: Duration,
    pub driver: Driver,
}

pub fn parse_fsync(s: &str) -> Option<FsyncPolicy> {
    match s {
        "always" => Some(FsyncPolicy::Always),
        "never" => Some(FsyncPolicy::Never),
        _ => s
            .strip_prefix("every-")?
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(FsyncPolicy::EveryN),
    }
}

impl AgentFile {
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn buffer_config(&self) -> Result<BufferConfig, String> {
        let fsync = parse_fsync(&self.buffer.fsync).ok_or_else(|| {
            format!(
                "buffer.fsync {:?} must be \"always\", \"never\" or \"every-N\"",
                self.buffer.fsync
            )
        })?;
        Ok(BufferConfig {
            dir: self.buffer.dir.clone(),
            max_bytes: self.buffer.max_bytes,
            segment_bytes: self.buffer.segment_bytes,
            fsync,
        })
    }

    /// Build the devices, resolving segments against `segments`; every error names its key.
    pub fn build(&self, segments: &[RoadSegment]) -> Result<Vec<DeviceSpec>, Vec<String>> {
        let mut errors = Vec::new();
        if DeviceId::parse(&self.agent.id).is_err() {
            errors.push(format!(
                "agent.id {:?} must match [a-z0-9][a-z0-9._-]{{0,63}}",
                self.agent.id
            ));
        }
        if self.mqtt.port == 0 {
            errors.push("mqtt.port must not be 0".into());
        }
        for (i, b) in self.mqtt.failover.iter().enumerate() {
            if let Err(e) = mqtt_client::parse_broker(b) {
                errors.push(format!("mqtt.failover[{i}] {e}"));
            }
        }
        if self.mqtt.username.is_some() != self.mqtt.password.is_some() {
            errors.push("mqtt.username and mqtt.password go together".into());
        }
        if let Some(tls) = &self.mqtt.tls {
            if tls.client_cert.is_some() != tls.client_key.is_some() {
                errors.push("mqtt.tls.client_cert and mqtt.tls.client_key go together".into());
            }
        }
        if let Err(e) = self.buffer_config() {
            errors.push(e);
        }
        if self.buffer.segment_bytes < 1024 || self.buffer.max_bytes < self.buffer.segment_bytes {
            errors.push(
                "buffer.segment_bytes must be at least 1024 and at most buffer.max_bytes".into(),
            );
        }
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            let key = |k: &str| format!("devices[{i}].{k}");
            let id = match DeviceId::parse(&d.id) {
                Ok(id) => id,
                Err(e) => {
                    errors.push(format!("{}: {e}", key("id")));
                    continue;
                }
            };
            if !seen.insert(id.clone()) {
                errors.push(format!("{}: {id} appears twice", key("id")));
            }
            let interval = d.interval.unwrap_or(Duration::from_secs(5));
            if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
                errors.push(format!("{} must be between 100ms and 1h", key("interval")));
            }
            let driver = match d.driver.as_str() {
                "traffic_loop" => match &d.segment {
                    None => Err(format!("{} is required for traffic_loop", key("segment"))),
                    Some(s) => segments
                        .iter()
                        .find(|seg| seg.id.as_str() == s)
                        .map(|seg| Driver::TrafficLoop { segment: seg.clone(), demand_factor: 1.0 })
                        .ok_or_else(|| format!("{}: no road segment {s:?}", key("segment"))),
                },
                "traffic_light" => SignalPlan::new(d.phases.clone().unwrap_or_else(|| vec![40.0, 5.0, 40.0, 5.0]))
                    .map(|plan| Driver::TrafficLight { plan, fault_until: None, fault_rate_per_hour: d.faults_per_hour.unwrap_or(0.05) })
                    .map_err(|e| format!("{}: {e}", key("phases"))),
                "parking" => match d.capacity {
                    Some(c) if c > 0 && c <= 10_000 => Ok(Driver::Parking { capacity: c }),
                    _ => Err(format!("{} must be 1..=10000 for parking", key("capacity"))),
                },
                "air_quality" => Ok(Driver::AirQuality),
                "replay" => (|| {
                    let file = d.file.as_ref().ok_or_else(|| format!("{} is required for replay", key("file")))?;
                    let records = read_replay_file(file).map_err(|e| format!("{}: {e}", key("file")))?;
                    let stamps = match d.timestamps.as_deref().unwrap_or("rewrite") {
                        "rewrite" => ReplayTimestamps::Rewrite,
                        "original" => ReplayTimestamps::Original,
                        other => return Err(format!("{} {other:?} must be rewrite or original", key("timestamps"))),
                    };
                    Replay::new(records, d.speed.unwrap_or(1.0), stamps, d.looping.unwrap_or(false))
                        .map(Driver::Replay)
                        .map_err(|e| format!("{}: {e}", key("driver")))
                })(),
                other => Err(format!(
                    "{}: {other:?} is not one of traffic_loop, traffic_light, parking, air_quality, replay",
                    key("driver")
                )),
            };
            match driver {
                Ok(driver) => out.push(DeviceSpec { id, interval, driver }),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use telemetry::segment::{parse_geojson, FLORENCE_SEED};

    use super::*;

    const EXAMPLE: &str = r#"
[agent]
id = "cabinet-strozzi"
[mqtt]
host = "broker.example"
port = 8883
keep_alive = "20s"
[buffer]
dir = "/var/lib/sccr-edge"
fsync = "every-8"
[[devices]]
id = "loop-strozzi-1"
driver = "traffic_loop"
segment = "viale-strozzi"
interval = "10s"
[[devices]]
id = "tl-strozzi-1"
driver = "traffic_light"
phases = [30, 4, 30, 4]
[[devices]]
id = "park-fortezza"
driver = "parking"
capacity = 500
[[devices]]
id = "aq-strozzi"
driver = "air_quality"
interval = "1m"
"#;

    #[test]
    fn mqtt_protocol_is_5_or_3_1_1() {
        let with =
            |p: &str| EXAMPLE.replace("port = 8883", &format!("port = 8883\nprotocol = {p}"));
        assert_eq!(AgentFile::parse(EXAMPLE).unwrap().mqtt.protocol, mqtt_client::Protocol::V5);
        let f = AgentFile::parse(&with("\"3.1.1\"")).unwrap();
        assert_eq!(f.mqtt.protocol, mqtt_client::Protocol::V311);
        let e = AgentFile::parse(&with("\"4\"")).unwrap_err();
        assert!(e.contains("protocol") && e.contains(r#""5" or "3.1.1""#), "{e}");
        let f = AgentFile::parse(&with("\"3.1.1\"\nfailover = [\"b:1883\", \"c\"]")).unwrap();
        let errors = f.build(&parse_geojson(FLORENCE_SEED).unwrap()).unwrap_err();
        assert_eq!(errors, ["mqtt.failover[1] must be host:port, got \"c\""]);
    }

    #[test]
    fn example_builds() {
        let f = AgentFile::parse(EXAMPLE).unwrap();
        let devs = f.build(&parse_geojson(FLORENCE_SEED).unwrap()).unwrap();
        assert_eq!(devs.len(), 4);
        assert_eq!(devs[0].interval, Duration::from_secs(10));
        assert_eq!(devs[1].driver.kind(), "traffic_light");
        assert_eq!(f.buffer_config().unwrap().fsync, FsyncPolicy::EveryN(8));
    }

    #[test]
    fn every_error_names_its_key() {
        let text = r#"
[agent]
id = "Bad Agent"
[buffer]
fsync = "sometimes"
[[devices]]
id = "a"
driver = "traffic_loop"
segment = "nowhere"
[[devices]]
id = "b"
driver = "parking"
[[devices]]
id = "a"
driver = "teleporter"
[[devices]]
id = "c"
driver = "replay"
"#;
        let errors = AgentFile::parse(text)
            .unwrap()
            .build(&parse_geojson(FLORENCE_SEED).unwrap())
            .unwrap_err();
        let joined = errors.join("\n");
        for needle in [
            "agent.id",
            "buffer.fsync",
            "devices[0].segment",
            "devices[1].capacity",
            "devices[2].id",
            "devices[2].driver",
            "devices[3].file",
        ] {
            assert!(joined.contains(needle), "{needle} missing from:\n{joined}");
        }
        assert!(AgentFile::parse("[agent]\nid=\"a\"\ncolour=1\n").unwrap_err().contains("colour"));
    }
}
