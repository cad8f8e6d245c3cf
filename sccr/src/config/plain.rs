//! The one place where the parser's and deserializer's messages (`invalid type: string
//! "x", expected u16`) become the operator's words (`must be a whole number from 1 to
//! 65535, got "x"`), with the allowed values and, for a misspelt key, the closest one.

use super::validate;

/// A TOML syntax error's message on `line`, in plain words.
pub(super) fn syntax(message: &str, line: &str) -> String {
    let m = message.trim();
    let header = line.trim_start().starts_with('[');
    let plain = match m {
        "duplicate key" if header => {
            "this [section] is already defined above (each may appear once)"
        }
        "duplicate key" => "this key is already set above (a key may be set once per section)",
        "unclosed table, expected `]`" => "the [section] header has no closing ]",
        "unclosed array of tables, expected `]]`" => "the [[list]] header has no closing ]]",
        "unclosed inline table, expected `}`" => "the { … } table has no closing } on this line",
        "invalid basic string, expected `\"`" | "invalid literal string, expected `'`" => {
            "the text has no closing quote"
        }
        "key with no value, expected `=`" => "a key needs = and a value, e.g. port = 1883",
        "string values must be quoted, expected literal string"
            if line.split_once('=').is_some_and(|(_, v)| v.trim().is_empty()) =>
        {
            "the value after = is missing"
        }
        _ if m.starts_with("string values must be quoted") || m.starts_with("invalid ") => {
            return match line.split_once('=') {
                // A bare word or address where text was meant: the line as it should be.
                Some((key, value)) if !value.trim().starts_with(['"', '\'', '[', '{']) => {
                    format!(
                        "text must be in quotes: {} = \"{}\"",
                        key.trim(),
                        value.split('#').next().unwrap_or_default().trim()
                    )
                }
                _ => format!("not valid TOML: {}", quotes(m)),
            };
        }
        _ if m.starts_with("missing comma between array elements") => {
            "a list's elements are separated by commas, and the list ends with ] (is a list \
             above left open?)"
        }
        _ if m.contains("unexpected key or value") || m.contains("expected newline") => {
            "one key = value per line: something follows the value on this line"
        }
        _ if m.starts_with("extra `") => {
            return format!("\"{}\" is not expected here", named(m));
        }
        _ => return format!("not valid TOML: {}", quotes(m)),
    };
    plain.to_owned()
}

/// The message without the deserializer's own note of where (`…\nin `mqtt.port``): the
/// key is named in front of every problem already.
pub(super) fn without_context(message: &str) -> String {
    message.split("\nin `").next().unwrap_or(message).trim().to_owned()
}

/// The names a serde message lists: `` expected one of `a`, `b` `` or `` expected `a` or
/// `b` `` (after its first backticked name, the one that was wrong).
pub(super) fn expected_names(message: &str) -> Vec<String> {
    let Some((_, expected)) = message.split_once("`, expected ") else { return Vec::new() };
    expected.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// The first backticked name of a message: the wrong key or value.
fn named(message: &str) -> &str {
    message.split('`').nth(1).unwrap_or_default()
}

/// `key` and what is wrong with it, from a deserializer `message` about the value at
/// `key` (set by the environment variable `var`, when one did). The key named is
/// `key`, or the missing key inside it.
pub(super) fn problem(key: &str, message: &str, var: Option<&str>) -> (String, String) {
    if message.starts_with("unknown field `") {
        let field = named(message);
        let names = expected_names(message);
        return (key.to_owned(), unknown_key(key, field, &names, var));
    }
    if message.starts_with("missing field `") {
        let field = named(message);
        let full = if key.is_empty() { field.to_owned() } else { format!("{key}.{field}") };
        return (full, "is required".to_owned());
    }
    if message.starts_with("unknown variant `") {
        let got = named(message);
        let names: Vec<String> = expected_names(message).iter().map(|n| format!("{n:?}")).collect();
        return (key.to_owned(), format!("must be {}, got {got:?}", one_of(&names)));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((got, expected)) =
            message.strip_prefix(prefix).and_then(|rest| rest.rsplit_once(", expected "))
        {
            return (
                key.to_owned(),
                format!("must be {}, got {}", expected_words(key, expected), got_words(got)),
            );
        }
    }
    // The alert rules' own whole numbers: `-1 is not a whole number from 0 to 4294967295`.
    if let Some((got, range)) = message.split_once(" is not ") {
        if range.starts_with("a whole number") {
            let expected = validate::range_words(key).unwrap_or_else(|| range.to_owned());
            return (key.to_owned(), format!("must be {expected}, got {got}"));
        }
    }
    (key.to_owned(), quotes(message))
}

/// `"a"`, `"a" or "b"`, `one of "a", "b" or "c"`.
pub(super) fn one_of(names: &[String]) -> String {
    match names {
        [] => "nothing (this key takes no value)".to_owned(),
        [one] => one.clone(),
        [rest @ .., last] if rest.len() == 1 => format!("{} or {last}", rest[0]),
        [rest @ .., last] => format!("one of {} or {last}", rest.join(", ")),
    }
}

/// What a key holds, for a type named by serde.
fn expected_words(key: &str, expected: &str) -> String {
    if let Some(range) = validate::range_words(key) {
        return range;
    }
    let words = match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" | "path string" | "a character" => "text in quotes",
        "a sequence" => "a list in brackets, e.g. [\"a\", \"b\"]",
        "a map" => "a table of keys",
        e if e.starts_with("struct ") => "a table of keys (a [section])",
        e if e.starts_with("enum ") => "one of its names, in quotes",
        e => return quotes(e),
    };
    words.to_owned()
}

/// The value that was given, from serde's description of it.
fn got_words(got: &str) -> String {
    for prefix in ["integer ", "floating point ", "boolean ", "char "] {
        if let Some(value) = got.strip_prefix(prefix) {
            return value.trim_matches('`').to_owned();
        }
    }
    if let Some(text) = got.strip_prefix("string ") {
        return text.to_owned();
    }
    match got {
        "sequence" => "a list".to_owned(),
        "map" => "a table".to_owned(),
        other => quotes(other),
    }
}

/// Backticks, which read as code to no one but a programmer, as quotes.
fn quotes(message: &str) -> String {
    message.replace('`', "\"")
}

/// The closest of `names` to `wrong`, when one is close enough to be a misspelling, or
/// is part of it (`mqtt_host` for `host`).
fn closest<'a>(wrong: &str, names: &'a [String]) -> Option<&'a str> {
    let similar = names
        .iter()
        .map(|n| (strsim::jaro_winkler(wrong, n), n))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n.as_str());
    let part = || {
        names
            .iter()
            .filter(|n| n.len() >= 4 && wrong.len() >= 4)
            .filter(|n| wrong.contains(n.as_str()) || n.contains(wrong))
            .max_by_key(|n| n.len())
            .map(String::as_str)
    };
    similar.or_else(part)
}

/// An unknown key `field` at `key`, whose table takes `names`.
fn unknown_key(key: &str, field: &str, names: &[String], var: Option<&str>) -> String {
    let parent = key.strip_suffix(field).map(|p| p.trim_end_matches('.')).unwrap_or_default();
    let suggestion = closest(field, names).map(|name| match var {
        // The variable as it should have been: the wrong level replaced.
        Some(var) => {
            let depth = key.split('.').count();
            let mut levels: Vec<String> =
                var.trim_start_matches("SCCR_").split("__").map(str::to_owned).collect();
            if let Some(level) = levels.get_mut(depth - 1) {
                *level = name.to_ascii_uppercase();
            }
            format!("SCCR_{}", levels.join("__"))
        }
        None if parent.is_empty() => format!("[{name}]"),
        None => name.to_owned(),
    });
    let mean = suggestion.map(|s| format!(" (did you mean {s}?)")).unwrap_or_default();
    let list = names.join(", ");
    if parent.is_empty() {
        format!("is not a section{mean}; the sections are {list}")
    } else if names.is_empty() {
        format!("is not a key of {parent}, which takes no keys")
    } else if parent.contains('[') {
        format!("is not a key of {parent}{mean}; its keys are {list}")
    } else {
        format!("is not a key of [{parent}]{mean}; its keys are {list}")
    }
}

/// Why an `SCCR_` variable without `__` is refused, with the override it may have meant.
pub(super) fn not_an_override(name: &str, sections: &[String]) -> String {
    let lower = name.to_ascii_lowercase();
    let meant = sections.iter().find_map(|s| {
        lower
            .strip_prefix(s.as_str())
            .and_then(|rest| rest.strip_prefix('_'))
            .filter(|rest| !rest.is_empty())
            .map(|rest| format!("SCCR_{}__{}", s.to_ascii_uppercase(), rest.to_ascii_uppercase()))
    });
    let form = "configuration overrides are named SCCR_<SECTION>__<KEY>, with two \
                underscores between levels, e.g. SCCR_DATABASE__URL";
    match meant {
        Some(meant) => format!("is not a setting; did you mean {meant}? ({form})"),
        None => format!(
            "is not a setting: {form}; the other SCCR_ variables sccr reads are SCCR_CONFIG \
             (the configuration file) and SCCR_WEB_DIR; unset or rename it"
        ),
    }
}
