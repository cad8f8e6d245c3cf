//! The live websocket `/api/v1/live` (token in the `Authorization` header or
//! the `sccr.token.<token>` subprotocol or `?access_token=`; every human role).
//!
//! Protocol (JSON text frames):
//! - client → server:
//!   - `{"type":"subscribe","devices":[…],"metrics":[…],"segments":[…],"bbox":[min_lon,min_lat,max_lon,max_lat],"alerts":true,"values":true,"kpi":true}`.
//!     `devices`/`metrics`: the values and windows wanted (empty or absent lists mean all);
//!     `values: false` turns values and windows off (default on). `segments`: the road
//!     segments whose traffic state is wanted (an empty list means all; absent means none).
//!     `bbox`: a WGS84 box; the segments with a point inside it are added to `segments`,
//!     and their linked devices to `devices` (a box with no device in it selects no values).
//!     `alerts: true` adds alert changes (default off). `kpi: true` adds a `kpi` frame
//!     every second. A new subscribe replaces the previous one.
//!   - `{"type":"unsubscribe"}` stops every frame but `pong`, `heartbeat` and `error`;
//!     `{"type":"unsubscribe","devices":[…],"segments":[…]}` takes only those keys out:
//!     nothing more arrives for them.
//!   - `{"type":"ping"}` (answered by `pong`). Any client message, websocket ping or pong
//!     counts as activity: a session with none for the idle timeout (60 s) gets an
//!     `idle_timeout` error frame and is closed. The server sends a websocket ping with
//!     each heartbeat, which clients answer by themselves, so only dead peers idle out.
//! - server → client:
//!   - `{"type":"snapshot","values":[…]}` after each subscribe, plus `"segments":[…]` (the
//!     current state of each selected segment, see `segment`) when segments were asked for
//!     and `"alerts":[…]` (every open alert) when alerts were; again with
//!     `"reason":"resync"` when the client fell behind and missed changes (it is never
//!     disconnected for being slow). Each client has its own bounded queue, filled only
//!     with what its subscription selects (see `stream::fanout`).
//!   - `{"type":"delta","values":[{"device","metric","time","value"}…]}` with new values,
//!     conflated: one entry per (device, metric), the latest.
//!   - `{"type":"window","window":{…}}` when a device window closes or is corrected.
//!   - `{"type":"segment","segment":{"segment","start","end","flow_vph","speed_kmh",
//!     "occupancy_pct","los","detectors","revision","forecast"?}}` when a segment window is
//!     emitted or corrected (`los` is `"A"`…`"F"` or null without speeds; `forecast`, the
//!     forecast made from the window, when there is one: `stream::forecast`).
//!   - `{"type":"alert","alert":{"id","rule","subject","kind","severity","state","message",
//!     "value","since","raised_at","acknowledged","cleared","members","active",
//!     "returned_at","shelved","suppressed","code","params"}}` when an alert moves (raised,
//!     acknowledged, returned, raised again, cleared), is shelved or unshelved, suppressed
//!     or no longer, or its members change; the same object as `GET /api/v1/alerts/{id}`
//!     shows, with the store's id, sent once the store has it. Snapshots hold every open
//!     alert: raised, acknowledged and returned, shelved and suppressed ones included.
//!   - `{"type":"kpi","kpi":{"devices_online","devices_offline","readings_per_s",
//!     "alerts_open":{"critical","warning","info"},"city_speed_kmh","worst_segments":
//!     [{"segment","name","los","speed_kmh","free_flow_kmh","ratio"}…≤10]}}` every second
//!     when asked for. `worst_segments` follows `stream::los::worst_first`: relative speed
//!     (`ratio` = speed / free-flow speed, rounded to 3 decimals) ascending, ties by the
//!     worse `los`, then by segment id; segments without a speed or not in the registry
//!     are left out.
//!   - `{"type":"operations","operations":[…]}` after each snapshot (subscribe and resync):
//!     the active road operations and the planned ones starting within 24 h (left out
//!     while there are none and the client was never shown any); then
//!     `{"type":"operation","operation":{…}}` for every change of any operation (created,
//!     edited, moved, annotated), to every subscribed client (docs/operations.md).
//!   - `{"type":"heartbeat","time":ms}` every 15 s.
//!   - `{"type":"unsubscribed"}`, `{"type":"pong"}`, and `{"type":"error","code":…,"message":…}`
//!     for a bad message (the connection stays open; counted in `sccr_ws_errors_total`).
//!   - A message over [`MAX_CLIENT_MESSAGE`] (2 MiB) gets an error frame with code
//!     `message_too_big` (counted likewise), then a close frame with code 1009 and a reason.
//!
//! Every message's JSON Schema and an example are in [`messages`], which the OpenAPI
//! document and the docs page (`/api/v1/docs#live`) render.
//!
//! The session is generic over a `Sink`/`Stream` of text so it is tested without a socket.
//!
//! Reading client messages into subscriptions is in `subscribe`, the KPI frame in `kpi`;
//! the session loop and its frames are here.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::json;
use store::Store;
use stream::{LiveEvent, LiveHub, LiveValue, Pending, SubscriptionFilter};
use telemetry::EventTime;

use crate::error::ApiError;
use crate::http_metrics::HttpMetrics;
use crate::AppState;

mod kpi;
pub mod messages;
mod subscribe;

use kpi::Kpi;
pub use kpi::WORST_SEGMENTS;
pub use subscribe::parse_client_message;
use subscribe::{
    build_filter, device_key, parse_keys, read_message, segment_key, ClientMessage, Requested,
};

use messages::{BAD_MESSAGE, BAD_SUBSCRIPTION, BAD_UNSUBSCRIBE, IDLE_TIMEOUT, MESSAGE_TOO_BIG};

/// Largest client message accepted (2 MiB): a subscription naming the most devices and
/// segments allowed ([`MAX_SUBSCRIPTION_KEYS`] each, ids of the longest form) fits in it.
/// A larger one gets a `message_too_big` error frame and the connection is closed with
/// 1009 (message too big).
pub const MAX_CLIENT_MESSAGE: usize = 2 * 1024 * 1024;
/// Most values in one delta frame.
const MAX_DELTA_VALUES: usize = 1_000;
/// Most devices, metrics or segments in one subscription.
pub const MAX_SUBSCRIPTION_KEYS: usize = 10_000;
/// Marks a websocket ping or pong: from the client, activity (no reply); to the client,
/// a websocket ping (browsers and client libraries answer it by themselves, so a live
/// client never idles out).
pub const PING_MARK: &str = "\u{1}";
/// Marks a binary frame from the client.
const BINARY: &str = "\u{0}binary";
/// From the client: a message over [`MAX_CLIENT_MESSAGE`] (the socket cannot be read on).
/// To the client: a close frame with 1009 (message too big).
pub const TOO_BIG_MARK: &str = "\u{2}too_big";

/// Timers of a live session.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    pub heartbeat: Duration,
    pub idle_timeout: Duration,
    pub kpi_interval: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            kpi_interval: Duration::from_secs(1),
        }
    }
}

/// What a session reads besides its socket.
#[derive(Clone)]
pub struct Session {
    pub hub: Arc<LiveHub>,
    pub http: Arc<HttpMetrics>,
    /// For bounding boxes and KPI segment names; without it those are refused.
    pub store: Option<Store>,
    pub config: SessionConfig,
}

impl Session {
    pub fn new(hub: Arc<LiveHub>) -> Self {
        Self { hub, http: Arc::default(), store: None, config: SessionConfig::default() }
    }
}

pub async fn upgrade(
    State(state): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let message = format!(
                "this is the live websocket: connect with a websocket client ({})",
                rejection.body_text()
            );
            return ApiError {
                status: StatusCode::UPGRADE_REQUIRED,
                code: "upgrade_required",
                message,
                param: None,
                errors: Vec::new(),
            }
            .into_response();
        }
    };
    let session = Session {
        hub: state.hub,
        http: state.http,
        store: Some(state.store),
        config: SessionConfig::default(),
    };
    // Small socket buffers: a wall of 10,000 screens must not cost 128 KiB each (the
    // library's default read buffer); client messages are small and frames are written whole.
    // A browser offers `sccr.live` and its token as `sccr.token.<token>`: the answer names
    // `sccr.live`, never the token.
    ws.protocols([messages::PROTOCOL])
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .on_upgrade(move |socket| serve_socket(session, socket))
}

async fn serve_socket(session: Session, socket: WebSocket) {
    let (sink, stream) = socket.split();
    let sink = sink.with(|text: String| async move {
        Ok::<_, axum::Error>(if text == PING_MARK {
            Message::Ping(Default::default())
        } else if text == TOO_BIG_MARK {
            Message::Close(Some(CloseFrame {
                code: close_code::SIZE,
                reason: too_big_reason().into(),
            }))
        } else {
            Message::Text(text.into())
        })
    });
    let stream = stream.filter_map(|m| async move {
        match m {
            Ok(Message::Text(t)) => Some(Ok(t.to_string())),
            Ok(Message::Binary(_)) => Some(Ok(String::from(BINARY))),
            Ok(Message::Ping(_) | Message::Pong(_)) => Some(Ok(String::from(PING_MARK))),
            Err(e) if is_too_big(&e) => Some(Ok(String::from(TOO_BIG_MARK))),
            Ok(Message::Close(_)) | Err(_) => Some(Err(())),
        }
    });
    run_session(session, Box::pin(sink), Box::pin(stream)).await;
}

/// Whether a read failed because the client's message or frame is over the limit.
fn is_too_big(e: &axum::Error) -> bool {
    matches!(
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

fn too_big_reason() -> String {
    format!("message over the {} MiB limit", MAX_CLIENT_MESSAGE / (1024 * 1024))
}

fn error_frame(http: &HttpMetrics, code: &'static str, message: &str) -> String {
    http.ws_error(code);
    json!({"type": "error", "code": code, "message": message}).to_string()
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

/// How far ahead the operations frame lists planned operations.
pub const OPERATIONS_AHEAD_MS: i64 = 24 * 3_600_000;

/// The operations frame sent after each snapshot: the active operations and the planned
/// ones starting within [`OPERATIONS_AHEAD_MS`] (none without a store). A client that
/// was never shown any gets no empty list: it has nothing to clear.
async fn operations_frame(session: &Session, sent: &mut bool) -> Option<String> {
    let store = session.store.as_ref()?;
    let until = EventTime(EventTime::now().millis().saturating_add(OPERATIONS_AHEAD_MS));
    match store.current_operations(until).await {
        Ok(ops) if ops.is_empty() && !*sent => None,
        Ok(ops) => {
            *sent = true;
            Some(json!({"type": "operations", "operations": ops}).to_string())
        }
        Err(e) => {
            tracing::warn!(error = %e, "operations for a live snapshot could not be read");
            None
        }
    }
}

/// Run one live session until the client leaves, idles out, or the sink fails.
pub async fn run_session<S, R>(session: Session, mut sink: S, mut stream: R)
where
    S: Sink<String> + Unpin,
    R: Stream<Item = Result<String, ()>> + Unpin,
{
    session.http.ws_open.fetch_add(1, Ordering::Relaxed);
    session.http.ws_sessions.fetch_add(1, Ordering::Relaxed);
    serve_session(&session, &mut sink, &mut stream).await;
    session.http.ws_open.fetch_sub(1, Ordering::Relaxed);
}

async fn serve_session<S, R>(session: &Session, sink: &mut S, stream: &mut R)
where
    S: Sink<String> + Unpin,
    R: Stream<Item = Result<String, ()>> + Unpin,
{
    let (hub, http, cfg) = (&session.hub, &session.http, session.config);
    // Registered with a filter selecting nothing until the client subscribes.
    let nothing = SubscriptionFilter { values: false, ..SubscriptionFilter::default() };
    let sub = hub.subscribe(nothing.clone());
    let mut filter: Option<SubscriptionFilter> = None;
    let mut kpi: Option<Kpi> = None;
    // Whether this client was shown operations (then an empty list is news too).
    let mut operations_sent = false;
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + cfg.heartbeat, cfg.heartbeat);
    let mut kpi_tick = tokio::time::interval(cfg.kpi_interval);
    kpi_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle = tokio::time::sleep(cfg.idle_timeout);
    tokio::pin!(idle);
    loop {
        let mut frames: Vec<String> = Vec::new();
        tokio::select! {
            incoming = stream.next() => {
                let Some(Ok(text)) = incoming else { return };
                idle.as_mut().reset(tokio::time::Instant::now() + cfg.idle_timeout);
                if text == PING_MARK {
                    continue;
                }
                if text == TOO_BIG_MARK {
                    // The rest of the message is unread: nothing more can be read, so say
                    // why and close.
                    let _ = sink.send(error_frame(http, MESSAGE_TOO_BIG, &too_big_reason())).await;
                    let _ = sink.send(TOO_BIG_MARK.to_owned()).await;
                    return;
                }
                let mut subscribed = false;
                let reply = match read_message(&text) {
                    Ok(ClientMessage::Subscribe { devices, metrics, segments, bbox, alerts, values, kpi: wants_kpi }) => {
                        match build_filter(session, Requested { devices, metrics, segments, bbox, alerts, values }).await {
                            Ok(f) => {
                                // Route first, then snapshot, so nothing between the two is
                                // missed (a value sent twice is harmless: values carry times,
                                // segment states their window and revision, alerts their state).
                                sub.set_filter(f.clone());
                                let snapshot = snapshot_frame(hub, &f, None);
                                filter = Some(f);
                                subscribed = true;
                                kpi = if wants_kpi { Some(Kpi::new(session).await) } else { None };
                                snapshot
                            }
                            Err(message) => error_frame(http, BAD_SUBSCRIPTION, &message),
                        }
                    }
                    Ok(ClientMessage::Unsubscribe { devices: None, segments: None }) => {
                        sub.set_filter(nothing.clone());
                        filter = None;
                        kpi = None;
                        json!({"type": "unsubscribed"}).to_string()
                    }
                    Ok(ClientMessage::Unsubscribe { devices, segments }) => {
                        let parsed = parse_keys("devices", devices.as_deref().unwrap_or_default(), device_key)
                            .and_then(|d| parse_keys("segments", segments.as_deref().unwrap_or_default(), segment_key).map(|s| (d, s)));
                        match parsed {
                            Ok((d, s)) => {
                                if let Some(f) = &mut filter {
                                    f.remove_devices(d.iter().cloned());
                                    f.remove_segments(s.iter().cloned());
                                    // What is queued for the removed keys is dropped with it.
                                    sub.set_filter(f.clone());
                                }
                                json!({"type": "unsubscribed", "devices": d, "segments": s}).to_string()
                            }
                            Err(message) => error_frame(http, BAD_UNSUBSCRIBE, &message),
                        }
                    }
                    Ok(ClientMessage::Ping) => json!({"type": "pong"}).to_string(),
                    Err(message) => error_frame(http, BAD_MESSAGE, &message),
                };
                frames.push(reply);
                if subscribed {
                    frames.extend(operations_frame(session, &mut operations_sent).await);
                }
            }
            () = sub.ready() => {
                let pending = sub.take();
                if let Some(f) = &filter {
                    if pending.lagged {
                        tracing::debug!("live client fell behind; resynchronising");
                        http.ws_resyncs.fetch_add(1, Ordering::Relaxed);
                        frames.push(snapshot_frame(hub, f, Some("resync")));
                        frames.extend(operations_frame(session, &mut operations_sent).await);
                    } else {
                        frames = pending_frames(pending);
                    }
                }
            }
            _ = kpi_tick.tick(), if kpi.is_some() => {
                if let Some(k) = &mut kpi {
                    frames.push(k.frame(hub));
                }
            }
            _ = heartbeat.tick() => {
                frames.push(PING_MARK.to_owned());
                frames.push(json!({"type": "heartbeat", "time": EventTime::now()}).to_string());
            }
            () = &mut idle => {
                let message = format!("no message for {} s; closing", cfg.idle_timeout.as_secs());
                let _ = sink.send(error_frame(http, IDLE_TIMEOUT, &message)).await;
                return;
            }
        }
        for f in frames {
            if sink.send(f).await.is_err() {
                return;
            }
            http.ws_frames_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Frames for what a subscriber's queue held: the conflated values in delta frames of at
/// most [`MAX_DELTA_VALUES`], then windows, segment states and alerts one frame each, in
/// order.
fn pending_frames(pending: Pending) -> Vec<String> {
    let mut frames = Vec::new();
    let values: Vec<LiveValue> = pending.values.into_values().collect();
    for chunk in values.chunks(MAX_DELTA_VALUES) {
        frames.push(json!({"type": "delta", "values": chunk}).to_string());
    }
    for e in pending.events {
        frames.push(match &*e {
            LiveEvent::Value(v) => json!({"type": "delta", "values": [v]}).to_string(),
            LiveEvent::Window(w) => json!({"type": "window", "window": w}).to_string(),
            LiveEvent::Segment(s) => json!({"type": "segment", "segment": s}).to_string(),
            LiveEvent::Alert(a) => json!({"type": "alert", "alert": a}).to_string(),
            // Screens see presence in `kpi` frames; their filters never ask for statuses.
            LiveEvent::Status(_) => continue,
            LiveEvent::Operation(o) => json!({"type": "operation", "operation": o}).to_string(),
        });
    }
    frames
}
