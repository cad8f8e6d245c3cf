//! Devices, latest values, history and health; bad parameters get JSON errors naming
//! them.

use super::*;

#[tokio::test]
async fn devices_latest_and_health() {
    let s = state().await;
    let (st, body) = get(&s, "/api/v1/devices").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["devices"][0]["id"], "loop-1");
    let (st, body) = get(&s, "/api/v1/latest?device=loop-1&metric=speed_kmh").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["values"][0]["value"], 119.0);
    assert_eq!(body["values"][0]["time"], T0 + 119_000);
    assert_eq!(get(&s, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&s, "/readyz").await.1["store"], "sqlite");
    let resp = app(s.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text =
        String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec())
            .unwrap();
    assert!(
        text.contains("\nsccr_writer_batches_total 7\n")
            && text.contains("\nsccr_live_values 0\n")
            && text.ends_with("# EOF\n"),
        "{text}"
    );
}

#[tokio::test]
async fn history_raw_and_minute() {
    let s = state().await;
    let (st, body) = get(
        &s,
        &format!("/api/v1/history?device=loop-1&metric=speed_kmh&from={}&to={}", T0, T0 + 3_000),
    )
    .await;
    assert_eq!(body["resolution"], "raw", "a short span is answered with raw readings: {body}");
    assert_eq!(st, StatusCode::OK, "{body}");
    let vs: Vec<f64> =
        body["points"].as_array().unwrap().iter().map(|p| p["v"].as_f64().unwrap()).collect();
    assert_eq!(vs, vec![0.0, 1.0, 2.0]);
    let (_, body) = get(
        &s,
        "/api/v1/history?device=loop-1&metric=speed_kmh&from=2025-11-23T10:00:00Z&to=2025-11-23T10:05:00Z&resolution=1m",
    )
    .await;
    let pts = body["points"].as_array().unwrap();
    assert_eq!(pts.len(), 2);
    assert_eq!(pts[0]["count"], 60);
    assert_eq!(pts[0]["sum"], (0..60).sum::<i32>() as f64);
    assert_eq!(pts[1]["min"], 60.0);
    assert_eq!(pts[1]["avg"], 89.5);
    assert_eq!(body["unit"], "km/h");
}

#[tokio::test]
async fn bad_parameters_get_json_errors_naming_them() {
    let s = state().await;
    let cases = [
        ("/api/v1/history?device=loop-1", "metric", StatusCode::BAD_REQUEST),
        (
            "/api/v1/history?device=loop-1&segment=viale-x&metric=speed_kmh",
            "segment",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("/api/v1/history?segment=Bad!&metric=speed_kmh", "segment", StatusCode::BAD_REQUEST),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&step=5s",
            "step",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&step=soon",
            "step",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&step=1m&resolution=1h",
            "resolution",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&fill=zero",
            "fill",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&agg=median",
            "agg",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&max_points=0",
            "max_points",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/history?device=Bad!&metric=speed_kmh", "device", StatusCode::BAD_REQUEST),
        ("/api/v1/history?device=loop-1&metric=warp", "metric", StatusCode::BAD_REQUEST),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&from=yesterday",
            "from",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&from=2000&to=1000",
            "from",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&resolution=5s",
            "resolution",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&limit=0",
            "limit",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=loop-1&metric=speed_kmh&limit=abc",
            "limit",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/history?device=loop-1&device=loop-2&metric=speed_kmh",
            "device",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/latest?colour=red", "colour", StatusCode::BAD_REQUEST),
        ("/api/v1/devices?x=1", "x", StatusCode::BAD_REQUEST),
    ];
    // 400: a parameter breaks the OpenAPI document; 422: each is valid, not together.
    for (uri, param, status) in cases {
        let (st, body) = get(&s, uri).await;
        assert_eq!(st, status, "{uri}");
        assert_eq!(body["error"]["code"], "bad_parameter", "{uri}");
        assert_eq!(body["error"]["param"], param, "{uri}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let (st, body) = get(&s, "/api/v1/nothing").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}
