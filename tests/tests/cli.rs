//! The `sccr` command line as an operator meets it: `check-config` names every problem of
//! a file and its environment in one run, in plain words; every command that uses the
//! database or the broker refuses to run without a configuration file and says which one
//! (and which overrides) it uses; `SCCR_` variables that are not overrides are refused
//! with the right form; an error's cause is printed once; token changes made on the
//! command line are in the API's audit log; the broker's files are never written empty
//! of their base or readable by others.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use sccr_tests::{free_port, http_get, http_send, wait_for, workspace_bin, Broker, Sccr, TempDir};

/// `sccr ARGS` with only `vars` (and PATH) in its environment.
fn sccr(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(workspace_bin("sccr").unwrap())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn check_config_names_every_problem_of_a_file_and_its_environment_in_one_run() {
    let dir = TempDir::new("cli-check").unwrap();
    let file = write(
        &dir.path.join("sccr.toml"),
        "[mqtt]\nhots = \"broker\"\nport = \"abc\"\n[database]\nurl = \"mysql://db\"\n\
         [stream]\nwindow = \"soon\"\n[segments]\nseed = \"/nonexistent/city.geojson\"\n\
         [api]\nlisten = 8080 8081\n",
    );
    let o = sccr(
        &["check-config", "--config", &file],
        &[("SCCR_DB_PASSWORD", "hunter2"), ("SCCR_ALERTS__STORM__RAISES_PER_MINUTE", "many")],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    let expected_starts = [
        "  - line 11, column ",
        "  - SCCR_DB_PASSWORD: is not a setting: configuration overrides are named",
        "  - alerts.storm.raises_per_minute (SCCR_ALERTS__STORM__RAISES_PER_MINUTE): must be a \
         whole number, at least 1, got \"many\"",
        "  - mqtt.hots: is not a key of [mqtt] (did you mean host?)",
        "  - mqtt.port: must be a whole number from 1 to 65535, got \"abc\"",
        "  - stream.window: must be a duration like \"30s\", \"5m\" or \"2h\", got \"soon\"",
        "  - database.url: must start with postgres://, postgresql:// or sqlite:",
        "  - segments.seed: cannot read /nonexistent/city.geojson: ",
    ];
    assert_eq!(lines.len(), expected_starts.len() + 1, "{err}");
    for (line, start) in lines.iter().zip(expected_starts) {
        assert!(line.starts_with(start), "{line:?} should start with {start:?}\n{err}");
    }
    assert_eq!(lines[8], format!("8 problems in {file}"));
    assert!(!err.contains("hunter2"), "a variable's value is never shown: {err}");

    // Fixed, it passes, and says which file and which overrides (by name) it read.
    let good = write(
        &dir.path.join("good.toml"),
        "[mqtt]\nusername = \"sccr-ingest\"\n[api]\nlisten = \"localhost:8080\"\n",
    );
    let o = sccr(&["check-config", "--config", &good], &[("SCCR_MQTT__PASSWORD", "hunter2")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{good}: ok\n"));
    assert_eq!(
        stderr(&o),
        format!("sccr: configuration {good}, overridden by SCCR_MQTT__PASSWORD\n")
    );
}

#[test]
fn an_error_is_printed_with_each_cause_once() {
    let o = sccr(&["check-config", "--config", "/nonexistent/sccr.toml"], &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.starts_with("error: cannot read the configuration file /nonexistent/sccr.toml: "),
        "{err}"
    );
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn commands_that_use_the_database_or_the_broker_need_a_configuration_file() {
    // Each command, and the subcommand whose --help documents its --config.
    let commands: [(&[&str], &[&str]); 13] = [
        (&["serve"], &["serve"]),
        (&["serve", "--role", "api"], &["serve"]),
        (&["migrate"], &["migrate"]),
        (&["check-config"], &["check-config"]),
        (&["token", "create", "--role", "admin", "--name", "alice"], &["token", "create"]),
        (&["token", "list"], &["token", "list"]),
        (&["token", "revoke", "1"], &["token", "revoke"]),
        (
            &[
                "export",
                "--from",
                "2025-01-01T00:00:00Z",
                "--to",
                "2025-01-02T00:00:00Z",
                "--out",
                "x",
            ],
            &["export"],
        ),
        (&["import", "x.parquet"], &["import"]),
        (&["mqtt-passwd", "--out", "x"], &["mqtt-passwd"]),
        (&["mqtt-acl", "--out", "x"], &["mqtt-acl"]),
        (&["mqtt-dynsec", "--out", "x"], &["mqtt-dynsec"]),
        (&["segments", "import", "x.geojson"], &["segments", "import"]),
    ];
    for (args, command) in commands {
        let o = sccr(args, &[]);
        assert!(!o.status.success(), "sccr {args:?} ran without a configuration");
        assert_eq!(
            stderr(&o),
            "error: no configuration file: pass --config FILE or set SCCR_CONFIG=FILE (write one \
             with `sccr generate-config > sccr.toml`)\n",
            "sccr {args:?}"
        );
        let help = sccr(&[command, &["--help"]].concat(), &[]);
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(
            text.contains("--config <FILE>") && text.contains("[env: SCCR_CONFIG=]"),
            "sccr {command:?} --help:\n{text}"
        );
    }
    // The first help a newcomer reads says so too.
    let help = String::from_utf8_lossy(&sccr(&["--help"], &[]).stdout).into_owned();
    assert!(
        help.contains("--config FILE") && help.contains("SCCR_CONFIG=FILE"),
        "sccr --help:\n{help}"
    );
    // The generated file says how to use it.
    let generated = sccr(&["generate-config"], &[]);
    let text = String::from_utf8_lossy(&generated.stdout);
    assert!(text.contains("sccr serve --config sccr.toml") && text.contains("SCCR_CONFIG"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_changes_on_the_command_line_are_in_the_audit_log() {
    let dir = TempDir::new("cli-audit").unwrap();
    let file = write(&dir.path.join("sccr.toml"), "");
    let db = format!("sqlite:{}", dir.path.join("sccr.db").display());
    let vars = [("SCCR_CONFIG", file.as_str()), ("SCCR_DATABASE__URL", &db), ("USER", "maria")];

    let o = sccr(&["migrate"], &vars);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!("sccr: configuration {file}, overridden by SCCR_DATABASE__URL\n")
    );
    assert!(!stderr(&o).contains(&db), "a variable's value is never shown");

    // The broker's files: an ACL without its base is refused and nothing is written; the
    // password file is readable by its owner only.
    let acl = dir.path.join("sccr.acl");
    let o = sccr(&["mqtt-acl", "--out", acl.to_str().unwrap()], &vars);
    assert!(!o.status.success(), "mqtt-acl without --include exited 0");
    assert!(stderr(&o).contains("--include is required"), "{}", stderr(&o));
    assert!(!acl.exists(), "mqtt-acl without --include wrote {}", acl.display());
    let passwd = dir.path.join("sccr.passwd");
    let o = sccr(&["mqtt-passwd", "--out", passwd.to_str().unwrap()], &vars);
    assert!(o.status.success(), "{}", stderr(&o));
    let mode = std::os::unix::fs::PermissionsExt::mode(&passwd.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    let o = sccr(&["token", "create", "--role", "operator", "--name", "night shift"], &vars);
    assert!(o.status.success(), "{}", stderr(&o));
    let id: i64 = stderr(&o)
        .lines()
        .find_map(|l| l.strip_prefix("token ")?.split_whitespace().next()?.parse().ok())
        .expect("the token's id");
    let o = sccr(&["token", "revoke", &id.to_string()], &vars);
    assert!(o.status.success(), "{}", stderr(&o));

    // The API, listening on a host name, lists both changes with who made them.
    let broker = Broker::start().await.expect("mosquitto");
    let port = free_port();
    let listen = format!("localhost:{port}");
    let server = Sccr::serve(broker.port, &db, &dir.path, &[("SCCR_API__LISTEN", &listen)])
        .expect("sccr serve");
    let audit = wait_for("the audit log from the API", Duration::from_secs(60), || async {
        http_get(port, "/api/v1/audit?limit=10").await.ok().filter(|(s, _)| *s == 200)
    })
    .await
    .1;
    let audit: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let entries: Vec<(&str, &str, &str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default();
            (s("action"), s("actor"), s("role"), s("target"))
        })
        .filter(|(action, ..)| action.starts_with("token."))
        .collect();
    let target = format!("token/{id}");
    assert_eq!(
        entries,
        [
            ("token.revoke", "cli:maria", "admin", target.as_str()),
            ("token.create", "cli:maria", "admin", target.as_str()),
        ],
        "{audit}"
    );
    let create =
        audit["entries"].as_array().unwrap().iter().find(|e| e["action"] == "token.create");
    assert_eq!(
        create.unwrap()["detail"],
        serde_json::json!({"name": "night shift", "role": "operator"})
    );
    let log = server.log_text();
    assert!(
        log.contains("overridden by SCCR_API__BOOTSTRAP_ADMIN_TOKEN, SCCR_API__LISTEN"),
        "{log}"
    );
    assert!(!log.contains(sccr_tests::TEST_ADMIN_TOKEN), "the admin token is never shown: {log}");

    // A registration's answer says what to run for the broker (password files, the
    // default): run as written where the configuration is sccr.toml and the service
    // accounts are in services.passwd, it writes both into the broker's file.
    let (st, body) =
        http_send(port, "POST", "/api/v1/devices", r#"{"id":"loop-7"}"#).await.unwrap();
    assert_eq!(st, 201, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let next = answer["broker"]["next"].as_str().unwrap();
    let command = next.strip_prefix("run ").and_then(|c| c.split(", then").next()).unwrap();
    write(&dir.path.join("services.passwd"), "sccr-ingest:$7$101$c2FsdA==$aGFzaA==\n");
    let path = format!(
        "{}:{}",
        workspace_bin("sccr").unwrap().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("bash")
        .args(["-euc", &command.replace("PASSWORD_FILE", "broker.passwd")])
        .current_dir(&dir.path)
        .env_clear()
        .env("PATH", &path)
        .env("SCCR_DATABASE__URL", &db)
        .output()
        .unwrap();
    assert!(o.status.success(), "{command}: {}", stderr(&o));
    let written = std::fs::read_to_string(dir.path.join("broker.passwd")).unwrap();
    let users: Vec<&str> = written.lines().filter_map(|l| l.split(':').next()).collect();
    assert_eq!(users, ["sccr-ingest", "loop-7"], "{written}");
    // Without --include, that file (its service account no device) is not replaced.
    let out = dir.path.join("broker.passwd");
    let o = sccr(&["mqtt-passwd", "--out", out.to_str().unwrap()], &vars);
    assert!(!o.status.success(), "mqtt-passwd dropped the service accounts");
    assert!(stderr(&o).contains("(sccr-ingest): pass them with --include FILE"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), written, "the file was left as it was");
}
