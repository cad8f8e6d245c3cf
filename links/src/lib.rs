//! Links to the city's layers.
//!
//! - [`dispatcher`]: delivers the store's transactional outbox to the webhook
//!   subscriptions an admin manages, as CloudEvents 1.0 in structured JSON mode
//!   ([`cloudevents`]), signed with HMAC-SHA256 ([`signature`]), retried with exponential
//!   backoff and full jitter ([`backoff`]), in order per subject, dead after the configured
//!   attempts. Several dispatchers (replicas) share the work through the store's claims.
//!   Receivers listen on http or https ([`http`]: rustls, system or configured CA roots,
//!   mutual TLS); [`destination`] keeps the admin's allow-list of destinations.
//! - [`commands`]: device commands down over MQTT (QoS 1; `pending` → `sent` on the
//!   broker's PUBACK), their acks (read by ingest) and their expiry.
//! - [`device_status`]: records device online/offline changes (with their outbox event)
//!   on the way from ingest to the stream.
//! - [`live_bus`]: the live state between server roles (`--role ingest|api`) over MQTT:
//!   live changes out of ingest replicas, operator actions and rule changes back.
//! - [`provisioning`]: device credentials and topic rights on the broker: applied at once
//!   through Mosquitto's dynamic security plugin ([`dynsec`]: the plan, pure), or left to
//!   the password and ACL files `sccr mqtt-passwd` and `sccr mqtt-acl` write.
//! - [`ngsi`]: FIWARE Smart Data Models entities in NGSI-LD JSON-LD (`TrafficFlowObserved`,
//!   `AirQualityObserved`, `Alert`), for webhook payloads and exports.

pub mod backoff;
pub mod cloudevents;
pub mod commands;
pub mod destination;
pub mod device_status;
pub mod dispatcher;
pub mod dynsec;
pub mod http;
pub mod live_bus;
pub mod ngsi;
pub mod provisioning;
pub mod signature;

pub use commands::{run_commands, CommandLinkConfig, CommandLinkMetrics};
pub use destination::DestinationPolicy;
pub use device_status::run_status_recorder;
pub use dispatcher::{run_dispatcher, DispatcherConfig, DispatcherMetrics};
pub use http::{TlsConfigError, TlsFiles, WebhookClient};
pub use live_bus::{run_api_bus, run_ingest_bus, BusConfig, BusMetrics, BusNotice};
