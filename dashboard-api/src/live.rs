//! The live websocket `/api/v1/live`.
//!
//! Protocol (JSON text frames):
//! - client → server: `{"type":"subscribe","devices":[…],"metrics":[…]}` (empty or absent
//!   lists mean all; a new subscribe replaces the previous one), `{"type":"unsubscribe"}`,
//!   `{"type":"ping"}`.
//! - server → client: `{"type":"snapshot","values":[…]}` after each subscribe, and again with
//!   `"reason":"resync"` when the client fell behind and missed deltas; `{"type":"delta",
//!   "values":[…]}` with new values; `{"type":"window",…}` when a 1-minute window closes or is
//!   corrected; `{"type":"pong"}`; `{"type":"error","code":…,"message":…}` for a bad message
//!   (the connection stays open).
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
use telemetry::{DeviceId, MetricId};
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

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Subscribe {
        #[serde(default)]
        devices: Vec<String>,
        #[serde(default)]
        metrics: Vec<String>,
    },
    Unsubscribe,
    Ping,
}

fn error_frame(code: &str, message: &str) -> String {
    json!({"type": "error", "code": code, "message": message}).to_string()
}

fn parse_subscription(devices: Vec<String>, metrics: Vec<String>) -> Result<SubscriptionFilter, String> {
    if devices.len() > MAX_SUBSCRIPTION_KEYS || metrics.len() > MAX_SUBSCRIPTION_KEYS {
        return Err(format!("at most {MAX_SUBSCRIPTION_KEYS} devices and {MAX_SUBSCRIPTION_KEYS} metrics per subscription"));
    }
    let devices: BTreeSet<DeviceId> =
        devices.iter().map(|d| DeviceId::parse(d).map_err(|e| format!("devices: {e}"))).collect::<Result<_, _>>()?;
    let metrics: BTreeSet<MetricId> =
        metrics.iter().map(|m| m.parse().map_err(|e| format!("metrics: {e}"))).collect::<Result<_, _>>()?;
    Ok(SubscriptionFilter { devices, metrics })
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
                let parsed = if text.starts_with('\u{0}') {
                    Err(String::from("binary frames are not accepted; send JSON text"))
                } else {
                    serde_json::from_str::<ClientMessage>(&text).map_err(|e| format!("cannot read message: {e}"))
                };
                let reply = match parsed {
                    Ok(ClientMessage::Subscribe { devices, metrics }) => match parse_subscription(devices, metrics) {
                        Ok(f) => {
                            // Resubscribe to the hub first so no event between snapshot and
                            // deltas is missed (a duplicate is harmless: values carry times).
                            events = hub.subscribe();
                            let snapshot = hub.snapshot(&f);
                            filter = Some(f);
                            json!({"type": "snapshot", "values": snapshot}).to_string()
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
                            frames.push(json!({"type": "snapshot", "reason": "resync", "values": hub.snapshot(f)}).to_string());
                        }
                        frames
                    }
                    Err(RecvError::Lagged(missed)) => match &filter {
                        Some(f) => {
                            tracing::debug!(missed, "live client fell behind; resynchronising");
                            vec![json!({"type": "snapshot", "reason": "resync", "values": hub.snapshot(f)}).to_string()]
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

/// Turn the available events into frames: values batched into deltas, windows one each.
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
        if filter.matches(e.device(), e.metric()) {
            match &*e {
                LiveEvent::Value(v) => values.push(v.clone()),
                LiveEvent::Window(w) => frames.push(json!({"type": "window", "window": w}).to_string()),
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
