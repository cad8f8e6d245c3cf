//! The server's limits and the websocket's message limit, over real sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::{state, ADMIN};
use crate::server::{serve, ServerLimits};
use crate::{app, AppState};

/// A server on a free port; it stops when the sender is dropped.
async fn start(limits: ServerLimits) -> (SocketAddr, AppState, tokio::sync::oneshot::Sender<()>) {
    let s = state().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, app(s.clone()), limits, s.http.clone(), async move {
        let _ = stopped.await;
    }));
    (addr, s, stop)
}

fn limits(header_timeout_ms: u64, request_timeout_ms: u64, max_connections: usize) -> ServerLimits {
    ServerLimits {
        header_timeout: Duration::from_millis(header_timeout_ms),
        request_timeout: Duration::from_millis(request_timeout_ms),
        max_connections,
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Everything the server sends until it closes the connection (within 10 s).
async fn read_to_close(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

async fn healthz(addr: SocketAddr) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: sccr\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    read_to_close(&mut conn).await
}

fn json_body(response: &str) -> Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn half_a_request_line_is_disconnected_after_the_header_timeout() {
    let (addr, s, _stop) = start(limits(300, 5_000, 10)).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let sent = Instant::now();
    conn.write_all(b"GET /heal").await.unwrap();
    let answer = read_to_close(&mut conn).await;
    let held = sent.elapsed();
    assert_eq!(answer, "", "nothing is answered to half a request");
    assert!(held >= Duration::from_millis(300), "closed after {held:?}");
    assert!(held < Duration::from_secs(3), "held for {held:?}");
    assert_eq!(s.http.timeouts("headers"), 1);
    until("the connection to be given back", || {
        s.http.connections_open.load(std::sync::atomic::Ordering::Relaxed) == 0
    })
    .await;
    assert!(healthz(addr).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_until_slow_ones_time_out() {
    let (addr, s, _stop) = start(limits(1_000, 5_000, 3)).await;
    let open = || s.http.connections_open.load(std::sync::atomic::Ordering::Relaxed);
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost:").await.unwrap();
        slow.push(c);
    }
    until("two slow connections", || open() == 2).await;
    // Under the limit a normal client is served next to the slow ones.
    assert!(healthz(addr).await.starts_with("HTTP/1.1 200"));
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost:").await.unwrap();
    slow.push(c);
    until("three slow connections", || open() == 3).await;

    let refused = healthz(addr).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 1\r\n"), "{refused}");
    assert_eq!(json_body(&refused)["error"]["code"], "too_many_connections", "{refused}");
    assert_eq!(s.http.connections_refused.load(std::sync::atomic::Ordering::Relaxed), 1);

    // The slow ones are closed by the header timeout; then a normal client is served.
    for c in &mut slow {
        assert_eq!(read_to_close(c).await, "");
    }
    assert_eq!(s.http.timeouts("headers"), 3);
    until("the slots to be given back", || open() == 0).await;
    assert!(healthz(addr).await.starts_with("HTTP/1.1 200"));
    let text = telemetry::metrics::exposition(Box::new(s.http.clone()));
    assert!(text.contains("sccr_http_connections_refused_total 1\n"), "{text}");
    assert!(text.contains("sccr_http_timeouts_total{phase=\"headers\"} 3\n"), "{text}");
}

#[tokio::test]
async fn a_request_whose_body_stalls_gets_503_after_the_request_timeout() {
    let (addr, s, _stop) = start(limits(5_000, 400, 10)).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/alerts/1/ack HTTP/1.1\r\nHost: sccr\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"note\":"
    );
    let sent = Instant::now();
    conn.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut conn).await;
    assert!(sent.elapsed() >= Duration::from_millis(400));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert_eq!(json_body(&answer)["error"]["code"], "timeout", "{answer}");
    assert_eq!(s.http.timeouts("request"), 1);
}

async fn ws_connect(
    addr: SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let url = format!("ws://{addr}/api/v1/live?access_token={ADMIN}");
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next text frame, skipping pings.
async fn next_text<S>(ws: &mut S) -> Option<Value>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame") {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return None,
        }
    }
}

#[tokio::test]
async fn a_websocket_session_outlives_the_request_timeout_and_holds_its_slot() {
    let (addr, s, _stop) = start(limits(300, 300, 10)).await;
    let mut ws = ws_connect(addr).await;
    assert_eq!(s.http.connections_open.load(std::sync::atomic::Ordering::Relaxed), 1);
    // Longer than both timeouts: the session is not HTTP any more.
    tokio::time::sleep(Duration::from_millis(900)).await;
    ws.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await.expect("open")["type"], "pong");
    assert_eq!(s.http.connections_open.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(s.http.timeouts("request") + s.http.timeouts("headers"), 0);
    ws.close(None).await.unwrap();
    until("the slot to be given back", || {
        s.http.connections_open.load(std::sync::atomic::Ordering::Relaxed) == 0
    })
    .await;
}

#[tokio::test]
async fn a_message_over_the_limit_gets_an_error_frame_and_close_1009() {
    let (addr, s, _stop) = start(ServerLimits::default()).await;
    let mut ws = ws_connect(addr).await;
    let huge = "x".repeat(crate::live::MAX_CLIENT_MESSAGE + 1);
    let _ = ws.send(Message::Text(huge.into())).await;
    let frame = next_text(&mut ws).await.expect("an error frame");
    assert_eq!(frame["type"], "error");
    assert_eq!(frame["code"], "message_too_big");
    assert_eq!(frame["message"], "message over the 2 MiB limit");
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame") {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close frame with a code"),
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Size);
    assert_eq!(close.reason.as_str(), "message over the 2 MiB limit");
    assert_eq!(s.http.ws_errors("message_too_big"), 1);
}

#[tokio::test]
async fn the_largest_documented_subscription_fits_under_the_limit() {
    let (addr, s, _stop) = start(ServerLimits::default()).await;
    let n = crate::live::MAX_SUBSCRIPTION_KEYS;
    let devices: Vec<String> = (0..n).map(|i| format!("{i:0>64}")).collect();
    let segments: Vec<String> = (0..n).map(|i| format!("s{i:0>63}")).collect();
    let metrics: Vec<String> = telemetry::MetricId::ALL.iter().map(|m| m.to_string()).collect();
    let subscribe = serde_json::json!({"type": "subscribe", "devices": devices,
        "segments": segments, "metrics": metrics, "bbox": null, "alerts": true, "kpi": false})
    .to_string();
    assert!(subscribe.len() > 1024 * 1024, "{}", subscribe.len());
    let mut ws = ws_connect(addr).await;
    ws.send(Message::Text(subscribe.into())).await.unwrap();
    let frame = next_text(&mut ws).await.expect("open");
    assert_eq!(frame["type"], "snapshot", "{frame}");
    assert_eq!(s.http.ws_errors("message_too_big"), 0);
}

#[tokio::test]
async fn a_browser_presents_its_token_as_a_subprotocol_and_the_answer_does_not_echo_it() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (addr, _s, _stop) = start(limits(10_000, 10_000, 10)).await;
    let offer = |token: &str| {
        let mut req = format!("ws://{addr}/api/v1/live").into_client_request().unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("sccr.live, sccr.token.{token}").parse().unwrap(),
        );
        req
    };
    let (mut ws, answer) = tokio_tungstenite::connect_async(offer(ADMIN)).await.unwrap();
    assert_eq!(answer.headers()["sec-websocket-protocol"], "sccr.live");
    ws.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await.expect("open")["type"], "pong");
    // A wrong token in the subprotocol is refused like a wrong bearer token.
    let refused = tokio_tungstenite::connect_async(offer("sccr_wrong")).await.unwrap_err();
    match refused {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
}
