//! Helpers shared by the benches: addresses, peers and in-process nodes on loopback UDP, the
//! Tokio runtime they run on, and the figures they print (percentiles, RSS).
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use wgagent::keys;
use wgagent::netstack;
use wgagent::node::{Node, NodeConfig};
use wgagent::wg::{IpNetwork, PeerConfig, PublicKey, StaticSecret};

/// `s` as an address (panics on a typo in the bench).
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A peer with these allowed IPs (`"100.64.0.10/32"`) and optional endpoint; nothing else set.
pub fn peer(key: PublicKey, allowed: &str, endpoint: Option<SocketAddr>) -> PeerConfig {
    PeerConfig {
        name: None,
        public_key: key,
        preshared_key: None,
        allowed_ips: vec![allowed.parse::<IpNetwork>().unwrap()],
        endpoint,
        persistent_keepalive: None,
    }
}

/// A node on an ephemeral loopback UDP port with the netstack's default MTU and TCP buffer and
/// the default data-path layout (`[interface] threads`).
pub async fn node(secret: StaticSecret, addr: &str, peers: Vec<PeerConfig>) -> Node {
    node_with_threads(secret, addr, peers, 0).await
}

/// [`node`] with an explicit data-path layout: `threads` = 1 is the single task, 0 the default.
pub async fn node_with_threads(
    secret: StaticSecret,
    addr: &str,
    peers: Vec<PeerConfig>,
    threads: usize,
) -> Node {
    Node::start(NodeConfig {
        threads,
        private_key: secret,
        addresses: vec![ip(addr)],
        listen_port: 0,
        mtu: netstack::DEFAULT_MTU,
        tcp_buffer: netstack::DEFAULT_TCP_BUFFER,
        connect_timeout: Duration::from_secs(10),
        limits: Default::default(),
        peers,
    })
    .await
    .unwrap()
}

/// Where a peer on this host reaches `node`.
pub fn loopback(node: &Node) -> SocketAddr {
    SocketAddr::new(ip("127.0.0.1"), node.udp_addr().port())
}

/// An agent node at 100.64.0.10 and a control node at 100.64.0.1 that dials it.
pub async fn agent_and_control() -> (Node, Node) {
    let (agent_key, control_key) = (keys::generate(), keys::generate());
    let agent = node(
        agent_key.clone(),
        "100.64.0.10",
        vec![peer(keys::public_key(&control_key), "100.64.0.1/32", None)],
    )
    .await;
    let control = node(
        control_key,
        "100.64.0.1",
        vec![peer(
            keys::public_key(&agent_key),
            "100.64.0.10/32",
            Some(loopback(&agent)),
        )],
    )
    .await;
    (agent, control)
}

/// The `p` percentile (0..=1) of sorted durations.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs `f` on a multi-threaded runtime with two workers (the machine the figures are for).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(f)
}

/// This process's resident set size in KiB (`VmRSS`), 0 if unreadable.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
