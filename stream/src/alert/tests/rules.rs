//! Rules documents: parsing, validation with key paths, the shipped defaults.

use super::*;

#[test]
fn a_rules_file_parses_with_every_kind_and_humantime_durations() {
    let set = rules(
        r#"
[storm]
raises_per_minute = 5
group_over_devices = 2
group_window = "30s"

[[rules]]
id = "no2-high"
severity = "warning"
scope = { kind = "air_quality" }
threshold = { metric = "no2_ugm3", above = 200.0, clear = 180.0, for = "10m" }

[[rules]]
id = "offline"
severity = "critical"
offline = { silence_factor = 3.0, min_silence = "2m" }

[[rules]]
id = "stuck-temp"
severity = "info"
flatline = { metric = "temperature_c", epsilon = 0.01, for = "2h", readings = 10 }

[[rules]]
id = "speed-jump"
severity = "info"
scope = { devices = ["loop-1", "loop-2"] }
rate_of_change = { metric = "speed_kmh", max_per_minute = 40.0 }

[[rules]]
id = "congested"
severity = "warning"
scope = { segments = ["viale-a"] }
los = { at_or_worse = "E", for = "5m" }
"#,
    );
    assert_eq!(set.storm.group_window, Duration::from_secs(30));
    let ids: Vec<&str> = set.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "no2-high",
            "offline",
            "stuck-temp",
            "speed-jump",
            "congested",
            "aq-no2-hourly",
            "aq-pm10-daily",
            "aq-pm25-daily",
            "aq-o3-information",
            "aq-o3-8h-target"
        ]
    );
    assert!(
        matches!(&set.rules[0].kind, rule::RuleKind::Threshold(t) if t.hold == Duration::from_secs(600) && t.clear == 180.0)
    );
    assert_eq!(set.rules[0].raises_per_minute, 5);
}

#[test]
fn validation_reports_every_error_with_its_key_path() {
    let config: AlertRulesConfig = toml::from_str(
        r#"
air_quality_defaults = false
[storm]
raises_per_minute = 0
[[rules]]
id = "Bad Id"
severity = "info"
threshold = { metric = "no2", above = 1.0 }
[[rules]]
id = "both"
severity = "info"
threshold = { metric = "no2_ugm3", above = 1.0 }
offline = {}
[[rules]]
id = "hyst"
severity = "info"
threshold = { metric = "no2_ugm3", above = 200.0, clear = 210.0 }
[[rules]]
id = "hyst"
severity = "info"
scope = { devices = ["ok", "NOT OK"] }
los = { at_or_worse = "D" }
[[rules]]
id = "none"
severity = "info"
"#,
    )
    .unwrap();
    let errors = config.validate().unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "storm.raises_per_minute",
            "rules[0].id",
            "rules[0].threshold.metric",
            "rules[1]",
            "rules[2].threshold.clear",
            "rules[3].id",
            "rules[3].scope.devices[1]",
            "rules[4]",
        ],
        "{errors}"
    );
    assert!(
        errors
            .to_string()
            .contains("rules[2].threshold.clear: 210 must be at or below above (200)"),
        "{errors}"
    );
}

#[test]
fn unknown_keys_are_refused() {
    let err = toml::from_str::<AlertRulesConfig>("[[rules]]\nid = \"x\"\nseverity = \"info\"\nthreshold = { metric = \"no2_ugm3\", abov = 1.0 }\n").unwrap_err();
    assert!(err.to_string().contains("abov"), "{err}");
}

#[test]
fn shipped_air_quality_defaults_and_overrides() {
    let set = RuleSet::default();
    assert_eq!(set.rules.len(), 5);
    let no2 = set.rules.iter().find(|r| r.id.as_str() == "aq-no2-hourly").unwrap();
    assert!(
        matches!(&no2.kind, rule::RuleKind::AirQuality(a) if a.limit == 200.0 && a.averaging == Duration::from_secs(3_600))
    );
    let pm25 = AirQualityLimit::default_for(MetricId::Pm25Ugm3).unwrap();
    assert_eq!((pm25.limit, pm25.averaging), (15.0, Duration::from_secs(86_400)));
    // Reusing a shipped id replaces it; a default limit fills in.
    let set = rules("[[rules]]\nid = \"aq-pm10-daily\"\nseverity = \"critical\"\nair_quality = { metric = \"pm10_ugm3\" }\n");
    assert_eq!(set.rules.len(), 5);
    assert_eq!(set.rules[0].severity, Severity::Critical);
    assert!(matches!(&set.rules[0].kind, rule::RuleKind::AirQuality(a) if a.limit == 50.0));
    // The config round-trips through serde.
    let config = AlertRulesConfig {
        rules: AlertRulesConfig::default().effective_definitions(),
        ..AlertRulesConfig::default()
    };
    let text = toml::to_string(&config).unwrap();
    assert_eq!(toml::from_str::<AlertRulesConfig>(&text).unwrap(), config);
}
