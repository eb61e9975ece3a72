//! `wgagent demo`: an agent and a control peer in one process, fresh keys, a real WireGuard
//! tunnel over 127.0.0.1 UDP, one command run through the API. No files, no root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::agent::Agent;
use crate::api::types::StartProcessRequest;
use crate::client::{AgentConn, AgentOptions};
use crate::config::{self, Config};
use crate::keys;
use crate::node::{Node, NodeConfig};
use crate::wg::{IpNetwork, PeerConfig};

const AGENT_V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 10);
const CONTROL_V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const AGENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0xa);
const CONTROL_V6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0x1);
const API_PORT: u16 = 4;
const DEMO_COMMAND: &str = "echo \"hello from $(hostname) through WireGuard\"; uname -sr; echo \"pid $$ in process group $(ps -o pgid= $$ 2>/dev/null || cut -d' ' -f5 /proc/$$/stat)\"";

pub async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let (agent_key, control_key) = (keys::generate(), keys::generate());
    let (agent_pub, control_pub) = (keys::public_key(&agent_key), keys::public_key(&control_key));
    // A /32 or /128 of any address is always a valid network, so this cannot fail.
    let net = |ip: IpAddr| {
        IpNetwork::new_truncate(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("host prefix")
    };

    let mut cfg = Config::new(agent_key, vec![AGENT_V4.into(), AGENT_V6.into()]);
    // No UAPI socket: the demo must never collide with a real agent's `wgagent0` on this host.
    cfg.interface.uapi = false;
    cfg.api.port = API_PORT;
    // Its own throw-away process state: never the real agent's directory (which a running agent
    // locks), and no records piling up from earlier demos. Removed when the demo returns.
    let state = tempfile::tempdir().context("creating the demo's state directory")?;
    cfg.api.state_dir = Some(state.path().to_owned());
    cfg.peers.push(config::Peer {
        name: Some("control".into()),
        public_key: control_pub,
        preshared_key: None,
        allowed_ips: vec![net(CONTROL_V4.into()), net(CONTROL_V6.into())],
        // Like a NAT'd agent: no endpoint; it learns the control peer's from its handshake.
        endpoint: None,
        persistent_keepalive: None,
        access: Default::default(),
    });
    let agent = Agent::start(&cfg).await.context("starting the agent")?;
    let agent_udp = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), agent.udp_addr().port());
    let control = Node::start(NodeConfig {
        threads: 0,
        private_key: control_key,
        addresses: vec![CONTROL_V4.into(), CONTROL_V6.into()],
        listen_port: 0,
        mtu: crate::netstack::DEFAULT_MTU,
        tcp_buffer: crate::netstack::DEFAULT_TCP_BUFFER,
        connect_timeout: std::time::Duration::from_secs(10),
        limits: Default::default(),
        peers: vec![PeerConfig {
            name: Some("agent".into()),
            public_key: agent_pub,
            preshared_key: None,
            allowed_ips: vec![net(AGENT_V4.into()), net(AGENT_V6.into())],
            endpoint: Some(agent_udp),
            persistent_keepalive: None,
        }],
    })
    .await
    .context("starting the control node")?;

    println!(
        "wgagent demo: an agent and a control peer in one process, over real WireGuard on loopback UDP\n"
    );
    println!("  agent    public key {}", keys::encode_public(&agent_pub));
    println!("           tunnel {AGENT_V4}, {AGENT_V6}; WireGuard UDP {agent_udp}");
    println!(
        "  control  public key {}",
        keys::encode_public(&control_pub)
    );
    println!(
        "           tunnel {CONTROL_V4}, {CONTROL_V6}; WireGuard UDP port {}",
        control.udp_addr().port()
    );

    let host_tcp = std::net::TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, API_PORT).into(),
        Duration::from_millis(200),
    );
    println!(
        "  API      http://{AGENT_V4}:{API_PORT} and http://[{AGENT_V6}]:{API_PORT} inside the tunnel only; \
         127.0.0.1:{API_PORT} on the host: {}\n",
        if host_tcp.is_err() {
            "refused (no host TCP socket)"
        } else {
            "OPEN (unexpected!)"
        }
    );

    let conn = AgentConn::new(
        control.connector(),
        SocketAddr::new(AGENT_V4.into(), API_PORT),
        AgentOptions::default(),
    );
    let t = Instant::now();
    let health = conn
        .health()
        .await
        .context("first request through the tunnel")?;
    let first = t.elapsed();
    let stats = control.stats();
    let peer = &stats.wg.peers[0];
    println!(
        "handshake: completed {} (first request incl. handshake + TCP connect: {first:.2?})",
        peer.handshakes
    );
    println!(
        "health:    agent {} v{}, {} running\n",
        health.status, health.version, health.processes_running
    );

    println!("$ {DEMO_COMMAND}");
    let t = Instant::now();
    let req = StartProcessRequest {
        command: DEMO_COMMAND.into(),
        ..Default::default()
    };
    let id = conn.start(&req).await?.id;
    let out = conn.output(&id, Some(Duration::from_secs(10))).await?;
    let exec_time = t.elapsed();
    for line in out.output.lines() {
        println!("  | {line}");
    }
    println!(
        "exit code: {} (process {id}, start + server-side wait: {exec_time:.2?})\n",
        out.exit_code.unwrap_or(-1)
    );

    // Same request over IPv6 inside the tunnel.
    let conn6 = AgentConn::new(
        control.connector(),
        SocketAddr::new(AGENT_V6.into(), API_PORT),
        AgentOptions::default(),
    );
    let listed = conn6.list().await?;
    println!(
        "list over IPv6: {} process(es), first {:?} running={}",
        listed.processes.len(),
        listed.processes[0].command,
        listed.processes[0].running
    );

    let mut rtts = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        conn.health().await?;
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let pct = |p: f64| rtts[((rtts.len() as f64 - 1.0) * p) as usize];
    println!(
        "round trips: 200 × GET /api/v0/health on one keep-alive connection: min {:.0?}, p50 {:.0?}, p99 {:.0?}",
        rtts[0],
        pct(0.5),
        pct(0.99)
    );
    let a = agent.node().stats();
    let ap = &a.wg.peers[0];
    println!(
        "counters: agent saw control at {} (roamed from its handshake), rx {} B / tx {} B, drops: allowed-ips {}, decrypt {}, unknown peers {}",
        ap.endpoint.map_or("-".into(), |e| e.to_string()),
        ap.rx_bytes,
        ap.tx_bytes,
        ap.drop_allowed_ips,
        ap.drop_decrypt,
        a.wg.device.unknown_peer
    );

    control.shutdown(Duration::from_secs(2)).await;
    agent.shutdown(Duration::from_secs(5)).await;
    println!(
        "\ndone in {:.2?}: both nodes stopped, no process left behind.",
        started.elapsed()
    );
    Ok(())
}
