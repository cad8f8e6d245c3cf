//! JSON Schemas as tables people read: one row per field (nested fields as `a.b`, array
//! items as `a[].b`), with its type, whether it is required, what it means and the values
//! it allows. A reference to a named component is a link to that component's table.

use serde_json::Value;

use super::escape;

/// One field of a schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub path: String,
    /// HTML (component names are links).
    pub ty: String,
    pub required: bool,
    pub description: String,
    pub allowed: String,
}

/// How deep nested objects are unfolded.
const MAX_DEPTH: usize = 3;

fn component_name(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.strip_prefix("#/components/schemas/")
}

/// A link to a component's table.
pub fn component_link(name: &str) -> String {
    format!("<a href=\"#schema-{0}\">{0}</a>", escape(name))
}

/// The alternatives of `anyOf` / `oneOf`.
fn alternatives(schema: &Value) -> Vec<&Value> {
    ["anyOf", "oneOf"]
        .iter()
        .filter_map(|k| schema.get(*k)?.as_array())
        .flat_map(|a| a.iter())
        .collect()
}

fn is_null(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

/// The type of a schema, in words (HTML).
pub fn type_label(schema: &Value) -> String {
    if let Some(name) = component_name(schema) {
        return component_link(name);
    }
    if let Some(c) = schema.get("const") {
        return format!("<code>{}</code>", escape(&c.to_string()));
    }
    let alts = alternatives(schema);
    if !alts.is_empty() {
        let mut labels: Vec<String> = Vec::new();
        for alt in alts {
            let label = type_label(alt);
            if !labels.contains(&label) {
                labels.push(label);
            }
        }
        return labels.join(" or ");
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        if let Some(first) = all.iter().find(|s| s.get("type").is_some()) {
            return type_label(first);
        }
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ if schema.get("properties").is_some() => vec!["object"],
        _ => return "any".to_owned(),
    };
    types
        .iter()
        .map(|t| match *t {
            "array" => match (schema.get("items"), schema.get("prefixItems")) {
                (_, Some(Value::Array(items))) => format!(
                    "array [{}]",
                    items.iter().map(type_label).collect::<Vec<_>>().join(", ")
                ),
                (Some(items), _) => format!("array of {}", type_label(items)),
                _ => "array".to_owned(),
            },
            other => other.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The values a schema allows beyond its type: enums, patterns, bounds, lengths.
pub fn allowed(schema: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let shown: Vec<String> = values
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        parts.push(format!("one of: {}", shown.join(", ")));
    }
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    let big = |v: f64| v.abs() >= 1e15;
    match (bound("minimum"), bound("maximum")) {
        (Some(lo), Some(hi)) if !big(hi) => parts.push(format!("{lo} to {hi}")),
        (Some(lo), _) if !big(lo) => parts.push(format!("at least {lo}")),
        (_, Some(hi)) if !big(hi) => parts.push(format!("at most {hi}")),
        _ => {}
    }
    if let Some(lo) = bound("exclusiveMinimum") {
        parts.push(format!("above {lo}"));
    }
    match (bound("minLength"), bound("maxLength")) {
        (Some(lo), Some(hi)) => parts.push(format!("{lo} to {hi} characters")),
        (None, Some(hi)) => parts.push(format!("at most {hi} characters")),
        (Some(lo), None) => parts.push(format!("at least {lo} characters")),
        _ => {}
    }
    match (bound("minItems"), bound("maxItems")) {
        (Some(lo), Some(hi)) if lo == hi => parts.push(format!("{lo} items")),
        (Some(lo), Some(hi)) => parts.push(format!("{lo} to {hi} items")),
        (None, Some(hi)) => parts.push(format!("at most {hi} items")),
        (Some(lo), None) => parts.push(format!("at least {lo} items")),
        _ => {}
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        if p.len() <= 80 {
            parts.push(format!("matches {p}"));
        } else {
            parts.push("see the pattern in the OpenAPI document".to_owned());
        }
    }
    for alt in alternatives(schema) {
        let a = allowed(alt);
        if !a.is_empty() && !parts.contains(&a) {
            parts.push(a);
        }
    }
    if let Some(items) = schema.get("items") {
        let a = allowed(items);
        if !a.is_empty() {
            parts.push(format!("each: {a}"));
        }
    }
    parts.join("; ")
}

/// The object a schema describes, if it is one (directly, through `allOf`, or as the one
/// non-null alternative of a nullable object).
/// An object's fields (name, schema) in the order to show them, and its required names.
type ObjectParts = (Vec<(String, Value)>, Vec<String>);

fn object_parts(schema: &Value) -> Option<ObjectParts> {
    let mut props: Vec<(String, Value)> = Vec::new();
    let mut required: Vec<String> = Vec::new();
    let mut found = false;
    let mut take = |s: &Value, props: &mut Vec<(String, Value)>, required: &mut Vec<String>| {
        if let Some(p) = s.get("properties").and_then(Value::as_object) {
            found = true;
            for (k, v) in p {
                // The first statement of a field wins: allOf entries that restate it
                // (`{"required": [k], "properties": {k: {"type": …}}}`) add nothing.
                if !props.iter().any(|(name, _)| name == k) {
                    props.push((k.clone(), v.clone()));
                }
            }
        }
        if let Some(r) = s.get("required").and_then(Value::as_array) {
            required.extend(r.iter().filter_map(Value::as_str).map(str::to_owned));
        }
    };
    take(schema, &mut props, &mut required);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            take(s, &mut props, &mut required);
        }
    }
    if !found {
        let alts: Vec<&Value> = alternatives(schema).into_iter().filter(|a| !is_null(a)).collect();
        if let [only] = alts.as_slice() {
            if component_name(only).is_none() {
                return object_parts(only);
            }
        }
        return None;
    }
    // Required fields first, in the schema's order, then the others by name.
    props.sort_by_key(|(name, _)| {
        (required.iter().position(|r| r == name).unwrap_or(usize::MAX), name.clone())
    });
    Some((props, required))
}

/// A schema's description, or that of the first of its alternatives that has one.
fn description(schema: &Value) -> &str {
    schema
        .get("description")
        .and_then(Value::as_str)
        .or_else(|| alternatives(schema).into_iter().find_map(|a| a.get("description")?.as_str()))
        .unwrap_or_default()
}

/// The rows of a schema's fields (none when it is not an object, or a reference).
pub fn rows(schema: &Value) -> Vec<Row> {
    let mut out = Vec::new();
    collect(schema, "", 0, &mut out);
    out
}

fn collect(schema: &Value, prefix: &str, depth: usize, out: &mut Vec<Row>) {
    let Some((props, required)) = object_parts(schema) else { return };
    for (name, field) in props {
        let path = format!("{prefix}{name}");
        out.push(Row {
            path: path.clone(),
            ty: type_label(&field),
            required: required.contains(&name),
            description: description(&field).to_owned(),
            allowed: allowed(&field),
        });
        if depth + 1 >= MAX_DEPTH || component_name(&field).is_some() {
            continue;
        }
        collect(&field, &format!("{path}."), depth + 1, out);
        let items = field
            .get("items")
            .or_else(|| alternatives(&field).into_iter().find_map(|a| a.get("items")));
        if let Some(items) = items {
            if component_name(items).is_none() {
                collect(items, &format!("{path}[]."), depth + 1, out);
            }
        }
    }
}

/// A table of `rows`; `what` names the first column.
pub fn table(rows: &[Row], what: &str) -> String {
    let mut html = format!(
        "<table class=fields><thead><tr><th>{what}</th><th>type</th><th>required</th><th>description</th><th>allowed values</th></tr></thead><tbody>"
    );
    for r in rows {
        html.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.path),
            r.ty,
            if r.required { "yes" } else { "no" },
            escape(&r.description),
            escape(&r.allowed),
        ));
    }
    html.push_str("</tbody></table>");
    html
}

/// A schema as HTML: its field table, or its type when it has no fields; its
/// alternatives when it is one of several objects.
pub fn render(schema: &Value) -> String {
    let rows = rows(schema);
    if !rows.is_empty() {
        return table(&rows, "field");
    }
    let alts: Vec<&Value> = alternatives(schema).into_iter().filter(|a| !is_null(a)).collect();
    if alts.len() > 1 && alts.iter().all(|a| component_name(a).is_some()) {
        let links: Vec<String> = alts.iter().map(|a| type_label(a)).collect();
        return format!("<p>One of: {}.</p>", links.join(", "));
    }
    let mut html = format!("<p>Type: {}", type_label(schema));
    let a = allowed(schema);
    if !a.is_empty() {
        html.push_str(&format!("; {}", escape(&a)));
    }
    html.push_str(".</p>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_fields_references_and_nullable_objects_become_rows() {
        let schema = json!({"type": "object", "required": ["b", "a"], "properties": {
            "a": {"type": "integer", "minimum": 1, "maximum": 9, "description": "An A"},
            "b": {"$ref": "#/components/schemas/Thing"},
            "c": {"anyOf": [{"type": "object", "required": ["d"], "properties": {"d": {"type": "string", "enum": ["x", "y"]}}}, {"type": "null"}]},
            "e": {"type": "array", "items": {"type": "object", "properties": {"f": {"type": ["number", "null"]}}}},
        }});
        let rows = rows(&schema);
        let paths: Vec<&str> = rows.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["b", "a", "c", "c.d", "e", "e[].f"]);
        assert_eq!(rows[0].ty, "<a href=\"#schema-Thing\">Thing</a>");
        assert!(rows[0].required && !rows[2].required && rows[3].required);
        assert_eq!((rows[1].allowed.as_str(), rows[1].description.as_str()), ("1 to 9", "An A"));
        assert_eq!(rows[2].ty, "object or null");
        assert_eq!(rows[3].allowed, "one of: x, y");
        assert_eq!(rows[4].ty, "array of object");
        assert_eq!(rows[5].ty, "number or null");
    }
}
