//! The Kubernetes manifests in `deploy/kubernetes/`: every document validates against the
//! Kubernetes schemas (`kubernetes-validate --strict`, offline), the deployment rules hold
//! (`tests/kubernetes/policy.py`: non-root, read-only root, no capabilities, exec probes, UDP
//! only, one Service per control replica), every wgagent command line in them parses with our
//! CLI, and every configuration in their ConfigMaps loads with our config parser.
//!
//! Prints `SKIP kubernetes: <reason>` and passes where the Python tools are missing (CI installs
//! them from `.ci/python-requirements.txt`).

#[path = "common/lab.rs"]
mod lab;
#[path = "common/netns.rs"]
mod netns;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

#[test]
fn manifests_validate_and_follow_the_deployment_rules() {
    if let Some(why) = missing_tools() {
        println!("SKIP kubernetes: {why}");
        return;
    }
    let manifests = manifests();
    assert!(manifests.len() >= 6, "{manifests:?}");

    let out = run(Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .args(&manifests));
    assert!(
        out.status.success(),
        "kubernetes-validate: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let out = policy(&manifests);
    assert!(out.status.success(), "policy: {}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("policy report");
    check_commands(&report);
    check_configs(&report);

    // The rules can fail: a container that may write its root file system or keeps a
    // capability is refused.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("workspace.yaml");
    let original =
        std::fs::read_to_string(repo().join("deploy/kubernetes/workspace.yaml")).unwrap();
    let changed = original
        .replacen(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
            1,
        )
        .replacen("drop: [\"ALL\"]", "drop: [\"NET_RAW\"]", 1);
    assert_ne!(changed, original);
    std::fs::write(&broken, changed).unwrap();
    let out = policy(&[broken]);
    assert!(
        !out.status.success(),
        "a weakened manifest passed the rules"
    );
    let complaints = text(&out.stderr);
    assert!(
        complaints.contains("readOnlyRootFilesystem") && complaints.contains("capabilities.drop"),
        "{complaints}"
    );
}

/// Every wgagent command line (containers and probes) parses with the real CLI definition.
fn check_commands(report: &Value) {
    let commands = report["commands"].as_array().expect("commands");
    assert!(commands.len() >= 6, "{commands:?}");
    for c in commands {
        let argv: Vec<String> = c["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        let config = c["env"]["WGAGENT_CONFIG"].as_str();
        assert!(config.is_some(), "{}: no WGAGENT_CONFIG", c["where"]);
        // `WGAGENT_CONFIG` comes from the container's environment; clap reads it from ours, so
        // pass it as the flag it stands for.
        let mut args = argv.clone();
        args.extend(["--config".to_owned(), config.unwrap().to_owned()]);
        if let Err(e) = <wgagent::cli::Cli as clap::Parser>::try_parse_from(&args) {
            panic!("{}: {argv:?} does not parse: {e}", c["where"]);
        }
    }
}

/// Every ConfigMap configuration loads (with a generated key where its private key file is).
fn check_configs(report: &Value) {
    let configs = report["configs"].as_object().expect("configs");
    assert_eq!(configs.len(), 3, "{configs:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut agent_peers = Vec::new();
    let mut control_addresses = Vec::new();
    for (name, text) in configs {
        let path = dir.path().join(name);
        std::fs::write(&path, text.as_str().unwrap()).unwrap();
        let raw: toml::Table = text.as_str().unwrap().parse().expect("TOML");
        let key_file = raw["interface"]["private_key_file"]
            .as_str()
            .expect("key file");
        let key_path = dir.path().join(key_file);
        std::fs::create_dir_all(key_path.parent().unwrap()).unwrap();
        write_key(&key_path);
        let cfg = wgagent::config::Config::load(&path)
            .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
        if name == "agent.toml" {
            agent_peers = cfg.peers.clone();
        } else {
            control_addresses.push(cfg.interface.addresses[0]);
            assert!(
                cfg.peers
                    .iter()
                    .any(|p| p.name.as_deref() == Some("workspace-dev")),
                "{name} does not list the workspace agent"
            );
        }
    }
    // The agent names every replica, by the per-replica Service's DNS name.
    assert_eq!(agent_peers.len(), control_addresses.len());
    let services: Vec<&str> = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for addr in &control_addresses {
        let peer = agent_peers
            .iter()
            .find(|p| p.allowed_ips.iter().any(|n| n.contains(*addr)))
            .unwrap_or_else(|| panic!("the agent has no peer for replica address {addr}"));
        assert!(peer.persistent_keepalive.is_some(), "{:?}", peer.name);
    }
    let configs_text = configs["agent.toml"].as_str().unwrap();
    for service in services
        .iter()
        .filter(|s| s.starts_with("wgagent-control-") && !s.ends_with("pods"))
    {
        assert!(
            configs_text.contains(&format!("{service}.wgagent.svc.cluster.local:51820")),
            "the agent does not name Service {service}"
        );
    }
}

fn write_key(path: &Path) {
    let key = wgagent::keys::encode_private(&wgagent::keys::generate());
    lab::write_new(path, &format!("{key}\n"));
}

fn policy(manifests: &[PathBuf]) -> Output {
    run(Command::new("python3")
        .arg(repo().join("tests/kubernetes/policy.py"))
        .args(manifests))
}

fn manifests() -> Vec<PathBuf> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn missing_tools() -> Option<String> {
    if !Command::new("kubernetes-validate")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Some(
            "kubernetes-validate is not installed (pip install -r .ci/python-requirements.txt)"
                .into(),
        );
    }
    let yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .stderr(Stdio::null())
        .status();
    if !yaml.is_ok_and(|s| s.success()) {
        return Some("python3 cannot import yaml (PyYAML)".into());
    }
    None
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
