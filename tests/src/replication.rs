//! A replicated PostgreSQL for tests: a primary and a hot standby fed by streaming
//! replication, each a cluster of the test's own on a free port in a temporary directory,
//! so a test can SIGKILL the primary, promote the standby, pause the standby's replay, and
//! compare what each holds. Both run as the `postgres` OS user when the test runs as root
//! (PostgreSQL refuses root), as [`crate::ThrowawayPg`] does.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sqlx::{Connection, Executor};

use crate::pg::{pg_bindir, run_tool, unsafe_is_root};
use crate::{free_port, TempDir};

/// How the primary waits for the standby at commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// `synchronous_standby_names = '*'`, `synchronous_commit = on`: a commit returns once
    /// the standby has flushed its WAL (what zero loss of acknowledged readings needs).
    On,
    /// Like `On`, and the standby has also applied it (`remote_apply`): readers of the
    /// standby see every acknowledged commit.
    RemoteApply,
    /// No synchronous standby: commits return after the primary's own flush.
    Async,
}

/// One server of the pair.
pub struct PgNode {
    pub port: u16,
    data: PathBuf,
    log: PathBuf,
    socket_dir: PathBuf,
    bindir: PathBuf,
    as_postgres: bool,
    /// `-c k=v` options of this server.
    options: String,
}

impl PgNode {
    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        run_tool(&self.bindir, self.as_postgres, tool, args)
    }

    /// Start (again) with this node's options; waits until it accepts connections (a
    /// standby: until it accepts read-only connections).
    pub fn start(&self) -> Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100 {}",
            self.port,
            self.socket_dir.display(),
            self.options
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-l",
                &self.log.to_string_lossy(),
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        )
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// SIGKILL the postmaster and every process it started: the host's power cut as
    /// far as PostgreSQL and its clients see (no shutdown checkpoint, no goodbye to the
    /// standby or to clients).
    pub fn kill(&self) -> Result<()> {
        let pidfile = self.data.join("postmaster.pid");
        let text = std::fs::read_to_string(&pidfile)
            .with_context(|| format!("read {}", pidfile.display()))?;
        let pid: u32 = text.lines().next().unwrap_or_default().trim().parse()?;
        let children = children_of(pid);
        let mut all = vec![pid];
        all.extend(children);
        let st = Command::new("kill").arg("-KILL").args(all.iter().map(u32::to_string)).status()?;
        if !st.success() {
            bail!("kill -KILL {all:?}");
        }
        Ok(())
    }

    /// `pg_ctl promote -w`: the standby ends recovery and becomes a primary.
    pub fn promote(&self) -> Result<()> {
        self.run("pg_ctl", &["-D", &self.data.to_string_lossy(), "-w", "-t", "60", "promote"])
    }

    /// `pg_ctl stop -m immediate` (nothing if it is not running).
    pub fn stop_immediate(&self) -> Result<()> {
        self.run("pg_ctl", &["-D", &self.data.to_string_lossy(), "-m", "immediate", "-w", "stop"])
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let st = Command::new("kill").arg(sig).arg(pid.to_string()).status()?;
    if !st.success() {
        bail!("kill {sig} {pid}");
    }
    Ok(())
}

/// The processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).ok().is_some_and(|stat| {
                // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// A primary and its hot standby (streaming replication from `pg_basebackup -R`),
/// stopped and removed on drop.
pub struct ReplicatedPg {
    pub primary: PgNode,
    pub standby: PgNode,
    pub mode: SyncMode,
    dir: TempDir,
}

impl ReplicatedPg {
    /// initdb a primary with `wal_level = replica` and a replication entry in `pg_hba.conf`,
    /// start it, take a base backup for the standby (`-R`: `standby.signal` and
    /// `primary_conninfo`), start the standby with `hot_standby = on`, and wait until it
    /// streams (and, in a synchronous mode, until the primary counts it as synchronous).
    pub async fn start(mode: SyncMode) -> Result<Self> {
        let bindir =
            pg_bindir().context("PostgreSQL server binaries (initdb, pg_ctl) not found")?;
        // Where initdb really lives (a PATH entry may link only some tools, not
        // pg_basebackup).
        let bindir = std::fs::canonicalize(bindir.join("initdb"))?
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or(bindir);
        let dir = TempDir::new("pg-repl")?;
        let as_postgres = unsafe_is_root();
        if as_postgres {
            let st = Command::new("chown").arg("postgres").arg(&dir.path).status()?;
            if !st.success() {
                bail!("chown postgres {}", dir.path.display());
            }
        }
        let sync = match mode {
            SyncMode::On => "-c synchronous_standby_names='*' -c synchronous_commit=on",
            SyncMode::RemoteApply => {
                "-c synchronous_standby_names='*' -c synchronous_commit=remote_apply"
            }
            SyncMode::Async => "-c synchronous_commit=on",
        };
        // fsync stays on: the test kills the primary, and what it flushed is what counts.
        let common = "-c wal_level=replica -c max_wal_senders=5 -c hot_standby=on \
                      -c wal_keep_size=256MB -c wal_receiver_status_interval=1s \
                      -c hot_standby_feedback=on";
        let primary = PgNode {
            port: free_port(),
            data: dir.path.join("primary"),
            log: dir.path.join("primary.log"),
            socket_dir: dir.path.clone(),
            bindir: bindir.clone(),
            as_postgres,
            options: format!("{common} {sync}"),
        };
        primary.run(
            "initdb",
            &["-D", &primary.data.to_string_lossy(), "-U", "postgres", "-A", "trust", "--no-sync"],
        )?;
        // initdb's pg_hba.conf already lets local replication in with -A trust; say so
        // explicitly, as a production primary must.
        let hba = primary.data.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba)?;
        text.push_str("\nhost replication postgres 127.0.0.1/32 trust\n");
        std::fs::write(&hba, text)?;
        primary.start()?;

        // The standby: async settings (after a failover it is a primary without standby,
        // and must not wait for one).
        let standby = PgNode {
            port: free_port(),
            data: dir.path.join("standby"),
            log: dir.path.join("standby.log"),
            socket_dir: dir.path.clone(),
            bindir: bindir.clone(),
            as_postgres,
            options: common.to_owned(),
        };
        let conn =
            format!("host=127.0.0.1 port={} user=postgres application_name=standby1", primary.port);
        run_tool(
            &bindir,
            as_postgres,
            "pg_basebackup",
            &[
                "-d",
                &conn,
                "-D",
                &standby.data.to_string_lossy(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        )?;
        standby.start()?;
        let pair = Self { primary, standby, mode, dir };
        pair.wait_streaming().await?;
        Ok(pair)
    }

    /// Wait until the primary sees the standby streaming (and synchronous, in a
    /// synchronous mode).
    async fn wait_streaming(&self) -> Result<()> {
        let want = if self.mode == SyncMode::Async { "async" } else { "sync" };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let state: Option<(String, String)> = async {
                let mut c =
                    sqlx::PgConnection::connect(&self.primary.url("postgres")).await.ok()?;
                sqlx::query_as("SELECT state, sync_state FROM pg_stat_replication")
                    .fetch_optional(&mut c)
                    .await
                    .ok()
                    .flatten()
            }
            .await;
            if state.as_ref().is_some_and(|(s, sync)| s == "streaming" && sync == want) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the standby is not streaming ({state:?}) after 60 s\nprimary log:\n{}\nstandby log:\n{}",
                    self.primary.log_text(),
                    self.standby.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Create a database on the primary and wait until the standby has it too: its URLs
    /// on (primary, standby).
    pub async fn create_db(&self, name: &str) -> Result<(String, String)> {
        let mut conn = sqlx::PgConnection::connect(&self.primary.url("postgres")).await?;
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await?;
        let standby = self.standby.url(name);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while sqlx::PgConnection::connect(&standby).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                bail!("database {name} did not reach the standby in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok((self.primary.url(name), standby))
    }

    /// SIGSTOP the standby's WAL receiver: it receives, flushes and confirms nothing more
    /// (a standby falling behind, a slow network), and in a synchronous mode the primary's
    /// commits wait. Returns its pid for [`ReplicatedPg::resume_receiver`].
    pub async fn stop_receiver(&self) -> Result<u32> {
        let mut c = sqlx::PgConnection::connect(&self.standby.url("postgres")).await?;
        let pid: i32 = sqlx::query_scalar("SELECT pid FROM pg_stat_wal_receiver")
            .fetch_optional(&mut c)
            .await?
            .context("the standby has no WAL receiver")?;
        signal(pid as u32, "-STOP")?;
        Ok(pid as u32)
    }

    /// SIGCONT the WAL receiver stopped by [`ReplicatedPg::stop_receiver`].
    pub fn resume_receiver(&self, pid: u32) -> Result<()> {
        signal(pid, "-CONT")
    }

    /// SIGKILL the WAL receiver stopped by [`ReplicatedPg::stop_receiver`]: what it had
    /// not flushed (WAL still in its socket) is gone, and the standby restarts its
    /// processes and recovers from its own disk, as after the primary's host vanished.
    pub fn kill_receiver(&self, pid: u32) -> Result<()> {
        signal(pid, "-KILL")
    }

    /// Where the clusters live (their logs: `primary.log`, `standby.log`).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir.path
    }
}

impl Drop for ReplicatedPg {
    fn drop(&mut self) {
        let _ = self.standby.stop_immediate();
        let _ = self.primary.stop_immediate();
    }
}
