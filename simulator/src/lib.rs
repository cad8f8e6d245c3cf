//! The SCCR fleet simulator, shared by `sccr demo`, the edge agent's `simulate` mode and
//! the benchmark. It depends only on `telemetry` and an MQTT client.
//! - [`fleet`]: which simulated devices exist and where they stand on the road network.
//! - [`day`]: the demo's city — rush hours that congest, air-quality episodes, a recurring
//!   incident — as pure functions of time and a seed ([`City`]).
//! - [`profile`]: simple daily traffic and air-quality profiles (pure functions), used by
//!   the edge agent's drivers.
//! - [`simulate`]: publishes a fleet's telemetry over MQTT 5 with QoS 1 and counts what the
//!   broker acknowledged.

pub mod day;
pub mod fleet;
pub mod profile;
pub mod road_graph;
pub mod simulate;

pub use day::{City, Traffic, INCIDENT_DURATION_MS, INCIDENT_PERIOD_MS, INCIDENT_SEGMENT};
pub use fleet::{plan_fleet, DeviceKind, SimDevice};
pub use simulate::{run_simulation, SimulateConfig, SimulationCounters, SimulationReport};
