//! A replicated PostgreSQL under `sccr serve` (docs/replication.md): a primary and its hot
//! standby started by the test (streaming replication, `synchronous_commit = on` with the
//! standby synchronous).
//!
//! - Failover: under a steady flood from the real `edge-agent simulate` through Mosquitto,
//!   the standby's WAL receiver is stopped until the primary holds commits the standby
//!   never confirmed, the primary is SIGKILLed (postmaster and every backend) and the
//!   receiver with it, the standby promoted with `pg_ctl promote`, and sccr, given the
//!   standby in `database.failover_urls`, moves its writes there. Every reading the
//!   broker acknowledged must then be in the new primary exactly once, with every rollup
//!   level equal to a recount. (With asynchronous replication this test fails: the
//!   readings acknowledged after the receiver stopped are lost.)
//! - Reads: history from the standby (`database.read_url`) equals the primary's; with the
//!   standby's replay paused its lag gauge grows past `database.max_read_lag` and history
//!   is read from the primary (marked); with the standby stopped, from the primary again
//!   (marked, counted).

use std::time::Duration;

use sccr_tests::{
    assert_rollups_match_raw, compact, header_value, http_get_with_head, metric, publish_all,
    recent_base_ms, stored_keys, telemetry_topic, wait_for, wait_pipeline_ready,
    wait_rollups_merged, Broker, ReplicatedPg, Sccr, Simulator, SyncMode, TempDir,
};
use sqlx::PgPool;

/// 40 devices every 500 ms: 80 messages/s, several readings each, for 20 s.
const DEVICES: usize = 40;
const INTERVAL: &str = "500ms";
const DURATION: &str = "20s";

async fn stored_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM readings WHERE device <> 'probe'")
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A labelled series of `/metrics` (`name{label="value"}`), if it is there.
async fn labelled(port: u16, series: &str) -> Option<f64> {
    let (_, _, text) = http_get_with_head(port, "/metrics").await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_mid_flood_and_standby_promoted_loses_and_duplicates_nothing() {
    let pair = ReplicatedPg::start(SyncMode::On).await.expect("primary and standby");
    let (primary_url, standby_url) = pair.create_db("sccr_failover").await.expect("database");
    let primary = PgPool::connect(&primary_url).await.expect("primary pool");
    let broker = Broker::start().await.expect("mosquitto");
    let dir = TempDir::new("replica-failover").unwrap();
    let failover = format!("[\"{standby_url}\"]");
    let sccr = Sccr::serve(
        broker.port,
        &primary_url,
        &dir.path,
        &[
            ("SCCR_DATABASE__FAILOVER_URLS", &failover),
            ("SCCR_DATABASE__FAILOVER_PROBE_INTERVAL", "200ms"),
        ],
    )
    .expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &primary).await;
    let primary_host = format!("sccr_database_primary{{host=\"127.0.0.1:{}\"}}", pair.primary.port);
    assert_eq!(labelled(sccr.api_port, &primary_host).await, Some(1.0), "writes go to the primary");
    assert_eq!(metric(sccr.api_port, "sccr_database_synchronous").await, Some(1.0));

    let mut sim = Simulator::start(broker.port, &dir.path, "repl", DEVICES, INTERVAL, DURATION)
        .expect("simulator");
    wait_for("500 simulated readings stored", Duration::from_secs(30), || async {
        (stored_count(&primary).await >= 500).then_some(())
    })
    .await;
    // The standby stops confirming: commits wait on the primary (locally committed,
    // visible there, not acknowledged to sccr), batches pend, nothing is acknowledged.
    let receiver = pair.stop_receiver().await.expect("SIGSTOP the WAL receiver");
    wait_for("batches held by the synchronous commit", Duration::from_secs(30), || async {
        metric(sccr.api_port, "sccr_writer_oldest_pending_seconds").await.filter(|s| *s > 1.0)
    })
    .await;
    pair.primary.kill().expect("SIGKILL the primary");
    primary.close().await;
    pair.kill_receiver(receiver).expect("SIGKILL the WAL receiver");
    // The writer must see the outage (and keep its batch, unacknowledged) before the promotion.
    wait_for("the writer to report failed batches", Duration::from_secs(30), || async {
        sccr.log_text().contains("batch write failed").then_some(())
    })
    .await;
    pair.standby.promote().expect("pg_ctl promote");
    let promoted = tokio::time::Instant::now();
    wait_for("sccr to move to the promoted standby", Duration::from_secs(60), || async {
        (metric(sccr.api_port, "sccr_database_failovers_total").await == Some(1.0)).then_some(())
    })
    .await;
    // A figure for docs/replication.md, not a check (no timed assertions).
    eprintln!(
        "sccr moved to the promoted standby {:?} after pg_ctl promote returned",
        promoted.elapsed()
    );

    let new_primary = PgPool::connect(&standby_url).await.expect("new primary pool");
    let all_acked = sim.finish(Duration::from_secs(90)).await.expect("simulation ends");
    assert!(all_acked, "the broker did not acknowledge every message:\n{}", sim.log_text());
    let published = sim.published_keys().expect("ledger");
    assert!(published.len() > 2_000, "too little load to prove anything: {}", published.len());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while stored_count(&new_primary).await < published.len() as i64
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = stored_keys(&new_primary, "probe").await.expect("stored keys");
    let duplicated: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).take(10).collect();
    let lost: Vec<_> = published.iter().filter(|k| !stored.contains_key(*k)).collect();
    let extra: Vec<_> = stored.keys().filter(|k| !published.contains(*k)).take(10).collect();
    assert!(duplicated.is_empty(), "readings stored twice: {duplicated:?}");
    assert!(
        lost.is_empty() && extra.is_empty(),
        "{} of {} acknowledged readings lost (first: {:?}); stored but never published: {extra:?}\nsccr log:\n{}",
        lost.len(),
        published.len(),
        lost.iter().take(10).collect::<Vec<_>>(),
        tail(&sccr.log_text(), 40)
    );
    assert_rollups_match_raw(&new_primary).await;
    eprintln!(
        "{} acknowledged readings, all stored once; {:?} failed batch writes retried",
        published.len(),
        metric(sccr.api_port, "sccr_writer_errors_total").await
    );

    let standby_host = format!("sccr_database_primary{{host=\"127.0.0.1:{}\"}}", pair.standby.port);
    assert_eq!(labelled(sccr.api_port, &standby_host).await, Some(1.0), "writes moved");
    assert_eq!(metric(sccr.api_port, "sccr_database_failovers_total").await, Some(1.0));
    assert!(sccr.log_text().contains("database primary moved"), "the move is logged");
    // The promoted standby has no standby of its own: said in /metrics and the log.
    wait_for("the unprotected primary reported", Duration::from_secs(30), || async {
        (metric(sccr.api_port, "sccr_database_synchronous").await == Some(0.0)).then_some(())
    })
    .await;
    assert!(sccr.log_text().contains("without a synchronous standby"));
    assert!(
        sccr.pid().is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists()),
        "sccr exited during the failover"
    );
    let (status, _, _) = http_get_with_head(sccr.api_port, "/readyz").await.expect("readyz");
    assert_eq!(status, 200, "ready again on the new primary");
}

/// The history answers of one query: (status, SCCR-Read-From, SCCR-Read-Reason, body).
async fn history(port: u16, query: &str) -> (u16, String, Option<String>, serde_json::Value) {
    let (status, head, body) =
        http_get_with_head(port, &format!("/api/v1/history?{query}")).await.expect("history");
    let from = header_value(&head, "sccr-read-from").unwrap_or_default().to_owned();
    let reason = header_value(&head, "sccr-read-reason").map(str::to_owned);
    let body = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    (status, from, reason, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_from_the_standby_equals_the_primary_and_lag_or_outage_reads_the_primary() {
    let pair = ReplicatedPg::start(SyncMode::On).await.expect("primary and standby");
    let (primary_url, standby_url) = pair.create_db("sccr_reads").await.expect("database");
    let primary = PgPool::connect(&primary_url).await.expect("primary pool");
    let standby = PgPool::connect(&standby_url).await.expect("standby pool");
    let broker = Broker::start().await.expect("mosquitto");
    let dir = TempDir::new("replica-reads").unwrap();
    let sccr = Sccr::serve(
        broker.port,
        &primary_url,
        &dir.path,
        &[("SCCR_DATABASE__READ_URL", &standby_url), ("SCCR_DATABASE__MAX_READ_LAG", "1s")],
    )
    .expect("sccr");
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &primary).await;

    // 3 devices × 90 minutes of one reading a minute, ending an hour ago.
    let base = recent_base_ms() - 90 * 60_000;
    let mut messages = Vec::new();
    for d in 0..3 {
        for i in 0..90i64 {
            let v = 20.0 + d as f64 + (i % 7) as f64 * 1.5;
            messages.push((
                telemetry_topic(&format!("loop-r{d}")),
                compact(i as u64 + 1, base + i * 60_000, &[("speed_kmh", v)]),
            ));
        }
    }
    publish_all(broker.port, "replica-reads", messages).await.expect("publish");
    wait_for("270 readings on the primary", Duration::from_secs(30), || async {
        (stored_count(&primary).await == 270).then_some(())
    })
    .await;
    // Late readings count in history once merged into the rollups (on the primary); then
    // the standby must have applied everything the primary wrote up to here.
    wait_rollups_merged(&primary).await;
    let lsn: String =
        sqlx::query_scalar("SELECT pg_current_wal_lsn()::text").fetch_one(&primary).await.unwrap();
    wait_for("the standby to apply the merged rollups", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, bool>("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
            .bind(&lsn)
            .fetch_one(&standby)
            .await
            .ok()
            .filter(|applied| *applied)
    })
    .await;
    wait_for("the replica probed and caught up", Duration::from_secs(30), || async {
        (metric(sccr.api_port, "sccr_replica_up").await == Some(1.0)
            && metric(sccr.api_port, "sccr_replica_lag_seconds").await == Some(0.0))
        .then_some(())
    })
    .await;

    let (from, to) = (base, base + 90 * 60_000);
    let queries = [
        format!("metric=speed_kmh&device=loop-r1&from={from}&to={to}&resolution=raw&limit=1000"),
        format!("metric=speed_kmh&device=loop-r2&from={from}&to={to}&step=15m"),
        format!("metric=speed_kmh&from={}&to={}&step=1h", from + 7 * 60_000, to),
    ];
    let mut from_replica = Vec::new();
    for q in &queries {
        let (status, read_from, reason, body) = history(sccr.api_port, q).await;
        assert_eq!(status, 200, "{q}: {body}");
        assert_eq!((read_from.as_str(), reason), ("replica", None), "{q}");
        from_replica.push(body);
    }
    let n = from_replica[0]["points"].as_array().map_or(0, Vec::len);
    assert_eq!(n, 90, "every raw reading of loop-r1 from the replica");

    // Replay paused: new WAL arrives and is not applied, the lag passes max_read_lag.
    sqlx::query("SELECT pg_wal_replay_pause()").execute(&standby).await.expect("pause replay");
    let late = compact(1_000, to + 60_000, &[("speed_kmh", 99.0)]);
    publish_all(broker.port, "replica-late", vec![(telemetry_topic("loop-r1"), late)])
        .await
        .expect("publish");
    wait_for("the replica's lag above 1 s", Duration::from_secs(30), || async {
        metric(sccr.api_port, "sccr_replica_lag_seconds").await.filter(|l| *l > 1.0)
    })
    .await;
    for (q, replica_body) in queries.iter().zip(&from_replica) {
        let (status, read_from, reason, body) = history(sccr.api_port, q).await;
        assert_eq!(status, 200);
        assert_eq!((read_from.as_str(), reason.as_deref()), ("primary", Some("replica_lagging")));
        assert_eq!(&body, replica_body, "{q}: the primary and the replica answer alike");
    }
    // What only the primary holds yet is in the (primary's) answer.
    let late_q =
        format!("metric=speed_kmh&device=loop-r1&from={to}&to={}&resolution=raw", to + 120_000);
    let (_, read_from, _, body) = history(sccr.api_port, &late_q).await;
    assert_eq!(read_from, "primary");
    assert_eq!(body["points"].as_array().map_or(0, Vec::len), 1, "{body}");
    let on_standby: i64 =
        sqlx::query_scalar("SELECT count(*) FROM readings WHERE device = 'loop-r1' AND value = 99")
            .fetch_one(&standby)
            .await
            .unwrap();
    assert_eq!(on_standby, 0, "the paused standby does not hold it yet");

    sqlx::query("SELECT pg_wal_replay_resume()").execute(&standby).await.expect("resume replay");
    wait_for("the replica caught up again", Duration::from_secs(30), || async {
        (metric(sccr.api_port, "sccr_replica_lag_seconds").await == Some(0.0)).then_some(())
    })
    .await;
    let (_, read_from, _, body) = history(sccr.api_port, &late_q).await;
    assert_eq!(read_from, "replica");
    assert_eq!(body["points"].as_array().map_or(0, Vec::len), 1, "{body}");
    let (status, head, _) = http_get_with_head(
        sccr.api_port,
        &format!("/api/v1/export/readings?from={from}&to={to}&metric=speed_kmh"),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(header_value(&head, "sccr-read-from"), Some("replica"), "exports too");
    assert!(header_value(&head, "sccr-replica-lag").is_some());
    // `sccr export` chooses as the server does, and says so.
    let config = dir.path.join("export.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{primary_url}\"\nread_url = \"{standby_url}\"\nmax_read_lag = \"1s\"\n"
        ),
    )
    .unwrap();
    let cli_export = |name: &str| {
        let out = dir.path.join(name);
        let o = std::process::Command::new(sccr_tests::workspace_bin("sccr").expect("sccr"))
            .args(["export", "--config"])
            .arg(&config)
            .args(["--from", &from.to_string(), "--to", &to.to_string(), "--format", "csv"])
            .args(["--metric", "speed_kmh", "--out"])
            .arg(&out)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .output()
            .expect("run sccr export");
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "sccr export: {stderr}");
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join("_sccr_export.json")).expect("manifest"),
        )
        .expect("manifest JSON");
        (stderr, manifest["rows"].as_u64())
    };
    let (said, rows) = cli_export("from-replica");
    assert!(said.contains("reading from the read replica"), "{said}");
    assert_eq!(rows, Some(270), "every reading of the range, from the replica");

    // Writes went to the primary only, exactly. (Checked before the standby stops: a
    // primary whose only synchronous standby is down holds every commit.)
    assert_rollups_match_raw(&primary).await;
    let keys = stored_keys(&primary, "probe").await.unwrap();
    assert_eq!(keys.len(), 271);

    // The standby down: reads go to the primary, counted.
    standby.close().await;
    pair.standby.stop_immediate().expect("stop the standby");
    wait_for("the replica seen down", Duration::from_secs(30), || async {
        (metric(sccr.api_port, "sccr_replica_up").await == Some(0.0)).then_some(())
    })
    .await;
    let (status, read_from, reason, body) = history(sccr.api_port, &queries[1]).await;
    assert_eq!(status, 200);
    assert_eq!((read_from.as_str(), reason.as_deref()), ("primary", Some("replica_down")));
    let (said, rows) = cli_export("from-primary");
    assert!(said.contains("reading from the primary: the read replica does not answer"), "{said}");
    assert_eq!(rows, Some(270), "the same rows from the primary");
    assert_eq!(body, from_replica[1]);
    let counted = |target: &str| format!("sccr_replica_reads_total{{target=\"{target}\"}}");
    assert!(labelled(sccr.api_port, &counted("replica")).await.unwrap_or(0.0) >= 5.0);
    assert!(
        labelled(sccr.api_port, &counted("primary_replica_lagging")).await.unwrap_or(0.0) >= 4.0
    );
    assert!(labelled(sccr.api_port, &counted("primary_replica_down")).await.unwrap_or(0.0) >= 1.0);
}
