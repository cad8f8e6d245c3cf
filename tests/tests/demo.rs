//! `sccr demo` started twice on one data directory: the same admin token, and exactly one
//! live `bootstrap-admin` token in the store.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use sccr_tests::{free_port, http_request, wait_for, workspace_bin, TempDir};

/// Start `sccr demo`, wait until it serves, stop it with SIGTERM; the token it uses.
async fn demo_start(dir: &std::path::Path) -> String {
    let (http, mqtt) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("demo.log")).unwrap();
    let mut child = tokio::process::Command::new(workspace_bin("sccr").unwrap())
        .args(["demo", "--devices", "2", "--port", &http.to_string()])
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
