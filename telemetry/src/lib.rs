//! The SCCR contract: identifiers, topics, the metric catalogue, payload codecs and
//! validation. Everything that crosses a process boundary is parsed here, once, into
//! newtypes; no other crate handles raw device ids, metric names or timestamps.
//!
//! This crate does no I/O.

pub mod aggregate;
pub mod alert;
pub mod baseline;
pub mod cadastre;
pub mod codec;
pub mod command;
pub mod contract;
pub mod device_kind;
pub mod duration_serde;
pub mod health;
pub mod ids;
pub mod metric;
pub mod metrics;
pub mod segment;
pub mod senml;
pub mod status;
pub mod suggest;
pub mod time;
pub mod topic;
pub mod validate;

pub use aggregate::Partial;
pub use codec::{
    decode, encode_compact, CompactMessage, CompactReading, DecodeError, Decoded, Format,
    ReadingError, RejectedReading, TimeField,
};
pub use device_kind::{DeviceKind, UnknownDeviceKind};
pub use ids::{DeviceId, IdError, SegmentId, Seq};
pub use metric::{MetricId, MetricSpec, UnknownMetric};
pub use segment::{RoadSegment, SegmentError};
pub use status::{decode_status, DeviceState, StatusError, StatusEvent, StatusMessage};
pub use time::{EventTime, TimeError, TimeSpecError, TIME_FORMS};
pub use topic::{Topic, TopicError, TopicKind};
pub use validate::{ValidationConfig, ValidationError, Validator};

/// One measurement: the unit of everything downstream of decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device: DeviceId,
    pub metric: MetricId,
    pub time: EventTime,
    pub value: f64,
    /// The device's message counter of the message that carried this reading, if any.
    pub seq: Option<Seq>,
}

impl Reading {
    /// The stored key, in the order of the store's primary key (device, metric, time): the
    /// store keeps one reading per key, and writes a batch in this order.
    pub fn key(&self) -> (&str, &str, EventTime) {
        (self.device.as_str(), self.metric.as_str(), self.time)
    }
}
