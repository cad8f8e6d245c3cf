//! Road operations: versions, lifecycle, trail and events, idempotent creation, lists.

use telemetry::EventTime;

use super::T0;
use crate::operations::{event_type, MAX_PAGE};
use crate::{
    ActualWindow, ChangeKind, Created, Operation, OperationFilter, OperationKind,
    OperationSeverity, OperationStatus, PlannedWindow, Store, StoreError,
};

const HOUR: i64 = 3_600_000;

async fn seed(store: &Store) -> Vec<telemetry::RoadSegment> {
    let segs = telemetry::segment::parse_geojson(telemetry::segment::FLORENCE_SEED).expect("seed");
    store.upsert_segments(&segs).await.expect("segments");
    segs
}

fn op(id: &str, kind: OperationKind, segments: Vec<String>, from: i64) -> Operation {
    Operation {
        id: id.into(),
        version: 1,
        kind,
        title: format!("{id} title"),
        description: Some("works on the carriageway".into()),
        severity: OperationSeverity::Moderate,
        status: OperationStatus::Planned,
        agency: "mobility".into(),
        segments,
        derived_segments: vec![],
        point: None,
        area: None,
        closes_road: kind == OperationKind::Closure,
        planned: PlannedWindow { from: EventTime(from), to: EventTime(from + 2 * HOUR) },
        actual: ActualWindow::default(),
        notes: vec![],
        linked_alerts: vec![],
        external_ref: None,
        created_at: EventTime(T0),
        created_by: "ada".into(),
        updated_at: EventTime(T0),
        updated_by: "ada".into(),
    }
}

/// Outbox events of one operation, as (type, version).
async fn events_of(store: &Store, id: &str) -> Vec<(String, i64)> {
    let all = store.outbox_events(0, 10_000).await.expect("outbox");
    all.into_iter()
        .filter(|e| e.subject == format!("operation/{id}"))
        .map(|e| (e.event_type, e.data["version"].as_i64().unwrap_or(0)))
        .collect()
}

pub async fn operations_keep_versions_lifecycle_trail_and_events(store: &Store) {
    let segs = seed(store).await;
    let a = op("op-c1", OperationKind::Roadworks, vec![segs[0].id.to_string()], T0);
    let created = store.create_operation(&a, Some("permit-1"), "d1").await.expect("create");
    assert_eq!(created, Created::New(a.clone()));
    // The same key and request: the same operation, nothing written again.
    let again = store
        .create_operation(
            &op("op-c1b", OperationKind::Roadworks, a.segments.clone(), T0),
            Some("permit-1"),
            "d1",
        )
        .await
        .expect("again");
    assert_eq!(again, Created::Existing(a.clone()));
    let reused = store
        .create_operation(
            &op("op-c1c", OperationKind::Roadworks, a.segments.clone(), T0),
            Some("permit-1"),
            "d2",
        )
        .await
        .expect("reused");
    assert_eq!(reused, Created::KeyReused("op-c1".into()));
    assert_eq!(store.operation("op-c1b").await.expect("get"), None);
    // Another creator may use the same key.
    let mut other = op("op-c1d", OperationKind::Event, vec![], T0);
    other.point = Some([11.25, 43.77]);
    other.created_by = "permits".into();
    assert!(matches!(
        store.create_operation(&other, Some("permit-1"), "d1").await,
        Ok(Created::New(_))
    ));
    // Unknown segments write nothing and name the field.
    let bad = op("op-c1e", OperationKind::Closure, vec!["no-such-segment".into()], T0);
    match store.create_operation(&bad, None, "d").await {
        Err(StoreError::OperationInvalid { field, .. }) => assert_eq!(field, "segments"),
        other => panic!("unknown segment: {other:?}"),
    }
    assert_eq!(store.operation("op-c1e").await.expect("get"), None);

    // An edit with the version read; a second writer with the same version changes nothing.
    let v2 = store
        .change_operation("op-c1", Some(1), "bob", EventTime(T0 + 1), ChangeKind::Updated, |o| {
            o.title = "Lungarno works".into();
            Ok(())
        })
        .await
        .expect("edit");
    assert_eq!((v2.version, v2.updated_by.as_str(), v2.created_by.as_str()), (2, "bob", "ada"));
    let stale = store
        .change_operation("op-c1", Some(1), "eve", EventTime(T0 + 2), ChangeKind::Updated, |o| {
            o.title = "lost".into();
            Ok(())
        })
        .await;
    assert!(
        matches!(stale, Err(StoreError::OperationVersion { expected: 1, current: 2, .. })),
        "{stale:?}"
    );
    assert_eq!(
        store.operation("op-c1").await.expect("get").expect("exists").title,
        "Lungarno works"
    );

    // Concurrent writers naming the same version: exactly one wins.
    let (x, y) = tokio::join!(
        store.change_operation(
            "op-c1",
            Some(2),
            "x",
            EventTime(T0 + 3),
            ChangeKind::Updated,
            |o| {
                o.severity = OperationSeverity::Major;
                Ok(())
            }
        ),
        store.change_operation(
            "op-c1",
            Some(2),
            "y",
            EventTime(T0 + 3),
            ChangeKind::Updated,
            |o| {
                o.severity = OperationSeverity::Critical;
                Ok(())
            }
        ),
    );
    assert_eq!(u8::from(x.is_ok()) + u8::from(y.is_ok()), 1, "{x:?} {y:?}");
    let winner = x.or(y).expect("one wins");
    assert_eq!(store.operation("op-c1").await.expect("get"), Some(winner.clone()));

    // Lifecycle.
    let illegal = store
        .move_operation("op-c1", None, OperationStatus::Ended, None, "bob", EventTime(T0 + 4))
        .await;
    assert!(
        matches!(
            illegal,
            Err(StoreError::OperationTransition { from: "planned", to: "ended", .. })
        ),
        "{illegal:?}"
    );
    let active = store
        .move_operation(
            "op-c1",
            None,
            OperationStatus::Active,
            Some(EventTime(T0 + 5)),
            "bob",
            EventTime(T0 + 6),
        )
        .await
        .expect("activate");
    assert_eq!(
        (active.status, active.actual.from),
        (OperationStatus::Active, Some(EventTime(T0 + 5)))
    );
    let noted = store
        .add_operation_note("op-c1", "carla", "barriers up", EventTime(T0 + 7))
        .await
        .expect("note");
    assert_eq!(
        noted.notes.last().map(|n| (n.by.as_str(), n.text.as_str())),
        Some(("carla", "barriers up"))
    );
    let ended = store
        .move_operation("op-c1", None, OperationStatus::Ended, None, "bob", EventTime(T0 + 8))
        .await
        .expect("end");
    assert_eq!(ended.actual.to, Some(EventTime(T0 + 8)));
    // Final: every change refused, nothing written.
    for r in [
        store.add_operation_note("op-c1", "carla", "late", EventTime(T0 + 9)).await,
        store
            .move_operation(
                "op-c1",
                None,
                OperationStatus::Cancelled,
                None,
                "bob",
                EventTime(T0 + 9),
            )
            .await,
        store
            .change_operation(
                "op-c1",
                Some(ended.version),
                "bob",
                EventTime(T0 + 9),
                ChangeKind::Updated,
                |o| {
                    o.title = "x".into();
                    Ok(())
                },
            )
            .await,
    ] {
        assert!(matches!(r, Err(StoreError::OperationFinal { status: "ended", .. })), "{r:?}");
    }
    assert_eq!(store.operation("op-c1").await.expect("get"), Some(ended.clone()));

    // The trail and the events: one per change, in order, with who and what.
    let trail = store.operation_changes("op-c1").await.expect("trail");
    let actions: Vec<(i64, &str, &str)> =
        trail.iter().map(|c| (c.version, c.by.as_str(), c.action.as_str())).collect();
    assert_eq!(
        actions,
        [
            (1, "ada", "created"),
            (2, "bob", "updated"),
            (3, winner.updated_by.as_str(), "updated"),
            (4, "bob", "status_changed"),
            (5, "carla", "note_added"),
            (6, "bob", "status_changed"),
        ]
    );
    assert_eq!(trail[1].changes, serde_json::json!({"title": ["op-c1 title", "Lungarno works"]}));
    let events = events_of(store, "op-c1").await;
    let expected: Vec<(String, i64)> = [
        (event_type::CREATED, 1),
        (event_type::UPDATED, 2),
        (event_type::UPDATED, 3),
        (event_type::STATUS_CHANGED, 4),
        (event_type::NOTE_ADDED, 5),
        (event_type::STATUS_CHANGED, 6),
    ]
    .into_iter()
    .map(|(t, v)| (t.to_owned(), v))
    .collect();
    assert_eq!(events, expected);
}

pub async fn operation_lists_filter_and_page_by_cursor(store: &Store) {
    let segs = seed(store).await;
    let base = T0 + 100 * HOUR;
    let mut made = Vec::new();
    for i in 0..7 {
        let kind = if i % 2 == 0 { OperationKind::Closure } else { OperationKind::Event };
        let mut o = op(
            &format!("op-l{i}"),
            kind,
            vec![segs[i % segs.len()].id.to_string()],
            base + i as i64 * HOUR,
        );
        o.agency = if i < 3 { "transit".into() } else { "list-agency".into() };
        store.create_operation(&o, None, "d").await.expect("create");
        made.push(o);
    }
    store
        .move_operation("op-l0", None, OperationStatus::Cancelled, None, "bob", EventTime(base))
        .await
        .expect("cancel");
    let ids = |ops: &[Operation]| ops.iter().map(|o| o.id.clone()).collect::<Vec<_>>();
    let agency = Some("list-agency".to_owned());
    // Pages of two, by cursor, cover the open ones once each.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let f = OperationFilter {
            agency: agency.clone(),
            after: after.clone(),
            limit: 2,
            ..Default::default()
        };
        let page = store.operations(&f).await.expect("page");
        assert!(page.operations.len() <= 2);
        seen.extend(ids(&page.operations));
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["op-l3", "op-l4", "op-l5", "op-l6"]);
    // Default: not ended or cancelled.
    let f =
        OperationFilter { agency: Some("transit".into()), limit: MAX_PAGE, ..Default::default() };
    assert_eq!(ids(&store.operations(&f).await.expect("list").operations), ["op-l1", "op-l2"]);
    let f = OperationFilter {
        agency: Some("transit".into()),
        statuses: vec![OperationStatus::Cancelled],
        limit: 10,
        ..Default::default()
    };
    assert_eq!(ids(&store.operations(&f).await.expect("list").operations), ["op-l0"]);
    let f = OperationFilter {
        agency: agency.clone(),
        kind: Some(OperationKind::Event),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(ids(&store.operations(&f).await.expect("list").operations), ["op-l3", "op-l5"]);
    // Time: windows overlapping [from, to).
    let f = OperationFilter {
        agency: agency.clone(),
        from: Some(EventTime(base + 5 * HOUR + 1)),
        to: Some(EventTime(base + 6 * HOUR)),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(ids(&store.operations(&f).await.expect("list").operations), ["op-l4", "op-l5"]);
    // Area: the bounding box of one segment finds the operations on it.
    let s3 = &segs[3 % segs.len()];
    let lon = s3.coordinates.iter().map(|p| p[0]);
    let lat = s3.coordinates.iter().map(|p| p[1]);
    let bbox = [
        lon.clone().fold(f64::MAX, f64::min),
        lat.clone().fold(f64::MAX, f64::min),
        lon.fold(f64::MIN, f64::max),
        lat.fold(f64::MIN, f64::max),
    ];
    let f = OperationFilter {
        agency: agency.clone(),
        bbox: Some(bbox),
        limit: 10,
        ..Default::default()
    };
    let found = ids(&store.operations(&f).await.expect("list").operations);
    assert!(found.contains(&"op-l3".to_owned()), "{found:?}");
    let f = OperationFilter {
        agency,
        bbox: Some([-10.0, -10.0, -9.0, -9.0]),
        limit: 10,
        ..Default::default()
    };
    assert!(store.operations(&f).await.expect("list").operations.is_empty());
    // The segment index follows the open operations.
    let on = store.operations_on_segment(s3.id.as_str()).await.expect("on segment");
    assert!(on.contains(&"op-l3".to_owned()), "{on:?}");
}

/// Operations given by a point or an area are resolved to the segments they touch, which
/// the segment look-up (and with it suppression) then uses.
pub async fn point_and_area_operations_derive_their_segments(store: &Store) {
    // Three parallel eastbound streets 200 m apart, far from the other tests' segments.
    let (kx, ky) = telemetry::cadastre::geometry::metres_per_degree(50.0);
    let (lon0, lat0) = (20.0, 50.0);
    let street = |id: &str, north_m: f64| telemetry::RoadSegment {
        id: telemetry::SegmentId::parse(id).expect("id"),
        name: id.into(),
        kind: "urban".into(),
        coordinates: vec![[lon0, lat0 + north_m / ky], [lon0 + 500.0 / kx, lat0 + north_m / ky]],
        length_m: 500.0,
        lanes: 2,
        speed_limit_kmh: 50.0,
        free_flow_kmh: 50.0,
        capacity_vph: 1_800.0,
    };
    store
        .upsert_segments(&[
            street("derive-a", 0.0),
            street("derive-b", 200.0),
            street("derive-c", 400.0),
        ])
        .await
        .expect("segments");
    let at = |east_m: f64, north_m: f64| [lon0 + east_m / kx, lat0 + north_m / ky];
    let derived = |o: &Operation| o.derived_segments.clone();
    let mut o = op("op-d1", OperationKind::Incident, vec![], T0 + 300 * HOUR);
    // A point 12 m north of street a: that street.
    o.point = Some(at(250.0, 12.0));
    store.place_operation(&mut o, 30.0).await.expect("place");
    assert_eq!(derived(&o), ["derive-a"]);
    // Halfway between a and b (as at a junction): both, when the distance reaches them.
    o.point = Some(at(250.0, 100.0));
    store.place_operation(&mut o, 150.0).await.expect("place");
    assert_eq!(derived(&o), ["derive-a", "derive-b"]);
    // Beyond the distance: none, and the operation still stands on its point.
    store.place_operation(&mut o, 30.0).await.expect("place");
    assert!(derived(&o).is_empty());
    // An area around b only; then one across b and c with no corner near a street.
    let square = |w: f64, s: f64, e: f64, n: f64| {
        let c = [at(w, s), at(e, s), at(e, n), at(w, n), at(w, s)];
        serde_json::json!({"type": "Polygon", "coordinates": [c]})
    };
    o.point = None;
    o.area = Some(square(100.0, 150.0, 200.0, 250.0));
    store.place_operation(&mut o, 30.0).await.expect("place");
    assert_eq!(derived(&o), ["derive-b"]);
    o.area = Some(square(100.0, 150.0, 200.0, 450.0));
    store.place_operation(&mut o, 30.0).await.expect("place");
    assert_eq!(derived(&o), ["derive-b", "derive-c"]);
    // Stored: the look-up by segment finds it on its derived segments.
    store.create_operation(&o, None, "d").await.expect("create");
    for (segment, on) in [("derive-a", false), ("derive-b", true), ("derive-c", true)] {
        let ops = store.operations_on_segment(segment).await.expect("on segment");
        assert_eq!(ops.contains(&"op-d1".to_owned()), on, "{segment}: {ops:?}");
    }
    let stored = store.operation("op-d1").await.expect("read").expect("stored");
    assert_eq!(stored.affected_segments(), ["derive-b", "derive-c"]);
    // Given segments win: nothing derived.
    let mut with = op("op-d2", OperationKind::Incident, vec!["derive-a".into()], T0);
    with.area = Some(square(100.0, 150.0, 200.0, 450.0));
    with.derived_segments = vec!["derive-c".into()];
    store.place_operation(&mut with, 30.0).await.expect("place");
    assert!(with.derived_segments.is_empty());
    assert_eq!(with.affected_segments(), ["derive-a"]);
}
