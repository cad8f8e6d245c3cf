//! Webhooks from the transactional outbox against a real HTTP receiver: alert moves,
//! device status changes and command results written to PostgreSQL are delivered by two
//! dispatchers at once (replicas) to a receiver that fails its first requests and is
//! stopped and restarted on the same port mid-way. Every event arrives at least once, in
//! order per subject, signed, and duplicates are told apart by event id. A subscription
//! whose receiver never answers goes dead, and redelivering it delivers.
//!
//! Over https: receivers with certificates the test makes (rcgen) are trusted through
//! `ca_file` and get the dispatcher's client certificate; an untrusted receiver, or one
//! asking for a client certificate the dispatcher lacks, is a failed delivery with its
//! reason, retried. Destinations outside the allow-list are refused after resolving, at
//! delivery, and go out once allowed.
//!
//! And device commands end to end through the real `sccr serve`, Mosquitto and the real
//! edge agent: a `set_interval` command is published once per idempotency key, acked by
//! the agent, and a command to a stopped agent expires; the results reach a webhook
//! created over the API.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use links::backoff::Backoff;
use links::signature::{verify, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use links::{
    run_dispatcher, DestinationPolicy, DispatcherConfig, DispatcherMetrics, TlsFiles, WebhookClient,
};
use sccr_tests::{
    free_port, http_get, http_send, wait_for, wait_pipeline_ready, Broker, EdgeAgent, Sccr,
    TempDir, TestDb, TEST_ADMIN_TOKEN,
};
use serde_json::Value;
use store::{
    AlertKind, AlertSubject, CommandStatus, DeliveryState, NewAlert, NewCommand, NewWebhook,
    RaiseOutcome, Severity, Store, StoreOptions, WebhookFormat, WebhookPatch,
};
use telemetry::{DeviceId, DeviceState, EventTime, SegmentId};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const SECRET: &str = "a-secret-of-some-length";

#[derive(Debug, Clone)]
struct Arrival {
    hook: String,
    id: i64,
    subject: String,
    event: Value,
    signed: bool,
}

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Arrival>>>,
    fail_next: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Receiver {
    fn arrivals(&self, hook: &str) -> Vec<Arrival> {
        self.seen.lock().unwrap().iter().filter(|a| a.hook == hook).cloned().collect()
    }

    fn distinct(&self, hook: &str) -> BTreeSet<i64> {
        self.arrivals(hook).iter().map(|a| a.id).collect()
    }
}

async fn hook(
    State(r): State<Receiver>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    r.requests.fetch_add(1, Ordering::SeqCst);
    if r.fail_next.load(Ordering::SeqCst) > 0 {
        r.fail_next.fetch_sub(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let signed = h(TIMESTAMP_HEADER)
        .parse::<i64>()
        .is_ok_and(|ts| verify(SECRET.as_bytes(), ts, &body, &h(SIGNATURE_HEADER)))
        && h("content-type").starts_with("application/cloudevents+json");
    let Ok(event) = serde_json::from_slice::<Value>(&body) else { return StatusCode::BAD_REQUEST };
    let id = event["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or(-1);
    let subject = event["subject"].as_str().unwrap_or_default().to_owned();
    r.seen.lock().unwrap().push(Arrival { hook: name, id, subject, event, signed });
    StatusCode::NO_CONTENT
}

/// The receiver on `port` until the returned sender fires.
async fn start_receiver(port: u16, r: Receiver) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let app = Router::new().route("/hook/{name}", post(hook)).with_state(r);
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, task)
}

fn raise(rule: &str, subject: AlertSubject) -> NewAlert {
    let now = EventTime::now();
    NewAlert {
        rule: rule.into(),
        subject,
        kind: AlertKind::Single,
        severity: Severity::Warning,
        message: format!("{rule} test"),
        value: Some(1.0),
        since: now,
        raised_at: now,
        members: 1,
        code: store::MessageCode::ThresholdAbove,
        params: Default::default(),
        suppressed: None,
    }
}

async fn raise_id(store: &Store, rule: &str, subject: AlertSubject) -> i64 {
    match store.raise_alert(&raise(rule, subject)).await.unwrap() {
        RaiseOutcome::Raised(a) => a.id,
        RaiseOutcome::AlreadyOpen(id) => panic!("alert {id} already open"),
    }
}

fn seg(s: &str) -> AlertSubject {
    AlertSubject::Segment(SegmentId::parse(s).unwrap())
}

fn dev(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outbox_event_arrives_signed_in_order_per_subject_across_failures_and_a_receiver_restart(
) {
    let db = TestDb::create().await.unwrap();
    let store = Store::connect(&db.url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();

    let port = free_port();
    let dead_port = free_port();
    let receiver = Receiver::default();
    receiver.fail_next.store(3, Ordering::SeqCst);
    let (stop, server) = start_receiver(port, receiver.clone()).await;
    let main_hook = store
        .create_webhook(&NewWebhook {
            url: format!("http://127.0.0.1:{port}/hook/main"),
            types: vec![],
            secret: SECRET.into(),
            enabled: true,
            format: WebhookFormat::CloudEvents,
        })
        .await
        .unwrap();
    let dead_hook = store
        .create_webhook(&NewWebhook {
            url: format!("http://127.0.0.1:{dead_port}/hook/late"),
            types: vec!["it.firenze.sccr.alert.raised".into()],
            secret: SECRET.into(),
            enabled: true,
            format: WebhookFormat::NgsiLd,
        })
        .await
        .unwrap();

    // Two dispatchers on one database, as two replicas would run.
    let config = DispatcherConfig {
        source: "urn:sccr:test".into(),
        poll_interval: Duration::from_millis(20),
        request_timeout: Duration::from_millis(500),
        backoff: Backoff {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(300),
            max_attempts: 12,
        },
        concurrency: 8,
        retention: Duration::from_secs(86_400),
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics = Arc::new(DispatcherMetrics::default());
    let dispatchers: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(run_dispatcher(
                store.clone(),
                config.clone(),
                plain_client(config.request_timeout, &[]),
                metrics.clone(),
                shutdown_rx.clone(),
            ))
        })
        .collect();

    // Phase 1: alerts on three subjects, a device coming online, a command answered.
    let a1 = raise_id(&store, "congestion", seg("viale-strozzi")).await;
    let a2 = raise_id(&store, "congestion", seg("lungarno-acciaiuoli")).await;
    let a3 = raise_id(&store, "eu-no2", AlertSubject::Device(dev("aq-1"))).await;
    store.acknowledge_alert(a1, "ada", Some("on it"), EventTime::now()).await.unwrap();
    assert!(store
        .record_device_status(&dev("loop-1"), DeviceState::Online, EventTime::now())
        .await
        .unwrap());
    assert!(
        !store
            .record_device_status(&dev("loop-1"), DeviceState::Online, EventTime::now())
            .await
            .unwrap(),
        "a repeated state is no event"
    );
    let now = EventTime::now();
    let cmd = NewCommand {
        id: "cmd-1".into(),
        device: dev("loop-1"),
        name: "ping".into(),
        args: Default::default(),
        idempotency_key: None,
        created_by: None,
        created_at: now,
        expires_at: EventTime(now.millis() + 60_000),
    };
    store.create_command(&cmd).await.unwrap();
    store
        .finish_command("cmd-1", &dev("loop-1"), CommandStatus::Acked, None, EventTime::now())
        .await
        .unwrap()
        .unwrap();
    wait_for("the first events delivered", Duration::from_secs(20), || async {
        (receiver.distinct("main").len() >= 4).then_some(())
    })
    .await;

    // Phase 2: the receiver goes away while more moves happen.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("receiver stops").unwrap();
    let requests_when_stopped = receiver.requests.load(Ordering::SeqCst);
    store.clear_alert(a1, Some("ada"), None, EventTime::now()).await.unwrap();
    assert_eq!(
        store
            .clear_open_alert("congestion", &seg("lungarno-acciaiuoli"), EventTime::now())
            .await
            .unwrap()
            .unwrap()
            .id,
        a2
    );
    store.acknowledge_alert(a3, "bo", None, EventTime::now()).await.unwrap();
    store
        .record_device_status(&dev("loop-1"), DeviceState::Offline, EventTime::now())
        .await
        .unwrap();
    let a4 = raise_id(&store, "congestion", seg("viale-strozzi")).await;
    wait_for("failed attempts while the receiver is down", Duration::from_secs(20), || async {
        let pending =
            store.deliveries(main_hook.id, Some(DeliveryState::Pending), 100).await.unwrap();
        pending.iter().any(|d| d.attempts >= 2 && d.last_error.is_some()).then_some(())
    })
    .await;
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        requests_when_stopped,
        "nothing reached a stopped receiver"
    );

    // Phase 3: back on the same port, failing once more first.
    receiver.fail_next.store(1, Ordering::SeqCst);
    let (stop, server) = start_receiver(port, receiver.clone()).await;
    store.clear_alert(a3, None, None, EventTime::now()).await.unwrap();
    store
        .record_device_status(&dev("loop-1"), DeviceState::Online, EventTime::now())
        .await
        .unwrap();
    store.clear_alert(a4, None, None, EventTime::now()).await.unwrap();

    let events = store.outbox_events(0, 1_000).await.unwrap();
    assert_eq!(events.len(), 10 + 3 + 1, "one outbox row per move: 4 raises, 2 acknowledgements, 4 clears; 3 device changes; 1 command result");
    let all: BTreeSet<i64> = events.iter().map(|e| e.id).collect();
    wait_for("every event delivered to the main subscription", Duration::from_secs(30), || async {
        (receiver.distinct("main") == all).then_some(())
    })
    .await;

    let arrivals = receiver.arrivals("main");
    assert!(arrivals.iter().all(|a| a.signed), "every delivery carries a valid signature");
    let by_id: HashMap<i64, &store::OutboxRecord> = events.iter().map(|e| (e.id, e)).collect();
    for a in &arrivals {
        let e = by_id[&a.id];
        assert_eq!(a.event["specversion"], "1.0");
        assert_eq!(a.event["source"], "urn:sccr:test");
        assert_eq!(a.event["type"], e.event_type.as_str());
        assert_eq!(a.subject, e.subject);
        assert_eq!(a.event["datacontenttype"], "application/json");
        assert_eq!(a.event["data"], e.data);
    }
    // In order per subject: dropping duplicates by id, each subject's ids ascend.
    let mut per_subject: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for a in &arrivals {
        if seen.insert(a.id) {
            per_subject.entry(a.subject.as_str()).or_default().push(a.id);
        }
    }
    for (subject, ids) in &per_subject {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{subject}: {ids:?}");
    }
    let alert_1: Vec<&str> = arrivals
        .iter()
        .filter(|a| a.subject == format!("alert/{a1}"))
        .map(|a| a.event["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        dedup(&alert_1),
        [
            "it.firenze.sccr.alert.raised",
            "it.firenze.sccr.alert.acknowledged",
            "it.firenze.sccr.alert.cleared"
        ]
    );
    let device: Vec<&str> = arrivals
        .iter()
        .filter(|a| a.subject == "device/loop-1")
        .map(|a| a.event["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        dedup(&device),
        [
            "it.firenze.sccr.device.online",
            "it.firenze.sccr.device.offline",
            "it.firenze.sccr.device.online"
        ]
    );
    assert!(arrivals.iter().any(|a| a.subject == "command/cmd-1"
        && a.event["type"] == "it.firenze.sccr.command.acked"
        && a.event["data"]["status"] == "acked"));
    // The receiver answers before the dispatcher records the outcome.
    let delivered =
        wait_for("every delivery recorded as delivered", Duration::from_secs(10), || async {
            let d = store
                .deliveries(main_hook.id, Some(DeliveryState::Delivered), 1_000)
                .await
                .unwrap();
            (d.len() == all.len()).then_some(d)
        })
        .await;
    assert!(delivered.iter().any(|d| d.attempts > 1), "some deliveries were retried");

    // The other subscription's receiver never answered: dead after max_attempts.
    wait_for("the unreachable subscription's deliveries dead", Duration::from_secs(30), || async {
        let d = store.deliveries(dead_hook.id, None, 100).await.unwrap();
        (d.len() == 4 && d.iter().all(|d| d.state == DeliveryState::Dead && d.attempts == 12))
            .then_some(())
    })
    .await;
    assert!(receiver.arrivals("late").is_empty());
    // Pointed at a live receiver and redelivered: every dead one arrives, as NGSI-LD alerts.
    store
        .update_webhook(
            dead_hook.id,
            &WebhookPatch {
                url: Some(format!("http://127.0.0.1:{port}/hook/late")),
                ..WebhookPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.redeliver(dead_hook.id, None, EventTime::now()).await.unwrap(), 4);
    wait_for("redelivered events", Duration::from_secs(20), || async {
        (receiver.distinct("late").len() == 4).then_some(())
    })
    .await;
    for a in receiver.arrivals("late") {
        assert!(a.signed);
        assert_eq!(a.event["type"], "it.firenze.sccr.alert.raised");
        assert_eq!(a.event["datacontenttype"], "application/ld+json");
        assert_eq!(a.event["data"]["type"], "Alert");
    }

    let _ = shutdown_tx.send(true);
    for d in dispatchers {
        tokio::time::timeout(Duration::from_secs(10), d).await.expect("dispatcher stops").unwrap();
    }
    let _ = stop.send(());
    let _ = server.await;
    store.close().await;
}

/// A client trusting the system's CA certificates, posting where `allowed` admits.
fn plain_client(timeout: Duration, allowed: &[&str]) -> WebhookClient {
    WebhookClient::new(timeout, &TlsFiles::default(), DestinationPolicy::parse(allowed).unwrap())
        .unwrap()
}

fn dedup<'a>(types: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for t in types {
        if out.last() != Some(t) {
            out.push(t);
        }
    }
    out
}

/// A minimal HTTP/1.1 POST with extra headers: (status, body).
async fn post_with(port: u16, path: &str, headers: &[(&str, &str)], json: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect::<String>()
        + &format!("Authorization: Bearer {TEST_ADMIN_TOKEN}\r\n");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        json.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(json.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
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

    let _ = stop.send(());
    let _ = server.await;
}

/// The test's PKI: a CA the dispatcher is told to trust, a receiver certificate and a
/// client certificate it signed, and a receiver certificate of a CA nobody trusts.
struct Pki {
    ca_pem: String,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    server: (rustls::pki_types::CertificateDer<'static>, Vec<u8>),
    client_pem: (String, String),
    client_der: rustls::pki_types::CertificateDer<'static>,
    rogue_server: (rustls::pki_types::CertificateDer<'static>, Vec<u8>),
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let leaf = |issuer: &CertifiedIssuer<'_, KeyPair>, names: Vec<String>, usage| {
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "sccr test");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, issuer).unwrap(), key)
    };
    let names = || vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let city = ca("Comune di Firenze test CA");
    let rogue = ca("Someone else's CA");
    let (server, server_key) = leaf(&city, names(), ExtendedKeyUsagePurpose::ServerAuth);
    let (client, client_key) =
        leaf(&city, vec!["sccr-dispatcher".into()], ExtendedKeyUsagePurpose::ClientAuth);
    let (rogue_server, rogue_key) = leaf(&rogue, names(), ExtendedKeyUsagePurpose::ServerAuth);
    Pki {
        ca_pem: city.pem(),
        ca_der: city.der().clone(),
        server: (server.der().clone(), server_key.serialize_der()),
        client_pem: (client.pem(), client_key.serialize_pem()),
        client_der: client.der().clone(),
        rogue_server: (rogue_server.der().clone(), rogue_key.serialize_der()),
    }
}

/// A request a TLS receiver took: its hook, event id, whether it was signed, and the
/// client certificate (DER) of its connection.
type TlsRequest = (String, i64, bool, Option<Vec<u8>>);

/// What a TLS receiver saw: its requests, and the handshakes that failed.
#[derive(Clone, Default)]
struct TlsReceiver {
    requests: Arc<Mutex<Vec<TlsRequest>>>,
    failed_handshakes: Arc<AtomicUsize>,
}

/// An https receiver on a free port with `cert`, asking for a client certificate signed by
/// `client_ca` when given; answers 204 to signed CloudEvents.
async fn start_tls_receiver(
    cert: (rustls::pki_types::CertificateDer<'static>, Vec<u8>),
    client_ca: Option<rustls::pki_types::CertificateDer<'static>>,
) -> (u16, TlsReceiver, JoinHandle<()>) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.1));
    let config = builder.with_single_cert(vec![cert.0], key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = TlsReceiver::default();
    let r = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, r) = (acceptor.clone(), r.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    r.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let peer =
                    tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (r, peer) = (r.clone(), peer.clone());
                    async move {
                        use http_body_util::BodyExt;
                        let hook = req.uri().path().trim_start_matches("/hook/").to_owned();
                        let h = |k: &str| {
                            req.headers()
                                .get(k)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let (ts, sig) = (h(TIMESTAMP_HEADER), h(SIGNATURE_HEADER));
                        let body = req.into_body().collect().await?.to_bytes();
                        let signed = ts
                            .parse::<i64>()
                            .is_ok_and(|ts| verify(SECRET.as_bytes(), ts, &body, &sig));
                        let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let id = event["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or(-1);
                        r.requests.lock().unwrap().push((hook, id, signed, peer));
                        let resp = hyper::Response::builder()
                            .status(204)
                            .body(http_body_util::Empty::<Bytes>::new())
                            .unwrap();
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, seen, task)
}

fn fast_config() -> DispatcherConfig {
    DispatcherConfig {
        source: "urn:sccr:test".into(),
        poll_interval: Duration::from_millis(20),
        request_timeout: Duration::from_secs(2),
        backoff: Backoff {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(200),
            max_attempts: 1_000,
        },
        concurrency: 8,
        retention: Duration::from_secs(86_400),
    }
}

async fn subscribe(store: &Store, url: String) -> i64 {
    store
        .create_webhook(&NewWebhook {
            url,
            types: vec![],
            secret: SECRET.into(),
            enabled: true,
            format: WebhookFormat::CloudEvents,
        })
        .await
        .unwrap()
        .id
}

/// Waits until every delivery of `hook` failed at least twice (it is retried) and is
/// still pending; returns its last error.
async fn retried_error(store: &Store, hook: i64, what: &str) -> String {
    wait_for(what, Duration::from_secs(20), || async {
        let d = store.deliveries(hook, None, 10).await.unwrap();
        (d.len() == 1 && d[0].state == DeliveryState::Pending && d[0].attempts >= 2)
            .then(|| d[0].last_error.clone().unwrap_or_default())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receivers_get_deliveries_over_mutual_tls_and_an_untrusted_one_fails_and_is_retried()
{
    let db = TestDb::create().await.unwrap();
    let store = Store::connect(&db.url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let dir = TempDir::new("webhooks-tls").unwrap();
    let pki = pki();
    let file = |name: &str, text: &str| {
        let path = dir.path.join(name);
        std::fs::write(&path, text).unwrap();
        Some(path)
    };
    let tls = TlsFiles {
        ca_file: file("ca.pem", &pki.ca_pem),
        client_cert: file("client.pem", &pki.client_pem.0),
        client_key: file("client.key", &pki.client_pem.1),
    };
    // A key that is not the certificate's is refused at start, naming the key.
    let other_key = file("other.key", &rcgen::KeyPair::generate().unwrap().serialize_pem());
    let mismatched = TlsFiles { client_key: other_key.clone(), ..tls.clone() };
    let Err(e) =
        WebhookClient::new(Duration::from_secs(1), &mismatched, DestinationPolicy::default())
    else {
        panic!("a client key that does not match its certificate was accepted")
    };
    let expected =
        format!("{} does not go with webhooks.client_cert: ", other_key.unwrap().display());
    assert!(e.to_string().starts_with(&format!("webhooks.client_key: {expected}")), "{e}");
    assert_eq!(mismatched.problems(), [e]);
    assert!(tls.problems().is_empty());

    let (port, trusted, trusted_task) =
        start_tls_receiver(pki.server.clone(), Some(pki.ca_der.clone())).await;
    let (rogue_port, rogue, rogue_task) = start_tls_receiver(pki.rogue_server.clone(), None).await;
    let by_name = subscribe(&store, format!("https://localhost:{port}/hook/by-name")).await;
    let by_address = subscribe(&store, format!("https://127.0.0.1:{port}/hook/by-address")).await;
    let untrusted = subscribe(&store, format!("https://localhost:{rogue_port}/hook/rogue")).await;

    let config = fast_config();
    let client =
        WebhookClient::new(config.request_timeout, &tls, DestinationPolicy::default()).unwrap();
    let metrics = Arc::new(DispatcherMetrics::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let dispatcher =
        tokio::spawn(run_dispatcher(store.clone(), config, client, metrics.clone(), shutdown_rx));
    let alert = raise_id(&store, "congestion", seg("viale-strozzi")).await;
    let event = store.outbox_events(0, 10).await.unwrap()[0].id;
    assert_eq!(store.outbox_events(0, 10).await.unwrap().len(), 1, "alert {alert} raised once");

    wait_for("both https deliveries recorded", Duration::from_secs(20), || async {
        let mut done = 0;
        for hook in [by_name, by_address] {
            let d = store.deliveries(hook, None, 10).await.unwrap();
            done += usize::from(d.len() == 1 && d[0].state == DeliveryState::Delivered);
        }
        (done == 2).then_some(())
    })
    .await;
    let mut seen = trusted.requests.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for ((hook, id, signed, peer), expected) in seen.iter().zip(["by-address", "by-name"]) {
        assert_eq!((hook.as_str(), *id, *signed), (expected, event, true));
        assert_eq!(peer.as_deref(), Some(pki.client_der.as_ref()), "the client certificate");
    }

    let error = retried_error(&store, untrusted, "the untrusted receiver's delivery retried").await;
    assert_eq!(
        error,
        format!(
            "cannot connect to localhost:{rogue_port}: invalid peer certificate: UnknownIssuer \
             (its certificate is not signed by a trusted CA: the system's, or webhooks.ca_file)"
        )
    );
    assert!(rogue.requests.lock().unwrap().is_empty(), "nothing posted past a failed handshake");
    assert!(rogue.failed_handshakes.load(Ordering::SeqCst) >= 2);
    assert_eq!(metrics.delivered.load(Ordering::SeqCst), 2);
    assert_eq!(metrics.refused.load(Ordering::SeqCst), 0);

    // Without the client certificate, the receiver asking for one refuses the handshake.
    let _ = shutdown_tx.send(true);
    tokio::time::timeout(Duration::from_secs(10), dispatcher).await.unwrap().unwrap();
    let anonymous = TlsFiles { ca_file: tls.ca_file.clone(), ..TlsFiles::default() };
    let config = fast_config();
    let client =
        WebhookClient::new(config.request_timeout, &anonymous, DestinationPolicy::default())
            .unwrap();
    let no_cert = subscribe(&store, format!("https://localhost:{port}/hook/no-cert")).await;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let dispatcher =
        tokio::spawn(run_dispatcher(store.clone(), config, client, metrics.clone(), shutdown_rx));
    raise_id(&store, "congestion", seg("lungarno-acciaiuoli")).await;
    let error = retried_error(&store, no_cert, "the delivery without a client certificate").await;
    assert_eq!(
        error,
        format!(
            "request failed at localhost:{port}: connection error: received fatal alert: \
             CertificateRequired (the receiver asks for a client certificate: \
             webhooks.client_cert and client_key)"
        )
    );
    assert!(trusted.requests.lock().unwrap().iter().all(|r| r.0 != "no-cert"));

    let _ = shutdown_tx.send(true);
    tokio::time::timeout(Duration::from_secs(10), dispatcher).await.unwrap().unwrap();
    trusted_task.abort();
    rogue_task.abort();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_outside_the_allow_list_are_refused_at_delivery_after_resolving_and_retried() {
    let db = TestDb::create().await.unwrap();
    let store = Store::connect(&db.url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let port = free_port();
    let receiver = Receiver::default();
    let (stop, server) = start_receiver(port, receiver.clone()).await;
    // Subscribed before the list was set (the API would refuse them now).
    let named = subscribe(&store, format!("http://localhost:{port}/hook/named")).await;
    let literal = subscribe(&store, format!("http://127.0.0.1:{port}/hook/literal")).await;

    // "localhost" passes a look at the URL text against a list of networks; the address it
    // resolves to at delivery does not.
    let config = fast_config();
    let metrics = Arc::new(DispatcherMetrics::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let strict = plain_client(config.request_timeout, &["10.0.0.0/8"]);
    let dispatcher = tokio::spawn(run_dispatcher(
        store.clone(),
        config.clone(),
        strict,
        metrics.clone(),
        shutdown_rx,
    ));
    raise_id(&store, "congestion", seg("viale-strozzi")).await;
    let event = store.outbox_events(0, 10).await.unwrap()[0].id;
    let error = retried_error(&store, named, "the named destination refused").await;
    assert!(
        error.starts_with(
            "destination refused: localhost resolves only to refused addresses: 127.0.0.1 is not \
             in the allowed destinations"
        ),
        "{error}"
    );
    let error = retried_error(&store, literal, "the address destination refused").await;
    assert_eq!(
        error,
        "destination refused: 127.0.0.1 is not in the allowed destinations \
         (webhooks.allowed_destinations)"
    );
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 0, "nothing reached the receiver");
    assert!(metrics.refused.load(Ordering::SeqCst) >= 4);
    assert_eq!(metrics.delivered.load(Ordering::SeqCst), 0);
    let _ = shutdown_tx.send(true);
    tokio::time::timeout(Duration::from_secs(10), dispatcher).await.unwrap().unwrap();

    // Allowed again: the pending deliveries go out on their next attempt.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let open = plain_client(config.request_timeout, &["127.0.0.1"]);
    let dispatcher =
        tokio::spawn(run_dispatcher(store.clone(), config, open, metrics.clone(), shutdown_rx));
    wait_for("both delivered once allowed", Duration::from_secs(20), || async {
        (receiver.distinct("named") == BTreeSet::from([event])
            && receiver.distinct("literal") == BTreeSet::from([event]))
        .then_some(())
    })
    .await;
    let _ = shutdown_tx.send(true);
    tokio::time::timeout(Duration::from_secs(10), dispatcher).await.unwrap().unwrap();
    for hook in [named, literal] {
        let d = store.deliveries(hook, None, 10).await.unwrap();
        assert_eq!(d[0].state, DeliveryState::Delivered);
        assert!(d[0].attempts >= 3, "{d:?}");
    }
    let _ = stop.send(());
    let _ = server.await;
    store.close().await;
}
