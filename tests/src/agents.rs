//! The field side as child processes: `edge-agent simulate` with its ledger of what it
//! published, and `edge-agent run`.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::{child_command, kill_child, spawn_logged, workspace_bin};

/// A running `edge-agent simulate` child process with a ledger of what it published.
pub struct Simulator {
    child: Option<Child>,
    pub ledger: PathBuf,
    pub log: PathBuf,
}

impl Simulator {
    /// `devices` simulated devices reporting every `interval` for `duration`, over two
    /// MQTT connections to the broker on `port`.
    pub fn start(
        port: u16,
        dir: &Path,
        tag: &str,
        devices: usize,
        interval: &str,
        duration: &str,
    ) -> Result<Self> {
        Self::start_with(&[port], dir, tag, devices, interval, duration, &[])
    }

    /// [`Simulator::start`] with its connections spread over the brokers on `ports` (the
    /// nodes of a cluster) and more `edge-agent simulate` arguments (e.g. `--protocol`).
    pub fn start_with(
        ports: &[u16],
        dir: &Path,
        tag: &str,
        devices: usize,
        interval: &str,
        duration: &str,
        extra: &[&str],
    ) -> Result<Self> {
        let ledger = dir.join(format!("sim-{tag}.ledger"));
        let log = dir.join(format!("sim-{tag}.log"));
        let mut command = child_command(&workspace_bin("edge-agent")?);
        command
            .args([
                "simulate",
                "--devices",
                &devices.to_string(),
                "--connections",
                &(2 * ports.len().max(1)).to_string(),
                "--interval",
                interval,
                "--duration",
                duration,
            ])
            .arg("--broker")
            .arg(ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(","))
            .arg("--client-id")
            .arg(format!("sim-{tag}"))
            .arg("--ledger")
            .arg(&ledger)
            .args(extra)
            .env("RUST_LOG", "info");
        let child = spawn_logged(&mut command, &log, "edge-agent simulate")?;
        Ok(Self { child: Some(child), ledger, log })
    }

    /// Wait for the simulation to end; true when every message was acknowledged by the broker.
    pub async fn finish(&mut self, timeout: Duration) -> Result<bool> {
        let Some(mut c) = self.child.take() else { bail!("not running") };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st.success());
            }
            if tokio::time::Instant::now() > deadline {
                let _ = c.kill();
                bail!("edge-agent simulate did not finish within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The (device, metric, time in ms) of every reading published, from the ledger.
    pub fn published_keys(&self) -> Result<std::collections::BTreeSet<(String, String, i64)>> {
        let text = std::fs::read_to_string(&self.ledger)?;
        let mut keys = std::collections::BTreeSet::new();
        for line in text.lines() {
            let mut parts = line.split('\t');
            let (Some(device), Some(time), Some(metrics)) =
                (parts.next(), parts.next(), parts.next())
            else {
                bail!("bad ledger line {line:?}")
            };
            let time: i64 = time.parse()?;
            for m in metrics.split(',').filter(|m| !m.is_empty()) {
                if !keys.insert((device.to_owned(), m.to_owned(), time)) {
                    bail!("the simulator published {device}/{m}@{time} twice");
                }
            }
        }
        Ok(keys)
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// A running `edge-agent run` child process, killed on drop.
pub struct EdgeAgent {
    child: Option<Child>,
    pub stats: PathBuf,
    pub log: PathBuf,
}

impl EdgeAgent {
    pub fn run(config: &Path, dir: &Path, tag: &str) -> Result<Self> {
        let stats = dir.join(format!("agent-{tag}.stats.json"));
        let log = dir.join(format!("agent-{tag}.log"));
        let mut command = child_command(&workspace_bin("edge-agent")?);
        command
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--stats-file")
            .arg(&stats)
            .env("RUST_LOG", "info");
        let child = spawn_logged(&mut command, &log, "edge-agent")?;
        Ok(Self { child: Some(child), stats, log })
    }

    /// The agent's latest counters (see `edge-agent run --stats-file`).
    pub fn read_stats(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(&self.stats).ok()?).ok()
    }

    pub fn stat(&self, key: &str) -> Option<i64> {
        self.read_stats()?.get(key)?.as_i64()
    }

    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for EdgeAgent {
    fn drop(&mut self) {
        self.kill();
    }
}
