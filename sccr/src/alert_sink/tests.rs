//! The sink against an in-memory SQLite store: raises, returns, automatic and operator
//! clears, group updates, checkpoints saved and loaded, and reconciling at restart.

use store::StoreOptions;
use stream::alert::{AlertKind, RuleId};
use stream::{AlertTransition, Severity, StatePart, StreamCore, Subject};
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
    s.apply(&transition(&a, Some(stream::AlertState::Raised), stream::AlertState::Cleared, 3_000))
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
    s.apply(&transition(&a, Some(stream::AlertState::Raised), stream::AlertState::Returned, 2_083))
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
    s.apply(&transition(&a, Some(stream::AlertState::Returned), stream::AlertState::Raised, 3_000))
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
async fn a_raise_of_a_key_open_in_the_store_maps_onto_it_and_after_a_restart_the_key_finds_it() {
    let mut s = sink().await;
    let first = engine_alert(1, stream::AlertState::Raised);
    s.apply(&transition(&first, None, stream::AlertState::Raised, 2_000)).await.unwrap();
    // A restarted process (empty id map, engine ids starting over) raises the same key.
    let mut restarted = AlertSink { ids: AlertIds::default(), ..s };
    let again = engine_alert(1, stream::AlertState::Raised);
    restarted.apply(&transition(&again, None, stream::AlertState::Raised, 5_000)).await.unwrap();
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
    s.store.clear_alert(id, Some("ada"), Some("handled on site"), EventTime(2_500)).await.unwrap();
    s.apply(&transition(&a, Some(stream::AlertState::Raised), stream::AlertState::Cleared, 3_000))
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
    let b =
        parts.filter(|p| p.name() == "device/loop-b").map(|p| serde_json::to_string(&p).unwrap());
    let b: Vec<String> = b.collect();
    assert_eq!(written as usize, "head".len() + head.len() + "device/loop-b".len() + b[0].len());
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
    s.checkpoint(&AlertSinkItem::CheckpointParts(stream::CheckpointChunk::unbounded(parts))).await;
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
        ..Registry::default()
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
    let RaiseOutcome::Raised(rec) = s.store.raise_alert(&new_alert(&a, None)).await.unwrap() else {
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
    let mut rules = stream::AlertRulesConfig { air_quality_defaults: false, ..Default::default() };
    let def: stream::alert::RuleDefinition = serde_json::from_value(serde_json::json!({
        "id": "congestion", "severity": "critical", "los": {"at_or_worse": "E", "for": "0s"}
    }))
    .unwrap();
    rules.rules.push(def);
    rules
}
