//! The testkit: throwaway PostgreSQL databases, Mosquitto brokers on free ports with the
//! project's configuration, the `sccr` binary as a child process, and waiting on
//! conditions with a deadline (never sleeping as synchronisation).
//!
//! The parts: `pg` (databases, clusters, rollup checks), `replication` (a primary and
//! its hot standby), `broker` (Mosquitto and its
//! shipped configurations, a test PKI), `nats` (a NATS server cluster with MQTT),
//! [`mqtt`] (MQTT test clients, publishing), `sccr` (the server process and its HTTP API), `agents` (the edge agent and the
//! simulator), `fixtures` (payloads, segments, devices). Everything is re-exported here.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

mod agents;
mod broker;
mod fixtures;
pub mod mqtt;
mod nats;
mod pg;
mod replication;
mod sccr;

pub use agents::{EdgeAgent, Simulator};
pub use broker::{shipped_conf, Broker, TestPki};
pub use fixtures::{
    compact, loop_on, recent_base_ms, telemetry_topic, test_segment, wait_pipeline_ready,
    wait_pipeline_ready_with,
};
pub use mqtt::{publish_all, publish_all_with, MqttProbe};
pub use nats::{NatsCluster, NatsNode};
pub use pg::{
    admin_url, assert_rollups_match_raw, stored_keys, wait_rollups_merged, TestDb, ThrowawayPg,
};
pub use replication::{PgNode, ReplicatedPg, SyncMode};
pub use sccr::{
    header_value, http_get, http_get_with_head, http_request, http_request_with, http_send,
    live_url, metric, sccr_admin, Sccr, TEST_ADMIN_TOKEN,
};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Poll `cond` until it yields `Some`, or fail after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Resident set size of a process in KiB (from /proc), or None when it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// A directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sccr-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Path of a workspace binary of the same build profile as the running executable: beside
/// it (benchmarks in `target/<profile>/`) or one level up (tests in `target/<profile>/deps/`).
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no directory")?;
    let candidates = [dir.join(name), dir.parent().map(|p| p.join(name)).unwrap_or_default()];
    match candidates.iter().find(|p| p.is_file()) {
        Some(bin) => Ok(bin.clone()),
        None => bail!(
            "{name} is not built next to {}; run the suite with scripts/test.sh (it builds the binaries first)",
            exe.display()
        ),
    }
}

/// A Python virtual environment under `target/<name>` with `packages` (pip requirement
/// strings) importable as `probe` (a module list for `python -c "import …"`); made on first
/// use and reused. `None` when python3, venv or PyPI is unavailable.
pub fn python_venv(name: &str, packages: &[&str], probe: &str) -> Option<PathBuf> {
    let venv = workspace_root().join("target").join(name);
    let python = venv.join("bin/python");
    let ok = |p: &Path| {
        Command::new(p).args(["-c", &format!("import {probe}")]).status().is_ok_and(|s| s.success())
    };
    if python.is_file() && ok(&python) {
        return Some(venv);
    }
    // Tests run as processes of their own: the first to get here builds the venv while the
    // others wait on the lock, then find it ready.
    let lock = std::fs::create_dir_all(workspace_root().join("target")).and_then(|()| {
        std::fs::File::create(workspace_root().join("target").join(format!("{name}.lock")))
    });
    let _guard = match &lock {
        Ok(file) => file.lock().ok().map(|()| file),
        Err(_) => None,
    };
    if python.is_file() && ok(&python) {
        return Some(venv);
    }
    let created =
        Command::new("python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success());
    let installed = created
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q"])
            .args(packages)
            .status()
            .is_ok_and(|s| s.success());
    (installed && ok(&python)).then_some(venv)
}

/// A command for a child process of a test with only `PATH` from the suite's environment:
/// nothing `SCCR_…` of the suite's own, so the test's settings are the only ones.
pub fn child_command(bin: &Path) -> Command {
    let mut command = Command::new(bin);
    command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

/// Start `command` with its standard output and error appended to `log`.
fn spawn_logged(command: &mut Command, log: &Path, what: &str) -> Result<Child> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    command.stdout(out.try_clone()?).stderr(out).spawn().with_context(|| format!("start {what}"))
}

/// SIGKILL a child process, if it runs, and reap it.
fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// `sccr segments import ARGS` into `db_url`, with `config` as the configuration file's text
/// (written into `dir`).
pub fn segments_import(dir: &Path, db_url: &str, config: &str, args: &[&str]) -> Output {
    let path = dir.join("sccr.toml");
    std::fs::write(&path, config).expect("write the configuration");
    child_command(&workspace_bin("sccr").expect("the sccr binary"))
        .args(["segments", "import", "--config"])
        .arg(&path)
        .args(args)
        .env("SCCR_DATABASE__URL", db_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sccr segments import")
}

/// A child's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
