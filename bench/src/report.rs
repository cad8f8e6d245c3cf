//! The report: the machine's description and the markdown table of a run.

use sccr_tests::TestDb;
use serde_json::{json, Value};

use crate::measure::round2;

pub(crate) fn command_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(if o.stdout.is_empty() { &o.stderr } else { &o.stdout })
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) async fn machine() -> Value {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    let mem_gib = mem_kib / 1024.0 / 1024.0;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_owned();
    let pg = match TestDb::create().await {
        Ok(db) => match sqlx::PgPool::connect(&db.url).await {
            Ok(pool) => sqlx::query_scalar::<_, String>("SHOW server_version")
                .fetch_one(&pool)
                .await
                .unwrap_or_default(),
            Err(_) => String::new(),
        },
        Err(_) => String::new(),
    };
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": round2(mem_gib),
        "kernel": command_line("uname", &["-r"]),
        "mosquitto": command_line("mosquitto", &["-h"]),
        "postgres": pg,
        "rustc": command_line("rustc", &["-V"]),
    })
}

pub(crate) fn markdown(r: &Value) -> String {
    let f = |v: &Value| match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    out.push_str(&format!(
        "# SCCR benchmark, {}{}\n\n",
        r["date"].as_str().unwrap_or(""),
        if r["quick"] == true { " (quick)" } else { "" }
    ));
    let m = &r["machine"];
    out.push_str(&format!(
        "Machine: {} cores ({}), {} GiB; {}; PostgreSQL {}; {}; kernel {}. Everything on loopback on this machine.\n\n",
        f(&m["cores"]), f(&m["cpu"]), f(&m["memory_gib"]), f(&m["mosquitto"]), f(&m["postgres"]), f(&m["rustc"]), f(&m["kernel"])
    ));
    out.push_str("| figure | measured | against | ratio | goal |\n|---|---|---|---|---|\n");
    let b = &r["broker_limit"];
    let c = &r["copy_limit"];
    let e = &r["end_to_end"];
    let lim = r["lower_limit_readings_per_s"].as_f64().unwrap_or(0.0);
    out.push_str(&format!("| broker limit, QoS 1, 1 subscriber | {} msg/s = {} readings/s ({} shed by the broker's queue limit under overload) | | | |\n", f(&b["msgs_per_s"]), f(&b["readings_per_s"]), f(&b["shed_by_broker_queue_limit"])));
    out.push_str(&format!(
        "| `COPY` limit, 5,000-row batches, 10 devices' keys | {} rows/s; PostgreSQL {} µs CPU per row | | | |\n",
        f(&c["rows_per_s"]), f(&c["postgres_cpu_us_per_row"])
    ));
    let ck = &c["fleet_keys"];
    if ck.is_object() {
        out.push_str(&format!(
            "| `COPY` limit on the end-to-end fleet's keys ({} devices; binary, the ideal pipeline's table, a commit per batch) | {} rows/s; PostgreSQL {} µs CPU per row ({}) | | | |\n",
            f(&ck["devices"]), f(&ck["rows_per_s"]), f(&ck["postgres_cpu_us_per_row"]), by_kind(&ck["postgres_cpu_us_per_row_by_kind"])
        ));
    }
    let i = &r["ideal"];
    if i.is_object() {
        out.push_str(&format!(
            "| ideal pipeline: minimal Rust bridge, QoS 1, ack after commit, binary `COPY`, same key, nothing else | {} readings/s; PostgreSQL {} µs CPU per reading ({}) | | | |\n",
            f(&i["readings_per_s"]), f(&i["postgres_cpu_us_per_reading"]), by_kind(&i["database"]["postgres_cpu_us_per_reading_by_kind"])
        ));
    }
    out.push_str(&format!(
        "| SCCR end to end, committed, ack after durable | {} readings/s | lower limit {} | {} | ≥ 0.6 |\n",
        f(&e["readings_per_s"]), lim, f(&r["ratios"]["end_to_end_vs_limit"])
    ));
    if ck.is_object() {
        out.push_str(&format!(
            "| the same against the `COPY` limit on the fleet's keys | {} readings/s | {} | {} | ≥ 0.6 |\n",
            f(&e["readings_per_s"]), f(&ck["rows_per_s"]), f(&r["ratios"]["end_to_end_vs_copy_fleet_keys"])
        ));
    }
    if i.is_object() {
        out.push_str(&format!(
            "| SCCR end to end against the ideal pipeline | {} readings/s | ideal {} | {} | ≥ 0.8 |\n",
            f(&e["readings_per_s"]), f(&i["readings_per_s"]), f(&r["ratios"]["end_to_end_vs_ideal"])
        ));
    }
    let pg_e2e = &e["database"]["postgres_cpu_us_per_reading"];
    if !pg_e2e.is_null() {
        out.push_str(&format!(
            "| PostgreSQL CPU per stored reading, end to end | {} µs | `COPY` limit run {} µs per row | {} | ≤ 1.5 |\n",
            f(pg_e2e), f(&c["postgres_cpu_us_per_row"]), f(&r["ratios"]["postgres_cpu_per_reading_vs_copy"])
        ));
        if ck.is_object() {
            out.push_str(&format!(
                "| the same against the `COPY` limit on the fleet's keys | {} µs | {} µs per row | {} | ≤ 1.5 |\n",
                f(pg_e2e), f(&ck["postgres_cpu_us_per_row"]), f(&r["ratios"]["postgres_cpu_per_reading_vs_copy_fleet_keys"])
            ));
        }
        out.push_str(&format!(
            "| the same against the ideal pipeline's | {} µs | ideal {} µs per reading | {} | |\n",
            f(pg_e2e),
            f(&i["postgres_cpu_us_per_reading"]),
            f(&r["ratios"]["postgres_cpu_per_reading_vs_ideal"])
        ));
    }
    let l = &r["latency"];
    out.push_str(&format!(
        "| publish → websocket at half that rate | p50 {} ms, p95 {} ms, p99 {} ms | | | p99 < 50 ms |\n",
        f(&l["p50_ms"]), f(&l["p95_ms"]), f(&l["p99_ms"])
    ));
    out.push_str(&format!(
        "| naive Python bridge, same load | {} readings/s | SCCR | {} | SCCR ≥ 10× |\n",
        f(&r["baseline"]["readings_per_s"]),
        f(&r["ratios"]["sccr_vs_baseline"])
    ));
    let s = &r["store"];
    out.push_str(&format!(
        "| store writer with 1m/1h/1d rollups (binary COPY + rollup merger) | {} rows/s (batch p50 {} ms) | binary `COPY` into `readings` {} rows/s | {} | ≥ 0.7 |\n",
        f(&s["writer"]["rows_per_s"]), f(&s["writer"]["batch_p50_ms"]), f(&s["copy_limit_rows_per_s"]), f(&s["writer_vs_limit"])
    ));
    if s["late"].is_object() {
        out.push_str(&format!(
            "| the same with readings an hour old (stored hourly and daily rows updated by every merge) | {} rows/s | {} rows/s | {} | |\n",
            f(&s["late"]["writer"]["rows_per_s"]), f(&s["late"]["copy_limit_rows_per_s"]), f(&s["late"]["writer_vs_limit"])
        ));
    }
    let h = &s["history"];
    for (name, key) in [("one segment", "segment_30d_hourly"), ("whole city", "city_30d_hourly")] {
        out.push_str(&format!(
            "| history, 30 days hourly, {name}, over {} raw readings | p50 {} ms, p95 {} ms ({} points, {} readings) | | | < 50 ms |\n",
            f(&h["raw_readings"]), f(&h[key]["p50_ms"]), f(&h[key]["p95_ms"]), f(&h[key]["points"]), f(&h[key]["readings_covered"])
        ));
    }
    let api = &h["api"];
    if api.is_object() {
        out.push_str(&format!(
            "| history API (HTTP, token, JSON), 30 days hourly | one segment p50 {} ms, p95 {} ms; whole city p50 {} ms, p95 {} ms | | | < 50 ms |\n",
            f(&api["segment_30d_hourly"]["p50_ms"]), f(&api["segment_30d_hourly"]["p95_ms"]), f(&api["city_30d_hourly"]["p50_ms"]), f(&api["city_30d_hourly"]["p95_ms"])
        ));
    }
    let w = &r["websocket"];
    if let Some(rounds) = w["rounds"].as_array() {
        let each: Vec<String> = rounds
            .iter()
            .map(|x| {
                format!(
                    "p50 {} / p95 {} / p99 {} ms (max {}), {} frames/s, server {} cores, clients {} cores, other work on the machine {} cores, {} stream steps over 25 ms",
                    f(&x["p50_ms"]),
                    f(&x["p95_ms"]),
                    f(&x["p99_ms"]),
                    f(&x["max_ms"]),
                    f(&x["frames_per_s"]),
                    f(&x["cpu"]["sccr_cores"]),
                    f(&x["client_fleet_cores"]),
                    f(&x["other_cores"]),
                    f(&x["stream_steps_over_25_ms"])
                )
            })
            .collect();
        out.push_str(&format!(
            "| websocket fan-out: {} clients (own process) on one server, each on one of {} segments, {} background readings/s, {} rounds | {}; server RSS {} MiB with clients, peak {} MiB | | worst p99 {} ms | p99 < 20 ms in each |\n",
            f(&w["clients"]), f(&w["segments"]), f(&w["background_readings_per_s"]), rounds.len(), each.join("; "),
            f(&w["server_rss_mib"]["with_clients"]), f(&w["server_rss_mib"]["peak_under_load"]), f(&w["p99_ms"]["worst"])
        ));
    } else if w.is_object() {
        out.push_str(&format!(
            "| websocket fan-out: {} clients on one server, each on one of {} segments, {} background readings/s | publish→screen p50 {} ms, p95 {} ms, p99 {} ms ({} samples, {} of expected); {} frames/s; server RSS {} MiB with clients, peak {} MiB; server CPU {} cores | | | p99 < 50 ms |\n",
            f(&w["clients"]), f(&w["segments"]), f(&w["background_readings_per_s"]), f(&w["p50_ms"]), f(&w["p95_ms"]), f(&w["p99_ms"]), f(&w["samples"]), f(&w["delivered_ratio"]),
            f(&w["frames_per_s"]), f(&w["server_rss_mib"]["with_clients"]), f(&w["server_rss_mib"]["peak_under_load"]), f(&w["cpu"]["sccr_cores"])
        ));
    }
    let st = &r["stream"];
    out.push_str(&format!(
        "| stream core on one thread: device windows + segment windows/LOS + alert engine, {} devices, {} rules | {} readings/s ({} readings in {} s) | goal {} | {} | > 1M readings/s |\n",
        f(&st["devices"]), f(&st["rules"]), f(&st["readings_per_s"]), f(&st["readings"]), f(&st["seconds"]), f(&st["goal_readings_per_s"]), f(&st["vs_goal"])
    ));
    // Readings per core of the process between broker and database: the bridge is bound by
    // its one Python core, SCCR by the machine the broker and PostgreSQL share with it.
    let per_core = |rate: &Value, cores: &Value| match (rate.as_f64(), cores.as_f64()) {
        (Some(r), Some(c)) if c > 0.0 => Some(r / c),
        _ => None,
    };
    if let (Some(sccr), Some(bridge)) = (
        per_core(&e["readings_per_s"], &e["cpu"]["sccr_cores"]),
        per_core(&r["baseline"]["readings_per_s"], &r["baseline"]["cpu"]["bridge_cores"]),
    ) {
        out.push_str(&format!(
            "| readings per core of the bridging process (end to end vs baseline runs) | SCCR {} readings/s per core | Python bridge {} | {} | |\n",
            round2(sccr).round(),
            round2(bridge).round(),
            round2(sccr / bridge)
        ));
    }
    if let Some(rows) = r["export"]["exports"].as_array() {
        for x in rows {
            out.push_str(&format!(
                "| export over HTTP, {} rows as {} | {} rows/s, {} MB, server RSS {} → {} MiB peak | | | memory bounded |\n",
                f(&x["rows"]), x["format"].as_str().unwrap_or("?"), f(&x["rows_per_s"]), f(&x["mb"]), f(&x["server_rss_before_mib"]), f(&x["server_peak_rss_mib"])
            ));
        }
    }
    let c = &r["cadastre"];
    if c.is_object() {
        out.push_str(&format!(
            "| Road Cadastre import, {} segments ({} MiB, {}) | {} s; unchanged re-import with {} devices to link {} s | < {} s | | |\n",
            f(&c["segments"]), f(&c["file_mib"]), c["crs"].as_str().unwrap_or("?"), f(&c["import_s"]), f(&c["devices"]), f(&c["reimport_unchanged_s"]), f(&c["goal_import_s"])
        ));
        for a in c["segments_api"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "| GET {} | p50 {} ms, p95 {} ms; {} features, {} KiB | | | |\n",
                a["path"].as_str().unwrap_or("?"),
                f(&a["p50_ms"]),
                f(&a["p95_ms"]),
                f(&a["features"]),
                f(&a["kb"])
            ));
        }
    }
    if let Some(rows) = r["scaling"].as_array() {
        for s in rows {
            out.push_str(&format!(
                "| scaling: {} ingest, {} devices | {} readings/s, sccr RSS {} MiB ({} KiB per device); PostgreSQL {} µs CPU per reading | | | |\n",
                f(&s["instances"]),
                f(&s["devices"]),
                f(&s["readings_per_s"]),
                f(&s["sccr_rss_mib"]),
                f(&s["sccr_rss_kib_per_device"]),
                f(&s["database"]["postgres_cpu_us_per_reading"])
            ));
        }
    }
    out.push_str(&format!(
        "\nEnd to end, by stage: CPU cores used {}; writer queue depth (messages) {}; readings pending commit {}; stream queue depth {}; last batch {} readings in {} ms.\n",
        e["cpu"], e["writer_queue_depth"], e["pending_readings"], e["stream_queue_depth"], f(&e["last_batch_readings"]), f(&e["last_flush_ms"])
    ));
    out.push_str(&format!(
        "Broker limit run, CPU: {}. Ideal pipeline run, CPU: {}. Baseline run, CPU: {}.\n",
        b["cpu"], r["ideal"]["cpu"], r["baseline"]["cpu"]
    ));
    out.push_str(&format!(
        "The run took {} s; seconds by stage: {}.\n",
        f(&r["duration_s"]),
        r["stage_seconds"]
    ));
    out.push_str(&database_breakdown("SCCR end to end, 2,000 devices", &e["database"]));
    out.push_str(&database_breakdown("the ideal pipeline, 2,000 devices", &r["ideal"]["database"]));
    for s in r["scaling"].as_array().into_iter().flatten() {
        if s["instances"] == 1 && (s["devices"] == 1_000 || s["devices"] == 100_000) {
            let name = format!("SCCR end to end, {} devices", f(&s["devices"]));
            out.push_str(&database_breakdown(&name, &s["database"]));
        }
    }
    out
}

/// The database's work per stored reading of one run, by statement (pgstat.rs).
fn database_breakdown(name: &str, d: &Value) -> String {
    let f = |v: &Value| match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => "—".into(),
    };
    if let Some(why) = d["unavailable"].as_str() {
        return format!("\nDatabase work per stored reading, {name}: unavailable ({why}).\n");
    }
    if !d.is_object() {
        return String::new();
    }
    let mut out = format!(
        "\n### Database work per stored reading: {name}\n\n{} readings stored in the window; PostgreSQL CPU {} µs per reading (every server process: {}); statements' execution time {} µs per reading (time in the server, waits included, on several connections at once); WAL {} bytes, {} records and {} full-page images per reading.\n\n| statement | calls | time µs/reading | WAL bytes/reading | rows/call | buffers/reading |\n|---|---|---|---|---|---|\n",
        f(&d["readings"]), f(&d["postgres_cpu_us_per_reading"]), by_kind(&d["postgres_cpu_us_per_reading_by_kind"]), f(&d["statement_exec_us_per_reading"]), f(&d["wal_bytes_per_reading"]), f(&d["wal_records_per_reading"]), f(&d["wal_full_page_images_per_reading"])
    );
    for st in d["statements"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            st["statement"].as_str().unwrap_or("?").replace('|', "\\|"),
            f(&st["calls"]),
            f(&st["exec_us_per_reading"]),
            f(&st["wal_bytes_per_reading"]),
            f(&st["rows_per_call"]),
            f(&st["blocks_per_reading"])
        ));
    }
    out
}

/// CPU by kind of PostgreSQL process (`measure::pg_cpu`), largest first: "backends 5.1, …".
pub(crate) fn by_kind(v: &Value) -> String {
    let mut kinds: Vec<(&String, f64)> =
        v.as_object().into_iter().flatten().filter_map(|(k, v)| Some((k, v.as_f64()?))).collect();
    kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
    kinds.iter().map(|(k, v)| format!("{} {v}", k.replace('_', " "))).collect::<Vec<_>>().join(", ")
}
