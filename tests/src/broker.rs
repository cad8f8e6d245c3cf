//! Mosquitto for tests: a broker on a free loopback port with the project's
//! configuration (or a shipped variant rewritten by [`shipped_conf`]), killed, stopped
//! and restarted at will; and a throwaway PKI for its TLS listener.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{free_port, kill_child, which, workspace_root, TempDir};

/// A Mosquitto broker on a free loopback port, with `deploy/mosquitto/sccr.conf`.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    conf: PathBuf,
    _dir: TempDir,
}

impl Broker {
    pub async fn start() -> Result<Self> {
        Self::start_with("").await
    }

    /// Start with a whole configuration of the caller's: `make(dir, port)` returns the file's
    /// text given the broker's private directory (readable by the broker) and its port.
    pub async fn start_config(make: impl FnOnce(&Path, u16) -> Result<String>) -> Result<Self> {
        let dir = TempDir::new("mosquitto")?;
        let port = free_port();
        let _ = Command::new("chmod").arg("0777").arg(&dir.path).status();
        let text = make(&dir.path, port)?;
        let conf = dir.path.join("mosquitto.conf");
        std::fs::write(&conf, text)?;
        let _ = Command::new("chmod").args(["-R", "a+rwX"]).arg(&dir.path).status();
        let mut broker = Self { port, child: None, conf, _dir: dir };
        broker.spawn().await?;
        Ok(broker)
    }

    /// The broker's persistence file (written every `autosave_interval` and at exit).
    pub fn persistence_file(&self) -> PathBuf {
        self._dir.path.join("data/mosquitto.db")
    }

    /// SIGKILL: no session saved since the last autosave.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Start a killed or stopped broker again on the same port and configuration.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("the broker is running");
        }
        self.spawn().await
    }

    /// Start with extra configuration lines appended (e.g. a TLS listener).
    pub async fn start_with(extra: &str) -> Result<Self> {
        let dir = TempDir::new("mosquitto")?;
        let port = free_port();
        let base = std::fs::read_to_string(workspace_root().join("deploy/mosquitto/sccr.conf"))?;
        let data = dir.path.join("data");
        std::fs::create_dir_all(&data)?;
        // Mosquitto started as root drops to its own user; let it write its persistence file.
        let _ = Command::new("chmod").arg("0777").arg(&dir.path).arg(&data).status();
        let conf = dir.path.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "{base}\npersistence_location {}/\nlistener {port} 127.0.0.1\n{extra}\n",
                data.display()
            ),
        )?;
        let mut broker = Self { port, child: None, conf, _dir: dir };
        broker.spawn().await?;
        Ok(broker)
    }

    async fn spawn(&mut self) -> Result<()> {
        let bin =
            which("mosquitto").context("mosquitto not installed (apt-get install mosquitto)")?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start mosquitto")?;
        self.child = Some(child);
        self.wait_listening().await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stop the broker the way an operator would (SIGTERM: it saves its sessions).
    #[allow(clippy::disallowed_methods)] // a synchronous wait on a child process
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut c) = self.child.take() else { return Ok(()) };
        Command::new("kill").arg("-TERM").arg(c.id().to_string()).status()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while c.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                bail!("mosquitto did not stop within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Start again on the same port with the same configuration and persistence file.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn().await
    }

    async fn wait_listening(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                bail!("mosquitto did not listen on {} within 10 s", self.port);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// `deploy/mosquitto/<file>` rewritten for a test broker: the broker's files go to `dir`,
/// its plain listener to `127.0.0.1:port`. `persistence_location` points at `dir/data/`
/// (created) and `listener 1883` at the port; every line that is one of `edits`' keys (a
/// whole line such as `listener 8883`) or starts with it and a space (a directive such as
/// `cafile`) becomes its replacement. With `uncomment` naming a marker, commented
/// directives (`#directive value`) from the line starting with that marker on are switched
/// on first. Fails unless exactly `expected` lines were replaced (the listener and the
/// persistence location included): the shipped file changed shape.
pub fn shipped_conf(
    file: &str,
    dir: &Path,
    port: u16,
    uncomment: Option<&str>,
    edits: &[(&str, String)],
    expected: usize,
) -> Result<String> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let text = std::fs::read_to_string(workspace_root().join("deploy/mosquitto").join(file))?;
    let listener = format!("listener {port} 127.0.0.1");
    let persistence = format!("persistence_location {}/", data.display());
    let fixed = [("listener 1883", &listener), ("persistence_location", &persistence)];
    let mut replaced = 0;
    let mut in_block = false;
    let conf: Vec<String> = text
        .lines()
        .map(|l| {
            in_block |= uncomment.is_some_and(|m| l.starts_with(m));
            // In the block, `#directive value` lines are commented-out configuration.
            let l = if in_block
                && l.starts_with('#')
                && l.chars().nth(1).is_some_and(|c| c.is_ascii_lowercase())
            {
                &l[1..]
            } else {
                l
            };
            let hit = fixed
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .chain(edits.iter().map(|(k, v)| (*k, v.as_str())))
                .find(|(k, _)| l == *k || l.strip_prefix(k).is_some_and(|r| r.starts_with(' ')));
            match hit {
                Some((_, line)) => {
                    replaced += 1;
                    line.to_owned()
                }
                None => l.to_owned(),
            }
        })
        .collect();
    if replaced != expected {
        bail!("{file} changed shape: {replaced} of {expected} lines found");
    }
    Ok(conf.join("\n") + "\n")
}

/// A throwaway certificate authority with a server certificate for 127.0.0.1 and one
/// client certificate, made with the `openssl` command.
pub struct TestPki {
    pub dir: TempDir,
}

impl TestPki {
    pub fn create(client_cn: &str) -> Result<Self> {
        let dir = TempDir::new("pki")?;
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir.path)
                .output()
                .context("run openssl")?;
            if !out.status.success() {
                bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sccr-test-ca",
        ])?;
        std::fs::write(dir.path.join("server.ext"), "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")?;
        std::fs::write(
            dir.path.join("client.ext"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )?;
        for (name, cn) in [("server", "127.0.0.1"), ("client", client_cn)] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ])?;
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ])?;
        }
        // Mosquitto drops to its own user when started as root: let it read the files.
        let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&dir.path).status();
        Ok(Self { dir })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path.join(file)
    }

    /// The `[mqtt]` section of an edge agent's configuration reaching a TLS listener on
    /// `127.0.0.1:port` and trusting this CA, with the client certificate when `client_cert`.
    pub fn agent_mqtt(&self, port: u16, client_cert: bool) -> String {
        let mut text = format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n[mqtt.tls]\nca = \"{}\"\n",
            self.path("ca.pem").display()
        );
        if client_cert {
            text.push_str(&format!(
                "client_cert = \"{}\"\nclient_key = \"{}\"\n",
                self.path("client.pem").display(),
                self.path("client.key").display()
            ));
        }
        text
    }
}
