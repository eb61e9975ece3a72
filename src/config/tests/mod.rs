//! The config module's tests: typed values and defaults (here), every error naming its file and
//! key path (`errors`), key files, permissions and the example files (`files`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use ip_network::IpNetwork;

use super::load::parse_inner;
use super::*;
use crate::keys;

mod errors;
mod files;

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

/// Every integer key takes both ends of its documented range (so each range fits its field's
/// type: a range wider than the type would fail here with "does not fit").
#[test]
fn integer_ranges_take_both_ends() {
    let max = i64::MAX;
    let cases: Vec<(&str, &str, i64, i64)> = vec![
        ("interface", "listen_port", 0, 65535),
        ("interface", "mtu", 1280, 9000),
        ("interface", "tcp_buffer", 64 << 10, 64 << 20),
        ("interface", "max_connections_per_peer", 1, 1024),
        ("interface", "tcp_memory", 1 << 20, 64 << 30),
        ("interface", "max_connections", 16, 65_536),
        ("interface", "handshake_rate_limit", 10, 1_000_000),
        ("interface", "threads", 1, 64),
        ("api", "port", 1, 65535),
        ("api", "max_running", 1, 65536),
        ("api", "nice_increment", 0, 19),
        ("api", "oom_score_adj", -1000, 1000),
        ("api", "log_max_bytes", 4096, max),
        ("api", "state_max_bytes", 4096, max),
        ("api", "body_min_rate", 0, 1 << 40),
        ("control", "api_port", 1, 65535),
        ("control", "max_connections", 1, 512),
        ("files", "max_write_bytes", 1024, 4 << 30),
        ("files", "max_edit_files", 1, 1024),
        ("audit", "max_bytes", 4096, max),
        ("audit", "keep", 0, 1000),
    ];
    for (section, key, min, max) in cases {
        for n in [min, max] {
            let mut line = format!("{key} = {n}");
            if key == "max_running" {
                line += "\nmax_tracked = 65536"; // at least max_running
            }
            let text = match section {
                "interface" => interface(&line),
                "audit" => interface(&format!("[audit]\npath = \"/a\"\n{line}")),
                _ => interface(&format!("[{section}]\n{line}")),
            };
            if let Err(e) = parse(&text) {
                panic!("{section}.{key} = {n}: {e}");
            }
        }
        let text = match section {
            "interface" => interface(&format!("{key} = {}", max as i128 + 1)),
            _ => continue,
        };
        error(&text, &format!("interface.{key}"));
    }
    let limits = format!(
        "[api]\ndefault_limits = {{ processes = 1 }}\nmax_limits = {{ memory_bytes = {max} }}"
    );
    parse(&interface(&limits)).unwrap();
}
