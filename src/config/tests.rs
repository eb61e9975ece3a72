//! The config module's tests: typed values and defaults, every error naming its file and key
//! path, the example files, key files and permissions.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use ip_network::IpNetwork;

use super::load::parse_inner;
use super::*;
use crate::keys;

const FILE: &str = "/etc/wgagent/test.toml";
const OWN: &str = "GCIr1iOf/ayRZYRqbEegDnZyd9r+0R6PTVDIh14tunI=";
const OWN_PUB: &str = "oZL7+S7zwULla3XcnpzMP7hnfarsi/QkgoVJ45j3cSo=";
const P1: &str = "vGPRR+1ynWogn9oS6/gHPIMipod6w+ahp9U+HorMpkY=";
const P2: &str = "lQyo/6Qm74UwPvsrCT7LB5gDm3JRcw51GbXW/rpSN3A=";
const PSK: &str = "BhODDsqHaKX1fWrJIffPqvbXouv1MPKsGELLTRWYgOs=";

/// Knows one name; everything else fails like an NXDOMAIN, without touching the network.
fn fake_resolver(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    match host {
        "control.test" => Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]),
        _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
    }
}

#[test]
fn private_key_file_flag_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let write_key = |name: &str| {
        let key = keys::generate();
        let path = dir.path().join(name);
        std::fs::write(&path, keys::encode_private(&key)).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        (keys::public_key(&key), path)
    };
    let (in_file, _) = write_key("file.key");
    let (flag, flag_path) = write_key("flag.key");
    let peer = format!(
        "[[peer]]\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.1/32\"]\n",
        keys::encode_public(&keys::public_key(&keys::generate()))
    );
    // The file names its own key: the flag's wins, with a warning.
    let with_key = dir.path().join("with.toml");
    std::fs::write(
        &with_key,
        format!(
            "[interface]\nprivate_key_file = \"file.key\"\naddress = [\"100.64.0.10\"]\n{peer}"
        ),
    )
    .unwrap();
    let cfg = Config::load(&with_key).unwrap();
    assert_eq!(cfg.interface.public_key, in_file);
    assert_eq!(
        cfg.interface.private_key_path,
        Some(dir.path().join("file.key"))
    );
    let cfg = Config::load_with_key(&with_key, Some(&flag_path)).unwrap();
    assert_eq!(cfg.interface.public_key, flag);
    assert_eq!(
        cfg.interface.private_key_path.as_deref(),
        Some(flag_path.as_path())
    );
    assert!(
        cfg.warnings.iter().any(|w| w.contains("is ignored")),
        "{:?}",
        cfg.warnings
    );
    // The file has no key at all: fine with the flag, an error without.
    let without = dir.path().join("without.toml");
    std::fs::write(
        &without,
        format!("[interface]\naddress = [\"100.64.0.10\"]\n{peer}"),
    )
    .unwrap();
    let cfg = Config::load_with_key(&without, Some(&flag_path)).unwrap();
    assert_eq!(cfg.interface.public_key, flag);
    assert!(!cfg.warnings.iter().any(|w| w.contains("is ignored")));
    let e = Config::load(&without).err().unwrap().to_string();
    assert!(e.contains("no private key"), "{e}");
    // An unreadable flag file is an error naming the flag.
    let e = Config::load_with_key(&with_key, Some(&dir.path().join("missing.key")))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--private-key-file"), "{e}");
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_inner(text, Path::new(FILE), &fake_resolver, None).map(|(config, _)| config)
}

fn interface(extra: &str) -> String {
    format!("[interface]\nprivate_key = \"{OWN}\"\naddress = [\"100.64.0.10\"]\n{extra}\n")
}

fn peer(extra: &str) -> String {
    format!("[[peer]]\npublic_key = \"{P1}\"\nallowed_ips = [\"100.64.0.1\"]\n{extra}\n")
}

/// The error's Display, checked to name the file and the key path.
#[track_caller]
fn error(text: &str, key: &str) -> String {
    let message = match parse(text) {
        Ok(_) => panic!("expected an error at `{key}` for:\n{text}"),
        Err(e) => e.to_string(),
    };
    assert!(message.starts_with(FILE), "no file in: {message}");
    assert!(
        message.contains(&format!("`{key}`")),
        "no `{key}` in: {message}"
    );
    message
}

#[test]
fn minimal_config_gets_defaults() {
    let config = parse(&(interface("") + &peer(""))).unwrap();
    assert_eq!(keys::encode_public(&config.interface.public_key), OWN_PUB);
    assert_eq!(
        config.interface.addresses,
        vec!["100.64.0.10".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(config.interface.listen_port, 0);
    assert_eq!(config.interface.mtu, 1280);
    assert_eq!(config.interface.tcp_buffer, 524_288);
    assert_eq!(config.interface.max_connections_per_peer, 64);
    assert_eq!(config.interface.tcp_memory, 64 << 20);
    assert_eq!(config.interface.max_connections, 1024);
    assert_eq!(config.interface.handshake_rate_limit, None);
    assert_eq!(config.interface.idle_session_timeout, None);
    assert_eq!(config.api, Api::default());
    assert_eq!(config.control, Control::default());
    assert_eq!(config.files, Files::default());
    let peer = &config.peers[0];
    assert_eq!(
        peer.allowed_ips,
        vec!["100.64.0.1/32".parse::<IpNetwork>().unwrap()]
    );
    assert_eq!(
        (peer.endpoint, peer.persistent_keepalive, peer.preshared_key),
        (None, None, None)
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn full_config_becomes_typed_values() {
    let text = format!(
        "{}[api]\nport = 8\nallowed_sources = [\"100.64.0.0/24\"]\nmax_running = 2\n\
         max_tracked = 3\ndefault_workdir = \"/\"\nnice_increment = 0\noom_score_adj = -5\n\
         kill_grace = \"250ms\"\nshutdown_grace = 7\ntree_tracking = false\n\
         state_dir = \"/var/lib/x\"\nlog_max_bytes = 8192\nstate_max_bytes = 65536\n\
         header_timeout = \"2s\"\n\
         body_timeout = 3\nbody_min_rate = 0\nidle_timeout = \"1m\"\nsend_timeout = 9\n\
         [control]\nconnect_timeout = \"1m30s\"\nrequest_timeout = 2\n\
         socket = \"run/control.sock\"\nsocket_group = \"wgagent\"\nmax_connections = 8\n\
         state_dir = \"/var/lib/wgagent-control\"\n\
         [files]\nmax_write_bytes = 2048\nmax_edit_files = 3\nfsync = false\n\
         {}[[peer]]\nname = \"c2\"\npublic_key = \"{P2}\"\nallowed_ips = [\"fd00::/64\", \"10.0.0.0/8\"]\n\
         endpoint = \"[::1]:51821\"\npersistent_keepalive = 0\n",
        interface("listen_port = 51820\nmtu = 1420\ntcp_buffer = 65536\nmax_connections_per_peer = 8\ntcp_memory = 1048576\nmax_connections = 64\nhandshake_rate_limit = 5000\nidle_session_timeout = \"5m\""),
        peer("name = \"c1\"\npreshared_key = \"PSK\"\nendpoint = \"control.test:51820\"\npersistent_keepalive = 25")
            .replace("\"PSK\"", &format!("\"{PSK}\"")),
    );
    let config = parse(&text).unwrap();
    assert_eq!(
        (config.interface.listen_port, config.interface.mtu),
        (51820, 1420)
    );
    assert_eq!(config.interface.tcp_buffer, 65536);
    assert_eq!(config.interface.max_connections_per_peer, 8);
    assert_eq!(config.interface.tcp_memory, 1 << 20);
    assert_eq!(config.interface.max_connections, 64);
    assert_eq!(config.interface.handshake_rate_limit, Some(5000));
    assert_eq!(
        config.interface.idle_session_timeout,
        Some(Duration::from_secs(300))
    );
    let api = &config.api;
    assert_eq!(api.port, 8);
    assert_eq!(
        api.allowed_sources,
        Some(vec!["100.64.0.0/24".parse().unwrap()])
    );
    assert_eq!((api.max_running, api.max_tracked), (2, 3));
    assert_eq!(api.default_workdir.as_deref(), Some(Path::new("/")));
    assert_eq!((api.nice_increment, api.oom_score_adj), (0, -5));
    assert_eq!(api.kill_grace, Duration::from_millis(250));
    assert_eq!(api.shutdown_grace, Duration::from_secs(7));
    assert!(!api.tree_tracking);
    assert_eq!(api.state_dir.as_deref(), Some(Path::new("/var/lib/x")));
    assert_eq!((api.log_max_bytes, api.state_max_bytes), (8192, 65536));
    assert_eq!(
        (
            api.header_timeout,
            api.body_timeout,
            api.idle_timeout,
            api.send_timeout
        ),
        (
            Duration::from_secs(2),
            Duration::from_secs(3),
            Duration::from_secs(60),
            Duration::from_secs(9)
        )
    );
    assert_eq!(api.body_min_rate, 0);
    assert_eq!(config.control.connect_timeout, Duration::from_secs(90));
    assert_eq!(config.control.request_timeout, Duration::from_secs(2));
    assert_eq!(
        config.control.socket.as_deref(),
        Some(
            Path::new(FILE)
                .parent()
                .unwrap()
                .join("run/control.sock")
                .as_path()
        ),
        "relative to the config file"
    );
    assert_eq!(config.control.socket_group.as_deref(), Some("wgagent"));
    assert_eq!(config.control.max_connections, 8);
    assert_eq!(
        config.control.state_dir.as_deref(),
        Some(Path::new("/var/lib/wgagent-control"))
    );
    assert_eq!(
        config.files,
        Files {
            max_write_bytes: 2048,
            max_edit_files: 3,
            fsync: false
        }
    );
    let c1 = config.peer_by_name("c1").unwrap();
    assert_eq!(c1.endpoint, Some("127.0.0.1:51820".parse().unwrap()));
    assert_eq!(c1.persistent_keepalive, Some(25));
    assert_eq!(c1.preshared_key, Some(keys::decode_key(PSK).unwrap()));
    let c2 = config.peer_by_name("c2").unwrap();
    assert_eq!(c2.endpoint, Some("[::1]:51821".parse().unwrap()));
    assert_eq!(c2.persistent_keepalive, None);
    assert_eq!(c2.allowed_ips.len(), 2);
    assert!(config.peer_by_name("c3").is_none());
    // Debug never shows secrets.
    let debug = format!("{config:?}");
    assert!(!debug.contains(OWN) && !debug.contains(PSK) && debug.contains(OWN_PUB));
}

#[test]
fn syntax_errors_name_line_and_column() {
    let err = parse("[interface]\naddress = = 1\n").unwrap_err();
    let ConfigError::Syntax { line, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*line, 2, "{err}");
    assert!(err.to_string().starts_with(&format!("{FILE}:2:")), "{err}");
}

#[test]
fn unknown_keys_name_the_key_path() {
    let cases = [
        (interface("") + "[bogus]\n", "bogus"),
        (interface("lisen_port = 1"), "interface.lisen_port"),
        (interface("") + "[api]\nmax_procs = 1\n", "api.max_procs"),
        (
            interface("") + &peer("") + &peer("keepalive = 1"),
            "peer[1].keepalive",
        ),
        (
            interface("") + "[control]\ntimeout = 1\n",
            "control.timeout",
        ),
        (interface("") + "[interface.sub]\n", "interface.sub"),
    ];
    for (text, key) in cases {
        let err = parse(&text).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
        let message = error(&text, key);
        assert!(message.contains("expected"), "{message}");
    }
}

/// (config text, key path, problem substring) for every kind of invalid value.
#[rustfmt::skip]
fn invalid_cases() -> Vec<(String, &'static str, &'static str)> {
    let addr = |list: &str| format!("[interface]\nprivate_key = \"{OWN}\"\naddress = {list}\n");
    let with_peer = |find: &str, replace: &str| interface("") + &peer("").replace(find, replace);
    let with_api = |extra: &str| interface(&format!("[api]\n{extra}"));
    vec![
        ("[api]\n".into(), "interface", "missing"),
        (format!("[interface]\nprivate_key = \"{OWN}\"\n"), "interface.address", "missing"),
        (addr("[]"), "interface.address", "at least one"),
        (addr("\"100.64.0.1\""), "interface.address", "expected a list, found string"),
        (addr("[\"100.64.0.1/24\"]"), "interface.address[0]", "without a prefix"),
        (addr("[\"1.1.1.1\", \"1.1.1.1\"]"), "interface.address[1]", "twice"),
        ("[interface]\naddress = [\"1.1.1.1\"]\n".into(), "interface", "no private key"),
        (interface("private_key_file = \"k\""), "interface.private_key", "not both"),
        (interface("").replace(OWN, "abc"), "interface.private_key", "44 base64 characters"),
        (interface("mtu = \"big\""), "interface.mtu", "expected an integer, found string \"big\""),
        (interface("mtu = 100"), "interface.mtu", "out of range 1280..=9000"),
        (interface("mtu = 1000"), "interface.mtu", "out of range 1280..=9000"),
        (addr("[\"fd00::1\"]") + "mtu = 1000\n", "interface.mtu", "out of range 1280..=9000"),
        (addr("[\"10.0.0.1\", \"10.0.0.2\"]"), "interface.address[1]", "at most one IPv4"),
        (interface("listen_port = 70000"), "interface.listen_port", "70000"),
        (interface("tcp_buffer = 1024"), "interface.tcp_buffer", "out of range"),
        (interface("max_connections_per_peer = 0"), "interface.max_connections_per_peer", "out of range 1..=1024"),
        (interface("tcp_memory = 1000"), "interface.tcp_memory", "out of range"),
        (interface("max_connections = 8"), "interface.max_connections", "out of range 16..=65536"),
        (interface("handshake_rate_limit = 0"), "interface.handshake_rate_limit", "out of range 10..=1000000"),
        (interface("idle_session_timeout = \"500ms\""), "interface.idle_session_timeout", "0 (never) or at least 1s"),
        (interface("idle_session_timeout = -1"), "interface.idle_session_timeout", "negative"),
        (with_api("header_timeout = 0"), "api.header_timeout", "greater than zero"),
        (with_api("idle_timeout = \"0s\""), "api.idle_timeout", "greater than zero"),
        (with_api("body_min_rate = -1"), "api.body_min_rate", "out of range"),
        (interface("api = 3"), "interface.api", "unknown key"),
        ("api = 3\n".to_owned() + &interface(""), "api", "expected a table, found integer 3"),
        ("control = [1]\n".to_owned() + &interface(""), "control", "found array"),
        (with_api("port = 0"), "api.port", "out of range 1..=65535"),
        (with_api("allowed_sources = []"), "api.allowed_sources", "empty list"),
        (with_api("allowed_sources = [\"10.1.2.3/8\"]"), "api.allowed_sources[0]", "did you mean \"10.0.0.0/8\""),
        (with_api("max_running = 10\nmax_tracked = 5"), "api.max_tracked", "below api.max_running"),
        (with_api("default_workdir = \"work\""), "api.default_workdir", "absolute"),
        (with_api("oom_score_adj = 1001"), "api.oom_score_adj", "-1000..=1000"),
        (with_api("nice_increment = -1"), "api.nice_increment", "0..=19"),
        (interface("[files]\nmax_write_bytes = 10"), "files.max_write_bytes", "out of range 1024..="),
        (interface("[files]\nmax_edit_files = 0"), "files.max_edit_files", "out of range 1..=1024"),
        (interface("[files]\nfsync = \"yes\""), "files.fsync", "expected true or false"),
        (interface("[files]\nmax_bytes = 1"), "files.max_bytes", "unknown key"),
        (with_api("kill_grace = \"5x\""), "api.kill_grace", "unknown unit"),
        (with_api("kill_grace = -5"), "api.kill_grace", "negative"),
        (with_api("shutdown_grace = 1.5"), "api.shutdown_grace", "found float 1.5"),
        (with_api("tree_tracking = 1"), "api.tree_tracking", "expected true or false, found integer 1"),
        (with_api("state_dir = \"state\""), "api.state_dir", "absolute"),
        (with_api("log_max_bytes = 10"), "api.log_max_bytes", "out of range"),
        (with_api("state_max_bytes = \"1G\""), "api.state_max_bytes", "expected an integer"),
        (interface("[control]\nconnect_timeout = 0"), "control.connect_timeout", "greater than zero"),
        (interface("[control]\nrequest_timeout = \"3w\""), "control.request_timeout", "unknown unit"),
        (interface("[control]\nmax_connections = 0"), "control.max_connections", "out of range"),
        (interface("[control]\nsocket = \"\""), "control.socket", "empty path"),
        (interface("[control]\nsocket_group = 5"), "control.socket_group", "expected a string"),
        (interface("") + "[peer]\npublic_key = \"x\"\n", "peer", "[[peer]]"),
        (interface("") + "[[peer]]\nallowed_ips = [\"1.2.3.4\"]\n", "peer[0].public_key", "missing"),
        (with_peer("allowed_ips = [\"100.64.0.1\"]", ""), "peer[0].allowed_ips", "missing"),
        (with_peer("[\"100.64.0.1\"]", "[]"), "peer[0].allowed_ips", "at least one"),
        (with_peer("100.64.0.1", "10.0.0.300/32"), "peer[0].allowed_ips[0]",
            "invalid CIDR \"10.0.0.300/32\": \"10.0.0.300\" is not an IP address"),
        (with_peer("100.64.0.1", "10.0.0.1/33"), "peer[0].allowed_ips[0]", "prefix length \"33\""),
        (with_peer("[\"100.64.0.1\"]", "[\"1.1.1.1\", 7]"), "peer[0].allowed_ips[1]", "found integer 7"),
        (with_peer(P1, &P1.replace('v', "-")), "peer[0].public_key", "invalid base64 character '-'"),
        (with_peer(P1, OWN_PUB), "peer[0].public_key", "our own public key"),
        (interface("") + &peer("preshared_key = \"short\""), "peer[0].preshared_key", "44 base64"),
        (interface("") + &peer("persistent_keepalive = 65536"), "peer[0].persistent_keepalive", "0..=65535"),
        (interface("") + &peer("name = \"has space\""), "peer[0].name", "1 to 64 characters"),
        (interface("") + &peer("name = \"10.0.0.1\""), "peer[0].name", "looks like an address"),
        (interface("") + &peer("name = 5"), "peer[0].name", "expected a string"),
    ]
}

#[test]
fn invalid_values_name_key_and_problem() {
    for (text, key, problem) in invalid_cases() {
        let message = error(&text, key);
        assert!(
            message.contains(problem),
            "expected {problem:?} in: {message}"
        );
    }
}

#[test]
fn peers_are_cross_checked() {
    let two = |a: &str, b: &str| interface("") + &peer(a) + &peer(b).replace(P1, P2);
    let message = error(
        &(interface("") + &peer("") + &peer("")),
        "peer[1].public_key",
    );
    assert!(message.contains("same public key as peer[0]"), "{message}");
    let message = error(&two("name = \"x\"", "name = \"x\""), "peer[1].name");
    assert!(message.contains("already used by peer[0]"), "{message}");
    let message = error(&two("", ""), "peer[1].allowed_ips[0]");
    assert!(
        message.contains("also at peer[0].allowed_ips[0]"),
        "{message}"
    );
    let same_peer = peer("").replace("[\"100.64.0.1\"]", "[\"100.64.0.1\", \"100.64.0.1/32\"]");
    let message = error(&(interface("") + &same_peer), "peer[0].allowed_ips[1]");
    assert!(message.contains("already listed"), "{message}");
    // Overlapping but not identical networks are fine: longest prefix match decides.
    let overlap = two("", "").replacen("[\"100.64.0.1\"]", "[\"100.64.0.0/24\"]", 1);
    let config = parse(&overlap).unwrap();
    assert_eq!(config.peers.len(), 2);
    // No peers at all is only a warning.
    let config = parse(&interface("")).unwrap();
    assert!(
        config.warnings[0].contains("no [[peer]]"),
        "{:?}",
        config.warnings
    );
}

#[test]
fn endpoints_parse_resolve_and_name_the_peer() {
    let with = |endpoint: &str| {
        interface("") + &peer(&format!("name = \"c1\"\nendpoint = \"{endpoint}\""))
    };
    let key = "peer[0].endpoint";
    for (endpoint, problem) in [
        ("10.0.0.1", "expected \"host:port\""),
        ("10.0.0.1:0", "not in 1..=65535"),
        ("10.0.0.1:http", "not in 1..=65535"),
        ("::1:51820", "need brackets"),
        ("[::1]51820", "[IPv6]:port"),
        ("[10.0.0.1]:51820", "not an IPv6 address"),
        ("bad host:51820", "not a valid host name"),
        ("a..b:51820", "not a valid host name"),
    ] {
        let message = error(&with(endpoint), key);
        assert!(
            message.contains(problem),
            "{endpoint}: expected {problem:?} in: {message}"
        );
    }
    // A name that does not resolve is not an error: a warning, and the peer waits for it.
    let config = parse(&with("nowhere.test:51820")).unwrap();
    assert_eq!(config.peers[0].endpoint, None);
    assert_eq!(
        config.pending_endpoints,
        vec![PendingEndpoint {
            public_key: config.peers[0].public_key,
            label: "c1".into(),
            host: "nowhere.test".into(),
            port: 51820,
        }]
    );
    assert!(
        config.warnings.iter().any(|w| w.contains(
            "cannot resolve \"nowhere.test\" for peer[0] (\"c1\"): no such host; retrying"
        )),
        "{:?}",
        config.warnings
    );
    let config = parse(&with("[fe80::1]:1")).unwrap();
    assert_eq!(
        config.peers[0].endpoint,
        Some("[fe80::1]:1".parse().unwrap())
    );
    // The real resolver, for a name /etc/hosts answers (no DNS traffic).
    let config = Config::parse(&with("localhost:51820"), Path::new(FILE)).unwrap();
    let endpoint = config.peers[0].endpoint.unwrap();
    assert!(
        endpoint.ip().is_loopback() && endpoint.port() == 51820,
        "{endpoint}"
    );
}

#[test]
fn key_files_resolve_relative_to_the_config_and_warn() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("agent.key");
    std::fs::write(&key_path, format!("{OWN}\n")).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = "[interface]\nprivate_key_file = \"agent.key\"\naddress = [\"100.64.0.10\"]\n"
        .to_owned()
        + &peer("");
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, &text).unwrap();
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let config = Config::load(&config_path).unwrap();
    assert_eq!(keys::encode_public(&config.interface.public_key), OWN_PUB);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let config = Config::load(&config_path).unwrap();
    assert!(
        config.warnings[0].contains("chmod 600"),
        "{:?}",
        config.warnings
    );

    std::fs::remove_file(&key_path).unwrap();
    let err = Config::load(&config_path).unwrap_err();
    assert!(matches!(err, ConfigError::Key { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("`interface.private_key_file`") && message.contains("agent.key"),
        "{message}"
    );

    // Inline key in a config readable by others: warning; in a 0600 config: none.
    std::fs::write(&config_path, interface("") + &peer("")).unwrap();
    let config = Config::load(&config_path).unwrap();
    assert!(
        config.warnings[0].contains("interface.private_key"),
        "{:?}",
        config.warnings
    );
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Config::load(&config_path).unwrap().warnings.is_empty());

    let err = Config::load(&dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }) && err.to_string().contains("missing.toml"));
}

#[test]
fn threads_default_to_the_cores_capped_and_take_one_to_64() {
    let config = parse(&(interface("") + &peer(""))).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(config.interface.threads, cores.min(8));
    assert_eq!(Interface::default_threads(), cores.min(8));
    for n in [1, 2, 64] {
        let config = parse(&(interface(&format!("threads = {n}")) + &peer(""))).unwrap();
        assert_eq!(config.interface.threads, n);
    }
    for bad in ["0", "65", "\"two\""] {
        error(
            &(interface(&format!("threads = {bad}")) + &peer("")),
            "interface.threads",
        );
    }
}

#[test]
fn live_peer_keys_uapi_reload_psk_file_and_log() {
    let config = parse(&(interface("") + &peer(""))).unwrap();
    let i = &config.interface;
    assert_eq!(i.name, None);
    assert_eq!(i.name_or(Interface::DEFAULT_NAME), "wgagent0");
    assert!(i.uapi && i.uapi_socket.is_none() && !i.replace_peers_on_reload);
    assert_eq!(config.log, Log::default());

    let text = interface(
        "name = \"wg-a.1\"\nuapi = false\nuapi_socket = \"run/a.sock\"\n\
         replace_peers_on_reload = true",
    ) + "[log]\nlevel = \"warn,wgagent::wg=debug\"\n";
    let config = parse(&text).unwrap();
    let i = &config.interface;
    assert_eq!(i.name.as_deref(), Some("wg-a.1"));
    assert!(!i.uapi && i.replace_peers_on_reload);
    assert_eq!(
        i.uapi_socket.as_deref(),
        Some(Path::new("/etc/wgagent/run/a.sock"))
    );
    assert_eq!(config.log.level, "warn,wgagent::wg=debug");
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.metrics.listen, None);
    let m = parse(&(interface("") + "[metrics]\nlisten = \"127.0.0.1:9586\"\n")).unwrap();
    assert_eq!(m.metrics.listen, Some("127.0.0.1:9586".parse().unwrap()));
    assert!(!m.warnings.iter().any(|w| w.contains("metrics")));
    let m = parse(&(interface("") + "[metrics]\nlisten = \"0.0.0.0:9586\"\n")).unwrap();
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("reachable from outside"))
    );
    let json = parse(&(interface("") + "[log]\nformat = \"json\"\n")).unwrap();
    assert_eq!(json.log.format, LogFormat::Json);

    for (text, key, problem) in [
        (interface("name = \"\""), "interface.name", "1 to 15"),
        (
            interface("name = \"sixteen-chars-xx\""),
            "interface.name",
            "1 to 15",
        ),
        (interface("name = \"a/b\""), "interface.name", "1 to 15"),
        (
            interface("uapi = \"yes\""),
            "interface.uapi",
            "true or false",
        ),
        (
            interface("uapi_socket = \"\""),
            "interface.uapi_socket",
            "empty",
        ),
        (
            interface("replace_peers_on_reload = 1"),
            "interface.replace_peers_on_reload",
            "true or false",
        ),
        (
            interface("") + "[log]\nlevel = \"info,[\"\n",
            "log.level",
            "not a log filter",
        ),
        (
            interface("") + "[log]\nlevl = 1\n",
            "log.levl",
            "unknown key",
        ),
        (
            interface("") + "[log]\nformat = \"xml\"\n",
            "log.format",
            "not a log format",
        ),
        (
            interface("") + "[metrics]\nlisten = \"localhost\"\n",
            "metrics.listen",
            "not an address:port",
        ),
        (
            interface("")
                + &peer(&format!(
                    "preshared_key = \"{PSK}\"\npreshared_key_file = \"p\""
                )),
            "peer[0].preshared_key",
            "not both",
        ),
        (
            interface("") + &peer("preshared_key_file = \"/nonexistent/psk\""),
            "peer[0].preshared_key_file",
            "cannot read",
        ),
    ] {
        let message = error(&text, key);
        assert!(message.contains(problem), "{problem:?} not in: {message}");
    }

    // A pre-shared key from a file (relative to the config), with the permission warning.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c1.psk"), format!("{PSK}\n")).unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        interface("") + &peer("preshared_key_file = \"c1.psk\""),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let psk_path = dir.path().join("c1.psk");
    std::fs::set_permissions(&psk_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.peers[0].preshared_key,
        Some(keys::decode_key(PSK).unwrap())
    );
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("c1.psk") && w.contains("chmod 600")),
        "{:?}",
        config.warnings
    );

    // Built in code: defaults, no peers.
    let built = Config::new(
        keys::decode_private(OWN).unwrap(),
        vec!["100.64.0.10".parse().unwrap()],
    );
    assert_eq!(keys::encode_public(&built.interface.public_key), OWN_PUB);
    assert_eq!(built.interface.name, None);
    assert_eq!((built.api.clone(), built.peers.len()), (Api::default(), 0));
}

#[test]
fn durations() {
    // The grammar itself is tested in `crate::duration`; here, that config values use it.
    let ok = [
        ("250ms", 250),
        ("30s", 30_000),
        ("90", 90_000),
        ("1.5s", 1_500),
        ("1h1m1s1ms", 3_661_001),
    ];
    for (text, ms) in ok {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_millis(ms)),
            "{text}"
        );
    }
    for text in ["", "s", "-1s", "1h30", "18446744073709551615h"] {
        assert!(parse_duration(text).is_err(), "{text:?} should fail");
    }
}

#[test]
fn example_configs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let agent = Config::load(&dir.join("agent.example.toml")).unwrap();
    assert_eq!(agent.interface.addresses.len(), 2);
    assert_eq!(agent.interface.listen_port, 51820);
    assert_eq!(agent.interface.mtu, Interface::DEFAULT_MTU);
    assert_eq!(agent.interface.tcp_buffer, Interface::DEFAULT_TCP_BUFFER);
    assert_eq!(
        agent.interface.max_connections_per_peer,
        Interface::DEFAULT_MAX_CONNECTIONS_PER_PEER
    );
    assert_eq!(agent.interface.tcp_memory, Interface::DEFAULT_TCP_MEMORY);
    assert_eq!(
        agent.interface.name.as_deref(),
        Some(Interface::DEFAULT_NAME)
    );
    assert!(agent.interface.uapi && agent.interface.uapi_socket.is_none());
    assert!(!agent.interface.replace_peers_on_reload);
    assert_eq!(agent.interface.idle_session_timeout, Some(Duration::ZERO));
    assert_eq!(agent.log, Log::default());
    // Every documented default in the example matches `Api::default()`.
    let sources = vec![
        "100.64.0.0/24".parse().unwrap(),
        "fd7a:115c:a1e0::/64".parse().unwrap(),
    ];
    assert_eq!(
        agent.api,
        Api {
            allowed_sources: Some(sources),
            isolation: crate::trust::Isolation::Peer,
            ..Api::default()
        }
    );
    let audit = agent.audit.as_ref().unwrap();
    assert_eq!(
        (audit.max_bytes, audit.keep, audit.fail_closed),
        (
            crate::trust::AuditConfig::DEFAULT_MAX_BYTES,
            crate::trust::AuditConfig::DEFAULT_KEEP,
            true
        )
    );
    assert_eq!(agent.peers.len(), 2);
    {
        use crate::trust::Permission::*;
        let a = &agent.peer_by_name("control-1").unwrap().access;
        assert!([Run, Read, Signal, Files].into_iter().all(|p| a.allows(p)));
        assert!(!a.allows(Metrics));
        let b = &agent.peer_by_name("control-2").unwrap().access;
        assert!(b.allows(Read) && !b.allows(Run) && !b.allows(Signal));
    }
    let control_1 = agent.peer_by_name("control-1").unwrap();
    assert_eq!(control_1.persistent_keepalive, Some(25));
    assert!(control_1.endpoint.is_some());
    assert_eq!(
        agent.peer_by_name("control-2").unwrap().endpoint,
        Some("[2001:db8::2]:51820".parse().unwrap())
    );

    let control = Config::load(&dir.join("control.example.toml")).unwrap();
    assert_eq!(control.control, Control::default());
    assert_eq!(
        control.interface.idle_session_timeout,
        Some(Interface::DEFAULT_CONTROL_IDLE_SESSION_TIMEOUT)
    );
    assert_eq!(control.interface.listen_port, 51820);
    assert_eq!(
        control.interface.name.as_deref(),
        Some(Interface::DEFAULT_CONTROL_NAME)
    );
    let nat = control.peer_by_name("agent-nat-1").unwrap();
    assert_eq!((nat.endpoint, nat.persistent_keepalive), (None, None));
    assert!(control.peer_by_name("agent-db").unwrap().endpoint.is_some());

    // The two examples are a matching pair: each side's peer key is the other's public key.
    assert_eq!(nat.public_key, agent.interface.public_key);
    assert_eq!(control_1.public_key, control.interface.public_key);
    assert!(
        control_1
            .allowed_ips
            .iter()
            .any(|net| net.contains(control.interface.addresses[0]))
    );
    assert!(
        nat.allowed_ips
            .iter()
            .any(|net| net.contains(agent.interface.addresses[0]))
    );
}

#[test]
fn trust_keys() {
    use crate::trust::{Isolation, Permission};
    let key = keys::encode_public(&keys::public_key(&keys::generate()));
    let text = |extra_api: &str, peer: &str, audit: &str| {
        format!(
            "[interface]\nprivate_key = \"{}\"\naddress = [\"10.0.0.1\"]\n[api]\n{extra_api}\n\
             [[peer]]\npublic_key = \"{key}\"\nallowed_ips = [\"10.0.0.2\"]\n{peer}\n{audit}",
            keys::encode_private(&keys::generate())
        )
    };
    let parse = |t: String| Config::parse(&t, Path::new("/etc/wgagent/a.toml"));
    let c = parse(text(
        "isolation = \"peer\"",
        "allow = [\"read\", \"signal\", \"read\"]\nrun_as = \"sandbox\"\nusers = [\"a\", \"b\", \"a\"]",
        "[audit]\npath = \"audit.log\"\nmax_bytes = 4096\nkeep = 0\nfail_closed = false",
    ))
    .unwrap();
    assert_eq!(c.api.isolation, Isolation::Peer);
    let a = &c.peers[0].access;
    assert!(a.allows(Permission::Read) && a.allows(Permission::Signal));
    assert!(!a.allows(Permission::Run));
    assert_eq!(a.run_as.as_deref(), Some("sandbox"));
    assert_eq!(a.users, ["a", "b"]);
    let audit = c.audit.unwrap();
    assert_eq!(
        audit.path,
        Path::new("/etc/wgagent/audit.log"),
        "relative to the file"
    );
    assert_eq!(
        (audit.max_bytes, audit.keep, audit.fail_closed),
        (4096, 0, false)
    );

    // Defaults: full access, no run-as, no isolation, no audit log.
    let c = parse(text("", "", "")).unwrap();
    assert_eq!(c.peers[0].access, crate::trust::Access::default());
    assert_eq!(c.api.isolation, Isolation::None);
    assert!(c.audit.is_none());

    let err = |t: String| parse(t).unwrap_err().to_string();
    let e = err(text("", "allow = [\"write\"]", ""));
    assert!(
        e.contains("peer[0].allow[0]") && e.contains("\"write\" is not a permission"),
        "{e}"
    );
    let e = err(text("isolation = \"tenant\"", "", ""));
    assert!(
        e.contains("api.isolation") && e.contains("\"none\" or \"peer\""),
        "{e}"
    );
    let e = err(text("", "run_as = \"a b\"", ""));
    assert!(e.contains("peer[0].run_as"), "{e}");
    let e = err(text("", "", "[audit]\nkeep = 3"));
    assert!(e.contains("audit.path"), "{e}");
    let e = err(text("", "", "[audit]\npath = \"/x\"\nmax_bytes = 10"));
    assert!(e.contains("audit.max_bytes"), "{e}");
    let e = err(text("", "", "[audit]\npath = \"/x\"\nrotate = 1"));
    assert!(e.contains("audit.rotate"), "{e}");
}
