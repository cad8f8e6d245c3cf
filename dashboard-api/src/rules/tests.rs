//! Which rules document is in force at start: the saved one, an edit of the file merged
//! in, or the file when the saved one no longer validates.

use super::*;

#[test]
fn the_saved_document_wins_while_the_file_is_unchanged_and_an_edit_of_the_file_is_merged() {
    let at = EventTime(1_000);
    let file = AlertRulesConfig::default();
    let api = AlertRulesConfig { air_quality_defaults: false, ..AlertRulesConfig::default() };
    let stored = StoredRules { rules: api.clone(), file: file.clone(), replaced: Vec::new() };
    assert_eq!(
        StoredRules::choose(Some(stored.clone()), &file, at),
        (stored.clone(), RulesSource::Api)
    );
    // The file edits a setting the API did not touch: the API's change stays.
    let mut edited = file.clone();
    edited.storm.raises_per_minute = 5;
    let (chosen, source) = StoredRules::choose(Some(stored.clone()), &edited, at);
    assert!(matches!(source, RulesSource::FileEdited(_)));
    assert_eq!(chosen.rules.storm.raises_per_minute, 5);
    assert!(!chosen.rules.air_quality_defaults, "the API's change stays");
    assert_eq!(chosen.file, edited);
    // The file edits the same setting: the file wins, the API's value is kept.
    let mut edited = file.clone();
    edited.air_quality_defaults = false;
    edited.max_shelve = std::time::Duration::from_secs(3_600);
    let with_api = StoredRules {
        rules: AlertRulesConfig { air_quality_defaults: true, ..edited.clone() },
        ..stored.clone()
    };
    let (chosen, _) = StoredRules::choose(Some(with_api), &edited, at);
    assert_eq!(chosen.rules, edited);
    assert_eq!(StoredRules::choose(None, &edited, at).1, RulesSource::File);
}

#[test]
fn a_saved_document_that_no_longer_validates_gives_way_to_the_file_and_is_kept() {
    let at = EventTime(1_000);
    let file = AlertRulesConfig::default();
    let mut api = file.clone();
    api.rules.push(
        serde_json::from_value(
            json!({"id": "x", "severity": "info", "suppressed_by": ["gone"], "offline": {}}),
        )
        .unwrap(),
    );
    let stored = StoredRules { rules: api, file: file.clone(), replaced: Vec::new() };
    let (chosen, source) = StoredRules::choose(Some(stored), &file, at);
    assert!(matches!(source, RulesSource::SavedInvalid(_)));
    assert_eq!(chosen.rules, file);
    assert_eq!(chosen.replaced.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["x"]);
    assert_eq!(chosen.replaced[0].api.as_ref().unwrap()["suppressed_by"][0], "gone");
}
