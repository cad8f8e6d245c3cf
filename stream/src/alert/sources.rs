//! Where each rule in force comes from, and which source wins.
//!
//! Three sources make the rules in force: the config file's `[alerts]` section, the rules
//! document changed through the admin API (saved in the store), and the shipped
//! air-quality defaults ([`super::AIR_QUALITY_LIMITS`]). Precedence, per rule id (and per
//! document setting: `storm`, `air_quality_defaults`, `max_shelve`, `operator_positions`):
//!
//! 1. **The latest change wins between the file and the API.** A rule added, changed or
//!    deleted through the API stays so, across restarts, as long as the file's definition
//!    of that id is the one the API changed. When the file's own definition of that id
//!    changes (added to, edited in or removed from `[alerts]`), the file wins for that id
//!    at the next start, and the API's version is reported as replaced (logged at WARN,
//!    audited, kept retrievable). Rules the file did not touch keep their API changes,
//!    and rules added through the API survive any edit of the file that does not define
//!    their id. ([`merge_file_change`])
//! 2. **A rule of the document replaces the default of the same id** entirely (it is
//!    that rule's definition, with its own origin `file` or `api`); to turn a default off,
//!    give its id with `enabled = false`, or set `air_quality_defaults = false`.
//!
//! [`AlertRulesConfig::rules_in_force`] lists every rule in force with its [`RuleOrigin`].

use serde::{Deserialize, Serialize};
use telemetry::EventTime;

use super::rule::{AlertRulesConfig, RuleDefinition, AIR_QUALITY_LIMITS};

/// Where a rule in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleOrigin {
    /// The config file's `[alerts]`, unchanged through the API.
    File,
    /// Added or changed through the admin API.
    Api,
    /// A shipped air-quality default no rule of the document replaces.
    Default,
}

/// One rule in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleInForce {
    pub origin: RuleOrigin,
    /// It has the id of a shipped default, which it replaces.
    pub replaces_default: bool,
    pub rule: RuleDefinition,
}

impl AlertRulesConfig {
    /// Every rule in force (disabled ones included: they are defined), in document order
    /// then the defaults, each with its origin given the file's section `file`: a rule of
    /// this document is the file's if the file defines it identically, else the API's.
    pub fn rules_in_force(&self, file: &AlertRulesConfig) -> Vec<RuleInForce> {
        let default_ids: Vec<&str> = if self.air_quality_defaults {
            AIR_QUALITY_LIMITS.iter().map(|l| l.rule_id).collect()
        } else {
            Vec::new()
        };
        let mut out: Vec<RuleInForce> = self
            .rules
            .iter()
            .map(|def| RuleInForce {
                origin: if file.rules.iter().any(|f| f == def) {
                    RuleOrigin::File
                } else {
                    RuleOrigin::Api
                },
                replaces_default: default_ids.contains(&def.id.as_str()),
                rule: def.clone(),
            })
            .collect();
        let documented = self.rules.len();
        for def in self.effective_definitions().into_iter().skip(documented) {
            out.push(RuleInForce {
                origin: RuleOrigin::Default,
                replaces_default: false,
                rule: def,
            });
        }
        out
    }
}

/// An API version of a rule (or a setting) that a change of the file replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplacedRule {
    /// The rule id, or the setting's name (`storm`, `max_shelve`, …).
    pub id: String,
    /// What the API had: the rule, `null` if the API had deleted it, or the setting's value.
    pub api: Option<serde_json::Value>,
    /// What the file defines now (`null`: the file no longer defines it).
    pub file: Option<serde_json::Value>,
    /// When the file's change was taken in (the start that found it).
    pub at: EventTime,
}

/// The outcome of taking in a changed `[alerts]` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FileMerge {
    /// The document in force from now on.
    pub rules: AlertRulesConfig,
    /// Rule ids the file added, removed and changed since the section the API document
    /// was based on.
    pub file_added: Vec<String>,
    pub file_removed: Vec<String>,
    pub file_changed: Vec<String>,
    /// Settings the file changed (`storm`, `air_quality_defaults`, `max_shelve`,
    /// `operator_positions`).
    pub settings_changed: Vec<&'static str>,
    /// The API's versions the file's changes replaced.
    pub replaced: Vec<ReplacedRule>,
}

fn find<'a>(doc: &'a AlertRulesConfig, id: &str) -> Option<&'a RuleDefinition> {
    doc.rules.iter().find(|r| r.id == id)
}

fn json<T: Serialize>(v: &T) -> Option<serde_json::Value> {
    serde_json::to_value(v).ok()
}

/// Take in a file section `file` that may differ from `base`, the section the API's
/// document `api` was made from (see the module documentation for the precedence).
/// Rules keep the API document's order; rules new to it follow in the file's order.
pub fn merge_file_change(
    base: &AlertRulesConfig,
    api: &AlertRulesConfig,
    file: &AlertRulesConfig,
    at: EventTime,
) -> FileMerge {
    let mut m = FileMerge::default();
    let mut ids: Vec<&str> = api.rules.iter().map(|r| r.id.as_str()).collect();
    for r in file.rules.iter().chain(&base.rules) {
        if !ids.contains(&r.id.as_str()) {
            ids.push(&r.id);
        }
    }
    let mut rules = Vec::new();
    for id in ids {
        let (b, f, a) = (find(base, id), find(file, id), find(api, id));
        if b == f {
            rules.extend(a.cloned());
            continue;
        }
        match (b, f) {
            (None, Some(_)) => m.file_added.push(id.to_owned()),
            (Some(_), None) => m.file_removed.push(id.to_owned()),
            _ => m.file_changed.push(id.to_owned()),
        }
        if a != b && a != f {
            m.replaced.push(ReplacedRule {
                id: id.to_owned(),
                api: a.and_then(json),
                file: f.and_then(json),
                at,
            });
        }
        rules.extend(f.cloned());
    }
    let mut doc = AlertRulesConfig { rules, ..api.clone() };
    macro_rules! setting {
        ($field:ident) => {
            if base.$field != file.$field {
                m.settings_changed.push(stringify!($field));
                if api.$field != base.$field && api.$field != file.$field {
                    m.replaced.push(ReplacedRule {
                        id: stringify!($field).to_owned(),
                        api: json(&api.$field),
                        file: json(&file.$field),
                        at,
                    });
                }
                doc.$field = file.$field.clone();
            }
        };
    }
    setting!(storm);
    setting!(air_quality_defaults);
    setting!(operator_positions);
    if base.max_shelve != file.max_shelve {
        // A duration: shown as the file writes it.
        m.settings_changed.push("max_shelve");
        if api.max_shelve != base.max_shelve && api.max_shelve != file.max_shelve {
            let text = |d| Some(humantime::format_duration(d).to_string().into());
            m.replaced.push(ReplacedRule {
                id: "max_shelve".to_owned(),
                api: text(api.max_shelve),
                file: text(file.max_shelve),
                at,
            });
        }
        doc.max_shelve = file.max_shelve;
    }
    m.rules = doc;
    m
}

/// Every rule and setting where the API's document `api` differs from the file's section
/// `file`, as replaced by the file: what falls back to the file when the API's document
/// can no longer be used.
pub fn file_replaces_all(
    api: &AlertRulesConfig,
    file: &AlertRulesConfig,
    at: EventTime,
) -> Vec<ReplacedRule> {
    let mut ids: Vec<&str> = file.rules.iter().map(|r| r.id.as_str()).collect();
    for r in &api.rules {
        if !ids.contains(&r.id.as_str()) {
            ids.push(&r.id);
        }
    }
    let mut out: Vec<ReplacedRule> = ids
        .into_iter()
        .filter_map(|id| {
            let (a, f) = (find(api, id), find(file, id));
            (a != f).then(|| ReplacedRule {
                id: id.to_owned(),
                api: a.and_then(json),
                file: f.and_then(json),
                at,
            })
        })
        .collect();
    let mut setting = |id: &str, a: Option<serde_json::Value>, f: Option<serde_json::Value>| {
        if a != f {
            out.push(ReplacedRule { id: id.to_owned(), api: a, file: f, at });
        }
    };
    setting("storm", json(&api.storm), json(&file.storm));
    setting(
        "air_quality_defaults",
        json(&api.air_quality_defaults),
        json(&file.air_quality_defaults),
    );
    setting("operator_positions", json(&api.operator_positions), json(&file.operator_positions));
    let text = |d| Some(humantime::format_duration(d).to_string().into());
    setting("max_shelve", text(api.max_shelve), text(file.max_shelve));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn doc(text: &str) -> AlertRulesConfig {
        toml::from_str(text).unwrap()
    }

    fn ids(d: &AlertRulesConfig) -> Vec<&str> {
        d.rules.iter().map(|r| r.id.as_str()).collect()
    }

    const RULE: &str =
        "severity = \"warning\"\nthreshold = { metric = \"no2_ugm3\", above = 200.0 }\n";

    fn rule(id: &str, severity: &str) -> String {
        format!("[[rules]]\nid = \"{id}\"\n{}", RULE.replace("warning", severity))
    }

    #[test]
    fn an_edit_of_the_file_wins_for_the_rules_it_touches_and_keeps_the_api_changes_elsewhere() {
        let t = EventTime(1_000);
        // The file had a and b; through the API: a changed, b deleted, c added.
        let base = doc(&(rule("a", "info") + &rule("b", "info")));
        let api = doc(&(rule("a", "critical") + &rule("c", "info")));
        // Unchanged file: the API's document as it is.
        let same = merge_file_change(&base, &api, &base, t);
        assert_eq!(same.rules, api);
        assert!(same.replaced.is_empty() && same.file_added.is_empty());

        // The file adds d and edits nothing else: the API's changes stay, d joins.
        let file = doc(&(rule("a", "info") + &rule("b", "info") + &rule("d", "info")));
        let m = merge_file_change(&base, &api, &file, t);
        assert_eq!(ids(&m.rules), ["a", "c", "d"]);
        assert_eq!(m.rules.rules[0].severity, crate::alert::Severity::Critical);
        assert_eq!((m.file_added.as_slice(), m.replaced.len()), (&["d".to_owned()][..], 0));

        // The file edits a and removes b: the file wins for a (the API's version is
        // replaced), b stays deleted, c (the API's own) stays.
        let file = doc(&rule("a", "warning"));
        let m = merge_file_change(&base, &api, &file, t);
        assert_eq!(ids(&m.rules), ["a", "c"]);
        assert_eq!(m.rules.rules[0].severity, crate::alert::Severity::Warning);
        assert_eq!(m.file_changed, ["a"]);
        assert_eq!(m.file_removed, ["b"]);
        assert_eq!(m.replaced.len(), 1, "b was deleted both ways: nothing replaced");
        assert_eq!(m.replaced[0].id, "a");
        assert_eq!(m.replaced[0].api.as_ref().unwrap()["severity"], "critical");
        assert_eq!(m.replaced[0].file.as_ref().unwrap()["severity"], "warning");

        // The file defines c itself: the file's c replaces the API's.
        let file = doc(&(rule("a", "info") + &rule("b", "info") + &rule("c", "critical")));
        let m = merge_file_change(&base, &api, &file, t);
        assert_eq!(ids(&m.rules), ["a", "c"]);
        assert_eq!(m.rules.rules[1].severity, crate::alert::Severity::Critical);
        assert_eq!(m.replaced.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn falling_back_to_the_file_replaces_every_difference() {
        let t = EventTime(1_000);
        let file = doc(&(rule("a", "info") + &rule("b", "info")));
        let api =
            doc(&format!("max_shelve = \"2h\"\n{}{}", rule("a", "critical"), rule("c", "info")));
        let replaced = file_replaces_all(&api, &file, t);
        let ids: Vec<&str> = replaced.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "max_shelve"]);
        assert_eq!(replaced[1].api, None, "the API had deleted b");
        assert_eq!(replaced[2].file, None, "the file has no c");
        assert_eq!(replaced[3].api, Some("2h".into()));
    }

    #[test]
    fn settings_follow_the_same_precedence_one_by_one() {
        let t = EventTime(1_000);
        let base = doc("max_shelve = \"8h\"\noperator_positions = 1\n");
        let api = doc("max_shelve = \"2h\"\noperator_positions = 3\n");
        let file =
            doc("max_shelve = \"4h\"\noperator_positions = 1\nair_quality_defaults = false\n");
        let m = merge_file_change(&base, &api, &file, t);
        assert_eq!(m.rules.max_shelve, std::time::Duration::from_secs(4 * 3_600));
        assert_eq!(m.rules.operator_positions, 3, "the file left it alone: the API's stays");
        assert!(!m.rules.air_quality_defaults);
        assert_eq!(m.settings_changed, ["air_quality_defaults", "max_shelve"]);
        assert_eq!(m.replaced.len(), 1);
        assert_eq!(
            (m.replaced[0].id.as_str(), m.replaced[0].api.clone(), m.replaced[0].file.clone()),
            ("max_shelve", Some("2h".into()), Some("4h".into()))
        );
    }

    #[test]
    fn every_rule_in_force_has_its_origin_and_a_same_id_rule_replaces_a_default() {
        let file = doc(&(rule("a", "info") + &rule("aq-no2-hourly", "critical")));
        let mut in_force = file.clone();
        in_force.rules.push(RuleDefinition { id: "b".into(), ..file.rules[0].clone() });
        let listed = in_force.rules_in_force(&file);
        let seen: Vec<(&str, RuleOrigin, bool)> =
            listed.iter().map(|r| (r.rule.id.as_str(), r.origin, r.replaces_default)).collect();
        assert_eq!(
            seen,
            [
                ("a", RuleOrigin::File, false),
                ("aq-no2-hourly", RuleOrigin::File, true),
                ("b", RuleOrigin::Api, false),
                ("aq-pm10-daily", RuleOrigin::Default, false),
                ("aq-pm25-daily", RuleOrigin::Default, false),
                ("aq-o3-information", RuleOrigin::Default, false),
                ("aq-o3-8h-target", RuleOrigin::Default, false),
            ]
        );
        let none = AlertRulesConfig { air_quality_defaults: false, ..file.clone() };
        assert!(none.rules_in_force(&file).iter().all(|r| r.origin != RuleOrigin::Default));
    }
}
