//! The HTTP server around [`crate::app`]: HTTP/1.1 over hyper with three limits, so slow
//! or incomplete requests cannot hold the process's descriptors.
//!
//! - **Header timeout**: a connection whose request head (line and headers) has not fully
//!   arrived this long after the server started waiting for it is closed; the same timer
//!   closes keep-alive connections idle between requests.
//! - **Request timeout**: a request whose answer has not started this long after its head
//!   arrived gets 503 `timeout` and the connection is closed. It covers reading the body and
//!   the handler, not a streamed answer (exports) and not a websocket session, which leaves
//!   HTTP once upgraded.
//! - **Connection limit**: at most `max_connections` connections (websockets included) are
//!   served at once. One over the limit is answered 503 `too_many_connections` and closed
//!   (up to [`REFUSALS_MAX`] such answers at a time; beyond that it is closed at once).
//!
//! Each refusal and timeout is counted (`sccr_http_connections_refused_total`,
//! `sccr_http_timeouts_total{phase}`); `sccr_http_connections` is the number open.
//! Proven with real sockets by `tests::server`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::error::ApiError;
use crate::http_metrics::HttpMetrics;

/// Refusals (503 answers to connections over the limit) in progress at once.
pub const REFUSALS_MAX: usize = 64;
/// How long a refused connection may take to send its request head.
const REFUSAL_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The limits of [`serve`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerLimits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 20_000,
        }
    }
}

/// Serve `app` on `listener` until `shutdown` completes, then stop accepting, let the
/// requests in progress finish and return.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    metrics: Arc<HttpMetrics>,
    shutdown: impl Future<Output = ()>,
) {
    let app = app.layer(axum::middleware::from_fn_with_state(
        (limits.request_timeout, metrics.clone()),
        request_timeout,
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_MAX));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                metrics.connections_open.fetch_add(1, Ordering::Relaxed);
                let stream = Counted {
                    io: stream,
                    _slot: Slot { _permit: permit, metrics: metrics.clone() },
                };
                let (app, metrics, stop) = (app.clone(), metrics.clone(), stop_rx.clone());
                tokio::spawn(async move {
                    serve_connection(stream, peer, app, limits.header_timeout, &metrics, stop)
                        .await;
                });
            }
            Err(_) => {
                metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(stream, limits.max_connections).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection task holds a clone of the receiver.
    drop(stop_rx);
    stop_tx.closed().await;
}

async fn serve_connection(
    stream: Counted,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    metrics: &HttpMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    if e.is_timeout() {
                        metrics.timeout("headers");
                    } else {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A connection's place under the limit, given back when its socket is dropped: after
/// its last request, or after the websocket session it was upgraded to.
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<HttpMetrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket holding its [`Slot`].
struct Counted {
    io: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Answer 503 to the first request of a connection over the limit, then close it.
async fn refuse(stream: TcpStream, max_connections: usize) {
    let service = hyper::service::service_fn(move |_req: hyper::Request<Incoming>| async move {
        let mut resp = ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "too_many_connections",
            message: format!(
                "the server holds its limit of {max_connections} connections (api.max_connections); retry shortly"
            ),
            param: None,
            errors: Vec::new(),
        }
        .into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
        Ok::<_, Infallible>(resp)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(REFUSAL_HEADER_TIMEOUT).keep_alive(false);
    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
}

/// Middleware: a request whose answer has not started within the limit gets 503.
async fn request_timeout(
    State((limit, metrics)): State<(Duration, Arc<HttpMetrics>)>,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            metrics.timeout("request");
            let mut resp = ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "timeout",
                message: format!(
                    "no answer within {} (api.request_timeout)",
                    humantime::format_duration(limit)
                ),
                param: None,
                errors: Vec::new(),
            }
            .into_response();
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}
