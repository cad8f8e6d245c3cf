//! Administrative commands: API tokens, the broker's password file and its ACL.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use dashboard_api::auth::{generate_token, Role};
use serde_json::json;
use store::{AuditEntry, Store};
use telemetry::EventTime;

use crate::{pipeline, TokenAction};

pub async fn token(action: TokenAction) -> Result<()> {
    match action {
        TokenAction::Create { config, role, name } => {
            let role = Role::parse(&role).with_context(|| {
                format!("--role {role:?}: use admin, operator, planner or device")
            })?;
            let name = name.trim();
            anyhow::ensure!(
                !name.is_empty() && name.chars().count() <= 128,
                "--name must have 1 to 128 characters"
            );
            let store = pipeline::open_store(&config.load()?).await?;
            let (token, digest) = generate_token().map_err(|e| anyhow::anyhow!(e.message))?;
            let record = store.create_token(name, role.as_str(), &digest, EventTime::now()).await?;
            let detail = json!({"name": name, "role": role});
            let audited = audit(&store, "token.create", record.id, detail).await;
            store.close().await;
            eprintln!(
                "token {} ({}, {}) created; it is shown only now:",
                record.id, record.name, record.role
            );
            println!("{token}");
            audited?;
        }
        TokenAction::List { config } => {
            let store = pipeline::open_store(&config.load()?).await?;
            for t in store.tokens().await? {
                let state = if t.revoked_at.is_some() { "revoked" } else { "active" };
                println!("{}\t{}\t{}\t{}", t.id, t.role, state, t.name);
            }
            store.close().await;
        }
        TokenAction::Revoke { config, id } => {
            let store = pipeline::open_store(&config.load()?).await?;
            let revoked = store.revoke_token(id, EventTime::now()).await;
            let audited = match &revoked {
                Ok(Some(record)) => {
                    audit(&store, "token.revoke", id, json!({"name": record.name})).await
                }
                _ => Ok(()),
            };
            store.close().await;
            anyhow::ensure!(revoked?.is_some(), "no token {id}");
            println!("token {id} revoked");
            audited?;
        }
    }
    Ok(())
}

/// Record a token change made from the command line in the audit log, as the API records
/// its own (same actions, targets and details): the actor is `cli:<login name>`, with
/// the role `admin` (whoever can reach the database can do what an admin can).
async fn audit(store: &Store, action: &str, id: i64, detail: serde_json::Value) -> Result<()> {
    let actor = format!("cli:{}", login_name());
    let target = format!("token/{id}");
    let entry = AuditEntry {
        at: EventTime::now(),
        actor: &actor,
        role: "admin",
        action,
        target: &target,
        detail,
    };
    store.audit(&entry).await.with_context(|| {
        format!("the {action} of token {id} was made but could not be written to the audit log")
    })
}

/// The name of who runs the command: `$USER` (or `$LOGNAME`), else the process's user id.
fn login_name() -> String {
    let named = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()));
    named.unwrap_or_else(|| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if let Ok(meta) = std::fs::metadata("/proc/self") {
                return format!("uid {}", meta.uid());
            }
        }
        "unknown".to_owned()
    })
}

/// `include`'s text (a file of service accounts or the base ACL), ending in a newline.
fn included(include: Option<&Path>) -> Result<String> {
    let mut text = match include {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading --include {}", p.display()))?,
        None => String::new(),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// Replace `out` with `text` atomically (the broker may read it at any time).
fn write_atomically(out: &Path, text: &str) -> Result<()> {
    let tmp = out.with_extension("tmp");
    {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("replacing {}", out.display()))
}

/// Write `out` (atomically) with the service accounts of `include` and one line per
/// active device with credentials. Returns the number of device lines.
pub async fn write_mqtt_passwd(store: &Store, out: &Path, include: Option<&Path>) -> Result<usize> {
    let mut text = included(include)?;
    let credentials = store.device_credentials().await?;
    for (device, hash) in &credentials {
        text.push_str(&format!("{device}:{hash}\n"));
    }
    write_atomically(out, &text)?;
    Ok(credentials.len())
}

/// Write the broker's ACL file (atomically): `include` (the shipped `sccr.acl`: device
/// patterns and service accounts), then one `user` block per gateway granting it the
/// topics of the devices it serves, as a device has them for itself. Returns the number
/// of (gateway, device) grants.
pub async fn write_mqtt_acl(store: &Store, out: &Path, include: Option<&Path>) -> Result<usize> {
    let mut text = included(include)?;
    let links = store.gateway_links().await?;
    if !links.is_empty() {
        text.push_str(
            "\n# Gateways and the devices they serve (sccr mqtt-acl, from the device registry).\n",
        );
    }
    let mut current = None;
    for (gateway, device) in &links {
        if current != Some(gateway) {
            text.push_str(&format!("user {gateway}\n"));
            current = Some(gateway);
        }
        for suffix in ["telemetry", "status", "commands/ack"] {
            text.push_str(&format!("topic write sccr/v1/devices/{device}/{suffix}\n"));
        }
        text.push_str(&format!("topic read sccr/v1/devices/{device}/commands\n"));
    }
    write_atomically(out, &text)?;
    Ok(links.len())
}
