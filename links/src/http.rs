//! The webhook HTTP client: HTTP/1.1 over hyper 1 (hyper-util's pooled client), plain or
//! over TLS (rustls with the `ring` provider, through hyper-rustls).
//!
//! - Trust: the system's CA certificates (Debian's `/etc/ssl/certs`, or `SSL_CERT_FILE`),
//!   or only those of `webhooks.ca_file` when it is set.
//! - Mutual TLS: `webhooks.client_cert` (PEM chain) with `webhooks.client_key` (PEM key).
//! - Destinations: every host name is resolved by `ScreenedResolver`, which hands the
//!   connector only the addresses the [`DestinationPolicy`] admits; IP literals, which the
//!   connector does not resolve, are judged before the request. Redirects are not
//!   followed, so a receiver cannot send the dispatcher elsewhere.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::destination::{self, DestinationError, DestinationPolicy, HostVerdict};

/// The files of the client's TLS settings; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA certificates trusted instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to receivers that ask for one (mutual TLS).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert` (PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
}

/// TLS settings that cannot be used, naming the configuration key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhooks.{key}: {message}")]
pub struct TlsConfigError {
    pub key: &'static str,
    pub message: String,
}

fn tls_error(key: &'static str, message: impl Into<String>) -> TlsConfigError {
    TlsConfigError { key, message: message.into() }
}

impl TlsFiles {
    /// The rustls client configuration these files make (files read now).
    pub fn client_config(&self) -> Result<ClientConfig, TlsConfigError> {
        let roots = match &self.ca_file {
            Some(path) => file_roots(path)?,
            None => system_roots(),
        };
        self.with_client_auth(roots)
    }

    /// Every problem of these files, each naming its key (for `check-config`).
    pub fn problems(&self) -> Vec<TlsConfigError> {
        let ca = self.ca_file.as_deref().map(file_roots).and_then(Result::err);
        // The client pair is checked on its own, against no roots.
        let client = self.with_client_auth(RootCertStore::empty()).err();
        ca.into_iter().chain(client).collect()
    }

    fn with_client_auth(&self, roots: RootCertStore) -> Result<ClientConfig, TlsConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("ca_file", format!("no TLS protocol version: {e}")))?
            .with_root_certificates(roots);
        match (&self.client_cert, &self.client_key) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(key)) => {
                let chain = certificates("client_cert", cert)?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    tls_error("client_key", format!("no PEM private key in {}: {e}", key.display()))
                })?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    tls_error(
                        "client_key",
                        format!("{} does not go with webhooks.client_cert: {e}", key.display()),
                    )
                })
            }
            (Some(_), None) => {
                Err(tls_error("client_key", "is required with webhooks.client_cert"))
            }
            (None, Some(_)) => {
                Err(tls_error("client_cert", "is required with webhooks.client_key"))
            }
        }
    }
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(key, format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(key, format!("{} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_error(key, format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certs)
}

fn file_roots(path: &Path) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("ca_file", path)? {
        roots.add(cert).map_err(|e| {
            tls_error("ca_file", format!("{} holds a bad CA certificate: {e}", path.display()))
        })?;
    }
    Ok(roots)
}

fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "cannot read a system CA certificate");
    }
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            "no system CA certificates found: https webhooks will fail until webhooks.ca_file is set"
        );
    }
    roots
}

/// Resolves host names for the connector and keeps only the admitted addresses.
#[derive(Clone)]
pub(crate) struct ScreenedResolver {
    policy: Arc<DestinationPolicy>,
}

type Resolving = Pin<
    Box<
        dyn Future<Output = Result<std::vec::IntoIter<std::net::SocketAddr>, DestinationError>>
            + Send,
    >,
>;

impl tower_service::Service<Name> for ScreenedResolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = DestinationError;
    type Future = Resolving;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(
            async move { destination::resolve(&policy, name.as_str()).await.map(Vec::into_iter) },
        )
    }
}

/// Why a POST came to no status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PostError {
    /// The destination policy refused the receiver's address.
    Refused(String),
    /// Anything else: connection, TLS, timeout.
    Failed(String),
}

impl PostError {
    pub fn message(self) -> String {
        match self {
            PostError::Refused(m) | PostError::Failed(m) => m,
        }
    }
}

/// What a POST came to: the status, or why there was none.
pub(crate) type PostResult = Result<u16, PostError>;

/// The client of the webhook dispatcher.
#[derive(Clone)]
pub struct WebhookClient {
    client: Client<HttpsConnector<HttpConnector<ScreenedResolver>>, Full<Bytes>>,
    policy: Arc<DestinationPolicy>,
    timeout: Duration,
}

impl WebhookClient {
    /// A client answering within `timeout` (connect included), trusting and presenting
    /// what `tls` names, posting only where `policy` admits.
    pub fn new(
        timeout: Duration,
        tls: &TlsFiles,
        policy: DestinationPolicy,
    ) -> Result<Self, TlsConfigError> {
        let policy = Arc::new(policy);
        let mut http =
            HttpConnector::new_with_resolver(ScreenedResolver { policy: policy.clone() });
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.client_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Self { client, policy, timeout })
    }

    pub(crate) async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> PostResult {
        let failed = PostError::Failed;
        let uri: Uri = url.parse().map_err(|e| failed(format!("bad url {url}: {e}")))?;
        // The connector resolves only names: an address in the URL is judged here.
        if let HostVerdict::Refused(e) = self.policy.judge_host(uri.host().unwrap_or_default()) {
            return Err(PostError::Refused(e.to_string()));
        }
        let authority = uri.authority().map(ToString::to_string).unwrap_or_default();
        let mut req = Request::post(uri);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req =
            req.body(Full::new(body)).map_err(|e| failed(format!("bad request for {url}: {e}")))?;
        let send = async {
            let resp = self.client.request(req).await.map_err(|e| describe(&e, &authority))?;
            let status = resp.status().as_u16();
            // Read (and drop) the body so the connection goes back to the pool.
            let _ = resp.into_body().collect().await;
            Ok(status)
        };
        match tokio::time::timeout(self.timeout, send).await {
            Ok(r) => r,
            Err(_) => Err(failed(format!("no answer within {:?}", self.timeout))),
        }
    }
}

/// The error of a request, refused destinations told apart, TLS failures explained.
fn describe(e: &hyper_util::client::legacy::Error, authority: &str) -> PostError {
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        if let Some(refused) = s.downcast_ref::<DestinationError>() {
            return match refused {
                DestinationError::Resolve { .. } => PostError::Failed(refused.to_string()),
                _ => PostError::Refused(refused.to_string()),
            };
        }
        cur = s.source();
    }
    let chain = source_chain(e);
    let what = if e.is_connect() { "cannot connect to" } else { "request failed at" };
    let hint = if chain.contains("UnknownIssuer") {
        " (its certificate is not signed by a trusted CA: the system's, or webhooks.ca_file)"
    } else if chain.contains("CertificateRequired") {
        " (the receiver asks for a client certificate: webhooks.client_cert and client_key)"
    } else {
        ""
    };
    PostError::Failed(format!("{what} {authority}: {chain}{hint}"))
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
