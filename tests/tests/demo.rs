//! `sccr demo` started twice on one data directory: the same admin token, exactly one
//! live `bootstrap-admin` token in the store, and history back-filled once.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use sccr_tests::{free_port, http_request, wait_for, workspace_bin, TempDir};

/// Start `sccr demo`, wait until it serves, stop it with SIGTERM; the token it uses.
async fn demo_start(dir: &std::path::Path) -> String {
    let (http, mqtt) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("demo.log")).unwrap();
    let mut child = tokio::process::Command::new(workspace_bin("sccr").unwrap())
        .args(["demo", "--devices", "2", "--backfill", "1d", "--port", &http.to_string()])
        .args(["--mqtt-port", &mqtt.to_string(), "--data-dir"])
        .arg(dir.join("data"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for("sccr demo /healthz", Duration::from_secs(60), || async move {
        let answer = http_request(http, "GET", "/healthz", None, "").await.ok();
        answer.filter(|(status, _)| *status == 200).map(|_| ())
    })
    .await;
    let token = std::fs::read_to_string(dir.join("data/admin-token")).unwrap().trim().to_owned();
    let (status, body) = http_request(http, "GET", "/api/v1/me", Some(&token), "").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let pid = child.id().unwrap().to_string();
    let sent = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(sent.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{}", std::fs::read_to_string(dir.join("demo.log")).unwrap());
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demo_starts_share_one_admin_token_and_leave_one_live_bootstrap_token() {
    let dir = TempDir::new("demo-token").unwrap();
    let first = demo_start(&dir.path).await;
    let second = demo_start(&dir.path).await;
    assert_eq!(first, second, "the kept token is used again");
    let url = format!("sqlite:{}", dir.path.join("data/sccr.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let tokens: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT name, revoked_at_ms FROM api_tokens ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(tokens, vec![("bootstrap-admin".to_owned(), None)]);
}

/// A running `sccr demo` whose stdout and stderr go to `log`.
struct Demo {
    child: tokio::process::Child,
    http: u16,
    log: std::path::PathBuf,
}

impl Demo {
    fn start(dir: &std::path::Path, log: &str, args: &[&str]) -> Self {
        Self::start_in(dir, "data", log, args)
    }

    /// Start with the data directory `dir/data`.
    fn start_in(dir: &std::path::Path, data: &str, log: &str, args: &[&str]) -> Self {
        let (http, mqtt) = (free_port(), free_port());
        let log = dir.join(log);
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(workspace_bin("sccr").unwrap())
            .args(["demo", "--port", &http.to_string(), "--mqtt-port", &mqtt.to_string()])
            .arg("--data-dir")
            .arg(dir.join(data))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { child, http, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for a line of the log starting with `prefix`; the line.
    async fn line(&self, prefix: &str, timeout: Duration) -> String {
        let log = self.log.clone();
        wait_for(prefix, timeout, || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let found = text.lines().find(|l| l.starts_with(prefix)).map(str::to_owned);
            async move { found }
        })
        .await
    }

    async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let sent =
            tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(sent.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(exit.success(), "{}", self.log_text());
    }
}

/// Points of a history answer.
fn points(body: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["points"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_backfills_history_once_without_alerts() {
    let dir = TempDir::new("demo-backfill").unwrap();
    let before =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    // One device per segment: 28 traffic loops (4 metrics) and 9 stations (6 metrics).
    let args = ["--devices", "37", "--backfill", "2h"];
    let demo = Demo::start(&dir.path, "first.log", &args);
    let done = demo.line("back-fill done:", Duration::from_secs(60)).await;
    // 2 h of 5-minute reports: 24 steps of 166 readings.
    assert!(done.contains(": 3984 readings"), "{done}\n{}", demo.log_text());
    assert!(done.contains("(3984 new, 0 already stored, 0 refused)"), "{done}");
    let incident = demo.line("Incident:", Duration::from_secs(5)).await;
    assert!(
        incident.starts_with("Incident: viale-lavagnini") && incident.contains("every 15 min"),
        "{incident}"
    );

    let token = std::fs::read_to_string(dir.path.join("data/admin-token")).unwrap();
    let token = token.trim();
    let from = before - 2 * 3_600_000;
    let get = |query: String| async move {
        let path = format!("/api/v1/history?{query}&from={from}&to={before}");
        let (status, body) = http_request(demo.http, "GET", &path, Some(token), "").await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        points(&body)
    };
    // One 5-minute step per point for a segment; quarter hours for the city.
    let segment = get("segment=viale-lavagnini&metric=speed_kmh&step=5m".into()).await;
    assert!((23..=24).contains(&segment.len()), "{segment:?}");
    assert!(segment.iter().all(|p| p["v"].as_f64().is_some_and(|v| v > 2.0 && v < 80.0)));
    let city = get("metric=no2_ugm3&step=15m".into()).await;
    assert!((8..=9).contains(&city.len()), "{city:?}");
    let counts = get("metric=vehicle_count&step=1h&agg=sum".into()).await;
    assert!(counts.iter().any(|p| p["v"].as_f64().is_some_and(|v| v > 0.0)), "{counts:?}");
    demo.stop().await;

    let url = format!("sqlite:{}", dir.path.join("data/sccr.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let history = |pool: sqlx::SqlitePool| async move {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM readings WHERE time_ms < ?1")
            .bind(before)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(history(pool.clone()).await, 3984);
    // No alert is about the back-filled past.
    let old_alerts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alerts WHERE since_ms < ?1")
        .bind(before)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(old_alerts, 0);

    // A second start finds nothing to add, and adds nothing.
    let demo = Demo::start(&dir.path, "second.log", &args);
    let line = demo.line("back-fill", Duration::from_secs(60)).await;
    assert!(line.starts_with("back-fill: nothing to add"), "{line}\n{}", demo.log_text());
    demo.stop().await;
    assert_eq!(history(pool).await, 3984);
}

/// The README's shell blocks, each with the line it starts on and whether it is run
/// against the demo (a block preceded by `<!-- README test: demo -->`) or says why not
/// (`<!-- README test: skip: <reason> -->`).
fn readme_blocks(readme: &str) -> Vec<(usize, String, Result<(), String>)> {
    let mut blocks = Vec::new();
    let mut mark: Option<String> = None;
    let mut lines = readme.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if let Some(m) = line.trim().strip_prefix("<!-- README test:") {
            mark = Some(m.trim_end_matches("-->").trim().to_owned());
            continue;
        }
        if line.trim() != "```sh" {
            if !line.trim().is_empty() {
                mark = None;
            }
            continue;
        }
        let body: Vec<&str> =
            lines.by_ref().map(|(_, l)| l).take_while(|l| l.trim() != "```").collect();
        let how = match mark.take() {
            Some(m) if m == "demo" => Ok(()),
            Some(m) => Err(m),
            None => Err(String::new()),
        };
        blocks.push((n + 1, body.join("\n"), how));
    }
    blocks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_shell_examples_run_as_written_against_the_demo() {
    let readme = std::fs::read_to_string(sccr_tests::workspace_root().join("README.md")).unwrap();
    let blocks = readme_blocks(&readme);
    let unmarked: Vec<usize> = blocks
        .iter()
        .filter(|(_, _, how)| how.as_ref().is_err_and(String::is_empty))
        .map(|b| b.0)
        .collect();
    assert!(
        unmarked.is_empty(),
        "README shell blocks on lines {unmarked:?} say neither `<!-- README test: demo -->` \
         nor `<!-- README test: skip: <why> -->`"
    );
    let tested: Vec<&(usize, String, Result<(), String>)> =
        blocks.iter().filter(|b| b.2.is_ok()).collect();
    assert!(tested.len() >= 4, "{} blocks run against the demo", tested.len());

    // The demo as the README starts it, in a directory of its own (`sccr-demo-data/`).
    let dir = TempDir::new("readme").unwrap();
    let args = ["--devices", "60", "--backfill", "2h"];
    let demo = Demo::start_in(&dir.path, "sccr-demo-data", "demo.log", &args);
    demo.line("back-fill done:", Duration::from_secs(90)).await;
    let token = std::fs::read_to_string(dir.path.join("sccr-demo-data/admin-token")).unwrap();
    // `sccr` as the README calls it: the binary under test first on the PATH.
    let bin = workspace_bin("sccr").unwrap();
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // One shell session, as a reader pasting the blocks in order has: what a block
    // exports (the first sets TOKEN and AUTH) is there in the next ones, and nothing else.
    let session = dir.path.join("readme-session.sh");
    for (line, block, _) in tested {
        let script = block.replace("127.0.0.1:8080", &format!("127.0.0.1:{}", demo.http));
        // As written, but an HTTP error fails the block (curl alone would exit 0).
        let prelude = format!(
            "set -euo pipefail\nif [ -f '{s}' ]; then . '{s}'; fi\n\
             curl() {{ command curl --silent --show-error --fail-with-body \"$@\"; }}\n",
            s = session.display()
        );
        let out = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(format!("{prelude}{script}\nexport -p > '{}'\n", session.display()))
            .current_dir(&dir.path)
            .env_remove("TOKEN")
            .env_remove("AUTH")
            .env("PATH", path.clone())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "README.md line {line}: the block failed\n{block}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let carried = std::fs::read_to_string(&session).unwrap();
    assert!(
        carried.contains(&format!("Authorization: Bearer {}", token.trim())),
        "the README's first block exports AUTH with the demo's token"
    );
    demo.stop().await;
}
