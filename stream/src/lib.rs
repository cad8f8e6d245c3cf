//! The stream core: live state per (device, metric), tumbling windows on event time with a
//! watermark, and the live hub that fans state changes out to dashboards.
//!
//! Window and state logic is synchronous and pure ([`window`], [`live`]); the async task in
//! [`service`] only moves readings in and events out, so the logic is tested without time
//! or I/O.

pub mod alert;
pub mod config;
pub mod duration_serde;
pub mod live;
pub mod los;
pub mod segment_state;
pub mod service;
pub mod window;

pub use config::StreamConfig;
pub use live::{LiveEvent, LiveHub, LiveValue, SubscriptionFilter};
pub use service::{run_stream, StreamMetrics};
pub use window::{WindowResult, Windows};
