//! `GET /api/v1/baselines`: a learned profile as a series aligned with history, and the
//! refusals.

use axum::http::StatusCode;
use store::baselines::LearnSettings;
use store::DeviceRecord;
use telemetry::baseline::{SlotClock, SpreadFloor, SLOT_MS, WEEK_MS};
use telemetry::{DeviceId, EventTime};

use super::{get, reading, state, T0};

#[tokio::test]
async fn a_learned_profile_is_served_per_fifteen_minutes() {
    let s = state().await;
    let segs = telemetry::segment::parse_geojson(telemetry::segment::FLORENCE_SEED).unwrap();
    s.store.upsert_segments(&segs).await.unwrap();
    let segment = segs[0].id.clone();
    s.store
        .upsert_devices(&[DeviceRecord {
            id: DeviceId::parse("bl-api").unwrap(),
            kind: Some("traffic_loop".into()),
            segment: Some(segment.clone()),
            registered_at: EventTime(T0),
        }])
        .await
        .unwrap();
    // Two weeks of one slot: 40 then 44 km/h.
    let start = T0 - T0.rem_euclid(SLOT_MS) + 2 * SLOT_MS;
    let mut readings = Vec::new();
    for (w, v) in [(0, 40.0), (1, 44.0)] {
        for m in 0..15 {
            readings.push(reading("bl-api", start + w * WEEK_MS + m * 60_000, v));
        }
    }
    s.store.write_batch(&store::Batch { readings, ..store::Batch::default() }).await.unwrap();
    let settings = LearnSettings {
        weeks: 2,
        min_samples: 2,
        clock: SlotClock::default(),
        floor: SpreadFloor { relative: 0.1 },
        holidays: vec![],
    };
    let now = EventTime(start + WEEK_MS + SLOT_MS + 6 * 60_000);
    s.store.refresh_baselines(&settings, now).await.unwrap();
    let from = start + 2 * WEEK_MS - SLOT_MS + 60_000;
    let (status, body) = get(
        &s,
        &format!(
            "/api/v1/baselines?segment={segment}&metric=speed_kmh&from={from}&to={}",
            from + 2 * SLOT_MS
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let points = body["points"].as_array().unwrap();
    // Buckets overlapping [from, to): the one before the slot, the slot, and the next.
    assert_eq!(points.len(), 3, "{body}");
    assert_eq!(points[1]["t"], start + 2 * WEEK_MS);
    assert_eq!(points[1]["centre"], 42.0);
    // MAD 2 × 1.4826 = 2.97 is under the floor, 10 % of 42.
    assert!((points[1]["spread"].as_f64().unwrap() - 4.2).abs() < 1e-9, "{body}");
    assert_eq!(points[1]["samples"], 2);
    assert!(points[0]["centre"].is_null() && points[2]["centre"].is_null(), "{body}");
    assert_eq!(body["learned_slots"], 1);
    let device = get(
        &s,
        &format!(
            "/api/v1/baselines?device=bl-api&metric=speed_kmh&from={from}&to={}",
            from + 2 * SLOT_MS
        ),
    )
    .await;
    assert_eq!(device.1["points"][1]["centre"], 42.0, "{}", device.1);

    for (uri, want, param) in [
        (
            format!("/api/v1/baselines?segment={segment}&metric=headway_s"),
            StatusCode::BAD_REQUEST,
            "metric",
        ),
        (
            format!("/api/v1/baselines?segment={segment}&device=bl-api&metric=speed_kmh"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "segment",
        ),
        (
            "/api/v1/baselines?metric=speed_kmh".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "segment",
        ),
        (
            "/api/v1/baselines?segment=nowhere&metric=speed_kmh".to_owned(),
            StatusCode::NOT_FOUND,
            "segment",
        ),
        (
            format!("/api/v1/baselines?segment={segment}&metric=speed_kmh&from=now-40d"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "to",
        ),
        (
            format!("/api/v1/baselines?segment={segment}&metric=flow_vph&bogus=1"),
            StatusCode::BAD_REQUEST,
            "bogus",
        ),
    ] {
        let (status, body) = get(&s, &uri).await;
        assert_eq!(status, want, "{uri}: {body}");
        assert_eq!(body["error"]["param"], param, "{uri}: {body}");
    }
}
