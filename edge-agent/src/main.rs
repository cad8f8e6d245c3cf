//! `edge-agent`: the field binary. `edge-agent run --config FILE` runs the devices of one
//! cabinet or gateway with store-and-forward; `edge-agent simulate --devices N` runs a
//! simulated fleet on the Florence road network against an MQTT broker.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use edge_agent::agent::{run_agent, AgentOptions, AgentStats};
use edge_agent::buffer::DiskBuffer;
use edge_agent::config::AgentFile;
use simulator::{plan_fleet, run_simulation, SimulateConfig, SimulationCounters};
use telemetry::segment::{parse_geojson, FLORENCE_SEED};

#[derive(Parser)]
#[command(name = "edge-agent", version, about = "SCCR field agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the devices of a configuration file, buffering every message on disk until the
    /// broker acknowledges it.
    Run {
        #[arg(long)]
        config: std::path::PathBuf,
        /// Write a JSON snapshot of the agent's counters here twice a second.
        #[arg(long)]
        stats_file: Option<std::path::PathBuf>,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Publish telemetry of a simulated fleet (traffic loops and air-quality stations).
    Simulate {
        /// Number of simulated devices.
        #[arg(long, default_value_t = 100)]
        devices: usize,
        /// Broker address, host:port; several, comma-separated (the nodes of a cluster),
        /// spread the connections over them.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// MQTT connections shared by the fleet (a gateway carries many devices).
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Reporting interval of each device (e.g. 1s, 500ms).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Stop after this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Stop after this many messages per device.
        #[arg(long)]
        messages_per_device: Option<u64>,
        /// GeoJSON FeatureCollection of road segments (default: the Florence seed set).
        #[arg(long)]
        segments: Option<std::path::PathBuf>,
        /// MQTT client id prefix.
        #[arg(long, default_value = "sccr-sim")]
        client_id: String,
        /// MQTT protocol version: "5" or "3.1.1" (for brokers without MQTT 5).
        #[arg(long, default_value = "5")]
        protocol: mqtt_client::Protocol,
        /// Write one line per published message here: device, event time (ms) and the
        /// metrics of its readings, tab-separated (to compare with what was stored).
        #[arg(long)]
        ledger: Option<std::path::PathBuf>,
    },
}

fn load(path: &std::path::Path) -> Result<(AgentFile, Vec<edge_agent::config::DeviceSpec>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file = AgentFile::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let segments = parse_geojson(FLORENCE_SEED)?;
    let devices = file.build(&segments).map_err(|errors| {
        anyhow::anyhow!("{}: invalid configuration:\n  - {}", path.display(), errors.join("\n  - "))
    })?;
    Ok((file, devices))
}

async fn run(path: &std::path::Path, stats_file: Option<std::path::PathBuf>) -> Result<()> {
    let (file, devices) = load(path)?;
    let buffer = DiskBuffer::open(file.buffer_config().map_err(anyhow::Error::msg)?)?;
    let pending = buffer.stats();
    tracing::info!(devices = devices.len(), buffered = pending.records, "edge agent starting");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let options = AgentOptions {
        agent_id: telemetry::DeviceId::parse(&file.agent.id)?,
        mqtt: file.mqtt.clone(),
        stats_file,
        firmware: env!("CARGO_PKG_VERSION").to_owned(),
    };
    run_agent(options, devices, buffer, stop_rx, Arc::new(AgentStats::default())).await?;
    tracing::info!("edge agent stopped; unacknowledged messages stay buffered on disk");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // A field agent runs on one thread (small footprint); the fleet simulator uses all cores.
    let runtime = match cli.command {
        Command::Simulate { .. } => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?
        }
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
    };
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match cli.command {
        Command::Run { config, stats_file } => run(&config, stats_file).await,
        Command::CheckConfig { config } => {
            load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Simulate {
            devices,
            broker,
            connections,
            interval,
            duration,
            messages_per_device,
            segments,
            client_id,
            protocol,
            ledger,
        } => {
            let mut brokers = Vec::new();
            for b in broker.split(',') {
                let (host, port) =
                    b.rsplit_once(':').context("--broker must be host:port[,host:port…]")?;
                let port: u16 = port.parse().context("--broker port must be a number")?;
                brokers.push((host.to_owned(), port));
            }
            let (host, port) = brokers.remove(0);
            if devices == 0 {
                bail!("--devices must be at least 1");
            }
            if interval.is_zero() {
                bail!("--interval must be positive");
            }
            let text = match &segments {
                Some(p) => std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?,
                None => FLORENCE_SEED.to_owned(),
            };
            let segs = parse_geojson(&text)?;
            if segs.is_empty() {
                bail!("the segment file has no segments");
            }
            let fleet = plan_fleet(&segs, devices);
            let config = SimulateConfig {
                protocol,
                host,
                port,
                extra_brokers: brokers,
                client_prefix: client_id,
                connections,
                interval,
                messages_per_device,
                ..SimulateConfig::default()
            };
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                match duration {
                    Some(d) => {
                        tokio::select! { _ = tokio::time::sleep(d) => {}, () = shutdown_signal() => {} }
                    }
                    None => shutdown_signal().await,
                }
                let _ = stop_tx.send(true);
            });
            tracing::info!(
                devices,
                segments = segs.len(),
                connections,
                ?interval,
                "simulating fleet"
            );
            let counters = Arc::new(match &ledger {
                Some(path) => SimulationCounters::with_ledger(path)
                    .with_context(|| format!("creating {}", path.display()))?,
                None => SimulationCounters::default(),
            });
            let report =
                run_simulation(config, fleet, counters, stop_rx, Duration::from_secs(10)).await;
            println!(
                "published {} messages ({} readings), {} acknowledged by the broker, {} errors, in {:.1} s: {:.0} msg/s",
                report.published,
                report.readings,
                report.acked,
                report.errors,
                report.elapsed.as_secs_f64(),
                report.messages_per_second()
            );
            if report.acked < report.published {
                bail!(
                    "{} messages were not acknowledged by the broker",
                    report.published - report.acked
                );
            }
            Ok(())
        }
    }
}
