//! Ingest: the MQTT side of the pipeline.
//!
//! Subscribes to device telemetry over MQTT 5 (or 3.1.1, [`Protocol`]) with a persistent session (a plain
//! subscription, or a shared one to split the load across ingest processes); decodes and
//! validates each message ([`process`], pure); sends its readings and dead letters to the
//! store's batch writer through a bounded queue; and acknowledges the
//! MQTT packet only when the writer reports that the batch holding it committed
//! ([`AckToken`]). A crash before the commit leaves the packet unacknowledged, so the broker
//! redelivers it; the store's dedupe key makes the replay harmless.
//!
//! The queue is bounded twice: in messages (the channel) and in readings (a semaphore whose
//! permits travel with each message until its commit), so memory stays bounded however
//! large messages are. When the queue is full, ingest stops reading from the broker, and
//! the broker's in-flight window (MQTT receive maximum) stops sending.

pub mod config;
pub mod partition;
pub mod process;
pub mod service;

pub use config::{IngestConfig, Protocol, SubscriptionMode, UnknownDevicePolicy};
pub use partition::{partition_of, PartitionFilter, PartitionMap};
pub use process::{process_publish, process_status, Processed};
pub use service::{run_ingest, AckToken, IngestHandles, IngestMetrics, IngestQueues};
