//! `sccr demo`: the whole control room in one process with no external service: an
//! embedded MQTT broker (rumqttd), the SQLite store, ingest, stream, the API, and a
//! simulated fleet on the Florence road network.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use simulator::{plan_fleet, run_simulation, SimulateConfig, SimulationCounters};
use store::DeviceRecord;
use telemetry::EventTime;

use crate::config::Config;
use crate::pipeline;

pub struct DemoOptions {
    pub http_port: u16,
    pub mqtt_port: u16,
    pub devices: usize,
    pub interval: Duration,
    pub data_dir: std::path::PathBuf,
    pub admin_token: Option<String>,
}

/// The embedded broker: MQTT 5 on loopback, sized for the demo fleet.
fn broker_config(port: u16) -> Result<rumqttd::Config> {
    let text = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 1010
max_outgoing_packet_count = 1000
max_segment_size = 104857600
max_segment_count = 10

[v5.1]
name = "v5-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
    [v5.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 131072
    max_inflight_count = 1000
    dynamic_filters = true
"#
    );
    toml::from_str(&text).context("embedded broker configuration")
}

pub async fn run(opts: DemoOptions) -> Result<()> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating {}", opts.data_dir.display()))?;
    let mut broker = rumqttd::Broker::new(broker_config(opts.mqtt_port)?);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .context("starting the embedded broker")?;
    wait_for_port(opts.mqtt_port).await.context("the embedded broker did not start listening")?;

    let mut config = Config::default();
    config.database.url = format!("sqlite:{}", opts.data_dir.join("sccr.db").display());
    config.database.max_connections = 4;
    config.mqtt.port = opts.mqtt_port;
    config.mqtt.client_id = "sccr-demo-ingest".into();
    config.api.listen = format!("127.0.0.1:{}", opts.http_port);
    let admin_token = match &opts.admin_token {
        Some(t) => t.clone(),
        None => dashboard_api::auth::generate_token().map_err(|e| anyhow::anyhow!(e.message))?.0,
    };
    config.api.bootstrap_admin_token = Some(admin_token.clone());
    config.validate()?;

    let store = pipeline::open_store(&config).await?;
    let segments = store.segments().await?;
    let fleet = plan_fleet(&segments, opts.devices);
    let records: Vec<DeviceRecord> = fleet
        .iter()
        .map(|d| DeviceRecord {
            id: d.id.clone(),
            kind: Some(d.kind.as_str().into()),
            segment: Some(d.segment.id.clone()),
            registered_at: EventTime::now(),
        })
        .collect();
    store.upsert_devices(&records).await?;
    let running = pipeline::start(&config, store, pipeline::Role::All).await?;

    let url = format!("http://{}", running.api_addr);
    let covered: std::collections::HashSet<_> =
        fleet.iter().map(|d| d.segment.id.clone()).collect();
    let example = fleet.first().map(|d| d.id.to_string()).unwrap_or_default();
    println!(
        "\nSCCR demo is running: {} simulated devices on {} Florence road segments.\n\
         \n  API       {url}\n  admin token: {admin_token}\n  MQTT      127.0.0.1:{} (embedded broker, MQTT 5)\n  Data      {}\n\
         \nTry (TOKEN is the admin token above):\n  curl -H \"Authorization: Bearer $TOKEN\" {url}/api/v1/devices\n  curl -H \"Authorization: Bearer $TOKEN\" '{url}/api/v1/latest?device={example}'\n  curl -H \"Authorization: Bearer $TOKEN\" '{url}/api/v1/history?device={example}&metric=speed_kmh&resolution=1m'\n  \
         websocket {}/api/v1/live?access_token=$TOKEN, send {{\"type\":\"subscribe\",\"devices\":[\"{example}\"]}}\n\
         \nCtrl-C drains the pipeline, flushes the last batch and window, and exits.\n",
        fleet.len(),
        covered.len(),
        opts.mqtt_port,
        opts.data_dir.display(),
        url.replacen("http", "ws", 1),
    );

    let (stop_sim_tx, stop_sim_rx) = tokio::sync::watch::channel(false);
    let sim_config = SimulateConfig {
        port: opts.mqtt_port,
        client_prefix: "sccr-demo-fleet".into(),
        connections: 4,
        interval: opts.interval,
        ..SimulateConfig::default()
    };
    let counters = Arc::new(SimulationCounters::default());
    let sim = tokio::spawn(run_simulation(
        sim_config,
        fleet,
        counters,
        stop_sim_rx,
        Duration::from_secs(5),
    ));

    crate::shutdown_signal().await;
    println!("\nstopping: fleet first, then draining the pipeline…");
    let _ = stop_sim_tx.send(true);
    if let Ok(report) = sim.await {
        println!("fleet published {} messages, {} acknowledged", report.published, report.acked);
    }
    let metrics = running.writer_metrics.clone();
    let ingest = running.ingest_metrics.clone();
    let stream = running.stream_metrics.clone();
    running.shutdown().await;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "ingested {} messages ({} dead letters); stored {} readings in {} batches ({} duplicates ignored); {} windows emitted",
        load(&ingest.messages),
        load(&ingest.dead_letters),
        load(&metrics.readings_inserted),
        load(&metrics.batches),
        load(&metrics.readings_duplicate),
        load(&stream.windows_emitted),
    );
    Ok(())
}

async fn wait_for_port(port: u16) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("nothing listens on 127.0.0.1:{port}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
