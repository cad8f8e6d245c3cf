//! The configuration's reading, its errors and their words.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn generated_file_is_the_default() {
    assert_eq!(Config::from_toml(DEFAULT_CONFIG, []).unwrap(), Config::default());
    assert_eq!(Config::from_toml("", []).unwrap(), Config::default());
}

#[test]
fn environment_overrides_keys() {
    let c = Config::from_toml(
        "[mqtt]\nport = 1884\n",
        env(&[
            ("SCCR_DATABASE__URL", "sqlite:x.db"),
            ("SCCR_MQTT__PORT", "2000"),
            ("SCCR_WRITER__MAX_BATCH_AGE", "10ms"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(c.database.url, "sqlite:x.db");
    assert_eq!(c.mqtt.port, 2000);
    assert_eq!(c.writer.max_batch_age, Duration::from_millis(10));
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let e = Config::from_toml("[mqtt]\nhots = \"x\"\n", []).unwrap_err().to_string();
    assert!(e.contains("hots"), "{e}");
    let e = Config::from_toml("[stream]\nwindow = \"soon\"\n", []).unwrap_err().to_string();
    assert!(e.contains("soon") && e.contains("duration"), "{e}");
    let e = Config::from_toml("[nope]\n", []).unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
    let e = Config::from_toml("", env(&[("SCCR_DATABASE_URL", "x")])).unwrap_err().to_string();
    assert!(e.contains("SCCR_DATABASE_URL"), "{e}");
}

#[test]
fn max_past_age_longer_than_the_raw_retention_is_refused_with_the_reason() {
    let e = Config::from_toml("[retention]\nraw = \"3d\"\n", []).unwrap_err();
    let ConfigError::Invalid { problems: list, .. } = e else { panic!("{e}") };
    assert!(
        list.iter()
            .any(|m| m.starts_with("ingest.max_past_age: must not be longer than retention.raw")
                && m.contains("older_than_retention")),
        "{list:?}"
    );
    let ok = "[retention]\nraw = \"3d\"\n[ingest]\nmax_past_age = \"3d\"\n";
    assert!(Config::from_toml(ok, []).is_ok());
    assert!(Config::from_toml(
        "[retention]\nraw = \"forever\"\n[ingest]\nmax_past_age = \"400d\"\n",
        []
    )
    .is_ok());
}

#[test]
fn the_alarm_settings_are_read_and_their_errors_named_under_alerts() {
    let c =
        Config::from_toml("[alerts]\nmax_shelve = \"2h\"\noperator_positions = 4\n", []).unwrap();
    assert_eq!((c.alerts.max_shelve, c.alerts.operator_positions), (Duration::from_secs(7_200), 4));
    let d = Config::default();
    assert_eq!(
        (d.alerts.max_shelve, d.alerts.operator_positions),
        (Duration::from_secs(8 * 3_600), 1)
    );
    let e = Config::from_toml(
        "[alerts]\nmax_shelve = \"10s\"\noperator_positions = 101\n[[alerts.rules]]\nid = \"a\"\nseverity = \"info\"\nsuppressed_by = [\"a\"]\nthreshold = { metric = \"speed_kmh\", below = 1.0 }\n",
        [],
    )
    .unwrap_err();
    let ConfigError::Invalid { problems: list, .. } = e else { panic!("{e}") };
    for key in
        ["alerts.max_shelve:", "alerts.operator_positions:", "alerts.rules[0].suppressed_by[0]:"]
    {
        assert!(list.iter().any(|m| m.starts_with(key)), "{key} in {list:?}");
    }
}

#[test]
fn alert_rules_are_read_and_their_errors_named_under_alerts() {
    let c = Config::from_toml(
        "[alerts]\nair_quality_defaults = false\n[[alerts.rules]]\nid = \"congestion\"\nseverity = \"critical\"\nlos = { at_or_worse = \"E\", for = \"0s\" }\n",
        [],
    )
    .unwrap();
    let rules = c.alerts.validate().unwrap();
    assert_eq!(rules.rules.len(), 1);
    assert_eq!(rules.rules[0].id.as_str(), "congestion");
    let e = Config::from_toml("[[alerts.rules]]\nid = \"BAD ID\"\nseverity = \"info\"\nthreshold = { metric = \"nope\", above = 1.0 }\n", []).unwrap_err();
    let ConfigError::Invalid { problems: list, .. } = e else { panic!("{e}") };
    assert!(list.iter().any(|m| m.starts_with("alerts.rules[0].id:")), "{list:?}");
    assert!(list.iter().any(|m| m.starts_with("alerts.rules[0].threshold.metric:")), "{list:?}");
    let e = Config::from_toml("[[alerts.rules]]\nid = \"x\"\nseverity = \"info\"\nthreshold = { metric = \"speed_kmh\", abov = 1.0 }\n", []).unwrap_err().to_string();
    assert!(e.contains("alerts.rules") && e.contains("abov"), "{e}");
    let c = Config::from_toml("", env(&[("SCCR_ALERTS__AIR_QUALITY_DEFAULTS", "false")])).unwrap();
    assert!(!c.alerts.air_quality_defaults);
}

#[test]
fn health_rule_errors_name_their_key_under_alerts() {
    let e = Config::from_toml(
        "[[alerts.rules]]\nid = \"h\"\nseverity = \"info\"\nhealth = { check = \"missing\", max_missing = 2.0, readings = 3 }\n",
        [],
    )
    .unwrap_err();
    let ConfigError::Invalid { problems: list, .. } = e else { panic!("{e}") };
    assert!(list.iter().any(|m| m.starts_with("alerts.rules[0].health.readings:")), "{list:?}");
    assert!(list.iter().any(|m| m.starts_with("alerts.rules[0].health.max_missing:")), "{list:?}");
    let e = Config::from_toml(
        "[[alerts.rules]]\nid = \"h\"\nseverity = \"info\"\nhealth = { check = \"stuk\" }\n",
        [],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("alerts.rules") && e.contains("stuck"), "{e}");
}

#[test]
fn webhooks_section_is_read_and_its_errors_named() {
    let c = Config::from_toml(
        "[webhooks]\npayload = \"ngsi-ld\"\nmax_attempts = 3\nbackoff_base = \"50ms\"\n",
        [],
    )
    .unwrap();
    assert_eq!(c.webhooks.payload, store::WebhookFormat::NgsiLd);
    assert_eq!(c.webhooks.max_attempts, 3);
    assert_eq!(c.webhooks.backoff_base, Duration::from_millis(50));
    let e = Config::from_toml("[webhooks]\nmax_attempts = 0\nbackoff_base = \"1m\"\nbackoff_cap = \"1s\"\nsource = \"\"\n", []).unwrap_err();
    let ConfigError::Invalid { problems: list, .. } = e else { panic!("{e}") };
    for key in ["webhooks.max_attempts", "webhooks.backoff_cap", "webhooks.source"] {
        assert!(list.iter().any(|m| m.starts_with(key)), "{key}: {list:?}");
    }
    let e = Config::from_toml("[webhooks]\npayload = \"xml\"\n", []).unwrap_err().to_string();
    assert!(e.contains("webhooks.payload"), "{e}");
}

#[test]
fn webhook_destinations_and_tls_files_are_checked_and_named() {
    let c = Config::from_toml(
        "[webhooks]\nallowed_destinations = [\"hooks.example\", \"10.0.0.0/8\"]\n",
        env(&[("SCCR_WEBHOOKS__ALLOWED_DESTINATIONS", "[\"127.0.0.1\", \"*.city.example\"]")]),
    )
    .unwrap();
    assert_eq!(c.webhooks.allowed_destinations, ["127.0.0.1", "*.city.example"]);
    let e = Config::from_toml(
        "[webhooks]\nallowed_destinations = [\"ok.example\", \"http://x/\", \"10.0.0.1/8\"]\nca_file = \"/nonexistent/ca.pem\"\nclient_cert = \"/nonexistent/c.pem\"\n",
        [],
    )
    .unwrap_err();
    let ConfigError::Invalid { problems: list, .. } = e else { panic!("{e}") };
    assert_eq!(list.len(), 4, "{list:?}");
    assert!(list[0].starts_with("webhooks.allowed_destinations[1]: \"http://x/\""), "{list:?}");
    assert_eq!(
        list[1],
        "webhooks.allowed_destinations[2]: \"10.0.0.1/8\" has host bits set; the network is 10.0.0.0/8"
    );
    assert!(list[2].starts_with("webhooks.ca_file: cannot read /nonexistent/ca.pem"), "{list:?}");
    assert_eq!(list[3], "webhooks.client_key: is required with webhooks.client_cert");
    let e =
        Config::from_toml("[webhooks]\nclient_cert = \"/nonexistent/c.pem\"\n", []).unwrap_err();
    let ConfigError::Invalid { problems: list, .. } = e else { panic!("{e}") };
    assert_eq!(list, ["webhooks.client_key: is required with webhooks.client_cert"]);
}

#[test]
fn wall_section_is_read_and_its_errors_named() {
    use dashboard_api::basemap::Basemap;
    let c = Config::from_toml("", []).unwrap();
    assert_eq!(c.wall.settings().unwrap().basemap, Basemap::Context);
    assert_eq!(c.wall.settings().unwrap().max_zoom, 19);
    let url = "https://tiles.comune.example/osm/{z}/{x}/{y}.png";
    let c = Config::from_toml(
        &format!(
            "[wall]\nbasemap = \"{url}\"\nbasemap_attribution = \"© OSM\"\nbasemap_max_zoom = 17\n"
        ),
        [],
    )
    .unwrap();
    let settings = c.wall.settings().unwrap();
    assert_eq!(settings.basemap, Basemap::Xyz(url.into()));
    assert_eq!((settings.attribution.as_str(), settings.max_zoom), ("© OSM", 17));
    let long = "x".repeat(301);
    for (toml, key) in [
        ("basemap = \"https://tiles.example/{z}/{x}.png\"", "wall.basemap"),
        ("basemap = \"https://{s}.tiles.example/{z}/{x}/{y}.png\"", "wall.basemap"),
        ("basemap = \"/nonexistent/florence.pmtiles\"", "wall.basemap"),
        ("basemap = \"tiles.png\"", "wall.basemap"),
        ("basemap_max_zoom = 0", "wall.basemap_max_zoom"),
        ("basemap_max_zoom = 23", "wall.basemap_max_zoom"),
        (&format!("basemap_attribution = \"{long}\""), "wall.basemap_attribution"),
    ] {
        let e = Config::from_toml(&format!("[wall]\n{toml}\n"), []).unwrap_err();
        let ConfigError::Invalid { problems: list, .. } = &e else { panic!("{toml}: {e}") };
        assert!(list.iter().any(|m| m.starts_with(key)), "{toml}: {list:?}");
    }
    // A readable PMTiles file is taken, also from the environment.
    let dir = std::env::temp_dir().join(format!("sccr-wall-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("florence.pmtiles");
    std::fs::write(&file, b"PMTiles").unwrap();
    let c = Config::from_toml("", env(&[("SCCR_WALL__BASEMAP", file.to_str().unwrap())])).unwrap();
    assert_eq!(c.wall.settings().unwrap().basemap, Basemap::Pmtiles(file.clone()));
    std::fs::remove_dir_all(&dir).unwrap();
    let e = Config::from_toml("[wall]\nbasemap_max_zoom = 300\n", []).unwrap_err().to_string();
    assert!(e.contains("wall.basemap_max_zoom"), "{e}");
}

#[test]
fn every_invalid_value_is_reported_at_once() {
    let e = Config::from_toml(
        "[mqtt]\nport = 0\ngroup = \"a/b\"\n[database]\nurl = \"mysql://x\"\n[api]\nlisten = \"everywhere\"\n",
        [],
    )
    .unwrap_err();
    let ConfigError::Invalid { problems: list, .. } = e else { panic!("{e}") };
    assert_eq!(list.len(), 4, "{list:?}");
    assert!(list.iter().any(|m| m.starts_with("mqtt.port")));
    assert!(list.iter().any(|m| m.starts_with("mqtt.group")));
    assert!(list.iter().any(|m| m.starts_with("database.url")));
    assert!(list.iter().any(|m| m.starts_with("api.listen")));
}

/// The problems of a configuration that must be refused.
fn problems(text: &str, vars: &[(&str, &str)]) -> Vec<String> {
    match Config::from_toml(text, env(vars)) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("{text:?} with {vars:?} should be refused: {other:?}"),
    }
}

#[test]
fn mqtt_protocol_is_5_or_3_1_1() {
    for (text, want) in [
        ("", ingest::Protocol::V5),
        ("[mqtt]\nprotocol = \"5\"\n", ingest::Protocol::V5),
        ("[mqtt]\nprotocol = 5\n", ingest::Protocol::V5),
        ("[mqtt]\nprotocol = \"3.1.1\"\n", ingest::Protocol::V311),
    ] {
        assert_eq!(Config::from_toml(text, []).unwrap().mqtt.protocol, want, "{text:?}");
    }
    let c = Config::from_toml("", env(&[("SCCR_MQTT__PROTOCOL", "3.1.1")])).unwrap();
    assert_eq!(c.mqtt.protocol, ingest::Protocol::V311);
    assert_eq!(
        problems("[mqtt]\nprotocol = \"4\"\n", &[]),
        ["mqtt.protocol: must be \"5\" or \"3.1.1\", got \"4\""]
    );
    let c =
        Config::from_toml("[mqtt]\nfailover = [\"nats-2:1883\", \"nats-3:1883\"]\n", []).unwrap();
    assert_eq!(
        c.mqtt.failover_brokers(),
        [("nats-2".to_owned(), 1883), ("nats-3".to_owned(), 1883)]
    );
    assert_eq!(
        problems("[mqtt]\nfailover = [\"nats-2:1883\", \"nats-3\"]\n", &[]),
        ["mqtt.failover[1]: must be host:port, got \"nats-3\""]
    );
    assert_eq!(
        problems("[mqtt]\nprotocol = 3\n", &[]),
        ["mqtt.protocol: must be \"5\" or \"3.1.1\", got 3"]
    );
}

#[test]
fn one_run_names_every_problem_in_plain_words() {
    let text = "[mqtt]\nhots = \"broker\"\nport = \"abc\"\nsubscription = \"all\"\n\
                [database]\nurl = \"mysql://db\"\nmax_connections = 1.5\n\
                [stream]\nwindow = 30\n[webhooks]\nenabled = \"yes\"\n[mqt]\n\
                [api]\nlisten = \"8080\"\nmax_connections = = 3\n";
    let list = problems(text, &[]);
    assert_eq!(
        list,
        [
            "line 15, column 19: \"=\" is not expected here",
            // The sections in the order of their names, then the checks of values.
            "database.max_connections: must be a whole number, at least 1, got 1.5",
            "mqt: is not a section (did you mean [mqtt]?); the sections are mqtt, \
             provisioning, database, retention, api, ingest, writer, stream, baselines, forecasts, segments, cadastre, webhooks, wall, alerts",
            "mqtt.hots: is not a key of [mqtt] (did you mean host?); its keys are protocol, \
             host, port, failover, client_id, subscription, group, username, password, keep_alive, session_expiry, \
             receive_maximum",
            "mqtt.port: must be a whole number from 1 to 65535, got \"abc\"",
            "mqtt.subscription: must be \"exclusive\" or \"shared\", got \"all\"",
            "stream.window: must be a duration like \"30s\", \"5m\" or \"2h\", got 30",
            "webhooks.enabled: must be true or false, got \"yes\"",
            "database.url: must start with postgres://, postgresql:// or sqlite: (e.g. \
             postgres://sccr@db.example:5432/sccr or sqlite:/var/lib/sccr/sccr.db)",
            "api.listen: must be an address and port such as 127.0.0.1:8080, 0.0.0.0:8080 \
             (every IPv4 interface), [::]:8080 or localhost:8080, got \"8080\"",
        ]
    );
    let shown = ConfigError::Invalid { origin: "sccr.toml".into(), problems: list }.to_string();
    assert!(shown.starts_with("  - line 15, column 19: "), "{shown}");
    assert!(shown.ends_with("\n10 problems in sccr.toml"), "{shown}");
    assert!(!shown.contains('`') && !shown.contains("u16") && !shown.contains(", expected"));
}

#[test]
fn every_syntax_error_is_found_with_its_line_and_column() {
    let text = "[mqtt\nport = 1884\n[database]\nurl = \"sqlite:x.db\"\nurl = \"sqlite:y.db\"\n\
                [api]\nlisten = 127.0.0.1:8080\nheader_timeout =\n[writer]\nqueue_messages 10\n";
    assert_eq!(
        problems(text, &[]),
        [
            "line 1, column 6: the [section] header has no closing ]",
            "line 5, column 1: this key is already set above (a key may be set once per section)",
            "line 7, column 15: text must be in quotes: listen = \"127.0.0.1:8080\"",
            "line 8, column 17: the value after = is missing",
            "line 10, column 16: a key needs = and a value, e.g. port = 1883",
        ]
    );
    // Keys under a broken header are not taken for the previous section's; a
    // string left open ends the reading of the file.
    assert_eq!(problems("[mqtt]\nport = 1\n[[alerts.rules]\nid = \"x\"\n", &[]).len(), 1);
    let open = problems("[mqtt]\nhost = \"broker\nport = 1\nport = 2\n", &[]);
    assert_eq!(open[0], "line 2, column 15: the text has no closing quote");
}

#[test]
fn a_refused_value_is_reported_once_and_later_elements_keep_their_place() {
    let text = "[[alerts.rules]]\nseverity = \"info\"\nthreshold = { metric = \"speed_kmh\", above = 1.0 }\n\
                [[alerts.rules]]\nid = \"b\"\nseverity = \"urgent\"\nthreshold = { metric = \"speed_kmh\", above = 1.0 }\n\
                [[alerts.rules]]\nid = \"c\"\nseverity = \"info\"\nthreshold = { metric = \"nope\", above = 1.0 }\n\
                [webhooks]\nallowed_destinations = [5, \"http://x/\"]\n";
    let list = problems(text, &[]);
    assert_eq!(list[0], "alerts.rules[0].id: is required");
    assert_eq!(
        list[1],
        "alerts.rules[1].severity: must be one of \"info\", \"warning\" or \"critical\", got \"urgent\""
    );
    assert_eq!(list[2], "webhooks.allowed_destinations[0]: must be text in quotes, got 5");
    assert!(list[3].starts_with("webhooks.allowed_destinations[1]: \"http://x/\""), "{list:?}");
    assert!(list[4].starts_with("alerts.rules[2].threshold.metric:"), "{list:?}");
    assert_eq!(list.len(), 5, "{list:?}");
}

#[test]
fn every_key_is_settable_from_the_environment_at_any_depth() {
    let c = Config::from_toml(
        "[webhooks]\nallowed_destinations = [\"hooks.example\"]\n",
        env(&[
            ("SCCR_ALERTS__STORM__RAISES_PER_MINUTE", "25"),
            ("SCCR_WEBHOOKS__ALLOWED_DESTINATIONS", "[\"10.0.0.0/8\"]"),
            ("SCCR_MQTT__USERNAME", "sccr-ingest"),
            // Digits where text is wanted stay text.
            ("SCCR_MQTT__PASSWORD", "123456"),
            ("SCCR_ALERTS__RULES", "[{ id = \"slow\", severity = \"info\", threshold = { metric = \"speed_kmh\", below = 5.0 } }]"),
            // sccr's own variables and the test suite's are not overrides.
            ("SCCR_CONFIG", "sccr.toml"),
            ("SCCR_WEB_DIR", "web"),
            ("SCCR_TEST_PG_URL", "postgres://x"),
        ]),
    )
    .unwrap();
    assert_eq!(c.alerts.storm.raises_per_minute, 25);
    assert_eq!(c.webhooks.allowed_destinations, ["10.0.0.0/8"]);
    assert_eq!(c.mqtt.password.as_deref(), Some("123456"));
    assert_eq!(c.alerts.rules.len(), 1);
}

#[test]
fn environment_variables_are_named_in_their_problems() {
    let list = problems(
        "[mqtt]\nport = 1883\n",
        &[
            ("SCCR_DATABASE_URL", "postgres://db/sccr"),
            ("SCCR_DB_PASSWORD", "secret"),
            ("SCCR_MQTT__PORT", "abc"),
            ("SCCR_MQTT__HOTS", "broker"),
            ("SCCR_MQTT__PORT__TLS", "1"),
            ("SCCR_STREAM__WINDOW", "0s"),
            ("SCCR___X", "1"),
        ],
    );
    assert_eq!(list.len(), 7, "{list:?}");
    assert!(list[0]
        .starts_with("SCCR_DATABASE_URL: is not a setting; did you mean SCCR_DATABASE__URL?"));
    assert!(list[1].starts_with("SCCR_DB_PASSWORD: is not a setting: configuration overrides are named SCCR_<SECTION>__<KEY>"));
    assert!(list[2].starts_with("SCCR_MQTT__PORT__TLS: mqtt.port is a single value"), "{list:?}");
    assert!(list[3].starts_with("SCCR___X: names no key"), "{list:?}");
    assert!(
        list[4].starts_with(
            "mqtt.hots (SCCR_MQTT__HOTS): is not a key of [mqtt] (did you mean SCCR_MQTT__HOST?)"
        ),
        "{list:?}"
    );
    assert_eq!(
        list[5],
        "mqtt.port (SCCR_MQTT__PORT): must be a whole number from 1 to 65535, got \"abc\""
    );
    assert_eq!(list[6], "stream.window (SCCR_STREAM__WINDOW): must be at least 1s");
    // No value ever appears in a problem.
    assert!(!list.iter().any(|p| p.contains("secret") || p.contains("postgres://db")), "{list:?}");
}

#[test]
fn a_misspelt_key_is_named_whatever_its_name() {
    let list = problems("[mqtt]\nexpected_host = \"broker\"\n", &[]);
    assert!(
        list[0].starts_with(
            "mqtt.expected_host: is not a key of [mqtt] (did you mean host?); its keys are protocol, host, port,"
        ),
        "{list:?}"
    );
}

#[test]
fn files_named_by_the_configuration_must_be_readable() {
    let list = problems("[segments]\nseed = \"/nonexistent/city.geojson\"\n", &[]);
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(
        list[0].starts_with("segments.seed: cannot read /nonexistent/city.geojson: "),
        "{list:?}"
    );
    let dir = std::env::temp_dir();
    let list = problems(&format!("[segments]\nseed = {:?}\n", dir.display().to_string()), &[]);
    assert!(list[0].ends_with("it is not a file"), "{list:?}");
    let file = dir.join(format!("sccr-seed-{}.geojson", std::process::id()));
    std::fs::write(&file, "{}").unwrap();
    let c =
        Config::from_toml(&format!("[segments]\nseed = {:?}\n", file.display().to_string()), [])
            .unwrap();
    assert_eq!(c.segments.seed.as_deref(), Some(file.as_path()));
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn api_listen_takes_addresses_and_host_names() {
    for listen in ["0.0.0.0:8080", "[::]:8080", "127.0.0.1:0", "localhost:8080"] {
        let c = Config::from_toml(&format!("[api]\nlisten = {listen:?}\n"), []).unwrap();
        let addrs = c.api.listen_addrs().unwrap();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.port() == listen.rsplit(':').next().unwrap().parse::<u16>().unwrap()), "{listen}: {addrs:?}");
    }
    let local = ApiSection { listen: "localhost:8080".into(), ..ApiSection::default() };
    assert!(local.listen_addrs().unwrap().iter().all(|a| a.ip().is_loopback()));
    for listen in ["8080", "localhost", "localhost:http", ":8080", "127.0.0.1:70000"] {
        let list = problems(&format!("[api]\nlisten = {listen:?}\n"), &[]);
        assert!(
            list[0].starts_with("api.listen: must be an address and port such as 127.0.0.1:8080"),
            "{listen}: {list:?}"
        );
    }
}

/// Every range of `WHOLE_RANGES` is checked: one below the least value is refused.
#[test]
fn whole_number_ranges_are_checked_with_their_words() {
    let ranges = [
        ("SCCR_MQTT__PORT", "mqtt.port: must be a whole number from 1 to 65535, got 0"),
        ("SCCR_MQTT__RECEIVE_MAXIMUM", "mqtt.receive_maximum (SCCR_MQTT__RECEIVE_MAXIMUM): must be a whole number from 1 to 65535, got 0"),
        ("SCCR_DATABASE__MAX_CONNECTIONS", "database.max_connections (SCCR_DATABASE__MAX_CONNECTIONS): must be a whole number, at least 1, got 0"),
        ("SCCR_API__MAX_CONNECTIONS", "api.max_connections (SCCR_API__MAX_CONNECTIONS): must be a whole number, at least 1, got 0"),
        ("SCCR_INGEST__MAX_PENDING_READINGS", "ingest.max_pending_readings (SCCR_INGEST__MAX_PENDING_READINGS): must be a whole number, at least 1, got 0"),
        ("SCCR_INGEST__PARTITIONS", "ingest.partitions (SCCR_INGEST__PARTITIONS): must be a whole number from 1 to 1024, got 0"),
        ("SCCR_WRITER__MAX_BATCH_READINGS", "writer.max_batch_readings (SCCR_WRITER__MAX_BATCH_READINGS): must be a whole number, at least 1, got 0"),
        ("SCCR_WRITER__QUEUE_MESSAGES", "writer.queue_messages (SCCR_WRITER__QUEUE_MESSAGES): must be a whole number, at least 1, got 0"),
        ("SCCR_WEBHOOKS__MAX_ATTEMPTS", "webhooks.max_attempts (SCCR_WEBHOOKS__MAX_ATTEMPTS): must be a whole number, at least 1, got 0"),
        ("SCCR_WEBHOOKS__CONCURRENCY", "webhooks.concurrency (SCCR_WEBHOOKS__CONCURRENCY): must be a whole number, at least 1, got 0"),
        ("SCCR_WALL__BASEMAP_MAX_ZOOM", "wall.basemap_max_zoom (SCCR_WALL__BASEMAP_MAX_ZOOM): must be a whole number from 1 to 22, got 0"),
        ("SCCR_ALERTS__OPERATOR_POSITIONS", "alerts.operator_positions (SCCR_ALERTS__OPERATOR_POSITIONS): must be a whole number from 1 to 100"),
        ("SCCR_ALERTS__STORM__RAISES_PER_MINUTE", "alerts.storm.raises_per_minute (SCCR_ALERTS__STORM__RAISES_PER_MINUTE): must be at least 1"),
    ];
    let port = problems("[mqtt]\nport = 0\n", &[]);
    assert_eq!(port, [ranges[0].1]);
    for (var, expected) in &ranges[1..] {
        assert_eq!(problems("", &[(var, "0")]), [*expected], "{var}");
    }
    assert_eq!(
        problems("", &[("SCCR_INGEST__MAX_PAYLOAD_BYTES", "63")]),
        ["ingest.max_payload_bytes (SCCR_INGEST__MAX_PAYLOAD_BYTES): must be a whole number, at least 64, got 63"]
    );
    assert_eq!(ranges.len() + 1, validate::WHOLE_RANGES.len(), "a range without its test");
}

/// The configuration parser on arbitrary text and environment overrides: a configuration
/// or an error naming the key, never a panic (`fuzz/` explores it for longer).
mod never_panics {
    use proptest::prelude::*;

    use super::*;

    fn tomlish() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("\n".to_owned()),
            Just("[mqtt]\n".to_owned()),
            Just("[database]\n".to_owned()),
            Just("[retention]\n".to_owned()),
            Just("[api]\n".to_owned()),
            Just("[ingest]\n".to_owned()),
            Just("[writer]\n".to_owned()),
            Just("[stream]\n".to_owned()),
            Just("[alerts]\n".to_owned()),
            Just("[[alerts.rules]]\n".to_owned()),
            Just("port = ".to_owned()),
            Just("listen = ".to_owned()),
            Just("raw = ".to_owned()),
            Just("keep_alive = ".to_owned()),
            Just("max_batch_age = ".to_owned()),
            Just("window = ".to_owned()),
            Just("threshold = ".to_owned()),
            Just("\"forever\"".to_owned()),
            Just("\"0s\"".to_owned()),
            Just("\"1000000000000d\"".to_owned()),
            Just("{ metric = \"speed_kmh\", above = 1e308 }".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
        ];
        prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn config_parser_never_panics(text in prop_oneof![tomlish(), "\\PC{0,200}"], var in "SCCR_[A-Z_]{0,16}", value in "\\PC{0,16}") {
            let _ = Config::from_toml(&text, []);
            let _ = Config::from_toml(&text, [(var, value)]);
        }
    }
}

mod provisioning_tests {
    use super::super::*;

    #[test]
    fn dynsec_needs_its_account_and_each_error_names_its_key() {
        let env = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        let c = Config::from_toml(
            "[provisioning]\nmode = \"dynsec\"\nusername = \"sccr-prov\"\n",
            env("SCCR_PROVISIONING__PASSWORD", "s3cret"),
        )
        .unwrap();
        let d = c.provisioning.dynsec(&c.mqtt).unwrap();
        assert_eq!(
            (d.username.as_str(), d.password.as_str(), d.port),
            ("sccr-prov", "s3cret", 1883)
        );
        assert_eq!(d.client_id, "sccr-ingest-1-provisioning");
        assert!(
            Config::default().provisioning.dynsec(&c.mqtt).is_none(),
            "password_file by default"
        );
        let e = Config::from_toml(
            "[provisioning]\nmode = \"dynsec\"\ntimeout = \"1ms\"\nreconcile_interval = \"10ms\"\n",
            [],
        )
        .unwrap_err()
        .to_string();
        for key in [
            "provisioning.username, provisioning.password",
            "provisioning.timeout",
            "provisioning.reconcile_interval",
        ] {
            assert!(e.contains(key), "{key} in {e}");
        }
        let e = Config::from_toml("[provisioning]\nmode = \"acl\"\n", []).unwrap_err().to_string();
        assert!(
            e.contains("provisioning.mode")
                && e.contains("dynsec")
                && e.contains("password_file")
                && e.contains("none"),
            "{e}"
        );
    }
}

#[test]
fn baselines_section_is_read_and_its_errors_named() {
    let c = Config::from_toml(
        "[baselines]\nweeks = 6\nmin_samples = 3\nholidays = [\"2026-12-25\"]\nrefresh_interval = \"5m\"\n",
        [],
    )
    .unwrap();
    let s = c.baselines.learn_settings();
    assert_eq!((s.weeks, s.min_samples), (6, 3));
    assert_eq!(s.clock.zone_name(), Some("Europe/Rome"), "the default local time");
    let c = Config::from_toml("[baselines]\nutc_offset_minutes = 0\n", []).unwrap();
    assert_eq!(c.baselines.clock(), telemetry::baseline::SlotClock::new(0).unwrap());
    let c = Config::from_toml("[baselines]\ntimezone = \"Europe/London\"\n", []).unwrap();
    assert_eq!(c.baselines.clock().zone_name(), Some("Europe/London"));
    let list = problems("[baselines]\ntimezone = \"Europe/Florence\"\n", &[]);
    assert!(
        list.iter().any(|m| m.starts_with("baselines.timezone") && m.contains("Europe/Florence")),
        "{list:?}"
    );
    let list = problems("[baselines]\ntimezone = \"Europe/Rome\"\nutc_offset_minutes = 60\n", &[]);
    assert!(list.iter().any(|m| m.starts_with("baselines.utc_offset_minutes")), "{list:?}");
    assert_eq!(s.holidays, vec![telemetry::baseline::parse_day("2026-12-25").unwrap()]);
    let list = problems(
        "[baselines]\nweeks = 0\nmin_samples = 9\nspread_floor_pct = 120.0\nutc_offset_minutes = 7\nholidays = [\"25/12/2026\"]\nrefresh_interval = \"1s\"\n",
        &[],
    );
    for key in [
        "baselines.weeks",
        "baselines.min_samples",
        "baselines.spread_floor_pct",
        "baselines.utc_offset_minutes",
        "baselines.holidays[0]",
        "baselines.refresh_interval",
    ] {
        assert!(list.iter().any(|m| m.starts_with(key)), "{key}: {list:?}");
    }
}

#[test]
fn forecasts_section_is_read_and_its_errors_named() {
    let c = Config::from_toml(
        "[forecasts]\nhorizons_minutes = [10, 20, 60]\nsmoothing = 0.3\npersistence = 0.9\n",
        [],
    )
    .unwrap();
    let s = &c.forecasts;
    assert_eq!(s.horizons_minutes, vec![10, 20, 60]);
    assert_eq!((s.smoothing, s.persistence, s.enabled), (0.3, 0.9, true));
    let list = problems(
        "[forecasts]\nhorizons_minutes = [30, 15, 0]\nsmoothing = 0.0\npersistence = 1.5\n",
        &[],
    );
    for key in ["forecasts.horizons_minutes", "forecasts.smoothing", "forecasts.persistence"] {
        assert!(list.iter().any(|m| m.starts_with(key)), "{key}: {list:?}");
    }
}

#[test]
fn a_key_taking_names_given_another_type_lists_the_names() {
    let text = "[mqtt]\nsubscription = 3\n[ingest]\nunknown_devices = true\n\
                [provisioning]\nmode = [\"dynsec\"]\n";
    assert_eq!(
        problems(text, &[]),
        [
            "ingest.unknown_devices: must be \"auto_register\" or \"reject\", got true",
            "mqtt.subscription: must be \"exclusive\" or \"shared\", got 3",
            "provisioning.mode: must be one of \"dynsec\", \"password_file\" or \"none\", got \
             [\"dynsec\"]",
        ]
    );
}

#[test]
fn replication_keys_are_read_and_checked_by_name() {
    let text = "[database]\nurl = \"postgres://sccr@db-1:5432/sccr\"\n\
                failover_urls = [\"postgres://sccr@db-2:5432/sccr\"]\n\
                read_url = \"postgres://sccr@db-2:5432/sccr\"\nmax_read_lag = \"2s\"\n\
                failover_probe_interval = \"250ms\"\n";
    let c = Config::from_toml(text, []).unwrap();
    assert_eq!(c.database.failover_urls, ["postgres://sccr@db-2:5432/sccr"]);
    assert_eq!(c.database.read_url.as_deref(), Some("postgres://sccr@db-2:5432/sccr"));
    assert_eq!(c.database.max_read_lag, Duration::from_secs(2));
    assert_eq!(c.database.failover_probe_interval, Duration::from_millis(250));
    // From the environment, as the tests and containers set them.
    let c = Config::from_toml(
        "",
        env(&[
            ("SCCR_DATABASE__FAILOVER_URLS", "[\"postgres://b:5432/s\", \"postgres://c:5432/s\"]"),
            ("SCCR_DATABASE__READ_URL", "postgres://b:5432/s"),
        ]),
    )
    .unwrap();
    assert_eq!(c.database.failover_urls.len(), 2);
    assert_eq!(c.database.read_url.as_deref(), Some("postgres://b:5432/s"));
    assert_eq!(c.database.max_read_lag, Duration::from_secs(5), "the default bound");

    assert_eq!(
        problems(
            "[database]\nurl = \"postgres://a/s\"\nfailover_urls = [\"mysql://b/s\", \"postgres://a/s\"]\n\
             read_url = \"sqlite:r.db\"\nmax_read_lag = \"0s\"\nfailover_probe_interval = \"10ms\"\n",
            &[]
        ),
        [
            "database.failover_urls[0]: must start with postgres:// or postgresql://, got \"mysql://b/s\"",
            "database.failover_urls[1]: repeats database.url or another failover URL",
            "database.failover_probe_interval: must be at least 100ms",
            "database.read_url: must start with postgres:// or postgresql:// (a hot standby), got \"sqlite:r.db\"",
            "database.max_read_lag: must be positive",
        ]
    );
    // Replication is PostgreSQL's; a password in a refused URL is not repeated.
    let list =
        problems("[database]\nurl = \"sqlite:x.db\"\nread_url = \"mysql://u:secret@h/s\"\n", &[]);
    assert!(list.iter().any(|m| m.starts_with("database.url: must be postgres://")), "{list:?}");
    assert!(list.iter().all(|m| !m.contains("secret")), "{list:?}");
    assert_eq!(
        problems("[database]\nread_url = 5\n", &[]),
        ["database.read_url: must be text in quotes, got 5"]
    );
}

/// Device affinity: `ingest.partitions` is read, and refused where it cannot work, naming
/// the key.
#[test]
fn partitions_need_postgresql_and_exclusive_sessions() {
    let pg = "[database]\nurl = \"postgres://sccr@db/sccr\"\n";
    let config = Config::from_toml(&format!("{pg}[ingest]\npartitions = 3\n"), env(&[])).unwrap();
    assert_eq!(config.ingest.partitions, 3);
    assert_eq!(
        problems("[database]\nurl = \"sqlite:/tmp/x.db\"\n[ingest]\npartitions = 2\n", &[]),
        ["ingest.partitions: must be 1 with SQLite (a single process; partitions are owned through PostgreSQL advisory locks)"]
    );
    assert_eq!(
        problems(&format!("{pg}[ingest]\npartitions = 2\n[mqtt]\nsubscription = \"shared\"\n"), &[]),
        ["ingest.partitions: needs mqtt.subscription = \"exclusive\" (each partition is a persistent session with plain subscriptions)"]
    );
    assert_eq!(
        problems(&format!("{pg}[ingest]\npartitions = 1025\n"), &[]),
        ["ingest.partitions: must be a whole number from 1 to 1024, got 1025"]
    );
    let sqlite = Config::from_toml("[database]\nurl = \"sqlite:/tmp/x.db\"\n", env(&[])).unwrap();
    assert_eq!(sqlite.ingest.partitions, 1, "the default, fine with SQLite");
}
