//! Device commands end to end through the real `sccr serve`, Mosquitto and the real edge
//! agent: published once per idempotency key, acked by the agent, or expired when the
//! agent is stopped; the results reach a webhook created over the API; `/metrics` counts
//! both.

use sccr_tests::{http_request_with, metric};

use super::*;

/// A POST as the test admin with extra headers: (status, body).
async fn post_with(port: u16, path: &str, headers: &[(&str, &str)], json: &str) -> (u16, String) {
    http_request_with(port, "POST", path, Some(TEST_ADMIN_TOKEN), headers, json).await.unwrap()
}

async fn command_status(api: u16, id: &str) -> Option<Value> {
    let (status, body) = http_get(api, &format!("/api/v1/commands/{id}")).await.ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_the_edge_agent_once_per_key_are_acked_or_expire_and_their_results_are_webhook_events(
) {
    let dir = TempDir::new("commands").unwrap();
    let broker = Broker::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let sccr = Sccr::serve(
        broker.port,
        &db.url,
        &dir.path,
        &[
            ("SCCR_WEBHOOKS__POLL_INTERVAL", "50ms"),
            ("SCCR_WEBHOOKS__BACKOFF_BASE", "50ms"),
            ("SCCR_WEBHOOKS__BACKOFF_CAP", "500ms"),
        ],
    )
    .unwrap();
    sccr.wait_healthy().await;
    wait_pipeline_ready(broker.port, &pool).await;
    let api = sccr.api_port;

    // A subscription to command results and device changes, created over the API.
    let port = free_port();
    let receiver = Receiver::default();
    let (stop, server) = start_receiver(port, receiver.clone()).await;
    let body = format!(
        r#"{{"url":"http://127.0.0.1:{port}/hook/ops","types":["it.firenze.sccr.command.*","it.firenze.sccr.device.*"],"secret":"{SECRET}"}}"#
    );
    let (status, created) = http_send(api, "POST", "/api/v1/webhooks", &body).await.unwrap();
    assert_eq!(status, 201, "{created}");
    let created: Value = serde_json::from_str(&created).unwrap();
    assert!(created.get("secret").is_none(), "the secret is write-only: {created}");
    let (status, _) = http_send(
        api,
        "POST",
        "/api/v1/webhooks",
        r#"{"url":"ftp://x","secret":"0123456789abcdef"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 400);

    // The real edge agent with one loop detector.
    let agent_toml = dir.path.join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "[agent]\nid = \"cabinet-cmd\"\n[mqtt]\nport = {}\nmax_backoff = \"500ms\"\n[buffer]\ndir = \"{}\"\n[[devices]]\nid = \"loop-cmd\"\ndriver = \"traffic_loop\"\nsegment = \"viale-strozzi\"\ninterval = \"1s\"\n",
            broker.port,
            dir.path.join("buffer").display()
        ),
    )
    .unwrap();
    let mut agent = EdgeAgent::run(&agent_toml, &dir.path, "cmd").unwrap();
    wait_for("the agent's device registered", Duration::from_secs(30), || async {
        let (_, body) = http_get(api, "/api/v1/devices").await.ok()?;
        body.contains("\"loop-cmd\"").then_some(())
    })
    .await;

    let path = "/api/v1/devices/loop-cmd/commands";
    let set = r#"{"name":"set_interval","args":{"interval":"2s"},"ttl":"30s"}"#;
    let (status, first) = post_with(api, path, &[("Idempotency-Key", "k-1")], set).await;
    assert_eq!(status, 201, "{first}");
    let first: Value = serde_json::from_str(&first).unwrap();
    let (status, again) = post_with(api, path, &[("Idempotency-Key", "k-1")], set).await;
    assert_eq!(status, 200, "{again}");
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["id"], first["id"], "the same key is the same command");
    let (status, _) =
        post_with(api, path, &[("Idempotency-Key", "k-1")], r#"{"name":"ping"}"#).await;
    assert_eq!(status, 409, "a key reused for another command");
    let (status, _) =
        post_with(api, "/api/v1/devices/no-such-device/commands", &[], r#"{"name":"ping"}"#).await;
    assert_eq!(status, 404);
    let (status, _) = post_with(api, path, &[], r#"{"name":"ping","ttl":"soon"}"#).await;
    assert_eq!(status, 400);

    let id = first["id"].as_str().unwrap().to_owned();
    let acked = wait_for("set_interval acked by the agent", Duration::from_secs(30), || async {
        command_status(api, &id).await.filter(|c| c["status"] == "acked")
    })
    .await;
    assert!(acked["sent_at"].is_i64(), "sent before acked: {acked}");
    // A second command after the first: had the repeated request published again, the
    // agent would have seen that copy before this one.
    let (status, ping) =
        post_with(api, path, &[("Idempotency-Key", "k-2")], r#"{"name":"ping","ttl":"30s"}"#).await;
    assert_eq!(status, 201);
    let ping_id = serde_json::from_str::<Value>(&ping).unwrap()["id"].as_str().unwrap().to_owned();
    wait_for("ping acked", Duration::from_secs(30), || async {
        command_status(api, &ping_id).await.filter(|c| c["status"] == "acked")
    })
    .await;
    let log = agent.log_text();
    assert_eq!(
        log.matches("command answered").count(),
        2,
        "one publish per idempotency key; agent log:\n{log}"
    );

    // A stopped agent never answers: the command expires after its time to live.
    agent.kill();
    let (status, late) =
        post_with(api, path, &[("Idempotency-Key", "k-3")], r#"{"name":"ping","ttl":"2s"}"#).await;
    assert_eq!(status, 201);
    let late_id = serde_json::from_str::<Value>(&late).unwrap()["id"].as_str().unwrap().to_owned();
    let expired =
        wait_for("the command to a stopped agent expired", Duration::from_secs(30), || async {
            command_status(api, &late_id).await.filter(|c| c["status"] == "expired")
        })
        .await;
    assert!(expired["finished_at"].as_i64().unwrap() >= expired["expires_at"].as_i64().unwrap());
    let (_, list) = http_get(api, path).await.unwrap();
    let list: Value = serde_json::from_str(&list).unwrap();
    let statuses: Vec<&str> = list["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["expired", "acked", "acked"], "newest first");

    // Results and the device's changes reached the subscription, signed.
    wait_for("command results and device changes delivered", Duration::from_secs(30), || async {
        let types: Vec<String> = receiver
            .arrivals("ops")
            .iter()
            .map(|a| a.event["type"].as_str().unwrap_or_default().to_owned())
            .collect();
        let count = |t: &str| types.iter().filter(|x| x.as_str() == t).count();
        (count("it.firenze.sccr.command.acked") >= 2
            && count("it.firenze.sccr.command.expired") >= 1
            && count("it.firenze.sccr.device.offline") >= 1)
            .then_some(())
    })
    .await;
    let arrivals = receiver.arrivals("ops");
    assert!(arrivals.iter().all(|a| a.signed));
    let expired_event =
        arrivals.iter().find(|a| a.event["type"] == "it.firenze.sccr.command.expired").unwrap();
    assert_eq!(expired_event.subject, format!("command/{late_id}"));
    assert_eq!(expired_event.event["data"]["device"], "loop-cmd");
    let (status, deliveries) =
        http_get(api, &format!("/api/v1/webhooks/{}/deliveries?state=delivered", created["id"]))
            .await
            .unwrap();
    assert_eq!(status, 200);
    assert!(
        serde_json::from_str::<Value>(&deliveries).unwrap()["deliveries"].as_array().unwrap().len()
            >= 4,
        "{deliveries}"
    );

    // /metrics counts the commands' course and the webhook deliveries, and the backlog
    // gauges (sampled every 5 s) come back to zero once everything is delivered.
    let figure = |name: &'static str| async move { metric(api, name).await.unwrap_or(-1.0) };
    assert!(figure("sccr_commands_published_total").await >= 3.0);
    assert!(figure("sccr_commands_sent_total").await >= 3.0);
    assert_eq!(figure("sccr_commands_answered_total").await, 2.0);
    assert_eq!(figure("sccr_commands_expired_total").await, 1.0);
    assert_eq!(figure("sccr_commands_stray_acks_total").await, 0.0);
    assert!(figure("sccr_webhook_fanned_out_total").await >= 4.0);
    assert!(figure("sccr_webhook_delivered_total").await >= 4.0);
    wait_for("the outbox and delivery backlog at zero", Duration::from_secs(30), || async {
        (figure("sccr_outbox_events_to_fan_out").await == 0.0
            && figure("sccr_webhook_deliveries_pending").await == 0.0
            && figure("sccr_webhook_oldest_pending_age_seconds").await == 0.0)
            .then_some(())
    })
    .await;

    let _ = stop.send(());
    let _ = server.await;
}
