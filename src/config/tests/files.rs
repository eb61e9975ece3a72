//! Key files and their permissions, `--private-key-file`, and the example configs.

use super::*;

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
