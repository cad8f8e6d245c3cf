//! `sccr`: the SCCR server binary and composition root.

mod admin;
mod alert_sink;
mod backfill;
mod baselines;
mod cadastre_files;
mod config;
mod demo;
mod export;
mod import;
mod metrics;
mod pipeline;
mod progress;
mod segments;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, DEFAULT_CONFIG};

#[derive(Parser)]
#[command(
    name = "sccr",
    version,
    about = "Smart City Control Room backend",
    after_help = "Every command that uses the database or the broker (serve, migrate, token, export, \
                  import, segments, mqtt-*) needs a configuration file, as --config FILE or \
                  SCCR_CONFIG=FILE: write one with `sccr generate-config > sccr.toml`, check it \
                  with `sccr check-config --config sccr.toml`. SCCR_<SECTION>__<KEY> variables \
                  override its keys. `sccr demo` needs none."
)]
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
        #[command(flatten)]
        config: ConfigFile,
        /// all (one process), ingest (MQTT to database, stream, alerts, webhooks; HTTP
        /// probes and metrics only) or api (REST, websocket, dashboard); the roles share
        /// live state over the broker (sccr/v1/live, sccr/v1/control).
        #[arg(long, value_enum, default_value = "all")]
        role: pipeline::Role,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Write readings or rollups of a time range into a folder of Hive-style partitions
    /// (`DIR/metric=<m>/date=<YYYY-MM-DD>/part-<N>.<ext>`) with a manifest,
    /// `_sccr_export.json` (docs/export.md).
    Export {
        #[command(flatten)]
        config: ConfigFile,
        #[command(flatten)]
        args: export::ExportArgs,
    },
    /// Import historical readings (the columns of a raw `sccr export`: time, device,
    /// metric, value[, seq]) from Parquet, CSV or Arrow files, or directories of them,
    /// through validation, dedupe and rollups. Importing a file again changes nothing.
    Import {
        #[command(flatten)]
        config: ConfigFile,
        /// Files or directories (an export's partition tree) to import.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// The Road Cadastre's road segments.
    Segments {
        #[command(subcommand)]
        action: SegmentsAction,
    },
    /// Check a configuration file (with its environment overrides): every problem at once,
    /// each naming its key, then exit.
    CheckConfig {
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Print a commented configuration file of the defaults:
    /// `sccr generate-config > sccr.toml`.
    GenerateConfig,
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Write the MQTT broker's password file (Mosquitto format) from the device registry.
    MqttPasswd {
        #[command(flatten)]
        config: ConfigFile,
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
        #[command(flatten)]
        config: ConfigFile,
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
        #[command(flatten)]
        config: ConfigFile,
        /// The plugin's file to write (`plugin_opt_config_file`; replaced atomically).
        #[arg(long)]
        out: PathBuf,
        /// The plugin's current file (the admin and service accounts); required.
        #[arg(long)]
        include: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SegmentsAction {
    /// Import the city's Road Cadastre from a GeoJSON, Shapefile or GeoPackage file (docs/cadastre.md): every
    /// problem listed and nothing imported if there is one; changed segments get a new
    /// version, missing ones are retired, devices with a position are linked.
    Import {
        #[command(flatten)]
        config: ConfigFile,
        #[command(flatten)]
        args: segments::ImportArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokenAction {
    /// Create a token and print it (it is shown only once).
    Create {
        #[command(flatten)]
        config: ConfigFile,
        /// admin, operator, planner or device.
        #[arg(long)]
        role: String,
        /// Who or what holds the token (shown in the audit log and on acknowledgements).
        #[arg(long)]
        name: String,
    },
    /// List tokens (never their secret).
    List {
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Revoke a token by id.
    Revoke {
        #[command(flatten)]
        config: ConfigFile,
        id: i64,
    },
}

/// The configuration file of every command that uses the database or the broker. There
/// is no built-in fallback: a command run without one would use a database and broker
/// nobody chose.
#[derive(clap::Args)]
pub(crate) struct ConfigFile {
    /// The configuration file (write one with `sccr generate-config > sccr.toml`).
    /// `SCCR_<SECTION>__<KEY>` environment variables (`__` between every level) override
    /// its keys, e.g. `SCCR_DATABASE__URL`.
    #[arg(long, value_name = "FILE", env = "SCCR_CONFIG")]
    config: Option<PathBuf>,
}

impl ConfigFile {
    /// The configuration with its environment overrides, checked; says on stderr which
    /// file and which overrides (by name) it is.
    pub(crate) fn load(&self) -> Result<Config> {
        let Some(path) = &self.config else {
            anyhow::bail!(
                "no configuration file: pass --config FILE or set SCCR_CONFIG=FILE (write one \
                 with `sccr generate-config > sccr.toml`)"
            )
        };
        // Variables whose name is not Unicode cannot be SCCR_ ones; a value that is not is
        // read lossily, to be refused with its key rather than skipped.
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())));
        let loaded = Config::load(path, env)?;
        eprintln!("sccr: {loaded}");
        Ok(loaded.config)
    }
}

/// How an error is printed: a configuration's problems as they are (one line each, then
/// their count); anything else as `error: ` and its causes, each once (a message that
/// already holds its cause's text is not followed by it again).
fn report(error: &anyhow::Error) -> String {
    if let Some(problems @ ConfigError::Invalid { .. }) = error.downcast_ref::<ConfigError>() {
        return problems.to_string();
    }
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    format!("error: {out}")
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
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttd=off,sqlx=warn".into()),
        )
        .init();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", report(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
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
            let config = config.load()?;
            let store = pipeline::open_store(&config).await?;
            let n = admin::write_mqtt_passwd(&store, &out, include.as_deref()).await?;
            store.close().await;
            println!("{}: {n} device credentials", out.display());
            Ok(())
        }
        Command::MqttAcl { config, out, include } => {
            let config = config.load()?;
            let store = pipeline::open_store(&config).await?;
            let n = admin::write_mqtt_acl(&store, &out, include.as_deref()).await?;
            store.close().await;
            println!("{}: {n} gateway grants", out.display());
            Ok(())
        }
        Command::MqttDynsec { config, out, include } => {
            let config = config.load()?;
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
            let config = config.load()?;
            let store = pipeline::open_store(&config).await?;
            let running = pipeline::start(&config, store, role).await?;
            println!("sccr serving on http://{}", running.api_addr);
            shutdown_signal().await;
            tracing::info!("shutdown requested; draining");
            running.shutdown().await;
            Ok(())
        }
        Command::Segments { action: SegmentsAction::Import { config, args } } => {
            let config = config.load()?;
            let summary = segments::import(&config, &args).await?;
            println!("{}", segments::describe(&summary));
            Ok(())
        }
        Command::Migrate { config } => {
            let config = config.load()?;
            let store = pipeline::open_store(&config).await?;
            store.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Export { config, args } => {
            export::query(&args, telemetry::EventTime::now())?;
            let config = config.load()?;
            let store = pipeline::open_store(&config).await?;
            let read = export::read_store(&config, &store).await?;
            let result = export::run(&read, args).await;
            // The primary's pool when no replica is read: closing it twice is harmless.
            read.close().await;
            store.close().await;
            result
        }
        Command::Import { config, paths } => {
            let config = config.load()?;
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
            config.load()?;
            if let Some(path) = &config.config {
                println!("{}: ok", path.display());
            }
            Ok(())
        }
        Command::GenerateConfig => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_prints_each_cause_once() {
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(ConfigError::Read { path: "x.toml".into(), error: missing });
        assert_eq!(report(&e), "error: cannot read the configuration file x.toml: no such file");
        // A context that already quotes its cause, and one that does not.
        let e = anyhow::anyhow!("disk full").context("writing out.csv: disk full");
        assert_eq!(report(&e), "error: writing out.csv: disk full");
        let e = anyhow::anyhow!("disk full").context("writing out.csv");
        assert_eq!(report(&e), "error: writing out.csv: disk full");
        // A configuration's problems are printed as they are, one line each.
        let e = anyhow::Error::new(ConfigError::Invalid {
            origin: "sccr.toml".into(),
            problems: vec!["mqtt.port: must be a whole number from 1 to 65535, got 0".into()],
        });
        assert_eq!(
            report(&e),
            "  - mqtt.port: must be a whole number from 1 to 65535, got 0\n1 problem in sccr.toml"
        );
    }
}
