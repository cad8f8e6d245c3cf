//! `sccr demo`: the whole control room in one process with no external service: an
//! embedded MQTT broker (rumqttd), the SQLite store, ingest, stream, the API, and a
//! simulated fleet on the Florence road network.
//!
//! What it shows (the simulated city is [`simulator::City`], a pure function of time and
//! the seed 42):
//! - **Rush hours.** On weekdays around 08:30 and 18:15 a few arterials and ring-avenue
//!   segments congest: about four at LOS D, four at E and two at F at the peak; nights,
//!   middays and weekends flow freely.
//! - **Air quality.** NO2 follows the traffic; on weekdays one or two stations have an NO2
//!   episode between 17:30 and 19:30 (over 200 µg/m³ for about half an hour, which takes the
//!   hourly mean over the `aq-no2-hourly` limit once the station has reported for 45
//!   minutes); about one day in three has PM10 raised all day.
//! - **An incident every quarter hour.** [`simulator::INCIDENT_SEGMENT`] (Viale Lavagnini)
//!   breaks down at :00, :15, :30 and :45 of every hour for 6.5 minutes (LOS F). The demo
//!   adds the rule `segment-breakdown` (LOS F for 1 minute, critical): it raises about two
//!   minutes into each incident and clears about a minute after it ends. A line at start
//!   names the segment and the cycle.
//! - **History.** `--backfill` (default 7 days) writes the city's past through `sccr
//!   import`'s write path while the wall is already live (see [`crate::backfill`]): one
//!   report per device every 5 minutes, newest first, only what the store does not hold
//!   yet, and never through the alert engine. The live fleet starts at once: it reports
//!   the present, the back-fill the past, and the two never share a timestamp, so there is
//!   no reason to keep the wall waiting.
//!
//! - **Road operations.** A start that finds no planned or active operation seeds three on
//!   the seed network ([`demo_operations`]): gas-main roadworks planned on Lungarno
//!   Torrigiani from two hours on, an active collision on Viale Strozzi with a police note,
//!   and a home match at the Stadio Franchi later today; none closes a road or is active
//!   roadworks, so none suppresses the demo's alerts.
//!
//! The admin token is kept in the data directory (`admin-token`, owner-only) and used
//! again at the next start; it is the one live `bootstrap-admin` token (a token given with
//! `--admin-token` replaces it, see `pipeline::ensure_bootstrap_admin`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use simulator::{plan_fleet, run_simulation, City, SimulateConfig, SimulationCounters};
use store::{
    ActualWindow, DeviceRecord, Operation, OperationFilter, OperationKind, OperationNote,
    OperationSeverity, OperationStatus, PlannedWindow,
};
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
    /// History written at start (zero: none).
    pub backfill: Duration,
}

/// The rule the demo adds to the shipped ones: a segment at LOS F for a minute.
pub const BREAKDOWN_RULE: &str = r#"
id = "segment-breakdown"
description = "Traffic has broken down on the segment (LOS F: under 30 % of free-flow speed)"
severity = "critical"
los = { at_or_worse = "F", for = "1m" }
"#;

/// The demo's configuration: SQLite in `data_dir`, the embedded broker, retention and the
/// age limit long enough for `backfill`, and the breakdown rule.
pub fn demo_config(opts: &DemoOptions) -> Result<Config> {
    let mut config = Config::default();
    config.database.url = format!("sqlite:{}", opts.data_dir.join("sccr.db").display());
    // Readers; SQLite's writes queue for the store's one writer connection.
    config.database.max_connections = 4;
    config.mqtt.port = opts.mqtt_port;
    config.mqtt.client_id = "sccr-demo-ingest".into();
    // The embedded broker takes any client: no credentials to provision.
    config.provisioning.mode = links::provisioning::ProvisioningMode::None;
    config.api.listen = format!("127.0.0.1:{}", opts.http_port);
    let day = Duration::from_secs(86_400);
    let keep = opts.backfill + day;
    config.ingest.max_past_age = config.ingest.max_past_age.max(opts.backfill);
    let r = &mut config.retention;
    for h in
        [&mut r.raw, &mut r.rollup_1m, &mut r.rollup_1h, &mut r.rollup_1d].into_iter().flatten()
    {
        *h = (*h).max(keep);
    }
    config.alerts.rules.push(toml::from_str(BREAKDOWN_RULE).context("the breakdown rule")?);
    // The back-fill writes one week by default: baselines learn from that one sample of
    // each slot, so the charts' usual range and the forecasts show at once.
    config.baselines.min_samples = 1;
    Ok(config)
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
    // Listen for Ctrl-C and SIGTERM from the start: a signal that comes as soon as the API
    // answers must drain the demo, not kill it.
    let stop_requested = tokio::spawn(crate::shutdown_signal());
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

    let mut config = demo_config(&opts)?;
    let admin_token = admin_token(&opts.data_dir, opts.admin_token.as_deref())?;
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
    let seeded = seed_operations(&store, EventTime::now()).await?;
    let sim_config = SimulateConfig {
        port: opts.mqtt_port,
        client_prefix: "sccr-demo-fleet".into(),
        connections: 4,
        interval: opts.interval,
        ..SimulateConfig::default()
    };
    let city = City::new(&fleet, sim_config.seed);
    // What to back-fill is decided before the live fleet adds its first reading.
    let now = EventTime::now();
    let gaps = if opts.backfill.is_zero() {
        Vec::new()
    } else {
        crate::backfill::gaps(now, opts.backfill, crate::backfill::stored_span(&store, now).await?)
    };
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

    if !seeded.is_empty() {
        println!("Road operations: {} seeded ({}).", seeded.len(), seeded.join("; "));
    }
    match city.incident_segment() {
        Some(seg) => println!(
            "Incident: {} ({}) breaks down every {} min, on the quarter hour, for {:.1} min (LOS F; rule segment-breakdown raises and clears).",
            seg.id,
            seg.name,
            simulator::INCIDENT_PERIOD_MS / 60_000,
            simulator::INCIDENT_DURATION_MS as f64 / 60_000.0,
        ),
        None => println!("Incident: none (no ring-road segment has a simulated device)."),
    }

    let (stop_sim_tx, stop_sim_rx) = tokio::sync::watch::channel(false);
    let backfill = if gaps.is_empty() {
        if !opts.backfill.is_zero() {
            println!(
                "back-fill: nothing to add (the store already holds the last {}).",
                humantime::format_duration(opts.backfill)
            );
        }
        None
    } else {
        let store = running.store.clone();
        let devices: Vec<_> = fleet.iter().map(|d| d.id.clone()).collect();
        let retention = config.retention.raw;
        let stop = stop_sim_rx.clone();
        let relearn = running.relearn_baselines.clone();
        let span: Duration = gaps
            .iter()
            .map(|g| Duration::from_millis((g.to.millis() - g.from.millis()).max(0) as u64))
            .sum();
        println!("back-fill: writing {} of history (one report per device every 5 minutes), newest first…", humantime::format_duration(Duration::from_secs(span.as_secs())));
        Some(tokio::spawn(async move {
            let started = std::time::Instant::now();
            match crate::backfill::run(&store, &city, &devices, &gaps, retention, stop).await {
                Ok(s) => {
                    // The history went in behind the baselines' mark: learn it all now.
                    relearn.notify_one();
                    println!(
                    "back-fill {}: {} readings in {:.1} s ({} new, {} already stored, {} refused)",
                    if s.interrupted { "interrupted" } else { "done" },
                    s.readings,
                    started.elapsed().as_secs_f64(),
                    s.inserted,
                    s.duplicates,
                    s.refused,
                    )
                }
                Err(e) => eprintln!("back-fill failed: {e:#}"),
            }
        }))
    };
    let counters = Arc::new(SimulationCounters::default());
    let sim = tokio::spawn(run_simulation(
        sim_config,
        fleet,
        counters,
        stop_sim_rx,
        Duration::from_secs(5),
    ));

    let _ = stop_requested.await;
    println!("\nstopping: fleet first, then draining the pipeline…");
    let _ = stop_sim_tx.send(true);
    if let Some(b) = backfill {
        let _ = b.await;
    }
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
        ingest.dead_letters.total(),
        load(&metrics.readings_inserted),
        load(&metrics.batches),
        load(&metrics.readings_duplicate),
        load(&stream.windows_emitted),
    );
    Ok(())
}

/// Who the demo's operations are created by.
pub const DEMO_AUTHOR: &str = "demo";

/// The operations a new demo starts with, relative to `now`: roadworks planned on a
/// Lungarno from the next hour but one for five days, a collision that started 25 minutes
/// ago (active, with a police note) and a football match at the stadium three to six hours
/// from the next hour. All on segments of the Florence seed.
pub fn demo_operations(now: EventTime) -> Vec<Operation> {
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    let hour = now.millis() - now.millis().rem_euclid(HOUR) + HOUR;
    let at = EventTime;
    let op = |n: u32, kind, severity, agency: &str, title: &str, segments: &[&str]| Operation {
        id: format!("op-{:011x}-demo{n:04}", now.millis().max(0)),
        version: 1,
        kind,
        title: title.into(),
        description: None,
        severity,
        status: OperationStatus::Planned,
        agency: agency.into(),
        segments: segments.iter().map(|s| (*s).to_owned()).collect(),
        derived_segments: Vec::new(),
        point: None,
        area: None,
        closes_road: false,
        planned: PlannedWindow { from: now, to: now },
        actual: ActualWindow::default(),
        notes: Vec::new(),
        linked_alerts: Vec::new(),
        external_ref: None,
        created_at: now,
        created_by: DEMO_AUTHOR.into(),
        updated_at: now,
        updated_by: DEMO_AUTHOR.into(),
    };
    let mut works = op(
        1,
        OperationKind::Roadworks,
        OperationSeverity::Moderate,
        "utilities",
        "Gas main renewal on Lungarno Torrigiani",
        &["lungarno-torrigiani"],
    );
    works.description = Some("One lane closed, alternating one-way traffic with lights".into());
    works.planned = PlannedWindow { from: at(hour + HOUR), to: at(hour + HOUR + 5 * 24 * HOUR) };
    works.point = Some([11.2545, 43.7670]);
    works.external_ref = Some("PERM-2026-0412".into());
    let mut crash = op(
        2,
        OperationKind::Incident,
        OperationSeverity::Major,
        "municipal_police",
        "Collision at Fortezza da Basso",
        &["viale-strozzi"],
    );
    crash.status = OperationStatus::Active;
    crash.planned = PlannedWindow { from: at(now.millis() - 25 * MIN), to: at(hour + HOUR) };
    crash.actual.from = Some(at(now.millis() - 25 * MIN));
    crash.point = Some([11.2470, 43.7795]);
    crash.notes.push(OperationNote {
        at: at(now.millis() - 18 * MIN),
        by: "municipal_police".into(),
        text: "Two cars, right lane blocked towards Piazza della Libertà; patrol on site, tow truck called".into(),
    });
    let mut matchday = op(
        3,
        OperationKind::Event,
        OperationSeverity::Moderate,
        "mobility",
        "ACF Fiorentina home match, Stadio Artemio Franchi",
        &["viale-matteotti", "viale-gramsci"],
    );
    matchday.description =
        Some("Supporters' traffic towards Campo di Marte; extra buses on line 17".into());
    matchday.planned = PlannedWindow { from: at(hour + 3 * HOUR), to: at(hour + 6 * HOUR) };
    matchday.point = Some([11.2822, 43.7808]);
    vec![works, crash, matchday]
}

/// Store [`demo_operations`] unless an operation is planned or active already (a restart
/// keeps what the user left); their titles.
async fn seed_operations(store: &store::Store, now: EventTime) -> Result<Vec<String>> {
    let open = store.operations(&OperationFilter { limit: 1, ..Default::default() }).await?;
    if !open.operations.is_empty() {
        return Ok(Vec::new());
    }
    let mut titles = Vec::new();
    for op in demo_operations(now) {
        store
            .create_operation(&op, None, "")
            .await
            .with_context(|| format!("seeding {}", op.title))?;
        titles.push(op.title);
    }
    Ok(titles)
}

/// File in the data directory holding the demo's admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The demo's admin token: the one given, else the one an earlier start kept in
/// `data_dir`, else a new one, kept there for the next start.
pub fn admin_token(data_dir: &Path, given: Option<&str>) -> Result<String> {
    if let Some(t) = given {
        return Ok(t.to_owned());
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(kept) => {
            let kept = kept.trim();
            if kept.len() >= 32 && kept.chars().all(|c| c.is_ascii_graphic()) {
                return Ok(kept.to_owned());
            }
            tracing::warn!(path = %path.display(), "unreadable admin token file; making a new token");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let token = dashboard_api::auth::generate_token().map_err(|e| anyhow::anyhow!(e.message))?.0;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn options(backfill: Duration) -> DemoOptions {
        DemoOptions {
            http_port: 0,
            mqtt_port: 1,
            devices: 60,
            interval: Duration::from_secs(2),
            data_dir: "d".into(),
            admin_token: None,
            backfill,
        }
    }

    /// The demo's configuration passes `check-config`'s rules for any back-fill, keeps the
    /// back-filled history, and carries the breakdown rule.
    #[test]
    fn demo_config_keeps_the_backfill_and_watches_breakdowns() {
        let day = Duration::from_secs(86_400);
        for backfill in [Duration::ZERO, 7 * day, 200 * day, 366 * day] {
            let config = demo_config(&options(backfill)).unwrap();
            config.validate().unwrap();
            assert!(config.ingest.max_past_age >= backfill);
            let r = &config.retention;
            for horizon in [r.raw, r.rollup_1m, r.rollup_1h, r.rollup_1d].into_iter().flatten() {
                assert!(horizon > backfill, "{horizon:?} < {backfill:?}");
            }
            let rules = config.alerts.validate().unwrap();
            let rule = rules.rules.iter().find(|r| r.id.as_str() == "segment-breakdown").unwrap();
            assert_eq!(rule.severity, stream::Severity::Critical);
            assert!(matches!(
                &rule.kind,
                stream::alert::RuleKind::Los(l) if l.at_or_worse == stream::LevelOfService::F
                    && l.hold == Duration::from_secs(60)
            ));
        }
    }

    /// A new demo gets its three operations on seed segments, all of them on the wall (in
    /// force or starting within a day); a restart adds none.
    #[tokio::test]
    async fn a_new_demo_seeds_operations_the_wall_shows_once() {
        let dir = std::env::temp_dir().join(format!("sccr-demo-ops-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = Config::default();
        config.database.url = format!("sqlite:{}", dir.join("sccr.db").display());
        let store = pipeline::open_store(&config).await.unwrap();
        let now = EventTime::now();
        let started = std::time::Instant::now();
        let titles = seed_operations(&store, now).await.unwrap();
        eprintln!("seeded {} operations in {:?}", titles.len(), started.elapsed());
        assert_eq!(titles.len(), 3);
        let shown = store.current_operations(EventTime(now.millis() + 86_400_000)).await.unwrap();
        let kinds: Vec<_> = shown.iter().map(|o| (o.kind, o.status)).collect();
        assert_eq!(
            kinds,
            [
                (OperationKind::Roadworks, OperationStatus::Planned),
                (OperationKind::Incident, OperationStatus::Active),
                (OperationKind::Event, OperationStatus::Planned),
            ]
        );
        assert_eq!(shown[0].segments, ["lungarno-torrigiani"]);
        assert_eq!(shown[1].notes.len(), 1);
        assert!(shown[2].planned.from.millis() > now.millis(), "later today");
        // None explains alerts: the demo's breakdowns still page.
        assert!(store.suppressing_operations().await.unwrap().is_empty());
        assert!(seed_operations(&store, now).await.unwrap().is_empty(), "a restart adds none");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What two `sccr demo` starts on one data directory do with their admin token.
    #[tokio::test]
    async fn two_demo_starts_leave_exactly_one_live_bootstrap_token() {
        let dir = std::env::temp_dir().join(format!("sccr-demo-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = Config::default();
        config.database.url = format!("sqlite:{}", dir.join("sccr.db").display());
        let live = |store: store::Store| async move {
            let tokens = store.tokens().await.unwrap();
            tokens
                .into_iter()
                .filter(|t| t.name == pipeline::BOOTSTRAP_ADMIN && t.revoked_at.is_none())
                .count()
        };

        let first = admin_token(&dir, None).unwrap();
        let store = pipeline::open_store(&config).await.unwrap();
        pipeline::ensure_bootstrap_admin(&store, &first).await.unwrap();
        let second = admin_token(&dir, None).unwrap();
        assert_eq!(second, first, "the kept token is used again");
        pipeline::ensure_bootstrap_admin(&store, &second).await.unwrap();
        assert_eq!(live(store.clone()).await, 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(ADMIN_TOKEN_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // A token given on the command line replaces the kept one.
        let given = "g".repeat(40);
        let third = admin_token(&dir, Some(&given)).unwrap();
        pipeline::ensure_bootstrap_admin(&store, &third).await.unwrap();
        assert_eq!(live(store.clone()).await, 1);
        let digest = dashboard_api::auth::token_digest(&first);
        assert!(store.token_by_digest(&digest).await.unwrap().is_none(), "the old one is revoked");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
