//! The transactional outbox and the webhook subscriptions it is delivered to.
//!
//! Invariants kept here:
//! - **Written with the change**: an `outbox` row is appended by [`pg_append`] or
//!   [`sqlite_append`] inside the transaction that makes the change it describes (an alert
//!   move, a device status change, a command result), so an event exists if and only if
//!   its change committed.
//! - **Fan-out once**: [`crate::Store::fan_out_outbox`] takes rows not yet fanned out
//!   (`FOR UPDATE SKIP LOCKED` on PostgreSQL), inserts one `webhook_deliveries` row per
//!   enabled subscription whose type filter matches, and marks the row, in one
//!   transaction. A subscription receives the events appended after it was created.
//! - **One in flight per (subscription, subject), in order**: a delivery is due only when
//!   no earlier delivery of the same subject to the same subscription is still pending,
//!   and claiming it moves its `next_attempt_at` forward by a lease (rows locked with
//!   `SKIP LOCKED`, so replicas never claim the same delivery while the lease runs). A
//!   process that dies mid-delivery leaves the lease to expire and the delivery is tried
//!   again: delivery is at least once, and receivers drop duplicates by event id (the
//!   outbox id). A dead delivery no longer holds back its subject's later events;
//!   redelivering it sends it again after them.

use serde::{Deserialize, Serialize};
use telemetry::EventTime;

use crate::{Store, StoreError};

/// CloudEvents `type` values of the events the outbox carries.
pub mod event_type {
    pub const ALERT_RAISED: &str = "it.firenze.sccr.alert.raised";
    pub const ALERT_ACKNOWLEDGED: &str = "it.firenze.sccr.alert.acknowledged";
    pub const ALERT_CLEARED: &str = "it.firenze.sccr.alert.cleared";
    /// The condition ended while the alert was unacknowledged (ISA-18.2 "returned").
    pub const ALERT_RETURNED: &str = "it.firenze.sccr.alert.returned";
    pub const DEVICE_ONLINE: &str = "it.firenze.sccr.device.online";
    pub const DEVICE_OFFLINE: &str = "it.firenze.sccr.device.offline";
    pub const COMMAND_ACKED: &str = "it.firenze.sccr.command.acked";
    pub const COMMAND_REJECTED: &str = "it.firenze.sccr.command.rejected";
    pub const COMMAND_FAILED: &str = "it.firenze.sccr.command.failed";
    pub const COMMAND_EXPIRED: &str = "it.firenze.sccr.command.expired";
}

/// An event to append to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// The CloudEvents type (see [`event_type`]).
    pub event_type: String,
    /// What the event is about (`alert/42`, `device/loop-1`, `command/<id>`): deliveries of
    /// one subject to one subscription keep their order.
    pub subject: String,
    /// When the change happened.
    pub time: EventTime,
    pub data: serde_json::Value,
}

/// An event as stored, with its id (the CloudEvents `id`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxRecord {
    pub id: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub subject: String,
    pub time: EventTime,
    pub data: serde_json::Value,
}

/// The payload shape a subscription receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum WebhookFormat {
    /// CloudEvents 1.0, structured JSON mode.
    #[default]
    #[serde(rename = "cloudevents")]
    CloudEvents,
    /// CloudEvents whose `data` is an NGSI-LD entity (FIWARE Smart Data Models).
    #[serde(rename = "ngsi-ld")]
    NgsiLd,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CloudEvents => "cloudevents",
            Self::NgsiLd => "ngsi-ld",
        }
    }

    pub(crate) fn parse(s: String) -> Result<Self, StoreError> {
        match s.as_str() {
            "cloudevents" => Ok(Self::CloudEvents),
            "ngsi-ld" => Ok(Self::NgsiLd),
            _ => Err(StoreError::Corrupt { what: "webhook format", value: s }),
        }
    }
}

/// What waits in the outbox ([`Store::outbox_backlog`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutboxBacklog {
    pub events_to_fan_out: u64,
    pub deliveries_pending: u64,
    /// The time of the oldest event with a pending delivery.
    pub oldest_pending: Option<EventTime>,
}

/// A subscription to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWebhook {
    pub url: String,
    /// Event types delivered: exact types, or prefixes ending in `*`; empty for all.
    pub types: Vec<String>,
    pub secret: String,
    pub enabled: bool,
    pub format: WebhookFormat,
}

/// Changes to a subscription; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub types: Option<Vec<String>>,
    pub secret: Option<String>,
    pub enabled: Option<bool>,
    pub format: Option<WebhookFormat>,
}

/// A stored subscription. The secret is never serialised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookRecord {
    pub id: i64,
    pub url: String,
    pub types: Vec<String>,
    #[serde(skip)]
    pub secret: String,
    pub enabled: bool,
    pub format: WebhookFormat,
    pub created_at: EventTime,
}

impl WebhookRecord {
    /// Whether events of `event_type` go to this subscription.
    pub fn wants(&self, event_type: &str) -> bool {
        type_matches(&self.types, event_type)
    }
}

/// Whether `event_type` passes a type filter (empty: everything; `prefix*`: a prefix).
pub fn type_matches(types: &[String], event_type: &str) -> bool {
    types.is_empty()
        || types.iter().any(|t| match t.strip_suffix('*') {
            Some(prefix) => event_type.starts_with(prefix),
            None => t == event_type,
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

/// One event's delivery to one subscription.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRecord {
    pub webhook: i64,
    /// The outbox id, i.e. the CloudEvents `id`.
    pub event: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub subject: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: EventTime,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<EventTime>,
}

/// A delivery claimed for an attempt, with what is needed to make it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDelivery {
    pub webhook: WebhookRecord,
    pub event: OutboxRecord,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx.
    Delivered { status: u16 },
    /// The attempt failed; try again at `retry_at`, or give up (dead) when `None`.
    Failed { status: Option<u16>, error: String, retry_at: Option<EventTime> },
}

pub(crate) fn corrupt_json(what: &'static str, text: &str) -> StoreError {
    StoreError::Corrupt { what, value: text.chars().take(80).collect() }
}

/// An HTTP status as stored (a nullable integer).
pub(crate) fn status_of(v: Option<i64>) -> Option<u16> {
    v.and_then(|s| u16::try_from(s).ok())
}

pub(crate) fn delivery_state(s: String) -> Result<DeliveryState, StoreError> {
    DeliveryState::parse(&s).ok_or(StoreError::Corrupt { what: "delivery state", value: s })
}

pub use crate::pg::outbox::append as pg_append;
pub use crate::sqlite::outbox::append as sqlite_append;

/// What an attempt writes to its delivery row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeliveryUpdate {
    pub state: DeliveryState,
    pub status: Option<u16>,
    /// At most 500 characters.
    pub error: Option<String>,
    pub next: EventTime,
    pub delivered: Option<EventTime>,
}

impl DeliveryUpdate {
    fn of(outcome: &AttemptOutcome, at: EventTime) -> Self {
        let (state, status, error, next, delivered) = match outcome {
            AttemptOutcome::Delivered { status } => {
                (DeliveryState::Delivered, Some(*status), None, at, Some(at))
            }
            AttemptOutcome::Failed { status, error, retry_at: Some(t) } => {
                (DeliveryState::Pending, *status, Some(error.as_str()), *t, None)
            }
            AttemptOutcome::Failed { status, error, retry_at: None } => {
                (DeliveryState::Dead, *status, Some(error.as_str()), at, None)
            }
        };
        let error = error.map(|e| e.chars().take(500).collect::<String>());
        Self { state, status, error, next, delivered }
    }
}

/// The outbox and webhook subscriptions: see the module doc for the invariants. The SQL is
/// each backend's (`pg/outbox.rs`, `sqlite/outbox.rs`).
impl Store {
    /// Append an event on its own (changes described by events append them in their own
    /// transactions; this is for events with no other change).
    pub async fn append_outbox(&self, event: &OutboxEvent) -> Result<i64, StoreError> {
        dispatch!(self, s => s.append_outbox(event).await)
    }

    /// Events with an id above `after`, oldest first.
    pub async fn outbox_events(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        dispatch!(self, s => s.outbox_events(after, limit).await)
    }

    pub async fn create_webhook(&self, w: &NewWebhook) -> Result<WebhookRecord, StoreError> {
        dispatch!(self, s => s.create_webhook(w).await)
    }

    pub async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        dispatch!(self, s => s.webhooks().await)
    }

    pub async fn webhook(&self, id: i64) -> Result<Option<WebhookRecord>, StoreError> {
        Ok(self.webhooks().await?.into_iter().find(|w| w.id == id))
    }

    /// Apply a patch; `None` if there is no such subscription.
    pub async fn update_webhook(
        &self,
        id: i64,
        p: &WebhookPatch,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        let Some(mut w) = self.webhook(id).await? else {
            return Ok(None);
        };
        if let Some(url) = &p.url {
            w.url.clone_from(url);
        }
        if let Some(types) = &p.types {
            w.types.clone_from(types);
        }
        if let Some(secret) = &p.secret {
            w.secret.clone_from(secret);
        }
        if let Some(enabled) = p.enabled {
            w.enabled = enabled;
        }
        if let Some(format) = p.format {
            w.format = format;
        }
        let done = dispatch!(self, s => s.update_webhook(&w).await)?;
        Ok((done > 0).then_some(w))
    }

    /// Delete a subscription and its deliveries; whether it existed.
    pub async fn delete_webhook(&self, id: i64) -> Result<bool, StoreError> {
        let done = dispatch!(self, s => s.delete_webhook(id).await)?;
        Ok(done > 0)
    }

    /// Fan out up to `limit` events not fanned out yet to the enabled subscriptions whose
    /// filter matches them; returns the number of events fanned out.
    pub async fn fan_out_outbox(&self, limit: usize) -> Result<usize, StoreError> {
        let hooks: Vec<WebhookRecord> =
            self.webhooks().await?.into_iter().filter(|w| w.enabled).collect();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        dispatch!(self, s => s.fan_out_outbox(&hooks, limit).await)
    }

    /// Claim up to `limit` due deliveries for an attempt: each is the earliest pending
    /// delivery of its subject to its subscription, and is held for `lease` (its
    /// `next_attempt_at` moves to `now + lease`) so no other dispatcher takes it meanwhile.
    /// Oldest event first.
    pub async fn claim_deliveries(
        &self,
        now: EventTime,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let until = EventTime(
            now.millis().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)),
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut out = dispatch!(self, s => s.claim_deliveries(now, until, limit).await)?;
        out.sort_by_key(|c| c.event.id);
        Ok(out)
    }

    /// Record the outcome of an attempt at a claimed delivery.
    pub async fn finish_delivery(
        &self,
        webhook: i64,
        event: i64,
        outcome: &AttemptOutcome,
        at: EventTime,
    ) -> Result<(), StoreError> {
        let update = DeliveryUpdate::of(outcome, at);
        dispatch!(self, s => s.finish_delivery(webhook, event, &update).await)
    }

    /// Deliveries of one subscription, newest event first, optionally in one state.
    pub async fn deliveries(
        &self,
        webhook: i64,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        dispatch!(self, s => s.deliveries(webhook, state, limit).await)
    }

    /// What waits in the outbox: events not fanned out yet, deliveries pending, and the
    /// time of the oldest event with a pending delivery.
    pub async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let (events, deliveries, oldest) = dispatch!(self, s => s.outbox_backlog().await)?;
        Ok(OutboxBacklog {
            events_to_fan_out: u64::try_from(events).unwrap_or(0),
            deliveries_pending: u64::try_from(deliveries).unwrap_or(0),
            oldest_pending: oldest.map(EventTime),
        })
    }

    /// Delete events older than `before` that every subscription has received (events with
    /// a pending or dead delivery are kept, so they can still be delivered or redelivered),
    /// with their deliveries. Returns how many events.
    pub async fn prune_outbox(&self, before: EventTime) -> Result<u64, StoreError> {
        dispatch!(self, s => s.prune_outbox(before).await)
    }

    /// Make dead deliveries of a subscription pending again, with a fresh attempt count:
    /// one (`event`) or all of them. Returns how many.
    pub async fn redeliver(
        &self,
        webhook: i64,
        event: Option<i64>,
        now: EventTime,
    ) -> Result<u64, StoreError> {
        dispatch!(self, s => s.redeliver(webhook, event, now).await)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::StoreOptions;

    fn event(subject: &str, n: i64) -> OutboxEvent {
        OutboxEvent {
            event_type: event_type::ALERT_RAISED.into(),
            subject: subject.into(),
            time: EventTime(n),
            data: json!({ "n": n }),
        }
    }

    async fn store_with_hook(types: Vec<String>) -> (Store, WebhookRecord) {
        let store = Store::connect("sqlite::memory:", &StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        let hook = store
            .create_webhook(&NewWebhook {
                url: "http://127.0.0.1:9/h".into(),
                types,
                secret: "s".repeat(16),
                enabled: true,
                format: WebhookFormat::CloudEvents,
            })
            .await
            .unwrap();
        (store, hook)
    }

    fn ids(c: &[ClaimedDelivery]) -> Vec<i64> {
        c.iter().map(|c| c.event.id).collect()
    }

    #[test]
    fn type_filters_take_exact_types_and_prefixes() {
        assert!(type_matches(&[], "it.firenze.sccr.alert.raised"));
        let f = vec![
            "it.firenze.sccr.command.*".to_owned(),
            "it.firenze.sccr.device.offline".to_owned(),
        ];
        assert!(type_matches(&f, "it.firenze.sccr.command.expired"));
        assert!(type_matches(&f, "it.firenze.sccr.device.offline"));
        assert!(!type_matches(&f, "it.firenze.sccr.device.online"));
    }

    /// One delivery in flight per subject, in outbox order: a later event of a subject is
    /// not due while an earlier one is pending (claimed, or waiting for its retry); other
    /// subjects are not held back; a dead delivery no longer holds its subject.
    #[tokio::test]
    async fn deliveries_are_claimed_one_per_subject_in_order() {
        let (store, hook) = store_with_hook(vec![]).await;
        let a1 = store.append_outbox(&event("alert/1", 1)).await.unwrap();
        let b1 = store.append_outbox(&event("alert/2", 2)).await.unwrap();
        let a2 = store.append_outbox(&event("alert/1", 3)).await.unwrap();
        let a3 = store.append_outbox(&event("alert/1", 4)).await.unwrap();
        assert_eq!(store.fan_out_outbox(100).await.unwrap(), 4);
        assert_eq!(store.fan_out_outbox(100).await.unwrap(), 0, "fanned out once");
        let lease = Duration::from_secs(30);
        let now = EventTime::now();
        let first = store.claim_deliveries(now, lease, 10).await.unwrap();
        assert_eq!(ids(&first), [a1, b1]);
        assert!(
            store.claim_deliveries(now, lease, 10).await.unwrap().is_empty(),
            "claimed ones are leased, later ones wait"
        );
        // a1 fails and waits for its retry: a2 still waits behind it.
        let retry = EventTime(now.millis() + 1_000);
        store
            .finish_delivery(
                hook.id,
                a1,
                &AttemptOutcome::Failed {
                    status: Some(503),
                    error: "503".into(),
                    retry_at: Some(retry),
                },
                now,
            )
            .await
            .unwrap();
        store
            .finish_delivery(hook.id, b1, &AttemptOutcome::Delivered { status: 204 }, now)
            .await
            .unwrap();
        assert!(store.claim_deliveries(now, lease, 10).await.unwrap().is_empty());
        let again = store.claim_deliveries(retry, lease, 10).await.unwrap();
        assert_eq!(ids(&again), [a1]);
        assert_eq!(again[0].attempts, 1);
        // a1 dies: a2 is due.
        store
            .finish_delivery(
                hook.id,
                a1,
                &AttemptOutcome::Failed { status: None, error: "refused".into(), retry_at: None },
                retry,
            )
            .await
            .unwrap();
        assert_eq!(ids(&store.claim_deliveries(retry, lease, 10).await.unwrap()), [a2]);
        store
            .finish_delivery(hook.id, a2, &AttemptOutcome::Delivered { status: 200 }, retry)
            .await
            .unwrap();
        assert_eq!(ids(&store.claim_deliveries(retry, lease, 10).await.unwrap()), [a3]);
        let dead = store.deliveries(hook.id, Some(DeliveryState::Dead), 10).await.unwrap();
        assert_eq!(dead.iter().map(|d| (d.event, d.attempts)).collect::<Vec<_>>(), [(a1, 2)]);
        assert_eq!(store.redeliver(hook.id, Some(a1), retry).await.unwrap(), 1);
        assert_eq!(
            ids(&store.claim_deliveries(retry, lease, 10).await.unwrap()),
            [a1],
            "redelivered, after its subject's later events"
        );
        // Pruning keeps events not yet delivered everywhere.
        store
            .finish_delivery(hook.id, a3, &AttemptOutcome::Delivered { status: 200 }, retry)
            .await
            .unwrap();
        assert_eq!(store.prune_outbox(EventTime(i64::MAX)).await.unwrap(), 3, "b1, a2, a3");
        assert_eq!(
            store.outbox_events(0, 10).await.unwrap().iter().map(|e| e.id).collect::<Vec<_>>(),
            [a1]
        );
    }

    #[tokio::test]
    async fn subscriptions_get_only_matching_events_appended_after_them() {
        let (store, hook) = store_with_hook(vec!["it.firenze.sccr.device.*".into()]).await;
        store.append_outbox(&event("alert/1", 1)).await.unwrap();
        let d = store
            .append_outbox(&OutboxEvent {
                event_type: event_type::DEVICE_OFFLINE.into(),
                subject: "device/x".into(),
                time: EventTime(2),
                data: json!({}),
            })
            .await
            .unwrap();
        store.fan_out_outbox(100).await.unwrap();
        let claimed =
            store.claim_deliveries(EventTime::now(), Duration::from_secs(1), 10).await.unwrap();
        assert_eq!(ids(&claimed), [d]);
        assert_eq!(claimed[0].webhook.secret, "s".repeat(16));
        assert_eq!(claimed[0].event.data, json!({}));
        let patched = store
            .update_webhook(
                hook.id,
                &WebhookPatch { enabled: Some(false), ..WebhookPatch::default() },
            )
            .await
            .unwrap()
            .unwrap();
        assert!(!patched.enabled);
        assert!(store.delete_webhook(hook.id).await.unwrap());
        assert!(store.webhooks().await.unwrap().is_empty());
    }
}
