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
        let (http, mqtt) = (free_port(), free_port());
        let log = dir.join(log);
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(workspace_bin("sccr").unwrap())
            .args(["demo", "--port", &http.to_string(), "--mqtt-port", &mqtt.to_string()])
            .arg("--data-dir")
            .arg(dir.join("data"))
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
