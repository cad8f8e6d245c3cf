//! `sccr-bench`: the whole pipeline measured against this machine's own limits, in one run,
//! on loopback, with a real Mosquitto (the project's configuration) and PostgreSQL.
//!
//! 1. Limits: raw broker throughput (a Rust publisher fleet to one QoS 1 subscriber, our
//!    payloads) and raw `COPY` rows/s into a table of the `readings` shape.
//! 2. SCCR end to end: the `sccr serve` process fed by the fleet simulator; committed
//!    readings/s with ack-after-durable, queue depths, and CPU by process.
//! 3. Latency: publish to websocket delta at half the sustained rate.
//! 4. The naive baseline (`bench/baselines/python_bridge.py`), fed the same way.
//! 5. The store: writer with rollups against raw COPY, history query latency (store_bench).
//! 6. The stream core: readings/s through windows, segment windows and the alert engine on
//!    one thread, 10,000 devices and 50 rules (stream_bench).
//! 7. Alert engine checkpoints (`--checkpoint` only): bytes, seconds and RSS of one
//!    checkpoint with 100,000 devices' state, incremental against the whole document
//!    (checkpoint_bench).
//! 8. Export over HTTP: raw readings as CSV and Parquet from PostgreSQL, rows/s and the
//!    server's peak RSS for 1M and 10M rows (export_bench).
//! 9. Synchronous replication (`--replication` only): commit latency and readings/s of
//!    the store against a primary with a hot standby, async against `on` and
//!    `remote_apply` (replication_bench).
//! 10. Scaling (full run only): two ingest processes on a shared subscription, and 1k,
//!     10k, 100k devices.
//! 11. Ingest replicas (`--replicas` only): 1, 2 and 3 ingest replicas with device affinity
//!     against one Mosquitto and a 3-node NATS cluster, readings/s and CPU (replicas_bench).
//!
//! Targets are reported as ratios, never asserted. `--quick` runs every stage briefly so CI
//! keeps the harness working.

mod baseline;
mod cadastre_bench;
mod checkpoint_bench;
mod e2e;
mod export_bench;
mod forecast_bench;
mod ideal;
mod intel_bench;
mod limits;
mod load;
mod measure;
mod pgstat;
mod replicas_bench;
mod replication_bench;
mod report;
mod store_bench;
mod stream_bench;
mod ws_bench;

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use sccr_tests::{workspace_root, TempDir};
use serde_json::{json, Value};
use telemetry::EventTime;

use crate::measure::round2;

pub(crate) struct Plan {
    pub(crate) quick: bool,
    pub(crate) broker_secs: u64,
    pub(crate) copy_rows: usize,
    e2e_secs: u64,
    /// End-to-end windows start and end just after a minute fold (every 15 s), so the
    /// database work they measure includes the fold of the readings they count.
    fold_aligned: bool,
    latency_samples: usize,
    baseline_secs: u64,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                broker_secs: 4,
                copy_rows: 100_000,
                e2e_secs: 8,
                fold_aligned: false,
                latency_samples: 100,
                baseline_secs: 8,
            }
        } else {
            Self {
                quick,
                broker_secs: 15,
                copy_rows: 1_000_000,
                e2e_secs: 30,
                fold_aligned: true,
                latency_samples: 500,
                baseline_secs: 20,
            }
        }
    }
}

/// The limits of this run and the load every pipeline is offered.
pub(crate) struct Limits {
    broker: Value,
    copy: Value,
    /// The lower of the broker's and `COPY`'s readings/s.
    lower: f64,
    /// Messages per second offered to each pipeline: 1.1 × what the broker carries.
    offered: f64,
    readings_per_msg: f64,
}

async fn limits(plan: &Plan, devices: usize) -> Result<Limits> {
    eprintln!("== 1a broker limit ({} s)", plan.broker_secs);
    let broker = limits::broker_limit(plan).await?;
    eprintln!("{broker}");
    eprintln!("== 1b COPY limit ({} rows)", plan.copy_rows);
    let copy = limits::copy_limit(plan, devices).await?;
    eprintln!("{copy}");
    let lower = broker["readings_per_s"]
        .as_f64()
        .unwrap_or(0.0)
        .min(copy["rows_per_s"].as_f64().unwrap_or(0.0));
    let offered = broker["msgs_per_s"].as_f64().unwrap_or(1000.0) * 1.1;
    let readings_per_msg = broker["readings_per_msg"].as_f64().unwrap_or(1.0).max(1.0);
    Ok(Limits { broker, copy, lower, offered, readings_per_msg })
}

/// The ratios the goals are judged by, with their inputs.
fn ratios(limits: &Limits, ideal: &Value, e2e: &Value, baseline: Option<&Value>) -> Value {
    let rate = e2e["readings_per_s"].as_f64().unwrap_or(0.0);
    let ratio = |of: Option<f64>| of.filter(|v| *v > 0.0).map(|v| round2(rate / v));
    let copy_cpu = limits.copy["postgres_cpu_us_per_row"].as_f64();
    let e2e_cpu = e2e["database"]["postgres_cpu_us_per_reading"].as_f64().or_else(|| {
        let cores = e2e["cpu"]["postgres_cores"].as_f64()?;
        Some(cores * 1e6 / rate.max(1.0))
    });
    json!({
        "end_to_end_vs_limit": ratio(Some(limits.lower)),
        "end_to_end_vs_ideal": ratio(ideal["readings_per_s"].as_f64()),
        "sccr_vs_baseline": ratio(baseline.and_then(|b| b["readings_per_s"].as_f64())),
        "postgres_cpu_per_reading_vs_copy": match (e2e_cpu, copy_cpu) {
            (Some(e), Some(c)) if c > 0.0 => Some(round2(e / c)),
            _ => None,
        },
        // The same two against a `COPY` of the end-to-end fleet's keys (`fleet_keys`).
        "end_to_end_vs_copy_fleet_keys": ratio(limits.copy["fleet_keys"]["rows_per_s"].as_f64()),
        "postgres_cpu_per_reading_vs_copy_fleet_keys": match (e2e_cpu, limits.copy["fleet_keys"]["postgres_cpu_us_per_row"].as_f64()) {
            (Some(e), Some(c)) if c > 0.0 => Some(round2(e / c)),
            _ => None,
        },
        // The ideal pipeline streams too (small batches, a commit each): the database work
        // any correct ingest needs per reading on this machine.
        "postgres_cpu_per_reading_vs_ideal": match (e2e_cpu, ideal["postgres_cpu_us_per_reading"].as_f64()) {
            (Some(e), Some(i)) if i > 0.0 => Some(round2(e / i)),
            _ => None,
        },
    })
}

/// Seconds each stage of a run took, in order (the full run is kept under 10 minutes).
struct Laps {
    last: Instant,
    laps: serde_json::Map<String, Value>,
}

impl Laps {
    fn new() -> Self {
        Self { last: Instant::now(), laps: serde_json::Map::new() }
    }

    fn lap(&mut self, stage: &str) {
        let now = Instant::now();
        self.laps.insert(stage.into(), json!(round2(now.duration_since(self.last).as_secs_f64())));
        self.last = now;
    }
}

async fn run(quick: bool) -> Result<()> {
    let plan = Plan::new(quick);
    let work = TempDir::new("bench")?;
    let started = Instant::now();
    let mut laps = Laps::new();
    eprintln!("== machine");
    let machine = report::machine().await;
    let lim = limits(&plan, limits::FLEET_DEVICES).await?;
    laps.lap("limits");
    eprintln!("== 1c ideal pipeline ({} s at {:.0} msg/s offered)", plan.e2e_secs, lim.offered);
    let ideal = ideal::run(limits::FLEET_DEVICES, lim.offered, plan.e2e_secs).await?;
    eprintln!("{ideal}");
    laps.lap("ideal");
    eprintln!("== 2 SCCR end to end ({} s at {:.0} msg/s offered)", plan.e2e_secs, lim.offered);
    let e2e = e2e::end_to_end(
        1,
        limits::FLEET_DEVICES,
        lim.offered,
        plan.e2e_secs,
        plan.fold_aligned,
        &work.path,
    )
    .await?;
    eprintln!("{e2e}");
    laps.lap("end_to_end");
    let sustained = e2e["readings_per_s"].as_f64().unwrap_or(0.0) / lim.readings_per_msg;
    eprintln!("== 3 latency ({} samples)", plan.latency_samples);
    let lat = e2e::latency(sustained, plan.latency_samples, &work.path).await?;
    eprintln!("{lat}");
    laps.lap("latency");
    eprintln!("== 4 naive baseline ({} s)", plan.baseline_secs);
    let base = baseline::baseline(lim.offered, plan.baseline_secs).await?;
    eprintln!("{base}");
    laps.lap("baseline");
    eprintln!("== 5 store");
    let store = store_bench::run(plan.quick).await?;
    eprintln!("{store}");
    laps.lap("store");
    eprintln!("== 6 stream core");
    let stream_core = stream_bench::run(plan.quick).await?;
    eprintln!("{stream_core}");
    laps.lap("stream");
    eprintln!("== 7 websocket fan-out");
    let websocket = ws_bench::run(plan.quick, &work.path).await?;
    eprintln!("{websocket}");
    laps.lap("websocket");
    eprintln!("== 8 export over HTTP");
    let export = export_bench::run(plan.quick).await?;
    eprintln!("{export}");
    laps.lap("export");
    eprintln!("== 8b Road Cadastre");
    let cadastre = cadastre_bench::run(plan.quick).await?;
    eprintln!("{cadastre}");
    laps.lap("cadastre");
    let mut scaling = Vec::new();
    if !plan.quick {
        eprintln!("== 9 scaling");
        scaling.push(e2e::end_to_end(2, 2_000, lim.offered, 20, false, &work.path).await?);
        eprintln!("{}", scaling.last().unwrap_or(&Value::Null));
        for devices in [1_000, 10_000, 100_000] {
            scaling.push(e2e::end_to_end(1, devices, lim.offered, 15, false, &work.path).await?);
            eprintln!("{}", scaling.last().unwrap_or(&Value::Null));
        }
        laps.lap("scaling");
    }
    let date = EventTime::now().to_rfc3339();
    let report = json!({
        "date": &date[..10],
        "quick": plan.quick,
        "machine": machine,
        "broker_limit": lim.broker,
        "copy_limit": lim.copy,
        "lower_limit_readings_per_s": lim.lower,
        "ideal": ideal,
        "end_to_end": e2e,
        "latency": lat,
        "baseline": base,
        "store": store,
        "stream": stream_core,
        "websocket": websocket,
        "export": export,
        "cadastre": cadastre,
        "scaling": scaling,
        "ratios": ratios(&lim, &ideal, &e2e, Some(&base)),
        "duration_s": started.elapsed().as_secs(),
        "stage_seconds": laps.laps,
    });
    let md = report::markdown(&report);
    println!("{md}");
    let dir = if plan.quick {
        workspace_root().join("target/bench-results")
    } else {
        workspace_root().join("bench/results")
    };
    std::fs::create_dir_all(&dir)?;
    let stem = format!("{}{}", &date[..10], if plan.quick { "-quick" } else { "" });
    std::fs::write(dir.join(format!("{stem}.md")), &md)?;
    std::fs::write(dir.join(format!("{stem}.json")), serde_json::to_string_pretty(&report)?)?;
    eprintln!(
        "written to {}/{stem}.{{md,json}} in {} s",
        dir.display(),
        started.elapsed().as_secs()
    );
    Ok(())
}

/// `--e2e`: the limits, the ideal pipeline and SCCR end to end, `rounds` times in turn (for
/// work on the pipeline, where one figure on a shared machine says little), as JSON.
async fn e2e_only(quick: bool, rounds: usize, devices: usize) -> Result<Value> {
    let plan = Plan::new(quick);
    let work = TempDir::new("bench-e2e")?;
    let mut runs = Vec::new();
    for round in 1..=rounds {
        eprintln!("== round {round}/{rounds}");
        let lim = limits(&plan, devices).await?;
        let ideal = ideal::run(devices, lim.offered, plan.e2e_secs).await?;
        eprintln!("   ideal {}", ideal["readings_per_s"]);
        let e2e =
            e2e::end_to_end(1, devices, lim.offered, plan.e2e_secs, plan.fold_aligned, &work.path)
                .await?;
        let ratios = ratios(&lim, &ideal, &e2e, None);
        eprintln!("   SCCR {} readings/s; {ratios}", e2e["readings_per_s"]);
        runs.push(json!({ "broker_limit": lim.broker, "copy_limit": lim.copy, "lower_limit_readings_per_s": lim.lower, "ideal": ideal, "end_to_end": e2e, "ratios": ratios }));
    }
    Ok(json!({ "runs": runs }))
}

/// Measure SCCR against this machine's broker and `COPY` limits and an ideal pipeline;
/// without a stage option, every stage in one run, written to bench/results/.
#[derive(Parser)]
#[command(name = "sccr-bench")]
struct Args {
    /// Every stage briefly (CI keeps the harness working; results in target/bench-results/).
    #[arg(long)]
    quick: bool,
    /// Only the store benchmark, as JSON.
    #[arg(long)]
    store: bool,
    /// Only the store writer against the COPY limit, three rounds, as JSON.
    #[arg(long)]
    store_writer: bool,
    /// Only the limits, the ideal pipeline and SCCR end to end, in rounds, as JSON.
    #[arg(long)]
    e2e: bool,
    /// Rounds of `--e2e`.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Simulated devices in `--e2e`.
    #[arg(long, default_value_t = 2_000)]
    devices: usize,
    /// Only the stream core benchmark, as JSON.
    #[arg(long)]
    stream: bool,
    /// Only the websocket fan-out benchmark, as JSON.
    #[arg(long)]
    ws: bool,
    /// Only the HTTP export benchmark, as JSON.
    #[arg(long)]
    export: bool,
    /// Only the alert engine checkpoint benchmark, as JSON.
    #[arg(long)]
    checkpoint: bool,
    /// Only the Road Cadastre benchmark (import of 25,000 segments, /api/v1/segments), as JSON.
    #[arg(long)]
    cadastre: bool,
    /// Only the traffic intelligence benchmark (baselines' cost, anomaly accuracy on the
    /// simulator), as JSON.
    #[arg(long)]
    intel: bool,
    /// Only the anomaly accuracy of `--intel`, with this much day-to-day speed variation
    /// added (a fraction, e.g. 0.25), as JSON.
    #[arg(long, value_name = "FRACTION")]
    intel_accuracy: Option<f64>,
    /// Only the learning from PostgreSQL of `--intel`, as JSON.
    #[arg(long)]
    intel_store: bool,
    /// Only the detector-health figures of `--intel` (false flags on the simulator's clean
    /// fortnight, injected faults), as JSON.
    #[arg(long)]
    intel_health: bool,
    /// Detectors of `--intel-store` (default 250; above 1,000 the slot sums are written
    /// instead of four weeks of minute rollups).
    #[arg(long, value_name = "N")]
    intel_detectors: Option<i64>,
    /// Only the cost of synchronous replication (async, on, remote_apply against a
    /// primary with a hot standby), `--rounds` times, as JSON.
    #[arg(long)]
    replication: bool,
    /// Only 1, 2 and 3 ingest replicas (device affinity) against one Mosquitto and a
    /// 3-node NATS cluster, `--devices` devices offered 50,000 messages/s, as JSON.
    #[arg(long)]
    replicas: bool,
    /// Print the markdown table of a saved JSON report.
    #[arg(long, value_name = "REPORT.json")]
    render: Option<std::path::PathBuf>,
    /// Run the ideal pipeline's bridge on broker PORT into DB_URL (started by the benchmark).
    #[arg(long, num_args = 2, value_names = ["PORT", "DB_URL"], hide = true)]
    ideal_bridge: Option<Vec<String>>,
    /// Run a websocket client fleet (started by the benchmark).
    #[arg(long, value_name = "JSON", hide = true)]
    ws_clients: Option<String>,
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.render {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        print!("{}", report::markdown(&serde_json::from_str(&text)?));
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let quick = args.quick;
    rt.block_on(async {
        if let Some(a) = &args.ideal_bridge {
            let port = a[0].parse().context("--ideal-bridge PORT")?;
            return ideal::bridge_main(port, &a[1]).await;
        }
        if let Some(spec) = &args.ws_clients {
            return ws_bench::clients_main(spec).await;
        }
        if args.e2e {
            return print_json(&e2e_only(quick, args.rounds.max(1), args.devices).await?);
        }
        if args.replicas {
            let work = TempDir::new("bench-replicas")?;
            let secs = if quick { 5 } else { 20 };
            return print_json(
                &replicas_bench::run(args.devices, 50_000.0, secs, &work.path).await?,
            );
        }
        if args.replication {
            return print_json(&replication_bench::run(quick, args.rounds.max(1)).await?);
        }
        if args.store_writer {
            return print_json(&store_bench::run_writer_only(quick, 3).await?);
        }
        if args.store {
            return print_json(&store_bench::run(quick).await?);
        }
        if args.stream {
            return print_json(&stream_bench::run(quick).await?);
        }
        if args.ws {
            let work = TempDir::new("bench-ws")?;
            return print_json(&ws_bench::run(quick, &work.path).await?);
        }
        if args.export {
            return print_json(&export_bench::run(quick).await?);
        }
        if args.cadastre {
            return print_json(&cadastre_bench::run(quick).await?);
        }
        if args.intel_health {
            return print_json(&intel_bench::health(quick)?);
        }
        if args.intel_store {
            return print_json(&intel_bench::from_store(quick, args.intel_detectors).await?);
        }
        if let Some(noise) = args.intel_accuracy {
            return print_json(&intel_bench::accuracy(quick, noise)?);
        }
        if args.intel {
            return print_json(&intel_bench::run(quick).await?);
        }
        if args.checkpoint {
            // The table goes to stderr, the JSON report to stdout.
            return print_json(&checkpoint_bench::run(quick).await?);
        }
        run(quick).await
    })
}
