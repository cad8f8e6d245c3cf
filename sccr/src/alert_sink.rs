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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use store::{
    AlertChange, AlertFilter, AlertMove, AlertRecord, AlertState, NewAlert, RaiseOutcome,
    StateSave, Store, StoreError, Suppression,
};
use stream::alert::Suppressed;
use stream::{
    Alert, AlertEngineState, AlertId, AlertKey, AlertOutput, AlertSinkItem, BookRecord, EngineHead,
    LiveHub, OperatorAction, StatePart, StreamCore,
};
use telemetry::EventTime;
use tokio::sync::mpsc;

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

/// Where the engine's state is saved: one key per ingest client, so replicas do not
/// overwrite each other's timers.
pub fn state_key(client_id: &str) -> String {
    format!("alert_engine/{client_id}")
}

/// The engine state saved under `key`: assembled from its parts, else the whole document
/// an earlier version saved; `None` when nothing is saved.
pub async fn load_engine_state(
    store: &Store,
    key: &str,
) -> Result<Option<AlertEngineState>, StoreError> {
    let (mut head, mut book, mut parts) = (None, None::<BookRecord>, Vec::new());
    store
        .load_state_parts(key, |name, value| {
            let corrupt = |e: serde_json::Error| StoreError::Corrupt {
                what: "alert engine state part",
                value: format!("{name}: {e}"),
            };
            match name.as_str() {
                "head" => head = Some(serde_json::from_str::<EngineHead>(&value).map_err(corrupt)?),
                "book" => book = Some(serde_json::from_str(&value).map_err(corrupt)?),
                _ => parts.push(serde_json::from_str::<StatePart>(&value).map_err(corrupt)?),
            }
            Ok(())
        })
        .await?;
    if let Some(head) = head {
        return Ok(Some(AlertEngineState::assemble(head, book, parts)));
    }
    let Some(doc) = store.load_stream_state(key).await? else { return Ok(None) };
    serde_json::from_value(doc)
        .map(Some)
        .map_err(|e| StoreError::Corrupt { what: "alert engine state", value: e.to_string() })
}

/// Bring the alerts a restored engine holds open in line with the store, which operators
/// may have moved after the engine's last checkpoint (a crash loses at most one checkpoint
/// interval): an alert acknowledged in the store is acknowledged in the engine, one no
/// longer open in the store is cleared in the engine (as an operator's clear: its
/// condition must end and occur again to raise anew). Nothing is stored here; the store
/// already holds these moves. Returns how many engine alerts moved.
pub fn reconcile(core: &mut StreamCore, store_open: &[AlertRecord], now: EventTime) -> usize {
    let by_key: HashMap<AlertKey, &AlertRecord> =
        store_open.iter().filter_map(|r| AlertKey::of_record(r).map(|k| (k, r))).collect();
    let moves: Vec<(OperatorAction, AlertKey, String, Option<String>, EventTime)> = core
        .open_alerts()
        .filter_map(|a| match by_key.get(&a.key) {
            None => Some((
                OperatorAction::Clear,
                a.key.clone(),
                "sccr".to_owned(),
                Some("no longer open in the store at restart".to_owned()),
                now,
            )),
            Some(r) => match (&r.acknowledged, a.state) {
                (Some(ack), stream::AlertState::Raised) => Some((
                    OperatorAction::Acknowledge,
                    a.key.clone(),
                    ack.by.clone(),
                    ack.note.clone(),
                    ack.at,
                )),
                _ => None,
            },
        })
        .collect();
    // Shelves set or taken off in the store meanwhile.
    let shelves: Vec<(OperatorAction, AlertKey, String, Option<String>, EventTime)> = core
        .open_alerts()
        .filter_map(|a| {
            let r = by_key.get(&a.key)?;
            match (&r.shelved, &a.shelved) {
                (Some(s), held) if held.as_ref() != Some(s) => Some((
                    OperatorAction::Shelve { reason: s.reason.clone(), until: s.until },
                    a.key.clone(),
                    s.by.clone(),
                    None,
                    s.at,
                )),
                (None, Some(_)) => {
                    Some((OperatorAction::Unshelve, a.key.clone(), "sccr".to_owned(), None, now))
                }
                _ => None,
            }
        })
        .collect();
    let moves: Vec<_> = moves.into_iter().chain(shelves).collect();
    let mut moved = 0;
    for (action, key, by, note, at) in moves {
        if matches!(core.operator(action, &key, &by, note, at), Ok(true)) {
            moved += 1;
        }
    }
    if moved > 0 {
        tracing::info!(moved, "restored alerts brought in line with the store");
    }
    moved
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
            if !matches!(item, AlertSinkItem::Output(_)) {
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
        let by_alert = self.store_id_of(s.by_alert, &s.by_key).await?;
        Ok(Suppression { reason: s.reason, by_alert })
    }

    /// Take expired shelves off in the store, at every checkpoint's end: the engine expires
    /// the shelves it knows on its tick; this catches those of alerts it does not hold (its
    /// state lost, or shelved after its last checkpoint before a crash). Returns how many.
    async fn sweep_shelves(&mut self, now: EventTime) -> usize {
        let expired = match self.store.expired_shelves(now).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for expired shelves");
                return 0;
            }
        };
        let mut done = 0;
        for id in expired {
            let note = Some("shelf expired");
            match self.store.change_alert(id, &AlertChange::Unshelve, None, note, now).await {
                Ok(record) => {
                    done += 1;
                    self.metrics.overlays.fetch_add(1, Ordering::Relaxed);
                    self.hub.publish_alert(record);
                }
                // Taken off meanwhile (by the engine or an operator), or cleared.
                Err(StoreError::AlertNotShelved(_) | StoreError::AlertTransition { .. }) => {}
                Err(e) => tracing::warn!(id, error = %e, "cannot take an expired shelf off"),
            }
        }
        done
    }

    /// Save a checkpoint item: begin opens the transaction (writing the head and the
    /// book), chunks add parts, end commits. A failure drops the transaction (nothing of
    /// this checkpoint is saved) and asks the stream for a full one next.
    async fn checkpoint(&mut self, item: &AlertSinkItem) {
        let result = match item {
            AlertSinkItem::CheckpointBegin(begin) => {
                self.saving = None;
                if self.need_full && !begin.full {
                    self.checkpoint_lost.store(true, Ordering::Release);
                    tracing::warn!("alert engine checkpoint skipped: it builds on a lost one; the next one saves everything");
                    return;
                }
                self.begin_checkpoint(begin).await
            }
            AlertSinkItem::CheckpointParts(chunk) => {
                let Some(mut save) = self.saving.take() else { return };
                let result = self.put_parts(&mut save, &chunk.parts).await;
                self.saving = Some(save);
                result
            }
            AlertSinkItem::CheckpointEnd => {
                let Some(save) = self.saving.take() else { return };
                save.commit().await.map(|()| {
                    self.need_full = false;
                    self.metrics.state_saves.fetch_add(1, Ordering::Relaxed);
                })
            }
            AlertSinkItem::Output(_) => Ok(()),
        };
        if let Err(e) = result {
            self.checkpoint_failed(&e);
        }
    }

    fn checkpoint_failed(&mut self, e: &StoreError) {
        self.saving = None;
        self.need_full = true;
        self.metrics.state_save_errors.fetch_add(1, Ordering::Relaxed);
        self.checkpoint_lost.store(true, Ordering::Release);
        tracing::warn!(error = %e, "alert engine checkpoint not saved; the next one saves everything");
    }

    async fn begin_checkpoint(
        &mut self,
        begin: &stream::EngineCheckpoint,
    ) -> Result<(), StoreError> {
        let json = |what: &'static str, v: Result<String, serde_json::Error>| {
            v.map_err(|e| StoreError::Corrupt { what, value: e.to_string() })
        };
        let mut rows = vec![(
            "head".to_owned(),
            json("alert engine head", serde_json::to_string(&begin.head))?,
        )];
        if let Some(book) = &begin.book {
            rows.push(("book".to_owned(), json("alert engine book", serde_json::to_string(book))?));
        }
        let mut save = self.store.begin_state_save(&self.state_key, begin.full).await?;
        self.write_rows(&mut save, &rows).await?;
        self.saving = Some(save);
        Ok(())
    }

    async fn put_parts(&self, save: &mut StateSave, parts: &[StatePart]) -> Result<(), StoreError> {
        let rows = parts
            .iter()
            .map(|p| {
                serde_json::to_string(p).map(|json| (p.name(), json)).map_err(|e| {
                    StoreError::Corrupt { what: "alert engine state part", value: e.to_string() }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.write_rows(save, &rows).await
    }

    async fn write_rows(
        &self,
        save: &mut StateSave,
        rows: &[(String, String)],
    ) -> Result<(), StoreError> {
        save.put(&self.state_key, rows).await?;
        let bytes: usize = rows.iter().map(|(name, json)| name.len() + json.len()).sum();
        self.metrics.state_parts.fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.metrics.state_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(())
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
mod tests {
    use store::StoreOptions;
    use stream::alert::{AlertKind, RuleId};
    use stream::{AlertTransition, Severity, Subject};
    use telemetry::SegmentId;

    use super::*;

    fn engine_alert(id: u64, state: stream::AlertState) -> Alert {
        Alert {
            id: AlertId(id),
            key: AlertKey {
                rule: RuleId::parse("congestion").unwrap(),
                subject: Subject::Segment(SegmentId::parse("viale-strozzi").unwrap()),
            },
            kind: AlertKind::Single,
            severity: Severity::Critical,
            state,
            value: 12.0,
            message: "LOS E or worse".into(),
            since: EventTime(1_000),
            raised_at: EventTime(2_000),
            acknowledged: None,
            cleared_at: None,
            members: 0,
            listed_members: Vec::new(),
            folded_raises: 0,
            active: true,
            returned_at: None,
            shelved: None,
            suppressed: None,
            code: stream::alert::MessageCode::LosAtOrWorse,
            params: serde_json::json!({"grade": "E"}).as_object().cloned().unwrap(),
        }
    }

    fn transition(
        a: &Alert,
        from: Option<stream::AlertState>,
        to: stream::AlertState,
        at: i64,
    ) -> AlertSinkItem {
        let action = from.map(|_| match to {
            stream::AlertState::Returned => AlertMove::End,
            stream::AlertState::Raised => AlertMove::Resume,
            stream::AlertState::Acknowledged => AlertMove::Acknowledge,
            stream::AlertState::Cleared => AlertMove::Clear,
        });
        let t = AlertTransition {
            alert: a.id,
            key: a.key.clone(),
            from,
            to,
            action,
            by: None,
            note: Some("condition ended".into()),
            at: EventTime(at),
        };
        AlertSinkItem::Output(AlertOutput::Transition { alert: a.clone(), transition: t })
    }

    async fn sink() -> AlertSink {
        let store = Store::connect("sqlite::memory:", &StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        AlertSink::new(store, LiveHub::new(64), state_key("test"), Arc::default(), Arc::default())
    }

    #[tokio::test]
    async fn a_raise_and_its_automatic_clear_are_stored_and_shown() {
        let mut s = sink().await;
        let a = engine_alert(7, stream::AlertState::Raised);
        s.apply(&transition(&a, None, stream::AlertState::Raised, 2_000)).await.unwrap();
        let open = s.store.alerts(&AlertFilter::open()).await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(s.ids.get(AlertId(7)), Some(open[0].id));
        assert_eq!(s.hub.open_alerts().len(), 1);
        s.apply(&transition(
            &a,
            Some(stream::AlertState::Raised),
            stream::AlertState::Cleared,
            3_000,
        ))
        .await
        .unwrap();
        let events = s.store.alert_events(open[0].id).await.unwrap();
        assert_eq!(
            events.iter().map(|e| (e.to, e.by.clone())).collect::<Vec<_>>(),
            vec![(AlertState::Raised, None), (AlertState::Cleared, None)]
        );
        assert_eq!(events[1].note.as_deref(), Some("condition ended"));
        assert!(s.hub.open_alerts().is_empty());
        assert_eq!(s.ids.get(AlertId(7)), None, "a cleared alert leaves the map");
    }

    #[tokio::test]
    async fn a_condition_that_ends_unacknowledged_returns_and_stays_open_then_resumes() {
        let mut s = sink().await;
        let a = engine_alert(8, stream::AlertState::Raised);
        s.apply(&transition(&a, None, stream::AlertState::Raised, 2_000)).await.unwrap();
        let id = s.ids.get(AlertId(8)).unwrap();
        let stored = s.store.alert(id).await.unwrap().unwrap();
        assert_eq!(stored.code, store::MessageCode::LosAtOrWorse);
        assert_eq!(stored.params["grade"], "E");
        s.apply(&transition(
            &a,
            Some(stream::AlertState::Raised),
            stream::AlertState::Returned,
            2_083,
        ))
        .await
        .unwrap();
        let returned = s.store.alert(id).await.unwrap().unwrap();
        assert_eq!(
            (returned.state, returned.active, returned.returned_at),
            (AlertState::Returned, false, Some(EventTime(2_083)))
        );
        let open = s.hub.open_alerts();
        assert_eq!(open.len(), 1, "a returned alert stays on the wall");
        assert_eq!(open[0].state, AlertState::Returned);
        assert_eq!(s.ids.get(AlertId(8)), Some(id), "still open: still mapped");
        // The condition holds again before anyone acknowledged: the same alert, raised.
        s.apply(&transition(
            &a,
            Some(stream::AlertState::Returned),
            stream::AlertState::Raised,
            3_000,
        ))
        .await
        .unwrap();
        let events = s.store.alert_events(id).await.unwrap();
        assert_eq!(
            events.iter().map(|e| (e.to, e.action)).collect::<Vec<_>>(),
            vec![
                (AlertState::Raised, None),
                (AlertState::Returned, Some(AlertMove::End)),
                (AlertState::Raised, Some(AlertMove::Resume)),
            ]
        );
        assert_eq!(s.store.alerts(&AlertFilter::default()).await.unwrap().len(), 1);
        assert_eq!(s.metrics.raised_last_10m(EventTime(3_000)).0, 2, "the raise and the re-raise");
    }

    #[tokio::test]
    async fn expired_shelves_the_engine_does_not_hold_come_off_at_a_checkpoint() {
        let mut s = sink().await;
        let a = engine_alert(9, stream::AlertState::Raised);
        s.apply(&transition(&a, None, stream::AlertState::Raised, 2_000)).await.unwrap();
        let id = s.ids.get(AlertId(9)).unwrap();
        let shelf = AlertChange::Shelve { reason: "works".into(), until: EventTime(10_000) };
        s.store.change_alert(id, &shelf, Some("ada"), None, EventTime(3_000)).await.unwrap();
        assert_eq!(s.sweep_shelves(EventTime(9_999)).await, 0, "not expired yet");
        assert_eq!(s.sweep_shelves(EventTime(10_000)).await, 1);
        assert_eq!(s.sweep_shelves(EventTime(10_001)).await, 0, "once");
        let stored = s.store.alert(id).await.unwrap().unwrap();
        assert_eq!((stored.state, stored.shelved), (AlertState::Raised, None));
        assert!(s.hub.open_alerts()[0].shelved.is_none(), "pushed again");
        let last = s.store.alert_events(id).await.unwrap().pop().unwrap();
        assert_eq!(
            (last.action, last.by, last.note.as_deref()),
            (Some(AlertMove::Unshelve), None, Some("shelf expired"))
        );
    }

    #[tokio::test]
    async fn a_raise_of_a_key_open_in_the_store_maps_onto_it_and_after_a_restart_the_key_finds_it()
    {
        let mut s = sink().await;
        let first = engine_alert(1, stream::AlertState::Raised);
        s.apply(&transition(&first, None, stream::AlertState::Raised, 2_000)).await.unwrap();
        // A restarted process (empty id map, engine ids starting over) raises the same key.
        let mut restarted = AlertSink { ids: AlertIds::default(), ..s };
        let again = engine_alert(1, stream::AlertState::Raised);
        restarted
            .apply(&transition(&again, None, stream::AlertState::Raised, 5_000))
            .await
            .unwrap();
        assert_eq!(restarted.metrics.already_open.load(Ordering::Relaxed), 1);
        assert_eq!(
            restarted.store.alerts(&AlertFilter::default()).await.unwrap().len(),
            1,
            "never a second alert"
        );
        // And its clear, with no mapping at all, finds the open alert by key.
        restarted.ids = AlertIds::default();
        restarted
            .apply(&transition(
                &again,
                Some(stream::AlertState::Raised),
                stream::AlertState::Cleared,
                6_000,
            ))
            .await
            .unwrap();
        assert!(restarted.store.alerts(&AlertFilter::open()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_automatic_clear_after_an_operator_clear_changes_nothing() {
        let mut s = sink().await;
        let a = engine_alert(3, stream::AlertState::Raised);
        s.apply(&transition(&a, None, stream::AlertState::Raised, 2_000)).await.unwrap();
        let id = s.ids.get(AlertId(3)).unwrap();
        s.store
            .clear_alert(id, Some("ada"), Some("handled on site"), EventTime(2_500))
            .await
            .unwrap();
        s.apply(&transition(
            &a,
            Some(stream::AlertState::Raised),
            stream::AlertState::Cleared,
            3_000,
        ))
        .await
        .unwrap();
        let events = s.store.alert_events(id).await.unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].by.as_deref(), Some("ada"));
        assert_eq!(s.metrics.refused.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_group_alert_that_gains_members_is_updated_in_the_store_and_live() {
        let mut s = sink().await;
        let mut a = engine_alert(4, stream::AlertState::Raised);
        a.kind = AlertKind::SegmentGroup;
        a.members = 1;
        s.apply(&transition(&a, None, stream::AlertState::Raised, 2_000)).await.unwrap();
        a.members = 5;
        s.apply(&AlertSinkItem::Output(AlertOutput::Updated { alert: a.clone() })).await.unwrap();
        let id = s.ids.get(AlertId(4)).unwrap();
        let stored = s.store.alert(id).await.unwrap().unwrap();
        assert_eq!((stored.members, stored.kind), (5, store::AlertKind::SegmentGroup));
        assert_eq!(s.hub.open_alerts()[0].members, 5);
        assert_eq!(s.metrics.updated.load(Ordering::Relaxed), 1);
    }

    /// Queue one checkpoint of `engine` through the sink, in chunks of two parts.
    async fn save(s: &mut AlertSink, engine: &mut stream::AlertEngine) {
        let (begin, parts) = engine.checkpoint(false);
        let parts: Vec<StatePart> = parts.collect();
        s.checkpoint(&AlertSinkItem::CheckpointBegin(Box::new(begin))).await;
        for chunk in parts.chunks(2) {
            let chunk = stream::CheckpointChunk::unbounded(chunk.to_vec());
            s.checkpoint(&AlertSinkItem::CheckpointParts(chunk)).await;
        }
        s.checkpoint(&AlertSinkItem::CheckpointEnd).await;
    }

    fn engine_with_devices(devices: &[&str]) -> stream::AlertEngine {
        let rules = stream::AlertRulesConfig::validate(&toml_rules()).unwrap();
        let mut engine = stream::AlertEngine::new(rules);
        let mut out = Vec::new();
        for d in devices {
            engine.on_reading(&speed(d, 1_000), EventTime(1_000), &mut out);
        }
        engine
    }

    fn speed(device: &str, at: i64) -> telemetry::Reading {
        telemetry::Reading {
            device: telemetry::DeviceId::parse(device).unwrap(),
            metric: telemetry::MetricId::SpeedKmh,
            time: EventTime(at),
            value: 40.0,
            seq: None,
        }
    }

    #[tokio::test]
    async fn checkpoints_save_only_changed_parts_under_the_process_key_and_load_exactly() {
        let mut s = sink().await;
        let key = state_key("test");
        let mut engine = engine_with_devices(&["loop-a", "loop-b", "loop-c"]);
        save(&mut s, &mut engine).await;
        assert_eq!(s.metrics.state_saves.load(Ordering::Relaxed), 1);
        assert_eq!(s.metrics.state_parts.load(Ordering::Relaxed), 5, "head, book, 3 devices");
        assert_eq!(load_engine_state(&s.store, &key).await.unwrap(), Some(engine.export_state()));

        let mut out = Vec::new();
        engine.on_reading(&speed("loop-b", 2_000), EventTime(2_000), &mut out);
        let bytes = s.metrics.state_bytes.load(Ordering::Relaxed);
        save(&mut s, &mut engine).await;
        assert_eq!(s.metrics.state_saves.load(Ordering::Relaxed), 2);
        assert_eq!(s.metrics.state_parts.load(Ordering::Relaxed), 5 + 2, "head and loop-b only");
        let written = s.metrics.state_bytes.load(Ordering::Relaxed) - bytes;
        let head = serde_json::to_string(&engine.checkpoint(false).0.head).unwrap();
        let (_, parts) = engine.checkpoint(true);
        let b = parts
            .filter(|p| p.name() == "device/loop-b")
            .map(|p| serde_json::to_string(&p).unwrap());
        let b: Vec<String> = b.collect();
        assert_eq!(
            written as usize,
            "head".len() + head.len() + "device/loop-b".len() + b[0].len()
        );
        assert_eq!(load_engine_state(&s.store, &key).await.unwrap(), Some(engine.export_state()));
        assert_eq!(load_engine_state(&s.store, "alert_engine/other").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_whole_document_saved_by_an_earlier_version_still_loads() {
        let s = sink().await;
        let engine = engine_with_devices(&["loop-a"]);
        let doc = serde_json::to_value(engine.export_state()).unwrap();
        s.store.save_stream_state(&state_key("test"), &doc).await.unwrap();
        let loaded = load_engine_state(&s.store, &state_key("test")).await.unwrap();
        assert_eq!(loaded, Some(engine.export_state()));
    }

    #[tokio::test]
    async fn a_checkpoint_that_cannot_be_saved_asks_for_a_full_one() {
        let mut s = sink().await;
        let mut engine = engine_with_devices(&["loop-a"]);
        s.store.close().await;
        save(&mut s, &mut engine).await;
        assert_eq!(s.metrics.state_saves.load(Ordering::Relaxed), 0);
        assert_eq!(s.metrics.state_save_errors.load(Ordering::Relaxed), 1);
        assert!(s.checkpoint_lost.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn after_a_lost_checkpoint_only_a_full_one_is_saved() {
        let mut s = sink().await;
        let key = state_key("test");
        let mut engine = engine_with_devices(&["loop-a", "loop-b"]);
        save(&mut s, &mut engine).await;
        // A checkpoint whose parts cannot be written (loop-a changed in it) is lost ...
        let mut out = Vec::new();
        engine.on_reading(&speed("loop-a", 2_000), EventTime(2_000), &mut out);
        let (begin, parts) = engine.checkpoint(false);
        let parts: Vec<StatePart> = parts.collect();
        s.checkpoint(&AlertSinkItem::CheckpointBegin(Box::new(begin))).await;
        s.saving = None; // the transaction broke
        s.checkpoint_failed(&StoreError::Corrupt { what: "test", value: "lost".into() });
        let chunk = stream::CheckpointChunk::unbounded(parts);
        s.checkpoint(&AlertSinkItem::CheckpointParts(chunk)).await;
        s.checkpoint(&AlertSinkItem::CheckpointEnd).await;
        // ... and the incremental one already queued after it (loop-b changed) is not saved.
        s.checkpoint_lost.store(false, Ordering::Release);
        engine.on_reading(&speed("loop-b", 3_000), EventTime(3_000), &mut out);
        save(&mut s, &mut engine).await;
        assert_eq!(s.metrics.state_saves.load(Ordering::Relaxed), 1);
        assert!(s.checkpoint_lost.load(Ordering::Acquire), "still asking for a full one");
        let saved = load_engine_state(&s.store, &key).await.unwrap().unwrap();
        assert_ne!(saved, engine.export_state());
        let (begin, parts) = engine.checkpoint(true);
        let parts: Vec<StatePart> = parts.collect();
        s.checkpoint(&AlertSinkItem::CheckpointBegin(Box::new(begin))).await;
        s.checkpoint(&AlertSinkItem::CheckpointParts(stream::CheckpointChunk::unbounded(parts)))
            .await;
        s.checkpoint(&AlertSinkItem::CheckpointEnd).await;
        assert_eq!(s.metrics.state_saves.load(Ordering::Relaxed), 2);
        assert_eq!(load_engine_state(&s.store, &key).await.unwrap(), Some(engine.export_state()));
    }

    #[tokio::test]
    async fn a_restored_engine_follows_what_operators_did_in_the_store_meanwhile() {
        use stream::{AlertRulesConfig, DeviceProfile, Emitted, Registry, StreamConfig};
        use telemetry::{DeviceId, MetricId, Reading, RoadSegment};
        let rules = toml_rules();
        let config = StreamConfig {
            window: Duration::from_secs(10),
            watermark_delay: Duration::from_secs(1),
            ..StreamConfig::default()
        };
        let registry = |seg: &str| Registry {
            segments: vec![RoadSegment {
                id: SegmentId::parse(seg).unwrap(),
                name: seg.into(),
                kind: "urban".into(),
                coordinates: vec![[11.0, 43.0], [11.01, 43.01]],
                length_m: 100.0,
                lanes: 1,
                speed_limit_kmh: 50.0,
                free_flow_kmh: 50.0,
                capacity_vph: 900.0,
            }],
            devices: vec![DeviceProfile {
                id: DeviceId::parse("loop-a").unwrap(),
                kind: None,
                segment: Some(SegmentId::parse(seg).unwrap()),
                interval: None,
            }],
        };
        // Two segments congested: two open engine alerts.
        let mut core = StreamCore::new(&config, AlertRulesConfig::validate(&rules).unwrap());
        let mut out = Emitted::default();
        let mut reg = registry("s1");
        reg.segments.extend(registry("s2").segments);
        reg.devices.push(DeviceProfile {
            id: DeviceId::parse("loop-b").unwrap(),
            kind: None,
            segment: Some(SegmentId::parse("s2").unwrap()),
            interval: None,
        });
        core.set_registry(reg, EventTime(0), &mut out);
        for d in ["loop-a", "loop-b"] {
            let r = Reading {
                device: DeviceId::parse(d).unwrap(),
                metric: MetricId::SpeedKmh,
                time: EventTime(1_000),
                value: 5.0,
                seq: None,
            };
            core.on_readings(&[r], EventTime(1_000), &mut out);
        }
        core.tick(EventTime(12_000), &mut out);
        assert_eq!(core.open_alerts().count(), 2);
        // In the store: s1's alert acknowledged by ada, s2's cleared (absent from the open list).
        let s = sink().await;
        let mut a = engine_alert(1, stream::AlertState::Raised);
        a.key.subject = Subject::Segment(SegmentId::parse("s1").unwrap());
        a.key.rule = RuleId::parse("congestion").unwrap();
        let RaiseOutcome::Raised(rec) = s.store.raise_alert(&new_alert(&a, None)).await.unwrap()
        else {
            panic!()
        };
        let acked = s
            .store
            .acknowledge_alert(rec.id, "ada", Some("crew sent"), EventTime(13_000))
            .await
            .unwrap();
        assert_eq!(reconcile(&mut core, &[acked], EventTime(14_000)), 2);
        let states: Vec<(String, stream::AlertState)> =
            core.open_alerts().map(|a| (a.key.subject.to_string(), a.state)).collect();
        assert_eq!(states, vec![("segment s1".to_owned(), stream::AlertState::Acknowledged)]);
        assert_eq!(core.open_alerts().next().unwrap().acknowledged.as_ref().unwrap().by, "ada");
    }

    fn toml_rules() -> stream::AlertRulesConfig {
        let mut rules =
            stream::AlertRulesConfig { air_quality_defaults: false, ..Default::default() };
        let def: stream::alert::RuleDefinition = serde_json::from_value(serde_json::json!({
            "id": "congestion", "severity": "critical", "los": {"at_or_worse": "E", "for": "0s"}
        }))
        .unwrap();
        rules.rules.push(def);
        rules
    }
}
