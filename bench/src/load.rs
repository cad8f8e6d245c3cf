//! The load: the fleet simulator publishing to a broker at a given rate.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use simulator::{plan_fleet, run_simulation, SimulateConfig, SimulationCounters};
use telemetry::segment::{parse_geojson, FLORENCE_SEED};
use tokio::sync::watch;

pub(crate) fn fleet(n: usize) -> Result<Vec<simulator::SimDevice>> {
    Ok(plan_fleet(&parse_geojson(FLORENCE_SEED)?, n))
}

/// The simulator's task, its counters and the switch that stops it.
pub(crate) type Load = (
    watch::Sender<bool>,
    Arc<SimulationCounters>,
    tokio::task::JoinHandle<simulator::SimulationReport>,
);

/// Run the simulator with `devices` at `msgs_per_s` until `stop` flips.
pub(crate) fn start_load(port: u16, devices: usize, msgs_per_s: f64, tag: &str) -> Result<Load> {
    start_load_on(&[port], mqtt_client::Protocol::V5, devices, msgs_per_s, tag)
}

/// [`start_load`] through the nodes of a broker cluster (connection `i` to node `i % n`,
/// failing over to the others) in `protocol`.
pub(crate) fn start_load_on(
    ports: &[u16],
    protocol: mqtt_client::Protocol,
    devices: usize,
    msgs_per_s: f64,
    tag: &str,
) -> Result<Load> {
    let Some((&port, others)) = ports.split_first() else { bail!("no broker to load") };
    let interval = Duration::from_secs_f64((devices as f64 / msgs_per_s.max(1.0)).max(0.001));
    let config = SimulateConfig {
        protocol,
        port,
        extra_brokers: others.iter().map(|p| ("127.0.0.1".to_string(), *p)).collect(),
        client_prefix: format!("bench-{tag}"),
        connections: 8,
        interval,
        messages_per_device: None,
        ..SimulateConfig::default()
    };
    let counters = Arc::new(SimulationCounters::default());
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run_simulation(
        config,
        fleet(devices)?,
        counters.clone(),
        rx,
        Duration::from_secs(5),
    ));
    Ok((tx, counters, task))
}

/// Publish a probe reading every 200 ms until `ready` says a bridge under test has taken
/// one in (its first commit), or fail after 30 s naming `what`.
pub(crate) async fn probe_until<F, Fut>(
    broker_port: u16,
    client: &str,
    what: &str,
    mut ready: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ready().await {
        if tokio::time::Instant::now() > deadline {
            bail!("{what} did not commit a probe reading within 30 s");
        }
        let payload = serde_json::json!({
            "ts": telemetry::EventTime::now().millis(),
            "readings": [{"m": "battery_v", "v": 12.0}],
        });
        let _ = sccr_tests::publish_all(
            broker_port,
            client,
            vec![("sccr/v1/devices/probe/telemetry".into(), payload.to_string().into_bytes())],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
