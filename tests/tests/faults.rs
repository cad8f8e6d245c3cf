//! Fault injection under steady load from the real `edge-agent simulate` against
//! `sccr serve`, Mosquitto (project config) and PostgreSQL: the database stopped with
//! `pg_ctl -m immediate`, the broker SIGKILLed, `sccr` SIGKILLed, and the API restarted
//! under connected websocket clients. After each, what the simulator published (its
//! ledger: device, metric, time of every reading) must equal what is stored: nothing lost,
//! nothing extra, no key twice, and every rollup level equal to a recount of raw rows.
//! The simulator exits with success only when the broker acknowledged every message, so
//! "published" here is also "acknowledged".

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sccr_tests::{
    assert_rollups_match_raw, http_get, metric, stored_keys, wait_for, wait_pipeline_ready, Broker,
    Sccr, Simulator, TempDir, TestDb, ThrowawayPg,
};
use sqlx::PgPool;

/// 40 devices every 500 ms: 80 messages/s, several readings each, for 15 s.
const DEVICES: usize = 40;
const INTERVAL: &str = "500ms";
const DURATION: &str = "15s";

async fn stored_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM readings WHERE device <> 'probe'")
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

/// Wait until `n` readings of the simulation are stored.
async fn wait_stored(pool: &PgPool, n: i64) {
    wait_for(&format!("{n} simulated readings stored"), Duration::from_secs(30), || async {
        (stored_count(pool).await >= n).then_some(())
    })
    .await;
}

/// The simulation must end with every message acknowledged, and the store must then hold
/// exactly the readings it published, once each, with exact rollups.
async fn assert_stored_exactly_published(sim: &mut Simulator, pool: &PgPool, sccr: &Sccr) {
    let all_acked = sim.finish(Duration::from_secs(60)).await.expect("simulation ends");
    assert!(all_acked, "the broker did not acknowledge every message:\n{}", sim.log_text());
    let published = sim.published_keys().expect("ledger");
    assert!(published.len() > 1_000, "too little load to prove anything: {}", published.len());
    // Wait for the count to reach what was published (or stop growing), then compare exactly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while stored_count(pool).await < published.len() as i64
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = stored_keys(pool, "probe").await.expect("stored keys");
    let duplicated: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).take(10).collect();
    let lost: Vec<_> = published.iter().filter(|k| !stored.contains_key(*k)).collect();
    let extra: Vec<_> = stored.keys().filter(|k| !published.contains(*k)).take(10).collect();
    assert!(duplicated.is_empty(), "readings stored twice: {duplicated:?}");
    assert!(
        lost.is_empty() && extra.is_empty(),
        "{} of {} published readings lost (first: {:?}); stored but never published: {extra:?}\nsccr log:\n{}",
        lost.len(),
        published.len(),
        lost.iter().take(10).collect::<Vec<_>>(),
        tail(&sccr.log_text(), 40)
    );
    assert_rollups_match_raw(pool).await;
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_immediately_and_restarted_loses_and_duplicates_nothing() {
    let pg = ThrowawayPg::start().expect("throwaway PostgreSQL");
    let url = pg.create_db("sccr_faults").await.expect("database");
    let pool = PgPool::connect(&url).await.expect("pool");
    let broker = Broker::start().await.expect("mosquitto");
    let dir = TempDir::new("fault-pg").unwrap();
    let sccr = Sccr::serve(broker.port, &url, &dir.path, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &pool).await;

    let mut sim = Simulator::start(broker.port, &dir.path, "pg", DEVICES, INTERVAL, DURATION)
        .expect("simulator");
    wait_stored(&pool, 500).await;
    pg.stop_immediate().expect("pg_ctl stop -m immediate");
    // The writer must see the outage (and keep its batch, unacknowledged) before the restart.
    wait_for("the writer to report failed batches", Duration::from_secs(30), || async {
        sccr.log_text().contains("batch write failed").then_some(())
    })
    .await;
    pg.start_again().expect("pg_ctl start");
    assert_stored_exactly_published(&mut sim, &pool, &sccr).await;
    assert!(
        sccr.pid().is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists()),
        "sccr exited during the outage"
    );
    let (status, _) = http_get(sccr.api_port, "/healthz").await.expect("healthz");
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted_loses_and_duplicates_nothing() {
    let broker_db = TestDb::create().await.expect("database");
    let pool = PgPool::connect(&broker_db.url).await.expect("pool");
    let mut broker = Broker::start().await.expect("mosquitto");
    let dir = TempDir::new("fault-broker").unwrap();
    let sccr = Sccr::serve(broker.port, &broker_db.url, &dir.path, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &pool).await;
    let mut sim = Simulator::start(broker.port, &dir.path, "broker", DEVICES, INTERVAL, "20s")
        .expect("simulator");
    wait_stored(&pool, 200).await;
    // Mosquitto saves sessions every autosave_interval (10 s in deploy/mosquitto/sccr.conf):
    // a broker killed before it saved ingest's session forgets the subscription and drops
    // what devices publish before ingest subscribes again; one killed before it saved the
    // simulator's session makes rumqttc drop the simulator's unacknowledged messages. Kill
    // only once both sessions are on disk.
    let connected_at = std::time::SystemTime::now();
    let db_file = broker.persistence_file();
    wait_for("the broker to save the sessions", Duration::from_secs(30), || {
        let saved =
            std::fs::metadata(&db_file).and_then(|m| m.modified()).is_ok_and(|t| t > connected_at);
        async move { saved.then_some(()) }
    })
    .await;
    broker.kill();
    wait_for("ingest to notice the broker is gone", Duration::from_secs(30), || async {
        sccr.log_text().contains(": broker connection failed").then_some(())
    })
    .await;
    broker.start_again().await.expect("restart mosquitto");
    assert_stored_exactly_published(&mut sim, &pool, &sccr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sccr_killed_and_restarted_loses_and_duplicates_nothing() {
    let db = TestDb::create().await.expect("database");
    let pool = PgPool::connect(&db.url).await.expect("pool");
    let broker = Broker::start().await.expect("mosquitto");
    let dir = TempDir::new("fault-sccr").unwrap();
    let mut sccr = Sccr::serve(broker.port, &db.url, &dir.path, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &pool).await;

    let mut sim = Simulator::start(broker.port, &dir.path, "sccr", DEVICES, INTERVAL, DURATION)
        .expect("simulator");
    wait_stored(&pool, 500).await;
    sccr.kill();
    // Messages queue at the broker in ingest's persistent session while sccr is down.
    let at_kill = stored_count(&pool).await;
    sccr.restart().expect("restart sccr");
    sccr.wait_healthy().await;
    wait_stored(&pool, at_kill + 500).await;
    assert_stored_exactly_published(&mut sim, &pool, &sccr).await;
}

/// Another session locks `readings` while the simulation publishes: the writer's batches
/// wait on the lock, `/readyz` turns 503 naming the stalled writer and the pending-age
/// gauge passes `writer.stall_after`; once the lock is released `/readyz` is 200 again and
/// the store holds exactly what was published. With a small reading budget ingest's
/// handler waits for the writer the whole time; the broker link must stay alive
/// regardless: ingest keeps pinging the broker (which may drop a client silent for 1.5
/// keep-alives) through a lock that outlasts two keep-alives, on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_readings_table_fails_readiness_until_released_and_loses_nothing() {
    const STALL_AFTER: f64 = 3.0;
    let db = TestDb::create().await.expect("database");
    let pool = PgPool::connect(&db.url).await.expect("pool");
    let dir = TempDir::new("fault-lock").unwrap();
    // The broker logs every packet, to count ingest's pings; it runs as its own user.
    let _ = std::process::Command::new("chmod").arg("0777").arg(&dir.path).status();
    let broker_log = dir.path.join("broker.log");
    let mut broker =
        Broker::start_with(&format!("log_dest file {}\nlog_type all", broker_log.display()))
            .await
            .expect("mosquitto");
    let unix_now = || std::time::UNIX_EPOCH.elapsed().expect("clock").as_secs();
    let env = [
        ("SCCR_WRITER__STALL_AFTER", "3s"),
        ("SCCR_MQTT__KEEP_ALIVE", "5s"),
        ("SCCR_INGEST__MAX_PENDING_READINGS", "100"),
    ];
    let sccr = Sccr::serve(broker.port, &db.url, &dir.path, &env).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &pool).await;
    let port = sccr.api_port;
    let readyz = || async move { http_get(port, "/readyz").await.ok() };
    wait_for("/readyz 200 before the lock", Duration::from_secs(20), || async {
        readyz().await.filter(|(status, _)| *status == 200)
    })
    .await;

    let mut sim = Simulator::start(broker.port, &dir.path, "lock", DEVICES, INTERVAL, "25s")
        .expect("simulator");
    wait_stored(&pool, 300).await;
    let mut lock = pool.begin().await.expect("locking session");
    sqlx::query("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock readings");
    let (_, body) =
        wait_for("/readyz 503 while readings is locked", Duration::from_secs(30), || async {
            readyz().await.filter(|(status, _)| *status == 503)
        })
        .await;
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON error body");
    assert_eq!(body["error"]["code"], "writer_stalled", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("writer stalled: the oldest uncommitted batch is "),
        "{body}"
    );
    let age = metric(port, "sccr_writer_oldest_pending_seconds").await.expect("the gauge");
    assert!(age > STALL_AFTER, "the gauge passed the bound while /readyz said 503: {age}");
    let stalled_from = unix_now() + 1;
    wait_for("the lock to outlast twice the keep-alive", Duration::from_secs(40), || async {
        metric(port, "sccr_writer_oldest_pending_seconds").await.filter(|age| *age > 14.0)
    })
    .await;
    let stalled_to = unix_now();
    lock.commit().await.expect("release the lock");
    wait_for("/readyz 200 after the lock is released", Duration::from_secs(30), || async {
        readyz().await.filter(|(status, _)| *status == 200)
    })
    .await;
    let age = metric(port, "sccr_writer_oldest_pending_seconds").await.expect("the gauge");
    assert!(age < STALL_AFTER, "the gauge fell back: {age}");
    assert_stored_exactly_published(&mut sim, &pool, &sccr).await;
    let link = (
        metric(port, "sccr_ingest_connections_total").await,
        metric(port, "sccr_ingest_connection_errors_total").await,
    );
    assert_eq!(link, (Some(1.0), Some(0.0)), "one broker connection throughout the stall");
    broker.stop().expect("stop mosquitto"); // it flushes its log
    let log = std::fs::read_to_string(&broker_log).expect("the broker's log");
    // Ingest's client id is the test's `sccr-test-<pid>`; its command link adds a suffix.
    let pings = log
        .lines()
        .filter(|l| l.contains("Received PINGREQ from sccr-test-") && !l.ends_with("-commands"))
        .filter_map(|l| l.split(':').next()?.parse::<u64>().ok())
        .filter(|t| (stalled_from..=stalled_to).contains(t))
        .count();
    assert!(
        pings >= 1,
        "ingest did not ping the broker between {stalled_from} and {stalled_to} (Unix s) while the writer was stalled"
    );
}

/// A websocket client that reconnects whenever its connection ends, subscribes to every
/// device and reports each snapshot it gets: (client, connection number, values).
type Snapshots = tokio::sync::mpsc::UnboundedSender<(usize, usize, Vec<serde_json::Value>)>;

fn live_client(port: u16, snapshots: Snapshots, id: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connection = 0;
        loop {
            let Ok((mut ws, _)) =
                tokio_tungstenite::connect_async(sccr_tests::live_url(port)).await
            else {
                tokio::time::sleep(Duration::from_millis(50)).await; // the API is restarting: retry
                continue;
            };
            let sub =
                tokio_tungstenite::tungstenite::Message::Text(r#"{"type":"subscribe"}"#.into());
            if ws.send(sub).await.is_err() {
                continue;
            }
            connection += 1;
            while let Some(Ok(msg)) = ws.next().await {
                let Ok(text) = msg.to_text() else { continue };
                let Ok(frame) = serde_json::from_str::<serde_json::Value>(text) else { continue };
                if frame["type"] == "snapshot" {
                    let values = frame["values"].as_array().cloned().unwrap_or_default();
                    if snapshots.send((id, connection, values)).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_restart_under_connected_websockets_resyncs_them_and_loses_nothing() {
    let db = TestDb::create().await.expect("database");
    let pool = PgPool::connect(&db.url).await.expect("pool");
    let broker = Broker::start().await.expect("mosquitto");
    let dir = TempDir::new("fault-api").unwrap();
    let mut sccr = Sccr::serve(broker.port, &db.url, &dir.path, &[]).expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &pool).await;

    let mut sim = Simulator::start(broker.port, &dir.path, "api", DEVICES, INTERVAL, DURATION)
        .expect("simulator");
    wait_stored(&pool, 500).await;
    const CLIENTS: usize = 5;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let clients: Vec<_> = (0..CLIENTS).map(|i| live_client(sccr.api_port, tx.clone(), i)).collect();
    let mut first = [false; CLIENTS];
    while first.iter().any(|f| !f) {
        let (id, _, _) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("first snapshots")
            .expect("open");
        first[id] = true;
    }

    // A rolling restart: SIGTERM (drain and flush), then start again on the same port.
    assert!(
        sccr.terminate(Duration::from_secs(30)).expect("terminate"),
        "sccr exited with an error"
    );
    sccr.restart().expect("restart sccr");
    let mut resynced = [false; CLIENTS];
    let mut fresh = Vec::new();
    while resynced.iter().any(|r| !r) {
        let (id, connection, values) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("fresh snapshots after the restart")
            .expect("open");
        if connection < 2 {
            continue; // a resync on the first connection, before it closed
        }
        // The fresh snapshot holds the latest values (the hub is seeded from the store).
        assert!(!values.is_empty(), "client {id} got an empty snapshot after the restart");
        fresh.extend(values.into_iter().take(20));
        resynced[id] = true;
    }
    for c in clients {
        c.abort();
    }
    assert_stored_exactly_published(&mut sim, &pool, &sccr).await;
    // Every value a fresh snapshot showed is a stored reading (checked once all is stored:
    // the hub may show a value a moment before its batch commits).
    for v in &fresh {
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM readings WHERE device = $1 AND metric = $2 AND (extract(epoch FROM time) * 1000)::int8 = $3 AND value = $4",
        )
        .bind(v["device"].as_str().unwrap())
        .bind(v["metric"].as_str().unwrap())
        .bind(v["time"].as_i64().unwrap())
        .bind(v["value"].as_f64().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(stored, 1, "snapshot value {v} is not a stored reading");
    }
}
