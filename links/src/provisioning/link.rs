//! The admin connection to the dynamic security plugin: requests and their answers with a
//! deadline, the passwords held for changes not yet applied, targeted changes and the
//! reconciler (see [`super`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde_json::{json, Value};
use store::Store;
use telemetry::DeviceId;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;

use super::{BrokerOutcome, DynsecConfig, Provisioning, ProvisioningMetrics};
use crate::dynsec::{self, Actual, ActualClient, Desired, Plan, Response, Secret};

/// Most JSON bytes of commands in one control message (Mosquitto's `max_packet_size` in
/// `deploy/mosquitto` is 128 KiB).
const MAX_MESSAGE_BYTES: usize = 60_000;
/// Clients or roles per page when the reconciler lists them.
const PAGE: usize = 200;
/// Most passwords held for changes not yet applied; past it, a device awaits a rotation.
const MAX_SECRETS: usize = 10_000;

/// Why a request got no (complete) answer.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the broker's dynamic security control topic is unreachable")]
    Unreachable,
    #[error("the dynamic security plugin did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the dynamic security plugin answered {got} of {sent} commands")]
    Incomplete { sent: usize, got: usize },
    #[error("the dynamic security plugin refused: {0}")]
    Refused(String),
    #[error("the registry could not be read: {0}")]
    Store(#[from] store::StoreError),
}

type Waiters = Mutex<HashMap<String, oneshot::Sender<Vec<(usize, Response)>>>>;

/// The admin connection to the plugin, the passwords held for changes not yet applied,
/// and the reconciler's trigger.
pub struct DynsecLink {
    config: DynsecConfig,
    store: Store,
    client: AsyncClient,
    ready: watch::Sender<bool>,
    waiters: Waiters,
    prefix: String,
    next: AtomicU64,
    /// One plan and its commands at a time in this process.
    apply: tokio::sync::Mutex<()>,
    secrets: Mutex<HashMap<String, Secret>>,
    reconcile_now: Notify,
    pub metrics: Arc<ProvisioningMetrics>,
}

/// Start `dynsec` provisioning: the admin connection and the reconciler.
pub fn start(
    config: DynsecConfig,
    store: Store,
    shutdown: watch::Receiver<bool>,
) -> (Provisioning, Vec<(&'static str, JoinHandle<()>)>) {
    let mut opts = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
    opts.set_keep_alive(config.keep_alive)
        .set_clean_start(true)
        .set_credentials(config.username.clone(), config.password.clone())
        // Pages of the reconciler's listings.
        .set_max_packet_size(Some(16 * 1024 * 1024));
    let (client, eventloop) = AsyncClient::new(opts, 64);
    let link = Arc::new(DynsecLink {
        config,
        store,
        client,
        ready: watch::channel(false).0,
        waiters: Mutex::default(),
        prefix: format!("sccr-{:08x}-", SmallRng::from_os_rng().random::<u32>()),
        next: AtomicU64::new(0),
        apply: tokio::sync::Mutex::new(()),
        secrets: Mutex::default(),
        reconcile_now: Notify::new(),
        metrics: Arc::default(),
    });
    let tasks = vec![
        ("provisioning link", tokio::spawn(drive(link.clone(), eventloop, shutdown.clone()))),
        ("provisioning reconciler", tokio::spawn(reconciler(link.clone(), shutdown))),
    ];
    (Provisioning::Dynsec(link), tasks)
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Poll the admin connection: subscribe to the answers on every connection, route answers
/// to their requests, and wake the reconciler when the broker is back.
async fn drive(
    link: Arc<DynsecLink>,
    mut eventloop: EventLoop,
    mut shutdown: watch::Receiver<bool>,
) {
    // The last problem logged, so that a broker that stays away (or refuses the account)
    // is reported once, not every second.
    let mut reported: Option<String> = None;
    loop {
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Err(e) = link.client.try_subscribe(dynsec::RESPONSE_TOPIC, QoS::AtMostOnce) {
                        tracing::warn!(error = %e, "provisioning: cannot subscribe to the plugin's answers");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack.return_codes.iter().all(|c| matches!(c, SubscribeReasonCode::Success(_))) {
                        reported = None;
                        link.metrics.connected.store(true, Ordering::Relaxed);
                        link.ready.send_replace(true);
                        link.reconcile_now.notify_one();
                    } else {
                        tracing::error!(
                            username = %link.config.username, codes = ?ack.return_codes,
                            "provisioning: the broker refused this account the plugin's answers \
                             ({}); [provisioning] username must have the dynamic security \
                             plugin's admin role", dynsec::RESPONSE_TOPIC
                        );
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some((request, answers)) = dynsec::parse_responses(&p.payload) {
                        let waiter = link.waiters.lock().ok().and_then(|mut w| w.remove(&request));
                        if let Some(w) = waiter {
                            let _ = w.send(answers);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let was = link.ready.send_replace(false);
                    link.metrics.connected.store(false, Ordering::Relaxed);
                    // Requests in flight cannot be answered on this connection.
                    if let Ok(mut w) = link.waiters.lock() {
                        w.clear();
                    }
                    if *shutdown.borrow() {
                        break;
                    }
                    let problem = e.to_string();
                    if was || reported.as_ref() != Some(&problem) {
                        tracing::warn!(error = %problem, username = %link.config.username,
                            "provisioning: no connection to the broker's dynamic security plugin; retrying");
                        reported = Some(problem);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = stopped(&mut shutdown) => break,
                    }
                }
            },
            () = stopped(&mut shutdown) => break,
        }
    }
    link.ready.send_replace(false);
    link.metrics.connected.store(false, Ordering::Relaxed);
}

/// Reconcile at start (once connected), on every reconnection and every interval.
async fn reconciler(link: Arc<DynsecLink>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = link.reconcile_now.notified() => {}
            () = tokio::time::sleep(link.config.reconcile_interval) => {}
            () = stopped(&mut shutdown) => break,
        }
        if !*link.ready.borrow() {
            continue;
        }
        if let Err(e) = link.reconcile().await {
            link.metrics.reconcile_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "provisioning: reconciliation incomplete; retried in {:?}", link.config.reconcile_interval);
        }
    }
}

impl DynsecLink {
    /// Send `commands` (in order, in messages of at most [`MAX_MESSAGE_BYTES`]) and wait
    /// for every answer, each message within the timeout.
    async fn request(&self, commands: Vec<Value>) -> Result<Vec<Response>, LinkError> {
        let mut answers = Vec::with_capacity(commands.len());
        let mut batch: Vec<Value> = Vec::new();
        let mut bytes = 0;
        let total = commands.len();
        for (i, c) in commands.into_iter().enumerate() {
            bytes += c.to_string().len() + 1;
            batch.push(c);
            if bytes >= MAX_MESSAGE_BYTES || i + 1 == total {
                answers.extend(self.request_one(std::mem::take(&mut batch)).await?);
                bytes = 0;
            }
        }
        Ok(answers)
    }

    async fn request_one(&self, mut commands: Vec<Value>) -> Result<Vec<Response>, LinkError> {
        if !*self.ready.borrow() {
            return Err(LinkError::Unreachable);
        }
        let request = format!("{}{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed));
        for (i, c) in commands.iter_mut().enumerate() {
            c["correlationData"] = json!(dynsec::correlation(&request, i));
        }
        let sent = commands.len();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(request.clone(), tx);
        }
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        self.metrics.commands.fetch_add(sent as u64, Ordering::Relaxed);
        let payload = json!({ "commands": commands }).to_string();
        // QoS 0: a message the connection loses is never replayed later, out of order.
        let result =
            match self.client.publish(dynsec::CONTROL_TOPIC, QoS::AtMostOnce, false, payload).await
            {
                Err(_) => Err(LinkError::Unreachable),
                Ok(()) => match tokio::time::timeout(self.config.timeout, rx).await {
                    Err(_) => Err(LinkError::Timeout(self.config.timeout)),
                    Ok(Err(_)) => Err(LinkError::Unreachable),
                    Ok(Ok(mut got)) => {
                        got.sort_by_key(|(i, _)| *i);
                        if got.len() == sent && got.iter().enumerate().all(|(n, (i, _))| n == *i) {
                            Ok(got.into_iter().map(|(_, r)| r).collect())
                        } else {
                            Err(LinkError::Incomplete { sent, got: got.len() })
                        }
                    }
                },
            };
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(&request);
        }
        if result.is_err() {
            self.metrics.request_failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// The registry as the broker should hold it.
    async fn desired(&self) -> Result<Desired, LinkError> {
        let credentials = self.store.device_credentials().await?;
        let links = self.store.gateway_links().await?;
        Ok(Desired::from_registry(&credentials, &links))
    }

    /// The broker's clients named `clients` and roles named `roles`.
    async fn look_up(
        &self,
        clients: &BTreeSet<String>,
        roles: &BTreeSet<String>,
    ) -> Result<Actual, LinkError> {
        let commands = clients
            .iter()
            .map(|c| json!({"command": "getClient", "username": c}))
            .chain(roles.iter().map(|r| json!({"command": "getRole", "rolename": r})))
            .collect();
        let mut actual = Actual::default();
        for r in self.request(commands).await? {
            if let Some((name, client)) = ActualClient::from_json(&r.data["client"]) {
                actual.clients.insert(name, client);
            } else if let Some((name, acls)) = dynsec::role_from_json(&r.data["role"]) {
                actual.roles.insert(name, acls);
            }
        }
        Ok(actual)
    }

    /// Every client and every managed role of the broker, page by page.
    async fn list_all(&self) -> Result<Actual, LinkError> {
        let mut actual = Actual::default();
        for (command, key) in [("listClients", "clients"), ("listRoles", "roles")] {
            let mut offset = 0;
            loop {
                let page = self
                    .request(vec![json!({"command": command, "verbose": true, "count": PAGE, "offset": offset})])
                    .await?;
                let Some(r) = page.first().filter(|r| r.error.is_none()) else {
                    return Err(LinkError::Incomplete { sent: 1, got: 0 });
                };
                let items = r.data[key].as_array().cloned().unwrap_or_default();
                for v in &items {
                    if key == "clients" {
                        if let Some((name, c)) = ActualClient::from_json(v) {
                            actual.clients.insert(name, c);
                        }
                    } else if let Some((name, acls)) = dynsec::role_from_json(v) {
                        if name.starts_with(dynsec::ROLE_PREFIX) {
                            actual.roles.insert(name, acls);
                        }
                    }
                }
                offset += items.len();
                let total = r.data["totalCount"].as_u64().unwrap_or(0) as usize;
                if items.is_empty() || offset >= total {
                    break;
                }
            }
        }
        Ok(actual)
    }

    fn secrets(&self) -> HashMap<String, Secret> {
        self.secrets.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn hold(&self, device: &str, secret: Secret) {
        if let Ok(mut s) = self.secrets.lock() {
            if s.len() < MAX_SECRETS || s.contains_key(device) {
                s.insert(device.to_owned(), secret);
            } else {
                tracing::warn!(
                    device,
                    "provisioning: too many changes pending; this device will await a rotation"
                );
            }
            self.metrics.held_passwords.store(s.len() as u64, Ordering::Relaxed);
        }
    }

    /// Forget the passwords `plan` applied, and those the registry superseded.
    /// Forget the passwords `used`; with a registry read (`desired`) and the passwords held
    /// before it, also those it no longer wants. A password held after the read (a
    /// registration racing a reconciliation) is kept for its own apply: the read could
    /// not see its device.
    fn release(&self, used: &[String], read: Option<(&Desired, &HashMap<String, Secret>)>) {
        if let Ok(mut s) = self.secrets.lock() {
            for d in used {
                s.remove(d);
            }
            if let Some((desired, held_before)) = read {
                s.retain(|d, secret| {
                    let seen = held_before.get(d).is_some_and(|b| b.fp == secret.fp);
                    !seen || desired.clients.get(d).is_some_and(|c| c.fp == secret.fp)
                });
            }
            self.metrics.held_passwords.store(s.len() as u64, Ordering::Relaxed);
        }
    }

    /// Bring the broker in line with the registry for `devices` (and the roles their
    /// clients hold); with `secret`, one of them has a new password.
    pub(super) async fn apply(
        &self,
        devices: &[DeviceId],
        secret: Option<(&str, Secret)>,
    ) -> BrokerOutcome {
        if let Some((device, s)) = secret.clone() {
            self.hold(device, s);
        }
        let ids: BTreeSet<String> = devices.iter().map(|d| d.as_str().to_owned()).collect();
        let result = {
            let _one = self.apply.lock().await;
            self.apply_locked(&ids).await
        };
        let pending = |error: String| BrokerOutcome {
            provisioning: "dynsec",
            applied: false,
            pending: true,
            error: Some(error),
            next: Some(format!(
                "SCCR applies it once the broker answers: on reconnection and every {}",
                humanize(self.config.reconcile_interval)
            )),
        };
        match result {
            Err(e) => pending(e.to_string()),
            Ok(plan) => {
                let mut problems: Vec<String> = plan
                    .conflicts
                    .iter()
                    .map(|d| format!("the broker client {d} is not managed by SCCR (textname \"{}\"); rename or delete it", dynsec::MANAGED))
                    .collect();
                if let Some((device, _)) = secret {
                    if plan.awaiting_rotation.iter().any(|d| d == device) {
                        problems.push(format!("the broker did not take {device}'s password"));
                    }
                }
                if problems.is_empty() {
                    BrokerOutcome {
                        provisioning: "dynsec",
                        applied: true,
                        pending: false,
                        error: None,
                        next: None,
                    }
                } else {
                    pending(problems.join("; "))
                }
            }
        }
    }

    async fn apply_locked(&self, ids: &BTreeSet<String>) -> Result<Plan, LinkError> {
        let mut refused = Vec::new();
        // A client created or removed meanwhile by another replica: look again.
        for _ in 0..3 {
            let (desired, roles) = self.desired().await?.only(ids);
            let actual = self.look_up(ids, &roles).await?;
            let plan = dynsec::plan(&desired, &actual, &self.secrets());
            refused = self.send(&plan).await?;
            if refused.is_empty() {
                self.release(&plan.secrets_used, None);
                return Ok(plan);
            }
        }
        Err(LinkError::Refused(refused.join("; ")))
    }

    /// Send a plan's commands; the refusals, described.
    async fn send(&self, plan: &Plan) -> Result<Vec<String>, LinkError> {
        if plan.commands.is_empty() {
            return Ok(Vec::new());
        }
        let answers = self.request(plan.commands.clone()).await?;
        let refused: Vec<String> = answers
            .iter()
            .zip(&plan.commands)
            .filter(|(r, _)| !r.ok())
            .map(|(r, c)| {
                let who = c["username"].as_str().or(c["rolename"].as_str()).unwrap_or_default();
                format!("{} ({who})", r.describe())
            })
            .collect();
        self.metrics.command_errors.fetch_add(refused.len() as u64, Ordering::Relaxed);
        Ok(refused)
    }

    /// Make every managed client and role of the broker match the registry.
    pub async fn reconcile(&self) -> Result<(), LinkError> {
        let _one = self.apply.lock().await;
        self.metrics.reconciliations.fetch_add(1, Ordering::Relaxed);
        // The broker first, then the registry: the registry read is the fresher.
        let actual = self.list_all().await?;
        let held_before = self.secrets();
        let desired = self.desired().await?;
        let plan = dynsec::plan(&desired, &actual, &self.secrets());
        let refused = self.send(&plan).await?;
        self.release(&plan.secrets_used, Some((&desired, &held_before)));
        self.metrics
            .awaiting_rotation
            .store(plan.awaiting_rotation.len() as u64, Ordering::Relaxed);
        self.metrics.conflicts.store(plan.conflicts.len() as u64, Ordering::Relaxed);
        if !plan.commands.is_empty() {
            tracing::info!(
                commands = plan.commands.len(),
                refused = refused.len(),
                "provisioning: broker reconciled with the registry"
            );
        }
        if !plan.awaiting_rotation.is_empty() {
            tracing::warn!(devices = ?first(&plan.awaiting_rotation), count = plan.awaiting_rotation.len(),
                "provisioning: broker clients without their current password are disabled; rotate their credentials (POST /api/v1/devices/{{id}}/credentials), or write the plugin's file with `sccr mqtt-dynsec` while the broker is stopped");
        }
        if !plan.conflicts.is_empty() {
            tracing::warn!(devices = ?first(&plan.conflicts), count = plan.conflicts.len(),
                "provisioning: device ids held by broker clients SCCR does not manage; rename or delete those clients");
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(LinkError::Refused(refused.join("; ")))
        }
    }
}

fn first(list: &[String]) -> &[String] {
    &list[..list.len().min(10)]
}

fn humanize(d: Duration) -> String {
    if d.as_secs() > 0 && d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
