//! The alert sink: stores, in order, what the stream's alert engine emits, then shows it
//! live. Wiring only: the mapping is `dashboard_api::alerts`, the rules of the lifecycle
//! are the store's and the engine's.
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
//! - Transient store errors are retried with backoff, so nothing is skipped while the
//!   database restarts; other errors are logged and counted, and the sink goes on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashboard_api::alerts::{alert_key, live_alert, new_alert, store_subject};
use store::{AlertFilter, AlertRecord, AlertState, RaiseOutcome, Store, StoreError};
use stream::{
    Alert, AlertId, AlertKey, AlertOutput, AlertSinkItem, LiveHub, OperatorAction, StreamCore,
};
use telemetry::EventTime;
use tokio::sync::mpsc;

/// Counters of the alert sink, for `/metrics`.
#[derive(Debug, Default)]
pub struct AlertSinkMetrics {
    pub raised: AtomicU64,
    /// Raises that found the key's alert already open in the store.
    pub already_open: AtomicU64,
    pub acknowledged: AtomicU64,
    pub cleared: AtomicU64,
    pub updated: AtomicU64,
    /// Moves the store refused because the alert had moved on (an operator was first).
    pub refused: AtomicU64,
    pub state_saves: AtomicU64,
    pub errors: AtomicU64,
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

/// Bring the alerts a restored engine holds open in line with the store, which operators
/// may have moved after the engine's last checkpoint (a crash loses at most one checkpoint
/// interval): an alert acknowledged in the store is acknowledged in the engine, one no
/// longer open in the store is cleared in the engine (as an operator's clear: its
/// condition must end and occur again to raise anew). Nothing is stored here; the store
/// already holds these moves. Returns how many engine alerts moved.
pub fn reconcile(core: &mut StreamCore, store_open: &[AlertRecord], now: EventTime) -> usize {
    let by_key: HashMap<AlertKey, &AlertRecord> =
        store_open.iter().filter_map(|r| alert_key(r).map(|k| (k, r))).collect();
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
}

impl AlertSink {
    /// Run until the stream closes the queue.
    pub async fn run(mut self, mut input: mpsc::Receiver<AlertSinkItem>) {
        while let Some(item) = input.recv().await {
            let mut backoff = Duration::from_millis(50);
            loop {
                match self.apply(&item).await {
                    Ok(()) => break,
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "alert sink: store unavailable; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => {
                        self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "alert sink: cannot store an alert change; skipped");
                        break;
                    }
                }
            }
        }
        tracing::info!("alert sink drained");
    }

    /// The store id of the engine's alert: mapped, or the open alert of its key.
    async fn store_id(&mut self, alert: &Alert) -> Result<Option<i64>, StoreError> {
        if let Some(id) = self.ids.get(alert.id) {
            return Ok(Some(id));
        }
        let filter = AlertFilter {
            rule: Some(alert.key.rule.as_str().to_owned()),
            subject: Some(store_subject(&alert.key.subject)),
            limit: 1,
            ..AlertFilter::open()
        };
        let found = self.store.alerts(&filter).await?.first().map(|r| r.id);
        if let Some(id) = found {
            self.ids.insert(alert.id, id);
        }
        Ok(found)
    }

    async fn apply(&mut self, item: &AlertSinkItem) -> Result<(), StoreError> {
        let m = self.metrics.clone();
        match item {
            AlertSinkItem::Checkpoint(state) => {
                let value = serde_json::to_value(state).map_err(|e| StoreError::Corrupt {
                    what: "alert engine state",
                    value: e.to_string(),
                })?;
                self.store.save_stream_state(&self.state_key, &value).await?;
                m.state_saves.fetch_add(1, Ordering::Relaxed);
            }
            AlertSinkItem::Output(AlertOutput::Transition { alert, transition }) => {
                match (transition.from, transition.to) {
                    (None, _) => match self.store.raise_alert(&new_alert(alert)).await? {
                        RaiseOutcome::Raised(record) => {
                            self.ids.insert(alert.id, record.id);
                            m.raised.fetch_add(1, Ordering::Relaxed);
                            self.hub.publish_alert(live_alert(&record));
                        }
                        RaiseOutcome::AlreadyOpen(id) => {
                            self.ids.insert(alert.id, id);
                            m.already_open.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(id, key = %alert.key, "alert already open in the store; not raised again");
                        }
                    },
                    (Some(_), stream::AlertState::Acknowledged) => {
                        let Some(id) = self.store_id(alert).await? else { return Ok(()) };
                        let by = transition.by.as_deref().unwrap_or("sccr");
                        match self
                            .store
                            .acknowledge_alert(id, by, transition.note.as_deref(), transition.at)
                            .await
                        {
                            Ok(record) => {
                                m.acknowledged.fetch_add(1, Ordering::Relaxed);
                                self.hub.publish_alert(live_alert(&record));
                            }
                            Err(
                                StoreError::AlertTransition { .. } | StoreError::AlertNotFound(_),
                            ) => {
                                m.refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    (Some(_), _) => {
                        let Some(id) = self.store_id(alert).await? else {
                            m.refused.fetch_add(1, Ordering::Relaxed);
                            return Ok(());
                        };
                        match self
                            .store
                            .clear_alert(
                                id,
                                transition.by.as_deref(),
                                transition.note.as_deref(),
                                transition.at,
                            )
                            .await
                        {
                            Ok(record) => {
                                m.cleared.fetch_add(1, Ordering::Relaxed);
                                self.hub.publish_alert(live_alert(&record));
                            }
                            Err(
                                StoreError::AlertTransition { to: AlertState::Cleared, .. }
                                | StoreError::AlertNotFound(_),
                            ) => {
                                m.refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => return Err(e),
                        }
                        self.ids.remove(alert.id);
                    }
                }
            }
            AlertSinkItem::Output(AlertOutput::Updated { alert }) => {
                let Some(id) = self.store_id(alert).await? else { return Ok(()) };
                self.store.update_alert_members(id, alert.members.max(1)).await?;
                m.updated.fetch_add(1, Ordering::Relaxed);
                if let Some(record) = self.store.alert(id).await? {
                    self.hub.publish_alert(live_alert(&record));
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
        }
    }

    fn transition(
        a: &Alert,
        from: Option<stream::AlertState>,
        to: stream::AlertState,
        at: i64,
    ) -> AlertSinkItem {
        let t = AlertTransition {
            alert: a.id,
            key: a.key.clone(),
            from,
            to,
            by: None,
            note: Some("condition ended".into()),
            at: EventTime(at),
        };
        AlertSinkItem::Output(AlertOutput::Transition { alert: a.clone(), transition: t })
    }

    async fn sink() -> AlertSink {
        let store = Store::connect("sqlite::memory:", &StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        AlertSink {
            store,
            hub: LiveHub::new(64),
            state_key: state_key("test"),
            metrics: Arc::default(),
            ids: AlertIds::default(),
        }
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

    #[tokio::test]
    async fn checkpoints_are_saved_under_the_process_key() {
        let s = sink().await;
        let mut s = s;
        s.apply(&AlertSinkItem::Checkpoint(Box::default())).await.unwrap();
        let saved = s.store.load_stream_state(&state_key("test")).await.unwrap().unwrap();
        let state: stream::AlertEngineState = serde_json::from_value(saved).unwrap();
        assert_eq!(state, stream::AlertEngineState::default());
        assert_eq!(s.metrics.state_saves.load(Ordering::Relaxed), 1);
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
        let RaiseOutcome::Raised(rec) = s.store.raise_alert(&new_alert(&a)).await.unwrap() else {
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
