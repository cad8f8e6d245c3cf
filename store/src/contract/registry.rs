//! The registry: road segments, devices placed on the map, gateways, API tokens.

use telemetry::{DeviceId, EventTime, SegmentId};

use super::{dev, T0};
use crate::{DeviceRecord, Store};

pub async fn segments_round_trip(store: &Store) {
    let segs = telemetry::segment::parse_geojson(telemetry::segment::FLORENCE_SEED).expect("seed");
    store.upsert_segments(&segs).await.expect("segments");
    store.upsert_segments(&segs).await.expect("segments twice");
    let back = store.segments().await.expect("segments");
    assert_eq!(back.len(), segs.len());
    let mut sorted = segs.clone();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(back, sorted);
    let d = DeviceRecord {
        id: dev("c6"),
        kind: Some("traffic_loop".into()),
        segment: Some(sorted[0].id.clone()),
        registered_at: EventTime(T0),
    };
    store.upsert_devices(std::slice::from_ref(&d)).await.expect("devices");
    let got = store.devices().await.expect("devices");
    assert_eq!(got.iter().find(|x| x.id == d.id), Some(&d));
}

pub async fn gateways_link_devices_until_either_is_decommissioned(store: &Store) {
    let at = EventTime(T0);
    store
        .register_device(&dev("gw-1"), Some("gateway"), None, None, "$7$hash-gw", at)
        .await
        .expect("gateway");
    let one = store
        .register_device(&dev("gw-loop-1"), None, None, Some(&dev("gw-1")), "$7$hash-1", at)
        .await
        .expect("device");
    assert_eq!(one.gateway, Some(dev("gw-1")));
    store
        .register_device(&dev("gw-loop-2"), None, None, Some(&dev("gw-1")), "$7$hash-2", at)
        .await
        .expect("device");
    store
        .register_device(&dev("gw-loop-3"), None, None, None, "$7$hash-3", at)
        .await
        .expect("device");
    let mine = |links: Vec<(DeviceId, DeviceId)>| {
        links.into_iter().filter(|(g, _)| g.as_str().starts_with("gw-")).collect::<Vec<_>>()
    };
    assert_eq!(
        mine(store.gateway_links().await.expect("links")),
        vec![(dev("gw-1"), dev("gw-loop-1")), (dev("gw-1"), dev("gw-loop-2"))]
    );
    let moved = store
        .update_device(
            &dev("gw-loop-3"),
            &crate::DeviceUpdate { gateway: Some(Some(dev("gw-1"))), ..Default::default() },
        )
        .await
        .expect("update");
    assert_eq!(moved.and_then(|d| d.gateway), Some(dev("gw-1")));
    store
        .update_device(
            &dev("gw-loop-1"),
            &crate::DeviceUpdate { gateway: Some(None), ..Default::default() },
        )
        .await
        .expect("update");
    store.decommission_device(&dev("gw-loop-2"), at).await.expect("decommission");
    assert_eq!(
        mine(store.gateway_links().await.expect("links")),
        vec![(dev("gw-1"), dev("gw-loop-3"))],
        "unlinked and decommissioned devices have no grant"
    );
    store.decommission_device(&dev("gw-1"), at).await.expect("decommission");
    assert!(
        mine(store.gateway_links().await.expect("links")).is_empty(),
        "a decommissioned gateway has no grants"
    );
}

pub async fn a_sole_token_revokes_the_others_of_its_name(store: &Store) {
    let at = EventTime(T0);
    store.ensure_token("other", "admin", "digest-other", at).await.expect("token");
    assert_eq!(store.ensure_sole_token("boot", "admin", "digest-1", at).await.expect("token"), 0);
    // The same token again (a restart with the same secret) changes nothing.
    assert_eq!(store.ensure_sole_token("boot", "admin", "digest-1", at).await.expect("token"), 0);
    assert_eq!(store.ensure_sole_token("boot", "admin", "digest-2", at).await.expect("token"), 1);
    assert!(store.token_by_digest("digest-1").await.expect("token").is_none());
    assert_eq!(
        store.token_by_digest("digest-2").await.expect("token").expect("token").name,
        "boot"
    );
    assert!(store.token_by_digest("digest-other").await.expect("token").is_some());
    let live: Vec<String> = store
        .tokens()
        .await
        .expect("token")
        .into_iter()
        .filter(|t| t.revoked_at.is_none())
        .map(|t| t.name)
        .collect();
    assert_eq!(live.iter().filter(|n| *n == "boot").count(), 1, "{live:?}");
}

/// The map's device pages: in-service devices only, each exactly once across pages, each
/// ranked among its segment's in-service devices in bytewise id order; the kinds of
/// in-service devices.
pub async fn devices_are_placed_in_id_order_on_their_segments(store: &Store) {
    let segment = telemetry::RoadSegment {
        id: SegmentId::parse("map-contract").expect("segment id"),
        name: "Via della Mappa".into(),
        kind: "urban".into(),
        coordinates: vec![[11.25, 43.77], [11.26, 43.77]],
        length_m: 800.0,
        lanes: 2,
        speed_limit_kmh: 50.0,
        free_flow_kmh: 45.0,
        capacity_vph: 1_800.0,
    };
    store.upsert_segments(std::slice::from_ref(&segment)).await.expect("segment");
    let record = |id: &str, kind: Option<&str>, on_segment: bool| DeviceRecord {
        id: dev(id),
        kind: kind.map(str::to_owned),
        segment: on_segment.then(|| segment.id.clone()),
        registered_at: EventTime(T0),
    };
    store
        .upsert_devices(&[
            // Bytewise "map-a-2" < "map-a1" (a collation that skips punctuation says otherwise).
            record("map-a1", Some("map_loop"), true),
            record("map-a-2", None, true),
            record("map-b", Some("map_gone"), true),
            record("map-c", Some("map_loop"), true),
            record("map-none", Some("map_air"), false),
        ])
        .await
        .expect("devices");
    store.decommission_device(&dev("map-b"), EventTime(T0 + 1)).await.expect("decommission");
    let mut all = Vec::new();
    let mut after: Option<DeviceId> = None;
    loop {
        let page = store.placed_devices(after.as_ref(), 2).await.expect("placed devices");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        all.extend(page);
    }
    let ids: Vec<&str> = all.iter().map(|d| d.id.as_str()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "every device once: {ids:?}");
    let mine: std::collections::BTreeMap<&str, (Option<&str>, u32, u32)> = all
        .iter()
        .filter(|d| d.id.as_str().starts_with("map-"))
        .map(|d| {
            assert_eq!(d.segment.is_some(), d.id.as_str() != "map-none", "{}", d.id);
            (d.id.as_str(), (d.kind.as_deref(), d.index, d.of))
        })
        .collect();
    assert_eq!(
        mine.into_iter().collect::<Vec<_>>(),
        [
            ("map-a-2", (None, 0, 3)),
            ("map-a1", (Some("map_loop"), 1, 3)),
            ("map-c", (Some("map_loop"), 2, 3)),
            ("map-none", (Some("map_air"), 0, 0)),
        ]
    );
    let kinds = store.device_kinds().await.expect("kinds");
    assert!(kinds.contains(&"map_loop".to_owned()) && kinds.contains(&"map_air".to_owned()));
    assert!(!kinds.contains(&"map_gone".to_owned()), "decommissioned kinds are not listed");
    let mut sorted = kinds.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(kinds, sorted);
}
