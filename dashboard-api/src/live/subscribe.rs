//! Client messages, and a subscribe message turned into a [`SubscriptionFilter`]: keys
//! checked and bounded, a bounding box resolved to its segments and their devices.

use std::collections::BTreeSet;

use serde::Deserialize;
use stream::SubscriptionFilter;
use telemetry::{DeviceId, MetricId, SegmentId};

use super::{Session, BINARY, MAX_SUBSCRIPTION_KEYS};

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum ClientMessage {
    Subscribe {
        #[serde(default)]
        devices: Vec<String>,
        #[serde(default)]
        metrics: Vec<String>,
        #[serde(default)]
        segments: Option<Vec<String>>,
        #[serde(default)]
        bbox: Option<[f64; 4]>,
        #[serde(default)]
        alerts: bool,
        #[serde(default = "yes")]
        values: bool,
        #[serde(default)]
        kpi: bool,
    },
    Unsubscribe {
        #[serde(default)]
        devices: Option<Vec<String>>,
        #[serde(default)]
        segments: Option<Vec<String>>,
    },
    Ping,
}

/// Parse one client message; the error is what the `error` frame says.
pub fn parse_client_message(text: &str) -> Result<(), String> {
    read_message(text).map(|_| ())
}

pub(super) fn read_message(text: &str) -> Result<ClientMessage, String> {
    if text == BINARY {
        return Err(String::from("binary frames are not accepted; send JSON text"));
    }
    serde_json::from_str::<ClientMessage>(text).map_err(|e| format!("cannot read message: {e}"))
}

fn yes() -> bool {
    true
}

pub(super) fn parse_keys<T>(
    what: &str,
    list: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    if list.len() > MAX_SUBSCRIPTION_KEYS {
        return Err(format!("at most {MAX_SUBSCRIPTION_KEYS} {what} per message"));
    }
    list.iter().map(|k| parse(k).map_err(|e| format!("{what}: {e}"))).collect()
}

pub(super) fn device_key(s: &str) -> Result<DeviceId, String> {
    DeviceId::parse(s).map_err(|e| e.to_string())
}

pub(super) fn segment_key(s: &str) -> Result<SegmentId, String> {
    SegmentId::parse(s).map_err(|e| e.to_string())
}

/// A subscribe message as it came, before the bounding box is resolved.
pub(super) struct Requested {
    pub(super) devices: Vec<String>,
    pub(super) metrics: Vec<String>,
    pub(super) segments: Option<Vec<String>>,
    pub(super) bbox: Option<[f64; 4]>,
    pub(super) alerts: bool,
    pub(super) values: bool,
}

pub(super) async fn build_filter(
    session: &Session,
    r: Requested,
) -> Result<SubscriptionFilter, String> {
    let mut devices: BTreeSet<DeviceId> =
        parse_keys("devices", &r.devices, device_key)?.into_iter().collect();
    let metrics: BTreeSet<MetricId> = parse_keys("metrics", &r.metrics, |m| {
        m.parse().map_err(|e: telemetry::UnknownMetric| e.to_string())
    })?
    .into_iter()
    .collect();
    let mut segments: Option<BTreeSet<SegmentId>> = r
        .segments
        .map(|list| parse_keys("segments", &list, segment_key).map(|v| v.into_iter().collect()))
        .transpose()?;
    let mut values = r.values;
    if let Some(bbox) = r.bbox {
        let (in_box, linked) = resolve_bbox(session, bbox).await?;
        match &mut segments {
            Some(set) if set.is_empty() => {}
            Some(set) => set.extend(in_box.iter().cloned()),
            None => segments = Some(in_box.iter().cloned().collect()),
        }
        if segments.as_ref().is_some_and(|s| s.is_empty()) && in_box.is_empty() {
            // Nothing in the box: an empty set would mean "all".
            segments = None;
        }
        if linked.is_empty() && devices.is_empty() {
            values = false;
        }
        devices.extend(linked);
    }
    Ok(SubscriptionFilter {
        values,
        devices,
        metrics,
        segments,
        alerts: r.alerts,
        ..SubscriptionFilter::default()
    })
}

/// The segments with a point inside `bbox` and the devices linked to them.
async fn resolve_bbox(
    session: &Session,
    bbox: [f64; 4],
) -> Result<(Vec<SegmentId>, Vec<DeviceId>), String> {
    if !crate::params::valid_bbox(bbox) {
        return Err(
            "bbox must be [min_lon, min_lat, max_lon, max_lat] in WGS84 degrees, min before max"
                .into(),
        );
    }
    let store = session.store.as_ref().ok_or("bounding boxes need the store")?;
    let segments = store.segments().await.map_err(|e| format!("cannot read segments: {e}"))?;
    let in_box = crate::params::segments_in_bbox(&segments, bbox);
    let devices = store.devices().await.map_err(|e| format!("cannot read devices: {e}"))?;
    let linked = devices
        .into_iter()
        .filter(|d| d.segment.as_ref().is_some_and(|s| in_box.contains(s)))
        .map(|d| d.id)
        .collect();
    Ok((in_box, linked))
}
