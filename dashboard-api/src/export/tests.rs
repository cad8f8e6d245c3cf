//! Formats, negotiation and errors of the export route and of history, through the router.

use arrow_array::{
    Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use serde_json::Value;
use store::{Batch, Store, StoreOptions};
use stream::LiveHub;
use telemetry::{DeviceId, EventTime, MetricId, Reading, Seq};
use tower::ServiceExt;

use crate::{app, AppState};

const T0: i64 = 1_763_892_000_000;

async fn state_with(n: i64) -> AppState {
    let store = Store::connect("sqlite::memory:", &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let devices = vec![DeviceId::parse("loop-1").unwrap(), DeviceId::parse("loop-2").unwrap()];
    let mut readings = Vec::new();
    for i in 0..n {
        readings.push(Reading {
            device: devices[0].clone(),
            metric: MetricId::SpeedKmh,
            time: EventTime(T0 + i * 1_000),
            value: i as f64,
            seq: Some(Seq(i as u64)),
        });
    }
    // Another device and metric, outside most filters.
    readings.push(Reading {
        device: devices[1].clone(),
        metric: MetricId::VehicleCount,
        time: EventTime(T0),
        value: 3.0,
        seq: None,
    });
    for chunk in readings.chunks(20_000) {
        store
            .write_batch(&Batch {
                readings: chunk.to_vec(),
                new_devices: devices.clone(),
                ..Batch::default()
            })
            .await
            .unwrap();
    }
    for (token, name, role) in
        [(PLANNER, "pia", "planner"), (OPERATOR, "ada", "operator"), (ADMIN, "root", "admin")]
    {
        store
            .ensure_token(name, role, &crate::auth::token_digest(token), EventTime(T0))
            .await
            .unwrap();
    }
    AppState::new(store, LiveHub::new(64))
}

const PLANNER: &str = "sccr_test_planner";
const OPERATOR: &str = "sccr_test_operator";
const ADMIN: &str = "sccr_test_admin";

async fn send(
    state: &AppState,
    uri: &str,
    accept: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Bytes) {
    send_as(state, PLANNER, uri, accept).await
}

async fn send_as(
    state: &AppState,
    token: &str,
    uri: &str,
    accept: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Bytes) {
    let mut req = Request::get(uri).header("authorization", format!("Bearer {token}"));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = app(state.clone()).oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, axum::body::to_bytes(body, 1 << 28).await.unwrap())
}

fn content_type(h: &axum::http::HeaderMap) -> &str {
    h.get("content-type").unwrap().to_str().unwrap()
}

fn arrow_batches(bytes: Bytes) -> Vec<RecordBatch> {
    arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn parquet_batches(bytes: Bytes) -> Vec<RecordBatch> {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn f64s(batches: &[RecordBatch], col: &str) -> Vec<f64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(col)
                .unwrap()
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

fn range(n: i64) -> String {
    format!("from={T0}&to={}", T0 + n * 1_000)
}

#[tokio::test]
async fn raw_export_in_every_format_holds_the_stored_rows() {
    let s = state_with(120).await;
    let base = format!("/api/v1/export/readings?{}&metric=speed_kmh", range(120));

    // CSV is the default.
    let (st, h, body) = send(&s, &base, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(content_type(&h), "text/csv; charset=utf-8");
    let disposition = h.get("content-disposition").unwrap().to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"readings-raw-")
            && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    let text = String::from_utf8(body.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 121);
    assert_eq!(lines[0], "time,device,metric,value,seq");
    assert_eq!(lines[1], "2025-11-23T10:00:00.000Z,loop-1,speed_kmh,0,0");
    assert_eq!(lines[120], "2025-11-23T10:01:59.000Z,loop-1,speed_kmh,119,119");

    let (st, h, body) = send(&s, &format!("{base}&format=arrow"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(content_type(&h), "application/vnd.apache.arrow.stream");
    let batches = arrow_batches(body);
    assert_eq!(f64s(&batches, "value"), (0..120).map(|i| i as f64).collect::<Vec<_>>());
    let times = batches[0]
        .column_by_name("time")
        .unwrap()
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .unwrap();
    assert_eq!(times.value(1), T0 + 1_000);
    assert_eq!(times.timezone(), Some("UTC"));

    let (st, h, body) = send(&s, &base, Some("application/vnd.apache.parquet")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(content_type(&h), "application/vnd.apache.parquet");
    let batches = parquet_batches(body);
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 120);
    assert_eq!(f64s(&batches, "value").iter().sum::<f64>(), (0..120).sum::<i64>() as f64);
    let seq =
        batches[0].column_by_name("seq").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(seq.value(7), 7);

    let (st, h, body) = send(&s, &base, Some("application/json")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(content_type(&h), "application/json");
    let rows: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 120);
    assert_eq!(
        rows[3],
        serde_json::json!({"time": "2025-11-23T10:00:03.000Z", "device": "loop-1", "metric": "speed_kmh", "value": 3, "seq": 3})
    );
}

#[tokio::test]
async fn rollup_export_and_filters() {
    let s = state_with(120).await;
    let (st, _, body) = send(
        &s,
        &format!("/api/v1/export/readings?{}&resolution=1m&format=arrow", range(120)),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let batches = arrow_batches(body);
    let names: Vec<String> =
        batches[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["bucket", "device", "metric", "count", "sum", "min", "max", "last", "avg"]);
    // Ordered by metric within the day: speed_kmh's two minutes, then vehicle_count's.
    let metric: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let a = b
                .column_by_name("metric")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            (0..a.len()).map(move |i| a.value(i).to_owned())
        })
        .collect();
    assert_eq!(metric, ["speed_kmh", "speed_kmh", "vehicle_count"]);
    assert_eq!(f64s(&batches, "avg")[..2], [29.5, 89.5]);
    assert_eq!(f64s(&batches, "last")[..2], [59.0, 119.0]);
    let count =
        batches[0].column_by_name("count").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(count.value(0), 60);

    let (_, _, body) =
        send(&s, &format!("/api/v1/export/readings?{}&device=loop-2", range(120)), None).await;
    assert_eq!(
        String::from_utf8(body.to_vec()).unwrap(),
        "time,device,metric,value,seq\n2025-11-23T10:00:00.000Z,loop-2,vehicle_count,3,\n"
    );
    let (_, _, body) = send(
        &s,
        &format!(
            "/api/v1/export/readings?{}&metric=vehicle_count,speed_kmh&device=loop-1,loop-2",
            range(2)
        ),
        None,
    )
    .await;
    assert_eq!(String::from_utf8(body.to_vec()).unwrap().lines().count(), 1 + 3);
}

#[tokio::test]
async fn format_parameter_wins_and_bad_requests_are_named() {
    let s = state_with(10).await;
    let base = format!("/api/v1/export/readings?{}", range(10));
    let (st, h, _) =
        send(&s, &format!("{base}&format=csv"), Some("application/vnd.apache.parquet")).await;
    assert_eq!((st, content_type(&h)), (StatusCode::OK, "text/csv; charset=utf-8"));
    let (st, h, _) =
        send(&s, &base, Some("text/html, application/vnd.apache.arrow.stream;q=0.5")).await;
    assert_eq!((st, content_type(&h)), (StatusCode::OK, "application/vnd.apache.arrow.stream"));
    let (st, h, _) = send(&s, &base, Some("*/*")).await;
    assert_eq!((st, content_type(&h)), (StatusCode::OK, "text/csv; charset=utf-8"));

    let json = |b: Bytes| serde_json::from_slice::<Value>(&b).unwrap();
    for accept in ["text/html", "application/json;q=0"] {
        let (st, h, body) = send(&s, &base, Some(accept)).await;
        assert_eq!(st, StatusCode::NOT_ACCEPTABLE, "{accept}");
        assert_eq!(content_type(&h), "application/json");
        assert_eq!(json(body)["error"]["code"], "not_acceptable");
    }
    for (query, param) in [
        (format!("{base}&format=xlsx"), "format"),
        (format!("/api/v1/export/readings?from={T0}"), "to"),
        (format!("{base}&resolution=5m"), "resolution"),
        (format!("{base}&metric=speed_kmh,nope"), "metric"),
        (format!("{base}&device=Bad!"), "device"),
        (format!("{base}&step=1h"), "step"),
    ] {
        let (st, _, body) = send(&s, &query, None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(json(body)["error"]["param"], param, "{query}");
    }
    // Each time valid, not together: 422.
    let (st, _, body) = send(&s, &format!("/api/v1/export/readings?from={T0}&to={T0}"), None).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json(body)["error"]["param"], "from");
    let (st, _, body) = send(&s, "/api/v1/history?metric=speed_kmh&format=xml", None).await;
    assert_eq!(
        (st, json(body)["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, Value::from("format"))
    );
    let (st, _, _) = send(&s, "/api/v1/history?metric=speed_kmh", Some("image/png")).await;
    assert_eq!(st, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn history_answers_in_every_format() {
    let s = state_with(120).await;
    let raw = format!("/api/v1/history?device=loop-1&metric=speed_kmh&from={T0}&to={}", T0 + 3_000);
    let (st, h, body) = send(&s, &format!("{raw}&format=csv"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(h
        .get("content-disposition")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("history-speed_kmh.csv"));
    assert_eq!(
        String::from_utf8(body.to_vec()).unwrap(),
        "time,value\n2025-11-23T10:00:00.000Z,0\n2025-11-23T10:00:01.000Z,1\n2025-11-23T10:00:02.000Z,2\n"
    );
    let (_, _, body) = send(&s, &raw, Some("application/json")).await;
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["points"][2]["v"], 2.0);

    let minute = format!(
        "/api/v1/history?device=loop-1&metric=speed_kmh&from={T0}&to={}&resolution=1m&agg=max",
        T0 + 300_000
    );
    let (_, _, body) = send(&s, &minute, Some("application/vnd.apache.arrow.stream")).await;
    let batches = arrow_batches(body);
    assert_eq!(f64s(&batches, "v"), [59.0, 119.0]);
    assert_eq!(f64s(&batches, "avg"), [29.5, 89.5]);
    let (_, _, body) = send(&s, &format!("{minute}&format=parquet"), None).await;
    let batches = parquet_batches(body);
    assert_eq!(f64s(&batches, "min"), [0.0, 60.0]);
    let count =
        batches[0].column_by_name("count").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(count.values().to_vec(), [60, 60]);
}

/// A large export leaves the server in many bounded chunks rather than one buffer.
#[tokio::test]
async fn large_exports_stream_in_bounded_chunks() {
    let n = 100_000;
    let s = state_with(n).await;
    for format in ["csv", "parquet"] {
        let uri = format!("/api/v1/export/readings?{}&metric=speed_kmh&format={format}", range(n));
        let req = Request::get(uri)
            .header("authorization", format!("Bearer {PLANNER}"))
            .body(Body::empty())
            .unwrap();
        let resp = app(s.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut frames = resp.into_body().into_data_stream();
        let (mut chunks, mut largest, mut all) = (0, 0, Vec::new());
        while let Some(frame) = frames.next().await {
            let frame = frame.unwrap();
            chunks += 1;
            largest = largest.max(frame.len());
            all.extend_from_slice(&frame);
        }
        // Parquet row groups come out whole (encoded, about 1 MB here), CSV in body chunks.
        let bound = if format == "csv" { 2 * crate::formats::CHUNK_BYTES } else { 4 << 20 };
        assert!(largest <= bound, "{format}: a chunk of {largest} bytes");
        if format == "csv" {
            assert!(chunks > 4, "{format}: {chunks} chunks of {} bytes", all.len());
            assert_eq!(all.iter().filter(|&&b| b == b'\n').count() as i64, n + 1);
        } else {
            assert_eq!(
                parquet_batches(Bytes::from(all)).iter().map(RecordBatch::num_rows).sum::<usize>()
                    as i64,
                n
            );
        }
    }
}

/// Exports and table formats are for planners and admins; operators keep JSON history.
#[tokio::test]
async fn exports_and_table_formats_need_planner_or_admin() {
    let s = state_with(10).await;
    let export = format!("/api/v1/export/readings?{}", range(10));
    let history =
        format!("/api/v1/history?device=loop-1&metric=speed_kmh&from={T0}&to={}", T0 + 3_000);
    let code = |b: Bytes| serde_json::from_slice::<Value>(&b).unwrap()["error"]["code"].clone();
    for token in [PLANNER, ADMIN] {
        assert_eq!(send_as(&s, token, &export, None).await.0, StatusCode::OK, "{token}");
        assert_eq!(
            send_as(&s, token, &format!("{history}&format=parquet"), None).await.0,
            StatusCode::OK,
            "{token}"
        );
    }
    let (st, _, body) = send_as(&s, OPERATOR, &export, None).await;
    assert_eq!((st, code(body)), (StatusCode::FORBIDDEN, Value::from("forbidden")));
    for (query, accept) in [
        (format!("{history}&format=csv"), None),
        (history.clone(), Some("application/vnd.apache.arrow.stream")),
    ] {
        let (st, _, body) = send_as(&s, OPERATOR, &query, accept).await;
        assert_eq!(
            (st, code(body)),
            (StatusCode::FORBIDDEN, Value::from("forbidden")),
            "{query} {accept:?}"
        );
    }
    assert_eq!(
        send_as(&s, OPERATOR, &history, None).await.0,
        StatusCode::OK,
        "JSON history stays open to operators"
    );
    let resp =
        app(s.clone()).oneshot(Request::get(&export).body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
