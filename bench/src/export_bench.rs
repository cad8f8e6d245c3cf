//! Export over HTTP: raw readings from PostgreSQL through `GET /api/v1/export/readings` of
//! a running `sccr serve`, as CSV and Parquet; rows/s and the server's peak RSS. The server
//! is restarted before each export so its peak (VmHWM) belongs to that export alone; a
//! bounded export has about the same peak for 1M and 10M rows.
//!
//! Rows are made by `INSERT … SELECT generate_series` straight into `readings` of a
//! throwaway database: 1,000 devices, two metrics, one reading per second per series.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sccr_tests::{Broker, Sccr, TempDir, TestDb, TEST_ADMIN_TOKEN};
use serde_json::{json, Value};
use store::{Store, StoreOptions, TimescaleMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Midnight UTC yesterday: inside the raw retention `sccr serve` enforces at start.
fn base_ms() -> i64 {
    telemetry::EventTime::now().floor(86_400_000).millis() - 86_400_000
}
const DEVICES: i64 = 1_000;

/// Insert rows `from..to` of the synthetic series.
async fn insert(pool: &sqlx::PgPool, base: i64, from: i64, to: i64) -> Result<()> {
    // Series i: device i % 1000, metric (i / 1000) % 2, second i / 2000.
    let last_day = (base + (to / (2 * DEVICES)) * 1_000) / 86_400_000;
    for day in base / 86_400_000..=last_day {
        sqlx::query("SELECT sccr_ensure_readings_partition(date '1970-01-01' + $1::int)")
            .bind(day as i32)
            .execute(pool)
            .await?;
    }
    let step = 1_000_000;
    let mut lo = from;
    while lo < to {
        let hi = (lo + step).min(to);
        sqlx::query(
            "INSERT INTO readings (time, device, metric, value, seq)
             SELECT to_timestamp(($3::int8 + (i / 2000) * 1000) / 1000.0), 'loop-' || (i % 1000),
                    CASE WHEN (i / 1000) % 2 = 0 THEN 'speed_kmh' ELSE 'vehicle_count' END,
                    (i % 977) * 0.125, i / 2000
             FROM generate_series($1::int8, $2::int8 - 1) AS i",
        )
        .bind(lo)
        .bind(hi)
        .bind(base)
        .execute(pool)
        .await?;
        lo = hi;
    }
    sqlx::query("ANALYZE readings").execute(pool).await?;
    Ok(())
}

/// Peak and current resident set of a process, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// GET over HTTP/1.0 (the body is the rest of the connection): (status, body bytes,
/// newlines in the body, the body when `keep`).
async fn download(port: u16, path: &str, keep: bool) -> Result<(u16, u64, u64, Vec<u8>)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TEST_ADMIN_TOKEN}\r\n\r\n").as_bytes()).await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let (mut bytes, mut lines, mut kept) = (0u64, 0u64, Vec::new());
    let mut in_body = false;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        if !in_body {
            head.extend_from_slice(chunk);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let body_start = end + 4;
            let rest = head.split_off(body_start);
            in_body = true;
            bytes += rest.len() as u64;
            lines += rest.iter().filter(|&&b| b == b'\n').count() as u64;
            if keep {
                kept.extend_from_slice(&rest);
            }
            chunk = &[];
        }
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        if keep {
            kept.extend_from_slice(chunk);
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1).context("no HTTP status")?.parse()?;
    Ok((status, bytes, lines, kept))
}

async fn export_once(sccr: &mut Sccr, base: i64, rows: i64, format: &str) -> Result<Value> {
    sccr.restart()?;
    sccr.wait_healthy().await;
    let pid = sccr.pid().context("sccr pid")?;
    let (_, rss_before) = rss_mib(pid);
    let to = base + (rows / (2 * DEVICES) + 1) * 1_000;
    let path = format!("/api/v1/export/readings?from={base}&to={to}&format={format}");
    let started = Instant::now();
    let (status, bytes, lines, body) = download(sccr.api_port, &path, format == "parquet").await?;
    let secs = started.elapsed().as_secs_f64();
    if status != 200 {
        bail!(
            "export {format} answered {status}: {}",
            sccr.log_text().lines().last().unwrap_or("")
        );
    }
    let got = if format == "csv" {
        lines as i64 - 1
    } else {
        use parquet::file::reader::FileReader;
        let reader = parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(body))?;
        reader.metadata().file_metadata().num_rows()
    };
    if got != rows {
        bail!("export {format} returned {got} rows of {rows}");
    }
    let (peak, _) = rss_mib(pid);
    Ok(json!({
        "rows": rows,
        "format": format,
        "seconds": (secs * 100.0).round() / 100.0,
        "rows_per_s": (rows as f64 / secs).round(),
        "mb": (bytes as f64 / 1e6 * 10.0).round() / 10.0,
        "server_rss_before_mib": rss_before,
        "server_peak_rss_mib": peak,
    }))
}

/// Quick: 20k and 100k rows (seconds); full: 1M and 10M rows.
pub async fn run(quick: bool) -> Result<Value> {
    let sizes: [i64; 2] = if quick { [20_000, 100_000] } else { [1_000_000, 10_000_000] };
    let db = TestDb::create().await?;
    let options = StoreOptions { timescaledb: TimescaleMode::Off, ..StoreOptions::default() };
    let store = Store::connect(&db.url, &options).await?;
    store.migrate().await?;
    let Store::Postgres(pg) = &store else { bail!("postgres store expected") };
    let pool = pg.pool().clone();
    let broker = Broker::start().await?;
    let work = TempDir::new("export-bench")?;
    let mut sccr = Sccr::serve(broker.port, &db.url, &work.path, &[])?;
    let mut results = Vec::new();
    let mut have = 0;
    let base = base_ms();
    for rows in sizes {
        let started = Instant::now();
        insert(&pool, base, have, rows).await?;
        have = rows;
        eprintln!("  {rows} readings inserted in {:.1} s", started.elapsed().as_secs_f64());
        for format in ["csv", "parquet"] {
            let r = export_once(&mut sccr, base, rows, format).await?;
            eprintln!("  {r}");
            results.push(r);
        }
    }
    sccr.terminate(Duration::from_secs(10))?;
    store.close().await;
    let peak = |rows: i64, format: &str| {
        results
            .iter()
            .find(|r| r["rows"] == rows && r["format"] == format)
            .and_then(|r| r["server_peak_rss_mib"].as_f64())
            .unwrap_or(0.0)
    };
    let growth: Vec<Value> = ["csv", "parquet"]
        .iter()
        .map(|f| json!({"format": f, "peak_rss_ratio_large_to_small": ((peak(sizes[1], f) / peak(sizes[0], f).max(1.0)) * 100.0).round() / 100.0}))
        .collect();
    Ok(json!({ "exports": results, "rss_growth": growth }))
}
