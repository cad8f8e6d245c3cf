//! `sccr export` end to end: known readings in a PostgreSQL database, the real binary
//! writing Hive-style partitions, and pyarrow (PyPI, in a venv made by
//! `python_venv` of the testkit) reading every file back; values and row counts per partition
//! are checked against the database. Without python/pyarrow the tests are skipped loudly,
//! and fail under CI=true.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sccr_tests::{workspace_bin, TempDir, TestDb};
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
/// relative to the root, its column names and its rows (times as Unix ms).
const READER: &str = r#"
import json, os, sys
import pyarrow as pa, pyarrow.csv as pcsv, pyarrow.ipc as ipc, pyarrow.parquet as pq
root = sys.argv[1]
ts = pa.timestamp("ms", tz="UTC")
csv_types = {"time": ts, "bucket": ts, "device": pa.string(), "metric": pa.string(), "seq": pa.int64(), "count": pa.int64()}
out = []
for dirpath, _, files in os.walk(root):
    for name in sorted(files):
        path = os.path.join(dirpath, name)
        if name.endswith(".parquet"):
            table = pq.ParquetFile(path).read()
        elif name.endswith(".arrow"):
            table = ipc.open_stream(path).read_all()
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

fn pyarrow() -> Option<PathBuf> {
    match sccr_tests::python_venv("pyarrow-venv", &["pyarrow==22.0.0"], "pyarrow") {
        Some(venv) => Some(venv.join("bin/python")),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and python with pyarrow could not be set up")
        }
        None => {
            eprintln!(
                "!!! export tests SKIPPED: python3 with venv, or pyarrow from PyPI, is unavailable"
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
    store.merge_all_rollups().await.expect("merge rollups");
    let dir = TempDir::new("export").expect("temp dir");
    let config = dir.path.join("sccr.toml");
    std::fs::write(&config, format!("[database]\nurl = \"{}\"\n", db.url)).expect("config");
    (db, store, config, dir)
}

/// Rows of the database as the export should hold them, by partition `metric=…/date=…`,
/// each row as JSON values in column order (times in Unix ms).
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
        let mut row = vec![
            Value::from(r.get::<i64, _>("t")),
            Value::from(r.get::<String, _>("device")),
            Value::from(r.get::<String, _>("metric")),
        ];
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

fn run_export(config: &Path, out: &Path, extra: &[&str]) -> String {
    let mut cmd = Command::new(workspace_bin("sccr").expect("sccr binary"));
    cmd.arg("export")
        .arg("--config")
        .arg(config)
        .args(["--from", "2025-11-23T00:00:00Z", "--to", "2025-11-25T00:00:00Z", "--out"])
        .arg(out)
        .args(extra)
        // Only the config file: nothing SCCR_… from the suite's own environment.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn");
    let o = cmd.output().expect("run sccr export");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "sccr export {extra:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Not a terminal: progress, if any, is plain lines.
    assert!(!String::from_utf8_lossy(&o.stderr).contains('\r'), "no bar redraws off a terminal");
    stdout
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

const RAW_COLUMNS: [&str; 5] = ["time", "device", "metric", "value", "seq"];
const ROLLUP_COLUMNS: [&str; 9] =
    ["bucket", "device", "metric", "count", "sum", "min", "max", "last", "avg"];

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
        hourly["metric=speed_kmh/date=2025-11-23"][0][3],
        Value::from(6),
        "six readings per hour"
    );
    for format in ["parquet", "csv", "arrow"] {
        let out = dir.path.join(format!("raw-{format}"));
        let summary = run_export(&config, &out, &["--format", format]);
        assert!(
            summary.contains(&format!("exported {} rows in 4 files", 3 * 2 * PER_SERIES)),
            "{summary}"
        );
        check(&read_back(&python, &out), &raw, format, &RAW_COLUMNS);

        let out = dir.path.join(format!("hourly-{format}"));
        let summary = run_export(&config, &out, &["--format", format, "--resolution", "1h"]);
        assert!(summary.contains(&format!("exported {} rows in 4 files", 3 * 2 * 6)), "{summary}");
        check(&read_back(&python, &out), &hourly, format, &ROLLUP_COLUMNS);
    }
}

#[tokio::test]
async fn metric_and_device_filters_select_their_partitions_and_a_rerun_adds_a_part() {
    let Some(python) = pyarrow() else { return };
    let (_db, store, config, dir) = seeded().await;
    let want = expected(&store, "raw", Some("speed_kmh"), Some("loop-2")).await;
    let out = dir.path.join("filtered");
    let args = ["--format", "parquet", "--metric", "speed_kmh", "--device", "loop-2"];
    let summary = run_export(&config, &out, &args);
    assert!(summary.contains(&format!("exported {PER_SERIES} rows in 2 files")), "{summary}");
    let got = read_back(&python, &out);
    check(&got, &want, "parquet", &RAW_COLUMNS);
    // Exporting again into the same directory keeps the earlier files.
    run_export(&config, &out, &args);
    let got = read_back(&python, &out);
    assert_eq!(got["metric=speed_kmh/date=2025-11-24"].0, vec!["part-0.parquet", "part-1.parquet"]);
    assert_eq!(got["metric=speed_kmh/date=2025-11-24"].2.len(), 2 * 24);
    let Store::Postgres(pg) = &store else { panic!("postgres") };
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(pg.pool())
        .await
        .expect("count");
    assert_eq!(n, 3 * 2 * PER_SERIES, "export changes nothing in the database");
}

#[test]
fn bad_arguments_are_named() {
    let sccr = workspace_bin("sccr").expect("sccr binary");
    for (args, needle) in [
        (vec!["--format", "xlsx"], "--format"),
        (vec!["--resolution", "5m"], "--resolution"),
        (vec!["--metric", "nope"], "--metric"),
    ] {
        let o = Command::new(&sccr)
            .args([
                "export",
                "--from",
                "2025-11-23T00:00:00Z",
                "--to",
                "2025-11-24T00:00:00Z",
                "--out",
                "/nonexistent/x",
            ])
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
