//! Test data: telemetry payloads and topics, a road segment, a linked loop detector, and
//! a probe that proves the pipeline stores what is published.

use std::time::Duration;

use crate::{publish_all_with, wait_for};

/// Compact telemetry payload with `readings` as (metric, value), all at `ts_ms`.
pub fn compact(seq: u64, ts_ms: i64, readings: &[(&str, f64)]) -> Vec<u8> {
    let rs: Vec<serde_json::Value> =
        readings.iter().map(|(m, v)| serde_json::json!({"m": m, "v": v})).collect();
    serde_json::to_vec(&serde_json::json!({"seq": seq, "ts": ts_ms, "readings": rs})).expect("json")
}

pub fn telemetry_topic(device: &str) -> String {
    format!("sccr/v1/devices/{device}/telemetry")
}

/// A recent minute boundary (an hour ago), so readings pass the skew checks.
pub fn recent_base_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    (now - 3_600_000) / 60_000 * 60_000
}

/// Publish probe readings until one is stored: proves ingest is connected and subscribed
/// (its persistent session exists from then on).
pub async fn wait_pipeline_ready(broker_port: u16, pool: &sqlx::PgPool) {
    wait_pipeline_ready_with(mqtt_client::Protocol::V5, broker_port, pool).await;
}

/// [`wait_pipeline_ready`] with the probe publishing over the given MQTT protocol version.
pub async fn wait_pipeline_ready_with(
    protocol: mqtt_client::Protocol,
    broker_port: u16,
    pool: &sqlx::PgPool,
) {
    let mut n = 0u64;
    wait_for("a probe reading to be stored", Duration::from_secs(30), || {
        n += 1;
        let seq = n;
        async move {
            let payload = compact(seq, recent_base_ms() + seq as i64, &[("battery_v", 12.0)]);
            publish_all_with(
                protocol,
                broker_port,
                &format!("probe-{seq}"),
                vec![(telemetry_topic("probe"), payload)],
            )
            .await
            .ok()?;
            let stored: i64 =
                sqlx::query_scalar("SELECT count(*) FROM readings WHERE device = 'probe'")
                    .fetch_one(pool)
                    .await
                    .ok()?;
            (stored > 0).then_some(())
        }
    })
    .await;
}

/// A 480 m urban road segment with a free-flow speed of 50 km/h.
pub fn test_segment(id: &str) -> telemetry::RoadSegment {
    telemetry::RoadSegment {
        id: telemetry::SegmentId::parse(id).expect("segment id"),
        name: "Via di prova".into(),
        kind: "urban".into(),
        coordinates: vec![[11.2460, 43.7810], [11.2520, 43.7800]],
        length_m: 480.0,
        lanes: 2,
        speed_limit_kmh: 50.0,
        free_flow_kmh: 50.0,
        capacity_vph: 1_800.0,
    }
}

/// A loop detector linked to `segment`.
pub fn loop_on(device: &str, segment: &str) -> store::DeviceRecord {
    store::DeviceRecord {
        id: telemetry::DeviceId::parse(device).expect("device id"),
        kind: Some("traffic_loop".into()),
        segment: Some(telemetry::SegmentId::parse(segment).expect("segment id")),
        registered_at: telemetry::EventTime::now(),
    }
}
