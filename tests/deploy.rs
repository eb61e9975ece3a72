//! The deploy examples: the fleet configs parse and agree with each other (keys, addresses,
//! endpoints), the generator produces such a fleet, and the systemd units run real verbs.

use std::path::Path;
use std::process::Command;

use wgagent::config::Config;

/// Checks a fleet directory: two replicas and `n` agents that agree on everything.
fn check_fleet(dir: &Path, n: usize) {
    let load = |name: &str| Config::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let replicas = [load("control-1.toml"), load("control-2.toml")];
    let agents: Vec<Config> = (1..=n).map(|i| load(&format!("agent-{i}.toml"))).collect();
    for (r, c) in replicas.iter().enumerate() {
        let name = format!("control-{}", r + 1);
        assert_eq!(
            c.interface.listen_port, 51820,
            "{name}: agents dial a fixed port"
        );
        assert_eq!(c.peers.len(), n, "{name} lists every agent");
        assert_eq!(c.control.socket_group.as_deref(), Some("wgagent"));
        for (i, a) in agents.iter().enumerate() {
            let p = c
                .peer_by_name(&format!("agent-{}", i + 1))
                .unwrap_or_else(|| panic!("{name} lacks agent-{}", i + 1));
            assert_eq!(
                p.public_key,
                a.interface.public_key,
                "{name}: key of agent-{}",
                i + 1
            );
            assert_eq!(p.endpoint, None, "replicas learn NAT'd agents' endpoints");
            assert!(
                p.allowed_ips
                    .iter()
                    .any(|n| n.contains(a.interface.addresses[0]))
            );
            // The daemon can name it: a single tunnel address.
            let t = wgagent::control::Agents::from_config(c)
                .resolve(&format!("agent-{}", i + 1))
                .unwrap();
            assert_eq!(t.api.ip(), a.interface.addresses[0]);
        }
    }
    for (i, a) in agents.iter().enumerate() {
        assert_eq!(a.peers.len(), 2, "agent-{} lists both replicas", i + 1);
        for (r, c) in replicas.iter().enumerate() {
            let p = a.peer_by_name(&format!("control-{}", r + 1)).unwrap();
            assert_eq!(p.public_key, c.interface.public_key);
            assert_eq!(
                p.persistent_keepalive,
                Some(25),
                "NAT'd agents keep their mapping open"
            );
            assert_eq!(p.endpoint.map(|e| e.port()), Some(51820));
            assert!(
                p.allowed_ips
                    .iter()
                    .any(|n| n.contains(c.interface.addresses[0]))
            );
        }
    }
    // Every tunnel address is unique across the fleet.
    let mut all: Vec<_> = replicas
        .iter()
        .chain(&agents)
        .map(|c| c.interface.addresses[0])
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n + 2);
}

#[test]
fn the_fleet_example_is_consistent() {
    check_fleet(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/fleet/example"),
        3,
    );
}

#[test]
fn the_generator_makes_a_consistent_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/fleet/generate.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("300")
        .arg(dir.path())
        .args(["192.0.2.1", "192.0.2.2"])
        .env("WGAGENT", env!("CARGO_BIN_EXE_wgagent"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_fleet(dir.path(), 300);
    // Past 254 agents the addresses continue in the next /24.
    let a = Config::load(&dir.path().join("agent-255.toml")).unwrap();
    assert_eq!(a.interface.addresses[0].to_string(), "100.64.2.1");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("agent-1.toml"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "configs with inline keys are private");
}

#[test]
fn systemd_units_run_real_verbs() {
    if Path::new("/etc/wgagent").exists() {
        // A real installation: running its units' command lines would start real nodes.
        println!("SKIP systemd units: /etc/wgagent exists on this machine");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (unit, verb) in [
        ("deploy/wgagent.service", "agent"),
        ("deploy/wgagent-control.service", "control"),
    ] {
        let text = std::fs::read_to_string(root.join(unit)).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
        let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
        assert_eq!(args.first(), Some(&verb), "{unit}");
        // The binary accepts exactly these options (clap rejects unknown ones); a missing
        // config file is the only complaint.
        let out = Command::new(env!("CARGO_BIN_EXE_wgagent"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("/etc/wgagent/") && err.contains("cannot read config"),
            "{unit}: {err}"
        );
    }
}
