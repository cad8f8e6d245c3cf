//! The `sccr serve` process of a test, and minimal HTTP requests to its API as the test
//! admin.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{child_command, free_port, kill_child, spawn_logged, wait_for, workspace_bin};

/// A running `sccr serve` child process, killed on drop.
pub struct Sccr {
    pub api_port: u16,
    child: Option<Child>,
    pub log: PathBuf,
    env: Vec<(String, String)>,
    config: PathBuf,
    role: Option<String>,
}

impl Sccr {
    /// Start `sccr serve` against `broker_port` and `db_url`, configured through the
    /// environment; `extra` adds or replaces `SCCR_…` variables.
    pub fn serve(
        broker_port: u16,
        db_url: &str,
        log_dir: &Path,
        extra: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start(broker_port, db_url, log_dir, None, extra, None)
    }

    /// Like [`Sccr::serve`], with a configuration file holding `toml` (for what the
    /// environment cannot express, such as alert rules); the environment still overrides it.
    pub fn serve_with_config(
        broker_port: u16,
        db_url: &str,
        log_dir: &Path,
        toml: &str,
        extra: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start(broker_port, db_url, log_dir, Some(toml), extra, None)
    }

    /// `sccr serve --role ROLE` (ingest or api), optionally with a configuration file.
    pub fn serve_role(
        role: &str,
        broker_port: u16,
        db_url: &str,
        log_dir: &Path,
        toml: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start(broker_port, db_url, log_dir, toml, extra, Some(role))
    }

    fn start(
        broker_port: u16,
        db_url: &str,
        log_dir: &Path,
        toml: Option<&str>,
        extra: &[(&str, &str)],
        role: Option<&str>,
    ) -> Result<Self> {
        let api_port = free_port();
        // sccr serve needs a configuration file; an empty one is all defaults.
        let config = log_dir.join(format!("sccr-{api_port}.toml"));
        std::fs::write(&config, toml.unwrap_or_default())?;
        let mut env = vec![
            ("SCCR_MQTT__PORT".to_string(), broker_port.to_string()),
            ("SCCR_DATABASE__URL".to_string(), db_url.to_string()),
            ("SCCR_API__LISTEN".to_string(), format!("127.0.0.1:{api_port}")),
            ("SCCR_MQTT__CLIENT_ID".to_string(), format!("sccr-test-{api_port}")),
            ("SCCR_API__BOOTSTRAP_ADMIN_TOKEN".to_string(), TEST_ADMIN_TOKEN.to_string()),
        ];
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        let mut s = Self {
            api_port,
            child: None,
            log: log_dir.join(format!("sccr-{api_port}.log")),
            env,
            config,
            role: role.map(str::to_owned),
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut command = child_command(&workspace_bin("sccr")?);
        command.arg("serve");
        if let Some(role) = &self.role {
            command.arg("--role").arg(role);
        }
        command
            .arg("--config")
            .arg(&self.config)
            .envs(self.env.iter().cloned())
            .env("RUST_LOG", "info,sqlx=warn");
        self.child = Some(spawn_logged(&mut command, &self.log, "sccr serve")?);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Start again with the same configuration (same MQTT client id: the session resumes).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// SIGKILL: no drain, no flush, no acks.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// SIGTERM, then wait for the process to exit; returns whether it exited with success.
    #[allow(clippy::disallowed_methods)] // a synchronous wait on a child process
    pub fn terminate(&mut self, timeout: Duration) -> Result<bool> {
        let Some(mut c) = self.child.take() else { bail!("not running") };
        let status = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st.success());
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                bail!("sccr did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the API answers `/healthz`.
    pub async fn wait_healthy(&self) {
        let port = self.api_port;
        wait_for("sccr /healthz", Duration::from_secs(30), || async move {
            http_get(port, "/healthz").await.ok().filter(|(status, _)| *status == 200).map(|_| ())
        })
        .await;
    }
}

impl Drop for Sccr {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The admin API token every `sccr` process started by [`Sccr`] accepts (through
/// `api.bootstrap_admin_token`); [`http_get`] and [`http_send`] present it.
pub const TEST_ADMIN_TOKEN: &str = "sccr_test_admin_0123456789abcdef0123456789abcdef";

/// The websocket URL of a test server's live feed, with the admin token.
pub fn live_url(port: u16) -> String {
    format!("ws://127.0.0.1:{port}/api/v1/live?access_token={TEST_ADMIN_TOKEN}")
}

/// A minimal HTTP/1.1 GET on loopback as the test admin: (status, body).
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    http_request(port, "GET", path, Some(TEST_ADMIN_TOKEN), "").await
}

/// A figure of a test server's `/metrics` (an unlabelled series), if it is there.
pub async fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, text) = http_get(port, "/metrics").await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A minimal HTTP/1.1 request with a JSON body on loopback as the test admin: (status, body).
pub async fn http_send(port: u16, method: &str, path: &str, json: &str) -> Result<(u16, String)> {
    http_request(port, method, path, Some(TEST_ADMIN_TOKEN), json).await
}

/// A minimal HTTP/1.1 request on loopback with an optional bearer token: (status, body).
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: &str,
) -> Result<(u16, String)> {
    http_request_with(port, method, path, token, &[], json).await
}

/// Like [`http_request`], with extra request headers.
pub async fn http_request_with(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    json: &str,
) -> Result<(u16, String)> {
    let (status, _, body) = http_exchange(port, method, path, token, headers, json).await?;
    Ok((status, body))
}

/// A GET as the test admin with the answer's head: (status, head, body). Header names in
/// the head are as the server wrote them (lowercase with hyper).
pub async fn http_get_with_head(port: u16, path: &str) -> Result<(u16, String, String)> {
    http_exchange(port, "GET", path, Some(TEST_ADMIN_TOKEN), &[], "").await
}

/// A header of an answer's head, by name (case-insensitive).
pub fn header_value<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn http_exchange(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    json: &str,
) -> Result<(u16, String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        json.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(json.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text.split_whitespace().nth(1).context("no status")?.parse()?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((status, head.to_owned(), body.to_owned()))
}

/// `sccr COMMAND --config <empty> --out OUT --include INCLUDE` (`mqtt-passwd`, `mqtt-acl`,
/// `mqtt-dynsec`) on the database at `db_url`, with only this test's settings (an empty
/// configuration file, all defaults, beside `out`): its standard output, or an error
/// with its standard error.
pub fn sccr_admin(command: &str, out: &Path, include: &Path, db_url: &str) -> Result<String> {
    let config = out.with_extension("sccr.toml");
    std::fs::write(&config, "")?;
    let output = child_command(&workspace_bin("sccr")?)
        .arg(command)
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(out)
        .arg("--include")
        .arg(include)
        .env("SCCR_DATABASE__URL", db_url)
        .output()?;
    if !output.status.success() {
        bail!("sccr {command}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
