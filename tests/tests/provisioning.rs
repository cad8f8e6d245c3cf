//! Broker provisioning through Mosquitto's dynamic security plugin
//! (`[provisioning] mode = "dynsec"`, `deploy/mosquitto/sccr-dynsec.conf`, initialised
//! with `mosquitto_ctrl dynsec init` and `deploy/mosquitto/sccr-dynsec-accounts.sh`) on a
//! real Mosquitto and `sccr serve`: a device registered through the API connects right
//! after the answer, with no password file and no reload; a rotation shuts the old
//! password out at once; a decommissioned device is disconnected and refused; a gateway
//! gets its devices' topics through their roles; a registration while the broker is down
//! is answered as pending and applied when the broker returns, or, if the password was
//! lost with the process, waits disabled for a rotation; devices registered under password
//! files move to the plugin with their passwords (`sccr mqtt-dynsec`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::PubAckReason;
use sccr_tests::mqtt::{granted, Client, Seen};
use sccr_tests::{shipped_conf, workspace_root, Broker, Sccr, TempDir, TestDb};
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("sccr-provisioning", "pw-provisioning");
const INGEST: (&str, &str) = ("sccr-ingest", "pw-ingest");
const API: (&str, &str) = ("sccr-api", "pw-api");

/// Where Debian and the upstream image install the plugin.
fn plugin() -> String {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
    ];
    candidates
        .iter()
        .find(|p| Path::new(p).exists())
        .expect("mosquitto's dynamic security plugin (Debian's mosquitto package ships it)")
        .to_string()
}

/// Mosquitto with `deploy/mosquitto/sccr-dynsec.conf` (its listener moved to a free
/// loopback port, its files to the broker's directory), the plugin's file made by
/// `mosquitto_ctrl dynsec init`, and the service accounts made by the shipped script.
async fn dynsec_broker() -> Broker {
    dynsec_broker_with(|_| Ok(())).await
}

/// Like [`dynsec_broker`], with `prepare` run on the plugin's file before the broker
/// starts.
async fn dynsec_broker_with(prepare: impl FnOnce(&Path) -> anyhow::Result<()>) -> Broker {
    let broker = Broker::start_config(|dir, port| {
        let json = dir.join("dynamic-security.json");
        let st = Command::new("mosquitto_ctrl")
            .args(["dynsec", "init"])
            .arg(&json)
            .args([ADMIN.0, ADMIN.1])
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(st.success(), "mosquitto_ctrl dynsec init failed");
        prepare(&json)?;
        let edits = [
            ("plugin", format!("plugin {}", plugin())),
            ("plugin_opt_config_file", format!("plugin_opt_config_file {}", json.display())),
        ];
        shipped_conf("sccr-dynsec.conf", dir, port, None, &edits, 4)
    })
    .await
    .expect("mosquitto with sccr-dynsec.conf");
    let out = Command::new("sh")
        .arg(workspace_root().join("deploy/mosquitto/sccr-dynsec-accounts.sh"))
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .env("BROKER_ADMIN", ADMIN.0)
        .env("BROKER_ADMIN_PASSWORD", ADMIN.1)
        .env("MQTT_PASSWORD", INGEST.1)
        .env("MQTT_API_PASSWORD", API.1)
        .output()
        .unwrap();
    assert!(out.status.success(), "accounts script: {}", String::from_utf8_lossy(&out.stderr));
    broker
}

/// `sccr serve` on `broker` as the ingest account, provisioning through the plugin.
fn serve(broker: &Broker, db: &TestDb, dir: &TempDir) -> Sccr {
    Sccr::serve(
        broker.port,
        &db.url,
        &dir.path,
        &[
            ("SCCR_MQTT__USERNAME", INGEST.0),
            ("SCCR_MQTT__PASSWORD", INGEST.1),
            ("SCCR_PROVISIONING__MODE", "dynsec"),
            ("SCCR_PROVISIONING__USERNAME", ADMIN.0),
            ("SCCR_PROVISIONING__PASSWORD", ADMIN.1),
            ("SCCR_PROVISIONING__RECONCILE_INTERVAL", "1s"),
        ],
    )
    .expect("sccr")
}

/// A figure of `/metrics`.
async fn metric(sccr: &Sccr, name: &str) -> Option<u64> {
    sccr_tests::metric(sccr.api_port, name).await.map(|v| v as u64)
}

async fn ready(sccr: &Sccr) {
    sccr.wait_healthy().await;
    sccr_tests::wait_for("the provisioning link", Duration::from_secs(30), || async {
        (metric(sccr, "sccr_provisioning_connected").await? == 1).then_some(())
    })
    .await;
}

/// Until the provisioning link has noticed the broker is gone.
async fn offline(sccr: &Sccr) {
    sccr_tests::wait_for("the provisioning link down", Duration::from_secs(30), || async {
        (metric(sccr, "sccr_provisioning_connected").await? == 0).then_some(())
    })
    .await;
}

async fn call(sccr: &Sccr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = sccr_tests::http_send(sccr.api_port, method, path, body).await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: {text}")))
}

/// Register `body`'s device: (its password, the answer's `broker`).
async fn register(sccr: &Sccr, body: &str) -> (String, Value) {
    let (status, v) = call(sccr, "POST", "/api/v1/devices", body).await;
    assert_eq!(status, 201, "{v}");
    (v["mqtt"]["password"].as_str().unwrap().to_owned(), v["broker"].clone())
}

fn applied() -> Value {
    json!({"provisioning": "dynsec", "applied": true})
}

fn reading() -> Vec<u8> {
    sccr_tests::compact(1, sccr_tests::recent_base_ms(), &[("vehicle_count", 7.0)])
}

async fn publish(c: &mut Client, device: &str, payload: Vec<u8>) -> PubAckReason {
    let topic = sccr_tests::telemetry_topic(device);
    c.client
        .publish(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
    loop {
        match c.next().await {
            Seen::PubAck(reason) => return reason,
            Seen::Refused(why) => panic!("connection closed: {why}"),
            _ => {}
        }
    }
}

/// Whether `user` is refused on a new connection.
async fn refused(port: u16, user: &str, password: &str) -> bool {
    let mut c = Client::connect(port, user, password).await;
    let _ = c
        .client
        .subscribe(
            format!("sccr/v1/devices/{user}/commands"),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )
        .await;
    loop {
        match c.next().await {
            Seen::Refused(_) => return true,
            Seen::SubAck(_) => return false,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_device_connects_at_once_and_its_reading_is_stored() {
    let broker = dynsec_broker().await;
    let db = TestDb::create().await.expect("database");
    let dir = TempDir::new("prov-register").expect("tempdir");
    let sccr = serve(&broker, &db, &dir);
    ready(&sccr).await;

    let (password, answer) = register(&sccr, r#"{"id":"loop-41","kind":"traffic_loop"}"#).await;
    assert_eq!(answer, applied());
    // No password file, no reload: the device connects right away.
    let mut device = Client::connect(broker.port, "loop-41", &password).await;
    assert_eq!(
        publish(&mut device, "loop-42", b"forged".to_vec()).await,
        PubAckReason::NotAuthorized
    );
    assert!(granted(device.subscribe("sccr/v1/devices/loop-41/commands").await));
    assert!(!granted(device.subscribe("sccr/v1/devices/+/commands").await));
    let ack = publish(&mut device, "loop-41", reading()).await;
    assert_eq!(ack, PubAckReason::Success);
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sccr_tests::wait_for("the device's reading stored", Duration::from_secs(20), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM readings WHERE device = 'loop-41' AND metric = 'vehicle_count'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (n == 1).then_some(())
    })
    .await;

    // The service accounts the shipped script made: ingest reads every device, through a
    // shared subscription too; the API account does not read telemetry.
    let mut ingest = Client::connect(broker.port, INGEST.0, INGEST.1).await;
    assert!(granted(ingest.subscribe("$share/g/sccr/v1/devices/+/telemetry").await));
    let mut api = Client::connect(broker.port, API.0, API.1).await;
    assert!(!granted(api.subscribe("sccr/v1/devices/+/telemetry").await));
    assert!(granted(api.subscribe("sccr/v1/devices/+/commands/ack").await));
    // A wrong password is refused, as is a name nobody registered.
    assert!(refused(broker.port, "loop-41", "wrong").await);
    assert!(refused(broker.port, "loop-43", &password).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_decommission_shut_the_device_out_at_once() {
    let broker = dynsec_broker().await;
    let db = TestDb::create().await.expect("database");
    let dir = TempDir::new("prov-rotate").expect("tempdir");
    let sccr = serve(&broker, &db, &dir);
    ready(&sccr).await;

    let (first, _) = register(&sccr, r#"{"id":"loop-51"}"#).await;
    let mut old = Client::connect(broker.port, "loop-51", &first).await;
    assert!(granted(old.subscribe("sccr/v1/devices/loop-51/commands").await));

    let (status, v) = call(&sccr, "POST", "/api/v1/devices/loop-51/credentials", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["broker"], applied());
    let second = v["mqtt"]["password"].as_str().unwrap().to_owned();
    // The plugin closes the connection made with the old password, and refuses it after.
    old.closed().await;
    assert!(refused(broker.port, "loop-51", &first).await);
    let mut device = Client::connect(broker.port, "loop-51", &second).await;
    assert_eq!(publish(&mut device, "loop-51", reading()).await, PubAckReason::Success);

    let (status, v) = call(&sccr, "DELETE", "/api/v1/devices/loop-51", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["broker"], applied());
    device.closed().await;
    assert!(refused(broker.port, "loop-51", &second).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_publishes_for_the_devices_it_serves_through_their_roles() {
    let broker = dynsec_broker().await;
    let db = TestDb::create().await.expect("database");
    let dir = TempDir::new("prov-gateway").expect("tempdir");
    let sccr = serve(&broker, &db, &dir);
    ready(&sccr).await;

    let (password, _) = register(&sccr, r#"{"id":"cabinet-8","kind":"gateway"}"#).await;
    let (_, answer) = register(&sccr, r#"{"id":"loop-81","gateway":"cabinet-8"}"#).await;
    assert_eq!(answer, applied());
    register(&sccr, r#"{"id":"loop-82"}"#).await;
    let mut gateway = Client::connect(broker.port, "cabinet-8", &password).await;
    assert_eq!(publish(&mut gateway, "loop-82", reading()).await, PubAckReason::NotAuthorized);
    assert_eq!(publish(&mut gateway, "loop-81", reading()).await, PubAckReason::Success);
    assert_eq!(publish(&mut gateway, "cabinet-8", reading()).await, PubAckReason::Success);
    assert!(granted(gateway.subscribe("sccr/v1/devices/loop-81/commands").await));

    // loop-81 leaves the cabinet: the gateway's rights change at once (the plugin makes it
    // reconnect to apply them).
    let (status, v) = call(&sccr, "PATCH", "/api/v1/devices/loop-81", r#"{"gateway":null}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["broker"], applied());
    gateway.closed().await;
    let mut gateway = Client::connect(broker.port, "cabinet-8", &password).await;
    assert_eq!(publish(&mut gateway, "loop-81", reading()).await, PubAckReason::NotAuthorized);
    assert_eq!(publish(&mut gateway, "cabinet-8", reading()).await, PubAckReason::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_while_the_broker_is_down_applies_when_it_returns() {
    let mut broker = dynsec_broker().await;
    let db = TestDb::create().await.expect("database");
    let dir = TempDir::new("prov-outage").expect("tempdir");
    let sccr = serve(&broker, &db, &dir);
    ready(&sccr).await;

    broker.stop().unwrap();
    offline(&sccr).await;
    let (password, answer) = register(&sccr, r#"{"id":"loop-61"}"#).await;
    assert_eq!(answer["provisioning"], "dynsec");
    assert_eq!(answer["applied"], false);
    assert_eq!(answer["pending"], true, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("unreachable"), "{answer}");
    assert!(answer["next"].as_str().is_some(), "{answer}");
    // The registration stands.
    let (status, v) = call(&sccr, "GET", "/api/v1/devices/loop-61", "").await;
    assert_eq!((status, &v["device"]["has_credentials"]), (200, &json!(true)));

    broker.start_again().await.unwrap();
    let port = broker.port;
    sccr_tests::wait_for(
        "the device admitted after the broker's return",
        Duration::from_secs(30),
        || {
            let password = password.clone();
            async move { (!refused(port, "loop-61", &password).await).then_some(()) }
        },
    )
    .await;
    let mut device = Client::connect(broker.port, "loop-61", &password).await;
    assert_eq!(publish(&mut device, "loop-61", reading()).await, PubAckReason::Success);
    assert_eq!(metric(&sccr, "sccr_provisioning_held_passwords").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_password_was_lost_waits_disabled_for_a_rotation() {
    let mut broker = dynsec_broker().await;
    let db = TestDb::create().await.expect("database");
    let dir = TempDir::new("prov-lost").expect("tempdir");
    let mut sccr = serve(&broker, &db, &dir);
    ready(&sccr).await;

    broker.stop().unwrap();
    offline(&sccr).await;
    let (password, answer) = register(&sccr, r#"{"id":"loop-71"}"#).await;
    assert_eq!(answer["pending"], true, "{answer}");
    // The process holding the password stops before the broker returns.
    sccr.restart().unwrap();
    broker.start_again().await.unwrap();
    ready(&sccr).await;
    sccr_tests::wait_for("the reconciler to find loop-71", Duration::from_secs(30), || async {
        (metric(&sccr, "sccr_provisioning_devices_awaiting_rotation").await? == 1).then_some(())
    })
    .await;
    assert!(refused(broker.port, "loop-71", &password).await, "no password reached the broker");

    let (status, v) = call(&sccr, "POST", "/api/v1/devices/loop-71/credentials", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["broker"], applied());
    let rotated = v["mqtt"]["password"].as_str().unwrap();
    let mut device = Client::connect(broker.port, "loop-71", rotated).await;
    assert_eq!(publish(&mut device, "loop-71", reading()).await, PubAckReason::Success);
    sccr_tests::wait_for(
        "the next reconciliation to count it applied",
        Duration::from_secs(30),
        || async {
            (metric(&sccr, "sccr_provisioning_devices_awaiting_rotation").await? == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_registered_with_password_files_move_to_the_plugin_with_their_passwords() {
    let plain = Broker::start().await.expect("mosquitto");
    let db = TestDb::create().await.expect("database");
    let dir = TempDir::new("prov-move").expect("tempdir");
    let before = Sccr::serve(plain.port, &db.url, &dir.path, &[]).expect("sccr");
    before.wait_healthy().await;
    let (cabinet, answer) = register(&before, r#"{"id":"cabinet-9","kind":"gateway"}"#).await;
    assert_eq!(answer["provisioning"], "password_file");
    let (device_password, _) = register(&before, r#"{"id":"loop-91","gateway":"cabinet-9"}"#).await;
    drop(before);

    // The plugin's file written from the registry, hashes and all, before the broker starts.
    let db_url = db.url.clone();
    let broker = dynsec_broker_with(move |json| {
        let stdout = sccr_tests::sccr_admin("mqtt-dynsec", json, json, &db_url)?;
        anyhow::ensure!(stdout.contains("2 device clients"), "sccr mqtt-dynsec: {stdout}");
        Ok(())
    })
    .await;
    // The passwords the registrations answered work on the plugin, with the same rights.
    let mut ingest = Client::connect(broker.port, INGEST.0, INGEST.1).await;
    assert!(granted(ingest.subscribe("sccr/v1/devices/+/telemetry").await));
    let mut device = Client::connect(broker.port, "loop-91", &device_password).await;
    assert_eq!(publish(&mut device, "loop-91", reading()).await, PubAckReason::Success);
    assert_eq!(publish(&mut device, "cabinet-9", reading()).await, PubAckReason::NotAuthorized);
    let mut gateway = Client::connect(broker.port, "cabinet-9", &cabinet).await;
    assert_eq!(publish(&mut gateway, "loop-91", reading()).await, PubAckReason::Success);

    // Provisioning through the plugin finds the broker in line with the registry.
    let sccr = serve(&broker, &db, &dir);
    ready(&sccr).await;
    sccr_tests::wait_for("a whole reconciliation", Duration::from_secs(30), || async {
        (metric(&sccr, "sccr_provisioning_reconciliations_total").await? >= 2).then_some(())
    })
    .await;
    assert_eq!(metric(&sccr, "sccr_provisioning_devices_awaiting_rotation").await, Some(0));
    assert_eq!(metric(&sccr, "sccr_provisioning_conflicts").await, Some(0));
    assert_eq!(metric(&sccr, "sccr_provisioning_command_errors_total").await, Some(0));
    // Nothing changed, so nobody was made to reconnect.
    assert_eq!(publish(&mut gateway, "loop-91", reading()).await, PubAckReason::Success);
}
