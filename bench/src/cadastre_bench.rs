//! The Road Cadastre at city scale: `sccr segments import` of a generated road graph of
//! 25,000 segments (`simulator::road_graph`, Monte Mario coordinates so that every point
//! is reprojected) into PostgreSQL, first and again unchanged, with 5,000 positioned
//! devices linked; then `GET /api/v1/segments` of a running `sccr serve` over those
//! segments: the whole city as today, the city at zoom 12, and a 1 km box at zoom 16.
//! Goal: the import under 30 s.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use sccr_tests::{child_command, http_get, workspace_bin, Broker, Sccr, TempDir, TestDb};
use serde_json::{json, Value};
use store::{Store, StoreOptions, TimescaleMode};
use telemetry::cadastre::Crs;

fn import(config: &std::path::Path, file: &std::path::Path, db: &TestDb) -> Result<(f64, String)> {
    let started = Instant::now();
    // A clean environment, as the other stages start sccr: it refuses SCCR_ variables
    // that are not settings (the benchmark's own, such as SCCR_PG_KEEP_DIR).
    let out = child_command(&workspace_bin("sccr")?)
        .args(["segments", "import", "--config"])
        .arg(config)
        .arg(file)
        .env("SCCR_DATABASE__URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("sccr segments import: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(((secs * 100.0).round() / 100.0, String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// p50 and p95 of `n` requests of `path`, milliseconds, and the answer's feature count and size.
async fn latency(port: u16, path: &str, n: usize) -> Result<Value> {
    let mut ms = Vec::with_capacity(n);
    let (mut features, mut bytes) = (0, 0);
    for _ in 0..n {
        let started = Instant::now();
        let (status, body) = http_get(port, path).await?;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        if status != 200 {
            bail!("{path} answered {status}: {body}");
        }
        bytes = body.len();
        features = serde_json::from_str::<Value>(&body)?["features"].as_array().map_or(0, Vec::len);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| (ms[((ms.len() - 1) as f64 * q).round() as usize] * 10.0).round() / 10.0;
    Ok(
        json!({"path": path, "requests": n, "p50_ms": at(0.5), "p95_ms": at(0.95), "features": features, "kb": bytes / 1024}),
    )
}

pub async fn run(quick: bool) -> Result<Value> {
    let segments = if quick { 2_000 } else { 25_000 };
    let devices = if quick { 500 } else { 5_000 };
    let work = TempDir::new("cadastre-bench")?;
    let file = work.path.join("city.geojson");
    let started = Instant::now();
    let doc = simulator::road_graph::city(segments, Crs::MonteMarioItaly1);
    std::fs::write(&file, doc.to_string())?;
    let mib = std::fs::metadata(&file)?.len() as f64 / 1_048_576.0;
    eprintln!(
        "  {segments} segments generated ({mib:.1} MiB, EPSG:3003) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let db = TestDb::create().await?;
    let options = StoreOptions { timescaledb: TimescaleMode::Off, ..StoreOptions::default() };
    let store = Store::connect(&db.url, &options).await?;
    store.migrate().await?;
    let Store::Postgres(pg) = &store else { bail!("postgres store expected") };
    let pool = pg.pool().clone();
    let config = work.path.join("sccr.toml");
    std::fs::write(&config, "")?;
    let (first_s, first) = import(&config, &file, &db)?;
    eprintln!("  first import: {first_s} s ({first})");
    // Devices 3 m off the middle of every (segments / devices)-th segment.
    let every = (segments / devices).max(1);
    sqlx::query(
        "INSERT INTO devices (id, kind, lon, lat)
         SELECT 'cad-' || n, 'traffic_loop', (c -> 1 ->> 0)::float8, (c -> 1 ->> 1)::float8 + 0.000027
         FROM (SELECT row_number() OVER (ORDER BY id) AS n, coordinates AS c FROM road_segments) s
         WHERE n % $1 = 0",
    )
    .bind(every as i64)
    .execute(&pool)
    .await
    .context("devices")?;
    let (again_s, again) = import(&config, &file, &db)?;
    eprintln!("  unchanged re-import with {devices} devices to link: {again_s} s ({again})");
    store.close().await;

    let broker = Broker::start().await?;
    let sccr = Sccr::serve(broker.port, &db.url, &work.path, &[])?;
    sccr.wait_healthy().await;
    let n = if quick { 5 } else { 20 };
    // A 1 km box around the Duomo.
    let (dlon, dlat) = (0.5 / 80.4, 0.5 / 111.2);
    let box_1km =
        format!("{},{},{},{}", 11.2560 - dlon, 43.7731 - dlat, 11.2560 + dlon, 43.7731 + dlat);
    let mut answers = Vec::new();
    for path in [
        "/api/v1/segments".to_owned(),
        "/api/v1/segments?zoom=12".to_owned(),
        format!("/api/v1/segments?bbox={box_1km}&zoom=16"),
    ] {
        let r = latency(sccr.api_port, &path, n).await?;
        eprintln!("  {r}");
        answers.push(r);
    }
    Ok(json!({
        "segments": segments,
        "file_mib": (mib * 10.0).round() / 10.0,
        "crs": "EPSG:3003",
        "import_s": first_s,
        "import_summary": first,
        "reimport_unchanged_s": again_s,
        "reimport_summary": again,
        "devices": devices,
        "goal_import_s": 30,
        "segments_api": answers,
    }))
}
