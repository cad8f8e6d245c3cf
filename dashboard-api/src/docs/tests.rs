use std::collections::HashSet;

use serde_json::Value;

use super::*;

/// Run `script` with `sh`, `curl` replaced by a function that prints its arguments,
/// each ending in NUL.
fn curl_arguments(script: &str) -> Vec<String> {
    let stub = format!("curl() {{ for a in \"$@\"; do printf '%s\\0' \"$a\"; done; }}\n{script}\n");
    let out = std::process::Command::new("sh")
        .args(["-c", &stub])
        .env("SCCR", "http://sccr.test:8080")
        .env("TOKEN", "sccr_t0ken")
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_curl_example_is_valid_shell_that_sends_the_example() {
    let ops = crate::operations();
    let mut checked = 0;
    for op in &ops {
        let Some(cmd) = curl(op) else {
            assert_eq!(op.path, "/api/v1/live", "only the websocket has no curl example");
            continue;
        };
        let args = curl_arguments(&cmd);
        let target = example_target(op);
        assert!(
            target.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~/%?=&".contains(&b)),
            "{target}"
        );
        assert!(args.contains(&format!("http://sccr.test:8080{target}")), "{cmd} → {args:?}");
        assert!(!target.contains('{'), "{target}: every path parameter has a value");
        let method = args.iter().position(|a| a == "-X").map(|i| args[i + 1].as_str());
        assert_eq!(method.unwrap_or("GET"), op.method, "{cmd}");
        let auth = args.iter().any(|a| a == "Authorization: Bearer sccr_t0ken");
        assert_eq!(auth, !op.roles.is_empty(), "{cmd}");
        if op.body.is_some() {
            let i = args.iter().position(|a| a == "-d").expect("a body");
            let sent: Value = serde_json::from_str(&args[i + 1]).expect("the body is JSON");
            assert_eq!(Some(&sent), op.example_body(), "{cmd}");
        }
        for p in op.params.iter().filter(|p| p.required && p.at == In::Query) {
            assert!(target.contains(&format!("{}=", p.name)), "{target} lacks {}", p.name);
        }
        checked += 1;
    }
    assert_eq!(checked, ops.len() - 1);
    // A body with a quote survives the shell's quoting.
    let op = Op::new("POST", "/x", &[], "docs", "x", axum::routing::get(|| async {}))
        .body(serde_json::json!({"type": "object"}))
        .example(serde_json::json!({"note": "it's \"quoted\" $HOME `x`"}));
    let args = curl_arguments(&curl(&op).unwrap());
    let i = args.iter().position(|a| a == "-d").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&args[i + 1]).unwrap()["note"],
        "it's \"quoted\" $HOME `x`"
    );
}

#[test]
fn every_body_has_an_example_and_every_answer_a_schema_and_an_example() {
    let ops = crate::operations();
    let doc = crate::openapi::document(&ops);
    let components = doc["components"]["schemas"].as_object().unwrap();
    for op in &ops {
        if op.body.is_some() {
            assert!(op.example_body().is_some(), "{} {} has no example body", op.method, op.path);
        }
        let (status, media, schema) = &op.ok;
        if *status == 204 || *status == 101 || *media != "application/json" {
            continue;
        }
        assert_ne!(schema, &serde_json::json!({"type": "object"}), "{} {}", op.method, op.path);
        if op.path == "/api/v1/openapi.json" {
            continue;
        }
        assert!(
            first_example(schema, components).is_some(),
            "{} {} answers without an example",
            op.method,
            op.path
        );
    }
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves_and_every_component_is_used() {
    let doc = crate::openapi::document(&crate::operations());
    let mut all = Vec::new();
    refs(&doc, &mut all);
    let components = doc["components"]["schemas"].as_object().unwrap();
    for r in &all {
        let name = r.strip_prefix("#/components/schemas/").expect("a component reference");
        assert!(components.contains_key(name), "{r} does not resolve");
    }
    for name in components.keys() {
        let used = all.iter().any(|r| r.ends_with(&format!("/{name}")));
        let union = name == "LiveClientMessage" || name == "LiveServerMessage";
        assert!(used || union, "component {name} is never referenced");
    }
    for op in crate::operations() {
        assert!(TAGS.iter().any(|(t, _)| *t == op.tag), "tag {} is not in TAGS", op.tag);
    }
}

#[test]
fn the_page_has_every_operation_and_no_broken_anchor() {
    let ops = crate::operations();
    let html = page(&ops, "http://127.0.0.1:8080");
    let mut ids = HashSet::new();
    for piece in html.split(" id=").skip(1) {
        let id: String =
            piece.trim_start_matches('"').chars().take_while(|c| !" >\"".contains(*c)).collect();
        assert!(ids.insert(id.clone()), "id {id} twice");
    }
    for piece in html.split("href=\"#").skip(1) {
        let target: String = piece.chars().take_while(|c| *c != '"').collect();
        assert!(ids.contains(&target), "link to #{target}, which does not exist");
    }
    for op in &ops {
        assert!(ids.contains(&format!("op-{}", op.operation_id())), "{}", op.path);
        assert!(html.contains(&format!("<code class=path>{}</code>", escape(op.path))));
    }
    for section in
        ["start", "errors", "lifecycle", "live", "mqtt", "metrics", "dead-letters", "schemas"]
    {
        assert!(ids.contains(section), "{section}");
    }
    for m in telemetry::MetricId::ALL {
        assert!(html.contains(&format!("<td><code>{}</code></td>", m.as_str())), "{m}");
    }
    for m in crate::live::messages::messages() {
        assert!(ids.contains(&format!("schema-{}", m.component())), "{}", m.name);
    }
    // Self-contained: nothing is loaded from elsewhere.
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("src="));
    assert!(
        html.contains("/api/v1/docs/mqtt-contract.md")
            && html.contains("href=\"/api/v1/catalogue\"")
    );
}

#[test]
fn the_examples_base_url_is_the_request_host_when_plain() {
    let mut headers = HeaderMap::new();
    assert_eq!(base_url(&headers), "http://127.0.0.1:8080");
    headers.insert(header::HOST, "sccr.example.org:8443".parse().unwrap());
    assert_eq!(base_url(&headers), "http://sccr.example.org:8443");
    headers.insert(header::HOST, "x'$(reboot)".parse().unwrap());
    assert_eq!(base_url(&headers), "http://127.0.0.1:8080");
}
