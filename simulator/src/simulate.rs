//! Fleet simulation: many devices published over a few MQTT 5 (or 3.1.1) connections (as a gateway
//! would), QoS 1, each device on its own topic with its own message counter. A message
//! counts as delivered only when the broker's PUBACK arrives (`publish()` returning only
//! means it was queued). Devices are spread evenly in time over the reporting interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mqtt_client::{Event, Options, Protocol, QoS};
use telemetry::{encode_compact, CompactMessage, CompactReading, EventTime, TimeField, Topic};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::day::City;
use crate::fleet::SimDevice;

#[derive(Debug, Clone)]
pub struct SimulateConfig {
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    /// More brokers (nodes of a cluster): connection `i` goes to the `i % n`-th of
    /// `host:port` followed by these, and fails over to the others in turn.
    pub extra_brokers: Vec<(String, u16)>,
    /// Client id prefix; connection `i` uses `{prefix}-{i}`.
    pub client_prefix: String,
    pub connections: usize,
    /// Each device reports once per interval.
    pub interval: Duration,
    /// Stop after this many messages per device (None: until shutdown).
    pub messages_per_device: Option<u64>,
    pub seed: u64,
}

impl Default for SimulateConfig {
    fn default() -> Self {
        Self {
            protocol: Protocol::V5,
            host: "127.0.0.1".into(),
            port: 1883,
            extra_brokers: Vec::new(),
            client_prefix: "sccr-sim".into(),
            connections: 4,
            interval: Duration::from_secs(5),
            messages_per_device: None,
            seed: 42,
        }
    }
}

/// Counts shared by the connections while they run.
#[derive(Debug, Default)]
pub struct SimulationCounters {
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub readings: AtomicU64,
    pub errors: AtomicU64,
    /// When set, one line per published message: `device<TAB>time_ms<TAB>metric,metric…`,
    /// the keys of the readings it carries (what a fault test compares with the store).
    pub ledger: Option<std::sync::Mutex<std::io::BufWriter<std::fs::File>>>,
}

impl SimulationCounters {
    /// Counters that also write the ledger of published readings to `path`.
    pub fn with_ledger(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(path)?;
        Ok(Self {
            ledger: Some(std::sync::Mutex::new(std::io::BufWriter::new(file))),
            ..Self::default()
        })
    }

    fn record(&self, device: &str, msg: &CompactMessage) {
        let Some(ledger) = &self.ledger else { return };
        let time = match msg.ts {
            Some(TimeField::Millis(ms)) => ms,
            _ => return,
        };
        let metrics: Vec<&str> = msg.readings.iter().map(|r| r.m.as_str()).collect();
        if let Ok(mut w) = ledger.lock() {
            use std::io::Write;
            let _ = writeln!(w, "{device}\t{time}\t{}", metrics.join(","));
        }
    }

    /// Write buffered ledger lines to the file.
    pub fn flush_ledger(&self) {
        if let Some(Ok(mut w)) = self.ledger.as_ref().map(|l| l.lock()) {
            use std::io::Write;
            let _ = w.flush();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulationReport {
    pub published: u64,
    pub acked: u64,
    pub readings: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

impl SimulationReport {
    pub fn messages_per_second(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Run the fleet until `shutdown` turns true (or every device sent its quota), then wait up
/// to `drain` for outstanding PUBACKs.
pub async fn run_simulation(
    config: SimulateConfig,
    devices: Vec<SimDevice>,
    counters: Arc<SimulationCounters>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) -> SimulationReport {
    let started = Instant::now();
    let conns = config.connections.clamp(1, devices.len().max(1));
    let city = Arc::new(City::new(&devices, config.seed));
    let mut groups: Vec<Vec<(usize, SimDevice)>> = vec![Vec::new(); conns];
    for (i, d) in devices.into_iter().enumerate() {
        groups[i % conns].push((i, d));
    }
    let mut tasks = Vec::new();
    for (i, group) in groups.into_iter().enumerate() {
        if group.is_empty() {
            continue;
        }
        tasks.push(tokio::spawn(run_connection(
            config.clone(),
            i,
            city.clone(),
            group,
            counters.clone(),
            shutdown.clone(),
            drain,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    counters.flush_ledger();
    SimulationReport {
        published: counters.published.load(Ordering::Relaxed),
        acked: counters.acked.load(Ordering::Relaxed),
        readings: counters.readings.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

/// One report of device `index` of the city at `now`.
fn message(
    city: &City,
    index: usize,
    seq: u64,
    now: EventTime,
    interval_s: f64,
) -> (CompactMessage, usize) {
    let values = city.readings(index, now, interval_s);
    let n = values.len();
    let readings = values.into_iter().map(|(m, v)| CompactReading { m, v, t: None }).collect();
    (CompactMessage { seq: Some(seq), ts: Some(TimeField::Millis(now.millis())), readings }, n)
}

async fn run_connection(
    config: SimulateConfig,
    index: usize,
    city: Arc<City>,
    devices: Vec<(usize, SimDevice)>,
    counters: Arc<SimulationCounters>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    // Connection `index` starts on broker `index % n` and fails over to the others in turn.
    let mut brokers: Vec<(String, u16)> = std::iter::once((config.host.clone(), config.port))
        .chain(config.extra_brokers.iter().cloned())
        .collect();
    let first = index % brokers.len();
    brokers.rotate_left(first);
    let (host, port) = brokers.remove(0);
    let mut opts =
        Options::new(config.protocol, format!("{}-{index}", config.client_prefix), host, port);
    opts.failover = brokers;
    // A session that outlives the connection: rumqttc republishes unacknowledged messages
    // after a reconnection only when the broker still has the session (session present);
    // with a new session it drops them, and they are reported as unacknowledged.
    opts.keep_alive = Duration::from_secs(30);
    opts.clean_start = false;
    opts.session_expiry = Some(Duration::from_secs(600));
    // Bounds the in-flight window and rumqttc's preallocated in-flight table.
    opts.outgoing_inflight = 1_000;
    let (client, mut eventloop) = mqtt_client::new_client(&opts, 1_000);
    let in_flight = Arc::new(AtomicU64::new(0));
    let poll_counters = counters.clone();
    let poll_in_flight = in_flight.clone();
    let (stop_poll_tx, mut stop_poll) = watch::channel(false);
    let poller = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = stop_poll.changed() => break,
                event = eventloop.poll() => match event {
                    Ok(Event::PubAck { .. }) => {
                        poll_counters.acked.fetch_add(1, Ordering::Relaxed);
                        poll_in_flight.fetch_sub(1, Ordering::Relaxed);
                    }
                    Ok(Event::ConnAck { .. }) => backoff = Duration::from_millis(100),
                    Ok(_) => {}
                    Err(e) => {
                        poll_counters.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "simulator connection {index} failed; reconnecting");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    });

    let topics: Vec<String> = devices.iter().map(|(_, d)| Topic::telemetry(&d.id)).collect();
    // A device's clock only moves forward: when publishing falls behind and a burst holds
    // a device twice, its readings still get distinct times (the store's key).
    let mut last_ms = vec![i64::MIN; devices.len()];
    let n = devices.len() as u128;
    let interval_ns = config.interval.as_nanos().max(1);
    let quota = config.messages_per_device.map(|m| u128::from(m) * n);
    let started = Instant::now();
    let mut sent: u128 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'run: loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
        // Publishes due by now: devices are spread evenly over each interval.
        let mut due = started.elapsed().as_nanos() * n / interval_ns + 1;
        if let Some(q) = quota {
            due = due.min(q);
        }
        while sent < due {
            let i = (sent % n) as usize;
            let seq = (sent / n) as u64 + 1;
            let now = EventTime(EventTime::now().millis().max(last_ms[i].saturating_add(1)));
            last_ms[i] = now.millis();
            let (at, device) = &devices[i];
            let (msg, readings) = message(&city, *at, seq, now, config.interval.as_secs_f64());
            let payload = encode_compact(&msg);
            in_flight.fetch_add(1, Ordering::Relaxed);
            if client.publish(topics[i].clone(), QoS::AtLeastOnce, false, payload).await.is_err() {
                in_flight.fetch_sub(1, Ordering::Relaxed);
                counters.errors.fetch_add(1, Ordering::Relaxed);
                break 'run;
            }
            counters.record(device.id.as_str(), &msg);
            counters.published.fetch_add(1, Ordering::Relaxed);
            counters.readings.fetch_add(readings as u64, Ordering::Relaxed);
            sent += 1;
        }
        if quota.is_some_and(|q| sent >= q) {
            break;
        }
    }
    // Wait for the broker to acknowledge what was published.
    let deadline = Instant::now() + drain;
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = client.disconnect().await;
    let _ = stop_poll_tx.send(true);
    let _ = poller.await;
}
