//! Where the alert rules in force come from, through the real `sccr serve` process and
//! PostgreSQL: a rule of the config file naming a road segment that does not exist stops
//! the start like a configuration error, naming the rule's key and the closest segment;
//! rules changed through the admin API survive a restart, and an edit of the file wins
//! for the rules it changes (logged at WARN, audited, the API's versions kept
//! retrievable) while the other API changes stay.

use std::time::Duration;

use sccr_tests::{free_port, http_get, http_send, workspace_bin, Broker, Sccr, TempDir, TestDb};
use serde_json::{json, Value};

async fn get_json(port: u16, path: &str) -> Value {
    let (status, body) = http_get(port, path).await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// (id, origin) of every rule in force but the shipped defaults.
fn origins(listing: &Value) -> Vec<(String, String)> {
    listing["rules_in_force"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["origin"] != "default")
        .map(|r| {
            (r["rule"]["id"].as_str().unwrap().to_owned(), r["origin"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rule_naming_a_missing_segment_stops_the_start() {
    let db = TestDb::create().await.unwrap();
    let dir = TempDir::new("rules-missing-segment").unwrap();
    let config = dir.path.join("sccr.toml");
    // The store is seeded with the Florence segments before the rules are checked.
    std::fs::write(
        &config,
        "[alerts]\n[[alerts.rules]]\nid = \"ok\"\nseverity = \"info\"\nscope = { segments = [\"viale-strozzi\"] }\nlos = { at_or_worse = \"E\" }\n\
         [[alerts.rules]]\nid = \"typo\"\nseverity = \"info\"\nscope = { segments = [\"viale-strozi\"] }\nlos = { at_or_worse = \"E\" }\n",
    )
    .unwrap();
    let run = tokio::process::Command::new(workspace_bin("sccr").unwrap())
        .args(["serve", "--config"])
        .arg(&config)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SCCR_DATABASE__URL", &db.url)
        .env("SCCR_API__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("SCCR_MQTT__PORT", free_port().to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("sccr stops by itself")
        .expect("sccr runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "alerts.rules[1].scope.segments[0]: no segment \"viale-strozi\" (did you mean \"viale-strozzi\"?)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("rules[0]"), "the rule naming a known segment is fine: {stderr}");
}

const FILE_A: &str = r#"
[alerts]
air_quality_defaults = false

[[alerts.rules]]
id = "jam"
severity = "critical"
los = { at_or_worse = "F", for = "1m" }

[[alerts.rules]]
id = "slow"
severity = "info"
threshold = { metric = "speed_kmh", below = 5.0 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_the_file_wins_for_what_it_changes_and_other_api_changes_stay() {
    let broker = Broker::start().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let dir = TempDir::new("rules-precedence").unwrap();
    let mut a = Sccr::serve_with_config(broker.port, &db.url, &dir.path, FILE_A, &[]).unwrap();
    a.wait_healthy().await;
    let port = a.api_port;
    assert_eq!(
        origins(&get_json(port, "/api/v1/alert-rules").await),
        [("jam".into(), "file".into()), ("slow".into(), "file".into())]
    );
    // Through the API: slow turns critical, and a rule of the API's own.
    let (st, body) = http_send(
        port,
        "PUT",
        "/api/v1/alert-rules/slow",
        r#"{"severity":"critical","threshold":{"metric":"speed_kmh","below":5.0}}"#,
    )
    .await
    .unwrap();
    assert_eq!(st, 200, "{body}");
    let (st, body) = http_send(
        port,
        "POST",
        "/api/v1/alert-rules",
        r#"{"id":"crawl","severity":"warning","scope":{"segments":["viale-strozzi"]},"threshold":{"metric":"speed_kmh","on":"segment","below":10.0}}"#,
    )
    .await
    .unwrap();
    assert_eq!(st, 201, "{body}");

    // A restart with the same file: the API's changes are in force.
    assert!(a.terminate(Duration::from_secs(30)).unwrap(), "clean exit");
    a.restart().unwrap();
    a.wait_healthy().await;
    let listing = get_json(a.api_port, "/api/v1/alert-rules").await;
    assert_eq!(
        origins(&listing),
        [
            ("jam".into(), "file".into()),
            ("slow".into(), "api".into()),
            ("crawl".into(), "api".into())
        ]
    );
    assert_eq!(listing["replaced_by_file"], json!([]));
    assert!(a.terminate(Duration::from_secs(30)).unwrap(), "clean exit");

    // The file is edited: jam now at E, slow redefined by the file. The file wins for both;
    // the API's slow is replaced (logged, audited, kept); the API's crawl stays.
    let file_b = FILE_A
        .replace("at_or_worse = \"F\"", "at_or_worse = \"E\"")
        .replace("below = 5.0 }", "below = 8.0 }");
    let b = Sccr::serve_with_config(broker.port, &db.url, &dir.path, &file_b, &[]).unwrap();
    b.wait_healthy().await;
    let listing = get_json(b.api_port, "/api/v1/alert-rules").await;
    assert_eq!(
        origins(&listing),
        [
            ("jam".into(), "file".into()),
            ("slow".into(), "file".into()),
            ("crawl".into(), "api".into())
        ]
    );
    let in_force = listing["rules_in_force"].as_array().unwrap();
    assert_eq!(in_force[0]["rule"]["los"]["at_or_worse"], "E");
    assert_eq!(in_force[1]["rule"]["threshold"]["below"], 8.0);
    let replaced = listing["replaced_by_file"].as_array().unwrap();
    assert_eq!(replaced.len(), 1, "{listing}");
    assert_eq!(
        (replaced[0]["id"].as_str(), replaced[0]["api"]["severity"].as_str()),
        (Some("slow"), Some("critical"))
    );
    assert_eq!(replaced[0]["file"]["threshold"]["below"], 8.0);
    let log = b.log_text();
    let warn = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("the config file's [alerts] changed"))
        .unwrap_or_else(|| panic!("a WARN line about the edit:\n{log}"));
    assert!(
        warn.contains("replaced_api_rules=[\"slow\"]")
            && warn.contains("file_changed=[\"jam\", \"slow\"]"),
        "{warn}"
    );
    let audit = get_json(b.api_port, "/api/v1/audit").await;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "alert_rules.file_changed")
        .unwrap_or_else(|| panic!("an audit entry: {audit}"));
    assert_eq!(entry["actor"], "config-file");
    assert_eq!(entry["detail"]["replaced_api_rules"], json!(["slow"]));
}
