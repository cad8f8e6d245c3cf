//! The alert sink: stores, in order, what the stream's alert engine emits, then shows it
//! live. Wiring, and the one mapping between the engine's alerts and the store's
//! ([`new_alert`]); the states, the transition table and the alert object are the
//! contract's (`telemetry::alert`), shared by the engine, the store and the API.
//!
//! - A raise opens a row (`raise_alert`). If the store already holds an open alert for the
//!   same (rule, subject) — opened by another replica, or before a crash — nothing is
//!   written and the engine's alert is mapped onto that row: never a second alert.
//! - Engine alert ids are mapped to store ids in memory ([`AlertIds`]); a miss (after a
//!   restart) is resolved by the key, since at most one alert per key is open in the store.
//! - Automatic clears are stored with `by` = NULL and the engine's note. A move the store
//!   refuses because an operator got there first (clear after a manual clear) is dropped.
//! - A checkpoint (the engine's exported state) is saved once every output queued before
//!   it is stored, so a saved state never holds an alert the store was not asked to open.
//!   It comes in parts (`stream_state_parts`: `head`, `book`, `device/<id>`,
//!   `segment/<id>`), only those changed since the previous checkpoint, written chunk by
//!   chunk in one transaction committed at its end. One that fails is rolled back whole
//!   and not retried: the sink sets `checkpoint_lost` and the stream's next one is full;
//!   incremental ones queued before it are not saved, as they build on the lost one.
//!   [`load_engine_state`] assembles the parts (or reads the whole document an earlier
//!   version saved in `stream_state`).
//! - Transient store errors are retried with backoff, so nothing is skipped while the
//!   database restarts; other errors are logged and counted, and the sink goes on.
//!
//! The parts: `restore` (loading the saved state at start, reconciling it with the
//! store), `checkpoint` (saving checkpoints, sweeping expired shelves); storing the
//! engine's outputs is here.

mod checkpoint;
mod flags;
mod restore;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use store::{
    AlertChange, AlertFilter, AlertMove, AlertState, NewAlert, RaiseOutcome, StateSave, Store,
    StoreError, Suppression,
};
use stream::alert::Suppressed;
use stream::{Alert, AlertId, AlertKey, AlertOutput, AlertSinkItem, LiveHub};
use telemetry::EventTime;
use tokio::sync::mpsc;

pub use restore::{load_engine_state, reconcile, state_key};

use crate::metrics::AlertSinkMetrics;

/// The row to open for an alert the engine raised; `suppressed` is its designed
/// suppression with the suppressing alert's store id.
pub fn new_alert(a: &Alert, suppressed: Option<Suppression>) -> NewAlert {
    NewAlert {
        rule: a.key.rule.as_str().to_owned(),
        subject: a.key.subject.clone(),
        kind: a.kind,
        severity: a.severity,
        message: a.message.clone(),
        value: a.value.is_finite().then_some(a.value),
        since: a.since,
        raised_at: a.raised_at,
        members: a.members.max(1),
        code: a.code,
        params: a.params.clone(),
        suppressed,
    }
}

/// Engine alert id → store alert id, for the alerts this process has seen open.
#[derive(Debug, Default)]
pub struct AlertIds(HashMap<AlertId, i64>);

impl AlertIds {
    pub fn insert(&mut self, engine: AlertId, store: i64) {
        self.0.insert(engine, store);
    }

    pub fn get(&self, engine: AlertId) -> Option<i64> {
        self.0.get(&engine).copied()
    }

    pub fn remove(&mut self, engine: AlertId) {
        self.0.remove(&engine);
    }
}

pub struct AlertSink {
    pub store: Store,
    pub hub: Arc<LiveHub>,
    pub state_key: String,
    pub metrics: Arc<AlertSinkMetrics>,
    pub ids: AlertIds,
    /// Set when a checkpoint could not be saved; the stream's next one is then full.
    pub checkpoint_lost: Arc<AtomicBool>,
    /// The checkpoint being saved (between its begin and its end).
    saving: Option<StateSave>,
    /// A checkpoint was lost: incremental ones build on it, so none is saved until a full
    /// one is (one may already be queued when the loss is noticed).
    need_full: bool,
}

impl AlertSink {
    pub fn new(
        store: Store,
        hub: Arc<LiveHub>,
        state_key: String,
        metrics: Arc<AlertSinkMetrics>,
        checkpoint_lost: Arc<AtomicBool>,
    ) -> Self {
        Self {
            store,
            hub,
            state_key,
            metrics,
            ids: AlertIds::default(),
            checkpoint_lost,
            saving: None,
            need_full: false,
        }
    }

    /// Run until the stream closes the queue.
    #[tracing::instrument(name = "alert_sink", skip_all)]
    pub async fn run(mut self, mut input: mpsc::Receiver<AlertSinkItem>) {
        while let Some(item) = input.recv().await {
            if !matches!(item, AlertSinkItem::Output(_) | AlertSinkItem::Flags(_)) {
                self.checkpoint(&item).await;
                if matches!(item, AlertSinkItem::CheckpointEnd) {
                    self.sweep_shelves(EventTime::now()).await;
                }
                continue;
            }
            let mut backoff = Duration::from_millis(50);
            loop {
                match self.apply(&item).await {
                    Ok(()) => break,
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "store unavailable; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => {
                        self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "cannot store an alert change; skipped");
                        break;
                    }
                }
            }
        }
        tracing::info!("alert sink drained");
    }

    /// The store id of the engine's alert: mapped, or the open alert of its key.
    async fn store_id(&mut self, alert: &Alert) -> Result<Option<i64>, StoreError> {
        self.store_id_of(alert.id, &alert.key).await
    }

    async fn store_id_of(
        &mut self,
        engine: AlertId,
        key: &AlertKey,
    ) -> Result<Option<i64>, StoreError> {
        if let Some(id) = self.ids.get(engine) {
            return Ok(Some(id));
        }
        let filter = AlertFilter {
            rule: Some(key.rule.as_str().to_owned()),
            subject: Some(key.subject.clone()),
            limit: 1,
            ..AlertFilter::open()
        };
        let found = self.store.alerts(&filter).await?.first().map(|r| r.id);
        if let Some(id) = found {
            self.ids.insert(engine, id);
        }
        Ok(found)
    }

    /// The engine's suppression with the suppressing alert's store id.
    async fn store_suppression(&mut self, s: &Suppressed) -> Result<Suppression, StoreError> {
        let by_alert = match (s.by_alert, &s.by_key) {
            (Some(id), Some(key)) => self.store_id_of(id, key).await?,
            _ => None,
        };
        Ok(Suppression { reason: s.reason, by_alert, by_operation: s.by_operation.clone() })
    }

    async fn apply(&mut self, item: &AlertSinkItem) -> Result<(), StoreError> {
        let m = self.metrics.clone();
        if matches!(item, AlertSinkItem::Output(_)) && self.saving.is_some() {
            // Never queued inside a checkpoint; if it were, the open transaction could
            // block this write (SQLite): give the checkpoint up.
            self.checkpoint_failed(&StoreError::Corrupt {
                what: "alert sink queue",
                value: "an alert change inside a checkpoint".to_owned(),
            });
        }
        match item {
            AlertSinkItem::CheckpointBegin(_)
            | AlertSinkItem::CheckpointParts(_)
            | AlertSinkItem::CheckpointEnd => self.checkpoint(item).await,
            AlertSinkItem::Flags(edges) => return flags::store_flags(&self.store, edges, &m).await,
            AlertSinkItem::Output(AlertOutput::Transition { alert, transition }) => {
                let Some(mv) = transition.action else {
                    let suppressed = match &alert.suppressed {
                        Some(s) => Some(self.store_suppression(s).await?),
                        None => None,
                    };
                    match self.store.raise_alert(&new_alert(alert, suppressed)).await? {
                        RaiseOutcome::Raised(record) => {
                            self.ids.insert(alert.id, record.id);
                            m.raised.fetch_add(1, Ordering::Relaxed);
                            if record.suppressed.is_none() && record.shelved.is_none() {
                                m.record_raise(record.raised_at);
                            }
                            self.hub.publish_alert(*record);
                        }
                        RaiseOutcome::AlreadyOpen(id) => {
                            self.ids.insert(alert.id, id);
                            m.already_open.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(id, key = %alert.key, "alert already open in the store; not raised again");
                        }
                    }
                    return Ok(());
                };
                let Some(id) = self.store_id(alert).await? else {
                    m.refused.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                };
                let change = match mv {
                    AlertMove::Acknowledge => AlertChange::Acknowledge,
                    AlertMove::Clear => AlertChange::Clear,
                    AlertMove::End => AlertChange::End,
                    AlertMove::Resume => AlertChange::Resume,
                    AlertMove::Shelve => match &alert.shelved {
                        Some(s) => AlertChange::Shelve { reason: s.reason.clone(), until: s.until },
                        None => return Ok(()),
                    },
                    AlertMove::Unshelve => AlertChange::Unshelve,
                    AlertMove::Suppress => match &alert.suppressed {
                        Some(s) => AlertChange::Suppress(self.store_suppression(s).await?),
                        None => return Ok(()),
                    },
                    AlertMove::Unsuppress => AlertChange::Unsuppress,
                };
                let by = transition.by.as_deref();
                let note = transition.note.as_deref();
                match self.store.change_alert(id, &change, by, note, transition.at).await {
                    Ok(record) => {
                        let counter = match (mv, record.state) {
                            (AlertMove::Acknowledge, AlertState::Acknowledged) => &m.acknowledged,
                            (_, AlertState::Cleared) => &m.cleared,
                            (AlertMove::End, _) => &m.returned,
                            (AlertMove::Resume, _) => &m.resumed,
                            _ => &m.overlays,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        if mv == AlertMove::Resume
                            && record.suppressed.is_none()
                            && record.shelved.is_none()
                        {
                            m.record_raise(transition.at);
                        }
                        self.hub.publish_alert(record);
                    }
                    Err(
                        StoreError::AlertTransition { .. }
                        | StoreError::AlertNotFound(_)
                        | StoreError::AlertNotShelved(_),
                    ) => {
                        m.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => return Err(e),
                }
                if transition.to == stream::AlertState::Cleared {
                    self.ids.remove(alert.id);
                }
            }
            AlertSinkItem::Output(AlertOutput::Updated { alert }) => {
                let Some(id) = self.store_id(alert).await? else { return Ok(()) };
                self.store.update_alert_members(id, alert.members.max(1)).await?;
                m.updated.fetch_add(1, Ordering::Relaxed);
                if let Some(record) = self.store.alert(id).await? {
                    self.hub.publish_alert(record);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
