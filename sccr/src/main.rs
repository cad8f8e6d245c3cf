//! `sccr`: the SCCR server binary and composition root.

mod admin;
mod alert_sink;
mod backfill;
mod config;
mod demo;
mod export;
mod import;
mod pipeline;
mod progress;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG};

#[derive(Parser)]
#[command(name = "sccr", version, about = "Smart City Control Room backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process, no external service: embedded broker, SQLite, a simulated fleet.
    Demo {
        /// HTTP port of the API.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port of the embedded MQTT broker.
        #[arg(long, default_value_t = 11883)]
        mqtt_port: u16,
        /// Simulated devices.
        #[arg(long, default_value_t = 60)]
        devices: usize,
        /// Reporting interval of each simulated device.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Where the demo keeps its SQLite database.
        #[arg(long, default_value = "sccr-demo-data")]
        data_dir: PathBuf,
        /// The admin API token to use (at least 32 characters); a new one is made and
        /// printed when absent.
        #[arg(long)]
        admin_token: Option<String>,
        /// History written at start through the import path (one report per device every
        /// 5 minutes; only what the data directory does not hold yet); 0 for none.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        backfill: Duration,
    },
    /// Run against an external broker and database.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        /// all (one process), ingest (MQTT to database, stream, alerts, webhooks; HTTP
        /// probes and metrics only) or api (REST, websocket, dashboard); the roles share
        /// live state over the broker (sccr/v1/live, sccr/v1/control).
        #[arg(long, value_enum, default_value = "all")]
        role: pipeline::Role,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write readings or rollups of a time range as Hive-style partitions
    /// (`DIR/metric=<m>/date=<YYYY-MM-DD>/part-<N>.<ext>`).
    Export {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Start (inclusive): RFC 3339 or Unix milliseconds.
        #[arg(long)]
        from: String,
        /// End (exclusive): RFC 3339 or Unix milliseconds.
        #[arg(long)]
        to: String,
        /// Only this metric (repeatable); all when absent.
        #[arg(long = "metric")]
        metrics: Vec<String>,
        /// Only this device (repeatable); all when absent.
        #[arg(long = "device")]
        devices: Vec<String>,
        /// raw, 1m, 1h or 1d.
        #[arg(long, default_value = "raw")]
        resolution: String,
        /// parquet, csv or arrow (IPC stream).
        #[arg(long, default_value = "parquet")]
        format: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Import historical readings (the columns of a raw `sccr export`: time, device,
    /// metric, value[, seq]) from Parquet, CSV or Arrow files, or directories of them,
    /// through validation, dedupe and rollups. Importing a file again changes nothing.
    Import {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Files or directories (an export's partition tree) to import.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Validate a configuration file (with environment overrides) and exit.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print a commented default configuration file.
    GenerateConfig,
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Write the MQTT broker's password file (Mosquitto format) from the device registry.
    MqttPasswd {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The password file to write (replaced atomically; send the broker SIGHUP after).
        #[arg(long)]
        out: PathBuf,
        /// A password file of service accounts (ingest, api) to include first.
        #[arg(long)]
        include: Option<PathBuf>,
    },
    /// Write the MQTT broker's ACL file (Mosquitto format): the base ACL, then what each
    /// gateway in the device registry may publish and read for the devices it serves.
    MqttAcl {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The ACL file to write (replaced atomically; send the broker SIGHUP after).
        #[arg(long)]
        out: PathBuf,
        /// The base ACL (deploy/mosquitto/sccr.acl: the device patterns and the service
        /// accounts) to include first; required, as an ACL without it refuses every device.
        #[arg(long)]
        include: Option<PathBuf>,
    },
    /// Write Mosquitto's dynamic security plugin file from the device registry: the
    /// included file (from `mosquitto_ctrl dynsec init`) with a client per device, its
    /// password hash and its role. For a stopped broker: moving from password files to
    /// `[provisioning] mode = "dynsec"` without new passwords.
    MqttDynsec {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The plugin's file to write (`plugin_opt_config_file`; replaced atomically).
        #[arg(long)]
        out: PathBuf,
        /// The plugin's current file (the admin and service accounts); required.
        #[arg(long)]
        include: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokenAction {
    /// Create a token and print it (it is shown only once).
    Create {
        #[arg(long)]
        config: Option<PathBuf>,
        /// admin, operator, planner or device.
        #[arg(long)]
        role: String,
        /// Who or what holds the token (shown in the audit log and on acknowledgements).
        #[arg(long)]
        name: String,
    },
    /// List tokens (never their secret).
    List {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Revoke a token by id.
    Revoke {
        #[arg(long)]
        config: Option<PathBuf>,
        id: i64,
    },
}

pub(crate) fn load(path: Option<&std::path::Path>) -> Result<Config> {
    Ok(Config::load(path, std::env::vars())?)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttd=off,sqlx=warn".into()),
        )
        .init();
    match cli.command {
        Command::Demo { port, mqtt_port, devices, interval, data_dir, admin_token, backfill } => {
            anyhow::ensure!(devices > 0, "--devices must be at least 1");
            anyhow::ensure!(!interval.is_zero(), "--interval must be positive");
            anyhow::ensure!(
                backfill <= Duration::from_secs(366 * 86_400),
                "--backfill must be at most 366d"
            );
            demo::run(demo::DemoOptions {
                http_port: port,
                mqtt_port,
                devices,
                interval,
                data_dir,
                admin_token,
                backfill,
            })
            .await
        }
        Command::Token { action } => admin::token(action).await,
        Command::MqttPasswd { config, out, include } => {
            let config = load(config.as_deref())?;
            let store = pipeline::open_store(&config).await?;
            let n = admin::write_mqtt_passwd(&store, &out, include.as_deref()).await?;
            store.close().await;
            println!("{}: {n} device credentials", out.display());
            Ok(())
        }
        Command::MqttAcl { config, out, include } => {
            let config = load(config.as_deref())?;
            let store = pipeline::open_store(&config).await?;
            let n = admin::write_mqtt_acl(&store, &out, include.as_deref()).await?;
            store.close().await;
            println!("{}: {n} gateway grants", out.display());
            Ok(())
        }
        Command::MqttDynsec { config, out, include } => {
            let config = load(config.as_deref())?;
            let store = pipeline::open_store(&config).await?;
            let written = admin::write_mqtt_dynsec(&store, &out, include.as_deref()).await;
            store.close().await;
            let (n, conflicts) = written?;
            if !conflicts.is_empty() {
                eprintln!(
                    "left out (a client SCCR does not manage has their id): {}",
                    conflicts.join(", ")
                );
            }
            println!("{}: {n} device clients", out.display());
            Ok(())
        }
        Command::Serve { config, role } => {
            let config = load(config.as_deref())?;
            let store = pipeline::open_store(&config).await?;
            let running = pipeline::start(&config, store, role).await?;
            println!("sccr serving on http://{}", running.api_addr);
            shutdown_signal().await;
            tracing::info!("shutdown requested; draining");
            running.shutdown().await;
            Ok(())
        }
        Command::Migrate { config } => {
            let config = load(config.as_deref())?;
            let store = pipeline::open_store(&config).await?;
            store.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Export { config, from, to, metrics, devices, resolution, format, out } => {
            let args = export::ExportArgs { from, to, metrics, devices, resolution, format, out };
            export::query(&args)?;
            let config = load(config.as_deref())?;
            let store = pipeline::open_store(&config).await?;
            let result = export::run(&store, args).await;
            store.close().await;
            result
        }
        Command::Import { config, paths } => {
            let config = load(config.as_deref())?;
            let store = pipeline::open_store(&config).await?;
            let args = import::ImportArgs {
                paths,
                raw_retention: config.retention.raw,
                register_unknown: config.ingest.unknown_devices
                    == config::UnknownDevices::AutoRegister,
            };
            let result = import::run(&store, args).await;
            store.close().await;
            result.map(|_| ())
        }
        Command::CheckConfig { config } => {
            load(Some(&config))?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::GenerateConfig => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
    }
}
