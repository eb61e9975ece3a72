//! The control daemon drops an idle agent's WireGuard session (`[interface]
//! idle_session_timeout`) and reaches it again: the real `wgagent agent` binary dials in with a
//! persistent keepalive (the NAT shape: the daemon knows no endpoint for it), `wgagent exec`
//! runs through the daemon, the session is dropped after the timeout, the agent's keepalives
//! into it are counted and not answered, and the next `exec` handshakes to the learnt endpoint
//! and succeeds. `wg show` (root only: it needs /var/run/wireguard) still lists the peer with
//! its endpoint and last handshake; the agent logs no warning about any of it.

#[path = "common/agent_proc.rs"]
mod agent_proc;
mod common;
#[path = "common/netns.rs"]
mod netns;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_proc::{AgentProc, free_udp_port};
use common::*;
use netns::STEP;
use wgagent::config::Config;
use wgagent::control::{Daemon, DaemonOptions};
use wgagent::keys;
use wgagent::wg::PeerStats;

const WAIT: Duration = Duration::from_secs(20);

fn write_key(path: &Path, secret: &keys::StaticSecret) {
    std::fs::write(path, format!("{}\n", keys::encode_private(secret))).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// `wgagent exec --socket S dev -- sh -c 'echo ...'`, with no config file; (ok, stdout, took).
fn exec(socket: &Path, word: &str) -> (bool, String, Duration) {
    let t = Instant::now();
    let out = netns::run(
        Command::new(env!("CARGO_BIN_EXE_wgagent"))
            .args(["exec", "--socket"])
            .arg(socket)
            .args(["dev", "--", "echo", word])
            .env("WGAGENT_CONFIG", "/nonexistent/wgagent-idle-test.toml")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null()),
        Duration::from_secs(30),
    );
    let took = t.elapsed();
    if !out.ok() {
        eprintln!("exec failed: {out:?}");
    }
    (out.ok(), out.stdout, took)
}

fn dev(d: &Daemon) -> PeerStats {
    d.node().stats().wg.peer("dev").unwrap().clone()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_agent_loses_its_session_and_the_next_exec_handshakes_again() {
    let dir = tempfile::tempdir().unwrap();
    let agent = keypair();
    let control = keypair();
    write_key(&dir.path().join("agent.key"), &agent.secret);
    let control_port = free_udp_port();
    // `wg show` needs the daemon's UAPI socket in /var/run/wireguard (root).
    let skip = netns::missing_prerequisites(&["wg"]).or_else(|| {
        std::fs::create_dir_all("/var/run/wireguard")
            .err()
            .map(|e| format!("cannot create /var/run/wireguard: {e}"))
    });
    if let Some(why) = &skip {
        println!("SKIP control_idle (the wg show part only): {why}");
    }
    let wg_show = skip.is_none();
    let ifname = format!("wgi{}", std::process::id() % 10_000_000);
    let text = format!(
        "[interface]\nprivate_key = \"{}\"\naddress = [\"100.64.0.1\"]\nlisten_port = {control_port}\n\
         idle_session_timeout = \"1s\"\nname = \"{ifname}\"\nuapi = {wg_show}\n\n\
         [control]\nconnect_timeout = \"5s\"\n\n\
         [[peer]]\nname = \"dev\"\npublic_key = \"{}\"\nallowed_ips = [\"{AGENT_IP}/32\"]\n",
        keys::encode_private(&control.secret),
        keys::encode_public(&agent.public),
    );
    let cfg_path = dir.path().join("control.toml");
    std::fs::write(&cfg_path, text).unwrap();
    let cfg = Config::load(&cfg_path).unwrap();
    let socket = dir.path().join("control.sock");
    let daemon = Daemon::start(
        &cfg,
        DaemonOptions {
            socket: socket.clone(),
            socket_group: None,
            max_connections: 16,
            state_dir: None,
        },
    )
    .await
    .unwrap();

    let agent_port = free_udp_port();
    let agent_text = format!(
        "[interface]\nprivate_key_file = \"agent.key\"\naddress = [\"{AGENT_IP}\"]\n\
         listen_port = {agent_port}\nuapi = false\n\n[api]\nshutdown_grace = \"1s\"\n\
         state_dir = \"@DIR@/state\"\n\n\
         [[peer]]\nname = \"control\"\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.1/32\"]\n\
         endpoint = \"127.0.0.1:{control_port}\"\npersistent_keepalive = 1\n",
        keys::encode_public(&control.public),
    );
    let agent_proc = AgentProc::start(dir.path(), &agent_text, &[]);
    let agent_ep: SocketAddr = format!("127.0.0.1:{agent_port}").parse().unwrap();

    // The agent dials in; the daemon learns its endpoint from it.
    wait_until("the agent's handshake", || {
        dev(&daemon).endpoint == Some(agent_ep)
    })
    .await;
    let (ok, out, warm) = exec(&socket, "first");
    assert!(ok && out.contains("first"), "{out}");
    let (ok, _, warm2) = exec(&socket, "warm");
    assert!(ok);
    // Published by the next timer tick.
    wait_until("the last handshake time", || {
        dev(&daemon).last_handshake.is_some()
    })
    .await;
    let before = dev(&daemon);

    // Idle: no data for the timeout (1 s, so the grace is 1 s too) drops the session.
    wait_until("the idle session to be dropped", || {
        let s = daemon.node().stats().wg.device;
        s.sessions == 0 && s.sessions_dropped_idle >= 1
    })
    .await;
    // The agent's keepalives (every second) go into the dropped session: counted, unanswered.
    wait_until("a keepalive into the dropped session", || {
        dev(&daemon).drop_no_session >= 1
    })
    .await;
    let idle = dev(&daemon);
    assert_eq!(idle.endpoint, Some(agent_ep), "endpoint kept");
    assert_eq!(
        idle.last_handshake, before.last_handshake,
        "last handshake kept"
    );
    assert!(idle.rx_bytes >= before.rx_bytes && idle.handshakes == before.handshakes);

    // The next exec handshakes to the kept endpoint and succeeds.
    let (ok, out, cold) = exec(&socket, "after-idle");
    assert!(ok && out.contains("after-idle"), "{out}");
    let after = dev(&daemon);
    assert!(after.handshakes > idle.handshakes, "{after:?}");
    assert_eq!(after.endpoint, Some(agent_ep));
    // Not a timing assertion: printed for the reader (BENCHMARKS.md §5 measures it).
    println!(
        "exec through the daemon: warm {warm:?} / {warm2:?}, after the session was dropped {cold:?}"
    );

    if wg_show {
        let out = netns::run(
            Command::new("wg")
                .args(["show", &ifname, "dump"])
                .stdin(Stdio::null()),
            STEP,
        );
        assert!(out.ok(), "{out:?}");
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&keys::encode_public(&agent.public)))
            .unwrap_or_else(|| panic!("peer missing from wg show: {}", out.stdout));
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f[2], agent_ep.to_string(), "{line}");
        assert_ne!(f[4], "0", "latest handshake: {line}");
    }

    // The agent side saw nothing worth a warning: it answered the daemon's handshake.
    let log = agent_proc.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") || l.contains("ERROR")),
        "agent log:\n{log}"
    );
    daemon.shutdown(Duration::from_secs(5)).await;
}
