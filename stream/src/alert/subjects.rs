//! The subjects a rules document names, checked against the registry: a rule scoped to a
//! road segment or a device that does not exist would be accepted and never fire.
//!
//! Pure: the caller reads the registry (the store's road segments and devices) and says
//! which rules to check. The admin API checks the rules it is given new or changed (422
//! naming the path, e.g. `rules[2].scope.segments[0]: no segment "seg-999" (did you mean
//! "seg-99"?)`); `sccr serve` checks the rules in force at start, after the store has
//! been seeded with the segments of `segments.seed`. Device kinds are a closed set and are
//! checked by [`AlertRulesConfig::validate`] itself.

use std::collections::BTreeSet;

use telemetry::suggest::{closest, did_you_mean};
use telemetry::{DeviceId, SegmentId};

use super::rule::{AlertRulesConfig, RuleDefinition, RuleError, ScopeDefinition};
use crate::stream_core::Registry;

/// The road segments and devices that exist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KnownSubjects {
    pub segments: BTreeSet<SegmentId>,
    pub devices: BTreeSet<DeviceId>,
}

impl KnownSubjects {
    pub fn of_registry(registry: &Registry) -> Self {
        Self {
            segments: registry.segments.iter().map(|s| s.id.clone()).collect(),
            devices: registry.devices.iter().map(|d| d.id.clone()).collect(),
        }
    }
}

/// Scope references to subjects that do not exist, by what they name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnknownSubjects {
    /// `rules[i].scope.segments[k]`: no such road segment.
    pub segments: Vec<RuleError>,
    /// `rules[i].scope.devices[k]`: no such device in the registry.
    pub devices: Vec<RuleError>,
}

impl UnknownSubjects {
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.devices.is_empty()
    }

    /// Both lists, segments first.
    pub fn all(self) -> Vec<RuleError> {
        self.segments.into_iter().chain(self.devices).collect()
    }
}

fn unknown(
    path: String,
    what: &str,
    given: &str,
    known: impl IntoIterator<Item = String>,
) -> RuleError {
    let known: Vec<String> = known.into_iter().collect();
    let suggestion = closest(given, known.iter().map(String::as_str));
    RuleError {
        path,
        message: format!("no {what} {given:?}{}", did_you_mean(suggestion)),
        beyond_schema: true,
    }
}

impl AlertRulesConfig {
    /// The scope references of the rules `check` selects (by definition) to road segments
    /// or devices `known` does not hold, each under its key path with the closest known id
    /// when one is close. Ids that do not parse are left to [`Self::validate`].
    pub fn unknown_subjects(
        &self,
        known: &KnownSubjects,
        mut check: impl FnMut(&RuleDefinition) -> bool,
    ) -> UnknownSubjects {
        let mut out = UnknownSubjects::default();
        for (i, def) in self.rules.iter().enumerate() {
            if !check(def) {
                continue;
            }
            match &def.scope {
                ScopeDefinition::Segments(ids) => {
                    for (k, raw) in ids.iter().enumerate() {
                        let Ok(id) = SegmentId::parse(raw) else { continue };
                        if !known.segments.contains(&id) {
                            out.segments.push(unknown(
                                format!("rules[{i}].scope.segments[{k}]"),
                                "segment",
                                raw,
                                known.segments.iter().map(|s| s.as_str().to_owned()),
                            ));
                        }
                    }
                }
                ScopeDefinition::Devices(ids) => {
                    for (k, raw) in ids.iter().enumerate() {
                        let Ok(id) = DeviceId::parse(raw) else { continue };
                        if !known.devices.contains(&id) {
                            out.devices.push(unknown(
                                format!("rules[{i}].scope.devices[{k}]"),
                                "device",
                                raw,
                                known.devices.iter().map(|d| d.as_str().to_owned()),
                            ));
                        }
                    }
                }
                ScopeDefinition::All | ScopeDefinition::Kind(_) => {}
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unknown_segments_and_devices_are_named_with_the_closest_known_id() {
        let doc: AlertRulesConfig = toml::from_str(
            r#"
[[rules]]
id = "ok"
severity = "info"
scope = { segments = ["seg-99"] }
los = { at_or_worse = "E" }
[[rules]]
id = "typo"
severity = "info"
scope = { segments = ["seg-99", "seg-999", "elsewhere"] }
los = { at_or_worse = "E" }
[[rules]]
id = "dev"
severity = "info"
scope = { devices = ["loop-1", "loop-7"] }
offline = {}
"#,
        )
        .unwrap();
        let known = KnownSubjects {
            segments: ["seg-99", "seg-100"].map(|s| SegmentId::parse(s).unwrap()).into(),
            devices: ["loop-1", "loop-2"].map(|d| DeviceId::parse(d).unwrap()).into(),
        };
        let found = doc.unknown_subjects(&known, |_| true);
        let texts: Vec<String> = found.clone().all().iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "rules[1].scope.segments[1]: no segment \"seg-999\" (did you mean \"seg-99\"?)",
                "rules[1].scope.segments[2]: no segment \"elsewhere\"",
                "rules[2].scope.devices[1]: no device \"loop-7\" (did you mean \"loop-1\"?)",
            ]
        );
        assert!(found.segments.iter().chain(&found.devices).all(|e| e.beyond_schema));
        let only_dev = doc.unknown_subjects(&known, |d| d.id == "dev");
        assert_eq!((only_dev.segments.len(), only_dev.devices.len()), (0, 1));
        assert!(doc.unknown_subjects(&known, |_| false).is_empty());
    }
}
