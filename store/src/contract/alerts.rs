//! Alerts: the lifecycle and its events, ISA-18.2 alarm states with shelving and
//! suppression, automatic clears by key, listing with filters and cursors.

use telemetry::EventTime;

use super::{dev, seg, T0};
use crate::history::DAY_MS;
use crate::{
    Acknowledgement, AlertEventRecord, AlertFilter, AlertKind, AlertRecord, AlertState,
    AlertSubject, Clearance, NewAlert, RaiseOutcome, Severity, Store, StoreError, SubjectKind,
};

fn new_alert(rule: &str, subject: AlertSubject, severity: Severity, raised_at: i64) -> NewAlert {
    NewAlert {
        rule: rule.to_owned(),
        subject,
        kind: AlertKind::Single,
        severity,
        message: format!("{rule} at {raised_at}"),
        value: Some(87.5),
        since: EventTime(raised_at - 60_000),
        raised_at: EventTime(raised_at),
        members: 1,
        code: crate::MessageCode::ThresholdAbove,
        params: serde_json::json!({"metric": "no2_ugm3", "limit": 200.0, "value": 87.5})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        suppressed: None,
    }
}

async fn raise(store: &Store, alert: &NewAlert) -> AlertRecord {
    match store.raise_alert(alert).await.expect("raise") {
        RaiseOutcome::Raised(record) => *record,
        other => {
            panic!("{} on {} should open a new alert, got {other:?}", alert.rule, alert.subject)
        }
    }
}

/// (from, to, by, note, at offset from T0) of an alert's events.
async fn moves(
    store: &Store,
    id: i64,
) -> Vec<(Option<AlertState>, AlertState, Option<String>, Option<String>, i64)> {
    let events: Vec<AlertEventRecord> = store.alert_events(id).await.expect("events");
    assert!(events.iter().all(|e| e.alert == id));
    events.into_iter().map(|e| (e.from, e.to, e.by, e.note, e.at.millis() - T0)).collect()
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

/// raise → duplicate raise refused → acknowledge with a note → illegal moves refused →
/// manual clear → the same key raised again opens a new alert; every move an event.
pub async fn alert_lifecycle_is_recorded_and_duplicate_raises_are_refused(store: &Store) {
    use AlertState::*;
    let subject = AlertSubject::Device(dev("al-1"));
    let first = new_alert("contract.lifecycle", subject.clone(), Severity::Critical, T0);
    let raised = raise(store, &first).await;
    assert_eq!(
        raised,
        AlertRecord {
            id: raised.id,
            rule: "contract.lifecycle".into(),
            subject: subject.clone(),
            kind: AlertKind::Single,
            severity: Severity::Critical,
            state: Raised,
            message: format!("contract.lifecycle at {T0}"),
            value: Some(87.5),
            since: EventTime(T0 - 60_000),
            raised_at: EventTime(T0),
            acknowledged: None,
            cleared: None,
            members: 1,
            active: true,
            returned_at: None,
            shelved: None,
            suppressed: None,
            code: crate::MessageCode::ThresholdAbove,
            params: first.params.clone(),
        }
    );
    let id = raised.id;
    assert_eq!(store.alert(id).await.expect("alert"), Some(raised.clone()));

    let again =
        NewAlert { raised_at: EventTime(T0 + 5_000), message: "again".into(), ..first.clone() };
    assert_eq!(
        store.raise_alert(&again).await.expect("raise again"),
        RaiseOutcome::AlreadyOpen(id)
    );
    assert_eq!(
        store.alert(id).await.expect("alert"),
        Some(raised.clone()),
        "a refused raise changes nothing"
    );

    let acked = store
        .acknowledge_alert(id, "ops-anna", Some("crew dispatched"), EventTime(T0 + 60_000))
        .await
        .expect("ack");
    assert_eq!(acked.state, Acknowledged);
    assert_eq!(
        acked.acknowledged,
        Some(Acknowledgement {
            by: "ops-anna".into(),
            note: some("crew dispatched"),
            at: EventTime(T0 + 60_000)
        })
    );
    assert_eq!(acked.cleared, None);
    assert_eq!(store.alert(id).await.expect("alert"), Some(acked.clone()));

    let refused = store.acknowledge_alert(id, "ops-marco", None, EventTime(T0 + 61_000)).await;
    assert!(
        matches!(refused, Err(StoreError::AlertTransition { id: i, from: Acknowledged, to: Acknowledged }) if i == id),
        "{refused:?}"
    );
    assert_eq!(
        store.raise_alert(&again).await.expect("raise while acknowledged"),
        RaiseOutcome::AlreadyOpen(id)
    );
    let nameless = store.acknowledge_alert(id, " ", None, EventTime(T0 + 61_000)).await;
    assert!(matches!(nameless, Err(StoreError::InvalidQuery { param: "by", .. })), "{nameless:?}");

    let cleared = store
        .clear_alert(id, Some("ops-marco"), Some("sensor replaced"), EventTime(T0 + 120_000))
        .await
        .expect("clear");
    assert_eq!(cleared.state, Cleared);
    assert_eq!(cleared.acknowledged, acked.acknowledged, "the acknowledgement is kept");
    assert_eq!(
        cleared.cleared,
        Some(Clearance {
            by: some("ops-marco"),
            note: some("sensor replaced"),
            at: EventTime(T0 + 120_000)
        })
    );

    for (result, to) in [
        (
            store.acknowledge_alert(id, "ops-anna", None, EventTime(T0 + 130_000)).await,
            Acknowledged,
        ),
        (store.clear_alert(id, None, None, EventTime(T0 + 130_000)).await, Cleared),
    ] {
        assert!(
            matches!(result, Err(StoreError::AlertTransition { id: i, from: Cleared, to: t }) if i == id && t == to),
            "{result:?}"
        );
    }
    assert_eq!(
        store.alert(id).await.expect("alert"),
        Some(cleared.clone()),
        "refused moves change nothing"
    );
    assert_eq!(
        moves(store, id).await,
        vec![
            (None, Raised, None, None, 0),
            (Some(Raised), Acknowledged, some("ops-anna"), some("crew dispatched"), 60_000),
            (Some(Acknowledged), Cleared, some("ops-marco"), some("sensor replaced"), 120_000),
        ]
    );

    let missing = store.acknowledge_alert(i64::MAX, "ops-anna", None, EventTime(T0)).await;
    assert!(matches!(missing, Err(StoreError::AlertNotFound(i64::MAX))), "{missing:?}");
    let missing = store.clear_alert(i64::MAX, None, None, EventTime(T0)).await;
    assert!(matches!(missing, Err(StoreError::AlertNotFound(i64::MAX))), "{missing:?}");
    assert_eq!(store.alert(i64::MAX).await.expect("alert"), None);

    // The condition comes back: a new alert, with its own history.
    let reopened = raise(store, &NewAlert { raised_at: EventTime(T0 + 180_000), ..first }).await;
    assert_ne!(reopened.id, id);
    assert_eq!(
        (reopened.state, reopened.acknowledged.clone(), reopened.cleared.clone()),
        (Raised, None, None)
    );
    assert_eq!(moves(store, reopened.id).await, vec![(None, Raised, None, None, 180_000)]);
    assert_eq!(store.alert(id).await.expect("alert").map(|a| a.state), Some(Cleared));
}

/// ISA-18.2 on the store: a condition ending unacknowledged returns the alert (open,
/// inactive), a returning condition raises the same alert again, acknowledging a returned
/// alert clears it; an acknowledged one clears when its condition ends. Shelving and
/// suppression are overlays: events that keep the state, listed by `shelved` and
/// `suppressed`. Every move names its action.
pub async fn alarm_states_shelving_and_suppression_follow_the_table(store: &Store) {
    use crate::{AlertChange, AlertMove as M, Shelf, Suppression, SuppressionReason};
    use AlertState::*;
    let t = |s: i64| EventTime(T0 + 300_000 + s * 1_000);
    let subject = AlertSubject::Device(dev("isa-1"));
    let a = raise(store, &new_alert("contract.isa", subject.clone(), Severity::Critical, T0)).await;
    let id = a.id;
    let ended = store
        .change_alert(id, &AlertChange::End, None, Some("condition ended"), t(0))
        .await
        .expect("end");
    assert_eq!((ended.state, ended.active, ended.returned_at), (Returned, false, Some(t(0))));
    assert!(
        store
            .alerts(&AlertFilter { rule: some("contract.isa"), ..AlertFilter::open() })
            .await
            .expect("open")
            .iter()
            .any(|r| r.id == id),
        "a returned alert is open"
    );
    let again = store.change_alert(id, &AlertChange::End, None, None, t(1)).await;
    assert!(matches!(again, Err(StoreError::AlertTransition { from: Returned, .. })), "{again:?}");
    let resumed =
        store.change_alert(id, &AlertChange::Resume, None, None, t(2)).await.expect("resume");
    assert_eq!((resumed.state, resumed.active, resumed.returned_at), (Raised, true, None));
    store.change_alert(id, &AlertChange::End, None, None, t(3)).await.expect("end again");
    // Shelved while returned: the state stays.
    let shelf = AlertChange::Shelve { reason: "works on site".into(), until: t(3_600) };
    let nameless = store.change_alert(id, &shelf, None, None, t(4)).await;
    assert!(matches!(nameless, Err(StoreError::InvalidQuery { param: "by", .. })), "{nameless:?}");
    let shelved = store
        .change_alert(id, &shelf, Some("ops-anna"), Some("works on site"), t(4))
        .await
        .expect("shelve");
    assert_eq!(shelved.state, Returned);
    assert_eq!(
        shelved.shelved,
        Some(Shelf {
            by: "ops-anna".into(),
            reason: "works on site".into(),
            at: t(4),
            until: t(3_600)
        })
    );
    let listed = |shelved, suppressed| AlertFilter {
        rule: some("contract.isa"),
        shelved,
        suppressed,
        ..AlertFilter::open()
    };
    assert_eq!(store.alerts(&listed(Some(true), None)).await.expect("shelved").len(), 1);
    assert_eq!(store.expired_shelves(t(3_599)).await.expect("expired"), Vec::<i64>::new());
    assert_eq!(store.expired_shelves(t(3_600)).await.expect("expired"), vec![id]);
    let unshelved = store
        .change_alert(id, &AlertChange::Unshelve, None, Some("shelf expired"), t(3_600))
        .await
        .expect("unshelve");
    assert_eq!((unshelved.state, unshelved.shelved.clone()), (Returned, None));
    let twice =
        store.change_alert(id, &AlertChange::Unshelve, Some("ops-anna"), None, t(3_601)).await;
    assert!(matches!(twice, Err(StoreError::AlertNotShelved(i)) if i == id), "{twice:?}");
    // Acknowledging the returned alert clears it.
    let acked = store.acknowledge_alert(id, "ops-anna", Some("seen"), t(3_602)).await.expect("ack");
    assert_eq!(acked.state, Cleared);
    assert_eq!(acked.acknowledged.as_ref().map(|a| a.by.as_str()), Some("ops-anna"));
    assert_eq!(acked.cleared.as_ref().and_then(|c| c.by.as_deref()), Some("ops-anna"));
    let late = store.change_alert(id, &shelf, Some("ops-anna"), None, t(3_603)).await;
    assert!(matches!(late, Err(StoreError::AlertTransition { from: Cleared, .. })), "{late:?}");
    let events = store.alert_events(id).await.expect("events");
    assert_eq!(
        events.iter().map(|e| (e.from, e.to, e.action, e.by.clone())).collect::<Vec<_>>(),
        vec![
            (None, Raised, None, None),
            (Some(Raised), Returned, Some(M::End), None),
            (Some(Returned), Raised, Some(M::Resume), None),
            (Some(Raised), Returned, Some(M::End), None),
            (Some(Returned), Returned, Some(M::Shelve), some("ops-anna")),
            (Some(Returned), Returned, Some(M::Unshelve), None),
            (Some(Returned), Cleared, Some(M::Acknowledge), some("ops-anna")),
        ]
    );
    // An acknowledged alert clears when its condition ends.
    let b =
        raise(store, &new_alert("contract.isa", subject.clone(), Severity::Critical, T0 + 1)).await;
    store.acknowledge_alert(b.id, "ops-anna", None, t(3_700)).await.expect("ack");
    let ended = store
        .change_alert(b.id, &AlertChange::End, None, Some("condition ended"), t(3_701))
        .await
        .expect("end");
    assert_eq!((ended.state, ended.active), (Cleared, false));
    assert_eq!(ended.cleared.as_ref().map(|c| c.by.clone()), Some(None));
    // A raise recorded suppressed, then lifted.
    let by = Suppression {
        reason: SuppressionReason::SuppressedByRule,
        by_alert: Some(b.id),
        by_operation: None,
    };
    let c = raise(
        store,
        &NewAlert {
            suppressed: Some(by.clone()),
            ..new_alert("contract.isa", subject, Severity::Warning, T0 + 2)
        },
    )
    .await;
    assert_eq!(c.suppressed, Some(by.clone()));
    // Not signalled: the raise wrote no outbox event (the returned alert's return did).
    let subject_of = |id: i64| format!("alert/{id}");
    let mut signalled = Vec::new();
    let mut after = 0;
    loop {
        let page = store.outbox_events(after, 1_000).await.expect("outbox");
        let Some(last) = page.last() else { break };
        after = last.id;
        signalled.extend(
            page.into_iter()
                .filter(|e| e.subject == subject_of(c.id) || e.subject == subject_of(id))
                .map(|e| (e.subject, e.event_type)),
        );
    }
    let types = |id: i64| -> Vec<&str> {
        signalled.iter().filter(|(s, _)| *s == subject_of(id)).map(|(_, t)| t.as_str()).collect()
    };
    assert_eq!(types(c.id), Vec::<&str>::new(), "a suppressed raise is not signalled");
    assert!(types(id).contains(&crate::outbox::event_type::ALERT_RETURNED), "{signalled:?}");
    assert_eq!(store.alerts(&listed(None, Some(true))).await.expect("suppressed").len(), 1);
    let lifted = store
        .change_alert(c.id, &AlertChange::Unsuppress, None, None, t(3_800))
        .await
        .expect("unsuppress");
    assert_eq!((lifted.state, lifted.suppressed), (Raised, None));
    let again = store
        .change_alert(c.id, &AlertChange::Suppress(by.clone()), None, None, t(3_801))
        .await
        .expect("suppress");
    assert_eq!(again.suppressed, Some(by));
    assert!(store
        .alerts(&listed(None, Some(true)))
        .await
        .expect("suppressed")
        .iter()
        .all(|r| r.id == c.id));
    store.clear_alert(c.id, Some("ops-anna"), None, t(3_802)).await.expect("clear");
    // Raised under a road operation: the raise's note names it (the record keeps the reason).
    let under = Suppression {
        reason: SuppressionReason::Operation,
        by_alert: None,
        by_operation: Some("op-0195b1c2d3e-4f5a6b7c".into()),
    };
    let o = raise(
        store,
        &NewAlert {
            suppressed: Some(under),
            ..new_alert(
                "contract.isa",
                AlertSubject::Device(dev("isa-op")),
                Severity::Warning,
                T0 + 2,
            )
        },
    )
    .await;
    assert_eq!(
        o.suppressed,
        Some(Suppression {
            reason: SuppressionReason::Operation,
            by_alert: None,
            by_operation: None
        })
    );
    let raised = store.alert_events(o.id).await.expect("events");
    assert_eq!(raised[0].note.as_deref(), Some("operation op-0195b1c2d3e-4f5a6b7c"));
    store.clear_alert(o.id, Some("ops-anna"), None, t(3_803)).await.expect("clear");
}

/// The stream clears by key when a condition ends: only that key's open alert moves, with
/// no operator; grouped alerts keep their member count.
pub async fn automatic_clear_by_key_leaves_other_keys_open(store: &Store) {
    let rule = "contract.auto-clear";
    let on_segment = AlertSubject::Segment(seg("ac-seg-1"));
    let segment_alert = raise(
        store,
        &NewAlert {
            kind: AlertKind::SegmentGroup,
            members: 3,
            ..new_alert(rule, on_segment.clone(), Severity::Warning, T0)
        },
    )
    .await;
    let rule_alert = raise(
        store,
        &NewAlert {
            kind: AlertKind::RateLimitOverflow,
            ..new_alert(rule, AlertSubject::Rule, Severity::Warning, T0)
        },
    )
    .await;
    assert_eq!(
        (segment_alert.members, segment_alert.kind, rule_alert.subject.clone()),
        (3, AlertKind::SegmentGroup, AlertSubject::Rule)
    );

    store.update_alert_members(segment_alert.id, 7).await.expect("members");
    assert_eq!(store.alert(segment_alert.id).await.expect("alert").map(|a| a.members), Some(7));
    assert!(matches!(
        store.update_alert_members(i64::MAX, 1).await,
        Err(StoreError::AlertNotFound(i64::MAX))
    ));

    let cleared = store
        .clear_open_alert(rule, &on_segment, EventTime(T0 + 90_000))
        .await
        .expect("auto clear");
    let cleared = cleared.expect("the open alert of the key");
    assert_eq!(
        (cleared.id, cleared.state, cleared.members),
        (segment_alert.id, AlertState::Cleared, 7)
    );
    assert_eq!(
        cleared.cleared,
        Some(Clearance { by: None, note: None, at: EventTime(T0 + 90_000) })
    );
    assert_eq!(
        moves(store, segment_alert.id).await,
        vec![
            (None, AlertState::Raised, None, None, 0),
            (Some(AlertState::Raised), AlertState::Cleared, None, None, 90_000)
        ]
    );
    assert_eq!(
        store.alert(rule_alert.id).await.expect("alert"),
        Some(rule_alert.clone()),
        "another key of the rule stays open"
    );
    assert_eq!(
        store
            .clear_open_alert(rule, &on_segment, EventTime(T0 + 95_000))
            .await
            .expect("nothing open"),
        None
    );
    assert_eq!(moves(store, segment_alert.id).await.len(), 2);
}

/// Listing: each filter alone and combined, newest first with ties by id, and cursor pages
/// that neither skip nor repeat.
pub async fn alert_listing_filters_and_pages_by_cursor(store: &Store) {
    // A time range no other check raises in, so the listing sees only these alerts.
    let base = T0 + 400 * DAY_MS;
    let (a, b) = ("contract.list-a", "contract.list-b");
    let d1 = AlertSubject::Device(dev("ls-1"));
    let a1 = raise(store, &new_alert(a, d1.clone(), Severity::Warning, base + 1_000)).await.id;
    let a2 = raise(
        store,
        &new_alert(a, AlertSubject::Device(dev("ls-2")), Severity::Critical, base + 2_000),
    )
    .await
    .id;
    let a3 = raise(
        store,
        &new_alert(b, AlertSubject::Segment(seg("ls-seg")), Severity::Info, base + 3_000),
    )
    .await
    .id;
    // Raised at the same instant as a3: the later id lists first.
    let a4 = raise(store, &new_alert(b, d1.clone(), Severity::Critical, base + 3_000)).await.id;
    let a5 =
        raise(store, &new_alert(a, AlertSubject::Rule, Severity::Warning, base + 5_000)).await.id;
    store.acknowledge_alert(a2, "ops-anna", None, EventTime(base + 6_000)).await.expect("ack");
    store.clear_alert(a1, None, None, EventTime(base + 7_000)).await.expect("clear");

    let window = AlertFilter {
        raised_from: Some(EventTime(base)),
        raised_to: Some(EventTime(base + DAY_MS)),
        ..AlertFilter::default()
    };
    let ids = |f: AlertFilter| async move {
        store.alerts(&f).await.expect("alerts").into_iter().map(|a| a.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(window.clone()).await, vec![a5, a4, a3, a2, a1]);
    assert_eq!(
        ids(AlertFilter { states: AlertState::OPEN.to_vec(), ..window.clone() }).await,
        vec![a5, a4, a3, a2]
    );
    assert_eq!(
        ids(AlertFilter {
            states: AlertFilter::open().states,
            rule: Some(a.into()),
            ..window.clone()
        })
        .await,
        vec![a5, a2]
    );
    assert_eq!(
        ids(AlertFilter { states: vec![AlertState::Cleared], ..window.clone() }).await,
        vec![a1]
    );
    assert_eq!(
        ids(AlertFilter { states: vec![AlertState::Acknowledged], ..window.clone() }).await,
        vec![a2]
    );
    assert_eq!(
        ids(AlertFilter { severities: vec![Severity::Critical], ..window.clone() }).await,
        vec![a4, a2]
    );
    assert_eq!(
        ids(AlertFilter { severities: vec![Severity::Info, Severity::Warning], ..window.clone() })
            .await,
        vec![a5, a3, a1]
    );
    assert_eq!(ids(AlertFilter { rule: Some(a.into()), ..window.clone() }).await, vec![a5, a2, a1]);
    assert_eq!(
        ids(AlertFilter { subject_kind: Some(SubjectKind::Device), ..window.clone() }).await,
        vec![a4, a2, a1]
    );
    assert_eq!(
        ids(AlertFilter { subject_kind: Some(SubjectKind::Rule), ..window.clone() }).await,
        vec![a5]
    );
    assert_eq!(
        ids(AlertFilter { subject: Some(d1.clone()), ..window.clone() }).await,
        vec![a4, a1]
    );
    assert_eq!(
        ids(AlertFilter { subject: Some(d1), rule: Some(b.into()), ..AlertFilter::default() })
            .await,
        vec![a4]
    );
    let range = AlertFilter {
        raised_from: Some(EventTime(base + 2_000)),
        raised_to: Some(EventTime(base + 5_000)),
        ..AlertFilter::default()
    };
    assert_eq!(ids(range).await, vec![a4, a3, a2]);

    // Pages of two, each starting after the last id of the one before.
    let page = |before_id: Option<i64>| AlertFilter { before_id, limit: 2, ..window.clone() };
    assert_eq!(ids(page(None)).await, vec![a5, a4]);
    assert_eq!(ids(page(Some(a4))).await, vec![a3, a2]);
    assert_eq!(ids(page(Some(a2))).await, vec![a1]);
    assert_eq!(ids(page(Some(a1))).await, Vec::<i64>::new());
    assert_eq!(
        ids(AlertFilter {
            states: AlertFilter::open().states,
            before_id: Some(a5),
            limit: 1,
            ..window.clone()
        })
        .await,
        vec![a4]
    );
    assert_eq!(ids(AlertFilter { limit: 0, ..window }).await, Vec::<i64>::new());

    // What the list returns is the whole record.
    let listed = store
        .alerts(&AlertFilter { rule: Some(b.into()), ..AlertFilter::default() })
        .await
        .expect("alerts");
    assert_eq!(listed.first(), store.alert(a4).await.expect("alert").as_ref());
}
