//! Reading a configuration so that one run names every problem: the file's TOML (every
//! syntax error, not only the first), the `SCCR_…` environment overrides (any key, at
//! any depth), then the settings key by key: a key of the wrong type is reported, taken
//! out, and the rest read again, so each bad key is named once; then [`Config::problems`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{plain, Config, ConfigError};

/// `SCCR_` variables that are not configuration overrides and are skipped: the ones
/// `sccr` reads itself (`SCCR_CONFIG`: the configuration file; `SCCR_WEB_DIR`: the
/// dashboard's files served from disk) and `SCCR_BIN`, read by the browser tests. Any
/// other `SCCR_` name without `__` is refused, as a misspelt override would otherwise be
/// silently ignored.
pub const NON_CONFIG_VARIABLES: &[&str] = &["SCCR_CONFIG", "SCCR_WEB_DIR", "SCCR_BIN"];
/// Prefixes of the test suite's and its scripts' variables (`SCCR_TEST_PG_URL`,
/// `SCCR_TIMESCALEDB_DATA_DIR`, …), skipped like [`NON_CONFIG_VARIABLES`].
const NON_CONFIG_PREFIXES: &[&str] = &["SCCR_TEST_", "SCCR_TIMESCALEDB_"];

/// Syntax errors recovered from before the rest of the file is left unread.
const MAX_SYNTAX_ERRORS: usize = 20;
/// Keys of a wrong type taken out, one by one, before giving up.
const MAX_KEY_ERRORS: usize = 200;
/// The table a broken `[header]` line is replaced with, so that the keys under it are
/// not taken for keys of the section before it (its content is dropped).
const UNREADABLE: &str = " unreadable section ";

/// A configuration read from a file, with the names (never the values) of the
/// environment variables that overrode its keys.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    pub overrides: Vec<String>,
}

impl std::fmt::Display for Loaded {
    /// `configuration sccr.toml, overridden by SCCR_DATABASE__URL, SCCR_MQTT__PASSWORD`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "configuration {}", self.path.display())?;
        if self.overrides.is_empty() {
            f.write_str(", no SCCR_ overrides")
        } else {
            write!(f, ", overridden by {}", self.overrides.join(", "))
        }
    }
}

impl Config {
    /// Read the file at `path`, apply the `SCCR_…` overrides of `env`, check everything.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
        let (config, overrides) = read(&text, env).map_err(|problems| ConfigError::Invalid {
            origin: path.display().to_string(),
            problems,
        })?;
        Ok(Loaded { config, path: path.to_path_buf(), overrides })
    }

    /// [`Config::load`] on a text instead of a file (the tests' and the fuzz target's).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        read(text, env).map(|(config, _)| config).map_err(ConfigError::invalid)
    }
}

/// The configuration and the overrides applied, or every problem as `key: message`.
fn read(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, Vec<String>), Vec<String>> {
    let mut problems = Vec::new();
    let document = syntax(text, &mut problems);
    let readable = document.is_some();
    let mut root = toml::Value::Table(document.unwrap_or_default());
    let mut overrides = environment(&mut root, env, &mut problems);
    let mut reported = Vec::new();
    let mut removed = Removed::default();
    let config = settings(root, &mut overrides, &mut problems, &mut reported, &mut removed);
    // The checks of values: only on a file that could be read whole, and not again for
    // a key already reported (its default stood in for it).
    if let Some(config) = config.as_ref().filter(|_| readable) {
        for problem in config.problems() {
            let problem = removed.renumber(problem);
            if !reported.iter().any(|key| about(&problem, key)) {
                problems.push(annotate(problem, &overrides));
            }
        }
    }
    match config {
        Some(config) if problems.is_empty() => {
            Ok((config, overrides.into_iter().map(|o| o.var).collect()))
        }
        _ => Err(problems),
    }
}

/// Whether `problem` (`key: message`) is about `key` or a key inside it.
fn about(problem: &str, key: &str) -> bool {
    problem.strip_prefix(key).is_some_and(|rest| rest.starts_with([':', ' ', '.', '[']))
}

/// The document's table, recovering from each syntax error by blanking its line (a
/// broken `[header]` becomes a table that is dropped); `None` when the errors cascade or
/// are too many for the rest to mean anything.
fn syntax(text: &str, problems: &mut Vec<String>) -> Option<toml::Table> {
    let mut found = Vec::new();
    let table = recover(text, &mut found);
    found.sort_by_key(|(line, _)| *line);
    problems.extend(found.into_iter().map(|(_, problem)| problem));
    table
}

/// [`syntax`]'s work: the problems with their line, in the order found.
fn recover(text: &str, problems: &mut Vec<(usize, String)>) -> Option<toml::Table> {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let mut previous: Option<(usize, String)> = None;
    for n in 0..MAX_SYNTAX_ERRORS {
        let current = lines.join("\n");
        let error = match current.parse::<toml::Table>() {
            Ok(mut table) => {
                table.retain(|key, _| !key.starts_with(UNREADABLE));
                return Some(table);
            }
            Err(e) => e,
        };
        let offset = error.span().map_or(current.len(), |s| s.start);
        let (line, column) = position(&current, offset);
        let text = lines.get(line - 1).map(String::as_str).unwrap_or_default();
        let message = plain::syntax(error.message(), text);
        // The same error on the next line is the previous one going on (an unclosed
        // string or array): the rest of the file cannot be read.
        if previous.as_ref().is_some_and(|(l, m)| line == l + 1 && *m == message) {
            return None;
        }
        problems.push((line, format!("line {line}, column {column}: {message}")));
        let bad = lines.get_mut(line - 1).filter(|l| !l.trim().is_empty())?;
        *bad = if bad.trim_start().starts_with('[') {
            format!("[\"{UNREADABLE}{n}\"]")
        } else {
            String::new()
        };
        previous = Some((line, message));
    }
    problems.push((
        usize::MAX,
        format!("more than {MAX_SYNTAX_ERRORS} syntax errors; fix these, then check again"),
    ));
    None
}

/// Line and column (from 1, in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    (line, column)
}

/// One step of a key path: a key of a table or an element of an array.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Key(String),
    Index(usize),
}

/// `mqtt.port`, `alerts.rules[0].id`.
fn dotted(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The steps of `alerts.rules[0].id`; `None` for what is not such a path.
fn undotted(key: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    for part in key.split('.') {
        let (name, indexes) = part.split_once('[').map_or((part, ""), |(n, i)| (n, i));
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        steps.push(Step::Key(name.to_owned()));
        if !indexes.is_empty() {
            for index in indexes.trim_end_matches(']').split("][") {
                steps.push(Step::Index(index.parse().ok()?));
            }
        }
    }
    Some(steps)
}

/// An environment variable that set a key.
struct Override {
    var: String,
    key: Vec<Step>,
    raw: String,
    /// The value is the variable's text (it did not read as a TOML number, boolean,
    /// array, …; or it did, and the key turned out to want text).
    text: bool,
}

/// Apply the `SCCR_<SECTION>__<KEY>[__<KEY>…]` variables of `env` to `root`, in name order.
fn environment(
    root: &mut toml::Value,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<String>,
) -> Vec<Override> {
    let mut vars: Vec<(String, String)> =
        env.into_iter().filter(|(var, _)| var.starts_with("SCCR_")).collect();
    vars.sort();
    let mut applied = Vec::new();
    for (var, raw) in vars {
        if NON_CONFIG_VARIABLES.contains(&var.as_str())
            || NON_CONFIG_PREFIXES.iter().any(|p| var.starts_with(p))
        {
            continue;
        }
        let name = &var["SCCR_".len()..];
        if !name.contains("__") {
            problems.push(format!("{var}: {}", plain::not_an_override(name, &sections())));
            continue;
        }
        let key: Vec<Step> = name.split("__").map(|s| Step::Key(s.to_ascii_lowercase())).collect();
        if key.iter().any(|s| match s {
            Step::Key(k) => {
                k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }
            Step::Index(_) => true,
        }) {
            problems.push(format!(
                "{var}: names no key: write SCCR_<SECTION>__<KEY>, two underscores between \
                 levels (e.g. SCCR_ALERTS__STORM__RAISES_PER_MINUTE)"
            ));
            continue;
        }
        let (value, text) = value(&raw);
        match set(root, &key, value) {
            Ok(()) => applied.push(Override { var, key, raw, text }),
            Err(at) => problems
                .push(format!("{var}: {at} is a single value, not a section with keys of its own")),
        }
    }
    applied
}

/// A variable's value: TOML when it reads as one (numbers, booleans, arrays, inline
/// tables), else its text; and whether that is text.
fn value(raw: &str) -> (toml::Value, bool) {
    let parsed = format!("v = {raw}").parse::<toml::Table>().ok().filter(|t| t.len() == 1);
    match parsed.and_then(|mut t| t.remove("v")) {
        Some(v) => {
            let text = v.is_str();
            (v, text)
        }
        None => (toml::Value::String(raw.to_owned()), true),
    }
}

/// Set `key` (keys only) in `root`, making the tables on the way; the path of a value
/// in the way when there is one.
fn set(root: &mut toml::Value, key: &[Step], value: toml::Value) -> Result<(), String> {
    let Some((Step::Key(last), parents)) = key.split_last() else { return Err(dotted(key)) };
    let mut at = root;
    for (depth, step) in parents.iter().enumerate() {
        let Step::Key(k) = step else { return Err(dotted(&key[..=depth])) };
        let toml::Value::Table(table) = at else { return Err(dotted(&key[..depth])) };
        at = table.entry(k.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    let toml::Value::Table(table) = at else { return Err(dotted(parents)) };
    table.insert(last.clone(), value);
    Ok(())
}

/// The section names of [`Config`], in the words of its own deserializer.
pub(super) fn sections() -> Vec<String> {
    let mut probe = toml::Table::new();
    probe.insert(String::new(), toml::Value::Boolean(true));
    match serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(probe)) {
        Ok(_) => Vec::new(),
        Err(e) => plain::expected_names(&e.inner().to_string()),
    }
}

/// Indexes taken out of arrays, so that a later error names its element by its place
/// in the file, not in what is left.
#[derive(Default)]
struct Removed(HashMap<Vec<Step>, Vec<usize>>);

impl Removed {
    /// The path in the file of a path in the document as it is now.
    fn original(&self, current: &[Step]) -> Vec<Step> {
        let mut out = Vec::with_capacity(current.len());
        for step in current {
            match step {
                Step::Key(_) => out.push(step.clone()),
                Step::Index(i) => {
                    let mut o = *i;
                    for gone in self.0.get(&out).map(Vec::as_slice).unwrap_or_default() {
                        if *gone <= o {
                            o += 1;
                        }
                    }
                    out.push(Step::Index(o));
                }
            }
        }
        out
    }

    /// A `key: message` problem found in what is left, its key as in the file.
    fn renumber(&self, problem: String) -> String {
        let Some((key, message)) = problem.split_once(": ") else { return problem };
        let Some(steps) = undotted(key) else { return problem };
        format!("{}: {message}", dotted(&self.original(&steps)))
    }

    fn record(&mut self, current: &[Step]) {
        let original = self.original(current);
        if let Some((Step::Index(i), array)) = original.split_last() {
            let gone = self.0.entry(array.to_vec()).or_default();
            let at = gone.partition_point(|g| g < i);
            gone.insert(at, *i);
        }
    }
}

/// Take out the value at `path`, or failing that the nearest container of it that can
/// be taken out; whether anything was.
fn remove(root: &mut toml::Value, path: &[Step], removed: &mut Removed) -> bool {
    for len in (1..=path.len()).rev() {
        let (parents, last) = (&path[..len - 1], &path[len - 1]);
        let mut at = Some(&mut *root);
        for step in parents {
            at = match (at, step) {
                (Some(toml::Value::Table(t)), Step::Key(k)) => t.get_mut(k),
                (Some(toml::Value::Array(a)), Step::Index(i)) => a.get_mut(*i),
                _ => None,
            };
        }
        let done = match (at, last) {
            (Some(toml::Value::Table(t)), Step::Key(k)) => t.remove(k).is_some(),
            (Some(toml::Value::Array(a)), Step::Index(i)) if *i < a.len() => {
                a.remove(*i);
                removed.record(&path[..len]);
                true
            }
            _ => false,
        };
        if done {
            return true;
        }
    }
    false
}

/// The steps of a deserializer's error path, up to the first it cannot name.
fn steps(path: &serde_path_to_error::Path) -> Vec<Step> {
    use serde_path_to_error::Segment;
    let mut out = Vec::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push(Step::Index(*index)),
            Segment::Map { key } => out.push(Step::Key(key.clone())),
            Segment::Enum { variant } => out.push(Step::Key(variant.clone())),
            Segment::Unknown => break,
        }
    }
    out
}

/// The settings of `root`; a key that cannot be read is reported (in `problems`, its
/// path in `reported`), taken out and the rest read again. `None` when what is wrong
/// cannot be taken out.
fn settings(
    mut root: toml::Value,
    overrides: &mut [Override],
    problems: &mut Vec<String>,
    reported: &mut Vec<String>,
    removed: &mut Removed,
) -> Option<Config> {
    for _ in 0..MAX_KEY_ERRORS {
        let error = match serde_path_to_error::deserialize::<_, Config>(root.clone()) {
            Ok(config) => return Some(config),
            Err(e) => e,
        };
        let current = steps(error.path());
        let original = removed.original(&current);
        let message = plain::without_context(&error.inner().to_string());
        // The variable that set this key, or a key inside it (making it a table).
        let from = overrides
            .iter()
            .position(|o| original.starts_with(&o.key))
            .or_else(|| overrides.iter().position(|o| o.key.starts_with(&original)));
        // A variable that read as a number (or boolean, array, …) where the key wants
        // text: it is the text.
        if let Some(o) = from
            .map(|i| &mut overrides[i])
            .filter(|o| !o.text && original.starts_with(&o.key))
            .filter(|_| message.starts_with("invalid type:"))
        {
            o.text = true;
            if set(&mut root, &o.key, toml::Value::String(o.raw.clone())).is_ok() {
                continue;
            }
        }
        let var = from.map(|i| overrides[i].var.clone());
        let (key, mut words) = plain::problem(&dotted(&original), &message, var.as_deref());
        if message.ends_with(", expected string only") {
            // A key taking one of a list of names got another type: name them.
            if let Some(got) = names_wanted(&root, &current) {
                words = got;
            }
        }
        // A key whose value was refused is missing next; it is reported once.
        if !reported.contains(&key) {
            problems.push(annotate(format!("{key}: {words}"), overrides));
            reported.push(key);
        }
        if !remove(&mut root, &current, removed) {
            return None;
        }
    }
    problems.push(format!("more than {MAX_KEY_ERRORS} keys could not be read; fix these first"));
    None
}

/// For a key of `root` that takes one of a list of names and holds another type: "must
/// be (the names), got (its value)". The names are those the deserializer lists when the
/// key holds a name none has.
fn names_wanted(root: &toml::Value, key: &[Step]) -> Option<String> {
    let mut at = root;
    for step in key {
        let Step::Key(k) = step else { return None };
        at = at.as_table()?.get(k)?;
    }
    let got = at.to_string();
    let mut probe = root.clone();
    set(&mut probe, key, toml::Value::String("\u{1}".into())).ok()?;
    let e = serde_path_to_error::deserialize::<_, Config>(probe).err()?;
    let message = plain::without_context(&e.inner().to_string());
    if steps(e.path()) != key || !message.starts_with("unknown variant `") {
        return None;
    }
    let names: Vec<String> =
        plain::expected_names(&message).iter().map(|n| format!("{n:?}")).collect();
    Some(format!("must be {}, got {got}", plain::one_of(&names)))
}

/// `key (SCCR_VAR): message` when an environment variable set the key of a problem, or a
/// key inside it.
fn annotate(problem: String, overrides: &[Override]) -> String {
    let Some((key, message)) = problem.split_once(": ") else { return problem };
    let set_by = |o: &&Override| {
        let var_key = dotted(&o.key);
        about(&format!("{key}:"), &var_key) || about(&format!("{var_key}:"), key)
    };
    match overrides.iter().find(set_by) {
        Some(o) => format!("{key} ({}): {message}", o.var),
        None => problem,
    }
}
