//! Interop with the reference implementation (root only): the real `wgagent agent` binary in one
//! network namespace, `wireguard-go` + `wg` peers in others, real `curl` through their TUN
//! interfaces.
//!
//! Topology (all inside namespaces this test creates; the host is never touched):
//!
//! ```text
//!   B: wireguard-go, control key, 100.64.0.1   --10.213.1.0/30--+
//!   C: wireguard-go, control key 2, 100.64.0.2 --10.213.2.0/30--+-- A: wgagent 100.64.0.10
//!   D: wireguard-go, key unknown, 100.64.0.1   --10.213.3.0/30--+
//! ```
//!
//! B initiates the handshake (the agent knows no endpoint for it); the agent initiates to C
//! (endpoint + persistent keepalive, the NAT'd-agent deployment; C knows no endpoint for the
//! agent). D claims B's tunnel address with a key the agent does not know and must get nothing
//! back. Prints `SKIP interop: <reason>` and passes when not root or a tool is missing.

#[path = "common/lab.rs"]
mod lab;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/threads.rs"]
mod threads;

use std::time::{Duration, Instant};

use lab::{API, curl, genkey, http, pubkey};
use netns::{Lab, Out, STEP, wait_for};
use serde_json::Value;
use threads::threads_line;

const AGENT_PORT: &str = "51820";
const PEER_PORT: &str = "51821";

#[test]
fn wireguard_go_peers_drive_the_agent_and_strangers_get_nothing() {
    let t0 = Instant::now();
    let why_not = lab::tunnel_prerequisites(&["ip", "wg", "wireguard-go", "curl"]);
    let Some((mut lab, a)) = lab::open("interop", why_not, "wgi", "a") else {
        return;
    };
    let [b, c, d] = ["b", "c", "d"].map(|s| lab.namespace(s).expect("namespace"));
    for (k, ns) in [(1, &b), (2, &c), (3, &d)] {
        lab.veth(
            &a,
            &format!("va{k}"),
            &format!("10.213.{k}.1/30"),
            ns,
            "vb",
            &format!("10.213.{k}.2/30"),
        );
    }

    // Keys: the agent's from `wgagent genkey`, the peers' from `wg genkey`; both tools must
    // agree on the agent's public key.
    let dir = lab.dir.path().to_owned();
    let wgagent = env!("CARGO_BIN_EXE_wgagent");
    genkey(wgagent, &dir.join("agent.key"));
    let agent_pub = pubkey(wgagent, &dir.join("agent.key"));
    assert_eq!(pubkey("wg", &dir.join("agent.key")), agent_pub);
    let peer_keys = |name: &str| {
        let path = dir.join(format!("{name}.key"));
        genkey("wg", &path);
        let public = pubkey("wg", &path);
        (path.to_str().unwrap().to_owned(), public)
    };
    let (b_key, b_pub) = peer_keys("control1");
    let (c_key, c_pub) = peer_keys("control2");
    let (d_key, d_pub) = peer_keys("stranger");

    // Peers first, so the agent's first handshake to C finds wireguard-go listening.
    let [b_if, c_if, d_if] = ["b", "c", "d"].map(|s| format!("{}{s}", lab.tag));
    for (ns, ifname, key, addr, endpoint) in [
        (&b, &b_if, &b_key, "100.64.0.1/24", Some("10.213.1.1")),
        (&c, &c_if, &c_key, "100.64.0.2/24", None),
        (&d, &d_if, &d_key, "100.64.0.1/24", Some("10.213.3.1")),
    ] {
        let endpoint = endpoint.map(|ip| format!("{ip}:{AGENT_PORT}"));
        let peer = lab::Peer {
            ns,
            ifname,
            key_file: key,
            listen_port: Some(PEER_PORT),
            agent_pub: &agent_pub,
            endpoint: endpoint.as_deref(),
            address: addr,
        };
        lab::wireguard_go_peer(&mut lab, &peer);
    }

    let state_dir = dir.join("state").display().to_string();
    let threads = threads_line();
    let config = format!(
        r#"[interface]
private_key_file = "agent.key"
address = ["100.64.0.10"]
listen_port = {AGENT_PORT}
# Tests run many agents at once: none takes the default `wgagent0` socket.
uapi = false
{threads}
[api]
shutdown_grace = "1s"
state_dir = "{state_dir}"

[[peer]]
name = "control-1"
public_key = "{b_pub}"
allowed_ips = ["100.64.0.1/32"]

[[peer]]
name = "control-2"
public_key = "{c_pub}"
allowed_ips = ["100.64.0.2/32"]
endpoint = "10.213.2.2:{PEER_PORT}"
persistent_keepalive = 25
"#
    );
    let config_path = dir.join("agent.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut cmd = Lab::command(
        &a,
        &[wgagent, "agent", "--config", config_path.to_str().unwrap()],
    );
    cmd.env("RUST_LOG", "info,wgagent=debug")
        .env("NO_COLOR", "1");
    let agent_pid = lab.spawn("agent", cmd);
    let up = wait_for(STEP, || {
        lab.log("agent").contains("agent up") || lab.exited("agent").is_some()
    });
    assert!(up && lab.exited("agent").is_none(), "agent did not start");
    let exe = std::fs::read_link(format!("/proc/{agent_pid}/exe")).unwrap();
    assert!(exe.ends_with("wgagent"), "pid {agent_pid} is {exe:?}");
    println!("interop: lab and agent up after {:?}", t0.elapsed());

    // 1. wireguard-go initiates: start a process, list it, read its output.
    let first = Instant::now();
    let health = lab::health(&lab, &b, 6, |out| {
        println!(
            "interop: first request not answered yet: {}",
            out.stderr.trim()
        );
    });
    let health = health.expect("no answer from the agent through wireguard-go within 30 s");
    assert_eq!(json(&health)["status"], "ok");
    println!(
        "interop: first answer through wireguard-go after {:?}",
        first.elapsed()
    );
    let (status, started) = http(
        &lab,
        &b,
        "/api/v0/processes/start",
        Some(r#"{"command":"echo interop-ok; echo from-$(id -u) >&2"}"#),
    );
    assert_eq!(status, 200, "{started}");
    let id = started["id"].as_str().expect("id").to_owned();
    let (status, list) = http(&lab, &b, "/api/v0/processes/list", None);
    assert_eq!(status, 200);
    assert_eq!(ids(&list), [id.as_str()]);
    let (status, output) = http(
        &lab,
        &b,
        &format!("/api/v0/processes/{id}/output?wait=true&timeout_ms=10000"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(output["output"], "interop-ok\nfrom-0\n", "{output}");
    assert_eq!(
        (&output["running"], &output["exit_code"]),
        (&Value::Bool(false), &0.into())
    );
    assert!(
        handshake(&lab, &b, &b_if) > 0,
        "wg shows no handshake with the agent"
    );

    // Bulk both ways through Linux TCP over wireguard-go at MTU 1280: a 60 kB request body in,
    // a 32 kB (head + tail of 109 kB) answer out.
    let body_path = dir.join("big.json");
    let big = serde_json::json!({
        "command": format!("echo {} | wc -c; seq 1 20000", "x".repeat(60_000))
    });
    std::fs::write(&body_path, big.to_string()).unwrap();
    let (status, started) = http(
        &lab,
        &b,
        "/api/v0/processes/start",
        Some(&format!("@{}", body_path.display())),
    );
    assert_eq!(status, 200, "{started}");
    let big_id = started["id"].as_str().expect("id").to_owned();
    let (_, output) = http(
        &lab,
        &b,
        &format!("/api/v0/processes/{big_id}/output?wait=true&timeout_ms=10000"),
        None,
    );
    let text = output["output"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("60001\n1\n2\n") && text.ends_with("\n19999\n20000\n"),
        "{output}"
    );
    assert!(text.len() > 30_000, "{} bytes", text.len());
    assert!(
        output["truncated"]["omitted_bytes"].as_u64() > Some(0),
        "{output}"
    );
    println!(
        "interop: control via wireguard-go OK after {:?}",
        t0.elapsed()
    );

    // 2. The agent initiates to C, which only learns the agent's endpoint from that handshake;
    // C then reads the process B started (any replica may read a result).
    let dialed = wait_for(Duration::from_secs(15), || handshake(&lab, &c, &c_if) > 0);
    assert!(
        dialed,
        "the agent did not handshake with its keepalive peer within 15 s"
    );
    let (status, list) = http(&lab, &c, "/api/v0/processes/list", None);
    assert_eq!(status, 200);
    assert_eq!(ids(&list), [big_id.as_str(), id.as_str()]);
    let (_, output) = http(&lab, &c, &format!("/api/v0/processes/{id}/output"), None);
    assert_eq!(output["output"], "interop-ok\nfrom-0\n");
    println!(
        "interop: agent-initiated handshake OK after {:?}",
        t0.elapsed()
    );

    // 3. A stranger (unknown key, B's tunnel address) gets no answer at all.
    let out = curl(
        &lab,
        &d,
        &[
            "--max-time",
            "5",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"command":"echo stranger-ran"}"#,
            &format!("{API}/api/v0/processes/start"),
        ],
    );
    assert!(!out.ok(), "a stranger got an answer: {out:?}");
    assert_eq!(out.code, Some(28), "expected a curl timeout: {out:?}");
    assert_eq!(
        handshake(&lab, &d, &d_if),
        0,
        "the agent handshook with a stranger"
    );
    let (rx, tx) = transfer(&lab, &d, &d_if);
    assert!(
        tx > 0,
        "the stranger's wireguard-go sent nothing: the test proves nothing"
    );
    assert_eq!(rx, 0, "the agent sent {rx} bytes to a stranger");
    let label = &d_pub[..8];
    let log = lab.log("agent");
    assert!(
        log.lines().any(
            |l| l.contains("dropped handshake initiation from unknown key") && l.contains(label)
        ),
        "agent log does not record the stranger's key {label}"
    );
    let (_, list) = http(&lab, &b, "/api/v0/processes/list", None);
    assert_eq!(
        ids(&list),
        [big_id.as_str(), id.as_str()],
        "the stranger started something"
    );
    println!("interop: stranger ignored after {:?}", t0.elapsed());

    // 4. Nothing listens on the host side of the agent's namespace: no TCP LISTEN socket, and
    // the API port on its underlay address is refused.
    let listening = tcp_listeners(agent_pid);
    assert!(
        listening.is_empty(),
        "agent namespace has TCP listeners: {listening:?}"
    );
    let out = curl(
        &lab,
        &b,
        &["--max-time", "5", "http://10.213.1.1:4/api/v0/health"],
    );
    assert_eq!(out.code, Some(7), "underlay API port not refused: {out:?}");

    // 5. SIGTERM: a clean shutdown.
    let status = lab.stop("agent", Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "agent exit: {status:?}"
    );
    assert!(lab.log("agent").contains("agent stopped"));
    println!("interop: done in {:?}", t0.elapsed());
}

fn json(out: &Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// The ids in a process list, in its order.
fn ids(list: &Value) -> Vec<&str> {
    let processes = list["processes"].as_array().expect("processes");
    processes.iter().filter_map(|p| p["id"].as_str()).collect()
}

/// Unix time of the latest handshake of `ifname`'s only peer (0 = never).
fn handshake(lab: &Lab, ns: &str, ifname: &str) -> u64 {
    let out = lab.must(ns, &["wg", "show", ifname, "latest-handshakes"]);
    out.split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// (received, sent) bytes of `ifname`'s only peer.
fn transfer(lab: &Lab, ns: &str, ifname: &str) -> (u64, u64) {
    let out = lab.must(ns, &["wg", "show", ifname, "transfer"]);
    let n: Vec<u64> = out
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    assert_eq!(n.len(), 2, "wg show transfer: {out}");
    (n[0], n[1])
}

/// Lines of /proc/<pid>/net/tcp{,6} (the namespace of `pid`) in state LISTEN (0A).
fn tcp_listeners(pid: u32) -> Vec<String> {
    ["tcp", "tcp6"]
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap_or_default();
            text.lines()
                .skip(1)
                .filter(|l| l.split_whitespace().nth(3) == Some("0A"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}
