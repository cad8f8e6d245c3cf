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
fn admin_url() -> String {
    std::env::var("SCCR_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
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
        let name = format!("sccr_t_{}_{}", std::process::id(), DB_COUNTER.fetch_add(1, Ordering::Relaxed));
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await?;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        Ok(Self { url: format!("{base}/{name}"), name })
    }
}

/// Drop test databases whose creating process no longer runs.
async fn sweep(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'sccr\\_t\\_%'")
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
    for name in names {
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
            }
        }
    }
}

/// A Mosquitto broker on a free loopback port, with `deploy/mosquitto/sccr.conf`.
pub struct Broker {
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

impl Broker {
    pub async fn start() -> Result<Self> {
        let dir = TempDir::new("mosquitto")?;
        let port = free_port();
        let base = std::fs::read_to_string(workspace_root().join("deploy/mosquitto/sccr.conf"))?;
        let conf = dir.path.join("mosquitto.conf");
        std::fs::write(&conf, format!("{base}\nlistener {port} 127.0.0.1\n"))?;
        let bin = which("mosquitto").context("mosquitto not installed (apt-get install mosquitto)")?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start mosquitto")?;
        let broker = Self { port, child, _dir: dir };
        broker.wait_listening().await?;
        Ok(broker)
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!("sccr-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
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

/// Path of a workspace binary built next to the test executable (target/<profile>/NAME).
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe.parent().and_then(Path::parent).context("test binary has no target dir")?;
    let bin = profile_dir.join(name);
    if !bin.is_file() {
        bail!("{} is not built; run the suite with scripts/test.sh (it builds the binaries first)", bin.display());
    }
    Ok(bin)
}
