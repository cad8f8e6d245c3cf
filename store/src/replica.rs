//! A replicated PostgreSQL: reads from a hot standby, and writes that follow the primary
//! across a failover (docs/replication.md).
//!
//! - **Failover** ([`Failover`]): with `database.failover_urls`, [`crate::PgStore::connect`]
//!   knows every host that may be the primary. It connects to the one that is writable
//!   (`pg_is_in_recovery()` false), refuses any pooled connection to a standby, and a
//!   watcher checks the current host every `failover_probe_interval`; when it is gone or
//!   has become a standby, the watcher finds the writable host and points the pool there
//!   (`Pool::set_connect_options`; sqlx has no multi-host URLs). The batch writer keeps
//!   retrying the same batch meanwhile, and hands back its tickets (the MQTT acks) only
//!   after a commit, so nothing is acknowledged that the new primary does not hold — as
//!   long as every commit the old primary acknowledged had reached the standby:
//!   synchronous replication, `synchronous_commit = on` or stronger.
//! - **Read replica** ([`Reads`]): history and exports may read from a hot standby
//!   (`database.read_url`). A probe measures the standby's lag every
//!   [`PROBE_INTERVAL`]; a read goes to the standby when it is up and its lag at most
//!   `database.max_read_lag`, else to the primary, and every read says where it went
//!   ([`ReadChoice`]). Writes, rollups and everything that must read its own writes use
//!   the primary.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::Connection;
use telemetry::metrics::{self, Collector, Encoder, Unit};

use crate::{Store, StoreError};

/// How long one host may take to answer a probe (connect and query).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the read replica's lag is measured.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// `host:port` of a connection target, for logs and metrics.
fn label(target: &PgConnectOptions) -> String {
    format!("{}:{}", target.get_host(), target.get_port())
}

/// Whether the host is a standby (`Some(true)`), a writable primary (`Some(false)`), or
/// unreachable within [`PROBE_TIMEOUT`] (`None`).
async fn in_recovery(conn: &mut PgConnection) -> Option<bool> {
    host_state(conn).await.map(|(standby, _)| standby)
}

/// Whether commits on a primary wait for a synchronous standby's flush: a standby named
/// in `synchronous_standby_names` and `synchronous_commit` `on` or `remote_apply`
/// (`remote_write` returns before the standby's flush, `local` and `off` before any).
const SYNCHRONOUS_SQL: &str = "SELECT pg_is_in_recovery(),
    current_setting('synchronous_standby_names') <> ''
    AND current_setting('synchronous_commit') IN ('on', 'remote_apply')";

/// (in recovery, synchronous) of the host, or `None` when it does not answer in time.
async fn host_state(conn: &mut PgConnection) -> Option<(bool, bool)> {
    tokio::time::timeout(
        PROBE_TIMEOUT,
        sqlx::query_as::<_, (bool, bool)>(SYNCHRONOUS_SQL).fetch_one(&mut *conn),
    )
    .await
    .ok()?
    .ok()
}

async fn open(target: &PgConnectOptions) -> Option<PgConnection> {
    tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect_with(target)).await.ok()?.ok()
}

/// The index of the first writable primary among `targets` (starting after `skip`, if
/// given, and trying it last), or an error naming what each host is.
pub(crate) async fn find_primary(
    targets: &[PgConnectOptions],
    skip: Option<usize>,
) -> Result<usize, StoreError> {
    let start = skip.map_or(0, |s| s + 1);
    let mut seen = Vec::new();
    for k in 0..targets.len() {
        let i = (start + k) % targets.len();
        let state = match open(&targets[i]).await {
            Some(mut conn) => {
                let r = in_recovery(&mut conn).await;
                let _ = conn.close().await;
                r
            }
            None => None,
        };
        match state {
            Some(false) => return Ok(i),
            Some(true) => seen.push(format!("{} is a standby", label(&targets[i]))),
            None => seen.push(format!("{} is unreachable", label(&targets[i]))),
        }
    }
    Err(StoreError::NoPrimary(seen.join(", ")))
}

/// The hosts that may be the primary and which one the pool uses; its figures are in
/// `/metrics` (`sccr_database_primary`, `sccr_database_failovers_total`).
#[derive(Debug)]
pub struct Failover {
    hosts: Vec<String>,
    current: AtomicUsize,
    failovers: AtomicU64,
    /// Probes that found the current primary gone or read-only.
    primary_lost: AtomicU64,
    /// Whether the primary's commits wait for a synchronous standby (at its last probe).
    synchronous: AtomicBool,
}

impl Failover {
    pub(crate) fn start(
        pool: PgPool,
        targets: Vec<PgConnectOptions>,
        first: usize,
        interval: Duration,
    ) -> Arc<Self> {
        let f = Arc::new(Self {
            hosts: targets.iter().map(label).collect(),
            current: AtomicUsize::new(first),
            failovers: AtomicU64::new(0),
            primary_lost: AtomicU64::new(0),
            synchronous: AtomicBool::new(true),
        });
        tokio::spawn(watch(pool, targets, f.clone(), interval));
        f
    }

    /// `host:port` of the primary the pool connects to now.
    pub fn current(&self) -> &str {
        &self.hosts[self.current.load(Ordering::Relaxed)]
    }

    /// Times the pool was pointed at another host.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }
}

/// Check the current primary every `interval` on a connection of its own; when it is
/// unreachable or read-only, point the pool at the writable host, if any (else try again
/// at the next tick). Ends when the pool is closed.
async fn watch(pool: PgPool, targets: Vec<PgConnectOptions>, f: Arc<Failover>, interval: Duration) {
    let mut conn: Option<PgConnection> = None;
    // What the last search found, logged again only when it changes.
    let mut last_search = String::new();
    loop {
        tokio::time::sleep(interval).await;
        if pool.is_closed() {
            return;
        }
        let cur = f.current.load(Ordering::Relaxed);
        if conn.is_none() {
            conn = open(&targets[cur]).await;
        }
        let state = match conn.as_mut() {
            Some(c) => host_state(c).await,
            None => None,
        };
        if let Some((false, synchronous)) = state {
            let was = f.synchronous.swap(synchronous, Ordering::Relaxed);
            if was && !synchronous {
                tracing::warn!(
                    primary = %f.hosts[cur],
                    "the database primary commits without a synchronous standby: readings \
                     acknowledged now are lost if this host is lost before a standby has them \
                     (set synchronous_standby_names and synchronous_commit = on)"
                );
            } else if !was && synchronous {
                tracing::info!(primary = %f.hosts[cur], "the database primary commits synchronously again");
            }
            continue;
        }
        conn = None;
        f.primary_lost.fetch_add(1, Ordering::Relaxed);
        match find_primary(&targets, Some(cur)).await {
            Ok(next) if next != cur => {
                last_search.clear();
                pool.set_connect_options(targets[next].clone());
                f.current.store(next, Ordering::Relaxed);
                f.failovers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    from = %f.hosts[cur],
                    to = %f.hosts[next],
                    "database primary moved: new connections go to the writable host"
                );
            }
            Ok(_) => last_search.clear(),
            Err(e) => {
                let found = e.to_string();
                if found != last_search {
                    tracing::warn!(error = %found, "database primary lost; looking again");
                    last_search = found;
                }
            }
        }
    }
}

impl Collector for Failover {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let e = &mut e;
        let cur = self.current.load(Ordering::Relaxed);
        metrics::gauge_by(
            e,
            "database_primary",
            "1 for the host the store writes to, 0 for the other hosts that may become the primary (database.url, database.failover_urls).",
            "host",
            self.hosts.iter().enumerate().map(|(i, h)| (h.as_str(), i64::from(i == cur))),
        )?;
        metrics::counter(
            e,
            "database_failovers",
            "Times the store moved to another primary host.",
            self.failovers.load(Ordering::Relaxed),
        )?;
        metrics::flag(
            e,
            "database_synchronous",
            "Whether the primary's commits wait for a synchronous standby's flush (synchronous_standby_names set, synchronous_commit on or remote_apply): 0 means a failover may lose acknowledged readings.",
            self.synchronous.load(Ordering::Relaxed),
        )?;
        metrics::counter(
            e,
            "database_primary_lost",
            "Probes that found the current primary unreachable or read-only.",
            self.primary_lost.load(Ordering::Relaxed),
        )
    }
}

/// Where a read went, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSource {
    /// No replica configured.
    Primary,
    Replica,
    /// A replica is configured but is down (or its last query failed).
    PrimaryReplicaDown,
    /// The replica's lag exceeds `max_read_lag` (or is not known yet).
    PrimaryReplicaLagging,
}

impl ReadSource {
    /// The `SCCR-Read-From` header's value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadSource::Replica => "replica",
            _ => "primary",
        }
    }

    /// Why a read that could have gone to the replica went to the primary.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            ReadSource::PrimaryReplicaDown => Some("replica_down"),
            ReadSource::PrimaryReplicaLagging => Some("replica_lagging"),
            _ => None,
        }
    }
}

/// The store a read uses.
#[derive(Debug, Clone)]
pub struct ReadChoice {
    pub store: Store,
    pub source: ReadSource,
    /// The replica's lag at its last probe, when the read went there.
    pub lag: Option<Duration>,
    /// Whether a replica is configured (answers then say where they were read).
    pub replicated: bool,
}

/// The read replica's state and counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct ReplicaMetrics {
    /// Lag in milliseconds at the last probe; -1 when unknown (never probed, or down).
    lag_ms: AtomicI64,
    /// WAL received by the standby and not yet applied, in bytes.
    lag_bytes: AtomicI64,
    up: AtomicBool,
    probe_errors: AtomicU64,
    reads_replica: AtomicU64,
    reads_down: AtomicU64,
    reads_lagging: AtomicU64,
    /// Queries that failed on the replica and were answered by the primary.
    reads_retried: AtomicU64,
}

impl ReplicaMetrics {
    /// The lag at the last probe, if the replica is up.
    pub fn lag(&self) -> Option<Duration> {
        let ms = self.lag_ms.load(Ordering::Relaxed);
        (self.up.load(Ordering::Relaxed) && ms >= 0).then(|| Duration::from_millis(ms as u64))
    }
}

impl Collector for ReplicaMetrics {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let e = &mut e;
        let lag = self.lag_ms.load(Ordering::Relaxed);
        metrics::gauge_f64(
            e,
            "replica_lag",
            "How far the read replica is behind the primary at its last probe: 0 when it has applied all the WAL it received, else now() - pg_last_xact_replay_timestamp(); -1 when unknown (down or not probed yet).",
            Some(&Unit::Seconds),
            match lag {
                i64::MAX => f64::INFINITY,
                l if l < 0 => -1.0,
                l => l as f64 / 1000.0,
            },
        )?;
        metrics::gauge(
            e,
            "replica_lag_bytes",
            "WAL the read replica has received and not yet applied, in bytes.",
            self.lag_bytes.load(Ordering::Relaxed),
        )?;
        metrics::flag(
            e,
            "replica_up",
            "Whether the read replica answered its last probe.",
            self.up.load(Ordering::Relaxed),
        )?;
        metrics::counter(
            e,
            "replica_probe_errors",
            "Lag probes of the read replica that failed.",
            get(&self.probe_errors),
        )?;
        metrics::counter_by(
            e,
            "replica_reads",
            "History and export reads by where they went: replica, or primary because the replica was down, lagging beyond database.max_read_lag, or failed the query (retried).",
            "target",
            [
                ("replica", get(&self.reads_replica)),
                ("primary_replica_down", get(&self.reads_down)),
                ("primary_replica_lagging", get(&self.reads_lagging)),
                ("primary_replica_failed", get(&self.reads_retried)),
            ],
        )
    }
}

#[derive(Debug)]
struct Replica {
    store: Store,
    max_lag: Duration,
    metrics: Arc<ReplicaMetrics>,
}

impl Replica {
    /// One lag probe, recorded in the metrics: whether the replica is up.
    async fn probe(&self) -> bool {
        let Store::Postgres(pg) = &self.store else { return false };
        let probe = tokio::time::timeout(
            PROBE_TIMEOUT,
            sqlx::query_as::<_, (f64, i64)>(LAG_SQL).fetch_one(pg.pool()),
        )
        .await;
        let m = &self.metrics;
        let up = match probe {
            Ok(Ok((secs, bytes))) => {
                let ms = if secs.is_finite() { (secs.max(0.0) * 1000.0) as i64 } else { i64::MAX };
                m.lag_ms.store(ms, Ordering::Relaxed);
                m.lag_bytes.store(bytes, Ordering::Relaxed);
                true
            }
            Ok(Err(e)) => {
                m.probe_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "read replica probe failed");
                false
            }
            Err(_) => {
                m.probe_errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        if !up {
            m.lag_ms.store(-1, Ordering::Relaxed);
        }
        m.up.store(up, Ordering::Relaxed);
        up
    }
}

/// Where planners' reads go: the primary, or a read replica while it is up and close
/// enough behind.
#[derive(Debug, Clone)]
pub struct Reads {
    primary: Store,
    replica: Option<Arc<Replica>>,
}

/// The standby's lag: 0 when it has applied all it received and its WAL receiver runs
/// (a promoted standby, no longer in recovery, is not behind anything either), else the
/// age of the last transaction it applied; and the bytes received but not applied.
const LAG_SQL: &str = "SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0::float8
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
         AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 0::float8
    ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, 'Infinity')
  END,
  coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::int8";

impl Reads {
    /// Every read on `primary`.
    pub fn primary_only(primary: Store) -> Self {
        Self { primary, replica: None }
    }

    /// Reads from the hot standby at `url` while it is up and at most `max_lag` behind.
    /// Its pool connects lazily: the replica may be down at start.
    pub fn with_replica(
        primary: Store,
        url: &str,
        max_lag: Duration,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let store = match &primary {
            Store::Postgres(pg) => Store::Postgres(pg.read_replica(url, max_connections)?),
            Store::Sqlite(_) => {
                return Err(StoreError::UnsupportedUrl(url.chars().take(64).collect()))
            }
        };
        let metrics = Arc::new(ReplicaMetrics { lag_ms: AtomicI64::new(-1), ..Default::default() });
        Ok(Self { primary, replica: Some(Arc::new(Replica { store, max_lag, metrics })) })
    }

    pub fn primary(&self) -> &Store {
        &self.primary
    }

    /// The replica's figures, when one is configured.
    pub fn metrics(&self) -> Option<Arc<ReplicaMetrics>> {
        self.replica.as_ref().map(|r| r.metrics.clone())
    }

    /// The store for one read, counted.
    pub fn choose(&self) -> ReadChoice {
        let Some(r) = &self.replica else {
            return ReadChoice {
                store: self.primary.clone(),
                source: ReadSource::Primary,
                lag: None,
                replicated: false,
            };
        };
        let m = &r.metrics;
        let (source, lag) = if !m.up.load(Ordering::Relaxed) {
            m.reads_down.fetch_add(1, Ordering::Relaxed);
            (ReadSource::PrimaryReplicaDown, None)
        } else {
            match m.lag() {
                Some(lag) if lag <= r.max_lag => {
                    m.reads_replica.fetch_add(1, Ordering::Relaxed);
                    (ReadSource::Replica, Some(lag))
                }
                _ => {
                    m.reads_lagging.fetch_add(1, Ordering::Relaxed);
                    (ReadSource::PrimaryReplicaLagging, None)
                }
            }
        };
        let store =
            if source == ReadSource::Replica { r.store.clone() } else { self.primary.clone() };
        ReadChoice { store, source, lag, replicated: true }
    }

    /// A query on the replica failed with `error`: when it is transient, mark the replica
    /// down until its next good probe and return the choice to retry on (the primary).
    pub fn replica_failed(&self, error: &StoreError) -> Option<ReadChoice> {
        let r = self.replica.as_ref()?;
        if !error.is_transient() {
            return None;
        }
        r.metrics.up.store(false, Ordering::Relaxed);
        r.metrics.reads_retried.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%error, "read replica failed a query; answering from the primary");
        Some(ReadChoice {
            store: self.primary.clone(),
            source: ReadSource::PrimaryReplicaDown,
            lag: None,
            replicated: true,
        })
    }

    /// Measure the replica's lag once (within 2 s) and record it: whether
    /// it is up. `false` without a replica.
    pub async fn probe(&self) -> bool {
        match &self.replica {
            Some(r) => r.probe().await,
            None => false,
        }
    }

    /// Measure the replica's lag every [`PROBE_INTERVAL`] until `shutdown` turns true
    /// (nothing to do without a replica).
    pub fn spawn_probe(
        &self,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let r = self.replica.clone()?;
        Some(tokio::spawn(async move {
            let mut was_up = None;
            loop {
                let up = r.probe().await;
                if was_up != Some(up) {
                    if up {
                        tracing::info!("read replica up: history and exports may read from it");
                    } else {
                        tracing::warn!(
                            "read replica down: history and exports read from the primary"
                        );
                    }
                    was_up = Some(up);
                }
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        }))
    }
}
