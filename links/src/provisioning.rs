//! Device credentials and topic rights on the broker (`[provisioning]`,
//! docs/mqtt-contract.md#provisioning).
//!
//! - `password_file` (the default): the registry keeps the hashes; `sccr mqtt-passwd` and
//!   `sccr mqtt-acl` write the broker's files, which apply at its next reload (SIGHUP).
//! - `dynsec`: Mosquitto's dynamic security plugin, driven over its control topic by an
//!   admin account of the plugin: a registration, a rotation, a decommission or a gateway
//!   change applies at once (clients connected with an old password, or as a device
//!   decommissioned, are disconnected by the plugin). The plan is
//!   [`crate::dynsec::plan`]; this module reads the registry and the broker, sends the
//!   commands, waits for the answers with a deadline and says what applied.
//! - `none`: the broker's credentials are managed elsewhere (or it takes anyone, as the
//!   demo's embedded broker does).
//!
//! A change the broker did not confirm (unreachable, no answer in time, refused) is still
//! committed in the registry and answered as pending. The reconciler makes the broker's
//! managed clients and roles match the registry at start, on every reconnection and every
//! `reconcile_interval`. The password of a registration or rotation that did not apply is
//! kept in this process's memory (never stored) until it does, so a broker outage loses
//! nothing; if this process stops first, the device's client is left disabled and counted
//! in `sccr_provisioning_devices_awaiting_rotation` until its credentials are rotated (or
//! `sccr mqtt-dynsec` writes the registry's hashes into the plugin's file, which the
//! plugin reads when the broker starts: [`crate::dynsec::config_file`]).
//! Changes and reconciliations run one at a time in a process; across API replicas the
//! plan is idempotent and converges at the next reconciliation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::metrics::{self, Collector, Encoder};
use telemetry::DeviceId;

use crate::dynsec::{self, Secret};

mod link;

pub use link::{start, DynsecLink, LinkError};

/// How device credentials reach the broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProvisioningMode {
    Dynsec,
    #[default]
    PasswordFile,
    None,
}

impl ProvisioningMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dynsec => "dynsec",
            Self::PasswordFile => "password_file",
            Self::None => "none",
        }
    }
}

/// How to reach the plugin's control topic.
#[derive(Debug, Clone, PartialEq)]
pub struct DynsecConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// An account of the plugin with its `admin` role (`mosquitto_ctrl dynsec init`).
    pub username: String,
    pub password: String,
    pub keep_alive: Duration,
    /// How long an answer of the plugin is awaited.
    pub timeout: Duration,
    pub reconcile_interval: Duration,
}

/// What a registry change did on the broker: the `broker` object of the API's answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BrokerOutcome {
    pub provisioning: &'static str,
    pub applied: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The password file command as an operator runs it (deploy/README.md).
const PASSWD: &str =
    "sccr mqtt-passwd --config sccr.toml --include services.passwd --out PASSWORD_FILE";

/// What to do after a change in `password_file` mode: commands that run as written.
pub fn password_file_next(acl: bool) -> String {
    if acl {
        format!("run {PASSWD} and sccr mqtt-acl --config sccr.toml --include sccr.acl --out ACL_FILE, then send the broker SIGHUP")
    } else {
        format!("run {PASSWD}, then send the broker SIGHUP")
    }
}

/// The provisioning of this process.
#[derive(Clone, Default)]
pub enum Provisioning {
    /// Credentials are managed outside SCCR.
    None,
    /// `sccr mqtt-passwd` and `sccr mqtt-acl` write the broker's files.
    #[default]
    PasswordFile,
    /// The dynamic security plugin.
    Dynsec(Arc<DynsecLink>),
}

impl Provisioning {
    /// A device got a new password (registration or rotation): its client, and the
    /// clients of `others` (its gateway) whose roles name it. `acl` says whether the
    /// gateway ACL changed (for the password-file instructions).
    pub async fn credentials_issued(
        &self,
        device: &DeviceId,
        password: &str,
        hash: &str,
        others: &[DeviceId],
        acl: bool,
    ) -> BrokerOutcome {
        match self {
            Provisioning::Dynsec(link) => {
                let secret =
                    Secret { fp: dynsec::fingerprint(hash), password: password.to_owned() };
                let mut ids = vec![device.clone()];
                ids.extend(others.iter().cloned());
                link.apply(&ids, Some((device.as_str(), secret))).await
            }
            other => other.offline(acl),
        }
    }

    /// The registry changed for `devices` (decommissioned, gateway changed).
    pub async fn devices_changed(&self, devices: &[DeviceId], acl: bool) -> BrokerOutcome {
        match self {
            Provisioning::Dynsec(link) => link.apply(devices, None).await,
            other => other.offline(acl),
        }
    }

    fn offline(&self, acl: bool) -> BrokerOutcome {
        let (provisioning, next) = match self {
            Provisioning::None => ("none", "the broker's credentials are managed outside SCCR ([provisioning] mode = \"none\")".to_owned()),
            _ => ("password_file", password_file_next(acl)),
        };
        BrokerOutcome {
            provisioning,
            applied: false,
            pending: false,
            error: None,
            next: Some(next),
        }
    }

    /// The dynsec link's counters, to register in the process's metrics (other modes
    /// have none).
    pub fn metrics(&self) -> Option<Arc<ProvisioningMetrics>> {
        match self {
            Provisioning::Dynsec(link) => Some(link.metrics.clone()),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
pub struct ProvisioningMetrics {
    pub connected: AtomicBool,
    pub requests: AtomicU64,
    pub request_failures: AtomicU64,
    pub commands: AtomicU64,
    pub command_errors: AtomicU64,
    pub reconciliations: AtomicU64,
    pub reconcile_failures: AtomicU64,
    pub awaiting_rotation: AtomicU64,
    pub conflicts: AtomicU64,
    pub held_passwords: AtomicU64,
}

impl Collector for ProvisioningMetrics {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let e = &mut e;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gauge = |a: &AtomicU64| i64::try_from(get(a)).unwrap_or(i64::MAX);
        metrics::flag(
            e,
            "provisioning_connected",
            "1 while the dynamic security plugin's control topic is reachable.",
            self.connected.load(Ordering::Relaxed),
        )?;
        let counters = [
            (
                "provisioning_requests",
                "Control messages sent to the dynamic security plugin.",
                &self.requests,
            ),
            (
                "provisioning_request_failures",
                "Control messages not answered: broker unreachable or no answer in time.",
                &self.request_failures,
            ),
            (
                "provisioning_commands",
                "Commands sent to the dynamic security plugin.",
                &self.commands,
            ),
            (
                "provisioning_command_errors",
                "Commands the dynamic security plugin refused.",
                &self.command_errors,
            ),
            (
                "provisioning_reconciliations",
                "Reconciliations of the broker's clients and roles with the registry.",
                &self.reconciliations,
            ),
            (
                "provisioning_reconcile_failures",
                "Reconciliations that did not complete.",
                &self.reconcile_failures,
            ),
        ];
        for (name, help, value) in counters {
            metrics::counter(e, name, help, get(value))?;
        }
        metrics::gauge(e, "provisioning_devices_awaiting_rotation", "Devices whose broker client lacks their current password (disabled until their credentials are rotated).", gauge(&self.awaiting_rotation))?;
        metrics::gauge(
            e,
            "provisioning_conflicts",
            "Devices whose id a broker client SCCR does not manage holds.",
            gauge(&self.conflicts),
        )?;
        metrics::gauge(
            e,
            "provisioning_held_passwords",
            "Passwords held in memory for changes the broker has not confirmed yet.",
            gauge(&self.held_passwords),
        )
    }
}
