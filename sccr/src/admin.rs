//! Administrative commands: API tokens, the broker's password file and its ACL.

use std::collections::BTreeSet;
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

/// Replace `out` with `text` atomically (the broker may read it at any time). The file is
/// created with mode 0600 before anything is written to it (it holds password hashes),
/// and keeps the owner and group of the file it replaces, so a broker that runs as its own
/// user (Mosquitto drops to `mosquitto` before reading its files) can still read it;
/// a replacement that cannot keep them is refused and the old file left in place.
fn write_atomically(out: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let tmp = out.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let owner = std::fs::metadata(out).ok().map(|m| (m.uid(), m.gid()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).with_context(|| {
                format!(
                    "giving the new {} the owner of the old one (uid {uid}, gid {gid}), which the \
                     broker may need to read it: run as that user or as root",
                    out.display()
                )
            })?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        anyhow::Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).with_context(|| format!("replacing {}", out.display()))
}

/// The accounts of the password file `text` that are none of `devices`: the service
/// accounts (`sccr-ingest`, `sccr-api`) and any other the broker's operator added.
fn foreign_accounts(text: &str, devices: &BTreeSet<String>) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':').map(|(user, _)| user))
        .filter(|user| !devices.contains(*user))
        .map(str::to_owned)
        .collect()
}

/// Write `out` (atomically) with the service accounts of `include` and one line per
/// active device with credentials. Returns the number of device lines. Without
/// `include`, a file to replace that holds accounts other than the registry's devices is
/// refused: the new file would lock them out at the broker's next reload.
pub async fn write_mqtt_passwd(store: &Store, out: &Path, include: Option<&Path>) -> Result<usize> {
    if include.is_none() {
        if let Ok(old) = std::fs::read_to_string(out) {
            let devices: BTreeSet<String> =
                store.devices().await?.into_iter().map(|d| d.id.to_string()).collect();
            let foreign = foreign_accounts(&old, &devices);
            anyhow::ensure!(
                foreign.is_empty(),
                "{} holds accounts that are no registered devices ({}): pass them with \
                 --include FILE (the service accounts, e.g. services.passwd), or the new file \
                 would lock them out at the broker's next reload; nothing was written",
                out.display(),
                foreign.join(", ")
            );
        }
    }
    let mut text = included(include)?;
    let credentials = store.device_credentials().await?;
    for (device, hash) in &credentials {
        text.push_str(&format!("{device}:{hash}\n"));
    }
    write_atomically(out, &text)?;
    Ok(credentials.len())
}

/// The base ACL `include` names: it must hold the `pattern` lines that give every device
/// its own topics, or the written file would refuse every device (or, with only gateway
/// blocks, everything but the gateways).
fn base_acl(include: Option<&Path>) -> Result<String> {
    let Some(path) = include else {
        anyhow::bail!(
            "--include is required: the ACL file Mosquitto reads must start with the base ACL \
             (deploy/mosquitto/sccr.acl: the device patterns and the service accounts); \
             without it the file would hold only gateway blocks and refuse every device"
        );
    };
    let text = included(Some(path))?;
    anyhow::ensure!(
        text.lines().any(|l| l.trim_start().starts_with("pattern ")),
        "--include {} holds no `pattern` line: the base ACL (deploy/mosquitto/sccr.acl) gives \
         every device its own topics with `pattern write sccr/v1/devices/%u/telemetry` and \
         the like; without them every device would be refused",
        path.display()
    );
    Ok(text)
}

/// Write the broker's ACL file (atomically): `include` (the shipped `sccr.acl`: device
/// patterns and service accounts; required), then one `user` block per gateway granting
/// it the topics of the devices it serves, as a device has them for itself. Returns the
/// number of (gateway, device) grants.
pub async fn write_mqtt_acl(store: &Store, out: &Path, include: Option<&Path>) -> Result<usize> {
    let mut text = base_acl(include)?;
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

/// Write the dynamic security plugin's file (atomically) from `include` (the plugin's
/// file as `mosquitto_ctrl dynsec init` or a stopped broker left it; required: it holds
/// the admin account) with the registry's clients and roles, password hashes included.
/// For a broker that is stopped: the plugin reads the file only at start and rewrites it
/// on every change. Returns the number of device clients and the devices left out because
/// a client SCCR does not manage has their id.
pub async fn write_mqtt_dynsec(
    store: &Store,
    out: &Path,
    include: Option<&Path>,
) -> Result<(usize, Vec<String>)> {
    let Some(path) = include else {
        anyhow::bail!(
            "--include is required: the plugin's file (from `mosquitto_ctrl dynsec init`) \
             holds the admin account SCCR provisions with, and the service accounts"
        );
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --include {}", path.display()))?;
    let base: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("--include {} is not the plugin's JSON file", path.display()))?;
    let credentials = store.device_credentials().await?;
    let links = store.gateway_links().await?;
    let (file, conflicts) = links::dynsec::config_file(&base, &credentials, &links)
        .map_err(|e| anyhow::anyhow!("--include {}: {e}", path.display()))?;
    let mut text = serde_json::to_string_pretty(&file)?;
    text.push('\n');
    write_atomically(out, &text)?;
    Ok((credentials.len() - conflicts.len(), conflicts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sccr-admin-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn files_are_written_readable_by_their_owner_only() {
        let d = dir("mode");
        let out = d.join("sccr.passwd");
        write_atomically(&out, "loop-1:$7$101$x$y\n").unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        // A replaced file made wider by hand is narrowed again, its text replaced whole.
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&out, "loop-2:$7$101$x$z\n").unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "loop-2:$7$101$x$z\n");
        assert!(!out.with_extension("tmp").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn accounts_that_are_no_devices_are_found() {
        let devices: BTreeSet<String> = ["loop-1", "aq-2"].map(str::to_owned).into();
        let text = "# services\nsccr-ingest:$7$101$a$b\n\nloop-1:$7$101$c$d\nsccr-api:$7$101$e$f\n";
        assert_eq!(foreign_accounts(text, &devices), ["sccr-ingest", "sccr-api"]);
        assert!(foreign_accounts("loop-1:$7$101$c$d\naq-2:$7$1$x$y\n", &devices).is_empty());
    }

    #[test]
    fn an_acl_without_the_base_device_patterns_is_refused() {
        let d = dir("acl");
        let e = base_acl(None).unwrap_err().to_string();
        assert!(
            e.contains("--include is required") && e.contains("deploy/mosquitto/sccr.acl"),
            "{e}"
        );
        let gateways_only = d.join("gateways.acl");
        std::fs::write(
            &gateways_only,
            "user cabinet-7\ntopic write sccr/v1/devices/loop-1/telemetry\n",
        )
        .unwrap();
        let e = base_acl(Some(&gateways_only)).unwrap_err().to_string();
        assert!(e.contains("no `pattern` line"), "{e}");
        let empty = d.join("empty.acl");
        std::fs::write(&empty, "").unwrap();
        assert!(base_acl(Some(&empty)).is_err());
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto/sccr.acl");
        let text = base_acl(Some(&shipped)).unwrap();
        assert!(
            text.contains("pattern write sccr/v1/devices/%u/telemetry") && text.ends_with('\n')
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
