//! The SCCR edge agent: the binary installed on traffic cabinets and sensor gateways.
//!
//! This crate depends only on `telemetry` (the contract), never on server crates.
//! - [`fleet`]: which simulated devices exist and where they stand on the road network.
//! - [`profile`]: realistic daily traffic and air-quality profiles (pure functions).
//! - [`simulate`]: publishes a fleet's telemetry over MQTT 5 with QoS 1 and counts what the
//!   broker acknowledged.

pub mod agent;
pub mod buffer;
pub mod commands;
pub mod config;
pub mod drivers;
pub mod fleet;
pub mod profile;
pub mod simulate;

pub use fleet::{plan_fleet, DeviceKind, SimDevice};
pub use simulate::{run_simulation, SimulateConfig, SimulationReport};
