//! The docs page's sections that are not operations, each rendered from the code that
//! defines what it describes: the error codes (`error::CODES`), the alert lifecycle
//! (`telemetry::alert::AlertState::apply`), the live websocket (`live::messages`) and the
//! MQTT contract (`telemetry::contract`, `telemetry::metric`). The lifecycle table and the
//! live protocol also go into the OpenAPI document as markdown.

use std::fmt::Write;

use serde_json::Value;
use telemetry::alert::{AlertMove, AlertState, TransitionError};
use telemetry::contract::{self, Field};
use telemetry::MetricId;

use super::{escape, example_block, schema_view};
use crate::live::messages::{self, Direction, MessageDoc};

/// The OpenAPI document's `info.description` (markdown).
pub const INFO: &str = "Live state, history, alerts and the device registry of the control room. \
Every /api/ operation but the two documents needs `Authorization: Bearer <token>`; `x-sccr-roles` lists the roles each admits. \
Times are Unix milliseconds unless said otherwise. Errors answer `{\"error\": {\"code\", \"message\", \"param\", \"errors\"?}}` (the Error schema). \
The live websocket's messages are the Live* schemas (tag live); the alert lifecycle is in the description of tag alerts. \
The readable page of this document, with the MQTT contract, is GET /api/v1/docs.";

/// One column of the lifecycle table: moves with the same outcome from every state.
struct Column {
    moves: Vec<AlertMove>,
    by_operator: bool,
    cells: Vec<Result<AlertState, TransitionError>>,
}

/// The transition table, its moves grouped where every outcome is the same.
fn lifecycle_columns() -> Vec<Column> {
    let mut columns: Vec<Column> = Vec::new();
    for mv in AlertMove::ALL {
        let cells: Vec<_> = AlertState::ALL.iter().map(|s| s.apply(mv)).collect();
        match columns.last_mut() {
            Some(c) if c.cells == cells && c.by_operator == mv.by_operator() => c.moves.push(mv),
            _ => columns.push(Column { moves: vec![mv], by_operator: mv.by_operator(), cells }),
        }
    }
    columns
}

fn cell(result: Result<AlertState, TransitionError>, by_operator: bool) -> String {
    match result {
        Ok(state) => format!("`{}`", state.as_str()),
        Err(_) if by_operator => "refused (409)".to_owned(),
        Err(_) => "refused".to_owned(),
    }
}

fn header(c: &Column) -> String {
    let names: Vec<String> = c.moves.iter().map(|m| format!("`{}`", m.as_str())).collect();
    format!("{} ({})", names.join(", "), if c.by_operator { "operator" } else { "engine" })
}

/// The transition table as markdown (in docs/api.md and the OpenAPI document).
pub fn lifecycle_markdown() -> String {
    let columns = lifecycle_columns();
    let mut md = String::from("| from \\ move |");
    for c in &columns {
        let _ = write!(md, " {} |", header(c));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(columns.len()));
    for (i, state) in AlertState::ALL.iter().enumerate() {
        let _ = write!(md, "\n| `{}` |", state.as_str());
        for c in &columns {
            let _ = write!(md, " {} |", cell(c.cells[i], c.by_operator));
        }
    }
    md.push('\n');
    md
}

fn code_html(markdown: &str) -> String {
    // `x` → <code>x</code>, the rest escaped.
    let mut html = String::new();
    for (i, part) in markdown.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(html, "<code>{}</code>", escape(part));
        } else {
            html.push_str(&escape(part));
        }
    }
    html
}

/// The alert lifecycle section.
pub fn lifecycle_html() -> String {
    let columns = lifecycle_columns();
    let mut html = String::from(
        "<section id=lifecycle><h2>Alert lifecycle</h2>\
         <p>Alert handling follows ISA-18.2 / EEMUA 191. One table (<code>telemetry::alert::AlertState::apply</code>) moves alerts in the engine and in the store; every move is an <a href=\"#schema-AlertEvent\">AlertEvent</a> with who and when. An operator move the table refuses is answered 409 (<code>conflict</code>).</p>\
         <h3>States</h3><table><thead><tr><th>state</th><th>meaning</th></tr></thead><tbody>",
    );
    for s in AlertState::ALL {
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td>{}</td></tr>",
            s.as_str(),
            escape(s.meaning())
        );
    }
    html.push_str("</tbody></table><h3>Moves</h3><table><thead><tr><th>move</th><th>by</th><th>what it is</th></tr></thead><tbody>");
    for m in AlertMove::ALL {
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            m.as_str(),
            if m.by_operator() { "operator" } else { "engine" },
            escape(m.meaning())
        );
    }
    html.push_str(
        "</tbody></table><h3>Transitions</h3><table class=matrix><thead><tr><th>from \\ move</th>",
    );
    for c in &columns {
        let _ = write!(html, "<th>{}</th>", code_html(&header(c)));
    }
    html.push_str("</tr></thead><tbody>");
    for (i, state) in AlertState::ALL.iter().enumerate() {
        let _ = write!(html, "<tr><th><code>{}</code></th>", state.as_str());
        for c in &columns {
            let class = if c.cells[i].is_err() { " class=refused" } else { "" };
            let _ = write!(html, "<td{class}>{}</td>", code_html(&cell(c.cells[i], c.by_operator)));
        }
        html.push_str("</tr>");
    }
    html.push_str(
        "</tbody></table>\
         <p><b>Returned and raised again.</b> A returned alert whose condition holds again before anyone acknowledged it is raised again: the same alert, with a <code>resume</code> event; its <code>raised_at</code> stays the first raise. A manual clear while the condition still holds raises nothing until the condition has ended and occurs again.</p>\
         <p><b>Shelving</b> (<a href=\"#op-post_api_v1_alerts__id__shelve\">POST /api/v1/alerts/{id}/shelve</a>) is an overlay: the state does not change; a shelved alert signals nothing (no webhook, not counted in the flood figures) until the operator unshelves it or its <code>until</code> passes (then the engine unshelves it, note \"shelf expired\"). At most <code>alerts.max_shelve</code> (default 8h) ahead.</p>\
         <p><b>Designed suppression</b>: a rule's <code>suppressed_by</code> names other rules; while an alert of one of them is active on the same subject (or, for a device alert, on the device's segment), this rule's alerts are recorded with <code>suppressed</code> set and signal nothing (<code>suppress</code> / <code>unsuppress</code> events). Built in: a device's other alerts are suppressed (<code>device_offline</code>) while its offline alert is active.</p>\
         <p><b>Open</b> alerts are those raised, acknowledged or returned, shelved and suppressed ones included (<code>state=open</code> in <a href=\"#op-get_api_v1_alerts\">GET /api/v1/alerts</a>). The message codes and their parameters are in <a href=\"/api/v1/catalogue\">GET /api/v1/catalogue</a> (<code>alert_codes</code>).</p></section>",
    );
    html
}

fn message_example(m: &MessageDoc) -> Option<&Value> {
    m.schema.get("examples")?.get(0)
}

/// The live protocol as markdown (the OpenAPI document's tag `live`).
pub fn live_markdown() -> String {
    let mut md = format!(
        "`GET /api/v1/live` upgrades to a websocket of JSON text frames (subprotocol `{}`; a browser offers its token as `{}<token>` beside it, or sends `?access_token=`). Every human role may connect. Messages:\n",
        messages::PROTOCOL,
        crate::auth::TOKEN_PROTOCOL
    );
    for m in messages::messages() {
        let who = match m.direction {
            Direction::ClientToServer => "client → server",
            Direction::ServerToClient => "server → client",
        };
        let _ =
            write!(md, "\n- `{}` ({who}, schema `{}`): {}", m.name, m.component(), m.description);
    }
    md.push_str("\n\nError codes:\n");
    for (code, meaning) in messages::ERROR_CODES {
        let _ = write!(md, "\n- `{code}`: {meaning}");
    }
    md.push('\n');
    md
}

/// The live websocket section.
pub fn live_html(components: &serde_json::Map<String, Value>) -> String {
    let mut html = format!(
        "<section id=live><h2>Live websocket <code>GET /api/v1/live</code></h2>\
         <p>JSON text frames, every human role. Connect with the token in the <code>Authorization</code> header, or (browsers, which cannot set headers on a websocket) offer the subprotocols <code>{proto}</code> and <code>{token}&lt;token&gt;</code> — the answer names <code>{proto}</code>, never the token — or add <code>?access_token=&lt;token&gt;</code>. Times are Unix milliseconds. Client messages are at most {mib} MiB. Each client has its own bounded queue; a client that falls behind gets a <code>snapshot</code> with <code>reason: \"resync\"</code> instead of what it missed, and is never disconnected for being slow.</p>\
         <pre class=example><code>const ws = new WebSocket(\"ws://\" + location.host + \"/api/v1/live\", [\"{proto}\", \"{token}\" + token]);\n\
ws.onopen = () =&gt; ws.send(JSON.stringify({{type: \"subscribe\", segments: [], alerts: true, kpi: true, values: false}}));\n\
ws.onmessage = (e) =&gt; {{ const m = JSON.parse(e.data); console.log(m.type, m); }};</code></pre>\
         <p>From a shell, with <a href=\"https://github.com/vi/websocat\">websocat</a>:</p>\
         <pre class=example><code>websocat -H \"Authorization: Bearer $TOKEN\" \"${{SCCR/http/ws}}/api/v1/live\"</code></pre>",
        proto = messages::PROTOCOL,
        token = crate::auth::TOKEN_PROTOCOL,
        mib = messages::MAX_MESSAGE_MIB,
    );
    for (title, direction) in [
        ("Client → server", Direction::ClientToServer),
        ("Server → client", Direction::ServerToClient),
    ] {
        let _ = write!(html, "<h3>{title}</h3>");
        for m in messages::messages().into_iter().filter(|m| m.direction == direction) {
            let _ = write!(
                html,
                "<article class=msg id=schema-{comp}><h4><code>{name}</code> <small>schema <a href=\"#schema-{comp}\">{comp}</a></small></h4><p>{desc}</p>{table}",
                name = m.name,
                comp = m.component(),
                desc = escape(m.description),
                table = schema_view::render(&m.schema),
            );
            if let Some(ex) = message_example(&m) {
                html.push_str(&example_block(ex));
            }
            html.push_str("</article>");
        }
    }
    html.push_str(
        "<h3>Error codes</h3><table><thead><tr><th>code</th><th>meaning</th></tr></thead><tbody>",
    );
    for (code, meaning) in messages::ERROR_CODES {
        let _ = write!(html, "<tr><td><code>{code}</code></td><td>{}</td></tr>", escape(meaning));
    }
    html.push_str("</tbody></table><h3>Objects the messages carry</h3>");
    for (name, _) in messages::components() {
        if let Some(schema) = components.get(name) {
            let _ = write!(html, "<h4 id=schema-{name}>{name}</h4>{}", schema_view::render(schema));
        }
    }
    html.push_str("</section>");
    html
}

fn fields_table(fields: &[Field]) -> String {
    let mut html = String::from("<table><thead><tr><th>field</th><th>type</th><th>required</th><th>meaning</th></tr></thead><tbody>");
    for f in fields {
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(f.name),
            escape(f.kind),
            if f.required { "yes" } else { "no" },
            escape(f.meaning)
        );
    }
    html.push_str("</tbody></table>");
    html
}

fn figure(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The MQTT contract section.
pub fn mqtt_html() -> String {
    let mut html = String::from(
        "<section id=mqtt><h2>MQTT contract (devices)</h2>\
         <p>What a field device and SCCR exchange over MQTT 5. The device of a message is always the one its topic names (a device id matches <code>[a-z0-9][a-z0-9._-]{0,63}</code>); the broker's ACL lets a device use only its own topics. The full contract, with validation limits: <a href=\"/api/v1/docs/mqtt-contract.md\">docs/mqtt-contract.md</a>.</p>\
         <h3>Topics</h3><table><thead><tr><th>topic</th><th>direction</th><th>delivery</th><th>payload</th></tr></thead><tbody>",
    );
    for t in contract::TOPICS {
        let _ = write!(
            html,
            "<tr><td><code>{}{{id}}/{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            telemetry::topic::PREFIX,
            t.kind.suffix(),
            escape(t.direction),
            escape(t.delivery),
            escape(t.payload)
        );
    }
    let _ = write!(
        html,
        "</tbody></table>\
         <h3>Telemetry: compact JSON</h3><p>The first byte that is not whitespace decides the format: <code>{{</code> is compact JSON, <code>[</code> is SenML. Times <code>ts</code> and <code>t</code>: <b>{compact_time}</b>. Values are in the metric's unit (the catalogue below); there is no unit field.</p>{msg}<p>Each reading:</p>{reading}\
         <pre class=example><code>{{\"seq\": 1842, \"ts\": 1763892000123,\n \"readings\": [{{\"m\": \"vehicle_count\", \"v\": 14}},\n              {{\"m\": \"speed_kmh\", \"v\": 41.5, \"t\": \"2025-11-23T10:00:00Z\"}}]}}</code></pre>\
         <h3>Telemetry: SenML JSON (RFC 8428)</h3><p>Times <code>bt</code> and <code>t</code>: <b>{senml_time}</b>. Base fields resolve as RFC 8428 §4.6 says; a record with base fields only sets them for the records after it.</p>{senml}\
         <pre class=example><code>[{{\"bn\": \"urn:dev:loop-1:\", \"bt\": 1763891990, \"bu\": \"km/h\"}},\n {{\"n\": \"speed_kmh\", \"v\": 40}},\n {{\"n\": \"vehicle_count\", \"u\": \"count\", \"v\": 3, \"t\": 2}}]</code></pre>\
         <p>A message error (too large, not JSON, a bad message field) refuses the whole payload; a record error refuses one reading or record, and the rest is stored. Either becomes a dead letter (<a href=\"#op-get_api_v1_dead_letters\">GET /api/v1/dead-letters</a>) with its reason (table below).</p>\
         <h3>Status and Last Will</h3><p>Published retained on connect, and the device's Last Will with state offline. Other keys are ignored.</p>{status}\
         <pre class=example><code>{{\"state\": \"online\", \"fw\": \"1.2.0\", \"ts\": 1763892000123}}</code></pre>\
         <h3>Commands and acknowledgements</h3><p>The core publishes a command sent with <a href=\"#op-post_api_v1_devices__id__commands\">POST /api/v1/devices/{{id}}/commands</a>:</p>{command}\
         <pre class=example><code>{{\"id\": \"0b0c5c1e-8e0f-4c4e-9a57-3d1b3c2a9f10\", \"name\": \"set_interval\",\n \"args\": {{\"interval\": \"10s\"}}, \"expires_at\": 1763892060000}}</code></pre>\
         <p>The device answers on <code>…/commands/ack</code>; the command moves pending → sent (the broker took it) → acked, rejected or failed (the answer), or expired:</p>{ack}\
         <pre class=example><code>{{\"id\": \"0b0c5c1e-8e0f-4c4e-9a57-3d1b3c2a9f10\", \"result\": \"rejected\", \"detail\": \"expired before it arrived\"}}</code></pre>",
        compact_time = escape(contract::COMPACT_TIME),
        senml_time = escape(contract::SENML_TIME),
        msg = fields_table(&contract::COMPACT_MESSAGE),
        reading = fields_table(&contract::COMPACT_READING),
        senml = fields_table(&contract::SENML),
        status = fields_table(&contract::STATUS),
        command = fields_table(&contract::COMMAND),
        ack = fields_table(&contract::COMMAND_ACK),
    );
    html.push_str(
        "<h3 id=metrics>Metric catalogue</h3><p>Every metric SCCR accepts; a value outside its range is refused (<code>out_of_range</code>), a fraction on a count, bool or code metric too (<code>not_whole</code>). Screens read the same table, with labels and decimals, from <a href=\"/api/v1/catalogue\">GET /api/v1/catalogue</a>.</p>\
         <table><thead><tr><th>id</th><th>name</th><th>unit</th><th>SenML units accepted (factor)</th><th>min</th><th>max</th><th>kind</th></tr></thead><tbody>",
    );
    for m in MetricId::ALL {
        let s = m.spec();
        let senml: Vec<String> = s
            .senml_units
            .iter()
            .map(|(u, f)| {
                if *f == 1.0 {
                    format!("<code>{}</code>", escape(u))
                } else {
                    format!("<code>{}</code> (×{})", escape(u), figure(*f))
                }
            })
            .collect();
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class=num>{}</td><td class=num>{}</td><td>{}</td></tr>",
            s.name,
            escape(s.label.en),
            if s.unit.is_empty() { "none".to_owned() } else { format!("<code>{}</code>", escape(s.unit)) },
            if senml.is_empty() { "none".to_owned() } else { senml.join(", ") },
            figure(s.min),
            figure(s.max),
            s.kind.as_str()
        );
    }
    html.push_str("</tbody></table><p>Kinds: gauge (a measured level), count (per reporting interval, whole, not negative), bool (0 or 1; SenML <code>vb</code>), code (a whole number naming a state).</p>\
        <h3 id=dead-letters>Dead-letter reasons</h3><table><thead><tr><th>reason</th><th>refuses</th><th>cause</th></tr></thead><tbody>");
    for r in contract::DEAD_LETTER_REASONS {
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            r.code,
            r.refuses.as_str(),
            escape(r.cause)
        );
    }
    html.push_str("</tbody></table></section>");
    html
}

/// The errors section: the common body and every code.
pub fn errors_html() -> String {
    let mut html = format!(
        "<section id=errors><h2>Errors</h2><p>Every error, from every operation, is a JSON body of one shape (<a href=\"#schema-Error\">Error</a>); <code>param</code> names the parameter or field at fault, and documents validated as a whole (alert rules) list every problem in <code>errors</code>. Input the schema refuses is a 400; schema-valid input refused on other grounds (parameters that conflict, an unknown segment, rules that contradict each other) is a 422.</p>{}{}",
        schema_view::render(&crate::schemas::error()),
        example_block(&serde_json::json!({"error": {"code": "invalid_rules", "message": "rules[2].los.at_or_worse: unknown grade \"G\"", "param": "rules[2].los.at_or_worse", "errors": [{"path": "rules[2].los.at_or_worse", "message": "unknown grade \"G\""}]}})),
    );
    html.push_str(
        "<table><thead><tr><th>code</th><th>status</th><th>meaning</th></tr></thead><tbody>",
    );
    for (code, status, meaning) in crate::error::CODES {
        let _ = write!(
            html,
            "<tr><td><code>{code}</code></td><td>{status}</td><td>{}</td></tr>",
            escape(meaning)
        );
    }
    html.push_str("</tbody></table></section>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_table_in_docs_api_md_is_the_one_the_code_renders() {
        let md = lifecycle_markdown();
        let api_md = include_str!("../../../docs/api.md");
        assert!(api_md.contains(&md), "docs/api.md must hold this table:\n{md}");
        // Every state and move is in it; a refused operator move says 409.
        for s in AlertState::ALL {
            assert!(md.contains(&format!("| `{}` |", s.as_str())));
        }
        for m in AlertMove::ALL {
            assert!(md.contains(&format!("`{}`", m.as_str())));
        }
        assert!(md.contains("refused (409)"));
    }
}
