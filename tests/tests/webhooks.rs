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
//!
//! The outbox scenario is here, https and the allow-list in `webhooks/tls.rs`, the
//! commands in `webhooks/commands.rs`, road operations' events (CloudEvents and NGSI-LD
//! `Alert`s) in `webhooks/operations.rs`.

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
#[path = "webhooks/commands.rs"]
mod commands;
#[path = "webhooks/operations.rs"]
mod operations;
#[path = "webhooks/tls.rs"]
mod tls;

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
