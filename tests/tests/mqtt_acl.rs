//! The secured broker configuration (`deploy/mosquitto/sccr-secure.conf` with
//! `deploy/mosquitto/sccr.acl`) on a real Mosquitto: passwords required, and each device
//! (username = device id) publishes only to its own topics and reads only its own commands;
//! the ingest service account reads every device, through `$share` too; only the service
//! accounts use the live bus; credentials issued by registration open the broker, and a
//! rotation shuts the old password out.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::PubAckReason;
use rumqttc::v5::{AsyncClient, MqttOptions};
use sccr_tests::mqtt::{granted, Client, Seen};
use sccr_tests::{sccr_admin, shipped_conf, workspace_root, Broker};

const ACCOUNTS: &[(&str, &str)] = &[
    ("loop-1", "pw-loop-1"),
    ("loop-2", "pw-loop-2"),
    ("sccr-ingest", "pw-ingest"),
    ("sccr-api", "pw-api"),
];

/// Mosquitto with the project's secured configuration: its listener moved to a free
/// loopback port, its files to the broker's directory, the ACL file as shipped; the
/// password file holds [`ACCOUNTS`].
async fn secure_broker() -> Broker {
    secure_broker_with(None).await
}

/// Write `accounts` to a Mosquitto password file with `mosquitto_passwd`.
fn write_passwd(path: &Path, accounts: &[(&str, &str)]) -> anyhow::Result<()> {
    for (i, (user, pass)) in accounts.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let st = cmd.arg("-b").arg(path).arg(user).arg(pass).status()?;
        anyhow::ensure!(st.success(), "mosquitto_passwd failed");
    }
    Ok(())
}

/// An empty file owned by the broker's user, for `sccr mqtt-passwd` or `sccr mqtt-acl` to
/// replace: they write mode 0600 and keep the owner of the file they replace, and
/// Mosquitto started as root reads its files as `mosquitto`.
fn broker_file(path: &Path) {
    std::fs::write(path, "").unwrap();
    let _ = Command::new("chown").arg("mosquitto:mosquitto").arg(path).status();
}

/// Like [`secure_broker`], with the password file at `passwd` when given.
async fn secure_broker_with(passwd: Option<PathBuf>) -> Broker {
    secure_broker_tls(passwd, None, None).await
}

/// Like [`secure_broker_with`], with the ACL file at `acl` when given (else the shipped
/// one); with `tls` (the PKI and a port), the configuration's commented TLS listener block
/// is switched on as shipped, its files pointed at the PKI.
async fn secure_broker_tls(
    passwd: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    tls: Option<(&sccr_tests::TestPki, u16)>,
) -> Broker {
    Broker::start_config(|dir, port| {
        let passwd = match passwd {
            Some(p) => p,
            None => {
                let p = dir.join("sccr.passwd");
                write_passwd(&p, ACCOUNTS)?;
                p
            }
        };
        let acl = match acl_file {
            Some(p) => p,
            None => {
                let p = dir.join("sccr.acl");
                std::fs::copy(workspace_root().join("deploy/mosquitto/sccr.acl"), &p)?;
                p
            }
        };
        let mut edits = vec![
            ("password_file", format!("password_file {}", passwd.display())),
            ("acl_file", format!("acl_file {}", acl.display())),
        ];
        if let Some((pki, tls_port)) = tls {
            let file = |name: &str| pki.path(name).display().to_string();
            edits.extend([
                ("listener 8883", format!("listener {tls_port} 127.0.0.1")),
                ("cafile", format!("cafile {}", file("ca.pem"))),
                ("certfile", format!("certfile {}", file("server.pem"))),
                ("keyfile", format!("keyfile {}", file("server.key"))),
            ]);
        }
        let uncomment = tls.map(|_| "# --- MQTT over TLS");
        let expected = if tls.is_some() { 10 } else { 4 };
        shipped_conf("sccr-secure.conf", dir, port, uncomment, &edits, expected)
    })
    .await
    .expect("mosquitto with sccr-secure.conf")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_publish_as_another_device() {
    let broker = secure_broker().await;
    let mut ingest = Client::connect(broker.port, "sccr-ingest", "pw-ingest").await;
    assert!(granted(ingest.subscribe("sccr/v1/devices/+/telemetry").await));
    assert!(granted(ingest.subscribe("sccr/v1/devices/+/status").await));
    let mut device = Client::connect(broker.port, "loop-1", "pw-loop-1").await;
    // Forged first, then its own: same connection, so had the forgery been delivered it
    // would arrive before the genuine message.
    assert_eq!(
        device.publish("sccr/v1/devices/loop-2/telemetry", "forged").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        device.publish("sccr/v1/devices/loop-2/status", "forged-status").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        device.publish("sccr/v1/devices/loop-1/commands", "self-command").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        device.publish("sccr/v1/devices/loop-1/telemetry", "genuine").await,
        PubAckReason::Success
    );
    let got = ingest.messages_until("genuine").await;
    assert_eq!(got, vec![("sccr/v1/devices/loop-1/telemetry".to_owned(), "genuine".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_read_another_devices_commands() {
    let broker = secure_broker().await;
    let mut spy = Client::connect(broker.port, "loop-2", "pw-loop-2").await;
    // Mosquitto 2.0 may grant the subscription itself (0x00 in SUBACK); what the ACL
    // guarantees is that no message the device may not read is ever delivered.
    let _ = spy.subscribe("sccr/v1/devices/loop-1/commands").await;
    let _ = spy.subscribe("sccr/v1/devices/+/commands").await;
    let _ = spy.subscribe("#").await;
    assert!(granted(spy.subscribe("sccr/v1/devices/loop-2/commands").await));
    let mut api = Client::connect(broker.port, "sccr-api", "pw-api").await;
    assert_eq!(
        api.publish("sccr/v1/devices/loop-1/commands", "for-loop-1").await,
        PubAckReason::Success
    );
    assert_eq!(
        api.publish("sccr/v1/devices/loop-2/commands", "for-loop-2").await,
        PubAckReason::Success
    );
    let got = spy.messages_until("for-loop-2").await;
    assert!(
        got.iter().all(|(t, _)| t == "sccr/v1/devices/loop-2/commands"),
        "loop-2 read another device's commands: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_account_reads_every_device_also_through_a_shared_subscription() {
    let broker = secure_broker().await;
    let mut ingest = Client::connect(broker.port, "sccr-ingest", "pw-ingest").await;
    assert!(granted(ingest.subscribe("$share/sccr/sccr/v1/devices/+/telemetry").await));
    assert!(granted(ingest.subscribe("$share/sccr/sccr/v1/devices/+/commands/ack").await));
    let mut d1 = Client::connect(broker.port, "loop-1", "pw-loop-1").await;
    let mut d2 = Client::connect(broker.port, "loop-2", "pw-loop-2").await;
    assert_eq!(d1.publish("sccr/v1/devices/loop-1/telemetry", "one").await, PubAckReason::Success);
    assert_eq!(
        d2.publish("sccr/v1/devices/loop-2/commands/ack", "two").await,
        PubAckReason::Success
    );
    let mut got = ingest.messages_until("one").await;
    if !got.iter().any(|(_, p)| p == "two") {
        got.extend(ingest.messages_until("two").await);
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("sccr/v1/devices/loop-1/telemetry".to_owned(), "one".to_owned()),
            ("sccr/v1/devices/loop-2/commands/ack".to_owned(), "two".to_owned())
        ]
    );
    // The API account follows acknowledgements but does not read telemetry.
    let mut api = Client::connect(broker.port, "sccr-api", "pw-api").await;
    let _ = api.subscribe("sccr/v1/devices/loop-1/telemetry").await;
    assert!(granted(api.subscribe("sccr/v1/devices/loop-1/commands/ack").await));
    assert_eq!(
        d1.publish("sccr/v1/devices/loop-1/telemetry", "not-for-api").await,
        PubAckReason::Success
    );
    assert_eq!(
        d1.publish("sccr/v1/devices/loop-1/commands/ack", "ack-for-api").await,
        PubAckReason::Success
    );
    let got = api.messages_until("ack-for-api").await;
    assert_eq!(
        got,
        vec![("sccr/v1/devices/loop-1/commands/ack".to_owned(), "ack-for-api".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_user_and_anonymous_are_refused() {
    let broker = secure_broker().await;
    for (user, pass) in [("loop-1", "wrong"), ("nobody", "pw-loop-1"), ("sccr-ingest", "")] {
        let mut c = Client::connect(broker.port, user, pass).await;
        match c.next().await {
            Seen::Refused(why) => assert!(!why.is_empty()),
            other => panic!("{user}/{pass} was not refused: {other:?}"),
        }
    }
    let mut opts = MqttOptions::new("anonymous", "127.0.0.1", broker.port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (_client, mut eventloop) = AsyncClient::new(opts, 10);
    let first =
        tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await.expect("an answer");
    assert!(first.is_err(), "an anonymous client was accepted: {first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_service_accounts_use_the_live_bus() {
    let broker = secure_broker().await;
    // Readers and writers on separate connections (a writer waiting for its PUBACK skips
    // what it receives).
    let mut api = Client::connect(broker.port, "sccr-api", "pw-api").await;
    assert!(granted(api.subscribe("sccr/v1/live/events").await));
    assert!(granted(api.subscribe("sccr/v1/control").await));
    let mut ingest = Client::connect(broker.port, "sccr-ingest", "pw-ingest").await;
    assert!(granted(ingest.subscribe("sccr/v1/control").await));
    // A device can neither forge live state for the wall nor control messages.
    let mut device = Client::connect(broker.port, "loop-1", "pw-loop-1").await;
    assert_eq!(
        device.publish("sccr/v1/live/events", "forged-live").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        device.publish("sccr/v1/control", "forged-control").await,
        PubAckReason::NotAuthorized
    );
    // The API account does not publish live state; ingest does, and the API asks ingest.
    let mut api_writer = Client::connect(broker.port, "sccr-api", "pw-api").await;
    let mut ingest_writer = Client::connect(broker.port, "sccr-ingest", "pw-ingest").await;
    assert_eq!(
        api_writer.publish("sccr/v1/live/events", "api-live").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(ingest_writer.publish("sccr/v1/live/events", "live").await, PubAckReason::Success);
    assert_eq!(api_writer.publish("sccr/v1/control", "control").await, PubAckReason::Success);
    let got = api.messages_until("control").await;
    assert_eq!(
        got,
        vec![
            ("sccr/v1/live/events".to_owned(), "live".to_owned()),
            ("sccr/v1/control".to_owned(), "control".to_owned())
        ],
        "only the genuine messages arrive"
    );
    assert_eq!(
        ingest.messages_until("control").await,
        vec![("sccr/v1/control".to_owned(), "control".to_owned())]
    );
}

/// Credentials issued by device registration (the API), written out by
/// `sccr mqtt-passwd`, open the secured broker for that device only; rotating them and
/// reloading the broker (SIGHUP) shuts the old password out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_issued_credentials_open_the_secured_broker_and_rotation_locks_the_old_password_out(
) {
    let plain = Broker::start().await.expect("mosquitto");
    let db = sccr_tests::TestDb::create().await.expect("database");
    let dir = sccr_tests::TempDir::new("acl-registry").expect("tempdir");
    let sccr = sccr_tests::Sccr::serve(plain.port, &db.url, &dir.path, &[]).expect("sccr");
    sccr.wait_healthy().await;
    let issue = |method: &'static str, path: &'static str, body: &'static str| {
        let port = sccr.api_port;
        async move {
            let (status, body) = sccr_tests::http_send(port, method, path, body).await.unwrap();
            assert!(status == 200 || status == 201, "{method} {path}: {status} {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            (
                v["mqtt"]["username"].as_str().unwrap().to_owned(),
                v["mqtt"]["password"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (user, first) =
        issue("POST", "/api/v1/devices", r#"{"id":"loop-9","kind":"traffic_loop"}"#).await;
    assert_eq!(user, "loop-9");

    // The broker's file: the service accounts, then the registry's hashes.
    let services = dir.path.join("services.passwd");
    write_passwd(&services, &[("sccr-ingest", "pw-ingest")]).unwrap();
    let passwd = dir.path.join("sccr.passwd");
    let mqtt_passwd = || sccr_admin("mqtt-passwd", &passwd, &services, &db.url).unwrap();
    broker_file(&passwd);
    mqtt_passwd();
    let broker = secure_broker_with(Some(passwd.clone())).await;

    let mut ingest = Client::connect(broker.port, "sccr-ingest", "pw-ingest").await;
    assert!(granted(ingest.subscribe("sccr/v1/devices/+/telemetry").await));
    let mut device = Client::connect(broker.port, "loop-9", &first).await;
    assert_eq!(
        device.publish("sccr/v1/devices/loop-1/telemetry", "forged").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        device.publish("sccr/v1/devices/loop-9/telemetry", "issued").await,
        PubAckReason::Success
    );
    assert_eq!(
        ingest.messages_until("issued").await,
        vec![("sccr/v1/devices/loop-9/telemetry".to_owned(), "issued".to_owned())]
    );
    drop(device);

    // Rotation: the new file, a reload, and the old password is refused.
    let (_, second) = issue("POST", "/api/v1/devices/loop-9/credentials", "").await;
    assert_ne!(first, second);
    mqtt_passwd();
    let pid = broker.pid().unwrap().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    sccr_tests::wait_for(
        "the reloaded broker refusing the old password",
        Duration::from_secs(10),
        || {
            let first = first.clone();
            async move {
                let mut c = Client::connect(broker.port, "loop-9", &first).await;
                matches!(c.next().await, Seen::Refused(_)).then_some(())
            }
        },
    )
    .await;
    let mut device = Client::connect(broker.port, "loop-9", &second).await;
    assert_eq!(
        device.publish("sccr/v1/devices/loop-9/telemetry", "rotated").await,
        PubAckReason::Success
    );
    assert_eq!(
        ingest.messages_until("rotated").await,
        vec![("sccr/v1/devices/loop-9/telemetry".to_owned(), "rotated".to_owned())]
    );
}

/// The shipped TLS listener block, switched on: a field device presenting a client
/// certificate signed by the CA is admitted with its certificate's CN as username (the
/// ACL's `%u`), so it publishes its own telemetry; without a certificate it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_tls_listener_admits_certificates_as_device_identities() {
    let pki = sccr_tests::TestPki::create("aq-tls").expect("openssl");
    let tls_port = sccr_tests::free_port();
    let broker = secure_broker_tls(None, None, Some((&pki, tls_port))).await;
    let mut ingest = Client::connect(broker.port, "sccr-ingest", "pw-ingest").await;
    assert!(granted(ingest.subscribe("sccr/v1/devices/+/telemetry").await));
    sccr_tests::wait_for("the TLS listener", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", tls_port)).await.ok()
    })
    .await;
    let dir = sccr_tests::TempDir::new("acl-tls").expect("tempdir");
    let agent_config = |name: &str, client_cert: bool| {
        let mut text =
            format!("[agent]\nid = \"aq-tls\"\n{}", pki.agent_mqtt(tls_port, client_cert));
        text.push_str(&format!(
            "[buffer]\ndir = \"{}\"\n[[devices]]\nid = \"aq-tls\"\ndriver = \"air_quality\"\ninterval = \"300ms\"\n",
            dir.path.join(format!("buffer-{name}")).display()
        ));
        let path = dir.path.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let refused = sccr_tests::EdgeAgent::run(&agent_config("nocert", false), &dir.path, "nocert")
        .expect("agent");
    let agent =
        sccr_tests::EdgeAgent::run(&agent_config("cert", true), &dir.path, "cert").expect("agent");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut delivered = false;
    while !delivered && tokio::time::Instant::now() < deadline {
        if let Ok(Some(Seen::Message(topic, _))) =
            tokio::time::timeout(Duration::from_millis(500), ingest.rx.recv()).await
        {
            delivered = topic == "sccr/v1/devices/aq-tls/telemetry";
        }
    }
    assert!(delivered, "no telemetry from the certified device; agent log:\n{}", agent.log_text());
    sccr_tests::wait_for(
        "the agent's readings acknowledged over TLS",
        Duration::from_secs(20),
        || async { (agent.stat("acked")? >= 2).then_some(()) },
    )
    .await;
    assert_eq!(refused.stat("connections"), Some(0), "no certificate, no connection");
}

/// A gateway (an edge agent serving several devices) registered with its devices:
/// `sccr mqtt-acl` grants its account the topics of the devices it serves, and no other;
/// unlinking a device and reloading the broker takes the grant back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_publishes_for_the_devices_it_serves_and_no_others() {
    let plain = Broker::start().await.expect("mosquitto");
    let db = sccr_tests::TestDb::create().await.expect("database");
    let dir = sccr_tests::TempDir::new("acl-gateway").expect("tempdir");
    let sccr = sccr_tests::Sccr::serve(plain.port, &db.url, &dir.path, &[]).expect("sccr");
    sccr.wait_healthy().await;
    let port = sccr.api_port;
    let register = |body: &'static str| async move {
        let (status, body) =
            sccr_tests::http_send(port, "POST", "/api/v1/devices", body).await.unwrap();
        assert_eq!(status, 201, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let cabinet = register(r#"{"id":"cabinet-7","kind":"gateway"}"#).await;
    let password = cabinet["mqtt"]["password"].as_str().unwrap().to_owned();
    let served = register(r#"{"id":"loop-71","kind":"traffic_loop","gateway":"cabinet-7"}"#).await;
    assert_eq!(served["device"]["gateway"], "cabinet-7");
    register(r#"{"id":"loop-72","kind":"traffic_loop","gateway":"cabinet-7"}"#).await;
    register(r#"{"id":"loop-73","kind":"traffic_loop"}"#).await;
    for (body, why) in [
        (r#"{"id":"loop-74","gateway":"nowhere"}"#, "an unknown gateway"),
        (r#"{"id":"loop-75","gateway":"loop-75"}"#, "itself"),
    ] {
        let (status, answer) =
            sccr_tests::http_send(port, "POST", "/api/v1/devices", body).await.unwrap();
        // Valid JSON the registry refuses: 422 (a schema cannot say it).
        assert_eq!(status, 422, "{why}: {answer}");
        assert!(answer.contains("gateway"), "{answer}");
    }

    let services = dir.path.join("services.passwd");
    write_passwd(&services, &[("sccr-ingest", "pw-ingest")]).unwrap();
    let (passwd, acl) = (dir.path.join("sccr.passwd"), dir.path.join("sccr.acl"));
    let base_acl = workspace_root().join("deploy/mosquitto/sccr.acl");
    let admin = |command: &str, out: &Path, include: &Path| {
        sccr_admin(command, out, include, &db.url).unwrap()
    };
    broker_file(&passwd);
    broker_file(&acl);
    admin("mqtt-passwd", &passwd, &services);
    assert!(admin("mqtt-acl", &acl, &base_acl).contains("2 gateway grants"));
    let broker = secure_broker_tls(Some(passwd.clone()), Some(acl.clone()), None).await;

    let mut ingest = Client::connect(broker.port, "sccr-ingest", "pw-ingest").await;
    assert!(granted(ingest.subscribe("sccr/v1/devices/+/telemetry").await));
    let mut gateway = Client::connect(broker.port, "cabinet-7", &password).await;
    assert_eq!(
        gateway.publish("sccr/v1/devices/loop-73/telemetry", "not-mine").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        gateway.publish("sccr/v1/devices/loop-71/telemetry", "one").await,
        PubAckReason::Success
    );
    assert_eq!(
        gateway.publish("sccr/v1/devices/loop-72/telemetry", "two").await,
        PubAckReason::Success
    );
    let own = gateway.publish("sccr/v1/devices/cabinet-7/status", "own-status").await;
    assert!(
        matches!(own, PubAckReason::Success | PubAckReason::NoMatchingSubscribers),
        "its own status: {own:?}"
    );
    assert_eq!(
        ingest.messages_until("two").await,
        vec![
            ("sccr/v1/devices/loop-71/telemetry".to_owned(), "one".to_owned()),
            ("sccr/v1/devices/loop-72/telemetry".to_owned(), "two".to_owned())
        ]
    );

    // loop-72 leaves the cabinet: the grant goes with the next ACL and a reload.
    let (status, body) =
        sccr_tests::http_send(port, "PATCH", "/api/v1/devices/loop-72", r#"{"gateway":null}"#)
            .await
            .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(admin("mqtt-acl", &acl, &base_acl).contains("1 gateway grants"));
    let pid = broker.pid().unwrap().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    sccr_tests::wait_for(
        "the reloaded ACL refusing loop-72 to the gateway",
        Duration::from_secs(10),
        || {
            let password = password.clone();
            async move {
                let mut c = Client::connect(broker.port, "cabinet-7", &password).await;
                (c.publish("sccr/v1/devices/loop-72/telemetry", "after").await
                    == PubAckReason::NotAuthorized)
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        gateway.publish("sccr/v1/devices/loop-71/telemetry", "still").await,
        PubAckReason::Success
    );
}
