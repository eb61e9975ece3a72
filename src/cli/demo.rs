//! `wgagent demo`: an agent and a control peer in one process, fresh keys, a real WireGuard
//! tunnel over 127.0.0.1 UDP, one command run through the API. No files, no root.
//!
//! Prints a walk-through for people as it goes, or with `--json` one object at the end
//! ([`json::Demo`]) with the same facts and figures, for scripts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::json;
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

pub async fn run(as_json: bool) -> anyhow::Result<()> {
    // The walk-through goes to stdout as it happens, unless the one JSON object does.
    let say = |text: std::fmt::Arguments<'_>| {
        if !as_json {
            println!("{text}");
        }
    };
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
    let control_udp = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), control.udp_addr().port());

    say(format_args!(
        "wgagent demo: an agent and a control peer in one process, over real WireGuard on loopback UDP\n"
    ));
    say(format_args!(
        "  agent    public key {}",
        keys::encode_public(&agent_pub)
    ));
    say(format_args!(
        "           tunnel {AGENT_V4}, {AGENT_V6}; WireGuard UDP {agent_udp}"
    ));
    say(format_args!(
        "  control  public key {}",
        keys::encode_public(&control_pub)
    ));
    say(format_args!(
        "           tunnel {CONTROL_V4}, {CONTROL_V6}; WireGuard UDP port {}",
        control_udp.port()
    ));

    let api_on_host = std::net::TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, API_PORT).into(),
        Duration::from_millis(200),
    )
    .is_ok();
    say(format_args!(
        "  API      http://{AGENT_V4}:{API_PORT} and http://[{AGENT_V6}]:{API_PORT} inside the tunnel only; \
         127.0.0.1:{API_PORT} on the host: {}\n",
        if api_on_host {
            "OPEN (unexpected!)"
        } else {
            "refused (no host TCP socket)"
        }
    ));

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
    let handshakes = control.stats().wg.peers[0].handshakes;
    say(format_args!(
        "handshake: completed {handshakes} (first request incl. handshake + TCP connect: {first:.2?})"
    ));
    say(format_args!(
        "health:    agent {} v{}, {} running\n",
        health.status, health.version, health.processes_running
    ));

    say(format_args!("$ {DEMO_COMMAND}"));
    let t = Instant::now();
    let req = StartProcessRequest {
        command: DEMO_COMMAND.into(),
        ..Default::default()
    };
    let id = conn.start(&req).await?.id;
    let out = conn.output(&id, Some(Duration::from_secs(10))).await?;
    let exec_time = t.elapsed();
    for line in out.output.lines() {
        say(format_args!("  | {line}"));
    }
    say(format_args!(
        "exit code: {} (process {id}, start + server-side wait: {exec_time:.2?})\n",
        out.exit_code.unwrap_or(-1)
    ));

    // Same request over IPv6 inside the tunnel.
    let conn6 = AgentConn::new(
        control.connector(),
        SocketAddr::new(AGENT_V6.into(), API_PORT),
        AgentOptions::default(),
    );
    let listed = conn6.list().await?;
    let first_listed = listed
        .processes
        .first()
        .context("the list over IPv6 lacks the demo's process")?;
    say(format_args!(
        "list over IPv6: {} process(es), first {:?} running={}",
        listed.processes.len(),
        first_listed.command,
        first_listed.running
    ));

    let mut rtts = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let t = Instant::now();
        conn.health().await?;
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let pct = |p: f64| rtts[((rtts.len() as f64 - 1.0) * p) as usize];
    say(format_args!(
        "round trips: {ROUND_TRIPS} × GET /api/v0/health on one keep-alive connection: min {:.0?}, p50 {:.0?}, p99 {:.0?}",
        rtts[0],
        pct(0.5),
        pct(0.99)
    ));
    let a = agent.node().stats();
    let ap = &a.wg.peers[0];
    say(format_args!(
        "counters: agent saw control at {} (roamed from its handshake), rx {} B / tx {} B, drops: allowed-ips {}, decrypt {}, unknown peers {}",
        ap.endpoint.map_or("-".into(), |e| e.to_string()),
        ap.rx_bytes,
        ap.tx_bytes,
        ap.drop_allowed_ips,
        ap.drop_decrypt,
        a.wg.device.unknown_peer
    ));
    let report = json::Demo {
        agent: json::DemoNode {
            public_key: keys::encode_public(&agent_pub),
            addresses: vec![AGENT_V4.into(), AGENT_V6.into()],
            udp: agent_udp,
        },
        control: json::DemoNode {
            public_key: keys::encode_public(&control_pub),
            addresses: vec![CONTROL_V4.into(), CONTROL_V6.into()],
            udp: control_udp,
        },
        api_port: API_PORT,
        api_on_host,
        handshakes,
        first_request_ms: ms(first),
        health,
        command: DEMO_COMMAND.to_owned(),
        process: json::DemoProcess {
            id,
            exit_code: out.exit_code,
            output: out.output,
            elapsed_ms: ms(exec_time),
        },
        listed_over_ipv6: listed.processes.len(),
        round_trips: json::DemoRoundTrips {
            count: rtts.len(),
            min_ms: ms(rtts[0]),
            p50_ms: ms(pct(0.5)),
            p99_ms: ms(pct(0.99)),
        },
        agent_counters: json::DemoCounters {
            control_endpoint: ap.endpoint,
            rx_bytes: ap.rx_bytes,
            tx_bytes: ap.tx_bytes,
            drop_allowed_ips: ap.drop_allowed_ips,
            drop_decrypt: ap.drop_decrypt,
            unknown_peer: a.wg.device.unknown_peer,
        },
        stopped: false,
        elapsed_ms: 0.0,
    };

    control.shutdown(Duration::from_secs(2)).await;
    let stopped = agent.shutdown(Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    if as_json {
        return json::print(&json::Demo {
            stopped,
            elapsed_ms: ms(elapsed),
            ..report
        });
    }
    println!("\ndone in {elapsed:.2?}: both nodes stopped, no process left behind.");
    Ok(())
}

/// Health requests timed on one keep-alive connection.
const ROUND_TRIPS: usize = 200;

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}
