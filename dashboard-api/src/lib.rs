//! The dashboard API: REST for devices, latest values, history, road segments with their
//! live state, alerts (list, acknowledge, clear) and alert rules; the live websocket; and
//! health probes. [`app`] builds the whole router from an [`AppState`], so tests drive it
//! with `tower::ServiceExt::oneshot` or a real socket alike.

pub mod access;
pub mod alerts;
pub mod auth;
pub mod baselines;
pub mod basemap;
pub mod commands;
pub mod credentials;
pub mod dead_letters;
pub mod devices;
pub mod docs;
pub mod error;
pub mod export;
pub mod forecasts;
pub mod formats;
pub mod http_metrics;
pub mod live;
pub mod map;
pub mod openapi;
pub mod operations;
mod params;
pub mod quality;
pub mod routes;
pub mod rules;
pub mod schemas;
pub mod server;
pub mod web;
pub mod webhooks;

use std::sync::Arc;

use auth::{guard, ADMINS, OPERATORS, PLANNERS, READERS};
use axum::routing::{delete, get, post, put};
use axum::Router;
pub use openapi::Op;
use store::Store;
use stream::LiveHub;
use telemetry::metrics::Registry;

pub use alerts::AlertControl;
pub use error::ApiError;
pub use rules::{rules_at_start, RulesAtStartError, RulesSource, StoredRules, RULES_STATE_KEY};

/// Reports each dependency or stage of this process that `/readyz` checks: its name, and
/// why it is not ready now, if it is not (the broker unreachable, the writer stalled).
pub type Readiness = Arc<dyn Fn() -> Vec<(&'static str, Result<(), NotReady>)> + Send + Sync>;

/// Why a dependency or stage is not ready: a stable code (the error body's `code`) and a
/// message for people.
#[derive(Debug, Clone, PartialEq)]
pub struct NotReady {
    pub code: &'static str,
    pub message: String,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Where history and exports read: the primary (`store`), or a read replica while it
    /// is up and within `database.max_read_lag` (docs/replication.md).
    pub reads: store::replica::Reads,
    pub hub: Arc<LiveHub>,
    /// The process's one metrics registry (`/metrics`): the pipeline stages running in
    /// this process, if any, and this API's own figures ([`AppState::set_metrics`]).
    pub metrics: Arc<Registry>,
    /// The alert engine running in this process, if any: operator actions are mirrored
    /// into it and rules changed through it. Without it alerts are still listed and moved
    /// in the store.
    pub alerts: Option<AlertControl>,
    /// Token validation (cache, failure limiter).
    pub auth: auth::Auth,
    /// Dependencies and stages besides the store that `/readyz` checks, e.g. the broker
    /// and the batch writer.
    pub readiness: Option<Readiness>,
    /// The device partitions this ingest replica owns, shown by `/readyz` (device affinity).
    pub partitions: Option<Arc<dyn Fn() -> Vec<u16> + Send + Sync>>,
    /// Request counters and latency by route, websocket sessions.
    pub http: Arc<http_metrics::HttpMetrics>,
    /// The wall map's settings (`[wall]`): its basemap.
    pub wall: Arc<basemap::WallSettings>,
    /// The longest shelf (`alerts.max_shelve`) when no alert engine runs in this process.
    pub max_shelve: std::time::Duration,
    /// How device credentials reach the broker (`[provisioning]`): registrations,
    /// rotations, decommissions and gateway changes say what applied.
    pub provisioning: links::provisioning::Provisioning,
    /// How far from an operation's point a segment may be to be derived from it
    /// (`cadastre.operation_point_distance_m`, docs/operations.md).
    pub operation_point_distance_m: f64,
    /// The learned baselines' local clock (`[baselines]`).
    pub baselines: baselines::BaselineSettings,
}

impl AppState {
    /// State with no pipeline metrics and no alert engine in this process.
    pub fn new(store: Store, hub: Arc<LiveHub>) -> Self {
        let http = Arc::<http_metrics::HttpMetrics>::default();
        Self {
            metrics: Arc::new(http_metrics::with_api_metrics(Registry::default(), &http, &hub)),
            reads: store::replica::Reads::primary_only(store.clone()),
            store,
            hub,
            alerts: None,
            auth: auth::Auth::default(),
            readiness: None,
            partitions: None,
            http,
            wall: Arc::default(),
            max_shelve: stream::alert::rule::DEFAULT_MAX_SHELVE,
            provisioning: links::provisioning::Provisioning::default(),
            operation_point_distance_m: telemetry::cadastre::DEFAULT_OPERATION_POINT_DISTANCE_M,
            baselines: baselines::BaselineSettings::default(),
        }
    }

    /// Serve `registry` (the process's collectors) at `/metrics`, with this API's own
    /// figures (requests, websockets, live values) added to it.
    pub fn set_metrics(&mut self, registry: Registry) {
        self.metrics = Arc::new(http_metrics::with_api_metrics(registry, &self.http, &self.hub));
    }
}

/// Where the alert rules in force come from (the description of the rules operations).
const RULES_PRECEDENCE: &str = "The rules in force come from the config file's [alerts], from changes made through this API (saved in the store) and from the shipped air-quality defaults; rules_in_force lists each with its origin (file, api, default). Between the file and the API the latest change wins, rule by rule: a change made here stays in force across restarts until the file's own definition of that rule id changes, and then the file wins for that id (the API's version is logged, audited and listed under replaced_by_file). A rule with the id of a shipped default replaces it (replaces_default); enabled = false turns it off. A threshold is evaluated per device (one alert per device in scope) unless its on is \"segment\": then per road segment, on the segment's flow, mean speed or occupancy per window.";
/// The 422 of the rules document.
const RULES_BEYOND: &str = "The rules match this document but contradict each other (two rules with one id, a clear on the wrong side of its level, a zero or too short duration, a device kind that does not exist), or a new or changed rule names a road segment or a device that does not exist; every error is listed with its path";
/// What registration answers in `broker` (the OpenAPI description of the operation).
const BROKER_OUTCOME: &str = "The answer's `mqtt` holds the device's username (its id), its password (shown only now) and its topics. Its `broker` says what the broker got, per `[provisioning] mode`: `dynsec` answers `{\"provisioning\":\"dynsec\",\"applied\":true}` once Mosquitto's dynamic security plugin confirmed the device's client and role (it can connect at once; its gateway's account got its topics too), or `\"applied\":false,\"pending\":true` with `error` (why) and `next` when the broker did not answer within `provisioning.timeout` or refused: the registration stands and SCCR applies it when the broker answers (on reconnection and every `provisioning.reconcile_interval`). `password_file` (the default) answers `{\"provisioning\":\"password_file\",\"applied\":false,\"next\":\"run sccr mqtt-passwd --config sccr.toml --include services.passwd --out PASSWORD_FILE, then send the broker SIGHUP\"}` (with `sccr mqtt-acl --config sccr.toml --include sccr.acl --out ACL_FILE` when a gateway is named): commands that run as written in a deployment whose configuration is sccr.toml and whose service accounts are in services.passwd; `none` means the broker's credentials are managed outside SCCR.";

/// Every operation of the API, with its roles and its documentation.
pub fn operations() -> Vec<Op> {
    use openapi::{
        device_id, enumeration, int64, list_of, metric_id, segment_id, string, text, time,
    };
    use serde_json::json;
    let limit = |max: usize| json!({"type": "integer", "minimum": 1, "maximum": max});
    let alert_id = || int64(1);
    let rule_id = || json!({"type": "string", "pattern": stream::alert::schema::RULE_ID_PATTERN});
    let metrics = || {
        let names: Vec<&str> = telemetry::MetricId::ALL.iter().map(|m| m.as_str()).collect();
        list_of(&names.join("|"))
    };
    let devices = || list_of("[a-z0-9][a-z0-9._-]{0,63}");
    // Coordinates within WGS84 bounds; that min is not after max is checked beyond (422).
    let lon = r"-?(180(\.0{1,8})?|(1[0-7][0-9]|[0-9]{1,2})(\.[0-9]{1,8})?)";
    let lat = r"-?(90(\.0{1,8})?|[0-8]?[0-9](\.[0-9]{1,8})?)";
    let bbox = json!({"type": "string", "pattern": format!("^{lon},{lat},{lon},{lat}$")});
    let step = json!({"type": "string", "pattern": format!("^(auto|raw|{})$", &stream::alert::schema::DURATION_PATTERN[1..stream::alert::schema::DURATION_PATTERN.len() - 1])});
    let beyond = "The parameters or the body match this document but contradict each other, or name an object that does not exist (the error says which)";
    let note = || json!({"type": "object", "additionalProperties": false, "properties": {"note": {"type": ["string", "null"], "maxLength": 2000, "pattern": "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$", "description": "A note for the alert's history (optional)"}}});
    let alert_one = schemas::alert_one;
    let kind = || {
        json!({"type": ["string", "null"], "pattern": "^[A-Za-z0-9_.-]{0,64}$",
            "examples": telemetry::DeviceKind::ALL.map(telemetry::DeviceKind::as_str),
            "description": format!("The device's kind, one of {} (another is refused with 422); null or empty for none", telemetry::DeviceKind::names())})
    };
    let segment_id_or_null = || json!({"type": ["string", "null"], "pattern": "^[a-z0-9][a-z0-9-]{0,63}$", "description": "The road segment it measures (an existing one)"});
    let device_id_or_null = || json!({"type": ["string", "null"], "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$", "description": "The registered device it is reached through (an edge agent), if any"});
    let new_device_id = || json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$", "description": "Device id: its MQTT user name and the {id} of its topics"});
    vec![
        Op::new("GET", "/healthz", &[], "health", "Alive", get(routes::healthz)).ok(200, schemas::healthz()),
        Op::new("GET", "/readyz", &[], "health", "Ready: the database and the broker are reachable", get(routes::readyz))
            .ok(200, schemas::readyz())
            .error(503, "The database or the broker is unreachable, or the batch writer is stalled (code `writer_stalled`)"),
        Op::new("GET", "/metrics", &[], "health", "Metrics for Prometheus (OpenMetrics text)", get(routes::metrics))
            .describe("One registry per process: `process_*` (CPU, memory, file descriptors, threads, start time), `sccr_build_info`, and the `sccr_*` figures of the stages this process runs (ingest, writer, rollups, stream, alerts, commands, webhooks and the outbox, live bus, HTTP and websockets). Refused messages and readings are counted once, in `sccr_dead_letters_total{reason}`. Names, units and help follow the OpenMetrics conventions; see docs/metrics.md for the list.")
            .ok_media("application/openmetrics-text", string()),
        Op::new("GET", "/api/v1/openapi.json", &[], "docs", "This document", get(openapi::serve_document))
            .ok(200, json!({"type": "object", "required": ["openapi", "info", "paths", "components"], "description": "The OpenAPI 3.1 document of this API"})),
        Op::new("GET", "/api/v1/docs", &[], "docs", "This API as a page: operations, alert lifecycle, live websocket, MQTT contract", get(docs::serve_page)).ok_media("text/html", string()),
        Op::new("GET", "/api/v1/docs/mqtt-contract.md", &[], "docs", "The MQTT contract with devices (docs/mqtt-contract.md)", get(docs::serve_contract)).ok_media("text/markdown", string()),
        Op::new("GET", "/api/v1/me", READERS, "access", "The caller's name and role", get(access::me)).ok(200, schemas::me()),
        Op::new("GET", "/api/v1/tokens", ADMINS, "access", "API tokens (never their secret)", get(access::list_tokens)).ok(200, schemas::token_list()),
        Op::new("POST", "/api/v1/tokens", ADMINS, "access", "Create a token; the answer shows it once", post(access::create_token))
            .body(json!({"type": "object", "required": ["name", "role"], "additionalProperties": false,
                "properties": {"name": {"type": "string", "pattern": "^\\s*[^\\s\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]{0,126}[^\\s\\u0000-\\u001f\\u007f-\\u009f])?\\s*$", "description": "Who or what uses it, 1 to 128 characters: the operator's name in alert events and the audit log"}, "role": {"type": "string", "enum": ["admin", "operator", "planner", "device"], "description": "What it may do"}}}))
            .example(json!({"name": "wall-3", "role": "operator"}))
            .ok(201, schemas::token_created()),
        Op::new("DELETE", "/api/v1/tokens/{id}", ADMINS, "access", "Revoke a token", delete(access::revoke_token))
            .path_param("id", int64(i64::MIN), "Token id")
            .ok(200, schemas::token_one()),
        Op::new("GET", "/api/v1/audit", ADMINS, "access", "The audit log, newest first", get(access::audit_log))
            .query("limit", limit(1_000), "Entries per page (default 100)")
            .query("cursor", int64(i64::MIN), "next_cursor of the previous page")
            .ok(200, schemas::audit_page()),
        Op::new("GET", "/api/v1/devices", READERS, "devices", "Devices in id order, paged by cursor", get(devices::list))
            .query("kind", text(), "Only this kind")
            .query("segment", segment_id(), "Only devices on this road segment")
            .query("decommissioned", enumeration(&["true", "false"]), "Include decommissioned devices")
            .query("limit", limit(devices::MAX_PAGE), "Devices per page (default 100)")
            .query("cursor", device_id(), "next_cursor of the previous page")
            .ok(200, schemas::device_list()),
        Op::new("POST", "/api/v1/devices", ADMINS, "devices", "Register a device; the answer holds its MQTT password, once", post(devices::register))
            .describe(BROKER_OUTCOME)
            .body(json!({"type": "object", "required": ["id"], "additionalProperties": false,
                "properties": {"id": new_device_id(), "kind": kind(), "segment": segment_id_or_null(), "gateway": device_id_or_null()}}))
            .example(json!({"id": "loop-viale-strozzi-2", "kind": "traffic_loop", "segment": "viale-strozzi"}))
            .ok(201, schemas::device_credentials())
            .error(409, "The device is already registered with credentials")
            .error(422, beyond),
        Op::new("GET", "/api/v1/devices/{id}", READERS, "devices", "A device with its latest values", get(devices::one))
            .path_param("id", device_id(), "Device id")
            .ok(200, schemas::device_with_latest()),
        Op::new("PATCH", "/api/v1/devices/{id}", ADMINS, "devices", "Change a device's kind, road segment, gateway or position (null empties)", axum::routing::patch(devices::update))
            .describe("When `gateway` is given, the answer's `broker` says whether the gateways' broker rights changed at once (`dynsec`), are pending, or what to run (`password_file`: `sccr mqtt-acl`); see POST /api/v1/devices.")
            .path_param("id", device_id(), "Device id")
            .body(json!({"type": "object", "additionalProperties": false,
                "properties": {"kind": kind(), "segment": segment_id_or_null(), "gateway": device_id_or_null(),
                    "position": {"type": ["object", "null"], "additionalProperties": false, "required": ["lon", "lat"],
                        "description": "Where the device stands (WGS84) and the direction it faces (degrees clockwise from north); the next Road Cadastre import links it to the nearest segment by these",
                        "properties": {"lon": {"type": "number", "minimum": -180, "maximum": 180}, "lat": {"type": "number", "minimum": -90, "maximum": 90},
                            "bearing_deg": {"type": ["number", "null"], "minimum": 0, "exclusiveMaximum": 360}}}}}))
            .example(json!({"segment": "viale-strozzi", "gateway": null}))
            .ok(200, schemas::device_one())
            .error(422, beyond),
        Op::new("DELETE", "/api/v1/devices/{id}", ADMINS, "devices", "Decommission a device (history kept, credentials removed)", delete(devices::decommission))
            .describe("DELETE does not erase the device: it is decommissioned. It stays in the registry (listed with decommissioned=true) with its readings, rollups and alerts; its MQTT password is removed, so it can no longer connect, and it leaves its gateway. Registering the id again brings it back with new credentials. The answer's `broker` says what the broker got: with `dynsec` its client is deleted at once and a connection it holds is closed; with `password_file` it is refused after `sccr mqtt-passwd` and a reload (see POST /api/v1/devices).")
            .path_param("id", device_id(), "Device id")
            .ok(200, schemas::device_decommissioned()),
        Op::new("POST", "/api/v1/devices/{id}/credentials", ADMINS, "devices", "New MQTT password for a device, shown once", post(devices::rotate))
            .describe("The answer's `broker` says what the broker got (see POST /api/v1/devices): with `dynsec` the old password is refused at once and a connection made with it is closed; with `password_file` after `sccr mqtt-passwd` and a reload.")
            .path_param("id", device_id(), "Device id")
            .ok(200, schemas::device_credentials()),
        Op::new("GET", "/api/v1/latest", READERS, "telemetry", "Latest value per device and metric", get(routes::latest))
            .query("device", device_id(), "Only this device (404 when no such device is registered)")
            .query("metric", metric_id(), "Only this metric")
            .ok(200, schemas::latest())
            .error(404, "The device does not exist (the error's param names it)"),
        Op::new("GET", "/api/v1/history", READERS, "telemetry", "History of a device, a road segment or the city", get(routes::history))
            .required_query("metric", metric_id(), "Metric id, e.g. speed_kmh")
            .query("device", device_id(), "A device (or segment, or neither for the city). A device that does not exist is a 404; a known one without readings (decommissioned ones included) answers no points")
            .query("segment", segment_id(), "A road segment (404 when it does not exist)")
            .query("bbox", bbox.clone(), "An area: min_lon,min_lat,max_lon,max_lat (the segments with a point inside)")
            .query("from", time(), "Start, inclusive (default: an hour before to). Dates are 00:00 UTC; relative times such as now-24h count from the request's arrival")
            .query("to", time(), "End, exclusive (default: now)")
            .query("step", step, "auto (default), raw, or a bucket width in whole minutes such as 15m. Buckets are aligned to the Unix epoch; a bucket cut by from or to counts only the readings inside [from, to), and covered_from/covered_to in the answer state the range counted")
            .query("resolution", enumeration(&["raw", "1m", "1h", "1d"]), "A stored level instead of step")
            .query("max_points", limit(routes::MAX_HISTORY_POINTS), "Points step=auto aims at")
            .query("agg", enumeration(&["avg", "min", "max", "sum", "count", "last"]), "Figure carried in v")
            .query("fill", enumeration(&["none", "null", "previous"]), "Gap filling")
            .query("limit", limit(routes::MAX_HISTORY_POINTS), "Most points returned")
            .query("format", enumeration(&["json", "csv", "arrow", "parquet"]), "Answer format (wins over Accept); csv, arrow and parquet need planner or admin")
            .query("exclude_flagged", enumeration(&["true", "false"]), "true: leave out the device's readings inside its detector-health flags (docs/detector-health.md); every bucket then equals a recount of the readings outside flags, and the answer says what was left out in `excluded`. A device's history only (422 otherwise, and where retention dropped the raw readings a flagged bucket needs)")
            .ok(200, schemas::history_answer())
            .also_media("text/csv")
            .also_media("application/vnd.apache.arrow.stream")
            .also_media("application/vnd.apache.parquet")
            .error(404, "The device or road segment does not exist (the error's param names it)")
            .error(406, "Accept names no format this operation produces")
            .error(422, beyond),
        Op::new("GET", "/api/v1/baselines", READERS, "telemetry", "Learned time-of-week baseline of a device's metric or a road segment's figure", get(baselines::baselines))
            .describe("The profile learned from the minute rollups of the last `[baselines] weeks` weeks (docs/baselines.md), expanded over [from, to) into one point per 15-minute bucket aligned as history's step=15m buckets: the slot's median (centre), robust spread (scaled MAD, floored) and samples. A slot not learned (too few samples) has null centre and spread.")
            .required_query("metric", enumeration(&["vehicle_count", "speed_kmh", "occupancy_pct", "no2_ugm3", "pm10_ugm3", "flow_vph"]), "With device: vehicle_count, speed_kmh, occupancy_pct, no2_ugm3 or pm10_ugm3; with segment: flow_vph, speed_kmh or occupancy_pct")
            .query("device", device_id(), "A device (or segment; one of them). 404 when it does not exist")
            .query("segment", segment_id(), "A road segment (404 when it does not exist)")
            .query("from", time(), "Start (default: a day before to); the bucket holding it is the first point")
            .query("to", time(), "End, exclusive (default: now); at most 31 days after from")
            .ok(200, schemas::baselines_answer())
            .error(404, "The device or road segment does not exist (the error's param names it)")
            .error(422, beyond),
        Op::new("GET", "/api/v1/devices/{id}/quality", READERS, "telemetry", "A device's data-quality score and its detector-health flags", get(quality::device_quality))
            .describe("The flags the health rules raised (docs/detector-health.md: stuck, zero_busy, missing, implausible) over the last `window`, and the score: the share of the window without a flag, each instant weighted by its heaviest flag (missing 0.5, the others 1); 1 without flags.")
            .path_param("id", device_id(), "Device id")
            .query("window", json!({"type": "string", "pattern": stream::alert::schema::DURATION_PATTERN}), "The window scored, ending now: 1m to 31d (default 24h)")
            .ok(200, schemas::device_quality())
            .error(404, "The device does not exist")
            .error(422, beyond),
        Op::new("GET", "/api/v1/quality", READERS, "telemetry", "Devices by data-quality score, worst first", get(quality::quality_list))
            .describe("Every registered device matching the filters with its score over the last `window` (see GET /api/v1/devices/{id}/quality), its flags holding now and the time flagged; worst score first, then by id.")
            .query("kind", text(), "Only this device kind (422 for one that does not exist)")
            .query("segment", segment_id(), "Only devices on this road segment")
            .query("flag", enumeration(&telemetry::health::HealthFlag::ALL.map(telemetry::health::HealthFlag::as_str)), "Only devices with this flag in the window")
            .query("below", json!({"type": "number", "minimum": 0, "maximum": 1}), "Only devices scoring under this")
            .query("window", json!({"type": "string", "pattern": stream::alert::schema::DURATION_PATTERN}), "The window scored, ending now: 1m to 31d (default 24h)")
            .query("limit", limit(quality::MAX_LIST), "Most devices listed (default 500)")
            .ok(200, schemas::quality_list())
            .error(422, beyond),
        Op::new("GET", "/api/v1/export/readings", PLANNERS, "telemetry", "Readings or rollups of a time range, streamed (CSV by default)", get(export::readings))
            .describe("Rows ordered by UTC day, metric, time and device, streamed with bounded memory. The answer is an attachment named by its range: sccr-readings-2026-11-01_2026-11-08.parquet for [from, to), with the resolution when not raw (sccr-readings-1h-…) and a time of day (2026-11-01T0830Z) on an end not at 00:00 UTC. A range spans at most 3,660 days.")
            .required_query("from", time(), "Start, inclusive. Dates are 00:00 UTC; relative times such as now-7d count from the request's arrival")
            .required_query("to", time(), "End, exclusive")
            .query("metric", metrics(), "Comma-separated metric ids (default: all)")
            .query("device", devices(), "Comma-separated device ids (default: all); one that does not exist is a 404 naming it")
            .query("segment", list_of("[a-z0-9][a-z0-9-]{0,63}"), "Comma-separated road segment ids: the devices linked to them now (default: all); one that does not exist is a 404 naming it")
            .query("resolution", enumeration(&["raw", "1m", "1h", "1d"]), "Raw readings (default) or a rollup level")
            .query("format", enumeration(&["json", "csv", "arrow", "parquet"]), "Answer format (wins over Accept)")
            .ok_media("text/csv", string())
            .also_media("application/json")
            .also_media("application/vnd.apache.arrow.stream")
            .also_media("application/vnd.apache.parquet")
            .error(404, "A device or road segment does not exist (the error's param names it)")
            .error(406, "Accept names no format this operation produces")
            .error(422, beyond),
        Op::new("GET", "/api/v1/segments", READERS, "traffic", "Road segments as GeoJSON with their live state", get(alerts::segments))
            .describe("The live (not retired) segments of the Road Cadastre, each with its traffic state. Without parameters, every segment with its full geometry. `bbox` keeps the segments whose bounding box crosses the area; `zoom` (a web-map zoom level) simplifies each geometry (Douglas-Peucker, tolerance half a pixel at that zoom; the ends are kept), for maps that draw the whole city.")
            .query("bbox", bbox, "An area: min_lon,min_lat,max_lon,max_lat (the segments whose bounding box crosses it)")
            .query("zoom", json!({"type": "integer", "minimum": 0, "maximum": 22}), "Web-map zoom level 0..=22: geometries simplified for it")
            .error(422, "bbox has min after max")
            .ok(200, schemas::segment_answer()),
        Op::new("GET", "/api/v1/forecasts", READERS, "traffic", "Each road segment's short-term forecast of speed and LOS", get(forecasts::forecasts))
            .describe("Made from each segment's newest window (docs/forecasts.md): the usual speed at the target time (the segment's learned baseline), scaled by the segment's smoothed ratio to usual now, that difference fading towards usual with the horizon (`[forecasts]` smoothing and persistence). Horizons 15 and 30 minutes by default. A segment is degrading when some horizon's LOS is worse than now and D or worse. Segments without a learned baseline, or without a speed in their newest window, have no forecast and are left out. The same forecast rides the websocket's segment messages and the segments' GeoJSON.")
            .query("segment", segment_id(), "One road segment (404 when it does not exist)")
            .query("degrading", enumeration(&["true", "false"]), "Only the segments predicted to degrade")
            .ok(200, schemas::forecasts_answer())
            .error(404, "The road segment does not exist (the error's param names it)"),
        Op::new("GET", "/api/v1/catalogue", READERS, "wall", "What screens show of each metric, the Level of Service bounds and the live figures", get(map::catalogue))
            .describe("One catalogue for every screen, built from the server's own definitions: each metric's id, labels (it, en), display unit (`unit`, with proper symbols) and stored unit (`unit_ascii`), decimals, plausible range (`min`, `max`), `kind` (gauge, count, bool, code), whether a chart's axis starts at zero (`zero_based`) and the figure that sums up a bucket (`aggregate`: avg, sum, last); the Level of Service grades with the speed ratio each lies above (`above_ratio`, null for F); the live hub's figures (`speed_fresh_s`, `device_online_s`); the kinds of the registered devices; the languages of the labels.")
            .ok(200, schemas::catalogue_answer()),
        Op::new("GET", "/api/v1/map/devices", READERS, "wall", "Every in-service device with its map position and presence, as compact rows in id order", get(map::devices))
            .describe("Rows follow `columns`: id, kind, segment, lon, lat, online, last_seen. A device sits on its road segment: the n devices of a segment, in id order, at the fractions (k+1)/(n+1) of the segment's length; devices without a segment have null lon and lat. `online` is null for a device the server has not heard from since it started, `last_seen` (Unix ms) null when it was not heard from. Decommissioned devices are left out. `next_cursor` (null on the last page) continues in id order, so devices added meanwhile before the cursor do not shift the pages.")
            .query("limit", json!({"type": "integer", "minimum": 1}), "Devices per page: default 5000, at most 20000 (422 beyond)")
            .query("cursor", device_id(), "next_cursor of the previous page")
            .ok(200, schemas::map_devices())
            .error(422, "limit is over 20000"),
        Op::new("GET", "/api/v1/wall", READERS, "wall", "The wall map's basemap ([wall] in the configuration)", get(map::wall))
            .describe("`basemap` is `{\"kind\":\"context\"}` (the built-in offline context layer, web/geo/florence-context.geojson), `{\"kind\":\"xyz\",\"url\",\"attribution\",\"max_zoom\"}` (a raster tile server's {z}/{x}/{y} template) or `{\"kind\":\"pmtiles\",\"url\":\"/basemap.pmtiles\",\"attribution\",\"max_zoom\"}` (a PMTiles archive this server serves by byte range, with no token).")
            .ok(200, schemas::wall()),
        Op::new("GET", "/api/v1/alerts", READERS, "alerts", "Alerts, newest first", get(alerts::list))
            .query("state", list_of("open|raised|acknowledged|returned|cleared|shelved|suppressed"), "Comma-separated: open (raised, acknowledged and returned, shelved and suppressed ones included), raised, acknowledged, returned, cleared; shelved and suppressed narrow to open alerts that are")
            .query("severity", list_of("info|warning|critical"), "Comma-separated: info, warning, critical")
            .query("device", device_id(), "Alerts of a device (not with segment)")
            .query("segment", segment_id(), "Alerts of a road segment (not with device)")
            .query("rule", text(), "Alerts of a rule")
            .query("before", int64(i64::MIN), "next of the previous page")
            .query("limit", limit(1_000), "Alerts per page")
            .ok(200, schemas::alert_list())
            .error(422, beyond),
        Op::new("GET", "/api/v1/alerts/{id}", READERS, "alerts", "An alert with its lifecycle events", get(alerts::one))
            .path_param("id", alert_id(), "Alert id")
            .ok(200, schemas::alert_with_events()),
        Op::new("POST", "/api/v1/alerts/{id}/ack", OPERATORS, "alerts", "Acknowledge an alert (the caller is the operator)", post(alerts::acknowledge))
            .path_param("id", alert_id(), "Alert id")
            .body(note())
            .example(json!({"note": "unit dispatched"}))
            .ok(200, alert_one())
            .error(409, "The alert's state does not allow it"),
        Op::new("POST", "/api/v1/alerts/{id}/clear", OPERATORS, "alerts", "Clear an alert", post(alerts::clear))
            .path_param("id", alert_id(), "Alert id")
            .body(note())
            .example(json!({"note": "lane reopened"}))
            .ok(200, alert_one())
            .error(409, "The alert's state does not allow it"),
        Op::new("POST", "/api/v1/alerts/{id}/shelve", OPERATORS, "alerts", "Shelve an open alert for a while (ISA-18.2): it keeps its state and signals nothing until the shelf ends; the caller is the operator", post(alerts::shelve))
            .path_param("id", alert_id(), "Alert id")
            .body(json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["reason"],
                "properties": {
                    "reason": {"type": "string", "minLength": 1, "maxLength": alerts::MAX_SHELVE_REASON, "description": "Why (1 to 500 characters)"},
                    "for": {"type": "string", "description": "How long, e.g. \"2h\" (at most alerts.max_shelve, default 8h)"},
                    "until": {"type": "integer", "minimum": 0, "maximum": 253_402_300_799_999_i64, "description": "Until when, Unix milliseconds (in the future, at most alerts.max_shelve ahead)"},
                },
                "oneOf": [{"required": ["for"]}, {"required": ["until"]}],
                "examples": [{"reason": "sensor under maintenance", "for": "2h"}],
            }))
            .ok(200, alert_one())
            .error(409, "The alert is cleared")
            .error(422, "A reason empty or over 500 characters, both or neither of for and until, a time not in the future or past alerts.max_shelve"),
        Op::new("POST", "/api/v1/alerts/{id}/unshelve", OPERATORS, "alerts", "Take an alert off its shelf", post(alerts::unshelve))
            .path_param("id", alert_id(), "Alert id")
            .body(note())
            .example(json!({"note": "maintenance done"}))
            .ok(200, alert_one())
            .error(409, "The alert is cleared or not shelved"),
        Op::new("GET", "/api/v1/alert-rules", READERS, "alerts", "The alert rules in force, each with its origin", get(rules::list))
            .describe(RULES_PRECEDENCE)
            .ok(200, schemas::rules_answer())
            .error(503, "No alert engine runs in this process"),
        Op::new("PUT", "/api/v1/alert-rules", ADMINS, "alerts", "Replace the alert rules (the [alerts] section as JSON)", put(rules::replace))
            .describe(RULES_PRECEDENCE)
            .body(stream::alert::schema::rules_document_schema())
            .ok(200, schemas::rules_answer())
            .error(422, RULES_BEYOND)
            .error(503, "No alert engine runs in this process"),
        Op::new("POST", "/api/v1/alert-rules", ADMINS, "alerts", "Create one alert rule (its id in the body); Location names it", post(rules::create))
            .body(stream::alert::schema::rule_schema(false))
            .ok(201, schemas::rules_answer())
            .error(409, "A rule with this id is in force (a shipped default included); PUT /api/v1/alert-rules/{id} replaces it")
            .error(422, RULES_BEYOND)
            .error(503, "No alert engine runs in this process"),
        Op::new("GET", "/api/v1/alert-rules/{id}", READERS, "alerts", "One alert rule in force (a shipped default too), with its origin", get(rules::one))
            .path_param("id", rule_id(), "Rule id")
            .ok(200, schemas::rule_answer())
            .error(503, "No alert engine runs in this process"),
        Op::new("PUT", "/api/v1/alert-rules/{id}", ADMINS, "alerts", "Create (201, Location names it) or replace (200) one alert rule", put(rules::put))
            .path_param("id", rule_id(), "Rule id")
            .body(stream::alert::schema::rule_schema(true))
            .ok(201, schemas::rules_answer())
            .also_ok(200, "The rule replaced one in force (a shipped default included)")
            .error(422, "The rule matches this document but contradicts itself, the path's id or the other rules, or names a road segment or a device that does not exist (the error says which)")
            .error(503, "No alert engine runs in this process"),
        Op::new("DELETE", "/api/v1/alert-rules/{id}", ADMINS, "alerts", "Remove one alert rule", delete(rules::delete))
            .path_param("id", rule_id(), "Rule id")
            .ok(200, schemas::rules_answer())
            .error(409, "The rule is a shipped default: turn it off with enabled = false (PUT) or air_quality_defaults = false")
            .error(422, "Another rule names this one in its suppressed_by")
            .error(503, "No alert engine runs in this process"),
        Op::new("GET", "/api/v1/dead-letters", ADMINS, "ingest", "Messages ingest refused, newest first, with the reason", get(dead_letters::list))
            .query("reason", text(), "Only this reason code")
            .query("limit", limit(dead_letters::MAX_PAGE), "Entries per page (default 100)")
            .query("cursor", int64(i64::MIN), "next_cursor of the previous page")
            .ok(200, schemas::dead_letter_page()),
        Op::new("GET", "/api/v1/dead-letters/reasons", ADMINS, "ingest", "Dead letters counted by reason", get(dead_letters::reasons))
            .query("since", time(), "Only those received since")
            .ok(200, schemas::dead_letter_reasons())
            .error(422, "since is a relative time that lands outside years 1970..=9999"),
        Op::new("GET", "/api/v1/live", READERS, "live", "The live websocket (its messages: the page's live section, schemas Live*)", get(live::upgrade))
            .query("access_token", text(), "The token, for browsers (which cannot set headers on a websocket)")
            .ok(101, json!({}))
            .error(426, "Not a websocket upgrade request"),
    ]
    .into_iter()
    .chain(operations::operations())
    .chain(commands::operations())
    .chain(webhooks::operations())
    .collect()
}

/// The whole API, built from [`operations()`].
///
/// Every `/api/` route but the public documents needs a bearer token ([`auth`]); each
/// route admits the roles its operation names.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    for op in operations() {
        let route = if op.roles.is_empty() { op.route } else { guard(op.roles, op.route) };
        router = router.route(op.path, route);
    }
    // The configured PMTiles basemap (public, like the static files; not an API operation).
    if let basemap::Basemap::Pmtiles(path) = &state.wall.basemap {
        let file = basemap::RangeFile::new(path.clone());
        router = router.route(
            basemap::PMTILES_PATH,
            get(move |headers: axum::http::HeaderMap| {
                let file = file.clone();
                async move { file.serve(&headers).await }
            }),
        );
    }
    // The wall dashboard's static files (public; not API operations).
    router
        .merge(web::router())
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), http_metrics::track))
        .with_state(state)
}

/// Only the health operations (`/healthz`, `/readyz`, `/metrics`), for a process that
/// serves no API (`sccr serve --role ingest`): its probes and its scrape target.
pub fn probes(state: AppState) -> Router {
    let mut router = Router::new();
    for op in operations().into_iter().filter(|op| op.tag == "health") {
        router = router.route(op.path, op.route);
    }
    router
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(state)
}

#[cfg(test)]
mod tests;
