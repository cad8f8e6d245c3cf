//! The deployment files parse, and what they name exists: the compose file's and the
//! Kubernetes manifests' commands and flags are ones `sccr` accepts, their configuration
//! passes `sccr check-config`, their ports are the configured API port, their probe paths
//! answer on a running `sccr demo`, the Grafana dashboard queries only metrics `sccr`
//! exports, and the edge agent's systemd unit runs flags `edge-agent` accepts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sccr_tests::{
    free_port, http_request, publish_all, telemetry_topic, wait_for, workspace_bin, workspace_root,
    TempDir,
};
use yaml_rust2::{Yaml, YamlLoader};

fn deploy(path: &str) -> PathBuf {
    workspace_root().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file.
fn yaml_docs(path: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn yaml(path: &Path) -> Yaml {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{} should hold one document", path.display());
    docs.remove(0)
}

fn strs(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| v.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The `--flags` a binary's `--help` lists for `args` (e.g. `["serve"]`).
fn help_flags(bin: &str, args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(workspace_bin(bin).unwrap()).args(args).arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?} --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_alphanumeric()).to_owned())
        .collect()
}

/// The flags of an argument list that the binary's subcommand does not accept.
fn unknown_flags(bin: &str, args: &[String]) -> Vec<String> {
    let sub = args.first().expect("a subcommand").as_str();
    let known = help_flags(bin, &[sub]);
    args.iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap().to_owned())
        .filter(|f| !known.contains(f))
        .collect()
}

/// `sccr check-config` on `toml` with the secrets the deployment passes as environment
/// variables (placeholder values).
fn check_config(toml: &str) {
    let dir = TempDir::new("deploy-config").unwrap();
    let path = dir.path.join("sccr.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(workspace_bin("sccr").unwrap())
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .env_clear()
        .env("SCCR_DATABASE__URL", "postgres://sccr:secret@timescaledb:5432/sccr")
        .env("SCCR_MQTT__PASSWORD", "secret")
        .env("SCCR_PROVISIONING__PASSWORD", "secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sccr check-config refused:\n{toml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The port of `[api] listen` in a configuration text.
fn api_port(toml: &str) -> u16 {
    let line = toml.lines().find(|l| l.trim_start().starts_with("listen")).expect("[api] listen");
    line.rsplit(':').next().unwrap().trim_matches(|c: char| !c.is_ascii_digit()).parse().unwrap()
}

/// Comments and blank lines removed, to compare two copies of a configuration.
fn significant(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn compose_file_runs_what_the_binaries_accept() {
    let compose = yaml(&deploy("compose.yaml"));
    let services = &compose["services"];
    for name in [
        "timescaledb",
        "broker-init",
        "mosquitto",
        "broker-accounts",
        "sccr",
        "prometheus",
        "grafana",
    ] {
        assert!(!services[name].is_badvalue(), "compose.yaml has no {name} service");
        assert!(services[name]["image"].as_str().is_some(), "{name} has no image");
    }
    assert!(services["timescaledb"]["image"]
        .as_str()
        .unwrap()
        .starts_with("timescale/timescaledb"));
    // Every file mounted from the repository exists.
    for (name, svc) in services.as_hash().unwrap() {
        for v in strs(&svc["volumes"]) {
            let source = v.split(':').next().unwrap();
            if source.starts_with("./") && !source.ends_with("sccr.passwd") {
                assert!(
                    deploy(source).exists(),
                    "{}: {source} does not exist",
                    name.as_str().unwrap()
                );
            }
        }
    }
    // Mosquitto runs the dynamic security configuration, on the plugin's file broker-init
    // writes once, with the service accounts of the shipped script; sccr starts once they
    // exist and provisions devices through the plugin with the admin account.
    let mosquitto = &services["mosquitto"];
    assert!(strs(&mosquitto["volumes"])
        .iter()
        .any(|v| v.starts_with("./mosquitto/sccr-dynsec.conf:")));
    assert!(strs(&mosquitto["command"]).concat().contains("sccr-dynsec.conf"));
    let init = strs(&services["broker-init"]["command"]).concat();
    assert!(
        init.contains("mosquitto_ctrl dynsec init /mosquitto/data/dynamic-security.json")
            && init.contains("sccr-provisioning"),
        "{init}"
    );
    assert_eq!(strs(&services["broker-init"]["volumes"]), strs(&mosquitto["volumes"])[1..]);
    assert_eq!(
        mosquitto["depends_on"]["broker-init"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
    let accounts = &services["broker-accounts"];
    assert!(strs(&accounts["volumes"])
        .iter()
        .any(|v| v.starts_with("./mosquitto/sccr-dynsec-accounts.sh:")));
    let script = read(&deploy("mosquitto/sccr-dynsec-accounts.sh"));
    for var in accounts["environment"].as_hash().unwrap().keys() {
        let var = var.as_str().unwrap();
        assert!(script.contains(&format!("${{{var}:?")), "the accounts script reads no {var}");
    }
    assert_eq!(
        services["sccr"]["depends_on"]["broker-accounts"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
    assert!(!services["sccr"]["environment"]["SCCR_PROVISIONING__PASSWORD"].is_badvalue());
    // sccr: a subcommand and flags it accepts, a configuration that validates, its port.
    let sccr = &services["sccr"];
    let command = strs(&sccr["command"]);
    assert_eq!(command[0], "serve");
    assert_eq!(
        unknown_flags("sccr", &command),
        Vec::<String>::new(),
        "compose: sccr serve flags that do not exist"
    );
    let config = read(&deploy("sccr.toml"));
    check_config(&config);
    let port = api_port(&config);
    assert!(
        strs(&sccr["ports"]).iter().any(|p| p.ends_with(&format!(":{port}"))),
        "sccr's published ports miss {port}"
    );
    for var in sccr["environment"].as_hash().unwrap().keys() {
        let var = var.as_str().unwrap();
        assert!(
            var == "RUST_LOG" || var.starts_with("SCCR_") && var.contains("__"),
            "{var} is not an SCCR_<SECTION>__<KEY> override"
        );
    }
    // Compose's own variables (${NAME}) are not sccr's: an SCCR_ name exported in the
    // operator's shell would make every sccr command there refuse it.
    let text = read(&deploy("compose.yaml"));
    let interpolated: Vec<&str> = text
        .split("${")
        .skip(1)
        .map(|rest| rest.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').next().unwrap())
        .collect();
    assert!(interpolated.contains(&"DB_PASSWORD"), "{interpolated:?}");
    for name in interpolated {
        assert!(!name.starts_with("SCCR_"), "compose.yaml interpolates {name}, an SCCR_ name");
    }
    // Prometheus scrapes sccr's API port at /metrics.
    let prom = yaml(&deploy("prometheus/prometheus.yml"));
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    assert_eq!(strs(&job["static_configs"][0]["targets"]), vec![format!("sccr:{port}")]);
    // Grafana's provisioning points at Prometheus and the dashboards directory.
    let ds = yaml(&deploy("grafana/provisioning/datasources/prometheus.yaml"));
    assert_eq!(ds["datasources"][0]["type"].as_str(), Some("prometheus"));
    assert_eq!(ds["datasources"][0]["url"].as_str(), Some("http://prometheus:9090"));
    let dashboards = yaml(&deploy("grafana/provisioning/dashboards/sccr.yaml"));
    assert_eq!(
        dashboards["providers"][0]["options"]["path"].as_str(),
        Some("/var/lib/grafana/dashboards")
    );
}

/// Kubernetes objects of every manifest, by kind and name.
/// Every `SCCR_` name the deployment files use (a name of at least one more character).
fn sccr_names(dir: &Path, out: &mut BTreeSet<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sccr_names(&path, out);
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        for (i, _) in text.match_indices("SCCR_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.len() > "SCCR_".len() {
                out.insert((name, path.display().to_string()));
            }
        }
    }
}

/// No deployment file names an `SCCR_` variable that sccr would refuse: an operator who
/// exports the variables of one (the compose file's, the broker scripts') can still run
/// every sccr command in that shell.
#[test]
fn the_deployment_files_use_no_sccr_name_that_is_not_a_setting() {
    let mut names = BTreeSet::new();
    sccr_names(&workspace_root().join("deploy"), &mut names);
    assert!(names.iter().any(|(n, _)| n == "SCCR_DATABASE__URL"), "{names:?}");
    for (name, file) in &names {
        assert!(
            name.contains("__") || name == "SCCR_CONFIG" || name == "SCCR_WEB_DIR",
            "{file} uses {name}, which is no SCCR_<SECTION>__<KEY> override: sccr refuses it"
        );
    }
    // What sccr itself accepts: each of the others, set, passes check-config.
    let dir = TempDir::new("deploy-names").unwrap();
    let empty = dir.path.join("sccr.toml");
    std::fs::write(&empty, "").unwrap();
    let mut check = Command::new(workspace_bin("sccr").unwrap());
    check
        .args(["check-config", "--config"])
        .arg(&empty)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let non_overrides: Vec<&String> =
        names.iter().map(|(n, _)| n).filter(|n| !n.contains("__")).collect();
    for name in &non_overrides {
        check.env(name, "/dev/null");
    }
    let out = check.output().unwrap();
    assert!(out.status.success(), "{non_overrides:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn k8s_objects() -> Vec<(PathBuf, Yaml)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(deploy("k8s")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            for doc in yaml_docs(&path) {
                assert!(
                    doc["apiVersion"].as_str().is_some() && doc["kind"].as_str().is_some(),
                    "{}: not a Kubernetes object",
                    path.display()
                );
                out.push((path.clone(), doc));
            }
        }
    }
    out
}

fn object<'a>(objects: &'a [(PathBuf, Yaml)], kind: &str, name: &str) -> &'a Yaml {
    objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
}

#[test]
fn kubernetes_manifests_are_consistent_and_their_config_validates() {
    let objects = k8s_objects();
    let config_map = object(&objects, "ConfigMap", "sccr-config");
    let toml = config_map["data"]["sccr.toml"].as_str().unwrap();
    check_config(toml);
    assert_eq!(
        significant(toml),
        significant(&read(&deploy("sccr.toml"))),
        "the ConfigMap's sccr.toml differs from deploy/sccr.toml"
    );
    let port = api_port(toml) as i64;
    let secret = object(&objects, "Secret", "sccr");
    for role in ["sccr-ingest", "sccr-api"] {
        let d = object(&objects, "Deployment", role);
        let spec = &d["spec"]["template"]["spec"];
        let c = &spec["containers"][0];
        assert_eq!(
            c["ports"][0]["containerPort"].as_i64(),
            Some(port),
            "{role}: container port is not [api] listen's"
        );
        assert_eq!(c["ports"][0]["name"].as_str(), Some("http"));
        assert_eq!(c["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
        assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        assert_eq!(
            &d["spec"]["selector"]["matchLabels"], labels,
            "{role}: selector does not match the pod labels"
        );
        // The config volume is the ConfigMap, mounted where --config points.
        assert_eq!(spec["volumes"][0]["configMap"]["name"].as_str(), Some("sccr-config"));
        let args = strs(&c["args"]);
        let config_arg =
            args.iter().position(|a| a == "--config").map(|i| args[i + 1].clone()).unwrap();
        assert_eq!(
            format!("{}/sccr.toml", c["volumeMounts"][0]["mountPath"].as_str().unwrap()),
            config_arg
        );
        for env in c["env"].as_vec().unwrap() {
            let name = env["name"].as_str().unwrap();
            assert!(
                name == "RUST_LOG" || name.starts_with("SCCR_") && name.contains("__"),
                "{role}: {name}"
            );
            let key_ref = &env["valueFrom"]["secretKeyRef"];
            if let Some(key) = key_ref["key"].as_str() {
                assert_eq!(key_ref["name"].as_str(), Some("sccr"));
                assert!(
                    !secret["stringData"][key].is_badvalue(),
                    "{role}: Secret sccr has no key {key}"
                );
            }
        }
    }
    let service = object(&objects, "Service", "sccr-api");
    let api = object(&objects, "Deployment", "sccr-api");
    for (k, v) in service["spec"]["selector"].as_hash().unwrap() {
        assert_eq!(
            &api["spec"]["template"]["metadata"]["labels"][k.as_str().unwrap()],
            v,
            "the Service does not select the api pods"
        );
    }
    assert_eq!(service["spec"]["ports"][0]["targetPort"].as_str(), Some("http"));
}

/// Fails, naming them, when the manifests use flags `sccr serve` does not have.
#[test]
fn kubernetes_deployments_use_only_flags_sccr_serve_accepts() {
    let objects = k8s_objects();
    let mut missing = Vec::new();
    for (name, role) in [("sccr-ingest", "ingest"), ("sccr-api", "api")] {
        let d = object(&objects, "Deployment", name);
        let args = strs(&d["spec"]["template"]["spec"]["containers"][0]["args"]);
        assert_eq!(args[0], "serve");
        let given = args.iter().position(|a| a == "--role").map(|i| args[i + 1].as_str());
        assert_eq!(given, Some(role), "{name} runs the {role} role");
        for flag in unknown_flags("sccr", &args) {
            missing.push(format!("sccr-{role}: sccr serve {flag}"));
        }
    }
    assert!(
        missing.is_empty(),
        "deploy/k8s uses flags sccr does not accept:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn edge_agent_unit_runs_flags_the_agent_accepts_with_a_valid_config() {
    let unit = read(&deploy("edge-agent/sccr-edge-agent.service"));
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(unit.lines().any(|l| l.trim() == section), "the unit has no {section}");
    }
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let words: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
    assert!(words[0].ends_with("/edge-agent"), "{exec}");
    assert_eq!(words[1], "run");
    assert_eq!(
        unknown_flags("edge-agent", &words[1..]),
        Vec::<String>::new(),
        "ExecStart flags edge-agent run does not accept"
    );
    let out = Command::new(workspace_bin("edge-agent").unwrap())
        .args(["check-config", "--config"])
        .arg(deploy("edge-agent/agent.example.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the example agent configuration is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `sccr demo` on free ports, killed on drop.
struct Demo {
    child: std::process::Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_and_the_dashboard_queries_only_exported_metrics() {
    let dir = TempDir::new("deploy-demo").unwrap();
    let port = free_port();
    let mqtt_port = free_port();
    let child = Command::new(workspace_bin("sccr").unwrap())
        .args([
            "demo",
            "--port",
            &port.to_string(),
            "--mqtt-port",
            &mqtt_port.to_string(),
            "--devices",
            "4",
            "--interval",
            "200ms",
            "--backfill",
            "0",
            "--data-dir",
        ])
        .arg(dir.path.join("data"))
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let demo = Demo { child, port, _dir: dir };
    wait_for("sccr demo's /healthz", Duration::from_secs(60), || async {
        http_request(demo.port, "GET", "/healthz", None, "").await.ok().filter(|(s, _)| *s == 200)
    })
    .await;
    // Both probe paths of the manifests answer.
    for path in ["/healthz", "/readyz"] {
        wait_for(&format!("{path} to answer 200"), Duration::from_secs(30), || async {
            http_request(demo.port, "GET", path, None, "").await.ok().filter(|(s, _)| *s == 200)
        })
        .await;
    }
    // One bad message, so the per-reason dead-letter counter has a sample.
    wait_for("a bad message published to the demo's broker", Duration::from_secs(30), || async {
        publish_all(mqtt_port, "deploy-bad", vec![(telemetry_topic("loop-bad"), b"junk".to_vec())])
            .await
            .ok()
    })
    .await;
    // Wait until readings flowed and the dead letter was counted, so labelled counters show.
    let exported: BTreeSet<String> =
        wait_for("readings in /metrics", Duration::from_secs(60), || async {
            let (_, body) = http_request(demo.port, "GET", "/metrics", None, "").await.ok()?;
            let names: BTreeSet<String> = body
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
                .collect();
            let flowing = body.lines().any(|l| {
                l.starts_with("sccr_writer_readings_inserted_total") && !l.ends_with(" 0")
            }) && body.contains("sccr_dead_letters_total{");
            flowing.then_some(names)
        })
        .await;
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&deploy("grafana/dashboards/sccr.json")))
            .expect("dashboard JSON");
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(
            panel["datasource"]["uid"], "sccr-prometheus",
            "panel {} does not use the provisioned datasource",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("sccr_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 10, "the dashboard shows too few figures: {queried:?}");
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics sccr does not export: {missing:?}\nexported: {exported:?}"
    );
}

/// A compose service's key, also where it comes from an extension through `<<:` (YAML
/// merge keys, which compose resolves and this parser leaves as they are).
fn service_key<'a>(service: &'a Yaml, key: &str) -> &'a Yaml {
    match &service[key] {
        Yaml::BadValue => &service["<<"][key],
        value => value,
    }
}

/// `sccr check-config` on a configuration with a service's environment, compose's own
/// `${NAMES}` replaced by placeholders: the overrides must be settings of the right type.
fn check_config_with(toml: &str, env: &[(String, String)]) {
    let dir = TempDir::new("deploy-config").unwrap();
    let path = dir.path.join("sccr.toml");
    std::fs::write(&path, toml).unwrap();
    let placeholder = |v: &str| {
        let mut out = String::new();
        let mut rest = v;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let end = rest[i..].find('}').map_or(rest.len(), |j| i + j + 1);
            out.push_str("secret");
            rest = &rest[end..];
        }
        out + rest
    };
    let out = Command::new(workspace_bin("sccr").unwrap())
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.clone(), placeholder(v))))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sccr check-config refused {env:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The scale-out compose file: a 3-node EMQX cluster, a primary with a synchronous standby,
/// one ingest service per partition with client ids of their own, and an API reading from
/// the standby; every sccr service's flags and environment are accepted.
#[test]
fn scale_out_compose_runs_replicas_a_standby_and_a_broker_cluster() {
    let compose = yaml(&deploy("compose.scale-out.yaml"));
    let services = compose["services"].as_hash().unwrap();
    let config = read(&deploy("sccr-scale-out.toml"));
    let partitions: usize = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("partitions = "))
        .expect("[ingest] partitions in sccr-scale-out.toml")
        .parse()
        .unwrap();
    let mut ingest_ids = BTreeSet::new();
    let mut emqx_nodes = 0;
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        let image = service_key(svc, "image").as_str().unwrap_or_else(|| panic!("{name}: image"));
        for v in strs(service_key(svc, "volumes")) {
            let source = v.split(':').next().unwrap();
            if source.starts_with("./") {
                assert!(deploy(source).exists(), "{name}: {source} does not exist");
            }
        }
        if image.starts_with("emqx/emqx") {
            emqx_nodes += 1;
            let node = svc["environment"]["EMQX_NODE__NAME"].as_str().unwrap();
            assert_eq!(node, format!("emqx@{name}"), "{name}: node name");
        }
        if image != "sccr:latest" {
            continue;
        }
        let command = strs(service_key(svc, "command"));
        assert_eq!(command[0], "serve");
        assert_eq!(unknown_flags("sccr", &command), Vec::<String>::new(), "{name}");
        let role = command.iter().position(|a| a == "--role").map(|i| command[i + 1].clone());
        let env: Vec<(String, String)> = svc["environment"]
            .as_hash()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.as_str().unwrap().to_owned()))
            .collect();
        for (k, _) in &env {
            assert!(k == "RUST_LOG" || k.starts_with("SCCR_") && k.contains("__"), "{name}: {k}");
        }
        check_config_with(&config, &env);
        let id = env.iter().find(|(k, _)| k == "SCCR_MQTT__CLIENT_ID").map(|(_, v)| v.clone());
        let id = id.unwrap_or_else(|| panic!("{name}: a client id of its own"));
        match role.as_deref() {
            Some("ingest") => assert!(ingest_ids.insert(id), "{name}: client id repeated"),
            Some("api") => assert!(
                env.iter().any(|(k, v)| k == "SCCR_DATABASE__READ_URL" && v.contains("standby")),
                "{name}: history and exports read from the standby"
            ),
            other => panic!("{name}: role {other:?}"),
        }
        assert!(
            env.iter().any(|(k, v)| k == "SCCR_DATABASE__FAILOVER_URLS" && v.contains("standby")),
            "{name}: writes fail over to the promoted standby"
        );
    }
    assert_eq!(emqx_nodes, 3, "a 3-node broker cluster");
    assert_eq!(ingest_ids.len(), partitions, "one ingest replica per partition");
    // The primary waits for the standby the standby says it is.
    let primary = strs(&services[&Yaml::from_str("postgres-primary")]["command"]).join(" ");
    assert!(primary.contains("synchronous_commit=on"), "{primary}");
    let sync_name = primary
        .split("synchronous_standby_names=ANY 1 (")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("a synchronous standby name");
    let standby = strs(&services[&Yaml::from_str("postgres-standby")]["command"]).join(" ");
    assert!(standby.contains(&format!("application_name={sync_name}")), "{standby}");
    assert!(standby.contains("pg_basebackup") && standby.contains("-R"), "{standby}");
}

/// deploy/k8s/scale-out: what its kustomization lists exists and parses; the ConfigMap is
/// deploy/sccr-scale-out.toml; the ingest StatefulSet runs one replica per partition with
/// its pod name as client id; the database is a CloudNativePG cluster with a synchronous
/// standby whose Secret and Services the sccr pods use; every configuration validates.
#[test]
fn scale_out_kubernetes_manifests_are_consistent() {
    let dir = deploy("k8s/scale-out");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let mut objects = Vec::new();
    for r in strs(&kustomization["resources"]) {
        let path = dir.join(&r);
        assert!(path.exists(), "kustomization lists {r}, which does not exist");
        objects.extend(yaml_docs(&path));
    }
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| {
                o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s/scale-out"))
    };
    let toml = find("ConfigMap", "sccr-config")["data"]["sccr.toml"].as_str().unwrap();
    assert_eq!(
        significant(toml),
        significant(&read(&deploy("sccr-scale-out.toml"))),
        "the ConfigMap's sccr.toml differs from deploy/sccr-scale-out.toml"
    );
    let partitions: i64 =
        toml.lines().find_map(|l| l.trim().strip_prefix("partitions = ")).unwrap().parse().unwrap();
    let db = find("Cluster", "sccr-db");
    assert!(db["spec"]["instances"].as_i64().unwrap() >= 2, "a primary and a standby");
    assert!(db["spec"]["minSyncReplicas"].as_i64().unwrap() >= 1, "a synchronous standby");
    assert_eq!(db["spec"]["postgresql"]["parameters"]["synchronous_commit"].as_str(), Some("on"));
    let emqx = find("StatefulSet", "emqx");
    assert_eq!(emqx["spec"]["replicas"].as_i64(), Some(3));
    let ingest = find("StatefulSet", "sccr-ingest");
    assert_eq!(ingest["spec"]["replicas"].as_i64(), Some(partitions), "a replica per partition");
    let headless = find("Service", ingest["spec"]["serviceName"].as_str().unwrap());
    assert!(headless["spec"]["clusterIP"].as_str() == Some("None"));
    let api = find("Deployment", "sccr-api");
    for (workload, role) in [(ingest, "ingest"), (api, "api")] {
        let c = &workload["spec"]["template"]["spec"]["containers"][0];
        let args = strs(&c["args"]);
        assert_eq!(args[0], "serve");
        assert_eq!(
            args.iter().position(|a| a == "--role").map(|i| args[i + 1].as_str()),
            Some(role)
        );
        assert_eq!(unknown_flags("sccr", &args), Vec::<String>::new(), "sccr-{role}");
        assert_eq!(
            workload["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"].as_str(),
            Some("sccr-config")
        );
        let mut env = Vec::new();
        for e in c["env"].as_vec().unwrap() {
            let name = e["name"].as_str().unwrap().to_owned();
            assert!(
                name == "RUST_LOG"
                    || name.starts_with("PG")
                    || name.starts_with("SCCR_") && name.contains("__"),
                "sccr-{role}: {name}"
            );
            let from = &e["valueFrom"];
            if name == "SCCR_MQTT__CLIENT_ID" {
                assert_eq!(from["fieldRef"]["fieldPath"].as_str(), Some("metadata.name"));
            }
            if name == "SCCR_DATABASE__URL" {
                assert_eq!(from["secretKeyRef"]["name"].as_str(), Some("sccr-db-app"));
            }
            let value = match (e["value"].as_str(), from["secretKeyRef"]["key"].as_str()) {
                (Some(v), _) => v.replace("$(PGUSER)", "sccr").replace("$(PGPASSWORD)", "secret"),
                (None, Some(_)) if name == "SCCR_DATABASE__URL" => {
                    "postgresql://sccr:secret@sccr-db-rw.default:5432/sccr".into()
                }
                _ => "secret".into(),
            };
            if name.starts_with("SCCR_") || name == "RUST_LOG" {
                env.push((name, value));
            }
        }
        if role == "api" {
            assert!(
                env.iter().any(|(k, v)| k == "SCCR_DATABASE__READ_URL" && v.contains("sccr-db-ro")),
                "the api reads history from the standbys"
            );
        }
        check_config_with(toml, &env);
    }
}
