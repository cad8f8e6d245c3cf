//! PostgreSQL for tests: a throwaway database per test on the suite's server, a cluster of
//! the test's own to crash and restart, and checks of the stored readings and rollups.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};
use sqlx::{Connection, Executor};

use crate::{free_port, which, TempDir};

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
        run_tool(&self.bindir, self.as_postgres, tool, args)
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

pub(crate) fn unsafe_is_root() -> bool {
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

pub(crate) fn pg_bindir() -> Option<PathBuf> {
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

/// Bring the rollups up to every reading stored so far, as the rollup merger does once
/// their minutes close: merge the pending batches, then seal and fold the open minutes
/// (readings committed by the writer are counted in rollup_1m/1h/1d and `latest` only
/// after that; history and the API read the rest raw meanwhile).
pub async fn wait_rollups_merged(pool: &sqlx::PgPool) {
    let pg = store::PgStore::from_pool(pool.clone(), &store::StoreOptions::default())
        .await
        .expect("store over the test pool");
    store::Store::Postgres(pg).catch_up_rollups().await.expect("catch up the rollups");
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

/// Run a PostgreSQL server tool from `bindir`, as the `postgres` user when `as_postgres`
/// (the servers refuse to run as root); its output names what failed.
pub(crate) fn run_tool(
    bindir: &std::path::Path,
    as_postgres: bool,
    tool: &str,
    args: &[&str],
) -> Result<()> {
    let bin = bindir.join(tool);
    let mut cmd = if as_postgres {
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
