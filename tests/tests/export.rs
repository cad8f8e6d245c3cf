//! `sccr export` end to end: known readings in a PostgreSQL database, the real binary
//! writing Hive-style partitions, and pyarrow, pandas and DuckDB (PyPI, in a venv made by
//! `python_venv` of the testkit) reading every file back, and the whole folder through the
//! snippets of docs/export.md (run by `tests/python/export_readers.py`); values and row
//! counts per partition are checked against the database, and so are the API's exports
//! read with pandas. The folder policy (a manifest, refusing a second export unless
//! `--replace`, never deleting other files, all or nothing) is checked file by file.
//! Without python and the packages the tests are skipped loudly, and fail under CI=true.
//!
//! Over 600 lines: one end-to-end suite of one command and its readers, sharing the
//! seeded database and the read-back helpers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sccr_tests::{workspace_bin, workspace_root, TempDir, TestDb};
use serde_json::Value;
use sqlx::Row;
use store::{Batch, Store, StoreOptions};
use telemetry::{DeviceId, EventTime, MetricId, Reading};

/// 2025-11-23T22:00:00Z: the readings cross midnight, so each metric has two dates.
const BASE: i64 = 1_763_935_200_000;
const STEP: i64 = 600_000;
const PER_SERIES: i64 = 36;
const DEVICES: [&str; 3] = ["loop-1", "loop-2", "loop-3"];
const METRICS: [MetricId; 2] = [MetricId::SpeedKmh, MetricId::VehicleCount];

/// Reads every exported file with pyarrow; prints one JSON object per file: its path
/// relative to the root, its column names and its rows (times as Unix ms). The manifest
/// (`_sccr_export.json`) is left to the tests.
const READER: &str = r#"
import json, os, sys
import pyarrow as pa, pyarrow.csv as pcsv, pyarrow.ipc as ipc, pyarrow.parquet as pq
root = sys.argv[1]
ts = pa.timestamp("ms", tz="UTC")
csv_types = {"time": ts, "bucket": ts, "device": pa.string(), "seq": pa.int64(), "count": pa.int64()}
out = []
for dirpath, _, files in os.walk(root):
    for name in sorted(files):
        path = os.path.join(dirpath, name)
        if name == "_sccr_export.json" and dirpath == root:
            continue
        if name.endswith(".parquet"):
            table = pq.ParquetFile(path).read()
        elif name.endswith(".arrow"):
            table = ipc.open_file(path).read_all()
        elif name.endswith(".csv"):
            table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types=csv_types))
        else:
            out.append({"path": os.path.relpath(path, root), "unexpected": True})
            continue
        cols = []
        for field, col in zip(table.schema, table.columns):
            if pa.types.is_timestamp(field.type):
                assert str(field.type.tz) == "UTC", field
                col = col.cast(ts).cast(pa.int64())
            cols.append(col.to_pylist())
        out.append({"path": os.path.relpath(path, root), "columns": table.schema.names,
                    "types": [str(f.type) for f in table.schema], "rows": [list(r) for r in zip(*cols)]})
if any(name.endswith(".parquet") for _, _, names in os.walk(root) for name in names):
    import pyarrow.dataset as ds
    whole = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    out.append({"dataset_rows": whole.num_rows, "dataset_columns": whole.schema.names})
print(json.dumps(out))
"#;

/// Python with pyarrow, pandas and DuckDB (pinned releases for Python 3.11).
fn pyarrow() -> Option<PathBuf> {
    let packages = ["pyarrow==22.0.0", "pandas==3.1.1", "duckdb==2.0.1"];
    match sccr_tests::python_venv("py-export", &packages, "pyarrow, pandas, duckdb") {
        Some(venv) => Some(venv.join("bin/python")),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and python with pyarrow, pandas and duckdb could not be set up")
        }
        None => {
            eprintln!(
                "!!! export tests SKIPPED: python3 with venv, or pyarrow, pandas and duckdb from PyPI, is unavailable"
            );
            None
        }
    }
}

fn readings() -> Vec<Reading> {
    let mut out = Vec::new();
    for (d, device) in DEVICES.iter().enumerate() {
        for metric in METRICS {
            for i in 0..PER_SERIES {
                out.push(Reading {
                    device: DeviceId::parse(device).expect("device id"),
                    metric,
                    time: EventTime(BASE + i * STEP + d as i64 * 1_000),
                    value: match metric {
                        MetricId::VehicleCount => ((i * 7 + d as i64) % 23) as f64,
                        _ => 30.0 + i as f64 * 0.25 + d as f64,
                    },
                    // loop-3 sends no sequence numbers: the column holds nulls.
                    seq: (d < 2).then_some(telemetry::Seq(i as u64 + 1)),
                });
            }
        }
    }
    out
}

async fn seeded() -> (TestDb, Store, PathBuf, TempDir) {
    let db = TestDb::create().await.expect("test database");
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let devices: Vec<DeviceId> =
        DEVICES.iter().map(|d| DeviceId::parse(d).expect("device id")).collect();
    let readings = readings();
    // Several batches, as the writer would commit them.
    for chunk in readings.chunks(50) {
        store
            .write_batch(&Batch {
                readings: chunk.to_vec(),
                new_devices: devices.clone(),
                ..Batch::default()
            })
            .await
            .expect("write");
    }
    store.catch_up_rollups().await.expect("merge rollups");
    let dir = TempDir::new("export").expect("temp dir");
    let config = dir.path.join("sccr.toml");
    std::fs::write(&config, format!("[database]\nurl = \"{}\"\n", db.url)).expect("config");
    (db, store, config, dir)
}

/// Rows of the database as the export should hold them, by partition `metric=…/date=…`,
/// each row as JSON values in column order (times in Unix ms; `metric` is in the path).
async fn expected(
    store: &Store,
    resolution: &str,
    metric: Option<&str>,
    device: Option<&str>,
) -> BTreeMap<String, Vec<Vec<Value>>> {
    let Store::Postgres(pg) = store else { panic!("postgres store") };
    let sql = match resolution {
        "raw" => "SELECT (extract(epoch FROM time) * 1000)::int8 AS t, device, metric, value, seq,
                         to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS date
                  FROM readings WHERE ($1::text IS NULL OR metric = $1) AND ($2::text IS NULL OR device = $2)",
        _ => "SELECT (extract(epoch FROM bucket) * 1000)::int8 AS t, device, metric, count, sum, min, max, last_value,
                     to_char(bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS date
              FROM rollup_1h WHERE ($1::text IS NULL OR metric = $1) AND ($2::text IS NULL OR device = $2)",
    };
    let rows =
        sqlx::query(sql).bind(metric).bind(device).fetch_all(pg.pool()).await.expect("query");
    let mut out: BTreeMap<String, Vec<Vec<Value>>> = BTreeMap::new();
    for r in rows {
        let key =
            format!("metric={}/date={}", r.get::<String, _>("metric"), r.get::<String, _>("date"));
        let mut row =
            vec![Value::from(r.get::<i64, _>("t")), Value::from(r.get::<String, _>("device"))];
        if resolution == "raw" {
            row.push(Value::from(r.get::<f64, _>("value")));
            row.push(r.get::<Option<i64>, _>("seq").map_or(Value::Null, Value::from));
        } else {
            let (count, sum) = (r.get::<i64, _>("count"), r.get::<f64, _>("sum"));
            row.extend([Value::from(count), Value::from(sum)]);
            row.extend(
                [r.get::<f64, _>("min"), r.get::<f64, _>("max"), r.get::<f64, _>("last_value")]
                    .map(Value::from),
            );
            row.push(Value::from(sum / count as f64));
        }
        out.entry(key).or_default().push(row);
    }
    for rows in out.values_mut() {
        rows.sort_by_key(|r| (r[0].as_i64(), r[1].as_str().map(str::to_owned)));
    }
    out
}

/// `sccr export` into `out` of the seeded days (plain dates: 00:00 UTC) unless `extra`
/// gives `--from` or `--to`, with `extra` arguments; (success, stdout, stderr).
fn try_export(config: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(workspace_bin("sccr").expect("sccr binary"));
    cmd.arg("export").arg("--config").arg(config).arg("--out").arg(out);
    for (flag, default) in [("--from", "2025-11-23"), ("--to", "2025-11-25")] {
        if !extra.contains(&flag) {
            cmd.args([flag, default]);
        }
    }
    cmd.args(extra)
        // Only the config file: nothing SCCR_… from the suite's own environment.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn");
    let o = cmd.output().expect("run sccr export");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (o.status.success(), text(&o.stdout), text(&o.stderr))
}

fn run_export(config: &Path, out: &Path, extra: &[&str]) -> String {
    let (ok, stdout, stderr) = try_export(config, out, extra);
    assert!(ok, "sccr export {extra:?} failed:\n{stdout}\n{stderr}");
    // Not a terminal: progress, if any, is plain lines.
    assert!(!stderr.contains('\r'), "no bar redraws off a terminal");
    stdout
}

/// An export that must be refused, with a message containing `needle`.
fn refused_export(config: &Path, out: &Path, extra: &[&str], needle: &str) -> String {
    let (ok, stdout, stderr) = try_export(config, out, extra);
    assert!(!ok, "sccr export {extra:?} into {} was not refused:\n{stdout}", out.display());
    assert!(stderr.contains(needle), "{extra:?}: {needle:?} not in:\n{stderr}");
    stderr
}

/// Every path under `dir` (relative, sorted) with the bytes of each file.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read dir") {
            let path = e.expect("entry").path();
            let rel = path.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
            if path.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(root, &path, out);
            } else {
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn manifest(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("_sccr_export.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest JSON")
}

/// By partition directory: (file names, column names, rows).
type ReadBack = BTreeMap<String, (Vec<String>, Vec<String>, Vec<Vec<Value>>)>;

/// What pyarrow read, by partition directory: (file names, rows sorted by time, device).
fn read_back(python: &Path, dir: &Path) -> ReadBack {
    let o = Command::new(python).arg("-c").arg(READER).arg(dir).output().expect("run python");
    assert!(
        o.status.success(),
        "pyarrow could not read the export: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let files: Vec<Value> = serde_json::from_slice(&o.stdout).expect("reader output");
    let mut out: ReadBack = BTreeMap::new();
    for f in files {
        if let Some(n) = f.get("dataset_rows") {
            // The directory read as one Hive-partitioned dataset: every row, the partition
            // keys as columns.
            let want: usize = out.values().map(|(_, _, rows)| rows.len()).sum();
            assert_eq!(n.as_u64(), Some(want as u64), "{f}");
            let cols = f["dataset_columns"].as_array().expect("columns");
            assert!(
                cols.contains(&Value::from("metric")) && cols.contains(&Value::from("date")),
                "{f}"
            );
            continue;
        }
        let path = f["path"].as_str().expect("path").to_owned();
        assert!(
            f.get("unexpected").is_none(),
            "stray file in the export: {path} (temporary files must be renamed)"
        );
        let (part, file) = path.rsplit_once('/').expect("partition path");
        let columns: Vec<String> = f["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c.as_str().unwrap_or("").to_owned())
            .collect();
        let entry = out.entry(part.to_owned()).or_default();
        entry.0.push(file.to_owned());
        entry.1 = columns;
        entry.2.extend(
            f["rows"].as_array().expect("rows").iter().map(|r| r.as_array().expect("row").clone()),
        );
    }
    for (_, _, rows) in out.values_mut() {
        rows.sort_by_key(|r| (r[0].as_i64(), r[1].as_str().map(str::to_owned)));
    }
    out
}

fn check(got: &ReadBack, want: &BTreeMap<String, Vec<Vec<Value>>>, format: &str, columns: &[&str]) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "partitions ({format})"
    );
    for (part, rows) in want {
        let (files, cols, got_rows) = &got[part];
        assert_eq!(files, &vec![format!("part-0.{format}")], "{part}");
        assert_eq!(cols, &columns.iter().map(|c| c.to_string()).collect::<Vec<_>>(), "{part}");
        assert_eq!(got_rows.len(), rows.len(), "row count of {part} ({format})");
        for (g, w) in got_rows.iter().zip(rows) {
            assert_eq!(g.len(), w.len(), "{part}: {g:?} vs {w:?}");
            for (gv, wv) in g.iter().zip(w) {
                let same = match (gv.as_f64(), wv.as_f64()) {
                    (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                    _ => gv == wv,
                };
                assert!(same, "{part} ({format}): exported {g:?}, database {w:?}");
            }
        }
    }
}

const RAW_COLUMNS: [&str; 4] = ["time", "device", "value", "seq"];
const ROLLUP_COLUMNS: [&str; 8] = ["bucket", "device", "count", "sum", "min", "max", "last", "avg"];

#[tokio::test]
async fn raw_and_hourly_exports_read_back_with_pyarrow_match_the_database() {
    let Some(python) = pyarrow() else { return };
    let (_db, store, config, dir) = seeded().await;
    let raw = expected(&store, "raw", None, None).await;
    assert_eq!(raw.len(), 4, "two metrics on two dates: {:?}", raw.keys());
    assert_eq!(raw["metric=speed_kmh/date=2025-11-23"].len(), 3 * 12);
    assert_eq!(raw["metric=vehicle_count/date=2025-11-24"].len(), 3 * 24);
    let hourly = expected(&store, "1h", None, None).await;
    assert_eq!(hourly["metric=speed_kmh/date=2025-11-23"].len(), 3 * 2);
    assert_eq!(
        hourly["metric=speed_kmh/date=2025-11-23"][0][2],
        Value::from(6),
        "six readings per hour"
    );
    // Relative times, as the API takes them: the last ten years hold the same rows.
    let out = dir.path.join("relative");
    let summary = run_export(&config, &out, &["--from", "-3650d", "--to", "now"]);
    assert!(summary.contains(&format!("exported {} rows", 3 * 2 * PER_SERIES)), "{summary}");
    check(&read_back(&python, &out), &raw, "parquet", &RAW_COLUMNS);
    for format in ["parquet", "csv", "arrow"] {
        let out = dir.path.join(format!("raw-{format}"));
        let summary = run_export(&config, &out, &["--format", format]);
        assert!(
            summary.contains(&format!("exported {} rows in 4 files", 3 * 2 * PER_SERIES)),
            "{summary}"
        );
        check(&read_back(&python, &out), &raw, format, &RAW_COLUMNS);
        let m = manifest(&out);
        assert_eq!(
            (&m["sccr_export"], &m["format"], &m["rows"], &m["query"]["from"], &m["query"]["to"]),
            (
                &Value::from(1),
                &Value::from(format),
                &Value::from(3 * 2 * PER_SERIES),
                &Value::from("2025-11-23T00:00:00Z"),
                &Value::from("2025-11-25T00:00:00Z")
            ),
            "{m}"
        );
        let files = m["files"].as_array().expect("files");
        assert_eq!(files.len(), 4, "{m}");
        assert_eq!(
            files[0]["path"],
            Value::from(format!("metric=speed_kmh/date=2025-11-23/part-0.{format}")),
            "{m}"
        );
        assert_eq!(m["partition_columns"], serde_json::json!(["metric", "date"]));
        let columns: Vec<&str> =
            m["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(columns, RAW_COLUMNS);

        let out = dir.path.join(format!("hourly-{format}"));
        let summary = run_export(&config, &out, &["--format", format, "--resolution", "1h"]);
        assert!(summary.contains(&format!("exported {} rows in 4 files", 3 * 2 * 6)), "{summary}");
        check(&read_back(&python, &out), &hourly, format, &ROLLUP_COLUMNS);
    }
}

/// A folder holds one export: a second one is refused, `--replace` replaces it, and no
/// file an export did not write is ever removed.
#[tokio::test]
async fn a_second_export_is_refused_unless_replaced_and_other_files_are_never_touched() {
    let Some(python) = pyarrow() else { return };
    let (_db, store, config, dir) = seeded().await;
    let out = dir.path.join("filtered");
    let args = ["--format", "parquet", "--metric", "speed_kmh", "--device", "loop-2"];
    let summary = run_export(&config, &out, &args);
    assert!(summary.contains(&format!("exported {PER_SERIES} rows in 2 files")), "{summary}");
    let want = expected(&store, "raw", Some("speed_kmh"), Some("loop-2")).await;
    check(&read_back(&python, &out), &want, "parquet", &RAW_COLUMNS);
    let before = snapshot(&out);

    // Again into the same folder: every row would be there twice.
    let e = refused_export(&config, &out, &args, "already holds an sccr export");
    assert!(e.contains("--replace") && e.contains(&format!("{PER_SERIES} rows in 2 files")), "{e}");
    assert_eq!(snapshot(&out), before, "a refused export changes nothing");

    // --replace: the folder now holds the new export only.
    let replace =
        ["--format", "csv", "--metric", "vehicle_count", "--device", "loop-2", "--replace"];
    let summary = run_export(&config, &out, &replace);
    assert!(summary.contains(&format!("replaced an export of {PER_SERIES} rows")), "{summary}");
    let want = expected(&store, "raw", Some("vehicle_count"), Some("loop-2")).await;
    check(&read_back(&python, &out), &want, "csv", &RAW_COLUMNS);
    assert_eq!(manifest(&out)["query"]["metrics"], serde_json::json!(["vehicle_count"]));
    assert!(!out.join("metric=speed_kmh").exists(), "the earlier partitions are gone");

    // A file the export did not write: refused, --replace or not, and kept.
    std::fs::write(out.join("notes.txt"), "the planner's notes").unwrap();
    let before = snapshot(&out);
    for extra in [&replace[..], &args[..]] {
        let e = refused_export(&config, &out, extra, "notes.txt");
        assert!(e.contains("never deletes"), "{e}");
    }
    assert_eq!(snapshot(&out), before);
    // A folder that holds no export at all.
    let other = dir.path.join("other");
    std::fs::create_dir_all(other.join("sub")).unwrap();
    std::fs::write(other.join("sub/data.parquet"), "not ours").unwrap();
    let before = snapshot(&other);
    refused_export(&config, &other, &replace, "holds no sccr export");
    assert_eq!(snapshot(&other), before);

    // A staging folder left behind (an export running, or one killed): said so, and kept.
    let empty = dir.path.join("empty");
    std::fs::create_dir_all(empty.join(".sccr-export-staging")).unwrap();
    refused_export(&config, &empty, &args, ".sccr-export-staging exists");
    std::fs::remove_dir(empty.join(".sccr-export-staging")).unwrap();
    run_export(&config, &empty, &args);

    // Unknown subjects are named; the folder is not created.
    let ghost = dir.path.join("ghost");
    refused_export(&config, &ghost, &["--device", "loop-77"], "--device loop-77: no such device");
    refused_export(&config, &ghost, &["--segment", "ponte-vecchio"], "--segment ponte-vecchio");
    assert!(!ghost.exists());
    let Store::Postgres(pg) = &store else { panic!("postgres") };
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(pg.pool())
        .await
        .expect("count");
    assert_eq!(n, 3 * 2 * PER_SERIES, "export changes nothing in the database");
}

/// `sh -c` running `sccr export` where the disk refuses writes over a kilobyte (as a full
/// disk would: `ulimit -f 1` with SIGXFSZ ignored, so a write fails with EFBIG).
fn export_on_a_full_disk(config: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let sccr = workspace_bin("sccr").expect("sccr binary");
    let o = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1; exec \"$@\"")
        .arg("sh")
        .arg(sccr)
        .args(["export", "--config"])
        .arg(config)
        .args(["--from", "2025-11-23", "--to", "2025-11-25", "--format", "csv", "--out"])
        .arg(out)
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sh");
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// An export that fails half way leaves the folder as it was: a new folder is not left
/// behind, an earlier export under --replace is kept whole.
#[tokio::test]
async fn a_failed_export_leaves_the_folder_as_it_was() {
    let (_db, _store, config, dir) = seeded().await;
    let out = dir.path.join("new");
    let (ok, stderr) = export_on_a_full_disk(&config, &out, &[]);
    assert!(!ok && stderr.contains("too large"), "{stderr}");
    assert!(!out.exists(), "a failed export into a new folder leaves none");

    let kept = dir.path.join("kept");
    run_export(&config, &kept, &["--metric", "speed_kmh", "--device", "loop-1"]);
    let before = snapshot(&kept);
    let (ok, stderr) = export_on_a_full_disk(&config, &kept, &["--replace"]);
    assert!(!ok, "{stderr}");
    assert_eq!(snapshot(&kept), before, "the earlier export is whole, nothing staged is left");
}

/// The snippets of docs/export.md, run as written on exports of every format: pandas,
/// pyarrow and DuckDB read the whole folder with the documented types, and every
/// partition equals the database.
#[tokio::test]
async fn the_documented_readers_read_every_export_format_with_its_types() {
    let Some(python) = pyarrow() else { return };
    let (_db, store, config, dir) = seeded().await;
    let raw = expected(&store, "raw", None, None).await;
    for format in ["parquet", "csv", "arrow"] {
        let out = dir.path.join(format!("docs-{format}"));
        run_export(&config, &out, &["--format", format]);
        let report = run_snippet(&python, format, &[("root", &out.to_string_lossy())], &[]);
        let readers = match format {
            "parquet" => &["df", "table", "whole", "rel", "df_dates"][..],
            "csv" => &["part", "table", "rel"][..],
            _ => &["part", "table", "df"][..],
        };
        check_readers(&report, readers, &raw, format);
    }
}

/// What the snippet's readers read: (reader, report) for docs/export.md's `snippet`.
fn run_snippet(
    python: &Path,
    snippet: &str,
    names: &[(&str, &str)],
    env: &[(&str, &str)],
) -> serde_json::Map<String, Value> {
    let root = workspace_root();
    let o = Command::new(python)
        .arg(root.join("tests/python/export_readers.py"))
        .arg(root.join("docs/export.md"))
        .arg(snippet)
        .args(names.iter().map(|(k, v)| format!("{k}={v}")))
        .envs(env.iter().copied())
        .output()
        .expect("run python");
    assert!(
        o.status.success(),
        "docs/export.md snippet {snippet}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    match serde_json::from_slice(&o.stdout).expect("report") {
        Value::Object(m) => m,
        other => panic!("report: {other}"),
    }
}

/// Each reader read every partition's rows with the right sum of values, and the columns
/// with the documented kinds: time a UTC timestamp, value float64, device and metric
/// strings, date a string or a date.
fn check_readers(
    report: &serde_json::Map<String, Value>,
    readers: &[&str],
    want: &BTreeMap<String, Vec<Vec<Value>>>,
    what: &str,
) {
    let groups: BTreeMap<String, (u64, f64)> = want
        .iter()
        .map(|(k, rows)| {
            (k.clone(), (rows.len() as u64, rows.iter().map(|r| r[2].as_f64().unwrap()).sum()))
        })
        .collect();
    let names: Vec<&String> = report.keys().collect();
    for reader in readers {
        let r = report.get(*reader).unwrap_or_else(|| panic!("{what}: no {reader} in {names:?}"));
        let kinds = &r["kinds"];
        for (column, kind) in
            [("time", "timestamp_utc"), ("value", "float64"), ("device", "string")]
        {
            assert_eq!(kinds[column], Value::from(kind), "{what} {reader}: {column} in {kinds}");
        }
        let partial = kinds.get("metric").is_none();
        if !partial {
            assert_eq!(kinds["metric"], Value::from("string"), "{what} {reader}: {kinds}");
        }
        if let Some(date) = kinds.get("date") {
            assert!(date == "string" || date == "date", "{what} {reader}: {kinds}");
            assert_eq!(
                r["date_mismatches"],
                Value::from(0),
                "{what} {reader}: date is the UTC day"
            );
        }
        let got: BTreeMap<String, (u64, f64)> = r["groups"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), (v[0].as_u64().unwrap(), v[1].as_f64().unwrap())))
            .collect();
        // One partition file read alone has no metric column: it is the first partition.
        let want: BTreeMap<String, (u64, f64)> = if partial {
            let (k, v) = groups.iter().next().unwrap();
            [(k.replacen("metric=speed_kmh", "metric=?", 1), *v)].into()
        } else {
            groups.clone()
        };
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{what} {reader}"
        );
        for (k, (n, sum)) in &want {
            let (gn, gsum) = got[k];
            assert_eq!(gn, *n, "{what} {reader}: rows of {k}");
            assert!(
                (gsum - sum).abs() <= 1e-9 * sum.abs().max(1.0),
                "{what} {reader}: {k} sums {gsum}, database {sum}"
            );
        }
    }
}

/// The API's downloads, read with pandas as docs/export.md shows, equal the database.
#[tokio::test]
async fn api_exports_read_with_pandas_match_the_database() {
    let Some(python) = pyarrow() else { return };
    let (db, store, _config, dir) = seeded().await;
    let raw = expected(&store, "raw", None, None).await;
    let broker = sccr_tests::Broker::start().await.expect("mosquitto");
    // The readings are a year old: no retention may drop them while the server runs.
    let forever = [
        ("SCCR_RETENTION__RAW", "forever"),
        ("SCCR_RETENTION__ROLLUP_1M", "forever"),
        ("SCCR_INGEST__MAX_PAST_AGE", "3650d"),
    ];
    let sccr = sccr_tests::Sccr::serve(broker.port, &db.url, &dir.path, &forever).expect("serve");
    sccr.wait_healthy().await;
    let api = format!("http://127.0.0.1:{}", sccr.api_port);
    let report = run_snippet(
        &python,
        "api",
        &[("api", &api), ("query", "from=2025-11-23&to=2025-11-25")],
        &[("SCCR_TOKEN", sccr_tests::TEST_ADMIN_TOKEN)],
    );
    check_readers(&report, &["df", "df_csv", "df_arrow"], &raw, "api");
}
#[test]
fn bad_arguments_are_named() {
    let sccr = workspace_bin("sccr").expect("sccr binary");
    for (args, needle) in [
        (vec!["--format", "xlsx"], "--format"),
        (vec!["--resolution", "5m"], "--resolution"),
        (vec!["--metric", "nope"], "--metric"),
        (vec!["--segment", "Viale!"], "--segment"),
        (vec!["--from", "yesterday"], "--from: \"yesterday\" is not a time; use Unix milliseconds"),
        (vec!["--to", "now-1M"], "now-7d"),
        (vec!["--from", "now", "--to", "now-1h"], "must be before --to"),
    ] {
        // The range, where the case does not give its own.
        let mut range = Vec::new();
        for (flag, default) in [("--from", "2025-11-23T00:00:00Z"), ("--to", "2025-11-24")] {
            if !args.contains(&flag) {
                range.extend([flag, default]);
            }
        }
        let o = Command::new(&sccr)
            .args(["export", "--out", "/nonexistent/x"])
            .args(&range)
            .args(&args)
            .output()
            .expect("run");
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// Readings and every rollup level of a PostgreSQL database, as comparable text rows.
async fn contents(store: &Store) -> BTreeMap<&'static str, Vec<String>> {
    let Store::Postgres(pg) = store else { panic!("postgres store") };
    let mut out = BTreeMap::new();
    for (name, sql) in [
        (
            "readings",
            "SELECT concat_ws('|', (extract(epoch FROM time) * 1000)::int8, device, metric, value, seq)
             FROM readings ORDER BY 1",
        ),
        (
            "rollup_1m",
            "SELECT concat_ws('|', bucket, device, metric, count, sum, min, max, last_value) FROM rollup_1m ORDER BY 1",
        ),
        (
            "rollup_1h",
            "SELECT concat_ws('|', bucket, device, metric, count, sum, min, max, last_value) FROM rollup_1h ORDER BY 1",
        ),
        (
            "rollup_1d",
            "SELECT concat_ws('|', bucket, device, metric, count, sum, min, max, last_value) FROM rollup_1d ORDER BY 1",
        ),
        ("latest", "SELECT concat_ws('|', device, metric, time, value) FROM latest ORDER BY 1"),
    ] {
        let rows: Vec<String> =
            sqlx::query_scalar(sql).fetch_all(pg.pool()).await.expect("contents");
        out.insert(name, rows);
    }
    out
}

/// A fresh database and a config file naming it.
async fn empty(dir: &TempDir, name: &str, raw_retention: &str) -> (TestDb, Store, PathBuf) {
    let db = TestDb::create().await.expect("test database");
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let config = dir.path.join(format!("{name}.toml"));
    let text =
        format!("[database]\nurl = \"{}\"\n[retention]\nraw = \"{raw_retention}\"\n", db.url);
    std::fs::write(&config, text).expect("config");
    (db, store, config)
}

fn run_import(config: &Path, paths: &[&Path]) -> String {
    let mut cmd = Command::new(workspace_bin("sccr").expect("sccr binary"));
    cmd.arg("import")
        .arg("--config")
        .arg(config)
        .args(paths)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn");
    let o = cmd.output().expect("run sccr import");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "sccr import failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout + &String::from_utf8_lossy(&o.stderr)
}

/// A raw export imported into an empty database gives the same readings, rollups and
/// latest values; importing it again changes nothing.
#[tokio::test]
async fn exports_imported_into_another_database_match_and_a_second_import_changes_nothing() {
    let (_db, store, config, dir) = seeded().await;
    let want = contents(&store).await;
    assert_eq!(want["readings"].len(), 3 * 2 * PER_SERIES as usize);
    for format in ["parquet", "csv", "arrow"] {
        let out = dir.path.join(format!("raw-{format}"));
        run_export(&config, &out, &["--format", format]);
        let (_target_db, target, target_config) = empty(&dir, format, "forever").await;
        let first = run_import(&target_config, &[&out]);
        assert!(
            first.contains(&format!("imported {0} rows from 4 files", 3 * 2 * PER_SERIES))
                && first
                    .contains(&format!("{} new readings, 0 already stored", 3 * 2 * PER_SERIES)),
            "{format}: {first}"
        );
        assert_eq!(contents(&target).await, want, "{format}: the import equals the source");
        let second = run_import(&target_config, &[&out]);
        assert!(
            second.contains(&format!("0 new readings, {} already stored", 3 * 2 * PER_SERIES)),
            "{format}: {second}"
        );
        assert_eq!(contents(&target).await, want, "{format}: a second import changes nothing");
    }
}

/// Rows that cannot be readings are refused with their reason and row, the others stored.
#[tokio::test]
async fn refused_rows_are_named_and_counted_and_the_rest_imported() {
    let dir = TempDir::new("import").expect("temp dir");
    // The readings are a year old: within a raw retention of ten years, but not the last.
    let (_db, store, config) = empty(&dir, "bad", "3650d").await;
    let file = dir.path.join("counts.csv");
    std::fs::write(
        &file,
        "time,device,metric,value,seq\n\
         2025-11-23T08:00:00Z,loop-9,vehicle_count,12,\n\
         2025-11-23T08:01:00Z,loop-9,vehicle_cuont,12,\n\
         2025-11-23T08:02:00Z,loop-9,speed_kmh,900,\n\
         yesterday,loop-9,speed_kmh,40,\n\
         2025-11-23T08:03:00Z,loop 9,speed_kmh,40,\n\
         2025-11-23T08:04:00Z,loop-9,vehicle_count,2.5,\n\
         2025-11-23T08:05:00Z,loop-9,speed_kmh,,\n\
         1763885160000,loop-9,speed_kmh,41.5,3\n\
         2010-01-01T00:00:00Z,loop-9,speed_kmh,41.5,\n",
    )
    .expect("csv");
    let out = run_import(&config, &[&file]);
    assert!(out.contains("imported 9 rows from 1 files"), "{out}");
    assert!(
        out.contains("2 new readings, 0 already stored, 0 older than the raw retention, 7 refused"),
        "{out}"
    );
    for (reason, line) in [
        ("unknown_metric", 3),
        ("out_of_range", 4),
        ("bad_time", 5),
        ("bad_device", 6),
        ("not_whole", 7),
        ("bad_value", 8),
        ("older_than_retention", 10),
    ] {
        assert!(out.contains(&format!("counts.csv line {line}: {reason}:")), "{reason}: {out}");
    }
    let got = contents(&store).await;
    assert_eq!(
        got["readings"],
        vec![
            "1763884800000|loop-9|vehicle_count|12".to_owned(),
            "1763885160000|loop-9|speed_kmh|41.5|3".to_owned(),
        ]
    );
}
