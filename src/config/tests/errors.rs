//! Every error names the file, the key path and the problem.

use super::*;

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

/// Errors found while reading a value name the value's full path, however deep: from
/// `serde_path_to_error` for type, range and syntax errors, by hand for the cross-checks.
#[test]
fn errors_name_the_path_of_deep_values() {
    let third_key = keys::encode_public(&keys::public_key(&keys::generate()));
    let peers = |third: &str| {
        interface("")
            + &peer("")
            + &peer("").replace(P1, P2).replace("100.64.0.1", "100.64.0.2")
            + &format!(
                "[[peer]]\npublic_key = \"{third_key}\"\nallowed_ips = [\"100.64.0.3\"]\n{third}\n"
            )
    };
    let bad_key = peers("").replace(&third_key, &format!("x{third_key}"));
    let cases: Vec<(String, &str, &str)> = vec![
        // Wrong type deep in the third peer.
        (
            peers("").replace("[\"100.64.0.3\"]", "[\"100.64.0.3\", 7]"),
            "peer[2].allowed_ips[1]",
            "expected a string, found integer 7",
        ),
        (
            peers("persistent_keepalive = \"25\""),
            "peer[2].persistent_keepalive",
            "expected an integer, found string \"25\"",
        ),
        (
            peers("allow = [\"read\", 3.5]"),
            "peer[2].allow[1]",
            "expected a string, found float 3.5",
        ),
        (
            peers("users = \"alice\""),
            "peer[2].users",
            "expected a list, found string \"alice\"",
        ),
        (
            peers("allowed_ips = [\"10.1.2.3/8\"]").replace("allowed_ips = [\"100.64.0.3\"]\n", ""),
            "peer[2].allowed_ips[0]",
            "did you mean \"10.0.0.0/8\"",
        ),
        // A bad key deep in the list (a typed key error, with its path).
        (
            bad_key.clone(),
            "peer[2].public_key",
            "44 base64 characters",
        ),
        // Bad durations.
        (
            interface("[api]\nkill_grace = \"5 parsecs\""),
            "api.kill_grace",
            "invalid duration \"5 parsecs\"",
        ),
        (
            interface("[control]\nconnect_timeout = true"),
            "control.connect_timeout",
            "expected seconds (integer) or a string like \"30s\", found boolean true",
        ),
        // A limit's value, inside an inline table.
        (
            interface("[api]\ndefault_limits = { open_files = 0 }"),
            "api.default_limits.open_files",
            "0 is out of range 1..=",
        ),
        // Date-times are not strings or tables.
        (
            interface("mtu = 1979-05-27"),
            "interface.mtu",
            "found datetime",
        ),
        (
            interface("name = 07:32:00"),
            "interface.name",
            "expected a string, found datetime",
        ),
        (
            "api = 1979-05-27T07:32:00Z\n".to_owned() + &interface(""),
            "api",
            "expected a table, found datetime",
        ),
        (
            "peer = 3\n".to_owned() + &interface(""),
            "peer",
            "expected [[peer]] blocks, found integer 3",
        ),
        // A date-time where a table goes arrives as a one-key table: still named a date-time,
        // with what the key takes (not "use double brackets", not a bare "a table").
        (
            "peer = 1979-05-27T07:32:00Z\n".to_owned() + &interface(""),
            "peer",
            "expected [[peer]] blocks, found datetime",
        ),
        (
            interface("[api]\ndefault_limits = 1979-05-27"),
            "api.default_limits",
            "expected a table like { memory_bytes = 1073741824 }, found datetime",
        ),
    ];
    for (text, key, problem) in cases {
        let message = error(&text, key);
        eprintln!("{message}");
        assert!(message.contains(problem), "{problem:?} not in: {message}");
    }
    // The typed key error survives (its source is the `KeyError`).
    assert!(matches!(parse(&bad_key), Err(ConfigError::Key { .. })));
}

/// Unknown keys, however deep, are refused with their full path and the keys allowed there.
#[test]
fn unknown_keys_deep_name_the_path_and_the_choices() {
    let cases = [
        (
            interface("") + &peer("") + &peer("endpont = \"a:1\"").replace(P1, P2),
            "peer[1].endpont",
            "`endpoint`",
        ),
        (
            interface("[api]\nmax_limits = { memory = 1 }"),
            "api.max_limits.memory",
            "`memory_bytes`",
        ),
        (
            interface("[audit]\npath = \"/x\"\nsize = 1"),
            "audit.size",
            "`max_bytes`",
        ),
    ];
    for (text, key, expected) in cases {
        let err = parse(&text).unwrap_err();
        eprintln!("{err}");
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
        let message = error(&text, key);
        assert!(message.contains(expected), "{expected} not in: {message}");
    }
}

/// TOML integers are 64-bit signed. The parser hands larger literals over instead of refusing
/// them, so without a check a `u64` key (the durations) took `18446744073709551615` that the
/// `toml::Value` parser before the typed rewrite refused as invalid TOML.
#[test]
fn integers_beyond_64_bits_are_refused_with_their_key() {
    for n in [
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
    ] {
        for (text, key) in [
            (
                interface(&format!("[api]\nkill_grace = {n}")),
                "api.kill_grace",
            ),
            (
                interface(&format!("[control]\nconnect_timeout = {n}")),
                "control.connect_timeout",
            ),
            (
                interface(&format!("idle_session_timeout = {n}")),
                "interface.idle_session_timeout",
            ),
            (
                interface(&format!("[api]\nlog_max_bytes = {n}")),
                "api.log_max_bytes",
            ),
            (
                interface(&format!("[api]\nmax_limits = {{ memory_bytes = {n} }}")),
                "api.max_limits.memory_bytes",
            ),
            (
                interface("") + &peer(&format!("name = {n}")),
                "peer[0].name",
            ),
        ] {
            let message = error(&text, key);
            assert!(
                message.contains(&format!("{n} is not a TOML integer")),
                "{message}"
            );
        }
    }
    // The ends of the 64-bit range are still integers (and then checked against the key's range).
    // ... but no configured wait may exceed a year (it is added to a clock reading, which would
    // panic on overflow).
    let message = error(
        &interface("[api]\nkill_grace = 9223372036854775807"),
        "api.kill_grace",
    );
    assert!(message.contains("over the limit of 365d"), "{message}");
    let message = error(
        &interface("[api]\nkill_grace = -9223372036854775808"),
        "api.kill_grace",
    );
    assert!(message.contains("is negative"), "{message}");
}

#[test]
fn durations_are_capped_at_a_year() {
    for (value, ok) in [
        ("31536000", true),
        ("\"365d\"", true),
        ("31536001", false),
        ("\"366d\"", false),
        ("\"9000000000h\"", false),
    ] {
        for (line, key) in [
            (format!("[api]\nkill_grace = {value}"), "api.kill_grace"),
            (
                format!("idle_session_timeout = {value}"),
                "interface.idle_session_timeout",
            ),
            (
                format!("[control]\nconnect_timeout = {value}"),
                "control.connect_timeout",
            ),
        ] {
            let text = interface(&line);
            if ok {
                parse(&text).unwrap_or_else(|e| panic!("{line}: {e}"));
            } else {
                let message = error(&text, key);
                assert!(
                    message.contains("over the limit of 365d"),
                    "{line}: {message}"
                );
            }
        }
    }
}
