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
    assert_eq!(
        disposition,
        "attachment; filename=\"sccr-readings-2025-11-23T1000Z_2025-11-23T1002Z.csv\""
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
    assert!(
        h.get("content-disposition").unwrap().to_str().unwrap().ends_with(".arrows\""),
        "an IPC stream is named .arrows: {h:?}"
    );
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

fn error_of(body: &Bytes) -> Value {
    serde_json::from_slice::<Value>(body).unwrap()["error"].clone()
}

/// Links `loop-2` to `viale-strozzi`; `lungarno-corsini` has no devices.
async fn with_segments(s: &AppState) {
    let road = |id: &str| telemetry::RoadSegment {
        id: telemetry::SegmentId::parse(id).unwrap(),
        name: id.into(),
        kind: "urban".into(),
        coordinates: vec![[11.246, 43.781], [11.252, 43.780]],
        length_m: 480.0,
        lanes: 2,
        speed_limit_kmh: 50.0,
        free_flow_kmh: 50.0,
        capacity_vph: 1_800.0,
    };
    s.store.upsert_segments(&[road("viale-strozzi"), road("lungarno-corsini")]).await.unwrap();
    s.store
        .upsert_devices(&[store::DeviceRecord {
            id: DeviceId::parse("loop-2").unwrap(),
            kind: Some("traffic_loop".into()),
            segment: Some(telemetry::SegmentId::parse("viale-strozzi").unwrap()),
            registered_at: EventTime(T0),
        }])
        .await
        .unwrap();
}

/// A typo is a 404 naming it; a known subject without data is a 200 with no points.
#[tokio::test]
async fn history_and_latest_tell_an_unknown_subject_from_one_without_data() {
    let s = state_with(10).await;
    with_segments(&s).await;
    let span = format!("from={T0}&to={}", T0 + 60_000);
    for (query, param, id) in [
        (format!("/api/v1/history?device=loop-7&metric=speed_kmh&{span}"), "device", "loop-7"),
        (
            format!("/api/v1/history?segment=viale-strozi&metric=speed_kmh&{span}"),
            "segment",
            "viale-strozi",
        ),
        (
            format!("/api/v1/history?device=loop-7&metric=speed_kmh&{span}&format=csv"),
            "device",
            "loop-7",
        ),
        ("/api/v1/latest?device=loop-7".to_owned(), "device", "loop-7"),
    ] {
        let (st, h, body) = send(&s, &query, None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{query}");
        assert_eq!(content_type(&h), "application/json");
        let e = error_of(&body);
        assert_eq!((e["code"].as_str(), e["param"].as_str()), (Some("not_found"), Some(param)));
        assert!(e["message"].as_str().unwrap().contains(id), "{e}");
    }
    // Bad parameters are named before the subject is looked up.
    let (st, _, body) =
        send(&s, "/api/v1/history?device=loop-7&metric=speed_kmh&from=yesterday", None).await;
    assert_eq!((st, error_of(&body)["param"].as_str()), (StatusCode::BAD_REQUEST, Some("from")));

    let points = |body: &Bytes| {
        serde_json::from_slice::<Value>(body).unwrap()["points"].as_array().unwrap().len()
    };
    // Known, without data: loop-2 sends no speed, lungarno-corsini has no devices, loop-9
    // is registered but never reported.
    s.store
        .upsert_devices(&[store::DeviceRecord {
            id: DeviceId::parse("loop-9").unwrap(),
            kind: None,
            segment: None,
            registered_at: EventTime(T0),
        }])
        .await
        .unwrap();
    for query in [
        format!("/api/v1/history?device=loop-2&metric=speed_kmh&{span}"),
        format!("/api/v1/history?segment=lungarno-corsini&metric=speed_kmh&{span}"),
        format!("/api/v1/history?device=loop-9&metric=speed_kmh&{span}"),
    ] {
        let (st, _, body) = send(&s, &query, None).await;
        assert_eq!((st, points(&body)), (StatusCode::OK, 0), "{query}");
    }
    let (st, _, body) = send(&s, "/api/v1/latest?device=loop-9", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["values"], serde_json::json!([]));
    // A decommissioned device still answers its history.
    let loop1 = DeviceId::parse("loop-1").unwrap();
    s.store.decommission_device(&loop1, EventTime(T0 + 1)).await.unwrap().unwrap();
    let (st, _, body) =
        send(&s, &format!("/api/v1/history?device=loop-1&metric=speed_kmh&{span}"), None).await;
    assert_eq!((st, points(&body)), (StatusCode::OK, 10));
}

/// Every time parameter reads plain dates (00:00 UTC) and times relative to now, with
/// one clock per request; bad ones list the accepted forms.
#[tokio::test]
async fn time_parameters_take_dates_and_relative_times() {
    let s = state_with(10).await;
    let json = |b: &Bytes| serde_json::from_slice::<Value>(b).unwrap();
    let history = "/api/v1/history?device=loop-1&metric=speed_kmh";
    // 2025-11-23 00:00 UTC to 2025-11-24 00:00 UTC holds the readings of 10:00.
    let (st, _, body) =
        send(&s, &format!("{history}&from=2025-11-23&to=2025-11-24&step=1h&agg=count"), None).await;
    assert_eq!(st, StatusCode::OK, "{}", json(&body));
    let b = json(&body);
    assert_eq!(
        (b["from"].as_i64(), b["to"].as_i64()),
        (Some(1_763_856_000_000), Some(1_763_942_400_000))
    );
    assert_eq!(b["points"][0]["count"], 10);
    for (from, to, span) in [
        ("now-24h", "now", 86_400_000),
        ("-7d", "now", 7 * 86_400_000),
        ("now-30m", "now-10m", 20 * 60_000),
        ("now-2w", "now+1h", 14 * 86_400_000 + 3_600_000),
        ("now-2w", "now%2B1h", 14 * 86_400_000 + 3_600_000),
        ("2025-11-23T11:00:00+01:00", "2025-11-23T12:00:00%2B01:00", 3_600_000),
    ] {
        let (st, _, body) = send(&s, &format!("{history}&from={from}&to={to}"), None).await;
        assert_eq!(st, StatusCode::OK, "{from} {to}");
        let b = json(&body);
        assert_eq!(b["to"].as_i64().unwrap() - b["from"].as_i64().unwrap(), span, "{from} {to}");
        let now = EventTime::now().millis();
        if to.starts_with("now") {
            assert!((now - b["to"].as_i64().unwrap()).abs() < 4 * 3_600_000, "{b}");
        }
    }
    for (query, param, status) in [
        (format!("{history}&from=now-7y"), "from", StatusCode::BAD_REQUEST),
        (format!("{history}&from=now-1M"), "from", StatusCode::BAD_REQUEST),
        (format!("{history}&to=2025-02-30"), "to", StatusCode::BAD_REQUEST),
        (format!("{history}&from=now-999999999w"), "from", StatusCode::UNPROCESSABLE_ENTITY),
        (
            "/api/v1/export/readings?from=last%20week&to=now".to_owned(),
            "from",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/dead-letters/reasons?since=today".to_owned(), "since", StatusCode::BAD_REQUEST),
    ] {
        let (st, _, body) = send_as(&s, ADMIN, &query, None).await;
        let e = error_of(&body);
        assert_eq!((st, e["param"].as_str()), (status, Some(param)), "{query}: {e}");
        let message = e["message"].as_str().unwrap();
        if status == StatusCode::BAD_REQUEST {
            assert!(message.contains("RFC 3339") && message.contains("now-7d"), "{message}");
        }
    }
    let (st, _, _) = send_as(&s, ADMIN, "/api/v1/dead-letters/reasons?since=now-1h", None).await;
    assert_eq!(st, StatusCode::OK);
    // Exports take the same forms, and are named by their range.
    for (query, name) in [
        ("from=2025-11-23&to=2025-11-24", "sccr-readings-2025-11-23_2025-11-24.csv"),
        (
            "from=2025-11-23&to=2025-11-24&resolution=1h",
            "sccr-readings-1h-2025-11-23_2025-11-24.csv",
        ),
        (
            "from=2025-11-23T10:00:00Z&to=1763892001500",
            "sccr-readings-2025-11-23T1000Z_2025-11-23T100001Z.csv",
        ),
    ] {
        let (st, h, body) = send(&s, &format!("/api/v1/export/readings?{query}"), None).await;
        assert_eq!(st, StatusCode::OK, "{query}");
        let disposition = h.get("content-disposition").unwrap().to_str().unwrap();
        assert_eq!(disposition, format!("attachment; filename=\"{name}\""));
        assert!(String::from_utf8(body.to_vec()).unwrap().lines().count() > 1, "{query}");
    }
}

#[tokio::test]
async fn exports_filter_by_road_segment_and_name_unknown_subjects() {
    let s = state_with(10).await;
    with_segments(&s).await;
    let base = format!("/api/v1/export/readings?{}", range(10));
    let (st, _, body) = send(&s, &format!("{base}&segment=viale-strozzi"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        String::from_utf8(body.to_vec()).unwrap(),
        "time,device,metric,value,seq\n2025-11-23T10:00:00.000Z,loop-2,vehicle_count,3,\n"
    );
    let (_, _, body) = send(&s, &format!("{base}&segment=lungarno-corsini"), None).await;
    assert_eq!(String::from_utf8(body.to_vec()).unwrap(), "time,device,metric,value,seq\n");
    let (_, _, body) =
        send(&s, &format!("{base}&segment=viale-strozzi,lungarno-corsini&metric=speed_kmh"), None)
            .await;
    assert_eq!(String::from_utf8(body.to_vec()).unwrap().lines().count(), 1);
    for (query, param, id) in [
        (format!("{base}&segment=viale-strozzi,ponte-vecchio"), "segment", "ponte-vecchio"),
        (format!("{base}&device=loop-1,loop-77"), "device", "loop-77"),
    ] {
        let (st, _, body) = send(&s, &query, None).await;
        let e = error_of(&body);
        assert_eq!((st, e["param"].as_str()), (StatusCode::NOT_FOUND, Some(param)), "{query}");
        assert!(e["message"].as_str().unwrap().contains(id), "{e}");
    }
    let (st, _, body) = send(&s, &format!("{base}&segment=Viale!"), None).await;
    assert_eq!((st, error_of(&body)["param"].as_str()), (StatusCode::BAD_REQUEST, Some("segment")));
}
