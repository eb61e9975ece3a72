//! Interop, live (root only): a `wireguard-go` peer that the agent does not know at start is
//! added through `wg set` on the running agent's UAPI socket and then reaches the API with
//! `curl` through its TUN interface, without restarting the agent.
//!
//! ```text
//!   B: wireguard-go, 100.64.0.1  --10.214.1.0/30--  A: wgagent agent 100.64.0.10 (no peers)
//! ```
//! Prints `SKIP interop_live: <reason>` and passes when not root or a tool is missing.

mod common;
#[path = "common/lab.rs"]
mod lab;
#[path = "common/netns.rs"]
mod netns;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pipe_ok;
use netns::{Lab, STEP, wait_for};

const AGENT_PORT: &str = "51820";
const PEER_PORT: &str = "51821";

#[test]
fn a_wireguard_go_peer_added_with_wg_set_reaches_the_api() {
    let t0 = Instant::now();
    let why_not = lab::tunnel_prerequisites(&["ip", "wg", "wireguard-go", "curl"]);
    let Some((mut lab, a)) = lab::open("interop_live", why_not, "wgl", "a") else {
        return;
    };
    let b = lab.namespace("b").expect("namespace");
    lab.veth(&a, "va", "10.214.1.1/30", &b, "vb", "10.214.1.2/30");

    let dir = lab.dir.path().to_owned();
    let wgagent = env!("CARGO_BIN_EXE_wgagent");
    let agent_key = run_ok(Command::new(wgagent).arg("genkey"));
    let agent_pub = pipe_ok(wgagent, &["pubkey"], &agent_key);
    let peer_key = run_ok(Command::new("wg").arg("genkey"));
    let peer_pub = pipe_ok("wg", &["pubkey"], &peer_key);
    let peer_key_file = dir.join("peer.key");
    std::fs::write(&peer_key_file, &peer_key).unwrap();

    // The agent starts with no peers at all; its UAPI socket is named after this process.
    let agent_if = format!("{}a", lab.tag);
    let config = format!(
        "[interface]\nprivate_key = \"{}\"\naddress = [\"100.64.0.10\"]\nlisten_port = {AGENT_PORT}\n\
         name = \"{agent_if}\"\n\n[api]\nshutdown_grace = \"1s\"\nstate_dir = \"{}\"\n",
        agent_key.trim(),
        dir.join("state").display()
    );
    let config_path = dir.join("agent.toml");
    std::fs::write(&config_path, config).unwrap();
    std::fs::set_permissions(
        &config_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut cmd = Lab::command(
        &a,
        &[wgagent, "agent", "--config", config_path.to_str().unwrap()],
    );
    cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
    lab.spawn("agent", cmd);
    let up = wait_for(STEP, || {
        lab.log("agent").contains("agent up") || lab.exited("agent").is_some()
    });
    assert!(up && lab.exited("agent").is_none(), "agent did not start");
    assert!(lab.log("agent").contains("UAPI socket ready"));

    // wireguard-go in B knows the agent and dials it.
    let b_if = format!("{}b", lab.tag);
    let endpoint = format!("10.214.1.1:{AGENT_PORT}");
    let peer = lab::Peer {
        ns: &b,
        ifname: &b_if,
        key_file: peer_key_file.to_str().unwrap(),
        listen_port: Some(PEER_PORT),
        agent_pub: agent_pub.trim(),
        endpoint: Some(endpoint.as_str()),
        address: "100.64.0.1/24",
    };
    lab::wireguard_go_peer(&mut lab, &peer);

    // Unknown to the agent: no answer.
    let api = "http://100.64.0.10:4/api/v0/health";
    let out = lab.exec(
        &b,
        &["curl", "-sS", "--max-time", "3", api],
        Duration::from_secs(10),
    );
    assert!(
        !out.ok(),
        "a peer the agent does not know got an answer: {out:?}"
    );

    // `wg set` on the running agent (its socket is in the host's /var/run/wireguard).
    let out = netns::run(
        Command::new("wg")
            .args([
                "set",
                &agent_if,
                "peer",
                peer_pub.trim(),
                "allowed-ips",
                "100.64.0.1/32",
            ])
            .stdin(Stdio::null()),
        STEP,
    );
    assert!(out.ok(), "wg set on the agent: {out:?}");

    // Now curl gets through (the first attempt may wait out wireguard-go's handshake retry).
    let mut answer = None;
    for _ in 0..6 {
        let out = lab.exec(
            &b,
            &["curl", "-sS", "--max-time", "5", api],
            Duration::from_secs(20),
        );
        if out.ok() {
            answer = Some(out.stdout);
            break;
        }
    }
    let answer = answer.expect("no answer within 30 s after wg set");
    assert!(answer.contains("\"status\":\"ok\""), "{answer}");
    assert!(lab.exited("agent").is_none(), "the agent restarted or died");

    // The agent's `wg show dump` has the peer with the endpoint it learned and a handshake
    // (the time is published at the next 250 ms timer tick).
    let peer_line = || {
        let dump = netns::run(
            Command::new("wg")
                .args(["show", &agent_if, "dump"])
                .stdin(Stdio::null()),
            STEP,
        );
        assert!(dump.ok(), "{dump:?}");
        dump.stdout
            .lines()
            .find(|l| l.starts_with(peer_pub.trim()))
            .unwrap_or_else(|| panic!("peer missing: {}", dump.stdout))
            .to_owned()
    };
    let handshaken = |line: &str| line.split('\t').nth(4) != Some("0");
    assert!(wait_for(
        Duration::from_secs(3),
        || handshaken(&peer_line())
    ));
    let line = peer_line();
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields[2], format!("10.214.1.2:{PEER_PORT}"), "{line}");
    assert_eq!(fields[3], "100.64.0.1/32");
    assert!(fields[5].parse::<u64>().unwrap() > 0, "{line}");
    println!("interop_live: done in {:?}", t0.elapsed());

    let status = lab.stop("agent", Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "agent exit: {status:?}"
    );
}

fn run_ok(cmd: &mut Command) -> String {
    let out = netns::run(cmd.stdin(Stdio::null()), STEP);
    assert!(out.ok(), "{cmd:?}: {out:?}");
    out.stdout
}
