use super::*;

fn id(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

fn commands(p: &Plan) -> Vec<String> {
    p.commands
        .iter()
        .map(|c| {
            let who = c["username"].as_str().or(c["rolename"].as_str()).unwrap_or_default();
            format!("{} {who}", c["command"].as_str().unwrap())
        })
        .collect()
}

/// The broker after `desired` was applied with every password known.
fn applied(desired: &Desired) -> Actual {
    Actual {
        clients: desired
            .clients
            .iter()
            .map(|(id, c)| {
                let client = ActualClient {
                    managed: true,
                    description: Some(tag(&c.fp)),
                    disabled: false,
                    roles: c.roles.clone(),
                };
                (id.clone(), client)
            })
            .collect(),
        roles: desired.roles.clone(),
    }
}

fn secret(hash: &str, password: &str) -> Secret {
    Secret { fp: fingerprint(hash), password: password.to_owned() }
}

#[test]
fn a_device_role_grants_what_the_acl_file_grants_for_its_username() {
    let acls = device_acls("loop-1");
    let send: BTreeSet<&str> = acls
        .iter()
        .filter(|a| a.acltype == "publishClientSend" && a.allow)
        .map(|a| a.topic.as_str())
        .collect();
    assert_eq!(
        send,
        BTreeSet::from([
            "sccr/v1/devices/loop-1/telemetry",
            "sccr/v1/devices/loop-1/status",
            "sccr/v1/devices/loop-1/commands/ack"
        ])
    );
    let read: Vec<(&str, &str)> = acls
        .iter()
        .filter(|a| a.acltype != "publishClientSend")
        .map(|a| (a.acltype.as_str(), a.topic.as_str()))
        .collect();
    assert_eq!(
        read,
        vec![
            ("publishClientReceive", "sccr/v1/devices/loop-1/commands"),
            ("subscribePattern", "sccr/v1/devices/loop-1/commands")
        ]
    );
}

#[test]
fn a_gateway_holds_the_roles_of_the_devices_it_serves() {
    let d = Desired::from_registry(
        &[(id("cab-1"), "h1".into()), (id("loop-1"), "h2".into())],
        &[(id("cab-1"), id("loop-1")), (id("cab-1"), id("loop-2"))],
    );
    assert_eq!(
        d.clients["cab-1"].roles,
        BTreeSet::from([role_name("cab-1"), role_name("loop-1"), role_name("loop-2")])
    );
    assert_eq!(d.clients["loop-1"].roles, BTreeSet::from([role_name("loop-1")]));
    // loop-2 has no credentials (no client of its own) but its role exists for the gateway.
    assert!(!d.clients.contains_key("loop-2"));
    assert_eq!(d.roles.len(), 3);
}

#[test]
fn a_new_device_with_its_password_is_created_with_its_role() {
    let d = Desired::from_registry(&[(id("loop-1"), "h1".into())], &[]);
    let secrets = HashMap::from([("loop-1".to_owned(), secret("h1", "pw"))]);
    let p = plan(&d, &Actual::default(), &secrets);
    assert_eq!(commands(&p), ["createRole sccr-device-loop-1", "createClient loop-1"]);
    let create = &p.commands[1];
    assert_eq!(create["password"], "pw");
    assert_eq!(create["textname"], MANAGED);
    assert_eq!(create["textdescription"], tag(&fingerprint("h1")));
    assert_eq!(create["roles"], json!([{"rolename": "sccr-device-loop-1"}]));
    assert_eq!(p.secrets_used, ["loop-1"]);
    assert!(p.awaiting_rotation.is_empty() && p.conflicts.is_empty());
}

#[test]
fn an_applied_registry_needs_no_command() {
    let d = Desired::from_registry(
        &[(id("cab-1"), "h1".into()), (id("loop-1"), "h2".into())],
        &[(id("cab-1"), id("loop-1"))],
    );
    assert_eq!(plan(&d, &applied(&d), &HashMap::new()), Plan::default());
}

#[test]
fn without_its_password_a_missing_device_is_created_disabled_and_awaits_a_rotation() {
    let d = Desired::from_registry(&[(id("loop-1"), "h1".into())], &[]);
    // A secret of an older hash is no use.
    let secrets = HashMap::from([("loop-1".to_owned(), secret("h0", "old"))]);
    let p = plan(&d, &Actual::default(), &secrets);
    assert_eq!(
        commands(&p),
        ["createRole sccr-device-loop-1", "createClient loop-1", "disableClient loop-1"]
    );
    assert!(p.commands[1].get("password").is_none());
    assert_eq!(p.commands[1]["textdescription"], NO_CREDENTIAL);
    assert_eq!(p.awaiting_rotation, ["loop-1"]);
    // Once disabled, nothing more is done until the password is known.
    let mut actual = applied(&d);
    let client = actual.clients.get_mut("loop-1").unwrap();
    client.description = Some(NO_CREDENTIAL.into());
    client.disabled = true;
    let p = plan(&d, &actual, &HashMap::new());
    assert!(p.commands.is_empty());
    assert_eq!(p.awaiting_rotation, ["loop-1"]);
}

#[test]
fn a_rotation_the_broker_missed_disables_the_old_password_or_sets_the_new_one() {
    let before = Desired::from_registry(&[(id("loop-1"), "h1".into())], &[]);
    let actual = applied(&before);
    let after = Desired::from_registry(&[(id("loop-1"), "h2".into())], &[]);
    let p = plan(&after, &actual, &HashMap::new());
    assert_eq!(commands(&p), ["disableClient loop-1"]);
    assert_eq!(p.awaiting_rotation, ["loop-1"]);
    let secrets = HashMap::from([("loop-1".to_owned(), secret("h2", "new"))]);
    let p = plan(&after, &actual, &secrets);
    assert_eq!(commands(&p), ["modifyClient loop-1"]);
    assert_eq!(p.commands[0]["password"], "new");
    assert_eq!(p.commands[0]["textdescription"], tag(&fingerprint("h2")));
    // A disabled client given its current password is enabled again.
    let mut disabled = actual.clone();
    disabled.clients.get_mut("loop-1").unwrap().disabled = true;
    let p = plan(&after, &disabled, &secrets);
    assert_eq!(commands(&p), ["modifyClient loop-1", "enableClient loop-1"]);
    // So is one that already holds it.
    let mut current = applied(&after);
    current.clients.get_mut("loop-1").unwrap().disabled = true;
    assert_eq!(commands(&plan(&after, &current, &HashMap::new())), ["enableClient loop-1"]);
}

#[test]
fn decommissioned_devices_and_their_roles_are_removed_but_unmanaged_clients_never() {
    let before = Desired::from_registry(
        &[(id("cab-1"), "h1".into()), (id("loop-1"), "h2".into())],
        &[(id("cab-1"), id("loop-1"))],
    );
    let mut actual = applied(&before);
    actual.clients.insert(
        "sccr-ingest".into(),
        ActualClient {
            managed: false,
            roles: BTreeSet::from(["sccr-ingest".into()]),
            ..Default::default()
        },
    );
    let after = Desired::from_registry(&[(id("cab-1"), "h1".into())], &[]);
    let p = plan(&after, &actual, &HashMap::new());
    assert_eq!(
        commands(&p),
        ["modifyClient cab-1", "deleteClient loop-1", "deleteRole sccr-device-loop-1"]
    );
    assert_eq!(p.commands[0]["roles"], json!([{"rolename": "sccr-device-cab-1"}]));
    assert!(p.commands[0].get("password").is_none(), "a role change keeps the password");
}

#[test]
fn a_device_named_like_an_unmanaged_client_is_a_conflict() {
    let d = Desired::from_registry(&[(id("sccr-api"), "h1".into())], &[]);
    let mut actual = Actual::default();
    actual.clients.insert("sccr-api".into(), ActualClient::default());
    let secrets = HashMap::from([("sccr-api".to_owned(), secret("h1", "pw"))]);
    let p = plan(&d, &actual, &secrets);
    assert_eq!(commands(&p), ["createRole sccr-device-sccr-api"]);
    assert_eq!(p.conflicts, ["sccr-api"]);
    assert!(p.secrets_used.is_empty());
}

#[test]
fn a_role_whose_acls_were_changed_by_hand_is_corrected() {
    let d = Desired::from_registry(&[(id("loop-1"), "h1".into())], &[]);
    let mut actual = applied(&d);
    actual.roles.get_mut("sccr-device-loop-1").unwrap().insert(Acl {
        acltype: "publishClientSend".into(),
        topic: "#".into(),
        allow: true,
    });
    let p = plan(&d, &actual, &HashMap::new());
    assert_eq!(commands(&p), ["modifyRole sccr-device-loop-1"]);
    assert_eq!(p.commands[0]["acls"].as_array().unwrap().len(), 5);
}

#[test]
fn looking_at_some_devices_names_their_roles_and_their_gateways_roles() {
    let d = Desired::from_registry(
        &[(id("cab-1"), "h1".into()), (id("loop-1"), "h2".into()), (id("aq-1"), "h3".into())],
        &[(id("cab-1"), id("loop-1")), (id("cab-1"), id("loop-2"))],
    );
    let (only, roles) = d.only(&BTreeSet::from(["cab-1".to_owned(), "gone".to_owned()]));
    assert_eq!(only.clients.keys().collect::<Vec<_>>(), ["cab-1"]);
    assert_eq!(
        roles,
        BTreeSet::from([
            role_name("cab-1"),
            role_name("gone"),
            role_name("loop-1"),
            role_name("loop-2")
        ])
    );
    assert_eq!(only.roles.len(), 3, "the role of a device gone is not asked for");
}

#[test]
fn clients_and_roles_read_from_the_plugins_answers() {
    let (name, c) = ActualClient::from_json(&json!({"username": "loop-1", "textname": MANAGED,
        "textdescription": "sccr-credential:ab", "disabled": true,
        "roles": [{"rolename": "sccr-device-loop-1"}], "groups": []}))
    .unwrap();
    assert_eq!(name, "loop-1");
    assert!(c.managed && c.disabled);
    assert_eq!(c.description.as_deref(), Some("sccr-credential:ab"));
    assert_eq!(c.roles, BTreeSet::from(["sccr-device-loop-1".to_owned()]));
    let (_, admin) = ActualClient::from_json(&json!({"username": "admin", "roles": []})).unwrap();
    assert!(!admin.managed && !admin.disabled);
    let (role, acls) = role_from_json(&json!({"rolename": "sccr-device-loop-1", "acls": [
        {"acltype": "publishClientSend", "topic": "sccr/v1/devices/loop-1/telemetry", "priority": -1, "allow": true}
    ]}))
    .unwrap();
    assert_eq!(role, "sccr-device-loop-1");
    assert_eq!(acls.len(), 1);
}

#[test]
fn answers_are_matched_to_their_request_by_correlation() {
    let payload = json!({"responses": [
        {"command": "createRole", "error": "Role already exists", "correlationData": correlation("p1-7", 0)},
        {"command": "createClient", "correlationData": correlation("p1-7", 1)},
        {"command": "getClient", "data": {"client": {"username": "x"}}, "correlationData": correlation("p1-7", 2)},
    ]});
    let (request, answers) = parse_responses(payload.to_string().as_bytes()).unwrap();
    assert_eq!(request, "p1-7");
    assert_eq!(answers.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(answers.iter().all(|(_, r)| r.ok()), "an existing role is what was asked");
    assert_eq!(answers[2].1.data["client"]["username"], "x");
    let failed = Response {
        command: "createClient".into(),
        error: Some("Client already exists".into()),
        data: Value::Null,
    };
    assert!(!failed.ok());
    assert_eq!(failed.describe(), "createClient: Client already exists");
    // Someone else's answers, or answers without correlation, are not ours.
    assert!(parse_responses(br#"{"responses":[{"command":"listClients"}]}"#).is_none());
    assert!(parse_responses(b"not json").is_none());
}

#[test]
fn a_fingerprint_names_a_hash_without_revealing_it() {
    let a = fingerprint("$7$101$c2FsdA==$aGFzaA==");
    assert_eq!(a.len(), 32);
    assert_eq!(a, fingerprint("$7$101$c2FsdA==$aGFzaA=="));
    assert_ne!(a, fingerprint("$7$101$c2FsdA==$aGFzaB=="));
    assert!(
        format!("{:?}", secret("h", "hunter2")).contains("fp")
            && !format!("{:?}", secret("h", "hunter2")).contains("hunter2")
    );
}

#[test]
fn the_plugins_file_takes_the_registry_with_its_hashes_and_keeps_the_rest() {
    let salt = "c2FsdHNhbHRzYWx0"; // 12 bytes
    let digest = format!("{}==", "A".repeat(86)); // 64 bytes
    let hash = format!("$7$101${salt}${digest}");
    let base = json!({
        "defaultACLAccess": [{"acltype": "subscribe", "allow": false}],
        "clients": [
            {"username": "sccr-provisioning", "roles": [{"rolename": "admin"}]},
            {"username": "sccr-api", "roles": [{"rolename": "sccr-api"}]},
            {"username": "old-1", "textname": MANAGED, "roles": [{"rolename": "sccr-device-old-1"}]},
        ],
        "roles": [{"rolename": "admin"}, {"rolename": "sccr-device-old-1"}],
    });
    let (file, conflicts) = config_file(
        &base,
        &[(id("cab-1"), hash.clone()), (id("sccr-api"), hash.clone())],
        &[(id("cab-1"), id("loop-1"))],
    )
    .unwrap();
    assert_eq!(conflicts, ["sccr-api"]);
    assert_eq!(file["defaultACLAccess"], base["defaultACLAccess"]);
    let names = |key: &str, field: &str| -> Vec<String> {
        file[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v[field].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("clients", "username"), ["sccr-provisioning", "sccr-api", "cab-1"]);
    assert_eq!(
        names("roles", "rolename"),
        ["admin", "sccr-device-cab-1", "sccr-device-loop-1", "sccr-device-sccr-api"]
    );
    let cab = &file["clients"][2];
    assert_eq!(
        (cab["salt"].as_str(), cab["password"].as_str()),
        (Some(salt), Some(digest.as_str()))
    );
    assert_eq!(cab["iterations"], 101);
    assert_eq!(cab["textdescription"], tag(&fingerprint(&hash)));
    assert_eq!(
        cab["roles"],
        json!([{"rolename": "sccr-device-cab-1"}, {"rolename": "sccr-device-loop-1"}])
    );
    // What the plugin holds after loading this file is what the registry asks: no command
    // but the removal of the conflicting device's role.
    let mut actual = Actual::default();
    for c in file["clients"].as_array().unwrap() {
        let (name, client) = ActualClient::from_json(c).unwrap();
        actual.clients.insert(name, client);
    }
    for r in file["roles"].as_array().unwrap() {
        let (name, acls) = role_from_json(r).unwrap();
        if name.starts_with(ROLE_PREFIX) {
            actual.roles.insert(name, acls);
        }
    }
    let desired =
        Desired::from_registry(&[(id("cab-1"), hash.clone())], &[(id("cab-1"), id("loop-1"))]);
    let p = plan(&desired, &actual, &HashMap::new());
    assert_eq!(commands(&p), ["deleteRole sccr-device-sccr-api"]);
    assert!(config_file(&json!([]), &[], &[]).is_err());
    assert!(config_file(&base, &[(id("x"), "$6$1$a$b".into())], &[]).unwrap_err().contains("x:"));
}
