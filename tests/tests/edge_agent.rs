//! The field agent against the real core: a real Mosquitto, PostgreSQL and `sccr serve`.
//! A broker outage and a SIGKILL of the agent while it buffers lose nothing and store
//! nothing twice.

use std::path::Path;
use std::time::Duration;

use sccr_tests::{
    recent_base_ms, wait_for, wait_pipeline_ready, Broker, EdgeAgent, Sccr, TempDir, TestDb,
};
use sqlx::PgPool;

async fn count(pool: &PgPool, device: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM readings WHERE device = $1")
        .bind(device)
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

async fn rollup_count(pool: &PgPool, device: &str) -> i64 {
    sccr_tests::wait_rollups_merged(pool).await;
    sqlx::query_scalar("SELECT coalesce(sum(count), 0)::int8 FROM rollup_1m WHERE device = $1")
        .bind(device)
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

/// A broker, a database and `sccr serve`, ready to store telemetry.
async fn core(tag: &str) -> (TempDir, Broker, TestDb, PgPool, Sccr) {
    let dir = TempDir::new(tag).unwrap();
    let broker = Broker::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let pool = PgPool::connect(&db.url).await.unwrap();
    let sccr = Sccr::serve(broker.port, &db.url, &dir.path, &[]).unwrap();
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &pool).await;
    (dir, broker, db, pool, sccr)
}

/// A CSV of `n` speed readings `spacing_ms` apart, an hour ago (original timestamps).
fn replay_file(dir: &Path, n: usize, spacing_ms: i64) -> std::path::PathBuf {
    let base = recent_base_ms();
    let mut csv = String::from("time,metric,value\n");
    for i in 0..n {
        csv.push_str(&format!("{},speed_kmh,{}\n", base + i as i64 * spacing_ms, 20 + i % 40));
    }
    let path = dir.join(format!("replay-{n}.csv"));
    std::fs::write(&path, csv).expect("write replay");
    path
}

fn agent_config(dir: &Path, port: u16, device: Option<(&str, &Path)>) -> std::path::PathBuf {
    let mut text = format!(
        "[agent]\nid = \"cabinet-test\"\n[mqtt]\nport = {port}\nmax_backoff = \"500ms\"\n[buffer]\ndir = \"{}\"\nsegment_bytes = 4096\n",
        dir.join("buffer").display()
    );
    if let Some((id, file)) = device {
        text.push_str(&format!(
            "[[devices]]\nid = \"{id}\"\ndriver = \"replay\"\nfile = \"{}\"\ntimestamps = \"original\"\ninterval = \"100ms\"\n",
            file.display()
        ));
    }
    let path = dir.join(format!(
        "agent-{}.toml",
        if device.is_some() { "with-devices" } else { "no-devices" }
    ));
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_while_measuring_loses_and_duplicates_nothing() {
    let (dir, mut broker, _db, pool, _sccr) = core("edge-outage").await;

    // 120 readings over 6 s of replay.
    let file = replay_file(&dir.path, 120, 50);
    let agent = EdgeAgent::run(
        &agent_config(&dir.path, broker.port, Some(("replay-a", &file))),
        &dir.path,
        "a",
    )
    .unwrap();
    wait_for("the agent's first readings to be stored", Duration::from_secs(30), || async {
        (count(&pool, "replay-a").await >= 5).then_some(())
    })
    .await;
    broker.stop().unwrap();
    let acked_at_stop = agent.stat("acked").unwrap_or(0);
    // The agent keeps measuring into its buffer while the broker is away.
    wait_for("the agent to buffer while disconnected", Duration::from_secs(30), || async {
        let s = agent.read_stats()?;
        let buffered = s["messages_buffered"].as_i64()?;
        (s["connected"] == false && buffered >= acked_at_stop + 10).then_some(())
    })
    .await;
    broker.restart().await.unwrap();
    wait_for("every replayed reading stored", Duration::from_secs(60), || async {
        let s = agent.read_stats()?;
        (s["replays_finished"] == 1
            && s["buffer_records"] == 0
            && count(&pool, "replay-a").await >= 120)
            .then_some(())
    })
    .await;
    assert_eq!(count(&pool, "replay-a").await, 120, "agent log:\n{}", agent.log_text());
    assert_eq!(rollup_count(&pool, "replay-a").await, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_while_buffering_loses_nothing_after_restart() {
    let (dir, mut broker, _db, pool, _sccr) = core("edge-kill").await;
    broker.stop().unwrap();

    // With the broker down, the agent can only buffer. 80 readings over 0.8 s.
    let file = replay_file(&dir.path, 80, 10);
    let mut agent = EdgeAgent::run(
        &agent_config(&dir.path, broker.port, Some(("replay-k", &file))),
        &dir.path,
        "k1",
    )
    .unwrap();
    wait_for("the whole replay to be buffered", Duration::from_secs(30), || async {
        let s = agent.read_stats()?;
        (s["replays_finished"] == 1 && s["buffer_records"].as_i64()? >= 1 && s["acked"] == 0)
            .then_some(())
    })
    .await;
    let buffered = agent.stat("buffer_records").unwrap();
    agent.kill(); // SIGKILL: no flush, no goodbye

    // The restarted agent has no devices: only its disk buffer can deliver the readings.
    let agent2 =
        EdgeAgent::run(&agent_config(&dir.path, broker.port, None), &dir.path, "k2").unwrap();
    wait_for("the restarted agent to find its buffer", Duration::from_secs(30), || async {
        (agent2.stat("buffer_records")? == buffered).then_some(())
    })
    .await;
    broker.restart().await.unwrap();
    wait_for("every buffered reading stored", Duration::from_secs(60), || async {
        (count(&pool, "replay-k").await >= 80 && agent2.stat("buffer_records")? == 0).then_some(())
    })
    .await;
    assert_eq!(count(&pool, "replay-k").await, 80, "agent log:\n{}", agent2.log_text());
    assert_eq!(rollup_count(&pool, "replay-k").await, 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_answered_and_status_follows_the_agent() {
    use sccr_tests::MqttProbe;
    let dir = TempDir::new("edge-cmd").unwrap();
    let broker = Broker::start().await.unwrap();
    let config = dir.path.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nid = \"cabinet-cmd\"\n[mqtt]\nport = {}\n[buffer]\ndir = \"{}\"\n\
             [[devices]]\nid = \"tl-1\"\ndriver = \"traffic_light\"\nphases = [30, 30]\ninterval = \"1s\"\n\
             [[devices]]\nid = \"park-1\"\ndriver = \"parking\"\ncapacity = 50\n",
            broker.port,
            dir.path.join("buffer").display()
        ),
    )
    .unwrap();
    let mut probe = MqttProbe::connect(
        broker.port,
        "probe-cmd",
        &[
            "sccr/v1/devices/+/status",
            "sccr/v1/devices/+/commands/ack",
            "sccr/v1/devices/tl-1/telemetry",
        ],
    )
    .await
    .unwrap();
    let mut agent = EdgeAgent::run(&config, &dir.path, "cmd").unwrap();
    let online = |v: &serde_json::Value| v["state"] == "online";
    probe.expect("sccr/v1/devices/cabinet-cmd/status", Duration::from_secs(20), online).await;
    probe.expect("sccr/v1/devices/tl-1/status", Duration::from_secs(20), online).await;
    // The traffic light reports its plan's cycle.
    probe
        .expect("sccr/v1/devices/tl-1/telemetry", Duration::from_secs(20), |v| {
            v["readings"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x["m"] == "cycle_s" && x["v"] == 60.0))
        })
        .await;

    let cases = [
        ("tl-1", r#"{"id":"c1","name":"ping"}"#, "ok", "pong"),
        (
            "tl-1",
            r#"{"id":"c2","name":"set_plan","args":{"phases":[50,5,30,5]}}"#,
            "ok",
            "cycle 90 s",
        ),
        ("tl-1", r#"{"id":"c3","name":"set_plan","args":{"phases":[]}}"#, "rejected", "phases"),
        ("tl-1", r#"{"id":"c4","name":"self_destruct"}"#, "rejected", "unknown command"),
        ("tl-1", r#"{"id":"c5","name":"ping","expires_at":1000}"#, "rejected", "expired"),
        (
            "park-1",
            r#"{"id":"c6","name":"set_plan","args":{"phases":[10]}}"#,
            "rejected",
            "traffic lights",
        ),
        (
            "park-1",
            r#"{"id":"c7","name":"set_interval","args":{"interval":"2s"}}"#,
            "ok",
            "interval 2s",
        ),
        ("park-1", r#"{"id":"c8","name":"reboot"}"#, "ok", "rebooting"),
        ("park-1", r#"{"id":"c9","name":42}"#, "rejected", "not valid"),
    ];
    for (device, command, result, detail) in cases {
        probe.publish(&format!("sccr/v1/devices/{device}/commands"), command).await.unwrap();
        let id: serde_json::Value = serde_json::from_str(command).unwrap();
        let ack = probe
            .expect(
                &format!("sccr/v1/devices/{device}/commands/ack"),
                Duration::from_secs(20),
                |v| v["id"] == id["id"],
            )
            .await;
        assert_eq!(ack["result"], result, "{command}: {ack}");
        assert!(ack["detail"].as_str().unwrap_or("").contains(detail), "{command}: {ack}");
    }
    // The new plan is in force.
    probe
        .expect("sccr/v1/devices/tl-1/telemetry", Duration::from_secs(20), |v| {
            v["readings"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x["m"] == "cycle_s" && x["v"] == 90.0))
        })
        .await;

    // SIGKILL: the broker publishes the Last Will, retained, so late subscribers see it too.
    agent.kill();
    probe
        .expect("sccr/v1/devices/cabinet-cmd/status", Duration::from_secs(20), |v| {
            v["state"] == "offline"
        })
        .await;
    let mut late =
        MqttProbe::connect(broker.port, "probe-late", &["sccr/v1/devices/cabinet-cmd/status"])
            .await
            .unwrap();
    late.expect("sccr/v1/devices/cabinet-cmd/status", Duration::from_secs(20), |v| {
        v["state"] == "offline"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_connects_over_tls_with_a_client_certificate() {
    use sccr_tests::{free_port, MqttProbe, TestPki};
    let dir = TempDir::new("edge-tls").unwrap();
    let pki = TestPki::create("cabinet-tls").unwrap();
    let tls_port = free_port();
    let broker = Broker::start_with(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n",
        pki.path("ca.pem").display(),
        pki.path("server.pem").display(),
        pki.path("server.key").display(),
    ))
    .await
    .unwrap();
    let mut probe = MqttProbe::connect(
        broker.port,
        "probe-tls",
        &["sccr/v1/devices/+/status", "sccr/v1/devices/+/telemetry"],
    )
    .await
    .unwrap();
    let write_config = |name: &str, id: &str, client_cert: bool| {
        let mut text = format!("[agent]\nid = \"{id}\"\n{}", pki.agent_mqtt(tls_port, client_cert));
        text.push_str(&format!(
            "[buffer]\ndir = \"{}\"\n[[devices]]\nid = \"aq-{id}\"\ndriver = \"air_quality\"\ninterval = \"1s\"\n",
            dir.path.join(format!("buffer-{id}")).display()
        ));
        let path = dir.path.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };

    // Without a client certificate the broker refuses the agent: it keeps buffering.
    let refused =
        EdgeAgent::run(&write_config("nocert.toml", "cabinet-nocert", false), &dir.path, "nocert")
            .unwrap();
    let agent =
        EdgeAgent::run(&write_config("tls.toml", "cabinet-tls", true), &dir.path, "tls").unwrap();
    probe
        .expect("sccr/v1/devices/cabinet-tls/status", Duration::from_secs(30), |v| {
            v["state"] == "online"
        })
        .await;
    probe
        .expect("sccr/v1/devices/aq-cabinet-tls/telemetry", Duration::from_secs(30), |v| {
            v["readings"].as_array().is_some_and(|r| r.len() == 6)
        })
        .await;
    wait_for(
        "the agent's readings to be acknowledged over TLS",
        Duration::from_secs(30),
        || async { (agent.stat("acked")? >= 2).then_some(()) },
    )
    .await;
    wait_for("the refused agent to buffer", Duration::from_secs(30), || async {
        (refused.stat("messages_buffered")? >= 2).then_some(())
    })
    .await;
    assert_eq!(refused.stat("acked"), Some(0));
    assert_eq!(refused.stat("connections"), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_messages_stay_buffered_without_blocking_the_others() {
    let dir = TempDir::new("edge-acl").unwrap();
    let acl = dir.path.join("acl");
    // Anonymous clients may use the cabinet's and aq-ok's topics only.
    std::fs::write(
        &acl,
        "topic readwrite sccr/v1/devices/cabinet-acl/#\ntopic readwrite sccr/v1/devices/aq-ok/#\n",
    )
    .unwrap();
    let _ = std::process::Command::new("chmod").arg("a+rx").arg(&dir.path).status();
    let broker = Broker::start_with(&format!("acl_file {}\n", acl.display())).await.unwrap();
    let config = dir.path.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nid = \"cabinet-acl\"\n[mqtt]\nport = {}\n[buffer]\ndir = \"{}\"\n\
             [[devices]]\nid = \"aq-denied\"\ndriver = \"air_quality\"\ninterval = \"200ms\"\n\
             [[devices]]\nid = \"aq-ok\"\ndriver = \"air_quality\"\ninterval = \"200ms\"\n",
            broker.port,
            dir.path.join("buffer").display()
        ),
    )
    .unwrap();
    let agent = EdgeAgent::run(&config, &dir.path, "acl").unwrap();
    wait_for("accepted and refused messages", Duration::from_secs(30), || async {
        let s = agent.read_stats()?;
        (s["acked"].as_i64()? >= 5 && s["refused"].as_i64()? >= 5).then_some(())
    })
    .await;
    let s = agent.read_stats().unwrap();
    // The refused ones are still on disk; the connection was never dropped over them.
    assert!(s["buffer_records"].as_i64().unwrap() >= 5, "{s}");
    assert_eq!(s["connections"], 1, "{s}");
}
