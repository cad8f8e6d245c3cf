//! The SCCR fleet simulator, shared by `sccr demo`, the edge agent's `simulate` mode and
//! the benchmark. It depends only on `telemetry` and an MQTT client.
//! - [`fleet`]: which simulated devices exist and where they stand on the road network.
//! - [`profile`]: realistic daily traffic and air-quality profiles (pure functions).
//! - [`simulate`]: publishes a fleet's telemetry over MQTT 5 with QoS 1 and counts what the
//!   broker acknowledged.

pub mod fleet;
pub mod profile;
pub mod simulate;

pub use fleet::{plan_fleet, DeviceKind, SimDevice};
pub use simulate::{run_simulation, SimulateConfig, SimulationCounters, SimulationReport};
