//! The database's work per stored reading, by statement: `pg_stat_statements` (execution
//! time, WAL bytes, buffers) and `pg_stat_wal` over a measured window, against the
//! readings stored in it, beside the PostgreSQL CPU read from /proc.
//!
//! Needs `pg_stat_statements` in `shared_preload_libraries` (`scripts/bench.sh` starts its
//! own PostgreSQL with it); without it the breakdown says why it is missing.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sqlx::{PgPool, Row};

use crate::measure::round2;

/// Statements listed one by one; the rest are summed.
const TOP: usize = 8;

/// A window being measured on one database.
pub(crate) struct Window {
    pool: PgPool,
    wal_bytes: f64,
    wal_records: f64,
    wal_fpi: f64,
}

/// Start a window: reset this database's statement statistics and note the WAL so far.
/// `Err` says why no breakdown can be made.
pub(crate) async fn start(db_url: &str) -> Result<Window, String> {
    let pool = PgPool::connect(db_url).await.map_err(|e| e.to_string())?;
    let setup = async {
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&pool).await?;
        sqlx::query(
            "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)",
        )
        .execute(&pool)
        .await?;
        wal(&pool).await
    };
    match setup.await {
        Ok((wal_bytes, wal_records, wal_fpi)) => {
            Ok(Window { pool, wal_bytes, wal_records, wal_fpi })
        }
        Err(e) => {
            pool.close().await;
            Err(e.to_string())
        }
    }
}

async fn wal(pool: &PgPool) -> Result<(f64, f64, f64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT wal_bytes::float8 AS b, wal_records::float8 AS r, wal_fpi::float8 AS f FROM pg_stat_wal",
    )
    .fetch_one(pool)
    .await?;
    Ok((row.try_get("b")?, row.try_get("r")?, row.try_get("f")?))
}

/// A statement's text on one line, shortened.
fn short(query: &str) -> String {
    let one: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 90 {
        format!("{}…", one.chars().take(89).collect::<String>())
    } else {
        one
    }
}

impl Window {
    /// Close the window: `readings` stored in it, `postgres_cpu` the CPU seconds of the
    /// PostgreSQL processes over it by kind ([`crate::measure::pg_cpu`]).
    pub(crate) async fn finish(
        self,
        readings: f64,
        postgres_cpu: &BTreeMap<&'static str, f64>,
    ) -> Value {
        let postgres_cpu_s: f64 = postgres_cpu.values().sum();
        let per = |v: f64| round2(v / readings.max(1.0));
        let result = async {
            let (b, r, f) = wal(&self.pool).await?;
            let rows = sqlx::query(
                "SELECT query, calls::float8 AS calls, total_exec_time AS ms, rows::float8 AS rows,
                        wal_bytes::float8 AS wal, (shared_blks_hit + shared_blks_read)::float8 AS blocks,
                        shared_blks_read::float8 AS read, temp_blks_written::float8 AS temp
                 FROM pg_stat_statements
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%pg_stat_wal%'
                 ORDER BY total_exec_time DESC",
            )
            .fetch_all(&self.pool)
            .await?;
            Ok::<_, sqlx::Error>((
                (b - self.wal_bytes, r - self.wal_records, f - self.wal_fpi),
                rows,
            ))
        };
        let out = match result.await {
            Ok(((wal_bytes, wal_records, wal_fpi), rows)) => {
                let mut statements = Vec::new();
                let (mut exec_ms, mut other_ms, mut other_wal, mut other_calls) =
                    (0.0, 0.0, 0.0, 0.0);
                for (i, row) in rows.iter().enumerate() {
                    let get = |c: &str| row.try_get::<f64, _>(c).unwrap_or(0.0);
                    let (ms, wal, calls) = (get("ms"), get("wal"), get("calls"));
                    exec_ms += ms;
                    if i < TOP {
                        statements.push(json!({
                            "statement": short(row.try_get::<String, _>("query").as_deref().unwrap_or("?")),
                            "calls": calls,
                            "exec_us_per_reading": round2(ms * 1000.0 / readings.max(1.0)),
                            "wal_bytes_per_reading": per(wal),
                            "rows_per_call": round2(get("rows") / calls.max(1.0)),
                            "blocks_per_reading": per(get("blocks")),
                            "blocks_read_per_reading": per(get("read")),
                            "temp_blocks_written": get("temp"),
                        }));
                    } else {
                        other_ms += ms;
                        other_wal += wal;
                        other_calls += calls;
                    }
                }
                if other_calls > 0.0 {
                    statements.push(json!({
                        "statement": format!("{} other statements", rows.len() - TOP),
                        "calls": other_calls,
                        "exec_us_per_reading": round2(other_ms * 1000.0 / readings.max(1.0)),
                        "wal_bytes_per_reading": per(other_wal),
                    }));
                }
                let cpu_us = postgres_cpu_s * 1e6 / readings.max(1.0);
                let exec_us = exec_ms * 1000.0 / readings.max(1.0);
                json!({
                    "readings": readings,
                    "postgres_cpu_us_per_reading": round2(cpu_us),
                    "postgres_cpu_us_per_reading_by_kind": us_per_row_by_kind(postgres_cpu, readings),
                    // Time in the server, waits for locks and I/O included: with statements
                    // running on several connections at once it can exceed the CPU.
                    "statement_exec_us_per_reading": round2(exec_us),
                    "wal_bytes_per_reading": per(wal_bytes),
                    "wal_records_per_reading": per(wal_records),
                    "wal_full_page_images_per_reading": per(wal_fpi),
                    "statements": statements,
                })
            }
            Err(e) => json!({ "unavailable": e.to_string() }),
        };
        self.pool.close().await;
        out
    }
}

/// CPU seconds by kind of server process as microseconds per row.
pub(crate) fn us_per_row_by_kind(cpu: &BTreeMap<&'static str, f64>, rows: f64) -> Value {
    Value::Object(
        cpu.iter().map(|(k, s)| (k.to_string(), json!(round2(s * 1e6 / rows.max(1.0))))).collect(),
    )
}

/// Let the server settle before a stage whose database work is measured: a checkpoint
/// writes out what earlier stages left dirty, and the autovacuum workers busy with
/// earlier stages' tables finish (a minute at most), so that neither is counted as this
/// stage's work. The benchmark's log shows how long it took.
pub(crate) async fn settle(db_url: &str, stage: &str) -> Result<(), sqlx::Error> {
    let started = std::time::Instant::now();
    let pool = PgPool::connect(db_url).await?;
    sqlx::query("CHECKPOINT").execute(&pool).await?;
    while started.elapsed() < std::time::Duration::from_secs(60) {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
        )
        .fetch_one(&pool)
        .await?;
        if busy == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    pool.close().await;
    eprintln!("database settled in {:.1} s before {stage}", started.elapsed().as_secs_f64());
    Ok(())
}
