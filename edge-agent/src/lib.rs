//! The SCCR edge agent: the binary installed on traffic cabinets and sensor gateways.
//!
//! This crate depends only on `telemetry` (the contract) and the fleet `simulator`, never
//! on server crates.

pub mod agent;
pub mod buffer;
pub mod commands;
pub mod config;
pub mod drivers;
