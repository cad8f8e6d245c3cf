//! The MQTT topic scheme (docs/mqtt-contract.md):
//! `sccr/v1/devices/{id}/{telemetry|status|commands|commands/ack}`.

use crate::ids::{DeviceId, IdError};

pub const PREFIX: &str = "sccr/v1/devices/";

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Telemetry,
    Status,
    Commands,
    CommandAck,
}

impl TopicKind {
    pub const ALL: [TopicKind; 4] =
        [TopicKind::Telemetry, TopicKind::Status, TopicKind::Commands, TopicKind::CommandAck];

    pub fn suffix(self) -> &'static str {
        match self {
            TopicKind::Telemetry => "telemetry",
            TopicKind::Status => "status",
            TopicKind::Commands => "commands",
            TopicKind::CommandAck => "commands/ack",
        }
    }

    /// The filter that matches this kind for every device.
    pub fn filter(self) -> String {
        format!("{PREFIX}+/{}", self.suffix())
    }

    /// The same filter as a shared subscription of `group` (MQTT 5 `$share`).
    pub fn shared_filter(self, group: &str) -> String {
        format!("$share/{group}/{}", self.filter())
    }
}

/// A parsed topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    pub device: DeviceId,
    pub kind: TopicKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is not under {PREFIX}")]
    WrongPrefix,
    #[error("topic has no device id")]
    MissingDevice,
    #[error("topic names a bad device id: {0}")]
    BadDevice(IdError),
    #[error("topic suffix {0:?} is not telemetry, status, commands or commands/ack")]
    UnknownSuffix(String),
}

impl Topic {
    pub fn new(device: DeviceId, kind: TopicKind) -> Self {
        Self { device, kind }
    }

    pub fn telemetry(device: &DeviceId) -> String {
        format!("{PREFIX}{device}/telemetry")
    }

    pub fn status(device: &DeviceId) -> String {
        format!("{PREFIX}{device}/status")
    }

    pub fn commands(device: &DeviceId) -> String {
        format!("{PREFIX}{device}/commands")
    }

    pub fn command_ack(device: &DeviceId) -> String {
        format!("{PREFIX}{device}/commands/ack")
    }

    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let rest = topic.strip_prefix(PREFIX).ok_or(TopicError::WrongPrefix)?;
        let (id, suffix) = rest.split_once('/').ok_or(TopicError::MissingDevice)?;
        let device = DeviceId::parse(id).map_err(TopicError::BadDevice)?;
        let kind = match suffix {
            "telemetry" => TopicKind::Telemetry,
            "status" => TopicKind::Status,
            "commands" => TopicKind::Commands,
            "commands/ack" => TopicKind::CommandAck,
            other => return Err(TopicError::UnknownSuffix(other.chars().take(64).collect())),
        };
        Ok(Self { device, kind })
    }

    pub fn to_topic_string(&self) -> String {
        format!("{PREFIX}{}/{}", self.device, self.kind.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_kind() {
        let dev = DeviceId::parse("loop-1").unwrap();
        for kind in
            [TopicKind::Telemetry, TopicKind::Status, TopicKind::Commands, TopicKind::CommandAck]
        {
            let t = Topic::new(dev.clone(), kind);
            assert_eq!(Topic::parse(&t.to_topic_string()), Ok(t));
        }
    }

    #[test]
    fn bad_topics_say_why() {
        assert_eq!(Topic::parse("other/x/telemetry"), Err(TopicError::WrongPrefix));
        assert_eq!(Topic::parse("sccr/v1/devices/x"), Err(TopicError::MissingDevice));
        assert!(matches!(
            Topic::parse("sccr/v1/devices/X/telemetry"),
            Err(TopicError::BadDevice(_))
        ));
        assert_eq!(
            Topic::parse("sccr/v1/devices/x/telemetry/extra"),
            Err(TopicError::UnknownSuffix("telemetry/extra".into()))
        );
    }

    #[test]
    fn shared_filter_shape() {
        assert_eq!(
            TopicKind::Telemetry.shared_filter("sccr-ingest"),
            "$share/sccr-ingest/sccr/v1/devices/+/telemetry"
        );
    }
}
