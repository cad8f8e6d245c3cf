//! The live websocket `/api/v1/live`.
//!
//! Protocol (JSON text frames):
//! - client → server:
//!   - `{"type":"subscribe","devices":[…],"metrics":[…],"segments":[…],"alerts":true,"values":true}`.
//!     `devices`/`metrics`: the values and windows wanted (empty or absent lists mean all);
//!     `values: false` turns values and windows off (default on). `segments`: the road
//!     segments whose traffic state is wanted (an empty list means all; absent means none).
//!     `alerts: true` adds alert changes (default off). A new subscribe replaces the
//!     previous one.
//!   - `{"type":"unsubscribe"}` stops every frame but `pong` and `error`; `{"type":"ping"}`.
//! - server → client:
//!   - `{"type":"snapshot","values":[…]}` after each subscribe, plus `"segments":[…]` (the
//!     current state of each selected segment, see `segment`) when segments were asked for
//!     and `"alerts":[…]` (every open alert) when alerts were; again with
//!     `"reason":"resync"` when the client fell behind and missed changes.
//!   - `{"type":"delta","values":[{"device","metric","time","value"}…]}` with new values.
//!   - `{"type":"window","window":{…}}` when a device window closes or is corrected.
//!   - `{"type":"segment","segment":{"segment","start","end","flow_vph","speed_kmh",
//!     "occupancy_pct","los","detectors","revision"}}` when a segment window is emitted or
//!     corrected (`los` is `"A"`…`"F"` or null without speeds).
//!   - `{"type":"alert","alert":{"id","rule","subject","kind","severity","state","message",
//!     "value","since","raised_at","acknowledged","cleared","members"}}` when an alert is
//!     raised, acknowledged, cleared or its members change; the same object as
//!     `GET /api/v1/alerts/{id}` shows, with the store's id, sent once the store has it.
//!   - `{"type":"unsubscribed"}`, `{"type":"pong"}`, and `{"type":"error","code":…,"message":…}`
//!     for a bad message (the connection stays open).
//!
//! The session is generic over a `Sink`/`Stream` of text so it is tested without a socket.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use stream::{LiveEvent, LiveHub, SubscriptionFilter};
use telemetry::{DeviceId, MetricId, SegmentId};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::AppState;

/// Largest client message accepted.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Most values in one delta frame.
const MAX_DELTA_VALUES: usize = 1_000;
/// Most devices or metrics in one subscription.
const MAX_SUBSCRIPTION_KEYS: usize = 10_000;

pub async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_CLIENT_MESSAGE).on_upgrade(move |socket| serve_socket(state.hub, socket))
}

async fn serve_socket(hub: Arc<LiveHub>, socket: WebSocket) {
    let (sink, stream) = socket.split();
    let sink = sink.with(|text: String| async move { Ok::<_, axum::Error>(Message::Text(text.into())) });
    let stream = stream.filter_map(|m| async move {
        match m {
            Ok(Message::Text(t)) => Some(Ok(t.to_string())),
            Ok(Message::Binary(_)) => Some(Ok(String::from("\u{0}binary"))),
            Ok(Message::Close(_)) | Err(_) => Some(Err(())),
            Ok(_) => None,
        }
    });
    run_session(hub, Box::pin(sink), Box::pin(stream)).await;
}

/// A client → server message.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Subscribe {
        #[serde(default)]
        devices: Vec<String>,
        #[serde(default)]
        metrics: Vec<String>,
        #[serde(default)]
        segments: Option<Vec<String>>,
        #[serde(default)]
        alerts: bool,
        #[serde(default = "yes")]
        values: bool,
    },
    Unsubscribe,
    Ping,
}

fn yes() -> bool {
    true
}

fn error_frame(code: &str, message: &str) -> String {
    json!({"type": "error", "code": code, "message": message}).to_string()
}

/// Read one client frame (a binary frame arrives as text starting with NUL).
pub fn parse_client_message(text: &str) -> Result<ClientMessage, String> {
    if text.starts_with('\u{0}') {
        return Err(String::from("binary frames are not accepted; send JSON text"));
    }
    serde_json::from_str::<ClientMessage>(text).map_err(|e| format!("cannot read message: {e}"))
}

pub fn parse_subscription(devices: Vec<String>, metrics: Vec<String>, segments: Option<Vec<String>>, alerts: bool, values: bool) -> Result<SubscriptionFilter, String> {
    if devices.len() > MAX_SUBSCRIPTION_KEYS || metrics.len() > MAX_SUBSCRIPTION_KEYS || segments.as_ref().is_some_and(|s| s.len() > MAX_SUBSCRIPTION_KEYS) {
        return Err(format!("at most {MAX_SUBSCRIPTION_KEYS} devices, metrics and segments per subscription"));
    }
    let devices: BTreeSet<DeviceId> =
        devices.iter().map(|d| DeviceId::parse(d).map_err(|e| format!("devices: {e}"))).collect::<Result<_, _>>()?;
    let metrics: BTreeSet<MetricId> =
        metrics.iter().map(|m| m.parse().map_err(|e| format!("metrics: {e}"))).collect::<Result<_, _>>()?;
    let segments: Option<BTreeSet<SegmentId>> = segments
        .map(|list| list.iter().map(|s| SegmentId::parse(s).map_err(|e| format!("segments: {e}"))).collect::<Result<_, _>>())
        .transpose()?;
    Ok(SubscriptionFilter { values, devices, metrics, segments, alerts })
}

/// The snapshot frame of a subscription (`reason` is `resync` after the client lagged).
fn snapshot_frame(hub: &LiveHub, filter: &SubscriptionFilter, reason: Option<&str>) -> String {
    let values = if filter.values { hub.snapshot(filter) } else { Vec::new() };
    let mut frame = json!({"type": "snapshot", "values": values});
    if let Some(reason) = reason {
        frame["reason"] = json!(reason);
    }
    if filter.segments.is_some() {
        frame["segments"] = json!(hub.segment_states(filter));
    }
    if filter.alerts {
        frame["alerts"] = json!(hub.open_alerts());
    }
    frame.to_string()
}

/// Run one live session until the client leaves or the sink fails.
pub async fn run_session<S, R>(hub: Arc<LiveHub>, mut sink: S, mut stream: R)
where
    S: Sink<String> + Unpin,
    R: Stream<Item = Result<String, ()>> + Unpin,
{
    let mut events = hub.subscribe();
    let mut filter: Option<SubscriptionFilter> = None;
    loop {
        tokio::select! {
            incoming = stream.next() => {
                let Some(Ok(text)) = incoming else { break };
                let reply = match parse_client_message(&text) {
                    Ok(ClientMessage::Subscribe { devices, metrics, segments, alerts, values }) => match parse_subscription(devices, metrics, segments, alerts, values) {
                        Ok(f) => {
                            // Resubscribe to the hub first so no event between snapshot and
                            // deltas is missed (a duplicate is harmless: values carry times,
                            // segment states their window and revision, alerts their state).
                            events = hub.subscribe();
                            let snapshot = snapshot_frame(&hub, &f, None);
                            filter = Some(f);
                            snapshot
                        }
                        Err(message) => error_frame("bad_subscription", &message),
                    },
                    Ok(ClientMessage::Unsubscribe) => {
                        filter = None;
                        json!({"type": "unsubscribed"}).to_string()
                    }
                    Ok(ClientMessage::Ping) => json!({"type": "pong"}).to_string(),
                    Err(message) => error_frame("bad_message", &message),
                };
                if sink.send(reply).await.is_err() {
                    break;
                }
            }
            event = events.recv() => {
                let frames = match event {
                    Ok(first) => {
                        let (mut frames, lagged) = collect_frames(first, &mut events, filter.as_ref());
                        if let (true, Some(f)) = (lagged, &filter) {
                            frames.push(snapshot_frame(&hub, f, Some("resync")));
                        }
                        frames
                    }
                    Err(RecvError::Lagged(missed)) => match &filter {
                        Some(f) => {
                            tracing::debug!(missed, "live client fell behind; resynchronising");
                            vec![snapshot_frame(&hub, f, Some("resync"))]
                        }
                        None => Vec::new(),
                    },
                    Err(RecvError::Closed) => break,
                };
                for f in frames {
                    if sink.send(f).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Turn the available events into frames: values batched into deltas; windows, segment
/// states and alerts one frame each, in order.
/// Also says whether the receiver lagged while draining (the caller then resyncs).
fn collect_frames(
    first: Arc<LiveEvent>,
    events: &mut tokio::sync::broadcast::Receiver<Arc<LiveEvent>>,
    filter: Option<&SubscriptionFilter>,
) -> (Vec<String>, bool) {
    let Some(filter) = filter else {
        // Not subscribed: drain what is queued without sending.
        while !matches!(events.try_recv(), Err(TryRecvError::Empty | TryRecvError::Closed)) {}
        return (Vec::new(), false);
    };
    let mut lagged = false;
    let mut values = Vec::new();
    let mut frames = Vec::new();
    let mut next = Some(first);
    while let Some(e) = next {
        if filter.matches_event(&e) {
            match &*e {
                LiveEvent::Value(v) => values.push(v.clone()),
                LiveEvent::Window(w) => frames.push(json!({"type": "window", "window": w}).to_string()),
                LiveEvent::Segment(s) => frames.push(json!({"type": "segment", "segment": s}).to_string()),
                LiveEvent::Alert(a) => frames.push(json!({"type": "alert", "alert": a}).to_string()),
            }
        }
        if values.len() >= MAX_DELTA_VALUES {
            break;
        }
        next = match events.try_recv() {
            Ok(e) => Some(e),
            Err(TryRecvError::Lagged(_)) => {
                lagged = true;
                None
            }
            Err(_) => None,
        };
    }
    if !values.is_empty() {
        frames.insert(0, json!({"type": "delta", "values": values}).to_string());
    }
    (frames, lagged)
}
