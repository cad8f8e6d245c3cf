//! The webhook HTTP client: plain HTTP/1.1 over hyper 1 (hyper-util's pooled client).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Clone)]
pub(crate) struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

/// What a POST came to: the status, or why there was none.
pub(crate) type PostResult = Result<u16, String>;

impl HttpClient {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { client, timeout }
    }

    pub async fn post(&self, url: &str, headers: &[(&str, String)], body: Bytes) -> PostResult {
        let mut req = Request::post(url);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(Full::new(body)).map_err(|e| format!("bad request for {url}: {e}"))?;
        let send = async {
            let resp =
                self.client.request(req).await.map_err(|e| format!("{e}: {}", source_chain(&e)))?;
            let status = resp.status().as_u16();
            // Read (and drop) the body so the connection goes back to the pool.
            let _ = resp.into_body().collect().await;
            Ok(status)
        };
        match tokio::time::timeout(self.timeout, send).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
