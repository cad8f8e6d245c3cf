//! The cost of synchronous replication (docs/replication.md): the store's writes against
//! a primary with a hot standby on this machine (the testkit's `ReplicatedPg`, fsync on),
//! with `synchronous_commit` as the failover needs it (`on`: the standby has flushed the
//! WAL; `remote_apply`: it has also applied it) and without a synchronous standby (`async`).
//!
//! - Commit latency: one-reading batches written one after the other (`Store::write_batch`,
//!   its transaction and commit), the latency of each;
//! - Throughput: 5,000-reading batches (`writer.max_batch_readings`), two in flight as the
//!   batch writer keeps them, readings/s from the first write to the last commit.

use std::time::Instant;

use anyhow::Result;
use sccr_tests::{ReplicatedPg, SyncMode};
use serde_json::{json, Value};
use store::{Batch, Store, StoreOptions, TimescaleMode};
use telemetry::{DeviceId, EventTime, MetricId, Reading};

use crate::measure::round2;

const METRICS: [MetricId; 4] =
    [MetricId::VehicleCount, MetricId::SpeedKmh, MetricId::OccupancyPct, MetricId::HeadwayS];

/// `rows` live readings (from now on) of 1,000 devices × 4 metrics, in `size`-row batches.
fn workload(rows: usize, size: usize, offset_ms: i64) -> Vec<Vec<Reading>> {
    let devices: Vec<DeviceId> = (0..1_000)
        .map(|d| DeviceId::parse(&format!("rb-{d}")).unwrap_or_else(|_| unreachable!()))
        .collect();
    let base = EventTime::now().millis() + offset_ms;
    let all: Vec<Reading> = (0..rows)
        .map(|i| {
            let (step, rest) = (i / 4_000, i % 4_000);
            Reading {
                device: devices[rest / 4].clone(),
                metric: METRICS[rest % 4],
                time: EventTime(base + step as i64 * 1_000),
                value: ((i * 7) % 113) as f64,
                seq: Some(telemetry::Seq(step as u64)),
            }
        })
        .collect();
    all.chunks(size).map(<[Reading]>::to_vec).collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn one_mode(mode: SyncMode, commits: usize, rows: usize) -> Result<Value> {
    let pair = ReplicatedPg::start(mode).await?;
    let (url, _) = pair.create_db("sccr_bench_replication").await?;
    let store = Store::connect(
        &url,
        &StoreOptions { timescaledb: TimescaleMode::Off, ..StoreOptions::default() },
    )
    .await?;
    store.migrate().await?;
    // Commit latency: one reading per transaction.
    let singles = workload(commits, 1, 0);
    store.write_batch(&Batch { readings: singles[0].clone(), ..Batch::default() }).await?;
    let mut ms = Vec::with_capacity(commits);
    for b in &singles[1..] {
        let t = Instant::now();
        store.write_batch(&Batch { readings: b.clone(), ..Batch::default() }).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
    // Throughput: two batches in flight.
    let batches = workload(rows, 5_000, 3_600_000);
    let started = Instant::now();
    let mut halves: [Vec<Vec<Reading>>; 2] = [Vec::new(), Vec::new()];
    for (i, b) in batches.into_iter().enumerate() {
        halves[i % 2].push(b);
    }
    let mut tasks = Vec::new();
    for half in halves {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            for b in half {
                n += store.write_batch(&Batch { readings: b, ..Batch::default() }).await?.inserted;
            }
            Ok::<u64, store::StoreError>(n)
        }));
    }
    let mut inserted = 0;
    for t in tasks {
        inserted += t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    store.close().await;
    let name = match mode {
        SyncMode::Async => "async (no synchronous standby)",
        SyncMode::On => "on (standby flushed)",
        SyncMode::RemoteApply => "remote_apply (standby applied)",
    };
    eprintln!(
        "   synchronous_commit {name}: commit p50 {:.2} ms, p99 {:.2} ms; {:.0} readings/s",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        inserted as f64 / secs
    );
    Ok(json!({
        "synchronous_commit": name,
        "commits": ms.len(),
        "commit_ms": {
            "p50": round2(percentile(&ms, 0.5)),
            "p99": round2(percentile(&ms, 0.99)),
            "mean": round2(mean),
        },
        "readings": inserted,
        "readings_per_s": (inserted as f64 / secs).round(),
    }))
}

/// Every mode, `rounds` times, in turn (async, on, remote_apply, then again), so a
/// neighbour's load on the machine falls on all of them alike.
pub async fn run(quick: bool, rounds: usize) -> Result<Value> {
    let (commits, rows) = if quick { (200, 50_000) } else { (2_000, 1_000_000) };
    let mut runs = Vec::new();
    for round in 1..=rounds {
        eprintln!("== replication round {round}");
        for mode in [SyncMode::Async, SyncMode::On, SyncMode::RemoteApply] {
            runs.push(one_mode(mode, commits, rows).await?);
        }
    }
    Ok(json!({
        "what": "store writes against a primary with one hot standby on this machine, fsync on",
        "runs": runs,
    }))
}
