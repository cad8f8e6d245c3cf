//! The naive baseline: `bench/baselines/python_bridge.py` fed the same way as SCCR.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use sccr_tests::{workspace_root, Broker, TestDb};
use serde_json::{json, Value};

use crate::load::{probe_until, start_load};
use crate::measure::{bridge_cpu_split, cpu_snapshot, round2};

pub(crate) fn python_with_deps() -> Option<PathBuf> {
    sccr_tests::python_venv(
        "bench-venv",
        &["paho-mqtt==2.2.0", "psycopg[binary]==3.3.9"],
        "paho.mqtt, psycopg",
    )
    .map(|venv| venv.join("bin/python"))
}

pub(crate) async fn baseline(offered_msgs: f64, secs: u64) -> Result<Value> {
    let Some(python) = python_with_deps() else {
        eprintln!("!!! naive baseline SKIPPED: could not install paho-mqtt and psycopg from PyPI");
        return Ok(json!({ "skipped": "paho-mqtt/psycopg unavailable" }));
    };
    let broker = Broker::start().await?;
    let db = TestDb::create().await?;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let mut bridge = tokio::process::Command::new(python)
        .arg(workspace_root().join("bench/baselines/python_bridge.py"))
        .args([
            "--port",
            &broker.port.to_string(),
            "--db",
            &db.url,
            "--seconds",
            &(secs + 30).to_string(),
        ])
        .kill_on_drop(true)
        .spawn()
        .context("start the python bridge")?;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM readings_baseline")
            .fetch_one(&pool)
            .await
            .unwrap_or(-1)
    };
    // Ready when its table exists and a probe message made it through.
    probe_until(broker.port, "bench-probe", "the python bridge", || async { count().await > 0 })
        .await?;
    let bridge_pid = bridge.id().unwrap_or(0);
    let (stop, _counters, task) = start_load(broker.port, 2_000, offered_msgs, "base")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c0, cpu0) = (count().await, cpu_snapshot(&[bridge_pid], broker.pid().unwrap_or(0)));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (c1, cpu1) = (count().await, cpu_snapshot(&[bridge_pid], broker.pid().unwrap_or(0)));
    let _ = stop.send(true);
    let _ = task.await;
    let _ = bridge.kill().await;
    let window = cpu1.at.duration_since(cpu0.at).as_secs_f64();
    let cpu = bridge_cpu_split(&cpu0, &cpu1);
    Ok(
        json!({ "readings_per_s": ((c1 - c0) as f64 / window).round(), "window_s": round2(window), "cpu": cpu }),
    )
}
