//! A NATS server cluster for tests: `nodes` servers on free loopback ports, routed to each
//! other, with JetStream (clustered: MQTT in a NATS cluster needs it, it holds the MQTT
//! sessions and QoS 1 messages, replicated on up to 3 nodes) and an MQTT 3.1.1 listener
//! each. A node is SIGKILLed and restarted on its ports and store at will.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{free_port, kill_child, spawn_logged, which, TempDir};

/// One node of a [`NatsCluster`].
pub struct NatsNode {
    pub name: String,
    pub mqtt_port: u16,
    pub monitor_port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    bin: PathBuf,
    _dir: TempDir,
}

impl NatsCluster {
    /// The `nats-server` binary, or why not (the test then says it skipped).
    pub fn binary() -> Result<PathBuf> {
        which("nats-server")
            .context("nats-server not installed (apt-get install nats-server; .ci/run installs it)")
    }

    /// Start `nodes` servers and wait until every one answers healthy with JetStream.
    /// `mqtt` is added to each node's `mqtt { … }` block (e.g. `ack_wait: "10s"`).
    pub async fn start(nodes: usize, mqtt: &str) -> Result<Self> {
        let bin = Self::binary()?;
        let dir = TempDir::new("nats")?;
        let routes: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        let route_urls: Vec<String> =
            routes.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
        let mut list = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let (client_port, mqtt_port, monitor_port) = (free_port(), free_port(), free_port());
            let store = dir.path.join(&name);
            std::fs::create_dir_all(&store)?;
            let conf = dir.path.join(format!("{name}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client_port}\n\
                     http: 127.0.0.1:{monitor_port}\n\
                     jetstream {{ store_dir: \"{}\", max_mem: 64M, max_file: 2G }}\n\
                     cluster {{ name: sccr, listen: 127.0.0.1:{route}, routes: [{}] }}\n\
                     mqtt {{ listen: 127.0.0.1:{mqtt_port}\n{mqtt}\n}}\n",
                    store.display(),
                    route_urls.join(", "),
                ),
            )?;
            let log = dir.path.join(format!("{name}.log"));
            list.push(NatsNode { name, mqtt_port, monitor_port, conf, log, child: None });
        }
        let mut cluster = Self { nodes: list, bin, _dir: dir };
        for i in 0..nodes {
            cluster.spawn(i)?;
        }
        for i in 0..nodes {
            cluster.wait_healthy(i, Duration::from_secs(60)).await?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let mut command = Command::new(&self.bin);
        command.arg("-c").arg(&node.conf);
        node.child = Some(spawn_logged(&mut command, &node.log, "nats-server")?);
        Ok(())
    }

    /// Wait until node `i` serves MQTT: a 3.1.1 client connects (the server answers a
    /// CONNECT only once it can look the session up in JetStream). NATS's `/healthz`
    /// waits for every JetStream asset to be current, which after a SIGKILL can take far
    /// longer than MQTT needs.
    pub async fn wait_healthy(&self, i: usize, timeout: Duration) -> Result<()> {
        use mqtt_client::{Event, Options, Protocol};
        let node = &self.nodes[i];
        let deadline = tokio::time::Instant::now() + timeout;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut opts = Options::new(
                Protocol::V311,
                format!("probe-{}-{attempt}", node.name),
                "127.0.0.1".into(),
                node.mqtt_port,
            );
            opts.clean_start = true;
            let (client, mut eventloop) = mqtt_client::new_client(&opts, 4);
            let connected = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::ConnAck { .. }) => return true,
                        Ok(_) => {}
                        Err(_) => return false,
                    }
                }
            })
            .await
            .unwrap_or(false);
            let _ = client.try_disconnect();
            if connected {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "NATS node {} not serving MQTT within {timeout:?}:\n{}",
                    node.name,
                    self.log(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL node `i`: no clean shutdown, no leadership hand-off.
    pub fn kill(&mut self, i: usize) {
        kill_child(&mut self.nodes[i].child);
    }

    /// Start a killed node again with its ports and JetStream store.
    pub async fn start_again(&mut self, i: usize) -> Result<()> {
        if self.nodes[i].child.is_some() {
            bail!("node {} is running", self.nodes[i].name);
        }
        self.spawn(i)?;
        self.wait_healthy(i, Duration::from_secs(60)).await
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            kill_child(&mut n.child);
        }
    }
}
