//! The pure half of broker provisioning through Mosquitto's dynamic security plugin
//! (`$CONTROL/dynamic-security/v1`): what the registry asks of the broker, what the broker
//! holds, and the commands that turn the one into the other ([`plan`]). No I/O; the driver
//! is [`crate::provisioning`].
//!
//! **What SCCR manages.** A client per active device with credentials (username = device
//! id, `textname` [`MANAGED`]), and a role per device that has a client or is served by a
//! gateway ([`role_name`]: `sccr-device-<id>`), granting that device's topics as
//! `deploy/mosquitto/sccr.acl` does for `%u`. A device's client has its own role; a
//! gateway's client also has the role of every device it serves. Clients and roles
//! without those marks (the plugin's admin, the `sccr-ingest` and `sccr-api` service
//! accounts) are never touched; a device whose id is taken by one is a conflict.
//!
//! **Passwords.** The plugin takes a password only in plain text (`createClient`,
//! `modifyClient`; Mosquitto 2.0 has no command for a pre-hashed one, although its
//! `dynamic-security.json` stores the same salted PBKDF2-SHA512 as SCCR's registry), and
//! SCCR stores only hashes. So a password reaches the broker while it exists: at
//! registration or rotation. Each managed client's `textdescription` is the fingerprint of
//! the registry hash its password was set from ([`tag`]), always written in the same
//! command as the password, so it tells the truth about the broker's password. A client
//! whose fingerprint is not the registry's holds an old or no password: it is disabled
//! until a rotation (or the plaintext, still held in memory after a failed attempt, see
//! [`Secret`]) gives it the current one; a client whose fingerprint matches is enabled.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use telemetry::{DeviceId, Topic};

/// The plugin's command topic.
pub const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
/// Where the plugin answers (to every subscriber: answers are matched by correlation).
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// `textname` of the clients and roles SCCR manages.
pub const MANAGED: &str = "sccr device";
/// Prefix of the roles SCCR manages.
pub const ROLE_PREFIX: &str = "sccr-device-";
const TAG_PREFIX: &str = "sccr-credential:";
/// The `textdescription` of a client created without a password.
pub const NO_CREDENTIAL: &str = "sccr-credential:none";

/// The role granting `device`'s topics.
pub fn role_name(device: &str) -> String {
    format!("{ROLE_PREFIX}{device}")
}

/// The fingerprint of a registry password hash (the first 16 bytes of its SHA-256, hex):
/// names which password a broker client holds without revealing anything of it.
pub fn fingerprint(password_hash: &str) -> String {
    hex::encode(&Sha256::digest(password_hash.as_bytes())[..16])
}

/// The `textdescription` of a client whose password was set from the hash with `fp`.
pub fn tag(fp: &str) -> String {
    format!("{TAG_PREFIX}{fp}")
}

/// One ACL entry of a role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Acl {
    pub acltype: String,
    pub topic: String,
    pub allow: bool,
}

impl Acl {
    fn allow(acltype: &str, topic: String) -> Self {
        Self { acltype: acltype.to_owned(), topic, allow: true }
    }

    fn to_json(&self) -> Value {
        json!({"acltype": self.acltype, "topic": self.topic, "allow": self.allow})
    }
}

/// What a device may do, as `sccr.acl`'s `%u` patterns say: publish its telemetry, status
/// and command acknowledgements; subscribe to and receive its commands.
pub fn device_acls(device: &str) -> BTreeSet<Acl> {
    let id = DeviceId::parse(device).ok();
    let topic = |f: fn(&DeviceId) -> String, suffix: &str| match &id {
        Some(id) => f(id),
        None => format!("sccr/v1/devices/{device}/{suffix}"),
    };
    let commands = topic(Topic::commands, "commands");
    BTreeSet::from([
        Acl::allow("publishClientSend", topic(Topic::telemetry, "telemetry")),
        Acl::allow("publishClientSend", topic(Topic::status, "status")),
        Acl::allow("publishClientSend", topic(Topic::command_ack, "commands/ack")),
        Acl::allow("subscribePattern", commands.clone()),
        Acl::allow("publishClientReceive", commands),
    ])
}

/// A client the registry asks for: the fingerprint of its password hash and its roles.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredClient {
    pub fp: String,
    pub roles: BTreeSet<String>,
}

/// What the registry asks of the broker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub clients: BTreeMap<String, DesiredClient>,
    pub roles: BTreeMap<String, BTreeSet<Acl>>,
}

impl Desired {
    /// From the registry: `(device, password hash)` of every active device with credentials
    /// and `(gateway, device)` of every active device served by an active gateway.
    pub fn from_registry(
        credentials: &[(DeviceId, String)],
        links: &[(DeviceId, DeviceId)],
    ) -> Self {
        let mut d = Desired::default();
        for (device, hash) in credentials {
            let id = device.as_str();
            d.clients.insert(
                id.to_owned(),
                DesiredClient { fp: fingerprint(hash), roles: BTreeSet::from([role_name(id)]) },
            );
            d.roles.insert(role_name(id), device_acls(id));
        }
        for (gateway, device) in links {
            d.roles.insert(role_name(device.as_str()), device_acls(device.as_str()));
            if let Some(c) = d.clients.get_mut(gateway.as_str()) {
                c.roles.insert(role_name(device.as_str()));
            }
        }
        d
    }

    /// Only what concerns `devices`: their clients, their own roles and the roles their
    /// clients hold. Returns also the role names to look up on the broker.
    pub fn only(&self, devices: &BTreeSet<String>) -> (Desired, BTreeSet<String>) {
        let clients: BTreeMap<_, _> = self
            .clients
            .iter()
            .filter(|(id, _)| devices.contains(*id))
            .map(|(id, c)| (id.clone(), c.clone()))
            .collect();
        let names: BTreeSet<String> = devices
            .iter()
            .map(|d| role_name(d))
            .chain(clients.values().flat_map(|c| c.roles.iter().cloned()))
            .collect();
        let roles = self
            .roles
            .iter()
            .filter(|(name, _)| names.contains(*name))
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect();
        (Desired { clients, roles }, names)
    }
}

/// A client the broker holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActualClient {
    pub managed: bool,
    pub description: Option<String>,
    pub disabled: bool,
    pub roles: BTreeSet<String>,
}

impl ActualClient {
    /// From a client of `getClient` or a verbose `listClients`: `(username, client)`.
    pub fn from_json(v: &Value) -> Option<(String, Self)> {
        let name = v["username"].as_str()?.to_owned();
        let roles = v["roles"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["rolename"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        Some((
            name,
            Self {
                managed: v["textname"].as_str() == Some(MANAGED),
                description: v["textdescription"].as_str().map(str::to_owned),
                disabled: v["disabled"].as_bool().unwrap_or(false),
                roles,
            },
        ))
    }
}

/// A role of the broker's, by name, with its ACLs; `(name, acls)`.
pub fn role_from_json(v: &Value) -> Option<(String, BTreeSet<Acl>)> {
    let name = v["rolename"].as_str()?.to_owned();
    let acls = v["acls"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|acl| {
                    Some(Acl {
                        acltype: acl["acltype"].as_str()?.to_owned(),
                        topic: acl["topic"].as_str()?.to_owned(),
                        allow: acl["allow"].as_bool()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some((name, acls))
}

/// What the broker holds (all of it, or what was looked up for some devices).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actual {
    pub clients: BTreeMap<String, ActualClient>,
    /// Roles SCCR manages ([`ROLE_PREFIX`]) with their ACLs.
    pub roles: BTreeMap<String, BTreeSet<Acl>>,
}

/// A device's password while it exists in this process: issued by a registration or a
/// rotation whose provisioning has not been confirmed yet. Never stored.
#[derive(Clone, PartialEq)]
pub struct Secret {
    /// The fingerprint of the registry hash of `password`.
    pub fp: String,
    pub password: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret").field("fp", &self.fp).finish_non_exhaustive()
    }
}

/// The commands that bring the broker in line, and what they cannot do.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub commands: Vec<Value>,
    /// Devices whose id a client SCCR does not manage holds: left alone.
    pub conflicts: Vec<String>,
    /// Devices whose broker client has an old or no password and no plaintext to set:
    /// disabled (or created without a password) until their credentials are rotated.
    pub awaiting_rotation: Vec<String>,
    /// Devices whose held [`Secret`] these commands apply.
    pub secrets_used: Vec<String>,
}

fn role_list(roles: &BTreeSet<String>) -> Value {
    Value::Array(roles.iter().map(|r| json!({"rolename": r})).collect())
}

/// The commands that make `actual` what `desired` asks, in an order the plugin can apply
/// in one go: roles created or corrected, then clients, then stale clients and roles
/// removed. Only managed clients and roles are changed; a managed client or role in
/// `actual` that `desired` does not name is removed, so `actual` must hold only what is
/// in scope (everything, or what was looked up for some devices).
pub fn plan(desired: &Desired, actual: &Actual, secrets: &HashMap<String, Secret>) -> Plan {
    let mut p = Plan::default();
    for (name, acls) in &desired.roles {
        let list = Value::Array(acls.iter().map(Acl::to_json).collect());
        match actual.roles.get(name) {
            None => p.commands.push(
                json!({"command": "createRole", "rolename": name, "textname": MANAGED, "acls": list}),
            ),
            Some(have) if have != acls => {
                p.commands.push(json!({"command": "modifyRole", "rolename": name, "acls": list}))
            }
            Some(_) => {}
        }
    }
    for (id, want) in &desired.clients {
        let secret = secrets.get(id).filter(|s| s.fp == want.fp);
        let current = tag(&want.fp);
        match actual.clients.get(id) {
            None => {
                let mut c = json!({"command": "createClient", "username": id, "textname": MANAGED,
                    "textdescription": NO_CREDENTIAL, "roles": role_list(&want.roles)});
                match secret {
                    Some(s) => {
                        c["password"] = json!(s.password);
                        c["textdescription"] = json!(current);
                        p.secrets_used.push(id.clone());
                    }
                    None => p.awaiting_rotation.push(id.clone()),
                }
                p.commands.push(c);
                if secret.is_none() {
                    p.commands.push(json!({"command": "disableClient", "username": id}));
                }
            }
            Some(have) if !have.managed => p.conflicts.push(id.clone()),
            Some(have) => {
                let holds_current = have.description.as_deref() == Some(current.as_str());
                let mut modify = json!({"command": "modifyClient", "username": id});
                let mut changed = false;
                if have.roles != want.roles {
                    modify["roles"] = role_list(&want.roles);
                    changed = true;
                }
                let enable = match (holds_current, secret) {
                    (true, _) => true,
                    (false, Some(s)) => {
                        modify["password"] = json!(s.password);
                        modify["textdescription"] = json!(current);
                        changed = true;
                        p.secrets_used.push(id.clone());
                        true
                    }
                    (false, None) => {
                        p.awaiting_rotation.push(id.clone());
                        false
                    }
                };
                if !enable && !have.disabled {
                    // Before anything else: the old password stops working now.
                    p.commands.push(json!({"command": "disableClient", "username": id}));
                }
                if changed {
                    p.commands.push(modify);
                }
                if enable && have.disabled {
                    p.commands.push(json!({"command": "enableClient", "username": id}));
                }
            }
        }
    }
    for (id, have) in &actual.clients {
        if have.managed && !desired.clients.contains_key(id) {
            p.commands.push(json!({"command": "deleteClient", "username": id}));
        }
    }
    for name in actual.roles.keys() {
        if name.starts_with(ROLE_PREFIX) && !desired.roles.contains_key(name) {
            p.commands.push(json!({"command": "deleteRole", "rolename": name}));
        }
    }
    p
}

/// The plugin's configuration file (`plugin_opt_config_file`) with the registry in it:
/// `base` (the file as `mosquitto_ctrl dynsec init` or the broker wrote it: the admin,
/// the service accounts, the default access) without the clients and roles SCCR manages,
/// plus the registry's, each client with its registry hash, which the file stores in the
/// same form (`password`, `salt`, `iterations`; the plugin reads it only at start). On a
/// broker that starts with it, every device's current password works and no rotation is
/// needed: the way from password files to the plugin, or back from a lost password.
/// Returns the file and the devices left out because an unmanaged client has their id.
pub fn config_file(
    base: &Value,
    credentials: &[(DeviceId, String)],
    links: &[(DeviceId, DeviceId)],
) -> Result<(Value, Vec<String>), String> {
    let mut out = base.clone();
    let Some(obj) = out.as_object_mut() else {
        return Err("the plugin's file is not a JSON object".into());
    };
    let keep = |key: &str, managed: &dyn Fn(&Value) -> bool| -> Vec<Value> {
        base[key]
            .as_array()
            .map(|a| a.iter().filter(|v| !managed(v)).cloned().collect())
            .unwrap_or_default()
    };
    let mut clients = keep("clients", &|c| c["textname"].as_str() == Some(MANAGED));
    let mut roles =
        keep("roles", &|r| r["rolename"].as_str().is_some_and(|n| n.starts_with(ROLE_PREFIX)));
    let taken: BTreeSet<String> =
        clients.iter().filter_map(|c| c["username"].as_str().map(str::to_owned)).collect();
    let desired = Desired::from_registry(credentials, links);
    let mut conflicts = Vec::new();
    for (device, hash) in credentials {
        let id = device.as_str();
        if taken.contains(id) {
            conflicts.push(id.to_owned());
            continue;
        }
        let mut parts = hash.split('$');
        let (Some(""), Some("7"), Some(iterations), Some(salt), Some(digest), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{id}: the registry's hash is not a $7$ (PBKDF2-SHA512) hash"));
        };
        let iterations: u32 = match iterations.parse() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("{id}: the registry's hash has no iteration count")),
        };
        // Base64 of the plugin's 12-byte salt and 64-byte hash: it skips other lengths.
        if salt.len() != 16 || digest.len() != 88 {
            return Err(format!(
                "{id}: the registry's hash has not Mosquitto's salt and hash sizes"
            ));
        }
        let Some(want) = desired.clients.get(id) else { continue };
        clients.push(json!({"username": id, "textname": MANAGED, "textdescription": tag(&want.fp),
            "password": digest, "salt": salt, "iterations": iterations, "roles": role_list(&want.roles)}));
    }
    for (name, acls) in &desired.roles {
        let acls: Vec<Value> = acls
            .iter()
            .map(|a| json!({"acltype": a.acltype, "topic": a.topic, "priority": 0, "allow": a.allow}))
            .collect();
        roles.push(json!({"rolename": name, "textname": MANAGED, "acls": acls}));
    }
    obj.insert("clients".into(), Value::Array(clients));
    obj.insert("roles".into(), Value::Array(roles));
    Ok((out, conflicts))
}

/// One answer of the plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub command: String,
    pub error: Option<String>,
    pub data: Value,
}

impl Response {
    /// Whether the command did what was asked, or found it already done.
    pub fn ok(&self) -> bool {
        match self.error.as_deref() {
            None => true,
            Some("Role already exists") => self.command == "createRole",
            Some("Client not found") => self.command == "deleteClient",
            Some("Role not found") => self.command == "deleteRole",
            Some(_) => false,
        }
    }

    /// `command: error`, for people.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.command, self.error.as_deref().unwrap_or("ok"))
    }
}

/// The correlation data of command `index` of request `request`.
pub fn correlation(request: &str, index: usize) -> String {
    format!("{request}:{index}")
}

/// The answers of one response message, with the request they belong to and each one's
/// index in it; `None` when the message is not an answer to one of ours.
pub fn parse_responses(payload: &[u8]) -> Option<(String, Vec<(usize, Response)>)> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let mut request = None;
    let mut out = Vec::new();
    for r in v["responses"].as_array()? {
        let (req, index) = r["correlationData"].as_str()?.rsplit_once(':')?;
        let index: usize = index.parse().ok()?;
        match &request {
            None => request = Some(req.to_owned()),
            Some(known) if known != req => return None,
            Some(_) => {}
        }
        out.push((
            index,
            Response {
                command: r["command"].as_str().unwrap_or_default().to_owned(),
                error: r["error"].as_str().map(str::to_owned),
                data: r["data"].clone(),
            },
        ));
    }
    Some((request?, out))
}

#[cfg(test)]
mod tests;
