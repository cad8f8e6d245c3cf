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
//!     "occupancy_pct","los","detectors","revision"}}` when a segment window is emitted or
//!     corrected (`los` is `"A"`…`"F"` or null without speeds).
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

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use store::Store;
use stream::{
    worst_first, LiveEvent, LiveHub, LiveValue, Pending, SegmentState, Severity, Standing,
    SubscriptionFilter,
};
use telemetry::{DeviceId, EventTime, MetricId, RoadSegment, SegmentId};

use crate::error::ApiError;
use crate::http_metrics::HttpMetrics;
use crate::AppState;

pub mod messages;

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

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
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

fn read_message(text: &str) -> Result<ClientMessage, String> {
    if text == BINARY {
        return Err(String::from("binary frames are not accepted; send JSON text"));
    }
    serde_json::from_str::<ClientMessage>(text).map_err(|e| format!("cannot read message: {e}"))
}

fn yes() -> bool {
    true
}

fn error_frame(http: &HttpMetrics, code: &'static str, message: &str) -> String {
    http.ws_error(code);
    json!({"type": "error", "code": code, "message": message}).to_string()
}

fn parse_keys<T>(
    what: &str,
    list: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    if list.len() > MAX_SUBSCRIPTION_KEYS {
        return Err(format!("at most {MAX_SUBSCRIPTION_KEYS} {what} per message"));
    }
    list.iter().map(|k| parse(k).map_err(|e| format!("{what}: {e}"))).collect()
}

fn device_key(s: &str) -> Result<DeviceId, String> {
    DeviceId::parse(s).map_err(|e| e.to_string())
}

fn segment_key(s: &str) -> Result<SegmentId, String> {
    SegmentId::parse(s).map_err(|e| e.to_string())
}

/// A subscribe message as it came, before the bounding box is resolved.
struct Requested {
    devices: Vec<String>,
    metrics: Vec<String>,
    segments: Option<Vec<String>>,
    bbox: Option<[f64; 4]>,
    alerts: bool,
    values: bool,
}

async fn build_filter(session: &Session, r: Requested) -> Result<SubscriptionFilter, String> {
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

/// Entries in the KPI frame's `worst_segments` (a 1080p wall shows 5, a 4K wall 10).
pub const WORST_SEGMENTS: usize = 10;

/// What the KPI frame needs of a segment from the registry.
struct KpiSegment {
    name: String,
    length_m: f64,
    free_flow_kmh: f64,
}

/// The figures of the wall's KPI tiles.
struct Kpi {
    /// Every segment, read at subscribe.
    segments: HashMap<SegmentId, KpiSegment>,
    last: (Instant, u64),
}

impl Kpi {
    async fn new(session: &Session) -> Self {
        let segments = match &session.store {
            Some(store) => store.segments().await.unwrap_or_default(),
            None => Vec::new(),
        };
        Self {
            segments: segments
                .into_iter()
                .map(|s: RoadSegment| {
                    let k = KpiSegment {
                        name: s.name,
                        length_m: s.length_m,
                        free_flow_kmh: s.free_flow_kmh,
                    };
                    (s.id, k)
                })
                .collect(),
            last: (Instant::now(), session.hub.readings_applied()),
        }
    }

    fn frame(&mut self, hub: &LiveHub) -> String {
        let now = Instant::now();
        let applied = hub.readings_applied();
        let secs = now.duration_since(self.last.0).as_secs_f64();
        // The first frame of a session comes at once: no interval to count over yet, so no
        // rate (null) rather than a misleading 0.
        let rate = (secs >= 0.5).then(|| applied.saturating_sub(self.last.1) as f64 / secs);
        self.last = (now, applied);
        let (online, offline) = hub.presence_counts(EventTime::now());
        let mut open = [0u64; 3];
        for a in hub.open_alerts() {
            open[match a.severity {
                Severity::Critical => 0,
                Severity::Warning => 1,
                Severity::Info => 2,
            }] += 1;
        }
        let states = hub.all_segment_states();
        // City speed: the segments' mean speeds weighted by their length.
        let (mut weighted, mut length) = (0.0, 0.0);
        for s in &states {
            if let Some(v) = s.speed_kmh {
                let l = self.segments.get(&s.segment).map_or(1.0, |k| k.length_m.max(1.0));
                weighted += v * l;
                length += l;
            }
        }
        // Worst segments by the one rule of `stream::los::worst_first`.
        let mut worst: Vec<(Standing<'_>, &SegmentState, f64)> = states
            .iter()
            .filter_map(|s| {
                let free_flow = self.segments.get(&s.segment)?.free_flow_kmh;
                let ratio = stream::speed_ratio(s.speed_kmh?, free_flow)?;
                let standing = Standing { segment: s.segment.as_str(), ratio, los: s.los? };
                Some((standing, s, free_flow))
            })
            .collect();
        worst.sort_by(|a, b| worst_first(&a.0, &b.0));
        let worst: Vec<Value> = worst
            .iter()
            .take(WORST_SEGMENTS)
            .map(|(standing, s, free_flow)| {
                json!({
                    "segment": s.segment,
                    "name": self.segments.get(&s.segment).map(|k| k.name.as_str()),
                    "los": standing.los.as_str(),
                    "speed_kmh": s.speed_kmh,
                    "free_flow_kmh": free_flow,
                    "ratio": (standing.ratio * 1000.0).round() / 1000.0,
                })
            })
            .collect();
        json!({"type": "kpi", "kpi": {
            "devices_online": online,
            "devices_offline": offline,
            "readings_per_s": rate.map(|r| (r * 10.0).round() / 10.0),
            "alerts_open": {"critical": open[0], "warning": open[1], "info": open[2]},
            "city_speed_kmh": (length > 0.0).then(|| (weighted / length * 10.0).round() / 10.0),
            "worst_segments": worst,
        }})
        .to_string()
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
            }
            () = sub.ready() => {
                let pending = sub.take();
                if let Some(f) = &filter {
                    if pending.lagged {
                        tracing::debug!("live client fell behind; resynchronising");
                        http.ws_resyncs.fetch_add(1, Ordering::Relaxed);
                        frames.push(snapshot_frame(hub, f, Some("resync")));
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
        });
    }
    frames
}
