//! The pipeline on a clustered broker: three NATS servers (MQTT 3.1.1 over clustered
//! JetStream) on loopback, `sccr serve` ingesting over MQTT 3.1.1 from the first node (the
//! others as `mqtt.failover`), and a simulated fleet publishing QoS 1 through all three
//! nodes. Mid-flood the node ingest is connected to is SIGKILLed: ingest, and the devices
//! that were on it, must carry on through the other nodes (their sessions are the
//! cluster's) before the node is restarted. Everything the broker acknowledged must then be stored exactly once (the
//! simulator's ledger equals the stored keys), and every rollup must equal a recount.
//!
//! An `edge-agent run` over MQTT 3.1.1 on the killed node replays its readings through the
//! outage from its disk buffer; they too must all be stored, once.
//!
//! Skips, saying so, only where `nats-server` is not installed (`.ci/run` installs it).

use std::collections::BTreeSet;
use std::time::Duration;

use sccr_tests::{
    assert_rollups_match_raw, recent_base_ms, stored_keys, wait_for, wait_pipeline_ready_with,
    EdgeAgent, NatsCluster, Sccr, Simulator, TempDir, TestDb,
};
use sqlx::PgPool;

/// 60 devices every 500 ms (120 messages/s, several readings each) for 25 s, over six
/// connections, two per node.
const DEVICES: usize = 60;
const INTERVAL: &str = "500ms";
const DURATION: &str = "25s";
/// The edge agent's replayed device: 200 readings, one every 100 ms.
const AGENT_DEVICE: &str = "replay-cluster";
const AGENT_READINGS: usize = 200;

/// Readings of the simulated fleet stored so far.
async fn stored_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM readings WHERE device NOT IN ('probe', $1)")
        .bind(AGENT_DEVICE)
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

async fn agent_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM readings WHERE device = $1")
        .bind(AGENT_DEVICE)
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

/// An edge agent over MQTT 3.1.1 on the first of `ports` (the others as failover) replaying [`AGENT_READINGS`] speed readings.
fn start_agent(dir: &std::path::Path, ports: &[u16]) -> EdgeAgent {
    let base = recent_base_ms();
    let mut csv = String::from("time,metric,value\n");
    for i in 0..AGENT_READINGS {
        csv.push_str(&format!("{},speed_kmh,{}\n", base + i as i64 * 100, 20 + i % 40));
    }
    let replay = dir.join("replay.csv");
    std::fs::write(&replay, csv).expect("write replay");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nid = \"cabinet-cluster\"\n[mqtt]\nprotocol = \"3.1.1\"\nport = {}\n\
             failover = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n\
             max_backoff = \"500ms\"\n[buffer]\ndir = \"{}\"\nsegment_bytes = 4096\n\
             [[devices]]\nid = \"{AGENT_DEVICE}\"\ndriver = \"replay\"\nfile = \"{}\"\n\
             timestamps = \"original\"\ninterval = \"100ms\"\n",
            ports[0],
            ports[1],
            ports[2],
            dir.join("agent-buffer").display(),
            replay.display()
        ),
    )
    .expect("write agent config");
    EdgeAgent::run(&config, dir, "cluster").expect("edge agent")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cluster_node_killed_mid_flood_loses_and_duplicates_nothing() {
    if let Err(e) = NatsCluster::binary() {
        eprintln!("SKIP nats_cluster_node_killed_mid_flood: {e}");
        return;
    }
    let db = TestDb::create().await.expect("database");
    let pool = PgPool::connect(&db.url).await.expect("pool");
    // The broker's in-flight window to each subscriber (MQTT 3.1.1 has no receive maximum)
    // is kept at ingest's (mqtt.receive_maximum, 1000); unacknowledged deliveries are sent
    // again after ack_wait, which must exceed ingest's longest commit.
    let mut cluster =
        NatsCluster::start(3, "max_ack_pending: 1000\nack_wait: \"10s\"").await.expect("cluster");
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.mqtt_port).collect();
    let dir = TempDir::new("broker-cluster").unwrap();
    let failover = format!("[\"127.0.0.1:{}\", \"127.0.0.1:{}\"]", ports[1], ports[2]);
    let sccr = Sccr::serve(
        ports[0],
        &db.url,
        &dir.path,
        &[
            ("SCCR_MQTT__PROTOCOL", "3.1.1"),
            ("SCCR_MQTT__CLIENT_ID", "sccr-ingest-cluster"),
            ("SCCR_MQTT__FAILOVER", &failover),
        ],
    )
    .expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready_with(mqtt_client::Protocol::V311, ports[1], &pool).await;

    let mut sim = Simulator::start_with(
        &ports,
        &dir.path,
        "cluster",
        DEVICES,
        INTERVAL,
        DURATION,
        &["--protocol", "3.1.1"],
    )
    .expect("simulator");
    let agent = start_agent(&dir.path, &ports);
    wait_for("the flood to be stored", Duration::from_secs(30), || async {
        (stored_count(&pool).await >= 600).then_some(())
    })
    .await;

    // Node 1 carries ingest's connection and a third of the devices'.
    cluster.kill(0);
    wait_for("ingest to notice its broker node is gone", Duration::from_secs(30), || async {
        sccr.log_text().contains(": broker connection failed").then_some(())
    })
    .await;
    let during = stored_count(&pool).await;
    // Ingest resumes its session on another node and the flood goes on being stored while
    // the node is down.
    wait_for("ingest to reconnect through another node", Duration::from_secs(30), || async {
        (sccr.log_text().matches("connected to broker").count() >= 2).then_some(())
    })
    .await;
    wait_for("readings stored while the node is down", Duration::from_secs(30), || async {
        (stored_count(&pool).await >= during + 300).then_some(())
    })
    .await;
    let while_down = stored_count(&pool).await - during;
    cluster.start_again(0).await.expect("restart the killed node");

    // The simulator exits with success only when every message it published was
    // acknowledged by the cluster: its ledger is then "published" and "acknowledged".
    let all_acked = sim.finish(Duration::from_secs(120)).await.expect("simulation ends");
    assert!(all_acked, "the cluster did not acknowledge every message:\n{}", sim.log_text());
    let published: BTreeSet<_> = sim.published_keys().expect("ledger");
    assert!(published.len() > 5_000, "too little load to prove anything: {}", published.len());

    // Deliveries in flight to ingest when its node died come again after ack_wait.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while stored_count(&pool).await < published.len() as i64
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for("the agent's replay to be stored", Duration::from_secs(90), || async {
        let s = agent.read_stats()?;
        (s["replays_finished"] == 1
            && s["buffer_records"] == 0
            && agent_count(&pool).await >= AGENT_READINGS as i64)
            .then_some(())
    })
    .await;
    assert_eq!(agent_count(&pool).await, AGENT_READINGS as i64, "agent log:\n{}", agent.log_text());
    assert!(
        agent.stat("connections").unwrap_or(0) >= 2,
        "the agent did not reconnect after the kill:\n{}",
        agent.log_text()
    );
    let stored = stored_keys(&pool, "probe").await.expect("stored keys");
    let duplicated: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).take(10).collect();
    let lost: Vec<_> = published.iter().filter(|k| !stored.contains_key(*k)).collect();
    let extra: Vec<_> =
        stored.keys().filter(|k| k.0 != AGENT_DEVICE && !published.contains(*k)).take(10).collect();
    assert!(duplicated.is_empty(), "readings stored twice: {duplicated:?}");
    assert!(
        lost.is_empty() && extra.is_empty(),
        "{} of {} acknowledged readings lost (first: {:?}); stored but never published: \
         {extra:?}\nsccr log:\n{}\nkilled node's log:\n{}",
        lost.len(),
        published.len(),
        lost.iter().take(10).collect::<Vec<_>>(),
        tail(&sccr.log_text(), 40),
        tail(&cluster.log(0), 40),
    );
    assert!(
        (during as usize) < published.len(),
        "the kill came after the flood: nothing was in flight ({during} stored of {})",
        published.len()
    );
    assert_rollups_match_raw(&pool).await;
    eprintln!(
        "{} acknowledged readings stored once each; {during} were stored when the node died, \
         {while_down} more before it was back",
        published.len()
    );
}
