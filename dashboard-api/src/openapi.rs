//! The operation table: every route with its roles, parameters, body and answers. The
//! router is built from it ([`crate::app`]) and so is the OpenAPI 3.1 document at
//! `/api/v1/openapi.json` and the browsable page at `/api/v1/docs`, so the document cannot
//! miss or invent a route, and the role-matrix test walks the same table.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::MethodRouter;
use axum::Json;
use serde_json::{json, Map, Value};

use crate::auth::Role;
use crate::AppState;

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum In {
    Query,
    Path,
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: &'static str,
    pub at: In,
    pub required: bool,
    pub schema: Value,
    pub description: &'static str,
}

/// One operation.
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    /// Roles admitted; empty means public (no token).
    pub roles: &'static [Role],
    pub summary: &'static str,
    /// A longer description, where the summary is not enough.
    pub description: Option<&'static str>,
    pub tag: &'static str,
    pub params: Vec<Param>,
    pub body: Option<Value>,
    /// An example body (else the body schema's first `examples` entry is the example).
    pub body_example: Option<Value>,
    /// The success status, its media type and schema.
    pub ok: (u16, &'static str, Value),
    /// Other success statuses with the same answer, with what they mean (e.g. 200 beside
    /// a 201 of an operation that creates or replaces).
    pub also_ok: Vec<(u16, &'static str)>,
    /// Other statuses this operation answers, with what they mean.
    pub errors: Vec<(u16, &'static str)>,
    /// Alternative media types of the success answer (format negotiation).
    pub alt_media: Vec<&'static str>,
    pub route: MethodRouter<AppState>,
}

impl Op {
    pub fn new(
        method: &'static str,
        path: &'static str,
        roles: &'static [Role],
        tag: &'static str,
        summary: &'static str,
        route: MethodRouter<AppState>,
    ) -> Self {
        let mut errors = Vec::new();
        if !roles.is_empty() {
            errors.extend([
                (401, "No token, or an unknown or revoked token"),
                (403, "The token's role may not use this operation"),
                (429, "Too many failed authentications from this address"),
            ]);
        }
        Self {
            method,
            path,
            roles,
            summary,
            description: None,
            tag,
            params: Vec::new(),
            body: None,
            body_example: None,
            ok: (200, "application/json", json!({"type": "object"})),
            also_ok: Vec::new(),
            errors,
            alt_media: Vec::new(),
            route,
        }
    }

    pub fn query(mut self, name: &'static str, schema: Value, description: &'static str) -> Self {
        self.params.push(Param { name, at: In::Query, required: false, schema, description });
        self.error(400, "A parameter is invalid (the error names it)")
    }

    pub fn required_query(
        mut self,
        name: &'static str,
        schema: Value,
        description: &'static str,
    ) -> Self {
        self.params.push(Param { name, at: In::Query, required: true, schema, description });
        self.error(400, "A parameter is invalid (the error names it)")
    }

    pub fn path_param(
        mut self,
        name: &'static str,
        schema: Value,
        description: &'static str,
    ) -> Self {
        self.params.push(Param { name, at: In::Path, required: true, schema, description });
        self.error(400, "A parameter is invalid (the error names it)").error(404, "No such object")
    }

    pub fn describe(mut self, description: &'static str) -> Self {
        self.description = Some(description);
        self
    }

    pub fn body(mut self, schema: Value) -> Self {
        self.body = Some(schema);
        self.error(400, "The body is invalid (the error names the field)")
    }

    /// An example of the body, shown on the docs page and in the document.
    pub fn example(mut self, body: Value) -> Self {
        self.body_example = Some(body);
        self
    }

    /// The example body: the one given, else the body schema's first example.
    pub fn example_body(&self) -> Option<&Value> {
        self.body_example
            .as_ref()
            .or_else(|| self.body.as_ref().and_then(|b| b.get("examples")?.get(0)))
    }

    /// The anchor and operationId: `get_api_v1_devices__id_`.
    pub fn operation_id(&self) -> String {
        format!("{}{}", self.method.to_lowercase(), self.path.replace(['/', '{', '}', '-'], "_"))
    }

    pub fn ok(mut self, status: u16, schema: Value) -> Self {
        self.ok = (status, "application/json", schema);
        self
    }

    pub fn ok_media(mut self, media: &'static str, schema: Value) -> Self {
        self.ok = (self.ok.0, media, schema);
        self
    }

    /// Another success status with the same answer.
    pub fn also_ok(mut self, status: u16, description: &'static str) -> Self {
        self.also_ok.push((status, description));
        self
    }

    pub fn also_media(mut self, media: &'static str) -> Self {
        self.alt_media.push(media);
        self
    }

    pub fn error(mut self, status: u16, description: &'static str) -> Self {
        if !self.errors.iter().any(|(s, _)| *s == status) {
            self.errors.push((status, description));
        }
        self
    }

    /// The path with example values in its parameters (for tests).
    pub fn example_path(&self, value: &str) -> String {
        let mut path = self.path.to_owned();
        for p in self.params.iter().filter(|p| p.at == In::Path) {
            path = path.replace(&format!("{{{}}}", p.name), value);
        }
        path
    }
}

/// JSON Schema shorthands.
pub fn string() -> Value {
    json!({"type": "string"})
}
pub fn integer() -> Value {
    json!({"type": "integer"})
}
pub fn enumeration(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}
/// An object with these required keys (other keys allowed).
pub fn object_with(keys: &[&str]) -> Value {
    json!({"type": "object", "required": keys})
}
/// A time in any form the server reads (`telemetry::EventTime::parse_spec`): Unix
/// milliseconds, RFC 3339, a date (00:00 UTC), `now`, or `now` less or plus a whole number
/// of s, m, h, d or w (`now-7d`, `-30m`). The absolute patterns admit the years 1971 to
/// 9998 and days up to 28, so that every time they admit is one (offsets cannot leave the
/// range, every day exists); a relative time that lands outside 1970..=9999 is a 422.
pub fn time() -> Value {
    let year = "(197[1-9]|19[89][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])";
    let date = format!("{year}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])");
    json!({"type": "string", "description": format!("A time: {}", telemetry::TIME_FORMS),
    "examples": ["2025-11-23T10:00:00Z", "2025-11-23", "now-24h"],
    "anyOf": [
        {"pattern": "^[0-9]{1,14}$"},
        {"pattern": format!("^{date}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{{1,9}})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")},
        {"pattern": format!("^{date}$")},
        {"pattern": "^(now|now[+-][0-9]{1,9}[smhdw]|-[0-9]{1,9}[smhdw])$"},
    ]})
}
/// Text without control characters (query parameters never carry them).
pub fn text() -> Value {
    json!({"type": "string", "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})
}
/// A device id.
pub fn device_id() -> Value {
    json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$", "examples": ["loop-viale-strozzi-0"]})
}
/// A road segment id.
pub fn segment_id() -> Value {
    json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,63}$", "examples": ["viale-strozzi"]})
}
/// A metric of the catalogue.
pub fn metric_id() -> Value {
    let names: Vec<&str> = telemetry::MetricId::ALL.iter().map(|m| m.as_str()).collect();
    json!({"type": "string", "enum": names, "examples": [telemetry::MetricId::SpeedKmh.as_str()]})
}
/// A comma-separated list of values matching `item` (a regex without anchors).
pub fn list_of(item: &str) -> Value {
    json!({"type": "string", "pattern": format!("^({item})(,({item})){{0,99}}$")})
}
/// A whole number the server reads as a 64-bit integer, at least `min`.
pub fn int64(min: i64) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": i64::MAX})
}

/// Strings without NUL (U+0000), which the store cannot keep in JSON.
const NO_NUL: &str = "^[^\\u0000]*$";

/// A command's `args`: any JSON object without NUL in its keys and strings, at any depth
/// (through the recursive `CommandArg` component).
pub fn command_args() -> Value {
    json!({"type": "object", "propertyNames": {"pattern": NO_NUL}, "description": "The command's arguments: any JSON object (default {})",
        "additionalProperties": {"$ref": "#/components/schemas/CommandArg"}})
}

fn command_arg_schema() -> Value {
    json!({"anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": {"$ref": "#/components/schemas/CommandArg"}},
        command_args(),
    ]})
}

/// The tags, in the docs page's order, with what each covers.
pub const TAGS: [(&str, &str); 13] = [
    ("access", "Who is calling, API tokens and the audit log of privileged actions."),
    ("devices", "The device registry: registration with MQTT credentials, the road segment and gateway of each device, decommissioning."),
    ("telemetry", "Latest values, history at any resolution (JSON, CSV, Arrow IPC, Parquet) and bulk export."),
    ("traffic", "Road segments with their live traffic state."),
    ("wall", "What the wall dashboard reads: the metric catalogue, device positions, the basemap."),
    ("alerts", "Alerts (ISA-18.2 lifecycle: acknowledge, clear, shelve) and the alert rules."),
    ("operations", "Road operations: incidents, roadworks, closures and planned events on the Road Cadastre, with their lifecycle, timeline, audit trail and impact on traffic (docs/operations.md)."),
    ("commands", "Commands down to devices over MQTT, with their acknowledgements."),
    ("webhooks", "Signed CloudEvents (or NGSI-LD entities) of alert moves, device statuses and command results, to HTTP receivers."),
    ("ingest", "What ingest refused: dead letters with their reasons."),
    ("live", "The live websocket."),
    ("docs", "This documentation."),
    ("health", "Probes and metrics."),
];

/// The operations that may read from a read replica (`database.read_url`).
pub const READ_REPLICA_PATHS: &[&str] = &["/api/v1/history", "/api/v1/export/readings"];

/// The headers of an answer that may come from the read replica (docs/replication.md).
fn read_replica_headers() -> Value {
    json!({
        "SCCR-Read-From": {"description": "With a read replica configured: where the answer was read, replica or primary.", "schema": {"type": "string", "enum": ["replica", "primary"]}},
        "SCCR-Replica-Lag": {"description": "When read from the replica: how far it was behind the primary at its last probe, in seconds (at most database.max_read_lag).", "schema": {"type": "string", "examples": ["0.000"]}},
        "SCCR-Read-Reason": {"description": "When a replica is configured but the answer was read from the primary: replica_down or replica_lagging (behind by more than database.max_read_lag).", "schema": {"type": "string", "enum": ["replica_down", "replica_lagging"]}},
    })
}

/// The OpenAPI 3.1 document of `ops`.
pub fn document(ops: &[Op]) -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for op in ops {
        let mut responses = Map::new();
        let mut content = Map::new();
        content.insert(op.ok.1.to_owned(), json!({"schema": op.ok.2}));
        for media in &op.alt_media {
            content.insert((*media).to_owned(), json!({"schema": {}}));
        }
        let mut success = if op.ok.0 == 204 {
            json!({"description": "Done; no content"})
        } else {
            json!({"description": "Success", "content": content})
        };
        if op.ok.0 == 201 {
            success["description"] = json!("Created");
            success["headers"] = json!({"Location": {"description": "The created object's path, where the operation names one", "schema": {"type": "string"}}});
        }
        if READ_REPLICA_PATHS.contains(&op.path) {
            success["headers"] = read_replica_headers();
        }
        for (status, description) in &op.also_ok {
            let mut also = success.clone();
            also["description"] = json!(description);
            if let Some(o) = also.as_object_mut() {
                o.remove("headers");
            }
            responses.insert(status.to_string(), also);
        }
        responses.insert(op.ok.0.to_string(), success);
        for (status, description) in &op.errors {
            responses.insert(
                status.to_string(),
                json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
            );
        }
        let parameters: Vec<Value> = op
            .params
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "in": if p.at == In::Path { "path" } else { "query" },
                    "required": p.required,
                    "schema": p.schema,
                    "description": p.description,
                })
            })
            .collect();
        let mut operation = json!({
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": op.operation_id(),
            "parameters": parameters,
            "responses": responses,
            "x-sccr-roles": op.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        });
        if op.roles.is_empty() {
            operation["security"] = json!([]);
        }
        if let Some(description) = op.description {
            operation["description"] = json!(description);
        }
        if let Some(body) = &op.body {
            let mut media = json!({"schema": body});
            if let Some(example) = &op.body_example {
                media["example"] = example.clone();
            }
            operation["requestBody"] =
                json!({"required": true, "content": {"application/json": media}});
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method.to_lowercase()] = operation;
    }
    let mut schemas = Map::new();
    schemas.insert("Error".into(), crate::schemas::error());
    schemas.insert("CommandArg".into(), command_arg_schema());
    schemas.insert("Operation".into(), crate::operations::operation_schema());
    for (name, schema) in crate::schemas::components() {
        schemas.insert(name.into(), schema);
    }
    for (name, schema) in crate::live::messages::all_components() {
        schemas.insert(name, schema);
    }
    let tags: Vec<Value> = TAGS
        .iter()
        .map(|(name, about)| {
            let description = match *name {
                "alerts" => format!("{about}\n\n{}", crate::docs::sections::lifecycle_markdown()),
                "live" => format!("{about}\n\n{}", crate::docs::sections::live_markdown()),
                _ => (*about).to_owned(),
            };
            json!({"name": name, "description": description})
        })
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "SCCR — Smart City Control Room API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": crate::docs::sections::INFO,
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": tags,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "paths": paths,
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn serve_document() -> impl IntoResponse {
    let doc = document(&crate::operations());
    ([(header::CACHE_CONTROL, "no-cache")], Json(doc))
}
