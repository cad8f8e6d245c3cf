//! The stream core: live state per (device, metric), tumbling windows on event time with a
//! watermark, road-segment traffic state with its Level of Service, alert rules and their
//! lifecycle, and the live hub that fans state changes out to dashboards.
//!
//! All logic is synchronous and pure; time is always passed in, nothing reads a clock or
//! does I/O: [`window`] (device windows), [`segment_state`] (segment windows fed by the
//! device windows), [`los`] (A–F grades), [`alert`] (rules, evaluators, lifecycle, storm
//! protection, behind [`AlertEngine`]), [`live`] (state and fan-out). The async task in
//! [`service`] only moves readings in and events out, so the logic is tested without time
//! or I/O.
//!
//! Data flow inside the stream task, all behind [`StreamCore`]: reading → `Windows::add` →
//! `WindowResult`s → `SegmentWindows::on_window` → `SegmentEvent`s; reading →
//! `AlertEngine::on_reading`; status → `AlertEngine::on_status`; `SegmentState` →
//! `Forecaster::forecast` (its `forecast`) → `AlertEngine::on_segment_state`; each second `Windows::tick`, `SegmentWindows::tick`,
//! `AlertEngine::tick` with the same `now`. [`service::run_stream`] publishes values,
//! windows and segment states to the [`LiveHub`] and hands alert outputs and engine
//! checkpoints, in order, to the alert sink that stores them.

pub mod alert;
pub mod config;
pub use telemetry::duration_serde;
pub mod fanout;
pub mod forecast;
pub mod live;
pub mod los;
pub mod segment_state;
pub mod service;
pub mod stream_core;
pub mod window;

pub use alert::{
    Alert, AlertEngine, AlertEngineState, AlertId, AlertKey, AlertOutput, AlertRulesConfig,
    AlertState, AlertTransition, BookRecord, DeviceProfile, DeviceStatus, EngineCheckpoint,
    EngineHead, FlagEdge, RuleSet, Severity, StatePart, Subject,
};
pub use config::StreamConfig;
pub use fanout::{Pending, Subscription};
pub use forecast::{ForecastSettings, Forecaster, HorizonForecast, SegmentForecast};
pub use live::{Clearance, LiveAlert, LiveEvent, LiveHub, LiveValue, SubscriptionFilter};
pub use los::{speed_ratio, worst_first, LevelOfService, Standing};
pub use segment_state::{SegmentEvent, SegmentState, SegmentWindows};
pub use service::{
    run_stream, AlertSinkItem, BaselineNeeds, CheckpointChunk, StreamCommand, StreamMetrics,
    StreamQueues, StreamServiceConfig,
};
pub use stream_core::{Emitted, OperatorAction, Registry, StreamCore};
pub use window::{Admission, WindowResult, Windows};
