//! Ingest replicas (`sccr-bench --replicas`): SCCR end to end with 1, 2 and 3
//! `sccr serve --role ingest` replicas, each owning its share of `ingest.partitions` =
//! replicas (device affinity, docs/scale-out.md#device-affinity), against one Mosquitto
//! (MQTT 5) and against a 3-node NATS cluster (MQTT 3.1.1 over clustered JetStream,
//! docs/broker-cluster.md), on one machine. Per run: committed readings/s and the CPU of
//! each process group (the replicas, the broker or its nodes, PostgreSQL, the load
//! generator), so the per-reading costs in docs/sizing.md can be read off.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use mqtt_client::Protocol;
use sccr_tests::{http_get, Broker, NatsCluster, Sccr, TestDb};
use serde_json::{json, Value};

use crate::e2e::inserted;
use crate::load::start_load_on;
use crate::measure::{cpu_secs_of, cpu_snapshot, round2};

/// The brokers measured.
#[derive(Clone, Copy)]
enum Target {
    Mosquitto,
    NatsCluster,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Self::Mosquitto => "mosquitto",
            Self::NatsCluster => "nats_cluster_3",
        }
    }
}

/// Partitions a replica owns, from its `/readyz` (none while it is not ready; a ready
/// process without partitions, `partitions = 1`, runs the one pipeline).
async fn owned(port: u16) -> usize {
    let Ok((200, body)) = http_get(port, "/readyz").await else { return 0 };
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["partitions"].as_array().map(Vec::len))
        .unwrap_or(1)
}

async fn one(
    target: Target,
    replicas: usize,
    devices: usize,
    offered_msgs: f64,
    secs: u64,
    dir: &Path,
) -> Result<Value> {
    // The broker: one Mosquitto, or three NATS nodes (each replica on its own node).
    let (mosquitto, cluster) = match target {
        Target::Mosquitto => (Some(Broker::start().await?), None),
        Target::NatsCluster => {
            let cluster = NatsCluster::start(3, "max_ack_pending: 1000\nack_wait: \"10s\"").await?;
            for i in 0..3 {
                cluster.wait_healthy(i, Duration::from_secs(60)).await?;
            }
            (None, Some(cluster))
        }
    };
    let ports: Vec<u16> = match (&mosquitto, &cluster) {
        (Some(b), _) => vec![b.port],
        (_, Some(c)) => c.nodes.iter().map(|n| n.mqtt_port).collect(),
        _ => bail!("no broker"),
    };
    let db = TestDb::create().await?;
    let protocol = match target {
        Target::Mosquitto => "5",
        Target::NatsCluster => "3.1.1",
    };
    let mut procs = Vec::new();
    for i in 0..replicas {
        let port = ports[i % ports.len()];
        let failover: Vec<String> =
            ports.iter().filter(|p| **p != port).map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        let toml = format!(
            "[mqtt]\nprotocol = \"{protocol}\"\nfailover = [{}]\n[ingest]\npartitions = {replicas}\n\
             [alerts]\nair_quality_defaults = false\n",
            failover.join(", ")
        );
        let client_id = format!("bench-ingest-{i}");
        let s = Sccr::serve_role(
            "ingest",
            port,
            &db.url,
            dir,
            Some(&toml),
            &[("SCCR_MQTT__CLIENT_ID", &client_id)],
        )?;
        s.wait_healthy().await;
        procs.push(s);
    }
    // Every partition owned before the load starts.
    let api: Vec<u16> = procs.iter().map(|p| p.api_port).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut total = 0;
        for p in &api {
            total += owned(*p).await;
        }
        if total >= replicas {
            break;
        }
        if Instant::now() > deadline {
            bail!("{}: {total} of {replicas} partitions owned after 60 s", target.name());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v3 = match target {
        Target::Mosquitto => Protocol::V5,
        Target::NatsCluster => Protocol::V311,
    };
    let (stop, _counters, task) = start_load_on(&ports, v3, devices, offered_msgs, "replicas")?;
    // Warm up until readings are committed, then measure a steady window.
    let warm = Instant::now() + Duration::from_secs(60);
    while inserted(&api).await < 1.0 {
        if Instant::now() > warm {
            bail!("{}: nothing committed within 60 s", target.name());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pids: Vec<u32> = procs.iter().filter_map(Sccr::pid).collect();
    let broker_pid = mosquitto.as_ref().and_then(Broker::pid).unwrap_or(0);
    let (n0, cpu0, nats0) = (inserted(&api).await, cpu_snapshot(&pids, broker_pid), nats_cpu());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (n1, cpu1, nats1) = (inserted(&api).await, cpu_snapshot(&pids, broker_pid), nats_cpu());
    let _ = stop.send(true);
    let _ = task.await;
    let window = cpu1.at.duration_since(cpu0.at).as_secs_f64().max(1e-3);
    let cores = |a: f64, b: f64| round2((b - a) / window);
    let sccr: Vec<f64> =
        cpu1.sccr.iter().zip(&cpu0.sccr).map(|(b, a)| round2((b - a) / window)).collect();
    let broker_cores = match target {
        Target::Mosquitto => cores(cpu0.broker, cpu1.broker),
        Target::NatsCluster => cores(nats0, nats1),
    };
    let readings_per_s = ((n1 - n0) / window).round();
    let per_reading = |c: f64| round2(c * 1e6 / readings_per_s.max(1.0));
    let sccr_total: f64 = sccr.iter().sum();
    let postgres = cores(cpu0.postgres.total(), cpu1.postgres.total());
    Ok(json!({
        "broker": target.name(),
        "replicas": replicas,
        "partitions": replicas,
        "devices": devices,
        "readings_per_s": readings_per_s,
        "window_s": round2(window),
        "cpu": {
            "sccr_cores_each": sccr,
            "sccr_cores": round2(sccr_total),
            "broker_cores": broker_cores,
            "postgres_cores": postgres,
            "load_generator_cores": cores(cpu0.load, cpu1.load),
            "machine_busy_cores": cores(cpu0.machine, cpu1.machine),
        },
        "cpu_us_per_reading": {
            "sccr": per_reading(sccr_total),
            "broker": per_reading(broker_cores),
            "postgres": per_reading(postgres),
        },
    }))
}

/// CPU seconds of the NATS servers (the cluster's three nodes and any other on the machine,
/// which is idle during the run).
fn nats_cpu() -> f64 {
    cpu_secs_of("nats-server")
}

/// 1, 2 and 3 replicas against each broker, `secs` of measurement each.
pub(crate) async fn run(devices: usize, offered_msgs: f64, secs: u64, dir: &Path) -> Result<Value> {
    let mut runs = Vec::new();
    for target in [Target::Mosquitto, Target::NatsCluster] {
        for replicas in 1..=3 {
            eprintln!("== replicas: {} × ingest against {}", replicas, target.name());
            let r = one(target, replicas, devices, offered_msgs, secs, dir).await?;
            eprintln!("{r}");
            runs.push(r);
        }
    }
    Ok(json!({ "devices": devices, "offered_msgs_per_s": offered_msgs.round(), "runs": runs }))
}
