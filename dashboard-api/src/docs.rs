//! `GET /api/v1/docs`: the API as one page people work from, rendered on the server from
//! the operation table ([`operations()`](crate::operations())) and the OpenAPI document built from it, so
//! it cannot miss or invent a route. For each operation: what it does, its roles, its
//! parameters, its body and its answer (field tables and examples), its error statuses
//! and a curl command. Then the alert lifecycle, the live websocket and the MQTT contract,
//! each rendered from the code that defines it ([`sections`]), and every schema once.
//! No external asset: it works offline, and prints.
//!
//! `GET /api/v1/docs/mqtt-contract.md`: docs/mqtt-contract.md as the binary carries it.

pub(crate) mod schema_view;
pub mod sections;

use std::fmt::Write;

use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse};
use serde_json::{Map, Value};

use crate::auth::Role;
use crate::openapi::{In, Op, TAGS};

/// docs/mqtt-contract.md, served at `/api/v1/docs/mqtt-contract.md`.
pub const MQTT_CONTRACT: &str = include_str!("../../docs/mqtt-contract.md");

/// HTML text escaping.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A JSON example as a block.
pub fn example_block(value: &Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    format!("<pre class=example><code>{}</code></pre>", escape(&text))
}

/// `s` with everything but unreserved URL characters percent-encoded: what is left is
/// safe inside double quotes in a shell.
fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// An example value of a parameter: its schema's example (the last one for `to`, so a
/// range ends after it starts), its first allowed value, or its least value.
fn param_example(name: &str, schema: &Value) -> String {
    let examples = schema.get("examples").and_then(Value::as_array);
    let pick = examples.and_then(|e| if name == "to" { e.last() } else { e.first() });
    let value = pick.or_else(|| schema.get("enum")?.get(0));
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => match schema.get("type").and_then(Value::as_str) {
            Some("integer") => schema
                .get("minimum")
                .and_then(Value::as_i64)
                .filter(|m| (1..=1_000).contains(m))
                .unwrap_or(1)
                .to_string(),
            _ => "example".to_owned(),
        },
    }
}

/// The path of `op` with example values, and its required query parameters.
pub fn example_target(op: &Op) -> String {
    let mut path = op.path.to_owned();
    let mut query = Vec::new();
    for p in &op.params {
        let value = param_example(p.name, &p.schema);
        match p.at {
            In::Path => path = path.replace(&format!("{{{}}}", p.name), &url_encode(&value)),
            In::Query if p.required => {
                query.push(format!("{}={}", url_encode(p.name), url_encode(&value)))
            }
            In::Query => {}
        }
    }
    if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// A shell command that calls `op` with curl (`$SCCR` the server, `$TOKEN` a token);
/// none for the websocket.
pub fn curl(op: &Op) -> Option<String> {
    if op.ok.0 == 101 {
        return None;
    }
    let mut cmd = String::from("curl -sS");
    if op.method != "GET" {
        let _ = write!(cmd, " -X {}", op.method);
    }
    // Values are percent-encoded: only [A-Za-z0-9-._~/%?=&] is left, safe in double quotes.
    let _ = write!(cmd, " \"$SCCR{}\"", example_target(op));
    if !op.roles.is_empty() {
        cmd.push_str(" \\\n  -H \"Authorization: Bearer $TOKEN\"");
    }
    if op.body.is_some() {
        let body = op.example_body().cloned().unwrap_or_else(|| Value::Object(Map::new()));
        let json = serde_json::to_string(&body).unwrap_or_default();
        let _ = write!(
            cmd,
            " \\\n  -H 'Content-Type: application/json' \\\n  -d '{}'",
            json.replace('\'', "'\\''")
        );
    }
    Some(cmd)
}

fn badge(role: &str) -> String {
    format!("<span class=\"badge r-{role}\">{role}</span>")
}

fn roles(op: &Op) -> String {
    if op.roles.is_empty() {
        return badge("public");
    }
    op.roles.iter().map(|r| badge(r.as_str())).collect::<Vec<_>>().join(" ")
}

fn resolve<'a>(schema: &'a Value, components: &'a Map<String, Value>) -> &'a Value {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .and_then(|name| components.get(name))
        .unwrap_or(schema)
}

fn first_example<'a>(schema: &'a Value, components: &'a Map<String, Value>) -> Option<&'a Value> {
    schema
        .get("examples")
        .and_then(|e| e.get(0))
        .or_else(|| resolve(schema, components).get("examples").and_then(|e| e.get(0)))
}

fn operation(op: &Op, components: &Map<String, Value>) -> String {
    let method = op.method.to_lowercase();
    let mut html = format!(
        "<article class=op id=op-{id}><h3><span class=\"method m-{method}\">{m}</span> <code class=path>{path}</code> <a class=anchor href=\"#op-{id}\">#</a></h3><p class=roles>{roles}</p><p class=summary>{summary}</p>",
        id = op.operation_id(),
        m = op.method,
        path = escape(op.path),
        roles = roles(op),
        summary = escape(op.summary),
    );
    if let Some(d) = op.description {
        let _ = write!(html, "<p>{}</p>", escape(d));
    }
    if !op.params.is_empty() {
        html.push_str("<h4>Parameters</h4><table class=fields><thead><tr><th>name</th><th>in</th><th>type</th><th>required</th><th>description</th><th>allowed values</th></tr></thead><tbody>");
        for p in &op.params {
            let _ = write!(
                html,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(p.name),
                if p.at == In::Path { "path" } else { "query" },
                schema_view::type_label(&p.schema),
                if p.required { "yes" } else { "no" },
                escape(p.description),
                escape(&schema_view::allowed(&p.schema)),
            );
        }
        html.push_str("</tbody></table>");
    }
    if let Some(body) = &op.body {
        let _ = write!(
            html,
            "<h4>Request body <small>application/json</small></h4>{}",
            schema_view::render(body)
        );
        if let Some(ex) = op.example_body() {
            html.push_str(&example_block(ex));
        }
    }
    let (status, media, schema) = &op.ok;
    if *status == 204 {
        html.push_str("<h4>Answer <span class=status>204</span></h4><p>No content.</p>");
    } else {
        let alt = if op.alt_media.is_empty() {
            String::new()
        } else {
            format!(" <small>also {}</small>", escape(&op.alt_media.join(", ")))
        };
        let _ = write!(
            html,
            "<h4>Answer <span class=status>{status}</span> <small>{}</small>{alt}</h4>",
            escape(media)
        );
        if *status == 101 {
            html.push_str(
                "<p>Switching protocols: see <a href=\"#live\">the live websocket</a>.</p>",
            );
        } else {
            html.push_str(&schema_view::render(schema));
            if let Some(ex) = first_example(schema, components) {
                html.push_str(&example_block(ex));
            }
        }
    }
    if !op.errors.is_empty() {
        html.push_str("<h4>Errors <small>body: <a href=\"#errors\">Error</a></small></h4><table class=errors><tbody>");
        let mut errors = op.errors.clone();
        errors.sort_by_key(|(s, _)| *s);
        for (s, meaning) in errors {
            let _ = write!(html, "<tr><td class=status>{s}</td><td>{}</td></tr>", escape(meaning));
        }
        html.push_str("</tbody></table>");
    }
    if let Some(cmd) = curl(op) {
        let _ = write!(html, "<h4>Example</h4><pre class=curl><code>{}</code></pre>", escape(&cmd));
    }
    html.push_str("</article>");
    html
}

/// What each role is for, and how many operations it may use.
fn roles_table(ops: &[Op]) -> String {
    let about = [
        (Role::Admin, "Everything: devices, rules, tokens, webhooks, dead letters, the audit log, besides what the other roles do."),
        (Role::Operator, "Control-room operators: read live state, history and alerts; acknowledge, clear and shelve alerts; send device commands; create, change, move and annotate road operations."),
        (Role::Planner, "Traffic planners: read live state and alerts; history in CSV, Arrow and Parquet; bulk exports; create and change planned roadworks and events, annotate operations (also the token of an external permit system)."),
        (Role::Device, "Field devices: MQTT only (credentials from device registration); no API operation."),
    ];
    let mut html = String::from(
        "<table><thead><tr><th>role</th><th>for</th><th>operations</th></tr></thead><tbody>",
    );
    for (role, what) in about {
        let n = ops.iter().filter(|o| o.roles.contains(&role)).count();
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td class=num>{n}</td></tr>",
            badge(role.as_str()),
            escape(what)
        );
    }
    let public = ops.iter().filter(|o| o.roles.is_empty()).count();
    let _ = write!(html, "<tr><td>{}</td><td>No token: probes, metrics and these documents.</td><td class=num>{public}</td></tr></tbody></table>", badge("public"));
    html
}

/// The server's address for the examples: this request's Host when it is a plain
/// host[:port], else the default.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let plain = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if plain {
        format!("http://{host}")
    } else {
        "http://127.0.0.1:8080".to_owned()
    }
}

const STYLE: &str = "\
:root{--fg:#1b1f24;--muted:#5a6472;--bg:#fff;--line:#d9dee5;--code:#f3f5f8;--accent:#0b5cad}\
*{box-sizing:border-box}body{margin:0;font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);background:var(--bg)}\
nav{position:fixed;top:0;left:0;bottom:0;width:340px;overflow-y:auto;padding:1em 1em 2em;border-right:1px solid var(--line);background:#f8f9fb;font-size:13px}\
nav a{color:var(--fg);text-decoration:none}nav a:hover{color:var(--accent)}nav ul{list-style:none;margin:0;padding:0 0 0 .8em}nav>ul{padding:0}\
nav li{margin:.15em 0}nav li li a{display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}nav .tag{font-weight:600;margin-top:.6em}nav .m{display:inline-block;width:3.6em;font:600 11px ui-monospace,monospace;color:var(--muted)}\
main{margin-left:340px;padding:1.5em 3em 4em;max-width:1400px}\
h1{margin:.2em 0}h2{margin-top:2.2em;padding-bottom:.2em;border-bottom:2px solid var(--line)}h3{margin:1.6em 0 .4em}h4{margin:1em 0 .3em;font-size:14px}\
small{color:var(--muted);font-weight:400}a{color:var(--accent)}\
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--code);padding:.05em .3em;border-radius:3px}\
pre{background:var(--code);border:1px solid var(--line);border-radius:4px;padding:.7em 1em;overflow-x:auto;margin:.4em 0}pre code{background:none;padding:0;white-space:pre}\
pre.curl{background:#1e2530;color:#e6e9ee;border-color:#1e2530}pre.curl code{color:inherit}\
table{border-collapse:collapse;margin:.4em 0;width:100%}th,td{text-align:left;vertical-align:top;padding:.3em .6em;border-bottom:1px solid var(--line)}th{background:#f3f5f8;font-weight:600}\
td.num{text-align:right;font-variant-numeric:tabular-nums}table.fields td:first-child{white-space:nowrap}table.errors td.status{width:4em;font-weight:600}\
table.matrix td,table.matrix th{text-align:center}td.refused{color:#8a1c1c}\
article.op{border:1px solid var(--line);border-radius:6px;padding:.2em 1.2em 1em;margin:1.2em 0;break-inside:avoid-page}\
article.op h3{margin-top:.6em}.anchor{color:var(--muted);text-decoration:none;font-weight:400}.summary{font-weight:600;margin:.2em 0}.roles{margin:.2em 0}\
.method{display:inline-block;min-width:4.2em;text-align:center;font:700 12px ui-monospace,monospace;color:#fff;border-radius:3px;padding:.2em .4em;vertical-align:middle}\
.m-get{background:#1d6fb8}.m-post{background:#2f8a3b}.m-put{background:#a66300}.m-patch{background:#7a4fb0}.m-delete{background:#b3261e}\
code.path{font-size:15px;background:none}.status{font-variant-numeric:tabular-nums}\
.badge{display:inline-block;font-size:12px;font-weight:600;border-radius:10px;padding:.05em .65em;margin-right:.25em;border:1px solid}\
.r-admin{color:#8a1c1c;border-color:#e3a7a7;background:#fbeaea}.r-operator{color:#0d5a8a;border-color:#9cc7e3;background:#e8f3fb}\
.r-planner{color:#5b3a8c;border-color:#c6b2e3;background:#f2ecfa}.r-device{color:#555;border-color:#ccc;background:#f3f3f3}.r-public{color:#236b2e;border-color:#a8d5ae;background:#ebf7ed}\
.intro{max-width:60em}\
@media print{nav{display:none}main{margin:0;padding:0;max-width:none}pre{white-space:pre-wrap}pre code{white-space:pre-wrap}pre.curl{background:#f3f5f8;color:#000}a{color:inherit}h2{break-before:page}}";

/// The whole page for `ops`.
pub fn page(ops: &[Op], base: &str) -> String {
    let doc = crate::openapi::document(ops);
    let empty = Map::new();
    let components = doc["components"]["schemas"].as_object().unwrap_or(&empty);
    let mut nav = String::from("<nav><ul><li><a href=\"#start\"><b>Getting started</b></a></li><li><a href=\"#errors\"><b>Errors</b></a></li>");
    let mut body = String::new();
    for (tag, about) in TAGS {
        let tagged: Vec<&Op> = ops.iter().filter(|o| o.tag == tag).collect();
        if tagged.is_empty() {
            continue;
        }
        let _ = write!(nav, "<li class=tag><a href=\"#tag-{tag}\">{tag}</a><ul>");
        let _ = write!(body, "<section id=tag-{tag}><h2>{tag}</h2><p>{}</p>", escape(about));
        if tag == "alerts" {
            body.push_str("<p>How alerts move between states: <a href=\"#lifecycle\">the alert lifecycle</a>.</p>");
        }
        if tag == "live" {
            body.push_str("<p>The protocol: <a href=\"#live\">the live websocket</a>.</p>");
        }
        for op in tagged {
            let _ = write!(
                nav,
                "<li><a href=\"#op-{}\" title=\"{m} {p}\"><span class=m>{m}</span>{p}</a></li>",
                op.operation_id(),
                m = op.method,
                p = escape(op.path)
            );
            body.push_str(&operation(op, components));
        }
        nav.push_str("</ul></li>");
        body.push_str("</section>");
    }
    nav.push_str("<li class=tag><a href=\"#lifecycle\">Alert lifecycle</a></li><li class=tag><a href=\"#live\">Live websocket</a><ul>");
    for m in crate::live::messages::messages() {
        let _ = write!(nav, "<li><a href=\"#schema-{}\">{}</a></li>", m.component(), m.name);
    }
    nav.push_str("</ul></li><li class=tag><a href=\"#mqtt\">MQTT contract</a><ul><li><a href=\"#metrics\">Metric catalogue</a></li><li><a href=\"#dead-letters\">Dead-letter reasons</a></li></ul></li><li class=tag><a href=\"#schemas\">Schemas</a><ul>");
    let live: Vec<String> = crate::live::messages::components()
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .chain(crate::live::messages::messages().iter().map(|m| m.component()))
        .collect();
    let mut schemas = String::from("<section id=schemas><h2>Schemas</h2><p>The objects the operations take and answer, each once. Fields marked required are always present in answers; a field that may be empty is null, not absent.</p>");
    for (name, schema) in components {
        if live.contains(name) {
            continue;
        }
        let _ = write!(nav, "<li><a href=\"#schema-{name}\">{name}</a></li>");
        let _ = write!(schemas, "<h3 id=schema-{name}>{name}</h3>");
        if let Some(d) = schema.get("description").and_then(Value::as_str) {
            let _ = write!(schemas, "<p>{}</p>", escape(d));
        }
        schemas.push_str(&schema_view::render(schema));
        if let Some(ex) = first_example(schema, components) {
            schemas.push_str(&example_block(ex));
        }
    }
    schemas.push_str("</section>");
    nav.push_str("</ul></li></ul></nav>");
    let start = format!(
        "<section id=start class=intro><h2>Getting started</h2>\
         <p>Every operation under <code>/api/</code> but these documents needs an API token: send <code>Authorization: Bearer &lt;token&gt;</code>. <code>sccr demo</code> prints an admin token; admins create tokens for people and screens with <a href=\"#op-post_api_v1_tokens\">POST /api/v1/tokens</a>. Each operation names the roles it admits:</p>{roles}\
         <p>The examples on this page read the server's address and your token from the shell:</p>\
         <pre class=curl><code>export SCCR='{base}'\nexport TOKEN='…'   # your API token\ncurl -sS \"$SCCR/api/v1/me\" -H \"Authorization: Bearer $TOKEN\"</code></pre>\
         <p>Times are Unix milliseconds in answers; parameters take {times}. Lists are paged with a cursor: pass the <code>next_cursor</code> (alerts: <code>next</code>) of a page to get the next one; it is null on the last page. The machine-readable document is <a href=\"/api/v1/openapi.json\">/api/v1/openapi.json</a> (OpenAPI 3.1); metric ids, units, labels and alert message codes are served by <a href=\"/api/v1/catalogue\">GET /api/v1/catalogue</a> (see also <a href=\"#metrics\">the metric catalogue</a>); devices speak <a href=\"#mqtt\">the MQTT contract</a> (<a href=\"/api/v1/docs/mqtt-contract.md\">docs/mqtt-contract.md</a>).</p></section>",
        roles = roles_table(ops),
        base = escape(base),
        times = escape(telemetry::TIME_FORMS),
    );
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\"><title>SCCR API</title><style>{STYLE}</style></head><body>{nav}<main>\
         <h1>SCCR API <small>{version}</small></h1><p class=intro>The REST API, the live websocket and the device contract of the Smart City Control Room: {n} operations, generated from the server's own operation table.</p>\
         {start}{errors}{body}{lifecycle}{live}{mqtt}{schemas}</main></body></html>",
        version = env!("CARGO_PKG_VERSION"),
        n = ops.len(),
        errors = sections::errors_html(),
        lifecycle = sections::lifecycle_html(),
        live = sections::live_html(components),
        mqtt = sections::mqtt_html(),
    )
}

/// `GET /api/v1/docs`.
pub async fn serve_page(headers: HeaderMap) -> Html<String> {
    Html(page(&crate::operations(), &base_url(&headers)))
}

/// `GET /api/v1/docs/mqtt-contract.md`.
pub async fn serve_contract() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], MQTT_CONTRACT)
}

#[cfg(test)]
mod tests;
