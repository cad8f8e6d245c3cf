//! The cadastre import: versions, retirement, device links, dry runs, area queries.

use telemetry::cadastre::link::LinkOutcome;
use telemetry::cadastre::CadastreSegment;
use telemetry::{EventTime, RoadSegment, SegmentId};

use super::{dev, T0};
use crate::{DeviceRecord, Store};

fn road(id: &str, lat: f64) -> CadastreSegment {
    let coordinates = vec![[11.30, lat], [11.31, lat], [11.32, lat]];
    CadastreSegment {
        segment: RoadSegment {
            id: SegmentId::parse(id).expect("id"),
            name: format!("Via {id}"),
            kind: "local".into(),
            length_m: telemetry::cadastre::geometry::length_m(&coordinates),
            coordinates,
            lanes: 1,
            speed_limit_kmh: 50.0,
            free_flow_kmh: 37.5,
            capacity_vph: 600.0,
        },
        one_way: false,
    }
}

/// Runs last among the contract's functions: it imports the live segments as they are
/// plus its own, so the others' segments stay live and unchanged.
pub async fn cadastre_import_is_versioned_and_links_devices(store: &Store) {
    let base: Vec<CadastreSegment> = store
        .segments()
        .await
        .expect("segments")
        .into_iter()
        .map(|segment| CadastreSegment { segment, one_way: false })
        .collect();
    let file1: Vec<CadastreSegment> = base
        .iter()
        .cloned()
        .chain([road("cad-a", 43.9000), road("cad-b", 43.9005), road("cad-c", 43.9010)])
        .collect();
    let s = store.import_cadastre(&file1, 30.0, EventTime(T0), false).await.expect("import");
    assert_eq!((s.added, s.changed, s.retired, s.unchanged), (3, 0, 0, base.len()), "{s:?}");

    // Devices: near a; between c and e (ambiguous once e exists); far away; on b without
    // a position (its link is kept when b is retired).
    let record = |id: &str, segment: Option<&str>| DeviceRecord {
        id: dev(id),
        kind: Some("traffic_loop".into()),
        segment: segment.map(|s| SegmentId::parse(s).expect("id")),
        registered_at: EventTime(T0),
    };
    store
        .upsert_devices(&[
            record("cad-near-a", None),
            record("cad-between", None),
            record("cad-far", None),
            record("cad-on-b", Some("cad-b")),
        ])
        .await
        .expect("devices");
    for (id, lat) in [("cad-near-a", 43.90005), ("cad-between", 43.9011), ("cad-far", 43.95)] {
        assert!(store
            .set_device_position(&dev(id), Some([11.305, lat]), None)
            .await
            .expect("position"));
    }
    assert!(!store
        .set_device_position(&dev("cad-nobody"), Some([11.0, 43.0]), None)
        .await
        .expect("none"));

    let mut changed_a = road("cad-a", 43.9000);
    changed_a.segment.name = "Via Nuova".into();
    let file2: Vec<CadastreSegment> = base
        .iter()
        .cloned()
        .chain([changed_a, road("cad-c", 43.9010), road("cad-e", 43.9012)])
        .collect();
    let t1 = EventTime(T0 + 60_000);
    let dry = store.import_cadastre(&file2, 30.0, t1, true).await.expect("dry run");
    assert!(dry.dry_run);
    assert_eq!((dry.added, dry.changed, dry.retired), (1, 1, 1), "{dry:?}");
    let a = SegmentId::parse("cad-a").expect("id");
    assert_eq!(store.segment_version(&a).await.expect("version"), Some((1, EventTime(T0))));
    assert!(
        store.retired_segments().await.expect("retired").is_empty(),
        "a dry run writes nothing"
    );

    let s = store.import_cadastre(&file2, 30.0, t1, false).await.expect("import");
    assert_eq!((s.added, s.changed, s.retired, s.unchanged), (1, 1, 1, base.len() + 1), "{s:?}");
    assert_eq!(s.retired_ids, ["cad-b"]);
    assert_eq!((s.devices_linked, s.devices_relinked), (1, 1), "{s:?}");
    assert_eq!(s.unmatched, [dev("cad-far")]);
    match s.ambiguous.as_slice() {
        [LinkOutcome::Ambiguous { device, candidates }] => {
            assert_eq!(device, &dev("cad-between"));
            let ids: Vec<&str> = candidates.iter().map(|c| c.segment.as_str()).collect();
            assert_eq!(ids, ["cad-c", "cad-e"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.segment_version(&a).await.expect("version"), Some((2, t1)));
    let live = store.segments().await.expect("segments");
    assert!(live.iter().all(|s| s.id.as_str() != "cad-b"), "a retired segment is not live");
    assert_eq!(live.len(), base.len() + 3);
    let retired = store.retired_segments().await.expect("retired");
    assert_eq!(retired, vec![(SegmentId::parse("cad-b").expect("id"), t1)]);
    assert!(store
        .unknown_segments(&[SegmentId::parse("cad-b").expect("id")])
        .await
        .expect("known")
        .is_empty());
    let devices = store.devices().await.expect("devices");
    let segment_of =
        |id: &str| devices.iter().find(|d| d.id == dev(id)).and_then(|d| d.segment.clone());
    assert_eq!(segment_of("cad-near-a"), Some(a.clone()));
    assert_eq!(segment_of("cad-between"), None, "an ambiguous match is not linked");
    assert_eq!(
        segment_of("cad-on-b").map(|s| s.as_str().to_owned()),
        Some("cad-b".into()),
        "links are kept"
    );

    // Area queries see the live segments crossing the box only.
    let near_a = store.segments_in([11.304, 43.8999, 11.306, 43.9001]).await.expect("bbox");
    assert_eq!(near_a.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["cad-a"]);
    let all = store.segments_in([11.29, 43.89, 11.33, 43.91]).await.expect("bbox");
    assert_eq!(all.len(), 3, "a, c and e; not the retired b");

    // The same file again changes nothing.
    let again =
        store.import_cadastre(&file2, 30.0, EventTime(T0 + 120_000), false).await.expect("again");
    assert_eq!(
        (again.added, again.changed, again.retired, again.unchanged),
        (0, 0, 0, file2.len()),
        "{again:?}"
    );
    assert_eq!(again.devices_relinked, 0);
    assert_eq!(store.segment_version(&a).await.expect("version"), Some((2, t1)));

    // A retired segment that comes back is a new version.
    let mut file3 = file2.clone();
    file3.push(road("cad-b", 43.9005));
    let back =
        store.import_cadastre(&file3, 30.0, EventTime(T0 + 180_000), false).await.expect("back");
    assert_eq!((back.added, back.retired), (1, 0), "{back:?}");
    let b = SegmentId::parse("cad-b").expect("id");
    assert_eq!(store.segment_version(&b).await.expect("version").map(|v| v.0), Some(2));
    assert!(store.retired_segments().await.expect("retired").is_empty());
}
