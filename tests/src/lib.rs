//! The testkit: throwaway PostgreSQL databases, Mosquitto brokers on free ports with the
//! project's configuration, the `sccr` binary as a child process, and waiting on
//! conditions with a deadline (never sleeping as synchronisation).

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub mod mqtt;
use sqlx::{Connection, Executor};

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

/// The admin URL of the PostgreSQL server tests use: `SCCR_TEST_PG_URL` (set by
/// `scripts/test.sh` when it started a throwaway cluster) or the local server.
pub fn admin_url() -> String {
    std::env::var("SCCR_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database created for one test, dropped when the test's process exits (or by the next
/// run's sweep, which removes databases of processes that are gone).
pub struct TestDb {
    pub url: String,
    pub name: String,
}

static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub async fn create() -> Result<Self> {
        let admin = admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.with_context(|| {
            format!("no PostgreSQL at {admin}; run the suite with scripts/test.sh, which starts a throwaway cluster when none is reachable")
        })?;
        sweep(&mut conn).await;
        let name =
            format!("sccr_t_{}_{}", std::process::id(), DB_COUNTER.fetch_add(1, Ordering::Relaxed));
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await?;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        Ok(Self { url: format!("{base}/{name}"), name })
    }
}

/// Drop test databases whose creating process no longer runs.
async fn sweep(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'sccr\\_t\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = conn
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
            }
        }
    }
}

/// A Mosquitto broker on a free loopback port, with `deploy/mosquitto/sccr.conf`.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    conf: PathBuf,
    _dir: TempDir,
}

impl Broker {
    pub async fn start() -> Result<Self> {
        Self::start_with("").await
    }

    /// Start with a whole configuration of the caller's: `make(dir, port)` returns the file's
    /// text given the broker's private directory (readable by the broker) and its port.
    pub async fn start_config(make: impl FnOnce(&Path, u16) -> Result<String>) -> Result<Self> {
        let dir = TempDir::new("mosquitto")?;
        let port = free_port();
        let _ = Command::new("chmod").arg("0777").arg(&dir.path).status();
        let text = make(&dir.path, port)?;
        let conf = dir.path.join("mosquitto.conf");
        std::fs::write(&conf, text)?;
        let _ = Command::new("chmod").args(["-R", "a+rwX"]).arg(&dir.path).status();
        let mut broker = Self { port, child: None, conf, _dir: dir };
        broker.spawn().await?;
        Ok(broker)
    }

    /// The broker's persistence file (written every `autosave_interval` and at exit).
    pub fn persistence_file(&self) -> PathBuf {
        self._dir.path.join("data/mosquitto.db")
    }

    /// SIGKILL: no session saved since the last autosave.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start a killed or stopped broker again on the same port and configuration.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("the broker is running");
        }
        self.spawn().await
    }

    /// Start with extra configuration lines appended (e.g. a TLS listener).
    pub async fn start_with(extra: &str) -> Result<Self> {
        let dir = TempDir::new("mosquitto")?;
        let port = free_port();
        let base = std::fs::read_to_string(workspace_root().join("deploy/mosquitto/sccr.conf"))?;
        let data = dir.path.join("data");
        std::fs::create_dir_all(&data)?;
        // Mosquitto started as root drops to its own user; let it write its persistence file.
        let _ = Command::new("chmod").arg("0777").arg(&dir.path).arg(&data).status();
        let conf = dir.path.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "{base}\npersistence_location {}/\nlistener {port} 127.0.0.1\n{extra}\n",
                data.display()
            ),
        )?;
        let mut broker = Self { port, child: None, conf, _dir: dir };
        broker.spawn().await?;
        Ok(broker)
    }

    async fn spawn(&mut self) -> Result<()> {
        let bin =
            which("mosquitto").context("mosquitto not installed (apt-get install mosquitto)")?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start mosquitto")?;
        self.child = Some(child);
        self.wait_listening().await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stop the broker the way an operator would (SIGTERM: it saves its sessions).
    #[allow(clippy::disallowed_methods)] // a synchronous wait on a child process
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut c) = self.child.take() else { return Ok(()) };
        Command::new("kill").arg("-TERM").arg(c.id().to_string()).status()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while c.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                bail!("mosquitto did not stop within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Start again on the same port with the same configuration and persistence file.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn().await
    }

    async fn wait_listening(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                bail!("mosquitto did not listen on {} within 10 s", self.port);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A PostgreSQL cluster of the test's own (initdb + pg_ctl on a free port), so a test can
/// stop it hard (`pg_ctl -m immediate`, a crash as far as clients see) and start it again.
/// Runs as the `postgres` user when the test runs as root (PostgreSQL refuses root).
pub struct ThrowawayPg {
    pub port: u16,
    bindir: PathBuf,
    dir: TempDir,
    as_postgres: bool,
}

impl ThrowawayPg {
    pub fn start() -> Result<Self> {
        let bindir =
            pg_bindir().context("PostgreSQL server binaries (initdb, pg_ctl) not found")?;
        let dir = TempDir::new("pg")?;
        let as_postgres = unsafe_is_root();
        if as_postgres {
            let st = Command::new("chown").arg("postgres").arg(&dir.path).status()?;
            if !st.success() {
                bail!("chown postgres {}", dir.path.display());
            }
        }
        let pg = Self { port: free_port(), bindir, dir, as_postgres };
        let data = pg.dir.path.join("data");
        pg.run(
            "initdb",
            &["-D", &data.to_string_lossy(), "-U", "postgres", "-A", "trust", "--no-sync"],
        )?;
        pg.start_again()?;
        Ok(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let bin = self.bindir.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let out = cmd.args(args).output().with_context(|| format!("run {tool}"))?;
        if !out.status.success() {
            bail!(
                "{tool} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The admin URL (database `postgres`).
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Create a database and return its URL.
    pub async fn create_db(&self, name: &str) -> Result<String> {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url()).await?;
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await?;
        Ok(self.url(name))
    }

    /// `pg_ctl stop -m immediate`: every backend exits at once, no checkpoint (crash recovery
    /// runs at the next start).
    pub fn stop_immediate(&self) -> Result<()> {
        let data = self.dir.path.join("data");
        self.run("pg_ctl", &["-D", &data.to_string_lossy(), "-m", "immediate", "-w", "stop"])
    }

    /// Start (again) on the same port and data directory; waits until it accepts connections.
    pub fn start_again(&self) -> Result<()> {
        let data = self.dir.path.join("data");
        let log = self.dir.path.join("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100 -c fsync=off",
            self.port,
            self.dir.path.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-o",
                &opts,
                "start",
            ],
        )
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        let _ = self.stop_immediate();
    }
}

fn unsafe_is_root() -> bool {
    // No libc dependency: the effective uid from /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn pg_bindir() -> Option<PathBuf> {
    if let Some(initdb) = which("initdb") {
        return initdb.parent().map(Path::to_path_buf);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .collect();
    dirs.sort();
    dirs.into_iter().rev().find(|d| d.join("initdb").is_file())
}

/// Resident set size of a process in KiB (from /proc), or None when it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// A running `edge-agent simulate` child process with a ledger of what it published.
pub struct Simulator {
    child: Option<Child>,
    pub ledger: PathBuf,
    pub log: PathBuf,
}

impl Simulator {
    /// `devices` simulated devices reporting every `interval` for `duration`, over
    /// `connections` MQTT connections to the broker on `port`.
    pub fn start(
        port: u16,
        dir: &Path,
        tag: &str,
        devices: usize,
        interval: &str,
        duration: &str,
    ) -> Result<Self> {
        let ledger = dir.join(format!("sim-{tag}.ledger"));
        let log = dir.join(format!("sim-{tag}.log"));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let child = Command::new(workspace_bin("edge-agent")?)
            .args([
                "simulate",
                "--devices",
                &devices.to_string(),
                "--connections",
                "2",
                "--interval",
                interval,
                "--duration",
                duration,
            ])
            .arg("--broker")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--client-id")
            .arg(format!("sim-{tag}"))
            .arg("--ledger")
            .arg(&ledger)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start edge-agent simulate")?;
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
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The (device, metric, time in ms) of every stored reading, with how often each is stored.
pub async fn stored_keys(
    pool: &sqlx::PgPool,
    exclude_device: &str,
) -> Result<std::collections::BTreeMap<(String, String, i64), i64>> {
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT device, metric, (extract(epoch FROM time) * 1000)::int8, count(*) FROM readings WHERE device <> $1 GROUP BY 1, 2, 3",
    )
    .bind(exclude_device)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(d, m, t, n)| ((d, m, t), n)).collect())
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

/// A running `sccr serve` child process, killed on drop.
pub struct Sccr {
    pub api_port: u16,
    child: Option<Child>,
    pub log: PathBuf,
    env: Vec<(String, String)>,
    config: PathBuf,
    role: Option<String>,
}

impl Sccr {
    /// Start `sccr serve` against `broker_port` and `db_url`, configured through the
    /// environment; `extra` adds or replaces `SCCR_…` variables.
    pub fn serve(
        broker_port: u16,
        db_url: &str,
        log_dir: &Path,
        extra: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start(broker_port, db_url, log_dir, None, extra, None)
    }

    /// Like [`Sccr::serve`], with a configuration file holding `toml` (for what the
    /// environment cannot express, such as alert rules); the environment still overrides it.
    pub fn serve_with_config(
        broker_port: u16,
        db_url: &str,
        log_dir: &Path,
        toml: &str,
        extra: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start(broker_port, db_url, log_dir, Some(toml), extra, None)
    }

    /// `sccr serve --role ROLE` (ingest or api), optionally with a configuration file.
    pub fn serve_role(
        role: &str,
        broker_port: u16,
        db_url: &str,
        log_dir: &Path,
        toml: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start(broker_port, db_url, log_dir, toml, extra, Some(role))
    }

    fn start(
        broker_port: u16,
        db_url: &str,
        log_dir: &Path,
        toml: Option<&str>,
        extra: &[(&str, &str)],
        role: Option<&str>,
    ) -> Result<Self> {
        let api_port = free_port();
        // sccr serve needs a configuration file; an empty one is all defaults.
        let config = log_dir.join(format!("sccr-{api_port}.toml"));
        std::fs::write(&config, toml.unwrap_or_default())?;
        let mut env = vec![
            ("SCCR_MQTT__PORT".to_string(), broker_port.to_string()),
            ("SCCR_DATABASE__URL".to_string(), db_url.to_string()),
            ("SCCR_API__LISTEN".to_string(), format!("127.0.0.1:{api_port}")),
            ("SCCR_MQTT__CLIENT_ID".to_string(), format!("sccr-test-{api_port}")),
            ("SCCR_API__BOOTSTRAP_ADMIN_TOKEN".to_string(), TEST_ADMIN_TOKEN.to_string()),
        ];
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        let mut s = Self {
            api_port,
            child: None,
            log: log_dir.join(format!("sccr-{api_port}.log")),
            env,
            config,
            role: role.map(str::to_owned),
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut command = Command::new(workspace_bin("sccr")?);
        command.arg("serve");
        if let Some(role) = &self.role {
            command.arg("--role").arg(role);
        }
        command.arg("--config").arg(&self.config);
        let child = command
            // Only this test's settings: nothing SCCR_… from the suite's own environment.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().cloned())
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start sccr serve")?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Start again with the same configuration (same MQTT client id: the session resumes).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// SIGKILL: no drain, no flush, no acks.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the process to exit; returns whether it exited with success.
    #[allow(clippy::disallowed_methods)] // a synchronous wait on a child process
    pub fn terminate(&mut self, timeout: Duration) -> Result<bool> {
        let Some(mut c) = self.child.take() else { bail!("not running") };
        let status = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st.success());
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                bail!("sccr did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the API answers `/healthz`.
    pub async fn wait_healthy(&self) {
        let port = self.api_port;
        wait_for("sccr /healthz", Duration::from_secs(30), || async move {
            http_get(port, "/healthz").await.ok().filter(|(status, _)| *status == 200).map(|_| ())
        })
        .await;
    }
}

impl Drop for Sccr {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The admin API token every `sccr` process started by [`Sccr`] accepts (through
/// `api.bootstrap_admin_token`); [`http_get`] and [`http_send`] present it.
pub const TEST_ADMIN_TOKEN: &str = "sccr_test_admin_0123456789abcdef0123456789abcdef";

/// The websocket URL of a test server's live feed, with the admin token.
pub fn live_url(port: u16) -> String {
    format!("ws://127.0.0.1:{port}/api/v1/live?access_token={TEST_ADMIN_TOKEN}")
}

/// A minimal HTTP/1.1 GET on loopback as the test admin: (status, body).
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    http_request(port, "GET", path, Some(TEST_ADMIN_TOKEN), "").await
}

/// A minimal HTTP/1.1 request with a JSON body on loopback as the test admin: (status, body).
pub async fn http_send(port: u16, method: &str, path: &str, json: &str) -> Result<(u16, String)> {
    http_request(port, method, path, Some(TEST_ADMIN_TOKEN), json).await
}

/// A minimal HTTP/1.1 request on loopback with an optional bearer token: (status, body).
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: &str,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        json.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(json.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text.split_whitespace().nth(1).context("no status")?.parse()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// Publish with a real MQTT 5 client at QoS 1 and wait for every PUBACK.
pub async fn publish_all(
    port: u16,
    client_id: &str,
    messages: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let total = messages.len();
    let publisher = tokio::spawn(async move {
        for (topic, payload) in messages {
            client.publish(topic, QoS::AtLeastOnce, false, payload).await?;
        }
        Ok::<_, rumqttc::v5::ClientError>(client)
    });
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked < total {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .context("publishing timed out")?;
        if let Event::Incoming(Packet::PubAck(_)) = event.context("publisher connection")? {
            acked += 1;
        }
    }
    let client = publisher.await??;
    let _ = client.disconnect().await;
    Ok(())
}

/// Compact telemetry payload with `readings` as (metric, value), all at `ts_ms`.
pub fn compact(seq: u64, ts_ms: i64, readings: &[(&str, f64)]) -> Vec<u8> {
    let rs: Vec<serde_json::Value> =
        readings.iter().map(|(m, v)| serde_json::json!({"m": m, "v": v})).collect();
    serde_json::to_vec(&serde_json::json!({"seq": seq, "ts": ts_ms, "readings": rs})).expect("json")
}

pub fn telemetry_topic(device: &str) -> String {
    format!("sccr/v1/devices/{device}/telemetry")
}

/// A recent minute boundary (an hour ago), so readings pass the skew checks.
pub fn recent_base_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    (now - 3_600_000) / 60_000 * 60_000
}

/// Publish probe readings until one is stored: proves ingest is connected and subscribed
/// (its persistent session exists from then on).
pub async fn wait_pipeline_ready(broker_port: u16, pool: &sqlx::PgPool) {
    let mut n = 0u64;
    wait_for("a probe reading to be stored", Duration::from_secs(30), || {
        n += 1;
        let seq = n;
        async move {
            let payload = compact(seq, recent_base_ms() + seq as i64, &[("battery_v", 12.0)]);
            publish_all(
                broker_port,
                &format!("probe-{seq}"),
                vec![(telemetry_topic("probe"), payload)],
            )
            .await
            .ok()?;
            let stored: i64 =
                sqlx::query_scalar("SELECT count(*) FROM readings WHERE device = 'probe'")
                    .fetch_one(pool)
                    .await
                    .ok()?;
            (stored > 0).then_some(())
        }
    })
    .await;
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
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let child = Command::new(workspace_bin("edge-agent")?)
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--stats-file")
            .arg(&stats)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start edge-agent")?;
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
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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

/// An MQTT 5 client for tests: subscribes to `filters` and collects what arrives.
pub struct MqttProbe {
    pub client: rumqttc::v5::AsyncClient,
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>, bool)>,
    task: tokio::task::JoinHandle<()>,
}

impl MqttProbe {
    pub async fn connect(port: u16, client_id: &str, filters: &[&str]) -> Result<Self> {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).await?;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    if tx.send((topic, p.payload.to_vec(), p.retain)).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Self { client, rx, task })
    }

    /// The next message on `topic` whose payload satisfies `pred`, within `timeout`.
    pub async fn expect(
        &mut self,
        topic: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            let Ok(Some((t, payload, _))) = next else {
                panic!("no matching message on {topic} within {timeout:?}")
            };
            if t == topic {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&payload) {
                    if pred(&v) {
                        return v;
                    }
                }
            }
        }
    }

    pub async fn publish(&self, topic: &str, payload: &str) -> Result<()> {
        self.client
            .publish(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload.as_bytes().to_vec(),
            )
            .await?;
        Ok(())
    }
}

impl Drop for MqttProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A throwaway certificate authority with a server certificate for 127.0.0.1 and one
/// client certificate, made with the `openssl` command.
pub struct TestPki {
    pub dir: TempDir,
}

impl TestPki {
    pub fn create(client_cn: &str) -> Result<Self> {
        let dir = TempDir::new("pki")?;
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir.path)
                .output()
                .context("run openssl")?;
            if !out.status.success() {
                bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sccr-test-ca",
        ])?;
        std::fs::write(dir.path.join("server.ext"), "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")?;
        std::fs::write(
            dir.path.join("client.ext"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )?;
        for (name, cn) in [("server", "127.0.0.1"), ("client", client_cn)] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ])?;
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ])?;
        }
        // Mosquitto drops to its own user when started as root: let it read the files.
        let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&dir.path).status();
        Ok(Self { dir })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path.join(file)
    }
}

/// Wait until the rollup merger has folded the whole rollup log (readings committed by
/// the writer are counted in rollup_1m/1h/1d and `latest` only after that).
pub async fn wait_rollups_merged(pool: &sqlx::PgPool) {
    wait_for("the rollup log to be merged", Duration::from_secs(30), || async {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM rollup_pending").fetch_one(pool).await.ok()?;
        (pending == 0).then_some(())
    })
    .await;
}

/// Every rollup level must equal a recount from the raw rows, bucket by bucket: counts,
/// minimum, maximum and last value exactly; sums to 1e-9 relative, because merged partial
/// sums add the same values in another order than a recount does (floating point).
pub async fn assert_rollups_match_raw(pool: &sqlx::PgPool) {
    wait_rollups_merged(pool).await;
    for (table, unit) in [("rollup_1m", "minute"), ("rollup_1h", "hour"), ("rollup_1d", "day")] {
        let sql = format!(
            "WITH raw AS (
                SELECT device, metric, date_trunc('{unit}', time) AS bucket, count(*) AS n, sum(value) AS s, min(value) AS lo,
                       max(value) AS hi, (array_agg(value ORDER BY time DESC))[1] AS last
                FROM readings GROUP BY 1, 2, 3)
             SELECT count(*) FROM raw FULL JOIN {table} r USING (device, metric, bucket)
             WHERE raw.n IS DISTINCT FROM r.count OR r.sum IS NULL OR raw.s IS NULL
                OR abs(raw.s - r.sum) > 1e-9 * greatest(1.0, abs(raw.s)) OR raw.lo IS DISTINCT FROM r.min
                OR raw.hi IS DISTINCT FROM r.max OR raw.last IS DISTINCT FROM r.last_value"
        );
        let mismatches: i64 = sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap_or(-1);
        assert_eq!(mismatches, 0, "{table} differs from a recount of readings");
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

/// A 480 m urban road segment with a free-flow speed of 50 km/h.
pub fn test_segment(id: &str) -> telemetry::RoadSegment {
    telemetry::RoadSegment {
        id: telemetry::SegmentId::parse(id).expect("segment id"),
        name: "Via di prova".into(),
        kind: "urban".into(),
        coordinates: vec![[11.2460, 43.7810], [11.2520, 43.7800]],
        length_m: 480.0,
        lanes: 2,
        speed_limit_kmh: 50.0,
        free_flow_kmh: 50.0,
        capacity_vph: 1_800.0,
    }
}

/// A loop detector linked to `segment`.
pub fn loop_on(device: &str, segment: &str) -> store::DeviceRecord {
    store::DeviceRecord {
        id: telemetry::DeviceId::parse(device).expect("device id"),
        kind: Some("traffic_loop".into()),
        segment: Some(telemetry::SegmentId::parse(segment).expect("segment id")),
        registered_at: telemetry::EventTime::now(),
    }
}
