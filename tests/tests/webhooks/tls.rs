//! Webhooks over https (receivers with certificates made here, mutual TLS, an untrusted
//! receiver retried) and destinations outside the allow-list refused after resolving.

use super::*;

/// The test's PKI: a CA the dispatcher is told to trust, a receiver certificate and a
/// client certificate it signed, and a receiver certificate of a CA nobody trusts.
struct Pki {
    ca_pem: String,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    server: (rustls::pki_types::CertificateDer<'static>, Vec<u8>),
    client_pem: (String, String),
    client_der: rustls::pki_types::CertificateDer<'static>,
    rogue_server: (rustls::pki_types::CertificateDer<'static>, Vec<u8>),
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let leaf = |issuer: &CertifiedIssuer<'_, KeyPair>, names: Vec<String>, usage| {
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "sccr test");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, issuer).unwrap(), key)
    };
    let names = || vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let city = ca("Comune di Firenze test CA");
    let rogue = ca("Someone else's CA");
    let (server, server_key) = leaf(&city, names(), ExtendedKeyUsagePurpose::ServerAuth);
    let (client, client_key) =
        leaf(&city, vec!["sccr-dispatcher".into()], ExtendedKeyUsagePurpose::ClientAuth);
    let (rogue_server, rogue_key) = leaf(&rogue, names(), ExtendedKeyUsagePurpose::ServerAuth);
    Pki {
        ca_pem: city.pem(),
        ca_der: city.der().clone(),
        server: (server.der().clone(), server_key.serialize_der()),
        client_pem: (client.pem(), client_key.serialize_pem()),
        client_der: client.der().clone(),
        rogue_server: (rogue_server.der().clone(), rogue_key.serialize_der()),
    }
}

/// A request a TLS receiver took: its hook, event id, whether it was signed, and the
/// client certificate (DER) of its connection.
type TlsRequest = (String, i64, bool, Option<Vec<u8>>);

/// What a TLS receiver saw: its requests, and the handshakes that failed.
#[derive(Clone, Default)]
struct TlsReceiver {
    requests: Arc<Mutex<Vec<TlsRequest>>>,
    failed_handshakes: Arc<AtomicUsize>,
}

/// An https receiver on a free port with `cert`, asking for a client certificate signed by
/// `client_ca` when given; answers 204 to signed CloudEvents.
async fn start_tls_receiver(
    cert: (rustls::pki_types::CertificateDer<'static>, Vec<u8>),
    client_ca: Option<rustls::pki_types::CertificateDer<'static>>,
) -> (u16, TlsReceiver, JoinHandle<()>) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.1));
    let config = builder.with_single_cert(vec![cert.0], key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = TlsReceiver::default();
    let r = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, r) = (acceptor.clone(), r.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    r.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let peer =
                    tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (r, peer) = (r.clone(), peer.clone());
                    async move {
                        use http_body_util::BodyExt;
                        let hook = req.uri().path().trim_start_matches("/hook/").to_owned();
                        let h = |k: &str| {
                            req.headers()
                                .get(k)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let (ts, sig) = (h(TIMESTAMP_HEADER), h(SIGNATURE_HEADER));
                        let body = req.into_body().collect().await?.to_bytes();
                        let signed = ts
                            .parse::<i64>()
                            .is_ok_and(|ts| verify(SECRET.as_bytes(), ts, &body, &sig));
                        let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let id = event["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or(-1);
                        r.requests.lock().unwrap().push((hook, id, signed, peer));
                        let resp = hyper::Response::builder()
                            .status(204)
                            .body(http_body_util::Empty::<Bytes>::new())
                            .unwrap();
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, seen, task)
}

fn fast_config() -> DispatcherConfig {
    DispatcherConfig {
        source: "urn:sccr:test".into(),
        poll_interval: Duration::from_millis(20),
        request_timeout: Duration::from_secs(2),
        backoff: Backoff {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(200),
            max_attempts: 1_000,
        },
        concurrency: 8,
        retention: Duration::from_secs(86_400),
    }
}

async fn subscribe(store: &Store, url: String) -> i64 {
    store
        .create_webhook(&NewWebhook {
            url,
            types: vec![],
            secret: SECRET.into(),
            enabled: true,
            format: WebhookFormat::CloudEvents,
        })
        .await
        .unwrap()
        .id
}

/// Waits until every delivery of `hook` failed at least twice (it is retried) and is
/// still pending; returns its last error.
async fn retried_error(store: &Store, hook: i64, what: &str) -> String {
    wait_for(what, Duration::from_secs(20), || async {
        let d = store.deliveries(hook, None, 10).await.unwrap();
        (d.len() == 1 && d[0].state == DeliveryState::Pending && d[0].attempts >= 2)
            .then(|| d[0].last_error.clone().unwrap_or_default())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receivers_get_deliveries_over_mutual_tls_and_an_untrusted_one_fails_and_is_retried()
{
    let db = TestDb::create().await.unwrap();
    let store = Store::connect(&db.url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let dir = TempDir::new("webhooks-tls").unwrap();
    let pki = pki();
    let file = |name: &str, text: &str| {
        let path = dir.path.join(name);
        std::fs::write(&path, text).unwrap();
        Some(path)
    };
    let tls = TlsFiles {
        ca_file: file("ca.pem", &pki.ca_pem),
        client_cert: file("client.pem", &pki.client_pem.0),
        client_key: file("client.key", &pki.client_pem.1),
    };
    // A key that is not the certificate's is refused at start, naming the key.
    let other_key = file("other.key", &rcgen::KeyPair::generate().unwrap().serialize_pem());
    let mismatched = TlsFiles { client_key: other_key.clone(), ..tls.clone() };
    let Err(e) =
        WebhookClient::new(Duration::from_secs(1), &mismatched, DestinationPolicy::default())
    else {
        panic!("a client key that does not match its certificate was accepted")
    };
    let expected =
        format!("{} does not go with webhooks.client_cert: ", other_key.unwrap().display());
    assert!(e.to_string().starts_with(&format!("webhooks.client_key: {expected}")), "{e}");
    assert_eq!(mismatched.problems(), [e]);
    assert!(tls.problems().is_empty());

    let (port, trusted, trusted_task) =
        start_tls_receiver(pki.server.clone(), Some(pki.ca_der.clone())).await;
    let (rogue_port, rogue, rogue_task) = start_tls_receiver(pki.rogue_server.clone(), None).await;
    let by_name = subscribe(&store, format!("https://localhost:{port}/hook/by-name")).await;
    let by_address = subscribe(&store, format!("https://127.0.0.1:{port}/hook/by-address")).await;
    let untrusted = subscribe(&store, format!("https://localhost:{rogue_port}/hook/rogue")).await;

    let config = fast_config();
    let client =
        WebhookClient::new(config.request_timeout, &tls, DestinationPolicy::default()).unwrap();
    let metrics = Arc::new(DispatcherMetrics::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let dispatcher =
        tokio::spawn(run_dispatcher(store.clone(), config, client, metrics.clone(), shutdown_rx));
    let alert = raise_id(&store, "congestion", seg("viale-strozzi")).await;
    let event = store.outbox_events(0, 10).await.unwrap()[0].id;
    assert_eq!(store.outbox_events(0, 10).await.unwrap().len(), 1, "alert {alert} raised once");

    wait_for("both https deliveries recorded", Duration::from_secs(20), || async {
        let mut done = 0;
        for hook in [by_name, by_address] {
            let d = store.deliveries(hook, None, 10).await.unwrap();
            done += usize::from(d.len() == 1 && d[0].state == DeliveryState::Delivered);
        }
        (done == 2).then_some(())
    })
    .await;
    let mut seen = trusted.requests.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for ((hook, id, signed, peer), expected) in seen.iter().zip(["by-address", "by-name"]) {
        assert_eq!((hook.as_str(), *id, *signed), (expected, event, true));
        assert_eq!(peer.as_deref(), Some(pki.client_der.as_ref()), "the client certificate");
    }

    let error = retried_error(&store, untrusted, "the untrusted receiver's delivery retried").await;
    assert_eq!(
        error,
        format!(
            "cannot connect to localhost:{rogue_port}: invalid peer certificate: UnknownIssuer \
             (its certificate is not signed by a trusted CA: the system's, or webhooks.ca_file)"
        )
    );
    assert!(rogue.requests.lock().unwrap().is_empty(), "nothing posted past a failed handshake");
    assert!(rogue.failed_handshakes.load(Ordering::SeqCst) >= 2);
    assert_eq!(metrics.delivered.load(Ordering::SeqCst), 2);
    assert_eq!(metrics.refused.load(Ordering::SeqCst), 0);

    // Without the client certificate, the receiver asking for one refuses the handshake.
    let _ = shutdown_tx.send(true);
    tokio::time::timeout(Duration::from_secs(10), dispatcher).await.unwrap().unwrap();
    let anonymous = TlsFiles { ca_file: tls.ca_file.clone(), ..TlsFiles::default() };
    let config = fast_config();
    let client =
        WebhookClient::new(config.request_timeout, &anonymous, DestinationPolicy::default())
            .unwrap();
    let no_cert = subscribe(&store, format!("https://localhost:{port}/hook/no-cert")).await;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let dispatcher =
        tokio::spawn(run_dispatcher(store.clone(), config, client, metrics.clone(), shutdown_rx));
    raise_id(&store, "congestion", seg("lungarno-acciaiuoli")).await;
    let error = retried_error(&store, no_cert, "the delivery without a client certificate").await;
    assert_eq!(
        error,
        format!(
            "request failed at localhost:{port}: connection error: received fatal alert: \
             CertificateRequired (the receiver asks for a client certificate: \
             webhooks.client_cert and client_key)"
        )
    );
    assert!(trusted.requests.lock().unwrap().iter().all(|r| r.0 != "no-cert"));

    let _ = shutdown_tx.send(true);
    tokio::time::timeout(Duration::from_secs(10), dispatcher).await.unwrap().unwrap();
    trusted_task.abort();
    rogue_task.abort();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_outside_the_allow_list_are_refused_at_delivery_after_resolving_and_retried() {
    let db = TestDb::create().await.unwrap();
    let store = Store::connect(&db.url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let port = free_port();
    let receiver = Receiver::default();
    let (stop, server) = start_receiver(port, receiver.clone()).await;
    // Subscribed before the list was set (the API would refuse them now).
    let named = subscribe(&store, format!("http://localhost:{port}/hook/named")).await;
    let literal = subscribe(&store, format!("http://127.0.0.1:{port}/hook/literal")).await;

    // "localhost" passes a look at the URL text against a list of networks; the address it
    // resolves to at delivery does not.
    let config = fast_config();
    let metrics = Arc::new(DispatcherMetrics::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let strict = plain_client(config.request_timeout, &["10.0.0.0/8"]);
    let dispatcher = tokio::spawn(run_dispatcher(
        store.clone(),
        config.clone(),
        strict,
        metrics.clone(),
        shutdown_rx,
    ));
    raise_id(&store, "congestion", seg("viale-strozzi")).await;
    let event = store.outbox_events(0, 10).await.unwrap()[0].id;
    let error = retried_error(&store, named, "the named destination refused").await;
    assert!(
        error.starts_with(
            "destination refused: localhost resolves only to refused addresses: 127.0.0.1 is not \
             in the allowed destinations"
        ),
        "{error}"
    );
    let error = retried_error(&store, literal, "the address destination refused").await;
    assert_eq!(
        error,
        "destination refused: 127.0.0.1 is not in the allowed destinations \
         (webhooks.allowed_destinations)"
    );
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 0, "nothing reached the receiver");
    assert!(metrics.refused.load(Ordering::SeqCst) >= 4);
    assert_eq!(metrics.delivered.load(Ordering::SeqCst), 0);
    let _ = shutdown_tx.send(true);
    tokio::time::timeout(Duration::from_secs(10), dispatcher).await.unwrap().unwrap();

    // Allowed again: the pending deliveries go out on their next attempt.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let open = plain_client(config.request_timeout, &["127.0.0.1"]);
    let dispatcher =
        tokio::spawn(run_dispatcher(store.clone(), config, open, metrics.clone(), shutdown_rx));
    wait_for("both delivered once allowed", Duration::from_secs(20), || async {
        (receiver.distinct("named") == BTreeSet::from([event])
            && receiver.distinct("literal") == BTreeSet::from([event]))
        .then_some(())
    })
    .await;
    let _ = shutdown_tx.send(true);
    tokio::time::timeout(Duration::from_secs(10), dispatcher).await.unwrap().unwrap();
    for hook in [named, literal] {
        let d = store.deliveries(hook, None, 10).await.unwrap();
        assert_eq!(d[0].state, DeliveryState::Delivered);
        assert!(d[0].attempts >= 3, "{d:?}");
    }
    let _ = stop.send(());
    let _ = server.await;
    store.close().await;
}
