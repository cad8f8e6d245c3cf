//! The outbox dispatcher: fans new outbox events out to the subscriptions, claims due
//! deliveries (the store keeps one in flight per subscription and subject, in order, and
//! shares them between replicas), POSTs each as a signed CloudEvent, and records the
//! outcome: delivered on a 2xx, else retried after an exponential backoff with full jitter,
//! dead after `backoff.max_attempts` attempts (an admin can redeliver). Delivery is at
//! least once; the event id is stable, so receivers drop duplicates. Receivers are reached
//! over http or https ([`WebhookClient`]); a destination the allow-list refuses, or a
//! receiver whose certificate is not trusted, is a failed attempt whose error is recorded
//! on the delivery and retried like any other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use store::{AttemptOutcome, ClaimedDelivery, Store};
use telemetry::metrics::{self, Collector, Encoder, Unit};
use telemetry::EventTime;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::backoff::Backoff;
use crate::cloudevents;
use crate::http::{PostError, WebhookClient};
use crate::signature::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};

#[derive(Debug, Clone, PartialEq)]
pub struct DispatcherConfig {
    /// The CloudEvents `source` of every event.
    pub source: String,
    /// How often the outbox is looked at when there was nothing to do.
    pub poll_interval: Duration,
    /// Longest wait for a receiver's answer (connect included).
    pub request_timeout: Duration,
    pub backoff: Backoff,
    /// Deliveries attempted at once.
    pub concurrency: usize,
    /// Events delivered everywhere are deleted from the outbox after this long.
    pub retention: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            source: "urn:sccr:firenze".into(),
            poll_interval: Duration::from_millis(500),
            request_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            concurrency: 16,
            retention: Duration::from_secs(7 * 86_400),
        }
    }
}

impl DispatcherConfig {
    /// How long a claimed delivery is held: longer than any attempt can take.
    fn lease(&self) -> Duration {
        self.request_timeout * 2 + Duration::from_secs(5)
    }
}

#[derive(Debug, Default)]
pub struct DispatcherMetrics {
    pub fanned_out: AtomicU64,
    pub attempts: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    /// Attempts refused by the destination policy (also counted in `failed` or `dead`).
    pub refused: AtomicU64,
    pub dead: AtomicU64,
    pub store_errors: AtomicU64,
    /// The outbox's backlog when last sampled (every [`BACKLOG_EVERY`]).
    backlog: std::sync::Mutex<store::OutboxBacklog>,
}

/// How often the dispatcher samples the outbox's backlog for `/metrics`.
pub const BACKLOG_EVERY: Duration = Duration::from_secs(5);

impl DispatcherMetrics {
    fn set_backlog(&self, b: store::OutboxBacklog) {
        *self.backlog.lock().unwrap_or_else(|e| e.into_inner()) = b;
    }

    pub fn backlog(&self) -> store::OutboxBacklog {
        *self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Collector for DispatcherMetrics {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let e = &mut e;
        let counters = [
            ("webhook_fanned_out", "Deliveries created from outbox events.", &self.fanned_out),
            ("webhook_attempts", "Delivery attempts.", &self.attempts),
            ("webhook_delivered", "Deliveries a receiver answered with a 2xx.", &self.delivered),
            ("webhook_failed", "Failed attempts to be retried.", &self.failed),
            (
                "webhook_refused",
                "Attempts refused by webhooks.allowed_destinations.",
                &self.refused,
            ),
            ("webhook_dead", "Deliveries dead after their last attempt.", &self.dead),
            (
                "webhook_store_errors",
                "Dispatcher passes that met a store error.",
                &self.store_errors,
            ),
        ];
        for (name, help, value) in counters {
            metrics::counter(e, name, help, value.load(Ordering::Relaxed))?;
        }
        let b = self.backlog();
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        metrics::gauge(
            e,
            "outbox_events_to_fan_out",
            "Outbox events not yet turned into deliveries (sampled every 5 s).",
            count(b.events_to_fan_out),
        )?;
        metrics::gauge(
            e,
            "webhook_deliveries_pending",
            "Webhook deliveries waiting for a first or further attempt (sampled every 5 s).",
            count(b.deliveries_pending),
        )?;
        let age = b.oldest_pending.map_or(0.0, |t| {
            (EventTime::now().millis().saturating_sub(t.millis())).max(0) as f64 / 1e3
        });
        metrics::gauge_f64(
            e,
            "webhook_oldest_pending_age",
            "Age of the oldest outbox event with a pending delivery (0 when none).",
            Some(&Unit::Seconds),
            age,
        )
    }
}

/// How often delivered events past the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Run until `shutdown` turns true, posting with `client` (see [`WebhookClient::new`]).
pub async fn run_dispatcher(
    store: Store,
    config: DispatcherConfig,
    client: WebhookClient,
    metrics: Arc<DispatcherMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut rng = SmallRng::from_os_rng();
    let mut next_prune = tokio::time::Instant::now();
    let mut next_backlog = next_prune;
    loop {
        if tokio::time::Instant::now() >= next_prune {
            next_prune += PRUNE_EVERY;
            let before =
                EventTime(EventTime::now().millis().saturating_sub(
                    i64::try_from(config.retention.as_millis()).unwrap_or(i64::MAX),
                ));
            match store.prune_outbox(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "pruned delivered outbox events"),
                Err(e) => tracing::warn!(error = %e, "cannot prune the outbox"),
            }
        }
        if tokio::time::Instant::now() >= next_backlog {
            next_backlog += BACKLOG_EVERY;
            match store.outbox_backlog().await {
                Ok(b) => metrics.set_backlog(b),
                Err(e) => tracing::warn!(error = %e, "cannot read the outbox backlog"),
            }
        }
        let stopping = *shutdown.borrow();
        if stopping {
            break;
        }
        let busy = match pass(&store, &config, &client, &metrics, &mut rng).await {
            Ok(n) => n > 0,
            Err(e) => {
                metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "webhook dispatcher: store error; retrying");
                false
            }
        };
        if !busy {
            tokio::select! {
                () = tokio::time::sleep(config.poll_interval) => {}
                changed = shutdown.changed() => if changed.is_err() { break },
            }
        }
    }
    tracing::info!("webhook dispatcher stopped");
}

/// One pass: fan out, claim, deliver, record. Returns how many deliveries were attempted.
async fn pass(
    store: &Store,
    config: &DispatcherConfig,
    client: &WebhookClient,
    metrics: &DispatcherMetrics,
    rng: &mut SmallRng,
) -> Result<usize, store::StoreError> {
    loop {
        let n = store.fan_out_outbox(500).await?;
        metrics.fanned_out.fetch_add(n as u64, Ordering::Relaxed);
        if n < 500 {
            break;
        }
    }
    let claimed =
        store.claim_deliveries(EventTime::now(), config.lease(), config.concurrency.max(1)).await?;
    let count = claimed.len();
    let mut attempts = JoinSet::new();
    for c in claimed {
        let (client, source) = (client.clone(), config.source.clone());
        attempts.spawn(async move {
            let result = attempt(&client, &source, &c).await;
            (c, result)
        });
    }
    while let Some(done) = attempts.join_next().await {
        let Ok((c, result)) = done else { continue };
        metrics.attempts.fetch_add(1, Ordering::Relaxed);
        if let Err(PostError::Refused(error)) = &result {
            metrics.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(webhook = c.webhook.id, url = %c.webhook.url, %error, "webhook destination refused");
        }
        let outcome = outcome_of(
            result.map_err(PostError::message),
            c.attempts + 1,
            &config.backoff,
            EventTime::now(),
            rng.random::<f64>(),
        );
        match &outcome {
            AttemptOutcome::Delivered { .. } => metrics.delivered.fetch_add(1, Ordering::Relaxed),
            AttemptOutcome::Failed { retry_at: Some(_), .. } => {
                metrics.failed.fetch_add(1, Ordering::Relaxed)
            }
            AttemptOutcome::Failed { retry_at: None, error, .. } => {
                tracing::warn!(webhook = c.webhook.id, event = c.event.id, %error, "webhook delivery is dead after its last attempt");
                metrics.dead.fetch_add(1, Ordering::Relaxed)
            }
        };
        store.finish_delivery(c.webhook.id, c.event.id, &outcome, EventTime::now()).await?;
    }
    Ok(count)
}

/// The request of one delivery: the body and its headers.
pub fn request(
    c: &ClaimedDelivery,
    source: &str,
    now_secs: i64,
) -> (Bytes, Vec<(&'static str, String)>) {
    let body = Bytes::from(cloudevents::event(&c.event, source, c.webhook.format).to_string());
    let headers = vec![
        ("content-type", cloudevents::CONTENT_TYPE.to_owned()),
        (TIMESTAMP_HEADER, now_secs.to_string()),
        (SIGNATURE_HEADER, sign(c.webhook.secret.as_bytes(), now_secs, &body)),
        ("x-sccr-delivery-attempt", (c.attempts + 1).to_string()),
        ("user-agent", concat!("sccr-webhooks/", env!("CARGO_PKG_VERSION")).to_owned()),
    ];
    (body, headers)
}

async fn attempt(
    client: &WebhookClient,
    source: &str,
    c: &ClaimedDelivery,
) -> Result<u16, PostError> {
    let (body, headers) = request(c, source, EventTime::now().millis().div_euclid(1000));
    client.post(&c.webhook.url, &headers, body).await
}

/// What an attempt's result means for the delivery, `attempts` counting this one.
pub fn outcome_of(
    result: Result<u16, String>,
    attempts: u32,
    backoff: &Backoff,
    now: EventTime,
    unit: f64,
) -> AttemptOutcome {
    let (status, error) = match result {
        Ok(s) if (200..300).contains(&s) => return AttemptOutcome::Delivered { status: s },
        Ok(s) => (Some(s), format!("receiver answered {s}")),
        Err(e) => (None, e),
    };
    let retry_at = backoff.delay(attempts, unit).map(|d| {
        EventTime(now.millis().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    });
    AttemptOutcome::Failed { status, error, retry_at }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use store::{OutboxRecord, WebhookFormat, WebhookRecord};

    use super::*;
    use crate::signature::verify;

    #[test]
    fn outcomes_follow_the_status_and_the_attempts_left() {
        let b =
            Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(8), max_attempts: 3 };
        let now = EventTime(1_000_000);
        assert_eq!(outcome_of(Ok(204), 1, &b, now, 0.5), AttemptOutcome::Delivered { status: 204 });
        assert_eq!(
            outcome_of(Ok(503), 2, &b, now, 1.0),
            AttemptOutcome::Failed {
                status: Some(503),
                error: "receiver answered 503".into(),
                retry_at: Some(EventTime(1_002_000))
            }
        );
        assert!(matches!(
            outcome_of(Err("refused".into()), 3, &b, now, 1.0),
            AttemptOutcome::Failed { status: None, retry_at: None, .. }
        ));
    }

    #[test]
    fn metrics_render_every_counter() {
        let m = Arc::new(DispatcherMetrics::default());
        m.refused.store(3, Ordering::Relaxed);
        let out = telemetry::metrics::exposition(Box::new(m));
        assert_eq!(out.lines().filter(|l| l.starts_with("# TYPE sccr_webhook_")).count(), 9);
        assert!(out.contains("\nsccr_webhook_refused_total 3\n"), "{out}");
        assert!(out.contains("\nsccr_webhook_delivered_total 0\n"), "{out}");
    }

    #[test]
    fn requests_are_signed_cloudevents() {
        let c = ClaimedDelivery {
            webhook: WebhookRecord {
                id: 1,
                url: "http://127.0.0.1:1/hook".into(),
                types: vec![],
                secret: "s3cret".into(),
                enabled: true,
                format: WebhookFormat::CloudEvents,
                created_at: EventTime(0),
            },
            event: OutboxRecord {
                id: 9,
                event_type: "it.firenze.sccr.alert.raised".into(),
                subject: "alert/1".into(),
                time: EventTime(0),
                data: json!({}),
            },
            attempts: 2,
        };
        let (body, headers) = request(&c, "urn:test", 1_700_000_000);
        let h = |k: &str| headers.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()).unwrap();
        assert!(verify(b"s3cret", 1_700_000_000, &body, &h(SIGNATURE_HEADER)));
        assert_eq!(h("x-sccr-delivery-attempt"), "3");
        assert!(h("content-type").starts_with("application/cloudevents+json"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], "9");
        assert_eq!(v["source"], "urn:test");
    }
}
