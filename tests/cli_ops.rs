//! The operator-facing CLI verbs, through the real binary: `completions` (scripts the shells
//! accept; what fish offers in a positional slot), `man` (one page per verb), `genkey`'s
//! warning about readable key files, and `import` of a real wg-quick file.

mod common;

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::process::{Command, Output, Stdio};

fn wgagent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgagent"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn completions_are_scripts_the_shells_accept() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, checker) in [
        ("bash", Some(["bash", "-n"])),
        ("zsh", Some(["zsh", "-n"])),
        ("fish", Some(["fish", "--no-execute"])),
        ("elvish", None),
        ("powershell", None),
    ] {
        let out = wgagent(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["exec", "import", "timeout", "completions"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
        // The signal names come from the Signal type's own value parser (fish's from the lines
        // wgagent adds: clap_complete's fish generator completes no positional values).
        if matches!(shell, "bash" | "zsh" | "fish") {
            for name in ["kill", "terminate", "interrupt", "hangup"] {
                assert!(
                    script.contains(name),
                    "{shell} completion lacks the signal name {name}"
                );
            }
        }
        let Some([program, flag]) = checker else {
            continue;
        };
        if !have(program) {
            println!("{shell}: {program} is not installed; syntax not checked");
            continue;
        }
        let path = dir.path().join(format!("wgagent.{shell}"));
        std::fs::write(&path, &script).unwrap();
        let check = Command::new(program).arg(flag).arg(&path).output().unwrap();
        assert!(
            check.status.success(),
            "{program} {flag} refuses the {shell} completion: {}",
            text(&check.stderr)
        );
    }
    let out = wgagent(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

/// What fish offers for a command line (`complete -C`) with wgagent's script loaded: the
/// candidates' words, without their descriptions. `None` (with the reason printed) without fish.
fn fish_offers(dir: &std::path::Path, line: &str) -> Option<Vec<String>> {
    if !have("fish") {
        println!("fish is not installed; what it completes is not checked");
        return None;
    }
    let script = dir.join("wgagent.fish");
    if !script.exists() {
        let out = wgagent(&["completions", "fish"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::fs::write(&script, &out.stdout).unwrap();
    }
    let out = Command::new("fish")
        .args(["--no-config", "-c", "source $argv[1]; complete -C $argv[2]"])
        .arg(&script)
        .arg(line)
        // The slots without values offer file names: an empty directory keeps those out.
        .current_dir(dir.join("empty"))
        .output()
        .unwrap();
    assert!(out.status.success(), "fish: {}", text(&out.stderr));
    Some(
        text(&out.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
            .collect(),
    )
}

#[test]
fn fish_completes_signal_names_in_the_signal_slot_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let signals = ["hangup", "interrupt", "kill", "terminate"];
    // The third positional of `signal`, wherever the options and their values are.
    for line in [
        "wgagent signal dev 12 ",
        "wgagent signal --config /etc/x.toml dev 12 ",
        "wgagent signal dev -c x.toml --json 12 ",
    ] {
        let Some(offered) = fish_offers(dir.path(), line) else {
            return;
        };
        assert_eq!(offered, signals, "{line:?}");
    }
    let offered = fish_offers(dir.path(), "wgagent signal dev 12 te").unwrap();
    assert_eq!(offered, ["terminate"]);
    // Not in the agent or id slots, nor after the signal, nor under another verb.
    for line in [
        "wgagent signal dev ",
        "wgagent signal --config dev ",
        "wgagent signal dev 12 kill ",
        "wgagent rm dev 12 ",
        "wgagent cat dev ",
    ] {
        let offered = fish_offers(dir.path(), line).unwrap();
        assert!(
            !offered.iter().any(|w| signals.contains(&w.as_str())),
            "{line:?}: {offered:?}"
        );
    }
    // The other positional with values: the shell of `completions`.
    let offered = fish_offers(dir.path(), "wgagent completions ").unwrap();
    assert_eq!(offered, ["bash", "elvish", "fish", "powershell", "zsh"]);
}

#[test]
fn man_pages_for_the_command_and_every_verb() {
    let out = wgagent(&["man"]);
    assert!(out.status.success());
    let page = text(&out.stdout);
    assert!(page.contains(".TH wgagent 1"), "{page}");
    assert!(page.contains("genkey") && page.contains("import"));

    let dir = tempfile::tempdir().unwrap();
    let out = wgagent(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    for verb in [
        "agent",
        "exec",
        "control",
        "import",
        "completions",
        "man",
        "genkey",
    ] {
        let path = dir.path().join(format!("wgagent-{verb}.1"));
        assert!(listed.contains(&path.display().to_string()), "{listed:?}");
        let page = std::fs::read_to_string(&path).unwrap();
        assert!(page.contains(&format!(".TH wgagent-{verb} 1")), "{page}");
        assert!(
            page.contains(&format!("wgagent {verb}")),
            "synopsis of {verb}: {page}"
        );
    }
    let exec = std::fs::read_to_string(dir.path().join("wgagent-exec.1")).unwrap();
    assert!(exec.contains("\\-\\-timeout"), "{exec}");
    if have("man") {
        let out = Command::new("man")
            .args(["-l", dir.path().join("wgagent-exec.1").to_str().unwrap()])
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("wgagent exec"));
    }
}

#[test]
fn genkey_warns_like_wg_when_others_can_read_the_key() {
    const WARNING: &str = "Warning: writing to world accessible file.\n\
                           Consider setting the umask to 077 and trying again.\n";
    let dir = tempfile::tempdir().unwrap();
    let genkey_into = |mode: u32| {
        let path = dir.path().join(format!("key-{mode:o}"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .unwrap();
        // The mode given to open is reduced by the umask: set it exactly.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wgagent"))
            .arg("genkey")
            .stdout(file)
            .output()
            .unwrap();
        assert!(out.status.success());
        let key = std::fs::read_to_string(&path).unwrap();
        assert_eq!(key.trim().len(), 44, "{key:?}");
        text(&out.stderr)
    };
    assert_eq!(genkey_into(0o644), WARNING);
    assert_eq!(genkey_into(0o604), WARNING);
    // As wg: only "world accessible" counts; group-readable and private files get no warning.
    assert_eq!(genkey_into(0o640), "");
    assert_eq!(genkey_into(0o600), "");
    // A pipe is not a file.
    let out = wgagent(&["genkey"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn import_converts_a_wg_quick_file_that_wg_quick_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let key = text(&wgagent(&["genkey"]).stdout).trim().to_owned();
    let peer_key = text(&wgagent(&["genkey"]).stdout).trim().to_owned();
    let peer_pub = pubkey(&peer_key);
    let conf = dir.path().join("wg0.conf");
    std::fs::write(
        &conf,
        format!(
            "[Interface]\nPrivateKey = {key}\nAddress = 10.77.0.2/24\nListenPort = 0\nMTU = 1420\n\
             DNS = 10.77.0.1\nPostUp = echo up\n\n# the control replica\n[Peer]\n\
             PublicKey = {peer_pub}\nAllowedIPs = 10.77.0.1/32\nEndpoint = 127.0.0.1:51999\n\
             PersistentKeepalive = 25\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    if have("wg-quick") && have("bash") {
        // wg-quick's own parser accepts the file (strip drops its own keys, keeps the rest).
        let out = Command::new("wg-quick")
            .args(["strip", conf.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "wg-quick strip: {}",
            text(&out.stderr)
        );
    }
    let toml = dir.path().join("agent.toml");
    let out = wgagent(&[
        "import",
        conf.to_str().unwrap(),
        "--output",
        toml.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let findings = text(&out.stderr);
    assert!(
        findings.contains("DNS has no equivalent") && findings.contains("PostUp"),
        "{findings}"
    );
    let mode = std::fs::metadata(&toml).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the imported file holds the private key");
    let cfg = wgagent::config::Config::load(&toml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.interface.addresses,
        ["10.77.0.2".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(cfg.interface.mtu, 1420);
    assert_eq!(
        wgagent::keys::encode_private(&cfg.interface.private_key),
        key
    );
    let peer = &cfg.peers[0];
    assert_eq!(wgagent::keys::encode_public(&peer.public_key), peer_pub);
    assert_eq!(peer.persistent_keepalive, Some(25));
    assert_eq!(peer.endpoint, Some("127.0.0.1:51999".parse().unwrap()));

    // An existing output file is never overwritten.
    let out = wgagent(&[
        "import",
        conf.to_str().unwrap(),
        "--output",
        toml.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("must not exist yet"),
        "{}",
        text(&out.stderr)
    );
    // A broken file names its line.
    std::fs::write(&conf, "[Interface]\nPrivateKey = x\nAdress = 10.0.0.1\n").unwrap();
    let out = wgagent(&["import", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("line 3: unknown [Interface] key \"Adress\""));
}

fn pubkey(private: &str) -> String {
    let out = common::pipe(
        env!("CARGO_BIN_EXE_wgagent"),
        &["pubkey"],
        &format!("{private}\n"),
    );
    text(&out.stdout).trim().to_owned()
}

/// `check` loads a file as the agent would, without starting anything: a good file prints the
/// key, addresses, peers and listeners (text and JSON); a bad one exits 1 naming the key.
#[test]
fn check_validates_a_config_and_says_what_would_listen() {
    let dir = tempfile::tempdir().unwrap();
    let private = text(&wgagent(&["genkey"]).stdout).trim().to_owned();
    let public = pubkey(&private);
    let peer_private = text(&wgagent(&["genkey"]).stdout).trim().to_owned();
    let peer_public = pubkey(&peer_private);
    let good = dir.path().join("agent.toml");
    std::fs::write(
        &good,
        format!(
            "[interface]\nprivate_key = \"{private}\"\naddress = [\"100.64.0.10\"]\nlisten_port = 51820\n\
             uapi = false\n\n[api]\nport = 4\n\n[[peer]]\nname = \"c1\"\npublic_key = \"{peer_public}\"\n\
             allowed_ips = [\"100.64.0.1/32\"]\nendpoint = \"127.0.0.1:51821\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = wgagent(&["check", "--config", good.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains(&public), "{stdout}");
    assert!(stdout.contains("100.64.0.10:4"), "{stdout}");
    assert!(
        stdout.contains(&peer_public) && stdout.contains("c1"),
        "{stdout}"
    );

    let out = wgagent(&["check", "--json", "--config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["public_key"], public.as_str());
    assert_eq!(v["addresses"][0], "100.64.0.10");
    assert_eq!(v["listen"]["wireguard_udp_port"], 51820);
    assert_eq!(v["listen"]["uapi_socket_agent"], serde_json::Value::Null);
    assert_eq!(v["listen"]["host_tcp_api"], false);
    assert_eq!(v["peers"][0]["endpoint"], "127.0.0.1:51821");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[interface]\nprivate_key = \"{private}\"\naddress = [\"100.64.0.10\"]\nmtu = 100\n"
        ),
    )
    .unwrap();
    let out = wgagent(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("mtu"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// The documented exit codes of command lines wgagent does not run: help and version 0, usage
/// errors 2 (clap's, like grep's), and 255 under `exec`, where 2 could be the command's own code.
#[test]
fn help_exits_0_usage_errors_2_and_exec_usage_errors_255() {
    for (args, code) in [
        (&["--help"][..], 0),
        (&["--version"], 0),
        (&["help", "exec"], 0),
        (&["exec", "--help"], 0),
        (&["signal", "-h"], 0),
        (&[], 2),
        (&["frobnicate"], 2),
        (&["ps"], 2),
        (&["ps", "dev", "--bogus"], 2),
        (&["signal", "dev", "ID", "stop"], 2),
        (&["check"], 2),
        (&["exec", "dev"], 255),
        (&["exec", "--bogus", "dev", "--", "true"], 255),
        (&["exec", "dev", "--timeout", "soon", "--", "true"], 255),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_wgagent"))
            .args(args)
            .env_remove("WGAGENT_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "wgagent {args:?}: {}",
            text(&out.stderr)
        );
        if code == 0 {
            assert!(!out.stdout.is_empty() && out.stderr.is_empty(), "{args:?}");
        } else {
            let err = text(&out.stderr);
            assert!(out.stdout.is_empty(), "{args:?}");
            assert!(
                err.contains("Usage:") || err.contains("--help"),
                "{args:?}: {err}"
            );
        }
    }
    let out = wgagent(&["signal", "dev", "ID", "stop"]);
    assert!(text(&out.stderr).contains("unknown signal \"stop\""));
}

/// `--json` of the local verbs: `genkey`, `pubkey` and `import` print one object each, parsed
/// here and checked against the text verbs.
#[test]
fn genkey_pubkey_and_import_speak_json() {
    use std::io::Write;
    let out = wgagent(&["genkey", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let private = v["private_key"].as_str().unwrap().to_owned();
    let public = v["public_key"].as_str().unwrap().to_owned();
    assert_eq!(pubkey(&private), public, "the pair matches wgagent pubkey");

    let mut child = Command::new(env!("CARGO_BIN_EXE_wgagent"))
        .args(["pubkey", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{private}\n").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({ "public_key": public }));

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("wg0.conf");
    std::fs::write(
        &conf,
        format!(
            "[Interface]\nPrivateKey = {private}\nAddress = 10.77.0.2/24\nDNS = 10.77.0.1\n\n\
             [Peer]\nPublicKey = {public}\nAllowedIPs = 10.77.0.1/32\n"
        ),
    )
    .unwrap();
    let out = wgagent(&["import", "--json", conf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "findings go into the object");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["toml"].as_str().unwrap().contains("10.77.0.2"), "{v}");
    assert!(v["findings"][0].as_str().unwrap().contains("DNS"), "{v}");
    assert!(v.get("output").is_none());

    let toml = dir.path().join("agent.toml");
    let (c, t) = (conf.to_str().unwrap(), toml.to_str().unwrap());
    let out = wgagent(&["import", "--json", c, "-o", t]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"], t);
    assert!(v.get("toml").is_none(), "the key is in the file only");
    assert!(
        std::fs::read_to_string(&toml)
            .unwrap()
            .contains("10.77.0.2")
    );
}
